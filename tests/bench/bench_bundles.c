/* bench_bundles: what rewriting every node's key bundle costs the primary (issue 17).
 *
 *   bench_bundles DIR ENTRIES NODES ROUNDS
 *
 * Every key ring commit (each import's, before its index batch; each erasure's) rewrites the
 * bundle of every enrolled node (daemon/node_bundle.c): a sealed box of all the ring's entries
 * (48 bytes each), signed, written, fsynced and renamed. This makes a store in DIR (a new
 * directory), a ring of ENTRIES entries (the keys of as many versions), NODES node keys, and
 * writes all NODES bundles ROUNDS times, as node_primary_bundles() does at one commit. Prints the
 * median and the 90th percentile of a whole round in milliseconds (what one import's commit
 * waits for), per bundle, and the bundle's size (scripts/bench-nodes.sh runs it).
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

#include "audit/audit.h"
#include "common/err.h"
#include "daemon/daemon.h"
#include "store/store.h"
#define BENCH_NAME "bench_bundles"
#include "bench_util.h"

int main(int argc, char **argv)
{
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	struct store_node_keys *keys = NULL;
	struct store *st = NULL;
	struct audit_log *log = NULL;
	crypto_secret *pass = NULL;
	char path[4200];
	uint8_t seed[32], (*box_pk)[32];
	long entries, nodes, rounds;
	double *t;
	struct stat sb;
	int nodes_fd, r;

	if (argc != 5 || (entries = strtol(argv[2], NULL, 10)) < 1 || entries > 1000000 ||
	    (nodes = strtol(argv[3], NULL, 10)) < 1 || nodes > 1024 ||
	    (rounds = strtol(argv[4], NULL, 10)) < 1 || rounds > 100000) {
		fprintf(stderr, "usage: bench_bundles DIR ENTRIES NODES ROUNDS\n");
		return 2;
	}
	if (sodium_init() < 0 || mkdir(argv[1], 0700) < 0)
		return bench_fail("DIR (must not exist)", -errno);
	snprintf(path, sizeof(path), "%s/pass", argv[1]);
	{
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

		if (fd < 0 || write(fd, "bench passphrase", 16) != 16 || close(fd) < 0)
			return bench_fail(path, -errno);
	}
	r = crypto_passphrase_read_file(path, &pass);
	snprintf(path, sizeof(path), "%s/store", argv[1]);
	if (r == 0)
		r = store_create(path, pass, &kdf, &st);
	if (r < 0)
		return bench_fail("store_create", r);
	snprintf(path, sizeof(path), "%s/audit", argv[1]);
	randombytes_buf(seed, sizeof(seed));
	r = audit_open(path, NULL, &log);
	if (r == 0)
		r = audit_signer_set(log, "bench", seed);
	if (r < 0)
		return bench_fail("audit log", r);
	snprintf(path, sizeof(path), "%s/store/" NODE_DIR_NAME, argv[1]);
	if (mkdir(path, 0755) < 0 || (nodes_fd = open(path, O_RDONLY | O_DIRECTORY)) < 0)
		return bench_fail(path, -errno);
	/* The ring: its real keys, then synthetic version entries up to ENTRIES. */
	r = store_node_keys_export(st, &keys);
	if (r < 0)
		return bench_fail("store_node_keys_export", r);
	{
		struct store_node_keys *big = NULL;

		r = store_node_keys_new((size_t)entries, &big);
		if (r < 0)
			return bench_fail("store_node_keys_new", r);
		memcpy(big->store_id, keys->store_id, 16);
		memcpy(big->ix_seal, keys->ix_seal, 32);
		big->generation = keys->generation;
		for (size_t i = 0; i < big->n; i++) {
			big->e[i] = (struct store_node_key){ .kind = 3, .version = (uint32_t)i + 1,
							     .dsid = 1 };
			randombytes_buf(big->e[i].key, 32);
		}
		store_node_keys_free(keys);
		keys = big;
	}
	box_pk = calloc((size_t)nodes, sizeof(*box_pk));
	t = calloc((size_t)rounds, sizeof(*t));
	if (!box_pk || !t)
		return 1;
	for (long i = 0; i < nodes; i++) {
		uint8_t sk[32];

		crypto_box_keypair(box_pk[i], sk);
		sodium_memzero(sk, sizeof(sk));
	}
	for (long k = 0; k < rounds; k++) {
		double t0 = 1e3 * bench_now_s();

		keys->generation++;
		for (long i = 0; i < nodes; i++) {
			char name[24];

			snprintf(name, sizeof(name), "n%ld", i);
			r = node_bundle_write(nodes_fd, st, log, name, (uint64_t)i + 1, box_pk[i],
					      keys);
			if (r < 0)
				return bench_fail("node_bundle_write", r);
		}
		t[k] = 1e3 * bench_now_s() - t0;
	}
	qsort(t, (size_t)rounds, sizeof(*t), bench_cmp_double);
	if (fstatat(nodes_fd, "n0.bundle", &sb, 0) < 0)
		return bench_fail("n0.bundle", -errno);
	printf("entries %ld nodes %ld: a commit's bundles median %.1f ms p90 %.1f ms (%.2f ms per "
	       "bundle of %lld bytes; %ld rounds)\n", entries, nodes, t[rounds / 2],
	       t[rounds * 9 / 10], t[rounds / 2] / nodes, (long long)sb.st_size, rounds);
	close(nodes_fd);
	store_node_keys_free(keys);
	audit_close(log);
	store_close(st);
	crypto_secret_free(pass);
	free(box_pk);
	free(t);
	return 0;
}
