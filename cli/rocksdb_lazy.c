/* RocksDB loaded on first use: enclavectl's own definitions of the rocksdb_* functions the store
 * library calls, each forwarding to the real one in librocksdb, which is dlopen()ed the first time
 * any of them runs (or ctl_rocksdb_load() is called).
 *
 * Why: most commands only talk to the daemon (`dataset import` above all) and never open the
 * index, yet linking librocksdb made every run load it and libstdc++ and relocate them: 13 ms of
 * a 19 ms start, paid again by each import of a new version (issue 16 point 5). Only the offline
 * commands that open the store themselves (init, store upgrade, policy rebuild, audit new-log)
 * now load it; they call ctl_rocksdb_load() first so a missing library is a clear error, and any
 * other path to the index still works, loading it here on first use.
 *
 * The forwarders are checked against <rocksdb/c.h>: each is defined with the header's prototype
 * (a mismatch does not compile) and calls a pointer of the header's type. A store function that
 * calls a rocksdb_* function missing from the list below does not link into enclavectl (an
 * undefined reference), so the list cannot silently fall behind the store.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <rocksdb/c.h>

#include "cli/enclavectl.h"
#include "common/common.h"

#ifndef ENCLAVE_ROCKSDB_SONAME
#error "ENCLAVE_ROCKSDB_SONAME must name librocksdb's soname (cli/CMakeLists.txt)"
#endif

/* X(return type, name, (parameters), (arguments)), V(name, (parameters), (arguments)) for those
 * that return nothing: every rocksdb_* function in store/. */
#define ROCKSDB_FUNCS(X, V)                                                                          \
	X(rocksdb_block_based_table_options_t *, rocksdb_block_based_options_create, (void), ())  \
	V(rocksdb_block_based_options_destroy, (rocksdb_block_based_table_options_t * a),  \
	  (a))                                                                                    \
	V(rocksdb_block_based_options_set_block_cache,                                      \
	  (rocksdb_block_based_table_options_t * a, rocksdb_cache_t * b), (a, b))                 \
	X(rocksdb_cache_t *, rocksdb_cache_create_lru, (size_t a), (a))                           \
	V(rocksdb_cache_destroy, (rocksdb_cache_t * a), (a))                                \
	V(rocksdb_close, (rocksdb_t * a), (a))                                              \
	V(rocksdb_column_family_handle_destroy, (rocksdb_column_family_handle_t * a), (a))  \
	V(rocksdb_compact_range_cf_opt,                                                     \
	  (rocksdb_t * a, rocksdb_column_family_handle_t * b, rocksdb_compactoptions_t * c,       \
	   const char *d, size_t e, const char *f, size_t g),                                     \
	  (a, b, c, d, e, f, g))                                                                  \
	X(rocksdb_compactoptions_t *, rocksdb_compactoptions_create, (void), ())                  \
	V(rocksdb_compactoptions_destroy, (rocksdb_compactoptions_t * a), (a))              \
	V(rocksdb_compactoptions_set_bottommost_level_compaction,                           \
	  (rocksdb_compactoptions_t * a, unsigned char b), (a, b))                                \
	V(rocksdb_compactoptions_set_exclusive_manual_compaction,                           \
	  (rocksdb_compactoptions_t * a, unsigned char b), (a, b))                                \
	X(rocksdb_iterator_t *, rocksdb_create_iterator_cf,                                       \
	  (rocksdb_t * a, const rocksdb_readoptions_t *b, rocksdb_column_family_handle_t *c),     \
	  (a, b, c))                                                                              \
	V(rocksdb_delete_cf,                                                                \
	  (rocksdb_t * a, const rocksdb_writeoptions_t *b, rocksdb_column_family_handle_t *c,     \
	   const char *d, size_t e, char **f),                                                    \
	  (a, b, c, d, e, f))                                                                     \
	V(rocksdb_flush_cf,                                                                 \
	  (rocksdb_t * a, const rocksdb_flushoptions_t *b, rocksdb_column_family_handle_t *c,     \
	   char **d),                                                                             \
	  (a, b, c, d))                                                                           \
	X(rocksdb_flushoptions_t *, rocksdb_flushoptions_create, (void), ())                      \
	V(rocksdb_flushoptions_destroy, (rocksdb_flushoptions_t * a), (a))                  \
	V(rocksdb_flushoptions_set_wait, (rocksdb_flushoptions_t * a, unsigned char b),     \
	  (a, b))                                                                                 \
	X(char *, rocksdb_get_cf,                                                                 \
	  (rocksdb_t * a, const rocksdb_readoptions_t *b, rocksdb_column_family_handle_t *c,      \
	   const char *d, size_t e, size_t *f, char **g),                                         \
	  (a, b, c, d, e, f, g))                                                                  \
	X(uint64_t, rocksdb_get_latest_sequence_number, (rocksdb_t * a), (a))                     \
	V(rocksdb_iter_destroy, (rocksdb_iterator_t * a), (a))                              \
	V(rocksdb_iter_get_error, (const rocksdb_iterator_t *a, char **b), (a, b))          \
	X(const char *, rocksdb_iter_key, (const rocksdb_iterator_t *a, size_t *b), (a, b))       \
	V(rocksdb_iter_next, (rocksdb_iterator_t * a), (a))                                 \
	V(rocksdb_iter_seek, (rocksdb_iterator_t * a, const char *b, size_t c), (a, b, c))  \
	V(rocksdb_iter_seek_to_first, (rocksdb_iterator_t * a), (a))                        \
	X(unsigned char, rocksdb_iter_valid, (const rocksdb_iterator_t *a), (a))                  \
	X(const char *, rocksdb_iter_value, (const rocksdb_iterator_t *a, size_t *b), (a, b))     \
	X(rocksdb_t *, rocksdb_open_as_secondary_column_families,                                 \
	  (const rocksdb_options_t *a, const char *b, const char *c, int d,                       \
	   const char *const *e, const rocksdb_options_t *const *f,                               \
	   rocksdb_column_family_handle_t **g, char **h),                                         \
	  (a, b, c, d, e, f, g, h))                                                               \
	X(rocksdb_t *, rocksdb_open_column_families,                                              \
	  (const rocksdb_options_t *a, const char *b, int c, const char *const *d,                \
	   const rocksdb_options_t *const *e, rocksdb_column_family_handle_t **f, char **g),      \
	  (a, b, c, d, e, f, g))                                                                  \
	X(rocksdb_options_t *, rocksdb_options_create, (void), ())                                \
	V(rocksdb_options_destroy, (rocksdb_options_t * a), (a))                            \
	V(rocksdb_options_increase_parallelism, (rocksdb_options_t * a, int b), (a, b))     \
	V(rocksdb_options_set_block_based_table_factory,                                    \
	  (rocksdb_options_t * a, rocksdb_block_based_table_options_t * b), (a, b))               \
	V(rocksdb_options_set_create_if_missing, (rocksdb_options_t * a, unsigned char b),  \
	  (a, b))                                                                                 \
	V(rocksdb_options_set_create_missing_column_families,                               \
	  (rocksdb_options_t * a, unsigned char b), (a, b))                                       \
	V(rocksdb_options_set_db_write_buffer_size, (rocksdb_options_t * a, size_t b),      \
	  (a, b))                                                                                 \
	V(rocksdb_options_set_error_if_exists, (rocksdb_options_t * a, unsigned char b),    \
	  (a, b))                                                                                 \
	V(rocksdb_options_set_max_open_files, (rocksdb_options_t * a, int b), (a, b))       \
	V(rocksdb_options_set_max_write_buffer_number, (rocksdb_options_t * a, int b),      \
	  (a, b))                                                                                 \
	V(rocksdb_options_set_paranoid_checks, (rocksdb_options_t * a, unsigned char b),    \
	  (a, b))                                                                                 \
	V(rocksdb_options_set_write_buffer_size, (rocksdb_options_t * a, size_t b), (a, b)) \
	X(int, rocksdb_property_int_cf,                                                           \
	  (rocksdb_t * a, rocksdb_column_family_handle_t * b, const char *c, uint64_t *d),        \
	  (a, b, c, d))                                                                           \
	V(rocksdb_put_cf,                                                                   \
	  (rocksdb_t * a, const rocksdb_writeoptions_t *b, rocksdb_column_family_handle_t *c,     \
	   const char *d, size_t e, const char *f, size_t g, char **h),                           \
	  (a, b, c, d, e, f, g, h))                                                               \
	X(rocksdb_readoptions_t *, rocksdb_readoptions_create, (void), ())                        \
	V(rocksdb_readoptions_destroy, (rocksdb_readoptions_t * a), (a))                    \
	V(rocksdb_readoptions_set_verify_checksums,                                         \
	  (rocksdb_readoptions_t * a, unsigned char b), (a, b))                                   \
	V(rocksdb_try_catch_up_with_primary, (rocksdb_t * a, char **b), (a, b))             \
	V(rocksdb_write,                                                                    \
	  (rocksdb_t * a, const rocksdb_writeoptions_t *b, rocksdb_writebatch_t *c, char **d),    \
	  (a, b, c, d))                                                                           \
	V(rocksdb_writebatch_clear, (rocksdb_writebatch_t * a), (a))                        \
	X(int, rocksdb_writebatch_count, (rocksdb_writebatch_t * a), (a))                         \
	X(rocksdb_writebatch_t *, rocksdb_writebatch_create, (void), ())                          \
	X(const char *, rocksdb_writebatch_data, (rocksdb_writebatch_t * a, size_t *b), (a, b))   \
	V(rocksdb_writebatch_delete_cf,                                                     \
	  (rocksdb_writebatch_t * a, rocksdb_column_family_handle_t * b, const char *c, size_t d),\
	  (a, b, c, d))                                                                           \
	V(rocksdb_writebatch_delete_range_cf,                                               \
	  (rocksdb_writebatch_t * a, rocksdb_column_family_handle_t * b, const char *c,           \
	   size_t d, const char *e, size_t f),                                                    \
	  (a, b, c, d, e, f))                                                                     \
	V(rocksdb_writebatch_destroy, (rocksdb_writebatch_t * a), (a))                      \
	V(rocksdb_writebatch_put_cf,                                                        \
	  (rocksdb_writebatch_t * a, rocksdb_column_family_handle_t * b, const char *c, size_t d, \
	   const char *e, size_t f),                                                              \
	  (a, b, c, d, e, f))                                                                     \
	X(rocksdb_writeoptions_t *, rocksdb_writeoptions_create, (void), ())                      \
	V(rocksdb_writeoptions_destroy, (rocksdb_writeoptions_t * a), (a))                  \
	V(rocksdb_writeoptions_set_sync, (rocksdb_writeoptions_t * a, unsigned char b),     \
	  (a, b))

/* The real functions, set once by load_once() and never changed after. */
static struct {
#define X(ret, name, params, args) __typeof__(name) *name;
#define V(name, params, args) __typeof__(name) *name;
	ROCKSDB_FUNCS(X, V)
#undef V
#undef X
} real;

static pthread_once_t load_once_ctl = PTHREAD_ONCE_INIT;
static int load_result;           /* 0 or -errno, set by load_once() */
static char load_error[256];      /* dlerror()'s words when load_result < 0 */

static void load_once(void)
{
	/* RTLD_NOW: every symbol is checked here, not at some later call inside the store. The
	 * handle stays open until exit (the store's objects live in the library). */
	void *h = dlopen(ENCLAVE_ROCKSDB_SONAME, RTLD_NOW | RTLD_LOCAL);
	const char *e;

	if (!h)
		goto fail;
#define V(name, params, args)                          \
	if (!(*(void **)&real.name = dlsym(h, #name))) \
		goto fail;
#define X(ret, name, params, args) V(name, params, args)
	ROCKSDB_FUNCS(X, V)
#undef X
#undef V
	load_result = 0;
	return;
fail:
	e = dlerror();
	snprintf(load_error, sizeof(load_error), "%s", e ? e : "unknown error");
	load_result = -ELIBACC;
	/* Leave every pointer NULL, so nothing half-loaded is ever called. */
	real = (typeof(real)){ 0 };
}

int ctl_rocksdb_load(const char *what)
{
	pthread_once(&load_once_ctl, load_once);
	if (load_result < 0)
		return ctl_fail(what, "cannot load the index library %s: %s", ENCLAVE_ROCKSDB_SONAME,
				load_error);
	return 0;
}

/* The forwarders' path when a caller skipped ctl_rocksdb_load() and the library is missing: there
 * is no way to return an error through RocksDB's API, so stop before anything is written. */
static void need_loaded(void)
{
	pthread_once(&load_once_ctl, load_once);
	if (load_result < 0) {
		fprintf(stderr, "enclavectl: cannot load the index library %s: %s\n",
			ENCLAVE_ROCKSDB_SONAME, load_error);
		exit(1);
	}
}

#define X(ret, name, params, args)     \
	ret name params                \
	{                              \
		need_loaded();         \
		return real.name args; \
	}
#define V(name, params, args)   \
	void name params        \
	{                       \
		need_loaded();  \
		real.name args; \
	}
ROCKSDB_FUNCS(X, V)
#undef V
#undef X
