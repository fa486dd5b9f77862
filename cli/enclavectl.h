/* enclavectl: the data steward's and auditor's command-line tool (cli/, internal header).
 *
 * Shape (wireguard-tools style): main.c parses the global options and dispatches through a table
 * of objects (dataset, grant, audit, ...) and their commands, one file per group (cmd_*.c). Every
 * command runs in its own connection to enclaved (client.c) except `init`, which works offline.
 *
 * Conventions inside cli/: the cmd_* entry points return the process exit status (0 ok, 1 failure,
 * 2 usage) after printing their one diagnostic; helpers below them (client, walk, output) return
 * -errno with err_detail() like the library modules, and never exit.
 */
#pragma once

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <jansson.h>

#define EXIT_USAGE 2

/* Where the daemon listens when nothing else says: <default store>/run/control.sock. */
#define CTL_DEFAULT_STORE "/var/lib/enclave"
#define CTL_SOCKET_NAME "run/control.sock"
/* How long to wait for the next frame from the daemon before giving up. The daemon sends progress
 * every 250 ms during long steps, so only a commit's fsync or a stuck daemon comes close. */
#define CTL_REPLY_TIMEOUT_MS (10 * 60 * 1000)

/* Global options, set by main.c and by every command's parser (they are accepted after the
 * command name too). Strings are borrowed from argv or the environment. */
struct ctl {
	const char *socket_path;  /* --socket, or NULL */
	const char *store_dir;    /* --store, or NULL */
	bool json;                /* --json: data as JSON on stdout */
	bool quiet;               /* -q: no progress or chatter on stderr */
};

/* A command: `enclavectl <object> <name> ...`. run() gets argv with argv[0] = the command's name
 * and returns the exit status. Tables of commands end with an entry whose name is NULL. */
struct ctl_cmd {
	const char *name;
	int (*run)(struct ctl *ctl, int argc, char **argv);
	const char *args;         /* its arguments in brief, for the usage lists */
	const char *summary;      /* one line for the usage lists */
};

/* ---- main.c: option parsing shared by every command ---------------------------------------- */

/* Parse a command's options: its own `opts` (a {0}-terminated getopt_long table; values >= 0x200
 * or single characters the command picks) plus the global ones and -h/--help. on_opt is called for
 * the command's own options and returns 0 or EXIT_USAGE (having printed why). `what` names the
 * command in messages ("grant add"); `usage` is printed for --help.
 * Returns -1 to go on, with *ret_optind the first positional argument (GNU getopt permutes argv, so
 * options may follow arguments), or an exit status: 0 after --help, EXIT_USAGE after an error. */
int ctl_parse(struct ctl *ctl, const char *what, const char *usage, int argc, char **argv,
	      const struct option *opts, int (*on_opt)(void *ctx, int val, const char *arg),
	      void *ctx, int *ret_optind);
/* A parser for commands that take no options of their own (on_opt is never called). */
int ctl_parse_none(struct ctl *ctl, const char *what, const char *usage, int argc, char **argv,
		   int *ret_optind);
/* Print "enclavectl: <what>: <message>" and "Try 'enclavectl <what> --help'." to stderr; returns
 * EXIT_USAGE. */
__attribute__((format(printf, 2, 3))) int ctl_usage_error(const char *what, const char *fmt, ...);
/* An id argument (of a grant, rule, export, ...): decimal digits only, 1 to INT64_MAX. 0, or
 * EXIT_USAGE after "not a <noun> id: '<s>'". */
int ctl_parse_id(const char *what, const char *noun, const char *s, unsigned long long *ret);
/* Print "enclavectl: <what>: <message>" to stderr; returns 1. With --json on the command line,
 * the first error of a run is also printed on stdout as {"error": {"code", "command",
 * "message"}}: code "usage" for ctl_usage_error(), "error" for ctl_fail(), the given one for
 * ctl_fail_code() (the daemon's error codes, docs/PROTOCOL.md). */
__attribute__((format(printf, 2, 3))) int ctl_fail(const char *what, const char *fmt, ...);
__attribute__((format(printf, 3, 4))) int ctl_fail_code(const char *code, const char *what,
							const char *fmt, ...);
/* Ask on the terminal before a change that affects every user or every dataset: question (a
 * sentence) then "Go ahead? [y/N]" on stderr, the answer from stdin. 0 to go ahead: yes (--yes)
 * was given, or the answer is y or yes. Otherwise the exit status after a message: EXIT_USAGE
 * when stdin is not a terminal (so scripts must say --yes), 1 when the answer was no. */
int ctl_confirm(const char *what, const char *question, bool yes);

/* ---- rocksdb_lazy.c: the index library, loaded only by the commands that open the store ---- */

/* Load librocksdb for a command that opens the store itself (init, store upgrade, policy rebuild,
 * audit new-log); the commands that talk to the daemon never load it. Call it before asking for
 * the passphrase. 0, or 1 after "enclavectl: <what>: cannot load the index library ...". */
int ctl_rocksdb_load(const char *what);
/* Split a NAME[@VERSION] argument into a valid dataset name and a version (0 when absent).
 * EXIT_USAGE after a message naming `what`. */
int ctl_parse_dataset(const char *what, const char *arg, char name[static 129],
		      uint32_t *ret_version);
/* WHEN (time_parse()'s forms, and "-N<unit>": that long ago) as RFC 3339 UTC text in out
 * (TIME_TEXT_MAX bytes, common/timefmt.h). EXIT_USAGE after a message naming `what` and opt. */
int ctl_absolute_time(const char *what, const char *opt, const char *s, char out[static 40]);
/* The socket to use: --socket, else $ENCLAVE_SOCKET, else --store's run/control.sock, else the
 * default store's. Writes into out (size n); -ENAMETOOLONG if it does not fit. */
int ctl_socket_path(const struct ctl *ctl, char *out, size_t n);

/* ---- The command groups (cmd_*.c) ---------------------------------------------------------- */

int cmd_init(struct ctl *ctl, int argc, char **argv);
int cmd_status(struct ctl *ctl, int argc, char **argv);
int cmd_whoami(struct ctl *ctl, int argc, char **argv);
extern const struct ctl_cmd dataset_cmds[];
extern const struct ctl_cmd grant_cmds[];
extern const struct ctl_cmd deny_cmds[];
extern const struct ctl_cmd access_cmds[];
extern const struct ctl_cmd audit_cmds[];
extern const struct ctl_cmd policy_cmds[];
/* cmd_audit_newlog.c: `audit new-log`, offline. */
int cmd_audit_new_log(struct ctl *ctl, int argc, char **argv);
extern const struct ctl_cmd store_cmds[];
extern const struct ctl_cmd crypt4gh_cmds[];
extern const struct ctl_cmd export_cmds[];
extern const struct ctl_cmd node_cmds[];
/* cmd_store_gc.c: `store gc` and `store df`, through the daemon. */
int cmd_store_gc(struct ctl *ctl, int argc, char **argv);
int cmd_store_df(struct ctl *ctl, int argc, char **argv);

/* ---- upgrade.c: `store upgrade` below its options (tests/test_upgrade.c runs it as is) ------ */

struct store_upgrade_progress;
struct crypto_secret;

struct ctl_upgrade_result {
	bool already;             /* the store was in the current format: nothing done */
	size_t auditors;          /* auditor keys the new log (and the old one, kept) is sealed to */
	uint8_t made[32];         /* the public half of the key pair made for key_out */
	bool log_converted;       /* the audit log was converted (format 1); false: left alone */
};

/* Convert the store at dir in place, index and audit log in one crash-safe switch (docs/FORMAT.md
 * section 9). The auditor public keys given (nauditors of them), and the one of a key pair made
 * into the new file key_out (may be NULL; made only once the store is open and known to need the
 * upgrade, and kept from then on, even if a later step fails), are added to keys/auditors first
 * (an earlier, interrupted run may have listed them already), so that the old log kept and the
 * new one are sealed to them. p (may be NULL) is told every step. On success the upgraded store
 * has been opened once as this version opens it. -EBUSY the store is in use; other -errno with
 * err_detail(). */
int ctl_store_upgrade_run(const char *dir, const struct crypto_secret *pass,
			  const uint8_t (*auditors)[32], size_t nauditors, const char *key_out,
			  const struct store_upgrade_progress *p, struct ctl_upgrade_result *ret);

/* ---- client.c: one connection to enclaved -------------------------------------------------- */

struct client {
	int sock;                 /* connected stream socket; owned; -1 when closed */
	int intr_fd;              /* becomes readable when the user interrupts, or -1; borrowed */
	int timeout_ms;           /* longest wait for one frame */
	char path[108];           /* the socket's path, for messages (sizeof sun_path) */
	bool accept_fds;          /* partial frames may carry a descriptor (audit export) */
};

/* A reply frame, checked for shape: {"ok": true, "result": {...}} or
 * {"ok": false, "error": {"code": "...", "message": "..."}}. */
struct reply {
	json_t *msg;              /* the whole reply; owned, freed by reply_clear() */
	bool ok;
	json_t *result;           /* ok: the result object; borrowed from msg */
	const char *code;         /* !ok: the error code; borrowed from msg */
	const char *message;      /* !ok: the daemon's message for people; borrowed, maybe "" */
};

/* Called for every partial frame of a call, with its payload (borrowed for the call). A non-zero
 * (negative errno) return abandons the call: client_call returns it, and the connection must be
 * closed since the rest of the reply is still on the way. */
typedef int (*client_partial_fn)(void *ctx, const json_t *partial);

/* Connect to path and check, before anything is sent, that the server is root or daemon_uid
 * (SO_PEERCRED of the listening process). -errno with err_detail() saying what is wrong in words
 * (no daemon, permission, path too long); -EPERM with err_detail() set: the server is someone
 * else (an impostor), and nothing was sent. */
int client_connect(const char *path, uid_t daemon_uid, struct client *ret_client);
/* The uid besides root that may serve the store's socket: the owner of store_dir (NULL: the
 * default store), or 0 when there is no such directory. */
uid_t client_daemon_uid(const char *store_dir);
/* Close the connection (the daemon abandons an import in progress). NULL or closed is fine. */
void client_close(struct client *c);
/* Send {"op": op, "args": args} (args: a reference the call takes over, may be NULL) with fd
 * (borrowed, -1 for none), then read partial frames, passing each to on_partial (NULL: they are
 * skipped), until the reply. Returns 0 when a well-formed reply arrived, ok or not (see
 * ret_reply); otherwise -errno with err_detail(): -EPROTO the daemon broke the protocol,
 * -ECONNRESET it closed the connection, -EINTR the user interrupted, -ETIMEDOUT nothing came for
 * timeout_ms, or on_partial's error. After an error the connection is out of step: close it. */
int client_call(struct client *c, const char *op, json_t *args, int fd,
		client_partial_fn on_partial, void *ctx, struct reply *ret_reply);
/* client_call() with nfds descriptors (borrowed; at most PROTO_FDS_MAX) in the request frame. */
int client_call_fds(struct client *c, const char *op, json_t *args, const int *fds, size_t nfds,
		    client_partial_fn on_partial, void *ctx, struct reply *ret_reply);
/* The two halves of client_call_fds(), for a caller that keeps several requests in flight (an
 * import's batches): the daemon answers them in order, so each client_recv_reply() takes the
 * reply to the oldest request not answered yet. Errors as client_call(). */
int client_send_fds(struct client *c, const char *op, json_t *args, const int *fds, size_t nfds);
int client_recv_reply(struct client *c, client_partial_fn on_partial, void *ctx,
		      struct reply *ret_reply);
/* Free what a reply holds. NULL is fine. */
void reply_clear(struct reply *r);
/* For --json: print rep's result as the command's output and clear rep. Returns the exit status
 * (0, or 1 if stdout failed). */
int ctl_print_json(struct reply *rep);
/* ctl_call(), taking the descriptors partial frames carry (accept_fds): on_partial takes the
 * current one with client_partial_take_fd() (-1: none), which it then owns; one it leaves is
 * closed. A descriptor on the reply frame is a protocol error. */
int ctl_call_fds(const struct ctl *ctl, const char *what, const char *op, json_t *args,
		 bool accept_fds, client_partial_fn on_partial, void *ctx, struct reply *ret_reply);
int client_partial_take_fd(void);
/* Print a failed call: a reply with ok false ("enclavectl: what: not found: no grant with id 7"),
 * or a transport error r < 0 (err_detail()). Returns 1. */
int client_report(const char *what, int r, const struct reply *rep);
/* The usual round trip of a command: connect to ctl's socket, make one call, close, and report any
 * failure. Returns 0 with *ret_reply holding an ok reply (the caller clears it), or 1 after
 * printing why. args is taken over as in client_call(). */
int ctl_call(const struct ctl *ctl, const char *what, const char *op, json_t *args,
	     client_partial_fn on_partial, void *ctx, struct reply *ret_reply);
/* A listing command's call: ctl_call(), then for --json the reply printed, else the array under
 * key taken from the result. Returns 0 with *ret_list set when there is a list to show (rep holds
 * it; the caller clears rep); otherwise *ret_list is NULL and the exit status is returned (the
 * reply printed or cleared, any failure reported). */
int ctl_call_list(const struct ctl *ctl, const char *what, const char *op, json_t *args,
		  const char *key, struct reply *rep, const json_t **ret_list);
/* Print why a connection to path failed (r from client_connect), with how to start the daemon.
 * Returns 1. */
int client_report_connect(const char *what, const char *path, int r);

/* cmd_audit.c: open one record streamed by the daemon or read from a log with o (made with
 * key_file, the --auditor-key, or without one: NULL). A sealed record without a key file is
 * -ENOKEY with a message that says what to give. *ret: a new reference. */
struct audit_opener;
int audit_open_record(struct audit_opener *o, const char *key_file, const json_t *rec,
		      json_t **ret);
/* cmd_audit.c: the daemon's audit.show merges the primary's log with every compute node's; a
 * frame of a node's records says "node": NAME, and they open only with that log's own key records.
 * One opener per node, made with key_file on first use and kept (log_openers_free()). -EPROTO a
 * name that is not a node's; -E2BIG more than 4096 nodes. */
struct log_openers {
	struct log_opener { char name[65]; struct audit_opener *o; } *v;
	size_t n;
};
int log_openers_get(struct log_openers *lo, const char *key_file, const char *node,
		    struct audit_opener **ret);
void log_openers_free(struct log_openers *lo);

/* ---- output.c: tables, sizes, JSON, safe text ---------------------------------------------- */

/* Print j (borrowed) to stdout as one pretty JSON document. 0 or -EIO. */
int out_json(const json_t *j);
/* Print j to stdout as one compact line. 0 or -EIO. */
int out_json_line(const json_t *j);
/* "1.5 GiB", "512 B": bytes for people. */
void out_size(uint64_t bytes, char out[static 16]);
/* "1:02:03" or "02:03" for a number of seconds; "--:--" when unknown (< 0). */
void out_duration(double seconds, char out[static 24]);
/* Copy s into out (size n >= 4), escaping what would not show as itself: invalid UTF-8 bytes as
 * \xHH; C0 and C1 controls, DEL, bidirectional controls (U+061C, U+200E, U+200F, U+202A to
 * U+202E, U+2066 to U+2069) and other invisible format characters as \uHHHH; a backslash as two.
 * Cut at max_chars characters (0: no limit; an escape counts as one) or when out is full, with
 * "..." at the end. The one function every human-readable output goes through, so a file name,
 * purpose or reason can neither drive the terminal nor reorder what an auditor reads. --json
 * output is left exact. Returns out. */
char *out_text(const char *s, size_t max_chars, char *out, size_t n);
/* Room out_text() needs to show a string of len bytes whole: each byte becomes at most 4. */
#define OUT_TEXT_SIZE(len) (4 * (len) + 4)
/* True if s (n bytes) is valid UTF-8 without NUL: what a JSON string can carry. */
bool out_utf8_valid(const char *s, size_t n);
/* A member of a JSON object as a string, "" if absent. Integers are formatted into scratch
 * (size >= 24); other types give "?". Borrowed from obj or scratch. */
const char *out_member(const json_t *obj, const char *key, char scratch[static 24]);
/* True if obj[key] is a non-negative integer; its value in *ret. */
bool out_member_u64(const json_t *obj, const char *key, uint64_t *ret);

/* A table of text cells printed with aligned columns (the last one unpadded). */
struct table {
	size_t ncols;
	const char *const *head;  /* ncols column titles; borrowed */
	char **cells;             /* nrows * ncols owned strings */
	size_t nrows;
	size_t cap;               /* rows allocated */
};
/* Rows are capped (the daemon's answer is at most 1 MiB anyway). */
#define TABLE_ROWS_MAX (1u << 20)
void table_init(struct table *t, size_t ncols, const char *const *head);
/* Add a row of ncols cells; each is copied (made safe with out_text, cut to max_chars[i] if
 * max_chars is not NULL and the entry is non-zero). -ENOMEM, -E2BIG. */
int table_add(struct table *t, const char *const *cells, const size_t *max_chars);
/* Print to stdout: the header and the rows. 0 or -EIO. */
int table_print(const struct table *t);
void table_free(struct table *t);

/* ---- walk.c: the source tree of an import -------------------------------------------------- */

/* What the walk tells its caller, in a fixed order: a directory before its entries, the entries
 * of a directory sorted by name (bytewise), depth first. */
struct walk_ops {
	/* A directory: path relative to the root ("" for the root itself), st from fstat on it. */
	int (*dir)(void *ctx, const char *path, const struct stat *st);
	/* A regular file named `name` in the open directory dirfd (borrowed); st from fstatat. The
	 * callback opens it with walk_open_file() if it needs the contents. */
	int (*file)(void *ctx, int dirfd, const char *name, const char *path,
		    const struct stat *st);
	/* Checked before each entry: set (by a signal handler) to stop with -EINTR. May be NULL. */
	volatile sig_atomic_t *stop;
	/* After the last entry of the directory at path, before its descriptor (the dirfd its files
	 * were given with) is closed. May be NULL. */
	int (*leave)(void *ctx, const char *path);
};
/* Walk the tree under the directory open at rootfd (borrowed). `root` is how the user named it,
 * for messages. Anything but regular files and directories (symlinks, devices, sockets, FIFOs)
 * is refused with -EINVAL, as are names that are not valid UTF-8 and paths longer than a store
 * takes, with err_detail() naming the path. At most one descriptor per level of nesting is open
 * (nesting is capped), plus the one a callback opens. A callback's non-zero return stops the walk
 * and is returned. */
int walk_tree(int rootfd, const char *root, const struct walk_ops *ops, void *ctx);
/* A tree as walk_tree_keep() saw it: every entry's name, place and stat, in walk order. */
struct walk_list;
/* The most entries a walk_list holds: a larger tree is refused (-E2BIG) by walk_tree_keep().
 * ENCLAVECTL_TEST_LIMITS is defined only for tests/'s enclavectl-test-limits, a copy of enclavectl
 * built with limits small enough for test_cli to reach (this one, WALK_DIR_ENTRIES_MAX in walk.c,
 * the keep-alive in cmd_dataset.c); the installed enclavectl has no such switch. */
#ifdef ENCLAVECTL_TEST_LIMITS
#define WALK_KEEP_MAX 64u
#else
#define WALK_KEEP_MAX (1u << 24)
#endif
/* As walk_tree(), keeping what it saw in *ret_list (the caller frees it with walk_list_free()),
 * on success only. About 64 bytes and the name per entry. */
int walk_tree_keep(int rootfd, const char *root, const struct walk_ops *ops, void *ctx,
		   struct walk_list **ret_list);
/* Give the entries of l (borrowed) to ops in the order walk_tree_keep() saw them, without listing
 * or stat-ing them again: a file's st is the one taken when it was listed. Each directory is
 * opened again (O_NOFOLLOW, from its parent's descriptor, starting at rootfd, borrowed) and
 * refused with -EINVAL, naming it, unless it is the directory that was listed (device and
 * inode); dir gets its fstat now. A file callback opens its file with walk_open_file(), which
 * checks it against st. Entries that appeared since are not seen. */
int walk_replay(const struct walk_list *l, int rootfd, const char *root,
		const struct walk_ops *ops, void *ctx);
void walk_list_free(struct walk_list *l);
/* Open `name` in dirfd read-only for the daemon to read, without following a symlink and without
 * blocking on a FIFO, and check that it is still the regular file st describes (not swapped since
 * it was listed). -errno with err_detail() naming root/path. */
int walk_open_file(int dirfd, const char *name, const char *root, const char *path,
		   const struct stat *st, int *ret_fd);
