/* enclaved: unlock a store, serve it read-only through FUSE and administer it over a Unix socket.
 *
 *   enclaved --store DIR --mount DIR [--passphrase-file FILE] [--threads N] [--debug-fuse]
 *   enclaved --node NAME --init --local DIR --primary-key FILE
 *   enclaved --node NAME --store DIR --mount DIR --local DIR [...]
 *
 * The first form is the primary, the store's one writer; --node runs a compute node's daemon
 * over the same (shared) store directory, reading the index as a RocksDB secondary
 * (docs/DEPLOYMENT.md).
 *
 * Runs in the foreground (systemd: Type=notify, scripts/enclaved.service). SIGTERM or SIGINT
 * unmounts and exits 0. See docs/man/enclaved.8.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "daemon/daemon.h"

static const char usage[] =
	"Usage: enclaved --store DIR --mount DIR [OPTIONS]\n"
	"       enclaved --node NAME --init --local DIR --primary-key FILE\n"
	"       enclaved --node NAME --store DIR --mount DIR --local DIR [OPTIONS]\n"
	"\n"
	"Unlock an Enclave store, mount it read-only at DIR for training jobs, and serve the\n"
	"control socket DIR/run/control.sock for enclavectl. Runs in the foreground.\n"
	"The first form is the primary, the store's only writer (it holds the store's lease\n"
	"and signals its nodes). With --node, a compute node's daemon: it reads the shared\n"
	"store's index as a read-only replica, serves its own mount, writes its own audit log\n"
	"(audit/nodes/NAME) and never writes the index (docs/DEPLOYMENT.md). A node never\n"
	"takes the passphrase: it runs once a steward enrolled it (enclavectl node add), with\n"
	"the keys the primary sealed to it.\n"
	"\n"
	"Options:\n"
	"  -s, --store DIR            the store (made by `enclavectl init`)\n"
	"  -m, --mount DIR            an empty directory to mount the datasets on\n"
	"  -p, --passphrase-file FILE read the store passphrase from FILE (mode 0600 or\n"
	"                             stricter); without it, prompt on the terminal (the\n"
	"                             primary only)\n"
	"  -t, --threads N            FUSE worker threads at most (default: libfuse's)\n"
	"      --prefetch-threads N   threads reading ahead for sequential readers (0 to 8;\n"
	"                             0: no read-ahead; default: one per CPU, at most 4)\n"
	"  -c, --checkpoint-interval S  sign a checkpoint of the audit log every S seconds\n"
	"                             (1 to 86400; default 60), whether or not anything\n"
	"                             happened, and one more at shutdown\n"
	"      --refusal-window S     refused opens and lookups: one audit record per user\n"
	"                             and distinct refusal every S seconds, the rest counted\n"
	"                             in one summary record (1 to 86400; default 60)\n"
	"      --debug-fuse           print every FUSE request on stderr\n"
	"      --audit-durability MODE\n"
	"                             session (default): a session's first open is synced before\n"
	"                             it returns, every other record is written before its call\n"
	"                             returns and synced within 10 ms; strict: every record is\n"
	"                             synced before its call returns. Overrides enclave.conf's\n"
	"                             audit_durability (docs/AUDIT.md)\n"
	"      --audit-sync-each      no group commit: one write and fdatasync per audit record\n"
	"                             (only to measure what group commit saves; implies strict)\n"
	"      --direct-packs         read packs with O_DIRECT, bypassing the page cache\n"
	"                             (measured slower here; see docs/PERFORMANCE.md)\n"
	"      --lease S              the primary's lease on the store, in seconds (1 to 600;\n"
	"                             default 10): renewed every third of it; a primary that\n"
	"                             cannot renew it in time stops\n"
	"      --node NAME            run as compute node NAME (letters, digits, '.', '_', '-')\n"
	"      --local DIR            a node's own directory on local disk: its key pair,\n"
	"                             the primary's verifier key and the index replica's state\n"
	"      --init                 with --node and --local: make DIR, the node's key pair\n"
	"                             and keep the primary's key; print the node's public key\n"
	"      --primary-key FILE     with --init: the primary's verifier key (the output of\n"
	"                             `enclavectl audit pubkey`), which signs what nodes obey\n"
	"      --staleness S          a node refuses every open once it has not caught up\n"
	"                             with the primary for S seconds (1 to 600; default 5)\n"
	"  -h, --help                 this help\n"
	"  -V, --version              the version\n"
	"\n"
	"SIGTERM or SIGINT unmounts and stops; SIGHUP re-reads enclave.conf (roles, approvals,\n"
	"max_grant_days) and the auditor keys, records it, and keeps the configuration in force\n"
	"if the new one does not load. Exit status: 0 stopped cleanly, 1 failed, 2 usage.\n";

/* Tell systemd (Type=notify) how we are doing; a no-op outside systemd. */
static void sd_notify_msg(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, strlen(path));
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';   /* abstract namespace */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
	close(fd);
}

static void die_detail(const char *what, int r)
{
	const char *d = err_detail();

	fprintf(stderr, "enclaved: %s: %s\n", what, *d ? d : strerror(-r));
}

/* Give the audit log its signing key (keys/audit.key). A store made before the log was signed gets
 * a key now, named after this host. */
static int audit_key_setup(struct daemon *d)
{
	char name[STORE_SIGNING_NAME_MAX + 1];
	crypto_key *seed = NULL;
	int r = store_signing_seed(d->st, &seed, name);

	if (r == -ENOENT) {
		store_signing_default_name(name);
		r = store_signing_create(d->st, name);
		if (r == 0)
			r = store_signing_seed(d->st, &seed, name);
		if (r == 0)
			fprintf(stderr, "enclaved: made the audit signing key \"%s\" for this "
				"store (enclavectl audit pubkey prints its verifier key)\n", name);
	}
	if (r < 0)
		return r;
	r = audit_signer_set(d->log, name, crypto_key_bytes(seed));
	crypto_key_free(seed);
	return r;
}

/* Words a steward can act on for the errors store_open() gives. */
static void explain_open_error(const char *dir, int r)
{
	switch (r) {
	case -ENOENT:
	case -ENOTDIR:
		fprintf(stderr, "enclaved: %s is not an Enclave store (create one with `enclavectl "
			"init --store %s`)\n", dir, dir);
		break;
	case -EBUSY:
		fprintf(stderr, "enclaved: %s is in use by another process (another enclaved?)\n",
			dir);
		break;
	case -EKEYREJECTED:
		fprintf(stderr, "enclaved: %s: wrong passphrase\n", dir);
		break;
	default:
		die_detail(dir, r);
	}
}

struct signal_ctx {
	sigset_t set;
	pthread_mutex_t lock;
	struct fusefs *fs;      /* under lock; NULL once main() is shutting down */
	struct daemon *d;       /* under lock; NULL once main() is shutting down */
	int signo;              /* under lock */
};

void daemon_config(struct daemon *d, struct config *ret_cfg)
{
	pthread_mutex_lock(&d->cfg_lock);
	*ret_cfg = d->cfg;
	pthread_mutex_unlock(&d->cfg_lock);
}

/* The "reload" record: result "ok" with what is in force, or "failed" with why. */
static int record_reload(struct daemon *d, const struct config *cfg, const char *error)
{
	json_t *rec = json_pack("{s:s, s:s, s:I, s:I}", "event", "reload", "result",
				error ? "failed" : "ok", "pid", (json_int_t)getpid(), "uid",
				(json_int_t)getuid());
	int r;

	if (rec && error && json_object_set_new(rec, "error", audit_string(error)) < 0)
		goto nomem;
	if (rec && cfg &&
	    (json_object_set_new(rec, "stewards", json_integer((json_int_t)cfg->nstewards)) < 0 ||
	     json_object_set_new(rec, "auditors", json_integer((json_int_t)cfg->nauditors)) < 0 ||
	     json_object_set_new(rec, "approvals", json_integer(cfg->approvals)) < 0 ||
	     json_object_set_new(rec, "max_grant_days", json_integer(cfg->max_grant_days)) < 0))
		goto nomem;
	if (!rec)
		return -ENOMEM;
	r = audit_append(d->log, rec, NULL);
	json_decref(rec);
	return r;
nomem:
	json_decref(rec);
	return -ENOMEM;
}

int daemon_reload(struct daemon *d)
{
	struct config *cfg = malloc(sizeof(*cfg));
	char why[ERR_DETAIL_MAX];
	int r;

	if (!cfg)
		return -ENOMEM;
	r = config_load(d->store_dir, cfg);
	if (r < 0) {
		snprintf(why, sizeof(why), "%s", err_detail()[0] ? err_detail() : strerror(-r));
		fprintf(stderr, "enclaved: reload: %s/enclave.conf: %s: the configuration in force "
			"is kept\n", d->store_dir, why);
		(void)record_reload(d, NULL, why);
		free(cfg);
		return r;
	}
	/* Recorded before it applies: no role is given or taken off the record. */
	r = record_reload(d, cfg, NULL);
	if (r < 0) {
		fprintf(stderr, "enclaved: reload: the audit log could not record it (%s): the "
			"configuration in force is kept\n", err_detail()[0] ? err_detail() :
			strerror(-r));
		free(cfg);
		return r;
	}
	pthread_mutex_lock(&d->cfg_lock);
	if (strcmp(cfg->visa_issuer, d->cfg.visa_issuer) != 0)
		fprintf(stderr, "enclaved: reload: visa_issuer changes at the next start\n");
	snprintf(cfg->visa_issuer, sizeof(cfg->visa_issuer), "%s", d->cfg.visa_issuer);
	d->cfg = *cfg;
	pthread_mutex_unlock(&d->cfg_lock);
	/* What else can be reopened: the auditor keys the log seals to. */
	r = daemon_seal_setup(d);
	if (r < 0)
		fprintf(stderr, "enclaved: reload: the auditor keys: %s: the ones in force are "
			"kept\n", err_detail()[0] ? err_detail() : strerror(-r));
	fprintf(stderr, "enclaved: reloaded %s/enclave.conf: %zu stewards, %zu auditors, "
		"approvals %u, max_grant_days %u\n", d->store_dir, cfg->nstewards, cfg->nauditors,
		cfg->approvals, cfg->max_grant_days);
	free(cfg);
	return 0;
}

/* Waits for signals: SIGTERM and SIGINT stop the FUSE session, which makes main() go on to the
 * shutdown; SIGHUP reloads the configuration (daemon_reload()), as systemd's ExecReload asks.
 * Signals are blocked in every other thread, so they all arrive here. */
static void *signal_main(void *arg)
{
	struct signal_ctx *s = arg;
	int signo;

	for (;;) {
		if (sigwait(&s->set, &signo) != 0)
			continue;
		pthread_mutex_lock(&s->lock);
		if (signo == SIGHUP) {
			/* Under the lock: main() does not free what the reload uses meanwhile. */
			if (s->d)
				(void)daemon_reload(s->d);
		} else {
			s->signo = signo;
			if (s->fs)
				fusefs_stop(s->fs);
		}
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

static struct policy_decision decide(void *ctx, const struct policy_subject *who,
				     uint64_t dataset_id, uint32_t version)
{
	struct daemon *d = ctx;
	struct policy_subject *now;
	struct policy_decision dec;

	if (!d->groups || who->ngids == 0)
		return grants_decide(d->grants, who, dataset_id, version, time(NULL));
	/* A group counts while the process holds it and the group database still gives it to the
	 * user: a removal reaches running jobs too (daemon/groups.c). */
	now = malloc(sizeof(*now));
	if (!now)
		return (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	*now = *who;
	daemon_groups_filter(d->groups, now);
	dec = grants_decide(d->grants, now, dataset_id, version, time(NULL));
	free(now);
	return dec;
}

/* The group or passwd database changed: every open file decides again at its next read (a group
 * membership may be gone), and cached pages go, as after a revocation. */
static void groups_changed(void *ctx)
{
	struct daemon *d = ctx;

	fusefs_invalidate_all(d->fs);
}

/* A grant crossed its start or its expiry: open handles re-decide at their next read, and a
 * cache=kernel dataset's cached pages go. */
static void grant_time_crossed(void *ctx, uint64_t dataset_id, const char *name)
{
	struct daemon *d = ctx;

	fusefs_invalidate_dataset(d->fs, dataset_id, name);
}

/* fusefs asks at each open whether the dataset is served through the page cache. */
static bool cache_kernel(void *ctx, uint64_t dataset_id)
{
	struct daemon *d = ctx;

	return grants_cache_kernel(d->grants, dataset_id);
}

static int daemon_event(struct daemon *d, const char *event)
{
	json_t *rec = json_pack("{s:s, s:I, s:I, s:s, s:s}", "event", event, "pid",
				(json_int_t)getpid(), "uid", (json_int_t)getuid(), "mount",
				d->mountpoint, "store", d->store_dir);
	int r;

	if (rec && d->node && json_object_set_new(rec, "node", json_string(d->node)) < 0) {
		json_decref(rec);
		rec = NULL;
	}
	r = rec ? audit_append(d->log, rec, NULL) : -ENOMEM;
	json_decref(rec);
	return r;
}

/* Seal the log's sensitive fields (docs/AUDIT.md "Sealed records"): to the store's own key, so
 * the daemon reads its log back, and to every auditor key in keys/auditors. */
int daemon_seal_setup(struct daemon *d)
{
	uint8_t keys[STORE_AUDITORS_MAX][32];
	crypto_key *k = NULL;
	size_t n = 0;
	int r;

	r = store_auditors_get(d->st, keys, &n);
	if (r < 0)
		return r;
	r = store_audit_seal_key(d->st, &k);
	if (r < 0)
		return r;
	r = audit_sealer_set(d->log, crypto_key_bytes(k), (const uint8_t(*)[32])keys, n);
	crypto_key_free(k);
	if (r == 0 && n == 0)
		fprintf(stderr, "enclaved: warning: the store has no auditor key, so no auditor "
			"can read the names in the audit log; add one with `enclavectl audit "
			"auditor-add --public-key FILE`\n");
	return r;
}

struct ds_name {
	uint64_t id;
	char name[STORE_DATASET_NAME_MAX + 1];
};

static int ds_name_cb(void *ctx, const struct store_dataset_info *info)
{
	struct ds_name *n = ctx;

	if (info->id != n->id)
		return 0;
	snprintf(n->name, sizeof(n->name), "%s", info->name);
	return 1;
}

/* Imports that the store's open dropped (the daemon was killed or crashed during them): a line on
 * stderr and an "import" record each, "aborted", so that an interrupted import does not vanish
 * silently. The steward who ran it is unknown now: the record names the daemon. */
static int record_recovered(struct daemon *d)
{
	const struct store_recovered *rec;
	uint64_t more = 0;
	size_t n = store_recovered(d->st, &rec, &more);

	for (size_t i = 0; i < n; i++) {
		struct ds_name dn = { .id = rec[i].dataset_id };
		json_t *j;
		int r;

		(void)store_dataset_foreach(d->st, ds_name_cb, &dn);
		fprintf(stderr, "enclaved: an import of %s%s%s (dataset id %" PRIu64 ") version %"
			PRIu32 " was interrupted (the daemon stopped during it) and was dropped at "
			"start; import it again\n", dn.name[0] ? "\"" : "", dn.name[0] ? dn.name :
			"a new dataset", dn.name[0] ? "\"" : "", rec[i].dataset_id, rec[i].version);
		j = json_pack("{s:s, s:I, s:I, s:s, s:s, s:I}", "event", "import", "dataset_id",
			      (json_int_t)rec[i].dataset_id, "version", (json_int_t)rec[i].version,
			      "result", "aborted", "error", "interrupted: the daemon stopped during "
			      "the import; dropped by recovery at start", "uid", (json_int_t)getuid());
		if (j && dn.name[0] && json_object_set_new(j, "dataset", audit_string(dn.name)) < 0) {
			json_decref(j);
			j = NULL;
		}
		r = j ? audit_append(d->log, j, NULL) : -ENOMEM;
		json_decref(j);
		if (r < 0)
			return r;
	}
	if (more)
		fprintf(stderr, "enclaved: and %" PRIu64 " more interrupted imports were dropped\n",
			more);
	return 0;
}

/* A directory the daemon reads its configuration and keys from or creates files in must be its
 * own and writable by nobody else: whoever could write it could swap what is inside (a socket
 * that receives the stewards' files, a log in a directory of their choosing, a configuration
 * that makes them a steward). Refuse it, and say what to check. */
static int check_own_dir(int fd, const char *path)
{
	struct stat sb;

	if (fstat(fd, &sb) < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return err_set(-ENOTDIR, "%s is not a directory", path);
	if (sb.st_uid != geteuid())
		return err_set(-EPERM, "%s is owned by uid %u, not by the daemon's uid %u: someone "
			       "else made or replaced it; refusing to use it (find out who, then "
			       "remove it or chown it)", path, (unsigned)sb.st_uid,
			       (unsigned)geteuid());
	if (sb.st_mode & (S_IWGRP | S_IWOTH))
		return err_set(-EPERM, "%s is mode %04o: group or others can write it and so "
			       "replace what the daemon keeps there; refusing to use it (chmod "
			       "go-w %s)", path, (unsigned)(sb.st_mode & 07777), path);
	return 0;
}

/* Open name below the store's fd without following a symlink and check it as above. ret_fd
 * NULL: close it again. A missing directory is -ENOENT with nothing said (the caller decides). */
static int open_own_subdir(int store_fd, const char *store, const char *name, int *ret_fd)
{
	char path[4096];
	int fd, r;

	snprintf(path, sizeof(path), "%s/%s", store, name);
	fd = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		if (errno == ELOOP || errno == ENOTDIR)
			return err_set(-ELOOP, "%s is a symbolic link or not a directory: refusing "
				       "to follow it (a store's directories are real directories)",
				       path);
		return err_set(-errno, "%s: %s", path, strerror(errno));
	}
	r = check_own_dir(fd, path);
	if (r < 0 || !ret_fd)
		close(fd);
	else
		*ret_fd = fd;
	return r;
}

/* Before anything is opened or created in the store: the store directory and each directory
 * in it are ours alone. Then nobody else can rename or replace anything below it, and the paths
 * the daemon opens afterwards name what was checked. */
static int check_store_dirs(struct daemon *d)
{
	static const char *const subdirs[] = { "keys", "packs", "index", "audit", "run" };
	struct stat sb;
	int fd, r;

	fd = open(d->store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? -ENOENT : -errno;
	r = check_own_dir(fd, d->store_dir);
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(subdirs); i++) {
		r = open_own_subdir(fd, d->store_dir, subdirs[i], NULL);
		if (r == -ENOENT)
			r = 0;   /* store_open() says what is missing; run/ and audit/ are made */
	}
	if (r == 0 && fstat(fd, &sb) == 0 && !(sb.st_mode & S_IXOTH))
		fprintf(stderr, "enclaved: warning: %s is mode %04o: users other than root cannot "
			"reach the control socket (enclavectl init makes it 0711)\n", d->store_dir,
			(unsigned)(sb.st_mode & 07777));
	close(fd);
	return r;
}

/* A new audit log is started only on a store without a history; on any other, a missing audit/,
 * or one without a log or with an empty one, is an incident (the record of every access so far is
 * gone), and only `enclavectl audit new-log` may start a new log, recording why. */
static int check_audit_log(struct daemon *d)
{
	const char *what = NULL;
	uint64_t datasets = 0, policy = 0;
	struct stat sb;
	int sfd, afd, r = 0;

	sfd = open(d->store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return err_set(-errno, "%s: %s", d->store_dir, strerror(errno));
	afd = openat(sfd, "audit", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (afd < 0 && errno == ENOENT)
		what = "is missing";
	else if (afd < 0)
		r = err_set(-errno, "%s: %s", d->audit_dir, strerror(errno));
	else if (fstatat(afd, AUDIT_LOG_NAME, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		what = errno == ENOENT ? "holds no " AUDIT_LOG_NAME : NULL;
	else if (S_ISREG(sb.st_mode) && sb.st_size == 0)
		what = "holds an empty " AUDIT_LOG_NAME;
	if (afd >= 0)
		close(afd);
	close(sfd);
	if (r < 0 || !what)
		return r;
	r = store_history_count(d->st, &datasets, &policy);
	if (r < 0)
		return r;
	if (datasets == 0 && policy == 0)
		return 0;   /* a new store: its log starts now */
	return err_set(-ENODATA, "%s %s, but the store holds %llu dataset(s) and %llu grant, "
		       "approval, revocation or deny record(s): the record of every access so far "
		       "is gone. This is an incident: find out who removed it, and restore it from "
		       "a backup if you can. To go on with a new log that records the loss, move "
		       "what is left of %s aside and run: enclavectl audit new-log --store %s "
		       "--reason TEXT", d->audit_dir, what, (unsigned long long)datasets,
		       (unsigned long long)policy, d->audit_dir, d->store_dir);
}

/* Load the grants and bind them to the audit log (docs/POLICY.md "Bound to the log"); say what
 * disagrees, and that those datasets are not served. */
static int load_bound_grants(struct daemon *d)
{
	crypto_key *k = NULL;
	json_t *findings = NULL, *f;
	size_t i;
	int r, tries = 0;

	r = store_audit_seal_key(d->st, &k);
	if (r < 0)
		return r;
	do {
		grants_free(d->grants);
		d->grants = NULL;
		r = grants_load(d->st, &d->grants);
		if (r == 0)
			r = grants_bind_log(d->grants, d->log, d->audit_dir, crypto_key_bytes(k),
					    &findings);
		if (r == -EAGAIN)
			fprintf(stderr, "enclaved: the policy records lacked the last change the "
				"audit log records (a crash before it was written?): completed from "
				"the log\n");
	} while (r == -EAGAIN && ++tries < 2);
	crypto_key_free(k);
	if (r == -EAGAIN)
		r = err_set(-EIO, "the policy records still disagree with the audit log after "
			    "completing its last change: run `enclavectl policy rebuild`");
	if (r < 0)
		return r;
	if (findings) {
		d->index_log_findings = true;
		fprintf(stderr, "enclaved: the store's policy records disagree with the signed audit "
			"log; the datasets concerned are not served until `enclavectl policy "
			"rebuild --store %s` (the log is the source of truth):\n", d->store_dir);
		json_array_foreach(findings, i, f)
			fprintf(stderr, "enclaved:   %s\n", json_string_value(f));
		json_decref(findings);
	}
	/* The key ring against the last erasure the policy records (bound to the log) hold: a
	 * ring put back from before an erasure brings destroyed keys back. */
	{
		uint8_t digest[32];
		uint64_t gen = 0;

		store_ring_state(d->st, &gen, digest);
		r = grants_ring_check(d->grants, gen, digest);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The index's versions bound to the log's import records (docs/FORMAT.md §6.11); say what
 * disagrees, and that those datasets are not served. */
static int bind_versions(struct daemon *d)
{
	json_t *findings = NULL, *f;
	size_t i;
	int r = daemon_versions_bind(d, &findings);

	if (r < 0)
		return r;
	if (findings) {
		d->index_log_findings = true;
		fprintf(stderr, "enclaved: the store's versions disagree with the import records of "
			"the signed audit log; the datasets concerned are not served (restore their "
			"index from a copy that matches the log):\n");
		json_array_foreach(findings, i, f)
			fprintf(stderr, "enclaved:   %s\n", json_string_value(f));
		json_decref(findings);
	}
	return 0;
}

/* run/ as checked by check_store_dirs(), made if missing (0755: everyone reaches the socket). */
static int prepare_run_dir(struct daemon *d)
{
	int fd, r;

	fd = open(d->store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "%s: %s", d->store_dir, strerror(errno));
	r = check_own_dir(fd, d->store_dir);
	if (r == 0 && mkdirat(fd, "run", 0755) < 0 && errno != EEXIST)
		r = err_set(-errno, "%s: %s", d->run_dir, strerror(errno));
	if (r == 0)
		r = open_own_subdir(fd, d->store_dir, "run", &d->run_fd);
	if (r == -ENOENT)
		r = err_set(r, "%s vanished while the daemon was starting", d->run_dir);
	/* The mode comes from the descriptor, never from a path someone could swap. */
	if (r == 0 && fchmod(d->run_fd, 0755) < 0)
		r = err_set(-errno, "%s: %s", d->run_dir, strerror(errno));
	close(fd);
	return r;
}

/* ---- The primary's lease, and a node (enclaved --node; docs/DEPLOYMENT.md) ------------------- */

#define NODE_KEY_FILE "node.key"
#define NODE_PUB_FILE "node.pub"
#define NODE_PRIMARY_FILE "primary.pub"
#define NODE_SECONDARY_DIR "secondary"

/* The nodes enrolled now, for their key bundles (node.c). */
static int primary_enrolled(void *ctx, struct node_enrolled **ret, size_t *ret_n)
{
	struct daemon *d = ctx;

	return grants_nodes_enrolled(d->grants, ret, ret_n);
}

/* The lease was taken over by another primary: this one must not write again. Nothing is
 * unwound (an unwinding writes: the audit log's stop record, the lease, the index's own
 * shutdown); the process ends at once and the mount is left for the next start to clear. */
static void primary_fenced(void *ctx, const char *why)
{
	(void)ctx;
	fprintf(stderr, "enclaved: fenced: %s: stopping at once, writing nothing more\n", why);
	_exit(1);
}

/* A small file in dirfd, read whole (at most cap - 1 bytes), NUL-terminated, newline cut. */
static int read_small(int dirfd, const char *name, char *buf, size_t cap, size_t *ret_len)
{
	ssize_t n;
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return err_set(-errno, "%s: %s", name, strerror(errno));
	n = read_full(fd, buf, cap);
	close(fd);
	if (n < 0)
		return err_set((int)n, "%s: %s", name, strerror((int)-n));
	if ((size_t)n >= cap)
		return err_set(-E2BIG, "%s is too long", name);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	buf[n] = '\0';
	*ret_len = (size_t)n;
	return 0;
}

static int write_new(int dirfd, const char *name, const char *text, mode_t mode)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	int r;

	if (fd < 0)
		return err_set(-errno, "%s: %s", name, strerror(errno));
	r = pwrite_all(fd, text, strlen(text), 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r < 0 ? err_set(r, "%s: %s", name, strerror(-r)) : 0;
}

/* The node's local directory, made if missing, and checked to be ours alone. */
static int node_local_open(const char *local, bool create, int *ret_fd)
{
	int fd, r;

	if (create && mkdir(local, 0700) < 0 && errno != EEXIST)
		return err_set(-errno, "%s: %s", local, strerror(errno));
	fd = open(local, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "%s: %s%s", local, strerror(errno), errno == ENOENT ?
			       " (make it with enclaved --node NAME --init)" : "");
	r = check_own_dir(fd, local);
	if (r < 0) {
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

/* enclaved --node NAME --init: the local directory, the key pair, the primary's key. */
static int node_init(const char *name, const char *local, const char *primary_key_file)
{
	char text[NOTE_NAME_MAX + 128], pub_text[NODE_PUBLIC_TEXT_MAX + 2];
	struct note_verifier v;
	struct node_public pub;
	uint8_t seed[32];
	size_t len = 0;
	int fd = -1, r;

	r = read_small(AT_FDCWD, primary_key_file, text, sizeof(text), &len);
	if (r == 0 && note_verifier_parse(text, len, &v) < 0)
		r = err_set(-EINVAL, "%s is not a verifier key (`enclavectl audit pubkey` prints "
			    "the primary's): %s", primary_key_file, err_detail());
	if (r == 0)
		r = node_local_open(local, true, &fd);
	if (r < 0)
		return r;
	r = node_key_create(fd, NODE_KEY_FILE, seed);
	if (r == -EEXIST)
		r = err_set(r, "%s/" NODE_KEY_FILE " exists: this node is set up already (a new key "
			    "pair needs a new enrolment: remove the directory first)", local);
	else if (r < 0)
		r = err_set(r, "%s/" NODE_KEY_FILE ": %s", local, strerror(-r));
	if (r == 0)
		r = node_key_public(seed, &pub);
	sodium_memzero(seed, sizeof(seed));
	if (r == 0)
		r = node_public_format(name, &pub, pub_text, sizeof(pub_text) - 1);
	if (r == 0) {
		size_t pl = strlen(pub_text);

		pub_text[pl] = '\n';
		pub_text[pl + 1] = '\0';
		text[len] = '\n';
		text[len + 1] = '\0';
		r = write_new(fd, NODE_PUB_FILE, pub_text, 0644);
	}
	if (r == 0)
		r = write_new(fd, NODE_PRIMARY_FILE, text, 0644);
	if (r == 0 && mkdirat(fd, NODE_SECONDARY_DIR, 0700) < 0 && errno != EEXIST)
		r = err_set(-errno, "%s/" NODE_SECONDARY_DIR ": %s", local, strerror(errno));
	if (r == 0)
		r = fsync_dirfd(fd);
	close(fd);
	if (r == 0)
		fputs(pub_text, stdout);
	return r;
}

/* A node's decision: nothing while it is stale, then the grants as it last loaded them. */
static struct policy_decision node_decide(void *ctx, const struct policy_subject *who,
					  uint64_t dataset_id, uint32_t version)
{
	struct daemon *d = ctx;
	struct policy_decision dec = decide(ctx, who, dataset_id, version);

	/* Refused whatever the grants say; still shown only to those a grant names, so that a
	 * job sees EACCES (and its node's log says why), and nobody else learns a name. */
	if (!node_fresh(d->nrt, NULL, 0))
		dec = (struct policy_decision){ .reason = POLICY_DENY_NODE_STALE,
						.named = dec.named };
	/* Removed by a steward (the policy records this node caught up with say so): nothing. */
	else if (!grants_node_enrolled_as(d->grants, d->node, d->node_pub.sign_pk))
		dec = (struct policy_decision){ .reason = POLICY_DENY_NODE_REMOVED,
						.named = dec.named };
	return dec;
}

/* The index changed: the grants again, and every open file decides again at its next read. */
static int node_changed(void *ctx)
{
	struct daemon *d = ctx;
	int r = grants_reload(d->grants);

	if (r < 0)
		fprintf(stderr, "enclaved: node %s: cannot reload the grants: %s (the node goes "
			"stale until it can)\n", d->node, err_detail()[0] ? err_detail() :
			strerror(-r));
	fusefs_invalidate_all(d->fs);
	return r;
}

static void node_stale(void *ctx, bool stale, const char *why)
{
	struct daemon *d = ctx;
	json_t *rec = json_pack("{s:s, s:s}", "event", stale ? "node_stale" : "node_fresh",
				"node", d->node);

	if (rec && why && json_object_set_new(rec, "reason", audit_string(why)) < 0) {
		json_decref(rec);
		rec = NULL;
	}
	if (stale)
		fprintf(stderr, "enclaved: node %s: refusing opens: %s\n", d->node, why);
	else
		fprintf(stderr, "enclaved: node %s: caught up with the primary: serving\n",
			d->node);
	if (!rec || audit_append(d->log, rec, NULL) < 0)
		fprintf(stderr, "enclaved: node %s: cannot record it in the audit log\n", d->node);
	json_decref(rec);
}

/* audit/nodes/NAME: the node's own log, in the store's audit directory. */
static int node_audit_dir(struct daemon *d, char *out, size_t cap)
{
	char path[4096 + 8];

	snprintf(path, sizeof(path), "%s/nodes", d->audit_dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	if ((size_t)snprintf(out, cap, "%s/nodes/%s", d->audit_dir, d->node) >= cap)
		return -ENAMETOOLONG;
	return 0;
}

/* The node's log: its own, signed with its own key, sealed to the auditors and to the primary's
 * key for this node, both from its key bundle. */
static int node_audit_setup(struct daemon *d, const uint8_t seed[static 32],
			    const struct node_bundle *b)
{
	char name[NODE_NAME_MAX + 32];
	int r;

	snprintf(name, sizeof(name), "%s.node", d->node);
	r = audit_signer_set(d->log, name, seed);
	if (r == 0)
		r = audit_sealer_set(d->log, b->audit_key, (const uint8_t(*)[32])b->auditors,
				     b->nauditors);
	return r;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "mount", required_argument, NULL, 'm' },
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "checkpoint-interval", required_argument, NULL, 'c' },
		{ "audit-sync-each", no_argument, NULL, 'S' },
		{ "audit-durability", required_argument, NULL, 'A' },
		{ "debug-fuse", no_argument, NULL, 'D' },
		{ "direct-packs", no_argument, NULL, 'O' },
		{ "prefetch-threads", required_argument, NULL, 'P' },
		{ "refusal-window", required_argument, NULL, 'R' },
		{ "lease", required_argument, NULL, 'L' },
		{ "node", required_argument, NULL, 'N' },
		{ "local", required_argument, NULL, 'l' },
		{ "init", no_argument, NULL, 'I' },
		{ "primary-key", required_argument, NULL, 'K' },
		{ "staleness", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct daemon d = { .checkpoint_interval = AUDIT_CHECKPOINT_INTERVAL_DEFAULT,
			    .run_fd = -1, .cfg_lock = PTHREAD_MUTEX_INITIALIZER,
			    .vlock = PTHREAD_MUTEX_INITIALIZER,
			    .erase_lock = PTHREAD_MUTEX_INITIALIZER };
	bool sync_each = false;
	int durability = -1;    /* --audit-durability: 1 strict, 0 session, -1 enclave.conf's */
	/* Pack reads go through the page cache unless --direct-packs: O_DIRECT saves the copy out
	 * of the page cache but loses the cache and the kernel's read-ahead, and measured about
	 * half as fast warm and slower cold (docs/PERFORMANCE.md). */
	struct store_open_options so = { 0 };
	struct fusefs_options fo = { 0 };
	struct signal_ctx sig = { .lock = PTHREAD_MUTEX_INITIALIZER };
	const char *passfile = NULL;
	crypto_secret *pass = NULL;
	pthread_t sig_thread;
	uint64_t torn = 0;
	bool started = false;
	int opt, r, signo, status = 1;
	const char *local = NULL, *primary_key = NULL;
	bool init = false;
	unsigned lease_ms = STORE_LEASE_MS_DEFAULT, stale_ms = NODE_STALE_MS_DEFAULT;
	uint8_t node_seed[32] = { 0 };
	struct node_bundle *bundle = NULL;
	int local_fd = -1, nodes_fd = -1;
	struct note_verifier primary_key_v;
	char secondary[4096], log_dir[4096];
	const struct node_callbacks ncb = { .changed = node_changed, .stale = node_stale,
					    .ctx = &d };

	while ((opt = getopt_long(argc, argv, "s:m:p:t:c:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			d.store_dir = optarg;
			break;
		case 'm':
			d.mountpoint = optarg;
			break;
		case 'p':
			passfile = optarg;
			break;
		case 't': {
			char *end;
			unsigned long long v;

			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || v == 0 || v > 1024 || optarg[0] == '-') {
				fprintf(stderr, "enclaved: --threads takes a number from 1 to 1024\n");
				return 2;
			}
			fo.max_threads = (unsigned)v;
			break;
		}
		case 'c': {
			char *end;
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || v == 0 || v > AUDIT_CHECKPOINT_INTERVAL_MAX ||
			    optarg[0] == '-') {
				fprintf(stderr, "enclaved: --checkpoint-interval takes seconds from 1 "
					"to %u\n", AUDIT_CHECKPOINT_INTERVAL_MAX);
				return 2;
			}
			d.checkpoint_interval = (unsigned)v;
			break;
		}
		case 'R': {
			char *end;
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || v == 0 || v > FUSEFS_REFUSAL_WINDOW_MAX_S ||
			    optarg[0] == '-') {
				fprintf(stderr, "enclaved: --refusal-window takes seconds from 1 to "
					"%u\n", FUSEFS_REFUSAL_WINDOW_MAX_S);
				return 2;
			}
			fo.refusal_window_s = (unsigned)v;
			break;
		}
		case 'L':
		case 'T': {
			char *end;
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || v == 0 || v > 600 || optarg[0] == '-') {
				fprintf(stderr, "enclaved: --%s takes seconds from 1 to 600\n",
					opt == 'L' ? "lease" : "staleness");
				return 2;
			}
			if (opt == 'L')
				lease_ms = (unsigned)v * 1000;
			else
				stale_ms = (unsigned)v * 1000;
			break;
		}
		case 'N':
			if (!node_name_valid(optarg)) {
				fprintf(stderr, "enclaved: --node: \"%s\" is not a node name (1 to %d "
					"letters, digits, '.', '_', '-'; not starting with '.' or "
					"'-')\n", optarg, NODE_NAME_MAX);
				return 2;
			}
			d.node = optarg;
			break;
		case 'l':
			local = optarg;
			break;
		case 'I':
			init = true;
			break;
		case 'K':
			primary_key = optarg;
			break;
		case 'D':
			fo.debug = true;
			break;
		case 'S':
			sync_each = true;
			break;
		case 'A':
			if (strcmp(optarg, "strict") == 0) {
				durability = 1;
			} else if (strcmp(optarg, "session") == 0) {
				durability = 0;
			} else {
				fprintf(stderr, "enclaved: --audit-durability takes strict or "
					"session\n");
				return 2;
			}
			break;
		case 'O':
			so.direct_io = true;
			break;
		case 'P': {
			char *end;
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || !optarg[0] || v > 8 || optarg[0] == '-') {
				fprintf(stderr, "enclaved: --prefetch-threads takes a number from 0 "
					"to 8\n");
				return 2;
			}
			fo.prefetch_threads = (unsigned)v;
			fo.no_prefetch = v == 0;
			break;
		}
		case 'h':
			fputs(usage, stdout);
			return 0;
		case 'V':
			printf("enclaved %s\n", PROJECT_VERSION);
			return 0;
		default:
			fputs("Try 'enclaved --help'.\n", stderr);
			return 2;
		}
	}
	if (init) {
		if (optind != argc || !d.node || !local || !primary_key) {
			fprintf(stderr, "enclaved: --init needs --node NAME, --local DIR and "
				"--primary-key FILE\nTry 'enclaved --help'.\n");
			return 2;
		}
		r = crypto_init();
		if (r == 0)
			r = node_init(d.node, local, primary_key);
		if (r < 0) {
			die_detail("node init", r);
			return 1;
		}
		return 0;
	}
	if ((d.node || local) && !(d.node && local)) {
		fprintf(stderr, "enclaved: --node and --local go together\nTry 'enclaved --help'.\n");
		return 2;
	}
	if (d.node && passfile) {
		fprintf(stderr, "enclaved: a node never takes the store passphrase: it opens the "
			"store with the keys its primary sealed to it once a steward enrolled it "
			"(enclavectl node add)\nTry 'enclaved --help'.\n");
		return 2;
	}
	if (optind != argc || !d.store_dir || !d.mountpoint) {
		fprintf(stderr, "enclaved: %s\nTry 'enclaved --help'.\n",
			optind != argc ? "unexpected arguments" : "--store and --mount are required");
		return 2;
	}
	if ((size_t)snprintf(d.audit_dir, sizeof(d.audit_dir), "%s/audit", d.store_dir) >=
		    sizeof(d.audit_dir) ||
	    (size_t)snprintf(d.run_dir, sizeof(d.run_dir), "%s/run", d.store_dir) >=
		    sizeof(d.run_dir)) {
		fprintf(stderr, "enclaved: store path too long\n");
		return 2;
	}

	/* Signals go to the signal thread only: block them before any thread starts. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sig.set);
	sigaddset(&sig.set, SIGTERM);
	sigaddset(&sig.set, SIGINT);
	sigaddset(&sig.set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sig.set, NULL);

	r = crypto_init();
	if (r < 0) {
		die_detail("crypto", r);
		return 1;
	}
	err_clear();
	r = check_store_dirs(&d);
	if (r < 0) {
		if (r == -ENOENT)
			explain_open_error(d.store_dir, r);
		else
			die_detail("store", r);
		return 1;
	}
	if (d.node) {
		char text[NOTE_NAME_MAX + 128];
		size_t len = 0;

		r = node_local_open(local, false, &local_fd);
		if (r == 0)
			r = node_key_read(local_fd, NODE_KEY_FILE, node_seed);
		if (r == 0)
			r = read_small(local_fd, NODE_PRIMARY_FILE, text, sizeof(text), &len);
		if (r == 0 && note_verifier_parse(text, len, &primary_key_v) < 0)
			r = err_set(-EINVAL, "%s/" NODE_PRIMARY_FILE ": %s", local, err_detail());
		if (r == 0 && (size_t)snprintf(secondary, sizeof(secondary), "%s/" NODE_SECONDARY_DIR,
					       local) >= sizeof(secondary))
			r = -ENAMETOOLONG;
		if (r == 0)
			r = node_key_public(node_seed, &d.node_pub);
		/* No passphrase: the keys the primary sealed to this node's key. */
		if (r == 0) {
			char nodes[4200];

			snprintf(nodes, sizeof(nodes), "%s/" NODE_DIR_NAME, d.store_dir);
			nodes_fd = open(nodes, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (nodes_fd < 0)
				r = err_set(-errno, "%s: %s (has a primary run on this store?)",
					    nodes, strerror(errno));
		}
		if (r == 0)
			r = node_bundle_read(nodes_fd, d.node, &primary_key_v, NULL, node_seed,
					     &bundle);
		if (r < 0) {
			die_detail("node", r);
			goto out_seed;
		}
		so.secondary_dir = secondary;
		so.node_keys = bundle->keys;
	} else {
		so.lease_ms = lease_ms;
		so.lease_settle_ms = NODE_LEASE_SETTLE_MS;
	}
	if (!d.node) {
		r = passfile ? crypto_passphrase_read_file(passfile, &pass)
			     : crypto_passphrase_prompt("Store passphrase: ", false, &pass);
		if (r < 0) {
			die_detail(passfile ? passfile : "passphrase prompt (use --passphrase-file "
				   "when there is no terminal)", r);
			goto out_seed;
		}
	}
	r = store_open(d.store_dir, pass, &so, &d.st);
	crypto_secret_free(pass);
	if (r < 0) {
		explain_open_error(d.store_dir, r);
		goto out_seed;
	}
	if (!d.node) {
		r = config_load(d.store_dir, &d.cfg);
		if (r < 0) {
			die_detail("configuration", r);
			goto out_store;
		}
		r = check_audit_log(&d);
		if (r < 0) {
			die_detail("audit log", r);
			goto out_store;
		}
	} else {
		r = node_audit_dir(&d, log_dir, sizeof(log_dir));
		if (r < 0) {
			die_detail("node audit log", r);
			goto out_store;
		}
	}
	r = audit_open(d.node ? log_dir : d.audit_dir, &torn, &d.log);
	if (r < 0) {
		die_detail("audit log", r);
		goto out_store;
	}
	if (torn)
		fprintf(stderr, "enclaved: audit log: cut %llu bytes of a record torn by a crash "
			"(it was never acknowledged)\n", (unsigned long long)torn);
	audit_set_group_commit(d.log, !sync_each);
	if (durability < 0)
		durability = d.cfg.audit_strict;
	if (!durability && !sync_each) {
		r = audit_syncer_start(d.log, DAEMON_AUDIT_SYNC_MS);
		if (r < 0) {
			die_detail("audit syncer", r);
			goto out_audit;
		}
	}
	fprintf(stderr, "enclaved: audit durability: %s\n",
		durability || sync_each ? "strict (every record synced before it is acknowledged)"
					: "session (the first open of a session synced at once, "
					  "the other records within 10 ms)");
	if (d.node) {
		r = node_audit_setup(&d, node_seed, bundle);
		if (r < 0) {
			die_detail("node audit log keys", r);
			goto out_audit;
		}
		r = grants_load(d.st, &d.grants);
		if (r < 0) {
			die_detail("grants", r);
			goto out_grants;
		}
		r = node_runtime_new(d.st, d.store_dir, &primary_key_v, d.node, node_seed, bundle,
				     stale_ms, &ncb, &d.nrt);
		if (r == 0)
			r = node_runtime_start(d.nrt);
		if (r < 0) {
			die_detail("node", r);
			goto out_grants;
		}
	} else {
		r = audit_key_setup(&d);
		if (r < 0) {
			die_detail("audit signing key", r);
			goto out_audit;
		}
		r = daemon_seal_setup(&d);
		if (r < 0) {
			die_detail("audit sealing keys", r);
			goto out_audit;
		}
		r = load_bound_grants(&d);
		if (r < 0) {
			die_detail("grants", r);
			goto out_grants;
		}
	}
	/* Imports the store's open dropped are recorded "aborted" before the versions are
	 * compared with the log, which then agrees that they never came to be. */
	r = d.node ? 0 : record_recovered(&d);
	if (r < 0) {
		die_detail("audit log", r);
		goto out_grants;
	}
	/* An erasure whose keys went but whose record did not is recorded before the versions
	 * are compared with the log, which then agrees that they are gone (the primary only). */
	r = d.node ? 0 : daemon_erase_recover(&d);
	if (r < 0) {
		die_detail("erasure", r);
		goto out_grants;
	}
	/* A node has neither the key nor the log to compare with: the primary binds them. */
	r = d.node ? 0 : bind_versions(&d);
	if (r < 0) {
		die_detail("versions", r);
		goto out_grants;
	}
	r = daemon_groups_new(&d.groups);
	if (r < 0) {
		die_detail("groups", r);
		goto out_grants;
	}
	r = d.node ? 0 : prepare_run_dir(&d);
	if (r < 0) {
		die_detail("run directory", r);
		goto out_grants;
	}
	if (!d.node) {
		r = node_primary_start(d.st, d.log, d.store_dir, lease_ms, primary_fenced,
				       primary_enrolled, &d, &d.primary);
		if (r < 0) {
			die_detail("lease and node signal", r);
			goto out_grants;
		}
	}
	fo.mountpoint = d.mountpoint;
	{
		const struct fusefs_callbacks cb = { .decide = d.node ? node_decide : decide,
						     .cache_kernel = cache_kernel, .ctx = &d };

		r = fusefs_new(d.st, d.log, &cb, &fo, &d.fs);
	}
	if (r < 0) {
		die_detail("FUSE", r);
		goto out_grants;
	}
	r = fusefs_mount(d.fs);
	if (r < 0) {
		die_detail(d.mountpoint, r);
		goto out_fs;
	}
	grants_watch_record(d.grants, d.log);
	if (!d.node)
		grants_watch_tick(d.grants, daemon_erase_retry, &d);
	r = grants_watch_start(d.grants, grant_time_crossed, &d);
	if (r < 0) {
		die_detail("grant expiry watch", r);
		goto out_fs;
	}
	r = daemon_groups_watch_start(d.groups, groups_changed, &d);
	if (r < 0) {
		die_detail("group database watch", r);
		goto out_fs;
	}
	r = d.node ? 0 : control_start(&d, &d.ctl);
	if (r < 0) {
		die_detail("control socket", r);
		goto out_fs;
	}
	/* A node never collects: the primary is the only writer (store_gc refuses on a node too). */
	r = daemon_gc_start(&d, d.node ? 0 : d.cfg.gc_interval_s, &d.gc);
	if (r < 0) {
		die_detail("garbage collection schedule", r);
		goto out_ctl;
	}
	d.started = time(NULL);
	r = daemon_event(&d, "daemon_start");
	if (r < 0) {
		die_detail("audit log", r);
		goto out_ctl;
	}
	started = true;
	/* A checkpoint now, then one every interval: silence is provable from the start. */
	r = audit_checkpoint(d.log, NULL, NULL);
	if (r == 0)
		r = audit_checkpointer_start(d.log, d.checkpoint_interval);
	if (r < 0) {
		die_detail("audit checkpoint", r);
		goto out_ctl;
	}
	sig.fs = d.fs;
	sig.d = d.node ? NULL : &d;   /* a node has no configuration to reload */
	if (pthread_create(&sig_thread, NULL, signal_main, &sig) != 0) {
		fprintf(stderr, "enclaved: cannot start the signal thread\n");
		goto out_ctl;
	}
	started = true;
	pthread_detach(sig_thread);
	if (d.node)
		fprintf(stderr, "enclaved: node %s serving %s at %s (pid %d, %zu grants)\n",
			d.node, d.store_dir, d.mountpoint, (int)getpid(), grants_count(d.grants));
	else
		fprintf(stderr, "enclaved: serving %s at %s (pid %d, %zu grants, lease token %"
			PRIu64 ")\n", d.store_dir, d.mountpoint, (int)getpid(),
			grants_count(d.grants), node_primary_token(d.primary));
	sd_notify_msg("READY=1");

	r = fusefs_run(d.fs);
	sd_notify_msg("STOPPING=1");
	pthread_mutex_lock(&sig.lock);
	sig.fs = NULL;          /* a late signal must not touch a freed session */
	sig.d = NULL;
	signo = sig.signo;
	pthread_mutex_unlock(&sig.lock);
	if (r < 0)
		die_detail("FUSE session", r);
	else if (signo)
		fprintf(stderr, "enclaved: %s: stopping\n", strsignal(signo));
	else
		fprintf(stderr, "enclaved: %s was unmounted: stopping\n", d.mountpoint);
	status = r < 0 ? 1 : 0;
out_ctl:
	daemon_gc_stop(d.gc);
	control_stop(d.ctl);
	if (started && daemon_event(&d, "daemon_stop") < 0)
		die_detail("audit log", -EIO);
out_fs:
	/* No expiry, group change or catch-up may reach the session once it is freed. */
	grants_watch_stop(d.grants);
	daemon_groups_watch_stop(d.groups);
	node_runtime_free(d.nrt);
	d.nrt = NULL;
	fusefs_free(d.fs);
out_grants:
	node_runtime_free(d.nrt);
	node_primary_stop(d.primary);
	daemon_groups_free(d.groups);
	grants_free(d.grants);
out_audit:
	audit_close(d.log);
out_store:
	daemon_versions_close(&d);
	store_close(d.st);
	if (d.run_fd >= 0)
		close(d.run_fd);
out_seed:
	sodium_memzero(node_seed, sizeof(node_seed));
	node_bundle_free(bundle);
	if (nodes_fd >= 0)
		close(nodes_fd);
	if (local_fd >= 0)
		close(local_fd);
	return status;
}
