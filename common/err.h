/* err: a thread-local, human-readable detail for the last failure.
 *
 * Library code returns -errno and never prints; where a bare errno would not tell the user what to
 * fix (which file, which record, what RocksDB said), it also sets a detail here. The daemon and the
 * CLI print it, once, at the edge. The detail never holds secret material.
 */
#pragma once

#include <stdarg.h>

#define ERR_DETAIL_MAX 512

/* Set the detail (printf format) and return err unchanged, so `return err_set(-EIO, "...")` reads
 * naturally. */
__attribute__((format(printf, 2, 3))) int err_set(int err, const char *fmt, ...);
/* The detail of the last err_set() on this thread, or "" if none since err_clear(). */
const char *err_detail(void);
void err_clear(void);
