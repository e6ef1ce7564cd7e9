#!/usr/bin/env bash
# Packs what bench/gpu.sh and bench/gpu_ddp.sh need on a GPU machine that
# has PyTorch 2.11 but no cargo, no internet and no ../shared: the release
# binary (debug info stripped, ~11 MB), its NCCL backend library (built by
# build.rs next to the binary; geossl looks for it next to itself) and the
# PyTorch reference step, into .gpu/ (ignored by git). Then, with the device
# tool: run `bash bench/gpu.sh` or `bash bench/gpu_ddp.sh` carrying `.gpu`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=../scripts/setup.sh
. scripts/setup.sh
cargo build --release --quiet
mkdir -p .gpu
strip --strip-debug -o .gpu/geossl target/release/geossl
if [ -f target/release/libgeossl_nccl.so ]; then
    strip --strip-debug -o .gpu/libgeossl_nccl.so target/release/libgeossl_nccl.so
else
    echo "gpu-prepare.sh: no target/release/libgeossl_nccl.so (see the build's NCCL warning): bench/gpu_ddp.sh will stop" >&2
fi
cp "$root/../shared/bench/torch_reference.py" .gpu/torch_reference.py
ls -l .gpu
