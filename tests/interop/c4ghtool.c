/* c4ghtool: crypto/crypt4gh.c as a command, for the interop test against the independent Python
 * implementation (tests/interop/crypt4gh.sh). Test tool only: keys come from files.
 *
 *   c4ghtool decrypt SKFILE [PASSFILE] < c4gh > plain
 *   c4ghtool encrypt PKFILE... < plain > c4gh
 *   c4ghtool keygen SKFILE PASSFILE|- > pubkey     (a c4gh-v1 key, with a passphrase: scrypt)
 *   c4ghtool pubkey SKFILE [PASSFILE] > pubkey
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "crypto/crypt4gh.h"

static void die(const char *what, int r)
{
	fprintf(stderr, "c4ghtool: %s: %s (%s)\n", what, err_detail(), strerror(-r));
	exit(1);
}

static char *slurp(const char *path, size_t *ret_n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *b = malloc(65536);
	ssize_t n = 0;

	if (fd < 0 || !b || (n = read_full(fd, b, 65535)) < 0)
		die(path, -EIO);
	close(fd);
	b[n] = '\0';
	*ret_n = (size_t)n;
	return b;
}

static crypto_key *load_sk(const char *path, const char *passfile)
{
	crypto_secret *pass = NULL;
	crypto_key *sk = NULL;
	size_t n;
	char *t = slurp(path, &n);
	int r;

	if (passfile && (r = crypto_passphrase_read_file(passfile, &pass)) < 0)
		die(passfile, r);
	r = c4gh_seckey_parse(t, n, pass, &sk);
	if (r < 0)
		die(path, r);
	crypto_secret_free(pass);
	free(t);
	return sk;
}

static int do_decrypt(crypto_key *sk)
{
	struct stat st;
	uint8_t *hb = malloc(C4GH_HEADER_MAX), *buf = malloc(1 << 20);
	c4gh_header *h = NULL;
	c4gh_decoder *d = NULL;
	ssize_t n;
	int r;

	if (fstat(0, &st) < 0 || !S_ISREG(st.st_mode))
		die("stdin must be a regular file", -EINVAL);
	n = pread_full(0, hb, MIN((size_t)st.st_size, (size_t)C4GH_HEADER_MAX), 0);
	if (n < 0)
		die("read", (int)n);
	r = c4gh_header_parse(hb, (size_t)n, sk, &h);
	if (r < 0)
		die("header", r);
	r = c4gh_decoder_new(h, 0, (uint64_t)st.st_size, &d);
	if (r < 0)
		die("data", r);
	while ((n = c4gh_decoder_read(d, buf, 1 << 20)) > 0)
		if (write(1, buf, (size_t)n) != n)
			die("write", -EIO);
	if (n < 0)
		die("data", (int)n);
	c4gh_decoder_free(d);
	free(hb);
	free(buf);
	return 0;
}

static int do_encrypt(int argc, char **argv)
{
	uint8_t (*pk)[32] = calloc((size_t)argc, 32), *hdr = NULL;
	uint8_t in[C4GH_SEGMENT], out[C4GH_SEGMENT_SEALED];
	c4gh_encoder *e = NULL;
	size_t hl, n;
	ssize_t got;
	int r;

	for (int i = 0; i < argc; i++) {
		char *t = slurp(argv[i], &n);

		if ((r = c4gh_pubkey_parse(t, n, pk[i])) < 0)
			die(argv[i], r);
		free(t);
	}
	if ((r = c4gh_encoder_new((const uint8_t (*)[32])pk, (size_t)argc, &e, &hdr, &hl)) < 0)
		die("encoder", r);
	if (write(1, hdr, hl) != (ssize_t)hl)
		die("write", -EIO);
	while ((got = read_full(0, in, sizeof(in))) > 0) {
		if ((r = c4gh_encoder_segment(e, in, (size_t)got, out)) < 0)
			die("segment", r);
		if (write(1, out, (size_t)got + C4GH_SEGMENT_OVERHEAD) !=
		    got + (ssize_t)C4GH_SEGMENT_OVERHEAD)
			die("write", -EIO);
		if ((size_t)got < sizeof(in))
			break;
	}
	c4gh_encoder_free(e);
	free(hdr);
	free(pk);
	return 0;
}

int main(int argc, char **argv)
{
	char pub[C4GH_PUBKEY_TEXT_MAX];
	uint8_t pk[32];
	crypto_key *sk;

	if (crypto_init() < 0)
		return 1;
	if (argc >= 3 && strcmp(argv[1], "decrypt") == 0)
		return do_decrypt(load_sk(argv[2], argc > 3 ? argv[3] : NULL));
	if (argc >= 3 && strcmp(argv[1], "encrypt") == 0)
		return do_encrypt(argc - 2, argv + 2);
	if (argc >= 3 && strcmp(argv[1], "pubkey") == 0) {
		sk = load_sk(argv[2], argc > 3 ? argv[3] : NULL);
		c4gh_public_key(sk, pk);
		c4gh_pubkey_format(pk, pub);
		fputs(pub, stdout);
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "keygen") == 0) {
		crypto_secret *pass = NULL;
		char *text = NULL;
		size_t len;
		int fd, r;

		if (strcmp(argv[3], "-") != 0 &&
		    (r = crypto_passphrase_read_file(argv[3], &pass)) < 0)
			die(argv[3], r);
		if ((r = c4gh_keypair_generate(&sk, pk)) < 0 ||
		    (r = c4gh_seckey_format(sk, pass, "c4ghtool", &text, &len)) < 0)
			die("keygen", r);
		fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, text, len) != (ssize_t)len)
			die(argv[2], -EIO);
		close(fd);
		c4gh_pubkey_format(pk, pub);
		fputs(pub, stdout);
		crypto_secret_free(pass);
		crypto_key_free(sk);
		sodium_free(text);
		return 0;
	}
	fprintf(stderr, "usage: c4ghtool decrypt|encrypt|keygen|pubkey ...\n");
	return 2;
}
