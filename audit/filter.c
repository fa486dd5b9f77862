/* filter: which records an audit reader passes on (struct audit_filter, docs/AUDIT.md section 8).
 *
 * The matcher works on decoded records (parsed JSON objects, after any sealed fields have been
 * opened), so the daemon (audit.show), the offline report (--log) and a client that decodes
 * records itself all apply the same rules.
 *
 * Some filters follow a record's links, which is why a matcher has state and sees the records in
 * seq order: a grant chosen by --grantee or --group is followed to its approvals, revocation and
 * the opens it decided; an open chosen by --grant, --job, --grantee or --group is followed to the
 * records that name it by "open_seq" (its close, a refused read, an integrity failure).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit_internal.h"
#include "common/err.h"

/* ---- Event names and families ---------------------------------------------------------------- */

/* Every event the store writes (docs/AUDIT.md section 4). Whoever adds an event adds it here, or
 * `audit show --event NEW` is refused as unknown. */
static const char *const event_names[] = {
	"open", "close", "read_refused", "lookup_refused", "refusals_suppressed", "integrity",
	"io_error",
	"import", "import_crypt4gh", "dataset_policy", "dataset_set", "versions_baseline",
	"crypt4gh_key_create", "export_request", "export_approve", "export_run", "export_refused",
	"erase_request", "erase_approve", "dataset_erase", "erasure_due",
	"grant", "grant_request", "grant_approve", "grant_started", "grant_expired", "revoke",
	"deny_add", "deny_remove", "deny_remove_approve",
	"access_check", "audit_query", "audit_export", "auditor_add", "log_key", "visa_export",
	"visa_key_create",
	"policy_snapshot", "policy_snapshot_more", "policy_completed", "policy_mismatch",
	"policy_rebuild",
	"daemon_start", "daemon_stop", "reload",
	"node_stale", "node_fresh", "node_add", "node_approve", "node_remove",
};

/* A family names a group of events; a filter naming it matches each of them. */
static const struct {
	const char *name;
	const char *const *events;   /* NULL-terminated */
} families[] = {
	{ "access", (const char *const[]){ "open", "close", "read_refused", "lookup_refused",
					   "refusals_suppressed", "integrity", "io_error",
					   NULL } },
	{ "grant", (const char *const[]){ "grant", "grant_request", "grant_approve",
					  "grant_started", "grant_expired", "revoke", "visa_export",
					  "visa_key_create", NULL } },
	{ "deny", (const char *const[]){ "deny_add", "deny_remove", "deny_remove_approve",
					 NULL } },
	{ "dataset", (const char *const[]){ "import", "import_crypt4gh", "dataset_policy",
					    "dataset_set", "versions_baseline", "erase_request",
					    "erase_approve", "dataset_erase", "erasure_due",
					    NULL } },
	{ "crypt4gh", (const char *const[]){ "crypt4gh_key_create", "import_crypt4gh",
					     "export_request", "export_approve", "export_run",
					     "export_refused", NULL } },
	{ "export", (const char *const[]){ "export_request", "export_approve", "export_run",
					   "export_refused", NULL } },
	{ "audit", (const char *const[]){ "audit_query", "audit_export", "auditor_add", "log_key",
					  NULL } },
	{ "daemon", (const char *const[]){ "daemon_start", "daemon_stop", "reload", NULL } },
	{ "node", (const char *const[]){ "node_stale", "node_fresh", "node_add", "node_approve",
					 "node_remove", NULL } },
	{ "policy", (const char *const[]){ "policy_snapshot", "policy_snapshot_more",
					   "policy_completed", "policy_mismatch", "policy_rebuild",
					   NULL } },
};

const char *const *audit_event_list(size_t *ret_n)
{
	*ret_n = ARRAY_SIZE(event_names);
	return event_names;
}

const char *audit_event_family(size_t i, const char *const **ret_events)
{
	if (i >= ARRAY_SIZE(families))
		return NULL;
	if (ret_events)
		*ret_events = families[i].events;
	return families[i].name;
}

static bool name_is(const char *name, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(name, want, len) == 0;
}

/* Does the list item (len bytes at item) name event ev, exactly or as its family? */
static bool item_matches(const char *item, size_t len, const char *ev)
{
	if (name_is(item, len, ev))
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(families); i++) {
		if (!name_is(item, len, families[i].name))
			continue;
		for (const char *const *e = families[i].events; *e; e++)
			if (strcmp(*e, ev) == 0)
				return true;
	}
	return false;
}

static bool item_known(const char *item, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(event_names); i++)
		if (name_is(item, len, event_names[i]))
			return true;
	for (size_t i = 0; i < ARRAY_SIZE(families); i++)
		if (name_is(item, len, families[i].name))
			return true;
	return false;
}

int audit_event_filter_check(const char *list)
{
	const char *p = list;

	if (!list || !*list)
		return err_set(-EINVAL, "no event named");
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		if (len == 0)
			return err_set(-EINVAL, "an empty event name in \"%.64s\"", list);
		if (!item_known(p, len))
			return err_set(-EINVAL, "unknown event \"%.*s\" (events: open, close, "
				       "read_refused, import, grant_request, grant_approve, revoke, "
				       "deny_add, ...; families: access, grant, deny, dataset, audit, "
				       "daemon; docs/AUDIT.md)", (int)MIN(len, (size_t)32), p);
		if (!comma)
			return 0;
		p = comma + 1;
	}
}

static bool event_matches(const char *list, const char *ev)
{
	const char *p = list;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		if (item_matches(p, len, ev))
			return true;
		if (!comma)
			return false;
		p = comma + 1;
	}
}

/* ---- A set of numbers (grant ids, open seqs), capped ----------------------------------------- */

/* Open addressing, linear probing; 0 marks an empty slot, so values are stored plus one. */
struct u64set {
	uint64_t *slot;
	size_t cap;       /* a power of two, or 0 */
	size_t n;
};

static bool set_has(const struct u64set *s, uint64_t v)
{
	if (!s->cap)
		return false;
	v++;
	for (size_t i = (size_t)(v * 0x9e3779b97f4a7c15ull) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (s->slot[i] == v)
			return true;
		if (s->slot[i] == 0)
			return false;
	}
}

static int set_add(struct u64set *s, uint64_t v);

static int set_grow(struct u64set *s)
{
	struct u64set bigger = { .cap = s->cap ? s->cap * 2 : 1024 };

	if (s->n >= AUDIT_FILTER_LINKS_MAX)
		return err_set(-E2BIG, "a filter follows more than %u linked grants or opens; narrow "
			       "it with --since or --dataset", AUDIT_FILTER_LINKS_MAX);
	bigger.slot = calloc(bigger.cap, sizeof(*bigger.slot));
	if (!bigger.slot)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++)
		if (s->slot[i])
			set_add(&bigger, s->slot[i] - 1);
	free(s->slot);
	*s = bigger;
	return 0;
}

static int set_add(struct u64set *s, uint64_t v)
{
	int r;

	if (set_has(s, v))
		return 0;
	if ((s->n + 1) * 2 > s->cap && (r = set_grow(s)) < 0)
		return r;
	v++;
	for (size_t i = (size_t)(v * 0x9e3779b97f4a7c15ull) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (s->slot[i] == 0) {
			s->slot[i] = v;
			s->n++;
			return 0;
		}
	}
}

/* ---- The matcher ----------------------------------------------------------------------------- */

struct audit_matcher {
	const struct audit_filter *f;   /* borrowed */
	bool user_is_id;                /* f->user is decimal digits ... */
	json_int_t user_id;             /* ... of this value */
	bool grantee_is_id;
	json_int_t grantee_id;
	bool group_is_id;
	json_int_t group_id;
	bool follows_grants;            /* grantee or group set: grants chosen are followed */
	bool follows_opens;             /* a filter an open's close cannot be judged by alone */
	struct u64set grants;           /* ids of the grants chosen by grantee/group */
	struct u64set opens;            /* seqs of the opens chosen */
};

/* s is decimal digits only (1 to 19 of them): *ret its value. */
static bool decimal(const char *s, json_int_t *ret)
{
	json_int_t v = 0;
	size_t n = 0;

	if (!s || !*s)
		return false;
	for (; *s; s++, n++) {
		if (*s < '0' || *s > '9' || n == 18)
			return false;
		v = v * 10 + (*s - '0');
	}
	*ret = v;
	return true;
}

int audit_matcher_new(const struct audit_filter *f, struct audit_matcher **ret_m)
{
	struct audit_matcher *m;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->f = f;
	if (f) {
		m->user_is_id = decimal(f->user, &m->user_id);
		m->grantee_is_id = decimal(f->grantee, &m->grantee_id);
		m->group_is_id = decimal(f->group, &m->group_id);
		m->follows_grants = f->grantee || f->group;
		m->follows_opens = m->follows_grants || f->grant_id || f->job_id;
	}
	*ret_m = m;
	return 0;
}

void audit_matcher_free(struct audit_matcher *m)
{
	if (!m)
		return;
	free(m->grants.slot);
	free(m->opens.slot);
	free(m);
}

/* rec's key is a string equal to want. */
static bool str_is(const json_t *rec, const char *key, const char *want)
{
	const json_t *v = json_object_get(rec, key);

	return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

/* rec's key is a non-negative integer; its value in *ret. */
static bool u64_of(const json_t *rec, const char *key, uint64_t *ret)
{
	const json_t *v = json_object_get(rec, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*ret = (uint64_t)json_integer_value(v);
	return true;
}

/* A name-or-number filter against a name and a number held in obj. */
static bool who_is(const json_t *obj, const char *name_key, const char *id_key, const char *want,
		   bool want_is_id, json_int_t want_id)
{
	const json_t *id = json_object_get(obj, id_key);

	return str_is(obj, name_key, want) ||
	       (want_is_id && json_is_integer(id) && json_integer_value(id) == want_id);
}

/* The grant object a grant record carries ("grant" and "grant_request" events), or NULL. */
static const json_t *grant_of(const json_t *rec)
{
	const json_t *g = json_object_get(rec, "grant");

	return json_is_object(g) ? g : NULL;
}

/* Does this grant object belong to the grantee / group asked for? */
static bool grant_chosen(const struct audit_matcher *m, const json_t *g)
{
	const struct audit_filter *f = m->f;

	if (f->grantee && !(str_is(g, "kind", "user") &&
			    who_is(g, "principal", "principal_id", f->grantee, m->grantee_is_id,
				   m->grantee_id)))
		return false;
	if (f->group && !(str_is(g, "kind", "group") &&
			  who_is(g, "principal", "principal_id", f->group, m->group_is_id,
				 m->group_id)))
		return false;
	return true;
}

/* The filters that pick grants and opens (grant id, grantee, group, job), for a record that does
 * not name an open by "open_seq". */
static bool links_ok(const struct audit_matcher *m, const json_t *rec, bool has_gid, uint64_t gid)
{
	const struct audit_filter *f = m->f;
	uint64_t job;

	if (f->grant_id && !(has_gid && gid == f->grant_id))
		return false;
	if (m->follows_grants && !(has_gid && set_has(&m->grants, gid)))
		return false;
	if (f->job_id && !(u64_of(rec, "job_id", &job) && job == f->job_id))
		return false;
	return true;
}

int audit_matcher_test(struct audit_matcher *m, const json_t *rec, int64_t t_ns)
{
	const struct audit_filter *f = m->f;
	const char *ev = json_string_value(json_object_get(rec, "event"));
	const json_t *g;
	uint64_t gid = 0, seq = 0, open_seq = 0, v = 0;
	bool has_gid, is_open, linked, ok;
	int r;

	if (!f)
		return 1;
	g = grant_of(rec);
	has_gid = u64_of(rec, "grant_id", &gid);
	is_open = ev && strcmp(ev, "open") == 0;
	linked = !is_open && u64_of(rec, "open_seq", &open_seq);
	u64_of(rec, "seq", &seq);
	/* Grants and opens are chosen whatever the other filters say (time, event, ...): a later
	 * record that passes them may name one. */
	if (m->follows_grants && g && has_gid && grant_chosen(m, g) &&
	    (r = set_add(&m->grants, gid)) < 0)
		return r;
	if (linked && m->follows_opens) {
		ok = set_has(&m->opens, open_seq);
	} else {
		ok = links_ok(m, rec, has_gid, gid);
		if (ok && is_open && m->follows_opens && (r = set_add(&m->opens, seq)) < 0)
			return r;
	}
	if (!ok || (f->seq_set && seq != f->seq))
		return 0;
	if (f->since_ns && t_ns < f->since_ns)
		return 0;
	if (f->until_ns && t_ns >= f->until_ns)
		return 0;
	if (f->dataset && !str_is(rec, "dataset", f->dataset))
		return 0;
	if (f->event && (!ev || !event_matches(f->event, ev)))
		return 0;
	if (f->decision && !str_is(rec, "decision", f->decision))
		return 0;
	if (f->user && !who_is(rec, "user", "uid", f->user, m->user_is_id, m->user_id))
		return 0;
	/* A record about the version, or a grant of it (a grant of version 0 covers every one). */
	if (f->version && !(u64_of(rec, "version", &v) && v == f->version) &&
	    !(g && u64_of(g, "version", &v) && (v == f->version || v == 0)))
		return 0;
	return 1;
}
