/*
 * index — the sharded destination index described in index.h.
 *
 * Choices the header leaves open, and why:
 *
 * - A destination and its domain are one allocation (the domain follows the
 *   struct), so a lookup that compares strings touches one more cache line
 *   at most, and creating a destination costs two mallocs (it and its heap).
 *
 * - Every destination reserves heap room for all of its entries, whatever
 *   their state. Room is taken in index_insert, the only call that may fail,
 *   so index_move and index_release_due never allocate: a delivery that ends
 *   in a 4xx must always be able to defer its recipient. The price is one
 *   pointer per queued recipient.
 *
 * - Entries due in the same millisecond leave the heap in no particular order
 *   (a binary heap is not stable). Ties are recipients deferred in the same
 *   millisecond, mostly of one message, and their order in READY does not
 *   change what gets delivered.
 *
 * - An entry outside DEFERRED keeps the due_ms it last had (0 when inserted
 *   into another state); one that leaves the index has dest == NULL.
 *
 * - The table shrinks by half when under 1/8 full, never below its initial
 *   size; between that and growing at 70 % no insert/remove pattern can make
 *   it rehash on every call. A failed shrink (no memory) keeps the larger
 *   table, which is still correct.
 */
#include "queue/index.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack for long input */
#include <xxhash.h>

#define INDEX_MIN_CAP      16u
#define INDEX_MAX_CAP      (1u << 31)
#define INDEX_MIN_HEAP_CAP 4u

/* ASCII only: domains reach us as A-labels, and locale must not matter. */
static void index_lower(char *dst, const char *src, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = src[i];
		dst[i] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
	}
}

uint64_t index_domain_hash(const char *domain, size_t len)
{
	char lower[INDEX_DOMAIN_MAX];

	if (len <= sizeof(lower)) {
		index_lower(lower, domain, len);
		return XXH3_64bits(lower, len);
	}
	/* No valid domain is this long, but a caller may hash one before insert
	 * refuses it; streaming gives the same value as hashing it whole. */
	XXH3_state_t state;
	XXH3_64bits_reset(&state);
	for (size_t off = 0; off < len; off += sizeof(lower)) {
		size_t n = len - off < sizeof(lower) ? len - off : sizeof(lower);
		index_lower(lower, domain + off, n);
		XXH3_64bits_update(&state, lower, n);
	}
	return XXH3_64bits_digest(&state);
}

static uint64_t index_entries_of(const struct index_destination *d)
{
	uint64_t total = 0;

	for (int st = 0; st < INDEX_NSTATES; st++)
		total += d->count[st];
	return total;
}

/* ---- DEFERRED: binary min-heap by due_ms; count[DEFERRED] is its size ---- */

/* heap_slot is rewritten at every store into the array: it is what lets
 * index_move and index_remove take an entry out of the middle. */
static void index_heap_place(struct index_destination *d, uint32_t i, struct index_entry *e)
{
	d->heap[i] = e;
	e->heap_slot = i;
}

static void index_heap_sift_up(struct index_destination *d, uint32_t i)
{
	struct index_entry *e = d->heap[i];

	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (d->heap[parent]->due_ms <= e->due_ms)
			break;
		index_heap_place(d, i, d->heap[parent]);
		i = parent;
	}
	index_heap_place(d, i, e);
}

static void index_heap_sift_down(struct index_destination *d, uint32_t i)
{
	uint32_t n = d->count[INDEX_DEFERRED];
	struct index_entry *e = d->heap[i];

	for (;;) {
		uint64_t child = 2 * (uint64_t)i + 1;
		if (child >= n)
			break;
		if (child + 1 < n && d->heap[child + 1]->due_ms < d->heap[child]->due_ms)
			child++;
		if (d->heap[child]->due_ms >= e->due_ms)
			break;
		index_heap_place(d, i, d->heap[child]);
		i = (uint32_t)child;
	}
	index_heap_place(d, i, e);
}

/* After heap[i]'s due_ms changed, or another entry was put at i. */
static void index_heap_fix(struct index_destination *d, uint32_t i)
{
	if (i > 0 && d->heap[(i - 1) / 2]->due_ms > d->heap[i]->due_ms)
		index_heap_sift_up(d, i);
	else
		index_heap_sift_down(d, i);
}

/* Room is guaranteed: heap_cap covers every entry of the destination. */
static void index_heap_push(struct index_destination *d, struct index_entry *e)
{
	uint32_t i = d->count[INDEX_DEFERRED]++;

	assert(i < d->heap_cap);
	index_heap_place(d, i, e);
	index_heap_sift_up(d, i);
}

static void index_heap_delete(struct index_destination *d, struct index_entry *e)
{
	uint32_t i = e->heap_slot;
	uint32_t last = --d->count[INDEX_DEFERRED];

	assert(i <= last && d->heap[i] == e);
	if (i != last) {
		index_heap_place(d, i, d->heap[last]);
		index_heap_fix(d, i);
	}
	e->heap_slot = UINT32_MAX;
}

/* Make room in the heap for `need` entries. 0 or -ENOMEM, d unchanged. */
static int index_heap_reserve(struct index_destination *d, uint64_t need)
{
	if (need <= d->heap_cap)
		return 0;
	if (need > UINT32_MAX)
		return -ENOMEM;
	uint64_t cap = d->heap_cap ? 2 * (uint64_t)d->heap_cap : INDEX_MIN_HEAP_CAP;
	if (cap < need)
		cap = need;
	if (cap > UINT32_MAX)
		cap = UINT32_MAX;
	if (cap > SIZE_MAX / sizeof(*d->heap))
		return -ENOMEM;
	struct index_entry **heap = realloc(d->heap, cap * sizeof(*heap));
	if (!heap)
		return -ENOMEM;
	d->heap = heap;
	d->heap_cap = (uint32_t)cap;
	return 0;
}

/* Give back heap room a destination that was once large no longer needs. */
static void index_heap_trim(struct index_destination *d)
{
	uint64_t total = index_entries_of(d);

	if (d->heap_cap <= 64 || total * 4 > d->heap_cap)
		return;
	uint32_t cap = d->heap_cap / 2;
	struct index_entry **heap = realloc(d->heap, (size_t)cap * sizeof(*heap));
	if (heap) {
		d->heap = heap;
		d->heap_cap = cap;
	}
}

/* ---- entries in and out of states ---------------------------------------- */

static void index_attach(struct index_destination *d, struct index_entry *e, enum index_state st,
			 uint64_t due_ms)
{
	d->changes++;
	e->state = (uint8_t)st;
	if (st == INDEX_DEFERRED) {
		list_node_init(&e->link);
		e->due_ms = due_ms;
		index_heap_push(d, e);
	} else {
		e->heap_slot = UINT32_MAX;
		list_insert_tail(&d->lists[st], &e->link);
		d->count[st]++;
	}
}

static void index_detach(struct index_destination *d, struct index_entry *e)
{
	d->changes++;
	if (e->state == INDEX_DEFERRED) {
		index_heap_delete(d, e);
	} else {
		list_remove(&e->link);
		d->count[e->state]--;
	}
}

/* ---- the table ----------------------------------------------------------- */

static uint32_t index_home(uint64_t hash, uint32_t cap)
{
	return (uint32_t)hash & (cap - 1);
}

/* Put d in the first free slot from its home; the caller made sure one is
 * free. */
static void index_table_place(struct index_destination **slots, uint32_t cap,
			      struct index_destination *d)
{
	uint32_t i = index_home(d->hash, cap);

	while (slots[i])
		i = (i + 1) & (cap - 1);
	slots[i] = d;
}

/* Rehash into `cap` slots. 0 or -ENOMEM with the table unchanged. */
static int index_table_resize(struct index_shard *s, uint32_t cap)
{
	struct index_destination **slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->cap; i++) {
		if (s->slots[i])
			index_table_place(slots, cap, s->slots[i]);
	}
	free(s->slots);
	s->slots = slots;
	s->cap = cap;
	return 0;
}

/* Backward-shift deletion: pull later members of the probe run into the hole
 * when that brings them no further than their home, so that a lookup can
 * still stop at the first empty slot without tombstones. */
static void index_table_delete(struct index_shard *s, const struct index_destination *d)
{
	uint32_t mask = s->cap - 1;
	uint32_t hole = index_home(d->hash, s->cap);

	while (s->slots[hole] != d) {
		assert(s->slots[hole]);
		hole = (hole + 1) & mask;
	}
	for (uint32_t j = (hole + 1) & mask; s->slots[j]; j = (j + 1) & mask) {
		uint32_t home = index_home(s->slots[j]->hash, s->cap);
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			s->slots[hole] = s->slots[j];
			hole = j;
		}
	}
	s->slots[hole] = NULL;
	s->count--;
}

/* `lower` is already lower-cased and hashed. */
static struct index_destination *index_lookup(const struct index_shard *s, const char *lower,
					      size_t len, uint64_t hash)
{
	uint32_t mask = s->cap - 1;

	for (uint32_t i = index_home(hash, s->cap); s->slots[i]; i = (i + 1) & mask) {
		const struct index_destination *d = s->slots[i];
		if (d->hash == hash && d->len == len && memcmp(d->domain, lower, len) == 0)
			return s->slots[i];
	}
	return NULL;
}

static struct index_destination *index_destination_new(const char *lower, size_t len, uint64_t hash)
{
	struct index_destination *d = malloc(sizeof(*d) + len + 1);

	if (!d)
		return NULL;
	memset(d, 0, sizeof(*d));
	d->domain = (char *)(d + 1);
	memcpy(d->domain, lower, len);
	d->domain[len] = '\0';
	d->len = (uint16_t)len;
	d->hash = hash;
	for (int st = 0; st < INDEX_NSTATES; st++)
		list_init(&d->lists[st]);
	if (index_heap_reserve(d, 1) < 0) {
		free(d);
		return NULL;
	}
	return d;
}

static void index_destination_free(struct index_destination *d)
{
	free(d->heap);
	free(d);
}

/* ---- the contract -------------------------------------------------------- */

int index_shard_init(struct index_shard *s)
{
	memset(s, 0, sizeof(*s));
	s->slots = calloc(INDEX_MIN_CAP, sizeof(*s->slots));
	if (!s->slots)
		return -ENOMEM;
	s->cap = INDEX_MIN_CAP;
	return 0;
}

void index_shard_free(struct index_shard *s)
{
	/* The entries belong to the store, which may have freed them already:
	 * they are not touched. */
	for (uint32_t i = 0; i < s->cap; i++) {
		if (s->slots[i])
			index_destination_free(s->slots[i]);
	}
	free(s->slots);
	memset(s, 0, sizeof(*s));
}

struct index_destination *index_find(const struct index_shard *s, const char *domain, size_t len)
{
	char lower[INDEX_DOMAIN_MAX];

	if (len == 0 || len > sizeof(lower))
		return NULL;
	index_lower(lower, domain, len);
	return index_lookup(s, lower, len, XXH3_64bits(lower, len));
}

int index_insert(struct index_shard *s, const char *domain, size_t len, struct index_entry *e,
		 enum index_state st, uint64_t due_ms)
{
	char lower[INDEX_DOMAIN_MAX];

	if (len == 0 || len > sizeof(lower) || (unsigned)st >= INDEX_NSTATES)
		return -EINVAL;
	index_lower(lower, domain, len);
	uint64_t hash = XXH3_64bits(lower, len);

	/* Every allocation happens before anything changes, so -ENOMEM leaves
	 * the shard as it was. */
	struct index_destination *d = index_lookup(s, lower, len, hash);
	if (d) {
		if (index_heap_reserve(d, index_entries_of(d) + 1) < 0)
			return -ENOMEM;
	} else {
		d = index_destination_new(lower, len, hash);
		if (!d)
			return -ENOMEM;
		if ((uint64_t)(s->count + 1) * 10 > (uint64_t)s->cap * 7) {
			if (s->cap >= INDEX_MAX_CAP || index_table_resize(s, s->cap * 2) < 0) {
				index_destination_free(d);
				return -ENOMEM;
			}
		}
		index_table_place(s->slots, s->cap, d);
		s->count++;
	}

	e->dest = d;
	e->due_ms = 0;
	e->mark = 0;
	list_node_init(&e->link); /* the caller's memory: not on any list (index.h) */
	index_attach(d, e, st, due_ms);
	s->entries++;
	return 0;
}

/*
 * Moving to the state an entry is already in is not a no-op: in a list it
 * goes to the tail (a recipient handed back to READY waits behind the
 * others), and in DEFERRED it takes the new due_ms.
 */
void index_move(struct index_entry *e, enum index_state st, uint64_t due_ms)
{
	struct index_destination *d = e->dest;

	assert(d && (unsigned)st < INDEX_NSTATES);
	if (e->state == INDEX_DEFERRED && st == INDEX_DEFERRED) {
		e->due_ms = due_ms;
		index_heap_fix(d, e->heap_slot);
		return;
	}
	index_detach(d, e);
	index_attach(d, e, st, due_ms);
}

void index_remove(struct index_shard *s, struct index_entry *e)
{
	struct index_destination *d = e->dest;

	assert(d && s->entries > 0);
	index_detach(d, e);
	e->dest = NULL;
	s->entries--;
	if (index_entries_of(d) > 0) {
		index_heap_trim(d);
		return;
	}
	index_table_delete(s, d);
	index_destination_free(d);
	if (s->cap > INDEX_MIN_CAP && (uint64_t)s->count * 8 < s->cap)
		(void)index_table_resize(s, s->cap / 2);
}

struct index_entry *index_first(const struct index_destination *d, enum index_state st)
{
	if (st == INDEX_DEFERRED)
		return d->count[INDEX_DEFERRED] ? d->heap[0] : NULL;
	struct list_node *first = list_first(&d->lists[st]);
	return first != NULL ? container_of(first, struct index_entry, link) : NULL;
}

struct index_entry *index_next(const struct index_entry *e)
{
	if (e->state == INDEX_DEFERRED)
		return NULL;
	struct list_node *next = list_next(&e->dest->lists[e->state], &e->link);
	return next != NULL ? container_of(next, struct index_entry, link) : NULL;
}

uint64_t index_next_due(const struct index_destination *d)
{
	return d->count[INDEX_DEFERRED] ? d->heap[0]->due_ms : UINT64_MAX;
}

unsigned index_release_due(struct index_destination *d, uint64_t now_ms)
{
	unsigned moved = 0;

	while (d->count[INDEX_DEFERRED] && d->heap[0]->due_ms <= now_ms) {
		struct index_entry *e = d->heap[0];
		index_heap_delete(d, e);
		index_attach(d, e, INDEX_READY, 0);
		moved++;
	}
	return moved;
}

unsigned index_flush(struct index_destination *d)
{
	unsigned moved = index_release_due(d, UINT64_MAX);
	struct index_entry *e, *next;

	/* One by one, in order: a marked entry stays where it is. */
	list_for_each_entry_safe(e, next, &d->lists[INDEX_HELD], link)
	{
		if (e->mark != 0)
			continue;
		index_detach(d, e);
		index_attach(d, e, INDEX_READY, 0);
		moved++;
	}
	return moved;
}

unsigned index_hold(struct index_destination *d)
{
	unsigned moved = 0;
	while (d->count[INDEX_DEFERRED]) {
		struct index_entry *e = d->heap[0];
		index_heap_delete(d, e);
		index_attach(d, e, INDEX_HELD, 0);
		moved++;
	}
	struct list_node *ready = &d->lists[INDEX_READY];
	if (list_empty(ready))
		return moved;
	struct index_entry *e;
	list_for_each_entry(e, ready, link) e->state = INDEX_HELD;
	list_splice_tail(&d->lists[INDEX_HELD], ready);
	d->changes++;
	moved += d->count[INDEX_READY];
	d->count[INDEX_HELD] += d->count[INDEX_READY];
	d->count[INDEX_READY] = 0;
	return moved;
}

void index_foreach(const struct index_shard *s, index_visit_fn *fn, void *arg)
{
	for (uint32_t i = 0; i < s->cap; i++) {
		if (s->slots[i] && !fn(s->slots[i], arg))
			return;
	}
}

/*
 * An argument with a dot at either end ("foo.com.", ".foo.com") has an empty
 * label and matches nothing: no destination is stored that way, and reading
 * the root dot away here would hide a caller that forgot to normalise.
 */
void index_foreach_suffix(const struct index_shard *s, const char *domain, size_t len,
			  index_visit_fn *fn, void *arg)
{
	char lower[INDEX_DOMAIN_MAX];

	if (len == 0 || len > sizeof(lower) || domain[0] == '.' || domain[len - 1] == '.')
		return;
	index_lower(lower, domain, len);
	for (uint32_t i = 0; i < s->cap; i++) {
		struct index_destination *d = s->slots[i];
		if (!d || d->len < len)
			continue;
		const char *tail = d->domain + (d->len - len);
		if (d->len > len && tail[-1] != '.')
			continue;
		if (memcmp(tail, lower, len) == 0 && !fn(d, arg))
			return;
	}
}

void index_foreach_entry(const struct index_destination *d, index_entry_fn *fn, void *arg)
{
	static const enum index_state lists[] = {INDEX_READY, INDEX_HELD, INDEX_INFLIGHT};
	for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
		struct index_entry *e = index_first(d, lists[k]);
		while (e != NULL) {
			struct index_entry *next = index_next(e);
			fn(arg, e);
			e = next;
		}
	}
	for (uint32_t i = 0; i < d->count[INDEX_DEFERRED]; i++)
		fn(arg, d->heap[i]);
}
