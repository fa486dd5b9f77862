/* fuzz_node_bundle: a node's key bundle parser, node_bundle_parse() (daemon/node_bundle.c;
 * docs/FORMAT.md 3.9).
 *
 * nodes/NAME.bundle sits in the shared store directory: anyone who can write it can put any
 * bytes there, and the node reads them at start and whenever the file changes. Byte 0 of an
 * input picks the mode (fuzz_node.h): the file as written (FUZZ_NODE_RAW), or a note text and a
 * box plaintext that the harness signs as the primary and seals to the node (FUZZ_NODE_SIGNED:
 * be16 text length, text, plaintext). Bit 1 of byte 0 parses with no store id (a node's first
 * open). The contract checked besides "no crash, leak or UB":
 *   - a refusal is -EBADMSG or -EKEYREJECTED (-ENOMEM aside) with an err_detail(), and leaves
 *     *ret untouched;
 *   - an accepted bundle is this node's, of this store, with its counts within their bounds;
 *   - it re-encodes exactly: its note, made anew from the parsed fields and signed by the
 *     primary, is the file's note byte for byte (canonical), and the plaintext encoded anew from
 *     the parsed keys is the plaintext the box holds (nothing read from the wrong place, nothing
 *     in the box left unread).
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "common/err.h"
#include "fuzz_node.h"

static struct fuzz_node_keys keys;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fuzz_node_keys_init(&keys);
	return 0;
}

/* The accepted bundle b, from file (len bytes), must encode back to the same note and box. */
static void check_round_trip(const struct node_bundle *b, const uint8_t *file, size_t len)
{
	uint32_t notel = get_be32(file + 8);
	const uint8_t *box = file + 12 + notel;
	size_t bl = len - 12 - notel, pl = bl - crypto_box_SEALBYTES, el;
	uint8_t hash[32], box_sk[32], *pt = malloc(pl + 1), *again;
	char hex[33], hhex[65], text[512], *note = NULL;
	size_t nl = 0;
	int n;

	FUZZ_CHECK(pt);
	crypto_generichash(hash, 32, box, bl, NULL, 0);
	sodium_bin2hex(hex, sizeof(hex), b->store_id, 16);
	sodium_bin2hex(hhex, sizeof(hhex), hash, 32);
	n = snprintf(text, sizeof(text), "enclave-node-bundle/1 %s\nnode %s\nenrolment %" PRIu64
		     "\nring %" PRIu64 "\nbox %s\n", hex, b->name, b->enrolment, b->ring, hhex);
	FUZZ_CHECK(n > 0 && (size_t)n < sizeof(text));
	FUZZ_CHECK(note_sign(text, (size_t)n, keys.primary.name, keys.primary_sk, &note, &nl) == 0);
	FUZZ_CHECK(nl == notel && memcmp(note, file + 12, nl) == 0);
	free(note);

	FUZZ_CHECK(node_key_box_secret(keys.node_seed, box_sk) == 0);
	FUZZ_CHECK(crypto_box_seal_open(pt, box, bl, keys.node_box_pk, box_sk) == 0);
	sodium_memzero(box_sk, sizeof(box_sk));
	el = fuzz_bundle_plain_len(strlen(b->name), b->nauditors, b->keys->n);
	FUZZ_CHECK(el == pl);
	again = malloc(el);
	FUZZ_CHECK(again);
	FUZZ_CHECK(fuzz_bundle_plain(again, b->store_id, b->name, b->enrolment, b->ring,
				     b->keys->ix_seal, b->audit_key,
				     (const uint8_t (*)[32])b->auditors, b->nauditors, b->keys->e,
				     b->keys->n) == el);
	FUZZ_CHECK(memcmp(again, pt, el) == 0);
	free(again);
	free(pt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct node_bundle *b = (struct node_bundle *)&keys, *sentinel = b;
	const uint8_t *sid = (const uint8_t *)FUZZ_STORE_ID;
	uint8_t *file = NULL;
	size_t len;
	int r;

	if (size < 1)
		return 0;
	if (data[0] & 2)
		sid = NULL;
	if (data[0] % FUZZ_NODE_MODES == FUZZ_NODE_SIGNED) {
		size_t tl;

		if (size < 3 || (tl = (size_t)data[1] << 8 | data[2]) > size - 3)
			return 0;
		if (fuzz_bundle_file(&keys, (const char *)data + 3, tl, data + 3 + tl,
				     size - 3 - tl, &file, &len) < 0)
			return 0;
	} else {
		len = size - 1;
		file = fuzz_dup(data + 1, len);
	}
	if (len > NODE_BUNDLE_MAX) {   /* node_bundle_read() refuses it before parsing */
		free(file);
		return 0;
	}

	err_clear();
	r = node_bundle_parse(file, len, FUZZ_NODE_NAME, &keys.primary, sid, keys.node_seed, &b);
	if (r < 0) {
		FUZZ_CHECK(r == -EBADMSG || r == -EKEYREJECTED || r == -ENOMEM);
		FUZZ_CHECK(err_detail()[0] != '\0' || r == -ENOMEM);
		FUZZ_CHECK(b == sentinel);
	} else {
		FUZZ_CHECK(r == 0 && b != sentinel && b->keys);
		FUZZ_CHECK(strcmp(b->name, FUZZ_NODE_NAME) == 0);
		FUZZ_CHECK(!sid || memcmp(b->store_id, sid, 16) == 0);
		FUZZ_CHECK(memcmp(b->keys->store_id, b->store_id, 16) == 0);
		FUZZ_CHECK(b->keys->generation == b->ring);
		FUZZ_CHECK(b->nauditors <= STORE_AUDITORS_MAX);
		FUZZ_CHECK(b->keys->n <= STORE_NODE_KEYS_MAX);
		check_round_trip(b, file, len);
		node_bundle_free(b);
	}
	free(file);
	return 0;
}
