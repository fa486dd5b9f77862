/* Unit tests for crypto/crypt4gh.c: known-answer vectors computed independently (python3-
 * cryptography and hashlib, from the specification: see tests/interop/crypt4gh_ref.py), round
 * trips at the segment edges, every header byte mutated, segments cut, moved and swapped, the wrong
 * recipient, edit lists, and the key file formats. */
#include "crypto/crypt4gh.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "crypto/bcrypt_pbkdf.h"

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = strlen(hex), got = 0;

	assert_int_equal(sodium_hex2bin(out, cap, hex, n, NULL, &got, NULL), 0);
	assert_int_equal(got, n / 2);
	return got;
}

static crypto_key *key_hex(const char *hex)
{
	uint8_t b[32];
	crypto_key *k = NULL;

	unhex(hex, b, sizeof(b));
	assert_int_equal(crypto_key_from_bytes(b, &k), 0);
	return k;
}

static crypto_secret *secret(const char *s)
{
	int p[2];
	crypto_secret *sec = NULL;

	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], s, strlen(s)), (ssize_t)strlen(s));
	close(p[1]);
	assert_int_equal(crypto_passphrase_read_fd(p[0], &sec), 0);
	close(p[0]);
	return sec;
}

/* RFC 7748 section 6.1's key pairs: Alice reads, Bob writes. */
#define ALICE_SK "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
#define ALICE_PK "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
#define BOB_SK "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
#define BOB_PK "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"

/* K_shared = BLAKE2b-512(X25519(sk_A, pk_B) || pk_A || pk_B)[0..32], by crypt4gh_ref.py. */
static void test_kat_shared_key(void **state)
{
	uint8_t want[32], got[32], pk[32];
	crypto_key *a = key_hex(ALICE_SK), *b = key_hex(BOB_SK);

	(void)state;
	unhex("322b7be3b9bce4a84fe6e2dea61e8e6d0a98f3e4c60b58bad722b1c855c9db22", want, 32);
	c4gh_public_key(a, pk);
	unhex(ALICE_PK, got, 32);
	assert_memory_equal(pk, got, 32);
	unhex(BOB_PK, pk, 32);
	assert_int_equal(c4gh_shared_key(a, pk, false, got), 0);
	assert_memory_equal(got, want, 32);
	/* The writer gets the same key from the other side. */
	unhex(ALICE_PK, pk, 32);
	assert_int_equal(c4gh_shared_key(b, pk, true, got), 0);
	assert_memory_equal(got, want, 32);
	/* The order of the public keys in the hash matters: as a reader, Bob gets another key. */
	assert_int_equal(c4gh_shared_key(b, pk, false, got), 0);
	assert_memory_not_equal(got, want, 32);
	/* A low-order public key (all zero) is refused. */
	memset(pk, 0, 32);
	assert_int_equal(c4gh_shared_key(a, pk, false, got), -EINVAL);
	crypto_key_free(a);
	crypto_key_free(b);
}

/* A segment and a header packet against python3-cryptography's ChaCha20Poly1305. */
static void test_kat_segment_packet(void **state)
{
	uint8_t nonce[12], want[256], got[256], dk[32], rpk[32], payload[40];
	crypto_key *k, *w = key_hex(BOB_SK);
	size_t n;

	(void)state;
	for (int i = 0; i < 32; i++)
		dk[i] = (uint8_t)i;
	for (int i = 0; i < 12; i++)
		nonce[i] = (uint8_t)i;
	assert_int_equal(crypto_key_from_bytes(dk, &k), 0);
	n = unhex("ca8971705d23e20897c87ea7d9710663472922dccb5b6b131b03c25e", want, sizeof(want));
	assert_int_equal(c4gh_segment_seal(k, C4GH_CHACHA20_IETF_POLY1305, 0, nonce,
					   (const uint8_t *)"Crypt4GH KAT", 12, got), 0);
	assert_memory_equal(got, nonce, 12);
	assert_memory_equal(got + 12, want, n);
	/* The AEAD method binds the sequence number (7, little-endian) as associated data. */
	n = unhex("ca8971705d23e20897c87ea7911f914c7b7a92707c52eb0ceedf1fdb", want, sizeof(want));
	assert_int_equal(c4gh_segment_seal(k, C4GH_CHACHA20_IETF_POLY1305_AEAD, 7, nonce,
					   (const uint8_t *)"Crypt4GH KAT", 12, got), 0);
	assert_memory_equal(got + 12, want, n);

	/* data_encryption_parameters (type 0, method 0, key 00..1f) from Bob to Alice. */
	put_le32(payload, 0);
	put_le32(payload + 4, 0);
	memcpy(payload + 8, dk, 32);
	unhex(ALICE_PK, rpk, 32);
	n = unhex("6c00000000000000de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
		  "000102030405060708090a0b7a95789088595cb1f647e9b45b7cd81bc1cc5555af3a1a3c4e073d"
		  "2352f37285f9d6d7af194849e2b903fdb6a5a7e13457d0ca0febcdbc1b", want, sizeof(want));
	assert_int_equal(n, C4GH_PACKET_FIXED + 40 + C4GH_PACKET_MAC);
	assert_int_equal(c4gh_packet_seal(w, rpk, nonce, payload, 40, got), 0);
	assert_memory_equal(got, want, n);
	crypto_key_free(k);
	crypto_key_free(w);
}

/* ---- Files built here ---------------------------------------------------------------------- */

/* A Crypt4GH file in memory: header, then segments. */
struct file {
	uint8_t *b;
	size_t n;
};

static void file_add(struct file *f, const void *p, size_t n)
{
	f->b = realloc(f->b, f->n + n + 1);
	assert_non_null(f->b);
	memcpy(f->b + f->n, p, n);
	f->n += n;
}

static uint8_t *pattern(size_t n, unsigned seed)
{
	uint8_t *p = malloc(n + 1);

	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 131 + seed + (i >> 16));
	return p;
}

/* Encrypt plain (n bytes) for recipients with one data key; method, edits as given. */
static struct file make_file(const uint8_t (*rcpt)[32], size_t nr, const uint8_t *plain, size_t n,
			     enum c4gh_method m, uint64_t seq, const uint64_t *edits, size_t ne)
{
	struct file f = { 0 };
	crypto_key *dk = NULL;
	struct c4gh_header_spec s = { .recipients = rcpt, .nrecipients = nr, .method = m,
				      .sequence = seq, .edits = edits, .nedits = ne };
	uint8_t *hdr = NULL, seg[C4GH_SEGMENT_SEALED];
	size_t hl, i = 0, off = 0;

	assert_int_equal(crypto_key_generate(&dk), 0);
	s.data_key = dk;
	assert_int_equal(c4gh_header_build(&s, &hdr, &hl), 0);
	file_add(&f, hdr, hl);
	free(hdr);
	for (;;) {
		size_t l = MIN((size_t)C4GH_SEGMENT, n - off);

		if (l == 0 && (m == C4GH_CHACHA20_IETF_POLY1305 || (i > 0 && off % C4GH_SEGMENT)))
			break;
		assert_int_equal(c4gh_segment_seal(dk, m, seq + i, NULL, plain + off, l, seg), 0);
		file_add(&f, seg, l + C4GH_SEGMENT_OVERHEAD);
		off += l;
		i++;
		if (l < C4GH_SEGMENT)
			break;
	}
	crypto_key_free(dk);
	return f;
}

/* Decode f with sk: 0 and the plaintext, or the first error. */
static int decode(const struct file *f, const crypto_key *sk, uint8_t **ret, size_t *ret_n)
{
	char path[] = "/tmp/test_crypt4gh.XXXXXX";
	int fd = mkstemp(path);
	c4gh_header *h = NULL;
	c4gh_decoder *d = NULL;
	uint8_t *out = NULL;
	size_t got = 0;
	ssize_t r;

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(pwrite_all(fd, f->b, f->n, 0), 0);
	r = c4gh_header_parse(f->b, f->n, sk, &h);
	if (r < 0)
		goto out;
	r = c4gh_decoder_new(h, fd, f->n, &d);
	if (r < 0) {
		c4gh_header_free(h);
		goto out;
	}
	out = malloc(c4gh_decoder_size(d) + 1);
	assert_non_null(out);
	/* Odd read sizes, so that reads straddle segments. */
	for (size_t step = 1000;; step = step * 7 % 100003 + 1) {
		r = c4gh_decoder_read(d, out + got, MIN(step, c4gh_decoder_size(d) - got));
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	if (r == 0 && got != c4gh_decoder_size(d))
		r = -EIO;
out:
	c4gh_decoder_free(d);
	close(fd);
	if (r < 0) {
		free(out);
		return (int)r;
	}
	*ret = out;
	*ret_n = got;
	return 0;
}

struct keys {
	crypto_key *sk[3];
	uint8_t pk[3][32];
};

static struct keys keys3(void)
{
	struct keys k;

	for (int i = 0; i < 3; i++)
		assert_int_equal(c4gh_keypair_generate(&k.sk[i], k.pk[i]), 0);
	return k;
}

static void keys_free(struct keys *k)
{
	for (int i = 0; i < 3; i++)
		crypto_key_free(k->sk[i]);
}

static void test_roundtrip_sizes(void **state)
{
	static const size_t sizes[] = { 0, 1, 65535, 65536, 65537, 2 * 65536, 3 * 65536 + 5 };
	struct keys k = keys3();

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		for (int m = 0; m < 2; m++) {
			uint8_t *plain = pattern(sizes[i], (unsigned)i), *out = NULL;
			struct file f = make_file(k.pk, 2, plain, sizes[i], (enum c4gh_method)m,
						  (uint64_t)m * 0xfffffffffffffffeull, NULL, 0);
			size_t n = 0;

			/* Both recipients read it; the third, not addressed, cannot. */
			for (int who = 0; who < 2; who++) {
				assert_int_equal(decode(&f, k.sk[who], &out, &n), 0);
				assert_int_equal(n, sizes[i]);
				assert_memory_equal(out, plain, n);
				free(out);
			}
			assert_int_equal(decode(&f, k.sk[2], &out, &n), -ENOKEY);
			free(f.b);
			free(plain);
		}
	}
	keys_free(&k);
}

/* The edit list of the spec's example and edge cases, against the algorithm of section 4.2. */
static size_t apply_edits(const uint8_t *in, size_t n, const uint64_t *e, size_t ne, uint8_t *out)
{
	size_t pos = 0, o = 0;

	if (ne == 0)
		return memcpy(out, in, n), n;
	for (size_t i = 0; i < ne; i++) {
		size_t l = (size_t)MIN(e[i], (uint64_t)(n - pos));

		if (i % 2 == 0) {
			pos += l;
			if (i + 1 == ne) {
				memcpy(out + o, in + pos, n - pos);
				o += n - pos;
			}
		} else {
			memcpy(out + o, in + pos, l);
			o += l;
			pos += l;
		}
	}
	return o;
}

static void test_edit_lists(void **state)
{
	static const uint64_t ex[] = { 0, 7853, 71721, 307929, 51299, 38 };
	static const uint64_t a[] = { 10 }, b[] = { 65530, 12 }, c[] = { 1, 1, 1, 1, 65536 * 3 };
	static const uint64_t d[] = { 0, 0 }, e[] = { 70000, 100000000, 5 }, f0[] = { 0 };
	static const struct { const uint64_t *l; size_t n; size_t size; } cases[] = {
		{ ex, 6, 500000 }, { a, 1, 100 }, { b, 2, 200000 }, { c, 5, 300000 },
		{ d, 2, 1000 }, { e, 3, 80000 }, { f0, 1, 65536 }, { NULL, 0, 70000 },
	};
	struct keys k = keys3();

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint8_t *plain = pattern(cases[i].size, 3), *want = malloc(cases[i].size + 1), *out;
		uint64_t none = 0;
		size_t wn = apply_edits(plain, cases[i].size, cases[i].l, cases[i].n, want), n = 0;
		struct file f = make_file(k.pk, 1, plain, cases[i].size, C4GH_CHACHA20_IETF_POLY1305,
					  0, cases[i].l ? cases[i].l : &none, cases[i].n);
		c4gh_header *h = NULL;

		assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), 0);
		assert_true(c4gh_header_edited(h));
		c4gh_header_free(h);
		assert_int_equal(decode(&f, k.sk[0], &out, &n), 0);
		assert_int_equal(n, wn);
		assert_memory_equal(out, want, n);
		free(out);
		free(f.b);
		free(plain);
		free(want);
	}
	keys_free(&k);
}

/* Flip each byte of the header of a one-recipient file in turn: the file must never decode. */
static void test_header_every_byte(void **state)
{
	struct keys k = keys3();
	uint8_t *plain = pattern(70000, 9), *out = NULL;
	static const uint64_t ed[] = { 5, 100 };
	size_t n;

	(void)state;
	for (int with_edit = 0; with_edit < 2; with_edit++) {
		struct file f = make_file(k.pk, 1, plain, 70000, C4GH_CHACHA20_IETF_POLY1305, 0,
					  with_edit ? ed : NULL, with_edit ? 2 : 0);
		c4gh_header *h = NULL;
		size_t hl;

		assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), 0);
		hl = c4gh_header_length(h);
		c4gh_header_free(h);
		for (size_t i = 0; i < hl; i++) {
			for (int bit = 0; bit < 8; bit += 3) {
				int r;

				f.b[i] ^= (uint8_t)(1u << bit);
				r = decode(&f, k.sk[0], &out, &n);
				/* The one change the format cannot see (spec 5.4, packets are not
				 * bound together): the edit list packet (bytes 124 on) changed after
				 * its length, so that it is skipped as another reader's. The
				 * file then decodes whole, without its edits; the header digest
				 * recorded at import is how a sender's copy is compared. */
				if (r == 0 && with_edit && i >= 124 + 4) {
					assert_int_equal(n, 70000);
					assert_memory_equal(out, plain, n);
					free(out);
					f.b[i] ^= (uint8_t)(1u << bit);
					continue;
				}
				if (r == 0)
					fail_msg("header byte %zu bit %d flipped: still decodes", i,
						 bit);
				assert_true(r == -EBADMSG || r == -ENOKEY || r == -ENOTSUP ||
					    r == -ENOBUFS || r == -E2BIG);
				f.b[i] ^= (uint8_t)(1u << bit);
			}
		}
		/* Cut anywhere inside the header: more is needed, or it is not ours. */
		for (size_t i = 0; i < hl; i++)
			assert_int_not_equal(c4gh_header_parse(f.b, i, k.sk[0], &h), 0);
		free(f.b);
	}
	free(plain);
	keys_free(&k);
}

/* Specific fields, each with the error that names it. */
static void test_header_fields(void **state)
{
	struct keys k = keys3();
	uint8_t *plain = pattern(10, 1);
	struct file f = make_file(k.pk, 1, plain, 10, C4GH_CHACHA20_IETF_POLY1305, 0, NULL, 0);
	c4gh_header *h = NULL;
	uint8_t save[16];

	(void)state;
	memcpy(save, f.b, 16);
	f.b[0] = 'C';
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), -EBADMSG);
	memcpy(f.b, save, 16);
	put_le32(f.b + 8, 2);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), -ENOTSUP);
	memcpy(f.b, save, 16);
	put_le32(f.b + 12, 0);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), -EBADMSG);
	put_le32(f.b + 12, C4GH_PACKETS_MAX + 1);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), -E2BIG);
	memcpy(f.b, save, 16);
	/* A packet length past the end asks for more; a huge one is refused. */
	put_le32(f.b + 16, (uint32_t)f.n);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), -ENOBUFS);
	put_le32(f.b + 16, 0xffffffffu);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), -E2BIG);
	put_le32(f.b + 16, 4);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), -EBADMSG);
	put_le32(f.b + 16, C4GH_PACKET_FIXED + 40 + C4GH_PACKET_MAC);
	/* Another packet encryption method: skipped, so nothing is for us. */
	put_le32(f.b + 20, 1);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), -ENOKEY);
	put_le32(f.b + 20, 0);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), 0);
	c4gh_header_free(h);
	/* Not a Crypt4GH file at all, and a short one. */
	assert_int_equal(c4gh_header_parse((const uint8_t *)"plain text file\n", 16, k.sk[0], &h),
			 -EBADMSG);
	assert_int_equal(c4gh_header_parse((const uint8_t *)"crypt", 5, k.sk[0], &h), -ENOBUFS);
	free(f.b);
	free(plain);
	keys_free(&k);
}

/* Packets the header must refuse once opened: unknown types and methods, two edit lists, mixed
 * methods, too many keys. Built with c4gh_packet_seal. */
static void test_header_packets_refused(void **state)
{
	struct keys k = keys3();
	crypto_key *w = NULL;
	uint8_t wpk[32], p0[48], p1[48], ed[24], buf[4096];
	c4gh_header *h = NULL;
	size_t off;

	(void)state;
	assert_int_equal(c4gh_keypair_generate(&w, wpk), 0);
	memset(p0, 7, sizeof(p0));
	put_le32(p0, 0);
	put_le32(p0 + 4, 0);
	memcpy(p1, p0, sizeof(p1));
	put_le32(p1 + 4, 1);
	put_le32(ed, 1);
	put_le32(ed + 4, 2);
	put_le64(ed + 8, 1);
	put_le64(ed + 16, 2);
#define HDR(n) (memcpy(buf, C4GH_MAGIC, 8), put_le32(buf + 8, 1), put_le32(buf + 12, n), off = 16)
#define PKT(p, l) (assert_int_equal(c4gh_packet_seal(w, k.pk[0], NULL, p, l, buf + off), 0), \
		   off += C4GH_PACKET_FIXED + (l) + C4GH_PACKET_MAC)
	HDR(2);
	PKT(p0, 40);
	PKT(p1, 48);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), -ENOTSUP);   /* mixed */
	HDR(3);
	PKT(p0, 40);
	PKT(ed, 24);
	PKT(ed, 24);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), -EBADMSG);   /* two lists */
	put_le32(ed + 4, 3);
	HDR(2);
	PKT(p0, 40);
	PKT(ed, 24);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), -EBADMSG);   /* list cut */
	put_le32(ed + 4, C4GH_EDITS_MAX + 1);
	HDR(2);
	PKT(p0, 40);
	PKT(ed, 24);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), -E2BIG);
	put_le32(ed, 9);
	HDR(2);
	PKT(p0, 40);
	PKT(ed, 24);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), -ENOTSUP);   /* type 9 */
	put_le32(p1 + 4, 5);
	HDR(1);
	PKT(p1, 48);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), -ENOTSUP);   /* method 5 */
	HDR(1);
	PKT(p0, 39);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), -EBADMSG);   /* key cut */
	HDR(C4GH_DATA_KEYS_MAX + 1);
	for (unsigned i = 0; i <= C4GH_DATA_KEYS_MAX; i++)
		PKT(p0, 40);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), -E2BIG);
	/* Padding after the fields is allowed (spec 3.2.1). */
	HDR(1);
	PKT(p0, 48);
	assert_int_equal(c4gh_header_parse(buf, off, k.sk[0], &h), 0);
	assert_int_equal(c4gh_header_keys(h), 1);
	c4gh_header_free(h);
#undef HDR
#undef PKT
	crypto_key_free(w);
	keys_free(&k);
}

/* Data: cut, moved, swapped, or taken from another file. */
static void test_segments_tampered(void **state)
{
	struct keys k = keys3();
	const size_t size = 3 * 65536 + 100;
	uint8_t *plain = pattern(size, 5), *out = NULL;
	size_t n, hl;

	(void)state;
	for (int m = 0; m < 2; m++) {
		struct file f = make_file(k.pk, 1, plain, size, (enum c4gh_method)m, 42, NULL, 0);
		struct file g = make_file(k.pk, 1, plain, size, (enum c4gh_method)m, 42, NULL, 0);
		struct file t = { 0 };
		c4gh_header *h = NULL;
		uint8_t tmp[C4GH_SEGMENT_SEALED];

		assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), 0);
		hl = c4gh_header_length(h);
		c4gh_header_free(h);
		/* A flipped bit anywhere in the data. */
		for (size_t i = hl; i < f.n; i += 9973) {
			f.b[i] ^= 0x10;
			assert_int_equal(decode(&f, k.sk[0], &out, &n), -EBADMSG);
			f.b[i] ^= 0x10;
		}
		/* Cut inside a segment, for either method. */
		for (size_t cut = hl + 1; cut < f.n; cut += 65564 / 2 + 7) {
			struct file c = { f.b, cut };

			if ((cut - hl) % C4GH_SEGMENT_SEALED == 0)
				continue;
			assert_int_equal(decode(&c, k.sk[0], &out, &n), -EBADMSG);
		}
		/* A segment of another file (another data key): refused by both. */
		memcpy(tmp, f.b + hl + C4GH_SEGMENT_SEALED, C4GH_SEGMENT_SEALED);
		memcpy(f.b + hl + C4GH_SEGMENT_SEALED, g.b + hl + C4GH_SEGMENT_SEALED,
		       C4GH_SEGMENT_SEALED);
		assert_int_equal(decode(&f, k.sk[0], &out, &n), -EBADMSG);
		memcpy(f.b + hl + C4GH_SEGMENT_SEALED, tmp, C4GH_SEGMENT_SEALED);
		/* Segments 0 and 1 swapped; then the file cut at a segment boundary. The format
		 * without AEAD cannot see either (spec 5.4): only the AEAD method refuses them. */
		file_add(&t, f.b, f.n);
		memcpy(t.b + hl, f.b + hl + C4GH_SEGMENT_SEALED, C4GH_SEGMENT_SEALED);
		memcpy(t.b + hl + C4GH_SEGMENT_SEALED, f.b + hl, C4GH_SEGMENT_SEALED);
		if (m == C4GH_CHACHA20_IETF_POLY1305_AEAD) {
			assert_int_equal(decode(&t, k.sk[0], &out, &n), -EBADMSG);
		} else {
			assert_int_equal(decode(&t, k.sk[0], &out, &n), 0);
			assert_memory_not_equal(out, plain, 65536);
			free(out);
		}
		t.n = hl + 2 * C4GH_SEGMENT_SEALED;
		memcpy(t.b, f.b, t.n);
		if (m == C4GH_CHACHA20_IETF_POLY1305_AEAD) {
			assert_int_equal(decode(&t, k.sk[0], &out, &n), -EBADMSG);
		} else {
			assert_int_equal(decode(&t, k.sk[0], &out, &n), 0);
			assert_int_equal(n, 2 * 65536);
			free(out);
		}
		/* The last (short) segment dropped: AEAD sees the missing end too. */
		if (m == C4GH_CHACHA20_IETF_POLY1305_AEAD) {
			t.n = hl + 3 * C4GH_SEGMENT_SEALED;
			assert_int_equal(decode(&t, k.sk[0], &out, &n), -EBADMSG);
		}
		/* And the original still decodes. */
		assert_int_equal(decode(&f, k.sk[0], &out, &n), 0);
		assert_int_equal(n, size);
		assert_memory_equal(out, plain, size);
		free(out);
		free(t.b);
		free(f.b);
		free(g.b);
	}
	free(plain);
	keys_free(&k);
}

/* The decoder stops at the first bad segment and gives nothing of it. */
static void test_decoder_sticky(void **state)
{
	struct keys k = keys3();
	uint8_t *plain = pattern(200000, 2), *out = malloc(200000);
	struct file f = make_file(k.pk, 1, plain, 200000, C4GH_CHACHA20_IETF_POLY1305, 0, NULL, 0);
	char path[] = "/tmp/test_crypt4gh.XXXXXX";
	int fd = mkstemp(path);
	c4gh_header *h = NULL;
	c4gh_decoder *d = NULL;

	size_t hl;

	(void)state;
	unlink(path);
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), 0);
	hl = c4gh_header_length(h);
	f.b[hl + C4GH_SEGMENT_SEALED + 100] ^= 1;
	assert_int_equal(pwrite_all(fd, f.b, f.n, 0), 0);
	assert_int_equal(c4gh_decoder_new(h, fd, f.n, &d), 0);
	assert_int_equal(c4gh_decoder_size(d), 200000);
	assert_int_equal(c4gh_decoder_read(d, out, 65536), 65536);
	assert_memory_equal(out, plain, 65536);
	memset(out, 0xAA, 65536);
	assert_int_equal(c4gh_decoder_read(d, out, 65536), -EBADMSG);
	for (size_t i = 0; i < 65536; i++)
		assert_int_equal(out[i], 0);
	assert_int_equal(c4gh_decoder_read(d, out, 10), -EBADMSG);
	/* The file shrinking under the decoder. */
	c4gh_decoder_free(d);
	f.b[hl + C4GH_SEGMENT_SEALED + 100] ^= 1;
	h = NULL;
	assert_int_equal(c4gh_header_parse(f.b, f.n, k.sk[0], &h), 0);
	assert_int_equal(pwrite_all(fd, f.b, f.n, 0), 0);
	assert_int_equal(c4gh_decoder_new(h, fd, f.n, &d), 0);
	assert_int_equal(ftruncate(fd, (off_t)(f.n - 1000)), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(c4gh_decoder_read(d, out, 65536), 65536);
	assert_int_equal(c4gh_decoder_read(d, out, 65536), -ENODATA);
	c4gh_decoder_free(d);
	close(fd);
	free(out);
	free(f.b);
	free(plain);
	keys_free(&k);
}

/* The encoder's files decode; several data keys in one header (spec 3.2.3) are each tried. */
static void test_encoder_and_two_keys(void **state)
{
	struct keys k = keys3();
	uint8_t *plain = pattern(140000, 4), *hdr = NULL, *out;
	uint8_t seg[C4GH_SEGMENT_SEALED];
	c4gh_encoder *e = NULL;
	struct file f = { 0 };
	size_t hl, n;

	(void)state;
	assert_int_equal(c4gh_encoder_new((const uint8_t (*)[32])k.pk, 2, &e, &hdr, &hl), 0);
	file_add(&f, hdr, hl);
	free(hdr);
	for (size_t off = 0; off < 140000; off += C4GH_SEGMENT) {
		size_t l = MIN((size_t)C4GH_SEGMENT, 140000 - off);

		assert_int_equal(c4gh_encoder_segment(e, plain + off, l, seg), 0);
		file_add(&f, seg, l + C4GH_SEGMENT_OVERHEAD);
	}
	c4gh_encoder_free(e);
	assert_int_equal(decode(&f, k.sk[1], &out, &n), 0);
	assert_int_equal(n, 140000);
	assert_memory_equal(out, plain, n);
	free(out);
	free(f.b);

	/* Two data keys: segment 0 under the first, 1 and 2 under the second. */
	{
		crypto_key *w = NULL, *dk[2];
		uint8_t wpk[32], p[2][40], buf[512];
		size_t off = 16;

		assert_int_equal(c4gh_keypair_generate(&w, wpk), 0);
		memcpy(buf, C4GH_MAGIC, 8);
		put_le32(buf + 8, 1);
		put_le32(buf + 12, 2);
		for (int i = 0; i < 2; i++) {
			assert_int_equal(crypto_key_generate(&dk[i]), 0);
			put_le32(p[i], 0);
			put_le32(p[i] + 4, 0);
			memcpy(p[i] + 8, crypto_key_bytes(dk[i]), 32);
			assert_int_equal(c4gh_packet_seal(w, k.pk[0], NULL, p[i], 40, buf + off), 0);
			off += C4GH_PACKET_FIXED + 40 + C4GH_PACKET_MAC;
		}
		f = (struct file){ 0 };
		file_add(&f, buf, off);
		for (size_t o = 0, i = 0; o < 140000; o += C4GH_SEGMENT, i++) {
			size_t l = MIN((size_t)C4GH_SEGMENT, 140000 - o);

			assert_int_equal(c4gh_segment_seal(dk[i ? 1 : 0], 0, 0, NULL, plain + o, l,
							   seg), 0);
			file_add(&f, seg, l + C4GH_SEGMENT_OVERHEAD);
		}
		assert_int_equal(decode(&f, k.sk[0], &out, &n), 0);
		assert_memory_equal(out, plain, 140000);
		free(out);
		free(f.b);
		crypto_key_free(dk[0]);
		crypto_key_free(dk[1]);
		crypto_key_free(w);
	}
	free(plain);
	keys_free(&k);
}

/* ---- Key files ----------------------------------------------------------------------------- */

static void test_pubkey_file(void **state)
{
	uint8_t pk[32], got[32];
	char text[C4GH_PUBKEY_TEXT_MAX], fp[65];
	static const char crlf[] = "\r\n-----BEGIN CRYPT4GH PUBLIC KEY-----\r\n"
				   "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\r\n"
				   "-----END CRYPT4GH PUBLIC KEY-----\r\n";

	(void)state;
	unhex(ALICE_PK, pk, 32);
	c4gh_pubkey_format(pk, text);
	assert_string_equal(text, "-----BEGIN CRYPT4GH PUBLIC KEY-----\n"
				  "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
				  "-----END CRYPT4GH PUBLIC KEY-----\n");
	assert_int_equal(c4gh_pubkey_parse(text, strlen(text), got), 0);
	assert_memory_equal(got, pk, 32);
	assert_int_equal(c4gh_pubkey_parse(crlf, strlen(crlf), got), 0);
	assert_memory_equal(got, pk, 32);
	c4gh_fingerprint(pk, fp);
	assert_int_equal(strlen(fp), 64);
	/* Wrong armour, wrong length, not base64. */
	text[12] = 'X';
	assert_int_equal(c4gh_pubkey_parse(text, strlen(text), got), -EBADMSG);
	assert_int_equal(c4gh_pubkey_parse("-----BEGIN CRYPT4GH PUBLIC KEY-----\nAAAA\n"
					   "-----END CRYPT4GH PUBLIC KEY-----\n", 74, got),
			 -EBADMSG);
	assert_int_equal(c4gh_pubkey_parse("-----BEGIN CRYPT4GH PUBLIC KEY-----\n!!!!\n"
					   "-----END CRYPT4GH PUBLIC KEY-----\n", 74, got),
			 -EBADMSG);
}

static void test_seckey_file(void **state)
{
	crypto_secret *pass = secret("correct horse"), *bad = secret("wrong horse");
	crypto_key *sk = NULL, *got = NULL;
	uint8_t pk[32], pk2[32];
	char *text = NULL;
	size_t len;

	(void)state;
	assert_int_equal(c4gh_keypair_generate(&sk, pk), 0);
	/* Protected with scrypt. */
	assert_int_equal(c4gh_seckey_format(sk, pass, "test key", &text, &len), 0);
	assert_true(c4gh_seckey_encrypted(text, len));
	assert_int_equal(c4gh_seckey_parse(text, len, NULL, &got), -ENOKEY);
	assert_int_equal(c4gh_seckey_parse(text, len, bad, &got), -EKEYREJECTED);
	assert_int_equal(c4gh_seckey_parse(text, len, pass, &got), 0);
	c4gh_public_key(got, pk2);
	assert_memory_equal(pk, pk2, 32);
	crypto_key_free(got);
	got = NULL;
	/* Every base64 character changed: never the key, never a crash. */
	for (size_t i = 37; i < len - 36; i += 3) {
		char c = text[i];
		int r;

		if (c == '\n' || c == '=')
			continue;
		text[i] = c == 'A' ? 'B' : 'A';
		r = c4gh_seckey_parse(text, len, pass, &got);
		assert_true(r == -EBADMSG || r == -EKEYREJECTED || r == -ENOTSUP || r == 0);
		if (r == 0) {
			/* Only the comment may change without harm. */
			c4gh_public_key(got, pk2);
			assert_memory_equal(pk, pk2, 32);
			crypto_key_free(got);
			got = NULL;
		}
		text[i] = c;
	}
	sodium_free(text);
	/* Unprotected. */
	assert_int_equal(c4gh_seckey_format(sk, NULL, NULL, &text, &len), 0);
	assert_false(c4gh_seckey_encrypted(text, len));
	assert_int_equal(c4gh_seckey_parse(text, len, NULL, &got), 0);
	c4gh_public_key(got, pk2);
	assert_memory_equal(pk, pk2, 32);
	crypto_key_free(got);
	sodium_free(text);
	/* A public key is not a private key. */
	{
		char pub[C4GH_PUBKEY_TEXT_MAX];

		c4gh_pubkey_format(pk, pub);
		assert_int_equal(c4gh_seckey_parse(pub, strlen(pub), pass, &got), -EBADMSG);
	}
	crypto_key_free(sk);
	crypto_secret_free(pass);
	crypto_secret_free(bad);
}

/* The one base64 decoder of every key text (common/base64.c): canonical standard base64 only. */
static void test_base64_canonical(void **state)
{
	uint8_t out[8];
	size_t n = 99;

	(void)state;
	assert_int_equal(base64_decode_canonical("aGVsbG8=", 8, NULL, out, sizeof(out), &n), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(out, "hello", 5);
	/* Ignored characters anywhere, when asked for. */
	assert_int_equal(base64_decode_canonical(" aGV\nsb\r\nG8= \n", 14, " \t\r\n", out,
						 sizeof(out), &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(base64_decode_canonical("aGV\nsbG8=", 9, NULL, out, sizeof(out), &n),
			 -EBADMSG);
	/* Other texts for the same bytes: '/' as a byte from 0x80 up (libsodium 1.0.18 reads it
	 * so); and what libsodium refuses itself: the unused bits of the last character set ('9'
	 * for '8'), no padding, padding twice. */
	n = 99;
	assert_int_equal(base64_decode_canonical("aGVsbG9=", 8, NULL, out, sizeof(out), &n),
			 -EBADMSG);
	assert_int_equal(n, 99);
	assert_memory_equal(out, "\0\0\0\0\0", 5);   /* wiped */
	assert_int_equal(base64_decode_canonical("P/8=", 4, NULL, out, sizeof(out), &n), 0);
	assert_int_equal(base64_decode_canonical("P\x80" "8=", 4, NULL, out, sizeof(out), &n),
			 -EBADMSG);
	assert_int_equal(base64_decode_canonical("P\xff" "8=", 4, NULL, out, sizeof(out), &n),
			 -EBADMSG);
	assert_int_equal(base64_decode_canonical("aGVsbG8", 7, NULL, out, sizeof(out), &n),
			 -EBADMSG);
	assert_int_equal(base64_decode_canonical("aGVsbG8==", 9, NULL, out, sizeof(out), &n),
			 -EBADMSG);
	/* Not base64, too long for out, a NUL inside. */
	assert_int_equal(base64_decode_canonical("!!!!", 4, NULL, out, sizeof(out), &n), -EBADMSG);
	assert_int_equal(base64_decode_canonical("aGVsbG8gd29ybGQ=", 16, NULL, out, sizeof(out),
						 &n), -EBADMSG);
	assert_int_equal(base64_decode_canonical("aGVs\0bG8=", 9, " ", out, sizeof(out), &n),
			 -EBADMSG);
	assert_int_equal(base64_decode_canonical("", 0, NULL, out, sizeof(out), &n), 0);
	assert_int_equal(n, 0);
}

/* The last base64 character of an armoured text before its padding, with an unused bit set
 * (libsodium 1.0.18 refuses it too; a decoder that did not would read the same bytes). */
static void set_unused_bit(char *text)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *pad = strchr(text, '=');

	assert_non_null(pad);
	assert_int_equal(pad[-1] != '\n', 1);
	pad[-1] = alphabet[(strchr(alphabet, pad[-1]) - alphabet) | 1];
}

/* An OpenSSH ed25519 key (ssh-keygen -t ed25519 -N ''), used by the canonical-text and OpenSSH
 * tests. */
static const char openssh_key[] =
	"-----BEGIN OPENSSH PRIVATE KEY-----\n"
	"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
	"QyNTUxOQAAACBsvCVxHTAXB2PMuEsiGCRxm3mSUJcaTAAZoMcrk44vdgAAAIgeifW1Hon1\n"
	"tQAAAAtzc2gtZWQyNTUxOQAAACBsvCVxHTAXB2PMuEsiGCRxm3mSUJcaTAAZoMcrk44vdg\n"
	"AAAEBd/j7dBS4SyH0o2VNQpEcwW0S5/qWWu2cxLiYGtKLnOWy8JXEdMBcHY8y4SyIYJHGb\n"
	"eZJQlxpMABmgxyuTji92AAAAA2thdAEC\n"
	"-----END OPENSSH PRIVATE KEY-----\n";

/* A key file is read only in canonical base64: another text for the same key (a byte from 0x80
 * up for '/', an unused bit set in the last character) is refused, public and private,
 * Crypt4GH and OpenSSH. Before, libsodium's decoder alone took the first for the same key. Line
 * breaks and spaces inside the base64 stay allowed (OpenSSH wraps at 70 columns). */
static void test_key_text_canonical(void **state)
{
	static const char pub[] = "-----BEGIN CRYPT4GH PUBLIC KEY-----\n"
				  "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
				  "-----END CRYPT4GH PUBLIC KEY-----\n";
	static const char wrapped[] = "-----BEGIN CRYPT4GH PUBLIC KEY-----\n"
				      "hSDwCYkwp1R0i33ctD73\n Wg2/Og0mOBr066SpjqqbTmo=\n"
				      "-----END CRYPT4GH PUBLIC KEY-----\n";
	uint8_t pk[32], want[32];
	crypto_key *sk = NULL, *got = NULL;
	char t[sizeof(openssh_key)], *text = NULL;
	size_t len;

	(void)state;
	unhex(ALICE_PK, want, 32);
	memcpy(t, pub, sizeof(pub));
	*strchr(t, '/') = (char)0x80;
	assert_int_equal(c4gh_pubkey_parse(t, strlen(t), pk), -EBADMSG);
	memcpy(t, pub, sizeof(pub));
	set_unused_bit(t);
	assert_int_equal(c4gh_pubkey_parse(t, strlen(t), pk), -EBADMSG);
	/* Wrapped: still the key. */
	assert_int_equal(c4gh_pubkey_parse(wrapped, strlen(wrapped), pk), 0);
	assert_memory_equal(pk, want, 32);

	memcpy(t, openssh_key, sizeof(openssh_key));
	*strchr(t, '/') = (char)0x80;
	assert_int_equal(c4gh_seckey_parse(t, strlen(t), NULL, &got), -EBADMSG);
	assert_null(got);
	memcpy(t, openssh_key, sizeof(openssh_key));
	*strchr(t, '/') = (char)0xff;
	assert_int_equal(c4gh_seckey_parse(t, strlen(t), NULL, &got), -EBADMSG);

	/* A Crypt4GH private key (53 bytes: one '=' of padding, two unused bits). */
	assert_int_equal(c4gh_keypair_generate(&sk, pk), 0);
	assert_int_equal(c4gh_seckey_format(sk, NULL, NULL, &text, &len), 0);
	assert_int_equal(c4gh_seckey_parse(text, len, NULL, &got), 0);
	crypto_key_free(got);
	got = NULL;
	set_unused_bit(text);
	assert_int_equal(c4gh_seckey_parse(text, len, NULL, &got), -EBADMSG);
	assert_null(got);
	sodium_free(text);
	crypto_key_free(sk);
}

/* An OpenSSH ed25519 key (ssh-keygen -t ed25519 -N ''): its X25519 form's public key as
 * python3-cryptography computes it (SHA-512 of the seed, clamped, times the base point). */
static void test_seckey_openssh(void **state)
{
	uint8_t want[32], pk[32];
	crypto_key *sk = NULL;
	char *bad = strdup(openssh_key);

	(void)state;
	unhex("59938934d1484f2d199f2ed46314fe4df800cdf542626698222b21de84114354", want, 32);
	assert_false(c4gh_seckey_encrypted(openssh_key, strlen(openssh_key)));
	assert_int_equal(c4gh_seckey_parse(openssh_key, strlen(openssh_key), NULL, &sk), 0);
	c4gh_public_key(sk, pk);
	assert_memory_equal(pk, want, 32);
	crypto_key_free(sk);
	/* The check words differ ("HonX" for "Hon1"): refused. */
	*strstr(bad, "Hon1") = 'X';
	assert_int_equal(c4gh_seckey_parse(bad, strlen(bad), NULL, &sk), -EBADMSG);
	free(bad);
}

/* ---- bcrypt_pbkdf and the key files it protects ------------------------------------------- */

/* bcrypt_pbkdf against python3-bcrypt's bcrypt.kdf (an independent implementation), at the
 * output lengths that interleave blocks differently (1, 32, 33, 48, 64, 100 bytes). */
static void test_bcrypt_pbkdf_kat(void **state)
{
	static const struct {
		const char *pass, *salt;
		uint32_t rounds;
		size_t len;
		const char *want;
	} v[] = {
		{ "70617373776f7264", "73616c74", 4, 32,
		  "5bbf0cc293587f1c3635555c27796598d47e579071bf427e9d8fbe842aba34d9" },
		{ "636f727265637420686f727365", "000102030405060708090a0b0c0d0e0f", 16, 48,
		  "6bd628cd9202c5d0cb3e47dc1332be0162d3d4262dac8dac9f00998434479f36930c217fd05e33a7"
		  "e77e207f680659d2" },
		{ "70", "73", 1, 1, "ca" },
		{ "70617373706872617365", "4e61436c", 2, 64,
		  "12f2fd20308fd359bb0de2bbda58f7f77db296cf1fe0ff27ea78898123c1f572c07109f1957b1fd7"
		  "81da8f9f86916407df8658e2d79626aa489f92091cf67de7" },
		{ "c3a974c3a9", "78", 3, 33,
		  "75e744ab514b8b8ab90997d0396deb69285912ccb826df6f76536503699bd61673" },
	};
	/* 100 'x', salt 0..255 twice, 1 round, 100 bytes. */
	static const char long_want[] =
		"3317a19e5128cff5cb5f660347ba76076273f60bb74df9b0987e55c972fbea63ff7e11e305c90fa3"
		"4aaa66c9a19fb418f26a753d715cee74c034d67978545f2e50e3c4b2ee8d31786d1f92b4448b0a34"
		"6edc2dfab2efa73aa451c047941f1748e57e8a86";
	uint8_t pass[64], salt[512], want[128], out[128];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t pl = unhex(v[i].pass, pass, sizeof(pass));
		size_t sl = unhex(v[i].salt, salt, sizeof(salt));

		unhex(v[i].want, want, sizeof(want));
		memset(out, 0xee, sizeof(out));
		assert_int_equal(crypto_bcrypt_pbkdf(pass, pl, salt, sl, v[i].rounds, out, v[i].len),
				 0);
		assert_memory_equal(out, want, v[i].len);
		assert_int_equal(out[v[i].len], 0xee);  /* not a byte more */
	}
	memset(pass, 'x', sizeof(pass));
	{
		uint8_t longpass[100];

		memset(longpass, 'x', sizeof(longpass));
		for (size_t i = 0; i < 512; i++)
			salt[i] = (uint8_t)i;
		unhex(long_want, want, sizeof(want));
		assert_int_equal(crypto_bcrypt_pbkdf(longpass, 100, salt, 512, 1, out, 100), 0);
		assert_memory_equal(out, want, 100);
	}
	/* Parameters refused, out untouched. */
	memset(out, 0xee, sizeof(out));
	assert_int_equal(crypto_bcrypt_pbkdf(pass, 4, salt, 4, 0, out, 32), -EINVAL);
	assert_int_equal(crypto_bcrypt_pbkdf(pass, 0, salt, 4, 1, out, 32), -EINVAL);
	assert_int_equal(crypto_bcrypt_pbkdf(pass, 4, salt, 0, 1, out, 32), -EINVAL);
	assert_int_equal(crypto_bcrypt_pbkdf(pass, 4, salt, 4, 1, out, 0), -EINVAL);
	assert_int_equal(crypto_bcrypt_pbkdf(pass, 4, salt, 4, CRYPTO_BCRYPT_ROUNDS_MAX + 1, out,
					     32), -E2BIG);
	assert_int_equal(crypto_bcrypt_pbkdf(pass, 4, salt, 4, UINT32_MAX, out, 32), -E2BIG);
	assert_int_equal(crypto_bcrypt_pbkdf(pass, 4, salt, CRYPTO_BCRYPT_SALT_MAX + 1, 1, out, 32),
			 -E2BIG);
	assert_int_equal(crypto_bcrypt_pbkdf(pass, 4, salt, 4, 1, out, CRYPTO_BCRYPT_OUT_MAX + 1),
			 -E2BIG);
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 0xee);
}

/* The base64 body of an armoured key decoded into raw; its length. */
static size_t unarmour(const char *text, uint8_t *raw, size_t cap)
{
	const char *b = strchr(text, '\n') + 1, *e = strstr(b, "-----END");
	size_t got = 0;

	assert_int_equal(sodium_base642bin(raw, cap, b, (size_t)(e - b), "\n", &got, NULL,
					   sodium_base64_VARIANT_ORIGINAL), 0);
	return got;
}

/* raw armoured as kind ("CRYPT4GH" or "OPENSSH") private key; free() it. */
static char *rearmour(const char *kind, const uint8_t *raw, size_t n)
{
	size_t bl = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(bl), *text = malloc(bl + 128);

	assert_non_null(b64);
	assert_non_null(text);
	sodium_bin2base64(b64, bl, raw, n, sodium_base64_VARIANT_ORIGINAL);
	snprintf(text, bl + 128, "-----BEGIN %s PRIVATE KEY-----\n%s\n-----END %s PRIVATE KEY-----\n",
		 kind, b64, kind);
	free(b64);
	return text;
}

/* Parse raw (re-armoured as kind) with pass; the result, the key's public half in ret_pk. */
static int parse_raw(const char *kind, const uint8_t *raw, size_t n, const crypto_secret *pass,
		     uint8_t ret_pk[32])
{
	char *text = rearmour(kind, raw, n);
	crypto_key *sk = NULL;
	int r = c4gh_seckey_parse(text, strlen(text), pass, &sk);

	assert_true((r == 0) == (sk != NULL));
	if (sk && ret_pk)
		c4gh_public_key(sk, ret_pk);
	crypto_key_free(sk);
	free(text);
	return r;
}

/* A Crypt4GH private key protected with bcrypt (4 rounds), written by crypt4gh_ref.py (python3-
 * bcrypt's bcrypt.kdf, python3-cryptography's ChaCha20Poly1305) around RFC 7748's Alice secret,
 * passphrase "correct horse". */
static const char c4gh_bcrypt_key[] =
	"-----BEGIN CRYPT4GH PRIVATE KEY-----\n"
	"YzRnaC12MQAGYmNyeXB0ABQAAAAEfJcV+3WJC5DQFsDbptrS7wARY2hhY2hhMjBfcG9seTEzMDUAPGUOl3NOR00K"
	"vLe51oM+FIAs1phggILsKfLTUNebsld89eDGmB2GtqdI2/JJKF9I/gYZD4nBmEQkjZMqDgAXbWFkZSBieSBjcnlw"
	"dDRnaF9yZWYucHk=\n"
	"-----END CRYPT4GH PRIVATE KEY-----\n";
/* Its layout: "c4gh-v1", kdf name at 7 (2 + 6), options at 15 (2 + rounds 4 + salt 16),
 * cipher at 37 (2 + 17), blob at 56 (2 + 60), comment after. */
#define C4K_KDF 9
#define C4K_ROUNDS 17
#define C4K_SALT_LEN 15
#define C4K_BLOB_END 118

static void test_seckey_bcrypt(void **state)
{
	crypto_secret *pass = secret("correct horse"), *bad = secret("correct horsE");
	uint8_t raw[512], m[512], want[32], pk[32];
	size_t n;

	(void)state;
	unhex(ALICE_PK, want, 32);
	assert_true(c4gh_seckey_encrypted(c4gh_bcrypt_key, strlen(c4gh_bcrypt_key)));
	n = unarmour(c4gh_bcrypt_key, raw, sizeof(raw));
	assert_true(n > C4K_BLOB_END);
	assert_int_equal(parse_raw("CRYPT4GH", raw, n, pass, pk), 0);
	assert_memory_equal(pk, want, 32);
	assert_int_equal(parse_raw("CRYPT4GH", raw, n, NULL, NULL), -ENOKEY);
	assert_int_equal(parse_raw("CRYPT4GH", raw, n, bad, NULL), -EKEYREJECTED);
	/* Rounds: 0 and absurd refused before any work (with or without a passphrase); another
	 * count gives another key-encryption key. */
	memcpy(m, raw, n);
	put_be32(m + C4K_ROUNDS, 0);
	assert_int_equal(parse_raw("CRYPT4GH", m, n, pass, NULL), -EBADMSG);
	put_be32(m + C4K_ROUNDS, UINT32_MAX);
	assert_int_equal(parse_raw("CRYPT4GH", m, n, pass, NULL), -E2BIG);
	assert_int_equal(parse_raw("CRYPT4GH", m, n, NULL, NULL), -E2BIG);
	put_be32(m + C4K_ROUNDS, CRYPTO_BCRYPT_ROUNDS_MAX + 1);
	assert_int_equal(parse_raw("CRYPT4GH", m, n, pass, NULL), -E2BIG);
	put_be32(m + C4K_ROUNDS, 5);
	assert_int_equal(parse_raw("CRYPT4GH", m, n, pass, NULL), -EKEYREJECTED);
	/* A salt bit, the nonce, the ciphertext, the MAC: the passphrase no longer opens it. */
	for (size_t at = C4K_ROUNDS + 4; at < C4K_BLOB_END; at += 7) {
		if (at >= 37 && at < 58)
			continue;  /* the cipher name and the blob's length: below */
		memcpy(m, raw, n);
		m[at] ^= 0x20;
		assert_int_equal(parse_raw("CRYPT4GH", m, n, pass, NULL), -EKEYREJECTED);
	}
	/* An unknown kdf; an empty salt (options of 4 bytes: the lengths shift, so rebuilt). */
	memcpy(m, raw, n);
	m[C4K_KDF + 5] = 'x';  /* "bcrypx" */
	assert_int_equal(parse_raw("CRYPT4GH", m, n, pass, NULL), -ENOTSUP);
	memcpy(m, raw, C4K_ROUNDS + 4);
	m[C4K_SALT_LEN + 1] = 4;
	memcpy(m + C4K_ROUNDS + 4, raw + C4K_ROUNDS + 20, n - (C4K_ROUNDS + 20));
	assert_int_equal(parse_raw("CRYPT4GH", m, n - 16, pass, NULL), -EBADMSG);
	/* Cut anywhere up to the end of the encrypted key: malformed, never a key. */
	for (size_t cut = 0; cut < C4K_BLOB_END; cut++)
		assert_int_equal(parse_raw("CRYPT4GH", raw, cut, pass, NULL), -EBADMSG);
	crypto_secret_free(pass);
	crypto_secret_free(bad);
}

/* Passphrase-protected OpenSSH ed25519 keys made by ssh-keygen (-N 'correct horse' -a 1 -Z
 * CIPHER). Each want is the X25519 public key python3-cryptography derives from the same key
 * after OpenSSH itself removed the passphrase (ssh-keygen -p -N ''): the decryption and the
 * conversion are both checked against independent code. */
static const struct {
	const char *cipher, *want, *key;
	bool aead;
} ssh_keys[] = {
	{ "aes256-ctr", "c1bb82d9198f6c115fd6731c406d2a35f5c2c8c8a409bc9a7729a8da60c19c47",
	  "-----BEGIN OPENSSH PRIVATE KEY-----\n"
	  "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABBZ0B8+7Z\n"
	  "wgF4lWHV7KD4eOAAAAAQAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIH3jPWEc9XL9kgSC\n"
	  "SjfUICnp7NYVTIursF3F3KGN+Jo9AAAAkMAZIlrMBO3SU4go46j7tvw1ixXOe0vFQfzDEW\n"
	  "2yPDOukU0jKxH4Q+F2kh9g2fbmROwz2OBx97QK6lZJTc7IPhRMvO1tkE3eJ2212grt73+O\n"
	  "/wyMzoPIuy7nHT4JSAm9Mc+pT66o2f21CpcZQSfXmBbDNBUv4xHAv7hBc/kcK+1hmOS3I8\n"
	  "VR2tEuUGhaZXxtBw==\n"
	  "-----END OPENSSH PRIVATE KEY-----\n", false },
	{ "aes256-gcm@openssh.com",
	  "b2c1f976c42bef8a1b05b6791116cec0d101ea3387948447317441b55455dc2d",
	  "-----BEGIN OPENSSH PRIVATE KEY-----\n"
	  "b3BlbnNzaC1rZXktdjEAAAAAFmFlczI1Ni1nY21Ab3BlbnNzaC5jb20AAAAGYmNyeXB0AA\n"
	  "AAGAAAABA7nAei6aHzJyqKl+n3qZebAAAAAQAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAA\n"
	  "IPXnLlmOzYugLEBxeR9q3OifMxAHcAFcd1csKUq7oSKzAAAAkI6/GR9Djt04WV0xvulRaB\n"
	  "RnRywe9nbVMUXHg4jSaBXNDn+fo4TbABI74/dXkwlCJQN/U9kkCkN3ICdQoXu6T0JhR+Zt\n"
	  "u0CWaOonl+ElhWUFYHamhBtOfYK5t9Xi/x54pPNhJfymD05bE6oFV7junadjIuyu/4aJp1\n"
	  "vGESL0e+/sNS1QpylWp8PaGc/mEPUjlRaC8y4e1xp2414ByeU2BZ4=\n"
	  "-----END OPENSSH PRIVATE KEY-----\n", true },
	{ "chacha20-poly1305@openssh.com",
	  "3a7e1e0d6cbf4058cad65327196c7b83bfa5e5108d8384a9548ad35a02317666",
	  "-----BEGIN OPENSSH PRIVATE KEY-----\n"
	  "b3BlbnNzaC1rZXktdjEAAAAAHWNoYWNoYTIwLXBvbHkxMzA1QG9wZW5zc2guY29tAAAABm\n"
	  "JjcnlwdAAAABgAAAAQ6+bIqw6a2+G0JhGPWMCjFwAAAAEAAAABAAAAMwAAAAtzc2gtZWQy\n"
	  "NTUxOQAAACC3ve6LewiAQBu/fsYb6lmG4pz+TYlGRqYp9kscksM1UAAAAIjCPf+GlF+VQP\n"
	  "LXDQzyUkobll6EYHV71bn/ILJ8i4FtBMAqKTASGrXCsJpWGhBQ22E6yZU+aBQfVVNnCO8k\n"
	  "ynrHQm74OCbhCYGWKZA+EwJhmxF5Y8XzolzFqXEAHGdAImrJXBth/6jYJDYxRmLyhl1yn0\n"
	  "DkKXjDasssHtvscNvt1B0A3BGOv1jj0DQO4R6qXjM7FCT4/Vu4XA==\n"
	  "-----END OPENSSH PRIVATE KEY-----\n", true },
};

/* Where things are in a decoded OpenSSH key. */
struct ssh_layout {
	size_t cipher, kdf, rounds, priv, priv_len;
};

static void ssh_layout(const uint8_t *raw, size_t n, struct ssh_layout *l)
{
	size_t o = 15, pub_len;

	l->cipher = o + 4;
	o += 4 + get_be32(raw + o);
	l->kdf = o + 4;
	o += 4 + get_be32(raw + o);
	l->rounds = o + 4 + 4 + get_be32(raw + o + 4);  /* options: string salt, u32 rounds */
	o += 4 + get_be32(raw + o) + 4;                  /* ... and the key count */
	pub_len = get_be32(raw + o);
	o += 4 + pub_len;
	l->priv_len = get_be32(raw + o);
	l->priv = o + 4;
	assert_true(l->priv + l->priv_len <= n);
}

static void test_seckey_openssh_encrypted(void **state)
{
	crypto_secret *pass = secret("correct horse"), *bad = secret("correct horsE");
	uint8_t raw[1024], m[1024], want[32], pk[32];
	struct ssh_layout l;
	size_t n;

	(void)state;
	for (size_t k = 0; k < sizeof(ssh_keys) / sizeof(ssh_keys[0]); k++) {
		const char *key = ssh_keys[k].key;

		unhex(ssh_keys[k].want, want, 32);
		assert_true(c4gh_seckey_encrypted(key, strlen(key)));
		n = unarmour(key, raw, sizeof(raw));
		ssh_layout(raw, n, &l);
		assert_memory_equal(raw + l.cipher, ssh_keys[k].cipher, strlen(ssh_keys[k].cipher));
		assert_int_equal(parse_raw("OPENSSH", raw, n, pass, pk), 0);
		assert_memory_equal(pk, want, 32);
		assert_int_equal(parse_raw("OPENSSH", raw, n, NULL, NULL), -ENOKEY);
		assert_int_equal(parse_raw("OPENSSH", raw, n, bad, NULL), -EKEYREJECTED);
		/* The check words (the first 8 bytes of the private part) altered: with CTR the
		 * words then differ, with an AEAD cipher the tag fails: either way refused as a
		 * wrong passphrase would be. So is every 5th byte of the private part and tag. */
		for (size_t at = l.priv; at < n; at += at < l.priv + 8 ? 1 : 5) {
			int r;

			memcpy(m, raw, n);
			m[at] ^= 0x01;
			r = parse_raw("OPENSSH", m, n, pass, pk);
			if (at < l.priv + 8 || ssh_keys[k].aead) {
				assert_int_equal(r, -EKEYREJECTED);
				continue;
			}
			/* CTR past the check words: the flipped bit lands in the key (which then
			 * does not match its public key), the comment or the padding; never a
			 * different key accepted. */
			assert_true(r == -EBADMSG || r == -ENOTSUP || r == 0);
			if (r == 0)
				assert_memory_equal(pk, want, 32);
		}
		/* Rounds: 0, over the cap, absurd: refused before any work, passphrase or not. */
		memcpy(m, raw, n);
		put_be32(m + l.rounds, 0);
		assert_int_equal(parse_raw("OPENSSH", m, n, pass, NULL), -EBADMSG);
		put_be32(m + l.rounds, CRYPTO_BCRYPT_ROUNDS_MAX + 1);
		assert_int_equal(parse_raw("OPENSSH", m, n, pass, NULL), -E2BIG);
		put_be32(m + l.rounds, UINT32_MAX);
		assert_int_equal(parse_raw("OPENSSH", m, n, pass, NULL), -E2BIG);
		assert_int_equal(parse_raw("OPENSSH", m, n, NULL, NULL), -E2BIG);
		/* Another count, or another salt: another key, the passphrase does not open it. */
		put_be32(m + l.rounds, 2);
		assert_int_equal(parse_raw("OPENSSH", m, n, pass, NULL), -EKEYREJECTED);
		memcpy(m, raw, n);
		m[l.rounds - 1] ^= 0x80;
		assert_int_equal(parse_raw("OPENSSH", m, n, pass, NULL), -EKEYREJECTED);
		/* An unknown cipher and an unknown kdf. */
		memcpy(m, raw, n);
		m[l.cipher + 1] = 'X';
		assert_int_equal(parse_raw("OPENSSH", m, n, pass, NULL), -ENOTSUP);
		memcpy(m, raw, n);
		m[l.kdf + 5] = 'x';
		assert_int_equal(parse_raw("OPENSSH", m, n, pass, NULL), -ENOTSUP);
		/* Cut anywhere, or one byte too many: malformed, never a key. */
		for (size_t cut = 0; cut < n; cut++)
			assert_int_equal(parse_raw("OPENSSH", raw, cut, pass, NULL), -EBADMSG);
		memcpy(m, raw, n);
		m[n] = 0;
		assert_int_equal(parse_raw("OPENSSH", m, n + 1, pass, NULL), -EBADMSG);
	}
	crypto_secret_free(pass);
	crypto_secret_free(bad);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kat_shared_key),
		cmocka_unit_test(test_kat_segment_packet),
		cmocka_unit_test(test_roundtrip_sizes),
		cmocka_unit_test(test_edit_lists),
		cmocka_unit_test(test_header_every_byte),
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_header_packets_refused),
		cmocka_unit_test(test_segments_tampered),
		cmocka_unit_test(test_decoder_sticky),
		cmocka_unit_test(test_encoder_and_two_keys),
		cmocka_unit_test(test_pubkey_file),
		cmocka_unit_test(test_seckey_file),
		cmocka_unit_test(test_seckey_openssh),
		cmocka_unit_test(test_base64_canonical),
		cmocka_unit_test(test_key_text_canonical),
		cmocka_unit_test(test_bcrypt_pbkdf_kat),
		cmocka_unit_test(test_seckey_bcrypt),
		cmocka_unit_test(test_seckey_openssh_encrypted),
	};

	if (crypto_init() != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
