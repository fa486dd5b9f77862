/* enclavectl export request | approve | run | list | show: files of a dataset version sent out as
 * Crypt4GH files for one recipient's public key, under the approval rule (docs/CRYPT4GH.md
 * section 7).
 *
 * A steward asks (request); as many other stewards as the store's approvals setting says approve
 * (approve), as for grants; then a steward runs it, once (run): enclavectl creates the output
 * files in --out DIR and hands the daemon their descriptors, and the daemon writes Crypt4GH into
 * them. Plaintext never leaves the daemon; the run is recorded with the recipient key's
 * fingerprint and each file's SHA-256 before the command reports success, and a run that cannot
 * be recorded leaves no output behind.
 *
 * `enclavectl export NAME@VERSION PATH... --recipient-key FILE --out DIR` is `export request`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "crypto/crypt4gh.h"
#include "policy/policy.h"

#define EXPORT_FILES_MAX 64

static const char request_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] export request NAME[@VERSION] PATH...\n"
	"           --recipient-key FILE --out DIR [--reason TEXT]\n"
	"       enclavectl [GLOBAL OPTIONS] export NAME@VERSION PATH... --recipient-key FILE\n"
	"           --out DIR [--reason TEXT]\n\n"
	"Ask to send files of a dataset version (the latest without @VERSION) to the holder of a\n"
	"Crypt4GH public key (FILE, the standard format). The request is recorded; when the\n"
	"store needs approvals (init --approvals N, as for grants), as many other stewards must\n"
	"run 'enclavectl export approve ID', and then 'enclavectl export run ID --out DIR'\n"
	"writes the files. A store that needs none runs it at once into DIR. At most 64 files.\n"
	"Stewards only.\n\n"
	"Options:\n"
	"  --recipient-key FILE  the recipient's Crypt4GH public key\n"
	"  --out DIR             where the .c4gh files go (created; files must not exist)\n"
	"  --reason TEXT         why (recorded, shown to the approvers)\n"
	"  --json                print the export as JSON\n"
	"  -h, --help            show this help\n";

static const char approve_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] export approve ID\n\n"
	"Approve another steward's export request (never one's own). Recorded. Stewards only.\n\n"
	"Options:\n"
	"  --json       print the export as JSON\n"
	"  -h, --help   show this help\n";

static const char run_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] export run ID --out DIR\n\n"
	"Write an approved export: for each of its files, DIR/PATH.c4gh (directories made as\n"
	"needed, mode 0700; files mode 0600, which must not exist), encrypted by the daemon for\n"
	"the recipient's key: Crypt4GH, method chacha20_ietf_poly1305, one header packet, a\n"
	"fresh data key and writer key per file. Nothing is written in clear. The run is\n"
	"recorded (export_run) with the recipient key's fingerprint and each file's SHA-256,\n"
	"before success is reported; if it cannot be, the files are removed. An export runs\n"
	"once. Refused while the daemon refuses the dataset (its index disagrees with the\n"
	"signed log). Stewards only.\n\n"
	"Options:\n"
	"  --out DIR    where the files go\n"
	"  --json       print the export and its files as JSON\n"
	"  -h, --help   show this help\n";

static const char list_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] export list\n\n"
	"Every export request: id, dataset and version, files, recipient key fingerprint, state\n"
	"(pending_approval, approved, done). Stewards and auditors.\n\n"
	"Options:\n"
	"  --json       print them as JSON\n"
	"  -h, --help   show this help\n";

static const char show_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] export show ID\n\n"
	"One export request, with its files and approvals. Stewards and auditors.\n\n"
	"Options:\n"
	"  --json       print it as JSON\n"
	"  -h, --help   show this help\n";

enum { OPT_RECIPIENT = 0x200, OPT_OUT, OPT_REASON };

struct xopts {
	const char *what;
	const char *key, *out, *reason;
};

static int on_opt(void *ctx, int val, const char *arg)
{
	struct xopts *o = ctx;

	if (val == OPT_RECIPIENT)
		o->key = arg;
	else if (val == OPT_OUT)
		o->out = arg;
	else if (val == OPT_REASON) {
		if (strlen(arg) > POLICY_REASON_MAX || !out_utf8_valid(arg, strlen(arg)))
			return ctl_usage_error(o->what, "--reason: 1 to %d bytes of UTF-8",
					       POLICY_REASON_MAX);
		o->reason = arg;
	} else {
		return EXIT_USAGE;
	}
	return 0;
}

static void print_export(const json_t *x)
{
	char s1[24], s2[24], text[OUT_TEXT_SIZE(4096)];
	const json_t *paths = json_object_get(x, "paths");

	printf("export %s: %s@%s, %zu file%s, for key %s\n", out_member(x, "id", s1),
	       out_text(out_member(x, "dataset", s2), 128, text, sizeof(text)),
	       out_member(x, "version", s1), json_array_size(paths),
	       json_array_size(paths) == 1 ? "" : "s", out_member(x, "recipient_fingerprint", s2));
	printf("  state     %s (%s of %s approvals)\n", out_member(x, "state", s1),
	       out_member(x, "approvals", s2), out_member(x, "approvals_required", s1));
	printf("  asked by  %s at %s\n", out_text(out_member(x, "requested_by", s1), 64, text,
						  sizeof(text)),
	       out_member(x, "requested_at", s2));
	if (*out_member(x, "reason", s1))
		printf("  reason    %s\n", out_text(out_member(x, "reason", s1), 0, text,
						     sizeof(text)));
	for (size_t i = 0; i < json_array_size(paths); i++)
		printf("  file      %s\n", out_text(json_string_value(json_array_get(paths, i)), 0,
						     text, sizeof(text)));
}

/* Make DIR/<path>.c4gh for each path: parent directories 0700 as needed, the file O_EXCL 0600.
 * fds[i] and names[i] (malloc'd) for each; on failure what was made is removed. */
static int make_outputs(const char *what, const char *dir, const json_t *paths, int *fds,
			char **names)
{
	size_t n = json_array_size(paths), i;
	int r = 0;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return ctl_fail(what, "%s: %s", dir, strerror(errno));
	for (i = 0; i < n; i++) {
		const char *p = json_string_value(json_array_get(paths, i));
		char *name = NULL;

		if (!p || strstr(p, "..") || p[0] == '/') {
			r = ctl_fail(what, "the daemon named an unsafe path");
			break;
		}
		if (asprintf(&name, "%s/%s.c4gh", dir, p) < 0) {
			r = ctl_fail(what, "out of memory");
			break;
		}
		for (char *s = name + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
			*s = '\0';
			if (mkdir(name, 0700) < 0 && errno != EEXIST)
				r = ctl_fail(what, "%s: %s", name, strerror(errno));
			*s = '/';
			if (r)
				break;
		}
		fds[i] = r ? -1 : open(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
				       0600);
		if (!r && fds[i] < 0)
			r = ctl_fail(what, "%s: %s", name, strerror(errno));
		names[i] = name;
		if (r) {
			if (fds[i] < 0) {
				free(name);
				names[i] = NULL;
			}
			break;
		}
	}
	if (r) {
		for (size_t j = 0; j < n && j <= i; j++) {
			if (names[j]) {
				if (fds[j] >= 0)
					unlink(names[j]);
				free(names[j]);
				names[j] = NULL;
			}
			if (fds[j] >= 0)
				close(fds[j]);
			fds[j] = -1;
		}
	}
	return r;
}

/* Run export id into dir. */
static int run_export(struct ctl *ctl, const char *what, unsigned long long id, const char *dir)
{
	int fds[EXPORT_FILES_MAX];
	char *names[EXPORT_FILES_MAX] = { 0 }, sock[4096], s1[24];
	struct reply rep = { 0 }, show = { 0 };
	struct client c = { .sock = -1 };
	const json_t *paths;
	size_t n;
	int r;

	for (size_t i = 0; i < EXPORT_FILES_MAX; i++)
		fds[i] = -1;
	r = ctl_call(ctl, what, "export.show", json_pack("{s:I}", "id", (json_int_t)id), NULL, NULL,
		     &show);
	if (r)
		return r;
	paths = json_object_get(json_object_get(show.result, "export"), "paths");
	n = json_array_size(paths);
	if (n == 0 || n > EXPORT_FILES_MAX) {
		reply_clear(&show);
		return ctl_fail(what, "export %llu names %zu files", id, n);
	}
	r = make_outputs(what, dir, paths, fds, names);
	if (r) {
		reply_clear(&show);
		return r;
	}
	if (ctl_socket_path(ctl, sock, sizeof(sock)) < 0) {
		r = ctl_fail(what, "the socket path is too long");
		goto out;
	}
	r = client_connect(sock, client_daemon_uid(ctl->store_dir), &c);
	if (r < 0) {
		r = client_report_connect(what, sock, r);
		goto out;
	}
	r = client_call_fds(&c, "export.run", json_pack("{s:I}", "id", (json_int_t)id), fds, n,
			    NULL, NULL, &rep);
	if (r < 0 || !rep.ok) {
		r = client_report(what, r, &rep);
		goto out;
	}
	if (ctl->json) {
		r = ctl_print_json(&rep);
	} else {
		const json_t *files = json_object_get(rep.result, "files");

		for (size_t i = 0; i < json_array_size(files); i++) {
			const json_t *f = json_array_get(files, i);
			char text[OUT_TEXT_SIZE(4096)];

			printf("%s  %s  (%s bytes)\n", out_member(f, "sha256", s1),
			       out_text(names[i], 0, text, sizeof(text)),
			       out_member(f, "file_bytes", s1));
		}
		if (!ctl->quiet)
			fprintf(stderr, "export %llu written to %s and recorded: %zu file%s for key "
				"%s\n", id, dir, n, n == 1 ? "" : "s",
				json_string_value(json_object_get(json_object_get(rep.result,
										  "export"),
								  "recipient_fingerprint")));
		r = 0;
	}
out:
	client_close(&c);
	for (size_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		/* A run that failed leaves nothing (the daemon emptied them; they go too). */
		if (r && names[i])
			unlink(names[i]);
		free(names[i]);
	}
	reply_clear(&rep);
	reply_clear(&show);
	return r;
}

static int x_request(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "recipient-key", required_argument, NULL, OPT_RECIPIENT },
		{ "out", required_argument, NULL, OPT_OUT },
		{ "reason", required_argument, NULL, OPT_REASON },
		{ 0 },
	};
	struct xopts o = { .what = "export request" };
	char name[129], key[C4GH_PUBKEY_TEXT_MAX * 2], s1[24];
	struct reply rep = { 0 };
	uint8_t pk[C4GH_KEY_LEN];
	uint32_t version = 0;
	uint64_t id;
	const json_t *x;
	json_t *args, *paths;
	ssize_t kn;
	int first, r, fd;

	r = ctl_parse(ctl, o.what, request_usage, argc, argv, opts, on_opt, &o, &first);
	if (r >= 0)
		return r;
	if (argc - first < 2)
		return ctl_usage_error(o.what, "missing %s", argc == first ? "NAME and PATH"
									   : "PATH");
	if (argc - first - 1 > EXPORT_FILES_MAX)
		return ctl_usage_error(o.what, "at most %d files in one export", EXPORT_FILES_MAX);
	if (!o.key || !o.out)
		return ctl_usage_error(o.what, "--recipient-key FILE and --out DIR are required");
	r = ctl_parse_dataset(o.what, argv[first], name, &version);
	if (r)
		return r;
	fd = open(o.key, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ctl_fail(o.what, "%s: %s", o.key, strerror(errno));
	kn = read_full(fd, key, sizeof(key) - 1);
	close(fd);
	if (kn < 0)
		return ctl_fail(o.what, "%s: %s", o.key, strerror((int)-kn));
	key[kn] = '\0';
	err_clear();
	if (c4gh_pubkey_parse(key, (size_t)kn, pk) < 0)
		return ctl_fail(o.what, "%s: %s", o.key, err_detail());
	paths = json_array();
	for (int i = first + 1; paths && i < argc; i++)
		if (json_array_append_new(paths, json_string(argv[i])) < 0)
			json_decref(paths), paths = NULL;
	args = paths ? json_pack("{s:s, s:o, s:s, s:s}", "dataset", name, "paths", paths,
				 "recipient_key", key, "reason", o.reason ? o.reason : "")
		     : NULL;
	if (args && version && json_object_set_new(args, "version", json_integer(version)) < 0)
		json_decref(args), args = NULL;
	if (!args)
		return ctl_fail(o.what, "out of memory");
	r = ctl_call(ctl, o.what, "export.request", args, NULL, NULL, &rep);
	if (r)
		return r;
	x = json_object_get(rep.result, "export");
	if (!out_member_u64(x, "id", &id)) {
		reply_clear(&rep);
		return ctl_fail(o.what, "the daemon's reply has no export id");
	}
	if (strcmp(out_member(x, "state", s1), "approved") == 0) {
		reply_clear(&rep);
		return run_export(ctl, "export run", (unsigned long long)id, o.out);
	}
	if (ctl->json) {
		r = ctl_print_json(&rep);
	} else {
		print_export(x);
		printf("export %llu recorded: it needs another steward's 'enclavectl export approve "
		       "%llu', then 'enclavectl export run %llu --out %s'\n", (unsigned long long)id,
		       (unsigned long long)id, (unsigned long long)id, o.out);
		reply_clear(&rep);
	}
	return r;
}

static int one_id(struct ctl *ctl, int argc, char **argv, const char *what, const char *usage,
		  const char *op)
{
	struct reply rep = { 0 };
	unsigned long long id;
	int first, r;

	r = ctl_parse_none(ctl, what, usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error(what, "missing the export's ID");
	if (first + 1 < argc)
		return ctl_usage_error(what, "unexpected argument '%s'", argv[first + 1]);
	if ((r = ctl_parse_id(what, "export", argv[first], &id)))
		return r;
	r = ctl_call(ctl, what, op, json_pack("{s:I}", "id", (json_int_t)id), NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	print_export(json_object_get(rep.result, "export"));
	reply_clear(&rep);
	return 0;
}

static int x_approve(struct ctl *ctl, int argc, char **argv)
{
	return one_id(ctl, argc, argv, "export approve", approve_usage, "export.approve");
}

static int x_show(struct ctl *ctl, int argc, char **argv)
{
	return one_id(ctl, argc, argv, "export show", show_usage, "export.show");
}

static int x_run(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, NULL, OPT_OUT },
		{ 0 },
	};
	struct xopts o = { .what = "export run" };
	unsigned long long id;
	int first, r;

	r = ctl_parse(ctl, o.what, run_usage, argc, argv, opts, on_opt, &o, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error(o.what, "missing the export's ID");
	if (first + 1 < argc)
		return ctl_usage_error(o.what, "unexpected argument '%s'", argv[first + 1]);
	if (!o.out)
		return ctl_usage_error(o.what, "--out DIR is required");
	if ((r = ctl_parse_id(o.what, "export", argv[first], &id)))
		return r;
	return run_export(ctl, o.what, id, o.out);
}

static int x_list(struct ctl *ctl, int argc, char **argv)
{
	static const char *const head[] = { "ID", "DATASET", "VERSION", "FILES", "KEY", "STATE" };
	struct reply rep = { 0 };
	struct table t;
	const json_t *list;
	int first, r;

	r = ctl_parse_none(ctl, "export list", list_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("export list", "unexpected argument '%s'", argv[first]);
	r = ctl_call(ctl, "export list", "export.list", json_object(), NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	list = json_object_get(rep.result, "exports");
	table_init(&t, 6, head);
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *x = json_array_get(list, i);
		char a[24], b[24], c[24], d[24], fp[17];
		const char *cells[6];

		snprintf(d, sizeof(d), "%zu", json_array_size(json_object_get(x, "paths")));
		snprintf(fp, sizeof(fp), "%.16s", out_member(x, "recipient_fingerprint", c));
		cells[0] = out_member(x, "id", a);
		cells[1] = out_member(x, "dataset", b);
		cells[2] = out_member(x, "version", c);
		cells[3] = d;
		cells[4] = fp;
		cells[5] = json_string_value(json_object_get(x, "state"));
		if (!cells[5])
			cells[5] = "?";
		if (table_add(&t, cells, NULL) < 0)
			break;
	}
	r = table_print(&t) < 0 ? 1 : 0;
	table_free(&t);
	reply_clear(&rep);
	return r;
}

const struct ctl_cmd export_cmds[] = {
	{ "approve", x_approve, "ID", "approve another steward's export" },
	{ "list", x_list, "", "list export requests" },
	{ "request", x_request, "NAME[@V] PATH... --recipient-key F --out DIR",
	  "ask to send files as Crypt4GH to a key" },
	{ "run", x_run, "ID --out DIR", "write an approved export (once)" },
	{ "show", x_show, "ID", "an export request and its state" },
	{ 0 },
};
