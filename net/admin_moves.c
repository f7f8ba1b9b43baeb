/*
 * admin_moves — the admin socket's moves (admin_commands.h): flush, hold,
 * release, delete and bounce, of a domain (on the worker owning its
 * shard), of everything or an ETRN form (flush: on every worker), or of
 * one message by its queue id.
 *
 * A move by queue id takes two rounds: the worker owning the message says
 * which domains its recipients not ended yet are queued under
 * (queue_report_message_domains), then every worker moves the message's
 * recipients in those of the domains whose shards it owns. A recipient
 * that ends or arrives in between is simply not found.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "net/admin_request.h"
#include "net/etrn_service.h"
#include "net/outbound.h"
#include "net/reload.h"
#include "queue/sched.h"

/* The operation of an operator's command on single messages or whole
 * domains (outbound_operator.h); hold and release of a domain are
 * outbound_hold's. */
static enum outbound_operation admin_operation(enum admin_command command)
{
	switch (command) {
	case ADMIN_HOLD:
		return OUTBOUND_HOLD_MESSAGE;
	case ADMIN_RELEASE:
		return OUTBOUND_RELEASE_MESSAGE;
	case ADMIN_DELETE:
		return OUTBOUND_DELETE;
	default:
		return OUTBOUND_BOUNCE;
	}
}

/* By queue id: the message's recipients in each of its domains whose
 * shard this worker owns. */
static int admin_part_move_message(const struct admin_request *req, struct admin_part *part,
				   struct outbound *ob)
{
	const char *p = buf_head(&req->domains), *end = p + buf_len(&req->domains);
	for (; p < end; p += strlen(p) + 1) {
		size_t len = strlen(p);
		if (sched_owner(part->queue, p, len) != part->index)
			continue;
		int r = outbound_operate(ob, admin_operation(req->command), p, len, req->arg,
					 &part->moved);
		if (r != 0)
			return r;
	}
	return 0;
}

void admin_part_move(const struct admin_request *req, struct admin_part *part)
{
	struct outbound *ob = outbound_of_worker(req->delivery, part->index);
	if (ob == NULL)
		return; /* its delivery stopped, or never started: -ESRCH stays */
	int r = 0;
	if (req->by_id) {
		r = admin_part_move_message(req, part, ob);
	} else if (req->command == ADMIN_FLUSH && req->plan.ntargets > 0) {
		struct etrn_part_result etrn;
		etrn_flush_here(part->queue, ob, &req->plan, 0, true, &etrn);
		part->moved.done = etrn.moved;
		r = etrn.failed ? -ENOMEM : 0;
	} else if (req->command == ADMIN_FLUSH) {
		part->moved.done = req->arg_len == 0 ? outbound_flush_all(ob)
						     : outbound_flush(ob, req->arg, req->arg_len);
	} else if (req->command == ADMIN_HOLD || req->command == ADMIN_RELEASE) {
		int moved = outbound_hold(ob, req->arg, req->arg_len, req->command == ADMIN_HOLD);
		r = moved < 0 ? moved : 0;
		part->moved.done = moved < 0 ? 0 : (unsigned long)moved;
	} else {
		r = outbound_operate(ob, admin_operation(req->command), req->arg, req->arg_len,
				     NULL, &part->moved);
	}
	part->error = r;
}

/* @DOMAIN or #QUEUE, an operator's ETRN: into *plan. false with the error
 * answered. */
static bool admin_etrn_plan(const struct net_generation *gen, const char *arg, size_t arg_len,
			    struct etrn_plan *plan, struct buf *answer)
{
	struct etrn_argument parsed;
	etrn_parse(arg, arg_len, &parsed); /* checked already */
	if (gen == NULL || etrn_plan_make(gen->etrn, NULL, &parsed, plan) != 0) {
		buf_printf(answer, "error: ferryd is out of memory\n");
		return false;
	}
	if (plan->code != 0) {
		buf_printf(answer,
			   "error: no [domain] section has etrn_queues = %s: there is no such "
			   "queue\n",
			   parsed.name);
		etrn_plan_free(plan);
		return false;
	}
	return true;
}

/* By queue id, the first round: the domains of the message's recipients
 * not ended yet, into domains. false with the error answered. */
static bool admin_locate(const struct admin_commands *c, const char *id, size_t len,
			 struct buf *domains, struct buf *answer)
{
	const char *why;
	struct admin_ask ask = {.only = ADMIN_ALL_WORKERS, .arg = id, .arg_len = len};
	struct admin_request *req = admin_ask_workers(c, ADMIN_LOCATE, &ask, &why);
	if (req == NULL) {
		buf_printf(answer, "error: %s\n", why);
		return false;
	}
	bool found = false;
	for (uint32_t i = 0; i < req->nparts && !found; i++) {
		const struct admin_part *part = &req->parts[i];
		if (!part->found)
			continue;
		found = true;
		if (buf_append(domains, buf_head(&part->out), buf_len(&part->out)) != 0) {
			buf_printf(answer, "error: ferryd is out of memory\n");
			admin_request_release(req, false);
			return false;
		}
	}
	admin_request_release(req, false);
	if (!found)
		buf_printf(answer, "error: no message %s in the queue\n", id);
	return found;
}

/* The answer's line from every part's counts. */
static void admin_answer_counts(enum admin_command command, bool by_id,
				const struct admin_request *req, struct buf *answer)
{
	const char *done = admin_move_done(admin_command_name(command));
	struct outbound_operated sum = {0};
	int error = 0;
	for (uint32_t i = 0; i < req->nparts; i++) {
		const struct admin_part *part = &req->parts[i];
		if (part->error != 0)
			error = part->error;
		sum.done += part->moved.done;
		sum.inflight += part->moved.inflight;
		sum.still_held += part->moved.still_held;
	}
	if (error == -ENOMEM)
		buf_printf(answer, "error: ferryd is out of memory (some recipients may have "
				   "been moved; check with list)\n");
	else if (error != 0)
		buf_printf(answer, "error: delivery is not running on every worker (is ferryd "
				   "stopping?)\n");
	else if (command == ADMIN_RELEASE && by_id)
		buf_printf(answer, "ok\n%s %lu %lu\n", done, sum.done, sum.still_held);
	else if (command == ADMIN_DELETE || command == ADMIN_BOUNCE ||
		 (command == ADMIN_HOLD && by_id))
		buf_printf(answer, "ok\n%s %lu %lu\n", done, sum.done, sum.inflight);
	else
		buf_printf(answer, "ok\n%s %lu\n", done, sum.done);
}

void admin_answer_move(const struct admin_commands *c, enum admin_command command, const char *arg,
		       size_t arg_len, struct buf *answer)
{
	if (c->delivery == NULL) {
		buf_printf(answer,
			   "error: delivery is not running in this ferryd: there is nothing to "
			   "%s\n",
			   admin_command_name(command));
		return;
	}
	struct admin_ask ask = {.arg = arg, .arg_len = arg_len};
	struct etrn_plan plan = {0};
	struct net_generation *gen = NULL;
	struct buf domains = {0};
	ask.by_id = command != ADMIN_FLUSH && admin_target_is_queue_id(arg, arg_len);
	if (arg_len == 0) {
		ask.only = ADMIN_ALL_WORKERS; /* flush everything */
	} else if (command == ADMIN_FLUSH && (arg[0] == '@' || arg[0] == '#')) {
		/* ETRN's forms, for an operator: every worker's shards. */
		gen = c->reload != NULL ? net_reload_current(c->reload) : NULL;
		if (!admin_etrn_plan(gen, arg, arg_len, &plan, answer)) {
			net_generation_drop(gen);
			return;
		}
		ask.only = ADMIN_ALL_WORKERS;
		ask.plan = &plan;
		ask.gen = gen;
	} else if (ask.by_id) {
		if (!admin_locate(c, arg, arg_len, &domains, answer)) {
			buf_release(&domains);
			return;
		}
		ask.only = ADMIN_ALL_WORKERS; /* each takes the domains it owns */
		ask.domains = &domains;
	} else {
		ask.only = sched_owner(queue_store_queue(c->store, 0), arg, arg_len);
	}
	const char *why;
	struct admin_request *req = admin_ask_workers(c, command, &ask, &why);
	etrn_plan_free(&plan); /* what the request did not take */
	net_generation_drop(gen);
	buf_release(&domains);
	if (req == NULL) {
		/* Abandoned after it was sent: the workers may still do it. */
		buf_printf(answer,
			   "error: %s (the %s may still take effect; check with queue or list)\n",
			   why, admin_command_name(command));
		return;
	}
	admin_answer_counts(command, ask.by_id, req, answer);
	admin_request_release(req, false);
}
