/*
 * outbound_operator — an operator's holds, releases, deletions and bounces
 * of queued mail (see outbound_operator.h), on the shard's owner.
 */
#include "net/outbound_operator.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/log.h"
#include "net/bounce.h"
#include "net/outbound.h"
#include "queue/sched.h"

void outbound_operator_delete(struct outbound *ob, struct queue_rcpt *r)
{
	size_t len;
	const char *address = sched_rcpt_address(r, &len);
	/* Logged first: the outcome may end the message, and its strings. */
	log_event(LOG_LEVEL_INFO, "event=deleted queue_id=%s rcpt=%.*s", sched_rcpt_message_id(r),
		  (int)len, address);
	sched_finish(ob->queue, r, QUEUE_REMOVED, OUTBOUND_DELETED_REASON);
}

static void outbound_operator_bounce(struct outbound *ob, struct queue_rcpt *r)
{
	size_t len;
	const char *address = sched_rcpt_address(r, &len);
	log_event(LOG_LEVEL_INFO, "event=bounced_by_operator queue_id=%s rcpt=%.*s",
		  sched_rcpt_message_id(r), (int)len, address);
	/* As a 5xx would: the bouncer ends it once its DSN is durable. */
	bounce_add_removed(ob->bounces, r, OUTBOUND_BOUNCED_STATUS, OUTBOUND_BOUNCED_REASON);
}

void outbound_operator_ending(void *arg, struct queue_rcpt *r, enum sched_mark mark)
{
	struct outbound *ob = arg;
	if (mark == SCHED_MARK_BOUNCE)
		outbound_operator_bounce(ob, r);
	else
		outbound_operator_delete(ob, r);
}

/* delete, bounce: each queued recipient now; one in flight marked. */
static void outbound_operator_end(struct outbound *ob, enum outbound_operation op,
				  struct queue_rcpt *const *rcpts, size_t n,
				  struct outbound_operated *out)
{
	/* Their destination (one domain), found while they still exist. */
	struct outbound_dest *d = outbound_dest_of(ob, rcpts[0]);
	for (size_t i = 0; i < n; i++) {
		struct queue_rcpt *r = rcpts[i];
		if (sched_rcpt_state(r) == SCHED_INFLIGHT) {
			sched_mark_inflight(ob->queue, r,
					    op == OUTBOUND_DELETE ? SCHED_MARK_DELETE
								  : SCHED_MARK_BOUNCE);
			out->inflight++;
			continue;
		}
		sched_take(ob->queue, r);
		if (op == OUTBOUND_DELETE)
			outbound_operator_delete(ob, r);
		else
			outbound_operator_bounce(ob, r);
		out->done++;
	}
	/* Deleted ones are gone now; bounced ones when their DSN is stored
	 * (the bouncer settles them then). */
	if (op == OUTBOUND_DELETE)
		outbound_settle(&d, 1);
}

static void outbound_operator_hold(struct outbound *ob, const char *id,
				   struct queue_rcpt *const *rcpts, size_t n,
				   struct outbound_operated *out)
{
	unsigned long held = 0;
	for (size_t i = 0; i < n; i++) {
		if (sched_rcpt_state(rcpts[i]) == SCHED_INFLIGHT)
			out->inflight++;
		else
			held++;
		sched_park(ob->queue, rcpts[i]);
	}
	out->done += held;
	log_event(LOG_LEVEL_INFO, "event=hold queue_id=%s recipients=%lu", id, held);
}

static void outbound_operator_release(struct outbound *ob, const char *domain, size_t len,
				      const char *id, struct queue_rcpt *const *rcpts, size_t n,
				      struct outbound_operated *out)
{
	bool domain_held = outbound_domain_held(ob, domain, len);
	unsigned long released = 0;
	for (size_t i = 0; i < n; i++) {
		if (!sched_unpark(ob->queue, rcpts[i], domain_held))
			continue; /* not held by its id */
		if (domain_held)
			out->still_held++;
		else
			released++;
	}
	out->done += released;
	if (released > 0)
		outbound_wake(ob, domain, len);
	log_event(LOG_LEVEL_INFO, "event=release queue_id=%s recipients=%lu held_by_domain=%d", id,
		  released, domain_held);
}

int outbound_operate(struct outbound *ob, enum outbound_operation op, const char *domain,
		     size_t len, const char *id, struct outbound_operated *out)
{
	struct queue_rcpt **rcpts;
	size_t n;
	if (id == NULL && (op == OUTBOUND_HOLD_MESSAGE || op == OUTBOUND_RELEASE_MESSAGE))
		return -EINVAL; /* a domain's are outbound_hold's */
	if (sched_collect(ob->queue, domain, len, id, &rcpts, &n) != 0)
		return -ENOMEM;
	if (n == 0)
		return 0;
	switch (op) {
	case OUTBOUND_HOLD_MESSAGE:
		outbound_operator_hold(ob, id, rcpts, n, out);
		break;
	case OUTBOUND_RELEASE_MESSAGE:
		outbound_operator_release(ob, domain, len, id, rcpts, n, out);
		break;
	case OUTBOUND_DELETE:
	case OUTBOUND_BOUNCE:
		outbound_operator_end(ob, op, rcpts, n, out);
		break;
	}
	free(rcpts);
	return 0;
}
