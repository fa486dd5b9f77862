/* prefetch: read-ahead for sequential readers of the mount.
 *
 * A training job reads a shard front to back. With direct I/O the kernel sends the requests of
 * one read() (a request of up to 1 MiB, and often a short one for the few bytes past a page
 * boundary) and the next read() only once they have been answered, so without help the daemon
 * reads and decrypts while the reader waits, then the reader copies while the daemon waits.
 *
 * Each open file keeps a struct fusefs_ra: a few slots, each one window of the file (WINDOW
 * bytes, rounded up to whole chunks, at a multiple of its own size), holding that window
 * decrypted. When a request continues where the last one ended (or starts the file), the next
 * RA_AHEAD windows are queued for a small pool of prefetch threads, which read them from the
 * pack, authenticate and decrypt them while the worker thread answers the current request. A
 * request that lies in windows already read is answered from them: straight from the window's
 * buffer when it lies in one (the reply is copied to the kernel from there), copied together
 * when it spans two. A window queued but not yet started is read by the request that needs it.
 *
 * What it does not change: every chunk is authenticated (store_object_read, in whichever thread
 * reads the window); the policy check of each request runs in the worker before any byte of it
 * is served; a window whose read failed is dropped and the request read again by the worker, so
 * its error (and an integrity record) comes from the ordinary path.
 *
 * Memory: a handle holds at most RA_SLOTS windows; all handles together stay within the pool's
 * budget, beyond which nothing more is read ahead. Windows hold plaintext and are wiped when
 * freed. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/store.h"

#define RA_SLOTS 4
#define RA_AHEAD 2

struct fusefs_prefetch;
struct fusefs_ra;

/* One window. Guarded by the pool's lock. */
struct fusefs_ra_slot {
	struct fusefs_ra *ra;           /* its handle's state */
	struct fusefs_ra_slot *qnext;   /* the pool's queue */
	int state;                      /* enum in prefetch.c */
	unsigned refs;                  /* replies being sent from buf */
	uint64_t off;                   /* the window: [off, off+len) */
	size_t len;
	uint8_t *buf;                   /* owned; cap bytes; plaintext */
	size_t cap;
};

/* One open file's read-ahead state. */
struct fusefs_ra {
	_Atomic uint64_t next;          /* where the last request ended: the detector */
	atomic_uint active;             /* slots not idle; 0: requests skip the lock */
	const struct store_object *obj; /* borrowed from the handle; set by fusefs_ra_init */
	uint64_t window;                /* bytes per window, whole chunks */
	struct fusefs_ra_slot slot[RA_SLOTS];
};

/* A reply being sent from a window: released with fusefs_ra_put once it is sent. */
struct fusefs_ra_hold {
	struct fusefs_ra_slot *slot;    /* NULL: nothing held */
};

/* Counters (monotonic). */
struct fusefs_prefetch_stats {
	uint64_t issued;                /* windows queued */
	uint64_t hits;                  /* requests answered from windows */
};

/* Start `threads` prefetch threads (each with its own store reader) sharing at most budget
 * bytes of windows. threads 0: no pool (*ret is NULL; fusefs_ra_read then only reads). */
int fusefs_prefetch_new(struct store *st, unsigned threads, size_t budget,
			struct fusefs_prefetch **ret);
/* Stop and join the threads. Every fusefs_ra must have been released. NULL is fine. */
void fusefs_prefetch_free(struct fusefs_prefetch *p);
void fusefs_prefetch_stats_get(struct fusefs_prefetch *p, struct fusefs_prefetch_stats *ret);

/* For an object just opened; obj must outlive fusefs_ra_release. */
void fusefs_ra_init(struct fusefs_ra *ra, const struct store_object *obj);
/* Drop every window (waiting for those being read) and wipe and free them. Before the object
 * is closed. p may be NULL. */
void fusefs_ra_release(struct fusefs_prefetch *p, struct fusefs_ra *ra);

/* Read [off, off+size) of ra's object for a request: from its windows when they hold it, else
 * with rd into buf (of at least size bytes). A sequential request first queues the windows
 * ahead. Returns the bytes read, with *ret_data where they start (in buf or in a window: then
 * *hold must be given to fusefs_ra_put once the reply is sent), or store_object_read's -errno. */
ssize_t fusefs_ra_read(struct fusefs_prefetch *p, struct fusefs_ra *ra, struct store_reader *rd,
		       uint64_t off, size_t size, uint8_t *buf, const uint8_t **ret_data,
		       struct fusefs_ra_hold *hold);
void fusefs_ra_put(struct fusefs_prefetch *p, struct fusefs_ra_hold *hold);
