/* common: bounded buffers, cursors and I/O helpers. */
#include "common/common.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

bool cursor_take(struct cursor *c, void *out, size_t n)
{
	if (c->bad || c->left < n) {
		c->bad = true;
		return false;
	}
	if (n)
		memcpy(out, c->p, n);
	c->p += n;
	c->left -= n;
	return true;
}

bool cursor_ref(struct cursor *c, const uint8_t **ret, size_t n)
{
	if (c->bad || c->left < n) {
		c->bad = true;
		return false;
	}
	*ret = c->p;
	c->p += n;
	c->left -= n;
	return true;
}

bool cursor_u8(struct cursor *c, uint8_t *v)
{
	return cursor_take(c, v, 1);
}

bool cursor_le32(struct cursor *c, uint32_t *v)
{
	uint8_t b[4];

	if (!cursor_take(c, b, sizeof(b)))
		return false;
	*v = get_le32(b);
	return true;
}

bool cursor_le64(struct cursor *c, uint64_t *v)
{
	uint8_t b[8];

	if (!cursor_take(c, b, sizeof(b)))
		return false;
	*v = get_le64(b);
	return true;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n > b->max - b->len)
		return -E2BIG;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		uint8_t *d;

		while (cap < b->len + n)
			cap = cap > b->max / 2 ? b->max : cap * 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int buf_extend(struct buf *b, size_t n, uint8_t **ret)
{
	size_t at = b->len;

	if (n > b->max - b->len)
		return -E2BIG;
	if (b->len + n > b->cap) {
		/* Grown as buf_append() grows. */
		size_t cap = b->cap ? b->cap : 64;
		uint8_t *d;

		while (cap < b->len + n)
			cap = cap > b->max / 2 ? b->max : cap * 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	b->len += n;
	*ret = b->data + at;
	return 0;
}

int buf_u8(struct buf *b, uint8_t v)
{
	return buf_append(b, &v, 1);
}

int buf_le32(struct buf *b, uint32_t v)
{
	uint8_t t[4];

	put_le32(t, v);
	return buf_append(b, t, sizeof(t));
}

int buf_le64(struct buf *b, uint64_t v)
{
	uint8_t t[8];

	put_le64(t, v);
	return buf_append(b, t, sizeof(t));
}

void buf_free(struct buf *b)
{
	if (!b)
		return;
	free(b->data);
	*b = (struct buf){ .max = b->max };
}

int replace_file_at(int dirfd, const char *name, const void *buf, size_t n, mode_t mode,
		    bool durable)
{
	char tmp[PATH_MAX];
	int fd, r;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.%d.tmp", name, (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	(void)unlinkat(dirfd, tmp, 0);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	r = pwrite_all(fd, buf, n, 0);
	if (r == 0 && durable && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r == 0 && durable)
		r = fsync_dirfd(dirfd);
	if (r < 0)
		(void)unlinkat(dirfd, tmp, 0);
	return r;
}

int pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
	const uint8_t *p = buf;

	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, (off_t)off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

int pread_all(int fd, void *buf, size_t n, uint64_t off)
{
	uint8_t *p = buf;

	while (n > 0) {
		ssize_t r = pread(fd, p, n, (off_t)off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* read() (off < 0: pipes, terminals) or pread() at off until n bytes or EOF. */
static ssize_t io_read_full(int fd, void *buf, size_t n, int64_t off)
{
	uint8_t *p = buf;
	size_t got = 0;

	while (got < n) {
		ssize_t r = off < 0 ? read(fd, p + got, n - got)
				    : pread(fd, p + got, n - got, (off_t)(off + (int64_t)got));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

ssize_t read_full(int fd, void *buf, size_t n)
{
	return io_read_full(fd, buf, n, -1);
}

ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	if (off > INT64_MAX)
		return -EINVAL;
	return io_read_full(fd, buf, n, (int64_t)off);
}

int fsync_dirfd(int dirfd)
{
	if (fsync(dirfd) < 0)
		return -errno;
	return 0;
}

int64_t now_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t now_monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

const char *file_type_name(mode_t m)
{
	if (S_ISLNK(m))
		return "a symbolic link";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISBLK(m))
		return "a block device";
	if (S_ISFIFO(m))
		return "a FIFO (named pipe)";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISREG(m))
		return "a regular file";
	return "of an unknown type";
}

double progress_eta(uint64_t done_files, uint64_t total_files, uint64_t done_bytes,
		    uint64_t total_bytes, double secs)
{
	double eta = -1;

	if (!(secs >= 1))
		return -1;
	if (done_files > 0 && total_files >= done_files)
		eta = (double)(total_files - done_files) * secs / (double)done_files;
	if (done_bytes > 0 && total_bytes >= done_bytes) {
		double b = (double)(total_bytes - done_bytes) * secs / (double)done_bytes;

		if (b > eta)
			eta = b;
	}
	return eta;
}
