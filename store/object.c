/* object: reading encrypted objects from packs (docs/FORMAT.md "Objects").
 *
 * An object of `size` plaintext bytes in chunks of `cs` bytes occupies, from its aligned start:
 *   ciphertext (size bytes; chunk i at i*cs) | tags (16 bytes per chunk) | zeros to STORE_ALIGN
 * Because the start and cs are multiples of STORE_ALIGN, every chunk read below is aligned and
 * can use O_DIRECT; the tags of a run of chunks are one more aligned read.
 *
 * A read of [off, off+len) fetches the chunks that cover it and their tags in one batch of
 * io_uring reads (a "wave" of at most WAVE_BYTES of chunks), then authenticates each chunk before
 * any of its bytes reach the caller. Every chunk is checked on every read.
 *
 * Pipelining: the chunks of a wave are authenticated and decrypted in order as their
 * completions come in, not after the whole wave has arrived, so with reads that really run
 * asynchronously (O_DIRECT, or pages still coming from the disk) decryption overlaps the I/O.
 * Buffered reads that hit the page cache complete inline in io_uring_submit(). Punting them to
 * io_uring's workers (IOSQE_ASYNC) to overlap the copy with decryption was measured on the
 * 2-core machine and gave nothing but noise (docs/PERFORMANCE.md), so it is not done.
 *
 * Dense objects (one chunk of at most STORE_DENSE_MAX bytes with its tag: the small files of a
 * training set) lie unaligned, right after each other, and are read with one pread of their
 * ciphertext and tag (dense_read), not an io_uring round: for a file of a few KiB the ring's
 * submit and reap cost more than the copy.
 *
 * Tiny files are members of a group (docs/FORMAT.md 4.10): the object opened is the group, its
 * size the member's, and a read fetches and authenticates the whole group (one dense chunk of at
 * most STORE_GROUP_MAX bytes) with one pread, then copies out the member's bytes (member_read).
 */
#include <stdio.h>
#include <sys/stat.h>

#include "store/store_internal.h"

#define RING_DEPTH 64u
/* Chunk bytes fetched in one batch; bounds the reader's buffer. */
#define WAVE_BYTES (2u << 20)
#define WAVE_CHUNKS_MAX 32u

struct store_object {
	uint64_t dataset_id;
	struct store *st;           /* borrowed: the store outlives its objects */
	struct store_extent ext;    /* copied from the inode; pack and offset where it is now */
	uint64_t size;              /* the file's plaintext bytes, authenticated by the key unwrap */
	uint64_t osize;             /* the object's: size, or a tiny file's group's (4.10) */
	crypto_key *key;            /* object key; owned, guarded memory */
	struct pack_handle *pack;   /* a reference: the pack stays readable while this is open,
				       even after the garbage collector moved the object on */
	int fd;                     /* pack->fd */
};

struct store_reader {
	struct store *st;                          /* borrowed */
	struct io_uring ring;
	uint8_t *arena;                            /* STORE_ALIGN-aligned read buffer; owned */
	size_t arena_len;
	crypto_chunk_ctx *cctx;                    /* keyed for the object last read; owned */
	uint8_t cur_id[CRYPTO_OBJECT_ID_LEN];      /* that object's id */
	bool keyed;
	bool broken;                               /* its ring failed; every later read: -EIO */
};

int store_object_open(struct store *st, uint64_t dataset_id, const struct store_inode *inode,
		      struct store_object **ret_obj)
{
	uint8_t ad[OBJECT_KEY_AD_MAX];
	struct store_object *obj;
	struct ds_keys k = { 0 };
	size_t adlen;
	int r;

	if (inode->type != STORE_INODE_FILE)
		return -EISDIR;
	/* Format 3: the object key is wrapped under the key of the version the inode was read
	 * from; an erased version has none. */
	r = store_version_keys_read(st, dataset_id, inode->version, &k);
	if (r < 0)
		return r;
	obj = calloc(1, sizeof(*obj));
	if (!obj) {
		store_keys_put(st, &k);
		return -ENOMEM;
	}
	obj->dataset_id = dataset_id;
	obj->ext = inode->ext;
	obj->size = inode->size;
	obj->osize = inode_object_size(inode);
	adlen = object_key_ad(st->format, dataset_id, inode->version, inode, ad);
	/* Tests: an erasure of the version lands here, its key held. */
	store_race_point(st, STORE_RACE_KEYS_HELD, dataset_id);
	r = crypto_key_unwrap(k.wrap, inode->ext.wrapped_key, ad, adlen, &obj->key);
	store_keys_put(st, &k);
	if (r < 0) {
		free(obj);
		return err_set(r, "inode %llu: its object key does not unwrap (the record or key "
				  "was altered)", (unsigned long long)inode->ino);
	}
	obj->st = st;
	/* Where the object is now (the garbage collector may have moved it), and a reference to
	 * that pack. The collector retires a pack only after the records that move its objects
	 * are committed: a pack that stopped being committed between the two steps is looked up
	 * again, which then finds the move record. */
	for (int tries = 0;; tries++) {
		r = store_object_locate(st, &inode->ext, &obj->ext.pack_id, &obj->ext.offset);
		if (r == 0 && (obj->ext.offset < PACK_HEADER_LEN ||
			       (!IS_ALIGNED(obj->ext.offset, STORE_ALIGN) &&
				!object_dense(obj->osize, obj->ext.chunk_size))))
			r = err_set(-EBADMSG, "inode %llu: its object's location is malformed",
				    (unsigned long long)inode->ino);
		if (r == 0)
			r = store_pack_ref(st, obj->ext.pack_id, &obj->pack);
		if (r != -EUCLEAN || tries == 1)
			break;
	}
	if (r < 0) {
		store_object_close(obj);
		return r;
	}
	obj->fd = obj->pack->fd;
	*ret_obj = obj;
	return 0;
}

void store_object_close(struct store_object *obj)
{
	if (!obj)
		return;
	crypto_key_free(obj->key);
	store_pack_unref(obj->st, obj->pack);
	free(obj);
}

uint64_t store_object_size(const struct store_object *obj)
{
	return obj->size;
}

uint32_t store_object_chunk_size(const struct store_object *obj)
{
	return obj->ext.chunk_size;
}

int store_reader_new(struct store *st, struct store_reader **ret_reader)
{
	struct store_reader *r = calloc(1, sizeof(*r));
	int e;

	if (!r)
		return -ENOMEM;
	r->st = st;
	e = io_uring_queue_init(RING_DEPTH, &r->ring, 0);
	if (e < 0) {
		free(r);
		return err_set(e, "cannot set up io_uring: %s", strerror(-e));
	}
	*ret_reader = r;
	return 0;
}

void store_reader_free(struct store_reader *r)
{
	if (!r)
		return;
	io_uring_queue_exit(&r->ring);
	crypto_chunk_ctx_free(r->cctx);
	/* The arena held plaintext of partially read chunks. */
	if (r->arena)
		explicit_bzero(r->arena, r->arena_len);
	free(r->arena);
	free(r);
}

static int reader_arena(struct store_reader *r, size_t need)
{
	uint8_t *a;

	if (r->arena_len >= need)
		return 0;
	/* aligned_alloc() wants a size that is a multiple of the alignment (C11; ASan enforces it). */
	need = (need + STORE_ALIGN - 1) / STORE_ALIGN * STORE_ALIGN;
	a = aligned_alloc(STORE_ALIGN, need);
	if (!a)
		return -ENOMEM;
	if (r->arena)
		explicit_bzero(r->arena, r->arena_len);
	free(r->arena);
	r->arena = a;
	r->arena_len = need;
	return 0;
}

static int reader_key(struct store_reader *r, const struct store_object *obj)
{
	int e;

	if (r->keyed && memcmp(r->cur_id, obj->ext.object_id, CRYPTO_OBJECT_ID_LEN) == 0)
		return 0;
	r->keyed = false;
	if (!r->cctx)
		e = crypto_chunk_ctx_new(obj->ext.alg, obj->key, obj->ext.object_id, &r->cctx);
	else
		e = crypto_chunk_ctx_rekey(r->cctx, obj->ext.alg, obj->key, obj->ext.object_id);
	if (e < 0)
		return e;
	memcpy(r->cur_id, obj->ext.object_id, CRYPTO_OBJECT_ID_LEN);
	r->keyed = true;
	return 0;
}

/* One read in a wave. */
struct wave_io {
	uint8_t *buf;       /* into the arena */
	uint64_t off;       /* pack offset, aligned */
	uint32_t len;       /* bytes asked for, aligned */
	uint32_t need;      /* bytes that must arrive (the rest is alignment padding) */
};

/* The reads of one wave in flight: which have completed, and the first failure. Lives on the
 * stack of one store_object_read() call; every read submitted is reaped before it returns. */
struct wave {
	struct wave_io *io;                        /* borrowed: the reads */
	unsigned n;                                /* how many */
	unsigned reaped;                           /* completions seen */
	int fd;                                    /* the pack */
	int err;                                   /* first failure (-errno with detail), or 0 */
	bool done[WAVE_CHUNKS_MAX + 1];            /* io[i] complete and whole */
};

/* Submit the n reads of a wave at once (n <= WAVE_CHUNKS_MAX + 1 < RING_DEPTH, so there is
 * always an SQE). */
static int wave_submit(struct store_reader *r, struct wave *w, int fd, struct wave_io *io,
		       unsigned n)
{
	int e;

	*w = (struct wave){ .io = io, .n = n, .fd = fd };
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

		io_uring_prep_read(sqe, fd, io[i].buf, io[i].len, io[i].off);
		io_uring_sqe_set_data64(sqe, i);
	}
	for (unsigned sent = 0; sent < n; sent += (unsigned)e) {
		e = io_uring_submit(&r->ring);
		if (e == -EINTR || e == -EAGAIN) {
			e = 0;
			continue;
		}
		if (e <= 0) {
			/* Reads may be in flight and SQEs left unsent: this ring is done. */
			r->broken = true;
			w->n = 0;
			return err_set(e < 0 ? e : -EIO, "io_uring submit failed: %s",
				       strerror(e < 0 ? -e : EIO));
		}
	}
	return 0;
}

/* Reap one completion of w; top up a short read synchronously (EOF first: the pack was cut). */
static int wave_reap_one(struct store_reader *r, struct wave *w)
{
	struct io_uring_cqe *cqe;
	unsigned i;
	int res, e;

	do
		e = io_uring_wait_cqe(&r->ring, &cqe);
	while (e == -EINTR);
	if (e < 0)
		return e;
	i = (unsigned)io_uring_cqe_get_data64(cqe);
	res = cqe->res;
	io_uring_cqe_seen(&r->ring, cqe);
	w->reaped++;
	if (w->err || i >= w->n)
		return 0;
	if (res < 0) {
		w->err = err_set(res, "pack read at %llu failed: %s",
				 (unsigned long long)w->io[i].off, strerror(-res));
		return 0;
	}
	if ((uint32_t)res < w->io[i].need) {
		int pe = pread_all(w->fd, w->io[i].buf + res, w->io[i].need - (uint32_t)res,
				   w->io[i].off + (uint64_t)res);
		struct stat st;

		/* pread_all's -EIO is also its end of file: a pack that ends before the read does
		 * was cut, or replaced by an older (shorter) copy, and is told apart from the
		 * disk's own errors: that is an integrity matter, those an io_error (fuse/ops.c). */
		if (pe == -EIO && fstat(w->fd, &st) == 0 &&
		    (uint64_t)st.st_size < w->io[i].off + w->io[i].need) {
			w->err = err_set(-ENODATA, "pack is shorter than the index says (read at "
					 "%llu)", (unsigned long long)w->io[i].off);
			return 0;
		}
		if (pe < 0) {
			w->err = err_set(pe, "pack read at %llu failed: %s",
					 (unsigned long long)w->io[i].off, strerror(-pe));
			return 0;
		}
	}
	w->done[i] = true;
	return 0;
}

/* Wait until read i of w is complete. On failure, every read still in flight is reaped first
 * (their buffers are the arena), and the first failure is returned. */
static int wave_wait(struct store_reader *r, struct wave *w, unsigned i)
{
	while (!w->err && !w->done[i]) {
		int e = wave_reap_one(r, w);

		if (e < 0) {
			/* The ring itself failed with reads in flight: this ring is done. */
			r->broken = true;
			w->reaped = w->n;
			return err_set(e, "io_uring wait failed: %s", strerror(-e));
		}
	}
	if (w->err) {
		while (w->reaped < w->n)
			if (wave_reap_one(r, w) < 0) {
				r->broken = true;
				break;
			}
		w->reaped = w->n;
		return w->err;
	}
	return 0;
}

/* Reap whatever of w is still in flight (after a failure of this thread's own, such as a chunk
 * that failed authentication: the rest of the wave still lands in the arena). */
static void wave_finish(struct store_reader *r, struct wave *w)
{
	if (!w->err)
		w->err = -ECANCELED;
	(void)wave_wait(r, w, 0);
}

/* Submit the reads of a wave at once and wait for all of them. */
static int wave_read(struct store_reader *r, int fd, struct wave_io *io, unsigned n)
{
	struct wave w;
	int e = wave_submit(r, &w, fd, io, n);

	for (unsigned i = 0; e == 0 && i < n; i++)
		e = wave_wait(r, &w, i);
	return e;
}

static ssize_t empty_object_check(struct store_reader *r, const struct store_object *obj)
{
	struct wave_io io = {
		.off = obj->ext.offset,
		.len = STORE_ALIGN,
		.need = CRYPTO_TAG_LEN,
	};
	int e = reader_arena(r, 2 * STORE_ALIGN);

	if (e == 0)
		e = reader_key(r, obj);
	if (e < 0)
		return e;
	io.buf = r->arena;
	e = wave_read(r, obj->fd, &io, 1);
	if (e == 0)
		e = crypto_chunk_decrypt(r->cctx, 0, true, NULL, 0, io.buf, NULL);
	if (e == -EBADMSG)
		return err_set(e, "empty object at pack %016llx offset %llu failed authentication",
			       (unsigned long long)obj->ext.pack_id,
			       (unsigned long long)obj->ext.offset);
	return e;
}

/* One dense chunk of n plaintext bytes at the object's offset (a dense object, docs/FORMAT.md
 * 4.7, or a group of tiny files, 4.10): its ciphertext and tag with one pread (aligned out to
 * STORE_ALIGN when the packs are read with O_DIRECT), authenticated, and decrypted into dst, or
 * in place in the reader's arena when dst is NULL; *ret_pt is where the plaintext is then. what
 * names it in the error ("object", "group"). */
static int dense_chunk_read(struct store_reader *r, const struct store_object *obj, uint64_t n,
			    void *dst, const char *what, uint8_t **ret_pt)
{
	const uint64_t base = obj->ext.offset;
	const uint64_t need = n + CRYPTO_TAG_LEN;
	const bool direct = r->st->direct_io;
	const uint64_t a0 = direct ? base & ~((uint64_t)STORE_ALIGN - 1) : base;
	const uint64_t a1 = direct ? ALIGN_UP(base + need, (uint64_t)STORE_ALIGN) : base + need;
	uint8_t *ct;
	ssize_t got;
	int e;

	e = reader_arena(r, (size_t)(a1 - a0));
	if (e == 0)
		e = reader_key(r, obj);
	if (e < 0)
		return e;
	got = pread_full(obj->fd, r->arena, (size_t)(a1 - a0), a0);
	if (got < 0)
		return err_set((int)got, "pack read at %llu failed: %s", (unsigned long long)a0,
			       strerror((int)-got));
	if ((uint64_t)got < base + need - a0)
		return err_set(-EIO, "pack is shorter than the index says (read at %llu)",
			       (unsigned long long)base);
	ct = r->arena + (base - a0);
	e = crypto_chunk_decrypt(r->cctx, 0, true, n ? ct : NULL, (size_t)n, ct + n,
				 dst ? dst : ct);
	if (e < 0) {
		char hex[2 * CRYPTO_OBJECT_ID_LEN + 1];

		hex_encode(obj->ext.object_id, CRYPTO_OBJECT_ID_LEN, hex);
		return err_set(e, "%s %s failed authentication (pack %016llx at %llu): the data "
				  "was altered", what, hex, (unsigned long long)obj->ext.pack_id,
			       (unsigned long long)base);
	}
	*ret_pt = ct;
	return 0;
}

/* A dense object (docs/FORMAT.md 4.7): read and authenticated whole, then the bytes asked for.
 * off < size, or off == 0 for an empty object (whose tag is still checked). */
static ssize_t dense_read(struct store_reader *r, const struct store_object *obj, uint64_t off,
			  size_t len, void *buf)
{
	const uint64_t size = obj->size;
	const uint64_t end = size - off < len ? size : off + len;
	const bool whole = off == 0 && end == size;
	uint8_t *pt;
	int e = dense_chunk_read(r, obj, size, whole ? buf : NULL, "object", &pt);

	if (e < 0)
		return e;
	if (!whole)
		memcpy(buf, pt + off, (size_t)(end - off));
	return (ssize_t)(end - off);
}

/* A tiny file (docs/FORMAT.md 4.10): its group, one dense chunk, read and authenticated whole,
 * then the member's bytes asked for. A read at 0 of an empty member still authenticates the
 * group (so that every read checks what it returns, as for an empty object). */
static ssize_t member_read(struct store_reader *r, const struct store_object *obj, uint64_t off,
			   size_t len, void *buf)
{
	const uint64_t gsize = obj->osize;
	const uint64_t end = obj->size - off < len ? obj->size : off + len;
	uint8_t *pt;
	int e = dense_chunk_read(r, obj, gsize, NULL, "group", &pt);

	if (e < 0)
		return e;
	memcpy(buf, pt + obj->ext.member_off + off, (size_t)(end - off));
	/* The arena now holds the other members' plaintext: not left there. */
	explicit_bzero(pt, (size_t)gsize);
	return (ssize_t)(end - off);
}

ssize_t store_object_read(struct store_reader *r, const struct store_object *obj, uint64_t off,
			  size_t len, void *buf)
{
	const uint32_t cs = obj->ext.chunk_size;
	const uint64_t size = obj->size;
	const uint64_t nchunks = object_nchunks(size, cs);
	const uint64_t base = obj->ext.offset;
	const unsigned wave_max = MAX(1u, MIN(WAVE_CHUNKS_MAX, WAVE_BYTES / cs));
	struct wave_io io[WAVE_CHUNKS_MAX + 1];
	uint64_t end, first, last;
	struct wave w;
	uint8_t *out = buf;
	int e;

	if (len == 0)
		return 0;
	if (r->broken)
		return err_set(-EIO, "this store reader's io_uring failed earlier; open a new one");
	if (obj->ext.grouped)
		return off < size || off == 0 ? member_read(r, obj, MIN(off, size), len, buf) : 0;
	/* An empty object is one empty, last chunk: a read at its start still checks that chunk's
	 * tag, so every read authenticates what it returns (here: that there is nothing). */
	if (object_dense(size, cs) && off == 0 && size == 0)
		return dense_read(r, obj, off, len, buf);
	if (size == 0 && off == 0)
		return empty_object_check(r, obj);
	if (off >= size)
		return 0;
	if (object_dense(size, cs))
		return dense_read(r, obj, off, len, buf);
	end = size - off < len ? size : off + len;
	e = reader_arena(r, (size_t)wave_max * cs +
				    ALIGN_UP(wave_max * CRYPTO_TAG_LEN, STORE_ALIGN) + STORE_ALIGN);
	if (e == 0)
		e = reader_key(r, obj);
	if (e < 0)
		return e;

	first = off / cs;
	last = (end - 1) / cs;
	while (first <= last) {
		unsigned k = (unsigned)MIN((uint64_t)wave_max, last - first + 1);
		uint64_t t0 = base + size + first * CRYPTO_TAG_LEN;
		uint64_t t1 = t0 + (uint64_t)k * CRYPTO_TAG_LEN;
		uint64_t a0 = t0 & ~((uint64_t)STORE_ALIGN - 1);
		uint8_t *tags;

		for (unsigned j = 0; j < k; j++) {
			uint64_t idx = first + j;
			uint32_t clen = (uint32_t)MIN((uint64_t)cs, size - idx * cs);

			io[j] = (struct wave_io){
				.buf = r->arena + (size_t)j * cs,
				.off = base + idx * cs,
				.len = ALIGN_UP(clen, STORE_ALIGN),
				.need = clen,
			};
		}
		io[k] = (struct wave_io){
			.buf = r->arena + (size_t)wave_max * cs,
			.off = a0,
			.len = (uint32_t)(ALIGN_UP(t1, (uint64_t)STORE_ALIGN) - a0),
			.need = (uint32_t)(t1 - a0),
		};
		e = wave_submit(r, &w, obj->fd, io, k + 1);
		if (e == 0)
			e = wave_wait(r, &w, k);
		if (e < 0)
			return e;
		tags = io[k].buf + (t0 - a0);

		for (unsigned j = 0; j < k; j++) {
			uint64_t idx = first + j;
			uint64_t cstart = idx * cs;
			uint32_t clen = io[j].need;
			uint64_t from = MAX(cstart, off), to = MIN(cstart + clen, end);
			bool whole = from == cstart && to == cstart + clen;
			uint8_t *dst = whole ? out + (cstart - off) : io[j].buf;

			e = wave_wait(r, &w, j);
			if (e < 0)
				return e;
			e = crypto_chunk_decrypt(r->cctx, idx, idx == nchunks - 1, io[j].buf, clen,
						 tags + (size_t)j * CRYPTO_TAG_LEN, dst);
			if (e < 0) {
				char hex[2 * CRYPTO_OBJECT_ID_LEN + 1];

				wave_finish(r, &w);
				hex_encode(obj->ext.object_id, CRYPTO_OBJECT_ID_LEN, hex);
				return err_set(e, "object %s chunk %llu failed authentication "
						  "(pack %016llx at %llu): the data was altered",
					       hex, (unsigned long long)idx,
					       (unsigned long long)obj->ext.pack_id,
					       (unsigned long long)io[j].off);
			}
			if (!whole)
				memcpy(out + (from - off), io[j].buf + (from - cstart), to - from);
		}
		first += k;
	}
	return (ssize_t)(end - off);
}
