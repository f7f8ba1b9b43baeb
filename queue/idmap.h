/*
 * idmap — messages by queue id: a chained hash table of nodes embedded in
 * the structs it maps, each of which holds its own QUEUE_ID_LEN-character
 * id at a fixed distance from its node. Pure: no I/O, no locks (each map
 * has one owner).
 *
 * It grows without stopping its owner: when it doubles, the old buckets
 * move to the new table a few at a time, on each later call, as in Redis's
 * dict (a worker with half a million messages would otherwise rehash them
 * all in one loop turn, and every session on it would wait). Until the
 * move is done a lookup looks in both tables.
 *
 * The store keeps one per worker for its stored messages, so an operator's
 * `show ID` finds a message in O(1) instead of scanning every message on
 * the worker's loop; and recovery looks messages up by the id their
 * outcome records name.
 */
#ifndef FERRY_QUEUE_IDMAP_H
#define FERRY_QUEUE_IDMAP_H

#include <stddef.h>
#include <stdint.h>

/* Embedded in each struct the map holds. */
struct idmap_node {
	struct idmap_node *next;
};

struct idmap {
	struct idmap_node **table[2]; /* [1] only while growing */
	size_t size[2];               /* buckets, powers of two */
	size_t count;
	size_t moved;         /* while growing: table[0]'s buckets moved so far */
	ptrdiff_t key_offset; /* from a node to its struct's id */
};

/* An empty map; key_offset is offsetof(struct, id) - offsetof(struct,
 * node). */
void idmap_init(struct idmap *map, ptrdiff_t key_offset);
void idmap_free(struct idmap *map);

/* Add a node (its id must not be in the map). 0 or -ENOMEM (not added). */
int idmap_insert(struct idmap *map, struct idmap_node *node);

/* Take a node out (no-op if it is not in). */
void idmap_remove(struct idmap *map, struct idmap_node *node);

/* The node whose id is `id` (QUEUE_ID_LEN characters), or NULL. */
struct idmap_node *idmap_find(struct idmap *map, const char *id);

#endif
