#include "core/fault.h"

#ifdef FERRY_FAULT_POINTS
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const char *const fault_env[FAULT_NPOINTS] = {"FERRY_FAULT_FSYNC"};
static atomic_ulong fault_counts[FAULT_NPOINTS];

bool fault_fire(enum fault_point point)
{
	unsigned long n = atomic_fetch_add(&fault_counts[point], 1) + 1;
	const char *list = getenv(fault_env[point]);
	if (list == NULL)
		return false;
	for (const char *p = list; *p != '\0';) {
		char *end;
		unsigned long v = strtoul(p, &end, 10);
		if (end == p)
			return false;
		if (v == n)
			return true;
		p = *end == ',' ? end + 1 : end;
		if (*end != ',' && *end != '\0')
			return false;
	}
	return false;
}
#endif
