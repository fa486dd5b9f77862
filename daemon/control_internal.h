/* control_internal: what the files of the control server share (control.c runs the socket and
 * dispatches; control_dataset.c, control_grant.c and control_audit.c hold the operations).
 * Not part of the daemon's interface. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "daemon/daemon.h"

struct conn {
	struct control *ctl;
	struct daemon *d;
	int fd;
	pid_t pid;
	struct policy_subject who;
	unsigned roles;                      /* enum role bits */
	struct store_import *imp;            /* the import this connection runs, or NULL */
	/* A committed import whose reply is not sent yet: freed by conn_main() once it is, so the
	 * steward does not wait for its memory and threads to be released (1 to 6 ms). */
	struct store_import *imp_done;
	bool imp_failed;                     /* an add failed: only import.abort is accepted */
	char imp_dataset[STORE_DATASET_NAME_MAX + 1];
	/* The version whose "committed" record is written, until its commit: the versions the log
	 * stands for move on with it (daemon_versions_committed()). */
	uint64_t committing_dsid;
	uint32_t committing_version;
	uint8_t committing_manifest[STORE_MANIFEST_LEN];
	uint64_t imp_c4gh;                   /* Crypt4GH files decrypted into this import */
	bool imp_c4gh_keep;                  /* import.begin keep_crypt4gh: store them as they are */
	int64_t last_progress_ns;
	struct conn *next;                   /* in ctl->conns, under ctl->lock */
};

/* Reply {"ok":true,"result":result} (result stolen; NULL: {}). */
int reply_ok(struct conn *c, json_t *result);
/* An RFC 3339 string for unix seconds (a new reference; NULL on allocation failure). */
json_t *jtime(int64_t unix_s);

/* Operations: args is an object (checked by the caller), *ret the result on success. The
 * caller has checked the role the dispatch table names. */
int op_dataset_list(struct conn *c, const json_t *args, json_t **ret);
int op_dataset_show(struct conn *c, const json_t *args, json_t **ret);
int op_import_begin(struct conn *c, const json_t *args, json_t **ret);
int op_import_dir(struct conn *c, const json_t *args, json_t **ret);
/* Takes ownership of fd. */
int op_import_file(struct conn *c, const json_t *args, int fd, json_t **ret);
/* import.files: a batch of files, {"paths": [...]} with one descriptor per path in the same
 * frame (borrowed), at most IMPORT_BATCH_FILES of them and, when more than one, at most
 * IMPORT_BATCH_BYTES of file data in all. */
int op_import_files(struct conn *c, const json_t *args, const int *fds, size_t nfds,
		    json_t **ret);
/* import.stat: a batch of files told of by their stat, no descriptor (docs/PROTOCOL.md): those
 * whose source stamp holds are imported unread, the others are asked for ("need"). */
int op_import_stat(struct conn *c, const json_t *args, json_t **ret);
int op_import_commit(struct conn *c, const json_t *args, json_t **ret);
/* control_crypt4gh.c: the site key, and the import of one file that may be a Crypt4GH file. */
int op_crypt4gh_keygen(struct conn *c, const json_t *args, json_t **ret);
int op_crypt4gh_import(struct conn *c, const json_t *args, int fd, json_t **ret);
int op_crypt4gh_pubkey(struct conn *c, const json_t *args, json_t **ret);
/* store_import_add_file() (st: its fstat as the caller took it, or NULL), or for a file that begins with the Crypt4GH magic (unless the import
 * keeps them as they are), its plaintext decrypted with the site key as path without ".c4gh". */
int import_file_any(struct conn *c, const char *path, int fd, const struct stat *st);
/* Whether a file that begins with head (len bytes) is a Crypt4GH file (its magic). */
bool import_is_crypt4gh(const uint8_t *head, size_t len);
_Static_assert(PROTO_IMPORT_BATCH_FILES <= STORE_IMPORT_BATCH_MAX, "a batch fits the store's");
/* Exports to a recipient's Crypt4GH key, under approval (docs/CRYPT4GH.md section 7). */
int op_export_request(struct conn *c, const json_t *args, json_t **ret);
int op_export_approve(struct conn *c, const json_t *args, json_t **ret);
int op_export_show(struct conn *c, const json_t *args, json_t **ret);
int op_export_list(struct conn *c, const json_t *args, json_t **ret);
int op_export_run(struct conn *c, const json_t *args, const int *fds, size_t nfds, json_t **ret);
int op_import_abort(struct conn *c, const json_t *args, json_t **ret);
int op_grant_add(struct conn *c, const json_t *args, json_t **ret);
int op_grant_list(struct conn *c, const json_t *args, json_t **ret);
int op_grant_revoke(struct conn *c, const json_t *args, json_t **ret);
int op_grant_approve(struct conn *c, const json_t *args, json_t **ret);
int op_grant_show(struct conn *c, const json_t *args, json_t **ret);
int op_grant_export(struct conn *c, const json_t *args, json_t **ret);
int op_grant_jwks(struct conn *c, const json_t *args, json_t **ret);
int op_deny_add(struct conn *c, const json_t *args, json_t **ret);
int op_deny_list(struct conn *c, const json_t *args, json_t **ret);
int op_deny_remove(struct conn *c, const json_t *args, json_t **ret);
int op_deny_approve(struct conn *c, const json_t *args, json_t **ret);
int op_deny_show(struct conn *c, const json_t *args, json_t **ret);
int op_access_check(struct conn *c, const json_t *args, json_t **ret);
int op_dataset_set(struct conn *c, const json_t *args, json_t **ret);
int op_dataset_erase(struct conn *c, const json_t *args, json_t **ret);
int op_dataset_erase_approve(struct conn *c, const json_t *args, json_t **ret);
int op_dataset_erasures(struct conn *c, const json_t *args, json_t **ret);
int op_dataset_erasure_proof(struct conn *c, const json_t *args, json_t **ret);
int op_audit_show(struct conn *c, const json_t *args, json_t **ret);
int op_audit_pubkey(struct conn *c, const json_t *args, json_t **ret);
int op_audit_checkpoint(struct conn *c, const json_t *args, json_t **ret);
int op_audit_prove(struct conn *c, const json_t *args, json_t **ret);
int op_audit_auditor_add(struct conn *c, const json_t *args, json_t **ret);
int op_audit_export(struct conn *c, const json_t *args, json_t **ret);
int op_node_add(struct conn *c, const json_t *args, json_t **ret);
int op_node_approve(struct conn *c, const json_t *args, json_t **ret);
int op_node_remove(struct conn *c, const json_t *args, json_t **ret);
int op_node_list(struct conn *c, const json_t *args, json_t **ret);
int op_node_show(struct conn *c, const json_t *args, json_t **ret);
int op_store_gc(struct conn *c, const json_t *args, json_t **ret);
int op_store_df(struct conn *c, const json_t *args, json_t **ret);

/* The consent code of dataset policy dp (NULL: none) that now excludes grant g's purpose (its
 * consent override counted), or 0. */
uint32_t grant_excluded_code(const struct policy_dataset *dp, const struct policy_grant *g);
/* g's effective state at now: the first of "revoked", "expired", "suspended" (the dataset's
 * consent codes exclude its purpose; *ret_code, if not NULL, the code), "pending_approval",
 * "not_yet_valid" that holds, else "active". The order of policy_evaluate()'s reasons. */
const char *grant_state(struct conn *c, const struct policy_grant *g, int64_t now,
			uint32_t *ret_code);
/* Add "state", "approvals" and, when suspended, "consent_code" and "consent_code_id" to o. */
int grant_state_json(struct conn *c, const struct policy_grant *g, int64_t now, json_t *o);

/* End the connection's import, if any: committed or not, it is abandoned and recorded with err. */
void import_end(struct conn *c, int err);
/* The arguments of an approval (grant.approve, deny.approve, export.approve,
 * dataset.erase_approve): exactly {"id": N}, 1..INT64_MAX. */
int request_id_arg(const json_t *args, uint64_t *ret_id);
/* An RFC 3339 time argument (relative forms are refused on the wire). 0 with *ret untouched when
 * absent and not required. */
int time_arg(const json_t *args, const char *name, bool required, int64_t *ret);
/* The committed dataset `name`, or -ENOENT with err_detail(). */
int get_dataset(struct conn *c, const char *name, struct store_dataset_info *ret_info);
