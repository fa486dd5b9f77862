// tlogcheck: an independent check of an Enclave audit log with Go's golang.org/x/mod/sumdb/tlog
// and note packages (Debian golang-golang-x-mod-dev), none of Enclave's own code.
//
// Usage: tlogcheck KEYFILE LOGDIR PROOF RECORD
//
//	KEYFILE  the verifier key ("name+hexid+base64")
//	LOGDIR   holds audit.log and checkpoints
//	PROOF    a C2SP tlog-proof from `enclavectl audit prove` (or audit_prove())
//	RECORD   the exact line of the record it proves
//
// It checks: every checkpoint's signature (note.Open); that each checkpoint's root is the tlog
// tree hash of the first N lines of audit.log (leaves hashed as tlog.RecordHash, the RFC 6962
// leaf); that each checkpoint is consistent with the one before it (tlog.ProveTree, CheckTree);
// and the inclusion proof (tlog.CheckRecord). Exit 0 when all hold, 1 otherwise.
package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlogcheck: "+format+"\n", a...)
	os.Exit(1)
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

// The body of a C2SP tlog-checkpoint: origin, size, base64 root, then extension lines.
func parseCheckpoint(text string) checkpoint {
	lines := strings.Split(text, "\n")
	if len(lines) < 4 {
		fail("checkpoint body has %d lines", len(lines))
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 {
		fail("checkpoint size %q", lines[1])
	}
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		fail("checkpoint root %q", lines[2])
	}
	var c checkpoint
	c.origin, c.size = lines[0], n
	copy(c.root[:], h)
	return c
}

// An in-memory store of the tlog's hashes.
type hashes []tlog.Hash

func (s hashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(s)) {
			return nil, fmt.Errorf("hash %d not stored", x)
		}
		out[i] = s[x]
	}
	return out, nil
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: tlogcheck KEYFILE LOGDIR PROOF RECORD")
	}
	keyText, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(keyText)))
	if err != nil {
		fail("verifier key: %v", err)
	}
	verifiers := note.VerifierList(v)

	logData, err := os.ReadFile(os.Args[2] + "/audit.log")
	if err != nil {
		fail("%v", err)
	}
	var stored hashes
	var lines [][]byte
	for _, line := range bytes.SplitAfter(logData, []byte("\n")) {
		if len(line) == 0 || line[len(line)-1] != '\n' {
			continue
		}
		line = line[:len(line)-1]
		hs, err := tlog.StoredHashes(int64(len(lines)), line, stored)
		if err != nil {
			fail("stored hashes: %v", err)
		}
		stored = append(stored, hs...)
		lines = append(lines, line)
	}

	cpData, err := os.ReadFile(os.Args[2] + "/checkpoints")
	if err != nil {
		fail("%v", err)
	}
	// The file: each signed note followed by one blank line. A note ends with its signature
	// lines ("— name sig"), so a note ends at a signature line followed by an empty line.
	var notes []string
	var cur strings.Builder
	cpLines := strings.Split(string(cpData), "\n")
	for i := 0; i < len(cpLines); i++ {
		l := cpLines[i]
		cur.WriteString(l + "\n")
		if strings.HasPrefix(l, "\u2014 ") && i+1 < len(cpLines) && cpLines[i+1] == "" &&
			(i+2 >= len(cpLines) || !strings.HasPrefix(cpLines[i+2], "\u2014 ")) {
			notes = append(notes, cur.String())
			cur.Reset()
			i++
		}
	}
	var prev *checkpoint
	count := 0
	for _, msg := range notes {
		n, err := note.Open([]byte(msg), verifiers)
		if err != nil {
			fail("checkpoint %d: %v", count, err)
		}
		c := parseCheckpoint(n.Text)
		if c.size > int64(len(lines)) {
			fail("checkpoint %d covers %d records, the log has %d", count, c.size, len(lines))
		}
		th, err := tlog.TreeHash(c.size, stored)
		if err != nil {
			fail("tree hash: %v", err)
		}
		if th != c.root {
			fail("checkpoint %d (size %d): root %v, the records hash to %v", count, c.size, c.root, th)
		}
		if prev != nil && prev.size > 0 && c.size >= prev.size {
			p, err := tlog.ProveTree(c.size, prev.size, stored)
			if err != nil {
				fail("prove tree: %v", err)
			}
			if err := tlog.CheckTree(p, c.size, c.root, prev.size, prev.root); err != nil {
				fail("checkpoint %d does not extend checkpoint %d: %v", count, count-1, err)
			}
		}
		cc := c
		prev = &cc
		count++
	}
	if count == 0 {
		fail("no checkpoint")
	}

	// The C2SP tlog-proof: "c2sp.org/tlog-proof@v1", "index N", the path, a blank line, the
	// signed checkpoint.
	proofData, err := os.ReadFile(os.Args[3])
	if err != nil {
		fail("%v", err)
	}
	parts := strings.SplitN(string(proofData), "\n\n", 2)
	if len(parts) != 2 {
		fail("proof: no blank line")
	}
	head := strings.Split(parts[0], "\n")
	if len(head) < 2 || head[0] != "c2sp.org/tlog-proof@v1" || !strings.HasPrefix(head[1], "index ") {
		fail("proof: not a c2sp.org/tlog-proof@v1")
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(head[1], "index "), 10, 64)
	if err != nil {
		fail("proof index: %v", err)
	}
	var rp tlog.RecordProof
	for _, l := range head[2:] {
		h, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(h) != tlog.HashSize {
			fail("proof hash %q", l)
		}
		var x tlog.Hash
		copy(x[:], h)
		rp = append(rp, x)
	}
	n, err := note.Open([]byte(parts[1]), verifiers)
	if err != nil {
		fail("proof checkpoint: %v", err)
	}
	c := parseCheckpoint(n.Text)
	record, err := os.ReadFile(os.Args[4])
	if err != nil {
		fail("%v", err)
	}
	record = bytes.TrimSuffix(record, []byte("\n"))
	if err := tlog.CheckRecord(rp, c.size, c.root, index, tlog.RecordHash(record)); err != nil {
		fail("inclusion proof of record %d: %v", index, err)
	}
	fmt.Printf("ok: %d records, %d checkpoints, record %d proved in a tree of %d\n",
		len(lines), count, index, c.size)
}
