/* test_gc: versions that share unchanged files, and the garbage collector that frees what no
 * version uses (issue 16 points 4 and 5), against real files and RocksDB. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/common.h"
#include "common/err.h"
#include "store/store.h"
#include "store/store_internal.h" /* white-box: index records removed as an erasure would */
#include "tests/testutil.h"

#define PASS "correct horse battery staple"

struct fx {
	char *root;
	char *store;
	char *src;
	crypto_secret *pass;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->root = tu_mkdtemp("gc");
	f->store = tu_fmt("%s/store", f->root);
	f->src = tu_fmt("%s/src", f->root);
	assert_int_equal(mkdir(f->src, 0755), 0);
	f->pass = tu_pass(PASS);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tu_rm_rf(f->root);
	free(f->root);
	free(f->store);
	free(f->src);
	crypto_secret_free(f->pass);
	free(f);
	return 0;
}

static struct store *fx_create(struct fx *f)
{
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	struct store *st = NULL;
	int r = store_create(f->store, f->pass, &kdf, &st);

	if (r < 0)
		fprintf(stderr, "store_create: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	return st;
}

static struct store *fx_open_opts(struct fx *f, const struct store_open_options *o)
{
	struct store *st = NULL;
	int r = store_open(f->store, f->pass, o, &st);

	if (r < 0)
		fprintf(stderr, "store_open: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	return st;
}

static struct store *fx_open(struct fx *f)
{
	return fx_open_opts(f, NULL);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
		T(test_dedup_unchanged_stores_nothing),
		T(test_dedup_changed_files_new_objects),
		T(test_dedup_hash_keyed_per_dataset),
		T(test_dedup_v2_reads_without_v1),
#undef T
	};

	if (crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
