/* testutil: helpers shared by the test programs. */
#define _XOPEN_SOURCE 700
#include "tests/testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/common.h"

static void die(const char *what, const char *path)
{
	fprintf(stderr, "testutil: %s %s: %s\n", what, path, strerror(errno));
	abort();
}

char *tu_mkdtemp(const char *tag)
{
	const char *base = getenv("ENCLAVE_TEST_TMPDIR");
	char *p;

	if (!base || !*base)
		base = "/tmp";
	mkdir(base, 0700);
	p = tu_fmt("%s/%s.XXXXXX", base, tag);
	if (!mkdtemp(p))
		die("mkdtemp", p);
	return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

void tu_rm_rf(const char *path)
{
	if (path)
		nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

void tu_fill(uint8_t *buf, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;

	for (size_t i = 0; i < n; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		for (size_t j = 0; j < 8 && i + j < n; j++)
			buf[i + j] = (uint8_t)(x >> (8 * j));
	}
}

void tu_write_file(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);

	if (fd < 0)
		die("open", path);
	if (pwrite_all(fd, data, n, 0) < 0)
		die("write", path);
	close(fd);
}

void tu_write_seeded(const char *path, size_t n, uint64_t seed)
{
	uint8_t *b = malloc(n ? n : 1);

	if (!b)
		die("malloc for", path);
	tu_fill(b, n, seed);
	tu_write_file(path, b, n);
	free(b);
}

uint8_t *tu_read_file(const char *path, size_t *ret_len)
{
	struct stat s;
	uint8_t *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &s) < 0)
		die("open", path);
	b = malloc((size_t)s.st_size + 1);
	if (!b || read_full(fd, b, (size_t)s.st_size) != s.st_size)
		die("read", path);
	close(fd);
	*ret_len = (size_t)s.st_size;
	return b;
}

crypto_secret *tu_pass(const char *s)
{
	crypto_secret *sec = NULL;
	int p[2];

	if (pipe(p) < 0)
		die("pipe", "");
	if (write(p[1], s, strlen(s)) != (ssize_t)strlen(s))
		die("write", "pipe");
	close(p[1]);
	if (crypto_passphrase_read_fd(p[0], &sec) < 0)
		die("read passphrase", "");
	close(p[0]);
	return sec;
}

char *tu_fmt(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

void tu_seed_file(size_t n, uint64_t seed, const char *fmt, ...)
{
	va_list ap;
	char *p = NULL;

	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) < 0)
		abort();
	va_end(ap);
	tu_write_seeded(p, n, seed);
	free(p);
}

void tu_copy_file(const char *src, const char *dst)
{
	size_t n;
	uint8_t *b = tu_read_file(src, &n);

	tu_write_file(dst, b, n);
	free(b);
}

void tu_copy_flat_dir(const char *src, const char *dst)
{
	DIR *d = opendir(src);

	if (!d || mkdir(dst, 0700) < 0)
		die("copy", src);
	for (struct dirent *de; (de = readdir(d));) {
		char *from = tu_fmt("%s/%s", src, de->d_name), *to;
		struct stat s;

		if (lstat(from, &s) < 0 || !S_ISREG(s.st_mode)) {
			free(from);
			continue;
		}
		to = tu_fmt("%s/%s", dst, de->d_name);
		tu_copy_file(from, to);
		free(from);
		free(to);
	}
	closedir(d);
}

uint64_t tu_dir_bytes(const char *dir, unsigned *ret_count)
{
	DIR *d = opendir(dir);
	uint64_t total = 0;
	unsigned n = 0;

	if (!d)
		die("opendir", dir);
	for (struct dirent *de; (de = readdir(d));) {
		char *p = tu_fmt("%s/%s", dir, de->d_name);
		struct stat s;

		if (lstat(p, &s) == 0 && S_ISREG(s.st_mode)) {
			total += (uint64_t)s.st_size;
			n++;
		}
		free(p);
	}
	closedir(d);
	*ret_count = n;
	return total;
}

int tu_run_argv(char *const argv[])
{
	int status = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return 127;
	if (pid == 0) {
		execvp(argv[0], argv);
		fprintf(stderr, "testutil: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 127;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void tu_copy_tree(const char *src, const char *dst)
{
	if (tu_run_argv((char *const[]){ "cp", "-a", (char *)src, (char *)dst, NULL }) != 0) {
		fprintf(stderr, "testutil: cp -a %s %s failed\n", src, dst);
		abort();
	}
}
