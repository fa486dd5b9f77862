/* duo: a dataset's consent codes (GA4GH Data Use Ontology) and the purposes they exclude.
 *
 * What each code excludes is one table (codes[] below, and docs/POLICY.md section 7), read by
 * policy_purpose_excluded(), which is pure: request time (control_grant.c) and every decision
 * (policy_evaluate) ask the same question of the same function.
 */
#include "policy/policy.h"

#include <stdio.h>
#include <strings.h>

#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"

enum duo_arg {
	ARG_NONE,
	ARG_DISEASE,    /* DS:<disease> */
	ARG_DATE,       /* MOR:<date>, TS:<date> */
};

struct duo_info {
	const char *name;       /* the short code, upper case */
	const char *id;         /* DUO:nnnnnnn */
	const char *label;      /* the DUO label */
	enum duo_arg arg;
};

/* Indexed by enum policy_duo_code. */
static const struct duo_info codes[POLICY_DUO_COUNT_] = {
	[POLICY_DUO_GRU] = { "GRU", "DUO:0000042", "general research use", ARG_NONE },
	[POLICY_DUO_HMB] = { "HMB", "DUO:0000006", "health or medical or biomedical research",
			     ARG_NONE },
	[POLICY_DUO_DS] = { "DS", "DUO:0000007", "disease specific research", ARG_DISEASE },
	[POLICY_DUO_POA] = { "POA", "DUO:0000011", "population origins or ancestry research only",
			     ARG_NONE },
	[POLICY_DUO_NPOA] = { "NPOA", "DUO:0000044",
			      "population origins or ancestry research prohibited", ARG_NONE },
	[POLICY_DUO_NMDS] = { "NMDS", "DUO:0000015", "no general methods research", ARG_NONE },
	[POLICY_DUO_GSO] = { "GSO", "DUO:0000016", "genetic studies only", ARG_NONE },
	[POLICY_DUO_NCU] = { "NCU", "DUO:0000046", "non-commercial use only", ARG_NONE },
	[POLICY_DUO_NPU] = { "NPU", "DUO:0000045", "not-for-profit organisation use only",
			     ARG_NONE },
	[POLICY_DUO_NPUNCU] = { "NPUNCU", "DUO:0000018",
				"not-for-profit, non-commercial use only", ARG_NONE },
	[POLICY_DUO_IRB] = { "IRB", "DUO:0000021", "ethics approval required", ARG_NONE },
	[POLICY_DUO_PUB] = { "PUB", "DUO:0000019", "publication required", ARG_NONE },
	[POLICY_DUO_COL] = { "COL", "DUO:0000020", "collaboration required", ARG_NONE },
	[POLICY_DUO_RTN] = { "RTN", "DUO:0000029", "return to database or resource", ARG_NONE },
	[POLICY_DUO_US] = { "US", "DUO:0000026", "user specific restriction", ARG_NONE },
	[POLICY_DUO_PS] = { "PS", "DUO:0000027", "project specific restriction", ARG_NONE },
	[POLICY_DUO_IS] = { "IS", "DUO:0000028", "institution specific restriction", ARG_NONE },
	[POLICY_DUO_MOR] = { "MOR", "DUO:0000024", "publication moratorium", ARG_DATE },
	[POLICY_DUO_TS] = { "TS", "DUO:0000025", "time limit on use", ARG_DATE },
};

static const struct duo_info *info(uint32_t code)
{
	if (code == 0 || code >= POLICY_DUO_COUNT_)
		return NULL;
	return &codes[code];
}

const char *policy_duo_name(uint32_t code)
{
	return info(code) ? info(code)->name : NULL;
}

const char *policy_duo_id(uint32_t code)
{
	return info(code) ? info(code)->id : NULL;
}

const char *policy_duo_label(uint32_t code)
{
	return info(code) ? info(code)->label : NULL;
}

/* A disease: 1 to POLICY_DUO_ARG_MAX of A-Z a-z 0-9 . _ : - (a word or an ontology id such as
 * MONDO:0005015). */
static bool disease_valid(const char *s, size_t n)
{
	if (n == 0 || n > POLICY_DUO_ARG_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* A date YYYY-MM-DD that exists (time_parse_rfc3339 checks the calendar). */
static bool date_valid(const char *s, size_t n, int64_t *ret_t)
{
	char full[32];
	int64_t t;

	if (n != 10 || s[4] != '-' || s[7] != '-')
		return false;
	snprintf(full, sizeof(full), "%.10sT00:00:00Z", s);
	if (time_parse_rfc3339(full, &t) < 0)
		return false;
	if (ret_t)
		*ret_t = t;
	return true;
}

int policy_duo_parse_one(const char *s, struct policy_duo *ret_duo)
{
	struct policy_duo d = { 0 };
	const char *arg = NULL;
	size_t n, len;

	if (!s)
		return err_set(-EINVAL, "consent code: none given");
	len = strlen(s);
	if (len > POLICY_DUO_ARG_MAX + 16)
		return err_set(-EINVAL, "consent code \"%.32s...\": too long", s);
	for (uint32_t c = 1; c < POLICY_DUO_COUNT_ && !d.code; c++) {
		const char *name = codes[c].name, *id = codes[c].id;

		n = strlen(name);
		if (strncasecmp(s, name, n) == 0 && (s[n] == '\0' || s[n] == ':')) {
			d.code = c;
			arg = s[n] ? s + n + 1 : NULL;
		}
		n = strlen(id);
		if (!d.code && strncasecmp(s, id, n) == 0 && (s[n] == '\0' || s[n] == ':')) {
			d.code = c;
			arg = s[n] ? s + n + 1 : NULL;
		}
	}
	if (!d.code)
		return err_set(-EINVAL, "consent code \"%.80s\": not a code this store knows (see "
			       "docs/POLICY.md: GRU, HMB, DS:<disease>, NMDS, NCU, ...)", s);
	switch (codes[d.code].arg) {
	case ARG_NONE:
		if (arg)
			return err_set(-EINVAL, "consent code \"%.80s\": %s takes no argument", s,
				       codes[d.code].name);
		break;
	case ARG_DISEASE:
		if (!arg || !disease_valid(arg, strlen(arg)))
			return err_set(-EINVAL, "consent code \"%.80s\": %s needs a disease "
				       "(DS:<disease>, 1 to %d of letters, digits, '.', '_', ':', "
				       "'-')", s, codes[d.code].name, POLICY_DUO_ARG_MAX);
		snprintf(d.arg, sizeof(d.arg), "%s", arg);
		break;
	case ARG_DATE:
		if (!arg || !date_valid(arg, strlen(arg), NULL))
			return err_set(-EINVAL, "consent code \"%.80s\": %s needs a date "
				       "(%s:YYYY-MM-DD)", s, codes[d.code].name, codes[d.code].name);
		snprintf(d.arg, sizeof(d.arg), "%s", arg);
		break;
	}
	*ret_duo = d;
	return 0;
}

int policy_duo_parse(const char *s, struct policy_duo ret[static POLICY_DUO_MAX], size_t *ret_n)
{
	struct policy_duo out[POLICY_DUO_MAX];
	size_t n = 0, len;
	const char *p;
	int r;

	if (!s)
		return err_set(-EINVAL, "consent codes: none given");
	len = strlen(s);
	if (len > POLICY_DUO_TEXT_MAX)
		return err_set(-EINVAL, "consent codes: longer than %d bytes", POLICY_DUO_TEXT_MAX);
	p = s;
	while (*p == ' ')
		p++;
	while (*p) {
		char one[POLICY_DUO_ARG_MAX + 24];
		const char *end = strchr(p, ',');
		size_t k = end ? (size_t)(end - p) : strlen(p);

		while (k && p[k - 1] == ' ')
			k--;
		if (k == 0)
			return err_set(-EINVAL, "consent codes: an empty code in \"%.80s\"", s);
		if (k >= sizeof(one))
			return err_set(-EINVAL, "consent code \"%.32s...\": too long", p);
		memcpy(one, p, k);
		one[k] = '\0';
		if (n == POLICY_DUO_MAX)
			return err_set(-EINVAL, "consent codes: more than %d", POLICY_DUO_MAX);
		r = policy_duo_parse_one(one, &out[n]);
		if (r < 0)
			return r;
		for (size_t i = 0; i < n; i++)
			if (out[i].code == out[n].code)
				return err_set(-EINVAL, "consent codes: %s given twice",
					       codes[out[n].code].name);
		n++;
		if (!end)
			break;
		p = end + 1;
		while (*p == ' ')
			p++;
		if (!*p)
			return err_set(-EINVAL, "consent codes: an empty code in \"%.80s\"", s);
	}
	memcpy(ret, out, n * sizeof(*out));
	*ret_n = n;
	return 0;
}

void policy_duo_format(const struct policy_duo *d, char out[static POLICY_DUO_ARG_MAX + 16])
{
	const char *name = policy_duo_name(d->code);

	snprintf(out, POLICY_DUO_ARG_MAX + 16, "%s%s%s", name ? name : "?", d->arg[0] ? ":" : "",
		 d->arg);
}

static const struct {
	const char *name;
	uint32_t term;
} terms[] = {
	{ "general", POLICY_PURPOSE_GENERAL },
	{ "health", POLICY_PURPOSE_HEALTH },
	{ "methods", POLICY_PURPOSE_METHODS },
	{ "ai-training", POLICY_PURPOSE_AI_TRAINING },
	{ "population", POLICY_PURPOSE_POPULATION },
	{ "ancestry", POLICY_PURPOSE_POPULATION },
	{ "genetic", POLICY_PURPOSE_GENETIC },
	{ "commercial", POLICY_PURPOSE_COMMERCIAL },
	{ "for-profit", POLICY_PURPOSE_FOR_PROFIT },
};

int policy_purpose_parse(const char *s, struct policy_purpose *ret_purpose)
{
	struct policy_purpose p = { 0 };
	const char *q;

	if (!s || !*s)
		return err_set(-EINVAL, "purpose code: empty (name at least one term, e.g. general)");
	if (strlen(s) > POLICY_PURPOSE_CODE_MAX)
		return err_set(-EINVAL, "purpose code: longer than %d bytes", POLICY_PURPOSE_CODE_MAX);
	for (q = s;;) {
		const char *end = strchr(q, ',');
		size_t k = end ? (size_t)(end - q) : strlen(q);
		bool found = false;

		if (k == 0)
			return err_set(-EINVAL, "purpose code: an empty term in \"%.80s\"", s);
		if (k > 3 && strncasecmp(q, "ds:", 3) == 0) {
			if (p.terms & POLICY_PURPOSE_DISEASE)
				return err_set(-EINVAL, "purpose code: more than one ds:<disease>");
			if (!disease_valid(q + 3, k - 3))
				return err_set(-EINVAL, "purpose code: \"%.*s\" is not ds:<disease> "
					       "(letters, digits, '.', '_', ':', '-')",
					       (int)MIN(k, (size_t)80), q);
			memcpy(p.disease, q + 3, k - 3);
			p.disease[k - 3] = '\0';
			p.terms |= POLICY_PURPOSE_DISEASE;
			found = true;
		}
		for (size_t i = 0; !found && i < ARRAY_SIZE(terms); i++) {
			if (strlen(terms[i].name) == k && strncasecmp(q, terms[i].name, k) == 0) {
				p.terms |= terms[i].term;
				found = true;
			}
		}
		if (!found)
			return err_set(-EINVAL, "purpose code: unknown term \"%.*s\" (known: general, "
				       "health, ds:<disease>, methods, ai-training, population, "
				       "ancestry, genetic, commercial, for-profit)",
				       (int)MIN(k, (size_t)80), q);
		if (!end)
			break;
		q = end + 1;
	}
	*ret_purpose = p;
	return 0;
}

/* Does code d exclude purpose p (for a grant ending at expires)? The table of docs/POLICY.md. */
static bool excludes(const struct policy_duo *d, const struct policy_purpose *p, int64_t expires,
		     bool override)
{
	uint32_t t = p->terms;
	int64_t limit;

	switch (d->code) {
	case POLICY_DUO_HMB:
		/* Health research only, and in DUO, not population origins or ancestry. */
		return !(t & (POLICY_PURPOSE_HEALTH | POLICY_PURPOSE_DISEASE)) ||
		       (t & POLICY_PURPOSE_POPULATION);
	case POLICY_DUO_DS:
		return !(t & POLICY_PURPOSE_DISEASE) || strcasecmp(p->disease, d->arg) != 0 ||
		       (t & POLICY_PURPOSE_POPULATION);
	case POLICY_DUO_POA:
		return !(t & POLICY_PURPOSE_POPULATION);
	case POLICY_DUO_NPOA:
		return t & POLICY_PURPOSE_POPULATION;
	case POLICY_DUO_NMDS:
		return (t & (POLICY_PURPOSE_METHODS | POLICY_PURPOSE_AI_TRAINING)) && !override;
	case POLICY_DUO_GSO:
		return !(t & POLICY_PURPOSE_GENETIC);
	case POLICY_DUO_NCU:
		return t & POLICY_PURPOSE_COMMERCIAL;
	case POLICY_DUO_NPU:
		return t & POLICY_PURPOSE_FOR_PROFIT;
	case POLICY_DUO_NPUNCU:
		return t & (POLICY_PURPOSE_FOR_PROFIT | POLICY_PURPOSE_COMMERCIAL);
	case POLICY_DUO_TS:
		/* The use must end by the limit: a grant may not outlast it. */
		return !date_valid(d->arg, strlen(d->arg), &limit) || expires > limit;
	default:
		/* GRU; and obligations the data access committee checks (IRB, PUB, COL, RTN, US,
		 * PS, IS, MOR), recorded and shown but not matched against purposes. */
		return false;
	}
}

uint32_t policy_purpose_excluded(const struct policy_duo *duo, size_t n,
				 const struct policy_purpose *p, int64_t expires, bool override)
{
	uint32_t first = 0;

	if (!duo || !p)
		return 0;
	/* The lowest excluding code, so that the order of duo[] does not matter. */
	for (size_t i = 0; i < n; i++)
		if (excludes(&duo[i], p, expires, override) && (!first || duo[i].code < first))
			first = duo[i].code;
	return first;
}
