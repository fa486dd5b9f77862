/* crypto: library start-up, process hardening, random bytes, keys and key wrapping. */
#include "crypto/crypto.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sodium.h>

#include "common/common.h"

/* The 24-byte XChaCha20 nonce leads a wrapped key, then the ciphertext, then the tag. */
#define WRAP_NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define WRAP_CT_OFF WRAP_NONCE_LEN
#define WRAP_TAG_OFF (WRAP_CT_OFF + CRYPTO_KEY_LEN)

_Static_assert(WRAP_TAG_OFF + crypto_aead_xchacha20poly1305_ietf_ABYTES == CRYPTO_WRAPPED_KEY_LEN,
	       "wrapped key layout");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == CRYPTO_KEY_LEN, "key size");

/* ---- The key slab ----------------------------------------------------------------------------
 *
 * Every crypto_key is one CRYPTO_KEY_LEN slot of a process-wide slab, not a sodium_malloc
 * allocation of its own: sodium_malloc maps, locks and protects three or four pages per key and
 * unmaps them on free, and the daemon creates and frees an object key on every open (issue 13:
 * about 13 % of the daemon's CPU in mprotect and TLB shootdowns on a small-file workload).
 *
 * The slab is a chain of segments, each mapped once (anonymous, private), with a PROT_NONE guard
 * page on either side, locked (mlock), excluded from core dumps (MADV_DONTDUMP; the daemon is
 * also not dumpable at all: crypto_harden_process), and never unmapped while the process lives. A freed slot is
 * wiped (sodium_memzero) before it goes back on the free list, so no key bytes stay in a free
 * slot. Segments are added on demand, up to a cap on the number of live keys (SLAB_KEYS_MAX, or
 * crypto_key_slab_limit()); past it a new key fails with -EMFILE, a clear error, never a crash.
 * What is lost against sodium_malloc: the per-key read-only protection and canary (a stray write
 * into the slab is not caught); the guard pages still stop a linear overrun at either end.
 *
 * mlock may fail for an unprivileged process over RLIMIT_MEMLOCK (enclavectl as a user): as with
 * sodium_malloc, the segment is then used unlocked rather than not at all. The daemon runs as
 * root, where it does not fail. */
#define SLAB_SEG_PAGES 16u                    /* data pages per segment */
#define SLAB_KEYS_MAX (1u << 16)              /* default cap on live keys: 2 MiB of key bytes */
#define SLAB_SEGS_MAX 64u                     /* enough segments for SLAB_KEYS_MAX at 4 KiB pages */

struct slab_seg {
	uint8_t *map;       /* guard page, data, guard page; NULL when not mapped yet */
	uint8_t *data;      /* map + page */
	size_t data_len;    /* SLAB_SEG_PAGES pages */
};

static struct {
	pthread_mutex_t lock;           /* guards everything below */
	size_t page;
	size_t slots_per_seg;
	struct slab_seg segs[SLAB_SEGS_MAX];
	unsigned nsegs;                 /* segments mapped */
	uint32_t *free_slots;           /* stack of free slot numbers (seg * slots_per_seg + i) */
	size_t nfree;
	size_t live;                    /* keys in use */
	size_t limit;                   /* cap on live keys */
} slab = { .lock = PTHREAD_MUTEX_INITIALIZER, .limit = SLAB_KEYS_MAX };

struct crypto_key {
	uint8_t bytes[CRYPTO_KEY_LEN];  /* the slot itself: a crypto_key * points into the slab */
};

/* Map, guard, lock and mark one more segment; its slots go on the free list. Under slab.lock.
 * -ENOMEM. */
static int slab_grow(void)
{
	struct slab_seg *seg;
	uint32_t *fs;
	size_t len, per;
	uint8_t *m;

	if (!slab.page) {
		long p = sysconf(_SC_PAGESIZE);

		slab.page = p > 0 ? (size_t)p : 4096;
		slab.slots_per_seg = SLAB_SEG_PAGES * slab.page / CRYPTO_KEY_LEN;
	}
	per = slab.slots_per_seg;
	if (slab.nsegs == SLAB_SEGS_MAX)
		return -ENOMEM;
	len = (SLAB_SEG_PAGES + 2) * slab.page;
	fs = reallocarray(slab.free_slots, (slab.nsegs + 1) * per, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	slab.free_slots = fs;
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -ENOMEM;
	if (mprotect(m, slab.page, PROT_NONE) < 0 ||
	    mprotect(m + len - slab.page, slab.page, PROT_NONE) < 0) {
		munmap(m, len);
		return -ENOMEM;
	}
	seg = &slab.segs[slab.nsegs];
	seg->map = m;
	seg->data = m + slab.page;
	seg->data_len = SLAB_SEG_PAGES * slab.page;
	(void)madvise(seg->data, seg->data_len, MADV_DONTDUMP);
	(void)mlock(seg->data, seg->data_len);  /* best effort, as sodium_malloc (see above) */
	/* Pushed so that the lowest slot comes off first. */
	for (size_t i = per; i-- > 0;)
		slab.free_slots[slab.nfree++] = (uint32_t)(slab.nsegs * per + i);
	slab.nsegs++;
	return 0;
}

static uint8_t *slot_addr(uint32_t slot)
{
	return slab.segs[slot / slab.slots_per_seg].data +
	       (size_t)(slot % slab.slots_per_seg) * CRYPTO_KEY_LEN;
}

/* A zeroed slot, or -EMFILE when slab.limit keys are live, -ENOMEM when no segment can be added. */
static int slot_take(crypto_key **ret_key)
{
	int r = 0;

	pthread_mutex_lock(&slab.lock);
	if (slab.live >= slab.limit)
		r = -EMFILE;
	else if (slab.nfree == 0)
		r = slab_grow();
	if (r == 0) {
		*ret_key = (crypto_key *)slot_addr(slab.free_slots[--slab.nfree]);
		slab.live++;
	}
	pthread_mutex_unlock(&slab.lock);
	return r;
}

/* Wipe the slot and put it back. A pointer that is not a slot of ours is a bug: abort rather than
 * corrupt the free list. */
static void slot_put(crypto_key *key)
{
	uint8_t *p = key->bytes;

	sodium_memzero(p, CRYPTO_KEY_LEN);
	pthread_mutex_lock(&slab.lock);
	for (unsigned s = 0; s < slab.nsegs; s++) {
		const struct slab_seg *seg = &slab.segs[s];

		if (p >= seg->data && p < seg->data + seg->data_len &&
		    (size_t)(p - seg->data) % CRYPTO_KEY_LEN == 0) {
			slab.free_slots[slab.nfree++] =
				(uint32_t)(s * slab.slots_per_seg +
					   (size_t)(p - seg->data) / CRYPTO_KEY_LEN);
			slab.live--;
			pthread_mutex_unlock(&slab.lock);
			return;
		}
	}
	pthread_mutex_unlock(&slab.lock);
	abort();
}

int crypto_key_slab_limit(size_t max_keys, size_t *ret_old)
{
	size_t cap = (size_t)SLAB_SEGS_MAX * SLAB_SEG_PAGES * 4096 / CRYPTO_KEY_LEN;

	if (max_keys == 0 || max_keys > cap)
		return -EINVAL;
	pthread_mutex_lock(&slab.lock);
	if (ret_old)
		*ret_old = slab.limit;
	slab.limit = max_keys;
	pthread_mutex_unlock(&slab.lock);
	return 0;
}

size_t crypto_key_slab_live(void)
{
	size_t n;

	pthread_mutex_lock(&slab.lock);
	n = slab.live;
	pthread_mutex_unlock(&slab.lock);
	return n;
}

/* Both libraries guard their own initialisation with a lock and return success when already
 * initialised, so calling them every time is idempotent and thread-safe without a pthread_once. */
int crypto_init(void)
{
	if (sodium_init() < 0)
		return -EIO;
	if (OPENSSL_init_crypto(0, NULL) != 1)
		return -EIO;
	return 0;
}

/* Keys live in this process's memory: keep them out of core files and away from ptrace by other
 * processes of the same user (a non-dumpable process can only be traced with CAP_SYS_PTRACE). */
int crypto_harden_process(void)
{
	const struct rlimit no_core = { .rlim_cur = 0, .rlim_max = 0 };

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return -errno;
	if (setrlimit(RLIMIT_CORE, &no_core) < 0)
		return -errno;
	return 0;
}

/* ---- Random bytes ----------------------------------------------------------------------------
 *
 * libsodium reads getrandom(2) and aborts rather than return weak bytes, hence no error path.
 * One getrandom(2) per nonce or key cost an import five system calls per small file (issue 13:
 * about 10 % of the daemon's CPU importing 4 KiB files), so small requests are served from a
 * per-thread pool of RND_POOL_BYTES. The pool is one page of its own, locked (mlock, when
 * allowed), excluded from core dumps and wiped on fork (MADV_WIPEONFORK: a child starts with an
 * empty pool and no key, and seeds its own from the kernel, so parent and child never hand out
 * the same bytes). Every byte handed out is wiped from the pool at once, so what is left in
 * memory is only bytes not yet used.
 *
 * Issue 16: the pool was filled by getrandom itself, which libsodium asks for 256 bytes a call:
 * sixteen system calls per refill, 5,800 in a version 2 of 20,000 unchanged files. It is now
 * filled from a ChaCha20 keystream under a per-thread key taken from getrandom, with fast key
 * erasure (the construction of OpenBSD's arc4random and of djb's "fast-key-erasure random-number
 * generators"): each refill draws RND_KEY_LEN + RND_POOL_BYTES bytes of keystream, the first
 * RND_KEY_LEN of which replace the key, so the page never holds a key that could regenerate a
 * byte already handed out. The key is taken from getrandom again every RND_RESEED refills
 * (about 1 MB) and after a fork. Where the page cannot be set up (no MADV_WIPEONFORK: Linux
 * before 4.14), every request goes to libsodium as before. */
#define RND_POOL_BYTES 4000u     /* fits one page with its header and key */
#define RND_SMALL_MAX 64u        /* larger requests are read directly */
#define RND_KEY_LEN crypto_stream_chacha20_KEYBYTES
#define RND_RESEED 256u          /* refills between two keys from the kernel */

struct rnd_pool {
	uint32_t avail;          /* bytes not handed out yet, at the end of bytes[]; 0 after fork */
	uint32_t refills;        /* since the key came from the kernel; 0: no key (start, fork) */
	uint8_t key[RND_KEY_LEN];  /* the keystream's key, replaced at every refill */
	uint8_t bytes[RND_POOL_BYTES];
};

_Static_assert(offsetof(struct rnd_pool, bytes) == offsetof(struct rnd_pool, key) + RND_KEY_LEN,
	       "the key and the pool are one keystream");

/* Refill the pool from the keystream, the key replaced by its first bytes (and, every
 * RND_RESEED refills and whenever there is none, first taken from the kernel). */
static void rnd_refill(struct rnd_pool *p)
{
	static const uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];   /* each key used once */
	uint8_t key[RND_KEY_LEN];

	if (p->refills % RND_RESEED == 0) {
		randombytes_buf(p->key, sizeof(p->key));
		p->refills = 0;
	}
	memcpy(key, p->key, sizeof(key));
	/* key[] and bytes[] are adjacent: one keystream covers both. */
	crypto_stream_chacha20(p->key, sizeof(p->key) + sizeof(p->bytes), nonce, key);
	sodium_memzero(key, sizeof(key));
	p->refills++;
	p->avail = sizeof(p->bytes);
}

static pthread_key_t rnd_key;
static pthread_once_t rnd_once = PTHREAD_ONCE_INIT;
static bool rnd_key_ok;
static __thread struct rnd_pool *rnd_tl;     /* this thread's pool, or NULL */
static __thread bool rnd_tl_failed;          /* setting it up failed: never try again */

static void rnd_pool_free(void *p)
{
	size_t len = (size_t)sysconf(_SC_PAGESIZE);

	if (!p)
		return;
	sodium_memzero(p, sizeof(struct rnd_pool));
	munlock(p, len);
	munmap(p, len);
}

static void rnd_key_init(void)
{
	rnd_key_ok = pthread_key_create(&rnd_key, rnd_pool_free) == 0;
}

static struct rnd_pool *rnd_pool_get(void)
{
	long page = sysconf(_SC_PAGESIZE);
	void *m;

	if (rnd_tl || rnd_tl_failed)
		return rnd_tl;
	rnd_tl_failed = true;
	pthread_once(&rnd_once, rnd_key_init);
	if (!rnd_key_ok || page < (long)sizeof(struct rnd_pool))
		return NULL;
	m = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	if (madvise(m, (size_t)page, MADV_WIPEONFORK) < 0 ||
	    madvise(m, (size_t)page, MADV_DONTDUMP) < 0 || pthread_setspecific(rnd_key, m) != 0) {
		munmap(m, (size_t)page);
		return NULL;
	}
	(void)mlock(m, (size_t)page);   /* as the key slab: unlocked rather than not at all */
	rnd_tl = m;
	rnd_tl_failed = false;
	return rnd_tl;
}

void crypto_random(void *buf, size_t n)
{
	struct rnd_pool *p = n <= RND_SMALL_MAX ? rnd_pool_get() : NULL;
	uint8_t *from;

	if (!p) {
		randombytes_buf(buf, n);
		return;
	}
	if (p->avail < n)
		rnd_refill(p);
	from = p->bytes + sizeof(p->bytes) - p->avail;
	memcpy(buf, from, n);
	sodium_memzero(from, n);
	p->avail -= (uint32_t)n;
}

/* Random key bytes are generated straight into the slab: no copy ever sits elsewhere. */
int crypto_key_generate(crypto_key **ret_key)
{
	crypto_key *key = NULL;
	int r;

	if (!ret_key)
		return -EINVAL;
	r = slot_take(&key);
	if (r < 0)
		return r;
	crypto_random(key->bytes, CRYPTO_KEY_LEN);
	*ret_key = key;
	return 0;
}

/* Copies the caller's bytes; the caller still owns (and wipes) its own copy. */
int crypto_key_from_bytes(const uint8_t bytes[static CRYPTO_KEY_LEN], crypto_key **ret_key)
{
	crypto_key *key = NULL;
	int r;

	if (!ret_key)
		return -EINVAL;
	r = slot_take(&key);
	if (r < 0)
		return r;
	memcpy(key->bytes, bytes, CRYPTO_KEY_LEN);
	*ret_key = key;
	return 0;
}

/* Borrowed pointer into the key's slot. */
const uint8_t *crypto_key_bytes(const crypto_key *key)
{
	return key->bytes;
}

/* The slot is wiped before it is reused or even listed as free. */
void crypto_key_free(crypto_key *key)
{
	if (!key)
		return;
	slot_put(key);
}

int crypto_key_rewrap(const crypto_key *from, const uint8_t wrapped[static CRYPTO_WRAPPED_KEY_LEN],
		      const uint8_t *from_ad, size_t from_ad_len, const crypto_key *to,
		      const uint8_t *to_ad, size_t to_ad_len, crypto_key *scratch,
		      uint8_t ret_wrapped[static CRYPTO_WRAPPED_KEY_LEN])
{
	int r = 0;

	if (!from || !to || !scratch || (!from_ad && from_ad_len > 0) || (!to_ad && to_ad_len > 0))
		return -EINVAL;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
		    scratch->bytes, NULL, wrapped + WRAP_CT_OFF, CRYPTO_KEY_LEN,
		    wrapped + WRAP_TAG_OFF, from_ad, from_ad_len, wrapped, from->bytes) != 0)
		r = -EBADMSG;
	else
		r = crypto_key_wrap(to, scratch, to_ad, to_ad_len, ret_wrapped) < 0 ? -EIO : 0;
	sodium_memzero(scratch->bytes, CRYPTO_KEY_LEN);
	return r;
}

/* BLAKE2b-256 keyed with the parent, over label || 0x00 || context, straight into the slab. */
int crypto_key_derive(const crypto_key *parent, const char *label, const uint8_t *context,
		      size_t context_len, crypto_key **ret_key)
{
	crypto_generichash_state st;
	crypto_key *key = NULL;
	int r;

	if (!parent || !label || (!context && context_len > 0) || !ret_key)
		return -EINVAL;
	r = slot_take(&key);
	if (r < 0)
		return r;
	crypto_generichash_init(&st, parent->bytes, CRYPTO_KEY_LEN, CRYPTO_KEY_LEN);
	crypto_generichash_update(&st, (const uint8_t *)label, strlen(label) + 1);
	if (context_len)
		crypto_generichash_update(&st, context, context_len);
	crypto_generichash_final(&st, key->bytes, CRYPTO_KEY_LEN);
	sodium_memzero(&st, sizeof(st));
	*ret_key = key;
	return 0;
}

/* The nonce is random: 192 bits make collisions negligible even for billions of wrapped keys under
 * one kek. The result is built in a local buffer (ciphertext only, no secret) so ret_wrapped is
 * only written on success. */
int crypto_key_wrap(const crypto_key *kek, const crypto_key *key, const uint8_t *ad, size_t ad_len,
		    uint8_t ret_wrapped[static CRYPTO_WRAPPED_KEY_LEN])
{
	uint8_t wrapped[CRYPTO_WRAPPED_KEY_LEN];

	if (!kek || !key || (!ad && ad_len > 0))
		return -EINVAL;
	crypto_random(wrapped, WRAP_NONCE_LEN);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
		    wrapped + WRAP_CT_OFF, wrapped + WRAP_TAG_OFF, NULL, key->bytes, CRYPTO_KEY_LEN,
		    ad, ad_len, NULL, wrapped, kek->bytes) != 0)
		return -EIO;
	memcpy(ret_wrapped, wrapped, CRYPTO_WRAPPED_KEY_LEN);
	return 0;
}

/* Decrypts straight into the slab, so the plaintext key never touches the stack. libsodium
 * checks the tag before it decrypts anything; the buffer is wiped on failure either way. */
int crypto_key_unwrap(const crypto_key *kek, const uint8_t wrapped[static CRYPTO_WRAPPED_KEY_LEN],
		      const uint8_t *ad, size_t ad_len, crypto_key **ret_key)
{
	crypto_key *key = NULL;
	int r;

	if (!kek || !ret_key || (!ad && ad_len > 0))
		return -EINVAL;
	r = slot_take(&key);
	if (r < 0)
		return r;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
		    key->bytes, NULL, wrapped + WRAP_CT_OFF, CRYPTO_KEY_LEN, wrapped + WRAP_TAG_OFF,
		    ad, ad_len, wrapped, kek->bytes) != 0) {
		crypto_key_free(key);
		return -EBADMSG;
	}
	*ret_key = key;
	return 0;
}
