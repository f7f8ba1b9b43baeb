/*
 * client_limit — open connections per client address, counted across all
 * workers, so that max_connections_per_client holds for the server as a
 * whole whichever worker the kernel hands a connection to.
 *
 * A client is its IP address, the port aside; IPv4 and IPv4-mapped IPv6
 * (::ffff:a.b.c.d, from a dual-stack listener) are one client.
 * client_limit_acquire() is called once at accept and
 * client_limit_release() once at close, from any worker thread, never per
 * command. No lock is process-wide: the table is cut into buckets with a
 * lock each, so workers contend only when their clients share a bucket,
 * and bucket choice is seeded at creation so that no client can aim many
 * addresses at one.
 *
 * Memory is bounded: a bucket holds a few clients inline, and one more
 * (a hash collision, or very many distinct clients) takes a small
 * allocation until its last connection closes. A client is remembered only
 * while it holds a connection, so the table never knows more clients than
 * there are open connections.
 */
#ifndef FERRY_NET_CLIENT_LIMIT_H
#define FERRY_NET_CLIENT_LIMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* No place held: what acquire leaves in *slot when it refuses. */
#define CLIENT_LIMIT_NO_SLOT UINT32_MAX

struct client_limit;

/*
 * A table allowing each client per_client connections (at least 1), sized
 * for a server of at most max_connections at once (which bounds the
 * clients it must hold; it is not checked here). 0, -EINVAL or -ENOMEM.
 */
int client_limit_create(struct client_limit **out, uint32_t per_client, uint32_t max_connections);

/* Frees the table, and whatever places were not released. NULL is fine. */
void client_limit_destroy(struct client_limit *cl);

/*
 * One more connection from client (AF_INET or AF_INET6). true: it is
 * counted, and *slot says where; hand it to client_limit_release(). false:
 * the client already holds per_client connections (or memory ran out),
 * nothing is counted and *slot is CLIENT_LIMIT_NO_SLOT.
 */
bool client_limit_acquire(struct client_limit *cl, const struct sockaddr *client, uint32_t *slot);

/* Give back a place that acquire granted: the same client (in either of
 * its forms) and the slot acquire returned. */
void client_limit_release(struct client_limit *cl, const struct sockaddr *client, uint32_t slot);

/* The connections client holds now (a snapshot, for tests and reports). */
uint32_t client_limit_count(struct client_limit *cl, const struct sockaddr *client);

/* Shared with the other tables keyed by client (client_rate): a client's
 * key, its IPv6 address (IPv4 as ::ffff:a.b.c.d, so both forms are one),
 * and a seed for hashing keys that no client can predict. */
void client_limit_key(const struct sockaddr *client, uint8_t key[16]);
uint64_t client_limit_seed(void);

#endif
