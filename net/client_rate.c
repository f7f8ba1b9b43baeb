/*
 * client_rate — connections per client per minute. See client_rate.h for
 * the contract.
 *
 * Invariants, each kept under its bucket's lock: a client has at most one
 * entry, in the bucket its address hashes to; an entry with count 0 is
 * free; an entry's minute runs from `since` for CLIENT_RATE_WINDOW_MS.
 */
#include "net/client_rate.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "net/client_limit.h"

#define CLIENT_RATE_WAYS        4 /* clients remembered per bucket */
#define CLIENT_RATE_MIN_BUCKETS 256
#define CLIENT_RATE_MAX_BUCKETS 16384 /* 3 MiB, 65,536 clients */

struct client_rate_entry {
	uint8_t addr[16]; /* as client_limit_key() makes it */
	uint32_t count;   /* connections in this minute, refused ones too */
	uint64_t since;   /* the minute's start, CLOCK_MONOTONIC ms */
};

struct client_rate_bucket {
	alignas(64) pthread_mutex_t lock;
	struct client_rate_entry entries[CLIENT_RATE_WAYS];
};

struct client_rate {
	struct client_rate_bucket *buckets;
	uint32_t mask;
	uint32_t per_minute;
	uint64_t seed;
};

int client_rate_create(struct client_rate **out, uint32_t per_minute, uint32_t max_connections)
{
	uint32_t nbuckets = CLIENT_RATE_MIN_BUCKETS;
	if (out == NULL || per_minute == 0)
		return -EINVAL;
	/* Clients seen in a minute may outnumber the connections open at
	 * once; four ways per bucket remember twice max_connections. */
	while (nbuckets < CLIENT_RATE_MAX_BUCKETS && nbuckets < max_connections / 2)
		nbuckets *= 2;
	struct client_rate *cr = calloc(1, sizeof(*cr));
	if (cr == NULL)
		return -ENOMEM;
	cr->buckets = aligned_alloc(alignof(struct client_rate_bucket),
				    (size_t)nbuckets * sizeof(*cr->buckets));
	if (cr->buckets == NULL) {
		free(cr);
		return -ENOMEM;
	}
	memset(cr->buckets, 0, (size_t)nbuckets * sizeof(*cr->buckets));
	for (uint32_t i = 0; i < nbuckets; i++)
		pthread_mutex_init(&cr->buckets[i].lock, NULL);
	cr->mask = nbuckets - 1;
	cr->per_minute = per_minute;
	cr->seed = client_limit_seed();
	*out = cr;
	return 0;
}

void client_rate_destroy(struct client_rate *cr)
{
	if (cr == NULL)
		return;
	for (uint32_t i = 0; i <= cr->mask; i++)
		pthread_mutex_destroy(&cr->buckets[i].lock);
	free(cr->buckets);
	free(cr);
}

static bool client_rate_expired(const struct client_rate_entry *e, uint64_t now_ms)
{
	/* Another worker's clock may lag the one that opened the window by
	 * a loop turn: a time before its start is inside it. */
	return e->count == 0 || (now_ms >= e->since && now_ms - e->since >= CLIENT_RATE_WINDOW_MS);
}

/* The entry for key in b: its own, else the place it takes (see the
 * header: a free or expired one, else the one with the fewest). */
static struct client_rate_entry *client_rate_entry(struct client_rate_bucket *b,
						   const uint8_t key[16], uint64_t now_ms)
{
	for (unsigned i = 0; i < CLIENT_RATE_WAYS; i++) {
		struct client_rate_entry *e = &b->entries[i];
		if (e->count > 0 && memcmp(e->addr, key, 16) == 0)
			return e;
	}
	struct client_rate_entry *victim = &b->entries[0];
	for (unsigned i = 0; i < CLIENT_RATE_WAYS; i++) {
		struct client_rate_entry *e = &b->entries[i];
		if (client_rate_expired(e, now_ms)) {
			victim = e;
			break;
		}
		if (e->count < victim->count)
			victim = e;
	}
	memcpy(victim->addr, key, 16);
	victim->count = 0;
	return victim;
}

bool client_rate_admit(struct client_rate *cr, const struct sockaddr *client, uint64_t now_ms)
{
	return client_rate_hit(cr, client, now_ms) <= cr->per_minute;
}

uint32_t client_rate_hit(struct client_rate *cr, const struct sockaddr *client, uint64_t now_ms)
{
	uint8_t key[16];
	client_limit_key(client, key);
	struct client_rate_bucket *b =
		&cr->buckets[(uint32_t)XXH3_64bits_withSeed(key, 16, cr->seed) & cr->mask];

	pthread_mutex_lock(&b->lock);
	struct client_rate_entry *e = client_rate_entry(b, key, now_ms);
	if (client_rate_expired(e, now_ms)) {
		e->since = now_ms;
		e->count = 0;
	}
	if (e->count < UINT32_MAX)
		e->count++;
	uint32_t count = e->count;
	pthread_mutex_unlock(&b->lock);
	return count;
}
