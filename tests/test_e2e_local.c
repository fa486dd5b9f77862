/* test_e2e_local: the local attacks of issue 14, tried for real: a hostile local user against the
 * real enclaved and enclavectl, a real mount and real test users (tests/testusers.c).
 *
 *   - an impostor listening on the control socket gets nothing from a steward's enclavectl, and
 *     the daemon refuses a store whose directories someone else owns or may write;
 *   - a flood of idle connections from one user does not lock the stewards out;
 *   - the audit directory deleted or replaced by a symlink stops the daemon, and a new log starts
 *     only through `enclavectl audit new-log`, which records why;
 *   - dataset names and counts stay hidden from users with no grant;
 *   - hostile names (bidi controls) are escaped on the auditor's screen;
 *   - cache=kernel revocation is per user, and a group change reaches open files.
 *
 * One daemon serves the group of tests; a test that stops it starts it again before it ends. The
 * harness (tests/e2e.h) makes sure nothing stays mounted or running when a test fails.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>

#include "audit/audit.h"
#include "common/common.h"
#include "common/proto.h"
#include "tests/e2e.h"
#include "tests/testusers.h"
#include "tests/testutil.h"

/* ---- Fixture --------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
	static const char *const roles[] = { "--steward", "user:root", "--auditor",
					     "user:" TU_USER_CAROL, "--approvals", "0", NULL };
	struct e2e_run *r;

	(void)state;
	if (e2e_setup("e2e-local") < 0)
		return -1;
	tu_seed_file(100000, 1, "%s/data.bin", E->src);
	tu_seed_file(4000, 2, "%s/notes.txt", E->src);
	if (e2e_init(roles) < 0)
		return -1;
	e2e_daemon_start_with(E->pass, true);
	r = ctl("dataset", "import", "local", E->src);
	if (r->status != 0) {
		fprintf(stderr, "import failed: %s%s\n", r->out, r->err);
		free(r);
		return -1;
	}
	free(r);
	return 0;
}

/* dan is in TU_GROUP (test_group_removal_stops_open_reader failed before taking him out). */
static bool dan_in_group;

static int group_teardown(void **state)
{
	(void)state;
	if (dan_in_group)
		tu_group_member(TU_USER_DAN, false);
	e2e_teardown();
	return 0;
}

/* The limits the daemon promises (docs/PROTOCOL.md section 1). */
#define CONTROL_PER_USER_MAX 4
#define CONTROL_IDLE_NOROLE_MS 5000

/* ---- Helpers --------------------------------------------------------------------------------- */

static char *store_path(const char *name)
{
	return tu_fmt("%s/%s", E->store, name);
}

/* Start enclaved on a store it must refuse: it exits 1 within 30 s, and its stderr says why
 * (contains needle). The daemon log is emptied first so only this start is searched. */
static void daemon_refuses(const char *needle)
{
	int st = 0;
	size_t n = 0;
	char *log;

	assert_int_equal(truncate(E->log, 0), 0);
	e2e_daemon_start_with(E->pass, false);
	for (int i = 0; i < 600; i++) {
		if (waitpid(E->daemon, &st, WNOHANG) == E->daemon)
			break;
		if (i == 599) {
			e2e_print_daemon_log();
			fail_msg("enclaved started (or hung) on a store it must refuse (%s)", needle);
		}
		poll(NULL, 0, 50);
	}
	E->daemon = 0;
	log = (char *)tu_read_file(E->log, &n);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 1 || !memmem(log, n, needle, strlen(needle))) {
		e2e_print_daemon_log();
		fail_msg("wanted exit 1 saying \"%s\"", needle);
	}
	assert_false(e2e_is_mounted(E->mnt));
	free(log);
}

static __attribute__((unused)) void daemon_restart(void)
{
	e2e_daemon_stop_sig(SIGTERM);
	e2e_cleanup_mount();
	assert_int_equal(truncate(E->log, 0), 0);
	e2e_daemon_start_with(E->pass, true);
}

/* ---- 1. An impostor on the control socket ---------------------------------------------------- */

struct impostor_job {
	int ready;      /* write end of a pipe: one byte once listening */
};

/* As a user who can write the store directory: move the daemon's run/ aside, make our own and
 * listen on run/control.sock. Exit 0 if the one client that connects sends nothing at all (no
 * byte, no descriptor) before hanging up; 10 if it sent bytes, 11 if it sent a descriptor. */
static int child_impostor(void *arg)
{
	const struct impostor_job *job = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *run = store_path("run"), *real = store_path("run.real");
	char buf[256], cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct pollfd p;
	int lfd, cfd;
	ssize_t n;

	if (rename(run, real) < 0 || mkdir(run, 0755) < 0) {
		fprintf(stderr, "impostor: cannot swap run/: %s\n", strerror(errno));
		return 1;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control.sock", run);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(sa.sun_path, 0666) < 0 || listen(lfd, 8) < 0) {
		fprintf(stderr, "impostor: cannot listen: %s\n", strerror(errno));
		return 2;
	}
	if (write(job->ready, "r", 1) != 1)
		return 3;
	p = (struct pollfd){ .fd = lfd, .events = POLLIN };
	if (poll(&p, 1, 30000) != 1) {
		fprintf(stderr, "impostor: nobody connected\n");
		return 4;
	}
	cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd < 0)
		return 5;
	p = (struct pollfd){ .fd = cfd, .events = POLLIN };
	if (poll(&p, 1, 30000) != 1) {
		fprintf(stderr, "impostor: the client neither sent nor hung up\n");
		return 6;
	}
	n = recvmsg(cfd, &mh, MSG_CMSG_CLOEXEC);
	if (CMSG_FIRSTHDR(&mh)) {
		fprintf(stderr, "impostor: received a descriptor\n");
		return 11;
	}
	if (n > 0) {
		fprintf(stderr, "impostor: received %zd bytes\n", n);
		return 10;
	}
	return 0;
}

static void test_impostor_socket_gets_nothing(void **state)
{
	char *run = store_path("run"), *real = store_path("run.real"), *sock;
	struct impostor_job job;
	struct e2e_run *r;
	struct stat sb;
	int pfd[2], rc;
	pid_t pid;
	char c;

	(void)state;
	/* The store directory made writable by alice: the mistake the attack needs. */
	assert_int_equal(chmod(E->store, 0777), 0);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	job.ready = pfd[1];
	assert_int_equal(tu_spawn_as(&E->u.alice, child_impostor, &job, &pid), 0);
	close(pfd[1]);
	assert_int_equal(read(pfd[0], &c, 1), 1);
	close(pfd[0]);

	/* Root's import connects to alice's socket: it must not send a byte or a descriptor. */
	r = ctl("dataset", "import", "stolen", E->src);
	assert_int_equal(r->status, 1);
	if (!strstr(r->err, "impostor"))
		fail_msg("import said: %s", r->err);
	assert_non_null(strstr(r->err, TU_USER_ALICE));
	free(r);
	rc = tu_wait(pid, 30000);
	assert_int_equal(rc, 0);

	/* The daemon, restarted, refuses a store others may write, then alice's run/, then a run/
	 * others may write; it starts once run/ is its own again. */
	e2e_daemon_stop_sig(SIGTERM);
	e2e_cleanup_mount();
	daemon_refuses("is mode 0777");
	assert_int_equal(chmod(E->store, 0711), 0);
	daemon_refuses("/run is owned by uid");
	tu_rm_rf(run);
	assert_int_equal(rename(real, run), 0);
	assert_int_equal(chmod(run, 0777), 0);
	daemon_refuses("/run is mode 0777");
	assert_int_equal(chmod(run, 0755), 0);
	/* Also a key directory that someone else owns. */
	{
		char *keys = store_path("keys");

		assert_int_equal(chown(keys, E->u.alice.uid, 0), 0);
		daemon_refuses("/keys is owned by uid");
		assert_int_equal(chown(keys, 0, 0), 0);
		free(keys);
	}
	assert_int_equal(truncate(E->log, 0), 0);
	e2e_daemon_start_with(E->pass, true);
	/* The socket the daemon made: root's, 0666, in run/ with no leftovers. */
	sock = tu_fmt("%s/control.sock", run);
	assert_int_equal(lstat(sock, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	assert_int_equal(sb.st_uid, 0);
	assert_int_equal(sb.st_mode & 07777, 0666);
	free(sock);
	sock = tu_fmt("%s/.bind", run);
	assert_int_equal(lstat(sock, &sb), -1);
	free(sock);
	free(e2e_ok(ctl("status")));
	free(run);
	free(real);
}

/* ---- 2. A flood of connections ---------------------------------------------------------------- */

static int connect_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/run/control.sock", E->store);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One status request: 1 answered, 0 refused (a busy reply, or the connection refused, reset or
 * closed: a refused client may see any of these, depending on when the daemon hangs up). */
static int status_on(int fd)
{
	json_t *req = json_pack("{s:s}", "op", "status"), *msg = NULL;
	enum proto_frame_type type;
	int r;

	if (fd < 0)
		return 0;
	/* A send to a connection the daemon refused may fail; its busy reply is still readable. */
	proto_send(fd, PROTO_REQUEST, req, -1);
	json_decref(req);
	r = proto_recv(fd, 10000, &type, &msg, NULL);
	if (r < 0)
		return 0;
	r = json_is_true(json_object_get(msg, "ok")) ? 1 : 0;
	json_decref(msg);
	return r;
}

#define FLOOD 70

struct flood_job {
	int ready;      /* write end: one byte once the flood is in place */
	int done;       /* read end: EOF when the parent has finished */
	int close_fds[4];  /* the other pipe ends this child inherited: closed first */
};

/* As a user without a role: open FLOOD connections, each asking status and kept open, as a
 * process that wants to fill the daemon's table would; keep asking on every one still open until
 * the parent is done. Exit 0 when the daemon served only a few and refused the rest. */
static int child_flood(void *arg)
{
	const struct flood_job *job = arg;
	int fds[FLOOD], served = 0;
	struct pollfd p = { .fd = job->done, .events = POLLIN };

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < ARRAY_SIZE(job->close_fds); i++)
		close(job->close_fds[i]);
	for (int i = 0; i < FLOOD; i++) {
		fds[i] = connect_socket();
		if (status_on(fds[i]) == 1) {
			served++;
		} else if (fds[i] >= 0) {
			close(fds[i]);
			fds[i] = -1;
		}
	}
	if (write(job->ready, "r", 1) != 1)
		return 2;
	/* Keep them busy (a status every half second resets any idle timer) until told. */
	while (poll(&p, 1, 500) == 0)
		for (int i = 0; i < FLOOD; i++)
			if (fds[i] >= 0 && status_on(fds[i]) != 1) {
				close(fds[i]);
				fds[i] = -1;
			}
	if (served > CONTROL_PER_USER_MAX) {
		fprintf(stderr, "flood: %d of %d connections served\n", served, FLOOD);
		return 3;
	}
	return 0;
}

/* Connect, say nothing, and expect the daemon to hang up within 3 idle timeouts. */
static int child_idle_is_closed(void *arg)
{
	int fd = connect_socket();
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char b;

	(void)arg;
	if (fd < 0)
		return 1;
	if (poll(&p, 1, 3 * CONTROL_IDLE_NOROLE_MS) != 1 || read(fd, &b, 1) != 0) {
		fprintf(stderr, "an idle connection without a role was not closed\n");
		return 2;
	}
	close(fd);
	return 0;
}

static void test_connection_flood_leaves_room_for_stewards(void **state)
{
	struct flood_job ja, jb;
	int ra[2], rb[2], done[2];
	pid_t pa, pb;
	uint64_t id;
	char c;

	(void)state;
	id = e2e_grant("--user", TU_USER_CAROL, "local", "+1h");
	/* alice and bob, with no role, each try to fill the table. */
	assert_int_equal(pipe2(ra, O_CLOEXEC), 0);
	assert_int_equal(pipe2(rb, O_CLOEXEC), 0);
	assert_int_equal(pipe2(done, O_CLOEXEC), 0);
	ja = (struct flood_job){ .ready = ra[1], .done = done[0],
				 .close_fds = { ra[0], rb[0], rb[1], done[1] } };
	jb = (struct flood_job){ .ready = rb[1], .done = done[0],
				 .close_fds = { ra[0], ra[1], rb[0], done[1] } };
	assert_int_equal(tu_spawn_as(&E->u.alice, child_flood, &ja, &pa), 0);
	assert_int_equal(tu_spawn_as(&E->u.bob, child_flood, &jb, &pb), 0);
	close(ra[1]);
	close(rb[1]);
	close(done[0]);
	assert_int_equal(read(ra[0], &c, 1), 1);
	assert_int_equal(read(rb[0], &c, 1), 1);
	/* The steward revokes and the auditor looks, while the flood goes on. */
	e2e_revoke(id);
	free(e2e_ok(ctl_as(&E->u.carol, "grant", "list")));
	free(e2e_ok(ctl("status")));
	close(done[1]);
	assert_int_equal(tu_wait(pa, 60000), 0);
	assert_int_equal(tu_wait(pb, 60000), 0);
	close(ra[0]);
	close(rb[0]);

	/* A connection without a role that says nothing is closed within seconds, not minutes. */
	assert_int_equal(tu_run_as(&E->u.alice, child_idle_is_closed, NULL, 60000), 0);
}

/* ---- 4. The audit directory as found ------------------------------------------------------------ */

static off_t file_size(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	return sb.st_size;
}

/* audit_foreach callback: keep the first audit_new_log record (opened). Key records come too. */
static int keep_first(void *ctx, const json_t *rec, const char *line, size_t len)
{
	json_t **ret = ctx;

	(void)line;
	(void)len;
	if (!*ret && strcmp(json_string_value(json_object_get(rec, "event")) ?: "",
			    "audit_new_log") == 0)
		*ret = json_deep_copy(rec);
	return 0;
}

static void test_audit_dir_missing_or_symlinked_is_refused(void **state)
{
	char *audit = store_path("audit"), *gone = store_path("audit.gone");
	char *gone_log = tu_fmt("%s/audit.log", gone), *run = store_path("run");
	char *run_x = store_path("run.x");
	off_t size;
	struct e2e_run *r;
	json_t *first = NULL;
	int fd;

	(void)state;
	/* History: a dataset (from the fixture) and a grant. */
	e2e_grant("--user", TU_USER_BOB, "local", "+1h");
	e2e_daemon_stop_sig(SIGTERM);
	e2e_cleanup_mount();

	/* audit/ gone while the store has datasets and grants: an incident, not a fresh start. */
	assert_int_equal(rename(audit, gone), 0);
	daemon_refuses("/audit is missing, but the store holds 1 dataset(s)");
	daemon_refuses("enclavectl audit new-log");
	assert_int_equal(access(audit, F_OK), -1);    /* nothing was made in its place */
	/* An empty audit/ (or one without a log) is no better. */
	assert_int_equal(mkdir(audit, 0700), 0);
	daemon_refuses("holds no audit.log");
	{
		char *log = tu_fmt("%s/audit.log", audit);

		fd = open(log, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		free(log);
	}
	assert_true(fd >= 0);
	close(fd);
	daemon_refuses("holds an empty audit.log");
	tu_rm_rf(audit);
	/* Any directory of the store as a symlink is refused, never followed. */
	assert_int_equal(rename(run, run_x), 0);
	assert_int_equal(symlink(run_x, run), 0);
	daemon_refuses("/run is a symbolic link");
	assert_int_equal(unlink(run), 0);
	assert_int_equal(rename(run_x, run), 0);
	/* audit/ as a symlink to a directory of someone else's choosing: never followed, and the
	 * log there is not written to. */
	size = file_size(gone_log);
	assert_int_equal(symlink(gone, audit), 0);
	daemon_refuses("/audit is a symbolic link");
	assert_int_equal(file_size(gone_log), size);

	/* new-log refuses while anything is at audit/, and wants a reason. */
	r = ctl("audit", "new-log", "--passphrase-file", E->pass, "--reason", "lost");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "move it aside"));
	free(r);
	assert_int_equal(unlink(audit), 0);
	r = ctl("audit", "new-log", "--passphrase-file", E->pass);
	assert_int_equal(r->status, 2);
	free(r);
	assert_int_equal(access(audit, F_OK), -1);
	/* With a reason it starts the log, whose first record says why and what was lost. */
	free(e2e_ok(ctl("audit", "new-log", "--passphrase-file", E->pass, "--reason",
			"disk replaced, old log unrecoverable")));
	assert_int_equal(e2e_audit_count("audit_new_log", NULL, NULL,
					 "disk replaced, old log unrecoverable", 0), 1);
	{
		struct audit_filter flt = { .event = "audit_new_log" };

		assert_int_equal(audit_opener_new(NULL, E->akey, &flt.open), 0);
		assert_int_equal(audit_foreach(audit, &flt, keep_first, &first), 0);
		audit_opener_free(flt.open);
		assert_non_null(first);
		assert_string_equal(json_string_value(json_object_get(first, "event")),
				    "audit_new_log");
		assert_string_equal(json_string_value(json_object_get(first, "reason")),
				    "disk replaced, old log unrecoverable");
		assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(first, "lost"), "datasets")), 1);
		assert_true(json_integer_value(json_object_get(
			    json_object_get(first, "lost"), "policy_records")) >= 1);
		json_decref(first);
		/* The only records before it are the epoch's key record(s). */
		assert_int_equal(e2e_audit_count(NULL, NULL, NULL, NULL, 0) -
				 e2e_audit_count("log_key", NULL, NULL, NULL, 0), 1);
	}
	/* ... covered by a signed checkpoint already. */
	{
		char *cps = tu_fmt("%s/checkpoints", audit);

		assert_true(file_size(cps) > 0);
		free(cps);
	}
	/* The daemon starts on it; the old log is still where it was moved. */
	assert_int_equal(truncate(E->log, 0), 0);
	e2e_daemon_start_with(E->pass, true);
	assert_int_equal(file_size(gone_log), size);
	/* With the daemon running, new-log refuses (audit/ exists). */
	r = ctl("audit", "new-log", "--passphrase-file", E->pass, "--reason", "again");
	assert_int_equal(r->status, 1);
	free(r);
	free(audit);
	free(gone);
	free(gone_log);
	free(run);
	free(run_x);
}

/* ---- 5. Names and counts stay hidden -------------------------------------------------------------- */

static void test_names_and_counts_stay_hidden(void **state)
{
	uint64_t id;
	json_t *j;
	struct e2e_run *r;
	char ids[32];

	(void)state;
	/* alice has never been named by a grant: she sees nothing, before and after a deny rule on
	 * everyone and every dataset. */
	e2e_sees_as(&E->u.alice, "local", false);
	r = e2e_ok(ctl("--json", "deny", "add", "--all", "--all-datasets", "--yes", "--reason",
		       "incident response: everything closed"));
	j = e2e_out_json(r);
	id = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "rule"), "id"));
	if (!id)
		id = (uint64_t)json_integer_value(json_object_get(j, "id"));
	assert_true(id > 0);
	json_decref(j);
	free(r);
	e2e_sees_as(&E->u.alice, "local", false);
	/* Her own access check says no_grant, as for a name that does not exist. */
	r = ctl_as(&E->u.alice, "--json", "access", "check", "--dataset", "local");
	assert_int_equal(r->status, 1);    /* refused */
	j = e2e_out_json(r);
	assert_string_equal(json_string_value(json_object_get(j, "reason")), "no_grant");
	json_decref(j);
	free(r);
	/* bob, whom a grant names, still sees the name and is refused by the rule at open. */
	e2e_grant("--user", TU_USER_BOB, "local", "+1h");
	e2e_sees_as(&E->u.bob, "local", true);
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	free(e2e_ok(ctl("deny", "remove", ids, "--reason", "incident closed")));

	/* status: what the daemon is, to anyone; what it holds, to stewards and auditors only. */
	r = e2e_ok(ctl_as(&E->u.alice, "--json", "status"));
	j = e2e_out_json(r);
	assert_non_null(json_object_get(j, "version"));
	assert_null(json_object_get(j, "datasets"));
	assert_null(json_object_get(j, "grants"));
	assert_null(json_object_get(j, "audit_records"));
	assert_null(json_object_get(j, "mount_stats"));
	json_decref(j);
	free(r);
	r = e2e_ok(ctl_as(&E->u.alice, "status"));
	assert_null(strstr(r->out, "datasets"));
	assert_null(strstr(r->out, "reads refused"));
	free(r);
	r = e2e_ok(ctl_as(&E->u.carol, "--json", "status"));
	j = e2e_out_json(r);
	assert_int_equal(json_integer_value(json_object_get(j, "datasets")), 1);
	assert_non_null(json_object_get(j, "mount_stats"));
	json_decref(j);
	free(r);
}

/* ---- 7. Hostile names on the auditor's screen -------------------------------------------------- */

#define RLO "\xe2\x80\xae"   /* U+202E RIGHT-TO-LEFT OVERRIDE */

static bool has_rlo(const char *s)
{
	return strstr(s, RLO) != NULL;
}

/* Open, read and close one file. */
static int child_cat(void *arg)
{
	char buf[4096];
	int fd = open(arg, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "open %s: %s\n", (char *)arg, strerror(errno));
		return 1;
	}
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return 0;
}

static void test_hostile_names_are_escaped_on_screen(void **state)
{
	/* Shown raw, "report<RLO>fdp.exe" reads "reportexe.pdf". */
	char *src = tu_fmt("%s/src-bidi", E->root), *name = "report" RLO "fdp.exe";
	char *path, *carol_key = e2e_auditor_key_for(&E->u.carol), *line, *save = NULL;
	struct e2e_run *r;
	bool found = false;
	uint64_t id;
	char ids[32];

	(void)state;
	assert_int_equal(mkdir(src, 0755), 0);
	tu_seed_file(1000, 7, "%s/%s", src, name);
	free(e2e_ok(ctl("dataset", "import", "bidi", src)));
	id = e2e_grant("--user", TU_USER_ALICE, "bidi", "+1h");
	path = tu_fmt("%s/bidi/1/%s", E->mnt, name);
	assert_int_equal(tu_run_as(&E->u.alice, child_cat, path, 30000), 0);
	free(path);
	/* The kernel sends the close after close(2) returns: wait for its record. */
	for (int i = 0; i < 100 && e2e_audit_count("close", TU_USER_ALICE, "bidi", NULL, 0) < 1;
	     i++)
		poll(NULL, 0, 50);

	/* audit show: the name escaped, never the raw override. */
	r = e2e_ok(ctl_as(&E->u.carol, "audit", "show", "--dataset", "bidi", "--auditor-key",
			  carol_key));
	if (has_rlo(r->out) || !strstr(r->out, "report\\u202Efdp.exe"))
		fail_msg("audit show printed: %s", r->out);
	free(r);
	r = e2e_ok(ctl_as(&E->u.carol, "audit", "show", "--dataset", "bidi", "--wide",
			  "--auditor-key", carol_key));
	assert_false(has_rlo(r->out));
	free(r);
	r = e2e_ok(ctl_as(&E->u.carol, "audit", "report", "--dataset", "bidi", "--auditor-key",
			  carol_key));
	assert_false(has_rlo(r->out));
	free(r);
	/* --json keeps the exact string, in valid JSON. */
	r = e2e_ok(ctl_as(&E->u.carol, "--json", "audit", "show", "--dataset", "bidi",
			  "--auditor-key", carol_key));
	for (line = strtok_r(r->out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(line, 0, NULL);
		const char *p;

		assert_non_null(j);
		p = json_string_value(json_object_get(j, "path"));
		found |= p && strcmp(p, "/report" RLO "fdp.exe") == 0;
		json_decref(j);
	}
	assert_true(found);
	free(r);
	/* Listings: grant list, dataset show. */
	r = e2e_ok(ctl("grant", "list"));
	assert_false(has_rlo(r->out));
	free(r);

	/* A purpose or a reason with the override is refused at the door, and the refusal does not
	 * echo it raw. */
	r = ctl("grant", "add", "--user", TU_USER_BOB, "--dataset", "bidi", "--purpose",
		"sepsis " RLO "model", "--expires", "+1d");
	assert_true(r->status != 0);
	assert_false(has_rlo(r->err));
	assert_false(has_rlo(r->out));
	free(r);
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	r = ctl("grant", "revoke", ids, "--reason", "ended " RLO "early");
	assert_true(r->status != 0);
	assert_false(has_rlo(r->err));
	free(r);
	r = ctl("deny", "add", "--user", TU_USER_BOB, "--dataset", "bidi", "--reason",
		"abuse " RLO "suspected");
	assert_true(r->status != 0);
	assert_false(has_rlo(r->err));
	free(r);
	/* A hostile name in an error: a FIFO in the source tree is refused, naming it escaped. */
	{
		char *fifo = tu_fmt("%s/pipe" RLO "\x1b[31m", src);

		assert_int_equal(mkfifo(fifo, 0644), 0);
		r = ctl("dataset", "import", "bidi", src);
		assert_int_equal(r->status, 1);
		if (has_rlo(r->err) || strchr(r->err, '\x1b') || !strstr(r->err, "\\u202E"))
			fail_msg("import said: %s", r->err);
		free(r);
		free(fifo);
	}
	free(src);
	free(carol_key);
}

/* ---- 6. A group change reaches open files -------------------------------------------------------- */

struct group_job {
	const char *path;
	int ready_w;        /* child -> parent: open and read once */
	int go_r;           /* parent -> child: the membership is gone (one byte) */
};

#define GROUP_LIMIT_MS 1000     /* as a revocation: refused within a second */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* As dan, started while a member of TU_GROUP: read a file in a loop; from the moment the parent
 * says it is taking dan out of the group, the reads must fail with EACCES within GROUP_LIMIT_MS. */
static int child_group_reader(void *arg)
{
	const struct group_job *j = arg;
	char buf[4096];
	int64_t t0 = -1;
	uint64_t reads = 0;
	int fd = open(j->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "dan: open %s: %s\n", j->path, strerror(errno));
		return 1;
	}
	if (pread(fd, buf, sizeof(buf), 0) <= 0 || write(j->ready_w, "r", 1) != 1)
		return 2;
	for (uint64_t i = 0;; i++) {
		struct pollfd p = { .fd = j->go_r, .events = POLLIN };
		char c;

		if (t0 < 0 && poll(&p, 1, 1) == 1 && read(j->go_r, &c, 1) == 1)
			t0 = mono_ms();
		else if (t0 >= 0)
			poll(NULL, 0, 1);
		if (pread(fd, buf, sizeof(buf), (off_t)(i % 64) * 4096) < 0) {
			/* The parent says go before it removes dan: the byte is there by now. */
			if (t0 < 0 && poll(&p, 1, 0) == 1 && read(j->go_r, &c, 1) == 1)
				t0 = mono_ms();
			break;
		}
		reads++;
		if (t0 >= 0 && mono_ms() - t0 > GROUP_LIMIT_MS) {
			fprintf(stderr, "dan: still reading %lld ms after leaving the group\n",
				(long long)(mono_ms() - t0));
			return 3;
		}
		if (t0 < 0 && reads > 200000)
			return 4;
	}
	if (errno != EACCES || t0 < 0) {
		fprintf(stderr, "dan: read failed with %s %s\n", strerror(errno),
			t0 < 0 ? "before leaving the group" : "");
		return 5;
	}
	close(fd);
	return 0;
}

static void test_group_removal_stops_open_reader(void **state)
{
	char *src = tu_fmt("%s/src-grp", E->root);
	struct group_job j;
	int ready[2], go[2];
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(mkdir(src, 0755), 0);
	tu_seed_file(256 * 1024, 9, "%s/data.bin", src);
	free(e2e_ok(ctl("dataset", "import", "grpds", src)));
	e2e_grant("--group", TU_GROUP, "grpds", "+1h");
	assert_int_equal(tu_group_member(TU_USER_DAN, true), 0);
	dan_in_group = true;
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	j = (struct group_job){ .path = tu_fmt("%s/grpds/1/data.bin", E->mnt),
				.ready_w = ready[1], .go_r = go[0] };
	assert_int_equal(tu_spawn_as(&E->u.dan, child_group_reader, &j, &pid), 0);
	close(ready[1]);
	close(go[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	/* Out of the group, the job still holding it in its process credentials. The clock starts
	 * before gpasswd does. */
	assert_int_equal(write(go[1], "g", 1), 1);
	assert_int_equal(tu_group_member(TU_USER_DAN, false), 0);
	dan_in_group = false;
	assert_int_equal(tu_wait(pid, 30000), 0);
	close(ready[0]);
	close(go[1]);
	free((char *)j.path);
	free(src);
}

/* ---- access checks of oneself, rate-limited (#14, #15 point 7) ------------------------------- */

struct checks_sum {
	uint64_t checks;   /* "checks" of the refusals_suppressed records of the user */
	int n;             /* those records */
};

static int sum_checks(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct checks_sum *c = ctx;

	(void)line;
	(void)len;
	c->checks += (uint64_t)json_integer_value(json_object_get(rec, "checks"));
	c->n++;
	return 0;
}

/* A user without a role can ask why they are refused as often as they like: one access_check
 * record per distinct question per window, the others counted in the window's
 * refusals_suppressed record ("checks"), written when the window ends or the daemon stops. A
 * steward's checks are all recorded. */
static void test_access_checks_rate_limited(void **state)
{
	int alice0 = e2e_audit_count("access_check", TU_USER_ALICE, NULL, NULL, 0);
	int root0 = e2e_audit_count("access_check", "root", NULL, NULL, 0);
	struct checks_sum sum = { 0 };
	struct audit_filter flt = { .event = "refusals_suppressed", .user = TU_USER_ALICE };
	char *dir = tu_fmt("%s/audit", E->store);
	struct e2e_run *r;

	(void)state;
	/* (Questions no earlier test asked in this window: an earlier answer would count.) */
	for (int i = 0; i < 20; i++) {
		r = ctl_as(&E->u.alice, "access", "check", "--dataset", "local@1");
		assert_int_equal(r->status, 1);	/* deny: no grant */
		free(r);
	}
	/* Another question (a name that does not exist, answered as no_grant): one more. */
	for (int i = 0; i < 3; i++) {
		r = ctl_as(&E->u.alice, "access", "check", "--dataset", "no-such-dataset");
		assert_int_equal(r->status, 1);
		free(r);
	}
	for (int i = 0; i < 5; i++) {
		r = ctl("access", "check", "--user", TU_USER_ALICE, "--dataset", "local");
		assert_int_equal(r->status, 1);
		free(r);
	}
	assert_int_equal(e2e_audit_count("access_check", TU_USER_ALICE, NULL, NULL, 0), alice0 + 2);
	assert_int_equal(e2e_audit_count("access_check", "root", NULL, NULL, 0), root0 + 5);
	/* The rest are counted, written when the window ends (here: the daemon stops). */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	assert_int_equal(audit_opener_new(NULL, E->akey, &flt.open), 0);
	assert_int_equal(audit_foreach(dir, &flt, sum_checks, &sum), 0);
	audit_opener_free(flt.open);
	assert_int_equal(sum.n, 1);
	assert_int_equal(sum.checks, 20 - 1 + 3 - 1);
	e2e_daemon_start_with(E->pass, true);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_impostor_socket_gets_nothing),
		cmocka_unit_test(test_connection_flood_leaves_room_for_stewards),
		cmocka_unit_test(test_audit_dir_missing_or_symlinked_is_refused),
		cmocka_unit_test(test_names_and_counts_stay_hidden),
		cmocka_unit_test(test_hostile_names_are_escaped_on_screen),
		cmocka_unit_test(test_group_removal_stops_open_reader),
		cmocka_unit_test(test_access_checks_rate_limited),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
