/*
 * Tests for queue/idmap.c: every message is found by its id while the map
 * grows (its buckets move a few at a time, so lookups span two tables),
 * removals leave the others findable, and an id that is not there is not
 * found.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/list.h"
#include "queue/idmap.h"
#include "queue/queue.h"

struct t_message {
	struct idmap_node node;
	char id[QUEUE_ID_LEN + 1];
};

#define T_N 100000

static struct t_message *t_messages;
static struct idmap t_map;

static void t_init(void)
{
	t_messages = calloc(T_N, sizeof(*t_messages));
	cr_assert_not_null(t_messages);
	for (unsigned i = 0; i < T_N; i++)
		snprintf(t_messages[i].id, sizeof(t_messages[i].id), "3C1CHBQM%08u", i);
	idmap_init(&t_map, (ptrdiff_t)offsetof(struct t_message, id) -
				   (ptrdiff_t)offsetof(struct t_message, node));
}

static void t_fini(void)
{
	idmap_free(&t_map);
	free(t_messages);
}

TestSuite(idmap, .init = t_init, .fini = t_fini);

static struct t_message *t_find(const char *id)
{
	struct idmap_node *node = idmap_find(&t_map, id);
	return node != NULL ? container_of(node, struct t_message, node) : NULL;
}

Test(idmap, every_message_is_found_while_the_map_grows)
{
	for (unsigned i = 0; i < T_N; i++) {
		cr_assert_eq(idmap_insert(&t_map, &t_messages[i].node), 0);
		/* The newest and one from each older doubling, mid-growth. */
		cr_assert_eq(t_find(t_messages[i].id), &t_messages[i], "message %u lost at once", i);
		cr_assert_eq(t_find(t_messages[i / 2].id), &t_messages[i / 2]);
	}
	for (unsigned i = 0; i < T_N; i++)
		cr_assert_eq(t_find(t_messages[i].id), &t_messages[i], "message %u lost", i);
	cr_assert_null(t_find("3C1CHBQMXXXXXXXX"));
	cr_assert_eq(t_map.count, T_N);
}

Test(idmap, removed_messages_are_gone_and_the_rest_stay)
{
	for (unsigned i = 0; i < T_N; i++)
		cr_assert_eq(idmap_insert(&t_map, &t_messages[i].node), 0);
	for (unsigned i = 0; i < T_N; i += 2)
		idmap_remove(&t_map, &t_messages[i].node);
	for (unsigned i = 0; i < T_N; i++) {
		if (i % 2 == 0)
			cr_assert_null(t_find(t_messages[i].id), "removed message %u found", i);
		else
			cr_assert_eq(t_find(t_messages[i].id), &t_messages[i], "message %u lost", i);
	}
	cr_assert_eq(t_map.count, T_N / 2);
	idmap_remove(&t_map, &t_messages[0].node); /* not in: nothing happens */
	cr_assert_eq(t_map.count, T_N / 2);
}

Test(idmap, an_empty_map_finds_nothing)
{
	cr_assert_null(t_find("3C1CHBQM00000000"));
	idmap_remove(&t_map, &t_messages[0].node);
	cr_assert_eq(t_map.count, 0);
}
