/*
 * Tests for core/array.h: the reserve grows by doubling, keeps the
 * elements, never shrinks, and on a size that cannot be had leaves the
 * array as it was.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>

#include "core/array.h"

Test(array, grows_by_doubling_and_keeps_the_elements)
{
	int *items = NULL;
	size_t count = 0, cap = 0;
	for (int i = 0; i < 1000; i++) {
		cr_assert_eq(array_reserve(items, cap, count + 1), 0);
		items[count++] = i;
	}
	cr_assert_geq(cap, 1000);
	cr_assert_eq(cap & (cap - 1), 0, "capacity %zu is not a doubling of 8", cap);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(items[i], i);
	size_t before = cap;
	cr_assert_eq(array_reserve(items, cap, 10), 0, "a smaller need never shrinks");
	cr_assert_eq(cap, before);
	free(items);
}

Test(array, a_need_of_zero_allocates_nothing)
{
	long *items = NULL;
	size_t cap = 0;
	cr_assert_eq(array_reserve(items, cap, 0), 0);
	cr_assert_null(items);
	cr_assert_eq(cap, 0);
}

Test(array, an_impossible_size_fails_and_leaves_the_array)
{
	uint64_t *items = NULL;
	size_t cap = 0;
	cr_assert_eq(array_reserve(items, cap, 3), 0);
	items[0] = 7;
	uint64_t *kept = items;
	cr_assert_eq(array_reserve(items, cap, SIZE_MAX / 4), -ENOMEM);
	cr_assert_eq(items, kept);
	cr_assert_eq(cap, 8);
	cr_assert_eq(items[0], 7);
	free(items);
}
