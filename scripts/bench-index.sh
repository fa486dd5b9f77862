#!/usr/bin/env bash
# The per-open cost of the sealed index (issue 12), side by side: two builds of enclaved and
# enclavectl (before and after a change to the index), each serving the same small files from its
# own store and mount, read in alternating rounds in one run, as scripts/bench.sh reads them:
#   first   find + cat of every small file right after the mount (lookups, opens, reads)
#   warm    the same again (the kernel keeps entries and attributes: opens and reads)
# Prints each round and the medians, and the ratio after/before.
#
# Usage (as root): scripts/bench-index.sh BEFORE_BUILD AFTER_BUILD
#   BUILD is a build directory holding daemon/enclaved and cli/enclavectl (Release or
#   RelWithDebInfo, the same for both). Environment: BENCH_INDEX_FILES [20000] files of
#   BENCH_INDEX_BYTES [4096] bytes, 1000 per directory; BENCH_INDEX_ROUNDS [5].
set -euo pipefail
bench="bench-index"
. "$(dirname "$0")/bench-lib.sh"
case "${1:-}" in -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
(($# == 2)) || { echo "usage: scripts/bench-index.sh BEFORE_BUILD AFTER_BUILD" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "bench-index: run as root (it mounts and creates a user)" >&2; exit 1; }
files=${BENCH_INDEX_FILES:-20000}
bytes=${BENCH_INDEX_BYTES:-4096}
rounds=${BENCH_INDEX_ROUNDS:-5}
for v in "$files" "$bytes" "$rounds"; do
	case "$v" in '' | *[!0-9]*) echo "bench-index: settings are whole numbers" >&2; exit 2 ;; esac
done
builds=("$(realpath "$1")" "$(realpath "$2")")
names=(before after)
for b in "${builds[@]}"; do
	[[ -x $b/daemon/enclaved && -x $b/cli/enclavectl ]] || { echo "bench-index: $b has no enclaved/enclavectl" >&2; exit 1; }
done

user=enclave-bench-reader
made_user=0
if ! id "$user" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
	made_user=1
fi
bench_scratch
chmod 0755 "$scratch"
pids=()
mnts=("$scratch/mnt0" "$scratch/mnt1")
bench_cleanup_more() { ((made_user)) && userdel "$user" 2>/dev/null; }
as() { runuser -u "$user" -- "$@"; }
now_ns() { date +%s%N; }

python3 - "$scratch/src/small" "$files" "$bytes" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blob = os.urandom(size + 4096)
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(blob[i % 4096:i % 4096 + size])
PY
chmod -R a+rX "$scratch/src"
head -c 32 /dev/urandom | base64 >"$scratch/pass"
chmod 0600 "$scratch/pass"

for i in 0 1; do
	b=${builds[$i]} store=$scratch/store$i mnt=$scratch/mnt$i
	mkdir -p "$mnt"
	"$b/cli/enclavectl" init --store "$store" --passphrase-file "$scratch/pass" --steward user:root \
		--approvals 0 --test-kdf >/dev/null 2>&1
	"$b/daemon/enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/pass" \
		2>"$scratch/enclaved$i.log" &
	pids+=($!)
	for _ in $(seq 1 200); do
		"$b/cli/enclavectl" --store "$store" status >/dev/null 2>&1 && break
		sleep 0.1
	done
	"$b/cli/enclavectl" --store "$store" -q dataset import data "$scratch/src" >/dev/null
	"$b/cli/enclavectl" --store "$store" grant add --user "$user" --dataset data \
		--purpose "bench" --expires +1h >/dev/null
done

declare -A t
printf '%-6s %-7s %10s %10s\n' round build "first ms" "warm ms"
for ((r = 1; r <= rounds; r++)); do
	# Alternate which goes first, so that neither always meets the other's leftovers.
	order=(0 1)
	((r % 2 == 0)) && order=(1 0)
	for i in "${order[@]}"; do
		dir=$scratch/mnt$i/data/1/small
		# Forget the kernel's entries and attributes: the first pass looks every file up.
		sync; echo 2 >/proc/sys/vm/drop_caches
		s=$(now_ns); as find "$dir" -type f -exec cat {} + >/dev/null; first=$((($(now_ns) - s) / 1000000))
		s=$(now_ns); as find "$dir" -type f -exec cat {} + >/dev/null; warm=$((($(now_ns) - s) / 1000000))
		t[$i,first]+="$first "
		t[$i,warm]+="$warm "
		printf '%-6s %-7s %10s %10s\n' "$r" "${names[$i]}" "$first" "$warm"
	done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
echo
for k in first warm; do
	b=$(echo "${t[0,$k]}" | median) a=$(echo "${t[1,$k]}" | median)
	printf 'median %-5s before %6s ms  after %6s ms  after/before %s\n' "$k" "$b" "$a" \
		"$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')"
done
