/* test_cli: enclavectl as a black box.
 *
 * The built binary (ENCLAVECTL_PATH) runs in a child process with its output captured: usage and
 * exit statuses at every level; `init` against real directories; and the client side of the
 * control protocol against a fake daemon, a thread of this program listening on a Unix socket in
 * a scratch directory, which reads requests with common/proto, records them, and answers with
 * canned replies (or garbage). cmocka's asserts run only on the main thread: the fake records,
 * the test checks after the child has exited.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
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

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "common/timefmt.h"
#include "tests/testutil.h"

#ifndef ENCLAVECTL_PATH
#error "ENCLAVECTL_PATH must name the enclavectl binary under test"
#endif

#define RUN_TIMEOUT_MS 60000
#define OUTPUT_MAX (1u << 20)

/* ---- Running enclavectl -------------------------------------------------------------------- */

struct run {
	int status;        /* exit status, or 128 + signal */
	char *out;         /* stdout, NUL-terminated */
	char *err;         /* stderr, NUL-terminated */
};

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
	*r = (struct run){ 0 };
}

static void drain(int fd, struct buf *b, bool *open)
{
	char tmp[4096];
	ssize_t n = read(fd, tmp, sizeof(tmp));

	if (n <= 0) {
		*open = false;
		return;
	}
	assert_int_equal(buf_append(b, tmp, (size_t)n), 0);
}

static char *buf_string(struct buf *b)
{
	char *s = malloc(b->len + 1);

	assert_non_null(s);
	if (b->len)
		memcpy(s, b->data, b->len);
	s[b->len] = '\0';
	buf_free(b);
	return s;
}

/* Run enclavectl with the NULL-terminated arguments, stdin from /dev/null, $ENCLAVE_SOCKET unset,
 * and collect what it prints. tick (may be NULL) is called about every 20 ms while it runs. */
/* Set to run another program (bash, for the completion script) through the same harness. */
static const char *run_exe;

static void run_argv_tick(struct run *res, char *const *args, void (*tick)(pid_t pid, void *ctx),
			  void *ctx)
{
	char *argv[64] = { "enclavectl" };
	int out[2], err[2];
	struct buf bo, be;
	bool oo = true, eo = true;
	int64_t deadline;
	size_t n = 1;
	pid_t pid;
	int st;

	while (args[n - 1] && n < ARRAY_SIZE(argv) - 1) {
		argv[n] = args[n - 1];
		n++;
	}
	argv[n] = NULL;
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(pipe2(err, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

		if (null < 0 || dup2(null, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
			_exit(127);
		unsetenv("ENCLAVE_SOCKET");
		if (run_exe) {
			argv[0] = (char *)run_exe;
			execv(run_exe, argv);
		} else {
			execv(ENCLAVECTL_PATH, argv);
		}
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	buf_init(&bo, OUTPUT_MAX);
	buf_init(&be, OUTPUT_MAX);
	deadline = now_monotonic_ns() + (int64_t)RUN_TIMEOUT_MS * 1000000;
	while (oo || eo) {
		struct pollfd p[2] = { { .fd = oo ? out[0] : -1, .events = POLLIN },
				       { .fd = eo ? err[0] : -1, .events = POLLIN } };
		int left = (int)((deadline - now_monotonic_ns()) / 1000000);

		if (left <= 0) {
			kill(pid, SIGKILL);
			fail_msg("enclavectl %s did not finish in %d ms", argv[1], RUN_TIMEOUT_MS);
		}
		if (tick)
			tick(pid, ctx);
		if (poll(p, 2, MIN(left, 20)) <= 0)
			continue;
		if (p[0].revents)
			drain(out[0], &bo, &oo);
		if (p[1].revents)
			drain(err[0], &be, &eo);
	}
	close(out[0]);
	close(err[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	res->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	res->out = buf_string(&bo);
	res->err = buf_string(&be);
}

static void run_argv(struct run *res, char *const *args)
{
	run_argv_tick(res, args, NULL, NULL);
}

#define RUN(res, ...) run_argv((res), (char *const[]){ __VA_ARGS__, NULL })

/* Show what the command printed when an expectation fails. */
static void expect_status(const struct run *r, int status)
{
	if (r->status != status)
		fprintf(stderr, "--- exit %d, expected %d\n--- stdout:\n%s--- stderr:\n%s\n",
			r->status, status, r->out, r->err);
	assert_int_equal(r->status, status);
}

static void expect_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		fprintf(stderr, "--- expected to find \"%s\" in:\n%s\n", needle, hay);
	assert_non_null(strstr(hay, needle));
}

/* ---- The fake daemon ----------------------------------------------------------------------- */

struct fake;
/* Answer one request: op, its args (may be NULL) and the descriptor it carried (-1: none; the
 * caller closes it). */
typedef void (*fake_handler)(struct fake *f, int conn, const char *op, const json_t *args,
			     int fd);

#define FAKE_FILES_MAX 256

/* A file descriptor's content as the fake read it. */
struct fake_file {
	char path[256];
	uint8_t *data;
	size_t len;
	bool read_only;    /* the descriptor was opened O_RDONLY */
};

struct fake {
	char *dir;                     /* scratch directory holding the socket */
	char *sock;                    /* its path */
	int lfd;
	pthread_t thread;
	atomic_bool stop;
	fake_handler handle;
	/* Recorded by the thread; read by the test after fake_stop(). */
	json_t *log;                   /* [{"req": REQUEST, "fd": bool}] in arrival order */
	unsigned connections;
	struct fake_file files[FAKE_FILES_MAX];
	size_t nfiles;
	uint64_t files_done, bytes_done, dirs_done;
	/* A tree that changes after enclavectl walked it: the first import.dir (sent after the
	 * walk) replaces the file fifo_to_make with a FIFO, or the directory dir_to_swap with
	 * another one of the same name. */
	const char *fifo_to_make;
	const char *dir_to_swap;
	bool changed;                  /* done */
	bool refuse_begin;             /* h_import refuses import.begin ("busy") */
	int fds[PROTO_FDS_MAX];        /* the descriptors of the request being handled */
	size_t nfds;
	bool refuse_second;            /* h_import refuses the second file it is given */
	const char *stat_root;         /* h_import_stat checks each stat against the file here */
	bool compact;                  /* h_import_stat offers, and then wants, the compact form */
	const char *need_prefix;       /* h_import_stat also asks for every file named so */
	const char *vanish;            /* h_import_stat removes this file (under stat_root) as it
					* asks for it */
	unsigned dirs_waited;          /* h_import_stat: import.dir requests the client waited for
					* (the next request had not come 2 s later) */
	atomic_bool stalled;           /* h_import_stall is holding back an answer */
};

static void send_json(int conn, enum proto_frame_type type, json_t *j)
{
	if (j)
		proto_send(conn, type, j, -1);
	json_decref(j);
}

static void reply_ok(int conn, json_t *result)
{
	send_json(conn, PROTO_REPLY, json_pack("{s:b, s:o}", "ok", 1, "result",
					       result ? result : json_object()));
}

static void reply_error(int conn, const char *code, const char *message)
{
	send_json(conn, PROTO_REPLY, json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code",
					       code, "message", message));
}

static void fake_serve(struct fake *f, int conn)
{
	for (;;) {
		enum proto_frame_type type;
		json_t *msg = NULL, *args;
		const char *op;
		int r = proto_recv_fds(conn, 30000, &type, &msg, f->fds, PROTO_FDS_MAX, &f->nfds);

		if (r < 0)
			return;
		json_array_append_new(f->log, json_pack("{s:O, s:b}", "req", msg, "fd", f->nfds > 0));
		op = json_string_value(json_object_get(msg, "op"));
		args = json_object_get(msg, "args");
		if (type == PROTO_REQUEST && op)
			f->handle(f, conn, op, args, f->nfds ? f->fds[0] : -1);
		for (size_t i = 0; i < f->nfds; i++)
			close(f->fds[i]);
		f->nfds = 0;
		json_decref(msg);
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	while (!atomic_load(&f->stop)) {
		struct pollfd p = { .fd = f->lfd, .events = POLLIN };
		int conn;

		if (poll(&p, 1, 50) <= 0)
			continue;
		conn = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			continue;
		f->connections++;
		fake_serve(f, conn);
		close(conn);
	}
	return NULL;
}

static struct fake *fake_start(fake_handler handle)
{
	struct fake *f = calloc(1, sizeof(*f));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	assert_non_null(f);
	f->dir = tu_mkdtemp("cli");
	f->sock = tu_fmt("%s/control.sock", f->dir);
	assert_true(strlen(f->sock) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, f->sock, strlen(f->sock) + 1);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 8), 0);
	f->handle = handle;
	f->log = json_array();
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
	return f;
}

static void fake_stop(struct fake *f)
{
	atomic_store(&f->stop, true);
	assert_int_equal(pthread_join(f->thread, NULL), 0);
	close(f->lfd);
}

static void fake_free(struct fake *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->nfiles; i++)
		free(f->files[i].data);
	json_decref(f->log);
	tu_rm_rf(f->dir);
	free(f->dir);
	free(f->sock);
	free(f);
}

static size_t fake_nreq(const struct fake *f)
{
	return json_array_size(f->log);
}

static const char *fake_op(const struct fake *f, size_t i)
{
	return json_string_value(json_object_get(
		json_object_get(json_array_get(f->log, i), "req"), "op"));
}

static json_t *fake_args(const struct fake *f, size_t i)
{
	return json_object_get(json_object_get(json_array_get(f->log, i), "req"), "args");
}

static bool fake_had_fd(const struct fake *f, size_t i)
{
	return json_is_true(json_object_get(json_array_get(f->log, i), "fd"));
}

static const char *arg_str(const json_t *args, const char *key)
{
	return json_string_value(json_object_get(args, key));
}

static bool fake_saw(const struct fake *f, const char *op)
{
	for (size_t i = 0; i < fake_nreq(f); i++)
		if (strcmp(fake_op(f, i), op) == 0)
			return true;
	return false;
}

/* ---- Canned answers ------------------------------------------------------------------------ */

static const char datasets_json[] =
	"{\"datasets\": [{\"name\": \"genomes\", \"id\": 1, \"created\": \"2026-01-02T03:04:05Z\","
	" \"latest_version\": 3}, {\"name\": \"scans-2025\", \"id\": 2, \"created\":"
	" \"2026-02-03T04:05:06Z\", \"latest_version\": 1}]}";

static void h_list(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	(void)f;
	(void)args;
	(void)fd;
	if (strcmp(op, "dataset.list") == 0)
		reply_ok(conn, json_loads(datasets_json, 0, NULL));
	else
		reply_error(conn, "unknown_operation", "no such operation");
}

static void h_denied(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	(void)f;
	(void)op;
	(void)args;
	(void)fd;
	reply_error(conn, "permission_denied", "only stewards and auditors may list datasets");
}

static void h_garbage(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	static const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";

	(void)f;
	(void)op;
	(void)args;
	(void)fd;
	assert_true(write(conn, junk, sizeof(junk) - 1) > 0);
}

/* Keep one imported file. False when there is no room or fd is not a file. */
static bool fake_take_file(struct fake *f, const char *path, int fd)
{
	struct fake_file *ff;
	struct stat st;
	int fl;

	if (fd < 0 || f->nfiles == FAKE_FILES_MAX || fstat(fd, &st) < 0)
		return false;
	ff = &f->files[f->nfiles++];
	snprintf(ff->path, sizeof(ff->path), "%s", path ? path : "");
	fl = fcntl(fd, F_GETFL);
	ff->read_only = fl >= 0 && (fl & O_ACCMODE) == O_RDONLY;
	ff->data = malloc((size_t)st.st_size + 1);
	ff->len = ff->data ? (size_t)MAX(pread_full(fd, ff->data, (size_t)st.st_size, 0), 0) : 0;
	f->files_done++;
	f->bytes_done += ff->len;
	return true;
}

/* An importer: keeps every file's content, counts like the daemon would. */
static void h_import(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	(void)fd;   /* every descriptor of the request is in f->fds */
	if (strcmp(op, "import.begin") == 0) {
		if (f->refuse_begin)
			reply_error(conn, "busy", "another import is running in this store; try "
				    "again when it ends");
		else
			reply_ok(conn, NULL);
	} else if (strcmp(op, "import.dir") == 0) {
		if (!f->changed && f->fifo_to_make) {
			assert_int_equal(unlink(f->fifo_to_make), 0);
			assert_int_equal(mkfifo(f->fifo_to_make, 0600), 0);
		}
		if (!f->changed && f->dir_to_swap) {
			char *old = tu_fmt("%s.old", f->dir_to_swap);

			assert_int_equal(rename(f->dir_to_swap, old), 0);
			assert_int_equal(mkdir(f->dir_to_swap, 0755), 0);
			tu_seed_file(10, 9, "%s/b.bin", f->dir_to_swap);
			free(old);
		}
		f->changed = true;
		f->dirs_done++;
		reply_ok(conn, NULL);
	} else if (strcmp(op, "import.file") == 0 || strcmp(op, "import.files") == 0) {
		const json_t *paths = json_object_get(args, "paths");
		bool batch = strcmp(op, "import.files") == 0;
		size_t n = batch ? json_array_size(paths) : 1;

		if (n != f->nfds || n == 0) {
			reply_error(conn, "invalid_argument", "one descriptor per file");
			return;
		}
		for (size_t i = 0; i < n; i++) {
			if (f->refuse_second && f->files_done == 1) {
				f->files_done++;
				reply_error(conn, "io_error",
					    "source file changed size while it was read");
				return;
			}
			if (!fake_take_file(f, batch ? json_string_value(json_array_get(paths, i))
						     : arg_str(args, "path"),
					    f->fds[i])) {
				reply_error(conn, "invalid_argument", "import.file needs a descriptor");
				return;
			}
		}
		/* A progress frame before the answer, as the daemon sends for big files. */
		send_json(conn, PROTO_PARTIAL,
			  json_pack("{s:{s:I, s:I, s:I}}", "progress", "files",
				    (json_int_t)f->files_done - 1, "dirs", (json_int_t)f->dirs_done,
				    "bytes", (json_int_t)f->bytes_done));
		reply_ok(conn, json_pack("{s:I, s:I, s:I}", "files", (json_int_t)f->files_done,
					 "dirs", (json_int_t)f->dirs_done, "bytes",
					 (json_int_t)f->bytes_done));
	} else if (strcmp(op, "import.commit") == 0) {
		reply_ok(conn, json_pack("{s:s, s:i, s:I, s:I, s:I}", "dataset", "genomes",
					 "version", 1, "files", (json_int_t)f->files_done, "dirs",
					 (json_int_t)f->dirs_done, "bytes",
					 (json_int_t)f->bytes_done));
	} else if (strcmp(op, "import.abort") == 0) {
		reply_ok(conn, NULL);
	} else if (strcmp(op, "whoami") == 0) {
		/* The import's keep-alive during its walk. */
		reply_ok(conn, json_pack("{s:s, s:i, s:[s]}", "user", "root", "uid", 0, "roles",
					 "steward"));
	} else {
		reply_error(conn, "unknown_operation", "no such operation");
	}
}

/* The files of an import.stat request as "path" -> [dev, ino, size, mode, mtime_ns, ctime_ns],
 * in order, from either form; NULL when it is not of the form the fake wants (f->compact). The
 * compact form is decoded here by hand (libsodium's base64, the varints written out), not with
 * the project's decoder. */
static json_t *stat_request_files(const struct fake *f, const json_t *args)
{
	json_t *out = json_array();

	if (!f->compact) {
		const json_t *paths = json_object_get(args, "paths");
		const json_t *stats = json_object_get(args, "stats");

		if (json_object_get(args, "names") || !json_is_array(paths) ||
		    json_array_size(paths) != json_array_size(stats)) {
			json_decref(out);
			return NULL;
		}
		for (size_t i = 0; i < json_array_size(paths); i++)
			json_array_append_new(out, json_pack("[O, O]", json_array_get(paths, i),
							     json_array_get(stats, i)));
		return out;
	}
	const char *dir = json_string_value(json_object_get(args, "dir"));
	const char *names = json_string_value(json_object_get(args, "names"));
	const char *stats = json_string_value(json_object_get(args, "stats64"));
	uint64_t prev[4] = { 0 };   /* dev, ino, mode, mtime of the file before */
	uint8_t *bin;
	size_t blen = 0, pos = 0, i = 0;
	char *copy, *nm, *slash;

	if (json_object_get(args, "paths") || json_object_get(args, "stats") || !dir || !names ||
	    !stats) {
		json_decref(out);
		return NULL;
	}
	bin = malloc(strlen(stats) + 1);
	assert_non_null(bin);
	if (sodium_base642bin(bin, strlen(stats) + 1, stats, strlen(stats), NULL, &blen, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0) {
		free(bin);
		json_decref(out);
		return NULL;
	}
	copy = tu_fmt("%s", names);
	for (nm = copy; nm && out; nm = slash ? slash + 1 : NULL, i++) {
		uint64_t v[6];
		char *path;

		slash = strchr(nm, '/');
		if (slash)
			*slash = '\0';
		/* Six LEB128 varints: deltas of dev, ino, zigzag; the size; deltas of mode and
		 * mtime; the ctime against the mtime. */
		for (unsigned k = 0; k < 6 && out; k++) {
			unsigned shift = 0;

			v[k] = 0;
			do {
				if (pos == blen || shift > 63) {
					json_decref(out);
					out = NULL;
					break;
				}
				v[k] |= (uint64_t)(bin[pos] & 0x7f) << shift;
				shift += 7;
			} while (bin[pos++] & 0x80);
			if (k != 2)
				v[k] = (v[k] >> 1) ^ (0 - (v[k] & 1));
		}
		if (!out)
			break;
		prev[0] += v[0];
		prev[1] += v[1];
		prev[2] += v[3];
		prev[3] += v[4];
		path = *dir ? tu_fmt("%s/%s", dir, nm) : tu_fmt("%s", nm);
		json_array_append_new(out, json_pack("[s, [I, I, I, I, I, I]]", path,
						     (json_int_t)prev[0], (json_int_t)prev[1],
						     (json_int_t)v[2], (json_int_t)prev[2],
						     (json_int_t)prev[3],
						     (json_int_t)(prev[3] + v[5])));
		free(path);
	}
	if (out && pos != blen) {
		json_decref(out);
		out = NULL;
	}
	free(bin);
	free(copy);
	return out;
}

/* A daemon with a version to share from (issue 16): import.begin says "stamps" (and, with
 * f->compact, "stat_compact"), and of every import.stat batch it takes the files as held but
 * "empty" and "sub/b.bin", which it asks for ("need") and which must then come with their
 * descriptors.
 * A stat that claims anything else than a regular file of the file's size is refused. */
static void h_import_stat(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	if (strcmp(op, "import.begin") == 0) {
		reply_ok(conn, json_pack("{s:b, s:b}", "stamps", 1, "stat_compact", f->compact));
	} else if (strcmp(op, "import.stat") == 0) {
		json_t *files = stat_request_files(f, args);
		json_t *need = json_array();

		if (f->nfds || !files) {
			reply_error(conn, "invalid_argument", "import.stat: no descriptor, one stat "
				    "per path, in the form offered");
			json_decref(need);
			json_decref(files);
			return;
		}
		for (size_t i = 0; i < json_array_size(files); i++) {
			const json_t *fe = json_array_get(files, i);
			const char *p = json_string_value(json_array_get(fe, 0));
			const json_t *a = json_array_get(fe, 1);
			char *src = tu_fmt("%s/%s", f->stat_root, p);
			struct stat sb;

			/* [dev, ino, size, mode, mtime_ns, ctime_ns] as lstat says. */
			assert_int_equal(lstat(src, &sb), 0);
			free(src);
			if (json_array_size(a) != 6 ||
			    (uint64_t)json_integer_value(json_array_get(a, 0)) != sb.st_dev ||
			    (uint64_t)json_integer_value(json_array_get(a, 1)) != sb.st_ino ||
			    json_integer_value(json_array_get(a, 2)) != sb.st_size ||
			    json_integer_value(json_array_get(a, 3)) != sb.st_mode ||
			    json_integer_value(json_array_get(a, 4)) !=
				    (json_int_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec ||
			    json_integer_value(json_array_get(a, 5)) !=
				    (json_int_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec) {
				reply_error(conn, "invalid_argument", "a stat that is not the file's");
				json_decref(need);
				json_decref(files);
				return;
			}
			const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;

			if (strcmp(p, "empty") == 0 || strcmp(p, "sub/b.bin") == 0 ||
			    (f->need_prefix &&
			     strncmp(base, f->need_prefix, strlen(f->need_prefix)) == 0)) {
				if (f->vanish && strcmp(p, f->vanish) == 0) {
					char *gone = tu_fmt("%s/%s", f->stat_root, p);

					assert_int_equal(unlink(gone), 0);
					free(gone);
				}
				json_array_append_new(need, json_integer((json_int_t)i));
			} else {
				f->files_done++;
				f->bytes_done += (uint64_t)sb.st_size;
			}
		}
		json_decref(files);
		reply_ok(conn, json_pack("{s:I, s:I, s:I, s:o}", "files", (json_int_t)f->files_done,
					 "dirs", (json_int_t)f->dirs_done, "bytes",
					 (json_int_t)f->bytes_done, "need", need));
	} else {
		/* Is import.dir in flight, the client's next request sent without its answer? */
		if (strcmp(op, "import.dir") == 0 && f->need_prefix) {
			struct pollfd pf = { .fd = conn, .events = POLLIN };

			if (poll(&pf, 1, 2000) != 1)
				f->dirs_waited++;
		}
		h_import(f, conn, op, args, fd);
	}
}

/* Refuses the second file it is given. */
static void h_import_refuse(struct fake *f, int conn, const char *op, const json_t *args,
			    int fd)
{
	f->refuse_second = true;
	h_import(f, conn, op, args, fd);
}

/* Never answers an import.file: it waits until the client hangs up (or 20 s pass). */
static void h_import_stall(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	struct pollfd p = { .fd = conn, .events = POLLIN };

	if (strcmp(op, "import.file") != 0 && strcmp(op, "import.files") != 0) {
		h_import(f, conn, op, args, fd);
		return;
	}
	atomic_store(&f->stalled, true);
	poll(&p, 1, 20000);
}

static void h_grant(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	(void)f;
	(void)fd;
	if (strcmp(op, "grant.add") == 0) {
		reply_ok(conn, json_pack("{s:{s:i, s:s, s:i, s:s, s:i, s:s, s:I, s:s, s:s, s:s, "
					 "s:s, s:i, s:s, s:s}}",
					 "grant", "id", 12, "kind", arg_str(args, "principal_kind"),
					 "principal_id", 1000, "principal",
					 arg_str(args, "principal"), "dataset_id", 1, "dataset",
					 arg_str(args, "dataset"), "version",
					 json_integer_value(json_object_get(args, "version")),
					 "purpose", arg_str(args, "purpose"), "not_before",
					 arg_str(args, "not_before") ?: "2026-11-21T09:00:00Z",
					 "expires", arg_str(args, "expires"), "granted_by", "root",
					 "granted_by_uid", 0, "created", "2026-11-21T09:00:00Z",
					 "extra", "x"));
	} else if (strcmp(op, "grant.list") == 0) {
		reply_ok(conn, json_loads(
			"{\"grants\": [{\"id\": 3, \"kind\": \"group\", \"principal\": \"ml-team\","
			" \"dataset\": \"genomes\", \"version\": 0, \"state\": \"active\","
			" \"not_before\": \"2026-01-01T00:00:00Z\", \"expires\":"
			" \"2027-01-01T00:00:00Z\", \"purpose\": \"training the variant caller on"
			" cohort A, phase two, with the approval of the ethics board\"},"
			" {\"id\": 7, \"kind\": \"user\", \"principal\": \"alice\", \"dataset\":"
			" \"scans-2025\", \"version\": 2, \"state\": \"revoked\", \"not_before\":"
			" \"2026-01-01T00:00:00Z\", \"expires\": \"2026-06-01T00:00:00Z\","
			" \"purpose\": \"qc\"}]}", 0, NULL));
	} else if (strcmp(op, "grant.revoke") == 0) {
		reply_error(conn, "not_found", "no grant with id 7");
	} else {
		reply_error(conn, "unknown_operation", "no such operation");
	}
}

static const char *const audit_records[] = {
	"{\"event\":\"open\",\"dataset\":\"genomes\",\"version\":3,\"path\":\"/train/0001.tar\","
	"\"uid\":1000,\"user\":\"alice\",\"decision\":\"allow\",\"grant_id\":3,\"seq\":5,"
	"\"time\":\"2026-11-21T09:00:00.000000001Z\"}",
	"{\"event\":\"open\",\"dataset\":\"genomes\",\"version\":3,\"path\":\"/train/0002.tar\","
	"\"uid\":1001,\"user\":\"bob\",\"decision\":\"deny\",\"reason\":\"no_grant\",\"seq\":6,"
	"\"time\":\"2026-11-21T09:00:01.000000000Z\"}",
	"{\"event\":\"close\",\"dataset\":\"genomes\",\"version\":3,\"path\":\"/train/0001.tar\","
	"\"uid\":1000,\"user\":\"alice\",\"bytes\":1048576,\"seq\":7,"
	"\"time\":\"2026-11-21T09:00:02.000000000Z\"}",
};

static void h_audit(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	(void)f;
	(void)args;
	(void)fd;
	if (strcmp(op, "audit.show") != 0) {
		reply_error(conn, "unknown_operation", "no such operation");
		return;
	}
	/* Two streamed batches, then the count. */
	for (size_t b = 0; b < 2; b++) {
		json_t *list = json_array();

		for (size_t i = b ? 2 : 0; i < (b ? 3u : 2u); i++)
			json_array_append_new(list, json_loads(audit_records[i], 0, NULL));
		send_json(conn, PROTO_PARTIAL, json_pack("{s:o}", "records", list));
	}
	reply_ok(conn, json_pack("{s:i}", "count", 3));
}

/* ---- Usage --------------------------------------------------------------------------------- */

/* The import's ETA counts files as well as bytes: with the big files done and most of the
 * (small) files left it is not 00:00 (issue 15, point 14). */
static void test_progress_eta(void **state)
{
	(void)state;
	/* Nothing to go by yet. */
	assert_true(progress_eta(0, 100, 0, 1000, 5) < 0);
	assert_true(progress_eta(10, 100, 10, 1000, 0.5) < 0);
	/* 99 % of the bytes in 10 of 10,000 files, after 10 s: bytes alone would say 0.1 s. */
	assert_true(progress_eta(10, 10000, 990, 1000, 10) > 9000);
	/* Files alone would say 0 s while bytes remain. */
	assert_true(progress_eta(100, 100, 500, 1000, 10) > 9);
	assert_true(progress_eta(100, 100, 500, 1000, 10) < 11);
	/* Both agree: half of each in 10 s, 10 s left. */
	assert_true(progress_eta(50, 100, 500, 1000, 10) > 9.9);
	assert_true(progress_eta(50, 100, 500, 1000, 10) < 10.1);
	/* Done. */
	assert_true(progress_eta(100, 100, 1000, 1000, 10) == 0);
}

static void test_help_every_level(void **state)
{
	static const char *const levels[][4] = {
		{ "--help" }, { "-h" },
		{ "dataset", "--help" }, { "grant", "-h" }, { "audit", "--help" },
		{ "init", "--help" }, { "status", "--help" }, { "whoami", "-h" },
		{ "dataset", "list", "--help" }, { "dataset", "show", "--help" },
		{ "dataset", "import", "--help" }, { "grant", "add", "--help" },
		{ "grant", "list", "-h" }, { "grant", "revoke", "--help" },
		{ "audit", "show", "--help" },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
		char *argv[5] = { 0 };
		struct run r;

		for (size_t k = 0; k < 4 && levels[i][k]; k++)
			argv[k] = (char *)levels[i][k];
		run_argv(&r, argv);
		expect_status(&r, 0);
		expect_contains(r.out, "Usage: enclavectl");
		assert_string_equal(r.err, "");
		run_free(&r);
	}
}

/* The steward is told that a new version stores only what changed, and how that is found. */
static void test_import_help_says_versions_share_files(void **state)
{
	struct run r;

	(void)state;
	RUN(&r, "dataset", "import", "--help");
	expect_status(&r, 0);
	expect_contains(r.out, "Versions share unchanged files");
	expect_contains(r.out, "never a plain hash");
	if (strstr(r.out, "stores every byte again") || strstr(r.out, "no deduplication"))
		fail_msg("the help still says every version is stored in full");
	run_free(&r);
}

static void test_usage_errors(void **state)
{
	/* Every one of these is refused before any connection: the socket does not exist. */
	static const char *const bad[][12] = {
		{ NULL },
		{ "frobnicate" },
		{ "--frobnicate" },
		{ "dataset" },
		{ "dataset", "frobnicate" },
		{ "dataset", "list", "--frobnicate" },
		{ "dataset", "list", "extra" },
		{ "dataset", "show" },
		{ "dataset", "show", "bad/name" },
		{ "dataset", "show", "genomes@x" },
		{ "dataset", "import", "genomes" },
		{ "dataset", "import", "genomes", "/tmp", "--chunk-size", "3K" },
		{ "grant", "add", "--user", "alice", "--dataset", "genomes", "--purpose", "p" },
		{ "grant", "add", "--user", "alice", "--group", "g", "--dataset", "genomes",
		  "--purpose", "p", "--expires", "+1d" },
		{ "grant", "add", "--user", "alice", "--dataset", "genomes", "--purpose", "p",
		  "--expires", "next tuesday" },
		{ "grant", "add", "--user", "alice", "--dataset", "genomes", "--purpose", "p",
		  "--expires", "2001-01-01" },
		{ "grant", "revoke" },
		{ "grant", "revoke", "seven" },
		{ "grant", "revoke", "0" },
		{ "grant", "show", "+5" },
		{ "grant", "approve", "9223372036854775808" },
		{ "deny", "show", "-1" },
		{ "export", "approve", " 7" },
		{ "export", "show", "+7" },
		{ "export", "run", "7x" },
		{ "node", "approve", "+3" },
		{ "node", "approve", "0" },
		{ "grant", "list", "--socket" },
		{ "audit", "show", "--limit", "-1" },
		{ "init" },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *argv[16] = { "--socket", "/nonexistent/enclave.sock" };
		struct run r;
		size_t k;

		for (k = 0; k < 12 && bad[i][k]; k++)
			argv[2 + k] = (char *)bad[i][k];
		run_argv(&r, argv);
		expect_status(&r, 2);
		expect_contains(r.err, "enclavectl: ");
		expect_contains(r.err, "--help");
		assert_string_equal(r.out, "");
		run_free(&r);
	}
}

static void test_missing_expires_says_so(void **state)
{
	struct run r;

	(void)state;
	RUN(&r, "grant", "add", "--user", "alice", "--dataset", "genomes", "--purpose", "p");
	expect_status(&r, 2);
	expect_contains(r.err, "--expires");
	run_free(&r);
}

static void test_version(void **state)
{
	struct run r;

	(void)state;
	RUN(&r, "--version");
	expect_status(&r, 0);
	assert_int_equal(strncmp(r.out, "enclavectl ", 11), 0);
	run_free(&r);
}

static void test_no_daemon(void **state)
{
	struct run r;
	char *dir = tu_mkdtemp("cli");
	char *sock = tu_fmt("%s/run/control.sock", dir);

	(void)state;
	RUN(&r, "--socket", sock, "dataset", "list");
	expect_status(&r, 1);
	expect_contains(r.err, "not running");
	expect_contains(r.err, sock);
	expect_contains(r.err, "enclaved --store");
	run_free(&r);
	tu_rm_rf(dir);
	free(sock);
	free(dir);
}

/* ---- init ---------------------------------------------------------------------------------- */

struct init_fx {
	char *root;
	char *store;
	char *pass;
};

static int init_setup(void **state)
{
	struct init_fx *f = calloc(1, sizeof(*f));

	f->root = tu_mkdtemp("cli-init");
	f->store = tu_fmt("%s/store", f->root);
	f->pass = tu_fmt("%s/passphrase", f->root);
	tu_write_file(f->pass, "correct horse battery staple\n", 29);
	assert_int_equal(chmod(f->pass, 0600), 0);
	*state = f;
	return 0;
}

static int init_teardown(void **state)
{
	struct init_fx *f = *state;

	tu_rm_rf(f->root);
	free(f->root);
	free(f->store);
	free(f->pass);
	free(f);
	return 0;
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode & 07777;
}

static char *read_text(const char *path)
{
	size_t n;
	uint8_t *b = tu_read_file(path, &n);

	b[n] = '\0';
	return (char *)b;
}

static void test_init_creates_store(void **state)
{
	struct init_fx *f = *state;
	char *marker, *conf, *p;
	struct run r;
	size_t n;

	RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf",
	    "--steward", "user:root", "--steward", "group:0", "--auditor", "group:root",
	    "--visa-issuer", "https://dac.example.org/enclave");
	expect_status(&r, 0);
	expect_contains(r.out, "keys/visa.key");
	expect_contains(r.err, "tests and demos only");
	expect_contains(r.out, f->store);
	expect_contains(r.out, "enclaved --store");
	/* The audit signing key, named after this host; its verifier key is printed. */
	expect_contains(r.out, "/enclave+");
	run_free(&r);

	p = tu_fmt("%s/keys/audit.key", f->store);
	assert_int_equal(mode_of(p), 0600);
	free(p);
	p = tu_fmt("%s/keys/visa.key", f->store);
	assert_int_equal(mode_of(p), 0600);
	free(p);
	p = tu_fmt("%s/ENCLAVE", f->store);
	marker = read_text(p);
	assert_string_equal(marker, "enclave-store 1\n");
	free(marker);
	free(p);
	p = tu_fmt("%s/keys/master.key", f->store);
	free(tu_read_file(p, &n));
	assert_int_equal(n, 120);
	assert_int_equal(mode_of(p), 0600);
	free(p);
	p = tu_fmt("%s/enclave.conf", f->store);
	conf = read_text(p);
	assert_int_equal(mode_of(p), 0644);
	expect_contains(conf, "\nsteward = user:root\n");
	expect_contains(conf, "\nsteward = group:0\n");
	expect_contains(conf, "\nauditor = group:root\n");
	expect_contains(conf, "\nvisa_issuer = https://dac.example.org/enclave\n");
	free(conf);
	free(p);
	p = tu_fmt("%s/run", f->store);
	assert_int_equal(mode_of(p), 0755);
	free(p);
	assert_int_equal(mode_of(f->store), 0711);
	p = tu_fmt("%s/keys", f->store);
	assert_int_equal(mode_of(p), 0700);
	free(p);
}

static void test_init_default_steward(void **state)
{
	struct init_fx *f = *state;
	struct passwd *pw = getpwuid(getuid());
	char *conf, *p, *line;
	struct run r;

	RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf");
	expect_status(&r, 0);
	run_free(&r);
	p = tu_fmt("%s/enclave.conf", f->store);
	conf = read_text(p);
	line = pw ? tu_fmt("\nsteward = user:%s\n", pw->pw_name)
		  : tu_fmt("\nsteward = user:%u\n", (unsigned)getuid());
	expect_contains(conf, line);
	assert_null(strstr(conf, "auditor"));
	free(line);
	free(conf);
	free(p);
}

/* Every name in dir with its size and mode, to compare before and after. */
static char *snapshot(const char *dir)
{
	static const char *const names[] = { "ENCLAVE", "LOCK", "enclave.conf", "keys/master.key",
					     "run", "keys", "packs", "index", "." };
	struct buf b;

	buf_init(&b, 1 << 16);
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		char *p = tu_fmt("%s/%s", dir, names[i]), line[512];
		struct stat st;
		int n;

		if (lstat(p, &st) < 0)
			n = snprintf(line, sizeof(line), "%s missing\n", names[i]);
		else
			n = snprintf(line, sizeof(line), "%s %o %lld %lld.%09ld\n", names[i],
				     st.st_mode, (long long)st.st_size,
				     (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
		assert_int_equal(buf_append(&b, line, (size_t)n), 0);
		free(p);
	}
	return buf_string(&b);
}

static void test_init_twice_changes_nothing(void **state)
{
	struct init_fx *f = *state;
	char *before, *after, *key1, *key2, *p;
	size_t n1, n2;
	struct run r;

	RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf");
	expect_status(&r, 0);
	run_free(&r);
	p = tu_fmt("%s/keys/master.key", f->store);
	key1 = (char *)tu_read_file(p, &n1);
	before = snapshot(f->store);

	RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf",
	    "--steward", "user:root");
	expect_status(&r, 1);
	expect_contains(r.err, "not empty");
	run_free(&r);

	after = snapshot(f->store);
	assert_string_equal(before, after);
	key2 = (char *)tu_read_file(p, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(key1, key2, n1);
	free(key1);
	free(key2);
	free(before);
	free(after);
	free(p);
}

static void test_init_refuses_readable_passphrase(void **state)
{
	static const mode_t modes[] = { 0640, 0604, 0620 };
	struct init_fx *f = *state;
	struct run r;

	for (size_t i = 0; i < ARRAY_SIZE(modes); i++) {
		assert_int_equal(chmod(f->pass, modes[i]), 0);
		RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf");
		expect_status(&r, 1);
		expect_contains(r.err, "private");
		assert_int_equal(access(f->store, F_OK), -1);
		run_free(&r);
	}
}

/* An unknown user or group is a failure (exit 1: the command is well-formed, the name does not
 * resolve); a SPEC that is not user:NAME / group:NAME, or a NAME the configuration file could
 * not carry, is a usage error (exit 2). Either way nothing is created. */
/* 201 characters: one more than an audit key name may have (and not cut to fit). */
#define LONG_NAME                                                                                 \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
	"aaaaaaaaaaaaaaaaa"

static void test_init_bad_steward(void **state)
{
	static const struct {
		const char *opt, *spec;
		int status;
		const char *says;
	} cases[] = {
		{ "--steward", "user:no-such-user-enclave-test", 1, "no such user" },
		{ "--auditor", "group:no-such-group-enclave-test", 1, "no such group" },
		{ "--steward", "alice", 2, "user:NAME or group:NAME" },
		{ "--steward", "role:root", 2, "user:NAME or group:NAME" },
		{ "--steward", "user:", 2, "1 to 64 bytes" },
		{ "--steward", "user:ro ot", 2, "blanks" },
		{ "--steward", "user:root\nsteward = user:mallory", 2, "control" },
		{ "--auditor", "user:12ab", 2, "decimal id" },
		{ "--auditor", "user:4294967295", 2, "decimal id" },
		{ "--audit-name", "has space", 2, "no spaces" },
		{ "--audit-name", "a+b", 2, "no '+'" },
		{ "--audit-name", "", 2, "printable ASCII" },
		{ "--audit-name", LONG_NAME, 2, "at most 200" },
		{ "--approvals", "9", 2, "from 0 to 8" },
		{ "--max-grant-days", "0", 2, "from 1 to 3650" },
		{ "--visa-issuer", "dac.example.org", 2, "https://" },
		{ "--visa-issuer", "https://dac.example.org/", 2, "trailing '/'" },
	};
	struct init_fx *f = *state;
	struct run r;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf",
		    (char *)cases[i].opt, (char *)cases[i].spec);
		expect_status(&r, cases[i].status);
		expect_contains(r.err, cases[i].says);
		assert_int_equal(access(f->store, F_OK), -1);
		run_free(&r);
	}
}

/* approvals = N needs N stewards besides the requester: init warns when fewer people hold the
 * role (it still creates the store: the directory may grow). Enough people, or approvals 0: no
 * warning. */
static void test_init_warns_few_stewards(void **state)
{
	struct init_fx *f = *state;
	struct run r;

	RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf",
	    "--steward", "user:root", "--steward", "user:0", "--approvals", "1");
	expect_status(&r, 0);
	expect_contains(r.err, "warning: approvals = 1 needs 1 steward(s) besides");
	expect_contains(r.err, "held by 1 user(s)");
	run_free(&r);
	tu_rm_rf(f->store);
	/* Two people (root and daemon) for one approval; none needed. */
	RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf",
	    "--steward", "user:root", "--steward", "user:daemon", "--approvals", "1");
	expect_status(&r, 0);
	assert_null(strstr(r.err, "warning: approvals"));
	run_free(&r);
	tu_rm_rf(f->store);
	RUN(&r, "init", "--store", f->store, "--passphrase-file", f->pass, "--test-kdf",
	    "--steward", "user:root", "--approvals", "0");
	expect_status(&r, 0);
	assert_null(strstr(r.err, "warning: approvals"));
	run_free(&r);
}

static void test_init_without_terminal(void **state)
{
	struct init_fx *f = *state;
	struct run r;
	/* No --passphrase-file and no terminal: a clear failure, nothing created. (Run from a
	 * terminal, the child would prompt on it: skipped then.) */
	int tty = open("/dev/tty", O_RDONLY | O_CLOEXEC);

	if (tty >= 0) {
		close(tty);
		skip();
	}
	RUN(&r, "init", "--store", f->store, "--test-kdf");
	expect_status(&r, 1);
	expect_contains(r.err, "--passphrase-file");
	assert_int_equal(access(f->store, F_OK), -1);
	run_free(&r);
}

/* ---- Against the fake daemon --------------------------------------------------------------- */

static void test_dataset_list(void **state)
{
	struct fake *f = fake_start(h_list);
	json_t *want = json_loads(datasets_json, 0, NULL), *got;
	struct run r;

	(void)state;
	RUN(&r, "--socket", f->sock, "dataset", "list");
	expect_status(&r, 0);
	expect_contains(r.out, "NAME");
	expect_contains(r.out, "genomes");
	expect_contains(r.out, "scans-2025");
	expect_contains(r.out, "2026-01-02T03:04:05Z");
	assert_string_equal(r.err, "");
	run_free(&r);

	/* --json before and after the command: the result object, as JSON. */
	RUN(&r, "--json", "--socket", f->sock, "dataset", "list");
	expect_status(&r, 0);
	got = json_loads(r.out, 0, NULL);
	assert_non_null(got);
	assert_true(json_equal(got, want));
	json_decref(got);
	run_free(&r);
	RUN(&r, "dataset", "list", "--socket", f->sock, "--json");
	expect_status(&r, 0);
	got = json_loads(r.out, 0, NULL);
	assert_non_null(got);
	assert_true(json_equal(got, want));
	json_decref(got);
	run_free(&r);

	fake_stop(f);
	assert_int_equal(fake_nreq(f), 3);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(fake_op(f, i), "dataset.list");
		assert_false(fake_had_fd(f, i));
	}
	json_decref(want);
	fake_free(f);
}

static void test_reply_error(void **state)
{
	struct fake *f = fake_start(h_denied);
	struct run r;

	(void)state;
	RUN(&r, "--socket", f->sock, "dataset", "list");
	expect_status(&r, 1);
	expect_contains(r.err, "enclavectl: dataset list: permission denied: only stewards and "
			       "auditors may list datasets");
	assert_string_equal(r.out, "");
	run_free(&r);
	fake_stop(f);
	fake_free(f);
}

static void test_garbage_frame(void **state)
{
	struct fake *f = fake_start(h_garbage);
	struct run r;

	(void)state;
	RUN(&r, "--socket", f->sock, "status");
	expect_status(&r, 1);
	expect_contains(r.err, "protocol error");
	assert_string_equal(r.out, "");
	run_free(&r);
	fake_stop(f);
	fake_free(f);
}

/* A source tree: nested directories, files of a few sizes, an empty file, an empty directory. */
struct tree {
	char *root;
	char *src;
};

static void tree_make(struct tree *t)
{
	struct timespec ts[2] = { { 1700000000, 123456789 }, { 1700000000, 123456789 } };
	char *p;

	t->root = tu_mkdtemp("cli-tree");
	t->src = tu_fmt("%s/src", t->root);
	assert_int_equal(mkdir(t->src, 0755), 0);
	tu_seed_file(100, 1, "%s/a.txt", t->src);
	tu_seed_file(0, 0, "%s/empty", t->src);
	p = tu_fmt("%s/sub", t->src);
	assert_int_equal(mkdir(p, 0750), 0);
	tu_seed_file(70000, 2, "%s/sub/b.bin", t->src);
	free(p);
	p = tu_fmt("%s/sub/deeper", t->src);
	assert_int_equal(mkdir(p, 0700), 0);
	tu_seed_file(5, 3, "%s/sub/deeper/c", t->src);
	free(p);
	p = tu_fmt("%s/z", t->src);
	assert_int_equal(mkdir(p, 0755), 0);
	free(p);
	/* Last, since adding entries changes a directory's mtime. */
	p = tu_fmt("%s/sub", t->src);
	assert_int_equal(chmod(p, 0750), 0);
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
	free(p);
}

static void tree_free(struct tree *t)
{
	tu_rm_rf(t->root);
	free(t->root);
	free(t->src);
}

static void expect_file(const struct fake *f, const char *path, size_t len, uint64_t seed)
{
	uint8_t *want = malloc(len + 1);

	assert_non_null(want);
	tu_fill(want, len, seed);
	for (size_t i = 0; i < f->nfiles; i++) {
		if (strcmp(f->files[i].path, path) != 0)
			continue;
		assert_true(f->files[i].read_only);
		assert_int_equal(f->files[i].len, len);
		if (len)
			assert_memory_equal(f->files[i].data, want, len);
		free(want);
		return;
	}
	fail_msg("the fake daemon never got %s", path);
}

/* A request the fake daemon should get: its op, and its path (NULL: not checked); for a batch
 * (import.files, import.stat) the paths of the batch joined by ",". */
struct want_req {
	const char *op, *path;
};

/* The fake daemon got exactly want[0..n), in order, a descriptor with each import.files and with
 * nothing else. An import.stat's paths are read in the form the fake takes (f->compact). */
static void expect_requests(const struct fake *f, const struct want_req *want, size_t n)
{
	assert_int_equal(fake_nreq(f), n);
	for (size_t i = 0; i < n; i++) {
		const char *op = want[i].op;

		assert_string_equal(fake_op(f, i), op);
		assert_int_equal(fake_had_fd(f, i), strcmp(op, "import.files") == 0);
		if (want[i].path && (strcmp(op, "import.files") == 0 ||
				     strcmp(op, "import.stat") == 0)) {
			/* import.stat: [path, stat] each; import.files: the paths */
			json_t *ps = strcmp(op, "import.stat") == 0
					     ? stat_request_files(f, fake_args(f, i))
					     : json_incref(json_object_get(fake_args(f, i), "paths"));
			char joined[256] = "";

			assert_non_null(ps);
			for (size_t k = 0; k < json_array_size(ps); k++) {
				const json_t *e = json_array_get(ps, k);

				snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined),
					 "%s%s", k ? "," : "",
					 json_string_value(json_is_array(e) ? json_array_get(e, 0)
									    : e));
			}
			json_decref(ps);
			assert_string_equal(joined, want[i].path);
		} else if (want[i].path) {
			assert_string_equal(arg_str(fake_args(f, i), "path"), want[i].path);
		}
	}
}

static void test_import_tree(void **state)
{
	/* Files travel in batches (import.files), each sent before the next directory. */
	static const struct want_req want[] = {
		{ "import.begin", NULL },      { "import.dir", "" },
		{ "import.files", "a.txt,empty" },
		{ "import.dir", "sub" },       { "import.files", "sub/b.bin" },
		{ "import.dir", "sub/deeper" }, { "import.files", "sub/deeper/c" },
		{ "import.dir", "z" },         { "import.commit", NULL },
	};
	struct fake *f = fake_start(h_import);
	struct tree t;
	struct run r;
	json_t *a;

	(void)state;
	tree_make(&t);
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src, "--chunk-size", "64K");
	expect_status(&r, 0);
	expect_contains(r.out, "imported genomes version 1: 4 files, 4 dirs, 70105 bytes in ");
	expect_contains(r.out, "MB/s)");
	run_free(&r);
	fake_stop(f);

	expect_requests(f, want, ARRAY_SIZE(want));
	a = fake_args(f, 0);
	assert_string_equal(arg_str(a, "dataset"), "genomes");
	assert_int_equal(json_integer_value(json_object_get(a, "chunk_size")), 65536);
	/* The directory's own mode and mtime travel with it. */
	a = fake_args(f, 3);
	assert_int_equal(json_integer_value(json_object_get(a, "mode")), 0750);
	assert_int_equal(json_integer_value(json_object_get(a, "mtime_ns")),
			 1700000000123456789LL);
	expect_file(f, "a.txt", 100, 1);
	expect_file(f, "empty", 0, 0);
	expect_file(f, "sub/b.bin", 70000, 2);
	expect_file(f, "sub/deeper/c", 5, 3);
	assert_int_equal(f->nfiles, 4);
	fake_free(f);
	tree_free(&t);
}

/* No C++ runtime mapped for enclavectl's sake, in the dynamic loader's account (LD_DEBUG=files):
 * each line that maps libstdc++ names who needed it, and only a sanitizer runtime may (the
 * ASan/UBSan build's libubsan needs libstdc++ itself; an uninstrumented build maps none). */
static void expect_no_cxx_runtime(const char *ld_debug)
{
	for (const char *p = ld_debug; (p = strstr(p, "file=libstdc++")) != NULL; p++) {
		const char *eol = strchrnul(p, '\n'), *by = strstr(p, "needed by ");
		char who[512];

		if (!by || by > eol)
			continue;   /* the same file's later lines (its link map, its init) */
		snprintf(who, sizeof(who), "%.*s", (int)(eol - by), by);
		if (!strstr(who, "/libubsan.so") && !strstr(who, "/libasan.so"))
			fail_msg("libstdc++ was mapped for enclavectl's sake: %s", who);
	}
}

/* Issue 16 point 5: the commands that talk to the daemon start without loading RocksDB and
 * libstdc++ (13 ms of the 19 ms enclavectl took to reach connect()); only the commands that open
 * the store themselves load it, on first use (cli/rocksdb_lazy.c). The dynamic loader's own
 * account (LD_DEBUG=files, on stderr) says which libraries each run mapped. */
static void test_daemon_commands_do_not_load_rocksdb(void **state)
{
	struct fake *f = fake_start(h_import);
	char *root = tu_mkdtemp("cli-lazy"), *store = tu_fmt("%s/store", root),
	     *pass = tu_fmt("%s/passphrase", root);
	struct tree t;
	struct run r;

	(void)state;
	tree_make(&t);
	/* LD_DEBUG is set only around each run, so no other test sees it if an assert fails. */
	assert_int_equal(setenv("LD_DEBUG", "files", 1), 0);
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	assert_int_equal(unsetenv("LD_DEBUG"), 0);
	expect_status(&r, 0);
	/* The loader did report (so the absences below mean something)... */
	expect_contains(r.err, "file=libsodium");
	/* ...and neither RocksDB nor the C++ runtime it brings was mapped. */
	assert_null(strstr(r.err, "librocksdb"));
	expect_no_cxx_runtime(r.err);
	run_free(&r);
	fake_stop(f);
	fake_free(f);
	f = fake_start(h_list);
	assert_int_equal(setenv("LD_DEBUG", "files", 1), 0);
	RUN(&r, "--socket", f->sock, "dataset", "list");
	assert_int_equal(unsetenv("LD_DEBUG"), 0);
	expect_status(&r, 0);
	expect_contains(r.err, "file=libsodium");
	assert_null(strstr(r.err, "librocksdb"));
	run_free(&r);

	/* An offline command loads it when it opens the index, and works. */
	tu_write_file(pass, "correct horse battery staple\n", 29);
	assert_int_equal(chmod(pass, 0600), 0);
	assert_int_equal(setenv("LD_DEBUG", "files", 1), 0);
	RUN(&r, "init", "--store", store, "--passphrase-file", pass, "--test-kdf", "--steward",
	    "user:root", "--steward", "group:0");
	assert_int_equal(unsetenv("LD_DEBUG"), 0);
	expect_status(&r, 0);
	expect_contains(r.err, "file=librocksdb");
	expect_contains(r.err, "dynamically loaded by");
	expect_contains(r.out, "keys/master.key");
	run_free(&r);
	RUN(&r, "policy", "rebuild", "--store", store, "--passphrase-file", pass);
	expect_contains(r.err, "holds no policy record");
	run_free(&r);

	fake_stop(f);
	fake_free(f);
	tree_free(&t);
	tu_rm_rf(root);
	free(root);
	free(store);
	free(pass);
}

/* Issue 16: with a version to share from, files go first by their stat alone (import.stat, no
 * descriptor, [dev, ino, size, mode, mtime_ns, ctime_ns] as fstatat saw them), and only the ones
 * the daemon asks for are opened and sent (import.files), each before the walk leaves its
 * directory. Every file is imported once. */
static void import_by_stat(bool compact)
{
	static const struct want_req want[] = {
		{ "import.begin", NULL },      { "import.dir", "" },
		{ "import.stat", "a.txt,empty" }, { "import.files", "empty" },
		{ "import.dir", "sub" },       { "import.stat", "sub/b.bin" },
		{ "import.files", "sub/b.bin" }, { "import.dir", "sub/deeper" },
		{ "import.stat", "sub/deeper/c" }, { "import.dir", "z" },
		{ "import.commit", NULL },
	};
	struct fake *f = fake_start(h_import_stat);
	struct tree t;
	struct run r;

	tree_make(&t);
	f->stat_root = t.src;
	f->compact = compact;
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	expect_status(&r, 0);
	expect_contains(r.out, "imported genomes version 1: 4 files, 4 dirs, 70105 bytes in ");
	run_free(&r);
	fake_stop(f);
	expect_requests(f, want, ARRAY_SIZE(want));
	/* Only the files asked for were sent, whole. */
	assert_int_equal(f->nfiles, 2);
	expect_file(f, "empty", 0, 0);
	expect_file(f, "sub/b.bin", 70000, 2);
	fake_free(f);
	tree_free(&t);
}

static void test_import_by_stat(void **state)
{
	(void)state;
	import_by_stat(false);
}

/* The same with a daemon that offers the compact form (issue 16): every batch goes compact, with
 * the stats the walk took, and the same files are asked for and sent. */
static void test_import_by_stat_compact(void **state)
{
	(void)state;
	import_by_stat(true);
}

/* A tree of several directories, two of them of more than one import.stat batch, with files
 * asked for in three of them (content changed, stamps that do not hold: named "n..." here). */
static void tree_make_many(struct tree *t)
{
	static const struct {
		const char *dir;
		unsigned n;
		bool need;
	} dirs[] = { { "", 10, false }, { "d1", 300, true }, { "d1/e", 5, true },
		     { "d2", 300, true } };

	t->root = tu_mkdtemp("cli-tree");
	t->src = tu_fmt("%s/src", t->root);
	assert_int_equal(mkdir(t->src, 0755), 0);
	for (size_t d = 0; d < ARRAY_SIZE(dirs); d++) {
		char *p = tu_fmt("%s/%s", t->src, dirs[d].dir);

		if (*dirs[d].dir)
			assert_int_equal(mkdir(p, 0755), 0);
		for (unsigned i = 0; i < dirs[d].n; i++)
			tu_seed_file(i % 50 + 1, d * 1000 + i, "%s/%c%03u", p,
				     dirs[d].need && i % 3 == 0 ? 'n' : 'k', i);
		free(p);
	}
}

/* The directory part of a file's path ("" for the root), in buf. */
static const char *dir_of(const char *path, char *buf, size_t size)
{
	const char *sl = strrchr(path, '/');

	snprintf(buf, size, "%.*s", sl ? (int)(sl - path) : 0, path);
	return buf;
}

/* Issue 16 point 5: import.dir goes in flight with the import.stat batches (it is not answered
 * before the walk goes on), and the files asked for in several directories still go each from the
 * directory the walk checked, before the next directory or another directory's batch, once, byte
 * for byte. The daemon sees import.dir and import.stat in walk order. */
static void test_import_by_stat_many_dirs(void **state)
{
	/* The requests other than import.files, in walk order (depth first, sorted: d1/e before
	 * the files of d1, the root's files last). */
	static const struct want_req want[] = {
		{ "import.begin", NULL }, { "import.dir", "" },     { "import.dir", "d1" },
		{ "import.dir", "d1/e" }, { "import.stat", "d1/e" }, { "import.stat", "d1" },
		{ "import.stat", "d1" },  { "import.dir", "d2" },   { "import.stat", "d2" },
		{ "import.stat", "d2" },  { "import.stat", "" },    { "import.commit", NULL },
	};
	struct fake *f = fake_start(h_import_stat);
	json_t *asked = json_object();
	struct tree t;
	struct run r;
	size_t k = 0, nfiles = 0;
	char cur[256] = "", d[256];

	(void)state;
	tree_make_many(&t);
	f->stat_root = t.src;
	f->compact = true;
	f->need_prefix = "n";
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	expect_status(&r, 0);
	expect_contains(r.out, "imported genomes version 1: 615 files, ");
	run_free(&r);
	fake_stop(f);
	for (size_t i = 0; i < fake_nreq(f); i++) {
		const char *op = fake_op(f, i);
		json_t *ps;

		if (strcmp(op, "import.files") == 0) {
			/* Each file asked for by the batch of the directory being walked. */
			ps = json_object_get(fake_args(f, i), "paths");
			for (size_t j = 0; j < json_array_size(ps); j++) {
				const char *p = json_string_value(json_array_get(ps, j));

				assert_non_null(json_object_get(asked, p));
				assert_string_equal(dir_of(p, d, sizeof(d)), cur);
				json_object_del(asked, p);
				nfiles++;
			}
			continue;
		}
		assert_true(k < ARRAY_SIZE(want));
		assert_string_equal(op, want[k].op);
		if (strcmp(op, "import.dir") == 0) {
			assert_string_equal(arg_str(fake_args(f, i), "path"), want[k].path);
		} else if (strcmp(op, "import.stat") == 0) {
			/* Every file asked for earlier was sent before another directory's batch. */
			if (strcmp(want[k].path, cur) != 0)
				assert_int_equal(json_object_size(asked), 0);
			snprintf(cur, sizeof(cur), "%s", want[k].path);
			ps = stat_request_files(f, fake_args(f, i));
			assert_non_null(ps);
			for (size_t j = 0; j < json_array_size(ps); j++) {
				const char *p = json_string_value(
					json_array_get(json_array_get(ps, j), 0));
				const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;

				assert_string_equal(dir_of(p, d, sizeof(d)), cur);
				if (base[0] == 'n')
					json_object_set_new(asked, p, json_true());
			}
			json_decref(ps);
		}
		if (strcmp(op, "import.dir") == 0 || strcmp(op, "import.commit") == 0)
			assert_int_equal(json_object_size(asked), 0);
		k++;
	}
	assert_int_equal(k, ARRAY_SIZE(want));
	/* No import.dir was waited for: each had the next request behind it. */
	assert_int_equal(f->dirs_waited, 0);
	/* 100 in d1, 2 in d1/e, 100 in d2: each sent once, whole. */
	assert_int_equal(nfiles, 202);
	assert_int_equal(f->nfiles, 202);
	for (unsigned i = 0; i < 300; i += 3) {
		char *p1 = tu_fmt("d1/n%03u", i), *p2 = tu_fmt("d2/n%03u", i);

		expect_file(f, p1, i % 50 + 1, 1000 + i);
		expect_file(f, p2, i % 50 + 1, 3000 + i);
		free(p1);
		free(p2);
	}
	expect_file(f, "d1/e/n000", 1, 2000);
	expect_file(f, "d1/e/n003", 4, 2003);
	json_decref(asked);
	fake_free(f);
	tree_free(&t);
}

/* A file asked for that vanished after the walk (the fake removes it as it asks for it), in a
 * directory the walk has left behind by the time it is opened: the import stops with an error
 * naming it and is abandoned; nothing is committed, no later directory is sent. */
static void test_import_needed_file_vanished(void **state)
{
	struct fake *f = fake_start(h_import_stat);
	struct tree t;
	struct run r;
	char *p;

	(void)state;
	tree_make_many(&t);
	f->stat_root = t.src;
	f->compact = true;
	f->need_prefix = "n";
	f->vanish = "d1/e/n003";
	p = tu_fmt("%s/d1/e/n003", t.src);
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	expect_status(&r, 1);
	expect_contains(r.err, p);
	expect_contains(r.err, "cannot open: No such file or directory");
	expect_contains(r.err, "the import was abandoned");
	assert_string_equal(r.out, "");
	run_free(&r);
	fake_stop(f);
	assert_string_equal(fake_op(f, fake_nreq(f) - 1), "import.abort");
	assert_false(fake_saw(f, "import.commit"));
	for (size_t i = 0; i < fake_nreq(f); i++)
		if (strcmp(fake_op(f, i), "import.dir") == 0)
			assert_string_not_equal(arg_str(fake_args(f, i), "path"), "d2");
	for (size_t i = 0; i < f->nfiles; i++)
		assert_string_not_equal(f->files[i].path, "d1/e/n003");
	free(p);
	fake_free(f);
	tree_free(&t);
}

static void test_import_json(void **state)
{
	struct fake *f = fake_start(h_import);
	struct tree t;
	struct run r;
	json_t *j;

	(void)state;
	tree_make(&t);
	RUN(&r, "--socket", f->sock, "dataset", "import", "--json", "genomes", t.src);
	expect_status(&r, 0);
	j = json_loads(r.out, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
	assert_int_equal(json_integer_value(json_object_get(j, "files")), 4);
	json_decref(j);
	run_free(&r);
	fake_stop(f);
	/* No chunk size given: none sent. */
	assert_null(json_object_get(fake_args(f, 0), "chunk_size"));
	fake_free(f);
	tree_free(&t);
}

/* A tree with something that is not a file or a directory is refused before anything is sent. */
static void import_refused(void (*make)(const char *path), const char *name, const char *kind)
{
	struct fake *f = fake_start(h_import);
	struct tree t;
	struct run r;
	char *p;

	tree_make(&t);
	p = tu_fmt("%s/sub/%s", t.src, name);
	make(p);
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	expect_status(&r, 1);
	expect_contains(r.err, p);
	expect_contains(r.err, kind);
	assert_string_equal(r.out, "");
	run_free(&r);
	fake_stop(f);
	/* import.begin went first (the daemon prepares while the tree is walked); the walk refused
	 * the tree before any directory or file was sent, and the import was abandoned. */
	assert_int_equal(fake_nreq(f), 2);
	assert_string_equal(fake_op(f, 0), "import.begin");
	assert_string_equal(fake_op(f, 1), "import.abort");
	free(p);
	fake_free(f);
	tree_free(&t);
}

static void make_symlink(const char *p)
{
	assert_int_equal(symlink("/etc/passwd", p), 0);
}

static void make_fifo(const char *p)
{
	assert_int_equal(mkfifo(p, 0600), 0);
}

static void make_socket(const char *p)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(strlen(p) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, p, strlen(p) + 1);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
}

static void test_import_refuses_symlink(void **state)
{
	(void)state;
	import_refused(make_symlink, "link", "symbolic link");
}

static void test_import_refuses_fifo(void **state)
{
	(void)state;
	import_refused(make_fifo, "pipe", "FIFO");
}

static void test_import_refuses_socket(void **state)
{
	(void)state;
	import_refused(make_socket, "sock", "socket");
}

/* A file replaced by a FIFO after the walk (by the fake, at the first import.dir) is caught as
 * the tree is sent: its descriptor is checked against what the walk saw; the import is aborted,
 * never committed, and the FIFO never passed. */
static void test_import_tree_changes_midway(void **state)
{
	struct fake *f = fake_start(h_import);
	struct tree t;
	struct run r;
	char *p;

	(void)state;
	tree_make(&t);
	p = tu_fmt("%s/sub/b.bin", t.src);
	f->fifo_to_make = p;
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	expect_status(&r, 1);
	expect_contains(r.err, p);
	expect_contains(r.err, "FIFO");
	run_free(&r);
	fake_stop(f);
	assert_true(fake_saw(f, "import.begin"));
	assert_string_equal(fake_op(f, fake_nreq(f) - 1), "import.abort");
	assert_false(fake_saw(f, "import.commit"));
	for (size_t i = 0; i < f->nfiles; i++)
		assert_string_not_equal(f->files[i].path, "sub/b.bin");
	free(p);
	fake_free(f);
	tree_free(&t);
}

/* A directory replaced by another of the same name after the walk is refused as the tree is sent
 * (it is opened again and checked to be the one listed): nothing of the new one is imported. */
static void test_import_dir_swapped_midway(void **state)
{
	struct fake *f = fake_start(h_import);
	struct tree t;
	struct run r;
	char *p;

	(void)state;
	tree_make(&t);
	p = tu_fmt("%s/sub", t.src);
	f->dir_to_swap = p;
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	expect_status(&r, 1);
	expect_contains(r.err, p);
	expect_contains(r.err, "changed while being read");
	run_free(&r);
	fake_stop(f);
	assert_string_equal(fake_op(f, fake_nreq(f) - 1), "import.abort");
	assert_false(fake_saw(f, "import.commit"));
	for (size_t i = 0; i < fake_nreq(f); i++)
		if (strcmp(fake_op(f, i), "import.dir") == 0)
			assert_string_not_equal(arg_str(fake_args(f, i), "path"), "sub");
	for (size_t i = 0; i < f->nfiles; i++)
		assert_null(strstr(f->files[i].path, "sub/"));
	free(p);
	fake_free(f);
	tree_free(&t);
}

/* import.begin refused (another import runs): the CLI says so, and sends nothing else, neither
 * the tree it walked meanwhile nor an abort. A tree of more than 256 entries, so that the reply
 * is also looked for during the walk. */
static void test_import_begin_refused(void **state)
{
	struct fake *f = fake_start(h_import);
	struct tree t;
	struct run r;

	(void)state;
	tree_make(&t);
	for (int i = 0; i < 600; i++)
		tu_seed_file(1, (unsigned)i, "%s/z/f%03d", t.src, i);
	f->refuse_begin = true;
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	expect_status(&r, 1);
	expect_contains(r.err, "another import is running");
	assert_string_equal(r.out, "");
	run_free(&r);
	fake_stop(f);
	assert_int_equal(fake_nreq(f), 1);
	assert_string_equal(fake_op(f, 0), "import.begin");
	fake_free(f);
	tree_free(&t);
}

/* The import keeps import.begin's connection alive while it walks the tree (the daemon closes a
 * connection idle for CONTROL_IDLE_TIMEOUT_MS): a whoami request when KEEPALIVE_NS has passed,
 * looked at every SCAN_TICK_ENTRIES entries, each answered and its reply read before the tree is
 * sent. With the test limits (enclavectl-test-limits: a keep-alive at every look, every 8
 * entries) no clock is involved: the root, 2 directories and 40 files are 43 entries, 5 looks,
 * so 5 whoami requests, all between import.begin and the first import.dir. Fails without the
 * keep-alive. */
static void test_import_keepalive_during_walk(void **state)
{
	struct fake *f = fake_start(h_import);
	char *root = tu_mkdtemp("cli-keepalive");
	struct run r;
	size_t n;

	(void)state;
	for (unsigned d = 0; d < 2; d++) {
		char *p = tu_fmt("%s/d%u", root, d);

		assert_int_equal(mkdir(p, 0755), 0);
		for (unsigned i = 0; i < 20; i++)
			tu_seed_file(1, i, "%s/f%02u", p, i);
		free(p);
	}
	run_exe = ENCLAVECTL_TEST_LIMITS_PATH;
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", root);
	run_exe = NULL;
	expect_status(&r, 0);
	expect_contains(r.out, "imported genomes version 1: 40 files, 3 dirs");
	run_free(&r);
	fake_stop(f);
	n = fake_nreq(f);
	assert_true(n > 7);
	assert_string_equal(fake_op(f, 0), "import.begin");
	for (size_t i = 1; i <= 5; i++)
		assert_string_equal(fake_op(f, i), "whoami");
	assert_string_equal(fake_op(f, 6), "import.dir");
	for (size_t i = 7; i < n; i++)
		assert_string_not_equal(fake_op(f, i), "whoami");
	assert_string_equal(fake_op(f, n - 1), "import.commit");
	assert_int_equal(f->nfiles, 40);
	fake_free(f);
	tu_rm_rf(root);
	free(root);
}

/* A walk refused by one of its caps: before anything is sent, the cap named, the begun import
 * abandoned (import.abort), nothing committed. */
static void import_capped(const char *root, const char *says)
{
	struct fake *f = fake_start(h_import);
	struct run r;

	run_exe = ENCLAVECTL_TEST_LIMITS_PATH;
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", (char *)root);
	run_exe = NULL;
	expect_status(&r, 1);
	expect_contains(r.err, says);
	assert_string_equal(r.out, "");
	run_free(&r);
	fake_stop(f);
	assert_string_equal(fake_op(f, 0), "import.begin");
	assert_string_equal(fake_op(f, fake_nreq(f) - 1), "import.abort");
	assert_false(fake_saw(f, "import.dir"));
	assert_false(fake_saw(f, "import.commit"));
	assert_int_equal(f->nfiles, 0);
	fake_free(f);
}

/* A tree of more entries than the walk keeps (WALK_KEEP_MAX: 2^24; 64 with the test limits) is
 * refused: 3 directories of 30 files, each within the per-directory cap, 93 entries. Fails
 * without the cap. */
static void test_import_walk_keep_cap(void **state)
{
	char *root = tu_mkdtemp("cli-keepcap"), *says;

	(void)state;
	for (unsigned d = 0; d < 3; d++) {
		char *p = tu_fmt("%s/d%u", root, d);

		assert_int_equal(mkdir(p, 0755), 0);
		for (unsigned i = 0; i < 30; i++)
			tu_seed_file(1, i, "%s/f%02u", p, i);
		free(p);
	}
	says = tu_fmt("%s: the tree holds more than 64 entries; import it in parts", root);
	import_capped(root, says);
	free(says);
	tu_rm_rf(root);
	free(root);
}

/* A directory of more entries than the walk lists (WALK_DIR_ENTRIES_MAX: 2^24; 32 with the test
 * limits) is refused, named: 33 files in one directory. Fails without the cap. */
static void test_import_walk_dir_cap(void **state)
{
	char *root = tu_mkdtemp("cli-dircap"), *big = tu_fmt("%s/big", root), *says;

	(void)state;
	assert_int_equal(mkdir(big, 0755), 0);
	for (unsigned i = 0; i < 33; i++)
		tu_seed_file(1, i, "%s/f%02u", big, i);
	says = tu_fmt("%s: more than 32 entries", big);
	import_capped(root, says);
	free(says);
	tu_rm_rf(root);
	free(big);
	free(root);
}

/* The daemon refuses a file: the CLI says why, aborts, and stops sending. */
static void test_import_daemon_refuses(void **state)
{
	struct fake *f = fake_start(h_import_refuse);
	struct tree t;
	struct run r;

	(void)state;
	tree_make(&t);
	RUN(&r, "--socket", f->sock, "dataset", "import", "genomes", t.src);
	expect_status(&r, 1);
	expect_contains(r.err, "enclavectl: dataset import genomes: io error: source file changed "
			       "size while it was read");
	run_free(&r);
	fake_stop(f);
	/* begin, dir "", the batch of a.txt and empty (empty refused), abort. */
	assert_int_equal(fake_nreq(f), 4);
	assert_string_equal(fake_op(f, 2), "import.files");
	assert_string_equal(fake_op(f, 3), "import.abort");
	fake_free(f);
	tree_free(&t);
}

static void interrupt_when_stalled(pid_t pid, void *ctx)
{
	struct fake *f = ctx;

	if (atomic_exchange(&f->stalled, false))
		kill(pid, SIGINT);
}

/* Ctrl-C while the daemon works on a file: enclavectl hangs up (the daemon then abandons the
 * version), says so, and fails; nothing is committed. */
static void test_import_interrupted(void **state)
{
	struct fake *f = fake_start(h_import_stall);
	struct tree t;
	struct run r;

	(void)state;
	tree_make(&t);
	run_argv_tick(&r, (char *const[]){ "--socket", f->sock, "dataset", "import", "genomes",
					   t.src, NULL },
		      interrupt_when_stalled, f);
	expect_status(&r, 1);
	expect_contains(r.err, "interrupted");
	expect_contains(r.err, "nothing was imported");
	assert_string_equal(r.out, "");
	run_free(&r);
	fake_stop(f);
	assert_true(fake_saw(f, "import.files"));
	assert_false(fake_saw(f, "import.commit"));
	fake_free(f);
	tree_free(&t);
}

static bool is_rfc3339_utc(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";

	if (!s || strlen(s) != strlen(shape))
		return false;
	for (size_t i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			return false;
	return true;
}

static void test_grant_add_sends_absolute_times(void **state)
{
	struct fake *f = fake_start(h_grant);
	int64_t now = (int64_t)time(NULL), t;
	struct run r;
	json_t *a;

	(void)state;
	RUN(&r, "--socket", f->sock, "grant", "add", "--user", "alice", "--dataset", "genomes@2",
	    "--purpose", "training the variant caller", "--expires", "+90d", "--not-before",
	    "+1h");
	expect_status(&r, 0);
	expect_contains(r.out, "added grant 12");
	expect_contains(r.out, "user:alice");
	expect_contains(r.out, "genomes@2");
	run_free(&r);
	RUN(&r, "--socket", f->sock, "grant", "add", "--group", "1234", "--dataset", "genomes",
	    "--purpose", "qc", "--expires", "2099-01-02T03:04:05+01:00");
	expect_status(&r, 0);
	expect_contains(r.out, "genomes@all");
	run_free(&r);
	fake_stop(f);

	assert_int_equal(fake_nreq(f), 2);
	a = fake_args(f, 0);
	assert_string_equal(fake_op(f, 0), "grant.add");
	assert_string_equal(arg_str(a, "principal_kind"), "user");
	assert_string_equal(arg_str(a, "principal"), "alice");
	assert_string_equal(arg_str(a, "dataset"), "genomes");
	assert_int_equal(json_integer_value(json_object_get(a, "version")), 2);
	assert_string_equal(arg_str(a, "purpose"), "training the variant caller");
	assert_true(is_rfc3339_utc(arg_str(a, "expires")));
	assert_true(is_rfc3339_utc(arg_str(a, "not_before")));
	assert_int_equal(time_parse(arg_str(a, "expires"), 0, &t), 0);
	assert_true(t >= now + 90 * 86400 && t <= now + 90 * 86400 + 120);
	assert_int_equal(time_parse(arg_str(a, "not_before"), 0, &t), 0);
	assert_true(t >= now + 3600 && t <= now + 3600 + 120);

	a = fake_args(f, 1);
	assert_string_equal(arg_str(a, "principal_kind"), "group");
	assert_string_equal(arg_str(a, "principal"), "1234");
	assert_int_equal(json_integer_value(json_object_get(a, "version")), 0);
	assert_string_equal(arg_str(a, "expires"), "2099-01-02T02:04:05Z");
	assert_null(json_object_get(a, "not_before"));
	fake_free(f);
}

static void test_grant_list_and_revoke(void **state)
{
	struct fake *f = fake_start(h_grant);
	struct run r;
	json_t *j;

	(void)state;
	RUN(&r, "--socket", f->sock, "grant", "list", "--all", "--dataset", "genomes");
	expect_status(&r, 0);
	expect_contains(r.out, "ID");
	expect_contains(r.out, "DATASET@VERSION");
	expect_contains(r.out, "group:ml-team");
	expect_contains(r.out, "genomes@all");
	expect_contains(r.out, "user:alice");
	expect_contains(r.out, "scans-2025@2");
	expect_contains(r.out, "revoked");
	/* The long purpose is cut in the table... */
	assert_null(strstr(r.out, "ethics board"));
	expect_contains(r.out, "...");
	run_free(&r);
	/* ...and whole in the JSON. */
	RUN(&r, "--socket", f->sock, "grant", "list", "--json");
	expect_status(&r, 0);
	j = json_loads(r.out, 0, NULL);
	assert_non_null(j);
	expect_contains(json_string_value(json_object_get(
				json_array_get(json_object_get(j, "grants"), 0), "purpose")),
			"ethics board");
	json_decref(j);
	run_free(&r);

	RUN(&r, "--socket", f->sock, "grant", "revoke", "7", "--reason", "left the project");
	expect_status(&r, 1);
	expect_contains(r.err, "enclavectl: grant revoke 7: not found: no grant with id 7\n");
	run_free(&r);
	fake_stop(f);

	assert_int_equal(fake_nreq(f), 3);
	assert_true(json_is_true(json_object_get(fake_args(f, 0), "all")));
	assert_string_equal(arg_str(fake_args(f, 0), "dataset"), "genomes");
	assert_null(fake_args(f, 1) ? json_object_get(fake_args(f, 1), "all") : NULL);
	assert_int_equal(json_integer_value(json_object_get(fake_args(f, 2), "id")), 7);
	assert_string_equal(arg_str(fake_args(f, 2), "reason"), "left the project");
	fake_free(f);
}

static void test_audit_show(void **state)
{
	struct fake *f = fake_start(h_audit);
	struct run r;
	char *line, *end;
	size_t n = 0;
	json_t *a;

	(void)state;
	RUN(&r, "--socket", f->sock, "audit", "show", "--dataset", "genomes", "--user", "alice",
	    "--event", "open", "--since", "2026-11-01", "--until", "-1h", "--limit", "10");
	expect_status(&r, 0);
	expect_contains(r.out, "2026-11-21T09:00:00.000000001Z  open  alice(1000)  genomes@3  "
			       "/train/0001.tar  allow  grant=3");
	expect_contains(r.out, "bob(1001)  genomes@3  /train/0002.tar  deny  no_grant");
	expect_contains(r.out, "close  alice(1000)  genomes@3  /train/0001.tar  bytes=1048576");
	run_free(&r);

	/* --json: JSON lines, the records as they came. */
	RUN(&r, "--socket", f->sock, "--json", "audit", "show");
	expect_status(&r, 0);
	for (line = r.out; *line; line = end + 1) {
		end = strchr(line, '\n');
		assert_non_null(end);
		*end = '\0';
		assert_true(n < ARRAY_SIZE(audit_records));
		assert_string_equal(line, audit_records[n]);
		n++;
	}
	assert_int_equal(n, ARRAY_SIZE(audit_records));
	run_free(&r);
	fake_stop(f);

	a = fake_args(f, 0);
	assert_string_equal(arg_str(a, "dataset"), "genomes");
	assert_string_equal(arg_str(a, "user"), "alice");
	assert_string_equal(arg_str(a, "event"), "open");
	assert_string_equal(arg_str(a, "since"), "2026-11-01T00:00:00Z");
	assert_true(is_rfc3339_utc(arg_str(a, "until")));
	assert_int_equal(json_integer_value(json_object_get(a, "limit")), 10);
	fake_free(f);
}

/* ---- help, abbreviations, completion, JSON errors, the man page (#15 points 12, 17, 19) ---- */

static void expect_same_output(char *const *a, char *const *b)
{
	struct run ra, rb;

	run_argv(&ra, a);
	run_argv(&rb, b);
	expect_status(&ra, 0);
	expect_status(&rb, 0);
	assert_string_equal(ra.out, rb.out);
	run_free(&ra);
	run_free(&rb);
}

static void test_help_command_and_abbreviations(void **state)
{
	struct run r;

	(void)state;
	expect_same_output((char *const[]){ "help", NULL }, (char *const[]){ "--help", NULL });
	expect_same_output((char *const[]){ "help", "grant", NULL },
			   (char *const[]){ "grant", "--help", NULL });
	expect_same_output((char *const[]){ "help", "grant", "list", NULL },
			   (char *const[]){ "grant", "list", "--help", NULL });
	expect_same_output((char *const[]){ "help", "init", NULL },
			   (char *const[]){ "init", "--help", NULL });
	/* Unambiguous abbreviations, at both levels and in help. */
	expect_same_output((char *const[]){ "gr", "li", "--help", NULL },
			   (char *const[]){ "grant", "list", "--help", NULL });
	expect_same_output((char *const[]){ "help", "au", "rep", NULL },
			   (char *const[]){ "audit", "report", "--help", NULL });
	/* Ambiguous ones are usage errors naming the candidates. */
	RUN(&r, "d", "list");
	expect_status(&r, 2);
	expect_contains(r.err, "ambiguous command 'd': dataset, deny");
	run_free(&r);
	RUN(&r, "audit", "c");
	expect_status(&r, 2);
	expect_contains(r.err, "ambiguous command 'c': checkpoint, check-proof, consistency");
	run_free(&r);
	RUN(&r, "help", "grant", "frob");
	expect_status(&r, 2);
	expect_contains(r.err, "unknown command 'frob'");
	run_free(&r);
}

/* The completion script is valid bash and completes objects, commands and options. */
static void test_completion_bash(void **state)
{
	static const char *const cases[][2] = {
		{ "enclavectl gr", "grant" },
		{ "enclavectl grant li", "list" },
		{ "enclavectl audit show --gr", "--grantee --group --grant" },
		{ "enclavectl --store /x dataset im", "import" },
		{ "enclavectl help aud", "audit" },
		{ "enclavectl deny add --dry", "--dry-run" },
	};
	char *dir = tu_mkdtemp("cli-completion"), *script = tu_fmt("%s/enclavectl.bash", dir);
	struct run r;

	(void)state;
	RUN(&r, "completion", "bash");
	expect_status(&r, 0);
	tu_write_file(script, r.out, strlen(r.out));
	run_free(&r);
	run_exe = "/bin/bash";
	RUN(&r, "-n", script);
	run_exe = NULL;
	expect_status(&r, 0);
	run_free(&r);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *prog = tu_fmt("source '%s'; COMP_WORDS=(%s); [[ '%s' == *' ' ]] && "
				    "COMP_WORDS+=(''); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); "
				    "_enclavectl; echo \"${COMPREPLY[*]}\"", script, cases[i][0],
				    cases[i][0]);
		char *want = tu_fmt("%s\n", cases[i][1]);
		struct run b;

		run_exe = "/bin/bash";
		run_argv(&b, (char *const[]){ "-c", prog, NULL });
		run_exe = NULL;
		expect_status(&b, 0);
		if (strcmp(b.out, want) != 0)
			fprintf(stderr, "completing '%s' gave '%s'\n", cases[i][0], b.out);
		assert_string_equal(b.out, want);
		run_free(&b);
		free(want);
		free(prog);
	}
	RUN(&r, "completion", "zsh");
	expect_status(&r, 2);
	run_free(&r);
	tu_rm_rf(dir);
	free(script);
	free(dir);
}

/* With --json an error is one JSON object on stdout with a stable code. */
static void test_json_errors(void **state)
{
	struct fake *f = fake_start(h_denied);
	struct run r;
	json_t *j;

	(void)state;
	RUN(&r, "dataset", "show", "bad/name", "--json");
	expect_status(&r, 2);
	j = json_loads(r.out, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
			    "usage");
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"),
							      "command")), "dataset show");
	json_decref(j);
	run_free(&r);
	RUN(&r, "--json", "--socket", f->sock, "dataset", "list");
	expect_status(&r, 1);
	j = json_loads(r.out, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
			    "permission_denied");
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"),
								 "message")),
			       "only stewards and auditors"));
	json_decref(j);
	run_free(&r);
	fake_stop(f);
	fake_free(f);
	RUN(&r, "--json", "--socket", "/nonexistent/enclave.sock", "status");
	expect_status(&r, 1);
	expect_contains(r.out, "\"code\": \"no_daemon\"");
	run_free(&r);
	/* Without --json, stdout stays empty. */
	RUN(&r, "dataset", "show", "bad/name");
	assert_string_equal(r.out, "");
	run_free(&r);
}

/* Every option of every command's --help appears in enclavectl(1). */
static void test_man_page_has_every_option(void **state)
{
	size_t len;
	char *man = (char *)tu_read_file(ENCLAVE_SOURCE_DIR "/docs/man/enclavectl.1", &len);
	char *plain = calloc(1, len + 1), *line, *next;
	struct run top;
	size_t o = 0, missing = 0, checked = 0;

	(void)state;
	/* Man source escapes '-' as "\-". */
	for (size_t i = 0; i < len; i++)
		if (!(man[i] == '\\' && i + 1 < len && man[i + 1] == '-'))
			plain[o++] = man[i];
	RUN(&top, "--help");
	expect_status(&top, 0);
	for (line = top.out; *line; line = next) {
		char obj[32], cmd[64];
		struct run r;
		int n;

		next = strchr(line, '\n');
		next = next ? next + 1 : line + strlen(line);
		n = sscanf(line, "  %31[a-z0-9] %63[a-z-]", obj, cmd);

		/* Command lines only: two spaces, then the object's name. */
		if (n < 1 || strncmp(line, "  ", 2) != 0 || line[2] < 'a' || line[2] > 'z')
			continue;
		if (n == 2 && strncmp(cmd, "--", 2) != 0)
			RUN(&r, obj, cmd, "--help");
		else
			RUN(&r, obj, "--help");
		expect_status(&r, 0);
		for (char *p = r.out; (p = strstr(p, "--")) != NULL;) {
			char *q = p + 2, word[64];
			size_t k;

			while ((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-')
				q++;
			k = (size_t)(q - p);
			if (k > 2 && k < sizeof(word) && (p == r.out || p[-1] == ' ' || p[-1] == '[' ||
							  p[-1] == '(' || p[-1] == '|')) {
				memcpy(word, p, k);
				word[k] = '\0';
				checked++;
				if (!strstr(plain, word)) {
					fprintf(stderr, "enclavectl.1 lacks %s (from '%s %s --help')\n",
						word, obj, n == 2 ? cmd : "");
					missing++;
				}
			}
			p = q;
		}
		run_free(&r);
	}
	run_free(&top);
	assert_true(checked > 50);
	assert_int_equal(missing, 0);
	free(plain);
	free(man);
}

/* audit export against a fake daemon: a file name that is a path, or a descriptor that is not a
 * read-only regular file, is refused and nothing is written outside DIR; a good file is copied. */
static const char *export_name;   /* what h_export calls its one file */
static bool export_rw;            /* ... and whether it passes a read-write descriptor */

static void h_export(struct fake *f, int conn, const char *op, const json_t *args, int fd)
{
	char *path = tu_fmt("%s/export-src", f->dir);
	int src;

	(void)args;
	(void)fd;
	if (strcmp(op, "audit.export") != 0) {
		reply_error(conn, "unknown_operation", "no such operation");
		free(path);
		return;
	}
	tu_write_file(path, "{\"seq\":0}\n", 10);
	src = open(path, (export_rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	{
		json_t *j = json_pack("{s:s, s:i}", "file", export_name, "length", 10);

		proto_send(conn, PROTO_PARTIAL, j, src);
		json_decref(j);
	}
	close(src);
	reply_ok(conn, json_pack("{s:i, s:i, s:i}", "records", 1, "files", 1, "export_seq", 0));
	free(path);
}

static void test_audit_export_refuses_forged_files(void **state)
{
	struct fake *f = fake_start(h_export);
	char *dir = tu_fmt("%s/out", f->dir), *escape = tu_fmt("%s/escape", f->dir);
	char *copy = tu_fmt("%s/audit.log", dir);
	struct run r;
	size_t n;
	uint8_t *data;

	(void)state;
	/* A path out of DIR. */
	export_name = "../escape";
	export_rw = false;
	RUN(&r, "--socket", f->sock, "audit", "export", dir);
	expect_status(&r, 1);
	expect_contains(r.err, "protocol error");
	expect_contains(r.err, "incomplete");
	run_free(&r);
	assert_int_equal(access(escape, F_OK), -1);
	tu_rm_rf(dir);
	/* A descriptor the daemon could still write through. */
	export_name = "audit.log";
	export_rw = true;
	RUN(&r, "--socket", f->sock, "audit", "export", dir);
	expect_status(&r, 1);
	expect_contains(r.err, "not a read-only file");
	run_free(&r);
	tu_rm_rf(dir);
	/* A good one: copied, exactly. */
	export_rw = false;
	RUN(&r, "--socket", f->sock, "audit", "export", dir);
	expect_status(&r, 0);
	expect_contains(r.out, "exported 1 records (1 files, 10 bytes)");
	run_free(&r);
	data = tu_read_file(copy, &n);
	assert_int_equal(n, 10);
	assert_memory_equal(data, "{\"seq\":0}\n", 10);
	free(data);
	/* Never into an existing directory. */
	RUN(&r, "--socket", f->sock, "audit", "export", dir);
	expect_status(&r, 1);
	expect_contains(r.err, "exists");
	run_free(&r);
	fake_stop(f);
	fake_free(f);
	free(dir);
	free(escape);
	free(copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_progress_eta),
		cmocka_unit_test(test_help_every_level),
		cmocka_unit_test(test_import_help_says_versions_share_files),
		cmocka_unit_test(test_usage_errors),
		cmocka_unit_test(test_missing_expires_says_so),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_no_daemon),
		cmocka_unit_test_setup_teardown(test_init_creates_store, init_setup, init_teardown),
		cmocka_unit_test_setup_teardown(test_init_default_steward, init_setup,
						init_teardown),
		cmocka_unit_test_setup_teardown(test_init_twice_changes_nothing, init_setup,
						init_teardown),
		cmocka_unit_test_setup_teardown(test_init_refuses_readable_passphrase, init_setup,
						init_teardown),
		cmocka_unit_test_setup_teardown(test_init_bad_steward, init_setup, init_teardown),
		cmocka_unit_test_setup_teardown(test_init_warns_few_stewards, init_setup,
						init_teardown),
		cmocka_unit_test_setup_teardown(test_init_without_terminal, init_setup,
						init_teardown),
		cmocka_unit_test(test_dataset_list),
		cmocka_unit_test(test_reply_error),
		cmocka_unit_test(test_garbage_frame),
		cmocka_unit_test(test_import_tree),
		cmocka_unit_test(test_import_by_stat),
		cmocka_unit_test(test_import_by_stat_compact),
		cmocka_unit_test(test_import_json),
		cmocka_unit_test(test_import_refuses_symlink),
		cmocka_unit_test(test_import_refuses_fifo),
		cmocka_unit_test(test_import_refuses_socket),
		cmocka_unit_test(test_import_tree_changes_midway),
		cmocka_unit_test(test_import_dir_swapped_midway),
		cmocka_unit_test(test_import_by_stat_many_dirs),
		cmocka_unit_test(test_import_needed_file_vanished),
		cmocka_unit_test(test_import_begin_refused),
		cmocka_unit_test(test_import_keepalive_during_walk),
		cmocka_unit_test(test_import_walk_keep_cap),
		cmocka_unit_test(test_import_walk_dir_cap),
		cmocka_unit_test(test_import_daemon_refuses),
		cmocka_unit_test(test_import_interrupted),
		cmocka_unit_test(test_daemon_commands_do_not_load_rocksdb),
		cmocka_unit_test(test_grant_add_sends_absolute_times),
		cmocka_unit_test(test_grant_list_and_revoke),
		cmocka_unit_test(test_audit_show),
		cmocka_unit_test(test_help_command_and_abbreviations),
		cmocka_unit_test(test_completion_bash),
		cmocka_unit_test(test_json_errors),
		cmocka_unit_test(test_man_page_has_every_option),
		cmocka_unit_test(test_audit_export_refuses_forged_files),
	};

	/* A fake daemon that goes away mid-write must not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
