"""Loads a geossl export into torchvision and compares its outputs with
geossl's on the same input.

usage: torchvision_parity.py ARCH SMALL_INPUT WEIGHTS INPUT EVAL_OUT TRAIN_OUT

ARCH is resnet18/34/50; SMALL_INPUT (true/false) swaps in geossl's 3x3
stride-1 stem without max-pool. The outputs are geossl's pooled features
(fc removed) in eval mode, then in train mode (batch statistics). Prints the
max relative error max|a - b| / max|b| of each and exits 1 above 1e-4.
"""
import sys

import numpy as np
import safetensors.torch
import torch
import torchvision

arch, small, weights, inp, eval_out, train_out = sys.argv[1:]
torch.manual_seed(0)
model = getattr(torchvision.models, arch)()
if small == "true":
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
state = safetensors.torch.load_file(weights)
missing, unexpected = model.load_state_dict(state, strict=False)
assert set(missing) == {"fc.weight", "fc.bias"}, f"missing {missing}"
assert all(k.startswith(("projection_head.", "geo_head.")) for k in unexpected), unexpected
model.fc = torch.nn.Identity()
x = torch.from_numpy(np.load(inp))
worst = 0.0
for mode, path in (("eval", eval_out), ("train", train_out)):
    model.train(mode == "train")
    with torch.no_grad():
        ours = torch.from_numpy(np.load(path))
        theirs = model(x)
    err = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"{arch} small_input={small} {mode}: max relative error {err:.3e}")
    worst = max(worst, err)
sys.exit(0 if worst <= 1e-4 else 1)
