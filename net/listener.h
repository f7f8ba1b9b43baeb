/*
 * listener — one listening socket per configured address per worker
 * (SO_REUSEPORT: the kernel spreads connections over the workers), with a
 * multishot accept on the worker's ring.
 *
 * The kernel lets any process of the same user join a SO_REUSEPORT group,
 * so a second ferryd on the same address would bind without error and
 * silently take half the connections. listener_check_free() is the guard:
 * called once before the workers open their listeners, it binds without
 * SO_REUSEPORT, which fails while any other socket holds the address. (Two
 * ferryds started in the same instant could still both pass it.)
 *
 * Out of descriptors (EMFILE, ENFILE), io_uring's accept fails before it
 * takes a connection, so the kernel keeps the clients queued, waiting for
 * a banner that would not come. Each listener keeps a spare descriptor
 * (/dev/null) for that moment: it gives it up, accepts a waiting client,
 * answers 421 4.3.2 and closes it, takes the spare again, and so on while
 * clients wait. Another worker's accept may take the room the spare left
 * (the descriptor table is the process's); without a spare, the clients
 * queued on the socket are reset (shutdown, then listen again). Those
 * errors are logged at most once a second per listener, with counts.
 */
#ifndef FERRY_NET_LISTENER_H
#define FERRY_NET_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "core/worker.h"

struct net_worker;

/* Descriptors per listener, for ferryd's budget: the socket, and the spare
 * it gives up to answer clients when accept runs out of descriptors. */
#define LISTENER_DESCRIPTORS 2

struct listener {
	struct net_worker *owner;
	int fd;
	int spare_fd; /* /dev/null, given up to answer clients when out of descriptors */
	const struct config_listen *address;
	struct worker_op accept_op;
	struct worker_op poll_op; /* out of descriptors: waiting for a client to shed */
	struct timer retry_timer; /* after an accept error the spare did not help with */
	bool armed;
	bool polling;
	bool closed;

	/* Accept errors since the last log line, logged at most once a second. */
	struct timer log_timer;
	uint64_t log_after_ms; /* no line before this */
	int last_error;
	unsigned errors;  /* failed accepts */
	unsigned refused; /* clients answered 421 through the spare */
	unsigned resets;  /* queues reset, when even the spare was gone */
};

/* Before any worker listens: fail with -EADDRINUSE (err filled in) when
 * another socket, even another ferryd's, holds the address. Returns 0 or
 * -errno. */
int listener_check_free(const struct config_listen *address, char *err, size_t err_size);

/* Bind and listen; returns 0 or -errno with err filled in. */
int listener_open(struct listener *l, struct net_worker *owner, const struct config_listen *address,
		  int backlog, char *err, size_t err_size);

/* Start accepting (multishot). */
void listener_arm(struct listener *l);

/* Stop accepting: the socket is closed; a pending accept completes with an
 * error and is not re-armed. */
void listener_close(struct listener *l);

#endif
