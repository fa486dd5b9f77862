/* Canonical standard base64, one decoder for every text the project takes from outside: key
 * files (Crypt4GH, auditor, node), signed notes and proofs. */
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
