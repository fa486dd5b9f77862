#!/usr/bin/env bash
# Does the time of a stat tell whether a dataset exists (issue 14, point 5)? Makes a scratch
# store with one dataset, starts enclaved, and as `nobody` (whom no grant names) stats the
# hidden dataset's name and a name that does not exist, alternately, N times each
# (tests/bench/bench_names.c): medians, means, 90th percentiles and the ratio, side by side in
# one run. Not part of CI. The numbers go into docs/PERFORMANCE.md by hand.
# Usage: scripts/bench-names.sh [--help]      (as root)
# Settings (environment): BENCH_NAMES_N [10000] stats of each; BENCH_BUILD [build-test-normal]
# the build directory under the tree (built if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
case "${1:-}" in
-h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
'') ;;
*) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
n=${BENCH_NAMES_N:-10000}
build=${BENCH_BUILD:-build-test-normal}
case "$n" in '' | *[!0-9]*) echo "bench-names: BENCH_NAMES_N is a whole number" >&2; exit 2 ;; esac
case "$build" in '' | /* | *..*) echo "bench-names: BENCH_BUILD is a directory under the tree" >&2; exit 2 ;; esac
[[ $(id -u) == 0 ]] || { echo "bench-names: run as root (it mounts)" >&2; exit 1; }

bash scripts/deps.sh >/dev/null
[[ -f $build/build.ninja ]] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j 2 --target enclaved enclavectl bench_names >/dev/null
enclavectl=$root/$build/cli/enclavectl

tmp=$(mktemp -d /tmp/bench-names.XXXXXX)
chmod 755 "$tmp"
daemon=
cleanup() {
	if [[ -n $daemon ]]; then
		kill "$daemon" 2>/dev/null || true
		wait "$daemon" 2>/dev/null || true
	fi
	mountpoint -q "$tmp/mnt" && umount -l "$tmp/mnt"
	rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/mnt" "$tmp/src"
head -c 4096 /dev/urandom >"$tmp/src/data.bin"
printf 'bench-names passphrase\n' >"$tmp/pass"
chmod 600 "$tmp/pass"
"$enclavectl" init --store "$tmp/store" --passphrase-file "$tmp/pass" --test-kdf \
	--steward user:root --approvals 0 >/dev/null
"$root/$build/daemon/enclaved" --store "$tmp/store" --mount "$tmp/mnt" \
	--passphrase-file "$tmp/pass" 2>"$tmp/enclaved.log" &
daemon=$!
for _ in $(seq 100); do
	"$enclavectl" --store "$tmp/store" status >/dev/null 2>&1 && break
	sleep 0.1
done
"$enclavectl" --store "$tmp/store" dataset import cohort-hidden "$tmp/src" >/dev/null
echo "bench-names: $n stats of each, alternating, as nobody (no grant), $(nproc) CPUs"
setpriv --reuid=nobody --regid=nogroup --clear-groups \
	"$root/$build/tests/bench_names" "$tmp/mnt" cohort-hidden cohort-absent "$n"
