#!/usr/bin/env bash
# Versions that share unchanged files (issue 16 point 5): generates N files of random content
# (sizes spread evenly up to twice the mean) totalling about M MB, imports them with
# `enclavectl dataset import` into a fresh store served by enclaved (version 1), changes the
# content of one file, imports the tree again (version 2), and reports both import times (the
# whole command), their ratio, the CPU time the daemon and enclavectl spent on each, and the bytes
# the packs grew by for version 2 against the size of the data. With the page cache dropped
# before each import (cold), left warm, or both in turn; with --before, the same rounds with
# another commit's build, alternately, in the same run. Medians over the rounds. Writes the rows
# into docs/PERFORMANCE.md between the "bench-dedup.sh" markers.
#
# Target: version 2 adds under 1 % of the data's size and takes under a fifth of version 1's time.
#
# Not part of CI. Run as root. Options:
#   --files N     files [20000]
#   --mb M        total megabytes (10^6 bytes) [300]
#   --cache C     cold (caches dropped before each import), warm, or both [cold]
#   --warm        the same as --cache warm
#   --before REV  also with enclaved and enclavectl of commit REV, built (Release) from a
#                 `git archive` of it in build-bench-before/, alternately with this tree's
#   --rounds R    rounds per build and cache [1, or 3 with --before]
#   --no-doc      leave docs/PERFORMANCE.md alone
# Example: scripts/bench-dedup.sh --files 20000 --mb 300 --cache both --before main
set -euo pipefail
bench="bench-dedup"
. "$(dirname "$0")/bench-lib.sh"
files=20000 mb=300 dodoc=1 caches=cold before_rev= rounds=
while (($#)); do
	case "$1" in
	-h | --help) bench_usage; exit 0 ;;
	--files) files=${2:?}; shift 2 ;;
	--mb) mb=${2:?}; shift 2 ;;
	--warm) caches=warm; shift ;;
	--cache) caches=${2:?}; shift 2 ;;
	--before) before_rev=${2:?}; shift 2 ;;
	--rounds) rounds=${2:?}; shift 2 ;;
	--no-doc) dodoc=0; shift ;;
	*) bench_usage_error "unknown option '$1' (see --help)" ;;
	esac
done
bench_positive --files "$files"
bench_positive --mb "$mb"
case "$caches" in cold | warm) ;; both) caches="cold warm" ;;
*) bench_usage_error "--cache takes cold, warm or both" ;; esac
[[ -n $rounds ]] || { [[ -n $before_rev ]] && rounds=3 || rounds=1; }
bench_positive --rounds "$rounds"
bench_need_root
cd "$(dirname "$0")/.."
root=$PWD
build=build-bench

bench_build "$build" enclaved enclavectl bench_dedup
builds=("$root/$build")
names=("$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + changes')")
if [[ -n $before_rev ]]; then
	bench_build_before "$before_rev"
	builds+=("$bench_before_dir")
	names+=("$bench_before_name")
fi

bench_scratch
src=$scratch/src mnt=$scratch/mnt store=$scratch/store
mkdir -p "$src" "$mnt"
pid=

echo "bench-dedup: generating $files files, about $mb MB" >&2
python3 - "$src" "$files" "$mb" <<'EOF'
import os, random, sys
root, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mean = mb * 1000000 // n
rng = random.Random(16)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(os.urandom(rng.randint(1, 2 * mean)))
EOF
data_bytes=$(find "$src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
# A dataset at rest: its files are older than the importer's racy window (2 s before the previous
# import; docs/FORMAT.md 6.13) when version 1 begins, so version 2 trusts their source stamps.
sleep 3

bench_passphrase
bench_need_time

packs() { find "$store/packs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
cpu_ms() { awk -v t="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / t) }' "/proc/$pid/stat"; }
# One import with build $1 (page cache $2); prints "ms daemon_cpu_ms ctl_cpu_ms".
import_ms() {
	local b=$1 t0 ms c0 c1
	bench_page_cache "$2" "$src"
	c0=$(cpu_ms)
	t0=$(date +%s%N)
	/usr/bin/time -f '%U %S' -o "$scratch/ctl.cpu" "$b/cli/enclavectl" --store "$store" -q \
		dataset import bench "$src" >"$scratch/import.out"
	ms=$((($(date +%s%N) - t0) / 1000000))
	c1=$(cpu_ms)
	echo "$ms $((c1 - c0)) $(awk '{ print int(($1 + $2) * 1000) }' "$scratch/ctl.cpu")"
}
# One round with build $1 and page cache $2 in a fresh store: version 1, one file changed, version
# 2. Sets round_out to "ms1 ms2 daemon_cpu1 daemon_cpu2 ctl_cpu1 ctl_cpu2 packs1 added
# changed_size" (not a subshell: the EXIT trap must see the daemon's pid).
round() {
	local b=$1 v1 v2 p1 p2 victim vsize
	store=$scratch/store
	bench_daemon_start "$b" "$store"
	# A dataset at rest: its files are older than the importer's racy window (2 s before the
	# previous import; docs/FORMAT.md 6.13) when version 1 begins, so version 2 trusts their
	# source stamps (the file the last round changed too).
	sleep 3
	read -r -a v1 <<<"$(import_ms "$b" "$2")"
	p1=$(packs)
	# One file changed: same name, same size, new content (another one each round).
	victim=$(find "$src" -type f -name 'f*' | sort | sed -n "$(((files / 2 + nround) % files + 1))p")
	vsize=$(stat -c %s "$victim")
	head -c "$vsize" /dev/urandom >"$victim.new" && mv "$victim.new" "$victim"
	read -r -a v2 <<<"$(import_ms "$b" "$2")"
	p2=$(packs)
	cat "$scratch/import.out" >&2
	bench_stop_daemon
	round_out="${v1[0]} ${v2[0]} ${v1[1]} ${v2[1]} ${v1[2]} ${v2[2]} $p1 $((p2 - p1)) $vsize"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

nround=0
declare -A res
for cache in $caches; do
	for ((r = 1; r <= rounds; r++)); do
		for i in "${!builds[@]}"; do
			echo "bench-dedup: ${names[$i]}, page cache $cache, round $r of $rounds" >&2
			round "${builds[$i]}" "$cache"
			line=$round_out
			nround=$((nround + 1))
			echo "bench-dedup:   $line (ms v1 v2; CPU ms daemon v1 v2, enclavectl v1 v2; packs; added; changed)" >&2
			res[$cache,$i]+="$line"$'\n'
		done
	done
done

# The importer alone (no daemon, no socket), page cache warm: what the store layer costs.
victim2=$(find "$src" -type f -name 'f*' | sort | sed -n "$((files / 3 + 1))p")
store_line=$("$root/$build/tests/bench_dedup" "$scratch/store2" "$src" "$victim2")
echo "bench-dedup: $store_line" >&2

hdr="| run | build | data | page cache | version 1 | version 2 (one file changed) | time ratio (target < 0.2) | daemon CPU v1 / v2 | enclavectl CPU v1 / v2 | packs after version 1 | added by version 2 (target < 1 %) | rounds | load |"
sep="|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load=$(cut -d' ' -f1 /proc/loadavg)
lines=
for cache in $caches; do
	for i in "${!builds[@]}"; do
		col() { printf '%s' "${res[$cache,$i]}" | awk -v c="$1" 'NF { print $c }' | median; }
		lines+=$(awk -v f="$files" -v b="$data_bytes" -v when="$when" -v build="${names[$i]}" \
			-v cache="$cache" -v load="$load" -v rounds="$rounds" \
			-v ms1="$(col 1)" -v ms2="$(col 2)" -v d1="$(col 3)" -v d2="$(col 4)" \
			-v c1="$(col 5)" -v c2="$(col 6)" -v p1="$(col 7)" -v add="$(col 8)" -v vs="$(col 9)" 'BEGIN {
			printf "| %s | %s | %d files, %.1f MB | %s | %.2f s | %.2f s | %.3f | %.2f / %.2f s | %.2f / %.2f s | %.1f MB | %d bytes (%.4f %% of the data; the changed file: %d bytes) | %d | %s |",
				when, build, f, b / 1e6, cache, ms1 / 1000, ms2 / 1000, ms2 / ms1,
				d1 / 1000, d2 / 1000, c1 / 1000, c2 / 1000, p1 / 1e6, add,
				add * 100 / b, vs, rounds, load }')$'\n'
	done
done
lines+="| $when | the store layer alone (bench_dedup, warm, no daemon) | | | $store_line | | | | | | | | $load |"$'\n'
echo "$hdr"
echo "$sep"
printf '%s' "$lines"
if ((dodoc)); then
	bench_doc_rows bench-dedup.sh \
		"## Versions that share unchanged files (scripts/bench-dedup.sh)" \
		"$hdr"$'\n'"$sep" "$lines"
	echo "bench-dedup: added the rows to docs/PERFORMANCE.md" >&2
fi
