/* test_proto: the control protocol's decoders of outside input that live in common/ (proto.c),
 * without a daemon: the compact form of an import.stat batch (docs/PROTOCOL.md "Importing").
 * Vectors written by hand from the specification, round trips through the encoder, and one
 * refusal for every rule, each of which sets nothing. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"

#define NMAX 8u
#define PATH_MAX_BYTES 40u

/* The result of one proto_stat_unpack() call, with everything it may set filled with a sentinel
 * first, so that a refusal can be shown to set nothing. */
struct unpacked {
	char *buf;
	const char *paths[NMAX];
	struct stat sts[NMAX];
	size_t n;
};

static int unpack(const char *dir, const char *names, const char *stats64, struct unpacked *u)
{
	memset(u, 0xa5, sizeof(*u));
	err_clear();
	return proto_stat_unpack(dir, strlen(dir), names, strlen(names), stats64, strlen(stats64),
				 NMAX, PATH_MAX_BYTES, &u->buf, u->paths, u->sts, &u->n);
}

/* The refusal `want`, with a message, and nothing set. */
static void refused(int want, const char *dir, const char *names, const char *stats64)
{
	struct unpacked u, sentinel;
	int r = unpack(dir, names, stats64, &u);

	memset(&sentinel, 0xa5, sizeof(sentinel));
	if (r != want)
		fail_msg("dir \"%s\" names \"%s\" stats64 \"%s\": %d, not %d (%s)", dir, names,
			 stats64, r, want, err_detail());
	assert_true(err_detail()[0] != '\0');
	assert_memory_equal(&u, &sentinel, sizeof(u));
}

/* Standard padded base64 of n bytes (libsodium's encoder, not the project's). */
static char *b64(const uint8_t *p, size_t n)
{
	size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(cap);

	assert_non_null(s);
	sodium_bin2base64(s, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
	return s;
}

static void refused_bin(int want, const char *names, const uint8_t *p, size_t n)
{
	char *s = b64(p, n);

	refused(want, "d", names, s);
	free(s);
}

static int64_t ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* Two files, every byte worked out by hand from docs/PROTOCOL.md:
 *   a: dev 0x803, ino 1000, size 300, mode 0100644, mtime 1 s, ctime mtime + 5 ns
 *   b: dev 0x803, ino 999, size 0, mode 0100644, mtime 1 s - 2 ns, ctime = its mtime
 * record a: zigzag(2051) = 4102 -> 86 20; zigzag(1000) = 2000 -> d0 0f; 300 -> ac 02;
 *           zigzag(33188) = 66376 -> c8 86 04; zigzag(1e9) = 2e9 -> 80 a8 d6 b9 07; zigzag(5) -> 0a
 * record b: 00; zigzag(-1) = 1 -> 01; 00; 00; zigzag(-2) = 3 -> 03; 00
 * base64 of the 21 bytes, by groups of three:
 *   86 20 d0 -> hiDQ, 0f ac 02 -> D6wC, c8 86 04 -> yIYE, 80 a8 d6 -> gKjW, b9 07 0a -> uQcK,
 *   00 01 00 -> AAEA, 00 03 00 -> AAMA */
static void test_vector_by_hand(void **state)
{
	static const char text[] = "hiDQD6wCyIYEgKjWuQcKAAEAAAMA";
	struct unpacked u;
	const struct stat *sts[2];
	char *again;

	(void)state;
	assert_int_equal(unpack("dir/sub", "a/b", text, &u), 0);
	assert_int_equal(u.n, 2);
	assert_string_equal(u.paths[0], "dir/sub/a");
	assert_string_equal(u.paths[1], "dir/sub/b");
	assert_int_equal(u.sts[0].st_dev, 0x803);
	assert_int_equal(u.sts[0].st_ino, 1000);
	assert_int_equal(u.sts[0].st_size, 300);
	assert_int_equal(u.sts[0].st_mode, 0100644);
	assert_int_equal(u.sts[0].st_mtim.tv_sec, 1);
	assert_int_equal(u.sts[0].st_mtim.tv_nsec, 0);
	assert_int_equal(u.sts[0].st_ctim.tv_sec, 1);
	assert_int_equal(u.sts[0].st_ctim.tv_nsec, 5);
	assert_int_equal(u.sts[1].st_dev, 0x803);
	assert_int_equal(u.sts[1].st_ino, 999);
	assert_int_equal(u.sts[1].st_size, 0);
	assert_int_equal(u.sts[1].st_mode, 0100644);
	assert_int_equal(u.sts[1].st_mtim.tv_sec, 0);
	assert_int_equal(u.sts[1].st_mtim.tv_nsec, 999999998);
	assert_int_equal(ns(&u.sts[1].st_ctim), 999999998);
	/* And the encoder says the same of them. */
	sts[0] = &u.sts[0];
	sts[1] = &u.sts[1];
	again = proto_stats64(sts, 2);
	assert_non_null(again);
	assert_string_equal(again, text);
	free(again);
	free(u.buf);
}

/* One file in the root: dev 2^64 - 1 (0 - 1 modulo 2^64: zigzag 1), ino 0, size 0, mode 0,
 * mtime and ctime 1 ns before 1970 (zigzag(-1) = 1, then 0): 01 00 00 00 01 00 -> AQAAAAEA. */
static void test_vector_wrap_and_before_1970(void **state)
{
	struct unpacked u;
	const struct stat *sts[1];
	char *again;

	(void)state;
	assert_int_equal(unpack("", "x", "AQAAAAEA", &u), 0);
	assert_int_equal(u.n, 1);
	assert_string_equal(u.paths[0], "x");
	assert_true((uint64_t)u.sts[0].st_dev == UINT64_MAX);
	assert_int_equal(u.sts[0].st_ino, 0);
	assert_int_equal(u.sts[0].st_mode, 0);
	assert_int_equal(u.sts[0].st_mtim.tv_sec, -1);
	assert_int_equal(u.sts[0].st_mtim.tv_nsec, 999999999);
	assert_int_equal(u.sts[0].st_ctim.tv_sec, -1);
	assert_int_equal(u.sts[0].st_ctim.tv_nsec, 999999999);
	sts[0] = &u.sts[0];
	again = proto_stats64(sts, 1);
	assert_string_equal(again, "AQAAAAEA");
	free(again);
	free(u.buf);
}

/* Stats of every kind, extremes included, come back as they went, and the encoder's text is
 * the only one: decoding it and encoding again gives the same characters. */
static void test_round_trip(void **state)
{
	static const int64_t times[] = { INT64_MIN + 1000000000, -1, 0, 1, 999999999, 1000000000,
					  1765000000123456789, INT64_MAX };
	struct stat in[NMAX];
	const struct stat *p[NMAX];
	struct unpacked u;
	char names[NMAX * 4], *text, *again;
	size_t off = 0;

	(void)state;
	for (unsigned round = 0; round < 64; round++) {
		off = 0;
		for (unsigned i = 0; i < NMAX; i++) {
			uint64_t x = (uint64_t)round * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull;
			int64_t m = times[(round + i) % ARRAY_SIZE(times)];
			int64_t c = times[(round * 3 + i) % ARRAY_SIZE(times)];

			memset(&in[i], 0, sizeof(in[i]));
			in[i].st_dev = round % 2 ? (dev_t)x : 0x803;
			in[i].st_ino = round % 3 ? (ino_t)x : (ino_t)(1000 + i);
			in[i].st_size = round % 4 ? (off_t)(x >> 1) : (off_t)(i * 1000);
			in[i].st_mode = round % 5 ? (mode_t)(x >> 32) : (mode_t)(S_IFREG | 0644);
			in[i].st_mtim = (struct timespec){ (time_t)(m / 1000000000),
							   (long)(m % 1000000000) };
			if (in[i].st_mtim.tv_nsec < 0)
				in[i].st_mtim.tv_sec--, in[i].st_mtim.tv_nsec += 1000000000;
			in[i].st_ctim = (struct timespec){ (time_t)(c / 1000000000),
							   (long)(c % 1000000000) };
			if (in[i].st_ctim.tv_nsec < 0)
				in[i].st_ctim.tv_sec--, in[i].st_ctim.tv_nsec += 1000000000;
			p[i] = &in[i];
			off += (size_t)snprintf(names + off, sizeof(names) - off, "%sf%u", i ? "/" : "",
						i);
		}
		text = proto_stats64(p, NMAX);
		assert_non_null(text);
		assert_int_equal(unpack("", names, text, &u), 0);
		assert_int_equal(u.n, NMAX);
		for (unsigned i = 0; i < NMAX; i++) {
			assert_true(u.sts[i].st_dev == in[i].st_dev);
			assert_true(u.sts[i].st_ino == in[i].st_ino);
			assert_true(u.sts[i].st_size == in[i].st_size);
			assert_true(u.sts[i].st_mode == in[i].st_mode);
			assert_true(ns(&u.sts[i].st_mtim) == ns(&in[i].st_mtim));
			assert_true(ns(&u.sts[i].st_ctim) == ns(&in[i].st_ctim));
			assert_int_equal(u.sts[i].st_mtim.tv_nsec, in[i].st_mtim.tv_nsec);
			assert_int_equal(u.sts[i].st_ctim.tv_nsec, in[i].st_ctim.tv_nsec);
			p[i] = &u.sts[i];
		}
		again = proto_stats64(p, NMAX);
		assert_string_equal(again, text);
		free(again);
		free(text);
		free(u.buf);
	}
}

/* The shape of the batch: the names, the directory, the lengths. */
static void test_refused_shape(void **state)
{
	const char *ok1 = "AQAAAAEA";   /* one record (test_vector_wrap_and_before_1970) */
	char many[NMAX * 3 + 8], longname[PATH_MAX_BYTES + 2], text[256];
	size_t off = 0;

	(void)state;
	/* More names than max: too large, whatever the stats. */
	for (unsigned i = 0; i <= NMAX; i++)
		off += (size_t)snprintf(many + off, sizeof(many) - off, "%s%u", i ? "/" : "", i);
	refused(-E2BIG, "", many, ok1);
	/* An empty name: alone, first, last, between two. */
	refused(-EINVAL, "", "", ok1);
	refused(-EINVAL, "", "/a", "AQAAAAEAAQAAAAEA");
	refused(-EINVAL, "", "a/", "AQAAAAEAAQAAAAEA");
	refused(-EINVAL, "", "a//b", "AQAAAAEAAQAAAAEAAQAAAAEA");
	/* A path over path_max: the name alone, or with its directory; the directory alone. */
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	refused(-EINVAL, "", longname, ok1);
	longname[PATH_MAX_BYTES - 2] = '\0';   /* 38 bytes: with "d/" 40 holds, with "dd/" not */
	{
		struct unpacked u;

		assert_int_equal(unpack("d", longname, ok1, &u), 0);
		free(u.buf);
	}
	refused(-EINVAL, "dd", longname, ok1);
	memset(longname, 'd', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	refused(-EINVAL, longname, "a", ok1);
	/* No stats at all; more text than NMAX records of the longest kind could take. */
	refused(-EINVAL, "", "a", "");
	memset(text, 'A', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	refused(-EINVAL, "", "a", text);   /* 255 characters: more than 80 for one record */
	/* A NUL byte in any of the three (the lengths are given, the strings may hold one). */
	{
		struct unpacked u;

		memset(&u, 0, sizeof(u));
		err_clear();
		assert_int_equal(proto_stat_unpack("", 0, "a\0b", 3, ok1, 8, NMAX, PATH_MAX_BYTES,
						   &u.buf, u.paths, u.sts, &u.n), -EINVAL);
		assert_true(err_detail()[0] != '\0');
		assert_int_equal(proto_stat_unpack("d\0", 2, "a", 1, ok1, 8, NMAX, PATH_MAX_BYTES,
						   &u.buf, u.paths, u.sts, &u.n), -EINVAL);
		assert_int_equal(proto_stat_unpack("", 0, "a", 1, "AQAA\0AEA", 8, NMAX,
						   PATH_MAX_BYTES, &u.buf, u.paths, u.sts, &u.n),
				 -EINVAL);
		assert_null(u.buf);
		assert_int_equal(u.n, 0);
	}
}

/* The base64 itself: only canonical standard base64 is taken. */
static void test_refused_base64(void **state)
{
	(void)state;
	refused(-EINVAL, "", "x", "AQAAAAE!");     /* not in the alphabet */
	refused(-EINVAL, "", "x", "AQAAAAE-");     /* URL-safe alphabet */
	refused(-EINVAL, "", "x", "AQAA AAEA");    /* white space */
	refused(-EINVAL, "", "x", "AQAAAAE");      /* a character short */
	refused(-EINVAL, "", "x", "AQAAAAEAA");    /* one over */
	/* 01 00 00 00 01 00 00: seven bytes, padded "AA==" at the end; the same without its
	 * padding, with bits set that the padding leaves unused, or with one "=" too many. */
	refused(-EINVAL, "", "x", "AQAAAAEAAA");
	refused(-EINVAL, "", "x", "AQAAAAEAAB==");
	refused(-EINVAL, "", "x", "AQAAAAEAAA===");
	/* And that text with its padding right is decoded (and then refused for the byte after
	 * the last record, which test_refused_records covers). */
	refused(-EINVAL, "", "x", "AQAAAAEAAA==");
}

/* The records: cut short, too long, not in the shortest form, out of range. */
static void test_refused_records(void **state)
{
	/* A good record to build on: dev 1 (zigzag 2), ino 1 (2), size 5, mode 0100644 (zigzag
	 * 66376: c8 86 04), mtime 2 ns (4), ctime = mtime (0). */
	static const uint8_t good[] = { 0x02, 0x02, 0x05, 0xc8, 0x86, 0x04, 0x04, 0x00 };
	uint8_t b[64];
	size_t n;

	(void)state;
	{
		struct unpacked u;
		char *s = b64(good, sizeof(good));

		assert_int_equal(unpack("d", "a", s, &u), 0);
		assert_int_equal(u.sts[0].st_mode, 0100644);
		assert_int_equal(u.sts[0].st_size, 5);
		free(u.buf);
		free(s);
	}
	/* Truncated: every proper prefix of the record (a varint or a field missing). */
	for (n = 1; n < sizeof(good); n++)
		refused_bin(-EINVAL, "a", good, n);
	/* One record for two names. */
	refused_bin(-EINVAL, "a/b", good, sizeof(good));
	/* A byte after the last record; a whole record more than the names. */
	memcpy(b, good, sizeof(good));
	b[sizeof(good)] = 0x00;
	refused_bin(-EINVAL, "a", b, sizeof(good) + 1);
	memcpy(b + sizeof(good), good, sizeof(good));
	refused_bin(-EINVAL, "a", b, 2 * sizeof(good));
	/* A varint not in its shortest form: size 5 as 85 00. */
	n = 0;
	b[n++] = 0x02, b[n++] = 0x02, b[n++] = 0x85, b[n++] = 0x00;
	b[n++] = 0xc8, b[n++] = 0x86, b[n++] = 0x04, b[n++] = 0x04, b[n++] = 0x00;
	refused_bin(-EINVAL, "a", b, n);
	/* Zero as 80 80 00 (the ctime). */
	memcpy(b, good, sizeof(good) - 1);
	n = sizeof(good) - 1;
	b[n++] = 0x80, b[n++] = 0x80, b[n++] = 0x00;
	refused_bin(-EINVAL, "a", b, n);
	/* Over 64 bits: a tenth byte of 2, a tenth byte that says more follow, eleven bytes. */
	for (unsigned last = 0; last < 3; last++) {
		n = 0;
		b[n++] = 0x02, b[n++] = 0x02;
		for (unsigned k = 0; k < 9; k++)
			b[n++] = 0xff;
		if (last == 0) {
			b[n++] = 0x02;
		} else if (last == 1) {
			b[n++] = 0x81;
			b[n++] = 0x00;
		} else {
			b[n++] = 0x80;
			b[n++] = 0x01;
		}
		b[n++] = 0xc8, b[n++] = 0x86, b[n++] = 0x04, b[n++] = 0x04, b[n++] = 0x00;
		refused_bin(-EINVAL, "a", b, n);
	}
	/* The largest size is taken: 2^63 - 1 (nine 0xff, then 0x7f); 2^63 is a negative size. */
	n = 0;
	b[n++] = 0x02, b[n++] = 0x02;
	for (unsigned k = 0; k < 8; k++)
		b[n++] = 0xff;
	b[n++] = 0x7f;
	b[n++] = 0xc8, b[n++] = 0x86, b[n++] = 0x04, b[n++] = 0x04, b[n++] = 0x00;
	{
		struct unpacked u;
		char *s = b64(b, n);

		assert_int_equal(unpack("d", "a", s, &u), 0);
		assert_true(u.sts[0].st_size == INT64_MAX);
		free(u.buf);
		free(s);
	}
	n = 0;
	b[n++] = 0x02, b[n++] = 0x02;
	for (unsigned k = 0; k < 9; k++)
		b[n++] = 0x80;
	b[n++] = 0x01;
	b[n++] = 0xc8, b[n++] = 0x86, b[n++] = 0x04, b[n++] = 0x04, b[n++] = 0x00;
	refused_bin(-EINVAL, "a", b, n);
	/* A mode over 32 bits: zigzag(2^32) = 2^33, 80 80 80 80 20. */
	n = 0;
	b[n++] = 0x02, b[n++] = 0x02, b[n++] = 0x05;
	b[n++] = 0x80, b[n++] = 0x80, b[n++] = 0x80, b[n++] = 0x80, b[n++] = 0x20;
	b[n++] = 0x04, b[n++] = 0x00;
	refused_bin(-EINVAL, "a", b, n);
	/* A mode of the second file that wraps below 0: 0100644 then -0100645 (zigzag 66377 ->
	 * c9 86 04), which is 2^64 - 1 modulo 2^64. */
	memcpy(b, good, sizeof(good));
	n = sizeof(good);
	b[n++] = 0x00, b[n++] = 0x00, b[n++] = 0x00;
	b[n++] = 0xc9, b[n++] = 0x86, b[n++] = 0x04, b[n++] = 0x00, b[n++] = 0x00;
	refused_bin(-EINVAL, "a/b", b, n);
	/* An mtime of INT64_MIN (zigzag 2^64 - 1: nine 0xff, then 0x01), and within a second of
	 * it (INT64_MIN + 999999999); INT64_MIN + 1e9 is taken. */
	for (unsigned which = 0; which < 3; which++) {
		int64_t t = which == 0 ? INT64_MIN : INT64_MIN + 999999999 +
						     (which == 2 ? 1 : 0);
		uint64_t z = ((uint64_t)t << 1) ^ (uint64_t)(t >> 63), v = z;

		n = 0;
		b[n++] = 0x02, b[n++] = 0x02, b[n++] = 0x05, b[n++] = 0xc8, b[n++] = 0x86,
		b[n++] = 0x04;
		for (; v >= 0x80; v >>= 7)
			b[n++] = (uint8_t)(v | 0x80);
		b[n++] = (uint8_t)v;
		b[n++] = 0x00;
		if (which < 2) {
			refused_bin(-EINVAL, "a", b, n);
		} else {
			struct unpacked u;
			char *s = b64(b, n);

			assert_int_equal(unpack("d", "a", s, &u), 0);
			assert_true(ns(&u.sts[0].st_mtim) == INT64_MIN + 1000000000);
			free(u.buf);
			free(s);
		}
	}
	/* A ctime out of range while the mtime is not: mtime 0 (zigzag 0), ctime mtime - 2^63
	 * (zigzag 2^64 - 1). */
	n = 0;
	b[n++] = 0x02, b[n++] = 0x02, b[n++] = 0x05, b[n++] = 0xc8, b[n++] = 0x86, b[n++] = 0x04;
	b[n++] = 0x00;
	for (unsigned k = 0; k < 9; k++)
		b[n++] = 0xff;
	b[n++] = 0x01;
	refused_bin(-EINVAL, "a", b, n);
}

/* The variable-time base64 decoder the batch goes through takes the texts the project's
 * constant-time one takes, no other, and gives the same bytes (fuzz_stat_batch checks the same
 * on whatever the fuzzer finds). */
static void test_base64_public(void **state)
{
	static const struct {
		const char *text;
		const char *bytes;   /* NULL: refused */
	} cases[] = {
		{ "", "" },
		{ "AA==", "\x00" },
		{ "AAE=", "\x00\x01" },
		{ "AAEC", "\x00\x01\x02" },
		{ "+/+/", "\xfb\xff\xbf" },
		{ "hiDQ", "\x86\x20\xd0" },
		{ "AB==", NULL },      /* bits the padding leaves unused are set */
		{ "AAF=", NULL },
		{ "AA=", NULL },       /* not whole quanta */
		{ "AA", NULL },
		{ "AA===", NULL },
		{ "A===", NULL },
		{ "====", NULL },
		{ "AA==AAAA", NULL },  /* padding before the end */
		{ "A=AA", NULL },
		{ "AA=A", NULL },
		{ "-_AA", NULL },      /* the URL-safe alphabet */
		{ "AA A", NULL },
		{ "AA\nA", NULL },
		{ "AA\x80" "A", NULL },   /* libsodium 1.0.18 alone reads bytes from 0x80 as '/' */
		{ "AA\xaf" "A", NULL },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const char *t = cases[i].text;
		uint8_t a[8], b[8];
		size_t na = 99, nb = 99;
		int ra = base64_decode_public(t, strlen(t), a, sizeof(a), &na);
		int rb = base64_decode_canonical(t, strlen(t), NULL, b, sizeof(b), &nb);

		if (cases[i].bytes) {
			assert_int_equal(ra, 0);
			assert_int_equal(rb, 0);
			/* Three bytes a quantum, less one for each "=". */
			assert_int_equal(na, strlen(t) / 4 * 3 - (strchr(t, '=') ? strlen(strchr(t, '='))
										: 0));
			assert_int_equal(na, nb);
			assert_memory_equal(a, cases[i].bytes, na);
			assert_memory_equal(b, cases[i].bytes, nb);
		} else {
			if (ra != -EBADMSG || rb != -EBADMSG)
				fail_msg("case %zu: public %d, canonical %d", i, ra, rb);
			assert_int_equal(na, 99);
		}
	}
	/* Not room for what it decodes to: refused, as the canonical one refuses it. */
	{
		uint8_t a[2];
		size_t na = 99;

		assert_int_equal(base64_decode_public("AAEC", 4, a, 2, &na), -EBADMSG);
		assert_int_equal(base64_decode_public("AAE=", 4, a, 1, &na), -EBADMSG);
		assert_int_equal(base64_decode_public("AA==", 4, a, 0, &na), -EBADMSG);
		assert_int_equal(na, 99);
	}
	/* Only the len characters given count, whatever follows them. */
	{
		uint8_t a[8];
		size_t na = 99;

		assert_int_equal(base64_decode_public("AAAAAAAA", 5, a, sizeof(a), &na), -EBADMSG);
		assert_int_equal(base64_decode_public("AA==AAAA", 2, a, sizeof(a), &na), -EBADMSG);
		assert_int_equal(na, 99);
		assert_int_equal(base64_decode_public("AAEC====", 4, a, sizeof(a), &na), 0);
		assert_int_equal(na, 3);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vector_by_hand),
		cmocka_unit_test(test_vector_wrap_and_before_1970),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_refused_shape),
		cmocka_unit_test(test_refused_base64),
		cmocka_unit_test(test_refused_records),
		cmocka_unit_test(test_base64_public),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
