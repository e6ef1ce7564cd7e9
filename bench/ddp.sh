#!/usr/bin/env bash
# Data-parallel pretraining on this machine's CPUs, geossl beside PyTorch
# DDP, same model settings and global batch, side by side:
#
#   geossl  2 ranks x 1 thread   geossl pretrain --nproc 2 --threads 1 (Gloo; torchrun
#                                --no-python where the binary lacks --nproc)
#   geossl  1 rank  x 2 threads  geossl pretrain --threads 2
#   PyTorch 2 ranks x 1 thread   torchrun --nproc-per-node 2 bench/torch_ddp_reference.py --threads 1
#   PyTorch 1 process x 2 threads  ../shared/bench/torch_reference.py --threads 2
#
#   bench/ddp.sh [--rounds N] [--arch resnet18|resnet50|all] [step|sync|all]
#
# step: the four above, each round in alternating order (this class of
#       virtual machine drifts by +-15% within minutes; the ratios are the
#       median of per-round ratios, as bench/compare.sh). geossl's figures
#       come from the step rows of the run's metrics.jsonl after --warmup
#       steps: `step` is the optimiser step alone (the row's pairs_per_s;
#       its median and its fastest, the least disturbed by other load),
#       `wall` the spacing of consecutive rows (the step plus any wait for
#       the loader, whose threads share the cores: RAYON_NUM_THREADS is the
#       rank's --threads). PyTorch's inputs are
#       random tensors (no loader), so `step` is the like-for-like column.
# sync: what averaging gradients costs, i.e. the most that overlapping it
#       with backward (DDP's Reducer) can save over geossl's one coalesced
#       all-reduce after backward: the all-reduce alone of one flat float32
#       buffer the size of the model's gradients (2 ranks, Gloo), and
#       PyTorch DDP 2 x 1 with --grad-sync ddp (Reducer, overlapped),
#       allreduce (one coalesced all-reduce after backward, as geossl) and
#       none (no averaging: the floor).
#
# Settings (both sides): MoCo-v2 + geo head, global batch 32 (16 per rank),
# 64 px, queue 4096, 100 geo classes, no shuffle-BN groups within a rank
# (--bn-groups 1; across ranks the keys are shuffled as moco/builder.py).
# geossl trains on a synthetic set made once under target/bench-data/.
#
# Environment: GEOSSL_BIN (default: cargo build --release, then
# target/release/geossl), PYTHON (default .venv/bin/python, or
# $GEOSSL_VENV/bin/python), TORCH_REFERENCE (default
# ../shared/bench/torch_reference.py). Output: one line per run, then a
# summary table, also appended to target/bench-ddp.log with the machine,
# commit and load average.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${GEOSSL_BIN:-}" ]; then
    # shellcheck source=../scripts/setup.sh
    . scripts/setup.sh
    cargo build --release --quiet
fi
geossl="${GEOSSL_BIN:-$root/target/release/geossl}"
venv="${GEOSSL_VENV:-$root/.venv}"
python="${PYTHON:-$venv/bin/python}"
torchrun=("$python" -m torch.distributed.run --standalone)
export TORCH_REFERENCE="${TORCH_REFERENCE:-$(cd "$root/.." && pwd)/shared/bench/torch_reference.py}"
ddp_ref="$root/bench/torch_ddp_reference.py"

rounds=3
archs=(resnet18)
what=step
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --arch) if [ "$2" = all ]; then archs=(resnet18 resnet50); else archs=("$2"); fi; shift 2 ;;
    step | sync | all) what="$1"; shift ;;
    *) echo "usage: bench/ddp.sh [--rounds N] [--arch resnet18|resnet50|all] [step|sync|all]" >&2; exit 2 ;;
    esac
done
[ -f "$TORCH_REFERENCE" ] || { echo "missing $TORCH_REFERENCE (set TORCH_REFERENCE)" >&2; exit 1; }

batch=32 size=64 queue=4096 warmup=3 steps=10
work="$root/target/bench-ddp"
mkdir -p "$work"
log="$root/target/bench-ddp.log"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
{
    echo "=== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty') bench/ddp.sh $what ${archs[*]} rounds $rounds"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$log"

field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
# record ARCH NAME VALUE (of round $round)
record() { echo "$round $1 $2 $3" >>"$results"; }

# A synthetic set of ~630 64 px images (19 steps of batch 32), geo-clustered.
manifest="$work/synth/manifest.csv"
if [ ! -f "$manifest" ]; then
    "$geossl" synth --out "$work/synth" --locations 200 --seed 1 >&2
    "$geossl" cluster --manifest "$manifest" --k 100 --out "$manifest" >&2
fi

# geossl pretrain with NPROC ranks x THREADS threads; prints its line.
geossl_run() {
    local arch="$1" nproc="$2" threads="$3" out launch=()
    out="$work/run-$arch-${nproc}x$threads"
    rm -rf "$out"
    # geossl's own launcher when this binary has it, else torchrun's (the
    # same variables either way).
    if [ "$nproc" -gt 1 ] && "$geossl" pretrain --help | grep -q -- '--nproc'; then
        launch=("$geossl" pretrain --nproc "$nproc")
    elif [ "$nproc" -gt 1 ]; then
        launch=("${torchrun[@]}" --nproc-per-node "$nproc" --no-python "$geossl" pretrain)
    else
        launch=("$geossl" pretrain)
    fi
    echo "${launch[*]}" >"$out.log"
    # The loader's decoding threads per rank as its libtorch threads, so that
    # both layouts use the two cores alike (README: divide the cores).
    if ! RAYON_NUM_THREADS="$threads" "${launch[@]}" --threads "$threads" --device cpu --manifest "$manifest" \
        --split all --out "$out" --arch "$arch" --image-size "$size" --batch-size "$batch" \
        --moco-k "$queue" --bn-groups 1 --epochs 1 --checkpoint-every-minutes 0 >>"$out.log" 2>&1; then
        echo "geossl ${nproc}x$threads failed, see $out.log:" >&2
        tail -5 "$out.log" >&2
        return 1
    fi
    python3 - "$out/metrics.jsonl" "$warmup" "$batch" "$arch" "$nproc" "$threads" <<'EOF'
import json, statistics, sys
path, warmup, batch, arch, nproc, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
rows = [r for r in map(json.loads, open(path)) if r["kind"] == "step"]
step = [batch / r["pairs_per_s"] * 1e3 for r in rows[warmup:]]
wall = [(b["time"] - a["time"]) * 1e3 for a, b in zip(rows[warmup:], rows[warmup + 1:])]
print(f"GEOSSL arch={arch} nproc={nproc} threads={threads} batch={batch} steps={len(step)} "
      f"median_ms={statistics.median(step):.1f} min_ms={min(step):.1f} wall_ms={statistics.median(wall):.1f} "
      f"pairs_per_s={batch * 1e3 / statistics.median(step):.1f} wall_pairs_per_s={batch * 1e3 / statistics.median(wall):.1f}")
EOF
}

model_args() { echo --arch "$1" --batch "$batch" --size "$size" --queue "$queue" --steps "$steps" --warmup "$warmup"; }

step_contender() {
    local arch="$1" who="$2" line
    case "$who" in
    geossl-2x1) line="$(geossl_run "$arch" 2 1)" || return 0 ;;
    geossl-1x2) line="$(geossl_run "$arch" 1 2)" || return 0 ;;
    torch-2x1)
        # shellcheck disable=SC2046
        line="$("${torchrun[@]}" --nproc-per-node 2 "$ddp_ref" $(model_args "$arch") --threads 1 2>/dev/null)" ||
            { echo "torch DDP 2x1 failed" >&2; return 0; } ;;
    torch-1x2)
        # shellcheck disable=SC2046
        line="$("$python" "$TORCH_REFERENCE" $(model_args "$arch") --threads 2)" ||
            { echo "torch 1x2 failed" >&2; return 0; } ;;
    esac
    echo "$line"
    record "$arch" "$who" "$(echo "$line" | field median_ms)"
    record "$arch" "$who-min" "$(echo "$line" | field min_ms)"
    case "$who" in geossl-*) record "$arch" "$who-wall" "$(echo "$line" | field wall_ms)" ;; esac
}

sync_contender() {
    local arch="$1" who="$2" line
    case "$who" in
    allreduce-only)
        line="$("${torchrun[@]}" --nproc-per-node 2 "$ddp_ref" --arch "$arch" --allreduce-only --threads 1 --steps 10 2>/dev/null)" ;;
    *)
        # shellcheck disable=SC2046
        line="$("${torchrun[@]}" --nproc-per-node 2 "$ddp_ref" $(model_args "$arch") --threads 1 --grad-sync "$who" 2>/dev/null)" ;;
    esac || { echo "torch $who failed" >&2; return 0; }
    echo "$line"
    record "$arch" "sync-$who" "$(echo "$line" | field median_ms)"
}

step_order=(geossl-2x1 geossl-1x2 torch-2x1 torch-1x2)
sync_order=(allreduce-only ddp allreduce none)
for round in $(seq 1 "$rounds"); do
    for arch in "${archs[@]}"; do
        if [ "$what" = step ] || [ "$what" = all ]; then
            order=("${step_order[@]}")
            [ $((round % 2)) -eq 0 ] && order=("${step_order[3]}" "${step_order[2]}" "${step_order[1]}" "${step_order[0]}")
            echo "--- round $round/$rounds $arch: ${order[*]}"
            for who in "${order[@]}"; do step_contender "$arch" "$who"; done
        fi
        if [ "$what" = sync ] || [ "$what" = all ]; then
            order=("${sync_order[@]}")
            [ $((round % 2)) -eq 0 ] && order=("${sync_order[3]}" "${sync_order[2]}" "${sync_order[1]}" "${sync_order[0]}")
            echo "--- round $round/$rounds $arch gradient averaging: ${order[*]}"
            for who in "${order[@]}"; do sync_contender "$arch" "$who"; done
        fi
    done
done

python3 - "$results" "$batch" <<'EOF' | tee -a "$log"
import collections, statistics, sys
batch = int(sys.argv[2])
ms = collections.defaultdict(dict)  # (arch, who) -> {round: ms}
for line in open(sys.argv[1]):
    rnd, arch, who, value = line.split()
    if value:
        ms[(arch, who)][int(rnd)] = float(value)

def med(arch, who):
    v = ms.get((arch, who))
    return statistics.median(v.values()) if v else None

def ratio(arch, a, b):
    """Median over rounds of ms[b] / ms[a]: a's throughput relative to b's."""
    x, y = ms.get((arch, a), {}), ms.get((arch, b), {})
    r = [y[k] / x[k] for k in sorted(set(x) & set(y))]
    return f"{statistics.median(r):.3f}x ({min(r):.3f}-{max(r):.3f}, {len(r)} rounds)" if r else "-"

names = {"geossl-2x1": "geossl, 2 ranks x 1 thread (Gloo)", "geossl-1x2": "geossl, 1 rank x 2 threads",
         "torch-2x1": "PyTorch DDP, 2 ranks x 1 thread (Gloo)", "torch-1x2": "PyTorch, 1 process x 2 threads"}
for arch in sorted({a for a, _ in ms}):
    if any((arch, w) in ms for w in names):
        print(f"\n{arch}, global batch {batch}, 64 px, CPU: ms per step (pairs/s), medians over rounds")
        print("| run | step, median | step, fastest | wall, median (geossl: with loader waits) |")
        print("|---|---|---|---|")
        for who, name in names.items():
            s, m, w = med(arch, who), med(arch, who + "-min"), med(arch, who + "-wall")
            if s:
                fast = f"{m:.1f} ({batch * 1e3 / m:.1f})" if m else "-"
                wall = f"{w:.1f} ({batch * 1e3 / w:.1f})" if w else "-"
                print(f"| {name} | {s:.1f} ({batch * 1e3 / s:.1f}) | {fast} | {wall} |")
        print("\n| throughput ratio (median of per-round ratios) | step |")
        print("|---|---|")
        for label, a, b in [("geossl 2x1 / PyTorch DDP 2x1", "geossl-2x1", "torch-2x1"),
                            ("geossl 1x2 / PyTorch 1x2", "geossl-1x2", "torch-1x2"),
                            ("geossl 2x1 / geossl 1x2", "geossl-2x1", "geossl-1x2"),
                            ("PyTorch DDP 2x1 / PyTorch 1x2", "torch-2x1", "torch-1x2")]:
            print(f"| {label} | {ratio(arch, a, b)} |")
    if any((arch, "sync-" + w) in ms for w in ("allreduce-only", "ddp", "allreduce", "none")):
        print(f"\n{arch}, 2 ranks x 1 thread, gradient averaging: median ms")
        print("| what | ms |")
        print("|---|---|")
        for who, name in [("allreduce-only", "all-reduce of the gradients alone (one flat float32 buffer)"),
                          ("ddp", "PyTorch DDP step, Reducer (bucketed, overlapped with backward)"),
                          ("allreduce", "PyTorch DDP step, one coalesced all-reduce after backward (geossl's way)"),
                          ("none", "PyTorch DDP step, no gradient averaging (floor)")]:
            v = med(arch, "sync-" + who)
            if v:
                print(f"| {name} | {v:.1f} |")
EOF
