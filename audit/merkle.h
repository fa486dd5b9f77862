/* merkle: the RFC 6962 / RFC 9162 (section 2) Merkle tree hash over the audit records.
 *
 * Hash: SHA-256 (libsodium crypto_hash_sha256). A leaf is hashed SHA-256(0x00 || data), an inner
 * node SHA-256(0x01 || left || right), and the empty tree is SHA-256(""). For a tree of n leaves,
 * MTH(D[n]) splits at k, the largest power of two smaller than n (RFC 9162 2.1.1).
 *
 * Three roles:
 * - an appender (the daemon) keeps a struct merkle_frontier: at most 64 hashes, enough to append
 *   and to compute the root of the current tree;
 * - a prover (the daemon, or the offline verifier) answers "hash of the perfect subtree at
 *   (level, index)" through a merkle_perfect_fn, and merkle_*_proof() build RFC 9162 proofs from
 *   those hashes alone;
 * - a verifier checks proofs with merkle_verify_*(), exactly the algorithms of RFC 9162 2.1.3.2
 *   and 2.1.4.2, with the edge cases of the reference implementation (transparency-dev/merkle).
 *
 * Contract: functions that act return 0 or -errno; ret_* outputs are last and untouched on
 * failure. Nothing here holds secrets.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of a SHA-256 hash. */
#define MERKLE_HASH_LEN 32
/* Most hashes in any proof (inclusion or consistency) of a tree of up to 2^64 - 1 leaves; also
 * the capacity of a merkle_frontier. Arrays passed as ret_proof must hold this many. */
#define MERKLE_PROOF_MAX 64

/* SHA-256(0x00 || data): the leaf hash of len bytes (for a record: its line without '\n'). */
void merkle_leaf_hash(const void *data, size_t len, uint8_t out[static MERKLE_HASH_LEN]);
/* SHA-256(0x01 || l || r): the hash of an inner node. out may alias l or r. */
void merkle_node_hash(const uint8_t l[static MERKLE_HASH_LEN], const uint8_t r[static MERKLE_HASH_LEN],
		      uint8_t out[static MERKLE_HASH_LEN]);
/* SHA-256(""): MTH of the empty tree (e3b0c442...b855). */
void merkle_empty_root(uint8_t out[static MERKLE_HASH_LEN]);

/* ---- Appending ---------------------------------------------------------------------------- */

/* The compact range [0, size): for every bit k set in size, h[k] is the hash of the perfect
 * subtree of 2^k leaves that bit stands for (the leftmost of them at the highest set bit).
 * Entries for clear bits are unspecified. Plain data: copy it, store it, no destructor. */
struct merkle_frontier {
	uint64_t size;                                  /* leaves appended so far */
	uint8_t h[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];   /* h[k]: perfect subtree of 2^k leaves */
};

/* The empty tree (size 0). */
void merkle_frontier_init(struct merkle_frontier *f);
/* Append one leaf hash (merkle_leaf_hash() of the record). O(log n) hashes. The caller makes sure
 * size stays below 2^64 - 1 (the audit log's seq is capped at 2^63 - 1 long before). */
void merkle_frontier_append(struct merkle_frontier *f, const uint8_t leaf[static MERKLE_HASH_LEN]);
/* MTH of the leaves appended so far (merkle_empty_root() for size 0). */
void merkle_frontier_root(const struct merkle_frontier *f, uint8_t out[static MERKLE_HASH_LEN]);

/* ---- Proofs ------------------------------------------------------------------------------- */

/* The hash of the perfect subtree of leaves [index << level, (index + 1) << level): level 0 gives
 * the leaf hashes. The proof builders below only ask for subtrees that lie wholly inside the
 * tree they were given. Returns 0 or -errno, which the builder passes through unchanged (so a
 * store can report -EIO, an in-memory table -ERANGE). */
typedef int (*merkle_perfect_fn)(void *ctx, unsigned level, uint64_t index,
				 uint8_t out[static MERKLE_HASH_LEN]);

/* MTH(D[begin:end]): the hash of the list of leaves begin..end-1 taken as a tree of its own
 * (merkle_empty_root() when begin == end). -EINVAL begin > end; fn's -errno. */
int merkle_range_hash(uint64_t begin, uint64_t end, merkle_perfect_fn fn, void *ctx,
		      uint8_t out[static MERKLE_HASH_LEN]);
/* PATH(index, D[size]) of RFC 9162 2.1.3.1: the audit path of leaf `index`, leaf side first.
 * ret_proof must hold MERKLE_PROOF_MAX hashes; *ret_n is the number written (0 for size 1).
 * -EINVAL index >= size; fn's -errno. Outputs untouched on failure. */
int merkle_inclusion_proof(uint64_t index, uint64_t size, merkle_perfect_fn fn, void *ctx,
			   uint8_t ret_proof[][MERKLE_HASH_LEN], size_t *ret_n);
/* PROOF(old_size, D[new_size]) of RFC 9162 2.1.4.1. ret_proof as above. The proof is empty when
 * old_size is 0 or equals new_size (nothing to prove: see merkle_verify_consistency()).
 * -EINVAL old_size > new_size; fn's -errno. Outputs untouched on failure. */
int merkle_consistency_proof(uint64_t old_size, uint64_t new_size, merkle_perfect_fn fn,
			     void *ctx, uint8_t ret_proof[][MERKLE_HASH_LEN], size_t *ret_n);

/* ---- Verifying ---------------------------------------------------------------------------- */

/* RFC 9162 2.1.3.2: does `leaf` (a leaf hash) sit at `index` of the tree of `size` leaves whose
 * root is `root`, by proof[0..n)? 0 yes; -EBADMSG no, or malformed (index >= size, size 0, a
 * proof too long or too short). Constant-time comparison of the final hash. */
int merkle_verify_inclusion(uint64_t index, uint64_t size, const uint8_t leaf[static MERKLE_HASH_LEN],
			    const uint8_t proof[][MERKLE_HASH_LEN], size_t n,
			    const uint8_t root[static MERKLE_HASH_LEN]);
/* RFC 9162 2.1.4.2: is the tree (new_size, new_root) an append-only extension of (old_size,
 * old_root), by proof[0..n)? 0 yes; -EBADMSG no or malformed. Edge cases as the reference:
 * old_size > new_size fails; old_size == new_size needs an empty proof and equal roots;
 * old_size == 0 needs an empty proof (the empty tree is a prefix of every tree); otherwise an
 * empty proof fails. */
int merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
			      const uint8_t old_root[static MERKLE_HASH_LEN],
			      const uint8_t new_root[static MERKLE_HASH_LEN],
			      const uint8_t proof[][MERKLE_HASH_LEN], size_t n);

/* ---- An in-memory tree (the offline verifier, tests) -------------------------------------- */

/* Every perfect subtree of a growing list of leaves, level by level: 2 * 32 bytes per leaf in
 * all. Leaves are appended; a capacity fixed at creation bounds the memory. */
struct merkle_mem;

/* A tree that will hold at most max_leaves leaves. -ENOMEM. */
int merkle_mem_new(uint64_t max_leaves, struct merkle_mem **ret_mem);
/* Free; NULL is fine. */
void merkle_mem_free(struct merkle_mem *m);
/* Append a leaf hash. -E2BIG past max_leaves; -ENOMEM. Nothing changes on failure. */
int merkle_mem_append(struct merkle_mem *m, const uint8_t leaf[static MERKLE_HASH_LEN]);
/* Leaves appended. */
uint64_t merkle_mem_size(const struct merkle_mem *m);
/* A merkle_perfect_fn over a struct merkle_mem (ctx): -ERANGE for a subtree not yet complete.
 * The answer for (level, index) does not depend on how many leaves follow, so one table serves
 * proofs and roots of every size up to merkle_mem_size(). */
int merkle_mem_perfect(void *ctx, unsigned level, uint64_t index, uint8_t out[static MERKLE_HASH_LEN]);
/* MTH of the first size leaves. -ERANGE size > merkle_mem_size(). */
int merkle_mem_root(const struct merkle_mem *m, uint64_t size, uint8_t out[static MERKLE_HASH_LEN]);
