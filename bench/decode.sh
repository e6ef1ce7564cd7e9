#!/usr/bin/env bash
# Decode throughput per format, geossl's two readers beside PyTorch's:
#
#   geossl bench decode --keep DIR   GDAL (RasterReader) vs the current
#                                    JPEG/PNG decoder (zune-jpeg / image), 1
#                                    thread and all cores, on JPEG, PNG and
#                                    GeoTIFF files it writes into DIR; then
#                                    the scaled-JPEG rows: 16 JPEGs of 1200 x
#                                    900 to 3500 x 3000 with fMoW-like crops,
#                                    full vs DCT-scaled + region decode for
#                                    Resize(448), 1 thread, and the PSNR
#   bench/decode_reference.py DIR    PIL and torchvision.io on the same JPEG
#                                    and PNG files, 1 thread
#   geossl bench data                the loader (decode + two aug+ views +
#                                    collation), pairs/s, 1 thread and all
#                                    cores, on 128 scenes of 264 px as 3-band
#                                    JPEG (the RGB path) and as 13-band
#                                    uint16 GeoTIFF (GDAL, --bands all
#                                    --radiometry scale:10000), 224 px views
#
#   bench/decode.sh [--rounds N] [--megasamples M] [--size PX]
#
# Then prints, per JPEG/PNG format, the single-thread images/s of every
# decoder and their ratio to PIL's (above 1: faster than PIL).
# Environment: GEOSSL_BIN (default: cargo build --release, then
# target/release/geossl), PYTHON (default .venv/bin/python, or
# $GEOSSL_VENV/bin/python). Output also appended to target/bench-decode.log.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${GEOSSL_BIN:-}" ]; then
    # shellcheck source=../scripts/setup.sh
    . scripts/setup.sh
    cargo build --release --quiet
    GEOSSL_BIN="$root/target/release/geossl"
fi
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python="${GEOSSL_VENV:?set PYTHON or GEOSSL_VENV}/bin/python"; fi
fi

args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds | --megasamples | --size) args+=("$1" "$2"); shift 2 ;;
    *) echo "usage: bench/decode.sh [--rounds N] [--megasamples M] [--size PX]" >&2; exit 2 ;;
    esac
done
ref_args=()
for ((i = 0; i < ${#args[@]}; i += 2)); do
    [ "${args[i]}" = --size ] || ref_args+=("${args[i]}" "${args[i + 1]}")
done

dir="$(mktemp -d)"
out="$(mktemp)"
trap 'rm -rf "$dir" "$out"' EXIT
log="$root/target/bench-decode.log"
mkdir -p "$root/target"
{
    echo "=== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$GEOSSL_BIN" bench decode --keep "$dir" "${args[@]}"
    "$python" "$root/bench/decode_reference.py" "$dir" "${ref_args[@]}"
    for threads in 1 0; do
        "$GEOSSL_BIN" bench data --manifest "$dir/loader-jpeg-264/manifest.csv" \
            --size 224 --pre 264 --threads "$threads"
        "$GEOSSL_BIN" bench data --manifest "$dir/loader-u16x13-264/manifest.csv" \
            --size 224 --pre 264 --threads "$threads" --bands all --radiometry scale:10000
    done
} | tee "$out" | tee -a "$log"

python3 - "$out" <<'EOF' | tee -a "$log"
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(BENCH decode|DECODEREF) format=(\S+) decoder=(\S+) threads=1 .*images_per_s=([0-9.]+)", line)
    if m:
        rows.setdefault(m.group(2), {})[m.group(3)] = float(m.group(4))
print("| format, 1 thread, images/s | geossl current | GDAL | PIL | torchvision | current/PIL | GDAL/PIL | current/torchvision |")
print("|---|---|---|---|---|---|---|---|")
for fmt, r in rows.items():
    if "pil" not in r:
        continue
    get = lambda k: f"{r[k]:.1f}" if k in r else "-"
    ratio = lambda a, b: f"{r[a] / r[b]:.2f}x" if a in r and b in r else "-"
    print(f"| {fmt} | {get('current')} | {get('gdal')} | {get('pil')} | {get('torchvision')} "
          f"| {ratio('current', 'pil')} | {ratio('gdal', 'pil')} | {ratio('current', 'torchvision')} |")
EOF
