#!/usr/bin/env bash
# Runs every Egret test: formatting, lints, unit and property tests, the conformance table
# against core and against the live binary, real clients (curl) through the gateway, and
# CloudWatch Logs shipping against moto (a local AWS emulator, from PyPI into target/moto-venv).
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
# The high-availability test (gateway/tests/ha.rs) puts HAProxy where the AWS NLB would be.
have haproxy || missing+=(haproxy)
# The boot helper's tests (gateway/tests/setup_script.rs): shellcheck of the shell scripts,
# systemd-analyze verify of the units (the systemd package installs it; nothing is started).
have shellcheck || missing+=(shellcheck)
have systemd-analyze || missing+=(systemd)
# The packaged units under a real systemd (gateway/tests/systemd.rs), with the shipped
# /etc/logrotate.d/egret run by logrotate.
have logrotate || missing+=(logrotate)
# The CloudWatch Logs tests (gateway/tests/cloudwatch.rs) run moto_server, a local AWS
# emulator, from a virtual environment (Debian's python3 makes one only with python3-venv).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The access-log fault tests (gateway/tests/reliability_sink.rs) mount an ext4 image.
have mkfs.ext4 || missing+=(e2fsprogs)
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

# moto from PyPI, pinned, in target/moto-venv; reused while it holds that version.
moto_version=5.1.22
moto_venv=target/moto-venv
if ! "$moto_venv/bin/python" -c "import sys, moto; sys.exit(moto.__version__ != '$moto_version')" \
    >/dev/null 2>&1; then
    echo "test.sh: installing moto[server]==$moto_version into $moto_venv" >&2
    rm -rf "$moto_venv"
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version"
fi
export EGRET_MOTO_VENV="$PWD/$moto_venv"

# The CloudFormation templates (deploy/cloudformation): cfn-lint from PyPI, pinned, in the same
# virtual environment, then verify.py deploys them against moto (under a minute).
cfn_lint_version=1.58.0
if ! "$moto_venv/bin/python" -c "import sys, importlib.metadata as m; \
    sys.exit(m.version('cfn-lint') != '$cfn_lint_version')" >/dev/null 2>&1; then
    echo "test.sh: installing cfn-lint==$cfn_lint_version into $moto_venv" >&2
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check "cfn-lint==$cfn_lint_version"
fi
"$moto_venv/bin/cfn-lint" deploy/cloudformation/*.yaml
"$moto_venv/bin/python" deploy/cloudformation/verify.py

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# Fuzzing (fuzz/): `cargo test` above replays the committed corpora; here each cargo-fuzz
# target also runs for a short, bounded time from its corpus (cargo-fuzz is installed from
# crates.io at the pinned version when missing). No sanitizer: the core has no unsafe code,
# and the build takes about 2 minutes here instead of about 10. Longer runs: FUZZ_SECONDS=300 fuzz/run.sh (see the script).
FUZZ_SECONDS="${EGRET_FUZZ_SECONDS:-20}" FUZZ_SANITIZER=none FUZZ_QUIET=1 fuzz/run.sh
