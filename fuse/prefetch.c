/* prefetch: read-ahead for sequential readers (fuse/prefetch.h).
 *
 * States of a window (struct fusefs_ra_slot), all under the pool's lock:
 *   IDLE    holds nothing; buf (if any) is kept for the next window
 *   QUEUED  waits on the pool's queue
 *   BUSY    being read into buf, outside the lock, by a prefetch thread or by a request that
 *           needed it before any thread took it
 *   READY   buf holds the window's len bytes of plaintext, every chunk authenticated
 * A window is reused for another only when IDLE, or READY with no reply being sent from it and
 * lying behind the reader. Requests wait for BUSY windows they need on the pool's `done`.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "fuse/prefetch.h"

#define PREFETCH_THREADS_MAX 8u
/* Window: 1 MiB, the largest FUSE request, rounded up to whole chunks. */
#define WINDOW (1u << 20)

enum { RA_IDLE, RA_QUEUED, RA_BUSY, RA_READY };

struct fusefs_prefetch {
	struct store *st;                       /* borrowed */
	pthread_mutex_t lock;                   /* guards the queue, bytes and every slot */
	pthread_cond_t work;                    /* a window was queued, or stop */
	pthread_cond_t done;                    /* a BUSY window finished, or a hold was put */
	struct fusefs_ra_slot *head, *tail;     /* the queue */
	bool stop;
	size_t bytes;                           /* sum of every slot's cap */
	size_t budget;
	unsigned nthreads;
	pthread_t threads[PREFETCH_THREADS_MAX];
	_Atomic uint64_t issued, hits;
};

static void slot_buf_free(struct fusefs_ra_slot *s)
{
	if (s->buf)
		explicit_bzero(s->buf, s->cap);
	free(s->buf);
	s->buf = NULL;
	s->cap = 0;
}

/* Lock held. Every state change goes through here, to keep ra->active true. */
static void slot_set(struct fusefs_ra_slot *s, int state)
{
	if ((s->state == RA_IDLE) != (state == RA_IDLE)) {
		if (state == RA_IDLE)
			atomic_fetch_sub(&s->ra->active, 1);
		else
			atomic_fetch_add(&s->ra->active, 1);
	}
	s->state = state;
}

/* Read window s (state BUSY, lock not held) with rd, made if *rd is NULL. True: all of it. */
static bool slot_read(struct fusefs_prefetch *p, struct fusefs_ra_slot *s,
		      struct store_reader **rd)
{
	ssize_t got = -ENOMEM;

	if (*rd || store_reader_new(p->st, rd) == 0)
		got = store_object_read(*rd, s->ra->obj, s->off, s->len, s->buf);
	return got >= 0 && (size_t)got == s->len;
}

/* Lock held: the outcome of reading s. */
static void slot_finish(struct fusefs_prefetch *p, struct fusefs_ra_slot *s, bool ok)
{
	slot_set(s, ok ? RA_READY : RA_IDLE);
	pthread_cond_broadcast(&p->done);
}

static void *prefetch_main(void *arg)
{
	struct fusefs_prefetch *p = arg;
	struct store_reader *rd = NULL;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct fusefs_ra_slot *s;
		bool ok;

		while (!p->stop && !p->head)
			pthread_cond_wait(&p->work, &p->lock);
		if (p->stop)
			break;
		s = p->head;
		p->head = s->qnext;
		if (!p->head)
			p->tail = NULL;
		s->qnext = NULL;
		slot_set(s, RA_BUSY);
		pthread_mutex_unlock(&p->lock);

		ok = slot_read(p, s, &rd);
		if (!ok) {
			/* Its ring may be the cause: a new reader for the next window. */
			store_reader_free(rd);
			rd = NULL;
		}

		pthread_mutex_lock(&p->lock);
		slot_finish(p, s, ok);
	}
	pthread_mutex_unlock(&p->lock);
	store_reader_free(rd);
	return NULL;
}

int fusefs_prefetch_new(struct store *st, unsigned threads, size_t budget,
			struct fusefs_prefetch **ret)
{
	struct fusefs_prefetch *p;

	*ret = NULL;
	if (threads == 0)
		return 0;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->st = st;
	p->budget = budget;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	threads = MIN(threads, PREFETCH_THREADS_MAX);
	for (; p->nthreads < threads; p->nthreads++) {
		int e = pthread_create(&p->threads[p->nthreads], NULL, prefetch_main, p);

		if (e != 0) {
			fusefs_prefetch_free(p);
			return -e;
		}
	}
	*ret = p;
	return 0;
}

void fusefs_prefetch_free(struct fusefs_prefetch *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void fusefs_prefetch_stats_get(struct fusefs_prefetch *p, struct fusefs_prefetch_stats *ret)
{
	*ret = (struct fusefs_prefetch_stats){ 0 };
	if (!p)
		return;
	ret->issued = atomic_load(&p->issued);
	ret->hits = atomic_load(&p->hits);
}

void fusefs_ra_init(struct fusefs_ra *ra, const struct store_object *obj)
{
	uint64_t cs = store_object_chunk_size(obj);

	memset(ra, 0, sizeof(*ra));
	atomic_init(&ra->next, 0);
	atomic_init(&ra->active, 0);
	ra->obj = obj;
	cs = cs ? cs : 1;
	ra->window = (WINDOW + cs - 1) / cs * cs;
	for (unsigned i = 0; i < RA_SLOTS; i++)
		ra->slot[i].ra = ra;
}

/* Take s off the queue (lock held; s is QUEUED). */
static void dequeue(struct fusefs_prefetch *p, struct fusefs_ra_slot *s)
{
	struct fusefs_ra_slot **pp = &p->head, *prev = NULL;

	while (*pp && *pp != s) {
		prev = *pp;
		pp = &(*pp)->qnext;
	}
	if (*pp) {
		*pp = s->qnext;
		if (p->tail == s)
			p->tail = prev;
	}
	s->qnext = NULL;
}

void fusefs_ra_release(struct fusefs_prefetch *p, struct fusefs_ra *ra)
{
	if (p) {
		pthread_mutex_lock(&p->lock);
		for (unsigned i = 0; i < RA_SLOTS; i++) {
			struct fusefs_ra_slot *s = &ra->slot[i];

			if (s->state == RA_QUEUED) {
				dequeue(p, s);
				slot_set(s, RA_IDLE);
			}
			while (s->state == RA_BUSY || s->refs)
				pthread_cond_wait(&p->done, &p->lock);
			p->bytes -= s->cap;
			slot_set(s, RA_IDLE);
			slot_buf_free(s);
		}
		pthread_mutex_unlock(&p->lock);
	}
}

/* Where the window holding offset `at` starts. */
static uint64_t window_start(const struct fusefs_ra *ra, uint64_t at)
{
	return at - at % ra->window;
}

/* The window of ra holding offset `at`, in any state but IDLE; NULL if none. Lock held. */
static struct fusefs_ra_slot *slot_find(struct fusefs_ra *ra, uint64_t at)
{
	uint64_t w = window_start(ra, at);

	for (unsigned i = 0; i < RA_SLOTS; i++)
		if (ra->slot[i].state != RA_IDLE && ra->slot[i].off == w)
			return &ra->slot[i];
	return NULL;
}

/* Make window s READY for a request that needs it: wait while another thread reads it, read it
 * here if it is still queued. False when it is not there or could not be read. Lock held; it is
 * dropped while reading. */
static bool slot_need(struct fusefs_prefetch *p, struct fusefs_ra_slot *s,
		      struct store_reader *rd, uint64_t w)
{
	for (;;) {
		if (s->state == RA_IDLE || s->off != w)
			return false;
		if (s->state == RA_READY)
			return true;
		if (s->state == RA_QUEUED) {
			bool ok;

			dequeue(p, s);
			slot_set(s, RA_BUSY);
			pthread_mutex_unlock(&p->lock);
			ok = slot_read(p, s, &rd);
			pthread_mutex_lock(&p->lock);
			slot_finish(p, s, ok);
			return ok;
		}
		pthread_cond_wait(&p->done, &p->lock);
	}
}

/* Queue the RA_AHEAD windows after the one holding `at`, each unless already held; windows
 * behind `at` that nobody replies from are reused. Lock held. */
static void queue_ahead(struct fusefs_prefetch *p, struct fusefs_ra *ra, uint64_t at)
{
	const uint64_t size = store_object_size(ra->obj);
	const uint64_t cur = window_start(ra, at);
	bool queued = false;

	for (unsigned k = 1; k <= RA_AHEAD; k++) {
		uint64_t w = cur + k * ra->window;
		struct fusefs_ra_slot *s = NULL;
		size_t len;

		if (w >= size)
			break;
		if (slot_find(ra, w))
			continue;
		for (unsigned i = 0; i < RA_SLOTS && !s; i++) {
			struct fusefs_ra_slot *c = &ra->slot[i];

			/* Idle, or read and of no more use: behind the reader, or
			 * further ahead than it reads ahead (it went back). */
			if (c->state == RA_IDLE ||
			    (c->state == RA_READY && !c->refs &&
			     (c->off + c->len <= cur || c->off > cur + RA_AHEAD * ra->window)))
				s = c;
		}
		if (!s)
			break;
		len = (size_t)MIN(ra->window, size - w);
		if (s->cap < len) {
			uint8_t *b;

			if (p->bytes - s->cap + len > p->budget)
				break;
			b = malloc(len);
			if (!b)
				break;
			p->bytes -= s->cap;
			slot_buf_free(s);
			s->buf = b;
			s->cap = len;
			p->bytes += len;
		}
		s->off = w;
		s->len = len;
		s->qnext = NULL;
		slot_set(s, RA_QUEUED);
		if (p->tail)
			p->tail->qnext = s;
		else
			p->head = s;
		p->tail = s;
		queued = true;
		atomic_fetch_add_explicit(&p->issued, 1, memory_order_relaxed);
	}
	if (queued)
		pthread_cond_broadcast(&p->work);
}

/* Answer [off, off+want) from ra's windows: 0 when they do not hold all of it. Lock held. */
static size_t from_windows(struct fusefs_prefetch *p, struct fusefs_ra *ra,
			   struct store_reader *rd, uint64_t off, size_t want, uint8_t *buf,
			   const uint8_t **ret_data, struct fusefs_ra_hold *hold)
{
	uint64_t w0 = window_start(ra, off);
	uint64_t w1 = window_start(ra, off + want - 1);
	struct fusefs_ra_slot *a = slot_find(ra, w0);
	struct fusefs_ra_slot *b = w1 != w0 ? slot_find(ra, w1) : NULL;

	if (!a || !slot_need(p, a, rd, w0))
		return 0;
	if (w1 == w0) {
		a->refs++;
		hold->slot = a;
		*ret_data = a->buf + (off - w0);
		return want;
	}
	/* Two windows (a request is at most one window long): copied together. Holding a while
	 * b is read: a reply from it cannot be in progress, refs keeps it from being reused. */
	a->refs++;
	if (!b || !slot_need(p, b, rd, w1)) {
		a->refs--;
		pthread_cond_broadcast(&p->done);
		return 0;
	}
	memcpy(buf, a->buf + (off - w0), (size_t)(w1 - off));
	memcpy(buf + (w1 - off), b->buf, want - (size_t)(w1 - off));
	a->refs--;
	pthread_cond_broadcast(&p->done);
	*ret_data = buf;
	return want;
}

ssize_t fusefs_ra_read(struct fusefs_prefetch *p, struct fusefs_ra *ra, struct store_reader *rd,
		       uint64_t off, size_t size, uint8_t *buf, const uint8_t **ret_data,
		       struct fusefs_ra_hold *hold)
{
	const uint64_t osize = store_object_size(ra->obj);
	size_t want = off < osize ? (size_t)MIN((uint64_t)size, osize - off) : 0;
	uint64_t prev = atomic_exchange_explicit(&ra->next, off + want, memory_order_relaxed);
	bool sequential = prev == off && want > 0;
	size_t got = 0;
	ssize_t n;

	hold->slot = NULL;
	/* A random reader holds no windows and never takes the lock. */
	if (p && want && want <= ra->window &&
	    (sequential || atomic_load_explicit(&ra->active, memory_order_relaxed))) {
		pthread_mutex_lock(&p->lock);
		if (sequential && !p->stop)
			queue_ahead(p, ra, off + want - 1);
		got = from_windows(p, ra, rd, off, want, buf, ret_data, hold);
		pthread_mutex_unlock(&p->lock);
	}
	if (got) {
		atomic_fetch_add_explicit(&p->hits, 1, memory_order_relaxed);
		return (ssize_t)got;
	}
	n = store_object_read(rd, ra->obj, off, size, buf);
	*ret_data = buf;
	return n;
}

void fusefs_ra_put(struct fusefs_prefetch *p, struct fusefs_ra_hold *hold)
{
	if (!hold->slot)
		return;
	pthread_mutex_lock(&p->lock);
	hold->slot->refs--;
	if (!hold->slot->refs)
		pthread_cond_broadcast(&p->done);
	pthread_mutex_unlock(&p->lock);
	hold->slot = NULL;
}
