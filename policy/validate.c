/* validate: the field rules of grants and revocations (docs/POLICY.md, "Fields").
 *
 * Every record is checked here, whether it came from a steward's command line, the control socket
 * or the index on disk, before it is stored, sent or decided on. Error details name the field by
 * its JSON key and say what is wrong, never echo the value (it may hold anything).
 */
#include "policy/policy.h"

#include <inttypes.h>
#include <stdio.h>

#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"

/* Largest id: JSON integers (jansson's json_int_t) are signed 64-bit. */
#define ID_MAX ((uint64_t)INT64_MAX)
/* (uid_t)-1 / (gid_t)-1 mean "unchanged" to chown() and setresuid(); no user or group has it. */
#define ID_NONE UINT32_MAX

bool policy_name_valid(const char *name)
{
	size_t n = name ? strnlen(name, POLICY_NAME_MAX + 1) : 0;

	if (n == 0 || n > POLICY_NAME_MAX || name[0] == ' ' || name[n - 1] == ' ')
		return false;
	for (size_t i = 0; i < n; i++)
		if (name[i] < 0x20 || name[i] > 0x7e)
			return false;
	return true;
}

/* store_dataset_name_valid()'s rule, restated: policy sits beside store, not on top of it, and
 * only needs the rule, not the store. Keep the two in step (POLICY_DATASET_MAX is
 * STORE_DATASET_NAME_MAX). */
static bool dataset_name_valid(const char *name, size_t n)
{
	if (n == 0 || n > POLICY_DATASET_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Decode the UTF-8 sequence at s[0..n) (n >= 1). Returns its length, or 0 if it is not valid
 * UTF-8: a stray continuation byte, a truncated sequence, an overlong form, a surrogate
 * (U+D800-U+DFFF) or a code point past U+10FFFF. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *ret_cp)
{
	static const uint32_t min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80) {
		*ret_cp = s[0];
		return 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret_cp = cp;
	return len;
}

/* Characters free text must not hold, because of what they do to a log line or a terminal:
 * C0 and C1 controls and DEL (line breaks, escape sequences), the Unicode line and paragraph
 * separators, and the bidirectional embeddings, overrides and isolates, which can make a line
 * display in another order than the one it is stored in. */
static const char *text_forbidden(uint32_t cp)
{
	if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
		return "a control character";
	if (cp == 0x2028 || cp == 0x2029)
		return "a line or paragraph separator";
	if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
		return "a bidirectional formatting character";
	return NULL;
}

/* Free text in a char[max + 1] field. */
static int check_text(const char *rec, const char *field, const char *s, size_t max,
		      bool may_be_empty)
{
	size_t n = strnlen(s, max + 1);

	if (n > max)
		return err_set(-EINVAL, "%s: \"%s\" is longer than %zu bytes", rec, field, max);
	if (n == 0 && !may_be_empty)
		return err_set(-EINVAL, "%s: \"%s\" is empty", rec, field);
	for (size_t i = 0; i < n;) {
		const char *bad;
		uint32_t cp;
		size_t len = utf8_decode((const uint8_t *)s + i, n - i, &cp);

		if (len == 0)
			return err_set(-EINVAL, "%s: \"%s\" is not valid UTF-8 (byte %zu)", rec, field,
				       i);
		bad = text_forbidden(cp);
		if (bad)
			return err_set(-EINVAL, "%s: \"%s\" contains %s (U+%04" PRIX32 ", byte %zu)",
				       rec, field, bad, cp, i);
		i += len;
	}
	return 0;
}

static int check_name(const char *rec, const char *field, const char *s)
{
	size_t n = strnlen(s, POLICY_NAME_MAX + 1);

	if (n > POLICY_NAME_MAX)
		return err_set(-EINVAL, "%s: \"%s\" is longer than %d bytes", rec, field,
			       POLICY_NAME_MAX);
	if (!policy_name_valid(s))
		return err_set(-EINVAL, "%s: \"%s\" is not a name (1 to %d printable ASCII "
					"characters, no leading or trailing space)",
			       rec, field, POLICY_NAME_MAX);
	return 0;
}

static int check_id(const char *rec, const char *field, uint64_t id)
{
	if (id == 0 || id > ID_MAX)
		return err_set(-EINVAL, "%s: \"%s\" must be from 1 to %" PRIu64, rec, field, ID_MAX);
	return 0;
}

static int check_uid(const char *rec, const char *field, uint32_t id)
{
	if (id == ID_NONE)
		return err_set(-EINVAL, "%s: \"%s\" must not be %" PRIu32 " ((uid_t)-1)", rec, field,
			       id);
	return 0;
}

/* A time the JSON form can hold; min is TIME_RFC3339_MIN, or 1 for times that must be after the
 * epoch (0 would read as "unset"). */
static int check_time(const char *rec, const char *field, int64_t t, int64_t min)
{
	if (t < min || t > TIME_RFC3339_MAX)
		return err_set(-EINVAL, "%s: \"%s\" must be within %s to 9999-12-31T23:59:59Z", rec,
			       field, min > 0 ? "1970-01-01T00:00:01Z" : "0000-01-01T00:00:00Z");
	return 0;
}

static int check_kind(uint32_t kind)
{
	if (kind != POLICY_USER && kind != POLICY_GROUP)
		return err_set(-EINVAL, "grant: \"kind\" must be user or group");
	return 0;
}

static int check_dataset(const char *s)
{
	if (!dataset_name_valid(s, strnlen(s, POLICY_DATASET_MAX + 1)))
		return err_set(-EINVAL, "grant: \"dataset\" is not a dataset name (1 to %d of "
					"letters, digits, '.', '_', '-'; not starting with '.' or "
					"'-')",
			       POLICY_DATASET_MAX);
	return 0;
}

static int check_window(int64_t not_before, int64_t expires)
{
	if (not_before >= expires)
		return err_set(-EINVAL, "grant: \"expires\" must be later than \"not_before\"");
	return 0;
}

static int check_approvals(uint32_t n)
{
	if (n > POLICY_APPROVALS_MAX)
		return err_set(-EINVAL, "grant: \"approvals_required\" must be from 0 to %d",
			       POLICY_APPROVALS_MAX);
	return 0;
}

static int check_purpose_code(const char *s)
{
	struct policy_purpose p;
	char why[ERR_DETAIL_MAX];

	if (strnlen(s, POLICY_PURPOSE_CODE_MAX + 1) > POLICY_PURPOSE_CODE_MAX)
		return err_set(-EINVAL, "grant: \"purpose_code\" is longer than %d bytes",
			       POLICY_PURPOSE_CODE_MAX);
	if (policy_purpose_parse(s, &p) < 0) {
		snprintf(why, sizeof(why), "%s", err_detail());
		return err_set(-EINVAL, "grant: \"purpose_code\": %s", why);
	}
	return 0;
}

/* Each check_*() returns 0, or -EINVAL with the detail naming its field; they run in field order
 * and the first failure stops the chain, so the detail names the first bad field. */
int policy_grant_validate(const struct policy_grant *g)
{
	static const char rec[] = "grant";

	if (!g)
		return err_set(-EINVAL, "grant: none given");
	/* Every version value is meaningful (0 is POLICY_ALL_VERSIONS): none is checked. */
	if (check_id(rec, "id", g->id) < 0 || check_kind(g->kind) < 0 ||
	    check_uid(rec, "principal_id", g->principal_id) < 0 ||
	    check_name(rec, "principal", g->principal) < 0 ||
	    check_id(rec, "dataset_id", g->dataset_id) < 0 || check_dataset(g->dataset) < 0 ||
	    check_text(rec, "purpose", g->purpose, POLICY_PURPOSE_MAX, false) < 0 ||
	    check_time(rec, "not_before", g->not_before, TIME_RFC3339_MIN) < 0 ||
	    check_time(rec, "expires", g->expires, TIME_RFC3339_MIN) < 0 ||
	    check_window(g->not_before, g->expires) < 0 ||
	    check_uid(rec, "granted_by_uid", g->granted_by_uid) < 0 ||
	    check_name(rec, "granted_by", g->granted_by) < 0 ||
	    check_time(rec, "created", g->created, 1) < 0 ||
	    check_approvals(g->approvals_required) < 0 || check_purpose_code(g->purpose_code) < 0 ||
	    check_text(rec, "consent_override", g->consent_override, POLICY_REASON_MAX, true) < 0 ||
	    (g->revoked_at != 0 && check_time(rec, "revoked_at", g->revoked_at, 1) < 0))
		return -EINVAL;
	return 0;
}

int policy_revocation_validate(const struct policy_revocation *rv)
{
	static const char rec[] = "revocation";

	if (!rv)
		return err_set(-EINVAL, "revocation: none given");
	if (check_id(rec, "grant_id", rv->grant_id) < 0 || check_uid(rec, "by_uid", rv->by_uid) < 0 ||
	    check_name(rec, "by", rv->by) < 0 || check_time(rec, "at", rv->at, 1) < 0 ||
	    check_text(rec, "reason", rv->reason, POLICY_REASON_MAX, true) < 0)
		return -EINVAL;
	return 0;
}

int policy_approval_validate(const struct policy_approval *a)
{
	static const char rec[] = "approval";

	if (!a)
		return err_set(-EINVAL, "approval: none given");
	if (check_id(rec, "grant_id", a->grant_id) < 0 || check_uid(rec, "by_uid", a->by_uid) < 0 ||
	    check_name(rec, "by", a->by) < 0 || check_time(rec, "at", a->at, 1) < 0)
		return -EINVAL;
	return 0;
}

int policy_deny_validate(const struct policy_deny *d)
{
	static const char rec[] = "deny";

	if (!d)
		return err_set(-EINVAL, "deny: none given");
	if (check_id(rec, "id", d->id) < 0)
		return -EINVAL;
	switch (d->kind) {
	case POLICY_USER:
	case POLICY_GROUP:
		if (check_uid(rec, "principal_id", d->principal_id) < 0 ||
		    check_name(rec, "principal", d->principal) < 0)
			return -EINVAL;
		break;
	case POLICY_EVERYONE:
		if (d->principal_id != 0 || d->principal[0])
			return err_set(-EINVAL, "deny: a rule for everyone has \"principal_id\" 0 "
				       "and \"principal\" \"\"");
		break;
	default:
		return err_set(-EINVAL, "deny: \"kind\" must be user, group or all");
	}
	if (d->dataset_id == 0) {
		if (d->dataset[0])
			return err_set(-EINVAL, "deny: a rule for every dataset has \"dataset\" \"\"");
	} else if (check_id(rec, "dataset_id", d->dataset_id) < 0 ||
		   !dataset_name_valid(d->dataset, strnlen(d->dataset, POLICY_DATASET_MAX + 1))) {
		return err_set(-EINVAL, "deny: \"dataset\" is not a dataset name");
	}
	if (check_text(rec, "reason", d->reason, POLICY_REASON_MAX, false) < 0 ||
	    check_uid(rec, "by_uid", d->by_uid) < 0 || check_name(rec, "by", d->by) < 0 ||
	    check_time(rec, "created", d->created, 1) < 0 ||
	    (d->removed_at != 0 && check_time(rec, "removed_at", d->removed_at, 1) < 0))
		return -EINVAL;
	return 0;
}

int policy_deny_removal_validate(const struct policy_deny_removal *x)
{
	static const char rec[] = "deny removal";

	if (!x)
		return err_set(-EINVAL, "deny removal: none given");
	if (check_id(rec, "deny_id", x->deny_id) < 0 || check_uid(rec, "by_uid", x->by_uid) < 0 ||
	    check_name(rec, "by", x->by) < 0 || check_time(rec, "at", x->at, 1) < 0 ||
	    check_text(rec, "reason", x->reason, POLICY_REASON_MAX, true) < 0)
		return -EINVAL;
	if (x->approvals_required > POLICY_APPROVALS_MAX)
		return err_set(-EINVAL, "deny removal: \"approvals_required\" must be from 0 to %d",
			       POLICY_APPROVALS_MAX);
	return 0;
}

int policy_dataset_validate(const struct policy_dataset *p)
{
	static const char rec[] = "dataset policy";

	if (!p)
		return err_set(-EINVAL, "dataset policy: none given");
	if (check_id(rec, "dataset_id", p->dataset_id) < 0)
		return -EINVAL;
	if (!dataset_name_valid(p->dataset, strnlen(p->dataset, POLICY_DATASET_MAX + 1)))
		return err_set(-EINVAL, "dataset policy: \"dataset\" is not a dataset name");
	if (p->nduo > POLICY_DUO_MAX)
		return err_set(-EINVAL, "dataset policy: \"duo\" has more than %d codes",
			       POLICY_DUO_MAX);
	for (size_t i = 0; i < p->nduo; i++) {
		char text[POLICY_DUO_ARG_MAX + 16];
		struct policy_duo back;

		/* A code is valid when its text form parses back to it. */
		if (!policy_duo_name(p->duo[i].code) ||
		    strnlen(p->duo[i].arg, POLICY_DUO_ARG_MAX + 1) > POLICY_DUO_ARG_MAX)
			return err_set(-EINVAL, "dataset policy: \"duo\" holds an unknown code");
		policy_duo_format(&p->duo[i], text);
		if (policy_duo_parse_one(text, &back) < 0 || back.code != p->duo[i].code ||
		    strcmp(back.arg, p->duo[i].arg) != 0)
			return err_set(-EINVAL, "dataset policy: \"duo\": %s is not a valid code",
				       policy_duo_name(p->duo[i].code));
		for (size_t k = 0; k < i; k++)
			if (p->duo[k].code == p->duo[i].code)
				return err_set(-EINVAL, "dataset policy: \"duo\": %s given twice",
					       policy_duo_name(p->duo[i].code));
	}
	if (check_text(rec, "controller", p->controller, POLICY_CONTROLLER_MAX, true) < 0)
		return -EINVAL;
	if (p->cache != POLICY_CACHE_DIRECT && p->cache != POLICY_CACHE_KERNEL)
		return err_set(-EINVAL, "dataset policy: \"cache\" must be kernel or direct");
	if (check_uid(rec, "updated_by_uid", p->updated_by_uid) < 0 ||
	    check_name(rec, "updated_by", p->updated_by) < 0 ||
	    check_time(rec, "updated", p->updated, 1) < 0)
		return -EINVAL;
	return 0;
}
