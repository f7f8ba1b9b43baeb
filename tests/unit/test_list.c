/*
 * Tests for core/list.h and core/check.h: the intrusive list keeps order
 * through inserts, removals and splices, iteration may remove the node it
 * stands on, and the checks that guard misuse (a node put on two lists, a
 * head never initialised) stop the process in every build type.
 */
#include <criterion/criterion.h>

#include <signal.h>

#include "core/check.h"
#include "core/list.h"

struct item {
	int value;
	struct list_node link;
};

static void expect_order(struct list_node *head, const int *values, int n)
{
	int i = 0;
	struct item *it;
	list_for_each_entry(it, head, link)
	{
		cr_assert_lt(i, n, "more items than expected");
		cr_assert_eq(it->value, values[i], "item %d is %d, expected %d", i, it->value,
			     values[i]);
		i++;
	}
	cr_assert_eq(i, n, "%d items, expected %d", i, n);
}

Test(list, insert_head_and_tail_keep_their_order)
{
	struct list_node head;
	list_init(&head);
	cr_assert(list_empty(&head));
	cr_assert_null(list_first(&head));
	struct item a = {.value = 1}, b = {.value = 2}, c = {.value = 3};
	list_insert_tail(&head, &b.link);
	list_insert_tail(&head, &c.link);
	list_insert_head(&head, &a.link);
	expect_order(&head, (int[]){1, 2, 3}, 3);
	cr_assert_eq(list_first(&head), &a.link);
	cr_assert_eq(list_next(&head, &a.link), &b.link);
	cr_assert_null(list_next(&head, &c.link));
	cr_assert(list_linked(&b.link));
	list_remove(&b.link);
	cr_assert_not(list_linked(&b.link));
	expect_order(&head, (int[]){1, 3}, 2);
}

Test(list, safe_iteration_may_remove_the_current_node)
{
	struct list_node head;
	list_init(&head);
	struct item items[6];
	for (int i = 0; i < 6; i++) {
		items[i] = (struct item){.value = i};
		list_insert_tail(&head, &items[i].link);
	}
	struct item *it, *tmp;
	list_for_each_entry_safe(it, tmp, &head, link)
	{
		if (it->value % 2 == 0)
			list_remove(&it->link);
	}
	expect_order(&head, (int[]){1, 3, 5}, 3);
}

Test(list, splice_moves_everything_in_order)
{
	struct list_node a, b;
	list_init(&a);
	list_init(&b);
	struct item items[4];
	for (int i = 0; i < 4; i++) {
		items[i] = (struct item){.value = i};
		list_insert_tail(i < 2 ? &a : &b, &items[i].link);
	}
	list_splice_tail(&a, &b);
	cr_assert(list_empty(&b));
	expect_order(&a, (int[]){0, 1, 2, 3}, 4);
	list_splice_tail(&a, &b); /* an empty one changes nothing */
	expect_order(&a, (int[]){0, 1, 2, 3}, 4);
}

Test(list, container_of_finds_the_struct)
{
	struct item it = {.value = 42};
	cr_assert_eq(container_of(&it.link, struct item, link), &it);
}

/* The same node on two lists would corrupt both: caught, in Release too. */
Test(list, a_node_on_two_lists_stops_the_process, .signal = SIGABRT)
{
	struct list_node one, two;
	list_init(&one);
	list_init(&two);
	struct item it = {.value = 1};
	list_insert_tail(&one, &it.link);
	list_insert_tail(&two, &it.link);
}

Test(list, a_head_never_initialised_stops_the_process, .signal = SIGABRT)
{
	struct list_node head = {0};
	struct item it = {.value = 1};
	list_insert_tail(&head, &it.link);
}

Test(check, a_true_condition_passes_a_false_one_aborts, .signal = SIGABRT)
{
	int x = 1;
	CHECK(x == 1);
	CHECK(x == 2);
}
