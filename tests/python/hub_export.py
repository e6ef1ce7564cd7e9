"""Checks geossl's Hugging Face export and Parquet embeddings as a user of
timm, torchvision, pandas and pyarrow would read them.

usage: hub_export.py repo DIR INPUT FEATURES
       hub_export.py parquet PARQUET NPY CSV

repo: DIR is a `geossl export --format hf` folder of an RGB resnet18/34/50;
INPUT an [N, 3, H, W] float32 .npy of normalised images, FEATURES geossl's
pooled [N, D] features of them (`geossl embed`). Checks config.json against
the weights' metadata and timm's reading of it, then builds the backbone
three ways: timm with `pretrained_cfg_overlay=dict(file=...)` and
`num_classes=0`, timm from `local-dir:DIR` (config.json + weights, as from
the hub), torchvision `resnetXX()` + `load_state_dict(strict=False)` (only
`fc` missing). Every tensor of each model must equal the file's; their
features on INPUT must be identical to each other (same library kernels on
the same CPU: exactly equal) and within 1e-4 x max(1, largest feature) of
geossl's (float32 convolutions of different libraries agree to that; a wrong
weight or normalisation is far off). Also checks that timm's default
`num_classes` (1000) refuses the file (its strict load misses fc), as the
model card says.

parquet: PARQUET is `geossl embed --format parquet` of the same rows as
NPY + CSV (`--format npy`). pyarrow must see a fixed_size_list<float32>[D]
`embedding` column, pandas the CSV's columns with the same values (lat, lon
float64, geo_cluster int64, the rest strings) and embeddings bitwise equal
to the .npy's.
"""
import json
import sys
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch


def same_state(name, model, state):
    theirs = model.state_dict()
    assert set(theirs) == set(state), (name, sorted(set(theirs) ^ set(state))[:8])
    for k, v in state.items():
        assert torch.equal(theirs[k], v), (name, k)


def check_config(repo, meta):
    cfg = json.loads((repo / "config.json").read_text())
    arch = meta["arch"]
    c, side = int(meta["in_chans"]), int(meta["image_size"])
    assert cfg["architecture"] == arch, cfg["architecture"]
    assert cfg["num_classes"] == 0 and cfg["global_pool"] == "avg", cfg
    assert cfg["model_args"] == {"num_classes": 0, "in_chans": c, "global_pool": "avg"}, cfg
    p = cfg["pretrained_cfg"]
    assert p["input_size"] == [c, side, side], p["input_size"]
    assert np.allclose(p["mean"], json.loads(meta["normalize_mean"])), p["mean"]
    assert np.allclose(p["std"], json.loads(meta["normalize_std"])), p["std"]
    assert (p["first_conv"], p["classifier"], p["num_classes"]) == ("conv1", "fc", 0), p
    assert cfg["torchvision"]["builder"] == f"torchvision.models.{arch}", cfg["torchvision"]
    assert cfg["torchvision"]["in_chans"] == c
    g = cfg["geossl"]
    assert g["method"] == meta["method"] and g["epochs"] == meta["epochs"], g
    assert g["input_spec"]["mean"] == json.loads(meta["input_spec"])["mean"]
    return cfg


def repo_check(repo, inp, features):
    import timm
    import timm.data
    import torchvision

    repo = Path(repo)
    weights = repo / "model.safetensors"
    with safetensors.safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    state = safetensors.torch.load_file(str(weights))
    cfg = check_config(repo, meta)
    arch = cfg["architecture"]

    overlay = timm.create_model(arch, pretrained=True, num_classes=0,
                                pretrained_cfg_overlay=dict(file=str(weights)))
    same_state("timm file", overlay, state)
    try:
        timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)))
        raise AssertionError("timm's default num_classes loaded a file without fc")
    except RuntimeError as e:
        assert "fc.weight" in str(e), e

    local = timm.create_model(f"local-dir:{repo}", pretrained=True)
    same_state("timm local-dir", local, state)
    assert local.num_features == cfg["num_features"], local.num_features
    data = timm.data.resolve_data_config(model=local)
    p = cfg["pretrained_cfg"]
    assert data["input_size"] == tuple(p["input_size"]), data
    assert (data["interpolation"], data["crop_pct"]) == ("bilinear", 1.0), data
    assert np.allclose(data["mean"], p["mean"]) and np.allclose(data["std"], p["std"]), data

    tv = getattr(torchvision.models, arch)()
    missing, unexpected = tv.load_state_dict(state, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected, (missing, unexpected)
    tv.fc = torch.nn.Identity()

    x = torch.from_numpy(np.load(inp))
    ours = torch.from_numpy(np.load(features))
    outs = {}
    for name, model in (("timm file", overlay), ("timm local-dir", local), ("torchvision", tv)):
        with torch.no_grad():
            outs[name] = model.eval()(x)
        assert outs[name].shape == ours.shape, (name, outs[name].shape, ours.shape)
    first = outs["torchvision"]
    for name, out in outs.items():
        assert torch.equal(out, first), f"{name} differs from torchvision: {(out - first).abs().max()}"
    err = (ours - first).abs().max().item()
    scale = max(1.0, first.abs().max().item())
    print(f"{arch}: timm (file, local-dir) and torchvision features identical; "
          f"geossl embed: max abs difference {err:.3e} (features up to {scale:.3g})")
    assert err <= 1e-4 * scale, err


def parquet_check(parquet, npy, csv):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    matrix = np.load(npy)
    n, d = matrix.shape
    table = pq.read_table(parquet)
    assert table.num_rows == n, (table.num_rows, n)
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == d, table.schema
    assert kind.value_type == pa.float32(), table.schema
    rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df = pd.read_parquet(parquet)
    assert list(df.columns) == list(rows.columns) + ["embedding"], (list(df.columns), list(rows.columns))
    emb = np.stack(df["embedding"].to_numpy())
    assert emb.dtype == np.float32 and np.array_equal(emb, matrix), "embeddings differ from the .npy"
    arrow_emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(n, d)
    assert np.array_equal(arrow_emb, matrix), "pyarrow's embeddings differ"
    for col in rows.columns:
        text = rows[col].tolist()
        got = [None if pd.isna(g) else g for g in df[col].tolist()]
        if col in ("lat", "lon"):
            assert df[col].dtype == np.float64, (col, df[col].dtype)
            assert all((t == "" and g is None) or float(t) == g for t, g in zip(text, got)), col
        elif col == "geo_cluster":
            assert df[col].dtype == np.int64, (col, df[col].dtype)
            assert [int(t) for t in text] == got, col
        else:
            assert [t or None for t in text] == got, (col, text[:3], got[:3])
    print(f"parquet: {n} rows x {d} features, columns {list(rows.columns)} equal to the .npy + .csv "
          f"(pandas {pd.__version__}, pyarrow {pa.__version__})")


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    {"repo": repo_check, "parquet": parquet_check}[what](*args)
