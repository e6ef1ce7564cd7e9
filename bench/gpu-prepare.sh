#!/usr/bin/env bash
# Packs what bench/gpu.sh needs on a GPU machine that has PyTorch 2.11 but
# no cargo, no internet and no ../shared: the release binary (debug info
# stripped, ~11 MB) and the PyTorch reference step, into .gpu/ (ignored by
# git). Then, with the device tool: run `bash bench/gpu.sh` carrying `.gpu`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=../scripts/setup.sh
. scripts/setup.sh
cargo build --release --quiet
mkdir -p .gpu
strip --strip-debug -o .gpu/geossl target/release/geossl
cp "$root/../shared/bench/torch_reference.py" .gpu/torch_reference.py
ls -l .gpu
