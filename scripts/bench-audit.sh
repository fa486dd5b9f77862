#!/usr/bin/env bash
# Opens per second through the mount with 1, 8 and 32 concurrent openers, and the open latency
# (p50, p99), with the audit log's group commit and, side by side in the same run, with one write
# and fdatasync per record (enclaved --audit-sync-each). Every open and every close appends a
# record that is durable before the call returns, so this is the audit log's cost as readers meet
# it. Not part of CI: the machine is shared and noisy, so compare within one run.
#
# Usage: scripts/bench-audit.sh [SECONDS_PER_POINT]     (as root; default 5)
# Writes the table into docs/PERFORMANCE.md (section "Audit log: group commit").
set -euo pipefail
cd "$(dirname "$0")/.."
bench="bench-audit"
. scripts/bench-lib.sh

secs=${1:-5}
case "$secs" in '' | *[!0-9]*) echo "usage: scripts/bench-audit.sh [SECONDS_PER_POINT]" >&2; exit 2 ;; esac
bench_need_root

bash scripts/deps.sh >/dev/null
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j "$(nproc)" --target enclaved enclavectl >/dev/null
enclaved=$PWD/build-bench/daemon/enclaved
enclavectl=$PWD/build-bench/cli/enclavectl

bench_scratch
chmod 0755 "$scratch"
pid=
mnt=

mkdir -p "$scratch/src"
for i in $(seq 1 200); do head -c 4096 /dev/urandom >"$scratch/src/f$i"; done
bench_passphrase

# N processes open and close files of DIR for S seconds; prints "opens_per_s p50_us p99_us".
cat >"$scratch/opener.py" <<'PY'
import multiprocessing, os, sys, time

def work(arg):
    d, secs = arg
    names = sorted(os.listdir(d))
    lat, i = [], 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        p = os.path.join(d, names[i % len(names)])
        i += 1
        t = time.perf_counter_ns()
        fd = os.open(p, os.O_RDONLY)
        lat.append(time.perf_counter_ns() - t)
        os.close(fd)
    return lat

if __name__ == "__main__":
    d, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    t0 = time.monotonic()
    with multiprocessing.Pool(n) as pool:
        lats = pool.map(work, [(d, secs)] * n)
    wall = time.monotonic() - t0
    all_ = sorted(x for l in lats for x in l)
    q = lambda f: all_[min(len(all_) - 1, int(f * len(all_)))] / 1000
    print(f"{len(all_) / secs:.0f} {q(0.50):.0f} {q(0.99):.0f}")
PY

declare -A res
for mode in group each; do
	store=$scratch/store-$mode
	mnt=$scratch/mnt-$mode
	mkdir -p "$mnt"
	"$enclavectl" init --store "$store" --passphrase-file "$scratch/pass" --steward user:root \
		--approvals 0 --test-kdf >/dev/null 2>&1
	# Both strict (every record synced before its call returns), as this comparison was made;
	# the default durability, session, syncs a session's first open only (docs/AUDIT.md 5.1,
	# measured by scripts/bench-small.sh).
	extra=(--audit-durability strict)
	[[ $mode == each ]] && extra=(--audit-sync-each)
	"$enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/pass" "${extra[@]}" \
		2>"$scratch/log-$mode" &
	pid=$!
	for _ in $(seq 1 100); do "$enclavectl" --store "$store" status >/dev/null 2>&1 && break; sleep 0.1; done
	"$enclavectl" --store "$store" -q dataset import bench "$scratch/src" >/dev/null
	"$enclavectl" --store "$store" grant add --user root --dataset bench --purpose benchmark \
		--expires +1h >/dev/null
	for n in 1 8 32; do
		res[$mode,$n]=$(python3 "$scratch/opener.py" "$mnt/bench/1" "$n" "$secs")
		echo "bench-audit: $mode, $n openers: ${res[$mode,$n]} (opens/s p50_us p99_us)" >&2
	done
	records=$(wc -l <"$store/audit/audit.log")
	kill -TERM "$pid"
	wait "$pid" || true
	pid=
	echo "bench-audit: $mode: $records records written" >&2
done
mnt=

table=$(
	echo "| openers | group commit: opens/s | p50 | p99 | one fdatasync per record: opens/s | p50 | p99 | ratio |"
	echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
	for n in 1 8 32; do
		read -r go gp50 gp99 <<<"${res[group,$n]}"
		read -r eo ep50 ep99 <<<"${res[each,$n]}"
		ratio=$(awk -v a="$go" -v b="$eo" 'BEGIN { printf "%.1fx", (b > 0 ? a / b : 0) }')
		echo "| $n | $go | ${gp50} µs | ${gp99} µs | $eo | ${ep50} µs | ${ep99} µs | $ratio |"
	done
)
echo "$table"

section=$(cat <<MD
<!-- bench-audit:begin -->
## Audit log: group commit (\`scripts/bench-audit.sh\`)

Run on $(date -u +%Y-%m-%d), $(lscpu | awk -F': *' '/Model name/ { print $2; exit }'), $(nproc) cores,
kernel $(uname -r), disk under $(df --output=source /var/tmp | tail -1), ${secs} s per point.
Each open and each close appends an audit record that is durable (fdatasync) before the call
returns; openers run as separate processes, each opening and closing the 200 files of a dataset
in turn. "One fdatasync per record" is the same daemon with \`--audit-sync-each\`.

$table
<!-- bench-audit:end -->
MD
)
doc=docs/PERFORMANCE.md
if grep -q '<!-- bench-audit:begin -->' "$doc"; then
	python3 - "$doc" "$section" <<'PY'
import re, sys
p, new = sys.argv[1], sys.argv[2]
s = open(p).read()
s = re.sub(r"<!-- bench-audit:begin -->.*?<!-- bench-audit:end -->", lambda m: new, s, flags=re.S)
open(p, "w").write(s)
PY
else
	printf '\n%s\n' "$section" >>"$doc"
fi
echo "bench-audit: written to $doc" >&2
