#!/usr/bin/env bash
# The small-file benchmark (issue 13): a data loader's reads of an image-like dataset, side by
# side in one run, of
#   plain            the source files on the local disk (the limit)
#   gocryptfs        an encrypted FUSE file system holding a copy (the peer)
#   enclave-direct   enclaved serving the same files, dataset cache=direct (the default)
#   enclave-kernel   the same files in a second dataset set to cache=kernel
#   enclave-before   (with --before REV) enclaved and enclavectl of commit REV, built (Release)
#                    from a `git archive` of it in build-bench-before/, serving the same files
#                    from a store of their own, cache=direct: a change's cost side by side
# Two readers, each for two epochs, as an unprivileged user granted access:
#   in order   one process, `find DIR -type f -print0 | xargs -0 cat`
#   shuffled   8 worker processes (python3 multiprocessing), each opening, reading whole and
#              closing files of one shuffled list (a fresh shuffle per epoch)
# Epoch 1 starts with every page cache dropped and the system's backing data (plain files,
# gocryptfs ciphertext, Enclave packs) read back in, so a FUSE file system's own cache is empty
# and the disk is out of the figure; epoch 2 follows at once with whatever each system keeps.
# The systems are read in turn, the order rotated each round; each figure is the median of the
# rounds, so the machine's load (it is shared) falls on all of them alike: trust the ratios.
# Also: the import of the tree (enclavectl dataset import against cp -a + sync into gocryptfs).
# Prints one table and writes it into docs/PERFORMANCE.md between the "bench-small.sh" markers.
#
# Not part of CI. Run as root. Options:
#   --files N     files in the tree [20000], in 100 class directories, 4-250 KB each, about
#                 88 KB on average (a fixed-seed draw: the same tree for the same N)
#   --scale F     multiply the default file count by F (0.1 = 2,000 files), instead of --files
#   --rounds N    rounds of each figure [3]; the median is reported
#   --workers N   worker processes of the shuffled reader [8]
#   --systems L   comma list of plain,gocryptfs,enclave-direct,enclave-kernel,enclave-before
#                 [all but enclave-before; with --before: enclave-before,enclave-direct]
#   --before REV  also measure the build of commit REV (a system "enclave-before"); the table
#                 then compares it with enclave-direct, and goes between the "bench-small.sh
#                 --before" markers of docs/PERFORMANCE.md
#   --perf        record a perf profile of the whole machine (perf record -a -g) during the
#                 first shuffled epoch 1 of every FUSE system
#                 (build-bench/bench-perf/small-shuffled-SYSTEM.{data,txt,comm.txt})
#   --cpu         also measure, for every epoch, the CPU time per file of the readers, of the
#                 file system's daemon (enclaved, gocryptfs) and of the whole machine
#                 (/proc/stat), and count the FUSE requests per file by kind (the kernel's
#                 fuse:fuse_request_send tracepoint, counted by `perf stat`); a second table
#   --no-doc      leave docs/PERFORMANCE.md alone
#   --enclaved-args "..."  more enclaved options
# A quick run: scripts/bench-small.sh --files 2000 --rounds 1 --no-doc
set -euo pipefail
bench="bench-small"
. "$(dirname "$0")/bench-lib.sh"
files=20000 rounds=3 workers=8 dodoc=1 doperf=0 docpu=0 systems_arg=
enclaved_extra= before_rev=
while (($#)); do
	case "$1" in
	-h | --help) bench_usage; exit 0 ;;
	--files) files=${2:?}; shift 2 ;;
	--scale) files=$(awk -v f="${2:?}" 'BEGIN { n = int(20000 * f); print (n < 100 ? 100 : n) }'); shift 2 ;;
	--rounds) rounds=${2:?}; shift 2 ;;
	--workers) workers=${2:?}; shift 2 ;;
	--systems) systems_arg=${2:?}; shift 2 ;;
	--perf) doperf=1; shift ;;
	--cpu) docpu=1; shift ;;
	--no-doc) dodoc=0; shift ;;
	--enclaved-args) enclaved_extra=${2?}; shift 2 ;;
	--before) before_rev=${2:?}; shift 2 ;;
	*) echo "bench-small: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done
for v in "$files" "$rounds" "$workers"; do
	case "$v" in '' | *[!0-9]*) echo "bench-small: --files, --rounds, --workers take whole numbers" >&2; exit 2 ;; esac
done
((files >= 100 && rounds >= 1 && workers >= 1)) ||
	{ echo "bench-small: at least 100 files, 1 round, 1 worker" >&2; exit 2; }
if [[ -z $systems_arg ]]; then
	systems_arg=plain,gocryptfs,enclave-direct,enclave-kernel
	[[ -n $before_rev ]] && systems_arg=enclave-before,enclave-direct
fi
IFS=, read -r -a systems <<<"$systems_arg"
for s in "${systems[@]}"; do
	case "$s" in plain | gocryptfs | enclave-direct | enclave-kernel) ;;
	enclave-before) [[ -n $before_rev ]] || { echo "bench-small: enclave-before needs --before REV" >&2; exit 2; } ;;
	*) echo "bench-small: --systems takes plain, gocryptfs, enclave-direct, enclave-kernel, enclave-before" >&2; exit 2 ;; esac
done
read -r -a enclaved_args <<<"$enclaved_extra"
has() { [[ " ${systems[*]} " == *" $1 "* ]]; }
[[ $(id -u) == 0 ]] || { echo "bench-small: run as root (it mounts, creates a user, drops caches)" >&2; exit 1; }
cd "$(dirname "$0")/.."
root=$PWD
build=build-bench

echo "bench-small: installing what it needs and building (Release)" >&2
bash scripts/deps.sh >/dev/null
need=()
for p in gocryptfs time; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
((docpu || doperf)) && { command -v perf >/dev/null || need+=(linux-perf); }
if ((${#need[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target enclaved enclavectl >/dev/null
enclaved=$root/$build/daemon/enclaved
enclavectl=$root/$build/cli/enclavectl
before_desc= bsha=
if [[ -n $before_rev ]]; then
	bench_build_before "$before_rev"
	bsha=$(git rev-parse --verify "$before_rev^{commit}")
	enclaved0=$bench_before_dir/daemon/enclaved
	enclavectl0=$bench_before_dir/cli/enclavectl
	before_desc="$(git rev-parse --short "$bsha") of $(git log -1 --format=%cs "$bsha")"
fi

user=enclave-bench-reader
made_user=0
if ! id "$user" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
	made_user=1
fi
scratch=$(mktemp -d /var/tmp/enclave-bench-small.XXXXXX)
chmod 0755 "$scratch"
src=$scratch/src mnt=$scratch/mnt store=$scratch/store
gcipher=$scratch/gocryptfs.cipher gmnt=$scratch/gocryptfs
mnt0=$scratch/mnt0 store0=$scratch/store0
mkdir -p "$src" "$mnt" "$gcipher" "$gmnt" "$mnt0"
pid= pid0= perf_pid= made_tracefs=0
perf_dir=$root/$build/bench-perf

cleanup() {
	local rc=$?
	set +e
	[[ -n $perf_pid ]] && kill -INT "$perf_pid" 2>/dev/null && wait "$perf_pid"
	[[ -f $scratch/perf.pid ]] && kill -INT "$(cat "$scratch/perf.pid")" 2>/dev/null
	for p in $pid $pid0; do
		if kill -0 "$p" 2>/dev/null; then
			kill -TERM "$p"
			wait "$p"
		fi
	done
	for m in "$mnt" "$gmnt" "$mnt0"; do
		grep -q " $m " /proc/self/mountinfo && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
	done
	rm -rf "$scratch"
	((made_user)) && userdel "$user" 2>/dev/null
	((made_tracefs)) && umount /sys/kernel/tracing 2>/dev/null
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as() { runuser -u "$user" -- "$@"; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now_ns() { date +%s%N; }
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }

# ---- The tree -----------------------------------------------------------------------------------
echo "bench-small: generating $files files in 100 class directories" >&2
python3 - "$src" "$files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(13)
blob = os.urandom(256 * 1000 + 65536)
for c in range(100):
    os.makedirs(os.path.join(root, "class%03d" % c), exist_ok=True)
for i in range(n):
    # 4 KB plus an exponential draw (mean 90 KB) cut at 250 KB: 88 KB on average, most files
    # small, a tail of large ones, as JPEG tiles and DICOM slices are.
    size = int(min(250.0, 4.0 + rng.expovariate(1 / 90.0)) * 1000)
    off = rng.randrange(0, 65536)
    with open(os.path.join(root, "class%03d" % (i % 100), "img%06d.jpg" % i), "wb") as f:
        f.write(blob[off:off + size])
EOF
chmod -R a+rX "$src"
data_bytes=$(find "$src" -type f -printf "%s\n" | awk '{ s += $1 } END { print s }')
(cd "$src" && find . -type f -printf '%P\n') >"$scratch/list"
chmod 0644 "$scratch/list"

# The shuffled reader: N worker processes, each file opened, read whole and closed, as a
# PyTorch DataLoader's workers do. Prints "files bytes seconds"; the pool is started before the
# clock does.
cat >"$scratch/loader.py" <<'EOF'
import multiprocessing as mp, os, random, sys, time
top, listf, workers, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def read(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        n = 0
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return n
            n += len(b)
    finally:
        os.close(fd)
def noop(_):
    return 0
def cpu(pids):
    # CPU seconds (user + system) of this process and of the workers, from /proc/<pid>/stat.
    t = os.times()
    ticks = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read()
        v = v[v.rindex(")") + 2:].split()
        ticks += int(v[11]) + int(v[12])
    return t.user + t.system + ticks / os.sysconf("SC_CLK_TCK")
if __name__ == "__main__":
    paths = [os.path.join(top, l.rstrip("\n")) for l in open(listf)]
    random.Random(seed).shuffle(paths)
    with mp.Pool(workers) as pool:
        pool.map(noop, range(workers * 4))
        pids = [p.pid for p in pool._pool]
        c = cpu(pids)
        t = time.monotonic()
        total = sum(pool.imap_unordered(read, paths, chunksize=16))
        dt = time.monotonic() - t
        c = cpu(pids) - c
    print(len(paths), total, "%.6f" % dt, "%.3f" % c)
EOF
chmod 0644 "$scratch/loader.py"

# ---- Enclave ---------------------------------------------------------------------------------------
import_ms_enclave= import_ms_gocryptfs= import_ms_plain= import_files_enclave=
if has enclave-direct || has enclave-kernel; then
	head -c 32 /dev/urandom | base64 >"$scratch/pass"
	chmod 0600 "$scratch/pass"
	"$enclavectl" init --store "$store" --passphrase-file "$scratch/pass" --steward user:root \
		--approvals 0 >/dev/null
	"$enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/pass" \
		"${enclaved_args[@]}" 2>"$scratch/enclaved.log" &
	pid=$!
	for _ in $(seq 1 200); do
		"$enclavectl" --store "$store" status >/dev/null 2>&1 && break
		kill -0 "$pid" 2>/dev/null || { cat "$scratch/enclaved.log" >&2; exit 1; }
		sleep 0.1
	done
	ctl() { "$enclavectl" --store "$store" "$@"; }
	echo "bench-small: importing into enclave" >&2
	drop
	t=$(now_ns)
	ctl -q dataset import small "$src" >/dev/null
	import_ms_enclave=$(ms_since "$t")
	ctl grant add --user "$user" --dataset small --purpose benchmark --expires +4h >/dev/null
	if has enclave-kernel; then
		ctl -q dataset import smallk "$src" >/dev/null
		ctl dataset set smallk --cache kernel >/dev/null
		ctl grant add --user "$user" --dataset smallk --purpose benchmark --expires +4h >/dev/null
	fi
fi
if has enclave-before; then
	[[ -f $scratch/pass ]] || { head -c 32 /dev/urandom | base64 >"$scratch/pass"; chmod 0600 "$scratch/pass"; }
	"$enclavectl0" init --store "$store0" --passphrase-file "$scratch/pass" --steward user:root \
		--approvals 0 >/dev/null
	"$enclaved0" --store "$store0" --mount "$mnt0" --passphrase-file "$scratch/pass" \
		"${enclaved_args[@]}" 2>"$scratch/enclaved0.log" &
	pid0=$!
	for _ in $(seq 1 200); do
		"$enclavectl0" --store "$store0" status >/dev/null 2>&1 && break
		kill -0 "$pid0" 2>/dev/null || { cat "$scratch/enclaved0.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "bench-small: importing into the enclave of $before_rev" >&2
	"$enclavectl0" --store "$store0" -q dataset import small "$src" >/dev/null
	"$enclavectl0" --store "$store0" grant add --user "$user" --dataset small --purpose benchmark \
		--expires +4h >/dev/null
fi
if has gocryptfs; then
	echo "bench-small: copying into gocryptfs" >&2
	[[ -f $scratch/pass ]] || { head -c 32 /dev/urandom | base64 >"$scratch/pass"; chmod 0600 "$scratch/pass"; }
	gocryptfs -q -init -scryptn 10 -passfile "$scratch/pass" "$gcipher" >/dev/null
	gocryptfs -q -allow_other -passfile "$scratch/pass" "$gcipher" "$gmnt"
	drop
	t=$(now_ns)
	cp -a "$src/." "$gmnt/"
	sync -f "$gcipher"
	import_ms_gocryptfs=$(ms_since "$t")
fi
if has plain; then
	drop
	t=$(now_ns)
	cp -a "$src" "$scratch/plaincopy"
	sync -f "$scratch/plaincopy"
	import_ms_plain=$(ms_since "$t")
	rm -rf "$scratch/plaincopy"
fi

declare -A top=([plain]=$src [gocryptfs]=$gmnt [enclave-direct]=$mnt/small/1
	[enclave-kernel]=$mnt/smallk/1 [enclave-before]=$mnt0/small/1)
declare -A backing=([plain]=$src [gocryptfs]=$gcipher [enclave-direct]=$store/packs
	[enclave-kernel]=$store/packs [enclave-before]=$store0/packs)
declare -A V=()   # V[figure,system] = "files/s MB/s" per round, space separated pairs

# --cpu: what one epoch cost, into $scratch/cpu/<figure>.<system> (one line per round): CPU
# microseconds per file of the readers, of the system's daemon and of the whole machine, then
# FUSE requests per file: all, and each kind of ops_kinds.
ops_names=(LOOKUP GETATTR OPEN READ RELEASE FLUSH)
ops_codes=(1 3 14 15 18 25)
mkdir -p "$scratch/cpu"
fuse_events=0
if ((docpu)); then
	# perf reads tracepoints through tracefs; the request tracepoint is in kernels from 6.16.
	if ! mountpoint -q /sys/kernel/tracing && mount -t tracefs nodev /sys/kernel/tracing; then
		made_tracefs=1
	fi
	if [[ -d /sys/kernel/tracing/events/fuse/fuse_request_send ]]; then
		fuse_events=1
	else
		echo "bench-small: no fuse:fuse_request_send tracepoint in this kernel: requests not counted" >&2
	fi
fi
daemon_pid() {   # system
	case "$1" in
	enclave-direct | enclave-kernel) echo "$pid" ;;
	enclave-before) echo "$pid0" ;;
	gocryptfs) pgrep -o -f -- "$gcipher" || true ;;
	esac
}
mount_of() {     # system: its FUSE mount point, none for plain
	case "$1" in
	enclave-direct | enclave-kernel) echo "$mnt" ;;
	enclave-before) echo "$mnt0" ;;
	gocryptfs) echo "$gmnt" ;;
	esac
}
proc_ticks() { [[ -n $1 ]] && awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" || echo 0; }
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }   # no idle, iowait, steal
meas_perf= meas_d0= meas_b0= meas_dpid=
meas_begin() {   # system
	((docpu)) || return 0
	local m dev conn ev=()
	meas_dpid=$(daemon_pid "$1") meas_perf=
	m=$(mount_of "$1")
	if [[ -n $m ]] && ((fuse_events)); then
		# The connection is the mount's anonymous device: kernel dev_t (major << 20 | minor).
		dev=$(awk -v m="$m" '$5 == m { print $3 }' /proc/self/mountinfo)
		conn=$(((${dev%%:*} << 20) | ${dev##*:}))
		ev=(-e fuse:fuse_request_send --filter "connection == $conn")
		for op in "${ops_codes[@]}"; do
			ev+=(-e fuse:fuse_request_send --filter "connection == $conn && opcode == $op")
		done
		perf stat -a -x, -o "$scratch/perf.out" "${ev[@]}" >/dev/null 2>&1 &
		meas_perf=$!
		echo "$meas_perf" >"$scratch/perf.pid"   # for cleanup: this runs in a subshell
		sleep 0.5   # the counters are set up before the epoch starts
	fi
	meas_d0=$(proc_ticks "$meas_dpid")
	meas_b0=$(busy_ticks)
}
meas_end() {     # figure system readers-cpu-seconds
	((docpu)) || return 0
	local d1 b1 hz reqs=()
	d1=$(proc_ticks "$meas_dpid")
	b1=$(busy_ticks)
	hz=$(getconf CLK_TCK)
	if [[ -n $meas_perf ]]; then
		kill -INT "$meas_perf"
		wait "$meas_perf" || true
		meas_perf=
		rm -f "$scratch/perf.pid"
		mapfile -t reqs < <(awk -F, '$3 ~ /fuse_request_send/ { print $1 }' "$scratch/perf.out")
	fi
	awk -v f="$files" -v r="$3" -v d=$((d1 - meas_d0)) -v b=$((b1 - meas_b0)) -v hz="$hz" \
		-v q="${reqs[*]}" 'BEGIN {
		printf "%.0f %.0f %.0f", r * 1e6 / f, d * 1e6 / hz / f, b * 1e6 / hz / f
		n = split(q, a, " ")
		for (i = 1; i <= 7; i++) printf " %s", i <= n ? sprintf("%.2f", a[i] / f) : "-"
		print ""
	}' >>"$scratch/cpu/$1.$2"
}

# One epoch of a reader; prints "files/s MB/s".
rate() { awk -v f="$1" -v b="$2" -v s="$3" 'BEGIN { printf "%.0f %.0f\n", f / s, b / s / 1e6 }'; }
inorder() {    # top figure system
	local t n c
	meas_begin "$3"
	t=$(now_ns)
	/usr/bin/time -f '%U %S' -o "$scratch/time.out" runuser -u "$user" -- \
		bash -c 'cd "$1" && find . -type f -print0 | xargs -0 cat' _ "$1" >/dev/null
	n=$(($(now_ns) - t))
	c=$(awk '{ print $1 + $2 }' "$scratch/time.out")
	meas_end "$2" "$3" "$c"
	rate "$files" "$data_bytes" "$(awk -v n="$n" 'BEGIN { print n / 1e9 }')"
}
shuffled() {   # top seed figure system
	local out
	meas_begin "$4"
	out=$(as python3 "$scratch/loader.py" "$1" "$scratch/list" "$workers" "$2")
	read -r nf nb dt c <<<"$out"
	meas_end "$3" "$4" "$c"
	((nb == data_bytes)) || { echo "bench-small: shuffled reader read $nb bytes of $data_bytes" >&2; exit 1; }
	rate "$nf" "$nb" "$dt"
}
prepare() {    # system: empty every cache, then read the system's backing data back in
	drop
	find "${backing[$1]}" -type f -print0 | xargs -0 cat >/dev/null
}

echo "bench-small: reading ($rounds rounds, systems in turn)" >&2
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 0; r < rounds; r++)); do
	order=("${systems[@]:r % ${#systems[@]}}" "${systems[@]:0:r % ${#systems[@]}}")
	for s in "${order[@]}"; do
		echo "bench-small: round $((r + 1)): $s" >&2
		prepare "$s"
		V[io1,$s]+="$(inorder "${top[$s]}" io1 "$s"),"
		V[io2,$s]+="$(inorder "${top[$s]}" io2 "$s"),"
		prepare "$s"
		if ((doperf && r == 0)) && [[ $s != plain ]]; then
			# The whole machine: the readers' side of the FUSE requests is kernel time of
			# theirs, not of the daemon.
			mkdir -p "$perf_dir"
			perf record -q -a -g -o "$perf_dir/small-shuffled-$s.data" >/dev/null 2>&1 &
			perf_pid=$!
			sleep 0.5
		fi
		V[sh1,$s]+="$(shuffled "${top[$s]}" $((2 * r + 1)) sh1 "$s"),"
		if [[ -n $perf_pid ]]; then
			kill -INT "$perf_pid"
			wait "$perf_pid" || true
			perf_pid=
			perf report -i "$perf_dir/small-shuffled-$s.data" --stdio --no-children -g none \
				--percent-limit 0.3 --sort comm,dso,sym 2>/dev/null | grep -v '^#' |
				grep -v '^$' | head -150 >"$perf_dir/small-shuffled-$s.txt" || true
			perf report -i "$perf_dir/small-shuffled-$s.data" --stdio --no-children -g none \
				--sort comm 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30 \
				>"$perf_dir/small-shuffled-$s.comm.txt" || true
		fi
		V[sh2,$s]+="$(shuffled "${top[$s]}" $((2 * r + 2)) sh2 "$s"),"
	done
done

# The median round by files/s, and its MB/s.
declare -A F=() M=()
for k in "${!V[@]}"; do
	read -r F[$k] M[$k] < <(tr ',' '\n' <<<"${V[$k]}" | grep . | sort -n |
		awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }')
done
cell() { [[ -n ${F[$1,$2]:-} ]] && echo "${F[$1,$2]} / ${M[$1,$2]}" || echo "-"; }
ratio() {
	[[ -n ${F[$1,$2]:-} && -n ${F[$1,gocryptfs]:-} && ${F[$1,gocryptfs]} != 0 ]] || { echo "-"; return; }
	awk -v a="${F[$1,$2]}" -v b="${F[$1,gocryptfs]}" 'BEGIN { printf "%.2f", a / b }'
}
rows=("io1|one process in order, epoch 1" "io2|one process in order, epoch 2"
	"sh1|$workers workers shuffled, epoch 1" "sh2|$workers workers shuffled, epoch 2")
table() {
	echo "| files/s / MB/s | plain | gocryptfs | enclave cache=direct | enclave cache=kernel | direct / gocryptfs | kernel / gocryptfs |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	for row in "${rows[@]}"; do
		IFS='|' read -r key label <<<"$row"
		printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(cell "$key" plain)" \
			"$(cell "$key" gocryptfs)" "$(cell "$key" enclave-direct)" \
			"$(cell "$key" enclave-kernel)" "$(ratio "$key" enclave-direct)" \
			"$(ratio "$key" enclave-kernel)"
	done
	imp() { [[ -n $1 ]] && awk -v f="$files" -v b="$data_bytes" -v ms="$1" \
		'BEGIN { printf "%.0f / %.0f", f * 1000 / ms, b / ms / 1000 }' || echo "-"; }
	printf '| import / copy-in incl. sync | %s | %s | %s | - | %s | - |\n' "$(imp "$import_ms_plain")" \
		"$(imp "$import_ms_gocryptfs")" "$(imp "$import_ms_enclave")" \
		"$([[ -n $import_ms_enclave && -n $import_ms_gocryptfs ]] &&
			awk -v a="$import_ms_gocryptfs" -v b="$import_ms_enclave" 'BEGIN { printf "%.2f", a / b }' || echo -)"
}
if [[ -n $before_rev ]]; then
	# The change's cost: before and after side by side, each the median of the rounds.
	bratio() {
		[[ -n ${F[$1,enclave-direct]:-} && -n ${F[$1,enclave-before]:-} && ${F[$1,enclave-before]} != 0 ]] ||
			{ echo "-"; return; }
		awk -v a="${F[$1,enclave-direct]}" -v b="${F[$1,enclave-before]}" 'BEGIN { printf "%.2f", a / b }'
	}
	table() {
		echo "| files/s / MB/s | before: $(git rev-parse --short "$bsha") | after: $(git rev-parse --short HEAD) | after / before (files/s) |"
		echo "|---|---:|---:|---:|"
		for row in "${rows[@]}"; do
			IFS='|' read -r key label <<<"$row"
			printf '| %s | %s | %s | %s |\n' "$label" "$(cell "$key" enclave-before)" \
				"$(cell "$key" enclave-direct)" "$(bratio "$key")"
		done
	}
	rounds_of() {  # every round's files/s of figure $1, system $2
		tr ',' '\n' <<<"${V[$1,$2]:-}" | awk 'NF { printf "%s%s", s, $1; s = ", " }'
	}
	per_round() {
		for row in "${rows[@]}"; do
			IFS='|' read -r key label <<<"$row"
			echo "- $label: before $(rounds_of "$key" enclave-before); after $(rounds_of "$key" enclave-direct)"
		done
	}
fi
cost_table() {  # --cpu: the median of every column over the rounds
	local key label sys
	echo "| per file (median of $rounds rounds) | system | CPU µs: readers | daemon | whole machine | FUSE requests | $(printf '%s | ' "${ops_names[@]}")"
	echo "|---|---|---:|---:|---:|---:|$(printf -- '---:|%.0s' "${ops_names[@]}")"
	for row in "${rows[@]}"; do
		IFS='|' read -r key label <<<"$row"
		for sys in "${systems[@]}"; do
			[[ -f $scratch/cpu/$key.$sys ]] || continue
			awk -v label="$label" -v sys="$sys" '
				{ for (i = 1; i <= NF; i++) v[i, NR] = $i; nf = NF; n = NR }
				END {
					printf "| %s | %s |", label, sys
					for (i = 1; i <= nf; i++) {
						m = 0
						for (j = 1; j <= n; j++) a[j] = v[i, j]
						for (j = 2; j <= n; j++)   # insertion sort, numbers or "-"
							for (k = j; k > 1 && a[k - 1] + 0 > a[k] + 0; k--) {
								t = a[k]; a[k] = a[k - 1]; a[k - 1] = t
							}
						printf " %s |", a[int((n + 1) / 2)]
					}
					print ""
				}' "$scratch/cpu/$key.$sys"
		done
	done
}
machine="$(lscpu | awk -F': +' '/^Model name/ { print $2 }'), $(nproc) cores, \
$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), \
$(. /etc/os-release && echo "$PRETTY_NAME")"
tbl=$(table)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
cpu_opt= cost=
if ((docpu)); then
	cpu_opt=" --cpu"
	cost="

CPU time and FUSE requests per file (\`--cpu\`): the readers' CPU (user + system: the readers'
side of every FUSE request is kernel time of theirs), the file system daemon's (all its threads;
none for plain), the whole machine's (/proc/stat, every process, this benchmark's and the other
users' alike), and the requests the kernel sent the daemon (the \`fuse:fuse_request_send\`
tracepoint, counted by \`perf stat\` for this mount only).

$(cost_table)"
fi
if [[ -n $before_rev ]]; then
	report=$(
		cat <<EOF
**Run:** $(date -u +%Y-%m-%dT%H:%M:%SZ) on $machine, load average $load_start at the
start of the reads and $load_end at the end (a machine shared with other builds: compare the ratios). Release
builds of both commits. **Before:** $before_desc. **After:** $(git rev-parse --short HEAD 2>/dev/null || echo '?')
(the working tree). Each serves the same $files files (100 class
directories, 4-250 KB, $((data_bytes / 1000000)) MB) from its own store and mount, cache=direct,
default settings${enclaved_args[*]:+ plus ${enclaved_args[*]}}; each figure is the median of $rounds
rounds that read both in turn, the order swapped each round.

**Command:** \`scripts/bench-small.sh --before $before_rev --files $files --rounds $rounds --workers $workers$cpu_opt\` (as root).

$tbl$cost

Every round's files/s:

$(per_round)
EOF
	)
else
report=$(
	cat <<EOF
**Run:** $(date -u +%Y-%m-%dT%H:%M:%SZ) at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $machine,
load average $load_start at the start of the reads and $load_end at the end (a machine shared with
other builds: compare the ratios, each the median of $rounds rounds that read every system in turn, order rotated each
round). Release build. Data: $files files in 100 class directories, 4-250 KB
($((data_bytes / 1000000)) MB, $((data_bytes / files / 1000)) KB on average). Enclave: default
settings${enclaved_args[*]:+ plus ${enclaved_args[*]}}, 64 KiB chunks, AES-256-GCM; gocryptfs
$(gocryptfs -version 2>/dev/null | awk '{ print $2 }' | head -1) (AES-256-GCM), default options.

**Command:** \`scripts/bench-small.sh --files $files --rounds $rounds --workers $workers$cpu_opt\` (as root).
Readers run as an unprivileged granted user. In order: \`find . -type f -print0 | xargs -0 cat\`;
shuffled: $workers python3 \`multiprocessing\` workers, each file opened, read whole, closed. Epoch 1
after \`drop_caches\` and the system's backing data read back in; epoch 2 straight after.

$tbl$cost
EOF
)
fi
echo
echo "$report"
if ((dodoc)); then
	doc=$root/docs/PERFORMANCE.md
	begin='<!-- bench-small.sh: begin -->'
	end='<!-- bench-small.sh: end -->'
	title='Small files (scripts/bench-small.sh)'
	if [[ -n $before_rev ]]; then
		begin='<!-- bench-small.sh --before: begin -->'
		end='<!-- bench-small.sh --before: end -->'
		title='Small files, before and after a change (scripts/bench-small.sh --before)'
	fi
	if ! grep -qF "$begin" "$doc"; then
		printf '\n## %s\n\n%s\n%s\n' "$title" "$begin" "$end" >>"$doc"
	fi
	REPORT=$report python3 - "$doc" "$begin" "$end" <<'EOF'
import os, sys
path, begin, end = sys.argv[1:4]
text = open(path).read()
a = text.index(begin) + len(begin)
b = text.index(end)
open(path, "w").write(text[:a] + "\n" + os.environ["REPORT"] + "\n" + text[b:])
EOF
	echo "bench-small: wrote the table into docs/PERFORMANCE.md" >&2
fi
