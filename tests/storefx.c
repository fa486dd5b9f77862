/* storefx: the scratch store of the store-level tests (storefx.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "common/err.h"
#include "tests/storefx.h"
#include "tests/testutil.h"

int storefx_setup(void **state, const char *tag, const char *pass)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->root = tu_mkdtemp(tag);
	f->store = tu_fmt("%s/store", f->root);
	f->src = tu_fmt("%s/src", f->root);
	assert_int_equal(mkdir(f->src, 0755), 0);
	f->pass = tu_pass(pass);
	*state = f;
	return 0;
}

int fx_teardown(void **state)
{
	struct fx *f = *state;

	tu_rm_rf(f->root);
	free(f->root);
	free(f->store);
	free(f->src);
	crypto_secret_free(f->pass);
	free(f);
	return 0;
}

struct store *fx_create(struct fx *f)
{
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	struct store *st = NULL;
	int r = store_create(f->store, f->pass, &kdf, &st);

	if (r < 0)
		fprintf(stderr, "store_create: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	return st;
}

struct store *fx_open_opts(struct fx *f, const struct store_open_options *o)
{
	struct store *st = NULL;
	int r = store_open(f->store, f->pass, o, &st);

	if (r < 0)
		fprintf(stderr, "store_open: %s: %s\n", strerror(-r), err_detail());
	assert_int_equal(r, 0);
	return st;
}

struct store *fx_open(struct fx *f)
{
	return fx_open_opts(f, NULL);
}
