/* merkle: RFC 6962 / RFC 9162 tree hashes, proofs and their verification. See merkle.h. */
#include "audit/merkle.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/common.h"

void merkle_leaf_hash(const void *data, size_t len, uint8_t out[static MERKLE_HASH_LEN])
{
	crypto_hash_sha256_state st;
	static const uint8_t prefix = 0x00;

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, &prefix, 1);
	crypto_hash_sha256_update(&st, data, len);
	crypto_hash_sha256_final(&st, out);
}

void merkle_node_hash(const uint8_t l[static MERKLE_HASH_LEN], const uint8_t r[static MERKLE_HASH_LEN],
		      uint8_t out[static MERKLE_HASH_LEN])
{
	/* Copied first so out may alias l or r. */
	uint8_t in[1 + 2 * MERKLE_HASH_LEN];

	in[0] = 0x01;
	memcpy(in + 1, l, MERKLE_HASH_LEN);
	memcpy(in + 1 + MERKLE_HASH_LEN, r, MERKLE_HASH_LEN);
	crypto_hash_sha256(out, in, sizeof(in));
}

void merkle_empty_root(uint8_t out[static MERKLE_HASH_LEN])
{
	crypto_hash_sha256(out, NULL, 0);
}

/* ---- Frontier ----------------------------------------------------------------------------- */

void merkle_frontier_init(struct merkle_frontier *f)
{
	memset(f, 0, sizeof(*f));
}

void merkle_frontier_append(struct merkle_frontier *f, const uint8_t leaf[static MERKLE_HASH_LEN])
{
	uint8_t h[MERKLE_HASH_LEN];
	unsigned k = 0;

	/* Like a binary increment: each set low bit merges with the carry into the next level. */
	memcpy(h, leaf, MERKLE_HASH_LEN);
	while (k < MERKLE_PROOF_MAX && (f->size >> k) & 1) {
		merkle_node_hash(f->h[k], h, h);
		k++;
	}
	if (k < MERKLE_PROOF_MAX)
		memcpy(f->h[k], h, MERKLE_HASH_LEN);
	f->size++;
}

void merkle_frontier_root(const struct merkle_frontier *f, uint8_t out[static MERKLE_HASH_LEN])
{
	uint8_t r[MERKLE_HASH_LEN];
	bool have = false;

	if (f->size == 0) {
		merkle_empty_root(out);
		return;
	}
	/* The smallest subtree is the rightmost: fold right to left. */
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++) {
		if (!((f->size >> k) & 1))
			continue;
		if (!have) {
			memcpy(r, f->h[k], MERKLE_HASH_LEN);
			have = true;
		} else {
			merkle_node_hash(f->h[k], r, r);
		}
	}
	memcpy(out, r, MERKLE_HASH_LEN);
}

/* ---- Proofs ------------------------------------------------------------------------------- */

/* The largest power of two smaller than n (n >= 2). */
static uint64_t split_point(uint64_t n)
{
	uint64_t k = 1;

	while (k << 1 < n)
		k <<= 1;
	return k;
}

static unsigned log2_u64(uint64_t pow2)
{
	return (unsigned)__builtin_ctzll(pow2);
}

int merkle_range_hash(uint64_t begin, uint64_t end, merkle_perfect_fn fn, void *ctx,
		      uint8_t out[static MERKLE_HASH_LEN])
{
	uint8_t l[MERKLE_HASH_LEN], r[MERKLE_HASH_LEN];
	uint64_t n, k;
	int ret;

	if (begin > end)
		return -EINVAL;
	n = end - begin;
	if (n == 0) {
		merkle_empty_root(out);
		return 0;
	}
	/* A stored perfect subtree when the range is one (aligned to its own size). */
	if (IS_POW2(n) && begin % n == 0)
		return fn(ctx, log2_u64(n), begin >> log2_u64(n), out);
	k = split_point(n);
	ret = merkle_range_hash(begin, begin + k, fn, ctx, l);
	if (ret < 0)
		return ret;
	ret = merkle_range_hash(begin + k, end, fn, ctx, r);
	if (ret < 0)
		return ret;
	merkle_node_hash(l, r, out);
	return 0;
}

int merkle_inclusion_proof(uint64_t index, uint64_t size, merkle_perfect_fn fn, void *ctx,
			   uint8_t ret_proof[][MERKLE_HASH_LEN], size_t *ret_n)
{
	/* Collected root side first, then reversed into the leaf-first order of the proof. */
	uint8_t path[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];
	uint64_t begin = 0, end = size;
	size_t n = 0;
	int ret;

	if (index >= size)
		return -EINVAL;
	while (end - begin > 1) {
		uint64_t k = split_point(end - begin);

		if (n >= MERKLE_PROOF_MAX)
			return -EINVAL;
		if (index < begin + k) {
			ret = merkle_range_hash(begin + k, end, fn, ctx, path[n]);
			end = begin + k;
		} else {
			ret = merkle_range_hash(begin, begin + k, fn, ctx, path[n]);
			begin += k;
		}
		if (ret < 0)
			return ret;
		n++;
	}
	for (size_t i = 0; i < n; i++)
		memcpy(ret_proof[i], path[n - 1 - i], MERKLE_HASH_LEN);
	*ret_n = n;
	return 0;
}

int merkle_consistency_proof(uint64_t old_size, uint64_t new_size, merkle_perfect_fn fn,
			     void *ctx, uint8_t ret_proof[][MERKLE_HASH_LEN], size_t *ret_n)
{
	/* SUBPROOF(m, D[begin:end], b) of RFC 9162 2.1.4.1 unrolled: the outer hashes are found
	 * root side first, the innermost (the subtree equal to the old tree, unless b) last. */
	uint8_t path[MERKLE_PROOF_MAX + 1][MERKLE_HASH_LEN];
	uint64_t begin = 0, end = new_size, m = old_size;
	bool whole = true;  /* b: the subtree is the old tree itself, whose root the verifier has */
	size_t n = 0;
	int ret;

	if (old_size > new_size)
		return -EINVAL;
	if (old_size == 0 || old_size == new_size) {
		*ret_n = 0;
		return 0;
	}
	for (;;) {
		uint64_t len = end - begin, k;

		if (n >= MERKLE_PROOF_MAX)
			return -EINVAL;
		if (m == len) {
			if (!whole) {
				ret = merkle_range_hash(begin, end, fn, ctx, path[n]);
				if (ret < 0)
					return ret;
				n++;
			}
			break;
		}
		k = split_point(len);
		if (m <= k) {
			ret = merkle_range_hash(begin + k, end, fn, ctx, path[n]);
			end = begin + k;
		} else {
			ret = merkle_range_hash(begin, begin + k, fn, ctx, path[n]);
			begin += k;
			m -= k;
			whole = false;
		}
		if (ret < 0)
			return ret;
		n++;
	}
	if (n > MERKLE_PROOF_MAX)
		return -EINVAL;
	/* path holds outer hashes in root-first order, except that the innermost (if any) was
	 * pushed last: reversing gives inner-first, which is the RFC order. */
	for (size_t i = 0; i < n; i++)
		memcpy(ret_proof[i], path[n - 1 - i], MERKLE_HASH_LEN);
	*ret_n = n;
	return 0;
}

/* ---- Verification ------------------------------------------------------------------------- */

int merkle_verify_inclusion(uint64_t index, uint64_t size, const uint8_t leaf[static MERKLE_HASH_LEN],
			    const uint8_t proof[][MERKLE_HASH_LEN], size_t n,
			    const uint8_t root[static MERKLE_HASH_LEN])
{
	uint8_t r[MERKLE_HASH_LEN];
	uint64_t fn, sn;

	if (index >= size || n > MERKLE_PROOF_MAX)
		return -EBADMSG;
	fn = index;
	sn = size - 1;
	memcpy(r, leaf, MERKLE_HASH_LEN);
	for (size_t i = 0; i < n; i++) {
		if (sn == 0)
			return -EBADMSG;
		if ((fn & 1) || fn == sn) {
			merkle_node_hash(proof[i], r, r);
			while (!(fn & 1) && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else {
			merkle_node_hash(r, proof[i], r);
		}
		fn >>= 1;
		sn >>= 1;
	}
	if (sn != 0 || sodium_memcmp(r, root, MERKLE_HASH_LEN) != 0)
		return -EBADMSG;
	return 0;
}

int merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
			      const uint8_t old_root[static MERKLE_HASH_LEN],
			      const uint8_t new_root[static MERKLE_HASH_LEN],
			      const uint8_t proof[][MERKLE_HASH_LEN], size_t n)
{
	uint8_t fr[MERKLE_HASH_LEN], sr[MERKLE_HASH_LEN];
	uint64_t fn, sn;
	size_t i = 0;

	if (old_size > new_size || n > MERKLE_PROOF_MAX)
		return -EBADMSG;
	if (old_size == new_size) {
		if (n != 0 || sodium_memcmp(old_root, new_root, MERKLE_HASH_LEN) != 0)
			return -EBADMSG;
		return 0;
	}
	if (old_size == 0)
		return n == 0 ? 0 : -EBADMSG;
	if (n == 0)
		return -EBADMSG;
	/* Step 2: an old tree of a power-of-two size is a node of the new one; its root is the
	 * first element of the path, not sent. */
	if (IS_POW2(old_size)) {
		memcpy(fr, old_root, MERKLE_HASH_LEN);
	} else {
		memcpy(fr, proof[0], MERKLE_HASH_LEN);
		i = 1;
	}
	memcpy(sr, fr, MERKLE_HASH_LEN);
	fn = old_size - 1;
	sn = new_size - 1;
	while (fn & 1) {
		fn >>= 1;
		sn >>= 1;
	}
	for (; i < n; i++) {
		if (sn == 0)
			return -EBADMSG;
		if ((fn & 1) || fn == sn) {
			merkle_node_hash(proof[i], fr, fr);
			merkle_node_hash(proof[i], sr, sr);
			while (!(fn & 1) && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else {
			merkle_node_hash(sr, proof[i], sr);
		}
		fn >>= 1;
		sn >>= 1;
	}
	if (sn != 0 || sodium_memcmp(fr, old_root, MERKLE_HASH_LEN) != 0 ||
	    sodium_memcmp(sr, new_root, MERKLE_HASH_LEN) != 0)
		return -EBADMSG;
	return 0;
}

/* ---- In-memory tree ----------------------------------------------------------------------- */

/* One array per level; level k holds the complete perfect subtrees of 2^k leaves so far. */
struct merkle_mem {
	uint64_t max;                                  /* capacity in leaves, fixed at creation */
	uint64_t size;                                 /* leaves appended */
	uint8_t (*lv[MERKLE_PROOF_MAX])[MERKLE_HASH_LEN]; /* owned arrays, lv[k] has cap[k] slots */
	uint64_t cap[MERKLE_PROOF_MAX];                /* allocated slots of lv[k] */
};

int merkle_mem_new(uint64_t max_leaves, struct merkle_mem **ret_mem)
{
	struct merkle_mem *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->max = max_leaves;
	*ret_mem = m;
	return 0;
}

void merkle_mem_free(struct merkle_mem *m)
{
	if (!m)
		return;
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++)
		free(m->lv[k]);
	free(m);
}

/* Make room for slot idx at level k. */
static int mem_reserve(struct merkle_mem *m, unsigned k, uint64_t idx)
{
	uint64_t cap;
	void *p;

	if (idx < m->cap[k])
		return 0;
	cap = m->cap[k] ? m->cap[k] * 2 : 64;
	if (cap <= idx)
		cap = idx + 1;
	if (cap > SIZE_MAX / MERKLE_HASH_LEN)
		return -ENOMEM;
	p = realloc(m->lv[k], (size_t)cap * MERKLE_HASH_LEN);
	if (!p)
		return -ENOMEM;
	m->lv[k] = p;
	m->cap[k] = cap;
	return 0;
}

int merkle_mem_append(struct merkle_mem *m, const uint8_t leaf[static MERKLE_HASH_LEN])
{
	uint64_t idx = m->size;
	unsigned k;
	int ret;

	if (m->size >= m->max)
		return -E2BIG;
	/* Reserve every slot first so a failure changes nothing. */
	for (k = 0; k < MERKLE_PROOF_MAX; k++) {
		ret = mem_reserve(m, k, idx >> k);
		if (ret < 0)
			return ret;
		if (!((idx >> k) & 1))
			break;
	}
	memcpy(m->lv[0][idx], leaf, MERKLE_HASH_LEN);
	for (k = 0; k + 1 < MERKLE_PROOF_MAX && ((idx >> k) & 1); k++) {
		uint64_t i = idx >> k;

		merkle_node_hash(m->lv[k][i - 1], m->lv[k][i], m->lv[k + 1][i >> 1]);
	}
	m->size++;
	return 0;
}

uint64_t merkle_mem_size(const struct merkle_mem *m)
{
	return m->size;
}

int merkle_mem_perfect(void *ctx, unsigned level, uint64_t index, uint8_t out[static MERKLE_HASH_LEN])
{
	const struct merkle_mem *m = ctx;

	if (level >= MERKLE_PROOF_MAX || index >= (m->size >> level))
		return -ERANGE;
	memcpy(out, m->lv[level][index], MERKLE_HASH_LEN);
	return 0;
}

int merkle_mem_root(const struct merkle_mem *m, uint64_t size, uint8_t out[static MERKLE_HASH_LEN])
{
	if (size > m->size)
		return -ERANGE;
	return merkle_range_hash(0, size, merkle_mem_perfect, (void *)m, out);
}
