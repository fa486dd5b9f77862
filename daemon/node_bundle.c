/* node_bundle: what the primary gives each enrolled node so that it runs without the passphrase
 * (docs/DEPLOYMENT.md section 7, "Node keys"; docs/FORMAT.md 3.9).
 *
 * For node NAME the primary writes <store>/nodes/NAME.bundle (a new file renamed over the old):
 *
 *   "ENCLNBF1" || be32 note length || note || box
 *
 *   note  a C2SP signed note, signed with the primary's audit key (the key the node was given at
 *         --init, which also signs the signal):
 *           enclave-node-bundle/1 <store id, 32 hex digits>
 *           node NAME
 *           enrolment ID
 *           ring G
 *           box <BLAKE2b-256 of box, 64 hex digits>
 *   box   a libsodium sealed box (X25519, XSalsa20-Poly1305) to the node's X25519 key, holding
 *           "ENCLNB01" || store id (16) || u8 name length || name || be64 enrolment || be64 ring
 *           || Ks (32) || the node's log key (32) || u8 n || n auditor keys (32 each)
 *           || be32 m || m entries (u8 kind, 3 zero bytes, be32 version, be64 dataset, key 32)
 *         Ks is the store-wide index seal key (policy and meta records); the entries are the
 *         key ring's (name key, dataset keys, version keys) at generation G; the log key is the
 *         one the node's own log is sealed to besides the auditors (derived from the master key
 *         for this node, so the primary reads the node's log too). Never the master key.
 *
 * A sealed box alone is anonymous (anyone can seal to the node's public key); the signed note
 * says it is the primary's, for this node and this enrolment, of ring generation G, and names the
 * box by its hash. The signal (node.c) announces the ring generation whose bundles are written,
 * so a node knows when to read its bundle again, and one handed an older bundle (a replay, a
 * rolled-back file) cannot become fresh. A removed node gets no bundle again: its file is
 * removed, and nothing committed after its removal is ever sealed to its key.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/note.h"
#include "common/common.h"
#include "common/err.h"
#include "daemon/daemon.h"

#define FILE_MAGIC "ENCLNBF1"
#define BOX_MAGIC "ENCLNB01"
#define ENTRY_LEN 48
#define BUNDLE_SUFFIX ".bundle"

static size_t box_plain_len(size_t name_len, size_t nauditors, size_t nkeys)
{
	return 8 + 16 + 1 + name_len + 8 + 8 + 32 + 32 + 1 + nauditors * 32 + 4 +
	       nkeys * ENTRY_LEN;
}

void node_bundle_free(struct node_bundle *b)
{
	if (!b)
		return;
	store_node_keys_free(b->keys);
	sodium_free(b);   /* wipes */
}

static void bundle_file_name(char out[static NODE_NAME_MAX + 16], const char *name)
{
	snprintf(out, NODE_NAME_MAX + 16, "%s" BUNDLE_SUFFIX, name);
}

static int note_text(const uint8_t store_id[static 16], const char *name, uint64_t enrolment,
		     uint64_t ring, const uint8_t hash[static 32], char *out, size_t cap)
{
	char hex[33], hhex[65];
	int n;

	sodium_bin2hex(hex, sizeof(hex), store_id, 16);
	sodium_bin2hex(hhex, sizeof(hhex), hash, 32);
	n = snprintf(out, cap, "enclave-node-bundle/1 %s\nnode %s\nenrolment %" PRIu64 "\nring %"
		     PRIu64 "\nbox %s\n", hex, name, enrolment, ring, hhex);
	return n < 0 || (size_t)n >= cap ? -E2BIG : n;
}

int node_bundle_write(int nodes_fd, struct store *st, struct audit_log *log, const char *name,
		      uint64_t enrolment, const uint8_t box_pk[static 32],
		      const struct store_node_keys *keys)
{
	uint8_t auditors[STORE_AUDITORS_MAX][32], hash[32];
	crypto_key *ak = NULL;
	size_t na = 0, nl = strlen(name), pl, bl, notel = 0, off;
	uint8_t *pt = NULL, *file = NULL;
	char text[512], fname[NODE_NAME_MAX + 16], tmp[NODE_NAME_MAX + 48];
	char *note = NULL;
	int r, n, fd = -1;

	if (!node_name_valid(name))
		return err_set(-EINVAL, "\"%s\" is not a node name", name);
	r = store_auditors_get(st, auditors, &na);
	if (r == 0)
		r = store_node_audit_key(st, name, &ak);
	if (r < 0)
		goto out;
	pl = box_plain_len(nl, na, keys->n);
	bl = pl + crypto_box_SEALBYTES;
	pt = sodium_malloc(pl);
	if (!pt) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(pt, BOX_MAGIC, 8);
	memcpy(pt + 8, keys->store_id, 16);
	pt[24] = (uint8_t)nl;
	memcpy(pt + 25, name, nl);
	off = 25 + nl;
	put_be64(pt + off, enrolment);
	put_be64(pt + off + 8, keys->generation);
	memcpy(pt + off + 16, keys->ix_seal, 32);
	memcpy(pt + off + 48, crypto_key_bytes(ak), 32);
	off += 80;
	pt[off++] = (uint8_t)na;
	for (size_t i = 0; i < na; i++, off += 32)
		memcpy(pt + off, auditors[i], 32);
	put_be32(pt + off, (uint32_t)keys->n);
	off += 4;
	for (size_t i = 0; i < keys->n; i++, off += ENTRY_LEN) {
		pt[off] = keys->e[i].kind;
		pt[off + 1] = pt[off + 2] = pt[off + 3] = 0;
		put_be32(pt + off + 4, keys->e[i].version);
		put_be64(pt + off + 8, keys->e[i].dsid);
		memcpy(pt + off + 16, keys->e[i].key, 32);
	}
	/* The file: magic, note length, note, box. The box first, into its place at the end. */
	n = note_text(keys->store_id, name, enrolment, keys->generation, (const uint8_t[32]){ 0 },
		      text, sizeof(text));
	if (n < 0) {
		r = n;
		goto out;
	}
	file = malloc(12 + NOTE_MAX + bl);
	if (!file) {
		r = -ENOMEM;
		goto out;
	}
	if (crypto_box_seal(file + 12 + NOTE_MAX, pt, pl, box_pk) != 0) {
		r = err_set(-EINVAL, "node %s: its public key does not take a sealed box", name);
		goto out;
	}
	crypto_generichash(hash, 32, file + 12 + NOTE_MAX, bl, NULL, 0);
	n = note_text(keys->store_id, name, enrolment, keys->generation, hash, text, sizeof(text));
	if (n < 0) {
		r = n;
		goto out;
	}
	r = audit_sign_note(log, text, (size_t)n, &note, &notel);
	if (r < 0)
		goto out;
	if (notel > NOTE_MAX) {
		r = -E2BIG;
		goto out;
	}
	memcpy(file, FILE_MAGIC, 8);
	put_be32(file + 8, (uint32_t)notel);
	memcpy(file + 12, note, notel);
	memmove(file + 12 + notel, file + 12 + NOTE_MAX, bl);
	bundle_file_name(fname, name);
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", fname, (int)getpid());
	(void)unlinkat(nodes_fd, tmp, 0);
	fd = openat(nodes_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = err_set(-errno, "nodes/%s: %s", tmp, strerror(errno));
		goto out;
	}
	r = pwrite_all(fd, file, 12 + notel + bl, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && renameat(nodes_fd, tmp, nodes_fd, fname) < 0)
		r = -errno;
	if (r < 0) {
		(void)unlinkat(nodes_fd, tmp, 0);
		r = err_set(r, "nodes/%s: cannot write it: %s", fname, strerror(-r));
	}
out:
	if (pt)
		sodium_free(pt);
	free(file);
	free(note);
	crypto_key_free(ak);
	return r;
}

int node_bundle_unlink(int nodes_fd, const char *name)
{
	char fname[NODE_NAME_MAX + 16];

	if (!node_name_valid(name))
		return -EINVAL;
	bundle_file_name(fname, name);
	if (unlinkat(nodes_fd, fname, 0) < 0 && errno != ENOENT)
		return err_set(-errno, "nodes/%s: cannot remove it: %s", fname, strerror(errno));
	return fsync_dirfd(nodes_fd) < 0 ? -errno : 0;
}

int node_bundle_stat(int nodes_fd, const char *name, struct stat *ret)
{
	char fname[NODE_NAME_MAX + 16];

	bundle_file_name(fname, name);
	if (fstatat(nodes_fd, fname, ret, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

/* nodes_fd/fname whole, at most max bytes (malloc'd). */
static int read_at(int dirfd, const char *fname, size_t max, uint8_t **ret, size_t *ret_len)
{
	struct stat sb;
	uint8_t *b;
	ssize_t n;
	int fd = openat(dirfd, fname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	b = malloc((size_t)sb.st_size + 1);
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	n = read_full(fd, b, (size_t)sb.st_size + 1);
	close(fd);
	if (n < 0 || (size_t)n > (size_t)sb.st_size) {
		free(b);
		return n < 0 ? (int)n : -EFBIG;
	}
	*ret = b;
	*ret_len = (size_t)n;
	return 0;
}

int node_bundle_parse(const uint8_t *file, size_t len, const char *name,
		      const struct note_verifier *primary, const uint8_t *store_id,
		      const uint8_t seed[static 32], struct node_bundle **ret)
{
	char fname[NODE_NAME_MAX + 16], want[512], why[ERR_DETAIL_MAX];
	char hex[33], hhex[65], sname[NODE_NAME_MAX + 1];
	uint8_t *pt = NULL, hash[32], hb[32], sk[32], pk[32], sid[16];
	struct node_bundle *b = NULL;
	unsigned long long enrolment = 0, ring = 0;
	size_t notel, tl = 0, bl, pl, off, nn = strlen(name), nk;
	const uint8_t *box;
	char *note = NULL;
	int r, used = 0;

	bundle_file_name(fname, name);
	if (len < 12 || memcmp(file, FILE_MAGIC, 8) != 0 ||
	    (notel = get_be32(file + 8)) > NOTE_MAX || len < 12 + notel + crypto_box_SEALBYTES) {
		r = err_set(-EBADMSG, "nodes/%s is not a node key bundle", fname);
		goto out;
	}
	note = malloc(notel + 1);
	if (!note) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(note, file + 12, notel);
	note[notel] = '\0';
	r = note_open(note, notel, primary, &tl, NULL);
	if (r < 0) {
		snprintf(why, sizeof(why), "%s", err_detail());
		r = err_set(-EKEYREJECTED, "nodes/%s is not signed by the primary's key: %.200s",
			    fname, why);
		goto out;
	}
	note[tl] = '\0';
	if (sscanf(note, "enclave-node-bundle/1 %32[0-9a-f]\nnode %64s\nenrolment %llu\nring %llu"
		   "\nbox %64[0-9a-f]\n%n", hex, sname, &enrolment, &ring, hhex, &used) != 5 ||
	    (size_t)used != tl || sodium_hex2bin(sid, 16, hex, 32, NULL, NULL, NULL) != 0 ||
	    sodium_hex2bin(hb, 32, hhex, 64, NULL, NULL, NULL) != 0) {
		r = err_set(-EBADMSG, "nodes/%s: its note is malformed", fname);
		goto out;
	}
	if (strcmp(sname, name) != 0) {
		r = err_set(-EBADMSG, "nodes/%s is node %s's bundle, not this node's", fname, sname);
		goto out;
	}
	if (store_id && sodium_memcmp(sid, store_id, 16) != 0) {
		r = err_set(-EBADMSG, "nodes/%s is for another store", fname);
		goto out;
	}
	if (note_text(sid, name, enrolment, ring, hb, want, sizeof(want)) < 0 ||
	    strcmp(want, note) != 0) {
		r = err_set(-EBADMSG, "nodes/%s: its note is not in canonical form", fname);
		goto out;
	}
	box = file + 12 + notel;
	bl = len - 12 - notel;
	crypto_generichash(hash, 32, box, bl, NULL, 0);
	if (sodium_memcmp(hash, hb, 32) != 0) {
		r = err_set(-EBADMSG, "nodes/%s: its box is not the one its signed note names "
			    "(replaced)", fname);
		goto out;
	}
	pl = bl - crypto_box_SEALBYTES;
	pt = sodium_malloc(pl + 1);
	b = sodium_malloc(sizeof(*b));
	if (!pt || !b) {
		r = -ENOMEM;
		goto out;
	}
	sodium_memzero(b, sizeof(*b));
	node_key_box_secret(seed, sk);
	crypto_scalarmult_base(pk, sk);
	if (crypto_box_seal_open(pt, box, bl, pk, sk) != 0) {
		r = err_set(-EBADMSG, "nodes/%s does not open with this node's key (made for "
			    "another key of this name?)", fname);
		goto out;
	}
	if (pl < box_plain_len(nn, 0, 0) || memcmp(pt, BOX_MAGIC, 8) != 0 ||
	    memcmp(pt + 8, sid, 16) != 0 || pt[24] != nn || memcmp(pt + 25, name, nn) != 0 ||
	    get_be64(pt + 25 + nn) != enrolment || get_be64(pt + 33 + nn) != ring) {
		r = err_set(-EBADMSG, "nodes/%s: its box does not match its note", fname);
		goto out;
	}
	off = 25 + nn + 16;
	memcpy(b->store_id, sid, 16);
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->enrolment = enrolment;
	b->ring = ring;
	memcpy(b->audit_key, pt + off + 32, 32);
	b->nauditors = pt[off + 64];
	off += 65;
	if (b->nauditors > STORE_AUDITORS_MAX || pl < off + b->nauditors * 32 + 4) {
		r = err_set(-EBADMSG, "nodes/%s: bad auditor count", fname);
		goto out;
	}
	memcpy(b->auditors, pt + off, b->nauditors * 32);
	off += b->nauditors * 32;
	nk = get_be32(pt + off);
	off += 4;
	if (nk > STORE_NODE_KEYS_MAX || pl != off + nk * ENTRY_LEN) {
		r = err_set(-EBADMSG, "nodes/%s: bad key count", fname);
		goto out;
	}
	r = store_node_keys_new(nk, &b->keys);
	if (r < 0)
		goto out;
	memcpy(b->keys->store_id, sid, 16);
	b->keys->generation = ring;
	memcpy(b->keys->ix_seal, pt + 25 + nn + 16, 32);
	for (size_t i = 0; i < nk; i++, off += ENTRY_LEN) {
		if (pt[off + 1] || pt[off + 2] || pt[off + 3]) {
			r = err_set(-EBADMSG, "nodes/%s: a malformed key entry", fname);
			goto out;
		}
		b->keys->e[i].kind = pt[off];
		b->keys->e[i].version = get_be32(pt + off + 4);
		b->keys->e[i].dsid = get_be64(pt + off + 8);
		memcpy(b->keys->e[i].key, pt + off + 16, 32);
	}
	*ret = b;
	b = NULL;
	r = 0;
out:
	sodium_memzero(sk, sizeof(sk));
	if (pt)
		sodium_free(pt);
	node_bundle_free(b);
	free(note);
	return r;
}

int node_bundle_read(int nodes_fd, const char *name, const struct note_verifier *primary,
		     const uint8_t *store_id, const uint8_t seed[static 32],
		     struct node_bundle **ret)
{
	char fname[NODE_NAME_MAX + 16];
	uint8_t *file = NULL;
	size_t len = 0;
	int r;

	bundle_file_name(fname, name);
	r = read_at(nodes_fd, fname, NODE_BUNDLE_MAX, &file, &len);
	if (r == -ENOENT)
		return err_set(-ENOENT, "nodes/%s: none: this node is not enrolled (or was "
			       "removed); a steward enrols it with `enclavectl node add %s PUBKEY`",
			       fname, name);
	if (r < 0)
		return err_set(-EBADMSG, "nodes/%s: %s", fname, strerror(-r));
	r = node_bundle_parse(file, len, name, primary, store_id, seed, ret);
	free(file);
	return r;
}
