/* control_dataset: the dataset and import operations of the control socket (docs/PROTOCOL.md). */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
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

#define PROGRESS_INTERVAL_NS (250 * 1000 * 1000LL)

/* ---- Datasets -------------------------------------------------------------------------------- */

static json_t *dataset_json(const struct store_dataset_info *i)
{
	return json_pack("{s:s, s:I, s:o, s:I}", "name", i->name, "id", (json_int_t)i->id,
			 "created", jtime(i->created_ns / 1000000000), "latest_version",
			 (json_int_t)i->latest_version);
}

/* A dataset's policy in its one shape (docs/json/enclavectl.schema.json "dataset_policy"), as
 * dataset.show and dataset.set give it: the consent codes with their DUO id and label, the
 * controller, the cache mode, and who last amended it, when (absent while it has the defaults). */
static json_t *policy_view(const struct policy_dataset *p)
{
	json_t *codes = json_array(), *o;

	for (size_t i = 0; codes && i < p->nduo; i++) {
		char text[POLICY_DUO_ARG_MAX + 16];

		policy_duo_format(&p->duo[i], text);
		if (json_array_append_new(codes, json_pack("{s:s, s:s, s:s}", "code", text, "id",
							   policy_duo_id(p->duo[i].code), "label",
							   policy_duo_label(p->duo[i].code))) < 0)
			json_decref(codes), codes = NULL;
	}
	o = json_pack("{s:o, s:s, s:s}", "duo", codes, "controller", p->controller, "cache",
		      p->cache == POLICY_CACHE_KERNEL ? "kernel" : "direct");
	/* Retention: the date, and whether it has passed (erasure due: a steward's act). */
	if (o && p->retain_until &&
	    (json_object_set_new(o, "retain_until", jtime((int64_t)p->retain_until)) < 0 ||
	     json_object_set_new(o, "erasure_due",
				 json_boolean((int64_t)p->retain_until <= time(NULL))) < 0)) {
		json_decref(o);
		return NULL;
	}
	if (o && p->updated &&
	    (json_object_set_new(o, "updated", jtime(p->updated)) < 0 ||
	     json_object_set_new(o, "updated_by", json_string(p->updated_by)) < 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* The policy of ds: its record, the defaults when it has none. */
static json_t *policy_json(struct conn *c, const struct store_dataset_info *ds)
{
	struct policy_dataset p;

	if (grants_dataset_get(c->d->grants, ds->id, &p) < 0)
		p = (struct policy_dataset){ .dataset_id = ds->id };
	return policy_view(&p);
}

struct list_ctx {
	struct conn *c;
	json_t *arr;
};

/* A listed dataset says when it is to be erased by, and whether that date has passed. */
static int list_one(void *ctx, const struct store_dataset_info *info)
{
	struct list_ctx *l = ctx;
	struct policy_dataset p;
	json_t *o = dataset_json(info);

	if (o && grants_dataset_get(l->c->d->grants, info->id, &p) == 0 && p.retain_until &&
	    (json_object_set_new(o, "retain_until", jtime((int64_t)p.retain_until)) < 0 ||
	     json_object_set_new(o, "erasure_due",
				 json_boolean((int64_t)p.retain_until <= time(NULL))) < 0)) {
		json_decref(o);
		o = NULL;
	}
	return json_array_append_new(l->arr, o) < 0 ? -ENOMEM : 0;
}

int op_dataset_list(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	json_t *arr;
	int r = proto_args_known(args, known);

	if (r < 0)
		return r;
	arr = json_array();
	if (!arr)
		return -ENOMEM;
	r = store_dataset_foreach(c->d->st, list_one, &(struct list_ctx){ .c = c, .arr = arr });
	if (r < 0) {
		json_decref(arr);
		return r;
	}
	*ret = json_pack("{s:o}", "datasets", arr);
	return *ret ? 0 : -ENOMEM;
}

int get_dataset(struct conn *c, const char *name, struct store_dataset_info *ret_info)
{
	if (!store_dataset_name_valid(name))
		return err_set(-EINVAL, "\"%.64s\" is not a valid dataset name", name);
	if (store_dataset_get(c->d->st, name, ret_info) < 0)
		return err_set(-ENOENT, "no dataset named \"%s\"", name);
	return 0;
}

int op_dataset_show(struct conn *c, const json_t *args, json_t **ret)
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
		char hex[2 * STORE_MANIFEST_LEN + 1];

		r = store_version_get(c->d->st, ds.id, v, &vi);
		if (r == -ENOENT && !only)
			continue;
		if (r < 0) {
			json_decref(versions);
			return r == -ENOENT ? err_set(r, "dataset \"%s\" has no version %u", name, v)
					    : r;
		}
		for (size_t i = 0; i < sizeof(vi.manifest); i++)
			snprintf(hex + 2 * i, 3, "%02x", vi.manifest[i]);
		json_array_append_new(
			versions,
			json_pack("{s:I, s:o, s:o, s:I, s:I, s:I, s:s}", "version", (json_int_t)v,
				  "created", jtime(vi.created_ns / 1000000000), "committed",
				  jtime(vi.committed_ns / 1000000000), "files", (json_int_t)vi.files,
				  "dirs", (json_int_t)vi.dirs, "bytes", (json_int_t)vi.bytes,
				  "manifest", hex));
	}
	*ret = json_pack("{s:o, s:o, s:o}", "dataset", dataset_json(&ds), "versions", versions,
			 "policy", policy_json(c, &ds));
	return *ret ? 0 : -ENOMEM;
}

/* Parse the optional "duo", "controller" and "cache" arguments into *p (left as they are when
 * absent). -EINVAL naming the argument. */
static int policy_args(const json_t *args, struct policy_dataset *p, bool *ret_any)
{
	const char *duo = NULL, *controller = NULL, *cache = NULL, *retain = NULL;
	int64_t until = 0;
	int r;

	/* "retain_until": an RFC 3339 time, or "" to clear it. */
	if ((r = proto_arg_string(args, "retain_until", false, 64, &retain)) < 0 ||
	    (retain && retain[0] && (r = time_arg(args, "retain_until", false, &until)) < 0))
		return r;
	if (retain && retain[0] && until <= 0)
		return err_set(-EINVAL, "argument \"retain_until\" must be after 1970");
	if (retain)
		p->retain_until = retain[0] ? (uint64_t)until : 0;
	if ((r = proto_arg_string(args, "duo", false, POLICY_DUO_TEXT_MAX, &duo)) < 0 ||
	    (r = proto_arg_string(args, "controller", false, POLICY_CONTROLLER_MAX,
				  &controller)) < 0 ||
	    (r = proto_arg_string(args, "cache", false, 8, &cache)) < 0)
		return r;
	if (duo && (r = policy_duo_parse(duo, p->duo, &p->nduo)) < 0)
		return r;
	/* A time limit already past would exclude every grant of the dataset at once: most likely
	 * a typo, and never what "time limit" means. Refused, naming it. */
	for (size_t i = 0; duo && i < p->nduo; i++) {
		int64_t t;

		if (p->duo[i].code == POLICY_DUO_TS &&
		    time_parse(p->duo[i].arg, 0, &t) == 0 && t <= (int64_t)time(NULL))
			return err_set(-EINVAL, "consent code TS:%s (time limit on use) is in the "
				       "past: it would exclude every grant of the dataset; give a "
				       "future date, or revoke the grants", p->duo[i].arg);
	}
	if (controller)
		snprintf(p->controller, sizeof(p->controller), "%s", controller);
	if (cache && strcmp(cache, "kernel") == 0)
		p->cache = POLICY_CACHE_KERNEL;
	else if (cache && strcmp(cache, "direct") == 0)
		p->cache = POLICY_CACHE_DIRECT;
	else if (cache)
		return err_set(-EINVAL, "argument \"cache\" must be \"kernel\" or \"direct\"");
	*ret_any = duo || controller || cache || retain;
	return 0;
}

/* The dataset's policy record, or the defaults it stands for when there is none. */
static void policy_current(struct conn *c, const struct store_dataset_info *ds,
			   struct policy_dataset *ret)
{
	if (grants_dataset_get(c->d->grants, ds->id, ret) == 0)
		return;
	*ret = (struct policy_dataset){ .dataset_id = ds->id };
	snprintf(ret->dataset, sizeof(ret->dataset), "%s", ds->name);
}

/* Stamp p with who changes it, and write it (audited as event). */
/* Who changes the policy record, and when: the caller, now. */
static void policy_stamp(struct conn *c, struct policy_dataset *p)
{
	p->updated_by_uid = c->who.uid;
	if (c->who.user[0])
		snprintf(p->updated_by, sizeof(p->updated_by), "%s", c->who.user);
	else
		snprintf(p->updated_by, sizeof(p->updated_by), "%u", c->who.uid);
	p->updated = time(NULL);
}

static int policy_write(struct conn *c, struct policy_dataset *p, const char *event)
{
	policy_stamp(c, p);
	return grants_dataset_set(c->d->grants, c->d->log, &c->who, p, event);
}

/* Name in result the grants of the dataset (neither revoked nor expired) that the new consent
 * codes exclude and the old did not ("suspends"), and those they let back in ("resumes"). */
static int changed_grants(struct conn *c, const struct policy_dataset *old,
			  const struct policy_dataset *p, json_t *result)
{
	_cleanup_free_ struct policy_grant *g = NULL;
	json_t *sus = json_array(), *res = json_array();
	int64_t now = time(NULL);
	size_t n;
	int r = -ENOMEM;

	if (!sus || !res)
		goto out;
	r = grants_snapshot(c->d->grants, &g, NULL, &n);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		uint32_t was, now_code;

		if (g[i].dataset_id != p->dataset_id || g[i].revoked_at || now >= g[i].expires)
			continue;
		was = grant_excluded_code(old, &g[i]);
		now_code = grant_excluded_code(p, &g[i]);
		if (!was && now_code) {
			/* The grant in its one shape, as grant.list shows it under the new codes
			 * (a dry run has not written them, so the state is set here). */
			json_t *o = policy_grant_to_json(&g[i]);

			if (!o || json_object_set_new(o, "state", json_string("suspended")) < 0 ||
			    json_object_set_new(o, "approvals", json_integer(g[i].approvals)) < 0 ||
			    json_object_set_new(o, "consent_code",
						json_string(policy_duo_name(now_code))) < 0 ||
			    json_object_set_new(o, "consent_code_id",
						json_string(policy_duo_id(now_code))) < 0) {
				json_decref(o);
				goto out;
			}
			if (json_array_append_new(sus, o) < 0)
				goto out;
		} else if (was && !now_code) {
			if (json_array_append_new(res, json_integer((json_int_t)g[i].id)) < 0)
				goto out;
		}
	}
	if (json_object_set(result, "suspends", sus) < 0 ||
	    json_object_set(result, "resumes", res) < 0)
		goto out;
	r = 0;
out:
	json_decref(sus);
	json_decref(res);
	return r;
}

int op_dataset_set(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "duo", "controller", "cache", "dry_run",
					     "retain_until", NULL };
	_cleanup_free_ struct policy_dataset *p = calloc(1, sizeof(*p));
	_cleanup_free_ struct policy_dataset *old = calloc(1, sizeof(*old));
	struct store_dataset_info ds;
	const char *name;
	bool any, dry_run = false;
	int r;

	if (!p || !old)
		return -ENOMEM;
	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_bool(args, "dry_run", false, &dry_run)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &name)) < 0 ||
	    (r = get_dataset(c, name, &ds)) < 0)
		return r;
	policy_current(c, &ds, p);
	*old = *p;
	if ((r = policy_args(args, p, &any)) < 0)
		return r;
	if (!any)
		return err_set(-EINVAL, "nothing to set: give duo, controller, cache or "
			       "retain_until");
	/* A dry run: the settings as they would be, and the grants they would suspend or let back
	 * in; nothing recorded, nothing invalidated. */
	if (dry_run) {
		policy_stamp(c, p);
		*ret = json_pack("{s:o, s:b}", "policy", policy_view(p), "dry_run", 1);
		if (!*ret)
			return -ENOMEM;
		return changed_grants(c, old, p, *ret);
	}
	r = policy_write(c, p, "dataset_set");
	if (r < 0)
		return r;
	/* A new cache mode or new consent codes: the kernel must ask again. */
	if (c->d->fs)
		fusefs_invalidate_dataset(c->d->fs, ds.id, ds.name);
	*ret = json_pack("{s:o}", "policy", policy_view(p));
	if (!*ret)
		return -ENOMEM;
	return changed_grants(c, old, p, *ret);
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
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "files", (json_int_t)s->files,
			 "dirs", (json_int_t)s->dirs, "bytes", (json_int_t)s->bytes, "reused_files",
			 (json_int_t)s->reused_files, "reused_bytes", (json_int_t)s->reused_bytes,
			 "stamped_files", (json_int_t)s->stamped_files, "read_bytes",
			 (json_int_t)s->read_bytes);
}

/* The audit record of an import's end: "committed" is written before the commit (docs/AUDIT.md),
 * "aborted" after an abort or a commit that failed. version 0: the one the import targets. */
static int audit_import(struct conn *c, uint32_t version, const char *result, int err)
{
	struct store_import_stats s = { 0 };
	uint64_t dsid;
	uint32_t target;
	uint8_t manifest[STORE_MANIFEST_LEN];
	char hex[2 * STORE_MANIFEST_LEN + 1], dhex[65];
	bool committed;
	json_t *rec;
	int r;

	store_import_get_stats(c->imp, &s);
	store_import_target(c->imp, &dsid, &target);
	rec = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:s}", "event", "import", "dataset",
			c->imp_dataset, "dataset_id", (json_int_t)dsid, "version",
			(json_int_t)(version ? version : target), "files", (json_int_t)s.files,
			"dirs", (json_int_t)s.dirs, "bytes", (json_int_t)s.bytes, "result", result);
	if (!rec || daemon_audit_subject(rec, &c->who) < 0) {
		json_decref(rec);
		return -ENOMEM;
	}
	if (err)
		json_object_set_new(rec, "error", audit_string(err_detail()[0] ? err_detail()
										: strerror(-err)));
	/* Files that came as Crypt4GH (each has its import_crypt4gh record with its header). */
	if (c->imp_c4gh && json_object_set_new(rec, "crypt4gh_files",
					       json_integer((json_int_t)c->imp_c4gh)) < 0) {
		json_decref(rec);
		return -ENOMEM;
	}
	/* The version's manifest: the digest over all its records, so that the log names the exact
	 * content of this version (docs/FORMAT.md "Manifest"). Computed here, before the commit
	 * (which then commits exactly that), closing the version to further files. */
	committed = !err && strcmp(result, "committed") == 0;
	if (committed) {
		r = store_import_manifest(c->imp, manifest);
		if (r < 0) {
			json_decref(rec);
			return r;
		}
		for (size_t i = 0; i < sizeof(manifest); i++)
			snprintf(hex + 2 * i, 3, "%02x", manifest[i]);
		if (json_object_set_new(rec, "manifest", json_string(hex)) < 0) {
			json_decref(rec);
			return -ENOMEM;
		}
	}
	/* Every version the log stands for after this record (docs/AUDIT.md section 18): with this
	 * one when it commits, as before when it does not. Imports are one at a time (the store
	 * allows one), so no other import record comes between this one and the commit. */
	r = daemon_versions_digest_with(c->d, dsid, version ? version : target,
					committed ? manifest : NULL, dhex);
	if (r == 0 && json_object_set_new(rec, "versions_digest", json_string(dhex)) < 0)
		r = -ENOMEM;
	if (r == -ENOKEY)
		r = 0;   /* versions not bound (no log state yet): the next start replays */
	if (r == 0)
		r = audit_append(c->d->log, rec, NULL);
	if (r == 0 && committed) {
		c->committing_dsid = dsid;
		c->committing_version = version ? version : target;
		memcpy(c->committing_manifest, manifest, sizeof(manifest));
	}
	json_decref(rec);
	return r;
}

/* Abandon this connection's import (if any), recording why. */
void import_end(struct conn *c, int err)
{
	if (!c->imp)
		return;
	audit_import(c, 0, "aborted", err ? err : -ECANCELED);
	store_import_free(c->imp);
	c->imp = NULL;
	c->imp_failed = false;
}

int op_import_begin(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "chunk_size", "duo", "controller",
					     "keep_crypt4gh", "rehash", NULL };
	struct store_import_options o = { .progress = import_progress, .progress_ctx = c };
	_cleanup_free_ struct policy_dataset *p = calloc(1, sizeof(*p));
	const char *name;
	uint64_t chunk = 0;
	bool any, keep = false;
	int r;

	if (!p)
		return -ENOMEM;
	/* Consent codes are checked here, before any data moves; import.commit records them. */
	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &name)) < 0 ||
	    (r = proto_arg_bool(args, "keep_crypt4gh", false, &keep)) < 0 ||
	    (r = proto_arg_bool(args, "rehash", false, &o.rehash)) < 0 ||
	    (r = proto_arg_u64(args, "chunk_size", false, UINT32_MAX, &chunk)) < 0 ||
	    (r = policy_args(args, p, &any)) < 0)
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
	c->imp_c4gh = 0;
	c->imp_c4gh_keep = keep;
	/* "stamps": import.stat would import a file whose source stamp holds; false when there is
	 * no version to share from or with rehash, where every file needs its descriptor.
	 * "stat_compact": import.stat takes its compact form too (proto_stat_unpack()). The hex
	 * form that "stat_packed" offered is no longer taken, nor offered: a client that knows only
	 * that one sends arrays. */
	*ret = json_pack("{s:s, s:b, s:b}", "dataset", name, "stamps", store_import_stamps(c->imp),
			 "stat_compact", 1);
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

int op_import_dir(struct conn *c, const json_t *args, json_t **ret)
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

int op_import_file(struct conn *c, const json_t *args, int fd, json_t **ret)
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
	r = import_file_any(c, path, fd, NULL);
	if (r < 0) {
		c->imp_failed = true;
		return r;
	}
	store_import_get_stats(c->imp, &s);
	*ret = stats_json(&s);
	return *ret ? 0 : -ENOMEM;
}

int op_import_files(struct conn *c, const json_t *args, const int *fds, size_t nfds,
		    json_t **ret)
{
	static const char *const known[] = { "paths", NULL };
	const json_t *paths = json_object_get(args, "paths");
	struct stat sts[PROTO_IMPORT_BATCH_FILES];
	const char *names[PROTO_IMPORT_BATCH_FILES];
	struct store_import_stats s;
	uint64_t bytes = 0;
	size_t i;
	int r;

	if ((r = import_check(c)) < 0 || (r = proto_args_known(args, known)) < 0)
		return r;
	/* Everything about the batch is checked before any of it is imported: a bad batch is
	 * refused whole and changes nothing. */
	if (!json_is_array(paths) || json_array_size(paths) == 0)
		return err_set(-EINVAL, "import.files needs \"paths\", a non-empty array");
	if (json_array_size(paths) > PROTO_IMPORT_BATCH_FILES)
		return err_set(-E2BIG, "a batch of %zu files, more than %u", json_array_size(paths),
			       PROTO_IMPORT_BATCH_FILES);
	if (json_array_size(paths) != nfds)
		return err_set(-EINVAL, "a batch of %zu paths came with %zu file descriptors",
			       json_array_size(paths), nfds);
	for (i = 0; i < nfds; i++) {
		const json_t *p = json_array_get(paths, i);
		struct stat *st = &sts[i];

		if (!json_is_string(p) || json_string_length(p) == 0 ||
		    json_string_length(p) > STORE_PATH_MAX ||
		    strlen(json_string_value(p)) != json_string_length(p))
			return err_set(-EINVAL, "path %zu of the batch is not a string of 1 to %d "
				       "bytes without NUL", i, STORE_PATH_MAX);
		if (fstat(fds[i], st) < 0)
			return err_set(-errno, "%s: %s", json_string_value(p), strerror(errno));
		if (!S_ISREG(st->st_mode))
			return err_set(-EINVAL, "%s: not a regular file", json_string_value(p));
		bytes += (uint64_t)st->st_size;
	}
	if (nfds > 1 && bytes > PROTO_IMPORT_BATCH_BYTES)
		return err_set(-E2BIG, "a batch of %zu files holds %llu bytes, more than %u (a "
			       "larger file is sent on its own)", nfds, (unsigned long long)bytes,
			       PROTO_IMPORT_BATCH_BYTES);
	for (i = 0; i < nfds; i++)
		names[i] = json_string_value(json_array_get(paths, i));
	/* The batch goes to the store whole (its small files read and hashed in parallel), but for
	 * a Crypt4GH file, which is decrypted here as it is read (import_file_any). */
	for (i = 0; i < nfds;) {
		r = store_import_add_files(c->imp, nfds - i, names + i, fds + i, sts + i,
					   c->imp_c4gh_keep ? NULL : import_is_crypt4gh);
		if (r >= 0) {
			i += (size_t)r;
			if (i == nfds)
				break;
			r = import_file_any(c, names[i], fds[i], &sts[i]);
			i++;
		}
		if (r < 0) {
			c->imp_failed = true;
			return r;
		}
	}
	store_import_get_stats(c->imp, &s);
	*ret = stats_json(&s);
	return *ret ? 0 : -ENOMEM;
}

/* One entry of import.stat's "stats": [dev, ino, size, mode, mtime_ns, ctime_ns], dev and ino
 * as the signed 64-bit integers with the bits of the unsigned ones. */
static int claim_stat(const json_t *a, size_t i, const char *path, struct stat *st)
{
	json_int_t v[6];

	if (!json_is_array(a) || json_array_size(a) != 6)
		return err_set(-EINVAL, "%s: stat %zu of the batch is not an array of 6 integers "
			       "[dev, ino, size, mode, mtime_ns, ctime_ns]", path, i);
	for (size_t k = 0; k < 6; k++) {
		const json_t *e = json_array_get(a, k);

		if (!json_is_integer(e))
			return err_set(-EINVAL, "%s: stat %zu of the batch is not an array of 6 "
				       "integers [dev, ino, size, mode, mtime_ns, ctime_ns]", path, i);
		v[k] = json_integer_value(e);
	}
	if (v[2] < 0 || v[3] < 0 || v[3] > 0xffffffffll || !proto_time_ns_valid(v[4]) ||
	    !proto_time_ns_valid(v[5]))
		return err_set(-EINVAL, "%s: stat %zu of the batch: size, mode or time out of range",
			       path, i);
	memset(st, 0, sizeof(*st));
	st->st_dev = (dev_t)(uint64_t)v[0];
	st->st_ino = (ino_t)(uint64_t)v[1];
	st->st_size = (off_t)v[2];
	st->st_mode = (mode_t)v[3];
	st->st_mtim.tv_sec = (time_t)(v[4] / 1000000000);
	st->st_mtim.tv_nsec = (long)(v[4] % 1000000000);
	st->st_ctim.tv_sec = (time_t)(v[5] / 1000000000);
	st->st_ctim.tv_nsec = (long)(v[5] % 1000000000);
	/* Times before 1970: the nanoseconds stay in [0, 1e9), as the kernel gives them. */
	if (st->st_mtim.tv_nsec < 0)
		st->st_mtim.tv_sec--, st->st_mtim.tv_nsec += 1000000000;
	if (st->st_ctim.tv_nsec < 0)
		st->st_ctim.tv_sec--, st->st_ctim.tv_nsec += 1000000000;
	return 0;
}

/* The compact form of an import.stat batch: {"dir", "names", "stats64"}, three strings
 * (proto_stat_unpack(), docs/PROTOCOL.md). The paths go into *ret_buf (the caller frees it). */
static int stat_compact(const json_t *args, const char **names, struct stat *sts, char **ret_buf,
			size_t *ret_n)
{
	const json_t *d = json_object_get(args, "dir"), *nm = json_object_get(args, "names");
	const json_t *st = json_object_get(args, "stats64");

	if (json_is_string(json_object_get(args, "stats")))
		return err_set(-EINVAL, "import.stat no longer takes \"stats\" as hex digits: send "
			       "\"stats64\" (import.begin says \"stat_compact\") or arrays");
	if (json_object_get(args, "paths") || json_object_get(args, "stats"))
		return err_set(-EINVAL, "import.stat takes \"paths\" and \"stats\" as arrays, or "
			       "\"dir\", \"names\" and \"stats64\" as strings, not both");
	if (!json_is_string(d) || !json_is_string(nm) || !json_is_string(st))
		return err_set(-EINVAL, "a compact import.stat batch needs \"dir\", \"names\" and "
			       "\"stats64\", three strings");
	return proto_stat_unpack(json_string_value(d), json_string_length(d),
				 json_string_value(nm), json_string_length(nm),
				 json_string_value(st), json_string_length(st),
				 STORE_IMPORT_CLAIM_MAX, STORE_PATH_MAX, ret_buf, names, sts, ret_n);
}

/* The array form of an import.stat batch: {"paths": [P, ...], "stats": [[6 integers], ...]}. */
static int stat_arrays(const json_t *args, const char **names, struct stat *sts, size_t *ret_n)
{
	const json_t *paths = json_object_get(args, "paths");
	const json_t *stats = json_object_get(args, "stats");
	size_t i, n;
	int r;

	if (!json_is_array(paths) || json_array_size(paths) == 0)
		return err_set(-EINVAL, "import.stat needs \"paths\", a non-empty array");
	n = json_array_size(paths);
	if (n > STORE_IMPORT_CLAIM_MAX)
		return err_set(-E2BIG, "a batch of %zu files, more than %u", n,
			       STORE_IMPORT_CLAIM_MAX);
	if (!json_is_array(stats) || json_array_size(stats) != n)
		return err_set(-EINVAL, "a batch of %zu paths came with %zu stats", n,
			       json_is_array(stats) ? json_array_size(stats) : 0);
	for (i = 0; i < n; i++) {
		const json_t *p = json_array_get(paths, i);

		if (!json_is_string(p) || json_string_length(p) == 0 ||
		    json_string_length(p) > STORE_PATH_MAX ||
		    strlen(json_string_value(p)) != json_string_length(p))
			return err_set(-EINVAL, "path %zu of the batch is not a string of 1 to %d "
				       "bytes without NUL", i, STORE_PATH_MAX);
		names[i] = json_string_value(p);
		r = claim_stat(json_array_get(stats, i), i, names[i], &sts[i]);
		if (r < 0)
			return r;
	}
	*ret_n = n;
	return 0;
}

int op_import_stat(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "paths", "stats", "dir", "names", "stats64", NULL };
	_cleanup_free_ struct stat *sts = NULL;
	_cleanup_free_ char *buf = NULL;
	const char *names[STORE_IMPORT_CLAIM_MAX];
	bool need[STORE_IMPORT_CLAIM_MAX];
	struct store_import_stats s;
	json_t *nj;
	size_t i, n = 0;
	int r;

	if ((r = import_check(c)) < 0 || (r = proto_args_known(args, known)) < 0)
		return r;
	sts = calloc(STORE_IMPORT_CLAIM_MAX, sizeof(*sts));
	if (!sts)
		return -ENOMEM;
	/* The shape of the whole batch first, in either form; the store then checks the files
	 * themselves (paths, types, names already imported or twice in the batch). A refused batch
	 * changes nothing. */
	r = json_object_get(args, "names") || json_object_get(args, "dir") ||
		    json_object_get(args, "stats64")
		    ? stat_compact(args, names, sts, &buf, &n)
		    : stat_arrays(args, names, sts, &n);
	if (r < 0)
		return r;
	/* With Crypt4GH files decrypted, only a stamp that says the head was checked holds. */
	r = store_import_add_claimed(c->imp, n, names, sts, !c->imp_c4gh_keep, need);
	if (r < 0) {
		if (store_import_failed(c->imp))
			c->imp_failed = true;
		return r;
	}
	store_import_get_stats(c->imp, &s);
	*ret = stats_json(&s);
	nj = json_array();
	for (i = 0; nj && i < n; i++)
		if (need[i] && json_array_append_new(nj, json_integer((json_int_t)i)) < 0) {
			json_decref(nj);
			nj = NULL;
		}
	if (!*ret || !nj || json_object_set_new(*ret, "need", nj) < 0) {
		if (!*ret)
			json_decref(nj);
		json_decref(*ret);
		*ret = NULL;
		return -ENOMEM;
	}
	return 0;
}

int op_import_commit(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "duo", "controller", NULL };
	_cleanup_free_ struct policy_dataset *p = calloc(1, sizeof(*p));
	struct store_dataset_info ds;
	struct store_import_stats s;
	uint32_t version;
	bool any = false;
	int r;

	if (!p)
		return -ENOMEM;
	if ((r = import_check(c)) < 0 || (r = proto_args_known(args, known)) < 0)
		return r;
	/* The consent codes, checked before the commit so that a bad one commits nothing. */
	if (store_dataset_get(c->d->st, c->imp_dataset, &ds) == 0)
		policy_current(c, &ds, p);
	if ((r = policy_args(args, p, &any)) < 0)
		return r;
	/* A file import.stat asked for and never given: the version would lack it. The store
	 * refuses to close it (its words name the file); the import is abandoned. */
	if (store_import_owed(c->imp) > 0) {
		uint8_t m[STORE_MANIFEST_LEN];
		char why[ERR_DETAIL_MAX];

		r = store_import_manifest(c->imp, m);
		snprintf(why, sizeof(why), "%s", err_detail());
		import_end(c, r < 0 ? r : -EPROTO);
		return err_set(r < 0 ? r : -EPROTO, "%s", why);
	}
	/* Recorded first, then committed: a version never exists without its import record. If
	 * the record cannot be written (a full disk), nothing is committed and the steward is told;
	 * if the commit then fails, an "aborted" record for the same version follows. The log may
	 * so say "committed" of a version that never came to be, never the reverse. */
	r = audit_import(c, 0, "committed", 0);
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail()[0] ? err_detail() : strerror(-r));
		import_end(c, r);
		return err_set(-EIO, "the audit log could not record the import (%s): nothing was "
			       "committed; import again once the log can be written", why);
	}
	r = store_import_commit(c->imp, &version);
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail());
		import_end(c, r);
		return err_set(r, "%s", why);
	}
	daemon_versions_committed(c->d, c->committing_dsid, c->committing_version,
				  c->committing_manifest);
	store_import_get_stats(c->imp, &s);
	/* Then the dataset's consent codes and controller, if given: a record of their own. Until
	 * it is written the dataset has no grants anyway (its id is new, or it has its old codes). */
	if (any && store_dataset_get(c->d->st, c->imp_dataset, &ds) == 0) {
		p->dataset_id = ds.id;
		snprintf(p->dataset, sizeof(p->dataset), "%s", ds.name);
		if (policy_write(c, p, "dataset_policy") < 0) {
			char why[ERR_DETAIL_MAX];

			snprintf(why, sizeof(why), "%s", err_detail());
			c->imp_done = c->imp;
			c->imp = NULL;
			return err_set(-EIO, "version %u of \"%s\" was committed, but its consent "
				       "codes were not recorded (%s): run enclavectl dataset set",
				       version, ds.name, why);
		}
	}
	*ret = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "dataset",
			 c->imp_dataset, "version", (json_int_t)version, "files",
			 (json_int_t)s.files, "dirs", (json_int_t)s.dirs, "bytes",
			 (json_int_t)s.bytes, "reused_files", (json_int_t)s.reused_files,
			 "reused_bytes", (json_int_t)s.reused_bytes, "stamped_files",
			 (json_int_t)s.stamped_files, "read_bytes", (json_int_t)s.read_bytes);
	/* Freed after the reply is sent (conn_main()): the version is committed, and a new
	 * import.begin meanwhile waits for the store's import lock (store_import_begin()). */
	c->imp_done = c->imp;
	c->imp = NULL;
	return *ret ? 0 : -ENOMEM;
}

int op_import_abort(struct conn *c, const json_t *args, json_t **ret)
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
