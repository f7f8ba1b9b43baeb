/*
 * Tests for net/client_limit: the per-client connection limit holds per
 * address whatever the port and whichever form an IPv4 client comes in,
 * released places can be taken again, and workers acquiring and releasing
 * at once never take a client past its limit nor leave a count behind.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "net/client_limit.h"

/* ---- helpers ------------------------------------------------------------ */

/* A client address as accept() would hand it over. */
static struct sockaddr_storage test_client(const char *text, uint16_t port)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		cr_assert_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1, "%s", text);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		cr_assert_eq(inet_pton(AF_INET, text, &sin->sin_addr), 1, "%s", text);
	}
	return ss;
}

static struct client_limit *test_limit(uint32_t per_client, uint32_t max_connections)
{
	struct client_limit *cl = NULL;

	cr_assert_eq(client_limit_create(&cl, per_client, max_connections), 0);
	cr_assert_not_null(cl);
	return cl;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* Acquire for the client at text:port; the slot when granted. */
static bool test_acquire(struct client_limit *cl, const char *text, uint16_t port, uint32_t *slot)
{
	struct sockaddr_storage ss = test_client(text, port);
	uint32_t got = 0;
	bool granted = client_limit_acquire(cl, SA(ss), &got);

	cr_assert_eq(got == CLIENT_LIMIT_NO_SLOT, !granted, "%s: slot %u, granted %d", text, got,
		     granted);
	if (slot != NULL)
		*slot = got;
	return granted;
}

static void test_release(struct client_limit *cl, const char *text, uint32_t slot)
{
	struct sockaddr_storage ss = test_client(text, 40000);

	client_limit_release(cl, SA(ss), slot);
}

static uint32_t test_count(struct client_limit *cl, const char *text)
{
	struct sockaddr_storage ss = test_client(text, 1);

	return client_limit_count(cl, SA(ss));
}

/* ---- the limit ---------------------------------------------------------- */

Test(client_limit, holds_per_address_whatever_the_port)
{
	struct client_limit *cl = test_limit(3, 100);
	uint32_t slots[3];

	for (uint16_t i = 0; i < 3; i++)
		cr_expect(test_acquire(cl, "192.0.2.1", (uint16_t)(1000 + i), &slots[i]));
	cr_expect(!test_acquire(cl, "192.0.2.1", 2000, NULL), "a fourth connection is refused");
	cr_expect_eq(test_count(cl, "192.0.2.1"), 3, "a refusal counts nothing");
	cr_expect(test_acquire(cl, "192.0.2.2", 1000, NULL), "another client is not held back");
	cr_expect_eq(test_count(cl, "192.0.2.2"), 1);
	cr_expect_eq(test_count(cl, "192.0.2.3"), 0);
	client_limit_destroy(cl);
}

Test(client_limit, ipv4_and_mapped_ipv4_are_one_client)
{
	struct client_limit *cl = test_limit(2, 100);
	uint32_t plain, mapped;

	cr_assert(test_acquire(cl, "198.51.100.7", 1000, &plain));
	cr_assert(test_acquire(cl, "::ffff:198.51.100.7", 1001, &mapped));
	cr_expect(!test_acquire(cl, "198.51.100.7", 1002, NULL));
	cr_expect(!test_acquire(cl, "::ffff:198.51.100.7", 1003, NULL));
	cr_expect_eq(test_count(cl, "198.51.100.7"), 2);
	cr_expect_eq(test_count(cl, "::ffff:198.51.100.7"), 2);

	/* Given back in the other form: it is the same client. */
	test_release(cl, "::ffff:198.51.100.7", plain);
	cr_expect_eq(test_count(cl, "198.51.100.7"), 1);
	test_release(cl, "198.51.100.7", mapped);
	cr_expect_eq(test_count(cl, "198.51.100.7"), 0);
	client_limit_destroy(cl);
}

Test(client_limit, ipv6_addresses_are_their_own_clients)
{
	struct client_limit *cl = test_limit(1, 100);

	cr_expect(test_acquire(cl, "127.0.0.1", 1, NULL));
	cr_expect(test_acquire(cl, "::1", 1, NULL));
	cr_expect(test_acquire(cl, "::127.0.0.1", 1, NULL), "IPv4-compatible is not mapped");
	cr_expect(test_acquire(cl, "2001:db8::1", 1, NULL));
	cr_expect(test_acquire(cl, "2001:db8::2", 1, NULL));
	cr_expect(!test_acquire(cl, "2001:db8::1", 2, NULL));
	cr_expect(!test_acquire(cl, "::ffff:127.0.0.1", 2, NULL));
	client_limit_destroy(cl);
}

Test(client_limit, release_frees_the_place)
{
	struct client_limit *cl = test_limit(1, 100);
	uint32_t slot;

	cr_assert(test_acquire(cl, "203.0.113.9", 1, &slot));
	cr_expect(!test_acquire(cl, "203.0.113.9", 2, NULL));
	test_release(cl, "203.0.113.9", slot);
	cr_expect_eq(test_count(cl, "203.0.113.9"), 0);
	cr_expect(test_acquire(cl, "203.0.113.9", 3, &slot), "the place can be taken again");
	test_release(cl, "203.0.113.9", slot);
	client_limit_destroy(cl);
}

/* Far more clients than the smallest table holds inline: they spill, and
 * spilled clients are limited, released and freed like the others. */
Test(client_limit, many_clients_in_a_small_table)
{
	enum { CLIENTS = 2000 };
	static uint32_t slots[CLIENTS][2];
	struct client_limit *cl = test_limit(2, 1);
	char text[INET6_ADDRSTRLEN];

	for (unsigned round = 0; round < 2; round++) {
		for (unsigned i = 0; i < CLIENTS; i++) {
			snprintf(text, sizeof(text), "2001:db8::%x", i);
			cr_assert(test_acquire(cl, text, 1, &slots[i][round]), "%s", text);
		}
	}
	for (unsigned i = 0; i < CLIENTS; i++) {
		snprintf(text, sizeof(text), "2001:db8::%x", i);
		cr_assert(!test_acquire(cl, text, 2, NULL), "%s", text);
		cr_assert_eq(test_count(cl, text), 2, "%s", text);
		test_release(cl, text, slots[i][0]);
		test_release(cl, text, slots[i][1]);
		cr_assert_eq(test_count(cl, text), 0, "%s", text);
	}
	/* Places still held at destroy are freed with the table. */
	cr_assert(test_acquire(cl, "2001:db8::1", 1, NULL));
	client_limit_destroy(cl);
}

Test(client_limit, bad_arguments)
{
	struct client_limit *cl = NULL;

	cr_expect_eq(client_limit_create(&cl, 0, 100), -EINVAL, "every client may hold one");
	cr_expect_null(cl);
	cr_expect_eq(client_limit_create(NULL, 1, 100), -EINVAL);
	client_limit_destroy(NULL);
}

/* ---- many workers at once ----------------------------------------------- */

#define TEST_THREADS    4
#define TEST_ITERATIONS 20000
#define TEST_PER_CLIENT 3
#define TEST_HELD_MAX   4

/* Clients 0 and 1 are shared by every thread (0 in both of its forms);
 * client 2 + t is thread t's own. */
#define TEST_SHARED  2
#define TEST_CLIENTS (TEST_SHARED + TEST_THREADS)

static struct client_limit *test_shared_limit;
static struct sockaddr_storage test_clients[TEST_CLIENTS];
static struct sockaddr_storage test_mapped_client0;
/* What the threads hold, counted by themselves: never above the limit. */
static atomic_uint test_holding[TEST_CLIENTS];
static atomic_uint test_over_limit;
static atomic_ulong test_granted;
static atomic_ulong test_refused;

struct test_worker {
	pthread_t thread;
	unsigned index;
	uint64_t random;
	unsigned nheld;
	struct {
		unsigned client;
		uint32_t slot;
	} held[TEST_HELD_MAX];
};

static uint64_t test_next_random(struct test_worker *w)
{
	w->random ^= w->random << 13; /* xorshift64 */
	w->random ^= w->random >> 7;
	w->random ^= w->random << 17;
	return w->random;
}

static const struct sockaddr *test_client_form(unsigned client, uint64_t random)
{
	if (client == 0 && random % 2 != 0)
		return SA(test_mapped_client0);
	return SA(test_clients[client]);
}

static void test_worker_release_one(struct test_worker *w, unsigned which)
{
	unsigned client = w->held[which].client;

	/* The shadow count drops before the place is given back, and rises
	 * only after it was granted: it never exceeds the table's count. */
	atomic_fetch_sub(&test_holding[client], 1);
	client_limit_release(test_shared_limit, test_client_form(client, test_next_random(w)),
			     w->held[which].slot);
	w->held[which] = w->held[--w->nheld];
}

static void *test_worker_main(void *arg)
{
	struct test_worker *w = arg;

	for (unsigned i = 0; i < TEST_ITERATIONS; i++) {
		uint64_t r = test_next_random(w);

		if (w->nheld == TEST_HELD_MAX || (w->nheld > 0 && r % 3 == 0)) {
			test_worker_release_one(w, (unsigned)(r >> 8) % w->nheld);
			continue;
		}
		unsigned client = (r >> 8) % 3 == 2 ? TEST_SHARED + w->index : (r >> 8) % 3;
		uint32_t slot;

		if (!client_limit_acquire(test_shared_limit, test_client_form(client, r >> 16),
					  &slot)) {
			atomic_fetch_add(&test_refused, 1);
			continue;
		}
		atomic_fetch_add(&test_granted, 1);
		if (atomic_fetch_add(&test_holding[client], 1) + 1 > TEST_PER_CLIENT)
			atomic_fetch_add(&test_over_limit, 1);
		w->held[w->nheld].client = client;
		w->held[w->nheld].slot = slot;
		w->nheld++;
	}
	while (w->nheld > 0)
		test_worker_release_one(w, 0);
	return NULL;
}

Test(client_limit, workers_at_once_keep_the_limit_and_end_at_zero)
{
	static struct test_worker workers[TEST_THREADS];
	char text[INET6_ADDRSTRLEN];

	test_shared_limit = test_limit(TEST_PER_CLIENT, 1000);
	test_clients[0] = test_client("198.51.100.1", 25);
	test_mapped_client0 = test_client("::ffff:198.51.100.1", 26);
	test_clients[1] = test_client("2001:db8::25", 25);
	for (unsigned t = 0; t < TEST_THREADS; t++) {
		snprintf(text, sizeof(text), "203.0.113.%u", t + 1);
		test_clients[TEST_SHARED + t] = test_client(text, 25);
	}
	for (unsigned t = 0; t < TEST_THREADS; t++) {
		workers[t] =
			(struct test_worker){.index = t, .random = 0x9E3779B97F4A7C15ull * (t + 1)};
		cr_assert_eq(
			pthread_create(&workers[t].thread, NULL, test_worker_main, &workers[t]), 0);
	}
	for (unsigned t = 0; t < TEST_THREADS; t++)
		pthread_join(workers[t].thread, NULL);

	cr_expect_eq(atomic_load(&test_over_limit), 0, "a client went past its limit");
	cr_expect_gt(atomic_load(&test_granted), 0);
	cr_expect_gt(atomic_load(&test_refused), 0, "the limit was never reached: a weak test");
	for (unsigned c = 0; c < TEST_CLIENTS; c++) {
		cr_expect_eq(atomic_load(&test_holding[c]), 0);
		cr_expect_eq(client_limit_count(test_shared_limit, SA(test_clients[c])), 0,
			     "client %u", c);
	}
	client_limit_destroy(test_shared_limit);
}
