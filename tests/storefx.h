/* storefx: the scratch store of the store-level tests (test_store, test_gc): a temporary root
 * holding store/ and src/, the passphrase, and the store created or opened there, failing the
 * test with the store's own words when that does not work. In a file of its own rather than in
 * testutil.c, which tests that do not link the store use too. The short fx_ names are the ones
 * those tests have always called. */
#pragma once

#include "crypto/crypto.h"
#include "store/store.h"

struct fx {
	char *root;                /* the scratch directory (removed by fx_teardown) */
	char *store;               /* root/store, not created yet */
	char *src;                 /* root/src, an empty directory for the test's files */
	crypto_secret *pass;
};

/* A new fixture in *state: a scratch directory named after tag, the passphrase pass. */
int storefx_setup(void **state, const char *tag, const char *pass);
/* Remove the scratch directory and free the fixture. */
int fx_teardown(void **state);
/* store_create() at f->store with the cheapest key derivation; fails the test otherwise. */
struct store *fx_create(struct fx *f);
/* store_open() of f->store with options o (NULL: none); fails the test otherwise. */
struct store *fx_open_opts(struct fx *f, const struct store_open_options *o);
struct store *fx_open(struct fx *f);
