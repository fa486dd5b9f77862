#!/bin/sh
# Detach every FUSE mount left under the test scratch directory ($1) and stop the enclaved
# processes serving them. ctest runs this after the tests that mount (FIXTURES_CLEANUP), so a
# test that crashed in a way its own teardown could not handle leaves nothing behind.
set -u
dir=${1:?usage: cleanup-mounts.sh SCRATCH_DIR}
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd -P)
# Daemons whose command line names a store under the scratch directory.
for pid in $(pgrep -x enclaved 2>/dev/null); do
	case "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" in
	*"$dir"/*) kill -TERM "$pid" 2>/dev/null ;;
	esac
done
# Mount points are field 5 of mountinfo; deepest first.
awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
while read -r mp; do
	echo "cleanup-mounts: detaching $mp" >&2
	umount -l "$mp" 2>/dev/null || fusermount3 -uz "$mp" 2>/dev/null || true
done
exit 0
