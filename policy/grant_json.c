/* grant_json: the JSON form of grants and revocations (docs/POLICY.md, "JSON forms").
 *
 * One table per record type lists its fields, their JSON types and where they live in the struct;
 * parsing, writing and the unknown-field check all walk that table, so the three cannot drift
 * apart. The JSON layer checks shape (presence, type, integer range, string length, no NUL);
 * policy_*_validate() then checks content, so a record is held to the same rules whether it
 * arrives as JSON or as a struct.
 */
#include "policy/policy.h"

#include <stdio.h>

#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"

enum field_type {
	F_U64,       /* uint64_t, a JSON integer 0 to INT64_MAX */
	F_U32,       /* uint32_t, a JSON integer 0 to UINT32_MAX */
	F_KIND,      /* uint32_t enum policy_principal_kind, "user" or "group" */
	F_STR,       /* char[size], a JSON string of at most size - 1 bytes, no NUL */
	F_TIME,      /* int64_t unix seconds, an RFC 3339 date-time string */
	F_DKIND,     /* uint32_t, a deny rule's kind: "user", "group" or "all" */
	F_CACHE,     /* uint32_t enum policy_cache, "direct" or "kernel" */
};

struct field {
	const char *key;        /* JSON key, and the name error details use */
	enum field_type type;
	size_t off;             /* offset in the struct */
	size_t size;            /* sizeof the member (F_STR: its capacity, NUL included) */
	/* May be absent when parsing (records written before the field existed): the member keeps
	 * the value the parser preset. Always written. */
	bool optional;
};

#define FIELD(st, member, type) \
	{ #member, type, offsetof(st, member), sizeof(((st *)0)->member), false }
#define FIELD_OPT(st, member, type) \
	{ #member, type, offsetof(st, member), sizeof(((st *)0)->member), true }

/* In the order they are written; the order of a document being parsed does not matter. */
static const struct field grant_fields[] = {
	FIELD(struct policy_grant, id, F_U64),
	FIELD(struct policy_grant, kind, F_KIND),
	FIELD(struct policy_grant, principal_id, F_U32),
	FIELD(struct policy_grant, principal, F_STR),
	FIELD(struct policy_grant, dataset_id, F_U64),
	FIELD(struct policy_grant, dataset, F_STR),
	FIELD(struct policy_grant, version, F_U32),
	FIELD(struct policy_grant, purpose, F_STR),
	FIELD(struct policy_grant, not_before, F_TIME),
	FIELD(struct policy_grant, expires, F_TIME),
	FIELD(struct policy_grant, granted_by_uid, F_U32),
	FIELD(struct policy_grant, granted_by, F_STR),
	FIELD(struct policy_grant, created, F_TIME),
	FIELD_OPT(struct policy_grant, approvals_required, F_U32),
	FIELD_OPT(struct policy_grant, purpose_code, F_STR),
	FIELD_OPT(struct policy_grant, consent_override, F_STR),
};

static const struct field approval_fields[] = {
	FIELD(struct policy_approval, grant_id, F_U64),
	FIELD(struct policy_approval, by_uid, F_U32),
	FIELD(struct policy_approval, by, F_STR),
	FIELD(struct policy_approval, at, F_TIME),
};

static const struct field deny_fields[] = {
	FIELD(struct policy_deny, id, F_U64),
	FIELD(struct policy_deny, kind, F_DKIND),
	FIELD(struct policy_deny, principal_id, F_U32),
	FIELD(struct policy_deny, principal, F_STR),
	FIELD(struct policy_deny, dataset_id, F_U64),
	FIELD(struct policy_deny, dataset, F_STR),
	FIELD(struct policy_deny, reason, F_STR),
	FIELD(struct policy_deny, by_uid, F_U32),
	FIELD(struct policy_deny, by, F_STR),
	FIELD(struct policy_deny, created, F_TIME),
};

static const struct field deny_removal_fields[] = {
	FIELD(struct policy_deny_removal, deny_id, F_U64),
	FIELD(struct policy_deny_removal, by_uid, F_U32),
	FIELD(struct policy_deny_removal, by, F_STR),
	FIELD(struct policy_deny_removal, at, F_TIME),
	/* Absent in removals written before they needed a reason and approvals. */
	FIELD_OPT(struct policy_deny_removal, reason, F_STR),
	FIELD_OPT(struct policy_deny_removal, approvals_required, F_U32),
};

/* "duo" (an array of code strings) is handled apart from the table: see dataset_*_json. */
static const struct field dataset_fields[] = {
	FIELD(struct policy_dataset, dataset_id, F_U64),
	FIELD(struct policy_dataset, dataset, F_STR),
	FIELD(struct policy_dataset, controller, F_STR),
	FIELD(struct policy_dataset, cache, F_CACHE),
	FIELD(struct policy_dataset, updated_by_uid, F_U32),
	FIELD(struct policy_dataset, updated_by, F_STR),
	FIELD(struct policy_dataset, updated, F_TIME),
	FIELD_OPT(struct policy_dataset, retain_until, F_U64),
};

static const struct field revocation_fields[] = {
	FIELD(struct policy_revocation, grant_id, F_U64),
	FIELD(struct policy_revocation, by_uid, F_U32),
	FIELD(struct policy_revocation, by, F_STR),
	FIELD(struct policy_revocation, at, F_TIME),
	FIELD(struct policy_revocation, reason, F_STR),
};

/* The longest time string looked at: "2026-11-21T09:00:00.123456789+05:30" is 35 bytes. */
#define TIME_JSON_MAX 40

/* An unknown key, made safe to print: at most 32 bytes, anything but printable ASCII as '?'. */
static void key_for_detail(const char *key, size_t len, char out[static 40])
{
	size_t n = MIN(len, (size_t)32);

	for (size_t i = 0; i < n; i++)
		out[i] = key[i] >= 0x20 && key[i] <= 0x7e ? key[i] : '?';
	memcpy(out + n, len > n ? "..." : "", len > n ? 4 : 1);
}

static bool known_key(const struct field *fields, size_t n, const char *key, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(fields[i].key) == len && memcmp(fields[i].key, key, len) == 0)
			return true;
	return false;
}

/* One field from j into the record at base. */
static int parse_field(const char *rec, const struct field *f, const json_t *v, uint8_t *base)
{
	void *dst = base + f->off;

	switch (f->type) {
	case F_U64: {
		json_int_t x;
		uint64_t u;

		if (!json_is_integer(v))
			return err_set(-EINVAL, "%s: \"%s\" must be an integer", rec, f->key);
		x = json_integer_value(v);
		if (x < 0)
			return err_set(-EINVAL, "%s: \"%s\" must not be negative", rec, f->key);
		u = (uint64_t)x;
		memcpy(dst, &u, sizeof(u));
		return 0;
	}
	case F_U32: {
		json_int_t x;
		uint32_t u;

		if (!json_is_integer(v))
			return err_set(-EINVAL, "%s: \"%s\" must be an integer", rec, f->key);
		x = json_integer_value(v);
		if (x < 0 || x > (json_int_t)UINT32_MAX)
			return err_set(-EINVAL, "%s: \"%s\" must be from 0 to %u", rec, f->key,
				       UINT32_MAX);
		u = (uint32_t)x;
		memcpy(dst, &u, sizeof(u));
		return 0;
	}
	case F_KIND: {
		const char *s = json_string_value(v);
		uint32_t k;

		if (!s)
			return err_set(-EINVAL, "%s: \"%s\" must be a string", rec, f->key);
		if (strcmp(s, "user") == 0 && json_string_length(v) == 4)
			k = POLICY_USER;
		else if (strcmp(s, "group") == 0 && json_string_length(v) == 5)
			k = POLICY_GROUP;
		else
			return err_set(-EINVAL, "%s: \"%s\" must be \"user\" or \"group\"", rec,
				       f->key);
		memcpy(dst, &k, sizeof(k));
		return 0;
	}
	case F_DKIND:
	case F_CACHE: {
		const char *s = json_string_value(v);
		size_t len = json_string_length(v);
		uint32_t k;

		if (!s)
			return err_set(-EINVAL, "%s: \"%s\" must be a string", rec, f->key);
		if (f->type == F_DKIND && len == 4 && strcmp(s, "user") == 0)
			k = POLICY_USER;
		else if (f->type == F_DKIND && len == 5 && strcmp(s, "group") == 0)
			k = POLICY_GROUP;
		else if (f->type == F_DKIND && len == 3 && strcmp(s, "all") == 0)
			k = POLICY_EVERYONE;
		else if (f->type == F_CACHE && len == 6 && strcmp(s, "direct") == 0)
			k = POLICY_CACHE_DIRECT;
		else if (f->type == F_CACHE && len == 6 && strcmp(s, "kernel") == 0)
			k = POLICY_CACHE_KERNEL;
		else
			return err_set(-EINVAL, "%s: \"%s\" must be %s", rec, f->key,
				       f->type == F_DKIND ? "\"user\", \"group\" or \"all\""
							  : "\"direct\" or \"kernel\"");
		memcpy(dst, &k, sizeof(k));
		return 0;
	}
	case F_STR: {
		const char *s = json_string_value(v);
		size_t len = json_string_length(v);

		if (!s)
			return err_set(-EINVAL, "%s: \"%s\" must be a string", rec, f->key);
		if (len >= f->size)
			return err_set(-EINVAL, "%s: \"%s\" is longer than %zu bytes", rec, f->key,
				       f->size - 1);
		/* A JSON "\u0000" would cut the C string short without a word. */
		if (memchr(s, '\0', len))
			return err_set(-EINVAL, "%s: \"%s\" contains a NUL character", rec, f->key);
		memcpy(dst, s, len);
		((char *)dst)[len] = '\0';
		return 0;
	}
	case F_TIME: {
		const char *s = json_string_value(v);
		char why[ERR_DETAIL_MAX];
		int64_t t;
		int r;

		if (!s)
			return err_set(-EINVAL, "%s: \"%s\" must be a string (RFC 3339 time)", rec,
				       f->key);
		if (json_string_length(v) >= TIME_JSON_MAX || memchr(s, '\0', json_string_length(v)))
			return err_set(-EINVAL, "%s: \"%s\" is not an RFC 3339 time", rec, f->key);
		r = time_parse_rfc3339(s, &t);
		if (r < 0) {
			/* err_set() must not read the buffer it writes: copy the detail first. */
			snprintf(why, sizeof(why), "%s", err_detail());
			return err_set(r, "%s: \"%s\": %s", rec, f->key, why);
		}
		memcpy(dst, &t, sizeof(t));
		return 0;
	}
	}
	return err_set(-EINVAL, "%s: \"%s\": internal: unknown field type", rec, f->key);
}

/* Shape checks for a whole record: an object, no unknown key (but `extra`, handled by the
 * caller, may be NULL), every field present and typed. */
static int parse_fields(const char *rec, const struct field *fields, size_t n, const json_t *j,
			uint8_t *base, const char *extra)
{
	/* jansson's object iterator takes a non-const object; iterating does not modify it. */
	json_t *obj = (json_t *)j;
	int r;

	if (!json_is_object(j))
		return err_set(-EINVAL, "%s: not a JSON object", rec);
	for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
		const char *key = json_object_iter_key(it);
		size_t len = json_object_iter_key_len(it);
		char shown[40];

		if (extra && strlen(extra) == len && memcmp(extra, key, len) == 0)
			continue;
		if (!known_key(fields, n, key, len)) {
			key_for_detail(key, len, shown);
			return err_set(-EINVAL, "%s: unknown field \"%s\"", rec, shown);
		}
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *v = json_object_get(j, fields[i].key);

		if (!v && fields[i].optional)
			continue;
		if (!v)
			return err_set(-EINVAL, "%s: \"%s\" is missing", rec, fields[i].key);
		r = parse_field(rec, &fields[i], v, base);
		if (r < 0)
			return r;
	}
	return 0;
}

static json_t *field_to_json(const struct field *f, const uint8_t *base)
{
	const void *src = base + f->off;

	switch (f->type) {
	case F_U64: {
		uint64_t u;

		memcpy(&u, src, sizeof(u));
		/* Validated: at most INT64_MAX. */
		return json_integer((json_int_t)u);
	}
	case F_U32: {
		uint32_t u;

		memcpy(&u, src, sizeof(u));
		return json_integer(u);
	}
	case F_KIND: {
		uint32_t k;

		memcpy(&k, src, sizeof(k));
		return json_string(k == POLICY_USER ? "user" : "group");
	}
	case F_DKIND: {
		uint32_t k;

		memcpy(&k, src, sizeof(k));
		return json_string(k == POLICY_USER ? "user" : k == POLICY_GROUP ? "group" : "all");
	}
	case F_CACHE: {
		uint32_t k;

		memcpy(&k, src, sizeof(k));
		return json_string(k == POLICY_CACHE_KERNEL ? "kernel" : "direct");
	}
	case F_STR:
		/* Validated: NUL-terminated within the field, valid UTF-8. */
		return json_stringn(src, strnlen(src, f->size));
	case F_TIME: {
		char text[TIME_TEXT_MAX];
		int64_t t;

		memcpy(&t, src, sizeof(t));
		time_format(t, text);
		return json_string(text);
	}
	}
	return NULL;
}

static json_t *fields_to_json(const char *rec, const struct field *fields, size_t n,
			      const uint8_t *base)
{
	json_t *obj = json_object();

	if (!obj)
		goto out_nomem;
	for (size_t i = 0; i < n; i++) {
		/* set_new takes the value's reference, and drops it on failure. */
		if (json_object_set_new(obj, fields[i].key, field_to_json(&fields[i], base)) < 0)
			goto out_free_obj;
	}
	return obj;

out_free_obj:
	json_decref(obj);
out_nomem:
	err_set(-ENOMEM, "%s: out of memory writing JSON", rec);
	return NULL;
}

json_t *policy_grant_to_json(const struct policy_grant *g)
{
	if (policy_grant_validate(g) < 0)
		return NULL;
	return fields_to_json("grant", grant_fields, ARRAY_SIZE(grant_fields), (const uint8_t *)g);
}

json_t *policy_revocation_to_json(const struct policy_revocation *r)
{
	if (policy_revocation_validate(r) < 0)
		return NULL;
	return fields_to_json("revocation", revocation_fields, ARRAY_SIZE(revocation_fields),
			      (const uint8_t *)r);
}

int policy_grant_from_json(const json_t *j, struct policy_grant *ret_grant)
{
	/* Zeroed, so revoked_at is 0 and the bytes after each string's NUL are too. A record
	 * written before purposes had codes is general research needing no approval. */
	struct policy_grant g = { .purpose_code = "general" };
	int r;

	r = parse_fields("grant", grant_fields, ARRAY_SIZE(grant_fields), j, (uint8_t *)&g, NULL);
	if (r < 0)
		return r;
	r = policy_grant_validate(&g);
	if (r < 0)
		return r;
	*ret_grant = g;
	return 0;
}

int policy_revocation_from_json(const json_t *j, struct policy_revocation *ret_rev)
{
	struct policy_revocation rv = { 0 };
	int r;

	r = parse_fields("revocation", revocation_fields, ARRAY_SIZE(revocation_fields), j,
			 (uint8_t *)&rv, NULL);
	if (r < 0)
		return r;
	r = policy_revocation_validate(&rv);
	if (r < 0)
		return r;
	*ret_rev = rv;
	return 0;
}

json_t *policy_approval_to_json(const struct policy_approval *a)
{
	if (policy_approval_validate(a) < 0)
		return NULL;
	return fields_to_json("approval", approval_fields, ARRAY_SIZE(approval_fields),
			      (const uint8_t *)a);
}

json_t *policy_deny_to_json(const struct policy_deny *d)
{
	if (policy_deny_validate(d) < 0)
		return NULL;
	return fields_to_json("deny", deny_fields, ARRAY_SIZE(deny_fields), (const uint8_t *)d);
}

json_t *policy_deny_removal_to_json(const struct policy_deny_removal *x)
{
	if (policy_deny_removal_validate(x) < 0)
		return NULL;
	return fields_to_json("deny removal", deny_removal_fields, ARRAY_SIZE(deny_removal_fields),
			      (const uint8_t *)x);
}

json_t *policy_dataset_to_json(const struct policy_dataset *p)
{
	json_t *obj, *arr;

	if (policy_dataset_validate(p) < 0)
		return NULL;
	obj = fields_to_json("dataset policy", dataset_fields, ARRAY_SIZE(dataset_fields),
			     (const uint8_t *)p);
	arr = json_array();
	if (!obj || !arr)
		goto out_nomem;
	for (size_t i = 0; i < p->nduo; i++) {
		char text[POLICY_DUO_ARG_MAX + 16];

		policy_duo_format(&p->duo[i], text);
		if (json_array_append_new(arr, json_string(text)) < 0)
			goto out_nomem;
	}
	if (json_object_set_new(obj, "duo", arr) < 0) {
		arr = NULL;
		goto out_nomem;
	}
	return obj;

out_nomem:
	json_decref(arr);
	json_decref(obj);
	err_set(-ENOMEM, "dataset policy: out of memory writing JSON");
	return NULL;
}

int policy_approval_from_json(const json_t *j, struct policy_approval *ret_approval)
{
	struct policy_approval a = { 0 };
	int r;

	r = parse_fields("approval", approval_fields, ARRAY_SIZE(approval_fields), j,
			 (uint8_t *)&a, NULL);
	if (r < 0 || (r = policy_approval_validate(&a)) < 0)
		return r;
	*ret_approval = a;
	return 0;
}

int policy_deny_from_json(const json_t *j, struct policy_deny *ret_deny)
{
	struct policy_deny d = { 0 };
	int r;

	r = parse_fields("deny", deny_fields, ARRAY_SIZE(deny_fields), j, (uint8_t *)&d, NULL);
	if (r < 0 || (r = policy_deny_validate(&d)) < 0)
		return r;
	*ret_deny = d;
	return 0;
}

int policy_deny_removal_from_json(const json_t *j, struct policy_deny_removal *ret_removal)
{
	struct policy_deny_removal x = { 0 };
	int r;

	r = parse_fields("deny removal", deny_removal_fields, ARRAY_SIZE(deny_removal_fields), j,
			 (uint8_t *)&x, NULL);
	if (r < 0 || (r = policy_deny_removal_validate(&x)) < 0)
		return r;
	*ret_removal = x;
	return 0;
}

int policy_dataset_from_json(const json_t *j, struct policy_dataset *ret_policy)
{
	/* ~3 KiB: fine on a daemon thread's stack, as the grants are. */
	struct policy_dataset p = { 0 };
	const json_t *arr, *v;
	size_t i;
	int r;

	r = parse_fields("dataset policy", dataset_fields, ARRAY_SIZE(dataset_fields), j,
			 (uint8_t *)&p, "duo");
	if (r < 0)
		return r;
	arr = json_object_get(j, "duo");
	if (!arr)
		return err_set(-EINVAL, "dataset policy: \"duo\" is missing");
	if (!json_is_array(arr))
		return err_set(-EINVAL, "dataset policy: \"duo\" must be an array of strings");
	if (json_array_size(arr) > POLICY_DUO_MAX)
		return err_set(-EINVAL, "dataset policy: \"duo\" has more than %d codes",
			       POLICY_DUO_MAX);
	json_array_foreach(arr, i, v) {
		const char *s = json_string_value(v);

		if (!s || memchr(s, '\0', json_string_length(v)))
			return err_set(-EINVAL, "dataset policy: \"duo\" must be an array of "
				       "strings");
		r = policy_duo_parse_one(s, &p.duo[p.nduo]);
		if (r < 0) {
			char why[ERR_DETAIL_MAX];

			snprintf(why, sizeof(why), "%s", err_detail());
			return err_set(r, "dataset policy: \"duo\": %s", why);
		}
		p.nduo++;
	}
	r = policy_dataset_validate(&p);
	if (r < 0)
		return r;
	*ret_policy = p;
	return 0;
}
