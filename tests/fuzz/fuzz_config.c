/* fuzz_config: the daemon's configuration parser (daemon/config.c) on arbitrary text.
 *
 * enclave.conf decides who administers a store, so its parser must refuse anything it does not
 * fully understand. Properties checked: a refusal is -EINVAL or -E2BIG with an err_detail()
 * message; an accepted file has at least one steward, at most CONFIG_PRINCIPALS_MAX of each role,
 * non-empty NUL-terminated names; and parsing is deterministic (the same input twice gives the
 * same result).
 */
#include <errno.h>
#include <string.h>

#include "common/err.h"
#include "daemon/daemon.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config a, b;
	int r1, r2;

	err_clear();
	r1 = config_parse((const char *)data, size, &a);
	if (r1 < 0) {
		FUZZ_CHECK(r1 == -EINVAL || r1 == -E2BIG || r1 == -ENOMEM);
		FUZZ_CHECK(err_detail()[0] != '\0' || r1 == -ENOMEM);
	} else {
		FUZZ_CHECK(r1 == 0);
		FUZZ_CHECK(a.nstewards >= 1 && a.nstewards <= CONFIG_PRINCIPALS_MAX);
		FUZZ_CHECK(a.nauditors <= CONFIG_PRINCIPALS_MAX);
		for (size_t i = 0; i < a.nstewards; i++)
			FUZZ_CHECK(a.stewards[i].name[0] && memchr(a.stewards[i].name, '\0',
								     sizeof(a.stewards[i].name)));
	}
	r2 = config_parse((const char *)data, size, &b);
	FUZZ_CHECK(r1 == r2);
	if (r1 == 0)
		FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);
	return 0;
}
