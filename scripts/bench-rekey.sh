#!/usr/bin/env bash
# What a node removal's key rotation costs the primary (issue 17 point 3, docs/FORMAT.md 3.7):
# one synchronous index batch re-keys every policy record, dataset name and record, tombstone
# and move record, between two key ring commits (tests/bench/bench_rekey.c). Two stores with
# POLICY policy records each, one of 1 dataset and one of DATASETS datasets (every tenth with a
# tombstone), made and rotated ROUNDS times one after the other in the same run: the difference
# is what re-keying the dataset records adds to the policy records' rotation. Not part of CI
# (timings on a shared machine are noisy): compare within one run.
#
# Usage: scripts/bench-rekey.sh [DATASETS] [POLICY] [ROUNDS]   (defaults 1000 1000 9)
set -euo pipefail
cd "$(dirname "$0")/.."

datasets=${1:-1000}
policy=${2:-1000}
rounds=${3:-9}
case "$datasets$policy$rounds" in *[!0-9]*) echo "usage: scripts/bench-rekey.sh [DATASETS] [POLICY] [ROUNDS]" >&2; exit 2 ;; esac

bash scripts/deps.sh >/dev/null
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j "$(nproc)" --target bench_rekey >/dev/null
scratch=$(mktemp -d /var/tmp/enclave-bench-rekey.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
build-bench/tests/bench_rekey "$scratch/one" 1 "$policy" "$rounds"
build-bench/tests/bench_rekey "$scratch/many" "$datasets" "$policy" "$rounds"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
