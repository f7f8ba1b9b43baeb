/*
 * outbound_operator — what an operator does to queued mail beyond a
 * domain's flush, hold and release (those are outbound.h's), for ferryctl
 * through the admin socket: hold and release one message by its queue id,
 * and delete or bounce one message or a domain's whole queue.
 *
 * Each call runs on the worker owning the shard of the domain it is given
 * (queue/sched.h, sched_owner) and acts on the recipients queued there:
 * the domain's, or only those of the message with a queue id. A message
 * with recipients in several domains is moved by one call per domain, on
 * each domain's owner.
 *
 *   hold     held by queue id (sched.h's mark HOLD): HELD now, and a
 *            flush, an ETRN or the domain's release leaves them held,
 *            until they are released by queue id or ferryd restarts. One
 *            in flight is held if its attempt is deferred or handed back.
 *   release  that hold ends: the recipient is ready now, unless its domain
 *            is held (hold = yes, ferryctl hold DOMAIN): then the domain's
 *            hold keeps it, and it goes with the domain's release. Mail is
 *            delivered only when neither holds it.
 *   delete   ended without a DSN, journaled as failed with the reason
 *            "deleted by the operator", so a restart does not bring it
 *            back. One in flight is left to its attempt: delivered if the
 *            next hop takes it, else deleted when the attempt ends
 *            (deferred, handed back, or refused for good: no DSN then).
 *   bounce   failed now, with a DSN to the sender (net/bounce.h: status
 *            5.0.0, "bounced by the operator"; none to the null sender).
 *            One in flight: delivered if the next hop takes it, bounced
 *            with the next hop's reply if refused, else bounced by the
 *            operator when the attempt ends.
 *
 * Each recipient deleted or bounced is logged (event=deleted,
 * event=bounced_by_operator), each message held or released by id too.
 */
#ifndef FERRY_NET_OUTBOUND_OPERATOR_H
#define FERRY_NET_OUTBOUND_OPERATOR_H

#include <stddef.h>

#include "queue/sched.h"

struct outbound;
struct queue_rcpt;

#define OUTBOUND_DELETED_REASON "deleted by the operator"
#define OUTBOUND_BOUNCED_STATUS "5.0.0"
#define OUTBOUND_BOUNCED_REASON "5.0.0 bounced by the operator"

enum outbound_operation {
	OUTBOUND_HOLD_MESSAGE,
	OUTBOUND_RELEASE_MESSAGE,
	OUTBOUND_DELETE,
	OUTBOUND_BOUNCE,
};

/* What one call did, in recipients (added to by each call). */
struct outbound_operated {
	unsigned long done;       /* held, released, deleted or bounced now */
	unsigned long inflight;   /* hold, delete, bounce: in flight, left to their attempt */
	unsigned long still_held; /* release: out of the message's hold, but the domain is held */
};

/*
 * Apply `op` to the recipients of `domain` queued in this worker's shards,
 * only those of the message `id` when id is not NULL (hold and release
 * need one: -EINVAL without). Adds to *out. 0, or -ENOMEM (nothing done).
 */
int outbound_operate(struct outbound *ob, enum outbound_operation op, const char *domain,
		     size_t len, const char *id, struct outbound_operated *out);

/* The store's `ending` hook (sched.h; arg: the worker's struct outbound):
 * a recipient marked in flight is deleted or bounced now. */
void outbound_operator_ending(void *arg, struct queue_rcpt *r, enum sched_mark mark);

/* Delete r (INFLIGHT) now: journaled failed, no DSN. For the bouncer,
 * given a refused recipient that an operator deleted in flight. */
void outbound_operator_delete(struct outbound *ob, struct queue_rcpt *r);

#endif
