/* err: thread-local failure detail. */
#include "common/err.h"

#include <stdio.h>

static _Thread_local char detail[ERR_DETAIL_MAX];

int err_set(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
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
