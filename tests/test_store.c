/* test_store: the pack store, index, importer and read path, against real files and RocksDB. */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>

#include "audit/audit.h"
#include "audit/note.h"
#include "audit/verify.h"
#include "cli/enclavectl.h"       /* ctl_store_upgrade_run(): what `store upgrade` runs */
#include "common/common.h"
#include "common/err.h"
#include "store/store.h"
#include "store/keyring.h"
#include "store/store_internal.h" /* white-box: forging index records */
#include "tests/oldkeys.h"
#include "tests/storefx.h"
#include "tests/testutil.h"

#define PASS "correct horse battery staple"
#define CS CRYPTO_CHUNK_DEFAULT

static int fx_setup(void **state)
{
	return storefx_setup(state, "store", PASS);
}


/* Import the whole source directory as a new version of name; returns the version. */
static uint32_t import_src(struct store *st, const char *name, const char *src,
			   const struct store_import_options *o)
{
	struct store_import *imp = NULL;
	uint32_t ver = 0;
	int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	assert_true(dfd >= 0);
	r = store_import_begin(st, name, o, &imp);
	if (r == 0)
		r = store_import_add_tree(imp, dfd);
	if (r == 0)
		r = store_import_commit(imp, &ver);
	if (r < 0)
		fprintf(stderr, "import: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	store_import_free(imp);
	close(dfd);
	return ver;
}

/* Read the whole object at path through the store, in reads of step bytes. */
static uint8_t *read_path(struct store *st, const char *ds, uint32_t ver, const char *path,
			  size_t step, size_t *ret_len)
{
	struct store_dataset_info di;
	struct store_inode ino;
	struct store_object *obj = NULL;
	struct store_reader *rd = NULL;
	uint8_t *b;
	size_t got = 0;

	assert_int_equal(store_dataset_get(st, ds, &di), 0);
	assert_int_equal(store_path_lookup(st, di.id, ver, path, &ino), 0);
	assert_int_equal(ino.type, STORE_INODE_FILE);
	assert_int_equal(store_object_open(st, di.id, &ino, &obj), 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	b = malloc(ino.size + 1);
	for (;;) {
		ssize_t n = store_object_read(rd, obj, got, step, b + got);

		if (n < 0)
			fprintf(stderr, "read %s: %s: %s\n", path, strerror((int)-n), err_detail());
		assert_true(n >= 0);
		if (n == 0)
			break;
		got += (size_t)n;
	}
	assert_int_equal(got, ino.size);
	store_reader_free(rd);
	store_object_close(obj);
	*ret_len = got;
	return b;
}

/* Each names[i] (i < n) of version ver of dataset ds reads back through the store as the file
 * paths[i], byte for byte. */
static void assert_read_back(struct store *st, const char *ds, uint32_t ver,
			     const char *const *names, char *const *paths, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t got, wlen;
		uint8_t *want = tu_read_file(paths[i], &wlen);
		uint8_t *have = read_path(st, ds, ver, names[i], CS, &got);

		assert_int_equal(got, wlen);
		assert_memory_equal(have, want, got);
		free(have);
		free(want);
	}
}

/* ---- Round trips --------------------------------------------------------------------------- */

static const size_t rt_sizes[] = {
	0, 1, CS - 1, CS, CS + 1, 3 * CS + 17, 64u << 20,
};

static void roundtrip(void **state, uint32_t alg, bool direct)
{
	struct fx *f = *state;
	struct store_import_options o = { .alg = alg };
	struct store_open_options oo = { .direct_io = direct };
	struct store_dataset_info di;
	struct store_reader *rd = NULL;
	struct store *st = fx_create(f);
	uint32_t ver;

	for (size_t i = 0; i < ARRAY_SIZE(rt_sizes); i++) {
		char *p = tu_fmt("%s/f%zu", f->src, rt_sizes[i]);

		tu_write_seeded(p, rt_sizes[i], 100 + i);
		free(p);
	}
	ver = import_src(st, "rt", f->src, &o);
	assert_int_equal(ver, 1);
	store_close(st);

	/* Everything below reads from disk, through a freshly opened store. */
	st = fx_open_opts(f, &oo);
	assert_int_equal(store_dataset_get(st, "rt", &di), 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	for (size_t i = 0; i < ARRAY_SIZE(rt_sizes); i++) {
		size_t n = rt_sizes[i], got;
		uint8_t *want = malloc(n + 1);
		uint8_t *tmp = malloc(n + 4096);
		char *name = tu_fmt("f%zu", n);
		struct store_inode ino;
		struct store_object *obj = NULL;
		uint8_t *have;

		tu_fill(want, n, 100 + i);
		/* Whole object, in 1 MiB reads and in odd-sized reads. */
		have = read_path(st, "rt", ver, name, 1u << 20, &got);
		assert_int_equal(got, n);
		assert_memory_equal(have, want, n);
		free(have);
		have = read_path(st, "rt", ver, name, 12345, &got);
		assert_memory_equal(have, want, n);
		free(have);

		/* Random ranges, some running past the end. */
		assert_int_equal(store_path_lookup(st, di.id, ver, name, &ino), 0);
		assert_int_equal(ino.size, n);
		assert_int_equal(store_object_open(st, di.id, &ino, &obj), 0);
		assert_int_equal(store_object_size(obj), n);
		for (int k = 0; k < 60; k++) {
			uint64_t rnd[2];
			uint64_t off;
			size_t len;
			ssize_t r;

			tu_fill((uint8_t *)rnd, sizeof(rnd), (uint64_t)k * 7919 + i);
			off = n ? rnd[0] % (n + 10) : rnd[0] % 4;
			len = (size_t)(rnd[1] % (3 * CS + 4096));
			r = store_object_read(rd, obj, off, len, tmp);
			if (off >= n) {
				assert_int_equal(r, 0);
				continue;
			}
			assert_int_equal(r, (ssize_t)MIN((uint64_t)len, n - off));
			assert_memory_equal(tmp, want + off, (size_t)r);
		}
		store_object_close(obj);
		free(name);
		free(want);
		free(tmp);
	}
	store_reader_free(rd);
	store_close(st);
}

static void test_roundtrip_aes(void **state)
{
	roundtrip(state, CRYPTO_AEAD_AES256GCM, false);
}

static void test_roundtrip_chacha(void **state)
{
	roundtrip(state, CRYPTO_AEAD_CHACHA20POLY1305, false);
}

static void test_roundtrip_direct_io(void **state)
{
	roundtrip(state, 0, true);
}

/* Chunk sizes other than the default, including the smallest and a large one. With 4 KiB chunks
 * the 33 MiB file has 8449 chunks: more tags (135 KiB) than the importer holds at once (64 KiB,
 * 4096 tags), so its tags are written in three pieces. */
#define CS_FILE ((33u << 20) + 5)
static void test_chunk_sizes(void **state)
{
	struct fx *f = *state;
	static const uint32_t sizes[] = { CRYPTO_CHUNK_MIN, 1u << 20, CRYPTO_CHUNK_MAX };
	struct store *st = fx_create(f);
	char *p = tu_fmt("%s/data", f->src);
	uint8_t *want = malloc(CS_FILE);

	tu_write_seeded(p, CS_FILE, 5);
	tu_seed_file(5000, 6, "%s/after", f->src); /* the object after it must not be disturbed */
	tu_fill(want, CS_FILE, 5);
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		struct store_import_options o = { .chunk_size = sizes[i] };
		uint8_t *have, small[5000];
		uint32_t ver = import_src(st, "cs", f->src, &o);
		size_t got;

		assert_int_equal(ver, i + 1);
		have = read_path(st, "cs", ver, "data", 777777, &got);
		assert_int_equal(got, CS_FILE);
		assert_memory_equal(have, want, got);
		free(have);
		have = read_path(st, "cs", ver, "after", 4096, &got);
		tu_fill(small, sizeof(small), 6);
		assert_int_equal(got, sizeof(small));
		assert_memory_equal(have, small, got);
		free(have);
	}
	free(want);
	/* Not a power of two, too small, too large. */
	{
		static const uint32_t bad[] = { 65537, 2048, 8u << 20 };
		struct store_import *imp = NULL;

		for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
			struct store_import_options o = { .chunk_size = bad[i] };

			assert_int_equal(store_import_begin(st, "cs", &o, &imp), -EINVAL);
		}
	}
	free(p);
	store_close(st);
}

/* ---- Parallel import ------------------------------------------------------------------------ */

/* A field of /proc/self/status in KiB (or a count), -1 if absent. */
static long proc_status(const char *field)
{
	FILE *fp = fopen("/proc/self/status", "re");
	char line[256];
	size_t n = strlen(field);
	long v = -1;

	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp))
		if (strncmp(line, field, n) == 0 && line[n] == ':') {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	fclose(fp);
	return v;
}

/* Progress callback: the most threads this process had while the import ran. */
static void count_threads(void *ctx, const struct store_import_stats *stats)
{
	long *most = ctx;
	long t = proc_status("Threads");

	(void)stats;
	if (t > *most)
		*most = t;
}

/* Files of many sizes, large ones (encrypted by the worker pool) between small ones (encrypted
 * inline) so that buffers mix both, read back byte for byte; with 4 KiB chunks the 17 MiB file
 * has more tags than the importer holds at once, so the pool is drained mid-object too. */
static void test_import_parallel_identical(void **state)
{
	struct fx *f = *state;
	static const size_t sizes[] = {
		0, 1, 4095, 4096, (256u << 10) - 1, 256u << 10, (256u << 10) + 1, (1u << 20) - 1,
		1u << 20, (1u << 20) + 1, (1u << 20) + (64u << 10) + 3, (5u << 20) + 7,
		(17u << 20) + 1, 3u << 20,
	};
	static const uint32_t chunks[] = { 0, CRYPTO_CHUNK_MIN, 1u << 20 };
	struct store *st = fx_create(f);

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
		tu_seed_file(sizes[i], 700 + i, "%s/f%02zu", f->src, i);
	for (size_t c = 0; c < ARRAY_SIZE(chunks); c++) {
		long threads = 0;
		struct store_import_options o = { .chunk_size = chunks[c],
						  .progress = count_threads,
						  .progress_ctx = &threads };
		uint32_t ver = import_src(st, "par", f->src, &o);

		assert_int_equal(ver, c + 1);
		/* The pool ran (one worker per CPU, none on a single CPU). */
		if (sysconf(_SC_NPROCESSORS_ONLN) > 1)
			assert_true(threads > 1);
		for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
			char *name = tu_fmt("f%02zu", i);
			uint8_t *want = malloc(sizes[i] + 1), *have;
			size_t got;

			tu_fill(want, sizes[i], 700 + i);
			have = read_path(st, "par", ver, name, 1u << 20, &got);
			assert_int_equal(got, sizes[i]);
			assert_memory_equal(have, want, got);
			free(have);
			free(want);
			free(name);
		}
	}
	store_close(st);
}

/* A 256 MiB file imports with a fixed buffer budget: the process's peak RSS grows by far less
 * than the file (the source is a memfd never mapped, so its pages are not ours). */
static void test_import_parallel_memory_bounded(void **state)
{
	struct fx *f = *state;
	const size_t size = 256u << 20, step = 4u << 20;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL;
	uint8_t *block = malloc(step);
	uint32_t ver = 0;
	long before, peak;
	int fd = memfd_create("src", MFD_CLOEXEC), cfd;
	uint8_t *have;
	size_t got;

	assert_true(fd >= 0);
	for (size_t off = 0; off < size; off += step) {
		tu_fill(block, step, 900 + off / step);
		assert_int_equal(pwrite(fd, block, step, (off_t)off), (ssize_t)step);
	}
	/* Peak RSS starts again from the current RSS ("5" resets VmHWM, Linux 4.0+). */
	cfd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	assert_true(cfd >= 0);
	assert_int_equal(write(cfd, "5", 1), 1);
	close(cfd);
	before = proc_status("VmRSS");
	assert_int_equal(store_import_begin(st, "big", NULL, &imp), 0);
	assert_int_equal(store_import_add_file(imp, "big", fd), 0);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	store_import_free(imp);
	peak = proc_status("VmHWM");
	assert_true(before > 0 && peak > 0);
	/* 8 write buffers of 1 MiB, tags, index batch, threads' stacks: well under 64 MiB. */
	if (peak - before >= 64 * 1024)
		fprintf(stderr, "import of 256 MiB raised peak RSS by %ld KiB\n", peak - before);
	assert_true(peak - before < 64 * 1024);

	/* And it reads back whole, 4 MiB at a time. */
	have = read_path(st, "big", ver, "big", step, &got);
	assert_int_equal(got, size);
	for (size_t off = 0; off < size; off += step) {
		tu_fill(block, step, 900 + off / step);
		assert_memory_equal(have + off, block, step);
	}
	free(have);
	free(block);
	close(fd);
	store_close(st);
}

/* ---- Tampering ----------------------------------------------------------------------------- */

/* Where an object lives, read before the store is closed. */
struct loc {
	uint64_t dsid;
	struct store_inode ino;
	char *pack;     /* path of its pack file */
};

static struct loc locate(struct fx *f, struct store *st, const char *ds, const char *path)
{
	struct store_dataset_info di;
	struct loc l;

	assert_int_equal(store_dataset_get(st, ds, &di), 0);
	l.dsid = di.id;
	assert_int_equal(store_path_lookup(st, di.id, di.latest_version, path, &l.ino), 0);
	l.pack = tu_fmt("%s/packs/%016llx.pack", f->store, (unsigned long long)l.ino.ext.pack_id);
	return l;
}

static void patch(const char *pack, uint64_t off, const void *b, size_t n)
{
	int fd = open(pack, O_WRONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(pwrite_all(fd, b, n, off), 0);
	close(fd);
}

static void peek(const char *pack, uint64_t off, void *b, size_t n)
{
	int fd = open(pack, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(pread_all(fd, b, n, off), 0);
	close(fd);
}

static void flip(const char *pack, uint64_t off)
{
	uint8_t c;

	peek(pack, off, &c, 1);
	c ^= 0x10;
	patch(pack, off, &c, 1);
}

/* Read chunk idx of the object (cs bytes, or the rest); returns the read's result. */
static ssize_t read_chunk(struct store *st, const struct loc *l, uint64_t idx, uint8_t *out)
{
	struct store_object *obj = NULL;
	struct store_reader *rd = NULL;
	ssize_t r;

	assert_int_equal(store_object_open(st, l->dsid, &l->ino, &obj), 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	memset(out, 0xAA, CS);
	r = store_object_read(rd, obj, idx * CS, CS, out);
	store_reader_free(rd);
	store_object_close(obj);
	return r;
}

#define TAMPER_CHUNKS 5
#define TAMPER_SIZE (TAMPER_CHUNKS * CS - 100)

/* Set up: dataset "t" with files a and b, each TAMPER_CHUNKS chunks. Returns their locations. */
static void tamper_setup(struct fx *f, struct loc *a, struct loc *b)
{
	struct store *st = fx_create(f);
	char *pa = tu_fmt("%s/a", f->src), *pb = tu_fmt("%s/b", f->src);

	tu_write_seeded(pa, TAMPER_SIZE, 1);
	tu_write_seeded(pb, TAMPER_SIZE, 2);
	import_src(st, "t", f->src, NULL);
	*a = locate(f, st, "t", "a");
	*b = locate(f, st, "t", "b");
	store_close(st);
	free(pa);
	free(pb);
}

/* Every chunk except those in bad[] reads back correctly; those give err and leak nothing. */
static void expect_chunks(struct fx *f, const struct loc *l, uint64_t seed, uint64_t bad_mask,
			  ssize_t err)
{
	struct store *st = fx_open(f);
	uint8_t *want = malloc(TAMPER_SIZE), *out = malloc(CS);

	tu_fill(want, TAMPER_SIZE, seed);
	for (uint64_t i = 0; i < TAMPER_CHUNKS; i++) {
		size_t n = (size_t)MIN((uint64_t)CS, TAMPER_SIZE - i * CS);
		ssize_t r = read_chunk(st, l, i, out);

		if (bad_mask & (1u << i)) {
			assert_int_equal(r, err);
			/* Not one byte of the forged chunk's (garbage) plaintext reached us. */
			for (size_t j = 0; j < n; j++)
				if (out[j] != 0xAA && out[j] != 0)
					fail_msg("chunk %llu: plaintext leaked at %zu",
						 (unsigned long long)i, j);
		} else {
			assert_int_equal(r, (ssize_t)n);
			assert_memory_equal(out, want + i * CS, n);
		}
	}
	free(want);
	free(out);
	store_close(st);
}

static void loc_free(struct loc *l)
{
	free(l->pack);
}

static void test_tamper_flip_ciphertext(void **state)
{
	struct fx *f = *state;
	struct loc a, b;

	tamper_setup(f, &a, &b);
	flip(a.pack, a.ino.ext.offset + 2 * CS + 1000);
	expect_chunks(f, &a, 1, 1u << 2, -EBADMSG);
	expect_chunks(f, &b, 2, 0, 0);
	loc_free(&a);
	loc_free(&b);
}

static void test_tamper_flip_tag(void **state)
{
	struct fx *f = *state;
	struct loc a, b;

	tamper_setup(f, &a, &b);
	flip(a.pack, a.ino.ext.offset + TAMPER_SIZE + 1 * CRYPTO_TAG_LEN + 3);
	expect_chunks(f, &a, 1, 1u << 1, -EBADMSG);
	loc_free(&a);
	loc_free(&b);
}

/* A forged chunk in the middle of a whole-object read (one wave of several chunk reads in
 * flight, decrypted in order as they arrive): the read fails with -EBADMSG and nothing of the
 * forged chunk or any later one reaches the buffer; the same reader, whose ring still had the
 * wave's later reads in flight, then reads the other object and the good prefix exactly, in
 * sequential and random order, buffered and with O_DIRECT. */
static void test_tamper_mid_wave_reader_reusable(void **state)
{
	struct fx *f = *state;
	uint8_t *want_a = malloc(TAMPER_SIZE), *want_b = malloc(TAMPER_SIZE);
	uint8_t *out = malloc(TAMPER_SIZE);
	struct loc a, b;

	tamper_setup(f, &a, &b);
	flip(a.pack, a.ino.ext.offset + 2 * CS + 7);
	tu_fill(want_a, TAMPER_SIZE, 1);
	tu_fill(want_b, TAMPER_SIZE, 2);
	for (int direct = 0; direct < 2; direct++) {
		struct store_open_options oo = { .direct_io = direct };
		struct store *st = fx_open_opts(f, &oo);
		struct store_object *oa = NULL, *ob = NULL;
		struct store_reader *rd = NULL;

		assert_int_equal(store_object_open(st, a.dsid, &a.ino, &oa), 0);
		assert_int_equal(store_object_open(st, b.dsid, &b.ino, &ob), 0);
		assert_int_equal(store_reader_new(st, &rd), 0);
		for (int round = 0; round < 3; round++) {
			memset(out, 0xAA, TAMPER_SIZE);
			assert_int_equal(store_object_read(rd, oa, 0, TAMPER_SIZE, out), -EBADMSG);
			assert_string_not_equal(err_detail(), "");
			/* Chunks 0-1 may have been delivered; of 2 (forged; wiped to zeros by
			 * the failed decryption) and later, no plaintext. */
			for (size_t j = 2 * CS; j < TAMPER_SIZE; j++)
				if (out[j] != 0xAA && !(j < 3 * CS && out[j] == 0))
					fail_msg("byte %zu of a failed read was written", j);
			assert_int_equal(store_object_read(rd, ob, 0, TAMPER_SIZE, out), TAMPER_SIZE);
			assert_memory_equal(out, want_b, TAMPER_SIZE);
			assert_int_equal(store_object_read(rd, oa, 0, 2 * CS, out), 2 * CS);
			assert_memory_equal(out, want_a, 2 * CS);
		}
		/* Random and sequential reads of b mixed on the same reader. */
		for (int k = 0; k < 200; k++) {
			uint64_t rnd[2];
			uint64_t off;
			size_t len;

			tu_fill((uint8_t *)rnd, sizeof(rnd), (uint64_t)k + 77);
			off = k % 3 == 0 ? (uint64_t)(k / 3) * 4096 % TAMPER_SIZE : rnd[0] % TAMPER_SIZE;
			len = (size_t)(rnd[1] % (2 * CS)) + 1;
			len = MIN(len, (size_t)(TAMPER_SIZE - off));
			assert_int_equal(store_object_read(rd, ob, off, len, out), (ssize_t)len);
			assert_memory_equal(out, want_b + off, len);
		}
		store_reader_free(rd);
		store_object_close(oa);
		store_object_close(ob);
		store_close(st);
	}
	loc_free(&a);
	loc_free(&b);
	free(want_a);
	free(want_b);
	free(out);
}

/* Swap chunks 1 and 2 (ciphertext and tags): each is valid, but in the wrong place. */
static void test_tamper_swap_chunks(void **state)
{
	struct fx *f = *state;
	uint8_t *c1 = malloc(CS), *c2 = malloc(CS), t1[16], t2[16];
	uint64_t base, tags;
	struct loc a, b;

	tamper_setup(f, &a, &b);
	base = a.ino.ext.offset;
	tags = base + TAMPER_SIZE;
	peek(a.pack, base + CS, c1, CS);
	peek(a.pack, base + 2 * CS, c2, CS);
	peek(a.pack, tags + 16, t1, 16);
	peek(a.pack, tags + 32, t2, 16);
	patch(a.pack, base + CS, c2, CS);
	patch(a.pack, base + 2 * CS, c1, CS);
	patch(a.pack, tags + 16, t2, 16);
	patch(a.pack, tags + 32, t1, 16);
	expect_chunks(f, &a, 1, (1u << 1) | (1u << 2), -EBADMSG);
	free(c1);
	free(c2);
	loc_free(&a);
	loc_free(&b);
}

/* Move chunk 0 (and its tag) of object b over chunk 0 of object a. */
static void test_tamper_chunk_from_other_object(void **state)
{
	struct fx *f = *state;
	uint8_t *c = malloc(CS), t[16];
	struct loc a, b;

	tamper_setup(f, &a, &b);
	peek(b.pack, b.ino.ext.offset, c, CS);
	peek(b.pack, b.ino.ext.offset + TAMPER_SIZE, t, 16);
	patch(a.pack, a.ino.ext.offset, c, CS);
	patch(a.pack, a.ino.ext.offset + TAMPER_SIZE, t, 16);
	expect_chunks(f, &a, 1, 1u << 0, -EBADMSG);
	expect_chunks(f, &b, 2, 0, 0);
	free(c);
	loc_free(&a);
	loc_free(&b);
}

/* Cut the pack at the boundary before a's last chunk: the last chunk and the tags are gone.
 * Object b (written after a) is gone too; a's first chunks lose their tags as well, so every
 * chunk of a fails, and nothing is returned as data. */
static void test_tamper_truncate_at_chunk_boundary(void **state)
{
	struct fx *f = *state;
	struct loc a, b;

	tamper_setup(f, &a, &b);
	assert_int_equal(truncate(a.pack, (off_t)(a.ino.ext.offset + (TAMPER_CHUNKS - 1) * CS)),
			 0);
	expect_chunks(f, &a, 1, 0x1f, -ENODATA);
	loc_free(&a);
	loc_free(&b);
}

/* Drop the last chunk: truncate the object's plaintext size in the index to a chunk boundary.
 * The size is bound into the object key's wrapping, so the object does not even open; and if it
 * did, chunk 3 would be read as "last" and fail its tag (tested in test_crypto). */
static void test_tamper_index_size(void **state)
{
	struct fx *f = *state;
	struct store_object *obj = NULL;
	struct store *st;
	struct loc a, b;

	tamper_setup(f, &a, &b);
	st = fx_open(f);
	a.ino.size = (TAMPER_CHUNKS - 1) * CS;
	assert_int_equal(store_object_open(st, a.dsid, &a.ino, &obj), -EBADMSG);
	/* The wrapped key of b, put in a's record, does not unwrap either. */
	a.ino.size = TAMPER_SIZE;
	memcpy(a.ino.ext.wrapped_key, b.ino.ext.wrapped_key, CRYPTO_WRAPPED_KEY_LEN);
	assert_int_equal(store_object_open(st, a.dsid, &a.ino, &obj), -EBADMSG);
	/* Another algorithm or chunk size than the one wrapped: refused. */
	b.ino.ext.alg = b.ino.ext.alg == CRYPTO_AEAD_AES256GCM ? CRYPTO_AEAD_CHACHA20POLY1305
							       : CRYPTO_AEAD_AES256GCM;
	assert_int_equal(store_object_open(st, b.dsid, &b.ino, &obj), -EBADMSG);
	store_close(st);
	loc_free(&a);
	loc_free(&b);
}

/* ---- Forged index records and packs ------------------------------------------------------- */

/* The store's index, opened directly (store closed), to write what an attacker with the disk
 * could write. */
static void raw_index(struct fx *f, struct store_index *ix)
{
	char *p = tu_fmt("%s/index", f->store);

	assert_int_equal(index_open(ix, p, false), 0);
	free(p);
}

static void raw_put(struct store_index *ix, enum store_cf cf, const void *k, size_t kl,
		    const void *v, size_t vl)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();

	rocksdb_writebatch_put_cf(wb, ix->cf[cf], k, kl, v, vl);
	assert_int_equal(index_write(ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
}

/* The memtables of every column family together, live and flushing (bytes). */
static uint64_t memtables_bytes(struct store_index *ix)
{
	uint64_t sum = 0, v;

	for (int c = 0; c < CF_COUNT; c++) {
		assert_int_equal(rocksdb_property_int_cf(ix->db, ix->cf[c], "rocksdb.size-all-mem-tables",
							 &v), 0);
		sum += v;
	}
	return sum;
}

/* The index's memory does not grow with what it holds (issue 6: a daemon serving 10^6 files):
 * 56 MiB of records written as an import writes them (batches, not synced) never hold more than
 * two 16 MiB memtables (each may pass 16 MiB by the batch that filled it), where RocksDB's default
 * (64 MiB before the first flush) would hold all 56; and every column family reads through one
 * 16 MiB block cache. */
static void test_index_memory_bounded(void **state)
{
	struct fx *f = *state;
	struct store_index ix;
	static char val[1024];
	uint8_t k[IKEY_LEN];
	uint64_t peak = 0, cap = 0, use_inodes = 0, use_meta = 0;
	rocksdb_flushoptions_t *fo;
	char *err = NULL, *got = NULL;
	size_t n = 0;

	store_close(fx_create(f));
	raw_index(f, &ix);
	memset(val, 0x5a, sizeof(val));
	for (uint64_t i = 0; i < 56 * 1024; i += 1024) {
		rocksdb_writebatch_t *wb = rocksdb_writebatch_create();

		for (uint64_t j = i; j < i + 1024; j++) {
			ikey(k, 7, 1, j + 1);
			rocksdb_writebatch_put_cf(wb, ix.cf[CF_INODES], (const char *)k, sizeof(k), val,
						  sizeof(val));
		}
		assert_int_equal(index_write(&ix, wb, false), 0);
		rocksdb_writebatch_destroy(wb);
		peak = MAX(peak, memtables_bytes(&ix));
	}
	assert_true(peak > 0);
	assert_true(peak <= 36u << 20);
	for (int c = 0; c < CF_COUNT; c++) {
		assert_int_equal(rocksdb_property_int_cf(ix.db, ix.cf[c], "rocksdb.block-cache-capacity",
							 &cap), 0);
		assert_int_equal(cap, 16u << 20);
	}
	/* One cache for all: blocks read from inodes count in every family's usage. */
	fo = rocksdb_flushoptions_create();
	rocksdb_flush_cf(ix.db, fo, ix.cf[CF_INODES], &err);
	rocksdb_flushoptions_destroy(fo);
	assert_null(err);
	ikey(k, 7, 1, 1);
	assert_int_equal(index_get(&ix, CF_INODES, k, sizeof(k), &got, &n), 0);
	free(got);
	assert_int_equal(rocksdb_property_int_cf(ix.db, ix.cf[CF_INODES], "rocksdb.block-cache-usage",
						 &use_inodes), 0);
	assert_int_equal(rocksdb_property_int_cf(ix.db, ix.cf[CF_META], "rocksdb.block-cache-usage",
						 &use_meta), 0);
	assert_true(use_inodes > 0);
	assert_int_equal(use_meta, use_inodes);
	index_close(&ix);
}

/* Swap the index records of datasets "a" and "b": each name's key now holds the other's sealed
 * record. A sealed value is bound to its key, so neither authenticates: an integrity failure,
 * never one name serving the other's data. */
static void test_forged_dataset_swap(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store_index ix;
	struct store *st = fx_create(f);
	uint8_t ka[DSKEY_LEN], kb[DSKEY_LEN];
	char *va = NULL, *vb = NULL;
	size_t na = 0, nb = 0;

	tu_seed_file(1000, 1, "%s/x", f->src);
	import_src(st, "a", f->src, NULL);
	tu_seed_file(1000, 2, "%s/x", f->src);
	import_src(st, "b", f->src, NULL);
	dskey_hash(st->ix_name, "a", ka);
	dskey_hash(st->ix_name, "b", kb);
	store_close(st);
	raw_index(f, &ix);
	assert_int_equal(index_get(&ix, CF_DATASETS, ka, sizeof(ka), &va, &na), 0);
	assert_int_equal(index_get(&ix, CF_DATASETS, kb, sizeof(kb), &vb, &nb), 0);
	raw_put(&ix, CF_DATASETS, ka, sizeof(ka), vb, nb);
	raw_put(&ix, CF_DATASETS, kb, sizeof(kb), va, na);
	index_close(&ix);
	free(va);
	free(vb);

	st = fx_open(f);
	assert_int_equal(store_dataset_get(st, "a", &di), -EBADMSG);
	assert_non_null(strstr(err_detail(), "does not authenticate"));
	assert_int_equal(store_dataset_get(st, "b", &di), -EBADMSG);
	store_close(st);
}

static int dirent_noop(void *ctx, const char *name, uint64_t ino, uint32_t type)
{
	(void)ctx;
	(void)name;
	(void)ino;
	(void)type;
	return 0;
}

/* What the integrity hook saw. */
struct hook_log {
	int calls;
	uint64_t dsid;
	uint32_t version;
	char what[256];
};

static void hook_cb(void *ctx, uint64_t dsid, uint32_t version, const char *what)
{
	struct hook_log *h = ctx;

	h->calls++;
	h->dsid = dsid;
	h->version = version;
	snprintf(h->what, sizeof(h->what), "%s", what);
}

static int dataset_count(void *ctx, const struct store_dataset_info *info)
{
	(void)info;
	(*(int *)ctx)++;
	return 0;
}

/* Records written into the index by someone without the keys (an entry in a directory, a
 * dataset) do not authenticate: the listing that meets them fails, naming an integrity failure. */
static void test_forged_names(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store_index ix;
	struct store *st = fx_create(f);
	uint8_t k[DKEY_LEN];

	tu_seed_file(10, 1, "%s/x", f->src);
	import_src(st, "d", f->src, NULL);
	assert_int_equal(store_dataset_get(st, "d", &di), 0);
	store_close(st);

	raw_index(f, &ix);
	ikey(k, di.id, 1, STORE_ROOT_INO);
	memset(k + DKEY_PREFIX_LEN, 0x41, CRYPTO_NAME_HASH_LEN);
	raw_put(&ix, CF_DIRENTS, k, sizeof(k), "forged entry, no key: 0123456789abcdef0123456789",
		48);
	raw_put(&ix, CF_DATASETS, "d\0zz", 4, "x", 1); /* no key, and not a name hash */
	index_close(&ix);

	st = fx_open(f);
	{
		assert_int_equal(store_dir_foreach(st, di.id, 1, STORE_ROOT_INO, NULL, dirent_noop,
						   NULL), -EBADMSG);
		assert_non_null(strstr(err_detail(), "index integrity"));
		/* The forged dataset record is left out, and reported; "d" is still listed. */
		struct hook_log h = { 0 };
		int n = 0;

		store_set_integrity_hook(st, hook_cb, &h);
		assert_int_equal(store_dataset_foreach(st, dataset_count, &n), 0);
		assert_int_equal(n, 1);
		assert_int_equal(h.calls, 1);
		assert_non_null(strstr(h.what, "dataset key is malformed"));
	}
	store_close(st);
}

/* A pack id no commit made, a missing pack, and a pack of another store: -EUCLEAN, naming the
 * pack, and the other packs still read. */
static void test_forged_and_missing_packs(void **state)
{
	struct fx *f = *state;
	struct store_open_options o = { .pack_target = 1u << 20 };
	struct store_object *obj = NULL;
	struct store *st = fx_create(f);
	struct loc a, b;
	uint8_t hdr[40];

	store_close(st);
	tu_seed_file(1u << 20, 1, "%s/a", f->src);
	tu_seed_file(1u << 20, 2, "%s/b", f->src);
	st = fx_open_opts(f, &o);
	import_src(st, "p", f->src, NULL);
	a = locate(f, st, "p", "a");
	b = locate(f, st, "p", "b");
	assert_int_not_equal(a.ino.ext.pack_id, b.ino.ext.pack_id);

	a.ino.ext.pack_id = 1000;
	assert_int_equal(store_object_open(st, a.dsid, &a.ino, &obj), -EUCLEAN);
	assert_non_null(strstr(err_detail(), "00000000000003e8"));
	a.ino.ext.pack_id = 1ull << 62;
	assert_int_equal(store_object_open(st, a.dsid, &a.ino, &obj), -EUCLEAN);
	store_close(st);

	/* Pack of a: another store's header. Pack of b: gone. */
	peek(a.pack, 0, hdr, sizeof(hdr));
	hdr[30] ^= 1; /* inside the store id */
	patch(a.pack, 0, hdr, sizeof(hdr));
	st = fx_open(f);
	{
		struct loc a2 = locate(f, st, "p", "a");

		assert_int_equal(store_object_open(st, a2.dsid, &a2.ino, &obj), -EUCLEAN);
		assert_non_null(strstr(err_detail(), "does not belong to this store"));
		loc_free(&a2);
	}
	store_close(st);
	hdr[30] ^= 1;
	patch(a.pack, 0, hdr, sizeof(hdr));
	assert_int_equal(unlink(b.pack), 0);
	st = fx_open(f);
	{
		struct loc b2 = locate(f, st, "p", "b");
		size_t got;
		uint8_t *have, *want = malloc(1u << 20);

		assert_int_equal(store_object_open(st, b2.dsid, &b2.ino, &obj), -EUCLEAN);
		/* a's pack is intact again and still reads. */
		have = read_path(st, "p", 1, "a", 1u << 20, &got);
		tu_fill(want, 1u << 20, 1);
		assert_memory_equal(have, want, 1u << 20);
		free(have);
		free(want);
		loc_free(&b2);
	}
	store_close(st);
	loc_free(&a);
	loc_free(&b);
}

/* The one empty chunk of an empty file is authenticated on read. */
static void test_tamper_empty_object(void **state)
{
	struct fx *f = *state;
	struct store_object *obj = NULL;
	struct store_reader *rd = NULL;
	struct store *st = fx_create(f);
	uint8_t c;
	struct loc l;

	tu_seed_file(0, 1, "%s/empty", f->src);
	import_src(st, "e", f->src, NULL);
	l = locate(f, st, "e", "empty");
	assert_int_equal(store_object_open(st, l.dsid, &l.ino, &obj), 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	assert_int_equal(store_object_read(rd, obj, 0, 100, &c), 0);
	store_reader_free(rd);
	store_object_close(obj);
	store_close(st);

	flip(l.pack, l.ino.ext.offset + 5); /* its tag: the first bytes of the object */
	st = fx_open(f);
	assert_int_equal(store_object_open(st, l.dsid, &l.ino, &obj), 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	assert_int_equal(store_object_read(rd, obj, 0, 100, &c), -EBADMSG);
	store_reader_free(rd);
	store_object_close(obj);
	store_close(st);
	loc_free(&l);
}

/* ---- Dense packing (issue 13) ---------------------------------------------------------------- */

#define DENSE_FILES 24
/* Above the tiny-file limit, so that each file is a dense object of its own (files up to
 * STORE_TINY_MAX bytes are grouped, docs/FORMAT.md 4.10: test_group_*). */
#define DENSE_BASE ((size_t)STORE_TINY_MAX + 1)
/* File i: DENSE_BASE + i * 150 + i % 3 bytes, except file 1 and 2 of the same size (a swap). */
static size_t dense_size(unsigned i)
{
	return DENSE_BASE + (i == 2 ? 151 : (size_t)i * 150 + i % 3);
}

static void dense_setup(struct fx *f, struct loc *l)
{
	struct store *st = fx_create(f);

	for (unsigned i = 0; i < DENSE_FILES; i++)
		tu_seed_file(dense_size(i), 100 + i, "%s/s%02u", f->src, i);
	/* One file over the dense limit: aligned, after padding. */
	tu_seed_file(3 * CS + 7, 99, "%s/zbig", f->src);
	import_src(st, "d", f->src, NULL);
	for (unsigned i = 0; i < DENSE_FILES; i++) {
		char name[8];

		snprintf(name, sizeof(name), "s%02u", i);
		l[i] = locate(f, st, "d", name);
	}
	l[DENSE_FILES] = locate(f, st, "d", "zbig");
	store_close(st);
}

/* Read file i whole into out (0xAA first) on a store opened with or without O_DIRECT. */
static ssize_t dense_read_one(struct fx *f, const struct loc *l, bool direct, uint8_t *out,
			      size_t cap)
{
	struct store_open_options oo = { .direct_io = direct };
	struct store *st = fx_open_opts(f, &oo);
	struct store_object *obj = NULL;
	struct store_reader *rd = NULL;
	ssize_t r;

	assert_int_equal(store_object_open(st, l->dsid, &l->ino, &obj), 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	memset(out, 0xAA, cap);
	r = store_object_read(rd, obj, 0, cap, out);
	store_reader_free(rd);
	store_object_close(obj);
	store_close(st);
	return r;
}

/* File i reads back exactly, or fails with err leaking nothing; buffered and O_DIRECT. */
static void dense_expect(struct fx *f, const struct loc *l, unsigned i, ssize_t err)
{
	size_t n = dense_size(i), cap = 8192;
	uint8_t *out = malloc(cap), *want = malloc(cap);

	tu_fill(want, n, 100 + i);
	for (int direct = 0; direct < 2; direct++) {
		ssize_t r = dense_read_one(f, &l[i], direct, out, cap);

		if (err) {
			assert_int_equal(r, err);
			for (size_t j = 0; j < n; j++)
				if (out[j] != 0xAA && out[j] != 0)
					fail_msg("file %u: plaintext leaked at %zu", i, j);
		} else {
			assert_int_equal(r, (ssize_t)n);
			assert_memory_equal(out, want, n);
		}
	}
	free(out);
	free(want);
}

/* Small objects lie right after each other, without padding; a large one after them starts
 * aligned; every one reads back, whole and in parts, buffered and with O_DIRECT. */
static void test_dense_layout(void **state)
{
	struct fx *f = *state;
	struct loc l[DENSE_FILES + 1];
	struct stat sb;
	uint64_t sum = 0;

	dense_setup(f, l);
	for (unsigned i = 0; i < DENSE_FILES; i++) {
		sum += dense_size(i) + CRYPTO_TAG_LEN;
		assert_int_equal(l[i].ino.size, dense_size(i));
		if (i > 0) {
			/* Import order is name order: s00, s01, ... */
			assert_int_equal(l[i].ino.ext.offset,
					 l[i - 1].ino.ext.offset + dense_size(i - 1) + CRYPTO_TAG_LEN);
		}
		dense_expect(f, l, i, 0);
	}
	assert_int_equal(l[0].ino.ext.offset, 4096);
	assert_true(l[DENSE_FILES].ino.ext.offset % 4096 == 0);
	assert_true(l[DENSE_FILES].ino.ext.offset >= 4096 + sum);
	assert_true(l[DENSE_FILES].ino.ext.offset < 4096 + sum + 4096);
	/* The committed pack ends aligned. */
	assert_int_equal(stat(l[0].pack, &sb), 0);
	assert_true(sb.st_size % 4096 == 0);
	/* A part of a dense object. */
	{
		struct store *st = fx_open(f);
		struct store_object *obj = NULL;
		struct store_reader *rd = NULL;
		uint8_t want[DENSE_BASE + 3452], out[100];

		tu_fill(want, dense_size(23), 123);
		assert_int_equal(store_object_open(st, l[23].dsid, &l[23].ino, &obj), 0);
		assert_int_equal(store_reader_new(st, &rd), 0);
		assert_int_equal(store_object_read(rd, obj, 3000, 100, out), 100);
		assert_memory_equal(out, want + 3000, 100);
		assert_int_equal(store_object_read(rd, obj, 4000, 100, out), 100);
		assert_memory_equal(out, want + 4000, 100);
		assert_int_equal(store_object_read(rd, obj, dense_size(23) - 10, 100, out), 10);
		assert_memory_equal(out, want + dense_size(23) - 10, 10);
		assert_int_equal(store_object_read(rd, obj, dense_size(23), 100, out), 0);
		store_reader_free(rd);
		store_object_close(obj);
		store_close(st);
	}
	for (unsigned i = 0; i <= DENSE_FILES; i++)
		loc_free(&l[i]);
}

/* Tampering with densely packed objects is caught as with aligned ones: a flipped ciphertext or
 * tag byte, two objects of one size swapped (each valid, in the other's place), an object
 * moved onto its neighbour's place, and a pack cut inside an object. Neighbours are unharmed. */
static void test_dense_tamper(void **state)
{
	struct fx *f = *state;
	struct loc l[DENSE_FILES + 1];
	uint8_t a[DENSE_BASE + 151 + 16], b[DENSE_BASE + 151 + 16];

	dense_setup(f, l);
	/* Ciphertext of file 5, tag of file 7 (and ciphertext of file 0). */
	flip(l[5].pack, l[5].ino.ext.offset + 17);
	flip(l[7].pack, l[7].ino.ext.offset + dense_size(7) + 3);
	flip(l[0].pack, l[0].ino.ext.offset + 2);
	dense_expect(f, l, 5, -EBADMSG);
	dense_expect(f, l, 7, -EBADMSG);
	dense_expect(f, l, 0, -EBADMSG);
	dense_expect(f, l, 4, 0);
	dense_expect(f, l, 6, 0);
	dense_expect(f, l, 8, 0);
	/* Files 1 and 2 are both DENSE_BASE + 151 bytes: swap their ciphertext and tags. */
	assert_int_equal(dense_size(1), DENSE_BASE + 151);
	peek(l[1].pack, l[1].ino.ext.offset, a, sizeof(a));
	peek(l[2].pack, l[2].ino.ext.offset, b, sizeof(b));
	patch(l[1].pack, l[1].ino.ext.offset, b, sizeof(b));
	patch(l[2].pack, l[2].ino.ext.offset, a, sizeof(a));
	dense_expect(f, l, 1, -EBADMSG);
	dense_expect(f, l, 2, -EBADMSG);
	dense_expect(f, l, 3, 0);
	/* An index record pointing file 9 at file 10's place: what lies there is not file 9's. */
	{
		uint64_t own = l[9].ino.ext.offset;

		l[9].ino.ext.offset = l[10].ino.ext.offset;
		dense_expect(f, l, 9, -EBADMSG);
		l[9].ino.ext.offset = own + 1;  /* off by one byte */
		dense_expect(f, l, 9, -EBADMSG);
		l[9].ino.ext.offset = own;
		dense_expect(f, l, 9, 0);
	}
	/* The pack cut inside file 23 (the last dense one): it fails, the one before reads. */
	assert_int_equal(truncate(l[23].pack, (off_t)(l[23].ino.ext.offset + 100)), 0);
	dense_expect(f, l, 23, -EIO);
	dense_expect(f, l, 22, 0);
	for (unsigned i = 0; i <= DENSE_FILES; i++)
		loc_free(&l[i]);
}

/* ---- Tiny files in groups (docs/FORMAT.md 4.10) -------------------------------------------- */

/* Read the file at l whole (0xAA first) with a reader on a store opened with or without
 * O_DIRECT; the bytes read or the failure. */
static ssize_t loc_read(struct fx *f, const struct loc *l, bool direct, uint8_t *out, size_t cap)
{
	return dense_read_one(f, l, direct, out, cap);
}

/* Many files of a few bytes ("i\n", as scripts/bench-import.sh --size tiny makes them), some
 * empty, a few larger ones between them, in several directories: each reads back byte for byte
 * (whole, in parts, buffered and with O_DIRECT), they are grouped, and the packs take less than
 * 1.5 times their size. Names still waiting for their group are duplicates as any other. */
#define TINY_N 6000
static void test_group_many_tiny(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL;
	uint64_t data = 0, big = 0;
	struct stat sb;
	char *pack;
	uint32_t ver = 0;
	int fd;

	for (unsigned i = 0; i < 10; i++) {
		char *d = tu_fmt("%s/d%u", f->src, i);

		assert_int_equal(mkdir(d, 0755), 0);
		free(d);
	}
	for (unsigned i = 0; i < TINY_N; i++) {
		char *p = tu_fmt("%s/d%u/f%05u", f->src, i % 10, i);
		char body[16];
		int n = i % 997 == 0 ? 0 : snprintf(body, sizeof(body), "%u\n", i);

		fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, body, (size_t)n), n);
		close(fd);
		data += (uint64_t)n;
		free(p);
	}
	for (unsigned i = 0; i < 3; i++) {
		tu_seed_file(STORE_TINY_MAX + 1 + i, 40 + i, "%s/d%u/f%05u.big", f->src, i, i * 1000);
		big += STORE_TINY_MAX + 1 + i + CRYPTO_TAG_LEN;
	}
	assert_int_equal(import_src(st, "tiny", f->src, NULL), 1);
	{
		struct loc a = locate(f, st, "tiny", "d1/f00001"), b = locate(f, st, "tiny",
									    "d1/f00011");
		struct loc c = locate(f, st, "tiny", "d0/f00000.big");

		assert_true(a.ino.ext.grouped && b.ino.ext.grouped && !c.ino.ext.grouped);
		/* Consecutive files: in one group, each its own wrapping of the one group key,
		 * unless the first ends its group. */
		if (a.ino.ext.member_idx + 1 == a.ino.ext.member_count) {
			assert_int_equal(b.ino.ext.member_idx, 0);
			assert_int_equal(b.ino.ext.offset, a.ino.ext.offset + a.ino.ext.group_size +
								    CRYPTO_TAG_LEN);
		} else {
			assert_memory_equal(a.ino.ext.object_id, b.ino.ext.object_id,
					    CRYPTO_OBJECT_ID_LEN);
			assert_int_equal(a.ino.ext.offset, b.ino.ext.offset);
			assert_int_equal(b.ino.ext.member_off, a.ino.ext.member_off + 2);
			assert_int_equal(b.ino.ext.member_idx, a.ino.ext.member_idx + 1);
		}
		assert_memory_not_equal(a.ino.ext.wrapped_key, b.ino.ext.wrapped_key,
					CRYPTO_WRAPPED_KEY_LEN);
		assert_true(a.ino.ext.group_size <= STORE_GROUP_MAX);
		pack = strdup(a.pack);
		loc_free(&a);
		loc_free(&b);
		loc_free(&c);
	}
	/* Every file, through the store's reader. */
	for (unsigned i = 0; i < TINY_N; i++) {
		char *p = tu_fmt("d%u/f%05u", i % 10, i);
		char body[16];
		int n = i % 997 == 0 ? 0 : snprintf(body, sizeof(body), "%u\n", i);
		size_t got = 0;
		uint8_t *have = read_path(st, "tiny", 1, p, i % 2 ? 1 : CS, &got);

		assert_int_equal(got, (size_t)n);
		assert_memory_equal(have, body, (size_t)n);
		free(have);
		free(p);
	}
	store_close(st);
	/* Buffered and O_DIRECT, a read past the end, and a read of a part. */
	st = fx_open(f);
	{
		struct loc l = locate(f, st, "tiny", "d7/f04567");
		uint8_t out[64];

		store_close(st);
		for (int direct = 0; direct < 2; direct++) {
			assert_int_equal(loc_read(f, &l, direct, out, sizeof(out)), 5);
			assert_memory_equal(out, "4567\n", 5);
		}
		st = fx_open(f);
		{
			struct store_object *obj = NULL;
			struct store_reader *rd = NULL;

			assert_int_equal(store_object_open(st, l.dsid, &l.ino, &obj), 0);
			assert_int_equal(store_object_size(obj), 5);
			assert_int_equal(store_reader_new(st, &rd), 0);
			assert_int_equal(store_object_read(rd, obj, 2, 2, out), 2);
			assert_memory_equal(out, "67", 2);
			assert_int_equal(store_object_read(rd, obj, 5, 10, out), 0);
			assert_int_equal(store_object_read(rd, obj, 4, 10, out), 1);
			assert_int_equal(out[0], '\n');
			store_reader_free(rd);
			store_object_close(obj);
		}
		loc_free(&l);
	}
	/* The pack: its header, the larger files, and at most 1.5x the tiny files' bytes. */
	assert_int_equal(stat(pack, &sb), 0);
	assert_true((uint64_t)sb.st_size - 4096 - big <= data + data / 2);
	/* A name waiting for its group is a duplicate, as a file and as a directory. */
	{
		char *p = tu_fmt("%s/d0/f00010", f->src);

		fd = open(p, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(store_import_begin(st, "dup", NULL, &imp), 0);
		assert_int_equal(store_import_add_file(imp, "x/b", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/a", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/a", fd), -EEXIST);
		store_import_free(imp);
		assert_int_equal(store_import_begin(st, "dup", NULL, &imp), 0);
		assert_int_equal(store_import_add_file(imp, "x/b", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/a", fd), 0);
		assert_int_equal(store_import_add_dir(imp, "x/a/c", 0755, 0), -ENOTDIR);
		store_import_free(imp);
		assert_int_equal(store_import_begin(st, "dup", NULL, &imp), 0);
		assert_int_equal(store_import_add_file(imp, "x/b", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/a", fd), 0);
		assert_int_equal(store_import_commit(imp, &ver), 0);
		store_import_free(imp);
		close(fd);
		free(p);
		for (int i = 0; i < 2; i++) {
			size_t got = 0;
			uint8_t *have = read_path(st, "dup", ver, i ? "x/a" : "x/b", CS, &got);

			assert_int_equal(got, 3);
			assert_memory_equal(have, "10\n", 3);
			free(have);
		}
	}
	store_close(st);
	free(pack);
}

/* Tampering with groups is caught: a flipped byte fails every member of that group (and only
 * those), two groups of one size swapped fail both, a pack cut inside a group fails its members.
 * A member's record bound to its place: the wrapped key does not unwrap with another offset,
 * length, member number or group size, so members cannot be swapped between files or groups.
 * Malformed member records are refused by the decoder. */
static void test_group_tamper(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	enum { PER = STORE_GROUP_MAX / 510, N = 2 * PER + 1 };
	struct loc l[N];
	uint8_t a[STORE_GROUP_MAX + 16], b[STORE_GROUP_MAX + 16], out[1024];

	/* Files of 510 bytes: PER fill a group exactly; two groups of one size, and one more. */
	for (unsigned i = 0; i < N; i++)
		tu_seed_file(510, 300 + i, "%s/t%02u", f->src, i);
	assert_int_equal(import_src(st, "g", f->src, NULL), 1);
	for (unsigned i = 0; i < N; i++) {
		char name[8];

		snprintf(name, sizeof(name), "t%02u", i);
		l[i] = locate(f, st, "g", name);
		assert_true(l[i].ino.ext.grouped);
		assert_int_equal(l[i].ino.ext.member_idx, i % PER);
	}
	assert_int_equal(l[0].ino.ext.group_size, STORE_GROUP_MAX);
	assert_int_equal(l[PER].ino.ext.offset, l[0].ino.ext.offset + STORE_GROUP_MAX + 16);
	assert_int_equal(l[0].ino.ext.member_count, PER);
	assert_int_equal(l[N - 1].ino.ext.member_count, 1);
	store_close(st);

	/* Each reads back; then a member's record bound to its place. */
	st = fx_open(f);
	for (unsigned i = 0; i < N; i++) {
		size_t got = 0;
		char name[8];
		uint8_t *have, want[510];

		snprintf(name, sizeof(name), "t%02u", i);
		have = read_path(st, "g", 1, name, CS, &got);
		tu_fill(want, sizeof(want), 300 + i);
		assert_int_equal(got, 510);
		assert_memory_equal(have, want, 510);
		free(have);
	}
	{
		static const struct {
			int field;
			uint32_t value;
		} edits[] = { { 0, 0 }, { 1, 509 }, { 2, 2 }, { 3, PER + 1 }, { 4, 4064 } };
		struct store_object *obj = NULL;

		for (size_t e = 0; e < ARRAY_SIZE(edits); e++) {
			struct store_inode x = l[1].ino;

			switch (edits[e].field) {
			case 0: x.ext.member_off = edits[e].value; break;   /* member 0's place */
			case 1: x.size = edits[e].value; break;
			case 2: x.ext.member_idx = (uint16_t)edits[e].value; break;
			case 3: x.ext.member_count = (uint16_t)edits[e].value; break;
			default: x.ext.group_size = edits[e].value; break;
			}
			assert_int_equal(store_object_open(st, l[1].dsid, &x, &obj), -EBADMSG);
			assert_null(obj);
		}
		/* Member 1's record with member 0's group fields but its own key: no. */
		{
			struct store_inode x = l[0].ino;

			memcpy(x.ext.wrapped_key, l[1].ino.ext.wrapped_key, CRYPTO_WRAPPED_KEY_LEN);
			assert_int_equal(store_object_open(st, l[1].dsid, &x, &obj), -EBADMSG);
			/* Nor a member's key as a whole object's (another domain tag). */
			x = l[1].ino;
			x.ext.grouped = false;
			x.size = STORE_GROUP_MAX;
			assert_int_equal(store_object_open(st, l[1].dsid, &x, &obj), -EBADMSG);
		}
	}
	/* The decoder: a member outside its group, a member number out of range, a group over
	 * the limit, a member over the tiny limit. */
	{
		struct buf bb;
		struct store_inode y;

		buf_init(&bb, 4096);
		for (int e = 0; e < 5; e++) {
			struct store_inode x = l[1].ino;

			switch (e) {
			case 0: x.ext.member_off = STORE_GROUP_MAX - 100; break;
			case 1: x.ext.member_idx = x.ext.member_count; break;
			case 2: x.ext.group_size = STORE_GROUP_MAX + 1; break;
			case 3: x.size = STORE_TINY_MAX + 1; x.ext.member_off = 0; break;
			default: break;
			}
			buf_reset(&bb);
			assert_int_equal(inode_encode(&x, NULL, &bb), 0);
			assert_int_equal(inode_decode(x.ino, bb.data, bb.len, &y, NULL),
					 e == 4 ? 0 : -EBADMSG);
		}
		assert_true(y.ext.grouped);
		assert_int_equal(y.ext.member_off, 510);
		assert_int_equal(y.ext.member_idx, 1);
		assert_int_equal(y.ext.member_count, PER);
		assert_int_equal(y.ext.group_size, STORE_GROUP_MAX);
		/* Cut short: neither a member nor a plain file. */
		assert_int_equal(inode_decode(l[1].ino.ino, bb.data, bb.len - 2, &y, NULL),
				 -EBADMSG);
		buf_free(&bb);
	}
	store_close(st);

	/* A flipped byte in group 0: its members fail, group 1's read. */
	flip(l[0].pack, l[0].ino.ext.offset + 700);
	for (int direct = 0; direct < 2; direct++) {
		memset(out, 0xAA, sizeof(out));
		assert_int_equal(loc_read(f, &l[0], direct, out, sizeof(out)), -EBADMSG);
		for (size_t j = 0; j < sizeof(out); j++)
			if (out[j] != 0xAA)
				fail_msg("plaintext leaked at %zu", j);
		assert_int_equal(loc_read(f, &l[PER - 1], direct, out, sizeof(out)), -EBADMSG);
		assert_int_equal(loc_read(f, &l[PER], direct, out, sizeof(out)), 510);
	}
	flip(l[0].pack, l[0].ino.ext.offset + 700);
	assert_int_equal(loc_read(f, &l[0], false, out, sizeof(out)), 510);
	/* Groups 0 and 1 (one size) swapped: each is valid, in the other's place. */
	peek(l[0].pack, l[0].ino.ext.offset, a, sizeof(a));
	peek(l[PER].pack, l[PER].ino.ext.offset, b, sizeof(b));
	patch(l[0].pack, l[0].ino.ext.offset, b, sizeof(b));
	patch(l[PER].pack, l[PER].ino.ext.offset, a, sizeof(a));
	assert_int_equal(loc_read(f, &l[1], false, out, sizeof(out)), -EBADMSG);
	assert_int_equal(loc_read(f, &l[PER + 1], true, out, sizeof(out)), -EBADMSG);
	assert_int_equal(loc_read(f, &l[N - 1], false, out, sizeof(out)), 510);
	patch(l[0].pack, l[0].ino.ext.offset, a, sizeof(a));
	patch(l[PER].pack, l[PER].ino.ext.offset, b, sizeof(b));
	assert_int_equal(loc_read(f, &l[PER + 1], false, out, sizeof(out)), 510);
	/* The pack cut inside the last group: its member fails, the others read. */
	assert_int_equal(truncate(l[N - 1].pack, (off_t)(l[N - 1].ino.ext.offset + 100)), 0);
	assert_int_equal(loc_read(f, &l[N - 1], false, out, sizeof(out)), -EIO);
	assert_int_equal(loc_read(f, &l[PER], false, out, sizeof(out)), 510);
	for (unsigned i = 0; i < N; i++)
		loc_free(&l[i]);
}

/* ---- Master key ---------------------------------------------------------------------------- */

static void test_wrong_passphrase(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	crypto_secret *bad = tu_pass("incorrect horse");
	char *key = tu_fmt("%s/keys/master.key", f->store);
	uint8_t *before, *after;
	size_t nb, na;

	store_close(st);
	before = tu_read_file(key, &nb);
	st = NULL;
	assert_int_equal(store_open(f->store, bad, NULL, &st), -EKEYREJECTED);
	assert_null(st);
	assert_non_null(strstr(err_detail(), "wrong passphrase"));
	/* Having held the store's keys, this process is not dumpable. */
	assert_int_equal(prctl(PR_GET_DUMPABLE), 0);
	after = tu_read_file(key, &na);
	assert_int_equal(na, nb);
	assert_memory_equal(before, after, nb);
	/* And the right one still opens it. */
	st = fx_open(f);
	store_close(st);
	crypto_secret_free(bad);
	free(before);
	free(after);
	free(key);
}

static void test_create_refuses_nonempty_and_open_refuses_nonstore(void **state)
{
	struct fx *f = *state;
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	struct store *st = NULL;

	/* An existing empty directory with a loose mode becomes private, and so does the index. */
	{
		struct stat sb;
		char *idx = tu_fmt("%s/index", f->store);

		assert_int_equal(mkdir(f->store, 0755), 0);
		st = fx_create(f);
		assert_int_equal(stat(f->store, &sb), 0);
		assert_int_equal(sb.st_mode & 07777, 0700);
		assert_int_equal(stat(idx, &sb), 0);
		assert_int_equal(sb.st_mode & 07777, 0700);
		store_close(st);
		st = NULL;
		tu_rm_rf(f->store);
		free(idx);
	}
	/* The source directory is not empty. */
	tu_seed_file(10, 1, "%s/x", f->src);
	assert_int_equal(store_create(f->src, f->pass, &kdf, &st), -EEXIST);
	assert_int_equal(store_open(f->src, f->pass, NULL, &st), -ENOENT);
	assert_null(st);
	/* A second opener of a store is refused while the first has it. */
	st = fx_create(f);
	{
		struct store *st2 = NULL;

		assert_int_equal(store_open(f->store, f->pass, NULL, &st2), -EBUSY);
	}
	store_close(st);
}

/* ---- Import of a tree ---------------------------------------------------------------------- */

/* The generated tree: 1000 small files over nested directories, a few large ones, empty files and
 * an empty directory. */
static void make_tree(const char *src)
{
	static const char *const dirs[] = {
		"d0", "d0/e1", "d0/e1/f2", "d0/e1/f2/g3", "d0/e1/f2/g3/h4", "d1", "d2", "d2/sub",
		"empty",
	};
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		char *p = tu_fmt("%s/%s", src, dirs[i]);

		assert_int_equal(mkdir(p, 0750), 0);
		free(p);
	}
	for (int i = 0; i < 1000; i++) {
		const char *dir = dirs[i % 8];
		size_t sz = (i % 50 == 0) ? 0 : (size_t)((i * 7919) % 20000);
		char *p = tu_fmt("%s/%s/small-%04d.bin", src, dir, i);

		tu_write_seeded(p, sz, (uint64_t)i);
		if (i % 3 == 0)
			chmod(p, 0600);
		free(p);
	}
	static const size_t big[] = { 5u << 20, (12u << 20) + 3, 33u << 20 };
	for (size_t i = 0; i < ARRAY_SIZE(big); i++) {
		char *p = tu_fmt("%s/d1/large-%zu.bin", src, i);

		tu_write_seeded(p, big[i], 5000 + i);
		free(p);
	}
}

struct cmp_ctx {
	struct store *st;
	uint64_t dsid;
	uint32_t ver;
	const char *src;     /* source dir matching this directory */
	uint64_t files;
	uint64_t dirs;
	size_t entries;
};

static int cmp_entry(void *vctx, const char *name, uint64_t ino, uint32_t type);

/* Compare the directory ino with the source directory, recursively. */
static void cmp_dir(struct cmp_ctx *c, uint64_t ino, const char *src)
{
	struct cmp_ctx sub = *c;
	struct store_inode di;
	struct stat s;
	size_t n = 0;
	DIR *d = opendir(src);

	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d));)
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	assert_int_equal(store_inode_get(c->st, c->dsid, c->ver, ino, &di), 0);
	assert_int_equal(di.type, STORE_INODE_DIR);
	assert_int_equal(stat(src, &s), 0);
	assert_int_equal(di.mode, s.st_mode & 07777);
	assert_int_equal(di.size, n);
	sub.src = src;
	sub.entries = 0;
	assert_int_equal(store_dir_foreach(c->st, c->dsid, c->ver, ino, NULL, cmp_entry, &sub), 0);
	assert_int_equal(sub.entries, n);
	c->files = sub.files;
	c->dirs = sub.dirs + 1;
}

static int cmp_entry(void *vctx, const char *name, uint64_t ino, uint32_t type)
{
	struct cmp_ctx *c = vctx;
	char *p = tu_fmt("%s/%s", c->src, name);
	struct store_inode fi;
	struct stat s;

	c->entries++;
	assert_int_equal(lstat(p, &s), 0);
	if (type == STORE_INODE_DIR) {
		assert_true(S_ISDIR(s.st_mode));
		cmp_dir(c, ino, p);
		c->dirs--; /* cmp_dir counted it; keep the total right below */
		c->dirs++;
	} else {
		struct store_object *obj = NULL;
		struct store_reader *rd = NULL;
		size_t n;
		uint8_t *want = tu_read_file(p, &n), *have = malloc(n + 1);

		assert_true(S_ISREG(s.st_mode));
		assert_int_equal(store_inode_get(c->st, c->dsid, c->ver, ino, &fi), 0);
		assert_int_equal(fi.size, n);
		assert_int_equal(fi.mode, s.st_mode & 07777);
		assert_int_equal(fi.mtime_ns,
				 (int64_t)s.st_mtim.tv_sec * 1000000000 + s.st_mtim.tv_nsec);
		assert_int_equal(store_object_open(c->st, c->dsid, &fi, &obj), 0);
		assert_int_equal(store_reader_new(c->st, &rd), 0);
		for (size_t off = 0; off < n;) {
			ssize_t r = store_object_read(rd, obj, off, 1u << 20, have + off);

			assert_true(r > 0);
			off += (size_t)r;
		}
		assert_memory_equal(have, want, n);
		store_reader_free(rd);
		store_object_close(obj);
		free(want);
		free(have);
		c->files++;
	}
	free(p);
	return 0;
}

static void test_import_tree_reopen(void **state)
{
	struct fx *f = *state;
	struct store_version_info vi;
	struct store_dataset_info di;
	struct store_inode ino;
	struct store *st;
	uint32_t ver;

	make_tree(f->src);
	st = fx_create(f);
	ver = import_src(st, "tree", f->src, NULL);
	assert_int_equal(ver, 1);
	store_close(st);

	st = fx_open(f);
	assert_int_equal(store_dataset_get(st, "tree", &di), 0);
	assert_int_equal(di.latest_version, 1);
	assert_int_equal(store_version_get(st, di.id, 1, &vi), 0);
	assert_int_equal(vi.files, 1003);
	assert_int_equal(vi.dirs, 10);
	{
		struct cmp_ctx c = { .st = st, .dsid = di.id, .ver = 1 };

		cmp_dir(&c, STORE_ROOT_INO, f->src);
		assert_int_equal(c.files, 1003);
	}
	/* Lookups of what is not there. */
	assert_int_equal(store_path_lookup(st, di.id, 1, "d0/nope", &ino), -ENOENT);
	assert_int_equal(store_path_lookup(st, di.id, 1, "d0/../d1", &ino), -EINVAL);
	assert_int_equal(store_path_lookup(st, di.id, 1, "d1/large-0.bin/x", &ino), -ENOTDIR);
	assert_int_equal(store_version_get(st, di.id, 2, &vi), -ENOENT);
	assert_int_equal(store_dataset_get(st, "nope", &di), -ENOENT);
	store_close(st);
}

static void test_import_rejects_special_files(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store *st = fx_create(f);
	char *p = tu_fmt("%s/sub", f->src);
	struct store_import *imp = NULL;
	int dfd;

	assert_int_equal(mkdir(p, 0755), 0);
	tu_seed_file(100, 1, "%s/sub/ok", f->src);
	free(p);

	/* A symlink. */
	p = tu_fmt("%s/sub/link", f->src);
	assert_int_equal(symlink("/etc/passwd", p), 0);
	dfd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(store_import_begin(st, "bad", NULL, &imp), 0);
	assert_int_equal(store_import_add_tree(imp, dfd), -EINVAL);
	assert_non_null(strstr(err_detail(), "sub/link"));
	assert_non_null(strstr(err_detail(), "symbolic link"));
	/* The import is failed for good: commit refuses with the same error. */
	assert_int_equal(store_import_commit(imp, &(uint32_t){ 0 }), -EINVAL);
	assert_non_null(strstr(err_detail(), "sub/link"));
	store_import_free(imp);
	unlink(p);
	free(p);

	/* A FIFO, and a socket. */
	p = tu_fmt("%s/sub/fifo", f->src);
	assert_int_equal(mkfifo(p, 0644), 0);
	assert_int_equal(store_import_begin(st, "bad", NULL, &imp), 0);
	assert_int_equal(store_import_add_tree(imp, dfd), -EINVAL);
	assert_non_null(strstr(err_detail(), "sub/fifo"));
	store_import_free(imp);
	unlink(p);
	free(p);
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		p = tu_fmt("%s/sub/sock", f->src);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p);
		assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(store_import_begin(st, "bad", NULL, &imp), 0);
		assert_int_equal(store_import_add_tree(imp, dfd), -EINVAL);
		assert_non_null(strstr(err_detail(), "sub/sock"));
		assert_non_null(strstr(err_detail(), "socket"));
		store_import_free(imp);
		close(s);
		unlink(p);
		free(p);
	}
	/* A character device (creating one needs CAP_MKNOD: CI runs as root; skipped otherwise). */
	p = tu_fmt("%s/sub/null", f->src);
	if (mknod(p, S_IFCHR | 0600, makedev(1, 3)) == 0) {
		assert_int_equal(store_import_begin(st, "bad", NULL, &imp), 0);
		assert_int_equal(store_import_add_tree(imp, dfd), -EINVAL);
		assert_non_null(strstr(err_detail(), "sub/null"));
		assert_non_null(strstr(err_detail(), "character device"));
		store_import_free(imp);
		unlink(p);
	} else {
		fprintf(stderr, "note: mknod refused (%s); device case not run\n", strerror(errno));
	}
	free(p);
	/* Nothing of the refused imports exists. */
	assert_int_equal(store_dataset_get(st, "bad", &di), -ENOENT);
	close(dfd);
	store_close(st);
}

/* The source changes under the importer: the progress callback (every 8 MiB) cuts the file short
 * or appends to it. Each is refused, naming the file, and nothing is committed. */
struct change_ctx {
	const char *path;
	bool grow;
	bool done;
};

static void change_source(void *vctx, const struct store_import_stats *stats)
{
	struct change_ctx *c = vctx;
	int fd;

	if (c->done || stats->bytes < (8u << 20))
		return;
	c->done = true;
	fd = open(c->path, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	if (c->grow)
		assert_int_equal(pwrite(fd, "x", 1, 20u << 20), 1);
	else
		assert_int_equal(ftruncate(fd, 10u << 20), 0);
	close(fd);
}

static void test_import_source_changes(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	char *p = tu_fmt("%s/moving", f->src);

	for (int grow = 0; grow <= 1; grow++) {
		struct change_ctx c = { .path = p, .grow = grow };
		struct store_import_options o = { .progress = change_source, .progress_ctx = &c };
		struct store_import *imp = NULL;
		struct store_dataset_info di;
		int fd;

		tu_write_seeded(p, 20u << 20, 9);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		assert_int_equal(store_import_begin(st, "mv", &o, &imp), 0);
		assert_int_equal(store_import_add_file(imp, "moving", fd), -EIO);
		assert_non_null(strstr(err_detail(), grow ? "grew" : "shrank"));
		assert_non_null(strstr(err_detail(), "moving"));
		assert_int_equal(store_import_commit(imp, &(uint32_t){ 0 }), -EIO);
		store_import_free(imp);
		close(fd);
		assert_true(c.done);
		assert_int_equal(store_dataset_get(st, "mv", &di), -ENOENT);
	}
	/* A descriptor at any file position imports the whole file. */
	{
		struct store_import *imp = NULL;
		uint8_t *want = malloc(20u << 20), *have;
		uint32_t ver = 0;
		size_t got;
		int fd;

		tu_write_seeded(p, 20u << 20, 9);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		assert_int_equal(lseek(fd, 12345, SEEK_SET), 12345);
		assert_int_equal(store_import_begin(st, "mv", NULL, &imp), 0);
		assert_int_equal(store_import_add_file(imp, "moving", fd), 0);
		assert_int_equal(store_import_commit(imp, &ver), 0);
		store_import_free(imp);
		close(fd);
		have = read_path(st, "mv", ver, "moving", 1u << 20, &got);
		tu_fill(want, 20u << 20, 9);
		assert_int_equal(got, 20u << 20);
		assert_memory_equal(have, want, got);
		free(have);
		free(want);
	}
	free(p);
	store_close(st);
}

/* A file whose first bytes are "divert" is the caller's (store_import_add_files()). */
static bool divert_marked(const uint8_t *head, size_t len)
{
	return len >= 6 && memcmp(head, "divert", 6) == 0;
}

/* Import the files src[0..3) as names[0..3) (src[] indices into paths), by batch or one by one;
 * check every file reads back as the source it came from, and return the stats. */
static struct store_import_stats stamp_import(struct store *st, char *const *paths,
					      const int *src, bool batch, bool rehash,
					      uint32_t want_ver)
{
	static const char *const names[3] = { "a", "b", "d/c" };
	struct store_import_options o = { .rehash = rehash };
	struct store_import_stats stats;
	struct store_import *imp = NULL;
	struct stat sts[3];
	char *from[3];
	int fds[3];
	uint32_t ver = 0;

	for (size_t i = 0; i < 3; i++) {
		from[i] = paths[src[i]];
		fds[i] = open(from[i], O_RDONLY | O_CLOEXEC);
		assert_true(fds[i] >= 0);
		assert_int_equal(fstat(fds[i], &sts[i]), 0);
	}
	assert_int_equal(store_import_begin(st, "stamp", &o, &imp), 0);
	if (batch)
		assert_int_equal(store_import_add_files(imp, 3, names, fds, sts, NULL), 3);
	else
		for (size_t i = 0; i < 3; i++)
			assert_int_equal(store_import_add_file(imp, names[i], fds[i]), 0);
	store_import_get_stats(imp, &stats);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, want_ver);
	store_import_free(imp);
	assert_read_back(st, "stamp", ver, names, from, 3);
	for (size_t i = 0; i < 3; i++)
		close(fds[i]);
	return stats;
}

/* Issue 16 point 5: a file whose source stamp (a keyed hash of dev, inode, size, mtime, ctime)
 * is the one the previous version recorded for its path, and whose mtime and ctime are more than
 * 2 s older than that version's import, is shared without being read (read_bytes 0), by batch
 * and one by one. The guards: a file changed within 2 s of the previous import is read (the
 * racy rule; its content hash still shares it); the stamp must be of the same file (another
 * file of the same size and age under the path is read, and its own content stored); a content
 * change with size and mtime restored is read (its ctime moved); --rehash reads everything. */
static void test_import_stamp(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	const size_t sizes[3] = { 100, 100, 200u << 10 };
	const uint64_t total = 100 + 100 + (200u << 10);
	const int same[3] = { 0, 1, 2 }, swapped[3] = { 1, 0, 2 };
	char *paths[3];
	struct store_import_stats s;
	struct stat sb;
	uint32_t v = 0;

	for (size_t i = 0; i < 3; i++) {
		paths[i] = tu_fmt("%s/s%zu", f->src, i);
		tu_write_seeded(paths[i], sizes[i], 70 + (unsigned)i);
	}
	/* Fresh files: read at every import until they are 2 s older than the previous one. */
	s = stamp_import(st, paths, same, true, false, ++v);
	assert_int_equal(s.read_bytes, total);
	assert_int_equal(s.reused_files, 0);
	s = stamp_import(st, paths, same, false, false, ++v);
	assert_int_equal(s.read_bytes, total);
	assert_int_equal(s.reused_files, 3);
	assert_int_equal(s.stamped_files, 0);
	sleep(3);
	s = stamp_import(st, paths, same, true, false, ++v);
	assert_int_equal(s.stamped_files, 0);   /* v2 began less than 2 s after their ctime */
	assert_int_equal(s.read_bytes, total);
	/* Unchanged and old: nothing read, by batch and one by one. */
	s = stamp_import(st, paths, same, true, false, ++v);
	assert_int_equal(s.stamped_files, 3);
	assert_int_equal(s.reused_files, 3);
	assert_int_equal(s.reused_bytes, total);
	assert_int_equal(s.read_bytes, 0);
	s = stamp_import(st, paths, same, false, false, ++v);
	assert_int_equal(s.stamped_files, 3);
	assert_int_equal(s.read_bytes, 0);
	/* --rehash reads every file (and still shares them by content). */
	s = stamp_import(st, paths, same, true, true, ++v);
	assert_int_equal(s.stamped_files, 0);
	assert_int_equal(s.reused_files, 3);
	assert_int_equal(s.read_bytes, total);
	/* Another old file of the same size under a path: its stamp differs, it is read. */
	s = stamp_import(st, paths, swapped, true, false, ++v);
	assert_int_equal(s.stamped_files, 1);
	assert_int_equal(s.read_bytes, 200);
	s = stamp_import(st, paths, swapped, false, false, ++v);
	assert_int_equal(s.stamped_files, 3);
	s = stamp_import(st, paths, same, false, false, ++v);
	assert_int_equal(s.stamped_files, 1);
	assert_int_equal(s.read_bytes, 200);
	/* New content, same size, mtime put back: its ctime moved, it is read. */
	assert_int_equal(stat(paths[2], &sb), 0);
	{
		int fd = open(paths[2], O_WRONLY | O_CLOEXEC);
		struct timespec t[2] = { sb.st_atim, sb.st_mtim };

		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, "changed", 7, 1000), 7);
		assert_int_equal(futimens(fd, t), 0);
		close(fd);
	}
	s = stamp_import(st, paths, same, true, false, ++v);
	assert_int_equal(s.stamped_files, 2);
	assert_int_equal(s.reused_files, 2);
	/* Hashed to look for it among the shared objects, then read again as it is written. */
	assert_int_equal(s.read_bytes, 2 * sizes[2]);
	store_close(st);
	for (size_t i = 0; i < 3; i++)
		free(paths[i]);
}

/* The heads divert_count() was shown, and which of them it diverted (bit i: file i). */
static unsigned divert_shown;

static bool divert_count(const uint8_t *head, size_t len)
{
	divert_shown++;
	return divert_marked(head, len);
}

/* One version of the files paths[0..3) as names[0..3), by batch with divert_count() (divert) or
 * none (as --keep-crypt4gh), a diverted file imported on its own as the daemon does with a
 * Crypt4GH file it decrypts. Checks every file reads back; returns the stats, the heads shown
 * and the diverted files (bit i for file i). */
static struct store_import_stats divert_import(struct store *st, char *const *paths, bool divert,
					       uint32_t want_ver, unsigned *ret_shown,
					       unsigned *ret_diverted)
{
	static const char *const names[3] = { "plain", "marked", "d/large" };
	struct store_import_stats stats;
	struct store_import *imp = NULL;
	struct stat sts[3];
	unsigned diverted = 0;
	uint32_t ver = 0;
	int fds[3], r;

	for (size_t i = 0; i < 3; i++) {
		fds[i] = open(paths[i], O_RDONLY | O_CLOEXEC);
		assert_true(fds[i] >= 0);
		assert_int_equal(fstat(fds[i], &sts[i]), 0);
	}
	divert_shown = 0;
	assert_int_equal(store_import_begin(st, "dv", NULL, &imp), 0);
	for (size_t i = 0; i < 3;) {
		r = store_import_add_files(imp, 3 - i, names + i, fds + i, sts + i,
					   divert ? divert_count : NULL);
		assert_true(r >= 0);
		i += (size_t)r;
		if (i < 3) {
			diverted |= 1u << i;
			assert_int_equal(store_import_add_file_stat(imp, names[i], fds[i], &sts[i]),
					 0);
			i++;
		}
	}
	store_import_get_stats(imp, &stats);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, want_ver);
	store_import_free(imp);
	assert_read_back(st, "dv", ver, names, paths, 3);
	for (size_t i = 0; i < 3; i++)
		close(fds[i]);
	*ret_shown = divert_shown;
	*ret_diverted = diverted;
	return stats;
}

/* Issue 16 point 5: a file whose source stamp holds is not read at all, not even its first bytes
 * for the divert predicate (the daemon's Crypt4GH magic), when the version it shares recorded
 * that the predicate let this content through (the stamp's "plain" context, docs/FORMAT.md
 * 6.13). A file imported without the predicate (--keep-crypt4gh) has its head read again by an
 * import that diverts, and is diverted when it should be, stamp or not: a Crypt4GH file kept raw
 * in version 1 is decrypted in version 2. */
static void test_import_stamp_divert(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	const size_t sizes[3] = { 100, 3000, 200u << 10 };
	struct store_import_stats s;
	unsigned shown, diverted;
	char *paths[3];
	uint32_t v = 0;

	for (size_t i = 0; i < 3; i++) {
		paths[i] = tu_fmt("%s/dv%zu", f->src, i);
		tu_write_seeded(paths[i], sizes[i], 90 + (unsigned)i);
	}
	{
		int fd = open(paths[1], O_WRONLY | O_CLOEXEC);

		assert_int_equal(pwrite(fd, "divert", 6, 0), 6);
		close(fd);
	}
	sleep(3);   /* older than the racy window of every import below */
	/* Version 1 without the predicate (kept as it is): the stamps record no verdict. */
	s = divert_import(st, paths, false, ++v, &shown, &diverted);
	assert_int_equal(shown, 0);
	assert_int_equal(diverted, 0);
	assert_int_equal(s.reused_files, 0);
	/* Version 2 diverts: every stamp holds, yet every head is read and the marked file is
	 * diverted. Nothing else is read. */
	s = divert_import(st, paths, true, ++v, &shown, &diverted);
	assert_int_equal(diverted, 1u << 1);
	assert_int_equal(shown, 3);
	assert_int_equal(s.stamped_files, 3);
	assert_int_equal(s.read_bytes, 0);
	/* Version 3 diverts again: the two files let through in version 2 are not read at all; the
	 * diverted one (imported on its own: no verdict) is shown again and diverted again. */
	s = divert_import(st, paths, true, ++v, &shown, &diverted);
	assert_int_equal(diverted, 1u << 1);
	assert_int_equal(shown, 1);
	assert_int_equal(s.stamped_files, 3);
	assert_int_equal(s.read_bytes, 0);
	/* A version without the predicate keeps the verdict of the content it shares... */
	s = divert_import(st, paths, false, ++v, &shown, &diverted);
	assert_int_equal(shown, 0);
	assert_int_equal(s.stamped_files, 3);
	s = divert_import(st, paths, true, ++v, &shown, &diverted);
	assert_int_equal(shown, 1);
	assert_int_equal(diverted, 1u << 1);
	assert_int_equal(s.read_bytes, 0);
	/* ...and a file that becomes one to divert (new content, same size: its ctime moved) is
	 * read and diverted whatever its old stamp said. */
	{
		int fd = open(paths[0], O_WRONLY | O_CLOEXEC);

		assert_int_equal(pwrite(fd, "divert", 6, 0), 6);
		close(fd);
	}
	s = divert_import(st, paths, true, ++v, &shown, &diverted);
	assert_int_equal(diverted, (1u << 0) | (1u << 1));
	assert_int_equal(shown, 2);
	store_close(st);
	for (size_t i = 0; i < 3; i++)
		free(paths[i]);
}

/* The files of test_import_claimed: two tiny ones (a group of two, docs/FORMAT.md 4.10), a dense
 * one and a large one. */
#define CLAIM_N 4
static const char *const claim_names[CLAIM_N] = { "t0", "t1", "b", "d/c" };

/* One version of paths[0..CLAIM_N) as claim_names: every file told of by its stat
 * (store_import_add_claimed(), heads: the divert predicate is on), and those asked for given
 * with their descriptor (store_import_add_files(), with divert_marked when heads). Checks every
 * file reads back as its source; returns the stats, and the files asked for in *ret_need (bit
 * i: file i). */
static struct store_import_stats claim_import(struct store *st, char *const *paths, bool heads,
					      bool rehash, uint32_t want_ver, unsigned *ret_need)
{
	struct store_import_options o = { .rehash = rehash };
	struct store_import_stats stats;
	struct store_import *imp = NULL;
	const char *give[CLAIM_N];
	struct stat sts[CLAIM_N], gsts[CLAIM_N];
	int gfds[CLAIM_N];
	bool need[CLAIM_N];
	unsigned needed = 0;
	size_t ng = 0;
	uint32_t ver = 0;
	int r;

	for (size_t i = 0; i < CLAIM_N; i++)
		assert_int_equal(stat(paths[i], &sts[i]), 0);
	assert_int_equal(store_import_begin(st, "cl", &o, &imp), 0);
	r = store_import_add_claimed(imp, CLAIM_N, claim_names, sts, heads, need);
	assert_true(r >= 0);
	for (size_t i = 0; i < CLAIM_N; i++) {
		if (!need[i])
			continue;
		needed |= 1u << i;
		give[ng] = claim_names[i];
		gfds[ng] = open(paths[i], O_RDONLY | O_CLOEXEC);
		assert_true(gfds[ng] >= 0);
		assert_int_equal(fstat(gfds[ng], &gsts[ng]), 0);
		ng++;
	}
	assert_int_equal((size_t)r + ng, CLAIM_N);
	assert_int_equal(store_import_owed(imp), (int)ng);
	if (ng)
		assert_int_equal(store_import_add_files(imp, ng, give, gfds, gsts,
							heads ? divert_marked : NULL),
				 (int)ng);
	assert_int_equal(store_import_owed(imp), 0);
	store_import_get_stats(imp, &stats);
	assert_int_equal(stats.files, CLAIM_N);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, want_ver);
	store_import_free(imp);
	for (size_t i = 0; i < ng; i++)
		close(gfds[i]);
	assert_read_back(st, "cl", ver, claim_names, paths, CLAIM_N);
	*ret_need = needed;
	return stats;
}

/* Issue 16 point 5: files told of by their stat alone (the client's fstatat(), no descriptor).
 * One whose source stamp holds is imported unread, as by its descriptor; any other is asked for
 * and imported only when its descriptor comes. No previous version, --rehash, a stamp that
 * recorded no head check while heads are checked (a file kept raw by --keep-crypt4gh), a changed
 * file, a stat that lies about the file: each is asked for. A version that asked for a file and
 * never got it does not commit. */
static void test_import_claimed(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	const size_t sizes[CLAIM_N] = { 100, 300, 3000, 200u << 10 };
	struct store_import_stats s;
	struct store_dataset_info di;
	char *paths[CLAIM_N];
	unsigned need;
	uint32_t v = 0;

	for (size_t i = 0; i < CLAIM_N; i++) {
		paths[i] = tu_fmt("%s/cl%zu", f->src, i);
		tu_write_seeded(paths[i], sizes[i], 110 + (unsigned)i);
	}
	sleep(3);   /* older than the racy window of every import below */
	/* Version 1: nothing to share from, every file is asked for. */
	s = claim_import(st, paths, false, false, ++v, &need);
	assert_int_equal(need, 0xf);
	assert_int_equal(s.stamped_files, 0);
	/* Version 2 checks heads: version 1 kept its files as they were (no verdict on their
	 * heads), so each is asked for and its head read (and shared by content). */
	s = claim_import(st, paths, true, false, ++v, &need);
	assert_int_equal(need, 0xf);
	assert_int_equal(s.reused_files, CLAIM_N);
	/* Version 3: every stamp holds, and says the head was let through: nothing is asked for,
	 * nothing read, every object shared (the group of the two tiny files whole). */
	s = claim_import(st, paths, true, false, ++v, &need);
	assert_int_equal(need, 0);
	assert_int_equal(s.stamped_files, CLAIM_N);
	assert_int_equal(s.reused_files, CLAIM_N);
	assert_int_equal(s.read_bytes, 0);
	/* --rehash asks for every file. */
	s = claim_import(st, paths, true, true, ++v, &need);
	assert_int_equal(need, 0xf);
	assert_int_equal(s.stamped_files, 0);
	assert_int_equal(s.reused_files, CLAIM_N);
	/* New content in one tiny and the dense file (same sizes, so their ctime tells): those
	 * two are asked for and stored; the others are shared unread. */
	for (size_t i = 1; i <= 2; i++) {
		int fd = open(paths[i], O_WRONLY | O_CLOEXEC);

		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, "changed", 7, 10), 7);
		close(fd);
	}
	sleep(3);
	s = claim_import(st, paths, true, false, ++v, &need);
	assert_int_equal(need, (1u << 1) | (1u << 2));
	/* t0 is unread, but its group is not shared without t1: copied into this version's. */
	assert_int_equal(s.stamped_files, 1);
	assert_int_equal(s.reused_files, 1);
	assert_int_equal(s.read_bytes, sizes[1] + sizes[2]);
	/* Then they too hold. */
	s = claim_import(st, paths, true, false, ++v, &need);
	assert_int_equal(need, 0);
	assert_int_equal(s.stamped_files, CLAIM_N);
	assert_int_equal(s.read_bytes, 0);

	/* A stat that is not the file's (another inode number): asked for, not imported. A file
	 * asked for and never given: the version does not commit, the dataset stays as it was. */
	{
		struct store_import *imp = NULL;
		struct stat sts[CLAIM_N];
		bool nd[CLAIM_N];
		uint32_t ver = 0;
		uint8_t m[STORE_MANIFEST_LEN];

		for (size_t i = 0; i < CLAIM_N; i++)
			assert_int_equal(stat(paths[i], &sts[i]), 0);
		sts[3].st_ino ^= 1;
		assert_int_equal(store_import_begin(st, "cl", NULL, &imp), 0);
		assert_true(store_import_stamps(imp));
		assert_int_equal(store_import_add_claimed(imp, CLAIM_N, claim_names, sts, true, nd),
				 3);
		assert_false(nd[0] || nd[1] || nd[2]);
		assert_true(nd[3]);
		assert_int_equal(store_import_owed(imp), 1);
		assert_int_equal(store_import_manifest(imp, m), -EPROTO);
		assert_non_null(strstr(err_detail(), "d/c"));
		assert_int_equal(store_import_commit(imp, &ver), -EPROTO);
		store_import_free(imp);
		assert_int_equal(store_dataset_get(st, "cl", &di), 0);
		assert_int_equal(di.latest_version, v);
	}
	store_close(st);
	for (size_t i = 0; i < CLAIM_N; i++)
		free(paths[i]);
}

/* The same when the previous version's files are not all kept by their place (more than the
 * importer keeps: here 1): the others are looked up in the index, with the same results. */
static void test_import_claimed_uncached(void **state)
{
	size_t old = import_stamps_max;

	import_stamps_max = 1;
	test_import_claimed(state);
	import_stamps_max = old;
}

/* ---- Claimed files sealed in parallel (issue 16) ---- */

#define PAR_DIRS 3
#define PAR_FILES 300   /* per directory: batches of STORE_IMPORT_CLAIM_MAX end inside one */

/* The size of file i of a directory of the tree of test_import_claimed_parallel: tiny ones
 * (grouped, docs/FORMAT.md 4.10), a few not dense, the rest dense. */
static size_t par_size(size_t i)
{
	if (i % 29 == 3)
		return 100 + i;
	if (i % 37 == 5)
		return 70000 + i;
	return 1500 + (i * 37) % 3000;
}

/* What a version's import reported through its progress callback: stats.files at each call. */
struct par_progress {
	uint64_t files[PAR_DIRS * PAR_FILES + 16];
	size_t n;
};

static void par_progress_cb(void *ctx, const struct store_import_stats *s)
{
	struct par_progress *p = ctx;

	if (p->n < sizeof(p->files) / sizeof(p->files[0]))
		p->files[p->n] = s->files;
	p->n++;
}

/* The result of one import of the tree: the first failure of a call (0: none), its words, the
 * stats then, and the progress reported. */
struct par_result {
	int r;
	char why[ERR_DETAIL_MAX];
	struct store_import_stats stats;
	struct par_progress prog;
	uint32_t ver;
	size_t asked;   /* files told of by their stat and asked for */
};

/* Import the tree under src as the daemon does (directories, then each directory's files told
 * of by their stat in batches of STORE_IMPORT_CLAIM_MAX, those asked for given with their
 * descriptor after each batch; all with descriptors when there is nothing to share from). The
 * file named lie is told of with another inode number: asked for, then given. Stops at the
 * first failure (the version then is not committed). */
static void par_import(struct store *st, const char *src, const char *lie, struct par_result *res)
{
	struct store_import_options o = { .progress = par_progress_cb };
	struct store_import *imp = NULL;
	bool stamps;
	int r = 0;

	memset(res, 0, sizeof(*res));
	o.progress_ctx = &res->prog;
	assert_int_equal(store_import_begin(st, "par", &o, &imp), 0);
	stamps = store_import_stamps(imp);
	for (size_t d = 0; d < PAR_DIRS && r >= 0; d++) {
		char dname[16];

		snprintf(dname, sizeof(dname), "d%zu", d);
		r = store_import_add_dir(imp, dname, 0755, 0);
		for (size_t b = 0; b < PAR_FILES && r >= 0; b += STORE_IMPORT_CLAIM_MAX) {
			size_t n = MIN((size_t)STORE_IMPORT_CLAIM_MAX, PAR_FILES - b), ng = 0;
			const char *names[STORE_IMPORT_CLAIM_MAX];
			struct stat sts[STORE_IMPORT_CLAIM_MAX];
			bool need[STORE_IMPORT_CLAIM_MAX];
			char *paths[STORE_IMPORT_CLAIM_MAX];

			for (size_t i = 0; i < n; i++) {
				char *sp;

				paths[i] = tu_fmt("d%zu/f%03zu", d, b + i);
				names[i] = paths[i];
				sp = tu_fmt("%s/%s", src, paths[i]);
				assert_int_equal(stat(sp, &sts[i]), 0);
				free(sp);
				if (lie && strcmp(paths[i], lie) == 0)
					sts[i].st_ino ^= 1;
				need[i] = true;
			}
			if (stamps)
				r = store_import_add_claimed(imp, n, names, sts, false, need);
			for (size_t i = 0; i < n && r >= 0;) {
				const char *gn[STORE_IMPORT_BATCH_MAX];
				struct stat gs[STORE_IMPORT_BATCH_MAX];
				int gf[STORE_IMPORT_BATCH_MAX];

				for (ng = 0; i < n && ng < STORE_IMPORT_BATCH_MAX; i++) {
					char *sp;

					if (!need[i])
						continue;
					res->asked += stamps;
					sp = tu_fmt("%s/%s", src, paths[i]);
					gf[ng] = open(sp, O_RDONLY | O_CLOEXEC);
					free(sp);
					assert_true(gf[ng] >= 0);
					assert_int_equal(fstat(gf[ng], &gs[ng]), 0);
					gn[ng++] = paths[i];
				}
				if (ng)
					r = store_import_add_files(imp, ng, gn, gf, gs, NULL);
				for (size_t j = 0; j < ng; j++)
					close(gf[j]);
			}
			for (size_t i = 0; i < n; i++)
				free(paths[i]);
		}
	}
	if (r < 0) {
		res->r = r;
		snprintf(res->why, sizeof(res->why), "%s", err_detail());
		assert_true(store_import_failed(imp));
	}
	store_import_get_stats(imp, &res->stats);
	if (r >= 0)
		assert_int_equal(store_import_commit(imp, &res->ver), 0);
	store_import_free(imp);
}

/* A file of a version as a scan gives it, its object key unwrapped. */
struct par_file {
	uint64_t parent;
	char name[STORE_NAME_MAX + 1];
	struct store_inode in;
	uint8_t key[32];
};

struct par_scan {
	struct store *st;
	uint64_t dsid;
	uint32_t ver;
	struct par_file *f;
	size_t n, cap;
};

static int par_scan_cb(void *ctx, const struct store_inode *in, uint64_t parent, const char *name,
		       size_t nlen)
{
	struct par_scan *s = ctx;
	struct par_file *f;
	struct ds_keys k = { 0 };
	uint8_t ad[OBJECT_KEY_AD_MAX];
	crypto_key *okey = NULL;

	assert_true(s->n < s->cap);
	f = &s->f[s->n++];
	memset(f, 0, sizeof(*f));
	f->parent = parent;
	memcpy(f->name, name, nlen);
	f->in = *in;
	assert_int_equal(store_version_keys(s->st, s->dsid, s->ver, &k), 0);
	assert_int_equal(crypto_key_unwrap(k.wrap, in->ext.wrapped_key, ad,
					   object_key_ad(STORE_FORMAT_VERSION, s->dsid, s->ver, in,
							 ad),
					   &okey), 0);
	memcpy(f->key, crypto_key_bytes(okey), sizeof(f->key));
	crypto_key_free(okey);
	store_keys_put(s->st, &k);
	return 0;
}

static int par_list_cb(void *ctx, const char *name, uint64_t ino, uint32_t type)
{
	(void)name;
	(void)ino;
	(void)type;
	(*(size_t *)ctx)++;
	return 0;
}

/* Every file of version ver, in inode order; the version's manifest checked against one made
 * from its records, and each directory's listing against its count and digest. */
static struct par_file *par_files(struct store *st, uint32_t ver, size_t *ret_n)
{
	struct store_dataset_info di;
	struct store_version_info vi;
	struct store_inode dir;
	uint8_t m[STORE_MANIFEST_LEN];
	struct par_scan s = { .st = st, .ver = ver, .cap = PAR_DIRS * PAR_FILES };

	assert_int_equal(store_dataset_get(st, "par", &di), 0);
	s.dsid = di.id;
	s.f = calloc(s.cap, sizeof(*s.f));
	assert_non_null(s.f);
	assert_int_equal(store_version_scan_named(st, di.id, ver, par_scan_cb, &s, m), 0);
	assert_int_equal(store_version_get(st, di.id, ver, &vi), 0);
	assert_memory_equal(m, vi.manifest, sizeof(m));
	for (size_t d = 0; d < PAR_DIRS; d++) {
		char dname[16];
		size_t count = 0;

		snprintf(dname, sizeof(dname), "d%zu", d);
		assert_int_equal(store_path_lookup(st, di.id, ver, dname, &dir), 0);
		assert_int_equal(store_dir_foreach(st, di.id, ver, dir.ino, NULL, par_list_cb,
						   &count), 0);
		assert_int_equal(count, PAR_FILES);
	}
	*ret_n = s.n;
	return s.f;
}

/* The two versions hold the same files, record for record: inode numbers, places, every field
 * of the inode records (the wrapped keys compared as the keys they wrap: the nonces are
 * random). */
static void par_same(struct store *st, uint32_t va, uint32_t vb)
{
	size_t na, nb;
	struct par_file *a = par_files(st, va, &na), *b = par_files(st, vb, &nb);

	assert_int_equal(na, PAR_DIRS * PAR_FILES);
	assert_int_equal(na, nb);
	for (size_t i = 0; i < na; i++) {
		struct store_inode x = a[i].in, y = b[i].in;

		assert_int_equal(a[i].parent, b[i].parent);
		assert_string_equal(a[i].name, b[i].name);
		assert_memory_equal(a[i].key, b[i].key, sizeof(a[i].key));
		memset(x.ext.wrapped_key, 0, sizeof(x.ext.wrapped_key));
		memset(y.ext.wrapped_key, 0, sizeof(y.ext.wrapped_key));
		x.version = y.version = 0;
		assert_memory_equal(&x, &y, sizeof(x));
	}
	free(a);
	free(b);
}

/* The tree of test_import_claimed_parallel under f->src/par; returns its path. */
static char *par_tree(struct fx *f)
{
	char *root = tu_fmt("%s/par", f->src);

	assert_int_equal(mkdir(root, 0755), 0);
	for (size_t d = 0; d < PAR_DIRS; d++) {
		char *dir = tu_fmt("%s/d%zu", root, d);

		assert_int_equal(mkdir(dir, 0755), 0);
		for (size_t i = 0; i < PAR_FILES; i++) {
			char *p = tu_fmt("%s/f%03zu", dir, i);

			tu_write_seeded(p, par_size(i), 1000 * d + i);
			free(p);
		}
		free(dir);
	}
	return root;
}

static void par_modes(bool serial, int helpers)
{
	import_claim_serial = serial;
	import_claim_helpers = helpers;
}

/* Issue 16: the claimed files of a batch whose stamp holds are sealed by the caller's thread and
 * helpers together and merged in order. The same tree imported by the per-file path
 * (import_claim_serial) and by the batched one (one helper, none, the default) gives the same
 * versions: the same records field for field (each object key the same key), a manifest equal
 * to the one made from the records in inode order (a merge out of order fails here), every
 * directory's digest and count, the same stats and the same progress reported; with a file
 * asked for in the middle of a batch, and tiny files (grouped) between the others. */
static void test_import_claimed_parallel(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	char *src = par_tree(f);
	const char *lie = "d1/f100";
	struct par_result v1, ref, got;
	const int helpers[] = { 1, 0, -1, 3 };

	sleep(3);   /* older than the racy window of every import below */
	par_import(st, src, NULL, &v1);
	assert_int_equal(v1.r, 0);
	assert_int_equal(v1.ver, 1);
	par_modes(true, -1);
	par_import(st, src, lie, &ref);
	assert_int_equal(ref.r, 0);
	assert_int_equal(ref.stats.files, PAR_DIRS * PAR_FILES);
	/* The file told of by a stat that is not its own is asked for (then its stamp holds). */
	assert_int_equal(ref.asked, 1);
	assert_int_equal(ref.stats.stamped_files, PAR_DIRS * PAR_FILES);
	for (size_t h = 0; h < sizeof(helpers) / sizeof(helpers[0]); h++) {
		par_modes(false, helpers[h]);
		par_import(st, src, lie, &got);
		assert_int_equal(got.r, 0);
		assert_int_equal(got.ver, ref.ver + 1 + h);
		assert_int_equal(got.asked, 1);
		assert_memory_equal(&got.stats, &ref.stats, sizeof(got.stats));
		assert_int_equal(got.prog.n, ref.prog.n);
		assert_memory_equal(got.prog.files, ref.prog.files,
				    MIN(got.prog.n, sizeof(got.prog.files) / sizeof(uint64_t)) *
					    sizeof(uint64_t));
		par_same(st, ref.ver, got.ver);
	}
	par_modes(false, -1);
	{
		const char *names[2] = { "d0/f000", "d2/f299" };
		char *paths[2] = { tu_fmt("%s/d0/f000", src), tu_fmt("%s/d2/f299", src) };

		assert_read_back(st, "par", got.ver, names, paths, 2);
		free(paths[0]);
		free(paths[1]);
	}
	store_close(st);
	free(src);
}

/* The object key of one claimed file does not unwrap (import_test_rewrap_fail: as a damaged
 * wrapping would), in the middle of a batch, first in one, last in one: the batched path fails
 * exactly where and as the per-file path does (the same error and words, the same files
 * imported before it, the same progress), the failure is sticky, nothing after it is merged,
 * and nothing is committed. */
static void test_import_claimed_parallel_fail(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	char *src = par_tree(f);
	const char *const bad[] = { "d1/f100", "d0/f256", "d2/f255" };
	struct par_result v1, ref, got;
	struct store_dataset_info di;

	sleep(3);
	par_import(st, src, NULL, &v1);
	assert_int_equal(v1.r, 0);
	for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
		import_test_rewrap_fail = bad[b];
		par_modes(true, -1);
		par_import(st, src, NULL, &ref);
		assert_int_equal(ref.r, -EBADMSG);
		assert_non_null(strstr(ref.why, bad[b]));
		assert_non_null(strstr(ref.why, "does not unwrap"));
		for (int h = 0; h <= 1; h++) {
			par_modes(false, h);
			par_import(st, src, NULL, &got);
			assert_int_equal(got.r, ref.r);
			assert_string_equal(got.why, ref.why);
			assert_memory_equal(&got.stats, &ref.stats, sizeof(got.stats));
			assert_int_equal(got.prog.n, ref.prog.n);
		}
		import_test_rewrap_fail = NULL;
	}
	par_modes(false, -1);
	/* Nothing was committed; the next import goes on from version 1. */
	assert_int_equal(store_dataset_get(st, "par", &di), 0);
	assert_int_equal(di.latest_version, 1);
	par_import(st, src, NULL, &got);
	assert_int_equal(got.r, 0);
	assert_int_equal(got.ver, 2);
	assert_int_equal(got.stats.stamped_files, PAR_DIRS * PAR_FILES);
	store_close(st);
	free(src);
}

/* A re-import that takes files by their stamp (store_import_add_claimed()) holds the keys of the
 * version it shares from only while it seals a batch: once that version is erased, its keys are
 * gone. (Before, each batch kept a reference to them, so an erased version's keys stayed in
 * memory until the store closed.) */
static void test_import_claimed_lets_keys_go(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	char *src = par_tree(f);
	struct par_result v1, v2;
	struct store_erasure e;

	sleep(3);   /* older than the racy window of the imports below */
	par_import(st, src, NULL, &v1);
	assert_int_equal(v1.r, 0);
	/* Every file taken by its stamp, in batches, its object key rewrapped from version 1's. */
	par_modes(false, -1);
	par_import(st, src, NULL, &v2);
	assert_int_equal(v2.r, 0);
	assert_int_equal(v2.stats.stamped_files, PAR_DIRS * PAR_FILES);
	assert_int_equal(store_test_keys_orphaned(st), 0);
	assert_int_equal(store_erase(st, "par", v1.ver, &e), 0);
	assert_int_equal(store_erase_recorded(st, e.dataset_id, v1.ver), 0);
	store_erasure_free(&e);
	assert_int_equal(store_test_keys_orphaned(st), 0);
	store_close(st);
	free(src);
}

/* Issue 16 point 5: a bad batch of files told of by their stat (twice the same name, a name
 * already imported or already asked for, not a regular file, a path that is not valid, too
 * many) is refused whole: nothing of it is imported, the import goes on, and what it then
 * commits reads back. */
static void test_import_claimed_bad(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL;
	struct store_import_stats s0, s;
	char *paths[2];
	struct stat sts[STORE_IMPORT_CLAIM_MAX + 1];
	const char *names[STORE_IMPORT_CLAIM_MAX + 1];
	bool nd[STORE_IMPORT_CLAIM_MAX + 1];
	unsigned need;
	uint32_t ver = 0;

	for (size_t i = 0; i < 2; i++) {
		paths[i] = tu_fmt("%s/bad%zu", f->src, i);
		tu_write_seeded(paths[i], 2000, 130 + (unsigned)i);
		assert_int_equal(stat(paths[i], &sts[i]), 0);
	}
	sleep(3);
	/* A version 1 to share from. */
	{
		const char *n1[1] = { "one" };
		int fd = open(paths[0], O_RDONLY | O_CLOEXEC);

		assert_int_equal(store_import_begin(st, "bad", NULL, &imp), 0);
		assert_false(store_import_stamps(imp));   /* nothing to share from */
		assert_int_equal(store_import_add_files(imp, 1, n1, &fd, &sts[0], NULL), 1);
		assert_int_equal(store_import_commit(imp, &ver), 0);
		store_import_free(imp);
		close(fd);
	}
	assert_int_equal(store_import_begin(st, "bad", NULL, &imp), 0);
	store_import_get_stats(imp, &s0);
#define REFUSED(n, want, what)                                                                \
	do {                                                                                  \
		assert_int_equal(store_import_add_claimed(imp, (n), names, sts, false, nd),   \
				 (want));                                                     \
		assert_non_null(strstr(err_detail(), (what)));                                \
		assert_false(store_import_failed(imp));                                       \
		store_import_get_stats(imp, &s);                                              \
		assert_memory_equal(&s, &s0, sizeof(s));                                      \
	} while (0)
	names[0] = "one";
	names[1] = "one";
	sts[1] = sts[0];
	REFUSED(2, -EINVAL, "twice in one batch");
	names[1] = "../x";
	REFUSED(2, -EINVAL, "not a valid path");
	names[1] = "two";
	sts[1].st_mode = S_IFLNK | 0777;
	REFUSED(2, -EINVAL, "two: not a regular file");
	sts[1].st_mode = S_IFIFO | 0644;
	REFUSED(2, -EINVAL, "two: not a regular file");
	for (size_t i = 0; i <= STORE_IMPORT_CLAIM_MAX; i++) {
		names[i] = tu_fmt("m%03zu", i);
		sts[i] = sts[0];
	}
	REFUSED(STORE_IMPORT_CLAIM_MAX + 1, -E2BIG, "more than");
	for (size_t i = 0; i <= STORE_IMPORT_CLAIM_MAX; i++)
		free((char *)names[i]);
	/* "one" held (imported, unread); "two" is not the file version 1 had: asked for. */
	assert_int_equal(stat(paths[0], &sts[0]), 0);
	assert_int_equal(stat(paths[1], &sts[1]), 0);
	names[0] = "one";
	names[1] = "two";
	assert_int_equal(store_import_add_claimed(imp, 2, names, sts, false, nd), 1);
	assert_false(nd[0]);
	assert_true(nd[1]);
	store_import_get_stats(imp, &s0);
	assert_int_equal(s0.files, 1);
	/* Again: "one" is imported, "two" owed. */
	REFUSED(1, -EEXIST, "one: already imported");
	names[0] = "two";
	REFUSED(1, -EEXIST, "two: already announced");
	names[0] = "one/under";
	REFUSED(1, -EEXIST, "one: already imported as a file");   /* no directory "one" */
#undef REFUSED
	{
		const char *n2[1] = { "two" };
		int fd = open(paths[1], O_RDONLY | O_CLOEXEC);
		struct stat sb;

		assert_int_equal(fstat(fd, &sb), 0);
		assert_int_equal(store_import_add_files(imp, 1, n2, &fd, &sb, NULL), 1);
		close(fd);
		/* Given once: a second descriptor for it is a duplicate, as ever. */
		fd = open(paths[1], O_RDONLY | O_CLOEXEC);
		assert_int_equal(store_import_add_claimed(imp, 1, n2, &sb, false, nd), -EEXIST);
		assert_false(store_import_failed(imp));
		close(fd);
	}
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, 2);
	store_import_free(imp);
	assert_read_back(st, "bad", ver, (const char *const[]){ "one", "two" }, paths, 2);
	for (size_t i = 0; i < 2; i++)
		free(paths[i]);
	(void)need;
	store_close(st);
}

/* Issue 13: a batch of files through store_import_add_files(): the small ones read and hashed on
 * helper threads, in order with a large one and a file the caller diverts; every file reads back
 * byte-exact, a second version of the same files shares every object (the content hashes taken
 * on the helpers are the ones the single-file path takes), and a file that grew or shrank after
 * its fstat fails the import, naming it. */
static void test_import_add_files(void **state)
{
	static const size_t sizes[] = { 100, 50, 200u << 10, 0, 5, CS - 1, 40000 };
	enum { N = ARRAY_SIZE(sizes) };
	struct fx *f = *state;
	struct store *st = fx_create(f);
	const char *names[N] = { "a0", "a1", "a2", "a3", "a4", "d/a5", "d/a6" };
	struct store_import_stats stats;
	struct store_import *imp = NULL;
	struct stat sts[N];
	int fds[N];
	uint32_t ver = 0;

	for (size_t i = 0; i < N; i++) {
		char *p = tu_fmt("%s/b%zu", f->src, i);

		tu_write_seeded(p, sizes[i], 40 + (unsigned)i);
		if (i == 1) {
			int fd = open(p, O_WRONLY | O_CLOEXEC);

			assert_int_equal(pwrite(fd, "divert", 6, 0), 6);
			close(fd);
		}
		fds[i] = open(p, O_RDONLY | O_CLOEXEC);
		assert_true(fds[i] >= 0);
		assert_int_equal(fstat(fds[i], &sts[i]), 0);
		free(p);
	}
	for (uint32_t v = 1; v <= 2; v++) {
		assert_int_equal(store_import_begin(st, "batch", NULL, &imp), 0);
		/* Stops before the diverted file; the caller imports it, then the rest. */
		assert_int_equal(store_import_add_files(imp, N, names, fds, sts, divert_marked), 1);
		assert_int_equal(store_import_add_file_stat(imp, names[1], fds[1], &sts[1]), 0);
		assert_int_equal(store_import_add_files(imp, N - 2, names + 2, fds + 2, sts + 2,
							divert_marked),
				 N - 2);
		store_import_get_stats(imp, &stats);
		assert_int_equal(stats.files, N);
		assert_int_equal(stats.reused_files, v == 1 ? 0 : N);
		assert_int_equal(store_import_commit(imp, &ver), 0);
		assert_int_equal(ver, v);
		store_import_free(imp);
		for (size_t i = 0; i < N; i++) {
			uint8_t *want = malloc(sizes[i] + 1), *have;
			size_t got;

			tu_fill(want, sizes[i], 40 + (unsigned)i);
			if (i == 1)
				memcpy(want, "divert", 6);
			have = read_path(st, "batch", v, names[i], CS, &got);
			assert_int_equal(got, sizes[i]);
			assert_memory_equal(have, want, got);
			free(have);
			free(want);
		}
	}
	/* A small file that grew, and one that shrank, since their fstat. */
	for (int grow = 0; grow <= 1; grow++) {
		size_t i = grow ? 4 : 6;
		char *p = tu_fmt("%s/b%zu", f->src, i);
		int fd = open(p, O_WRONLY | O_CLOEXEC);

		if (grow)
			assert_int_equal(pwrite(fd, "x", 1, (off_t)sizes[i]), 1);
		else
			assert_int_equal(ftruncate(fd, 100), 0);
		close(fd);
		assert_int_equal(store_import_begin(st, "batch", NULL, &imp), 0);
		assert_int_equal(store_import_add_files(imp, N, names, fds, sts, NULL), -EIO);
		assert_non_null(strstr(err_detail(), grow ? "grew" : "shrank"));
		assert_non_null(strstr(err_detail(), names[i]));
		assert_int_equal(store_import_commit(imp, &(uint32_t){ 0 }), -EIO);
		store_import_free(imp);
		tu_write_seeded(p, sizes[i], 40 + (unsigned)i);
		free(p);
	}
	for (size_t i = 0; i < N; i++)
		close(fds[i]);
	store_close(st);
}

static void test_import_bad_input(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL, *imp2 = NULL;
	char *p = tu_fmt("%s/file", f->src);
	int fd;

	tu_write_seeded(p, 10, 3);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	static const char *const bad_names[] = { "", ".x", "-x", "a/b", "a b", "x\n" };
	for (size_t i = 0; i < ARRAY_SIZE(bad_names); i++)
		assert_int_equal(store_import_begin(st, bad_names[i], NULL, &imp), -EINVAL);

	static const char *const bad_paths[] = { "", "/abs", "a/../b", "a//b", "a/", ".", "..",
						 "a/./b" };
	for (size_t i = 0; i < ARRAY_SIZE(bad_paths); i++) {
		assert_int_equal(store_import_begin(st, "ds", NULL, &imp), 0);
		assert_int_equal(store_import_add_file(imp, bad_paths[i], fd), -EINVAL);
		store_import_free(imp);
	}
	/* One import at a time. */
	assert_int_equal(store_import_begin(st, "ds", NULL, &imp), 0);
	assert_int_equal(store_import_begin(st, "other", NULL, &imp2), -EBUSY);
	/* A duplicate path, and a file used as a directory. */
	assert_int_equal(store_import_add_file(imp, "x/y", fd), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(store_import_add_file(imp, "x/y", fd), -EEXIST);
	store_import_free(imp);
	assert_int_equal(store_import_begin(st, "ds", NULL, &imp), 0);
	assert_int_equal(store_import_add_file(imp, "x/y", fd), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(store_import_add_file(imp, "x/y/z", fd), -ENOTDIR);
	store_import_free(imp);
	/* Names out of order (issue 13: a name above the directory's greatest is new without an
	 * index read; any other is looked up): a duplicate is found wherever it came in. */
	{
		static const char *const again[] = { "x/a", "x/b", "x/c" };

		for (size_t i = 0; i < ARRAY_SIZE(again); i++) {
			assert_int_equal(store_import_begin(st, "ds", NULL, &imp), 0);
			assert_int_equal(store_import_add_file(imp, "x/b", fd), 0);
			assert_int_equal(store_import_add_file(imp, "x/a", fd), 0);
			assert_int_equal(store_import_add_file(imp, "x/c", fd), 0);
			assert_int_equal(store_import_add_file(imp, "x/a0", fd), 0);
			assert_int_equal(store_import_add_file(imp, again[i], fd), -EEXIST);
			store_import_free(imp);
		}
		assert_int_equal(store_import_begin(st, "ds", NULL, &imp), 0);
		assert_int_equal(store_import_add_file(imp, "x/b", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/a", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/c", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/a/z", fd), -ENOTDIR);
		store_import_free(imp);
		assert_int_equal(store_import_begin(st, "ds", NULL, &imp), 0);
		assert_int_equal(store_import_add_file(imp, "x/b/z", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/c", fd), 0);
		assert_int_equal(store_import_add_file(imp, "x/b", fd), -EEXIST);
		store_import_free(imp);
	}
	/* A directory given as a file. */
	{
		int dfd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		assert_int_equal(store_import_begin(st, "ds", NULL, &imp), 0);
		assert_int_equal(store_import_add_file(imp, "d", dfd), -EINVAL);
		store_import_free(imp);
		close(dfd);
	}
	/* After all of that, nothing exists, and a clean import still works and is version 1. */
	{
		struct store_dataset_info di;

		assert_int_equal(store_dataset_get(st, "ds", &di), -ENOENT);
		assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	}
	close(fd);
	free(p);
	store_close(st);
}

/* Files spread over several packs (a small rotation size), reopened and read back. */
static void test_pack_rotation(void **state)
{
	struct fx *f = *state;
	struct store_open_options o = { .pack_target = 3u << 20 };
	struct store *st = fx_create(f);
	uint64_t packs[8] = { 0 };

	store_close(st);
	for (int i = 0; i < 8; i++)
		tu_seed_file((1u << 20) + (size_t)i * 1000, (uint64_t)i + 40, "%s/f%d", f->src, i);
	st = fx_open_opts(f, &o);
	import_src(st, "rot", f->src, NULL);
	import_src(st, "rot", f->src, NULL);
	store_close(st);
	st = fx_open_opts(f, &o);
	for (uint32_t ver = 1; ver <= 2; ver++)
		for (int i = 0; i < 8; i++) {
			char *name = tu_fmt("f%d", i);
			size_t n = (1u << 20) + (size_t)i * 1000, got;
			uint8_t *want = malloc(n), *have = read_path(st, "rot", ver, name, 65536, &got);
			struct loc l = locate(f, st, "rot", name);

			tu_fill(want, n, (uint64_t)i + 40);
			assert_int_equal(got, n);
			assert_memory_equal(have, want, n);
			packs[i] = l.ino.ext.pack_id;
			loc_free(&l);
			free(want);
			free(have);
			free(name);
		}
	/* Version 2 alone (8 MiB in 3 MiB packs) needed at least three packs. */
	assert_true(packs[7] >= packs[0] + 2);
	store_close(st);
}

/* Many threads reading the same objects, each with its own reader. */
struct thr_arg {
	struct store *st;
	struct store_object *obj;
	const uint8_t *want;
	size_t n;
	int seed;
	int failures;
};

static void *reader_thread(void *p)
{
	struct thr_arg *a = p;
	struct store_reader *rd = NULL;
	uint8_t *buf = malloc(256 << 10);

	if (store_reader_new(a->st, &rd) < 0) {
		a->failures++;
		free(buf);
		return NULL;
	}
	for (int k = 0; k < 300; k++) {
		uint64_t rnd[2];
		size_t off, len;
		ssize_t r;

		tu_fill((uint8_t *)rnd, sizeof(rnd), (uint64_t)(a->seed * 1000 + k));
		off = rnd[0] % a->n;
		len = rnd[1] % (256 << 10);
		r = store_object_read(rd, a->obj, off, len, buf);
		if (r != (ssize_t)MIN(len, a->n - off) || memcmp(buf, a->want + off, (size_t)r))
			a->failures++;
	}
	store_reader_free(rd);
	free(buf);
	return NULL;
}

static void test_concurrent_readers(void **state)
{
	struct fx *f = *state;
	const size_t n = 7u << 20;
	struct store *st = fx_create(f);
	struct thr_arg args[4];
	pthread_t th[4];
	struct loc l;
	uint8_t *want = malloc(n);
	struct store_object *obj = NULL;

	tu_seed_file(n, 77, "%s/big", f->src);
	tu_fill(want, n, 77);
	import_src(st, "c", f->src, NULL);
	l = locate(f, st, "c", "big");
	assert_int_equal(store_object_open(st, l.dsid, &l.ino, &obj), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct thr_arg){ .st = st, .obj = obj, .want = want, .n = n, .seed = i };
		assert_int_equal(pthread_create(&th[i], NULL, reader_thread, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].failures, 0);
	}
	store_object_close(obj);
	loc_free(&l);
	free(want);
	store_close(st);
}

/* ---- Crash and abort ----------------------------------------------------------------------- */

/* In a child process: open the store, start importing version 2 of "keep" (and a new dataset),
 * and SIGKILL ourselves after `after` files, before the commit. */
static void child_import_and_die(struct fx *f, int after, bool new_dataset)
{
	struct store_open_options o = { .pack_target = 4u << 20 };
	struct store *st = NULL;
	struct store_import *imp = NULL;
	int fd;

	if (store_open(f->store, f->pass, &o, &st) < 0) {
		fprintf(stderr, "child: open: %s\n", err_detail());
		_exit(10);
	}
	if (store_import_begin(st, new_dataset ? "newds" : "keep", NULL, &imp) < 0) {
		fprintf(stderr, "child: begin: %s\n", err_detail());
		_exit(11);
	}
	for (int i = 0; i < 40; i++) {
		char *p = tu_fmt("%s/f%d", f->src, i % 4);
		char *name = tu_fmt("n/%d", i);

		if (i == after)
			raise(SIGKILL);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || store_import_add_file(imp, name, fd) < 0) {
			fprintf(stderr, "child: add %s: %s\n", name, err_detail());
			_exit(12);
		}
		close(fd);
		free(p);
		free(name);
	}
	raise(SIGKILL); /* all written, not committed */
	_exit(13);
}

static void test_crash_during_import(void **state)
{
	struct fx *f = *state;
	struct store_open_options o = { .pack_target = 4u << 20 };
	static const int kill_after[] = { 0, 1, 7, 40 };
	struct store *st = fx_create(f);
	struct store_dataset_info di;
	struct store_version_info vi;
	struct store_inode ino;

	for (int i = 0; i < 4; i++)
		tu_seed_file((1u << 20) + 4321 * (size_t)i, (uint64_t)i + 900, "%s/f%d", f->src, i);
	store_close(st);
	st = fx_open_opts(f, &o);
	assert_int_equal(import_src(st, "keep", f->src, NULL), 1);
	store_close(st);

	for (size_t k = 0; k < ARRAY_SIZE(kill_after) * 2; k++) {
		bool newds = k % 2;
		int status = 0;
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0)
			child_import_and_die(f, kill_after[k / 2], newds);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);

		/* After the crash: the half-imported version does not exist; version 1 reads. */
		st = fx_open_opts(f, &o);
		assert_int_equal(store_dataset_get(st, "newds", &di), -ENOENT);
		assert_int_equal(store_dataset_get(st, "keep", &di), 0);
		/* And the open says what it dropped, for the daemon to record (#14, point 13): the
		 * pending version is written at store_import_begin(). */
		{
			const struct store_recovered *rec;
			uint64_t more = 9;
			size_t nrec = store_recovered(st, &rec, &more);

			assert_int_equal(more, 0);
			assert_int_equal(nrec, 1);
			assert_int_equal(rec[0].version, newds ? 1 : 2);
			if (!newds)
				assert_int_equal(rec[0].dataset_id, di.id);
			else
				assert_true(rec[0].dataset_id != di.id);
		}
		assert_int_equal(di.latest_version, 1);
		assert_int_equal(store_version_get(st, di.id, 2, &vi), -ENOENT);
		assert_int_equal(store_inode_get(st, di.id, 2, STORE_ROOT_INO, &ino), -ENOENT);
		assert_int_equal(store_path_lookup(st, di.id, 2, "n/0", &ino), -ENOENT);
		for (int i = 0; i < 4; i++) {
			char *name = tu_fmt("f%d", i);
			size_t n = (1u << 20) + 4321 * (size_t)i, got;
			uint8_t *want = malloc(n), *have = read_path(st, "keep", 1, name, 1 << 20,
								     &got);

			tu_fill(want, n, (uint64_t)i + 900);
			assert_memory_equal(have, want, n);
			free(want);
			free(have);
			free(name);
		}
		store_close(st);
	}
	/* The store carries on: the next import is version 2, and reads back. */
	st = fx_open_opts(f, &o);
	assert_int_equal(import_src(st, "keep", f->src, NULL), 2);
	store_close(st);
	st = fx_open(f);
	{
		size_t got;
		uint8_t *want = malloc(1u << 20), *have = read_path(st, "keep", 2, "f0", 99999, &got);

		tu_fill(want, 1u << 20, 900);
		assert_int_equal(got, 1u << 20);
		assert_memory_equal(have, want, got);
		free(want);
		free(have);
	}
	store_close(st);
}

/* An index older than the packs (a restored backup) must not make the open destroy pack data:
 * with the old index the newer version is simply unknown; put the newer index back and it reads. */
static void test_stale_index_destroys_nothing(void **state)
{
	struct fx *f = *state;
	struct store_open_options o = { .pack_target = 2u << 20 };
	char *index = tu_fmt("%s/index", f->store), *old = tu_fmt("%s/index.v1", f->root);
	char *newer = tu_fmt("%s/index.v2", f->root), *packs = tu_fmt("%s/packs", f->store);
	struct store_dataset_info di;
	struct store *st = fx_create(f);
	uint64_t bytes_before, bytes_after;
	unsigned n_before, n_after;

	store_close(st);
	for (int i = 0; i < 3; i++)
		tu_seed_file((1u << 20) + 77 * (size_t)i, (uint64_t)i + 300, "%s/f%d", f->src, i);
	st = fx_open_opts(f, &o);
	assert_int_equal(import_src(st, "s", f->src, NULL), 1);
	store_close(st);
	tu_copy_flat_dir(index, old);

	/* Version 2 (into a new pack, past the 2 MiB target) and a second dataset. */
	tu_seed_file(3u << 20, 301, "%s/f1", f->src);
	st = fx_open_opts(f, &o);
	assert_int_equal(import_src(st, "s", f->src, NULL), 2);
	assert_int_equal(import_src(st, "other", f->src, NULL), 1);
	store_close(st);
	tu_copy_flat_dir(index, newer);
	bytes_before = tu_dir_bytes(packs, &n_before);

	/* Open with the old index: v2 and "other" are unknown, and no pack byte is lost. */
	tu_rm_rf(index);
	tu_copy_flat_dir(old, index);
	st = fx_open_opts(f, &o);
	assert_int_equal(store_dataset_get(st, "s", &di), 0);
	assert_int_equal(di.latest_version, 1);
	assert_int_equal(store_dataset_get(st, "other", &di), -ENOENT);
	store_close(st);
	bytes_after = tu_dir_bytes(packs, &n_after);
	assert_int_equal(n_after, n_before);
	assert_int_equal(bytes_after, bytes_before);

	/* The newer index back: everything it committed reads, byte for byte. */
	tu_rm_rf(index);
	tu_copy_flat_dir(newer, index);
	st = fx_open_opts(f, &o);
	{
		size_t got;
		uint8_t *want = malloc(3u << 20), *have = read_path(st, "s", 2, "f1", 1u << 20, &got);

		tu_fill(want, 3u << 20, 301);
		assert_int_equal(got, 3u << 20);
		assert_memory_equal(have, want, got);
		free(have);
		have = read_path(st, "other", 1, "f1", 1u << 20, &got);
		assert_memory_equal(have, want, got);
		free(have);
		free(want);
	}
	store_close(st);
	free(index);
	free(old);
	free(newer);
	free(packs);
}

/* A pack cut back by an abort is exactly as long as before the failed import. */
static void test_abort_restores_pack(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL;
	char *pack = tu_fmt("%s/packs/%016llx.pack", f->store, 1ull);
	struct stat before, after;
	int fd;

	tu_seed_file(300000, 1, "%s/a", f->src);
	import_src(st, "ab", f->src, NULL);
	assert_int_equal(stat(pack, &before), 0);
	assert_int_equal(store_import_begin(st, "ab", NULL, &imp), 0);
	fd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(store_import_add_tree(imp, fd), 0);
	close(fd);
	store_import_free(imp); /* abort */
	assert_int_equal(stat(pack, &after), 0);
	assert_int_equal(after.st_size, before.st_size);
	{
		struct store_dataset_info di;
		struct store_version_info vi;

		assert_int_equal(store_dataset_get(st, "ab", &di), 0);
		assert_int_equal(di.latest_version, 1);
		assert_int_equal(store_version_get(st, di.id, 2, &vi), -ENOENT);
	}
	/* And the version number is not burnt. */
	assert_int_equal(import_src(st, "ab", f->src, NULL), 2);
	free(pack);
	store_close(st);
}

/* The store keeps an import's index batches for the next import (batch_keep() in import.c, so
 * their grown buffers are not faulted in again). An aborted import leaves records in its batch
 * that were never written; the next import must start from an empty batch, or those records
 * (sealed under the aborted version's keys, under the same version number) would be committed
 * with it. */
static int count_entries(void *ctx, const char *name, uint64_t ino, uint32_t type)
{
	(void)name;
	(void)ino;
	(void)type;
	(*(int *)ctx)++;
	return 0;
}

/* How many records of version ver of dataset dsid the index holds in family cf (the store closed). */
static size_t version_records(const char *store, enum store_cf cf, uint64_t dsid, uint32_t ver)
{
	struct store_index ix;
	uint8_t lo[VKEY_LEN];
	char *p = tu_fmt("%s/index", store);
	rocksdb_iterator_t *it;
	size_t n = 0;

	assert_int_equal(index_open(&ix, p, false), 0);
	free(p);
	vkey(lo, dsid, ver);
	it = rocksdb_create_iterator_cf(ix.db, ix.ro, ix.cf[cf]);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl;
		const char *k = rocksdb_iter_key(it, &kl);

		if (kl < VKEY_LEN || memcmp(k, lo, VKEY_LEN) != 0)
			break;
		n++;
	}
	rocksdb_iter_destroy(it);
	index_close(&ix);
	return n;
}

static void test_abort_leaves_no_records_in_next_import(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL;
	struct store_dataset_info di;
	struct store_inode ino;
	int count = 0, dfd;

	/* Two files into the batch (far below IMPORT_BATCH_BYTES, so never written), then abort.
	 * Larger than STORE_TINY_MAX: a tiny file's records wait in its group, not the batch. */
	tu_seed_file(5000, 1, "%s/left1", f->src);
	tu_seed_file(5000, 2, "%s/left2", f->src);
	dfd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(store_import_begin(st, "kb", NULL, &imp), 0);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	store_import_free(imp); /* abort */
	close(dfd);
	tu_rm_rf(f->src);
	assert_int_equal(mkdir(f->src, 0755), 0);
	tu_seed_file(5000, 3, "%s/kept", f->src);

	/* The same dataset and version number again, with one other file. */
	assert_int_equal(import_src(st, "kb", f->src, NULL), 1);
	assert_int_equal(store_dataset_get(st, "kb", &di), 0);
	assert_int_equal(store_dir_foreach(st, di.id, 1, STORE_ROOT_INO, NULL, count_entries,
					   &count), 0);
	assert_int_equal(count, 1);
	assert_int_equal(store_dir_lookup(st, di.id, 1, STORE_ROOT_INO, "kept", &ino), 0);
	assert_int_equal(store_dir_lookup(st, di.id, 1, STORE_ROOT_INO, "left1", &ino), -ENOENT);
	store_close(st);
	/* No record of the aborted files either, hidden or not: the root's and kept's inodes, and
	 * kept's entry. */
	assert_int_equal(version_records(f->store, CF_INODES, di.id, 1), 2);
	assert_int_equal(version_records(f->store, CF_DIRENTS, di.id, 1), 1);
	/* And the store opens (recovery and every check) with that version intact. */
	st = fx_open(f);
	count = 0;
	assert_int_equal(store_dir_foreach(st, di.id, 1, STORE_ROOT_INO, NULL, count_entries,
					   &count), 0);
	assert_int_equal(count, 1);
	store_close(st);
}

/* Issue 16 point 5: the primary announces store_sequence_visible() to the nodes at once (a
 * signal signed and written within 20 ms of its change); an import's batches of its PENDING
 * version, written every IMPORT_BATCH_BYTES, must not move it (no node can see them), while the
 * index's sequence number does; the commit, and any other write, must. */
static void test_sequence_visible_ignores_pending_batches(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL;
	char *src = tu_fmt("%s/one", f->src);
	uint64_t seq0, vis0, vis1;
	uint32_t ver = 0;
	int fd;

	tu_seed_file(2000, 7, "%s", src);
	fd = open(src, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_true(store_sequence_visible(st) <= store_sequence(st));
	assert_int_equal(store_import_begin(st, "vis", NULL, &imp), 0);
	/* The PENDING record itself is an ordinary write. */
	vis0 = store_sequence_visible(st);
	seq0 = store_sequence(st);
	/* Files of 2,000 bytes until batches of their records (each written at IMPORT_BATCH_BYTES,
	 * about 3,500 files, by the import's writer thread) are in the index. */
	for (int i = 0; i < 40000 && store_sequence(st) <= seq0 + 1000; i++) {
		char name[32];

		snprintf(name, sizeof(name), "d%d/f%05d", i / 1000, i);
		assert_int_equal(store_import_add_file(imp, name, fd), 0);
	}
	assert_true(store_sequence(st) > seq0 + 1000);
	assert_int_equal(store_sequence_visible(st), vis0);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, 1);
	vis1 = store_sequence_visible(st);
	assert_true(vis1 > vis0);
	store_import_free(imp);
	assert_true(store_sequence_visible(st) <= store_sequence(st));
	/* Any other write (here an aborted import's PENDING record) moves it too. */
	assert_int_equal(store_import_begin(st, "vis", NULL, &imp), 0);
	assert_true(store_sequence_visible(st) > vis1);
	store_import_free(imp);
	close(fd);
	free(src);
	store_close(st);
}

/* The daemon sends import.commit's reply before it frees the import (its threads and memory),
 * so the steward's next import.begin can come while the committed one still holds the store's
 * import lock: begin waits for it (a second at most) instead of refusing with -EBUSY. An import
 * that has not committed still makes begin refuse at once. */
struct begin_later {
	struct store *st;
	struct store_import *imp;
	int r;
};

static void *begin_thread(void *arg)
{
	struct begin_later *b = arg;

	int r = store_import_begin(b->st, "later", NULL, &b->imp);

	__atomic_store_n(&b->r, r, __ATOMIC_RELEASE);
	return NULL;
}

static void test_begin_waits_for_committed_import(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL, *other = NULL;
	struct begin_later b = { .st = st, .r = 1 };
	pthread_t t;
	uint32_t ver = 0;
	int dfd;

	tu_seed_file(5000, 1, "%s/a", f->src);
	dfd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(store_import_begin(st, "first", NULL, &imp), 0);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	/* Not committed yet: refused at once. */
	assert_int_equal(store_import_begin(st, "later", NULL, &other), -EBUSY);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	/* Committed, not yet freed: the next begin waits, and goes ahead once it is freed. */
	assert_int_equal(pthread_create(&t, NULL, begin_thread, &b), 0);
	usleep(100 * 1000);
	assert_int_equal(__atomic_load_n(&b.r, __ATOMIC_ACQUIRE), 1);   /* still waiting */
	store_import_free(imp);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(b.r, 0);
	assert_int_equal(store_import_add_tree(b.imp, dfd), 0);
	assert_int_equal(store_import_commit(b.imp, &ver), 0);
	store_import_free(b.imp);
	close(dfd);
	store_close(st);
}

struct progress_seen {
	struct store_import_stats last;
	int calls;
	bool went_back;
};

static void progress_cb(void *ctx, const struct store_import_stats *s)
{
	struct progress_seen *p = ctx;

	p->calls++;
	p->went_back |= s->bytes < p->last.bytes || s->files < p->last.files;
	p->last = *s;
}

static int list_names(void *ctx, const struct store_dataset_info *info)
{
	struct buf *b = ctx;

	buf_append(b, info->name, strlen(info->name));
	return buf_append(b, ",", 2) < 0 ? -1 : (b->len--, 0); /* keep a NUL after the text */
}

static void test_progress_and_listing(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct progress_seen seen = { 0 };
	struct store_import_options o = { .progress = progress_cb, .progress_ctx = &seen };
	struct buf list;

	for (int i = 0; i < 5; i++)
		tu_seed_file(20u << 20, (uint64_t)i, "%s/f%d", f->src, i);
	import_src(st, "p2", f->src, &o);
	import_src(st, "p1", f->src, NULL);
	assert_false(seen.went_back);
	assert_int_equal(seen.last.files, 5);
	assert_int_equal(seen.last.bytes, 100u << 20);
	/* Once per 8 MiB within each 20 MiB file (2) and once at its end. */
	assert_true(seen.calls >= 5 * 3);

	buf_init(&list, 64);
	assert_int_equal(store_dataset_foreach(st, list_names, &list), 0);
	assert_string_equal((char *)list.data, "p1,p2,");
	buf_free(&list);
	store_close(st);
}

/* Policy records: durable, ordered, bounded, and kept across a reopen. */
static int collect_policy(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct buf *b = ctx;

	buf_append(b, key, klen);
	buf_append(b, "=", 1);
	buf_append(b, val, vlen);
	buf_append(b, ";", 1);
	return 0;
}

static int stop_at_first(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)ctx;
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	return 42;
}

static void test_policy_records(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	static uint8_t big[STORE_POLICY_VALUE_MAX + 1];
	struct buf b;

	buf_init(&b, 1 << 20);
	assert_int_equal(store_policy_put(st, "g2", 2, "two", 3), 0);
	assert_int_equal(store_policy_put(st, "g1", 2, "one", 3), 0);
	assert_int_equal(store_policy_put(st, "n", 1, "x", 1), 0);
	assert_int_equal(store_policy_put(st, "n", 1, "y", 1), 0);   /* overwritten */
	/* Bounds: nothing empty, nothing oversized. */
	assert_int_equal(store_policy_put(st, "", 0, "v", 1), -EINVAL);
	assert_int_equal(store_policy_put(st, "k", 1, "", 0), -EINVAL);
	assert_int_equal(store_policy_put(st, "k", 1, big, sizeof(big)), -EINVAL);
	assert_int_equal(store_policy_put(st, big, STORE_POLICY_KEY_MAX + 1, "v", 1), -EINVAL);
	store_close(st);
	st = fx_open(f);
	assert_int_equal(store_policy_foreach(st, collect_policy, &b), 0);
	assert_int_equal(b.len, strlen("g1=one;g2=two;n=y;"));
	assert_memory_equal(b.data, "g1=one;g2=two;n=y;", b.len);
	assert_int_equal(store_policy_foreach(st, stop_at_first, NULL), 42);
	buf_free(&b);
	store_close(st);
}

/* The audit signing key: made once, bound to its store and its name; an edited name, a copy from
 * another store, a damaged file and a bad name are all refused. */
static void test_signing_key(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	char name[STORE_SIGNING_NAME_MAX + 1], *path = tu_fmt("%s/keys/audit.key", f->store);
	char *other = tu_fmt("%s/other", f->root);
	crypto_key *seed = NULL, *again = NULL;
	uint8_t *file, *copy;
	size_t n, cn;

	assert_int_equal(store_signing_seed(st, &seed, name), -ENOENT);
	assert_int_equal(store_signing_create(st, "has space"), -EINVAL);
	assert_int_equal(store_signing_create(st, "a+b"), -EINVAL);
	assert_int_equal(store_signing_create(st, ""), -EINVAL);
	assert_int_equal(store_signing_create(st, "host.example/enclave"), 0);
	assert_int_equal(store_signing_create(st, "host.example/enclave"), -EEXIST);
	assert_int_equal(store_signing_seed(st, &seed, name), 0);
	assert_string_equal(name, "host.example/enclave");
	store_close(st);
	st = fx_open(f);
	assert_int_equal(store_signing_seed(st, &again, name), 0);
	assert_memory_equal(crypto_key_bytes(seed), crypto_key_bytes(again), 32);
	crypto_key_free(again);
	store_close(st);

	/* The name edited (same length): does not unwrap. */
	file = tu_read_file(path, &n);
	file[n - 1] ^= 0x01;
	tu_write_file(path, file, n);
	st = fx_open(f);
	assert_int_equal(store_signing_seed(st, &again, name), -EBADMSG);
	/* Cut short, or grown: not a key file. */
	file[n - 1] ^= 0x01;
	tu_write_file(path, file, n - 1);
	assert_int_equal(store_signing_seed(st, &again, name), -EBADMSG);
	tu_write_file(path, file, n);
	store_close(st);

	/* The file copied into another store (another master key and store id). */
	{
		char *keep = f->store;

		f->store = other;
		st = fx_create(f);
		assert_int_equal(store_signing_create(st, "host.example/enclave"), 0);
		store_close(st);
		f->store = keep;
	}
	{
		char *opath = tu_fmt("%s/keys/audit.key", other);

		copy = tu_read_file(path, &cn);
		tu_write_file(opath, copy, cn);
		free(opath);
	}
	{
		char *keep = f->store;

		f->store = other;
		st = fx_open(f);
		assert_int_equal(store_signing_seed(st, &again, name), -EBADMSG);
		store_close(st);
		f->store = keep;
	}
	crypto_key_free(seed);
	free(copy);
	free(file);
	free(path);
	free(other);
}

/* ---- Rearranged index records (issue 12): each detected, nothing served, the hook told ----- */

/* A store with dataset "r" (versions 1 and 2: a, b, sub/c, sub/d; v2 changes a) and dataset "s"
 * (a, b), and the keys an attacker would need to address records (but not to make them): the
 * record keys are computed here with the store's own keys, as a stand-in for an attacker who
 * finds them by trying. */
struct rfx {
	uint64_t r, s;        /* dataset ids */
	uint64_t ino_a, ino_b, ino_sub, ino_c, ino_d; /* inode numbers in r (same in both versions) */
	uint8_t k_dir[2][4][DKEY_LEN];  /* dirent keys in r, [version-1][a, b, sub, c] */
	uint8_t k_s_a[IKEY_LEN];        /* inode key of s's a */
	uint8_t ds_r[DSKEY_LEN];        /* r's dataset key */
};

static void rfx_make(struct fx *f, struct rfx *x, char **ret_ds_r_v1, size_t *ret_n)
{
	struct store_dataset_info di;
	struct store_inode in;
	struct store_index ix;
	struct ds_keys k;
	struct store *st = fx_create(f);
	const char *names[4] = { "a", "b", "sub", "c" };

	char *sub = tu_fmt("%s/sub", f->src);

	assert_int_equal(mkdir(sub, 0755), 0);
	free(sub);
	tu_seed_file(3000, 1, "%s/a", f->src);
	tu_seed_file(4000, 2, "%s/b", f->src);
	tu_seed_file(100, 3, "%s/sub/c", f->src);
	tu_seed_file(200, 4, "%s/sub/d", f->src);
	assert_int_equal(import_src(st, "r", f->src, NULL), 1);
	assert_int_equal(store_dataset_get(st, "r", &di), 0);
	x->r = di.id;
	dskey_hash(st->ix_name, "r", x->ds_r);
	store_close(st);
	/* The dataset record as it was at version 1, for the rollback below. */
	raw_index(f, &ix);
	assert_int_equal(index_get(&ix, CF_DATASETS, x->ds_r, sizeof(x->ds_r), ret_ds_r_v1, ret_n),
			 0);
	index_close(&ix);
	st = fx_open(f);
	tu_seed_file(3000, 9, "%s/a", f->src);
	assert_int_equal(import_src(st, "r", f->src, NULL), 2);
	assert_int_equal(import_src(st, "s", f->src, NULL), 1);
	assert_int_equal(store_dataset_get(st, "s", &di), 0);
	x->s = di.id;
	assert_int_equal(store_path_lookup(st, x->r, 2, "a", &in), 0);
	x->ino_a = in.ino;
	assert_int_equal(store_path_lookup(st, x->r, 2, "b", &in), 0);
	x->ino_b = in.ino;
	assert_int_equal(store_path_lookup(st, x->r, 2, "sub", &in), 0);
	x->ino_sub = in.ino;
	assert_int_equal(store_path_lookup(st, x->r, 2, "sub/c", &in), 0);
	x->ino_c = in.ino;
	assert_int_equal(store_path_lookup(st, x->r, 2, "sub/d", &in), 0);
	x->ino_d = in.ino;
	assert_int_equal(store_path_lookup(st, x->s, 1, "a", &in), 0);
	ikey(x->k_s_a, x->s, 1, in.ino);
	/* Format 3: every version hashes its names under its own key (docs/FORMAT.md 3.7). */
	for (uint32_t v = 1; v <= 2; v++) {
		assert_int_equal(store_version_keys(st, x->r, v, &k), 0);
		for (int i = 0; i < 4; i++)
			dkey(k.name, x->k_dir[v - 1][i], x->r, v,
			     i == 3 ? x->ino_sub : STORE_ROOT_INO, names[i], strlen(names[i]));
		store_keys_put(st, &k);
	}
	store_close(st);
}

/* Copy the value at (cf, from) to (cf, to) in the closed store's index. */
static void raw_copy(struct fx *f, enum store_cf cf, const void *from, size_t fl, const void *to,
		     size_t tl)
{
	struct store_index ix;
	char *v = NULL;
	size_t n = 0;

	raw_index(f, &ix);
	assert_int_equal(index_get(&ix, cf, from, fl, &v, &n), 0);
	raw_put(&ix, cf, to, tl, v, n);
	free(v);
	index_close(&ix);
}

static void raw_del(struct fx *f, enum store_cf cf, const void *k, size_t kl)
{
	struct store_index ix;
	rocksdb_writebatch_t *wb;

	raw_index(f, &ix);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(wb, ix.cf[cf], k, kl);
	assert_int_equal(index_write(&ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	index_close(&ix);
}

static struct store *open_hooked(struct fx *f, struct hook_log *h)
{
	struct store *st = fx_open(f);

	memset(h, 0, sizeof(*h));
	store_set_integrity_hook(st, hook_cb, h);
	return st;
}

/* The -EBADMSG of an integrity failure, reported once more through the hook. */
static void expect_integrity(int r, struct hook_log *h, int calls_before)
{
	assert_int_equal(r, -EBADMSG);
	assert_non_null(strstr(err_detail(), "index integrity"));
	assert_true(h->calls > calls_before);
}

static int count_cb(void *ctx, const char *name, uint64_t ino, uint32_t type)
{
	(void)name;
	(void)ino;
	(void)type;
	(*(int *)ctx)++;
	return 0;
}

/* b's inode record put over a's: a would serve b's bytes. */
static void test_rearranged_inode_swap(void **state)
{
	struct fx *f = *state;
	struct store_inode in;
	struct hook_log h;
	uint8_t ka[IKEY_LEN], kb[IKEY_LEN];
	struct rfx x;
	char *old = NULL;
	size_t n;
	struct store *st;

	rfx_make(f, &x, &old, &n);
	free(old);
	ikey(ka, x.r, 2, x.ino_a);
	ikey(kb, x.r, 2, x.ino_b);
	raw_copy(f, CF_INODES, kb, sizeof(kb), ka, sizeof(ka));
	st = open_hooked(f, &h);
	expect_integrity(store_path_lookup(st, x.r, 2, "a", &in), &h, 0);
	assert_int_equal(h.dsid, x.r);
	assert_int_equal(h.version, 2);
	expect_integrity(store_inode_get(st, x.r, 2, x.ino_a, &in), &h, 1);
	/* b itself, and version 1's a, are untouched and still served. */
	assert_int_equal(store_path_lookup(st, x.r, 2, "b", &in), 0);
	assert_int_equal(store_path_lookup(st, x.r, 1, "a", &in), 0);
	store_close(st);
}

/* Version 1's record of a copied into version 2 (old content), and dataset s's a into r's a. */
static void test_rearranged_copied_from_version_and_dataset(void **state)
{
	struct fx *f = *state;
	struct store_inode in;
	struct hook_log h;
	uint8_t k1[IKEY_LEN], k2[IKEY_LEN];
	struct rfx x;
	char *old = NULL;
	size_t n;
	struct store *st;

	rfx_make(f, &x, &old, &n);
	free(old);
	ikey(k1, x.r, 1, x.ino_a);
	ikey(k2, x.r, 2, x.ino_a);
	raw_copy(f, CF_INODES, k1, sizeof(k1), k2, sizeof(k2));
	st = open_hooked(f, &h);
	expect_integrity(store_path_lookup(st, x.r, 2, "a", &in), &h, 0);
	assert_int_equal(store_path_lookup(st, x.r, 1, "a", &in), 0);
	store_close(st);

	/* From the other dataset: s's inode record of a, into r's version 1. */
	raw_copy(f, CF_INODES, x.k_s_a, sizeof(x.k_s_a), k1, sizeof(k1));
	st = open_hooked(f, &h);
	expect_integrity(store_path_lookup(st, x.r, 1, "a", &in), &h, 0);
	assert_int_equal(store_path_lookup(st, x.s, 1, "a", &in), 0);
	/* And a directory entry of version 1 copied into version 2's range under its key. */
	store_close(st);
	raw_copy(f, CF_DIRENTS, x.k_dir[0][1], DKEY_LEN, x.k_dir[1][1], DKEY_LEN);
	st = open_hooked(f, &h);
	expect_integrity(store_path_lookup(st, x.r, 2, "b", &in), &h, 0);
	store_close(st);
}

/* a's entry moved under b's key (a rename onto b): neither the lookup of b nor a listing serves
 * it, and the lookup of a, now missing, is not a quiet ENOENT. */
static void test_rearranged_rename(void **state)
{
	struct fx *f = *state;
	struct store_inode in;
	struct hook_log h;
	struct rfx x;
	char *old = NULL;
	size_t n;
	int count = 0;
	struct store *st;

	rfx_make(f, &x, &old, &n);
	free(old);
	raw_copy(f, CF_DIRENTS, x.k_dir[1][0], DKEY_LEN, x.k_dir[1][1], DKEY_LEN);
	raw_del(f, CF_DIRENTS, x.k_dir[1][0], DKEY_LEN);
	st = open_hooked(f, &h);
	expect_integrity(store_path_lookup(st, x.r, 2, "b", &in), &h, 0);
	expect_integrity(store_path_lookup(st, x.r, 2, "a", &in), &h, 1);
	expect_integrity(store_dir_foreach(st, x.r, 2, STORE_ROOT_INO, NULL, count_cb, &count), &h,
			 2);
	store_close(st);
}

/* One byte of a's sealed inode record changed (its size, or anything else): refused. */
static void test_rearranged_size_edit(void **state)
{
	struct fx *f = *state;
	struct store_inode in;
	struct store_index ix;
	struct hook_log h;
	uint8_t k[IKEY_LEN];
	struct rfx x;
	char *old = NULL, *v = NULL;
	size_t n, vn = 0;
	struct store *st;

	rfx_make(f, &x, &old, &n);
	free(old);
	ikey(k, x.r, 2, x.ino_a);
	raw_index(f, &ix);
	assert_int_equal(index_get(&ix, CF_INODES, k, sizeof(k), &v, &vn), 0);
	/* The size field: record offset 14, after the 24-byte nonce. */
	v[24 + 14] ^= 0x01;
	raw_put(&ix, CF_INODES, k, sizeof(k), v, vn);
	free(v);
	index_close(&ix);
	st = open_hooked(f, &h);
	expect_integrity(store_path_lookup(st, x.r, 2, "a", &in), &h, 0);
	store_close(st);
}

/* latest lowered (the dataset record of version 1 put back) and raised (version 2's record
 * removed, or flipped to PENDING, under a record that names it). */
static void test_rearranged_latest(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store_index ix;
	struct hook_log h;
	uint8_t vk[VKEY_LEN];
	struct rfx x;
	char *old = NULL, *cur = NULL, *v = NULL;
	size_t n = 0, cn = 0, vn = 0;
	int count = 0;
	struct store *st;

	rfx_make(f, &x, &old, &n);
	raw_index(f, &ix);
	assert_int_equal(index_get(&ix, CF_DATASETS, x.ds_r, sizeof(x.ds_r), &cur, &cn), 0);
	raw_put(&ix, CF_DATASETS, x.ds_r, sizeof(x.ds_r), old, n);
	index_close(&ix);
	st = open_hooked(f, &h);
	expect_integrity(store_dataset_get(st, "r", &di), &h, 0);
	assert_non_null(strstr(h.what, "above it is committed"));
	/* The listing leaves r out (and reports it again), and still lists s. */
	assert_int_equal(store_dataset_foreach(st, dataset_count, &count), 0);
	assert_int_equal(count, 1);
	assert_true(h.calls >= 2);
	/* The other dataset is unaffected. */
	assert_int_equal(store_dataset_get(st, "s", &di), 0);
	store_close(st);

	/* Raised: the record says 2, version 2's record is gone. */
	raw_index(f, &ix);
	raw_put(&ix, CF_DATASETS, x.ds_r, sizeof(x.ds_r), cur, cn);
	vkey(vk, x.r, 2);
	assert_int_equal(index_get(&ix, CF_VERSIONS, vk, sizeof(vk), &v, &vn), 0);
	index_close(&ix);
	raw_del(f, CF_VERSIONS, vk, sizeof(vk));
	st = open_hooked(f, &h);
	expect_integrity(store_dataset_get(st, "r", &di), &h, 0);
	assert_non_null(strstr(h.what, "not a committed version"));
	store_close(st);

	/* Raised again: version 2's record back, its clear state byte flipped to PENDING (which
	 * recovery would drop): it no longer authenticates. (Recovery runs first and deletes the
	 * version: the dataset then names a version that does not exist.) */
	v[0] = VERSION_PENDING;
	raw_index(f, &ix);
	raw_put(&ix, CF_VERSIONS, vk, sizeof(vk), v, vn);
	index_close(&ix);
	st = open_hooked(f, &h);
	expect_integrity(store_dataset_get(st, "r", &di), &h, 0);
	store_close(st);
	free(v);
	free(old);
	free(cur);
}

/* An entry removed (the directory lists fewer than its record says) and one added (copied from
 * another directory under a new key). */
static void test_rearranged_dirent_removed_added(void **state)
{
	struct fx *f = *state;
	struct store_inode in;
	struct hook_log h;
	uint8_t k[DKEY_LEN];
	struct rfx x;
	char *old = NULL;
	size_t n;
	int count = 0;
	struct store *st;

	rfx_make(f, &x, &old, &n);
	free(old);
	raw_del(f, CF_DIRENTS, x.k_dir[1][3], DKEY_LEN); /* sub/c of version 2 */
	st = open_hooked(f, &h);
	/* The lookup misses, checks the directory, and says so. */
	expect_integrity(store_path_lookup(st, x.r, 2, "sub/c", &in), &h, 0);
	assert_non_null(strstr(h.what, "entries removed or added"));
	/* So does a listing, when it ends: never a silently shorter listing. */
	expect_integrity(store_dir_foreach(st, x.r, 2, x.ino_sub, NULL, count_cb, &count), &h, 1);
	/* A true miss elsewhere is still a plain ENOENT. */
	assert_int_equal(store_path_lookup(st, x.r, 2, "nothing-here", &in), -ENOENT);
	store_close(st);

	/* Added: version 1's b entry put into version 2's sub (a key of the attacker's choosing). */
	memcpy(k, x.k_dir[1][3], DKEY_LEN);
	raw_copy(f, CF_DIRENTS, x.k_dir[0][1], DKEY_LEN, k, DKEY_LEN);
	st = open_hooked(f, &h);
	count = 0;
	expect_integrity(store_dir_foreach(st, x.r, 2, x.ino_sub, NULL, count_cb, &count), &h, 0);
	store_close(st);
}

/* The manifest computed at import is the one computed again from the index, differs between
 * versions, and is in the version record. */
static void test_manifest(void **state)
{
	struct fx *f = *state;
	struct store_version_info v1, v2;
	uint8_t m[STORE_MANIFEST_LEN], zero[STORE_MANIFEST_LEN] = { 0 };
	struct rfx x;
	char *old = NULL;
	size_t n;
	struct store *st;

	rfx_make(f, &x, &old, &n);
	free(old);
	st = fx_open(f);
	assert_int_equal(store_version_get(st, x.r, 1, &v1), 0);
	assert_int_equal(store_version_get(st, x.r, 2, &v2), 0);
	assert_memory_not_equal(v1.manifest, zero, sizeof(zero));
	assert_memory_not_equal(v1.manifest, v2.manifest, sizeof(m));
	assert_int_equal(store_manifest_compute(st, x.r, 1, m), 0);
	assert_memory_equal(m, v1.manifest, sizeof(m));
	assert_int_equal(store_manifest_compute(st, x.r, 2, m), 0);
	assert_memory_equal(m, v2.manifest, sizeof(m));
	store_close(st);
}

/* ---- Upgrade of a store made by the format 1 code (tests/fixtures/store-v1.tar.gz) ---------- */

/* The format 2 fixture instead (tests/fixtures/store-v2.tar.gz: the format 1 one upgraded by the
 * format 2 code), for the tests of the upgrade from format 2. */
static bool fixture_v2;

#define FIXTURE_PASS "fixture-v1 test passphrase, not a secret"

/* Unpack the fixture into f->root/store (the tarball holds store/). */
static void fixture_unpack(struct fx *f)
{
	int status = 0;
	pid_t pid;

	tu_rm_rf(f->store);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execlp("tar", "tar", "-C", f->root, "-xzf",
		       fixture_v2 ? FIXTURE_DIR "/store-v2.tar.gz" : FIXTURE_DIR "/store-v1.tar.gz",
		       (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int count_policy(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	(*(int *)ctx)++;
	return 0;
}

/* What the fixture holds (tests/fixtures/README.md), read through the upgraded, sealed index. */
static void fixture_check(struct store *st)
{
	struct store_dataset_info di, d2;
	struct store_version_info vi;
	struct store_inode in;
	uint8_t m[STORE_MANIFEST_LEN];
	uint8_t *b;
	size_t n;
	int policies = 0;

	assert_int_equal(store_dataset_get(st, "fixture-Capybara", &di), 0);
	assert_int_equal(di.latest_version, 2);
	assert_int_equal(store_dataset_get(st, "fixture-Second-Heron", &d2), 0);
	for (uint32_t v = 1; v <= 2; v++) {
		assert_int_equal(store_version_get(st, di.id, v, &vi), 0);
		assert_int_equal(vi.files, 5);
		assert_int_equal(vi.dirs, 5);
		/* From format 1 the manifest is computed by the upgrade; from format 2 the one
		 * recorded at import is kept (docs/FORMAT.md 9), and the records it was computed
		 * over were re-keyed since. */
		assert_int_equal(store_manifest_compute(st, di.id, v, m), 0);
		if (!fixture_v2)
			assert_memory_equal(m, vi.manifest, sizeof(m));
	}
	b = read_path(st, "fixture-Capybara", 2,
		      "FixtureWard-Quokka/scans-Narwhal/deep-Okapi/big-Wombat.bin", 65536, &n);
	assert_int_equal(n, 70000);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(b[i], 'Q');
	free(b);
	b = read_path(st, "fixture-Capybara", 2, "patients-Pangolin.csv", 4096, &n);
	assert_int_equal(n, strlen("fixture v2 patient table Pangolin, amended\n"));
	assert_memory_equal(b, "fixture v2 patient table Pangolin, amended\n", n);
	free(b);
	b = read_path(st, "fixture-Capybara", 1, "patients-Pangolin.csv", 4096, &n);
	assert_memory_equal(b, "fixture v1 patient table Pangolin\n", n);
	free(b);
	assert_int_equal(store_path_lookup(st, di.id, 1, "labels-Axolotl/empty-Gecko.txt", &in), 0);
	assert_int_equal(store_path_lookup(st, di.id, 2, "labels-Axolotl/empty-Gecko.txt", &in),
			 -ENOENT);
	assert_int_equal(store_path_lookup(st, di.id, 2, "labels-Axolotl/added-Manatee.json", &in),
			 0);
	/* Policy: two grants, an approval, a revocation, a deny rule, the dataset's policy, the id
	 * counter: 7 records, every one authenticated. */
	assert_int_equal(store_policy_foreach(st, count_policy, &policies), 0);
	assert_int_equal(policies, 7);
}

/* No name of the fixture is left in clear in the index after the upgrade. */
static void fixture_no_clear_names(struct fx *f)
{
	static const char *const names[] = { "Capybara", "Pangolin", "Quokka", "Narwhal", "Okapi",
					     "Wombat", "Kinkajou", "Jerboa", "Tamarin", "Caracal",
					     "Ibis", "Heron", "Gecko", "Manatee" };
	char *idx = tu_fmt("%s/index", f->store);
	DIR *d = opendir(idx);

	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d));) {
		char *p;
		uint8_t *data;
		size_t n = 0;

		if (de->d_name[0] == '.')
			continue;
		p = tu_fmt("%s/%s", idx, de->d_name);
		data = tu_read_file(p, &n);
		for (size_t i = 0; i < ARRAY_SIZE(names); i++)
			if (memmem(data, n, names[i], strlen(names[i]))) {
				fprintf(stderr, "%s holds '%s'\n", p, names[i]);
				fail();
			}
		free(data);
		free(p);
	}
	closedir(d);
	free(idx);
}

/* The fixture's auditor: a key pair made for the test, given to the upgrade as
 * `--auditor-public-key` would give it. */
static char *fixture_auditor(struct fx *f, uint8_t pk[static 32])
{
	char *akey = tu_fmt("%s/auditor.key", f->root);

	if (access(akey, F_OK) == 0) {
		uint8_t *sk = NULL;

		assert_int_equal(audit_auditor_secret_read(akey, &sk, pk), 0);
		sodium_free(sk);
	} else {
		assert_int_equal(audit_auditor_keypair_write(akey, pk), 0);
	}
	return akey;
}

/* What `enclavectl store upgrade --auditor-public-key` runs, to the end. */
static void upgrade_all(struct fx *f, crypto_secret *pass)
{
	struct ctl_upgrade_result res = { 0 };
	uint8_t pk[32];
	char *akey = fixture_auditor(f, pk);
	int r = ctl_store_upgrade_run(f->store, pass, (const uint8_t(*)[32])pk, 1, NULL, NULL,
					  &res);

	if (r < 0)
		fprintf(stderr, "upgrade: %s\n", err_detail());
	assert_int_equal(r, 0);
	assert_false(res.already);
	assert_int_equal(res.auditors, 1);
	free(akey);
}

/* The fixture's audit directory as it was made (unpacked beside, once). */
static char *fixture_pristine_audit(struct fx *f)
{
	char *dir = tu_fmt("%s/pristine", f->root), *audit = tu_fmt("%s/store/audit", dir);
	int status = 0;
	pid_t pid;

	if (access(audit, F_OK) == 0) {
		free(dir);
		return audit;
	}
	assert_int_equal(mkdir(dir, 0700), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execlp("tar", "tar", "-C", dir, "-xzf", FIXTURE_DIR "/store-v1.tar.gz",
		       (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	free(dir);
	return audit;
}

static void same_file(const char *a_dir, const char *b_dir, const char *name)
{
	char *pa = tu_fmt("%s/%s", a_dir, name), *pb = tu_fmt("%s/%s", b_dir, name);
	size_t na = 0, nb = 0;
	uint8_t *a = tu_read_file(pa, &na), *b = tu_read_file(pb, &nb);

	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	free(a);
	free(b);
	free(pa);
	free(pb);
}

/* No name of the fixture in any file under dir (recursively). */
static void no_names_under(const char *dir)
{
	static const char *const names[] = { "Capybara", "Pangolin", "Quokka", "Narwhal", "Okapi",
					     "Wombat", "Kinkajou", "Jerboa", "Tamarin", "Caracal",
					     "Ibis", "Heron", "Gecko", "Manatee" };
	DIR *d = opendir(dir);

	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d));) {
		char *p;
		struct stat sb;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		p = tu_fmt("%s/%s", dir, de->d_name);
		assert_int_equal(lstat(p, &sb), 0);
		if (S_ISDIR(sb.st_mode)) {
			no_names_under(p);
		} else {
			size_t n = 0;
			uint8_t *data = tu_read_file(p, &n);

			for (size_t i = 0; i < ARRAY_SIZE(names); i++)
				if (memmem(data, n, names[i], strlen(names[i]))) {
					fprintf(stderr, "%s holds '%s'\n", p, names[i]);
					fail();
				}
			free(data);
		}
		free(p);
	}
	closedir(d);
}

struct collect {
	json_t *recs;
};

static int collect_fn(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct collect *c = ctx;

	(void)line;
	(void)len;
	json_array_append(c->recs, (json_t *)rec);
	return 0;
}

/* The upgraded store's audit log: nothing of the fixture readable in it; it verifies with the
 * public key alone; every record opens with the auditor's key, the first after the key record
 * being log_upgrade; the old log, kept, opens with the auditor's key to its exact old bytes. */
static void fixture_log_check(struct fx *f, crypto_secret *pass)
{
	char name[STORE_SIGNING_NAME_MAX + 1], *vtext = NULL;
	char *audit = tu_fmt("%s/audit", f->store), *pristine = fixture_pristine_audit(f);
	char *legacy = tu_fmt("%s/%s", audit, AUDIT_LEGACY_NAME);
	char *out = tu_fmt("%s/legacy-out", f->root), *akey = NULL;
	struct audit_filter flt = { 0 };
	struct audit_opener *o = NULL;
	struct collect c = { .recs = json_array() };
	struct verify_options vo = { 0 };
	struct verify_result *res = NULL;
	struct note_verifier v;
	struct store *st = NULL;
	crypto_key *seed = NULL;
	uint8_t pk[32], sk[64], apk[32];
	const json_t *up;

	no_names_under(audit);
	/* The verifier key, as `audit pubkey` prints it; the check itself needs nothing else. */
	assert_int_equal(store_open(f->store, pass, NULL, &st), 0);
	assert_int_equal(store_signing_seed(st, &seed, name), 0);
	crypto_sign_seed_keypair(pk, sk, crypto_key_bytes(seed));
	sodium_memzero(sk, sizeof(sk));
	crypto_key_free(seed);
	store_close(st);
	assert_string_equal(name, "fixture.test/enclave-v1");
	assert_int_equal(note_verifier_format(name, pk, &vtext), 0);
	assert_int_equal(note_verifier_parse(vtext, strlen(vtext), &v), 0);
	vo.log_dir = audit;
	vo.key = &v;
	assert_int_equal(verify_log(&vo, &res), 0);
	assert_int_equal(res->n, 0);
	assert_true(res->records >= 2);
	verify_result_free(res);

	akey = fixture_auditor(f, apk);
	assert_int_equal(audit_opener_new(NULL, akey, &o), 0);
	flt.open = o;
	assert_int_equal(audit_foreach(audit, &flt, collect_fn, &c), 0);
	assert_true(json_array_size(c.recs) >= 2);
	up = json_array_get(c.recs, 1);
	assert_string_equal(json_string_value(json_object_get(up, "event")), "log_upgrade");
	audit_opener_free(o);
	json_decref(c.recs);

	tu_rm_rf(out);
	assert_int_equal(audit_legacy_open(legacy, NULL, akey, out), 0);
	same_file(pristine, out, AUDIT_LOG_NAME);
	same_file(pristine, out, CHECKPOINTS_FILE_NAME);
	tu_rm_rf(out);
	free(akey);
	free(vtext);
	free(out);
	free(legacy);
	free(pristine);
	free(audit);
}

/* A format 1 store is refused, naming the command; upgraded, it serves what it held, sealed, and
 * its audit log is the sealed one. A second upgrade has nothing to do. */
static void test_upgrade_fixture(void **state)
{
	struct fx *f = *state;
	crypto_secret *pass = tu_pass(FIXTURE_PASS);
	struct ctl_upgrade_result res = { 0 };
	struct store *st = NULL;
	char *p;

	fixture_unpack(f);
	assert_int_equal(store_open(f->store, pass, NULL, &st), -EPROTONOSUPPORT);
	assert_non_null(strstr(err_detail(), "enclavectl store upgrade --store"));
	upgrade_all(f, pass);
	assert_int_equal(store_open(f->store, pass, NULL, &st), 0);
	fixture_check(st);
	store_close(st);
	fixture_no_clear_names(f);
	fixture_log_check(f, pass);
	for (size_t i = 0; i < 5; i++) {
		static const char *const gone[] = { "UPGRADE", "index.old", "index.new",
						    "audit.old", "audit.new" };

		p = tu_fmt("%s/%s", f->store, gone[i]);
		assert_int_equal(access(p, F_OK), -1);
		free(p);
	}
	/* Again: already format 2, and nothing changes. */
	assert_int_equal(ctl_store_upgrade_run(f->store, pass, NULL, 0, NULL, NULL, &res), 0);
	assert_true(res.already);
	fixture_log_check(f, pass);
	crypto_secret_free(pass);
}

struct kill_at {
	enum store_upgrade_step step;
};

static void kill_cb(void *ctx, enum store_upgrade_step step, uint64_t done, uint64_t total)
{
	const struct kill_at *k = ctx;

	(void)done;
	(void)total;
	if (step == k->step)
		raise(SIGKILL);
}

/* kill -9 at every step of `store upgrade` (the index's and the audit log's): the store opens
 * afterwards either as the old one (refused with the command named, its log as it was; the
 * upgrade then runs again) or as the new one, which serves everything it held and whose log is
 * the sealed one. */
static void test_upgrade_killed_at_every_step(void **state)
{
	static const enum store_upgrade_step steps[] = {
		STORE_UPGRADE_STARTED,        STORE_UPGRADE_DATASET,
		STORE_UPGRADE_VERSION,        STORE_UPGRADE_POLICY,
		STORE_UPGRADE_BUILT,          STORE_UPGRADE_AUDIT_STARTED,
		STORE_UPGRADE_AUDIT_LEGACY,   STORE_UPGRADE_AUDIT_RECORDS,
		STORE_UPGRADE_AUDIT_BUILT,    STORE_UPGRADE_DECIDED,
		STORE_UPGRADE_OLD_MOVED,      STORE_UPGRADE_NEW_MOVED,
		STORE_UPGRADE_OLD_REMOVED,    STORE_UPGRADE_DONE,
	};
	struct fx *f = *state;
	crypto_secret *pass = tu_pass(FIXTURE_PASS);
	char *pristine = fixture_pristine_audit(f);

	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		struct kill_at k = { .step = steps[i] };
		struct store *st = NULL;
		int status = 0, r;
		pid_t pid;

		fixture_unpack(f);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct store_upgrade_progress p = { .fn = kill_cb, .ctx = &k };
			struct ctl_upgrade_result res;
			uint8_t pk[32];
			char *akey = fixture_auditor(f, pk);

			if (ctl_store_upgrade_run(f->store, pass, (const uint8_t(*)[32])pk, 1, NULL,
						  &p, &res) < 0)
				_exit(3);
			free(akey);
			_exit(4); /* the step was never reached */
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status))
			fprintf(stderr, "step %d: exit %d\n", (int)steps[i], WEXITSTATUS(status));
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);

		r = store_open(f->store, pass, NULL, &st);
		if (steps[i] < STORE_UPGRADE_DECIDED) {
			/* Not decided: the old store, refused as such, its log as it was; what
			 * was half built is gone, and the upgrade runs again. */
			char *nw = tu_fmt("%s/index.new", f->store);
			char *anw = tu_fmt("%s/audit.new", f->store);
			char *audit = tu_fmt("%s/audit", f->store);

			assert_int_equal(r, -EPROTONOSUPPORT);
			assert_non_null(strstr(err_detail(), "store upgrade"));
			assert_int_equal(access(nw, F_OK), -1);
			assert_int_equal(access(anw, F_OK), -1);
			same_file(pristine, audit, AUDIT_LOG_NAME);
			same_file(pristine, audit, CHECKPOINTS_FILE_NAME);
			free(nw);
			free(anw);
			free(audit);
			upgrade_all(f, pass);
			assert_int_equal(store_open(f->store, pass, NULL, &st), 0);
		} else {
			/* Decided: the open finishes it. */
			if (r < 0)
				fprintf(stderr, "step %d: %s\n", (int)steps[i], err_detail());
			assert_int_equal(r, 0);
		}
		fixture_check(st);
		store_close(st);
		fixture_no_clear_names(f);
		fixture_log_check(f, pass);
	}
	free(pristine);
	crypto_secret_free(pass);
}


/* A format 2 store (dataset keys in the index) is refused, naming the command; upgraded to
 * format 3 it serves what it held, its keys moved into the key ring; an erasure then holds. Kill
 * -9 at every step of that upgrade leaves the old store or the new one. */
static void test_upgrade_v2_fixture(void **state)
{
	static const enum store_upgrade_step steps[] = {
		STORE_UPGRADE_STARTED,   STORE_UPGRADE_DATASET,   STORE_UPGRADE_VERSION,
		STORE_UPGRADE_POLICY,    STORE_UPGRADE_BUILT,     STORE_UPGRADE_DECIDED,
		STORE_UPGRADE_OLD_MOVED, STORE_UPGRADE_NEW_MOVED, STORE_UPGRADE_OLD_REMOVED,
		STORE_UPGRADE_DONE,
	};
	struct fx *f = *state;
	crypto_secret *pass = tu_pass(FIXTURE_PASS);
	struct ctl_upgrade_result res = { 0 };
	struct store_erasure e = { 0 };
	struct store_dataset_info di;
	struct store_version_info vi;
	struct store *st = NULL;
	uint8_t manifest1[STORE_MANIFEST_LEN];
	char *ring = tu_fmt("%s/keys/ring", f->store);

	fixture_v2 = true;
	fixture_unpack(f);
	assert_int_equal(store_open(f->store, pass, NULL, &st), -EPROTONOSUPPORT);
	assert_non_null(strstr(err_detail(), "format 2"));
	assert_non_null(strstr(err_detail(), "enclavectl store upgrade --store"));
	assert_int_equal(ctl_store_upgrade_run(f->store, pass, NULL, 0, NULL, NULL, &res), 0);
	assert_false(res.already);
	assert_int_equal(access(ring, F_OK), 0);
	assert_int_equal(store_open(f->store, pass, NULL, &st), 0);
	fixture_check(st);
	/* The manifest recorded at import survives the upgrade. */
	assert_int_equal(store_dataset_get(st, "fixture-Capybara", &di), 0);
	assert_int_equal(store_version_get(st, di.id, 1, &vi), 0);
	memcpy(manifest1, vi.manifest, sizeof(manifest1));
	assert_int_equal(store_erase(st, "fixture-Capybara", 1, &e), 0);
	assert_memory_equal(e.versions[0].manifest, manifest1, sizeof(manifest1));
	store_erasure_free(&e);
	assert_int_equal(store_version_get(st, di.id, 1, &vi), -ENOENT);
	store_close(st);
	fixture_no_clear_names(f);
	assert_int_equal(ctl_store_upgrade_run(f->store, pass, NULL, 0, NULL, NULL, &res), 0);
	assert_true(res.already);

	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		struct kill_at k = { .step = steps[i] };
		int status = 0, r;
		pid_t pid;

		fixture_unpack(f);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct store_upgrade_progress p = { .fn = kill_cb, .ctx = &k };
			struct ctl_upgrade_result rr;

			if (ctl_store_upgrade_run(f->store, pass, NULL, 0, NULL, &p, &rr) < 0)
				_exit(3);
			_exit(4);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status))
			fprintf(stderr, "step %d: exit %d\n", (int)steps[i], WEXITSTATUS(status));
		assert_true(WIFSIGNALED(status));
		r = store_open(f->store, pass, NULL, &st);
		if (steps[i] < STORE_UPGRADE_DECIDED) {
			char *nw = tu_fmt("%s/keys/ring.new", f->store);

			assert_int_equal(r, -EPROTONOSUPPORT);
			assert_int_equal(access(nw, F_OK), -1);
			assert_int_equal(access(ring, F_OK), -1);
			free(nw);
			assert_int_equal(ctl_store_upgrade_run(f->store, pass, NULL, 0, NULL, NULL,
							       &res), 0);
			assert_int_equal(store_open(f->store, pass, NULL, &st), 0);
		} else {
			if (r < 0)
				fprintf(stderr, "step %d: %s\n", (int)steps[i], err_detail());
			assert_int_equal(r, 0);
		}
		fixture_check(st);
		store_close(st);
	}
	fixture_v2 = false;
	free(ring);
	crypto_secret_free(pass);
}

/* ---- Key ring (keys/ring, docs/FORMAT.md 3.7) ----------------------------------------------- */

static int ring_count(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
		      const crypto_key *key)
{
	(void)kind, (void)dsid, (void)version, (void)key;
	++*(size_t *)ctx;
	return 0;
}

static int ring_dirfd(struct fx *f)
{
	int fd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

/* Read the whole ring file into buf; returns its length. */
static size_t ring_read(int dfd, uint8_t *buf, size_t cap)
{
	int fd = openat(dfd, KEYRING_FILE, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	assert_true(fd >= 0);
	n = read_full(fd, buf, cap);
	close(fd);
	assert_true(n > 0);
	return (size_t)n;
}

static void ring_write(int dfd, const uint8_t *buf, size_t n)
{
	int fd = openat(dfd, KEYRING_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(pwrite_all(fd, buf, n, 0), 0);
	close(fd);
}

static void test_keyring_roundtrip_and_forgeries(void **state)
{
	struct fx *f = *state;
	uint8_t sid[16], other_sid[16], kid[KEYRING_KEY_ID_LEN], kid2[KEYRING_KEY_ID_LEN];
	uint8_t good[4096], bad[4096], d1[KEYRING_DIGEST_LEN], d2[KEYRING_DIGEST_LEN];
	crypto_key *master = NULL, *other = NULL, *kv = NULL;
	struct keyring *kr = NULL, *back = NULL;
	const crypto_key *got = NULL;
	int dfd = ring_dirfd(f);
	size_t n = 0, len;

	crypto_random(sid, sizeof(sid));
	memcpy(other_sid, sid, 16);
	other_sid[0] ^= 1;
	assert_int_equal(crypto_key_generate(&master), 0);
	assert_int_equal(crypto_key_generate(&other), 0);
	assert_int_equal(keyring_new(sid, &kr), 0);
	assert_int_equal(keyring_load(dfd, master, sid, &back), -ENOENT);
	assert_int_equal(crypto_key_generate(&kv), 0);
	keyring_key_id(kv, kid);
	assert_int_equal(keyring_put(kr, KEYRING_VERSION, 7, 2, kv), 0);
	assert_int_equal(crypto_key_generate(&kv), 0);
	assert_int_equal(keyring_put(kr, KEYRING_DATASET, 7, 0, kv), 0);
	assert_int_equal(crypto_key_generate(&kv), 0);
	assert_int_equal(keyring_put(kr, KEYRING_VERSION, 7, 1, kv), 0);
	/* Entries whose ids do not fit their kind are refused. */
	assert_int_equal(crypto_key_generate(&kv), 0);
	assert_int_equal(keyring_put(kr, KEYRING_VERSION, 7, 0, kv), -EINVAL);
	assert_int_equal(keyring_commit(kr, dfd, master), 0);
	assert_int_equal(keyring_generation(kr), 1);
	keyring_digest(kr, d1);

	/* Read back: the same keys, in order, the same generation and digest. */
	assert_int_equal(keyring_load(dfd, master, sid, &back), 0);
	assert_int_equal(keyring_generation(back), 1);
	keyring_digest(back, d2);
	assert_memory_equal(d1, d2, sizeof(d1));
	assert_int_equal(keyring_foreach(back, ring_count, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(keyring_get(back, KEYRING_VERSION, 7, 2, &got), 0);
	keyring_key_id(got, kid2);
	assert_memory_equal(kid, kid2, sizeof(kid));
	assert_int_equal(keyring_get(back, KEYRING_VERSION, 7, 3, &got), -ENOENT);
	keyring_free(back);
	back = NULL;
	len = ring_read(dfd, good, sizeof(good));
	assert_int_equal(len, 156 + 4 * 48);

	/* Another master key, another store: refused. */
	assert_int_equal(keyring_load(dfd, other, sid, &back), -EBADMSG);
	assert_int_equal(keyring_load(dfd, master, other_sid, &back), -EBADMSG);
	/* Every byte of the file is authenticated (the generation among them): a flip anywhere is
	 * refused, so an older ring cannot be passed off as a newer one. */
	for (size_t i = 0; i < len; i++) {
		memcpy(bad, good, len);
		bad[i] ^= 0x01;
		ring_write(dfd, bad, len);
		assert_int_equal(keyring_load(dfd, master, sid, &back), -EBADMSG);
	}
	/* Truncated, extended, emptied. */
	ring_write(dfd, good, len - 48);
	assert_int_equal(keyring_load(dfd, master, sid, &back), -EBADMSG);
	memcpy(bad, good, len);
	memset(bad + len, 0, 48);
	ring_write(dfd, bad, len + 48);
	assert_int_equal(keyring_load(dfd, master, sid, &back), -EBADMSG);
	ring_write(dfd, good, 0);
	assert_int_equal(keyring_load(dfd, master, sid, &back), -EBADMSG);
	/* A symbolic link in its place is not followed. */
	assert_int_equal(unlinkat(dfd, KEYRING_FILE, 0), 0);
	assert_int_equal(symlinkat("/etc/passwd", dfd, KEYRING_FILE), 0);
	assert_int_equal(keyring_load(dfd, master, sid, &back), -EBADMSG);
	assert_int_equal(unlinkat(dfd, KEYRING_FILE, 0), 0);
	ring_write(dfd, good, len);

	/* Remove a key and commit: the new file no longer holds it, under a new generation; the
	 * old file (a backup taken before) still does. That is the bound docs/FORMAT.md 3.8
	 * states. */
	assert_int_equal(keyring_remove(kr, KEYRING_VERSION, 7, 2), 1);
	assert_int_equal(keyring_remove(kr, KEYRING_VERSION, 7, 2), 0);
	assert_int_equal(keyring_commit(kr, dfd, master), 0);
	assert_int_equal(keyring_generation(kr), 2);
	keyring_digest(kr, d2);
	assert_memory_not_equal(d1, d2, sizeof(d1));
	assert_int_equal(keyring_load(dfd, master, sid, &back), 0);
	assert_int_equal(keyring_get(back, KEYRING_VERSION, 7, 2, &got), -ENOENT);
	assert_int_equal(keyring_get(back, KEYRING_VERSION, 7, 1, &got), 0);
	keyring_free(back);
	back = NULL;
	{
		uint8_t now[4096];
		size_t nl = ring_read(dfd, now, sizeof(now));

		assert_int_equal(nl, 156 + 3 * 48);
		/* The file key was fresh: its wrapping differs from the old file's. */
		assert_memory_not_equal(now + 40, good + 40, 72);
		ring_write(dfd, good, len);
		assert_int_equal(keyring_load(dfd, master, sid, &back), 0);
		assert_int_equal(keyring_generation(back), 1);
		assert_int_equal(keyring_get(back, KEYRING_VERSION, 7, 2, &got), 0);
		keyring_free(back);
	}
	assert_int_equal(faccessat(dfd, KEYRING_TMP, F_OK, 0), -1);
	keyring_free(kr);
	crypto_key_free(master);
	crypto_key_free(other);
	close(dfd);
}

/* ---- Erasure (docs/FORMAT.md 3.7, 3.8) -------------------------------------------------------- */

/* Every value of version ver of dsid in cf, from a closed store's index at path. */
struct raw_vals {
	enum store_cf cf;
	uint8_t **v, **k;
	size_t *n, *kn;
	size_t count;
	size_t opened;   /* by ring_try_unseal */
};

static void raw_version_values(const char *store, enum store_cf cf, uint64_t dsid, uint32_t ver,
			       struct raw_vals *out)
{
	struct store_index ix;
	uint8_t lo[VKEY_LEN];
	char *p = tu_fmt("%s/index", store);
	rocksdb_iterator_t *it;

	assert_int_equal(index_open(&ix, p, false), 0);
	free(p);
	vkey(lo, dsid, ver);
	it = rocksdb_create_iterator_cf(ix.db, ix.ro, ix.cf[cf]);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < VKEY_LEN || memcmp(k, lo, VKEY_LEN) != 0)
			break;
		out->cf = cf;
		out->v = realloc(out->v, (out->count + 1) * sizeof(*out->v));
		out->n = realloc(out->n, (out->count + 1) * sizeof(*out->n));
		out->k = realloc(out->k, (out->count + 1) * sizeof(*out->k));
		out->kn = realloc(out->kn, (out->count + 1) * sizeof(*out->kn));
		out->v[out->count] = malloc(vl);
		memcpy(out->v[out->count], v, vl);
		out->k[out->count] = malloc(kl);
		memcpy(out->k[out->count], k, kl);
		out->kn[out->count] = kl;
		out->n[out->count++] = vl;
	}
	rocksdb_iter_destroy(it);
	index_close(&ix);
}

static void raw_vals_free(struct raw_vals *r)
{
	for (size_t i = 0; i < r->count; i++) {
		free(r->v[i]);
		free(r->k[i]);
	}
	free(r->v);
	free(r->n);
	free(r->k);
	free(r->kn);
}

/* Whether any file under dir (recursively) holds the bytes. */
static bool tree_holds(const char *dir, const void *needle, size_t n)
{
	DIR *d = opendir(dir);
	bool found = false;

	assert_non_null(d);
	for (struct dirent *de; !found && (de = readdir(d));) {
		char *p;
		struct stat sb;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		p = tu_fmt("%s/%s", dir, de->d_name);
		if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			found = tree_holds(p, needle, n);
		} else if (S_ISREG(sb.st_mode)) {
			size_t len = 0;
			uint8_t *data = tu_read_file(p, &len);

			found = memmem(data, len, needle, n) != NULL;
			if (found)
				fprintf(stderr, "found in %s\n", p);
			free(data);
		}
		free(p);
	}
	closedir(d);
	return found;
}

static int ring_try_unseal(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
			   const crypto_key *key)
{
	struct raw_vals *rv = ctx;
	crypto_key *seal = NULL, *name = NULL;

	(void)dsid, (void)version;
	if (kind != KEYRING_VERSION)
		return 0;
	assert_int_equal(keyring_version_keys(key, &seal, &name), 0);
	for (size_t i = 0; i < rv->count; i++) {
		uint8_t out[REC_PLAIN_MAX];
		size_t pl = 0;

		/* With exactly the AD the value was sealed with (its key and place). */
		if (index_unseal(seal, rv->cf, rv->k[i], rv->kn[i], rv->cf == CF_VERSIONS ? 1 : 0,
				 rv->v[i], rv->n[i], out, sizeof(out), &pl) == 0)
			rv->opened++;
	}
	crypto_key_free(seal);
	crypto_key_free(name);
	return 0;
}

#define SECRET_NAME "withdrawn-Participant-Okapi.csv"
#define SECRET_TEXT "consent withdrawn: participant 4711 Okapi, erase me\n"

/* The copy-before-erase test of issue 16: a copy of the whole store taken before the erasure of
 * version 1 cannot be read with the keys after it (its records open under no key of the new
 * ring, and the store refuses the version), version 2 still reads byte-exact, and neither the
 * erased names and content nor the erased records' sealed bytes are anywhere in the live store
 * (RocksDB's files included: compacted and purged). The copy of the ring from before the
 * erasure still reads it: the bound docs/FORMAT.md 3.8 states. */
static void test_erase_version_holds_against_copy(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	char *copy = tu_fmt("%s/copy", f->root), *p, *ring_after;
	struct store_dataset_info di;
	struct store_version_info vi;
	struct store_inode in;
	struct store_erasure e = { 0 };
	struct raw_vals inodes = { 0 }, dirents = { 0 }, versions = { 0 };
	uint8_t *b;
	size_t n;

	p = tu_fmt("%s/%s", f->src, SECRET_NAME);
	tu_write_file(p, SECRET_TEXT, strlen(SECRET_TEXT));
	free(p);
	tu_seed_file(200000, 7, "%s/kept.bin", f->src);
	assert_int_equal(import_src(st, "cohort-Erasable", f->src, NULL), 1);
	p = tu_fmt("%s/%s", f->src, SECRET_NAME);
	assert_int_equal(unlink(p), 0);
	free(p);
	tu_seed_file(1000, 8, "%s/added.bin", f->src);
	assert_int_equal(import_src(st, "cohort-Erasable", f->src, NULL), 2);
	assert_int_equal(store_dataset_get(st, "cohort-Erasable", &di), 0);
	store_close(st);

	/* The copy, taken before the erasure: packs, index, keys. */
	tu_copy_tree(f->store, copy);
	raw_version_values(copy, CF_INODES, di.id, 1, &inodes);
	raw_version_values(copy, CF_DIRENTS, di.id, 1, &dirents);
	raw_version_values(copy, CF_VERSIONS, di.id, 1, &versions);
	assert_true(inodes.count >= 3 && dirents.count >= 2 && versions.count >= 1);

	st = fx_open(f);
	/* The last version left cannot be erased alone; an unknown one is not there. */
	assert_int_equal(store_erase(st, "cohort-Erasable", 3, &e), -ENOENT);
	assert_int_equal(store_erase(st, "nothing-Here", 1, &e), -ENOENT);
	assert_int_equal(store_erase(st, "cohort-Erasable", 1, &e), 0);
	assert_int_equal(e.dataset_id, di.id);
	assert_int_equal(e.nversions, 1);
	assert_int_equal(e.versions[0].version, 1);
	assert_int_equal(e.nkeys, 1);
	assert_true(e.ring_generation >= 4);
	store_erasure_free(&e);
	/* Version 1 is gone, version 2 reads byte-exact, latest is 2. */
	assert_int_equal(store_version_get(st, di.id, 1, &vi), -ENOENT);
	assert_true(store_path_lookup(st, di.id, 1, SECRET_NAME, &in) < 0);
	assert_int_equal(store_dataset_get(st, "cohort-Erasable", &di), 0);
	assert_int_equal(di.latest_version, 2);
	b = read_path(st, "cohort-Erasable", 2, "kept.bin", 65536, &n);
	assert_int_equal(n, 200000);
	{
		uint8_t *want = malloc(n);

		tu_fill(want, n, 7);
		assert_memory_equal(b, want, n);
		free(want);
	}
	free(b);
	/* Now only version 2 is left: it cannot be erased alone. */
	assert_int_equal(store_erase(st, "cohort-Erasable", 2, &e), -ENOTEMPTY);
	store_close(st);
	/* And again after a reopen. */
	st = fx_open(f);
	assert_int_equal(store_version_get(st, di.id, 1, &vi), -ENOENT);
	assert_int_equal(store_version_get(st, di.id, 2, &vi), 0);
	store_close(st);

	/* Nothing of version 1 in the live store: no name, no content, no sealed record. */
	assert_false(tree_holds(f->store, SECRET_NAME, strlen(SECRET_NAME)));
	assert_false(tree_holds(f->store, "Okapi", 5));
	for (size_t i = 0; i < inodes.count; i++)
		assert_false(tree_holds(f->store, inodes.v[i], inodes.n[i]));
	for (size_t i = 0; i < dirents.count; i++)
		assert_false(tree_holds(f->store, dirents.v[i], dirents.n[i]));
	for (size_t i = 0; i < versions.count; i++)
		assert_false(tree_holds(f->store, versions.v[i], versions.n[i]));

	/* The copy's records under every key of the ring after the erasure: none opens. */
	{
		struct keyring *kr = NULL;
		crypto_key *master = NULL;
		uint8_t sid[16];
		char *keys = tu_fmt("%s/keys", f->store);
		int kfd = open(keys, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct store_index ix;
		char *v = NULL;

		free(keys);
		assert_true(kfd >= 0);
		assert_int_equal(crypto_master_unlock(kfd, "master.key", f->pass, &master), 0);
		raw_index(f, &ix);
		assert_int_equal(index_get(&ix, CF_META, "store_id", 8, &v, &n), 0);
		memcpy(sid, v, 16);
		free(v);
		index_close(&ix);
		assert_int_equal(keyring_load(kfd, master, sid, &kr), 0);
		assert_int_equal(keyring_foreach(kr, ring_try_unseal, &inodes), 0);
		assert_int_equal(keyring_foreach(kr, ring_try_unseal, &dirents), 0);
		assert_int_equal(inodes.opened + dirents.opened, 0);
		keyring_free(kr);
		kr = NULL;
		close(kfd);
		/* The check itself can fail: under the copy's own ring (from before), they open. */
		keys = tu_fmt("%s/keys", copy);
		kfd = open(keys, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		free(keys);
		assert_int_equal(keyring_load(kfd, master, sid, &kr), 0);
		assert_int_equal(keyring_foreach(kr, ring_try_unseal, &inodes), 0);
		assert_int_equal(inodes.opened, inodes.count);
		keyring_free(kr);
		crypto_key_free(master);
		close(kfd);
	}
	/* The copy's packs and index with the post-erasure keys/: version 1 does not open. */
	ring_after = tu_fmt("%s/keys/ring", f->store);
	p = tu_fmt("%s/keys/ring", copy);
	tu_copy_file(ring_after, p);
	free(p);
	{
		struct store *cs = NULL;

		assert_int_equal(store_open(copy, f->pass, NULL, &cs), 0);
		assert_true(store_version_get(cs, di.id, 1, &vi) < 0);
		assert_true(store_path_lookup(cs, di.id, 1, SECRET_NAME, &in) < 0);
		store_close(cs);
	}
	raw_vals_free(&inodes);
	raw_vals_free(&dirents);
	raw_vals_free(&versions);
	free(ring_after);
	tu_rm_rf(copy);
	free(copy);
}

/* The bound, and the ring put back: the ring from before the erasure reads the erased version
 * in a copy (stated in docs/FORMAT.md 3.8); put back into the live store, it is refused, since
 * the index names a newer generation. */
static void test_erase_ring_rollback_refused(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	char *copy = tu_fmt("%s/copy", f->root), *old_ring, *live_ring;
	struct store_dataset_info di;
	struct store_erasure e = { 0 };
	uint8_t *b;
	size_t n;

	tu_seed_file(5000, 1, "%s/a", f->src);
	assert_int_equal(import_src(st, "d", f->src, NULL), 1);
	tu_seed_file(5000, 2, "%s/a", f->src);
	assert_int_equal(import_src(st, "d", f->src, NULL), 2);
	assert_int_equal(store_dataset_get(st, "d", &di), 0);
	store_close(st);
	tu_copy_tree(f->store, copy);
	st = fx_open(f);
	assert_int_equal(store_erase(st, "d", 1, &e), 0);
	store_erasure_free(&e);
	store_close(st);
	/* The whole copy, keys and all: version 1 reads (the bound). */
	{
		struct store *cs = NULL;

		assert_int_equal(store_open(copy, f->pass, NULL, &cs), 0);
		b = read_path(cs, "d", 1, "a", 4096, &n);
		assert_int_equal(n, 5000);
		free(b);
		store_close(cs);
	}
	/* The old ring in the live store: refused, with the reason. */
	old_ring = tu_fmt("%s/keys/ring", copy);
	live_ring = tu_fmt("%s/keys/ring", f->store);
	tu_copy_file(old_ring, live_ring);
	assert_int_equal(store_open(f->store, f->pass, NULL, &st), -ESTALE);
	assert_non_null(strstr(err_detail(), "older than the index"));
	free(old_ring);
	free(live_ring);
	tu_rm_rf(copy);
	free(copy);
}

/* A whole dataset: its record, versions and keys go, the name key is replaced (a copy's dataset
 * key for the name cannot be confirmed any more), the other dataset stays readable. */
static void test_erase_dataset(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_dataset_info di, other;
	struct store_erasure e = { 0 };
	uint8_t old_key[DSKEY_LEN], new_key[DSKEY_LEN];
	uint8_t *b;
	size_t n;

	tu_seed_file(3000, 1, "%s/a", f->src);
	assert_int_equal(import_src(st, "gone-Armadillo", f->src, NULL), 1);
	assert_int_equal(import_src(st, "gone-Armadillo", f->src, NULL), 2);
	assert_int_equal(import_src(st, "stays", f->src, NULL), 1);
	assert_int_equal(store_dataset_get(st, "gone-Armadillo", &di), 0);
	assert_int_equal(store_dataset_get(st, "stays", &other), 0);
	dskey_hash(st->ix_name, "gone-Armadillo", old_key);
	assert_int_equal(store_erase(st, "gone-Armadillo", 0, &e), 0);
	assert_int_equal(e.nversions, 2);
	assert_int_equal(e.nkeys, 4);   /* two versions, the dataset key, the old name key */
	store_erasure_free(&e);
	dskey_hash(st->ix_name, "gone-Armadillo", new_key);
	assert_memory_not_equal(old_key, new_key, DSKEY_LEN);
	assert_int_equal(store_dataset_get(st, "gone-Armadillo", &di), -ENOENT);
	b = read_path(st, "stays", 1, "a", 4096, &n);
	assert_int_equal(n, 3000);
	free(b);
	store_close(st);
	st = fx_open(f);
	assert_int_equal(store_dataset_get(st, "gone-Armadillo", &di), -ENOENT);
	assert_int_equal(store_dataset_get(st, "stays", &other), 0);
	/* A new dataset of the same name is a new dataset. */
	assert_int_equal(import_src(st, "gone-Armadillo", f->src, NULL), 1);
	store_close(st);
	assert_false(tree_holds(f->store, "Armadillo", 9));
}

/* An erasure killed after its index batch is finished at the next open: the marker is there,
 * the key still in the ring; the open removes the key. Planted by hand, as the crash leaves it. */
static void test_erase_finished_at_open(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_dataset_info di;
	struct store_version_info vi;
	struct store_index ix;
	uint8_t m[12];
	const crypto_key *k = NULL;

	tu_seed_file(3000, 1, "%s/a", f->src);
	assert_int_equal(import_src(st, "d", f->src, NULL), 1);
	assert_int_equal(import_src(st, "d", f->src, NULL), 2);
	assert_int_equal(store_dataset_get(st, "d", &di), 0);
	store_close(st);
	raw_index(f, &ix);
	put_be64(m, di.id);
	put_be32(m + 8, 1);
	raw_put(&ix, CF_META, META_ERASE, strlen(META_ERASE), m, sizeof(m));
	index_close(&ix);
	st = fx_open(f);
	assert_int_equal(keyring_get(st->ring, KEYRING_VERSION, di.id, 1, &k), -ENOENT);
	assert_int_equal(keyring_get(st->ring, KEYRING_VERSION, di.id, 2, &k), 0);
	assert_true(store_version_get(st, di.id, 1, &vi) < 0);
	assert_int_equal(store_version_get(st, di.id, 2, &vi), 0);
	store_close(st);
	raw_index(f, &ix);
	{
		char *v = NULL;
		size_t n = 0;

		assert_int_equal(index_get(&ix, CF_META, META_ERASE, strlen(META_ERASE), &v, &n),
				 -ENOENT);
	}
	index_close(&ix);
}

/* ---- Nodes: the secondary and the lease (issue 17) ------------------------------------------- */

/* Write text to dir/name. */
static void put_text(const char *dir, const char *name, const char *text)
{
	char *p = tu_fmt("%s/%s", dir, name);

	tu_write_file(p, text, strlen(text));
	free(p);
}

/* A node reads what the primary commits, after a catch-up, without writing anything; every write
 * is refused. */
static void test_secondary_follows_primary(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *sec = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root);
	struct store_open_options o = { .secondary_dir = secdir };
	struct store_dataset_info di;
	struct store_import *imp = NULL;
	uint8_t *b;
	size_t n = 0;
	uint64_t seq = 0, seq2 = 0;
	char *src_a = tu_fmt("%s/a.txt", f->src), *src_b = tu_fmt("%s/b.txt", f->src);

	tu_write_file(src_a, "version one\n", 12);
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	assert_int_equal(store_open(f->store, f->pass, &o, &sec), 0);
	assert_true(store_is_secondary(sec));
	assert_false(store_is_secondary(st));
	b = read_path(sec, "ds", 1, "a.txt", 5, &n);
	assert_int_equal(n, 12);
	assert_memory_equal(b, "version one\n", 12);
	free(b);
	/* A new version is not seen until the catch-up, and is after it. */
	tu_write_file(src_b, "version two\n", 12);
	assert_int_equal(import_src(st, "ds", f->src, NULL), 2);
	assert_int_equal(store_dataset_get(sec, "ds", &di), 0);
	assert_int_equal(di.latest_version, 1);
	assert_int_equal(store_catch_up(sec, &seq), 0);
	assert_int_equal(seq, store_sequence(st));
	assert_int_equal(store_dataset_get(sec, "ds", &di), 0);
	assert_int_equal(di.latest_version, 2);
	b = read_path(sec, "ds", 2, "b.txt", 7, &n);
	assert_int_equal(n, 12);
	assert_memory_equal(b, "version two\n", 12);
	free(b);
	/* Policy records too. */
	assert_int_equal(store_policy_put(st, "k", 1, "v", 1), 0);
	assert_int_equal(store_catch_up(sec, &seq2), 0);
	assert_true(seq2 > seq);
	/* A node writes nothing. */
	assert_int_equal(store_import_begin(sec, "other", NULL, &imp), -EROFS);
	assert_int_equal(store_policy_put(sec, "k", 1, "w", 1), -EROFS);
	assert_int_equal(store_signing_create(sec, "x"), -EROFS);
	assert_int_equal(store_catch_up(st, &seq), -EINVAL);
	store_close(sec);
	store_close(st);
	free(src_a);
	free(src_b);
	free(secdir);
}

static uint64_t lease_token_in_file(struct fx *f)
{
	char *p = tu_fmt("%s/LEASE", f->store);
	size_t n = 0;
	char *t = (char *)tu_read_file(p, &n);
	unsigned long long tok = 0;

	assert_non_null(t);
	assert_int_equal(sscanf(t, "enclave-lease 1\ntoken %llu\n", &tok), 1);
	free(t);
	free(p);
	return tok;
}

/* One primary at a time: a second is refused while the lease runs; a forged lease file is
 * replaced; a lease file rolled back never makes a token be used twice; a renewal after another
 * primary took over says so (fenced); a released lease is taken at once. */
static void test_lease(void **state)
{
	struct fx *f = *state;
	struct store_open_options o = { .lease_ms = STORE_LEASE_MS_MIN };
	struct store *st = fx_create(f);
	struct store_lease *l;
	char *lease = tu_fmt("%s/LEASE", f->store), *old;
	size_t oldn = 0;
	uint64_t t1, t2, t3;

	store_close(st);
	st = fx_open_opts(f, &o);
	l = store_lease(st);
	assert_non_null(l);
	t1 = store_lease_token(l);
	assert_int_equal(lease_token_in_file(f), t1);
	assert_true(store_lease_expires_ns(l) > 0);
	/* Another primary (here: another open, its flock aside) is refused by the lease. */
	assert_int_equal(store_lease_renew(l), 0);
	{
		struct store *tmp = NULL;
		int r;

		/* flock would refuse first in one process: check the lease alone by dropping the
		 * flock of the first (what a parallel file system may do). */
		close(st->lockfd);
		st->lockfd = -1;
		r = store_open(f->store, f->pass, &o, &tmp);
		assert_int_equal(r, -EBUSY);
		assert_non_null(strstr(err_detail(), "lease"));
	}
	/* A forged lease file (no MAC of ours) does not stop renewal: it is replaced. */
	tu_write_file(lease, "enclave-lease 1\ntoken 99\nholder 00\n", 35);
	assert_int_equal(store_lease_renew(l), 0);
	assert_int_equal(lease_token_in_file(f), t1);
	/* Released (expired in the file): the next primary takes it at once, with a higher
	 * token. */
	store_close(st);
	old = (char *)tu_read_file(lease, &oldn);
	st = fx_open_opts(f, &o);
	t2 = store_lease_token(store_lease(st));
	assert_true(t2 > t1);
	/* The storage rolls the lease file back to the first primary's, expired: the token still
	 * goes up (the index's fence record). */
	store_close(st);
	tu_write_file(lease, old, oldn);
	st = fx_open_opts(f, &o);
	t3 = store_lease_token(store_lease(st));
	assert_true(t3 > t2);
	/* A second primary takes over once this one's lease lapsed (this one paused): this one is
	 * fenced. (RocksDB refuses a second open of the index in one process, so the second
	 * primary's lease is taken through the same store handle, as a new holder.) */
	{
		struct store_lease *l2 = NULL;

		usleep((STORE_LEASE_MS_MIN + STORE_LEASE_MS_MIN / 2 + 200) * 1000);
		assert_int_equal(store_lease_renew(store_lease(st)), -ETIMEDOUT);
		assert_int_equal(lease_acquire(st, STORE_LEASE_MS_MIN, 0, &l2), 0);
		assert_true(store_lease_token(l2) > t3);
		assert_int_equal(store_lease_renew(store_lease(st)), -ESTALE);
		assert_int_equal(store_lease_renew(l2), 0);
		store_lease_free(l2);
	}
	store_close(st);
	free(old);
	free(lease);
}

static void count_ring_commits(void *ctx)
{
	++*(int *)ctx;
}

/* A node without the passphrase (issue 17 point 3): it opens the store with the keys the primary
 * exported (a copy of the key ring and the index seal key, never the master key) and reads what
 * they cover; a version committed after them does not decrypt until newer keys are given; older
 * keys than the ones held (a replay) and another store's are refused; an erased version's key
 * leaves the node with the next keys. The primary's ring hook runs at each ring commit. */
static void test_node_keys(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *node = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root);
	struct store_node_keys *k1 = NULL, *k2 = NULL, *k3 = NULL;
	struct store_open_options o = { .secondary_dir = secdir };
	struct store_dataset_info di;
	struct store_inode in;
	struct store_object *obj = NULL;
	struct store_erasure e;
	uint64_t seq = 0;
	int commits = 0;
	uint8_t *b;
	size_t n = 0;

	store_set_ring_hook(st, count_ring_commits, &commits);
	put_text(f->src, "a.txt", "version one\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	assert_int_equal(commits, 1);
	assert_int_equal(store_node_keys_export(st, &k1), 0);
	assert_int_equal(k1->generation, store_ring_generation(st));
	assert_true(k1->n >= 3);   /* names, the dataset, version 1 */
	o.node_keys = k1;
	/* No passphrase: the keys open it. */
	assert_int_equal(store_open(f->store, NULL, &o, &node), 0);
	assert_int_equal(store_node_keys_export(node, &k3), -EROFS);
	b = read_path(node, "ds", 1, "a.txt", 5, &n);
	assert_int_equal(n, 12);
	assert_memory_equal(b, "version one\n", 12);
	free(b);
	assert_int_equal(store_dataset_get(node, "ds", &di), 0);
	/* Version 2 after these keys: the node sees it in the index, but cannot decrypt it. */
	put_text(f->src, "b.txt", "version two\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 2);
	assert_int_equal(commits, 2);
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(store_dataset_get(node, "ds", &di), -ENOKEY);
	assert_non_null(strstr(err_detail(), "no key for version 2"));
	assert_true(store_path_lookup(node, di.id, 2, "b.txt", &in) < 0);
	assert_int_equal(store_integrity_failures(node), 0);   /* no alarm: not tampering */
	/* With the newer keys it can. */
	assert_int_equal(store_node_keys_export(st, &k2), 0);
	assert_true(k2->generation > k1->generation);
	assert_int_equal(store_node_keys_set(node, k2), 0);
	b = read_path(node, "ds", 2, "b.txt", 5, &n);
	assert_int_equal(n, 12);
	assert_memory_equal(b, "version two\n", 12);
	free(b);
	/* The older keys again (a replay): refused, the newer stay. */
	assert_int_equal(store_node_keys_set(node, k1), -ESTALE);
	assert_non_null(strstr(err_detail(), "went back"));
	b = read_path(node, "ds", 2, "b.txt", 5, &n);
	free(b);
	/* Another store's keys: refused. */
	k2->store_id[0] ^= 1;
	assert_int_equal(store_node_keys_set(node, k2), -EINVAL);
	k2->store_id[0] ^= 1;
	/* Version 1 erased on the primary: the next keys lack it, and the node drops it. */
	assert_int_equal(store_erase(st, "ds", 1, &e), 0);
	store_erasure_free(&e);
	assert_int_equal(commits, 3);
	assert_int_equal(store_node_keys_export(st, &k3), 0);
	assert_int_equal(store_node_keys_set(node, k3), 0);
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(store_dataset_get(node, "ds", &di), 0);
	if (store_path_lookup(node, di.id, 1, "a.txt", &in) == 0)
		assert_true(store_object_open(node, di.id, &in, &obj) < 0);
	b = read_path(node, "ds", 2, "a.txt", 5, &n);
	assert_int_equal(n, 12);
	free(b);
	store_close(node);
	/* Keys do not open the primary's way (no secondary). */
	o.secondary_dir = NULL;
	o.node_keys = k3;
	assert_int_equal(store_open(f->store, NULL, &o, &node), -EINVAL);
	store_node_keys_free(k1);
	store_node_keys_free(k2);
	store_node_keys_free(k3);
	store_close(st);
	free(secdir);
}

/* The number of POLICY entries in st's ring. */
static int count_policy_keys(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
			     const crypto_key *key)
{
	(void)dsid;
	(void)version;
	(void)key;
	if (kind == KEYRING_POLICY)
		++*(size_t *)ctx;
	return 0;
}

static size_t policy_keys(struct store *st)
{
	size_t n = 0;

	(void)keyring_foreach(st->ring, count_policy_keys, &n);
	return n;
}

/* Every policy record of st, "k=v;" in key order, compared with want. */
static void policy_is(struct store *st, const char *want)
{
	struct buf b;

	buf_init(&b, 1 << 20);
	assert_int_equal(store_policy_foreach(st, collect_policy, &b), 0);
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);
	buf_free(&b);
}

/* A node removal rotates the policy key (issue 17, point 3): a node holding the keys it was given
 * before cannot unseal a policy record written after, the nodes given the new keys can, and the
 * old key is gone from the ring. The primary reopens with every record. */
static void test_policy_rekey(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *node = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root);
	struct store_node_keys *before = NULL, *after = NULL;
	struct store_open_options o = { .secondary_dir = secdir };
	uint64_t seq = 0;
	int commits = 0;

	store_set_ring_hook(st, count_ring_commits, &commits);
	put_text(f->src, "a.txt", "one\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	assert_int_equal(store_policy_put(st, "g1", 2, "one", 3), 0);
	assert_int_equal(store_policy_generation(st), 0);
	assert_int_equal(store_node_keys_export(st, &before), 0);
	o.node_keys = before;
	assert_int_equal(store_open(f->store, NULL, &o, &node), 0);
	policy_is(node, "g1=one;");
	/* The removal: a new generation (a ring commit, reaching the nodes' bundles through the
	 * hook), the records resealed; the old key is Ks, not in the ring, so nothing to drop. */
	commits = 0;
	assert_int_equal(store_policy_rekey(st), 0);
	assert_int_equal(commits, 1);
	assert_int_equal(store_policy_generation(st), 1);
	assert_int_equal(policy_keys(st), 1);
	/* A record after the removal: the node that kept its old keys opens none of them. */
	assert_int_equal(store_policy_put(st, "g2", 2, "two", 3), 0);
	policy_is(st, "g1=one;g2=two;");
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(store_policy_foreach(node, collect_policy, NULL), -ENOKEY);
	assert_non_null(strstr(err_detail(), "generation 1"));
	/* Given the new keys (a node still enrolled), it does. */
	assert_int_equal(store_node_keys_export(st, &after), 0);
	assert_int_equal(store_node_keys_set(node, after), 0);
	policy_is(node, "g1=one;g2=two;");
	store_close(node);
	node = NULL;
	/* Twice more: each rotation commits the ring twice (the new key in, the old one out) and
	 * leaves one key. */
	commits = 0;
	assert_int_equal(store_policy_rekey(st), 0);
	assert_int_equal(commits, 2);
	assert_int_equal(store_policy_rekey(st), 0);
	assert_int_equal(store_policy_generation(st), 3);
	assert_int_equal(policy_keys(st), 1);
	store_close(st);
	st = fx_open(f);
	policy_is(st, "g1=one;g2=two;");
	assert_int_equal(store_policy_generation(st), 3);
	store_close(st);
	store_node_keys_free(before);
	store_node_keys_free(after);
	free(secdir);
}

/* A crash at each step of the rotation loses nothing and leaves a store that opens; the open
 * finishes the rotation (one key left, the newest, every record under it). keys/ring put back
 * from before a rotation does not open the records: refused, not silently read. */
static void test_policy_rekey_crash(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	char *ring = tu_fmt("%s/keys/ring", f->store), *old = tu_fmt("%s/ring.old", f->root);

	assert_int_equal(store_policy_put(st, "g1", 2, "one", 3), 0);
	assert_int_equal(store_policy_put(st, "n", 1, "x", 1), 0);
	for (unsigned step = 1; step <= 2; step++) {
		uint64_t gen = store_policy_generation(st);

		/* Stopped after step: the process dies there (nothing in memory survives). */
		assert_int_equal(policy_rekey_steps(st, step), 0);
		assert_int_equal(policy_keys(st), gen ? 2 : 1);
		assert_int_equal(store_policy_generation(st), step == 1 ? gen : gen + 1);
		store_close(st);
		st = fx_open(f);
		assert_int_equal(store_policy_generation(st), gen + 1);
		assert_int_equal(policy_keys(st), 1);
		policy_is(st, "g1=one;n=x;");
		assert_int_equal(store_policy_put(st, "n", 1, "y", 1), 0);
		assert_int_equal(store_policy_put(st, "n", 1, "x", 1), 0);
	}
	/* The ring as it was before a rotation, put back after it. */
	tu_copy_file(ring, old);
	assert_int_equal(store_policy_rekey(st), 0);
	store_close(st);
	tu_copy_file(old, ring);
	{
		struct store *again = NULL;

		assert_int_equal(store_open(f->store, f->pass, NULL, &again), -ENOKEY);
		assert_null(again);
		assert_non_null(strstr(err_detail(), "generation 3"));
	}
	free(ring);
	free(old);
}

/* A new directory root/name holding one file "f" of n seeded bytes; returned (free it). */
static char *seeded_src(struct fx *f, const char *name, size_t n, uint64_t seed)
{
	char *d = tu_fmt("%s/%s", f->root, name), *p = tu_fmt("%s/f", d);

	assert_int_equal(mkdir(d, 0700), 0);
	tu_write_seeded(p, n, seed);
	free(p);
	return d;
}

/* Whether ds@ver's file "f" reads back as n bytes of seed through st. */
static void reads_seeded(struct store *st, const char *ds, uint32_t ver, size_t n, uint64_t seed)
{
	uint8_t *want = malloc(n + 1), *got;
	size_t len = 0;

	tu_fill(want, n, seed);
	got = read_path(st, ds, ver, "f", 1 << 20, &len);
	assert_int_equal(len, n);
	assert_memory_equal(got, want, n);
	free(got);
	free(want);
}

/* An erasure of name (version ver, 0: all), recorded at once as the daemon does. */
static void erase_now(struct store *st, const char *name, uint32_t ver)
{
	struct store_erasure e = { 0 };

	assert_int_equal(store_erase(st, name, ver, &e), 0);
	assert_int_equal(store_erase_recorded(st, e.dataset_id, e.version), 0);
	store_erasure_free(&e);
}

/* Dataset "big<tag>" imported and erased whole, then a collection: the live objects that shared
 * its pack are moved (move records written). */
static void make_moves(struct fx *f, struct store *st, const char *tag, uint64_t seed)
{
	char *name = tu_fmt("big%s", tag), *src = seeded_src(f, name, 3u << 20, seed);
	struct store_gc_stats s = { 0 };

	assert_int_equal(import_src(st, name, src, NULL), 1);
	erase_now(st, name, 0);
	assert_int_equal(store_gc(st, NULL, &s), 0);
	assert_true(s.objects_moved > 0);
	free(src);
	free(name);
}

/* Import the source directory as a new version of "mem"; its stats. */
static struct store_import_stats mem_import(struct store *st, const char *src, uint32_t want)
{
	struct store_import *imp = NULL;
	struct store_import_stats s;
	uint32_t ver = 0;
	int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(dfd >= 0);
	assert_int_equal(store_import_begin(st, "mem", NULL, &imp), 0);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, want);
	store_import_get_stats(imp, &s);
	store_import_free(imp);
	close(dfd);
	return s;
}

/* Issue 16 point 5: the store keeps the memory an import carves its write buffers, its hashing
 * buffer and the tables of the version it shares from out of (st->import_mem) for the next
 * import, so that their pages are not faulted in again. However an import ends (committed;
 * abandoned with files added; failing at begin once its tables are carved and the scan of the
 * version shared from has run; the store closed under it), that memory is all zero afterwards:
 * nothing of one import (plaintext, inode records with wrapped keys, content hashes, names)
 * reaches the next. And the imports that carve it again, after an abandoned one, a failed begin,
 * an erasure and a collection, share and read back what they should. */
static void test_import_mem_wiped(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_import *imp = NULL;
	struct store_import_stats s;
	struct store_gc_stats gs = { 0 };
	const char *names[] = { "big.bin", "d/a", "d/b", "small" };
	char *paths[4];
	size_t used = 0, used1;
	int dfd;

	paths[0] = tu_fmt("%s/d", f->src);
	assert_int_equal(mkdir(paths[0], 0755), 0);
	free(paths[0]);
	paths[0] = tu_fmt("%s/big.bin", f->src);
	paths[1] = tu_fmt("%s/d/a", f->src);
	paths[2] = tu_fmt("%s/d/b", f->src);
	paths[3] = tu_fmt("%s/small", f->src);
	tu_write_seeded(paths[0], 3u << 20, 1);   /* through several write buffers */
	tu_write_seeded(paths[1], 5000, 2);
	tu_write_seeded(paths[2], 5000, 3);
	tu_write_seeded(paths[3], 100, 4);        /* tiny: in a group */
	s = mem_import(st, f->src, 1);
	assert_int_equal(s.files, 4);
	assert_int_equal(store_import_mem_dirty(st, &used), 0);
	assert_true(used >= 8u << 20);   /* the write buffers were carved from it */
	used1 = used;
	/* One file changed, its size kept: hashed before it is written (a size the previous
	 * version has), with the tables of version 1 carved before the buffers. */
	tu_write_seeded(paths[1], 5000, 9);
	s = mem_import(st, f->src, 2);
	assert_int_equal(s.reused_files, 3);
	assert_int_equal(store_import_mem_dirty(st, &used), 0);
	assert_true(used > used1);
	assert_read_back(st, "mem", 2, names, paths, 4);

	/* Abandoned with every file added (in its batches and buffers, its tables full). */
	tu_write_seeded(paths[2], 5000, 10);
	dfd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(store_import_begin(st, "mem", NULL, &imp), 0);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	store_import_free(imp);
	imp = NULL;
	assert_int_equal(store_import_mem_dirty(st, &used), 0);

	/* Failing at begin, after its tables were carved and filled. */
	import_test_begin_fail = -EIO;
	assert_int_equal(store_import_begin(st, "mem", NULL, &imp), -EIO);
	import_test_begin_fail = 0;
	assert_null(imp);
	assert_int_equal(store_import_mem_dirty(st, &used), 0);

	/* Version 1 erased and collected; version 3 shares what version 2 holds. */
	erase_now(st, "mem", 1);
	assert_int_equal(store_gc(st, NULL, &gs), 0);
	s = mem_import(st, f->src, 3);
	assert_int_equal(s.reused_files, 3);
	assert_int_equal(store_import_mem_dirty(st, &used), 0);
	assert_read_back(st, "mem", 3, names, paths, 4);

	/* The store closed with an import open: freed before the memory is unmapped (ASan). */
	assert_int_equal(store_import_begin(st, "mem", NULL, &imp), 0);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	close(dfd);
	store_close(st);
	for (size_t i = 0; i < 4; i++)
		free(paths[i]);
}

/* A removed node (or a thief with its last key bundle and read access to the store) decrypts
 * nothing written after its removal (issue 17 point 3): the keys it kept open no dataset record,
 * no tombstone, no move record in the index after the removal's rotation, those written later
 * included, and confirm no dataset name, a dataset created later included. Before the removal
 * the same keys open every one of them (the check can see). A node still enrolled, given the new
 * keys, reads byte for byte through the rotation and after a later import; so does the primary
 * after a reopen. */
static void test_removed_node_keys(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *node = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root);
	char *ds = seeded_src(f, "ds", 5000, 1), *keep = seeded_src(f, "keep", 7000, 2);
	char *fresh = seeded_src(f, "fresh", 3000, 3), *p = tu_fmt("%s/f", ds);
	struct store_node_keys *kept = NULL, *now = NULL;
	struct store_open_options o = { .secondary_dir = secdir };
	struct store_dataset_info di;
	struct oldkeys_reach x;
	uint64_t seq = 0;

	/* Two datasets, a tombstone (ds@1 erased), move records (keep and ds moved). */
	assert_int_equal(import_src(st, "ds", ds, NULL), 1);
	tu_write_seeded(p, 5000, 11);
	assert_int_equal(import_src(st, "ds", ds, NULL), 2);
	assert_int_equal(import_src(st, "keep", keep, NULL), 1);
	erase_now(st, "ds", 1);
	make_moves(f, st, "1", 21);
	assert_int_equal(store_record_generation(st), 0);
	assert_int_equal(store_node_keys_export(st, &kept), 0);
	oldkeys_reach(st, kept, &x);
	assert_int_equal(x.datasets, 2);
	assert_int_equal(x.datasets_open, 2);
	assert_int_equal(x.tombstones, 1);
	assert_int_equal(x.tombstones_open, 1);
	assert_true(x.moves > 0);
	assert_int_equal(x.moves_open, x.moves);
	assert_true(oldkeys_confirm_name(st, kept, "ds"));
	/* A node still enrolled, reading through the removal. */
	o.node_keys = kept;
	assert_int_equal(store_open(f->store, NULL, &o, &node), 0);
	reads_seeded(node, "keep", 1, 7000, 2);

	/* The removal. */
	assert_int_equal(store_policy_rekey(st), 0);
	assert_int_equal(store_record_generation(st), 1);
	/* Written after it: a new version of ds (its record rewritten), a new dataset, a version
	 * erased (a tombstone), more moves. */
	tu_write_seeded(p, 5000, 12);
	assert_int_equal(import_src(st, "ds", ds, NULL), 3);
	assert_int_equal(import_src(st, "fresh", fresh, NULL), 1);
	/* (Names first: the whole-dataset erasure below replaces Kr, which would hide them.) */
	assert_false(oldkeys_confirm_name(st, kept, "fresh"));
	assert_false(oldkeys_confirm_name(st, kept, "ds"));
	erase_now(st, "ds", 2);
	make_moves(f, st, "2", 22);

	oldkeys_reach(st, kept, &x);
	assert_int_equal(x.datasets, 3);
	assert_int_equal(x.datasets_open, 0);
	assert_int_equal(x.tombstones, 2);
	assert_int_equal(x.tombstones_open, 0);
	assert_true(x.moves > 0);
	assert_int_equal(x.moves_open, 0);
	/* Its own store says why it reads no dataset any more: it lacks the generation's key. */
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(store_dataset_get(node, "ds", &di), -ENOKEY);
	assert_non_null(strstr(err_detail(), "generation 1"));
	assert_int_equal(store_dataset_get(node, "fresh", &di), -ENOKEY);
	/* The keys the primary gives now open every one (the check is not blind). */
	assert_int_equal(store_node_keys_export(st, &now), 0);
	oldkeys_reach(st, now, &x);
	assert_int_equal(x.datasets_open, 3);
	assert_int_equal(x.tombstones_open, 2);
	assert_int_equal(x.moves_open, x.moves);
	assert_true(oldkeys_confirm_name(st, now, "fresh"));
	/* An enrolled node given them reads byte for byte: moved objects, the new version, the new
	 * dataset; ds@2 is erased. */
	assert_int_equal(store_node_keys_set(node, now), 0);
	reads_seeded(node, "keep", 1, 7000, 2);
	reads_seeded(node, "ds", 3, 5000, 12);
	reads_seeded(node, "fresh", 1, 3000, 3);
	assert_int_equal(store_dataset_get(node, "ds", &di), 0);
	assert_int_equal(di.latest_version, 3);
	store_close(node);
	node = NULL;
	/* The primary after a reopen. */
	store_close(st);
	st = fx_open(f);
	assert_int_equal(store_record_generation(st), 1);
	reads_seeded(st, "keep", 1, 7000, 2);
	reads_seeded(st, "ds", 3, 5000, 12);
	reads_seeded(st, "fresh", 1, 3000, 3);
	{
		struct store_version_info vi;

		assert_int_equal(store_dataset_get(st, "ds", &di), 0);
		assert_int_equal(store_version_get(st, di.id, 2, &vi), -ENOENT);
		assert_non_null(strstr(err_detail(), "erased"));
	}
	store_close(st);
	store_node_keys_free(kept);
	store_node_keys_free(now);
	free(p);
	free(ds);
	free(keep);
	free(fresh);
	free(secdir);
}

/* The store of the rotation tests: ds@2 (ds@1 erased: a tombstone), keep@1, both moved by a
 * collection (move records). */
static struct store *rekey_store(struct fx *f)
{
	struct store *st = fx_create(f);
	char *ds = seeded_src(f, "ds", 5000, 1), *keep = seeded_src(f, "keep", 7000, 2);
	char *p = tu_fmt("%s/f", ds);

	assert_int_equal(import_src(st, "ds", ds, NULL), 1);
	tu_write_seeded(p, 5000, 11);
	assert_int_equal(import_src(st, "ds", ds, NULL), 2);
	assert_int_equal(import_src(st, "keep", keep, NULL), 1);
	erase_now(st, "ds", 1);
	make_moves(f, st, "1", 21);
	assert_int_equal(store_policy_put(st, "g1", 2, "one", 3), 0);
	free(p);
	free(ds);
	free(keep);
	return st;
}

/* rekey_store()'s datasets read back, byte for byte, and ds@1 is erased. */
static void rekey_store_reads(struct store *st)
{
	struct store_dataset_info di;
	struct store_version_info vi;

	reads_seeded(st, "keep", 1, 7000, 2);
	reads_seeded(st, "ds", 2, 5000, 11);
	assert_int_equal(store_dataset_get(st, "ds", &di), 0);
	assert_int_equal(di.latest_version, 2);
	assert_int_equal(store_version_get(st, di.id, 1, &vi), -ENOENT);
	assert_non_null(strstr(err_detail(), "erased"));
	policy_is(st, "g1=one;");
}

/* The keys k open nothing of st's dataset records, tombstones and move records. */
static void opens_nothing(struct store *st, const struct store_node_keys *k)
{
	struct oldkeys_reach x;

	oldkeys_reach(st, k, &x);
	assert_true(x.datasets > 0 && x.tombstones > 0 && x.moves > 0);
	assert_int_equal(x.datasets_open, 0);
	assert_int_equal(x.tombstones_open, 0);
	assert_int_equal(x.moves_open, 0);
}

/* A crash at each step of a removal's rotation, with dataset records, a tombstone and move
 * records to re-key: the open finishes it, every dataset reads byte for byte, the tombstone still
 * says erased, the records are keyed at the policy records' generation, one rotating key is
 * left, and the keys from before the rotation open none of them. */
static void test_rekey_crash_records(void **state)
{
	struct fx *f = *state;
	struct store *st = rekey_store(f);
	struct store_node_keys *kept = NULL;

	for (unsigned step = 1; step <= 2; step++) {
		uint64_t gen = store_policy_generation(st);

		assert_int_equal(store_node_keys_export(st, &kept), 0);
		/* Stopped after step: the process dies there. */
		assert_int_equal(policy_rekey_steps(st, step), 0);
		assert_int_equal(store_record_generation(st), step == 1 ? gen : gen + 1);
		if (step == 1)
			rekey_store_reads(st);
		store_close(st);
		st = fx_open(f);
		assert_int_equal(store_policy_generation(st), gen + 1);
		assert_int_equal(store_record_generation(st), gen + 1);
		assert_int_equal(policy_keys(st), 1);
		rekey_store_reads(st);
		opens_nothing(st, kept);
		store_node_keys_free(kept);
		kept = NULL;
	}
	store_close(st);
}

/* A store as a node removal before the record keys rotated left it (index meta policy_key 1 and
 * the key ring's POLICY entry 1; dataset names, records, tombstones and move records keyed from
 * Kr, Kd and Ks alone, no meta record_key): it opens and reads as it is, and the next removal
 * moves all of it to generation 2, closed to the keys from before. */
static void test_rekey_from_policy_only(void **state)
{
	struct fx *f = *state;
	struct store *st = rekey_store(f);
	struct store_node_keys *kept = NULL;
	struct store_policy_kv kv = { "g1", 2, "one", 3 };
	struct oldkeys_reach x;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	crypto_key *kp = NULL;
	uint8_t g[8];

	/* What that rotation did: the key, the meta record, the policy records under the key. */
	assert_int_equal(crypto_key_generate(&kp), 0);
	pthread_mutex_lock(&st->lock);
	assert_int_equal(keyring_put(st->ring, KEYRING_POLICY, 0, 1, kp), 0);
	assert_int_equal(keyring_commit(st->ring, st->keys_dirfd, st->master), 0);
	pthread_mutex_unlock(&st->lock);
	put_le64(g, 1);
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_POLICY_GEN, strlen(META_POLICY_GEN),
				  (const char *)g, sizeof(g));
	assert_int_equal(index_write(&st->ix, wb, true), 0);
	rocksdb_writebatch_destroy(wb);
	assert_int_equal(store_policy_replace_all(st, &kv, 1), 0);
	store_close(st);

	st = fx_open(f);
	assert_int_equal(store_policy_generation(st), 1);
	assert_int_equal(store_record_generation(st), 0);
	rekey_store_reads(st);
	assert_int_equal(store_node_keys_export(st, &kept), 0);
	oldkeys_reach(st, kept, &x);
	assert_int_equal(x.datasets_open, x.datasets);
	assert_int_equal(x.tombstones_open, x.tombstones);
	assert_int_equal(x.moves_open, x.moves);
	/* The next removal. */
	assert_int_equal(store_policy_rekey(st), 0);
	assert_int_equal(store_policy_generation(st), 2);
	assert_int_equal(store_record_generation(st), 2);
	assert_int_equal(policy_keys(st), 1);
	rekey_store_reads(st);
	opens_nothing(st, kept);
	store_close(st);
	st = fx_open(f);
	rekey_store_reads(st);
	opens_nothing(st, kept);
	store_close(st);
	store_node_keys_free(kept);
}

struct rekey_race {
	struct fx *f;
	struct store *st;
	_Atomic bool stop;
	int errors;          /* failed calls seen by the thread */
	unsigned rounds;     /* its calls that succeeded */
};

/* Imports new versions of ds (its file rewritten each time) until told to stop. */
static void *race_import(void *arg)
{
	struct rekey_race *x = arg;
	char *src = tu_fmt("%s/ds", x->f->root), *p = tu_fmt("%s/f", src);

	while (!x->stop) {
		struct store_import *imp = NULL;
		uint32_t ver = 0;
		int dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

		tu_write_seeded(p, 5000, 100 + x->rounds);
		r = store_import_begin(x->st, "ds", NULL, &imp);
		if (r == 0)
			r = store_import_add_tree(imp, dfd);
		if (r == 0)
			r = store_import_commit(imp, &ver);
		store_import_free(imp);
		close(dfd);
		if (r < 0)
			x->errors++;
		else
			x->rounds++;
	}
	free(p);
	free(src);
	return NULL;
}

/* Looks keep up by name and reads its moved file, and lists the datasets, until told to stop. */
static void *race_read(void *arg)
{
	struct rekey_race *x = arg;
	uint8_t want[7000];

	tu_fill(want, sizeof(want), 2);
	while (!x->stop) {
		struct store_dataset_info di;
		struct store_inode ino;
		struct store_object *obj = NULL;
		struct store_reader *rd = NULL;
		uint8_t got[7000];
		int n = 0, r = store_dataset_get(x->st, "keep", &di);

		if (r == 0)
			r = store_path_lookup(x->st, di.id, 1, "f", &ino);
		if (r == 0)
			r = store_object_open(x->st, di.id, &ino, &obj);
		if (r == 0)
			r = store_reader_new(x->st, &rd);
		if (r == 0 && store_object_read(rd, obj, 0, sizeof(got), got) != (ssize_t)sizeof(got))
			r = -EIO;
		if (r == 0 && memcmp(got, want, sizeof(got)) != 0)
			r = -EBADMSG;
		store_reader_free(rd);
		store_object_close(obj);
		/* The listing checks ds too, while the importer commits it. */
		if (r == 0)
			r = store_dataset_foreach(x->st, dataset_count, &n);
		if (r < 0)
			x->errors++;
		else
			x->rounds++;
	}
	return NULL;
}

/* Node removals while imports commit and readers look datasets up and read moved objects: every
 * call succeeds and no integrity failure is reported (nobody pairs a key of one generation with
 * a record of another: the rekey lock), and the store reads back after a reopen. */
static void test_rekey_concurrent(void **state)
{
	struct fx *f = *state;
	struct store *st = rekey_store(f);
	struct rekey_race imp = { .f = f, .st = st }, rd = { .f = f, .st = st };
	struct hook_log h = { 0 };
	pthread_t ti, tr;

	store_set_integrity_hook(st, hook_cb, &h);
	assert_int_equal(pthread_create(&ti, NULL, race_import, &imp), 0);
	assert_int_equal(pthread_create(&tr, NULL, race_read, &rd), 0);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(store_policy_rekey(st), 0);
		poll(NULL, 0, 30);
	}
	imp.stop = rd.stop = true;
	pthread_join(ti, NULL);
	pthread_join(tr, NULL);
	if (h.calls)
		fprintf(stderr, "integrity: %d, the last: %s\n", h.calls, h.what);
	assert_int_equal(h.calls, 0);
	assert_int_equal(imp.errors, 0);
	assert_int_equal(rd.errors, 0);
	assert_true(imp.rounds > 0 && rd.rounds > 0);
	assert_int_equal(store_record_generation(st), 6);
	store_close(st);
	st = fx_open(f);
	reads_seeded(st, "keep", 1, 7000, 2);
	store_close(st);
}

/* An erasure stays listed as unrecorded, with what it erased, from the index batch until its
 * caller says it recorded it (the daemon's `dataset_erase` record): across a restart, killed at
 * phase 1 (the keys then destroyed at the open). The next erasure replaces it. */
static void test_erase_unrecorded(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f);
	struct store_erasure e = { 0 }, u = { 0 };
	struct store_dataset_info di;
	struct store_version_info v3;
	struct store_index ix;
	const crypto_key *k = NULL;
	uint8_t kid[16], m[16 + 4 + 4 + STORE_MANIFEST_LEN + 4 + 16] = { 0 };

	tu_seed_file(3000, 1, "%s/a", f->src);
	for (uint32_t v = 1; v <= 4; v++)
		assert_int_equal(import_src(st, "d", f->src, NULL), v);
	assert_int_equal(store_dataset_get(st, "d", &di), 0);
	assert_int_equal(store_erase_unrecorded(st, &u), -ENOENT);
	assert_int_equal(keyring_get(st->ring, KEYRING_VERSION, di.id, 1, &k), 0);
	keyring_key_id(k, kid);
	assert_int_equal(store_erase(st, "d", 1, &e), 0);
	assert_int_equal(e.nkeys, 1);
	assert_memory_equal(e.key_ids[0], kid, 16);
	assert_int_equal(store_erase_unrecorded(st, &u), 0);
	assert_int_equal(u.dataset_id, di.id);
	assert_int_equal(u.version, 1);
	assert_int_equal(u.nversions, 1);
	assert_int_equal(u.versions[0].version, 1);
	assert_memory_equal(u.versions[0].manifest, e.versions[0].manifest, STORE_MANIFEST_LEN);
	assert_int_equal(u.nkeys, 1);
	assert_memory_equal(u.key_ids[0], kid, 16);
	assert_int_equal(u.ring_generation, e.ring_generation);
	store_erasure_free(&u);
	store_close(st);
	st = fx_open(f);
	assert_int_equal(store_erase_unrecorded(st, &u), 0);
	assert_int_equal(u.version, 1);
	store_erasure_free(&u);
	assert_int_equal(store_erase_recorded(st, di.id, 2), -ENOENT);
	assert_int_equal(store_erase_recorded(st, di.id, 1), 0);
	assert_int_equal(store_erase_unrecorded(st, &u), -ENOENT);
	store_erasure_free(&e);
	assert_int_equal(store_erase(st, "d", 2, &e), 0);
	store_erasure_free(&e);
	assert_int_equal(store_erase(st, "d", 4, &e), 0);
	assert_int_equal(store_erase_recorded(st, di.id, 2), -ENOENT);
	assert_int_equal(store_erase_recorded(st, di.id, 4), 0);
	store_erasure_free(&e);

	/* Killed at phase 1 (the index batch written, the key not yet destroyed), planted as the
	 * crash leaves the marker: the open destroys the key and lists the erasure unrecorded. */
	assert_int_equal(store_version_get(st, di.id, 3, &v3), 0);
	assert_int_equal(keyring_get(st->ring, KEYRING_VERSION, di.id, 3, &k), 0);
	keyring_key_id(k, kid);
	store_close(st);
	put_be64(m, di.id);
	put_be32(m + 8, 3);
	m[12] = 1;
	put_be32(m + 16, 1);
	put_be32(m + 20, 3);
	memcpy(m + 24, v3.manifest, STORE_MANIFEST_LEN);
	put_be32(m + 24 + STORE_MANIFEST_LEN, 1);
	memcpy(m + 28 + STORE_MANIFEST_LEN, kid, 16);
	raw_index(f, &ix);
	raw_put(&ix, CF_META, META_ERASE, strlen(META_ERASE), m, sizeof(m));
	index_close(&ix);
	st = fx_open(f);
	assert_int_equal(keyring_get(st->ring, KEYRING_VERSION, di.id, 3, &k), -ENOENT);
	assert_int_equal(store_erase_unrecorded(st, &u), 0);
	assert_int_equal(u.version, 3);
	assert_memory_equal(u.versions[0].manifest, v3.manifest, STORE_MANIFEST_LEN);
	assert_memory_equal(u.key_ids[0], kid, 16);
	store_erasure_free(&u);
	assert_int_equal(store_erase_recorded(st, di.id, 3), 0);
	store_close(st);
	/* A marker cut short is refused at the open, not guessed at. */
	raw_index(f, &ix);
	raw_put(&ix, CF_META, META_ERASE, strlen(META_ERASE), m, sizeof(m) - 1);
	index_close(&ix);
	assert_int_equal(store_open(f->store, f->pass, NULL, &st), -EBADMSG);
}

/* ---- The dataset check meets a commit or an erasure of the same dataset ----------------------
 *
 * A dataset record is read (from a listing's snapshot, the cache or the index) before its
 * versions are: a commit landing in between made an honest record look rolled back, and an
 * integrity failure was reported (THREAT_MODEL 12, before). store_test_set_race_hook() makes the
 * commit land exactly there. */

struct race {
	struct fx *f;
	struct store *st;
	enum store_race_point where;   /* where the hook acts, once */
	enum { RACE_COMMIT, RACE_COMMIT_TWICE, RACE_ERASE, RACE_ERASE_THREAD } what;
	const char *erase;             /* RACE_ERASE: the dataset erased whole (NULL: ds) */
	uint32_t erase_version;        /* RACE_ERASE: only this version of ds (0: the whole) */
	size_t live_after;             /* RACE_ERASE: crypto_key_slab_live() after the erasure */
	struct store_import *imp;      /* begun by race_begin(), committed by the hook */
	uint32_t committed;            /* the version the hook committed last (0: none) */
	bool armed, busy;
	/* RACE_ERASE_THREAD: the erasure runs in eraser(), which the hook starts and waits for
	 * (at most a second: with the fix it waits for the listing to end). */
	pthread_mutex_t m;
	pthread_cond_t c;
	bool go, done;
	int erase_r;
};

static void race_erase(struct race *x)
{
	struct store_erasure e;

	x->erase_r = store_erase(x->st, x->erase ? x->erase : "ds", x->erase_version, &e);
	if (x->erase_r == 0)
		x->erase_r = store_erase_recorded(x->st, e.dataset_id, x->erase_version);
	if (x->erase_r == 0)
		store_erasure_free(&e);
	x->live_after = crypto_key_slab_live();
}

static void *eraser(void *arg)
{
	struct race *x = arg;

	pthread_mutex_lock(&x->m);
	while (!x->go)
		pthread_cond_wait(&x->c, &x->m);
	pthread_mutex_unlock(&x->m);
	race_erase(x);
	pthread_mutex_lock(&x->m);
	x->done = true;
	pthread_cond_broadcast(&x->c);
	pthread_mutex_unlock(&x->m);
	return NULL;
}

static void race_begin(struct race *x)
{
	int dfd = open(x->f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(dfd >= 0);
	assert_int_equal(store_import_begin(x->st, "ds", NULL, &x->imp), 0);
	assert_int_equal(store_import_add_tree(x->imp, dfd), 0);
	close(dfd);
}

static void race_arm(struct race *x, enum store_race_point where, int what)
{
	x->where = where;
	x->what = what;
	x->armed = true;
	x->committed = 0;
}

static void race_commit(struct race *x)
{
	assert_int_equal(store_import_commit(x->imp, &x->committed), 0);
	store_import_free(x->imp);
	x->imp = NULL;
}

static void race_hook(void *ctx, enum store_race_point where, uint64_t dsid)
{
	struct race *x = ctx;
	struct timespec until;

	(void)dsid;
	/* Not in the checks the hook's own calls make. */
	if (x->busy || !x->armed || where != x->where)
		return;
	x->busy = true;
	x->armed = false;
	switch (x->what) {
	case RACE_COMMIT:
		race_commit(x);
		break;
	case RACE_COMMIT_TWICE:
		/* This one now, the next just after the check, before its result is cached. */
		race_commit(x);
		race_begin(x);
		race_arm(x, STORE_RACE_REC_CHECKED, RACE_COMMIT);
		break;
	case RACE_ERASE:
		race_erase(x);
		assert_int_equal(x->erase_r, 0);
		break;
	case RACE_ERASE_THREAD:
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		pthread_mutex_lock(&x->m);
		x->go = true;
		pthread_cond_broadcast(&x->c);
		while (!x->done && pthread_cond_timedwait(&x->c, &x->m, &until) == 0)
			;
		pthread_mutex_unlock(&x->m);
		break;
	}
	x->busy = false;
}

static int latest_of_ds(void *ctx, const struct store_dataset_info *info)
{
	if (strcmp(info->name, "ds") == 0)
		*(uint32_t *)ctx = info->latest_version;
	return 0;
}

/* A lookup, a listing and a version lookup each meet a commit of their dataset in the middle:
 * each answers with the new version, and no integrity failure is reported. Fails without the
 * record read again (dataset_verify), without the key looked up again (version_get_any), and
 * without the cached latest kept from going down. */
static void test_latest_check_meets_commit(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store_version_info vi;
	struct hook_log h = { 0 };
	struct race x = { .f = f };
	struct store *st = fx_create(f);
	uint32_t latest = 0;

	x.st = st;
	put_text(f->src, "a.txt", "one\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	store_set_integrity_hook(st, hook_cb, &h);
	store_test_set_race_hook(st, race_hook, &x);

	/* A lookup: its record (version 1) from the cache; version 2 commits before the check. */
	race_begin(&x);
	race_arm(&x, STORE_RACE_REC_READ, RACE_COMMIT);
	assert_int_equal(store_dataset_get(st, "ds", &di), 0);
	assert_int_equal(x.committed, 2);
	assert_int_equal(di.latest_version, 2);

	/* A listing: its record (version 2) from the scan's snapshot; version 3 commits. */
	race_begin(&x);
	race_arm(&x, STORE_RACE_REC_READ, RACE_COMMIT);
	assert_int_equal(store_dataset_foreach(st, latest_of_ds, &latest), 0);
	assert_int_equal(x.committed, 3);
	assert_int_equal(latest, 3);

	/* Version 4 looked up while it commits: no key when looked up, committed when read. */
	race_begin(&x);
	race_arm(&x, STORE_RACE_VERSION_KEYS, RACE_COMMIT);
	assert_int_equal(store_version_get(st, di.id, 4, &vi), 0);
	assert_int_equal(x.committed, 4);
	assert_int_equal(vi.version, 4);

	/* Two commits in one lookup: 5 before the check (which then reads the record again), 6
	 * after it, before its result is cached. The lookup answers 5, as of when it looked; the
	 * cache keeps 6, from which the next import is numbered (7, never 6 again). */
	race_begin(&x);
	race_arm(&x, STORE_RACE_REC_READ, RACE_COMMIT_TWICE);
	assert_int_equal(store_dataset_get(st, "ds", &di), 0);
	assert_int_equal(x.committed, 6);
	assert_int_equal(di.latest_version, 5);
	assert_int_equal(store_dataset_get(st, "ds", &di), 0);
	assert_int_equal(di.latest_version, 6);
	assert_int_equal(import_src(st, "ds", f->src, NULL), 7);

	assert_int_equal(h.calls, 0);
	assert_int_equal(store_integrity_failures(st), 0);
	store_test_set_race_hook(st, NULL, NULL);
	store_close(st);
	/* And the store the races left is whole. */
	st = fx_open(f);
	store_set_integrity_hook(st, hook_cb, &h);
	assert_int_equal(store_dataset_get(st, "ds", &di), 0);
	assert_int_equal(di.latest_version, 7);
	for (uint32_t v = 1; v <= 7; v++)
		assert_int_equal(store_version_get(st, di.id, v, &vi), 0);
	assert_int_equal(h.calls, 0);
	store_close(st);
}

/* A lookup that checks a dataset while it is erased whole (its record read, its versions gone
 * when they are read): -ENOENT, and no integrity failure is reported. (A listing holds
 * names_lock for its scan, which a whole erasure waits for: test_listing_meets_name_key_switch.) */
static void test_latest_check_meets_erasure(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct hook_log h = { 0 };
	struct race x = { .f = f };
	struct store *st = fx_create(f);

	put_text(f->src, "a.txt", "one\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	assert_int_equal(import_src(st, "ds", f->src, NULL), 2);
	store_close(st);
	/* Opened again: nothing checked yet, the lookup checks ds's versions. */
	st = fx_open(f);
	x.st = st;
	store_set_integrity_hook(st, hook_cb, &h);
	store_test_set_race_hook(st, race_hook, &x);
	race_arm(&x, STORE_RACE_VERSION_KEYS, RACE_ERASE);
	assert_int_equal(store_dataset_get(st, "ds", &di), -ENOENT);
	assert_false(x.armed);   /* the erasure happened in the middle of the check */
	assert_int_equal(h.calls, 0);
	assert_int_equal(store_integrity_failures(st), 0);
	store_test_set_race_hook(st, NULL, NULL);
	store_close(st);
}

/* A real rollback is still caught: the dataset record of version 1 put back under the running
 * store, while version 2 is committed and cached. The listing reads the old record from its
 * snapshot, finds version 2 above it, reads the record again from the index (the same old one)
 * and reports it, once; so does a lookup after a new open (the record from the index). */
static void test_latest_check_rollback_live(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct hook_log h = { 0 };
	struct store *st = fx_create(f);
	uint8_t dk[DSKEY_LEN];
	char *old = NULL;
	size_t n = 0;
	int count = 0;

	put_text(f->src, "a.txt", "one\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	assert_int_equal(import_src(st, "other", f->src, NULL), 1);
	dskey_hash(st->ix_name, "ds", dk);
	assert_int_equal(index_get(&st->ix, CF_DATASETS, dk, sizeof(dk), &old, &n), 0);
	assert_int_equal(import_src(st, "ds", f->src, NULL), 2);
	store_set_integrity_hook(st, hook_cb, &h);
	raw_put(&st->ix, CF_DATASETS, dk, sizeof(dk), old, n);
	assert_int_equal(store_dataset_foreach(st, dataset_count, &count), 0);
	assert_int_equal(count, 1);   /* other only */
	assert_int_equal(h.calls, 1);
	assert_int_equal(store_integrity_failures(st), 1);
	assert_non_null(strstr(h.what, "names version 1 as its latest, but version 2 above it is "
				       "committed"));
	store_close(st);
	st = fx_open(f);
	store_set_integrity_hook(st, hook_cb, &h);
	expect_integrity(store_dataset_get(st, "ds", &di), &h, 1);
	assert_int_equal(h.calls, 2);
	assert_int_equal(store_integrity_failures(st), 1);
	assert_non_null(strstr(h.what, "above it is committed"));
	store_close(st);
	free(old);
}

static int key_order(const void *a, const void *b)
{
	return memcmp(a, b, DSKEY_LEN);
}

/* A listing during the whole erasure of another dataset, which moves every other dataset's record
 * to a new name key: the erasure starts (another thread) while the first dataset in key order is
 * checked, and erases the last one. Before names_lock, it ran to its end at once: the records
 * still to come in the scan's snapshot were under the old name key ("stored under another name's
 * key") and the erased one's key was gone ("has a record but no key"), each an integrity failure.
 * Now it waits for the scan: the listing shows the four datasets as they were, the next one the
 * three left, and nothing is reported. */
static void test_listing_meets_name_key_switch(void **state)
{
	struct fx *f = *state;
	struct hook_log h = { 0 };
	struct race x = { .f = f };
	struct store *st = fx_create(f);
	const char *names[4] = { "a", "b", "c", "d" };
	uint8_t keys[4][DSKEY_LEN + 1];   /* the name's key, then its index in names */
	int count = 0;
	pthread_t t;

	put_text(f->src, "a.txt", "one\n");
	for (int i = 0; i < 4; i++) {
		assert_int_equal(import_src(st, names[i], f->src, NULL), 1);
		dskey_hash(st->ix_name, names[i], keys[i]);
		keys[i][DSKEY_LEN] = (uint8_t)i;
	}
	qsort(keys, 4, sizeof(keys[0]), key_order);
	x.st = st;
	x.erase = names[keys[3][DSKEY_LEN]];
	pthread_mutex_init(&x.m, NULL);
	pthread_cond_init(&x.c, NULL);
	assert_int_equal(pthread_create(&t, NULL, eraser, &x), 0);
	store_set_integrity_hook(st, hook_cb, &h);
	store_test_set_race_hook(st, race_hook, &x);
	race_arm(&x, STORE_RACE_REC_READ, RACE_ERASE_THREAD);
	assert_int_equal(store_dataset_foreach(st, dataset_count, &count), 0);
	assert_false(x.armed);
	pthread_join(t, NULL);
	assert_int_equal(x.erase_r, 0);
	if (h.calls)
		fprintf(stderr, "integrity: %d, the last: %s\n", h.calls, h.what);
	assert_int_equal(h.calls, 0);
	assert_int_equal(count, 4);
	count = 0;
	assert_int_equal(store_dataset_foreach(st, dataset_count, &count), 0);
	assert_int_equal(count, 3);
	assert_int_equal(h.calls, 0);
	store_test_set_race_hook(st, NULL, NULL);
	store_close(st);
	pthread_cond_destroy(&x.c);
	pthread_mutex_destroy(&x.m);
}

/* A lookup and an object open meet the erasure of their version while they hold its keys
 * (store_test_set_race_hook() makes the erasure land there). Before, the erasure wiped the keys
 * under them (THREAT_MODEL 12, before): the lookup failed to authenticate the entry it had just
 * read and reported an integrity failure, the open failed to unwrap its object key. Now the keys
 * live until the last holder lets go: the lookup answers -ENOENT (its entry read before the
 * erasure, its inode gone after), the open opens the file it looked up, nothing is reported,
 * and the erased keys are wiped and freed as the holders let go. */
static void test_lookup_meets_version_erasure(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct store_inode in;
	struct store_object *obj = NULL;
	struct store_reader *rd = NULL;
	struct ds_keys k = { 0 };
	struct hook_log h = { 0 };
	struct race x = { .f = f };
	struct store *st = fx_create(f);
	char b[16] = { 0 };

	x.st = st;
	put_text(f->src, "a.txt", "one\n");
	for (uint32_t v = 1; v <= 3; v++)
		assert_int_equal(import_src(st, "ds", f->src, NULL), v);
	assert_int_equal(store_dataset_get(st, "ds", &di), 0);
	store_set_integrity_hook(st, hook_cb, &h);
	store_test_set_race_hook(st, race_hook, &x);

	/* A lookup in version 1: its entry read, then version 1 erased, then the entry unsealed. */
	x.erase_version = 1;
	race_arm(&x, STORE_RACE_KEYS_HELD, RACE_ERASE);
	assert_int_equal(store_dir_lookup(st, di.id, 1, STORE_ROOT_INO, "a.txt", &in), -ENOENT);
	assert_false(x.armed);   /* the erasure happened in the middle of the lookup */
	assert_int_equal(x.erase_r, 0);
	/* The lookup was the last holder of version 1's three keys: wiped and freed with it. */
	assert_int_equal(crypto_key_slab_live(), x.live_after - 3);
	assert_int_equal(store_version_keys(st, di.id, 1, &k), -ENOENT);

	/* An open in version 2: a.txt looked up, then version 2 erased under the open. */
	assert_int_equal(store_dir_lookup(st, di.id, 2, STORE_ROOT_INO, "a.txt", &in), 0);
	x.erase_version = 2;
	race_arm(&x, STORE_RACE_KEYS_HELD, RACE_ERASE);
	assert_int_equal(store_object_open(st, di.id, &in, &obj), 0);
	assert_false(x.armed);
	assert_int_equal(x.erase_r, 0);
	assert_int_equal(store_reader_new(st, &rd), 0);
	assert_int_equal(store_object_read(rd, obj, 0, sizeof(b), b), 4);
	assert_string_equal(b, "one\n");
	store_reader_free(rd);
	store_object_close(obj);
	assert_int_equal(store_dir_lookup(st, di.id, 2, STORE_ROOT_INO, "a.txt", &in), -ENOENT);

	if (h.calls)
		fprintf(stderr, "integrity: %d, the last: %s\n", h.calls, h.what);
	assert_int_equal(h.calls, 0);
	assert_int_equal(store_integrity_failures(st), 0);
	/* Version 3 is untouched. Every erased key went with its last holder. */
	assert_int_equal(store_dir_lookup(st, di.id, 3, STORE_ROOT_INO, "a.txt", &in), 0);
	assert_int_equal(store_test_keys_orphaned(st), 0);
	store_test_set_race_hook(st, NULL, NULL);
	store_close(st);
}

struct listing_eraser {
	struct store *st;
	int entries, erase_r;
};

/* store_dir_foreach() callback: the version is erased after the first entry is listed. */
static int erase_midway(void *ctx, const char *name, uint64_t ino, uint32_t type)
{
	struct listing_eraser *le = ctx;
	struct store_erasure e;

	(void)name;
	(void)ino;
	(void)type;
	if (le->entries++ == 0) {
		le->erase_r = store_erase(le->st, "ds", 1, &e);
		if (le->erase_r == 0)
			le->erase_r = store_erase_recorded(le->st, e.dataset_id, 1);
		if (le->erase_r == 0)
			store_erasure_free(&e);
	}
	return 0;
}

/* A listing of a directory of version 1 meets the version's erasure after its first entry: the
 * rest of its entries come from the scan's snapshot, taken before the erasure, and are unsealed
 * with the keys the listing holds; the directory's own record is gone when it is checked, so the
 * listing ends with -ENOENT. Nothing is reported (before, the second entry failed to
 * authenticate under the wiped key). */
static void test_listing_meets_version_erasure(void **state)
{
	struct fx *f = *state;
	struct store_dataset_info di;
	struct hook_log h = { 0 };
	struct store *st = fx_create(f);
	struct listing_eraser le = { .st = st };

	put_text(f->src, "a.txt", "one\n");
	put_text(f->src, "b.txt", "two\n");
	put_text(f->src, "c.txt", "three\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	assert_int_equal(import_src(st, "ds", f->src, NULL), 2);
	assert_int_equal(store_dataset_get(st, "ds", &di), 0);
	store_set_integrity_hook(st, hook_cb, &h);
	assert_int_equal(store_dir_foreach(st, di.id, 1, STORE_ROOT_INO, NULL, erase_midway, &le),
			 -ENOENT);
	assert_int_equal(le.erase_r, 0);
	assert_int_equal(le.entries, 3);
	if (h.calls)
		fprintf(stderr, "integrity: %d, the last: %s\n", h.calls, h.what);
	assert_int_equal(h.calls, 0);
	assert_int_equal(store_integrity_failures(st), 0);
	assert_int_equal(store_test_keys_orphaned(st), 0);
	store_close(st);
}

/* A node that caught up to the primary's running import sees its version as PENDING: not yet
 * committed, so neither a key it lacks nor tampering. The dataset reads at its latest version,
 * and lists; after the commit it says -ENOKEY until given the new keys, as before. */
static void test_node_sees_pending_version(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *node = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root);
	struct store_node_keys *k1 = NULL, *k2 = NULL;
	struct store_open_options o = { .secondary_dir = secdir };
	struct store_dataset_info di;
	struct race x = { .f = f, .st = st };
	uint32_t latest = 0;
	uint64_t seq = 0;

	struct store_erasure e;

	put_text(f->src, "a.txt", "one\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	/* And a dataset whose latest version was erased: its tombstone needs no version key. */
	assert_int_equal(import_src(st, "e", f->src, NULL), 1);
	assert_int_equal(import_src(st, "e", f->src, NULL), 2);
	assert_int_equal(store_erase(st, "e", 2, &e), 0);
	assert_int_equal(store_erase_recorded(st, e.dataset_id, 2), 0);
	store_erasure_free(&e);
	assert_int_equal(store_node_keys_export(st, &k1), 0);
	o.node_keys = k1;
	assert_int_equal(store_open(f->store, NULL, &o, &node), 0);
	assert_int_equal(store_dataset_get(node, "e", &di), 0);
	assert_int_equal(di.latest_version, 1);
	race_begin(&x);
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(store_dataset_get(node, "ds", &di), 0);
	assert_int_equal(di.latest_version, 1);
	assert_int_equal(store_dataset_foreach(node, latest_of_ds, &latest), 0);
	assert_int_equal(latest, 1);
	race_commit(&x);
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(store_dataset_get(node, "ds", &di), -ENOKEY);
	assert_int_equal(store_node_keys_export(st, &k2), 0);
	assert_int_equal(store_node_keys_set(node, k2), 0);
	assert_int_equal(store_dataset_get(node, "ds", &di), 0);
	assert_int_equal(di.latest_version, 2);
	assert_int_equal(store_integrity_failures(node), 0);
	store_close(node);
	store_close(st);
	store_node_keys_free(k1);
	store_node_keys_free(k2);
	free(secdir);
}

struct node_race {
	struct store *primary, *node;
	bool armed;
	int r;
};

/* On the node's lookup, its keys held: the primary erases version 1 of ds, and the node catches
 * up and takes its new keys (which drops version 1's there, as the erasure does on the primary). */
static void node_race_hook(void *ctx, enum store_race_point where, uint64_t dsid)
{
	struct node_race *x = ctx;
	struct store_node_keys *k = NULL;
	struct store_erasure e;
	uint64_t seq = 0;

	(void)dsid;
	if (!x->armed || where != STORE_RACE_KEYS_HELD)
		return;
	x->armed = false;
	x->r = store_erase(x->primary, "ds", 1, &e);
	if (x->r == 0) {
		x->r = store_erase_recorded(x->primary, e.dataset_id, 1);
		store_erasure_free(&e);
	}
	if (x->r == 0)
		x->r = store_catch_up(x->node, &seq);
	if (x->r == 0)
		x->r = store_node_keys_export(x->primary, &k);
	if (x->r == 0)
		x->r = store_node_keys_set(x->node, k);
	store_node_keys_free(k);
}

/* test_lookup_meets_version_erasure on a node: a lookup there holds version 1's keys when the
 * primary erases the version and the node follows (its catch-up, then its new keys). Nothing is
 * reported, and the keys go with the lookup. (Before, the node's new keys wiped version 1's under
 * the lookup: a false integrity failure.) */
static void test_node_lookup_meets_version_erasure(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *node = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root);
	struct store_node_keys *k1 = NULL;
	struct store_open_options o = { .secondary_dir = secdir };
	struct store_dataset_info di;
	struct store_inode in;
	struct node_race x = { .primary = st };
	struct hook_log h = { 0 };
	int r;

	put_text(f->src, "a.txt", "one\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	assert_int_equal(import_src(st, "ds", f->src, NULL), 2);
	assert_int_equal(store_node_keys_export(st, &k1), 0);
	o.node_keys = k1;
	assert_int_equal(store_open(f->store, NULL, &o, &node), 0);
	x.node = node;
	assert_int_equal(store_dataset_get(node, "ds", &di), 0);
	store_set_integrity_hook(node, hook_cb, &h);
	store_test_set_race_hook(node, node_race_hook, &x);
	x.armed = true;
	/* The entry and the inode read under the held keys (0), or the inode found gone (-ENOENT):
	 * either is the truth at some moment of the lookup. */
	r = store_dir_lookup(node, di.id, 1, STORE_ROOT_INO, "a.txt", &in);
	assert_true(r == 0 || r == -ENOENT);
	assert_false(x.armed);   /* the erasure reached the node in the middle of the lookup */
	assert_int_equal(x.r, 0);
	if (h.calls)
		fprintf(stderr, "integrity: %d, the last: %s\n", h.calls, h.what);
	assert_int_equal(h.calls, 0);
	assert_int_equal(store_integrity_failures(node), 0);
	assert_int_equal(store_test_keys_orphaned(node), 0);
	/* Version 1 is gone on the node now, as on the primary (no key, and its tombstone says
	 * why: -ENOENT, not -ENOKEY); version 2 reads on. */
	assert_int_equal(store_dir_lookup(node, di.id, 1, STORE_ROOT_INO, "a.txt", &in), -ENOENT);
	assert_int_equal(store_dir_lookup(node, di.id, 2, STORE_ROOT_INO, "a.txt", &in), 0);
	store_test_set_race_hook(node, NULL, NULL);
	store_close(node);
	store_close(st);
	store_node_keys_free(k1);
	free(secdir);
}

/* ---- Erasure as a node sees it (a RocksDB secondary of the primary's index) ---------------- */

/* The records of dsid (version ver; 0: every version) in cf, as the open store st reads its
 * index now (a node's view included): how many, and the value of the last one. */
static size_t view_count(struct store *st, enum store_cf cf, uint64_t dsid, uint32_t ver,
			 char **ret_last, size_t *ret_last_len)
{
	uint8_t lo[VKEY_LEN];
	size_t plen = ver ? VKEY_LEN : 8, n = 0;
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro, st->ix.cf[cf]);

	vkey(lo, dsid, ver);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < plen || memcmp(k, lo, plen) != 0)
			break;
		n++;
		if (ret_last) {
			free(*ret_last);
			*ret_last = malloc(vl);
			memcpy(*ret_last, v, vl);
			*ret_last_len = vl;
		}
	}
	rocksdb_iter_destroy(it);
	return n;
}

/* Every record of cf as st reads it now, as one count and a hash of keys and values. */
static size_t view_all(struct store *st, enum store_cf cf, uint8_t ret_hash[static 32])
{
	crypto_generichash_state h;
	size_t n = 0;
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->ix.db, st->ix.ro, st->ix.cf[cf]);

	crypto_generichash_init(&h, NULL, 0, 32);
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		uint8_t len[16];

		put_be64(len, kl);
		put_be64(len + 8, vl);
		crypto_generichash_update(&h, len, sizeof(len));
		crypto_generichash_update(&h, (const uint8_t *)k, kl);
		crypto_generichash_update(&h, (const uint8_t *)v, vl);
		n++;
	}
	rocksdb_iter_destroy(it);
	crypto_generichash_final(&h, ret_hash, 32);
	return n;
}

static int ring_of_dataset(void *ctx, enum keyring_kind kind, uint64_t dsid, uint32_t version,
			   const crypto_key *key)
{
	uint64_t *want = ctx;

	(void)key;
	if (dsid != want[0])
		return 0;
	if (!want[1] || (kind == KEYRING_VERSION && version == want[1]))
		want[2]++;
	return 0;
}

/* The keys of dsid the store's ring holds (ver not 0: of that version). */
static uint64_t ring_keys_of(struct store *st, uint64_t dsid, uint32_t ver)
{
	uint64_t want[3] = { dsid, ver, 0 };

	pthread_mutex_lock(&st->lock);
	assert_int_equal(keyring_foreach(st->ring, ring_of_dataset, want), 0);
	pthread_mutex_unlock(&st->lock);
	return want[2];
}

/* Every answer about version ver of dsid, and about path, is the same on the node as on the
 * primary (and nothing exists: -ENOENT), and the node's index holds none of its inode records
 * and directory entries, and the same version record as the primary's (the tombstone). */
static void node_answers_erased(struct store *st, struct store *node, uint64_t dsid,
				uint32_t ver, const char *path)
{
	struct store_version_info vi;
	struct store_inode in;
	char *pv = NULL, *nv = NULL;
	size_t pn = 0, nn = 0;
	int rp, rn;

	rp = store_version_get(st, dsid, ver, &vi);
	rn = store_version_get(node, dsid, ver, &vi);
	assert_int_equal(rp, -ENOENT);
	assert_int_equal(rn, rp);
	rp = store_inode_get(st, dsid, ver, STORE_ROOT_INO, &in);
	rn = store_inode_get(node, dsid, ver, STORE_ROOT_INO, &in);
	assert_int_equal(rp, -ENOENT);
	assert_int_equal(rn, rp);
	rp = store_dir_lookup(st, dsid, ver, STORE_ROOT_INO, path, &in);
	rn = store_dir_lookup(node, dsid, ver, STORE_ROOT_INO, path, &in);
	assert_int_equal(rp, -ENOENT);
	assert_int_equal(rn, rp);
	rp = store_path_lookup(st, dsid, ver, path, &in);
	rn = store_path_lookup(node, dsid, ver, path, &in);
	assert_int_equal(rp, -ENOENT);
	assert_int_equal(rn, rp);
	rp = store_dir_foreach(st, dsid, ver, STORE_ROOT_INO, NULL, dirent_noop, NULL);
	rn = store_dir_foreach(node, dsid, ver, STORE_ROOT_INO, NULL, dirent_noop, NULL);
	assert_int_equal(rp, -ENOENT);
	assert_int_equal(rn, rp);
	assert_int_equal(view_count(node, CF_INODES, dsid, ver, NULL, NULL), 0);
	assert_int_equal(view_count(node, CF_DIRENTS, dsid, ver, NULL, NULL), 0);
	assert_int_equal(view_count(st, CF_VERSIONS, dsid, ver, &pv, &pn),
			 view_count(node, CF_VERSIONS, dsid, ver, &nv, &nn));
	assert_int_equal(nn, pn);
	if (pn)
		assert_memory_equal(nv, pv, pn);
	free(pv);
	free(nv);
	assert_int_equal(ring_keys_of(node, dsid, ver), 0);
}

/* Issue 16 point 1 on a node: after it catches up following a version's erasure (and takes its
 * new keys, as its daemon does), every lookup, listing and stat of the version answers as on the
 * primary (-ENOENT), and its index view holds none of the version's inode records and entries,
 * at that catch-up and the ones after it, while the other version reads on. Before, its
 * secondary's memtable kept the records replayed from a write-ahead log the primary had flushed
 * and deleted (the erasure's range deletion in it never reached the node, and the purge
 * compacted it away): lookups answered -ENOKEY, and the records stayed in its view. */
static void test_node_erased_version_gone(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *node = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root);
	struct store_node_keys *k1 = NULL, *k2 = NULL;
	struct store_open_options o = { .secondary_dir = secdir };
	struct store_dataset_info di;
	struct store_inode in;
	struct store_erasure e;
	struct hook_log h = { 0 };
	uint64_t seq = 0;
	uint8_t *b;
	size_t n = 0;

	put_text(f->src, SECRET_NAME, SECRET_TEXT);
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	put_text(f->src, "a.txt", "two\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 2);
	assert_int_equal(store_node_keys_export(st, &k1), 0);
	o.node_keys = k1;
	assert_int_equal(store_open(f->store, NULL, &o, &node), 0);
	store_set_integrity_hook(node, hook_cb, &h);
	assert_int_equal(store_dataset_get(node, "ds", &di), 0);
	/* The node reads version 1 (its records came from the primary's write-ahead log). */
	assert_int_equal(store_dir_lookup(node, di.id, 1, STORE_ROOT_INO, SECRET_NAME, &in), 0);
	assert_true(view_count(node, CF_INODES, di.id, 1, NULL, NULL) >= 2);
	assert_true(view_count(node, CF_DIRENTS, di.id, 1, NULL, NULL) >= 1);
	/* A catch-up whose write-ahead log is still there reads on: no new open of the index. */
	assert_int_equal(store_policy_put(st, "k", 1, "v", 1), 0);
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(seq, store_sequence(st));
	assert_int_equal(node->ix.reopens, 0);

	assert_int_equal(store_erase(st, "ds", 1, &e), 0);
	assert_int_equal(store_erase_recorded(st, e.dataset_id, 1), 0);
	store_erasure_free(&e);
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(seq, store_sequence(st));
	assert_int_equal(store_node_keys_export(st, &k2), 0);
	assert_int_equal(store_node_keys_set(node, k2), 0);
	/* The erasure's flush deleted the log the node had read from: opened again, once. */
	assert_int_equal(node->ix.reopens, 1);
	for (int i = 0; i < 4; i++) {
		node_answers_erased(st, node, di.id, 1, SECRET_NAME);
		assert_int_equal(store_catch_up(node, &seq), 0);
	}
	assert_int_equal(node->ix.reopens, 1);
	/* Version 2 reads on, on both. */
	b = read_path(node, "ds", 2, "a.txt", 7, &n);
	assert_int_equal(n, 4);
	assert_memory_equal(b, "two\n", 4);
	free(b);
	assert_int_equal(store_dir_lookup(node, di.id, 2, STORE_ROOT_INO, SECRET_NAME, &in), 0);
	if (h.calls)
		fprintf(stderr, "integrity: %d, the last: %s\n", h.calls, h.what);
	assert_int_equal(h.calls, 0);
	assert_int_equal(store_integrity_failures(node), 0);
	store_close(node);
	store_close(st);
	store_node_keys_free(k1);
	store_node_keys_free(k2);
	free(secdir);
}

/* The same for a whole dataset: after the catch-up that follows its erasure, the node finds no
 * dataset of that name and lists only the other, and its index view holds no record of the
 * dataset's (its dataset record under the old name key included) and the same dataset records
 * as the primary's; its ring holds none of its keys. A node opened with the passphrase (a ring of
 * its own, read again at each catch-up) shows the same. Before, the node's secondary kept the
 * records it had replayed from a write-ahead log that the erasure's flush deleted, so the
 * erasure's deletions never reached it, and its compaction left nothing in the files to hide
 * them: the records stayed in the node's view. */
static void test_node_erased_dataset_gone(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *node = NULL, *pnode = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root), *psecdir = tu_fmt("%s/psecondary", f->root);
	struct store_node_keys *k1 = NULL, *k2 = NULL;
	struct store_open_options o = { .secondary_dir = secdir }, po = { .secondary_dir = psecdir };
	struct store_dataset_info di, keep;
	struct store_erasure e;
	uint8_t hp[32], hn[32];
	uint64_t seq = 0;
	uint8_t *b;
	size_t n = 0;
	int count;

	put_text(f->src, SECRET_NAME, SECRET_TEXT);
	assert_int_equal(import_src(st, "cohort-Erasable", f->src, NULL), 1);
	assert_int_equal(import_src(st, "cohort-Erasable", f->src, NULL), 2);
	assert_int_equal(import_src(st, "keep", f->src, NULL), 1);
	assert_int_equal(store_dataset_get(st, "cohort-Erasable", &di), 0);
	assert_int_equal(store_dataset_get(st, "keep", &keep), 0);
	assert_int_equal(store_node_keys_export(st, &k1), 0);
	o.node_keys = k1;
	assert_int_equal(store_open(f->store, NULL, &o, &node), 0);
	assert_int_equal(store_open(f->store, f->pass, &po, &pnode), 0);
	assert_int_equal(store_dataset_get(node, "cohort-Erasable", &di), 0);
	assert_true(view_count(node, CF_VERSIONS, di.id, 0, NULL, NULL) >= 2);

	assert_int_equal(store_erase(st, "cohort-Erasable", 0, &e), 0);
	assert_int_equal(store_erase_recorded(st, e.dataset_id, 0), 0);
	store_erasure_free(&e);
	assert_int_equal(store_catch_up(node, &seq), 0);
	assert_int_equal(store_node_keys_export(st, &k2), 0);
	assert_int_equal(store_node_keys_set(node, k2), 0);
	assert_int_equal(store_catch_up(pnode, &seq), 0);
	for (int i = 0; i < 3; i++) {
		struct store *nodes[] = { node, pnode };

		for (size_t j = 0; j < ARRAY_SIZE(nodes); j++) {
			struct store *nd = nodes[j];
			struct store_dataset_info x;

			assert_int_equal(store_dataset_get(st, "cohort-Erasable", &x), -ENOENT);
			assert_int_equal(store_dataset_get(nd, "cohort-Erasable", &x), -ENOENT);
			count = 0;
			assert_int_equal(store_dataset_foreach(nd, dataset_count, &count), 0);
			assert_int_equal(count, 1);
			for (enum store_cf cf = CF_VERSIONS; cf <= CF_DIRENTS; cf++)
				assert_int_equal(view_count(nd, cf, di.id, 0, NULL, NULL), 0);
			assert_int_equal(view_all(nd, CF_DATASETS, hn), view_all(st, CF_DATASETS, hp));
			assert_memory_equal(hn, hp, sizeof(hp));
			assert_int_equal(ring_keys_of(nd, di.id, 0), 0);
			b = read_path(nd, "keep", 1, SECRET_NAME, 7, &n);
			assert_int_equal(n, strlen(SECRET_TEXT));
			free(b);
			assert_int_equal(store_integrity_failures(nd), 0);
			assert_int_equal(store_catch_up(nd, &seq), 0);
		}
	}
	store_close(pnode);
	store_close(node);
	store_close(st);
	store_node_keys_free(k1);
	store_node_keys_free(k2);
	free(secdir);
	free(psecdir);
}

struct erase_race {
	struct store *nodes[2];
	bool armed;
	int r;
	int listed[2];   /* datasets each node listed inside the race */
};

/* Between the erasure's batch and its new keys: both nodes catch up and list the datasets. */
static void erase_race_hook(void *ctx, enum store_race_point where, uint64_t dsid)
{
	struct erase_race *x = ctx;
	uint64_t seq = 0;

	(void)dsid;
	if (!x->armed || where != STORE_RACE_ERASE_BATCH)
		return;
	x->armed = false;
	for (int i = 0; i < 2 && x->r == 0; i++) {
		x->r = store_catch_up(x->nodes[i], &seq);
		if (x->r == 0)
			x->r = store_dataset_foreach(x->nodes[i], dataset_count, &x->listed[i]);
	}
}

/* A whole-dataset erasure re-keys every other dataset's record under the next name key in its
 * first batch, and the nodes receive that key only after it: a node that catches up in between
 * (inside the erasure, through the race hook), or after it but before its new key bundle, reads
 * records under a name key it does not hold yet. That is no tampering: the node reports nothing,
 * its listing leaves those datasets out (a lookup by name misses them too) until its keys
 * follow, and then lists them. Before, each such listing raised a false integrity failure
 * ("stored under another name's key"), seen on the nodes' mounts in
 * test_erased_version_gone_on_nodes. */
static void test_node_meets_dataset_erasure(void **state)
{
	struct fx *f = *state;
	struct store *st = fx_create(f), *node = NULL, *pnode = NULL;
	char *secdir = tu_fmt("%s/secondary", f->root), *psecdir = tu_fmt("%s/psecondary", f->root);
	struct store_node_keys *k1 = NULL, *k2 = NULL;
	struct store_open_options o = { .secondary_dir = secdir }, po = { .secondary_dir = psecdir };
	struct erase_race x = { 0 };
	struct hook_log h = { 0 }, ph = { 0 };
	struct store_dataset_info di;
	struct store_erasure e;
	uint64_t seq = 0;
	int count;

	put_text(f->src, "a.txt", "one\n");
	assert_int_equal(import_src(st, "ds", f->src, NULL), 1);
	assert_int_equal(import_src(st, "gone", f->src, NULL), 1);
	assert_int_equal(store_node_keys_export(st, &k1), 0);
	o.node_keys = k1;
	assert_int_equal(store_open(f->store, NULL, &o, &node), 0);
	assert_int_equal(store_open(f->store, f->pass, &po, &pnode), 0);
	store_set_integrity_hook(node, hook_cb, &h);
	store_set_integrity_hook(pnode, hook_cb, &ph);
	x.nodes[0] = node;
	x.nodes[1] = pnode;
	x.armed = true;
	store_test_set_race_hook(st, erase_race_hook, &x);
	assert_int_equal(store_erase(st, "gone", 0, &e), 0);
	store_test_set_race_hook(st, NULL, NULL);
	assert_false(x.armed);
	assert_int_equal(x.r, 0);
	assert_int_equal(store_erase_recorded(st, e.dataset_id, 0), 0);
	store_erasure_free(&e);
	/* Inside the erasure: ds is under the next name key, which neither node holds yet. */
	assert_int_equal(x.listed[0], 0);
	assert_int_equal(x.listed[1], 0);
	/* After it, the node without its new bundle: the same. */
	assert_int_equal(store_catch_up(node, &seq), 0);
	count = 0;
	assert_int_equal(store_dataset_foreach(node, dataset_count, &count), 0);
	assert_int_equal(count, 0);
	assert_int_equal(store_dataset_get(node, "ds", &di), -ENOENT);
	/* Its keys follow: ds again, gone not. The node with the passphrase reads the new ring at
	 * its catch-up. */
	assert_int_equal(store_node_keys_export(st, &k2), 0);
	assert_int_equal(store_node_keys_set(node, k2), 0);
	assert_int_equal(store_catch_up(pnode, &seq), 0);
	for (int i = 0; i < 2; i++) {
		struct store *nd = i ? pnode : node;

		count = 0;
		assert_int_equal(store_dataset_foreach(nd, dataset_count, &count), 0);
		assert_int_equal(count, 1);
		assert_int_equal(store_dataset_get(nd, "ds", &di), 0);
		assert_int_equal(store_dataset_get(nd, "gone", &di), -ENOENT);
	}
	if (h.calls || ph.calls)
		fprintf(stderr, "integrity: %d, %d, the last: %s / %s\n", h.calls, ph.calls,
			h.what, ph.what);
	assert_int_equal(h.calls, 0);
	assert_int_equal(ph.calls, 0);
	store_close(pnode);
	store_close(node);
	store_close(st);
	store_node_keys_free(k1);
	store_node_keys_free(k2);
	free(secdir);
	free(psecdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
		T(test_roundtrip_aes),
		T(test_roundtrip_chacha),
		T(test_roundtrip_direct_io),
		T(test_chunk_sizes),
		T(test_import_parallel_identical),
		T(test_import_parallel_memory_bounded),
		T(test_dense_layout),
		T(test_dense_tamper),
		T(test_group_many_tiny),
		T(test_group_tamper),
		T(test_import_stamp),
		T(test_import_stamp_divert),
		T(test_import_claimed),
		T(test_import_claimed_uncached),
		T(test_import_claimed_bad),
		T(test_import_claimed_parallel),
		T(test_import_claimed_parallel_fail),
		T(test_import_claimed_lets_keys_go),
		T(test_tamper_flip_ciphertext),
		T(test_tamper_flip_tag),
		T(test_tamper_swap_chunks),
		T(test_tamper_mid_wave_reader_reusable),
		T(test_tamper_chunk_from_other_object),
		T(test_tamper_truncate_at_chunk_boundary),
		T(test_tamper_index_size),
		T(test_index_memory_bounded),
		T(test_forged_dataset_swap),
		T(test_forged_names),
		T(test_forged_and_missing_packs),
		T(test_tamper_empty_object),
		T(test_wrong_passphrase),
		T(test_create_refuses_nonempty_and_open_refuses_nonstore),
		T(test_import_tree_reopen),
		T(test_import_rejects_special_files),
		T(test_import_source_changes),
		T(test_import_add_files),
		T(test_import_bad_input),
		T(test_pack_rotation),
		T(test_concurrent_readers),
		T(test_crash_during_import),
		T(test_stale_index_destroys_nothing),
		T(test_abort_restores_pack),
		T(test_abort_leaves_no_records_in_next_import),
		T(test_sequence_visible_ignores_pending_batches),
		T(test_begin_waits_for_committed_import),
		T(test_import_mem_wiped),
		T(test_progress_and_listing),
		T(test_policy_records),
		T(test_signing_key),
		T(test_rearranged_inode_swap),
		T(test_rearranged_copied_from_version_and_dataset),
		T(test_rearranged_rename),
		T(test_rearranged_size_edit),
		T(test_rearranged_latest),
		T(test_rearranged_dirent_removed_added),
		T(test_manifest),
		T(test_upgrade_fixture),
		T(test_upgrade_killed_at_every_step),
		T(test_keyring_roundtrip_and_forgeries),
		T(test_upgrade_v2_fixture),
		T(test_erase_version_holds_against_copy),
		T(test_erase_ring_rollback_refused),
		T(test_erase_dataset),
		T(test_erase_finished_at_open),
		T(test_erase_unrecorded),
		T(test_secondary_follows_primary),
		T(test_lease),
		T(test_node_keys),
		T(test_policy_rekey),
		T(test_policy_rekey_crash),
		T(test_removed_node_keys),
		T(test_rekey_crash_records),
		T(test_rekey_from_policy_only),
		T(test_rekey_concurrent),
		T(test_latest_check_meets_commit),
		T(test_latest_check_meets_erasure),
		T(test_latest_check_rollback_live),
		T(test_listing_meets_name_key_switch),
		T(test_lookup_meets_version_erasure),
		T(test_listing_meets_version_erasure),
		T(test_node_lookup_meets_version_erasure),
		T(test_node_sees_pending_version),
		T(test_node_erased_version_gone),
		T(test_node_erased_dataset_gone),
		T(test_node_meets_dataset_erasure),
#undef T
	};

	if (crypto_init() < 0)
		return 1;
	/* ENCLAVE_TEST_FILTER=test_name* runs only the matching tests (to chase one). */
	if (getenv("ENCLAVE_TEST_FILTER"))
		cmocka_set_test_filter(getenv("ENCLAVE_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
