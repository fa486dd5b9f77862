#include <stddef.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "common/err.h"
#include "crypto/crypto.h"
#include "tests/e2e.h"
#include "tests/e2e_store.h"

struct store *e2e_store_offline(void)
{
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	int r;

	assert_int_equal(crypto_passphrase_read_file(E->pass, &pass), 0);
	r = store_open(E->store, pass, NULL, &st);
	if (r < 0)
		fprintf(stderr, "store_open: %s\n", err_detail());
	crypto_secret_free(pass);
	assert_int_equal(r, 0);
	return st;
}
