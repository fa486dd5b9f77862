/* gc: the garbage collector (docs/FORMAT.md §10 "Garbage collection").
 *
 * Frees the pack bytes no committed version uses: the objects of erased versions and datasets,
 * and what interrupted imports left (pack files no commit names, bytes past a pack's committed
 * length, dead objects between live ones).
 *
 * Liveness comes from the index alone, and only from records that authenticate: every committed
 * version of every dataset is read in full, each record checked and the whole version checked
 * against the manifest its record holds (store_version_scan), so a record removed or edited
 * without the keys makes the collection refuse, never delete. Object keys and contents are never
 * touched: objects are moved as ciphertext, byte for byte; their chunks' associated data names
 * the object id, not the place, so they read the same wherever they lie.
 *
 * Protocol (crash-safe: a kill at any point loses no live byte):
 *   1. scan: live objects and where they are now (inode record, or its move record), the packs
 *      (committed lengths, files present), the plan: packs to remove, to compact (half dead or
 *      more), to cut back to their committed length.
 *   2. copy: the live objects of the packs to compact, byte for byte, into new packs (ids above
 *      every id ever used), fdatasync'ed, packs/ fsync'ed. Not yet committed: a kill leaves
 *      packs no record names, which the next collection removes.
 *   3. commit: one synchronous index batch: the new packs' committed lengths, a move record per
 *      moved object (sealed, bound to its object id), the retired packs' records deleted, the
 *      move records of dead objects deleted, pack_max. From here readers find the objects in
 *      their new place (store_object_locate).
 *   4. remove: the retired and uncommitted pack files are unlinked, packs cut back, packs/
 *      fsync'ed. A kill leaves files no record names: the next collection removes them.
 * Open objects keep a reference to their pack (struct pack_handle): a retired pack stays
 * readable, unlinked, until the last object open in it closes.
 *
 * The collector holds the store's import lock throughout: no import runs meanwhile (an import's
 * objects are live before it commits, and its pack bytes lie past committed lengths).
 */
#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/store_internal.h"

#define GC_OBJECTS_MAX (1u << 24)      /* live objects one collection can track */
#define GC_PACKS_MAX (1u << 20)        /* pack files and records it considers */
#define GC_COPY_BUF (4u << 20)         /* bounce buffer when copy_file_range cannot */
#define GC_PROGRESS_BYTES (64u << 20)  /* progress at least this often while copying */
#define GC_COMPACT_PERCENT 50u

/* A live object: named by at least one committed version's inode record. */
struct gc_obj {
	uint8_t id[CRYPTO_OBJECT_ID_LEN];
	uint64_t dsid;
	uint64_t pack, off;      /* where the inode records put it */
	uint64_t cur_pack, cur_off;   /* where it is now (its move record, if any) */
	uint64_t size;
	uint32_t cs;
	uint64_t span;
	uint64_t new_pack, new_off;   /* where the collection puts it (0: stays) */
	bool used;               /* slot taken */
	bool has_move;           /* a move record names it */
};

enum gc_action { GC_KEEP, GC_REMOVE, GC_COMPACT, GC_CUT };

struct gc_pack {
	uint64_t id;
	bool committed;
	uint64_t len;            /* committed length */
	bool file;               /* a regular file packs/<id>.pack exists */
	uint64_t file_size;
	uint64_t live;           /* bytes of live objects in it */
	enum gc_action action;
};

struct gc {
	struct store *st;
	const struct store_gc_options *o;
	struct store_gc_stats s;
	struct gc_obj *objs;     /* open addressing by object id; owned */
	size_t cap, n;
	struct gc_pack *packs;   /* owned, sorted by id */
	size_t npacks, packs_cap;
	uint8_t (*dead_moves)[CRYPTO_OBJECT_ID_LEN];   /* move records of dead objects; owned */
	size_t ndead_moves, dead_moves_cap;
	uint64_t *out_ids;       /* new packs written; owned */
	uint64_t *out_lens;
	size_t nout;
	uint64_t max_id;         /* highest pack id ever used */
	/* The dataset being scanned, for the per-dataset totals. */
	struct store_gc_dataset ds;
	uint64_t progress_at;
};

static void progress(struct gc *g, enum store_gc_step step, uint64_t done, uint64_t total)
{
	if (g->o->progress)
		g->o->progress(g->o->ctx, step, done, total);
}

/* ---- 1. Scan ---------------------------------------------------------------------------------- */

static size_t obj_slot(const uint8_t *id, size_t cap)
{
	return (size_t)get_le64(id) & (cap - 1);
}

static struct gc_obj *obj_find(struct gc *g, const uint8_t *id)
{
	if (!g->cap)
		return NULL;
	for (size_t i = obj_slot(id, g->cap); g->objs[i].used; i = (i + 1) & (g->cap - 1))
		if (memcmp(g->objs[i].id, id, CRYPTO_OBJECT_ID_LEN) == 0)
			return &g->objs[i];
	return NULL;
}

static int obj_grow(struct gc *g)
{
	size_t ncap = g->cap ? g->cap * 2 : 1024;
	struct gc_obj *old = g->objs, *a;

	if ((g->n + 1) * 2 <= g->cap)
		return 0;
	if (g->n >= GC_OBJECTS_MAX)
		return err_set(-E2BIG, "more than %u live objects: too many for one collection",
			       GC_OBJECTS_MAX);
	a = calloc(ncap, sizeof(*a));
	if (!a)
		return -ENOMEM;
	for (size_t i = 0; i < g->cap; i++) {
		size_t j;

		if (!old[i].used)
			continue;
		for (j = obj_slot(old[i].id, ncap); a[j].used; j = (j + 1) & (ncap - 1))
			;
		a[j] = old[i];
	}
	free(old);
	g->objs = a;
	g->cap = ncap;
	return 0;
}

/* store_version_scan callback: one file inode of a committed version. */
static int note_file(void *ctx, const struct store_inode *f)
{
	struct gc *g = ctx;
	struct gc_obj *o = obj_find(g, f->ext.object_id);
	size_t i;
	int r;

	g->ds.files++;
	if (o) {
		/* A shared object: every reference must agree on what and where it is. */
		if (o->dsid != g->ds.id || o->pack != f->ext.pack_id || o->off != f->ext.offset ||
		    o->size != inode_object_size(f) || o->cs != f->ext.chunk_size)
			return store_integrity(g->st, g->ds.id, 0, "object of inode %llu is named "
					       "elsewhere with another place or size",
					       (unsigned long long)f->ino);
		return 0;
	}
	r = obj_grow(g);
	if (r < 0)
		return r;
	for (i = obj_slot(f->ext.object_id, g->cap); g->objs[i].used; i = (i + 1) & (g->cap - 1))
		;
	g->objs[i] = (struct gc_obj){
		.dsid = g->ds.id,
		.pack = f->ext.pack_id,
		.off = f->ext.offset,
		.cur_pack = f->ext.pack_id,
		.cur_off = f->ext.offset,
		/* A tiny file's object is its group (docs/FORMAT.md 4.10): every member names
		 * the same group, which is live while any of them is. */
		.size = inode_object_size(f),
		.cs = f->ext.chunk_size,
		.span = object_span(inode_object_size(f), f->ext.chunk_size),
		.used = true,
	};
	memcpy(g->objs[i].id, f->ext.object_id, CRYPTO_OBJECT_ID_LEN);
	g->n++;
	g->ds.objects++;
	g->ds.live_bytes += g->objs[i].span;
	return 0;
}

/* Every version of one dataset: all must be committed, checked, and match their manifests. */
static int scan_dataset(void *ctx, const struct dataset_rec *rec)
{
	struct gc *g = ctx;
	struct store *st = g->st;
	struct store_dataset_info di;
	uint8_t lo[VKEY_LEN], hi[VKEY_LEN];
	rocksdb_iterator_t *it;
	bool saw_latest = false;
	int r;

	g->ds = (struct store_gc_dataset){ .id = rec->info.id };
	snprintf(g->ds.name, sizeof(g->ds.name), "%s", rec->info.name);
	/* Its latest version is checked (not lowered, not raised). */
	r = store_dataset_get(st, rec->info.name, &di);
	if (r < 0)
		return r;
	vkey(lo, rec->info.id, 0);
	vkey(hi, rec->info.id + 1, 0);
	it = index_iter(&st->ix, CF_VERSIONS);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		struct store_version_info vi;
		uint8_t m[STORE_MANIFEST_LEN];
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		uint32_t state = 0, ver;

		if (kl != VKEY_LEN || memcmp(k, hi, VKEY_LEN) >= 0)
			break;
		ver = get_be32((const uint8_t *)k + 8);
		r = version_value_state(v, vl, &state);
		if (r == 0 && state == VERSION_ERASED) {
			/* An erased version's tombstone: it names no object. It must authenticate
			 * (store_version_get() opens it and says "erased"), or a committed version
			 * whose clear state byte was flipped would look erased and its objects dead. */
			r = store_version_get(st, rec->info.id, ver, &vi);
			if (r == -ENOENT) {
				err_clear();
				saw_latest |= ver == di.latest_version;
				continue;
			}
			if (r == 0)
				r = store_integrity(st, rec->info.id, ver, "version %u of dataset %llu "
						    "says erased in clear but not inside its seal",
						    ver, (unsigned long long)rec->info.id);
			break;
		}
		if (r == 0 && state != VERSION_COMMITTED)
			/* Recovery removed every pending version at open, and no import runs. */
			r = store_integrity(st, rec->info.id, ver, "version %u of dataset %llu is "
					    "not committed while no import runs", ver,
					    (unsigned long long)rec->info.id);
		if (r == 0)
			r = store_version_get(st, rec->info.id, ver, &vi);
		if (r == 0)
			r = store_version_scan(st, rec->info.id, ver, note_file, g, m);
		if (r == 0 && sodium_memcmp(m, vi.manifest, sizeof(m)) != 0)
			r = store_integrity(st, rec->info.id, ver, "version %u of dataset %llu does "
					    "not match its manifest (a record was removed or added)",
					    ver, (unsigned long long)rec->info.id);
		if (r < 0)
			break;
		saw_latest |= ver == di.latest_version;
		g->ds.versions++;
	}
	r = index_iter_close(&st->ix, it, r, "scan of versions");
	if (r == 0 && !saw_latest)
		r = store_integrity(st, rec->info.id, di.latest_version, "dataset %llu has no "
				    "record of its latest version", (unsigned long long)rec->info.id);
	if (r == 0 && g->o->dataset)
		r = g->o->dataset(g->o->ctx, &g->ds);
	return r;
}

/* Datasets known by id, to find records of none. */
struct id_set {
	uint64_t *ids;
	size_t n, cap;
};

static int note_id(void *ctx, const struct dataset_rec *rec)
{
	struct id_set *s = ctx;

	if (s->n == s->cap) {
		size_t n = s->cap ? s->cap * 2 : 64;
		uint64_t *a = reallocarray(s->ids, n, sizeof(*a));

		if (!a)
			return -ENOMEM;
		s->ids = a;
		s->cap = n;
	}
	s->ids[s->n++] = rec->info.id;
	return 0;
}

static bool id_known(const struct id_set *s, uint64_t id)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->ids[i] == id)
			return true;
	return false;
}

/* The inode records and entries of version ver of dataset id belong to a committed version
 * (scan_dataset() has authenticated every version record of the datasets there are): records of
 * an erased version (put back from a copy of the index taken before the erasure) or of a version
 * without a record are orphans, which no listing or lookup reaches (they hang under no committed
 * version's tree) and which would bring back names and metadata an erasure removed. */
static int version_owns_records(struct gc *g, enum store_cf cf, uint64_t id, uint32_t ver)
{
	uint8_t vk[VKEY_LEN];
	uint32_t state = 0;
	char *v = NULL;
	size_t n = 0;
	int r;

	vkey(vk, id, ver);
	r = index_get(&g->st->ix, CF_VERSIONS, vk, sizeof(vk), &v, &n);
	if (r == -ENOENT)
		return store_integrity(g->st, id, ver, "%s of version %u of dataset %llu remain "
				       "without its version record (orphan records)",
				       cf == CF_INODES ? "inode records" : "directory entries", ver,
				       (unsigned long long)id);
	if (r < 0)
		return r;
	r = version_value_state(v, n, &state);
	free(v);
	if (r < 0)
		return store_integrity(g->st, id, ver, "the record of version %u of dataset %llu "
				       "is malformed", ver, (unsigned long long)id);
	if (state == VERSION_ERASED)
		return store_integrity(g->st, id, ver, "%s of version %u of dataset %llu remain "
				       "after its erasure (orphan records)",
				       cf == CF_INODES ? "inode records" : "directory entries", ver,
				       (unsigned long long)id);
	if (state != VERSION_COMMITTED)
		return store_integrity(g->st, id, ver, "version %u of dataset %llu is not "
				       "committed while no import runs", ver,
				       (unsigned long long)id);
	return 0;
}

/* Every version, inode and entry record belongs to a dataset that has a record, and every inode
 * and entry record to a committed version of it: records of a dataset whose record was removed
 * would otherwise make its objects look dead, and records no committed version accounts for
 * (orphans) would go unnoticed by every read. Within a committed version, an inode record that no
 * entry names is found by its scan (store_version_scan()). */
static int check_orphans(struct gc *g)
{
	static const enum store_cf cfs[] = { CF_VERSIONS, CF_INODES, CF_DIRENTS };
	struct id_set s = { 0 };
	int r = index_datasets_foreach(g->st, note_id, &s);

	for (size_t c = 0; r == 0 && c < ARRAY_SIZE(cfs); c++) {
		rocksdb_iterator_t *it = index_iter(&g->st->ix, cfs[c]);

		/* One seek per dataset id met (the ids are the keys' first 8 bytes), and for
		 * inodes and entries one per version (the next 4). */
		for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it);) {
			size_t kl;
			const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
			uint64_t id;
			uint32_t ver;
			uint8_t next[VKEY_LEN];

			if (kl < 8 || (cfs[c] != CF_VERSIONS && kl < VKEY_LEN)) {
				r = store_integrity(g->st, 0, 0, "an index key is malformed");
				break;
			}
			id = get_be64(k);
			if (!id_known(&s, id)) {
				r = store_integrity(g->st, id, 0, "records of dataset %llu remain "
						    "without its dataset record",
						    (unsigned long long)id);
				break;
			}
			if (cfs[c] != CF_VERSIONS) {
				ver = get_be32(k + 8);
				r = version_owns_records(g, cfs[c], id, ver);
				if (r < 0)
					break;
				if (ver != UINT32_MAX) {
					vkey(next, id, ver + 1);
					rocksdb_iter_seek(it, (const char *)next, sizeof(next));
					continue;
				}
			}
			if (id == UINT64_MAX)
				break;
			put_be64(next, id + 1);
			rocksdb_iter_seek(it, (const char *)next, 8);
		}
		r = index_iter_close(&g->st->ix, it, r, "scan for orphan records");
	}
	free(s.ids);
	return r;
}

/* The move records: where moved live objects are now; those of dead objects are noted to go. */
static int scan_moves(struct gc *g)
{
	rocksdb_iterator_t *it;
	const crypto_key *mk = NULL;
	int r;

	/* The records and their key of one record key generation (a node removal re-keys them). */
	store_rekey_rdlock(g->st);
	r = store_move_key(g->st, &mk);
	if (r < 0) {
		store_rekey_rdunlock(g->st);
		return r;
	}
	it = index_iter(&g->st->ix, CF_META);

	for (rocksdb_iter_seek(it, "move/", 5); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		uint8_t pt[MOVE_PLAIN_LEN];
		size_t kl, vl, pl = 0;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		struct gc_obj *o;

		if (kl < 5 || memcmp(k, "move/", 5) != 0)
			break;
		if (kl != MOVEKEY_LEN ||
		    index_unseal(mk, CF_META, k, kl, 0, v, vl, pt, sizeof(pt), &pl) < 0 ||
		    pl != MOVE_PLAIN_LEN || pt[0] != 1) {
			r = store_integrity(g->st, 0, 0, "a move record does not authenticate");
			break;
		}
		o = obj_find(g, (const uint8_t *)k + 5);
		if (o) {
			o->cur_pack = get_le64(pt + 1);
			o->cur_off = get_le64(pt + 9);
			o->has_move = true;
			continue;
		}
		if (g->ndead_moves == g->dead_moves_cap) {
			size_t n = g->dead_moves_cap ? g->dead_moves_cap * 2 : 64;
			uint8_t(*a)[CRYPTO_OBJECT_ID_LEN] = reallocarray(g->dead_moves, n,
									  sizeof(*a));

			if (!a) {
				r = -ENOMEM;
				break;
			}
			g->dead_moves = a;
			g->dead_moves_cap = n;
		}
		memcpy(g->dead_moves[g->ndead_moves++], k + 5, CRYPTO_OBJECT_ID_LEN);
	}
	r = index_iter_close(&g->st->ix, it, r, "scan of move records");
	store_rekey_rdunlock(g->st);
	return r;
}

static struct gc_pack *pack_find(struct gc *g, uint64_t id)
{
	ssize_t i = sorted_find_u64(g->packs, g->npacks, sizeof(*g->packs),
				    offsetof(struct gc_pack, id), id);

	return i < 0 ? NULL : &g->packs[i];
}

static int pack_add(struct gc *g, uint64_t id, struct gc_pack **ret)
{
	struct gc_pack *p = pack_find(g, id);
	size_t at;

	if (p) {
		*ret = p;
		return 0;
	}
	if (g->npacks >= GC_PACKS_MAX)
		return err_set(-E2BIG, "more than %u packs", GC_PACKS_MAX);
	p = sorted_insert_u64(g->packs, &g->npacks, &g->packs_cap, 64, sizeof(*p),
			      offsetof(struct gc_pack, id), id, &at);
	if (!p)
		return -ENOMEM;
	g->packs = p;
	p[at] = (struct gc_pack){ .id = id };
	g->max_id = MAX(g->max_id, id);
	*ret = &p[at];
	return 0;
}

/* The packs: committed ones from the store's table (the index's pack records), files from
 * packs/. Only canonical names count; anything else in packs/ is not ours and is left alone. */
static int scan_packs_dir(struct gc *g)
{
	struct store *st = g->st;
	struct gc_pack *p;
	DIR *d = NULL;
	int dfd, r = 0;

	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; r == 0 && i < st->npacks; i++) {
		r = pack_add(g, st->packs[i].id, &p);
		if (r == 0) {
			p->committed = true;
			p->len = st->packs[i].len;
		}
	}
	g->max_id = MAX(g->max_id, st->pack_file_max);
	pthread_mutex_unlock(&st->lock);
	if (r < 0)
		return r;
	dfd = openat(st->packs_dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || !(d = fdopendir(dfd))) {
		r = err_set(-errno, "cannot list packs: %s", strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return r;
	}
	for (struct dirent *de; (de = readdir(d));) {
		unsigned long long id;
		char tail[8], expect[32];
		struct stat sb;

		if (sscanf(de->d_name, "%16llx%7s", &id, tail) != 2 || strcmp(tail, ".pack") != 0)
			continue;
		pack_name(expect, sizeof(expect), id);
		if (strcmp(expect, de->d_name) != 0 || id == 0)
			continue;
		/* A symbolic link or anything else planted under a pack's name is not a pack: it is
		 * neither read nor counted (unlinking a link would remove only the link). */
		if (fstatat(st->packs_dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode))
			continue;
		r = pack_add(g, id, &p);
		if (r < 0)
			break;
		p->file = true;
		p->file_size = (uint64_t)sb.st_size;
	}
	closedir(d);
	return r;
}

/* Where the live objects are, checked against the packs; then what to do with each pack. */
static int plan(struct gc *g)
{
	unsigned pct = g->o->compact_percent ? g->o->compact_percent : GC_COMPACT_PERCENT;

	for (size_t i = 0; i < g->cap; i++) {
		struct gc_obj *o = &g->objs[i];
		struct gc_pack *p;

		if (!o->used)
			continue;
		p = pack_find(g, o->cur_pack);
		/* The index names this object here: its pack must be committed, present and long
		 * enough, or the store is damaged and nothing is collected. */
		if (!p || !p->committed)
			return store_integrity(g->st, o->dsid, 0, "a live object of dataset %llu is "
					       "in pack %016llx, which is not committed%s",
					       (unsigned long long)o->dsid,
					       (unsigned long long)o->cur_pack,
					       o->cur_pack != o->pack || o->has_move ? "" :
					       " (and no move record names it)");
		if (!p->file)
			return err_set(-EUCLEAN, "pack %016llx is missing: its live objects cannot be "
				       "read; nothing is collected on a damaged store",
				       (unsigned long long)p->id);
		if (o->cur_off < PACK_HEADER_LEN || o->cur_off + o->span > p->len ||
		    p->len > p->file_size)
			return store_integrity(g->st, o->dsid, 0, "a live object lies outside the "
					       "committed part of pack %016llx",
					       (unsigned long long)p->id);
		p->live += o->span;
		g->s.live_bytes += o->span;
		g->s.live_objects++;
	}
	for (size_t i = 0; i < g->npacks; i++) {
		struct gc_pack *p = &g->packs[i];
		uint64_t body;

		if (!p->file)
			continue;   /* committed, no file, nothing live in it: its record goes */
		g->s.packs++;
		g->s.pack_bytes += p->file_size;
		body = p->file_size > PACK_HEADER_LEN ? p->file_size - PACK_HEADER_LEN : 0;
		g->s.dead_bytes += body - MIN(body, p->live);
		if (!p->committed || p->live == 0) {
			p->action = GC_REMOVE;
			g->s.reclaimable_bytes += p->file_size;
		} else if ((p->len - PACK_HEADER_LEN - MIN(p->len - PACK_HEADER_LEN, p->live)) * 100 >=
			   (uint64_t)pct * (p->len - PACK_HEADER_LEN)) {
			p->action = GC_COMPACT;
			g->s.reclaimable_bytes += p->file_size - p->live;
		} else if (p->file_size > p->len) {
			p->action = GC_CUT;
			g->s.reclaimable_bytes += p->file_size - p->len;
		}
	}
	for (size_t i = 0; i < g->npacks; i++) {
		struct gc_pack *p = &g->packs[i];

		g->s.packs_removed += p->action == GC_REMOVE || p->action == GC_COMPACT;
		g->s.packs_compacted += p->action == GC_COMPACT;
		g->s.packs_cut += p->action == GC_CUT;
	}
	return 0;
}

/* ---- 2. Copy ---------------------------------------------------------------------------------- */

static int obj_order(const void *a, const void *b)
{
	const struct gc_obj *x = *(struct gc_obj *const *)a, *y = *(struct gc_obj *const *)b;

	if (x->cur_pack != y->cur_pack)
		return x->cur_pack < y->cur_pack ? -1 : 1;
	return x->cur_off < y->cur_off ? -1 : x->cur_off > y->cur_off;
}

/* Copy len bytes at off_in of in to off_out of out: in the kernel where it can, else through buf. */
static int copy_range(int in, uint64_t off_in, int out, uint64_t off_out, uint64_t len,
		      uint8_t *buf)
{
	while (len > 0) {
		loff_t a = (loff_t)off_in, b = (loff_t)off_out;
		ssize_t n = copy_file_range(in, &a, out, &b, (size_t)MIN(len, (uint64_t)GC_COPY_BUF),
					    0);

		if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
			      errno == EOPNOTSUPP)) {
			size_t m = (size_t)MIN(len, (uint64_t)GC_COPY_BUF);
			ssize_t got = pread_full(in, buf, m, off_in);
			int e;

			if (got < 0)
				return (int)got;
			if ((size_t)got != m)
				return -ENODATA;
			e = pwrite_all(out, buf, m, off_out);
			if (e < 0)
				return e;
			n = (ssize_t)m;
		} else if (n < 0) {
			return -errno;
		} else if (n == 0) {
			return -ENODATA;   /* the source is shorter than its committed length */
		}
		off_in += (uint64_t)n;
		off_out += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* Finish an output pack: its length aligned (zeros), durable. */
static int out_close(struct gc *g, int fd, uint64_t id, uint64_t end)
{
	uint64_t len = ALIGN_UP(end, (uint64_t)STORE_ALIGN);

	if (ftruncate(fd, (off_t)len) < 0 || fdatasync(fd) < 0)
		return err_set(-errno, "pack %016llx: cannot make it durable: %s",
			       (unsigned long long)id, strerror(errno));
	g->out_lens[g->nout - 1] = len;
	return 0;
}

static int copy_live(struct gc *g)
{
	struct store *st = g->st;
	struct gc_obj **list = NULL;
	uint8_t *buf = NULL;
	size_t n = 0;
	uint64_t total = 0, done = 0, wpos = 0, in_id = 0;
	int in = -1, out = -1, r = 0;
	char name[32];

	for (size_t i = 0; i < g->cap; i++) {
		struct gc_pack *p;

		if (!g->objs[i].used)
			continue;
		p = pack_find(g, g->objs[i].cur_pack);
		if (p->action == GC_COMPACT) {
			n++;
			total += g->objs[i].span;
		}
	}
	if (n == 0)
		return 0;
	list = calloc(n, sizeof(*list));
	buf = malloc(GC_COPY_BUF);
	/* At most one output pack per pack_target of data, plus one for each object larger. */
	g->out_ids = calloc(n + 1, sizeof(*g->out_ids));
	g->out_lens = calloc(n + 1, sizeof(*g->out_lens));
	if (!list || !buf || !g->out_ids || !g->out_lens) {
		r = -ENOMEM;
		goto out;
	}
	n = 0;
	for (size_t i = 0; i < g->cap; i++)
		if (g->objs[i].used && pack_find(g, g->objs[i].cur_pack)->action == GC_COMPACT)
			list[n++] = &g->objs[i];
	qsort(list, n, sizeof(*list), obj_order);

	for (size_t i = 0; i < n; i++) {
		struct gc_obj *o = list[i];
		bool dense = object_dense(o->size, o->cs);

		if (o->cur_pack != in_id) {
			if (in >= 0)
				close(in);
			in_id = o->cur_pack;
			pack_name(name, sizeof(name), in_id);
			in = openat(st->packs_dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (in < 0) {
				r = err_set(-errno, "cannot open pack %s: %s", name, strerror(errno));
				goto out;
			}
			r = pack_check_header(in, st->store_id, in_id);
			if (r < 0)
				goto out;
		}
		if (!dense)
			wpos = ALIGN_UP(wpos, (uint64_t)STORE_ALIGN);
		if (out < 0 || (wpos > PACK_HEADER_LEN &&
				ALIGN_UP(wpos, (uint64_t)STORE_ALIGN) + o->span > st->pack_target)) {
			if (out >= 0) {
				r = out_close(g, out, g->out_ids[g->nout - 1], wpos);
				close(out);
				out = -1;
				if (r < 0)
					goto out;
			}
			/* Above every id ever used: never one a record or a reader knew. */
			g->max_id++;
			out = pack_create(st->packs_dirfd, st->store_id, g->max_id);
			if (out < 0) {
				r = out;
				goto out;
			}
			g->out_ids[g->nout++] = g->max_id;
			wpos = PACK_HEADER_LEN;
		}
		r = copy_range(in, o->cur_off, out, wpos, o->span, buf);
		if (r < 0) {
			r = err_set(r, "pack %016llx: cannot copy an object at %llu: %s",
				    (unsigned long long)in_id, (unsigned long long)o->cur_off,
				    strerror(-r));
			goto out;
		}
		o->new_pack = g->out_ids[g->nout - 1];
		o->new_off = wpos;
		wpos += o->span;
		done += o->span;
		g->s.objects_moved++;
		g->s.bytes_copied += o->span;
		if (done - g->progress_at >= GC_PROGRESS_BYTES || i + 1 == n) {
			g->progress_at = done;
			progress(g, STORE_GC_COPIED, done, total);
		}
	}
	r = out_close(g, out, g->out_ids[g->nout - 1], wpos);
	if (r == 0 && fsync_dirfd(st->packs_dirfd) < 0)
		r = err_set(-errno, "packs directory: fsync failed: %s", strerror(errno));
	g->s.packs_written = g->nout;
out:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	free(list);
	free(buf);
	return r;
}

/* Remove the output packs of a collection that did not commit. */
static void unlink_outputs(struct gc *g)
{
	char name[32];

	for (size_t i = 0; i < g->nout; i++) {
		pack_name(name, sizeof(name), g->out_ids[i]);
		unlinkat(g->st->packs_dirfd, name, 0);
	}
	g->nout = 0;
}

/* ---- 3. Commit -------------------------------------------------------------------------------- */

static int commit(struct gc *g)
{
	struct store *st = g->st;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	struct buf sealed;
	uint8_t k[MOVEKEY_LEN], pk[PACKKEY_LEN], v[8], pt[MOVE_PLAIN_LEN];
	const crypto_key *mk = NULL;
	int r;

	/* Sealed under the move key of the record key generation in use, until written (a node
	 * removal's rotation waits for the batch). */
	store_rekey_rdlock(st);
	r = store_move_key(st, &mk);
	buf_init(&sealed, 4096);
	for (size_t i = 0; i < g->nout; i++) {
		packkey(pk, g->out_ids[i]);
		put_le64(v, g->out_lens[i]);
		rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], (const char *)pk, sizeof(pk),
					  (const char *)v, sizeof(v));
	}
	for (size_t i = 0; r == 0 && i < g->cap; i++) {
		struct gc_obj *o = &g->objs[i];

		if (!o->used || !o->new_pack)
			continue;
		movekey(k, o->id);
		pt[0] = 1;
		put_le64(pt + 1, o->new_pack);
		put_le64(pt + 9, o->new_off);
		buf_reset(&sealed);
		r = index_seal(mk, CF_META, k, sizeof(k), NULL, 0, pt, sizeof(pt), &sealed);
		if (r == 0)
			rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], (const char *)k, sizeof(k),
						  (const char *)sealed.data, sealed.len);
	}
	for (size_t i = 0; i < g->ndead_moves; i++) {
		movekey(k, g->dead_moves[i]);
		rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_META], (const char *)k, sizeof(k));
	}
	for (size_t i = 0; i < g->npacks; i++) {
		struct gc_pack *p = &g->packs[i];

		/* A committed pack with nothing live and no file, too: its record names nothing. */
		if (p->committed && (p->action == GC_REMOVE || p->action == GC_COMPACT ||
				     (!p->file && p->live == 0))) {
			packkey(pk, p->id);
			rocksdb_writebatch_delete_cf(wb, st->ix.cf[CF_META], (const char *)pk,
						     sizeof(pk));
		}
	}
	put_le64(v, g->max_id);
	rocksdb_writebatch_put_cf(wb, st->ix.cf[CF_META], META_PACK_MAX, strlen(META_PACK_MAX),
				  (const char *)v, sizeof(v));
	if (r == 0)
		r = index_write(&st->ix, wb, true);
	store_rekey_rdunlock(st);
	rocksdb_writebatch_destroy(wb);
	buf_free(&sealed);
	if (r < 0)
		return r;

	/* The store's view follows: new packs committed, retired ones dropped (open objects keep
	 * theirs). Objects opened from now on find the moved ones through their move records. */
	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < g->nout; i++)
		(void)store_pack_commit_locked(st, g->out_ids[i], g->out_lens[i]);
	for (size_t i = 0; i < g->npacks; i++) {
		struct gc_pack *p = &g->packs[i];

		if (p->committed && (p->action == GC_REMOVE || p->action == GC_COMPACT || !p->file))
			store_pack_retire_locked(st, p->id);
	}
	st->last_pack_id = st->npacks ? st->packs[st->npacks - 1].id : 0;
	st->last_pack_len = st->npacks ? st->packs[st->npacks - 1].len : 0;
	st->pack_file_max = MAX(st->pack_file_max, g->max_id);
	pthread_mutex_unlock(&st->lock);
	return 0;
}

/* ---- 4. Remove -------------------------------------------------------------------------------- */

static int remove_files(struct gc *g)
{
	uint64_t total = g->s.packs_removed + g->s.packs_cut, done = 0;
	char name[32];
	int r = 0;

	for (size_t i = 0; i < g->npacks; i++) {
		struct gc_pack *p = &g->packs[i];

		if (p->action == GC_KEEP)
			continue;
		pack_name(name, sizeof(name), p->id);
		if (p->action == GC_CUT) {
			int fd = openat(g->st->packs_dirfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);

			if (fd < 0 || ftruncate(fd, (off_t)p->len) < 0 || fdatasync(fd) < 0)
				r = r ?: err_set(-errno, "pack %s: cannot cut it back: %s", name,
						 strerror(errno));
			if (fd >= 0)
				close(fd);
		} else if (unlinkat(g->st->packs_dirfd, name, 0) < 0 && errno != ENOENT) {
			r = r ?: err_set(-errno, "pack %s: cannot remove it: %s", name,
					 strerror(errno));
		}
		progress(g, STORE_GC_REMOVED, ++done, total);
	}
	if (fsync_dirfd(g->st->packs_dirfd) < 0)
		r = r ?: err_set(-errno, "packs directory: fsync failed: %s", strerror(errno));
	return r;
}

/* ---- The collection --------------------------------------------------------------------------- */

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int store_gc(struct store *st, const struct store_gc_options *opts,
	     struct store_gc_stats *ret_stats)
{
	static const struct store_gc_options none = { 0 };
	struct gc g = { .st = st, .o = opts ? opts : &none };
	int r;

	err_clear();
	if (st->secondary)
		return err_set(-EROFS, "a node never collects garbage: the primary does");
	if (!store_import_lock_take(st))
		return err_set(-EBUSY, "an import or a garbage collection is running on this store");
	__atomic_store_n(&st->gc_running, true, __ATOMIC_RELAXED);

	r = index_datasets_foreach(st, scan_dataset, &g);
	if (r == 0)
		r = check_orphans(&g);
	if (r == 0)
		r = scan_moves(&g);
	if (r == 0)
		r = scan_packs_dir(&g);
	if (r == 0)
		r = plan(&g);
	if (r < 0)
		goto out;
	progress(&g, STORE_GC_SCANNED, g.s.live_objects, g.s.reclaimable_bytes);
	/* Nothing to free and no record to drop: nothing changes. */
	if (g.o->dry_run || (g.s.reclaimable_bytes == 0 && g.ndead_moves == 0))
		goto done;

	r = copy_live(&g);
	if (r == 0)
		progress(&g, STORE_GC_SYNCED, g.nout, g.nout);
	if (r == 0 && g.o->before_commit)
		r = g.o->before_commit(g.o->ctx, &g.s);
	if (r == 0)
		r = commit(&g);
	if (r < 0) {
		unlink_outputs(&g);
		goto out;
	}
	progress(&g, STORE_GC_COMMITTED, 0, 0);
	/* Nodes may still read the retired packs through a view older than this commit: they get
	 * the grace to catch up (a node that lags more is stale and refuses opens). The import
	 * lock stays held: a pack to be cut back must not grow meanwhile. */
	if (g.o->remove_delay_ms && (g.s.packs_removed || g.s.packs_compacted))
		sleep_ms(g.o->remove_delay_ms);
	/* Committed: from here on, a failure leaves only files the next collection removes. */
	r = remove_files(&g);
	if (r < 0)
		goto out;
done:
	progress(&g, STORE_GC_DONE, g.s.reclaimable_bytes, g.s.reclaimable_bytes);
	*ret_stats = g.s;
out:
	__atomic_store_n(&st->gc_running, false, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&st->import_lock);
	free(g.objs);
	free(g.packs);
	free(g.dead_moves);
	free(g.out_ids);
	free(g.out_lens);
	return r;
}
