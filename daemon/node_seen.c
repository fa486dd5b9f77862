/* node_seen: what each node says of itself, for `enclavectl node show` (docs/DEPLOYMENT.md
 * section 7, "What a node says of itself"; docs/FORMAT.md 3.10).
 *
 * A node writes <store>/nodes/NAME.seen every NODE_SEEN_MS and whenever it goes stale or fresh:
 * a C2SP signed note, signed with the node's own Ed25519 key (the one its log is signed with and
 * the primary recorded at its enrolment):
 *
 *   enclave-node-seen/1 <store id, 32 hex digits>
 *   node NAME
 *   time NS          when it wrote this (unix ns)
 *   seq N            the index sequence number it has caught up to
 *   ring G           the key ring generation of the keys it holds
 *   token T          the lease token of the last signal it accepted (0: none yet)
 *   signal NS        that signal's time (0: none)
 *   fresh NS         fresh as of (the time of the last signal it reached; 0: never)
 *   catchups N       catch-ups done since it started
 *   stale 0|1        refusing opens now
 *
 * Anyone who can write the shared directory can write the file; the primary believes it only if
 * it verifies under the key enrolled for that name, names this store and this node, and is in
 * canonical form. A node can say what it likes about itself, so this is for operators (is a node
 * alive, does it keep up), never for a security decision: the node's log, checked by `audit
 * verify`, is the record. No sync: a status matters only while it is recent.
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

static void seen_file_name(char out[static NODE_NAME_MAX + 16], const char *name)
{
	snprintf(out, NODE_NAME_MAX + 16, "%s" NODE_SEEN_SUFFIX, name);
}

int node_seen_text(const uint8_t store_id[static 16], const char *name, const struct node_seen *s,
		   char *out, size_t cap)
{
	char hex[33];
	int n;

	sodium_bin2hex(hex, sizeof(hex), store_id, 16);
	n = snprintf(out, cap, "enclave-node-seen/1 %s\nnode %s\ntime %" PRId64 "\nseq %" PRIu64
		     "\nring %" PRIu64 "\ntoken %" PRIu64 "\nsignal %" PRId64 "\nfresh %" PRId64
		     "\ncatchups %" PRIu64 "\nstale %d\n", hex, name, s->time_ns, s->seq, s->ring,
		     s->token, s->signal_ns, s->fresh_ns, s->catch_ups, s->stale ? 1 : 0);
	return n < 0 || (size_t)n >= cap ? -E2BIG : n;
}

int node_seen_write(int nodes_fd, const uint8_t store_id[static 16], const char *name,
		    const uint8_t seed[static 32], const struct node_seen *s)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	uint8_t *sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
	char text[NODE_SEEN_MAX], fname[NODE_NAME_MAX + 16];
	char *note = NULL;
	size_t nl = 0;
	int n, r;

	if (!sk)
		return -ENOMEM;
	n = node_seen_text(store_id, name, s, text, sizeof(text));
	if (n < 0) {
		sodium_free(sk);
		return n;
	}
	crypto_sign_seed_keypair(pk, sk, seed);
	r = note_sign(text, (size_t)n, name, sk, &note, &nl);
	sodium_free(sk);   /* wipes */
	if (r < 0)
		return r;
	seen_file_name(fname, name);
	r = replace_file_at(nodes_fd, fname, note, nl, 0644, false);
	free(note);
	return r;
}

int node_seen_parse(const char *note, size_t len, const char *name,
		    const uint8_t store_id[static 16], const uint8_t sign_pk[static 32],
		    struct node_seen *ret)
{
	char fname[NODE_NAME_MAX + 16], buf[NOTE_MAX + 1], want[NODE_SEEN_MAX];
	char hex[33], sname[NODE_NAME_MAX + 1];
	long long t = 0, sig = 0, fresh = 0;
	unsigned long long seq = 0, ring = 0, token = 0, cu = 0;
	struct note_verifier v = { 0 };
	struct node_seen s = { 0 };
	uint8_t sid[16];
	size_t tl = 0;
	int r, stale = 0, used = 0;

	if (!node_name_valid(name))
		return err_set(-EINVAL, "\"%s\" is not a node name", name);
	seen_file_name(fname, name);
	if (len > NOTE_MAX)
		return err_set(-EBADMSG, "nodes/%s: unreadable or too long", fname);
	memcpy(buf, note, len);
	buf[len] = '\0';
	snprintf(v.name, sizeof(v.name), "%s", name);
	memcpy(v.pk, sign_pk, 32);
	v.id = note_key_id(v.name, v.pk);
	r = note_open(buf, len, &v, &tl, NULL);
	if (r < 0)
		return err_set(r == -EBADMSG ? -EBADMSG : -EKEYREJECTED, "nodes/%s is not signed "
			       "by the key node %s was enrolled with", fname, name);
	buf[tl] = '\0';
	if (sscanf(buf, "enclave-node-seen/1 %32[0-9a-f]\nnode %64s\ntime %lld\nseq %llu\nring "
		   "%llu\ntoken %llu\nsignal %lld\nfresh %lld\ncatchups %llu\nstale %d\n%n", hex,
		   sname, &t, &seq, &ring, &token, &sig, &fresh, &cu, &stale, &used) != 10 ||
	    (size_t)used != tl || sodium_hex2bin(sid, 16, hex, 32, NULL, NULL, NULL) != 0 ||
	    (stale != 0 && stale != 1) || t < 0 || sig < 0 || fresh < 0)
		return err_set(-EBADMSG, "nodes/%s: malformed", fname);
	if (strcmp(sname, name) != 0)
		return err_set(-EBADMSG, "nodes/%s speaks for node %s", fname, sname);
	if (sodium_memcmp(sid, store_id, 16) != 0)
		return err_set(-EBADMSG, "nodes/%s is for another store", fname);
	s = (struct node_seen){ .time_ns = t, .seq = seq, .ring = ring, .token = token,
				.signal_ns = sig, .fresh_ns = fresh, .catch_ups = cu,
				.stale = stale == 1 };
	if (node_seen_text(sid, name, &s, want, sizeof(want)) < 0 || strcmp(want, buf) != 0)
		return err_set(-EBADMSG, "nodes/%s: not in canonical form", fname);
	*ret = s;
	return 0;
}

int node_seen_read(int nodes_fd, const char *name, const uint8_t store_id[static 16],
		   const uint8_t sign_pk[static 32], struct node_seen *ret)
{
	char fname[NODE_NAME_MAX + 16], buf[NOTE_MAX + 1];
	ssize_t len;
	int fd;

	if (!node_name_valid(name))
		return err_set(-EINVAL, "\"%s\" is not a node name", name);
	seen_file_name(fname, name);
	fd = openat(nodes_fd, fname, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "nodes/%s: %s", fname, strerror(errno));
	len = read_full(fd, buf, sizeof(buf));
	close(fd);
	if (len < 0 || (size_t)len > NOTE_MAX)
		return err_set(-EBADMSG, "nodes/%s: unreadable or too long", fname);
	return node_seen_parse(buf, (size_t)len, name, store_id, sign_pk, ret);
}
