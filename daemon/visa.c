/* visa: grants in force as signed GA4GH Passport visas (docs/POLICY.md section 9), and the public
 * key that checks them as a JWKS.
 *
 * A visa is a JWS in compact serialization (RFC 7515), signed ES256 (RFC 7518 section 3.4) with
 * the store's visa key (keys/visa.key: a seed wrapped under the master key, from which
 * crypto_es256_from_seed() derives the key pair). The header names the key (`kid`, its RFC 7638
 * thumbprint) and where its JWKS is published (`jku`, the issuer URL + "/jwks.json"), which makes
 * it a GA4GH "Visa Document Token". The key is unwrapped for each export and freed after it: the
 * daemon keeps no unwrapped copy between requests.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "crypto/crypto.h"
#include "daemon/control_internal.h"
#include "daemon/daemon.h"

/* A visa's parts before signing are well under this; a longer one is a bug, refused. */
#define VISA_JWS_MAX (16 * 1024)
/* base64url of 32 bytes, without padding: 43 characters. */
#define B64_32 44

/* base64url without padding (RFC 7515 section 2) of n bytes into out (room for outlen). */
static void b64url(char *out, size_t outlen, const void *bin, size_t n)
{
	sodium_bin2base64(out, outlen, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* The public key as a JWK, and its RFC 7638 thumbprint (the kid): SHA-256 of the required
 * members in lexicographic order, without spaces. */
static json_t *jwk_of(const crypto_es256 *k, char ret_kid[static B64_32])
{
	uint8_t x[32], y[32], h[crypto_hash_sha256_BYTES];
	char bx[B64_32], by[B64_32], canon[160];
	int n;

	crypto_es256_public(k, x, y);
	b64url(bx, sizeof(bx), x, sizeof(x));
	b64url(by, sizeof(by), y, sizeof(y));
	n = snprintf(canon, sizeof(canon), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
		     bx, by);
	crypto_hash_sha256(h, (const uint8_t *)canon, (size_t)n);
	b64url(ret_kid, B64_32, h, sizeof(h));
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x",
			 bx, "y", by, "use", "sig", "alg", "ES256", "kid", ret_kid);
}

/* The store's visa key. Missing (a store made before visas were signed): made now, when the
 * caller may (a steward or an auditor exporting), and recorded (`visa_key_create`) before it is
 * used; otherwise -ENOENT. */
static int visa_key(struct conn *c, bool may_create, crypto_es256 **ret_key)
{
	crypto_key *seed = NULL;
	crypto_es256 *k = NULL;
	char kid[B64_32];
	json_t *rec = NULL, *jwk = NULL;
	int r;

	r = store_visa_key_seed(c->d->st, &seed);
	if (r == -ENOENT && may_create) {
		r = store_visa_key_create(c->d->st);
		/* Another connection may have made it meanwhile: use that one. */
		if (r == 0 || r == -EEXIST)
			r = store_visa_key_seed(c->d->st, &seed);
		if (r == 0) {
			r = crypto_es256_from_seed(seed, &k);
			jwk = r == 0 ? jwk_of(k, kid) : NULL;
			rec = jwk ? json_pack("{s:s, s:s}", "event", "visa_key_create", "kid", kid)
				  : NULL;
			if (r == 0 && (!rec || daemon_audit_subject(rec, &c->who) < 0))
				r = -ENOMEM;
			if (r == 0)
				r = audit_append(c->d->log, rec, NULL);
			json_decref(rec);
			json_decref(jwk);
			crypto_key_free(seed);
			if (r < 0) {
				crypto_es256_free(k);
				return r;
			}
			*ret_key = k;
			return 0;
		}
	}
	if (r == -ENOENT)
		return err_set(-ENOENT, "this store has no visa signing key yet: enclavectl init "
			       "makes it, or the first 'grant export' by a steward or an auditor");
	if (r < 0)
		return r;
	r = crypto_es256_from_seed(seed, &k);
	crypto_key_free(seed);
	if (r < 0)
		return r;
	*ret_key = k;
	return 0;
}

/* header.payload.signature, each part base64url (the JSON compact, keys sorted). */
static int jws_sign(const crypto_es256 *k, const json_t *header, const json_t *payload,
		    char **ret_jws)
{
	char *h = json_dumps(header, JSON_COMPACT | JSON_SORT_KEYS);
	char *p = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS);
	char *out = NULL;
	uint8_t sig[64];
	size_t hl, pl, off;
	int r = -ENOMEM;

	if (!h || !p)
		goto out;
	hl = sodium_base64_ENCODED_LEN(strlen(h), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	pl = sodium_base64_ENCODED_LEN(strlen(p), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	if (hl + pl + 90 > VISA_JWS_MAX) {
		r = err_set(-E2BIG, "a visa would be longer than %d bytes", VISA_JWS_MAX);
		goto out;
	}
	out = malloc(hl + pl + 90);
	if (!out)
		goto out;
	b64url(out, hl, h, strlen(h));
	off = strlen(out);
	out[off++] = '.';
	b64url(out + off, pl, p, strlen(p));
	off += strlen(out + off);
	r = crypto_es256_sign(k, out, off, sig);
	if (r < 0)
		goto out;
	out[off++] = '.';
	b64url(out + off, 90, sig, sizeof(sig));
	*ret_jws = out;
	out = NULL;
	r = 0;
out:
	free(out);
	free(h);
	free(p);
	return r;
}

/* When the data access decision was made: the approval that completed the grant, or its
 * request when it needed none. */
static int64_t asserted_at(struct conn *c, const struct policy_grant *g)
{
	_cleanup_free_ struct policy_approval *ap = NULL;
	size_t n = 0;

	if (!g->approvals_required || grants_approvals(c->d->grants, g->id, &ap, &n) < 0 ||
	    n < g->approvals_required)
		return g->created;
	return ap[g->approvals_required - 1].at;
}

/* `value`: a URL for the dataset (or one version of it) under the issuer. */
static void visa_value(const char *issuer, const struct policy_grant *g, char out[static 512])
{
	if (g->version)
		snprintf(out, 512, "%s/datasets/%s/versions/%u", issuer, g->dataset, g->version);
	else
		snprintf(out, 512, "%s/datasets/%s", issuer, g->dataset);
}

/* One visa for user grant g. */
static int visa_of(struct conn *c, const crypto_es256 *k, const char *kid,
		   const struct policy_grant *g, int64_t now, char **ret_jws)
{
	const char *issuer = c->d->cfg.visa_issuer;
	char jku[POLICY_ISSUER_MAX + 16], value[512], jti[33];
	uint8_t rnd[16];
	json_t *header, *payload;
	int r;

	snprintf(jku, sizeof(jku), "%s/jwks.json", issuer);
	visa_value(issuer, g, value);
	crypto_random(rnd, sizeof(rnd));
	sodium_bin2hex(jti, sizeof(jti), rnd, sizeof(rnd));
	header = json_pack("{s:s, s:s, s:s, s:s}", "typ", "vnd.ga4gh.visa+jwt", "alg", "ES256",
			   "kid", kid, "jku", jku);
	payload = json_pack("{s:s, s:s, s:s, s:I, s:I, s:{s:s, s:I, s:s, s:s, s:s}}", "iss",
			    issuer, "sub", g->principal, "jti", jti, "iat", (json_int_t)now, "exp",
			    (json_int_t)g->expires, "ga4gh_visa_v1", "type",
			    "ControlledAccessGrants", "asserted", (json_int_t)asserted_at(c, g),
			    "value", value, "source", issuer, "by", "dac");
	r = header && payload ? jws_sign(k, header, payload, ret_jws) : -ENOMEM;
	json_decref(header);
	json_decref(payload);
	return r;
}

int op_grant_export(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "format", NULL };
	_cleanup_free_ struct policy_grant *g = NULL;
	const char *format = "ga4gh-visa";
	crypto_es256 *k = NULL;
	json_t *visas = NULL, *skipped = NULL, *ids = NULL, *jwk = NULL, *rec = NULL;
	int64_t now = time(NULL);
	char kid[B64_32];
	size_t n;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "format", false, 32, &format)) < 0)
		return r;
	if (strcmp(format, "ga4gh-visa") != 0)
		return err_set(-EINVAL, "export format \"%.32s\" is not known (ga4gh-visa)", format);
	if (!c->d->cfg.visa_issuer[0])
		return err_set(-EINVAL, "no visa issuer is configured: add \"visa_issuer = "
			       "https://...\" to enclave.conf (enclavectl init --visa-issuer URL) and "
			       "restart enclaved");
	if ((r = grants_snapshot(c->d->grants, &g, NULL, &n)) < 0 ||
	    (r = visa_key(c, true, &k)) < 0)
		return r;
	r = -ENOMEM;
	jwk = jwk_of(k, kid);
	visas = json_array();
	skipped = json_array();
	ids = json_array();
	if (!jwk || !visas || !skipped || !ids)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char *jws = NULL;
		json_t *o;

		/* Suspended (consent), pending, not yet valid, expired, revoked: no visa. */
		if (strcmp(grant_state(c, &g[i], now, NULL), "active") != 0)
			continue;
		/* A visa names one person (sub); a group's members are not a subject. */
		if (g[i].kind != POLICY_USER) {
			o = json_pack("{s:I, s:s}", "grant_id", (json_int_t)g[i].id, "why",
				      "a group grant: a visa names one user");
			if (!o || json_array_append_new(skipped, o) < 0)
				goto out;
			continue;
		}
		r = visa_of(c, k, kid, &g[i], now, &jws);
		if (r < 0)
			goto out;
		r = -ENOMEM;
		o = json_pack("{s:I, s:s, s:s, s:I, s:s}", "grant_id", (json_int_t)g[i].id, "sub",
			      g[i].principal, "dataset", g[i].dataset, "version",
			      (json_int_t)g[i].version, "jwt", jws);
		free(jws);
		if (!o || json_array_append_new(visas, o) < 0 ||
		    json_array_append_new(ids, json_integer((json_int_t)g[i].id)) < 0)
			goto out;
	}
	/* Visas let other services grant access: which ones left, and to whom, is on the record
	 * before they do. */
	rec = json_pack("{s:s, s:s, s:O, s:I}", "event", "visa_export", "kid", kid, "grant_ids", ids,
			"count", (json_int_t)json_array_size(ids));
	if (!rec || daemon_audit_subject(rec, &c->who) < 0)
		goto out;
	r = audit_append(c->d->log, rec, NULL);
	if (r < 0)
		goto out;
	*ret = json_pack("{s:s, s:s, s:s, s:O, s:O}", "format", "ga4gh-visa", "issuer",
			 c->d->cfg.visa_issuer, "kid", kid, "visas", visas, "skipped", skipped);
	r = *ret ? 0 : -ENOMEM;
out:
	crypto_es256_free(k);
	json_decref(jwk);
	json_decref(visas);
	json_decref(skipped);
	json_decref(ids);
	json_decref(rec);
	return r;
}

int op_grant_jwks(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { NULL };
	crypto_es256 *k = NULL;
	char kid[B64_32];
	json_t *jwk;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = visa_key(c, c->roles & (ROLE_STEWARD | ROLE_AUDITOR), &k)) < 0)
		return r;
	jwk = jwk_of(k, kid);
	crypto_es256_free(k);
	if (!jwk)
		return -ENOMEM;
	*ret = json_pack("{s:[o]}", "keys", jwk);
	return *ret ? 0 : -ENOMEM;
}
