#!/usr/bin/env bash
# Make tests/fixtures/store-v1.tar.gz: a small store in the index format of commit 3cbb433 (format 1:
# clear index values, clear dirent names), made by the real enclavectl and enclaved, for the
# upgrade tests of issue 12. Run it only against that commit's binaries: its purpose is a store of
# the OLD format. Usage (as root, /dev/fuse present):
#   scripts/make-fixture-v1.sh BUILD_DIR [OUT_DIR]       (OUT_DIR default tests/fixtures)
# It writes OUT_DIR/store-v1.tar.gz and OUT_DIR/store-v1.passphrase (test-only, never a secret),
# and OUT_DIR/store-v1.expected (what the store holds, for tests to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: make-fixture-v1.sh BUILD_DIR [OUT_DIR]}
out=${2:-tests/fixtures}
ctl_bin=$(realpath "$build/cli/enclavectl")
daemon_bin=$(realpath "$build/daemon/enclaved")
mkdir -p "$out"
out=$(realpath "$out")

scratch=$(mktemp -d /tmp/enclave-fixture.XXXXXX)
chmod 0755 "$scratch"
store=$scratch/store
mnt=$scratch/mnt
src=$scratch/src
mkdir -p "$mnt"
daemon_pid=
cleanup() {
	local rc=$?
	set +e
	if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid"; wait "$daemon_pid"
	fi
	grep -q " $mnt " /proc/self/mountinfo && umount -l "$mnt"
	rm -rf "$scratch"
	exit "$rc"
}
trap cleanup EXIT

# A test-only passphrase, kept beside the fixture. Never use it for anything real.
printf 'fixture-v1 test passphrase, not a secret\n' >"$out/store-v1.passphrase"
chmod 0600 "$out/store-v1.passphrase"
pass=$scratch/passphrase
install -m 0600 "$out/store-v1.passphrase" "$pass"

# uid 0 and uid 61201 are stewards (approvals 1 needs a second steward); 61202 is the reader,
# 61203 the denied user. Numeric ids: no user accounts need to exist.
"$ctl_bin" init --store "$store" --passphrase-file "$pass" --steward user:0 \
	--steward user:61201 --auditor user:0 --approvals 1 --max-grant-days 3650 --audit-name fixture.test/enclave-v1 \
	--test-kdf >/dev/null
"$daemon_bin" --store "$store" --mount "$mnt" --passphrase-file "$pass" 2>"$scratch/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 200); do
	"$ctl_bin" --store "$store" status >/dev/null 2>&1 && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$scratch/daemon.log"; exit 1; }
	sleep 0.1
done
ctl() { "$ctl_bin" --store "$store" "$@"; }
ctl2() { setpriv --reuid 61201 --regid 61201 --clear-groups "$ctl_bin" --store "$store" "$@"; }

# Version 1: nested directories, distinctive names.
mkdir -p "$src/FixtureWard-Quokka/scans-Narwhal/deep-Okapi" "$src/labels-Axolotl"
printf 'fixture v1 patient table Pangolin\n' >"$src/patients-Pangolin.csv"
printf 'scan one Narwhal\n' >"$src/FixtureWard-Quokka/scans-Narwhal/scan-0001-Tapir.dcm"
head -c 70000 /dev/zero | tr '\0' 'Q' >"$src/FixtureWard-Quokka/scans-Narwhal/deep-Okapi/big-Wombat.bin"
printf 'label Axolotl 1\n' >"$src/labels-Axolotl/label-Dugong.json"
: >"$src/labels-Axolotl/empty-Gecko.txt"
ctl -q dataset import fixture-Capybara "$src" --duo HMB --controller "Fixture Hospital Ibis" >/dev/null
# Version 2: one file changed, one added, one removed.
printf 'fixture v2 patient table Pangolin, amended\n' >"$src/patients-Pangolin.csv"
printf 'added in v2 Manatee\n' >"$src/labels-Axolotl/added-Manatee.json"
rm "$src/labels-Axolotl/empty-Gecko.txt"
ctl -q dataset import fixture-Capybara "$src" >/dev/null
# A second dataset with an equal file name, so names in two datasets can be compared.
mkdir -p "$scratch/src2"
printf 'second dataset Pangolin\n' >"$scratch/src2/patients-Pangolin.csv"
ctl -q dataset import fixture-Second-Heron "$scratch/src2" >/dev/null

# Grants: 1 requested and approved by the second steward, 2 requested then revoked.
ctl grant request --user 61202 --dataset fixture-Capybara --purpose "fixture purpose Kinkajou" \
	--purpose-code health --expires +3650d >/dev/null
ctl2 grant approve 1 >/dev/null
ctl grant request --user 61204 --dataset fixture-Capybara@1 --purpose "fixture purpose Jerboa" \
	--purpose-code health --expires +3650d >/dev/null
ctl grant revoke 2 --reason "fixture revoke Tamarin" >/dev/null
ctl deny add --user 61203 --dataset fixture-Capybara --reason "fixture deny Caracal" >/dev/null
# One read by the granted user, one refused read.
setpriv --reuid 61202 --regid 61202 --clear-groups cat "$mnt/fixture-Capybara/latest/patients-Pangolin.csv" >/dev/null
setpriv --reuid 61203 --regid 61203 --clear-groups cat "$mnt/fixture-Capybara/latest/patients-Pangolin.csv" \
	>/dev/null 2>&1 || true
{
	echo "# made by scripts/make-fixture-v1.sh with $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	ctl --json dataset show fixture-Capybara
	ctl --json grant list --all
	ctl --json deny list --all
} >"$out/store-v1.expected"
kill -TERM "$daemon_pid"; wait "$daemon_pid"; daemon_pid=
rm -f "$store/run/control.sock"
tar -C "$scratch" --owner=0 --group=0 --numeric-owner -czf "$out/store-v1.tar.gz" store
echo "made $out/store-v1.tar.gz ($(du -k "$out/store-v1.tar.gz" | cut -f1) KiB)"
