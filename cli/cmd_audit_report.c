/* enclavectl audit report: a summary of the audit trail per dataset, per user and per batch job:
 * opens allowed, denials by reason, reads refused, bytes read (from close records), files opened,
 * and the grants in force now (grant and revoke records replayed, expiry applied). Reads through
 * the daemon (audit.show, as `audit show` does) or, with --log, offline from the files
 * (audit_foreach()).
 *
 * The filters are applied here, on decoded records, with the same matcher the daemon uses
 * (audit_matcher_*()), because the grants in force need the whole history. Every record is
 * accounted for: counted, or left out for a stated reason.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "policy/policy.h"
#include "store/store.h"

/* Entry point, in the audit_cmds table of cmd_audit.c. */
int audit_report_cmd(struct ctl *ctl, int argc, char **argv);

/* Distinct datasets, users, jobs and (dataset, user) pairs kept; more is an error, not a crash. */
#define REPORT_KEYS_MAX 100000u
/* Grants replayed at most. */
#define REPORT_GRANTS_MAX 1000000u
/* Opens remembered to give their closes' bytes to a job, and files per job. */
#define REPORT_OPENS_MAX 4000000u

enum {
	OPT_LOG = 0x200,
	OPT_DATASET,
	OPT_SINCE,
	OPT_UNTIL,
	OPT_USER,
	OPT_GRANTEE,
	OPT_GROUP,
	OPT_GRANT,
	OPT_JOB,
	OPT_AUDITOR_KEY,
};

static const char report_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] audit report [--log DIR] [--dataset NAME[@VERSION]]\n"
	"           [--user NAME|UID] [--grantee NAME|UID] [--group NAME|GID] [--grant ID]\n"
	"           [--job ID] [--since WHEN] [--until WHEN] [--auditor-key FILE] [--json]\n\n"
	"Summarise the audit trail per dataset, per user and per batch job: opens allowed,\n"
	"denials (by reason), reads refused after a revocation, bytes read (from close\n"
	"records), files opened, and the grants in force now (grant and revoke records\n"
	"replayed, expiry applied; a grant the dataset's consent codes now exclude is suspended,\n"
	"not in force). Without --log the records come from the daemon, the compute nodes'\n"
	"logs merged with the primary's (a damaged node log is an error naming it) (stewards\n"
	"and auditors only); with --log they are read offline from the audit directory DIR.\n"
	"The filters select the records counted, as in `audit show`; the report says how many\n"
	"records the log holds and why each one not counted was left out. Grants in force are\n"
	"always replayed from the whole log, and listed for the --dataset given. The names in\n"
	"the records are sealed: --auditor-key opens them (the secret key `enclavectl init\n"
	"--auditor-key-out` wrote); a log with sealed records needs it.\n\n"
	"Options:\n"
	"  --log DIR          read DIR/audit.log directly, without the daemon, and the\n"
	"                     compute nodes' logs in DIR/nodes (a job over several nodes is\n"
	"                     one job, with each node's share)\n"
	"  --dataset NAME[@VERSION]  only this dataset (and version)\n"
	"  --user NAME|UID    only what this user did\n"
	"  --grantee NAME|UID only the records of grants to this user (see audit show)\n"
	"  --group NAME|GID   only the records of grants to this group\n"
	"  --grant ID         only the records of this grant\n"
	"  --job ID           only the opens of this batch job and their closes\n"
	"  --since WHEN       records at or after WHEN (as in audit show: -1h, -7d, a date)\n"
	"  --until WHEN       records before WHEN\n"
	"  --auditor-key FILE the auditor's secret key (mode 0600), to open sealed records\n"
	"  --json             the report as one JSON document (docs/PROTOCOL.md)\n"
	"  -h, --help         show this help\n\n"
	"A dataset, user, group, grant or job that does not exist (offline: that no record of\n"
	"the log names) is an error (exit 1).\n";

struct rargs {
	const char *log, *dataset, *since, *until, *user, *grantee, *group, *grant, *job;
	const char *auditor_key;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct rargs *a = ctx;

	switch (val) {
	case OPT_LOG: a->log = arg; return 0;
	case OPT_DATASET: a->dataset = arg; return 0;
	case OPT_SINCE: a->since = arg; return 0;
	case OPT_UNTIL: a->until = arg; return 0;
	case OPT_USER: a->user = arg; return 0;
	case OPT_GRANTEE: a->grantee = arg; return 0;
	case OPT_GROUP: a->group = arg; return 0;
	case OPT_GRANT: a->grant = arg; return 0;
	case OPT_JOB: a->job = arg; return 0;
	case OPT_AUDITOR_KEY: a->auditor_key = arg; return 0;
	}
	return EXIT_USAGE;
}

/* Why a record was not counted: the JSON keys of "left_out", always all present. */
enum left_out { LEFT_TIME, LEFT_DATASET, LEFT_FILTER, LEFT_N };
static const char *const left_out_names[LEFT_N] = { "time_range", "other_dataset",
						    "other_filters" };

/* The report being built: JSON objects used as maps, owned. */
struct report {
	json_t *datasets;   /* name -> ENTRY + {users: {user: ENTRY}} */
	json_t *users;      /* user -> ENTRY */
	json_t *jobs;       /* job id (text) -> ENTRY + {users: [..], datasets: [..]} */
	json_t *grants;     /* grant_id (text) -> grant object in force (approved), replayed */
	json_t *pending;    /* grant_id (text) -> grant object still waiting for approvals */
	json_t *approvals;  /* grant_id (text) -> approvals it came into force with */
	json_t *open_job;   /* open seq (text) -> job id (text): a close's bytes go to the job */
	json_t *job_files;  /* job id (text) -> {"dataset@version/path": true} */
	size_t keys;        /* entries created in the maps, for the cap */
	json_t *policies;   /* dataset_id (text) -> the dataset's latest policy record, replayed */
	int64_t now;        /* unix seconds: what "in force now" means */
	uint64_t total;     /* records in the log */
	uint64_t records;   /* records counted (matching the filters) */
	uint64_t left_out[LEFT_N];
	uint64_t named;     /* records the filters' names match, whatever the time (offline check) */
	struct audit_matcher *m;      /* the whole filter */
	struct audit_matcher *m_all;  /* the filter without dataset and time: why left out */
	struct audit_matcher *m_name; /* the filter without time: does what it names exist? */
	const char *dataset; /* the --dataset name, or NULL; borrowed */
	struct audit_opener *open;  /* opens sealed records; owned by audit_report_cmd() */
	const char *key_file;       /* --auditor-key, or NULL; borrowed */
	struct log_openers nodes;   /* the nodes' openers, for the daemon's merged answer */
	const char *node;           /* the compute node whose log is being read; NULL: the
				     * primary's (or the daemon's answer) */
};

/* A fresh ENTRY: every counter present, zero included, so --json keys never come and go. */
static json_t *entry_new(void)
{
	json_t *den = json_object(), *e;

	if (!den)
		return NULL;
	for (enum policy_reason r = POLICY_DENY_NO_GRANT; r <= POLICY_REASON_LAST; r++)
		if (json_object_set_new(den, policy_reason_name(r), json_integer(0)) < 0) {
			json_decref(den);
			return NULL;
		}
	e = json_pack("{s:I, s:I, s:o, s:I, s:I}", "opens", (json_int_t)0, "denials_total",
		      (json_int_t)0, "denials", den, "reads_refused", (json_int_t)0, "bytes",
		      (json_int_t)0);
	return e;
}

/* obj[key] as an ENTRY, created if absent. NULL on ENOMEM or past the cap. */
static json_t *child(struct report *rp, json_t *obj, const char *key)
{
	json_t *c = json_object_get(obj, key);

	if (c)
		return c;
	if (++rp->keys > REPORT_KEYS_MAX)
		return NULL;
	c = entry_new();
	if (!c || json_object_set_new(obj, key, c) < 0)
		return NULL;
	return c;
}

static void add_int(json_t *obj, const char *key, json_int_t v)
{
	json_t *n = json_object_get(obj, key);

	if (n)
		json_integer_set(n, json_integer_value(n) + v);
	else
		json_object_set_new(obj, key, json_integer(v));
}

/* The user a record names: "user", else its uid as text, else "?". */
static const char *rec_user(const json_t *rec, char scratch[static 24])
{
	const json_t *u = json_object_get(rec, "user"), *uid = json_object_get(rec, "uid");

	if (json_is_string(u))
		return json_string_value(u);
	if (json_is_integer(uid)) {
		snprintf(scratch, 24, "%" JSON_INTEGER_FORMAT, json_integer_value(uid));
		return scratch;
	}
	return "?";
}

/* Count one access record into an ENTRY. */
static void count(json_t *e, const char *event, const json_t *rec)
{
	const char *decision = json_string_value(json_object_get(rec, "decision"));
	const json_t *bytes = json_object_get(rec, "bytes");

	if (strcmp(event, "open") == 0 && decision && strcmp(decision, "allow") == 0) {
		add_int(e, "opens", 1);
	} else if (strcmp(event, "open") == 0 && decision && strcmp(decision, "deny") == 0) {
		const char *reason = json_string_value(json_object_get(rec, "reason"));

		add_int(json_object_get(e, "denials"), reason ? reason : "?", 1);
		add_int(e, "denials_total", 1);
	} else if (strcmp(event, "read_refused") == 0) {
		add_int(e, "reads_refused", 1);
	} else if (strcmp(event, "close") == 0 && json_is_integer(bytes) &&
		   json_integer_value(bytes) > 0) {
		add_int(e, "bytes", json_integer_value(bytes));
	}
}

/* Append s to the array arr unless it is there already. */
static int add_unique(json_t *arr, const char *s)
{
	const json_t *v;
	size_t i;

	json_array_foreach(arr, i, v)
		if (strcmp(json_string_value(v), s) == 0)
			return 0;
	return json_array_append_new(arr, json_string(s)) < 0 ? -ENOMEM : 0;
}

/* A batch job's share of an access record: its opens (and the distinct files they opened),
 * and the bytes of their closes. */
static int count_job(struct report *rp, const char *event, const json_t *rec, const char *user,
		     const char *dataset)
{
	const json_t *jid = json_object_get(rec, "job_id"), *seq = json_object_get(rec, "seq");
	const char *decision = json_string_value(json_object_get(rec, "decision"));
	char job[24], key[96], s1[24];
	json_t *j, *files;

	if (strcmp(event, "open") == 0) {
		if (!json_is_integer(jid))
			return 0;
		snprintf(job, sizeof(job), "%" JSON_INTEGER_FORMAT, json_integer_value(jid));
	} else {
		const char *known;

		/* A close (or a refused read) belongs to the job of the open it names, in the same
		 * log (each node's log numbers its records on its own). */
		snprintf(key, sizeof(key), "%.64s%s%s", rp->node ? rp->node : "", rp->node ? ":" : "",
			 out_member(rec, "open_seq", s1));
		known = json_string_value(json_object_get(rp->open_job, key));
		if (!known)
			return 0;
		snprintf(job, sizeof(job), "%s", known);
	}
	j = child(rp, rp->jobs, job);
	if (!j)
		return err_set(-E2BIG, "more than %u datasets, users and jobs", REPORT_KEYS_MAX);
	if (!json_object_get(j, "files")) {
		if (json_object_set_new(j, "files", json_integer(0)) < 0 ||
		    json_object_set_new(j, "users", json_array()) < 0 ||
		    json_object_set_new(j, "datasets", json_array()) < 0)
			return -ENOMEM;
	}
	count(j, event, rec);
	if (add_unique(json_object_get(j, "users"), user) < 0 ||
	    add_unique(json_object_get(j, "datasets"), dataset) < 0)
		return -ENOMEM;
	/* A job that reads on several compute nodes is one job, with each node's share. */
	{
		const char *where = rp->node ? rp->node : "(primary)";
		json_t *nodes = json_object_get(j, "nodes"), *nj;

		if (!nodes && (!(nodes = json_object()) ||
			       json_object_set_new(j, "nodes", nodes) < 0))
			return -ENOMEM;
		nj = child(rp, nodes, where);
		if (!nj)
			return err_set(-E2BIG, "more than %u datasets, users and jobs",
				       REPORT_KEYS_MAX);
		count(nj, event, rec);
	}
	if (strcmp(event, "open") != 0 || !decision || strcmp(decision, "allow") != 0)
		return 0;
	if (json_object_size(rp->open_job) >= REPORT_OPENS_MAX)
		return err_set(-E2BIG, "more than %u opens by batch jobs", REPORT_OPENS_MAX);
	snprintf(key, sizeof(key), "%.64s%s%s", rp->node ? rp->node : "", rp->node ? ":" : "",
		 out_member(rec, "seq", s1));
	if (json_is_integer(seq) &&
	    json_object_set_new(rp->open_job, key, json_string(job)) < 0)
		return -ENOMEM;
	/* Files: distinct dataset@version/path the job opened. */
	files = json_object_get(rp->job_files, job);
	if (!files) {
		files = json_object();
		if (!files || json_object_set_new(rp->job_files, job, files) < 0)
			return -ENOMEM;
	}
	{
		char s2[24];
		_cleanup_free_ char *file = NULL;

		if (asprintf(&file, "%s@%s%s", dataset, out_member(rec, "version", s1),
			     out_member(rec, "path", s2)) < 0)
			return -ENOMEM;
		if (!json_object_get(files, file)) {
			if (json_object_set_new(files, file, json_true()) < 0)
				return -ENOMEM;
			add_int(j, "files", 1);
		}
	}
	return 0;
}

/* Replay the grant records (and the datasets' consent codes): which grants are in force,
 * whatever the filters. */
static int replay_grants(struct report *rp, const char *event, const json_t *rec)
{
	const json_t *gid = json_object_get(rec, "grant_id"), *g;
	const char *state = json_string_value(json_object_get(rec, "state"));
	char id[24];

	/* A dataset's consent codes, as last recorded: a grant they exclude is suspended, not in
	 * force (docs/POLICY.md section 7). */
	if (strcmp(event, "dataset_policy") == 0 || strcmp(event, "dataset_set") == 0) {
		const json_t *pol = json_object_get(rec, "policy");
		const json_t *dsid = json_object_get(rec, "dataset_id");

		if (!json_is_object(pol) || !json_is_integer(dsid))
			return 0;
		snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT, json_integer_value(dsid));
		return json_object_set(rp->policies, id, (json_t *)pol) < 0 ? -ENOMEM : 0;
	}
	if (!json_is_integer(gid))
		return 0;
	snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT, json_integer_value(gid));
	/* "grant" is how logs before approvals recorded a grant; "grant_request" says whether it
	 * is in force at once or waits for approvals, and "grant_approve" whether it now is. */
	if (strcmp(event, "grant") == 0 || strcmp(event, "grant_request") == 0) {
		g = json_object_get(rec, "grant");
		if (!json_is_object(g))
			return 0;
		if (json_object_size(rp->grants) + json_object_size(rp->pending) >= REPORT_GRANTS_MAX)
			return err_set(-E2BIG, "more than %u grants", REPORT_GRANTS_MAX);
		return json_object_set(state && strcmp(state, "active") != 0 ? rp->pending :
				       rp->grants, id, (json_t *)g) < 0 ? -ENOMEM : 0;
	}
	if (strcmp(event, "grant_approve") == 0) {
		if (!state || strcmp(state, "active") != 0)
			return 0;
		g = json_object_get(rp->pending, id);
		if (g && json_object_set(rp->grants, id, (json_t *)g) < 0)
			return -ENOMEM;
		/* The approvals it came into force with (the grant's one shape has them). */
		if (g && json_is_integer(json_object_get(rec, "approvals")) &&
		    json_object_set(rp->approvals, id, json_object_get(rec, "approvals")) < 0)
			return -ENOMEM;
		json_object_del(rp->pending, id);
		return 0;
	}
	if (strcmp(event, "revoke") == 0) {
		json_object_del(rp->grants, id);
		json_object_del(rp->pending, id);
	}
	return 0;
}

static int add_opened(struct report *rp, const json_t *rec);

/* Open rec (sealed or not), then count it. */
static int add_record(struct report *rp, const json_t *rec)
{
	json_t *opened = NULL;
	int r = audit_open_record(rp->open, rp->key_file, rec, &opened);

	if (r < 0)
		return r;
	r = add_opened(rp, opened);
	json_decref(opened);
	return r;
}

static int add_opened(struct report *rp, const json_t *rec)
{
	const char *event = json_string_value(json_object_get(rec, "event"));
	const char *dataset = json_string_value(json_object_get(rec, "dataset"));
	const char *tm = json_string_value(json_object_get(rec, "time"));
	char scratch[24];
	json_t *d, *u, *du;
	int64_t t = 0;
	int r;

	rp->total++;
	/* Filter bounds are whole seconds: the fraction of a record's time does not matter. */
	if (!tm || time_parse_rfc3339(tm, &t) < 0 || t < 0 || t >= INT64_MAX / 1000000000)
		t = 0;
	t *= 1000000000;
	if (event && (r = replay_grants(rp, event, rec)) < 0)
		return r;
	/* Why a record is left out: the matchers see every record, in order, to follow links. */
	r = audit_matcher_test(rp->m_name, rec, t);
	if (r < 0)
		return r;
	rp->named += (uint64_t)r;
	r = audit_matcher_test(rp->m_all, rec, t);
	if (r < 0)
		return r;
	if (r == 0) {
		rp->left_out[LEFT_FILTER]++;
		/* Keep the full matcher's links in step. */
		return audit_matcher_test(rp->m, rec, t) < 0 ? -ENOMEM : 0;
	}
	r = audit_matcher_test(rp->m, rec, t);
	if (r < 0)
		return r;
	if (r == 0) {
		if (rp->dataset && (!dataset || strcmp(dataset, rp->dataset) != 0))
			rp->left_out[LEFT_DATASET]++;
		else
			rp->left_out[LEFT_TIME]++;
		return 0;
	}
	rp->records++;
	if (!event || (strcmp(event, "open") != 0 && strcmp(event, "close") != 0 &&
		       strcmp(event, "read_refused") != 0))
		return 0;
	if (!dataset)
		dataset = "?";
	d = child(rp, rp->datasets, dataset);
	u = child(rp, rp->users, rec_user(rec, scratch));
	if (!d || !u)
		return err_set(-E2BIG, "more than %u datasets, users and jobs", REPORT_KEYS_MAX);
	if (!json_object_get(d, "users") && json_object_set_new(d, "users", json_object()) < 0)
		return -ENOMEM;
	du = child(rp, json_object_get(d, "users"), rec_user(rec, scratch));
	if (!du)
		return err_set(-E2BIG, "more than %u datasets, users and jobs", REPORT_KEYS_MAX);
	count(d, event, rec);
	count(u, event, rec);
	count(du, event, rec);
	return count_job(rp, event, rec, rec_user(rec, scratch), dataset);
}

static int on_file_record(void *ctx, const json_t *rec, const char *line, size_t len)
{
	(void)line, (void)len;
	return add_record(ctx, rec);
}

/* Each node log under log/nodes, after the primary's (whose grant records the nodes' opens
 * name). */
static int report_nodes(struct report *rp, const char *log)
{
	struct audit_opener *primary;
	char path[4200];
	DIR *d;
	int r = 0;

	snprintf(path, sizeof(path), "%s/nodes", log);
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : err_set(-errno, "%s", strerror(errno));
	for (struct dirent *de; r == 0 && (de = readdir(d));) {
		char dir[4300];

		if (de->d_name[0] == '.' || strlen(de->d_name) > 64)
			continue;
		/* path is at most PATH_MAX and the name short, so never cut; if it were, the report
		 * would fail rather than leave the node out. */
		if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", path, de->d_name) >= sizeof(dir)) {
			r = err_set(-ENAMETOOLONG, "%s/%s: the path is too long", path, de->d_name);
			break;
		}
		/* A log of its own: its own epoch keys (its key records restart at seq 0). */
		primary = rp->open;
		r = audit_opener_new(NULL, rp->key_file, &rp->open);
		if (r == 0) {
			rp->node = de->d_name;
			r = audit_foreach(dir, NULL, on_file_record, rp);
			if (r < 0)
				r = err_set(r, "node %s: %s", de->d_name, err_detail());
			rp->node = NULL;
			audit_opener_free(rp->open);
		}
		rp->open = primary;
	}
	closedir(d);
	return r;
}

/* A frame of the daemon's merged answer: the primary's records, or ("node": NAME) a node's,
 * opened with that log's own opener and counted with the node named, as --log does. */
static int on_partial(void *ctx, const json_t *partial)
{
	struct report *rp = ctx;
	const json_t *list = json_object_get(partial, "records"), *rec;
	const char *node = json_string_value(json_object_get(partial, "node"));
	struct audit_opener *primary = rp->open;
	size_t i;
	int r = 0;

	if (!json_is_array(list))
		return err_set(-EPROTO, "a streamed frame without a \"records\" list");
	if (node) {
		r = log_openers_get(&rp->nodes, rp->key_file, node, &rp->open);
		if (r < 0)
			return r;
		rp->node = node;
	}
	json_array_foreach(list, i, rec) {
		if (!json_is_object(rec)) {
			r = err_set(-EPROTO, "an audit record that is not a JSON object");
			break;
		}
		r = add_record(ctx, rec);
		if (r < 0) {
			if (node)
				r = err_set(r, "node %s: %s", node, err_detail());
			break;
		}
	}
	rp->open = primary;
	rp->node = NULL;
	return r;
}

/* Do the dataset's consent codes, as last recorded, exclude grant g (a grant object)? */
static bool suspended(const struct report *rp, const json_t *g)
{
	struct policy_grant pg;
	struct policy_dataset pd;
	struct policy_purpose pp;
	char id[24];

	if (policy_grant_from_json(g, &pg) < 0)
		return false;
	snprintf(id, sizeof(id), "%" PRIu64, pg.dataset_id);
	if (policy_dataset_from_json(json_object_get(rp->policies, id), &pd) < 0 ||
	    policy_purpose_parse(pg.purpose_code, &pp) < 0)
		return false;
	return policy_purpose_excluded(pd.duo, pd.nduo, &pp, pg.expires,
				       pg.consent_override[0] != '\0') != 0;
}

/* Grants in force at rp->now, optionally of one dataset: a new array. */
static json_t *grants_in_force(const struct report *rp, const char *dataset)
{
	json_t *out = json_array(), *g;
	const char *id;

	json_object_foreach(rp->grants, id, g) {
		const char *nb = json_string_value(json_object_get(g, "not_before"));
		const char *ex = json_string_value(json_object_get(g, "expires"));
		const char *ds = json_string_value(json_object_get(g, "dataset"));
		int64_t tnb = 0, tex = 0;

		if (!nb || !ex || time_parse_rfc3339(nb, &tnb) < 0 || time_parse_rfc3339(ex, &tex) < 0)
			continue;
		if (rp->now < tnb || rp->now >= tex)
			continue;
		if (dataset && (!ds || strcmp(ds, dataset) != 0))
			continue;
		if (suspended(rp, g))
			continue;
		/* The grant's one shape (docs/json/enclavectl.schema.json): in force is
		 * "active", with the approvals it came into force with (none: 0). */
		{
			json_t *c = json_copy(g), *n = json_object_get(rp->approvals, id);

			if (!c || json_object_set_new(c, "state", json_string("active")) < 0 ||
			    json_object_set_new(c, "approvals", n ? json_incref(n)
								  : json_integer(0)) < 0) {
				json_decref(c);
				json_decref(out);
				return NULL;
			}
			if (json_array_append_new(out, c) < 0) {
				json_decref(out);
				return NULL;
			}
		}
	}
	return out;
}

static void print_entry(const char *indent, const char *name, const json_t *e)
{
	char safe[160], size[16], line[512];
	const json_t *den = json_object_get(e, "denials"), *n;
	const char *reason;
	size_t off = 0;

	json_object_foreach((json_t *)den, reason, n) {
		if (json_integer_value(n) == 0)
			continue;
		off += (size_t)snprintf(line + off, off < sizeof(line) ? sizeof(line) - off : 0,
					"%s%s %" JSON_INTEGER_FORMAT, off ? ", " : " (", reason,
					json_integer_value(n));
		if (off >= sizeof(line))
			off = sizeof(line) - 1;
	}
	if (off)
		snprintf(line + off, sizeof(line) - off, ")");
	else
		line[0] = '\0';
	out_size((uint64_t)json_integer_value(json_object_get(e, "bytes")), size);
	printf("%s%-24s opens %-6" JSON_INTEGER_FORMAT " denials %" JSON_INTEGER_FORMAT "%s"
	       "  reads refused %" JSON_INTEGER_FORMAT "  read %s",
	       indent, out_text(name, 0, safe, sizeof(safe)),
	       json_integer_value(json_object_get(e, "opens")),
	       json_integer_value(json_object_get(e, "denials_total")), line,
	       json_integer_value(json_object_get(e, "reads_refused")), size);
	if (json_object_get(e, "files"))
		printf("  files %" JSON_INTEGER_FORMAT,
		       json_integer_value(json_object_get(e, "files")));
	fputc('\n', stdout);
}

static int print_report(const struct report *rp)
{
	const char *name, *uname;
	json_t *d, *u, *g;
	char safe[160];
	uint64_t left = 0;
	size_t i;

	for (int k = 0; k < LEFT_N; k++)
		left += rp->left_out[k];
	printf("records: %" PRIu64 " in the log, %" PRIu64 " counted, %" PRIu64 " left out",
	       rp->total, rp->records, left);
	if (left)
		printf(" (outside the time range %" PRIu64 ", not about this dataset %" PRIu64
		       ", not matching the other filters %" PRIu64 ")",
		       rp->left_out[LEFT_TIME], rp->left_out[LEFT_DATASET],
		       rp->left_out[LEFT_FILTER]);
	printf("\n\nper dataset:\n");
	json_object_foreach(rp->datasets, name, d) {
		json_t *grants = grants_in_force(rp, name);

		print_entry("  ", name, d);
		json_object_foreach(json_object_get(d, "users"), uname, u)
			print_entry("      ", uname, u);
		printf("      grants in force: %zu\n", json_array_size(grants));
		json_decref(grants);
	}
	printf("\nper user:\n");
	json_object_foreach(rp->users, name, u)
		print_entry("  ", name, u);
	printf("\nper batch job:\n");
	json_object_foreach(rp->jobs, name, u) {
		char label[64], list[512];
		const json_t *v;
		size_t off = 0;

		snprintf(label, sizeof(label), "job %s", name);
		print_entry("  ", label, u);
		list[0] = '\0';
		json_array_foreach(json_object_get(u, "users"), i, v)
			off += (size_t)snprintf(list + off, off < sizeof(list) ? sizeof(list) - off : 0,
						"%s%s", off ? ", " : "", json_string_value(v));
		printf("      users: %s\n", out_text(list, 0, safe, sizeof(safe)));
		off = 0;
		list[0] = '\0';
		json_array_foreach(json_object_get(u, "datasets"), i, v)
			off += (size_t)snprintf(list + off, off < sizeof(list) ? sizeof(list) - off : 0,
						"%s%s", off ? ", " : "", json_string_value(v));
		printf("      datasets: %s\n", out_text(list, 0, safe, sizeof(safe)));
		if (json_object_size(json_object_get(u, "nodes")) > 1 ||
		    (json_object_size(json_object_get(u, "nodes")) == 1 &&
		     !json_object_get(json_object_get(u, "nodes"), "(primary)"))) {
			const char *nname;
			const json_t *nv;

			json_object_foreach(json_object_get(u, "nodes"), nname, nv)
				print_entry("      node ", nname, nv);
		}
	}
	printf("\ngrants in force now%s%s:\n", rp->dataset ? " on " : "",
	       rp->dataset ? rp->dataset : "");
	g = grants_in_force(rp, rp->dataset);
	json_array_foreach(g, i, d) {
		char s1[24], s2[160], s3[24];

		printf("  %s  %s -> %s  until %s\n", out_member(d, "id", s3),
		       out_text(out_member(d, "principal", s1), 40, safe, sizeof(safe)),
		       out_text(json_string_value(json_object_get(d, "dataset")) ?
				json_string_value(json_object_get(d, "dataset")) : "?", 40, s2, sizeof(s2)),
		       out_member(d, "expires", s1));
	}
	json_decref(g);
	return fflush(stdout) == 0 ? 0 : -EIO;
}

/* The report as one JSON document: every key always present (docs/PROTOCOL.md). */
static int print_json(const struct report *rp)
{
	json_t *left = json_object(), *out;
	int r;

	if (!left)
		return -ENOMEM;
	for (int k = 0; k < LEFT_N; k++)
		json_object_set_new(left, left_out_names[k], json_integer((json_int_t)rp->left_out[k]));
	out = json_pack("{s:I, s:I, s:o, s:O, s:O, s:O, s:o}", "records", (json_int_t)rp->records,
			"records_total", (json_int_t)rp->total, "left_out", left, "datasets",
			rp->datasets, "users", rp->users, "jobs", rp->jobs, "grants_in_force",
			grants_in_force(rp, rp->dataset));
	if (!out)
		return -ENOMEM;
	r = out_json(out);
	json_decref(out);
	return r;
}

/* WHEN as unix seconds (as audit show takes it: -1h is an hour ago). EXIT_USAGE after a
 * message. */
static int parse_when(const char *opt, const char *s, int64_t *ret)
{
	char text[TIME_TEXT_MAX];
	int r = ctl_absolute_time("audit report", opt, s, text);

	if (r)
		return r;
	if (time_parse_rfc3339(text, ret) < 0)
		return ctl_usage_error("audit report", "%s: not a time", opt);
	return 0;
}

/* A positive decimal number. */
static bool parse_id(const char *s, uint64_t *ret)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (s[0] < '1' || s[0] > '9' || errno || *end || v > INT64_MAX)
		return false;
	*ret = v;
	return true;
}

static bool name_ok(const char *s)
{
	return *s && strlen(s) <= POLICY_NAME_MAX && out_utf8_valid(s, strlen(s));
}

/* Through the daemon, the filters are first checked by audit.show itself (one record at most):
 * a dataset, user, group, grant or version that does not exist is its error, in its words. */
static int check_filters(const struct ctl *ctl, const struct audit_filter *f)
{
	struct reply rep = { 0 };
	json_t *args = json_pack("{s:I}", "limit", (json_int_t)1);
	int r;

	if (!args ||
	    (f->dataset && json_object_set_new(args, "dataset", json_string(f->dataset)) < 0) ||
	    (f->version && json_object_set_new(args, "version", json_integer(f->version)) < 0) ||
	    (f->user && json_object_set_new(args, "user", json_string(f->user)) < 0) ||
	    (f->grantee && json_object_set_new(args, "grantee", json_string(f->grantee)) < 0) ||
	    (f->group && json_object_set_new(args, "group", json_string(f->group)) < 0) ||
	    (f->grant_id && json_object_set_new(args, "grant_id",
						json_integer((json_int_t)f->grant_id)) < 0) ||
	    (f->job_id && json_object_set_new(args, "job_id",
					      json_integer((json_int_t)f->job_id)) < 0)) {
		json_decref(args);
		return ctl_fail("audit report", "out of memory");
	}
	/* The daemon records who asked for what (an "audit_query" record), this as a report. */
	if (json_object_set_new(args, "for", json_string("report")) < 0) {
		json_decref(args);
		return ctl_fail("audit report", "out of memory");
	}
	r = ctl_call(ctl, "audit report", "audit.show", args, NULL, NULL, &rep);
	reply_clear(&rep);
	return r;
}

int audit_report_cmd(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "log", required_argument, NULL, OPT_LOG },
		{ "dataset", required_argument, NULL, OPT_DATASET },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "until", required_argument, NULL, OPT_UNTIL },
		{ "user", required_argument, NULL, OPT_USER },
		{ "grantee", required_argument, NULL, OPT_GRANTEE },
		{ "group", required_argument, NULL, OPT_GROUP },
		{ "grant", required_argument, NULL, OPT_GRANT },
		{ "job", required_argument, NULL, OPT_JOB },
		{ "auditor-key", required_argument, NULL, OPT_AUDITOR_KEY },
		{ 0 },
	};
	static const char what[] = "audit report";
	struct rargs a = { 0 };
	struct report rp = { .now = (int64_t)time(NULL) };
	struct audit_filter f = { 0 }, f_all, f_name;
	char name[129];
	uint32_t version = 0;
	int64_t since = 0, until = 0;
	int first, r, ret = 1;

	r = ctl_parse(ctl, what, report_usage, argc, argv, opts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error(what, "unexpected argument '%s'", argv[first]);
	if (a.dataset && (r = ctl_parse_dataset(what, a.dataset, name, &version)))
		return r;
	if (a.user && !name_ok(a.user))
		return ctl_usage_error(what, "--user: a name or uid of 1 to %d bytes",
				       POLICY_NAME_MAX);
	if (a.grantee && !name_ok(a.grantee))
		return ctl_usage_error(what, "--grantee: a name or uid of 1 to %d bytes",
				       POLICY_NAME_MAX);
	if (a.group && !name_ok(a.group))
		return ctl_usage_error(what, "--group: a name or gid of 1 to %d bytes",
				       POLICY_NAME_MAX);
	if (a.grant && !parse_id(a.grant, &f.grant_id))
		return ctl_usage_error(what, "--grant '%.40s': a grant id (a number from 1)",
				       a.grant);
	if (a.job && !parse_id(a.job, &f.job_id))
		return ctl_usage_error(what, "--job '%.40s': a job id (a number from 1)", a.job);
	if (a.since && (r = parse_when("--since", a.since, &since)))
		return r;
	if (a.until && (r = parse_when("--until", a.until, &until)))
		return r;
	f.dataset = a.dataset ? name : NULL;
	f.version = version;
	f.user = a.user;
	f.grantee = a.grantee;
	f.group = a.group;
	if (!a.log && (f.dataset || f.user || f.grantee || f.group || f.grant_id || f.job_id) &&
	    (r = check_filters(ctl, &f)))
		return r;
	f_name = f;
	if (since > 0)
		f.since_ns = since >= INT64_MAX / 1000000000 ? INT64_MAX : since * 1000000000;
	if (until > 0 && until < INT64_MAX / 1000000000)
		f.until_ns = until * 1000000000;
	else if (a.until && until <= 0)
		f.until_ns = 1;
	f_all = f_name;
	f_all.dataset = NULL;
	f_all.version = 0;
	rp.datasets = json_object();
	rp.users = json_object();
	rp.jobs = json_object();
	rp.grants = json_object();
	rp.pending = json_object();
	rp.approvals = json_object();
	rp.open_job = json_object();
	rp.job_files = json_object();
	rp.policies = json_object();
	if (!rp.datasets || !rp.users || !rp.jobs || !rp.grants || !rp.pending || !rp.approvals ||
	    !rp.open_job ||
	    !rp.policies ||
	    !rp.job_files || audit_matcher_new(&f, &rp.m) < 0 ||
	    audit_matcher_new(&f_all, &rp.m_all) < 0 || audit_matcher_new(&f_name, &rp.m_name) < 0) {
		ctl_fail(what, "out of memory");
		goto out;
	}
	rp.dataset = f.dataset;
	err_clear();
	r = audit_opener_new(NULL, a.auditor_key, &rp.open);
	if (r < 0) {
		ctl_fail(what, "--auditor-key: %s", *err_detail() ? err_detail() : strerror(-r));
		goto out;
	}
	rp.key_file = a.auditor_key;
	/* Every record is read, filters applied here: grants need the whole history. */
	if (a.log) {
		r = audit_foreach(a.log, NULL, on_file_record, &rp);
		if (r < 0) {
			ctl_fail(what, "%s: %s", a.log, err_detail());
			goto out;
		}
		/* Then every compute node's log (DIR/nodes/NAME): their opens, closes and refusals
		 * count as the primary's do, named by node in each job. */
		r = report_nodes(&rp, a.log);
		if (r < 0) {
			ctl_fail(what, "%s/nodes: %s", a.log, err_detail());
			goto out;
		}
		/* Offline there is no store to ask: what the filters name must be in the log. */
		if ((f.dataset || f.user || f.grantee || f.group || f.grant_id || f.job_id) &&
		    rp.named == 0) {
			ctl_fail(what, "%s: no record names what the filters ask for (no such "
				 "dataset, version, user, group, grant or job in this log)", a.log);
			goto out;
		}
	} else {
		struct reply rep = { 0 };

		r = ctl_call(ctl, what, "audit.show", json_pack("{s:s}", "for", "report"),
			     on_partial, &rp, &rep);
		if (r)
			goto out;
		reply_clear(&rep);
	}
	r = ctl->json ? print_json(&rp) : print_report(&rp);
	ret = r < 0 ? 1 : 0;
out:
	audit_opener_free(rp.open);
	log_openers_free(&rp.nodes);
	audit_matcher_free(rp.m);
	audit_matcher_free(rp.m_all);
	audit_matcher_free(rp.m_name);
	json_decref(rp.datasets);
	json_decref(rp.users);
	json_decref(rp.jobs);
	json_decref(rp.grants);
	json_decref(rp.pending);
	json_decref(rp.approvals);
	json_decref(rp.open_job);
	json_decref(rp.job_files);
	json_decref(rp.policies);
	return ret;
}
