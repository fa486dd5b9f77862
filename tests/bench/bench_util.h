/* What the micro-benchmarks share: a monotonic clock, an ascending sort of samples (for
 * medians), and, for a file that defines BENCH_NAME, the one-line failure report. */
#ifndef ENCLAVE_BENCH_UTIL_H
#define ENCLAVE_BENCH_UTIL_H

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Monotonic time in seconds. */
static inline double bench_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* qsort comparator: doubles in ascending order. */
static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

#ifdef BENCH_NAME
#include "common/err.h"

/* "BENCH_NAME: what: strerror (detail)" on stderr; returns the exit status 1. */
static inline int bench_fail(const char *what, int r)
{
	fprintf(stderr, BENCH_NAME ": %s: %s (%s)\n", what, strerror(-r), err_detail());
	return 1;
}
#endif

#endif
