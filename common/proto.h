/* proto: the control protocol between enclavectl and enclaved (docs/PROTOCOL.md).
 *
 * A connection on the daemon's Unix stream socket carries frames:
 *
 *   offset 0  2 bytes  magic "EC"
 *          2  1 byte   protocol version, PROTO_VERSION
 *          3  1 byte   frame type (enum proto_frame_type)
 *          4  4 bytes  payload length, big-endian, at most PROTO_FRAME_MAX
 *          8  length   payload: one JSON object, UTF-8
 *
 * File descriptors travel as SCM_RIGHTS ancillary data on the frame's first byte: at most one
 * with proto_send()/proto_recv(), at most PROTO_FDS_MAX in one message with proto_send_fds()/
 * proto_recv_fds() (the batched import, import.files). The client sends one request and reads frames until the reply: zero or
 * more PROTO_PARTIAL frames (progress, streamed records), then exactly one PROTO_REPLY.
 *
 * Contract: functions return 0 on success and -errno on failure, with err_detail() saying what
 * was wrong with a frame; ret_* outputs are last and untouched on failure.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define PROTO_VERSION 1
#define PROTO_HEADER_LEN 8
/* Largest payload either side accepts; larger is refused before it is read. */
#define PROTO_FRAME_MAX (1u << 20)
/* File descriptors one frame may carry: a batch of the import (import.files) sends one per file
 * in one SCM_RIGHTS message. More is refused and every one of them closed. */
#define PROTO_FDS_MAX 64
/* A batch of the import (import.files): at most this many files, and when it holds more than one,
 * at most this many bytes of file data in all (a larger file travels alone), so that one request
 * does not hold the daemon's reply, and the progress, for long. */
#define PROTO_IMPORT_BATCH_FILES PROTO_FDS_MAX
#define PROTO_IMPORT_BATCH_BYTES (64u << 20)
/* A batch of import.stat (files told of by their stat, no descriptor): at most this many files
 * (the store's STORE_IMPORT_CLAIM_MAX), and enclavectl sends at most this many bytes of paths in
 * one, so that the request stays well under PROTO_FRAME_MAX. */
#define PROTO_IMPORT_STAT_FILES 256u
#define PROTO_IMPORT_STAT_PATH_BYTES (512u << 10)

enum proto_frame_type {
	PROTO_REQUEST = 1,   /* client -> daemon: {"op": "...", "args": {...}} */
	PROTO_REPLY = 2,     /* daemon -> client: {"ok": true, "result": {...}} or
			      * {"ok": false, "error": {"code": "...", "message": "..."}} */
	PROTO_PARTIAL = 3,   /* daemon -> client, before the reply: progress or a batch of data */
};

/* Send one frame with payload j (serialized compactly) and, if fd >= 0, that descriptor (borrowed).
 * -E2BIG payload over PROTO_FRAME_MAX; -EPIPE / -ECONNRESET the peer went away. */
int proto_send(int sock, enum proto_frame_type type, const json_t *j, int fd);

/* As proto_send() with nfds (0..PROTO_FDS_MAX) descriptors (borrowed), all in one SCM_RIGHTS
 * message on the frame's first byte. -EINVAL nfds over PROTO_FDS_MAX. */
int proto_send_fds(int sock, enum proto_frame_type type, const json_t *j, const int *fds,
		   size_t nfds);
/* As proto_recv() accepting up to max (1..PROTO_FDS_MAX) descriptors: they are put in fds[] (the
 * caller owns them) and their number in *ret_nfds. A frame carrying more than max is -EBADMSG,
 * with every descriptor it carried closed. */
int proto_recv_fds(int sock, int timeout_ms, enum proto_frame_type *ret_type, json_t **ret_json,
		   int *fds, size_t max, size_t *ret_nfds);

/* Receive one frame. On success *ret_json is a new reference to the payload object, *ret_type its
 * type, and *ret_fd the descriptor it carried or -1 (ret_fd NULL: any descriptor is closed and the
 * frame refused with -EBADMSG). Errors:
 *   -ECONNRESET  the peer closed the connection before a frame began (a clean end);
 *   -EPROTO      bad magic, unknown version or type, a frame cut short: the stream cannot be
 *                trusted any more and the connection must be closed;
 *   -EMSGSIZE    the header announces more than PROTO_FRAME_MAX; nothing of the payload is read
 *                and the connection must be closed;
 *   -EBADMSG     a well-framed payload that is not one JSON object (or carries too many or
 *                unwanted descriptors): the stream is still in step and the peer can be told;
 *   -ETIMEDOUT   nothing arrived for timeout_ms (< 0: wait forever) before or within a frame. */
int proto_recv(int sock, int timeout_ms, enum proto_frame_type *ret_type, json_t **ret_json,
	       int *ret_fd);

/* Parse a payload already in memory (used by proto_recv and the fuzz harness): one JSON object,
 * no duplicate keys, nothing after it. -EBADMSG with err_detail(). */
int proto_parse_payload(const void *p, size_t n, json_t **ret_json);
/* Check a frame header; *ret_len is the payload length. -EPROTO / -EMSGSIZE as proto_recv. */
int proto_parse_header(const uint8_t hdr[static PROTO_HEADER_LEN], enum proto_frame_type *ret_type,
		       uint32_t *ret_len);

/* Helpers for reading request arguments with clear errors (err_detail names the field).
 * Missing optional fields leave *ret untouched and return 0; a present field of the wrong type,
 * or out of range, is -EINVAL. */
int proto_arg_string(const json_t *args, const char *name, bool required, size_t max_len,
		     const char **ret);
int proto_arg_u64(const json_t *args, const char *name, bool required, uint64_t max,
		  uint64_t *ret);
int proto_arg_i64(const json_t *args, const char *name, bool required, int64_t *ret);
int proto_arg_bool(const json_t *args, const char *name, bool required, bool *ret);
/* -EINVAL if args has a key not in the NULL-terminated list `known`. */
int proto_args_known(const json_t *args, const char *const *known);

/* The compact form of an import.stat batch (docs/PROTOCOL.md "Importing"; issue 16): {"dir": D,
 * "names": "N1/N2/...", "stats64": B64} instead of an array of paths and an array of six-integer
 * arrays, which cost the daemon a JSON value per path and per number. Every file is in directory
 * D ("" the root): its path is D/Ni (Ni when D is ""), names joined by '/' (a name never holds
 * one). "stats64" is canonical standard base64 (RFC 4648 section 4, padded) of one record per
 * file, in the order of the names: six unsigned LEB128 varints (shortest form, at most 64 bits),
 *   zigzag(dev - previous dev), zigzag(ino - previous ino), size,
 *   zigzag(mode - previous mode), zigzag(mtime - previous mtime), zigzag(ctime - this mtime),
 * differences taken modulo 2^64 as signed 64-bit integers, zigzag(d) = (d << 1) ^ (d >> 63), the
 * "previous" of the first file 0; times in nanoseconds since 1970. Files of one directory share
 * dev and mode and have close inode numbers and times, so a record is about 10 bytes, not the 44
 * of the hex form it replaced (about 14 characters of JSON against 88). */
#define PROTO_STAT_REC_MAX 60u      /* the longest record: six varints of 10 bytes */
struct stat;
/* Can a time of ns nanoseconds since 1970 be a timespec (seconds, nanoseconds in [0, 1e9)) whose
 * seconds * 1e9 + nanoseconds is ns again without overflow? Not within 1 s of INT64_MIN. */
bool proto_time_ns_valid(int64_t ns);
/* The "stats64" text of n stats (sts[i] borrowed), NUL-terminated, in memory the caller frees;
 * NULL when out of memory. Only st_dev, st_ino, st_size, st_mode, st_mtim and st_ctim count. */
char *proto_stats64(const struct stat *const *sts, size_t n);
/* Check and decode a compact batch (each string with its length; the three must hold no NUL).
 * The batch is checked whole: at least one file and at most max (-E2BIG); "stats64" canonical
 * base64 holding exactly one record per name, each varint complete and in its shortest form,
 * nothing after the last record (-EINVAL); no empty name (-EINVAL); each path at most path_max
 * bytes (-EINVAL); no size above INT64_MAX, no mode above UINT32_MAX, no time that is not
 * proto_time_ns_valid() (-EINVAL); err_detail() says which file. On success the paths are
 * ret_paths[0 .. *ret_n), NUL-terminated, in *ret_buf (the caller frees it), and their stats
 * ret_sts[] (st_dev, st_ino, st_size, st_mode, st_mtim, st_ctim; the rest zero); both arrays
 * have room for max. Nothing is set on failure. */
int proto_stat_unpack(const char *dir, size_t dir_len, const char *names, size_t names_len,
		      const char *stats64, size_t stats64_len, size_t max, size_t path_max,
		      char **ret_buf, const char **ret_paths, struct stat *ret_sts, size_t *ret_n);

/* Error codes carried in replies ({"ok": false, "error": {"code": ..., "message": ...}}), and the
 * errno each stands for. */
const char *proto_error_code(int err);
