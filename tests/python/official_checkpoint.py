"""Writes checkpoints as the official MoCo / GASSL code does, for the import
tests: OUT/moco.pth.tar (dict with epoch, arch, state_dict of
module.encoder_q.*, module.encoder_k.*, module.geo_head.*, module.queue,
module.queue_ptr, and the SGD optimizer's state), OUT/x.npy (an input
batch) and OUT/features.npy (torchvision's pooled features of encoder_q on
it, eval mode); plus hostile files: OUT/evil.pth.tar, whose data.pkl would
call os.system when unpickled, and OUT/truncated.pth.tar.

usage: official_checkpoint.py OUT
"""
import copy
import io
import os
import pickle
import sys
import zipfile

import numpy as np
import torch
import torchvision

out = sys.argv[1]
torch.manual_seed(0)


def encoder():
    m = torchvision.models.resnet50()
    m.fc = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 128))
    return m


class Moco(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_q = encoder()
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.geo_head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(128, 100))
        self.register_buffer("queue", torch.nn.functional.normalize(torch.randn(128, 512), dim=0))
        self.register_buffer("queue_ptr", torch.tensor([256], dtype=torch.long))


model = Moco()
# Move BN away from its initial state so a mix-up would show.
with torch.no_grad():
    for name, t in model.encoder_q.state_dict().items():
        if name.endswith("running_var"):
            t.copy_(torch.rand_like(t) + 0.5)
        elif name.endswith(("running_mean", "bn1.weight", "bn1.bias")):
            t.add_(torch.randn_like(t) * 0.1)
wrapped = torch.nn.DataParallel(model)  # the official code saves module.* names
opt = torch.optim.SGD(wrapped.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
x = torch.randn(2, 3, 64, 64)
loss = model.encoder_q(x).sum()
loss.backward()
opt.step()
torch.save(
    {"epoch": 200, "arch": "resnet50", "state_dict": wrapped.state_dict(), "optimizer": opt.state_dict()},
    os.path.join(out, "moco.pth.tar"),
)
backbone = model.encoder_q
backbone.fc = torch.nn.Identity()
backbone.eval()
with torch.no_grad():
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "features.npy"), backbone(x).numpy())


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "pwned"),))


with zipfile.ZipFile(os.path.join(out, "evil.pth.tar"), "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"state_dict": Evil()}, protocol=2))
with open(os.path.join(out, "moco.pth.tar"), "rb") as f:
    data = f.read()
with open(os.path.join(out, "truncated.pth.tar"), "wb") as f:
    f.write(data[: len(data) // 2])
