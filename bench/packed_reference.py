#!/usr/bin/env python3
"""The PyTorch DataLoader reading a geossl pack (`geossl pack M.csv --out DIR
--size S`): the yardstick for `geossl bench data --packed DIR` on the same
shards.

Each sample of DIR/index.csv (key,row,path,crop,location_id,shard,member,
offset,size,crc32c) is read as its byte range of the shard file (no tar
parsing needed, as the pack format promises), decoded by PIL (`KEY.jpg`) or
numpy (`KEY.npy`, uint8 [S, S, 3] of a --raw pack), and turned into two
views with the same transforms as ../shared/bench/torch_data_reference.py
(aug+: Resize(pre) -> CenterCrop(pre) -> RandomResizedCrop(size, (0.2, 1))
-> ColorJitter p=0.8 -> RandomGrayscale p=0.2 -> GaussianBlur p=0.5 ->
RandomHorizontalFlip -> ToTensor -> Normalize). With --pairs temporal (the
default) the key is another view of the same place (location_id), drawn
uniformly, as geossl's temporal positives: two reads and decodes per pair.
--verify checks each image member's crc32c (needs the crc32c package) once
before timing.

Prints:
  DATAREF packed=1 pairs=temporal workers=1 size=224 pre=448 images=... seconds=... pairs_per_s=...
"""
import argparse
import csv
import io
import os
import random
import time

import numpy as np
import torch
from PIL import Image

from PIL import ImageFilter
from torchvision import transforms


class Blur:
    """torch_data_reference.py's Blur: PIL's GaussianBlur, sigma U[0.1, 2]."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))



def aug_plus(size, pre):
    """The reference's aug+ recipe, transform for transform."""
    return transforms.Compose([
        transforms.Resize(pre), transforms.CenterCrop(pre),
        transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([Blur()], p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


def shard_path(pack, shard):
    """The shard file of an index.csv `shard` value: its file name, or its number."""
    name = f"shard-{int(shard):06d}.tar" if shard.isdigit() else shard
    return os.path.join(pack, name)


class PackedPairs(torch.utils.data.Dataset):
    def __init__(self, pack, size, pre, temporal):
        self.pack = pack
        with open(os.path.join(pack, "index.csv"), newline="") as f:
            self.samples = list(csv.DictReader(f))
        places = {}
        for i, s in enumerate(self.samples):
            places.setdefault(s["location_id"] or f"row{s['row']}", []).append(i)
        self.others = [[j for j in places[s["location_id"] or f"row{s['row']}"] if j != i]
                       for i, s in enumerate(self.samples)]
        self.temporal = temporal
        self.t = aug_plus(size, pre)
        self.files = {}  # shard -> open file, per worker process

    def __len__(self):
        return len(self.samples)

    def read(self, i):
        s = self.samples[i]
        shard = s["shard"]
        f = self.files.get(shard)
        if f is None:
            f = self.files[shard] = open(shard_path(self.pack, shard), "rb")
        f.seek(int(s["offset"]))
        data = f.read(int(s["size"]))
        if s["member"].endswith(".npy"):
            return Image.fromarray(np.load(io.BytesIO(data)))
        return Image.open(io.BytesIO(data)).convert("RGB")

    def __getitem__(self, i):
        q = self.read(i)
        k = q
        if self.temporal and self.others[i]:
            k = self.read(random.choice(self.others[i]))
        return self.t(q), self.t(k)


def verify(ds):
    import crc32c
    for s in ds.samples:
        with open(shard_path(ds.pack, s["shard"]), "rb") as f:
            f.seek(int(s["offset"]))
            got = crc32c.crc32c(f.read(int(s["size"])))
        if f"{got:08x}" != s["crc32c"].lower().rjust(8, "0"):
            raise SystemExit(f"{s['shard']}: member {s['member']}: crc32c {got:08x} != index {s['crc32c']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pack", help="a folder written by `geossl pack`")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--pre", type=int, default=448)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--pairs", choices=["same", "temporal"], default="temporal")
    p.add_argument("--limit", type=int, default=0, help="use the first N samples only")
    p.add_argument("--verify", action="store_true", help="check every member's crc32c first (untimed)")
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = PackedPairs(a.pack, a.size, a.pre, a.pairs == "temporal")
    if a.verify:
        verify(ds)
    sampler = range(a.limit) if a.limit else None
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.workers, drop_last=False,
                                     sampler=sampler)
    n = 0
    t0 = time.perf_counter()
    for q, k in dl:
        n += q.shape[0]
    s = time.perf_counter() - t0
    print(f"DATAREF packed=1 pairs={a.pairs} workers={a.workers} size={a.size} pre={a.pre} images={n} "
          f"seconds={s:.2f} pairs_per_s={n / s:.1f} torch={torch.__version__}")


if __name__ == "__main__":
    main()
