/*
 * Tests for queue/index: destinations found whatever the case of their
 * domain, recipients kept in the right state and order, due times released
 * exactly when due, ETRN's @domain matching on label boundaries, and a
 * randomized run against a reference model.
 *
 * The out-of-memory tests need allocation failures injected; they run when
 * the test is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc and
 * report "skipped" otherwise.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "queue/index.h"

/* ---- allocation failure injection (only with --wrap) --------------------- */

/* Weak, so that the test still links (and skips) without --wrap, when no
 * one calls the wrappers. */
extern void *__real_malloc(size_t n) __attribute__((weak));
extern void *__real_calloc(size_t n, size_t size) __attribute__((weak));
extern void *__real_realloc(void *p, size_t n) __attribute__((weak));

static unsigned long test_alloc_calls;
static unsigned long test_fail_countdown; /* fail the nth allocation from now; 0: none */
static bool test_fail_all;

static bool test_alloc_should_fail(void)
{
	test_alloc_calls++;
	if (test_fail_all)
		return true;
	return test_fail_countdown && --test_fail_countdown == 0;
}

void *__wrap_malloc(size_t n);
void *__wrap_malloc(size_t n)
{
	return test_alloc_should_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
	return test_alloc_should_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n)
{
	return test_alloc_should_fail() ? NULL : __real_realloc(p, n);
}

/* Skip the calling test when the index's allocations do not go through the
 * wrappers: passing without injecting anything would prove nothing. */
static void test_require_alloc_wrap(void)
{
	struct index_shard s;
	unsigned long before = test_alloc_calls;

	cr_assert_eq(index_shard_init(&s), 0);
	index_shard_free(&s);
	if (test_alloc_calls == before)
		cr_skip_test("not linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc");
}

/* ---- helpers ------------------------------------------------------------- */

/* splitmix64: a seeded, reproducible PRNG. */
static uint64_t test_rand_state;

static uint64_t test_rand(void)
{
	uint64_t z = (test_rand_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t test_below(uint32_t n)
{
	return (uint32_t)(test_rand() % n);
}

static int test_insert(struct index_shard *s, const char *domain, struct index_entry *e,
		       enum index_state st, uint64_t due)
{
	return index_insert(s, domain, strlen(domain), e, st, due);
}

static struct index_destination *test_find(const struct index_shard *s, const char *domain)
{
	return index_find(s, domain, strlen(domain));
}

/* Everything the index promises about one destination's insides. */
static void test_check_destination(const struct index_destination *d)
{
	uint64_t total = 0;

	for (int st = 0; st < INDEX_NSTATES; st++) {
		total += d->count[st];
		if (st == INDEX_DEFERRED)
			continue;
		const struct list_node *head = &d->lists[st];
		uint32_t n = 0;
		for (const struct list_node *node = head->next; node != head; node = node->next) {
			const struct index_entry *e = container_of(node, struct index_entry, link);
			cr_assert_eq(node->next->prev, node, "%s: broken list %d", d->domain, st);
			cr_assert_eq(e->state, st, "%s: entry in list %d says %d", d->domain, st,
				     e->state);
			cr_assert_eq(e->dest, d);
			cr_assert(++n <= d->count[st], "%s: list %d longer than its count",
				  d->domain, st);
		}
		cr_assert_eq(n, d->count[st], "%s: list %d has %u, count says %u", d->domain, st, n,
			     d->count[st]);
	}
	cr_assert(d->heap_cap >= total, "%s: heap room %u for %lu entries", d->domain, d->heap_cap,
		  (unsigned long)total);
	for (uint32_t i = 0; i < d->count[INDEX_DEFERRED]; i++) {
		const struct index_entry *e = d->heap[i];
		cr_assert_eq(e->heap_slot, i, "%s: heap_slot %u at %u", d->domain, e->heap_slot, i);
		cr_assert_eq(e->state, INDEX_DEFERRED);
		cr_assert_eq(e->dest, d);
		if (i > 0)
			cr_assert(d->heap[(i - 1) / 2]->due_ms <= e->due_ms,
				  "%s: heap order broken at %u", d->domain, i);
	}
	cr_assert_eq(d->len, strlen(d->domain));
	for (size_t i = 0; i < d->len; i++)
		cr_assert(!(d->domain[i] >= 'A' && d->domain[i] <= 'Z'), "%s: not lower-cased",
			  d->domain);
	cr_assert_eq(d->hash, index_domain_hash(d->domain, d->len));
}

/* The table's invariants: load, reachability, probe runs without holes. */
static void test_check_shard(const struct index_shard *s, bool deep)
{
	uint32_t used = 0;
	uint64_t entries = 0;

	cr_assert(s->cap >= 1 && (s->cap & (s->cap - 1)) == 0, "cap %u", s->cap);
	cr_assert((uint64_t)s->count * 10 <= (uint64_t)s->cap * 7, "load %u/%u", s->count, s->cap);
	for (uint32_t i = 0; i < s->cap; i++) {
		const struct index_destination *d = s->slots[i];
		if (!d)
			continue;
		used++;
		for (int st = 0; st < INDEX_NSTATES; st++)
			entries += d->count[st];
		for (uint32_t j = (uint32_t)d->hash & (s->cap - 1); j != i;
		     j = (j + 1) & (s->cap - 1))
			cr_assert_not_null(s->slots[j], "%s: hole in its probe run", d->domain);
		if (deep) {
			test_check_destination(d);
			cr_assert_eq(index_find(s, d->domain, d->len), d);
		}
	}
	cr_assert_eq(used, s->count);
	cr_assert_eq(entries, s->entries);
}

/* ---- basics -------------------------------------------------------------- */

Test(index, case_variants_are_one_destination)
{
	struct index_shard s;
	struct index_entry a, b, c;

	cr_assert_eq(index_shard_init(&s), 0);
	cr_assert_eq(test_insert(&s, "Example.COM", &a, INDEX_READY, 0), 0);
	cr_assert_eq(test_insert(&s, "example.com", &b, INDEX_HELD, 0), 0);
	cr_assert_eq(test_insert(&s, "EXAMPLE.com", &c, INDEX_READY, 0), 0);
	cr_assert_eq(s.count, 1);
	cr_assert_eq(s.entries, 3);

	struct index_destination *d = test_find(&s, "example.com");
	cr_assert_not_null(d);
	cr_assert_str_eq(d->domain, "example.com");
	cr_assert_eq(test_find(&s, "eXaMpLe.CoM"), d);
	cr_assert_eq(a.dest, d);
	cr_assert_eq(b.dest, d);
	cr_assert_eq(d->count[INDEX_READY], 2);
	cr_assert_eq(d->count[INDEX_HELD], 1);
	cr_assert_null(test_find(&s, "example.co"));
	cr_assert_null(test_find(&s, "example.com.au"));
	cr_assert_eq(index_domain_hash("Example.COM", 11), index_domain_hash("example.com", 11));
	cr_assert_eq(index_domain_hash("example.com", 11), XXH3_64bits("example.com", 11));

	index_remove(&s, &a);
	index_remove(&s, &c);
	cr_assert_eq(test_find(&s, "EXAMPLE.COM"), d);
	index_remove(&s, &b);
	cr_assert_null(test_find(&s, "example.com"));
	cr_assert_eq(s.count, 0);
	cr_assert_eq(s.entries, 0);
	index_shard_free(&s);
}

Test(index, invalid_arguments)
{
	struct index_shard s;
	struct index_entry e;
	char longest[INDEX_DOMAIN_MAX + 2];

	cr_assert_eq(index_shard_init(&s), 0);
	cr_assert_eq(index_insert(&s, "", 0, &e, INDEX_READY, 0), -EINVAL);
	cr_assert_eq(index_insert(&s, "example.com", 0, &e, INDEX_READY, 0), -EINVAL);
	memset(longest, 'a', sizeof(longest) - 1);
	longest[sizeof(longest) - 1] = '\0';
	cr_assert_eq(index_insert(&s, longest, INDEX_DOMAIN_MAX + 1, &e, INDEX_READY, 0), -EINVAL);
	cr_assert_eq(index_insert(&s, "example.com", 11, &e, INDEX_NSTATES, 0), -EINVAL);
	cr_assert_eq(index_insert(&s, "example.com", 11, &e, (enum index_state) - 1, 0), -EINVAL);
	cr_assert_eq(s.count, 0);
	cr_assert_eq(s.entries, 0);
	cr_assert_null(index_find(&s, longest, INDEX_DOMAIN_MAX + 1));
	cr_assert_null(index_find(&s, "", 0));

	/* The longest allowed is allowed, and the hash of a longer one is still
	 * the hash of its lower-cased text. */
	cr_assert_eq(index_insert(&s, longest, INDEX_DOMAIN_MAX, &e, INDEX_READY, 0), 0);
	cr_assert_not_null(index_find(&s, longest, INDEX_DOMAIN_MAX));
	char big[1000], big_lower[1000];
	for (size_t i = 0; i < sizeof(big); i++) {
		big[i] = (char)('A' + i % 26);
		big_lower[i] = (char)('a' + i % 26);
	}
	cr_assert_eq(index_domain_hash(big, sizeof(big)), XXH3_64bits(big_lower, sizeof(big)));
	index_remove(&s, &e);
	index_shard_free(&s);
}

Test(index, destination_freed_when_its_last_entry_leaves)
{
	struct index_shard s;
	struct index_entry e[3];

	cr_assert_eq(index_shard_init(&s), 0);
	cr_assert_eq(test_insert(&s, "gone.example", &e[0], INDEX_READY, 0), 0);
	cr_assert_eq(test_insert(&s, "gone.example", &e[1], INDEX_DEFERRED, 50), 0);
	cr_assert_eq(test_insert(&s, "stays.example", &e[2], INDEX_HELD, 0), 0);
	cr_assert_eq(s.count, 2);

	index_remove(&s, &e[1]);
	cr_assert_null(e[1].dest);
	struct index_destination *d = test_find(&s, "gone.example");
	cr_assert_not_null(d);
	cr_assert_eq(d->count[INDEX_DEFERRED], 0);
	cr_assert_eq(index_next_due(d), UINT64_MAX);
	cr_assert_null(index_first(d, INDEX_DEFERRED));

	index_remove(&s, &e[0]);
	cr_assert_null(test_find(&s, "gone.example"));
	cr_assert_eq(s.count, 1);
	cr_assert_eq(s.entries, 1);
	cr_assert_not_null(test_find(&s, "stays.example"));
	test_check_shard(&s, true);

	/* The same domain comes back as a fresh destination. */
	cr_assert_eq(test_insert(&s, "GONE.example", &e[0], INDEX_READY, 0), 0);
	cr_assert_eq(test_find(&s, "gone.example")->count[INDEX_READY], 1);
	cr_assert_eq(s.count, 2);
	index_shard_free(&s);
}

Test(index, a_shrinking_destination_gives_back_heap_room)
{
	enum { N = 4096 };
	struct index_shard s;
	struct index_entry *e = calloc(N, sizeof(*e));

	cr_assert_eq(index_shard_init(&s), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(test_insert(&s, "burst.example", &e[i], INDEX_DEFERRED, (uint64_t)i),
			     0);
	struct index_destination *d = test_find(&s, "burst.example");
	cr_assert_geq(d->heap_cap, N);
	for (int i = 0; i < N - 10; i++)
		index_remove(&s, &e[i]);
	cr_assert_leq(d->heap_cap, 64, "10 entries keep room for %u", d->heap_cap);
	test_check_destination(d);
	cr_assert_eq(index_release_due(d, UINT64_MAX), 10);
	index_shard_free(&s);
	free(e);
}

Test(index, lists_keep_insertion_order_and_move_to_tail)
{
	struct index_shard s;
	struct index_entry e[4];

	cr_assert_eq(index_shard_init(&s), 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(test_insert(&s, "order.example", &e[i], INDEX_READY, 0), 0);
	struct index_destination *d = test_find(&s, "order.example");

	/* READY -> READY sends an entry to the back of the line. */
	index_move(&e[0], INDEX_READY, 0);
	struct index_entry *want[] = {&e[1], &e[2], &e[3], &e[0]};
	struct index_entry *it = index_first(d, INDEX_READY);
	for (int i = 0; i < 4; i++, it = index_next(it))
		cr_assert_eq(it, want[i], "position %d", i);
	cr_assert_null(it);

	index_move(&e[2], INDEX_INFLIGHT, 0);
	index_move(&e[1], INDEX_INFLIGHT, 0);
	cr_assert_eq(index_first(d, INDEX_INFLIGHT), &e[2]);
	cr_assert_eq(index_next(&e[2]), &e[1]);
	cr_assert_null(index_next(&e[1]));
	cr_assert_eq(d->count[INDEX_READY], 2);
	cr_assert_eq(d->count[INDEX_INFLIGHT], 2);
	cr_assert_null(index_first(d, INDEX_HELD));
	test_check_destination(d);
	index_shard_free(&s);
}

Test(index, deferred_to_deferred_takes_the_new_due_time)
{
	struct index_shard s;
	struct index_entry e10, e20, e30;

	cr_assert_eq(index_shard_init(&s), 0);
	cr_assert_eq(test_insert(&s, "retry.example", &e20, INDEX_DEFERRED, 20), 0);
	cr_assert_eq(test_insert(&s, "retry.example", &e10, INDEX_DEFERRED, 10), 0);
	cr_assert_eq(test_insert(&s, "retry.example", &e30, INDEX_DEFERRED, 30), 0);
	struct index_destination *d = test_find(&s, "retry.example");
	cr_assert_eq(index_first(d, INDEX_DEFERRED), &e10);
	cr_assert_null(index_next(&e10), "DEFERRED has no order to walk");

	index_move(&e30, INDEX_DEFERRED, 5);
	cr_assert_eq(e30.due_ms, 5);
	cr_assert_eq(index_first(d, INDEX_DEFERRED), &e30);
	cr_assert_eq(index_next_due(d), 5);
	index_move(&e30, INDEX_DEFERRED, 25);
	test_check_destination(d);

	cr_assert_eq(index_release_due(d, UINT64_MAX), 3);
	struct index_entry *want[] = {&e10, &e20, &e30};
	struct index_entry *it = index_first(d, INDEX_READY);
	for (int i = 0; i < 3; i++, it = index_next(it))
		cr_assert_eq(it, want[i], "position %d", i);
	index_shard_free(&s);
}

Test(index, release_due_at_the_boundary)
{
	struct index_shard s;
	struct index_entry a, b, c, early;

	cr_assert_eq(index_shard_init(&s), 0);
	cr_assert_eq(test_insert(&s, "edge.example", &a, INDEX_DEFERRED, 1000), 0);
	cr_assert_eq(test_insert(&s, "edge.example", &b, INDEX_DEFERRED, 1001), 0);
	cr_assert_eq(test_insert(&s, "edge.example", &c, INDEX_DEFERRED, 1000), 0);
	cr_assert_eq(test_insert(&s, "edge.example", &early, INDEX_DEFERRED, 999), 0);
	struct index_destination *d = test_find(&s, "edge.example");

	cr_assert_eq(index_next_due(d), 999);
	cr_assert_eq(index_release_due(d, 998), 0);
	cr_assert_eq(index_release_due(d, 999), 1, "due == now is released");
	cr_assert_eq(index_first(d, INDEX_READY), &early);
	cr_assert_eq(index_next_due(d), 1000);
	cr_assert_eq(index_release_due(d, 1000), 2, "due == now + 1 is not");
	cr_assert_eq(index_next_due(d), 1001);
	cr_assert_eq(d->count[INDEX_DEFERRED], 1);
	cr_assert_eq(index_first(d, INDEX_DEFERRED), &b);
	cr_assert_eq(b.state, INDEX_DEFERRED);
	cr_assert_eq(a.state, INDEX_READY);
	cr_assert_eq(c.state, INDEX_READY);
	cr_assert_eq(index_release_due(d, 1000), 0);
	cr_assert_eq(index_release_due(d, 1001), 1);
	cr_assert_eq(index_next_due(d), UINT64_MAX);
	cr_assert_eq(index_release_due(d, UINT64_MAX), 0);
	cr_assert_eq(d->count[INDEX_READY], 4);
	cr_assert_eq(index_next(&a) == &c || index_next(&c) == &a, true,
		     "the two due at 1000 follow each other");
	test_check_destination(d);
	index_shard_free(&s);
}

Test(index, flush_order)
{
	struct index_shard s;
	struct index_entry ready, held[3], d10, d20, d30, inflight;

	cr_assert_eq(index_shard_init(&s), 0);
	cr_assert_eq(test_insert(&s, "site.example", &ready, INDEX_READY, 0), 0);
	cr_assert_eq(test_insert(&s, "site.example", &held[0], INDEX_HELD, 0), 0);
	cr_assert_eq(test_insert(&s, "site.example", &d30, INDEX_DEFERRED, 30), 0);
	cr_assert_eq(test_insert(&s, "site.example", &held[1], INDEX_HELD, 0), 0);
	cr_assert_eq(test_insert(&s, "site.example", &d10, INDEX_DEFERRED, 10), 0);
	cr_assert_eq(test_insert(&s, "site.example", &inflight, INDEX_INFLIGHT, 0), 0);
	cr_assert_eq(test_insert(&s, "site.example", &held[2], INDEX_HELD, 0), 0);
	cr_assert_eq(test_insert(&s, "site.example", &d20, INDEX_DEFERRED, 20), 0);
	struct index_destination *d = test_find(&s, "site.example");

	cr_assert_eq(index_flush(d), 6);
	struct index_entry *want[] = {&ready, &d10, &d20, &d30, &held[0], &held[1], &held[2]};
	struct index_entry *it = index_first(d, INDEX_READY);
	for (int i = 0; i < 7; i++, it = index_next(it)) {
		cr_assert_eq(it, want[i], "position %d", i);
		cr_assert_eq(it->state, INDEX_READY);
	}
	cr_assert_null(it);
	cr_assert_eq(d->count[INDEX_READY], 7);
	cr_assert_eq(d->count[INDEX_DEFERRED], 0);
	cr_assert_eq(d->count[INDEX_HELD], 0);
	cr_assert_eq(d->count[INDEX_INFLIGHT], 1, "in-flight work is not flushed");
	cr_assert_null(index_first(d, INDEX_HELD));
	cr_assert_eq(index_flush(d), 0);
	test_check_destination(d);

	/* The emptied HELD list still works. */
	index_move(&d10, INDEX_HELD, 0);
	cr_assert_eq(index_first(d, INDEX_HELD), &d10);
	cr_assert_eq(index_flush(d), 1);
	test_check_destination(d);
	index_shard_free(&s);
}

/* A HELD entry with a mark (an operator held it by its queue id) stays
 * through a flush; the others keep their order around it, and a hold
 * leaves the mark alone. */
Test(index, flush_leaves_marked_held_entries)
{
	struct index_shard s;
	struct index_entry held[4], ready;

	cr_assert_eq(index_shard_init(&s), 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(test_insert(&s, "site.example", &held[i], INDEX_HELD, 0), 0);
	cr_assert_eq(held[0].mark, 0, "inserted with a mark");
	held[1].mark = 1;
	held[3].mark = 1;
	struct index_destination *d = test_find(&s, "site.example");
	cr_assert_eq(index_flush(d), 2);
	cr_assert_eq(index_first(d, INDEX_READY), &held[0]);
	cr_assert_eq(index_next(&held[0]), &held[2]);
	cr_assert_eq(index_first(d, INDEX_HELD), &held[1]);
	cr_assert_eq(index_next(&held[1]), &held[3]);
	cr_assert_eq(index_flush(d), 0);
	test_check_destination(d);

	cr_assert_eq(test_insert(&s, "site.example", &ready, INDEX_READY, 0), 0);
	cr_assert_eq(index_hold(d), 3);
	cr_assert_eq(d->count[INDEX_HELD], 5);
	cr_assert_eq(index_flush(d), 3, "a hold made nothing marked");
	held[1].mark = 0;
	cr_assert_eq(index_flush(d), 1);
	cr_assert_eq(d->count[INDEX_HELD], 1);
	test_check_destination(d);
	index_shard_free(&s);
}

/* ---- the heap under many moves ------------------------------------------- */

static void test_count_visit(void *arg, struct index_entry *e)
{
	unsigned *seen = arg;
	seen[e->state]++;
}

Test(index, foreach_entry_visits_every_state_once)
{
	struct index_shard s;
	struct index_entry e[7];
	static const enum index_state states[] = {INDEX_READY,    INDEX_DEFERRED, INDEX_HELD,
						  INDEX_INFLIGHT, INDEX_DEFERRED, INDEX_READY,
						  INDEX_HELD};
	cr_assert_eq(index_shard_init(&s), 0);
	for (int i = 0; i < 7; i++)
		cr_assert_eq(test_insert(&s, "site.example", &e[i], states[i], 10 + i), 0);
	unsigned seen[INDEX_NSTATES] = {0};
	index_foreach_entry(test_find(&s, "site.example"), test_count_visit, seen);
	cr_assert_eq(seen[INDEX_READY], 2);
	cr_assert_eq(seen[INDEX_DEFERRED], 2);
	cr_assert_eq(seen[INDEX_HELD], 2);
	cr_assert_eq(seen[INDEX_INFLIGHT], 1);
	index_shard_free(&s);
}

Test(index, heap_order_after_many_moves)
{
	enum { N = 5000, MOVES = 200000 };
	struct index_shard s;
	struct index_entry *e = calloc(N, sizeof(*e));

	test_rand_state = 42;
	cr_assert_eq(index_shard_init(&s), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(
			test_insert(&s, "heap.example", &e[i], INDEX_DEFERRED, test_below(100000)),
			0);
	struct index_destination *d = test_find(&s, "heap.example");
	for (int m = 0; m < MOVES; m++) {
		struct index_entry *x = &e[test_below(N)];
		/* Mostly re-dues, some round trips through the lists. */
		enum index_state st = test_below(4) ? INDEX_DEFERRED : test_below(INDEX_NSTATES);
		index_move(x, st, test_below(100000));
		if (m % 10000 == 0)
			test_check_destination(d);
	}
	test_check_destination(d);

	/* Release in slices: each slice comes out in due order, and nothing
	 * later than the slice's end leaves. */
	uint32_t deferred = d->count[INDEX_DEFERRED];
	uint64_t last = 0;
	uint32_t released = 0;
	for (uint64_t now = 0; now < 100000 + 1000; now += 1000) {
		struct list_node *tail = d->lists[INDEX_READY].prev;
		unsigned n = index_release_due(d, now);
		struct list_node *node = tail->next;
		for (unsigned i = 0; i < n; i++, node = node->next) {
			const struct index_entry *it = container_of(node, struct index_entry, link);
			cr_assert(it->due_ms >= last && it->due_ms <= now,
				  "due %lu after %lu, now %lu", (unsigned long)it->due_ms,
				  (unsigned long)last, (unsigned long)now);
			last = it->due_ms;
		}
		released += n;
		cr_assert(index_next_due(d) > now);
	}
	cr_assert_eq(released, deferred);
	test_check_destination(d);
	index_shard_free(&s);
	free(e);
}

/* ---- the table: growth and shrinking ------------------------------------- */

static void test_domain_name(char *buf, size_t size, uint32_t i)
{
	snprintf(buf, size, "mx%u.customer-%u.example.net", i, i * 7919u);
}

Test(index, table_grows_and_shrinks_with_100k_destinations)
{
	enum { N = 100000 };
	struct index_shard s;
	struct index_entry *e = calloc(N, sizeof(*e));
	uint32_t *order = malloc(N * sizeof(*order));
	char name[64];

	test_rand_state = 7;
	cr_assert_eq(index_shard_init(&s), 0);
	uint32_t initial_cap = s.cap;
	for (uint32_t i = 0; i < N; i++) {
		test_domain_name(name, sizeof(name), i);
		cr_assert_eq(test_insert(&s, name, &e[i], (enum index_state)(i % INDEX_NSTATES), i),
			     0);
	}
	cr_assert_eq(s.count, N);
	cr_assert_eq(s.entries, N);
	cr_assert(s.cap >= N * 10 / 7, "cap %u for %u destinations", s.cap, N);
	test_check_shard(&s, true);
	for (uint32_t i = 0; i < N; i++) {
		test_domain_name(name, sizeof(name), i);
		for (char *p = name; *p; p++)
			*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
		cr_assert_eq(test_find(&s, name), e[i].dest, "%s", name);
	}

	/* Remove in random order; the rest stays reachable as the table
	 * shrinks under it. */
	for (uint32_t i = 0; i < N; i++)
		order[i] = i;
	for (uint32_t i = N - 1; i > 0; i--) {
		uint32_t j = test_below(i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	uint32_t peak_cap = s.cap;
	for (uint32_t k = 0; k < N; k++) {
		index_remove(&s, &e[order[k]]);
		if (k % 10000 == 9999 || k == N - 100) {
			test_check_shard(&s, true);
			cr_assert(s.cap == initial_cap || (uint64_t)s.count * 8 >= s.cap / 2,
				  "cap %u for %u destinations", s.cap, s.count);
			for (uint32_t r = 0; r <= k; r += 97) {
				test_domain_name(name, sizeof(name), order[r]);
				cr_assert_null(test_find(&s, name), "%s still found", name);
			}
			for (uint32_t r = k + 1; r < N; r++) {
				test_domain_name(name, sizeof(name), order[r]);
				cr_assert_not_null(test_find(&s, name), "%s lost", name);
			}
		}
	}
	cr_assert_eq(s.count, 0);
	cr_assert_eq(s.entries, 0);
	cr_assert(peak_cap > initial_cap);
	cr_assert_eq(s.cap, initial_cap, "back to %u, not %u", initial_cap, s.cap);

	/* And it grows again. */
	for (uint32_t i = 0; i < 1000; i++) {
		test_domain_name(name, sizeof(name), i);
		cr_assert_eq(test_insert(&s, name, &e[i], INDEX_READY, 0), 0);
	}
	test_check_shard(&s, true);
	index_shard_free(&s);
	free(order);
	free(e);
}

/* ---- ETRN @domain -------------------------------------------------------- */

struct test_visit {
	char seen[16][INDEX_DOMAIN_MAX + 1];
	int n;
	int stop_after; /* 0: never stop */
};

static bool test_visit_record(struct index_destination *d, void *arg)
{
	struct test_visit *v = arg;

	cr_assert(v->n < 16);
	snprintf(v->seen[v->n++], sizeof(v->seen[0]), "%s", d->domain);
	return v->stop_after == 0 || v->n < v->stop_after;
}

static bool test_visit_has(const struct test_visit *v, const char *domain)
{
	for (int i = 0; i < v->n; i++) {
		if (strcmp(v->seen[i], domain) == 0)
			return true;
	}
	return false;
}

/* The destinations `arg` covers, as a space-separated set, in any order. */
static void test_expect_suffix(const struct index_shard *s, const char *arg, const char *want)
{
	struct test_visit v = {0};
	int wanted = 0;
	char copy[512];

	index_foreach_suffix(s, arg, strlen(arg), test_visit_record, &v);
	snprintf(copy, sizeof(copy), "%s", want);
	for (char *save, *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		cr_expect(test_visit_has(&v, tok), "@%s should cover %s", arg, tok);
		wanted++;
	}
	cr_expect_eq(v.n, wanted, "@%s covers %d destinations, want %d (%s)", arg, v.n, wanted,
		     want);
}

Test(index, suffix_matches_on_label_boundaries)
{
	static const char *const domains[] = {
		"foo.com",    "fred.foo.com", "a.b.c.foo.com", "FOO.COM", "barfoo.com",
		"foo.com.au", "oo.com",       "com",           "foo.co",  "Mail.Fred.Foo.Com",
	};
	enum { N = sizeof(domains) / sizeof(domains[0]) };
	struct index_shard s;
	struct index_entry e[N];

	cr_assert_eq(index_shard_init(&s), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(test_insert(&s, domains[i], &e[i], INDEX_HELD, 0), 0);
	cr_assert_eq(s.count, N - 1, "FOO.COM is foo.com");

	const char *foo = "foo.com fred.foo.com a.b.c.foo.com mail.fred.foo.com";
	test_expect_suffix(&s, "foo.com", foo);
	test_expect_suffix(&s, "FOO.com", foo);
	test_expect_suffix(&s, "fred.foo.com", "fred.foo.com mail.fred.foo.com");
	test_expect_suffix(&s, "oo.com", "oo.com");
	test_expect_suffix(&s, "com",
			   "foo.com fred.foo.com a.b.c.foo.com mail.fred.foo.com "
			   "barfoo.com oo.com com");
	test_expect_suffix(&s, "au", "foo.com.au");
	test_expect_suffix(&s, "com.au", "foo.com.au");
	test_expect_suffix(&s, "o.com", "");
	test_expect_suffix(&s, "foo.com.", "");
	test_expect_suffix(&s, ".foo.com", "");
	test_expect_suffix(&s, ".", "");
	test_expect_suffix(&s, "", "");
	test_expect_suffix(&s, "a.foo.com", "");
	test_expect_suffix(&s, "nowhere.example", "");

	char longest[INDEX_DOMAIN_MAX + 2];
	memset(longest, 'c', sizeof(longest) - 1);
	longest[sizeof(longest) - 1] = '\0';
	test_expect_suffix(&s, longest, "");

	/* Returning false stops the walk. */
	struct test_visit v = {.stop_after = 2};
	index_foreach_suffix(&s, "com", 3, test_visit_record, &v);
	cr_assert_eq(v.n, 2);
	struct test_visit all = {0};
	index_foreach(&s, test_visit_record, &all);
	cr_assert_eq(all.n, N - 1);
	struct test_visit one = {.stop_after = 1};
	index_foreach(&s, test_visit_record, &one);
	cr_assert_eq(one.n, 1);
	index_shard_free(&s);
}

/* ---- sharding ------------------------------------------------------------ */

Test(index, shard_choice_spreads_domains)
{
	enum { N = 10000, SHARDS = 8 };
	uint32_t per_shard[SHARDS] = {0};
	uint32_t slot_in_shard0[SHARDS] = {0};
	char name[64];

	for (uint32_t i = 0; i < N; i++) {
		test_domain_name(name, sizeof(name), i);
		uint64_t h = index_domain_hash(name, strlen(name));
		uint32_t shard = index_shard_for(h, SHARDS);
		cr_assert_lt(shard, SHARDS);
		per_shard[shard]++;
		/* Within one shard the slot bits must still spread, or every
		 * destination of a shard would pile into the same probe runs. */
		if (shard == 0)
			slot_in_shard0[h & (SHARDS - 1)]++;
	}
	for (int i = 0; i < SHARDS; i++) {
		/* Expect 1250 ± 33 (one standard deviation); allow far more. */
		cr_expect(per_shard[i] > 1000 && per_shard[i] < 1500, "shard %d got %u of %u", i,
			  per_shard[i], N);
		cr_expect(slot_in_shard0[i] > 80, "shard 0, slot bits %d: %u", i,
			  slot_in_shard0[i]);
	}
	cr_assert_eq(index_shard_for(UINT64_MAX, 1), 0);
	cr_assert_eq(index_shard_for(0xabcdef0100000000ull, 256), 0x01);
}

/* ---- randomized run against a reference model ---------------------------- */

enum { MODEL_DOMAINS = 500, MODEL_RCPTS = 2000, MODEL_STEPS = 200000 };

struct model_rcpt {
	struct index_entry e;
	int domain; /* -1: not in the index */
	enum index_state st;
	uint64_t due;
	uint64_t seq; /* position in its list: later is further back */
	bool marked;
};

struct model {
	struct index_shard s;
	struct model_rcpt r[MODEL_RCPTS];
	char names[MODEL_DOMAINS][48];
	uint32_t count[MODEL_DOMAINS][INDEX_NSTATES];
	uint32_t destinations;
	uint64_t entries;
	uint64_t seq;
	uint64_t now;
};

static uint32_t model_total(const struct model *m, int dom)
{
	uint32_t total = 0;

	for (int st = 0; st < INDEX_NSTATES; st++)
		total += m->count[dom][st];
	return total;
}

static struct index_destination *model_find(const struct model *m, int dom)
{
	return test_find(&m->s, m->names[dom]);
}

static void model_check_counts(const struct model *m, int dom, uint32_t step)
{
	struct index_destination *d = model_find(m, dom);

	cr_assert_eq(m->s.entries, m->entries, "step %u: %lu entries, model %lu", step,
		     (unsigned long)m->s.entries, (unsigned long)m->entries);
	cr_assert_eq(m->s.count, m->destinations, "step %u: %u destinations, model %u", step,
		     m->s.count, m->destinations);
	if (model_total(m, dom) == 0) {
		cr_assert_null(d, "step %u: %s should be gone", step, m->names[dom]);
		return;
	}
	cr_assert_not_null(d, "step %u: %s missing", step, m->names[dom]);
	for (int st = 0; st < INDEX_NSTATES; st++)
		cr_assert_eq(d->count[st], m->count[dom][st], "step %u: %s state %d: %u, model %u",
			     step, m->names[dom], st, d->count[st], m->count[dom][st]);
}

static int model_by_seq(const void *a, const void *b)
{
	const struct model_rcpt *x = *(const struct model_rcpt *const *)a;
	const struct model_rcpt *y = *(const struct model_rcpt *const *)b;

	return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Every entry where the model says, lists in the model's order. */
static void model_check_all(const struct model *m, uint32_t step)
{
	static const struct model_rcpt *in_list[MODEL_RCPTS];

	test_check_shard(&m->s, true);
	for (int dom = 0; dom < MODEL_DOMAINS; dom++) {
		model_check_counts(m, dom, step);
		struct index_destination *d = model_find(m, dom);
		if (!d)
			continue;
		for (int st = 0; st < INDEX_NSTATES; st++) {
			size_t n = 0;
			for (int i = 0; i < MODEL_RCPTS; i++) {
				const struct model_rcpt *r = &m->r[i];
				if (r->domain != dom || r->st != (enum index_state)st)
					continue;
				cr_assert_eq(r->e.dest, d);
				cr_assert_eq(r->e.state, st);
				if (st == INDEX_DEFERRED) {
					cr_assert_eq(r->e.due_ms, r->due);
					cr_assert_eq(d->heap[r->e.heap_slot], &r->e);
				} else {
					in_list[n++] = r;
				}
			}
			if (st == INDEX_DEFERRED)
				continue;
			qsort(in_list, n, sizeof(in_list[0]), model_by_seq);
			struct index_entry *it = index_first(d, (enum index_state)st);
			for (size_t k = 0; k < n; k++, it = index_next(it))
				cr_assert_eq(it, &in_list[k]->e,
					     "step %u: %s state %d position %zu", step,
					     m->names[dom], st, k);
			cr_assert_null(it);
		}
		uint64_t earliest = UINT64_MAX;
		for (int i = 0; i < MODEL_RCPTS; i++) {
			if (m->r[i].domain == dom && m->r[i].st == INDEX_DEFERRED &&
			    m->r[i].due < earliest)
				earliest = m->r[i].due;
		}
		cr_assert_eq(index_next_due(d), earliest);
	}
}

static void model_insert(struct model *m, struct model_rcpt *r)
{
	int dom = (int)test_below(MODEL_DOMAINS);
	char name[48];
	enum index_state st = (enum index_state)test_below(INDEX_NSTATES);
	uint64_t due = m->now + test_below(60);

	/* The same destination, spelled with whatever case a client used. */
	snprintf(name, sizeof(name), "%s", m->names[dom]);
	for (char *p = name; *p; p++) {
		if (*p >= 'a' && *p <= 'z' && test_below(3) == 0)
			*p = (char)(*p - 32);
	}
	cr_assert_eq(test_insert(&m->s, name, &r->e, st, due), 0);
	if (model_total(m, dom) == 0)
		m->destinations++;
	r->domain = dom;
	r->st = st;
	r->due = due;
	r->seq = ++m->seq;
	m->count[dom][st]++;
	m->entries++;
}

static void model_move(struct model *m, struct model_rcpt *r)
{
	enum index_state st = (enum index_state)test_below(INDEX_NSTATES);
	uint64_t due = m->now + test_below(60);

	index_move(&r->e, st, due);
	m->count[r->domain][r->st]--;
	m->count[r->domain][st]++;
	r->st = st;
	if (st == INDEX_DEFERRED)
		r->due = due;
	r->seq = ++m->seq;
}

static void model_remove(struct model *m, struct model_rcpt *r)
{
	index_remove(&m->s, &r->e);
	cr_assert_null(r->e.dest);
	m->count[r->domain][r->st]--;
	m->entries--;
	if (model_total(m, r->domain) == 0)
		m->destinations--;
	r->domain = -1;
}

/* Mark the model's entries of `dom` in state st (DEFERRED: due by `now`). */
static uint32_t model_mark(struct model *m, int dom, enum index_state st, uint64_t now)
{
	uint32_t n = 0;

	for (int i = 0; i < MODEL_RCPTS; i++) {
		struct model_rcpt *r = &m->r[i];
		r->marked =
			r->domain == dom && r->st == st && (st != INDEX_DEFERRED || r->due <= now);
		n += r->marked;
	}
	return n;
}

/* The `n` entries starting at `it` in READY must be exactly the marked
 * DEFERRED ones in due order (ties in any order: the heap is not stable). */
static struct list_node *model_take_released(struct model *m, int dom, struct list_node *it,
					     uint32_t n, uint32_t step)
{
	uint64_t last = 0;

	for (uint32_t k = 0; k < n; k++, it = it->next) {
		struct model_rcpt *r =
			(struct model_rcpt *)container_of(it, struct index_entry, link);
		cr_assert(r->marked && r->domain == dom && r->st == INDEX_DEFERRED,
			  "step %u: released an entry that was not due", step);
		cr_assert(r->due >= last, "step %u: released out of due order", step);
		last = r->due;
		r->marked = false;
		r->st = INDEX_READY;
		r->seq = ++m->seq;
		m->count[dom][INDEX_DEFERRED]--;
		m->count[dom][INDEX_READY]++;
	}
	return it;
}

static void model_release_due(struct model *m, int dom, uint32_t step)
{
	struct index_destination *d = model_find(m, dom);
	uint32_t due = model_mark(m, dom, INDEX_DEFERRED, m->now);

	if (!d) {
		cr_assert_eq(due, 0);
		return;
	}
	struct list_node *tail = d->lists[INDEX_READY].prev;
	cr_assert_eq(index_release_due(d, m->now), due, "step %u", step);
	model_take_released(m, dom, tail->next, due, step);
}

static void model_flush(struct model *m, int dom, uint32_t step)
{
	static struct model_rcpt *held[MODEL_RCPTS];
	struct index_destination *d = model_find(m, dom);
	uint32_t deferred = model_mark(m, dom, INDEX_DEFERRED, UINT64_MAX);

	if (!d)
		return;
	size_t nheld = 0;
	for (int i = 0; i < MODEL_RCPTS; i++) {
		if (m->r[i].domain == dom && m->r[i].st == INDEX_HELD)
			held[nheld++] = &m->r[i];
	}
	qsort(held, nheld, sizeof(held[0]), model_by_seq);

	struct list_node *tail = d->lists[INDEX_READY].prev;
	cr_assert_eq(index_flush(d), deferred + nheld, "step %u", step);
	struct list_node *it = model_take_released(m, dom, tail->next, deferred, step);
	for (size_t k = 0; k < nheld; k++, it = it->next) {
		cr_assert_eq(it, &held[k]->e.link, "step %u: HELD order lost in flush", step);
		held[k]->st = INDEX_READY;
		held[k]->seq = ++m->seq;
	}
	cr_assert_eq(it, &d->lists[INDEX_READY]);
	m->count[dom][INDEX_READY] += (uint32_t)nheld;
	m->count[dom][INDEX_HELD] = 0;
}

Test(index, randomized_against_a_model, .timeout = 300)
{
	struct model *m = calloc(1, sizeof(*m));
	uint64_t seed = 0x5eed0001;

	test_rand_state = seed;
	cr_assert_eq(index_shard_init(&m->s), 0);
	uint32_t initial_cap = m->s.cap;
	for (int i = 0; i < MODEL_DOMAINS; i++)
		snprintf(m->names[i], sizeof(m->names[i]), "%s%u.zone%u.example", i % 5 ? "mx" : "",
			 i, i % 37);
	for (int i = 0; i < MODEL_RCPTS; i++)
		m->r[i].domain = -1;

	for (uint32_t step = 0; step < MODEL_STEPS; step++) {
		uint32_t op = test_below(100);
		int dom;
		if (op < 75) {
			struct model_rcpt *r = &m->r[test_below(MODEL_RCPTS)];
			dom = r->domain;
			if (r->domain < 0)
				model_insert(m, r);
			else if (op < 45)
				model_move(m, r);
			else
				model_remove(m, r);
			if (dom < 0)
				dom = r->domain;
		} else if (op < 90) {
			dom = (int)test_below(MODEL_DOMAINS);
			model_release_due(m, dom, step);
		} else if (op < 93) {
			dom = (int)test_below(MODEL_DOMAINS);
			model_flush(m, dom, step);
		} else {
			m->now += test_below(20);
			dom = (int)test_below(MODEL_DOMAINS);
		}
		model_check_counts(m, dom, step);

		/* Now and then everything leaves, so destinations are freed
		 * and the table shrinks back, then fills again. */
		if (step % 50000 == 49999) {
			for (int i = 0; i < MODEL_RCPTS; i++) {
				if (m->r[i].domain < 0)
					continue;
				int left = m->r[i].domain;
				model_remove(m, &m->r[i]);
				model_check_counts(m, left, step);
			}
			cr_assert_eq(m->s.count, 0);
			cr_assert_eq(m->s.cap, initial_cap, "seed %#lx", (unsigned long)seed);
		}
		if (step % 500 == 0)
			model_check_all(m, step);
	}
	model_check_all(m, MODEL_STEPS);
	index_shard_free(&m->s);
	free(m);
}

/* ---- out of memory ------------------------------------------------------- */

struct test_snapshot {
	struct index_destination **slots;
	uint32_t cap, count;
	uint64_t entries;
};

static struct test_snapshot test_snap(const struct index_shard *s)
{
	return (struct test_snapshot){s->slots, s->cap, s->count, s->entries};
}

static void test_expect_unchanged(const struct index_shard *s, struct test_snapshot was)
{
	cr_assert_eq(s->slots, was.slots);
	cr_assert_eq(s->cap, was.cap);
	cr_assert_eq(s->count, was.count);
	cr_assert_eq(s->entries, was.entries);
}

Test(index, out_of_memory_leaves_the_shard_unchanged)
{
	struct index_shard s;
	struct index_entry e[64];
	char name[64];

	test_require_alloc_wrap();
	test_fail_countdown = 1;
	cr_assert_eq(index_shard_init(&s), -ENOMEM);
	test_fail_countdown = 0;
	cr_assert_eq(index_shard_init(&s), 0);

	/* Fill to the brink of growing: the next destination needs a bigger
	 * table as well as its own memory. */
	uint32_t n = 0;
	while ((s.count + 1) * 10 <= s.cap * 7) {
		test_domain_name(name, sizeof(name), n);
		cr_assert_eq(test_insert(&s, name, &e[n], INDEX_READY, 0), 0);
		n++;
	}
	test_domain_name(name, sizeof(name), n);
	int failures = 0;
	for (unsigned long k = 1;; k++) {
		struct test_snapshot was = test_snap(&s);
		test_fail_countdown = k;
		int rc = test_insert(&s, name, &e[n], INDEX_DEFERRED, 5);
		test_fail_countdown = 0;
		if (rc == 0)
			break;
		cr_assert_eq(rc, -ENOMEM);
		failures++;
		test_expect_unchanged(&s, was);
		cr_assert_null(test_find(&s, name));
		test_check_shard(&s, true);
	}
	cr_assert_geq(failures, 3, "destination, its heap and the table can each fail");
	cr_assert_eq(test_find(&s, name)->count[INDEX_DEFERRED], 1);
	n++;

	/* Room in a destination's heap: the 5th entry outgrows the first
	 * reservation. */
	struct index_destination *d = e[0].dest;
	uint32_t heap_cap = d->heap_cap;
	test_domain_name(name, sizeof(name), 0);
	while (d->count[INDEX_READY] < heap_cap)
		cr_assert_eq(test_insert(&s, name, &e[n++], INDEX_READY, 0), 0);
	struct test_snapshot was = test_snap(&s);
	test_fail_countdown = 1;
	cr_assert_eq(test_insert(&s, name, &e[n], INDEX_DEFERRED, 1), -ENOMEM);
	test_expect_unchanged(&s, was);
	cr_assert_eq(d->heap_cap, heap_cap);
	cr_assert_eq(d->count[INDEX_DEFERRED], 0);
	test_check_shard(&s, true);

	/* Moves never allocate: all of them work with every allocation
	 * failing. */
	test_fail_all = true;
	for (uint32_t i = 0; i < n; i++)
		index_move(&e[i], INDEX_DEFERRED, 100 - i);
	unsigned released = index_release_due(d, 1000);
	cr_assert_eq(released, d->count[INDEX_READY]);
	cr_assert_eq(d->count[INDEX_DEFERRED], 0);
	test_fail_all = false;
	test_check_shard(&s, true);
	index_shard_free(&s);
}

Test(index, failed_shrink_keeps_a_working_table)
{
	enum { N = 200 };
	struct index_shard s;
	struct index_entry e[N];
	char name[64];

	test_require_alloc_wrap();
	cr_assert_eq(index_shard_init(&s), 0);
	for (uint32_t i = 0; i < N; i++) {
		test_domain_name(name, sizeof(name), i);
		cr_assert_eq(test_insert(&s, name, &e[i], INDEX_READY, 0), 0);
	}
	uint32_t cap = s.cap;

	test_fail_all = true;
	for (uint32_t i = 0; i < N - 1; i++)
		index_remove(&s, &e[i]);
	test_fail_all = false;
	cr_assert_eq(s.cap, cap, "no memory to shrink: the table keeps its size");
	cr_assert_eq(s.count, 1);
	test_check_shard(&s, true);
	test_domain_name(name, sizeof(name), N - 1);
	cr_assert_eq(test_find(&s, name), e[N - 1].dest);

	/* With memory back, the next removal shrinks it. */
	cr_assert_eq(test_insert(&s, "x.example", &e[0], INDEX_READY, 0), 0);
	index_remove(&s, &e[0]);
	cr_assert_lt(s.cap, cap);
	test_check_shard(&s, true);
	index_shard_free(&s);
}
