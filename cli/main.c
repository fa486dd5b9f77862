/* enclavectl: global options, the dispatch table of objects and commands, usage. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
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

static int cmd_help(struct ctl *ctl, int argc, char **argv);
static int cmd_completion(struct ctl *ctl, int argc, char **argv);

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
	{ "store", store_cmds, NULL, NULL,
	  "The store's space (garbage collection, usage) and format (offline upgrade)" },
	{ "crypt4gh", crypt4gh_cmds, NULL, NULL,
	  "The store's Crypt4GH key: what archives encrypt data for this site to" },
	{ "export", export_cmds, NULL, NULL,
	  "Files sent out as Crypt4GH to a recipient's key, with approvals" },
	{ "node", node_cmds, NULL, NULL,
	  "Compute nodes that serve the store without the passphrase (enrolment)" },
	{ "help", NULL, cmd_help, "[OBJECT [COMMAND]]", "show help (as --help does)" },
	{ "completion", NULL, cmd_completion, "bash", "print a bash completion script" },
};

static const char global_help[] =
	"Global options (also accepted after the command):\n"
	"  --socket PATH   the daemon's control socket (default: $ENCLAVE_SOCKET, else\n"
	"                  DIR/run/control.sock with --store DIR, else\n"
	"                  " CTL_DEFAULT_STORE "/" CTL_SOCKET_NAME ")\n"
	"  --store DIR     the store directory\n"
	"  --json          print data as JSON\n"
	"  -q, --quiet     no progress output\n"
	"  -h, --help      show help (at every level: enclavectl grant add --help, or\n"
	"                  enclavectl help grant add)\n"
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
	fprintf(f, "\n%s\nRun 'enclavectl <object> <command> --help' (or 'enclavectl help <object>\n"
		   "<command>') for a command's options. Objects and commands may be abbreviated\n"
		   "while unambiguous: 'enclavectl gr li' is 'enclavectl grant list'. With --json,\n"
		   "an error is also printed on stdout as {\"error\": {\"code\", \"command\",\n"
		   "\"message\"}} (docs/PROTOCOL.md).\n", global_help);
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

/* Where --help text goes: stdout, or a memory stream while `completion` collects options. */
static FILE *help_out;

/* --json anywhere on the command line: errors are also printed as one JSON object on stdout
 * (docs/PROTOCOL.md, "enclavectl --json"). Set by main() before anything is parsed. */
static bool json_errors;
/* Only the first error of a run becomes the JSON object. */
static bool json_error_done;

static void help_name(const char *what, char out[static 64]);

static void json_error(const char *code, const char *what, const char *message)
{
	char command[64];
	json_t *j;

	if (!json_errors || json_error_done)
		return;
	json_error_done = true;
	/* "command" names the command ("grant approve"), never its arguments, which the message
	 * quotes when they matter: the error object has one shape (docs/json/). */
	help_name(what ? what : "", command);
	j = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", code, "command", command,
		      "message", message);
	if (j)
		out_json(j);
	json_decref(j);
}

__attribute__((format(printf, 3, 0))) static void vmessage(const char *code, const char *what,
							  const char *fmt, va_list ap)
{
	char msg[4096], safe[OUT_TEXT_SIZE(sizeof(msg))];

	/* Messages quote names from the daemon, the source tree and the command line: shown
	 * through out_text like every other output (the JSON error keeps the exact text). */
	vsnprintf(msg, sizeof(msg), fmt, ap);
	fputs("enclavectl: ", stderr);
	if (what && *what)
		fprintf(stderr, "%s: ", out_text(what, 0, safe, sizeof(safe)));
	fprintf(stderr, "%s\n", out_text(msg, 0, safe, sizeof(safe)));
	json_error(code, what, msg);
}

int ctl_usage_error(const char *what, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage("usage", what, fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try 'enclavectl%s%s --help'.\n", what && *what ? " " : "",
		what ? what : "");
	return EXIT_USAGE;
}

int ctl_parse_id(const char *what, const char *noun, const char *s, unsigned long long *ret)
{
	unsigned long long id;
	char *end;

	/* strtoull() alone would take " 7", "+7" and "-7" (as 2^64 - 7). */
	errno = 0;
	id = strtoull(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || errno || *end || id == 0 ||
	    id > (unsigned long long)INT64_MAX)
		return ctl_usage_error(what, "not %s %s id: '%.40s'",
				       strchr("aeiou", noun[0]) ? "an" : "a", noun, s);
	*ret = id;
	return 0;
}

int ctl_fail(const char *what, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage("error", what, fmt, ap);
	va_end(ap);
	return 1;
}

int ctl_fail_code(const char *code, const char *what, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage(code, what, fmt, ap);
	va_end(ap);
	return 1;
}

int ctl_confirm(const char *what, const char *question, bool yes)
{
	char answer[16];

	if (yes)
		return 0;
	if (!isatty(STDIN_FILENO))
		return ctl_usage_error(what, "%s Without a terminal to ask on, run it again with "
				       "--yes to go ahead", question);
	fprintf(stderr, "%s Go ahead? [y/N] ", question);
	fflush(stderr);
	if (!fgets(answer, sizeof(answer), stdin) ||
	    (strcmp(answer, "y\n") != 0 && strcmp(answer, "yes\n") != 0 &&
	     strcmp(answer, "Y\n") != 0))
		return ctl_fail_code("cancelled", what, "cancelled: nothing was changed");
	return 0;
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
			fputs(usage, help_out ? help_out : stdout);
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

/* ---- Which commands print JSON -------------------------------------------------------------- */

/* The commands whose output is not data, so --json has nothing to print: it is refused (a usage
 * error, as a JSON error object) rather than ignored. Every other command prints, with --json,
 * one JSON document (`audit show`: one per line) whose shape docs/json/enclavectl.schema.json
 * gives under the command's name; `enclavectl help --json` lists them, and test_e2e_json runs
 * each against that schema, so a new command without one fails the test. */
static const char *const no_json_cmds[] = {
	"init",             /* creates a store; what it made goes to the terminal */
	"completion",       /* a bash script */
	"audit new-log",    /* offline repair, one sentence */
	"audit legacy",     /* offline conversion, one sentence */
	"store upgrade",    /* offline conversion, progress on stderr */
	NULL,
};

static bool prints_json(const char *name)
{
	for (size_t i = 0; no_json_cmds[i]; i++)
		if (strcmp(no_json_cmds[i], name) == 0)
			return false;
	return true;
}

/* With --json on the command line, refuse a command that prints no JSON. 0 to go on. */
static int check_json(const char *name)
{
	if (!json_errors || prints_json(name))
		return 0;
	return ctl_usage_error(name, "prints no JSON: run it without --json");
}

/* ---- Finding objects and commands: full names or unambiguous abbreviations ----------------- */

/* The object word names: its full name, else the only one it begins. NULL after a usage error
 * (*ret_status), naming the candidates when there are several. */
static const struct ctl_object *find_object(const char *word, int *ret_status)
{
	const struct ctl_object *found = NULL;
	char list[256] = "";
	size_t n = 0, matches = 0;

	for (size_t i = 0; i < ARRAY_SIZE(objects); i++)
		if (strcmp(objects[i].name, word) == 0)
			return &objects[i];
	for (size_t i = 0; *word && i < ARRAY_SIZE(objects); i++) {
		if (strncmp(objects[i].name, word, strlen(word)) != 0)
			continue;
		found = &objects[i];
		matches++;
		if (n < sizeof(list))
			n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "",
					      objects[i].name);
	}
	if (matches == 1)
		return found;
	if (matches > 1)
		*ret_status = ctl_usage_error(NULL, "ambiguous command '%s': %s", word, list);
	else
		*ret_status = ctl_usage_error(NULL, "unknown command '%s'", word);
	return NULL;
}

/* The same for a command of object o. */
static const struct ctl_cmd *find_cmd(const struct ctl_object *o, const char *word,
				      int *ret_status)
{
	const struct ctl_cmd *found = NULL;
	char list[256] = "";
	size_t n = 0, matches = 0;

	for (const struct ctl_cmd *c = o->cmds; c->name; c++)
		if (strcmp(c->name, word) == 0)
			return c;
	for (const struct ctl_cmd *c = o->cmds; *word && c->name; c++) {
		if (strncmp(c->name, word, strlen(word)) != 0)
			continue;
		found = c;
		matches++;
		if (n < sizeof(list))
			n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "",
					      c->name);
	}
	if (matches == 1)
		return found;
	if (matches > 1)
		*ret_status = ctl_usage_error(o->name, "ambiguous command '%s': %s", word, list);
	else
		*ret_status = ctl_usage_error(o->name, "unknown command '%s'", word);
	return NULL;
}

static int run_object(struct ctl *ctl, const struct ctl_object *o, int argc, char **argv)
{
	const struct ctl_cmd *c;
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
		for (c = o->cmds; c->name && n < sizeof(list); c++)
			n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s",
					      n ? ", " : "", c->name);
		return ctl_usage_error(o->name, "missing command (one of: %s)", list);
	}
	/* `export NAME@VERSION PATH...` is `export request NAME@VERSION PATH...`. */
	if (o->cmds == export_cmds && strchr(argv[optind_obj], '@')) {
		char **args = calloc((size_t)(argc - optind_obj) + 2, sizeof(*args));

		if (!args)
			return ctl_fail(o->name, "out of memory");
		args[0] = (char *)"request";
		memcpy(args + 1, argv + optind_obj, (size_t)(argc - optind_obj) * sizeof(*args));
		if ((r = check_json("export request")) == 0) {
			for (c = o->cmds; strcmp(c->name, "request") != 0; c++)
				;
			r = c->run(ctl, argc - optind_obj + 1, args);
		}
		free(args);
		return r;
	}
	c = find_cmd(o, argv[optind_obj], &r);
	if (!c)
		return r;
	/* The command sees its full name, whatever abbreviation was typed. */
	argv[optind_obj] = (char *)c->name;
	{
		char full[64];

		snprintf(full, sizeof(full), "%s %s", o->name, c->name);
		if ((r = check_json(full)) != 0)
			return r;
	}
	return c->run(ctl, argc - optind_obj, argv + optind_obj);
}

/* ---- help and completion --------------------------------------------------------------------- */

static const char help_usage[] =
	"Usage: enclavectl help [OBJECT [COMMAND]]\n\n"
	"Show the help of enclavectl, of an object (enclavectl help grant) or of a command\n"
	"(enclavectl help grant list): the same text as --help at that level. Names may be\n"
	"abbreviated as long as they stay unambiguous (enclavectl help gr li).\n\n"
	"With --json, the commands as data instead: {\"commands\": [{\"command\", \"args\",\n"
	"\"summary\", \"json\"}]} (of one OBJECT when given), \"json\" saying whether the command\n"
	"prints JSON with --json (docs/json/enclavectl.schema.json gives each one's shape).\n\n"
	"Options:\n"
	"  --json        the command list as JSON\n"
	"  -h, --help    show this help\n";

/* help --json: {"commands": [{"command", "args", "summary", "json"}]}, every command of the
 * dispatch table (of object o only, when not NULL) in table order. */
static int help_json(const struct ctl_object *only)
{
	json_t *list = json_array(), *j;
	int r;

	for (size_t i = 0; list && i < ARRAY_SIZE(objects); i++) {
		const struct ctl_object *o = &objects[i];

		if (only && o != only)
			continue;
		if (o->run) {
			if (json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:b}", "command",
								  o->name, "args", o->args,
								  "summary", o->summary, "json",
								  prints_json(o->name))) < 0)
				json_decref(list), list = NULL;
			continue;
		}
		for (const struct ctl_cmd *c = o->cmds; list && c->name; c++) {
			char full[64];

			snprintf(full, sizeof(full), "%s %s", o->name, c->name);
			if (json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:b}", "command",
								  full, "args", c->args, "summary",
								  c->summary, "json",
								  prints_json(full))) < 0)
				json_decref(list), list = NULL;
		}
	}
	j = list ? json_pack("{s:o}", "commands", list) : NULL;
	if (!j)
		return ctl_fail("help", "out of memory");
	r = out_json(j);
	json_decref(j);
	return r < 0 ? 1 : 0;
}

static int cmd_help(struct ctl *ctl, int argc, char **argv)
{
	const struct ctl_object *o;
	const struct ctl_cmd *c;
	int first, r = parse(ctl, "help", help_usage, argc, argv, NULL, NULL, NULL, false, false,
			     &first);

	if (r >= 0)
		return r;
	if (ctl->json) {
		o = NULL;
		if (argc - first > 1)
			return ctl_usage_error("help", "with --json, at most an object");
		if (first < argc && !(o = find_object(argv[first], &r)))
			return r;
		return help_json(o);
	}
	if (first >= argc) {
		usage_top(stdout);
		return 0;
	}
	if (argc - first > 2)
		return ctl_usage_error("help", "at most an object and a command");
	o = find_object(argv[first], &r);
	if (!o)
		return r;
	if (o->run) {
		char *args[] = { (char *)o->name, "--help", NULL };

		if (argc - first > 1)
			return ctl_usage_error("help", "'%s' has no commands", o->name);
		return o->run(ctl, 2, args);
	}
	if (argc - first == 1) {
		usage_object(stdout, o);
		return 0;
	}
	c = find_cmd(o, argv[first + 1], &r);
	if (!c)
		return r;
	{
		char *args[] = { (char *)c->name, "--help", NULL };

		return c->run(ctl, 2, args);
	}
}

static const char completion_usage[] =
	"Usage: enclavectl completion bash\n\n"
	"Print a bash completion script for enclavectl, generated from the same command table\n"
	"and option lists as --help. Nothing installs it by default; to use it:\n\n"
	"  source <(enclavectl completion bash)                        # this shell\n"
	"  enclavectl completion bash > /etc/bash_completion.d/enclavectl  # every shell\n\n"
	"Options:\n"
	"  -h, --help    show this help\n";

/* Append word (n bytes) to out, space-separated, unless it is there already (from start on). */
static void add_word(struct buf *out, size_t start, const char *word, size_t n)
{
	const char *p = (const char *)out->data + start, *end = (const char *)out->data + out->len;

	while (out->data && p < end) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		size_t len = sp ? (size_t)(sp - p) : (size_t)(end - p);

		if (len == n && memcmp(p, word, n) == 0)
			return;
		p += len + 1;
	}
	buf_append(out, " ", out->len > start);
	buf_append(out, word, n);
}

/* The long options a command's --help text names ("--dataset", ...), each once, appended to out
 * (space-separated), then the global ones. */
static int options_of(struct ctl *ctl, int (*run)(struct ctl *, int, char **), const char *name,
		      struct buf *out)
{
	static const char *const globals[] = { "--socket", "--store", "--json", "--quiet",
					       "--help" };
	char *text = NULL, *args[] = { (char *)name, "--help", NULL };
	size_t len = 0, start = out->len;
	struct ctl scratch = *ctl;
	FILE *f = open_memstream(&text, &len);
	int r;

	if (!f)
		return -ENOMEM;
	help_out = f;
	r = run(&scratch, 2, args);
	help_out = NULL;
	fclose(f);
	if (r != 0) {
		free(text);
		return -EINVAL;
	}
	for (char *p = text; p && (p = strstr(p, "--")) != NULL;) {
		char *q = p + 2;

		while ((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-')
			q++;
		if (q - p > 2 && q - p < 64 && (p == text || p[-1] == ' ' || p[-1] == '[' ||
						 p[-1] == '(' || p[-1] == '|'))
			add_word(out, start, p, (size_t)(q - p));
		p = q;
	}
	free(text);
	for (size_t i = 0; i < ARRAY_SIZE(globals); i++)
		add_word(out, start, globals[i], strlen(globals[i]));
	r = buf_u8(out, 0);
	out->len--;
	return r < 0 ? r : 0;
}

static int cmd_completion(struct ctl *ctl, int argc, char **argv)
{
	static const char globals[] = "--socket --store --json --quiet --help";
	struct buf b;
	int first, r = parse(ctl, "completion", completion_usage, argc, argv, NULL, NULL, NULL,
			     false, false, &first);

	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("completion", "which shell? (bash)");
	if (argc - first > 1 || strcmp(argv[first], "bash") != 0)
		return ctl_usage_error("completion", "only bash is supported, not '%s'",
				       argv[first]);
	buf_init(&b, 64 * 1024);
	printf("# bash completion for enclavectl, generated by `enclavectl completion bash` from\n"
	       "# its command table. Load it with: source <(enclavectl completion bash)\n"
	       "_enclavectl() {\n"
	       "\tlocal cur=${COMP_WORDS[COMP_CWORD]} obj= cmd= skip= i w words\n"
	       "\tfor ((i = 1; i < COMP_CWORD; i++)); do\n"
	       "\t\tw=${COMP_WORDS[i]}\n"
	       "\t\tif [[ -n $skip ]]; then skip=; continue; fi\n"
	       "\t\tcase $w in\n"
	       "\t\t--socket|--store) skip=1 ;;\n"
	       "\t\t-*) ;;\n"
	       "\t\t*) if [[ -z $obj ]]; then obj=$w; elif [[ -z $cmd ]]; then cmd=$w; fi ;;\n"
	       "\t\tesac\n"
	       "\tdone\n"
	       "\tcase $obj in\n"
	       "\t\"\") words=\"");
	for (size_t i = 0; i < ARRAY_SIZE(objects); i++)
		printf("%s ", objects[i].name);
	printf("%s --version\" ;;\n", globals);
	for (size_t i = 0; i < ARRAY_SIZE(objects); i++) {
		const struct ctl_object *o = &objects[i];

		if (strcmp(o->name, "help") == 0) {
			/* help: the objects again */
			printf("\thelp) words=\"");
			for (size_t k = 0; k < ARRAY_SIZE(objects); k++)
				printf("%s%s", k ? " " : "", objects[k].name);
			printf("\" ;;\n");
			continue;
		}
		if (o->run) {
			b.len = 0;
			if (strcmp(o->name, "completion") == 0)
				buf_append(&b, "bash", 4);
			if ((r = options_of(ctl, o->run, o->name, &b)) < 0)
				goto out;
			printf("\t%s) words=\"%s\" ;;\n", o->name, (char *)b.data);
			continue;
		}
		printf("\t%s)\n\t\tcase $cmd in\n\t\t\"\") words=\"", o->name);
		for (const struct ctl_cmd *c = o->cmds; c->name; c++)
			printf("%s%s", c == o->cmds ? "" : " ", c->name);
		printf("\" ;;\n");
		for (const struct ctl_cmd *c = o->cmds; c->name; c++) {
			b.len = 0;
			if ((r = options_of(ctl, c->run, c->name, &b)) < 0)
				goto out;
			printf("\t\t%s) words=\"%s\" ;;\n", c->name, (char *)b.data);
		}
		printf("\t\t*) words=\"%s\" ;;\n\t\tesac ;;\n", globals);
	}
	printf("\t*) words=\"%s\" ;;\n"
	       "\tesac\n"
	       "\tCOMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
	       "}\n"
	       "complete -o default -F _enclavectl enclavectl\n", globals);
	r = 0;
out:
	buf_free(&b);
	if (r < 0)
		return ctl_fail("completion", "cannot collect the options of every command");
	return 0;
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

	/* --json is seen before any parsing, so even a usage error is a JSON object. */
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--json") == 0)
			json_errors = true;
	r = parse(&ctl, "", usage, argc, argv, NULL, NULL, NULL, true, true, &first);
	if (r < 0) {
		if (first >= argc) {
			r = ctl_usage_error(NULL, "missing command");
		} else {
			const struct ctl_object *o = find_object(argv[first], &r);

			if (o) {
				argv[first] = (char *)o->name;
				if (o->run && (r = check_json(o->name)) != 0)
					;
				else
					r = o->run ? o->run(&ctl, argc - first, argv + first)
						   : run_object(&ctl, o, argc - first,
								argv + first);
			}
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
