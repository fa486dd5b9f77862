/* err: thread-local failure detail. */
#include "common/err.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char detail[ERR_DETAIL_MAX];

/* Formatted into a copy first, so a message may quote the detail it replaces
 * (err_set(r, "%s: ...", err_detail())). */
int err_set(int err, const char *fmt, ...)
{
	char buf[ERR_DETAIL_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	memcpy(detail, buf, sizeof(detail));
	return err;
}

const char *err_detail(void)
{
	return detail;
}

void err_clear(void)
{
	detail[0] = '\0';
}
