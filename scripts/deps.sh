#!/usr/bin/env bash
# Install the Debian packages Enclave needs to build, test and benchmark. Idempotent: packages
# already installed are left alone, and apt is not touched at all when nothing is missing.
set -euo pipefail

pkgs=(
	build-essential cmake ninja-build pkg-config   # toolchain
	libsodium-dev libssl-dev openssl               # crypto (openssl: the speed baseline)
	liburing-dev librocksdb-dev                    # store
	libfuse3-dev fuse3                             # FUSE mount
	libjansson-dev                                 # JSON: control protocol, audit records
	libcmocka-dev                                  # unit tests
	clang libclang-rt-14-dev                       # libFuzzer harnesses (tests/fuzz)
	golang-go golang-golang-x-mod-dev              # interop: Go's sumdb/tlog and note check the audit log
	python3 python3-jwt python3-cryptography       # GA4GH visas checked by independent JWT code
	python3-jsonschema                             # --json output checked against docs/json/ (test_e2e_json)
	python3-bcrypt openssh-client                  # Crypt4GH interop: bcrypt_pbkdf vectors, ssh-keygen's keys
)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]} == 0)); then
	echo "deps: all ${#pkgs[@]} packages present"
	exit 0
fi

sudo=()
if [[ $(id -u) != 0 ]]; then
	command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
	sudo=(sudo)
fi
echo "deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
	"${missing[@]}" >/dev/null
echo "deps: done"
