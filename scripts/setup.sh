#!/usr/bin/env bash
# The one place that installs what geossl needs beyond the stock Rust toolchain
# and python3: a project-local virtualenv (.venv/) holding the PyPI wheel
# torch==2.11.0, whose libtorch `tch` links against (LIBTORCH_USE_PYTORCH=1).
#
# Idempotent: a second run checks a stamp file and returns in well under a
# second. Source it (`. scripts/setup.sh`) to get the build environment
# exported into the calling shell; run it to just install.
#
# Size: the torch wheel and its CUDA runtime dependencies download about
# 3-4 GB and take about 7 GB on disk under .venv/.
set -euo pipefail

GEOSSL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEOSSL_VENV="${GEOSSL_VENV:-$GEOSSL_ROOT/.venv}"
# Bump when the pinned Python packages change so existing venvs get updated.
GEOSSL_PY_REQUIREMENTS="torch==2.11.0 numpy"
stamp="$GEOSSL_VENV/.geossl-setup-done"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$GEOSSL_PY_REQUIREMENTS" ]; then
    echo "geossl setup: installing $GEOSSL_PY_REQUIREMENTS into $GEOSSL_VENV (large download, once)" >&2
    if [ ! -x "$GEOSSL_VENV/bin/python" ]; then
        python3 -m venv "$GEOSSL_VENV"
    fi
    # shellcheck disable=SC2086
    "$GEOSSL_VENV/bin/python" -m pip install --quiet --disable-pip-version-check $GEOSSL_PY_REQUIREMENTS
    "$GEOSSL_VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.11.0'), torch.__version__"
    echo "$GEOSSL_PY_REQUIREMENTS" > "$stamp"
fi

# Build environment for `cargo`: torch-sys asks this python where libtorch is.
export LIBTORCH_USE_PYTORCH=1
export PATH="$GEOSSL_VENV/bin:$PATH"
export VIRTUAL_ENV="$GEOSSL_VENV"
