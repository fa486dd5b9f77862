#!/usr/bin/env bash
# Crypt4GH import throughput against a plaintext import of the same data (issue 18: at least
# 80 %). One file of --size bytes (default 1 GiB) is imported as it is and as a .c4gh file
# encrypted to the store's site key (by tests/interop/c4ghtool), --rounds times each, alternating,
# into a fresh store served by enclaved; the ratio is of the medians, measured side by side in one
# run. The imported Crypt4GH file is read back through the mount and compared with the original
# (SHA-256), then exported for a researcher's key --rounds times (the median reported, and its
# ratio to the plaintext import's time in the same run) and the first export decrypted by
# tests/interop/crypt4gh_ref.py (SHA-256), so the 1 GiB cases are checked end to end here rather
# than in CI. Writes a line into docs/PERFORMANCE.md between the "bench-c4gh.sh" markers.
#
# Not part of CI. Run as root. Options:
#   --size BYTES   the file [1073741824]
#   --rounds N     imports of each kind, and exports [3]
#   --no-doc       leave docs/PERFORMANCE.md alone
set -euo pipefail
bench="bench-c4gh"
. "$(dirname "$0")/bench-lib.sh"
size=1073741824 rounds=3 dodoc=1
while (($#)); do
	case "$1" in
	-h | --help) bench_usage; exit 0 ;;
	--size) size=${2:?}; shift 2 ;;
	--rounds) rounds=${2:?}; shift 2 ;;
	--no-doc) dodoc=0; shift ;;
	*) bench_usage_error "unknown option '$1' (see --help)" ;;
	esac
done
case "$size$rounds" in '' | *[!0-9]*) bench_usage_error "--size and --rounds take numbers" ;; esac
bench_need_root
cd "$(dirname "$0")/.."
root=$PWD
build=build-bench

bench_build "$build" enclaved enclavectl interop_c4ghtool
enclavectl=$root/$build/cli/enclavectl
c4ghtool=$root/$build/tests/interop_c4ghtool

bench_scratch
mnt=$scratch/mnt store=$scratch/store
mkdir -p "$mnt" "$scratch/plain" "$scratch/c4gh"
pid=
bench_passphrase
bench_daemon_start "$root/$build" "$store"
"$enclavectl" --store "$store" -q crypt4gh keygen --out "$scratch/site.pub" >/dev/null

echo "bench-c4gh: generating $size bytes and encrypting them to the site key" >&2
head -c "$size" /dev/urandom >"$scratch/plain/data"
"$c4ghtool" encrypt "$scratch/site.pub" <"$scratch/plain/data" >"$scratch/c4gh/data.c4gh"
want=$(sha256sum <"$scratch/plain/data" | cut -d' ' -f1)

# One import; its wall time in ms. The source stays in the page cache: both kinds read from
# memory, so what differs is the work on the data (decryption), not the disk.
import_ms() {
	local t0
	cat "$2"/* >/dev/null
	t0=$(date +%s%N)
	"$enclavectl" --store "$store" -q dataset import "$1" "$2" >/dev/null
	echo $((($(date +%s%N) - t0) / 1000000))
}
plain=() c4=()
for r in $(seq 1 "$rounds"); do
	if ((r % 2)); then
		plain+=("$(import_ms "plain-$r" "$scratch/plain")")
		c4+=("$(import_ms "c4gh-$r" "$scratch/c4gh")")
	else
		c4+=("$(import_ms "c4gh-$r" "$scratch/c4gh")")
		plain+=("$(import_ms "plain-$r" "$scratch/plain")")
	fi
	echo "bench-c4gh: round $r: plaintext ${plain[-1]} ms, Crypt4GH ${c4[-1]} ms" >&2
done

# The Crypt4GH import read back through the mount, byte for byte.
"$enclavectl" --store "$store" -q grant add --user root --dataset c4gh-1 --purpose "bench check" \
	--expires +1d >/dev/null
got=$(sha256sum <"$mnt/c4gh-1/latest/data" | cut -d' ' -f1)
[[ $got == "$want" ]] || { echo "bench-c4gh: the imported plaintext differs ($got, want $want)" >&2; exit 1; }

# The 1 GiB export: the imported file sent out as Crypt4GH for a researcher's key (the store needs
# no approval), --rounds times; the first decrypted by the independent implementation and
# compared, every one of the size a Crypt4GH file of it must have.
python3 tests/interop/crypt4gh_ref.py keygen "$scratch/r.sec" "$scratch/r.pub"
nseg=$(((size + 65535) / 65536))
want_len=$((16 + 108 + size + 28 * nseg))
xs=()
for r in $(seq 1 "$rounds"); do
	rm -rf "$scratch/outbox"
	t0=$(date +%s%N)
	"$enclavectl" --store "$store" -q export c4gh-1@1 data --recipient-key "$scratch/r.pub" \
		--out "$scratch/outbox" >/dev/null
	xs+=($((($(date +%s%N) - t0) / 1000000)))
	len=$(stat -c %s "$scratch/outbox/data.c4gh")
	[[ $len == "$want_len" ]] || { echo "bench-c4gh: export $r is $len bytes, want $want_len" >&2; exit 1; }
	if ((r == 1)); then
		got=$(python3 tests/interop/crypt4gh_ref.py decrypt --sk "$scratch/r.sec" <"$scratch/outbox/data.c4gh" |
			sha256sum | cut -d' ' -f1)
		[[ $got == "$want" ]] || { echo "bench-c4gh: the exported file decrypts to something else" >&2; exit 1; }
	fi
	echo "bench-c4gh: export $r: ${xs[-1]} ms" >&2
done
echo "bench-c4gh: exports [${xs[*]}] ms, the first decrypted by crypt4gh_ref.py: equal" >&2

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
pm=$(median "${plain[@]}") cm=$(median "${c4[@]}") export_ms=$(median "${xs[@]}")
line=$(awk -v s="$size" -v pm="$pm" -v cm="$cm" -v n="$rounds" \
	-v pl="${plain[*]}" -v cl="${c4[*]}" -v xm="$export_ms" -v xl="${xs[*]}" -v when="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	-v commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
	-v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
	printf "| %s | %s | %.0f MiB, %d rounds | %.1f s (%.0f MB/s) [%s ms] | %.1f s (%.0f MB/s) [%s ms] | **%.0f %%** | %.1f s (%.0f MB/s) [%s ms] | **%.2f** | sha256 equal (mount; crypt4gh_ref.py on the export) | %s |\n",
		when, commit, s / 1048576, n, pm / 1000, s / pm / 1000, pl, cm / 1000, s / cm / 1000,
		cl, 100 * pm / cm, xm / 1000, s / xm / 1000, xl, xm / pm, load }')
hdr="| run | commit | file | plaintext import (median) | Crypt4GH import (median) | Crypt4GH / plaintext throughput | export (median) | export / plaintext import time | checked | load |"
sep="|---|---|---|---:|---:|---:|---:|---:|---|---:|"
echo "$hdr"
echo "$sep"
echo "$line"
if ((dodoc)); then
	bench_doc_rows bench-c4gh.sh "## Crypt4GH import (scripts/bench-c4gh.sh)

The same file imported as it is and as a \`.c4gh\` file for the site key, alternately, in one run; the target is a Crypt4GH throughput of at least 80 % of the plaintext one (issue 18). The Crypt4GH import is read back through the mount and compared (SHA-256); then exported for a researcher key (one file, the same size, --rounds times) and the first decrypted by tests/interop/crypt4gh_ref.py and compared." \
		"$hdr"$'\n'"$sep" "$line"$'\n'
fi
