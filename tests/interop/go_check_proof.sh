#!/usr/bin/env bash
# A proof of erasure checked by an independent implementation: Go's golang.org/x/mod/sumdb/note
# and tlog (tlogcheck.go, none of Enclave's code) check the log's checkpoints, their consistency
# and the inclusion proof of the erasure record; the same proof with the record changed must fail.
# Usage: go_check_proof.sh INTEROP_DIR WORKDIR KEYFILE STORE PROOF RECORD BAD_RECORD
set -euo pipefail
src=$1 work=$2/go-proof key=$3 store=$4 proof=$5 record=$6 bad=$7
command -v go >/dev/null || { echo "go_check_proof: go is not installed (scripts/deps.sh)" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work/log"
export GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/gocache" GOFLAGS=
go build -o "$work/tlogcheck" "$src/tlogcheck.go"
# The log as it is now: the proof's checkpoint is in its checkpoints file.
cp "$store/audit/audit.log" "$store/audit/checkpoints" "$work/log/"
"$work/tlogcheck" "$key" "$work/log" "$proof" "$record"
if "$work/tlogcheck" "$key" "$work/log" "$proof" "$bad" 2>"$work/bad.err"; then
	echo "go_check_proof: a changed erasure record passed the Go check" >&2
	exit 1
fi
echo "go_check_proof: ok, and the changed record fails: $(cat "$work/bad.err")"
