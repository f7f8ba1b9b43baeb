/*
 * admin_request — a ferryctl request's parts, run on the workers (see
 * admin_request.h).
 */
#include "net/admin_request.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/list.h"
#include "core/log.h"
#include "core/worker.h"

#define ADMIN_LIST_PER_TURN 2048 /* recipients a worker lists in one loop turn */

static void admin_request_free(struct admin_request *req)
{
	for (uint32_t i = 0; i < req->nparts; i++)
		buf_release(&req->parts[i].out);
	buf_release(&req->domains);
	etrn_plan_free(&req->plan);
	net_generation_drop(req->gen);
	worker_ask_destroy(&req->ask);
	free(req);
}

void admin_request_release(struct admin_request *req, bool answered)
{
	if (worker_ask_release(&req->ask, answered))
		admin_request_free(req);
}

/* On the worker that owns part->queue. */
static void admin_part_run(struct xmsg *msg)
{
	struct admin_part *part = container_of(msg, struct admin_part, link);
	struct admin_request *req = part->request;
	if (worker_ask_wanted(&req->ask)) {
		switch (req->command) {
		case ADMIN_QUEUE:
			queue_report_destinations(part->queue, &part->out);
			break;
		case ADMIN_LIST:
			/* A bounded share per loop turn: the rest on the next
			 * one, the part sent again to this same worker. */
			if (queue_report_domain(part->queue, req->arg, req->arg_len, &part->cursor,
						ADMIN_LIST_PER_TURN, &part->out) == 1) {
				worker_send(queue_worker(part->queue), &part->link, admin_part_run);
				return;
			}
			break;
		case ADMIN_SHOW:
			part->found = queue_report_message(part->queue, req->arg, &part->out);
			break;
		case ADMIN_LOCATE:
			part->found =
				queue_report_message_domains(part->queue, req->arg, &part->out);
			break;
		case ADMIN_FLUSH:
		case ADMIN_HOLD:
		case ADMIN_RELEASE:
		case ADMIN_DELETE:
		case ADMIN_BOUNCE:
			admin_part_move(req, part);
			break;
		case ADMIN_STATS:
		case ADMIN_CONFIG:
		case ADMIN_RELOAD:
			break; /* not the workers' (admin_commands.c) */
		}
	}
	admin_request_release(req, true);
}

static struct admin_request *admin_request_new(const struct admin_commands *c,
					       enum admin_command command,
					       const struct admin_ask *ask)
{
	uint32_t n = queue_store_workers(c->store);
	struct admin_request *req = calloc(1, sizeof(*req) + n * sizeof(req->parts[0]));
	if (req == NULL)
		return NULL;
	if (ask->domains != NULL &&
	    buf_append(&req->domains, buf_head(ask->domains), buf_len(ask->domains)) != 0) {
		free(req);
		return NULL;
	}
	worker_ask_init(&req->ask, n);
	req->command = command;
	req->delivery = c->delivery;
	if (ask->plan != NULL) { /* the request owns it from now on */
		etrn_plan_move(&req->plan, ask->plan);
		req->gen = net_generation_hold(ask->gen);
	}
	memcpy(req->arg, ask->arg, ask->arg_len);
	req->arg[ask->arg_len] = '\0';
	req->arg_len = ask->arg_len;
	req->by_id = ask->by_id;
	req->nparts = n;
	for (uint32_t i = 0; i < n; i++) {
		req->parts[i].request = req;
		req->parts[i].queue = queue_store_queue(c->store, i);
		req->parts[i].index = i;
		req->parts[i].error = ask->only == ADMIN_ALL_WORKERS || ask->only == i ? -ESRCH : 0;
	}
	return req;
}

struct admin_request *admin_ask_workers(const struct admin_commands *c, enum admin_command command,
					const struct admin_ask *ask, const char **why)
{
	struct admin_request *req = admin_request_new(c, command, ask);
	*why = "ferryd is out of memory";
	if (req == NULL)
		return NULL;
	for (uint32_t i = 0; i < req->nparts; i++) {
		struct queue *q = req->parts[i].queue;
		struct worker *w = q != NULL ? queue_worker(q) : NULL;
		if (w == NULL || (ask->only != ADMIN_ALL_WORKERS && ask->only != i))
			admin_request_release(req, true); /* nothing of it to ask */
		else
			worker_send(w, &req->parts[i].link, admin_part_run);
	}

	bool answered = worker_ask_wait(&req->ask, ADMIN_WORKERS_MS);
	if (answered)
		return req;
	log_event(LOG_LEVEL_ERROR,
		  "event=admin_timeout command=%s waited_ms=%d note=\"a worker did not answer "
		  "an operator request in time\"",
		  admin_command_name(command), ADMIN_WORKERS_MS);
	admin_request_release(req, false);
	*why = "ferryd did not answer in time";
	return NULL;
}
