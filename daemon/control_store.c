/* control_store: the store's space (docs/PROTOCOL.md "store.gc", "store.df").
 *
 *   store.gc {"dry_run": bool?}   a garbage collection (stewards), with progress frames
 *   store.df {}                   live, dead and reclaimable bytes, per dataset (stewards, auditors)
 */
#include <errno.h>
#include <string.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "daemon/control_internal.h"

#define PROGRESS_INTERVAL_NS (250 * 1000 * 1000LL)

static const char *step_name(enum store_gc_step step)
{
	switch (step) {
	case STORE_GC_SCANNED: return "scanned";
	case STORE_GC_COPIED: return "copying";
	case STORE_GC_SYNCED: return "synced";
	case STORE_GC_COMMITTED: return "committed";
	case STORE_GC_REMOVED: return "removing";
	case STORE_GC_DONE: return "done";
	}
	return "?";
}

/* A progress frame: at every step, and within a step at most every 250 ms. */
static void gc_progress(void *ctx, enum store_gc_step step, uint64_t done, uint64_t total)
{
	struct conn *c = ctx;
	int64_t now = now_monotonic_ns();
	bool repeat = step == STORE_GC_COPIED || step == STORE_GC_REMOVED;
	json_t *j;

	if (repeat && done != total && now - c->last_progress_ns < PROGRESS_INTERVAL_NS)
		return;
	c->last_progress_ns = now;
	j = json_pack("{s:{s:s, s:I, s:I}}", "progress", "step", step_name(step), "done",
		      (json_int_t)done, "total", (json_int_t)total);
	if (j)
		proto_send(c->fd, PROTO_PARTIAL, j, -1);
	json_decref(j);
}

static int gc_busy(int r)
{
	if (r == -EBUSY)
		return err_set(r, "an import or another garbage collection is running in this "
			       "store; try again when it ends");
	return r;
}

int op_store_gc(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dry_run", NULL };
	struct store_gc_options hooks = { .progress = gc_progress, .ctx = c };
	struct store_gc_stats s;
	bool dry = false;
	json_t *j;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_bool(args, "dry_run", false, &dry)) < 0)
		return r;
	r = daemon_gc_run(c->d, &c->who, dry, &hooks, &s);
	if (r < 0)
		return gc_busy(r);
	j = daemon_gc_stats_json(&s);
	if (!j || json_object_set_new(j, "dry_run", json_boolean(dry)) < 0) {
		json_decref(j);
		return -ENOMEM;
	}
	*ret = j;
	return 0;
}

static int df_dataset(void *ctx, const struct store_gc_dataset *ds)
{
	json_t *arr = ctx;
	json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "name", ds->name, "id",
			      (json_int_t)ds->id, "versions", (json_int_t)ds->versions, "files",
			      (json_int_t)ds->files, "objects", (json_int_t)ds->objects,
			      "live_bytes", (json_int_t)ds->live_bytes);

	return o && json_array_append_new(arr, o) == 0 ? 0 : -ENOMEM;
}

/* A dry run that also reports each dataset: names go only to the roles that may list datasets
 * (the dispatch table allows stewards and auditors, as for dataset.list). */
int op_store_df(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	json_t *arr = json_array(), *st;
	struct store_gc_options hooks = { .dataset = df_dataset };
	struct store_gc_stats s;
	int r;

	if (!arr)
		return -ENOMEM;
	hooks.ctx = arr;
	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = daemon_gc_run(c->d, &c->who, true, &hooks, &s)) < 0) {
		json_decref(arr);
		return gc_busy(r);
	}
	st = daemon_gc_stats_json(&s);
	*ret = st ? json_pack("{s:o, s:o}", "datasets", arr, "store", st) : NULL;
	if (!*ret) {
		json_decref(arr);
		return -ENOMEM;
	}
	return 0;
}
