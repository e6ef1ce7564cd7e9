"""Loads a C-channel geossl export into torchvision and timm, as a user
would, and compares their features with geossl's on the same input.

usage: multispectral_export.py WEIGHTS INPUT FEATURES

WEIGHTS is a backbone export (`geossl export`) of a resnet18/34/50 with the
standard 7x7 stem; its metadata gives the arch and C (`in_chans`). INPUT is
an [N, C, H, W] float32 .npy of normalised images, FEATURES geossl's pooled
[N, D] features of them (eval mode). torchvision: `model.conv1 =
nn.Conv2d(C, 64, 7, 2, 3, bias=False)` then `load_state_dict(strict=False)`
(only `fc` missing); timm: `timm.create_model(arch, in_chans=C,
num_classes=0)` then `load_state_dict(strict=True)` (no `fc` there). Prints
the max absolute difference of each and exits 1 above 1e-4 x max(1, the
largest feature): float32 convolutions of different libraries agree to
that, a wrong weight or normalisation is far off.
"""
import json
import sys

import numpy as np
import safetensors
import safetensors.torch
import timm
import torch
import torchvision

weights, inp, features = sys.argv[1:]
with safetensors.safe_open(weights, "pt") as f:
    meta = f.metadata()
arch, c = meta["arch"], int(meta["in_chans"])
assert meta["small_input"] == "false", "timm has no small-input stem"
assert len(json.loads(meta["band_names"])) == c, meta["band_names"]
assert len(json.loads(meta["normalize_mean"])) == c, meta["normalize_mean"]
assert len(json.loads(meta["normalize_std"])) == c, meta["normalize_std"]
state = safetensors.torch.load_file(weights)
assert tuple(state["conv1.weight"].shape) == (64, c, 7, 7), state["conv1.weight"].shape
backbone = {k: v for k, v in state.items() if not k.startswith(("projection_head.", "geo_head."))}

tv = getattr(torchvision.models, arch)()
tv.conv1 = torch.nn.Conv2d(c, 64, 7, 2, 3, bias=False)
missing, unexpected = tv.load_state_dict(backbone, strict=False)
assert set(missing) == {"fc.weight", "fc.bias"}, f"missing {missing}"
assert not unexpected, unexpected
tv.fc = torch.nn.Identity()

tm = timm.create_model(arch, in_chans=c, num_classes=0, pretrained=False)
tm.load_state_dict(backbone, strict=True)

x = torch.from_numpy(np.load(inp))
ours = torch.from_numpy(np.load(features))
assert x.shape[1] == c, x.shape
worst = 0.0
for name, model in (("torchvision", tv), ("timm", tm)):
    model.eval()
    with torch.no_grad():
        theirs = model(x)
    assert theirs.shape == ours.shape, (name, theirs.shape, ours.shape)
    err = (ours - theirs).abs().max().item()
    scale = max(1.0, theirs.abs().max().item())
    print(f"{arch} in_chans={c} {name}: max abs difference {err:.3e} (features up to {scale:.3g})")
    worst = max(worst, err / scale)
sys.exit(0 if worst <= 1e-4 else 1)
