"""Checks geossl's evaluation view and crop geometry against torchvision.

usage: eval_view_reference.py DIR

DIR holds, written by tests/interop.rs:
- views.csv (png, size, npy): geossl's ViewTransform::CenterCrop view of
  each PNG (decoded by geossl) as a [3, size, size] float32 .npy;
- boxes.csv (width, height, size, resized_width, resized_height, left, top):
  geossl's Resize(size) + CenterCrop(size) geometry for many image sizes;
- rrc.csv (width, height, scale_lo, scale_hi, ratio_lo, ratio_hi, top, left,
  crop_height, crop_width): geossl's RandomResizedCrop parameters where no
  draw can fit, so that torchvision's get_params takes its (deterministic)
  fallback.

Geometry must match torchvision exactly. Pixels: T.Compose([T.Resize(s),
T.CenterCrop(s), T.ToTensor(), T.Normalize(ImageNet)]) on the PIL image;
geossl resamples the crop box straight from the original with
fast_image_resize, PIL resizes the whole image and then crops, with the same
filter over the same source pixels (both clip the filter to the image, not
the crop) but different fixed-point arithmetic, so an 8-bit value may differ
by one level: the tolerance is 1/255 per value, in [0, 1] units. The check
can fail: each view moved by one pixel is also compared and must differ by
more than that. Prints the figures; exits 1 on any mismatch.
"""
import csv
import os
import sys

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
TOLERANCE_LEVELS = 1.0

root = sys.argv[1]
failures = []


def rows(name):
    with open(os.path.join(root, name), newline="") as f:
        return list(csv.DictReader(f))


# Geometry: Resize's output size and CenterCrop's offsets, from torchvision's
# own code (the offsets read off a cropped index grid).
boxes = rows("boxes.csv")
for r in boxes:
    w, h, s = int(r["width"]), int(r["height"]), int(r["size"])
    nh, nw = F._compute_resized_output_size((h, w), [s])
    cols = torch.arange(nw).expand(1, nh, nw)
    lines = torch.arange(nh).unsqueeze(1).expand(1, nh, nw)
    left = int(F.center_crop(cols, [s])[0, 0, 0])
    top = int(F.center_crop(lines, [s])[0, 0, 0])
    ours = tuple(int(r[k]) for k in ("resized_width", "resized_height", "left", "top"))
    if ours != (nw, nh, left, top):
        failures.append(f"{w}x{h} at {s}: geossl {ours}, torchvision {(nw, nh, left, top)}")
print(f"crop geometry: {len(boxes)} (size, image) pairs compared")

rrc = rows("rrc.csv")
for r in rrc:
    w, h = int(r["width"]), int(r["height"])
    scale = [float(r["scale_lo"]), float(r["scale_hi"])]
    ratio = [float(r["ratio_lo"]), float(r["ratio_hi"])]
    theirs = T.RandomResizedCrop.get_params(torch.empty(1, 1, 1).expand(1, h, w), scale, ratio)
    ours = tuple(int(r[k]) for k in ("top", "left", "crop_height", "crop_width"))
    if ours != tuple(theirs):
        failures.append(f"RandomResizedCrop fallback {w}x{h} {ratio}: geossl {ours}, torchvision {theirs}")
print(f"RandomResizedCrop fallback: {len(rrc)} cases compared")

# Pixels.
mean = torch.tensor(MEAN).view(3, 1, 1)
std = torch.tensor(STD).view(3, 1, 1)
worst = 0.0
for r in rows("views.csv"):
    s = int(r["size"])
    img = Image.open(os.path.join(root, r["png"])).convert("RGB")
    view = T.Compose([T.Resize(s), T.CenterCrop(s), T.ToTensor(), T.Normalize(MEAN, STD)])
    theirs = view(img)
    ours = torch.from_numpy(np.load(os.path.join(root, r["npy"])))
    levels = lambda a, b: ((a - b).abs() * std * 255).max().item()
    diff = levels(ours, theirs)
    worst = max(worst, diff)
    # The same view one pixel off along the longer side, as half-away-from-
    # zero rounding would cut it where the excess is 2 mod 4 plus 1.
    resized = F.resize(img, s)
    rw, rh = resized.size
    top = int(round((rh - s) / 2.0))
    left = int(round((rw - s) / 2.0))
    if rw > s:
        left = left + 1 if left < rw - s else left - 1
    elif rh > s:
        top = top + 1 if top < rh - s else top - 1
    shifted = F.normalize(F.to_tensor(F.crop(resized, top, left, s, s)), MEAN, STD)
    shift = levels(ours, shifted) if (rw, rh) != (s, s) else float("inf")
    print(f"{r['png']} {img.size[0]}x{img.size[1]} at {s}: max |geossl - torchvision| = "
          f"{diff:.3f} levels; one pixel off: {shift:.1f} levels")
    if diff > TOLERANCE_LEVELS + 1e-3:
        failures.append(f"{r['png']} at {s}: {diff:.3f} levels apart (tolerance {TOLERANCE_LEVELS})")
    if shift <= TOLERANCE_LEVELS + 1e-3:
        failures.append(f"{r['png']} at {s}: a one-pixel shift ({shift:.3f} levels) would pass")
print(f"worst pixel difference: {worst:.3f} levels (tolerance {TOLERANCE_LEVELS})")

for f in failures[:50]:
    print("MISMATCH", f)
sys.exit(1 if failures else 0)
