/* control: the daemon's Unix control socket (docs/PROTOCOL.md).
 *
 * One thread accepts; each connection gets a detached thread that reads one request at a time,
 * checks the caller's role (from SO_PEERCRED and enclave.conf, never from the message), runs the
 * operation and replies. At most CONTROL_CONNECTIONS_MAX connections are served at once, of which
 * CONTROL_CONNECTIONS_RESERVED only for stewards and auditors; a user without a role has at most
 * CONTROL_CONNECTIONS_PER_USER, and such a connection idle for CONTROL_IDLE_TIMEOUT_NOROLE_MS is
 * closed (docs/PROTOCOL.md section 1).
 *
 * Locking: ctl->lock guards the connection list, the count and `stopping`; control_stop() waits on
 * ctl->idle until the count drops to zero. Everything a handler touches has its own locking
 * (store, grants, audit log, fusefs).
 */
#include <errno.h>
#include <fcntl.h>
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

int reply_ok(struct conn *c, json_t *result)
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

json_t *jtime(int64_t unix_s)
{
	char t[TIME_TEXT_MAX];

	time_format(unix_s, t);
	return json_string(t);
}

int request_id_arg(const json_t *args, uint64_t *ret_id)
{
	static const char *const known[] = { "id", NULL };
	int r;

	if ((r = proto_args_known(args, known)) < 0)
		return r;
	return proto_arg_u64(args, "id", true, INT64_MAX, ret_id);
}

int time_arg(const json_t *args, const char *name, bool required, int64_t *ret)
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
	struct fusefs_stats fst = { 0 };
	json_int_t datasets = 0;

	if (r < 0)
		return r;
	/* How many datasets and grants exist, how much was read or refused: the business of
	 * stewards and auditors only. Anyone else learns what the daemon is, not what it holds. */
	if (!(c->roles & (ROLE_STEWARD | ROLE_AUDITOR))) {
		*ret = json_pack("{s:s, s:i, s:s, s:s, s:I, s:o}", "version", PROJECT_VERSION,
				 "protocol", PROTO_VERSION, "store", d->store_dir, "mount",
				 d->mountpoint, "pid", (json_int_t)getpid(), "started",
				 jtime(d->started));
		return *ret ? 0 : -ENOMEM;
	}
	r = store_dataset_foreach(d->st, count_one, &datasets);
	if (r < 0)
		return r;
	if (d->fs)
		fusefs_stats_get(d->fs, &fst);
	*ret = json_pack("{s:s, s:i, s:s, s:s, s:I, s:o, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I}}",
			 "version", PROJECT_VERSION, "protocol", PROTO_VERSION, "store",
			 d->store_dir, "mount", d->mountpoint, "pid", (json_int_t)getpid(),
			 "started", jtime(d->started), "datasets", datasets, "grants",
			 (json_int_t)grants_count(d->grants), "audit_records",
			 (json_int_t)audit_count(d->log), "mount_stats", "reads",
			 (json_int_t)fst.reads, "reads_refused", (json_int_t)fst.reads_refused,
			 "opens_cached", (json_int_t)fst.opens_cached, "prefetches",
			 (json_int_t)fst.prefetches, "reads_prefetched",
			 (json_int_t)fst.reads_prefetched);
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
	{ "import.files", ROLE_STEWARD, NULL },  /* takes a batch of them: see handle() */
	{ "import.stat", ROLE_STEWARD, op_import_stat },   /* no descriptor at all */
	{ "import.commit", ROLE_STEWARD, op_import_commit },
	{ "import.abort", ROLE_STEWARD, op_import_abort },
	{ "grant.add", ROLE_STEWARD, op_grant_add },
	{ "grant.list", ROLE_STEWARD | ROLE_AUDITOR, op_grant_list },
	{ "grant.show", ROLE_STEWARD | ROLE_AUDITOR, op_grant_show },
	{ "grant.revoke", ROLE_STEWARD, op_grant_revoke },
	{ "grant.request", ROLE_STEWARD, op_grant_add },
	{ "grant.approve", ROLE_STEWARD, op_grant_approve },
	{ "grant.export", ROLE_STEWARD | ROLE_AUDITOR, op_grant_export },
	{ "grant.jwks", 0, op_grant_jwks },   /* a public key: anyone */
	{ "deny.add", ROLE_STEWARD, op_deny_add },
	{ "deny.list", ROLE_STEWARD | ROLE_AUDITOR, op_deny_list },
	{ "deny.remove", ROLE_STEWARD, op_deny_remove },
	{ "deny.approve", ROLE_STEWARD, op_deny_approve },
	{ "deny.show", ROLE_STEWARD | ROLE_AUDITOR, op_deny_show },
	{ "access.check", 0, op_access_check },   /* others than oneself: see the op */
	{ "dataset.set", ROLE_STEWARD, op_dataset_set },
	{ "dataset.erase", ROLE_STEWARD, op_dataset_erase },
	{ "dataset.erase_approve", ROLE_STEWARD, op_dataset_erase_approve },
	{ "dataset.erasures", ROLE_STEWARD | ROLE_AUDITOR, op_dataset_erasures },
	{ "dataset.erasure_proof", ROLE_STEWARD | ROLE_AUDITOR, op_dataset_erasure_proof },
	{ "audit.show", ROLE_STEWARD | ROLE_AUDITOR, op_audit_show },
	{ "audit.pubkey", 0, op_audit_pubkey },
	{ "audit.checkpoint", ROLE_STEWARD | ROLE_AUDITOR, op_audit_checkpoint },
	{ "audit.prove", ROLE_STEWARD | ROLE_AUDITOR, op_audit_prove },
	{ "audit.auditor_add", ROLE_STEWARD, op_audit_auditor_add },
	{ "audit.export", ROLE_STEWARD | ROLE_AUDITOR, op_audit_export },
	{ "crypt4gh.keygen", ROLE_STEWARD, op_crypt4gh_keygen },
	{ "crypt4gh.import", ROLE_STEWARD, NULL },   /* takes a descriptor: see handle() */
	{ "crypt4gh.pubkey", 0, op_crypt4gh_pubkey },   /* a public key: anyone */
	{ "export.request", ROLE_STEWARD, op_export_request },
	{ "export.approve", ROLE_STEWARD, op_export_approve },
	{ "export.run", ROLE_STEWARD, NULL },   /* takes the outputs' descriptors: see handle() */
	{ "export.list", ROLE_STEWARD | ROLE_AUDITOR, op_export_list },
	{ "export.show", ROLE_STEWARD | ROLE_AUDITOR, op_export_show },
	{ "node.add", ROLE_STEWARD, op_node_add },
	{ "node.approve", ROLE_STEWARD, op_node_approve },
	{ "node.remove", ROLE_STEWARD, op_node_remove },
	{ "node.list", ROLE_STEWARD | ROLE_AUDITOR, op_node_list },
	{ "node.show", ROLE_STEWARD | ROLE_AUDITOR, op_node_show },
	{ "store.gc", ROLE_STEWARD, op_store_gc },
	{ "store.df", ROLE_STEWARD | ROLE_AUDITOR, op_store_df },
};

static const char *role_names(unsigned roles)
{
	if (roles == ROLE_STEWARD)
		return "steward";
	if (roles == ROLE_AUDITOR)
		return "auditor";
	return "steward or auditor";
}

/* Run one request. Borrows the nfds descriptors passed with it (the caller closes them). */
static int handle(struct conn *c, const json_t *req, const int *fds, size_t nfds, json_t **ret)
{
	static const char *const top_known[] = { "op", "args", NULL };
	json_t *args = json_object_get(req, "args");
	const char *op = NULL;
	json_t *empty = NULL;
	bool one_fd;
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
		one_fd = strcmp(op, "import.file") == 0 || strcmp(op, "crypt4gh.import") == 0;
		if (nfds > 0 && strcmp(op, "import.files") != 0 && strcmp(op, "export.run") != 0 &&
		    !(nfds == 1 && one_fd))
			return err_set(-EBADMSG, "%s takes %s", op,
				       one_fd ? "one file descriptor" : "no file descriptor");
		if (!args)
			args = empty = json_object();
		if (ops[i].fn)
			r = ops[i].fn(c, args, ret);
		else if (strcmp(op, "import.file") == 0)
			r = op_import_file(c, args, nfds ? fds[0] : -1, ret);
		else if (strcmp(op, "crypt4gh.import") == 0)
			r = op_crypt4gh_import(c, args, nfds ? fds[0] : -1, ret);
		else if (strcmp(op, "export.run") == 0)
			r = op_export_run(c, args, fds, nfds, ret);
		else
			r = op_import_files(c, args, fds, nfds, ret);
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
		int fds[PROTO_FDS_MAX];
		size_t nfds = 0;
		int r;

		err_clear();
		/* Only a steward may pass a batch (import.files); anyone else at most one
		 * descriptor, so a connection without the role cannot make the daemon hold more
		 * than two at a time (the kernel installs only what the buffer has room for). */
		r = proto_recv_fds(c->fd, c->roles ? CONTROL_IDLE_TIMEOUT_MS :
				   CONTROL_IDLE_TIMEOUT_NOROLE_MS, &type, &req, fds,
				   (c->roles & ROLE_STEWARD) ? PROTO_FDS_MAX : 1, &nfds);
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
			for (size_t i = 0; i < nfds; i++)
				close(fds[i]);
			json_decref(req);
			err_set(-EBADMSG, "expected a request frame");
			if (reply_err(c->fd, -EBADMSG) < 0)
				break;
			continue;
		}
		r = handle(c, req, fds, nfds, &result);
		for (size_t i = 0; i < nfds; i++)
			close(fds[i]);
		json_decref(req);
		r = r < 0 ? reply_err(c->fd, r) : reply_ok(c, result);
		/* A committed import, released once its reply is on its way. */
		store_import_free(c->imp_done);
		c->imp_done = NULL;
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
	{
		struct config cfg;  /* ~10 KiB: the connection thread's stack */

		daemon_config(c->d, &cfg);
		c->roles = config_roles(&cfg, &c->who);
	}
	return 0;
}

/* Whether c may be served now, given those already served (under ctl->lock). false: err_detail()
 * says why, for the busy reply. */
static bool conn_admit(const struct control *ctl, const struct conn *c)
{
	unsigned roleless = 0, mine = 0;

	if (ctl->nconns >= CONTROL_CONNECTIONS_MAX) {
		err_set(-EBUSY, "the daemon serves %d connections at once; try again",
			CONTROL_CONNECTIONS_MAX);
		return false;
	}
	if (c->roles)
		return true;
	for (const struct conn *o = ctl->conns; o; o = o->next) {
		roleless += o->roles == 0;
		mine += o->roles == 0 && o->who.uid == c->who.uid;
	}
	if (mine >= CONTROL_CONNECTIONS_PER_USER) {
		err_set(-EBUSY, "uid %u already has %d connections open, the most a user without a "
			"role may have; close one and try again", c->who.uid,
			CONTROL_CONNECTIONS_PER_USER);
		return false;
	}
	if (roleless >= CONTROL_CONNECTIONS_MAX - CONTROL_CONNECTIONS_RESERVED) {
		err_set(-EBUSY, "the daemon serves %d connections of users without a role at once "
			"(the rest are kept for stewards and auditors); try again",
			CONTROL_CONNECTIONS_MAX - CONTROL_CONNECTIONS_RESERVED);
		return false;
	}
	return true;
}

static void *accept_main(void *arg)
{
	struct control *ctl = arg;

	for (;;) {
		struct conn *c;
		pthread_t t;
		pthread_attr_t attr;
		bool stop;
		int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
			    errno == ENFILE || errno == ENOMEM) {
				if (errno != EINTR && errno != ECONNABORTED)
					poll(NULL, 0, 100);   /* out of resources: back off */
				pthread_mutex_lock(&ctl->lock);
				stop = ctl->stopping;
				pthread_mutex_unlock(&ctl->lock);
				if (stop)
					break;
				continue;
			}
			break;   /* EINVAL after shutdown(): stopping */
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		/* Who it is decides how much room it gets: identify before admitting (the group
		 * lookup runs without the lock, so a slow name service holds up only this). */
		*c = (struct conn){ .ctl = ctl, .d = ctl->d, .fd = fd };
		if (conn_identify(c) < 0) {
			close(fd);
			free(c);
			continue;
		}
		err_clear();
		pthread_mutex_lock(&ctl->lock);
		stop = ctl->stopping;
		if (stop || !conn_admit(ctl, c)) {
			pthread_mutex_unlock(&ctl->lock);
			if (!stop)
				reply_err(fd, -EBUSY);
			close(fd);
			free(c);
			if (stop)
				break;
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

#define BIND_DIR ".bind"

/* Bind and listen on a socket that nobody else can have touched, then put it at run/control.sock.
 * run/ is ours alone (main.c checked it), so the socket is made in a fresh 0700 directory inside
 * it, reached through our own descriptor (/proc/self/fd/N/...), never through the store's path;
 * it gets mode 0666 there (everyone may connect; what they may do is decided per request from
 * SO_PEERCRED), relative to that directory where the only name is ours; and it is renamed into
 * run/ last, atomically replacing a stale socket from a killed daemon (we hold the store lock). */
static int bind_socket(int listen_fd, int run_fd, const char *run_dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat sb;
	int tfd = -1, r = 0;

	/* Left behind by a daemon killed mid-start. */
	unlinkat(run_fd, BIND_DIR "/" CONTROL_SOCKET_NAME, 0);
	if (unlinkat(run_fd, BIND_DIR, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return err_set(-errno, "%s/%s: cannot remove it: %s", run_dir, BIND_DIR,
			       strerror(errno));
	if (mkdirat(run_fd, BIND_DIR, 0700) < 0)
		return err_set(-errno, "%s/%s: %s", run_dir, BIND_DIR, strerror(errno));
	tfd = openat(run_fd, BIND_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (tfd < 0 || fstat(tfd, &sb) < 0) {
		r = err_set(-errno, "%s/%s: %s", run_dir, BIND_DIR, strerror(errno));
		goto out;
	}
	if (sb.st_uid != geteuid() || (sb.st_mode & 077)) {
		r = err_set(-EPERM, "%s/%s is not the private directory just made", run_dir,
			    BIND_DIR);
		goto out;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", tfd,
		 CONTROL_SOCKET_NAME);
	if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    fchmodat(tfd, CONTROL_SOCKET_NAME, 0666, 0) < 0 || listen(listen_fd, 64) < 0 ||
	    renameat(tfd, CONTROL_SOCKET_NAME, run_fd, CONTROL_SOCKET_NAME) < 0)
		r = err_set(-errno, "%s/%s: %s", run_dir, CONTROL_SOCKET_NAME, strerror(errno));
out:
	if (tfd >= 0) {
		unlinkat(tfd, CONTROL_SOCKET_NAME, 0);   /* only if the rename did not happen */
		close(tfd);
	}
	unlinkat(run_fd, BIND_DIR, AT_REMOVEDIR);
	return r;
}

int control_start(struct daemon *d, struct control **ret_ctl)
{
	struct control *ctl;
	int r;

	if (strlen(d->run_dir) + 1 + strlen(CONTROL_SOCKET_NAME) >= sizeof(((struct sockaddr_un *)0)->sun_path))
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
	r = bind_socket(ctl->listen_fd, d->run_fd, d->run_dir);
	if (r < 0)
		goto fail;
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
