#!/bin/sh
# Integration tests: the real murphy binary driven in temp dirs.
set -eu
cargo test --locked --test '*'
