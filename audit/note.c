/* note: C2SP signed notes, tlog checkpoints, the checkpoints file and tlog proofs. See note.h.
 * Behaviour follows the Go reference (golang.org/x/mod/sumdb/note) where the spec leaves room:
 * the text ends at the last blank line, repeated signatures by one key are dropped after the
 * first, at most 100 signatures. Stricter than Go in one place, as the spec says: the text itself
 * holds no blank line. */
#include "audit/note.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"

/* "— " : U+2014 EM DASH and a space, the start of every signature line. */
static const char sig_prefix[] = "\xe2\x80\x94 ";
#define SIG_PREFIX_LEN 4

/* ---- Text helpers ------------------------------------------------------------------------- */

/* Decode one UTF-8 sequence at s (n bytes left): its code point in *cp and its length, or 0 when
 * it is not well formed (RFC 3629: no overlong forms, surrogates or values above U+10FFFF). */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
	uint32_t c;
	size_t len;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		c = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		c = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		c = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) ||
	    (len == 4 && (c < 0x10000 || c > 0x10ffff)))
		return 0;
	*cp = c;
	return len;
}

/* Unicode White_Space (what Go's unicode.IsSpace reports). */
static bool is_space(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
	       c == 0x205f || c == 0x3000;
}

/* Valid UTF-8 with no ASCII control character except '\n' (and no DEL): the note alphabet. */
static bool note_chars_valid(const char *s, size_t n, bool allow_newline)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t i = 0;

	while (i < n) {
		uint32_t c;
		size_t l = utf8_next(p + i, n - i, &c);

		if (l == 0)
			return false;
		if ((c < 0x20 && !(allow_newline && c == '\n')) || c == 0x7f)
			return false;
		i += l;
	}
	return true;
}

/* A key name of n bytes (not NUL-terminated). */
static bool name_valid_n(const char *name, size_t n)
{
	const uint8_t *p = (const uint8_t *)name;
	size_t i = 0;

	if (n == 0 || n > NOTE_NAME_MAX)
		return false;
	while (i < n) {
		uint32_t c;
		size_t l = utf8_next(p + i, n - i, &c);

		if (l == 0 || c < 0x20 || c == 0x7f || c == '+' || is_space(c))
			return false;
		i += l;
	}
	return true;
}

bool note_name_valid(const char *name)
{
	return name && name_valid_n(name, strlen(name));
}

/* Standard base64 (with padding) of n bytes into a malloc'd string. */
static char *b64_encode(const uint8_t *in, size_t n)
{
	size_t len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *out = malloc(len);

	if (!out)
		return NULL;
	sodium_bin2base64(out, len, in, n, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

/* Decode canonical standard base64 (padding required, no whitespace, unused bits zero: the
 * re-encoding must give the same text) into out (room for max bytes). Returns the length or -1. */
static ssize_t b64_decode(const char *s, size_t n, uint8_t *out, size_t max)
{
	size_t got = 0;

	if (n == 0 || base64_decode_canonical(s, n, NULL, out, max, &got) < 0)
		return -1;
	return (ssize_t)got;
}

/* ---- Keys --------------------------------------------------------------------------------- */

uint32_t note_key_id(const char *name, const uint8_t pk[static NOTE_PK_LEN])
{
	crypto_hash_sha256_state st;
	uint8_t h[crypto_hash_sha256_BYTES];
	static const uint8_t sep[2] = { '\n', NOTE_ALG_ED25519 };

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const uint8_t *)name, strlen(name));
	crypto_hash_sha256_update(&st, sep, sizeof(sep));
	crypto_hash_sha256_update(&st, pk, NOTE_PK_LEN);
	crypto_hash_sha256_final(&st, h);
	return get_be32(h);
}

int note_verifier_format(const char *name, const uint8_t pk[static NOTE_PK_LEN], char **ret_text)
{
	uint8_t raw[1 + NOTE_PK_LEN];
	_cleanup_free_ char *b64 = NULL;
	char *out;
	size_t len;

	if (!note_name_valid(name))
		return err_set(-EINVAL, "invalid key name (empty, too long, or holding a space or '+')");
	raw[0] = NOTE_ALG_ED25519;
	memcpy(raw + 1, pk, NOTE_PK_LEN);
	b64 = b64_encode(raw, sizeof(raw));
	if (!b64)
		return -ENOMEM;
	len = strlen(name) + 1 + 8 + 1 + strlen(b64) + 1;
	out = malloc(len);
	if (!out)
		return -ENOMEM;
	snprintf(out, len, "%s+%08" PRIx32 "+%s", name, note_key_id(name, pk), b64);
	*ret_text = out;
	return 0;
}

int note_verifier_parse(const char *text, size_t len, struct note_verifier *ret)
{
	struct note_verifier v;
	const char *plus1, *plus2;
	uint8_t raw[1 + NOTE_PK_LEN + 8];
	size_t name_len;
	uint32_t id = 0;
	ssize_t got;

	plus1 = memchr(text, '+', len);
	if (!plus1)
		return err_set(-EBADMSG, "verifier key: not name+id+key");
	name_len = (size_t)(plus1 - text);
	if (!name_valid_n(text, name_len))
		return err_set(-EBADMSG, "verifier key: invalid key name");
	plus2 = memchr(plus1 + 1, '+', len - name_len - 1);
	if (!plus2 || plus2 - plus1 - 1 != 8)
		return err_set(-EBADMSG, "verifier key: the key id must be 8 hex digits");
	for (int i = 1; i <= 8; i++) {
		char c = plus1[i];

		if (c >= '0' && c <= '9')
			id = id << 4 | (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			id = id << 4 | (uint32_t)(c - 'a' + 10);
		else
			return err_set(-EBADMSG, "verifier key: the key id must be 8 lowercase hex digits");
	}
	got = b64_decode(plus2 + 1, len - (size_t)(plus2 + 1 - text), raw, sizeof(raw));
	if (got < 0)
		return err_set(-EBADMSG, "verifier key: the key is not canonical base64");
	if (got != 1 + NOTE_PK_LEN || raw[0] != NOTE_ALG_ED25519)
		return err_set(-EBADMSG, "verifier key: not an Ed25519 key (algorithm 1, 32 bytes)");
	memcpy(v.name, text, name_len);
	v.name[name_len] = '\0';
	memcpy(v.pk, raw + 1, NOTE_PK_LEN);
	v.id = note_key_id(v.name, v.pk);
	if (v.id != id)
		return err_set(-EBADMSG, "verifier key: key id %08" PRIx32 " does not match the name "
			       "and key (%08" PRIx32 ")", id, v.id);
	*ret = v;
	return 0;
}

/* ---- Notes -------------------------------------------------------------------------------- */

/* A note text: non-empty, ends in '\n', no blank line, note characters only. */
static bool text_valid(const char *text, size_t len)
{
	if (len == 0 || text[len - 1] != '\n' || text[0] == '\n')
		return false;
	for (size_t i = 0; i + 1 < len; i++)
		if (text[i] == '\n' && text[i + 1] == '\n')
			return false;
	return note_chars_valid(text, len, true);
}

int note_sign(const char *text, size_t len, const char *name, const uint8_t sk[static NOTE_SK_LEN],
	      char **ret_note, size_t *ret_len)
{
	uint8_t sig[4 + NOTE_SIG_LEN];
	_cleanup_free_ char *b64 = NULL;
	size_t name_len, total, off;
	char *out;

	if (!note_name_valid(name))
		return err_set(-EINVAL, "invalid key name (empty, too long, or holding a space or '+')");
	if (!text_valid(text, len))
		return err_set(-EINVAL, "note text must be non-empty UTF-8 lines without control "
			       "characters or blank lines, ending in a newline");
	/* sk is libsodium's seed || pk: the public half gives the key id. The secret is read in
	 * place, never copied. */
	put_be32(sig, note_key_id(name, sk + 32));
	crypto_sign_detached(sig + 4, NULL, (const uint8_t *)text, len, sk);
	b64 = b64_encode(sig, sizeof(sig));
	if (!b64)
		return -ENOMEM;
	name_len = strlen(name);
	total = len + 1 + SIG_PREFIX_LEN + name_len + 1 + strlen(b64) + 1;
	if (total > NOTE_MAX)
		return err_set(-E2BIG, "signed note of %zu bytes exceeds %u", total, NOTE_MAX);
	out = malloc(total + 1);
	if (!out)
		return -ENOMEM;
	memcpy(out, text, len);
	off = len;
	out[off++] = '\n';
	memcpy(out + off, sig_prefix, SIG_PREFIX_LEN);
	off += SIG_PREFIX_LEN;
	memcpy(out + off, name, name_len);
	off += name_len;
	out[off++] = ' ';
	memcpy(out + off, b64, strlen(b64));
	off += strlen(b64);
	out[off++] = '\n';
	out[off] = '\0';
	*ret_note = out;
	*ret_len = off;
	return 0;
}

int note_open(const char *note, size_t len, const struct note_verifier *v, size_t *ret_text_len,
	      unsigned *ret_other_sigs)
{
	const char *sigs, *end = note + len;
	size_t text_len, v_name_len = strlen(v->name);
	unsigned nsig = 0, other = 0;
	bool verified = false, seen = false;
	char others[128] = "";
	size_t others_len = 0;

	if (len > NOTE_MAX)
		return err_set(-EBADMSG, "note of %zu bytes is longer than %u", len, NOTE_MAX);
	if (!note_chars_valid(note, len, true))
		return err_set(-EBADMSG, "note is not UTF-8 text without control characters");
	/* The text ends at the last blank line. */
	text_len = 0;
	for (size_t i = len; i >= 2; i--) {
		if (note[i - 2] == '\n' && note[i - 1] == '\n') {
			text_len = i - 1;
			break;
		}
	}
	if (text_len == 0)
		return err_set(-EBADMSG, "note has no blank line before its signatures");
	if (!text_valid(note, text_len))
		return err_set(-EBADMSG, "note text is empty or holds a blank line");
	sigs = note + text_len + 1;
	if (sigs == end || end[-1] != '\n')
		return err_set(-EBADMSG, "note has no signature lines, or its last line has no newline");

	while (sigs < end) {
		const char *nl = memchr(sigs, '\n', (size_t)(end - sigs));
		const char *name, *sp, *b64;
		uint8_t raw[4 + NOTE_SIG_LEN + 64];
		size_t name_len;
		ssize_t got;
		uint32_t id;

		if (++nsig > NOTE_SIGS_MAX)
			return err_set(-EBADMSG, "note has more than %d signatures", NOTE_SIGS_MAX);
		if ((size_t)(nl - sigs) < SIG_PREFIX_LEN || memcmp(sigs, sig_prefix, SIG_PREFIX_LEN) != 0)
			return err_set(-EBADMSG, "note signature line %u does not start with \"\u2014 \"", nsig);
		name = sigs + SIG_PREFIX_LEN;
		sp = memchr(name, ' ', (size_t)(nl - name));
		if (!sp)
			return err_set(-EBADMSG, "note signature line %u has no signature", nsig);
		name_len = (size_t)(sp - name);
		b64 = sp + 1;
		if (!name_valid_n(name, name_len))
			return err_set(-EBADMSG, "note signature line %u: invalid key name", nsig);
		got = b64_decode(b64, (size_t)(nl - b64), raw, sizeof(raw));
		if (got < 5)
			return err_set(-EBADMSG, "note signature line %u: bad base64 or too short", nsig);
		id = get_be32(raw);
		sigs = nl + 1;
		if (name_len != v_name_len || memcmp(name, v->name, name_len) != 0 || id != v->id) {
			other++;
			if (others_len + name_len + 12 < sizeof(others)) {
				others_len += (size_t)snprintf(others + others_len, sizeof(others) - others_len,
							       "%s%.*s+%08" PRIx32, others_len ? ", " : "",
							       (int)name_len, name, id);
			}
			continue;
		}
		/* Repeated signatures by our key: the first one counts (as in the reference). */
		if (seen)
			continue;
		seen = true;
		if (got != 4 + NOTE_SIG_LEN ||
		    crypto_sign_verify_detached(raw + 4, (const uint8_t *)note, text_len, v->pk) != 0)
			return err_set(-EKEYREJECTED, "signature by %s+%08" PRIx32 " does not verify",
				       v->name, v->id);
		verified = true;
	}
	if (!verified)
		return err_set(-ENOKEY, "note is not signed by %s+%08" PRIx32 "%s%s", v->name, v->id,
			       other ? "; signed by " : "", others);
	*ret_text_len = text_len;
	if (ret_other_sigs)
		*ret_other_sigs = other;
	return 0;
}

/* ---- Checkpoints -------------------------------------------------------------------------- */

int checkpoint_format(const struct checkpoint *c, char **ret_text, size_t *ret_len)
{
	char t[TIME_TEXT_MAX], root[sodium_base64_ENCODED_LEN(MERKLE_HASH_LEN,
							      sodium_base64_VARIANT_ORIGINAL)];
	size_t olen = strnlen(c->origin, sizeof(c->origin)), cap;
	char *out;
	int n;

	if (olen == 0 || olen > CHECKPOINT_ORIGIN_MAX || !note_chars_valid(c->origin, olen, false))
		return err_set(-EINVAL, "checkpoint origin must be 1 to %d bytes of text",
			       CHECKPOINT_ORIGIN_MAX);
	if (c->time_ns <= 0)
		return err_set(-EINVAL, "checkpoint has no signing time");
	time_format_ns(c->time_ns, t);
	sodium_bin2base64(root, sizeof(root), c->root, MERKLE_HASH_LEN, sodium_base64_VARIANT_ORIGINAL);
	cap = olen + 24 + sizeof(root) + 6 + TIME_TEXT_MAX + 8;
	out = malloc(cap);
	if (!out)
		return -ENOMEM;
	n = snprintf(out, cap, "%s\n%" PRIu64 "\n%s\ntime %s\n", c->origin, c->size, root, t);
	if (n < 0 || (size_t)n >= cap) {
		free(out);
		return -EINVAL;
	}
	*ret_text = out;
	*ret_len = (size_t)n;
	return 0;
}

/* A decimal without leading zeros (but "0") that fits in uint64. */
static bool parse_decimal(const char *s, size_t n, uint64_t *ret)
{
	uint64_t v = 0;

	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return false;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*ret = v;
	return true;
}

int checkpoint_parse(const char *text, size_t len, struct checkpoint *ret)
{
	struct checkpoint c = { 0 };
	const char *p = text, *end = text + len;
	uint8_t root[MERKLE_HASH_LEN + 8];
	bool have_time = false;
	unsigned line = 0;

	if (len > NOTE_MAX || !text_valid(text, len))
		return err_set(-EBADMSG, "checkpoint is not note text (non-empty lines ending in a "
			       "newline, at most %u bytes)", NOTE_MAX);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)(nl - p);

		line++;
		if (line == 1) {
			if (n > CHECKPOINT_ORIGIN_MAX)
				return err_set(-EBADMSG, "checkpoint origin longer than %d bytes",
					       CHECKPOINT_ORIGIN_MAX);
			memcpy(c.origin, p, n);
			c.origin[n] = '\0';
		} else if (line == 2) {
			if (!parse_decimal(p, n, &c.size))
				return err_set(-EBADMSG, "checkpoint tree size is not a decimal number "
					       "without leading zeros");
		} else if (line == 3) {
			if (b64_decode(p, n, root, sizeof(root)) != MERKLE_HASH_LEN)
				return err_set(-EBADMSG, "checkpoint root is not base64 of 32 bytes");
			memcpy(c.root, root, MERKLE_HASH_LEN);
		} else if (n >= 5 && memcmp(p, "time ", 5) == 0) {
			if (have_time)
				return err_set(-EBADMSG, "checkpoint has two time lines");
			if (audit_time_parse_ns(p + 5, n - 5, &c.time_ns) < 0 || c.time_ns == 0)
				return err_set(-EBADMSG, "checkpoint time is not RFC 3339 UTC with nine "
					       "fraction digits");
			have_time = true;
		}
		/* Other extension lines: allowed and ignored. */
		p = nl + 1;
	}
	if (line < 3)
		return err_set(-EBADMSG, "checkpoint needs origin, size and root lines");
	*ret = c;
	return 0;
}

int checkpoint_sign(const struct checkpoint *c, const char *name,
		    const uint8_t sk[static NOTE_SK_LEN], char **ret_note, size_t *ret_len)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r;

	r = checkpoint_format(c, &text, &len);
	if (r < 0)
		return r;
	return note_sign(text, len, name, sk, ret_note, ret_len);
}

int checkpoint_open(const char *note, size_t len, const struct note_verifier *v,
		    struct checkpoint *ret)
{
	struct checkpoint c;
	size_t text_len;
	int r;

	r = note_open(note, len, v, &text_len, NULL);
	if (r < 0)
		return r;
	r = checkpoint_parse(note, text_len, &c);
	if (r < 0)
		return r;
	/* The origin names the log (C2SP tlog-checkpoint); the key's name is the log's name. A
	 * key may sign other logs' checkpoints (a witness cosigns them): its signature on one of
	 * those says nothing about the log this key names. */
	if (strcmp(c.origin, v->name) != 0)
		return err_set(-EBADMSG, "the checkpoint's origin \"%s\" is not the key's name "
			       "\"%s\": it is a checkpoint of another log", c.origin, v->name);
	*ret = c;
	return 0;
}

/* ---- The checkpoints file ----------------------------------------------------------------- */

int checkpoints_foreach(const char *path, checkpoints_fn fn, void *ctx, uint64_t *ret_torn_bytes)
{
	/* A note is body lines, a blank line, signature lines, and the separating blank line.
	 * state: 0 before a note, 1 in its body, 2 after the blank (signatures). */
	struct audit_reader rd;
	struct buf note;
	uint64_t index = 0, note_off = 0;
	int state = 0, r, fd;

	buf_init(&note, NOTE_MAX + 1);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	r = audit_reader_init(&rd, fd, path, UINT64_MAX);
	if (r < 0)
		goto out_close;
	for (;;) {
		const char *line;
		size_t n;

		r = audit_reader_next(&rd);
		if (r < 0)
			goto out_free;
		if (r == 0)
			break;
		line = (const char *)rd.line.data;
		n = rd.line.len;
		if (state == 0)
			note_off = rd.line_off;
		if (n == 0) {
			if (state == 0) {
				r = err_set(-EBADMSG, "%s: checkpoint %" PRIu64 " (offset %" PRIu64
					    "): blank line where a note begins", path, index, rd.line_off);
				goto out_free;
			}
			if (state == 1) {
				state = 2;
				r = buf_append(&note, "\n", 1);
			} else {
				/* End of the note: hand it over without the separator. */
				r = fn(ctx, (const char *)note.data, note.len, index);
				if (r != 0)
					goto out_free;
				index++;
				buf_reset(&note);
				state = 0;
				continue;
			}
		} else {
			if (state == 2 && (n < SIG_PREFIX_LEN || memcmp(line, sig_prefix, SIG_PREFIX_LEN))) {
				r = err_set(-EBADMSG, "%s: checkpoint %" PRIu64 " (offset %" PRIu64
					    "): a line that is not a signature after the blank line",
					    path, index, rd.line_off);
				goto out_free;
			}
			if (state == 0)
				state = 1;
			r = buf_append(&note, line, n);
			if (r == 0)
				r = buf_append(&note, "\n", 1);
		}
		if (r == -E2BIG || (r == 0 && note.len > NOTE_MAX)) {
			r = err_set(-EBADMSG, "%s: checkpoint %" PRIu64 " (offset %" PRIu64
				    "): longer than %u bytes", path, index, note_off, NOTE_MAX);
			goto out_free;
		}
		if (r < 0)
			goto out_free;
	}
	/* What is left (an incomplete note, or a piece of a line) is torn. */
	if (state != 0)
		rd.line_off = note_off;
	if (ret_torn_bytes)
		*ret_torn_bytes = rd.off - rd.line_off;
	r = 0;
out_free:
	audit_reader_free(&rd);
out_close:
	buf_free(&note);
	close(fd);
	return r;
}

/* ---- tlog-proof --------------------------------------------------------------------------- */

int tlog_proof_format(uint64_t index, const uint8_t proof[][MERKLE_HASH_LEN], size_t n,
		      const char *note, size_t note_len, char **ret_text, size_t *ret_len)
{
	struct buf b;
	char line[64];
	int len, r = 0;

	if (n > MERKLE_PROOF_MAX || note_len == 0)
		return err_set(-EINVAL, "proof of %zu hashes or an empty checkpoint", n);
	buf_init(&b, TLOG_PROOF_MAX + 1);
	len = snprintf(line, sizeof(line), TLOG_PROOF_HEADER "\nindex %" PRIu64 "\n", index);
	r = buf_append(&b, line, (size_t)len);
	for (size_t i = 0; r == 0 && i < n; i++) {
		sodium_bin2base64(line, sizeof(line), proof[i], MERKLE_HASH_LEN,
				  sodium_base64_VARIANT_ORIGINAL);
		r = buf_append(&b, line, strlen(line));
		if (r == 0)
			r = buf_append(&b, "\n", 1);
	}
	if (r == 0)
		r = buf_append(&b, "\n", 1);
	if (r == 0)
		r = buf_append(&b, note, note_len);
	if (r == 0 && b.len > TLOG_PROOF_MAX)
		r = -E2BIG;
	if (r == 0)
		r = buf_append(&b, "", 1);  /* NUL */
	if (r < 0) {
		buf_free(&b);
		return r == -E2BIG ? err_set(r, "proof longer than %u bytes", TLOG_PROOF_MAX) : r;
	}
	*ret_text = (char *)b.data;
	*ret_len = b.len - 1;
	return 0;
}

int tlog_proof_parse(const char *text, size_t len, struct tlog_proof *ret)
{
	struct tlog_proof *t;
	const char *p = text, *end = text + len, *nl;
	size_t hl = strlen(TLOG_PROOF_HEADER);
	int r = -EBADMSG;

	if (len > TLOG_PROOF_MAX)
		return err_set(-EBADMSG, "proof longer than %u bytes", TLOG_PROOF_MAX);
	/* struct tlog_proof is 2 KiB: built on the heap, copied out on success. */
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	if (len < hl + 1 || memcmp(p, TLOG_PROOF_HEADER "\n", hl + 1) != 0) {
		err_set(r, "proof does not start with \"%s\"", TLOG_PROOF_HEADER);
		goto out;
	}
	p += hl + 1;
	nl = memchr(p, '\n', (size_t)(end - p));
	if (nl && nl - p >= 6 && memcmp(p, "extra ", 6) == 0) {
		uint8_t tmp[TLOG_PROOF_MAX];

		t->extra = p + 6;
		t->extra_len = (size_t)(nl - p - 6);
		if (b64_decode(t->extra, t->extra_len, tmp, sizeof(tmp)) < 0) {
			err_set(r, "proof extra line is not base64");
			goto out;
		}
		p = nl + 1;
		nl = memchr(p, '\n', (size_t)(end - p));
	}
	if (!nl || nl - p < 6 || memcmp(p, "index ", 6) != 0 ||
	    !parse_decimal(p + 6, (size_t)(nl - p - 6), &t->index)) {
		err_set(r, "proof has no \"index N\" line (decimal, no leading zeros)");
		goto out;
	}
	p = nl + 1;
	for (;;) {
		uint8_t h[MERKLE_HASH_LEN + 8];

		nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl) {
			err_set(r, "proof has no blank line before its checkpoint");
			goto out;
		}
		if (nl == p)
			break;
		if (t->n >= MERKLE_PROOF_MAX) {
			err_set(r, "proof has more than %d hashes", MERKLE_PROOF_MAX);
			goto out;
		}
		if (b64_decode(p, (size_t)(nl - p), h, sizeof(h)) != MERKLE_HASH_LEN) {
			err_set(r, "proof hash %zu is not base64 of 32 bytes", t->n + 1);
			goto out;
		}
		memcpy(t->proof[t->n++], h, MERKLE_HASH_LEN);
		p = nl + 1;
	}
	t->note = nl + 1;
	t->note_len = (size_t)(end - t->note);
	if (t->note_len == 0) {
		err_set(r, "proof has no checkpoint");
		goto out;
	}
	*ret = *t;
	r = 0;
out:
	free(t);
	return r;
}

int tlog_proof_verify(const char *text, size_t len, const struct note_verifier *v,
		      const uint8_t leaf[static MERKLE_HASH_LEN], struct checkpoint *ret_cp,
		      uint64_t *ret_index)
{
	struct tlog_proof *t;
	struct checkpoint cp;
	int r;

	t = malloc(sizeof(*t));
	if (!t)
		return -ENOMEM;
	r = tlog_proof_parse(text, len, t);
	if (r < 0)
		goto out;
	r = checkpoint_open(t->note, t->note_len, v, &cp);
	if (r < 0)
		goto out;
	r = merkle_verify_inclusion(t->index, cp.size, leaf, (const uint8_t(*)[MERKLE_HASH_LEN])t->proof,
				    t->n, cp.root);
	if (r < 0) {
		err_set(r, "record %" PRIu64 " is not in the tree of size %" PRIu64
			" by this proof", t->index, cp.size);
		goto out;
	}
	if (ret_cp)
		*ret_cp = cp;
	if (ret_index)
		*ret_index = t->index;
out:
	free(t);
	return r;
}
