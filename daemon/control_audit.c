/* control_audit: the audit operations of the control socket (docs/PROTOCOL.md). */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "common/timefmt.h"
#include "daemon/daemon.h"
#include "daemon/control_internal.h"
#include "audit/note.h"

#define AUDIT_BATCH_RECORDS 256
#define AUDIT_BATCH_BYTES (512u * 1024)
#define AUDIT_LIMIT_MAX 100000u

/* ---- Audit ----------------------------------------------------------------------------------- */

/* s is 1 or more decimal digits. */
static bool is_decimal(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

struct audit_stream {
	struct conn *c;
	json_t *batch;              /* records not yet sent, all of one log */
	size_t batch_bytes;
	const char *batch_node;     /* whose log the batch is from: a node's name, NULL the primary */
	uint64_t count;             /* records matched */
	uint64_t limit;             /* 0: all; else keep only the last `limit` in ring */
	json_t **ring;              /* limit slots, oldest overwritten */
	const char **ring_node;     /* and whose log each is from */
};

/* A batch goes out as {"records": [...]} and, for a node's log, "node": NAME: the client opens
 * each log's records with that log's own key records (docs/PROTOCOL.md audit.show). */
static int stream_flush(struct audit_stream *s)
{
	json_t *j;
	int r;

	if (json_array_size(s->batch) == 0)
		return 0;
	j = json_pack("{s:O}", "records", s->batch);
	if (j && s->batch_node && json_object_set_new(j, "node", json_string(s->batch_node)) < 0) {
		json_decref(j);
		j = NULL;
	}
	if (!j)
		return -ENOMEM;
	r = proto_send(s->c->fd, PROTO_PARTIAL, j, -1);
	json_decref(j);
	json_array_clear(s->batch);
	s->batch_bytes = 0;
	return r;
}

static int stream_add(struct audit_stream *s, json_t *rec, size_t len, const char *node)
{
	if (json_array_size(s->batch) && (node != s->batch_node)) {
		int r = stream_flush(s);

		if (r < 0)
			return r;
	}
	s->batch_node = node;
	if (json_array_append(s->batch, rec) < 0)
		return -ENOMEM;
	s->batch_bytes += len;
	if (json_array_size(s->batch) >= AUDIT_BATCH_RECORDS || s->batch_bytes >= AUDIT_BATCH_BYTES)
		return stream_flush(s);
	return 0;
}

/* One record matched (or a key record, always sent): sent, or kept in the ring for --limit. */
static int stream_one(struct audit_stream *s, json_t *rec, bool key, size_t len, const char *node)
{
	/* Key records always go, at once, outside the limit and the count: the client needs them
	 * to open the records that follow (docs/AUDIT.md section 15). */
	if (key)
		return stream_add(s, rec, len, node);
	if (s->limit) {
		size_t slot = s->count % s->limit;

		json_decref(s->ring[slot]);
		s->ring[slot] = json_incref(rec);
		s->ring_node[slot] = node;
		s->count++;
		return 0;
	}
	s->count++;
	return stream_add(s, rec, len, node);
}

/* ---- The primary's log and every node's, merged in time order ------------------------------- */

#define MERGE_NODES_MAX 4096u

/* One log being merged. */
struct merge_src {
	char name[NODE_NAME_MAX + 1];   /* a node's; "" the primary's */
	char dir[4300];
	struct audit_cursor *cur;
	struct audit_opener *open;      /* owned: this log's key records open its sealed parts */
	json_t *rec, *opened;           /* its next record (NULL: done) */
	int64_t t;
	size_t len;
};

static void merge_src_clear(struct merge_src *m)
{
	json_decref(m->rec);
	json_decref(m->opened);
	m->rec = m->opened = NULL;
	audit_cursor_free(m->cur);
	audit_opener_free(m->open);
	m->cur = NULL;
	m->open = NULL;
}

/* The next record of m into m->rec; at the end of a node's log, its length against its last
 * checkpoint: a log holding fewer records than a checkpoint signed for it was cut short. */
static int checkpoint_size(void *ctx, const char *note, size_t len, uint64_t index)
{
	struct checkpoint cp;
	const char *blank = memmem(note, len, "\n\n", 2);

	/* Its text, without the signature lines (the signature is audit verify's to check). */
	(void)index;
	if (blank && checkpoint_parse(note, (size_t)(blank - note) + 1, &cp) == 0)
		*(uint64_t *)ctx = MAX(*(uint64_t *)ctx, cp.size);
	return 0;
}

static int merge_advance(struct merge_src *m)
{
	int r;

	json_decref(m->rec);
	json_decref(m->opened);
	m->rec = m->opened = NULL;
	r = audit_cursor_next(m->cur, &m->rec, &m->opened, &m->t, &m->len);
	/* A damaged node log is the node's data, not the caller's request: invalid_data. */
	if (r < 0)
		return m->name[0] ? err_set(r == -EBADMSG ? -EILSEQ : r, "node %s's log: %s",
					    m->name, err_detail()) : r;
	if (r == 0 && m->name[0]) {
		char path[4400];
		uint64_t signed_size = 0, torn = 0, have = audit_cursor_records(m->cur);

		snprintf(path, sizeof(path), "%s/" CHECKPOINTS_FILE_NAME, m->dir);
		r = checkpoints_foreach(path, checkpoint_size, &signed_size, &torn);
		if (r < 0 && r != -ENOENT)
			return err_set(r, "node %s's log: %s", m->name, err_detail());
		if (signed_size > have)
			return err_set(-EILSEQ, "node %s's log holds %llu records, but a checkpoint "
				       "its node signed covers %llu: it was cut short (audit verify "
				       "says more)", m->name, (unsigned long long)have,
				       (unsigned long long)signed_size);
	}
	return 0;
}

/* Open the log in m->dir with an opener of key (AUDIT_SEAL_KEY_LEN bytes) and read its first
 * record. */
static int merge_open(struct merge_src *m, const uint8_t *key)
{
	int r = audit_opener_new(key, NULL, &m->open);

	if (r == 0)
		r = audit_cursor_open(m->dir, m->open, &m->cur);
	if (r < 0)
		return m->name[0] ? err_set(r, "node %s's log: %s", m->name, err_detail()) : r;
	return merge_advance(m);
}

/* fn(c, dir, NAME, ctx) for every node's log directory audit/nodes/NAME (dir: audit/nodes),
 * until one fails. No audit/nodes: none. An entry that is not a node name fails: the directory
 * holds nothing else, so something there that no node wrote is named, not skipped. */
static int nodes_foreach(struct conn *c,
			 int (*fn)(struct conn *c, const char *dir, const char *name, void *ctx),
			 void *ctx)
{
	char path[4200];
	DIR *dir;
	int r = 0;

	snprintf(path, sizeof(path), "%s/" NODE_DIR_NAME, c->d->audit_dir);
	dir = opendir(path);
	if (!dir)
		return errno == ENOENT ? 0 : err_set(-errno, "%s: %s", path, strerror(errno));
	for (struct dirent *de; r == 0 && (de = readdir(dir));) {
		if (de->d_name[0] == '.')
			continue;
		if (!node_name_valid(de->d_name)) {
			r = err_set(-EBADMSG, "%s/%.80s: not a node's log directory", path,
				    de->d_name);
			break;
		}
		r = fn(c, path, de->d_name, ctx);
	}
	closedir(dir);
	return r;
}

/* The merge's sources so far (merge_nodes). */
struct merge_srcs {
	struct merge_src **srcs;
	size_t *n;
};

/* One more source: node name's log, with the key the primary derives for it. */
static int merge_node(struct conn *c, const char *path, const char *name, void *ctx)
{
	struct merge_srcs *ms = ctx;
	struct merge_src *m, *grown;
	crypto_key *k = NULL;
	int r;

	if (*ms->n >= MERGE_NODES_MAX + 1)
		return err_set(-E2BIG, "more than %u node logs", MERGE_NODES_MAX);
	grown = realloc(*ms->srcs, (*ms->n + 1) * sizeof(**ms->srcs));
	if (!grown)
		return -ENOMEM;
	*ms->srcs = grown;
	m = &(*ms->srcs)[(*ms->n)++];
	*m = (struct merge_src){ 0 };
	/* node_name_valid(): at most NODE_NAME_MAX bytes; the path fits (audit_dir < 4096). */
	memcpy(m->name, name, strlen(name) + 1);
	if ((size_t)snprintf(m->dir, sizeof(m->dir), "%s/%.64s", path, m->name) >= sizeof(m->dir))
		return -ENAMETOOLONG;
	r = store_node_audit_key(c->d->st, m->name, &k);
	if (r == 0)
		r = merge_open(m, crypto_key_bytes(k));
	crypto_key_free(k);
	return r;
}

/* Every node's log under audit/nodes, each with the key the primary derives for it. */
static int merge_nodes(struct conn *c, struct merge_src **srcs, size_t *n)
{
	struct merge_srcs ms = { srcs, n };

	return nodes_foreach(c, merge_node, &ms);
}

/* For the filter's state (an open chosen, followed to its close by open_seq), a node's records
 * are numbered apart from the primary's and each other's: node i's seq and open_seq + i << 48. A
 * shallow copy; rec is not changed. */
static json_t *match_form(const json_t *opened, size_t i)
{
	json_t *c;
	const char *k[] = { "seq", "open_seq" };

	if (i == 0)
		return json_incref((json_t *)opened);
	c = json_copy((json_t *)opened);
	for (size_t j = 0; c && j < ARRAY_SIZE(k); j++) {
		json_t *v = json_object_get(c, k[j]);

		if (json_is_integer(v) &&
		    json_object_set_new(c, k[j], json_integer(json_integer_value(v) +
							      ((json_int_t)i << 48))) < 0) {
			json_decref(c);
			c = NULL;
		}
	}
	return c;
}

/* The primary's log and every node's (audit/nodes/NAME), in time order (the primary's first at
 * equal times), through one filter; each record sent as written, named by its log. A node log
 * that does not read (edited, cut short against its own checkpoints, not opening) fails the
 * whole answer, naming the node: never skipped. */
static int show_merged(struct conn *c, const struct audit_filter *f, struct audit_stream *s)
{
	struct merge_src *srcs = calloc(1, sizeof(*srcs));
	struct audit_matcher *m = NULL;
	crypto_key *k = NULL;
	size_t n = 1;
	int r;

	if (!srcs)
		return -ENOMEM;
	snprintf(srcs[0].dir, sizeof(srcs[0].dir), "%s", c->d->audit_dir);
	r = store_audit_seal_key(c->d->st, &k);
	if (r == 0)
		r = merge_open(&srcs[0], crypto_key_bytes(k));
	crypto_key_free(k);
	if (r == 0)
		r = merge_nodes(c, &srcs, &n);
	if (r == 0)
		r = audit_matcher_new(f, &m);
	while (r == 0) {
		size_t best = n;
		struct merge_src *b;
		const char *ev;
		json_t *mf;

		for (size_t i = 0; i < n; i++)
			if (srcs[i].rec && (best == n || srcs[i].t < srcs[best].t))
				best = i;
		if (best == n)
			break;
		b = &srcs[best];
		ev = json_string_value(json_object_get(b->opened, "event"));
		if (ev && strcmp(ev, "log_key") == 0) {
			r = stream_one(s, b->rec, true, b->len, best ? b->name : NULL);
		} else {
			mf = match_form(b->opened, best);
			r = mf ? audit_matcher_test(m, mf, b->t) : -ENOMEM;
			json_decref(mf);
			if (r > 0)
				r = stream_one(s, b->rec, false, b->len, best ? b->name : NULL);
		}
		if (r >= 0)
			r = merge_advance(b);
	}
	/* The ring holds names borrowed from srcs: sent before they go. */
	if (r == 0 && s->limit) {
		uint64_t kept = MIN(s->count, s->limit);

		for (uint64_t i = 0; i < kept && r == 0; i++) {
			size_t slot = (s->count - kept + i) % s->limit;
			json_t *rec = s->ring[slot];

			r = stream_add(s, rec, json_dumpb(rec, NULL, 0, JSON_COMPACT),
				       s->ring_node[slot]);
		}
		s->count = kept;
	}
	if (r == 0)
		r = stream_flush(s);
	audit_matcher_free(m);
	for (size_t i = 0; i < n; i++)
		merge_src_clear(&srcs[i]);
	free(srcs);
	return r;
}

/* A grant with this id exists (in any state). -ENOENT otherwise. */
static int grant_exists(struct conn *c, uint64_t id)
{
	struct policy_grant *gs = NULL;
	size_t n = 0;
	bool found = false;
	int r = grants_snapshot(c->d->grants, &gs, NULL, &n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n && !found; i++)
		found = gs[i].id == id;
	free(gs);
	return found ? 0 : err_set(-ENOENT, "no grant with id %llu", (unsigned long long)id);
}

/* A user or group named in a filter must exist (a number is taken as it is). The resolved id, as
 * decimal text, replaces a name: records hold ids the names may no longer map to. */
static int principal_arg(uint32_t kind, const char *what, const char *s, char out[static 24])
{
	char name[POLICY_NAME_MAX + 1];
	uint32_t id;
	int r = config_principal_resolve(kind, s, &id, name);

	if (r == -ESRCH)
		return err_set(-ESRCH, "%s: no such %s \"%.64s\"", what,
			       kind == POLICY_USER ? "user" : "group", s);
	if (r < 0)
		return err_set(-EINVAL, "%s: not a %s name or id: \"%.64s\"", what,
			       kind == POLICY_USER ? "user" : "group", s);
	snprintf(out, 24, "%u", id);
	return 0;
}

/* Who looked at what is part of the record (#14, point 11): an "audit_query" record of the
 * caller, what they asked for (query: "show", "report" or "prove") and the arguments they gave
 * (sealed with the rest of the record's text), written before anything is answered. A query that
 * cannot be recorded is refused. */
static int record_query(struct conn *c, const char *query, const json_t *args)
{
	json_t *rec = json_pack("{s:s, s:s}", "event", "audit_query", "query", query);
	json_t *given = json_object();
	const char *k;
	json_t *v;
	int r;

	if (!rec || !given)
		goto nomem;
	json_object_foreach((json_t *)args, k, v)
		if (strcmp(k, "for") != 0 && json_object_set(given, k, v) < 0)
			goto nomem;
	/* set_new takes given, on failure too. */
	r = json_object_set_new(rec, "args", given);
	given = NULL;
	if (r < 0 || daemon_audit_subject(rec, &c->who) < 0)
		goto nomem;
	r = audit_append(c->d->log, rec, NULL);
	json_decref(rec);
	if (r < 0)
		return err_set(r, "the audit log could not record this query (%s): refused",
			       err_detail()[0] ? err_detail() : strerror(-r));
	return 0;
nomem:
	json_decref(given);
	json_decref(rec);
	return -ENOMEM;
}

int op_audit_show(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "user", "event", "decision", "since",
					     "until", "limit", "grantee", "group", "grant_id",
					     "version", "job_id", "seq", "for", NULL };
	const char *query = "show";
	struct audit_filter f = { 0 };
	struct audit_stream s = { .c = c };
	struct store_dataset_info ds;
	char user[24], grantee[24], group[24];
	int64_t since = 0, until = 0;
	uint64_t version = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", false, STORE_DATASET_NAME_MAX, &f.dataset)) < 0 ||
	    (r = proto_arg_string(args, "user", false, POLICY_NAME_MAX, &f.user)) < 0 ||
	    (r = proto_arg_string(args, "event", false, 512, &f.event)) < 0 ||
	    (r = proto_arg_string(args, "decision", false, 8, &f.decision)) < 0 ||
	    (r = proto_arg_string(args, "grantee", false, POLICY_NAME_MAX, &f.grantee)) < 0 ||
	    (r = proto_arg_string(args, "group", false, POLICY_NAME_MAX, &f.group)) < 0 ||
	    (r = proto_arg_u64(args, "grant_id", false, INT64_MAX, &f.grant_id)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &version)) < 0 ||
	    (r = proto_arg_u64(args, "job_id", false, INT64_MAX, &f.job_id)) < 0 ||
	    (r = proto_arg_u64(args, "seq", false, INT64_MAX, &f.seq)) < 0 ||
	    (r = time_arg(args, "since", false, &since)) < 0 ||
	    (r = time_arg(args, "until", false, &until)) < 0 ||
	    (r = proto_arg_u64(args, "limit", false, AUDIT_LIMIT_MAX, &s.limit)) < 0 ||
	    (r = proto_arg_string(args, "for", false, 16, &query)) < 0)
		return r;
	if (strcmp(query, "show") != 0 && strcmp(query, "report") != 0)
		return err_set(-EINVAL, "for: \"show\" or \"report\"");
	f.seq_set = json_object_get(args, "seq") != NULL;
	/* Whatever a filter names must exist: a typo is an error, not an empty answer. */
	if (f.event && (r = audit_event_filter_check(f.event)) < 0)
		return r;
	if (f.decision && strcmp(f.decision, "allow") != 0 && strcmp(f.decision, "deny") != 0)
		return err_set(-EINVAL, "decision: \"allow\" or \"deny\"");
	if (f.dataset && (r = get_dataset(c, f.dataset, &ds)) < 0)
		return r;
	if (version) {
		struct store_version_info vi;

		if (!f.dataset)
			return err_set(-EINVAL, "version needs dataset");
		if (store_version_get(c->d->st, ds.id, (uint32_t)version, &vi) < 0)
			return err_set(-ENOENT, "dataset \"%s\" has no version %llu", f.dataset,
				       (unsigned long long)version);
		f.version = (uint32_t)version;
	}
	if (f.user && !is_decimal(f.user)) {
		if ((r = principal_arg(POLICY_USER, "user", f.user, user)) < 0)
			return r;
		f.user = user;
	}
	if (f.grantee) {
		if ((r = principal_arg(POLICY_USER, "grantee", f.grantee, grantee)) < 0)
			return r;
		f.grantee = grantee;
	}
	if (f.group) {
		if ((r = principal_arg(POLICY_GROUP, "group", f.group, group)) < 0)
			return r;
		f.group = group;
	}
	if (f.grant_id && (r = grant_exists(c, f.grant_id)) < 0)
		return r;
	/* The filter counts nanoseconds since 1970 (0: no bound), which hold until 2262. Every
	 * record is after 1970: an earlier `since` bounds nothing, an earlier `until` everything. */
	if (since > 0)
		f.since_ns = since >= INT64_MAX / 1000000000 ? INT64_MAX : since * 1000000000;
	if (until > 0 && until < INT64_MAX / 1000000000)
		f.until_ns = until * 1000000000;
	else if (until <= 0 && json_object_get(args, "until"))
		f.until_ns = 1;
	/* The daemon opens the records with its own key to match them, and sends them as they
	 * are, sealed: only an auditor's key opens them at the other end. What is sealed can be
	 * filtered on only by an auditor, or a steward would learn from the matches who read
	 * what without that key. */
	if (!(c->roles & ROLE_AUDITOR) && (f.dataset || f.user || f.grantee || f.group || f.job_id))
		return err_set(-EPERM, "filters by dataset, user, grantee, group or job look inside "
			       "sealed records: auditors only (stewards filter by event, decision, "
			       "grant, seq and time)");
	f.keys = true;
	f.pass_sealed = true;
	r = record_query(c, query, args);
	if (r < 0)
		return r;
	s.batch = json_array();
	if (!s.batch)
		return -ENOMEM;
	if (s.limit) {
		s.ring = calloc(s.limit, sizeof(*s.ring));
		s.ring_node = calloc(s.limit, sizeof(*s.ring_node));
		if (!s.ring || !s.ring_node) {
			free(s.ring);
			free(s.ring_node);
			json_decref(s.batch);
			return -ENOMEM;
		}
	}
	r = show_merged(c, &f, &s);
	for (uint64_t i = 0; s.ring && i < s.limit; i++)
		json_decref(s.ring[i]);
	free(s.ring);
	free(s.ring_node);
	json_decref(s.batch);
	if (r < 0)
		return r;
	*ret = json_pack("{s:I}", "count", (json_int_t)s.count);
	return *ret ? 0 : -ENOMEM;
}

/* ---- Auditor keys ---------------------------------------------------------------------------- */

/* Add an auditor's public key: recorded first (`auditor_add`), then put in keys/auditors, then
 * the log starts a new epoch sealed to the new set, so the new auditor reads every record from
 * here on (not the ones before: their keys were sealed to the auditors of their time). */
int op_audit_auditor_add(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "public_key", NULL };
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN], keys[STORE_AUDITORS_MAX][32];
	char id[AUDIT_AUDITOR_ID_TEXT];
	const char *text = NULL;
	size_t n = 0;
	json_t *rec;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "public_key", true, AUDIT_AUDITOR_PUB_TEXT, &text)) < 0)
		return r;
	r = audit_auditor_public_parse(text, strlen(text), pk);
	if (r < 0)
		return r;
	audit_auditor_id(pk, id);
	pthread_mutex_lock(&lock);
	r = store_auditors_get(c->d->st, keys, &n);
	for (size_t i = 0; r == 0 && i < n; i++)
		if (memcmp(keys[i], pk, sizeof(pk)) == 0)
			r = err_set(-EEXIST, "auditor key %s is in the list already", id);
	if (r == 0 && n == STORE_AUDITORS_MAX)
		r = err_set(-E2BIG, "the store has %u auditor keys already, the most it takes",
			    STORE_AUDITORS_MAX);
	if (r < 0)
		goto out;
	rec = json_pack("{s:s, s:s, s:s}", "event", "auditor_add", "auditor", id, "public_key",
			text);
	r = rec ? daemon_audit_subject(rec, &c->who) : -ENOMEM;
	if (r == 0)
		r = audit_append(c->d->log, rec, NULL);
	json_decref(rec);
	if (r < 0)
		goto out;
	r = store_auditors_add(c->d->st, pk);
	if (r == 0)
		r = daemon_seal_setup(c->d);
out:
	pthread_mutex_unlock(&lock);
	if (r < 0)
		return r;
	*ret = json_pack("{s:s, s:I}", "auditor", id, "auditors", (json_int_t)(n + 1));
	return *ret ? 0 : -ENOMEM;
}

/* ---- Checkpoints and proofs ------------------------------------------------------------------ */

/* The verifier key auditors check checkpoints with. Public: anyone may ask. */
int op_audit_pubkey(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	char *key = NULL;
	int r;

	if ((r = proto_args_known(args, known)) < 0)
		return r;
	r = audit_verifier_key(c->d->log, &key);
	if (r < 0)
		return r;
	*ret = json_pack("{s:s}", "key", key);
	free(key);
	return *ret ? 0 : -ENOMEM;
}

/* Sign a checkpoint now (an auditor saves it, to prove later that the log only grew). */
int op_audit_checkpoint(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	char *note = NULL;
	int r;

	if ((r = proto_args_known(args, known)) < 0)
		return r;
	r = audit_checkpoint(c->d->log, &note, NULL);
	if (r < 0)
		return r;
	*ret = json_pack("{s:s}", "checkpoint", note);
	free(note);
	return *ret ? 0 : -ENOMEM;
}

/* An inclusion proof of one record, with the record's exact line. */
int op_audit_prove(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "seq", NULL };
	char *proof = NULL, *line = NULL;
	uint64_t seq = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_u64(args, "seq", true, INT64_MAX, &seq)) < 0)
		return r;
	r = record_query(c, "prove", args);
	if (r < 0)
		return r;
	r = audit_prove(c->d->log, seq, &proof, NULL, &line, NULL);
	if (r < 0)
		return r;
	*ret = json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)seq, "proof", proof, "record", line);
	free(proof);
	free(line);
	return *ret ? 0 : -ENOMEM;
}

/* ---- Export ------------------------------------------------------------------------------------ */

/* A verifiable copy of the log for an auditor who is not root: the export is recorded first
 * (so the copy holds its own record), then a checkpoint is signed and each file goes to the
 * client as a read-only descriptor of a private snapshot, in a partial frame {"file": NAME,
 * "length": N}. The client writes the copy with its own permissions: the daemon never opens a
 * path the caller names. */
/* Node name's log (its checkpoints and its log, as `audit verify` reads them under
 * DIR/nodes/NAME), one partial frame per file; *ctx (size_t) counts the files sent. */
static int export_node(struct conn *c, const char *path, const char *name, void *ctx)
{
	struct audit_export_file nf[AUDIT_EXPORT_NODE_FILES];
	size_t nn = 0, *files_sent = ctx;
	int r;

	(void)path;
	r = audit_export_node(c->d->audit_dir, name, nf, &nn);
	for (size_t i = 0; i < nn && r == 0; i++) {
		json_t *j = json_pack("{s:s, s:I}", "file", nf[i].name, "length",
				      (json_int_t)nf[i].len);

		r = j ? proto_send(c->fd, PROTO_PARTIAL, j, nf[i].fd) : -ENOMEM;
		json_decref(j);
		if (r == 0)
			++*files_sent;
	}
	audit_export_close(nf, nn);
	return r;
}

/* Every compute node's log after the primary's (audit/nodes/NAME). A node log that cannot be
 * copied fails the export: a copy silently without it would verify clean. */
static int export_nodes(struct conn *c, size_t *files_sent)
{
	return nodes_foreach(c, export_node, files_sent);
}

int op_audit_export(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	struct audit_export_file files[AUDIT_EXPORT_FILES_MAX];
	uint64_t count = 0, seq = 0;
	size_t n = 0;
	json_t *rec;
	int r;

	if ((r = proto_args_known(args, known)) < 0)
		return r;
	rec = json_pack("{s:s}", "event", "audit_export");
	if (!rec || daemon_audit_subject(rec, &c->who) < 0) {
		json_decref(rec);
		return -ENOMEM;
	}
	r = audit_append(c->d->log, rec, &seq);
	json_decref(rec);
	if (r < 0)
		return r;
	r = audit_export(c->d->log, files, &n, &count);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		json_t *j = json_pack("{s:s, s:I}", "file", files[i].name, "length",
				      (json_int_t)files[i].len);

		r = j ? proto_send(c->fd, PROTO_PARTIAL, j, files[i].fd) : -ENOMEM;
		json_decref(j);
	}
	audit_export_close(files, n);
	if (r == 0)
		r = export_nodes(c, &n);
	if (r < 0)
		return r;
	*ret = json_pack("{s:I, s:I, s:I}", "records", (json_int_t)count, "files", (json_int_t)n,
			 "export_seq", (json_int_t)seq);
	return *ret ? 0 : -ENOMEM;
}
