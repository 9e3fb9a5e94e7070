#!/bin/sh
# Pre-commit: the code is formatted as rustfmt would.
set -eu
cargo fmt --all --check
