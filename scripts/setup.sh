#!/usr/bin/env bash
# The one place that installs what geossl needs beyond the stock Rust toolchain
# and python3: a project-local virtualenv (.venv/) holding the PyPI wheel
# torch==2.11.0, whose libtorch `tch` links against (LIBTORCH_USE_PYTORCH=1),
# torchvision + safetensors, which the interop tests load exports with, and
# tensorboard, whose event reader the tests read geossl's logs with; Debian's
# libgloo-dev, the Gloo headers the c10d shim (src/dist/c10d.cpp) compiles
# against (the wheel ships c10d's headers and Gloo's library, not Gloo's
# headers); Debian's libgdal-dev, the GDAL library and headers the `gdal`
# crate links against (src/data/raster.rs reads rasters through it); Debian's
# cmake and nasm, which build libjpeg-turbo and its SIMD code from the source
# vendored in the `turbojpeg-sys` crate (src/data/jpeg.rs). With
# GEOSSL_SETUP_TESTS=1 (scripts/test.sh sets it) also Debian's
# chromium, the headless browser the report tests load pages in.
#
# Idempotent: a second run checks a stamp file and returns in well under a
# second. Source it (`. scripts/setup.sh`) to get the build environment
# exported into the calling shell (it changes no shell options there); run it
# to just install.
#
# Size: the torch wheel and its CUDA runtime wheels take 4.7 GB under .venv/.

GEOSSL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEOSSL_VENV="${GEOSSL_VENV:-$GEOSSL_ROOT/.venv}"
# Changing this list re-runs the install in existing virtualenvs.
# nvidia-cuda-crt and nvidia-cuda-cccl: the CUDA headers that NCCL's and
# c10d's headers include and the torch wheel's nvidia-* packages lack, at the
# versions of torch 2.11's cuda-toolkit==13.0.2 (its crt and cccl extras);
# build.rs compiles the NCCL backend library (src/dist/nccl.cpp) with them.
# timm: tests/interop.rs loads multispectral exports with
# timm.create_model(arch, in_chans=C) (1.0.31 installs beside torch 2.11
# without changing it).
# pyarrow and pandas: tests/hub.rs reads `embed --format parquet` back.
GEOSSL_PY_REQUIREMENTS="torch==2.11.0 torchvision==0.26.0 safetensors==0.8.0 numpy tensorboard==2.21.0 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 timm==1.0.31 pyarrow==26.0.1 pandas==3.1.1"
# Debian packages the build needs: Gloo's headers and GDAL (library and
# headers), each checked by its header below; cmake and nasm (libjpeg-turbo's
# build), checked by their commands.
GEOSSL_BUILD_DEBIAN_PACKAGES="libgloo-dev libgdal-dev cmake nasm"
GEOSSL_GLOO_HEADER="/usr/include/gloo/config.h"
GEOSSL_GDAL_HEADER="/usr/include/gdal/gdal.h"
# Debian packages of the test suite only.
GEOSSL_TEST_DEBIAN_PACKAGES="chromium"

if [ ! -f "$GEOSSL_VENV/.geossl-setup-done" ] ||
    [ "$(cat "$GEOSSL_VENV/.geossl-setup-done")" != "$GEOSSL_PY_REQUIREMENTS" ]; then
    (
        set -euo pipefail
        echo "geossl setup: installing $GEOSSL_PY_REQUIREMENTS into $GEOSSL_VENV (large download, once)" >&2
        if [ ! -x "$GEOSSL_VENV/bin/python" ]; then
            python3 -m venv "$GEOSSL_VENV"
        fi
        # shellcheck disable=SC2086
        "$GEOSSL_VENV/bin/python" -m pip install --quiet --disable-pip-version-check $GEOSSL_PY_REQUIREMENTS
        "$GEOSSL_VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.11.0'), torch.__version__"
        echo "$GEOSSL_PY_REQUIREMENTS" >"$GEOSSL_VENV/.geossl-setup-done"
    ) || {
        echo "geossl setup: installing into $GEOSSL_VENV failed (see above)" >&2
        # `return` when sourced, `exit` when run.
        return 1 2>/dev/null || exit 1
    }
fi

# Installs the Debian packages $1 (once; apt-get update only when the first
# try fails), then runs the check $2; fails naming the packages.
geossl_apt_install() {
    (
        set -euo pipefail
        echo "geossl setup: installing Debian packages $1 (once)" >&2
        sudo=""
        if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        # shellcheck disable=SC2086
        $sudo apt-get install -y -q $1 >/dev/null ||
            { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q $1 >/dev/null; }
        eval "$2"
    ) || {
        echo "geossl setup: installing $1 failed (see above)" >&2
        return 1
    }
}

if [ ! -f "$GEOSSL_GLOO_HEADER" ] || [ ! -f "$GEOSSL_GDAL_HEADER" ] ||
    ! command -v cmake >/dev/null 2>&1 || ! command -v nasm >/dev/null 2>&1; then
    geossl_apt_install "$GEOSSL_BUILD_DEBIAN_PACKAGES" \
        'test -f "$GEOSSL_GLOO_HEADER" && test -f "$GEOSSL_GDAL_HEADER" && command -v cmake >/dev/null && command -v nasm >/dev/null' ||
        { unset -f geossl_apt_install; return 1 2>/dev/null || exit 1; }
fi

if [ "${GEOSSL_SETUP_TESTS:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    geossl_apt_install "$GEOSSL_TEST_DEBIAN_PACKAGES" 'command -v chromium >/dev/null' ||
        { unset -f geossl_apt_install; return 1 2>/dev/null || exit 1; }
fi
unset -f geossl_apt_install

# Build environment for `cargo`: torch-sys asks this python where libtorch is.
export LIBTORCH_USE_PYTORCH=1
export PATH="$GEOSSL_VENV/bin:$PATH"
export VIRTUAL_ENV="$GEOSSL_VENV"
