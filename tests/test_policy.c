/* test_policy: the decision rule, the JSON forms of grants and revocations, time parsing and
 * formatting (common/timefmt), and subjects from NSS.
 *
 * The decision rule is checked against ref_decide(), a second implementation written from the
 * comment in policy.h in a different shape (collect the matching grants, then sort them), over
 * thousands of generated grant tables. Random data comes from a seeded generator: the seed is
 * printed, and ENCLAVE_TEST_SEED=<n> replays a run.
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "policy/policy.h"

/* ---- Deterministic randomness ---------------------------------------------------------------- */

static uint64_t seed = 0x5eed2026;

/* splitmix64: small, good enough for test data, and the same on every host. */
static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform enough in [lo, hi] (inclusive; hi - lo < 2^63). */
static int64_t rnd_range(uint64_t *s, int64_t lo, int64_t hi)
{
	return lo + (int64_t)(rnd(s) % ((uint64_t)(hi - lo) + 1));
}

static bool rnd_chance(uint64_t *s, unsigned one_in)
{
	return rnd(s) % one_in == 0;
}

/* ---- Building grants and subjects ------------------------------------------------------------- */

static void set_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);

	assert_true(n < cap);
	memcpy(dst, src, n + 1);
}

static struct policy_grant grant(uint64_t id, uint32_t kind, uint32_t principal_id,
				 uint64_t dataset_id, uint32_t version, int64_t not_before,
				 int64_t expires)
{
	struct policy_grant g = {
		.id = id,
		.kind = kind,
		.principal_id = principal_id,
		.dataset_id = dataset_id,
		.version = version,
		.not_before = not_before,
		.expires = expires,
		.granted_by_uid = 1000,
		.created = 1700000000,
	};

	set_str(g.principal, sizeof(g.principal), kind == POLICY_GROUP ? "cardio-ml" : "alice");
	set_str(g.dataset, sizeof(g.dataset), "ukb-ecg");
	set_str(g.purpose, sizeof(g.purpose), "arrhythmia model training");
	set_str(g.purpose_code, sizeof(g.purpose_code), "general");
	set_str(g.granted_by, sizeof(g.granted_by), "steward");
	return g;
}

static struct policy_subject subject(uint32_t uid, size_t ngids, const uint32_t *gids)
{
	struct policy_subject s = { .uid = uid, .ngids = ngids };

	assert_true(ngids <= POLICY_GROUPS_MAX);
	set_str(s.user, sizeof(s.user), "alice");
	memcpy(s.gids, gids, ngids * sizeof(gids[0]));
	return s;
}

static void assert_decision(struct policy_decision d, enum policy_reason reason, uint64_t id)
{
	if (d.reason != reason || d.grant_id != id)
		fail_msg("decision %s/%" PRIu64 ", expected %s/%" PRIu64, policy_reason_name(d.reason),
			 d.grant_id, policy_reason_name(reason), id);
}

/* ---- The reference decision ------------------------------------------------------------------- */

#define REF_GRANTS_MAX 64

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Group membership by sorting a copy and searching it (policy.c scans). */
static bool ref_in_groups(const struct policy_subject *who, uint32_t gid)
{
	uint32_t sorted[POLICY_GROUPS_MAX];

	memcpy(sorted, who->gids, who->ngids * sizeof(sorted[0]));
	qsort(sorted, who->ngids, sizeof(sorted[0]), cmp_u32);
	return bsearch(&gid, sorted, who->ngids, sizeof(sorted[0]), cmp_u32) != NULL;
}

static bool ref_valid(const struct policy_grant *g, int64_t now)
{
	return g->revoked_at == 0 && g->not_before <= now && now < g->expires;
}

/* Why a matching, invalid grant denies: revoked first, then expired, then not yet valid. */
static enum policy_reason ref_reason(const struct policy_grant *g, int64_t now)
{
	if (g->revoked_at)
		return POLICY_DENY_REVOKED;
	return now < g->expires ? POLICY_DENY_NOT_YET_VALID : POLICY_DENY_EXPIRED;
}

static int ref_severity(enum policy_reason r)
{
	return r == POLICY_DENY_REVOKED ? 3 : r == POLICY_DENY_EXPIRED ? 2 : 1;
}

static int64_t ref_now; /* for the comparators; the test is single-threaded here */

/* Allow: latest expires first, then lowest id. */
static int cmp_allow(const void *a, const void *b)
{
	const struct policy_grant *x = *(const struct policy_grant *const *)a;
	const struct policy_grant *y = *(const struct policy_grant *const *)b;

	if (x->expires != y->expires)
		return x->expires > y->expires ? -1 : 1;
	return (x->id > y->id) - (x->id < y->id);
}

/* Deny: highest id first, then the most severe reason. */
static int cmp_deny(const void *a, const void *b)
{
	const struct policy_grant *x = *(const struct policy_grant *const *)a;
	const struct policy_grant *y = *(const struct policy_grant *const *)b;

	if (x->id != y->id)
		return x->id > y->id ? -1 : 1;
	return ref_severity(ref_reason(y, ref_now)) - ref_severity(ref_reason(x, ref_now));
}

static struct policy_decision ref_decide(const struct policy_subject *who, uint64_t dataset_id,
					 uint32_t version, int64_t now,
					 const struct policy_grant *grants, size_t n)
{
	const struct policy_grant *match[REF_GRANTS_MAX], *valid[REF_GRANTS_MAX];
	size_t nmatch = 0, nvalid = 0;

	assert_true(n <= REF_GRANTS_MAX);
	for (size_t i = 0; i < n; i++) {
		const struct policy_grant *g = &grants[i];
		bool principal = (g->kind == POLICY_USER && g->principal_id == who->uid) ||
				 (g->kind == POLICY_GROUP && ref_in_groups(who, g->principal_id));
		bool ver = version == POLICY_ALL_VERSIONS || g->version == POLICY_ALL_VERSIONS ||
			   g->version == version;

		if (g->id != 0 && g->dataset_id == dataset_id && ver && principal)
			match[nmatch++] = g;
	}
	for (size_t i = 0; i < nmatch; i++)
		if (ref_valid(match[i], now))
			valid[nvalid++] = match[i];
	if (nvalid) {
		qsort(valid, nvalid, sizeof(valid[0]), cmp_allow);
		return (struct policy_decision){ .reason = POLICY_ALLOW, .grant_id = valid[0]->id };
	}
	if (!nmatch)
		return (struct policy_decision){ .reason = POLICY_DENY_NO_GRANT };
	ref_now = now;
	qsort(match, nmatch, sizeof(match[0]), cmp_deny);
	return (struct policy_decision){ .reason = ref_reason(match[0], now),
					 .grant_id = match[0]->id };
}

/* ---- (1)(2) Generated decision tables --------------------------------------------------------- */

#define NOW 1800000000
/* uids and gids share one small number space, so that a user grant naming a number the subject
 * has as a gid (or the other way round) comes up often and must not match. */
static const uint32_t id_pool[] = { 100, 101, 102, 103, 1000, 1001 };

/* A random table of n grants around NOW: times within a few seconds of it, so that every
 * boundary (now == not_before, now == expires) is hit. */
static void gen_grants(uint64_t *s, struct policy_grant *g, size_t n)
{
	bool unique_ids = !rnd_chance(s, 4);

	for (size_t i = 0; i < n; i++) {
		int64_t nb = NOW + rnd_range(s, -4, 4);
		uint32_t kind = rnd_chance(s, 2) ? POLICY_USER : POLICY_GROUP;
		uint64_t id = unique_ids ? i + 1 + (uint64_t)rnd_range(s, 0, 2) * 100
					 : (uint64_t)rnd_range(s, 1, 6);

		if (rnd_chance(s, 40))
			kind = rnd_chance(s, 2) ? 0 : 3;       /* not a kind: never matches */
		if (rnd_chance(s, 40))
			id = 0;                                /* not a grant: never matches */
		g[i] = grant(id, kind, id_pool[rnd(s) % ARRAY_SIZE(id_pool)],
			     (uint64_t)rnd_range(s, 1, 3), (uint32_t)rnd_range(s, 0, 3), nb,
			     nb + rnd_range(s, 1, 5));
		if (rnd_chance(s, 5))
			g[i].revoked_at = NOW + rnd_range(s, -10, 10);
	}
	/* Unique ids, as a store has them: shuffle a bit so the order says nothing. */
	if (unique_ids)
		for (size_t i = n; i > 1; i--) {
			size_t j = rnd(s) % i;
			uint64_t t = g[i - 1].id;

			g[i - 1].id = g[j].id;
			g[j].id = t;
		}
}

static struct policy_subject gen_subject(uint64_t *s)
{
	uint32_t gids[8];
	size_t n = (size_t)rnd_range(s, 1, 8);

	for (size_t i = 0; i < n; i++)
		gids[i] = id_pool[rnd(s) % ARRAY_SIZE(id_pool)];
	return subject(id_pool[rnd(s) % ARRAY_SIZE(id_pool)], n, gids);
}

static void shuffle(uint64_t *s, struct policy_grant *g, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = rnd(s) % i;
		struct policy_grant t = g[i - 1];

		g[i - 1] = g[j];
		g[j] = t;
	}
}

#define TABLES 3000
#define QUERIES_PER_TABLE 6
#define SHUFFLES 4

static void test_decide_matches_reference(void **state)
{
	static struct policy_grant g[16], copy[16];
	unsigned seen[POLICY_DENY_REVOKED + 1] = { 0 };
	uint64_t s = seed;
	unsigned cases = 0;

	(void)state;
	for (unsigned t = 0; t < TABLES; t++) {
		size_t n = (size_t)rnd_range(&s, 0, ARRAY_SIZE(g));
		struct policy_subject who = gen_subject(&s);

		gen_grants(&s, g, n);
		for (unsigned q = 0; q < QUERIES_PER_TABLE; q++) {
			uint64_t ds = (uint64_t)rnd_range(&s, 1, 3);
			uint32_t ver = (uint32_t)rnd_range(&s, 0, 3);
			int64_t now = NOW + rnd_range(&s, -6, 10);
			struct policy_decision want = ref_decide(&who, ds, ver, now, g, n);
			struct policy_decision got = policy_decide(&who, ds, ver, now, g, n);

			if (got.reason != want.reason || got.grant_id != want.grant_id)
				fail_msg("seed %" PRIu64 " table %u query %u: got %s/%" PRIu64
					 ", reference %s/%" PRIu64,
					 seed, t, q, policy_reason_name(got.reason), got.grant_id,
					 policy_reason_name(want.reason), want.grant_id);
			seen[want.reason]++;
			cases++;

			/* (2) The order of the grants does not matter. */
			memcpy(copy, g, n * sizeof(g[0]));
			for (unsigned k = 0; k < SHUFFLES; k++) {
				struct policy_decision again;

				shuffle(&s, copy, n);
				again = policy_decide(&who, ds, ver, now, copy, n);
				if (again.reason != got.reason || again.grant_id != got.grant_id)
					fail_msg("seed %" PRIu64 " table %u query %u: order changed "
						 "the decision", seed, t, q);
			}
		}
	}
	/* The generator is only useful if it reaches every outcome, and often. */
	for (size_t r = 0; r < ARRAY_SIZE(seen); r++) {
		if (seen[r] < 200)
			fail_msg("only %u cases of %s", seen[r], policy_reason_name((int)r));
	}
	print_message("decide: %u generated cases agree with the reference (%u allow, %u no_grant, "
		      "%u expired, %u not_yet_valid, %u revoked)\n",
		      cases, seen[0], seen[1], seen[2], seen[3], seen[4]);
}

/* ---- (3) Boundaries to the second --------------------------------------------------------------- */

static void test_decide_window_boundaries(void **state)
{
	struct policy_grant g = grant(7, POLICY_USER, 1000, 1, 0, NOW, NOW + 3600);
	struct policy_subject who = subject(1000, 1, (uint32_t[]){ 1000 });

	(void)state;
	assert_decision(policy_decide(&who, 1, 1, NOW - 1, &g, 1), POLICY_DENY_NOT_YET_VALID, 7);
	assert_decision(policy_decide(&who, 1, 1, NOW, &g, 1), POLICY_ALLOW, 7);
	assert_decision(policy_decide(&who, 1, 1, NOW + 3599, &g, 1), POLICY_ALLOW, 7);
	assert_decision(policy_decide(&who, 1, 1, NOW + 3600, &g, 1), POLICY_DENY_EXPIRED, 7);
	assert_decision(policy_decide(&who, 1, 1, INT64_MAX, &g, 1), POLICY_DENY_EXPIRED, 7);
	assert_decision(policy_decide(&who, 1, 1, INT64_MIN, &g, 1), POLICY_DENY_NOT_YET_VALID, 7);

	/* A one-second grant is valid for exactly one second. */
	g = grant(8, POLICY_GROUP, 500, 1, 2, NOW, NOW + 1);
	who = subject(1000, 3, (uint32_t[]){ 1000, 499, 500 });
	assert_decision(policy_decide(&who, 1, 2, NOW - 1, &g, 1), POLICY_DENY_NOT_YET_VALID, 8);
	assert_decision(policy_decide(&who, 1, 2, NOW, &g, 1), POLICY_ALLOW, 8);
	assert_decision(policy_decide(&who, 1, 2, NOW + 1, &g, 1), POLICY_DENY_EXPIRED, 8);

	/* The extremes of the JSON-representable range. */
	g = grant(9, POLICY_USER, 1000, 1, 0, TIME_RFC3339_MIN, TIME_RFC3339_MAX);
	who = subject(1000, 1, (uint32_t[]){ 1000 });
	assert_int_equal(policy_grant_validate(&g), 0);
	assert_decision(policy_decide(&who, 1, 0, TIME_RFC3339_MIN, &g, 1), POLICY_ALLOW, 9);
	assert_decision(policy_decide(&who, 1, 0, TIME_RFC3339_MAX - 1, &g, 1), POLICY_ALLOW, 9);
	assert_decision(policy_decide(&who, 1, 0, TIME_RFC3339_MAX, &g, 1), POLICY_DENY_EXPIRED, 9);
}

/* ---- (4) Each reason, and the rules for choosing among grants -------------------------------- */

static void test_decide_reasons(void **state)
{
	struct policy_subject who = subject(1000, 2, (uint32_t[]){ 1000, 500 });
	struct policy_grant g[4];

	(void)state;
	/* No grants at all; NULL grants with 0 of them. */
	assert_decision(policy_decide(&who, 1, 1, NOW, NULL, 0), POLICY_DENY_NO_GRANT, 0);

	/* Allow, by a user grant and by a group grant. */
	g[0] = grant(1, POLICY_USER, 1000, 1, 1, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_ALLOW, 1);
	g[0] = grant(2, POLICY_GROUP, 500, 1, 1, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_ALLOW, 2);

	/* No grant: other dataset, other version, other user, group not held, and a user grant
	 * whose number is one of the subject's gids (kinds are separate number spaces). */
	g[0] = grant(3, POLICY_USER, 1000, 2, 1, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_NO_GRANT, 0);
	g[0] = grant(3, POLICY_USER, 1000, 1, 2, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_NO_GRANT, 0);
	g[0] = grant(3, POLICY_USER, 1001, 1, 1, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_NO_GRANT, 0);
	g[0] = grant(3, POLICY_GROUP, 501, 1, 1, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_NO_GRANT, 0);
	g[0] = grant(3, POLICY_USER, 500, 1, 1, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_NO_GRANT, 0);
	g[0] = grant(3, POLICY_GROUP, 1000, 1, 1, NOW - 10, NOW + 10);
	who.gids[0] = 999;
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_NO_GRANT, 0);
	who.gids[0] = 1000;

	/* Expired, not yet valid, revoked (inside its window, and with a revocation time still in
	 * the future: a revocation counts from the moment it exists). */
	g[0] = grant(4, POLICY_USER, 1000, 1, 1, NOW - 10, NOW);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_EXPIRED, 4);
	g[0] = grant(5, POLICY_USER, 1000, 1, 1, NOW + 1, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_NOT_YET_VALID, 5);
	g[0] = grant(6, POLICY_USER, 1000, 1, 1, NOW - 10, NOW + 10);
	g[0].revoked_at = NOW - 1;
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_REVOKED, 6);
	g[0].revoked_at = NOW + 100;
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_REVOKED, 6);
	/* Revoked and expired: revoked. */
	g[0].expires = NOW - 1;
	g[0].not_before = NOW - 5;
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_REVOKED, 6);

	/* Deny names the newest matching grant, whatever its reason. */
	g[0] = grant(10, POLICY_USER, 1000, 1, 1, NOW - 10, NOW - 5);            /* expired */
	g[1] = grant(12, POLICY_GROUP, 500, 1, 0, NOW + 5, NOW + 10);            /* not yet */
	g[2] = grant(11, POLICY_USER, 1000, 1, 1, NOW - 10, NOW + 10);           /* revoked */
	g[2].revoked_at = NOW - 1;
	g[3] = grant(99, POLICY_USER, 1000, 2, 1, NOW - 10, NOW + 10);           /* other ds */
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 4), POLICY_DENY_NOT_YET_VALID, 12);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 3), POLICY_DENY_NOT_YET_VALID, 12);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 1), POLICY_DENY_EXPIRED, 10);
	/* ... and any valid one allows, however old. */
	g[3] = grant(1, POLICY_USER, 1000, 1, 0, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 4), POLICY_ALLOW, 1);

	/* Allow reports the valid grant that expires last; ties go to the lowest id. */
	g[0] = grant(20, POLICY_USER, 1000, 1, 1, NOW - 10, NOW + 100);
	g[1] = grant(21, POLICY_GROUP, 500, 1, 0, NOW - 10, NOW + 300);
	g[2] = grant(22, POLICY_USER, 1000, 1, 0, NOW - 10, NOW + 300);
	g[3] = grant(19, POLICY_USER, 1000, 1, 1, NOW - 10, NOW + 900);
	g[3].revoked_at = 1;
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 4), POLICY_ALLOW, 21);
	g[1].expires = NOW + 200;
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 4), POLICY_ALLOW, 22);

	/* Versions: a grant of every version matches any; a question about every version ("may
	 * the dataset be seen at all") matches a grant of one version. */
	g[0] = grant(30, POLICY_USER, 1000, 1, POLICY_ALL_VERSIONS, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 4000000000u, NOW, g, 1), POLICY_ALLOW, 30);
	g[0] = grant(31, POLICY_USER, 1000, 1, 7, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, POLICY_ALL_VERSIONS, NOW, g, 1), POLICY_ALLOW, 31);
	assert_decision(policy_decide(&who, 1, 6, NOW, g, 1), POLICY_DENY_NO_GRANT, 0);

	/* Not grants: id 0 (it would report as "no grant") and unknown kinds are skipped. */
	g[0] = grant(0, POLICY_USER, 1000, 1, 1, NOW - 10, NOW + 10);
	g[1] = grant(40, 0, 1000, 1, 1, NOW - 10, NOW + 10);
	g[2] = grant(41, 3, 1000, 1, 1, NOW - 10, NOW + 10);
	assert_decision(policy_decide(&who, 1, 1, NOW, g, 3), POLICY_DENY_NO_GRANT, 0);

	/* No subject: nothing to match. */
	assert_decision(policy_decide(NULL, 1, 1, NOW, g, 3), POLICY_DENY_NO_GRANT, 0);
}

/* A subject whose ngids overstates the array is never read past (ASan would say). */
static void test_decide_ngids_clamped(void **state)
{
	struct policy_subject *who = calloc(1, sizeof(*who));
	struct policy_grant g = grant(1, POLICY_GROUP, 77, 1, 0, NOW - 1, NOW + 1);

	(void)state;
	assert_non_null(who);
	who->uid = 1000;
	who->ngids = SIZE_MAX;
	who->gids[POLICY_GROUPS_MAX - 1] = 77;
	assert_decision(policy_decide(who, 1, 1, NOW, &g, 1), POLICY_ALLOW, 1);
	who->gids[POLICY_GROUPS_MAX - 1] = 0;
	assert_decision(policy_decide(who, 1, 1, NOW, &g, 1), POLICY_DENY_NO_GRANT, 0);
	free(who);
}

static void test_reason_words(void **state)
{
	static const struct {
		enum policy_reason r;
		const char *name;
	} t[] = {
		{ POLICY_ALLOW, "allow" },
		{ POLICY_DENY_NO_GRANT, "no_grant" },
		{ POLICY_DENY_EXPIRED, "expired" },
		{ POLICY_DENY_NOT_YET_VALID, "not_yet_valid" },
		{ POLICY_DENY_REVOKED, "revoked" },
		{ POLICY_DENY_PENDING_APPROVAL, "pending_approval" },
		{ POLICY_DENY_BY_RULE, "denied_by_rule" },
		{ POLICY_DENY_PURPOSE_EXCLUDED, "purpose_excluded" },
		{ POLICY_DENY_POLICY_MISMATCH, "policy_mismatch" },
		{ POLICY_DENY_INTEGRITY, "integrity" },
		{ POLICY_DENY_NODE_STALE, "node_stale" },
		{ POLICY_DENY_NODE_REMOVED, "node_removed" },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		assert_string_equal(policy_reason_name(t[i].r), t[i].name);
		assert_true(strlen(policy_reason_text(t[i].r)) > 0);
		assert_string_not_equal(policy_reason_text(t[i].r), "unknown reason");
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(policy_reason_text(t[i].r),
						policy_reason_text(t[j].r));
	}
	assert_string_equal(policy_reason_text(POLICY_DENY_NO_GRANT), "no grant for this dataset");
	assert_string_equal(policy_reason_name((enum policy_reason)(POLICY_REASON_LAST + 1)), "unknown");
	assert_string_equal(policy_reason_name((enum policy_reason)-1), "unknown");
	assert_string_equal(policy_reason_text((enum policy_reason)42), "unknown reason");
}


/* ---- (1b) The full rule: approvals, deny rules, consent codes -------------------------------- */

/* Purposes and consent-code sets the generated tables draw from. */
static const char *const gen_purposes[] = {
	"general", "health", "ds:cancer", "ds:asthma", "ai-training,health", "methods",
	"commercial,health", "population,health", "for-profit,ds:cancer", "genetic,health",
};
static const char *const gen_duo_sets[] = {
	"", "NMDS", "HMB", "DS:cancer", "NCU,NPU", "GRU,IRB", "TS:2027-01-15", "TS:2027-02-01",
	"HMB,NMDS", "GSO", "NPOA", "POA", "NPUNCU", "MOR:2027-06-01,PUB",
};

/* Does comma list p contain term t? (The reference's own reading of a purpose.) */
static bool ref_has(const char *p, const char *t)
{
	size_t n = strlen(t);

	for (const char *q = p; (q = strstr(q, t)) != NULL; q += n)
		if ((q == p || q[-1] == ',') && (q[n] == ',' || q[n] == '\0'))
			return true;
	return false;
}

/* The consent code of `codes` (text, as in gen_duo_sets) that excludes purpose p, 0 if none:
 * written from the table in docs/POLICY.md, not from duo.c. */
static uint32_t ref_excluded(const char *codes, const char *p, int64_t expires, bool override)
{
	bool health = ref_has(p, "health") || strstr(p, "ds:") != NULL;
	bool pop = ref_has(p, "population") || ref_has(p, "ancestry");
	bool methods = ref_has(p, "methods") || ref_has(p, "ai-training");
	uint32_t best = 0;
	char buf[256], *c, *next;

	snprintf(buf, sizeof(buf), "%s", codes);
	for (c = buf; *c; c = next) {
		uint32_t code = 0;

		next = strchr(c, ',');
		if (next)
			*next++ = '\0';
		else
			next = c + strlen(c);

		if (strcmp(c, "HMB") == 0 && (!health || pop))
			code = POLICY_DUO_HMB;
		else if (strncmp(c, "DS:", 3) == 0 &&
			 (!strstr(p, "ds:") || strcmp(strstr(p, "ds:") + 3, c + 3) != 0 || pop))
			code = POLICY_DUO_DS;
		else if (strcmp(c, "POA") == 0 && !pop)
			code = POLICY_DUO_POA;
		else if (strcmp(c, "NPOA") == 0 && pop)
			code = POLICY_DUO_NPOA;
		else if (strcmp(c, "NMDS") == 0 && methods && !override)
			code = POLICY_DUO_NMDS;
		else if (strcmp(c, "GSO") == 0 && !ref_has(p, "genetic"))
			code = POLICY_DUO_GSO;
		else if (strcmp(c, "NCU") == 0 && ref_has(p, "commercial"))
			code = POLICY_DUO_NCU;
		else if (strcmp(c, "NPU") == 0 && ref_has(p, "for-profit"))
			code = POLICY_DUO_NPU;
		else if (strcmp(c, "NPUNCU") == 0 &&
			 (ref_has(p, "for-profit") || ref_has(p, "commercial")))
			code = POLICY_DUO_NPUNCU;
		else if (strcmp(c, "TS:2027-01-15") == 0 && expires > 1800000000 - 8 * 3600)
			code = POLICY_DUO_TS;
		else if (strcmp(c, "TS:2027-02-01") == 0 && expires > 1801353600)
			code = POLICY_DUO_TS;
		if (code && (!best || code < best))
			best = code;
	}
	return best;
}

/* A grant's reason at now, the reference's way; *code the excluding consent code. */
static enum policy_reason ref_state(const struct policy_grant *g, int64_t now, const char *codes,
				    uint32_t *code)
{
	*code = 0;
	if (g->revoked_at)
		return POLICY_DENY_REVOKED;
	if (now >= g->expires)
		return POLICY_DENY_EXPIRED;
	*code = ref_excluded(codes, g->purpose_code, g->expires, g->consent_override[0] != 0);
	if (*code)
		return POLICY_DENY_PURPOSE_EXCLUDED;
	if (g->approvals < g->approvals_required)
		return POLICY_DENY_PENDING_APPROVAL;
	if (now < g->not_before)
		return POLICY_DENY_NOT_YET_VALID;
	return POLICY_ALLOW;
}

static int ref_rank(enum policy_reason r)
{
	static const enum policy_reason order[] = { POLICY_DENY_NOT_YET_VALID,
						    POLICY_DENY_PENDING_APPROVAL,
						    POLICY_DENY_PURPOSE_EXCLUDED, POLICY_DENY_EXPIRED,
						    POLICY_DENY_REVOKED };

	for (int i = 0; i < (int)ARRAY_SIZE(order); i++)
		if (order[i] == r)
			return i + 1;
	return 0;
}

static struct policy_decision ref_evaluate(const struct policy_subject *who, uint64_t ds,
					   uint32_t ver, int64_t now,
					   const struct policy_grant *g, size_t n,
					   const struct policy_deny *x, size_t nx, const char *codes)
{
	struct policy_decision best = { .reason = POLICY_DENY_NO_GRANT };
	const struct policy_grant *allow = NULL, *deny = NULL;
	uint64_t rule = 0;
	uint32_t deny_code = 0;
	enum policy_reason deny_reason = POLICY_DENY_NO_GRANT;

	for (size_t i = 0; i < nx; i++) {
		bool who_ok = (x[i].kind == POLICY_USER && x[i].principal_id == who->uid) ||
			      (x[i].kind == POLICY_GROUP && ref_in_groups(who, x[i].principal_id)) ||
			      x[i].kind == POLICY_EVERYONE;

		if (x[i].id && !x[i].removed_at && who_ok &&
		    (x[i].dataset_id == 0 || x[i].dataset_id == ds) && (!rule || x[i].id < rule))
			rule = x[i].id;
	}
	for (size_t i = 0; i < n; i++) {
		bool principal = (g[i].kind == POLICY_USER && g[i].principal_id == who->uid) ||
				 (g[i].kind == POLICY_GROUP && ref_in_groups(who, g[i].principal_id));
		bool v = ver == 0 || g[i].version == 0 || g[i].version == ver;
		enum policy_reason st;
		uint32_t code;

		if (!g[i].id || g[i].dataset_id != ds || !v || !principal)
			continue;
		st = ref_state(&g[i], now, codes, &code);
		if (st == POLICY_ALLOW) {
			if (!allow || g[i].expires > allow->expires ||
			    (g[i].expires == allow->expires && g[i].id < allow->id))
				allow = &g[i];
			continue;
		}
		if (!deny || g[i].id > deny->id ||
		    (g[i].id == deny->id && (ref_rank(st) > ref_rank(deny_reason) ||
					     (st == deny_reason && code < deny_code)))) {
			deny = &g[i];
			deny_reason = st;
			deny_code = code;
		}
	}
	/* A rule decides, but only a grant that names the subject makes the name visible. */
	if (rule)
		return (struct policy_decision){ .reason = POLICY_DENY_BY_RULE, .rule_id = rule,
						 .named = allow || deny };
	if (allow)
		return (struct policy_decision){ .reason = POLICY_ALLOW, .grant_id = allow->id,
						 .named = true };
	if (deny)
		return (struct policy_decision){ .reason = deny_reason, .grant_id = deny->id,
						 .code = deny_code, .named = true };
	return best;
}

static bool decision_eq(struct policy_decision a, struct policy_decision b)
{
	return a.reason == b.reason && a.grant_id == b.grant_id && a.rule_id == b.rule_id &&
	       a.code == b.code && a.named == b.named;
}

static void test_evaluate_matches_reference(void **state)
{
	static struct policy_grant g[12], gc[12];
	static struct policy_deny x[4], xc[4];
	unsigned seen[POLICY_DENY_PURPOSE_EXCLUDED + 1] = { 0 };
	uint64_t s = seed ^ 0x5eed;
	unsigned cases = 0;

	(void)state;
	for (unsigned t = 0; t < 4000; t++) {
		size_t n = (size_t)rnd_range(&s, 0, ARRAY_SIZE(g));
		size_t nx = rnd_chance(&s, 3) ? (size_t)rnd_range(&s, 1, ARRAY_SIZE(x)) : 0;
		struct policy_subject who = gen_subject(&s);
		const char *codes = gen_duo_sets[rnd(&s) % ARRAY_SIZE(gen_duo_sets)];
		struct policy_duo duo[POLICY_DUO_MAX];
		size_t nduo;

		assert_int_equal(policy_duo_parse(codes, duo, &nduo), 0);
		gen_grants(&s, g, n);
		for (size_t i = 0; i < n; i++) {
			g[i].approvals_required = (uint32_t)rnd_range(&s, 0, 2);
			g[i].approvals = (uint32_t)rnd_range(&s, 0, 2);
			set_str(g[i].purpose_code, sizeof(g[i].purpose_code),
				gen_purposes[rnd(&s) % ARRAY_SIZE(gen_purposes)]);
			set_str(g[i].consent_override, sizeof(g[i].consent_override),
				rnd_chance(&s, 4) ? "steward override" : "");
		}
		for (size_t i = 0; i < nx; i++) {
			x[i] = (struct policy_deny){
				.id = (uint64_t)rnd_range(&s, 1, 40),
				.kind = (uint32_t)rnd_range(&s, 1, 3),
				.principal_id = id_pool[rnd(&s) % ARRAY_SIZE(id_pool)],
				.dataset_id = (uint64_t)rnd_range(&s, 0, 3),
				.removed_at = rnd_chance(&s, 3) ? NOW : 0,
			};
		}
		for (unsigned q = 0; q < 6; q++) {
			uint64_t ds = (uint64_t)rnd_range(&s, 1, 3);
			uint32_t ver = (uint32_t)rnd_range(&s, 0, 3);
			int64_t now = NOW + rnd_range(&s, -6, 10);
			struct policy_input in = { g, n, x, nx, duo, nduo };
			struct policy_decision want = ref_evaluate(&who, ds, ver, now, g, n, x, nx,
								   codes);
			struct policy_decision got = policy_evaluate(&who, ds, ver, now, &in);

			if (!decision_eq(got, want))
				fail_msg("seed %" PRIu64 " table %u query %u (codes \"%s\"): got "
					 "%s/%" PRIu64 "/%" PRIu64 "/%u, reference %s/%" PRIu64
					 "/%" PRIu64 "/%u",
					 seed, t, q, codes, policy_reason_name(got.reason),
					 got.grant_id, got.rule_id, got.code,
					 policy_reason_name(want.reason), want.grant_id, want.rule_id,
					 want.code);
			seen[want.reason]++;
			cases++;
			/* Order independence: grants, rules and codes shuffled. */
			memcpy(gc, g, n * sizeof(g[0]));
			memcpy(xc, x, nx * sizeof(x[0]));
			for (unsigned k = 0; k < 3; k++) {
				struct policy_duo dc[POLICY_DUO_MAX];
				struct policy_input in2 = { gc, n, xc, nx, dc, nduo };

				shuffle(&s, gc, n);
				for (size_t i = nx; i > 1; i--) {
					size_t j = rnd(&s) % i;
					struct policy_deny tmp = xc[i - 1];

					xc[i - 1] = xc[j];
					xc[j] = tmp;
				}
				for (size_t i = 0; i < nduo; i++)
					dc[i] = duo[nduo - 1 - i];
				if (!decision_eq(policy_evaluate(&who, ds, ver, now, &in2), got))
					fail_msg("seed %" PRIu64 " table %u: order changed the "
						 "decision", seed, t);
			}
		}
	}
	/* The table is only worth something if it reached every reason. */
	for (int r = 0; r <= POLICY_DENY_PURPOSE_EXCLUDED; r++)
		if (seen[r] < 20)
			fail_msg("reason %s came up only %u times in %u cases",
				 policy_reason_name((enum policy_reason)r), seen[r], cases);
}

/* The hand-made cases: deny wins over a valid grant, its removal restores, pending, override. */
static void test_evaluate_cases(void **state)
{
	struct policy_subject who = subject(1000, 2, (uint32_t[]){ 1000, 5001 });
	struct policy_grant g = grant(7, POLICY_GROUP, 5001, 1, 0, NOW - 10, NOW + 10);
	struct policy_deny x = { .id = 9, .kind = POLICY_USER, .principal_id = 1000,
				 .dataset_id = 1 };
	struct policy_duo duo[POLICY_DUO_MAX];
	struct policy_input in = { &g, 1, &x, 1, NULL, 0 };
	struct policy_decision d;
	size_t nduo;

	(void)state;
	d = policy_evaluate(&who, 1, 1, NOW, &in);
	assert_int_equal(d.reason, POLICY_DENY_BY_RULE);
	assert_int_equal(d.rule_id, 9);
	assert_int_equal(d.grant_id, 0);
	/* Another dataset: the rule does not speak about it. */
	g.dataset_id = 2;
	assert_int_equal(policy_evaluate(&who, 2, 1, NOW, &in).reason, POLICY_ALLOW);
	g.dataset_id = 1;
	x.removed_at = NOW - 1;
	assert_decision(policy_evaluate(&who, 1, 1, NOW, &in), POLICY_ALLOW, 7);
	x = (struct policy_deny){ .id = 3, .kind = POLICY_EVERYONE };
	assert_int_equal(policy_evaluate(&who, 1, 1, NOW, &in).reason, POLICY_DENY_BY_RULE);
	/* A deny on everyone and every dataset names nobody: a subject no grant names stays
	 * unnamed (the dataset stays invisible to it); one a grant names stays named. */
	assert_true(policy_evaluate(&who, 1, 1, NOW, &in).named);
	assert_false(policy_evaluate(&who, 3, POLICY_ALL_VERSIONS, NOW, &in).named);
	assert_int_equal(policy_evaluate(&who, 3, POLICY_ALL_VERSIONS, NOW, &in).reason,
			 POLICY_DENY_BY_RULE);
	x.kind = POLICY_GROUP;
	x.principal_id = 5002;
	assert_int_equal(policy_evaluate(&who, 1, 1, NOW, &in).reason, POLICY_ALLOW);
	x.principal_id = 5001;
	assert_int_equal(policy_evaluate(&who, 1, 1, NOW, &in).reason, POLICY_DENY_BY_RULE);
	in.ndenies = 0;

	g.approvals_required = 2;
	g.approvals = 1;
	assert_decision(policy_evaluate(&who, 1, 1, NOW, &in), POLICY_DENY_PENDING_APPROVAL, 7);
	/* The old entry point sees approvals too. */
	assert_decision(policy_decide(&who, 1, 1, NOW, &g, 1), POLICY_DENY_PENDING_APPROVAL, 7);
	g.approvals = 2;
	assert_decision(policy_evaluate(&who, 1, 1, NOW, &in), POLICY_ALLOW, 7);

	assert_int_equal(policy_duo_parse("NMDS, DS:cancer", duo, &nduo), 0);
	in.duo = duo;
	in.nduo = nduo;
	set_str(g.purpose_code, sizeof(g.purpose_code), "ai-training,ds:cancer");
	d = policy_evaluate(&who, 1, 1, NOW, &in);
	assert_int_equal(d.reason, POLICY_DENY_PURPOSE_EXCLUDED);
	assert_int_equal(d.code, POLICY_DUO_NMDS);
	set_str(g.consent_override, sizeof(g.consent_override), "approved by the DAC on 2027-01-02");
	assert_decision(policy_evaluate(&who, 1, 1, NOW, &in), POLICY_ALLOW, 7);
	set_str(g.purpose_code, sizeof(g.purpose_code), "ai-training,ds:asthma");
	d = policy_evaluate(&who, 1, 1, NOW, &in);
	assert_int_equal(d.reason, POLICY_DENY_PURPOSE_EXCLUDED);
	assert_int_equal(d.code, POLICY_DUO_DS);
}

/* ---- (1c) Consent codes ---------------------------------------------------------------------- */

static void test_duo_parse(void **state)
{
	static const struct {
		const char *in;
		const char *out;     /* policy_duo_format of the parse, NULL: refused */
		const char *detail;  /* part of err_detail() when refused */
	} t[] = {
		{ "GRU", "GRU", NULL },
		{ "gru", "GRU", NULL },
		{ "DUO:0000042", "GRU", NULL },
		{ "HMB", "HMB", NULL },
		{ "DUO:0000006", "HMB", NULL },
		{ "DS:cancer", "DS:cancer", NULL },
		{ "ds:MONDO:0005015", "DS:MONDO:0005015", NULL },
		{ "DUO:0000007:asthma", "DS:asthma", NULL },
		{ "NMDS", "NMDS", NULL },
		{ "DUO:0000015", "NMDS", NULL },
		{ "NPOA", "NPOA", NULL },
		{ "POA", "POA", NULL },
		{ "NPU", "NPU", NULL },
		{ "NCU", "NCU", NULL },
		{ "NPUNCU", "NPUNCU", NULL },
		{ "IRB", "IRB", NULL },
		{ "GSO", "GSO", NULL },
		{ "PUB", "PUB", NULL },
		{ "COL", "COL", NULL },
		{ "RTN", "RTN", NULL },
		{ "US", "US", NULL },
		{ "PS", "PS", NULL },
		{ "IS", "IS", NULL },
		{ "MOR:2027-06-01", "MOR:2027-06-01", NULL },
		{ "TS:2028-02-29", "TS:2028-02-29", NULL },
		{ "DS", NULL, "needs a disease" },
		{ "DS:", NULL, "needs a disease" },
		{ "DS:can cer", NULL, "needs a disease" },
		{ "GRU:x", NULL, "takes no argument" },
		{ "TS:2027-02-29", NULL, "needs a date" },
		{ "TS:+90d", NULL, "needs a date" },
		{ "MOR", NULL, "needs a date" },
		{ "XYZ", NULL, "not a code" },
		{ "DUO:0000001", NULL, "not a code" },
		{ "NMDSX", NULL, "not a code" },
		{ "", NULL, "not a code" },
	};
	struct policy_duo d, list[POLICY_DUO_MAX];
	char text[POLICY_DUO_ARG_MAX + 16], big[4096];
	size_t n;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		int r = policy_duo_parse_one(t[i].in, &d);

		if (t[i].out) {
			if (r < 0)
				fail_msg("\"%s\": %s", t[i].in, err_detail());
			policy_duo_format(&d, text);
			assert_string_equal(text, t[i].out);
			assert_non_null(policy_duo_id(d.code));
		} else {
			assert_int_equal(r, -EINVAL);
			if (!strstr(err_detail(), t[i].detail))
				fail_msg("\"%s\": detail \"%s\" lacks \"%s\"", t[i].in, err_detail(),
					 t[i].detail);
		}
	}
	assert_int_equal(policy_duo_parse("", list, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(policy_duo_parse("HMB, NMDS,DS:cancer", list, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(list[2].code, POLICY_DUO_DS);
	assert_int_equal(policy_duo_parse("HMB,,NMDS", list, &n), -EINVAL);
	assert_non_null(strstr(err_detail(), "empty"));
	assert_int_equal(policy_duo_parse("HMB,", list, &n), -EINVAL);
	assert_int_equal(policy_duo_parse("HMB,hmb", list, &n), -EINVAL);
	assert_non_null(strstr(err_detail(), "HMB given twice"));
	assert_int_equal(policy_duo_parse("HMB,BOGUS", list, &n), -EINVAL);
	assert_non_null(strstr(err_detail(), "BOGUS"));
	n = 0;
	for (size_t i = 0; i < 40; i++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "%sDS:d%zu", i ? "," : "", i);
	assert_int_equal(policy_duo_parse(big, list, &n), -EINVAL);
	assert_null(policy_duo_name(0));
	assert_null(policy_duo_name(POLICY_DUO_COUNT_));
}

static void test_purpose_exclusion_table(void **state)
{
	static const struct {
		const char *codes;
		const char *purpose;
		bool override;
		const char *excluded;  /* the code named, NULL: allowed */
	} t[] = {
		{ "GRU", "general", false, NULL },
		{ "GRU", "ai-training,commercial", false, NULL },
		{ "HMB", "general", false, "HMB" },
		{ "HMB", "health", false, NULL },
		{ "HMB", "ds:cancer", false, NULL },
		{ "HMB", "population,health", false, "HMB" },
		{ "DS:cancer", "ds:cancer", false, NULL },
		{ "DS:cancer", "ds:CANCER", false, NULL },
		{ "DS:cancer", "ds:asthma", false, "DS" },
		{ "DS:cancer", "health", false, "DS" },
		{ "POA", "population", false, NULL },
		{ "POA", "health", false, "POA" },
		{ "NPOA", "ancestry", false, "NPOA" },
		{ "NPOA", "health", false, NULL },
		{ "NMDS", "ai-training", false, "NMDS" },
		{ "NMDS", "methods", false, "NMDS" },
		{ "NMDS", "ai-training", true, NULL },
		{ "NMDS", "health", false, NULL },
		{ "GSO", "genetic", false, NULL },
		{ "GSO", "health", false, "GSO" },
		{ "NCU", "commercial", false, "NCU" },
		{ "NCU", "commercial", true, "NCU" },   /* the override lifts NMDS only */
		{ "NCU", "for-profit", false, NULL },
		{ "NPU", "for-profit", false, "NPU" },
		{ "NPU", "commercial", false, NULL },
		{ "NPUNCU", "commercial", false, "NPUNCU" },
		{ "NPUNCU", "for-profit", false, "NPUNCU" },
		{ "IRB,PUB,COL,RTN,US,PS,IS,MOR:2027-06-01", "general", false, NULL },
		{ "TS:2027-01-15", "general", false, "TS" },     /* the grant ends after it */
		{ "TS:2027-02-01", "general", false, NULL },
		{ "HMB,NMDS", "ai-training", false, "HMB" },     /* the lowest code is named */
		{ "NMDS,HMB", "ai-training,health", false, "NMDS" },
	};
	struct policy_duo duo[POLICY_DUO_MAX];
	struct policy_purpose p;
	size_t n;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint32_t code;

		assert_int_equal(policy_duo_parse(t[i].codes, duo, &n), 0);
		assert_int_equal(policy_purpose_parse(t[i].purpose, &p), 0);
		code = policy_purpose_excluded(duo, n, &p, NOW + 3600, t[i].override);
		if (!t[i].excluded ? code != 0 : !code || strcmp(policy_duo_name(code), t[i].excluded))
			fail_msg("%s / %s%s: excluded by %s, expected %s", t[i].codes, t[i].purpose,
				 t[i].override ? " (override)" : "",
				 code ? policy_duo_name(code) : "nothing",
				 t[i].excluded ? t[i].excluded : "nothing");
	}
	/* Purposes that do not parse, each refused naming the term. */
	assert_int_equal(policy_purpose_parse("", &p), -EINVAL);
	assert_int_equal(policy_purpose_parse("training", &p), -EINVAL);
	assert_non_null(strstr(err_detail(), "\"training\""));
	assert_int_equal(policy_purpose_parse("health,", &p), -EINVAL);
	assert_int_equal(policy_purpose_parse("ds:", &p), -EINVAL);
	assert_int_equal(policy_purpose_parse("ds:a,ds:b", &p), -EINVAL);
	assert_non_null(strstr(err_detail(), "more than one"));
	assert_int_equal(policy_purpose_parse("ds:a b", &p), -EINVAL);
	assert_int_equal(policy_purpose_parse("Health,AI-TRAINING", &p), 0);
	assert_int_equal(p.terms, POLICY_PURPOSE_HEALTH | POLICY_PURPOSE_AI_TRAINING);
}

/* ---- (5b) JSON of approvals, deny rules, removals, dataset policies -------------------------- */

static void test_json_new_records(void **state)
{
	struct policy_approval a = { .grant_id = 5, .by_uid = 1001, .by = "steward2", .at = NOW },
			       a2;
	struct policy_deny x = { .id = 6, .kind = POLICY_GROUP, .principal_id = 5001,
				 .principal = "cardio-ml", .dataset_id = 3, .dataset = "ukb-ecg",
				 .reason = "audit finding 2027-3", .by_uid = 0, .by = "root",
				 .created = NOW },
			   x2;
	struct policy_deny_removal rm = { .deny_id = 6, .by_uid = 0, .by = "root", .at = NOW }, rm2;
	struct policy_dataset p = { .dataset_id = 3, .dataset = "ukb-ecg",
				    .controller = "UK Biobank", .cache = POLICY_CACHE_KERNEL,
				    .updated_by_uid = 0, .updated_by = "root", .updated = NOW },
			      p2;
	json_t *j;

	(void)state;
	assert_int_equal(policy_duo_parse("HMB,NMDS,DS:cardio", p.duo, &p.nduo), 0);

	j = policy_approval_to_json(&a);
	assert_non_null(j);
	assert_int_equal(policy_approval_from_json(j, &a2), 0);
	assert_int_equal(a2.grant_id, 5);
	assert_string_equal(a2.by, "steward2");
	json_object_set_new(j, "extra", json_true());
	assert_int_equal(policy_approval_from_json(j, &a2), -EINVAL);
	assert_non_null(strstr(err_detail(), "unknown field \"extra\""));
	json_decref(j);

	j = policy_deny_to_json(&x);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "kind")), "group");
	assert_int_equal(policy_deny_from_json(j, &x2), 0);
	assert_string_equal(x2.reason, x.reason);
	json_object_set_new(j, "kind", json_string("everyone"));
	assert_int_equal(policy_deny_from_json(j, &x2), -EINVAL);
	assert_non_null(strstr(err_detail(), "\"kind\""));
	json_object_set_new(j, "kind", json_string("all"));
	assert_int_equal(policy_deny_from_json(j, &x2), -EINVAL);   /* "all" with a principal */
	json_object_set_new(j, "principal_id", json_integer(0));
	json_object_set_new(j, "principal", json_string(""));
	assert_int_equal(policy_deny_from_json(j, &x2), 0);
	assert_int_equal(x2.kind, POLICY_EVERYONE);
	json_object_set_new(j, "reason", json_string(""));
	assert_int_equal(policy_deny_from_json(j, &x2), -EINVAL);
	assert_non_null(strstr(err_detail(), "\"reason\" is empty"));
	json_object_set_new(j, "reason", json_string("r"));
	json_object_set_new(j, "dataset_id", json_integer(0));
	assert_int_equal(policy_deny_from_json(j, &x2), -EINVAL);   /* every dataset, named */
	json_object_set_new(j, "dataset", json_string(""));
	assert_int_equal(policy_deny_from_json(j, &x2), 0);
	json_object_del(j, "by");
	assert_int_equal(policy_deny_from_json(j, &x2), -EINVAL);
	assert_non_null(strstr(err_detail(), "\"by\" is missing"));
	json_decref(j);

	j = policy_deny_removal_to_json(&rm);
	assert_non_null(j);
	assert_int_equal(policy_deny_removal_from_json(j, &rm2), 0);
	/* A removal has a reason and the approvals it needs; an old record without them reads as
	 * "" and 0 (removed at once). */
	assert_non_null(json_object_get(j, "reason"));
	json_object_set_new(j, "reason", json_string("cleared"));
	json_object_set_new(j, "approvals_required", json_integer(2));
	assert_int_equal(policy_deny_removal_from_json(j, &rm2), 0);
	assert_string_equal(rm2.reason, "cleared");
	assert_int_equal(rm2.approvals_required, 2);
	json_object_set_new(j, "approvals_required", json_integer(POLICY_APPROVALS_MAX + 1));
	assert_int_equal(policy_deny_removal_from_json(j, &rm2), -EINVAL);
	json_object_set_new(j, "approvals_required", json_integer(1));
	json_object_set_new(j, "reason", json_string("bad\nline"));
	assert_int_equal(policy_deny_removal_from_json(j, &rm2), -EINVAL);
	json_object_del(j, "reason");
	json_object_del(j, "approvals_required");
	assert_int_equal(policy_deny_removal_from_json(j, &rm2), 0);
	assert_string_equal(rm2.reason, "");
	assert_int_equal(rm2.approvals_required, 0);
	json_object_set_new(j, "at", json_string("2027-01-01"));
	assert_int_equal(policy_deny_removal_from_json(j, &rm2), -EINVAL);
	json_decref(j);

	j = policy_dataset_to_json(&p);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "duo")), 3);
	assert_string_equal(json_string_value(json_object_get(j, "cache")), "kernel");
	memset(&p2, 0xa5, sizeof(p2));
	assert_int_equal(policy_dataset_from_json(j, &p2), 0);
	assert_int_equal(p2.nduo, 3);
	assert_string_equal(p2.duo[2].arg, "cardio");
	assert_string_equal(p2.controller, "UK Biobank");
	json_object_set_new(j, "cache", json_string("page"));
	assert_int_equal(policy_dataset_from_json(j, &p2), -EINVAL);
	assert_non_null(strstr(err_detail(), "\"cache\""));
	json_object_set_new(j, "cache", json_string("direct"));
	json_object_set_new(j, "duo", json_pack("[s, s]", "HMB", "BOGUS"));
	assert_int_equal(policy_dataset_from_json(j, &p2), -EINVAL);
	assert_non_null(strstr(err_detail(), "BOGUS"));
	json_object_set_new(j, "duo", json_pack("[s, s]", "HMB", "hmb"));
	assert_int_equal(policy_dataset_from_json(j, &p2), -EINVAL);
	assert_non_null(strstr(err_detail(), "twice"));
	json_object_set_new(j, "duo", json_pack("[i]", 1));
	assert_int_equal(policy_dataset_from_json(j, &p2), -EINVAL);
	json_object_set_new(j, "duo", json_string("HMB"));
	assert_int_equal(policy_dataset_from_json(j, &p2), -EINVAL);
	json_object_del(j, "duo");
	assert_int_equal(policy_dataset_from_json(j, &p2), -EINVAL);
	assert_non_null(strstr(err_detail(), "\"duo\" is missing"));
	json_decref(j);

	/* Grants: the new fields, each checked. */
	struct policy_grant g = grant(1, POLICY_USER, 1000, 1, 0, NOW, NOW + 1);

	g.approvals_required = POLICY_APPROVALS_MAX + 1;
	assert_int_equal(policy_grant_validate(&g), -EINVAL);
	assert_non_null(strstr(err_detail(), "approvals_required"));
	g.approvals_required = POLICY_APPROVALS_MAX;
	assert_int_equal(policy_grant_validate(&g), 0);
	set_str(g.purpose_code, sizeof(g.purpose_code), "");
	assert_int_equal(policy_grant_validate(&g), -EINVAL);
	assert_non_null(strstr(err_detail(), "purpose_code"));
	set_str(g.purpose_code, sizeof(g.purpose_code), "weapons");
	assert_int_equal(policy_grant_validate(&g), -EINVAL);
	set_str(g.purpose_code, sizeof(g.purpose_code), "health");
	set_str(g.consent_override, sizeof(g.consent_override), "bad\nline");
	assert_int_equal(policy_grant_validate(&g), -EINVAL);
	assert_non_null(strstr(err_detail(), "consent_override"));
}

/* ---- (5) JSON forms -------------------------------------------------------------------------- */

#define POISON 0xa5

static bool grant_eq(const struct policy_grant *a, const struct policy_grant *b)
{
	return a->id == b->id && a->kind == b->kind && a->principal_id == b->principal_id &&
	       strcmp(a->principal, b->principal) == 0 && a->dataset_id == b->dataset_id &&
	       strcmp(a->dataset, b->dataset) == 0 && a->version == b->version &&
	       strcmp(a->purpose, b->purpose) == 0 && a->not_before == b->not_before &&
	       a->expires == b->expires && a->granted_by_uid == b->granted_by_uid &&
	       strcmp(a->granted_by, b->granted_by) == 0 && a->created == b->created &&
	       a->approvals_required == b->approvals_required &&
	       strcmp(a->purpose_code, b->purpose_code) == 0 &&
	       strcmp(a->consent_override, b->consent_override) == 0 &&
	       a->revoked_at == b->revoked_at;
}

static bool revocation_eq(const struct policy_revocation *a, const struct policy_revocation *b)
{
	return a->grant_id == b->grant_id && a->by_uid == b->by_uid && strcmp(a->by, b->by) == 0 &&
	       a->at == b->at && strcmp(a->reason, b->reason) == 0;
}

static bool all_poison(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i] != POISON)
			return false;
	return true;
}

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);

	if (!j)
		fail_msg("bad test JSON %s: %s", text, e.text);
	return j;
}

static const char grant_text[] =
	"{\"id\": 42, \"kind\": \"group\", \"principal_id\": 5001, \"principal\": \"cardio ml\","
	" \"dataset_id\": 3, \"dataset\": \"ukb-ecg_v2.0\", \"version\": 0,"
	" \"purpose\": \"Arrhythmie-Modell \\u2013 Training \\ud83e\\udec0 \\\"quoted\\\"\","
	" \"not_before\": \"2026-11-21T10:00:00.5+01:00\", \"expires\": \"2027-05-21T00:00:00z\","
	" \"granted_by_uid\": 1000, \"granted_by\": \"steward\","
	" \"created\": \"2026-11-20t23:59:59Z\"}";

static const char revocation_text[] =
	"{\"grant_id\": 42, \"by_uid\": 0, \"by\": \"root\", \"at\": \"2026-12-01T12:00:00Z\","
	" \"reason\": \"consent withdrawn\"}";

static void test_json_known_documents(void **state)
{
	json_t *j = load(grant_text);
	struct policy_grant g;
	struct policy_revocation rv;

	(void)state;
	memset(&g, POISON, sizeof(g));
	if (policy_grant_from_json(j, &g) < 0)
		fail_msg("%s", err_detail());
	assert_int_equal(g.id, 42);
	assert_int_equal(g.kind, POLICY_GROUP);
	assert_int_equal(g.principal_id, 5001);
	assert_string_equal(g.principal, "cardio ml");
	assert_int_equal(g.dataset_id, 3);
	assert_string_equal(g.dataset, "ukb-ecg_v2.0");
	assert_int_equal(g.version, POLICY_ALL_VERSIONS);
	assert_string_equal(g.purpose, "Arrhythmie-Modell \xe2\x80\x93 Training \xf0\x9f\xab\x80 "
				       "\"quoted\"");
	assert_int_equal(g.not_before, 1795251600);   /* 09:00:00Z; the fraction is dropped */
	assert_int_equal(g.expires, 1810857600);
	assert_int_equal(g.granted_by_uid, 1000);
	assert_string_equal(g.granted_by, "steward");
	assert_int_equal(g.created, 1795219199);
	assert_int_equal(g.revoked_at, 0);
	json_decref(j);

	/* Written back: UTC "Z" times, every field, nothing else. */
	j = policy_grant_to_json(&g);
	assert_non_null(j);
	/* A record from before purpose codes and approvals: general, no approval needed. */
	assert_string_equal(g.purpose_code, "general");
	assert_int_equal(g.approvals_required, 0);
	assert_string_equal(g.consent_override, "");
	assert_int_equal(json_object_size(j), 16);
	assert_string_equal(json_string_value(json_object_get(j, "purpose_code")), "general");
	assert_string_equal(json_string_value(json_object_get(j, "not_before")),
			    "2026-11-21T09:00:00Z");
	assert_string_equal(json_string_value(json_object_get(j, "kind")), "group");
	assert_null(json_object_get(j, "revoked_at"));
	json_decref(j);

	j = load(revocation_text);
	if (policy_revocation_from_json(j, &rv) < 0)
		fail_msg("%s", err_detail());
	assert_int_equal(rv.grant_id, 42);
	assert_int_equal(rv.by_uid, 0);
	assert_string_equal(rv.by, "root");
	assert_int_equal(rv.at, 1796126400);
	assert_string_equal(rv.reason, "consent withdrawn");
	json_decref(j);
	j = policy_revocation_to_json(&rv);
	assert_non_null(j);
	assert_int_equal(json_object_size(j), 5);
	assert_string_equal(json_string_value(json_object_get(j, "at")), "2026-12-01T12:00:00Z");
	json_decref(j);
}

/* Random valid text of 0..max bytes: ASCII, quotes and backslashes, and 2-, 3- and 4-byte UTF-8. */
static void rnd_text(uint64_t *s, char *out, size_t max)
{
	static const char *const pieces[] = { "a", "Z", "0", " ", "\"", "\\", "/", "{", "\xc3\xa9",
					      "\xe2\x82\xac", "\xf0\x9d\x84\x9e", "\xef\xbf\xbd" };
	size_t len = 0, want = (size_t)rnd_range(s, 0, (int64_t)max);

	for (;;) {
		const char *p = pieces[rnd(s) % ARRAY_SIZE(pieces)];
		size_t n = strlen(p);

		if (len + n > want)
			break;
		memcpy(out + len, p, n);
		len += n;
	}
	out[len] = '\0';
}

static void rnd_name(uint64_t *s, char *out)
{
	size_t n = (size_t)rnd_range(s, 1, POLICY_NAME_MAX);

	for (size_t i = 0; i < n; i++)
		out[i] = (char)rnd_range(s, 0x20, 0x7e);
	if (out[0] == ' ')
		out[0] = '_';
	if (out[n - 1] == ' ')
		out[n - 1] = '_';
	out[n] = '\0';
}

static void rnd_dataset(uint64_t *s, char *out)
{
	static const char cs[] = "abcxyzABCXYZ0189._-";
	size_t n = (size_t)rnd_range(s, 1, POLICY_DATASET_MAX);

	for (size_t i = 0; i < n; i++)
		out[i] = cs[rnd(s) % (sizeof(cs) - 1)];
	if (out[0] == '.' || out[0] == '-')
		out[0] = 'd';
	out[n] = '\0';
}

/* One encode, text, decode cycle; the result must equal the input. */
static void round_trip_grant(const struct policy_grant *g)
{
	json_t *j = policy_grant_to_json(g), *back;
	struct policy_grant out;
	char *text;

	if (!j)
		fail_msg("to_json: %s", err_detail());
	text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	assert_non_null(text);
	back = load(text);
	memset(&out, POISON, sizeof(out));
	if (policy_grant_from_json(back, &out) < 0)
		fail_msg("from_json(%s): %s", text, err_detail());
	if (!grant_eq(g, &out))
		fail_msg("round trip changed the grant: %s", text);
	free(text);
	json_decref(back);
	json_decref(j);
}

#define ROUND_TRIPS 2000

static void test_json_round_trips(void **state)
{
	uint64_t s = seed ^ 0x4a534f4e;

	(void)state;
	for (unsigned i = 0; i < ROUND_TRIPS; i++) {
		struct policy_grant g = { 0 };
		struct policy_revocation rv = { 0 }, out;
		json_t *j, *back;
		char *text;

		g.id = (uint64_t)rnd_range(&s, 1, INT64_MAX);
		g.kind = rnd_chance(&s, 2) ? POLICY_USER : POLICY_GROUP;
		g.principal_id = (uint32_t)rnd_range(&s, 0, UINT32_MAX - 1);
		rnd_name(&s, g.principal);
		g.dataset_id = (uint64_t)rnd_range(&s, 1, INT64_MAX);
		rnd_dataset(&s, g.dataset);
		g.version = (uint32_t)rnd_range(&s, 0, UINT32_MAX);
		do
			rnd_text(&s, g.purpose, POLICY_PURPOSE_MAX);
		while (!g.purpose[0]);
		g.not_before = rnd_range(&s, TIME_RFC3339_MIN, TIME_RFC3339_MAX - 1);
		g.expires = rnd_range(&s, g.not_before + 1, TIME_RFC3339_MAX);
		g.granted_by_uid = (uint32_t)rnd_range(&s, 0, UINT32_MAX - 1);
		rnd_name(&s, g.granted_by);
		g.created = rnd_range(&s, 1, TIME_RFC3339_MAX);
		g.approvals_required = (uint32_t)rnd_range(&s, 0, POLICY_APPROVALS_MAX);
		set_str(g.purpose_code, sizeof(g.purpose_code),
			(const char *[]){ "general", "ai-training,ds:MONDO:0005015", "health,commercial",
					  "population,genetic,for-profit,methods" }[rnd(&s) % 4]);
		rnd_text(&s, g.consent_override, POLICY_REASON_MAX);
		round_trip_grant(&g);

		rv.grant_id = (uint64_t)rnd_range(&s, 1, INT64_MAX);
		rv.by_uid = (uint32_t)rnd_range(&s, 0, UINT32_MAX - 1);
		rnd_name(&s, rv.by);
		rv.at = rnd_range(&s, 1, TIME_RFC3339_MAX);
		rnd_text(&s, rv.reason, POLICY_REASON_MAX);
		j = policy_revocation_to_json(&rv);
		if (!j)
			fail_msg("to_json: %s", err_detail());
		text = json_dumps(j, JSON_COMPACT);
		back = load(text);
		memset(&out, POISON, sizeof(out));
		if (policy_revocation_from_json(back, &out) < 0)
			fail_msg("from_json(%s): %s", text, err_detail());
		assert_true(revocation_eq(&rv, &out));
		free(text);
		json_decref(back);
		json_decref(j);
	}

	/* The edges of every bound round-trip too. */
	struct policy_grant g = grant(INT64_MAX, POLICY_USER, UINT32_MAX - 1, INT64_MAX,
				      UINT32_MAX, TIME_RFC3339_MIN, TIME_RFC3339_MAX);

	memset(g.principal, 'p', POLICY_NAME_MAX);
	memset(g.dataset, 'd', POLICY_DATASET_MAX);
	memset(g.purpose, 'x', POLICY_PURPOSE_MAX);
	g.created = TIME_RFC3339_MAX;
	round_trip_grant(&g);
	g = grant(1, POLICY_GROUP, 0, 1, 0, -1, 0);
	g.granted_by_uid = 0;
	g.created = 1;
	round_trip_grant(&g);
}

/* Check one rejected document: -EINVAL, the output untouched, the detail naming `field`. */
static void expect_grant_rejected(const json_t *j, const char *field, const char *what)
{
	struct policy_grant g;
	int r;

	memset(&g, POISON, sizeof(g));
	err_clear();
	r = policy_grant_from_json(j, &g);
	if (r != -EINVAL)
		fail_msg("%s: accepted (%d)", what, r);
	if (!all_poison(&g, sizeof(g)))
		fail_msg("%s: output written on failure", what);
	if (!strstr(err_detail(), field))
		fail_msg("%s: detail \"%s\" does not name %s", what, err_detail(), field);
}

static void expect_revocation_rejected(const json_t *j, const char *field, const char *what)
{
	struct policy_revocation rv;
	int r;

	memset(&rv, POISON, sizeof(rv));
	err_clear();
	r = policy_revocation_from_json(j, &rv);
	if (r != -EINVAL)
		fail_msg("%s: accepted (%d)", what, r);
	if (!all_poison(&rv, sizeof(rv)))
		fail_msg("%s: output written on failure", what);
	if (!strstr(err_detail(), field))
		fail_msg("%s: detail \"%s\" does not name %s", what, err_detail(), field);
}

/* The base document with field set to value (owned: taken), or removed when value is NULL. */
static json_t *mutate(const char *base, const char *field, json_t *value)
{
	json_t *j = load(base);

	if (value)
		assert_int_equal(json_object_set_new(j, field, value), 0);
	else
		assert_int_equal(json_object_del(j, field), 0);
	return j;
}

static const struct {
	const char *key;
	bool is_string;
} grant_keys[] = {
	{ "id", false }, { "kind", true }, { "principal_id", false }, { "principal", true },
	{ "dataset_id", false }, { "dataset", true }, { "version", false }, { "purpose", true },
	{ "not_before", true }, { "expires", true }, { "granted_by_uid", false },
	{ "granted_by", true }, { "created", true },
}, revocation_keys[] = {
	{ "grant_id", false }, { "by_uid", false }, { "by", true }, { "at", true },
	{ "reason", true },
};

/* Values of the wrong JSON type for a string field and for an integer field. */
static const char *const not_strings[] = { "5", "true", "null", "{}", "[\"a\"]", "1.5" };
static const char *const not_integers[] = { "\"5\"", "true", "false", "null", "1.0", "[]",
					    "{}", "1e3" };

/* Field, value (JSON text), and why it is wrong. */
static const struct {
	const char *field;
	const char *value;
} bad_grant_values[] = {
	{ "id", "0" }, { "id", "-1" },
	{ "dataset_id", "0" }, { "dataset_id", "-9223372036854775808" },
	{ "principal_id", "4294967295" }, { "principal_id", "4294967296" },
	{ "principal_id", "-1" }, { "version", "4294967296" }, { "version", "-1" },
	{ "granted_by_uid", "4294967295" }, { "granted_by_uid", "99999999999" },
	{ "kind", "\"admin\"" }, { "kind", "\"User\"" }, { "kind", "\"\"" },
	{ "kind", "\"user\\u0000\"" }, { "kind", "1" },
	/* names */
	{ "principal", "\"\"" }, { "principal", "\" alice\"" }, { "principal", "\"alice \"" },
	{ "principal", "\"al\\tice\"" }, { "principal", "\"al\\u007fice\"" },
	{ "principal", "\"m\\u00fcller\"" }, { "principal", "\"a\\u0000b\"" },
	{ "principal", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"" },
	{ "granted_by", "\"\"" }, { "granted_by", "\"st\\neward\"" },
	/* dataset names */
	{ "dataset", "\"\"" }, { "dataset", "\".hidden\"" }, { "dataset", "\"-x\"" },
	{ "dataset", "\"a/b\"" }, { "dataset", "\"a b\"" }, { "dataset", "\"\\u00e9\"" },
	/* free text: empty purpose, control characters, separators, bidi controls, NUL */
	{ "purpose", "\"\"" }, { "purpose", "\"a\\nb\"" }, { "purpose", "\"a\\tb\"" },
	{ "purpose", "\"a\\rb\"" }, { "purpose", "\"\\u001b[31mred\"" }, { "purpose", "\"\\u007f\"" },
	{ "purpose", "\"\\u0085\"" }, { "purpose", "\"\\u009b31m\"" }, { "purpose", "\"a\\u2028b\"" },
	{ "purpose", "\"txt\\u202egpj.exe\"" }, { "purpose", "\"\\u2066x\"" },
	{ "purpose", "\"a\\u0000b\"" },
	/* times: not RFC 3339 date-times, impossible dates, out of range, not after the epoch */
	{ "not_before", "\"2025-02-29T00:00:00Z\"" }, { "not_before", "\"+90d\"" },
	{ "not_before", "\"now\"" }, { "not_before", "\"2026-11-21\"" },
	{ "not_before", "\"2026-11-21T09:00:00\"" }, { "not_before", "\"2026-11-21T09:00:00Z \"" },
	{ "not_before", "\"2026-11-21 09:00:00Z\"" }, { "not_before", "\"\"" },
	{ "not_before", "\"0000-01-01T00:00:00+00:01\"" },
	{ "not_before", "\"2026-11-21T09:00:00Z\\u0000junk\"" },
	{ "not_before", "\"2026-11-21T09:00:00.1234567890Z\"" },
	{ "expires", "\"2026-02-30T00:00:00Z\"" }, { "expires", "\"2026-11-21T24:00:00Z\"" },
	{ "expires", "\"9999-12-31T23:59:59-00:01\"" }, { "expires", "1795251600" },
	/* expires not after not_before (09:00:00Z) */
	{ "expires", "\"2026-11-21T09:00:00Z\"" }, { "expires", "\"2026-11-21T08:59:59Z\"" },
	{ "expires", "\"2026-11-21T10:00:00+01:00\"" },
	{ "created", "\"1970-01-01T00:00:00Z\"" }, { "created", "\"1969-12-31T23:59:59Z\"" },
};

static const char base_grant[] =
	"{\"id\": 1, \"kind\": \"user\", \"principal_id\": 1000, \"principal\": \"alice\","
	" \"dataset_id\": 1, \"dataset\": \"ukb-ecg\", \"version\": 2, \"purpose\": \"training\","
	" \"not_before\": \"2026-11-21T09:00:00Z\", \"expires\": \"2027-11-21T09:00:00Z\","
	" \"granted_by_uid\": 0, \"granted_by\": \"root\", \"created\": \"2026-11-21T08:00:00Z\"}";

static json_t *long_string(char c, size_t n)
{
	char *s = malloc(n + 1);
	json_t *j;

	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	j = json_string(s);
	free(s);
	assert_non_null(j);
	return j;
}

/* n copies of a UTF-8 character of len bytes. */
static json_t *long_utf8(const char *ch, size_t len, size_t copies)
{
	char *s = malloc(len * copies + 1);
	json_t *j;

	assert_non_null(s);
	for (size_t i = 0; i < copies; i++)
		memcpy(s + i * len, ch, len);
	s[len * copies] = '\0';
	j = json_string(s);
	free(s);
	assert_non_null(j);
	return j;
}

/* Bytes that are not UTF-8: stray continuation, overlong NUL and '/', surrogate, truncated
 * sequences, past U+10FFFF, and bytes never used. */
static const char *const bad_utf8[] = {
	"\x80", "a\xbf", "\xc0\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xed\xbf\xbf",
	"\xe2\x82", "x\xf0\x9f\x98", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xfe", "\xff",
};

static void test_json_grant_rejections(void **state)
{
	json_t *j;
	char what[160];

	(void)state;
	/* Sanity: the base is accepted. */
	j = load(base_grant);
	{
		struct policy_grant g;

		if (policy_grant_from_json(j, &g) < 0)
			fail_msg("base: %s", err_detail());
	}
	json_decref(j);

	/* Not an object. */
	expect_grant_rejected(NULL, "not a JSON object", "NULL");
	j = load("[1, 2]");
	expect_grant_rejected(j, "not a JSON object", "array");
	json_decref(j);
	j = load("\"grant\"");
	expect_grant_rejected(j, "not a JSON object", "string");
	json_decref(j);

	for (size_t i = 0; i < ARRAY_SIZE(grant_keys); i++) {
		const char *key = grant_keys[i].key;

		/* Missing. */
		j = mutate(base_grant, key, NULL);
		snprintf(what, sizeof(what), "missing %s", key);
		expect_grant_rejected(j, key, what);
		json_decref(j);
		/* Wrong type. */
		const char *const *bad = grant_keys[i].is_string ? not_strings : not_integers;
		size_t nbad = grant_keys[i].is_string ? ARRAY_SIZE(not_strings)
						      : ARRAY_SIZE(not_integers);

		for (size_t k = 0; k < nbad; k++) {
			j = mutate(base_grant, key, load(bad[k]));
			snprintf(what, sizeof(what), "%s = %s", key, bad[k]);
			expect_grant_rejected(j, key, what);
			json_decref(j);
		}
	}

	/* Unknown fields, including revoked_at (not part of the JSON form), a key differing only
	 * in case, and one that differs only after a NUL. */
	j = mutate(base_grant, "extra", json_integer(1));
	expect_grant_rejected(j, "unknown field \"extra\"", "extra");
	json_decref(j);
	j = mutate(base_grant, "revoked_at", json_string("2026-11-21T09:00:00Z"));
	expect_grant_rejected(j, "unknown field \"revoked_at\"", "revoked_at");
	json_decref(j);
	j = mutate(base_grant, "ID", json_integer(1));
	expect_grant_rejected(j, "unknown field \"ID\"", "ID");
	json_decref(j);
	j = load(base_grant);
	assert_int_equal(json_object_setn_new(j, "id\0x", 4, json_integer(2)), 0);
	expect_grant_rejected(j, "unknown field \"id?x\"", "key with NUL");
	json_decref(j);
	j = mutate(base_grant, "\x1b[2J", json_integer(1));
	expect_grant_rejected(j, "unknown field \"?[2J\"", "key with escape");
	json_decref(j);

	/* Wrong values. */
	for (size_t i = 0; i < ARRAY_SIZE(bad_grant_values); i++) {
		j = mutate(base_grant, bad_grant_values[i].field, load(bad_grant_values[i].value));
		snprintf(what, sizeof(what), "%s = %s", bad_grant_values[i].field,
			 bad_grant_values[i].value);
		expect_grant_rejected(j, bad_grant_values[i].field, what);
		json_decref(j);
	}

	/* Too long, by bytes (not characters); one less is fine. */
	static const struct {
		const char *field;
		size_t max;
		char c;
	} lim[] = {
		{ "principal", POLICY_NAME_MAX, 'p' },
		{ "granted_by", POLICY_NAME_MAX, 'g' },
		{ "dataset", POLICY_DATASET_MAX, 'd' },
		{ "purpose", POLICY_PURPOSE_MAX, 'x' },
	};
	for (size_t i = 0; i < ARRAY_SIZE(lim); i++) {
		struct policy_grant g;

		j = mutate(base_grant, lim[i].field, long_string(lim[i].c, lim[i].max));
		if (policy_grant_from_json(j, &g) < 0)
			fail_msg("%s of %zu bytes: %s", lim[i].field, lim[i].max, err_detail());
		json_decref(j);
		j = mutate(base_grant, lim[i].field, long_string(lim[i].c, lim[i].max + 1));
		snprintf(what, sizeof(what), "%s of %zu bytes", lim[i].field, lim[i].max + 1);
		expect_grant_rejected(j, lim[i].field, what);
		json_decref(j);
	}
	/* 342 euro signs are 342 characters but 1026 bytes. */
	j = mutate(base_grant, "purpose", long_utf8("\xe2\x82\xac", 3, 342));
	expect_grant_rejected(j, "purpose", "purpose of 1026 bytes in 342 characters");
	json_decref(j);

	/* Not UTF-8 (json_loads would refuse these; a json_t built in memory need not). */
	for (size_t i = 0; i < ARRAY_SIZE(bad_utf8); i++) {
		j = mutate(base_grant, "purpose", json_stringn_nocheck(bad_utf8[i],
								       strlen(bad_utf8[i])));
		snprintf(what, sizeof(what), "purpose with bad UTF-8 #%zu", i);
		expect_grant_rejected(j, "purpose", what);
		assert_non_null(strstr(err_detail(), "UTF-8"));
		json_decref(j);
		j = mutate(base_grant, "principal", json_stringn_nocheck(bad_utf8[i],
									 strlen(bad_utf8[i])));
		snprintf(what, sizeof(what), "principal with bad UTF-8 #%zu", i);
		expect_grant_rejected(j, "principal", what);
		json_decref(j);
	}
}

static void test_json_grant_accepts_edges(void **state)
{
	static const struct {
		const char *field;
		const char *value;
	} ok[] = {
		{ "id", "9223372036854775807" }, { "principal_id", "0" },
		{ "principal_id", "4294967294" }, { "version", "4294967295" },
		{ "principal", "\"domain users\"" }, { "principal", "\"a\"" },
		{ "principal", "\"~!@#$%^&*()\"" }, { "dataset", "\"_x\"" }, { "dataset", "\"0.1-a_\"" },
		{ "purpose", "\" \"" }, { "purpose", "\"\\u00a0\\u200b\\ufeff\\uffff\\udbff\\udfff\"" },
		{ "not_before", "\"0000-01-01T00:00:00Z\"" },
		{ "not_before", "\"1969-07-20T20:17:40.000000001-00:00\"" },
		{ "expires", "\"9999-12-31T23:59:59Z\"" }, { "expires", "\"2026-11-21T09:00:01Z\"" },
		{ "created", "\"1970-01-01T00:00:01Z\"" }, { "created", "\"9999-12-31T23:59:59Z\"" },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		json_t *j = mutate(base_grant, ok[i].field, load(ok[i].value));
		struct policy_grant g;

		if (policy_grant_from_json(j, &g) < 0)
			fail_msg("%s = %s: %s", ok[i].field, ok[i].value, err_detail());
		round_trip_grant(&g);
		json_decref(j);
	}
}

static const char base_revocation[] =
	"{\"grant_id\": 7, \"by_uid\": 1000, \"by\": \"steward\", \"at\": \"2026-12-01T00:00:00Z\","
	" \"reason\": \"\"}";

static void test_json_revocation_rejections(void **state)
{
	static const struct {
		const char *field;
		const char *value;
	} bad[] = {
		{ "grant_id", "0" }, { "grant_id", "-7" }, { "by_uid", "4294967295" },
		{ "by_uid", "4294967296" }, { "by", "\"\"" }, { "by", "\"a\\u0000\"" },
		{ "by", "\"\\u00e9\"" }, { "at", "\"1970-01-01T00:00:00Z\"" }, { "at", "\"now\"" },
		{ "at", "\"+1d\"" }, { "at", "\"2026-12-01\"" }, { "at", "\"2026-12-01T00:00:60Z\"" },
		{ "reason", "\"line\\nbreak\"" }, { "reason", "\"\\u001b]0;title\\u0007\"" },
		{ "reason", "\"\\u202d\"" }, { "reason", "\"a\\u0000b\"" },
	};
	struct policy_revocation rv;
	char what[160];
	json_t *j;

	(void)state;
	j = load(base_revocation);
	if (policy_revocation_from_json(j, &rv) < 0)       /* an empty reason is fine */
		fail_msg("base: %s", err_detail());
	json_decref(j);

	expect_revocation_rejected(NULL, "not a JSON object", "NULL");
	for (size_t i = 0; i < ARRAY_SIZE(revocation_keys); i++) {
		const char *key = revocation_keys[i].key;
		const char *const *nb = revocation_keys[i].is_string ? not_strings : not_integers;
		size_t nnb = revocation_keys[i].is_string ? ARRAY_SIZE(not_strings)
							  : ARRAY_SIZE(not_integers);

		j = mutate(base_revocation, key, NULL);
		snprintf(what, sizeof(what), "missing %s", key);
		expect_revocation_rejected(j, key, what);
		json_decref(j);
		for (size_t k = 0; k < nnb; k++) {
			j = mutate(base_revocation, key, load(nb[k]));
			snprintf(what, sizeof(what), "%s = %s", key, nb[k]);
			expect_revocation_rejected(j, key, what);
			json_decref(j);
		}
	}
	j = mutate(base_revocation, "grant", json_integer(7));
	expect_revocation_rejected(j, "unknown field \"grant\"", "unknown field");
	json_decref(j);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		j = mutate(base_revocation, bad[i].field, load(bad[i].value));
		snprintf(what, sizeof(what), "%s = %s", bad[i].field, bad[i].value);
		expect_revocation_rejected(j, bad[i].field, what);
		json_decref(j);
	}
	j = mutate(base_revocation, "reason", long_string('r', POLICY_REASON_MAX));
	assert_int_equal(policy_revocation_from_json(j, &rv), 0);
	json_decref(j);
	j = mutate(base_revocation, "reason", long_string('r', POLICY_REASON_MAX + 1));
	expect_revocation_rejected(j, "reason", "reason too long");
	json_decref(j);
	for (size_t i = 0; i < ARRAY_SIZE(bad_utf8); i++) {
		j = mutate(base_revocation, "reason",
			   json_stringn_nocheck(bad_utf8[i], strlen(bad_utf8[i])));
		snprintf(what, sizeof(what), "reason with bad UTF-8 #%zu", i);
		expect_revocation_rejected(j, "reason", what);
		json_decref(j);
	}
}

/* The struct side: what validate refuses, and to_json refusing to write an invalid record. */
static void test_validate_structs(void **state)
{
	struct policy_grant g = grant(1, POLICY_USER, 1000, 1, 0, NOW, NOW + 1), b;
	struct policy_revocation rv = { .grant_id = 1, .by_uid = 0, .at = NOW };

	(void)state;
	assert_int_equal(policy_grant_validate(&g), 0);
	assert_int_equal(policy_grant_validate(NULL), -EINVAL);

	b = g;
	memset(b.principal, 'a', sizeof(b.principal));           /* not NUL-terminated */
	assert_int_equal(policy_grant_validate(&b), -EINVAL);
	assert_non_null(strstr(err_detail(), "principal"));
	err_clear();
	assert_null(policy_grant_to_json(&b));
	assert_non_null(strstr(err_detail(), "principal"));
	b = g;
	memset(b.purpose, 'a', sizeof(b.purpose));
	assert_int_equal(policy_grant_validate(&b), -EINVAL);
	b = g;
	memset(b.dataset, 'a', sizeof(b.dataset));
	assert_int_equal(policy_grant_validate(&b), -EINVAL);
	b = g;
	b.id = (uint64_t)INT64_MAX + 1;                          /* not a JSON integer */
	assert_int_equal(policy_grant_validate(&b), -EINVAL);
	assert_null(policy_grant_to_json(&b));
	b = g;
	b.kind = 0;
	assert_int_equal(policy_grant_validate(&b), -EINVAL);
	assert_non_null(strstr(err_detail(), "kind"));
	b = g;
	b.expires = TIME_RFC3339_MAX + 1;                        /* no RFC 3339 form */
	assert_int_equal(policy_grant_validate(&b), -EINVAL);
	assert_non_null(strstr(err_detail(), "expires"));
	b = g;
	b.not_before = TIME_RFC3339_MIN - 1;
	assert_int_equal(policy_grant_validate(&b), -EINVAL);
	b = g;
	b.revoked_at = -5;
	assert_int_equal(policy_grant_validate(&b), -EINVAL);
	assert_non_null(strstr(err_detail(), "revoked_at"));
	b.revoked_at = NOW;
	assert_int_equal(policy_grant_validate(&b), 0);

	set_str(rv.by, sizeof(rv.by), "root");
	assert_int_equal(policy_revocation_validate(&rv), 0);
	assert_int_equal(policy_revocation_validate(NULL), -EINVAL);
	rv.at = 0;
	assert_int_equal(policy_revocation_validate(&rv), -EINVAL);
	assert_null(policy_revocation_to_json(&rv));
	assert_non_null(strstr(err_detail(), "at"));

	assert_true(policy_name_valid("root"));
	assert_true(policy_name_valid("domain users"));
	assert_false(policy_name_valid(NULL));
	assert_false(policy_name_valid(""));
	assert_false(policy_name_valid(" "));
	assert_false(policy_name_valid("a\x7f"));
	assert_false(policy_name_valid("caf\xc3\xa9"));
	assert_true(policy_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
	assert_false(policy_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

/* ---- (6) Time parsing and formatting ------------------------------------------------------------ */

static void test_time_parse_accepts(void **state)
{
	static const struct {
		const char *s;
		int64_t want;
	} t[] = {
		{ "1970-01-01T00:00:00Z", 0 },
		{ "2000-03-01T00:00:00Z", 951868800 },
		{ "2000-02-29T00:00:00Z", 951782400 },            /* divisible by 400: leap */
		{ "2024-02-29T12:00:00Z", 1709208000 },
		{ "1900-03-01T00:00:00Z", -2203891200 },
		{ "2100-02-28T23:59:59Z", 4107542399 },
		{ "1600-02-29T00:00:00Z", -11670998400 },
		{ "0001-01-01T00:00:00Z", -62135596800 },
		{ "0000-01-01T00:00:00Z", TIME_RFC3339_MIN },
		{ "0000-02-29T00:00:00Z", TIME_RFC3339_MIN + 59 * 86400 },   /* year 0 is leap */
		{ "9999-12-31T23:59:59Z", TIME_RFC3339_MAX },
		{ "1969-12-31T23:59:59Z", -1 },
		{ "2026-11-21T09:00:00Z", 1795251600 },
		{ "2026-11-21t09:00:00z", 1795251600 },
		{ "2026-11-21T09:00:00.999999999Z", 1795251600 },  /* fraction dropped, not rounded */
		{ "2026-11-21T09:00:00.5Z", 1795251600 },
		{ "2026-11-21T10:30:00+01:30", 1795251600 },
		{ "2026-11-21T00:00:00-09:00", 1795251600 },
		{ "2026-11-21T09:00:00+00:00", 1795251600 },
		{ "2026-11-21T09:00:00-00:00", 1795251600 },
		{ "2026-11-22T08:59:00+23:59", 1795251600 },
		{ "1970-01-01T00:00:00-23:59", 86340 },
		{ "9999-12-31T23:59:59-23:59", TIME_RFC3339_MAX + 86340 },
		{ "0000-01-01T00:00:00+23:59", TIME_RFC3339_MIN - 86340 },
		{ "2026-11-21", 1795219200 },
		{ "1970-01-01", 0 },
		{ "1969-12-31", -86400 },
		{ "now", NOW },
		{ "+0s", NOW },
		{ "+90d", NOW + 90 * 86400 },
		{ "+1w", NOW + 7 * 86400 },
		{ "+15m", NOW + 900 },
		{ "+2h", NOW + 7200 },
		{ "+0000000000000000000000000042s", NOW + 42 },
		{ "+9223372035054775807s", INT64_MAX },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		int64_t got = 12345;
		int r = time_parse(t[i].s, NOW, &got);

		if (r != 0 || got != t[i].want)
			fail_msg("time_parse(\"%s\") = %d, %" PRId64 "; expected %" PRId64 " (%s)",
				 t[i].s, r, got, t[i].want, err_detail());
	}
	/* The record form accepts the date-times and nothing else: no date alone, no "now", no
	 * relative time. */
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		bool date_time = t[i].s[0] != '+' && strlen(t[i].s) > 10;
		int64_t got = 12345;
		int r = time_parse_rfc3339(t[i].s, &got);

		if (date_time && (r != 0 || got != t[i].want))
			fail_msg("time_parse_rfc3339(\"%s\") = %d", t[i].s, r);
		if (!date_time && (r != -EINVAL || got != 12345))
			fail_msg("time_parse_rfc3339(\"%s\") = %d, accepted", t[i].s, r);
	}
	int64_t got;

	/* Relative times count from the given now, whatever it is. */
	assert_int_equal(time_parse("+1s", -5, &got), 0);
	assert_int_equal(got, -4);
	assert_int_equal(time_parse("now", INT64_MIN, &got), 0);
	assert_int_equal(got, INT64_MIN);
}

static void test_time_parse_rejects(void **state)
{
	static const struct {
		const char *s;
		int err;
	} t[] = {
		/* impossible dates */
		{ "2025-02-30", -EINVAL }, { "2025-02-29", -EINVAL }, { "2025-02-29T00:00:00Z", -EINVAL },
		{ "1900-02-29T00:00:00Z", -EINVAL }, { "2100-02-29", -EINVAL },
		{ "2026-04-31T00:00:00Z", -EINVAL }, { "2026-13-01", -EINVAL },
		{ "2026-00-10", -EINVAL }, { "2026-01-00", -EINVAL }, { "2026-01-32", -EINVAL },
		/* impossible times */
		{ "2026-01-01T24:00:00Z", -EINVAL }, { "2026-01-01T23:60:00Z", -EINVAL },
		{ "2026-01-01T23:59:60Z", -EINVAL }, { "2026-12-31T23:59:61Z", -EINVAL },
		{ "2026-01-01T99:00:00Z", -EINVAL },
		/* offsets */
		{ "2026-01-01T00:00:00+24:00", -EINVAL }, { "2026-01-01T00:00:00+05:60", -EINVAL },
		{ "2026-01-01T00:00:00+0530", -EINVAL }, { "2026-01-01T00:00:00+5:30", -EINVAL },
		{ "2026-01-01T00:00:00+05:3", -EINVAL }, { "2026-01-01T00:00:00+05", -EINVAL },
		{ "2026-01-01T00:00:00 +05:00", -EINVAL }, { "2026-01-01T00:00:00UTC", -EINVAL },
		{ "2026-01-01T00:00:00", -EINVAL }, { "2026-01-01T00:00:00+", -EINVAL },
		{ "2026-01-01T00:00:00*05:00", -EINVAL },
		/* shapes and trailing junk */
		{ "2026-01-01T00:00:00ZZ", -EINVAL }, { "2026-01-01T00:00:00Z ", -EINVAL },
		{ "2026-01-01T00:00:00+01:00x", -EINVAL }, { " 2026-01-01", -EINVAL },
		{ "2026-01-01 ", -EINVAL }, { "2026-01-01x", -EINVAL }, { "2026-1-01", -EINVAL },
		{ "26-01-01", -EINVAL }, { "02026-01-01", -EINVAL }, { "2026/01/01", -EINVAL },
		{ "2026-01-01 00:00:00Z", -EINVAL }, { "2026-01-01T00:00Z", -EINVAL },
		{ "2026-01-01T0:00:00Z", -EINVAL }, { "2026-01-01T00:00:00.Z", -EINVAL },
		{ "2026-01-01T00:00:00.1234567890Z", -EINVAL }, { "2026-01-01T00:00:00,5Z", -EINVAL },
		{ "+2026-01-01T00:00:00Z", -EINVAL }, { "-2026-01-01T00:00:00Z", -EINVAL },
		{ "\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x96-01-01", -EINVAL },
		{ "2026-01-01T", -EINVAL }, { "2026", -EINVAL }, { "", -EINVAL },
		/* relative and now */
		{ "+", -EINVAL }, { "+d", -EINVAL }, { "+10", -EINVAL }, { "+10x", -EINVAL },
		{ "+10dd", -EINVAL }, { "+10D", -EINVAL }, { "+-5d", -EINVAL }, { "-5d", -EINVAL },
		{ "+ 5d", -EINVAL }, { "+5 d", -EINVAL }, { "+1.5d", -EINVAL }, { "NOW", -EINVAL },
		{ "now ", -EINVAL }, { "nowx", -EINVAL }, { "today", -EINVAL },
		/* overflow */
		{ "+99999999999999999999d", -ERANGE }, { "+18446744073709551616s", -ERANGE },
		{ "+9223372036854775808s", -ERANGE }, { "+9223372036854775807s", -ERANGE },
		{ "+15250284452471w", -ERANGE }, { "+106751991167301d", -ERANGE },
		{ "+9223372035054775808s", -ERANGE },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		int64_t got = 777;
		int r;

		err_clear();
		r = time_parse(t[i].s, NOW, &got);
		if (r != t[i].err || got != 777)
			fail_msg("time_parse(\"%s\") = %d, %" PRId64 "; expected %d", t[i].s, r, got,
				 t[i].err);
		if (!err_detail()[0])
			fail_msg("time_parse(\"%s\"): no detail", t[i].s);
	}
	int64_t got = 777;

	assert_int_equal(time_parse(NULL, NOW, &got), -EINVAL);
	assert_int_equal(time_parse_rfc3339(NULL, &got), -EINVAL);
	assert_int_equal(got, 777);
	/* The largest relative time that fits, from the other side. */
	assert_int_equal(time_parse("+1s", INT64_MAX, &got), -ERANGE);
	assert_int_equal(time_parse("+0s", INT64_MAX, &got), 0);
	assert_int_equal(got, INT64_MAX);
	/* Short texts in exactly-sized allocations are not read past (ASan checks). */
	char *p = malloc(4);

	assert_non_null(p);
	memcpy(p, "202", 4);
	assert_int_equal(time_parse(p, NOW, &got), -EINVAL);
	memcpy(p, "+9d", 4);
	assert_int_equal(time_parse(p, NOW, &got), 0);
	free(p);
}

static void test_time_format_known(void **state)
{
	static const struct {
		int64_t t;
		const char *s;
	} t[] = {
		{ 0, "1970-01-01T00:00:00Z" },
		{ -1, "1969-12-31T23:59:59Z" },
		{ 951868800, "2000-03-01T00:00:00Z" },
		{ 951782400, "2000-02-29T00:00:00Z" },
		{ 1795251600, "2026-11-21T09:00:00Z" },
		{ TIME_RFC3339_MIN, "0000-01-01T00:00:00Z" },
		{ TIME_RFC3339_MAX, "9999-12-31T23:59:59Z" },
		{ TIME_RFC3339_MIN - 1, "-0001-12-31T23:59:59Z" },
		{ TIME_RFC3339_MAX + 1, "+10000-01-01T00:00:00Z" },
		{ INT64_MAX, "+292277026596-12-04T15:30:07Z" },
		{ INT64_MIN, "-292277022657-01-27T08:29:52Z" },
	};
	static const struct {
		int64_t ns;
		const char *s;
	} tn[] = {
		{ 0, "1970-01-01T00:00:00.000000000Z" },
		{ 1, "1970-01-01T00:00:00.000000001Z" },
		{ -1, "1969-12-31T23:59:59.999999999Z" },
		{ -1000000000, "1969-12-31T23:59:59.000000000Z" },
		{ 1795251600123456789, "2026-11-21T09:00:00.123456789Z" },
		{ INT64_MAX, "2262-04-11T23:47:16.854775807Z" },
		{ INT64_MIN, "1677-09-21T00:12:43.145224192Z" },
	};
	char out[TIME_TEXT_MAX];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		time_format(t[i].t, out);
		assert_string_equal(out, t[i].s);
		assert_true(strlen(out) < TIME_TEXT_MAX);
	}
	for (size_t i = 0; i < ARRAY_SIZE(tn); i++) {
		time_format_ns(tn[i].ns, out);
		assert_string_equal(out, tn[i].s);
	}
	/* Outside the RFC 3339 years, the text is for people only: time_parse refuses it. */
	int64_t got;

	time_format(TIME_RFC3339_MAX + 1, out);
	assert_int_equal(time_parse(out, 0, &got), -EINVAL);
	time_format(TIME_RFC3339_MIN - 1, out);
	assert_int_equal(time_parse(out, 0, &got), -EINVAL);
}

/* Every day of years 0000-9999 (at a varying second) formats and parses back, and matches an
 * independent oracle, glibc's gmtime_r (which does not depend on TZ for UTC). */
static void test_time_round_trip_every_day(void **state)
{
	uint64_t s = seed ^ 0x74696d65;
	char out[TIME_TEXT_MAX], want[64];
	int64_t days = 0;

	(void)state;
	for (int64_t t = TIME_RFC3339_MIN; t <= TIME_RFC3339_MAX; t += 86400, days++) {
		int64_t u = t + rnd_range(&s, 0, 86399), back;
		char frac[16];

		time_format(u, out);
		if (time_parse(out, 0, &back) != 0 || back != u)
			fail_msg("%" PRId64 " -> %s -> %" PRId64, u, out, back);
		if (days % 97 == 0) {
			time_t tt = (time_t)u;
			struct tm tm;

			assert_non_null(gmtime_r(&tt, &tm));
			snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02dZ",
				 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
				 tm.tm_min, tm.tm_sec);
			assert_string_equal(out, want);
			/* With a fraction and an offset, the same instant. */
			snprintf(frac, sizeof(frac), ".%09u", (unsigned)rnd_range(&s, 0, 999999999));
			snprintf(want, sizeof(want), "%.19s%s+00:00", out, frac);
			assert_int_equal(time_parse(want, 0, &back), 0);
			assert_int_equal(back, u);
		}
	}
	assert_int_equal(days, 3652425);                 /* 10000 years of 365.2425 days */

	/* Far outside, against gmtime_r too (its years are an int). */
	for (unsigned i = 0; i < 20000; i++) {
		int64_t u = rnd_range(&s, -60000000000000000, 60000000000000000);
		time_t tt = (time_t)u;
		struct tm tm;
		int64_t y;

		assert_non_null(gmtime_r(&tt, &tm));
		y = (int64_t)tm.tm_year + 1900;
		if (y >= 0 && y <= 9999)
			snprintf(want, sizeof(want), "%04" PRId64, y);
		else
			snprintf(want, sizeof(want), "%+05" PRId64, y);
		snprintf(want + strlen(want), sizeof(want) - strlen(want),
			 "-%02d-%02dT%02d:%02d:%02dZ", tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec);
		time_format(u, out);
		assert_string_equal(out, want);
	}
}

/* ---- (7) Subjects from NSS ----------------------------------------------------------------------- */

static void test_subject_root(void **state)
{
	struct policy_subject s;
	bool has0 = false;
	int r;

	(void)state;
	memset(&s, POISON, sizeof(s));
	r = policy_subject_lookup(0, 0, &s);
	if (r < 0)
		fail_msg("lookup uid 0: %s", err_detail());
	assert_int_equal(s.uid, 0);
	assert_string_equal(s.user, "root");
	assert_true(s.ngids >= 1 && s.ngids <= POLICY_GROUPS_MAX);
	assert_int_equal(s.gids[0], 0);
	for (size_t i = 0; i < s.ngids; i++)
		has0 |= s.gids[i] == 0;
	assert_true(has0);

	/* The primary group is whatever the caller says, and comes first. */
	r = policy_subject_lookup(0, 4242, &s);
	assert_int_equal(r, 0);
	assert_string_equal(s.user, "root");
	assert_int_equal(s.gids[0], 4242);
}

static void test_subject_unknown_uid(void **state)
{
	struct policy_subject s;

	(void)state;
	memset(&s, POISON, sizeof(s));
	/* No passwd entry: no name, just the given group. */
	assert_int_equal(policy_subject_lookup(3999999999u, 12345, &s), 0);
	assert_int_equal(s.uid, 3999999999u);
	assert_string_equal(s.user, "");
	assert_int_equal(s.ngids, 1);
	assert_int_equal(s.gids[0], 12345);
}

#define LOOKUP_THREADS 8
#define LOOKUPS 200

static void *lookup_thread(void *arg)
{
	struct policy_subject s;
	uintptr_t bad = 0;

	(void)arg;
	for (unsigned i = 0; i < LOOKUPS; i++) {
		if (policy_subject_lookup(0, 0, &s) != 0 || strcmp(s.user, "root") != 0 ||
		    s.gids[0] != 0)
			bad++;
		if (policy_subject_lookup(3999999998u, 7, &s) != 0 || s.user[0] || s.ngids != 1)
			bad++;
	}
	return (void *)bad;
}

static void test_subject_threads(void **state)
{
	pthread_t th[LOOKUP_THREADS];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(th); i++)
		assert_int_equal(pthread_create(&th[i], NULL, lookup_thread, NULL), 0);
	for (size_t i = 0; i < ARRAY_SIZE(th); i++) {
		void *bad;

		assert_int_equal(pthread_join(th[i], &bad), 0);
		assert_int_equal((uintptr_t)bad, 0);
	}
}

int main(void)
{
	const char *env = getenv("ENCLAVE_TEST_SEED");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide_matches_reference),
		cmocka_unit_test(test_decide_window_boundaries),
		cmocka_unit_test(test_decide_reasons),
		cmocka_unit_test(test_decide_ngids_clamped),
		cmocka_unit_test(test_reason_words),
		cmocka_unit_test(test_evaluate_matches_reference),
		cmocka_unit_test(test_evaluate_cases),
		cmocka_unit_test(test_duo_parse),
		cmocka_unit_test(test_purpose_exclusion_table),
		cmocka_unit_test(test_json_new_records),
		cmocka_unit_test(test_json_known_documents),
		cmocka_unit_test(test_json_round_trips),
		cmocka_unit_test(test_json_grant_rejections),
		cmocka_unit_test(test_json_grant_accepts_edges),
		cmocka_unit_test(test_json_revocation_rejections),
		cmocka_unit_test(test_validate_structs),
		cmocka_unit_test(test_time_parse_accepts),
		cmocka_unit_test(test_time_parse_rejects),
		cmocka_unit_test(test_time_format_known),
		cmocka_unit_test(test_time_round_trip_every_day),
		cmocka_unit_test(test_subject_root),
		cmocka_unit_test(test_subject_unknown_uid),
		cmocka_unit_test(test_subject_threads),
	};

	if (env && *env) {
		char *end;

		errno = 0;
		seed = strtoull(env, &end, 0);
		if (errno || *end) {
			fprintf(stderr, "ENCLAVE_TEST_SEED: not a number\n");
			return 2;
		}
	}
	printf("test_policy: seed %" PRIu64 " (ENCLAVE_TEST_SEED to replay)\n", seed);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
