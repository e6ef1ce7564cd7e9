"""Writes the checkpoints of tests/import_formats.rs with PyTorch, as the
official code writes them, in both torch.save containers:

- OUT/gassl_{legacy,zip}.pth.tar: the GASSL layout (moco_fmow/main_moco_geo+tp.py
  of sustainlab-group/geography-aware-ssl): {'epoch', 'arch', 'state_dict' (the
  MoCo model under DDP names, module.encoder_q.* ...), 'geo_dict' (its
  classifier, Sequential(ReLU, Linear(128, K)) as module.layers.*),
  'optimizer'}; OUT/x.npy (an input batch) and OUT/geo_logits.npy (the
  classifier applied to encoder_q's projection of x, eval mode).
- OUT/moco_{legacy,zip}.pth.tar: the MoCo-v2 layout (no geo_dict), plus a
  top-level 'ema' entry holding two tensors that geossl must name as ignored;
  OUT/query_only_legacy.pth.tar: the MoCo state dict without encoder_k.*.
- MoCo's main_moco.py layout with data-only objects beside the weights:
  OUT/moco_best_acc1.pth.tar ({'epoch', 'arch', 'state_dict', 'optimizer',
  'best_acc1': a numpy float64, 'args': an argparse.Namespace}, zip);
  without an arch entry: OUT/moco_bare.pth.tar (the state dict alone) and
  OUT/moco_no_arch.pth.tar ({'epoch', 'state_dict'}); with a wrong one:
  OUT/moco_wrong_arch.pth.tar ('arch': 'resnet50' over resnet18 tensors);
  OUT/moco_numpy_in_state_dict.pth.tar (a numpy array among the tensors).
- Damaged legacy files: OUT/truncated_pickle.pth.tar (cut inside the object
  pickle), OUT/truncated_storages.pth.tar (cut inside the raw storages),
  OUT/forged_size.pth.tar (the first storage's int64 element count set to
  2**62).
- Hostile legacy files whose pickles would run a command creating
  OUT/pwned: OUT/evil_object.pth.tar (os.system in the object pickle),
  OUT/evil_sys_info.pth.tar (builtins.eval as the sys_info pickle).

The ResNet-18 is torchvision's (its layers and forward) with every width
divided by 8, so the files stay small and the test fast.

usage: legacy_checkpoints.py OUT
"""
import argparse
import copy
import io
import os
import pickle
import pickletools
import sys

import numpy as np
import torch
import torchvision
from torch import nn

out = sys.argv[1]
torch.manual_seed(0)
GEO_CLASSES = 10
DIM = 128
# torch/serialization.py
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}


class NarrowResNet18(torchvision.models.ResNet):
    """torchvision's ResNet-18 with conv1 of 8 channels (all widths / 8)."""

    SCALE = 8

    def __init__(self, num_classes):
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.conv1 = nn.Conv2d(3, 64 // self.SCALE, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64 // self.SCALE)
        self.fc = nn.Linear(512 // self.SCALE, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:
            self.inplanes = 64 // self.SCALE
        return super()._make_layer(block, planes // self.SCALE, blocks, stride, dilate)


class MoCo(nn.Module):
    """The parameters and buffers of GASSL's moco/builder_geo.py MoCo (--mlp)."""

    def __init__(self):
        super().__init__()
        self.encoder_q = NarrowResNet18(DIM)
        dim_mlp = self.encoder_q.fc.weight.shape[1]
        self.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(DIM, 64), dim=0))
        self.register_buffer("queue_ptr", torch.tensor([32], dtype=torch.long))


class Classifier(nn.Module):
    """GASSL's geo classifier (main_moco_geo+tp.py)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.ReLU(), nn.Linear(DIM, GEO_CLASSES))

    def forward(self, x):
        return self.layers(x.view(x.size(0), -1))


model = MoCo()
geo = Classifier()
with torch.no_grad():
    # Move BN away from its initial state so a mix-up would show.
    for name, t in model.encoder_q.state_dict().items():
        if name.endswith("running_var"):
            t.copy_(torch.rand_like(t) + 0.5)
        elif name.endswith(("running_mean", "bn1.weight", "bn1.bias", "bn2.bias")):
            t.add_(torch.randn_like(t) * 0.1)
# The official code saves DDP's module.* names; DataParallel gives the same.
model_dp = nn.DataParallel(model)
geo_dp = nn.DataParallel(geo)
opt = torch.optim.SGD(list(model_dp.parameters()) + list(geo_dp.parameters()), lr=0.03, momentum=0.9)
x = torch.randn(2, 3, 32, 32)
geo(model.encoder_q(x)).logsumexp(1).sum().backward()
opt.step()

gassl = {
    "epoch": 3,
    "arch": "resnet18",
    "state_dict": model_dp.state_dict(),
    "geo_dict": geo_dp.state_dict(),
    "optimizer": opt.state_dict(),
}
moco = {k: v for k, v in gassl.items() if k != "geo_dict"}
moco["ema"] = {"encoder.fc.weight": torch.randn(4, 4), "encoder.fc.bias": torch.randn(4)}
# Published weights may hold the query encoder only.
query_only = {**gassl, "state_dict": {k: v for k, v in gassl["state_dict"].items() if "encoder_k." not in k}}
del query_only["geo_dict"], query_only["optimizer"]
torch.save(query_only, os.path.join(out, "query_only_legacy.pth.tar"), _use_new_zipfile_serialization=False)
for name, obj in [("gassl", gassl), ("moco", moco)]:
    torch.save(obj, os.path.join(out, f"{name}_zip.pth.tar"))
    torch.save(obj, os.path.join(out, f"{name}_legacy.pth.tar"), _use_new_zipfile_serialization=False)
args = argparse.Namespace(arch="resnet18", lr=0.03, moco_k=64, mlp=True)
extra = {
    "moco_best_acc1": {**moco, "best_acc1": np.float64(61.5), "args": args},
    "moco_bare": gassl["state_dict"],
    "moco_no_arch": {"epoch": 3, "state_dict": gassl["state_dict"]},
    "moco_wrong_arch": {**moco, "arch": "resnet50"},
    "moco_numpy_in_state_dict": {**moco, "state_dict": {**gassl["state_dict"], "module.extra": np.zeros(2)}},
}
for name, obj in extra.items():
    torch.save(obj, os.path.join(out, f"{name}.pth.tar"))

model.eval()
geo.eval()
with torch.no_grad():
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "geo_logits.npy"), geo(model.encoder_q(x)).numpy())


def pickle_end(data, start):
    """Where the pickle starting at `start` ends (after its STOP)."""
    for op, _, pos in pickletools.genops(io.BytesIO(data[start:])):
        if op.name == "STOP":
            return start + pos + 1
    raise ValueError("no STOP")


with open(os.path.join(out, "gassl_legacy.pth.tar"), "rb") as f:
    data = f.read()
ends = [0]
for _ in range(5):  # magic, protocol version, sys_info, object, storage keys
    ends.append(pickle_end(data, ends[-1]))
object_start, storages_start = ends[3], ends[5]
assert data[:2] == b"\x80\x02" and storages_start < len(data)


def write(name, content):
    with open(os.path.join(out, name), "wb") as f:
        f.write(content)


write("truncated_pickle.pth.tar", data[: object_start + 100])
write("truncated_storages.pth.tar", data[: (storages_start + len(data)) // 2])
forged = bytearray(data)
forged[storages_start : storages_start + 8] = (1 << 62).to_bytes(8, "little")
write("forged_size.pth.tar", bytes(forged))


class EvilSystem:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "pwned"),))


class EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch " + os.path.join(out, "pwned") + "')",))


def legacy_stream(*pickles):
    return b"".join(pickle.dumps(p, protocol=2, fix_imports=False) for p in pickles)


write("evil_object.pth.tar", legacy_stream(MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO, {"state_dict": EvilSystem()}, []))
write("evil_sys_info.pth.tar", legacy_stream(MAGIC_NUMBER, PROTOCOL_VERSION, EvilEval(), {}, []))
# PyTorch itself would run them: check the files are what the test claims.
assert b"posix\nsystem" in open(os.path.join(out, "evil_object.pth.tar"), "rb").read()
assert b"builtins\neval" in open(os.path.join(out, "evil_sys_info.pth.tar"), "rb").read()
print(f"wrote checkpoints to {out}: legacy GASSL file of {len(data)} bytes, storages from byte {storages_start}")
