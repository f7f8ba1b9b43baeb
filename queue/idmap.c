#include "queue/idmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "queue/queue.h"

#define IDMAP_MIN_CAP 1024

static const char *idmap_key(const struct idmap *map, const void *value)
{
	return (const char *)value + map->key_offset;
}

static size_t idmap_home(const struct idmap *map, const char *id)
{
	return (size_t)XXH3_64bits(id, QUEUE_ID_LEN) & (map->cap - 1);
}

void idmap_init(struct idmap *map, size_t key_offset)
{
	*map = (struct idmap){.key_offset = key_offset};
}

void idmap_free(struct idmap *map)
{
	free(map->slots);
	idmap_init(map, map->key_offset);
}

static void idmap_place(struct idmap *map, void *value)
{
	size_t k = idmap_home(map, idmap_key(map, value));
	while (map->slots[k] != NULL)
		k = (k + 1) & (map->cap - 1);
	map->slots[k] = value;
}

static int idmap_grow(struct idmap *map)
{
	size_t cap = map->cap ? map->cap * 2 : IDMAP_MIN_CAP;
	void **slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	void **old = map->slots;
	size_t old_cap = map->cap;
	map->slots = slots;
	map->cap = cap;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i] != NULL)
			idmap_place(map, old[i]);
	free(old);
	return 0;
}

int idmap_insert(struct idmap *map, void *value)
{
	if ((map->count + 1) * 2 > map->cap && idmap_grow(map) != 0)
		return -ENOMEM;
	idmap_place(map, value);
	map->count++;
	return 0;
}

void *idmap_find(const struct idmap *map, const char *id)
{
	if (map->cap == 0)
		return NULL;
	for (size_t k = idmap_home(map, id);; k = (k + 1) & (map->cap - 1)) {
		void *value = map->slots[k];
		if (value == NULL || memcmp(idmap_key(map, value), id, QUEUE_ID_LEN) == 0)
			return value;
	}
}

void idmap_remove(struct idmap *map, const void *value)
{
	if (map->cap == 0)
		return;
	size_t mask = map->cap - 1;
	size_t hole = idmap_home(map, idmap_key(map, value));
	while (map->slots[hole] != value) {
		if (map->slots[hole] == NULL)
			return;
		hole = (hole + 1) & mask;
	}
	/* Backward shift: pull later members of the run into the hole when
	 * that brings them no further than their home. */
	for (size_t j = (hole + 1) & mask; map->slots[j] != NULL; j = (j + 1) & mask) {
		size_t home = idmap_home(map, idmap_key(map, map->slots[j]));
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			map->slots[hole] = map->slots[j];
			hole = j;
		}
	}
	map->slots[hole] = NULL;
	map->count--;
}
