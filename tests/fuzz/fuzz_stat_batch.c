/* fuzz_stat_batch: the compact form of an import.stat batch (proto_stat_unpack(), common/proto.c),
 * which the daemon parses from a steward's client (docs/PROTOCOL.md "Importing").
 *
 * Input: byte 0 and byte 1 are the lengths of "dir" and "names" (each cut to what is left); byte
 * 2 says what the rest after dir and names is: "stats64" as it is (bit 0 clear), or the bytes the
 * harness encodes as base64 first (bit 0 set), so that the fuzzer reaches the records behind the
 * base64 as well as the base64 itself. The harness checks the documented contract:
 *   - an accepted batch has 1 to max files; each path is dir/name (name alone when dir is empty),
 *     the names in order, none empty, none longer than path_max; no size negative, no time out of
 *     range; encoding the stats again gives the very text they came from (nothing lost or
 *     invented, and no second text for the same batch);
 *   - a refusal is -EINVAL or -E2BIG (or -ENOMEM) with an err_detail() message, and sets nothing;
 *   - the variable-time base64 decoder the batch goes through (base64_decode_public) takes
 *     exactly the texts the project's constant-time one takes, and gives the same bytes.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "fuzz.h"

/* Small, so that the fuzzer reaches both limits with short inputs. */
#define MAX_FILES 8u
#define PATH_MAX_BYTES 40u

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return sodium_init() < 0 ? 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *paths[MAX_FILES], *dir, *names, *stats;
	const struct stat *again[MAX_FILES];
	struct stat sts[MAX_FILES], sentinel[MAX_FILES];
	size_t dl, nl, sl, n = 0, start = 0;
	char *buf = NULL, *text = NULL, *re;
	int r;

	if (size < 3)
		return 0;
	dl = data[0] < size - 3 ? data[0] : size - 3;
	nl = data[1] < size - 3 - dl ? data[1] : size - 3 - dl;
	sl = size - 3 - dl - nl;
	dir = (const char *)data + 3;
	names = dir + dl;
	stats = names + nl;
	if (data[2] & 1) {
		size_t cap = sodium_base64_ENCODED_LEN(sl, sodium_base64_VARIANT_ORIGINAL);

		text = malloc(cap);
		if (!text)
			return 0;
		sodium_bin2base64(text, cap, (const uint8_t *)stats, sl,
				  sodium_base64_VARIANT_ORIGINAL);
		stats = text;
		sl = strlen(text);
	}
	/* The two base64 decoders agree, on every text and with room to spare or not. */
	{
		uint8_t a[512], b[512];
		size_t na = 0, nb = 0, cap = sl % 7 == 3 ? sl * 3 / 4 - 1 : sizeof(a);
		int ra, rb;

		if (cap <= sizeof(a)) {
			ra = base64_decode_public(stats, sl, a, cap, &na);
			rb = base64_decode_canonical(stats, sl, NULL, b, cap, &nb);
			FUZZ_CHECK((ra == 0) == (rb == 0));
			FUZZ_CHECK(ra == 0 || ra == -EBADMSG);
			FUZZ_CHECK(ra != 0 || (na == nb && memcmp(a, b, na) == 0));
		}
	}
	memset(paths, 0, sizeof(paths));
	memset(sts, 0x5a, sizeof(sts));
	memset(sentinel, 0x5a, sizeof(sentinel));
	err_clear();
	r = proto_stat_unpack(dir, dl, names, nl, stats, sl, MAX_FILES, PATH_MAX_BYTES, &buf, paths,
			      sts, &n);
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL || r == -E2BIG || r == -ENOMEM);
		FUZZ_CHECK(err_detail()[0] != '\0');
		FUZZ_CHECK(buf == NULL && n == 0 && paths[0] == NULL);
		FUZZ_CHECK(memcmp(sts, sentinel, sizeof(sts)) == 0);
		free(text);
		return 0;
	}
	FUZZ_CHECK(n >= 1 && n <= MAX_FILES && buf != NULL);
	for (size_t i = 0; i < n; i++) {
		size_t end = start, plen = strlen(paths[i]);

		while (end < nl && names[end] != '/')
			end++;
		FUZZ_CHECK(end > start);
		FUZZ_CHECK(plen <= PATH_MAX_BYTES);
		FUZZ_CHECK(plen == (dl ? dl + 1 : 0) + (end - start));
		FUZZ_CHECK(memcmp(paths[i], dir, dl) == 0);
		FUZZ_CHECK(!dl || paths[i][dl] == '/');
		FUZZ_CHECK(memcmp(paths[i] + (dl ? dl + 1 : 0), names + start, end - start) == 0);
		FUZZ_CHECK(sts[i].st_size >= 0);
		FUZZ_CHECK(sts[i].st_mtim.tv_nsec >= 0 && sts[i].st_mtim.tv_nsec < 1000000000);
		FUZZ_CHECK(sts[i].st_ctim.tv_nsec >= 0 && sts[i].st_ctim.tv_nsec < 1000000000);
		FUZZ_CHECK(proto_time_ns_valid((int64_t)sts[i].st_mtim.tv_sec * 1000000000 +
					       sts[i].st_mtim.tv_nsec));
		FUZZ_CHECK(proto_time_ns_valid((int64_t)sts[i].st_ctim.tv_sec * 1000000000 +
					       sts[i].st_ctim.tv_nsec));
		again[i] = &sts[i];
		start = end + 1;
	}
	FUZZ_CHECK(start == nl + 1);   /* every name used, none left over */
	re = proto_stats64(again, n);
	FUZZ_CHECK(re != NULL);
	FUZZ_CHECK(strlen(re) == sl && memcmp(re, stats, sl) == 0);
	free(re);
	free(buf);
	free(text);
	return 0;
}
