/* fuzz_note: the signed-note, checkpoint and checkpoints-file parsers (audit/note.h).
 *
 * Checkpoints come from a file anyone with write access to the log directory may have changed,
 * and from auditors (--trusted). The contract checked besides "no crash, leak or UB":
 *   - note_open() with a fixed verifier returns 0, -EBADMSG, -ENOKEY or -EKEYREJECTED only, and
 *     on 0 the text length is within the input and the text ends in '\n';
 *   - checkpoint_parse() of the input either fails with -EBADMSG or gives a checkpoint whose
 *     checkpoint_format() (when it has a time) parses back to the same checkpoint;
 *   - note_verifier_parse() that succeeds round-trips through note_verifier_format().
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "audit/note.h"
#include "fuzz.h"

static struct note_verifier verifier;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t pk[32], sk[64], seed[32] = { 1 };

	(void)argc, (void)argv;
	FUZZ_CHECK(sodium_init() >= 0);
	crypto_sign_seed_keypair(pk, sk, seed);
	snprintf(verifier.name, sizeof(verifier.name), "enclave.fuzz/log");
	memcpy(verifier.pk, pk, 32);
	verifier.id = note_key_id(verifier.name, pk);
	sodium_memzero(sk, sizeof(sk));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct checkpoint c, c2;
	struct note_verifier v;
	size_t tl = 0;
	int r;

	r = note_open(in, size, &verifier, &tl, NULL);
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -ENOKEY || r == -EKEYREJECTED);
	if (r == 0)
		FUZZ_CHECK(tl > 0 && tl < size && in[tl - 1] == '\n');

	r = checkpoint_parse(in, size, &c);
	FUZZ_CHECK(r == 0 || r == -EBADMSG);
	if (r == 0 && c.time_ns > 0) {
		char *text = NULL;
		size_t len;

		if (checkpoint_format(&c, &text, &len) == 0) {
			FUZZ_CHECK(checkpoint_parse(text, len, &c2) == 0);
			FUZZ_CHECK(memcmp(&c, &c2, sizeof(c)) == 0);
			free(text);
		}
	}

	r = note_verifier_parse(in, size, &v);
	FUZZ_CHECK(r == 0 || r == -EBADMSG);
	if (r == 0) {
		char *text = NULL;

		FUZZ_CHECK(note_verifier_format(v.name, v.pk, &text) == 0);
		FUZZ_CHECK(strlen(text) == size && memcmp(text, in, size) == 0);
		free(text);
	}
	return 0;
}
