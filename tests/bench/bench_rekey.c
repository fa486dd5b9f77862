/* bench_rekey: what a node removal's key rotation costs the primary (issue 17 point 3).
 *
 *   bench_rekey DIR DATASETS POLICY ROUNDS
 *
 * A node removal re-keys, in one synchronous index batch, every policy record, every dataset's
 * name and record, every tombstone and every move record (store_policy_rekey(), docs/FORMAT.md
 * 3.7), between two key ring commits. This makes a store in DIR (a new directory) with DATASETS
 * datasets of one small file each (every tenth with a second version and its first erased: a
 * tombstone) and POLICY policy records of 200 bytes, then rotates ROUNDS times. Prints the median
 * and the 90th percentile of one rotation in milliseconds, and a dataset lookup after it (that the
 * store still reads). scripts/bench-rekey.sh runs it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "common/err.h"
#include "store/store.h"
#define BENCH_NAME "bench_rekey"
#include "bench_util.h"

/* One version of name: the directory src (one file) imported. */
static int import_one(struct store *st, const char *name, const char *src)
{
	struct store_import *imp = NULL;
	uint32_t ver = 0;
	int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	if (dfd < 0)
		return -errno;
	r = store_import_begin(st, name, NULL, &imp);
	if (r == 0)
		r = store_import_add_tree(imp, dfd);
	if (r == 0)
		r = store_import_commit(imp, &ver);
	store_import_free(imp);
	close(dfd);
	return r;
}

static int write_file(const char *path, const void *b, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	if (write(fd, b, n) != (ssize_t)n) {
		close(fd);
		return -EIO;
	}
	return close(fd) < 0 ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	struct store_dataset_info di;
	struct store *st = NULL;
	crypto_secret *pass = NULL;
	char path[4200], src[4200], file[4300];
	long datasets, policy, rounds;
	double *t, t0;
	int r;

	if (argc != 5 || (datasets = strtol(argv[2], NULL, 10)) < 1 || datasets > 100000 ||
	    (policy = strtol(argv[3], NULL, 10)) < 0 || policy > 1000000 ||
	    (rounds = strtol(argv[4], NULL, 10)) < 1 || rounds > 1000) {
		fprintf(stderr, "usage: bench_rekey DIR DATASETS POLICY ROUNDS\n");
		return 2;
	}
	if (sodium_init() < 0 || mkdir(argv[1], 0700) < 0)
		return bench_fail("DIR (must not exist)", -errno);
	snprintf(path, sizeof(path), "%s/pass", argv[1]);
	r = write_file(path, "bench passphrase", 16);
	if (r == 0)
		r = crypto_passphrase_read_file(path, &pass);
	snprintf(path, sizeof(path), "%s/store", argv[1]);
	if (r == 0)
		r = store_create(path, pass, &kdf, &st);
	if (r < 0)
		return bench_fail("store_create", r);
	snprintf(src, sizeof(src), "%s/src", argv[1]);
	snprintf(file, sizeof(file), "%s/f", src);
	if (mkdir(src, 0700) < 0)
		return bench_fail(src, -errno);
	t0 = 1e3 * bench_now_s();
	for (long i = 0; i < datasets; i++) {
		char name[32], body[64];

		snprintf(name, sizeof(name), "ds-%06ld", i);
		snprintf(body, sizeof(body), "dataset %ld, version 1\n", i);
		r = write_file(file, body, strlen(body));
		if (r == 0)
			r = import_one(st, name, src);
		if (r == 0 && i % 10 == 0) {
			struct store_erasure e = { 0 };

			snprintf(body, sizeof(body), "dataset %ld, version 2\n", i);
			r = write_file(file, body, strlen(body));
			if (r == 0)
				r = import_one(st, name, src);
			if (r == 0)
				r = store_erase(st, name, 1, &e);
			if (r == 0)
				r = store_erase_recorded(st, e.dataset_id, e.version);
			store_erasure_free(&e);
		}
		if (r < 0)
			return bench_fail(name, r);
	}
	for (long i = 0; i < policy; i++) {
		uint8_t k[13] = { 'g' }, v[200];

		k[8] = (uint8_t)(i >> 24);
		k[9] = (uint8_t)(i >> 16);
		k[10] = (uint8_t)(i >> 8);
		k[11] = (uint8_t)i;
		randombytes_buf(v, sizeof(v));
		r = store_policy_put(st, k, sizeof(k), v, sizeof(v));
		if (r < 0)
			return bench_fail("store_policy_put", r);
	}
	fprintf(stderr, "bench_rekey: %ld datasets, %ld policy records made in %.1f s\n", datasets,
		policy, (1e3 * bench_now_s() - t0) / 1e3);
	t = calloc((size_t)rounds, sizeof(*t));
	if (!t)
		return 1;
	for (long k = 0; k < rounds; k++) {
		t0 = 1e3 * bench_now_s();
		r = store_policy_rekey(st);
		t[k] = 1e3 * bench_now_s() - t0;
		if (r < 0)
			return bench_fail("store_policy_rekey", r);
	}
	r = store_dataset_get(st, "ds-000000", &di);
	if (r < 0 || di.latest_version != 2)
		return bench_fail("a dataset after the rotations", r < 0 ? r : -EBADMSG);
	qsort(t, (size_t)rounds, sizeof(*t), bench_cmp_double);
	printf("datasets %ld policy %ld rounds %ld generation %llu: rotation median %.1f ms, "
	       "p90 %.1f ms\n", datasets, policy, rounds,
	       (unsigned long long)store_record_generation(st), t[rounds / 2],
	       t[(rounds * 9) / 10 < rounds ? (rounds * 9) / 10 : rounds - 1]);
	store_close(st);
	crypto_secret_free(pass);
	free(t);
	return 0;
}
