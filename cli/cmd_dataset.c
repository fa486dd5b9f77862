/* enclavectl dataset list | show | import | set | erase | erase-approve | erasures |
 * erasure-proof.
 *
 * An import walks the source tree here, with the steward's own permissions, and hands the daemon
 * one open descriptor per file (docs/PROTOCOL.md, "Importing"): the daemon never opens a path on
 * a steward's behalf. The tree is walked once (fstatat only), while the daemon prepares the
 * import (import.begin is sent first): the walk refuses what a dataset cannot hold before any
 * directory or file is sent, counts files and bytes for the progress line, and keeps every entry
 * with its stat (walk_tree_keep()). The import itself then goes through what was kept
 * (walk_replay()): each directory opened again and checked to be the one listed, each file told
 * of by the stat taken then (import.stat) or opened and checked against it (import.files).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/enclavectl.h"
#include "common/proto.h"
#include "common/common.h"
#include "common/err.h"
#include "common/timefmt.h"
#include "crypto/crypto.h"
#include "policy/policy.h"
#include "store/store.h"

/* Redraw the progress line at most this often. */
#define PROGRESS_INTERVAL_NS (250 * 1000000LL)
/* How long to wait for the daemon to acknowledge an abort before just closing. */
#define ABORT_TIMEOUT_MS (10 * 1000)
/* While the tree is walked, import.begin's connection is otherwise silent: a request this often
 * (whoami, which changes nothing) keeps the daemon from closing it as idle
 * (CONTROL_IDLE_TIMEOUT_MS, 10 minutes) when the walk of a very large or slow tree is long. The
 * socket and the clock are looked at every SCAN_TICK_ENTRIES entries of the walk. (Test limits:
 * cli/enclavectl.h, ENCLAVECTL_TEST_LIMITS: a keep-alive at every look, every 8 entries.) */
#ifdef ENCLAVECTL_TEST_LIMITS
#define KEEPALIVE_NS 0
#define SCAN_TICK_ENTRIES 8u
#else
#define KEEPALIVE_NS (60 * 1000000000LL)
#define SCAN_TICK_ENTRIES 256u
#endif

static const char list_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] dataset list\n\n"
	"List the datasets in the store, by name, with their latest version, and under the\n"
	"table each retention date (dataset set --retain-until) and whether it has passed:\n"
	"erasure due.\n"
	"Stewards and auditors only.\n\n"
	"Options:\n"
	"  --json        print the daemon's answer as JSON\n"
	"  -h, --help    show this help\n";

static const char show_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] dataset show NAME[@VERSION]\n\n"
	"Show a dataset and every committed version of it (or only VERSION): when it was\n"
	"imported and committed, and how many files, directories and bytes it holds.\n"
	"Stewards and auditors only.\n\n"
	"Options:\n"
	"  --json        print the daemon's answer as JSON\n"
	"  -h, --help    show this help\n";

static const char set_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] dataset set NAME [--cache kernel|direct]\n"
	"           [--duo CODES] [--controller NAME] [--retain-until WHEN] [--dry-run]\n\n"
	"Change a dataset's policy settings; each change is an audit record. New consent codes\n"
	"apply to existing grants at once: the grants they now exclude are suspended (named\n"
	"here, shown as suspended by grant list and show, refused at open, never exported as\n"
	"visas) until the codes allow them again. A TS:DATE already past is refused. Stewards\n"
	"only.\n\n"
	"Options:\n"
	"  --cache MODE        direct (default): every read is checked; kernel: the kernel's\n"
	"                      page cache serves repeated reads (and shared mmap), unchecked\n"
	"                      until a revocation invalidates it (within 1 s); a shared\n"
	"                      mmap (numpy.memmap) needs kernel: direct refuses it (ENODEV)\n"
	"  --duo CODES         replace the consent codes (see dataset import --help; \"\" for none)\n"
	"  --controller NAME   replace the data controller\n"
	"  --retain-until WHEN the date by which the data must be erased (RFC 3339 or +90d;\n"
	"                      none: no date). Past it the daemon records that erasure is due\n"
	"                      and 'dataset list' says so; erasing stays a steward's act\n"
	"                      ('dataset erase', approved)\n"
	"  --dry-run           check the change and name the grants it would suspend or let\n"
	"                      back in, without recording anything\n"
	"  --json              print the new settings as JSON\n"
	"  -h, --help          show this help\n";

static const char import_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] dataset import NAME DIR [--chunk-size SIZE]\n"
	"           [--duo CODES] [--controller NAME] [--keep-crypt4gh] [--rehash]\n\n"
	"Import the tree under DIR as the next version of dataset NAME (created by its first\n"
	"import). enclavectl walks DIR itself, in sorted order, and passes each file to the\n"
	"daemon as an open descriptor. Only regular files and directories are imported: a\n"
	"symbolic link, device, socket or FIFO anywhere below DIR stops the import before any\n"
	"file is sent, naming the path. DIR is walked once, while the daemon prepares the\n"
	"import; a directory replaced after the walk, or a file replaced or removed before it\n"
	"is opened, stops the import; an entry that appears after the walk is not imported.\n"
	"The new version becomes visible only when every file is in; an error or Ctrl-C\n"
	"abandons it. Stewards only.\n\n"
	"Crypt4GH files (recognised by their magic, whatever their name) are decrypted by the\n"
	"daemon with the store's Crypt4GH key as they are read, in memory only, and imported\n"
	"as their plaintext, under their name without .c4gh. A Crypt4GH file not addressed to\n"
	"the store's key, or that does not authenticate, stops the import, naming the file;\n"
	"nothing is committed. docs/CRYPT4GH.md says what of the format is supported.\n\n"
	"Versions share unchanged files: a file whose content the dataset's latest version\n"
	"already holds (found by a keyed hash of its content, never a plain hash) is not stored\n"
	"again; the new version points at the same encrypted object. Only new and changed files\n"
	"take space, and the output says how many were shared. A file whose source stamp\n"
	"(a keyed hash of its device, inode number, size, mtime and ctime) is what the latest\n"
	"version recorded for the same path, and whose mtime and ctime are more than 2 s\n"
	"older than that version's import, is shared without being read at all: enclavectl\n"
	"tells the daemon each file's stat first, and opens only the files it asks for.\n\n"
	"Options:\n"
	"  --chunk-size SIZE   encryption chunk size: a power of two from 4K to 4M\n"
	"                      (K and M suffixes; default 64K)\n"
	"  --duo CODES         the data-use conditions of the data's consent, as Data Use\n"
	"                      Ontology codes, comma-separated: GRU, HMB, DS:<disease>, POA,\n"
	"                      NPOA, NMDS, GSO, NCU, NPU, NPUNCU, IRB, PUB, COL, RTN, US, PS,\n"
	"                      IS, MOR:<date>, TS:<date>, or DUO ids (DUO:0000015)\n"
	"  --controller NAME   the data controller named in the consent\n"
	"  --keep-crypt4gh     import Crypt4GH files as they are (encrypted, name kept)\n"
	"  --rehash            read and hash every file, trusting no source stamp\n"
	"  --json              print the committed version as JSON\n"
	"  -q, --quiet         no progress line\n"
	"  -h, --help          show this help\n";

/* ---- list ---------------------------------------------------------------------------------- */

static int dataset_list(struct ctl *ctl, int argc, char **argv)
{
	static const char *const head[] = { "NAME", "LATEST", "CREATED", "ID" };
	struct reply rep = { 0 };
	struct table t;
	const json_t *list, *d;
	size_t i;
	int first, r;

	r = ctl_parse_none(ctl, "dataset list", list_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("dataset list", "unexpected argument '%s'", argv[first]);
	r = ctl_call_list(ctl, "dataset list", "dataset.list", NULL, "datasets", &rep, &list);
	if (!list)
		return r;
	table_init(&t, ARRAY_SIZE(head), head);
	json_array_foreach(list, i, d) {
		char s1[24], s2[24], s3[24], s4[24];
		const char *cells[] = { out_member(d, "name", s1),
					out_member(d, "latest_version", s2),
					out_member(d, "created", s3), out_member(d, "id", s4) };

		if (table_add(&t, cells, NULL) < 0) {
			r = ctl_fail("dataset list", "out of memory");
			break;
		}
	}
	if (r == 0) {
		if (t.nrows)
			r = table_print(&t) < 0;
		else if (!ctl->quiet)
			fputs("no datasets\n", stderr);
		/* Retention, under the table: the date, and whether erasure is due. */
		json_array_foreach(list, i, d) {
			char s1[24], s2[48];

			if (!json_object_get(d, "retain_until"))
				continue;
			printf("%s: retain until %s%s\n", out_member(d, "name", s1),
			       out_member(d, "retain_until", s2),
			       json_is_true(json_object_get(d, "erasure_due")) ?
				       ": ERASURE DUE (a steward's act: dataset erase, approved)" : "");
		}
	}
	table_free(&t);
	reply_clear(&rep);
	return r;
}

/* ---- show ---------------------------------------------------------------------------------- */

/* "consent  NMDS (DUO:0000015), DS:cancer (DUO:0000007)", the controller and the cache mode. */
static void print_policy(const json_t *p)
{
	const json_t *codes = json_object_get(p, "duo"), *c;
	char s1[24], s2[24], text[600];
	size_t i;

	if (!json_is_object(p))
		return;
	printf("consent  ");
	if (!json_array_size(codes))
		printf("(no codes)");
	json_array_foreach(codes, i, c)
		printf("%s%s (%s)", i ? ", " : "",
		       out_text(out_member(c, "code", s1), 80, text, sizeof(text)),
		       out_member(c, "id", s2));
	printf("\ncontroller  %s\ncache    %s\n",
	       *out_member(p, "controller", s1)
		       ? out_text(out_member(p, "controller", s1), 0, text, sizeof(text))
		       : "(none)",
	       out_member(p, "cache", s2));
}

static int dataset_show(struct ctl *ctl, int argc, char **argv)
{
	static const char *const head[] = { "VERSION", "CREATED", "COMMITTED", "FILES", "DIRS",
					    "SIZE" };
	struct reply rep = { 0 };
	struct table t;
	char name[STORE_DATASET_NAME_MAX + 1], what[200], s1[24], s2[24], s3[24], text[512];
	const json_t *ds, *list, *v;
	uint32_t version;
	json_t *args;
	size_t i;
	int first, r;

	r = ctl_parse_none(ctl, "dataset show", show_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("dataset show", "missing NAME[@VERSION]");
	if (first + 1 < argc)
		return ctl_usage_error("dataset show", "unexpected argument '%s'", argv[first + 1]);
	r = ctl_parse_dataset("dataset show", argv[first], name, &version);
	if (r)
		return r;
	snprintf(what, sizeof(what), "dataset show %s", argv[first]);
	args = json_pack("{s:s}", "dataset", name);
	if (args && version && json_object_set_new(args, "version", json_integer(version)) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail(what, "out of memory");
	r = ctl_call(ctl, what, "dataset.show", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	ds = json_object_get(rep.result, "dataset");
	list = json_object_get(rep.result, "versions");
	if (!json_is_object(ds) || !json_is_array(list)) {
		reply_clear(&rep);
		return ctl_fail(what, "protocol error: the reply lacks \"dataset\" or "
				      "\"versions\"");
	}
	printf("dataset  %s (id %s), created %s, latest version %s\n",
	       out_text(out_member(ds, "name", s1), 0, text, sizeof(text)),
	       out_member(ds, "id", s1), out_member(ds, "created", s2),
	       out_member(ds, "latest_version", s3));
	print_policy(json_object_get(rep.result, "policy"));
	putchar('\n');
	table_init(&t, ARRAY_SIZE(head), head);
	json_array_foreach(list, i, v) {
		char a[24], b[24], c[24], d[24], e[24], size[16] = "";
		uint64_t bytes;
		const char *cells[6];

		if (out_member_u64(v, "bytes", &bytes))
			out_size(bytes, size);
		cells[0] = out_member(v, "version", a);
		cells[1] = out_member(v, "created", b);
		cells[2] = out_member(v, "committed", c);
		cells[3] = out_member(v, "files", d);
		cells[4] = out_member(v, "dirs", e);
		cells[5] = size;
		if (table_add(&t, cells, NULL) < 0) {
			r = ctl_fail(what, "out of memory");
			break;
		}
	}
	if (r == 0)
		r = table_print(&t) < 0;
	table_free(&t);
	reply_clear(&rep);
	return r;
}

/* ---- import -------------------------------------------------------------------------------- */

/* Set by the SIGINT/SIGTERM handler; the pipe lets a wait for the daemon notice at once. */
static volatile sig_atomic_t interrupted;
static int intr_pipe[2] = { -1, -1 };

static void on_interrupt(int sig)
{
	int saved = errno;

	(void)sig;
	interrupted = 1;
	if (intr_pipe[1] >= 0)
		(void)!write(intr_pipe[1], "", 1);
	errno = saved;
}

/* SA_RESETHAND: a second Ctrl-C kills at once, should the abort itself hang. */
static int catch_interrupts(void)
{
	struct sigaction sa = { .sa_handler = on_interrupt, .sa_flags = SA_RESETHAND };

	if (pipe2(intr_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
		return -errno;
	return 0;
}

/* A file of an import.stat batch: what is needed to open it should the daemon ask for it. */
struct claim_ent {
	char *name;                   /* in dirfd; owned */
	char *path;                   /* relative to the root; owned */
	int dirfd;                    /* borrowed: its directory stays open until the batch is
				       * answered (walk_ops.leave settles every batch) */
	struct stat st;               /* as fstatat() saw it */
};

/* An import.stat batch: at most PROTO_IMPORT_STAT_FILES files, PROTO_IMPORT_STAT_PATH_BYTES
 * of paths. */
struct claim {
	struct claim_ent e[PROTO_IMPORT_STAT_FILES];
	size_t n;
	size_t path_bytes;
};

/* Requests in flight (IMPORT_WINDOW). */
#define IMPORT_WINDOW_MAX 4u

struct import {
	const struct ctl *ctl;
	const char *root;             /* DIR as given; borrowed from argv */
	char what[200];               /* "dataset import NAME", for messages */
	struct client c;
	/* The walk's totals. */
	uint64_t total_files, total_dirs, total_bytes;
	/* The daemon's running totals (import.file replies and progress frames). */
	uint64_t files, dirs, bytes;
	uint64_t reused_files, reused_bytes;   /* of those: unchanged, stored by an earlier version */
	int64_t t0_ns;                /* import.begin sent (before the walk) */
	int64_t drawn_ns;             /* last progress redraw */
	bool progress;                /* draw a progress line (stderr is a terminal, not -q) */
	bool on_screen;               /* a progress line is showing */
	bool scanning;                /* in the walk, before anything is sent */
	bool broken;                  /* the connection is out of step: close, do not abort */
	/* import.begin is sent before the walk and its reply read after it (or during it, once it
	 * has come), with the whoami replies that kept the connection alive meanwhile. */
	enum { BEGIN_NONE, BEGIN_SENT, BEGIN_OK, BEGIN_REFUSED } begin;
	unsigned pings;               /* whoami requests sent, their replies not read yet */
	int64_t sent_ns;              /* last request sent during the walk */
	unsigned ticks;               /* entries walked, to look at the socket every so many */
	struct reply failed;          /* a reply with ok false that stopped the import */
	/* The files waiting to go as one import.files batch (PROTO_IMPORT_BATCH_FILES, and
	 * PROTO_IMPORT_BATCH_BYTES unless one file alone): their descriptors (owned) and paths. */
	int bfds[PROTO_IMPORT_BATCH_FILES];
	json_t *bpaths;               /* array of the paths, or NULL when none waits */
	size_t bn;
	uint64_t bbytes;
	unsigned inflight;            /* import.files requests sent, their replies not read yet */
	/* With "stamps" (import.begin's reply: a previous version to share from, no --rehash),
	 * files go first as import.stat batches of their fstatat() result, without a descriptor;
	 * the daemon imports those whose source stamp holds and asks for the others ("need"),
	 * which are then opened and sent as import.files (docs/PROTOCOL.md). */
	bool stamps;
	bool compact;                 /* import.begin said "stat_compact": import.stat batches go
				       * in the compact form (proto_stats64()), else as arrays */
	struct claim *cw;             /* the import.stat batch waiting to go; NULL: none */
	struct claim *flight[IMPORT_WINDOW_MAX];  /* per request in flight, oldest first: its
						     import.stat batch, or NULL (import.files) */
	unsigned fhead;               /* flight[fhead] is the oldest */
	struct claim_ent *need;       /* files the daemon asked for, not yet opened: need[needh ..
				       * nneed), in the order asked; owned */
	size_t needh, nneed, need_cap;
};

/* import.files requests kept in flight: enclavectl walks and opens the next batches while the
 * daemon imports the earlier ones (issue 13). The descriptors in flight count against the
 * sender's RLIMIT_NOFILE: IMPORT_WINDOW * PROTO_IMPORT_BATCH_FILES stays well below 1,024. */
#define IMPORT_WINDOW IMPORT_WINDOW_MAX

static void progress_clear(struct import *im)
{
	if (im->on_screen) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		im->on_screen = false;
	}
}

static void progress_draw(struct import *im, bool force)
{
	int64_t now = now_monotonic_ns();
	char done[16], total[16], eta[24];
	double secs, rate;

	if (!im->progress || (!force && now - im->drawn_ns < PROGRESS_INTERVAL_NS))
		return;
	im->drawn_ns = now;
	if (im->scanning) {
		out_size(im->total_bytes, total);
		fprintf(stderr, "\r\033[Kscanning: %" PRIu64 " files, %" PRIu64 " dirs, %s",
			im->total_files, im->total_dirs, total);
	} else {
		secs = (double)(now - im->t0_ns) / 1e9;
		rate = secs > 0 ? (double)im->bytes / secs : 0;
		out_size(im->bytes, done);
		out_size(im->total_bytes, total);
		/* Files as well as bytes: a tree of many small files costs time per file. */
		out_duration(progress_eta(im->files, im->total_files, im->bytes, im->total_bytes,
					  secs), eta);
		fprintf(stderr, "\r\033[K%s / %s, %" PRIu64 "/%" PRIu64 " files, %.1f MB/s, "
			"%.0f files/s, ETA %s", done, total, im->files, im->total_files, rate / 1e6,
			secs > 0 ? (double)im->files / secs : 0, eta);
	}
	fflush(stderr);
	im->on_screen = true;
}

static int scan_tick(struct import *im);

static int scan_dir(void *ctx, const char *path, const struct stat *st)
{
	struct import *im = ctx;

	(void)path;
	(void)st;
	im->total_dirs++;
	progress_draw(im, false);
	return scan_tick(im);
}

static int scan_file(void *ctx, int dirfd, const char *name, const char *path,
		     const struct stat *st)
{
	struct import *im = ctx;

	(void)dirfd;
	(void)name;
	(void)path;
	im->total_files++;
	im->total_bytes += (uint64_t)st->st_size;
	progress_draw(im, false);
	return scan_tick(im);
}

/* Take the running totals from an import.file reply or a progress frame. */
static void take_totals(struct import *im, const json_t *j)
{
	uint64_t v;

	if (out_member_u64(j, "files", &v))
		im->files = v;
	if (out_member_u64(j, "dirs", &v))
		im->dirs = v;
	if (out_member_u64(j, "bytes", &v))
		im->bytes = v;
	if (out_member_u64(j, "reused_files", &v))
		im->reused_files = v;
	if (out_member_u64(j, "reused_bytes", &v))
		im->reused_bytes = v;
}

static int on_progress(void *ctx, const json_t *partial)
{
	struct import *im = ctx;
	const json_t *p = json_object_get(partial, "progress");

	if (json_is_object(p)) {
		take_totals(im, p);
		progress_draw(im, false);
	}
	return 0;
}

/* One call of the import (args taken over, as client_call()). 0 on an ok reply (kept in
 * *ret_reply if not NULL), else < 0: a refusal kept in im->failed (-EREMOTEIO), or a broken
 * connection (im->broken). */
static int import_call(struct import *im, const char *op, json_t *args, int fd,
		       struct reply *ret_reply)
{
	struct reply rep = { 0 };
	int r;

	r = client_call(&im->c, op, args, fd, on_progress, im, &rep);
	if (r < 0) {
		im->broken = true;
		return r;
	}
	if (!rep.ok) {
		im->failed = rep;
		return -EREMOTEIO;
	}
	if (ret_reply)
		*ret_reply = rep;
	else
		reply_clear(&rep);
	return 0;
}

/* Read import.begin's reply: whether the daemon takes files by their stamps (import.stat). A
 * refusal (another import running, a bad name or consent code) is -EREMOTEIO, kept in im->failed
 * unless a failure is kept there already. */
static int begin_collect(struct import *im)
{
	struct reply rep = { 0 };
	int r;

	if (im->begin != BEGIN_SENT)
		return im->begin == BEGIN_REFUSED ? -EREMOTEIO : 0;
	r = client_recv_reply(&im->c, on_progress, im, &rep);
	if (r < 0) {
		im->broken = true;
		return r;
	}
	if (!rep.ok) {
		im->begin = BEGIN_REFUSED;
		if (!im->failed.msg)
			im->failed = rep;
		else
			reply_clear(&rep);
		return -EREMOTEIO;
	}
	im->begin = BEGIN_OK;
	im->stamps = json_is_true(json_object_get(rep.result, "stamps"));
	im->compact = json_is_true(json_object_get(rep.result, "stat_compact"));
	reply_clear(&rep);
	return 0;
}

/* Read the replies to the whoami requests that kept the connection alive during the walk. */
static int pings_collect(struct import *im)
{
	while (im->pings && !im->broken) {
		struct reply rep = { 0 };
		int r = client_recv_reply(&im->c, on_progress, im, &rep);

		if (r < 0) {
			im->broken = true;
			return r;
		}
		im->pings--;
		reply_clear(&rep);
	}
	return 0;
}

/* Every SCAN_TICK_ENTRIES entries of the walk: take import.begin's reply if it has come (a
 * refusal stops the walk at once), and keep the connection alive (KEEPALIVE_NS). */
static int scan_tick(struct import *im)
{
	struct pollfd p = { .fd = im->c.sock, .events = POLLIN };
	int64_t now;
	int r;

	if (++im->ticks % SCAN_TICK_ENTRIES != 0 || im->begin == BEGIN_NONE)
		return 0;
	if (im->begin == BEGIN_SENT && poll(&p, 1, 0) > 0) {
		r = begin_collect(im);
		if (r < 0)
			return r;
	}
	now = now_monotonic_ns();
	if (now - im->sent_ns >= KEEPALIVE_NS) {
		r = client_send_fds(&im->c, "whoami", NULL, NULL, 0);
		if (r < 0) {
			im->broken = true;
			return r;
		}
		im->pings++;
		im->sent_ns = now;
	}
	return 0;
}

/* Close the descriptors of the waiting batch and forget it. */
static void batch_drop(struct import *im)
{
	for (size_t i = 0; i < im->bn; i++)
		close(im->bfds[i]);
	im->bn = 0;
	im->bbytes = 0;
	json_decref(im->bpaths);
	im->bpaths = NULL;
}

static void claim_free(struct claim *cl)
{
	if (!cl)
		return;
	for (size_t i = 0; i < cl->n; i++) {
		free(cl->e[i].name);
		free(cl->e[i].path);
	}
	free(cl);
}

/* Forget every batch and every file waiting to go (after a failure, or at the end). */
static void import_drop(struct import *im)
{
	batch_drop(im);
	claim_free(im->cw);
	im->cw = NULL;
	for (size_t i = im->needh; i < im->nneed; i++) {
		free(im->need[i].name);
		free(im->need[i].path);
	}
	free(im->need);
	im->need = NULL;
	im->needh = im->nneed = im->need_cap = 0;
}

/* The files of batch cl the daemon asked for (the reply's "need": indices into the batch, in
 * order) move to im->need, to be opened and sent; the rest of cl is freed. */
static int claim_answered(struct import *im, struct claim *cl, const json_t *need)
{
	size_t i, prev = 0;
	json_t *v;
	int r = 0;

	if (need && !json_is_array(need))
		r = err_set(-EPROTO, "the daemon's answer to import.stat is malformed");
	json_array_foreach(need, i, v) {
		json_int_t k = json_is_integer(v) ? json_integer_value(v) : -1;

		if (r < 0)
			break;
		/* Ascending, in the batch, each once: anything else is not an answer to it. */
		if (k < 0 || (size_t)k >= cl->n || (i > 0 && (size_t)k <= prev) || !cl->e[k].name) {
			r = err_set(-EPROTO, "the daemon's answer to import.stat is malformed");
			break;
		}
		prev = (size_t)k;
		if (im->nneed == im->need_cap) {
			size_t nc = im->need_cap ? 2 * im->need_cap : PROTO_IMPORT_STAT_FILES;
			struct claim_ent *a = reallocarray(im->need, nc, sizeof(*a));

			if (!a) {
				r = err_set(-ENOMEM, "out of memory");
				break;
			}
			im->need = a;
			im->need_cap = nc;
		}
		im->need[im->nneed++] = cl->e[k];
		cl->e[k].name = cl->e[k].path = NULL;
	}
	claim_free(cl);
	return r;
}

/* Read the reply to the oldest request in flight (import.files or import.stat): its running
 * totals, and for import.stat the files the daemon asks for; or the refusal that stops the
 * import (the first one is kept in im->failed). */
static int batch_collect(struct import *im)
{
	struct reply rep = { 0 };
	struct claim *cl = im->flight[im->fhead];
	int r;

	im->flight[im->fhead] = NULL;
	im->fhead = (im->fhead + 1) % IMPORT_WINDOW;
	im->inflight--;
	r = client_recv_reply(&im->c, on_progress, im, &rep);
	if (r < 0) {
		claim_free(cl);
		im->broken = true;
		return r;
	}
	if (!rep.ok) {
		claim_free(cl);
		if (!im->failed.msg)
			im->failed = rep;
		else
			reply_clear(&rep);
		return -EREMOTEIO;
	}
	take_totals(im, rep.result);
	r = cl ? claim_answered(im, cl, json_object_get(rep.result, "need")) : 0;
	reply_clear(&rep);
	if (r < 0)
		im->broken = true;   /* out of step with the daemon: close, do not go on */
	progress_draw(im, false);
	return r;
}

/* Read every reply still in flight; the first failure. */
static int batch_settle(struct import *im)
{
	int r = 0, e;

	while (im->inflight && !im->broken) {
		e = batch_collect(im);
		if (e < 0 && r == 0)
			r = e;
	}
	return r;
}

/* Send a request with its batch (cl: an import.stat batch, kept until its reply, or NULL), its
 * reply read later (batch_collect): up to IMPORT_WINDOW requests are in flight, and a refusal
 * stops the walk at the next batch. */
static int flight_send(struct import *im, const char *op, json_t *args, const int *fds,
		       size_t nfds, struct claim *cl)
{
	int r;

	if (im->inflight == IMPORT_WINDOW) {
		r = batch_collect(im);
		if (r < 0) {
			json_decref(args);
			return r;
		}
	}
	r = client_send_fds(&im->c, op, args, fds, nfds);
	if (r < 0) {
		im->broken = true;
		return r;
	}
	im->flight[(im->fhead + im->inflight) % IMPORT_WINDOW] = cl;
	im->inflight++;
	return 0;
}

/* Send the waiting batch, if any: one import.files request carrying every descriptor in one
 * SCM_RIGHTS message. */
static int batch_send(struct import *im)
{
	json_t *args;
	int r;

	if (im->bn == 0)
		return 0;
	args = json_pack("{s:O}", "paths", im->bpaths);
	if (!args) {
		batch_drop(im);
		return err_set(-ENOMEM, "out of memory");
	}
	/* The message holds its own references to the descriptors: ours are closed at once. */
	r = flight_send(im, "import.files", args, im->bfds, im->bn, NULL);
	batch_drop(im);
	return r;
}

/* The length of the directory part of a claimed file's path ("" for the root). */
static size_t claim_dir_len(const struct claim_ent *e)
{
	size_t pl = strlen(e->path), nl = strlen(e->name);

	return pl > nl ? pl - nl - 1 : 0;
}

/* The compact form of batch cl (all its files in one directory): {"dir", "names", "stats64"}. */
static json_t *claim_compact(const struct claim *cl)
{
	size_t dlen = claim_dir_len(&cl->e[0]), nlen = 0;
	const struct stat *sts[PROTO_IMPORT_STAT_FILES];
	char *names, *stats;
	json_t *args = NULL;

	for (size_t i = 0; i < cl->n; i++) {
		nlen += strlen(cl->e[i].name) + 1;
		sts[i] = &cl->e[i].st;
	}
	names = malloc(nlen);
	stats = proto_stats64(sts, cl->n);
	if (names && stats) {
		char *p = names;

		for (size_t i = 0; i < cl->n; i++) {
			size_t l = strlen(cl->e[i].name);

			if (i)
				*p++ = '/';
			memcpy(p, cl->e[i].name, l);
			p += l;
		}
		args = json_pack("{s:s%, s:s%, s:s}", "dir", cl->e[0].path, dlen, "names", names,
				 (size_t)(p - names), "stats64", stats);
	}
	free(names);
	free(stats);
	return args;
}

/* The arguments of batch cl as arrays ([dev, ino, size, mode, mtime_ns, ctime_ns] per file, dev
 * and ino as signed 64-bit integers with the bits of the unsigned ones), or NULL (out of memory). */
static json_t *claim_arrays(const struct claim *cl)
{
	json_t *paths = json_array(), *stats = json_array(), *args;

	for (size_t i = 0; paths && stats && i < cl->n; i++) {
		const struct stat *st = &cl->e[i].st;
		json_t *a = json_pack("[I, I, I, I, I, I]", (json_int_t)(uint64_t)st->st_dev,
				      (json_int_t)(uint64_t)st->st_ino, (json_int_t)st->st_size,
				      (json_int_t)st->st_mode,
				      (json_int_t)st->st_mtim.tv_sec * 1000000000 +
					      st->st_mtim.tv_nsec,
				      (json_int_t)st->st_ctim.tv_sec * 1000000000 +
					      st->st_ctim.tv_nsec);

		if (json_array_append_new(paths, json_string(cl->e[i].path)) < 0 ||
		    json_array_append_new(stats, a) < 0) {
			json_decref(paths);
			paths = NULL;
		}
	}
	args = paths && stats ? json_pack("{s:o, s:o}", "paths", paths, "stats", stats) : NULL;
	if (!args && (!paths || !stats)) {
		json_decref(paths);
		json_decref(stats);
	}
	return args;
}

/* Send the waiting import.stat batch, if any: compact when the daemon takes it, else as arrays. */
static int claim_send(struct import *im)
{
	struct claim *cl = im->cw;
	json_t *args;
	int r;

	if (!cl)
		return 0;
	im->cw = NULL;
	args = im->compact ? claim_compact(cl) : claim_arrays(cl);
	if (!args) {
		claim_free(cl);
		return err_set(-ENOMEM, "out of memory");
	}
	r = flight_send(im, "import.stat", args, NULL, 0, cl);
	if (r < 0)
		claim_free(cl);
	return r;
}

/* Add the file (name in dirfd, path, st) to the waiting import.files batch, opened, sending the
 * batch first when it is full or this file would take it over its bytes. */
static int fd_add(struct import *im, int dirfd, const char *name, const char *path,
		  const struct stat *st)
{
	uint64_t size = (uint64_t)st->st_size;
	int fd = -1, r;

	if (im->bn == PROTO_IMPORT_BATCH_FILES ||
	    (im->bn > 0 && im->bbytes + size > PROTO_IMPORT_BATCH_BYTES)) {
		r = batch_send(im);
		if (r < 0)
			return r;
	}
	r = walk_open_file(dirfd, name, im->root, path, st, &fd);
	if (r < 0)
		return r;
	if (!im->bpaths)
		im->bpaths = json_array();
	if (!im->bpaths || json_array_append_new(im->bpaths, json_string(path)) < 0) {
		close(fd);
		return err_set(-ENOMEM, "out of memory");
	}
	im->bfds[im->bn++] = fd;
	im->bbytes += size;
	return 0;
}

/* Open and send the files the daemon asked for, until none is left (sending may read replies
 * that ask for more). They are all in the directory being walked: every batch is answered
 * before the walk leaves it. */
static int need_send(struct import *im)
{
	int r = 0;

	while (im->needh < im->nneed && r == 0) {
		/* A copy: fd_add() may read replies that append to im->need (and move it). */
		struct claim_ent e = im->need[im->needh++];

		if (im->needh == im->nneed)
			im->needh = im->nneed = 0;
		r = fd_add(im, e.dirfd, e.name, e.path, &e.st);
		free(e.name);
		free(e.path);
	}
	return r;
}

/* Everything sent and answered, the files asked for included: before each directory and after
 * the last entry of each (while the directory the files were found in is still open). */
static int import_settle(struct import *im)
{
	int r = claim_send(im);

	while (r == 0) {
		r = need_send(im);
		if (r == 0)
			r = batch_send(im);
		if (r < 0 || (im->inflight == 0 && im->nneed == im->needh))
			break;
		r = batch_collect(im);
	}
	return r;
}

/* Is an import.stat batch in flight (its answer, which may ask for files, not read yet)? */
static bool stat_in_flight(const struct import *im)
{
	for (unsigned i = 0; i < im->inflight; i++)
		if (im->flight[(im->fhead + i) % IMPORT_WINDOW])
			return true;
	return false;
}

/* At a directory's edge (entering one, or leaving the one whose files were batched): every
 * import.stat batch sent and answered, and the files asked for opened (from the directory the
 * walk checked, still open) and sent, so that the daemon sees the requests in walk order. With
 * import.stat, the replies of import.files and import.dir are not waited for: they are read with
 * the next ones (the window), and the daemon is never left without a request at the edge; without
 * it (every file sent with its descriptor) everything is answered, as import_settle(). */
static int edge_settle(struct import *im)
{
	int r;

	if (!im->stamps)
		return import_settle(im);
	r = claim_send(im);
	while (r == 0) {
		r = need_send(im);
		if (r < 0 || (!stat_in_flight(im) && im->nneed == im->needh))
			break;
		r = batch_collect(im);
	}
	if (r == 0)
		r = batch_send(im);
	return r;
}

static int send_dir(void *ctx, const char *path, const struct stat *st)
{
	struct import *im = ctx;
	json_t *args = json_pack("{s:s, s:i, s:I}", "path", path, "mode",
				 (int)(st->st_mode & 07777), "mtime_ns",
				 (json_int_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec);
	int r;

	if (!args)
		return err_set(-ENOMEM, "out of memory");
	/* The files before this directory go first, in walk order, the ones asked for included. */
	r = edge_settle(im);
	if (r < 0) {
		json_decref(args);
		return r;
	}
	/* With import.stat the directory goes in flight with the batches (a refusal is read with
	 * their replies and stops the walk at the next one); else it is answered at once. */
	r = im->stamps ? flight_send(im, "import.dir", args, NULL, 0, NULL)
		       : import_call(im, "import.dir", args, -1, NULL);
	if (r == 0) {
		im->dirs++;
		progress_draw(im, false);
	}
	return r;
}

static int leave_dir(void *ctx, const char *path)
{
	(void)path;
	return edge_settle(ctx);
}

/* Is the file path (named name) in the directory of claimed file e? */
static bool same_dir(const struct claim_ent *e, const char *path, const char *name)
{
	size_t pl = strlen(path), nl = strlen(name), dl = pl > nl ? pl - nl - 1 : 0;

	return dl == claim_dir_len(e) && memcmp(path, e->path, dl) == 0;
}

/* Files go in batches: one request and one reply per PROTO_IMPORT_BATCH_FILES files or
 * PROTO_IMPORT_BATCH_BYTES of data (import.files), or, with stamps, per PROTO_IMPORT_STAT_FILES
 * files told of by their stat (import.stat), instead of a round trip per file. */
static int send_file(void *ctx, int dirfd, const char *name, const char *path,
		     const struct stat *st)
{
	struct import *im = ctx;
	size_t plen = strlen(path);
	struct claim_ent *e;
	int r;

	if (!im->stamps)
		return fd_add(im, dirfd, name, path, st);
	/* A batch is full at PROTO_IMPORT_STAT_FILES files or PROTO_IMPORT_STAT_PATH_BYTES; a
	 * compact one holds the files of one directory (the walk settles every batch before it
	 * enters or leaves one, so this is a safeguard). */
	if (im->cw && (im->cw->n == PROTO_IMPORT_STAT_FILES ||
		       im->cw->path_bytes + plen > PROTO_IMPORT_STAT_PATH_BYTES ||
		       (im->compact && !same_dir(&im->cw->e[0], path, name)))) {
		r = claim_send(im);
		if (r < 0)
			return r;
	}
	/* The files asked for so far go as soon as there are enough of them for a batch. */
	if (im->nneed - im->needh >= PROTO_IMPORT_BATCH_FILES) {
		r = need_send(im);
		if (r < 0)
			return r;
	}
	if (!im->cw && !(im->cw = calloc(1, sizeof(*im->cw))))
		return err_set(-ENOMEM, "out of memory");
	e = &im->cw->e[im->cw->n];
	e->name = strdup(name);
	e->path = strdup(path);
	if (!e->name || !e->path) {
		free(e->name);
		free(e->path);
		e->name = e->path = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	e->dirfd = dirfd;
	e->st = *st;
	im->cw->n++;
	im->cw->path_bytes += plen;
	return 0;
}

/* Report why the import stopped (once), then abandon it: import.abort if the connection is still
 * in step, else just close it, which the daemon takes as an abort. begun: files may have been
 * sent (for the words only). */
static int import_fail(struct import *im, int r, bool begun)
{
	progress_clear(im);
	if (interrupted)
		ctl_fail(im->what, "interrupted; %s",
			 begun ? "the import was abandoned, nothing was imported"
			       : "nothing was imported");
	else if (r == -EREMOTEIO)
		client_report(im->what, 0, &im->failed);
	else if (im->broken)
		client_report(im->what, r, NULL);
	else
		ctl_fail(im->what, "%s%s", err_detail(),
			 begun ? " (the import was abandoned)" : "");
	if (im->begin != BEGIN_NONE && !im->broken) {
		im->c.intr_fd = -1;
		im->c.timeout_ms = ABORT_TIMEOUT_MS;
		/* import.begin's reply (when the walk refused the tree before it was read), the
		 * keep-alives', and the batches still in flight are answered (refused, after a
		 * failure) first. */
		begin_collect(im);
		pings_collect(im);
		batch_settle(im);
	}
	reply_clear(&im->failed);
	/* A begun import is abandoned, even one the walk refused before anything was sent: its
	 * daemon holds the store's import lock until then. */
	if (im->begin == BEGIN_OK && !im->broken) {
		struct reply rep = { 0 };

		if (client_call(&im->c, "import.abort", NULL, -1, NULL, NULL, &rep) == 0)
			reply_clear(&rep);
	}
	client_close(&im->c);
	return 1;
}

static int parse_size(const char *s, uint32_t *ret)
{
	unsigned long long v, mult = 1;
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		mult = 1024, end++;
	else if (*end == 'M' || *end == 'm')
		mult = 1024 * 1024, end++;
	if (*end || v > UINT32_MAX / mult)
		return -EINVAL;
	*ret = (uint32_t)(v * mult);
	return 0;
}

/* The options of import and set. */
struct policy_opts {
	uint32_t chunk;
	bool dry_run;             /* --dry-run (set only) */
	const char *duo;          /* --duo, or NULL */
	const char *controller;   /* --controller, or NULL */
	const char *cache;        /* --cache (set only), or NULL */
	const char *what;         /* the command, for messages */
	bool keep_c4gh;           /* --keep-crypt4gh (import only) */
	bool rehash;              /* --rehash (import only) */
	bool retain_set;          /* --retain-until (set only) */
	char retain[TIME_TEXT_MAX];  /* its RFC 3339 time, "" for none */
};

enum { OPT_CHUNK = 0x200, OPT_DUO, OPT_CONTROLLER, OPT_CACHE, OPT_DRY_RUN, OPT_KEEP_C4GH,
       OPT_RETAIN, OPT_REHASH };

static int on_import_opt(void *ctx, int val, const char *arg)
{
	struct policy_opts *o = ctx;
	uint32_t *chunk = &o->chunk;

	if (val == OPT_DUO) {
		struct policy_duo codes[POLICY_DUO_MAX];
		size_t n;

		if (strlen(arg) > 2048 || !out_utf8_valid(arg, strlen(arg)))
			return ctl_usage_error(o->what, "--duo: too long or not text");
		/* The codes' syntax is checked here, so a typo is a usage error (exit 2); what
		 * depends on the store (a TS: date already past) is the daemon's to refuse. */
		err_clear();
		if (policy_duo_parse(arg, codes, &n) < 0)
			return ctl_usage_error(o->what, "--duo: %s", err_detail());
		o->duo = arg;
		return 0;
	}
	if (val == OPT_DRY_RUN) {
		o->dry_run = true;
		return 0;
	}
	if (val == OPT_KEEP_C4GH) {
		o->keep_c4gh = true;
		return 0;
	}
	if (val == OPT_REHASH) {
		o->rehash = true;
		return 0;
	}
	if (val == OPT_RETAIN) {
		int64_t t;

		o->retain_set = true;
		o->retain[0] = '\0';
		if (strcmp(arg, "none") == 0)
			return 0;
		err_clear();
		if (time_parse(arg, (int64_t)time(NULL), &t) < 0 || t <= 0)
			return ctl_usage_error(o->what, "--retain-until '%.40s': %s", arg,
					       *err_detail() ? err_detail() : "not a time");
		time_format(t, o->retain);
		return 0;
	}
	if (val == OPT_CONTROLLER) {
		if (strlen(arg) > 256 || !out_utf8_valid(arg, strlen(arg)))
			return ctl_usage_error("dataset", "--controller: not valid UTF-8, or longer "
						"than 256 bytes");
		o->controller = arg;
		return 0;
	}
	if (val == OPT_CACHE) {
		if (strcmp(arg, "kernel") != 0 && strcmp(arg, "direct") != 0)
			return ctl_usage_error(o->what, "--cache: kernel or direct, not "
						"'%.40s'", arg);
		o->cache = arg;
		return 0;
	}
	if (parse_size(arg, chunk) < 0 || !IS_POW2(*chunk) || *chunk < CRYPTO_CHUNK_MIN ||
	    *chunk > CRYPTO_CHUNK_MAX)
		return ctl_usage_error("dataset import", "--chunk-size '%.40s': a power of two "
					"from 4K to 4M", arg);
	return 0;
}

/* Add the --duo / --controller / --cache of o to args. -ENOMEM. */
static int policy_args(json_t *args, const struct policy_opts *o)
{
	if ((o->duo && json_object_set_new(args, "duo", json_string(o->duo)) < 0) ||
	    (o->controller &&
	     json_object_set_new(args, "controller", json_string(o->controller)) < 0) ||
	    (o->cache && json_object_set_new(args, "cache", json_string(o->cache)) < 0) ||
	    (o->retain_set &&
	     json_object_set_new(args, "retain_until", json_string(o->retain)) < 0))
		return -ENOMEM;
	return 0;
}

static int dataset_import(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "chunk-size", required_argument, NULL, OPT_CHUNK },
		{ "duo", required_argument, NULL, OPT_DUO },
		{ "controller", required_argument, NULL, OPT_CONTROLLER },
		{ "keep-crypt4gh", no_argument, NULL, OPT_KEEP_C4GH },
		{ "rehash", no_argument, NULL, OPT_REHASH },
		{ 0 },
	};
	static const struct walk_ops scan_ops = { scan_dir, scan_file, &interrupted, NULL };
	struct walk_list *tree = NULL;
	static const struct walk_ops send_ops = { send_dir, send_file, &interrupted, leave_dir };
	_cleanup_free_ struct import *im = calloc(1, sizeof(*im));
	char name[STORE_DATASET_NAME_MAX + 1], sock[4096];
	struct reply rep = { 0 };
	struct policy_opts po = { .what = "dataset import" };
	uint32_t version;
	json_t *args;
	double secs;
	int first, rootfd = -1, r;

	if (!im)
		return ctl_fail("dataset import", "out of memory");
	r = ctl_parse(ctl, "dataset import", import_usage, argc, argv, opts, on_import_opt, &po,
		      &first);
	if (r >= 0)
		return r;
	if (argc - first < 2)
		return ctl_usage_error("dataset import", "missing %s",
				       argc - first == 0 ? "NAME and DIR" : "DIR");
	if (argc - first > 2)
		return ctl_usage_error("dataset import", "unexpected argument '%s'",
				       argv[first + 2]);
	r = ctl_parse_dataset("dataset import", argv[first], name, &version);
	if (r)
		return r;
	if (version)
		return ctl_usage_error("dataset import", "an import makes the next version; give "
					"the name without @VERSION");
	im->ctl = ctl;
	im->root = argv[first + 1];
	im->c.sock = -1;
	im->progress = isatty(STDERR_FILENO) && !ctl->quiet;
	snprintf(im->what, sizeof(im->what), "dataset import %s", name);
	if (ctl_socket_path(ctl, sock, sizeof(sock)) < 0)
		return ctl_fail(im->what, "the socket path is too long");
	if (catch_interrupts() < 0)
		return ctl_fail(im->what, "cannot catch interrupts: %s", strerror(errno));

	/* The root may be a symlink the steward named on purpose; nothing below it is followed. */
	rootfd = open(im->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return ctl_fail(im->what, "%s: %s", im->root, strerror(errno));

	r = client_connect(sock, client_daemon_uid(ctl->store_dir), &im->c);
	if (r < 0) {
		close(rootfd);
		return client_report_connect(im->what, sock, r);
	}
	im->c.intr_fd = intr_pipe[0];
	im->t0_ns = now_monotonic_ns();
	args = json_pack("{s:s}", "dataset", name);
	if (args && po.chunk &&
	    json_object_set_new(args, "chunk_size", json_integer(po.chunk)) < 0)
		json_decref(args), args = NULL;
	if (args && policy_args(args, &po) < 0)
		json_decref(args), args = NULL;
	if (args && po.keep_c4gh &&
	    json_object_set_new(args, "keep_crypt4gh", json_true()) < 0)
		json_decref(args), args = NULL;
	if (args && po.rehash && json_object_set_new(args, "rehash", json_true()) < 0)
		json_decref(args), args = NULL;
	/* import.begin first: the daemon reads the previous version (to share its unchanged files)
	 * while the tree is walked here. Its reply is read when the walk is done (or as soon as it
	 * comes, to stop at once on a refusal). */
	r = args ? client_send_fds(&im->c, "import.begin", args, NULL, 0)
		 : err_set(-ENOMEM, "out of memory");
	if (r < 0) {
		close(rootfd);
		im->broken = true;
		return import_fail(im, r, false);
	}
	im->begin = BEGIN_SENT;
	im->sent_ns = now_monotonic_ns();

	/* The walk: a tree the dataset cannot hold is refused here, before any directory or file
	 * is sent; the import is then abandoned (import_fail()). */
	err_clear();
	im->scanning = true;
	r = walk_tree_keep(rootfd, im->root, &scan_ops, im, &tree);
	im->scanning = false;
	if (r == 0)
		r = begin_collect(im);
	if (r == 0)
		r = pings_collect(im);
	if (r < 0) {
		close(rootfd);
		walk_list_free(tree);
		return import_fail(im, r, false);
	}
	progress_clear(im);
	progress_draw(im, true);
	/* A daemon with a version to share from takes the files whose stamps hold by their stat
	 * alone (import.stat); without it every file goes with its descriptor. */
	r = walk_replay(tree, rootfd, im->root, &send_ops, im);
	walk_list_free(tree);
	if (r == 0 && !interrupted)
		r = import_settle(im);
	close(rootfd);
	if (r == 0 && interrupted)
		r = err_set(-EINTR, "interrupted");
	if (r < 0) {
		r = import_fail(im, r, true);
		import_drop(im);
		return r;
	}
	import_drop(im);

	/* Once the commit is sent its outcome is the daemon's: wait for it, Ctrl-C or not. */
	im->c.intr_fd = -1;
	/* The consent codes go with the commit too: that is when the daemon records them (begin
	 * only checked them, so that a bad code stops the import before any data moves). */
	args = json_object();
	if (args && policy_args(args, &po) < 0)
		json_decref(args), args = NULL;
	r = args ? import_call(im, "import.commit", args, -1, &rep)
		 : err_set(-ENOMEM, "out of memory");
	if (r < 0) {
		progress_clear(im);
		if (r == -EREMOTEIO) {
			client_report(im->what, 0, &im->failed);
			reply_clear(&im->failed);
		} else {
			client_report(im->what, r, NULL);
			fprintf(stderr, "enclavectl: %s: the commit may or may not have "
					"happened; check with 'enclavectl dataset show %s'\n",
				im->what, name);
		}
		client_close(&im->c);
		return 1;
	}
	client_close(&im->c);
	progress_clear(im);
	take_totals(im, rep.result);
	secs = (double)(now_monotonic_ns() - im->t0_ns) / 1e9;
	if (ctl->json) {
		r = out_json(rep.result) < 0;
	} else {
		char s1[24];

		printf("imported %s version %s: %" PRIu64 " files, %" PRIu64 " dirs, %" PRIu64
		       " bytes in %.1f s (%.1f MB/s)\n",
		       name, out_member(rep.result, "version", s1), im->files, im->dirs, im->bytes,
		       secs, secs > 0 ? (double)im->bytes / secs / 1e6 : 0.0);
		if (im->reused_files)
			printf("  %" PRIu64 " unchanged files (%" PRIu64 " bytes) share the objects "
			       "of the previous version: stored %" PRIu64 " new bytes\n",
			       im->reused_files, im->reused_bytes, im->bytes - im->reused_bytes);
	}
	reply_clear(&rep);
	return r;
}

/* ---- set ----------------------------------------------------------------------------------- */

static int dataset_set(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "duo", required_argument, NULL, OPT_DUO },
		{ "controller", required_argument, NULL, OPT_CONTROLLER },
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ "retain-until", required_argument, NULL, OPT_RETAIN },
		{ 0 },
	};
	char name[STORE_DATASET_NAME_MAX + 1], what[200];
	struct policy_opts po = { .what = "dataset set" };
	struct reply rep = { 0 };
	uint32_t version;
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "dataset set", set_usage, argc, argv, opts, on_import_opt, &po, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("dataset set", "missing NAME");
	if (first + 1 < argc)
		return ctl_usage_error("dataset set", "unexpected argument '%s'", argv[first + 1]);
	if (!po.duo && !po.controller && !po.cache && !po.retain_set)
		return ctl_usage_error("dataset set", "nothing to set: give --cache, --duo, "
					"--controller or --retain-until");
	r = ctl_parse_dataset("dataset set", argv[first], name, &version);
	if (r)
		return r;
	if (version)
		return ctl_usage_error("dataset set", "settings are per dataset: give the name "
					"without @VERSION");
	snprintf(what, sizeof(what), "dataset set %s", name);
	args = json_pack("{s:s}", "dataset", name);
	if (args && policy_args(args, &po) < 0)
		json_decref(args), args = NULL;
	if (args && po.dry_run && json_object_set_new(args, "dry_run", json_true()) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail(what, "out of memory");
	r = ctl_call(ctl, what, "dataset.set", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	if (po.dry_run)
		printf("%s: dry run: the settings are valid; nothing was recorded\n", name);
	else
		printf("%s: settings recorded\n", name);
	{
		const json_t *sus = json_object_get(rep.result, "suspends"), *g;
		const json_t *res = json_object_get(rep.result, "resumes");
		char s1[24], s2[24], s3[24], s4[24], s5[24], s6[24], text[200];
		size_t i;

		/* One scratch buffer per member: out_member() may format into it. */
		json_array_foreach(sus, i, g)
			printf("  suspends grant %s (%s:%s): consent code %s (%s) excludes purpose "
			       "%s\n", out_member(g, "id", s1), out_member(g, "kind", s2),
			       out_text(out_member(g, "principal", s3), 64, text, sizeof(text)),
			       out_member(g, "consent_code", s4), out_member(g, "consent_code_id", s5),
			       out_member(g, "purpose_code", s6));
		json_array_foreach(res, i, g)
			printf("  resumes grant %" JSON_INTEGER_FORMAT ": the consent codes allow "
			       "its purpose again\n", json_integer_value(g));
	}
	reply_clear(&rep);
	return 0;
}


/* ---- Erasure (docs/FORMAT.md 3.7, 3.8; docs/POLICY.md "Erasure") ------------------------------ */

static const char erase_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] dataset erase NAME[@VERSION] --reason TEXT\n"
	"           [--revoke-grants]\n\n"
	"Ask to erase version VERSION of dataset NAME, or the whole dataset without @VERSION.\n"
	"It is carried out when as many other stewards as the store's `approvals` setting have\n"
	"run 'enclavectl dataset erase-approve ID' (at once when the setting is 0): its keys are\n"
	"destroyed (crypto-shredding: no copy of the store's packs and index, even one taken\n"
	"before, can then be decrypted with the store's keys; only a copy of keys/ from before\n"
	"the erasure, with the passphrase, could), its records are removed from the index, the\n"
	"mount stops showing it and open files stop reading at once. The erasure is recorded in\n"
	"the signed audit log ('dataset erasure-proof' prints the proof). Refused while a grant\n"
	"in force names only what would be erased, unless --revoke-grants (they are revoked when\n"
	"the erasure is carried out). The last version of a dataset is erased with the dataset.\n"
	"This cannot be undone. Stewards only.\n\n"
	"Options:\n"
	"  --reason TEXT      why (required, recorded)\n"
	"  --revoke-grants    revoke the grants that name only what is erased\n"
	"  --json             print the daemon's answer as JSON\n"
	"  -h, --help         show this help\n";

static const char erase_approve_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] dataset erase-approve ID\n\n"
	"Approve erasure request ID (see 'dataset erasures'), asked by another steward. The\n"
	"approval that completes it carries the erasure out at once. Stewards only.\n\n"
	"Options:\n"
	"  --json        print the daemon's answer as JSON\n"
	"  -h, --help    show this help\n";

static const char erasures_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] dataset erasures\n\n"
	"List the erasure requests: pending, approved and carried out. Stewards and auditors.\n\n"
	"Options:\n"
	"  --json        print the daemon's answer as JSON\n"
	"  -h, --help    show this help\n";

static const char proof_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] dataset erasure-proof NAME[@VERSION]\n"
	"           [--output FILE] [--record-output FILE]\n\n"
	"Print the proof that VERSION of NAME (or the whole dataset) was erased: the erasure's\n"
	"record in the audit log (clear: the erasure id, the dataset id and version, the\n"
	"version's manifest, the ids of the destroyed keys, the key ring's new generation and\n"
	"digest; sealed: names, reason, who asked and approved) and an inclusion proof of it in\n"
	"the C2SP tlog-proof form, whose checkpoint is a C2SP signed note by the log's key. A\n"
	"data controller keeps both and checks them offline with the log's verifier key:\n"
	"'enclavectl audit check-proof PROOF --record FILE --key VKEY'. Stewards and auditors.\n\n"
	"Options:\n"
	"  --output FILE          write the proof to FILE (created, not overwritten)\n"
	"  --record-output FILE   write the record's line to FILE (created, not overwritten)\n"
	"  --json                 print {\"erasure_id\", \"seq\", \"proof\", \"record\"}\n"
	"  -h, --help             show this help\n";

enum { OPT_REASON = 0x300, OPT_REVOKE_GRANTS, OPT_OUTPUT, OPT_RECORD_OUTPUT };

struct erase_opts {
	const char *reason;
	bool revoke_grants;
	const char *output, *record_output;
};

static int on_erase_opt(void *ctx, int val, const char *arg)
{
	struct erase_opts *o = ctx;

	switch (val) {
	case OPT_REASON:
		o->reason = arg;
		return 0;
	case OPT_REVOKE_GRANTS:
		o->revoke_grants = true;
		return 0;
	case OPT_OUTPUT:
		o->output = arg;
		return 0;
	case OPT_RECORD_OUTPUT:
		o->record_output = arg;
		return 0;
	}
	return EXIT_USAGE;
}

static void print_erasure(const json_t *x)
{
	char s1[24], s2[24], s3[24], s4[24], text[600];

	printf("erasure %s: %s%s%s, %s (%s of %s approvals)\n", out_member(x, "id", s1),
	       out_text(json_string_value(json_object_get(x, "dataset")), 128, text, sizeof(text)),
	       json_integer_value(json_object_get(x, "version")) ? "@" : "",
	       json_integer_value(json_object_get(x, "version")) ? out_member(x, "version", s2) :
								     " (the whole dataset)",
	       json_string_value(json_object_get(x, "state")), out_member(x, "approvals", s3),
	       out_member(x, "approvals_required", s4));
	printf("  reason  %s\n",
	       out_text(json_string_value(json_object_get(x, "reason")), 0, text, sizeof(text)));
}

static int dataset_erase(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "reason", required_argument, NULL, OPT_REASON },
		{ "revoke-grants", no_argument, NULL, OPT_REVOKE_GRANTS },
		{ 0 },
	};
	char name[STORE_DATASET_NAME_MAX + 1], what[200], s1[24];
	struct erase_opts o = { 0 };
	struct reply rep = { 0 };
	const json_t *x, *res;
	uint32_t version;
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "dataset erase", erase_usage, argc, argv, opts, on_erase_opt, &o, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("dataset erase", "missing NAME[@VERSION]");
	if (first + 1 < argc)
		return ctl_usage_error("dataset erase", "unexpected argument '%s'", argv[first + 1]);
	if (!o.reason || !*o.reason || strlen(o.reason) > POLICY_REASON_MAX ||
	    !out_utf8_valid(o.reason, strlen(o.reason)))
		return ctl_usage_error("dataset erase", "--reason TEXT is required: 1 to %d bytes of "
				       "UTF-8", POLICY_REASON_MAX);
	r = ctl_parse_dataset("dataset erase", argv[first], name, &version);
	if (r)
		return r;
	snprintf(what, sizeof(what), "dataset erase %s", argv[first]);
	args = json_pack("{s:s, s:I, s:s, s:b}", "dataset", name, "version", (json_int_t)version,
			 "reason", o.reason, "revoke_grants", o.revoke_grants);
	if (!args)
		return ctl_fail(what, "out of memory");
	r = ctl_call(ctl, what, "dataset.erase", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	x = json_object_get(rep.result, "erasure");
	res = json_object_get(rep.result, "result");
	if (res)
		printf("erased: %s keys destroyed, key ring now at generation %s\n",
		       json_string_value(json_object_get(res, "key_ids")) ? "its" : "the",
		       out_member(res, "ring_generation", s1));
	else
		printf("erasure requested: it is carried out when another steward runs "
		       "'enclavectl dataset erase-approve %s'\n", out_member(x, "id", s1));
	print_erasure(x);
	reply_clear(&rep);
	return 0;
}

static int dataset_erase_approve(struct ctl *ctl, int argc, char **argv)
{
	char what[64], s1[24];
	struct reply rep = { 0 };
	unsigned long long id;
	char *end = NULL;
	json_t *args;
	int first, r;

	r = ctl_parse_none(ctl, "dataset erase-approve", erase_approve_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first + 1 != argc)
		return ctl_usage_error("dataset erase-approve", "give exactly one ID");
	errno = 0;
	id = strtoull(argv[first], &end, 10);
	if (errno || !end || *end || !*argv[first] || id == 0 || id > INT64_MAX)
		return ctl_usage_error("dataset erase-approve", "ID '%.40s' is not an erasure id",
				       argv[first]);
	snprintf(what, sizeof(what), "dataset erase-approve %llu", id);
	args = json_pack("{s:I}", "id", (json_int_t)id);
	if (!args)
		return ctl_fail(what, "out of memory");
	r = ctl_call(ctl, what, "dataset.erase_approve", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	if (json_object_get(rep.result, "result"))
		printf("approved and erased; key ring now at generation %s\n",
		       out_member(json_object_get(rep.result, "result"), "ring_generation", s1));
	else
		printf("approval recorded: more approvals are needed\n");
	print_erasure(json_object_get(rep.result, "erasure"));
	reply_clear(&rep);
	return 0;
}

static int dataset_erasures(struct ctl *ctl, int argc, char **argv)
{
	struct reply rep = { 0 };
	const json_t *x;
	size_t i;
	int first, r;

	r = ctl_parse_none(ctl, "dataset erasures", erasures_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("dataset erasures", "unexpected argument '%s'", argv[first]);
	r = ctl_call(ctl, "dataset erasures", "dataset.erasures", json_object(), NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	json_array_foreach(json_object_get(rep.result, "erasures"), i, x)
		print_erasure(x);
	reply_clear(&rep);
	return 0;
}

/* Write text to a new file (never over an existing one). */
static int write_new(const char *what, const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	int r;

	if (fd < 0)
		return ctl_fail(what, "%s: %s", path, strerror(errno));
	r = pwrite_all(fd, text, strlen(text), 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		return ctl_fail(what, "%s: %s", path, strerror(-r));
	return 0;
}

static int dataset_erasure_proof(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "record-output", required_argument, NULL, OPT_RECORD_OUTPUT },
		{ 0 },
	};
	char name[STORE_DATASET_NAME_MAX + 1], what[200];
	struct erase_opts o = { 0 };
	struct reply rep = { 0 };
	const char *proof, *record;
	uint32_t version;
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "dataset erasure-proof", proof_usage, argc, argv, opts, on_erase_opt, &o,
		      &first);
	if (r >= 0)
		return r;
	if (first + 1 != argc)
		return ctl_usage_error("dataset erasure-proof", "give exactly one NAME[@VERSION]");
	r = ctl_parse_dataset("dataset erasure-proof", argv[first], name, &version);
	if (r)
		return r;
	snprintf(what, sizeof(what), "dataset erasure-proof %s", argv[first]);
	args = json_pack("{s:s, s:I}", "dataset", name, "version", (json_int_t)version);
	if (!args)
		return ctl_fail(what, "out of memory");
	r = ctl_call(ctl, what, "dataset.erasure_proof", args, NULL, NULL, &rep);
	if (r)
		return r;
	proof = json_string_value(json_object_get(rep.result, "proof"));
	record = json_string_value(json_object_get(rep.result, "record"));
	if (!proof || !record) {
		reply_clear(&rep);
		return ctl_fail(what, "the daemon's answer holds no proof");
	}
	if (o.record_output) {
		char *line = malloc(strlen(record) + 2);

		if (!line) {
			reply_clear(&rep);
			return ctl_fail(what, "out of memory");
		}
		snprintf(line, strlen(record) + 2, "%s\n", record);
		r = write_new(what, o.record_output, line);
		free(line);
		if (r) {
			reply_clear(&rep);
			return r;
		}
	}
	if (o.output) {
		r = write_new(what, o.output, proof);
		if (r) {
			reply_clear(&rep);
			return r;
		}
	}
	if (ctl->json)
		return ctl_print_json(&rep);
	if (!o.output)
		fputs(proof, stdout);
	if (!o.record_output)
		printf("%s\n", record);
	reply_clear(&rep);
	return 0;
}

const struct ctl_cmd dataset_cmds[] = {
	{ "list", dataset_list, "", "list datasets" },
	{ "show", dataset_show, "NAME[@VERSION]", "a dataset and its versions" },
	{ "import", dataset_import, "NAME DIR",
	  "import DIR as the next version of NAME" },
	{ "set", dataset_set, "NAME --cache|--duo|--controller", "change a dataset's settings" },
	{ "erase", dataset_erase, "NAME[@VERSION] --reason TEXT",
	  "erase a version or a dataset (with approvals)" },
	{ "erase-approve", dataset_erase_approve, "ID", "approve another steward's erasure" },
	{ "erasures", dataset_erasures, "", "list erasure requests" },
	{ "erasure-proof", dataset_erasure_proof, "NAME[@VERSION]",
	  "the signed proof that it was erased" },
	{ 0 },
};
