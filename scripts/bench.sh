#!/usr/bin/env bash
# The read-path benchmark (issue 6): the same reads, side by side in one run, of
#   plain      the source files on the local disk (the limit)
#   bindfs     a plain FUSE passthrough of them (the cost of FUSE itself)
#   gocryptfs  an encrypted FUSE file system holding a copy (the peer; its copy-in is the import
#              reference)
#   enclave    enclaved serving the same files imported into a store
# with fio and plain tools: sequential 1 MiB reads (1 and 2 readers, cold and warm), random 4 KiB
# and 128 KiB reads at queue depth 1 and 16, find + stat of every small file, cat of every small
# file, a second epoch of a cache=kernel dataset (when the daemon and CLI have that setting),
# import throughput and the daemon's memory. Prints one table with Enclave's ratio to each of the
# others and writes it into docs/PERFORMANCE.md between the "bench.sh" markers.
#
# Not part of CI: timings on a shared machine are noisy; compare ratios from one run.
# Run as root. Sizes (environment, defaults in brackets):
#   BENCH_SHARDS [3] shards of BENCH_SHARD_MIB [1024] MiB; BENCH_SMALL [100000] small files of
#   BENCH_SMALL_BYTES [4096] bytes; BENCH_RUNTIME [10] seconds per random-read run;
#   BENCH_REPS [3] rounds of each sequential figure (the median is reported); BENCH_PERF=1
#   records perf profiles of the daemon (kept in build-bench/bench-perf/); BENCH_DOC=0 leaves
#   docs/PERFORMANCE.md alone; BENCH_THREADS passes --threads to enclaved; BENCH_ENCLAVED_ARGS
#   more enclaved options (e.g. --direct-packs or --prefetch-threads 0, to compare with the
#   default); BENCH_SYSTEMS [plain bindfs gocryptfs enclave] which systems to read (an A/B of one
#   Enclave setting: BENCH_SYSTEMS=enclave BENCH_DOC=0); BENCH_BUILD [build-bench] the build
#   directory (Release).
# The daemon's memory with 1,000,000 files is measured by scripts/bench-rss.sh.
# A quick run: BENCH_SHARDS=2 BENCH_SHARD_MIB=256 BENCH_SMALL=5000 BENCH_RUNTIME=3 scripts/bench.sh
set -euo pipefail
case "${1:-}" in
-h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
'') ;;
*) echo "bench: no arguments; settings come from BENCH_* variables (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
root=$PWD
bench=bench
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

shards=${BENCH_SHARDS:-3}
shard_mib=${BENCH_SHARD_MIB:-1024}
small=${BENCH_SMALL:-100000}
small_bytes=${BENCH_SMALL_BYTES:-4096}
runtime=${BENCH_RUNTIME:-10}
reps=${BENCH_REPS:-3}
doperf=${BENCH_PERF:-0}
dodoc=${BENCH_DOC:-1}
threads=${BENCH_THREADS:-}
read -r -a enclaved_args <<<"${BENCH_ENCLAVED_ARGS:-}"
read -r -a systems <<<"${BENCH_SYSTEMS:-plain bindfs gocryptfs enclave}"
for s in "${systems[@]}"; do
	case "$s" in plain | bindfs | gocryptfs | enclave) ;;
	*) echo "bench: BENCH_SYSTEMS takes plain, bindfs, gocryptfs, enclave" >&2; exit 2 ;; esac
done
build=${BENCH_BUILD:-build-bench}
case "$build" in '' | /* | *..*) echo "bench: BENCH_BUILD is a directory name under the tree" >&2; exit 2 ;; esac
has() { [[ " ${systems[*]} " == *" $1 "* ]]; }
for v in "$shards" "$shard_mib" "$small" "$small_bytes" "$runtime" "$reps" "$doperf" "$dodoc" \
	"${threads:-1}"; do
	case "$v" in '' | *[!0-9]*) echo "bench: BENCH_* settings are whole numbers" >&2; exit 2 ;; esac
done
((reps >= 1)) || { echo "bench: BENCH_REPS must be at least 1" >&2; exit 2; }
((shards >= 2)) || { echo "bench: BENCH_SHARDS must be at least 2 (two readers)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "bench: run as root (it mounts, creates a user, drops caches)" >&2; exit 1; }

echo "bench: installing what it needs and building (Release)" >&2
bash scripts/deps.sh >/dev/null
need=()
for p in fio bindfs gocryptfs jq time; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target enclaved enclavectl >/dev/null
enclaved=$root/$build/daemon/enclaved
enclavectl=$root/$build/cli/enclavectl

user=enclave-bench-reader
made_user=0
if ! id "$user" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
	made_user=1
fi
bench_cleanup_more() { ((made_user)) && userdel "$user" 2>/dev/null; }
bench_scratch
chmod 0755 "$scratch"
src=$scratch/src           # the plain files
mnt=$scratch/mnt           # enclave
bmnt=$scratch/bindfs
gcipher=$scratch/gocryptfs.cipher
gmnt=$scratch/gocryptfs
store=$scratch/store
mkdir -p "$src/shards" "$src/small" "$mnt" "$bmnt" "$gcipher" "$gmnt"
pid=
mnts=("$bmnt" "$gmnt")     # bench_cleanup unmounts these and $mnt
perf_dir=$root/$build/bench-perf

as() { runuser -u "$user" -- "$@"; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now_ns() { date +%s%N; }
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }

# ---- The data -----------------------------------------------------------------------------------
echo "bench: generating $shards x $shard_mib MiB shards and $small files of $small_bytes bytes" >&2
for ((i = 0; i < shards; i++)); do
	head -c $((shard_mib << 20)) /dev/urandom >"$src/shards/shard-$i.bin"
done
# 1000 files per directory, as a sharded image dataset would be.
python3 - "$src/small" "$small" "$small_bytes" <<'EOF'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blob = os.urandom(size + 4096)
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(blob[i % 4096:i % 4096 + size])
EOF
chmod -R a+rX "$src"
data_bytes=$(du -sb --apparent-size "$src" | cut -f1)

# ---- Enclave: store, daemon, import ---------------------------------------------------------------
head -c 32 /dev/urandom | base64 >"$scratch/pass"
chmod 0600 "$scratch/pass"
"$enclavectl" init --store "$store" --passphrase-file "$scratch/pass" --steward user:root --approvals 0 >/dev/null
"$enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/pass" \
	${threads:+--threads "$threads"} "${enclaved_args[@]}" 2>"$scratch/enclaved.log" &
pid=$!
for _ in $(seq 1 200); do
	"$enclavectl" --store "$store" status >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || { cat "$scratch/enclaved.log" >&2; exit 1; }
	sleep 0.1
done
ctl() { "$enclavectl" --store "$store" "$@"; }
kib() { awk -v k="$2" '$1 == k":" { print int($2 / 1024) }' "/proc/$1/status" 2>/dev/null; }
# The unlock (Argon2id) takes its memory once at start and frees it: its peak is reported on its
# own, and the peak counter is reset (clear_refs 5, Linux 4.0) so that "peak" below is the
# import's and the serving's.
hwm_unlock=$(kib "$pid" VmHWM)
echo 5 >"/proc/$pid/clear_refs"

echo "bench: importing into enclave" >&2
drop
t=$(now_ns)
ctl -q dataset import data "$src" >/dev/null
import_ms_enclave=$(ms_since "$t")
# A second dataset of the first shard alone in 4 KiB chunks: the one a map-style (random access)
# job would be given. Not timed.
mkdir -p "$scratch/randsrc"
ln "$src/shards/shard-0.bin" "$scratch/randsrc/shard-0.bin"
ctl -q dataset import rand "$scratch/randsrc" --chunk-size 4K >/dev/null
for ds in data rand; do
	ctl grant add --user "$user" --dataset "$ds" --purpose benchmark --expires +2h >/dev/null
done
cache_kernel="no"
if ctl dataset set --help >/dev/null 2>&1; then
	if ctl -q dataset import epoch "$src/shards" >/dev/null &&
		ctl dataset set epoch --cache kernel >/dev/null 2>"$scratch/cache.err" &&
		ctl grant add --user "$user" --dataset epoch --purpose benchmark --expires +2h >/dev/null; then
		cache_kernel="yes"
	else
		cache_kernel="no ($(head -c 120 "$scratch/cache.err" | tr '\n' ' '))"
	fi
else
	cache_kernel="no (enclavectl has no 'dataset set' yet)"
fi

# ---- gocryptfs: copy-in is the import reference ---------------------------------------------------
gpid= bpid= import_ms_gocryptfs= import_ms_plain=
if has gocryptfs; then
	echo "bench: copying into gocryptfs" >&2
	gocryptfs -q -init -scryptn 10 -passfile "$scratch/pass" "$gcipher" >/dev/null
	gocryptfs -q -allow_other -passfile "$scratch/pass" "$gcipher" "$gmnt"
	drop
	t=$(now_ns)
	cp -a "$src/." "$gmnt/"
	sync -f "$gcipher"
	import_ms_gocryptfs=$(ms_since "$t")
	gpid=$(pgrep -n -x gocryptfs || true)
fi

# The plain copy on the same disk, for scale.
if has plain; then
	drop
	t=$(now_ns)
	cp -a "$src" "$scratch/plaincopy"
	sync -f "$scratch/plaincopy"
	import_ms_plain=$(ms_since "$t")
	rm -rf "$scratch/plaincopy"
fi

if has bindfs; then
	bindfs -o ro,allow_other "$src" "$bmnt"
	bpid=$(pgrep -n -x bindfs || true)
fi

# Where each one's files are.
declare -A top=([plain]=$src [bindfs]=$bmnt [gocryptfs]=$gmnt [enclave]=$mnt/data/1)
# Random 4 KiB reads: Enclave reads the 4 KiB-chunk dataset; the others the same shard.
declare -A rtop=([plain]=$src/shards [bindfs]=$bmnt/shards [gocryptfs]=$gmnt/shards
	[enclave]=$mnt/rand/1)
declare -A R   # R[figure,system] = value

# fio as the reader; prints the summed read bandwidth (MB/s) or IOPS. inval=1 (the FUSE file
# systems) drops the file's own page cache first, so a first epoch is measured over warm backing
# data, as the issue's reference numbers are; the plain files keep theirs (inval=0).
inval=0
fio_run() {
	local what=$1
	shift
	as fio --output-format=json --readonly --invalidate="$inval" "$@" |
		jq -r "[.jobs[].read.$what] | add | if \"$what\" == \"bw_bytes\" then . / 1e6 else . end | floor"
}
seq_read() {   # readers dir
	local n=$1 d=$2 args=()
	for ((i = 0; i < n; i++)); do args+=(--name="r$i" --filename="$d/shard-$i.bin"); done
	fio_run bw_bytes --rw=read --bs=1M --ioengine=psync "${args[@]}"
}
# Each block at most once (fio's random map), for at most BENCH_RUNTIME seconds: a first touch,
# so a FUSE file system's own page cache does not answer repeats.
rand_read() {  # bs iodepth file
	local engine=psync
	(($2 > 1)) && engine=io_uring
	fio_run iops --name=rand --filename="$3" --rw=randread --bs="$1" --ioengine="$engine" \
		--iodepth="$2" --runtime="$runtime" --randrepeat=0
}
warm() { as cat "$@" >/dev/null; }
# The backing data of every system in the page cache: the plain files, gocryptfs's ciphertext,
# Enclave's packs.
warm_backing() { find "$src/shards" "$gcipher" "$store/packs" -type f -exec cat {} + >/dev/null; }

profile() {    # name: record the daemon for a few seconds while the caller reads
	((doperf)) || return 0
	mkdir -p "$perf_dir"
	perf record -q -g -p "$pid" -o "$perf_dir/$1.data" -- sleep "$runtime" >/dev/null 2>&1 &
	perf_pid=$!
}
profile_end() {
	((doperf)) || return 0
	wait "$perf_pid" || true
	perf report -i "$perf_dir/$1.data" --stdio --no-children -g none --percent-limit 0.5 \
		--sort dso,sym 2>/dev/null |
		grep -v '^#' | grep -v '^$' | head -60 >"$perf_dir/$1.txt" || true
}

# Sequential figures: BENCH_REPS rounds, each reading every system in turn, and the median of
# the rounds, so that the systems are compared side by side under the same load.
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
seq_figure() { # figure readers cold|warm
	local fig=$1 n=$2 mode=$3 rep s
	declare -A vals=()
	for ((rep = 0; rep < reps; rep++)); do
		[[ $mode == warm ]] && warm_backing
		for s in "${systems[@]}"; do
			inval=1
			[[ $s == plain ]] && inval=0
			[[ $mode == cold ]] && drop
			[[ $s == enclave && $rep == 0 ]] && profile "$fig"
			vals[$s]+="$(seq_read "$n" "${top[$s]}/shards") "
			[[ $s == enclave && $rep == 0 ]] && profile_end "$fig"
		done
	done
	for s in "${systems[@]}"; do
		R[$fig,$s]=$(tr ' ' '\n' <<<"${vals[$s]}" | grep . | median)
	done
}

echo "bench: reading" >&2
seq_figure seq1c 1 cold
seq_figure seq2c 2 cold
seq_figure seq1w 1 warm
seq_figure seq2w 2 warm
warm_backing
for s in "${systems[@]}"; do
	inval=1
	[[ $s == plain ]] && inval=0
	f=${top[$s]}/shards/shard-0.bin
	rf=${rtop[$s]}/shard-0.bin
	[[ $s == enclave ]] && profile rand4k
	R[r4k1,$s]=$(rand_read 4k 1 "$rf")
	[[ $s == enclave ]] && profile_end rand4k
	R[r4k16,$s]=$(rand_read 4k 16 "$rf")
	R[r128k1,$s]=$(($(rand_read 128k 1 "$f") * 128 * 1024 / 1000000))
	R[r128k16,$s]=$(($(rand_read 128k 16 "$f") * 128 * 1024 / 1000000))
done
for s in "${systems[@]}"; do
	sd=${top[$s]}/small
	as find "$sd" -printf '%s %T@\n' >/dev/null
	t=$(now_ns)
	as find "$sd" -printf '%s %T@\n' >/dev/null
	R[find,$s]=$(ms_since "$t")
done
for s in "${systems[@]}"; do
	sd=${top[$s]}/small
	as find "$sd" -type f -exec cat {} + >/dev/null
	t=$(now_ns)
	as find "$sd" -type f -exec cat {} + >/dev/null
	R[cat,$s]=$(ms_since "$t")
done

# Second epoch: each file read once, then again with whatever each one keeps cached (Enclave: a
# cache=kernel dataset; the others: the FUSE page cache as they run by default).
# The plain file is read again in each round, right before the others, for the ratio.
inval=0
declare -A e2=()
for ((rep = 0; rep < reps; rep++)); do
	warm_backing
	for s in plain bindfs gocryptfs; do
		has "$s" || continue
		warm "${top[$s]}/shards/shard-0.bin"
		e2[$s]+="$(seq_read 1 "${top[$s]}/shards") "
	done
	if [[ $cache_kernel == yes ]] && has enclave; then
		warm "$mnt/epoch/1/shard-0.bin"
		e2[enclave]+="$(seq_read 1 "$mnt/epoch/1") "
	fi
done
for s in "${!e2[@]}"; do
	R[epoch2,$s]=$(tr ' ' '\n' <<<"${e2[$s]}" | grep . | median)
done

R[import,enclave]=$((data_bytes / 1000 / import_ms_enclave))
[[ -n $import_ms_gocryptfs ]] && R[import,gocryptfs]=$((data_bytes / 1000 / import_ms_gocryptfs))
[[ -n $import_ms_plain ]] && R[import,plain]=$((data_bytes / 1000 / import_ms_plain))
R[rss,enclave]=$(kib "$pid" VmRSS)
R[hwm,enclave]=$(kib "$pid" VmHWM)
[[ -n $gpid ]] && R[rss,gocryptfs]=$(kib "$gpid" VmRSS) && R[hwm,gocryptfs]=$(kib "$gpid" VmHWM)
[[ -n $bpid ]] && R[rss,bindfs]=$(kib "$bpid" VmRSS) && R[hwm,bindfs]=$(kib "$bpid" VmHWM)


# ---- The table ------------------------------------------------------------------------------------
rows=(
	"seq1w|sequential 1 MiB, 1 reader, warm (MB/s)|hi"
	"seq2w|sequential 1 MiB, 2 readers, warm (MB/s)|hi"
	"seq1c|sequential 1 MiB, 1 reader, cold (MB/s)|hi"
	"seq2c|sequential 1 MiB, 2 readers, cold (MB/s)|hi"
	"r4k1|random 4 KiB, qd 1 (IOPS)|hi"
	"r4k16|random 4 KiB, qd 16 (IOPS)|hi"
	"r128k1|random 128 KiB, qd 1 (MB/s)|hi"
	"r128k16|random 128 KiB, qd 16 (MB/s)|hi"
	"find|find + stat, $small files, warm (ms)|lo"
	"cat|cat every small file, warm (ms)|lo"
	"epoch2|second epoch, cache=kernel, 1 MiB seq (MB/s)|hi"
	"import|import / copy-in incl. sync (MB/s)|hi"
	"rss|daemon VmRSS after the reads (MiB)|lo"
	"hwm|daemon VmHWM since the unlock: import and reads (MiB)|lo"
)
ratio() {
	[[ -n ${R[$1,enclave]:-} && -n ${R[$1,$2]:-} && ${R[$1,$2]} != 0 ]] || { echo "-"; return; }
	awk -v a="${R[$1,enclave]}" -v b="${R[$1,$2]}" 'BEGIN { printf "%.2f", a / b }'
}
table() {
	echo "| figure | plain | bindfs | gocryptfs | enclave | enclave/plain | enclave/bindfs | enclave/gocryptfs |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for row in "${rows[@]}"; do
		IFS='|' read -r key label dir <<<"$row"
		printf '| %s, %s |' "$label" "$([[ $dir == hi ]] && echo higher || echo lower) is better"
		for s in plain bindfs gocryptfs enclave; do printf ' %s |' "${R[$key,$s]:--}"; done
		printf ' %s | %s | %s |\n' "$(ratio "$key" plain)" "$(ratio "$key" bindfs)" \
			"$(ratio "$key" gocryptfs)"
	done
}
machine="$(lscpu | awk -F': +' '/^Model name/ { print $2 }'), $(nproc) cores, \
$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), \
$(. /etc/os-release && echo "$PRETTY_NAME")"
tbl=$(table)
report=$(
	cat <<EOF
**Run:** $(date -u +%Y-%m-%dT%H:%M:%SZ) on $machine. Release build. Data: $shards shards of
$shard_mib MiB and $small files of $small_bytes bytes ($((data_bytes / 1000000)) MB); random
reads $runtime s each. Enclave: 64 KiB chunks (\`rand\` dataset for 4 KiB reads: 4 KiB chunks),
AES-256-GCM, \`direct_io\`, read-ahead on, packs read $(if [[ " ${enclaved_args[*]} " == *" --direct-packs "* ]]; then echo "with O_DIRECT (\`--direct-packs\`)"; else echo "through the page cache"; fi)${enclaved_args[*]:+ (enclaved ${enclaved_args[*]})}; systems read: ${systems[*]}; gocryptfs $(gocryptfs -version 2>/dev/null | awk '{ print $2 }' | head -1)
(AES-256-GCM); bindfs $(bindfs --version 2>/dev/null | awk '{ print $2 }' | head -1). cache=kernel
dataset: $cache_kernel. The daemon's unlock (Argon2id) peaked at $hwm_unlock MiB before serving and
freed it; its VmHWM row counts from after the unlock. Sequential figures: the median of $reps
rounds, each round reading every system in turn.

**Command:** \`BENCH_SHARDS=$shards BENCH_SHARD_MIB=$shard_mib BENCH_SMALL=$small BENCH_RUNTIME=$runtime BENCH_REPS=$reps scripts/bench.sh\`
(as root). Reads run as an unprivileged user granted access; \`fio --readonly --invalidate=0\`,
\`--rw=read --bs=1M --ioengine=psync\` (one job per reader, each its own shard),
\`--rw=randread --ioengine=psync\` at qd 1 and \`--ioengine=io_uring --iodepth=16\` at qd 16;
cold = \`sync; echo 3 > /proc/sys/vm/drop_caches\` before the run; warm = the backing data
(plain files, gocryptfs ciphertext, Enclave packs) read with \`cat\` first, and for the FUSE file
systems \`--invalidate=1\` so each first epoch starts with their own page cache empty;
\`find DIR -printf '%s %T@\n'\` and \`find DIR -type f -exec cat {} +\`, second of two runs.
Import: \`enclavectl dataset import\` (fsyncs) against \`cp -a\` + \`sync -f\` into gocryptfs
and onto the plain disk, caches dropped first.

$tbl
EOF
)
echo
echo "$report"
if ((dodoc)); then
	doc=$root/docs/PERFORMANCE.md
	begin='<!-- bench.sh: begin -->'
	end='<!-- bench.sh: end -->'
	if ! grep -qF "$begin" "$doc"; then
		printf '\n## Side by side (scripts/bench.sh)\n\n%s\n%s\n' "$begin" "$end" >>"$doc"
	fi
	REPORT=$report python3 - "$doc" "$begin" "$end" <<'EOF'
import os, sys
path, begin, end = sys.argv[1:4]
text = open(path).read()
a = text.index(begin) + len(begin)
b = text.index(end)
open(path, "w").write(text[:a] + "\n" + os.environ["REPORT"] + "\n" + text[b:])
EOF
	echo "bench: wrote the table into docs/PERFORMANCE.md" >&2
fi
