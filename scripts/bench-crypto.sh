#!/usr/bin/env bash
# Object encrypt/decrypt throughput, next to `openssl speed` on the same machine, in one run.
# Prints a Markdown table (median of RUNS runs per figure) for docs/PERFORMANCE.md.
# Usage: scripts/bench-crypto.sh [--mib N] [--runs N] [--dir DIR]
#   --mib   size of the benchmark object (default 1024)
#   --runs  repetitions; the median is reported (default 3)
#   --dir   scratch directory for the store, on the disk to measure (default: build-bench/)
set -euo pipefail
cd "$(dirname "$0")/.."

mib=1024 runs=3 dir=
while (($#)); do
	case $1 in
		--mib) mib=$2; shift 2 ;;
		--runs) runs=$2; shift 2 ;;
		--dir) dir=$2; shift 2 ;;
		-h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) echo "usage: scripts/bench-crypto.sh [--mib N] [--runs N] [--dir DIR]" >&2; exit 2 ;;
	esac
done

bash scripts/deps.sh >/dev/null
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench --target bench_object >/dev/null
dir=${dir:-$PWD/build-bench}
mkdir -p "$dir"
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

for ((i = 0; i < runs; i++)); do
	for cipher in aes-256-gcm chacha20-poly1305; do
		out=$(build-bench/tests/bench_object --cipher "$cipher" --mib "$mib" --dir "$dir")
		rm -rf "$(awk '/^scratch:/ {print $2}' <<<"$out")"
		grep -v -e '^path' -e '^scratch:' <<<"$out" |
			awk '{ n = NF; printf "%s|%s|%s|%s\n", $(n-2), substr($0, 1, 22), $(n-1), $n }' >>"$raw"
	done
	# openssl speed: one core, 64 KiB and 1 MiB buffers, encryption.
	for evp in aes-256-gcm chacha20-poly1305; do
		for bytes in 65536 1048576; do
			kbs=$(openssl speed -elapsed -seconds 3 -bytes "$bytes" -evp "$evp" 2>/dev/null |
				awk 'END { v = $NF; sub(/k$/, "", v); print v }')
			mbs=$(awk -v k="$kbs" 'BEGIN { printf "%.0f", k / 1000 }')
			printf '%s|openssl speed %-8s|%s|%s\n' "$evp" "$((bytes >> 10))K" "$mbs" "$mbs" >>"$raw"
		done
	done
done

echo "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)"
echo "Object: ${mib} MiB, one thread; median of ${runs} runs; $(date -u +%Y-%m-%d)"
echo
echo "| path | cipher | MB/s (wall) | MB/s per core (CPU time) |"
echo "|---|---|---:|---:|"
# Median per (cipher, path), in portable awk (no gawk asort).
awk -F'|' '
	function median(list,   a, n, i, j, t) {
		n = split(list, a, " ")
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return a[int((n + 1) / 2)]
	}
	{
		k = $1 "|" $2
		if (!(k in w)) order[++nk] = k
		w[k] = w[k] " " $3; c[k] = c[k] " " $4
	}
	END {
		for (i = 1; i <= nk; i++) {
			split(order[i], kc, "|"); path = kc[2]; sub(/ +$/, "", path)
			printf "| %s | %s | %s | %s |\n", path, kc[1], median(w[order[i]]), median(c[order[i]])
		}
	}' "$raw"
