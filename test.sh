#!/usr/bin/env bash
# Runs every Egret test: formatting, lints, unit and property tests, the conformance table
# against core and against the live binary, and real clients (curl) through the gateway.
#
# On a fresh Debian 12 machine with only the Rust toolchain it installs what the tests need
# (as root, with apt-get); elsewhere it says what is missing and stops. The transparent-mode
# tests build network namespaces and load nftables rules, so they need root (they fail, saying
# so, without it).
set -euo pipefail
cd "$(dirname "$0")"

# Looks for a program on PATH and in the sbin directories (not on every user's PATH).
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }

missing=()
have curl || missing+=(curl)
have cc || missing+=(gcc)
# The network-namespace tests of transparent mode (gateway/tests/transparent.rs), run as root.
have ip || missing+=(iproute2)
have nft || missing+=(nftables)
have openssl || missing+=(openssl)
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
