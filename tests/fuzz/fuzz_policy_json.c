/* fuzz_policy_json: policy_grant_from_json() and policy_revocation_from_json() (policy/grant_json.c,
 * policy/validate.c) on whatever JSON the input bytes make; and the parsers of approvals, deny
 * rules, their removals and dataset policies (consent codes: policy/duo.c), which must refuse
 * cleanly or accept something that round-trips.
 *
 * Grants and revocations come from stewards over the control socket and back from the index on
 * disk, so both parsers read outside input. The bytes go through json_loadb (with JSON_ALLOW_NUL,
 * so that strings holding U+0000 reach the parsers too, and JSON_DECODE_ANY, so that non-objects
 * do), then to both parsers. Besides "no crash, leak or UB" each checks its contract:
 *  - a refusal is -EINVAL with an err_detail(), and leaves the output untouched (house rule 4);
 *  - an accepted record validates, has revoked_at 0, and its names and text hold no control
 *    bytes (checked here byte by byte, apart from validate.c);
 *  - round trip: to_json of it parses back to an identical struct, also through its text, and
 *    writing that again gives the same text (the written form is a fixed point);
 *  - an accepted grant decides as its own fields say: its principal is allowed from not_before
 *    to the second before expires, not a second earlier or later, and never once revoked.
 */
#include <errno.h>
#include <string.h>

#include "common/err.h"
#include "policy/policy.h"
#include "fuzz.h"

/* Outputs are filled with this before a parse, to see whether a failed parse wrote them. */
#define POISON 0xa5
#define LOAD_FLAGS (JSON_ALLOW_NUL | JSON_DECODE_ANY)
#define DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

static bool all_poison(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i] != POISON)
			return false;
	return true;
}

/* NUL-terminated within its field and free of C0 controls and DEL. */
static bool clean_field(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);

	if (n == cap)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)s[i] < 0x20 || (uint8_t)s[i] == 0x7f)
			return false;
	return true;
}

/* Field by field: struct padding and the bytes after each string's NUL are not the contract. */
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

/* Serialize j canonically; consumes j. */
static char *dump_and_free(json_t *j)
{
	char *text;

	FUZZ_CHECK(j != NULL);
	text = json_dumps(j, DUMP_FLAGS);
	FUZZ_CHECK(text != NULL);
	json_decref(j);
	return text;
}

static json_t *reload(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, LOAD_FLAGS, &e);

	FUZZ_CHECK(j != NULL);
	return j;
}

/* The decision properties of one accepted grant (policy.h: valid while not revoked and
 * not_before <= now < expires). */
static void check_decisions(const struct policy_grant *parsed)
{
	struct policy_subject who = { .ngids = 1 };
	struct policy_grant approved = *parsed, r;
	const struct policy_grant *g = &approved;
	struct policy_decision d;

	/* Pending until approved: with too few approvals, its window gives pending_approval. */
	if (parsed->approvals_required) {
		who.uid = parsed->kind == POLICY_USER ? parsed->principal_id : 0;
		who.gids[0] = parsed->principal_id;
		d = policy_decide(&who, parsed->dataset_id, parsed->version, parsed->not_before,
				  parsed, 1);
		FUZZ_CHECK(d.reason == POLICY_DENY_PENDING_APPROVAL);
	}
	approved.approvals = approved.approvals_required;
	r = approved;

	if (g->kind == POLICY_USER) {
		who.uid = g->principal_id;
		who.gids[0] = g->principal_id ^ 1;     /* a gid that is not the principal */
	} else {
		who.uid = g->principal_id ^ 1;         /* a uid that is not the principal */
		who.gids[0] = g->principal_id;
	}
	d = policy_decide(&who, g->dataset_id, g->version, g->not_before, g, 1);
	FUZZ_CHECK(d.reason == POLICY_ALLOW && d.grant_id == g->id);
	d = policy_decide(&who, g->dataset_id, g->version, g->expires - 1, g, 1);
	FUZZ_CHECK(d.reason == POLICY_ALLOW && d.grant_id == g->id);
	d = policy_decide(&who, g->dataset_id, POLICY_ALL_VERSIONS, g->not_before, g, 1);
	FUZZ_CHECK(d.reason == POLICY_ALLOW && d.grant_id == g->id);
	d = policy_decide(&who, g->dataset_id, g->version, g->expires, g, 1);
	FUZZ_CHECK(d.reason == POLICY_DENY_EXPIRED && d.grant_id == g->id);
	/* Validated times are far from INT64_MIN: no overflow. */
	d = policy_decide(&who, g->dataset_id, g->version, g->not_before - 1, g, 1);
	FUZZ_CHECK(d.reason == POLICY_DENY_NOT_YET_VALID && d.grant_id == g->id);
	/* Validated ids are at most INT64_MAX: + 1 does not wrap to 0. */
	d = policy_decide(&who, g->dataset_id + 1, g->version, g->not_before, g, 1);
	FUZZ_CHECK(d.reason == POLICY_DENY_NO_GRANT && d.grant_id == 0);

	r.revoked_at = g->created;
	d = policy_decide(&who, g->dataset_id, g->version, g->not_before, &r, 1);
	FUZZ_CHECK(d.reason == POLICY_DENY_REVOKED && d.grant_id == g->id);
}

static void fuzz_grant(const json_t *j)
{
	struct policy_grant g, again;
	char *text, *text2;
	json_t *back;
	int r;

	memset(&g, POISON, sizeof(g));
	err_clear();
	r = policy_grant_from_json(j, &g);
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL);
		FUZZ_CHECK(err_detail()[0] != '\0');
		FUZZ_CHECK(all_poison(&g, sizeof(g)));
		return;
	}
	FUZZ_CHECK(r == 0);
	FUZZ_CHECK(policy_grant_validate(&g) == 0);
	FUZZ_CHECK(g.revoked_at == 0);
	FUZZ_CHECK(g.id != 0 && g.dataset_id != 0 && g.not_before < g.expires);
	FUZZ_CHECK(g.kind == POLICY_USER || g.kind == POLICY_GROUP);
	FUZZ_CHECK(clean_field(g.principal, sizeof(g.principal)) && g.principal[0]);
	FUZZ_CHECK(clean_field(g.dataset, sizeof(g.dataset)) && g.dataset[0]);
	FUZZ_CHECK(clean_field(g.purpose, sizeof(g.purpose)) && g.purpose[0]);
	FUZZ_CHECK(clean_field(g.granted_by, sizeof(g.granted_by)) && g.granted_by[0]);

	/* In memory. */
	back = policy_grant_to_json(&g);
	FUZZ_CHECK(back != NULL);
	memset(&again, POISON, sizeof(again));
	FUZZ_CHECK(policy_grant_from_json(back, &again) == 0);
	FUZZ_CHECK(grant_eq(&g, &again));
	/* Through text, and the text is a fixed point. */
	text = dump_and_free(back);
	back = reload(text);
	memset(&again, POISON, sizeof(again));
	FUZZ_CHECK(policy_grant_from_json(back, &again) == 0);
	FUZZ_CHECK(grant_eq(&g, &again));
	json_decref(back);
	text2 = dump_and_free(policy_grant_to_json(&again));
	FUZZ_CHECK(strcmp(text, text2) == 0);
	free(text);
	free(text2);

	check_decisions(&g);
}

static void fuzz_revocation(const json_t *j)
{
	struct policy_revocation rv, again;
	char *text, *text2;
	json_t *back;
	int r;

	memset(&rv, POISON, sizeof(rv));
	err_clear();
	r = policy_revocation_from_json(j, &rv);
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL);
		FUZZ_CHECK(err_detail()[0] != '\0');
		FUZZ_CHECK(all_poison(&rv, sizeof(rv)));
		return;
	}
	FUZZ_CHECK(r == 0);
	FUZZ_CHECK(policy_revocation_validate(&rv) == 0);
	FUZZ_CHECK(rv.grant_id != 0 && rv.at > 0);
	FUZZ_CHECK(clean_field(rv.by, sizeof(rv.by)) && rv.by[0]);
	FUZZ_CHECK(clean_field(rv.reason, sizeof(rv.reason)));

	back = policy_revocation_to_json(&rv);
	FUZZ_CHECK(back != NULL);
	memset(&again, POISON, sizeof(again));
	FUZZ_CHECK(policy_revocation_from_json(back, &again) == 0);
	FUZZ_CHECK(revocation_eq(&rv, &again));
	text = dump_and_free(back);
	back = reload(text);
	memset(&again, POISON, sizeof(again));
	FUZZ_CHECK(policy_revocation_from_json(back, &again) == 0);
	FUZZ_CHECK(revocation_eq(&rv, &again));
	json_decref(back);
	text2 = dump_and_free(policy_revocation_to_json(&again));
	FUZZ_CHECK(strcmp(text, text2) == 0);
	free(text);
	free(text2);
}

/* A parser of one of the other record types: refuse with -EINVAL and the output untouched, or
 * accept something that writes and parses back. */
#define FUZZ_OTHER(type, from, to)                                                         \
	static void fuzz_##type(const json_t *j)                                           \
	{                                                                                  \
		struct type x, again;                                                      \
		json_t *back;                                                              \
		int r;                                                                     \
                                                                                           \
		memset(&x, POISON, sizeof(x));                                             \
		err_clear();                                                               \
		r = from(j, &x);                                                           \
		if (r < 0) {                                                               \
			FUZZ_CHECK(r == -EINVAL && err_detail()[0] != '\0');               \
			FUZZ_CHECK(all_poison(&x, sizeof(x)));                             \
			return;                                                            \
		}                                                                          \
		back = to(&x);                                                             \
		FUZZ_CHECK(back != NULL);                                                  \
		FUZZ_CHECK(from(back, &again) == 0);                                       \
		json_decref(back);                                                         \
	}

FUZZ_OTHER(policy_approval, policy_approval_from_json, policy_approval_to_json)
FUZZ_OTHER(policy_deny, policy_deny_from_json, policy_deny_to_json)
FUZZ_OTHER(policy_deny_removal, policy_deny_removal_from_json, policy_deny_removal_to_json)
FUZZ_OTHER(policy_dataset, policy_dataset_from_json, policy_dataset_to_json)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* Fixed hashing, so that a crash replays the same way. */
	json_object_seed(1);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t e;
	json_t *j = json_loadb((const char *)data, size, LOAD_FLAGS, &e);

	if (!j)
		return 0;
	fuzz_grant(j);
	fuzz_revocation(j);
	fuzz_policy_approval(j);
	fuzz_policy_deny(j);
	fuzz_policy_deny_removal(j);
	fuzz_policy_dataset(j);
	json_decref(j);
	return 0;
}
