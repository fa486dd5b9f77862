/* bcrypt_pbkdf: OpenBSD's password-based key derivation on the bcrypt hash (the "bcrypt" kdf of
 * OpenSSH private keys, PROTOCOL.key, and of Crypt4GH private keys). Neither libsodium nor
 * OpenSSL has it; crypto/bcrypt_pbkdf.c implements it on its own Blowfish (eksblowfish), from
 * the description in OpenBSD's bcrypt_pbkdf(3) and Provos & Mazieres' bcrypt paper. Known-answer
 * vectors computed independently by python3-bcrypt are in tests/test_crypt4gh.c.
 *
 * Shape: like PBKDF2, but each round is a bcrypt hash (64 Blowfish key expansions with a SHA-512
 * of the passphrase and of the salt or the previous round), and the output bytes of the blocks
 * are interleaved, so that a key longer than 32 bytes costs the whole work for every byte.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Rounds accepted. One round costs about 4 ms per 32 bytes of output (as ssh-keygen's own; measured
 * in docs/CRYPT4GH.md), so the cap bounds what a hostile key file can make us spend to some 16 s
 * for an OpenSSH key (48 bytes); OpenSSH writes 16 rounds by default, the Crypt4GH tools 16 or
 * 100, and ssh-keygen -a 100 is common advice. */
#define CRYPTO_BCRYPT_ROUNDS_MAX 2048u
/* Longest salt (OpenSSH and Crypt4GH write 16 bytes) and output (32 blocks of 32 bytes). */
#define CRYPTO_BCRYPT_SALT_MAX 1024u
#define CRYPTO_BCRYPT_OUT_MAX 1024u

/* Derive out_len bytes into out from pass and salt with rounds rounds. Every intermediate value
 * (Blowfish state, hashes) is wiped before returning. -EINVAL an empty passphrase or salt, 0
 * rounds or 0 bytes wanted; -E2BIG rounds, salt or output over the caps above. out is untouched
 * on failure. */
int crypto_bcrypt_pbkdf(const uint8_t *pass, size_t pass_len, const uint8_t *salt,
			size_t salt_len, uint32_t rounds, uint8_t *out, size_t out_len);
