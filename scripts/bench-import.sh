#!/usr/bin/env bash
# The import of many small files (issue 13): generates N files of S bytes in directories of 1,000,
# imports them with `enclavectl dataset import` into a fresh store served by enclaved, and
# reports files/s, MB/s, the bytes the packs take against the bytes of the files, and the peak
# memory of the daemon and of enclavectl. Writes the lines into docs/PERFORMANCE.md between the
# "bench-import.sh" markers (one line per run: earlier runs of other sizes are kept).
#
# Not part of CI. Run as root. Options:
#   --files N    files [100000]
#   --size S     bytes per file [4096]; "tiny" gives file i the bytes "i\n" (a few bytes each,
#                as scripts/bench-rss.sh)
#   --no-doc     leave docs/PERFORMANCE.md alone
# Examples: scripts/bench-import.sh --files 100000 --size 4096
#           scripts/bench-import.sh --files 1000000 --size tiny
set -euo pipefail
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
files=100000 size=4096 dodoc=1
while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--files) files=${2:?}; shift 2 ;;
	--size) size=${2:?}; shift 2 ;;
	--no-doc) dodoc=0; shift ;;
	*) echo "bench-import: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done
case "$files" in '' | *[!0-9]*) echo "bench-import: --files takes a number" >&2; exit 2 ;; esac
case "$size" in tiny) ;; '' | *[!0-9]*) echo "bench-import: --size takes a number or tiny" >&2; exit 2 ;; esac
[[ $(id -u) == 0 ]] || { echo "bench-import: run as root" >&2; exit 1; }
cd "$(dirname "$0")/.."
root=$PWD
build=build-bench

echo "bench-import: building (Release)" >&2
bash scripts/deps.sh >/dev/null
dpkg -s time >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target enclaved enclavectl >/dev/null
enclaved=$root/$build/daemon/enclaved
enclavectl=$root/$build/cli/enclavectl

scratch=$(mktemp -d /var/tmp/enclave-bench-import.XXXXXX)
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

echo "bench-import: generating $files files ($size bytes each)" >&2
python3 - "$src" "$files" "$size" <<'EOF'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
blob = os.urandom(int(size) + 4096) if size != "tiny" else b""
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%07d" % i), "wb") as f:
        f.write(b"%d\n" % i if size == "tiny" else blob[i % 4096:i % 4096 + int(size)])
EOF
data_bytes=$(find "$src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')

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
# The unlock's Argon2id peak is not the import's: reset the peak counter (Linux 4.0+).
echo 5 >"/proc/$pid/clear_refs"
sync
echo 3 >/proc/sys/vm/drop_caches
echo "bench-import: importing" >&2
t0=$(date +%s%N)
/usr/bin/time -f '%M' -o "$scratch/ctl.rss" "$enclavectl" --store "$store" -q dataset import \
	bench "$src" >/dev/null
ms=$((($(date +%s%N) - t0) / 1000000))
ctl_kib=$(cat "$scratch/ctl.rss")
d_kib=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status")
pack_bytes=$(find "$store/packs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
line=$(awk -v f="$files" -v s="$size" -v ms="$ms" -v b="$data_bytes" -v p="$pack_bytes" \
	-v dk="$d_kib" -v ck="$ctl_kib" -v when="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	-v commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
	-v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
	printf "| %s | %s | %d files of %s bytes (%.1f MB) | %.1f s | %.0f files/s | %.1f MB/s | %.1f MB (%.2fx the data; %d bytes of pack per file) | %.0f MiB | %.0f MiB | %s |\n",
		when, commit, f, s, b / 1e6, ms / 1000, f * 1000 / ms, b / ms / 1000, p / 1e6,
		p / b, p / f, dk / 1024, ck / 1024, load }')
echo "| run | commit | data | import | files/s | MB/s | packs | enclaved peak (VmHWM since the unlock) | enclavectl peak | load |"
echo "|---|---|---|---:|---:|---:|---|---:|---:|---:|"
echo "$line"
if ((dodoc)); then
	doc=$root/docs/PERFORMANCE.md
	begin='<!-- bench-import.sh: begin -->'
	end='<!-- bench-import.sh: end -->'
	if ! grep -qF "$begin" "$doc"; then
		printf '\n## Importing many small files (scripts/bench-import.sh)\n\n%s\n| run | commit | data | import | files/s | MB/s | packs | enclaved peak (VmHWM since the unlock) | enclavectl peak | load |\n|---|---|---|---:|---:|---:|---|---:|---:|---:|\n%s\n' "$begin" "$end" >>"$doc"
	fi
	LINE=$line python3 - "$doc" "$end" <<'EOF'
import os, sys
path, end = sys.argv[1:3]
text = open(path).read()
b = text.index(end)
open(path, "w").write(text[:b] + os.environ["LINE"] + "\n" + text[b:])
EOF
	echo "bench-import: added the line to docs/PERFORMANCE.md" >&2
fi
