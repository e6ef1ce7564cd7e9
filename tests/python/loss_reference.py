"""The MoCo-v2 InfoNCE and the geo-location loss as the reference code
computes them (moco/builder.py + the GASSL geo head), on tensors written by
geossl's test; compares with geossl's values and exits 1 if they differ by
more than 1e-5.

usage: loss_reference.py DIR TEMPERATURE
DIR holds q_raw.npy [N, dim], k.npy [N, dim] (normalised), queue.npy
[dim, K], labels.npy [N] (float), geo_w.npy [C, dim], geo_b.npy [C] and
geossl.npy [moco_loss, geo_loss].
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

d, t = sys.argv[1], float(sys.argv[2])
load = lambda n: torch.from_numpy(np.load(os.path.join(d, n)))
q_raw, k, queue = load("q_raw.npy"), load("k.npy"), load("queue.npy")
labels = load("labels.npy").long()
q = F.normalize(q_raw, dim=1)
l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
l_neg = torch.einsum("nc,ck->nk", [q, queue.clone().detach()])
logits = torch.cat([l_pos, l_neg], dim=1) / t
moco = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
geo_head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(q_raw.shape[1], labels.max().item() + 1))
with torch.no_grad():
    geo_head[1].weight.copy_(load("geo_w.npy"))
    geo_head[1].bias.copy_(load("geo_b.npy"))
geo = F.cross_entropy(geo_head(q_raw), labels)
ours = load("geossl.npy")
diff = max(abs(ours[0].item() - moco.item()), abs(ours[1].item() - geo.item()))
print(f"InfoNCE geossl {ours[0].item():.7f} reference {moco.item():.7f}; geo geossl {ours[1].item():.7f} reference {geo.item():.7f}; max difference {diff:.2e}")
sys.exit(0 if diff <= 1e-5 else 1)
