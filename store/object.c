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
 */
#include <stdio.h>

#include "store/store_internal.h"

#define RING_DEPTH 64u
/* Chunk bytes fetched in one batch; bounds the reader's buffer. */
#define WAVE_BYTES (2u << 20)
#define WAVE_CHUNKS_MAX 32u

struct store_object {
	uint64_t dataset_id;
	struct store_extent ext;    /* copied from the inode */
	uint64_t size;              /* plaintext bytes, authenticated by the key unwrap */
	crypto_key *key;            /* object key; owned, guarded memory */
	int fd;                     /* pack read fd; borrowed from the store's cache */
};

struct store_reader {
	struct store *st;                          /* borrowed */
	struct io_uring ring;
	uint8_t *arena;                            /* STORE_ALIGN-aligned read buffer; owned */
	size_t arena_len;
	crypto_chunk_ctx *cctx;                    /* keyed for the object last read; owned */
	uint8_t cur_id[CRYPTO_OBJECT_ID_LEN];      /* that object's id */
	bool keyed;
};

int store_object_open(struct store *st, uint64_t dataset_id, const struct store_inode *inode,
		      struct store_object **ret_obj)
{
	uint8_t ad[OBJECT_KEY_AD_LEN];
	struct store_object *obj;
	crypto_key *dkey = NULL;
	int r;

	if (inode->type != STORE_INODE_FILE)
		return -EISDIR;
	r = store_dataset_key(st, dataset_id, NULL, &dkey);
	if (r < 0)
		return r;
	obj = calloc(1, sizeof(*obj));
	if (!obj)
		return -ENOMEM;
	obj->dataset_id = dataset_id;
	obj->ext = inode->ext;
	obj->size = inode->size;
	object_key_ad(dataset_id, inode, ad);
	r = crypto_key_unwrap(dkey, inode->ext.wrapped_key, ad, sizeof(ad), &obj->key);
	if (r < 0) {
		free(obj);
		return err_set(r, "inode %llu: its object key does not unwrap (the record or key "
				  "was altered)", (unsigned long long)inode->ino);
	}
	r = store_pack_fd(st, inode->ext.pack_id, &obj->fd);
	if (r < 0) {
		store_object_close(obj);
		return r;
	}
	*ret_obj = obj;
	return 0;
}

void store_object_close(struct store_object *obj)
{
	if (!obj)
		return;
	crypto_key_free(obj->key);
	free(obj);
}

uint64_t store_object_size(const struct store_object *obj)
{
	return obj->size;
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

/* Submit the reads of a wave at once and wait for all; then top up any short read. */
static int wave_read(struct store_reader *r, int fd, struct wave_io *io, unsigned n)
{
	unsigned done = 0;
	int err = 0;

	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

		/* n <= WAVE_CHUNKS_MAX + 1 < RING_DEPTH, so there is always an SQE. */
		io_uring_prep_read(sqe, fd, io[i].buf, io[i].len, io[i].off);
		io_uring_sqe_set_data64(sqe, i);
	}
	err = io_uring_submit(&r->ring);
	if (err < 0)
		return err_set(err, "io_uring submit failed: %s", strerror(-err));
	err = 0;
	while (done < n) {
		struct io_uring_cqe *cqe;
		int e = io_uring_wait_cqe(&r->ring, &cqe);
		unsigned i;
		int res;

		if (e == -EINTR)
			continue;
		if (e < 0)
			return err_set(e, "io_uring wait failed: %s", strerror(-e));
		i = (unsigned)io_uring_cqe_get_data64(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&r->ring, cqe);
		done++;
		if (err || i >= n)
			continue;
		if (res < 0) {
			err = err_set(res, "pack read at %llu failed: %s",
				      (unsigned long long)io[i].off, strerror(-res));
		} else if ((uint32_t)res < io[i].need) {
			/* Short read: finish synchronously; EOF first means the pack was cut. */
			int e2 = pread_all(fd, io[i].buf + res, io[i].need - (uint32_t)res,
					   io[i].off + (uint64_t)res);

			if (e2 < 0)
				err = err_set(-EIO, "pack is shorter than the index says (read at "
						    "%llu)", (unsigned long long)io[i].off);
		}
	}
	return err;
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
	uint8_t *out = buf;
	int e;

	if (len == 0)
		return 0;
	/* An empty object is one empty, last chunk: a read at its start still checks that chunk's
	 * tag, so every read authenticates what it returns (here: that there is nothing). */
	if (size == 0 && off == 0)
		return empty_object_check(r, obj);
	if (off >= size)
		return 0;
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
		e = wave_read(r, obj->fd, io, k + 1);
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

			e = crypto_chunk_decrypt(r->cctx, idx, idx == nchunks - 1, io[j].buf, clen,
						 tags + (size_t)j * CRYPTO_TAG_LEN, dst);
			if (e < 0) {
				char hex[2 * CRYPTO_OBJECT_ID_LEN + 1];

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
