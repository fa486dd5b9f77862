/* control_crypt4gh: the store's Crypt4GH site key, and Crypt4GH files met by an import
 * (docs/CRYPT4GH.md, docs/PROTOCOL.md "crypt4gh.*").
 *
 * The site key is an X25519 secret wrapped under the master key in keys/crypt4gh.key
 * (store_crypt4gh_key_put/get). It is unwrapped for each file that needs it and freed after: the
 * daemon keeps no unwrapped copy between files. A steward makes it here (crypt4gh.keygen) or
 * hands an existing one over (crypt4gh.import: the 32 secret bytes through a pipe, never in a
 * frame, so they pass through no JSON buffer); either is recorded (crypt4gh_key_create) with the
 * public key's fingerprint, before the key file is written.
 *
 * An import hands every regular file to import_file_any(): a file that begins with the magic
 * "crypt4gh" is decrypted as it is read (crypto/crypt4gh.c's decoder, segment by segment, in
 * memory) and its plaintext imported under its name without ".c4gh"; every segment is
 * authenticated before any of its bytes is encrypted into a pack, so a file that fails half way
 * fails the import, and a failed import commits nothing. Each such file gets an audit record
 * (import_crypt4gh) naming it (sealed) with its header's SHA-256.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "crypto/crypt4gh.h"
#include "daemon/control_internal.h"
#include "daemon/daemon.h"

#define C4GH_SUFFIX ".c4gh"
/* The first read of a header; a longer header is read again whole (up to C4GH_HEADER_MAX). */
#define HEADER_FIRST_READ (64u * 1024)

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;

static json_t *key_json(const uint8_t pk[static C4GH_KEY_LEN])
{
	char text[C4GH_PUBKEY_TEXT_MAX], fp[65];

	c4gh_pubkey_format(pk, text);
	c4gh_fingerprint(pk, fp);
	return json_pack("{s:s, s:s}", "public_key", text, "fingerprint", fp);
}

/* Record the new key, then write it. Under key_lock. */
static int key_install(struct conn *c, const crypto_key *sk, const char *source, json_t **ret)
{
	uint8_t pk[C4GH_KEY_LEN];
	char fp[65];
	crypto_key *old = NULL;
	json_t *rec;
	int r;

	r = store_crypt4gh_key_get(c->d->st, &old);
	crypto_key_free(old);
	if (r == 0)
		return err_set(-EEXIST, "the store has a Crypt4GH key already (enclavectl crypt4gh "
			       "pubkey shows it); it is never replaced, so that files sent to it "
			       "stay readable");
	if (r != -ENOENT)
		return r;
	c4gh_public_key(sk, pk);
	c4gh_fingerprint(pk, fp);
	rec = json_pack("{s:s, s:s, s:s}", "event", "crypt4gh_key_create", "fingerprint", fp,
			"source", source);
	r = rec ? daemon_audit_subject(rec, &c->who) : -ENOMEM;
	if (r == 0)
		r = audit_append(c->d->log, rec, NULL);
	json_decref(rec);
	if (r < 0)
		return r;
	r = store_crypt4gh_key_put(c->d->st, sk);
	if (r < 0)
		return r;
	*ret = key_json(pk);
	return *ret ? 0 : -ENOMEM;
}

int op_crypt4gh_keygen(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	uint8_t pk[C4GH_KEY_LEN];
	crypto_key *sk = NULL;
	int r;

	if ((r = proto_args_known(args, known)) < 0)
		return r;
	r = c4gh_keypair_generate(&sk, pk);
	if (r < 0)
		return r;
	pthread_mutex_lock(&key_lock);
	r = key_install(c, sk, "generated", ret);
	pthread_mutex_unlock(&key_lock);
	crypto_key_free(sk);
	return r;
}

int op_crypt4gh_import(struct conn *c, const json_t *args, int fd, json_t **ret)
{
	static const char *const known[] = { "public_key", NULL };
	uint8_t *buf = NULL, pk[C4GH_KEY_LEN], want[C4GH_KEY_LEN];
	const char *text = NULL;
	crypto_key *sk = NULL;
	struct stat st;
	ssize_t n;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "public_key", true, C4GH_PUBKEY_TEXT_MAX, &text)) < 0)
		return r;
	if (fd < 0)
		return err_set(-EINVAL, "crypt4gh.import needs the key's pipe attached");
	/* A pipe the client wrote the secret into: not a file someone could have left behind. */
	if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode))
		return err_set(-EINVAL, "crypt4gh.import takes the key through a pipe");
	if ((r = c4gh_pubkey_parse(text, strlen(text), want)) < 0)
		return r;
	buf = sodium_malloc(C4GH_KEY_LEN + 1);
	if (!buf)
		return -ENOMEM;
	n = read_full(fd, buf, C4GH_KEY_LEN + 1);
	if (n != C4GH_KEY_LEN) {
		r = err_set(-EINVAL, "crypt4gh.import: the pipe held %zd bytes, not the %u of an "
			    "X25519 key", n, C4GH_KEY_LEN);
		goto out;
	}
	r = crypto_key_from_bytes(buf, &sk);
	if (r < 0)
		goto out;
	/* The client says which public key it means: a key that does not match is refused, so a
	 * corrupted transfer cannot install a key nobody can name. */
	c4gh_public_key(sk, pk);
	if (sodium_memcmp(pk, want, sizeof(pk)) != 0) {
		r = err_set(-EINVAL, "the key sent does not match its public key");
		goto out;
	}
	pthread_mutex_lock(&key_lock);
	r = key_install(c, sk, "imported", ret);
	pthread_mutex_unlock(&key_lock);
out:
	crypto_key_free(sk);
	sodium_free(buf);
	return r;
}

int op_crypt4gh_pubkey(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	uint8_t pk[C4GH_KEY_LEN];
	crypto_key *sk = NULL;
	int r;

	if ((r = proto_args_known(args, known)) < 0)
		return r;
	r = store_crypt4gh_key_get(c->d->st, &sk);
	if (r == -ENOENT)
		return err_set(r, "the store has no Crypt4GH key yet (enclavectl crypt4gh keygen, or "
			       "crypt4gh import)");
	if (r < 0)
		return r;
	c4gh_public_key(sk, pk);
	crypto_key_free(sk);
	*ret = key_json(pk);
	return *ret ? 0 : -ENOMEM;
}

/* ---- Import ---------------------------------------------------------------------------------- */

/* What a Crypt4GH file's own faults are called on the socket: the request was well formed, the
 * file it named is not (invalid_data); one not for us stays no_key. */
static int data_err(int r)
{
	return r == -EBADMSG || r == -ENOTSUP ? -EILSEQ : r;
}

static ssize_t stream_read(void *ctx, void *buf, size_t len)
{
	return c4gh_decoder_read(ctx, buf, len);
}

/* The header of the Crypt4GH file at fd (size bytes), opened with the site key. */
static int read_header(struct conn *c, const char *path, int fd, uint64_t size,
		       c4gh_header **ret_h)
{
	size_t want = (size_t)MIN(size, (uint64_t)HEADER_FIRST_READ);
	crypto_key *sk = NULL;
	uint8_t *buf = NULL;
	ssize_t got;
	int r;

	r = store_crypt4gh_key_get(c->d->st, &sk);
	if (r == -ENOENT)
		return err_set(r, "%s: a Crypt4GH file, but this store has no Crypt4GH key to open it "
			       "(enclavectl crypt4gh keygen, or crypt4gh import)", path);
	if (r < 0)
		return r;
	for (;;) {
		buf = malloc(MAX(want, (size_t)1));
		if (!buf) {
			r = -ENOMEM;
			break;
		}
		got = pread_full(fd, buf, want, 0);
		if (got < 0) {
			r = err_set((int)got, "%s: read failed: %s", path, strerror((int)-got));
			break;
		}
		r = c4gh_header_parse(buf, (size_t)got, sk, ret_h);
		if (r != -ENOBUFS || want >= MIN(size, (uint64_t)C4GH_HEADER_MAX))
			break;
		free(buf);
		want = (size_t)MIN(size, (uint64_t)C4GH_HEADER_MAX);
	}
	free(buf);
	crypto_key_free(sk);
	if (r == -ENOBUFS)
		r = err_set(-EBADMSG, "%s: the Crypt4GH header is cut short", path);
	else if (r < 0 && r != -ENOMEM) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail());
		r = err_set(data_err(r), "%s: %s", path, why);
	}
	return r;
}

/* The name a Crypt4GH file is stored under: without ".c4gh", if that leaves a name. */
static void plain_name(const char *path, char out[static STORE_PATH_MAX + 1])
{
	size_t n = strlen(path), sl = strlen(C4GH_SUFFIX);
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	if (n > sl && strcmp(path + n - sl, C4GH_SUFFIX) == 0 && (size_t)(path + n - base) > sl)
		n -= sl;
	snprintf(out, STORE_PATH_MAX + 1, "%.*s", (int)n, path);
}

static int import_c4gh(struct conn *c, const char *path, int fd, const struct stat *st)
{
	uint8_t digest[C4GH_DIGEST_LEN];
	char name[STORE_PATH_MAX + 1], hex[2 * C4GH_DIGEST_LEN + 1];
	struct store_import_stream s = { .read = stream_read };
	c4gh_header *h = NULL;
	c4gh_decoder *d = NULL;
	json_t *rec;
	size_t packets, keys;
	bool edited;
	int r;

	r = read_header(c, path, fd, (uint64_t)st->st_size, &h);
	if (r < 0)
		return r;
	c4gh_header_digest(h, digest);
	packets = c4gh_header_packets(h);
	keys = c4gh_header_keys(h);
	edited = c4gh_header_edited(h);
	r = c4gh_decoder_new(h, fd, (uint64_t)st->st_size, &d);
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail());
		c4gh_header_free(h);
		return err_set(data_err(r), "%s: %s", path, why);
	}
	plain_name(path, name);
	s.ctx = d;
	s.size = c4gh_decoder_size(d);
	s.mode = (uint32_t)st->st_mode;
	s.mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	r = store_import_add_stream(c->imp, name, &s);
	c4gh_decoder_free(d);
	if (r < 0) {
		/* Name the file as the steward knows it, not as it is stored. */
		char why[ERR_DETAIL_MAX];
		const char *w = why;
		size_t nl = strlen(name);

		snprintf(why, sizeof(why), "%s", err_detail());
		if (strncmp(why, name, nl) == 0 && why[nl] == ':')
			w = why + nl + 1 + (why[nl + 1] == ' ');
		return err_set(data_err(r), "%s: %s", path, w);
	}
	sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
	rec = json_pack("{s:s, s:o, s:o, s:s, s:I, s:I, s:b, s:I}", "event", "import_crypt4gh",
			"dataset", audit_string(c->imp_dataset), "path", audit_string(name),
			"header_sha256", hex, "header_packets", (json_int_t)packets, "data_keys",
			(json_int_t)keys, "edit_list", edited, "bytes", (json_int_t)s.size);
	r = rec ? daemon_audit_subject(rec, &c->who) : -ENOMEM;
	if (r == 0)
		r = audit_append(c->d->log, rec, NULL);
	json_decref(rec);
	if (r < 0)
		return err_set(-EIO, "%s: the audit log could not record the Crypt4GH source", path);
	c->imp_c4gh++;
	return 0;
}

bool import_is_crypt4gh(const uint8_t *head, size_t len)
{
	return len >= C4GH_MAGIC_LEN && memcmp(head, C4GH_MAGIC, C4GH_MAGIC_LEN) == 0;
}

int import_file_any(struct conn *c, const char *path, int fd, const struct stat *st)
{
	uint8_t magic[C4GH_MAGIC_LEN];
	struct stat own;
	ssize_t got;

	if (!st) {
		if (fstat(fd, &own) < 0)
			return store_import_add_file(c->imp, path, fd);
		st = &own;
	}
	/* A file too short for the magic is never a Crypt4GH file: no read to find out. */
	if (c->imp_c4gh_keep || !S_ISREG(st->st_mode) || st->st_size < (off_t)sizeof(magic))
		return store_import_add_file_stat(c->imp, path, fd, st);
	got = pread_full(fd, magic, sizeof(magic), 0);
	if (got != (ssize_t)sizeof(magic) || memcmp(magic, C4GH_MAGIC, sizeof(magic)) != 0)
		return store_import_add_file_stat(c->imp, path, fd, st);
	/* Imported under its name without .c4gh: not the name it was owed under, if it was. */
	store_import_owed_drop(c->imp, path);
	return import_c4gh(c, path, fd, st);
}

/* ---- Export ---------------------------------------------------------------------------------- */

/* An export as its one JSON shape (docs/PROTOCOL.md "export.*"). */
static json_t *export_json(const struct grants_export *x)
{
	const json_t *q = x->req;
	json_t *o = json_pack("{s:I, s:O, s:I, s:I, s:O, s:O, s:O, s:O, s:o, s:I, s:I, s:s}", "id",
			      (json_int_t)x->id, "dataset", json_object_get(q, "dataset"),
			      "dataset_id", (json_int_t)x->dataset_id, "version",
			      (json_int_t)x->version, "paths", json_object_get(q, "paths"),
			      "recipient_fingerprint", json_object_get(q, "fingerprint"), "reason",
			      json_object_get(q, "reason"), "requested_by", json_object_get(q, "by"),
			      "requested_at", jtime(x->at), "approvals", (json_int_t)x->approvals,
			      "approvals_required", (json_int_t)x->approvals_required, "state",
			      x->done_at ? "done"
			      : x->approvals >= x->approvals_required ? "approved"
								      : "pending_approval");

	if (o && x->done_at && json_object_set_new(o, "done_at", jtime(x->done_at)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int export_reply(struct grants *gs, uint64_t id, json_t **ret)
{
	struct grants_export x;
	int r = grants_export_get(gs, id, &x);

	if (r < 0)
		return r;
	*ret = json_pack("{s:o}", "export", export_json(&x));
	grants_export_clear(&x);
	return *ret ? 0 : -ENOMEM;
}

/* A dataset the daemon refuses to everyone because the index disagrees with the signed log (its
 * versions, daemon/versions.c: reason "integrity"; its policy records, grants_bind_log():
 * "policy_mismatch") is refused for export too, at the request and again at the run: what would
 * leave cannot be vouched for. The refusal is recorded (export_refused; export_id 0 for a
 * request) and said plainly. 0 when the dataset is served. */
static int export_refusal(struct conn *c, uint64_t export_id, const char *dataset,
			  uint64_t dsid, uint64_t version)
{
	struct policy_decision d = grants_decide(c->d->grants, &c->who, dsid, (uint32_t)version,
						 time(NULL));
	const char *why;
	json_t *rec;
	int r;

	if (d.reason != POLICY_DENY_INTEGRITY && d.reason != POLICY_DENY_POLICY_MISMATCH)
		return 0;
	why = policy_reason_name(d.reason);
	rec = json_pack("{s:s, s:I, s:o, s:I, s:I, s:s}", "event", "export_refused", "export_id",
			(json_int_t)export_id, "dataset", audit_string(dataset), "dataset_id",
			(json_int_t)dsid, "version", (json_int_t)version, "reason", why);
	r = rec ? daemon_audit_subject(rec, &c->who) : -ENOMEM;
	if (r == 0)
		r = audit_append(c->d->log, rec, NULL);
	json_decref(rec);
	return err_set(-EACCES, "dataset \"%.64s\" is refused (%s): %s, so nothing of it is "
		       "exported%s", dataset, why, d.reason == POLICY_DENY_INTEGRITY
		       ? "its versions in the index disagree with the signed log's import records "
			 "(named at the daemon's start and in 'enclavectl audit show --event "
			 "integrity')"
		       : "the policy records in the index disagree with the signed log (named at "
			 "the daemon's start)", r < 0 ? "; the refusal could not be recorded" : "");
}

int op_export_request(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "dataset", "version", "paths", "recipient_key",
					     "reason", NULL };
	const json_t *paths = json_object_get(args, "paths");
	const char *name, *key, *reason;
	struct store_dataset_info ds;
	struct store_version_info vi;
	struct config cfg;
	uint8_t pk[C4GH_KEY_LEN];
	char fp[65];
	uint64_t version = 0, id;
	json_t *norm = NULL, *req;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "dataset", true, STORE_DATASET_NAME_MAX, &name)) < 0 ||
	    (r = proto_arg_u64(args, "version", false, UINT32_MAX, &version)) < 0 ||
	    (r = proto_arg_string(args, "recipient_key", true, C4GH_PUBKEY_TEXT_MAX * 2, &key)) < 0 ||
	    (r = proto_arg_string(args, "reason", true, POLICY_REASON_MAX, &reason)) < 0)
		return r;
	if (!json_is_array(paths) || json_array_size(paths) == 0 ||
	    json_array_size(paths) > GRANTS_EXPORT_FILES_MAX)
		return err_set(-EINVAL, "\"paths\": 1 to %u files of the version",
			       GRANTS_EXPORT_FILES_MAX);
	if ((r = c4gh_pubkey_parse(key, strlen(key), pk)) < 0)
		return err_set(-EINVAL, "the recipient key: %s", err_detail());
	c4gh_fingerprint(pk, fp);
	if (store_dataset_get(c->d->st, name, &ds) < 0)
		return err_set(-ENOENT, "no dataset \"%.64s\"", name);
	if (!version)
		version = ds.latest_version;
	if (store_version_get(c->d->st, ds.id, (uint32_t)version, &vi) < 0)
		return err_set(-ENOENT, "dataset \"%s\" has no version %llu", ds.name,
			       (unsigned long long)version);
	if ((r = export_refusal(c, 0, ds.name, ds.id, version)) < 0)
		return r;
	norm = json_array();
	if (!norm)
		return -ENOMEM;
	for (size_t i = 0; i < json_array_size(paths); i++) {
		const json_t *p = json_array_get(paths, i);
		const char *s = json_string_value(p);
		struct store_inode ino;

		if (!s || strlen(s) != json_string_length(p) || strlen(s) > STORE_PATH_MAX) {
			r = err_set(-EINVAL, "path %zu is not a string of at most %d bytes", i,
				    STORE_PATH_MAX);
			goto out;
		}
		while (*s == '/')
			s++;
		r = store_path_lookup(c->d->st, ds.id, (uint32_t)version, s, &ino);
		if (r == 0 && ino.type != STORE_INODE_FILE)
			r = -EISDIR;
		if (r < 0) {
			r = err_set(r, "%s@%llu has no file %.256s", ds.name,
				    (unsigned long long)version, s);
			goto out;
		}
		for (size_t j = 0; j < json_array_size(norm); j++)
			if (strcmp(json_string_value(json_array_get(norm, j)), s) == 0) {
				r = err_set(-EINVAL, "%.256s is named twice", s);
				goto out;
			}
		if (json_array_append_new(norm, audit_string(s)) < 0) {
			r = -ENOMEM;
			goto out;
		}
	}
	req = json_pack("{s:s, s:I, s:I, s:O, s:s, s:s, s:s}", "dataset", ds.name, "dataset_id",
			(json_int_t)ds.id, "version", (json_int_t)version, "paths", norm,
			"recipient_key", key, "fingerprint", fp, "reason", reason);
	if (!req) {
		r = -ENOMEM;
		goto out;
	}
	daemon_config(c->d, &cfg);
	r = grants_export_request(c->d->grants, c->d->log, &c->who, req, cfg.approvals, time(NULL),
				  &id);
	if (r == 0)
		r = export_reply(c->d->grants, id, ret);
out:
	json_decref(norm);
	return r;
}

int op_export_approve(struct conn *c, const json_t *args, json_t **ret)
{
	uint64_t id = 0;
	int r;

	if ((r = request_id_arg(args, &id)) < 0)
		return r;
	r = grants_export_approve(c->d->grants, c->d->log, &c->who, id, time(NULL));
	return r < 0 ? r : export_reply(c->d->grants, id, ret);
}

int op_export_show(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "id", NULL };
	uint64_t id = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_u64(args, "id", true, INT64_MAX, &id)) < 0)
		return r;
	return export_reply(c->d->grants, id, ret);
}

int op_export_list(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	struct grants_export *x = NULL;
	json_t *list;
	size_t n = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = grants_export_list(c->d->grants, &x, &n)) < 0)
		return r;
	list = json_array();
	for (size_t i = 0; i < n; i++) {
		if (list && json_array_append_new(list, export_json(&x[i])) < 0) {
			json_decref(list);
			list = NULL;
		}
		grants_export_clear(&x[i]);
	}
	free(x);
	*ret = list ? json_pack("{s:o}", "exports", list) : NULL;
	return *ret ? 0 : -ENOMEM;
}

/* An export reads the object and writes its Crypt4GH file this many plaintext bytes at a time
 * (a multiple of the 64 KiB segment, and at least one store chunk, so no chunk is decrypted
 * twice): one batch of io_uring reads and one write per block instead of one each per segment.
 * 64 KiB blocks made a 1 GiB export take 27 s (docs/PERFORMANCE.md "Crypt4GH import"). */
#define EXPORT_BLOCK (1u << 20)

/* Encrypt one file of the version for the recipient into fd; the digests of what was written
 * and of the plaintext (OpenSSL's SHA-256: libsodium's was most of the export's time). */
static int export_file(struct conn *c, struct store_reader *rd, uint64_t dsid, uint32_t version,
		       const char *path, const uint8_t pk[static C4GH_KEY_LEN], int fd,
		       json_t **ret_file)
{
	crypto_sha256 *out_h = NULL, *plain_h = NULL;
	uint8_t *hdr = NULL, *in = NULL, *sealed = NULL, d1[32], d2[32];
	char x1[65], x2[65];
	struct store_object *obj = NULL;
	c4gh_encoder *e = NULL;
	struct store_inode ino;
	uint64_t off = 0, woff = 0, size;
	size_t hl = 0, block;
	ssize_t got;
	int r;

	r = store_path_lookup(c->d->st, dsid, version, path, &ino);
	if (r == 0)
		r = store_object_open(c->d->st, dsid, &ino, &obj);
	if (r < 0)
		return err_set(r, "%s: %s", path, err_detail()[0] ? err_detail() : strerror(-r));
	size = store_object_size(obj);
	/* Chunk sizes are powers of two up to 4 MiB: the larger of the two is a multiple of both. */
	block = MAX((size_t)EXPORT_BLOCK, (size_t)store_object_chunk_size(obj));
	in = malloc(block);
	sealed = malloc(block / C4GH_SEGMENT * C4GH_SEGMENT_SEALED);
	r = in && sealed ? crypto_sha256_new(&out_h) : -ENOMEM;
	if (r == 0)
		r = crypto_sha256_new(&plain_h);
	if (r == 0)
		r = c4gh_encoder_new((const uint8_t (*)[C4GH_KEY_LEN])pk, 1, &e, &hdr, &hl);
	if (r < 0)
		goto out;
	r = crypto_sha256_update(out_h, hdr, hl);
	if (r == 0)
		r = pwrite_all(fd, hdr, hl, 0);
	woff = hl;
	while (r == 0 && off < size) {
		size_t want = (size_t)MIN((uint64_t)block, size - off), sl = 0;

		got = store_object_read(rd, obj, off, want, in);
		if (got < 0 || (size_t)got != want) {
			r = err_set(got < 0 ? (int)got : -EIO, "%s: the store's copy does not read "
				    "(%s)", path, got < 0 ? strerror((int)-got) : "short");
			break;
		}
		r = crypto_sha256_update(plain_h, in, want);
		for (size_t i = 0; r == 0 && i < want; i += C4GH_SEGMENT) {
			size_t n = MIN((size_t)C4GH_SEGMENT, want - i);

			r = c4gh_encoder_segment(e, in + i, n, sealed + sl);
			sl += n + C4GH_SEGMENT_OVERHEAD;
		}
		if (r == 0)
			r = crypto_sha256_update(out_h, sealed, sl);
		if (r == 0)
			r = pwrite_all(fd, sealed, sl, woff);
		woff += sl;
		off += want;
	}
	if (r == 0 && fdatasync(fd) < 0 && errno != EINVAL)
		r = -errno;
	if (r == 0)
		r = crypto_sha256_final(out_h, d1);
	if (r == 0)
		r = crypto_sha256_final(plain_h, d2);
	if (r < 0)
		goto out;
	sodium_bin2hex(x1, sizeof(x1), d1, sizeof(d1));
	sodium_bin2hex(x2, sizeof(x2), d2, sizeof(d2));
	*ret_file = json_pack("{s:o, s:I, s:I, s:s, s:s}", "path", audit_string(path), "bytes",
			      (json_int_t)size, "file_bytes", (json_int_t)woff, "sha256", x1,
			      "plaintext_sha256", x2);
	if (!*ret_file)
		r = -ENOMEM;
out:
	if (in) {
		sodium_memzero(in, block);
		free(in);
	}
	free(sealed);
	free(hdr);
	crypto_sha256_free(out_h);
	crypto_sha256_free(plain_h);
	c4gh_encoder_free(e);
	store_object_close(obj);
	return r;
}

int op_export_run(struct conn *c, const json_t *args, const int *fds, size_t nfds, json_t **ret)
{
	static const char *const known[] = { "id", NULL };
	/* One export at a time: a second run of the same one waits, then finds it done. */
	static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
	struct store_reader *rd = NULL;
	struct grants_export x = { 0 };
	uint8_t pk[C4GH_KEY_LEN];
	const json_t *paths;
	json_t *files = NULL, *rec = NULL;
	uint64_t id = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_u64(args, "id", true, INT64_MAX, &id)) < 0)
		return r;
	pthread_mutex_lock(&run_lock);
	r = grants_export_get(c->d->grants, id, &x);
	if (r < 0)
		goto out;
	paths = json_object_get(x.req, "paths");
	if (x.done_at) {
		r = err_set(-EEXIST, "export %llu has run already: an export runs once",
			    (unsigned long long)id);
		goto out;
	}
	if (x.approvals < x.approvals_required) {
		r = err_set(-EACCES, "export %llu is not approved yet (%u of %u approvals): another "
			    "steward runs 'enclavectl export approve %llu'", (unsigned long long)id,
			    x.approvals, x.approvals_required, (unsigned long long)id);
		goto out;
	}
	r = export_refusal(c, id, json_string_value(json_object_get(x.req, "dataset")),
			   x.dataset_id, x.version);
	if (r < 0)
		goto out;
	if (nfds != json_array_size(paths)) {
		r = err_set(-EINVAL, "export %llu has %zu files; %zu descriptors came",
			    (unsigned long long)id, json_array_size(paths), nfds);
		goto out;
	}
	/* Each output: a regular file, empty, open for writing. */
	for (size_t i = 0; i < nfds; i++) {
		struct stat st;
		int fl = fcntl(fds[i], F_GETFL);

		if (fstat(fds[i], &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != 0 || fl < 0 ||
		    (fl & O_ACCMODE) == O_RDONLY || (fl & O_APPEND)) {
			r = err_set(-EINVAL, "output %zu is not an empty regular file open for "
				    "writing", i);
			goto out;
		}
	}
	r = c4gh_pubkey_parse(json_string_value(json_object_get(x.req, "recipient_key")),
			      strlen(json_string_value(json_object_get(x.req, "recipient_key"))),
			      pk);
	if (r == 0)
		r = store_reader_new(c->d->st, &rd);
	files = json_array();
	if (r == 0 && !files)
		r = -ENOMEM;
	for (size_t i = 0; r == 0 && i < nfds; i++) {
		json_t *f = NULL;

		r = export_file(c, rd, x.dataset_id, x.version,
				json_string_value(json_array_get(paths, i)), pk, fds[i], &f);
		if (r == 0 && json_array_append_new(files, f) < 0)
			r = -ENOMEM;
	}
	if (r == 0) {
		rec = json_pack("{s:s, s:I, s:O, s:I, s:I, s:O, s:O}", "event", "export_run",
				"export_id", (json_int_t)id, "dataset",
				json_object_get(x.req, "dataset"), "dataset_id",
				(json_int_t)x.dataset_id, "version", (json_int_t)x.version,
				"recipient_fingerprint", json_object_get(x.req, "fingerprint"),
				"files", files);
		/* Recorded, or nothing stays: the outputs are emptied below on failure. */
		r = rec ? grants_export_done(c->d->grants, c->d->log, &c->who, id, rec, time(NULL))
			: -ENOMEM;
	}
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail());
		for (size_t i = 0; i < nfds; i++)
			if (ftruncate(fds[i], 0) < 0)
				continue;   /* the client removes its outputs too */
		r = err_set(r, "export %llu not made, its outputs emptied: %s",
			    (unsigned long long)id, why[0] ? why : strerror(-r));
		goto out;
	}
	grants_export_clear(&x);
	r = grants_export_get(c->d->grants, id, &x);
	if (r == 0) {
		*ret = json_pack("{s:o, s:O}", "export", export_json(&x), "files", files);
		if (!*ret)
			r = -ENOMEM;
	}
out:
	pthread_mutex_unlock(&run_lock);
	json_decref(files);
	grants_export_clear(&x);
	store_reader_free(rd);
	return r;
}
