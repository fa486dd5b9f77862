#!/usr/bin/env bash
# The audit log checked by an independent implementation: Go's golang.org/x/mod/sumdb/tlog and
# note (Debian golang-golang-x-mod-dev, installed by scripts/deps.sh) verify the checkpoints,
# their consistency and an inclusion proof over a sealed log that audit/ wrote (mklog). Then the
# same log with one sealed field changed must fail the Go check.
# Usage: go_tlog.sh MKLOG SRCDIR WORKDIR
set -euo pipefail
mklog=$1 src=$2 work=$3
command -v go >/dev/null || { echo "go_tlog: go is not installed (scripts/deps.sh installs it)" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work/out"
export GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/gocache" GOFLAGS=
go build -o "$work/tlogcheck" "$src/tlogcheck.go"
"$mklog" "$work/out"
grep -q '"sealed"' "$work/out/log/audit.log"
if grep -q 'JaneDoe\|oncology\|nightingale' "$work/out/log/audit.log"; then
	echo "go_tlog: a name is readable in the sealed log" >&2
	exit 1
fi
"$work/tlogcheck" "$work/out/key" "$work/out/log" "$work/out/proof" "$work/out/record"

# One character of record 3's sealed part changed: the checkpoints no longer match.
cp -r "$work/out/log" "$work/bad"
awk 'NR == 4 { sub(/"sealed":"./, "\"sealed\":\"A"); if (index($0, "\"sealed\":\"A") == 0) exit 3 } { print }' \
	"$work/out/log/audit.log" > "$work/bad/audit.log"
if cmp -s "$work/out/log/audit.log" "$work/bad/audit.log"; then
	sed -i '4s/"sealed":"A/"sealed":"B/' "$work/bad/audit.log"
fi
if "$work/tlogcheck" "$work/out/key" "$work/bad" "$work/out/proof" "$work/out/record" 2>"$work/bad.err"; then
	echo "go_tlog: a changed sealed record passed the Go check" >&2
	exit 1
fi
grep -q "the records hash to" "$work/bad.err"
echo "go_tlog: ok, and the changed log fails: $(cat "$work/bad.err")"
