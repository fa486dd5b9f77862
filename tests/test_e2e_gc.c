/* test_e2e_gc: versions that share unchanged files and the garbage collector (issue 16 points 4
 * and 5) as a steward meets them, with the real enclaved, enclavectl and mount.
 *
 * 1. A dataset imported twice through `enclavectl dataset import`: the second import says every
 *    file is shared, its --json says so, and the packs do not grow.
 * 2. An import killed with the daemon (kill -9 while it writes) leaves dead bytes; `store df`
 *    shows them and `store gc --dry-run` what it would free, changing nothing and recording
 *    nothing; `store gc` frees them while alice has a file of the dataset open through the mount
 *    and reads it on, byte for byte, after the collection; the "gc" record is in the log; a
 *    second `store df` finds nothing left to free. A user without a role may do neither.
 * 3. The schedule: "gc_interval = 2s" in enclave.conf collects by itself, frees, records, and
 *    stops cleanly with the daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "common/common.h"
#include "tests/e2e.h"
#include "tests/testutil.h"

#define DS "cohort"
#define BIG_SIZE (96u << 20)
#define OPEN_SIZE (3u << 20)

static int group_setup(void **state)
{
	static const char *const roles[] = { "--steward", "user:root", "--auditor", "user:root",
					     "--approvals", "0", NULL };
	char *sub;

	(void)state;
	if (e2e_setup("gc") < 0)
		return -1;
	sub = tu_fmt("%s/sub", E->src);
	mkdir(sub, 0755);
	free(sub);
	tu_seed_file(OPEN_SIZE, 41, "%s/big-shard.tar", E->src);
	tu_seed_file(1234, 42, "%s/labels.csv", E->src);
	tu_seed_file(70000, 43, "%s/sub/img.png", E->src);
	if (e2e_init(roles) < 0)
		return -1;
	e2e_daemon_start_with(E->pass, true);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	e2e_teardown();
	return 0;
}

static uint64_t packs_bytes(void)
{
	char *packs = tu_fmt("%s/packs", E->store);
	unsigned n;
	uint64_t b = tu_dir_bytes(packs, &n);

	free(packs);
	return b;
}

/* The JSON a successful run printed (the run freed). */
static json_t *ok_json(struct e2e_run *r)
{
	json_t *j = e2e_out_json(e2e_ok(r));

	free(r);
	return j;
}

static uint64_t member_u64(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);

	assert_true(json_is_integer(v));
	return (uint64_t)json_integer_value(v);
}

static void test_reimport_shares_files(void **state)
{
	struct e2e_run *r;
	json_t *j;
	uint64_t before;

	(void)state;
	e2e_ok_free(ctl("-q", "dataset", "import", DS, E->src));
	before = packs_bytes();
	r = e2e_ok(ctl("dataset", "import", DS, E->src));
	assert_non_null(strstr(r->out, "3 unchanged files"));
	free(r);
	assert_int_equal(packs_bytes(), before);
	j = ok_json(ctl("--json", "-q", "dataset", "import", DS, E->src));
	assert_int_equal(member_u64(j, "version"), 3);
	assert_int_equal(member_u64(j, "reused_files"), 3);
	assert_int_equal(member_u64(j, "reused_bytes"), member_u64(j, "bytes"));
	json_decref(j);
	assert_int_equal(packs_bytes(), before);
}

/* Alice's reader: open the file through the mount, read the first half, wait for the go file,
 * read the rest, and compare the whole with what was imported. */
struct reader {
	char *path, *go, *ready;
};

static int read_through(void *arg)
{
	const struct reader *rd = arg;
	uint8_t *have = malloc(OPEN_SIZE), *want = malloc(OPEN_SIZE);
	size_t got = 0;
	int fd = open(rd->path, O_RDONLY | O_CLOEXEC), tries;

	if (fd < 0 || !have || !want) {
		perror("reader: open");
		return 2;
	}
	while (got < OPEN_SIZE / 2) {
		ssize_t n = read(fd, have + got, OPEN_SIZE / 2 - got);

		if (n <= 0)
			return 3;
		got += (size_t)n;
	}
	close(open(rd->ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	for (tries = 0; access(rd->go, F_OK) != 0; tries++) {
		if (tries > 1200)
			return 4;
		usleep(50 * 1000);
	}
	while (got < OPEN_SIZE) {
		ssize_t n = read(fd, have + got, OPEN_SIZE - got);

		if (n <= 0) {
			perror("reader: read after the collection");
			return 5;
		}
		got += (size_t)n;
	}
	close(fd);
	tu_fill(want, OPEN_SIZE, 41);
	return memcmp(have, want, OPEN_SIZE) == 0 ? 0 : 6;
}

static void test_gc_frees_a_killed_import(void **state)
{
	struct reader rd = {
		.path = tu_fmt("%s/%s/latest/big-shard.tar", E->mnt, DS),
		.go = tu_fmt("%s/sig/go", E->root),
		.ready = tu_fmt("%s/sig/ready", E->root),
	};
	char *bigsrc = tu_fmt("%s/bigsrc", E->root);
	uint64_t committed, live;
	struct e2e_run *r;
	json_t *j, *st;
	pid_t imp, reader;
	int status, tries;

	(void)state;
	assert_int_equal(mkdir(bigsrc, 0755), 0);
	/* An import of a big file, killed with the daemon once its bytes are on their way. */
	tu_seed_file(BIG_SIZE, 44, "%s/huge.bin", bigsrc);
	committed = packs_bytes();
	imp = fork();
	assert_true(imp >= 0);
	if (imp == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execl(ENCLAVECTL_PATH, ENCLAVECTL_PATH, "--store", E->store, "-q", "dataset",
		      "import", "other", bigsrc, (char *)NULL);
		_exit(127);
	}
	for (tries = 0; packs_bytes() < committed + (8u << 20) && tries < 600; tries++)
		usleep(20 * 1000);
	assert_true(packs_bytes() >= committed + (8u << 20));
	assert_int_equal(e2e_daemon_stop_sig(SIGKILL), 128 + SIGKILL);
	assert_int_equal(waitpid(imp, &status, 0), imp);
	/* Writes the killed daemon's io_uring had in flight may still land after it is reaped (the
	 * ring is torn down asynchronously): wait until the packs stop growing. */
	for (uint64_t last = 0, now = packs_bytes(); now != last; now = packs_bytes()) {
		last = now;
		usleep(500 * 1000);
	}
	e2e_cleanup_mount();
	e2e_daemon_start_with(E->pass, true);

	/* df: dead and reclaimable bytes, the dataset's live bytes. */
	j = ok_json(ctl("--json", "store", "df"));
	st = json_object_get(j, "store");
	assert_true(member_u64(st, "dead_bytes") >= (8u << 20));
	assert_true(member_u64(st, "reclaimable_bytes") >= (8u << 20));
	live = member_u64(st, "live_bytes");
	assert_int_equal(json_array_size(json_object_get(j, "datasets")), 1);
	assert_int_equal(member_u64(json_array_get(json_object_get(j, "datasets"), 0),
				    "live_bytes"), live);
	json_decref(j);
	r = e2e_ok(ctl("store", "df"));
	assert_non_null(strstr(r->out, DS));
	assert_non_null(strstr(r->out, "reclaimable now"));
	free(r);

	/* A user without a role may neither collect nor look. */
	r = ctl_as(&E->u.alice, "store", "gc");
	assert_int_equal(r->status, 1);
	free(r);
	r = ctl_as(&E->u.alice, "store", "df");
	assert_int_equal(r->status, 1);
	free(r);

	/* The dry run changes nothing and records nothing. */
	committed = packs_bytes();
	r = e2e_ok(ctl("store", "gc", "--dry-run"));
	assert_non_null(strstr(r->out, "would free"));
	free(r);
	assert_int_equal(packs_bytes(), committed);
	assert_int_equal(e2e_audit_count("gc", NULL, NULL, NULL, 0), 0);

	/* Alice holds big-shard.tar open, half read, through the collection. She signals in a
	 * directory of her own. */
	{
		char *sig = tu_fmt("%s/sig", E->root);

		assert_int_equal(mkdir(sig, 0700), 0);
		assert_int_equal(chown(sig, E->u.alice.uid, E->u.alice.gid), 0);
		free(sig);
	}
	e2e_grant("--user", TU_USER_ALICE, DS, "+1h");
	assert_int_equal(tu_spawn_as(&E->u.alice, read_through, &rd, &reader), 0);
	for (tries = 0; access(rd.ready, F_OK) != 0 && tries < 600; tries++)
		usleep(50 * 1000);
	assert_int_equal(access(rd.ready, F_OK), 0);
	j = ok_json(ctl("--json", "store", "gc"));
	assert_true(member_u64(j, "reclaimable_bytes") >= (8u << 20));
	close(open(rd.go, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	assert_int_equal(tu_wait(reader, 60000), 0);
	/* What it says it freed is gone from packs/ (a compaction's new packs aside). */
	assert_true(packs_bytes() + member_u64(j, "reclaimable_bytes") <=
		    committed + member_u64(j, "bytes_copied") +
			    (member_u64(j, "packs_written") + 1) * 4096);
	assert_true(packs_bytes() <= committed - (8u << 20));
	json_decref(j);
	assert_int_equal(e2e_audit_count("gc", NULL, NULL, NULL, 0), 1);

	j = ok_json(ctl("--json", "store", "df"));
	assert_int_equal(member_u64(json_object_get(j, "store"), "reclaimable_bytes"), 0);
	assert_int_equal(member_u64(json_object_get(j, "store"), "live_bytes"), live);
	json_decref(j);
	/* And the data reads whole after it, through a new open. */
	r = e2e_ok(ctl("dataset", "show", DS));
	free(r);
	free(rd.path);
	free(rd.go);
	free(rd.ready);
	free(bigsrc);
}

/* 3. The schedule (enclave.conf "gc_interval", here every 2 s): with a version erased, the
 *    daemon collects by itself: the reclaimable bytes are freed, the collection is recorded
 *    (by no steward), the daemon says so, and a SIGTERM stops it cleanly (exit 0) with the
 *    schedule's thread running. */
static void test_gc_on_schedule(void **state)
{
	char *conf = tu_fmt("%s/enclave.conf", E->store), *v1 = tu_fmt("%s/sched1", E->root);
	char *v2 = tu_fmt("%s/sched2", E->root), *saved = NULL;
	uint64_t before, reclaim = 0;
	int gc0, by_steward, tries, fd;
	size_t conf_len = 0;
	struct e2e_run *r;
	struct stat sb;
	json_t *j;

	(void)state;
	assert_int_equal(mkdir(v1, 0755), 0);
	assert_int_equal(mkdir(v2, 0755), 0);
	tu_seed_file(4u << 20, 51, "%s/a.bin", v1);
	tu_seed_file(1000, 52, "%s/b.bin", v2);
	e2e_ok_free(ctl("-q", "dataset", "import", "sched", v1));
	e2e_ok_free(ctl("-q", "dataset", "import", "sched", v2));
	e2e_ok_free(ctl("dataset", "erase", "sched@1", "--reason", "superseded"));
	j = ok_json(ctl("--json", "store", "df"));
	reclaim = member_u64(json_object_get(j, "store"), "reclaimable_bytes");
	json_decref(j);
	assert_true(reclaim >= (4u << 20));
	before = packs_bytes();
	gc0 = e2e_audit_count("gc", NULL, NULL, NULL, 0);
	by_steward = e2e_audit_count("gc", "root", NULL, NULL, 0);

	/* Every 2 s from the next start. */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	saved = (char *)tu_read_file(conf, &conf_len);
	assert_int_equal(stat(conf, &sb), 0);
	fd = open(conf, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "gc_interval = 2s\n", 17), 17);
	close(fd);
	e2e_daemon_start_with(E->pass, true);
	for (tries = 0; e2e_audit_count("gc", NULL, NULL, NULL, 0) == gc0 && tries < 300; tries++)
		usleep(100 * 1000);
	assert_true(e2e_audit_count("gc", NULL, NULL, NULL, 0) > gc0);
	/* Recorded before its commit; the packs go right after. */
	for (tries = 0; tries < 300; tries++) {
		j = ok_json(ctl("--json", "store", "df"));
		reclaim = member_u64(json_object_get(j, "store"), "reclaimable_bytes");
		json_decref(j);
		if (reclaim == 0)
			break;
		usleep(100 * 1000);
	}
	assert_int_equal(reclaim, 0);
	assert_true(packs_bytes() <= before - (4u << 20));
	/* Nobody asked: no steward's collection among the records. */
	assert_int_equal(e2e_audit_count("gc", "root", NULL, NULL, 0), by_steward);
	r = e2e_run_argv(NULL, (char *const[]){ "/bin/cat", E->log, NULL });
	if (!strstr(r->out, "scheduled garbage collection freed"))
		e2e_print_daemon_log();
	assert_non_null(strstr(r->out, "scheduled garbage collection freed"));
	free(r);
	/* The other version reads on. */
	e2e_ok_free(ctl("dataset", "show", "sched"));
	/* A clean stop with the schedule running (the thread is woken and joined). */
	assert_int_equal(e2e_daemon_stop_sig(SIGTERM), 0);
	tu_write_file(conf, saved, conf_len);
	assert_int_equal(chmod(conf, sb.st_mode & 07777), 0);
	e2e_daemon_start_with(E->pass, true);
	free(saved);
	free(conf);
	free(v1);
	free(v2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reimport_shares_files),
		cmocka_unit_test(test_gc_frees_a_killed_import),
		cmocka_unit_test(test_gc_on_schedule),
	};

	if (sodium_init() < 0 || crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
