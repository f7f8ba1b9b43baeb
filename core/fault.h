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

/*
 * FERRY_FAULT_DESCRIPTORS=N: fault_take_descriptors() takes every free
 * descriptor below RLIMIT_NOFILE but N (it opens /dev/null), as a leak
 * elsewhere or a full system file table would, so that a test meets
 * EMFILE at accept for real (it logs event=fault_descriptors_taken once
 * done); fault_release_descriptors() gives them back.
 * Call them from the main thread only.
 */

#ifdef FERRY_FAULT_POINTS
/* True when this occurrence of the point (counted process-wide from 1)
 * is listed in its environment variable. Thread-safe. */
bool fault_fire(enum fault_point point);
void fault_take_descriptors(void);
void fault_release_descriptors(void);
#else
static inline bool fault_fire(enum fault_point point)
{
	(void)point;
	return false;
}
static inline void fault_take_descriptors(void)
{
}
static inline void fault_release_descriptors(void)
{
}
#endif

#endif
