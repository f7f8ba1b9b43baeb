/*
 * bounce — recipients that failed for good, turned into one delivery
 * status notification per message (RFC 3464, built by queue/dsn.c) queued
 * to the sender from the null sender, on the worker that decided.
 *
 * Delivery hands a failed recipient here instead of ending it. The
 * failures of one message that come in one loop turn (a transaction's,
 * a 5xx at RCPT and the final reply's) make one DSN. A job reads the
 * original's header section from the spool (queue/body.h), builds the
 * DSN, and queues it like any message; only once the DSN is durable are
 * the recipients ended (sched_finish FAILED). A crash in between leaves
 * them queued: tried again, failed again, bounced again; never a failure
 * without its bounce. A DSN that cannot be queued (spool full) defers its
 * recipients instead.
 *
 * Mail from the null sender (a bounce itself) gets no DSN: its failed
 * recipients end at once (RFC 5321 6.1; no bounce loops). Nor does a
 * recipient an operator deleted while it was being tried
 * (net/outbound_operator.h): it is deleted instead.
 */
#ifndef FERRY_NET_BOUNCE_H
#define FERRY_NET_BOUNCE_H

#include <stdbool.h>
#include <stdint.h>

struct outbound;
struct queue_rcpt;
struct bounce;

/* The worker's bouncer, on ob's worker. NULL when out of memory. */
struct bounce *bounce_new(struct outbound *ob);
/* After bounce_idle(): free it. */
void bounce_free(struct bounce *b);

/*
 * Recipient r (INFLIGHT) failed for good with `reason` (the remote reply,
 * or the local one), given by `remote_mta` (a host name, or NULL when no
 * server said so); `status` is its enhanced status code (a static
 * string), or NULL for the one in the reply. The bouncer owns r from now
 * on.
 */
void bounce_add(struct bounce *b, struct queue_rcpt *r, const char *status, const char *reason,
		const char *remote_mta);

/* The same for a recipient an operator fails (ferryctl bounce): no
 * attempt of its own, so its journal keeps the attempts it had
 * (QUEUE_REMOVED); no remote MTA. */
void bounce_add_removed(struct bounce *b, struct queue_rcpt *r, const char *status,
			const char *reason);

/* Loop turn: start a job for each message that got failures. */
void bounce_run(struct bounce *b);

/* No job in flight (shutdown waits for this). */
bool bounce_idle(const struct bounce *b);

#endif
