/* enclavectl store upgrade: offline work on a store's files (no daemon). store gc and store df
 * (cmd_store_gc.c) ask the running daemon.
 *
 *   store upgrade --store DIR [--passphrase-file FILE] [--auditor-key-out FILE]
 *                 [--auditor-public-key FILE]...      convert a format 1 store in place
 *
 * The daemon must be stopped: the store's LOCK is taken, and a running daemon holds it. The
 * passphrase comes from a private file or the terminal, never from argv or the environment. What
 * the upgrade does is in upgrade.c (ctl_store_upgrade_run()); this file parses and reports.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit/audit.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "store/store.h"
#include "cli/enclavectl.h"

enum { OPT_PASS_FILE = 0x200, OPT_KEY_OUT, OPT_KEY_PUB };

static const char upgrade_usage[] =
	"Usage: enclavectl store upgrade --store DIR [--passphrase-file FILE]\n"
	"                                [--auditor-key-out FILE] [--auditor-public-key FILE]...\n"
	"\n"
	"Convert a store of an older format to the current one (index format 3), in place,\n"
	"with the daemon stopped. Format 1 (made before the sealed index: dataset, directory and\n"
	"file names, sizes, times and grants in clear, and an audit log in clear): index and\n"
	"audit log in one step. Format 2 (sealed, made before the key ring): the index and the\n"
	"new key ring; its log is sealed already and is not touched.\n"
	"\n"
	"The new index is built beside the old one (DIR/index.new), every committed version\n"
	"with its manifest (see 'dataset show'). The old audit log is kept whole, byte for\n"
	"byte, but encrypted (DIR/audit.new/legacy.sealed: to the auditor keys and to the\n"
	"store), and a new sealed log starts beside it whose first signed record names the old\n"
	"log's size, Merkle root and SHA-256 ('audit legacy' opens it for an auditor, whose\n"
	"old checkpoints still verify it). Both are switched in with renames only after a\n"
	"marker file (DIR/UPGRADE) records the decision: a kill at any point leaves the old\n"
	"store (the upgrade can run again) or the new one (an interrupted switch is finished\n"
	"by the next open). Pack files are not touched.\n"
	"\n"
	"A store of format 1 has no auditor keys: give one here so that an auditor can read\n"
	"the names in the new log and open the old one; without any, only the daemon (and\n"
	"whoever holds the passphrase) can, until 'audit auditor-add'. (A format 2 store has\n"
	"its auditors already; these options are then not used.)\n"
	"\n"
	"Options:\n"
	"  --store DIR             the store (required)\n"
	"  --passphrase-file FILE  read the passphrase from FILE (mode 0600 or stricter);\n"
	"                          without it, it is asked for on the terminal\n"
	"  --auditor-key-out FILE  make an auditor key pair; its secret half goes to FILE\n"
	"                          (created, mode 0600; give it to the auditor)\n"
	"  --auditor-public-key FILE\n"
	"                          seal the logs to this auditor public key as well\n"
	"                          (\"enclave-auditor-public:...\", from 'audit keygen');\n"
	"                          repeatable\n"
	"  -q, --quiet             no progress lines\n"
	"  -h, --help              show this help\n";

struct upgrade_args {
	const char *pass_file;
	const char *key_out;                          /* --auditor-key-out; borrowed */
	const char *key_pub[AUDIT_AUDITORS_MAX];      /* --auditor-public-key files; borrowed */
	size_t nkey_pub;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct upgrade_args *a = ctx;

	switch (val) {
	case OPT_PASS_FILE:
		a->pass_file = arg;
		return 0;
	case OPT_KEY_OUT:
		if (a->key_out)
			return ctl_usage_error("store upgrade", "--auditor-key-out is given once");
		a->key_out = arg;
		return 0;
	case OPT_KEY_PUB:
		if (a->nkey_pub == AUDIT_AUDITORS_MAX - 1)
			return ctl_usage_error("store upgrade", "more than %d auditor keys",
					       AUDIT_AUDITORS_MAX - 1);
		a->key_pub[a->nkey_pub++] = arg;
		return 0;
	default:
		return EXIT_USAGE;
	}
}

static void progress(void *ctx, enum store_upgrade_step step, uint64_t done, uint64_t total)
{
	const struct ctl *ctl = ctx;

	if (ctl->quiet)
		return;
	switch (step) {
	case STORE_UPGRADE_STARTED:
		fprintf(stderr, "upgrade: building the sealed index in index.new/\n");
		break;
	case STORE_UPGRADE_DATASET:
		fprintf(stderr, "upgrade: %llu dataset(s) converted\n", (unsigned long long)done);
		break;
	case STORE_UPGRADE_VERSION:
		fprintf(stderr, "upgrade: %llu version(s) converted\n", (unsigned long long)done);
		break;
	case STORE_UPGRADE_POLICY:
		fprintf(stderr, "upgrade: policy records converted\n");
		break;
	case STORE_UPGRADE_BUILT:
		fprintf(stderr, "upgrade: new index complete (%llu records)\n",
			(unsigned long long)done);
		break;
	case STORE_UPGRADE_AUDIT_STARTED:
		fprintf(stderr, "upgrade: converting the audit log in audit.new/\n");
		break;
	case STORE_UPGRADE_AUDIT_LEGACY:
		fprintf(stderr, "upgrade: the old log kept, encrypted, in audit.new/%s\n",
			AUDIT_LEGACY_NAME);
		break;
	case STORE_UPGRADE_AUDIT_BUILT:
		fprintf(stderr, "upgrade: new audit log started and signed\n");
		break;
	case STORE_UPGRADE_DECIDED:
		fprintf(stderr, "upgrade: switching (a kill from here on is finished at the next "
				"open)\n");
		break;
	case STORE_UPGRADE_NEW_MOVED:
		fprintf(stderr, "upgrade: part %llu of %llu in place\n", (unsigned long long)done,
			(unsigned long long)total);
		break;
	default:
		break;
	}
}

static int read_pass(const char *file, crypto_secret **ret)
{
	int r;

	if (!file) {
		r = crypto_passphrase_prompt("Passphrase of the store: ", false, ret);
		if (r == -ENXIO)
			return ctl_fail("store upgrade", "no terminal to ask for a passphrase on; "
							 "use --passphrase-file FILE");
		if (r < 0)
			return ctl_fail("store upgrade", "cannot read a passphrase: %s",
					strerror(-r));
		return 0;
	}
	r = crypto_passphrase_read_file(file, ret);
	if (r == -EPERM)
		return ctl_fail("store upgrade", "passphrase file %s is readable or writable by "
						 "group or others; it must be private (chmod 600 %s)",
				file, file);
	if (r < 0)
		return ctl_fail("store upgrade", "passphrase file %s: %s", file, strerror(-r));
	return 0;
}

static int cmd_store_upgrade(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "passphrase-file", required_argument, NULL, OPT_PASS_FILE },
		{ "auditor-key-out", required_argument, NULL, OPT_KEY_OUT },
		{ "auditor-public-key", required_argument, NULL, OPT_KEY_PUB },
		{ 0 },
	};
	struct store_upgrade_progress p = { .fn = progress, .ctx = ctl };
	uint8_t pks[AUDIT_AUDITORS_MAX][AUDIT_AUDITOR_KEY_LEN];
	struct ctl_upgrade_result res = { 0 };
	struct upgrade_args a = { 0 };
	crypto_secret *pass = NULL;
	size_t npk = 0;
	struct stat kb;
	bool made;
	int first, r;

	r = ctl_parse(ctl, "store upgrade", upgrade_usage, argc, argv, opts, on_opt, &a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("store upgrade", "unexpected argument '%s'", argv[first]);
	if (!ctl->store_dir || !*ctl->store_dir)
		return ctl_usage_error("store upgrade", "--store DIR is required");
	if (crypto_init() < 0)
		return ctl_fail("store upgrade", "cannot initialise the crypto libraries");
	/* Everything is checked before anything is made. */
	for (size_t i = 0; i < a.nkey_pub; i++) {
		err_clear();
		if (audit_auditor_public_read(a.key_pub[i], pks[npk++]) < 0)
			return ctl_fail("store upgrade", "--auditor-public-key: %s", err_detail());
	}
	if (a.key_out) {
		struct stat sb;

		if (lstat(a.key_out, &sb) == 0)
			return ctl_fail("store upgrade", "--auditor-key-out %s exists; it is never "
					"overwritten (nothing was changed)", a.key_out);
	}
	if (ctl_rocksdb_load("store upgrade") || read_pass(a.pass_file, &pass))
		return 1;
	r = ctl_store_upgrade_run(ctl->store_dir, pass, (const uint8_t(*)[32])pks, npk, a.key_out,
				  &p, &res);
	crypto_secret_free(pass);
	made = a.key_out && lstat(a.key_out, &kb) == 0;
	if (r == -EBUSY)
		return ctl_fail("store upgrade", "%s is in use (stop enclaved first)",
				ctl->store_dir);
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail()[0] ? err_detail() : strerror(-r));
		if (made)
			fprintf(stderr, "enclavectl: store upgrade: the auditor key made in %s is "
					"kept: the store may list it (when running again, give nothing "
					"for it: a listed key is sealed to as well)\n", a.key_out);
		return ctl_fail("store upgrade", "%s (the store is unchanged unless the switch "
						 "began; it is finished at the next open)", why);
	}
	if (res.already) {
		if (!ctl->quiet)
			fprintf(stderr, "upgrade: %s is already in the current format; nothing to "
					"do\n", ctl->store_dir);
		return 0;
	}
	if (!ctl->quiet) {
		fprintf(stderr, "upgrade: %s is now in the current format (sealed index, key ring), "
				"with a sealed audit log\n", ctl->store_dir);
		if (!res.log_converted && (npk || a.key_out))
			fprintf(stderr, "  the audit log was sealed already and is not touched: the "
					"auditor keys given were not used (add one with `enclavectl "
					"audit auditor-add`)\n");
		for (size_t i = 0; i < npk + (made ? 1 : 0); i++) {
			char id[AUDIT_AUDITOR_ID_TEXT];

			audit_auditor_id(i < npk ? pks[i] : res.made, id);
			if (i == npk)
				fprintf(stderr, "  auditor key %s  secret half in %s (give it to the "
						"auditor)\n", id, a.key_out);
			else
				fprintf(stderr, "  auditor key %s  from %s\n", id, a.key_pub[i]);
		}
		if (res.auditors == 0)
			fprintf(stderr, "  no auditor key: only the daemon can read the names in the "
					"audit log until\n"
					"                    `enclavectl audit auditor-add --public-key "
					"FILE`\n");
	}
	return 0;
}

const struct ctl_cmd store_cmds[] = {
	{ "gc", cmd_store_gc, "[--dry-run]",
	  "free the bytes no version uses (erased data, interrupted imports)" },
	{ "df", cmd_store_df, "", "live, dead and reclaimable bytes, per dataset" },
	{ "upgrade", cmd_store_upgrade,
	  "--store DIR [--passphrase-file FILE] [--auditor-key-out FILE] [--auditor-public-key FILE]",
	  "convert a store of an older format in place (offline)" },
	{ 0 },
};
