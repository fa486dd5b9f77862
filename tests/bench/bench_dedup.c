/* bench_dedup: the store layer alone (no daemon, no control socket) importing a source tree as
 * version 1 and again, one file changed, as version 2, so that scripts/bench-dedup.sh can tell
 * what the importer costs apart from the per-file protocol of `enclavectl dataset import`.
 *
 * Not a test: run by scripts/bench-dedup.sh. Prints one line:
 *   store-layer v1 SECONDS v2 SECONDS ratio R added BYTES
 * Usage: bench_dedup STORE_DIR SOURCE_DIR CHANGED_FILE
 *   STORE_DIR must not exist; CHANGED_FILE (inside SOURCE_DIR) gets new content of the same size
 *   between the two imports.
 */
#include <errno.h>
#include <fcntl.h>
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

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what, int r)
{
	fprintf(stderr, "bench_dedup: %s: %s%s%s\n", what, strerror(-r), *err_detail() ? ": " : "",
		err_detail());
	exit(1);
}

static uint64_t dir_bytes(const char *dir)
{
	char cmd[4200];
	unsigned long long n = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "du -sb --apparent-size '%s'", dir);
	p = popen(cmd, "r");
	if (!p || fscanf(p, "%llu", &n) != 1)
		die("du", -EIO);
	pclose(p);
	return n;
}

static double import_tree(struct store *st, const char *src)
{
	struct store_import *imp = NULL;
	uint32_t ver;
	int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;
	double t0 = now_s();

	if (dfd < 0)
		die(src, -errno);
	r = store_import_begin(st, "bench", NULL, &imp);
	if (r == 0)
		r = store_import_add_tree(imp, dfd);
	if (r == 0)
		r = store_import_commit(imp, &ver);
	if (r < 0)
		die("import", r);
	store_import_free(imp);
	close(dfd);
	return now_s() - t0;
}

int main(int argc, char **argv)
{
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	char packs[4200];
	double t1, t2;
	uint64_t p1, p2;
	struct stat sb;
	int fd, r;

	if (argc != 4) {
		fprintf(stderr, "usage: bench_dedup STORE_DIR SOURCE_DIR CHANGED_FILE\n");
		return 2;
	}
	if (crypto_init() < 0)
		return 1;
	fd = memfd_create("pass", MFD_CLOEXEC);
	if (fd < 0 || write(fd, "bench", 5) != 5 || lseek(fd, 0, SEEK_SET) != 0)
		die("passphrase", -errno);
	r = crypto_passphrase_read_fd(fd, &pass);
	close(fd);
	if (r < 0)
		die("passphrase", r);
	r = store_create(argv[1], pass, &kdf, &st);
	if (r < 0)
		die("store_create", r);
	snprintf(packs, sizeof(packs), "%s/packs", argv[1]);
	t1 = import_tree(st, argv[2]);
	p1 = dir_bytes(packs);
	/* The changed file: same size, new bytes. */
	if (stat(argv[3], &sb) < 0)
		die(argv[3], -errno);
	{
		uint8_t *b = malloc((size_t)sb.st_size + 1);
		int w = open(argv[3], O_WRONLY | O_TRUNC | O_CLOEXEC);

		if (!b || w < 0)
			die(argv[3], -errno);
		crypto_random(b, (size_t)sb.st_size);
		if (pwrite_all(w, b, (size_t)sb.st_size, 0) < 0)
			die(argv[3], -EIO);
		close(w);
		free(b);
	}
	t2 = import_tree(st, argv[2]);
	p2 = dir_bytes(packs);
	printf("store-layer v1 %.2f v2 %.2f ratio %.3f added %llu\n", t1, t2, t2 / t1,
	       (unsigned long long)(p2 - p1));
	store_close(st);
	crypto_secret_free(pass);
	return 0;
}
