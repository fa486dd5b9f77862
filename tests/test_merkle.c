/* test_merkle: RFC 6962 / RFC 9162 tree hashes, proofs and verification (audit/merkle.h).
 *
 * Known answers: the certificate-transparency reference tree of 8 leaves (its roots, inclusion
 * and consistency proofs, as published with google/certificate-transparency and
 * transparency-dev/merkle), typed in below. Then every tree size 1..300 and every pair of sizes:
 * every proof verifies and every single mutation of it fails. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>

#include "audit/merkle.h"
#include "common/common.h"

#define H MERKLE_HASH_LEN

static void unhex(const char *s, uint8_t out[static H])
{
	size_t n = 0;

	assert_int_equal(sodium_hex2bin(out, H, s, strlen(s), NULL, &n, NULL), 0);
	assert_int_equal(n, H);
}

/* The reference leaves: "", 00, 10, 2021, 3031, 40414243, 5051525354555657,
 * 606162636465666768696a6b6c6d6e6f. */
static const struct {
	const char *hex;
} ref_inputs[8] = {
	{ "" }, { "00" }, { "10" }, { "2021" }, { "3031" }, { "40414243" }, { "5051525354555657" },
	{ "606162636465666768696a6b6c6d6e6f" },
};

/* MTH of the first n reference leaves, n = 0..8. */
static const char *const ref_roots[9] = {
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
	"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
	"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

/* Published proofs of the reference tree: (a, b) is (index, size) for inclusion and
 * (old, new) for consistency. */
struct ref_proof {
	uint64_t a, b;
	size_t n;
	const char *h[3];
};
static const struct ref_proof ref_inclusion[] = {
	{ 0, 8, 3, { "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4" } },
	{ 5, 8, 3, { "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
		     "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7" } },
	{ 0, 1, 0, { NULL } },
};
static const struct ref_proof ref_consistency[] = {
	{ 1, 8, 3, { "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4" } },
	{ 6, 8, 3, { "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
		     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
		     "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7" } },
	{ 2, 5, 2, { "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b" } },
	{ 2, 8, 2, { "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4" } },
};

static struct merkle_mem *ref_tree(void)
{
	struct merkle_mem *m;

	assert_int_equal(merkle_mem_new(8, &m), 0);
	for (int i = 0; i < 8; i++) {
		uint8_t in[16], leaf[H];
		size_t n = 0;

		assert_int_equal(sodium_hex2bin(in, sizeof(in), ref_inputs[i].hex,
						strlen(ref_inputs[i].hex), NULL, &n, NULL), 0);
		merkle_leaf_hash(in, n, leaf);
		assert_int_equal(merkle_mem_append(m, leaf), 0);
	}
	return m;
}

static void test_known_roots(void **state)
{
	struct merkle_mem *m = ref_tree();
	struct merkle_frontier f;
	uint8_t want[H], got[H], leaf[H];

	(void)state;
	merkle_empty_root(got);
	unhex(ref_roots[0], want);
	assert_memory_equal(got, want, H);
	/* The leaf hash of "" is the root of the one-leaf tree. */
	merkle_leaf_hash("", 0, got);
	unhex(ref_roots[1], want);
	assert_memory_equal(got, want, H);
	/* The node hash of leaves 0 and 1 is the two-leaf root. */
	assert_int_equal(merkle_mem_perfect(m, 1, 0, got), 0);
	unhex(ref_roots[2], want);
	assert_memory_equal(got, want, H);

	merkle_frontier_init(&f);
	for (uint64_t n = 0; n <= 8; n++) {
		unhex(ref_roots[n], want);
		assert_int_equal(merkle_mem_root(m, n, got), 0);
		assert_memory_equal(got, want, H);
		merkle_frontier_root(&f, got);
		assert_memory_equal(got, want, H);
		if (n < 8) {
			assert_int_equal(merkle_mem_perfect(m, 0, n, leaf), 0);
			merkle_frontier_append(&f, leaf);
		}
	}
	assert_int_equal(merkle_mem_root(m, 9, got), -ERANGE);
	assert_int_equal(merkle_mem_perfect(m, 3, 1, got), -ERANGE);
	merkle_mem_free(m);
}

static void test_known_proofs(void **state)
{
	struct merkle_mem *m = ref_tree();
	uint8_t proof[MERKLE_PROOF_MAX][H], want[3][H], ra[H], rb[H], leaf[H];
	size_t n;

	(void)state;
	for (size_t t = 0; t < ARRAY_SIZE(ref_inclusion); t++) {
		const struct ref_proof *p = &ref_inclusion[t];

		assert_int_equal(merkle_inclusion_proof(p->a, p->b, merkle_mem_perfect, m, proof, &n), 0);
		assert_int_equal(n, p->n);
		for (size_t i = 0; i < n; i++) {
			unhex(p->h[i], want[i]);
			assert_memory_equal(proof[i], want[i], H);
		}
		unhex(ref_roots[p->b], rb);
		assert_int_equal(merkle_mem_perfect(m, 0, p->a, leaf), 0);
		assert_int_equal(merkle_verify_inclusion(p->a, p->b, leaf,
							 (const uint8_t(*)[H])want, p->n, rb), 0);
	}
	for (size_t t = 0; t < ARRAY_SIZE(ref_consistency); t++) {
		const struct ref_proof *p = &ref_consistency[t];

		assert_int_equal(merkle_consistency_proof(p->a, p->b, merkle_mem_perfect, m, proof, &n), 0);
		assert_int_equal(n, p->n);
		for (size_t i = 0; i < n; i++) {
			unhex(p->h[i], want[i]);
			assert_memory_equal(proof[i], want[i], H);
		}
		unhex(ref_roots[p->a], ra);
		unhex(ref_roots[p->b], rb);
		assert_int_equal(merkle_verify_consistency(p->a, p->b, ra, rb,
							   (const uint8_t(*)[H])want, p->n), 0);
		/* Swapped roots: a forgery. */
		assert_int_equal(merkle_verify_consistency(p->a, p->b, rb, ra,
							   (const uint8_t(*)[H])want, p->n), -EBADMSG);
	}
	merkle_mem_free(m);
}

/* Edge cases as RFC 9162 and its reference implementation have them. */
static void test_edges(void **state)
{
	struct merkle_mem *m = ref_tree();
	uint8_t proof[MERKLE_PROOF_MAX][H], r0[H], r3[H], r5[H], leaf[H], other[H];
	size_t n = 99;

	(void)state;
	assert_int_equal(merkle_mem_root(m, 0, r0), 0);
	assert_int_equal(merkle_mem_root(m, 3, r3), 0);
	assert_int_equal(merkle_mem_root(m, 5, r5), 0);
	assert_int_equal(merkle_mem_perfect(m, 0, 0, leaf), 0);
	memset(other, 0x5a, H);

	/* Inclusion: size 0 and index >= size fail; size 1 has the empty proof. */
	assert_int_equal(merkle_inclusion_proof(0, 0, merkle_mem_perfect, m, proof, &n), -EINVAL);
	assert_int_equal(n, 99);  /* untouched on failure */
	assert_int_equal(merkle_verify_inclusion(0, 0, leaf, NULL, 0, r0), -EBADMSG);
	assert_int_equal(merkle_verify_inclusion(3, 3, leaf, NULL, 0, r3), -EBADMSG);
	assert_int_equal(merkle_inclusion_proof(0, 1, merkle_mem_perfect, m, proof, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(merkle_verify_inclusion(0, 1, leaf, NULL, 0, leaf), 0);
	assert_int_equal(merkle_verify_inclusion(0, 1, leaf, NULL, 0, other), -EBADMSG);
	/* An empty proof for a larger tree fails. */
	assert_int_equal(merkle_verify_inclusion(0, 3, leaf, NULL, 0, r3), -EBADMSG);

	/* Consistency: equal sizes need an empty proof and equal roots. */
	assert_int_equal(merkle_consistency_proof(3, 3, merkle_mem_perfect, m, proof, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(merkle_verify_consistency(3, 3, r3, r3, NULL, 0), 0);
	assert_int_equal(merkle_verify_consistency(3, 3, r3, r5, NULL, 0), -EBADMSG);
	assert_int_equal(merkle_verify_consistency(3, 3, r3, r3, (const uint8_t(*)[H])&r3, 1),
			 -EBADMSG);
	/* From the empty tree: empty proof, any roots. */
	assert_int_equal(merkle_consistency_proof(0, 5, merkle_mem_perfect, m, proof, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(merkle_verify_consistency(0, 5, r0, r5, NULL, 0), 0);
	assert_int_equal(merkle_verify_consistency(0, 5, r0, r5, (const uint8_t(*)[H])&r5, 1),
			 -EBADMSG);
	assert_int_equal(merkle_verify_consistency(0, 0, r0, r0, NULL, 0), 0);
	/* Otherwise an empty proof fails, and so does going backwards. */
	assert_int_equal(merkle_verify_consistency(3, 5, r3, r5, NULL, 0), -EBADMSG);
	assert_int_equal(merkle_consistency_proof(5, 3, merkle_mem_perfect, m, proof, &n), -EINVAL);
	assert_int_equal(merkle_verify_consistency(5, 3, r5, r3, NULL, 0), -EBADMSG);

	/* Range hashes: any range, begin > end refused. */
	assert_int_equal(merkle_range_hash(3, 2, merkle_mem_perfect, m, r0), -EINVAL);
	assert_int_equal(merkle_range_hash(2, 2, merkle_mem_perfect, m, other), 0);
	merkle_empty_root(r0);
	assert_memory_equal(other, r0, H);
	merkle_mem_free(m);
}

/* A perfect_fn that fails: the builders pass its error through. */
static int failing_perfect(void *ctx, unsigned level, uint64_t index, uint8_t out[static H])
{
	(void)ctx, (void)level, (void)index, (void)out;
	return -EIO;
}

static void test_errors_pass_through(void **state)
{
	uint8_t proof[MERKLE_PROOF_MAX][H], out[H];
	size_t n = 7;

	(void)state;
	assert_int_equal(merkle_inclusion_proof(1, 5, failing_perfect, NULL, proof, &n), -EIO);
	assert_int_equal(merkle_consistency_proof(3, 5, failing_perfect, NULL, proof, &n), -EIO);
	assert_int_equal(n, 7);
	assert_int_equal(merkle_range_hash(0, 5, failing_perfect, NULL, out), -EIO);
}

#define MAXN 300

/* Leaves and every root of sizes 0..MAXN. */
struct big {
	struct merkle_mem *m;
	uint8_t roots[MAXN + 1][H];
};

static struct big *big_tree(void)
{
	struct big *b = calloc(1, sizeof(*b));
	struct merkle_frontier f;

	assert_non_null(b);
	assert_int_equal(merkle_mem_new(MAXN, &b->m), 0);
	merkle_frontier_init(&f);
	merkle_frontier_root(&f, b->roots[0]);
	for (uint32_t i = 0; i < MAXN; i++) {
		uint8_t data[4], leaf[H], r[H];

		put_be32(data, i);
		merkle_leaf_hash(data, sizeof(data), leaf);
		assert_int_equal(merkle_mem_append(b->m, leaf), 0);
		merkle_frontier_append(&f, leaf);
		merkle_frontier_root(&f, b->roots[i + 1]);
		/* The frontier and the full table agree at every size. */
		assert_int_equal(merkle_mem_root(b->m, i + 1, r), 0);
		assert_memory_equal(r, b->roots[i + 1], H);
	}
	assert_int_equal(merkle_mem_append(b->m, b->roots[0]), -E2BIG);
	return b;
}

static void test_all_inclusion(void **state)
{
	struct big *b = big_tree();
	uint8_t proof[MERKLE_PROOF_MAX + 1][H], leaf[H];
	uint64_t checked = 0;

	(void)state;
	for (uint64_t size = 1; size <= MAXN; size++) {
		for (uint64_t i = 0; i < size; i++) {
			const uint8_t(*p)[H] = (const uint8_t(*)[H])proof;
			size_t n;

			assert_int_equal(merkle_inclusion_proof(i, size, merkle_mem_perfect, b->m, proof, &n), 0);
			assert_int_equal(merkle_mem_perfect(b->m, 0, i, leaf), 0);
			assert_int_equal(merkle_verify_inclusion(i, size, leaf, p, n, b->roots[size]), 0);
			/* A flipped byte in a sample of the hashes (the first, the last and one
			 * that moves with i and size), a different byte each time. */
			for (size_t k = 0; k < n; k++) {
				if (k != 0 && k != n - 1 && k != (i + size) % n)
					continue;
				size_t at = (k * 7 + i + size) % H;

				proof[k][at] ^= 0x01;
				assert_int_equal(merkle_verify_inclusion(i, size, leaf, p, n, b->roots[size]), -EBADMSG);
				proof[k][at] ^= 0x01;
			}
			/* A flipped leaf and root. */
			leaf[i % H] ^= 0x80;
			assert_int_equal(merkle_verify_inclusion(i, size, leaf, p, n, b->roots[size]), -EBADMSG);
			leaf[i % H] ^= 0x80;
			/* Dropped hashes: the last, the first. */
			if (n > 0) {
				assert_int_equal(merkle_verify_inclusion(i, size, leaf, p, n - 1, b->roots[size]), -EBADMSG);
				assert_int_equal(merkle_verify_inclusion(i, size, leaf, p + 1, n - 1, b->roots[size]), -EBADMSG);
			}
			/* An added hash at the end (a copy of the leaf, or of the root). */
			memcpy(proof[n], leaf, H);
			assert_int_equal(merkle_verify_inclusion(i, size, leaf, p, n + 1, b->roots[size]), -EBADMSG);
			memcpy(proof[n], b->roots[size], H);
			assert_int_equal(merkle_verify_inclusion(i, size, leaf, p, n + 1, b->roots[size]), -EBADMSG);
			/* Wrong index. */
			if (i > 0)
				assert_int_equal(merkle_verify_inclusion(i - 1, size, leaf, p, n, b->roots[size]), -EBADMSG);
			if (i + 1 < size)
				assert_int_equal(merkle_verify_inclusion(i + 1, size, leaf, p, n, b->roots[size]), -EBADMSG);
			assert_int_equal(merkle_verify_inclusion(size, size, leaf, p, n, b->roots[size]), -EBADMSG);
			/* Wrong size: the proof against the tree of another size. */
			if (size > i + 1)
				assert_int_equal(merkle_verify_inclusion(i, size - 1, leaf, p, n, b->roots[size - 1]), -EBADMSG);
			if (size < MAXN)
				assert_int_equal(merkle_verify_inclusion(i, size + 1, leaf, p, n, b->roots[size + 1]), -EBADMSG);
			checked++;
		}
	}
	assert_int_equal(checked, MAXN * (MAXN + 1) / 2);
	merkle_mem_free(b->m);
	free(b);
}

static void test_all_consistency(void **state)
{
	struct big *b = big_tree();
	uint8_t proof[MERKLE_PROOF_MAX + 1][H];

	(void)state;
	for (uint64_t n2 = 1; n2 <= MAXN; n2++) {
		for (uint64_t n1 = 1; n1 <= n2; n1++) {
			const uint8_t(*p)[H] = (const uint8_t(*)[H])proof;
			const uint8_t *r1 = b->roots[n1], *r2 = b->roots[n2];
			size_t n;

			assert_int_equal(merkle_consistency_proof(n1, n2, merkle_mem_perfect, b->m, proof, &n), 0);
			assert_int_equal(merkle_verify_consistency(n1, n2, r1, r2, p, n), 0);
			if (n1 == n2) {
				assert_int_equal(n, 0);
				continue;
			}
			assert_true(n > 0);
			for (size_t k = 0; k < n; k++) {
				if (k != 0 && k != n - 1 && k != (n1 + n2) % n)
					continue;
				size_t at = (k * 5 + n1 + n2) % H;

				proof[k][at] ^= 0x01;
				assert_int_equal(merkle_verify_consistency(n1, n2, r1, r2, p, n), -EBADMSG);
				proof[k][at] ^= 0x01;
			}
			assert_int_equal(merkle_verify_consistency(n1, n2, r1, r2, p, n - 1), -EBADMSG);
			assert_int_equal(merkle_verify_consistency(n1, n2, r1, r2, p + 1, n - 1), -EBADMSG);
			memcpy(proof[n], r1, H);
			assert_int_equal(merkle_verify_consistency(n1, n2, r1, r2, p, n + 1), -EBADMSG);
			memcpy(proof[n], r2, H);
			assert_int_equal(merkle_verify_consistency(n1, n2, r1, r2, p, n + 1), -EBADMSG);
			/* Wrong sizes, each with the root of the size claimed. */
			if (n1 > 1)
				assert_int_equal(merkle_verify_consistency(n1 - 1, n2, b->roots[n1 - 1], r2, p, n), -EBADMSG);
			if (n1 + 1 < n2)
				assert_int_equal(merkle_verify_consistency(n1 + 1, n2, b->roots[n1 + 1], r2, p, n), -EBADMSG);
			if (n2 < MAXN)
				assert_int_equal(merkle_verify_consistency(n1, n2 + 1, r1, b->roots[n2 + 1], p, n), -EBADMSG);
			if (n2 - 1 > n1)
				assert_int_equal(merkle_verify_consistency(n1, n2 - 1, r1, b->roots[n2 - 1], p, n), -EBADMSG);
			/* Wrong roots. */
			assert_int_equal(merkle_verify_consistency(n1, n2, r2, r2, p, n), -EBADMSG);
			assert_int_equal(merkle_verify_consistency(n1, n2, r1, r1, p, n), -EBADMSG);
		}
	}
	merkle_mem_free(b->m);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_roots),
		cmocka_unit_test(test_known_proofs),
		cmocka_unit_test(test_edges),
		cmocka_unit_test(test_errors_pass_through),
		cmocka_unit_test(test_all_inclusion),
		cmocka_unit_test(test_all_consistency),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
