/* fuzz_proof: the tlog-proof parser (audit/note.h) and the RFC 9162 verifiers (audit/merkle.h)
 * on proofs from outside (`enclavectl audit check-proof` reads them from anyone).
 * The contract checked besides "no crash, leak or UB":
 *   - tlog_proof_parse() returns 0 or -EBADMSG; on 0, the note lies within the input, at most
 *     MERKLE_PROOF_MAX hashes were read, and tlog_proof_format() of what was parsed (when there
 *     was no extra line) gives back the input exactly;
 *   - tlog_proof_verify() returns 0 or one of its documented errors, never 0 for a key that
 *     signed nothing (the verifier's key is fresh, so no input can carry its signature);
 *   - the hashes fed to merkle_verify_inclusion()/merkle_verify_consistency() with sizes from
 *     the input return 0 or -EBADMSG.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "audit/merkle.h"
#include "audit/note.h"
#include "fuzz.h"

static struct note_verifier verifier;
static struct tlog_proof proof;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t sk[64];

	(void)argc, (void)argv;
	FUZZ_CHECK(sodium_init() >= 0);
	crypto_sign_keypair(verifier.pk, sk);
	sodium_memzero(sk, sizeof(sk));
	snprintf(verifier.name, sizeof(verifier.name), "enclave.fuzz/log");
	verifier.id = note_key_id(verifier.name, verifier.pk);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	uint8_t leaf[MERKLE_HASH_LEN] = { 0 }, root[MERKLE_HASH_LEN] = { 0 };
	int r;

	r = tlog_proof_parse(in, size, &proof);
	FUZZ_CHECK(r == 0 || r == -EBADMSG);
	if (r == 0) {
		FUZZ_CHECK(proof.n <= MERKLE_PROOF_MAX);
		FUZZ_CHECK(proof.note >= in && proof.note + proof.note_len == in + size);
		if (!proof.extra) {
			char *text = NULL;
			size_t len;

			FUZZ_CHECK(tlog_proof_format(proof.index, (const uint8_t(*)[32])proof.proof,
						     proof.n, proof.note, proof.note_len, &text,
						     &len) == 0);
			FUZZ_CHECK(len == size && memcmp(text, in, size) == 0);
			free(text);
		}
		r = merkle_verify_inclusion(proof.index, proof.index + proof.n, leaf,
					    (const uint8_t(*)[32])proof.proof, proof.n, root);
		FUZZ_CHECK(r == 0 || r == -EBADMSG);
		r = merkle_verify_consistency(proof.index, proof.index * 2 + 1, leaf, root,
					      (const uint8_t(*)[32])proof.proof, proof.n);
		FUZZ_CHECK(r == 0 || r == -EBADMSG);
	}
	r = tlog_proof_verify(in, size, &verifier, leaf, NULL, NULL);
	FUZZ_CHECK(r == -EBADMSG || r == -ENOKEY || r == -EKEYREJECTED || r == -ENOMEM);
	return 0;
}
