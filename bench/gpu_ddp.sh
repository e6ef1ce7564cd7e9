#!/usr/bin/env bash
# The NCCL path on one CUDA GPU (a few minutes on an H100): the carried
# binary loads its NCCL library, then `torchrun --nproc-per-node 1
# --no-python geossl pretrain --device cuda` trains with world size 1 on a
# ProcessGroupNCCL, beside PyTorch DDP (bench/torch_ddp_reference.py under
# torchrun, NCCL) on the same settings: ResNet-50, global batch 256, 224 px,
# channels-last, bf16 autocast (as bench/gpu.sh's end-to-end run), queue
# 65536, 100 geo classes, no shuffle-BN groups within the rank; each side
# twice, in the order geossl, PyTorch, PyTorch, geossl. geossl's figure is
# the median step time of the run's metrics.jsonl after 5 warm-up steps (the
# optimiser step alone; PyTorch's inputs are random tensors already on the
# device), with the wall spacing of steps (including loader waits) beside it.
#
# Runs where there is no cargo and no internet: uses .gpu/geossl,
# .gpu/libgeossl_nccl.so (found next to the binary; GEOSSL_NCCL_LIB
# overrides) and .gpu/torch_reference.py from bench/gpu-prepare.sh, and the
# machine's python3 with torch 2.11 (its torch/lib is the libtorch the
# binary runs on). Without a GPU it stops after the library check, saying so.
#
# GPU_DDP_REHEARSAL=1 runs the same steps on the CPU at toy sizes (Gloo,
# ResNet-18, batch 32, 64 px): a check of this script's plumbing on a
# machine without a GPU, before spending a GPU's time on it; its figures mean
# nothing.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
bin="${GEOSSL_BIN:-.gpu/geossl}"
export TORCH_REFERENCE="${TORCH_REFERENCE:-.gpu/torch_reference.py}"
out="${OUT:-/tmp/geossl-gpu}"
mkdir -p "$out"
py="${PYTHON:-python3}"
torchlib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" ||
    { echo "gpu_ddp.sh: $py cannot import torch (set PYTHON)"; exit 1; }
export LD_LIBRARY_PATH="$torchlib:${LD_LIBRARY_PATH:-}"
log="$out/gpu-ddp.log"
exec > >(tee "$log") 2>&1

echo "--- NCCL library"
info="$("$bin" info)" || { echo "gpu_ddp.sh: $bin does not run"; exit 1; }
echo "$info"
if ! grep -q '^NCCL backend *loaded' <<<"$info"; then
    echo "gpu_ddp.sh: the NCCL library does not load (the 'NCCL backend' line above says why);" \
        "bench/gpu-prepare.sh packs it as .gpu/libgeossl_nccl.so next to .gpu/geossl"
    exit 1
fi
if [ "${GPU_DDP_REHEARSAL:-0}" = 1 ]; then
    echo "--- REHEARSAL on the CPU at toy sizes (GPU_DDP_REHEARSAL=1): the figures mean nothing"
    device=cpu arch=resnet18 batch=32 size=64 pre=64 locations=130 data=/tmp/synth-ddp-rehearsal
else
    echo "--- GPU"
    if ! nvidia-smi -L || ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_ddp.sh: no CUDA GPU on this machine (nvidia-smi or torch.cuda.is_available() says none); it needs one"
        exit 1
    fi
    "$py" -c 'import torch; print("python torch", torch.__version__, torch.cuda.get_device_name(0), "NCCL", torch.cuda.nccl.version())'
    # ~4100 images: 16 steps of batch 256.
    device=cuda arch=resnet50 batch=256 size=224 pre=256 locations=1300 data=/tmp/synth-ddp
fi
queue=65536 warmup=5
torchrun=("$py" -m torch.distributed.run --standalone --nproc-per-node 1)
if [ ! -f "$data/manifest.csv" ]; then
    "$bin" synth --out "$data" --locations "$locations" --size 256 --seed 3 >/dev/null &&
        "$bin" cluster --manifest "$data/manifest.csv" --k 100 --out "$data/manifest.csv" >/dev/null ||
        { echo "gpu_ddp.sh: making the synthetic set failed"; exit 1; }
fi

field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
ours=() theirs=() ours_wall=()
geossl_ddp() {
    local run="$out/run-nccl"
    rm -rf "$run"
    "${torchrun[@]}" --no-python "$bin" pretrain --device "$device" --manifest "$data/manifest.csv" --split all \
        --out "$run" --arch "$arch" --image-size "$size" --pre-size "$pre" --batch-size "$batch" \
        --moco-k "$queue" --bn-groups 1 --epochs 1 --amp --channels-last --checkpoint-every-minutes 0 ||
        { echo "geossl pretrain under torchrun failed (exit status $?)"; return; }
    local line
    line="$("$py" - "$run/metrics.jsonl" "$warmup" "$batch" <<'EOF'
import json, statistics, sys
path, warmup, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [r for r in map(json.loads, open(path)) if r["kind"] == "step"]
step = statistics.median(batch / r["pairs_per_s"] * 1e3 for r in rows[warmup:])
wall = statistics.median((b["time"] - a["time"]) * 1e3 for a, b in zip(rows[warmup:], rows[warmup + 1:]))
print(f"GEOSSL_DDP world=1 steps={len(rows) - warmup} median_ms={step:.1f} wall_ms={wall:.1f} "
      f"pairs_per_s={batch * 1e3 / step:.1f} wall_pairs_per_s={batch * 1e3 / wall:.1f}")
EOF
)" || { echo "reading $run/metrics.jsonl failed"; return; }
    echo "$line"
    ours+=("$(echo "$line" | field median_ms)")
    ours_wall+=("$(echo "$line" | field wall_ms)")
}
torch_ddp() {
    local line
    line="$("${torchrun[@]}" bench/torch_ddp_reference.py --device "$device" --arch "$arch" --batch "$batch" \
        --size "$size" --queue "$queue" --amp --channels-last --steps 10 --warmup "$warmup")" ||
        { echo "PyTorch DDP reference failed"; return; }
    echo "$line"
    theirs+=("$(echo "$line" | field median_ms)")
}
for side in ours ref ref ours; do
    echo "--- $side"
    if [ "$side" = ours ]; then geossl_ddp; else torch_ddp; fi
done

echo "--- summary (world size 1 on $device; $arch, batch $batch, $size px, channels-last, bf16; median ms/step)"
"$py" - "${ours[*]:-}" "${theirs[*]:-}" "${ours_wall[*]:-}" "$batch" <<'EOF'
import statistics, sys
o, t, w = ([float(x) for x in a.split()] for a in sys.argv[1:4])
batch = int(sys.argv[4])
if o and t:
    mo, mt = statistics.median(o), statistics.median(t)
    print(f"geossl (torchrun) {mo:.1f} ms ({batch * 1e3 / mo:.0f} pairs/s; wall with loader "
          f"{statistics.median(w):.1f} ms), PyTorch DDP {mt:.1f} ms ({batch * 1e3 / mt:.0f} pairs/s), "
          f"throughput ratio geossl/PyTorch {mt / mo:.3f}")
else:
    print("incomplete: see the failures above")
    sys.exit(1)
EOF
