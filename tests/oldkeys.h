/* What a node's kept keys (its last key bundle, store_node_keys) still open of a store's index:
 * the attacker's view of a removed node, or of a thief holding its bundle (issue 17 point 3,
 * docs/THREAT_MODEL.md 13.1). Every key the bundle holds is tried in every derivation the store
 * has ever used, so a record counts as closed only if no such combination opens it. White-box:
 * reads the index of st (a primary, or a node's secondary) directly. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "store/store.h"

struct oldkeys_reach {
	size_t datasets, datasets_open;       /* `datasets` records, and those the keys open */
	size_t tombstones, tombstones_open;   /* erased versions' tombstones */
	size_t moves, moves_open;             /* the garbage collector's move records */
};

/* Count what k opens in st's index now. */
void oldkeys_reach(struct store *st, const struct store_node_keys *k, struct oldkeys_reach *ret);
/* Whether k confirms that a dataset named name exists in st's index (its name hashed under any
 * name key k can make is a `datasets` key there). */
bool oldkeys_confirm_name(struct store *st, const struct store_node_keys *k, const char *name);
