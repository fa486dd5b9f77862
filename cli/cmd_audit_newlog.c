/* enclavectl audit new-log: start a new audit log on a store whose log is lost, offline, saying why.
 *
 * enclaved refuses a store that has a history (datasets, grants, deny rules) but no audit log: the
 * record of every access so far is gone, which is an incident, never something to paper over by
 * starting a log at seq 0. This command is the one way on: it needs the passphrase (so whoever
 * removed the log cannot simply start another), the daemon stopped (the store lock), and no audit/
 * at all (what is left of the old one is moved aside, as evidence, by the person who looks into
 * it). The new log's first record says who started it, why, and what the store held that the lost
 * log accounted for (its names sealed, as every record's); a signed checkpoint covers it at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/audit.h"
#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "store/store.h"

#define WHAT "audit new-log"
#define REASON_MAX 1024

static const char newlog_usage[] =
	"Usage: enclavectl audit new-log --store DIR --reason TEXT [--passphrase-file FILE]\n\n"
	"Start a new audit log on a store whose log is lost, with the daemon stopped.\n"
	"enclaved refuses to start on a store that holds datasets, grants or deny rules but no\n"
	"audit log: that is an incident. Once it has been looked into (and the old log restored\n"
	"from a backup if at all possible), this command starts a new log whose first record\n"
	"says who started it, why (--reason), and how many datasets and policy records the lost\n"
	"log accounted for. It needs the store passphrase; DIR/audit must not exist (move what is\n"
	"left of it aside first, and keep it).\n\n"
	"Options:\n"
	"  --reason TEXT           why the old log is gone (required; recorded)\n"
	"  --passphrase-file FILE  read the store passphrase from FILE (mode 0600 or stricter);\n"
	"                          without it, prompt on the terminal\n";

enum { OPT_REASON = 0x200, OPT_PASS };

struct newlog_args {
	const char *reason;
	const char *pass_file;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct newlog_args *a = ctx;

	if (val == OPT_REASON)
		a->reason = arg;
	else if (val == OPT_PASS)
		a->pass_file = arg;
	return 0;
}

static int read_pass(const char *file, crypto_secret **ret_pass)
{
	int r = file ? crypto_passphrase_read_file(file, ret_pass)
		     : crypto_passphrase_prompt("Store passphrase: ", false, ret_pass);

	if (r == 0)
		return 0;
	if (r == -EPERM && file)
		return ctl_fail(WHAT, "passphrase file %s is readable or writable by group or "
				      "others; it must be private (chmod 600 %s)", file, file);
	if (r == -ENXIO)
		return ctl_fail(WHAT, "no terminal to ask for a passphrase on; use "
				      "--passphrase-file FILE");
	return ctl_fail(WHAT, "%s: %s", file ? file : "passphrase",
			*err_detail() ? err_detail() : strerror(-r));
}

/* Seal the record's names as the daemon does (docs/AUDIT.md "Sealed records"): to the store's own
 * key and to every auditor key in keys/auditors. */
static int seal_setup(struct store *st, struct audit_log *log)
{
	uint8_t keys[STORE_AUDITORS_MAX][32];
	crypto_key *k = NULL;
	size_t n = 0;
	int r = store_auditors_get(st, keys, &n);

	if (r == 0)
		r = store_audit_seal_key(st, &k);
	if (r == 0)
		r = audit_sealer_set(log, crypto_key_bytes(k), (const uint8_t(*)[32])keys, n);
	crypto_key_free(k);
	sodium_memzero(keys, sizeof(keys));
	return r;
}

/* The new log's first record, and a checkpoint signed over it when the store has its key. */
static int write_first(struct store *st, const char *audit_dir, const char *reason,
		       uint64_t datasets, uint64_t policy)
{
	char name[STORE_SIGNING_NAME_MAX + 1];
	struct passwd *pw = getpwuid(getuid());
	struct audit_log *log = NULL;
	crypto_key *seed = NULL;
	json_t *rec;
	int r;

	r = audit_open(audit_dir, NULL, &log);
	if (r < 0)
		return ctl_fail(WHAT, "%s", *err_detail() ? err_detail() : strerror(-r));
	r = seal_setup(st, log);
	if (r < 0) {
		audit_close(log);
		return ctl_fail(WHAT, "cannot set up the audit log's sealing keys: %s",
				*err_detail() ? err_detail() : strerror(-r));
	}
	rec = json_pack("{s:s, s:I, s:s, s:s, s:s, s:{s:I, s:I}}", "event", "audit_new_log",
			"uid", (json_int_t)getuid(), "user", pw ? pw->pw_name : "", "reason",
			reason, "found", "no audit directory", "lost", "datasets",
			(json_int_t)datasets, "policy_records", (json_int_t)policy);
	r = rec ? audit_append(log, rec, NULL) : -ENOMEM;
	json_decref(rec);
	if (r == 0) {
		r = store_signing_seed(st, &seed, name);
		if (r == 0)
			r = audit_signer_set(log, name, crypto_key_bytes(seed));
		crypto_key_free(seed);
		if (r == 0)
			r = audit_checkpoint(log, NULL, NULL);
		else if (r == -ENOENT)
			r = 0;   /* no signing key yet: enclaved makes it and signs at start */
	}
	audit_close(log);
	if (r < 0)
		return ctl_fail(WHAT, "cannot write the new log's first record: %s",
				*err_detail() ? err_detail() : strerror(-r));
	return 0;
}

int cmd_audit_new_log(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "reason", required_argument, NULL, OPT_REASON },
		{ "passphrase-file", required_argument, NULL, OPT_PASS },
		{ 0 },
	};
	struct newlog_args a = { 0 };
	struct store_open_options so = { 0 };
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	uint64_t datasets = 0, policy = 0;
	char audit_dir[4096];
	int first, r, sfd, afd;

	r = ctl_parse(ctl, WHAT, newlog_usage, argc, argv, opts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error(WHAT, "unexpected argument '%s'", argv[first]);
	if (!ctl->store_dir || !*ctl->store_dir)
		return ctl_usage_error(WHAT, "--store DIR is required");
	if (!a.reason || !*a.reason)
		return ctl_usage_error(WHAT, "--reason TEXT is required: the new log says why the "
					     "old one is gone");
	if (strlen(a.reason) > REASON_MAX)
		return ctl_usage_error(WHAT, "--reason is longer than %d bytes", REASON_MAX);
	if ((size_t)snprintf(audit_dir, sizeof(audit_dir), "%s/audit", ctl->store_dir) >=
	    sizeof(audit_dir))
		return ctl_usage_error(WHAT, "store path too long");

	/* Only where there is no log at all: never over what is left of one. */
	sfd = open(ctl->store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return ctl_fail(WHAT, "%s: %s", ctl->store_dir, strerror(errno));
	afd = openat(sfd, "audit", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	r = afd < 0 ? errno : 0;
	if (afd < 0 && faccessat(sfd, "audit", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		r = EEXIST;   /* a symlink or a file by that name */
	if (afd >= 0)
		close(afd);
	close(sfd);
	if (r != ENOENT)
		return ctl_fail(WHAT, "%s exists%s; a new log is started only where there is none: "
				      "move it aside (and keep it: it is evidence), then run this "
				      "again (nothing was changed)", audit_dir,
				r == EEXIST ? " (and is not a directory: a symbolic link?)" : "");

	if (crypto_init() < 0)
		return ctl_fail(WHAT, "cannot initialise the crypto library");
	if (ctl_rocksdb_load(WHAT))
		return 1;
	r = read_pass(a.pass_file, &pass);
	if (r)
		return r;
	r = store_open(ctl->store_dir, pass, &so, &st);
	crypto_secret_free(pass);
	if (r == -EBUSY)
		return ctl_fail(WHAT, "%s is in use (is enclaved running? stop it first)",
				ctl->store_dir);
	if (r < 0)
		return ctl_fail(WHAT, "%s", *err_detail() ? err_detail() : strerror(-r));
	r = store_history_count(st, &datasets, &policy);
	if (r < 0) {
		store_close(st);
		return ctl_fail(WHAT, "cannot read the store's index: %s",
				*err_detail() ? err_detail() : strerror(-r));
	}
	r = write_first(st, audit_dir, a.reason, datasets, policy);
	store_close(st);
	if (r)
		return r;
	printf("started a new audit log in %s: its first record says why, and that the lost log "
	       "accounted for %llu dataset(s) and %llu policy record(s)\n", audit_dir,
	       (unsigned long long)datasets, (unsigned long long)policy);
	return 0;
}
