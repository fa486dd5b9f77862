/* pack: pack file headers (docs/FORMAT.md "Pack files").
 *
 * A pack is a 4096-byte header followed by objects: aligned ones at multiples of STORE_ALIGN, dense
 * (small) ones anywhere after the header (docs/FORMAT.md 4.7).
 * Packs are only ever appended to; the index records, per pack, the length up to which the data
 * is committed, and anything past it is the remains of an interrupted import.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "store/store_internal.h"

#define PACK_FORMAT_VERSION 1u

void pack_name(char *out, size_t n, uint64_t pack_id)
{
	snprintf(out, n, "%016llx.pack", (unsigned long long)pack_id);
}

int pack_create(int packs_dirfd, const uint8_t store_id[16], uint64_t pack_id)
{
	uint8_t hdr[PACK_HEADER_LEN] = { 0 };
	char name[32];
	int fd, r;

	pack_name(name, sizeof(name), pack_id);
	fd = openat(packs_dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(-errno, "cannot create pack %s: %s", name, strerror(errno));
	memcpy(hdr, PACK_MAGIC, 8);
	put_le32(hdr + 8, PACK_FORMAT_VERSION);
	put_le32(hdr + 12, STORE_ALIGN);
	put_le64(hdr + 16, pack_id);
	memcpy(hdr + 24, store_id, 16);
	put_le64(hdr + 40, (uint64_t)now_realtime_ns());
	r = pwrite_all(fd, hdr, sizeof(hdr), 0);
	if (r < 0) {
		close(fd);
		unlinkat(packs_dirfd, name, 0);
		return err_set(r, "cannot write pack %s: %s", name, strerror(-r));
	}
	return fd;
}

int pack_check_header(int fd, const uint8_t store_id[16], uint64_t pack_id)
{
	/* Aligned, so this works on a descriptor opened with O_DIRECT too. */
	uint8_t *hdr = aligned_alloc(STORE_ALIGN, PACK_HEADER_LEN);
	int r;

	if (!hdr)
		return -ENOMEM;
	r = pread_all(fd, hdr, PACK_HEADER_LEN, 0);
	if (r < 0) {
		r = err_set(r == -EIO ? -EBADMSG : r, "pack %016llx: cannot read header: %s",
			    (unsigned long long)pack_id, strerror(-r));
		goto out;
	}
	if (memcmp(hdr, PACK_MAGIC, 8) != 0 || get_le32(hdr + 8) != PACK_FORMAT_VERSION ||
	    get_le32(hdr + 12) != STORE_ALIGN || get_le64(hdr + 16) != pack_id ||
	    memcmp(hdr + 24, store_id, 16) != 0)
		r = err_set(-EBADMSG, "pack %016llx: header does not belong to this store",
			    (unsigned long long)pack_id);
out:
	free(hdr);
	return r;
}
