#!/bin/sh
# The release binary that the archive and publishing stages will ship.
set -eu
cargo build --release --locked --bin murphy
