/* client: one connection to enclaved; requests answered in order (docs/PROTOCOL.md). */
#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"

/* A user name for a uid, for messages ("uid 1001 (alice)"). */
static void uid_words(uid_t uid, char out[static 96])
{
	struct passwd *pw = getpwuid(uid);
	char name[64];

	out_text(pw ? pw->pw_name : "", 0, name, sizeof(name));
	snprintf(out, 96, "uid %u%s%s%s", (unsigned)uid, *name ? " (" : "", name, *name ? ")" : "");
}

/* Who listens on the other end of fd, from the kernel: the credentials of the process that called
 * listen(), which an impostor cannot choose. Only root or daemon_uid may be talked to. */
static int check_server(int fd, const char *path, uid_t daemon_uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char who[96], want[96];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred))
		return err_set(-EPERM, "cannot learn who serves %s (SO_PEERCRED: %s); refusing to "
			       "talk to it", path, strerror(errno));
	if (cred.uid == 0 || cred.uid == daemon_uid)
		return 0;
	uid_words(cred.uid, who);
	uid_words(daemon_uid, want);
	return err_set(-EPERM, "%s is served by %s, not by root or the store's owner (%s): an "
		       "impostor may have replaced the daemon's socket; nothing was sent to it",
		       path, who, want);
}

uid_t client_daemon_uid(const char *store_dir)
{
	struct stat sb;

	/* The daemon refuses a store directory not owned by its own uid (enclaved(8)), so the owner
	 * is the only uid besides root that can be the daemon. No store here: root only. */
	if (stat(store_dir ? store_dir : CTL_DEFAULT_STORE, &sb) < 0 || !S_ISDIR(sb.st_mode))
		return 0;
	return sb.st_uid;
}

int client_connect(const char *path, uid_t daemon_uid, struct client *ret_client)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);
	int fd, r;

	if (n == 0 || n >= sizeof(sa.sun_path))
		return err_set(-ENAMETOOLONG, "socket path is empty or longer than %zu bytes",
			       sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, n + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(-errno, "cannot make a socket: %s", strerror(errno));
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		if (e == EINTR)
			continue;
		close(fd);
		return err_set(-e, "%s", strerror(e));
	}
	/* Before the first byte (and any descriptor) goes out: is this the daemon? */
	r = check_server(fd, path, daemon_uid);
	if (r < 0) {
		close(fd);
		return r;
	}
	*ret_client = (struct client){ .sock = fd, .intr_fd = -1,
				       .timeout_ms = CTL_REPLY_TIMEOUT_MS };
	snprintf(ret_client->path, sizeof(ret_client->path), "%s", path);
	return 0;
}

void client_close(struct client *c)
{
	if (!c || c->sock < 0)
		return;
	close(c->sock);
	c->sock = -1;
}

void reply_clear(struct reply *r)
{
	if (!r)
		return;
	json_decref(r->msg);
	*r = (struct reply){ 0 };
}

int ctl_print_json(struct reply *rep)
{
	int r = out_json(rep->result) < 0;

	reply_clear(rep);
	return r;
}

/* Wait until the socket has something to read, the user interrupts, or the timeout passes. */
static int wait_frame(const struct client *c)
{
	struct pollfd p[2] = {
		{ .fd = c->sock, .events = POLLIN },
		{ .fd = c->intr_fd, .events = POLLIN },
	};
	int64_t deadline = now_monotonic_ns() + (int64_t)c->timeout_ms * 1000000;

	for (;;) {
		int64_t left_ms = (deadline - now_monotonic_ns()) / 1000000;
		int n;

		if (left_ms < 0)
			left_ms = 0;
		n = poll(p, c->intr_fd >= 0 ? 2 : 1, (int)left_ms);
		if (n < 0 && errno != EINTR)
			return err_set(-errno, "waiting for the daemon: %s", strerror(errno));
		if (c->intr_fd >= 0 && n > 0 && p[1].revents)
			return err_set(-EINTR, "interrupted");
		if (n > 0)
			return 0;
		if (n == 0)
			return err_set(-ETIMEDOUT, "no answer from the daemon for %d s",
				       c->timeout_ms / 1000);
	}
}

/* Check the shape of a reply and fill r (taking over msg). */
static int parse_reply(json_t *msg, struct reply *r)
{
	json_t *ok = json_object_get(msg, "ok"), *e, *code, *text;

	if (!json_is_boolean(ok)) {
		json_decref(msg);
		return err_set(-EPROTO, "reply without a true/false \"ok\"");
	}
	*r = (struct reply){ .msg = msg, .ok = json_is_true(ok) };
	if (r->ok) {
		r->result = json_object_get(msg, "result");
		if (!r->result) {
			/* An operation with nothing to say; treat as an empty result. */
			r->result = json_object();
			if (!r->result || json_object_set_new(msg, "result", r->result) < 0) {
				reply_clear(r);
				return -ENOMEM;
			}
		}
		if (!json_is_object(r->result)) {
			reply_clear(r);
			return err_set(-EPROTO, "reply whose \"result\" is not an object");
		}
		return 0;
	}
	e = json_object_get(msg, "error");
	code = json_object_get(e, "code");
	text = json_object_get(e, "message");
	if (!json_is_object(e) || !json_is_string(code)) {
		reply_clear(r);
		return err_set(-EPROTO, "error reply without an error code");
	}
	r->code = json_string_value(code);
	r->message = json_is_string(text) ? json_string_value(text) : "";
	return 0;
}

/* The descriptor of the partial frame being handled (client.accept_fds), until taken. */
static int partial_fd = -1;

int client_partial_take_fd(void)
{
	int fd = partial_fd;

	partial_fd = -1;
	return fd;
}

int client_call(struct client *c, const char *op, json_t *args, int fd,
		client_partial_fn on_partial, void *ctx, struct reply *ret_reply)
{
	return client_call_fds(c, op, args, &fd, fd >= 0 ? 1 : 0, on_partial, ctx, ret_reply);
}

int client_call_fds(struct client *c, const char *op, json_t *args, const int *fds, size_t nfds,
		    client_partial_fn on_partial, void *ctx, struct reply *ret_reply)
{
	int r = client_send_fds(c, op, args, fds, nfds);

	if (r < 0)
		return r;
	return client_recv_reply(c, on_partial, ctx, ret_reply);
}

int client_send_fds(struct client *c, const char *op, json_t *args, const int *fds, size_t nfds)
{
	json_t *req = json_object();
	int r;

	err_clear();
	/* json_object_set_new() takes over args even when it fails. */
	if (!req || json_object_set_new(req, "op", json_string(op)) < 0) {
		json_decref(args);
		json_decref(req);
		return err_set(-ENOMEM, "out of memory");
	}
	if (args && json_object_set_new(req, "args", args) < 0) {
		json_decref(req);
		return err_set(-ENOMEM, "out of memory");
	}
	r = proto_send_fds(c->sock, PROTO_REQUEST, req, fds, nfds);
	json_decref(req);
	if (r == -EPIPE || r == -ECONNRESET)
		return err_set(-ECONNRESET, "the daemon closed the connection");
	if (r < 0) {
		char d[ERR_DETAIL_MAX];

		snprintf(d, sizeof(d), "%s", *err_detail() ? err_detail() : strerror(-r));
		return err_set(r, "cannot send the request: %s", d);
	}
	return 0;
}

int client_recv_reply(struct client *c, client_partial_fn on_partial, void *ctx,
		      struct reply *ret_reply)
{
	json_t *msg = NULL;
	enum proto_frame_type type;
	int pfd = -1, r;

	err_clear();
	for (;;) {
		r = wait_frame(c);
		if (r < 0)
			return r;
		/* Once a frame has begun, its rest must follow promptly. A descriptor is taken
		 * only where the caller asked for them (audit export), on a partial frame. */
		r = proto_recv(c->sock, c->timeout_ms, &type, &msg, c->accept_fds ? &pfd : NULL);
		switch (r) {
		case 0:
			break;
		case -ECONNRESET:
			return err_set(-ECONNRESET, "the daemon closed the connection without a "
						    "reply");
		case -EPROTO:
		case -EMSGSIZE:
		case -EBADMSG:
			return -EPROTO;  /* proto_recv() said what was wrong in err_detail() */
		case -ETIMEDOUT:
			return err_set(-ETIMEDOUT, "the daemon stopped in the middle of a frame");
		default:
			return err_set(r, "cannot read the reply: %s", strerror(-r));
		}
		if (pfd >= 0 && type != PROTO_PARTIAL) {
			close(pfd);
			pfd = -1;
			json_decref(msg);
			return err_set(-EPROTO, "the daemon sent a descriptor with its reply");
		}
		if (type == PROTO_REPLY)
			return parse_reply(msg, ret_reply);
		if (type != PROTO_PARTIAL) {
			json_decref(msg);
			return err_set(-EPROTO, "the daemon sent a frame of type %d", (int)type);
		}
		partial_fd = pfd;
		pfd = -1;
		r = on_partial ? on_partial(ctx, msg) : 0;
		/* A descriptor the callback did not take is closed. */
		if (partial_fd >= 0)
			close(partial_fd);
		partial_fd = -1;
		json_decref(msg);
		msg = NULL;
		if (r < 0)
			return r;
	}
}

/* "not_found" -> "not found"; anything but printable ASCII becomes '?'. */
static void code_words(const char *code, char out[static 64])
{
	size_t i;

	for (i = 0; code[i] && i < 63; i++)
		out[i] = code[i] == '_' ? ' ' : code[i] > 0x20 && code[i] < 0x7f ? code[i] : '?';
	out[i] = '\0';
}

int client_report(const char *what, int r, const struct reply *rep)
{
	char words[64], msg[ERR_DETAIL_MAX];

	if (r < 0) {
		const char *d = err_detail();

		out_text(*d ? d : strerror(-r), 0, msg, sizeof(msg));
		if (r == -EPROTO)
			return ctl_fail_code("protocol_error", what, "protocol error: %s", msg);
		return ctl_fail_code(r == -ECONNRESET ? "connection_lost" :
				     r == -ETIMEDOUT ? "timed_out" :
				     r == -EINTR ? "interrupted" : "error", what, "%s", msg);
	}
	code_words(rep->code, words);
	out_text(rep->message, 0, msg, sizeof(msg));
	/* The daemon's code is passed on as it is (--json errors), if it is a plain word. */
	if (!*rep->code)
		return ctl_fail(what, "%s", msg);
	for (const char *p = rep->code; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || *p == '_'))
			return ctl_fail_code("protocol_error", what, "%s: %s", words, msg);
	if (!*msg)
		return ctl_fail_code(rep->code, what, "%s", words);
	return ctl_fail_code(rep->code, what, "%s: %s", words, msg);
}

int client_report_connect(const char *what, const char *path, int r)
{
	static const char suffix[] = "/" CTL_SOCKET_NAME;
	char store[4096] = "DIR";
	size_t n = strlen(path);

	/* The socket's usual place tells us the store, so the hint can be exact. */
	if (n > strlen(suffix) && strcmp(path + n - strlen(suffix), suffix) == 0 &&
	    n - strlen(suffix) < sizeof(store))
		snprintf(store, sizeof(store), "%.*s", (int)(n - strlen(suffix)), path);
	switch (r) {
	case -ENOENT:
	case -ECONNREFUSED:
		return ctl_fail_code("no_daemon", what, "the daemon is not running at %s (%s); start it with: "
				      "enclaved --store %s --mount MOUNTPOINT",
				path, r == -ENOENT ? "no such socket" : "connection refused",
				store);
	case -EPERM:
		if (*err_detail())
			return ctl_fail_code("no_daemon", what, "%s", err_detail());
		/* fall through */
	case -EACCES:
		return ctl_fail_code("no_daemon", what,
				     "cannot reach the daemon's socket %s: permission denied",
				path);
	case -ENOTDIR:
		return ctl_fail(what, "cannot reach the daemon's socket %s: a parent is not a "
				      "directory", path);
	case -ENAMETOOLONG:
		return ctl_fail(what, "socket path %s: %s", path, err_detail());
	default:
		return ctl_fail(what, "cannot connect to the daemon at %s: %s", path,
				strerror(-r));
	}
}

int ctl_call(const struct ctl *ctl, const char *what, const char *op, json_t *args,
	     client_partial_fn on_partial, void *ctx, struct reply *ret_reply)
{
	return ctl_call_fds(ctl, what, op, args, false, on_partial, ctx, ret_reply);
}

int ctl_call_list(const struct ctl *ctl, const char *what, const char *op, json_t *args,
		  const char *key, struct reply *rep, const json_t **ret_list)
{
	const json_t *list;
	int r = ctl_call(ctl, what, op, args, NULL, NULL, rep);

	*ret_list = NULL;
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(rep);
	list = json_object_get(rep->result, key);
	if (!json_is_array(list)) {
		reply_clear(rep);
		return ctl_fail(what, "protocol error: the reply has no \"%s\" list", key);
	}
	*ret_list = list;
	return 0;
}

int ctl_call_fds(const struct ctl *ctl, const char *what, const char *op, json_t *args,
		 bool accept_fds, client_partial_fn on_partial, void *ctx, struct reply *ret_reply)
{
	struct client c = { .sock = -1 };
	struct reply rep = { 0 };
	char path[4096];
	int r;

	r = ctl_socket_path(ctl, path, sizeof(path));
	if (r < 0) {
		json_decref(args);
		return ctl_fail(what, "the socket path is too long");
	}
	r = client_connect(path, client_daemon_uid(ctl->store_dir), &c);
	if (r < 0) {
		json_decref(args);
		return client_report_connect(what, path, r);
	}
	c.accept_fds = accept_fds;
	r = client_call(&c, op, args, -1, on_partial, ctx, &rep);
	client_close(&c);
	if (r < 0 || !rep.ok) {
		client_report(what, r, &rep);
		reply_clear(&rep);
		return 1;
	}
	*ret_reply = rep;
	return 0;
}
