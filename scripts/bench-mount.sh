#!/usr/bin/env bash
# A first look at the mounted read path, side by side with the plain files it was imported from:
# sequential 1 MiB reads of one large file (warm: the plain file and the packs in the page cache),
# and the cost of an open (cat of many small files, so open + read + close + audit records each).
# Also the import rate and the daemon's peak RSS. Not part of CI (timings on a shared machine are
# noisy): compare the ratios within one run.
#
# Usage: scripts/bench-mount.sh [SIZE_MIB] [SMALL_FILES]      (as root; defaults 1024 and 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
bench="bench-mount"
. scripts/bench-lib.sh

size_mib=${1:-1024}
small=${2:-2000}
case "$size_mib$small" in *[!0-9]*) echo "usage: scripts/bench-mount.sh [SIZE_MIB] [SMALL_FILES]" >&2; exit 2 ;; esac
bench_need_root

bash scripts/deps.sh >/dev/null
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j "$(nproc)" --target enclaved enclavectl >/dev/null
enclaved=$PWD/build-bench/daemon/enclaved
enclavectl=$PWD/build-bench/cli/enclavectl

user=enclave-bench-reader
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
bench_scratch
chmod 0755 "$scratch"
src=$scratch/src
mnt=$scratch/mnt
store=$scratch/store
mkdir -p "$src/small" "$mnt"
pid=

head -c $((size_mib << 20)) /dev/urandom >"$src/big.bin"
for i in $(seq 1 "$small"); do head -c 4096 /dev/urandom >"$src/small/f$i"; done
chmod -R a+rX "$src"
bench_passphrase
"$enclavectl" init --store "$store" --passphrase-file "$scratch/pass" --steward user:root --approvals 0 >/dev/null
"$enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/pass" 2>"$scratch/log" &
pid=$!
for _ in $(seq 1 100); do "$enclavectl" --store "$store" status >/dev/null 2>&1 && break; sleep 0.1; done
ctl() { "$enclavectl" --store "$store" "$@"; }

t0=$(date +%s.%N)
ctl -q dataset import data "$src" >/dev/null
t1=$(date +%s.%N)
ctl grant add --user "$user" --dataset data --purpose benchmark --expires +1h >/dev/null
as() { runuser -u "$user" -- "$@"; }

# dd's last line: "N bytes (...) copied, S s, R MB/s"; keep the rate as MB/s.
rate() { as dd if="$1" of=/dev/null bs=1M 2>&1 | awk -F', ' '/copied/ { print $NF }'; }
# Warm both: read each once before measuring.
as cat "$src/big.bin" >/dev/null
as cat "$mnt/data/1/big.bin" >/dev/null
plain_seq=$(rate "$src/big.bin")
mount_seq=$(rate "$mnt/data/1/big.bin")

opens() {
	local dir=$1 s e
	s=$(date +%s%N)
	as find "$dir" -type f -exec cat {} + >/dev/null
	e=$(date +%s%N)
	echo $(((e - s) / small / 1000))
}
opens "$src/small" >/dev/null
opens "$mnt/data/1/small" >/dev/null
plain_open=$(opens "$src/small")
mount_open=$(opens "$mnt/data/1/small")
rss=$(awk '/VmHWM/ { print $2 " " $3 }' "/proc/$pid/status")
records=$(wc -l <"$store/audit/audit.log")
import_rate=$(awk -v b=$(((size_mib << 20) + small * 4096)) -v s="$t0" -v e="$t1" \
	'BEGIN { printf "%.0f MB/s", b / (e - s) / 1e6 }')

cat <<EOF
bench-mount: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(uname -r)
  what                                   plain file        enclave mount
  sequential 1 MiB reads, warm ($size_mib MiB)  $plain_seq   $mount_seq
  per file, open+read 4 KiB+close ($small)   $plain_open us        $mount_open us
  import (encrypt + write + fsync)                           $import_rate
  daemon peak RSS while serving                              $rss
  audit records written                                      $records
EOF
