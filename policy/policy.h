/* policy: who may open which dataset version, and why not.
 *
 * A grant gives one principal (a user or a group, by numeric id) read access to one dataset (all
 * its versions, or one) for a stated purpose, from not_before until expires. Grants are immutable
 * records; a revocation is a record of its own (who, when, why) that the caller folds into the
 * grant (revoked_at) before deciding. Everything not allowed by a valid grant is denied.
 *
 * policy_decide() is pure: no clock, no I/O, no locks; the caller passes `now` and the grants.
 * The subject helpers (policy_subject_lookup) are the one impure part: they ask NSS for a user's
 * name and groups.
 *
 * Contract: functions that act return 0 on success and -errno on failure; outputs are ret_*
 * parameters, last, untouched on failure; err_detail() (common/err.h) says what was wrong.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* Bounds on fields that come from stewards and from the index. */
#define POLICY_NAME_MAX 64          /* a user or group name */
#define POLICY_DATASET_MAX 128      /* as STORE_DATASET_NAME_MAX */
#define POLICY_PURPOSE_MAX 1024     /* free text, UTF-8, no control characters */
#define POLICY_REASON_MAX 1024      /* a revocation's reason, same rules */
#define POLICY_GROUPS_MAX 1024      /* groups considered per subject; more is an error */
#define POLICY_APPROVALS_MAX 8      /* approvals a store may require per grant (enclave.conf) */
#define POLICY_PURPOSE_CODE_MAX 256 /* a grant's purpose terms, "ai-training,ds:cancer" */
#define POLICY_CONTROLLER_MAX 256   /* a dataset's data controller, free text */
#define POLICY_DUO_MAX 32           /* consent codes per dataset */
#define POLICY_DUO_ARG_MAX 64       /* a code's argument: a disease or a date */
#define POLICY_DUO_TEXT_MAX (2 * 1024) /* a comma list of codes, as a steward types it */

/* A grant's version field: every version of the dataset, present and future. As the `version`
 * argument of policy_decide(): "is any version allowed?" (used to decide whether a dataset is
 * visible at all). */
#define POLICY_ALL_VERSIONS 0u

enum policy_principal_kind {
	POLICY_USER = 1,
	POLICY_GROUP = 2,
	POLICY_EVERYONE = 3,        /* deny rules only: every subject ("--all") */
};

struct policy_grant {
	uint64_t id;                              /* > 0, unique within a store, never reused */
	uint32_t kind;                            /* enum policy_principal_kind */
	uint32_t principal_id;                    /* uid or gid; what decisions match on */
	char principal[POLICY_NAME_MAX + 1];      /* the name when granted, for people to read */
	uint64_t dataset_id;                      /* store dataset id; what decisions match on */
	char dataset[POLICY_DATASET_MAX + 1];     /* its name, for people to read */
	uint32_t version;                         /* one version, or POLICY_ALL_VERSIONS */
	char purpose[POLICY_PURPOSE_MAX + 1];
	int64_t not_before;                       /* unix seconds; valid from this instant */
	int64_t expires;                          /* unix seconds; invalid from this instant on */
	uint32_t granted_by_uid;
	char granted_by[POLICY_NAME_MAX + 1];
	int64_t created;                          /* unix seconds */
	/* Distinct approvals (by stewards other than the requester and the grantee) needed before
	 * the grant is in force: the store's setting when it was requested, 0..POLICY_APPROVALS_MAX.
	 * Fixed in the record, so changing the setting later moves no existing grant. */
	uint32_t approvals_required;
	/* The purpose as terms the consent codes are checked against (policy_purpose_parse());
	 * "general" when the steward named none. */
	char purpose_code[POLICY_PURPOSE_CODE_MAX + 1];
	/* "" or why the steward overrode a consent code that excludes the purpose (NMDS only). */
	char consent_override[POLICY_REASON_MAX + 1];
	/* Folded in from the grant's approval records by the caller (not in JSON): how many
	 * distinct stewards approved it. Pending while approvals < approvals_required. */
	uint32_t approvals;
	/* Folded in from the grant's revocation record by the caller; 0: not revoked. Any other
	 * value revokes the grant at every `now`, before or after it: the time is for people. */
	int64_t revoked_at;                       /* unix seconds */
};

/* An approval of a pending grant by a steward: its own immutable record. */
struct policy_approval {
	uint64_t grant_id;
	uint32_t by_uid;                          /* never the requester nor the grantee */
	char by[POLICY_NAME_MAX + 1];
	int64_t at;                               /* unix seconds */
};

/* A deny rule: blocks a subject (or everyone) from a dataset (or every dataset), whatever the
 * grants say, until removed. Immutable; removal is its own record, folded into removed_at. */
struct policy_deny {
	uint64_t id;                              /* > 0; from the same counter as grant ids */
	uint32_t kind;                            /* POLICY_USER, POLICY_GROUP or POLICY_EVERYONE */
	uint32_t principal_id;                    /* uid or gid; 0 for POLICY_EVERYONE */
	char principal[POLICY_NAME_MAX + 1];      /* its name; "" for POLICY_EVERYONE */
	uint64_t dataset_id;                      /* 0: every dataset, present and future */
	char dataset[POLICY_DATASET_MAX + 1];     /* its name; "" for every dataset */
	char reason[POLICY_REASON_MAX + 1];       /* why; not empty */
	uint32_t by_uid;
	char by[POLICY_NAME_MAX + 1];
	int64_t created;                          /* unix seconds */
	int64_t removed_at;                       /* folded in (not in JSON); 0: in force */
};

/* The removal of a deny rule, as requested: in force at once when approvals_required is 0, else
 * once as many other stewards have approved it (struct policy_approval, grant_id holding the
 * rule's id). */
struct policy_deny_removal {
	uint64_t deny_id;
	uint32_t by_uid;
	char by[POLICY_NAME_MAX + 1];
	int64_t at;                               /* unix seconds, > 0 */
	/* Why (text, may be empty only in records written before reasons were required). */
	char reason[POLICY_REASON_MAX + 1];
	uint32_t approvals_required;              /* 0..POLICY_APPROVALS_MAX */
};

/* Data Use Ontology consent codes a dataset may carry (docs/POLICY.md lists what each
 * excludes). The values are stable: they are not stored (records hold the code's name). */
enum policy_duo_code {
	POLICY_DUO_GRU = 1,   /* DUO:0000042 general research use */
	POLICY_DUO_HMB,       /* DUO:0000006 health/medical/biomedical research */
	POLICY_DUO_DS,        /* DUO:0000007 disease-specific research; argument: the disease */
	POLICY_DUO_POA,       /* DUO:0000011 population origins or ancestry research only */
	POLICY_DUO_NPOA,      /* DUO:0000044 no population origins or ancestry research */
	POLICY_DUO_NMDS,      /* DUO:0000015 no general methods research */
	POLICY_DUO_GSO,       /* DUO:0000016 genetic studies only */
	POLICY_DUO_NCU,       /* DUO:0000046 non-commercial use only */
	POLICY_DUO_NPU,       /* DUO:0000045 not-for-profit organisation use only */
	POLICY_DUO_NPUNCU,    /* DUO:0000018 not-for-profit, non-commercial use only */
	POLICY_DUO_IRB,       /* DUO:0000021 ethics approval required */
	POLICY_DUO_PUB,       /* DUO:0000019 publication required */
	POLICY_DUO_COL,       /* DUO:0000020 collaboration required */
	POLICY_DUO_RTN,       /* DUO:0000029 return to database or resource */
	POLICY_DUO_US,        /* DUO:0000026 user specific restriction */
	POLICY_DUO_PS,        /* DUO:0000027 project specific restriction */
	POLICY_DUO_IS,        /* DUO:0000028 institution specific restriction */
	POLICY_DUO_MOR,       /* DUO:0000024 publication moratorium; argument: a date */
	POLICY_DUO_TS,        /* DUO:0000025 time limit on use; argument: a date */
	POLICY_DUO_COUNT_,    /* one past the last */
};

/* One consent code of a dataset. */
struct policy_duo {
	uint32_t code;                            /* enum policy_duo_code */
	/* DS: the disease (1 to 64 of A-Z a-z 0-9 . _ : -, compared without case);
	 * MOR, TS: a date YYYY-MM-DD; "" for the others. */
	char arg[POLICY_DUO_ARG_MAX + 1];
};

/* Purpose terms a grant states (policy_purpose_parse()); bits of policy_purpose.terms. */
enum policy_purpose_term {
	POLICY_PURPOSE_GENERAL = 1u << 0,     /* "general": research with no narrower purpose */
	POLICY_PURPOSE_HEALTH = 1u << 1,      /* "health": health, medical or biomedical research */
	POLICY_PURPOSE_DISEASE = 1u << 2,     /* "ds:<disease>": research on one disease (health) */
	POLICY_PURPOSE_METHODS = 1u << 3,     /* "methods": developing methods or algorithms */
	POLICY_PURPOSE_AI_TRAINING = 1u << 4, /* "ai-training": training models (methods too) */
	POLICY_PURPOSE_POPULATION = 1u << 5,  /* "population" / "ancestry": origins, ancestry */
	POLICY_PURPOSE_GENETIC = 1u << 6,     /* "genetic": genetic studies */
	POLICY_PURPOSE_COMMERCIAL = 1u << 7,  /* "commercial": commercial use */
	POLICY_PURPOSE_FOR_PROFIT = 1u << 8,  /* "for-profit": by a for-profit organisation */
};

struct policy_purpose {
	uint32_t terms;                           /* enum policy_purpose_term bits */
	char disease[POLICY_DUO_ARG_MAX + 1];     /* with POLICY_PURPOSE_DISEASE */
};

/* A dataset's policy settings: consent codes, data controller, how the mount serves it. One
 * record per dataset, replaced (and audited) when a steward amends it. */
enum policy_cache {
	POLICY_CACHE_DIRECT = 0,    /* direct I/O: every read is checked (default) */
	POLICY_CACHE_KERNEL = 1,    /* the kernel's page cache; revocation invalidates it */
};

struct policy_dataset {
	uint64_t dataset_id;                      /* 1 to INT64_MAX */
	char dataset[POLICY_DATASET_MAX + 1];
	size_t nduo;                              /* 0 to POLICY_DUO_MAX */
	struct policy_duo duo[POLICY_DUO_MAX];    /* no code twice */
	char controller[POLICY_CONTROLLER_MAX + 1]; /* text, may be empty */
	uint32_t cache;                           /* enum policy_cache */
	uint32_t updated_by_uid;
	char updated_by[POLICY_NAME_MAX + 1];
	int64_t updated;                          /* unix seconds, > 0 */
	/* Retention (issue 16 point 6): unix seconds after which the data must be erased, 0: none.
	 * Past it the daemon records that erasure is due and listings say so; erasing stays a
	 * steward's act, approved like any erasure. Absent from records written before it. */
	uint64_t retain_until;
};

/* A revocation: its own immutable record. */
struct policy_revocation {
	uint64_t grant_id;
	uint32_t by_uid;
	char by[POLICY_NAME_MAX + 1];
	int64_t at;                               /* unix seconds */
	char reason[POLICY_REASON_MAX + 1];       /* may be empty */
};

/* Who is asking: a uid and every group it is in (primary and supplementary). */
struct policy_subject {
	uint32_t uid;
	char user[POLICY_NAME_MAX + 1];           /* "" if the uid has no name */
	size_t ngids;
	uint32_t gids[POLICY_GROUPS_MAX];
};

enum policy_reason {
	POLICY_ALLOW = 0,
	POLICY_DENY_NO_GRANT = 1,       /* no grant names this subject for this dataset/version */
	POLICY_DENY_EXPIRED = 2,        /* the matching grant has expired */
	POLICY_DENY_NOT_YET_VALID = 3,  /* the matching grant starts later */
	POLICY_DENY_REVOKED = 4,        /* the matching grant was revoked */
	POLICY_DENY_PENDING_APPROVAL = 5, /* the matching grant awaits approval */
	POLICY_DENY_BY_RULE = 6,        /* a deny rule names this subject and dataset */
	POLICY_DENY_PURPOSE_EXCLUDED = 7, /* the dataset's consent codes exclude the purpose */
	POLICY_DENY_POLICY_MISMATCH = 8, /* the daemon's policy records disagree with the audit log
					  * about this dataset: not served until `policy rebuild` */
	POLICY_DENY_INTEGRITY = 9,      /* the dataset's versions in the index disagree with the
					 * audit log's import records: not served */
	POLICY_DENY_NODE_STALE = 10,    /* a node (enclaved --node) has not caught up with the
					 * primary within its staleness bound: it refuses every
					 * open until it has (docs/DEPLOYMENT.md) */
	POLICY_DENY_NODE_REMOVED = 11,  /* a node that is not enrolled (removed by a steward):
					 * it refuses every open */
};
/* The last reason, for tables that list them all. */
#define POLICY_REASON_LAST POLICY_DENY_NODE_REMOVED

struct policy_decision {
	enum policy_reason reason;      /* POLICY_ALLOW or why not */
	/* Allow: the grant that allows. Deny: the grant the reason is about (0 for no grant or a
	 * deny rule). */
	uint64_t grant_id;
	uint64_t rule_id;               /* POLICY_DENY_BY_RULE: the rule (the lowest id in force) */
	uint32_t code;                  /* POLICY_DENY_PURPOSE_EXCLUDED: enum policy_duo_code */
	/* Some grant (in force or not) names the subject for this dataset and version, whatever the
	 * deny rules say: what decides whether the dataset's name is shown to the subject at all.
	 * A deny rule alone never makes a name visible. */
	bool named;
};

/* Everything a decision reads besides the subject and the time. All borrowed; NULL with a count
 * of 0 is fine for each. */
struct policy_input {
	const struct policy_grant *grants;        /* approvals and revocations folded in */
	size_t ngrants;
	const struct policy_deny *denies;         /* removals folded in */
	size_t ndenies;
	const struct policy_duo *duo;             /* the asked dataset's consent codes */
	size_t nduo;
};

/* Decide whether `who` may read `version` of dataset `dataset_id` at time `now` (unix seconds).
 * A grant matches when its principal is who->uid (user grant) or one of who->gids (group grant),
 * its dataset_id is dataset_id, and its version is version or POLICY_ALL_VERSIONS (when version is
 * POLICY_ALL_VERSIONS, grants of any version match). A matching grant is valid when it is not
 * revoked and not_before <= now < expires. Allow if any matching grant is valid (reporting the
 * valid one that expires last, ties to the lowest id); otherwise deny with the reason of the
 * matching grant with the highest id (the newest), or no grant. The result does not depend on the
 * order of grants[].
 * Clarifications: a grant that is both revoked and out of its time window is reported revoked; one
 * with now >= expires is expired even if (invalidly) now < not_before too; of two matching grants
 * with the same id (ids are unique, so only in bad input) the reason revoked > expired >
 * not_yet_valid wins. Grants are trusted to be valid (policy_grant_validate()); decide itself
 * skips only grants with id 0 (which would read as "no grant") or an unknown kind, and considers
 * at most POLICY_GROUPS_MAX of who->gids. Cost: one pass over grants[], with a scan of who->gids
 * for group grants of this dataset. */
struct policy_decision policy_decide(const struct policy_subject *who, uint64_t dataset_id,
				     uint32_t version, int64_t now,
				     const struct policy_grant *grants, size_t ngrants);

/* The full rule (docs/POLICY.md section 4): a deny rule in force that names the subject (its uid,
 * one of its groups, or everyone) and the dataset (or every dataset) wins: POLICY_DENY_BY_RULE
 * with the lowest such rule id. Otherwise allow if a matching grant is valid: not revoked, within
 * its window, approved (approvals >= approvals_required) and with a purpose the consent codes in
 * in->duo do not exclude (policy_purpose_excluded(), the grant's consent_override counted).
 * Otherwise deny with the reason of the newest matching grant (revoked > expired >
 * purpose_excluded > pending_approval > not_yet_valid for a grant that is several), or no_grant.
 * Pure, order-independent, no allocation. */
struct policy_decision policy_evaluate(const struct policy_subject *who, uint64_t dataset_id,
				       uint32_t version, int64_t now,
				       const struct policy_input *in);

/* "allow", "no_grant", "expired", "not_yet_valid", "revoked", "pending_approval",
 * "denied_by_rule", "purpose_excluded"; "unknown" for anything else. These are wire names: the
 * audit records of refused opens carry them. */
const char *policy_reason_name(enum policy_reason r);
/* A sentence for people: "no grant for this dataset", ... */
const char *policy_reason_text(enum policy_reason r);

/* Check a grant's fields (kind, names, times in order, text without control characters and
 * valid UTF-8, bounds). -EINVAL with err_detail() naming the field. The exact rules are in
 * docs/POLICY.md: ids 1 to INT64_MAX (what a JSON integer holds); principal_id and
 * granted_by_uid not (uint32_t)-1; names as policy_name_valid(); dataset as
 * store_dataset_name_valid(); purpose non-empty text; times within TIME_RFC3339_MIN..MAX
 * (common/timefmt.h) so that the JSON form can hold them; not_before < expires; created after
 * the epoch (> 0); revoked_at 0 (not revoked) or, like created, after the epoch. */
int policy_grant_validate(const struct policy_grant *g);
/* The same for a revocation: grant_id 1 to INT64_MAX, by_uid not (uint32_t)-1, by a name,
 * at > 0 (so that, folded into revoked_at, it never reads as "not revoked") and within
 * TIME_RFC3339_MAX, reason text that may be empty. */
int policy_revocation_validate(const struct policy_revocation *r);
/* A user or group name: 1 to POLICY_NAME_MAX bytes of printable ASCII (0x20-0x7e), not starting or
 * ending with a space (AD groups such as "domain users" have inner spaces). NULL is not valid. */
bool policy_name_valid(const char *name);

/* JSON form of a grant / revocation, as stored in the index and sent over the control socket.
 * Times are RFC 3339 UTC strings ("2026-11-21T09:00:00Z"). Returns a new reference, or NULL on
 * allocation failure. Also NULL (err_detail() naming the field) for a record that does not
 * validate: what is written always parses back to an identical struct (revoked_at aside). */
json_t *policy_grant_to_json(const struct policy_grant *g);
json_t *policy_revocation_to_json(const struct policy_revocation *r);
/* Approvals, deny rules and their removals, dataset policies: validated like grants (-EINVAL,
 * err_detail() naming the field by its JSON key). */
int policy_approval_validate(const struct policy_approval *a);
int policy_deny_validate(const struct policy_deny *d);
int policy_deny_removal_validate(const struct policy_deny_removal *x);
int policy_dataset_validate(const struct policy_dataset *p);
json_t *policy_approval_to_json(const struct policy_approval *a);
json_t *policy_deny_to_json(const struct policy_deny *d);
json_t *policy_deny_removal_to_json(const struct policy_deny_removal *x);
json_t *policy_dataset_to_json(const struct policy_dataset *p);
int policy_approval_from_json(const json_t *j, struct policy_approval *ret_approval);
int policy_deny_from_json(const json_t *j, struct policy_deny *ret_deny);
int policy_deny_removal_from_json(const json_t *j, struct policy_deny_removal *ret_removal);
int policy_dataset_from_json(const json_t *j, struct policy_dataset *ret_policy);

/* ---- Consent (DUO) and purposes (policy/duo.c) ---- */

/* The short name of a code ("NMDS"), its DUO id ("DUO:0000015"), its label; NULL for an
 * unknown code. */
const char *policy_duo_name(uint32_t code);
const char *policy_duo_id(uint32_t code);
const char *policy_duo_label(uint32_t code);
/* One code as a steward writes it: "NMDS", "DS:cancer", "MOR:2027-01-01", a DUO id
 * ("DUO:0000015"), or a DUO id with its argument ("DUO:0000007:cancer"). Names are
 * case-insensitive; written back upper case. -EINVAL with err_detail() naming the code. */
int policy_duo_parse_one(const char *s, struct policy_duo *ret_duo);
/* A comma-separated list of codes (spaces around commas allowed; at most POLICY_DUO_MAX, no code
 * twice; "" is no codes). Writes *ret_n codes into ret (room for POLICY_DUO_MAX). */
int policy_duo_parse(const char *s, struct policy_duo ret[static POLICY_DUO_MAX], size_t *ret_n);
/* "DS:cancer" into out. */
void policy_duo_format(const struct policy_duo *d, char out[static POLICY_DUO_ARG_MAX + 16]);
/* A purpose's terms, comma-separated: general, health, ds:<disease> (one), methods,
 * ai-training, population (or ancestry), genetic, commercial, for-profit. Not empty. -EINVAL
 * with err_detail() naming the term. */
int policy_purpose_parse(const char *s, struct policy_purpose *ret_purpose);
/* The first consent code of duo[0..n) that excludes purpose p for a grant that ends at expires
 * (TS: a time limit), or 0 when none does. override: the steward recorded a consent override,
 * which lifts NMDS only. Pure. */
uint32_t policy_purpose_excluded(const struct policy_duo *duo, size_t n,
				 const struct policy_purpose *p, int64_t expires, bool override);

/* Parse and validate (strictly: every field present and typed, no unknown fields, bounds).
 * -EINVAL with err_detail() naming the field. revoked_at is not part of the grant's JSON: it is
 * set to 0. Times must be RFC 3339 date-times (time_parse_rfc3339(): any offset, fraction
 * dropped); relative times, "now" and bare dates are refused. */
int policy_grant_from_json(const json_t *j, struct policy_grant *ret_grant);
int policy_revocation_from_json(const json_t *j, struct policy_revocation *ret_rev);

/* Fill a subject for uid: its name (getpwuid_r) and groups (getgrouplist, with `gid` as the
 * primary group; a uid without a passwd entry gets just `gid`). -E2BIG more than
 * POLICY_GROUPS_MAX groups. Thread-safe.
 * Also: -ENAMETOOLONG a name longer than POLICY_NAME_MAX, -EINVAL a name that is not
 * policy_name_valid() (refused rather than altered: the name goes into audit records); other
 * -errno from NSS (e.g. -EIO). A passwd entry with an empty name counts as no entry. gids[0] is
 * `gid`; the list may hold duplicates. */
int policy_subject_lookup(uid_t uid, gid_t gid, struct policy_subject *ret_subject);
/* A GA4GH visa issuer URL as enclave.conf holds it ("visa_issuer"): "https://" or "http://" and
 * a host, at most POLICY_ISSUER_MAX bytes of printable ASCII without spaces, quotes, backslashes,
 * '?' or '#', not ending in '/' (paths are appended to it). */
#define POLICY_ISSUER_MAX 200
bool policy_issuer_url_valid(const char *s);

/* Is gid one of who's groups (the first POLICY_GROUPS_MAX)? */
bool policy_subject_in_group(const struct policy_subject *who, uint32_t gid);
/* The distinct uids that hold one of n principals (kinds[i] POLICY_USER: the uid ids[i];
 * POLICY_GROUP: the members the group database lists and every user whose primary group it is),
 * into out (room for max). For counting who could act (e.g. how many stewards could approve a
 * grant): an NSS entry that cannot be read is skipped. -E2BIG more than max. Walks the passwd
 * database with getpwent_r() when a group is given, so it is slow on a large directory and not
 * meant for a decision path. */
int policy_principal_uids(const uint32_t *kinds, const uint32_t *ids, size_t n, uint32_t *out,
			  size_t max, size_t *ret_n);
