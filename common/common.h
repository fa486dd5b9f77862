/* common: small helpers shared by every module. No module below this one. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
/* Round x up to a multiple of a; a must be a power of two. */
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((typeof(x))(a) - 1))
#define IS_ALIGNED(x, a) (((x) & ((typeof(x))(a) - 1)) == 0)
#define IS_POW2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)

/* __attribute__((cleanup)) helpers (systemd style). Use one cleanup style per function. */
static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(const int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))

/* The index of the element of base (n elements of size bytes, sorted by the uint64_t member at
 * offset off) whose member is key, or -1: the binary search of every table kept by id. */
static inline ssize_t sorted_find_u64(const void *base, size_t n, size_t size, size_t off,
				      uint64_t key)
{
	for (size_t lo = 0, hi = n; lo < hi;) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t at;

		memcpy(&at, (const char *)base + mid * size + off, sizeof(at));
		if (at == key)
			return (ssize_t)mid;
		if (at < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* Room for key in a table kept by id (see sorted_find_u64), key not in it yet: the array grows
 * when it is full (its capacity *cap elements, doubled, first at the start), the elements above
 * key move up by one, and *n counts the new one. Returns the array, maybe moved, whose element
 * *ret_at the caller fills; NULL when out of memory, nothing changed and base still valid. */
static inline void *sorted_insert_u64(void *base, size_t *n, size_t *cap, size_t first,
				      size_t size, size_t off, uint64_t key, size_t *ret_at)
{
	char *b = base;
	size_t at = *n;

	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : first;

		b = reallocarray(base, c, size);
		if (!b)
			return NULL;
		*cap = c;
	}
	for (; at > 0; at--) {
		uint64_t id;

		memcpy(&id, b + (at - 1) * size + off, sizeof(id));
		if (id <= key)
			break;
	}
	memmove(b + (at + 1) * size, b + at * size, (*n - at) * size);
	(*n)++;
	*ret_at = at;
	return b;
}

/* Fixed-width integer encoding. Index keys are big-endian so they sort numerically;
 * on-disk values are little-endian. See docs/FORMAT.md. */
static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}
static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}
static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* A bounded cursor over a byte buffer, for decoding records from disk or a client.
 * Every get fails (returns false) instead of reading past the end; once failed it stays failed. */
struct cursor {
	const uint8_t *p;   /* next byte to read; borrowed */
	size_t left;        /* bytes remaining */
	bool bad;           /* a read went past the end */
};
static inline struct cursor cursor_make(const void *p, size_t n)
{
	return (struct cursor){ .p = p, .left = n, .bad = false };
}
bool cursor_take(struct cursor *c, void *out, size_t n);
bool cursor_u8(struct cursor *c, uint8_t *v);
bool cursor_le32(struct cursor *c, uint32_t *v);
bool cursor_le64(struct cursor *c, uint64_t *v);
/* Borrow n bytes without copying; *ret points into the cursor's buffer. */
bool cursor_ref(struct cursor *c, const uint8_t **ret, size_t n);
/* True when every byte was consumed and no read failed. */
static inline bool cursor_done(const struct cursor *c) { return !c->bad && c->left == 0; }

/* A growable byte buffer with a hard cap fixed at creation (curl dynbuf style). */
struct buf {
	uint8_t *data;      /* owned, NULL until first append */
	size_t len;         /* bytes in use */
	size_t cap;         /* bytes allocated */
	size_t max;         /* hard limit; appends beyond it fail with -E2BIG */
};
static inline void buf_init(struct buf *b, size_t max)
{
	*b = (struct buf){ .max = max };
}
int buf_append(struct buf *b, const void *p, size_t n);
/* Make room for n more bytes and point *ret at them (contents unspecified). -E2BIG past the cap. */
int buf_extend(struct buf *b, size_t n, uint8_t **ret);
int buf_u8(struct buf *b, uint8_t v);
int buf_le32(struct buf *b, uint32_t v);
int buf_le64(struct buf *b, uint64_t v);
static inline void buf_reset(struct buf *b) { b->len = 0; }
void buf_free(struct buf *b);

/* Write all of buf at offset off with pwrite, retrying on EINTR and short writes. -errno. */
int pwrite_all(int fd, const void *buf, size_t n, uint64_t off);
/* Read exactly n bytes at off; -EIO (short file) if EOF comes first. -errno. */
int pread_all(int fd, void *buf, size_t n, uint64_t off);
/* read() until n bytes or EOF; returns bytes read (>= 0) or -errno. */
ssize_t read_full(int fd, void *buf, size_t n);
/* pread() at off until n bytes or EOF; returns bytes read (>= 0) or -errno. */
ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off);
/* fsync a directory so a new or renamed entry in it is durable. -errno. */
int fsync_dirfd(int dirfd);
/* Replace dirfd/name with the n bytes of buf, whole or not at all: written to "name.PID.tmp"
 * (O_EXCL, O_NOFOLLOW, mode), then renamed over name; with durable, the file is fsynced before
 * the rename and dirfd after it. The temporary file is removed on failure. -errno. */
int replace_file_at(int dirfd, const char *name, const void *buf, size_t n, mode_t mode,
		    bool durable);
/* What kind of file a mode is, for messages: "a symbolic link", "a FIFO (named pipe)", ... */
const char *file_type_name(mode_t m);

/* Wall-clock time in nanoseconds since the epoch. */
int64_t now_realtime_ns(void);
/* Monotonic time in nanoseconds. */
int64_t now_monotonic_ns(void);

/* Seconds left of a job that, secs seconds in, has done done_files of total_files files and
 * done_bytes of total_bytes bytes: the larger of the files estimate (the files left at the rate
 * files went) and the bytes estimate, since a tree costs time per file as well as per byte (many
 * small files after the big ones: bytes alone would say 00:00 while most files remain). -1 when
 * there is nothing to go by yet (under a second, or nothing done). */
double progress_eta(uint64_t done_files, uint64_t total_files, uint64_t done_bytes,
		    uint64_t total_bytes, double secs);

/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void hex_encode(const uint8_t *in, size_t n, char *out);

/* Decode standard base64 (RFC 4648 section 4, padded) of len bytes into out (room for cap
 * bytes), *ret_n the decoded length. Canonical text only: with the characters of ignore left
 * out (NULL: none; " \t\r\n" for line-wrapped armour) it must be exactly the encoding of what
 * it decodes to, so no two texts name the same bytes (libsodium's decoder alone takes others).
 * -EBADMSG otherwise, out wiped and *ret_n untouched. (common/base64.c) */
int base64_decode_canonical(const char *text, size_t len, const char *ignore, uint8_t *out,
			    size_t cap, size_t *ret_n);
/* The same texts, decoded to the same bytes, as base64_decode_canonical() with ignore NULL, in
 * time that depends on the text: a table walk, for bytes that are no secret and come in bulk (an
 * import.stat batch, common/proto.c), where the constant-time decoder and the re-encoding that
 * checks it cost the daemon's connection thread several times as much. -EBADMSG otherwise, out
 * as far as it got and *ret_n untouched. fuzz_stat_batch checks that the two agree. */
int base64_decode_public(const char *text, size_t len, uint8_t *out, size_t cap, size_t *ret_n);
