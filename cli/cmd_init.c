/* enclavectl init: create a store offline, with its configuration and socket directory.
 *
 * The passphrase comes from a private file or the terminal, never from argv or the environment,
 * and lives only in guarded memory (crypto_secret) until store_create() has wrapped the master key
 * under it. Every argument is checked before anything is created, so a mistake leaves no half-made
 * directory behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/audit.h"
#include "audit/note.h"
#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "policy/policy.h"
#include "store/store.h"

#define CONF_NAME "enclave.conf"
/* As many as enclaved accepts per role (CONFIG_PRINCIPALS_MAX in daemon/). */
#define INIT_PRINCIPALS_MAX 64
/* NSS answers larger than this are refused rather than chased. */
#define NSS_BUF_MAX (1u << 20)

static const char init_usage[] =
	"Usage: enclavectl init --store DIR [--passphrase-file FILE] [--steward SPEC]...\n"
	"                       [--auditor SPEC]... [--approvals N] [--max-grant-days N]\n"
	"                       [--audit-name NAME] [--auditor-key-out FILE]...\n"
	"                       [--auditor-public-key FILE]... [--visa-issuer URL]\n"
	"                       [--test-kdf]\n\n"
	"Create a new store in DIR (a new or empty directory). Works offline: no daemon is\n"
	"involved. A new master key is generated and wrapped under a passphrase read from FILE,\n"
	"which must not be readable or writable by group or others, or else asked for twice on\n"
	"the terminal. The passphrase is never taken from the command line or the environment.\n\n"
	"Then DIR is made 0711 (local users can reach the control socket, nothing else), run/ is\n"
	"made 0755 for the socket, and DIR/enclave.conf lists who holds which role and the\n"
	"grant rules. The audit log's signing key (Ed25519, separate from the data keys) is made\n"
	"and stored wrapped under the master key; its verifier key is printed: give it to the\n"
	"auditors (`enclavectl audit pubkey` prints it again). The GA4GH visa signing key\n"
	"(ES256) is made and wrapped the same way (keys/visa.key).\n\n"
	"The names in the audit log (users, paths, datasets, purposes, reasons) are sealed to the\n"
	"auditor keys given here (X25519): --auditor-key-out makes a key pair and writes its secret\n"
	"half to a new FILE (mode 0600; give it to the auditor, who reads the log with `audit show\n"
	"--auditor-key FILE`); --auditor-public-key takes the public half of a key the auditor\n"
	"made. Without either, only the daemon reads the names until `audit auditor-add`.\n\n"
	"Options:\n"
	"  --store DIR             the store to create (required)\n"
	"  --passphrase-file FILE  read the passphrase from FILE (mode 0600 or stricter)\n"
	"  --steward SPEC          may import datasets and grant and revoke access; repeatable;\n"
	"                          default: the user running init\n"
	"  --auditor SPEC          may list datasets and grants and read the audit trail;\n"
	"                          repeatable\n"
	"  --approvals N           approvals by other stewards a grant needs before it is in\n"
	"                          force, 0 to 8 (default 1: four eyes; 0 for demo stores)\n"
	"  --max-grant-days N      longest a grant may run, 1 to 3650 days (default 365)\n"
	"  --audit-name NAME       the audit log's name in its signed checkpoints and key\n"
	"                          (default HOSTNAME/enclave); no spaces, no '+'\n"
	"  --auditor-key-out FILE  make an auditor key pair; its secret half goes to FILE\n"
	"                          (created, never overwritten, mode 0600); repeatable\n"
	"  --auditor-public-key FILE\n"
	"                          seal the audit log to this auditor public key as well\n"
	"                          (\"enclave-auditor-public:...\"); repeatable\n"
	"  --visa-issuer URL       the issuer (iss) of the GA4GH visas `grant export` signs:\n"
	"                          an https:// URL where the JWKS is published as\n"
	"                          URL/jwks.json; without it no visa is exported\n"
	"  --test-kdf              the cheapest key derivation: for tests and demos only\n"
	"  -h, --help              show this help\n\n"
	"SPEC is user:NAME or group:NAME, where NAME is an existing user or group, or a number.\n";

enum {
	OPT_PASS_FILE = 0x200,
	OPT_STEWARD,
	OPT_AUDITOR,
	OPT_TEST_KDF,
	OPT_APPROVALS,
	OPT_MAX_GRANT_DAYS,
	OPT_AUDIT_NAME,
	OPT_AUDITOR_KEY_OUT,
	OPT_AUDITOR_PUBLIC,
	OPT_VISA_ISSUER,
};

/* A role holder as written to enclave.conf. */
struct spec {
	bool group;                        /* group:NAME, else user:NAME */
	bool numeric;                      /* NAME is a decimal id */
	char name[POLICY_NAME_MAX + 1];
};

struct init_args {
	const char *pass_file;             /* borrowed from argv */
	bool test_kdf;
	int approvals;                     /* -1: not given (the daemon's default) */
	int max_grant_days;                /* -1: not given */
	const char *audit_name;            /* borrowed; NULL: HOSTNAME/enclave */
	const char *visa_issuer;           /* borrowed; NULL: none */
	struct spec stewards[INIT_PRINCIPALS_MAX];
	size_t nstewards;
	struct spec auditors[INIT_PRINCIPALS_MAX];
	size_t nauditors;
	const char *key_out[AUDIT_AUDITORS_MAX];     /* --auditor-key-out files; borrowed */
	size_t nkey_out;
	const char *key_pub[AUDIT_AUDITORS_MAX];     /* --auditor-public-key files; borrowed */
	size_t nkey_pub;
	uint8_t pks[AUDIT_AUDITORS_MAX][AUDIT_AUDITOR_KEY_LEN];  /* the public keys, read first */
};

/* Why NAME cannot be written to enclave.conf, or NULL if it can, as enclaved's parser reads it:
 * 1 to POLICY_NAME_MAX bytes, no blanks, control characters or ':'; a NAME starting with a digit
 * is a decimal id below 2^32-1 (*ret_numeric). */
static const char *name_problem(const char *name, bool *ret_numeric)
{
	size_t n = strlen(name);

	if (n == 0 || n > POLICY_NAME_MAX)
		return "the name must be 1 to 64 bytes";
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] <= ' ' || name[i] == ':' || name[i] == 0x7f)
			return "the name may not contain blanks, control characters or ':'";
	*ret_numeric = false;
	if (name[0] >= '0' && name[0] <= '9') {
		char *end;
		unsigned long long v;

		errno = 0;
		v = strtoull(name, &end, 10);
		if (errno || *end || v >= UINT32_MAX)
			return "a name starting with a digit must be a decimal id below 4294967295";
		*ret_numeric = true;
	}
	return NULL;
}

/* Parse a SPEC (user:NAME or group:NAME) given to option opt. 0 or EXIT_USAGE. */
static int spec_parse(const char *opt, const char *arg, struct spec *ret)
{
	struct spec s = { 0 };
	const char *name, *why;
	char shown[128];

	if (strncmp(arg, "user:", 5) == 0) {
		name = arg + 5;
	} else if (strncmp(arg, "group:", 6) == 0) {
		name = arg + 6;
		s.group = true;
	} else {
		return ctl_usage_error("init", "%s '%s': expected user:NAME or group:NAME", opt,
				       out_text(arg, 64, shown, sizeof(shown)));
	}
	why = name_problem(name, &s.numeric);
	if (why)
		return ctl_usage_error("init", "%s '%s': %s", opt,
				       out_text(arg, 64, shown, sizeof(shown)), why);
	snprintf(s.name, sizeof(s.name), "%s", name);
	*ret = s;
	return 0;
}

/* A whole decimal number in [lo, hi], or EXIT_USAGE naming the option. */
static int number_opt(const char *opt, const char *arg, int lo, int hi, int *ret)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (arg[0] < '0' || arg[0] > '9' || errno || *end || v < lo || v > hi)
		return ctl_usage_error("init", "%s '%.40s': a number from %d to %d", opt, arg, lo,
				       hi);
	*ret = (int)v;
	return 0;
}

static int on_opt(void *ctx, int val, const char *arg)
{
	struct init_args *a = ctx;

	switch (val) {
	case OPT_APPROVALS:
		return number_opt("--approvals", arg, 0, POLICY_APPROVALS_MAX, &a->approvals);
	case OPT_MAX_GRANT_DAYS:
		return number_opt("--max-grant-days", arg, 1, 3650, &a->max_grant_days);
	case OPT_AUDIT_NAME:
		a->audit_name = arg;
		return 0;
	case OPT_VISA_ISSUER:
		if (!policy_issuer_url_valid(arg))
			return ctl_usage_error("init", "--visa-issuer '%.64s': an https:// (or "
					       "http://) URL of at most %d printable characters, "
					       "without spaces, '?', '#' or a trailing '/'", arg,
					       POLICY_ISSUER_MAX);
		a->visa_issuer = arg;
		return 0;
	case OPT_PASS_FILE:
		a->pass_file = arg;
		return 0;
	case OPT_AUDITOR_KEY_OUT:
	case OPT_AUDITOR_PUBLIC:
		if (a->nkey_out + a->nkey_pub == AUDIT_AUDITORS_MAX)
			return ctl_usage_error("init", "more than %d auditor keys",
					       AUDIT_AUDITORS_MAX);
		if (val == OPT_AUDITOR_KEY_OUT)
			a->key_out[a->nkey_out++] = arg;
		else
			a->key_pub[a->nkey_pub++] = arg;
		return 0;
	case OPT_TEST_KDF:
		a->test_kdf = true;
		return 0;
	case OPT_STEWARD:
		if (a->nstewards == INIT_PRINCIPALS_MAX)
			return ctl_usage_error("init", "more than %d stewards",
					       INIT_PRINCIPALS_MAX);
		return spec_parse("--steward", arg, &a->stewards[a->nstewards++]);
	case OPT_AUDITOR:
		if (a->nauditors == INIT_PRINCIPALS_MAX)
			return ctl_usage_error("init", "more than %d auditors",
					       INIT_PRINCIPALS_MAX);
		return spec_parse("--auditor", arg, &a->auditors[a->nauditors++]);
	}
	return EXIT_USAGE;
}

/* Does the user or group exist? 0 yes, -ESRCH no, -errno when NSS fails. */
static int nss_exists(bool group, const char *name)
{
	long hint = sysconf(group ? _SC_GETGR_R_SIZE_MAX : _SC_GETPW_R_SIZE_MAX);
	size_t n = hint > 0 ? (size_t)hint : 4096;

	for (;;) {
		_cleanup_free_ char *buf = malloc(n);
		int r;

		if (!buf)
			return -ENOMEM;
		if (group) {
			struct group gr, *res = NULL;

			r = getgrnam_r(name, &gr, buf, n, &res);
			if (r == 0)
				return res ? 0 : -ESRCH;
		} else {
			struct passwd pw, *res = NULL;

			r = getpwnam_r(name, &pw, buf, n, &res);
			if (r == 0)
				return res ? 0 : -ESRCH;
		}
		if (r != ERANGE)
			return -r;
		if (n >= NSS_BUF_MAX)
			return -E2BIG;
		n *= 2;
	}
}

static int check_exists(const char *role, const struct spec *s)
{
	int r;

	if (s->numeric)
		return 0;
	r = nss_exists(s->group, s->name);
	if (r == -ESRCH)
		return ctl_fail("init", "%s %s:%s: no such %s", role, s->group ? "group" : "user",
				s->name, s->group ? "group" : "user");
	if (r < 0)
		return ctl_fail("init", "%s %s:%s: cannot look it up: %s", role,
				s->group ? "group" : "user", s->name, strerror(-r));
	return 0;
}

/* The invoking user as the default steward: its name, or its uid if it has none (or one that
 * enclave.conf cannot carry). */
static int default_steward(struct spec *ret)
{
	uid_t uid = getuid();
	long hint = sysconf(_SC_GETPW_R_SIZE_MAX);
	size_t n = hint > 0 ? (size_t)hint : 4096;
	struct spec s = { 0 };

	for (;;) {
		_cleanup_free_ char *buf = malloc(n);
		struct passwd pw, *res = NULL;
		int r;

		if (!buf)
			return ctl_fail("init", "out of memory");
		r = getpwuid_r(uid, &pw, buf, n, &res);
		if (r == ERANGE && n < NSS_BUF_MAX) {
			n *= 2;
			continue;
		}
		if (r == 0 && res && !name_problem(res->pw_name, &s.numeric)) {
			snprintf(s.name, sizeof(s.name), "%s", res->pw_name);
			break;
		}
		snprintf(s.name, sizeof(s.name), "%u", (unsigned)uid);
		s.numeric = true;
		break;
	}
	*ret = s;
	return 0;
}

/* The id a spec names (a number, or the name looked up), or -1 when NSS does not know it. */
static int64_t spec_id(const struct spec *s)
{
	char buf[16384];

	if (s->numeric)
		return (int64_t)strtoull(s->name, NULL, 10);
	if (s->group) {
		struct group gr, *res = NULL;

		return getgrnam_r(s->name, &gr, buf, sizeof(buf), &res) == 0 && res ? (int64_t)res->gr_gid
										 : -1;
	} else {
		struct passwd pw, *res = NULL;

		return getpwnam_r(s->name, &pw, buf, sizeof(buf), &res) == 0 && res ? (int64_t)res->pw_uid
										 : -1;
	}
}

/* A grant needs `approvals` stewards besides the one who requested it: say so when fewer people
 * hold the steward role (docs/POLICY.md section 8). A warning: the directory may grow later. */
static void warn_approvers(const struct init_args *a)
{
	uint32_t kinds[INIT_PRINCIPALS_MAX], ids[INIT_PRINCIPALS_MAX], uids[1024];
	int approvals = a->approvals < 0 ? 1 : a->approvals;
	size_t n = 0, people = 0;

	if (approvals == 0)
		return;
	for (size_t i = 0; i < a->nstewards; i++) {
		int64_t id = spec_id(&a->stewards[i]);

		if (id < 0)
			continue;
		kinds[n] = a->stewards[i].group ? POLICY_GROUP : POLICY_USER;
		ids[n++] = (uint32_t)id;
	}
	if (policy_principal_uids(kinds, ids, n, uids, ARRAY_SIZE(uids), &people) < 0)
		return;   /* more than 1024 stewards: enough for any setting */
	if (people < (size_t)approvals + 1)
		fprintf(stderr, "enclavectl: init: warning: approvals = %d needs %d steward(s) "
			"besides the one who requests a grant, but the steward role is held by %zu "
			"user(s): no grant could be approved. Add stewards (--steward) or lower "
			"--approvals\n", approvals, approvals, people);
}

/* Refuse early (before asking for a passphrase) a DIR that store_create() would refuse anyway:
 * one that holds anything, is not a directory, or is a symlink. It checks again itself. */
static int precheck_dir(const char *dir)
{
	struct dirent *de;
	DIR *d;
	int fd;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		if (errno == ELOOP)
			return ctl_fail("init", "%s is a symbolic link; give the real directory",
					dir);
		return ctl_fail("init", "%s: %s", dir, strerror(errno));
	}
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return ctl_fail("init", "%s: %s", dir, strerror(errno));
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			break;
	closedir(d);
	if (de)
		return ctl_fail("init", "%s is not empty; a store is created in a new or empty "
					"directory (nothing was changed)", dir);
	return 0;
}

static int read_passphrase(const struct init_args *a, crypto_secret **ret_pass)
{
	int r;

	if (a->pass_file) {
		r = crypto_passphrase_read_file(a->pass_file, ret_pass);
		switch (r) {
		case 0:
			return 0;
		case -EPERM:
			return ctl_fail("init", "passphrase file %s is readable or writable by "
						"group or others; it must be private "
						"(chmod 600 %s)",
					a->pass_file, a->pass_file);
		case -ELOOP:
			return ctl_fail("init", "passphrase file %s is a symbolic link; give the "
						"file itself", a->pass_file);
		case -EINVAL:
			return ctl_fail("init", "passphrase file %s is empty", a->pass_file);
		case -E2BIG:
			return ctl_fail("init", "passphrase in %s is longer than %d bytes",
					a->pass_file, CRYPTO_PASSPHRASE_MAX);
		default:
			return ctl_fail("init", "passphrase file %s: %s", a->pass_file,
					strerror(-r));
		}
	}
	r = crypto_passphrase_prompt("Passphrase for the new store: ", true, ret_pass);
	switch (r) {
	case 0:
		return 0;
	case -ENXIO:
		return ctl_fail("init", "no terminal to ask for a passphrase on; use "
					"--passphrase-file FILE");
	case -EINVAL:
		return ctl_fail("init", "the passphrases did not match, or were empty");
	case -E2BIG:
		return ctl_fail("init", "passphrase longer than %d bytes", CRYPTO_PASSPHRASE_MAX);
	default:
		return ctl_fail("init", "cannot read a passphrase: %s", strerror(-r));
	}
}

static int conf_line(struct buf *b, const char *role, const struct spec *s)
{
	char line[POLICY_NAME_MAX + 32];
	int n = snprintf(line, sizeof(line), "%s = %s:%s\n", role, s->group ? "group" : "user",
			 s->name);

	return buf_append(b, line, (size_t)n);
}

/* Write enclave.conf (0644, O_EXCL: never over an existing file), fsync it and the directory. */
static int write_conf(int dirfd, const struct init_args *a)
{
	static const char head[] =
		"# enclave.conf: written by enclavectl init, read by enclaved when it starts.\n"
		"# who may do what; a user name, a group name (members, primary or "
		"supplementary), or a number\n";
	struct buf b;
	int fd, r = 0;

	buf_init(&b, 64 * 1024);
	r = buf_append(&b, head, sizeof(head) - 1);
	for (size_t i = 0; i < a->nstewards && r == 0; i++)
		r = conf_line(&b, "steward", &a->stewards[i]);
	for (size_t i = 0; i < a->nauditors && r == 0; i++)
		r = conf_line(&b, "auditor", &a->auditors[i]);
	if (r == 0) {
		char line[256];
		int n = snprintf(line, sizeof(line), "# grants: approvals by other stewards before "
				 "a grant is in force, and the longest a grant may run\n"
				 "approvals = %d\nmax_grant_days = %d\n",
				 a->approvals < 0 ? 1 : a->approvals,
				 a->max_grant_days < 0 ? 365 : a->max_grant_days);

		r = n > 0 && (size_t)n < sizeof(line) ? buf_append(&b, line, (size_t)n) : -EINVAL;
	}
	if (r == 0 && a->visa_issuer) {
		char line[POLICY_ISSUER_MAX + 128];
		int n = snprintf(line, sizeof(line), "# GA4GH visas: their issuer; the JWKS is "
				 "published at this URL + /jwks.json\nvisa_issuer = %s\n",
				 a->visa_issuer);

		r = n > 0 && (size_t)n < sizeof(line) ? buf_append(&b, line, (size_t)n) : -EINVAL;
	}
	if (r < 0)
		goto out;
	fd = openat(dirfd, CONF_NAME, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	/* 0644 whatever the umask: enclaved may run as another user than the one running init. */
	if (fchmod(fd, 0644) < 0)
		r = -errno;
	if (r == 0)
		r = pwrite_all(fd, b.data, b.len, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0)
		r = fsync_dirfd(dirfd);
out:
	buf_free(&b);
	return r;
}

/* The store exists; add run/, enclave.conf, and open the root to local users, in that order, so
 * the socket directory is reachable only once everything is in place. */
static int finish_store(const char *dir, const struct init_args *a)
{
	int dirfd, fd, r = 0;
	const char *step = "open";

	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0)
		return ctl_fail("init", "%s: cannot open the new store: %s", dir, strerror(errno));
	step = "create run/";
	if (mkdirat(dirfd, "run", 0755) < 0) {
		r = -errno;
		goto out;
	}
	fd = openat(dirfd, "run", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fchmod(fd, 0755) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r < 0)
		goto out;
	step = "write " CONF_NAME;
	r = write_conf(dirfd, a);
	if (r < 0)
		goto out;
	step = "make the store directory 0711";
	if (fchmod(dirfd, 0711) < 0 || fsync(dirfd) < 0)
		r = -errno;
out:
	close(dirfd);
	if (r < 0)
		return ctl_fail("init", "%s: the store was created but enclavectl could not %s: "
					"%s; fix that by hand or remove %s and run init again",
				dir, step, strerror(-r), dir);
	return 0;
}

static void print_specs(const char *role, const struct spec *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("                    %s = %s:%s\n", role, s[i].group ? "group" : "user",
		       s[i].name);
}

/* Make the audit signing key (keys/audit.key) and give its verifier key text. */
static int make_signing_key(struct store *st, const char *name, char **ret_verifier)
{
	uint8_t pk[crypto_sign_PUBLICKEYBYTES];
	uint8_t *sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
	crypto_key *seed = NULL;
	char got[STORE_SIGNING_NAME_MAX + 1];
	int r;

	if (!sk)
		return ctl_fail("init", "out of memory");
	r = store_signing_create(st, name);
	if (r == 0)
		r = store_signing_seed(st, &seed, got);
	if (r < 0) {
		sodium_free(sk);
		return ctl_fail("init", "cannot make the audit signing key: %s",
				*err_detail() ? err_detail() : strerror(-r));
	}
	crypto_sign_seed_keypair(pk, sk, crypto_key_bytes(seed));
	sodium_free(sk);	/* wipes it: only the public half is needed here */
	crypto_key_free(seed);
	r = note_verifier_format(name, pk, ret_verifier);
	if (r < 0)
		return ctl_fail("init", "cannot format the verifier key: %s", strerror(-r));
	return 0;
}

/* Make the --auditor-key-out key pairs (secret halves into their files) and list every auditor
 * public key in keys/auditors. A failure after a secret file was written removes it. */
static int make_auditor_keys(struct store *st, struct init_args *a)
{
	size_t made = 0;
	int r = 0;

	for (; made < a->nkey_out; made++) {
		err_clear();
		r = audit_auditor_keypair_write(a->key_out[made], a->pks[made]);
		if (r < 0)
			break;
	}
	/* Shifted: the public keys read from files were put after the ones made here. */
	for (size_t i = 0; r == 0 && i < a->nkey_out + a->nkey_pub; i++) {
		err_clear();
		r = store_auditors_add(st, a->pks[i]);
		if (r == -EEXIST)
			r = 0;	/* the same public key given twice */
	}
	if (r < 0) {
		for (size_t i = 0; i < made; i++)
			unlink(a->key_out[i]);
		return ctl_fail("init", "cannot make the auditor keys: %s",
				*err_detail() ? err_detail() : strerror(-r));
	}
	return 0;
}

int cmd_init(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "passphrase-file", required_argument, NULL, OPT_PASS_FILE },
		{ "steward", required_argument, NULL, OPT_STEWARD },
		{ "auditor", required_argument, NULL, OPT_AUDITOR },
		{ "test-kdf", no_argument, NULL, OPT_TEST_KDF },
		{ "approvals", required_argument, NULL, OPT_APPROVALS },
		{ "max-grant-days", required_argument, NULL, OPT_MAX_GRANT_DAYS },
		{ "audit-name", required_argument, NULL, OPT_AUDIT_NAME },
		{ "auditor-key-out", required_argument, NULL, OPT_AUDITOR_KEY_OUT },
		{ "auditor-public-key", required_argument, NULL, OPT_AUDITOR_PUBLIC },
		{ "visa-issuer", required_argument, NULL, OPT_VISA_ISSUER },
		{ 0 },
	};
	_cleanup_free_ struct init_args *a = calloc(1, sizeof(*a));
	struct crypto_kdf_params kdf;
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	char audit_name[STORE_SIGNING_NAME_MAX + 1], *verifier = NULL;
	int first, r;

	if (!a)
		return ctl_fail("init", "out of memory");
	a->approvals = a->max_grant_days = -1;
	r = ctl_parse(ctl, "init", init_usage, argc, argv, opts, on_opt, a, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("init", "unexpected argument '%s'", argv[first]);
	if (!ctl->store_dir || !*ctl->store_dir)
		return ctl_usage_error("init", "--store DIR is required");

	/* Everything is checked before anything is made. */
	for (size_t i = 0; i < a->nstewards; i++)
		if (check_exists("steward", &a->stewards[i]))
			return 1;
	for (size_t i = 0; i < a->nauditors; i++)
		if (check_exists("auditor", &a->auditors[i]))
			return 1;
	if (a->nstewards == 0) {
		if (default_steward(&a->stewards[0]))
			return 1;
		a->nstewards = 1;
	}
	if (a->audit_name)
		snprintf(audit_name, sizeof(audit_name), "%s", a->audit_name);
	else
		store_signing_default_name(audit_name);
	/* The store's rule (printable ASCII, no spaces, no '+') lies within the signed-note one. */
	if (!store_signing_name_valid(a->audit_name ? a->audit_name : audit_name))
		return ctl_usage_error("init", "--audit-name '%.64s': printable ASCII, at most %d "
				       "characters, no spaces, no '+'", audit_name,
				       STORE_SIGNING_NAME_MAX);
	if (precheck_dir(ctl->store_dir))
		return 1;
	warn_approvers(a);
	if (crypto_init() < 0)
		return ctl_fail("init", "cannot initialise the crypto libraries");
	for (size_t i = 0; i < a->nkey_pub; i++) {
		err_clear();
		if (audit_auditor_public_read(a->key_pub[i], a->pks[a->nkey_out + i]) < 0)
			return ctl_fail("init", "--auditor-public-key: %s", err_detail());
	}
	for (size_t i = 0; i < a->nkey_out; i++) {
		struct stat sb;

		if (lstat(a->key_out[i], &sb) == 0)
			return ctl_fail("init", "--auditor-key-out %s exists; it is never "
					"overwritten (nothing was changed)", a->key_out[i]);
	}
	if (a->test_kdf)
		fprintf(stderr, "enclavectl: init: warning: --test-kdf uses the cheapest key "
				"derivation, so the passphrase is easy to guess from "
				"keys/master.key: for tests and demos only\n");
	kdf = a->test_kdf ? crypto_kdf_params_min() : crypto_kdf_params_default();

	/* The index library, loaded before the passphrase is asked for (rocksdb_lazy.c). */
	if (ctl_rocksdb_load("init"))
		return 1;
	if (read_passphrase(a, &pass))
		return 1;
	if (!ctl->quiet && !a->test_kdf && isatty(STDERR_FILENO))
		fputs("deriving the key-encryption key (a few seconds)...\n", stderr);
	err_clear();
	r = store_create(ctl->store_dir, pass, &kdf, &st);
	crypto_secret_free(pass);
	pass = NULL;
	if (r < 0) {
		if (r == -EEXIST)
			return ctl_fail("init", "%s is not empty; a store is created in a new "
						"or empty directory (nothing was changed)",
					ctl->store_dir);
		return ctl_fail("init", "cannot create the store in %s: %s", ctl->store_dir,
				*err_detail() ? err_detail() : strerror(-r));
	}
	r = make_signing_key(st, audit_name, &verifier);
	if (r == 0 && store_visa_key_create(st) < 0)
		r = ctl_fail("init", "cannot make the visa signing key: %s", err_detail());
	if (r == 0)
		r = make_auditor_keys(st, a);
	if (r == 0)
		r = finish_store(ctl->store_dir, a);
	store_close(st);
	if (r) {
		free(verifier);
		return r;
	}

	printf("created store %s\n"
	       "  keys/master.key   the master key, wrapped under your passphrase\n"
	       "  run/              where enclaved makes its control socket\n"
	       "  " CONF_NAME "      roles:\n", ctl->store_dir);
	print_specs("steward", a->stewards, a->nstewards);
	print_specs("auditor", a->auditors, a->nauditors);
	printf("  keys/audit.key    the audit log's signing key, wrapped; its verifier key:\n"
	       "                    %s\n", verifier);
	free(verifier);
	for (size_t i = 0; i < a->nkey_out + a->nkey_pub; i++) {
		char id[AUDIT_AUDITOR_ID_TEXT];

		audit_auditor_id(a->pks[i], id);
		if (i < a->nkey_out)
			printf("  auditor key %s  secret half in %s (give it to the auditor)\n", id,
			       a->key_out[i]);
		else
			printf("  auditor key %s  from %s\n", id, a->key_pub[i - a->nkey_out]);
	}
	if (a->nkey_out + a->nkey_pub == 0)
		printf("  no auditor key: only the daemon can read the names in the audit log until\n"
		       "                    `enclavectl audit auditor-add --public-key FILE`\n");
	printf("  keys/visa.key     the GA4GH visa signing key (ES256), wrapped%s%s\n",
	       a->visa_issuer ? "; issuer " : "", a->visa_issuer ? a->visa_issuer : "");
	printf("next: start the daemon:  enclaved --store %s --mount MOUNTPOINT\n",
	       ctl->store_dir);
	return 0;
}
