/* test_gc: versions that share unchanged files, and the garbage collector that frees what no
 * version uses (issue 16 points 4 and 5), against real files and RocksDB. */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <sodium.h>
#include <cmocka.h>

#include "common/common.h"
#include "common/err.h"
#include "store/store.h"
#include "store/store_internal.h" /* white-box: index records removed as an erasure would */
#include "tests/storefx.h"
#include "tests/testutil.h"

#define PASS "correct horse battery staple"

static int fx_setup(void **state)
{
	return storefx_setup(state, "gc", PASS);
}


/* Import the source directory as the next version of name; its stats into *ret_stats. */
static uint32_t import_src_stats(struct store *st, const char *name, const char *src,
				 struct store_import_stats *ret_stats)
{
	struct store_import *imp = NULL;
	uint32_t ver = 0;
	int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	assert_true(dfd >= 0);
	r = store_import_begin(st, name, NULL, &imp);
	if (r == 0)
		r = store_import_add_tree(imp, dfd);
	if (r == 0)
		r = store_import_commit(imp, &ver);
	if (r < 0)
		fprintf(stderr, "import: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	if (ret_stats)
		store_import_get_stats(imp, ret_stats);
	store_import_free(imp);
	close(dfd);
	return ver;
}

static uint32_t import_src(struct store *st, const char *name, const char *src)
{
	return import_src_stats(st, name, src, NULL);
}

/* Check that path in version ver of ds reads back as n bytes of tu_fill(seed). */
static void check_file(struct store *st, const char *ds, uint32_t ver, const char *path,
		       size_t n, uint64_t seed)
{
	struct store_dataset_info di;
	struct store_inode ino;
	struct store_object *obj = NULL;
	struct store_reader *rd = NULL;
	uint8_t *want = malloc(n + 1), *have = malloc(n + 1);
	size_t got = 0;

	assert_int_equal(store_dataset_get(st, ds, &di), 0);
	assert_int_equal(store_path_lookup(st, di.id, ver, path, &ino), 0);
	assert_int_equal(ino.size, n);
	assert_int_equal(store_object_open(st, di.id, &ino, &obj), 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	for (;;) {
		ssize_t r = store_object_read(rd, obj, got, 100000, have + got);

		if (r < 0)
			fprintf(stderr, "read %s: %s: %s\n", path, strerror((int)-r), err_detail());
		assert_true(r >= 0);
		if (r == 0)
			break;
		got += (size_t)r;
	}
	assert_int_equal(got, n);
	tu_fill(want, n, seed);
	assert_memory_equal(have, want, n);
	store_reader_free(rd);
	store_object_close(obj);
	free(want);
	free(have);
}

static struct store_inode inode_of(struct store *st, const char *ds, uint32_t ver,
				   const char *path)
{
	struct store_dataset_info di;
	struct store_inode ino;

	assert_int_equal(store_dataset_get(st, ds, &di), 0);
	assert_int_equal(store_path_lookup(st, di.id, ver, path, &ino), 0);
	return ino;
}

static uint64_t packs_bytes(struct fx *f)
{
	char *packs = tu_fmt("%s/packs", f->store);
	unsigned n;
	uint64_t b = tu_dir_bytes(packs, &n);

	free(packs);
	return b;
}

/* Sizes and seeds of the test tree: small (dense), medium, and large (encrypted by the pool). */
static const size_t tree_sizes[] = { 0, 10, 4096, 70000, 300000, 3u << 20 };

static void make_tree(struct fx *f)
{
	for (size_t i = 0; i < ARRAY_SIZE(tree_sizes); i++)
		tu_seed_file(tree_sizes[i], 500 + i, "%s/%s/f%zu", f->src, i % 2 ? "a" : "b", i);
}

static void mkdirs(struct fx *f)
{
	char *a = tu_fmt("%s/a", f->src), *b = tu_fmt("%s/b", f->src);

	assert_int_equal(mkdir(a, 0755), 0);
	assert_int_equal(mkdir(b, 0755), 0);
	free(a);
	free(b);
}

static char *tree_path(size_t i)
{
	return tu_fmt("%s/f%zu", i % 2 ? "a" : "b", i);
}

/* ---- Versions share unchanged files (point 5) ---------------------------------------------- */

/* The same tree again: version 2 stores nothing new, every file shares version 1's object, and
 * both versions read back byte for byte. */
static void test_dedup_unchanged_stores_nothing(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import_stats s1, s2;
	uint64_t before, after;

	mkdirs(f);
	make_tree(f);
	assert_int_equal(import_src_stats(st, "d", f->src, &s1), 1);
	assert_int_equal(s1.reused_files, 0);
	store_close(st);
	before = packs_bytes(f);
	st = fx_open(f);
	assert_int_equal(import_src_stats(st, "d", f->src, &s2), 2);
	store_close(st);
	after = packs_bytes(f);
	assert_int_equal(after, before);
	assert_int_equal(s2.files, ARRAY_SIZE(tree_sizes));
	assert_int_equal(s2.reused_files, ARRAY_SIZE(tree_sizes));
	assert_int_equal(s2.reused_bytes, s1.bytes);
	assert_int_equal(s2.bytes, s1.bytes);

	st = fx_open(f);
	for (size_t i = 0; i < ARRAY_SIZE(tree_sizes); i++) {
		char *p = tree_path(i);
		struct store_inode a = inode_of(st, "d", 1, p), b = inode_of(st, "d", 2, p);

		assert_memory_equal(a.ext.object_id, b.ext.object_id, sizeof(a.ext.object_id));
		assert_int_equal(a.ext.pack_id, b.ext.pack_id);
		assert_int_equal(a.ext.offset, b.ext.offset);
		assert_true(b.ext.has_content_mac);
		check_file(st, "d", 1, p, tree_sizes[i], 500 + i);
		check_file(st, "d", 2, p, tree_sizes[i], 500 + i);
		free(p);
	}
	store_close(st);
}

/* One file changed, one added: they get new objects; the others are shared. */
static void test_dedup_changed_files_new_objects(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import_stats s2;
	char *p2 = tree_path(2), *p4 = tree_path(4);

	mkdirs(f);
	make_tree(f);
	assert_int_equal(import_src(st, "d", f->src), 1);
	/* Same size, other bytes: the size matches, the keyed hash does not. */
	tu_seed_file(tree_sizes[4], 999, "%s/%s", f->src, p4);
	tu_seed_file(12345, 998, "%s/new", f->src);
	assert_int_equal(import_src_stats(st, "d", f->src, &s2), 2);
	assert_int_equal(s2.files, ARRAY_SIZE(tree_sizes) + 1);
	assert_int_equal(s2.reused_files, ARRAY_SIZE(tree_sizes) - 1);
	assert_int_equal(s2.reused_bytes, s2.bytes - tree_sizes[4] - 12345);
	{
		struct store_inode a = inode_of(st, "d", 1, p4), b = inode_of(st, "d", 2, p4);

		assert_memory_not_equal(a.ext.object_id, b.ext.object_id, sizeof(a.ext.object_id));
		assert_memory_not_equal(a.ext.content_mac, b.ext.content_mac,
					sizeof(a.ext.content_mac));
		a = inode_of(st, "d", 1, p2);
		b = inode_of(st, "d", 2, p2);
		assert_memory_equal(a.ext.object_id, b.ext.object_id, sizeof(a.ext.object_id));
	}
	check_file(st, "d", 1, p4, tree_sizes[4], 504);
	check_file(st, "d", 2, p4, tree_sizes[4], 999);
	check_file(st, "d", 2, "new", 12345, 998);
	check_file(st, "d", 2, p2, tree_sizes[2], 502);
	/* Version 3 shares with version 2 (the latest), the new file included. */
	assert_int_equal(import_src_stats(st, "d", f->src, &s2), 3);
	assert_int_equal(s2.reused_files, ARRAY_SIZE(tree_sizes) + 1);
	store_close(st);
	free(p2);
	free(p4);
}

/* The content hash is keyed per dataset: not a plain hash of the data, and the same file in two
 * datasets gives unrelated hashes (and is not shared between them). */
static void test_dedup_hash_keyed_per_dataset(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import_stats s;
	uint8_t plain[CRYPTO_HASH_LEN], *data = malloc(70000);
	crypto_hasher *h = NULL;
	char *p = tree_path(3);
	struct store_inode a, b;

	mkdirs(f);
	make_tree(f);
	assert_int_equal(import_src(st, "one", f->src), 1);
	assert_int_equal(import_src_stats(st, "two", f->src, &s), 1);
	assert_int_equal(s.reused_files, 0);
	a = inode_of(st, "one", 1, p);
	b = inode_of(st, "two", 1, p);
	assert_true(a.ext.has_content_mac && b.ext.has_content_mac);
	assert_memory_not_equal(a.ext.content_mac, b.ext.content_mac, sizeof(a.ext.content_mac));
	assert_memory_not_equal(a.ext.object_id, b.ext.object_id, sizeof(a.ext.object_id));
	tu_fill(data, 70000, 503);
	assert_int_equal(crypto_hash_new(&h), 0);
	crypto_hash_update(h, data, 70000);
	crypto_hash_final(h, plain);
	crypto_hash_free(h);
	assert_memory_not_equal(a.ext.content_mac, plain, sizeof(plain));
	store_close(st);
	free(data);
	free(p);
}

/* Remove every index record of a version, as an erasure does (white-box, at the index level). */
static void drop_version_records(struct store *st, uint64_t dsid, uint32_t ver)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	uint8_t lo[VKEY_LEN], hi[VKEY_LEN];

	vkey(lo, dsid, ver);
	vkey(hi, dsid, ver + 1);
	rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_INODES], (const char *)lo, sizeof(lo),
					   (const char *)hi, sizeof(hi));
	rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[CF_DIRENTS], (const char *)lo, sizeof(lo),
					   (const char *)hi, sizeof(hi));
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
}

/* Version 2 shares version 1's objects; with version 1's records gone, version 2 still reads
 * byte for byte (its own inode records hold the object keys, wrapped for it). */
static void test_dedup_v2_reads_without_v1(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_dataset_info di;
	struct store_import_stats s;

	mkdirs(f);
	make_tree(f);

	assert_int_equal(import_src(st, "d", f->src), 1);
	assert_int_equal(import_src_stats(st, "d", f->src, &s), 2);
	assert_int_equal(s.reused_files, ARRAY_SIZE(tree_sizes));
	assert_int_equal(store_dataset_get(st, "d", &di), 0);
	drop_version_records(st, di.id, 1);
	store_close(st);
	st = fx_open(f);
	for (size_t i = 0; i < ARRAY_SIZE(tree_sizes); i++) {
		char *p = tree_path(i);

		check_file(st, "d", 2, p, tree_sizes[i], 500 + i);
		free(p);
	}
	store_close(st);
}

/* A latest version that fails its checks (an inode record removed) is not shared from, and does
 * not stop the import that replaces it: the new version stores every file. */
static void test_dedup_damaged_latest_shares_nothing(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import_stats s;
	struct store_dataset_info di;
	struct store_inode ino;
	rocksdb_writebatch_t *wb;
	uint8_t k[IKEY_LEN];
	char *p = tree_path(2);

	mkdirs(f);
	make_tree(f);
	assert_int_equal(import_src(st, "d", f->src), 1);
	assert_int_equal(store_dataset_get(st, "d", &di), 0);
	assert_int_equal(store_path_lookup(st, di.id, 1, p, &ino), 0);
	ikey(k, di.id, 1, ino.ino);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_INODES], (const char *)k, sizeof(k));
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	store_close(st);
	st = fx_open(f);
	assert_int_equal(import_src_stats(st, "d", f->src, &s), 2);
	assert_int_equal(s.reused_files, 0);
	assert_true(store_integrity_failures(st) > 0);
	check_file(st, "d", 2, p, tree_sizes[2], 502);
	store_close(st);
	free(p);
}

/* The source stamp and the directory entry's key that the importer writes (each one keyed BLAKE2b
 * of a short message, computed with crypto_mac() and the key block compressed once) are those
 * docs/FORMAT.md 6.5 and 6.13 define, computed here from their definition with libsodium's keyed
 * crypto_generichash: a stamp recorded by an earlier release still holds. */
static void test_dedup_stamp_is_keyed_blake2b(void **state)
{
	static const char ctx[] = "enclave source stamp v1";
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_dataset_info di;
	struct store_inode ino;
	struct stat sb;
	crypto_key *kd = NULL, *kdc = NULL;
	uint8_t msg[sizeof(ctx) + 56], want[STORE_CONTENT_MAC_LEN];
	char *p = tree_path(3), *src;

	mkdirs(f);
	make_tree(f);
	assert_int_equal(import_src(st, "d", f->src), 1);
	assert_int_equal(store_dataset_get(st, "d", &di), 0);
	/* Found by its path: the entry's key is the one lookups compute (dkey(), crypto_name_hash). */
	assert_int_equal(store_path_lookup(st, di.id, 1, p, &ino), 0);
	assert_true(ino.ext.has_content_mac && ino.ext.has_stamp);
	src = tu_fmt("%s/%s", f->src, p);
	assert_int_equal(stat(src, &sb), 0);
	memcpy(msg, ctx, sizeof(ctx));
	put_le64(msg + sizeof(ctx), (uint64_t)sb.st_dev);
	put_le64(msg + sizeof(ctx) + 8, (uint64_t)sb.st_ino);
	put_le64(msg + sizeof(ctx) + 16, (uint64_t)sb.st_size);
	put_le64(msg + sizeof(ctx) + 24, (uint64_t)sb.st_mtim.tv_sec);
	put_le64(msg + sizeof(ctx) + 32, (uint64_t)sb.st_mtim.tv_nsec);
	put_le64(msg + sizeof(ctx) + 40, (uint64_t)sb.st_ctim.tv_sec);
	put_le64(msg + sizeof(ctx) + 48, (uint64_t)sb.st_ctim.tv_nsec);
	assert_int_equal(store_dataset_key(st, di.id, NULL, &kd), 0);
	assert_int_equal(dataset_content_key(kd, &kdc), 0);
	crypto_generichash(want, sizeof(want), msg, sizeof(msg), crypto_key_bytes(kdc),
			   CRYPTO_KEY_LEN);
	assert_memory_equal(ino.ext.stamp, want, sizeof(want));
	crypto_key_free(kdc);
	store_close(st);
	free(src);
	free(p);
}

/* An integrity hook that holds the thread that calls it until the test lets it go (at most
 * HOLD_S seconds). */
#define HOLD_S 10
struct hold_hook {
	sem_t go;
	bool let_go;        /* the test let it go before HOLD_S passed */
	unsigned calls;
};

static void hold_hook_cb(void *ctx, uint64_t dsid, uint32_t version, const char *what)
{
	struct hold_hook *h = ctx;
	struct timespec t;
	int r;

	(void)dsid;
	(void)version;
	(void)what;
	if (__atomic_add_fetch(&h->calls, 1, __ATOMIC_SEQ_CST) > 1)
		return;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += HOLD_S;
	while ((r = sem_timedwait(&h->go, &t)) < 0 && errno == EINTR)
		;
	__atomic_store_n(&h->let_go, r == 0, __ATOMIC_SEQ_CST);
}

/* The scan of the version shared from runs beside the import, not inside begin (docs/FORMAT.md
 * 6.13): begin answers while the scan still runs (here: held in the integrity hook by the
 * damage it found), and the first file waits for its verdict, which is still "share nothing". */
static void test_dedup_scan_beside_begin(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import_stats s;
	struct store_dataset_info di;
	struct store_import *imp = NULL;
	struct store_inode ino;
	struct hold_hook h = { 0 };
	rocksdb_writebatch_t *wb;
	uint8_t k[IKEY_LEN];
	uint32_t ver = 0;
	char *p = tree_path(3);
	int dfd;

	mkdirs(f);
	make_tree(f);
	assert_int_equal(import_src(st, "d", f->src), 1);
	assert_int_equal(store_dataset_get(st, "d", &di), 0);
	assert_int_equal(store_path_lookup(st, di.id, 1, p, &ino), 0);
	ikey(k, di.id, 1, ino.ino);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_INODES], (const char *)k, sizeof(k));
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	store_close(st);
	st = fx_open(f);
	assert_int_equal(sem_init(&h.go, 0, 0), 0);
	store_set_integrity_hook(st, hold_hook_cb, &h);
	/* Were the scan inside begin, begin would return only once the hook gave up waiting. */
	assert_int_equal(store_import_begin(st, "d", NULL, &imp), 0);
	assert_int_equal(sem_post(&h.go), 0);
	dfd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	close(dfd);
	assert_true(__atomic_load_n(&h.let_go, __ATOMIC_SEQ_CST));
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, 2);
	store_import_get_stats(imp, &s);
	store_import_free(imp);
	assert_int_equal(s.reused_files, 0);
	assert_true(h.calls > 0);
	check_file(st, "d", 2, p, tree_sizes[3], 503);
	store_set_integrity_hook(st, NULL, NULL);
	sem_destroy(&h.go);
	store_close(st);
	free(p);
}

/* ---- Garbage collection (point 4) ---------------------------------------------------------- */

#define GC_TARGET (1u << 20)   /* small packs, so that datasets share them */

static struct store *gc_open(struct fx *f)
{
	struct store_open_options o = { .pack_target = GC_TARGET };

	return fx_open_opts(f, &o);
}

/* Remove a whole dataset from the index, as an erasure of it does (white-box). */
static void drop_dataset(struct store *st, const char *name)
{
	struct store_dataset_info di;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	uint8_t lo[VKEY_LEN], hi[VKEY_LEN], dk[DSKEY_LEN];

	assert_int_equal(store_dataset_get(st, name, &di), 0);
	vkey(lo, di.id, 0);
	vkey(hi, di.id + 1, 0);
	for (enum store_cf c = CF_VERSIONS; c <= CF_DIRENTS; c++)
		rocksdb_writebatch_delete_range_cf(wb, st->ix.cf[c], (const char *)lo, sizeof(lo),
						   (const char *)hi, sizeof(hi));
	dskey_hash(st->ix_name, name, dk);
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_DATASETS], (const char *)dk, sizeof(dk));
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
}

/* Remove one version of a dataset from the index (its version, inode and entry records). */
static void drop_version(struct store *st, const char *name, uint32_t ver)
{
	struct store_dataset_info di;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	uint8_t k[VKEY_LEN];

	assert_int_equal(store_dataset_get(st, name, &di), 0);
	drop_version_records(st, di.id, ver);
	vkey(k, di.id, ver);
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_VERSIONS], (const char *)k, sizeof(k));
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
}

static int run_gc(struct store *st, bool dry, struct store_gc_stats *ret)
{
	struct store_gc_options o = { .dry_run = dry };
	int r = store_gc(st, &o, ret);

	if (r < 0)
		fprintf(stderr, "gc: %s: %s\n", strerror(-r), err_detail());
	return r;
}

/* The files of "keep": seeds 700+i, one tiny, one small (dense), one large; and tiny files t0..t2
 * (seeds 710+i), in the same group as k0 (docs/FORMAT.md 4.10): one object of four members,
 * shared whole by keep's version 2 and moved by the collector like any other. */
static const size_t keep_sizes[] = { 100, 5000, 200000, 1500000 };
static const size_t keep_tiny[] = { 1, 7, 0 };

static void keep_files(const char *dir)
{
	for (size_t i = 0; i < ARRAY_SIZE(keep_sizes); i++)
		tu_seed_file(keep_sizes[i], 700 + i, "%s/k%zu", dir, i);
	for (size_t i = 0; i < ARRAY_SIZE(keep_tiny); i++)
		tu_seed_file(keep_tiny[i], 710 + i, "%s/t%zu", dir, i);
}

static void check_keep_tiny(struct store *st, uint32_t ver)
{
	for (size_t i = 0; i < ARRAY_SIZE(keep_tiny); i++) {
		char *p = tu_fmt("t%zu", i);

		check_file(st, "keep", ver, p, keep_tiny[i], 710 + i);
		free(p);
	}
}

static void check_keep(struct store *st, uint32_t ver)
{
	for (size_t i = 0; i < ARRAY_SIZE(keep_sizes); i++) {
		char *p = tu_fmt("k%zu", i);

		check_file(st, "keep", ver, p, keep_sizes[i], 700 + i);
		free(p);
	}
	check_keep_tiny(st, ver);
}

/* A store where "keep" and "gone" share packs: keep, gone, keep (v2), gone (v2) in 1 MiB packs. */
static void mixed_store(struct fx *f)
{
	char *ks = tu_fmt("%s/keep", f->root), *gs = tu_fmt("%s/gone", f->root);
	struct store *st = fx_create(f);

	store_close(st);
	assert_int_equal(mkdir(ks, 0755), 0);
	assert_int_equal(mkdir(gs, 0755), 0);
	keep_files(ks);
	for (int i = 0; i < 6; i++)
		tu_seed_file(300000 + 1000 * (size_t)i, 800 + (uint64_t)i, "%s/g%d", gs, i);
	st = gc_open(f);
	assert_int_equal(import_src(st, "keep", ks), 1);
	assert_int_equal(import_src(st, "gone", gs), 1);
	/* keep v2: one file changed, the rest shared with v1. */
	tu_seed_file(keep_sizes[1], 799, "%s/k1", ks);
	assert_int_equal(import_src(st, "keep", ks), 2);
	tu_seed_file(300000, 899, "%s/g0", gs);
	assert_int_equal(import_src(st, "gone", gs), 2);
	store_close(st);
	/* Back to v1's content, for check_keep(st, 1). */
	tu_seed_file(keep_sizes[1], 701, "%s/k1", ks);
	free(ks);
	free(gs);
}

static void check_keep_v2(struct store *st)
{
	for (size_t i = 0; i < ARRAY_SIZE(keep_sizes); i++) {
		char *p = tu_fmt("k%zu", i);

		check_file(st, "keep", 2, p, keep_sizes[i], i == 1 ? 799 : 700 + i);
		free(p);
	}
	check_keep_tiny(st, 2);
}

static void check_manifests(struct store *st, const char *name)
{
	struct store_dataset_info di;

	assert_int_equal(store_dataset_get(st, name, &di), 0);
	for (uint32_t v = 1; v <= di.latest_version; v++) {
		struct store_version_info vi;
		uint8_t m[STORE_MANIFEST_LEN];

		if (store_version_get(st, di.id, v, &vi) < 0)
			continue;
		assert_int_equal(store_manifest_compute(st, di.id, v, m), 0);
		assert_memory_equal(m, vi.manifest, sizeof(m));
	}
}

/* An erased dataset's bytes are freed: a dry run says how much and changes nothing; the
 * collection frees it, moves the live objects out of the mixed packs, and every version of the
 * other dataset reads byte for byte, with its manifests unchanged, then and after a reopen;
 * a second collection finds nothing left to free. */
static void test_gc_frees_erased_dataset(void **state)
{
	struct fx *f = *state;
	struct store_gc_stats s, s2;
	struct store *st;
	uint64_t before, after;

	mixed_store(f);
	st = gc_open(f);
	assert_int_equal(run_gc(st, true, &s), 0);
	assert_int_equal(s.reclaimable_bytes, 0);   /* nothing erased yet */
	drop_dataset(st, "gone");
	before = packs_bytes(f);
	assert_int_equal(run_gc(st, true, &s), 0);
	assert_true(s.reclaimable_bytes > 6 * 300000);
	assert_int_equal(packs_bytes(f), before);
	assert_int_equal(run_gc(st, false, &s2), 0);
	assert_int_equal(s2.reclaimable_bytes, s.reclaimable_bytes);
	assert_true(s2.objects_moved > 0);
	after = packs_bytes(f);
	assert_int_equal(after, before - s2.reclaimable_bytes + s2.bytes_copied +
			 (after - (before - s2.reclaimable_bytes + s2.bytes_copied)));
	assert_true(after < before - 6 * 300000);
	check_keep(st, 1);
	check_keep_v2(st);
	check_manifests(st, "keep");
	assert_int_equal(run_gc(st, true, &s), 0);
	assert_int_equal(s.reclaimable_bytes, 0);
	store_close(st);

	st = gc_open(f);
	check_keep(st, 1);
	check_keep_v2(st);
	check_manifests(st, "keep");
	/* An import after a collection goes on in fresh pack ids and reads back. */
	tu_seed_file(4096, 1234, "%s/late", f->src);
	assert_int_equal(import_src(st, "late", f->src), 1);
	check_file(st, "late", 1, "late", 4096, 1234);
	store_close(st);
	st = gc_open(f);
	check_file(st, "late", 1, "late", 4096, 1234);
	check_keep_v2(st);
	store_close(st);
}

/* Erasing version 1 must not destroy a file version 2 still uses: after version 1's records
 * are removed and a collection runs, version 2 reads byte for byte, and the object only
 * version 1 used is gone. */
static void test_gc_keeps_shared_objects(void **state)
{
	struct fx *f = *state;
	struct store_gc_stats s;
	struct store *st;

	mixed_store(f);
	st = gc_open(f);
	drop_version(st, "keep", 1);
	drop_dataset(st, "gone");
	assert_int_equal(run_gc(st, false, &s), 0);
	/* keep v2's four objects, three of them v1's. */
	assert_int_equal(s.live_objects, ARRAY_SIZE(keep_sizes));
	check_keep_v2(st);
	assert_int_equal(run_gc(st, true, &s), 0);
	assert_int_equal(s.reclaimable_bytes, 0);
	store_close(st);
	st = gc_open(f);
	check_keep_v2(st);
	store_close(st);
}

/* Tiny files' groups across versions (docs/FORMAT.md 4.10): a version that finds every member
 * of a group of the previous one unchanged shares the group (nothing written); one that finds
 * only some copies those into its own group, so that no version wraps the key of a group holding
 * a file it does not hold. Erasing version 1 keeps the groups version 2 still names, and a
 * group only erased versions named is freed by the next collection; every version left reads
 * byte for byte, after the collection and after a reopen. */
#define GT_N 12
#define GT_SIZE(i) (600 + 10 * ((size_t)(i) % 6))
static void check_gt(struct store *st, uint32_t ver, unsigned changed)
{
	for (unsigned i = 0; i < GT_N; i++) {
		char *p = tu_fmt("t/f%02u", i);

		check_file(st, "g", ver, p, GT_SIZE(i), i == changed ? 999 : 900 + i);
		free(p);
	}
	check_file(st, "g", ver, "t/m", 5000, 950);
}

static void test_gc_groups_across_versions(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import_stats s;
	struct store_erasure er = { 0 };
	struct store_gc_stats gs;
	struct store_inode v1[GT_N], v2[GT_N], v3[GT_N];
	char *t = tu_fmt("%s/t", f->src);
	uint64_t before, live;

	/* Twelve files of 600-650 bytes: two groups of six (3750 bytes each), and a file
	 * that is not tiny between them. */
	assert_int_equal(mkdir(t, 0755), 0);
	for (unsigned i = 0; i < GT_N; i++)
		tu_seed_file(GT_SIZE(i), 900 + i, "%s/f%02u", t, i);
	tu_seed_file(5000, 950, "%s/m", t);
	assert_int_equal(import_src(st, "g", f->src), 1);
	store_close(st);
	before = packs_bytes(f);
	st = fx_open(f);
	assert_int_equal(import_src_stats(st, "g", f->src, &s), 2);
	assert_int_equal(s.reused_files, GT_N + 1);
	store_close(st);
	assert_int_equal(packs_bytes(f), before);   /* nothing written for version 2 */
	st = fx_open(f);
	/* Version 3: file 8 changed (same size), in the second group. */
	tu_seed_file(GT_SIZE(8), 999, "%s/f08", t);
	assert_int_equal(import_src_stats(st, "g", f->src, &s), 3);
	assert_int_equal(s.reused_files, 6 + 1);   /* the first group whole, and m */
	for (unsigned i = 0; i < GT_N; i++) {
		char *p = tu_fmt("t/f%02u", i);

		v1[i] = inode_of(st, "g", 1, p);
		v2[i] = inode_of(st, "g", 2, p);
		v3[i] = inode_of(st, "g", 3, p);
		assert_true(v1[i].ext.grouped && v3[i].ext.grouped);
		assert_memory_equal(v1[i].ext.object_id, v2[i].ext.object_id, CRYPTO_OBJECT_ID_LEN);
		if (i < 6)
			assert_memory_equal(v1[i].ext.object_id, v3[i].ext.object_id,
					    CRYPTO_OBJECT_ID_LEN);
		else
			assert_memory_not_equal(v1[i].ext.object_id, v3[i].ext.object_id,
						CRYPTO_OBJECT_ID_LEN);
		free(p);
	}
	assert_int_equal(v1[0].ext.member_count, 6);
	assert_int_equal(v1[6].ext.member_count, 6);
	assert_memory_not_equal(v1[0].ext.object_id, v1[6].ext.object_id, CRYPTO_OBJECT_ID_LEN);
	check_gt(st, 1, GT_N);
	check_gt(st, 2, GT_N);
	check_gt(st, 3, 8);
	store_close(st);

	/* Erase version 1: both of its groups are still named by version 2. */
	st = gc_open(f);
	assert_int_equal(store_erase(st, "g", 1, &er), 0);
	store_erasure_free(&er);
	assert_int_equal(run_gc(st, false, &gs), 0);
	/* Groups 1 and 2 (version 2, and group 1 version 3), version 3's group, and m. */
	assert_int_equal(gs.live_objects, 4);
	live = gs.live_bytes;
	check_gt(st, 2, GT_N);
	check_gt(st, 3, 8);
	/* Erase version 2: version 1's second group is named by no version left. */
	assert_int_equal(store_erase(st, "g", 2, &er), 0);
	store_erasure_free(&er);
	assert_int_equal(run_gc(st, true, &gs), 0);
	assert_int_equal(gs.live_objects, 3);
	/* Exactly that group's bytes (its plaintext and its one tag) died. */
	assert_int_equal(live - gs.live_bytes, v1[6].ext.group_size + CRYPTO_TAG_LEN);
	assert_true(gs.dead_bytes >= v1[6].ext.group_size + CRYPTO_TAG_LEN);
	assert_int_equal(run_gc(st, false, &gs), 0);
	check_gt(st, 3, 8);
	check_manifests(st, "g");
	store_close(st);
	st = gc_open(f);
	check_gt(st, 3, 8);
	store_close(st);
	free(t);
}

/* Pack bytes left by imports killed before their commit are freed; nothing live is lost. */
static void child_import_and_die(struct fx *f, int after)
{
	struct store *st = gc_open(f);
	struct store_import *imp = NULL;
	char *gs = tu_fmt("%s/gone", f->root);

	if (store_import_begin(st, after % 2 ? "newds" : "keep", NULL, &imp) < 0)
		_exit(11);
	for (int i = 0; i < 6; i++) {
		char *p = tu_fmt("%s/g%d", gs, i), *name = tu_fmt("n/%d", i);
		int fd;

		if (i == after)
			raise(SIGKILL);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || store_import_add_file(imp, name, fd) < 0)
			_exit(12);
		close(fd);
		free(p);
		free(name);
	}
	raise(SIGKILL);
	_exit(13);
}

static void test_gc_interrupted_imports(void **state)
{
	struct fx *f = *state;
	struct store_gc_stats s;
	struct store *st;
	uint64_t before;

	mixed_store(f);
	st = gc_open(f);
	drop_dataset(st, "gone");
	assert_int_equal(run_gc(st, false, &s), 0);
	store_close(st);
	before = packs_bytes(f);
	for (int k = 1; k <= 6; k++) {
		int status = 0;
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0)
			child_import_and_die(f, k);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));
	}
	assert_true(packs_bytes(f) > before + 1000000);
	st = gc_open(f);
	assert_int_equal(run_gc(st, true, &s), 0);
	assert_true(s.reclaimable_bytes > 1000000);
	assert_int_equal(run_gc(st, false, &s), 0);
	assert_true(packs_bytes(f) <= before);
	check_keep(st, 1);
	check_keep_v2(st);
	assert_int_equal(run_gc(st, true, &s), 0);
	assert_int_equal(s.reclaimable_bytes, 0);
	store_close(st);
}

/* A reader with an object open in a pack the collection compacts keeps reading it byte for
 * byte (the pack stays open, unlinked, until the object closes); a new open finds the object in
 * its new pack. */
static void test_gc_open_handle_reads_through(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store_inode ino, now;
	struct store_object *obj = NULL;
	struct store_reader *rd = NULL;
	struct store_gc_stats s;
	size_t n = keep_sizes[1];
	uint8_t *want = malloc(n), *have = malloc(n);
	char *packs = tu_fmt("%s/packs", f->store), *pname;
	struct store *st;
	size_t got = 0;

	mixed_store(f);
	st = gc_open(f);
	assert_int_equal(store_dataset_get(st, "keep", &di), 0);
	assert_int_equal(store_path_lookup(st, di.id, 2, "k1", &ino), 0);
	assert_int_equal(store_object_open(st, di.id, &ino, &obj), 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	/* Half read before the collection, half after. */
	assert_int_equal(store_object_read(rd, obj, 0, n / 2, have), (ssize_t)(n / 2));
	drop_dataset(st, "gone");
	assert_int_equal(run_gc(st, false, &s), 0);
	pname = tu_fmt("%s/%016llx.pack", packs, (unsigned long long)ino.ext.pack_id);
	assert_int_equal(access(pname, F_OK), -1);   /* compacted: unlinked */
	for (got = n / 2; got < n;) {
		ssize_t r = store_object_read(rd, obj, got, 1000, have + got);

		assert_true(r > 0);
		got += (size_t)r;
	}
	tu_fill(want, n, 799);
	assert_memory_equal(have, want, n);
	store_object_close(obj);
	store_reader_free(rd);
	/* The inode record still names the old place; the open follows the move record. */
	assert_int_equal(store_path_lookup(st, di.id, 2, "k1", &now), 0);
	assert_int_equal(now.ext.pack_id, ino.ext.pack_id);
	check_file(st, "keep", 2, "k1", n, 799);
	store_close(st);
	free(pname);
	free(packs);
	free(want);
	free(have);
}

/* kill -9 at every step of a collection: after each, every live byte reads, and a collection run
 * to its end afterwards frees everything there was to free. */
struct gc_kill {
	enum store_gc_step step;
	unsigned nth;        /* the nth call of that step */
	unsigned seen;
};

static void gc_kill_progress(void *ctx, enum store_gc_step step, uint64_t done, uint64_t total)
{
	struct gc_kill *k = ctx;

	(void)done;
	(void)total;
	if (step == k->step && ++k->seen == k->nth)
		raise(SIGKILL);
}

static void test_gc_killed_at_every_step(void **state)
{
	static const struct gc_kill kills[] = {
		{ STORE_GC_SCANNED, 1, 0 },   { STORE_GC_COPIED, 1, 0 },  { STORE_GC_SYNCED, 1, 0 },
		{ STORE_GC_COMMITTED, 1, 0 }, { STORE_GC_REMOVED, 1, 0 }, { STORE_GC_REMOVED, 2, 0 },
		{ STORE_GC_DONE, 1, 0 },
	};
	struct fx *f = *state;
	struct store_gc_stats s;
	struct store *st;
	uint64_t want_after = 0;

	mixed_store(f);
	/* What a collection without a kill leaves, on a copy of the store. */
	{
		char *copy = tu_fmt("%s/copy", f->root);
		char *keep = f->store;

		tu_copy_tree(f->store, copy);
		f->store = copy;
		st = gc_open(f);
		drop_dataset(st, "gone");
		drop_version(st, "keep", 1);
		assert_int_equal(run_gc(st, false, &s), 0);
		store_close(st);
		want_after = packs_bytes(f);
		f->store = keep;
		tu_rm_rf(copy);
		free(copy);
	}
	st = gc_open(f);
	drop_dataset(st, "gone");
	drop_version(st, "keep", 1);
	store_close(st);
	for (size_t k = 0; k < ARRAY_SIZE(kills); k++) {
		int status = 0;
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			struct gc_kill kill = kills[k];
			struct store_gc_options o = { .progress = gc_kill_progress, .ctx = &kill };

			st = gc_open(f);
			store_gc(st, &o, &s);
			_exit(0);   /* the step was never reached: a later kill is tested */
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* Every step listed is reached (the first kill is at the first step; a step is
		 * only reached again in a later child if the earlier kills left work to do). */
		assert_true(WIFSIGNALED(status));
		st = gc_open(f);
		check_keep_v2(st);
		check_manifests(st, "keep");
		store_close(st);
	}
	st = gc_open(f);
	assert_int_equal(run_gc(st, false, &s), 0);
	assert_int_equal(run_gc(st, true, &s), 0);
	assert_int_equal(s.reclaimable_bytes, 0);
	check_keep_v2(st);
	store_close(st);
	/* Within a header and some alignment of what a collection without kills leaves. */
	assert_true(packs_bytes(f) <= want_after + 8192);
}

/* A collection never deletes on the word of an index changed without the keys: a record
 * removed, a dataset record removed under its versions, a pack record removed or cut short, a
 * move record altered: each is refused, and no pack byte goes. */
static void test_gc_refuses_tampered_index(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store_gc_stats s;
	struct store *st;
	uint64_t before;
	uint8_t k[IKEY_LEN], dk[DSKEY_LEN], pk[PACKKEY_LEN], v[8];
	struct store_inode ino;
	rocksdb_writebatch_t *wb;
	char *idx = tu_fmt("%s/index", f->store), *saved = tu_fmt("%s/index.saved", f->root);

	mixed_store(f);
	tu_copy_flat_dir(idx, saved);
	before = packs_bytes(f);

	/* 1. One inode record of keep v2 removed (directory digests alone would catch it only
	 * on a listing): the version no longer matches its manifest. */
	st = gc_open(f);
	assert_int_equal(store_dataset_get(st, "keep", &di), 0);
	assert_int_equal(store_path_lookup(st, di.id, 2, "k3", &ino), 0);
	ikey(k, di.id, 2, ino.ino);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_INODES], (const char *)k, sizeof(k));
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	drop_dataset(st, "gone");
	assert_int_equal(store_gc(st, NULL, &s), -EBADMSG);
	store_close(st);
	assert_int_equal(packs_bytes(f), before);
	tu_rm_rf(idx);
	tu_copy_flat_dir(saved, idx);

	/* 2. keep's dataset record removed, its versions left. */
	st = gc_open(f);
	dskey_hash(st->ix_name, "keep", dk);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_DATASETS], (const char *)dk, sizeof(dk));
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	drop_dataset(st, "gone");
	assert_int_equal(store_gc(st, NULL, &s), -EBADMSG);
	store_close(st);
	assert_int_equal(packs_bytes(f), before);
	tu_rm_rf(idx);
	tu_copy_flat_dir(saved, idx);

	/* 3. The pack record of a pack with live objects removed (meta is in clear), and 4. cut
	 * below its objects: either would make live bytes look like an interrupted import's. */
	for (int t = 0; t < 2; t++) {
		st = gc_open(f);
		assert_int_equal(store_dataset_get(st, "keep", &di), 0);
		assert_int_equal(store_path_lookup(st, di.id, 2, "k3", &ino), 0);
		packkey(pk, ino.ext.pack_id);
		put_le64(v, PACK_HEADER_LEN);
		wb = rocksdb_writebatch_create();
		if (t == 0)
			rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_META], (const char *)pk,
						     sizeof(pk));
		else
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], (const char *)pk,
						  sizeof(pk), (const char *)v, sizeof(v));
		assert_int_equal(index_write(&st->ix, wb, true), 0);
		rocksdb_writebatch_destroy(wb);
		store_close(st);
		st = gc_open(f);
		drop_dataset(st, "gone");
		assert_int_equal(store_gc(st, NULL, &s), -EBADMSG);
		store_close(st);
		assert_int_equal(packs_bytes(f), before);
		tu_rm_rf(idx);
		tu_copy_flat_dir(saved, idx);
	}

	/* 5. After a collection that moved objects, a move record altered: refused too, and a
	 * read of the object fails (EIO), never returns other bytes. */
	st = gc_open(f);
	drop_dataset(st, "gone");
	assert_int_equal(run_gc(st, false, &s), 0);
	assert_true(s.objects_moved > 0);
	before = packs_bytes(f);
	{
		rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro,
								    st->ix.cf[CF_META]);
		size_t kl, vl;
		char *key, *val;
		const char *kk, *vv;

		rocksdb_iter_seek(it, "move/", 5);
		assert_true(rocksdb_iter_valid(it));
		kk = rocksdb_iter_key(it, &kl);
		vv = rocksdb_iter_value(it, &vl);
		key = malloc(kl);
		val = malloc(vl);
		memcpy(key, kk, kl);
		memcpy(val, vv, vl);
		rocksdb_iter_destroy(it);
		val[vl - 1] ^= 1;
		wb = rocksdb_writebatch_create();
		rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], key, kl, val, vl);
		assert_int_equal(index_write(&st->ix, wb, true), 0);
		rocksdb_writebatch_destroy(wb);
		free(key);
		free(val);
	}
	assert_int_equal(store_gc(st, NULL, &s), -EBADMSG);
	assert_int_equal(packs_bytes(f), before);
	store_close(st);
	free(idx);
	free(saved);
}

/* Erasing version 1 (store_erase: its records gone, its key shredded) must not destroy a file
 * version 2 shares with it: version 2 reads byte for byte after the erasure, after a collection
 * (which frees what only version 1 held) and after a reopen. */
static void test_gc_after_erasure_keeps_shared(void **state)
{
	struct fx *f = *state;
	struct store_erasure er = { 0 };
	struct store_gc_stats s;
	struct store *st;
	uint64_t before;

	mixed_store(f);
	st = gc_open(f);
	assert_int_equal(store_erase(st, "keep", 1, &er), 0);
	store_erasure_free(&er);
	check_keep_v2(st);
	before = packs_bytes(f);
	assert_int_equal(run_gc(st, true, &s), 0);
	/* keep v1's own k1 object (5000 bytes, dense) is dead now, with the rest of "gone"'s
	 * neighbours untouched: only what no version names. */
	assert_int_equal(s.live_objects, ARRAY_SIZE(keep_sizes) + 6 + 1);
	assert_int_equal(run_gc(st, false, &s), 0);
	check_keep_v2(st);
	check_manifests(st, "keep");
	assert_true(packs_bytes(f) <= before);
	store_close(st);
	st = gc_open(f);
	check_keep_v2(st);
	/* And the whole dataset "gone" erased: its bytes go at the next collection. */
	assert_int_equal(store_erase(st, "gone", 0, &er), 0);
	store_erasure_free(&er);
	assert_int_equal(run_gc(st, false, &s), 0);
	assert_int_equal(s.live_objects, ARRAY_SIZE(keep_sizes));
	assert_true(packs_bytes(f) < before - 6 * 300000);
	check_keep_v2(st);
	store_close(st);
	st = gc_open(f);
	check_keep_v2(st);
	store_close(st);
}

/* A committed version's clear state byte flipped to "erased": the collection opens the record
 * to check, refuses, and frees nothing (its objects would otherwise look dead). */
static void test_gc_refuses_forged_tombstone(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store_gc_stats s;
	struct store *st;
	rocksdb_writebatch_t *wb;
	uint8_t k[VKEY_LEN];
	char *v;
	size_t n;
	uint64_t before;

	mixed_store(f);
	st = gc_open(f);
	assert_int_equal(store_dataset_get(st, "keep", &di), 0);
	/* Version 1, not the latest (whose record the dataset check opens anyway). */
	vkey(k, di.id, 1);
	assert_int_equal(index_get(&st->ix, CF_VERSIONS, k, sizeof(k), &v, &n), 0);
	v[0] = VERSION_ERASED;
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_VERSIONS], (const char *)k, sizeof(k), v, n);
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	free(v);
	before = packs_bytes(f);
	assert_int_equal(store_gc(st, NULL, &s), -EBADMSG);
	assert_int_equal(packs_bytes(f), before);
	store_close(st);
}

/* What the integrity hook was told last. */
struct orphan_log {
	int calls;
	char what[256];
};

static void orphan_hook(void *ctx, uint64_t dsid, uint32_t version, const char *what)
{
	struct orphan_log *h = ctx;

	(void)dsid;
	(void)version;
	h->calls++;
	snprintf(h->what, sizeof(h->what), "%s", what);
}

/* Every record of version ver of dataset dsid in cf, as a write batch that puts them back. */
static void save_version_records(struct store *st, enum store_cf cf, uint64_t dsid, uint32_t ver,
				 rocksdb_writebatch_t *wb, size_t *ret_n)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro, st->ix.cf[cf]);
	uint8_t lo[VKEY_LEN];

	vkey(lo, dsid, ver);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < VKEY_LEN || memcmp(k, lo, VKEY_LEN) != 0)
			break;
		rocksdb_writebatch_put_cf(wb, st->ix.cf[cf], k, kl, v, vl);
		++*ret_n;
	}
	rocksdb_iter_destroy(it);
}

static int count_entry(void *ctx, const char *name, uint64_t ino, uint32_t type)
{
	(void)name;
	(void)ino;
	(void)type;
	++*(int *)ctx;
	return 0;
}

/* The collection, and its dry run (the check of the whole index, FORMAT 6.11), fail on records
 * no committed version accounts for, as an integrity failure (-EBADMSG, the hook told why), and
 * free nothing: (1) an inode record that no entry names, sealed with the version's own keys
 * (lookups and listings never reach it: nothing names it); (2) records of a version number that
 * has no version record; (3) the inode records and entries of an erased version put back from a
 * copy of the index taken before the erasure (sealed, under keys that are gone: names and
 * metadata the erasure removed). (1) was found by the version scan already; (2) and (3) fail on
 * the code before this test: the collection skipped erased versions and looked only for records
 * of unknown datasets. The import's scan of the previous version finds (1) too, and shares
 * nothing from that version. */
static void test_gc_finds_orphan_records(void **state)
{
	struct fx *f = *state;
	char *idx = tu_fmt("%s/index", f->store), *saved = tu_fmt("%s/index.saved", f->root);
	char *ks = tu_fmt("%s/keep", f->root);
	struct store_dataset_info di;
	struct store_version_info vi;
	struct store_erasure er = { 0 };
	struct store_import_stats is;
	struct store_gc_stats s;
	struct store_inode in;
	struct orphan_log h = { 0 };
	struct ds_keys k = { 0 };
	struct store_import *imp = NULL;
	rocksdb_writebatch_t *wb;
	uint8_t key[IKEY_LEN], pt[512];
	struct buf sealed;
	uint64_t before, total;
	uint32_t ver = 0;
	size_t n = 0, pl = 0;
	char *v = NULL;
	int count = 0, dfd;
	struct store *st;

	mixed_store(f);
	tu_copy_flat_dir(idx, saved);
	before = packs_bytes(f);

	/* 1. k0's inode record of keep v2, sealed again at the number after the version's last. */
	st = gc_open(f);
	store_set_integrity_hook(st, orphan_hook, &h);
	assert_int_equal(store_dataset_get(st, "keep", &di), 0);
	assert_int_equal(store_version_get(st, di.id, 2, &vi), 0);
	total = vi.files + vi.dirs;
	assert_int_equal(store_path_lookup(st, di.id, 2, "k0", &in), 0);
	ikey(key, di.id, 2, in.ino);
	assert_int_equal(index_get(&st->ix, CF_INODES, key, sizeof(key), &v, &n), 0);
	assert_int_equal(store_version_keys(st, di.id, 2, &k), 0);
	assert_int_equal(index_unseal(k.seal, CF_INODES, key, sizeof(key), 0, v, n, pt, sizeof(pt),
				      &pl), 0);
	free(v);
	ikey(key, di.id, 2, total + 1);
	buf_init(&sealed, 4096);
	assert_int_equal(index_seal(k.seal, CF_INODES, key, sizeof(key), NULL, 0, pt, pl, &sealed),
			 0);
	store_keys_put(st, &k);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_INODES], (const char *)key, sizeof(key),
				  (const char *)sealed.data, sealed.len);
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	buf_free(&sealed);
	/* Nothing that reads by name meets it. */
	assert_int_equal(store_dir_foreach(st, di.id, 2, STORE_ROOT_INO, NULL, count_entry, &count),
			 0);
	assert_int_equal(count, (int)total - 1);
	assert_int_equal(h.calls, 0);
	/* The dry run and the collection do. */
	assert_int_equal(store_gc(st, &(struct store_gc_options){ .dry_run = true }, &s), -EBADMSG);
	assert_int_equal(h.calls, 1);
	assert_non_null(strstr(h.what, "has no entry"));
	assert_int_equal(store_gc(st, NULL, &s), -EBADMSG);
	assert_int_equal(packs_bytes(f), before);
	/* So does the next import's scan of version 2: version 3 shares nothing from it. */
	h.calls = 0;
	assert_int_equal(store_import_begin(st, "keep", NULL, &imp), 0);
	dfd = open(ks, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	close(dfd);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, 3);
	store_import_get_stats(imp, &is);
	store_import_free(imp);
	assert_int_equal(is.reused_files, 0);
	assert_true(h.calls >= 1);
	assert_non_null(strstr(h.what, "has no entry"));
	store_close(st);
	tu_rm_rf(idx);
	tu_copy_flat_dir(saved, idx);

	/* 2. keep v2's root record copied to version 9, of which no record exists. */
	st = gc_open(f);
	store_set_integrity_hook(st, orphan_hook, &h);
	ikey(key, di.id, 2, STORE_ROOT_INO);
	assert_int_equal(index_get(&st->ix, CF_INODES, key, sizeof(key), &v, &n), 0);
	ikey(key, di.id, 9, STORE_ROOT_INO);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_INODES], (const char *)key, sizeof(key), v, n);
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	free(v);
	h.calls = 0;
	assert_int_equal(store_gc(st, &(struct store_gc_options){ .dry_run = true }, &s), -EBADMSG);
	assert_int_equal(h.calls, 1);
	assert_non_null(strstr(h.what, "without its version record"));
	store_close(st);
	tu_rm_rf(idx);
	tu_copy_flat_dir(saved, idx);

	/* 3. keep v1's inode records and entries, taken before its erasure, put back after it. */
	st = gc_open(f);
	store_set_integrity_hook(st, orphan_hook, &h);
	wb = rocksdb_writebatch_create();
	n = 0;
	save_version_records(st, CF_INODES, di.id, 1, wb, &n);
	save_version_records(st, CF_DIRENTS, di.id, 1, wb, &n);
	assert_true(n > 2);
	assert_int_equal(store_erase(st, "keep", 1, &er), 0);
	store_erasure_free(&er);
	assert_int_equal(run_gc(st, true, &s), 0);
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	h.calls = 0;
	before = packs_bytes(f);
	assert_int_equal(store_gc(st, &(struct store_gc_options){ .dry_run = true }, &s), -EBADMSG);
	assert_int_equal(h.calls, 1);
	assert_non_null(strstr(h.what, "after its erasure"));
	assert_int_equal(store_gc(st, NULL, &s), -EBADMSG);
	assert_int_equal(packs_bytes(f), before);
	/* Version 2 reads on. */
	check_keep_v2(st);
	store_close(st);
	free(ks);
	free(idx);
	free(saved);
}

/* No collection while an import runs, and no import while a collection runs. */
static void try_import(void *ctx, enum store_gc_step step, uint64_t done, uint64_t total)
{
	struct store *st = ctx;
	struct store_import *imp = NULL;

	(void)done;
	(void)total;
	if (step == STORE_GC_SCANNED) {
		assert_int_equal(store_import_begin(st, "x", NULL, &imp), -EBUSY);
		assert_non_null(strstr(err_detail(), "garbage collection"));
	}
}

static void test_gc_excludes_import(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL;
	struct store_gc_stats s;
	struct store_gc_options o = { .progress = try_import };

	assert_int_equal(store_import_begin(st, "x", NULL, &imp), 0);
	assert_int_equal(store_gc(st, NULL, &s), -EBUSY);
	store_import_free(imp);
	o.ctx = st;
	assert_int_equal(store_gc(st, &o, &s), 0);
	store_close(st);
}

/* Nodes (issue 17) over a store the primary collects: a node never collects; a node that follows
 * the primary drops the retired packs from its table at its catch-up, keeps reading the object it
 * holds open, and opens every other object where the collection moved it; a node that did not
 * catch up (it lags more than the primary's grace) fails closed on an object of a removed pack,
 * with a reason that says so, and reads it once it catches up. */
static void test_gc_and_nodes(void **state)
{
	struct fx *f = *state;
	char *d1 = tu_fmt("%s/node1", f->root), *d2 = tu_fmt("%s/node2", f->root);
	struct store_open_options o1 = { .secondary_dir = d1 }, o2 = { .secondary_dir = d2 };
	struct store_dataset_info di;
	struct store_inode ino, lag_ino;
	struct store_object *obj = NULL, *lag_obj = NULL;
	struct store_reader *rd = NULL;
	struct store_gc_stats s;
	struct store *st, *node, *lag;
	size_t n = keep_sizes[1], got;
	uint8_t *want = malloc(n), *have = malloc(n);
	uint64_t seq = 0;

	mixed_store(f);
	st = gc_open(f);
	node = fx_open_opts(f, &o1);
	lag = fx_open_opts(f, &o2);
	assert_int_equal(store_gc(node, NULL, &s), -EROFS);
	assert_non_null(strstr(err_detail(), "never collects"));
	/* node holds keep@2/k1 open, half read; lag has looked it up, not opened it. */
	assert_int_equal(store_dataset_get(node, "keep", &di), 0);
	assert_int_equal(store_path_lookup(node, di.id, 2, "k1", &ino), 0);
	assert_int_equal(store_object_open(node, di.id, &ino, &obj), 0);
	assert_int_equal(store_reader_new(node, &rd), 0);
	assert_int_equal(store_object_read(rd, obj, 0, n / 2, have), (ssize_t)(n / 2));
	lag_ino = inode_of(lag, "keep", 2, "k1");
	/* The primary collects: k1's pack is compacted, its file removed. */
	drop_dataset(st, "gone");
	assert_int_equal(run_gc(st, false, &s), 0);
	assert_true(s.packs_compacted > 0);
	assert_int_equal(store_catch_up(node, &seq), 0);
	pthread_mutex_lock(&node->lock);
	assert_false(store_pack_committed_locked(node, ino.ext.pack_id, NULL));
	pthread_mutex_unlock(&node->lock);
	for (got = n / 2; got < n;) {
		ssize_t r = store_object_read(rd, obj, got, 1000, have + got);

		assert_true(r > 0);
		got += (size_t)r;
	}
	tu_fill(want, n, 799);
	assert_memory_equal(have, want, n);
	store_object_close(obj);
	store_reader_free(rd);
	check_keep(node, 1);
	check_keep_v2(node);
	/* The lagging node: fails closed, and says why. */
	assert_int_equal(store_object_open(lag, di.id, &lag_ino, &lag_obj), -ESTALE);
	assert_null(lag_obj);
	assert_non_null(strstr(err_detail(), "garbage collector removed it"));
	assert_int_equal(store_catch_up(lag, &seq), 0);
	check_keep_v2(lag);
	store_close(lag);
	store_close(node);
	store_close(st);
	free(want);
	free(have);
	free(d1);
	free(d2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
		T(test_dedup_unchanged_stores_nothing),
		T(test_dedup_changed_files_new_objects),
		T(test_dedup_hash_keyed_per_dataset),
		T(test_dedup_v2_reads_without_v1),
		T(test_dedup_damaged_latest_shares_nothing),
		T(test_dedup_scan_beside_begin),
		T(test_dedup_stamp_is_keyed_blake2b),
		T(test_gc_frees_erased_dataset),
		T(test_gc_keeps_shared_objects),
		T(test_gc_interrupted_imports),
		T(test_gc_open_handle_reads_through),
		T(test_gc_killed_at_every_step),
		T(test_gc_refuses_tampered_index),
		T(test_gc_after_erasure_keeps_shared),
		T(test_gc_groups_across_versions),
		T(test_gc_refuses_forged_tombstone),
		T(test_gc_finds_orphan_records),
		T(test_gc_excludes_import),
		T(test_gc_and_nodes),
#undef T
	};

	if (crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
