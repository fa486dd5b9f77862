#!/usr/bin/env bash
# What sealing costs an audit record: tests/bench/bench_seal appends open-shaped records to a
# clear log and to a sealing one (audit/seal.c: one XChaCha20-Poly1305 per record, a key record
# per epoch), in alternating rounds within one run, AUDIT_WRITTEN with the syncer, so the figure
# is the CPU and write(2) cost of a record rather than fdatasync. Not part of CI: the machine is
# shared, compare the ratio within one run.
# Usage: scripts/bench-seal.sh [RECORDS_PER_ROUND] [ROUNDS]   (defaults 20000 and 9)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
rounds=${2:-9}
bash scripts/deps.sh >/dev/null
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j "$(nproc)" --target bench_seal >/dev/null
dir=$(mktemp -d /var/tmp/enclave-bench-seal.XXXXXX)
trap 'rm -rf "$dir"' EXIT
build-bench/tests/bench_seal "$dir/log" "$n" "$rounds"
