/* records: the audit records the FUSE layer writes ("open", "close", "integrity").
 *
 * Fields common to the three: "event", "dataset", "dataset_id", "version", "path" (inside the
 * version, from "/"; "#ino:<n>" when the path of store inode n is no longer known, see ops.c),
 * "uid", "user", "pid", "process" (when /proc/<pid>/comm was readable). Text from outside
 * (dataset, path, user, process) goes through audit_string(), so invalid UTF-8 is escaped and
 * never breaks a record.
 *
 * An "integrity" record of the index (fusefs_record_index_integrity) has only "dataset" (when its
 * name is known), "dataset_id", "version", "source": "index" and "error".
 *
 * "open" adds: "decision", "reason", "grant_id" / "rule_id" (when the decision names one), "gids"
 * (the groups decided on: the request's gid, then the process's supplementary groups), "job_id"
 * and "job_id_source" ("cgroup" or "environ", fuse/job.h) when a batch job is visible, "cache"
 * ("kernel" or "direct") when allowed, "error" when something failed. "read_refused" (once per
 * handle, when a read after an invalidation is refused): "open_seq", "reason", "grant_id" /
 * "rule_id", "bytes" read until then.
 *
 * Refusals are rate-limited (fuse/limit.h): a denied "open" and a "lookup_refused" (dataset,
 * dataset_id, version when a version was asked for, uid, user, pid, process, reason, grant_id /
 * rule_id) are written once per distinct refusal per user per window; the rest are counted in a
 * "refusals_suppressed" record per user when the window ends ("uid", "user", "recorded", "opens",
 * "lookups", "checks", "window_start", "window_end"; "all_other_users" instead of the user for
 * the users past the limiter's cap). "checks" counts the access checks of callers without a role
 * that the daemon's control socket left unrecorded (fusefs_check_admit()).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/common.h"
#include "common/timefmt.h"
#include "fuse/fusefs_internal.h"
#include "fuse/job.h"

/* Collects json_object_set_new failures (allocation) so the builders stay flat. */
struct rec {
	json_t *obj;
	bool failed;
};

static void put(struct rec *r, const char *key, json_t *val)
{
	if (!val || !r->obj || json_object_set_new(r->obj, key, val) < 0)
		r->failed = true;
}

static void put_u64(struct rec *r, const char *key, uint64_t v)
{
	/* json_int_t is long long; counts and ids here stay far below 2^63. */
	put(r, key, json_integer((json_int_t)MIN(v, (uint64_t)INT64_MAX)));
}

static struct rec rec_start(const char *event, const struct fusefs_access *a)
{
	struct rec r = { .obj = json_object() };

	put(&r, "event", json_string(event));
	put(&r, "dataset", audit_string(a->dataset));
	put_u64(&r, "dataset_id", a->dsid);
	put_u64(&r, "version", a->version);
	put(&r, "path", audit_string(a->path));
	put_u64(&r, "uid", a->uid);
	put(&r, "user", audit_string(a->user));
	put_u64(&r, "pid", (uint64_t)a->pid);
	if (a->process && a->process[0])
		put(&r, "process", audit_string(a->process));
	return r;
}

/* durable: synced before returning; otherwise written (docs/AUDIT.md "Durability"). */
static int rec_append(struct fusefs *fs, struct rec *r, bool durable, uint64_t *ret_seq)
{
	uint64_t seq = 0;
	int ret;

	if (r->failed) {
		ret = -ENOMEM;
	} else {
		ret = audit_append_mode(fs->log, r->obj, durable ? AUDIT_DURABLE : AUDIT_WRITTEN,
					&seq);
		if (ret == 0 && ret_seq)
			*ret_seq = seq;
	}
	if (ret < 0)
		fusefs_log_limited(fs, FUSEFS_LOG_AUDIT,
				"enclave: cannot append to the audit log (%s): access is refused "
				"until it can be written", strerror(-ret));
	json_decref(r->obj);
	return ret;
}

void fusefs_process_name(pid_t pid, char *out, size_t n)
{
	char path[64];
	ssize_t len;
	int fd;

	out[0] = '\0';
	if (n < 2 || pid <= 0)
		return;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	len = read(fd, out, n - 1);
	close(fd);
	if (len <= 0) {
		out[0] = '\0';
		return;
	}
	out[len] = '\0';
	if (out[len - 1] == '\n')
		out[len - 1] = '\0';
}

/* The decision's reason and what it names. */
static void put_decision(struct rec *r, const struct policy_decision *d)
{
	put(r, "reason", json_string(policy_reason_name(d->reason)));
	if (d->grant_id)
		put_u64(r, "grant_id", d->grant_id);
	if (d->rule_id)
		put_u64(r, "rule_id", d->rule_id);
}

int fusefs_record_open(struct fusefs *fs, const struct fusefs_access *a,
		       const struct fusefs_open_info *oi, const struct policy_decision *d,
		       const char *error, uint64_t *ret_seq)
{
	struct rec r = rec_start("open", a);
	const char *src = fusefs_job_source_name((enum fusefs_job_source)oi->job_source);
	json_t *gids = json_array();

	put(&r, "decision", json_string(d->reason == POLICY_ALLOW ? "allow" : "deny"));
	put_decision(&r, d);
	for (size_t i = 0; gids && i < oi->ngids; i++)
		if (json_array_append_new(gids, json_integer(oi->gids[i])) < 0)
			r.failed = true;
	put(&r, "gids", gids);
	if (src) {
		put_u64(&r, "job_id", oi->job_id);
		put(&r, "job_id_source", json_string(src));
	}
	if (oi->cache)
		put(&r, "cache", json_string(oi->cache));
	if (error)
		put(&r, "error", json_string(error));
	return rec_append(fs, &r, oi->durable, ret_seq);
}

/* Written, not synced before returning: the open it closes is on record (durably, or within the
 * sync interval), and the close only adds the byte count (docs/AUDIT.md "Durability"). */
int fusefs_record_close(struct fusefs *fs, const struct fusefs_access *a, uint64_t open_seq,
			uint64_t bytes, const char *error)
{
	struct rec r = rec_start("close", a);

	put_u64(&r, "open_seq", open_seq);
	put_u64(&r, "bytes", bytes);
	if (error)
		put(&r, "error", json_string(error));
	return rec_append(fs, &r, false, NULL);
}

int fusefs_record_close_reserved(struct fusefs *fs, const struct fusefs_access *a,
				 uint64_t open_seq, uint64_t bytes, const char *error,
				 uint64_t reserved)
{
	struct rec r = rec_start("close", a);
	int ret;

	if (!reserved)
		return fusefs_record_close(fs, a, open_seq, bytes, error);
	put_u64(&r, "open_seq", open_seq);
	put_u64(&r, "bytes", bytes);
	if (error)
		put(&r, "error", json_string(error));
	/* Into the room its open kept: a full disk cannot refuse it, nor could another record
	 * take that room meanwhile (docs/AUDIT.md "Closes are never lost to a full disk"). */
	if (r.failed) {
		audit_unreserve(fs->log, reserved);
		ret = -ENOMEM;
	} else {
		ret = audit_append_reserved(fs->log, r.obj, AUDIT_WRITTEN, reserved, NULL);
	}
	json_decref(r.obj);
	/* An I/O error the log cut back from: once more, as an ordinary record. */
	if (ret < 0 && !audit_failed(fs->log))
		ret = fusefs_record_close(fs, a, open_seq, bytes, error);
	return ret;
}

int fusefs_record_read_refused(struct fusefs *fs, const struct fusefs_access *a,
			       uint64_t open_seq, const struct policy_decision *d, uint64_t bytes)
{
	struct rec r = rec_start("read_refused", a);

	put_u64(&r, "open_seq", open_seq);
	put_decision(&r, d);
	put_u64(&r, "bytes", bytes);
	return rec_append(fs, &r, true, NULL);
}

int fusefs_record_integrity(struct fusefs *fs, const char *event, const struct fusefs_access *a,
			    uint64_t open_seq, uint64_t offset, uint64_t length, const char *error)
{
	struct rec r = rec_start(event, a);

	put_u64(&r, "open_seq", open_seq);
	put_u64(&r, "offset", offset);
	put_u64(&r, "length", length);
	put(&r, "error", audit_string(error));
	return rec_append(fs, &r, true, NULL);
}

int fusefs_record_store_error(struct fusefs *fs, const char *error, uint64_t left_out)
{
	struct rec r = { .obj = json_object() };

	put(&r, "event", json_string("io_error"));
	put(&r, "where", json_string("index"));
	put(&r, "error", audit_string(error));
	if (left_out)
		put_u64(&r, "left_out", left_out);
	return rec_append(fs, &r, true, NULL);
}

/* ---- Refusals, rate-limited (fuse/limit.h) -------------------------------------------------- */

int fusefs_record_lookup_refused(struct fusefs *fs, const struct fusefs_access *a,
				 const struct policy_decision *d)
{
	struct rec r = { .obj = json_object() };

	put(&r, "event", json_string("lookup_refused"));
	put(&r, "dataset", audit_string(a->dataset));
	put_u64(&r, "dataset_id", a->dsid);
	if (a->version)
		put_u64(&r, "version", a->version);
	put_u64(&r, "uid", a->uid);
	put(&r, "user", audit_string(a->user));
	put_u64(&r, "pid", (uint64_t)a->pid);
	if (a->process && a->process[0])
		put(&r, "process", audit_string(a->process));
	put_decision(&r, d);
	return rec_append(fs, &r, false, NULL);   /* nothing was served: written */
}

static int record_summary(struct fusefs *fs, const struct fusefs_refusal_summary *s)
{
	struct rec r = { .obj = json_object() };
	char t[TIME_TEXT_MAX];

	put(&r, "event", json_string("refusals_suppressed"));
	if (s->all_others) {
		put(&r, "all_other_users", json_true());
	} else {
		put_u64(&r, "uid", s->uid);
		put(&r, "user", audit_string(s->user));
		put_u64(&r, "recorded", s->recorded);
	}
	put_u64(&r, "opens", s->suppressed[FUSEFS_REFUSAL_OPEN]);
	put_u64(&r, "lookups", s->suppressed[FUSEFS_REFUSAL_LOOKUP]);
	put_u64(&r, "checks", s->suppressed[FUSEFS_REFUSAL_CHECK]);
	time_format_ns(s->start_ns, t);
	put(&r, "window_start", json_string(t));
	time_format_ns(s->end_ns, t);
	put(&r, "window_end", json_string(t));
	return rec_append(fs, &r, false, NULL);
}

void fusefs_refusals_flush(struct fusefs *fs, bool all)
{
	struct fusefs_refusal_summary *s = NULL;
	size_t n = 0;

	if (fusefs_limiter_take(fs->limiter, now_realtime_ns(), all, &s, &n) < 0)
		return;  /* counts kept: the next flush tries again */
	/* A summary that cannot be written is lost with the log's failure, which refuses every
	 * open until it can write again (rec_append says so on stderr). */
	for (size_t i = 0; i < n; i++)
		(void)record_summary(fs, &s[i]);
	free(s);
}

bool fusefs_refusal_admit(struct fusefs *fs, uint32_t uid, const char *user,
			  enum fusefs_refusal_kind kind, const void *key, size_t keylen)
{
	fusefs_refusals_flush(fs, false);
	return fusefs_limiter_admit(fs->limiter, uid, user, kind, key, keylen, now_realtime_ns());
}

void *fusefs_flusher_main(void *arg)
{
	struct fusefs *fs = arg;

	pthread_mutex_lock(&fs->flush_lock);
	while (!fs->flush_stop) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		pthread_cond_timedwait(&fs->flush_cond, &fs->flush_lock, &until);
		if (fs->flush_stop)
			break;
		pthread_mutex_unlock(&fs->flush_lock);
		fusefs_refusals_flush(fs, false);
		pthread_mutex_lock(&fs->flush_lock);
	}
	pthread_mutex_unlock(&fs->flush_lock);
	return NULL;
}

/* An integrity failure found in the index (store_set_integrity_hook), in whichever request met it:
 * a lookup, a listing, an open. There is no file handle yet, so no open_seq, path or caller: the
 * record names the dataset and version and what failed; the request itself gets EIO. */
void fusefs_record_index_integrity(void *ctx, uint64_t dsid, uint32_t version, const char *what)
{
	struct fusefs *fs = ctx;
	char name[STORE_DATASET_NAME_MAX + 1] = "";
	struct rec r = { .obj = json_object() };

	if (dsid)
		fusefs_map_get(fs->dsnames, dsid, name, sizeof(name));
	put(&r, "event", json_string("integrity"));
	if (name[0])
		put(&r, "dataset", audit_string(name));
	if (dsid)
		put_u64(&r, "dataset_id", dsid);
	if (version)
		put_u64(&r, "version", version);
	put(&r, "source", json_string("index"));
	put(&r, "error", audit_string(what));
	rec_append(fs, &r, true, NULL);
}
