#include "core/check.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"

__attribute__((noreturn)) void check_failed(const char *cond, const char *file, int line,
					    const char *func)
{
	/* Straight to the log and to stderr: this thread's buffered lines
	 * go first, so the last events before the bug are not lost. */
	log_event(LOG_LEVEL_ERROR, "event=check_failed condition=\"%s\" at=%s:%d function=%s", cond,
		  file, line, func);
	log_flush();
	fprintf(stderr, "ferry: internal check failed: %s at %s:%d (%s)\n", cond, file, line, func);
	abort();
}
