#!/usr/bin/env bash
# The input pipeline on fMoW-sized JPEGs, geossl beside PyTorch, in one run
# (issue 17's benchmarks). Makes the data once under $DATA: `geossl bench
# fmow-images` (1200x900 .. 3500x3000 JPEGs at quality 92, textured like
# imagery, 2-4 views per place, fMoW context crops) and, when this geossl has
# `pack`, a pack of it at 448 px. Then, for several rounds, each group back
# to back with its order reversed every other round; the summary gives the
# median over rounds of each per-round ratio (so a machine busier in one
# round than the next does not tilt it), 224 px views from 448 px, one
# thread / one worker process per side:
#
#   raw:     geossl bench data --decode-scale auto and full
#            vs ../shared/bench/torch_data_reference.py --draft and without
#            (same-image pairs, the reference's)
#   packed:  geossl bench data --packed DIR --pairs temporal
#            vs bench/packed_reference.py DIR --pairs temporal
#   scaling: geossl --threads 1 vs --threads 2 (raw, auto; packed, temporal)
#
#   bench/loader.sh [--rounds N] [--count N] [--limit N] [--skip-scaling]
#
# Env: PYTHON (default: the project's .venv python), GEOSSL_BIN (default:
# target/release/geossl, built here), SHARED (../shared/bench), DATA
# (target/bench-loader). Output: every line, then the summary with the
# issue's targets (also appended to target/bench-loader.log).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${GEOSSL_BIN:-}" ]; then
    # shellcheck source=../scripts/setup.sh
    . scripts/setup.sh
    cargo build --release --quiet
fi
geossl="${GEOSSL_BIN:-$root/target/release/geossl}"
python="${PYTHON:-$root/.venv/bin/python}"
shared="${SHARED:-$(cd "$root/.." && pwd)/shared/bench}"
data="${DATA:-$root/target/bench-loader}"

rounds=3
count=96
limit=0
scaling=1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --skip-scaling) scaling=0; shift ;;
    *) echo "usage: bench/loader.sh [--rounds N] [--count N] [--limit N] [--skip-scaling]" >&2; exit 2 ;;
    esac
done
[ -f "$shared/torch_data_reference.py" ] || { echo "missing $shared/torch_data_reference.py" >&2; exit 1; }

mkdir -p "$root/target"
log="$root/target/bench-loader.log"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
{
    echo "=== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$log"

raw="$data/raw-$count"
if [ ! -f "$raw/manifest.csv" ]; then
    "$geossl" bench fmow-images --out "$raw" --count "$count" --seed 1
fi
manifest="$raw/manifest.csv"
pack="$data/pack448-$count"
packed=0
if "$geossl" pack --help >/dev/null 2>&1; then
    if [ ! -f "$pack/pack.json" ]; then
        "$geossl" pack "$manifest" --out "$pack" --size 448
    fi
    packed=1
else
    echo "this geossl has no \`pack\`: the packed group is left out"
fi

field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
record() { echo "$round $1 $2" >>"$results"; }
lim=()
[ "$limit" -gt 0 ] && lim=(--limit "$limit")
common=(--size 224 --pre 448 "${lim[@]}")

# run NAME COMMAND...: runs it, prints its line, records its pairs/s.
run() {
    local name="$1" out
    shift
    out="$("$@" 2>&1 | grep -E '^(BENCH|DATAREF)')" || { echo "$name failed: $*"; return 0; }
    echo "$name: $out"
    record "$name" "$(echo "$out" | field pairs_per_s)"
}

# group NAME=COMMAND... in the round's order (reversed on even rounds).
group() {
    local sides=("$@")
    if [ $((round % 2)) -eq 0 ]; then
        local reversed=()
        for ((i = ${#sides[@]} - 1; i >= 0; i--)); do reversed+=("${sides[i]}"); done
        sides=("${reversed[@]}")
    fi
    for side in "${sides[@]}"; do
        case "$side" in
        geossl-auto) run "$side" "$geossl" bench data --manifest "$manifest" "${common[@]}" --threads 1 --decode-scale auto ;;
        geossl-full) run "$side" "$geossl" bench data --manifest "$manifest" "${common[@]}" --threads 1 --decode-scale full ;;
        torch-draft) run "$side" "$python" "$shared/torch_data_reference.py" "$manifest" "${common[@]}" --workers 1 --draft ;;
        torch-full) run "$side" "$python" "$shared/torch_data_reference.py" "$manifest" "${common[@]}" --workers 1 ;;
        geossl-packed) run "$side" "$geossl" bench data --manifest "$manifest" "${common[@]}" --threads 1 --packed "$pack" --pairs temporal ;;
        torch-packed) run "$side" "$python" "$root/bench/packed_reference.py" "$pack" "${common[@]}" --workers 1 --pairs temporal ;;
        geossl-auto-t2) run "$side" "$geossl" bench data --manifest "$manifest" "${common[@]}" --threads 2 --decode-scale auto ;;
        geossl-packed-t2) run "$side" "$geossl" bench data --manifest "$manifest" "${common[@]}" --threads 2 --packed "$pack" --pairs temporal ;;
        esac
    done
}

for round in $(seq 1 "$rounds"); do
    echo "--- round $round/$rounds"
    group geossl-auto geossl-full torch-draft torch-full
    [ "$packed" = 1 ] && group geossl-packed torch-packed
    if [ "$scaling" = 1 ]; then
        group geossl-auto geossl-auto-t2
        [ "$packed" = 1 ] && group geossl-packed geossl-packed-t2
    fi
done

"$python" - "$results" <<'PY' | tee -a "$log"
import collections, statistics, sys
runs = collections.defaultdict(dict)  # round -> name -> [pairs/s]
for line in open(sys.argv[1]):
    r, name, v = line.split()
    if v:
        runs[r].setdefault(name, []).append(float(v))
def med(name):
    v = [x for r in runs.values() for x in r.get(name, [])]
    return statistics.median(v) if v else None
def ratio(a, b):
    v = [statistics.median(r[a]) / statistics.median(r[b]) for r in runs.values() if r.get(a) and r.get(b)]
    return statistics.median(v) if v else None
print("--- summary: pairs/s (median over rounds), 224 from 448, one thread / worker")
for name in ["geossl-auto", "geossl-full", "torch-draft", "torch-full", "geossl-packed", "torch-packed",
             "geossl-auto-t2", "geossl-packed-t2"]:
    m = med(name)
    if m is not None:
        print(f"{name:18s} {m:8.1f}")
print("--- ratios (median of per-round ratios) and the issue's targets")
for a, b, target in [("geossl-auto", "torch-draft", 2.0), ("geossl-auto", "torch-full", 4.0),
                     ("geossl-full", "torch-full", None), ("geossl-packed", "torch-packed", 3.0),
                     ("geossl-auto-t2", "geossl-auto", 1.8), ("geossl-packed-t2", "geossl-packed", 1.8)]:
    r = ratio(a, b)
    if r is not None:
        verdict = "" if target is None else (" target >= %.1fx: %s" % (target, "met" if r >= target else "MISSED"))
        print(f"{a} / {b}: {r:.2f}x{verdict}")
m = med("geossl-packed")
if m is not None:
    print(f"geossl-packed per core: {m:.0f} pairs/s target >= 250: {'met' if m >= 250 else 'MISSED'}")
PY
