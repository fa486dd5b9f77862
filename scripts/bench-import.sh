#!/usr/bin/env bash
# The import of many small files (issue 13): generates N files of S bytes in directories of 1,000,
# imports them with `enclavectl dataset import` into a fresh store served by enclaved, and
# reports files/s, MB/s, the bytes the packs take against the bytes of the files, and the peak
# memory of the daemon and of enclavectl. Writes the lines into docs/PERFORMANCE.md between the
# "bench-import.sh" markers (one line per run and build: earlier runs of other sizes are kept).
#
# Not part of CI. Run as root. Options:
#   --files N     files [100000]
#   --size S      bytes per file [4096]; "tiny" gives file i the bytes "i\n" (a few bytes each,
#                 as scripts/bench-rss.sh)
#   --warm        leave the source in the page cache (default: caches dropped before each
#                 import, so the source is read from disk)
#   --before REV  also import with enclaved and enclavectl of commit REV, built (Release) from a
#                 `git archive` of it in build-bench-before/, alternately with this tree's, each
#                 into a store of its own: the change side by side on the same machine
#   --rounds R    imports per build [1, or 3 with --before]; the median is reported
#   --no-doc      leave docs/PERFORMANCE.md alone
# Examples: scripts/bench-import.sh --files 100000 --size 4096
#           scripts/bench-import.sh --files 100000 --size 4096 --warm --before 7c2efc4
#           scripts/bench-import.sh --files 1000000 --size tiny
set -euo pipefail
bench="bench-import"
. "$(dirname "$0")/bench-lib.sh"
files=100000 size=4096 dodoc=1 cold=1 before_rev= rounds=
while (($#)); do
	case "$1" in
	-h | --help) bench_usage; exit 0 ;;
	--files) files=${2:?}; shift 2 ;;
	--size) size=${2:?}; shift 2 ;;
	--warm) cold=0; shift ;;
	--before) before_rev=${2:?}; shift 2 ;;
	--rounds) rounds=${2:?}; shift 2 ;;
	--no-doc) dodoc=0; shift ;;
	*) bench_usage_error "unknown option '$1' (see --help)" ;;
	esac
done
case "$files" in '' | *[!0-9]*) bench_usage_error "--files takes a number" ;; esac
case "$size" in tiny) ;; '' | *[!0-9]*) bench_usage_error "--size takes a number or tiny" ;; esac
[[ -n $rounds ]] || { [[ -n $before_rev ]] && rounds=3 || rounds=1; }
bench_positive --rounds "$rounds"
bench_need_root
cd "$(dirname "$0")/.."
root=$PWD
build=build-bench

bench_build "$build" enclaved enclavectl
bench_need_time
builds=("$root/$build")
names=("$(git rev-parse --short HEAD 2>/dev/null || echo '?')")
if [[ -n $before_rev ]]; then
	bench_build_before "$before_rev"
	builds+=("$bench_before_dir")
	names+=("$bench_before_name")
fi

bench_scratch
src=$scratch/src mnt=$scratch/mnt
mkdir -p "$src" "$mnt"
pid=

echo "bench-import: generating $files files ($size bytes each)" >&2
python3 - "$src" "$files" "$size" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
blob = os.urandom(int(size) + 4096) if size != "tiny" else b""
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%07d" % i), "wb") as f:
        f.write(b"%d\n" % i if size == "tiny" else blob[i % 4096:i % 4096 + int(size)])
PY
data_bytes=$(find "$src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
bench_passphrase

# One import with build $1 into a fresh store; prints "ms pack_bytes daemon_kib ctl_kib cpu_ms".
import_once() {
	local b=$1 store=$scratch/store t0 ms cpu0 cpu1
	bench_daemon_start "$b" "$store"
	# The unlock's Argon2id peak is not the import's: reset the peak counter (Linux 4.0+).
	echo 5 >"/proc/$pid/clear_refs"
	bench_page_cache "$( ((cold)) && echo cold || echo warm)" "$src"
	cpu0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
	t0=$(date +%s%N)
	/usr/bin/time -f '%M' -o "$scratch/ctl.rss" "$b/cli/enclavectl" --store "$store" -q \
		dataset import bench "$src" >/dev/null
	ms=$((($(date +%s%N) - t0) / 1000000))
	cpu1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
	echo "$ms $(find "$store/packs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }') $(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status") $(cat "$scratch/ctl.rss") $(((cpu1 - cpu0) * 1000 / $(getconf CLK_TCK)))"
	bench_stop_daemon
}

declare -A res
for ((r = 0; r < rounds; r++)); do
	for ((k = 0; k < ${#builds[@]}; k++)); do
		# The order alternates each round, so the machine's drift falls on both builds alike.
		i=$(((k + r) % ${#builds[@]}))
		echo "bench-import: round $((r + 1)) of $rounds, ${names[$i]}" >&2
		res[$i]+="$(import_once "${builds[$i]}")"$'\n'
	done
done

hdr="| run | commit | data | import | files/s | MB/s | packs | enclaved peak (VmHWM since the unlock) | enclavectl peak | enclaved CPU | load |"
sep="|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|"
lines=
for ((i = 0; i < ${#builds[@]}; i++)); do
	# The round of median time, and every round's time.
	med=$(printf '%s' "${res[$i]}" | sort -n | awk -v n="$rounds" 'NR == int((n + 1) / 2)')
	all=$(printf '%s' "${res[$i]}" | awk '{ printf "%s%.1f", (NR > 1 ? ", " : ""), $1 / 1000 }')
	read -r ms pack_bytes d_kib ctl_kib cpu_ms <<<"$med"
	line=$(awk -v f="$files" -v s="$size" -v ms="$ms" -v b="$data_bytes" -v p="$pack_bytes" \
		-v dk="$d_kib" -v ck="$ctl_kib" -v cpu="$cpu_ms" -v when="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		-v commit="${names[$i]}" -v warm="$( ((cold)) && echo "cold" || echo "warm")" \
		-v rounds="$rounds" -v all="$all" \
		-v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
		extra = ""
		if (rounds > 1)
			extra = sprintf("; median of %d rounds (%s s)", rounds, all)
		printf "| %s | %s | %d files of %s bytes (%.1f MB), page cache %s%s | %.1f s | %.0f files/s | %.1f MB/s | %.1f MB (%.2fx the data; %d bytes of pack per file) | %.0f MiB | %.0f MiB | %.1f s | %s |\n",
			when, commit, f, s, b / 1e6, warm, extra,
			ms / 1000, f * 1000 / ms, b / ms / 1000, p / 1e6, p / b, p / f, dk / 1024,
			ck / 1024, cpu / 1000, load }')
	lines+="$line"$'\n'
done
echo "$hdr"
echo "$sep"
printf '%s' "$lines"
if ((dodoc)); then
	bench_doc_rows bench-import.sh "## Importing many small files (scripts/bench-import.sh)" \
		"$hdr"$'\n'"$sep" "$lines"
	echo "bench-import: added the lines to docs/PERFORMANCE.md" >&2
fi
