/* test_daemon: the daemon's own pieces without a mount: enclave.conf parsing and roles, and the
 * grant table (persistence in the store's policy records, audit records, failure handling). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>

#include "audit/audit_internal.h"   /* white-box: fault injection */
#include "audit/note.h"
#include "common/common.h"
#include "common/err.h"
#include "daemon/approvals.h"
#include "daemon/daemon.h"
#include "store/store_internal.h"   /* white-box: a damaged record the rotation trips on */
#include "tests/testutil.h"

/* ---- Configuration ---------------------------------------------------------------------------- */

static int parse(const char *text, struct config *cfg)
{
	return config_parse(text, strlen(text), cfg);
}

static void test_config_valid(void **state)
{
	struct config cfg;

	(void)state;
	assert_int_equal(parse("# who\n\n  steward = user:root  \nsteward=group:0\r\n"
			       "auditor = user:0\n",
			       &cfg),
			 0);
	assert_int_equal(cfg.nstewards, 2);
	assert_int_equal(cfg.nauditors, 1);
	assert_int_equal(cfg.stewards[0].kind, POLICY_USER);
	assert_int_equal(cfg.stewards[0].id, 0);
	assert_string_equal(cfg.stewards[0].name, "root");
	assert_int_equal(cfg.stewards[1].kind, POLICY_GROUP);
	assert_int_equal(cfg.auditors[0].kind, POLICY_USER);
	/* The store settings: defaults when absent, the bounds accepted. */
	assert_int_equal(cfg.approvals, 1);
	assert_int_equal(cfg.max_grant_days, 365);
	assert_int_equal(parse("steward = user:root\napprovals = 0\nmax_grant_days = 3650\n", &cfg),
			 0);
	assert_int_equal(cfg.approvals, 0);
	assert_int_equal(cfg.max_grant_days, 3650);
	assert_int_equal(parse("steward = user:root\napprovals = 8\nmax_grant_days = 1\n", &cfg), 0);
	assert_int_equal(cfg.approvals, 8);
	assert_int_equal(cfg.max_grant_days, 1);
	assert_string_equal(cfg.visa_issuer, "");
	assert_int_equal(parse("steward = user:root\nvisa_issuer = https://dac.example.org/enclave\n",
			       &cfg), 0);
	assert_string_equal(cfg.visa_issuer, "https://dac.example.org/enclave");
	/* audit_durability: session by default, strict when asked. */
	assert_false(cfg.audit_strict);
	assert_int_equal(parse("steward = user:root\naudit_durability = strict\n", &cfg), 0);
	assert_true(cfg.audit_strict);
	assert_int_equal(parse("steward = user:root\naudit_durability = session\n", &cfg), 0);
	assert_false(cfg.audit_strict);
	/* gc_interval_hours: no schedule by default; 1 hour to a year. */
	assert_int_equal(cfg.gc_interval_hours, 0);
	assert_int_equal(parse("steward = user:root\ngc_interval_hours = 24\n", &cfg), 0);
	assert_int_equal(cfg.gc_interval_hours, 24);
	assert_int_equal(parse("steward = user:root\ngc_interval_hours = 8784\n", &cfg), 0);
	assert_int_equal(cfg.gc_interval_hours, 8784);
	assert_int_equal(cfg.gc_interval_s, 8784u * 3600);
	/* gc_interval: with a unit, 1 s up to as long. */
	assert_int_equal(parse("steward = user:root\ngc_interval = 2s\n", &cfg), 0);
	assert_int_equal(cfg.gc_interval_s, 2);
	assert_int_equal(cfg.gc_interval_hours, 0);
	assert_int_equal(parse("steward = user:root\ngc_interval = 30m\n", &cfg), 0);
	assert_int_equal(cfg.gc_interval_s, 1800);
	assert_int_equal(parse("steward = user:root\ngc_interval = 6h\n", &cfg), 0);
	assert_int_equal(cfg.gc_interval_s, 6 * 3600);
	assert_int_equal(parse("steward = user:root\ngc_interval = 366d\n", &cfg), 0);
	assert_int_equal(cfg.gc_interval_s, 366u * 86400);
	/* node_gc_grace_s: 10 s by default, 0 to an hour. */
	assert_int_equal(cfg.node_gc_grace_s, CONFIG_NODE_GC_GRACE_DEFAULT);
	assert_int_equal(parse("steward = user:root\nnode_gc_grace_s = 0\n", &cfg), 0);
	assert_int_equal(cfg.node_gc_grace_s, 0);
	assert_int_equal(parse("steward = user:root\nnode_gc_grace_s = 3600\n", &cfg), 0);
	assert_int_equal(cfg.node_gc_grace_s, 3600);
}

static void test_config_rejects(void **state)
{
	static const char *const bad[] = {
		"steward user:root\n",                       /* no '=' */
		"steward = root\n",                          /* no kind */
		"steward = host:root\n",                     /* unknown kind */
		"stewards = user:root\n",                    /* unknown key */
		"steward = user:no-such-user-enclave-test\n",
		"steward = group:no-such-group-enclave-test\n",
		"steward = user:\n",                         /* empty name */
		"steward = user:ro ot\n",                    /* space inside the name */
		"steward = user:99999999999\n",              /* id out of range */
		"auditor = user:root\n",                     /* nobody may administer */
		"steward = user:root\napprovals = 9\n",      /* over POLICY_APPROVALS_MAX */
		"steward = user:root\napprovals = -1\n",
		"steward = user:root\napprovals = one\n",
		"steward = user:root\napprovals = 1\napprovals = 2\n",   /* twice */
		"steward = user:root\nmax_grant_days = 0\n",
		"steward = user:root\nmax_grant_days = 3651\n",
		"steward = user:root\nmax_grant_days = 30d\n",
		"steward = user:root\nvisa_issuer = ftp://x.org\n",          /* not http(s) */
		"steward = user:root\nvisa_issuer = https://x.org/\n",       /* trailing '/' */
		"steward = user:root\nvisa_issuer = https://x.org/a?b\n",    /* a query */
		"steward = user:root\nvisa_issuer = https://\n",             /* no host */
		"steward = user:root\nvisa_issuer = https://a.org\nvisa_issuer = https://b.org\n",
		"steward = user:root\naudit_durability = lazy\n",
		"steward = user:root\naudit_durability = strict\naudit_durability = strict\n",
		"steward = user:root\ngc_interval_hours = 0\n",
		"steward = user:root\ngc_interval_hours = 8785\n",
		"steward = user:root\ngc_interval_hours = 1d\n",
		"steward = user:root\ngc_interval_hours = 1\ngc_interval_hours = 2\n",
		"steward = user:root\ngc_interval = 0s\n",
		"steward = user:root\ngc_interval = 5\n",             /* no unit */
		"steward = user:root\ngc_interval = 5w\n",            /* unknown unit */
		"steward = user:root\ngc_interval = 5ss\n",
		"steward = user:root\ngc_interval = -5s\n",
		"steward = user:root\ngc_interval = 367d\n",          /* over a year */
		"steward = user:root\ngc_interval = 99999999999999999999s\n",
		"steward = user:root\ngc_interval = 1h\ngc_interval_hours = 1\n",   /* both */
		"steward = user:root\ngc_interval_hours = 1\ngc_interval = 1h\n",
		"steward = user:root\nnode_gc_grace_s = 3601\n",
		"steward = user:root\nnode_gc_grace_s = -1\n",
		"steward = user:root\nnode_gc_grace_s = 1\nnode_gc_grace_s = 2\n",
		"",
	};
	struct config cfg, before;
	char big[CONFIG_MAX_BYTES + 2];
	char many[(CONFIG_PRINCIPALS_MAX + 1) * 24];
	size_t off = 0;

	(void)state;
	memset(&cfg, 0x5a, sizeof(cfg));
	before = cfg;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err_clear();
		assert_int_equal(parse(bad[i], &cfg), -EINVAL);
		assert_true(err_detail()[0] != '\0');
		/* Untouched on failure. */
		assert_memory_equal(&cfg, &before, sizeof(cfg));
	}
	/* The line is named. */
	assert_int_equal(parse("steward = user:root\n\nbogus = 1\n", &cfg), -EINVAL);
	assert_non_null(strstr(err_detail(), "line 3"));
	/* A NUL byte inside. */
	assert_int_equal(config_parse("steward = user:root\0x\n", 22, &cfg), -EINVAL);
	/* Oversized. */
	memset(big, '#', sizeof(big));
	assert_int_equal(config_parse(big, sizeof(big), &cfg), -E2BIG);
	/* Too many entries for a role. */
	for (int i = 0; i <= CONFIG_PRINCIPALS_MAX; i++)
		off += (size_t)snprintf(many + off, sizeof(many) - off, "steward = user:0\n");
	assert_int_equal(config_parse(many, off, &cfg), -EINVAL);
	assert_memory_equal(&cfg, &before, sizeof(cfg));
}

static void test_config_roles(void **state)
{
	struct config cfg;
	struct policy_subject s = { .uid = 1000, .ngids = 2, .gids = { 1000, 4242 } };

	(void)state;
	assert_int_equal(parse("steward = user:0\nauditor = group:4242\n", &cfg), 0);
	assert_int_equal(config_roles(&cfg, &s), ROLE_AUDITOR);
	s.gids[1] = 4243;
	assert_int_equal(config_roles(&cfg, &s), 0);
	s.uid = 0;
	assert_int_equal(config_roles(&cfg, &s), ROLE_STEWARD);
	s.gids[1] = 4242;
	assert_int_equal(config_roles(&cfg, &s), ROLE_STEWARD | ROLE_AUDITOR);
}

static void test_config_load_file_checks(void **state)
{
	char *dir = tu_mkdtemp("config");
	char *path = tu_fmt("%s/%s", dir, CONFIG_NAME);
	char *target = tu_fmt("%s/real.conf", dir);
	const char *text = "steward = user:root\n";
	struct config cfg;

	(void)state;
	assert_int_equal(config_load(dir, &cfg), -ENOENT);
	tu_write_file(path, text, strlen(text));
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(config_load(dir, &cfg), 0);
	assert_int_equal(cfg.nstewards, 1);
	/* Whoever can write it could make themselves a steward. */
	assert_int_equal(chmod(path, 0664), 0);
	assert_int_equal(config_load(dir, &cfg), -EPERM);
	assert_int_equal(chmod(path, 0646), 0);
	assert_int_equal(config_load(dir, &cfg), -EPERM);
	/* A symlink in its place is not followed. */
	assert_int_equal(rename(path, target), 0);
	assert_int_equal(chmod(target, 0644), 0);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(config_load(dir, &cfg), -ELOOP);
	tu_rm_rf(dir);
	free(dir);
	free(path);
	free(target);
}

/* ---- Grants ---------------------------------------------------------------------------------- */

struct fx {
	char *root, *store, *audit, *src;
	crypto_secret *pass;
	struct store *st;
	struct audit_log *log;
	struct grants *gs;
	uint64_t dsid;
};

static const struct policy_subject steward = { .uid = 0, .user = "root", .ngids = 1 };

static void fx_open(struct fx *f)
{
	assert_int_equal(store_open(f->store, f->pass, NULL, &f->st), 0);
	assert_int_equal(audit_open(f->audit, NULL, &f->log), 0);
	assert_int_equal(grants_load(f->st, &f->gs), 0);
}

static void fx_close(struct fx *f)
{
	grants_free(f->gs);
	audit_close(f->log);
	store_close(f->st);
	f->gs = NULL;
	f->log = NULL;
	f->st = NULL;
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	struct store_import *imp = NULL;
	struct store_dataset_info ds;
	uint32_t v;
	int dfd;

	f->root = tu_mkdtemp("daemon");
	f->store = tu_fmt("%s/store", f->root);
	f->audit = tu_fmt("%s/audit", f->root);
	f->src = tu_fmt("%s/src", f->root);
	f->pass = tu_pass("test passphrase");
	assert_int_equal(mkdir(f->src, 0755), 0);
	tu_seed_file(1000, 1, "%s/a", f->src);
	assert_int_equal(store_create(f->store, f->pass, &kdf, &f->st), 0);
	assert_int_equal(store_import_begin(f->st, "cohort", NULL, &imp), 0);
	dfd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	close(dfd);
	assert_int_equal(store_import_commit(imp, &v), 0);
	store_import_free(imp);
	assert_int_equal(store_dataset_get(f->st, "cohort", &ds), 0);
	f->dsid = ds.id;
	store_close(f->st);
	f->st = NULL;
	fx_open(f);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	fx_close(f);
	tu_rm_rf(f->root);
	free(f->root);
	free(f->store);
	free(f->audit);
	free(f->src);
	crypto_secret_free(f->pass);
	free(f);
	return 0;
}

static struct policy_grant mk_grant(struct fx *f, uint32_t uid, int64_t now)
{
	struct policy_grant g = {
		.kind = POLICY_USER,
		.principal_id = uid,
		.dataset_id = f->dsid,
		.version = POLICY_ALL_VERSIONS,
		.not_before = now - 10,
		.expires = now + 3600,
		.granted_by_uid = 0,
		.created = now,
	};

	snprintf(g.principal, sizeof(g.principal), "user%u", uid);
	snprintf(g.dataset, sizeof(g.dataset), "cohort");
	snprintf(g.purpose, sizeof(g.purpose), "training a sepsis model");
	snprintf(g.granted_by, sizeof(g.granted_by), "root");
	return g;
}

/* Count the audit records with this event. */
static int count_event(void *ctx, const json_t *rec, const char *line, size_t len)
{
	(void)line;
	(void)len;
	(void)rec;
	(*(int *)ctx)++;
	return 0;
}

static int events(struct fx *f, const char *event)
{
	struct audit_filter flt = { .event = event };
	int n = 0;

	assert_int_equal(audit_foreach(f->audit, &flt, count_event, &n), 0);
	return n;
}

struct ev_count {
	uint64_t grant_id;      /* 0: any */
	int n;
};

static int count_grant_event(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct ev_count *c = ctx;

	(void)line;
	(void)len;
	if (!c->grant_id ||
	    json_integer_value(json_object_get(rec, "grant_id")) == (json_int_t)c->grant_id)
		c->n++;
	return 0;
}

/* Records of event about grant_id (0: any grant). */
static int count_events(struct fx *f, const char *event, uint64_t grant_id)
{
	struct audit_filter flt = { .event = event };
	struct ev_count c = { .grant_id = grant_id };

	assert_int_equal(audit_foreach(f->audit, &flt, count_grant_event, &c), 0);
	return c.n;
}

static void test_grant_add_revoke_persist(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_subject alice = { .uid = 2001, .user = "alice", .ngids = 1, .gids = { 2001 } };
	struct policy_grant g = mk_grant(f, 2001, now), g2 = mk_grant(f, 2002, now), out;
	struct policy_revocation rv;
	struct policy_decision d;

	d = grants_decide(f->gs, &alice, f->dsid, 1, now);
	assert_int_equal(d.reason, POLICY_DENY_NO_GRANT);
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	assert_int_equal(g.id, 1);
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g2), 0);
	assert_int_equal(g2.id, 2);
	d = grants_decide(f->gs, &alice, f->dsid, 1, now);
	assert_int_equal(d.reason, POLICY_ALLOW);
	assert_int_equal(d.grant_id, 1);
	assert_int_equal(events(f, "grant_request"), 2);

	/* Survives a restart. */
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_count(f->gs), 2);
	d = grants_decide(f->gs, &alice, f->dsid, 1, now);
	assert_int_equal(d.reason, POLICY_ALLOW);

	/* Revocation bites at once, and survives a restart. */
	assert_int_equal(grants_revoke(f->gs, f->log, &steward, 1, "consent withdrawn", now, &out,
				       &rv),
			 0);
	assert_int_equal(out.id, 1);
	assert_int_equal(rv.grant_id, 1);
	assert_string_equal(rv.reason, "consent withdrawn");
	d = grants_decide(f->gs, &alice, f->dsid, 1, now);
	assert_int_equal(d.reason, POLICY_DENY_REVOKED);
	assert_int_equal(d.grant_id, 1);
	assert_int_equal(grants_revoke(f->gs, f->log, &steward, 1, "", now, NULL, NULL), -EEXIST);
	assert_int_equal(grants_revoke(f->gs, f->log, &steward, 99, "", now, NULL, NULL), -ENOENT);
	assert_int_equal(events(f, "revoke"), 1);
	fx_close(f);
	fx_open(f);
	d = grants_decide(f->gs, &alice, f->dsid, 1, now);
	assert_int_equal(d.reason, POLICY_DENY_REVOKED);

	/* An expired grant stops working at its second without anyone acting. */
	d = grants_decide(f->gs, &(struct policy_subject){ .uid = 2002, .ngids = 0 }, f->dsid, 1,
			  g2.expires - 1);
	assert_int_equal(d.reason, POLICY_ALLOW);
	d = grants_decide(f->gs, &(struct policy_subject){ .uid = 2002, .ngids = 0 }, f->dsid, 1,
			  g2.expires);
	assert_int_equal(d.reason, POLICY_DENY_EXPIRED);
}

static void test_grant_audit_failure_changes_nothing(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_grant g = mk_grant(f, 2001, now), g2 = mk_grant(f, 2003, now);
	struct policy_subject alice = { .uid = 2001, .ngids = 0 };

	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	audit_test_fail_next(f->log, AUDIT_FAULT_SYNC, EIO);
	/* Fail closed: no record, no grant, no revocation. */
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g2), -EIO);
	assert_int_equal(grants_count(f->gs), 1);
	/* (A failed batch may not fail the log for good: inject a fault before each call.) */
	audit_test_fail_next(f->log, AUDIT_FAULT_SYNC, EIO);
	assert_int_equal(grants_revoke(f->gs, f->log, &steward, g.id, "", now, NULL, NULL), -EIO);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_ALLOW);
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_count(f->gs), 1);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_ALLOW);
	/* The id the failed grant took is never handed out again. */
	g2 = mk_grant(f, 2003, now);
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g2), 0);
	assert_int_equal(g2.id, 3);
}

static void test_grant_invalid_refused(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_grant g = mk_grant(f, 2001, now);

	g.expires = g.not_before;   /* empty validity */
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), -EINVAL);
	g = mk_grant(f, 2001, now);
	g.purpose[0] = '\0';
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), -EINVAL);
	assert_int_equal(grants_count(f->gs), 0);
	assert_int_equal(events(f, "grant_request"), 0);
}

static void test_grant_damaged_record_refused(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_grant g = mk_grant(f, 2001, now);
	struct policy_revocation rv = { .grant_id = 9, .by_uid = 0, .at = now };
	struct grants *gs = NULL;
	uint8_t key[9] = { 'g' }, rkey[9] = { 'r' };
	json_t *j;
	char *text;

	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	/* A revocation of a grant that does not exist. */
	snprintf(rv.by, sizeof(rv.by), "root");
	j = policy_revocation_to_json(&rv);
	text = json_dumps(j, JSON_COMPACT);
	put_be64(rkey + 1, 9);
	assert_int_equal(store_policy_put(f->st, rkey, sizeof(rkey), text, strlen(text)), 0);
	free(text);
	json_decref(j);
	assert_int_equal(grants_load(f->st, &gs), -EBADMSG);
	assert_non_null(strstr(err_detail(), "r9"));
	/* A grant record that is not JSON (grant records are read before revocations). */
	put_be64(key + 1, 7);
	assert_int_equal(store_policy_put(f->st, key, sizeof(key), "{not json", 9), 0);
	assert_int_equal(grants_load(f->st, &gs), -EBADMSG);
	assert_non_null(strstr(err_detail(), "g7"));
	/* A valid grant stored under another id's key. */
	j = policy_grant_to_json(&g);
	text = json_dumps(j, JSON_COMPACT);
	assert_int_equal(store_policy_put(f->st, key, sizeof(key), text, strlen(text)), 0);
	free(text);
	json_decref(j);
	assert_int_equal(grants_load(f->st, &gs), -EBADMSG);
	assert_non_null(strstr(err_detail(), "g7"));
	assert_null(gs);
}


/* ---- Approvals, deny rules, dataset policies ------------------------------------------------ */

static const struct policy_subject steward2 = { .uid = 3000, .user = "steward2", .ngids = 1,
						.gids = { 3000 } };

static void test_grant_approval_lifecycle(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_subject alice = { .uid = 2001, .user = "alice", .ngids = 2,
					.gids = { 2001, 5001 } };
	struct policy_grant g = mk_grant(f, 2001, now), gg = mk_grant(f, 5001, now), out;
	struct policy_approval *ap = NULL;
	size_t nap;

	g.approvals_required = 1;
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	assert_string_equal(g.purpose_code, "general");
	/* Pending gives no access. */
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason,
			 POLICY_DENY_PENDING_APPROVAL);
	/* The requester may not approve; nor may the grantee. Nothing is recorded. */
	assert_int_equal(grants_approve(f->gs, f->log, &steward, g.id, now, NULL), -EPERM);
	assert_non_null(strstr(err_detail(), "requested by you"));
	assert_int_equal(grants_approve(f->gs, f->log, &alice, g.id, now, NULL), -EPERM);
	assert_non_null(strstr(err_detail(), "grantee"));
	assert_int_equal(grants_approve(f->gs, f->log, &steward2, 99, now, NULL), -ENOENT);
	assert_int_equal(events(f, "grant_approve"), 0);
	/* A group grant: a member of the group is its grantee too. */
	gg.kind = POLICY_GROUP;
	gg.approvals_required = 1;
	assert_int_equal(grants_add(f->gs, f->log, &steward, &gg), 0);
	assert_int_equal(grants_approve(f->gs, f->log, &alice, gg.id, now, NULL), -EPERM);
	/* Another steward approves: in force at once. */
	assert_int_equal(grants_approve(f->gs, f->log, &steward2, g.id, now, &out), 0);
	assert_int_equal(out.approvals, 1);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_ALLOW);
	assert_int_equal(grants_approve(f->gs, f->log, &steward2, g.id, now, NULL), -EEXIST);
	assert_int_equal(events(f, "grant_approve"), 1);
	/* Persists across a reload: approvals are records of their own. */
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_ALLOW);
	assert_int_equal(grants_approvals(f->gs, g.id, &ap, &nap), 0);
	assert_int_equal(nap, 1);
	assert_int_equal(ap[0].by_uid, 3000);
	assert_string_equal(ap[0].by, "steward2");
	free(ap);
	/* Enough approvals: more are refused; a revoked grant cannot be approved. */
	assert_int_equal(grants_approve(f->gs, f->log, &(struct policy_subject){ .uid = 3001,
							.user = "s3", .ngids = 0 },
					g.id, now, NULL),
			 -EALREADY);
	assert_int_equal(grants_revoke(f->gs, f->log, &steward, gg.id, "", now, NULL, NULL), 0);
	assert_int_equal(grants_approve(f->gs, f->log, &steward2, gg.id, now, NULL), -ESTALE);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).grant_id, g.id);
}

static void test_deny_rules(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_subject alice = { .uid = 2001, .user = "alice", .ngids = 2,
					.gids = { 2001, 5001 } };
	struct policy_grant g = mk_grant(f, 2001, now);
	struct policy_deny x = { .kind = POLICY_GROUP, .principal_id = 5001,
				 .principal = "cardio", .dataset_id = f->dsid, .dataset = "cohort",
				 .reason = "audit finding", .by = "root", .created = now },
			   all = { .kind = POLICY_EVERYONE, .reason = "incident", .by = "root",
				   .created = now },
			   *list = NULL, out;
	struct policy_decision d;
	size_t n;

	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_ALLOW);
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &x), 0);
	assert_int_equal(x.id, 2);   /* the grant counter */
	d = grants_decide(f->gs, &alice, f->dsid, 1, now);
	assert_int_equal(d.reason, POLICY_DENY_BY_RULE);
	assert_int_equal(d.rule_id, x.id);
	/* A rule without a reason is refused, and takes no id. */
	all.reason[0] = '\0';
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &all), -EINVAL);
	snprintf(all.reason, sizeof(all.reason), "incident");
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_DENY_BY_RULE);
	/* A removal needs a reason. */
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward, x.id, "", 0, now, NULL),
			 -EINVAL);
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward, x.id, "cleared", 0, now, &out),
			 0);
	assert_int_equal(out.removed_at, now);
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward, x.id, "again", 0, now, NULL),
			 -EEXIST);
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward, 99, "r", 0, now, NULL),
			 -ENOENT);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_ALLOW);
	/* Everyone, every dataset. */
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &all), 0);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_DENY_BY_RULE);
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_DENY_BY_RULE);
	assert_int_equal(grants_deny_snapshot(f->gs, &list, &n), 0);
	assert_int_equal(n, 2);
	assert_true(list[0].removed_at != 0);
	assert_int_equal(list[1].kind, POLICY_EVERYONE);
	free(list);
	assert_int_equal(events(f, "deny_add"), 2);
	assert_int_equal(events(f, "deny_remove"), 1);
}

/* The same subject and dataset cannot be blocked twice while a rule is in force; once it is
 * removed, a new rule may be added. */
static void test_deny_duplicate(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_deny x = { .kind = POLICY_USER, .principal_id = 2001, .principal = "alice",
				 .dataset_id = f->dsid, .dataset = "cohort", .reason = "one",
				 .by = "root", .created = now },
			   y = x, other = x;

	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &x), 0);
	snprintf(y.reason, sizeof(y.reason), "another reason");
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &y), -EEXIST);
	assert_non_null(strstr(err_detail(), "already blocks user alice"));
	/* Another dataset (every dataset) is another rule. */
	other.dataset_id = 0;
	other.dataset[0] = '\0';
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &other), 0);
	assert_int_equal(events(f, "deny_add"), 2);
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward, x.id, "done", 0, now, NULL),
			 0);
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &y), 0);
}

/* With approvals required, a removal waits for another steward; the requester, the rule's
 * subject and a repeat approval are refused; it survives a restart; the completing approval
 * removes it. */
static void test_deny_removal_approvals(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_subject alice = { .uid = 2001, .user = "alice", .ngids = 1, .gids = { 2001 } };
	struct policy_subject bob = { .uid = 2002, .user = "bob", .ngids = 1, .gids = { 2002 } };
	struct policy_grant g = mk_grant(f, 2001, now);
	struct policy_deny x = { .kind = POLICY_USER, .principal_id = 2002, .principal = "bob",
				 .dataset_id = f->dsid, .dataset = "cohort", .reason = "inquiry",
				 .by = "root", .created = now },
			   out;
	struct policy_deny_removal rm;
	struct policy_approval *ap = NULL;
	size_t n;

	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &x), 0);
	assert_int_equal(grants_deny_approve(f->gs, f->log, &steward2, x.id, now, NULL), -ENOENT);
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward, x.id, "cleared", 2, now, &out),
			 0);
	assert_int_equal(out.removed_at, 0);
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward2, x.id, "again", 2, now, NULL),
			 -EALREADY);
	/* Still in force for bob. */
	assert_int_equal(grants_decide(f->gs, &bob, f->dsid, 1, now).reason, POLICY_DENY_BY_RULE);
	assert_int_equal(grants_deny_approve(f->gs, f->log, &steward, x.id, now, NULL), -EPERM);
	assert_int_equal(grants_deny_approve(f->gs, f->log, &bob, x.id, now, NULL), -EPERM);
	assert_int_equal(grants_deny_approve(f->gs, f->log, &steward2, x.id, now + 1, &out), 0);
	assert_int_equal(out.removed_at, 0);
	assert_int_equal(grants_deny_approve(f->gs, f->log, &steward2, x.id, now, NULL), -EEXIST);
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_decide(f->gs, &bob, f->dsid, 1, now).reason, POLICY_DENY_BY_RULE);
	assert_int_equal(grants_deny_removal(f->gs, x.id, &rm, &ap, &n), 0);
	assert_string_equal(rm.reason, "cleared");
	assert_int_equal(rm.approvals_required, 2);
	assert_int_equal(n, 1);
	free(ap);
	/* alice (not named by the rule, not the requester) completes it. */
	assert_int_equal(grants_deny_approve(f->gs, f->log, &alice, x.id, now + 2, &out), 0);
	assert_int_equal(out.removed_at, now + 2);
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_decide(f->gs, &bob, f->dsid, 1, now).reason, POLICY_DENY_NO_GRANT);
	assert_int_equal(events(f, "deny_remove"), 1);
	assert_int_equal(events(f, "deny_remove_approve"), 2);
}

/* The one approval mechanism (daemon/approvals.h), through the grant kind: an approval names the
 * exact request it saw (its subject digest, the same after a reload) or is refused; expiry is
 * its refusal; an approval by the requester written into the store is a forgery the load
 * refuses. */
static void test_approvals_mechanism(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	const struct policy_subject s3 = { .uid = 3001, .user = "s3", .ngids = 0 };
	struct policy_grant g = mk_grant(f, 2001, now), gx = mk_grant(f, 2001, now);
	struct policy_approval a = { .by_uid = 0, .by = "root", .at = now };
	struct pending p, q;
	uint8_t wrong[APPROVALS_SUBJECT_LEN], key[13] = { 'h' };
	struct grants *gs = NULL;
	char *text;
	json_t *j;

	g.approvals_required = 2;
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	assert_int_equal(approvals_get(f->gs, &approval_kind_grant, g.id, &p), 0);
	assert_int_equal(p.id, g.id);
	assert_int_equal(p.by_uid, 0);
	assert_int_equal(p.required, 2);
	assert_int_equal(p.approvals, 0);
	assert_int_equal(p.expires, g.expires);
	assert_int_equal(approvals_get(f->gs, &approval_kind_erasure, g.id, &q), -ENOENT);
	/* Another request's subject (one bit off) is refused, and nothing is recorded. */
	memcpy(wrong, p.subject, sizeof(wrong));
	wrong[7] ^= 0x10;
	assert_int_equal(approvals_approve(f->gs, f->log, &approval_kind_grant, &steward2, g.id, now,
					   wrong, NULL), -ESTALE);
	assert_int_equal(events(f, "grant_approve"), 0);
	assert_int_equal(approvals_approve(f->gs, f->log, &approval_kind_grant, &steward2, g.id, now,
					   p.subject, &q), 0);
	assert_int_equal(q.approvals, 1);
	assert_int_equal(events(f, "grant_approve"), 1);
	/* Loaded again, the request has the same subject and its approval. */
	fx_close(f);
	fx_open(f);
	assert_int_equal(approvals_get(f->gs, &approval_kind_grant, g.id, &q), 0);
	assert_memory_equal(q.subject, p.subject, sizeof(p.subject));
	assert_int_equal(q.approvals, 1);
	/* Past its expiry a request takes no approval. */
	gx.approvals_required = 1;
	gx.expires = now + 60;
	assert_int_equal(grants_add(f->gs, f->log, &steward, &gx), 0);
	assert_int_equal(grants_approve(f->gs, f->log, &s3, gx.id, now + 60, NULL), -ESTALE);
	assert_non_null(strstr(err_detail(), "has expired"));
	assert_int_equal(events(f, "grant_approve"), 1);
	/* The requester's own approval, written into the store directly, is refused at load. */
	a.grant_id = g.id;
	j = policy_approval_to_json(&a);
	text = json_dumps(j, JSON_COMPACT);
	put_be64(key + 1, g.id);
	put_be32(key + 9, 0);
	assert_int_equal(store_policy_put(f->st, key, sizeof(key), text, strlen(text)), 0);
	assert_int_equal(grants_load(f->st, &gs), -EBADMSG);
	assert_null(gs);
	free(text);
	json_decref(j);
}

/* A removal approval written into the store for a rule whose removal nobody asked for (or
 * under another uid's key) is a forgery: the table refuses to load rather than lift the rule. */
static void test_deny_forged_approval_refused(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_deny x = { .kind = POLICY_USER, .principal_id = 2002, .principal = "bob",
				 .reason = "inquiry", .by = "root", .created = now };
	struct policy_approval a = { .by_uid = 3000, .by = "steward2", .at = now };
	struct grants *gs = NULL;
	uint8_t key[13] = { 'i' };
	json_t *j;
	char *text;

	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &x), 0);
	a.grant_id = x.id;
	j = policy_approval_to_json(&a);
	text = json_dumps(j, JSON_COMPACT);
	put_be64(key + 1, x.id);
	put_be32(key + 9, 3000);
	assert_int_equal(store_policy_put(f->st, key, sizeof(key), text, strlen(text)), 0);
	assert_int_equal(grants_load(f->st, &gs), -EBADMSG);
	assert_non_null(strstr(err_detail(), "requested deny rule removal"));
	/* With a request in place, an approval filed under another uid's key is refused too. */
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward, x.id, "r", 1, now, NULL), 0);
	put_be32(key + 9, 3001);
	assert_int_equal(store_policy_put(f->st, key, sizeof(key), text, strlen(text)), 0);
	assert_int_equal(grants_load(f->st, &gs), -EBADMSG);
	assert_null(gs);
	free(text);
	json_decref(j);
}

static void test_dataset_policy(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_subject alice = { .uid = 2001, .user = "alice", .ngids = 1, .gids = { 2001 } };
	struct policy_grant g = mk_grant(f, 2001, now);
	struct policy_dataset p = { .dataset_id = f->dsid, .dataset = "cohort",
				    .controller = "Example Biobank", .updated_by = "root",
				    .updated = now },
			      back;
	struct policy_decision d;

	assert_int_equal(grants_dataset_get(f->gs, f->dsid, &back), -ENOENT);
	assert_false(grants_cache_kernel(f->gs, f->dsid));
	snprintf(g.purpose_code, sizeof(g.purpose_code), "ai-training");
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_ALLOW);
	/* Consent amended to NMDS: the AI-training grant is excluded from then on. */
	assert_int_equal(policy_duo_parse("NMDS", p.duo, &p.nduo), 0);
	p.cache = POLICY_CACHE_KERNEL;
	assert_int_equal(grants_dataset_set(f->gs, f->log, &steward, &p, "dataset_set"), 0);
	d = grants_decide(f->gs, &alice, f->dsid, 1, now);
	assert_int_equal(d.reason, POLICY_DENY_PURPOSE_EXCLUDED);
	assert_int_equal(d.code, POLICY_DUO_NMDS);
	assert_true(grants_cache_kernel(f->gs, f->dsid));
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_dataset_get(f->gs, f->dsid, &back), 0);
	assert_string_equal(back.controller, "Example Biobank");
	assert_int_equal(back.nduo, 1);
	assert_true(grants_cache_kernel(f->gs, f->dsid));
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason,
			 POLICY_DENY_PURPOSE_EXCLUDED);
	/* A bad record is refused whole. */
	p.cache = 7;
	assert_int_equal(grants_dataset_set(f->gs, f->log, &steward, &p, "dataset_set"), -EINVAL);
	assert_int_equal(events(f, "dataset_set"), 1);
}

static void test_policy_audit_failure_changes_nothing(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_subject alice = { .uid = 2001, .user = "alice", .ngids = 1, .gids = { 2001 } };
	struct policy_grant g = mk_grant(f, 2001, now);
	struct policy_deny x = { .kind = POLICY_USER, .principal_id = 2001, .principal = "alice",
				 .reason = "r", .by = "root", .created = now };
	struct policy_dataset p = { .dataset_id = f->dsid, .dataset = "cohort", .updated_by = "root",
				    .updated = now, .cache = POLICY_CACHE_KERNEL },
			      back;

	g.approvals_required = 1;
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	audit_test_fail_next(f->log, AUDIT_FAULT_SYNC, EIO);
	assert_int_equal(grants_approve(f->gs, f->log, &steward2, g.id, now, NULL), -EIO);
	audit_test_fail_next(f->log, AUDIT_FAULT_SYNC, EIO);
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &x), -EIO);
	audit_test_fail_next(f->log, AUDIT_FAULT_SYNC, EIO);
	assert_int_equal(grants_dataset_set(f->gs, f->log, &steward, &p, "dataset_set"), -EIO);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason,
			 POLICY_DENY_PENDING_APPROVAL);
	assert_false(grants_cache_kernel(f->gs, f->dsid));
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason,
			 POLICY_DENY_PENDING_APPROVAL);
	assert_int_equal(grants_dataset_get(f->gs, f->dsid, &back), -ENOENT);
	/* And a deny removal that cannot be audited leaves the rule in force. */
	assert_int_equal(grants_deny_add(f->gs, f->log, &steward, &x), 0);
	audit_test_fail_next(f->log, AUDIT_FAULT_SYNC, EIO);
	assert_int_equal(grants_deny_remove(f->gs, f->log, &steward, x.id, "r", 0, now, NULL),
			 -EIO);
	fx_close(f);
	fx_open(f);
	assert_int_equal(grants_decide(f->gs, &alice, f->dsid, 1, now).reason, POLICY_DENY_BY_RULE);
}

struct watch_seen {
	pthread_mutex_t lock;
	uint64_t dataset_id;
	char name[POLICY_DATASET_MAX + 1];
	unsigned calls;
};

static void on_changed(void *ctx, uint64_t dataset_id, const char *name)
{
	struct watch_seen *w = ctx;

	pthread_mutex_lock(&w->lock);
	w->dataset_id = dataset_id;
	snprintf(w->name, sizeof(w->name), "%s", name);
	w->calls++;
	pthread_mutex_unlock(&w->lock);
}

static void test_grant_watch(void **state)
{
	struct fx *f = *state;
	struct watch_seen w = { .lock = PTHREAD_MUTEX_INITIALIZER };
	int64_t now = time(NULL);
	struct policy_grant g = mk_grant(f, 2001, now);
	unsigned calls = 0;

	g.expires = now + 2;
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	/* And a grant that starts at now + 4 (late enough for a loaded machine to have started the
	 * thread by then), and one revoked (its expiry is no event). */
	{
		struct policy_grant s = mk_grant(f, 2002, now), v = mk_grant(f, 2003, now);

		s.not_before = now + 4;
		v.expires = now + 2;
		assert_int_equal(grants_add(f->gs, f->log, &steward, &s), 0);
		assert_int_equal(grants_add(f->gs, f->log, &steward, &v), 0);
		assert_int_equal(grants_revoke(f->gs, f->log, &steward, v.id, "test", now, NULL,
					       NULL), 0);
	}
	grants_watch_record(f->gs, f->log);
	assert_int_equal(grants_watch_start(f->gs, on_changed, &w), 0);
	assert_int_equal(grants_watch_start(f->gs, on_changed, &w), -EBUSY);
	/* Expiry at now + 2: the call comes within a second of it. */
	for (int i = 0; i < 40 && !calls; i++) {
		usleep(100 * 1000);
		pthread_mutex_lock(&w.lock);
		calls = w.calls;
		pthread_mutex_unlock(&w.lock);
	}
	assert_int_equal(calls, 1);
	assert_true(time(NULL) <= g.expires + 1);
	assert_int_equal(w.dataset_id, f->dsid);
	assert_string_equal(w.name, "cohort");
	/* Then the start's record, at now + 4. */
	for (int i = 0; i < 100 && (count_events(f, "grant_expired", 0) == 0 ||
				    count_events(f, "grant_started", 0) == 0); i++)
		usleep(100 * 1000);
	grants_watch_stop(f->gs);
	grants_watch_stop(f->gs);   /* twice is fine */
	/* The times were recorded when the thread saw them (#14, point 11): one expiry (not the
	 * revoked grant's), one start, each once. */
	assert_int_equal(count_events(f, "grant_expired", g.id), 1);
	assert_int_equal(count_events(f, "grant_expired", 0), 1);
	assert_int_equal(count_events(f, "grant_started", 0), 1);
}

/* ---- Nodes: the primary's signal, the node key (issue 17) ------------------------------------- */

static void sign_signal(const uint8_t id[16], const struct node_signal *sg, const uint8_t *sk,
			const char *name, char **ret, size_t *ret_len)
{
	char text[NODE_SIGNAL_MAX];
	int n = node_signal_text(id, sg, text, sizeof(text));

	assert_true(n > 0);
	assert_int_equal(note_sign(text, (size_t)n, name, sk, ret, ret_len), 0);
}

/* nodes/NAME.seen: believed only when signed by the node's enrolled key, for this store and this
 * node, and canonical; no time before 1970 (docs/FORMAT.md 3.10). */
static void test_node_seen_parse(void **state)
{
	const struct node_seen s = { .time_ns = 1765000000000000000, .seq = 9, .ring = 2,
				     .token = 3, .signal_ns = 1764999999000000000,
				     .fresh_ns = 1764999999000000000, .catch_ups = 4 };
	uint8_t pk[32], sk[64], id[16];
	char text[NODE_SEEN_MAX], *note = NULL;
	struct node_seen got, none = { .seq = 77 };
	const char *const times[] = { "time 1", "signal 1", "fresh 1" };
	size_t nl = 0;
	int n;

	(void)state;
	crypto_sign_keypair(pk, sk);
	randombytes_buf(id, sizeof(id));
	n = node_seen_text(id, "gpu01", &s, text, sizeof(text));
	assert_true(n > 0);
	assert_int_equal(note_sign(text, (size_t)n, "gpu01", sk, &note, &nl), 0);
	assert_int_equal(node_seen_parse(note, nl, "gpu01", id, pk, &got), 0);
	assert_memory_equal(&got, &s, sizeof(s));
	/* Another node's name for the same file. */
	got = none;
	assert_int_equal(node_seen_parse(note, nl, "gpu02", id, pk, &got), -EKEYREJECTED);
	assert_int_equal(got.seq, 77);
	free(note);
	/* Each time with a sign (found with fuzz_node_seen's seeds: "-5" prints back as "-5"). */
	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		char bad[NODE_SEEN_MAX], *p;

		snprintf(bad, sizeof(bad), "%s", text);
		p = strstr(bad, times[i]);
		assert_non_null(p);
		p[strlen(times[i]) - 1] = '-';
		assert_int_equal(note_sign(bad, strlen(bad), "gpu01", sk, &note, &nl), 0);
		got = none;
		assert_int_equal(node_seen_parse(note, nl, "gpu01", id, pk, &got), -EBADMSG);
		assert_int_equal(got.seq, 77);
		free(note);
	}
	sodium_memzero(sk, sizeof(sk));
}

/* Whoever can write the shared directory can write nodes/signal: only the primary's key, this
 * store, a canonical text, a token not below the highest seen, a newer time and no date in the
 * future make a node accept it. */
static void test_node_signal(void **state)
{
	uint8_t pk[32], sk[64], pk2[32], sk2[64], id[16], id2[16];
	struct note_verifier v;
	struct node_signal sg = { .token = 3, .time_ns = node_now_ns(), .seq = 42 }, got;
	struct node_signal_state st = { 0 };
	char *note = NULL, *vt = NULL;
	size_t nl = 0;

	(void)state;
	crypto_sign_keypair(pk, sk);
	crypto_sign_keypair(pk2, sk2);
	randombytes_buf(id, sizeof(id));
	randombytes_buf(id2, sizeof(id2));
	assert_int_equal(note_verifier_format("primary", pk, &vt), 0);
	assert_int_equal(note_verifier_parse(vt, strlen(vt), &v), 0);
	free(vt);

	sign_signal(id, &sg, sk, "primary", &note, &nl);
	assert_int_equal(node_signal_parse(note, nl, &v, id, &got), 0);
	assert_int_equal(got.token, 3);
	assert_int_equal(got.seq, 42);
	assert_int_equal(got.time_ns, sg.time_ns);
	/* Another store's signal. */
	assert_int_equal(node_signal_parse(note, nl, &v, id2, &got), -EBADMSG);
	/* A bit changed in the text: the signature fails. */
	note[20] ^= 1;
	assert_int_equal(node_signal_parse(note, nl, &v, id, &got), -EKEYREJECTED);
	free(note);
	/* Signed by another key under the primary's name (a node's, say). */
	sign_signal(id, &sg, sk2, "primary", &note, &nl);
	assert_int_equal(node_signal_parse(note, nl, &v, id, &got), -EKEYREJECTED);
	free(note);
	/* Signed by the primary but not canonical (a leading zero). */
	{
		char text[NODE_SIGNAL_MAX], hex[33];
		int n;

		sodium_bin2hex(hex, sizeof(hex), id, 16);
		n = snprintf(text, sizeof(text), "enclave-signal/1 %s\ntoken 03\ntime %lld\nseq 42\n"
			     "ring 0\n", hex, (long long)sg.time_ns);
		assert_int_equal(note_sign(text, (size_t)n, "primary", sk, &note, &nl), 0);
		assert_int_equal(node_signal_parse(note, nl, &v, id, &got), -EBADMSG);
		free(note);
		/* A time with a sign: no unix time the primary writes (found with fuzz_node_signal's
		 * seeds: "-5" prints back as "-5", so the canonical check alone let it through). */
		n = snprintf(text, sizeof(text), "enclave-signal/1 %s\ntoken 3\ntime -%lld\nseq 42\n"
			     "ring 0\n", hex, (long long)sg.time_ns);
		assert_int_equal(note_sign(text, (size_t)n, "primary", sk, &note, &nl), 0);
		assert_int_equal(node_signal_parse(note, nl, &v, id, &got), -EBADMSG);
		free(note);
	}

	/* Acceptance: fresh, then a replay, a lower token (a fenced primary), the future. */
	assert_int_equal(node_signal_accept(&st, &sg, node_now_ns()), 0);
	assert_int_equal(node_signal_accept(&st, &sg, node_now_ns()), -EALREADY);
	sg.time_ns -= 1000000;
	assert_int_equal(node_signal_accept(&st, &sg, node_now_ns()), -EALREADY);
	sg.time_ns += 2000000;
	sg.token = 2;
	assert_int_equal(node_signal_accept(&st, &sg, node_now_ns()), -ESTALE);
	sg.token = 3;
	sg.time_ns = node_now_ns() + 10LL * 1000000000;
	assert_int_equal(node_signal_accept(&st, &sg, node_now_ns()), -ERANGE);
	assert_int_equal(st.token, 3);
	/* A new primary (a higher token) may have an earlier clock: accepted. */
	sg.token = 4;
	sg.time_ns = st.time_ns - 5000000;
	assert_int_equal(node_signal_accept(&st, &sg, node_now_ns()), 0);
	assert_int_equal(st.token, 4);
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(sk2, sizeof(sk2));
}

/* A refused public key text leaves both outputs as they were (STYLE.md rule 4): a key part
 * that is not 64 bytes of base64 after a good name, and a name that is not valid. Found by
 * fuzz_node_public. */
static void test_node_public_refused(void **state)
{
	static const char *const bad[] = {
		"enclave-node-public:gpu01:AAAA",
		"enclave-node-public:gpu01:",
		"enclave-node-public:../x:AAAA",
	};
	char name[NODE_NAME_MAX + 1], before[NODE_NAME_MAX + 1];
	struct node_public pub, pub_before;

	(void)state;
	memset(before, 'z', sizeof(before));
	memset(&pub_before, 0xa5, sizeof(pub_before));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(name, before, sizeof(name));
		pub = pub_before;
		err_clear();
		assert_int_equal(node_public_parse(bad[i], strlen(bad[i]), name, &pub), -EINVAL);
		assert_true(err_detail()[0] != '\0');
		assert_memory_equal(name, before, sizeof(name));
		assert_memory_equal(&pub, &pub_before, sizeof(pub));
	}
}

/* Only the canonical text of a key is a node public key: libsodium 1.0.18 (Debian 12) decodes
 * any byte from 0x80 up as '/', so a text with such a byte in its key part decoded to a key that
 * another text names; and a name with a NUL in it was cut there. Found by fuzz_node_public. */
static void test_node_public_canonical(void **state)
{
	char text[NODE_PUBLIC_TEXT_MAX], name[NODE_NAME_MAX + 1];
	struct node_public pub, pub2;
	char *key;

	(void)state;
	memset(&pub, 0xff, sizeof(pub));        /* every key character '/' */
	assert_int_equal(node_public_format("gpu01", &pub, text, sizeof(text)), 0);
	assert_int_equal(node_public_parse(text, strlen(text), name, &pub2), 0);
	assert_memory_equal(&pub, &pub2, sizeof(pub));
	key = strrchr(text, ':') + 1;
	assert_int_equal(key[0], '/');
	key[0] = (char)0x80;
	assert_int_equal(node_public_parse(text, strlen(text), name, &pub2), -EINVAL);
	key[0] = (char)0xff;
	assert_int_equal(node_public_parse(text, strlen(text), name, &pub2), -EINVAL);
	/* A NUL in the name: the text named "gpu01\0x" was taken for node gpu01. */
	key[0] = '/';
	assert_int_equal(node_public_format("gpu01", &pub, text, sizeof(text)), 0);
	memmove(text + 27, text + 25, strlen(text + 25) + 1);
	memcpy(text + 25, "\0x", 2);
	assert_int_equal(node_public_parse(text, strlen(text + 27) + 27, name, &pub2), -EINVAL);
}

/* The node key pair: made once (never overwritten), private, and its public text round-trips;
 * a damaged public text is refused. */
static void test_node_key(void **state)
{
	char *dir = tu_mkdtemp("nodekey");
	uint8_t seed[32], seed2[32];
	struct node_public pub, pub2;
	char text[NODE_PUBLIC_TEXT_MAX], name[NODE_NAME_MAX + 1];
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(node_key_create(fd, "node.key", seed), 0);
	assert_int_equal(node_key_create(fd, "node.key", seed2), -EEXIST);
	assert_int_equal(node_key_read(fd, "node.key", seed2), 0);
	assert_memory_equal(seed, seed2, 32);
	assert_int_equal(node_key_public(seed, &pub), 0);
	assert_int_equal(node_public_format("gpu-01", &pub, text, sizeof(text)), 0);
	assert_int_equal(node_public_parse(text, strlen(text), name, &pub2), 0);
	assert_string_equal(name, "gpu-01");
	assert_memory_equal(&pub, &pub2, sizeof(pub));
	text[strlen(text) - 3] = '!';
	assert_int_equal(node_public_parse(text, strlen(text), name, &pub2), -EINVAL);
	assert_int_equal(node_public_parse("enclave-node-public:../x:AAAA", 29, name, &pub2),
			 -EINVAL);
	assert_true(node_name_valid("gpu-01.site"));
	assert_false(node_name_valid(".hidden"));
	assert_false(node_name_valid("a/b"));
	assert_false(node_name_valid(""));
	/* Open to others: refused. */
	assert_int_equal(fchmodat(fd, "node.key", 0640, 0), 0);
	assert_int_equal(node_key_read(fd, "node.key", seed2), -EPERM);
	close(fd);
	sodium_memzero(seed, sizeof(seed));
	sodium_memzero(seed2, sizeof(seed2));
	tu_rm_rf(dir);
	free(dir);
}

/* The primary's collection waits node_gc_grace_s only once a node has read the store (its log
 * directory under audit/nodes/), and never on a node. */
static void test_node_gc_grace(void **state)
{
	char *root = tu_mkdtemp("grace");
	char *nodes = tu_fmt("%s/nodes", root), *one = tu_fmt("%s/nodes/gpu-01", root);
	struct daemon d = { .cfg_lock = PTHREAD_MUTEX_INITIALIZER };

	(void)state;
	snprintf(d.audit_dir, sizeof(d.audit_dir), "%s", root);
	d.cfg.node_gc_grace_s = 7;
	assert_int_equal(node_gc_grace_ms(&d), 0);
	assert_int_equal(mkdir(nodes, 0755), 0);
	assert_int_equal(node_gc_grace_ms(&d), 0);
	assert_int_equal(mkdir(one, 0700), 0);
	assert_int_equal(node_gc_grace_ms(&d), 7000);
	d.node = "gpu-01";
	assert_int_equal(node_gc_grace_ms(&d), 0);
	tu_rm_rf(root);
	free(one);
	free(nodes);
	free(root);
}

/* Node enrolment (issue 17 point 3) goes through the approval mechanism: a node waiting for
 * approval gets no keys (it is not among the enrolled), its requester cannot approve it, another
 * steward's approval enrols it, one name or key serves one node, a removal takes it out at once
 * and is final, and all of it reads back the same from the store. */
static void test_node_enrolment(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct node_public pub, pub2;
	struct grants_node x;
	struct node_enrolled *e = NULL;
	size_t n = 0;
	uint8_t seed[32];

	randombytes_buf(seed, sizeof(seed));
	assert_int_equal(node_key_public(seed, &pub), 0);
	randombytes_buf(seed, sizeof(seed));
	assert_int_equal(node_key_public(seed, &pub2), 0);
	assert_int_equal(grants_node_add(f->gs, f->log, &steward, "gpu-01", &pub, 1, now, &x), 0);
	assert_string_equal(grants_node_state(&x), "pending_approval");
	assert_int_equal(events(f, "node_add"), 1);
	/* Waiting: no keys for it, and it does not count as enrolled. */
	assert_int_equal(grants_nodes_enrolled(f->gs, &e, &n), 0);
	assert_int_equal(n, 0);
	free(e);
	assert_false(grants_node_enrolled_as(f->gs, "gpu-01", pub.sign_pk));
	/* The same name or the same key again: refused. */
	assert_int_equal(grants_node_add(f->gs, f->log, &steward, "gpu-01", &pub2, 1, now, NULL),
			 -EEXIST);
	assert_int_equal(grants_node_add(f->gs, f->log, &steward, "gpu-02", &pub, 1, now, NULL),
			 -EEXIST);
	assert_int_equal(grants_node_add(f->gs, f->log, &steward, "../x", &pub2, 1, now, NULL),
			 -EINVAL);
	/* Its requester cannot approve it; another steward can. */
	assert_int_equal(grants_node_approve(f->gs, f->log, &steward, x.id, now, NULL), -EPERM);
	assert_false(grants_node_enrolled_as(f->gs, "gpu-01", pub.sign_pk));
	assert_int_equal(grants_node_approve(f->gs, f->log, &steward2, x.id, now, &x), 0);
	assert_string_equal(grants_node_state(&x), "enrolled");
	assert_true(grants_node_enrolled_as(f->gs, "gpu-01", pub.sign_pk));
	assert_false(grants_node_enrolled_as(f->gs, "gpu-01", pub2.sign_pk));
	assert_int_equal(grants_nodes_enrolled(f->gs, &e, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].name, "gpu-01");
	assert_memory_equal(e[0].pub.box_pk, pub.box_pk, 32);
	free(e);
	/* Read back from the store: the same. */
	fx_close(f);
	fx_open(f);
	assert_true(grants_node_enrolled_as(f->gs, "gpu-01", pub.sign_pk));
	/* Removed: at once, and final; the policy records move to a new key (a refused removal
	 * rotates nothing). */
	assert_int_equal(store_policy_generation(f->st), 0);
	assert_int_equal(grants_node_remove(f->gs, f->log, &steward, "gpu-01", "", now, NULL),
			 -EINVAL);
	assert_int_equal(store_policy_generation(f->st), 0);
	assert_int_equal(grants_node_remove(f->gs, f->log, &steward, "gpu-01", "stolen", now, &x),
			 0);
	assert_int_equal(store_policy_generation(f->st), 1);
	assert_string_equal(grants_node_state(&x), "removed");
	assert_false(grants_node_enrolled_as(f->gs, "gpu-01", pub.sign_pk));
	assert_int_equal(grants_node_remove(f->gs, f->log, &steward, "gpu-01", "again", now, NULL),
			 -ENOENT);
	assert_int_equal(events(f, "node_remove"), 1);
	fx_close(f);
	fx_open(f);
	/* Every record reads back under the new key. */
	assert_int_equal(store_policy_generation(f->st), 1);
	assert_false(grants_node_enrolled_as(f->gs, "gpu-01", pub.sign_pk));
	assert_int_equal(grants_nodes_enrolled(f->gs, &e, &n), 0);
	assert_int_equal(n, 0);
	free(e);
	/* A new enrolment of the name, with a new key, starts over under the approval rule. */
	assert_int_equal(grants_node_add(f->gs, f->log, &steward, "gpu-01", &pub2, 0, now, &x), 0);
	assert_string_equal(grants_node_state(&x), "enrolled");
	assert_true(grants_node_enrolled_as(f->gs, "gpu-01", pub2.sign_pk));
}

/* The ring hook of test_node_remove_rekey_retry: at the first ring commit (a removal's new
 * policy key, step 1 of the rotation) a move record that does not authenticate appears, as
 * damage would, so that step 2 (every record re-keyed in one batch) fails. */
static void damage_once(void *ctx)
{
	struct fx *f = ctx;
	static const char k[MOVEKEY_LEN] = "move/0123456789abcdef";
	char *err = NULL;

	store_set_ring_hook(f->st, NULL, NULL);
	rocksdb_put_cf(f->st->ix.db, f->st->ix.wo_sync, f->st->ix.cf[CF_META], k, sizeof(k),
		       "garbage, not sealed under any key of this store", 48, &err);
	assert_null(err);
}

static int count_policy_record(void *ctx, const void *key, size_t klen, const void *val,
			       size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	++*(size_t *)ctx;
	return 0;
}

static size_t policy_records(struct fx *f)
{
	size_t n = 0;

	assert_int_equal(store_policy_foreach(f->st, count_policy_record, &n), 0);
	return n;
}

/* A removal whose key rotation cannot finish (step 2 fails after the new key is in the ring and
 * the removal recorded): the node is removed all the same and the steward told. The next policy
 * write first tries to finish the rotation: while it cannot, the write is refused and nothing is
 * written (nothing a removed node could read under the old key); once it can, the rotation is
 * finished (records, record keys and the policy key at the new generation, one key left) and the
 * write lands under the new key, and stays after a reopen. */
static void test_node_remove_rekey_retry(void **state)
{
	struct fx *f = *state;
	int64_t now = time(NULL);
	struct policy_grant g = mk_grant(f, 2001, now);
	struct node_public pub;
	struct grants_node x;
	uint8_t seed[32];
	size_t before;

	randombytes_buf(seed, sizeof(seed));
	assert_int_equal(node_key_public(seed, &pub), 0);
	assert_int_equal(grants_node_add(f->gs, f->log, &steward, "gpu-01", &pub, 0, now, &x), 0);
	assert_string_equal(grants_node_state(&x), "enrolled");
	store_set_ring_hook(f->st, damage_once, f);
	assert_true(grants_node_remove(f->gs, f->log, &steward, "gpu-01", "stolen", now, &x) < 0);
	assert_non_null(strstr(err_detail(), "is removed, but the policy records are not yet"));
	assert_false(grants_node_enrolled_as(f->gs, "gpu-01", pub.sign_pk));
	assert_int_equal(store_policy_generation(f->st), 0);
	assert_int_equal(store_record_generation(f->st), 0);
	/* A policy write now: refused, nothing written. */
	before = policy_records(f);
	assert_true(grants_add(f->gs, f->log, &steward, &g) < 0);
	assert_non_null(strstr(err_detail(), "rotation of a node removal is not finished"));
	assert_int_equal(grants_count(f->gs), 0);
	assert_int_equal(policy_records(f), before);
	assert_int_equal(store_policy_generation(f->st), 0);
	/* The damage repaired: the next write finishes the rotation first. */
	{
		static const char k[MOVEKEY_LEN] = "move/0123456789abcdef";
		char *err = NULL;

		rocksdb_delete_cf(f->st->ix.db, f->st->ix.wo_sync, f->st->ix.cf[CF_META], k,
				  sizeof(k), &err);
		assert_null(err);
	}
	assert_int_equal(grants_add(f->gs, f->log, &steward, &g), 0);
	assert_int_equal(store_policy_generation(f->st), 1);
	assert_int_equal(store_record_generation(f->st), 1);
	assert_int_equal(grants_count(f->gs), 1);
	fx_close(f);
	fx_open(f);
	assert_int_equal(store_policy_generation(f->st), 1);
	assert_int_equal(grants_count(f->gs), 1);
	assert_false(grants_node_enrolled_as(f->gs, "gpu-01", pub.sign_pk));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_node_signal),
		cmocka_unit_test(test_node_seen_parse),
		cmocka_unit_test(test_node_key),
		cmocka_unit_test(test_node_public_refused),
		cmocka_unit_test(test_node_public_canonical),
		cmocka_unit_test(test_node_gc_grace),
		cmocka_unit_test(test_config_valid),
		cmocka_unit_test(test_config_rejects),
		cmocka_unit_test(test_config_roles),
		cmocka_unit_test(test_config_load_file_checks),
		cmocka_unit_test_setup_teardown(test_grant_add_revoke_persist, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_grant_audit_failure_changes_nothing, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_grant_invalid_refused, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_grant_damaged_record_refused, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_grant_approval_lifecycle, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_approvals_mechanism, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_node_enrolment, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_node_remove_rekey_retry, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_deny_rules, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_deny_duplicate, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_deny_removal_approvals, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_deny_forged_approval_refused, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_dataset_policy, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_policy_audit_failure_changes_nothing, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_grant_watch, fx_setup, fx_teardown),
	};

	if (crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
