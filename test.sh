#!/usr/bin/env bash
# Runs every Egret test: formatting, lints, unit and property tests, the conformance table
# against core and against the live binary, and real clients (curl) through the gateway.
#
# On a fresh Debian 12 machine with only the Rust toolchain it installs what the tests need
# (as root, with apt-get); elsewhere it says what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "test.sh: the tests need: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
