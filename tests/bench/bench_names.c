/* bench_names: does the time of a stat(2) tell whether a dataset name exists?
 *
 *   bench_names MOUNT HIDDEN ABSENT N
 *
 * Run as a user that no grant names. Stats MOUNT/HIDDEN (a dataset that exists, hidden from this
 * user) and MOUNT/ABSENT (no such dataset) alternately, N times each, after 200 warm-up rounds;
 * each must fail with ENOENT. Prints the median, mean and 90th percentile of each in
 * microseconds, and the ratio of the medians (scripts/bench-names.sh runs it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench_util.h"

static void summary(const char *what, double *t, long n, double *ret_median)
{
	double sum = 0;

	qsort(t, (size_t)n, sizeof(*t), bench_cmp_double);
	for (long i = 0; i < n; i++)
		sum += t[i];
	*ret_median = t[n / 2];
	printf("%-8s median %7.1f us   mean %7.1f us   p90 %7.1f us   (%ld stats)\n", what,
	       t[n / 2], sum / n, t[n * 9 / 10], n);
}

int main(int argc, char **argv)
{
	char hidden[4096], absent[4096];
	double *th, *ta, mh, ma;
	long n;

	if (argc != 5 || (n = strtol(argv[4], NULL, 10)) < 10 || n > 10000000) {
		fprintf(stderr, "usage: bench_names MOUNT HIDDEN ABSENT N (N >= 10)\n");
		return 2;
	}
	snprintf(hidden, sizeof(hidden), "%s/%s", argv[1], argv[2]);
	snprintf(absent, sizeof(absent), "%s/%s", argv[1], argv[3]);
	th = calloc((size_t)n, sizeof(*th));
	ta = calloc((size_t)n, sizeof(*ta));
	if (!th || !ta)
		return 1;
	for (long i = -200; i < n; i++) {
		for (int k = 0; k < 2; k++) {
			const char *p = k ? absent : hidden;
			struct stat sb;
			double t0 = 1e6 * bench_now_s();
			int r = stat(p, &sb);
			double dt = 1e6 * bench_now_s() - t0;

			if (r == 0 || errno != ENOENT) {
				fprintf(stderr, "bench_names: stat %s: %s (wanted ENOENT)\n", p,
					r == 0 ? "found" : strerror(errno));
				return 1;
			}
			if (i >= 0)
				(k ? ta : th)[i] = dt;
		}
	}
	summary("hidden", th, n, &mh);
	summary("absent", ta, n, &ma);
	printf("ratio of medians hidden/absent: %.3f\n", mh / ma);
	free(th);
	free(ta);
	return 0;
}
