/* End-to-end Crypt4GH (issue 18): the real enclaved and enclavectl. The store's site key made,
 * shown, refused twice; .c4gh files made by an independent implementation (tests/interop/
 * crypt4gh_ref.py, python3-cryptography) imported, their plaintext read back through the mount
 * by a user with a grant: 0 bytes, one byte, one segment, one byte over, several recipients and a
 * stranger's packet, an edit list, the AEAD method, a Crypt4GH file without the suffix; a file for
 * someone else, or altered, stops the import naming the file and commits nothing; --keep-crypt4gh
 * keeps them as they are; the audit records name each file's header digest. Existing keys come in
 * through enclavectl: a Crypt4GH key protected with scrypt, an OpenSSH key with a passphrase.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "common/proto.h"
#include "crypto/crypt4gh.h"
#include "store/store.h"
#include "tests/e2e.h"
#include "tests/testutil.h"

#define DS "cohort-c4gh"

static char *site_pub;    /* the store's public key file */
static char *rsec, *rpub; /* the researcher's key pair, made by the independent implementation */

static int group_setup(void **state)
{
	static const char *const roles[] = { "--steward", "user:root", "--steward",
					     "user:" TU_USER_ALICE, "--auditor", "user:root",
					     "--approvals", "1", NULL };

	(void)state;
	if (e2e_setup("c4gh") < 0)
		return -1;
	if (e2e_init(roles) < 0)
		return -1;
	e2e_daemon_start_with(E->pass, true);
	site_pub = tu_fmt("%s/site.pub", E->root);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	/* test_export_unrecorded_emptied's small file system, if it stopped half way. */
	if (E && E->store) {
		char *audit = tu_fmt("%s/audit", E->store);

		(void)umount2(audit, MNT_DETACH);
		free(audit);
	}
	e2e_teardown();
	free(site_pub);
	free(rsec);
	free(rpub);
	return 0;
}

/* Run a command line of test-made paths through /bin/sh -c, for the lines that need its
 * redirections, pipes or globs; its exit status. The others run their argv directly (run). */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return tu_run_argv((char *const[]){ "/bin/sh", "-c", cmd, NULL });
}

/* Run a program (looked up in PATH) with the arguments given, no shell: fork and exec
 * (tu_run_argv); its exit status. */
#define run(...) tu_run_argv((char *const[]){ __VA_ARGS__, NULL })

/* A file of n random bytes at path, in a directory made if need be (mkdir -p). */
static void random_file(const char *path, size_t n)
{
	char *dir = strdup(path);
	uint8_t *b = malloc(n + 1);

	assert_non_null(dir);
	assert_non_null(b);
	*strrchr(dir, '/') = '\0';
	assert_int_equal(run("mkdir", "-p", dir), 0);
	randombytes_buf(b, n);
	tu_write_file(path, b, n);
	free(b);
	free(dir);
}

/* rm -f path: removed, or not there. */
static void remove_if_there(const char *path)
{
	assert_true(unlink(path) == 0 || errno == ENOENT);
}

/* enclavectl crypt4gh import key, its passphrase on descriptor 3 from the file pass and its
 * stderr into the file err (NULL: the test's own), by fork and exec, no shell; its exit
 * status. */
static int import_key(const char *key, const char *pass, const char *err)
{
	int status = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(pass, O_RDONLY);

		if (fd < 0 || (fd != 3 && dup2(fd, 3) < 0))
			_exit(127);
		if (err && ((fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0 ||
			    dup2(fd, 2) < 0))
			_exit(127);
		execl(ENCLAVECTL_PATH, ENCLAVECTL_PATH, "--store", E->store, "crypt4gh", "import",
		      key, "--passphrase-fd", "3", (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* crypt4gh_ref.py encrypt of plain into out for the recipients (public key files) and options. */
static void ref_encrypt(const char *plain, const char *out, const char *opts)
{
	assert_int_equal(sh("python3 %s encrypt %s <'%s' >'%s'", C4GH_REF_PY, opts, plain, out), 0);
}

/* A file of n pattern bytes at path. */
static void plain_file(const char *path, size_t n, unsigned seed)
{
	uint8_t *b = malloc(n + 1);

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 37 + seed + (i >> 13));
	tu_write_file(path, b, n);
	free(b);
}

struct cmp_job {
	const char *got, *want;
};

/* Run as the reader: the file through the mount must equal the expected one, byte for byte. */
static int child_cmp(void *arg)
{
	const struct cmp_job *j = arg;
	size_t a = 0, b = 0;
	uint8_t *x = tu_read_file(j->got, &a), *y = tu_read_file(j->want, &b);
	int r = x && y && a == b && memcmp(x, y, a) == 0 ? 0 : 1;

	if (r)
		fprintf(stderr, "%s: %zu bytes, want %zu as %s\n", j->got, a, b, j->want);
	free(x);
	free(y);
	return r;
}

static bool same_file_text(const char *path, const char *text)
{
	size_t n = 0;
	uint8_t *f = tu_read_file(path, &n);
	bool same = f && n == strlen(text) && memcmp(f, text, n) == 0;

	free(f);
	return same;
}

static bool file_has(const char *path, const char *text)
{
	size_t n = 0;
	char *t = (char *)tu_read_file(path, &n);
	bool has = t && memmem(t, n, text, strlen(text)) != NULL;

	free(t);
	return has;
}

/* A passphrase-protected OpenSSH ed25519 key (ssh-keygen: kdf bcrypt, aes256-gcm@openssh.com)
 * imported through enclavectl with its passphrase on a descriptor, with the site key file
 * removed first (pass: its passphrase file, bad: a wrong one). The daemon's public key must be
 * the X25519 form of the key OpenSSH itself decrypts (ssh-keygen -p to an unprotected copy). A
 * copy whose bcrypt rounds say 2^32 - 1 is refused for that, before any passphrase is asked. */
static void ssh_key_import(const char *keyfile, const char *pass, const char *bad,
			   const char *err)
{
	char *key = tu_fmt("%s/ssh.key", E->root), *plain = tu_fmt("%s/ssh.plain", E->root);
	char *absurd = tu_fmt("%s/ssh-absurd.key", E->root), *py = tu_fmt("%s/rounds.py", E->root);
	static const char patch[] =
		"import base64, struct, sys\n"
		"t = open(sys.argv[1]).read().strip().split('\\n')\n"
		"b = bytearray(base64.b64decode(''.join(t[1:-1])))\n"
		"o = 15\n"
		"o += 4 + struct.unpack_from('>I', b, o)[0]\n"           /* cipher */
		"o += 4 + struct.unpack_from('>I', b, o)[0]\n"           /* kdf */
		"o += 8 + struct.unpack_from('>I', b, o + 4)[0]\n"       /* options: salt */
		"struct.pack_into('>I', b, o, 0xffffffff)\n"             /* rounds */
		"open(sys.argv[2], 'w').write(t[0] + '\\n' + base64.b64encode(b).decode() + '\\n'"
		" + t[-1] + '\\n')\n";
	char want[C4GH_PUBKEY_TEXT_MAX];
	crypto_key *sk = NULL;
	uint8_t pk[C4GH_KEY_LEN], *text;
	struct e2e_run *r;
	size_t n = 0;

	assert_int_equal(run("ssh-keygen", "-q", "-t", "ed25519", "-a", "4", "-Z",
			     "aes256-gcm@openssh.com", "-N", "protect me", "-C", "e2e", "-f", key), 0);
	assert_int_equal(run("cp", key, plain), 0);
	/* (It says it saved the key even with -q.) */
	assert_int_equal(sh("ssh-keygen -q -p -P 'protect me' -N '' -f '%s' >/dev/null", plain), 0);
	text = tu_read_file(plain, &n);
	assert_int_equal(c4gh_seckey_parse((const char *)text, n, NULL, &sk), 0);
	c4gh_public_key(sk, pk);
	c4gh_pubkey_format(pk, want);
	crypto_key_free(sk);
	free(text);
	tu_write_file(py, patch, strlen(patch));
	assert_int_equal(run("/usr/bin/python3", py, key, absurd), 0);

	assert_int_equal(unlink(keyfile), 0);
	r = ctl("crypt4gh", "import", absurd);   /* no terminal: it would ask for --passphrase-fd */
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "4294967295 rounds"));
	free(r);
	assert_int_equal(import_key(key, bad, err), 1);
	assert_true(file_has(err, "passphrase does not open the OpenSSH private key"));
	assert_int_equal(e2e_audit_count("crypt4gh_key_create", NULL, NULL, NULL, 0), 2);
	assert_int_equal(import_key(key, pass, NULL), 0);
	r = e2e_ok(ctl("crypt4gh", "pubkey"));
	assert_string_equal(r->out, want);
	free(r);
	assert_int_equal(e2e_audit_count("crypt4gh_key_create", NULL, NULL, NULL, 0), 3);
	free(key);
	free(plain);
	free(absurd);
	free(py);
}

/* keygen, pubkey, never replaced; then (the key file removed behind the daemon's back, which
 * unwraps it for each use) an existing scrypt-protected key imported, its passphrase from a
 * descriptor, and that key becomes the one files are encrypted to. */
static void test_site_key(void **state)
{
	char *keyfile = tu_fmt("%s/keys/crypt4gh.key", E->store), *made = tu_fmt("%s/made.pub",
										    E->root);
	char *sec = tu_fmt("%s/prot.sec", E->root), *pf = tu_fmt("%s/prot.pass", E->root);
	char *bad = tu_fmt("%s/bad.pass", E->root), *err = tu_fmt("%s/import.err", E->root);
	struct e2e_run *r;
	struct stat st;

	(void)state;
	/* No key yet: said plainly. */
	r = ctl("crypt4gh", "pubkey");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "no Crypt4GH key"));
	free(r);
	/* Not a steward: refused. */
	r = ctl_as(&E->u.bob, "crypt4gh", "keygen");
	assert_int_equal(r->status, 1);
	free(r);

	e2e_ok_free(ctl("crypt4gh", "keygen", "--out", made));
	assert_int_equal(stat(keyfile, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* The public key in the standard format, the same whoever asks (anyone may). */
	r = e2e_ok(ctl_as(&E->u.bob, "crypt4gh", "pubkey"));
	assert_true(same_file_text(made, r->out));
	assert_non_null(strstr(r->out, "-----BEGIN CRYPT4GH PUBLIC KEY-----\n"));
	free(r);
	/* Never replaced: keygen and import both refused now. */
	r = ctl("crypt4gh", "keygen");
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "never replaced"));
	free(r);
	tu_write_file(pf, "protect me\n", 11);
	tu_write_file(bad, "wrong\n", 6);
	assert_int_equal(run("python3", C4GH_REF_PY, "keygen", sec, site_pub, "--passphrase-file",
			     pf), 0);
	assert_int_equal(import_key(sec, pf, err), 1);
	assert_int_equal(e2e_audit_count("crypt4gh_key_create", NULL, NULL, NULL, 0), 1);

	/* Without the key file, an existing key can come in. */
	assert_int_equal(unlink(keyfile), 0);
	r = ctl("crypt4gh", "import", sec);   /* no terminal, no --passphrase-fd */
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "--passphrase-fd"));
	free(r);
	assert_int_equal(import_key(sec, bad, err), 1);
	{
		size_t n = 0;
		char *t = (char *)tu_read_file(err, &n);

		assert_non_null(strstr(t, "passphrase does not open"));
		free(t);
	}
	assert_int_equal(stat(keyfile, &st), -1);
	assert_int_equal(import_key(sec, pf, NULL), 0);
	r = e2e_ok(ctl("crypt4gh", "pubkey"));
	assert_true(same_file_text(site_pub, r->out));
	free(r);
	assert_int_equal(e2e_audit_count("crypt4gh_key_create", NULL, NULL, NULL, 0), 2);
	ssh_key_import(keyfile, pf, bad, err);
	/* ... and the scrypt-protected key back, for the tests that follow. */
	assert_int_equal(unlink(keyfile), 0);
	assert_int_equal(import_key(sec, pf, NULL), 0);
	r = e2e_ok(ctl("crypt4gh", "pubkey"));
	assert_true(same_file_text(site_pub, r->out));
	free(r);
	free(keyfile);
	free(made);
	free(sec);
	free(pf);
	free(bad);
	free(err);
}

static void test_import(void **state)
{
	/* other: a second recipient (another's key) and two packets for strangers as well. */
	static const struct { const char *name, *opts; size_t size; bool other; } files[] = {
		{ "empty.c4gh", "", 0, false },
		{ "one.c4gh", "", 1, false },
		{ "sub/segment.c4gh", "", 65536, false },
		{ "sub/over.c4gh", "", 65537, false },
		{ "many.c4gh", "--decoy 2", 300000, true },
		{ "aead.c4gh", "--aead 5", 131072, false },
		{ "noext.bin", "", 1000, false },
		/* 700 packets for strangers first: a header of 75,724 bytes, past the daemon's
		 * first read of 64 KiB, read again whole. */
		{ "bighdr.c4gh", "--decoy 700", 70000, false },
	};
	char *src = tu_fmt("%s/c4src", E->root), *p, *q, *opts;
	char *wdir = tu_fmt("%s/want", E->root), *osec = tu_fmt("%s/other.sec", E->root);
	char *opub = tu_fmt("%s/other.pub", E->root);
	struct e2e_run *r;
	uint64_t gid;
	char ids[32];

	(void)state;
	p = tu_fmt("%s/sub", src);
	q = tu_fmt("%s/sub", wdir);
	assert_int_equal(run("mkdir", "-p", p, q), 0);
	free(p);
	free(q);
	assert_int_equal(run("python3", C4GH_REF_PY, "keygen", osec, opub), 0);
	free(osec);
	free(opub);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *stem = strdup(files[i].name), *dot = strrchr(stem, '.');

		if (dot && strcmp(dot, ".c4gh") == 0)
			*dot = '\0';
		p = tu_fmt("%s/want/%s", E->root, stem);
		plain_file(p, files[i].size, (unsigned)i);
		q = tu_fmt("%s/%s", src, files[i].name);
		opts = files[i].other ? tu_fmt("--recipient %s %s --recipient %s/other.pub",
					       site_pub, files[i].opts, E->root)
				      : tu_fmt("--recipient %s %s", site_pub, files[i].opts);
		ref_encrypt(p, q, opts);
		free(opts);
		free(p);
		free(q);
		free(stem);
	}
	/* An edit list: keep bytes 10..109 and everything from 70110 on. */
	p = tu_fmt("%s/edit.plain", E->root);
	plain_file(p, 100000, 77);
	q = tu_fmt("%s/edit.c4gh", src);
	opts = tu_fmt("--recipient %s --edit 10,100,70000", site_pub);
	ref_encrypt(p, q, opts);
	assert_int_equal(sh("(head -c 110 %s | tail -c 100; tail -c +70111 %s) >%s/want/edit", p,
			    p, E->root), 0);
	free(opts);
	free(p);
	free(q);
	/* A plain file beside them. */
	p = tu_fmt("%s/plain.txt", src);
	q = tu_fmt("%s/plain.txt", wdir);
	tu_write_file(p, "not encrypted\n", 14);
	tu_write_file(q, "not encrypted\n", 14);
	free(p);
	free(q);
	assert_int_equal(run("chmod", "-R", "a+rX", wdir), 0);
	free(wdir);

	r = e2e_ok(ctl("--json", "dataset", "import", DS, src));
	free(r);
	/* A reader with an approved grant reads the plaintext through the mount. */
	gid = e2e_grant("--user", TU_USER_BOB, DS, "+1d");
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)gid);
	e2e_ok_free(ctl_as(&E->u.alice, "grant", "approve", ids));
	{
		static const char *const names[] = { "empty", "one", "sub/segment", "sub/over",
						     "many", "aead", "noext.bin", "edit",
						     "bighdr", "plain.txt" };

		for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
			char *got = tu_fmt("%s/%s/latest/%s", E->mnt, DS, names[i]);
			char *want = tu_fmt("%s/want/%s", E->root, names[i]);
			struct cmp_job j = { got, want };

			assert_int_equal(tu_run_as(&E->u.bob, child_cmp, &j, 60000), 0);
			free(got);
			free(want);
		}
	}
	/* One record per Crypt4GH file, with its header's digest; the 0-byte file is all
	 * header, so its digest is the file's SHA-256. */
	assert_int_equal(e2e_audit_count("import_crypt4gh", NULL, DS, NULL, 0), 9);
	r = e2e_ok(ctl("audit", "show", "--auditor-key", E->akey, "--event", "import_crypt4gh",
		       "--json"));
	{
		uint8_t *f, h[32];
		char hex[65];
		size_t n = 0;

		p = tu_fmt("%s/empty.c4gh", src);
		f = tu_read_file(p, &n);
		crypto_hash_sha256(h, f, n);
		sodium_bin2hex(hex, sizeof(hex), h, 32);
		assert_non_null(strstr(r->out, hex));
		free(f);
		free(p);
	}
	free(r);
	free(src);
}

/* A directory holding a file for someone else, or one altered: the import stops naming it, and
 * nothing is committed (the dataset does not exist). */
static void test_import_refused(void **state)
{
	char *src = tu_fmt("%s/badsrc", E->root), *p;
	struct e2e_run *r;

	(void)state;
	p = tu_fmt("%s/p", src);
	random_file(p, 5000);
	{
		char *ok = tu_fmt("%s/a-ok.c4gh", src), *o = tu_fmt("--recipient %s", site_pub);

		ref_encrypt(p, ok, o);
		free(ok);
		free(o);
	}
	{
		char *other = tu_fmt("%s/b-other.c4gh", src);
		char *o = tu_fmt("--recipient %s/other.pub", E->root);

		ref_encrypt(p, other, o);
		free(other);
		free(o);
	}
	r = ctl("dataset", "import", "refused-ds", src);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "b-other.c4gh"));
	assert_non_null(strstr(r->err, "not addressed to this key"));
	free(r);
	r = ctl("dataset", "show", "refused-ds");
	assert_int_not_equal(r->status, 0);
	free(r);

	/* Altered: one bit of the data flipped (in the last byte: the last segment's MAC). A flip,
	 * not a byte written: writing 0x01 changed nothing when the MAC already ended in 0x01. */
	{
		char *bad = tu_fmt("%s/c-bad.c4gh", src), *ok = tu_fmt("%s/a-ok.c4gh", src);
		char *other = tu_fmt("%s/b-other.c4gh", src);
		struct stat sb;
		uint8_t b;
		int fd;

		assert_int_equal(unlink(other), 0);
		assert_int_equal(run("cp", ok, bad), 0);
		free(ok);
		free(other);
		fd = open(bad, O_RDWR | O_CLOEXEC);
		assert_true(fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size > 0);
		assert_int_equal(pread(fd, &b, 1, sb.st_size - 1), 1);
		b ^= 0x01;
		assert_int_equal(pwrite(fd, &b, 1, sb.st_size - 1), 1);
		close(fd);
		free(bad);
	}
	r = ctl("dataset", "import", "refused-ds", src);
	assert_int_equal(r->status, 1);
	if (!strstr(r->err, "c-bad.c4gh"))
		fail_msg("stderr: %s", r->err);
	assert_non_null(strstr(r->err, "does not authenticate"));
	free(r);
	r = ctl("dataset", "show", "refused-ds");
	assert_int_not_equal(r->status, 0);
	free(r);

	/* Cut short: inside the header (124 bytes: 16 and one packet of 108), then inside its
	 * only segment. Each stops the import naming the file; nothing is committed. */
	{
		static const struct { const char *name; int bytes; const char *why; } cuts[] = {
			{ "d-cut-header.c4gh", 100, "cut short" },
			{ "d-cut-segment.c4gh", 124 + 1000, "" },
		};

		char *ok = tu_fmt("%s/a-ok.c4gh", src), *bad = tu_fmt("%s/c-bad.c4gh", src);
		char *cut[ARRAY_SIZE(cuts)];
		size_t okn = 0;
		uint8_t *okb = tu_read_file(ok, &okn);

		for (size_t i = 0; i < ARRAY_SIZE(cuts); i++)
			cut[i] = tu_fmt("%s/%s", src, cuts[i].name);
		remove_if_there(bad);
		for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
			/* Only this cut file there: the first bytes of a-ok.c4gh. */
			for (size_t j = 0; j < i; j++)
				remove_if_there(cut[j]);
			assert_true((size_t)cuts[i].bytes < okn);
			tu_write_file(cut[i], okb, (size_t)cuts[i].bytes);
			r = ctl("dataset", "import", "refused-ds", src);
			assert_int_equal(r->status, 1);
			if (!strstr(r->err, cuts[i].name) || !strstr(r->err, cuts[i].why))
				fail_msg("stderr: %s", r->err);
			free(r);
			r = ctl("dataset", "show", "refused-ds");
			assert_int_not_equal(r->status, 0);
			free(r);
		}
		for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
			remove_if_there(cut[i]);
			free(cut[i]);
		}
		free(okb);
		free(bad);
		free(ok);
	}

	/* --keep-crypt4gh: stored as they are, names kept. The file is older than the importer's
	 * racy window (2 s), so the next version finds its source stamp unchanged. */
	remove_if_there(p);
	sleep(3);
	e2e_ok_free(ctl("dataset", "import", "kept-ds", src, "--keep-crypt4gh"));
	r = e2e_ok(ctl("--json", "dataset", "show", "kept-ds"));
	free(r);
	assert_int_equal(e2e_audit_count("import_crypt4gh", NULL, "kept-ds", NULL, 0), 0);
	/* Issue 16 point 5: version 2 without --keep-crypt4gh decrypts the file version 1 kept
	 * raw, although its stamp is unchanged (the stamp records that nobody looked at its head):
	 * shown the same way, not shared with version 1's raw object. */
	r = e2e_ok(ctl("--json", "dataset", "import", "kept-ds", src));
	{
		json_t *j = e2e_out_json(r);

		assert_int_equal(json_integer_value(json_object_get(j, "version")), 2);
		assert_int_equal(json_integer_value(json_object_get(j, "reused_files")), 0);
		json_decref(j);
	}
	free(r);
	assert_int_equal(e2e_audit_count("import_crypt4gh", NULL, "kept-ds", NULL, 0), 1);
	r = e2e_ok(ctl("--json", "dataset", "show", "kept-ds@2"));
	free(r);
	free(p);
	free(src);
}


static int count_files(const char *dir)
{
	char *cmd = tu_fmt("test ! -d %s || test -z \"$(find %s -type f)\"", dir, dir);
	int r = sh("%s", cmd);

	free(cmd);
	return r;   /* 0: no file there */
}

/* Export files of the imported version to a researcher's key, under approval: pending until
 * another steward approves (not the requester, not a non-steward), refused to run before, run
 * once, every output Crypt4GH that the independent implementation decrypts to the original,
 * recorded with the key's fingerprint and each file's digest; survives a daemon restart. */
static void test_export(void **state)
{
	static const char *const files[] = { "empty", "one", "sub/segment", "sub/over", "many" };
	char *out1 = tu_fmt("%s/out1", E->root), *out2 = tu_fmt("%s/out2", E->root);
	struct e2e_run *r;
	json_t *j;
	char ids[32];

	(void)state;
	rsec = tu_fmt("%s/researcher.sec", E->root);
	rpub = tu_fmt("%s/researcher.pub", E->root);
	assert_int_equal(run("python3", C4GH_REF_PY, "keygen", rsec, rpub), 0);

	/* Refused at once: a file the version does not have, a directory, a key that is not one. */
	r = ctl("export", DS "@1", "nope", "--recipient-key", rpub, "--out", out1);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "has no file nope"));
	free(r);
	r = ctl("export", DS "@1", "sub", "--recipient-key", rpub, "--out", out1);
	assert_int_equal(r->status, 1);
	free(r);
	r = ctl("export", DS "@1", "one", "--recipient-key", rsec, "--out", out1);
	assert_int_equal(r->status, 1);
	free(r);
	/* Not a steward: refused. */
	r = ctl_as(&E->u.bob, "export", "request", DS, "one", "--recipient-key", rpub, "--out",
		   "/tmp/x");
	assert_int_equal(r->status, 1);
	free(r);

	r = e2e_ok(ctl("--json", "export", DS "@1", "empty", "one", "sub/segment", "/sub/over",
		       "many", "--recipient-key", rpub, "--out", out1, "--reason",
		       "validation cohort for Dr Who"));
	j = e2e_out_json(r);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "export"),
							      "state")), "pending_approval");
	snprintf(ids, sizeof(ids), "%lld",
		 (long long)json_integer_value(json_object_get(json_object_get(j, "export"),
								"id")));
	json_decref(j);
	free(r);
	assert_int_equal(count_files(out1), 0);
	/* Not approved: nothing written. */
	r = ctl("export", "run", ids, "--out", out2);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "not approved"));
	free(r);
	assert_int_equal(count_files(out2), 0);
	/* The requester cannot approve; a non-steward cannot; another steward can, once. */
	r = ctl("export", "approve", ids);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "another steward"));
	free(r);
	r = ctl_as(&E->u.bob, "export", "approve", ids);
	assert_int_equal(r->status, 1);
	free(r);
	e2e_ok_free(ctl_as(&E->u.alice, "export", "approve", ids));
	r = ctl_as(&E->u.alice, "export", "approve", ids);
	assert_int_equal(r->status, 1);
	free(r);

	r = e2e_ok(ctl("export", "run", ids, "--out", out1));
	free(r);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *c4 = tu_fmt("%s/%s.c4gh", out1, files[i]);
		char *want = tu_fmt("%s/want/%s", E->root, files[i]);
		uint8_t *f, h[32];
		char hex[65];
		size_t n = 0;
		struct stat st;

		assert_int_equal(stat(c4, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
		f = tu_read_file(c4, &n);
		assert_true(n >= 16 && memcmp(f, "crypt4gh", 8) == 0);
		crypto_hash_sha256(h, f, n);
		sodium_bin2hex(hex, sizeof(hex), h, 32);
		free(f);
		/* The independent implementation reads it back to the original. */
		assert_int_equal(sh("python3 %s decrypt --sk %s <%s | cmp -s - %s", C4GH_REF_PY,
				    rsec, c4, want), 0);
		/* ... and the log names it by its digest. */
		r = e2e_ok(ctl("audit", "show", "--auditor-key", E->akey, "--event", "export_run",
			       "--json"));
		assert_non_null(strstr(r->out, hex));
		free(r);
		free(c4);
		free(want);
	}
	/* Once only. */
	r = ctl("export", "run", ids, "--out", out2);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "runs once"));
	free(r);
	assert_int_equal(count_files(out2), 0);
	assert_int_equal(e2e_audit_count("export_request", NULL, NULL, NULL, 0), 1);
	assert_int_equal(e2e_audit_count("export_approve", NULL, NULL, NULL, 0), 1);
	assert_int_equal(e2e_audit_count("export_run", NULL, NULL, NULL, 0), 1);

	/* The records come back with the daemon: done, approved by alice. */
	e2e_daemon_stop_sig(SIGTERM);
	e2e_daemon_start_with(E->pass, true);
	r = e2e_ok(ctl("--json", "export", "show", ids));
	j = e2e_out_json(r);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "export"),
							      "state")), "done");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "export"),
							    "approvals")), 1);
	json_decref(j);
	free(r);
	r = ctl("export", "run", ids, "--out", out2);
	assert_int_equal(r->status, 1);
	free(r);
	e2e_ok_free(ctl_as(&E->u.bob, "crypt4gh", "pubkey"));
	free(out1);
	free(out2);
}

/* The id of the export a `--json export request` printed. */
static char *export_id(struct e2e_run *r)
{
	json_t *j = e2e_out_json(r);
	char *id = tu_fmt("%lld", (long long)json_integer_value(
					  json_object_get(json_object_get(j, "export"), "id")));

	json_decref(j);
	free(r);
	return id;
}

/* An approved export for the researcher of ds's files (NULL-terminated; ds is "NAME@VERSION"):
 * its id. */
static char *approved_export(char *ds, char *const *paths)
{
	char *argv[32] = { ENCLAVECTL_PATH, "--store", E->store, "--json", "export", "request", ds };
	size_t n = 7;
	char *id;

	while (*paths && n < ARRAY_SIZE(argv) - 8)
		argv[n++] = *paths++;
	argv[n++] = "--recipient-key";
	argv[n++] = rpub;
	argv[n++] = "--out";
	argv[n++] = "/nonexistent";
	argv[n++] = "--reason";
	argv[n++] = "outputs for Dr Who";
	argv[n] = NULL;
	id = export_id(e2e_ok(e2e_run_argv(NULL, argv)));
	e2e_ok_free(ctl_as(&E->u.alice, "export", "approve", id));
	return id;
}

static int connect_control(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/run/control.sock", E->store);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* export.run of id straight on the control socket with the n outputs out[] (empty files this
 * test keeps open): the reply's error message, NULL when it succeeded. */
static char *run_raw(const char *id, const int *out, size_t n)
{
	int sock = connect_control();
	enum proto_frame_type type;
	json_t *req = json_pack("{s:s, s:{s:I}}", "op", "export.run", "args", "id",
				(json_int_t)strtoll(id, NULL, 10)), *j = NULL;
	char *msg = NULL;

	assert_int_equal(proto_send_fds(sock, PROTO_REQUEST, req, out, n), 0);
	do {
		json_decref(j);
		j = NULL;
		assert_int_equal(proto_recv(sock, 60000, &type, &j, NULL), 0);
	} while (type == PROTO_PARTIAL);
	if (!json_is_true(json_object_get(j, "ok")))
		msg = strdup(json_string_value(json_object_get(json_object_get(j, "error"),
							       "message")));
	json_decref(j);
	json_decref(req);
	close(sock);
	return msg;
}

/* When the export_run record cannot be written (the log's file system full), the files the run
 * wrote are emptied by the daemon, not left for the client to remove: the test holds the output
 * open itself and finds it empty, the export not done, no export_run record. With room again the
 * same export runs, and the researcher reads it. */
static void test_export_unrecorded_emptied(void **state)
{
	static const char *const files[] = { "audit.log", "checkpoints" };
	static char zero[64 * 1024];
	char *audit = tu_fmt("%s/audit", E->store), *old = tu_fmt("%s/audit.disk", E->store);
	char *filler = tu_fmt("%s/filler", audit), *outp = tu_fmt("%s/unrecorded.c4gh", E->root);
	char *out3 = tu_fmt("%s/out3", E->root), *got, *id, *msg = NULL;
	int runs = e2e_audit_count("export_run", NULL, NULL, NULL, 0), fd, out[8];
	struct e2e_run *r;
	struct stat st;

	(void)state;
	/* The log on a 4 MiB file system of its own (the tree is rebuilt from it), as
	 * test_e2e_audit does. */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	assert_int_equal(rename(audit, old), 0);
	assert_int_equal(mkdir(audit, 0700), 0);
	assert_int_equal(mount("tmpfs", audit, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0700"),
			 0);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *from = tu_fmt("%s/%s", old, files[i]), *to = tu_fmt("%s/%s", audit, files[i]);

		tu_copy_file(from, to);
		free(from);
		free(to);
	}
	e2e_daemon_start_with(E->pass, true);
	/* Eight files: the run's record (a path and two digests each) is larger than the one-file
	 * requests that use up the log's last room below. */
	id = approved_export(DS "@1", (char *[]){ "empty", "one", "sub/segment", "sub/over", "many",
						 "aead", "noext.bin", "edit", NULL });

	/* Full: the room the log allocated ahead of its end takes a few more records (one-file
	 * requests here, each smaller than the run's record); once one is refused, the run's
	 * record cannot fit either. */
	fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	while (write(fd, zero, sizeof(zero)) > 0)
		;
	while (write(fd, zero, 1) > 0)
		;
	close(fd);
	for (int i = 0;; i++) {
		assert_true(i < 512);
		r = ctl("-q", "export", "request", DS "@1", "one", "--recipient-key", rpub, "--out",
			"/nonexistent");
		if (r->status != 0) {
			free(r);
			break;
		}
		free(r);
	}
	for (size_t i = 0; i < ARRAY_SIZE(out); i++) {
		char *p = tu_fmt("%s.%zu", outp, i);

		out[i] = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		assert_true(out[i] >= 0);
		free(p);
	}
	msg = run_raw(id, out, ARRAY_SIZE(out));
	if (!msg || !strstr(msg, "outputs emptied"))
		fail_msg("export.run: %s", msg ? msg : "succeeded with the log full");
	/* The daemon wrote every file (the record comes after the last), then emptied them. */
	for (size_t i = 0; i < ARRAY_SIZE(out); i++) {
		assert_int_equal(fstat(out[i], &st), 0);
		assert_int_equal(st.st_size, 0);
		close(out[i]);
	}
	free(msg);

	/* Room again: not done, nothing recorded; it runs now. */
	assert_int_equal(unlink(filler), 0);
	r = e2e_ok(ctl("export", "show", id));
	assert_null(strstr(r->out, "done"));
	free(r);
	e2e_ok_free(ctl("export", "run", id, "--out", out3));
	got = tu_fmt("%s/sub/over.c4gh", out3);
	assert_int_equal(sh("python3 %s decrypt --sk %s <%s | cmp -s - %s/want/sub/over",
			    C4GH_REF_PY, rsec, got, E->root), 0);
	assert_int_equal(e2e_audit_count("export_run", NULL, NULL, NULL, 0), runs + 1);

	/* The log back where it was, with what was written on the small file system. */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *from = tu_fmt("%s/%s", audit, files[i]), *to = tu_fmt("%s/%s", old, files[i]);

		tu_copy_file(from, to);
		free(from);
		free(to);
	}
	{
		char *tree = tu_fmt("%s/tree", old);

		tu_rm_rf(tree);
		free(tree);
	}
	assert_int_equal(umount2(audit, MNT_DETACH), 0);
	assert_int_equal(rmdir(audit), 0);
	assert_int_equal(rename(old, audit), 0);
	e2e_daemon_start_with(E->pass, true);
	free(audit);
	free(old);
	free(filler);
	free(outp);
	free(out3);
	free(got);
	free(id);
}

/* A dataset the daemon refuses at start because the index disagrees with the signed log (a
 * version imported offline, past the daemon and its log: daemon/versions.c) is refused for
 * export too: an export approved before runs no more, a new request is refused, each with a
 * clear error and an export_refused record; nothing is written. */
static void test_export_refused_integrity(void **state)
{
	char *src = tu_fmt("%s/held-src", E->root), *out4 = tu_fmt("%s/out4", E->root), *id;
	int refused = e2e_audit_count("export_refused", NULL, NULL, NULL, 0);
	crypto_secret *pass = NULL;
	struct store *st = NULL;
	struct store_import *imp = NULL;
	struct e2e_run *r;
	uint32_t ver = 0;
	int dfd;

	(void)state;
	{
		char *over = tu_fmt("%s/sub/over", src);

		random_file(over, 65537);
		free(over);
	}
	e2e_ok_free(ctl("-q", "dataset", "import", "held", src));
	id = approved_export("held@1", (char *[]){ "sub/over", NULL });

	/* Version 2 imported offline, with the passphrase, past the daemon and its log. */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	assert_int_equal(crypto_passphrase_read_file(E->pass, &pass), 0);
	assert_int_equal(store_open(E->store, pass, NULL, &st), 0);
	dfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(store_import_begin(st, "held", NULL, &imp), 0);
	assert_int_equal(store_import_add_tree(imp, dfd), 0);
	assert_int_equal(store_import_commit(imp, &ver), 0);
	assert_int_equal(ver, 2);
	store_import_free(imp);
	store_close(st);
	crypto_secret_free(pass);
	close(dfd);
	e2e_daemon_start_with(E->pass, true);

	r = ctl("export", "run", id, "--out", out4);
	assert_int_equal(r->status, 1);
	if (!strstr(r->err, "is refused (integrity)"))
		fail_msg("stderr: %s", r->err);
	free(r);
	assert_int_equal(count_files(out4), 0);
	r = ctl("export", "request", "held@1", "sub/over", "--recipient-key", rpub, "--out", out4);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "is refused (integrity)"));
	free(r);
	assert_int_equal(e2e_audit_count("export_refused", NULL, NULL, "integrity", 0), refused + 2);
	r = e2e_ok(ctl("export", "show", id));
	assert_null(strstr(r->out, "done"));
	free(r);
	/* The other datasets are still served, and exported. */
	e2e_ok_free(ctl_as(&E->u.bob, "crypt4gh", "pubkey"));
	free(src);
	free(out4);
	free(id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_site_key),
		cmocka_unit_test(test_import),
		cmocka_unit_test(test_import_refused),
		cmocka_unit_test(test_export),
		cmocka_unit_test(test_export_unrecorded_emptied),
		cmocka_unit_test(test_export_refused_integrity),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
