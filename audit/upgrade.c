/* upgrade: the audit log of a store made before sealing, converted for `enclavectl store upgrade`
 * (docs/AUDIT.md section 17).
 *
 * The old log is clear: names, paths and purposes readable by whoever reads the disk. It cannot be
 * sealed record by record without changing every leaf, which would make the checkpoints auditors
 * already hold useless. So it is kept whole, byte for byte, but encrypted: legacy.sealed holds the
 * old audit.log and checkpoints under a random key sealed to every auditor and wrapped under the
 * store's seal key. A new, sealed log starts beside it whose first record after its key record,
 * `log_upgrade`, names the old log's size, Merkle root and SHA-256, and is signed into a
 * checkpoint at once: an auditor opens legacy.sealed (`enclavectl audit legacy`), checks it
 * against that record and verifies it with the old checkpoints as before.
 *
 * Everything is written into new_dir, which the caller's crash-safe switch (store/upgrade.c) puts
 * in place of the old directory; nothing in old_dir is changed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "audit/note.h"
#include "audit/verify.h"
#include "common/err.h"

#define LEGACY_MAGIC "ENCLLEG1"
#define LEGACY_AD "enclave audit legacy v1"
#define LEGACY_CHUNK (64u * 1024)
#define BOX_LEN (AUDIT_SEAL_KEY_LEN + crypto_box_SEALBYTES)
#define SBOX_LEN (24 + AUDIT_SEAL_KEY_LEN + 16)
#define SS_ABYTES crypto_secretstream_xchacha20poly1305_ABYTES

static void stage(const struct audit_upgrade_progress *p, enum audit_upgrade_stage s)
{
	if (p && p->fn)
		p->fn(p->ctx, s);
}

/* Write n bytes at the end of fd. */
static int put(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t w = write(fd, b, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Stream file `name` in dir (its first `len` bytes) into the secretstream, as LE64(len) || bytes;
 * its SHA-256 into ret_sha (may be NULL). */
static int stream_file(int out, crypto_secretstream_xchacha20poly1305_state *ss, const char *dir,
		       const char *name, uint64_t len, bool last, uint8_t *ret_sha)
{
	uint8_t *buf = malloc(LEGACY_CHUNK), *ct = malloc(LEGACY_CHUNK + SS_ABYTES), lenb[8];
	unsigned long long cl;
	uint64_t off = 0;
	crypto_hash_sha256_state sha;
	char *path = NULL;
	int fd = -1, r = 0;

	if (!buf || !ct || asprintf(&path, "%s/%s", dir, name) < 0) {
		path = NULL;
		r = -ENOMEM;
		goto out;
	}
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && len == 0)
		fd = -2;	/* no checkpoints file: an empty part */
	else if (fd < 0) {
		r = err_set(-errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	crypto_hash_sha256_init(&sha);
	put_le64(lenb, len);
	crypto_secretstream_xchacha20poly1305_push(ss, ct, &cl, lenb, 8, NULL, 0, 0);
	r = put(out, ct, (size_t)cl);
	while (r == 0 && off < len) {
		size_t n = (size_t)MIN((uint64_t)LEGACY_CHUNK, len - off);
		bool end = last && off + n == len;

		r = pread_all(fd, buf, n, off);
		if (r < 0) {
			r = err_set(r, "%s: cannot read at %llu: %s", path, (unsigned long long)off,
				    strerror(-r));
			break;
		}
		crypto_hash_sha256_update(&sha, buf, n);
		crypto_secretstream_xchacha20poly1305_push(
			ss, ct, &cl, buf, n, NULL, 0,
			end ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0);
		r = put(out, ct, (size_t)cl);
		off += n;
	}
	if (r == 0 && last && len == 0) {
		crypto_secretstream_xchacha20poly1305_push(
			ss, ct, &cl, NULL, 0, NULL, 0, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
		r = put(out, ct, (size_t)cl);
	}
	if (ret_sha)
		crypto_hash_sha256_final(&sha, ret_sha);
out:
	if (fd >= 0)
		close(fd);
	free(path);
	free(buf);
	free(ct);
	return r;
}

/* The size of dir/name up to its last '\n' (a torn last line is not part of the log). */
static int complete_size(const char *dir, const char *name, bool lines, uint64_t *ret)
{
	char *path = NULL;
	struct stat st;
	uint8_t c;
	int fd, r = 0;

	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = errno == ENOENT && !lines ? 0 : err_set(-errno, "%s: %s", path, strerror(errno));
		*ret = 0;
		goto out;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = err_set(-EINVAL, "%s is not a regular file", path);
		goto out_close;
	}
	*ret = (uint64_t)st.st_size;
	while (lines && *ret > 0) {
		r = pread_all(fd, &c, 1, *ret - 1);
		if (r < 0)
			goto out_close;
		if (c == '\n')
			break;
		(*ret)--;
	}
out_close:
	close(fd);
out:
	free(path);
	return r;
}

int audit_upgrade_legacy(const char *old_dir, const char *new_dir,
			 const uint8_t store_key[static AUDIT_SEAL_KEY_LEN],
			 const uint8_t (*auditors)[AUDIT_AUDITOR_KEY_LEN], size_t nauditors,
			 const char *sign_name, const uint8_t seed[static 32],
			 const struct audit_upgrade_progress *p,
			 struct audit_upgrade_info *ret_info)
{
	crypto_secretstream_xchacha20poly1305_state ss;
	uint8_t *key = NULL, hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	uint8_t box[BOX_LEN], sbox[SBOX_LEN], root[MERKLE_HASH_LEN], sha[32];
	char roothex[2 * MERKLE_HASH_LEN + 1], shahex[65], *path = NULL;
	struct audit_upgrade_info info = { 0 };
	struct merkle_mem *tree = NULL;
	struct audit_log *log = NULL;
	uint64_t log_len = 0, cp_len = 0;
	json_t *rec = NULL;
	uint8_t nb;
	int fd = -1, dfd = -1, r;

	if (nauditors > AUDIT_AUDITORS_MAX)
		return -E2BIG;
	if (sodium_init() < 0)
		return err_set(-EIO, "libsodium cannot be initialised");
	/* The old log as it is: every complete line a leaf. */
	r = complete_size(old_dir, AUDIT_LOG_NAME, true, &log_len);
	if (r == 0)
		r = complete_size(old_dir, CHECKPOINTS_FILE_NAME, false, &cp_len);
	if (r == 0)
		r = verify_load_tree(old_dir, &tree);
	if (r < 0)
		return r;
	info.records = merkle_mem_size(tree);
	r = merkle_mem_root(tree, info.records, root);
	merkle_mem_free(tree);
	if (r < 0)
		return r;

	if (mkdir(new_dir, 0700) < 0)
		return err_set(-errno, "cannot create %s: %s", new_dir, strerror(errno));
	stage(p, AUDIT_UPGRADE_STARTED);
	key = sodium_malloc(AUDIT_SEAL_KEY_LEN);
	if (!key || asprintf(&path, "%s/%s", new_dir, AUDIT_LEGACY_NAME) < 0) {
		path = NULL;
		r = -ENOMEM;
		goto out;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = err_set(-errno, "cannot create %s: %s", path, strerror(errno));
		goto out;
	}
	/* Header: magic, the key sealed to each auditor (with its id), the key wrapped under the
	 * store's seal key, then the stream. */
	randombytes_buf(key, AUDIT_SEAL_KEY_LEN);
	nb = (uint8_t)nauditors;
	r = put(fd, LEGACY_MAGIC, 8);
	if (r == 0)
		r = put(fd, &nb, 1);
	for (size_t i = 0; r == 0 && i < nauditors; i++) {
		char id[AUDIT_AUDITOR_ID_TEXT];
		uint8_t idb[8];

		audit_auditor_id(auditors[i], id);
		sodium_hex2bin(idb, sizeof(idb), id, 16, NULL, NULL, NULL);
		if (crypto_box_seal(box, key, AUDIT_SEAL_KEY_LEN, auditors[i]) != 0)
			r = -EIO;
		if (r == 0)
			r = put(fd, idb, sizeof(idb));
		if (r == 0)
			r = put(fd, box, sizeof(box));
	}
	if (r == 0) {
		randombytes_buf(sbox, 24);
		crypto_aead_xchacha20poly1305_ietf_encrypt(sbox + 24, NULL, key, AUDIT_SEAL_KEY_LEN,
							   (const uint8_t *)LEGACY_AD,
							   sizeof(LEGACY_AD) - 1, NULL, sbox,
							   store_key);
		r = put(fd, sbox, sizeof(sbox));
	}
	if (r == 0) {
		crypto_secretstream_xchacha20poly1305_init_push(&ss, hdr, key);
		r = put(fd, hdr, sizeof(hdr));
	}
	if (r == 0)
		r = stream_file(fd, &ss, old_dir, AUDIT_LOG_NAME, log_len, false, sha);
	if (r == 0)
		r = stream_file(fd, &ss, old_dir, CHECKPOINTS_FILE_NAME, cp_len, true, NULL);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	sodium_memzero(&ss, sizeof(ss));
	if (r < 0) {
		r = err_set(r, "cannot write %s: %s", path, *err_detail() ? err_detail() :
			    strerror(-r));
		goto out;
	}
	stage(p, AUDIT_UPGRADE_LEGACY);

	/* The new log: its key record, then the record naming the old log, signed at once. */
	sodium_bin2hex(roothex, sizeof(roothex), root, sizeof(root));
	sodium_bin2hex(shahex, sizeof(shahex), sha, sizeof(sha));
	r = audit_open(new_dir, NULL, &log);
	if (r == 0)
		r = audit_signer_set(log, sign_name, seed);
	if (r == 0)
		r = audit_sealer_set(log, store_key, auditors, nauditors);
	if (r < 0)
		goto out;
	rec = json_pack("{s:s, s:I, s:s, s:s, s:I, s:s}", "event", "log_upgrade",
			"legacy_records", (json_int_t)info.records, "legacy_root", roothex,
			"legacy_sha256", shahex, "legacy_bytes", (json_int_t)log_len,
			"legacy_file", AUDIT_LEGACY_NAME);
	r = rec ? audit_append(log, rec, NULL) : -ENOMEM;
	if (r == 0)
		stage(p, AUDIT_UPGRADE_RECORDS);
	if (r == 0)
		r = audit_checkpoint(log, NULL, NULL);
	if (r < 0)
		goto out;
	dfd = open(new_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		r = err_set(-errno, "cannot sync %s: %s", new_dir, strerror(errno));
		goto out;
	}
	memcpy(info.root, root, sizeof(root));
	memcpy(info.sha256, sha, sizeof(sha));
	info.bytes = log_len;
	if (ret_info)
		*ret_info = info;
out:
	json_decref(rec);
	audit_close(log);
	if (dfd >= 0)
		close(dfd);
	if (fd >= 0)
		close(fd);
	sodium_free(key);
	free(path);
	return r;
}

/* Read exactly n bytes of fd (a stream, from where it is). */
static int get(int fd, void *p, size_t n)
{
	ssize_t got = read_full(fd, p, n);

	if (got < 0)
		return (int)got;
	return (size_t)got == n ? 0 : -EBADMSG;
}

/* Pull one stream message of at most cap bytes: its length in *ret_n. */
static int pull(int fd, crypto_secretstream_xchacha20poly1305_state *ss, uint8_t *out,
		size_t cap, size_t ct_len, unsigned char *ret_tag, size_t *ret_n)
{
	uint8_t *ct = malloc(ct_len);
	unsigned long long n = 0;
	int r;

	if (!ct)
		return -ENOMEM;
	r = get(fd, ct, ct_len);
	if (r == 0 && (ct_len < SS_ABYTES || ct_len - SS_ABYTES > cap ||
		       crypto_secretstream_xchacha20poly1305_pull(ss, out, &n, ret_tag, ct, ct_len,
								  NULL, 0) != 0))
		r = -EBADMSG;
	free(ct);
	if (r == 0)
		*ret_n = (size_t)n;
	return r;
}

/* Copy one part (LE64 length, then chunks) from the stream into out_dir/name. */
static int pull_file(int fd, crypto_secretstream_xchacha20poly1305_state *ss, const char *out_dir,
		     const char *name, bool last)
{
	uint8_t *buf = malloc(LEGACY_CHUNK), lenb[8];
	unsigned char tag = 0;
	uint64_t len, done = 0;
	char *path = NULL;
	size_t n = 0;
	int out = -1, r;

	if (!buf || asprintf(&path, "%s/%s", out_dir, name) < 0) {
		free(buf);
		return -ENOMEM;
	}
	r = pull(fd, ss, lenb, 8, 8 + SS_ABYTES, &tag, &n);
	if (r == 0 && n != 8)
		r = -EBADMSG;
	if (r < 0)
		goto out;
	len = get_le64(lenb);
	out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0) {
		r = err_set(-errno, "cannot create %s: %s", path, strerror(errno));
		goto out;
	}
	while (done < len) {
		size_t want = (size_t)MIN((uint64_t)LEGACY_CHUNK, len - done);

		r = pull(fd, ss, buf, LEGACY_CHUNK, want + SS_ABYTES, &tag, &n);
		if (r == 0 && n != want)
			r = -EBADMSG;
		if (r == 0)
			r = put(out, buf, n);
		if (r < 0)
			goto out;
		done += n;
	}
	if (last && len == 0) {
		r = pull(fd, ss, buf, LEGACY_CHUNK, SS_ABYTES, &tag, &n);
		if (r < 0)
			goto out;
	}
	if (last && tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL)
		r = -EBADMSG;	/* cut short */
	if (r == 0 && fsync(out) < 0)
		r = -errno;
out:
	if (out >= 0)
		close(out);
	free(path);
	free(buf);
	return r;
}

int audit_legacy_open(const char *file, const uint8_t *store_key, const char *auditor_key_file,
		      const char *out_dir)
{
	crypto_secretstream_xchacha20poly1305_state ss;
	uint8_t *key = NULL, *sk = NULL, pk[AUDIT_AUDITOR_KEY_LEN], magic[8], nb;
	uint8_t hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES], sbox[SBOX_LEN];
	char myid[AUDIT_AUDITOR_ID_TEXT];
	bool have = false;
	int fd = -1, r;

	if (sodium_init() < 0)
		return err_set(-EIO, "libsodium cannot be initialised");
	key = sodium_malloc(AUDIT_SEAL_KEY_LEN);
	if (!key)
		return -ENOMEM;
	if (auditor_key_file) {
		r = audit_auditor_secret_read(auditor_key_file, &sk, pk);
		if (r < 0)
			goto out;
		audit_auditor_id(pk, myid);
	}
	fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = err_set(-errno, "%s: %s", file, strerror(errno));
		goto out;
	}
	r = get(fd, magic, 8);
	if (r == 0 && memcmp(magic, LEGACY_MAGIC, 8) != 0)
		r = -EBADMSG;
	if (r == 0)
		r = get(fd, &nb, 1);
	for (unsigned i = 0; r == 0 && i < nb; i++) {
		uint8_t idb[8], box[BOX_LEN];
		char id[AUDIT_AUDITOR_ID_TEXT];

		r = get(fd, idb, 8);
		if (r == 0)
			r = get(fd, box, sizeof(box));
		sodium_bin2hex(id, sizeof(id), idb, 8);
		if (r == 0 && sk && !have && strcmp(id, myid) == 0 &&
		    crypto_box_seal_open(key, box, sizeof(box), pk, sk) == 0)
			have = true;
	}
	if (r == 0)
		r = get(fd, sbox, sizeof(sbox));
	if (r == 0 && !have && store_key &&
	    crypto_aead_xchacha20poly1305_ietf_decrypt(key, NULL, NULL, sbox + 24, SBOX_LEN - 24,
						       (const uint8_t *)LEGACY_AD,
						       sizeof(LEGACY_AD) - 1, sbox, store_key) == 0)
		have = true;
	if (r < 0) {
		r = err_set(-EBADMSG, "%s is not a sealed legacy audit log", file);
		goto out;
	}
	if (!have) {
		r = err_set(-ENOKEY, "%s is not sealed to %s%s", file,
			    auditor_key_file ? "auditor key " : "this store's key",
			    auditor_key_file ? myid : "");
		goto out;
	}
	r = get(fd, hdr, sizeof(hdr));
	if (r == 0 && crypto_secretstream_xchacha20poly1305_init_pull(&ss, hdr, key) != 0)
		r = -EBADMSG;
	if (r == 0 && mkdir(out_dir, 0700) < 0)
		r = err_set(-errno, "cannot create %s: %s", out_dir, strerror(errno));
	if (r == 0)
		r = pull_file(fd, &ss, out_dir, AUDIT_LOG_NAME, false);
	if (r == 0)
		r = pull_file(fd, &ss, out_dir, CHECKPOINTS_FILE_NAME, true);
	if (r == -EBADMSG)
		r = err_set(r, "%s does not authenticate: altered or cut short", file);
	sodium_memzero(&ss, sizeof(ss));
out:
	if (fd >= 0)
		close(fd);
	sodium_free(key);
	sodium_free(sk);
	return r;
}
