/* crypto: passphrases (and other secret byte strings) read from a file descriptor, a private file
 * or the terminal, held in guarded memory. */
#include "crypto/crypto.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>

#include <sodium.h>

#include "common/common.h"

/* Room for a passphrase of CRYPTO_PASSPHRASE_MAX bytes followed by "\r\n". */
#define READ_BUF_LEN (CRYPTO_PASSPHRASE_MAX + 2)

struct crypto_secret {
	uint8_t *data;	/* len bytes, sodium_malloc; owned */
	size_t len;	/* > 0 */
};

/* Copy the first len bytes of a read buffer into a secret of exactly that size, so the guard page
 * sits right after the last byte. The caller keeps (and wipes) the read buffer. */
static int secret_new(const uint8_t *data, size_t len, crypto_secret **ret_secret)
{
	crypto_secret *s = NULL;

	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->data = sodium_malloc(len);
	if (!s->data) {
		free(s);
		return -ENOMEM;
	}
	memcpy(s->data, data, len);
	s->len = len;
	*ret_secret = s;
	return 0;
}

/* The passphrase's length once one trailing "\n" or "\r\n" is dropped (a lone "\r" is kept, it
 * may be part of the passphrase): -E2BIG beyond CRYPTO_PASSPHRASE_MAX, -EINVAL if empty. */
static int passphrase_len(const uint8_t *buf, size_t len, size_t *ret_len)
{
	if (len > 0 && buf[len - 1] == '\n') {
		len--;
		if (len > 0 && buf[len - 1] == '\r')
			len--;
	}
	if (len > CRYPTO_PASSPHRASE_MAX)
		return -E2BIG;
	if (len == 0)
		return -EINVAL;
	*ret_len = len;
	return 0;
}

/* Reads until EOF into a guarded buffer. When the buffer fills up, one more byte is read to tell
 * "exactly the maximum plus a newline" from "too long"; that byte is wiped too. */
int crypto_passphrase_read_fd(int fd, crypto_secret **ret_secret)
{
	uint8_t *buf = NULL;
	uint8_t extra = 0;
	ssize_t n;
	size_t len;
	int r;

	if (fd < 0 || !ret_secret)
		return -EINVAL;
	buf = sodium_malloc(READ_BUF_LEN);
	if (!buf)
		return -ENOMEM;
	n = read_full(fd, buf, READ_BUF_LEN);
	if (n < 0) {
		r = (int)n;
		goto out_free_buf;
	}
	if ((size_t)n == READ_BUF_LEN) {
		ssize_t more = read_full(fd, &extra, 1);

		sodium_memzero(&extra, sizeof(extra));
		if (more < 0) {
			r = (int)more;
			goto out_free_buf;
		}
		if (more > 0) {
			r = -E2BIG;
			goto out_free_buf;
		}
	}
	r = passphrase_len(buf, (size_t)n, &len);
	if (r == 0)
		r = secret_new(buf, len, ret_secret);

out_free_buf:
	sodium_free(buf);
	return r;
}

/* O_NOFOLLOW: a symlink planted at the path is refused (-ELOOP) rather than followed. O_NONBLOCK
 * (not in the header's flag list, and without effect on regular files) keeps a FIFO planted at the
 * path from blocking us in open(); such a file is then refused as not regular. */
int crypto_passphrase_read_file(const char *path, crypto_secret **ret_secret)
{
	struct stat st;
	int fd = -1;
	int r;

	if (!path || !ret_secret)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto out_close;
	}
	if (st.st_mode & 077) {
		r = -EPERM;
		goto out_close;
	}
	r = crypto_passphrase_read_fd(fd, ret_secret);

out_close:
	close(fd);
	return r;
}

/* Write all of a string to the terminal. -errno. */
static int tty_write(int fd, const char *s)
{
	size_t n = strlen(s);

	while (n > 0) {
		ssize_t w = write(fd, s, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Show prompt and read one line (echo is already off) byte by byte into a new guarded buffer, so
 * no part of the line is ever copied elsewhere. A line longer than the maximum fails with -E2BIG;
 * its rest stays in the terminal's input queue, which the caller flushes when it restores the
 * settings (TCSAFLUSH). On success *ret_buf (READ_BUF_LEN bytes) and *ret_len are the caller's. */
static int tty_read_line(int fd, const char *prompt, uint8_t **ret_buf, size_t *ret_len)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	bool eol = false;
	int r;

	r = tty_write(fd, prompt);
	if (r < 0)
		return r;
	buf = sodium_malloc(READ_BUF_LEN);
	if (!buf)
		return -ENOMEM;
	while (!eol) {
		ssize_t n;

		if (len == READ_BUF_LEN) {
			r = -E2BIG;
			goto out_free_buf;
		}
		n = read(fd, buf + len, 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out_free_buf;
		}
		if (n == 0)
			break;	/* end of file (^D): take what we have */
		eol = buf[len] == '\n';
		len++;
	}
	r = passphrase_len(buf, len, &len);
	if (r < 0)
		goto out_free_buf;
	*ret_buf = buf;
	*ret_len = len;
	return 0;

out_free_buf:
	sodium_free(buf);
	return r;
}

/* Reads from /dev/tty, never stdin, so a passphrase cannot come from a redirected file by accident
 * (crypto_passphrase_read_fd exists for that). Echo is turned off, ECHONL keeps the user's Enter
 * visible. The terminal settings are restored on every return path; SIGINT is not handled (the
 * caller's terminal is left without echo if we are killed in the middle). */
int crypto_passphrase_prompt(const char *prompt, bool confirm, crypto_secret **ret_secret)
{
	struct termios saved, quiet;
	crypto_secret *secret = NULL;
	uint8_t *first = NULL, *second = NULL;
	size_t first_len = 0, second_len = 0;
	int fd = -1;
	int r;

	if (!prompt || !ret_secret)
		return -EINVAL;
	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -ENXIO;
	if (tcgetattr(fd, &saved) < 0) {
		r = -ENXIO;
		goto out_close;
	}
	quiet = saved;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	if (tcsetattr(fd, TCSAFLUSH, &quiet) < 0) {
		r = -errno;
		goto out_close;
	}

	r = tty_read_line(fd, prompt, &first, &first_len);
	if (r < 0)
		goto out_restore;
	if (confirm) {
		r = tty_read_line(fd, "Repeat to confirm: ", &second, &second_len);
		if (r < 0)
			goto out_free;
		if (first_len != second_len || sodium_memcmp(first, second, first_len) != 0) {
			r = -EINVAL;
			goto out_free;
		}
	}
	r = secret_new(first, first_len, &secret);

out_free:
	sodium_free(second);	/* NULL is fine */
	sodium_free(first);
out_restore:
	/* TCSAFLUSH also discards whatever the user typed past a too-long line. A terminal we could
	 * not restore is reported even when reading worked: the user would be left without echo. */
	if (tcsetattr(fd, TCSAFLUSH, &saved) < 0 && r >= 0)
		r = -errno;
	if (r >= 0)
		*ret_secret = secret;
	else
		crypto_secret_free(secret);
out_close:
	close(fd);
	return r;
}

/* Borrowed until crypto_secret_free(). */
const uint8_t *crypto_secret_data(const crypto_secret *s)
{
	return s->data;
}

size_t crypto_secret_len(const crypto_secret *s)
{
	return s->len;
}

/* sodium_free wipes the bytes before unmapping them. */
void crypto_secret_free(crypto_secret *s)
{
	if (!s)
		return;
	sodium_free(s->data);
	free(s);
}
