/* fuzz_seeds: write the seed corpus of every harness into <outdir>/<harness>/.
 *
 * Seeds are made with the project's own encoders (dataset_rec_encode, pack_create,
 * crypto_master_create, ...) rather than committed as binary files, so they follow the format when
 * it changes, and a valid master key file can be made at all (it holds a real AEAD tag). Each
 * harness gets a few valid inputs and a few that break one rule each.
 *
 * Each <harness>/ directory is emptied first: ctest runs this as the fixture that gives every
 * fuzz_* test a fresh copy of its seeds (libFuzzer adds what it finds to that directory).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>

#include <sodium.h>

#include "common/proto.h"
#include "crypto/crypt4gh.h"
#include "store/store_internal.h"
#include "fuzz.h"
#include "fuzz_node.h"

static int failures;

/* Report once and carry on, so one bad seed does not hide the others; main fails at the end. */
__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "fuzz_seeds: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	failures++;
}

/* Make <outdir>/<name>/ (or empty it) and return an fd for it, -1 after reporting. */
static int seed_dir(int outfd, const char *name)
{
	DIR *d;
	struct dirent *de;
	int fd;

	if (mkdirat(outfd, name, 0755) < 0 && errno != EEXIST) {
		fail("cannot create %s: %s", name, strerror(errno));
		return -1;
	}
	fd = openat(outfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		fail("cannot open %s: %s", name, strerror(errno));
		return -1;
	}
	d = fdopendir(dup(fd));
	if (!d) {
		fail("cannot list %s: %s", name, strerror(errno));
		close(fd);
		return -1;
	}
	while ((de = readdir(d)))
		if (de->d_type == DT_REG && unlinkat(fd, de->d_name, 0) < 0)
			fail("cannot remove %s/%s: %s", name, de->d_name, strerror(errno));
	closedir(d);
	return fd;
}

static void put_seed(int dfd, const char *name, const void *p, size_t n)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);

	if (fd < 0 || pwrite_all(fd, p, n, 0) < 0)
		fail("cannot write seed %s", name);
	if (fd >= 0)
		close(fd);
}

/* A seed whose byte 0 picks the harness's target or mode (fuzz_crypt4gh, the node harnesses). */
static void put_tagged_seed(int fd, const char *name, uint8_t target, const void *p, size_t n)
{
	uint8_t *b = malloc(n + 1);

	if (!b) {
		fail("out of memory");
		return;
	}
	b[0] = target;
	memcpy(b + 1, p, n);
	put_seed(fd, name, b, n + 1);
	free(b);
}

/* A seed of the index harness: target byte, optional prefix (the dataset key), then body. */
static void put_index_seed(int fd, const char *name, uint8_t target, const void *prefix,
			   size_t plen, const void *body, size_t blen)
{
	uint8_t in[1024];

	if (1 + plen + blen > sizeof(in)) {
		fail("seed %s too long", name);
		return;
	}
	in[0] = target;
	if (plen)
		memcpy(in + 1, prefix, plen);
	if (blen)
		memcpy(in + 1 + plen, body, blen);
	put_seed(fd, name, in, 1 + plen + blen);
}

/* A dataset record seed: key length byte, key, record. */
static void put_dataset_seed(int fd, const char *seed, const char *key, const struct buf *rec)
{
	uint8_t prefix[1 + 255];
	size_t k = strlen(key);

	prefix[0] = (uint8_t)k;
	memcpy(prefix + 1, key, k);
	put_index_seed(fd, seed, FUZZ_T_DATASET, prefix, 1 + k, rec->data, rec->len);
}

static void seeds_index_records(int outfd)
{
	struct dataset_rec ds = { .info = { .id = 1, .created_ns = 1700000000000000000,
					    .latest_version = 3 } };
	struct version_rec vr = { .info = { .created_ns = 1, .committed_ns = 2, .files = 10,
					    .dirs = 3, .bytes = 123456 },
				  .state = VERSION_COMMITTED };
	struct store_inode file = { .type = STORE_INODE_FILE, .mode = 0644, .mtime_ns = 5,
				    .size = 70000, .nlink = 1,
				    .ext = { .pack_id = 1, .offset = PACK_HEADER_LEN,
					     .chunk_size = CRYPTO_CHUNK_DEFAULT,
					     .alg = CRYPTO_AEAD_CHACHA20POLY1305 } };
	struct store_inode dir = { .type = STORE_INODE_DIR, .mode = 0755, .size = 2, .nlink = 3 };
	char long_name[STORE_NAME_MAX + 2];
	struct buf b;
	int fd = seed_dir(outfd, "index_records");

	if (fd < 0)
		return;
	memset(ds.wrapped_key, 0x11, sizeof(ds.wrapped_key));
	memset(file.ext.object_id, 0x22, sizeof(file.ext.object_id));
	memset(file.ext.wrapped_key, 0x33, sizeof(file.ext.wrapped_key));
	buf_init(&b, 4096);

	if (dataset_rec_encode(&ds, &b) < 0)
		fail("dataset_rec_encode");
	snprintf(ds.info.name, sizeof(ds.info.name), "photos-2024");
	put_dataset_seed(fd, "dataset-ok", "", &b);
	put_dataset_seed(fd, "dataset-bad-name", ".hidden", &b);
	b.len--;
	put_dataset_seed(fd, "dataset-short", "", &b);
	b.data[0] = 1; /* format 1: no name inside, the key is the name */
	b.len = 1 + 8 + 8 + 4 + CRYPTO_WRAPPED_KEY_LEN;
	put_dataset_seed(fd, "dataset-v1", "photos-2024", &b);

	buf_reset(&b);
	if (version_rec_encode(&vr, &b) < 0)
		fail("version_rec_encode");
	put_index_seed(fd, "version-committed", FUZZ_T_VERSION, NULL, 0, b.data, b.len);
	b.data[1] = 3;	/* neither pending nor committed */
	put_index_seed(fd, "version-bad-state", FUZZ_T_VERSION, NULL, 0, b.data, b.len);
	buf_reset(&b);
	vr.state = VERSION_PENDING;
	if (version_rec_encode(&vr, &b) < 0)
		fail("version_rec_encode");
	put_index_seed(fd, "version-pending", FUZZ_T_VERSION, NULL, 0, b.data, b.len);

	buf_reset(&b);
	if (inode_encode(&file, NULL, &b) < 0)
		fail("inode_encode");
	put_index_seed(fd, "inode-file", FUZZ_T_INODE, NULL, 0, b.data, b.len);
	/* Chunk size (before alg and wrapped key) not a power of two. */
	put_le32(b.data + b.len - CRYPTO_WRAPPED_KEY_LEN - 8, 4097);
	put_index_seed(fd, "inode-file-bad-chunk", FUZZ_T_INODE, NULL, 0, b.data, b.len);
	/* A tiny file, member 3 of a group of 9 (docs/FORMAT.md 4.10), and one outside its group. */
	buf_reset(&b);
	file.size = 5;
	file.ext.offset = PACK_HEADER_LEN + 17;
	file.ext.has_content_mac = true;
	file.ext.has_stamp = true;
	file.ext.grouped = true;
	file.ext.group_size = 40;
	file.ext.member_off = 12;
	file.ext.member_idx = 3;
	file.ext.member_count = 9;
	memset(file.ext.content_mac, 0x44, sizeof(file.ext.content_mac));
	memset(file.ext.stamp, 0x55, sizeof(file.ext.stamp));
	if (inode_encode(&file, NULL, &b) < 0)
		fail("inode_encode");
	put_index_seed(fd, "inode-member", FUZZ_T_INODE, NULL, 0, b.data, b.len);
	put_le32(b.data + b.len - 8, 38);   /* member offset: 38 + 5 > 40 */
	put_index_seed(fd, "inode-member-outside", FUZZ_T_INODE, NULL, 0, b.data, b.len);
	buf_reset(&b);
	if (inode_encode(&dir, (const uint8_t *)"0123456789abcdef", &b) < 0)
		fail("inode_encode");
	put_index_seed(fd, "inode-dir", FUZZ_T_INODE, NULL, 0, b.data, b.len);
	b.data[0] = 1; /* format 1: no digest */
	put_index_seed(fd, "inode-dir-v1", FUZZ_T_INODE, NULL, 0, b.data, b.len - 16);

	buf_reset(&b);
	{
		struct dirent_rec d = { .ino = 17, .type = STORE_INODE_FILE, .name = "scan.dcm" };

		if (dirent_rec_encode(&d, &b) < 0)
			fail("dirent_rec_encode");
	}
	put_index_seed(fd, "dirent-file", FUZZ_T_DIRENT, NULL, 0, b.data, b.len);
	memset(b.data + 1, 0, 8);	/* inode 0 */
	put_index_seed(fd, "dirent-ino0", FUZZ_T_DIRENT, NULL, 0, b.data, b.len);
	{
		uint8_t v1[9] = { 17, 0, 0, 0, 0, 0, 0, 0, STORE_INODE_FILE };

		put_index_seed(fd, "dirent-v1", FUZZ_T_DIRENT_V1, NULL, 0, v1, sizeof(v1));
	}
	{
		/* cf inodes, a 20-byte key, no clear prefix, 60 bytes of value. */
		uint8_t sealed[1 + 1 + 20 + 1 + 60] = { CF_INODES, 20 };

		memset(sealed + 2, 0x07, 20);
		put_index_seed(fd, "sealed-inode", FUZZ_T_SEALED, NULL, 0, sealed, sizeof(sealed));
	}
	buf_free(&b);

	put_index_seed(fd, "name-ok", FUZZ_T_NAME, NULL, 0, "report.pdf", 10);
	put_index_seed(fd, "name-dotdot", FUZZ_T_NAME, NULL, 0, "..", 2);
	put_index_seed(fd, "name-slash", FUZZ_T_NAME, NULL, 0, "a/b", 3);
	memset(long_name, 'x', sizeof(long_name));
	put_index_seed(fd, "name-max", FUZZ_T_NAME, NULL, 0, long_name, STORE_NAME_MAX);
	put_index_seed(fd, "name-too-long", FUZZ_T_NAME, NULL, 0, long_name, STORE_NAME_MAX + 1);
	put_index_seed(fd, "dsname-ok", FUZZ_T_DATASET_NAME, NULL, 0, "Genomes_v2.1", 12);
	put_index_seed(fd, "dsname-dash", FUZZ_T_DATASET_NAME, NULL, 0, "-x", 2);
	put_index_seed(fd, "dsname-too-long", FUZZ_T_DATASET_NAME, NULL, 0, long_name,
		       STORE_DATASET_NAME_MAX + 1);
	close(fd);
}

/* Read a whole small file of dfd into buf; the length, or -1 after reporting. */
static ssize_t get_file(int dfd, const char *name, uint8_t *buf, size_t n)
{
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t r;

	if (fd < 0) {
		fail("cannot open %s: %s", name, strerror(errno));
		return -1;
	}
	r = read_full(fd, buf, n);
	close(fd);
	if (r < 0)
		fail("cannot read %s", name);
	return r;
}

/* A secret is only ever made by reading one. */
static crypto_secret *secret_of(const char *s)
{
	crypto_secret *sec = NULL;
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return NULL;
	if (write(p[1], s, strlen(s)) != (ssize_t)strlen(s))
		fail("cannot write to a pipe");
	close(p[1]);
	if (crypto_passphrase_read_fd(p[0], &sec) < 0)
		fail("cannot make a secret");
	close(p[0]);
	return sec;
}

static void seeds_master_key(int outfd)
{
	struct crypto_kdf_params kdf = crypto_kdf_params_min();
	crypto_secret *pass = secret_of(FUZZ_PASSPHRASE);
	crypto_secret *other = secret_of("another passphrase");
	crypto_key *key = NULL;
	uint8_t file[CRYPTO_MASTER_FILE_LEN];
	int fd = seed_dir(outfd, "master_key");

	if (fd < 0 || !pass || !other)
		goto out;
	/* Unlocks with the harness's passphrase: the success path. */
	if (crypto_master_create(fd, "ok", pass, &kdf, &key) < 0)
		fail("crypto_master_create");
	crypto_key_free(key);
	key = NULL;
	/* Well formed, other passphrase: -EKEYREJECTED. */
	if (crypto_master_create(fd, "other-passphrase", other, &kdf, &key) < 0)
		fail("crypto_master_create");
	crypto_key_free(key);

	if (get_file(fd, "ok", file, sizeof(file)) != (ssize_t)sizeof(file))
		goto out;
	put_seed(fd, "short", file, sizeof(file) - 1);
	file[119] ^= 1;
	put_seed(fd, "bad-tag", file, sizeof(file));
	file[119] ^= 1;
	put_le64(file + 16, 17);	/* opslimit above the accepted 16 */
	put_seed(fd, "opslimit-high", file, sizeof(file));
	put_le64(file + 16, 1);
	put_le64(file + 24, 5ull << 30);	/* memlimit above the accepted 4 GiB */
	put_seed(fd, "memlimit-high", file, sizeof(file));
	put_le64(file + 24, 8192);
	put_le32(file + 12, 1);	/* Argon2i, not Argon2id */
	put_seed(fd, "bad-alg", file, sizeof(file));
	put_le32(file + 12, 2);
	file[0] = 'X';
	put_seed(fd, "bad-magic", file, sizeof(file));
out:
	crypto_secret_free(pass);
	crypto_secret_free(other);
	if (fd >= 0)
		close(fd);
}

static void seeds_passphrase(int outfd)
{
	static uint8_t big[CRYPTO_PASSPHRASE_MAX + 3];
	int fd = seed_dir(outfd, "passphrase");

	if (fd < 0)
		return;
	put_seed(fd, "lf", "correct horse\n", 14);
	put_seed(fd, "crlf", "correct horse\r\n", 15);
	put_seed(fd, "bare-cr", "correct horse\r", 14);
	put_seed(fd, "only-lf", "\n", 1);
	put_seed(fd, "empty", "", 0);
	memset(big, 'p', sizeof(big));
	put_seed(fd, "max", big, CRYPTO_PASSPHRASE_MAX);
	big[CRYPTO_PASSPHRASE_MAX] = '\r';
	big[CRYPTO_PASSPHRASE_MAX + 1] = '\n';
	put_seed(fd, "max-crlf", big, CRYPTO_PASSPHRASE_MAX + 2);
	put_seed(fd, "max-crlf-plus1", big, CRYPTO_PASSPHRASE_MAX + 3);
	big[CRYPTO_PASSPHRASE_MAX] = 'p';
	put_seed(fd, "max-plus1", big, CRYPTO_PASSPHRASE_MAX + 1);
	close(fd);
}

static void seeds_pack_header(int outfd)
{
	static const uint8_t store_id[16] = FUZZ_STORE_ID;
	uint8_t hdr[PACK_HEADER_LEN + 16];
	char name[32];
	int fd = seed_dir(outfd, "pack_header");
	int pfd;

	if (fd < 0)
		return;
	/* The real thing, made by pack_create(), with a few bytes of "object" after it. */
	pfd = pack_create(fd, store_id, FUZZ_PACK_ID);
	if (pfd < 0) {
		fail("pack_create: %s", err_detail());
		close(fd);
		return;
	}
	close(pfd);
	pack_name(name, sizeof(name), FUZZ_PACK_ID);
	if (get_file(fd, name, hdr, PACK_HEADER_LEN) != PACK_HEADER_LEN)
		goto out;
	memset(hdr + PACK_HEADER_LEN, 0xee, 16);
	put_seed(fd, "ok-with-data", hdr, sizeof(hdr));
	put_seed(fd, "short", hdr, PACK_HEADER_LEN - 1);
	hdr[8] = 2;	/* version */
	put_seed(fd, "bad-version", hdr, PACK_HEADER_LEN);
	hdr[8] = 1;
	put_le64(hdr + 16, FUZZ_PACK_ID + 1);	/* another pack's header */
	put_seed(fd, "other-pack-id", hdr, PACK_HEADER_LEN);
	put_le64(hdr + 16, FUZZ_PACK_ID);
	hdr[24] ^= 0x80;	/* another store's pack */
	put_seed(fd, "other-store", hdr, PACK_HEADER_LEN);
out:
	close(fd);
}

/* The key ring: a real one (two entries besides the name key), made by keyring_commit() under
 * the fuzz master key, and some refusals. */
static void seeds_keyring(int outfd)
{
	static const uint8_t store_id[16] = FUZZ_STORE_ID;
	static const uint8_t mk[32] = FUZZ_RING_MASTER;
	uint8_t file[4096], kb[32];
	struct keyring *kr = NULL;
	crypto_key *master = NULL, *k1 = NULL, *k2 = NULL;
	int fd = seed_dir(outfd, "keyring");
	ssize_t n;

	if (fd < 0)
		return;
	memset(kb, 7, sizeof(kb));
	if (crypto_key_from_bytes(mk, &master) < 0 || keyring_new(store_id, &kr) < 0 ||
	    crypto_key_from_bytes(kb, &k1) < 0 || keyring_put(kr, KEYRING_DATASET, 1, 0, k1) < 0 ||
	    crypto_key_from_bytes(kb, &k2) < 0 || keyring_put(kr, KEYRING_VERSION, 1, 1, k2) < 0 ||
	    keyring_commit(kr, fd, master) < 0) {
		fail("keyring: %s", err_detail());
		goto out;
	}
	n = get_file(fd, KEYRING_FILE, file, sizeof(file));
	unlinkat(fd, KEYRING_FILE, 0);
	if (n <= 0)
		goto out;
	put_seed(fd, "ok", file, (size_t)n);
	put_seed(fd, "short", file, (size_t)n - 1);
	file[20] ^= 1;	/* the generation */
	put_seed(fd, "generation-edited", file, (size_t)n);
out:
	keyring_free(kr);
	crypto_key_free(master);
	close(fd);
}


/* Key files a steward may give: OpenSSH ed25519 keys made by ssh-keygen, unprotected and with a
 * passphrase under each AEAD and CTR cipher (kdf bcrypt, 1 round), and a Crypt4GH key protected
 * with bcrypt (4 rounds) by tests/interop/crypt4gh_ref.py. The harness parses them without a
 * passphrase: everything up to the encrypted part is checked before -ENOKEY. */
static const char *const c4gh_key_seeds[][2] = {
	{ "ssh-none",
	  "-----BEGIN OPENSSH PRIVATE KEY-----\n"
	  "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
	  "QyNTUxOQAAACBsvCVxHTAXB2PMuEsiGCRxm3mSUJcaTAAZoMcrk44vdgAAAIgeifW1Hon1\n"
	  "tQAAAAtzc2gtZWQyNTUxOQAAACBsvCVxHTAXB2PMuEsiGCRxm3mSUJcaTAAZoMcrk44vdg\n"
	  "AAAEBd/j7dBS4SyH0o2VNQpEcwW0S5/qWWu2cxLiYGtKLnOWy8JXEdMBcHY8y4SyIYJHGb\n"
	  "eZJQlxpMABmgxyuTji92AAAAA2thdAEC\n"
	  "-----END OPENSSH PRIVATE KEY-----\n" },
	{ "ssh-aes256-ctr",
	  "-----BEGIN OPENSSH PRIVATE KEY-----\n"
	  "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABBZ0B8+7Z\n"
	  "wgF4lWHV7KD4eOAAAAAQAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIH3jPWEc9XL9kgSC\n"
	  "SjfUICnp7NYVTIursF3F3KGN+Jo9AAAAkMAZIlrMBO3SU4go46j7tvw1ixXOe0vFQfzDEW\n"
	  "2yPDOukU0jKxH4Q+F2kh9g2fbmROwz2OBx97QK6lZJTc7IPhRMvO1tkE3eJ2212grt73+O\n"
	  "/wyMzoPIuy7nHT4JSAm9Mc+pT66o2f21CpcZQSfXmBbDNBUv4xHAv7hBc/kcK+1hmOS3I8\n"
	  "VR2tEuUGhaZXxtBw==\n"
	  "-----END OPENSSH PRIVATE KEY-----\n" },
	{ "ssh-aes256-gcm",
	  "-----BEGIN OPENSSH PRIVATE KEY-----\n"
	  "b3BlbnNzaC1rZXktdjEAAAAAFmFlczI1Ni1nY21Ab3BlbnNzaC5jb20AAAAGYmNyeXB0AA\n"
	  "AAGAAAABA7nAei6aHzJyqKl+n3qZebAAAAAQAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAA\n"
	  "IPXnLlmOzYugLEBxeR9q3OifMxAHcAFcd1csKUq7oSKzAAAAkI6/GR9Djt04WV0xvulRaB\n"
	  "RnRywe9nbVMUXHg4jSaBXNDn+fo4TbABI74/dXkwlCJQN/U9kkCkN3ICdQoXu6T0JhR+Zt\n"
	  "u0CWaOonl+ElhWUFYHamhBtOfYK5t9Xi/x54pPNhJfymD05bE6oFV7junadjIuyu/4aJp1\n"
	  "vGESL0e+/sNS1QpylWp8PaGc/mEPUjlRaC8y4e1xp2414ByeU2BZ4=\n"
	  "-----END OPENSSH PRIVATE KEY-----\n" },
	{ "ssh-chacha20-poly1305",
	  "-----BEGIN OPENSSH PRIVATE KEY-----\n"
	  "b3BlbnNzaC1rZXktdjEAAAAAHWNoYWNoYTIwLXBvbHkxMzA1QG9wZW5zc2guY29tAAAABm\n"
	  "JjcnlwdAAAABgAAAAQ6+bIqw6a2+G0JhGPWMCjFwAAAAEAAAABAAAAMwAAAAtzc2gtZWQy\n"
	  "NTUxOQAAACC3ve6LewiAQBu/fsYb6lmG4pz+TYlGRqYp9kscksM1UAAAAIjCPf+GlF+VQP\n"
	  "LXDQzyUkobll6EYHV71bn/ILJ8i4FtBMAqKTASGrXCsJpWGhBQ22E6yZU+aBQfVVNnCO8k\n"
	  "ynrHQm74OCbhCYGWKZA+EwJhmxF5Y8XzolzFqXEAHGdAImrJXBth/6jYJDYxRmLyhl1yn0\n"
	  "DkKXjDasssHtvscNvt1B0A3BGOv1jj0DQO4R6qXjM7FCT4/Vu4XA==\n"
	  "-----END OPENSSH PRIVATE KEY-----\n" },
	{ "c4gh-bcrypt",
	  "-----BEGIN CRYPT4GH PRIVATE KEY-----\n"
	  "YzRnaC12MQAGYmNyeXB0ABQAAAAEfJcV+3WJC5DQFsDbptrS7wARY2hhY2hhMjBfcG9seTEzMDUAPGUOl3NOR00K"
	  "vLe51oM+FIAs1phggILsKfLTUNebsld89eDGmB2GtqdI2/JJKF9I/gYZD4nBmEQkjZMqDgAXbWFkZSBieSBjcnlw"
	  "dDRnaF9yZWYucHk=\n"
	  "-----END CRYPT4GH PRIVATE KEY-----\n" },
};

/* Crypt4GH: files for the fixed key (sizes at the segment edges, two recipients, an edit list,
 * the AEAD method), and key files. */
static void seeds_crypt4gh(int outfd)
{
	static const uint8_t skb[32] = FUZZ_C4GH_SK;
	static const uint64_t edits[] = { 3, 70000, 10 };
	static const size_t sizes[] = { 0, 1, 65536, 65537 };
	static uint8_t plain[65537], seg[C4GH_SEGMENT_SEALED];
	uint8_t rcpt[2][32];
	crypto_key *sk = NULL, *other = NULL, *dk = NULL;
	char name[64], pub[C4GH_PUBKEY_TEXT_MAX], *text = NULL;
	size_t tl;
	int fd = seed_dir(outfd, "crypt4gh");

	if (fd < 0)
		return;
	if (crypto_key_from_bytes(skb, &sk) < 0 || c4gh_keypair_generate(&other, rcpt[0]) < 0 ||
	    crypto_key_generate(&dk) < 0) {
		fail("crypt4gh seeds: no keys");
		goto out;
	}
	c4gh_public_key(sk, rcpt[1]);
	for (size_t i = 0; i < sizeof(plain); i++)
		plain[i] = (uint8_t)i;
	for (int v = 0; v < 6; v++) {
		size_t size = sizes[v % 4], hl, off = 0;
		struct c4gh_header_spec s = { .recipients = (const uint8_t (*)[32])rcpt,
					      .nrecipients = 2, .data_key = dk,
					      .method = v == 5 ? C4GH_CHACHA20_IETF_POLY1305_AEAD
							       : C4GH_CHACHA20_IETF_POLY1305,
					      .edits = v == 4 ? edits : NULL, .nedits = v == 4 ? 3 : 0 };
		uint8_t *hdr = NULL, *f;

		if (c4gh_header_build(&s, &hdr, &hl) < 0 || !(f = malloc(hl + 2 * sizeof(seg)))) {
			free(hdr);
			fail("crypt4gh seeds: header");
			goto out;
		}
		memcpy(f, hdr, hl);
		free(hdr);
		for (size_t i = 0;; i++) {
			size_t l = MIN((size_t)C4GH_SEGMENT, size - i * C4GH_SEGMENT);

			if (l == 0 && v != 5)
				break;
			c4gh_segment_seal(dk, s.method, i, NULL, plain + i * C4GH_SEGMENT, l, seg);
			memcpy(f + hl + off, seg, l + C4GH_SEGMENT_OVERHEAD);
			off += l + C4GH_SEGMENT_OVERHEAD;
			if (l < C4GH_SEGMENT)
				break;
		}
		snprintf(name, sizeof(name), "file-%d", v);
		put_tagged_seed(fd, name, FUZZ_C4GH_FILE, f, hl + off);
		free(f);
	}
	c4gh_pubkey_format(rcpt[1], pub);
	put_tagged_seed(fd, "pubkey", FUZZ_C4GH_PUBKEY, pub, strlen(pub));
	/* Wrapped (taken), and with a base64 character as a byte from 0x80 up (refused). */
	memmove(pub + 56, pub + 55, strlen(pub + 55) + 1);
	pub[55] = '\n';
	put_tagged_seed(fd, "pubkey-wrapped", FUZZ_C4GH_PUBKEY, pub, strlen(pub));
	pub[40] = (char)0x80;
	put_tagged_seed(fd, "pubkey-high-byte", FUZZ_C4GH_PUBKEY, pub, strlen(pub));
	if (c4gh_seckey_format(sk, NULL, "fuzz", &text, &tl) == 0) {
		put_tagged_seed(fd, "seckey", FUZZ_C4GH_SECKEY, text, tl);
		sodium_free(text);
	}
	for (size_t i = 0; i < sizeof(c4gh_key_seeds) / sizeof(c4gh_key_seeds[0]); i++)
		put_tagged_seed(fd, c4gh_key_seeds[i][0], FUZZ_C4GH_SECKEY, c4gh_key_seeds[i][1],
			 strlen(c4gh_key_seeds[i][1]));
out:
	crypto_key_free(sk);
	crypto_key_free(other);
	crypto_key_free(dk);
	close(fd);
}

/* text signed by (name, sk) as a FUZZ_NODE_RAW seed: the file as its writer makes it. */
static void put_signed_seed(int fd, const char *seed, const char *text, const char *name,
			    const uint8_t *sk)
{
	char *note = NULL;
	size_t nl = 0;

	if (note_sign(text, strlen(text), name, sk, &note, &nl) < 0) {
		fail("%s: note_sign: %s", seed, err_detail());
		return;
	}
	put_tagged_seed(fd, seed, FUZZ_NODE_RAW, note, nl);
	free(note);
}

/* The text seeds of the seen and signal harnesses: each one signed (FUZZ_NODE_RAW, "raw-" name)
 * and as text for the harness to sign (FUZZ_NODE_SIGNED, "text-" name). */
static void put_text_seeds(int fd, const char *seed, const char *text, const char *name,
			   const uint8_t *sk)
{
	char fname[64];

	snprintf(fname, sizeof(fname), "raw-%s", seed);
	put_signed_seed(fd, fname, text, name, sk);
	snprintf(fname, sizeof(fname), "text-%s", seed);
	put_tagged_seed(fd, fname, FUZZ_NODE_SIGNED, text, strlen(text));
}

/* One seed of the seen or signal harness: the valid text with one change. The first place of
 * find is overwritten with put (as long as find); put NULL: the text is cut there; find NULL:
 * put is appended. */
struct text_edit {
	const char *seed, *find, *put;
};

static void put_edited_seeds(int fd, const char *text, const struct text_edit *e, size_t n,
			     const char *name, const uint8_t *sk)
{
	char other[NOTE_MAX];

	for (size_t i = 0; i < n; i++) {
		char *p = NULL;

		snprintf(other, sizeof(other), "%s%s", text, e[i].find ? "" : e[i].put);
		if (e[i].find && (!(p = strstr(other, e[i].find)) ||
				  (e[i].put && strlen(e[i].put) != strlen(e[i].find)))) {
			fail("seed %s: cannot put \"%s\" for \"%s\"", e[i].seed, e[i].put, e[i].find);
			continue;
		}
		if (p && e[i].put)
			memcpy(p, e[i].put, strlen(e[i].put));
		else if (p)
			*p = '\0';
		put_text_seeds(fd, e[i].seed, other, name, sk);
	}
}

/* A status note made by node_seen_text(), and notes that break one rule each. */
static void seeds_node_seen(int outfd, const struct fuzz_node_keys *k)
{
	static const struct text_edit edits[] = {
		{ "ok", NULL, "" },
		{ "stale-2", "stale 0", "stale 2" },
		{ "leading-zero", "seq 4711", "seq 0471" },
		{ "negative-time", "time 1", "time -" },        /* before 1970 */
		{ "other-node", "node gpu01", "node gpu02" },
		{ "other-store", " 66", " 67" },                /* FUZZ_STORE_ID's first hex digits */
		{ "short", "stale", NULL },                     /* a line short */
		{ "extra-line", NULL, "extra 1\n" },            /* a line too many */
	};
	const struct node_seen s = { .time_ns = 1765000000123456789, .seq = 4711, .ring = 9,
				     .token = 3, .signal_ns = 1765000000100000000,
				     .fresh_ns = 1765000000100000000, .catch_ups = 12 };
	char text[NODE_SEEN_MAX] = "";
	int fd = seed_dir(outfd, "node_seen");

	if (fd < 0)
		return;
	if (node_seen_text((const uint8_t *)FUZZ_STORE_ID, FUZZ_NODE_NAME, &s, text,
			   sizeof(text)) < 0)
		fail("node_seen_text");
	else
		put_edited_seeds(fd, text, edits, sizeof(edits) / sizeof(edits[0]), FUZZ_NODE_NAME,
				 k->node_sign_sk);
	/* Signed by the primary's key, not the node's. */
	put_signed_seed(fd, "raw-other-key", text, FUZZ_PRIMARY_NAME, k->primary_sk);
	close(fd);
}

/* A signal made by node_signal_text(), and signals that break one rule each. */
static void seeds_node_signal(int outfd, const struct fuzz_node_keys *k)
{
	static const struct text_edit edits[] = {
		{ "ok", NULL, "" },
		{ "plus-sign", "seq 4711", "seq +471" },
		{ "negative-time", "time 1", "time -" },        /* before 1970 */
		{ "future", "time 1", "time 2" },               /* 32 years ahead */
		{ "other-store", " 66", " 67" },                /* FUZZ_STORE_ID's first hex digits */
		{ "short", "ring", NULL },                      /* a line short */
		{ "extra-line", NULL, "token 4\n" },            /* a line too many */
	};
	const struct node_signal s = { .token = 3, .time_ns = 1765000000123456789, .seq = 4711,
				       .ring = 9 };
	char text[NODE_SIGNAL_MAX + 1] = "";
	int fd = seed_dir(outfd, "node_signal");

	if (fd < 0)
		return;
	if (node_signal_text((const uint8_t *)FUZZ_STORE_ID, &s, text, sizeof(text)) < 0)
		fail("node_signal_text");
	else
		put_edited_seeds(fd, text, edits, sizeof(edits) / sizeof(edits[0]),
				 FUZZ_PRIMARY_NAME, k->primary_sk);
	/* Signed by a node's key, not the primary's. */
	put_signed_seed(fd, "raw-other-key", text, FUZZ_NODE_NAME, k->node_sign_sk);
	close(fd);
}

/* A bundle seed in FUZZ_NODE_SIGNED form (be16 text length, text, plaintext) and, as the
 * primary writes it, in FUZZ_NODE_RAW form; names "text-NAME" and "raw-NAME". */
static void put_bundle_seeds(int fd, const struct fuzz_node_keys *k, const char *seed,
			     const char *text, const uint8_t *plain, size_t plen)
{
	size_t tl = strlen(text), fl = 0;
	uint8_t *in = malloc(2 + tl + plen), *file = NULL;
	char fname[64];

	if (!in) {
		fail("out of memory");
		return;
	}
	in[0] = (uint8_t)(tl >> 8);
	in[1] = (uint8_t)tl;
	memcpy(in + 2, text, tl);
	memcpy(in + 2 + tl, plain, plen);
	snprintf(fname, sizeof(fname), "text-%s", seed);
	put_tagged_seed(fd, fname, FUZZ_NODE_SIGNED, in, 2 + tl + plen);
	free(in);
	if (fuzz_bundle_file(k, text, tl, plain, plen, &file, &fl) < 0) {
		fail("%s: not a note text", seed);
		return;
	}
	snprintf(fname, sizeof(fname), "raw-%s", seed);
	put_tagged_seed(fd, fname, FUZZ_NODE_RAW, file, fl);
	free(file);
}

/* Bundles of node FUZZ_NODE_NAME (two auditors and three ring entries; none of either), and
 * bundles that break one rule each. */
static void seeds_node_bundle(int outfd, const struct fuzz_node_keys *k)
{
	static const uint8_t sid[16] = FUZZ_STORE_ID;
	uint8_t ks[32], lk[32], aud[2][32], plain[512];
	struct store_node_key e[3] = {
		{ .kind = 1 }, { .kind = 2, .dsid = 1 }, { .kind = 3, .version = 2, .dsid = 1 },
	};
	char hex[33], text[512], other[512];
	size_t pl;
	int fd = seed_dir(outfd, "node_bundle");

	if (fd < 0)
		return;
	memset(ks, 0x11, 32);
	memset(lk, 0x22, 32);
	memset(aud, 0x33, sizeof(aud));
	for (size_t i = 0; i < 3; i++)
		memset(e[i].key, 0x40 + (int)i, 32);
	sodium_bin2hex(hex, sizeof(hex), sid, 16);
	snprintf(text, sizeof(text), "enclave-node-bundle/1 %s\nnode " FUZZ_NODE_NAME
		 "\nenrolment 7\nring 5\nbox " FUZZ_BOX_HASH "\n", hex);

	pl = fuzz_bundle_plain(plain, sid, FUZZ_NODE_NAME, 7, 5, ks, lk,
			       (const uint8_t (*)[32])aud, 2, e, 3);
	put_bundle_seeds(fd, k, "ok", text, plain, pl);
	put_bundle_seeds(fd, k, "truncated-box", text, plain, pl - 1);
	plain[pl - 48 + 2] = 1;                 /* an entry's zero bytes not zero */
	put_bundle_seeds(fd, k, "entry-not-zero", text, plain, pl);
	plain[pl - 48 + 2] = 0;
	plain[pl - 48 * 3 - 1] = 4;             /* more entries than there are */
	put_bundle_seeds(fd, k, "entry-count", text, plain, pl);
	plain[pl - 48 * 3 - 1] = 3;
	plain[25 + strlen(FUZZ_NODE_NAME) + 80] = STORE_AUDITORS_MAX + 1;
	put_bundle_seeds(fd, k, "auditor-count", text, plain, pl);
	pl = fuzz_bundle_plain(plain, sid, FUZZ_NODE_NAME, 7, 5, ks, lk, NULL, 0, NULL, 0);
	put_bundle_seeds(fd, k, "empty", text, plain, pl);
	pl = fuzz_bundle_plain(plain, sid, FUZZ_NODE_NAME, 7, 6, ks, lk, NULL, 0, NULL, 0);
	put_bundle_seeds(fd, k, "box-other-ring", text, plain, pl);
	pl = fuzz_bundle_plain(plain, sid, "gpu02", 7, 5, ks, lk, NULL, 0, NULL, 0);
	put_bundle_seeds(fd, k, "box-other-node", text, plain, pl);
	pl = fuzz_bundle_plain(plain, sid, FUZZ_NODE_NAME, 7, 5, ks, lk, NULL, 0, NULL, 0);
	snprintf(other, sizeof(other), "enclave-node-bundle/1 %s\nnode " FUZZ_NODE_NAME
		 "\nenrolment 7\nring 05\nbox " FUZZ_BOX_HASH "\n", hex);   /* a leading zero */
	put_bundle_seeds(fd, k, "not-canonical", other, plain, pl);
	snprintf(other, sizeof(other), "%s", text);
	memcpy(strstr(other, "node gpu01"), "node gpu02", 10);
	put_bundle_seeds(fd, k, "other-node", other, plain, pl);
	snprintf(other, sizeof(other), "enclave-node-bundle/1 %s\nnode " FUZZ_NODE_NAME
		 "\nenrolment 7\nring 5\nbox %064d\n", hex, 0);       /* names another box */
	put_bundle_seeds(fd, k, "box-replaced", other, plain, pl);
	close(fd);
}

/* The public key text of node FUZZ_NODE_NAME as node_public_format() writes it (with and
 * without its newline), and texts that break one rule each. */
static void seeds_node_public(int outfd, const struct fuzz_node_keys *k)
{
	static const struct text_edit edits[] = {
		{ "ok-newline", NULL, "\n" },                  /* as in node.pub */
		{ "ok-crlf", NULL, "\r\n" },
		{ "other-prefix", "public", "secret" },
		{ "bad-name", "gpu01", "../x." },
		{ "not-base64", "==", "!=" },
		{ "no-padding", "==", NULL },
		{ "key-after-padding", NULL, "AA==" },          /* more base64 after the end */
	};
	struct node_public pub;
	char text[NODE_PUBLIC_TEXT_MAX + 8], other[NODE_PUBLIC_TEXT_MAX + 72];
	uint8_t both[65];
	char b64[sodium_base64_ENCODED_LEN(65, sodium_base64_VARIANT_ORIGINAL)];
	char *p;
	int fd = seed_dir(outfd, "node_public");

	if (fd < 0)
		return;
	memcpy(pub.sign_pk, k->node_sign_pk, 32);
	memcpy(pub.box_pk, k->node_box_pk, 32);
	if (node_public_format(FUZZ_NODE_NAME, &pub, text, sizeof(text)) < 0) {
		fail("node_public_format");
		close(fd);
		return;
	}
	put_seed(fd, "ok", text, strlen(text));
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		snprintf(other, sizeof(other), "%s%s", text, edits[i].find ? "" : edits[i].put);
		p = edits[i].find ? strstr(other, edits[i].find) : NULL;
		if (edits[i].find && (!p || (edits[i].put &&
					     strlen(edits[i].put) != strlen(edits[i].find)))) {
			fail("seed %s: cannot put \"%s\" for \"%s\"", edits[i].seed,
			     edits[i].put, edits[i].find);
			continue;
		}
		if (p && edits[i].put)
			memcpy(p, edits[i].put, strlen(edits[i].put));
		else if (p)
			*p = '\0';
		put_seed(fd, edits[i].seed, other, strlen(other));
	}
	put_seed(fd, "no-key", "enclave-node-public:" FUZZ_NODE_NAME,
		 strlen("enclave-node-public:" FUZZ_NODE_NAME));
	/* A name one byte too long, and keys one byte short and one byte long. */
	snprintf(other, sizeof(other), "enclave-node-public:%065d:%s", 0,
		 strrchr(text, ':') + 1);
	put_seed(fd, "long-name", other, strlen(other));
	memcpy(both, k->node_sign_pk, 32);
	memcpy(both + 32, k->node_box_pk, 32);
	both[64] = 0x01;
	for (size_t n = 63; n <= 65; n += 2) {
		sodium_bin2base64(b64, sizeof(b64), both, n, sodium_base64_VARIANT_ORIGINAL);
		snprintf(other, sizeof(other), "enclave-node-public:" FUZZ_NODE_NAME ":%s", b64);
		put_seed(fd, n == 63 ? "key-short" : "key-long", other, strlen(other));
	}
	close(fd);
}

/* Seeds of the four node harnesses, with the keys they check against. */
static void seeds_node(int outfd)
{
	struct fuzz_node_keys k;

	fuzz_node_keys_init(&k);
	seeds_node_seen(outfd, &k);
	seeds_node_signal(outfd, &k);
	seeds_node_bundle(outfd, &k);
	seeds_node_public(outfd, &k);
	sodium_free(k.node_sign_sk);
	sodium_free(k.primary_sk);
}

/* A seed of fuzz_stat_batch: the lengths of dir and names, the mode (1: the rest is bytes the
 * harness encodes as base64), dir, names, then the stats. */
static void put_stat_seed(int fd, const char *name, const char *dir, const char *names,
			  uint8_t mode, const void *stats, size_t slen)
{
	size_t dl = strlen(dir), nl = strlen(names);
	uint8_t *b = malloc(3 + dl + nl + slen);

	if (!b || dl > 255 || nl > 255) {
		fail("seed %s: out of memory or too long", name);
		free(b);
		return;
	}
	b[0] = (uint8_t)dl;
	b[1] = (uint8_t)nl;
	b[2] = mode;
	memcpy(b + 3, dir, dl);
	memcpy(b + 3 + dl, names, nl);
	memcpy(b + 3 + dl + nl, stats, slen);
	put_seed(fd, name, b, 3 + dl + nl + slen);
	free(b);
}

/* The compact import.stat batch: batches the encoder made, as text and as the bytes under it,
 * and a few that break one rule each. */
static void seeds_stat_batch(int outfd)
{
	struct stat st[3];
	const struct stat *p[3] = { &st[0], &st[1], &st[2] };
	uint8_t bin[3 * PROTO_STAT_REC_MAX];
	size_t blen = 0;
	char *text;
	int fd = seed_dir(outfd, "stat_batch");

	if (fd < 0)
		return;
	memset(st, 0, sizeof(st));
	for (unsigned i = 0; i < 3; i++) {
		st[i].st_dev = 0x803;
		st[i].st_ino = 131073 + i;
		st[i].st_size = 3000 + 1000 * i;
		st[i].st_mode = S_IFREG | 0644;
		st[i].st_mtim = (struct timespec){ 1765000000, 123456789 + 37000 * (long)i };
		st[i].st_ctim = st[i].st_mtim;
	}
	st[2].st_ctim.tv_sec++;
	text = proto_stats64(p, 3);
	if (!text || base64_decode_canonical(text, strlen(text), NULL, bin, sizeof(bin),
					     &blen) < 0) {
		fail("stat_batch: the encoder's text does not decode");
		free(text);
		close(fd);
		return;
	}
	put_stat_seed(fd, "three-in-sub", "sub", "f0/f1/f2", 0, text, strlen(text));
	put_stat_seed(fd, "three-in-sub-bytes", "sub", "f0/f1/f2", 1, bin, blen);
	put_stat_seed(fd, "two-of-three", "", "a/b", 1, bin, blen);
	put_stat_seed(fd, "cut-short", "", "a/b/c", 1, bin, blen - 1);
	bin[blen] = 0;
	put_stat_seed(fd, "byte-after", "", "a/b/c", 1, bin, blen + 1);
	free(text);
	text = proto_stats64(p, 1);
	if (text) {
		put_stat_seed(fd, "one-in-root", "", "f0", 0, text, strlen(text));
		put_stat_seed(fd, "empty-name", "d", "f0/", 0, text, strlen(text));
	}
	free(text);
	close(fd);
}

int main(int argc, char **argv)
{
	int outfd;

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_seeds <outdir>\n");
		return 2;
	}
	if (crypto_init() < 0) {
		fprintf(stderr, "fuzz_seeds: crypto_init failed\n");
		return 1;
	}
	if (mkdir(argv[1], 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "fuzz_seeds: cannot create %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	outfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (outfd < 0) {
		fprintf(stderr, "fuzz_seeds: cannot open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	seeds_index_records(outfd);
	seeds_master_key(outfd);
	seeds_passphrase(outfd);
	seeds_pack_header(outfd);
	seeds_keyring(outfd);
	seeds_crypt4gh(outfd);
	seeds_node(outfd);
	seeds_stat_batch(outfd);
	close(outfd);
	return failures ? 1 : 0;
}
