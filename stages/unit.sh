#!/bin/sh
# Unit tests: the library's own modules, and the xtask crate.
set -eu
cargo test --locked --workspace --lib --bins
