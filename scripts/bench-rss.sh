#!/usr/bin/env bash
# The daemon's memory while it serves a very large dataset (issue 6: "Daemon RSS while serving a
# dataset of 1,000,000 files: under 256 MiB"). Generates N files of a few bytes in D directories,
# imports them with `enclavectl dataset import` (wall time, files/s, peak RSS and CPU time of the
# client and of the daemon, which does the encryption and the index writes), then, as an
# unprivileged user granted the dataset, walks and stats every file (cold, then warm), cats a
# sample spread over every directory (each open writes durable audit records, so not all of
# them), and stats every file again. After each phase it records the daemon's VmRSS (anonymous and
# file-backed) and VmHWM. The peak counter is reset (`echo 5 > /proc/PID/clear_refs`) once the
# daemon is unlocked and again after the import, because the Argon2id unlock at start allocates
# 256 MiB once and frees it: the serving peak is the one the target is about; the unlock's and the
# import's peaks are reported on their own rows. Prints one table and writes it into
# docs/PERFORMANCE.md between the "bench-rss" markers.
#
# Not part of CI: it takes minutes and a few GB of scratch disk at full size.
# Usage: scripts/bench-rss.sh [--help]      (as root)
# Settings (environment, defaults in brackets): BENCH_RSS_FILES [1000000] files in
# BENCH_RSS_DIRS [1000] directories; BENCH_RSS_CAT [10] files cat'ed per directory (the first
# ones); BENCH_DOC [1] (0 leaves docs/PERFORMANCE.md alone); BENCH_BUILD [build-bench] the build
# directory (Release), under the tree; the scratch data goes in a new directory inside it.
# A quick run: BENCH_RSS_FILES=20000 BENCH_RSS_DIRS=20 BENCH_DOC=0 scripts/bench-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bench="bench-rss"
. scripts/bench-lib.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
-h | --help) usage; exit 0 ;;
'') ;;
*) usage >&2; exit 2 ;;
esac

files=${BENCH_RSS_FILES:-1000000}
dirs=${BENCH_RSS_DIRS:-1000}
per_cat=${BENCH_RSS_CAT:-10}
dodoc=${BENCH_DOC:-1}
build=${BENCH_BUILD:-build-bench}
for v in "$files" "$dirs" "$per_cat" "$dodoc"; do
	case "$v" in '' | *[!0-9]*) echo "bench-rss: BENCH_* settings are whole numbers" >&2; exit 2 ;; esac
done
case "$build" in '' | /* | *..*) echo "bench-rss: BENCH_BUILD is a directory name under the tree" >&2; exit 2 ;; esac
((dirs >= 1 && files >= dirs)) ||
	{ echo "bench-rss: BENCH_RSS_DIRS must be at least 1 and at most BENCH_RSS_FILES" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "bench-rss: run as root (it mounts, creates a user, reads /proc)" >&2; exit 1; }
t_script=$(date +%s)

echo "bench-rss: installing what it needs and building (Release, $build)" >&2
bash scripts/deps.sh >/dev/null
dpkg -s time >/dev/null 2>&1 || {
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target enclaved enclavectl >/dev/null
enclaved=$root/$build/daemon/enclaved
enclavectl=$root/$build/cli/enclavectl

# Its own reader, so a concurrent scripts/bench.sh cannot delete it under us.
user=enclave-bench-rss
made_user=0
bench_cleanup_more() {
	echo "bench-rss: removing the scratch data" >&2
	((made_user)) && userdel "$user" 2>/dev/null
}
scratch_parent=$root/$build
bench_scratch
chmod 0755 "$scratch"
src=$scratch/src
mnt=$scratch/mnt
store=$scratch/store
pid=
pids=()        # the long step running (run): bench_cleanup stops it before the daemon

if ! id "$user" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
	made_user=1
fi
mkdir -p "$src" "$mnt"

as() { runuser -u "$user" -- "$@"; }
# The long steps run as a background job the script waits for: bash runs a trap only once a
# foreground command has finished, while wait returns at once, so a TERM (or ^C) stops the run now.
run() {
	"$@" <&0 &
	pids=($!)
	wait "${pids[0]}"
	pids=()
}
now_ns() { date +%s%N; }
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
cpu_s() {      # user + system CPU seconds of PID, all its threads
	awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$1/stat"
}
reset_hwm() { echo 5 >"/proc/$pid/clear_refs"; }

# ---- The data -----------------------------------------------------------------------------------
# File i holds "i\n" and lives in directory i / ceil(N / D). The sample list holds the first
# BENCH_RSS_CAT files of every directory, as paths under the mount, and the expected bytes.
echo "bench-rss: generating $files files in $dirs directories" >&2
t=$(now_ns)
run python3 - "$src" "$files" "$dirs" "$per_cat" "$scratch/sample" "$mnt/m/1" <<'EOF'
import os, sys
root, n, nd, per, listp, mroot = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
per_dir = -(-n // nd)
with open(listp, "w") as lst, open(listp + ".expected", "wb") as exp:
    for i in range(n):
        d, k = divmod(i, per_dir)
        sub = "d%04d" % d
        if k == 0:
            os.mkdir(os.path.join(root, sub))
        name = "f%07d" % i
        data = b"%d\n" % i
        with open(os.path.join(root, sub, name), "wb") as f:
            f.write(data)
        if k < per:
            lst.write("%s/%s/%s\n" % (mroot, sub, name))
            exp.write(data)
EOF
chmod -R a+rX "$src" "$scratch/sample"
gen_ms=$(ms_since "$t")
sample_n=$(wc -l <"$scratch/sample")
echo "bench-rss: generated in $((gen_ms / 1000)) s" >&2

# ---- Store, daemon, import ----------------------------------------------------------------------
head -c 32 /dev/urandom | base64 >"$scratch/pass"
chmod 0600 "$scratch/pass"
"$enclavectl" init --store "$store" --passphrase-file "$scratch/pass" --steward user:root --approvals 0 >/dev/null
"$enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/pass" 2>"$scratch/enclaved.log" &
pid=$!
for _ in $(seq 1 300); do
	"$enclavectl" --store "$store" status >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || { cat "$scratch/enclaved.log" >&2; exit 1; }
	sleep 0.1
done
ctl() { "$enclavectl" --store "$store" "$@"; }
ctl status >/dev/null

declare -A RSS ANON FILE_ HWM SECS
rows=()
sample() {     # phase label seconds
	rows+=("$1|$2")
	SECS[$1]=$3
	RSS[$1]=$(mib "$(kib "$pid" VmRSS)")
	ANON[$1]=$(mib "$(kib "$pid" RssAnon)")
	FILE_[$1]=$(mib "$(kib "$pid" RssFile)")
	HWM[$1]=$(mib "$(kib "$pid" VmHWM)")
	echo "bench-rss: $2: VmRSS ${RSS[$1]} MiB, VmHWM ${HWM[$1]} MiB${3:+, $3 s}" >&2
}
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }

sample unlock "daemon up and unlocked (VmHWM: the Argon2id unlock)" ""
reset_hwm
threads=$(kib "$pid" Threads)

echo "bench-rss: importing (the CLI walks and passes descriptors; the daemon encrypts and indexes)" >&2
cpu0=$(cpu_s "$pid")
sync
t=$(now_ns)
run /usr/bin/time -o "$scratch/ctl.time" -f '%M %U %S' "$enclavectl" --store "$store" -q dataset import m "$src" >/dev/null
import_ms=$(ms_since "$t")
cpu_daemon=$(awk -v a="$cpu0" -v b="$(cpu_s "$pid")" 'BEGIN { printf "%.1f", b - a }')
read -r ctl_kib ctl_u ctl_s <"$scratch/ctl.time"
cpu_ctl=$(awk -v u="$ctl_u" -v s="$ctl_s" 'BEGIN { printf "%.1f", u + s }')
rate=$((files * 1000 / (import_ms > 0 ? import_ms : 1)))
sample import "after the import (VmHWM: the import's peak)" "$(secs "$import_ms")"
echo "bench-rss: import: $rate files/s; CPU: daemon $cpu_daemon s, enclavectl $cpu_ctl s; enclavectl peak RSS $(mib "$ctl_kib") MiB" >&2
reset_hwm
ctl grant add --user "$user" --dataset m --purpose benchmark --expires +4h >/dev/null

# ---- Serving, as the granted user ---------------------------------------------------------------
t=$(now_ns)
run as find "$mnt/m/1" -type f -printf '%s %T@\n' >"$scratch/find.out"
n=$(wc -l <"$scratch/find.out")
sample find1 "find + stat of every file, first" "$(secs "$(ms_since "$t")")"
[[ $n == "$files" ]] || { echo "bench-rss: find saw $n files, not $files" >&2; exit 1; }
t=$(now_ns)
run as find "$mnt/m/1" -printf '%s %T@\n' >/dev/null
sample find2 "find + stat of every file, again (warm)" "$(secs "$(ms_since "$t")")"
t=$(now_ns)
run as xargs -d '\n' -a "$scratch/sample" cat >"$scratch/sample.got"
sample cat "cat of $sample_n files ($per_cat per directory)" "$(secs "$(ms_since "$t")")"
cmp -s "$scratch/sample.got" "$scratch/sample.expected" ||
	{ echo "bench-rss: the files read through the mount differ from the source" >&2; exit 1; }
t=$(now_ns)
run as find "$mnt/m/1" -printf '%s %T@\n' >/dev/null
sample find3 "find + stat of every file, after the cats" "$(secs "$(ms_since "$t")")"

# Where the memory is at the end: the daemon's mappings, RocksDB's settings from its own log.
smaps=$(awk '/^(Rss|Anonymous|Shared_Clean|Private_Dirty):/ { printf "%s %.1f MiB; ", $1, $2 / 1024 }' \
	"/proc/$pid/smaps_rollup")
# Resident memory by mapping: anonymous (glibc arenas, RocksDB's memtables and cache, libfuse's
# buffers, thread stacks) and each file (libraries, the binary).
top_maps=$(python3 - "/proc/$pid/smaps" <<'EOF'
import re, sys
# Anonymous memory is split by what its mapping looks like: glibc's per-thread malloc arenas are
# heaps aligned to 64 MiB; thread stacks are 8 MiB; the rest is the main heap's mmaps (large
# allocations: RocksDB's memtable blocks and cache entries, libfuse's request buffers).
rss, name = {}, None
for line in open(sys.argv[1]):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
    if m:
        lo, hi, path = int(m.group(1), 16), int(m.group(2), 16), m.group(3).strip()
        if path:
            name = path.rsplit("/", 1)[-1]
        elif lo % (64 << 20) == 0:
            name = "malloc arenas"
        elif (8 << 20) - (64 << 10) <= hi - lo <= 8 << 20:
            name = "thread stacks"
        else:
            name = "other anonymous"
    elif line.startswith("Rss:"):
        rss[name] = rss.get(name, 0) + int(line.split()[1])
top = sorted(rss.items(), key=lambda kv: -kv[1])[:7]
print(", ".join("%s %.1f MiB" % (k, v / 1024) for k, v in top))
EOF
)
rocks=$(grep -m1 'capacity :' "$store/index/LOG" 2>/dev/null | awk '{ printf "block cache capacity %.0f MiB", $NF / 1048576 }' || true)
wbs=$(grep -m1 'Options.write_buffer_size' "$store/index/LOG" 2>/dev/null | awk '{ printf "write_buffer_size %.0f MiB", $NF / 1048576 }' || true)
sst_mib=$(du -sm --apparent-size "$store/index" | cut -f1)
pack_mib=$(du -sm --apparent-size "$store/packs" | cut -f1)
threads_end=$(kib "$pid" Threads)

# ---- The table ----------------------------------------------------------------------------------
table() {
	echo "| phase | time (s) | VmRSS (MiB) | of which anonymous | of which file-backed | VmHWM (MiB) |"
	echo "|---|---:|---:|---:|---:|---:|"
	for row in "${rows[@]}"; do
		IFS='|' read -r key label <<<"$row"
		echo "| $label | ${SECS[$key]:--} | ${RSS[$key]} | ${ANON[$key]} | ${FILE_[$key]} | ${HWM[$key]} |"
	done
}
machine="$(lscpu | awk -F': +' '/^Model name/ { print $2 }'), $(nproc) cores, \
$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), \
$(. /etc/os-release && echo "$PRETTY_NAME")"
peak_serving=$(printf '%s\n' "${HWM[find1]}" "${HWM[find2]}" "${HWM[cat]}" "${HWM[find3]}" | sort -g | tail -1)
verdict=$(awk -v p="$peak_serving" 'BEGIN { print (p < 256 ? "met" : "missed") }')
report=$(
	cat <<EOF
**Run:** $(date -u +%Y-%m-%dT%H:%M:%SZ) on $machine. Release build.
**Command:** \`${MALLOC_ARENA_MAX:+MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX }BENCH_RSS_FILES=$files BENCH_RSS_DIRS=$dirs BENCH_RSS_CAT=$per_cat scripts/bench-rss.sh\`
(as root; the whole script took $(($(date +%s) - t_script)) s, generating the files $((gen_ms / 1000)) s).
Data: $files files of a few bytes in $dirs directories; index $sst_mib MiB on disk, packs $pack_mib MiB.
Reads as an unprivileged user granted the dataset: \`find DIR -printf '%s %T@\n'\`, and
\`xargs cat\` of the first $per_cat files of every directory (checked against the source).
VmHWM is reset (\`echo 5 > /proc/PID/clear_refs\`) after the unlock and after the import, so
each serving row's VmHWM is the peak since the import.

| | |
|---|---|
| import | $(secs "$import_ms") s, $rate files/s (walk, descriptors over the socket, encrypt, write, fsync) |
| import, CPU time | daemon $cpu_daemon s, enclavectl $cpu_ctl s |
| import, peak RSS | daemon ${HWM[import]} MiB, enclavectl $(mib "$ctl_kib") MiB |
| daemon threads | $threads after the unlock, $threads_end at the end |
| peak while serving | $peak_serving MiB: target < 256 MiB $verdict |

$(table)

At the end: ${smaps}largest mappings: $top_maps. RocksDB: ${rocks:-block cache (see LOG)}; ${wbs:-write_buffer_size (see LOG)}.
EOF
)
echo
echo "$report"
if ((dodoc)); then
	doc=$root/docs/PERFORMANCE.md
	REPORT=$report python3 - "$doc" <<'EOF'
import os, sys
path = sys.argv[1]
begin, end = "<!-- bench-rss:begin -->", "<!-- bench-rss:end -->"
text = open(path).read()
if begin not in text:
    section = ("## Serving 1,000,000 files (scripts/bench-rss.sh)\n\n"
               "`scripts/bench-rss.sh` (as root; not run in CI) imports a dataset of many tiny files, "
               "reads it through the\nmount as a granted user and records the daemon's memory after "
               "each phase, for the read-path issue's\ntarget \"daemon RSS while serving a dataset of "
               "1,000,000 files: under 256 MiB\". It rewrites the block\nbetween the markers below.\n\n"
               + begin + "\n" + end + "\n\n")
    at = text.find("<!-- bench-audit:begin -->")
    text = text[:at] + section + text[at:] if at >= 0 else text + "\n" + section
a = text.index(begin) + len(begin)
b = text.index(end)
open(path, "w").write(text[:a] + "\n" + os.environ["REPORT"] + "\n" + text[b:])
EOF
	echo "bench-rss: wrote the table into docs/PERFORMANCE.md" >&2
fi
