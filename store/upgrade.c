/* upgrade: convert a format 1 store (clear index) to format 2 (sealed index) in place, crash-safe
 * (docs/FORMAT.md "Upgrade from format 1").
 *
 * The new index is built beside the old one, in index.new/, from the old records; nothing of the
 * old store changes until it is complete, closed (RocksDB syncs its files) and checked. Then one
 * small marker file, UPGRADE, is written and synced: from that moment the upgrade is decided, and
 * finishing it needs no key, only renames:
 *
 *   <part> -> <part>.old,  <part>.new -> <part>,  remove <part>.old,  remove UPGRADE
 *
 * for every part the marker lists ("index", and "audit": `store upgrade` converts the audit log
 * in cli/upgrade.c). Every store_open() first runs store_upgrade_recover(): with a marker it
 * finishes these steps, each of which it can tell is done from what exists; without one it
 * removes a leftover <part>.new, the remains of an upgrade killed before it decided. A kill -9
 * anywhere therefore leaves a store that opens either as format 1 (refused, with the upgrade command named, and the upgrade can run
 * again) or as format 2.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "store/store_internal.h"

#define MARKER "UPGRADE"
#define MARKER_HEAD "enclave-upgrade 2\n"
#define MARKER_MAX 256
/* Parts an upgrade may switch; a marker naming anything else is refused (it is a file on an
 * untrusted disk: it must not be able to make us rename or remove anything else). */
static const char *const parts_known[] = { "index", "audit", "keys/ring" };

static bool part_known(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(parts_known); i++)
		if (strcmp(name, parts_known[i]) == 0)
			return true;
	return false;
}

static void step(const struct store_upgrade_progress *p, enum store_upgrade_step s, uint64_t done,
		 uint64_t total)
{
	if (p && p->fn)
		p->fn(p->ctx, s, done, total);
}

/* Remove the directory tree `name` in dirfd (depth-first; no symlinks followed). Missing: 0. */
static int remove_tree(int dfd, const char *name, unsigned depth)
{
	struct stat s;
	DIR *d;
	int fd, r = 0;

	if (fstatat(dfd, name, &s, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(s.st_mode))
		return unlinkat(dfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
	if (depth > 8)
		return -ELOOP;
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		close(fd);
		return r;
	}
	for (struct dirent *de; r == 0 && (de = readdir(d));)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			r = remove_tree(dirfd(d), de->d_name, depth + 1);
	closedir(d);
	if (r == 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		r = -errno;
	return r;
}

/* A part inside a subdirectory (keys/ring): that directory is fsynced too. */
static int fsync_parent(int dirfd, const char *name)
{
	int fd, r;

	if (!strchr(name, '/'))
		return 0;
	fd = openat(dirfd, "keys", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = fsync_dirfd(fd);
	close(fd);
	return r;
}

static bool exists(int dirfd, const char *name)
{
	struct stat s;

	return fstatat(dirfd, name, &s, AT_SYMLINK_NOFOLLOW) == 0;
}

/* The decided steps, for every part in names (n of them). Each step is skipped when what it does is
 * already done, so running this again after a kill at any point finishes the job. */
static int roll_forward(int dirfd, char names[][16], size_t n, const struct store_upgrade_progress *p)
{
	char old[32], nw[32];
	int r;

	for (size_t i = 0; i < n; i++) {
		snprintf(old, sizeof(old), "%s.old", names[i]);
		snprintf(nw, sizeof(nw), "%s.new", names[i]);
		if (exists(dirfd, nw)) {
			if (exists(dirfd, names[i]) && renameat(dirfd, names[i], dirfd, old) < 0)
				return err_set(-errno, "upgrade: cannot move %s aside: %s", names[i],
					       strerror(errno));
			if ((r = fsync_dirfd(dirfd)) < 0)
				return err_set(r, "upgrade: fsync of the store directory failed");
			step(p, STORE_UPGRADE_OLD_MOVED, i + 1, n);
			if (renameat(dirfd, nw, dirfd, names[i]) < 0)
				return err_set(-errno, "upgrade: cannot put the new %s in place: %s",
					       names[i], strerror(errno));
			if ((r = fsync_dirfd(dirfd)) < 0 || (r = fsync_parent(dirfd, names[i])) < 0)
				return err_set(r, "upgrade: fsync of the store directory failed");
			step(p, STORE_UPGRADE_NEW_MOVED, i + 1, n);
		}
		r = remove_tree(dirfd, old, 0);
		if (r < 0)
			return err_set(r, "upgrade: cannot remove the old %s: %s", names[i],
				       strerror(-r));
		step(p, STORE_UPGRADE_OLD_REMOVED, i + 1, n);
	}
	if (unlinkat(dirfd, MARKER, 0) < 0 && errno != ENOENT)
		return err_set(-errno, "upgrade: cannot remove %s: %s", MARKER, strerror(errno));
	if ((r = fsync_dirfd(dirfd)) < 0)
		return err_set(r, "upgrade: fsync of the store directory failed");
	return 0;
}

/* Read and check the marker: its parts into names. -ENOENT none. */
static int marker_read(int dirfd, char names[][16], size_t cap, size_t *ret_n)
{
	char text[MARKER_MAX + 1], *line, *save = NULL;
	size_t n = 0;
	ssize_t len;
	int fd = openat(dirfd, MARKER, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return errno == ENOENT ? -ENOENT : err_set(-errno, "upgrade: cannot read %s: %s",
							   MARKER, strerror(errno));
	len = read_full(fd, text, MARKER_MAX + 1);
	close(fd);
	if (len < 0 || len > MARKER_MAX || (size_t)len < strlen(MARKER_HEAD) ||
	    memcmp(text, MARKER_HEAD, strlen(MARKER_HEAD)) != 0)
		return err_set(-EBADMSG, "upgrade: %s is not an upgrade marker of this version",
			       MARKER);
	text[len] = '\0';
	for (line = strtok_r(text + strlen(MARKER_HEAD), "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (!part_known(line) || n == cap)
			return err_set(-EBADMSG, "upgrade: %s names an unknown part", MARKER);
		snprintf(names[n++], 16, "%s", line);
	}
	if (n == 0)
		return err_set(-EBADMSG, "upgrade: %s names no part", MARKER);
	*ret_n = n;
	return 0;
}

int store_upgrade_recover(struct store *st)
{
	char names[ARRAY_SIZE(parts_known)][16];
	char nw[32];
	size_t n = 0;
	int r = marker_read(st->dirfd, names, ARRAY_SIZE(parts_known), &n);

	if (r == 0)
		return roll_forward(st->dirfd, names, n, NULL);
	if (r != -ENOENT)
		return r;
	/* Not decided: whatever an interrupted upgrade built is discarded. */
	for (size_t i = 0; i < ARRAY_SIZE(parts_known); i++) {
		snprintf(nw, sizeof(nw), "%s.new", parts_known[i]);
		r = remove_tree(st->dirfd, nw, 0);
		if (r < 0)
			return err_set(r, "upgrade: cannot remove the unfinished %s: %s", nw,
				       strerror(-r));
	}
	return 0;
}

/* ---- Building the new index ---------------------------------------------------------------- */

/* The new index and the batch being filled. */
struct conv {
	struct store *st;
	struct keyring *ring;   /* the new store's key ring, written as keys/ring.new */
	crypto_key *kn;         /* its name key (dataset name hashes) */
	struct store_index nx;
	rocksdb_writebatch_t *wb;
	struct buf plain, sealed;
	const struct store_upgrade_progress *p;
	uint64_t records;
};

#define CONV_BATCH_BYTES (4u << 20)

static int conv_put(struct conv *c, enum store_cf cf, const void *k, size_t kl, const void *v,
		    size_t vl)
{
	size_t sz = 0;
	int r;

	rocksdb_writebatch_put_cf(c->wb, c->nx.cf[cf], k, kl, v, vl);
	c->records++;
	rocksdb_writebatch_data(c->wb, &sz);
	if (sz < CONV_BATCH_BYTES)
		return 0;
	r = index_write(&c->nx, c->wb, false);
	rocksdb_writebatch_clear(c->wb);
	return r;
}

/* Seal c->plain as the value of k in cf under key, and put it. */
static int conv_put_sealed(struct conv *c, const crypto_key *key, enum store_cf cf, const void *k,
			   size_t kl, const void *clear, size_t clen)
{
	int r;

	buf_reset(&c->sealed);
	r = index_seal(key, cf, k, kl, clear, clen, c->plain.data, c->plain.len, &c->sealed);
	if (r < 0)
		return err_set(r, "upgrade: cannot seal a record: %s", strerror(-r));
	return conv_put(c, cf, k, kl, c->sealed.data, c->sealed.len);
}

static int conv_meta(struct conv *c)
{
	rocksdb_iterator_t *it = index_iter(&c->st->ix, CF_META);
	uint8_t fmt[8];
	int r = 0;

	for (rocksdb_iter_seek_to_first(it); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if ((kl == 6 && memcmp(k, "format", 6) == 0) ||
		    (kl == strlen(META_RING) && memcmp(k, META_RING, kl) == 0))
			continue;
		r = conv_put(c, CF_META, k, kl, v, vl);
	}
	r = index_iter_close(&c->st->ix, it, r, "upgrade: scan of meta");
	put_le64(fmt, STORE_FORMAT_VERSION);
	r = r ?: conv_put(c, CF_META, "format", 6, fmt, sizeof(fmt));
	/* The new ring is written with generation 1. */
	put_le64(fmt, 1);
	return r ?: conv_put(c, CF_META, META_RING, strlen(META_RING), fmt, sizeof(fmt));
}

static int conv_policy(struct conv *c)
{
	rocksdb_iterator_t *it = index_iter(&c->st->ix, CF_POLICY);
	int r = 0;

	for (rocksdb_iter_seek_to_first(it); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl == 0 || kl > STORE_POLICY_KEY_MAX || vl == 0 || vl > STORE_POLICY_VALUE_MAX) {
			r = err_set(-EBADMSG, "upgrade: a policy record is malformed");
			break;
		}
		if (c->st->format == STORE_FORMAT_V2) {
			/* Sealed under the master key's Ks already, which stays. */
			r = conv_put(c, CF_POLICY, k, kl, v, vl);
			continue;
		}
		buf_reset(&c->plain);
		r = buf_append(&c->plain, v, vl);
		if (r == 0)
			r = conv_put_sealed(c, c->st->ix_seal, CF_POLICY, k, kl, NULL, 0);
	}
	return index_iter_close(&c->st->ix, it, r, "upgrade: scan of policy records");
}


/* ---- Format 3: the key ring and the keys that move into it (docs/FORMAT.md 3.7) ------------- */

/* A fresh key Kv for version ver of dsid, into the new ring; its derived keys into *ret (seal and
 * name owned through own_seal/own_name, wrap borrowed from the ring). */
static int conv_version_keys(struct conv *c, uint64_t dsid, uint32_t ver, struct ds_keys *ret,
			     crypto_key **own_seal, crypto_key **own_name)
{
	const crypto_key *kv = NULL;
	crypto_key *k = NULL;
	int r = crypto_key_generate(&k);

	if (r == 0)
		r = keyring_put(c->ring, KEYRING_VERSION, dsid, ver, k);
	if (r == 0)
		r = keyring_get(c->ring, KEYRING_VERSION, dsid, ver, &kv);
	if (r == 0)
		r = keyring_version_keys(kv, own_seal, own_name);
	if (r < 0)
		return err_set(r, "upgrade: cannot make the key of version %u: %s", ver,
			       strerror(-r));
	*ret = (struct ds_keys){ .seal = *own_seal, .name = *own_name, .wrap = kv };
	return 0;
}

/* A file's object key, unwrapped under the dataset key (formats 1 and 2, AD "ENCLOBK1") and
 * wrapped under the version's key (format 3, AD "ENCLOBK2" with the version). */
static int conv_rewrap(uint64_t dsid, uint32_t ver, struct store_inode *in, const crypto_key *old,
		       const crypto_key *kv)
{
	uint8_t ad[OBJECT_KEY_AD_MAX];
	crypto_key *ok = NULL;
	int r;

	if (in->type != STORE_INODE_FILE)
		return 0;
	r = crypto_key_unwrap(old, in->ext.wrapped_key, ad,
			      object_key_ad(STORE_FORMAT_V2, dsid, ver, in, ad), &ok);
	if (r < 0)
		return err_set(-EBADMSG, "upgrade: the object key of inode %llu of version %u of "
			       "dataset %llu does not unwrap (altered)", (unsigned long long)in->ino,
			       ver, (unsigned long long)dsid);
	r = crypto_key_wrap(kv, ok, ad, object_key_ad(STORE_FORMAT_VERSION, dsid, ver, in, ad),
			    in->ext.wrapped_key);
	crypto_key_free(ok);
	return r;
}

/* The dataset's record in format 3: a fresh dataset key into the ring, the record sealed under
 * its record key with the id in clear, stored under the hash of its name under the ring's name
 * key. */
static int conv_dataset_rec_v3(struct conv *c, const struct dataset_rec *ds)
{
	const crypto_key *kd = NULL;
	crypto_key *k = NULL, *kdr = NULL;
	uint8_t dk[DSKEY_LEN], clear[8];
	int r = crypto_key_generate(&k);

	if (r == 0)
		r = keyring_put(c->ring, KEYRING_DATASET, ds->info.id, 0, k);
	if (r == 0)
		r = keyring_get(c->ring, KEYRING_DATASET, ds->info.id, 0, &kd);
	if (r == 0)
		r = keyring_dataset_seal_key(kd, &kdr);
	if (r < 0)
		return r;
	dskey_hash(c->kn, ds->info.name, dk);
	put_be64(clear, ds->info.id);
	buf_reset(&c->plain);
	r = dataset_rec_encode_v3(ds, &c->plain);
	if (r == 0)
		r = conv_put_sealed(c, kdr, CF_DATASETS, dk, sizeof(dk), clear, sizeof(clear));
	crypto_key_free(kdr);
	return r;
}

/* Where an inode hangs, from the old entries: parent, name, and (for directories) the digest of
 * its own entries. Inode numbers are dense, 1..files+dirs. */
struct vplace {
	uint64_t parent;
	uint32_t name_off;
	uint8_t nlen;
	uint8_t type;
	uint8_t digest[DIR_DIGEST_LEN];
};

#define UPGRADE_INODES_MAX (1ull << 28)

/* One committed version: its entries and inodes, sealed under the dataset's keys, then its version
 * record with the manifest computed on the way. */
static int conv_version(struct conv *c, const struct dataset_rec *ds, const struct ds_keys *k,
			const crypto_key *old, const struct version_rec *vr0)
{
	struct version_rec vr = *vr0;
	uint64_t dsid = ds->info.id, total = vr.info.files + vr.info.dirs, seen = 0;
	uint32_t ver = vr.info.version;
	uint8_t lo[VKEY_LEN], clear = VERSION_COMMITTED;
	struct vplace *pl = NULL;
	crypto_hasher *hf = NULL, *hd = NULL;
	rocksdb_iterator_t *it;
	struct buf names;
	int r = 0;

	if (total == 0 || total > UPGRADE_INODES_MAX)
		return err_set(-EBADMSG, "upgrade: version %u of dataset '%s' counts %llu inodes",
			       ver, ds->info.name, (unsigned long long)total);
	buf_init(&names, 1u << 30);
	pl = calloc(total + 1, sizeof(*pl));
	if (!pl || crypto_hash_new(&hf) < 0 || crypto_hash_new(&hd) < 0) {
		r = -ENOMEM;
		goto out;
	}
	vkey(lo, dsid, ver);
	/* Entries: keys become keyed hashes, the name moves into the sealed value. */
	it = index_iter(&c->st->ix, CF_DIRENTS);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl, nlen;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		struct dirent_rec d = { 0 };
		uint8_t nk[DKEY_LEN];
		uint64_t parent;

		if (kl < VKEY_LEN || memcmp(ik, lo, VKEY_LEN) != 0)
			break;
		nlen = kl > DKEY_PREFIX_LEN ? kl - DKEY_PREFIX_LEN : 0;
		if (!store_name_valid((const char *)ik + DKEY_PREFIX_LEN, nlen)) {
			r = err_set(-EBADMSG, "upgrade: a directory entry name of version %u of "
					      "dataset '%s' is malformed", ver, ds->info.name);
			break;
		}
		r = dirent_decode_v1(v, vl, &d.ino, &d.type);
		if (r < 0)
			break;
		parent = get_be64(ik + VKEY_LEN);
		if (d.ino < 2 || d.ino > total || parent == 0 || parent > total ||
		    pl[d.ino].parent) {
			r = err_set(-EBADMSG, "upgrade: version %u of dataset '%s': entry for inode "
					      "%llu out of range or repeated", ver, ds->info.name,
				    (unsigned long long)d.ino);
			break;
		}
		memcpy(d.name, ik + DKEY_PREFIX_LEN, nlen);
		pl[d.ino] = (struct vplace){ .parent = parent, .name_off = (uint32_t)names.len,
					     .nlen = (uint8_t)nlen, .type = (uint8_t)d.type };
		dirent_digest_add(k->name, pl[parent].digest, d.ino, d.type, d.name, nlen);
		r = buf_append(&names, d.name, nlen);
		if (r < 0)
			break;
		dkey(k->name, nk, dsid, ver, parent, d.name, nlen);
		buf_reset(&c->plain);
		r = dirent_rec_encode(&d, &c->plain);
		if (r == 0)
			r = conv_put_sealed(c, k->seal, CF_DIRENTS, nk, sizeof(nk), NULL, 0);
	}
	r = index_iter_close(&c->st->ix, it, r, "upgrade: scan of directory entries");
	if (r < 0)
		goto out;
	/* Inodes, in ascending number: record version 2, directories with their digest; each a
	 * leaf of the manifest. */
	it = index_iter(&c->st->ix, CF_INODES);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		struct store_inode in;
		uint64_t ino;

		if (kl < VKEY_LEN || memcmp(ik, lo, VKEY_LEN) != 0)
			break;
		ino = kl == IKEY_LEN ? get_be64(ik + VKEY_LEN) : 0;
		if (ino == 0 || ino > total) {
			r = err_set(-EBADMSG, "upgrade: version %u of dataset '%s': an inode key is "
					      "malformed or out of range", ver, ds->info.name);
			break;
		}
		r = inode_decode(ino, v, vl, &in, NULL);
		if (r < 0)
			break;
		if (ino != STORE_ROOT_INO && (!pl[ino].parent || pl[ino].type != in.type)) {
			r = err_set(-EBADMSG, "upgrade: version %u of dataset '%s': inode %llu has no "
					      "entry, or not of its type", ver, ds->info.name,
				    (unsigned long long)ino);
			break;
		}
		r = conv_rewrap(dsid, ver, &in, old, k->wrap);
		if (r < 0)
			break;
		buf_reset(&c->plain);
		r = inode_encode(&in, pl[ino].digest, &c->plain);
		if (r < 0)
			break;
		manifest_leaf(in.type == STORE_INODE_FILE ? hf : hd, ino, pl[ino].parent,
			      (const char *)names.data + pl[ino].name_off, pl[ino].nlen,
			      c->plain.data, c->plain.len);
		r = conv_put_sealed(c, k->seal, CF_INODES, ik, kl, NULL, 0);
		seen++;
	}
	r = index_iter_close(&c->st->ix, it, r, "upgrade: scan of inodes");
	if (r == 0 && seen != total)
		r = err_set(-EBADMSG, "upgrade: version %u of dataset '%s' has %llu inodes, its "
				      "record says %llu", ver, ds->info.name,
			    (unsigned long long)seen, (unsigned long long)total);
	if (r < 0)
		goto out;
	manifest_finish(ds->info.name, dsid, ver, vr.info.files, vr.info.dirs, vr.info.bytes, hf,
			hd, vr.info.manifest);
	buf_reset(&c->plain);
	r = version_rec_encode(&vr, &c->plain);
	if (r == 0)
		r = conv_put_sealed(c, k->seal, CF_VERSIONS, lo, sizeof(lo), &clear, 1);
out:
	crypto_hash_free(hf);
	crypto_hash_free(hd);
	free(pl);
	buf_free(&names);
	return r;
}

/* One dataset: every committed version (pending ones are what recovery would drop), then its own
 * record, sealed under its name's keyed hash. */
static int conv_dataset(struct conv *c, const struct dataset_rec *ds, uint64_t *versions)
{
	uint64_t dsid = ds->info.id;
	uint8_t lo[VKEY_LEN];
	rocksdb_iterator_t *it;
	crypto_key *old = NULL;
	int r = store_dataset_key(c->st, dsid, ds, &old);

	if (r < 0)
		return r;
	vkey(lo, dsid, 0);
	it = index_iter(&c->st->ix, CF_VERSIONS);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		struct version_rec vr;

		if (kl != VKEY_LEN || get_be64(ik) != dsid)
			break;
		r = version_rec_decode(v, vl, &vr);
		if (r < 0 || vr.state != VERSION_COMMITTED)
			continue;
		vr.info.dataset_id = dsid;
		vr.info.version = get_be32(ik + 8);
		if (vr.info.version > ds->info.latest_version)
			continue; /* never made visible */
		{
			struct ds_keys k;
			crypto_key *ks = NULL, *kn = NULL;

			r = conv_version_keys(c, dsid, vr.info.version, &k, &ks, &kn);
			if (r == 0)
				r = conv_version(c, ds, &k, old, &vr);
			crypto_key_free(ks);
			crypto_key_free(kn);
		}
		(*versions)++;
		step(c->p, STORE_UPGRADE_VERSION, *versions, 0);
	}
	r = index_iter_close(&c->st->ix, it, r, "upgrade: scan of versions");
	return r ?: conv_dataset_rec_v3(c, ds);
}

/* ---- From format 2 ------------------------------------------------------------------------- */

/* One committed version of a format 2 store: its entries re-keyed and its directories' digests
 * recomputed under the version's new name key, its inodes (object keys re-wrapped) and version
 * record re-sealed under its new seal key. The manifest stays the one recorded at its import
 * (the import's audit record names it). */
static int conv2_version(struct conv *c, const struct dataset_rec *ds, const struct ds_keys *ok,
			 const struct store_version_info *vi)
{
	uint64_t dsid = ds->info.id, total = vi->files + vi->dirs, seen = 0;
	uint32_t ver = vi->version;
	uint8_t lo[VKEY_LEN], clear = VERSION_COMMITTED;
	uint8_t (*dig)[DIR_DIGEST_LEN] = NULL;
	uint8_t pt[REC_PLAIN_MAX];
	struct ds_keys k;
	crypto_key *ks = NULL, *kn = NULL;
	rocksdb_iterator_t *it;
	struct version_rec vr = { .info = *vi, .state = VERSION_COMMITTED };
	int r;

	if (total == 0 || total > UPGRADE_INODES_MAX)
		return err_set(-EBADMSG, "upgrade: version %u of dataset '%s' counts %llu inodes",
			       ver, ds->info.name, (unsigned long long)total);
	r = conv_version_keys(c, dsid, ver, &k, &ks, &kn);
	if (r < 0)
		return r;
	dig = calloc(total + 1, sizeof(*dig));
	if (!dig) {
		r = -ENOMEM;
		goto out;
	}
	vkey(lo, dsid, ver);
	it = index_iter(&c->st->ix, CF_DIRENTS);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl, pl = 0, nlen;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		struct dirent_rec d;
		uint8_t nk[DKEY_LEN];
		uint64_t parent;

		if (kl < VKEY_LEN || memcmp(ik, lo, VKEY_LEN) != 0)
			break;
		if (kl != DKEY_LEN ||
		    index_unseal(ok->seal, CF_DIRENTS, ik, kl, 0, v, vl, pt, sizeof(pt), &pl) < 0 ||
		    dirent_rec_decode(pt, pl, &d) < 0) {
			r = err_set(-EBADMSG, "upgrade: an entry of version %u of dataset '%s' does "
				    "not authenticate", ver, ds->info.name);
			break;
		}
		parent = get_be64(ik + VKEY_LEN);
		nlen = strlen(d.name);
		dkey(ok->name, nk, dsid, ver, parent, d.name, nlen);
		if (memcmp(nk, ik, DKEY_LEN) != 0 || parent == 0 || parent > total || d.ino < 2 ||
		    d.ino > total) {
			r = err_set(-EBADMSG, "upgrade: an entry of version %u of dataset '%s' is out "
				    "of its place", ver, ds->info.name);
			break;
		}
		dirent_digest_add(k.name, dig[parent], d.ino, d.type, d.name, nlen);
		dkey(k.name, nk, dsid, ver, parent, d.name, nlen);
		buf_reset(&c->plain);
		r = dirent_rec_encode(&d, &c->plain);
		if (r == 0)
			r = conv_put_sealed(c, k.seal, CF_DIRENTS, nk, sizeof(nk), NULL, 0);
	}
	r = index_iter_close(&c->st->ix, it, r, "upgrade: scan of directory entries");
	if (r < 0)
		goto out;
	it = index_iter(&c->st->ix, CF_INODES);
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof(lo)); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl, pl = 0;
		const uint8_t *ik = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		struct store_inode in;
		uint64_t ino;

		if (kl < VKEY_LEN || memcmp(ik, lo, VKEY_LEN) != 0)
			break;
		ino = kl == IKEY_LEN ? get_be64(ik + VKEY_LEN) : 0;
		if (ino == 0 || ino > total ||
		    index_unseal(ok->seal, CF_INODES, ik, kl, 0, v, vl, pt, sizeof(pt), &pl) < 0 ||
		    inode_decode(ino, pt, pl, &in, NULL) < 0) {
			r = err_set(-EBADMSG, "upgrade: an inode of version %u of dataset '%s' does "
				    "not authenticate", ver, ds->info.name);
			break;
		}
		r = conv_rewrap(dsid, ver, &in, ok->wrap, k.wrap);
		buf_reset(&c->plain);
		if (r == 0)
			r = inode_encode(&in, dig[ino], &c->plain);
		if (r == 0)
			r = conv_put_sealed(c, k.seal, CF_INODES, ik, kl, NULL, 0);
		seen++;
	}
	r = index_iter_close(&c->st->ix, it, r, "upgrade: scan of inodes");
	if (r == 0 && seen != total)
		r = err_set(-EBADMSG, "upgrade: version %u of dataset '%s' has %llu inodes, its "
			    "record says %llu", ver, ds->info.name, (unsigned long long)seen,
			    (unsigned long long)total);
	if (r < 0)
		goto out;
	buf_reset(&c->plain);
	r = version_rec_encode(&vr, &c->plain);
	if (r == 0)
		r = conv_put_sealed(c, k.seal, CF_VERSIONS, lo, sizeof(lo), &clear, 1);
out:
	explicit_bzero(pt, sizeof(pt));
	free(dig);
	crypto_key_free(ks);
	crypto_key_free(kn);
	return r;
}

struct conv2_ctx {
	struct conv *c;
	uint64_t n, versions;
};

static int conv2_dataset(void *ctx, const struct store_dataset_info *info)
{
	struct conv2_ctx *x = ctx;
	struct conv *c = x->c;
	struct dataset_rec ds;
	struct ds_keys ok = { 0 };
	int r = index_dataset_get(c->st, info->name, &ds);

	if (r == 0)
		r = store_version_keys(c->st, ds.info.id, 1, &ok);
	for (uint32_t v = 1; r == 0 && v <= ds.info.latest_version; v++) {
		struct store_version_info vi;

		r = store_version_get(c->st, ds.info.id, v, &vi);
		if (r == 0)
			r = conv2_version(c, &ds, &ok, &vi);
		step(c->p, STORE_UPGRADE_VERSION, ++x->versions, 0);
	}
	store_keys_put(c->st, &ok);
	if (r == 0)
		r = conv_dataset_rec_v3(c, &ds);
	step(c->p, STORE_UPGRADE_DATASET, ++x->n, 0);
	return r;
}

static int conv_datasets(struct conv *c)
{
	rocksdb_iterator_t *it = index_iter(&c->st->ix, CF_DATASETS);
	uint64_t n = 0, versions = 0;
	int r = 0;

	for (rocksdb_iter_seek_to_first(it); r == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		char name[STORE_DATASET_NAME_MAX + 1];
		struct dataset_rec ds;
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl == 0 || kl > STORE_DATASET_NAME_MAX || memchr(k, '\0', kl)) {
			r = err_set(-EBADMSG, "upgrade: a dataset key is malformed");
			break;
		}
		memcpy(name, k, kl);
		name[kl] = '\0';
		r = dataset_rec_decode(name, v, vl, &ds);
		if (r == 0)
			r = conv_dataset(c, &ds, &versions);
		step(c->p, STORE_UPGRADE_DATASET, ++n, 0);
	}
	return index_iter_close(&c->st->ix, it, r, "upgrade: scan of datasets");
}

int store_upgrade_prepare(struct store *st, const struct store_upgrade_progress *p)
{
	struct conv c = { .st = st, .p = p };
	char path[64];
	int r;

	err_clear();
	if (st->format != STORE_FORMAT_V1 && st->format != STORE_FORMAT_V2)
		return err_set(-EALREADY, "the store's index is already format %u",
			       STORE_FORMAT_VERSION);
	/* The new key ring (docs/FORMAT.md 3.7), switched in with the index as part keys/ring. */
	r = keyring_new(st->store_id, &c.ring);
	if (r == 0) {
		const crypto_key *names = NULL;

		keyring_get(c.ring, KEYRING_NAMES, 0, 0, &names);
		r = keyring_names_key(names, &c.kn);
	}
	if (r < 0) {
		keyring_free(c.ring);
		return r;
	}
	/* A leftover of an earlier attempt goes first (store_upgrade_recover() did, at open). */
	r = remove_tree(st->dirfd, "index.new", 0);
	if (r < 0)
		return err_set(r, "upgrade: cannot remove an old index.new: %s", strerror(-r));
	if (mkdirat(st->dirfd, "index.new", 0700) < 0)
		return err_set(-errno, "upgrade: cannot create index.new: %s", strerror(errno));
	snprintf(path, sizeof(path), "/proc/self/fd/%d/index.new", st->dirfd);
	r = index_open(&c.nx, path, true);
	if (r < 0)
		return r;
	c.wb = rocksdb_writebatch_create();
	buf_init(&c.plain, STORE_POLICY_VALUE_MAX);
	buf_init(&c.sealed, STORE_POLICY_VALUE_MAX + CRYPTO_SEAL_OVERHEAD + 1);
	step(p, STORE_UPGRADE_STARTED, 0, 0);
	r = conv_meta(&c);
	if (r == 0 && st->format == STORE_FORMAT_V1) {
		r = conv_datasets(&c);
	} else if (r == 0) {
		struct conv2_ctx x = { .c = &c };

		r = store_dataset_foreach(st, conv2_dataset, &x);
	}
	if (r == 0) {
		r = conv_policy(&c);
		step(p, STORE_UPGRADE_POLICY, c.records, 0);
	}
	/* The last batch synchronously: the WAL, and with it every earlier write, is on disk. */
	if (r == 0)
		r = index_write(&c.nx, c.wb, true);
	rocksdb_writebatch_destroy(c.wb);
	if (c.plain.data)
		explicit_bzero(c.plain.data, c.plain.cap);
	buf_free(&c.plain);
	buf_free(&c.sealed);
	index_close(&c.nx);
	if (r == 0)
		r = keyring_write_as(c.ring, st->keys_dirfd, st->master, KEYRING_UPGRADE_NEW);
	keyring_free(c.ring);
	crypto_key_free(c.kn);
	if (r == 0)
		r = fsync_dirfd(st->dirfd);
	if (r == 0)
		step(p, STORE_UPGRADE_BUILT, c.records, 0);
	return r;
}

int store_upgrade_commit(struct store *st, const char *const *parts, size_t nparts,
			 const struct store_upgrade_progress *p)
{
	char names[ARRAY_SIZE(parts_known)][16];
	char text[MARKER_MAX];
	size_t len;
	int fd, r;

	if (nparts == 0 || nparts >= ARRAY_SIZE(parts_known))
		return -EINVAL;
	len = (size_t)snprintf(text, sizeof(text), "%s", MARKER_HEAD);
	for (size_t i = 0; i < nparts; i++) {
		if (!part_known(parts[i]) || strcmp(parts[i], "keys/ring") == 0)
			return -EINVAL;
		snprintf(names[i], sizeof(names[i]), "%s", parts[i]);
		len += (size_t)snprintf(text + len, sizeof(text) - len, "%s\n", parts[i]);
	}
	/* The key ring the new index needs is switched in by the same decision. */
	snprintf(names[nparts], sizeof(names[nparts]), "keys/ring");
	len += (size_t)snprintf(text + len, sizeof(text) - len, "keys/ring\n");
	nparts++;
	/* The old index is closed before anything moves: nothing reads it again. */
	index_close(&st->ix);
	fd = openat(st->dirfd, MARKER, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(-errno, "upgrade: cannot create %s: %s", MARKER, strerror(errno));
	r = pwrite_all(fd, text, len, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0)
		r = fsync_dirfd(st->dirfd);
	if (r < 0) {
		unlinkat(st->dirfd, MARKER, 0);
		return err_set(r, "upgrade: cannot write %s: %s", MARKER, strerror(-r));
	}
	step(p, STORE_UPGRADE_DECIDED, 0, 0);
	r = roll_forward(st->dirfd, names, nparts, p);
	if (r == 0)
		step(p, STORE_UPGRADE_DONE, 0, 0);
	return r;
}

int store_open_for_upgrade(const char *dir, const crypto_secret *pass, struct store **ret_store)
{
	return store_open_ex(dir, pass, NULL, STORE_OPEN_V1 | STORE_OPEN_V2, ret_store);
}

unsigned store_format(const struct store *st)
{
	return st->format;
}
