/* enclavectl: global options, the dispatch table of objects and commands, usage. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "store/store.h"

#ifndef ENCLAVE_VERSION
#define ENCLAVE_VERSION "unknown"
#endif

/* Values of the global long options; commands use 0x200 and up, or characters. */
enum {
	OPT_SOCKET = 0x100,
	OPT_STORE,
	OPT_JSON,
	OPT_VERSION,
};

/* Accepted before the object and after any command. */
static const struct option global_opts[] = {
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "store", required_argument, NULL, OPT_STORE },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
};

/* An object: a group of commands (cmds), or a command of its own (run). */
struct ctl_object {
	const char *name;
	const struct ctl_cmd *cmds;  /* NULL-name-terminated, or NULL */
	int (*run)(struct ctl *ctl, int argc, char **argv);
	const char *args;
	const char *summary;
};

static const struct ctl_object objects[] = {
	{ "init", NULL, cmd_init, "--store DIR [OPTIONS]", "create a store (offline, no daemon)" },
	{ "status", NULL, cmd_status, "", "the daemon's state" },
	{ "whoami", NULL, cmd_whoami, "", "who the daemon takes you for, and your roles" },
	{ "dataset", dataset_cmds, NULL, NULL, "Datasets and their versions" },
	{ "grant", grant_cmds, NULL, NULL,
	  "Grants: who may read which dataset, for what, until when" },
	{ "deny", deny_cmds, NULL, NULL, "Deny rules: block access whatever the grants say" },
	{ "access", access_cmds, NULL, NULL, "Why a user may or may not read a dataset" },
	{ "audit", audit_cmds, NULL, NULL,
	  "The audit trail: who read what, when, under which grant" },
	{ "policy", policy_cmds, NULL, NULL,
	  "The policy records against the signed audit log (offline rebuild)" },
};

static const char global_help[] =
	"Global options (also accepted after the command):\n"
	"  --socket PATH   the daemon's control socket (default: $ENCLAVE_SOCKET, else\n"
	"                  DIR/run/control.sock with --store DIR, else\n"
	"                  " CTL_DEFAULT_STORE "/" CTL_SOCKET_NAME ")\n"
	"  --store DIR     the store directory\n"
	"  --json          print data as JSON\n"
	"  -q, --quiet     no progress output\n"
	"  -h, --help      show help (at every level: enclavectl grant add --help)\n"
	"  --version       print the version\n";

static void usage_top(FILE *f)
{
	fprintf(f, "Usage: enclavectl [GLOBAL OPTIONS] <object> <command> [ARGS]\n\n"
		   "Manage an Enclave store: import datasets, grant and revoke access, read the "
		   "audit trail.\n\nCommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(objects); i++) {
		const struct ctl_object *o = &objects[i];

		if (o->run) {
			fprintf(f, "  %-7s %-30s %s\n", o->name, o->args, o->summary);
			continue;
		}
		for (const struct ctl_cmd *c = o->cmds; c->name; c++) {
			char head[64];

			snprintf(head, sizeof(head), "%s %s", c->name, c->args);
			fprintf(f, "  %-7s %-30s %s\n", o->name, head, c->summary);
		}
	}
	fprintf(f, "\n%s\nRun 'enclavectl <object> <command> --help' for a command's options.\n",
		global_help);
}

static void usage_object(FILE *f, const struct ctl_object *o)
{
	fprintf(f, "Usage: enclavectl [GLOBAL OPTIONS] %s <command> [ARGS]\n\n%s.\n\nCommands:\n",
		o->name, o->summary);
	for (const struct ctl_cmd *c = o->cmds; c->name; c++)
		fprintf(f, "  %-8s %-30s %s\n", c->name, c->args, c->summary);
	fprintf(f, "\n%s\nRun 'enclavectl %s <command> --help' for a command's options.\n",
		global_help, o->name);
}

__attribute__((format(printf, 2, 0))) static void vmessage(const char *what, const char *fmt,
							  va_list ap)
{
	fputs("enclavectl: ", stderr);
	if (what && *what)
		fprintf(stderr, "%s: ", what);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

int ctl_usage_error(const char *what, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage(what, fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try 'enclavectl%s%s --help'.\n", what && *what ? " " : "",
		what ? what : "");
	return EXIT_USAGE;
}

int ctl_fail(const char *what, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage(what, fmt, ap);
	va_end(ap);
	return 1;
}

/* The usage text names commands without their arguments ("grant revoke", not "grant revoke 7"):
 * the first two words of `what` at most. */
static void help_name(const char *what, char out[static 64])
{
	size_t n = 0, words = 0;

	while (what[n] && n < 63) {
		if (what[n] == ' ' && ++words == 2)
			break;
		n++;
	}
	memcpy(out, what, n);
	out[n] = '\0';
}

/* The common parser. stop_at_arg: stop at the first positional argument (levels that dispatch
 * further), else GNU permutation so options may follow arguments. top: the level where --version
 * is accepted. */
static int parse(struct ctl *ctl, const char *what, const char *usage, int argc, char **argv,
		 const struct option *opts, int (*on_opt)(void *ctx, int val, const char *arg),
		 void *ctx, bool stop_at_arg, bool top, int *ret_optind)
{
	static const struct option version_opt = { "version", no_argument, NULL, OPT_VERSION };
	_cleanup_free_ struct option *all = NULL;
	char name[64];
	size_t n = 0, k = 0;
	int c;

	help_name(what, name);
	while (opts && opts[n].name)
		n++;
	all = calloc(n + ARRAY_SIZE(global_opts) + 2, sizeof(*all));
	if (!all)
		return ctl_fail(what, "out of memory");
	for (size_t i = 0; i < n; i++)
		all[k++] = opts[i];
	for (size_t i = 0; i < ARRAY_SIZE(global_opts); i++)
		all[k++] = global_opts[i];
	if (top)
		all[k++] = version_opt;

	optind = 0;  /* glibc: start over, re-reading the option string's flags */
	opterr = 0;  /* we word the errors ourselves */
	while ((c = getopt_long(argc, argv, stop_at_arg ? "+:hq" : ":hq", all, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage, stdout);
			return 0;
		case 'q':
			ctl->quiet = true;
			break;
		case OPT_SOCKET:
			ctl->socket_path = optarg;
			break;
		case OPT_STORE:
			ctl->store_dir = optarg;
			break;
		case OPT_JSON:
			ctl->json = true;
			break;
		case OPT_VERSION:
			printf("enclavectl %s (control protocol %d)\n", ENCLAVE_VERSION, 1);
			return 0;
		case ':':
			return ctl_usage_error(name, "option '%s' needs an argument",
					       argv[optind - 1]);
		case '?':
			if (optopt && optopt < 0x100)
				return ctl_usage_error(name, "unknown option '-%c'", optopt);
			return ctl_usage_error(name, "unknown or malformed option '%s'",
					       argv[optind - 1]);
		default: {
			int r = on_opt ? on_opt(ctx, c, optarg) : EXIT_USAGE;

			if (r)
				return r;
			break;
		}
		}
	}
	*ret_optind = optind;
	return -1;
}

int ctl_parse(struct ctl *ctl, const char *what, const char *usage, int argc, char **argv,
	      const struct option *opts, int (*on_opt)(void *ctx, int val, const char *arg),
	      void *ctx, int *ret_optind)
{
	return parse(ctl, what, usage, argc, argv, opts, on_opt, ctx, false, false, ret_optind);
}

int ctl_parse_none(struct ctl *ctl, const char *what, const char *usage, int argc, char **argv,
		   int *ret_optind)
{
	return parse(ctl, what, usage, argc, argv, NULL, NULL, NULL, false, false, ret_optind);
}

int ctl_socket_path(const struct ctl *ctl, char *out, size_t n)
{
	const char *env = getenv("ENCLAVE_SOCKET");
	int w;

	if (ctl->socket_path)
		w = snprintf(out, n, "%s", ctl->socket_path);
	else if (env && *env)
		w = snprintf(out, n, "%s", env);
	else
		w = snprintf(out, n, "%s/%s", ctl->store_dir ? ctl->store_dir : CTL_DEFAULT_STORE,
			     CTL_SOCKET_NAME);
	if (w < 0 || (size_t)w >= n)
		return -ENAMETOOLONG;
	return 0;
}

/* Split NAME[@VERSION]; version 0 when absent. EXIT_USAGE after a message on a bad one. */
int ctl_parse_dataset(const char *what, const char *arg, char name[static 129],
			      uint32_t *ret_version)
{
	const char *at = strchr(arg, '@');
	size_t n = at ? (size_t)(at - arg) : strlen(arg);
	uint32_t version = 0;

	if (n == 0 || n > STORE_DATASET_NAME_MAX)
		return ctl_usage_error(what, "not a dataset name: '%.140s'", arg);
	memcpy(name, arg, n);
	name[n] = '\0';
	if (!store_dataset_name_valid(name))
		return ctl_usage_error(what, "not a dataset name: '%.140s' (letters, digits, '.', "
					     "'_' and '-', not starting with '.' or '-')", name);
	if (at) {
		char *end;
		unsigned long long v;

		errno = 0;
		v = strtoull(at + 1, &end, 10);
		if (at[1] < '0' || at[1] > '9' || errno || *end || v == 0 || v > UINT32_MAX)
			return ctl_usage_error(what, "not a version: '%.40s' (a number from 1)",
					       at + 1);
		version = (uint32_t)v;
	}
	*ret_version = version;
	return 0;
}

static int run_object(struct ctl *ctl, const struct ctl_object *o, int argc, char **argv)
{
	char usage[4096];
	FILE *f;
	int optind_obj = 0, r;

	/* The object's own usage, for --help at this level. */
	f = fmemopen(usage, sizeof(usage), "w");
	if (!f)
		return ctl_fail(o->name, "out of memory");
	usage_object(f, o);
	fclose(f);
	usage[sizeof(usage) - 1] = '\0';

	r = parse(ctl, o->name, usage, argc, argv, NULL, NULL, NULL, true, false, &optind_obj);
	if (r >= 0)
		return r;
	if (optind_obj >= argc) {
		char list[256];
		size_t n = 0;

		list[0] = '\0';
		for (const struct ctl_cmd *c = o->cmds; c->name && n < sizeof(list); c++)
			n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s",
					      n ? ", " : "", c->name);
		return ctl_usage_error(o->name, "missing command (one of: %s)", list);
	}
	for (const struct ctl_cmd *c = o->cmds; c->name; c++)
		if (strcmp(c->name, argv[optind_obj]) == 0)
			return c->run(ctl, argc - optind_obj, argv + optind_obj);
	return ctl_usage_error(o->name, "unknown command '%s'", argv[optind_obj]);
}

int main(int argc, char **argv)
{
	struct ctl ctl = { 0 };
	char usage[8192];
	FILE *f;
	int first = 0, r = -1;

	f = fmemopen(usage, sizeof(usage), "w");
	if (!f)
		return ctl_fail(NULL, "out of memory");
	usage_top(f);
	fclose(f);
	usage[sizeof(usage) - 1] = '\0';

	r = parse(&ctl, "", usage, argc, argv, NULL, NULL, NULL, true, true, &first);
	if (r < 0) {
		if (first >= argc) {
			r = ctl_usage_error(NULL, "missing command");
		} else {
			const struct ctl_object *o = NULL;

			for (size_t i = 0; i < ARRAY_SIZE(objects) && !o; i++)
				if (strcmp(objects[i].name, argv[first]) == 0)
					o = &objects[i];
			if (!o)
				r = ctl_usage_error(NULL, "unknown command '%s'", argv[first]);
			else if (o->run)
				r = o->run(&ctl, argc - first, argv + first);
			else
				r = run_object(&ctl, o, argc - first, argv + first);
		}
	}
	/* Data goes to stdout: a full disk or a closed pipe must not pass for success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "enclavectl: cannot write the output: %s\n", strerror(errno));
		if (r == 0)
			r = 1;
	}
	return r;
}
