/* walk: the source tree of an import, in a fixed order, refusing what a dataset cannot hold.
 *
 * Every entry is looked at with fstatat(AT_SYMLINK_NOFOLLOW) and opened with openat(O_NOFOLLOW)
 * relative to its parent's descriptor, so a symlink anywhere below the root is never followed and
 * a rename elsewhere cannot redirect the walk. What was listed is checked again on the opened
 * descriptor (same device and inode, same type): an entry swapped between the two is refused.
 *
 * walk_tree_keep() also keeps what it saw (struct walk_list: every entry's name, depth and stat,
 * in walk order), and walk_replay() then gives the same entries to other callbacks without
 * listing or stat-ing anything again: the directories are opened anew one level at a time
 * (openat(O_NOFOLLOW) from the root, each checked to be the directory that was listed, by device
 * and inode), so that a file is still opened from its own directory's descriptor, and the stat a
 * file callback gets is the one taken when it was listed. An import so looks at each entry once
 * (issue 16: one fstatat per file instead of two).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/enclavectl.h"
#include "common/common.h"
#include "common/err.h"
#include "store/store.h"

/* As the store's own importer: deeper trees and bigger directories are refused, not crashed on.
 * The depth also bounds the descriptors held open (one per level). */
#define WALK_DEPTH_MAX 256u
#ifdef ENCLAVECTL_TEST_LIMITS   /* tests/'s enclavectl-test-limits only (cli/enclavectl.h) */
#define WALK_DIR_ENTRIES_MAX 32u
#else
#define WALK_DIR_ENTRIES_MAX (1u << 24)
#endif

/* One entry kept by walk_tree_keep(): what replaying it needs, the stat fields the callbacks use
 * (a struct stat is 144 bytes; this is 64). */
struct walk_ent {
	uint64_t dev, ino;
	int64_t size;
	int64_t mtime_ns, ctime_ns;
	size_t name;                      /* offset of the name (NUL-terminated) in names */
	uint32_t mode;
	uint16_t name_len;
	uint16_t depth;                   /* 0: in the root; a directory's entries follow it at
					   * depth + 1 (walk order: depth first, sorted) */
};

struct walk_list {
	struct walk_ent *e;
	size_t n, cap;
	char *names;                      /* every name, NUL-terminated, back to back */
	size_t names_len, names_cap;
};

struct walker {
	const struct walk_ops *ops;
	void *ctx;
	const char *root;                 /* as the user named it; borrowed */
	struct walk_list *keep;           /* walk_tree_keep(): the entries seen; NULL: none kept */
	char path[STORE_PATH_MAX + 1];    /* the current entry, relative to the root */
};

void walk_list_free(struct walk_list *l)
{
	if (!l)
		return;
	free(l->e);
	free(l->names);
	free(l);
}

static const char *shown(const char *root, const char *path, char out[static 1024]);

/* Keep the entry name (len bytes) at depth with stat st. -E2BIG past WALK_KEEP_MAX entries. */
static int keep_add(struct walker *w, const char *name, size_t len, unsigned depth,
		    const struct stat *st)
{
	struct walk_list *l = w->keep;
	struct walk_ent *e;
	char s[1024];

	if (l->n >= WALK_KEEP_MAX)
		return err_set(-E2BIG, "%s: the tree holds more than %u entries; import it in parts",
			       shown(w->root, "", s), WALK_KEEP_MAX);
	if (l->n == l->cap) {
		size_t nc = l->cap ? 2 * l->cap : 1024;
		struct walk_ent *a;

		a = reallocarray(l->e, nc, sizeof(*a));
		if (!a)
			return err_set(-ENOMEM, "out of memory");
		l->e = a;
		l->cap = nc;
	}
	if (l->names_cap - l->names_len < len + 1) {
		size_t nc = l->names_cap ? 2 * l->names_cap : 16384;
		char *a;

		while (nc - l->names_len < len + 1)
			nc *= 2;
		a = realloc(l->names, nc);
		if (!a)
			return err_set(-ENOMEM, "out of memory");
		l->names = a;
		l->names_cap = nc;
	}
	e = &l->e[l->n++];
	*e = (struct walk_ent){
		.dev = (uint64_t)st->st_dev, .ino = (uint64_t)st->st_ino,
		.size = (int64_t)st->st_size,
		.mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
		.ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec,
		.name = l->names_len, .mode = (uint32_t)st->st_mode, .name_len = (uint16_t)len,
		.depth = (uint16_t)depth,
	};
	memcpy(l->names + l->names_len, name, len + 1);
	l->names_len += len + 1;
	return 0;
}

/* "root/path" made safe to print. */
static const char *shown(const char *root, const char *path, char out[static 1024])
{
	char joined[STORE_PATH_MAX + 1024];

	snprintf(joined, sizeof(joined), "%s%s%s", root, *path ? "/" : "", path);
	return out_text(joined, 0, out, 1024);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The names in the directory open at dfd (borrowed), sorted. */
static int list_dir(struct walker *w, int dfd, char ***ret_names, size_t *ret_n)
{
	char **names = NULL, s[1024];
	size_t n = 0, cap = 0;
	DIR *d;
	int fd, r = 0;

	fd = dup(dfd);
	if (fd < 0)
		return err_set(-errno, "%s: %s", shown(w->root, w->path, s), strerror(errno));
	d = fdopendir(fd);
	if (!d) {
		r = err_set(-errno, "%s: cannot list: %s", shown(w->root, w->path, s),
			    strerror(errno));
		close(fd);
		return r;
	}
	rewinddir(d);  /* the dup shares its position with dfd */
	for (;;) {
		struct dirent *de;

		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				r = err_set(-errno, "%s: cannot list: %s",
					    shown(w->root, w->path, s), strerror(errno));
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n >= WALK_DIR_ENTRIES_MAX) {
			r = err_set(-E2BIG, "%s: more than %u entries", shown(w->root, w->path, s),
				    WALK_DIR_ENTRIES_MAX);
			break;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			char **a;

			a = reallocarray(names, nc, sizeof(*a));
			if (!a) {
				r = err_set(-ENOMEM, "out of memory");
				break;
			}
			names = a;
			cap = nc;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			r = err_set(-ENOMEM, "out of memory");
			break;
		}
		n++;
	}
	closedir(d);
	if (r < 0) {
		names_free(names, n);
		return r;
	}
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	*ret_names = names;
	*ret_n = n;
	return 0;
}

static int walk_dir(struct walker *w, int dfd, size_t plen, unsigned depth);

/* One entry of the directory dfd; w->path already holds its path (plen bytes). */
static int walk_entry(struct walker *w, int dfd, const char *name, size_t plen, unsigned depth)
{
	struct stat st, st2;
	char s[1024];
	int cfd, r;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return err_set(-errno, "%s: %s", shown(w->root, w->path, s), strerror(errno));
	if (S_ISREG(st.st_mode)) {
		if (w->keep && (r = keep_add(w, name, strlen(name), depth, &st)) < 0)
			return r;
		return w->ops->file(w->ctx, dfd, name, w->path, &st);
	}
	if (!S_ISDIR(st.st_mode))
		return err_set(-EINVAL, "%s: refused: %s (only regular files and directories "
					"are imported)",
			       shown(w->root, w->path, s), file_type_name(st.st_mode));
	if (depth + 1 > WALK_DEPTH_MAX)
		return err_set(-ELOOP, "%s: nested more than %u directories deep",
			       shown(w->root, w->path, s), WALK_DEPTH_MAX);
	cfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (cfd < 0)
		return err_set(-errno, "%s: cannot open: %s", shown(w->root, w->path, s),
			       errno == ELOOP || errno == ENOTDIR ? "it changed while being read"
							     : strerror(errno));
	if (fstat(cfd, &st2) < 0) {
		r = err_set(-errno, "%s: %s", shown(w->root, w->path, s), strerror(errno));
	} else if (st2.st_dev != st.st_dev || st2.st_ino != st.st_ino) {
		r = err_set(-EINVAL, "%s: refused: it changed while being read",
			    shown(w->root, w->path, s));
	} else {
		r = w->keep ? keep_add(w, name, strlen(name), depth, &st2) : 0;
		if (r == 0)
			r = w->ops->dir(w->ctx, w->path, &st2);
		if (r == 0)
			r = walk_dir(w, cfd, plen, depth + 1);
		w->path[plen] = '\0';
		if (r == 0 && w->ops->leave)
			r = w->ops->leave(w->ctx, w->path);
	}
	close(cfd);
	return r;
}

static int walk_dir(struct walker *w, int dfd, size_t plen, unsigned depth)
{
	char **names = NULL, s[1024];
	size_t n = 0;
	int r;

	r = list_dir(w, dfd, &names, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		size_t len = strlen(names[i]);
		size_t m = plen ? plen + 1 + len : len;

		if (w->ops->stop && *w->ops->stop) {
			r = err_set(-EINTR, "interrupted");
			break;
		}
		if (m > STORE_PATH_MAX) {
			w->path[plen] = '\0';
			r = err_set(-ENAMETOOLONG, "%s/%.40s...: path longer than %u bytes",
				    shown(w->root, w->path, s), names[i], STORE_PATH_MAX);
			break;
		}
		if (plen)
			w->path[plen] = '/';
		memcpy(w->path + (plen ? plen + 1 : 0), names[i], len + 1);
		if (len > STORE_NAME_MAX || !out_utf8_valid(names[i], len))
			r = err_set(-EINVAL, "%s: refused: the name is %s",
				    shown(w->root, w->path, s),
				    len > STORE_NAME_MAX ? "longer than 255 bytes"
							 : "not valid UTF-8");
		else
			r = walk_entry(w, dfd, names[i], m, depth);
		w->path[plen] = '\0';
	}
	names_free(names, n);
	return r;
}

int walk_tree(int rootfd, const char *root, const struct walk_ops *ops, void *ctx)
{
	return walk_tree_keep(rootfd, root, ops, ctx, NULL);
}

int walk_tree_keep(int rootfd, const char *root, const struct walk_ops *ops, void *ctx,
		   struct walk_list **ret_list)
{
	struct walker *w;
	struct stat st;
	int r;

	if (fstat(rootfd, &st) < 0)
		return err_set(-errno, "%s: %s", root, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return err_set(-ENOTDIR, "%s: not a directory", root);
	/* The path buffer is 4 KiB: on the heap, not on a stack that recursion deepens. */
	w = calloc(1, sizeof(*w));
	if (!w)
		return err_set(-ENOMEM, "out of memory");
	w->ops = ops;
	w->ctx = ctx;
	w->root = root;
	if (ret_list && !(w->keep = calloc(1, sizeof(*w->keep)))) {
		free(w);
		return err_set(-ENOMEM, "out of memory");
	}
	r = ops->dir(ctx, "", &st);
	if (r == 0)
		r = walk_dir(w, rootfd, 0, 0);
	if (r == 0 && ops->leave)
		r = ops->leave(ctx, "");
	if (r == 0 && ret_list)
		*ret_list = w->keep;
	else
		walk_list_free(w->keep);
	free(w);
	return r;
}

/* The stat of a kept entry, as the callbacks use it. */
static void ent_stat(const struct walk_ent *e, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_dev = (dev_t)e->dev;
	st->st_ino = (ino_t)e->ino;
	st->st_size = (off_t)e->size;
	st->st_mode = (mode_t)e->mode;
	st->st_mtim.tv_sec = (time_t)(e->mtime_ns / 1000000000);
	st->st_mtim.tv_nsec = (long)(e->mtime_ns % 1000000000);
	st->st_ctim.tv_sec = (time_t)(e->ctime_ns / 1000000000);
	st->st_ctim.tv_nsec = (long)(e->ctime_ns % 1000000000);
	/* Times before 1970: the nanoseconds stay in [0, 1e9), as the kernel gives them. */
	if (st->st_mtim.tv_nsec < 0)
		st->st_mtim.tv_sec--, st->st_mtim.tv_nsec += 1000000000;
	if (st->st_ctim.tv_nsec < 0)
		st->st_ctim.tv_sec--, st->st_ctim.tv_nsec += 1000000000;
}

/* Open the kept directory e (its name in the directory open at dfd, its path w->path) again and
 * check that it is the one listed. */
static int reopen_dir(struct walker *w, int dfd, const char *name, const struct walk_ent *e,
		      struct stat *ret_st, int *ret_fd)
{
	char s[1024];
	int fd;

	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "%s: cannot open: %s", shown(w->root, w->path, s),
			       errno == ELOOP || errno == ENOTDIR || errno == ENOENT
				       ? "it changed while being read" : strerror(errno));
	if (fstat(fd, ret_st) < 0) {
		int err = errno;

		close(fd);
		return err_set(-err, "%s: %s", shown(w->root, w->path, s), strerror(err));
	}
	if ((uint64_t)ret_st->st_dev != e->dev || (uint64_t)ret_st->st_ino != e->ino) {
		close(fd);
		return err_set(-EINVAL, "%s: refused: it changed while being read",
			       shown(w->root, w->path, s));
	}
	*ret_fd = fd;
	return 0;
}

int walk_replay(const struct walk_list *l, int rootfd, const char *root,
		const struct walk_ops *ops, void *ctx)
{
	/* The directories open now: fds[0] the root (borrowed), fds[k] the one at level k (owned),
	 * plen[k] the length of its path; top: the deepest. Nesting is capped by the walk. */
	int fds[WALK_DEPTH_MAX + 2];
	size_t plen[WALK_DEPTH_MAX + 2];
	struct walker *w;
	struct stat st;
	unsigned top = 0;
	int r;

	if (fstat(rootfd, &st) < 0)
		return err_set(-errno, "%s: %s", root, strerror(errno));
	w = calloc(1, sizeof(*w));
	if (!w)
		return err_set(-ENOMEM, "out of memory");
	w->root = root;
	fds[0] = rootfd;
	plen[0] = 0;
	r = ops->dir(ctx, "", &st);
	for (size_t i = 0; r == 0 && i < l->n; i++) {
		const struct walk_ent *e = &l->e[i];
		const char *name = l->names + e->name;
		size_t m;

		if (ops->stop && *ops->stop) {
			r = err_set(-EINTR, "interrupted");
			break;
		}
		/* Leave the directories this entry is not in (it is in the one at level depth). */
		while (r == 0 && top > e->depth) {
			w->path[plen[top]] = '\0';
			if (ops->leave)
				r = ops->leave(ctx, w->path);
			close(fds[top--]);
		}
		if (r < 0)
			break;
		if (e->depth != top || top > WALK_DEPTH_MAX) {
			r = err_set(-EINVAL, "%s: the walk's record is out of order", root);
			break;
		}
		m = plen[top] ? plen[top] + 1 + e->name_len : e->name_len;
		if (plen[top])
			w->path[plen[top]] = '/';
		memcpy(w->path + (plen[top] ? plen[top] + 1 : 0), name, (size_t)e->name_len + 1);
		if (!S_ISDIR(e->mode)) {
			ent_stat(e, &st);
			r = ops->file(ctx, fds[top], name, w->path, &st);
			w->path[plen[top]] = '\0';
			continue;
		}
		r = reopen_dir(w, fds[top], name, e, &st, &fds[top + 1]);
		if (r < 0)
			break;
		top++;
		plen[top] = m;
		r = ops->dir(ctx, w->path, &st);
	}
	/* The directories still open, deepest first, then the root. */
	while (top > 0) {
		w->path[plen[top]] = '\0';
		if (r == 0 && ops->leave)
			r = ops->leave(ctx, w->path);
		close(fds[top--]);
	}
	if (r == 0 && ops->leave)
		r = ops->leave(ctx, "");
	free(w);
	return r;
}

int walk_open_file(int dirfd, const char *name, const char *root, const char *path,
		   const struct stat *st, int *ret_fd)
{
	struct stat now;
	char s[1024];
	int fd, fl;

	/* O_NONBLOCK: should it have become a FIFO since it was listed, do not hang on it. */
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "%s: cannot open: %s", shown(root, path, s),
			       errno == ELOOP ? "it became a symbolic link" : strerror(errno));
	if (fstat(fd, &now) < 0) {
		int e = errno;

		close(fd);
		return err_set(-e, "%s: %s", shown(root, path, s), strerror(e));
	}
	if (!S_ISREG(now.st_mode) || now.st_dev != st->st_dev || now.st_ino != st->st_ino) {
		close(fd);
		return err_set(-EINVAL, "%s: refused: it changed while being read (now %s)",
			       shown(root, path, s), file_type_name(now.st_mode));
	}
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	*ret_fd = fd;
	return 0;
}
