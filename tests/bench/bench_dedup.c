/* bench_dedup: the store layer alone (no daemon, no control socket) importing a source tree as
 * version 1 and again, one file changed, as version 2, so that scripts/bench-dedup.sh can tell
 * what the importer costs apart from the per-file protocol of `enclavectl dataset import`.
 *
 * Not a test: run by scripts/bench-dedup.sh. Prints one line:
 *   store-layer v1 SECONDS v2 SECONDS ratio R added BYTES
 * Usage: bench_dedup [--claims] [--versions N] STORE_DIR SOURCE_DIR CHANGED_FILE
 *   STORE_DIR must not exist; CHANGED_FILE (inside SOURCE_DIR) gets new content of the same size
 *   between the two imports.
 *   --claims: the tree is imported the way the daemon does it, not by store_import_add_tree():
 *   files with their descriptors in batches of STORE_IMPORT_BATCH_MAX (import.files, heads
 *   shown to a divert predicate) when there is no version to share from, else told of by their
 *   fstatat() in batches of STORE_IMPORT_CLAIM_MAX (import.stat), a descriptor only for those
 *   the importer asks for.
 *   --versions N: N imports of the tree (CHANGED_FILE changed before each after the first); a
 *   line per version to stderr with its time and that of its begin (the scan of the previous
 *   version), to see whether an import slows as versions accumulate.
 *   --alternate: with --claims, versions 2, 4, ... seal the claimed files of a batch on the
 *   caller's thread and its helpers (the default), versions 3, 5, ... take them one by one
 *   through the per-file path (import_claim_serial), to compare the two in one run.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
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
#include "store/store_internal.h"

/* CPU seconds of this process so far, every thread. */
static double cpu_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* CPU seconds of the calling thread so far: the importer's own thread, apart from its helpers. */
static double thread_cpu_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

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

/* An import.stat batch being filled (--claims). */
struct claims {
	struct store_import *imp;
	int dfd[STORE_IMPORT_CLAIM_MAX];           /* the directory each file is in; borrowed */
	char *names[STORE_IMPORT_CLAIM_MAX];       /* its name there; owned */
	char *paths[STORE_IMPORT_CLAIM_MAX];       /* its path in the dataset; owned */
	struct stat sts[STORE_IMPORT_CLAIM_MAX];
	size_t n;
	bool stamps;                               /* import.stat, else import.files */
};

/* The daemon's divert predicate sees each head (the Crypt4GH magic); none is one here. */
static bool no_divert(const uint8_t *head, size_t len)
{
	(void)head;
	(void)len;
	return false;
}

/* Tell the importer of the batch's files by their stat and give a descriptor for each it asks
 * for (with stamps), or give them all with their descriptors as import.files does (without). */
static void claims_flush(struct claims *c)
{
	bool need[STORE_IMPORT_CLAIM_MAX];
	int fds[STORE_IMPORT_CLAIM_MAX];
	const char *paths[STORE_IMPORT_CLAIM_MAX];
	struct stat sts[STORE_IMPORT_CLAIM_MAX];
	size_t k = 0;
	int r;

	if (c->n == 0)
		return;
	if (c->stamps) {
		r = store_import_add_claimed(c->imp, c->n, (const char *const *)c->paths, c->sts,
					     true, need);
		if (r < 0)
			die("store_import_add_claimed", r);
	} else {
		memset(need, 1, sizeof(need));
	}
	for (size_t i = 0; i <= c->n; i++) {
		if (k == STORE_IMPORT_BATCH_MAX || (i == c->n && k)) {
			r = store_import_add_files(c->imp, k, paths, fds, sts, no_divert);
			if (r < 0)
				die("store_import_add_files", r);
			for (size_t j = 0; j < k; j++)
				close(fds[j]);
			k = 0;
		}
		if (i == c->n || !need[i])
			continue;
		fds[k] = openat(c->dfd[i], c->names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fds[k] < 0)
			die(c->paths[i], -errno);
		paths[k] = c->paths[i];
		sts[k++] = c->sts[i];
	}
	for (size_t i = 0; i < c->n; i++) {
		free(c->names[i]);
		free(c->paths[i]);
	}
	c->n = 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walk the directory dfd (path rel in the dataset) as enclavectl does: sorted names, a
 * directory added before what is in it, files in claim batches. */
static void claims_walk(struct claims *c, int dfd, const char *rel)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	char **names = NULL;
	size_t count = 0, cap = 0;

	if (!d)
		die(rel, -errno);
	for (struct dirent *de; (de = readdir(d));) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (count == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names)
				die("realloc", -ENOMEM);
		}
		names[count++] = strdup(de->d_name);
	}
	qsort(names, count, sizeof(*names), name_cmp);
	for (size_t i = 0; i < count; i++) {
		char path[STORE_PATH_MAX + 1];
		struct stat s;

		snprintf(path, sizeof(path), "%s%s%s", rel, *rel ? "/" : "", names[i]);
		if (fstatat(dirfd(d), names[i], &s, AT_SYMLINK_NOFOLLOW) < 0)
			die(path, -errno);
		if (S_ISDIR(s.st_mode)) {
			int cfd = openat(dirfd(d), names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			int r;

			if (cfd < 0)
				die(path, -errno);
			r = store_import_add_dir(c->imp, path, s.st_mode,
						 (int64_t)s.st_mtim.tv_sec * 1000000000 +
							 s.st_mtim.tv_nsec);
			if (r < 0)
				die("store_import_add_dir", r);
			claims_walk(c, cfd, path);
			claims_flush(c);   /* before its descriptor goes */
			close(cfd);
		} else {
			c->dfd[c->n] = dirfd(d);
			c->names[c->n] = strdup(names[i]);
			c->paths[c->n] = strdup(path);
			c->sts[c->n] = s;
			if (++c->n == STORE_IMPORT_CLAIM_MAX)
				claims_flush(c);
		}
		free(names[i]);
	}
	claims_flush(c);
	free(names);
	closedir(d);
}

/* The last import's commit (store_import_commit()), seconds. */
static double t_commit;

static double import_tree(struct store *st, const char *src, bool claims, double *ret_begin,
			  struct store_import_stats *ret_stats)
{
	struct store_import *imp = NULL;
	uint32_t ver;
	int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;
	double t0 = now_s();

	if (dfd < 0)
		die(src, -errno);
	r = store_import_begin(st, "bench", NULL, &imp);
	*ret_begin = now_s() - t0;
	if (r == 0 && claims) {
		static struct claims c;

		c.imp = imp;
		c.stamps = store_import_stamps(imp);
		claims_walk(&c, dfd, "");
	} else if (r == 0) {
		r = store_import_add_tree(imp, dfd);
	}
	t_commit = now_s();
	if (r == 0)
		r = store_import_commit(imp, &ver);
	t_commit = now_s() - t_commit;
	if (r < 0)
		die("import", r);
	store_import_get_stats(imp, ret_stats);
	store_import_free(imp);
	close(dfd);
	return now_s() - t0;
}

/* Give path new content of the same size. */
static void change_file(const char *path)
{
	struct stat sb;
	uint8_t *b;
	int w;

	if (stat(path, &sb) < 0)
		die(path, -errno);
	b = malloc((size_t)sb.st_size + 1);
	w = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (!b || w < 0)
		die(path, -errno);
	crypto_random(b, (size_t)sb.st_size);
	if (pwrite_all(w, b, (size_t)sb.st_size, 0) < 0)
		die(path, -EIO);
	close(w);
	free(b);
}

int main(int argc, char **argv)
{
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	char packs[4200];
	struct store_import_stats stats;
	double t1, t2 = 0, b;
	uint64_t p1, p2;
	unsigned long versions = 2;
	bool claims = false, alternate = false;
	int fd, r;

	while (argc > 1 && argv[1][0] == '-') {
		if (strcmp(argv[1], "--claims") == 0) {
			claims = true;
		} else if (strcmp(argv[1], "--alternate") == 0) {
			alternate = true;
		} else if (strcmp(argv[1], "--helpers") == 0 && argc > 2) {
			import_claim_helpers = (int)strtol(argv[2], NULL, 10);
			argc--, argv++;
		} else if (strcmp(argv[1], "--versions") == 0 && argc > 2) {
			versions = strtoul(argv[2], NULL, 10);
			argc--, argv++;
		} else {
			break;
		}
		argc--, argv++;
	}
	if (argc != 4 || versions < 2) {
		fprintf(stderr, "usage: bench_dedup [--claims] [--alternate] [--versions N >= 2] "
				"STORE_DIR SOURCE_DIR CHANGED_FILE\n");
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
	t1 = import_tree(st, argv[2], claims, &b, &stats);
	p1 = dir_bytes(packs);
	if (versions > 2)
		fprintf(stderr, "bench_dedup: version 1 %.3f s\n", t1);
	/* The changed file: same size, new bytes; version 2 is the one reported on stdout. */
	for (unsigned long v = 2; v <= versions; v++) {
		double t, c0, c1;

		change_file(argv[3]);
		import_claim_serial = alternate && v % 2;
		c0 = cpu_s();
		c1 = thread_cpu_s();
		t = import_tree(st, argv[2], claims, &b, &stats);
		c0 = cpu_s() - c0;
		c1 = thread_cpu_s() - c1;
		if (v == 2)
			t2 = t;
		if (versions > 2)
			fprintf(stderr, "bench_dedup: version %lu%s %.3f s, CPU %.3f s (%.3f s on "
				"the calling thread; its begin %.3f s, its commit %.3f s; files %llu, "
				"by their stamp %llu, shared %llu)\n", v,
				import_claim_serial ? " (per file)" : "", t, c0, c1, b, t_commit,
				(unsigned long long)stats.files,
				(unsigned long long)stats.stamped_files,
				(unsigned long long)stats.reused_files);
	}
	p2 = dir_bytes(packs);
	printf("store-layer v1 %.2f v2 %.2f ratio %.3f added %llu\n", t1, t2, t2 / t1,
	       (unsigned long long)(p2 - p1));
	store_close(st);
	crypto_secret_free(pass);
	return 0;
}
