/*
 * Tests for net/client_rate: a client gets its connections a minute and
 * no more, whatever its port and whichever form an IPv4 address comes in,
 * other clients are not affected, a new minute starts afresh, a flooder is
 * remembered among many passing clients, and workers counting at once
 * never let a client past its limit.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "net/client_rate.h"

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

static bool admit(struct client_rate *cr, const char *text, uint16_t port, uint64_t now_ms)
{
	struct sockaddr_storage ss = test_client(text, port);
	return client_rate_admit(cr, (const struct sockaddr *)&ss, now_ms);
}

static struct client_rate *test_rate(uint32_t per_minute, uint32_t max_connections)
{
	struct client_rate *cr = NULL;
	cr_assert_eq(client_rate_create(&cr, per_minute, max_connections), 0);
	return cr;
}

Test(client_rate, the_connection_over_the_rate_is_refused_for_the_rest_of_the_minute)
{
	struct client_rate *cr = test_rate(3, 100);
	uint64_t t = 1000000;
	for (int i = 0; i < 3; i++)
		cr_assert(admit(cr, "192.0.2.1", (uint16_t)(40000 + i), t + (uint64_t)i),
			  "connection %d", i + 1);
	cr_assert_not(admit(cr, "192.0.2.1", 40010, t + 10), "the fourth in a minute");
	/* The same address in its IPv4-mapped form is the same client. */
	cr_assert_not(admit(cr, "::ffff:192.0.2.1", 40011, t + 20));
	cr_assert_not(admit(cr, "192.0.2.1", 40012, t + CLIENT_RATE_WINDOW_MS - 1),
		      "still within the minute");
	/* Another client is not affected. */
	cr_assert(admit(cr, "192.0.2.2", 40000, t + 30));
	cr_assert(admit(cr, "2001:db8::1", 40000, t + 30));
	/* A new minute starts afresh. */
	for (int i = 0; i < 3; i++)
		cr_assert(admit(cr, "192.0.2.1", 40020, t + CLIENT_RATE_WINDOW_MS + (uint64_t)i),
			  "connection %d of the next minute", i + 1);
	cr_assert_not(admit(cr, "192.0.2.1", 40020, t + CLIENT_RATE_WINDOW_MS + 10));
	client_rate_destroy(cr);
}

Test(client_rate, a_flooder_is_remembered_among_many_passing_clients)
{
	/* The smallest table (256 buckets of 4): 10,000 clients passing once
	 * each must not make it forget the one that floods. */
	struct client_rate *cr = test_rate(5, 1);
	uint64_t t = 5000000;
	for (int i = 0; i < 5; i++)
		cr_assert(admit(cr, "198.51.100.7", 1, t));
	for (int i = 0; i < 10000; i++) {
		char text[64];
		snprintf(text, sizeof(text), "2001:db8::%x:%x", i >> 16, i & 0xffff);
		cr_assert(admit(cr, text, 1, t + 1), "passing client %d", i);
		if (i % 100 == 0)
			cr_assert_not(admit(cr, "198.51.100.7", 1, t + 1),
				      "the flooder was forgotten after %d passing clients", i);
	}
	client_rate_destroy(cr);
}

Test(client_rate, bad_arguments)
{
	struct client_rate *cr = NULL;
	cr_assert_eq(client_rate_create(&cr, 0, 100), -EINVAL);
	cr_assert_eq(client_rate_create(NULL, 1, 100), -EINVAL);
	client_rate_destroy(NULL);
}

struct racer {
	struct client_rate *cr;
	atomic_uint *admitted;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	for (int i = 0; i < 5000; i++)
		if (admit(r->cr, "203.0.113.9", (uint16_t)i, 7000000))
			atomic_fetch_add(r->admitted, 1);
	return NULL;
}

Test(client_rate, workers_counting_at_once_hold_the_rate)
{
	enum { THREADS = 4, RATE = 1000 };
	struct client_rate *cr = test_rate(RATE, 1000);
	atomic_uint admitted = 0;
	struct racer r = {cr, &admitted};
	pthread_t threads[THREADS];
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&threads[i], NULL, race, &r), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	cr_assert_eq(atomic_load(&admitted), RATE, "%u admitted at a rate of %d",
		     atomic_load(&admitted), RATE);
	client_rate_destroy(cr);
}
