/*
 * client_limit — per-client connection counts. See client_limit.h for the
 * contract.
 *
 * Invariants, each kept under its bucket's lock: a client is counted in
 * exactly one entry, in the bucket its address hashes to; an inline entry
 * is free exactly when its count is 0; a spilled entry is on its bucket's
 * list exactly while its count is above 0. A slot is a bucket's index, so
 * release finds the entry without hashing again.
 */
#include "net/client_limit.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/check.h"
#include "core/list.h"

/* Three inline entries, the lock and the spill list fit two cache lines. */
#define CLIENT_LIMIT_INLINE      3
#define CLIENT_LIMIT_MIN_BUCKETS 64
#define CLIENT_LIMIT_MAX_BUCKETS 65536 /* 8 MiB; busier tables spill more */

struct client_limit_entry {
	uint8_t addr[16]; /* IPv6; IPv4 as ::ffff:a.b.c.d */
	uint32_t count;
};

struct client_limit_spill {
	struct list_node node; /* on its bucket's spill list */
	struct client_limit_entry entry;
};

/* A bucket per cache-line pair: workers locking neighbouring buckets do not
 * share a line. */
struct client_limit_bucket {
	alignas(64) pthread_mutex_t lock;
	struct list_node spill; /* clients beyond the inline entries */
	struct client_limit_entry entries[CLIENT_LIMIT_INLINE];
};

struct client_limit {
	struct client_limit_bucket *buckets;
	uint32_t mask; /* buckets - 1, a power of two minus one */
	uint32_t per_client;
	uint64_t seed;
};

/* Unpredictable bucket choice, or a client with many IPv6 addresses could
 * aim them all at one bucket and make its other clients wait behind a long
 * spill list. */
uint64_t client_limit_seed(void)
{
	uint64_t seed;
	struct timespec now;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
		return seed;
	/* The kernel's pool is not ready yet (early boot): weaker, but a relay
	 * that waits for entropy to start is worse. */
	clock_gettime(CLOCK_REALTIME, &now);
	return (uint64_t)now.tv_nsec ^ ((uint64_t)now.tv_sec << 30) ^ (uint64_t)getpid();
}

/* Copied out rather than cast: the caller's buffer may be any storage that
 * accept() or getpeername() filled. */
void client_limit_key(const struct sockaddr *client, uint8_t key[16])
{
	CHECK(client->sa_family == AF_INET || client->sa_family == AF_INET6);
	if (client->sa_family == AF_INET) {
		struct sockaddr_in sin;

		memcpy(&sin, client, sizeof(sin));
		memset(key, 0, 10);
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &sin.sin_addr, 4);
	} else {
		struct sockaddr_in6 sin6;

		memcpy(&sin6, client, sizeof(sin6));
		memcpy(key, &sin6.sin6_addr, 16);
	}
}

static uint32_t client_limit_bucket_of(const struct client_limit *cl, const uint8_t key[16])
{
	return (uint32_t)XXH3_64bits_withSeed(key, 16, cl->seed) & cl->mask;
}

/* The entry counting key in bucket b, or NULL; *spill is its allocation
 * when it is a spilled one, else NULL. */
static struct client_limit_entry *client_limit_find(struct client_limit_bucket *b,
						    const uint8_t key[16],
						    struct client_limit_spill **spill)
{
	struct client_limit_spill *s;

	*spill = NULL;
	for (unsigned i = 0; i < CLIENT_LIMIT_INLINE; i++) {
		struct client_limit_entry *e = &b->entries[i];

		if (e->count > 0 && memcmp(e->addr, key, 16) == 0)
			return e;
	}
	list_for_each_entry(s, &b->spill, node)
	{
		if (memcmp(s->entry.addr, key, 16) == 0) {
			*spill = s;
			return &s->entry;
		}
	}
	return NULL;
}

/* An entry for a client new to bucket b, with count 0 that the caller
 * raises at once: a free inline one, else an allocated one (NULL when
 * memory ran out). Only that bucket waits for the allocation. */
static struct client_limit_entry *client_limit_claim(struct client_limit_bucket *b,
						     const uint8_t key[16])
{
	struct client_limit_entry *e = NULL;

	for (unsigned i = 0; i < CLIENT_LIMIT_INLINE && e == NULL; i++) {
		if (b->entries[i].count == 0)
			e = &b->entries[i];
	}
	if (e == NULL) {
		struct client_limit_spill *s = calloc(1, sizeof(*s));

		if (s == NULL)
			return NULL;
		list_insert_tail(&b->spill, &s->node);
		e = &s->entry;
	}
	memcpy(e->addr, key, 16);
	return e;
}

int client_limit_create(struct client_limit **out, uint32_t per_client, uint32_t max_connections)
{
	uint32_t nbuckets = CLIENT_LIMIT_MIN_BUCKETS;
	struct client_limit *cl;

	if (out == NULL || per_client == 0)
		return -EINVAL;
	/* At most max_connections clients at once, but usually far fewer:
	 * about two per bucket at worst leaves most of them inline. */
	while (nbuckets < CLIENT_LIMIT_MAX_BUCKETS && nbuckets < max_connections / 2)
		nbuckets *= 2;
	cl = calloc(1, sizeof(*cl));
	if (cl == NULL)
		return -ENOMEM;
	cl->buckets = aligned_alloc(alignof(struct client_limit_bucket),
				    (size_t)nbuckets * sizeof(*cl->buckets));
	if (cl->buckets == NULL) {
		free(cl);
		return -ENOMEM;
	}
	memset(cl->buckets, 0, (size_t)nbuckets * sizeof(*cl->buckets));
	for (uint32_t i = 0; i < nbuckets; i++) {
		pthread_mutex_init(&cl->buckets[i].lock, NULL);
		list_init(&cl->buckets[i].spill);
	}
	cl->mask = nbuckets - 1;
	cl->per_client = per_client;
	cl->seed = client_limit_seed();
	*out = cl;
	return 0;
}

void client_limit_destroy(struct client_limit *cl)
{
	if (cl == NULL)
		return;
	for (uint32_t i = 0; i <= cl->mask; i++) {
		struct client_limit_bucket *b = &cl->buckets[i];
		struct client_limit_spill *s, *next;

		list_for_each_entry_safe(s, next, &b->spill, node)
		{
			list_remove(&s->node);
			free(s);
		}
		pthread_mutex_destroy(&b->lock);
	}
	free(cl->buckets);
	free(cl);
}

bool client_limit_acquire(struct client_limit *cl, const struct sockaddr *client, uint32_t *slot)
{
	struct client_limit_spill *spill;
	uint8_t key[16];
	bool granted = false;

	client_limit_key(client, key);
	uint32_t index = client_limit_bucket_of(cl, key);
	struct client_limit_bucket *b = &cl->buckets[index];

	pthread_mutex_lock(&b->lock);
	struct client_limit_entry *e = client_limit_find(b, key, &spill);

	if (e == NULL)
		e = client_limit_claim(b, key);
	if (e != NULL && e->count < cl->per_client) {
		e->count++;
		granted = true;
	}
	pthread_mutex_unlock(&b->lock);
	*slot = granted ? index : CLIENT_LIMIT_NO_SLOT;
	return granted;
}

void client_limit_release(struct client_limit *cl, const struct sockaddr *client, uint32_t slot)
{
	struct client_limit_spill *spill;
	struct client_limit_spill *unused = NULL;
	uint8_t key[16];

	CHECK(slot <= cl->mask);
	client_limit_key(client, key);

	struct client_limit_bucket *b = &cl->buckets[slot];

	pthread_mutex_lock(&b->lock);
	struct client_limit_entry *e = client_limit_find(b, key, &spill);

	/* A place given back twice, or never granted, would corrupt the
	 * count of a client that did nothing wrong. */
	CHECK(e != NULL);
	e->count--;
	if (e->count == 0 && spill != NULL) {
		list_remove(&spill->node);
		unused = spill;
	}
	pthread_mutex_unlock(&b->lock);
	free(unused); /* outside the lock: the bucket's other clients need not wait */
}

uint32_t client_limit_count(struct client_limit *cl, const struct sockaddr *client)
{
	struct client_limit_spill *spill;
	uint8_t key[16];

	client_limit_key(client, key);

	struct client_limit_bucket *b = &cl->buckets[client_limit_bucket_of(cl, key)];

	pthread_mutex_lock(&b->lock);
	struct client_limit_entry *e = client_limit_find(b, key, &spill);
	uint32_t count = e != NULL ? e->count : 0;

	pthread_mutex_unlock(&b->lock);
	return count;
}
