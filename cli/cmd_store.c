/* enclavectl store: offline work on a store's files (no daemon).
 *
 *   store upgrade --store DIR [--passphrase-file FILE]   convert a format 1 store in place
 *
 * The daemon must be stopped: the store's LOCK is taken, and a running daemon holds it. The
 * passphrase comes from a private file or the terminal, never from argv or the environment.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "store/store.h"
#include "cli/enclavectl.h"

enum { OPT_PASS_FILE = 0x200 };

static const char upgrade_usage[] =
	"Usage: enclavectl store upgrade --store DIR [--passphrase-file FILE]\n"
	"\n"
	"Convert a store made before the sealed index (index format 1: dataset, directory and\n"
	"file names, sizes, times and grants in clear) to format 2, in place. Run it with the\n"
	"daemon stopped. The new index is built beside the old one (DIR/index.new), checked,\n"
	"and switched in with renames only after a marker file (DIR/UPGRADE) records the\n"
	"decision; a kill at any point leaves the old store (the upgrade can run again) or\n"
	"the new one (an interrupted switch is finished by the next open). Pack files are not\n"
	"touched. Every committed version gets its manifest (see 'dataset show').\n"
	"\n"
	"Options:\n"
	"  --store DIR             the store (required)\n"
	"  --passphrase-file FILE  read the passphrase from FILE (mode 0600 or stricter);\n"
	"                          without it, it is asked for on the terminal\n"
	"  -q, --quiet             no progress lines\n"
	"  -h, --help              show this help\n";

static int on_opt(void *ctx, int val, const char *arg)
{
	const char **pass_file = ctx;

	if (val != OPT_PASS_FILE)
		return EXIT_USAGE;
	*pass_file = arg;
	return 0;
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
		{ 0 },
	};
	/* The parts switched in one decision. The audit log's conversion adds "audit" here, after
	 * preparing audit.new/ beside audit/ (see below). */
	static const char *const parts[] = { "index" };
	struct store_upgrade_progress p = { .fn = progress, .ctx = ctl };
	const char *pass_file = NULL;
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	int first, r;

	r = ctl_parse(ctl, "store upgrade", upgrade_usage, argc, argv, opts, on_opt, &pass_file,
		      &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("store upgrade", "unexpected argument '%s'", argv[first]);
	if (!ctl->store_dir || !*ctl->store_dir)
		return ctl_usage_error("store upgrade", "--store DIR is required");
	if (crypto_init() < 0)
		return ctl_fail("store upgrade", "cannot initialise the crypto libraries");
	if (read_pass(pass_file, &pass))
		return 1;
	r = store_open_for_upgrade(ctl->store_dir, pass, &st);
	crypto_secret_free(pass);
	if (r == -EBUSY)
		return ctl_fail("store upgrade", "%s is in use (stop enclaved first)",
				ctl->store_dir);
	if (r < 0)
		return ctl_fail("store upgrade", "%s", err_detail()[0] ? err_detail() : strerror(-r));
	r = store_upgrade_prepare(st, &p);
	if (r == -EALREADY) {
		store_close(st);
		if (!ctl->quiet)
			fprintf(stderr, "upgrade: %s is already in the current format; nothing to "
					"do\n", ctl->store_dir);
		return 0;
	}
	/* The audit log's conversion goes here: prepare audit.new/ from audit/ (a function of
	 * audit/, given st's store for its keys), then add "audit" to parts. */
	if (r == 0)
		r = store_upgrade_commit(st, parts, ARRAY_SIZE(parts), &p);
	if (r < 0) {
		char why[ERR_DETAIL_MAX];

		snprintf(why, sizeof(why), "%s", err_detail()[0] ? err_detail() : strerror(-r));
		store_close(st);
		return ctl_fail("store upgrade", "%s (the store is unchanged unless the switch "
						 "began; it is finished at the next open)", why);
	}
	store_close(st);
	/* The upgraded store opens as a store of this version does. */
	r = read_pass(pass_file, &pass);
	if (r)
		return 1;
	r = store_open(ctl->store_dir, pass, NULL, &st);
	crypto_secret_free(pass);
	if (r < 0)
		return ctl_fail("store upgrade", "the upgraded store does not open: %s",
				err_detail()[0] ? err_detail() : strerror(-r));
	store_close(st);
	if (!ctl->quiet)
		fprintf(stderr, "upgrade: %s is now index format 2 (sealed)\n", ctl->store_dir);
	return 0;
}

const struct ctl_cmd store_cmds[] = {
	{ "upgrade", cmd_store_upgrade, "--store DIR [--passphrase-file FILE]",
	  "convert a store of an older format in place (offline)" },
	{ 0 },
};
