"""Writes plain ResNet backbone files as torchvision, timm and torchgeo users
save them, with PyTorch's features on one input, for tests/backbones.rs.

usage: backbone_files.py OUT_DIR all|e2e

Into OUT_DIR:
- x.npy: the input, float32 [2, 3, 32, 32] (normalised values);
- for LIB in torchvision, timm: a resnet18 (width 64) with random weights
  and random BN statistics (so that eval-mode features use them), saved
  as LIB_TAG.pth (torch.save of the state dict) and LIB_TAG.safetensors,
  TAG = plain (no prefix), module, backbone, encoder (the prefix with a
  dot); LIB_features.npy: its pooled features (fc removed) in eval mode;
- torchvision_lightning.pth: {"state_dict": model.* names, "epoch", ...}
  (a Lightning checkpoint) and torchvision_reference.pth.tar: {"model":
  module.* names, "args" (an argparse.Namespace), "epoch": 3}
  (torchvision's reference training scripts);
- timm_train.pth.tar: timm's train.py checkpoint {"epoch", "arch",
  "state_dict", "optimizer", "version", "args" (argparse.Namespace),
  "state_dict_ema" (other weights), "metric" (a numpy float64)};
  timm_ema_only.pth: {"state_dict_ema": ...} alone, and
  timm_ema.safetensors: those EMA weights, for comparison;
- not_a_backbone.pth: a dict of other tensors;
- resnet50_fmow_rgb_gassl.pth, torchgeo's published GASSL
  layout (a bare timm resnet50 state dict without fc), and
  gassl_features.npy.
With e2e, only the torchvision resnet18 as torchvision_module.pth and
torchvision_plain.safetensors, with its features (the end-to-end tests).
"""
import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import safetensors.torch
import timm
import torch
import torchvision

out, mode = Path(sys.argv[1]), sys.argv[2]
assert mode in ("all", "e2e"), mode
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
x = torch.randn(2, 3, 32, 32)
np.save(out / "x.npy", x.numpy())


def randomise_bn(model):
    """Random affine and running statistics, so eval mode depends on them."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(123)


def features(model, lib):
    model.eval()
    with torch.no_grad():
        if lib == "timm":
            return model.forward_head(model.forward_features(x), pre_logits=True)
        fc = model.fc
        model.fc = torch.nn.Identity()
        f = model(x)
        model.fc = fc
        return f


def save_variants(lib, model):
    state = model.state_dict()
    for tag, prefix in (("plain", ""), ("module", "module."), ("backbone", "backbone."), ("encoder", "encoder.")):
        named = {prefix + k: v.clone().contiguous() for k, v in state.items()}
        if mode == "all" or tag == "module":
            torch.save(named, out / f"{lib}_{tag}.pth")
        if mode == "all" or tag == "plain":
            safetensors.torch.save_file(named, str(out / f"{lib}_{tag}.safetensors"))
    np.save(out / f"{lib}_features.npy", features(model, lib).numpy())
    return state


models = {"torchvision": torchvision.models.resnet18()}
if mode == "all":
    models["timm"] = timm.create_model("resnet18", pretrained=False)
for lib, model in models.items():
    randomise_bn(model)
    state = save_variants(lib, model)
    if lib == "torchvision" and mode == "all":
        torch.save(
            {"state_dict": {"model." + k: v for k, v in state.items()}, "epoch": 3, "global_step": 30},
            out / "torchvision_lightning.pth",
        )
        args = argparse.Namespace(model="resnet18", lr=0.1, epochs=90, data_path="/data/imagenet")
        torch.save(
            {"model": {"module." + k: v for k, v in state.items()}, "args": args, "epoch": 3},
            out / "torchvision_reference.pth.tar",
        )
    if lib == "timm":
        ema = {k: (v * 0.5 if v.is_floating_point() else v).clone() for k, v in state.items()}
        # An optimizer state as timm saves it, from a copy (state shares
        # the model's tensors, which must stay those of timm_plain).
        trained = copy.deepcopy(model)
        opt = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
        trained(x).sum().backward()
        opt.step()
        args = argparse.Namespace(model="resnet18", lr=0.1, model_ema=True)
        torch.save(
            {"epoch": 3, "arch": "resnet18", "state_dict": state, "optimizer": opt.state_dict(), "version": 2,
             "args": args, "state_dict_ema": ema, "metric": np.float64(71.25)},
            out / "timm_train.pth.tar",
        )
        torch.save({"state_dict_ema": ema}, out / "timm_ema_only.pth")
        safetensors.torch.save_file(ema, str(out / "timm_ema.safetensors"))
torch.save({"pos_embed": torch.zeros(1, 5, 8), "head.weight": torch.zeros(2, 8), "step": 7}, out / "not_a_backbone.pth")

if mode == "all":
    # torchgeo's ResNet50_Weights.FMOW_RGB_GASSL: torchgeo loads it into
    # timm.create_model("resnet50") with strict=False and asserts that only
    # fc.weight and fc.bias are missing: a bare timm state dict without fc.
    model = timm.create_model("resnet50", pretrained=False)
    randomise_bn(model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, out / "resnet50_fmow_rgb_gassl.pth")
    check = timm.create_model("resnet50", pretrained=False)
    missing, unexpected = check.load_state_dict(torch.load(out / "resnet50_fmow_rgb_gassl.pth"), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected, (missing, unexpected)
    np.save(out / "gassl_features.npy", features(model, "timm").numpy())
print("wrote", sorted(p.name for p in out.iterdir()))
