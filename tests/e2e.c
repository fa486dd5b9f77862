/* e2e: the end-to-end harness (tests/e2e.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "audit/audit.h"
#include "common/common.h"
#include "common/err.h"
#include "tests/e2e.h"
#include "tests/testutil.h"

struct e2e *E;

/* ---- Running programs ------------------------------------------------------------------------ */


/* Drain both pipes until EOF. */
static void collect(int ofd, int efd, struct e2e_run *r)
{
	size_t on = 0, en = 0;
	struct pollfd p[2] = { { .fd = ofd, .events = POLLIN }, { .fd = efd, .events = POLLIN } };

	while (p[0].fd >= 0 || p[1].fd >= 0) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			char *buf = i ? r->err : r->out;
			size_t *n = i ? &en : &on;
			size_t cap = (i ? sizeof(r->err) : sizeof(r->out)) - 1;
			char sink[4096];
			ssize_t k;

			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (*n < cap)
				k = read(p[i].fd, buf + *n, cap - *n);
			else
				k = read(p[i].fd, sink, sizeof(sink));
			if (k <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
			} else if (*n < cap) {
				*n += (size_t)k;
			}
		}
	}
	r->out[on] = '\0';
	r->err[en] = '\0';
}

/* Run argv (NULL-terminated) as user u (NULL: as root) and collect its output. */
struct e2e_run *e2e_run_argv(const struct tu_user *u, char *const argv[])
{
	struct e2e_run *r = calloc(1, sizeof(*r));
	int o[2], e[2], st;
	pid_t pid;

	assert_non_null(r);
	assert_int_equal(pipe2(o, O_CLOEXEC), 0);
	assert_int_equal(pipe2(e, O_CLOEXEC), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(o[1], 1);
		dup2(e[1], 2);
		if (u && (initgroups(u->name, u->gid) < 0 || setgid(u->gid) < 0 ||
			  setuid(u->uid) < 0))
			_exit(TU_EXIT_SETUP);
		execv(argv[0], argv);
		_exit(127);
	}
	close(o[1]);
	close(e[1]);
	collect(o[0], e[0], r);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	return r;
}


/* Run and require exit 0; returns the run (free it). */
struct e2e_run *e2e_ok(struct e2e_run *r)
{
	if (r->status != 0)
		fprintf(stderr, "exit %d\nstdout: %s\nstderr: %s\n", r->status, r->out, r->err);
	assert_int_equal(r->status, 0);
	return r;
}

void e2e_ok_free(struct e2e_run *r)
{
	free(e2e_ok(r));
}

json_t *e2e_out_json(struct e2e_run *r)
{
	json_error_t e;
	json_t *j = json_loads(r->out, 0, &e);

	if (!j)
		fprintf(stderr, "not JSON (%s): %s\n", e.text, r->out);
	assert_non_null(j);
	return j;
}

/* ---- The daemon ------------------------------------------------------------------------------ */

bool e2e_is_mounted(const char *path)
{
	char line[8192];
	FILE *m = fopen("/proc/self/mountinfo", "re");
	bool found = false;

	if (!m)
		return false;
	while (!found && fgets(line, sizeof(line), m)) {
		char mp[4096];

		/* Field 5 is the mount point. */
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && strcmp(mp, path) == 0)
			found = true;
	}
	fclose(m);
	return found;
}

void e2e_print_daemon_log(void)
{
	size_t n = 0;
	uint8_t *log = tu_read_file(E->log, &n);

	fprintf(stderr, "--- daemon log ---\n%.*s--- end ---\n", (int)n, (char *)log);
	free(log);
}

/* A status request on the socket: true once the daemon answers. */
bool e2e_daemon_answers(void)
{
	struct e2e_run *r = ctl("status");
	bool up = r->status == 0;

	free(r);
	return up;
}

pid_t e2e_spawn_logged(char *const argv[], const char *log)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

		/* If this test program dies, the daemon is told to stop (and unmount). */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

void e2e_daemon_start_with(const char *passfile, bool expect_up)
{
	char *argv[32] = { ENCLAVED_PATH, "--store", E->store, "--mount", E->mnt,
			   "--passphrase-file", (char *)passfile };
	size_t n = 7;
	pid_t pid;

	for (size_t i = 0; E->daemon_args && E->daemon_args[i]; i++) {
		assert_true(n + 1 < ARRAY_SIZE(argv));
		argv[n++] = (char *)E->daemon_args[i];
	}
	argv[n] = NULL;

	pid = e2e_spawn_logged(argv, E->log);
	E->daemon = pid;
	if (!expect_up)
		return;
	for (int i = 0; i < 600; i++) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid) {
			E->daemon = 0;
			e2e_print_daemon_log();
			fail_msg("enclaved exited early (status 0x%x)", st);
		}
		if (e2e_is_mounted(E->mnt) && e2e_daemon_answers())
			return;
		poll(NULL, 0, 50);
	}
	e2e_print_daemon_log();
	fail_msg("enclaved did not come up within 30 s");
}

/* Stop the daemon: SIGTERM, then SIGKILL after 20 s. Returns its exit status (128 + signal when
 * killed), or -1 if none was running. Detaches the mount if the daemon left it behind. */
int e2e_daemon_stop_sig(int sig)
{
	int st = 0, status = -1;

	if (E->daemon > 0) {
		kill(E->daemon, sig);
		for (int i = 0; i < 400; i++) {
			if (waitpid(E->daemon, &st, WNOHANG) == E->daemon)
				break;
			if (i == 399) {
				kill(E->daemon, SIGKILL);
				waitpid(E->daemon, &st, 0);
			}
			poll(NULL, 0, 50);
		}
		status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		E->daemon = 0;
	}
	return status;
}

void e2e_cleanup_mount(void)
{
	if (e2e_is_mounted(E->mnt))
		umount2(E->mnt, MNT_DETACH);
}

/* ---- Set-up ---------------------------------------------------------------------------------- */

int e2e_setup(const char *name)
{
	const char *why = NULL;

	if (!tu_can_run_as_users(&why)) {
		fprintf(stderr, "%s: skipped: %s\n", name, why);
		exit(77);
	}
	E = calloc(1, sizeof(*E));
	if (!E || tu_users_ensure(&E->u) < 0)
		return -1;
	E->root = tu_mkdtemp(name);
	E->store = tu_fmt("%s/store", E->root);
	E->mnt = tu_fmt("%s/mnt", E->root);
	E->src = tu_fmt("%s/src", E->root);
	E->pass = tu_fmt("%s/passphrase", E->root);
	E->log = tu_fmt("%s/enclaved.log", E->root);
	E->akey = tu_fmt("%s/auditor.key", E->root);
	if (mkdir(E->mnt, 0755) < 0 || mkdir(E->src, 0755) < 0)
		return -1;
	/* The test users must reach the mount point and the socket. */
	if (tu_make_reachable(E->root) < 0)
		return -1;
	tu_write_file(E->pass, "e2e test passphrase\n", 20);
	chmod(E->pass, 0600);
	return 0;
}

int e2e_init(const char *const *args)
{
	char *argv[64] = { ENCLAVECTL_PATH, "init", "--store", E->store, "--passphrase-file",
			   E->pass, "--test-kdf", "--auditor-key-out", E->akey };
	size_t n = 9;
	struct e2e_run *r;
	int ret = 0;

	for (size_t i = 0; args && args[i]; i++) {
		assert_true(n + 1 < ARRAY_SIZE(argv));
		argv[n++] = (char *)args[i];
	}
	argv[n] = NULL;
	r = e2e_run_argv(NULL, argv);
	if (r->status != 0) {
		fprintf(stderr, "init failed: %s%s\n", r->out, r->err);
		ret = -1;
	}
	free(r);
	return ret;
}

char *e2e_auditor_key_for(const struct tu_user *u)
{
	char *path = tu_fmt("%s/auditor-%s.key", E->root, u->name);

	unlink(path);
	tu_copy_file(E->akey, path);
	assert_int_equal(chown(path, u->uid, u->gid), 0);
	assert_int_equal(chmod(path, 0600), 0);
	return path;
}

void e2e_teardown(void)
{
	if (!E)
		return;
	e2e_daemon_stop_sig(SIGTERM);
	if (E->mnt)
		e2e_cleanup_mount();
	if (E->root && getenv("ENCLAVE_TEST_KEEP") == NULL)
		tu_rm_rf(E->root);
}

/* ---- Policy and audit ------------------------------------------------------------------------ */

/* Grant via the CLI; returns the grant id. */
uint64_t e2e_grant(const char *kindflag, const char *who, const char *dataset,
	       const char *expires)
{
	struct e2e_run *r = e2e_ok(ctl("--json", "grant", "add", (char *)kindflag, (char *)who,
			       "--dataset", (char *)dataset, "--purpose",
			       "sepsis early-warning model training", "--expires",
			       (char *)expires));
	json_t *j = e2e_out_json(r);
	uint64_t id = (uint64_t)json_integer_value(json_object_get(json_object_get(j, "grant"),
								    "id"));

	assert_true(id > 0);
	json_decref(j);
	free(r);
	return id;
}

void e2e_revoke(uint64_t id)
{
	char ids[32];

	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	e2e_ok_free(ctl("grant", "revoke", ids, "--reason", "end of project"));
}

struct match {
	const char *event, *user, *reason, *dataset;
	uint64_t grant_id;
	int n;
};

static int match_one(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct match *m = ctx;
	const char *reason = json_string_value(json_object_get(rec, "reason"));

	(void)line;
	(void)len;
	if (m->reason && (!reason || strcmp(reason, m->reason) != 0))
		return 0;
	if (m->grant_id &&
	    (uint64_t)json_integer_value(json_object_get(rec, "grant_id")) != m->grant_id)
		return 0;
	m->n++;
	return 0;
}

/* How many audit records match (read offline from the log file, as an auditor's tool would). */
int e2e_audit_count(const char *event, const char *user, const char *dataset,
				const char *reason, uint64_t grant_id)
{
	char *dir = tu_fmt("%s/audit", E->store);
	struct audit_filter flt = { .event = event, .user = user, .dataset = dataset };
	struct match m = { .reason = reason, .grant_id = grant_id };
	int r;

	assert_int_equal(audit_opener_new(NULL, E->akey, &flt.open), 0);
	r = audit_foreach(dir, &flt, match_one, &m);
	if (r < 0)
		fprintf(stderr, "audit_foreach: %s\n", err_detail());
	assert_int_equal(r, 0);
	audit_opener_free(flt.open);
	free(dir);
	return m.n;
}


struct open_job {
	const char *path;
	int want_errno;   /* 0: must open */
};

static int child_open(void *arg)
{
	const struct open_job *job = arg;
	int fd = open(job->path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0)
		close(fd);
	if (job->want_errno ? fd < 0 && errno == job->want_errno : fd >= 0)
		return 0;
	fprintf(stderr, "%s: open gave %s, wanted %s\n", job->path,
		fd >= 0 ? "success" : strerror(errno),
		job->want_errno ? strerror(job->want_errno) : "success");
	return 1;
}

void e2e_opens_as(const struct tu_user *u, const char *path, int want_errno)
{
	struct open_job job = { .path = path, .want_errno = want_errno };

	assert_int_equal(tu_run_as(u, child_open, &job, 30000), 0);
}

/* Replace the flat directory to with a copy of from. */
static void replace_flat_dir(const char *from, const char *to)
{
	tu_rm_rf(to);
	tu_copy_flat_dir(from, to);
}

void e2e_index_save(const char *name)
{
	char *from = tu_fmt("%s/index", E->store), *to = tu_fmt("%s/%s", E->root, name);

	replace_flat_dir(from, to);
	free(from);
	free(to);
}

void e2e_index_restore(const char *name)
{
	char *from = tu_fmt("%s/%s", E->root, name), *to = tu_fmt("%s/index", E->store);

	replace_flat_dir(from, to);
	free(from);
	free(to);
}

struct see_job {
	const char *name;
	bool visible;
};

static int child_sees(void *arg)
{
	const struct see_job *job = arg;
	char path[4096];
	struct dirent *de;
	struct stat sb;
	bool listed = false;
	DIR *d = opendir(E->mnt);

	if (!d) {
		fprintf(stderr, "opendir %s: %s\n", E->mnt, strerror(errno));
		return 1;
	}
	while ((de = readdir(d)))
		listed |= strcmp(de->d_name, job->name) == 0;
	closedir(d);
	if (listed != job->visible) {
		fprintf(stderr, "%s %s in the listing\n", job->name, listed ? "is" : "is not");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/%s", E->mnt, job->name);
	errno = 0;
	if (job->visible ? stat(path, &sb) != 0 : (stat(path, &sb) == 0 || errno != ENOENT)) {
		fprintf(stderr, "stat %s: %s\n", path, errno ? strerror(errno) : "found");
		return 3;
	}
	return 0;
}

void e2e_sees_as(const struct tu_user *u, const char *name, bool visible)
{
	struct see_job job = { .name = name, .visible = visible };

	assert_int_equal(tu_run_as(u, child_sees, &job, 30000), 0);
}
