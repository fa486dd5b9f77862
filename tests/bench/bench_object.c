/* bench_object: throughput of the object encrypt (import) and decrypt (read) paths.
 *
 * Not a test: run by scripts/bench-crypto.sh, numbers go to docs/PERFORMANCE.md. Single-threaded
 * on purpose, so "MB/s per core" is bytes / CPU seconds of this one thread. Three layers:
 *   chunk:  crypto_chunk_encrypt/decrypt of 64 KiB chunks in memory (the cipher alone);
 *   import: store_import_add_file of a memfd source (read, encrypt, io_uring writes, fdatasync);
 *   read:   store_object_read in 64 KiB and 1 MiB requests, pack data in the page cache
 *           (io_uring reads, tag checks, decryption, copy out).
 * Usage: bench_object [--cipher aes-256-gcm|chacha20-poly1305] [--mib N] [--dir DIR]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "common/err.h"
#include "store/store.h"

struct clocks {
	double wall;   /* seconds */
	double cpu;    /* CPU seconds of the whole process: the importer's encryption workers too */
};

static struct clocks clocks_now(void)
{
	struct timespec w, c;

	clock_gettime(CLOCK_MONOTONIC, &w);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c);
	return (struct clocks){ w.tv_sec + w.tv_nsec / 1e9, c.tv_sec + c.tv_nsec / 1e9 };
}

static void report(const char *what, const char *cipher, uint64_t bytes, struct clocks a,
		   struct clocks b)
{
	double mb = bytes / 1e6;

	printf("%-22s %-18s %10.0f %10.0f\n", what, cipher, mb / (b.wall - a.wall),
	       mb / (b.cpu - a.cpu));
}

static int die(const char *what, int r)
{
	fprintf(stderr, "bench_object: %s: %s%s%s\n", what, strerror(-r), *err_detail() ? ": " : "",
		err_detail());
	exit(1);
}

static void bench_chunks(enum crypto_aead alg, uint64_t total)
{
	const size_t cs = CRYPTO_CHUNK_DEFAULT;
	uint8_t *buf = aligned_alloc(4096, cs), tag[CRYPTO_TAG_LEN], id[CRYPTO_OBJECT_ID_LEN] = { 1 };
	crypto_chunk_ctx *ctx = NULL;
	crypto_key *key = NULL;
	uint64_t n = total / cs;
	struct clocks a, b;
	int r;

	memset(buf, 0x5a, cs);
	r = crypto_key_generate(&key);
	if (r == 0)
		r = crypto_chunk_ctx_new(alg, key, id, &ctx);
	if (r < 0)
		die("chunk context", r);
	a = clocks_now();
	for (uint64_t i = 0; i < n; i++)
		crypto_chunk_encrypt(ctx, i, false, buf, cs, buf, tag);
	b = clocks_now();
	report("chunk encrypt 64K", crypto_aead_name(alg), n * cs, a, b);

	/* Decrypting needs a valid tag: authenticate and decrypt one encrypted chunk n times. */
	crypto_chunk_encrypt(ctx, 7, false, buf, cs, buf, tag);
	{
		uint8_t *ct = aligned_alloc(4096, cs);

		memcpy(ct, buf, cs);
		a = clocks_now();
		for (uint64_t i = 0; i < n; i++)
			if (crypto_chunk_decrypt(ctx, 7, false, ct, cs, tag, buf) < 0)
				die("chunk decrypt", -EBADMSG);
		b = clocks_now();
		free(ct);
	}
	report("chunk decrypt 64K", crypto_aead_name(alg), n * cs, a, b);
	crypto_chunk_ctx_free(ctx);
	crypto_key_free(key);
	free(buf);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "cipher", required_argument, NULL, 'c' },
		{ "mib", required_argument, NULL, 'm' },
		{ "dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	enum crypto_aead alg = 0;
	uint64_t mib = 512;
	const char *dir = "/tmp";
	struct crypto_kdf_params kdf;
	struct store_import_options io = { 0 };
	struct store_import *imp = NULL;
	struct store_dataset_info di;
	struct store_inode ino;
	struct store_object *obj = NULL;
	struct store_reader *rd = NULL;
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	char root[4096], path[4200];
	uint8_t *buf;
	uint32_t ver;
	int c, r, fd, p[2];

	while ((c = getopt_long(argc, argv, "c:m:d:h", longopts, NULL)) != -1) {
		char *end;

		switch (c) {
		case 'c':
			if (crypto_aead_parse(optarg, &alg) < 0) {
				fprintf(stderr, "bench_object: unknown cipher '%s'\n", optarg);
				return 2;
			}
			break;
		case 'm':
			errno = 0;
			mib = strtoull(optarg, &end, 10);
			if (errno || *end || mib == 0 || mib > 65536) {
				fprintf(stderr, "bench_object: --mib takes 1..65536\n");
				return 2;
			}
			break;
		case 'd':
			dir = optarg;
			break;
		case 'h':
			printf("usage: bench_object [--cipher aes-256-gcm|chacha20-poly1305] "
			       "[--mib N] [--dir DIR]\n");
			return 0;
		default:
			return 2;
		}
	}
	if (crypto_init() < 0)
		return 1;
	if (!alg)
		alg = crypto_aead_preferred();
	io.alg = alg;

	printf("%-22s %-18s %10s %10s\n", "path", "cipher", "MB/s", "MB/s/core");
	bench_chunks(alg, mib << 20);

	/* A store in a scratch directory; the KDF cost is irrelevant here. */
	if (snprintf(root, sizeof(root), "%s/enclave-bench.XXXXXX", dir) >= (int)sizeof(root) ||
	    !mkdtemp(root))
		die("mkdtemp", -errno);
	snprintf(path, sizeof(path), "%s/store", root);
	/* The caller removes it (scripts/bench-crypto.sh). */
	printf("scratch: %s\n", root);
	if (pipe(p) < 0 || write(p[1], "bench", 5) != 5)
		die("pipe", -errno);
	close(p[1]);
	r = crypto_passphrase_read_fd(p[0], &pass);
	close(p[0]);
	kdf = crypto_kdf_params_min();
	if (r == 0)
		r = store_create(path, pass, &kdf, &st);
	if (r < 0)
		die("store_create", r);

	/* The source: a memfd of pseudo-random bytes, so the source disk is not measured. */
	fd = memfd_create("src", MFD_CLOEXEC);
	buf = malloc(1u << 20);
	for (size_t i = 0; i < (1u << 20); i++)
		buf[i] = (uint8_t)(i * 2654435761u >> 13);
	for (uint64_t i = 0; i < mib; i++)
		if (pwrite_all(fd, buf, 1u << 20, i << 20) < 0)
			die("memfd", -errno);

	{
		struct clocks a = clocks_now(), b;

		r = store_import_begin(st, "bench", &io, &imp);
		if (r == 0)
			r = store_import_add_file(imp, "data", fd);
		if (r == 0)
			r = store_import_commit(imp, &ver);
		if (r < 0)
			die("import", r);
		b = clocks_now();
		store_import_free(imp);
		report("import (incl. fsync)", crypto_aead_name(alg), mib << 20, a, b);
	}
	close(fd);

	r = store_dataset_get(st, "bench", &di);
	if (r == 0)
		r = store_path_lookup(st, di.id, ver, "data", &ino);
	if (r == 0)
		r = store_object_open(st, di.id, &ino, &obj);
	if (r == 0)
		r = store_reader_new(st, &rd);
	if (r < 0)
		die("open", r);
	free(buf);
	buf = aligned_alloc(4096, 1u << 20);
	static const size_t reqs[] = { 64u << 10, 1u << 20 };
	for (size_t k = 0; k < ARRAY_SIZE(reqs); k++) {
		char what[48];
		struct clocks a, b;

		/* One untimed pass so the pack is in the page cache, then three timed passes. */
		for (int pass_no = 0; pass_no < 4; pass_no++) {
			if (pass_no == 1)
				a = clocks_now();
			for (uint64_t off = 0; off < (mib << 20); off += reqs[k]) {
				ssize_t n = store_object_read(rd, obj, off, reqs[k], buf);

				if (n != (ssize_t)reqs[k])
					die("read", n < 0 ? (int)n : -EIO);
			}
		}
		b = clocks_now();
		snprintf(what, sizeof(what), "read %zuK requests", reqs[k] >> 10);
		report(what, crypto_aead_name(alg), 3 * (mib << 20), a, b);
	}
	store_reader_free(rd);
	store_object_close(obj);
	store_close(st);
	crypto_secret_free(pass);
	free(buf);
	return 0;
}
