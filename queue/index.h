/*
 * index — queued recipients by destination domain, in shards. Pure: no I/O,
 * no clock (time is passed in), no locks (each shard has one owner).
 *
 * A shard is an open-addressing hash table (linear probing, backward-shift
 * deletion, power-of-two capacity, grown at 70 % load) from lower-cased
 * destination domain to that destination's queue. Each destination keeps
 * its recipients in four states:
 *
 *   READY     to be delivered now          (FIFO list)
 *   DEFERRED  waiting for a retry time     (binary min-heap by due_ms)
 *   HELD      waiting for ETRN or an operator's flush (FIFO list)
 *   INFLIGHT  being delivered              (list)
 *
 * The store embeds a struct index_entry in its per-recipient struct and
 * owns that memory; the index owns only its destinations, and frees a
 * destination when its last entry leaves. Every operation is O(1) but the
 * heap's O(log n) and the scans (foreach, suffix match) that operators and
 * ETRN use.
 *
 * A recipient belongs to shard index_shard_for(index_domain_hash(domain),
 * nshards): the hash ignores ASCII case, so "Example.COM" and
 * "example.com" are one destination.
 */
#ifndef FERRY_QUEUE_INDEX_H
#define FERRY_QUEUE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/list.h"

#define INDEX_DOMAIN_MAX 255

enum index_state { INDEX_READY = 0, INDEX_DEFERRED, INDEX_HELD, INDEX_INFLIGHT, INDEX_NSTATES };

struct index_destination;

/* Embedded in the store's recipient; opaque to it but for `state`,
 * `due_ms`, `dest` and `mark`. */
struct index_entry {
	struct list_node link; /* in its state's list (READY, HELD, INFLIGHT) */
	struct index_destination *dest;
	uint64_t due_ms;    /* DEFERRED: when to try again */
	uint32_t heap_slot; /* DEFERRED: position in the heap */
	uint8_t state;      /* enum index_state */
	/* The store's (an operator's word on this one recipient; 0 when
	 * inserted): a HELD entry with a mark stays HELD through
	 * index_flush. The index reads nothing else of it. */
	uint8_t mark;
};

struct index_destination {
	char *domain; /* lower-cased, NUL-terminated, owned */
	uint16_t len;
	uint64_t hash;
	uint32_t count[INDEX_NSTATES];
	/* Bumped by every entry that comes, goes or moves: a reader that
	 * walks the destination over several loop turns (an operator's list)
	 * knows whether where it stopped is still where it was. */
	uint64_t changes;
	struct list_node lists[INDEX_NSTATES]; /* DEFERRED's unused */
	struct index_entry **heap;             /* DEFERRED, by due_ms */
	uint32_t heap_cap;
};

struct index_shard {
	struct index_destination **slots;
	uint32_t cap;   /* power of two */
	uint32_t count; /* destinations */
	uint64_t entries;
};

/* XXH3-64 of the ASCII-lower-cased domain. */
uint64_t index_domain_hash(const char *domain, size_t len);

/* nshards is a power of two. */
static inline uint32_t index_shard_for(uint64_t hash, uint32_t nshards)
{
	return (uint32_t)(hash >> 32) & (nshards - 1);
}

/* Returns 0 or -ENOMEM. */
int index_shard_init(struct index_shard *s);

/* Free the destinations; entries still in them are simply forgotten. */
void index_shard_free(struct index_shard *s);

/* The destination for a domain (case-insensitive), or NULL. */
struct index_destination *index_find(const struct index_shard *s, const char *domain, size_t len);

/*
 * Put e into the destination for `domain` (created if needed) in state st
 * (due_ms used for DEFERRED). e must not be in any shard. Returns 0,
 * -ENOMEM, or -EINVAL for an empty or over-long domain.
 */
int index_insert(struct index_shard *s, const char *domain, size_t len, struct index_entry *e,
		 enum index_state st, uint64_t due_ms);

/* Change e's state within its destination (due_ms for DEFERRED). */
void index_move(struct index_entry *e, enum index_state st, uint64_t due_ms);

/* Take e out of the index; its destination goes when it becomes empty. */
void index_remove(struct index_shard *s, struct index_entry *e);

/* The first entry in a state: READY/HELD/INFLIGHT in insertion order,
 * DEFERRED the earliest due. NULL when none. */
struct index_entry *index_first(const struct index_destination *d, enum index_state st);

/* The next entry after e in its list (READY, HELD, INFLIGHT); NULL at the
 * end. Not for DEFERRED (a heap has no order to walk). */
struct index_entry *index_next(const struct index_entry *e);

/* Earliest due_ms among DEFERRED entries, or UINT64_MAX. */
uint64_t index_next_due(const struct index_destination *d);

/* Move DEFERRED entries due at or before now_ms to READY, in due order.
 * Returns how many moved. */
unsigned index_release_due(struct index_destination *d, uint64_t now_ms);

/* Move every DEFERRED entry, and every HELD one without a mark, to READY
 * (ETRN, operator flush), in order. Returns how many moved. */
unsigned index_flush(struct index_destination *d);

/* Move every READY and DEFERRED entry to HELD (a domain put on hold at
 * run time, or found held at start). Returns how many moved. */
unsigned index_hold(struct index_destination *d);

/* Visit every entry of d, whatever its state (READY, HELD and INFLIGHT
 * in list order, then DEFERRED in heap order). fn must not move or
 * remove entries. */
typedef void index_entry_fn(void *arg, struct index_entry *e);
void index_foreach_entry(const struct index_destination *d, index_entry_fn *fn, void *arg);

/* Visit destinations; return false from fn to stop. fn must not insert
 * into or remove from the shard. */
typedef bool index_visit_fn(struct index_destination *d, void *arg);
void index_foreach(const struct index_shard *s, index_visit_fn *fn, void *arg);

/* Visit the destinations equal to `domain` or ending in "." + domain (a
 * label boundary: "foo.com" covers "a.foo.com", not "barfoo.com"), as ETRN
 * @domain needs. Case-insensitive. */
void index_foreach_suffix(const struct index_shard *s, const char *domain, size_t len,
			  index_visit_fn *fn, void *arg);

#endif
