# shellcheck shell=bash disable=SC2034,SC2154
# bench-lib.sh: what the scripts/bench-*.sh share. Sourced, never run; the script sets `bench` to
# its name first (messages begin "$bench: "), and is at the top of the tree when it calls
# bench_build and bench_build_before.
#
# Clean-up: bench_scratch makes the scratch directory and installs bench_cleanup on exit, error
# and signal. bench_cleanup stops the processes in ${pids[@]} (a client still running, or more
# daemons), then the daemon in $pid (TERM, then waits), unmounts $mnt and ${mnts[@]} where
# mounted, calls bench_cleanup_more if the script defines one (its own extras), removes $scratch
# and exits with the script's status.

# The help: the script's header comment, from line 2 to `set -euo`.
bench_usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }

# A usage error: the message, exit 2.
bench_usage_error() {
	echo "$bench: $*" >&2
	exit 2
}

# bench_positive OPTION VALUE: VALUE is a positive decimal number, or a usage error naming OPTION.
bench_positive() {
	case "$2" in '' | *[!0-9]* | 0) bench_usage_error "$1 takes a positive number" ;; esac
}

bench_need_root() {
	[[ $(id -u) == 0 ]] || { echo "$bench: run as root" >&2; exit 1; }
}

# GNU time (/usr/bin/time), for the peak memory and CPU of enclavectl.
bench_need_time() {
	dpkg -s time >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
}

# bench_build DIR TARGET...: this tree's targets, Release, in DIR (scripts/deps.sh first).
bench_build() {
	local dir=$1
	shift
	echo "$bench: building (Release)" >&2
	bash scripts/deps.sh >/dev/null
	cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$dir" -j 2 --target "$@" >/dev/null
}

# bench_build_before REV: enclaved and enclavectl of commit REV, from git's own objects (no
# checkout, no worktree), built (Release) once per commit in build-bench-before/<commit>/{src,build};
# sets bench_before_dir to that build directory and bench_before_name to "<short commit> (before)".
bench_build_before() {
	local sha dir
	sha=$(git rev-parse --verify "$1^{commit}")
	dir=$PWD/build-bench-before/$sha
	if [[ ! -x $dir/build/daemon/enclaved || ! -x $dir/build/cli/enclavectl ]]; then
		echo "$bench: building $1 ($sha) in $dir (Release)" >&2
		rm -rf "$dir"
		mkdir -p "$dir/src"
		git archive "$sha" | tar -x -C "$dir/src"
		cmake -S "$dir/src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
		cmake --build "$dir/build" -j 2 --target enclaved enclavectl >/dev/null
	fi
	bench_before_dir=$dir/build
	bench_before_name="$(git rev-parse --short "$sha") (before)"
}

# Stop the daemon in $pid (if running) and unmount $mnt (if mounted).
bench_stop_daemon() {
	if [[ -n ${pid:-} ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" || true
	fi
	pid=
	[[ -n ${mnt:-} ]] && grep -q " $mnt " /proc/self/mountinfo && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
	return 0
}

bench_cleanup() {
	local rc=$? p m
	set +e
	for p in "${pids[@]}"; do
		kill -0 "$p" 2>/dev/null && { kill -TERM "$p"; wait "$p"; }
	done
	bench_stop_daemon
	for m in "${mnts[@]}"; do
		grep -q " $m " /proc/self/mountinfo && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
	done
	declare -F bench_cleanup_more >/dev/null && bench_cleanup_more
	[[ -n ${scratch:-} ]] && rm -rf "$scratch"
	exit "$rc"
}

# bench_scratch: scratch=/var/tmp/enclave-<name>.XXXXXX (or in $scratch_parent if the script
# sets it), with bench_cleanup installed.
bench_scratch() {
	scratch=$(mktemp -d "${scratch_parent:-/var/tmp}/enclave-$bench.XXXXXX")
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

# A random passphrase in $scratch/pass (0600).
bench_passphrase() {
	head -c 32 /dev/urandom | base64 >"$scratch/pass"
	chmod 0600 "$scratch/pass"
}

# bench_daemon_start BUILD STORE: a fresh store at STORE (steward root, no approvals) and
# BUILD's enclaved serving it on $mnt with $scratch/pass, its pid in $pid, once it answers
# (its stderr in $scratch/enclaved.log, shown if it dies first).
bench_daemon_start() {
	local b=$1 store=$2
	rm -rf "$store"
	"$b/cli/enclavectl" init --store "$store" --passphrase-file "$scratch/pass" \
		--steward user:root --approvals 0 >/dev/null
	"$b/daemon/enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/pass" \
		2>"$scratch/enclaved.log" &
	pid=$!
	for _ in $(seq 1 200); do
		"$b/cli/enclavectl" --store "$store" status >/dev/null 2>&1 && break
		kill -0 "$pid" 2>/dev/null || { cat "$scratch/enclaved.log" >&2; exit 1; }
		sleep 0.1
	done
}

# bench_page_cache cold|warm DIR: drop the page cache, or read every file of DIR into it.
bench_page_cache() {
	sync
	if [[ $1 == cold ]]; then
		echo 3 >/proc/sys/vm/drop_caches
	else
		find "$2" -type f -print0 | xargs -0 cat >/dev/null
	fi
}

# bench_doc_rows NAME TITLE TABLE ROWS: ROWS (lines, each ending in a newline) into
# docs/PERFORMANCE.md before the "<!-- NAME: end -->" marker. When the markers are not there yet,
# a section is appended first: TITLE (its heading, and any text), the begin marker, TABLE (the
# table's header and separator lines) and the end marker.
bench_doc_rows() {
	local doc=${root:-.}/docs/PERFORMANCE.md begin="<!-- $1: begin -->" end="<!-- $1: end -->"
	if ! grep -qF "$begin" "$doc"; then
		printf '\n%s\n\n%s\n%s\n%s\n' "$2" "$begin" "$3" "$end" >>"$doc"
	fi
	ROWS=$4 python3 - "$doc" "$end" <<'PY'
import os, sys
path, end = sys.argv[1:3]
text = open(path).read()
b = text.index(end)
open(path, "w").write(text[:b] + os.environ["ROWS"] + text[b:])
PY
}
