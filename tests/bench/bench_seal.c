/* bench_seal: what sealing costs an audit record (audit/seal.c), side by side in one run.
 *
 * One thread appends open-shaped records (the fields an `open` record has) to a log in a scratch
 * directory, AUDIT_WRITTEN with the syncer running, so the numbers are the CPU cost of building,
 * sealing, serializing and writing a record, not the disk's fdatasync. Rounds alternate a clear
 * log and a sealing one (one auditor key; every 65536 records a new epoch), on a machine others
 * share: compare within one run. Usage: bench_seal DIR [RECORDS_PER_ROUND] [ROUNDS]. Prints one
 * line per round and the medians. scripts/bench-seal.sh runs it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "audit/audit.h"
#include "audit/audit_internal.h" /* white-box: seal_record(), for the CPU-only figure */
#include "common/common.h"
#include "common/err.h"
#include "bench_util.h"

/* Records per second of one round. */
static double round_of(const char *dir, bool seal, unsigned n)
{
	static const uint8_t key[AUDIT_SEAL_KEY_LEN] = { 1 };
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN], sk[AUDIT_AUDITOR_KEY_LEN];
	struct audit_log *log = NULL;
	double t0, t;
	int r;

	r = audit_open(dir, NULL, &log);
	if (r < 0) {
		fprintf(stderr, "bench_seal: %s: %s\n", dir, err_detail());
		exit(1);
	}
	crypto_box_keypair(pk, sk);
	if (seal && audit_sealer_set(log, key, (const uint8_t(*)[32])&pk, 1) < 0)
		exit(1);
	if (audit_syncer_start(log, 100) < 0)
		exit(1);
	t0 = bench_now_s();
	for (unsigned i = 0; i < n; i++) {
		char p[96];
		json_t *rec;

		snprintf(p, sizeof(p), "/cohort-2026/train/shard-%06u.tar", i);
		rec = json_pack("{s:s, s:s, s:I, s:I, s:s, s:I, s:s, s:I, s:s, s:s, s:s, s:I}",
				"event", "open", "dataset", "oncology-2026", "dataset_id",
				(json_int_t)3, "version", (json_int_t)2, "path", p, "uid",
				(json_int_t)5001, "user", "alice", "pid", (json_int_t)4242, "process",
				"python3", "decision", "allow", "reason", "allow", "grant_id",
				(json_int_t)42);
		if (!rec || audit_append_mode(log, rec, AUDIT_WRITTEN, NULL) < 0) {
			fprintf(stderr, "bench_seal: append: %s\n", err_detail());
			exit(1);
		}
		json_decref(rec);
	}
	t = bench_now_s() - t0;
	audit_close(log);
	/* A fresh log next round. */
	{
		char f[4200];

		snprintf(f, sizeof(f), "%s/audit.log", dir);
		unlink(f);
		snprintf(f, sizeof(f), "%s/tree/state", dir);
		unlink(f);
		snprintf(f, sizeof(f), "%s/tree/offsets", dir);
		unlink(f);
		for (int k = 0; k < 64; k++) {
			snprintf(f, sizeof(f), "%s/tree/L%02d", dir, k);
			unlink(f);
		}
	}
	sodium_memzero(sk, sizeof(sk));
	return n / t;
}

static json_t *open_rec(unsigned i)
{
	char p[96];

	snprintf(p, sizeof(p), "/cohort-2026/train/shard-%06u.tar", i);
	return json_pack("{s:s, s:s, s:I, s:I, s:s, s:I, s:s, s:I, s:s, s:s, s:s, s:I, s:I, s:s, "
			 "s:s}", "event", "open", "dataset", "oncology-2026", "dataset_id",
			 (json_int_t)3, "version", (json_int_t)2, "path", p, "uid", (json_int_t)5001,
			 "user", "alice", "pid", (json_int_t)4242, "process", "python3", "decision",
			 "allow", "reason", "allow", "grant_id", (json_int_t)42, "seq", (json_int_t)i,
			 "time", "2026-11-21T09:00:00.000000000Z", "prev",
			 "0000000000000000000000000000000000000000000000000000000000000000");
}

/* Records per second of building and serializing a record, sealed or not, without the file: the
 * CPU the sealing adds to an append (the log's lock is held for it). */
static double cpu_round(struct audit_log *log, bool seal, unsigned n)
{
	double t0 = bench_now_s();

	for (unsigned i = 0; i < n; i++) {
		json_t *rec = open_rec(i);
		char *line;

		if (!rec || (seal && seal_record(log, rec) < 0))
			exit(1);
		line = json_dumps(rec, AUDIT_JSON_FLAGS);
		if (!line)
			exit(1);
		free(line);
		json_decref(rec);
	}
	return n / (bench_now_s() - t0);
}

int main(int argc, char **argv)
{
	unsigned n = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 20000;
	unsigned rounds = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 5;
	double clear[64], sealed[64];

	if (argc < 2 || n == 0 || rounds == 0 || rounds > 64) {
		fprintf(stderr, "usage: bench_seal DIR [RECORDS_PER_ROUND] [ROUNDS (1-64)]\n");
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	for (unsigned i = 0; i < rounds; i++) {
		clear[i] = round_of(argv[1], false, n);
		sealed[i] = round_of(argv[1], true, n);
		printf("round %u: clear %.0f records/s, sealed %.0f records/s\n", i + 1, clear[i],
		       sealed[i]);
	}
	qsort(clear, rounds, sizeof(double), bench_cmp_double);
	qsort(sealed, rounds, sizeof(double), bench_cmp_double);
	{
		static const uint8_t key[AUDIT_SEAL_KEY_LEN] = { 2 };
		uint8_t pk[AUDIT_AUDITOR_KEY_LEN], sk[AUDIT_AUDITOR_KEY_LEN];
		double cc[64], cs[64];
		struct audit_log *log = NULL;
		json_t *k = NULL;

		crypto_box_keypair(pk, sk);
		if (audit_open(argv[1], NULL, &log) < 0 ||
		    audit_sealer_set(log, key, (const uint8_t(*)[32])&pk, 1) < 0 ||
		    seal_key_record(log, 0, &k) < 0)
			return 1;
		json_decref(k);
		seal_key_written(log, 0);
		for (unsigned i = 0; i < rounds; i++) {
			cc[i] = cpu_round(log, false, n * 5);
			cs[i] = cpu_round(log, true, n * 5);
		}
		audit_close(log);
		qsort(cc, rounds, sizeof(double), bench_cmp_double);
		qsort(cs, rounds, sizeof(double), bench_cmp_double);
		printf("cpu only, median: clear %.0f records/s (%.2f us each), sealed %.0f records/s "
		       "(%.2f us each): sealing adds %.2f us a record\n", cc[rounds / 2],
		       1e6 / cc[rounds / 2], cs[rounds / 2], 1e6 / cs[rounds / 2],
		       1e6 / cs[rounds / 2] - 1e6 / cc[rounds / 2]);
	}
	printf("median: clear %.0f records/s (%.1f us each), sealed %.0f records/s (%.1f us each), "
	       "ratio %.2f\n", clear[rounds / 2], 1e6 / clear[rounds / 2], sealed[rounds / 2],
	       1e6 / sealed[rounds / 2], sealed[rounds / 2] / clear[rounds / 2]);
	return 0;
}
