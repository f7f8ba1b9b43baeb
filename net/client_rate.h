/*
 * client_rate — new connections (or ETRN commands) per client address per
 * minute, counted across all workers, as Postfix's anvil counts them for
 * smtpd_client_connection_rate_limit: a client that opens more than
 * `per_minute` connections within a minute (from its first one) is
 * refused for the rest of that minute, whichever worker the kernel hands
 * its connections to.
 *
 * A client is its IP address, as in client_limit (IPv4 and IPv4-mapped
 * IPv6 are one). client_rate_admit() is called once per accepted
 * connection, from any worker thread. No lock is process-wide: the table
 * is cut into buckets with a lock each, bucket choice seeded at creation.
 *
 * Memory is fixed at creation, whatever the number of clients: a bucket
 * remembers a few clients, and a newcomer to a full bucket takes the place
 * of one whose minute is over, else of the one with the fewest
 * connections, so a client that floods (and has many) is the last to be
 * forgotten; one forgotten starts a new minute.
 */
#ifndef FERRY_NET_CLIENT_RATE_H
#define FERRY_NET_CLIENT_RATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define CLIENT_RATE_WINDOW_MS 60000

struct client_rate;

/*
 * A table allowing each client per_minute connections (at least 1) a
 * minute, sized for a server of max_connections (how many clients it
 * remembers grows with it, within fixed bounds). 0, -EINVAL or -ENOMEM.
 */
int client_rate_create(struct client_rate **out, uint32_t per_minute, uint32_t max_connections);

/* NULL is fine. */
void client_rate_destroy(struct client_rate *cr);

/*
 * One more connection from client (AF_INET or AF_INET6) at now_ms
 * (CLOCK_MONOTONIC): true when it is within the client's rate, false when
 * the client has had per_minute already in its current minute. Refused
 * connections count too: a client keeps being refused for as long as its
 * minute lasts.
 */
bool client_rate_admit(struct client_rate *cr, const struct sockaddr *client, uint64_t now_ms);

/* The same count, for a caller with more than one threshold (ETRN slows
 * a client down before it refuses it): how many the client has had in
 * its current minute, this one included. */
uint32_t client_rate_hit(struct client_rate *cr, const struct sockaddr *client, uint64_t now_ms);

#endif
