/* fuzz: what every libFuzzer harness in tests/fuzz shares.
 *
 * A harness gets arbitrary bytes, hands them to one parser of outside input, and checks the
 * parser's documented contract on top of what ASan and UBSan check. A broken contract is a bug
 * like a crash, so it ends the run the same way: abort(), which libFuzzer reports with the input.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* libFuzzer's entry points; declared here so -Wmissing-prototypes holds for the harnesses. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort, naming the broken property, when cond is false. Not assert(): NDEBUG must not turn the
 * checks off in a RelWithDebInfo build. */
#define FUZZ_CHECK(cond)                                                                  \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                   \
			abort();                                                          \
		}                                                                         \
	} while (0)

/* What the harnesses check against, and fuzz_seeds.c makes its valid seeds with. */
#define FUZZ_PASSPHRASE "fuzz passphrase"      /* fuzz_master_key unlocks with this */
/* fuzz_crypt4gh reads files with this X25519 secret key; byte 0 of an input picks the target. */
#define FUZZ_C4GH_SK { 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, \
		       0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, \
		       0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42 }
enum { FUZZ_C4GH_FILE, FUZZ_C4GH_PUBKEY, FUZZ_C4GH_SECKEY, FUZZ_C4GH_COUNT };
#define FUZZ_PACK_ID 7ull                      /* fuzz_pack_header checks this pack id ... */
#define FUZZ_STORE_ID "fuzz-store-id-01"       /* ... and this store id (16 bytes, no NUL) */
/* fuzz_keyring opens rings with this master key (and FUZZ_STORE_ID). */
#define FUZZ_RING_MASTER { 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, \
			   0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, \
			   0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a }

/* fuzz_index_records: byte 0 of an input (modulo FUZZ_T_COUNT) picks the target. */
enum fuzz_index_target {
	FUZZ_T_DATASET,		/* dataset_rec_decode: key length, key, record */
	FUZZ_T_VERSION,		/* version_rec_decode */
	FUZZ_T_INODE,		/* inode_decode */
	FUZZ_T_DIRENT,		/* dirent_rec_decode (format 2) */
	FUZZ_T_NAME,		/* store_name_valid */
	FUZZ_T_DATASET_NAME,	/* store_dataset_name_valid */
	FUZZ_T_DIRENT_V1,	/* dirent_decode_v1 (format 1, read by the upgrade) */
	FUZZ_T_SEALED,		/* index_unseal: cf, key length, key, clear flag, value */
	FUZZ_T_COUNT
};
