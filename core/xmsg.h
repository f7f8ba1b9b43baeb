/*
 * xmsg — messages between threads: a lock-free multi-producer,
 * single-consumer inbox per worker plus a wake-up.
 *
 * A sender links a message (which it allocated, usually embedded in a
 * bigger struct) into the target's inbox with one atomic exchange. Only the
 * sender that finds the inbox empty writes the target's eventfd, so a burst
 * of messages costs one wake-up. The target drains the whole inbox in
 * arrival order on its own loop and calls each message's handler there; the
 * handler owns the message from then on.
 */
#ifndef FERRY_CORE_XMSG_H
#define FERRY_CORE_XMSG_H

#include <stdatomic.h>
#include <stdbool.h>

struct xmsg;
typedef void xmsg_fn(struct xmsg *msg);

struct xmsg {
	struct xmsg *next;
	xmsg_fn *handle;
};

struct xmsg_inbox {
	_Atomic(struct xmsg *) head; /* newest first */
	int wake_fd;                 /* eventfd; -1 for tests that poll */
};

/* wake_fd may be -1 (no wake-up; the consumer polls). */
void xmsg_inbox_init(struct xmsg_inbox *in, int wake_fd);

/* Any thread: queue msg for the inbox's worker. Returns 0 or -errno from
 * the wake-up write (the message is queued regardless). */
int xmsg_send(struct xmsg_inbox *in, struct xmsg *msg, xmsg_fn *handle);

/* Owner thread: run the handlers of everything queued, oldest first.
 * Returns how many ran. */
unsigned xmsg_drain(struct xmsg_inbox *in);

#endif
