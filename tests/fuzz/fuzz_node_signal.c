/* fuzz_node_signal: the primary's change signal, node_signal_parse() and node_signal_accept()
 * (daemon/node.c; docs/DEPLOYMENT.md section 3).
 *
 * nodes/signal sits in the shared store directory: anyone who can write it can put any bytes
 * there, and every node reads it within NODE_POLL_MS of a change. Byte 0 of an input picks the
 * mode (fuzz_node.h): the file as written (FUZZ_NODE_RAW), or a note text that the harness
 * signs with the primary's key (FUZZ_NODE_SIGNED). The contract checked besides "no crash, leak
 * or UB":
 *   - a refusal is -EBADMSG or -EKEYREJECTED with an err_detail(), and leaves *ret untouched;
 *   - an accepted signal is canonical: node_signal_text() of what was parsed is the note's text
 *     byte for byte;
 *   - node_signal_accept() of it into a fresh state either takes it (the state is then the
 *     signal's token and time, and the same signal again is -EALREADY, a replay) or refuses it
 *     with -EALREADY or -ERANGE and leaves the state as it was.
 */
#include <errno.h>
#include <string.h>

#include "common/err.h"
#include "fuzz_node.h"

/* The node's clock in node_signal_accept(): fixed, so an input always does the same. */
#define FUZZ_NOW_NS 1800000000000000000LL

static struct fuzz_node_keys keys;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fuzz_node_keys_init(&keys);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct node_signal sentinel = { .token = 42, .time_ns = -42 };
	struct node_signal s = sentinel;
	struct node_signal_state st = { 0 }, before;
	char *note = NULL, text[NODE_SIGNAL_MAX + 1];
	size_t len = 0, tl = 0;
	int r, n;

	if (size < 1)
		return 0;
	if (fuzz_node_note(data, size, keys.primary.name, keys.primary_sk, &note, &len) < 0)
		return 0;

	err_clear();
	r = node_signal_parse(note, len, &keys.primary, (const uint8_t *)FUZZ_STORE_ID, &s);
	if (r < 0) {
		FUZZ_CHECK(r == -EBADMSG || r == -EKEYREJECTED);
		FUZZ_CHECK(err_detail()[0] != '\0');
		FUZZ_CHECK(memcmp(&s, &sentinel, sizeof(s)) == 0);
		free(note);
		return 0;
	}
	FUZZ_CHECK(r == 0);
	FUZZ_CHECK(note_open(note, len, &keys.primary, &tl, NULL) == 0);
	n = node_signal_text((const uint8_t *)FUZZ_STORE_ID, &s, text, sizeof(text));
	FUZZ_CHECK(n > 0 && (size_t)n == tl && memcmp(text, note, tl) == 0);

	before = st;
	r = node_signal_accept(&st, &s, FUZZ_NOW_NS);
	if (r == 0) {
		FUZZ_CHECK(st.token == s.token && st.time_ns == s.time_ns);
		before = st;
		FUZZ_CHECK(node_signal_accept(&st, &s, FUZZ_NOW_NS) == -EALREADY);
		FUZZ_CHECK(memcmp(&st, &before, sizeof(st)) == 0);
	} else {
		FUZZ_CHECK(r == -EALREADY || r == -ERANGE);
		FUZZ_CHECK(memcmp(&st, &before, sizeof(st)) == 0);
	}
	free(note);
	return 0;
}
