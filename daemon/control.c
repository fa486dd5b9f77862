/* control: the daemon's Unix control socket (docs/PROTOCOL.md).
 *
 * One thread accepts; each connection gets a detached thread that reads one request at a time,
 * checks the caller's role (from SO_PEERCRED and enclave.conf, never from the message), runs the
 * operation and replies. At most CONTROL_CONNECTIONS_MAX connections are served at once.
 *
 * Locking: ctl->lock guards the connection list, the count and `stopping`; control_stop() waits on
 * ctl->idle until the count drops to zero. Everything a handler touches has its own locking
 * (store, grants, audit log, fusefs).
 */
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

#define PROGRESS_INTERVAL_NS (250 * 1000 * 1000LL)
#define AUDIT_BATCH_RECORDS 256
#define AUDIT_BATCH_BYTES (512u * 1024)
#define AUDIT_LIMIT_MAX 100000u

struct conn {
	struct control *ctl;
	struct daemon *d;
	int fd;
	pid_t pid;
	struct policy_subject who;
	unsigned roles;                      /* enum role bits */
	struct store_import *imp;            /* the import this connection runs, or NULL */
	bool imp_failed;                     /* an add failed: only import.abort is accepted */
	char imp_dataset[STORE_DATASET_NAME_MAX + 1];
	int64_t last_progress_ns;
	struct conn *next;                   /* in ctl->conns, under ctl->lock */
};

struct control {
	struct daemon *d;
	int listen_fd;
	pthread_t acceptor;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	bool stopping;
	unsigned nconns;
	struct conn *conns;
};

/* ---- Replies ---------------------------------------------------------------------------------- */

static int reply_ok(struct conn *c, json_t *result)
{
	json_t *j = json_pack("{s:b, s:o}", "ok", 1, "result", result ? result : json_object());
	int r;

	if (!j)
		return -ENOMEM;
	r = proto_send(c->fd, PROTO_REPLY, j, -1);
	json_decref(j);
	return r;
}

/* Reply with err and the current err_detail() (or strerror when there is none). */
static int reply_err(int fd, int err)
{
	const char *detail = err_detail();
	json_t *j = json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code",
			      proto_error_code(err), "message",
			      *detail ? detail : strerror(err < 0 ? -err : err));
	int r;

	if (!j)
		return -ENOMEM;
	r = proto_send(fd, PROTO_REPLY, j, -1);
	json_decref(j);
	return r;
}

static json_t *jtime(int64_t unix_s)
{
	char t[TIME_TEXT_MAX];

	time_format(unix_s, t);
	return json_string(t);
}

/* ---- Small operations ------------------------------------------------------------------------ */

static int count_one(void *ctx, const struct store_dataset_info *info)
{
	(void)info;
	(*(json_int_t *)ctx)++;
	return 0;
}

static int op_status(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	struct daemon *d = c->d;
	int r = proto_args_known(args, known);
	json_int_t datasets = 0;

	if (r < 0)
		return r;
	r = store_dataset_foreach(d->st, count_one, &datasets);
	if (r < 0)
		return r;
	*ret = json_pack("{s:s, s:i, s:s, s:s, s:I, s:o, s:I, s:I, s:I}", "version",
			 PROJECT_VERSION, "protocol", PROTO_VERSION, "store", d->store_dir, "mount",
			 d->mountpoint, "pid", (json_int_t)getpid(), "started", jtime(d->started),
			 "datasets", datasets, "grants", (json_int_t)grants_count(d->grants),
			 "audit_records", (json_int_t)audit_count(d->log));
	return *ret ? 0 : -ENOMEM;
}

static int op_whoami(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	int r = proto_args_known(args, known);
	json_t *roles;

	if (r < 0)
		return r;
	roles = json_array();
	if (c->roles & ROLE_STEWARD)
		json_array_append_new(roles, json_string("steward"));
	if (c->roles & ROLE_AUDITOR)
		json_array_append_new(roles, json_string("auditor"));
	*ret = json_pack("{s:I, s:o, s:o}", "uid", (json_int_t)c->who.uid, "user",
			 audit_string(c->who.user), "roles", roles);
	return *ret ? 0 : -ENOMEM;
}

/* ---- Datasets -------------------------------------------------------------------------------- */

static json_t *dataset_json(const struct store_dataset_info *i)
{
	return json_pack("{s:s, s:I, s:o, s:I}", "name", i->name, "id", (json_int_t)i->id,
			 "created", jtime(i->created_ns / 1000000000), "latest_version",
			 (json_int_t)i->latest_version);
}

static int list_one(void *ctx, const struct store_dataset_info *info)
{
	return json_array_append_new(ctx, dataset_json(info)) < 0 ? -ENOMEM : 0;
}

static int op_dataset_list(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	json_t *arr;
	int r = proto_args_known(args, known);

	if (r < 0)
		return r;
	arr = json_array();
	if (!arr)
		return -ENOMEM;
	r = store_dataset_foreach(c->d->st, list_one, arr);
	if (r < 0) {
		json_decref(arr);
		return r;
	}
	*ret = json_pack("{s:o}", "datasets", arr);
	return *ret ? 0 : -ENOMEM;
}

static int get_dataset(struct conn *c, const char *name, struct store_dataset_info *ret_info)
{
	if (!store_dataset_name_valid(name))
		return err_set(-EINVAL, "\"%.64s\" is not a valid dataset name", name);
	if (store_dataset_get(c->d->st, name, ret_info) < 0)
		return err_set(-ENOENT, "no dataset named \"%s\"", name);
	return 0;
}

static int op_dataset_show(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "version", NULL };
	struct store_dataset_info ds;
	const char *name;
	uint64_t only = 0;
	json_t *versions;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &name)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &only)) < 0 ||
	    (r = get_dataset(c, name, &ds)) < 0)
		return r;
	versions = json_array();
	if (!versions)
		return -ENOMEM;
	for (uint32_t v = only ? (uint32_t)only : 1; v <= (only ? only : ds.latest_version); v++) {
		struct store_version_info vi;

		r = store_version_get(c->d->st, ds.id, v, &vi);
		if (r == -ENOENT && !only)
			continue;
		if (r < 0) {
			json_decref(versions);
			return r == -ENOENT ? err_set(r, "dataset \"%s\" has no version %u", name, v)
					    : r;
		}
		json_array_append_new(
			versions,
			json_pack("{s:I, s:o, s:o, s:I, s:I, s:I}", "version", (json_int_t)v,
				  "created", jtime(vi.created_ns / 1000000000), "committed",
				  jtime(vi.committed_ns / 1000000000), "files", (json_int_t)vi.files,
				  "dirs", (json_int_t)vi.dirs, "bytes", (json_int_t)vi.bytes));
	}
	*ret = json_pack("{s:o, s:o}", "dataset", dataset_json(&ds), "versions", versions);
	return *ret ? 0 : -ENOMEM;
}

/* ---- Import ---------------------------------------------------------------------------------- */

static void import_progress(void *ctx, const struct store_import_stats *s)
{
	struct conn *c = ctx;
	int64_t now = now_monotonic_ns();
	json_t *j;

	if (now - c->last_progress_ns < PROGRESS_INTERVAL_NS)
		return;
	c->last_progress_ns = now;
	j = json_pack("{s:{s:I, s:I, s:I}}", "progress", "files", (json_int_t)s->files, "dirs",
		      (json_int_t)s->dirs, "bytes", (json_int_t)s->bytes);
	/* A client that went away is noticed at its next request; the import goes on till then. */
	if (j)
		proto_send(c->fd, PROTO_PARTIAL, j, -1);
	json_decref(j);
}

static json_t *stats_json(const struct store_import_stats *s)
{
	return json_pack("{s:I, s:I, s:I}", "files", (json_int_t)s->files, "dirs",
			 (json_int_t)s->dirs, "bytes", (json_int_t)s->bytes);
}

/* The audit record of an import's end. */
static int audit_import(struct conn *c, uint32_t version, const char *result, int err)
{
	struct store_import_stats s = { 0 };
	struct store_dataset_info ds = { 0 };
	json_t *rec;
	int r;

	store_import_get_stats(c->imp, &s);
	store_dataset_get(c->d->st, c->imp_dataset, &ds);
	rec = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:s}", "event", "import", "dataset",
			c->imp_dataset, "dataset_id", (json_int_t)ds.id, "version",
			(json_int_t)version, "files", (json_int_t)s.files, "dirs",
			(json_int_t)s.dirs, "bytes", (json_int_t)s.bytes, "result", result);
	if (!rec || daemon_audit_subject(rec, &c->who) < 0) {
		json_decref(rec);
		return -ENOMEM;
	}
	if (err)
		json_object_set_new(rec, "error", audit_string(err_detail()[0] ? err_detail()
										: strerror(-err)));
	r = audit_append(c->d->log, rec, NULL);
	json_decref(rec);
	return r;
}

/* Abandon this connection's import (if any), recording why. */
static void import_end(struct conn *c, int err)
{
	if (!c->imp)
		return;
	audit_import(c, 0, "aborted", err ? err : -ECANCELED);
	store_import_free(c->imp);
	c->imp = NULL;
	c->imp_failed = false;
}

static int op_import_begin(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "chunk_size", NULL };
	struct store_import_options o = { .progress = import_progress, .progress_ctx = c };
	const char *name;
	uint64_t chunk = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &name)) < 0 ||
	    (r = proto_arg_u64(args, "chunk_size", false, UINT32_MAX, &chunk)) < 0)
		return r;
	if (c->imp)
		return err_set(-EBUSY, "this connection already runs an import of \"%s\"",
			       c->imp_dataset);
	if (!store_dataset_name_valid(name))
		return err_set(-EINVAL, "\"%.64s\" is not a valid dataset name (letters, digits, "
			       "'.', '_', '-'; not starting with '.' or '-')", name);
	o.chunk_size = (uint32_t)chunk;
	r = store_import_begin(c->d->st, name, &o, &c->imp);
	if (r == -EBUSY)
		return err_set(r, "another import is running in this store; try again when it ends");
	if (r < 0)
		return r;
	snprintf(c->imp_dataset, sizeof(c->imp_dataset), "%s", name);
	c->imp_failed = false;
	*ret = json_pack("{s:s}", "dataset", name);
	return *ret ? 0 : -ENOMEM;
}

static int import_check(struct conn *c)
{
	if (!c->imp)
		return err_set(-EINVAL, "no import in progress on this connection (import.begin)");
	if (c->imp_failed)
		return err_set(-ECANCELED, "an earlier step of this import failed; only import.abort "
			       "is accepted");
	return 0;
}

static int op_import_dir(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "path", "mode", "mtime_ns", NULL };
	const char *path;
	uint64_t mode = 0755;
	int64_t mtime = 0;
	int r;

	if ((r = import_check(c)) < 0 || (r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "path", true, STORE_PATH_MAX, &path)) < 0 ||
	    (r = proto_arg_u64(args, "mode", false, 07777, &mode)) < 0 ||
	    (r = proto_arg_i64(args, "mtime_ns", false, &mtime)) < 0)
		return r;
	r = store_import_add_dir(c->imp, path, (uint32_t)mode, mtime);
	if (r < 0) {
		c->imp_failed = true;
		return r;
	}
	*ret = json_object();
	return 0;
}

static int op_import_file(struct conn *c, const json_t *args, int fd, json_t **ret)
{
	static const char *const known[] = { "path", NULL };
	struct store_import_stats s;
	const char *path;
	int r;

	if ((r = import_check(c)) < 0 || (r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "path", true, STORE_PATH_MAX, &path)) < 0)
		return r;
	if (fd < 0)
		return err_set(-EINVAL, "import.file needs the file's descriptor attached");
	r = store_import_add_file(c->imp, path, fd);
	if (r < 0) {
		c->imp_failed = true;
		return r;
	}
	store_import_get_stats(c->imp, &s);
	*ret = stats_json(&s);
	return *ret ? 0 : -ENOMEM;
}

static int op_import_commit(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	struct store_import_stats s;
	uint32_t version;
	int r;

	if ((r = import_check(c)) < 0 || (r = proto_args_known(args, known)) < 0)
		return r;
	r = store_import_commit(c->imp, &version);
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail());
		import_end(c, r);
		return err_set(r, "%s", why);
	}
	store_import_get_stats(c->imp, &s);
	/* The version is visible now; if its record cannot be written the log has failed and every
	 * open is refused from here on (fail closed), and the steward is told. */
	r = audit_import(c, version, "committed", 0);
	*ret = json_pack("{s:s, s:I, s:I, s:I, s:I}", "dataset", c->imp_dataset, "version",
			 (json_int_t)version, "files", (json_int_t)s.files, "dirs",
			 (json_int_t)s.dirs, "bytes", (json_int_t)s.bytes);
	store_import_free(c->imp);
	c->imp = NULL;
	if (r < 0) {
		json_decref(*ret);
		*ret = NULL;
		return err_set(-EIO, "version %u of \"%s\" was committed, but the audit log could "
			       "not record it: the daemon now refuses every open", version,
			       c->imp_dataset);
	}
	return *ret ? 0 : -ENOMEM;
}

static int op_import_abort(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	int r;

	if ((r = proto_args_known(args, known)) < 0)
		return r;
	if (!c->imp)
		return err_set(-EINVAL, "no import in progress on this connection");
	import_end(c, -ECANCELED);
	*ret = json_object();
	return 0;
}

/* ---- Grants ---------------------------------------------------------------------------------- */

static int time_arg(const json_t *args, const char *name, bool required, int64_t *ret)
{
	const char *s = NULL;
	int r = proto_arg_string(args, name, required, TIME_TEXT_MAX, &s);

	if (r < 0 || !s)
		return r;
	/* Relative forms are the client's business: on the wire, times are absolute. */
	if (s[0] == '+' || strcmp(s, "now") == 0)
		return err_set(-EINVAL, "argument \"%s\" must be an RFC 3339 time", name);
	r = time_parse(s, 0, ret);
	if (r < 0)
		return err_set(-EINVAL, "argument \"%s\": \"%s\" is not an RFC 3339 time", name, s);
	return 0;
}

static const char *subject_name(const struct policy_subject *who, char buf[static 16])
{
	if (who->user[0])
		return who->user;
	snprintf(buf, 16, "%u", who->uid);
	return buf;
}

static int op_grant_add(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "principal_kind", "principal", "dataset", "version",
					     "purpose", "not_before", "expires", NULL };
	struct policy_grant g = { 0 };
	struct store_dataset_info ds;
	struct store_version_info vi;
	const char *kind, *principal, *dataset, *purpose;
	int64_t now = time(NULL), not_before = now, expires = 0;
	uint64_t version = 0;
	char uidbuf[16];
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "principal_kind", true, 8, &kind)) < 0 ||
	    (r = proto_arg_string(args, "principal", true, POLICY_NAME_MAX, &principal)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &dataset)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &version)) < 0 ||
	    (r = proto_arg_string(args, "purpose", true, POLICY_PURPOSE_MAX, &purpose)) < 0 ||
	    (r = time_arg(args, "not_before", false, &not_before)) < 0 ||
	    (r = time_arg(args, "expires", true, &expires)) < 0)
		return r;
	if (strcmp(kind, "user") == 0)
		g.kind = POLICY_USER;
	else if (strcmp(kind, "group") == 0)
		g.kind = POLICY_GROUP;
	else
		return err_set(-EINVAL, "principal_kind must be \"user\" or \"group\"");
	if (!*purpose)
		return err_set(-EINVAL, "a grant needs a purpose");
	if (expires <= now)
		return err_set(-EINVAL, "the expiry is in the past");
	if (expires <= not_before)
		return err_set(-EINVAL, "the expiry is not after not_before");
	if ((r = config_principal_resolve(g.kind, principal, &g.principal_id, g.principal)) < 0 ||
	    (r = get_dataset(c, dataset, &ds)) < 0)
		return r;
	if (version && store_version_get(c->d->st, ds.id, (uint32_t)version, &vi) < 0)
		return err_set(-ENOENT, "dataset \"%s\" has no version %llu", dataset,
			       (unsigned long long)version);
	g.dataset_id = ds.id;
	snprintf(g.dataset, sizeof(g.dataset), "%s", ds.name);
	g.version = (uint32_t)version;
	snprintf(g.purpose, sizeof(g.purpose), "%s", purpose);
	g.not_before = not_before;
	g.expires = expires;
	g.granted_by_uid = c->who.uid;
	snprintf(g.granted_by, sizeof(g.granted_by), "%s", subject_name(&c->who, uidbuf));
	g.created = now;
	r = grants_add(c->d->grants, c->d->log, &c->who, &g);
	if (r < 0)
		return r;
	*ret = json_pack("{s:o}", "grant", policy_grant_to_json(&g));
	return *ret ? 0 : -ENOMEM;
}

static const char *grant_state(const struct policy_grant *g, int64_t now)
{
	if (g->revoked_at)
		return "revoked";
	if (now >= g->expires)
		return "expired";
	if (now < g->not_before)
		return "not_yet_valid";
	return "active";
}

static int op_grant_list(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "all", NULL };
	_cleanup_free_ struct policy_grant *g = NULL;
	_cleanup_free_ struct policy_revocation *rv = NULL;
	const char *dataset = NULL;
	bool all = false;
	int64_t now = time(NULL);
	json_t *arr;
	size_t n;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", false, STORE_DATASET_NAME_MAX, &dataset)) < 0 ||
	    (r = proto_arg_bool(args, "all", false, &all)) < 0 ||
	    (r = grants_snapshot(c->d->grants, &g, &rv, &n)) < 0)
		return r;
	arr = json_array();
	if (!arr)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *state = grant_state(&g[i], now);
		json_t *o;

		if (dataset && strcmp(dataset, g[i].dataset) != 0)
			continue;
		if (!all && strcmp(state, "active") != 0 && strcmp(state, "not_yet_valid") != 0)
			continue;
		o = policy_grant_to_json(&g[i]);
		if (!o || json_object_set_new(o, "state", json_string(state)) < 0 ||
		    (rv[i].grant_id &&
		     json_object_set_new(o, "revocation", policy_revocation_to_json(&rv[i])) < 0) ||
		    json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			return -ENOMEM;
		}
	}
	*ret = json_pack("{s:o}", "grants", arr);
	return *ret ? 0 : -ENOMEM;
}

static int op_grant_revoke(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "id", "reason", NULL };
	struct policy_revocation rv;
	struct policy_grant g;
	const char *reason = "";
	uint64_t id;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_u64(args, "id", true, UINT64_MAX >> 1, &id)) < 0 ||
	    (r = proto_arg_string(args, "reason", false, POLICY_REASON_MAX, &reason)) < 0)
		return r;
	r = grants_revoke(c->d->grants, c->d->log, &c->who, id, reason, time(NULL), &g, &rv);
	if (r < 0)
		return r;
	/* The table already refuses; now drop what the kernel cached so it asks again. */
	if (c->d->fs)
		fusefs_invalidate_dataset(c->d->fs, g.dataset_id, g.dataset);
	*ret = json_pack("{s:o}", "revocation", policy_revocation_to_json(&rv));
	return *ret ? 0 : -ENOMEM;
}

/* ---- Audit ----------------------------------------------------------------------------------- */

struct audit_stream {
	struct conn *c;
	json_t *batch;              /* records not yet sent */
	size_t batch_bytes;
	uint64_t count;             /* records matched */
	uint64_t limit;             /* 0: all; else keep only the last `limit` in ring */
	json_t **ring;              /* limit slots, oldest overwritten */
};

static int stream_flush(struct audit_stream *s)
{
	json_t *j;
	int r;

	if (json_array_size(s->batch) == 0)
		return 0;
	j = json_pack("{s:O}", "records", s->batch);
	if (!j)
		return -ENOMEM;
	r = proto_send(s->c->fd, PROTO_PARTIAL, j, -1);
	json_decref(j);
	json_array_clear(s->batch);
	s->batch_bytes = 0;
	return r;
}

static int stream_add(struct audit_stream *s, json_t *rec, size_t len)
{
	if (json_array_append(s->batch, rec) < 0)
		return -ENOMEM;
	s->batch_bytes += len;
	if (json_array_size(s->batch) >= AUDIT_BATCH_RECORDS || s->batch_bytes >= AUDIT_BATCH_BYTES)
		return stream_flush(s);
	return 0;
}

static int stream_one(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct audit_stream *s = ctx;

	(void)line;
	if (s->limit) {
		size_t slot = s->count % s->limit;

		json_decref(s->ring[slot]);
		s->ring[slot] = json_incref((json_t *)rec);
		s->count++;
		return 0;
	}
	s->count++;
	return stream_add(s, (json_t *)rec, len);
}

static int op_audit_show(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "user", "event", "since", "until", "limit",
					     NULL };
	struct audit_filter f = { 0 };
	struct audit_stream s = { .c = c };
	int64_t since = 0, until = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", false, STORE_DATASET_NAME_MAX, &f.dataset)) < 0 ||
	    (r = proto_arg_string(args, "user", false, POLICY_NAME_MAX, &f.user)) < 0 ||
	    (r = proto_arg_string(args, "event", false, 32, &f.event)) < 0 ||
	    (r = time_arg(args, "since", false, &since)) < 0 ||
	    (r = time_arg(args, "until", false, &until)) < 0 ||
	    (r = proto_arg_u64(args, "limit", false, AUDIT_LIMIT_MAX, &s.limit)) < 0)
		return r;
	/* The filter counts nanoseconds since 1970 (0: no bound), which hold until 2262. Every
	 * record is after 1970: an earlier `since` bounds nothing, an earlier `until` everything. */
	if (since > 0)
		f.since_ns = since >= INT64_MAX / 1000000000 ? INT64_MAX : since * 1000000000;
	if (until > 0 && until < INT64_MAX / 1000000000)
		f.until_ns = until * 1000000000;
	else if (until <= 0 && json_object_get(args, "until"))
		f.until_ns = 1;
	s.batch = json_array();
	if (!s.batch)
		return -ENOMEM;
	if (s.limit) {
		s.ring = calloc(s.limit, sizeof(*s.ring));
		if (!s.ring) {
			json_decref(s.batch);
			return -ENOMEM;
		}
	}
	r = audit_foreach(c->d->audit_dir, &f, stream_one, &s);
	if (r == 0 && s.limit) {
		uint64_t kept = MIN(s.count, s.limit);

		for (uint64_t i = 0; i < kept && r == 0; i++) {
			json_t *rec = s.ring[(s.count - kept + i) % s.limit];

			r = stream_add(&s, rec, json_dumpb(rec, NULL, 0, JSON_COMPACT));
		}
		s.count = kept;
	}
	if (r == 0)
		r = stream_flush(&s);
	for (uint64_t i = 0; s.ring && i < s.limit; i++)
		json_decref(s.ring[i]);
	free(s.ring);
	json_decref(s.batch);
	if (r < 0)
		return r;
	*ret = json_pack("{s:I}", "count", (json_int_t)s.count);
	return *ret ? 0 : -ENOMEM;
}

/* ---- Dispatch -------------------------------------------------------------------------------- */

static const struct {
	const char *name;
	unsigned roles;     /* any of these may call it; 0: anyone */
	int (*fn)(struct conn *c, const json_t *args, json_t **ret);
} ops[] = {
	{ "status", 0, op_status },
	{ "whoami", 0, op_whoami },
	{ "dataset.list", ROLE_STEWARD | ROLE_AUDITOR, op_dataset_list },
	{ "dataset.show", ROLE_STEWARD | ROLE_AUDITOR, op_dataset_show },
	{ "import.begin", ROLE_STEWARD, op_import_begin },
	{ "import.dir", ROLE_STEWARD, op_import_dir },
	{ "import.file", ROLE_STEWARD, NULL },   /* takes a descriptor: see handle() */
	{ "import.commit", ROLE_STEWARD, op_import_commit },
	{ "import.abort", ROLE_STEWARD, op_import_abort },
	{ "grant.add", ROLE_STEWARD, op_grant_add },
	{ "grant.list", ROLE_STEWARD | ROLE_AUDITOR, op_grant_list },
	{ "grant.revoke", ROLE_STEWARD, op_grant_revoke },
	{ "audit.show", ROLE_STEWARD | ROLE_AUDITOR, op_audit_show },
};

static const char *role_names(unsigned roles)
{
	if (roles == ROLE_STEWARD)
		return "steward";
	if (roles == ROLE_AUDITOR)
		return "auditor";
	return "steward or auditor";
}

/* Run one request. Takes ownership of fd (closed unless an operation keeps it). */
static int handle(struct conn *c, const json_t *req, int fd, json_t **ret)
{
	static const char *const top_known[] = { "op", "args", NULL };
	json_t *args = json_object_get(req, "args");
	_cleanup_close_ int passed = fd;
	const char *op = NULL;
	json_t *empty = NULL;
	int r;

	if ((r = proto_args_known(req, top_known)) < 0 ||
	    (r = proto_arg_string(req, "op", true, 64, &op)) < 0)
		return err_set(-EBADMSG, "%s", err_detail());
	if (args && !json_is_object(args))
		return err_set(-EBADMSG, "\"args\" must be an object");
	for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
		if (strcmp(ops[i].name, op) != 0)
			continue;
		if (ops[i].roles && !(c->roles & ops[i].roles))
			return err_set(-EACCES, "%s needs the %s role, which uid %u (%s) does not have "
				       "in enclave.conf", op, role_names(ops[i].roles), c->who.uid,
				       c->who.user[0] ? c->who.user : "no name");
		if (passed >= 0 && strcmp(op, "import.file") != 0)
			return err_set(-EBADMSG, "%s takes no file descriptor", op);
		if (!args)
			args = empty = json_object();
		if (ops[i].fn)
			r = ops[i].fn(c, args, ret);
		else
			r = op_import_file(c, args, passed, ret);
		json_decref(empty);
		return r;
	}
	return err_set(-EOPNOTSUPP, "unknown operation \"%.64s\"", op);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct control *ctl = c->ctl;

	for (;;) {
		enum proto_frame_type type;
		json_t *req = NULL, *result = NULL;
		int fd = -1, r;

		err_clear();
		r = proto_recv(c->fd, CONTROL_IDLE_TIMEOUT_MS, &type, &req, &fd);
		if (r == -EBADMSG) {
			if (reply_err(c->fd, r) < 0)
				break;
			continue;
		}
		if (r == -EPROTO || r == -EMSGSIZE) {
			/* The stream is out of step: say why, then hang up. */
			reply_err(c->fd, r);
			break;
		}
		if (r < 0)
			break;
		if (type != PROTO_REQUEST) {
			if (fd >= 0)
				close(fd);
			json_decref(req);
			err_set(-EBADMSG, "expected a request frame");
			if (reply_err(c->fd, -EBADMSG) < 0)
				break;
			continue;
		}
		r = handle(c, req, fd, &result);
		json_decref(req);
		r = r < 0 ? reply_err(c->fd, r) : reply_ok(c, result);
		if (r < 0)
			break;
	}
	import_end(c, -ECONNRESET);
	close(c->fd);
	pthread_mutex_lock(&ctl->lock);
	for (struct conn **p = &ctl->conns; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	ctl->nconns--;
	pthread_cond_broadcast(&ctl->idle);
	pthread_mutex_unlock(&ctl->lock);
	free(c);
	return NULL;
}

/* Who is on the other end, from the kernel. */
static int conn_identify(struct conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	c->pid = cred.pid;
	if (policy_subject_lookup(cred.uid, cred.gid, &c->who) < 0)
		return -EPERM;
	c->roles = config_roles(&c->d->cfg, &c->who);
	return 0;
}

static void *accept_main(void *arg)
{
	struct control *ctl = arg;

	for (;;) {
		struct conn *c;
		pthread_t t;
		pthread_attr_t attr;
		int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
			    errno == ENFILE || errno == ENOMEM) {
				if (errno != EINTR && errno != ECONNABORTED)
					poll(NULL, 0, 100);   /* out of resources: back off */
				pthread_mutex_lock(&ctl->lock);
				bool stop = ctl->stopping;
				pthread_mutex_unlock(&ctl->lock);
				if (stop)
					break;
				continue;
			}
			break;   /* EINVAL after shutdown(): stopping */
		}
		pthread_mutex_lock(&ctl->lock);
		if (ctl->stopping || ctl->nconns >= CONTROL_CONNECTIONS_MAX) {
			bool stop = ctl->stopping;

			pthread_mutex_unlock(&ctl->lock);
			err_set(-EBUSY, "the daemon serves %d connections at once; try again",
				CONTROL_CONNECTIONS_MAX);
			if (!stop)
				reply_err(fd, -EBUSY);
			close(fd);
			if (stop)
				break;
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			pthread_mutex_unlock(&ctl->lock);
			close(fd);
			continue;
		}
		*c = (struct conn){ .ctl = ctl, .d = ctl->d, .fd = fd };
		if (conn_identify(c) < 0) {
			pthread_mutex_unlock(&ctl->lock);
			close(fd);
			free(c);
			continue;
		}
		c->next = ctl->conns;
		ctl->conns = c;
		ctl->nconns++;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, conn_main, c) != 0) {
			ctl->conns = c->next;
			ctl->nconns--;
			close(fd);
			free(c);
		}
		pthread_attr_destroy(&attr);
		pthread_mutex_unlock(&ctl->lock);
	}
	return NULL;
}

int control_start(struct daemon *d, struct control **ret_ctl)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct control *ctl;
	int r;

	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", d->run_dir,
			     CONTROL_SOCKET_NAME) >= sizeof(sa.sun_path))
		return err_set(-ENAMETOOLONG, "socket path %s/%s is longer than a Unix socket allows",
			       d->run_dir, CONTROL_SOCKET_NAME);
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->d = d;
	pthread_mutex_init(&ctl->lock, NULL);
	pthread_cond_init(&ctl->idle, NULL);
	ctl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl->listen_fd < 0) {
		r = -errno;
		goto fail;
	}
	/* We hold the store's lock, so a socket file here is a stale one from a killed daemon. */
	if (unlink(sa.sun_path) < 0 && errno != ENOENT) {
		r = err_set(-errno, "%s: cannot remove the old socket: %s", sa.sun_path,
			    strerror(errno));
		goto fail;
	}
	if (bind(ctl->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = err_set(-errno, "%s: %s", sa.sun_path, strerror(errno));
		goto fail;
	}
	/* Everyone may connect; what they may do is decided per request from SO_PEERCRED. */
	if (chmod(sa.sun_path, 0666) < 0 || listen(ctl->listen_fd, 64) < 0) {
		r = err_set(-errno, "%s: %s", sa.sun_path, strerror(errno));
		goto fail;
	}
	if (pthread_create(&ctl->acceptor, NULL, accept_main, ctl) != 0) {
		r = -EAGAIN;
		goto fail;
	}
	*ret_ctl = ctl;
	return 0;
fail:
	if (ctl->listen_fd >= 0)
		close(ctl->listen_fd);
	pthread_mutex_destroy(&ctl->lock);
	pthread_cond_destroy(&ctl->idle);
	free(ctl);
	return r;
}

void control_stop(struct control *ctl)
{
	if (!ctl)
		return;
	pthread_mutex_lock(&ctl->lock);
	ctl->stopping = true;
	pthread_mutex_unlock(&ctl->lock);
	/* Wakes accept4() with EINVAL. */
	shutdown(ctl->listen_fd, SHUT_RDWR);
	pthread_join(ctl->acceptor, NULL);
	pthread_mutex_lock(&ctl->lock);
	for (struct conn *c = ctl->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	while (ctl->nconns > 0)
		pthread_cond_wait(&ctl->idle, &ctl->lock);
	pthread_mutex_unlock(&ctl->lock);
	close(ctl->listen_fd);
	pthread_mutex_destroy(&ctl->lock);
	pthread_cond_destroy(&ctl->idle);
	free(ctl);
}
