/* fuzz_node: the keys and encoders that fuzz_node_bundle, fuzz_node_seen, fuzz_node_signal and
 * fuzz_seeds share (docs/FORMAT.md 3.9, 3.10; docs/DEPLOYMENT.md section 3).
 *
 * Anyone who can write the shared store directory can fill nodes/NAME.bundle, nodes/NAME.seen
 * and nodes/signal, so each harness feeds its parser two kinds of input, chosen by byte 0:
 *   FUZZ_NODE_RAW     the rest is the file as an attacker writes it: nothing forged can pass
 *                     the signature, so this explores everything before and around it;
 *   FUZZ_NODE_SIGNED  the rest is the note text (and, for a bundle, the box's plaintext), which
 *                     the harness signs with the right key (and seals to the node), so that the
 *                     parser behind the signature is reached with anything the fuzzer makes:
 *                     a signer that signs what it should not must still not crash a reader.
 *
 * The encoder here follows docs/FORMAT.md 3.9 byte for byte: it is written from the format, not
 * from daemon/node_bundle.c, so a parser that reads a field from another place than the format
 * says breaks the harness's round trip. A change of the bundle's format changes it too.
 */
#pragma once

#include <string.h>

#include <sodium.h>

#include "audit/note.h"
#include "common/common.h"
#include "daemon/daemon.h"
#include "fuzz.h"

enum { FUZZ_NODE_RAW, FUZZ_NODE_SIGNED, FUZZ_NODE_MODES };

/* The node all three harnesses read as: its name and its key seed (node.key). */
#define FUZZ_NODE_NAME "gpu01"
#define FUZZ_NODE_SEED_BYTE 0x4e
/* The primary's audit signing key (the verifier every node holds): its name and seed. */
#define FUZZ_PRIMARY_NAME "enclave.fuzz/primary"
#define FUZZ_PRIMARY_SEED_BYTE 0x50
/* In a FUZZ_NODE_SIGNED bundle input, this in the note text becomes the box's BLAKE2b-256 (hex):
 * the fuzzer cannot find a hash, but it can move, drop or repeat the field. */
#define FUZZ_BOX_HASH "$BOX"

/* Keys made once, from the fixed seeds above; sk in guarded memory as note_sign() wants. */
struct fuzz_node_keys {
	uint8_t node_seed[32];
	uint8_t *node_sign_sk;          /* sodium_malloc'd, 64 bytes */
	uint8_t node_sign_pk[32];
	uint8_t node_box_pk[32];
	uint8_t *primary_sk;            /* sodium_malloc'd, 64 bytes */
	struct note_verifier primary;   /* the primary's verifier key */
};

static inline void fuzz_node_keys_init(struct fuzz_node_keys *k)
{
	uint8_t seed[32], box_sk[32];

	FUZZ_CHECK(sodium_init() >= 0);
	memset(k, 0, sizeof(*k));
	memset(k->node_seed, FUZZ_NODE_SEED_BYTE, 32);
	k->node_sign_sk = sodium_malloc(64);
	k->primary_sk = sodium_malloc(64);
	FUZZ_CHECK(k->node_sign_sk && k->primary_sk);
	crypto_sign_seed_keypair(k->node_sign_pk, k->node_sign_sk, k->node_seed);
	FUZZ_CHECK(node_key_box_secret(k->node_seed, box_sk) == 0);
	crypto_scalarmult_base(k->node_box_pk, box_sk);
	sodium_memzero(box_sk, sizeof(box_sk));
	memset(seed, FUZZ_PRIMARY_SEED_BYTE, 32);
	crypto_sign_seed_keypair(k->primary.pk, k->primary_sk, seed);
	snprintf(k->primary.name, sizeof(k->primary.name), FUZZ_PRIMARY_NAME);
	k->primary.id = note_key_id(k->primary.name, k->primary.pk);
}

/* A malloc'd copy of n bytes (at least one byte allocated). */
static inline void *fuzz_dup(const void *p, size_t n)
{
	void *c = malloc(n ? n : 1);

	FUZZ_CHECK(c);
	memcpy(c, p, n);
	return c;
}

/* The note a seen or signal input stands for: data[1..] as it is (FUZZ_NODE_RAW) or signed by
 * (name, sk) (FUZZ_NODE_SIGNED). 0 and a malloc'd *ret, or -1 when note_sign() refuses the text
 * (not a note text: nothing to parse). size >= 1. */
static inline int fuzz_node_note(const uint8_t *data, size_t size, const char *name,
				 const uint8_t *sk, char **ret, size_t *ret_len)
{
	if (data[0] % FUZZ_NODE_MODES == FUZZ_NODE_SIGNED)
		return note_sign((const char *)data + 1, size - 1, name, sk, ret, ret_len) < 0 ? -1
											       : 0;
	*ret = fuzz_dup(data + 1, size - 1);
	*ret_len = size - 1;
	return 0;
}

/* libsodium's crypto_box_seal(m) to pk, with a fixed ephemeral key in place of a random one, so
 * that an input always makes the same file: out = epk || crypto_box_easy(m, nonce =
 * BLAKE2b-192(epk || pk), pk, esk), mlen + crypto_box_SEALBYTES bytes. */
static inline void fuzz_seal(uint8_t *out, const uint8_t *m, size_t mlen, const uint8_t pk[32])
{
	uint8_t esk[32], seed[32], nonce[crypto_box_NONCEBYTES];
	crypto_generichash_state st;

	memset(seed, 0x45, sizeof(seed));
	crypto_box_seed_keypair(out, esk, seed);
	crypto_generichash_init(&st, NULL, 0, sizeof(nonce));
	crypto_generichash_update(&st, out, 32);
	crypto_generichash_update(&st, pk, 32);
	crypto_generichash_final(&st, nonce, sizeof(nonce));
	FUZZ_CHECK(crypto_box_easy(out + 32, m, mlen, nonce, pk, esk) == 0);
	sodium_memzero(esk, sizeof(esk));
}

/* The bundle file (docs/FORMAT.md 3.9) of note text `text` (FUZZ_BOX_HASH in it replaced by the
 * box's hash) and box plaintext `plain`, signed by the primary and sealed to the node. 0 and a
 * malloc'd *ret, or -1 when note_sign() refuses the text (not a note text: nothing to parse). */
static inline int fuzz_bundle_file(const struct fuzz_node_keys *k, const char *text, size_t tlen,
				   const uint8_t *plain, size_t plen, uint8_t **ret,
				   size_t *ret_len)
{
	size_t bl = plen + crypto_box_SEALBYTES, hl = strlen(FUZZ_BOX_HASH), nl = 0, n = 0;
	uint8_t *box = malloc(bl ? bl : 1), hash[32], *file;
	char hex[65], *t = malloc(tlen / hl * 64 + tlen + 1), *note = NULL;

	FUZZ_CHECK(box && t);
	fuzz_seal(box, plain, plen, k->node_box_pk);
	crypto_generichash(hash, 32, box, bl, NULL, 0);
	sodium_bin2hex(hex, sizeof(hex), hash, 32);
	for (size_t i = 0; i < tlen;) {
		if (tlen - i >= hl && memcmp(text + i, FUZZ_BOX_HASH, hl) == 0) {
			memcpy(t + n, hex, 64);
			n += 64;
			i += hl;
		} else {
			t[n++] = text[i++];
		}
	}
	if (note_sign(t, n, k->primary.name, k->primary_sk, &note, &nl) < 0) {
		free(t);
		free(box);
		return -1;
	}
	file = malloc(12 + nl + bl);
	FUZZ_CHECK(file);
	memcpy(file, "ENCLNBF1", 8);
	put_be32(file + 8, (uint32_t)nl);
	memcpy(file + 12, note, nl);
	memcpy(file + 12 + nl, box, bl);
	free(note);
	free(t);
	free(box);
	*ret = file;
	*ret_len = 12 + nl + bl;
	return 0;
}

/* The box plaintext of a bundle (docs/FORMAT.md 3.9) into out (room for
 * fuzz_bundle_plain_len()); its length. */
static inline size_t fuzz_bundle_plain_len(size_t name_len, size_t nauditors, size_t nkeys)
{
	return 8 + 16 + 1 + name_len + 8 + 8 + 32 + 32 + 1 + 32 * nauditors + 4 + 48 * nkeys;
}

static inline size_t fuzz_bundle_plain(uint8_t *out, const uint8_t store_id[16], const char *name,
				       uint64_t enrolment, uint64_t ring, const uint8_t ks[32],
				       const uint8_t log_key[32], const uint8_t (*auditors)[32],
				       size_t na, const struct store_node_key *e, size_t ne)
{
	size_t nl = strlen(name), off;

	memcpy(out, "ENCLNB01", 8);
	memcpy(out + 8, store_id, 16);
	out[24] = (uint8_t)nl;
	memcpy(out + 25, name, nl);
	off = 25 + nl;
	put_be64(out + off, enrolment);
	put_be64(out + off + 8, ring);
	memcpy(out + off + 16, ks, 32);
	memcpy(out + off + 48, log_key, 32);
	off += 80;
	out[off++] = (uint8_t)na;
	for (size_t i = 0; i < na; i++, off += 32)
		memcpy(out + off, auditors[i], 32);
	put_be32(out + off, (uint32_t)ne);
	off += 4;
	for (size_t i = 0; i < ne; i++, off += 48) {
		out[off] = e[i].kind;
		memset(out + off + 1, 0, 3);
		put_be32(out + off + 4, e[i].version);
		put_be64(out + off + 8, e[i].dsid);
		memcpy(out + off + 16, e[i].key, 32);
	}
	return off;
}
