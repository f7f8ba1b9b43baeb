#include "queue/idmap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "queue/queue.h"

#define IDMAP_MIN_SIZE   1024
#define IDMAP_MOVE_STEPS 4 /* old buckets moved per call while growing */

static const char *idmap_key(const struct idmap *map, const struct idmap_node *node)
{
	return (const char *)node + map->key_offset;
}

static uint64_t idmap_hash(const char *id)
{
	return XXH3_64bits(id, QUEUE_ID_LEN);
}

static bool idmap_growing(const struct idmap *map)
{
	return map->table[1] != NULL;
}

void idmap_init(struct idmap *map, ptrdiff_t key_offset)
{
	*map = (struct idmap){.key_offset = key_offset};
}

void idmap_free(struct idmap *map)
{
	free(map->table[0]);
	free(map->table[1]);
	idmap_init(map, map->key_offset);
}

/* Move a few of the old table's buckets to the new one; the old table
 * goes once it is empty. */
static void idmap_move_some(struct idmap *map)
{
	for (int step = 0; step < IDMAP_MOVE_STEPS && idmap_growing(map); step++) {
		struct idmap_node *node = map->table[0][map->moved];
		while (node != NULL) {
			struct idmap_node *next = node->next;
			size_t b = idmap_hash(idmap_key(map, node)) & (map->size[1] - 1);
			node->next = map->table[1][b];
			map->table[1][b] = node;
			node = next;
		}
		map->table[0][map->moved] = NULL;
		if (++map->moved == map->size[0]) {
			free(map->table[0]);
			map->table[0] = map->table[1];
			map->size[0] = map->size[1];
			map->table[1] = NULL;
			map->size[1] = 0;
			map->moved = 0;
		}
	}
}

/*
 * The chains where a hash may be: while growing, new nodes and moved
 * buckets are in the new table, the buckets not moved yet in the old one.
 * Returns how many (1 or 2).
 */
static int idmap_chains(const struct idmap *map, uint64_t hash, struct idmap_node **chains[2])
{
	int n = 0;
	if (idmap_growing(map))
		chains[n++] = &map->table[1][hash & (map->size[1] - 1)];
	size_t b = hash & (map->size[0] - 1);
	if (!idmap_growing(map) || b >= map->moved)
		chains[n++] = &map->table[0][b];
	return n;
}

int idmap_insert(struct idmap *map, struct idmap_node *node)
{
	if (map->size[0] == 0) {
		map->table[0] = calloc(IDMAP_MIN_SIZE, sizeof(*map->table[0]));
		if (map->table[0] == NULL)
			return -ENOMEM;
		map->size[0] = IDMAP_MIN_SIZE;
	}
	idmap_move_some(map);
	if (!idmap_growing(map) && map->count >= map->size[0]) {
		/* Lazily zeroed pages: the new table costs nothing until used. */
		map->table[1] = calloc(map->size[0] * 2, sizeof(*map->table[1]));
		if (map->table[1] != NULL)
			map->size[1] = map->size[0] * 2;
		/* Without it the chains only grow longer: still correct. */
	}
	uint64_t hash = idmap_hash(idmap_key(map, node));
	struct idmap_node **bucket = idmap_growing(map) ? &map->table[1][hash & (map->size[1] - 1)]
							: &map->table[0][hash & (map->size[0] - 1)];
	node->next = *bucket;
	*bucket = node;
	map->count++;
	return 0;
}

struct idmap_node *idmap_find(struct idmap *map, const char *id)
{
	if (map->size[0] == 0)
		return NULL;
	idmap_move_some(map);
	struct idmap_node **chains[2];
	int n = idmap_chains(map, idmap_hash(id), chains);
	for (int i = 0; i < n; i++)
		for (struct idmap_node *node = *chains[i]; node != NULL; node = node->next)
			if (memcmp(idmap_key(map, node), id, QUEUE_ID_LEN) == 0)
				return node;
	return NULL;
}

void idmap_remove(struct idmap *map, struct idmap_node *node)
{
	if (map->size[0] == 0)
		return;
	idmap_move_some(map);
	struct idmap_node **chains[2];
	int n = idmap_chains(map, idmap_hash(idmap_key(map, node)), chains);
	for (int i = 0; i < n; i++) {
		for (struct idmap_node **p = chains[i]; *p != NULL; p = &(*p)->next) {
			if (*p == node) {
				*p = node->next;
				node->next = NULL;
				map->count--;
				return;
			}
		}
	}
}
