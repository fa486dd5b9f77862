/* enclavectl store gc, store df: the store's space, asked of the running daemon
 * (docs/PROTOCOL.md "store.gc", "store.df"; docs/FORMAT.md §10).
 *
 *   store gc [--dry-run]   free the pack bytes no committed version uses (stewards)
 *   store df               live, dead and reclaimable bytes, per dataset (stewards, auditors)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "common/err.h"
#include "cli/enclavectl.h"

enum { OPT_DRY_RUN = 0x201 };

static const char gc_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] store gc [--dry-run]\n"
	"\n"
	"Free the pack bytes no committed version uses: the objects of erased versions and\n"
	"datasets, and what interrupted imports left behind. Live objects in packs that are at\n"
	"least half dead are copied, byte for byte, into new packs; dead packs are removed; packs\n"
	"longer than their committed length are cut back. The mount keeps serving (a file open\n"
	"in a pack that goes keeps reading until it is closed); no import runs meanwhile. A kill\n"
	"at any point loses no live byte: the next collection finishes the work. The daemon\n"
	"reads every record of every version first and refuses a store where any check fails,\n"
	"or whose index disagreed with the signed audit log at start; the collection is\n"
	"recorded in the audit log (\"gc\"). Stewards only. enclave.conf can schedule it\n"
	"(gc_interval_hours = N).\n"
	"\n"
	"Options:\n"
	"  --dry-run   say what a collection would free, changing nothing\n"
	"  --json      print the numbers as JSON\n"
	"  -q, --quiet no progress line\n"
	"  -h, --help  show this help\n";

static const char df_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] store df\n"
	"\n"
	"Show the bytes each dataset keeps alive in the packs (its objects, shared ones once),\n"
	"and for the whole store: the packs' size, the live bytes, the dead bytes (no committed\n"
	"version uses them: erased data, interrupted imports) and the bytes a collection would\n"
	"free now ('store gc'). Dead bytes belong to no dataset: an erased version's records are\n"
	"gone from the index. Stewards and auditors.\n"
	"\n"
	"Options:\n"
	"  --json      print the numbers as JSON\n"
	"  -h, --help  show this help\n";

static int gc_on_opt(void *ctx, int val, const char *arg)
{
	bool *dry = ctx;

	(void)arg;
	if (val != OPT_DRY_RUN)
		return EXIT_USAGE;
	*dry = true;
	return 0;
}

static int gc_on_progress(void *ctx, const json_t *partial)
{
	const struct ctl *ctl = ctx;
	const json_t *p = json_object_get(partial, "progress");
	const char *step = json_string_value(json_object_get(p, "step"));
	uint64_t done = 0, total = 0;
	char a[16], b[16];

	if (ctl->quiet || !step || !isatty(2))
		return 0;
	out_member_u64(p, "done", &done);
	out_member_u64(p, "total", &total);
	if (strcmp(step, "copying") == 0) {
		out_size(done, a);
		out_size(total, b);
		fprintf(stderr, "\r\033[Kgc: copying live objects: %s / %s", a, b);
	} else if (strcmp(step, "removing") == 0) {
		fprintf(stderr, "\r\033[Kgc: removing packs: %" PRIu64 " / %" PRIu64, done, total);
	} else {
		fprintf(stderr, "\r\033[Kgc: %s", step);
	}
	return 0;
}

int cmd_store_gc(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ 0 },
	};
	struct reply rep = { 0 };
	bool dry = false;
	json_t *args;
	uint64_t v[6] = { 0 };
	char s[4][16];
	int first, r;

	r = ctl_parse(ctl, "store gc", gc_usage, argc, argv, opts, gc_on_opt, &dry, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("store gc", "unexpected argument '%s'", argv[first]);
	args = json_pack("{s:b}", "dry_run", dry);
	r = ctl_call(ctl, "store gc", "store.gc", args, gc_on_progress, ctl, &rep);
	if (!ctl->quiet && isatty(2))
		fputs("\r\033[K", stderr);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	out_member_u64(rep.result, "reclaimable_bytes", &v[0]);
	out_member_u64(rep.result, "live_bytes", &v[1]);
	out_member_u64(rep.result, "packs_removed", &v[2]);
	out_member_u64(rep.result, "packs_compacted", &v[3]);
	out_member_u64(rep.result, "objects_moved", &v[4]);
	out_member_u64(rep.result, "bytes_copied", &v[5]);
	out_size(v[0], s[0]);
	out_size(v[1], s[1]);
	out_size(v[5], s[2]);
	printf("%s %s (%" PRIu64 " packs removed, %" PRIu64 " of them compacted: %" PRIu64
	       " live objects, %s, copied); %s live\n",
	       dry ? "would free" : "freed", s[0], v[2], v[3], v[4], s[2], s[1]);
	reply_clear(&rep);
	return 0;
}

int cmd_store_df(struct ctl *ctl, int argc, char **argv)
{
	static const char *const head[] = { "DATASET", "VERSIONS", "FILES", "OBJECTS", "LIVE" };
	struct reply rep = { 0 };
	const json_t *list, *d, *st;
	struct table t;
	uint64_t v[5] = { 0 };
	char s[5][16];
	size_t i;
	int first, r;

	r = ctl_parse_none(ctl, "store df", df_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("store df", "unexpected argument '%s'", argv[first]);
	r = ctl_call(ctl, "store df", "store.df", NULL, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	list = json_object_get(rep.result, "datasets");
	st = json_object_get(rep.result, "store");
	if (!json_is_array(list) || !json_is_object(st)) {
		reply_clear(&rep);
		return ctl_fail("store df", "protocol error: the reply has no \"datasets\" list or "
					    "\"store\" totals");
	}
	table_init(&t, ARRAY_SIZE(head), head);
	json_array_foreach(list, i, d) {
		char s1[24], s2[24], s3[24], s4[24], sz[16], name[OUT_TEXT_SIZE(128)];
		uint64_t live = 0;
		const char *cells[5];

		out_member_u64(d, "live_bytes", &live);
		out_size(live, sz);
		cells[0] = out_text(out_member(d, "name", s1), 0, name, sizeof(name));
		cells[1] = out_member(d, "versions", s2);
		cells[2] = out_member(d, "files", s3);
		cells[3] = out_member(d, "objects", s4);
		cells[4] = sz;
		if (table_add(&t, cells, NULL) < 0) {
			r = ctl_fail("store df", "out of memory");
			break;
		}
	}
	if (r == 0 && t.nrows)
		r = table_print(&t) < 0;
	table_free(&t);
	out_member_u64(st, "pack_bytes", &v[0]);
	out_member_u64(st, "live_bytes", &v[1]);
	out_member_u64(st, "dead_bytes", &v[2]);
	out_member_u64(st, "reclaimable_bytes", &v[3]);
	out_member_u64(st, "packs", &v[4]);
	for (int k = 0; k < 4; k++)
		out_size(v[k], s[k]);
	if (r == 0)
		printf("%sstore: %" PRIu64 " packs, %s; live %s, dead %s, reclaimable now %s%s\n",
		       t.nrows ? "\n" : "", v[4], s[0], s[1], s[2], s[3],
		       v[3] ? " (enclavectl store gc)" : "");
	reply_clear(&rep);
	return r;
}

