#!/usr/bin/env bash
# The test command: install what is needed, then build and run every test twice, once in the
# normal build and once under AddressSanitizer + UndefinedBehaviorSanitizer, warnings as errors;
# then run each libFuzzer harness briefly (20000 inputs from its seed corpus) in a clang build.
# Usage: scripts/test.sh [--quick]   (--quick: the normal build only)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
	--quick) quick=1 ;;
	-h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	"") ;;
	*) echo "usage: scripts/test.sh [--quick]" >&2; exit 2 ;;
esac

bash scripts/deps.sh

# run NAME [CTEST_ARGS...] -- [CMAKE_ARGS...]
run() {
	local name=$1; shift
	local dir=build-test-$name ctest_args=()
	while (($#)) && [[ $1 != -- ]]; do ctest_args+=("$1"); shift; done
	shift
	echo "=== $name build"
	cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENCLAVE_WERROR=ON "$@" >/dev/null
	cmake --build "$dir" -j "$(nproc)"
	rm -rf "$dir/testtmp"
	echo "=== $name tests"
	(cd "$dir" && ctest --output-on-failure -j 2 "${ctest_args[@]}")
	# Each program's own cmocka totals, so a run that executed nothing shows.
	local log=$dir/Testing/Temporary/LastTest.log n
	grep -h -E '^\[  (PASSED|FAILED|SKIPPED) +\]|^\[==========\] [0-9]+ test' "$log" || true
	# Count cmocka cases one by one; a ctest test without cmocka output (fuzz) counts as one.
	n=$(awk '/^\[  PASSED  \] [0-9]+ test/ { s += $4 } END { print s + 0 }' "$log")
	((n > 0)) || n=$(grep -c '^Test Passed' "$log" || true)
	total=$((total + n))
}
total=0

run normal --
if ((quick == 0)); then
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	run sanitize -- -DENCLAVE_SANITIZE=ON
	CC=clang run fuzz -R '^fuzz_' -- -DENCLAVE_FUZZ=ON
fi
# Every stage above stops the script on a failure, so reaching here means all passed.
echo "total: $total passed, 0 failed"
