/* proto: framing, descriptor passing and argument checks for the control protocol. */
#include "common/proto.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"

static const uint8_t magic[2] = { 'E', 'C' };

int proto_parse_header(const uint8_t hdr[static PROTO_HEADER_LEN], enum proto_frame_type *ret_type,
		       uint32_t *ret_len)
{
	uint32_t len;

	if (hdr[0] != magic[0] || hdr[1] != magic[1])
		return err_set(-EPROTO, "not an Enclave control frame (bad magic)");
	if (hdr[2] != PROTO_VERSION)
		return err_set(-EPROTO, "control protocol version %u, this side speaks %u", hdr[2],
			       PROTO_VERSION);
	if (hdr[3] < PROTO_REQUEST || hdr[3] > PROTO_PARTIAL)
		return err_set(-EPROTO, "unknown frame type %u", hdr[3]);
	len = get_be32(hdr + 4);
	if (len > PROTO_FRAME_MAX)
		return err_set(-EMSGSIZE, "frame of %u bytes is over the limit of %u", len,
			       PROTO_FRAME_MAX);
	*ret_type = hdr[3];
	*ret_len = len;
	return 0;
}

int proto_parse_payload(const void *p, size_t n, json_t **ret_json)
{
	json_error_t e;
	json_t *j;

	j = json_loadb(p, n, JSON_REJECT_DUPLICATES, &e);
	if (!j)
		return err_set(-EBADMSG, "payload is not valid JSON: %s (at byte %d)", e.text,
			       e.position);
	if (!json_is_object(j)) {
		json_decref(j);
		return err_set(-EBADMSG, "payload is not a JSON object");
	}
	*ret_json = j;
	return 0;
}

int proto_send(int sock, enum proto_frame_type type, const json_t *j, int fd)
{
	return proto_send_fds(sock, type, j, &fd, fd >= 0 ? 1 : 0);
}

int proto_send_fds(int sock, enum proto_frame_type type, const json_t *j, const int *fds,
		   size_t nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * PROTO_FDS_MAX)];
	} ctl;
	uint8_t hdr[PROTO_HEADER_LEN];
	struct iovec iov[2];
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
	size_t len, done = 0, total;
	char *payload;
	int r = 0;

	if (nfds > PROTO_FDS_MAX)
		return err_set(-EINVAL, "%zu descriptors in one frame, more than %d", nfds,
			       PROTO_FDS_MAX);
	payload = json_dumps(j, JSON_COMPACT);
	if (!payload)
		return -ENOMEM;
	len = strlen(payload);
	if (len > PROTO_FRAME_MAX) {
		r = err_set(-E2BIG, "message of %zu bytes is over the limit of %u", len,
			    PROTO_FRAME_MAX);
		goto out;
	}
	hdr[0] = magic[0];
	hdr[1] = magic[1];
	hdr[2] = PROTO_VERSION;
	hdr[3] = (uint8_t)type;
	put_be32(hdr + 4, (uint32_t)len);
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ payload, len };
	total = sizeof(hdr) + len;
	if (nfds > 0) {
		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	/* The descriptor rides with the first sendmsg; the rest of a frame the kernel did not take at
	 * once follows as plain data. */
	while (done < total) {
		ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		done += (size_t)n;
		m.msg_control = NULL;
		m.msg_controllen = 0;
		while (n > 0 && m.msg_iovlen > 0) {
			size_t take = MIN((size_t)n, m.msg_iov[0].iov_len);

			m.msg_iov[0].iov_base = (char *)m.msg_iov[0].iov_base + take;
			m.msg_iov[0].iov_len -= take;
			n -= (ssize_t)take;
			if (m.msg_iov[0].iov_len == 0) {
				m.msg_iov++;
				m.msg_iovlen--;
			}
		}
	}
out:
	free(payload);
	return r;
}

/* Wait until sock is readable or timeout_ms passes (< 0: forever). */
static int wait_readable(int sock, int timeout_ms)
{
	struct pollfd p = { .fd = sock, .events = POLLIN };

	for (;;) {
		int n = poll(&p, 1, timeout_ms);

		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* Close every descriptor in the control messages of m. */
static void close_passed_fds(struct msghdr *m)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
		}
	}
}

/* Read exactly n bytes (the rest of a frame), collecting descriptors as they come (at most max;
 * more set *trunc and are closed). */
static int recv_exact(int sock, int timeout_ms, void *p, size_t n, int *fds, int *nfds,
		      int max, bool *trunc)
{
	size_t got = 0;

	while (got < n) {
		/* Room for PROTO_FDS_MAX + 1, so that one too many is seen, not cut (MSG_CTRUNC
		 * closes them all the same). */
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int) * (PROTO_FDS_MAX + 1))];
		} ctl;
		struct iovec iov = { (char *)p + got, n - got };
		/* Room for max + 1 only: the kernel installs no more descriptors than fit, so a
		 * peer cannot make us hold more than that per call. */
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
				    .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)(max + 1)) };
		ssize_t r;
		int w = wait_readable(sock, timeout_ms);

		if (w < 0)
			return w;
		r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (m.msg_flags & MSG_CTRUNC) {
			*trunc = true;
			close_passed_fds(&m);
		} else {
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
				if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
					continue;
				size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t i = 0; i < k; i++) {
					int fd;

					memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
					if (*nfds < max) {
						fds[(*nfds)++] = fd;
					} else {
						*trunc = true;
						close(fd);
					}
				}
			}
		}
		if (r == 0)
			return got == 0 ? -ECONNRESET : -EPROTO;
		got += (size_t)r;
	}
	return 0;
}

/* Receive a frame with at most max descriptors into fds; want_fds false: any is refused. */
static int recv_frame(int sock, int timeout_ms, enum proto_frame_type *ret_type, json_t **ret_json,
		      int *fds, int max, bool want_fds, int *ret_nfds)
{
	uint8_t hdr[PROTO_HEADER_LEN];
	int nfds = 0;
	bool trunc = false;
	enum proto_frame_type type;
	uint32_t len;
	char *payload = NULL;
	json_t *j = NULL;
	int r;

	r = recv_exact(sock, timeout_ms, hdr, sizeof(hdr), fds, &nfds, max, &trunc);
	if (r == -EPROTO)
		r = err_set(-EPROTO, "connection closed inside a frame header");
	if (r < 0)
		goto out;
	r = proto_parse_header(hdr, &type, &len);
	if (r < 0)
		goto out;
	payload = malloc(len ? len : 1);
	if (!payload) {
		r = -ENOMEM;
		goto out;
	}
	r = recv_exact(sock, timeout_ms, payload, len, fds, &nfds, max, &trunc);
	if (r == -ECONNRESET || r == -EPROTO)
		r = err_set(-EPROTO, "connection closed inside a frame of %u bytes", len);
	if (r < 0)
		goto out;
	r = proto_parse_payload(payload, len, &j);
	if (r < 0)
		goto out;
	if (trunc) {
		r = err_set(-EBADMSG, "frame carried more than %d file descriptor(s)", max);
		goto out;
	}
	if (nfds > 0 && !want_fds) {
		r = err_set(-EBADMSG, "frame carried a file descriptor where none is expected");
		goto out;
	}
	*ret_type = type;
	*ret_json = j;
	j = NULL;
	*ret_nfds = nfds;
	nfds = 0;
out:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	json_decref(j);
	free(payload);
	return r;
}

int proto_recv(int sock, int timeout_ms, enum proto_frame_type *ret_type, json_t **ret_json,
	       int *ret_fd)
{
	int fd = -1, n = 0;
	int r = recv_frame(sock, timeout_ms, ret_type, ret_json, &fd, 1, ret_fd != NULL, &n);

	if (r == 0 && ret_fd)
		*ret_fd = n ? fd : -1;
	return r;
}

int proto_recv_fds(int sock, int timeout_ms, enum proto_frame_type *ret_type, json_t **ret_json,
		   int *fds, size_t max, size_t *ret_nfds)
{
	int n = 0, r;

	if (max < 1 || max > PROTO_FDS_MAX)
		return err_set(-EINVAL, "descriptors wanted: %zu, not 1 to %d", max, PROTO_FDS_MAX);
	r = recv_frame(sock, timeout_ms, ret_type, ret_json, fds, (int)max, true, &n);
	if (r == 0)
		*ret_nfds = (size_t)n;
	return r;
}

static int arg_get(const json_t *args, const char *name, bool required, json_t **ret)
{
	json_t *v = json_is_object(args) ? json_object_get(args, name) : NULL;

	if (!v || json_is_null(v)) {
		if (required)
			return err_set(-EINVAL, "argument \"%s\" is required", name);
		*ret = NULL;
		return 0;
	}
	*ret = v;
	return 0;
}

int proto_arg_string(const json_t *args, const char *name, bool required, size_t max_len,
		     const char **ret)
{
	json_t *v = NULL;
	int r = arg_get(args, name, required, &v);

	if (r < 0 || !v)
		return r;
	if (!json_is_string(v))
		return err_set(-EINVAL, "argument \"%s\" must be a string", name);
	if (json_string_length(v) > max_len)
		return err_set(-EINVAL, "argument \"%s\" is longer than %zu bytes", name, max_len);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return err_set(-EINVAL, "argument \"%s\" contains a NUL byte", name);
	*ret = json_string_value(v);
	return 0;
}

int proto_arg_u64(const json_t *args, const char *name, bool required, uint64_t max,
		  uint64_t *ret)
{
	json_t *v = NULL;
	int r = arg_get(args, name, required, &v);

	if (r < 0 || !v)
		return r;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max)
		return err_set(-EINVAL, "argument \"%s\" must be an integer from 0 to %llu", name,
			       (unsigned long long)max);
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

int proto_arg_i64(const json_t *args, const char *name, bool required, int64_t *ret)
{
	json_t *v = NULL;
	int r = arg_get(args, name, required, &v);

	if (r < 0 || !v)
		return r;
	if (!json_is_integer(v))
		return err_set(-EINVAL, "argument \"%s\" must be an integer", name);
	*ret = json_integer_value(v);
	return 0;
}

int proto_arg_bool(const json_t *args, const char *name, bool required, bool *ret)
{
	json_t *v = NULL;
	int r = arg_get(args, name, required, &v);

	if (r < 0 || !v)
		return r;
	if (!json_is_boolean(v))
		return err_set(-EINVAL, "argument \"%s\" must be true or false", name);
	*ret = json_is_true(v);
	return 0;
}

int proto_args_known(const json_t *args, const char *const *known)
{
	const char *key;
	json_t *v;

	if (!json_is_object(args))
		return err_set(-EINVAL, "\"args\" must be an object");
	json_object_foreach((json_t *)args, key, v) {
		bool ok = false;

		for (size_t i = 0; known[i] && !ok; i++)
			ok = strcmp(key, known[i]) == 0;
		if (!ok)
			return err_set(-EINVAL, "unknown argument \"%s\"", key);
	}
	return 0;
}

static const struct {
	int err;
	const char *code;
} error_codes[] = {
	{ EACCES, "permission_denied" },   { EPERM, "permission_denied" },
	{ ENOENT, "not_found" },           { EEXIST, "exists" },
	{ EINVAL, "invalid_argument" },    { EBADMSG, "malformed_request" },
	{ EPROTO, "protocol_error" },      { EMSGSIZE, "too_large" },
	{ E2BIG, "too_large" },            { EBUSY, "busy" },
	{ EIO, "io_error" },               { ENOSPC, "no_space" },
	{ EOPNOTSUPP, "unknown_operation" }, { ENOTDIR, "not_a_directory" },
	{ EISDIR, "is_a_directory" },      { ENOMEM, "out_of_memory" },
	{ ECANCELED, "cancelled" },        { EROFS, "read_only" },
	{ ETIMEDOUT, "timed_out" },        { ESRCH, "no_such_principal" },
	{ EILSEQ, "invalid_data" },        { ENOKEY, "no_key" },
	{ EKEYREJECTED, "key_rejected" },
};

const char *proto_error_code(int err)
{
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < ARRAY_SIZE(error_codes); i++)
		if (error_codes[i].err == err)
			return error_codes[i].code;
	return "error";
}

/* ---- The compact import.stat batch --------------------------------------------------------- */

/* zigzag(d) = (d << 1) ^ (d >> 63), d a signed 64-bit difference: small magnitudes of either sign
 * become small numbers (0, -1, 1, -2 ... as 0, 1, 2, 3 ...), so their varints are short. */
static uint64_t zigzag(uint64_t d)
{
	return (d << 1) ^ (uint64_t)-(int64_t)(d >> 63);
}

static uint64_t unzigzag(uint64_t z)
{
	return (z >> 1) ^ (uint64_t)-(int64_t)(z & 1);
}

/* Unsigned LEB128: 7 bits a byte, least significant first, the high bit set on all but the last. */
static size_t varint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	for (; v >= 0x80; v >>= 7)
		p[n++] = (uint8_t)(v | 0x80);
	p[n++] = (uint8_t)v;
	return n;
}

/* A time as nanoseconds since 1970, modulo 2^64: no overflow whatever the time (the daemon refuses
 * those out of range). */
static uint64_t timespec_ns(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_nsec;
}

char *proto_stats64(const struct stat *const *sts, size_t n)
{
	uint64_t dev = 0, ino = 0, mode = 0, mtime = 0;
	size_t len = 0, cap;
	uint8_t *b;
	char *out = NULL;

	if (n > (SIZE_MAX / 2) / PROTO_STAT_REC_MAX)
		return NULL;
	b = malloc(n * PROTO_STAT_REC_MAX + 1);
	if (!b)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const struct stat *st = sts[i];
		uint64_t m = timespec_ns(&st->st_mtim);

		len += varint_put(b + len, zigzag((uint64_t)st->st_dev - dev));
		len += varint_put(b + len, zigzag((uint64_t)st->st_ino - ino));
		len += varint_put(b + len, (uint64_t)(int64_t)st->st_size);
		len += varint_put(b + len, zigzag((uint64_t)st->st_mode - mode));
		len += varint_put(b + len, zigzag(m - mtime));
		len += varint_put(b + len, zigzag(timespec_ns(&st->st_ctim) - m));
		dev = (uint64_t)st->st_dev;
		ino = (uint64_t)st->st_ino;
		mode = (uint64_t)st->st_mode;
		mtime = m;
	}
	cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	out = malloc(cap);
	if (out)
		sodium_bin2base64(out, cap, b, len, sodium_base64_VARIANT_ORIGINAL);
	free(b);
	return out;
}

bool proto_time_ns_valid(int64_t ns)
{
	return ns >= INT64_MIN + 1000000000;
}

/* Nanoseconds since 1970 as a timespec whose nanoseconds are in [0, 1e9), as the kernel's. */
static struct timespec ns_timespec(int64_t ns)
{
	struct timespec t = { .tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000) };

	if (t.tv_nsec < 0)
		t.tv_sec--, t.tv_nsec += 1000000000;
	return t;
}

static const char *const stat_fields[6] = { "dev", "ino", "size", "mode", "mtime", "ctime" };

/* Read varint k (stat_fields[k]) of file i at b[*pos ..), of len bytes in all: complete, at most
 * 64 bits, in its shortest form (no last byte 0 after another). -EINVAL naming both otherwise. */
static int varint_get(const uint8_t *b, size_t len, size_t *pos, size_t i, unsigned k,
		      uint64_t *ret)
{
	uint64_t v = 0;
	size_t p = *pos;

	for (unsigned shift = 0;; shift += 7) {
		uint8_t c;

		if (p == len)
			return err_set(-EINVAL, "stat %zu of the batch: \"stats64\" ends inside its %s "
				       "(cut short)", i, stat_fields[k]);
		c = b[p++];
		/* The tenth byte holds bit 63 alone; a continuation or more bits: too long. */
		if (shift == 63 && c > 1)
			return err_set(-EINVAL, "stat %zu of the batch: its %s is longer than 64 "
				       "bits", i, stat_fields[k]);
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			if (c == 0 && shift > 0)
				return err_set(-EINVAL, "stat %zu of the batch: its %s is not in its "
					       "shortest form", i, stat_fields[k]);
			break;
		}
	}
	*pos = p;
	*ret = v;
	return 0;
}

/* Decode and check the n records of b[0 .. len) (the decoded "stats64"); into out[] when out is
 * not NULL (called first without, so that a refused batch sets nothing). */
static int stat_records(const uint8_t *b, size_t len, size_t n, struct stat *out)
{
	uint64_t dev = 0, ino = 0, mode = 0, mtime = 0, v[6];
	size_t pos = 0;
	int r;

	for (size_t i = 0; i < n; i++) {
		uint64_t ctime;

		for (unsigned k = 0; k < 6; k++)
			if ((r = varint_get(b, len, &pos, i, k, &v[k])) < 0)
				return r;
		dev += unzigzag(v[0]);
		ino += unzigzag(v[1]);
		mode += unzigzag(v[3]);
		mtime += unzigzag(v[4]);
		ctime = mtime + unzigzag(v[5]);
		if (v[2] > INT64_MAX)
			return err_set(-EINVAL, "stat %zu of the batch: a negative size", i);
		if (mode > UINT32_MAX)
			return err_set(-EINVAL, "stat %zu of the batch: a mode over 32 bits", i);
		if (!proto_time_ns_valid((int64_t)mtime) || !proto_time_ns_valid((int64_t)ctime))
			return err_set(-EINVAL, "stat %zu of the batch: a time out of range", i);
		if (out) {
			struct stat *st = &out[i];

			memset(st, 0, sizeof(*st));
			st->st_dev = (dev_t)dev;
			st->st_ino = (ino_t)ino;
			st->st_size = (off_t)v[2];
			st->st_mode = (mode_t)mode;
			st->st_mtim = ns_timespec((int64_t)mtime);
			st->st_ctim = ns_timespec((int64_t)ctime);
		}
	}
	if (pos != len)
		return err_set(-EINVAL, "\"stats64\" holds %zu bytes after the stat of the batch's "
			       "last file", len - pos);
	return 0;
}

int proto_stat_unpack(const char *dir, size_t dir_len, const char *names, size_t names_len,
		      const char *stats64, size_t stats64_len, size_t max, size_t path_max,
		      char **ret_buf, const char **ret_paths, struct stat *ret_sts, size_t *ret_n)
{
	size_t n = 1, i, off, start, cap, got = 0;
	uint8_t *bin = NULL;
	char *buf;
	int r;

	/* The shape first, from the lengths alone: nothing is allocated for a batch refused here. */
	if (memchr(dir, '\0', dir_len) || memchr(names, '\0', names_len) ||
	    memchr(stats64, '\0', stats64_len))
		return err_set(-EINVAL, "a compact import.stat batch holds a NUL byte");
	for (i = 0; i < names_len; i++)
		n += names[i] == '/';
	if (n > max)
		return err_set(-E2BIG, "a batch of %zu files, more than %zu", n, max);
	if (dir_len > path_max)
		return err_set(-EINVAL, "the batch's directory is longer than %zu bytes", path_max);
	/* Each name: not empty, its path not too long. */
	for (i = 0, start = 0; i < n; i++) {
		size_t end = start;

		while (end < names_len && names[end] != '/')
			end++;
		if (end == start)
			return err_set(-EINVAL, "name %zu of the batch is empty", i);
		if ((dir_len ? dir_len + 1 : 0) + (end - start) > path_max)
			return err_set(-EINVAL, "name %zu of the batch: its path is longer than %zu "
				       "bytes", i, path_max);
		start = end + 1;
	}
	/* Then the stats: no more text than n records of the longest kind take, so the decoded
	 * bytes are bounded by the batch before anything is allocated for them. */
	cap = n * PROTO_STAT_REC_MAX;
	if (stats64_len == 0 || stats64_len > (cap + 2) / 3 * 4)
		return err_set(-EINVAL, "a batch of %zu names came with %zu characters of "
			       "\"stats64\" (1 to %zu)", n, stats64_len, (cap + 2) / 3 * 4);
	bin = malloc(cap);
	if (!bin)
		return err_set(-ENOMEM, "out of memory");
	if (base64_decode_public(stats64, stats64_len, bin, cap, &got) < 0) {
		free(bin);
		return err_set(-EINVAL, "\"stats64\" is not canonical base64 (RFC 4648, padded)");
	}
	r = stat_records(bin, got, n, NULL);
	if (r < 0) {
		free(bin);
		return r;
	}
	/* Every path "dir/name", NUL-terminated: at most n * (dir_len + 1) + names_len + 1 bytes. */
	buf = malloc(n * (dir_len + 1) + names_len + 1);
	if (!buf) {
		free(bin);
		return err_set(-ENOMEM, "out of memory");
	}
	stat_records(bin, got, n, ret_sts);
	free(bin);
	for (i = 0, start = 0, off = 0; i < n; i++) {
		size_t end = start;

		while (end < names_len && names[end] != '/')
			end++;
		ret_paths[i] = buf + off;
		if (dir_len) {
			memcpy(buf + off, dir, dir_len);
			buf[off + dir_len] = '/';
			off += dir_len + 1;
		}
		memcpy(buf + off, names + start, end - start);
		off += end - start;
		buf[off++] = '\0';
		start = end + 1;
	}
	*ret_buf = buf;
	*ret_n = n;
	return 0;
}
