/* walk: the source tree of an import, in a fixed order, refusing what a dataset cannot hold.
 *
 * Every entry is looked at with fstatat(AT_SYMLINK_NOFOLLOW) and opened with openat(O_NOFOLLOW)
 * relative to its parent's descriptor, so a symlink anywhere below the root is never followed and
 * a rename elsewhere cannot redirect the walk. What was listed is checked again on the opened
 * descriptor (same device and inode, same type): an entry swapped between the two is refused.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#define WALK_DIR_ENTRIES_MAX (1u << 24)

struct walker {
	const struct walk_ops *ops;
	void *ctx;
	const char *root;                 /* as the user named it; borrowed */
	char path[STORE_PATH_MAX + 1];    /* the current entry, relative to the root */
};

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
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			char **a;

			if (n >= WALK_DIR_ENTRIES_MAX) {
				r = err_set(-E2BIG, "%s: more than %u entries",
					    shown(w->root, w->path, s), WALK_DIR_ENTRIES_MAX);
				break;
			}
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
	if (S_ISREG(st.st_mode))
		return w->ops->file(w->ctx, dfd, name, w->path, &st);
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
	r = ops->dir(ctx, "", &st);
	if (r == 0)
		r = walk_dir(w, rootfd, 0, 0);
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
