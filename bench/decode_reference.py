#!/usr/bin/env python3
"""PyTorch-side yardstick for `geossl bench decode`: the same JPEG and PNG
files decoded to RGB8 by PIL (Image.open + load, as torchvision's
ImageFolder / the reference data pipeline do) and by torchvision.io
(read_file + decode_jpeg / decode_png, libjpeg-turbo / libpng), on one
thread.

The files come from `geossl bench decode --keep DIR` (DIR/files.csv:
format,path,width,height,bands). Each timed pass decodes a format's files
round-robin until MEGASAMPLES million values (pixels x 3) are decoded, as
geossl's bench does; the median of --rounds passes is printed:

  DECODEREF format=jpeg-1000 decoder=pil threads=1 images=16 images_per_s=... mp_per_s=...
"""
import argparse
import collections
import csv
import os
import statistics
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, decode_png, read_file


def pil(path):
    with Image.open(path) as img:
        img.load()
        return np.asarray(img.convert("RGB"))


def tv(path):
    data = read_file(path)
    if path.endswith((".jpg", ".jpeg")):
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    return decode_png(data, mode=ImageReadMode.RGB)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="folder written by `geossl bench decode --keep DIR`")
    p.add_argument("--megasamples", type=float, default=48.0)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    formats = collections.OrderedDict()
    with open(os.path.join(a.dir, "files.csv"), newline="") as f:
        for row in csv.DictReader(f):
            if row["path"].endswith((".jpg", ".jpeg", ".png")):
                formats.setdefault(row["format"], []).append(row)
    for name, rows in formats.items():
        paths = [r["path"] for r in rows]
        pixels = int(rows[0]["width"]) * int(rows[0]["height"])
        images = max(len(paths), round(a.megasamples * 1e6 / (pixels * 3)))
        for decoder, fn in (("pil", pil), ("torchvision", tv)):
            fn(paths[0])  # untimed: load the codec
            times = []
            for _ in range(a.rounds):
                t0 = time.perf_counter()
                for i in range(images):
                    fn(paths[i % len(paths)])
                times.append(time.perf_counter() - t0)
            ips = images / statistics.median(times)
            print(f"DECODEREF format={name} decoder={decoder} threads=1 images={images} "
                  f"images_per_s={ips:.1f} mp_per_s={ips * pixels / 1e6:.1f} "
                  f"torch={torch.__version__} torchvision={torchvision.__version__}")


if __name__ == "__main__":
    main()
