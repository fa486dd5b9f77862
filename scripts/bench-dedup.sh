#!/usr/bin/env bash
# Versions that share unchanged files (issue 16 point 5): generates N files of random content
# (sizes spread evenly up to twice the mean) totalling about M MB, imports them with
# `enclavectl dataset import` into a fresh store served by enclaved (version 1), changes the
# content of one file, imports the tree again (version 2), and reports both import times, their
# ratio, and the bytes the packs grew by for version 2 against the size of the data. The page
# cache is dropped before each import (unless --warm), so both read the source from disk. Writes the line into
# docs/PERFORMANCE.md between the "bench-dedup.sh" markers.
#
# Target: version 2 adds under 1 % of the data's size and takes under a fifth of version 1's time.
#
# Not part of CI. Run as root. Options:
#   --files N    files [20000]
#   --mb M       total megabytes (10^6 bytes) [300]
#   --warm       leave the page cache alone (the source is read from memory by both imports)
#   --no-doc     leave docs/PERFORMANCE.md alone
# Example: scripts/bench-dedup.sh --files 20000 --mb 300
set -euo pipefail
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
files=20000 mb=300 dodoc=1 cold=1
while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--files) files=${2:?}; shift 2 ;;
	--mb) mb=${2:?}; shift 2 ;;
	--warm) cold=0; shift ;;
	--no-doc) dodoc=0; shift ;;
	*) echo "bench-dedup: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done
case "$files" in '' | *[!0-9]* | 0) echo "bench-dedup: --files takes a positive number" >&2; exit 2 ;; esac
case "$mb" in '' | *[!0-9]* | 0) echo "bench-dedup: --mb takes a positive number" >&2; exit 2 ;; esac
[[ $(id -u) == 0 ]] || { echo "bench-dedup: run as root" >&2; exit 1; }
cd "$(dirname "$0")/.."
root=$PWD
build=build-bench

echo "bench-dedup: building (Release)" >&2
bash scripts/deps.sh >/dev/null
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target enclaved enclavectl bench_dedup >/dev/null
enclaved=$root/$build/daemon/enclaved
enclavectl=$root/$build/cli/enclavectl

scratch=$(mktemp -d /var/tmp/enclave-bench-dedup.XXXXXX)
src=$scratch/src mnt=$scratch/mnt store=$scratch/store
mkdir -p "$src" "$mnt"
pid=
cleanup() {
	local rc=$?
	set +e
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid"
	fi
	grep -q " $mnt " /proc/self/mountinfo && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
	rm -rf "$scratch"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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

head -c 32 /dev/urandom | base64 >"$scratch/pass"
chmod 0600 "$scratch/pass"
"$enclavectl" init --store "$store" --passphrase-file "$scratch/pass" --steward user:root \
	--approvals 0 >/dev/null
"$enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/pass" \
	2>"$scratch/enclaved.log" &
pid=$!
for _ in $(seq 1 200); do
	"$enclavectl" --store "$store" status >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || { cat "$scratch/enclaved.log" >&2; exit 1; }
	sleep 0.1
done

packs() { find "$store/packs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
# One import, from a cold page cache; prints its milliseconds.
import_ms() {
	sync
	((cold)) && echo 3 >/proc/sys/vm/drop_caches
	local t0
	t0=$(date +%s%N)
	"$enclavectl" --store "$store" -q dataset import bench "$src" >"$scratch/import.out"
	echo $((($(date +%s%N) - t0) / 1000000))
}

echo "bench-dedup: importing version 1" >&2
ms1=$(import_ms)
p1=$(packs)
# One file changed: same name, same size, new content.
victim=$(find "$src" -type f -name 'f*' | sort | sed -n "$((files / 2 + 1))p")
vsize=$(stat -c %s "$victim")
head -c "$vsize" /dev/urandom >"$victim.new" && mv "$victim.new" "$victim"
echo "bench-dedup: importing version 2 (one file of $vsize bytes changed)" >&2
ms2=$(import_ms)
p2=$(packs)
cat "$scratch/import.out" >&2

# The importer alone (no daemon, no socket), page cache warm: what the store layer costs.
victim2=$(find "$src" -type f -name 'f*' | sort | sed -n "$((files / 3 + 1))p")
store_line=$("$root/$build/tests/bench_dedup" "$scratch/store2" "$src" "$victim2")
echo "bench-dedup: $store_line" >&2

line=$(awk -v f="$files" -v ms1="$ms1" -v ms2="$ms2" -v b="$data_bytes" -v p1="$p1" -v p2="$p2" \
	-v vs="$vsize" -v sl="$store_line" -v when="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	-v commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
	-v cache="$( ((cold)) && echo "dropped before each import" || echo warm)" \
	-v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
	printf "| %s | %s | %d files, %.1f MB, page cache %s | %.1f s | %.1f s | %.3f | %.1f MB | %d bytes (%.4f %% of the data; the changed file: %d bytes) | %s | %s |\n",
		when, commit, f, b / 1e6, cache, ms1 / 1000, ms2 / 1000, ms2 / ms1, p1 / 1e6, p2 - p1,
		(p2 - p1) * 100 / b, vs, sl, load }')
hdr="| run | commit | data | version 1 | version 2 (one file changed) | time ratio (target < 0.2) | packs after version 1 | added by version 2 (target < 1 %) | the importer alone (bench_dedup, warm) | load |"
sep="|---|---|---|---:|---:|---:|---:|---|---|---:|"
echo "$hdr"
echo "$sep"
echo "$line"
if ((dodoc)); then
	doc=$root/docs/PERFORMANCE.md
	begin='<!-- bench-dedup.sh: begin -->'
	end='<!-- bench-dedup.sh: end -->'
	if ! grep -qF "$begin" "$doc"; then
		printf '\n## Versions that share unchanged files (scripts/bench-dedup.sh)\n\n%s\n%s\n%s\n%s\n' \
			"$begin" "$hdr" "$sep" "$end" >>"$doc"
	fi
	LINE=$line python3 - "$doc" "$end" <<'EOF'
import os, sys
path, end = sys.argv[1:3]
text = open(path).read()
b = text.index(end)
open(path, "w").write(text[:b] + os.environ["LINE"] + "\n" + text[b:])
EOF
	echo "bench-dedup: added the line to docs/PERFORMANCE.md" >&2
fi
