/* The store opened offline by an end-to-end test, as someone holding the passphrase and the
 * store directory would (apart from e2e.c: only the tests that link the store library use it). */
#ifndef ENCLAVE_TESTS_E2E_STORE_H
#define ENCLAVE_TESTS_E2E_STORE_H

#include "store/store.h"

/* store_open() of E->store with the passphrase in E->pass (the daemon must be stopped, or the
 * open fails on its lock); fails the test, printing the store's error, when it cannot. */
struct store *e2e_store_offline(void);

#endif
