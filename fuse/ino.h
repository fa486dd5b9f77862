/* ino: the FUSE layer's inode numbers, computed from what they name (no table). Private to fuse/
 * (and white-box tests); needs nothing from libfuse, so tests can include it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* The mount root: libfuse's FUSE_ROOT_ID (checked in fusefs_internal.h). */
#define FUSEFS_ROOT_INO 1u

/* ---- Inode numbers -------------------------------------------------------------------------
 *
 * Inode numbers are computed from what they name, never stored: there is no inode table, so
 * lookup counts need no bookkeeping (forget is a no-op) and a restarted daemon hands out the same
 * numbers. The top two bits say what kind of node it is:
 *
 *   bits 63-62  kind
 *   0           the mount root, ino 1 (FUSEFS_ROOT_INO); or, with bit 61 set, a node inside a
 *               version seen through a user's own view (fuse/view.c: cache=kernel datasets):
 *                                                      bit 61 set,
 *                                                      bits 32-60 view id (29 bits),
 *                                                      bits 0-31  store inode number;
 *               no other kind-0 number is ever served
 *   1           a dataset directory /<dataset>:       bits 0-17 dataset id, the rest zero
 *   2           the symlink /<dataset>/latest:        bits 0-17 dataset id, the rest zero
 *   3           a node inside /<dataset>/<version>/:  bits 44-61 dataset id (18 bits),
 *                                                      bits 32-43 version (12 bits),
 *                                                      bits 0-31  store inode number (32 bits);
 *               the version directory itself is its store root, STORE_ROOT_INO.
 *
 * Bounds: dataset ids 1..2^18-1 (262143 datasets over the life of a store: ids are never reused),
 * versions 1..4095, store inode numbers 1..2^32-1 (per version). The same dataset bound applies
 * to every kind, so a dataset is either served whole or not at all. A value that does not fit is
 * never truncated, which would alias another node: the name is not served (ENOENT, absent from
 * readdir) and the first such event of each kind is logged.
 */
#define FUSEFS_KIND_SHIFT 62
#define FUSEFS_KIND_ROOT 0u
#define FUSEFS_KIND_DATASET 1u
#define FUSEFS_KIND_LATEST 2u
#define FUSEFS_KIND_NODE 3u
#define FUSEFS_DSID_BITS 18
#define FUSEFS_VER_BITS 12
#define FUSEFS_SINO_BITS 32
#define FUSEFS_DSID_MAX ((1ull << FUSEFS_DSID_BITS) - 1)
#define FUSEFS_VER_MAX ((1u << FUSEFS_VER_BITS) - 1)
#define FUSEFS_SINO_MAX ((1ull << FUSEFS_SINO_BITS) - 1)

_Static_assert(2 + FUSEFS_DSID_BITS + FUSEFS_VER_BITS + FUSEFS_SINO_BITS == 64,
	       "the node layout fills 64 bits exactly");
#define FUSEFS_VIEW_FLAG_BIT 61
#define FUSEFS_VIEW_BITS 29
#define FUSEFS_VIEW_MAX ((1u << FUSEFS_VIEW_BITS) - 1)
_Static_assert(2 + 1 + FUSEFS_VIEW_BITS + FUSEFS_SINO_BITS == 64,
	       "the view node layout fills 64 bits exactly");

/* A decoded inode number. */
struct fusefs_node {
	unsigned kind;          /* FUSEFS_KIND_* */
	uint64_t dsid;          /* DATASET, LATEST, NODE */
	uint32_t version;       /* NODE */
	uint64_t sino;          /* NODE: the store's inode number within the version */
	uint32_t view;          /* NODE: the view it is seen through (fuse/view.c), 0: none */
	uint32_t view_uid;      /* NODE with a view: whose view (filled by fusefs_node_decode) */
};

/* Encoders: false (nothing written) when a field is out of range. */
static inline bool fusefs_ino_dataset(uint64_t dsid, uint64_t *ret)
{
	if (dsid == 0 || dsid > FUSEFS_DSID_MAX)
		return false;
	*ret = (uint64_t)FUSEFS_KIND_DATASET << FUSEFS_KIND_SHIFT | dsid;
	return true;
}

static inline bool fusefs_ino_latest(uint64_t dsid, uint64_t *ret)
{
	if (dsid == 0 || dsid > FUSEFS_DSID_MAX)
		return false;
	*ret = (uint64_t)FUSEFS_KIND_LATEST << FUSEFS_KIND_SHIFT | dsid;
	return true;
}

static inline bool fusefs_ino_node(uint64_t dsid, uint32_t version, uint64_t sino, uint64_t *ret)
{
	if (dsid == 0 || dsid > FUSEFS_DSID_MAX || version == 0 || version > FUSEFS_VER_MAX ||
	    sino == 0 || sino > FUSEFS_SINO_MAX)
		return false;
	*ret = (uint64_t)FUSEFS_KIND_NODE << FUSEFS_KIND_SHIFT |
	       dsid << (FUSEFS_VER_BITS + FUSEFS_SINO_BITS) | (uint64_t)version << FUSEFS_SINO_BITS |
	       sino;
	return true;
}

/* A node of a view: only the view id and the store inode number are in the number; the view
 * table (fuse/view.c) knows the dataset and version. */
static inline bool fusefs_ino_view(uint32_t view, uint64_t sino, uint64_t *ret)
{
	if (view == 0 || view > FUSEFS_VIEW_MAX || sino == 0 || sino > FUSEFS_SINO_MAX)
		return false;
	*ret = 1ull << FUSEFS_VIEW_FLAG_BIT | (uint64_t)view << FUSEFS_SINO_BITS | sino;
	return true;
}

/* Decode a number the kernel sent; false for one this layer never hands out. A view node comes
 * back as kind NODE with view set and dsid, version 0 (fusefs_node_decode() fills them). */
static inline bool fusefs_ino_decode(uint64_t ino, struct fusefs_node *ret)
{
	struct fusefs_node n = { .kind = (unsigned)(ino >> FUSEFS_KIND_SHIFT) };
	uint64_t payload = ino & ((1ull << FUSEFS_KIND_SHIFT) - 1);

	switch (n.kind) {
	case FUSEFS_KIND_ROOT:
		if (ino == FUSEFS_ROOT_INO)
			break;
		if (!(payload >> FUSEFS_VIEW_FLAG_BIT))
			return false;
		n.kind = FUSEFS_KIND_NODE;
		n.view = (uint32_t)(payload >> FUSEFS_SINO_BITS) & FUSEFS_VIEW_MAX;
		n.sino = payload & FUSEFS_SINO_MAX;
		if (n.view == 0 || n.sino == 0)
			return false;
		break;
	case FUSEFS_KIND_DATASET:
	case FUSEFS_KIND_LATEST:
		if (payload == 0 || payload > FUSEFS_DSID_MAX)
			return false;
		n.dsid = payload;
		break;
	default:
		n.dsid = payload >> (FUSEFS_VER_BITS + FUSEFS_SINO_BITS);
		n.version = (uint32_t)(payload >> FUSEFS_SINO_BITS) & FUSEFS_VER_MAX;
		n.sino = payload & FUSEFS_SINO_MAX;
		if (n.dsid == 0 || n.version == 0 || n.sino == 0)
			return false;
		break;
	}
	*ret = n;
	return true;
}
