/* test_verify: signed notes, checkpoints and tlog proofs (audit/note.h), the offline verifier
 * (audit/verify.h) on synthetic logs this test writes and tampers with, and the enclavectl
 * commands built on them (audit verify, check-proof, consistency, report), run as a binary.
 *
 * Known answer: the signed-note example of the Go reference (golang.org/x/mod/sumdb/note), its
 * published key pair and signature typed in below, reproduced byte for byte. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <sodium.h>

#include "audit/audit.h"
#include "audit/audit_internal.h" /* AUDIT_JSON_FLAGS: lines in the log's canonical form */
#include "audit/merkle.h"
#include "audit/note.h"
#include "audit/verify.h"
#include "common/common.h"
#include "common/timefmt.h"
#include "tests/testutil.h"

#ifndef ENCLAVECTL_PATH
#error "ENCLAVECTL_PATH must name the enclavectl binary under test"
#endif

/* ---- The Go sumdb/note example -------------------------------------------------------------- */

static const char go_vkey[] = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
/* The seed of PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz:
 * base64(0x01 || seed). */
static const char go_skey_b64[] = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
static const char go_text[] = "If you think cryptography is the answer to your problem,\n"
			      "then you don't know what your problem is.\n";
static const char go_note[] =
	"If you think cryptography is the answer to your problem,\n"
	"then you don't know what your problem is.\n"
	"\n"
	"\xe2\x80\x94 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

/* A key pair in sodium memory from a seed. */
struct key {
	uint8_t *sk;                 /* 64 bytes, sodium_malloc'd */
	uint8_t pk[32];
	struct note_verifier v;
	char name[64];
};

static void key_make(struct key *k, const char *name, const uint8_t seed[32])
{
	k->sk = sodium_malloc(64);
	assert_non_null(k->sk);
	crypto_sign_seed_keypair(k->pk, k->sk, seed);
	snprintf(k->name, sizeof(k->name), "%s", name);
	snprintf(k->v.name, sizeof(k->v.name), "%s", name);
	memcpy(k->v.pk, k->pk, 32);
	k->v.id = note_key_id(name, k->pk);
}

static void key_free(struct key *k)
{
	sodium_free(k->sk);
}

static void go_key(struct key *k)
{
	uint8_t raw[33];
	size_t n = 0;

	assert_int_equal(sodium_base642bin(raw, sizeof(raw), go_skey_b64, strlen(go_skey_b64), NULL,
					   &n, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
	assert_int_equal(n, 33);
	assert_int_equal(raw[0], 1);
	key_make(k, "PeterNeumann", raw + 1);
	sodium_memzero(raw, sizeof(raw));
}

static void test_note_known_answer(void **state)
{
	struct note_verifier v;
	struct key k;
	char *text = NULL, *note = NULL;
	size_t len = 0, tl = 0;
	unsigned other = 9;

	(void)state;
	assert_int_equal(note_verifier_parse(go_vkey, strlen(go_vkey), &v), 0);
	assert_string_equal(v.name, "PeterNeumann");
	assert_int_equal(v.id, 0xc74f20a3);
	go_key(&k);
	assert_memory_equal(k.pk, v.pk, 32);
	assert_int_equal(note_key_id("PeterNeumann", k.pk), 0xc74f20a3);
	assert_int_equal(note_verifier_format("PeterNeumann", k.pk, &text), 0);
	assert_string_equal(text, go_vkey);
	free(text);
	/* Ed25519 is deterministic: the published note, byte for byte. */
	assert_int_equal(note_sign(go_text, strlen(go_text), "PeterNeumann", k.sk, &note, &len), 0);
	assert_int_equal(len, strlen(go_note));
	assert_memory_equal(note, go_note, len);
	free(note);
	assert_int_equal(note_open(go_note, strlen(go_note), &v, &tl, &other), 0);
	assert_int_equal(tl, strlen(go_text));
	assert_int_equal(other, 0);
	key_free(&k);
}

static void test_note_rejections(void **state)
{
	struct note_verifier v, v2;
	char buf[NOTE_MAX + 256], *note = NULL;
	size_t tl = 77, len = strlen(go_note), nlen;
	unsigned other = 0;
	uint8_t seed[32] = { 7 };
	struct key other_key, same_name;

	(void)state;
	assert_int_equal(note_verifier_parse(go_vkey, strlen(go_vkey), &v), 0);

	/* A forged text: the signature by our key does not verify. */
	memcpy(buf, go_note, len);
	buf[3] ^= 0x20;
	assert_int_equal(note_open(buf, len, &v, &tl, NULL), -EKEYREJECTED);
	assert_int_equal(tl, 77);
	/* A flipped signature byte (inside the base64, still canonical). */
	memcpy(buf, go_note, len);
	buf[len - 10] = buf[len - 10] == 'A' ? 'B' : 'A';
	assert_int_equal(note_open(buf, len, &v, &tl, NULL), -EKEYREJECTED);

	/* Another key: same name, other key (other id): no signature by it. */
	key_make(&same_name, "PeterNeumann", seed);
	assert_int_equal(note_open(go_note, len, &same_name.v, &tl, NULL), -ENOKEY);
	/* An unknown key's note alone: -ENOKEY; with ours too: fine, counted. */
	seed[0] = 8;
	key_make(&other_key, "someone.else", seed);
	assert_int_equal(note_sign(go_text, strlen(go_text), "someone.else", other_key.sk, &note,
				   &nlen), 0);
	assert_int_equal(note_open(note, nlen, &v, &tl, NULL), -ENOKEY);
	memcpy(buf, go_note, len);
	memcpy(buf + len, note + strlen(go_text) + 1, nlen - strlen(go_text) - 1);
	assert_int_equal(note_open(buf, len + nlen - strlen(go_text) - 1, &v, &tl, &other), 0);
	assert_int_equal(other, 1);
	free(note);

	/* Truncated: cut inside the signature line, or the newline dropped. */
	assert_int_equal(note_open(go_note, len - 20, &v, &tl, NULL), -EBADMSG);
	assert_int_equal(note_open(go_note, len - 1, &v, &tl, NULL), -EBADMSG);
	assert_int_equal(note_open(go_note, strlen(go_text), &v, &tl, NULL), -EBADMSG);
	/* Extra blank lines, before the signatures or at the start. */
	snprintf(buf, sizeof(buf), "%s\n%s", go_text, go_note + strlen(go_text));
	assert_int_equal(note_open(buf, strlen(buf), &v, &tl, NULL), -EBADMSG);
	snprintf(buf, sizeof(buf), "\n%s", go_note);
	assert_int_equal(note_open(buf, strlen(buf), &v, &tl, NULL), -EBADMSG);
	snprintf(buf, sizeof(buf), "%s\n", go_note);
	assert_int_equal(note_open(buf, strlen(buf), &v, &tl, NULL), -EBADMSG);
	/* Bad base64 in the signature, and a control character in the text. */
	memcpy(buf, go_note, len + 1);
	buf[len - 5] = '*';
	assert_int_equal(note_open(buf, len, &v, &tl, NULL), -EBADMSG);
	memcpy(buf, go_note, len + 1);
	buf[5] = '\t';
	assert_int_equal(note_open(buf, len, &v, &tl, NULL), -EBADMSG);
	/* A signature line without the em dash. */
	memcpy(buf, go_note, len + 1);
	buf[strlen(go_text) + 1] = '-';
	assert_int_equal(note_open(buf, len, &v, &tl, NULL), -EBADMSG);
	/* Oversize. */
	memset(buf, 'a', NOTE_MAX);
	for (size_t i = 80; i < NOTE_MAX; i += 80)
		buf[i] = '\n';
	memcpy(buf + NOTE_MAX - 1, go_note + strlen(go_text) - 1, len - strlen(go_text) + 1);
	assert_int_equal(note_open(buf, strlen(buf), &v, &tl, NULL), -EBADMSG);

	/* Names with '+' or a space; keys that are not strict. */
	assert_int_equal(note_sign(go_text, strlen(go_text), "Peter+Neumann", other_key.sk, &note,
				   &nlen), -EINVAL);
	assert_int_equal(note_sign(go_text, strlen(go_text), "Peter Neumann", other_key.sk, &note,
				   &nlen), -EINVAL);
	assert_int_equal(note_sign("no newline", 10, "x", other_key.sk, &note, &nlen), -EINVAL);
	assert_false(note_name_valid(""));
	assert_int_equal(note_verifier_format("a+b", other_key.pk, &note), -EINVAL);
	assert_int_equal(note_verifier_parse("Peter+Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
					     66, &v2), -EBADMSG);
	assert_int_equal(note_verifier_parse("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
					     66, &v2), -EBADMSG);
	assert_int_equal(note_verifier_parse("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
					     66, &v2), -EBADMSG);
	assert_int_equal(note_verifier_parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
					     65, &v2), -EBADMSG);
	assert_int_equal(note_verifier_parse(go_vkey, strlen(go_vkey) - 1, &v2), -EBADMSG);
	key_free(&other_key);
	key_free(&same_name);
}

static void test_checkpoint_format_parse(void **state)
{
	struct checkpoint c = { .origin = "enclave.example/log", .size = 12345, .time_ns = 1795251600123456789LL }, p;
	char *text = NULL;
	size_t len;

	(void)state;
	memset(c.root, 0xab, sizeof(c.root));
	assert_int_equal(checkpoint_format(&c, &text, &len), 0);
	assert_string_equal(text, "enclave.example/log\n12345\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n"
			    "time 2026-11-21T09:00:00.123456789Z\n");
	assert_int_equal(checkpoint_parse(text, len, &p), 0);
	assert_memory_equal(&p, &c, sizeof(c));
	free(text);
	/* Unknown extension lines are fine; no time line gives 0. */
	{
		static const char ok[] = "o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nfoo bar\n";

		assert_int_equal(checkpoint_parse(ok, strlen(ok), &p), 0);
		assert_int_equal(p.size, 0);
		assert_int_equal(p.time_ns, 0);
	}
	/* Rejections. */
/* One literal, so that the array below has no concatenation for clang to suspect. */
#define TWO_TIMES "o\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n" \
	"time 2026-11-21T09:00:00.000000000Z\ntime 2026-11-21T09:00:00.000000000Z\n"
	static const char *const bad[] = {
		"o\n05\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",   /* leading zero */
		"o\n-1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",   /* sign */
		"o\n18446744073709551616\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", /* 2^64 */
		"o\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuA==\n",   /* 31 bytes */
		"o\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=\n",   /* not canonical */
		"o\n5\n",                                                  /* no root */
		"\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",    /* empty origin */
		"o\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\ntime 2026-11-21T09:00:00Z\n",
		TWO_TIMES,                                                 /* two times */
		"o\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\nx\n", /* blank line */
		"o\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",      /* no final newline */
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(checkpoint_parse(bad[i], strlen(bad[i]), &p), -EBADMSG);
	c.time_ns = 0;
	assert_int_equal(checkpoint_format(&c, &text, &len), -EINVAL);
	c.time_ns = 1;
	c.origin[0] = '\0';
	assert_int_equal(checkpoint_format(&c, &text, &len), -EINVAL);
}

/* ---- Synthetic logs ------------------------------------------------------------------------- */

#define NREC 10

/* A log: its lines (canonical, with the prev chain) and a test signer. */
struct slog {
	char *line[NREC + 2];        /* owned, without '\n' */
	struct merkle_mem *m;        /* leaves of the original lines */
	struct key key, evil;
	char *dir;
};

static char *make_line(uint64_t seq, const uint8_t prev[32], const char *dataset, const char *decision)
{
	char hex[65], t[TIME_TEXT_MAX];
	json_t *o;
	char *s;

	sodium_bin2hex(hex, sizeof(hex), prev, 32);
	time_format_ns(1795251600000000000LL + (int64_t)seq * 1000000, t);
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:i}", "event", "open",
		      "dataset", dataset, "decision", decision, "reason",
		      strcmp(decision, "allow") == 0 ? "allow" : "no_grant", "prev", hex,
		      "seq", (json_int_t)seq, "time", t, "user", "alice", "uid", 5001);
	assert_non_null(o);
	s = json_dumps(o, AUDIT_JSON_FLAGS);
	json_decref(o);
	assert_non_null(s);
	return s;
}

static void slog_init(struct slog *l)
{
	uint8_t prev[32] = { 0 }, seed[32];

	memset(l, 0, sizeof(*l));
	l->dir = tu_mkdtemp("verify");
	assert_int_equal(merkle_mem_new(NREC, &l->m), 0);
	for (uint64_t i = 0; i < NREC; i++) {
		l->line[i] = make_line(i, prev, "ukb-ecg", i % 3 ? "allow" : "deny");
		merkle_leaf_hash(l->line[i], strlen(l->line[i]), prev);
		assert_int_equal(merkle_mem_append(l->m, prev), 0);
	}
	memset(seed, 0x11, sizeof(seed));
	key_make(&l->key, "enclave.test/log", seed);
	memset(seed, 0x22, sizeof(seed));
	key_make(&l->evil, "enclave.test/log", seed);
}

static void slog_free(struct slog *l)
{
	for (size_t i = 0; i < ARRAY_SIZE(l->line); i++)
		free(l->line[i]);
	merkle_mem_free(l->m);
	key_free(&l->key);
	key_free(&l->evil);
	tu_rm_rf(l->dir);
	free(l->dir);
}

/* Write audit.log from lines (indices into l->line, -1 ends). */
static void write_log(struct slog *l, const int *idx)
{
	char *path = tu_fmt("%s/audit.log", l->dir);
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	for (; *idx >= 0; idx++)
		fprintf(f, "%s\n", l->line[*idx]);
	assert_int_equal(fclose(f), 0);
	free(path);
}

static const int all[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1 };

/* A signed checkpoint of the first size original leaves (or of root if given). */
static char *sign_cp(struct slog *l, const struct key *k, uint64_t size, const uint8_t *root,
		     size_t *ret_len)
{
	struct checkpoint c = { .size = size, .time_ns = 1795251700000000000LL + (int64_t)size };
	char *note;

	snprintf(c.origin, sizeof(c.origin), "enclave.test/log");
	if (root)
		memcpy(c.root, root, 32);
	else
		assert_int_equal(merkle_mem_root(l->m, size, c.root), 0);
	assert_int_equal(checkpoint_sign(&c, k->name, k->sk, &note, ret_len), 0);
	return note;
}

/* A signed checkpoint of the first size original leaves whose origin is not the key's name. */
static char *sign_cp_origin(struct slog *l, const struct key *k, uint64_t size, const char *origin,
			    size_t *ret_len)
{
	struct checkpoint c = { .size = size, .time_ns = 1795251700000000000LL + (int64_t)size };
	char *note;

	snprintf(c.origin, sizeof(c.origin), "%s", origin);
	assert_int_equal(merkle_mem_root(l->m, size, c.root), 0);
	assert_int_equal(checkpoint_sign(&c, k->name, k->sk, &note, ret_len), 0);
	return note;
}

/* Write the checkpoints file: notes each followed by "\n". */
static void write_cps(struct slog *l, char **notes, size_t n)
{
	char *path = tu_fmt("%s/checkpoints", l->dir);
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s\n", notes[i]);
	assert_int_equal(fclose(f), 0);
	free(path);
}

static struct verify_result *run_verify(struct slog *l, const char *trusted)
{
	struct verify_options o = { .log_dir = l->dir, .key = &l->key.v, .trusted = trusted,
				    .trusted_len = trusted ? strlen(trusted) : 0 };
	struct verify_result *r = NULL;

	assert_int_equal(verify_log(&o, &r), 0);
	for (size_t i = 0; i < r->n; i++)
		fprintf(stderr, "  finding: %s: %s\n", verify_kind_name(r->findings[i].kind),
			r->findings[i].text);
	return r;
}

/* Is there a finding of kind k naming seq (VERIFY_NONE: any) within [seq, seq_last]? */
static bool has(const struct verify_result *r, enum verify_kind k, uint64_t seq)
{
	for (size_t i = 0; i < r->n; i++) {
		const struct verify_finding *f = &r->findings[i];

		if (f->kind != k)
			continue;
		if (seq == VERIFY_NONE || (f->seq != VERIFY_NONE && f->seq <= seq && seq <= f->seq_last))
			return true;
	}
	return false;
}

static void standard_cps(struct slog *l)
{
	size_t n;
	char *notes[2] = { sign_cp(l, &l->key, 5, NULL, &n), sign_cp(l, &l->key, NREC, NULL, &n) };

	write_cps(l, notes, 2);
	free(notes[0]);
	free(notes[1]);
}

static void test_verify_clean(void **state)
{
	struct slog l;
	struct verify_result *r;
	size_t n;
	char *trusted;

	(void)state;
	slog_init(&l);
	write_log(&l, all);
	standard_cps(&l);
	trusted = sign_cp(&l, &l.key, 3, NULL, &n);
	r = run_verify(&l, trusted);
	assert_int_equal(r->n, 0);
	assert_true(r->have_verified);
	assert_int_equal(r->verified.size, NREC);
	assert_int_equal(r->verified_index, 1);
	assert_true(r->have_trusted);
	assert_true(r->consistency_n > 0);
	/* The proof the verifier kept verifies on its own. */
	assert_int_equal(merkle_verify_consistency(3, NREC, r->trusted.root, r->verified.root,
						   (const uint8_t(*)[32])r->consistency,
						   r->consistency_n), 0);
	verify_result_free(r);
	free(trusted);
	slog_free(&l);
}

static void test_verify_flip_byte(void **state)
{
	struct slog l;
	struct verify_result *r;
	char *p;

	(void)state;
	slog_init(&l);
	/* Record 3's dataset name changes by one byte ("ukb-ecg" -> "ukb-ecG"). */
	p = strstr(l.line[3], "ukb-ecg");
	p[6] = 'G';
	write_log(&l, all);
	standard_cps(&l);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_MODIFIED, 3));
	assert_false(has(r, VERIFY_MODIFIED, 4));
	verify_result_free(r);

	/* The last record changed: no successor's prev to notice; the checkpoint does. */
	p = strstr(l.line[3], "ukb-ecG");
	p[6] = 'g';
	p = strstr(l.line[9], "ukb-ecg");
	p[6] = 'G';
	write_log(&l, all);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_MODIFIED, 9));
	assert_false(has(r, VERIFY_MODIFIED, 4));
	verify_result_free(r);
	slog_free(&l);
}

static void test_verify_delete_swap_insert(void **state)
{
	static const int deleted[] = { 0, 1, 2, 3, 5, 6, 7, 8, 9, -1 };
	static const int swapped[] = { 0, 1, 2, 3, 4, 5, 7, 6, 8, 9, -1 };
	static const int inserted[] = { 0, 1, 2, 10, 3, 4, 5, 6, 7, 8, 9, -1 };
	struct slog l;
	struct verify_result *r;
	uint8_t leaf2[32];

	(void)state;
	slog_init(&l);
	standard_cps(&l);

	write_log(&l, deleted);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_REMOVED, 4));
	verify_result_free(r);

	write_log(&l, swapped);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_REORDERED, 6));
	assert_true(has(r, VERIFY_REORDERED, 7));
	assert_false(has(r, VERIFY_REMOVED, VERIFY_NONE));
	verify_result_free(r);

	/* A forged record after record 2, chained to it, reusing seq 3. */
	merkle_leaf_hash(l.line[2], strlen(l.line[2]), leaf2);
	l.line[10] = make_line(3, leaf2, "ukb-ecg", "allow");
	write_log(&l, inserted);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_INSERTED, 3));
	for (size_t i = 0; i < r->n; i++)
		if (r->findings[i].kind == VERIFY_INSERTED)
			assert_int_equal(r->findings[i].line, 4);
	verify_result_free(r);
	slog_free(&l);
}

static void test_verify_truncate_resign(void **state)
{
	static const int first7[] = { 0, 1, 2, 3, 4, 5, 6, -1 };
	struct slog l;
	struct verify_result *r;
	size_t n;
	char *notes[3];

	(void)state;
	slog_init(&l);
	write_log(&l, first7);
	notes[0] = sign_cp(&l, &l.key, 5, NULL, &n);
	notes[1] = sign_cp(&l, &l.key, NREC, NULL, &n);
	/* The tail cut, and a checkpoint of the shorter log signed by another key of the same
	 * name. */
	notes[2] = sign_cp(&l, &l.evil, 7, NULL, &n);
	write_cps(&l, notes, 3);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_TRUNCATED, 7));
	assert_true(has(r, VERIFY_TRUNCATED, 9));
	assert_true(has(r, VERIFY_UNKNOWN_KEY, VERIFY_NONE));
	verify_result_free(r);

	/* A forged signature with our key's name and id. */
	free(notes[2]);
	notes[2] = sign_cp(&l, &l.key, 7, NULL, &n);
	notes[2][n - 10] = notes[2][n - 10] == 'A' ? 'B' : 'A';
	write_cps(&l, notes, 3);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_BAD_SIGNATURE, VERIFY_NONE));
	verify_result_free(r);
	for (int i = 0; i < 3; i++)
		free(notes[i]);
	slog_free(&l);
}

static void test_verify_rollback_fork(void **state)
{
	static const int first5[] = { 0, 1, 2, 3, 4, -1 };
	struct slog l;
	struct verify_result *r;
	size_t n;
	char *notes[2], *trusted;
	uint8_t other_root[32];
	bool found = false;

	(void)state;
	slog_init(&l);
	/* The auditor saved the checkpoint of size 10; the log was rolled back to 5. */
	trusted = sign_cp(&l, &l.key, NREC, NULL, &n);
	write_log(&l, first5);
	notes[0] = sign_cp(&l, &l.key, 5, NULL, &n);
	write_cps(&l, notes, 1);
	r = run_verify(&l, trusted);
	assert_true(has(r, VERIFY_ROLLBACK, VERIFY_NONE));
	verify_result_free(r);

	/* A fork: two signed checkpoints of size 5 with different roots. */
	memset(other_root, 0x42, sizeof(other_root));
	notes[1] = sign_cp(&l, &l.key, 5, other_root, &n);
	write_cps(&l, notes, 2);
	r = run_verify(&l, NULL);
	for (size_t i = 0; i < r->n; i++)
		if (r->findings[i].kind == VERIFY_FORK && r->findings[i].cp == 0 &&
		    r->findings[i].cp2 == 1)
			found = true;
	assert_true(found);
	verify_result_free(r);

	/* A trusted checkpoint of another history, same size as the log's newest. */
	free(trusted);
	trusted = sign_cp(&l, &l.key, 5, other_root, &n);
	write_cps(&l, notes, 1);
	r = run_verify(&l, trusted);
	assert_true(has(r, VERIFY_FORK, VERIFY_NONE));
	verify_result_free(r);
	free(trusted);
	free(notes[0]);
	free(notes[1]);
	slog_free(&l);
}

/* Counts the notes of a checkpoints file, checking their indices. */
static int cb(void *ctx, const char *nt, size_t len, uint64_t index)
{
	int *count = ctx;

	(void)nt, (void)len;
	if (index != (uint64_t)*count)
		return -EINVAL;
	(*count)++;
	return 0;
}

static void test_checkpoints_file_and_proof(void **state)
{
	struct slog l;
	uint8_t proof[MERKLE_PROOF_MAX][32], leaf[32];
	struct tlog_proof *tp = malloc(sizeof(*tp));
	struct checkpoint cp;
	char *note, *text, *path;
	size_t n, plen, hn;
	uint64_t torn = 99, idx;
	int count = 0;

	(void)state;
	slog_init(&l);
	standard_cps(&l);
	/* A torn third note: counted in torn bytes, not passed on. */
	path = tu_fmt("%s/checkpoints", l.dir);
	{
		FILE *f = fopen(path, "ae");

		fputs("enclave.test/log\n12\n", f);
		fclose(f);
	}
	assert_int_equal(checkpoints_foreach(path, cb, &count, &torn), 0);
	assert_int_equal(count, 2);
	assert_int_equal(torn, strlen("enclave.test/log\n12\n"));
	free(path);

	/* A tlog proof round trip, and its rejections. */
	note = sign_cp(&l, &l.key, NREC, NULL, &n);
	assert_int_equal(merkle_inclusion_proof(4, NREC, merkle_mem_perfect, l.m, proof, &hn), 0);
	assert_int_equal(tlog_proof_format(4, (const uint8_t(*)[32])proof, hn, note, n, &text, &plen), 0);
	assert_int_equal(strncmp(text, "c2sp.org/tlog-proof@v1\nindex 4\n", 31), 0);
	assert_int_equal(tlog_proof_parse(text, plen, tp), 0);
	assert_int_equal(tp->index, 4);
	assert_int_equal(tp->n, hn);
	assert_int_equal(tp->note_len, n);
	merkle_leaf_hash(l.line[4], strlen(l.line[4]), leaf);
	assert_int_equal(tlog_proof_verify(text, plen, &l.key.v, leaf, &cp, &idx), 0);
	assert_int_equal(idx, 4);
	assert_int_equal(cp.size, NREC);
	/* Another record's leaf; another key. */
	merkle_leaf_hash(l.line[5], strlen(l.line[5]), leaf);
	assert_int_equal(tlog_proof_verify(text, plen, &l.key.v, leaf, &cp, &idx), -EBADMSG);
	merkle_leaf_hash(l.line[4], strlen(l.line[4]), leaf);
	assert_int_equal(tlog_proof_verify(text, plen, &l.evil.v, leaf, &cp, &idx), -ENOKEY);
	/* Malformed: header, index with a leading zero, a short hash, no blank line. */
	text[0] = 'C';
	assert_int_equal(tlog_proof_parse(text, plen, tp), -EBADMSG);
	text[0] = 'c';
	{
		static const char *const bad[] = {
			"c2sp.org/tlog-proof@v1\nindex 04\n\nx\n",
			"c2sp.org/tlog-proof@v1\nindex 4\nAAAA\n\nx\n",
			"c2sp.org/tlog-proof@v1\nindex 4\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
			"c2sp.org/tlog-proof@v1\nextra !!\nindex 4\n\nx\n",
			"c2sp.org/tlog-proof@v1\n\nx\n",
			"c2sp.org/tlog-proof@v1\nindex 4\n\n",
		};
		for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
			assert_int_equal(tlog_proof_parse(bad[i], strlen(bad[i]), tp), -EBADMSG);
		static const char extra[] = "c2sp.org/tlog-proof@v1\nextra YWJj\nindex 0\n\nx\n";
		assert_int_equal(tlog_proof_parse(extra, strlen(extra), tp), 0);
		assert_int_equal(tp->extra_len, 4);
	}
	free(text);
	free(note);
	free(tp);
	slog_free(&l);
}


static int count_rec(void *ctx, const json_t *rec, const char *line, size_t len)
{
	(void)rec, (void)line, (void)len;
	(*(int *)ctx)++;
	return 0;
}

/* struct audit_filter.decision: only records whose "decision" is the one asked for. */
static void test_filter_decision(void **state)
{
	struct audit_filter f = { .decision = "deny" };
	struct slog l;
	int n = 0;

	(void)state;
	slog_init(&l);
	write_log(&l, all);
	assert_int_equal(audit_foreach(l.dir, &f, count_rec, &n), 0);
	assert_int_equal(n, 4);  /* seq 0, 3, 6, 9 */
	n = 0;
	f.decision = "allow";
	assert_int_equal(audit_foreach(l.dir, &f, count_rec, &n), 0);
	assert_int_equal(n, 6);
	n = 0;
	f.decision = "maybe";
	assert_int_equal(audit_foreach(l.dir, &f, count_rec, &n), 0);
	assert_int_equal(n, 0);
	slog_free(&l);
}

/* ---- The commands, through the real binary ---------------------------------------------- */

/* Run enclavectl with args (NULL-terminated); stdout into *ret_out (malloc'd). Exit status. */
static int run(char **ret_out, ...)
{
	char *argv[32], outp[] = "/tmp/enclave-test-verify-out.XXXXXX";
	va_list ap;
	int fd, status, n = 0;
	size_t len;
	pid_t pid;

	argv[n++] = (char *)"enclavectl";
	va_start(ap, ret_out);
	while (n < 31 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	fd = mkstemp(outp);
	assert_true(fd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fd, 1);
		execv(ENCLAVECTL_PATH, argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	close(fd);
	*ret_out = (char *)tu_read_file(outp, &len);
	*ret_out = realloc(*ret_out, len + 1);
	(*ret_out)[len] = '\0';
	unlink(outp);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_cli_commands(void **state)
{
	struct slog l;
	char *vkey, *out, *p, *note, *proofp, *recp, *oldp, *newp, *text;
	uint8_t proof[MERKLE_PROOF_MAX][32];
	size_t n, hn, plen;

	(void)state;
	slog_init(&l);
	write_log(&l, all);
	standard_cps(&l);
	assert_int_equal(note_verifier_format(l.key.name, l.key.pk, &vkey), 0);

	/* verify: clean, then a changed record. */
	assert_int_equal(run(&out, "audit", "verify", "--log", l.dir, "--key", vkey, NULL), 0);
	assert_non_null(strstr(out, "verified: tree size 10"));
	free(out);
	assert_int_equal(run(&out, "audit", "verify", "--log", l.dir, "--key", vkey, "--json", NULL), 0);
	assert_non_null(strstr(out, "\"ok\": true"));
	free(out);
	p = strstr(l.line[3], "ukb-ecg");
	p[6] = 'G';
	write_log(&l, all);
	assert_int_equal(run(&out, "audit", "verify", "--log", l.dir, "--key", vkey, NULL), 1);
	assert_non_null(strstr(out, "modified: record 3"));
	free(out);
	p[6] = 'g';
	write_log(&l, all);
	assert_int_equal(run(&out, "audit", "verify", "--log", l.dir, NULL), 2);
	free(out);

	/* check-proof: record 4 against a proof of it; record 5 against the same proof fails. */
	note = sign_cp(&l, &l.key, NREC, NULL, &n);
	assert_int_equal(merkle_inclusion_proof(4, NREC, merkle_mem_perfect, l.m, proof, &hn), 0);
	assert_int_equal(tlog_proof_format(4, (const uint8_t(*)[32])proof, hn, note, n, &text, &plen), 0);
	proofp = tu_fmt("%s/p.tlog-proof", l.dir);
	tu_write_file(proofp, text, plen);
	recp = tu_fmt("%s/rec", l.dir);
	tu_write_file(recp, l.line[4], strlen(l.line[4]));
	assert_int_equal(run(&out, "audit", "check-proof", "--key", vkey, "--record", recp, proofp, NULL), 0);
	assert_non_null(strstr(out, "ok: record 4"));
	free(out);
	assert_int_equal(run(&out, "audit", "check-proof", "--key", vkey, "--line", l.line[5], proofp, NULL), 1);
	free(out);

	/* consistency: 5 -> 10 holds; 10 -> 5 does not. */
	oldp = tu_fmt("%s/old", l.dir);
	newp = tu_fmt("%s/new", l.dir);
	free(note);
	note = sign_cp(&l, &l.key, 5, NULL, &n);
	tu_write_file(oldp, note, n);
	free(note);
	note = sign_cp(&l, &l.key, NREC, NULL, &n);
	tu_write_file(newp, note, n);
	assert_int_equal(run(&out, "audit", "consistency", "--key", vkey, "--log", l.dir, oldp, newp, NULL), 0);
	assert_non_null(strstr(out, "consistent: size 5 extends to size 10"));
	free(out);
	assert_int_equal(run(&out, "audit", "consistency", "--key", vkey, "--log", l.dir, newp, oldp, NULL), 1);
	free(out);

	/* report, offline: 3 denials (seq 0, 3, 6, 9 are deny: 4), 6 opens allowed. */
	assert_int_equal(run(&out, "audit", "report", "--log", l.dir, "--json", NULL), 0);
	assert_non_null(strstr(out, "\"ukb-ecg\""));
	assert_non_null(strstr(out, "\"no_grant\": 4"));
	assert_non_null(strstr(out, "\"opens\": 6"));
	free(out);

	free(note);
	free(text);
	free(proofp);
	free(recp);
	free(oldp);
	free(newp);
	free(vkey);
	slog_free(&l);
}


/* #14.14: an empty checkpoints file, or one cut inside its first note, signs nothing: a
 * non-empty log is TRUNCATED, as when the file is missing. So a log of another store (other
 * records, another key) with an empty checkpoints file does not pass for ours. */
static void test_verify_no_checkpoint(void **state)
{
	struct slog l;
	struct verify_result *r;
	char *path, *note;
	size_t n;

	(void)state;
	slog_init(&l);
	write_log(&l, all);
	path = tu_fmt("%s/checkpoints", l.dir);
	tu_write_file(path, "", 0);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_TRUNCATED, 0));
	assert_true(has(r, VERIFY_TRUNCATED, 9));
	assert_int_equal(r->uncovered, NREC);
	verify_result_free(r);

	/* Cut inside the first note: its body and half its signature line. */
	note = sign_cp(&l, &l.key, NREC, NULL, &n);
	tu_write_file(path, note, n - 20);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_TRUNCATED, 0));
	assert_true(r->cp_torn_bytes > 0);
	verify_result_free(r);
	/* The whole note but not its separating blank line: still torn, still nothing signed. */
	tu_write_file(path, note, n);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_TRUNCATED, 0));
	verify_result_free(r);
	free(note);

	/* Another store's log: records of its own, our key, an empty checkpoints file. */
	free(l.line[0]);
	{
		uint8_t zero[32] = { 0 };

		l.line[0] = make_line(0, zero, "elsewhere", "allow");
	}
	write_log(&l, (const int[]){ 0, -1 });
	tu_write_file(path, "", 0);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_TRUNCATED, 0));
	verify_result_free(r);
	/* The empty log with no checkpoint is clean: nothing to sign. */
	write_log(&l, (const int[]){ -1 });
	r = run_verify(&l, NULL);
	assert_int_equal(r->n, 0);
	verify_result_free(r);
	free(path);
	slog_free(&l);
}

/* #14.15: a checkpoint whose origin is not the key's name is another log's, even with a good
 * signature by the key (a witness cosigns other logs): refused by check-proof and by verify. */
static void test_verify_origin(void **state)
{
	struct slog l;
	struct verify_result *r;
	struct checkpoint cp;
	uint8_t proof[MERKLE_PROOF_MAX][32], leaf[32];
	char *note, *text, *vkey, *out, *proofp, *recp;
	size_t n, hn, plen;
	uint64_t idx;

	(void)state;
	slog_init(&l);
	write_log(&l, all);
	note = sign_cp_origin(&l, &l.key, NREC, "other.example/log", &n);
	assert_int_equal(checkpoint_open(note, n, &l.key.v, &cp), -EBADMSG);
	assert_non_null(strstr(err_detail(), "another log"));
	write_cps(&l, &note, 1);
	r = run_verify(&l, NULL);
	assert_true(r->n > 0);
	assert_false(r->have_verified);
	verify_result_free(r);

	assert_int_equal(merkle_inclusion_proof(4, NREC, merkle_mem_perfect, l.m, proof, &hn), 0);
	assert_int_equal(tlog_proof_format(4, (const uint8_t(*)[32])proof, hn, note, n, &text, &plen), 0);
	merkle_leaf_hash(l.line[4], strlen(l.line[4]), leaf);
	assert_int_equal(tlog_proof_verify(text, plen, &l.key.v, leaf, &cp, &idx), -EBADMSG);
	assert_int_equal(note_verifier_format(l.key.name, l.key.pk, &vkey), 0);
	proofp = tu_fmt("%s/p.tlog-proof", l.dir);
	tu_write_file(proofp, text, plen);
	recp = tu_fmt("%s/rec", l.dir);
	tu_write_file(recp, l.line[4], strlen(l.line[4]));
	assert_int_equal(run(&out, "audit", "check-proof", "--key", vkey, "--record", recp, proofp, NULL), 1);
	assert_null(strstr(out, "ok:"));
	free(out);
	free(vkey);
	free(proofp);
	free(recp);
	free(text);
	free(note);
	slog_free(&l);
}

/* #14.17: the last two records swapped are REORDERED (not INSERTED); a forged record appended
 * after a checkpointed log is named itself (not the record before it); messages do not repeat
 * their kind ("fork: fork:"); records no checkpoint covers are reported. */
static void test_verify_messages(void **state)
{
	static const int swap_last[] = { 0, 1, 2, 3, 4, 5, 6, 7, 9, 8, -1 };
	static const int appended[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, -1 };
	struct slog l;
	struct verify_result *r;
	uint8_t junk[32], other_root[32];
	char *notes[2], *vkey, *out;
	size_t n;

	(void)state;
	slog_init(&l);
	standard_cps(&l);
	write_log(&l, swap_last);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_REORDERED, 8));
	assert_true(has(r, VERIFY_REORDERED, 9));
	assert_false(has(r, VERIFY_INSERTED, VERIFY_NONE));
	verify_result_free(r);

	/* Seq 10 appended with a prev that is not record 9's hash. */
	memset(junk, 0x5a, sizeof(junk));
	l.line[10] = make_line(10, junk, "ukb-ecg", "allow");
	write_log(&l, appended);
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_MODIFIED, 10));
	assert_false(has(r, VERIFY_MODIFIED, 9));
	assert_int_equal(r->uncovered, 1);
	assert_int_equal(r->uncovered_first, 10);
	verify_result_free(r);
	/* No checkpoint either way: the last record is named all the same. */
	{
		char *cps = tu_fmt("%s/checkpoints", l.dir);

		assert_int_equal(unlink(cps), 0);
		free(cps);
	}
	r = run_verify(&l, NULL);
	assert_true(has(r, VERIFY_MODIFIED, 10));
	assert_false(has(r, VERIFY_MODIFIED, 9));
	verify_result_free(r);

	/* A fork and records past the last matching checkpoint, through the command. */
	write_log(&l, all);
	memset(other_root, 0x42, sizeof(other_root));
	notes[0] = sign_cp(&l, &l.key, 5, NULL, &n);
	notes[1] = sign_cp(&l, &l.key, 5, other_root, &n);
	write_cps(&l, notes, 2);
	assert_int_equal(note_verifier_format(l.key.name, l.key.pk, &vkey), 0);
	assert_int_equal(run(&out, "audit", "verify", "--log", l.dir, "--key", vkey, NULL), 1);
	assert_non_null(strstr(out, "fork: checkpoints 0 and 1"));
	assert_null(strstr(out, "fork: fork"));
	assert_non_null(strstr(out, "uncovered: records 5 to 9 (5)"));
	free(out);
	assert_int_equal(run(&out, "audit", "verify", "--log", l.dir, "--key", vkey, "--json", NULL), 1);
	assert_non_null(strstr(out, "\"uncovered\": 5"));
	assert_non_null(strstr(out, "\"uncovered_first\": 5"));
	free(out);
	free(notes[0]);
	free(notes[1]);
	free(vkey);
	slog_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_note_known_answer),
		cmocka_unit_test(test_note_rejections),
		cmocka_unit_test(test_checkpoint_format_parse),
		cmocka_unit_test(test_verify_clean),
		cmocka_unit_test(test_verify_flip_byte),
		cmocka_unit_test(test_verify_delete_swap_insert),
		cmocka_unit_test(test_verify_truncate_resign),
		cmocka_unit_test(test_verify_rollback_fork),
		cmocka_unit_test(test_checkpoints_file_and_proof),
		cmocka_unit_test(test_filter_decision),
		cmocka_unit_test(test_cli_commands),
		cmocka_unit_test(test_verify_no_checkpoint),
		cmocka_unit_test(test_verify_origin),
		cmocka_unit_test(test_verify_messages),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
