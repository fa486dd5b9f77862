#!/usr/bin/env bash
# The main job, end to end on one machine: install what is needed, build, create a demo store in a
# scratch directory, generate a synthetic clinical-style dataset (webdataset-style tar shards and a
# CSV of fake patient records), import it, grant a test user, mount, read every shard as a training
# job would and check the checksums, show a refused read by another user and a revocation, print
# the audit records, and clean up (daemon stopped, mount gone, scratch removed).
#
# Usage: scripts/quickstart.sh [--keep]     (as root: the mount uses allow_other and real users)
#   --keep   leave the scratch directory (store, audit log, daemon log) for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
case "${1:-}" in
	--keep) keep=1 ;;
	-h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	"") ;;
	*) echo "usage: scripts/quickstart.sh [--keep]" >&2; exit 2 ;;
esac
if [[ $(id -u) != 0 ]]; then
	echo "quickstart: run as root (sudo $0): the demo creates users and mounts with allow_other" >&2
	exit 1
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

step "Installing and building"
bash scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target enclaved enclavectl >/dev/null
enclaved=$PWD/build/daemon/enclaved
enclavectl=$PWD/build/cli/enclavectl

reader=enclave-demo-reader
other=enclave-demo-other
auditor=enclave-demo-auditor          # not root: a member of the auditor group
auditors=enclave-demo-auditors
created_users=()
created_group=
if ! getent group "$auditors" >/dev/null; then
	groupadd --system "$auditors"
	created_group=$auditors
fi
for u in "$reader" "$other" "$auditor"; do
	if ! id "$u" >/dev/null 2>&1; then
		useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
		created_users+=("$u")
	fi
done
usermod -a -G "$auditors" "$auditor"

scratch=$(mktemp -d /tmp/enclave-demo.XXXXXX)
chmod 0755 "$scratch"   # the demo users must reach the mount point inside it
store=$scratch/store
mnt=$scratch/enclave
src=$scratch/source/cohort-2026
mkdir -p "$mnt" "$src"
daemon_pid=

cleanup() {
	local rc=$?
	set +e
	if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid"
		wait "$daemon_pid"
	fi
	if grep -q " $mnt " /proc/self/mountinfo; then
		umount -l "$mnt"
	fi
	if ((keep)); then
		echo "quickstart: kept $scratch"
	else
		rm -rf "$scratch"
	fi
	for u in "${created_users[@]}"; do userdel "$u" 2>/dev/null; done
	[[ -n $created_group ]] && groupdel "$created_group" 2>/dev/null
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Generating a synthetic dataset in $src"
# Four webdataset-style shards: each a tar of samples, an image-like blob and a JSON label each.
work=$scratch/gen
mkdir -p "$work" "$src/shards"
for s in 0 1 2 3; do
	rm -rf "$work"/*
	for i in $(seq 1 40); do
		key=$(printf 'sample-%02d%04d' "$s" "$i")
		head -c $((20000 + (i * 7919) % 60000)) /dev/urandom >"$work/$key.png"
		printf '{"label": %d, "site": "H%02d", "modality": "CT"}\n' $((i % 5)) $((i % 7)) \
			>"$work/$key.json"
	done
	tar -C "$work" -cf "$src/shards/train-$(printf '%05d' "$s").tar" .
done
rm -rf "$work"
# Fake patient records: made-up ids, no real person behind any row.
awk 'BEGIN {
	srand(2026);
	split("I10 E11.9 J44.1 N18.3 I50.9 C34.1 K21.9 F32.1", dx, " ");
	print "patient_id,sex,birth_year,diagnosis_icd10,admission_date,creatinine_umol_l,hba1c_pct";
	for (i = 1; i <= 2000; i++)
		printf "P%06d,%s,%d,%s,2025-%02d-%02d,%.1f,%.1f\n", i, (rand() < 0.5 ? "F" : "M"),
			1930 + int(rand() * 75), dx[1 + int(rand() * 8)], 1 + int(rand() * 12),
			1 + int(rand() * 28), 50 + rand() * 150, 4.5 + rand() * 5
}' >"$src/patients.csv"
printf 'Synthetic cohort for the Enclave quickstart. Not real patients.\n' >"$src/README.txt"
(cd "$src" && find . -type f -printf '%P\n' | sort | xargs sha256sum) >"$scratch/SHA256SUMS"
chmod 0644 "$scratch/SHA256SUMS"
say "$(find "$src" -type f | wc -l) files, $(du -sh "$src" | cut -f1)"

step "Creating a store (enclavectl init)"
head -c 32 /dev/urandom | base64 >"$scratch/passphrase"
chmod 0600 "$scratch/passphrase"
# A demo store: one steward, so grants need no second steward's approval (--approvals 0);
# production stores keep the default of one.
"$enclavectl" init --store "$store" --passphrase-file "$scratch/passphrase" \
	--steward user:root --auditor user:root --auditor "group:$auditors" --approvals 0 \
	--audit-name quickstart.local/enclave \
	--auditor-key-out "$scratch/auditor.key" --visa-issuer https://quickstart.local/enclave

step "Starting enclaved"
"$enclaved" --store "$store" --mount "$mnt" --passphrase-file "$scratch/passphrase" \
	2>"$scratch/enclaved.log" &
daemon_pid=$!
for _ in $(seq 1 200); do
	"$enclavectl" --store "$store" status >/dev/null 2>&1 && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$scratch/enclaved.log"; exit 1; }
	sleep 0.1
done
ctl() { "$enclavectl" --store "$store" "$@"; }
ctl status

step "Importing the dataset (the CLI opens the files; the daemon gets descriptors)"
ctl dataset import cohort-2026 "$src" --duo HMB,IRB --controller "Demo University Hospital"
ctl dataset show cohort-2026

step "Granting $reader read access for one hour"
ctl grant add --user "$reader" --dataset cohort-2026 --purpose-code health,ai-training \
	--purpose "demo: training a 30-day readmission classifier" --expires +1h
ctl grant list
id=$(ctl --json grant list | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -n 1)
say "what an approver or an auditor sees of it (enclavectl grant show $id):"
ctl grant show "$id"
say "why may $reader read, and why may $other not? (enclavectl access check)"
ctl access check --user "$reader" --dataset cohort-2026
ctl access check --user "$other" --dataset cohort-2026 || true
say "and $other may ask for themselves, without a role:"
runuser -u "$other" -- "$enclavectl" --store "$store" access check --dataset cohort-2026 || true

step "The grant as a signed GA4GH visa, checked against the store's JWKS"
ctl grant export --jwks >"$scratch/jwks.json"
ctl grant export --format ga4gh-visa >"$scratch/visa.jwt"
say "visa: $(cut -c1-72 "$scratch/visa.jwt")..."
# PyJWT (Debian's python3-jwt, hence /usr/bin/python3), not our code, checks the signature
# and the claims.
/usr/bin/python3 - "$scratch/jwks.json" "$scratch/visa.jwt" <<'PY'
import base64, json, sys
import jwt
jwks = json.load(open(sys.argv[1]))
token = open(sys.argv[2]).read().split()[0]
head = jwt.get_unverified_header(token)
key = next(k for k in jwks["keys"] if k["kid"] == head["kid"])
pub = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(key))
claims = jwt.decode(token, pub, algorithms=["ES256"], issuer="https://quickstart.local/enclave")
print("     header:", json.dumps(head))
print("     claims:", json.dumps(claims))
h, p, s = token.split(".")
forged = base64.urlsafe_b64encode(json.dumps(dict(claims, sub="mallory")).encode())
try:
    jwt.decode(h + "." + forged.decode().rstrip("=") + "." + s, pub, algorithms=["ES256"])
    sys.exit("quickstart: FAILED: a tampered visa verified")
except jwt.InvalidTokenError as e:
    print("     signature verified with the JWKS; a copy naming another user is refused (%s)"
          % type(e).__name__)
PY

step "Reading as $reader, the way a training job does"
as() { local u=$1; shift; runuser -u "$u" -- "$@"; }
as "$reader" ls -l "$mnt" "$mnt/cohort-2026/"
# Root has no grant either: every look at the mount goes through the reader.
for shard in $(as "$reader" find "$mnt/cohort-2026/latest/shards" -name '*.tar' | sort); do
	n=$(as "$reader" tar -tf "$shard" | grep -c '\.png$')
	bytes=$(as "$reader" tar -xOf "$shard" | wc -c)
	say "$(basename "$shard"): $n samples, $bytes bytes streamed"
done
say "CSV header: $(as "$reader" head -n 1 "$mnt/cohort-2026/latest/patients.csv")"
say "checksums of every file against the source:"
as "$reader" bash -c 'cd "$1" && sha256sum --quiet -c "$2"' _ "$mnt/cohort-2026/latest" \
	"$scratch/SHA256SUMS"
say "all $(wc -l <"$scratch/SHA256SUMS") files match"

step "Another user, $other, has no grant"
say "ls $mnt as $other (the dataset is not even listed):"
as "$other" ls -la "$mnt" | sed 's/^/     /'
if as "$other" cat "$mnt/cohort-2026/latest/patients.csv" >/dev/null 2>"$scratch/err"; then
	echo "quickstart: FAILED: $other could read the dataset" >&2
	exit 1
fi
say "cat as $other: $(cat "$scratch/err")"

step "The auditor keeps the log's verifier key and a signed checkpoint"
ctl audit pubkey >"$scratch/verifier.key"
say "verifier key: $(cat "$scratch/verifier.key")"
ctl audit checkpoint --output "$scratch/checkpoint"
sed 's/^/     /' "$scratch/checkpoint"

step "Revoking the grant: the next open is refused at once"
ctl grant revoke "$id" --reason "demo: project ended"
if as "$reader" head -c 1 "$mnt/cohort-2026/latest/patients.csv" >/dev/null 2>"$scratch/err"; then
	echo "quickstart: FAILED: $reader could still read after the revocation" >&2
	exit 1
fi
say "head as $reader: $(cat "$scratch/err")"

step "The access records (enclavectl audit show)"
ctl audit show --limit 40 --auditor-key "$scratch/auditor.key"

step "An auditor who is not root ($auditor, in group $auditors) exports the log"
mkdir -m 0700 "$scratch/auditor-home"
chown "$auditor:" "$scratch/auditor-home"
as "$auditor" "$enclavectl" --store "$store" audit export "$scratch/auditor-home/export"
as "$auditor" "$enclavectl" audit verify --log "$scratch/auditor-home/export" \
	--key-file "$scratch/verifier.key" --trusted "$scratch/checkpoint"

step "Stopping the daemon (SIGTERM unmounts)"
kill -TERM "$daemon_pid"
wait "$daemon_pid"
daemon_pid=
if grep -q " $mnt " /proc/self/mountinfo; then
	echo "quickstart: FAILED: still mounted" >&2
	exit 1
fi
say "unmounted; $(wc -l <"$store/audit/audit.log") audit records in $store/audit/audit.log"

step "Verifying the audit log offline, as an auditor: signatures, tree, growth since the checkpoint"
mkdir -p "$scratch/auditor-copy"
cp "$store/audit/audit.log" "$store/audit/checkpoints" "$scratch/auditor-copy/"
"$enclavectl" audit verify --log "$scratch/auditor-copy" --key-file "$scratch/verifier.key" \
	--trusted "$scratch/checkpoint"
"$enclavectl" audit report --log "$scratch/auditor-copy" --auditor-key "$scratch/auditor.key"
printf '\nquickstart: OK\n'
