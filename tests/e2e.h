/* e2e: the harness the end-to-end test programs share: a scratch store, the real enclaved started
 * on it, the real enclavectl run as root or as a test user, and audit records counted offline.
 *
 * One daemon per program. Cleanup is layered so nothing stays mounted or running when a test fails:
 *   - e2e_teardown() stops the daemon (SIGTERM, then SIGKILL) and detaches the mount;
 *   - the daemon is started with PR_SET_PDEATHSIG, so it gets SIGTERM if the test program dies;
 *   - ctest runs tests/cleanup-mounts.sh afterwards (a FIXTURES_CLEANUP), which detaches any FUSE
 *     mount left under the test scratch directory.
 * Every helper fails the current cmocka test (assert_*) on an unexpected error.
 * The programs that use it define ENCLAVED_PATH and ENCLAVECTL_PATH (tests/CMakeLists.txt).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "tests/testusers.h"

#define E2E_OUT_MAX (4u * 1024 * 1024)

/* The scratch directory of one program: <root>/{store,mnt,src,passphrase,enclaved.log}. */
struct e2e {
	char *root, *store, *mnt, *src, *pass, *log;
	char *akey;            /* the auditor's secret key, made by e2e_init() (--auditor-key-out) */
	pid_t daemon;          /* the running enclaved, 0 when none */
	struct tu_users u;     /* alice, bob, carol (+ TU_GROUP) */
	const char *const *daemon_args;  /* more enclaved options (NULL-terminated), or NULL */
};

/* The program's harness, set by e2e_setup(). */
extern struct e2e *E;

/* Make the scratch directory (reachable by the test users), the users and the passphrase file.
 * Exits 77 (skip) when this process cannot run tests as other users. -1 on failure. */
int e2e_setup(const char *name);
/* `enclavectl init --store <store> --passphrase-file <pass> --test-kdf --auditor-key-out <akey>`
 * followed by args (a
 * NULL-terminated list: roles and settings, e.g. "--steward", "user:root", NULL). -1 on failure,
 * with the output on stderr. */
int e2e_init(const char *const *args);
/* A copy of the auditor's secret key that user u owns (mode 0600), for `--auditor-key` in
 * commands run as u (malloc'd path). */
char *e2e_auditor_key_for(const struct tu_user *u);
/* Stop the daemon, detach the mount and (unless ENCLAVE_TEST_KEEP is set) remove the scratch
 * directory. Safe when e2e_setup() did not run or failed. */
void e2e_teardown(void);

/* ---- Running programs ---------------------------------------------------------------------- */

struct e2e_run {
	int status;                /* exit status, or 128 + signal */
	char out[E2E_OUT_MAX];     /* stdout, NUL-terminated, cut at E2E_OUT_MAX - 1 */
	char err[64 * 1024];       /* stderr, the same */
};

/* Run argv (NULL-terminated) as user u (NULL: as root) and collect its output (free it). */
struct e2e_run *e2e_run_argv(const struct tu_user *u, char *const argv[]);
/* enclavectl --store <store> ARGS... as user u / as root. */
#define ctl_as(u, ...)                                                                   \
	e2e_run_argv(u, (char *const[]){ ENCLAVECTL_PATH, "--store", E->store, __VA_ARGS__, NULL })
#define ctl(...) ctl_as(NULL, __VA_ARGS__)
/* Require exit 0 (printing the output otherwise); returns r. */
struct e2e_run *e2e_ok(struct e2e_run *r);
/* e2e_ok(), then free. */
void e2e_ok_free(struct e2e_run *r);
/* stdout parsed as JSON (a new reference); fails the test if it is not JSON. */
json_t *e2e_out_json(struct e2e_run *r);

/* ---- The daemon ---------------------------------------------------------------------------- */

bool e2e_is_mounted(const char *path);
/* The daemon's stdout and stderr so far, on stderr. */
void e2e_print_daemon_log(void);
/* True once a status request on the socket succeeds. */
bool e2e_daemon_answers(void);
/* Start enclaved with this passphrase file (PR_SET_PDEATHSIG). expect_up: wait (30 s at most)
 * until it has mounted and answers, failing the test if it exits or does not. */
/* Start argv[0] with argv, its stdout and stderr appended to log, told to stop (SIGTERM) if this
 * test program dies. Returns its pid. */
pid_t e2e_spawn_logged(char *const argv[], const char *log);
void e2e_daemon_start_with(const char *passfile, bool expect_up);
/* Stop the daemon with sig, then SIGKILL after 20 s. Its exit status (128 + signal when killed),
 * or -1 if none was running. */
int e2e_daemon_stop_sig(int sig);
/* Detach the mount if something is still mounted there. */
void e2e_cleanup_mount(void);

/* ---- Policy and audit ---------------------------------------------------------------------- */

/* User u opens path read-only through the mount (in a child running as u, 30 s at most): it
 * must open (want_errno 0) or fail with exactly want_errno; fails the test otherwise, saying
 * what the open gave. */
void e2e_opens_as(const struct tu_user *u, const char *path, int want_errno);

/* A copy of the store's index under E->root/name (replacing an older one), as a backup would
 * take it; e2e_index_restore() puts it back in place of the current index (daemon stopped). */
void e2e_index_save(const char *name);
void e2e_index_restore(const char *name);

/* As u: the mount's top-level listing shows name (or not), and stat agrees (found, or ENOENT). */
void e2e_sees_as(const struct tu_user *u, const char *name, bool visible);

/* `grant add` through the CLI (kindflag "--user" or "--group"); returns the grant id. */
uint64_t e2e_grant(const char *kindflag, const char *who, const char *dataset, const char *expires);
/* `grant revoke ID --reason ...`; must succeed. */
void e2e_revoke(uint64_t id);
/* How many records of the log match (read offline from the log file and opened with the auditor
 * key, as an auditor's tool would). NULL / 0 arguments match everything. */
int e2e_audit_count(const char *event, const char *user, const char *dataset, const char *reason,
		    uint64_t grant_id);
