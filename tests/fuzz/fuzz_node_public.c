/* fuzz_node_public: the node public key text parser, node_public_parse() (daemon/node.c;
 * docs/DEPLOYMENT.md section 7).
 *
 * `enclavectl node add NAME PUBLIC-KEY` sends the text a steward pasted, or the node.pub file it
 * was given, to the daemon, which parses it to enrol the node: whoever hands the steward that
 * text chooses every byte of it. The input is the text as it is. The contract checked besides
 * "no crash, leak or UB":
 *   - a refusal is -EINVAL with an err_detail(), and leaves both outputs untouched;
 *   - an accepted text names a valid node and is canonical: node_public_format() of what was
 *     parsed is the text, less its trailing newlines ("\n", "\r"), byte for byte.
 */
#include <errno.h>
#include <string.h>

#include "common/err.h"
#include "daemon/daemon.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	char name[NODE_NAME_MAX + 1], sentinel_name[NODE_NAME_MAX + 1];
	char back[NODE_PUBLIC_TEXT_MAX + 1];
	struct node_public pub, sentinel_pub;
	size_t len = size;
	int r;

	memset(sentinel_name, 0x5a, sizeof(sentinel_name));
	memset(&sentinel_pub, 0xa5, sizeof(sentinel_pub));
	memcpy(name, sentinel_name, sizeof(name));
	pub = sentinel_pub;

	err_clear();
	r = node_public_parse(text, size, name, &pub);
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL);
		FUZZ_CHECK(err_detail()[0] != '\0');
		FUZZ_CHECK(memcmp(name, sentinel_name, sizeof(name)) == 0);
		FUZZ_CHECK(memcmp(&pub, &sentinel_pub, sizeof(pub)) == 0);
		return 0;
	}
	FUZZ_CHECK(r == 0);
	FUZZ_CHECK(memchr(name, '\0', sizeof(name)) && node_name_valid(name));
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	FUZZ_CHECK(node_public_format(name, &pub, back, sizeof(back)) == 0);
	FUZZ_CHECK(strlen(back) == len && memcmp(back, text, len) == 0);
	return 0;
}
