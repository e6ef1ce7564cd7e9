"""Reads a `geossl pack` folder as an outside reader does: the shards with
the standard library's `tarfile`, the images with PIL (JPEG) or NumPy
(.npy), and checks them against index.csv, pack.json and the manifest the
pack was made from.

Usage: read_pack.py PACK_DIR MANIFEST

Asserts, for every shard listed in pack.json: the members of a sample
(one key) are consecutive (WebDataset's grouping); every index.csv line
names a member of its shard whose data starts at `offset` and is `size`
bytes long, with that CRC-32C; the sample's JSON is the manifest row; the
image decodes to S x S (JPEG: PIL; .npy: uint8 [S, S, 3] or float32
[C, S, S] in [0, 1], with a uint8 [S, S] validity mask where named); the
views of a place lie in one shard, consecutively; every manifest row is a
sample or listed in unreadable.csv. Prints one line of figures.
"""

import csv
import io
import json
import os
import sys
import tarfile

import numpy as np
from PIL import Image


def crc32c_table():
    # CRC-32C (Castagnoli), reflected polynomial 0x82F63B78.
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def check_row(sample, record, columns):
    """The sample's JSON row equals the manifest's CSV row."""
    for col in columns:
        text = record[col]
        if col in ("lat", "lon"):
            assert sample[col] == float(text), (col, sample, record)
        elif col == "geo_cluster":
            assert str(sample[col]) == text, (col, sample, record)
        elif text == "":
            assert col not in sample, (col, sample, record)
        else:
            assert sample[col] == text, (col, sample, record)
    extra = set(sample) - set(columns) - {"key", "row"}
    assert not extra, extra


def check_image(name, data, info):
    s = info["size"]
    if name.endswith(".jpg"):
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.size == (s, s) and img.mode == "RGB", (name, img.size, img.mode)
        return
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if info["input"] is None:
        assert arr.shape == (s, s, 3) and arr.dtype == np.uint8, (name, arr.shape, arr.dtype)
    else:
        c = len(info["input"]["bands"])
        assert arr.shape == (c, s, s) and arr.dtype == np.float32, (name, arr.shape, arr.dtype)
        assert float(arr.min()) >= 0.0 and float(arr.max()) <= 1.0, name


def check_member(tar, raw, members, name, offset, size, crc):
    m = members[name]
    assert (m.offset_data, m.size) == (offset, size), (name, m.offset_data, m.size, offset, size)
    data = tar.extractfile(m).read()
    assert data == raw[offset : offset + size], name
    assert format(crc32c(data), "08x") == crc, name
    return data


def read_shard(pack, shard, rows, info, manifest, columns):
    path = os.path.join(pack, shard["file"])
    raw = open(path, "rb").read()
    assert len(raw) == shard["bytes"], shard
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    by_name = {m.name: m for m in members}
    keys = [m.name.split(".", 1)[0] for m in members]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(runs)), "the members of a key are not consecutive"
    assert runs == [r["key"] for r in rows] and len(rows) == shard["samples"], shard
    places = []
    with tarfile.open(path) as tar:
        for r in rows:
            key = r["key"]
            data = check_member(
                tar, raw, by_name, r["member"], int(r["offset"]), int(r["size"]), r["crc32c"]
            )
            check_image(r["member"], data, info)
            if r["valid_offset"]:
                mask = check_member(
                    tar,
                    raw,
                    by_name,
                    key + ".valid.npy",
                    int(r["valid_offset"]),
                    int(r["valid_size"]),
                    r["valid_crc32c"],
                )
                valid = np.load(io.BytesIO(mask))
                s = info["size"]
                assert valid.shape == (s, s) and valid.dtype == np.uint8, valid.shape
            sample = json.loads(tar.extractfile(by_name[key + ".json"]).read())
            assert sample["key"] == key and sample["row"] == int(r["row"]), sample
            record = manifest[int(r["row"])]
            check_row(sample, record, columns)
            assert (r["path"], r["crop"]) == (record["path"], record.get("crop", "")), r
            if r["location_id"]:
                places.append(r["location_id"])
    return places


def main(pack, manifest_path):
    info = json.load(open(os.path.join(pack, "pack.json")))
    assert (info["format"], info["version"]) == ("geossl-pack", 1), info
    with open(manifest_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames
        manifest = list(reader)
    index = list(csv.DictReader(open(os.path.join(pack, "index.csv"), newline="")))
    unreadable = list(csv.DictReader(open(os.path.join(pack, "unreadable.csv"), newline="")))
    assert len(index) == info["samples"] and len(unreadable) == info["unreadable"]
    packed_rows = sorted([int(r["row"]) for r in index] + [int(u["row"]) for u in unreadable])
    assert packed_rows == list(range(len(manifest))), "not every manifest row is in the pack"
    seen_places = {}
    for i, shard in enumerate(info["shards"]):
        rows = [r for r in index if r["shard"] == shard["file"]]
        places = read_shard(pack, shard, rows, info, manifest, columns)
        runs = [p for j, p in enumerate(places) if j == 0 or places[j - 1] != p]
        assert len(runs) == len(set(runs)), "a place's views are not consecutive"
        for p in runs:
            assert p not in seen_places, f"place {p} in shards {seen_places[p]} and {i}"
            seen_places[p] = i
    print(
        f"{len(index)} samples of {len(seen_places)} places in {len(info['shards'])} "
        f"shards read with tarfile; {len(unreadable)} unreadable"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
