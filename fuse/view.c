/* view: each user's own inode numbers for the files of a cache=kernel dataset version.
 *
 * The kernel's page cache belongs to an inode. If two users read a cache=kernel file through the
 * same inode number, a user whose grant was revoked can go on reading pages that another, still
 * allowed, user keeps bringing back into the cache: such reads never reach the daemon. So a
 * version of a cache=kernel dataset is shown to each uid through a view of its own: the version
 * directory and everything below it get numbers made from the view id (fuse/ino.h), and the
 * dentries the kernel caches below a view's directory lead to that view's numbers only. The
 * version directory itself is looked up at every path walk (entry timeout 0), so each walk starts
 * in the caller's own view. An invalidation drops the pages of every view of the dataset; the
 * revoked user's next read reaches the daemon and is refused, whatever the others read.
 *
 * The table maps (dataset id, version, uid) to a view id, 1..FUSEFS_VIEWS_MAX, handed out in
 * order and kept for the daemon's life (a number must keep meaning the same node while the kernel
 * may still hold it). Entries are written once, before the count that publishes them (release),
 * so fusefs_view_resolve() reads them without a lock. When the table is full, versions are shown
 * through the shared numbers and their files opened with direct I/O (logged once by the caller).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "fuse/fusefs_internal.h"

#define VIEW_SLOTS (2 * FUSEFS_VIEWS_MAX)   /* open addressing, at most half full */

_Static_assert((VIEW_SLOTS & (VIEW_SLOTS - 1)) == 0, "VIEW_SLOTS is a power of two");
_Static_assert(FUSEFS_VIEWS_MAX <= FUSEFS_VIEW_MAX, "view ids fit the inode number");

struct fusefs_views {
	pthread_mutex_t lock;                        /* guards slots[] and writers of n */
	_Atomic uint32_t n;                          /* ids 1..n are in by_id[] */
	struct fusefs_view by_id[FUSEFS_VIEWS_MAX + 1];
	uint32_t slots[VIEW_SLOTS];                  /* view ids by key hash; 0: free */
};

int fusefs_views_new(struct fusefs_views **ret)
{
	struct fusefs_views *v = calloc(1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	pthread_mutex_init(&v->lock, NULL);
	*ret = v;
	return 0;
}

void fusefs_views_free(struct fusefs_views *v)
{
	if (!v)
		return;
	pthread_mutex_destroy(&v->lock);
	free(v);
}

static size_t home(uint64_t dsid, uint32_t version, uint32_t uid)
{
	uint64_t h = (dsid * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)version << 32 | uid);

	h *= 0xC2B2AE3D27D4EB4Full;
	return (size_t)(h >> 32) & (VIEW_SLOTS - 1);
}

bool fusefs_view_get(struct fusefs_views *v, uint64_t dsid, uint32_t version, uint32_t uid,
		     uint32_t *ret_id)
{
	bool ok = true;
	size_t i;

	pthread_mutex_lock(&v->lock);
	for (i = home(dsid, version, uid); v->slots[i]; i = (i + 1) & (VIEW_SLOTS - 1)) {
		const struct fusefs_view *e = &v->by_id[v->slots[i]];

		if (e->dsid == dsid && e->version == version && e->uid == uid) {
			*ret_id = v->slots[i];
			goto out;
		}
	}
	{
		uint32_t id = atomic_load_explicit(&v->n, memory_order_relaxed) + 1;

		if (id > FUSEFS_VIEWS_MAX) {
			ok = false;
			goto out;
		}
		v->by_id[id] = (struct fusefs_view){ .dsid = dsid, .version = version, .uid = uid };
		v->slots[i] = id;
		atomic_store_explicit(&v->n, id, memory_order_release);
		*ret_id = id;
	}
out:
	pthread_mutex_unlock(&v->lock);
	return ok;
}

bool fusefs_view_resolve(const struct fusefs_views *v, uint32_t id, struct fusefs_view *ret)
{
	if (id == 0 || id > atomic_load_explicit(&v->n, memory_order_acquire))
		return false;
	*ret = v->by_id[id];
	return true;
}

uint32_t fusefs_view_count(const struct fusefs_views *v)
{
	return atomic_load_explicit(&v->n, memory_order_acquire);
}

bool fusefs_node_decode(struct fusefs *fs, uint64_t ino, struct fusefs_node *ret)
{
	struct fusefs_node n;
	struct fusefs_view v;

	if (!fusefs_ino_decode(ino, &n))
		return false;
	if (n.view) {
		if (!fusefs_view_resolve(fs->views, n.view, &v))
			return false;
		n.dsid = v.dsid;
		n.version = v.version;
		n.view_uid = v.uid;
	}
	*ret = n;
	return true;
}

bool fusefs_node_child(const struct fusefs_node *dir, uint64_t sino, uint64_t *ret)
{
	if (dir->view)
		return fusefs_ino_view(dir->view, sino, ret);
	return fusefs_ino_node(dir->dsid, dir->version, sino, ret);
}
