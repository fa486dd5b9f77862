/* testusers: real users and groups for tests that need the kernel to see different callers
 * (FUSE mounts with allow_other, the daemon's SO_PEERCRED checks), and a way to run code as them.
 *
 * The users are created once per machine with useradd/groupadd and then reused; creating them is
 * idempotent and serialised between test programs running at once. Everything here needs root:
 * call tu_can_run_as_users() first and exit 77 (skip) when it says no.
 *
 * Contract (unlike testutil.h, whose helpers abort): functions return 0 or -errno and print a
 * line on stderr saying what failed, so a test can skip or fail with a reason.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#define TU_USER_ALICE "enclave-t-alice"
#define TU_USER_BOB "enclave-t-bob"
#define TU_USER_CAROL "enclave-t-carol"
/* A user that only the group-change test (test_e2e_local) adds to and removes from TU_GROUP, so
 * that no other program running at the same time sees its membership change. */
#define TU_USER_DAN "enclave-t-dan"
/* A group with carol as a supplementary member, and nobody else. */
#define TU_GROUP "enclave-t-grp"

/* Exit statuses of a child started by tu_spawn_as() that never reached the function. */
#define TU_EXIT_SETUP 120   /* initgroups/setgid/setuid failed, or the ids did not stick */

struct tu_user {
	char name[64];
	uid_t uid;
	gid_t gid;          /* primary group (a group of the user's own name) */
};

struct tu_users {
	struct tu_user alice;
	struct tu_user bob;
	struct tu_user carol;   /* also a member of TU_GROUP */
	struct tu_user dan;     /* TU_GROUP member only while test_e2e_local's group test runs */
	gid_t grp;              /* TU_GROUP's gid */
};

/* True when this process can run tests as other users and mount FUSE: effective uid 0 and
 * /dev/fuse opens read-write. Otherwise false, with *ret_why (may be NULL) set to a reason. */
bool tu_can_run_as_users(const char **ret_why);

/* Make sure the three users and the group exist (creating whatever is missing, adding carol to
 * the group if she is not in it yet) and fill *ret_users. */
int tu_users_ensure(struct tu_users *ret_users);

/* Add user to TU_GROUP (member true) or take them out of it (gpasswd; the change is seen by
 * processes started afterwards). Never use it on carol, whom other tests rely on. */
int tu_group_member(const char *user, bool member);

/* Look up one user by name. -ENOENT no such user. */
int tu_user_get(const char *name, struct tu_user *ret_user);

/* Fork a child that becomes u (initgroups, setgid, setuid, and checks that it cannot get root
 * back), then calls fn(arg) and exits with its return value (0..255; keep within 0..119). The
 * child must not use cmocka's assertions (they would jump back into a copy of the test runner):
 * return a non-zero code and print why instead. The child leaves with _exit(), so no atexit
 * handler or stdio buffer of the parent runs twice (stdio is flushed before the fork). Before
 * forking it waits (at most 2 s) until the caller's other threads sleep in the kernel, so that
 * the child inherits no lock held mid-update (GCC 12's AddressSanitizer allocator is not
 * fork-safe; see testusers.c). */
int tu_spawn_as(const struct tu_user *u, int (*fn)(void *arg), void *arg, pid_t *ret_pid);
/* Wait for a child from tu_spawn_as(), at most timeout_ms (< 0: forever). Returns its exit status
 * (0..255), 128 + signal number if it was killed by a signal, or -ETIMEDOUT after killing it
 * (SIGKILL) and reaping it when the time ran out. */
int tu_wait(pid_t pid, int timeout_ms);
/* tu_spawn_as() then tu_wait() with timeout_ms. */
int tu_run_as(const struct tu_user *u, int (*fn)(void *arg), void *arg, int timeout_ms);

/* Let other users traverse down to dir: add the search bit (o+x) to dir and, if dir lies below
 * $ENCLAVE_TEST_TMPDIR, to that directory and each one between (test scratch space only; nothing
 * else is changed). Then check that every ancestor of dir up to "/" is searchable by others:
 * -EACCES (naming the first that is not) if one is not. */
int tu_make_reachable(const char *dir);
