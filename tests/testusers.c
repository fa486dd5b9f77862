/* testusers: real users for tests, and running code as them in a forked child. */
#include "tests/testusers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Serialises user creation between test programs that ctest runs at once: useradd itself fails
 * ("cannot lock /etc/passwd") rather than waiting when another one holds the lock. /run is
 * root's; the lock file holds nothing. */
#define USERS_LOCK "/run/enclave-testusers.lock"
/* Held for the whole life of a test program whose ctest entry sets ENCLAVE_TEST_MEMBERSHIP_LOCK
 * (the programs that change, or count on, TU_GROUP's membership: tests/CMakeLists.txt). ctest's
 * RESOURCE_LOCK keeps them apart within one build tree only; the users are the machine's, so two
 * checkouts testing at once would otherwise see each other's gpasswd. */
#define MEMBERSHIP_LOCK "/run/enclave-testusers-membership.lock"
/* Where useradd and friends live when PATH (ctest's environment) does not name sbin. */
static const char *const sbin_dirs[] = { "/usr/sbin", "/sbin", "/usr/bin", "/bin" };

bool tu_can_run_as_users(const char **ret_why)
{
	const char *why = NULL;
	int fd;

	if (geteuid() != 0) {
		why = "not running as root (needed to switch users and mount FUSE)";
	} else {
		fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
		if (fd < 0)
			why = errno == ENOENT ? "no /dev/fuse" : "cannot open /dev/fuse";
		else
			close(fd);
	}
	if (ret_why)
		*ret_why = why;
	return why == NULL;
}

/* Run argv (argv[0] a bare tool name, looked for in the sbin directories, then PATH) and wait.
 * Returns its exit status, or -errno if it could not be run. */
static int run_tool(char *const argv[])
{
	int status = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char path[PATH_MAX];
		int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

		if (devnull >= 0)
			dup2(devnull, STDIN_FILENO);
		for (size_t i = 0; i < sizeof(sbin_dirs) / sizeof(sbin_dirs[0]); i++) {
			if (snprintf(path, sizeof(path), "%s/%s", sbin_dirs[i], argv[0]) <
			    (int)sizeof(path))
				execv(path, argv);
		}
		execvp(argv[0], argv);
		fprintf(stderr, "testusers: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return -EINTR;
}

int tu_user_get(const char *name, struct tu_user *ret_user)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	int e = getpwnam_r(name, &pw, buf, sizeof(buf), &res);

	if (e != 0)
		return -e;
	if (!res)
		return -ENOENT;
	if (strlen(name) >= sizeof(ret_user->name))
		return -ENAMETOOLONG;
	snprintf(ret_user->name, sizeof(ret_user->name), "%s", name);
	ret_user->uid = pw.pw_uid;
	ret_user->gid = pw.pw_gid;
	return 0;
}

static int group_get(const char *name, gid_t *ret_gid, bool *ret_has_carol)
{
	struct group gr, *res = NULL;
	char buf[16384];
	int e = getgrnam_r(name, &gr, buf, sizeof(buf), &res);

	if (e != 0)
		return -e;
	if (!res)
		return -ENOENT;
	*ret_gid = gr.gr_gid;
	*ret_has_carol = false;
	for (char **m = gr.gr_mem; m && *m; m++)
		if (strcmp(*m, TU_USER_CAROL) == 0)
			*ret_has_carol = true;
	return 0;
}

/* Create the user if absent: a system account with a group of its own name, no home, no login. */
static int ensure_user(const char *name, const char *extra_group)
{
	struct tu_user u;
	int r = tu_user_get(name, &u);

	if (r == 0)
		return 0;
	if (r != -ENOENT)
		return r;
	{
		char *argv_plain[] = { "useradd", "--system", "--user-group", "--no-create-home",
				       "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
				       "--comment", "enclave test user", (char *)name, NULL };
		char *argv_grp[] = { "useradd", "--system", "--user-group", "--no-create-home",
				     "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
				     "--comment", "enclave test user", "--groups",
				     (char *)extra_group, (char *)name, NULL };

		r = run_tool(extra_group ? argv_grp : argv_plain);
	}
	/* 9: the name is taken, by a concurrent creator that did not hold our lock. */
	if (r != 0 && r != 9) {
		fprintf(stderr, "testusers: useradd %s failed (%d)\n", name, r);
		return r < 0 ? r : -EIO;
	}
	return tu_user_get(name, &u);
}

static int ensure_all_locked(struct tu_users *ret)
{
	struct tu_users u;
	bool has_carol = false;
	int r;

	r = group_get(TU_GROUP, &u.grp, &has_carol);
	if (r == -ENOENT) {
		char *argv[] = { "groupadd", "--system", TU_GROUP, NULL };

		r = run_tool(argv);
		if (r != 0 && r != 9) {
			fprintf(stderr, "testusers: groupadd %s failed (%d)\n", TU_GROUP, r);
			return r < 0 ? r : -EIO;
		}
		r = group_get(TU_GROUP, &u.grp, &has_carol);
	}
	if (r < 0)
		return r;
	r = ensure_user(TU_USER_ALICE, NULL);
	if (r == 0)
		r = ensure_user(TU_USER_BOB, NULL);
	if (r == 0)
		r = ensure_user(TU_USER_CAROL, TU_GROUP);
	if (r == 0)
		r = ensure_user(TU_USER_DAN, NULL);
	if (r < 0)
		return r;
	/* Carol existed without the group (an older run, or someone removed her from it). */
	r = group_get(TU_GROUP, &u.grp, &has_carol);
	if (r == 0 && !has_carol) {
		char *argv[] = { "usermod", "--append", "--groups", TU_GROUP, TU_USER_CAROL, NULL };

		r = run_tool(argv);
		if (r != 0) {
			fprintf(stderr, "testusers: usermod -aG %s %s failed (%d)\n", TU_GROUP,
				TU_USER_CAROL, r);
			return r < 0 ? r : -EIO;
		}
		r = group_get(TU_GROUP, &u.grp, &has_carol);
		if (r == 0 && !has_carol)
			r = -EIO;
	}
	if (r == 0)
		r = tu_user_get(TU_USER_ALICE, &u.alice);
	if (r == 0)
		r = tu_user_get(TU_USER_BOB, &u.bob);
	if (r == 0)
		r = tu_user_get(TU_USER_CAROL, &u.carol);
	if (r == 0)
		r = tu_user_get(TU_USER_DAN, &u.dan);
	if (r < 0)
		return r;
	*ret = u;
	return 0;
}

/* Take MEMBERSHIP_LOCK once per process when asked to, and keep it until exit (O_CLOEXEC: the
 * daemons a test starts do not inherit it, so a daemon left behind cannot hold it). */
static void membership_lock(void)
{
	static int held = -1;

	if (held >= 0 || !getenv("ENCLAVE_TEST_MEMBERSHIP_LOCK"))
		return;
	held = open(MEMBERSHIP_LOCK, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (held < 0) {
		fprintf(stderr, "testusers: %s: %s (running without the machine-wide lock)\n",
			MEMBERSHIP_LOCK, strerror(errno));
		return;
	}
	while (flock(held, LOCK_EX) < 0 && errno == EINTR)
		;
}

int tu_users_ensure(struct tu_users *ret_users)
{
	int fd;
	int r;

	membership_lock();
	fd = open(USERS_LOCK, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		fd = open("/tmp/enclave-testusers.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
			  0600);
	if (fd >= 0)
		while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
			;
	r = ensure_all_locked(ret_users);
	if (fd >= 0)
		close(fd); /* releases the lock */
	if (r < 0)
		fprintf(stderr, "testusers: cannot set up the test users: %s\n", strerror(-r));
	return r;
}

/* In the child: become u for good. */
static int become(const struct tu_user *u)
{
	if (initgroups(u->name, u->gid) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0)
		return -errno;
	/* setuid() from root drops every id; check, and check that root cannot be regained. */
	if (getuid() != u->uid || geteuid() != u->uid || getgid() != u->gid ||
	    getegid() != u->gid || setuid(0) == 0)
		return -EPERM;
	return 0;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Kernel waits in which a thread holds no user-space lock mid-update: idle FUSE workers, condition
 * variables and semaphores, poll loops, sleeps. Matched as prefixes of /proc/.../wchan, whose
 * names differ a little between kernel versions. */
static const char *const idle_waits[] = {
	"futex_", "fuse_dev_", "do_epoll_wait", "ep_poll", "do_sys_poll", "poll_schedule",
	"do_select", "core_sys_select", "do_nanosleep", "hrtimer_nanosleep", "io_cqring_wait",
	"do_sigtimedwait", "sigsuspend", "pipe_read", "wait_woken",
};

static bool thread_idle(const char *tid)
{
	char path[288], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%s/stat", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true; /* gone */
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* the command name may hold anything, but not after its ')' */
	if (!p || p[1] != ' ' || p[2] != 'S')
		return false;
	snprintf(path, sizeof(path), "/proc/self/task/%s/wchan", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (size_t i = 0; i < sizeof(idle_waits) / sizeof(idle_waits[0]); i++)
		if (strncmp(buf, idle_waits[i], strlen(idle_waits[i])) == 0)
			return true;
	return false;
}

/* Wait (at most QUIESCE_MS) until every other thread of this process sleeps in one of the waits
 * above. fork() copies the memory of all threads but runs only the caller: a lock another thread
 * held at that instant stays held in the child for good. glibc's malloc locks itself around fork,
 * but GCC 12's AddressSanitizer allocator does not, and a test that serves FUSE in-process has
 * worker threads allocating whenever a request comes in; a child forked then can hang in its
 * first malloc. Forking while the others sleep makes that window tiny. In a single-threaded
 * process this returns at once. */
#define QUIESCE_MS 2000
static void quiesce_threads(void)
{
	char self[32];

	snprintf(self, sizeof(self), "%d", (int)gettid());
	for (int64_t end = mono_ms() + QUIESCE_MS; mono_ms() < end; poll(NULL, 0, 1)) {
		DIR *d = opendir("/proc/self/task");
		bool idle = true;

		if (!d)
			return;
		for (struct dirent *de; idle && (de = readdir(d));)
			if (de->d_name[0] != '.' && strcmp(de->d_name, self) != 0)
				idle = thread_idle(de->d_name);
		closedir(d);
		if (idle)
			return;
	}
}

int tu_spawn_as(const struct tu_user *u, int (*fn)(void *arg), void *arg, pid_t *ret_pid)
{
	pid_t pid;

	pid_t parent = getpid();

	fflush(NULL);
	quiesce_threads();
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int r = become(u);

		if (r < 0) {
			fprintf(stderr, "testusers: cannot become %s: %s\n", u->name, strerror(-r));
			_exit(TU_EXIT_SETUP);
		}
		/* Die with the test program, so a crashed test leaves no child behind. Set after
		 * the switch, which clears it (commit_creds), and then check the parent did not
		 * already go. The signal comes when the forking *thread* exits: spawn from a
		 * thread that outlives the child. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(TU_EXIT_SETUP);
		r = fn(arg);
		fflush(NULL);
		_exit(r & 0xff);
	}
	*ret_pid = pid;
	return 0;
}

/* Print where a stuck process is (its kernel stack and the syscall it is in), for the log. */
static void report_stuck(pid_t pid)
{
	static const char *const files[] = { "wchan", "syscall", "stack" };

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[64], buf[4096];
		ssize_t n = -1;
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, files[i]);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
		}
		if (n > 0) {
			buf[n] = '\0';
			fprintf(stderr, "testusers: child %d %s: %s%s", (int)pid, files[i], buf,
				buf[n - 1] == '\n' ? "" : "\n");
		}
	}
}

int tu_wait(pid_t pid, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;
	int status = 0;

	for (;;) {
		pid_t w = waitpid(pid, &status, timeout_ms < 0 ? 0 : WNOHANG);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return -errno;
		if (timeout_ms >= 0 && mono_ms() >= deadline) {
			fprintf(stderr, "testusers: child %d still running after %d ms: killing it\n",
				(int)pid, timeout_ms);
			report_stuck(pid);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			return -ETIMEDOUT;
		}
		if (w == 0)
			poll(NULL, 0, 5);
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -EIO;
}

int tu_run_as(const struct tu_user *u, int (*fn)(void *arg), void *arg, int timeout_ms)
{
	pid_t pid;
	int r = tu_spawn_as(u, fn, arg, &pid);

	return r < 0 ? r : tu_wait(pid, timeout_ms);
}

static int add_search_bit(const char *path)
{
	struct stat s;

	if (lstat(path, &s) < 0)
		return -errno;
	if (!S_ISDIR(s.st_mode))
		return -ENOTDIR;
	if ((s.st_mode & (S_IXGRP | S_IXOTH)) == (S_IXGRP | S_IXOTH))
		return 0;
	return chmod(path, (s.st_mode & 07777) | S_IXGRP | S_IXOTH) < 0 ? -errno : 0;
}

int tu_make_reachable(const char *dir)
{
	const char *base_env = getenv("ENCLAVE_TEST_TMPDIR");
	char real[PATH_MAX], base[PATH_MAX], cur[PATH_MAX];
	size_t blen;
	int r;

	if (!realpath(dir, real))
		return -errno;
	r = add_search_bit(real);
	if (r < 0)
		return r;
	/* Inside the test scratch area: open the way down from its top. */
	if (base_env && *base_env && realpath(base_env, base) && (blen = strlen(base)) > 1 &&
	    strncmp(real, base, blen) == 0 && real[blen] == '/') {
		r = add_search_bit(base);
		for (size_t i = blen + 1; r == 0 && real[i]; i++)
			if (real[i] == '/') {
				memcpy(cur, real, i);
				cur[i] = '\0';
				r = add_search_bit(cur);
			}
		if (r < 0)
			return r;
	}
	/* Every ancestor must let others through. */
	for (size_t i = strlen(real); i > 0; i--) {
		struct stat s;

		if (real[i] != '/' && real[i] != '\0')
			continue;
		memcpy(cur, real, i);
		cur[i] = '\0';
		if (stat(cur, &s) < 0)
			return -errno;
		if (!(s.st_mode & S_IXOTH)) {
			fprintf(stderr, "testusers: %s is not searchable by other users\n", cur);
			return -EACCES;
		}
	}
	return 0;
}

int tu_group_member(const char *user, bool member)
{
	char *argv[] = { "gpasswd", member ? "--add" : "--delete", (char *)user, TU_GROUP, NULL };
	int r = run_tool(argv);

	if (r != 0) {
		fprintf(stderr, "testusers: gpasswd %s %s %s failed (%d)\n", argv[1], user, TU_GROUP,
			r);
		return r < 0 ? r : -EIO;
	}
	return 0;
}
