/* subject: who is asking, from NSS (passwd and group databases).
 *
 * Thread-safe: only the reentrant NSS calls (getpwuid_r, getgrouplist), and every buffer is the
 * caller's stack or its own heap allocation. policy_principal_uids() is the exception: it walks
 * the passwd database (setpwent/getpwent_r), whose cursor glibc shares between threads; it only
 * counts people for a warning.
 */
#include "policy/policy.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "common/err.h"

/* getpwuid_r's buffer: start at sysconf's hint (or this), double on ERANGE up to the cap. An entry
 * larger than the cap (1 MiB of name, gecos, home and shell) is an error, not an allocation the
 * passwd database gets to size. */
#define PW_BUF_START 1024
#define PW_BUF_MAX (1u << 20)
/* Retries of a getpwuid_r interrupted by a signal. */
#define PW_EINTR_MAX 8

_Static_assert(sizeof(gid_t) == sizeof(uint32_t), "gids are stored as uint32_t");

/* The passwd entry of uid into pw (strings in *buf, which the caller frees). Returns 1 found,
 * 0 no such entry, -errno. */
static int passwd_lookup(uid_t uid, struct passwd *pw, char **buf)
{
	long hint = sysconf(_SC_GETPW_R_SIZE_MAX);
	size_t len = hint > 0 && (unsigned long)hint <= PW_BUF_MAX ? (size_t)hint : PW_BUF_START;
	unsigned eintr = 0;

	for (;;) {
		struct passwd *res = NULL;
		char *nb = realloc(*buf, len);
		int e;

		if (!nb)
			return err_set(-ENOMEM, "uid %u: out of memory looking up its user", uid);
		*buf = nb;
		e = getpwuid_r(uid, pw, *buf, len, &res);
		if (e == 0)
			return res ? 1 : 0;
		if (e == ERANGE && len < PW_BUF_MAX) {
			len = MIN(len * 2, (size_t)PW_BUF_MAX);
			continue;
		}
		if (e == EINTR && ++eintr <= PW_EINTR_MAX)
			continue;
		/* getpwuid_r(3): these may also mean "not found", depending on the NSS module. */
		if (e == ENOENT || e == ESRCH || e == EBADF || e == EPERM)
			return 0;
		if (e == ERANGE)
			return err_set(-E2BIG, "uid %u: passwd entry larger than %u bytes", uid,
				       PW_BUF_MAX);
		return err_set(-e, "uid %u: cannot look up its user: %s", uid, strerror(e));
	}
}

int policy_subject_lookup(uid_t uid, gid_t gid, struct policy_subject *ret_subject)
{
	/* ~4 KiB each; filled here and copied out only on success (house rule 4). */
	struct policy_subject s = { .uid = uid, .gids = { gid }, .ngids = 1 };
	gid_t groups[POLICY_GROUPS_MAX];
	_cleanup_free_ char *buf = NULL;
	struct passwd pw;
	size_t namelen;
	int ngroups = POLICY_GROUPS_MAX;
	int r;

	r = passwd_lookup(uid, &pw, &buf);
	if (r < 0)
		return r;
	/* No entry, or an entry without a name: no name, and only the group we were given. */
	if (r == 0 || !pw.pw_name || !pw.pw_name[0]) {
		*ret_subject = s;
		return 0;
	}

	namelen = strlen(pw.pw_name);
	if (namelen > POLICY_NAME_MAX)
		return err_set(-ENAMETOOLONG, "uid %u: user name longer than %d bytes", uid,
			       POLICY_NAME_MAX);
	if (!policy_name_valid(pw.pw_name))
		return err_set(-EINVAL, "uid %u: user name is not printable ASCII (or starts or ends "
					"with a space)", uid);
	memcpy(s.user, pw.pw_name, namelen + 1);

	/* glibc: the user's groups from every NSS source, with gid first; -1 if more than fit (and
	 * ngroups set to how many there are). A source that fails is skipped, not reported: the
	 * subject then has fewer groups, which can only deny more. */
	if (getgrouplist(pw.pw_name, gid, groups, &ngroups) < 0)
		return err_set(-E2BIG, "uid %u (%s): in %d groups, more than the %d considered", uid,
			       s.user, ngroups, POLICY_GROUPS_MAX);
	if (ngroups < 1 || ngroups > POLICY_GROUPS_MAX)
		return err_set(-EIO, "uid %u (%s): getgrouplist returned %d groups", uid, s.user,
			       ngroups);
	/* gids[0] is gid whatever the NSS modules did; the list may then hold it twice. */
	if (groups[0] == gid) {
		memcpy(s.gids, groups, (size_t)ngroups * sizeof(groups[0]));
		s.ngids = (size_t)ngroups;
	} else {
		if (ngroups >= POLICY_GROUPS_MAX)
			return err_set(-E2BIG, "uid %u (%s): in more than %d groups", uid, s.user,
				       POLICY_GROUPS_MAX);
		memcpy(s.gids + 1, groups, (size_t)ngroups * sizeof(groups[0]));
		s.ngids = (size_t)ngroups + 1;
	}
	*ret_subject = s;
	return 0;
}

bool policy_issuer_url_valid(const char *s)
{
	size_t n = strnlen(s, POLICY_ISSUER_MAX + 1), skip;

	if (strncmp(s, "https://", 8) == 0)
		skip = 8;
	else if (strncmp(s, "http://", 7) == 0)
		skip = 7;
	else
		return false;
	if (n > POLICY_ISSUER_MAX || n <= skip || s[n - 1] == '/' || s[skip] == '/')
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f || strchr("\"\\?#", s[i]))
			return false;
	return true;
}

bool policy_subject_in_group(const struct policy_subject *who, uint32_t gid)
{
	for (size_t i = 0; i < MIN(who->ngids, (size_t)POLICY_GROUPS_MAX); i++)
		if (who->gids[i] == gid)
			return true;
	return false;
}

/* getpwnam_r / getgrgid_r buffers for policy_principal_uids(): one fixed size; a bigger entry is
 * skipped (the count is for a warning, and only errs towards warning). */
#define NSS_ENUM_BUF 16384

/* Add uid to out[0..*n) unless it is there; false when out is full. */
static bool uid_add(uint32_t *out, size_t max, size_t *n, uint32_t uid)
{
	for (size_t i = 0; i < *n; i++)
		if (out[i] == uid)
			return true;
	if (*n >= max)
		return false;
	out[(*n)++] = uid;
	return true;
}

int policy_principal_uids(const uint32_t *kinds, const uint32_t *ids, size_t n, uint32_t *out,
			  size_t max, size_t *ret_n)
{
	_cleanup_free_ char *buf = malloc(NSS_ENUM_BUF);
	bool any_group = false;
	size_t count = 0;

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct group gr, *gres = NULL;

		if (kinds[i] == POLICY_USER) {
			if (!uid_add(out, max, &count, ids[i]))
				return err_set(-E2BIG, "more than %zu users", max);
			continue;
		}
		if (kinds[i] != POLICY_GROUP)
			continue;
		any_group = true;
		if (getgrgid_r((gid_t)ids[i], &gr, buf, NSS_ENUM_BUF, &gres) != 0 || !gres)
			continue;
		for (char **m = gr.gr_mem; m && *m; m++) {
			struct passwd pw, *pres = NULL;
			char pbuf[4096];

			if (getpwnam_r(*m, &pw, pbuf, sizeof(pbuf), &pres) == 0 && pres &&
			    !uid_add(out, max, &count, pres->pw_uid))
				return err_set(-E2BIG, "more than %zu users", max);
		}
	}
	/* Members by primary group are in no group's member list: walk the passwd database. */
	if (any_group) {
		struct passwd pw, *pres = NULL;

		setpwent();
		while (getpwent_r(&pw, buf, NSS_ENUM_BUF, &pres) == 0 && pres) {
			for (size_t i = 0; i < n; i++) {
				if (kinds[i] != POLICY_GROUP || ids[i] != pres->pw_gid)
					continue;
				if (!uid_add(out, max, &count, pres->pw_uid)) {
					endpwent();
					return err_set(-E2BIG, "more than %zu users", max);
				}
			}
		}
		endpwent();
	}
	*ret_n = count;
	return 0;
}
