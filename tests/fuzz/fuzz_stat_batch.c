/* fuzz_stat_batch: the packed form of an import.stat batch (proto_stat_unpack(), common/proto.c),
 * which the daemon parses from a steward's client (docs/PROTOCOL.md "Importing").
 *
 * Input: byte 0 and byte 1 are the lengths of "dir" and "names" (each cut to what is left), the
 * rest after them is dir, names and "stats" in turn. The harness checks the documented contract:
 *   - an accepted batch has 1 to max files, exactly PROTO_STAT_PACKED_HEX digits of stats per
 *     file; each path is dir/name (name alone when dir is empty), the names in order, none
 *     empty, none longer than path_max; no size negative; packing each stat again gives the
 *     digits it came from (nothing lost or invented);
 *   - a refusal is -EINVAL or -E2BIG (or -ENOMEM) with an err_detail() message, and sets nothing.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

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
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *paths[MAX_FILES] = { 0 }, *dir, *names, *stats;
	struct stat sts[MAX_FILES];
	size_t dl, nl, sl, n = 0, start = 0;
	char *buf = NULL;
	int r;

	if (size < 2)
		return 0;
	dl = data[0] < size - 2 ? data[0] : size - 2;
	nl = data[1] < size - 2 - dl ? data[1] : size - 2 - dl;
	sl = size - 2 - dl - nl;
	dir = (const char *)data + 2;
	names = dir + dl;
	stats = names + nl;
	err_clear();
	r = proto_stat_unpack(dir, dl, names, nl, stats, sl, MAX_FILES, PATH_MAX_BYTES, &buf, paths,
			      sts, &n);
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL || r == -E2BIG || r == -ENOMEM);
		FUZZ_CHECK(err_detail()[0] != '\0');
		FUZZ_CHECK(buf == NULL && n == 0 && paths[0] == NULL);
		return 0;
	}
	FUZZ_CHECK(n >= 1 && n <= MAX_FILES && sl == n * PROTO_STAT_PACKED_HEX && buf != NULL);
	for (size_t i = 0; i < n; i++) {
		char hex[PROTO_STAT_PACKED_HEX + 1];
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
		proto_stat_pack(&sts[i], hex);
		FUZZ_CHECK(memcmp(hex, stats + i * PROTO_STAT_PACKED_HEX, PROTO_STAT_PACKED_HEX) == 0);
		start = end + 1;
	}
	FUZZ_CHECK(start == nl + 1);   /* every name used, none left over */
	free(buf);
	return 0;
}
