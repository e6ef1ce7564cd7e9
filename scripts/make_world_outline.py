#!/usr/bin/env python3
"""Regenerates src/report/world_110m.txt, the land outlines of the report's
world map: Natural Earth's 1:110m Admin 0 countries (public domain,
https://www.naturalearthdata.com), as shipped in the PyPI wheel
geopandas==0.14.4 (geopandas/datasets/naturalearth_lowres).

    pip download --no-deps geopandas==0.14.4 -d /tmp/ne
    python3 scripts/make_world_outline.py /tmp/ne/geopandas-0.14.4-py3-none-any.whl > src/report/world_110m.txt

Output: one polygon ring per line, "lon,lat lon,lat ..." in tenths of a
degree (integers), rings of fewer than 3 distinct points dropped. Only the
standard library is used (the .shp layout is ESRI's published format).
"""
import struct
import sys
import zipfile

SHP = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp"


def rings(shp: bytes):
    pos = 100  # file header
    while pos < len(shp):
        _, length = struct.unpack(">ii", shp[pos : pos + 8])
        content = shp[pos + 8 : pos + 8 + 2 * length]
        pos += 8 + 2 * length
        (shape_type,) = struct.unpack("<i", content[:4])
        if shape_type != 5:  # polygons only
            continue
        num_parts, num_points = struct.unpack("<ii", content[36:44])
        parts = struct.unpack(f"<{num_parts}i", content[44 : 44 + 4 * num_parts])
        base = 44 + 4 * num_parts
        points = [
            struct.unpack("<dd", content[base + 16 * i : base + 16 * i + 16])
            for i in range(num_points)
        ]
        for start, end in zip(parts, list(parts[1:]) + [num_points]):
            yield points[start:end]


def main() -> None:
    with zipfile.ZipFile(sys.argv[1]) as wheel:
        shp = wheel.read(SHP)
    print("# Natural Earth 1:110m Admin 0 countries (public domain), from geopandas 0.14.4;")
    print("# one ring per line, lon,lat in tenths of a degree. Made by scripts/make_world_outline.py.")
    for ring in rings(shp):
        out = []
        for lon, lat in ring:
            p = (round(lon * 10), round(lat * 10))
            if not out or out[-1] != p:
                out.append(p)
        if len(set(out)) >= 3:
            print(" ".join(f"{x},{y}" for x, y in out))


if __name__ == "__main__":
    main()
