#!/usr/bin/env bash
# geossl's benchmarks beside their PyTorch references, on this machine, in
# one run: each pair runs back to back, alternating which goes first, for
# several rounds; the summary is the median over rounds of each side and
# their ratio (geossl / reference: below 1 is geossl faster for times,
# above 1 for throughputs).
#
#   bench/compare.sh [--rounds N] [--quick] [step|data|kmeans|all]
#
# step:   `geossl bench step` vs ../shared/bench/torch_reference.py, resnet18
#         and resnet50, batch 32, 64 px, CPU, same thread count; peak RSS of
#         both processes (ru_maxrss / VmHWM).
# data:   `geossl bench data --threads 1` vs torch_data_reference.py
#         --workers 1 on the same JPEGs (a synthetic 512 px archive made
#         once under target/bench-data/), 224 px views from 448 px.
# kmeans: `geossl bench kmeans` (1M points, k 100; target < 2 s).
#
# The reference scripts run with the project's own virtualenv python.
# Output: one line per run, then a summary table (also appended to
# target/bench-compare.log with the machine and commit).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=../scripts/setup.sh
. scripts/setup.sh
cargo build --release --quiet
geossl="$root/target/release/geossl"
python="$root/.venv/bin/python"
shared="$(cd "$root/.." && pwd)/shared/bench"

rounds=5
quick=0
what=all
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --quick) quick=1; rounds=2; shift ;;
    step | data | kmeans | all) what="$1"; shift ;;
    *) echo "usage: bench/compare.sh [--rounds N] [--quick] [step|data|kmeans|all]" >&2; exit 2 ;;
    esac
done
[ -f "$shared/torch_reference.py" ] || { echo "missing $shared/torch_reference.py" >&2; exit 1; }

log="$root/target/bench-compare.log"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
{
    echo "=== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
} | tee -a "$log"

# Runs a python reference and prints its output plus its peak RSS in MiB.
py_with_rss() {
    local script="$1"
    shift
    "$python" - "$script" "$@" <<'EOF'
import resource, runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
EOF
}

field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }

# record KIND NAME VALUE (of round $round)
record() { echo "$round $1 $2 $3" >>"$results"; }

step_pair() {
    local arch="$1" order="$2" ours ref
    local args=(--arch "$arch" --batch 32 --size 64 --steps 10 --warmup 3)
    for side in $order; do
        if [ "$side" = ours ]; then
            ours="$("$geossl" bench step "${args[@]}")"
            echo "$ours"
            record "step-$arch" geossl_ms "$(echo "$ours" | field median_ms)"
            record "step-$arch" geossl_rss "$(echo "$ours" | field peak_rss_mib)"
        else
            ref="$(py_with_rss "$shared/torch_reference.py" "${args[@]}" | tr '\n' ' ')"
            echo "$ref"
            record "step-$arch" torch_ms "$(echo "$ref" | field median_ms)"
            record "step-$arch" torch_rss "$(echo "$ref" | field peak_rss_mib)"
        fi
    done
}

data_set() {
    local dir="$root/target/bench-data/synth512"
    if [ ! -f "$dir/manifest.csv" ]; then
        "$geossl" synth --out "$dir" --locations 120 --max-views 4 --size 512 --seed 1 >&2
    fi
    echo "$dir/manifest.csv"
}

data_pair() {
    local manifest="$1" order="$2" limit="$3" out
    for side in $order; do
        if [ "$side" = ours ]; then
            out="$("$geossl" bench data --manifest "$manifest" --size 224 --pre 448 --threads 1 --limit "$limit")"
            echo "$out"
            record data geossl_pairs_s "$(echo "$out" | field pairs_per_s)"
        else
            out="$("$python" "$shared/torch_data_reference.py" "$manifest" --size 224 --pre 448 --workers 1 --limit "$limit")"
            echo "$out"
            record data torch_pairs_s "$(echo "$out" | field pairs_per_s)"
        fi
    done
}

for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then order="ours ref"; else order="ref ours"; fi
    echo "--- round $round/$rounds ($order)"
    if [ "$what" = step ] || [ "$what" = all ]; then
        step_pair resnet18 "$order"
        [ "$quick" = 1 ] || step_pair resnet50 "$order"
    fi
    if [ "$what" = data ] || [ "$what" = all ]; then
        if [ "$quick" = 1 ]; then limit=64; else limit=256; fi
        data_pair "$(data_set)" "$order" "$limit"
    fi
done
if [ "$what" = kmeans ] || [ "$what" = all ]; then
    round=1
    out="$("$geossl" bench kmeans --points 1000000 --k 100 --repeat 3)"
    echo "$out"
    record kmeans geossl_s "$(echo "$out" | field median_s)"
fi

# The ratio is the median of the per-round ratios: each round's two runs
# are back to back, so they share the machine's state (this class of
# virtual machine drifts by +-15% over minutes).
summary() {
    python3 - "$results" <<'EOF'
import collections, statistics, sys
vals = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    rnd, kind, name, value = line.split()
    if value:
        vals[(kind, name)][int(rnd)] = float(value)

def row(label, kind, ours, ref, unit, fmt):
    a, b = vals.get((kind, ours), {}), vals.get((kind, ref), {})
    rounds = sorted(set(a) & set(b))
    if not rounds:
        return
    ratios = [a[r] / b[r] for r in rounds]
    print(f"| {label} | {fmt.format(statistics.median(a.values()))} | {fmt.format(statistics.median(b.values()))} "
          f"| {statistics.median(ratios):.3f}x {unit} (rounds: {min(ratios):.3f}-{max(ratios):.3f}) | {len(rounds)} |")

print("| benchmark | geossl | PyTorch reference | ratio geossl/reference, median of rounds | rounds |")
print("|---|---|---|---|---|")
for kind in sorted({k for k, _ in vals}):
    if kind.startswith("step"):
        arch = kind.split("-", 1)[1]
        row(f"{arch} step, batch 32, 64 px, ms", kind, "geossl_ms", "torch_ms", "time", "{:.1f}")
        row(f"{arch} step, peak RSS MiB", kind, "geossl_rss", "torch_rss", "memory", "{:.0f}")
    elif kind == "data":
        row("data, 1 core, 224 px from 448 px, pairs/s", kind, "geossl_pairs_s", "torch_pairs_s", "throughput", "{:.1f}")
    elif kind == "kmeans":
        v = list(vals[(kind, "geossl_s")].values())
        print(f"| k-means, 1M points, k 100, s (median of 3) | {v[0]:.3f} | - | target < 2 s | - |")
EOF
}
summary | tee -a "$log"
