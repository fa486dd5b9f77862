/* fuzz_audit_log: audit_open() and audit_foreach() (audit/) on an audit.log made from the input.
 *
 * The daemon reads its whole audit log at start, and `enclavectl audit show` reads it with no
 * daemon at all; the file is on a disk that a crash, a failing device or someone with write
 * access may have changed. The input is written as the whole file into a private directory. The
 * contract checked besides "no crash, leak or UB":
 *   - audit_open() is at least as strict as audit_foreach(): whatever the reader refuses, the
 *     writer refuses too, and a log the writer accepts the reader accepts (the reader skips a
 *     final line without '\n', the writer cuts it; both check every complete line, and the
 *     writer also checks each record's "prev", the hash chain);
 *   - on -EBADMSG audit_open() leaves the file as it was;
 *   - on 0 the file is the input less its bytes after the last '\n', and *ret_torn_bytes says
 *     how many those were; audit_count() is the number of lines; audit_foreach() passes each line
 *     in order with exactly its bytes; and each line, read here with jansson directly, is ASCII
 *     without control characters and a JSON object whose "seq" is its index, whose "time" is
 *     a 30-character string and whose "prev" is the hex leaf hash of the line before it. So no
 *     damaged log is ever accepted silently.
 * Sealed records (docs/AUDIT.md "Sealed records"): every record audit_foreach() passes is also
 * given to an opener holding FUZZ_STORE_KEY (the key corpus/audit_log/sealed.log was written
 * with) and to one holding no key: each returns 0, -ENOKEY, -EBADMSG or -E2BIG, never crashes,
 * and a record it opens has no "sealed" member left and the same seq.
 * Each input is a new log: the tree files an earlier input left are removed first.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include <jansson.h>

#include "audit/audit.h"
#include "audit/merkle.h"
#include "common/common.h"
#include "fuzz.h"

static char tmpdir[] = "/tmp/enclave-fuzz-audit.XXXXXX";
static int log_dirfd = -1;

/* Remove what audit_open() keeps beside the log (docs/AUDIT.md section 10). */
static void remove_tree(void)
{
	int fd = openat(log_dirfd, "tree", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	char name[8];

	if (fd < 0)
		return;
	for (unsigned k = 0; k < MERKLE_PROOF_MAX; k++) {
		snprintf(name, sizeof(name), "L%02u", k);
		unlinkat(fd, name, 0);
	}
	unlinkat(fd, "offsets", 0);
	unlinkat(fd, "state", 0);
	unlinkat(fd, "state.tmp", 0);
	close(fd);
	unlinkat(log_dirfd, "tree", AT_REMOVEDIR);
}

/* Remove the log and the private directory when libFuzzer exits normally. */
static void cleanup(void)
{
	if (log_dirfd >= 0) {
		remove_tree();
		unlinkat(log_dirfd, AUDIT_LOG_NAME, 0);
		close(log_dirfd);
	}
	rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	FUZZ_CHECK(mkdtemp(tmpdir) != NULL);
	log_dirfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	FUZZ_CHECK(log_dirfd >= 0);
	atexit(cleanup);
	return 0;
}

/* The store key of the seed corpus's sealed log. */
static const uint8_t FUZZ_STORE_KEY[AUDIT_SEAL_KEY_LEN] = { 'f', 'u', 'z', 'z' };

/* What audit_foreach() passed on, checked against the input as it goes. */
struct walk {
	const uint8_t *data;    /* the input */
	size_t off;             /* where the next line must start in it */
	uint64_t n;             /* lines passed so far */
	struct audit_opener *keyed, *keyless;  /* openers, one with FUZZ_STORE_KEY */
};

static void try_open(struct audit_opener *o, const json_t *rec)
{
	json_t *out = NULL;
	int r;

	if (!o)
		return;
	r = audit_opener_open(o, rec, &out);
	FUZZ_CHECK(r == 0 || r == -ENOKEY || r == -EBADMSG || r == -E2BIG);
	if (r < 0) {
		FUZZ_CHECK(out == NULL);
		return;
	}
	FUZZ_CHECK(json_is_object(out) && !json_object_get(out, "sealed"));
	FUZZ_CHECK(json_equal(json_object_get(out, "seq"), json_object_get(rec, "seq")));
	json_decref(out);
}

static int walk_fn(void *ctx, const json_t *rec, const char *line, size_t len)
{
	struct walk *w = ctx;
	const json_t *seq = json_object_get(rec, "seq");

	FUZZ_CHECK(json_is_object(rec));
	FUZZ_CHECK(json_is_integer(seq) && json_integer_value(seq) == (json_int_t)w->n);
	FUZZ_CHECK(memcmp(line, w->data + w->off, len) == 0 && w->data[w->off + len] == '\n');
	FUZZ_CHECK(line[len] == '\0');
	try_open(w->keyed, rec);
	try_open(w->keyless, rec);
	w->off += len + 1;
	w->n++;
	return 0;
}

/* The checks of a line, made again here without audit/'s code. */
static bool line_ok(const uint8_t *p, size_t len, uint64_t index,
		    const uint8_t prev[static MERKLE_HASH_LEN])
{
	static const char hexd[] = "0123456789abcdef";
	char want[2 * MERKLE_HASH_LEN + 1];
	json_error_t e;
	json_t *j;
	const json_t *seq, *tm, *pv;
	bool ok;

	for (size_t i = 0; i < MERKLE_HASH_LEN; i++) {
		want[2 * i] = hexd[prev[i] >> 4];
		want[2 * i + 1] = hexd[prev[i] & 15];
	}
	want[2 * MERKLE_HASH_LEN] = '\0';
	if (len + 1 > AUDIT_RECORD_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (p[i] < 0x20 || p[i] > 0x7f)
			return false;
	j = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &e);
	if (!j)
		return false;
	seq = json_object_get(j, "seq");
	tm = json_object_get(j, "time");
	pv = json_object_get(j, "prev");
	ok = json_is_object(j) && json_is_integer(seq) &&
	     json_integer_value(seq) == (json_int_t)index && json_is_string(tm) &&
	     json_string_length(tm) == 30 && json_is_string(pv) &&
	     strcmp(json_string_value(pv), want) == 0;
	json_decref(j);
	return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct audit_log *log = NULL;
	struct walk w = { .data = data };
	uint64_t torn = UINT64_MAX, lines = 0;
	size_t good = 0, start = 0;
	struct stat st;
	uint8_t prev[MERKLE_HASH_LEN] = { 0 };
	int fd, rf, ro;

	remove_tree();
	fd = openat(log_dirfd, AUDIT_LOG_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(pwrite_all(fd, data, size, 0) == 0);
	close(fd);
	for (size_t i = 0; i < size; i++)
		if (data[i] == '\n') {
			good = i + 1;
			lines++;
		}

	FUZZ_CHECK(audit_opener_new(FUZZ_STORE_KEY, NULL, &w.keyed) == 0);
	FUZZ_CHECK(audit_opener_new(NULL, NULL, &w.keyless) == 0);
	rf = audit_foreach(tmpdir, NULL, walk_fn, &w);
	audit_opener_free(w.keyed);
	audit_opener_free(w.keyless);
	w.keyed = w.keyless = NULL;
	FUZZ_CHECK(rf == 0 || rf == -EBADMSG);
	ro = audit_open(tmpdir, &torn, &log);
	FUZZ_CHECK(ro == 0 || ro == -EBADMSG);
	FUZZ_CHECK((ro == 0) == (log != NULL));
	FUZZ_CHECK(rf == 0 || ro < 0);
	FUZZ_CHECK(fstatat(log_dirfd, AUDIT_LOG_NAME, &st, 0) == 0);
	if (ro < 0) {
		FUZZ_CHECK((size_t)st.st_size == size);
		FUZZ_CHECK(torn == UINT64_MAX);
		return 0;
	}

	FUZZ_CHECK(torn == size - good);
	FUZZ_CHECK((size_t)st.st_size == good);
	FUZZ_CHECK(audit_count(log) == lines);
	FUZZ_CHECK(!audit_failed(log));
	audit_close(log);
	FUZZ_CHECK(w.n == lines && w.off == good);
	for (uint64_t i = 0; i < lines; i++) {
		const uint8_t *nl = memchr(data + start, '\n', good - start);

		FUZZ_CHECK(nl != NULL);
		FUZZ_CHECK(line_ok(data + start, (size_t)(nl - (data + start)), i, prev));
		merkle_leaf_hash(data + start, (size_t)(nl - (data + start)), prev);
		start = (size_t)(nl - data) + 1;
	}

	/* The cut file reads the same. */
	w = (struct walk){ .data = data };
	FUZZ_CHECK(audit_foreach(tmpdir, NULL, walk_fn, &w) == 0);
	FUZZ_CHECK(w.n == lines);
	return 0;
}
