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
# Size: the torch wheel and its CUDA runtime wheels take 5.1 GiB under .venv/,
# and the install needs about 8 GiB free at its peak (GEOSSL_SETUP_FREE_GIB).

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
# Free space the install needs, in GiB: the installed wheels take 5.1 GiB
# of the virtualenv's file system, and pip's download and unpacking under
# $TMPDIR peaks 2.7 GiB above that (measured with a fresh virtualenv,
# 2026-11-30: 7.7 GiB at the peak on one file system).
GEOSSL_SETUP_FREE_GIB="${GEOSSL_SETUP_FREE_GIB:-6}"
GEOSSL_SETUP_TMP_FREE_GIB="${GEOSSL_SETUP_TMP_FREE_GIB:-3}"
# Debian packages the build needs: Gloo's headers and GDAL (library and
# headers), each checked by its header below; cmake and nasm (libjpeg-turbo's
# build), checked by their commands.
GEOSSL_BUILD_DEBIAN_PACKAGES="libgloo-dev libgdal-dev cmake nasm"
GEOSSL_GLOO_HEADER="/usr/include/gloo/config.h"
GEOSSL_GDAL_HEADER="/usr/include/gdal/gdal.h"
# Debian packages of the test suite only.
GEOSSL_TEST_DEBIAN_PACKAGES="chromium"

# Why no `set -e` below: bash ignores errexit inside a function or subshell
# whose status is tested (`f || ...`), so each step checks its own status,
# and the stamp is written only after torch imports.

# The nearest existing folder at or above $1 (the virtualenv's folder may
# not exist yet).
geossl_existing_dir() {
    local dir="$1"
    while [ ! -d "$dir" ]; do dir="$(dirname "$dir")"; done
    echo "$dir"
}

# Fails naming DIR ($1, an existing folder) when its file system has less
# than $2 GiB free.
geossl_check_free_space() {
    local dir="$1" need_gib="$2" free_kib
    free_kib="$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 { print $4 }')"
    # No reading (an unusual file system): let the install itself tell.
    [ -n "$free_kib" ] || return 0
    if [ "$free_kib" -lt $((need_gib * 1024 * 1024)) ]; then
        echo "geossl setup: $dir has $((free_kib / 1024)) MiB free; installing the Python wheels needs about $need_gib GiB there (GEOSSL_SETUP_FREE_GIB and GEOSSL_SETUP_TMP_FREE_GIB in scripts/setup.sh)" >&2
        return 1
    fi
}

# Creates $GEOSSL_VENV and installs $GEOSSL_PY_REQUIREMENTS into it; writes
# the stamp only once torch imports at the pinned version.
geossl_pip_install() {
    local python="$GEOSSL_VENV/bin/python"
    echo "geossl setup: installing $GEOSSL_PY_REQUIREMENTS into $GEOSSL_VENV (large download, once)" >&2
    local venv_dir tmp_dir
    venv_dir="$(geossl_existing_dir "$GEOSSL_VENV")"
    tmp_dir="$(geossl_existing_dir "${TMPDIR:-/tmp}")"
    if compgen -G "$GEOSSL_VENV/lib/python3*/site-packages/torch/__init__.py" >/dev/null; then
        # A changed list in a virtualenv that has torch: a small download.
        :
    elif [ "$(df -P "$venv_dir" 2>/dev/null | awk 'NR == 2 { print $6 }')" = \
        "$(df -P "$tmp_dir" 2>/dev/null | awk 'NR == 2 { print $6 }')" ]; then
        # One file system holds both at the peak.
        geossl_check_free_space "$venv_dir" $((GEOSSL_SETUP_FREE_GIB + GEOSSL_SETUP_TMP_FREE_GIB)) || return 1
    else
        geossl_check_free_space "$venv_dir" "$GEOSSL_SETUP_FREE_GIB" || return 1
        geossl_check_free_space "$tmp_dir" "$GEOSSL_SETUP_TMP_FREE_GIB" || return 1
    fi
    if [ ! -x "$python" ]; then
        python3 -m venv "$GEOSSL_VENV" || return 1
    fi
    rm -f "$GEOSSL_VENV/.geossl-setup-done"
    # --no-cache-dir: the wheels are installed once per virtualenv, and
    # pip's cache would keep a second copy of what it downloads (most of
    # the 2.7 GiB above) on the same disk.
    # shellcheck disable=SC2086
    "$python" -m pip install --quiet --disable-pip-version-check --no-cache-dir $GEOSSL_PY_REQUIREMENTS ||
        return 1
    "$python" -c "import torch; assert torch.__version__.startswith('2.11.0'), torch.__version__" ||
        return 1
    echo "$GEOSSL_PY_REQUIREMENTS" >"$GEOSSL_VENV/.geossl-setup-done"
}

if [ ! -f "$GEOSSL_VENV/.geossl-setup-done" ] ||
    [ "$(cat "$GEOSSL_VENV/.geossl-setup-done")" != "$GEOSSL_PY_REQUIREMENTS" ]; then
    if ! geossl_pip_install; then
        echo "geossl setup: installing into $GEOSSL_VENV failed (see above)" >&2
        unset -f geossl_pip_install geossl_check_free_space geossl_existing_dir
        # `return` when sourced, `exit` when run.
        return 1 2>/dev/null || exit 1
    fi
fi
unset -f geossl_pip_install geossl_check_free_space geossl_existing_dir

# Installs the Debian packages $1 (once; apt-get update only when the first
# try fails), then runs the check $2; fails naming the packages.
geossl_apt_install() {
    local sudo=""
    echo "geossl setup: installing Debian packages $1 (once)" >&2
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    # shellcheck disable=SC2086
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $1 >/dev/null; then
        $sudo apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $1 >/dev/null
    fi
    if ! eval "$2"; then
        echo "geossl setup: installing $1 failed (see above)" >&2
        return 1
    fi
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
