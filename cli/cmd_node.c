/* enclavectl node add | approve | remove | list | show: the compute nodes that serve the store
 * (docs/DEPLOYMENT.md section 7).
 *
 * A node makes its key pair itself (`enclaved --node NAME --init`, which prints the public key);
 * a steward enrols it by that public key, under the store's approval rule as for a grant, since an
 * enrolled node is given every key it needs to read the store. Removing a node is at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "policy/policy.h"

#define NODE_NAME_MAX 64
#define PUBLIC_PREFIX "enclave-node-public:"
#define PUBLIC_TEXT_MAX 256

static const char add_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] node add NAME PUBLIC-KEY\n\n"
	"Enrol compute node NAME: from then on the primary seals the store's keys to it (its key\n"
	"bundle in the store's nodes/ directory), so that `enclaved --node NAME` serves the\n"
	"store without the passphrase. PUBLIC-KEY is what `enclaved --node NAME --init` printed\n"
	"(enclave-node-public:NAME:...), or a file holding it (the node's node.pub).\n"
	"An enrolment gives a machine every key of the store: the store's approval rule applies\n"
	"as it does to grants. With approvals = 0 (enclave.conf) the node is enrolled at once;\n"
	"otherwise once as many other stewards have run 'node approve ID'. Stewards only.\n\n"
	"Options:\n"
	"  --json         print the enrolment as JSON\n"
	"  -h, --help     show this help\n";

static const char approve_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] node approve ID\n\n"
	"Approve enrolment ID of a compute node (see 'node list'). The steward who asked for it\n"
	"cannot. The approval that completes it enrols the node. Stewards only.\n\n"
	"Options:\n"
	"  --json         print the enrolment as JSON\n"
	"  -h, --help     show this help\n";

static const char remove_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] node remove NAME --reason TEXT\n\n"
	"Remove compute node NAME (enrolled, or waiting for approval) at once, saying why: its key\n"
	"bundle is removed, nothing committed from now on is sealed to its key, the policy records,\n"
	"dataset names and records, tombstones and move records move to a new key the node is not\n"
	"given, and the node refuses every open as soon as it catches up (within its staleness\n"
	"bound). What it could decrypt before stays decryptable with its key\n"
	"(docs/THREAT_MODEL.md). Stewards only.\n\n"
	"Options:\n"
	"  --reason TEXT  why (required, recorded)\n"
	"  --json         print the enrolment as JSON\n"
	"  -h, --help     show this help\n";

static const char list_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] node list [--all]\n\n"
	"The compute nodes enrolled or waiting for approval, or with --all the removed ones too.\n"
	"Stewards and auditors only.\n\n"
	"Options:\n"
	"  --all          include removed nodes\n"
	"  --json         print the daemon's answer as JSON\n"
	"  -h, --help     show this help\n";

static const char show_usage[] =
	"Usage: enclavectl [GLOBAL OPTIONS] node show NAME\n\n"
	"Compute node NAME's newest enrolment: its state (pending_approval, enrolled, removed),\n"
	"public key and its fingerprint (SHA-256 of the key text: compare with\n"
	"`tr -d '\\n' < node.pub | sha256sum` on the node), who asked and approved, its removal;\n"
	"the size of its audit log (the store's audit/nodes/NAME/); and what the node last said of\n"
	"itself (nodes/NAME.seen, believed only if signed by its enrolled key, written every 2 s\n"
	"while it runs): when, the index sequence and key ring generation it caught up to, the\n"
	"lease token of the last primary signal it accepted (beside the primary's own), whether it\n"
	"serves or refuses opens. A node can say what it likes of itself: its log, checked by\n"
	"'audit verify', is the record. Stewards and auditors.\n\n"
	"Options:\n"
	"  --json         print the daemon's answer as JSON\n"
	"  -h, --help     show this help\n";

enum {
	OPT_REASON = 0x200,
	OPT_ALL,
};

static void print_node(const json_t *x)
{
	char s1[24], s2[24], s3[24], s4[24], text[1100];

	printf("node %s: %s (enrolment %s)\n", out_member(x, "name", s1),
	       out_member(x, "state", s2), out_member(x, "id", s3));
	printf("  key       %s\n", out_text(out_member(x, "public_key", s1), 0, text,
					   sizeof(text)));
	printf("  requested %s by %s, approvals %s of %s\n", out_member(x, "requested", s1),
	       out_member(x, "requested_by", s2), out_member(x, "approvals", s3),
	       out_member(x, "approvals_required", s4));
	if (json_object_get(x, "removed"))
		printf("  removed   %s by %s: %s\n", out_member(x, "removed", s1),
		       out_member(x, "removed_by", s2),
		       out_text(out_member(x, "removal_reason", s3), 0, text, sizeof(text)));
}

/* The public key: the text itself, or a file holding it. */
static int public_key_arg(const char *what, const char *arg, char *out, size_t cap)
{
	ssize_t n;
	int fd;

	if (strncmp(arg, PUBLIC_PREFIX, strlen(PUBLIC_PREFIX)) == 0) {
		if (strlen(arg) >= cap)
			return ctl_usage_error(what, "the public key is too long");
		snprintf(out, cap, "%s", arg);
		return 0;
	}
	fd = open(arg, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ctl_fail(what, "%s: %s (give the node's public key, %s..., or a file "
				"holding it)", arg, strerror(errno), PUBLIC_PREFIX);
	n = read(fd, out, cap - 1);
	close(fd);
	if (n < 0 || (size_t)n >= cap - 1)
		return ctl_fail(what, "%s: not a node's public key file", arg);
	out[n] = '\0';
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
	return 0;
}

static int node_add(struct ctl *ctl, int argc, char **argv)
{
	char pub[PUBLIC_TEXT_MAX + 2];
	struct reply rep = { 0 };
	json_t *args;
	int first, r;

	r = ctl_parse_none(ctl, "node add", add_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first + 2 > argc)
		return ctl_usage_error("node add", "NAME and PUBLIC-KEY are required");
	if (first + 2 < argc)
		return ctl_usage_error("node add", "unexpected argument '%s'", argv[argc - 1]);
	if (!*argv[first] || strlen(argv[first]) > NODE_NAME_MAX)
		return ctl_usage_error("node add", "not a node name: '%.80s'", argv[first]);
	r = public_key_arg("node add", argv[first + 1], pub, sizeof(pub));
	if (r)
		return r;
	args = json_pack("{s:s, s:s}", "name", argv[first], "public_key", pub);
	if (!args)
		return ctl_fail("node add", "out of memory");
	r = ctl_call(ctl, "node add", "node.add", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	{
		const json_t *x = json_object_get(rep.result, "node");
		char s1[24];

		if (strcmp(out_member(x, "state", s1), "enrolled") != 0)
			printf("enrolment recorded: node %s is enrolled once another steward runs "
			       "'enclavectl node approve %s'\n", argv[first],
			       out_member(x, "id", s1));
		print_node(x);
	}
	reply_clear(&rep);
	return 0;
}

static int node_approve(struct ctl *ctl, int argc, char **argv)
{
	struct reply rep = { 0 };
	unsigned long long id;
	json_t *args;
	int first, r;

	r = ctl_parse_none(ctl, "node approve", approve_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("node approve", "missing the enrolment's ID");
	if (first + 1 < argc)
		return ctl_usage_error("node approve", "unexpected argument '%s'", argv[argc - 1]);
	r = ctl_parse_id("node approve", "enrolment", argv[first], &id);
	if (r)
		return r;
	args = json_pack("{s:I}", "id", (json_int_t)id);
	if (!args)
		return ctl_fail("node approve", "out of memory");
	r = ctl_call(ctl, "node approve", "node.approve", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	print_node(json_object_get(rep.result, "node"));
	reply_clear(&rep);
	return 0;
}

static int on_reason(void *ctx, int val, const char *arg)
{
	if (val != OPT_REASON)
		return EXIT_USAGE;
	*(const char **)ctx = arg;
	return 0;
}

static int node_remove(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "reason", required_argument, NULL, OPT_REASON },
		{ 0 },
	};
	const char *reason = NULL;
	struct reply rep = { 0 };
	json_t *args;
	int first, r;

	r = ctl_parse(ctl, "node remove", remove_usage, argc, argv, opts, on_reason, &reason,
		      &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("node remove", "missing the node's NAME");
	if (first + 1 < argc)
		return ctl_usage_error("node remove", "unexpected argument '%s'", argv[argc - 1]);
	if (!reason || !*reason || strlen(reason) > POLICY_REASON_MAX ||
	    !out_utf8_valid(reason, strlen(reason)))
		return ctl_usage_error("node remove", "--reason TEXT is required: 1 to %d bytes of "
				       "UTF-8", POLICY_REASON_MAX);
	args = json_pack("{s:s, s:s}", "name", argv[first], "reason", reason);
	if (!args)
		return ctl_fail("node remove", "out of memory");
	r = ctl_call(ctl, "node remove", "node.remove", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	print_node(json_object_get(rep.result, "node"));
	reply_clear(&rep);
	return 0;
}

static int on_all(void *ctx, int val, const char *arg)
{
	(void)arg;
	if (val != OPT_ALL)
		return EXIT_USAGE;
	*(bool *)ctx = true;
	return 0;
}

static int node_list(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "all", no_argument, NULL, OPT_ALL },
		{ 0 },
	};
	static const char *const head[] = { "ID", "NAME", "STATE", "REQUESTED", "BY", "APPROVALS" };
	static const size_t widths[] = { 0, 0, 0, 0, 0, 0 };
	struct reply rep = { 0 };
	const json_t *list, *x;
	struct table t;
	bool all = false;
	json_t *args;
	size_t i;
	int first, r;

	r = ctl_parse(ctl, "node list", list_usage, argc, argv, opts, on_all, &all, &first);
	if (r >= 0)
		return r;
	if (first < argc)
		return ctl_usage_error("node list", "unexpected argument '%s'", argv[first]);
	args = all ? json_pack("{s:b}", "all", 1) : json_object();
	if (!args)
		return ctl_fail("node list", "out of memory");
	r = ctl_call_list(ctl, "node list", "node.list", args, "nodes", &rep, &list);
	if (!list)
		return r;
	table_init(&t, ARRAY_SIZE(head), head);
	json_array_foreach(list, i, x) {
		char s1[24], s2[80], s3[24], s4[40], s5[80], s6[24], s7[24], ap[56];
		const char *cells[6];

		snprintf(ap, sizeof(ap), "%s/%s", out_member(x, "approvals", s6),
			 out_member(x, "approvals_required", s7));
		cells[0] = out_member(x, "id", s1);
		cells[1] = out_member(x, "name", s2);
		cells[2] = out_member(x, "state", s3);
		cells[3] = out_member(x, "requested", s4);
		cells[4] = out_member(x, "requested_by", s5);
		cells[5] = ap;
		if (table_add(&t, cells, widths) < 0) {
			r = ctl_fail("node list", "out of memory");
			break;
		}
	}
	if (r == 0) {
		if (t.nrows)
			r = table_print(&t) < 0;
		else if (!ctl->quiet)
			fprintf(stderr, "no nodes\n");
	}
	table_free(&t);
	reply_clear(&rep);
	return r;
}

static int node_show(struct ctl *ctl, int argc, char **argv)
{
	char s1[24], s2[24], s3[24], s4[24], s5[24], s6[24], text[1100];
	struct reply rep = { 0 };
	const json_t *x, *o;
	json_t *args;
	int first, r;

	r = ctl_parse_none(ctl, "node show", show_usage, argc, argv, &first);
	if (r >= 0)
		return r;
	if (first >= argc)
		return ctl_usage_error("node show", "missing the node's NAME");
	if (first + 1 < argc)
		return ctl_usage_error("node show", "unexpected argument '%s'", argv[argc - 1]);
	if (!*argv[first] || strlen(argv[first]) > NODE_NAME_MAX)
		return ctl_usage_error("node show", "not a node name: '%.80s'", argv[first]);
	args = json_pack("{s:s}", "name", argv[first]);
	if (!args)
		return ctl_fail("node show", "out of memory");
	r = ctl_call(ctl, "node show", "node.show", args, NULL, NULL, &rep);
	if (r)
		return r;
	if (ctl->json)
		return ctl_print_json(&rep);
	x = json_object_get(rep.result, "node");
	print_node(x);
	printf("  fingerprint sha256 %s\n", out_member(x, "key_fingerprint", s1));
	if (json_object_get(x, "enrolled"))
		printf("  enrolled  %s\n", out_member(x, "enrolled", s1));
	o = json_object_get(x, "log");
	if (o)
		printf("  log       %s bytes in %s files, last written %s\n", out_member(o, "bytes", s1),
		       out_member(o, "files", s2), out_member(o, "modified", s3));
	else
		printf("  log       none (the node never ran)\n");
	o = json_object_get(x, "seen");
	if (o) {
		printf("  seen      %s: %s\n", out_member(o, "at", s1),
		       json_is_true(json_object_get(o, "stale")) ? "refusing opens (stale)" :
		       "serving");
		printf("  caught up index sequence %s, key ring %s, %s catch-ups, fresh as of %s\n",
		       out_member(o, "index_sequence", s1), out_member(o, "ring", s2),
		       out_member(o, "catch_ups", s3), out_member(o, "fresh_as_of", s4));
		printf("  lease     token %s in the last signal it accepted (%s); the primary's %s\n",
		       out_member(o, "lease_token", s5), out_member(o, "signal", s6),
		       json_object_get(x, "primary_lease_token") ?
		       out_member(x, "primary_lease_token", s1) : "unknown (no lease)");
	} else if (json_object_get(x, "seen_error")) {
		printf("  seen      not believed: %s\n",
		       out_text(out_member(x, "seen_error", s1), 0, text, sizeof(text)));
	} else {
		printf("  seen      never (no nodes/%s.seen)\n", argv[first]);
	}
	reply_clear(&rep);
	return 0;
}

const struct ctl_cmd node_cmds[] = {
	{ "add", node_add, "NAME PUBLIC-KEY", "enrol a compute node (with approvals)" },
	{ "approve", node_approve, "ID", "approve another steward's enrolment of a node" },
	{ "list", node_list, "[--all]", "list the compute nodes" },
	{ "remove", node_remove, "NAME --reason TEXT", "remove a compute node at once" },
	{ "show", node_show, "NAME", "a compute node's enrolment, log and last catch-up" },
	{ 0 },
};
