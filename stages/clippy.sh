#!/bin/sh
# Pre-commit: no lint warnings anywhere in the workspace, tests and xtask included.
set -eu
cargo clippy --workspace --all-targets --locked -- -D warnings
