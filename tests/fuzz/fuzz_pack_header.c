/* fuzz_pack_header: pack_check_header() (store/pack.c) on a pack file made from the input.
 *
 * Pack files sit on the untrusted disk, and a store opens every one it finds. The input is the
 * whole file: its first PACK_HEADER_LEN bytes are the header, anything after stands for object
 * data. The contract checked besides "no crash, leak or UB": the header is accepted (0) exactly
 * when it is the format of docs/FORMAT.md "Pack files" for this store and pack id, and refused
 * with -EBADMSG otherwise (a short file included).
 */
#include <sys/mman.h>

#include "store/store_internal.h"
#include "fuzz.h"

static const uint8_t fuzz_store_id[16] = FUZZ_STORE_ID;

/* One memory-backed file, rewritten for every input: no disk I/O, no name to clean up. */
static int pack_fd = -1;

/* The header format, written down again from docs/FORMAT.md rather than taken from pack.c. */
static bool header_ok(const uint8_t *h, size_t n)
{
	return n >= PACK_HEADER_LEN && memcmp(h, "ENCLPACK", 8) == 0 && get_le32(h + 8) == 1 &&
	       get_le32(h + 12) == 4096 && get_le64(h + 16) == FUZZ_PACK_ID &&
	       memcmp(h + 24, fuzz_store_id, sizeof(fuzz_store_id)) == 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	pack_fd = memfd_create("fuzz-pack", MFD_CLOEXEC);
	FUZZ_CHECK(pack_fd >= 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int r;

	FUZZ_CHECK(ftruncate(pack_fd, 0) == 0);
	FUZZ_CHECK(pwrite_all(pack_fd, data, size, 0) == 0);
	r = pack_check_header(pack_fd, fuzz_store_id, FUZZ_PACK_ID);
	FUZZ_CHECK(r == 0 || r == -EBADMSG);
	FUZZ_CHECK((r == 0) == header_ok(data, size));
	return 0;
}
