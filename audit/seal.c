/* seal: the audit log's sensitive fields, sealed (docs/AUDIT.md "Sealed records").
 *
 * Writer. The daemon gives the log a store key (32 bytes from its master key hierarchy) and the
 * auditors' X25519 public keys (audit_sealer_set()). From then on the log keeps a random epoch
 * key, and before the first record sealed under it appends a `log_key` record that carries it
 * sealed to every auditor (crypto_box_seal of key || LE64(seq)) and wrapped under the store key
 * (XChaCha20-Poly1305, associated data label || LE64(seq)). Every record is then split: the
 * members in the clear list (seq, time, prev, event, decision, result and the numeric ids) stay
 * as they are; everything else moves into one JSON object that is encrypted with XChaCha20-
 * Poly1305 under the epoch key, random nonce, associated data label || the canonical line of the
 * clear part (its seq, time, prev and "key" included), and stored as "sealed". One symmetric
 * encryption per record: no public-key operation on the open path. A new epoch starts at every
 * audit_open() (each daemon start), after AUDIT_EPOCH_RECORDS records, when the auditors change,
 * and after a batch failed (its key record may have been cut off with it).
 *
 * Reader. An audit_opener holds the store key or an auditor's secret key, learns each epoch key
 * from the key records it is shown, and puts a sealed record back together, checking its tag:
 * a sealed part forged, moved to another record (another seq or clear part), or replayed from
 * another epoch does not open.
 *
 * The Merkle tree and the hash chain are over the sealed lines, so verification needs no secret.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "common/err.h"

#define RECORD_AD_LABEL "enclave audit record v1"
#define KEY_AD_LABEL "enclave audit log key v1"
#define PUB_PREFIX "enclave-auditor-public:"
#define SEC_PREFIX "enclave-auditor-secret:"
#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
/* key || LE64(seq) sealed to an auditor. */
#define BOX_PLAIN_LEN (AUDIT_SEAL_KEY_LEN + 8)
#define BOX_LEN (BOX_PLAIN_LEN + crypto_box_SEALBYTES)
/* nonce || key encrypted || tag, under the store key. */
#define STORE_BOX_LEN (NONCE_LEN + AUDIT_SEAL_KEY_LEN + ABYTES)
/* Epoch keys an opener remembers: one per daemon start or AUDIT_EPOCH_RECORDS records. */
#define OPENER_EPOCHS_MAX (1u << 20)

/* Members that stay in the clear: what verification, counting and the report's structure need,
 * and nothing that names a person, a file, a dataset or a purpose. Only integers and strings of
 * these names stay clear; any other value under one of them is sealed too. */
static const char *const clear_members[] = {
	"seq", "time", "prev", "event", "decision", "result", "dataset_id", "version",
	"grant_id", "rule_id", "open_seq", "key", "pseq", "policy_digest", "policy_digest_before",
	"next_id", "legacy_records", "legacy_root", "legacy_sha256", "legacy_bytes", "legacy_file",
	"vseq", "versions_digest",
	/* Erasure records (docs/AUDIT.md "dataset_erase"): ids, digests of content and of the key
	 * ring, ids of destroyed keys: the proof a data controller verifies without a key. */
	"erasure_id", "manifests", "key_ids", "ring_generation", "ring_digest",
	/* Compute nodes (docs/AUDIT.md section 19): a node's name (a host name), its enrolment's
	 * id, public signing key and state, so that `audit verify` finds each node log's key
	 * without a secret. */
	"node", "node_id", "sign_pk", "node_state", "removal_id",
	/* An erasure recorded at the start after the one that carried it out, or by the running
	 * daemon once its log took writes again (dataset_erase). */
	"completed_at_start", "recorded_late",
};

bool audit_member_is_clear(const char *name, const json_t *v)
{
	if (!json_is_integer(v) && !json_is_string(v))
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(clear_members); i++)
		if (strcmp(name, clear_members[i]) == 0)
			return true;
	return false;
}

/* ---- Auditor keys ------------------------------------------------------------------------ */

void audit_auditor_id(const uint8_t pk[static AUDIT_AUDITOR_KEY_LEN],
		      char out[static AUDIT_AUDITOR_ID_TEXT])
{
	uint8_t h[8];

	crypto_generichash(h, sizeof(h), pk, AUDIT_AUDITOR_KEY_LEN, NULL, 0);
	sodium_bin2hex(out, AUDIT_AUDITOR_ID_TEXT, h, sizeof(h));
}

int audit_auditor_public_format(const uint8_t pk[static AUDIT_AUDITOR_KEY_LEN],
				char out[static AUDIT_AUDITOR_PUB_TEXT])
{
	size_t n = sizeof(PUB_PREFIX) - 1;

	memcpy(out, PUB_PREFIX, n);
	sodium_bin2base64(out + n, AUDIT_AUDITOR_PUB_TEXT - n, pk, AUDIT_AUDITOR_KEY_LEN,
			  sodium_base64_VARIANT_ORIGINAL);
	return 0;
}

/* "PREFIX<base64 of 32 bytes>" with at most one final newline, into out. */
static int key_text_parse(const char *text, size_t len, const char *prefix, uint8_t *out)
{
	size_t n = strlen(prefix), got = 0;

	if (len > 0 && text[len - 1] == '\n')
		len--;
	if (len > 0 && text[len - 1] == '\r')
		len--;
	if (len <= n || memcmp(text, prefix, n) != 0)
		return -EINVAL;
	/* Canonical base64 only (libsodium 1.0.18 alone decodes any byte from 0x80 up as '/', so
	 * another text would name the same key). */
	if (base64_decode_canonical(text + n, len - n, NULL, out, AUDIT_AUDITOR_KEY_LEN, &got) < 0)
		return -EINVAL;
	if (got != AUDIT_AUDITOR_KEY_LEN) {
		sodium_memzero(out, got);
		return -EINVAL;
	}
	return 0;
}

int audit_auditor_public_parse(const char *text, size_t len,
			       uint8_t ret_pk[static AUDIT_AUDITOR_KEY_LEN])
{
	uint8_t pk[AUDIT_AUDITOR_KEY_LEN];

	if (key_text_parse(text, len, PUB_PREFIX, pk) < 0)
		return err_set(-EINVAL, "not an auditor public key (one line: \"" PUB_PREFIX
			       "\" and 44 characters of base64)");
	memcpy(ret_pk, pk, sizeof(pk));
	return 0;
}

/* Read a small key file whole (at most 256 bytes) into buf. */
static int read_small(const char *path, bool secret, char *buf, size_t cap, size_t *ret_len)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(-EINVAL, "%s is not a regular file", path);
	}
	if (secret && (st.st_mode & 077)) {
		close(fd);
		return err_set(-EPERM, "%s is readable or writable by group or others; an auditor's "
			       "secret key must be private (chmod 600 %s)", path, path);
	}
	n = read_full(fd, buf, cap);
	close(fd);
	if (n < 0)
		return err_set((int)n, "%s: %s", path, strerror((int)-n));
	if ((size_t)n == cap)
		return err_set(-EINVAL, "%s is too long for an auditor key", path);
	*ret_len = (size_t)n;
	return 0;
}

int audit_auditor_public_read(const char *path, uint8_t ret_pk[static AUDIT_AUDITOR_KEY_LEN])
{
	char buf[256];
	size_t n = 0;
	int r = read_small(path, false, buf, sizeof(buf), &n);

	if (r < 0)
		return r;
	r = audit_auditor_public_parse(buf, n, ret_pk);
	if (r < 0)
		return err_set(r, "%s: %s", path, err_detail());
	return 0;
}

int audit_auditor_secret_read(const char *path, uint8_t **ret_sk,
			      uint8_t ret_pk[static AUDIT_AUDITOR_KEY_LEN])
{
	char *buf = NULL;
	uint8_t *sk = NULL;
	size_t n = 0;
	int r;

	if (sodium_init() < 0)
		return err_set(-EIO, "libsodium cannot be initialised");
	buf = sodium_malloc(256);
	sk = sodium_malloc(AUDIT_AUDITOR_KEY_LEN);
	if (!buf || !sk) {
		r = -ENOMEM;
		goto out;
	}
	r = read_small(path, true, buf, 256, &n);
	if (r < 0)
		goto out;
	if (key_text_parse(buf, n, SEC_PREFIX, sk) < 0) {
		r = err_set(-EINVAL, "%s is not an auditor secret key (one line: \"" SEC_PREFIX
			    "\" and 44 characters of base64, as `enclavectl init "
			    "--auditor-key-out` writes it)", path);
		goto out;
	}
	crypto_scalarmult_base(ret_pk, sk);
	sodium_mprotect_readonly(sk);
	*ret_sk = sk;
	sk = NULL;
out:
	sodium_free(buf);	/* wipes it */
	sodium_free(sk);
	return r;
}

int audit_auditor_keypair_write(const char *path, uint8_t ret_pk[static AUDIT_AUDITOR_KEY_LEN])
{
	uint8_t *sk = NULL, pk[AUDIT_AUDITOR_KEY_LEN];
	char *text = NULL;
	size_t n = sizeof(SEC_PREFIX) - 1;
	int fd = -1, r = 0;

	if (sodium_init() < 0)
		return err_set(-EIO, "libsodium cannot be initialised");
	sk = sodium_malloc(AUDIT_AUDITOR_KEY_LEN);
	text = sodium_malloc(128);
	if (!sk || !text) {
		r = -ENOMEM;
		goto out;
	}
	crypto_box_keypair(pk, sk);
	memcpy(text, SEC_PREFIX, n);
	sodium_bin2base64(text + n, 128 - n, sk, AUDIT_AUDITOR_KEY_LEN,
			  sodium_base64_VARIANT_ORIGINAL);
	n = strlen(text);
	text[n++] = '\n';
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = err_set(-errno, "cannot create %s: %s", path, strerror(errno));
		goto out;
	}
	/* 0600 whatever the umask said. */
	if (fchmod(fd, 0600) < 0 || (r = pwrite_all(fd, text, n, 0)) < 0 || fsync(fd) < 0) {
		r = r < 0 ? r : -errno;
		r = err_set(r, "cannot write %s: %s", path, strerror(-r));
		unlink(path);
		goto out;
	}
	memcpy(ret_pk, pk, sizeof(pk));
out:
	if (fd >= 0)
		close(fd);
	sodium_free(sk);
	sodium_free(text);
	return r;
}

/* ---- Base64 of binary members ---------------------------------------------------------- */

static json_t *b64_json(const uint8_t *p, size_t n)
{
	size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(cap);
	json_t *j;

	if (!s)
		return NULL;
	sodium_bin2base64(s, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
	j = json_string(s);
	free(s);
	return j;
}

/* Decode member v (a base64 string) into out (cap bytes); the decoded length, or -EBADMSG. Only
 * the canonical text is taken (base64_decode_canonical()): one text for each sealed value. */
static ssize_t b64_get(const json_t *v, uint8_t *out, size_t cap)
{
	const char *s = json_string_value(v);
	size_t got = 0;

	if (!s || base64_decode_canonical(s, json_string_length(v), NULL, out, cap, &got) < 0)
		return -EBADMSG;
	return (ssize_t)got;
}

/* label || LE64(seq): what binds an epoch key to its key record. */
static void key_ad(uint64_t seq, uint8_t out[static sizeof(KEY_AD_LABEL) - 1 + 8])
{
	memcpy(out, KEY_AD_LABEL, sizeof(KEY_AD_LABEL) - 1);
	put_le64(out + sizeof(KEY_AD_LABEL) - 1, seq);
}

/* label || 0x00 || the canonical line of the clear part. malloc'd. */
static int record_ad(const json_t *clear, uint8_t **ret, size_t *ret_len)
{
	size_t ln = sizeof(RECORD_AD_LABEL), n;
	char *line;
	uint8_t *ad;

	line = json_dumps(clear, AUDIT_JSON_FLAGS);
	if (!line)
		return -ENOMEM;
	n = strlen(line);
	ad = malloc(ln + n);
	if (!ad) {
		free(line);
		return -ENOMEM;
	}
	memcpy(ad, RECORD_AD_LABEL, ln);	/* the label's NUL is the separator */
	memcpy(ad + ln, line, n);
	free(line);
	*ret = ad;
	*ret_len = ln + n;
	return 0;
}

/* ---- Writer ------------------------------------------------------------------------------ */

int audit_sealer_set(struct audit_log *log, const uint8_t store_key[static AUDIT_SEAL_KEY_LEN],
		     const uint8_t (*auditors)[AUDIT_AUDITOR_KEY_LEN], size_t n)
{
	uint8_t *sk = NULL, *ek = NULL, (*pks)[AUDIT_AUDITOR_KEY_LEN] = NULL;

	if (n > AUDIT_AUDITORS_MAX)
		return err_set(-E2BIG, "more than %u auditor keys", AUDIT_AUDITORS_MAX);
	if (sodium_init() < 0)
		return err_set(-EIO, "libsodium cannot be initialised");
	sk = sodium_malloc(AUDIT_SEAL_KEY_LEN);
	ek = sodium_malloc(AUDIT_SEAL_KEY_LEN);
	if (n)
		pks = malloc(n * AUDIT_AUDITOR_KEY_LEN);
	if (!sk || !ek || (n && !pks)) {
		sodium_free(sk);
		sodium_free(ek);
		free(pks);
		return -ENOMEM;
	}
	memcpy(sk, store_key, AUDIT_SEAL_KEY_LEN);
	sodium_mprotect_readonly(sk);
	if (n)
		memcpy(pks, auditors, n * AUDIT_AUDITOR_KEY_LEN);

	pthread_mutex_lock(&log->lock);
	sodium_free(log->seal.store_key);
	sodium_free(log->seal.epoch_key);
	free(log->seal.auditors);
	log->seal.store_key = sk;
	log->seal.epoch_key = ek;
	log->seal.auditors = pks;
	log->seal.nauditors = n;
	log->seal.written = false;	/* a new epoch, announced by the next append */
	pthread_mutex_unlock(&log->lock);
	return 0;
}

void audit_sealer_clear(struct audit_log *log)
{
	pthread_mutex_lock(&log->lock);
	sodium_free(log->seal.store_key);	/* wipes them */
	sodium_free(log->seal.epoch_key);
	free(log->seal.auditors);
	log->seal = (struct audit_seal){ 0 };
	pthread_mutex_unlock(&log->lock);
}

bool audit_sealing(struct audit_log *log)
{
	bool on;

	pthread_mutex_lock(&log->lock);
	on = log->seal.store_key != NULL;
	pthread_mutex_unlock(&log->lock);
	return on;
}

/* With the lock held: does the next record need a new epoch (and so a key record first)? */
bool seal_needs_key(struct audit_log *log)
{
	return log->seal.store_key &&
	       (!log->seal.written || log->seal.count >= AUDIT_EPOCH_RECORDS);
}

/* With the lock held: a fresh epoch key, and the key record (without seq, time, prev: the caller
 * stamps it with seq) announcing it. */
int seal_key_record(struct audit_log *log, uint64_t seq, json_t **ret_rec)
{
	struct audit_seal *s = &log->seal;
	uint8_t ad[sizeof(KEY_AD_LABEL) - 1 + 8], nonce[NONCE_LEN];
	uint8_t store_box[STORE_BOX_LEN], plain[BOX_PLAIN_LEN], box[BOX_LEN];
	json_t *rec, *list;
	int r = -ENOMEM;

	sodium_mprotect_readwrite(s->epoch_key);
	randombytes_buf(s->epoch_key, AUDIT_SEAL_KEY_LEN);
	sodium_mprotect_readonly(s->epoch_key);

	key_ad(seq, ad);
	randombytes_buf(nonce, sizeof(nonce));
	memcpy(store_box, nonce, NONCE_LEN);
	crypto_aead_xchacha20poly1305_ietf_encrypt(store_box + NONCE_LEN, NULL, s->epoch_key,
						   AUDIT_SEAL_KEY_LEN, ad, sizeof(ad), NULL, nonce,
						   s->store_key);
	list = json_array();
	rec = json_object();
	if (!list || !rec)
		goto out;
	memcpy(plain, s->epoch_key, AUDIT_SEAL_KEY_LEN);
	put_le64(plain + AUDIT_SEAL_KEY_LEN, seq);
	for (size_t i = 0; i < s->nauditors; i++) {
		char id[AUDIT_AUDITOR_ID_TEXT];
		json_t *e;

		if (crypto_box_seal(box, plain, sizeof(plain), s->auditors[i]) != 0) {
			r = -EIO;
			goto out;
		}
		audit_auditor_id(s->auditors[i], id);
		e = json_pack("{s:s, s:o}", "id", id, "box", b64_json(box, sizeof(box)));
		if (!e || json_array_append_new(list, e) < 0)
			goto out;
	}
	if (json_object_set_new(rec, "event", json_string("log_key")) < 0 ||
	    json_object_set(rec, "auditors", list) < 0 ||
	    json_object_set_new(rec, "store", b64_json(store_box, sizeof(store_box))) < 0)
		goto out;
	*ret_rec = rec;
	rec = NULL;
	r = 0;
out:
	sodium_memzero(plain, sizeof(plain));
	json_decref(list);
	json_decref(rec);
	return r;
}

/* With the lock held, after the key record of seq key_seq was queued. */
void seal_key_written(struct audit_log *log, uint64_t key_seq)
{
	log->seal.written = true;
	log->seal.key_seq = key_seq;
	log->seal.count = 0;
}

/* With the lock held: obj is stamped (seq, time, prev). Move its sensitive members into the
 * sealed part under the current epoch. */
int seal_record(struct audit_log *log, json_t *obj)
{
	struct audit_seal *s = &log->seal;
	uint8_t nonce[NONCE_LEN], *ad = NULL, *ct = NULL;
	json_t *secret = json_object();
	const char *name;
	json_t *v, *tmp;
	char *plain = NULL;
	size_t adn = 0, pn;
	int r = -ENOMEM;

	if (!secret)
		return -ENOMEM;
	json_object_foreach_safe(obj, tmp, name, v) {
		if (audit_member_is_clear(name, v))
			continue;
		if (json_object_set(secret, name, v) < 0 || json_object_del(obj, name) < 0)
			goto out;
	}
	if (json_object_set_new(obj, "key", json_integer((json_int_t)s->key_seq)) < 0)
		goto out;
	plain = json_dumps(secret, AUDIT_JSON_FLAGS);
	if (!plain)
		goto out;
	pn = strlen(plain);
	r = record_ad(obj, &ad, &adn);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	ct = malloc(NONCE_LEN + pn + ABYTES);
	if (!ct)
		goto out;
	randombytes_buf(nonce, sizeof(nonce));
	memcpy(ct, nonce, NONCE_LEN);
	crypto_aead_xchacha20poly1305_ietf_encrypt(ct + NONCE_LEN, NULL, (const uint8_t *)plain,
						   pn, ad, adn, NULL, nonce, s->epoch_key);
	if (json_object_set_new(obj, "sealed", b64_json(ct, NONCE_LEN + pn + ABYTES)) < 0)
		goto out;
	s->count++;
	r = 0;
out:
	if (plain) {
		sodium_memzero(plain, strlen(plain));
		free(plain);
	}
	free(ad);
	free(ct);
	json_decref(secret);
	return r;
}

/* ---- Reader ------------------------------------------------------------------------------ */

/* One epoch the opener has seen. */
struct epoch {
	uint64_t seq;          /* its key record's seq */
	bool have;             /* the key opened: keys[i] holds it */
	char why[320];         /* when it did not: why, for the message (never cut) */
};

struct audit_opener {
	uint8_t *store_key;        /* sodium_malloc'd, or NULL */
	uint8_t *auditor_sk;       /* sodium_malloc'd, or NULL */
	uint8_t auditor_pk[AUDIT_AUDITOR_KEY_LEN];
	char auditor_id[AUDIT_AUDITOR_ID_TEXT];
	struct epoch *epochs;      /* n of them, by seq; owned */
	uint8_t *keys;             /* cap * AUDIT_SEAL_KEY_LEN, sodium_malloc'd, parallel */
	size_t n, cap;
};

int audit_opener_new(const uint8_t *store_key, const char *auditor_key_file,
		     struct audit_opener **ret)
{
	struct audit_opener *o = calloc(1, sizeof(*o));
	int r;

	if (!o)
		return -ENOMEM;
	if (sodium_init() < 0) {
		free(o);
		return err_set(-EIO, "libsodium cannot be initialised");
	}
	if (store_key) {
		o->store_key = sodium_malloc(AUDIT_SEAL_KEY_LEN);
		if (!o->store_key) {
			free(o);
			return -ENOMEM;
		}
		memcpy(o->store_key, store_key, AUDIT_SEAL_KEY_LEN);
		sodium_mprotect_readonly(o->store_key);
	}
	if (auditor_key_file) {
		r = audit_auditor_secret_read(auditor_key_file, &o->auditor_sk, o->auditor_pk);
		if (r < 0) {
			audit_opener_free(o);
			return r;
		}
		audit_auditor_id(o->auditor_pk, o->auditor_id);
	}
	*ret = o;
	return 0;
}

void audit_opener_free(struct audit_opener *o)
{
	if (!o)
		return;
	sodium_free(o->store_key);
	sodium_free(o->auditor_sk);
	sodium_free(o->keys);
	free(o->epochs);
	free(o);
}

bool audit_record_sealed(const json_t *rec)
{
	return json_object_get(rec, "sealed") != NULL;
}

/* The epoch of key record seq, or NULL. Epochs are learned in log order, so binary search. */
static struct epoch *epoch_find(struct audit_opener *o, uint64_t seq, size_t *ret_i)
{
	size_t lo = 0, hi = o->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (o->epochs[mid].seq == seq) {
			*ret_i = mid;
			return &o->epochs[mid];
		}
		if (o->epochs[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Room for one more epoch, at the end (seq above every one so far) or in order. */
static int epoch_add(struct audit_opener *o, uint64_t seq, struct epoch **ret, uint8_t **ret_key)
{
	size_t i;

	if (epoch_find(o, seq, &i))
		return err_set(-EBADMSG, "two key records with seq %llu",
			       (unsigned long long)seq);
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 16;
		struct epoch *e;
		uint8_t *k;

		if (cap > OPENER_EPOCHS_MAX)
			return err_set(-E2BIG, "more than %u log keys", OPENER_EPOCHS_MAX);
		e = realloc(o->epochs, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		o->epochs = e;
		k = sodium_malloc(cap * AUDIT_SEAL_KEY_LEN);
		if (!k)
			return -ENOMEM;
		if (o->keys)
			memcpy(k, o->keys, o->n * AUDIT_SEAL_KEY_LEN);
		sodium_free(o->keys);
		o->keys = k;
		o->cap = cap;
	}
	for (i = o->n; i > 0 && o->epochs[i - 1].seq > seq; i--)
		;
	memmove(&o->epochs[i + 1], &o->epochs[i], (o->n - i) * sizeof(*o->epochs));
	memmove(o->keys + (i + 1) * AUDIT_SEAL_KEY_LEN, o->keys + i * AUDIT_SEAL_KEY_LEN,
		(o->n - i) * AUDIT_SEAL_KEY_LEN);
	o->n++;
	o->epochs[i] = (struct epoch){ .seq = seq };
	*ret = &o->epochs[i];
	*ret_key = o->keys + i * AUDIT_SEAL_KEY_LEN;
	return 0;
}

/* Learn the epoch key of key record rec (seq seq): from the store box with the store key, else
 * from our box with the auditor key. An epoch we cannot open is remembered with the reason. */
static int learn_key(struct audit_opener *o, const json_t *rec, uint64_t seq)
{
	uint8_t ad[sizeof(KEY_AD_LABEL) - 1 + 8], buf[STORE_BOX_LEN + BOX_LEN];
	uint8_t plain[BOX_PLAIN_LEN], *key = NULL;
	const json_t *list = json_object_get(rec, "auditors"), *e;
	struct epoch *ep = NULL;
	bool listed = false;
	size_t i;
	ssize_t n;
	int r;

	r = epoch_add(o, seq, &ep, &key);
	if (r < 0)
		return r;
	key_ad(seq, ad);
	if (o->store_key) {
		n = b64_get(json_object_get(rec, "store"), buf, sizeof(buf));
		if (n == STORE_BOX_LEN &&
		    crypto_aead_xchacha20poly1305_ietf_decrypt(key, NULL, NULL, buf + NONCE_LEN,
							       STORE_BOX_LEN - NONCE_LEN, ad,
							       sizeof(ad), buf, o->store_key) == 0) {
			ep->have = true;
			return 0;
		}
		snprintf(ep->why, sizeof(ep->why), "its key record (seq %llu) does not open with "
			 "this store's key (altered, or from another store)",
			 (unsigned long long)seq);
	}
	if (!o->auditor_sk) {
		if (!o->store_key)
			snprintf(ep->why, sizeof(ep->why), "no auditor key was given");
		return 0;
	}
	json_array_foreach(list, i, e) {
		const char *id = json_string_value(json_object_get(e, "id"));

		if (!id || strcmp(id, o->auditor_id) != 0)
			continue;
		listed = true;
		n = b64_get(json_object_get(e, "box"), buf, sizeof(buf));
		if (n == BOX_LEN &&
		    crypto_box_seal_open(plain, buf, BOX_LEN, o->auditor_pk, o->auditor_sk) == 0 &&
		    get_le64(plain + AUDIT_SEAL_KEY_LEN) == seq) {
			memcpy(key, plain, AUDIT_SEAL_KEY_LEN);
			sodium_memzero(plain, sizeof(plain));
			ep->have = true;
			return 0;
		}
	}
	sodium_memzero(plain, sizeof(plain));
	if (listed) {
		snprintf(ep->why, sizeof(ep->why), "the log key of record %llu is sealed to auditor "
			 "key %s but does not open with it (altered, or moved from another record)",
			 (unsigned long long)seq, o->auditor_id);
	} else {
		char ids[120] = "";
		size_t k = 0;

		json_array_foreach(list, i, e) {
			const char *id = json_string_value(json_object_get(e, "id"));

			if (id && k + strlen(id) + 2 < sizeof(ids))
				k += (size_t)snprintf(ids + k, sizeof(ids) - k, "%s%s", k ? ", " : "",
						      id);
		}
		snprintf(ep->why, sizeof(ep->why), "the log key of record %llu is not sealed to "
			 "auditor key %s (it is sealed to: %s): the wrong --auditor-key?",
			 (unsigned long long)seq, o->auditor_id, k ? ids : "no auditor");
	}
	return 0;
}

int audit_opener_open(struct audit_opener *o, const json_t *rec, json_t **ret)
{
	const json_t *sealed = json_object_get(rec, "sealed"), *kj = json_object_get(rec, "key");
	const json_t *sj = json_object_get(rec, "seq");
	uint8_t *ad = NULL, *ct = NULL;
	unsigned long long seq;
	json_t *clear = NULL, *secret = NULL, *v;
	json_error_t jerr;
	struct epoch *ep = NULL;
	const char *name;
	size_t i, adn = 0, cap;
	ssize_t n;
	int r;

	if (!json_is_integer(sj) || json_integer_value(sj) < 0)
		return err_set(-EBADMSG, "a record without a seq");
	seq = (unsigned long long)json_integer_value(sj);
	if (!sealed) {
		const char *ev = json_string_value(json_object_get(rec, "event"));

		if (ev && strcmp(ev, "log_key") == 0) {
			r = learn_key(o, rec, seq);
			if (r < 0)
				return err_set(r, "record %llu: %s", seq, err_detail());
		}
		*ret = json_incref((json_t *)rec);
		return 0;
	}
	if (!json_is_string(sealed) || !json_is_integer(kj) || json_integer_value(kj) < 0 ||
	    (unsigned long long)json_integer_value(kj) >= seq)
		return err_set(-EBADMSG, "record %llu: a sealed record without a key record "
			       "before it", seq);
	ep = epoch_find(o, (uint64_t)json_integer_value(kj), &i);
	if (!ep)
		return err_set(-ENOKEY, "record %llu is sealed under the log key of record %lld, "
			       "which was not read", seq, (long long)json_integer_value(kj));
	if (!ep->have)
		return err_set(-ENOKEY, "record %llu cannot be opened: %s", seq, ep->why);

	cap = json_string_length(sealed);
	ct = malloc(cap + 1);
	clear = json_deep_copy(rec);
	if (!ct || !clear) {
		r = -ENOMEM;
		goto out;
	}
	n = b64_get(sealed, ct, cap + 1);
	if (n < (ssize_t)(NONCE_LEN + ABYTES)) {
		r = err_set(-EBADMSG, "record %llu: its sealed part is not base64 of a sealed "
			    "value", seq);
		goto out;
	}
	json_object_del(clear, "sealed");
	r = record_ad(clear, &ad, &adn);
	if (r < 0)
		goto out;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(ct + NONCE_LEN, NULL, NULL, ct + NONCE_LEN,
						       (size_t)n - NONCE_LEN, ad, adn, ct,
						       o->keys + i * AUDIT_SEAL_KEY_LEN) != 0) {
		r = err_set(-EBADMSG, "record %llu: its sealed part does not authenticate: forged, "
			    "altered, or moved from another record", seq);
		goto out;
	}
	secret = json_loadb((const char *)ct + NONCE_LEN, (size_t)n - NONCE_LEN - ABYTES,
			    AUDIT_JSON_LOAD_FLAGS, &jerr);
	sodium_memzero(ct, (size_t)n);
	if (!json_is_object(secret)) {
		r = err_set(-EBADMSG, "record %llu: its sealed part is not a JSON object", seq);
		goto out;
	}
	json_object_foreach(secret, name, v) {
		if (json_object_get(clear, name)) {
			r = err_set(-EBADMSG, "record %llu: \"%s\" is both clear and sealed", seq,
				    name);
			goto out;
		}
		if (json_object_set(clear, name, v) < 0) {
			r = -ENOMEM;
			goto out;
		}
	}
	*ret = clear;
	clear = NULL;
	r = 0;
out:
	json_decref(secret);
	json_decref(clear);
	free(ad);
	free(ct);
	return r;
}
