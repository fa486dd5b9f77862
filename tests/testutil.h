/* testutil: scratch directories, deterministic data and source trees for the tests. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"

/* A new scratch directory under $ENCLAVE_TEST_TMPDIR (or /tmp); malloc'd path. Aborts on failure. */
char *tu_mkdtemp(const char *tag);
/* rm -rf path. */
void tu_rm_rf(const char *path);
/* Deterministic pseudo-random bytes (xorshift) so expected content can be regenerated. */
void tu_fill(uint8_t *buf, size_t n, uint64_t seed);
/* Write a file of n bytes of tu_fill(seed) content (mode 0640). Aborts on failure. */
void tu_write_seeded(const char *path, size_t n, uint64_t seed);
/* tu_write_seeded() at a printf-formatted path. */
__attribute__((format(printf, 3, 4))) void tu_seed_file(size_t n, uint64_t seed, const char *fmt,
							 ...);
/* Write exactly the given bytes. Aborts on failure. */
void tu_write_file(const char *path, const void *data, size_t n);
/* Read a whole file (malloc'd, *ret_len set). Aborts on failure. */
uint8_t *tu_read_file(const char *path, size_t *ret_len);
/* Copy the file src to dst (created or replaced). Aborts on failure. */
void tu_copy_file(const char *src, const char *dst);
/* Copy the regular files of a flat directory src into a new directory dst. Aborts on failure. */
void tu_copy_flat_dir(const char *src, const char *dst);
/* Run argv (argv[0] looked for in PATH; no shell) and wait: its exit status, 128 + the signal
 * that killed it, or 127 when it could not be run. */
int tu_run_argv(char *const argv[]);
/* cp -a src dst through tu_run_argv(). Aborts on failure. */
void tu_copy_tree(const char *src, const char *dst);
/* Total size of the regular files in a flat directory, and their count in *ret_count. */
uint64_t tu_dir_bytes(const char *dir, unsigned *ret_count);
/* A passphrase held as a crypto_secret. */
crypto_secret *tu_pass(const char *s);
/* Printf into a new malloc'd string. */
__attribute__((format(printf, 1, 2))) char *tu_fmt(const char *fmt, ...);
