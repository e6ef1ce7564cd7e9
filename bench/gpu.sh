#!/usr/bin/env bash
# geossl vs PyTorch on one GPU, same settings, one run (under 8 minutes on an
# H100): the MoCo-v2 + TP + Geo training step at ResNet-50, batch 256,
# 224 px, channels-last, bf16 autocast off and on, each pair back to back
# and alternating; then whether the CPU loader can feed that step (pairs/s
# of `bench data` on all cores vs the step's pairs/s); then one epoch of
# `pretrain --device cuda` end to end.
#
# Runs where there is no cargo: uses .gpu/geossl and .gpu/torch_reference.py
# from bench/gpu-prepare.sh, and the machine's python3 with torch 2.11
# (its torch/lib is the libtorch the binary runs on).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
bin="${GEOSSL_BIN:-.gpu/geossl}"
ref="${TORCH_REFERENCE:-.gpu/torch_reference.py}"
out="${OUT:-/tmp/geossl-gpu}"
mkdir -p "$out"
py="${PYTHON:-python3}"
torchlib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torchlib:${LD_LIBRARY_PATH:-}"
log="$out/gpu-bench.log"
exec > >(tee "$log") 2>&1

nvidia-smi -L
"$py" -c 'import torch; print("python torch", torch.__version__, torch.cuda.get_device_name(0))'
"$bin" info

field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
declare -A ours theirs
args=(--arch resnet50 --batch 256 --size 224 --device cuda --channels-last --steps 10 --warmup 5)
round=0
for amp in 0 1; do
    flag=()
    [ "$amp" = 1 ] && flag=(--amp)
    for order in "ours ref" "ref ours"; do
        round=$((round + 1))
        for side in $order; do
            if [ "$side" = ours ]; then
                line="$("$bin" bench step "${args[@]}" "${flag[@]}")" || { echo "geossl step failed"; continue; }
                echo "$line"
                ours[$amp]+="$(echo "$line" | field median_ms) "
            else
                line="$("$py" "$ref" "${args[@]}" "${flag[@]}")" || { echo "reference failed"; continue; }
                echo "$line"
                theirs[$amp]+="$(echo "$line" | field median_ms) "
            fi
        done
    done
done

echo "--- loader on $(nproc) cores"
"$bin" synth --out /tmp/synth512 --locations 400 --max-views 4 --size 512 --seed 1 >/dev/null
loader="$("$bin" bench data --manifest /tmp/synth512/manifest.csv --size 224 --pre 448 --threads 0)"
echo "$loader"

echo "--- pretrain end to end on cuda (1 epoch, tiny data)"
"$bin" synth --out /tmp/synth64 --locations 300 --seed 2 >/dev/null
"$bin" cluster --manifest /tmp/synth64/manifest.csv --k 10 --out /tmp/synth64/manifest.csv >/dev/null
"$bin" pretrain --manifest /tmp/synth64/manifest.csv --out /tmp/run-cuda --arch resnet18 --image-size 64 \
    --batch-size 64 --moco-k 1024 --epochs 1 --device cuda --amp --channels-last
echo "pretrain exit status $?"

echo "--- summary (median ms/step; ratio geossl / PyTorch, below 1 is geossl faster)"
python3 - "${ours[0]:-}" "${theirs[0]:-}" "${ours[1]:-}" "${theirs[1]:-}" "$loader" <<'PY'
import re, statistics, sys
for amp, (o, t) in enumerate([(sys.argv[1], sys.argv[2]), (sys.argv[3], sys.argv[4])]):
    o, t = [float(x) for x in o.split()], [float(x) for x in t.split()]
    if o and t:
        mo, mt = statistics.median(o), statistics.median(t)
        print(f"resnet50 b256 224px channels-last amp={amp}: geossl {mo:.1f} ms ({256e3 / mo:.0f} pairs/s), "
              f"PyTorch {mt:.1f} ms ({256e3 / mt:.0f} pairs/s), ratio {mo / mt:.3f}")
m = re.search(r"pairs_per_s=([0-9.]+)", sys.argv[5])
if m:
    print(f"CPU loader: {float(m.group(1)):.0f} pairs/s")
PY
