/* fuzz_node_seen: a node's status note parser, node_seen_parse() (daemon/node_seen.c;
 * docs/FORMAT.md 3.10).
 *
 * nodes/NAME.seen sits in the shared store directory: anyone who can write it can put any bytes
 * there, and `enclavectl node show` on the primary reads it. Byte 0 of an input picks the mode
 * (fuzz_node.h): the file as written (FUZZ_NODE_RAW), or a note text that the harness signs
 * with the node's key (FUZZ_NODE_SIGNED). The contract checked besides "no crash, leak or UB":
 *   - a refusal is -EBADMSG or -EKEYREJECTED with an err_detail(), and leaves *ret untouched;
 *   - an accepted note is canonical: node_seen_text() of what was parsed is the note's text
 *     byte for byte.
 */
#include <errno.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct node_seen sentinel = { .time_ns = -42, .seq = 42 };
	struct node_seen s = sentinel;
	char *note = NULL, text[NODE_SEEN_MAX];
	size_t len = 0, tl = 0;
	int r, n;

	if (size < 1)
		return 0;
	if (fuzz_node_note(data, size, FUZZ_NODE_NAME, keys.node_sign_sk, &note, &len) < 0)
		return 0;

	err_clear();
	r = node_seen_parse(note, len, FUZZ_NODE_NAME, (const uint8_t *)FUZZ_STORE_ID,
			    keys.node_sign_pk, &s);
	if (r < 0) {
		FUZZ_CHECK(r == -EBADMSG || r == -EKEYREJECTED);
		FUZZ_CHECK(err_detail()[0] != '\0');
		FUZZ_CHECK(memcmp(&s, &sentinel, sizeof(s)) == 0);
	} else {
		struct note_verifier v = { 0 };

		FUZZ_CHECK(r == 0);
		snprintf(v.name, sizeof(v.name), FUZZ_NODE_NAME);
		memcpy(v.pk, keys.node_sign_pk, 32);
		v.id = note_key_id(v.name, v.pk);
		FUZZ_CHECK(note_open(note, len, &v, &tl, NULL) == 0);
		n = node_seen_text((const uint8_t *)FUZZ_STORE_ID, FUZZ_NODE_NAME, &s, text,
				   sizeof(text));
		FUZZ_CHECK(n > 0 && (size_t)n == tl && memcmp(text, note, tl) == 0);
	}
	free(note);
	return 0;
}
