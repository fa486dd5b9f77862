/* control_node: compute nodes enrolled in the store (docs/PROTOCOL.md "node.add",
 * docs/DEPLOYMENT.md section 7).
 *
 * A steward asks to enrol a node by its public key (node.add: recorded, `node_add`); as many other
 * stewards as the store's `approvals` setting approve (node.approve, `node_approve`); from the
 * approval that completes it, the primary seals the store's keys to the node (its key bundle,
 * node_bundle.c) and the node can serve. node.remove takes a node out at once (`node_remove`):
 * its bundle goes, nothing committed from then on is ever sealed to its key, and the node itself
 * refuses every open as soon as it reads the removal (within its staleness bound).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "common/common.h"
#include "common/err.h"
#include "common/proto.h"
#include "daemon/daemon.h"
#include "daemon/control_internal.h"

static json_t *node_view(const struct grants_node *x)
{
	char pub[NODE_PUBLIC_TEXT_MAX + 1];
	json_t *o;

	if (node_public_format(x->name, &x->pub, pub, sizeof(pub)) < 0)
		return NULL;
	o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:I, s:I}", "id", (json_int_t)x->id, "name",
		      x->name, "public_key", pub, "state", grants_node_state(x), "requested_by",
		      x->by, "requested", jtime(x->at), "approvals", (json_int_t)x->approvals,
		      "approvals_required", (json_int_t)x->approvals_required);
	if (o && x->enrolled_at && !x->removed_at &&
	    json_object_set_new(o, "enrolled", jtime(x->enrolled_at)) < 0)
		json_decref(o), o = NULL;
	if (o && x->removed_at &&
	    (json_object_set_new(o, "removed", jtime(x->removed_at)) < 0 ||
	     json_object_set_new(o, "removed_by", json_string(x->removed_by)) < 0 ||
	     json_object_set_new(o, "removal_reason", json_string(x->removed_reason)) < 0))
		json_decref(o), o = NULL;
	return o;
}

/* The enrolments changed: the bundles follow before the next signal (and at once here, so
 * that a node enrolled by this request finds its bundle when the reply arrives). */
static void bundles_now(struct daemon *d)
{
	node_primary_changed(d->primary);
	if (node_primary_bundles(d->primary) < 0)
		fprintf(stderr, "enclaved: nodes: cannot write the key bundles: %s (trying again)\n",
			err_detail());
}

int op_node_add(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "name", "public_key", NULL };
	const char *name = NULL, *text = NULL;
	char key_name[NODE_NAME_MAX + 1];
	struct node_public pub;
	struct grants_node x;
	struct config cfg;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "name", true, NODE_NAME_MAX, &name)) < 0 ||
	    (r = proto_arg_string(args, "public_key", true, NODE_PUBLIC_TEXT_MAX, &text)) < 0)
		return r;
	r = node_public_parse(text, strlen(text), key_name, &pub);
	if (r < 0)
		return r;
	if (strcmp(key_name, name) != 0)
		return err_set(-EINVAL, "the public key is node %s's, not %s's (it names the node "
			       "it was made for)", key_name, name);
	daemon_config(c->d, &cfg);
	r = grants_node_add(c->d->grants, c->d->log, &c->who, name, &pub, cfg.approvals,
			    time(NULL), &x);
	if (r < 0)
		return r;
	if (grants_node_is_enrolled(&x))
		bundles_now(c->d);
	*ret = json_pack("{s:o}", "node", node_view(&x));
	return *ret ? 0 : -ENOMEM;
}

int op_node_approve(struct conn *c, const json_t *args, json_t **ret)
{
	struct grants_node x;
	uint64_t id = 0;
	int r;

	if ((r = request_id_arg(args, &id)) < 0)
		return r;
	r = grants_node_approve(c->d->grants, c->d->log, &c->who, id, time(NULL), &x);
	if (r < 0)
		return r;
	if (grants_node_is_enrolled(&x))
		bundles_now(c->d);
	*ret = json_pack("{s:o}", "node", node_view(&x));
	return *ret ? 0 : -ENOMEM;
}

int op_node_remove(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "name", "reason", NULL };
	const char *name = NULL, *reason = NULL;
	struct grants_node x;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "name", true, NODE_NAME_MAX, &name)) < 0 ||
	    (r = proto_arg_string(args, "reason", true, POLICY_REASON_MAX, &reason)) < 0)
		return r;
	r = grants_node_remove(c->d->grants, c->d->log, &c->who, name, reason, time(NULL), &x);
	if (r < 0)
		return r;
	bundles_now(c->d);
	*ret = json_pack("{s:o}", "node", node_view(&x));
	return *ret ? 0 : -ENOMEM;
}

int op_node_list(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "all", NULL };
	struct grants_node *xs = NULL;
	bool all = false;
	json_t *a;
	size_t n = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_bool(args, "all", false, &all)) < 0 ||
	    (r = grants_nodes_snapshot(c->d->grants, &xs, &n)) < 0)
		return r;
	a = json_array();
	for (size_t i = 0; a && i < n; i++) {
		if (xs[i].removed_at && !all)
			continue;
		if (json_array_append_new(a, node_view(&xs[i])) < 0)
			json_decref(a), a = NULL;
	}
	free(xs);
	*ret = a ? json_pack("{s:o}", "nodes", a) : NULL;
	return *ret ? 0 : -ENOMEM;
}

/* ---- node.show ------------------------------------------------------------------------------ */

/* The node's log directory, audit/nodes/NAME: its regular files' total size, how many, and the
 * newest modification. Absent: the node never wrote one (nothing in the reply). */
static json_t *node_log_view(struct daemon *d, const char *name)
{
	char path[4096 + NODE_NAME_MAX + 16];
	uint64_t bytes = 0, files = 0;
	int64_t newest = 0;
	struct dirent *de;
	DIR *dir;

	if ((size_t)snprintf(path, sizeof(path), "%s/" NODE_DIR_NAME "/%s", d->audit_dir, name) >=
	    sizeof(path))
		return NULL;
	dir = opendir(path);
	if (!dir)
		return NULL;
	while ((de = readdir(dir))) {
		struct stat sb;

		if (fstatat(dirfd(dir), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode))
			continue;
		bytes += (uint64_t)sb.st_size;
		files++;
		newest = MAX(newest, (int64_t)sb.st_mtim.tv_sec);
	}
	closedir(dir);
	return json_pack("{s:I, s:I, s:o}", "bytes", (json_int_t)bytes, "files",
			 (json_int_t)files, "modified", newest ? jtime(newest) : json_string(""));
}

/* What the node says of itself (node_seen.c), checked against its enrolled key; or why not. */
static int node_seen_view(struct daemon *d, const struct grants_node *x, json_t *o)
{
	char nodes[4096 + 8];
	struct node_seen s;
	uint8_t id[16];
	json_t *v;
	int fd, r;

	snprintf(nodes, sizeof(nodes), "%s/" NODE_DIR_NAME, d->store_dir);
	fd = open(nodes, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;   /* no node ever ran here */
	store_id(d->st, id);
	r = node_seen_read(fd, x->name, id, x->pub.sign_pk, &s);
	close(fd);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return json_object_set_new(o, "seen_error", json_string(err_detail())) < 0 ?
		       -ENOMEM : 0;
	v = json_pack("{s:o, s:I, s:I, s:I, s:o, s:o, s:I, s:b}",
		      "at", jtime(s.time_ns / 1000000000), "index_sequence", (json_int_t)s.seq,
		      "ring", (json_int_t)s.ring, "lease_token", (json_int_t)s.token,
		      "signal", s.signal_ns ? jtime(s.signal_ns / 1000000000) : json_string(""),
		      "fresh_as_of", s.fresh_ns ? jtime(s.fresh_ns / 1000000000) : json_string(""),
		      "catch_ups", (json_int_t)s.catch_ups, "stale", s.stale);
	return !v || json_object_set_new(o, "seen", v) < 0 ? -ENOMEM : 0;
}

int op_node_show(struct conn *c, const json_t *args, json_t **ret)
{
	static const char *const known[] = { "name", NULL };
	char pub[NODE_PUBLIC_TEXT_MAX + 1], fp[2 * crypto_hash_sha256_BYTES + 1];
	uint8_t h[crypto_hash_sha256_BYTES];
	struct grants_node *xs = NULL, x;
	const char *name = NULL;
	ssize_t at = -1;
	json_t *o = NULL, *log;
	size_t n = 0;
	int r;

	if ((r = proto_args_known(args, known)) < 0 ||
	    (r = proto_arg_string(args, "name", true, NODE_NAME_MAX, &name)) < 0 ||
	    (r = grants_nodes_snapshot(c->d->grants, &xs, &n)) < 0)
		return r;
	/* The newest enrolment of that name (a name may be enrolled again after a removal). */
	for (size_t i = 0; i < n; i++)
		if (strcmp(xs[i].name, name) == 0 && (at < 0 || xs[i].id > xs[at].id))
			at = (ssize_t)i;
	if (at < 0) {
		free(xs);
		return err_set(-ENOENT, "no node \"%s\" was ever enrolled or asked for", name);
	}
	x = xs[at];
	free(xs);
	o = node_view(&x);
	r = o && node_public_format(x.name, &x.pub, pub, sizeof(pub)) == 0 ? 0 : -ENOMEM;
	if (r == 0) {
		/* The fingerprint of the public key text as `enclaved --node NAME --init` printed
		 * it: SHA-256, so an operator checks it with sha256sum. */
		crypto_hash_sha256(h, (const uint8_t *)pub, strlen(pub));
		sodium_bin2hex(fp, sizeof(fp), h, sizeof(h));
		r = json_object_set_new(o, "key_fingerprint", json_string(fp)) < 0 ? -ENOMEM : 0;
	}
	if (r == 0 && c->d->primary &&
	    json_object_set_new(o, "primary_lease_token",
				json_integer((json_int_t)node_primary_token(c->d->primary))) < 0)
		r = -ENOMEM;
	log = r == 0 ? node_log_view(c->d, x.name) : NULL;
	if (log && json_object_set_new(o, "log", log) < 0)
		r = -ENOMEM;
	if (r == 0)
		r = node_seen_view(c->d, &x, o);
	if (r < 0) {
		json_decref(o);
		return r;
	}
	*ret = json_pack("{s:o}", "node", o);
	return *ret ? 0 : -ENOMEM;
}
