/*
 * idmap — messages by queue id: an open-addressing hash table (linear
 * probing, backward-shift deletion, power of two, grown at 50 % load) of
 * pointers to structs that hold their own QUEUE_ID_LEN-character id at
 * a fixed offset. Pure: no I/O, no locks (each map has one owner).
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

struct idmap {
	void **slots;
	size_t cap, count;
	size_t key_offset; /* of the id in each stored struct */
};

/* An empty map of structs whose id lies at key_offset. */
void idmap_init(struct idmap *map, size_t key_offset);
void idmap_free(struct idmap *map);

/* Add `value` (its id must not be in the map). 0 or -ENOMEM. */
int idmap_insert(struct idmap *map, void *value);

/* Take `value` out (no-op if it is not in). */
void idmap_remove(struct idmap *map, const void *value);

/* The value with this id (QUEUE_ID_LEN characters), or NULL. */
void *idmap_find(const struct idmap *map, const char *id);

#endif
