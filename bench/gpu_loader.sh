#!/usr/bin/env bash
# Can the CPU loader feed the GPU? On a GPU machine (prepared as for
# bench/gpu.sh: .gpu/geossl from bench/gpu-prepare.sh, the machine's python3
# with torch 2.11 for libtorch): the ResNet-50 MoCo-v2 + TP + Geo step's
# pairs/s on the GPU (`bench step`, batch 256, 224 px, channels-last, bf16
# autocast) against the loader's pairs/s on $THREADS threads (default 16, or
# every core if fewer) with temporal pairs, 224 px from 448, from fMoW-sized
# JPEGs (`bench fmow-images`, DCT-scaled decoding) and from their pack at
# 448 (`geossl pack`, when the binary has it). The loader keeps up when its
# pairs/s is at least the step's.
#
#   bash bench/gpu_loader.sh [--dry] [--count N] [--rounds N]
#
# --dry: a quick check of the script on a CPU machine: the step on the CPU
# at ResNet-18, batch 8, 64 px; 12 smaller images, loader batches of 4;
# one round.
# Env: GEOSSL_BIN (.gpu/geossl), PYTHON (python3), OUT (/tmp/geossl-gpu-loader),
# THREADS.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
bin="${GEOSSL_BIN:-.gpu/geossl}"
out="${OUT:-/tmp/geossl-gpu-loader}"
py="${PYTHON:-python3}"
dry=0
count=384
rounds=2
while [ $# -gt 0 ]; do
    case "$1" in
    --dry) dry=1; shift ;;
    --count) count="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "usage: bash bench/gpu_loader.sh [--dry] [--count N] [--rounds N]" >&2; exit 2 ;;
    esac
done
cores="$(nproc)"
threads="${THREADS:-$((cores < 16 ? cores : 16))}"
mkdir -p "$out"
torchlib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
[ -n "$torchlib" ] && export LD_LIBRARY_PATH="$torchlib:${LD_LIBRARY_PATH:-}"
log="$out/gpu-loader.log"
exec > >(tee "$log") 2>&1

if [ "$dry" = 1 ]; then
    step=(--arch resnet18 --batch 8 --size 64 --device cpu --steps 2 --warmup 1)
    gen=(--count 12 --min-size 600x450 --max-size 1200x1000)
    batch=4
    rounds=1
else
    nvidia-smi -L
    step=(--arch resnet50 --batch 256 --size 224 --device cuda --amp --channels-last --steps 10 --warmup 5)
    gen=(--count "$count")
    batch=256
fi
"$bin" info | head -5

data="$out/fmow"
if [ ! -f "$data/manifest.csv" ]; then
    "$bin" bench fmow-images --out "$data" "${gen[@]}" --seed 1 || exit 1
fi
pack="$out/pack448"
if "$bin" pack --help >/dev/null 2>&1; then
    [ -f "$pack/pack.json" ] || "$bin" pack "$data/manifest.csv" --out "$pack" --size 448 || exit 1
else
    echo "this geossl has no \`pack\`: the packed loader is left out"
    pack=""
fi

field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
steps="" raws="" packs=""
loader=(--manifest "$data/manifest.csv" --size 224 --pre 448 --batch "$batch" --pairs temporal --threads "$threads")
for round in $(seq 1 "$rounds"); do
    echo "--- round $round/$rounds"
    line="$("$bin" bench step "${step[@]}")" && { echo "$line"; steps+="$(echo "$line" | field pairs_per_s) "; }
    line="$("$bin" bench data "${loader[@]}" --decode-scale auto)" && { echo "$line"; raws+="$(echo "$line" | field pairs_per_s) "; }
    if [ -n "$pack" ]; then
        line="$("$bin" bench data "${loader[@]}" --packed "$pack")" && { echo "$line"; packs+="$(echo "$line" | field pairs_per_s) "; }
    fi
done

echo "--- summary (median pairs/s over rounds; loader on $threads threads)"
"$py" - "$steps" "$raws" "$packs" <<'PY'
import statistics, sys
med = lambda s: statistics.median(float(x) for x in s.split()) if s.split() else None
step, raw, packed = (med(a) for a in sys.argv[1:4])
print(f"step: {step if step is None else round(step)} pairs/s")
for name, v in [("loader, raw JPEGs (DCT-scaled)", raw), ("loader, pack at 448", packed)]:
    if v is not None and step:
        print(f"{name}: {v:.0f} pairs/s = {v / step:.2f} x the step ({'keeps up' if v >= step else 'the loader sets the pace'})")
PY
