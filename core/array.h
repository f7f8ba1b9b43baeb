/*
 * array — room in a growable array, doubling: the one place that grows an
 * array with realloc, so that no caller gets the overflow check or the
 * failure path wrong.
 *
 *     struct foo *items; size_t count, cap;
 *     if (array_reserve(items, cap, count + 1) != 0)
 *             return -ENOMEM;          // items and cap are unchanged
 *     items[count++] = ...;
 *
 * Capacity doubles (from 8) until it holds `need`; the array is never
 * shrunk. Elements may move: no pointer into the array survives a reserve
 * that grew it. Free the array with free().
 */
#ifndef FERRY_CORE_ARRAY_H
#define FERRY_CORE_ARRAY_H

#include <errno.h>
#include <stddef.h>

/* Storage for at least `need` elements of `size` bytes, reallocated from
 * `items` (*cap updated), or NULL when memory or size_t runs out (the old
 * storage is then untouched). Use array_reserve(). */
void *array_grow(void *items, size_t *cap, size_t need, size_t size);

/* Typed: `items` is a pointer lvalue, `cap` a size_t lvalue. 0 or -ENOMEM. */
#define array_reserve(items, cap, need)                                                            \
	__extension__({                                                                            \
		size_t array_need_ = (need);                                                       \
		int array_status_ = 0;                                                             \
		if (array_need_ > (cap) || ((items) == NULL && array_need_ > 0)) {                 \
			__typeof__(items) array_more_ =                                            \
				array_grow((items), &(cap), array_need_, sizeof(*(items)));        \
			if (array_more_ != NULL)                                                   \
				(items) = array_more_;                                             \
			else                                                                       \
				array_status_ = -ENOMEM;                                           \
		}                                                                                  \
		array_status_;                                                                     \
	})

#endif
