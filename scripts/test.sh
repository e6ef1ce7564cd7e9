#!/usr/bin/env bash
# The whole test suite, set-up included: formatting, lints, then every unit
# and integration test (release build: the tests run real tensor and image
# work, and share the build with ./geossl).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/setup.sh
GEOSSL_SETUP_TESTS=1 . scripts/setup.sh
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release "$@"
