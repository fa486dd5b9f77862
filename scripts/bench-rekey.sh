#!/usr/bin/env bash
# What a node removal's key rotation costs the primary (issue 17 point 3, docs/FORMAT.md 3.7):
# one synchronous index batch re-keys every policy record, dataset name and record, tombstone
# and move record, between two key ring commits (tests/bench/bench_rekey.c). Two stores with
# POLICY policy records each, one of 1 dataset and one of DATASETS datasets (every tenth with a
# tombstone), made and rotated ROUNDS times one after the other in the same run: the difference
# is what re-keying the dataset records adds to the policy records' rotation. The store alone:
# no node is enrolled, so no bundle is written (tests/bench/bench_bundles.c measures those). Not
# part of CI (timings on a shared machine are noisy): compare within one run.
#
# Usage: scripts/bench-rekey.sh [DATASETS] [POLICY] [ROUNDS]   (defaults 1000 1000 9)
set -euo pipefail
bench="bench-rekey"
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
case "${1:-}" in -h | --help) bench_usage; exit 0 ;; esac
datasets=${1:-1000}
policy=${2:-1000}
rounds=${3:-9}
bench_positive DATASETS "$datasets"
bench_positive ROUNDS "$rounds"
case "$policy" in '' | *[!0-9]*) bench_usage_error "POLICY takes a number" ;; esac

bench_build build-bench bench_rekey
bench_scratch
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
build-bench/tests/bench_rekey "$scratch/one" 1 "$policy" "$rounds"
build-bench/tests/bench_rekey "$scratch/many" "$datasets" "$policy" "$rounds"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
