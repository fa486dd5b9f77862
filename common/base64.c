/* Canonical standard base64, one decoder for every text the project takes from outside: key
 * files (Crypt4GH, auditor, node), signed notes and proofs; and its variable-time twin for bulk
 * data that is no secret (import.stat batches), which must take exactly the same texts. */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "common/common.h"

/* Whether c is one of the characters to leave out (ignore may be NULL: none). */
static bool ignored(const char *ignore, char c)
{
	return ignore && c != '\0' && strchr(ignore, c) != NULL;
}

int base64_decode_canonical(const char *text, size_t len, const char *ignore, uint8_t *out,
			    size_t cap, size_t *ret_n)
{
	char re[5];
	const char *end = NULL;
	size_t got = 0, i = 0;
	unsigned diff = 0;

	if (sodium_base642bin(out, cap, text, len, ignore, &got, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0 || end != text + len) {
		sodium_memzero(out, cap);   /* what it wrote before it stopped */
		return -EBADMSG;
	}
	/* libsodium alone also takes other texts for the same bytes: 1.0.18 reads any byte from
	 * 0x80 up as '/'. So the text, the ignored characters left out, must be the encoding of
	 * what it decoded to, compared four characters at a time (the bytes may be a secret: no
	 * copy of their encoding is left behind, and a mismatch does not stop the comparison
	 * early). This also refuses whatever else a decoder might let through (unused bits of
	 * the last character set, missing or extra padding). */
	for (size_t o = 0; o < got; o += 3) {
		sodium_bin2base64(re, sizeof(re), out + o, got - o < 3 ? got - o : 3,
				  sodium_base64_VARIANT_ORIGINAL);
		for (size_t j = 0; j < 4; j++) {
			while (i < len && ignored(ignore, text[i]))
				i++;
			diff |= i < len ? (unsigned char)(text[i++] ^ re[j]) : 1u;
		}
	}
	while (i < len && ignored(ignore, text[i]))
		i++;
	sodium_memzero(re, sizeof(re));
	if (diff != 0 || i != len) {
		sodium_memzero(out, got);
		return -EBADMSG;
	}
	*ret_n = got;
	return 0;
}

/* The value of a character of the standard alphabet, or -1. */
static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode_public(const char *text, size_t len, uint8_t *out, size_t cap, size_t *ret_n)
{
	size_t o = 0;

	/* Whole quanta of four characters; "=" only as the last one or two of the last. */
	if (len % 4 != 0)
		return -EBADMSG;
	for (size_t i = 0; i < len; i += 4) {
		const unsigned char *q = (const unsigned char *)text + i;
		int a = b64_value(q[0]), b = b64_value(q[1]), c, d;
		bool last = i + 4 == len;

		if (a < 0 || b < 0)
			return -EBADMSG;
		if (last && q[2] == '=') {
			/* One byte: the bits of b it leaves unused must be zero (canonical). */
			if (q[3] != '=' || (b & 0x0f) != 0 || o + 1 > cap)
				return -EBADMSG;
			out[o++] = (uint8_t)(a << 2 | b >> 4);
			break;
		}
		c = b64_value(q[2]);
		if (c < 0)
			return -EBADMSG;
		if (last && q[3] == '=') {
			if ((c & 0x03) != 0 || o + 2 > cap)
				return -EBADMSG;
			out[o++] = (uint8_t)(a << 2 | b >> 4);
			out[o++] = (uint8_t)((b & 0x0f) << 4 | c >> 2);
			break;
		}
		d = b64_value(q[3]);
		if (d < 0 || o + 3 > cap)
			return -EBADMSG;
		out[o++] = (uint8_t)(a << 2 | b >> 4);
		out[o++] = (uint8_t)((b & 0x0f) << 4 | c >> 2);
		out[o++] = (uint8_t)((c & 0x03) << 6 | d);
	}
	*ret_n = o;
	return 0;
}
