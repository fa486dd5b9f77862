/* enclavectl crypt4gh keygen | import | pubkey: the store's Crypt4GH site key (docs/CRYPT4GH.md).
 *
 * The archives that send data to the site encrypt it to this key's public half; `dataset import`
 * then decrypts their .c4gh files in the daemon. The private key never leaves the daemon once it
 * is in: keygen makes it there; import parses an existing key file here (its passphrase from the
 * terminal or a descriptor, never argv or the environment) and hands the 32 secret bytes to the
 * daemon through a pipe.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "crypto/crypt4gh.h"

static const char keygen_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] crypt4gh keygen [--out FILE]\n\n"
	"Make the store's Crypt4GH key pair. The private key is kept wrapped under the store's\n"
	"master key (keys/crypt4gh.key) and never leaves the daemon; the public key is printed\n"
	"in the standard Crypt4GH public key format (or written to FILE), to send to the\n"
	"archives that encrypt data for this site. Recorded in the audit log with the key's\n"
	"fingerprint (SHA-256 of the key). A store has one Crypt4GH key: it is never replaced.\n"
	"Stewards only.\n\n"
	"Options:\n"
	"  --out FILE   write the public key to FILE (created; must not exist)\n"
	"  --json       print {public_key, fingerprint} as JSON\n"
	"  -h, --help   show this help\n";

static const char import_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] crypt4gh import KEYFILE [--passphrase-fd N]\n\n"
	"Make an existing private key the store's Crypt4GH key: a Crypt4GH private key file\n"
	"(protected with scrypt, bcrypt or pbkdf2_hmac_sha256, or not at all) or an OpenSSH\n"
	"ed25519 key, with or without a passphrase (kdf bcrypt; ciphers aes256-ctr, aes256-gcm,\n"
	"chacha20-poly1305 and the other AES ones ssh-keygen writes), converted as the Crypt4GH\n"
	"tools do. bcrypt with more than 2048 rounds is refused. The file is checked before a\n"
	"passphrase is asked for; it is read from the terminal, or from descriptor N (until end\n"
	"of file); never from the command line or the environment. The key goes to the daemon\n"
	"through a pipe and is wrapped there like keygen's. Recorded in the audit log with the\n"
	"fingerprint. Stewards only.\n\n"
	"Options:\n"
	"  --passphrase-fd N  read the key's passphrase from descriptor N\n"
	"  --json             print {public_key, fingerprint} as JSON\n"
	"  -h, --help         show this help\n";

static const char pubkey_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] crypt4gh pubkey [--out FILE]\n\n"
	"Print the store's Crypt4GH public key (the standard format) and, on stderr, its\n"
	"fingerprint. Anyone may ask.\n\n"
	"Options:\n"
	"  --out FILE   write it to FILE (created; must not exist)\n"
	"  --json       print {public_key, fingerprint} as JSON\n"
	"  -h, --help   show this help\n";

enum { OPT_OUT = 0x200, OPT_PASS_FD };

struct c4_opts {
	const char *what;
	const char *out;
	int pass_fd;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct c4_opts *o = ctx;
	char *end;
	long v;

	if (val == OPT_OUT) {
		o->out = arg;
		return 0;
	}
	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v < 0 || v > 1000000)
		return ctl_usage_error(o->what, "--passphrase-fd: a descriptor number, not '%.40s'",
				       arg);
	o->pass_fd = (int)v;
	return 0;
}

/* Print (or write to o->out) the key of a reply. */
static int print_key(struct ctl *ctl, const struct c4_opts *o, struct reply *rep, const char *done)
{
	const char *pub = json_string_value(json_object_get(rep->result, "public_key"));
	const char *fp = json_string_value(json_object_get(rep->result, "fingerprint"));
	int fd, r = 0;

	if (!pub || !fp) {
		reply_clear(rep);
		return ctl_fail(o->what, "the daemon's reply has no public key");
	}
	if (o->out) {
		fd = open(o->out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, pub, strlen(pub)) != (ssize_t)strlen(pub) || fsync(fd) < 0)
			r = ctl_fail(o->what, "%s: %s", o->out, strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	if (r == 0 && ctl->json)
		return ctl_print_json(rep);
	if (r == 0 && !o->out)
		fputs(pub, stdout);
	if (r == 0 && !ctl->quiet)
		fprintf(stderr, "%s%sfingerprint %s%s%s\n", done ? done : "", done ? "; " : "", fp,
			o->out ? ", public key in " : "", o->out ? o->out : "");
	reply_clear(rep);
	return r;
}

static int c4_keygen(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, NULL, OPT_OUT },
		{ 0 },
	};
	struct c4_opts o = { .what = "crypt4gh keygen", .pass_fd = -1 };
	struct reply rep = { 0 };
	int first, r;

	r = ctl_parse(ctl, o.what, keygen_usage, argc, argv, opts, on_opt, &o, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error(o.what, "unexpected argument '%s'", argv[first]);
	r = ctl_call(ctl, o.what, "crypt4gh.keygen", json_object(), NULL, NULL, &rep);
	if (r)
		return r;
	return print_key(ctl, &o, &rep, "Crypt4GH key made");
}

static int c4_pubkey(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, NULL, OPT_OUT },
		{ 0 },
	};
	struct c4_opts o = { .what = "crypt4gh pubkey", .pass_fd = -1 };
	struct reply rep = { 0 };
	int first, r;

	r = ctl_parse(ctl, o.what, pubkey_usage, argc, argv, opts, on_opt, &o, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error(o.what, "unexpected argument '%s'", argv[first]);
	r = ctl_call(ctl, o.what, "crypt4gh.pubkey", json_object(), NULL, NULL, &rep);
	if (r)
		return r;
	return print_key(ctl, &o, &rep, NULL);
}

/* Read a key file (at most 8 KiB) into guarded memory. */
static int read_key_file(const char *path, char **ret_text, size_t *ret_len)
{
	const size_t cap = 8192;
	char *text = sodium_malloc(cap + 1);
	ssize_t n;
	int fd;

	if (!text)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		sodium_free(text);
		return err_set(-errno, "%s: %s", path, strerror(errno));
	}
	n = read_full(fd, text, cap + 1);
	close(fd);
	if (n < 0 || (size_t)n > cap) {
		sodium_free(text);
		return err_set(n < 0 ? (int)n : -EFBIG, "%s: %s", path,
			       n < 0 ? strerror((int)-n) : "longer than 8 KiB: not a key file");
	}
	text[n] = '\0';
	*ret_text = text;
	*ret_len = (size_t)n;
	return 0;
}

static int c4_import(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "passphrase-fd", required_argument, NULL, OPT_PASS_FD },
		{ 0 },
	};
	struct c4_opts o = { .what = "crypt4gh import", .pass_fd = -1 };
	char *text = NULL, pub[C4GH_PUBKEY_TEXT_MAX], sock[4096];
	crypto_secret *pass = NULL;
	crypto_key *sk = NULL;
	struct reply rep = { 0 };
	struct client c = { .sock = -1 };
	uint8_t pk[C4GH_KEY_LEN];
	int first, r, p[2] = { -1, -1 };
	size_t len = 0;
	json_t *args;

	r = ctl_parse(ctl, o.what, import_usage, argc, argv, opts, on_opt, &o, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error(o.what, "missing KEYFILE");
	if (first + 1 < argc)
		return ctl_usage_error(o.what, "unexpected argument '%s'", argv[first + 1]);
	if (ctl_socket_path(ctl, sock, sizeof(sock)) < 0)
		return ctl_fail(o.what, "the socket path is too long");
	if (crypto_init() < 0)
		return ctl_fail(o.what, "cannot initialise libsodium");
	err_clear();
	r = read_key_file(argv[first], &text, &len);
	if (r < 0)
		return ctl_fail(o.what, "%s", err_detail());
	/* Parsed once without a passphrase: a malformed key, an unsupported cipher or absurd kdf
	 * rounds are refused before anyone types anything (-ENOKEY: it needs one). */
	err_clear();
	r = c4gh_seckey_parse(text, len, NULL, &sk);
	if (r == -ENOKEY) {
		r = o.pass_fd >= 0 ? crypto_passphrase_read_fd(o.pass_fd, &pass)
				   : crypto_passphrase_prompt("Passphrase of the key: ", false, &pass);
		if (r == -ENXIO) {
			r = ctl_fail(o.what, "%s is protected by a passphrase and there is no terminal "
				     "to ask it on: give --passphrase-fd N", argv[first]);
			goto out;
		}
		if (r < 0) {
			r = ctl_fail(o.what, "cannot read the passphrase: %s", strerror(-r));
			goto out;
		}
		err_clear();
		r = c4gh_seckey_parse(text, len, pass, &sk);
	}
	if (r < 0) {
		r = ctl_fail(o.what, "%s: %s", argv[first], err_detail()[0] ? err_detail()
									     : strerror(-r));
		goto out;
	}
	c4gh_public_key(sk, pk);
	c4gh_pubkey_format(pk, pub);
	/* The secret through a pipe: 32 bytes fit in its buffer, so the write never blocks. */
	if (pipe2(p, O_CLOEXEC) < 0 ||
	    write(p[1], crypto_key_bytes(sk), C4GH_KEY_LEN) != C4GH_KEY_LEN) {
		r = ctl_fail(o.what, "cannot make a pipe for the key: %s", strerror(errno));
		goto out;
	}
	close(p[1]);
	p[1] = -1;
	r = client_connect(sock, client_daemon_uid(ctl->store_dir), &c);
	if (r < 0) {
		r = client_report_connect(o.what, sock, r);
		goto out;
	}
	args = json_pack("{s:s}", "public_key", pub);
	r = client_call(&c, "crypt4gh.import", args, p[0], NULL, NULL, &rep);
	if (r < 0 || !rep.ok) {
		r = client_report(o.what, r, &rep);
		reply_clear(&rep);
		goto out;
	}
	r = print_key(ctl, &o, &rep, "Crypt4GH key imported");
out:
	client_close(&c);
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	crypto_key_free(sk);
	crypto_secret_free(pass);
	if (text)
		sodium_free(text);
	return r;
}

const struct ctl_cmd crypt4gh_cmds[] = {
	{ "import", c4_import, "KEYFILE [--passphrase-fd N]", "make an existing key the site key" },
	{ "keygen", c4_keygen, "[--out FILE]", "make the store's Crypt4GH key pair" },
	{ "pubkey", c4_pubkey, "[--out FILE]", "print the store's Crypt4GH public key" },
	{ 0 },
};
