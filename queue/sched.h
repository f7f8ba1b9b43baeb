/*
 * sched — where each queued recipient stands, and the moves that delivery
 * and ETRN make. The store's public contract for the recipients' side,
 * beside queue.h (the messages' side).
 *
 * A recipient belongs to the shard of its domain (the hash of the
 * lower-cased domain), and each shard to one worker, which alone moves
 * its recipients: every call here runs on the worker that owns the
 * domain's shard (it returns 0 / does nothing on another worker). In its
 * destination's queue (queue/index.h) a recipient is in one state:
 *
 *   READY      to be tried now, oldest first
 *   DEFERRED   to be tried again at or after its due time T (retry backoff)
 *   HELD       waiting for ETRN or an operator's flush, never tried on a
 *              schedule (domains marked hold)
 *   INFLIGHT   handed to delivery, its outcome awaited
 *
 * and moves between them:
 *
 *   message durable     -> READY       the store, once the 250 could be sent
 *   READY    -> INFLIGHT               sched_take_ready
 *   INFLIGHT -> ended                  sched_finish: delivered, or failed for
 *                                      good; journaled by the message's owner,
 *                                      the message finished with its last
 *   INFLIGHT -> DEFERRED (until T)     sched_defer: one more attempt, journaled
 *   DEFERRED -> READY                  sched_release_due, once T has passed
 *   DEFERRED, HELD -> READY            sched_flush (ETRN, ferryctl flush)
 *
 * Journaling is not waited for: after a crash a recipient may be tried
 * again (at least once, never lost). A deferred recipient comes back
 * READY after a restart (its attempts are kept in the journal).
 *
 * Times are the worker's monotonic clock (struct worker's now_ms).
 */
#ifndef FERRY_QUEUE_SCHED_H
#define FERRY_QUEUE_SCHED_H

#include <stddef.h>
#include <stdint.h>

struct queue;

/* A queued recipient (opaque); valid until it is finished. */
struct queue_rcpt;

enum queue_outcome {
	QUEUE_DELIVERED = 0, /* the next hop took it (2xx) */
	QUEUE_FAILED,        /* refused for good (5xx, or too old): bounced */
};

/* Move up to max READY recipients of `domain` to INFLIGHT and hand them
 * out, oldest first. Returns how many. */
size_t sched_take_ready(struct queue *q, const char *domain, size_t len, struct queue_rcpt **out,
			size_t max);

const char *sched_rcpt_address(const struct queue_rcpt *r, size_t *len);
const char *sched_rcpt_message_id(const struct queue_rcpt *r);

/* An INFLIGHT recipient's delivery ended for good: it leaves the index;
 * `reason` (the next hop's reply, at most 255 octets kept) is journaled
 * with the outcome. r is invalid afterwards. */
void sched_finish(struct queue *q, struct queue_rcpt *r, enum queue_outcome outcome,
		  const char *reason);

/* An INFLIGHT recipient is to be tried again at or after until_ms; the
 * attempt is journaled with `reason`. */
void sched_defer(struct queue *q, struct queue_rcpt *r, uint64_t until_ms, const char *reason);

/* DEFERRED recipients of `domain` due at or before now_ms become READY,
 * in due order. Returns how many. */
unsigned sched_release_due(struct queue *q, const char *domain, size_t len, uint64_t now_ms);

/* Every DEFERRED and HELD recipient of `domain` becomes READY now.
 * Returns how many. */
unsigned sched_flush(struct queue *q, const char *domain, size_t len);

#endif
