/*
 * fault — fault points compiled into test builds (Debug and Sanitize,
 * FERRY_FAULT_POINTS), so tests can make a real ferryd fail where a disk
 * would: `FERRY_FAULT_FSYNC=3,5` makes the 3rd and 5th group-commit syncs
 * of the process report EIO. In Release builds every point is a constant
 * false and costs nothing.
 */
#ifndef FERRY_CORE_FAULT_H
#define FERRY_CORE_FAULT_H

#include <stdbool.h>

enum fault_point {
	FAULT_FSYNC = 0, /* env FERRY_FAULT_FSYNC */
	FAULT_NPOINTS
};

#ifdef FERRY_FAULT_POINTS
/* True when this occurrence of the point (counted process-wide from 1)
 * is listed in its environment variable. Thread-safe. */
bool fault_fire(enum fault_point point);
#else
static inline bool fault_fire(enum fault_point point)
{
	(void)point;
	return false;
}
#endif

#endif
