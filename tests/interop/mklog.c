/* mklog: write a sealed, signed audit log with audit/'s own code, for an independent checker
 * (tests/interop/tlogcheck.go, Go's x/mod sumdb/tlog and note).
 *
 * Usage: mklog OUTDIR. Writes OUTDIR/log/{audit.log,checkpoints,...}, OUTDIR/key (the verifier
 * key), OUTDIR/proof (a tlog-proof of record 7) and OUTDIR/record (its line). The log has two
 * epochs (it is reopened between them), sealed to one auditor and the store key, and a
 * checkpoint in each. Exit 0, or 1 with a message. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit/audit.h"
#include "common/err.h"

static const uint8_t store_key[AUDIT_SEAL_KEY_LEN] = { 's', 't', 'o', 'r', 'e' };
static const uint8_t seed[32] = { 'i', 'n', 't', 'e', 'r', 'o', 'p' };

static int die(const char *what, int r)
{
	fprintf(stderr, "mklog: %s: %s (%s)\n", what, strerror(-r), err_detail());
	return 1;
}

static int put(const char *path, const char *text, size_t n)
{
	FILE *f = fopen(path, "we");

	if (!f || fwrite(text, 1, n, f) != n || fclose(f) != 0)
		return -EIO;
	return 0;
}

static int append_some(struct audit_log *log, int n, int base)
{
	for (int i = 0; i < n; i++) {
		char path[64];
		json_t *rec;
		int r;

		snprintf(path, sizeof(path), "/JaneDoe_MRN4471923/scan-%03d.dcm", base + i);
		rec = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:s}", "event", "open",
				"dataset", "oncology-StMarys-2026", "dataset_id", (json_int_t)3,
				"version", (json_int_t)1, "path", path, "user", "dr-nightingale",
				"uid", (json_int_t)5001, "decision", "allow");
		if (!rec)
			return -ENOMEM;
		r = audit_append(log, rec, NULL);
		json_decref(rec);
		if (r < 0)
			return r;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct audit_log *log = NULL;
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN];
	char *dir, *p, *proof = NULL, *line = NULL, *key = NULL;
	size_t plen = 0, llen = 0;
	int r;

	if (argc != 2) {
		fprintf(stderr, "usage: mklog OUTDIR\n");
		return 2;
	}
	if (asprintf(&dir, "%s/log", argv[1]) < 0 || asprintf(&p, "%s/auditor.key", argv[1]) < 0)
		return 1;
	r = audit_auditor_keypair_write(p, pk);
	if (r < 0)
		return die("auditor key", r);
	for (int round = 0; round < 2; round++) {
		r = audit_open(dir, NULL, &log);
		if (r < 0)
			return die("open", r);
		r = audit_signer_set(log, "interop.test/enclave", seed);
		if (r == 0)
			r = audit_sealer_set(log, store_key, (const uint8_t(*)[32])&pk, 1);
		if (r == 0)
			r = append_some(log, 5, round * 100);
		if (r == 0)
			r = audit_checkpoint(log, NULL, NULL);
		if (r == 0)
			r = append_some(log, round == 0 ? 6 : 3, round * 100 + 50);
		if (r == 0 && round == 1)
			r = audit_prove(log, 7, &proof, &plen, &line, &llen);
		if (r == 0 && round == 1)
			r = audit_verifier_key(log, &key);
		if (r < 0)
			return die("writing the log", r);
		audit_close(log);	/* signs a last checkpoint */
	}
	free(p);
	if (asprintf(&p, "%s/proof", argv[1]) < 0 || put(p, proof, plen) < 0)
		return 1;
	free(p);
	if (asprintf(&p, "%s/record", argv[1]) < 0 || put(p, line, llen) < 0)
		return 1;
	free(p);
	if (asprintf(&p, "%s/key", argv[1]) < 0 || put(p, key, strlen(key)) < 0)
		return 1;
	free(p);
	free(dir);
	free(proof);
	free(line);
	free(key);
	return 0;
}
