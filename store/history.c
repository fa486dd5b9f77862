/* history: whether a store has a past the audit log must account for (store.h). */
#include <errno.h>
#include <stdint.h>

#include "store/store.h"

static int count_dataset(void *ctx, const struct store_dataset_info *info)
{
	(void)info;
	((uint64_t *)ctx)[0]++;
	return 0;
}

static int count_policy(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	((uint64_t *)ctx)[1]++;
	return 0;
}

int store_history_count(struct store *st, uint64_t *ret_datasets, uint64_t *ret_policy)
{
	uint64_t n[2] = { 0, 0 };
	int r = store_dataset_foreach(st, count_dataset, n);

	if (r == 0)
		r = store_policy_foreach(st, count_policy, n);
	if (r < 0)
		return r;
	*ret_datasets = n[0];
	*ret_policy = n[1];
	return 0;
}
