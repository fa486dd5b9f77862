/* config: <store>/enclave.conf, who holds which role. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "common/err.h"
#include "daemon/daemon.h"

int config_principal_resolve(uint32_t kind, const char *s, uint32_t *ret_id,
			     char ret_name[static POLICY_NAME_MAX + 1])
{
	char buf[16384];
	bool numeric = s[0] >= '0' && s[0] <= '9';
	unsigned long long v = 0;
	char *end;
	int r;

	if (numeric) {
		errno = 0;
		v = strtoull(s, &end, 10);
		if (errno || *end || v >= UINT32_MAX)
			return err_set(-EINVAL, "bad %s id \"%.32s\"",
				       kind == POLICY_USER ? "user" : "group", s);
	}
	if (kind == POLICY_USER) {
		struct passwd pw, *res = NULL;

		r = numeric ? getpwuid_r((uid_t)v, &pw, buf, sizeof(buf), &res)
			    : getpwnam_r(s, &pw, buf, sizeof(buf), &res);
		if (r || !res) {
			if (!numeric)
				return err_set(-ESRCH, "no such user \"%.64s\"", s);
			*ret_id = (uint32_t)v;
			snprintf(ret_name, POLICY_NAME_MAX + 1, "%llu", v);
			return 0;
		}
		*ret_id = res->pw_uid;
		snprintf(ret_name, POLICY_NAME_MAX + 1, "%s", res->pw_name);
	} else {
		struct group gr, *res = NULL;

		r = numeric ? getgrgid_r((gid_t)v, &gr, buf, sizeof(buf), &res)
			    : getgrnam_r(s, &gr, buf, sizeof(buf), &res);
		if (r || !res) {
			if (!numeric)
				return err_set(-ESRCH, "no such group \"%.64s\"", s);
			*ret_id = (uint32_t)v;
			snprintf(ret_name, POLICY_NAME_MAX + 1, "%llu", v);
			return 0;
		}
		*ret_id = res->gr_gid;
		snprintf(ret_name, POLICY_NAME_MAX + 1, "%s", res->gr_name);
	}
	return 0;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* "approvals = N" / "max_grant_days = N": a decimal number in [lo, hi], given once. */
static int parse_number(const char *key, const char *val, unsigned lineno, uint32_t lo,
			uint32_t hi, bool *seen, uint32_t *ret)
{
	unsigned long long v;
	char *end;

	if (*seen)
		return err_set(-EINVAL, "line %u: %s is given twice", lineno, key);
	errno = 0;
	v = strtoull(val, &end, 10);
	if (val[0] < '0' || val[0] > '9' || errno || *end || v < lo || v > hi)
		return err_set(-EINVAL, "line %u: %s must be a number from %u to %u", lineno, key, lo,
			       hi);
	*seen = true;
	*ret = (uint32_t)v;
	return 0;
}

/* "gc_interval = N{s,m,h,d}": seconds, from 1 s to CONFIG_GC_INTERVAL_MAX hours. */
static int parse_interval(const char *val, uint32_t *ret_s)
{
	static const struct { char unit; uint32_t s; } units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
	};
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(val, &end, 10);
	if (val[0] < '0' || val[0] > '9' || errno || end == val || !end[0] || end[1])
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(units); i++)
		if (*end == units[i].unit) {
			if (v == 0 || v > (unsigned long long)CONFIG_GC_INTERVAL_MAX * 3600u / units[i].s)
				return -EINVAL;
			*ret_s = (uint32_t)(v * units[i].s);
			return 0;
		}
	return -EINVAL;
}

static int parse_line(char *line, unsigned lineno, struct config *cfg, bool *seen_durability,
		      bool *seen_approvals,
		      bool *seen_days, bool *seen_gc, bool *seen_grace)
{
	struct config_principal *p;
	char *eq, *key, *val, *name;
	size_t *n;
	uint32_t kind;
	int r;

	line = trim(line);
	if (!*line || *line == '#')
		return 0;
	eq = strchr(line, '=');
	if (!eq)
		return err_set(-EINVAL, "line %u: expected \"key = value\"", lineno);
	*eq = '\0';
	key = trim(line);
	val = trim(eq + 1);
	if (strcmp(key, "audit_durability") == 0) {
		if (*seen_durability)
			return err_set(-EINVAL, "line %u: audit_durability is set twice", lineno);
		*seen_durability = true;
		if (strcmp(val, "strict") == 0)
			cfg->audit_strict = true;
		else if (strcmp(val, "session") == 0)
			cfg->audit_strict = false;
		else
			return err_set(-EINVAL, "line %u: audit_durability is \"strict\" or "
				       "\"session\", not \"%.32s\"", lineno, val);
		return 0;
	}
	if (strcmp(key, "gc_interval_hours") == 0) {
		if (*seen_gc)
			return err_set(-EINVAL, "line %u: the garbage collection interval is given "
				       "twice (gc_interval or gc_interval_hours, once)", lineno);
		r = parse_number(key, val, lineno, 1, CONFIG_GC_INTERVAL_MAX, seen_gc,
				 &cfg->gc_interval_hours);
		if (r == 0)
			cfg->gc_interval_s = cfg->gc_interval_hours * 3600u;
		return r;
	}
	if (strcmp(key, "gc_interval") == 0) {
		if (*seen_gc)
			return err_set(-EINVAL, "line %u: the garbage collection interval is given "
				       "twice (gc_interval or gc_interval_hours, once)", lineno);
		r = parse_interval(val, &cfg->gc_interval_s);
		if (r < 0)
			return err_set(-EINVAL, "line %u: gc_interval is a number with a unit, s, m, "
				       "h or d (\"6h\", \"30m\"), from 1s to %ud", lineno,
				       CONFIG_GC_INTERVAL_MAX / 24);
		*seen_gc = true;
		return 0;
	}
	if (strcmp(key, "node_gc_grace_s") == 0)
		return parse_number(key, val, lineno, 0, CONFIG_NODE_GC_GRACE_MAX, seen_grace,
				    &cfg->node_gc_grace_s);
	if (strcmp(key, "approvals") == 0)
		return parse_number(key, val, lineno, 0, POLICY_APPROVALS_MAX, seen_approvals,
				    &cfg->approvals);
	if (strcmp(key, "max_grant_days") == 0)
		return parse_number(key, val, lineno, 1, CONFIG_MAX_GRANT_DAYS_MAX, seen_days,
				    &cfg->max_grant_days);
	if (strcmp(key, "visa_issuer") == 0) {
		if (cfg->visa_issuer[0])
			return err_set(-EINVAL, "line %u: visa_issuer is given twice", lineno);
		if (!policy_issuer_url_valid(val))
			return err_set(-EINVAL, "line %u: visa_issuer must be an https:// (or http://) "
				       "URL of at most %d printable characters, without spaces, "
				       "'?', '#' or a trailing '/'", lineno, POLICY_ISSUER_MAX);
		snprintf(cfg->visa_issuer, sizeof(cfg->visa_issuer), "%s", val);
		return 0;
	}
	if (strcmp(key, "steward") == 0) {
		p = cfg->stewards;
		n = &cfg->nstewards;
	} else if (strcmp(key, "auditor") == 0) {
		p = cfg->auditors;
		n = &cfg->nauditors;
	} else {
		return err_set(-EINVAL, "line %u: unknown setting \"%.64s\" (known: steward, auditor, "
			       "approvals, max_grant_days, visa_issuer, audit_durability, "
			       "gc_interval, gc_interval_hours, node_gc_grace_s)",
			       lineno, key);
	}
	if (strncmp(val, "user:", 5) == 0) {
		kind = POLICY_USER;
		name = val + 5;
	} else if (strncmp(val, "group:", 6) == 0) {
		kind = POLICY_GROUP;
		name = val + 6;
	} else {
		return err_set(-EINVAL, "line %u: %s must be user:NAME or group:NAME", lineno, key);
	}
	if (!*name || strlen(name) > POLICY_NAME_MAX)
		return err_set(-EINVAL, "line %u: empty or overlong name", lineno);
	for (const char *c = name; *c; c++)
		if ((unsigned char)*c <= ' ' || *c == ':' || (unsigned char)*c == 0x7f)
			return err_set(-EINVAL, "line %u: bad character in name", lineno);
	if (*n == CONFIG_PRINCIPALS_MAX)
		return err_set(-EINVAL, "line %u: more than %d %ss", lineno, CONFIG_PRINCIPALS_MAX,
			       key);
	p += *n;
	*p = (struct config_principal){ .kind = kind };
	switch (config_principal_resolve(kind, name, &p->id, p->name)) {
	case 0:
		break;
	case -ESRCH:
		return err_set(-EINVAL, "line %u: no such %s \"%s\"", lineno,
			       kind == POLICY_USER ? "user" : "group", name);
	default:
		return err_set(-EINVAL, "line %u: bad id \"%s\"", lineno, name);
	}
	snprintf(p->name, sizeof(p->name), "%s", name);
	(*n)++;
	return 0;
}

int config_parse(const char *text, size_t len, struct config *ret_cfg)
{
	struct config cfg = { .approvals = CONFIG_APPROVALS_DEFAULT,
			      .max_grant_days = CONFIG_MAX_GRANT_DAYS_DEFAULT,
			      .node_gc_grace_s = CONFIG_NODE_GC_GRACE_DEFAULT };
	bool seen_approvals = false, seen_days = false, seen_durability = false, seen_gc = false;
	bool seen_grace = false;
	_cleanup_free_ char *copy = NULL;
	char *line, *next;
	unsigned lineno = 0;
	int r;

	if (len > CONFIG_MAX_BYTES)
		return err_set(-E2BIG, "configuration is over %u bytes", CONFIG_MAX_BYTES);
	if (memchr(text, '\0', len))
		return err_set(-EINVAL, "configuration contains a NUL byte");
	copy = malloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, text, len);
	copy[len] = '\0';
	for (line = copy; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		r = parse_line(line, lineno, &cfg, &seen_durability, &seen_approvals, &seen_days,
			       &seen_gc, &seen_grace);
		if (r < 0)
			return r;
	}
	if (cfg.nstewards == 0)
		return err_set(-EINVAL, "no steward is configured: nobody could administer the store");
	*ret_cfg = cfg;
	return 0;
}

int config_load(const char *store_dir, struct config *ret_cfg)
{
	char path[4096], text[CONFIG_MAX_BYTES + 1];
	_cleanup_close_ int fd = -1;
	struct stat sb;
	ssize_t n;
	int r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", store_dir, CONFIG_NAME) >= sizeof(path))
		return err_set(-ENAMETOOLONG, "store path too long");
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return err_set(-EINVAL, "%s: not a regular file", path);
	if (sb.st_mode & (S_IWGRP | S_IWOTH))
		return err_set(-EPERM, "%s: writable by group or others; it decides who administers "
			       "the store (chmod 0644)", path);
	if (sb.st_uid != geteuid())
		return err_set(-EPERM, "%s: owned by uid %u, not by the daemon's user", path,
			       (unsigned)sb.st_uid);
	n = read_full(fd, text, sizeof(text));
	if (n < 0)
		return err_set((int)n, "%s: %s", path, strerror((int)-n));
	if ((size_t)n > CONFIG_MAX_BYTES)
		return err_set(-E2BIG, "%s: over %u bytes", path, CONFIG_MAX_BYTES);
	r = config_parse(text, (size_t)n, ret_cfg);
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail());
		return err_set(r, "%s: %s", path, why);
	}
	return 0;
}

static bool matches(const struct config_principal *p, size_t n, const struct policy_subject *who)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i].kind == POLICY_USER && p[i].id == who->uid)
			return true;
		if (p[i].kind == POLICY_GROUP)
			for (size_t g = 0; g < who->ngids; g++)
				if (who->gids[g] == p[i].id)
					return true;
	}
	return false;
}

unsigned config_roles(const struct config *cfg, const struct policy_subject *who)
{
	unsigned roles = 0;

	if (matches(cfg->stewards, cfg->nstewards, who))
		roles |= ROLE_STEWARD;
	if (matches(cfg->auditors, cfg->nauditors, who))
		roles |= ROLE_AUDITOR;
	return roles;
}
