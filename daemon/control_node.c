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
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
