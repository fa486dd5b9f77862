/* enclavectl status, enclavectl whoami: what the daemon is and who it takes the caller for. */
#include <stdio.h>
#include <string.h>

#include "cli/enclavectl.h"
#include "common/common.h"

static const char status_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] status\n\n"
	"Show the daemon's state: its version, store, mount point, process id, when it started,\n"
	"how many datasets, grants and audit records it holds, and the mount's counters since it\n"
	"started (reads, reads refused on open files, cached opens, read-aheads and reads answered\n"
	"from them). Any local user may ask; the counts (datasets, grants, audit records and the\n"
	"mount's counters) are shown to stewards and auditors only.\n\n"
	"Options:\n"
	"  --json        print the daemon's answer as JSON\n"
	"  -h, --help    show this help\n";

static const char whoami_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] whoami\n\n"
	"Show who the daemon takes you for (from the kernel's credentials of this connection)\n"
	"and which roles you hold in this store: steward, auditor, or none.\n\n"
	"Options:\n"
	"  --json        print the daemon's answer as JSON\n"
	"  -h, --help    show this help\n";

/* One "label  value" line per member the result has, in a fixed order. */
static void print_fields(const json_t *res, const char *const (*fields)[2], size_t n)
{
	char scratch[24], text[1024];

	for (size_t i = 0; i < n; i++) {
		if (!json_object_get(res, fields[i][0]))
			continue;
		printf("%-14s %s\n", fields[i][1],
		       out_text(out_member(res, fields[i][0], scratch), 0, text, sizeof(text)));
	}
}

int cmd_status(struct ctl *ctl, int argc, char **argv)
{
	static const char *const fields[][2] = {
		{ "version", "version" },   { "protocol", "protocol" },
		{ "store", "store" },       { "mount", "mount" },
		{ "pid", "pid" },           { "started", "started" },
		{ "datasets", "datasets" }, { "grants", "grants" },
		{ "audit_records", "audit records" },
	};
	static const char *const mfields[][2] = {
		{ "reads", "reads" },
		{ "reads_refused", "reads refused" },
		{ "opens_cached", "cached opens" },
		{ "prefetches", "read-aheads" },
		{ "reads_prefetched", "reads from read-ahead" },
	};
	struct reply rep = { 0 };
	int first, r;

	r = ctl_parse_none(ctl, "status", status_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("status", "unexpected argument '%s'", argv[first]);
	r = ctl_call(ctl, "status", "status", NULL, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		r = out_json(rep.result) < 0;
	else {
		const json_t *m = json_object_get(rep.result, "mount_stats");

		print_fields(rep.result, fields, ARRAY_SIZE(fields));
		if (json_is_object(m))
			print_fields(m, mfields, ARRAY_SIZE(mfields));
	}
	reply_clear(&rep);
	return r;
}

int cmd_whoami(struct ctl *ctl, int argc, char **argv)
{
	struct reply rep = { 0 };
	char scratch[24], name[256], roles[1024], shown[1024];
	const json_t *list, *v;
	size_t i, n = 0;
	int first, r;

	r = ctl_parse_none(ctl, "whoami", whoami_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("whoami", "unexpected argument '%s'", argv[first]);
	r = ctl_call(ctl, "whoami", "whoami", NULL, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	roles[0] = '\0';
	list = json_object_get(rep.result, "roles");
	json_array_foreach(list, i, v) {
		if (json_is_string(v) && n < sizeof(roles))
			n += (size_t)snprintf(roles + n, sizeof(roles) - n, "%s%s", n ? ", " : "",
					      json_string_value(v));
	}
	out_text(out_member(rep.result, "user", scratch), 64, name, sizeof(name));
	printf("%s (uid %s): %s\n", *name ? name : "(no name)",
	       out_member(rep.result, "uid", scratch),
	       n ? out_text(roles, 0, shown, sizeof(shown)) : "no role in this store");
	reply_clear(&rep);
	return 0;
}
