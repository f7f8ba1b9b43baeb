/*
 * admin_commands — the admin socket's requests carried out (see
 * admin_commands.h): checked here, run on the workers, answered.
 */
#include "net/admin_commands.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/array.h"
#include "core/list.h"
#include "core/log.h"
#include "core/worker.h"
#include "core/xmsg.h"
#include "net/admin.h"
#include "net/etrn.h"
#include "net/etrn_service.h"
#include "net/outbound.h"
#include "queue/queue.h"
#include "queue/sched.h"
#include "queue/spool_view.h"

#define ADMIN_LIST_PER_TURN 2048 /* recipients a worker lists in one loop turn */
#define ADMIN_ALL_WORKERS   UINT32_MAX

enum admin_command { ADMIN_QUEUE, ADMIN_LIST, ADMIN_SHOW, ADMIN_FLUSH, ADMIN_HOLD, ADMIN_RELEASE };

/* What a command's argument must be. */
enum admin_argument {
	ADMIN_ARG_NONE,
	ADMIN_ARG_DOMAIN,          /* list: any queued destination's spelling */
	ADMIN_ARG_DESTINATION,     /* hold, release: a domain name or address literal */
	ADMIN_ARG_MAY_DESTINATION, /* flush: one, or none for everything */
	ADMIN_ARG_QUEUE_ID,
};

struct admin_command_spec {
	const char *name;
	enum admin_argument argument;
	const char *usage;
};

/* By enum admin_command. */
static const struct admin_command_spec admin_commands[] = {
	[ADMIN_QUEUE] = {"queue", ADMIN_ARG_NONE, "queue"},
	[ADMIN_LIST] = {"list", ADMIN_ARG_DOMAIN, "list DOMAIN"},
	[ADMIN_SHOW] = {"show", ADMIN_ARG_QUEUE_ID, "show QUEUEID"},
	[ADMIN_FLUSH] = {"flush", ADMIN_ARG_MAY_DESTINATION, "flush [DOMAIN|@DOMAIN|#QUEUE]"},
	[ADMIN_HOLD] = {"hold", ADMIN_ARG_DESTINATION, "hold DOMAIN"},
	[ADMIN_RELEASE] = {"release", ADMIN_ARG_DESTINATION, "release DOMAIN"},
};

#define ADMIN_NCOMMANDS (sizeof(admin_commands) / sizeof(admin_commands[0]))

/* ---- one request, answered by the workers ------------------------------------ */

struct admin_request;

/* One worker's part: its handler fills `out` on that worker's thread. */
struct admin_part {
	struct xmsg link;
	struct admin_request *request;
	struct queue *queue;
	struct buf out;
	uint32_t index;                    /* the worker's number */
	int found;                         /* show: queue_report_message() found the message */
	struct queue_report_cursor cursor; /* list: where the last turn stopped */
	long moved;                        /* flush, hold, release: recipients moved, or -errno */
};

/*
 * Shared by the admin thread and the workers. refs counts the admin
 * thread's hold plus every part whose handler has not finished; whoever
 * drops the last one frees it, so a request the admin gave up on (a worker
 * slow to answer) is freed by that worker, never under it.
 */
struct admin_request {
	pthread_mutex_t lock;
	pthread_cond_t done;
	unsigned refs;
	unsigned pending; /* parts not answered yet */
	bool abandoned;   /* the admin stopped waiting: skip the work */
	enum admin_command command;
	const struct outbound_settings *delivery;
	struct etrn_plan plan; /* flush @DOMAIN or #QUEUE: what it covers (ntargets > 0) */
	char arg[ADMIN_REQUEST_MAX + 1];
	size_t arg_len;
	uint32_t nparts;
	struct admin_part parts[];
};

static void admin_request_free(struct admin_request *req)
{
	for (uint32_t i = 0; i < req->nparts; i++)
		buf_release(&req->parts[i].out);
	etrn_plan_free(&req->plan);
	pthread_cond_destroy(&req->done);
	pthread_mutex_destroy(&req->lock);
	free(req);
}

/* Drop one reference; `answered`: a part's handler is done with it. */
static void admin_request_release(struct admin_request *req, bool answered)
{
	pthread_mutex_lock(&req->lock);
	if (answered && --req->pending == 0)
		pthread_cond_signal(&req->done);
	bool last = --req->refs == 0;
	pthread_mutex_unlock(&req->lock);
	if (last)
		admin_request_free(req);
}

/* Delivery's move, on the worker that owns part->queue (and, for a
 * domain, its shard). */
static long admin_part_move(const struct admin_request *req, const struct admin_part *part)
{
	struct outbound *ob = outbound_of_worker(req->delivery, part->index);
	if (ob == NULL)
		return -ESRCH; /* its delivery stopped, or never started */
	if (req->command == ADMIN_FLUSH && req->plan.ntargets > 0) {
		struct etrn_part_result r;
		etrn_flush_here(part->queue, ob, &req->plan, 0, true, &r);
		return r.failed ? -ENOMEM : (long)r.moved;
	}
	if (req->command == ADMIN_FLUSH)
		return req->arg_len == 0 ? (long)outbound_flush_all(ob)
					 : (long)outbound_flush(ob, req->arg, req->arg_len);
	return outbound_hold(ob, req->arg, req->arg_len, req->command == ADMIN_HOLD);
}

/* On the worker that owns part->queue. */
static void admin_part_run(struct xmsg *msg)
{
	struct admin_part *part = container_of(msg, struct admin_part, link);
	struct admin_request *req = part->request;
	pthread_mutex_lock(&req->lock);
	bool wanted = !req->abandoned;
	pthread_mutex_unlock(&req->lock);
	if (wanted) {
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
		case ADMIN_FLUSH:
		case ADMIN_HOLD:
		case ADMIN_RELEASE:
			part->moved = admin_part_move(req, part);
			break;
		}
	}
	admin_request_release(req, true);
}

/*
 * Ask worker `only` (ADMIN_ALL_WORKERS: every one) for its part and wait
 * at most ADMIN_WORKERS_MS. Returns the request with every part answered
 * (the caller releases it), or NULL with *why set. A worker not asked, or
 * not running, answers nothing (moved 0, or -ESRCH when it was asked).
 */
static struct admin_request *admin_ask_workers(const struct admin_commands *c,
					       enum admin_command command, uint32_t only,
					       const char *arg, size_t arg_len,
					       struct etrn_plan *plan, const char **why)
{
	uint32_t n = queue_store_workers(c->store);
	struct admin_request *req = calloc(1, sizeof(*req) + n * sizeof(req->parts[0]));
	*why = "ferryd is out of memory";
	if (req == NULL)
		return NULL;
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&req->done, &attr);
	pthread_condattr_destroy(&attr);
	pthread_mutex_init(&req->lock, NULL);
	req->command = command;
	req->delivery = c->delivery;
	if (plan != NULL) /* the request owns it from now on */
		etrn_plan_move(&req->plan, plan);
	memcpy(req->arg, arg, arg_len);
	req->arg[arg_len] = '\0';
	req->arg_len = arg_len;
	req->nparts = n;
	req->refs = n + 1;
	req->pending = n;
	for (uint32_t i = 0; i < n; i++) {
		req->parts[i].request = req;
		req->parts[i].queue = queue_store_queue(c->store, i);
		req->parts[i].index = i;
		req->parts[i].moved = only == ADMIN_ALL_WORKERS || only == i ? -ESRCH : 0;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct queue *q = req->parts[i].queue;
		struct worker *w = q != NULL ? queue_worker(q) : NULL;
		if (w == NULL || (only != ADMIN_ALL_WORKERS && only != i))
			admin_request_release(req, true); /* nothing of it to ask */
		else
			worker_send(w, &req->parts[i].link, admin_part_run);
	}

	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += ADMIN_WORKERS_MS / 1000;
	deadline.tv_nsec += (long)(ADMIN_WORKERS_MS % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&req->lock);
	while (req->pending > 0)
		if (pthread_cond_timedwait(&req->done, &req->lock, &deadline) == ETIMEDOUT)
			break;
	bool answered = req->pending == 0;
	if (!answered)
		req->abandoned = true;
	pthread_mutex_unlock(&req->lock);
	if (answered)
		return req;
	log_event(LOG_LEVEL_ERROR,
		  "event=admin_timeout command=%s waited_ms=%d note=\"a worker did not answer "
		  "an operator request in time\"",
		  admin_commands[command].name, ADMIN_WORKERS_MS);
	admin_request_release(req, false);
	*why = "ferryd did not answer in time";
	return NULL;
}

/* ---- show: the header section from the segment files ------------------------ */

/*
 * Append the message's header section to out, reading the extents named by
 * the envelope's "body SEGMENT OFFSET LEN" lines, as many as
 * ADMIN_HEADERS_MAX needs. Returns 0, SPOOL_VIEW_MOVED (a segment named is
 * gone: compaction moved the message since the worker answered), or -errno,
 * with why set.
 */
static int admin_read_headers(const struct admin_commands *c, const char *envelope,
			      size_t envelope_len, struct buf *out, char *why, size_t why_size)
{
	struct queue_extent *extents = NULL;
	size_t n = 0, cap = 0;
	uint64_t covered = 0;
	uint32_t writer = 0;
	int r = 0;
	const char *p = envelope, *stop = envelope + envelope_len;
	while (p < stop && covered < ADMIN_HEADERS_MAX) {
		const char *nl = memchr(p, '\n', (size_t)(stop - p));
		const char *line = p;
		size_t line_len = nl != NULL ? (size_t)(nl - p) : (size_t)(stop - p);
		p = nl != NULL ? nl + 1 : stop;
		char text[128];
		if (line_len < 5 || memcmp(line, "body ", 5) != 0 || line_len >= sizeof(text))
			continue;
		memcpy(text, line, line_len);
		text[line_len] = '\0';
		char name[SPOOL_VIEW_SEGMENT_NAME_MAX + 1];
		unsigned long long offset, len;
		uint32_t line_writer;
		uint64_t sequence;
		/* One message's body lies in one writer's segments. */
		if (sscanf(text, "body %32s %llu %llu", name, &offset, &len) != 3 ||
		    !spool_view_parse_segment_name(name, &line_writer, &sequence) ||
		    len > UINT32_MAX || (n > 0 && line_writer != writer)) {
			snprintf(why, why_size, "bad body line from the store: %s", text);
			r = -EINVAL;
			break;
		}
		if (array_reserve(extents, cap, n + 1) != 0) {
			snprintf(why, why_size, "out of memory");
			r = -ENOMEM;
			break;
		}
		extents[n++] = (struct queue_extent){sequence, offset, (uint32_t)len};
		writer = line_writer;
		covered += len;
	}
	if (r == 0)
		r = spool_view_read_headers(c->segments_fd, writer, extents, n, ADMIN_HEADERS_MAX,
					    out, why, why_size);
	free(extents);
	return r;
}

/* ---- requests and answers ------------------------------------------------------ */

/* Check the argument of `command` and normalise its case: domains are
 * queued lower-cased, queue ids are upper-case base32. false with the
 * error answered. */
static bool admin_check_argument(enum admin_command command, char *arg, size_t len,
				 struct buf *answer)
{
	const struct admin_command_spec *spec = &admin_commands[command];
	bool ok;
	switch (spec->argument) {
	case ADMIN_ARG_NONE:
		if (len > 0)
			buf_printf(answer, "error: '%s' takes no argument\n", spec->name);
		return len == 0;
	case ADMIN_ARG_DOMAIN:
		ok = admin_domain_ok(arg, len);
		break;
	case ADMIN_ARG_MAY_DESTINATION:
		if (len == 0)
			return true;
		if (arg[0] == '@' || arg[0] == '#') { /* ETRN's forms */
			struct etrn_argument parsed;
			if (etrn_parse(arg, len, &parsed) != 0) {
				buf_printf(
					answer,
					"error: '%s' is not @DOMAIN (a domain and its "
					"subdomains) nor #QUEUE (a queue named in etrn_queues)\n",
					arg);
				return false;
			}
			return true;
		}
		/* fall through */
	case ADMIN_ARG_DESTINATION:
		ok = admin_destination_ok(arg, len);
		break;
	case ADMIN_ARG_QUEUE_ID:
		ok = admin_queue_id_ok(arg, len);
		break;
	default:
		ok = false;
	}
	if (!ok) {
		if (len == 0)
			buf_printf(answer, "error: usage: %s\n", spec->usage);
		else if (spec->argument == ADMIN_ARG_QUEUE_ID)
			buf_printf(answer,
				   "error: '%s' is not a queue id (%d letters and digits)\n", arg,
				   QUEUE_ID_LEN);
		else if (spec->argument == ADMIN_ARG_DOMAIN)
			buf_printf(answer, "error: '%s' is not a domain\n", arg);
		else
			buf_printf(answer,
				   "error: '%s' is not a domain name (letters, digits and hyphens "
				   "in dot-separated labels) nor an address literal such as "
				   "[192.0.2.1]\n",
				   arg);
		return false;
	}
	bool upper = spec->argument == ADMIN_ARG_QUEUE_ID;
	for (size_t i = 0; i < len; i++)
		arg[i] = (char)(upper ? toupper((unsigned char)arg[i])
				      : tolower((unsigned char)arg[i]));
	return true;
}

/* queue, list, show: every worker's part of the view. */
static void admin_answer_view(const struct admin_commands *c, enum admin_command command,
			      const char *arg, size_t arg_len, struct buf *answer)
{
	const char *why;
	struct admin_request *req;
	struct admin_part *shown = NULL;
	struct buf headers = {0};
	char why_headers[256];
	int headers_status = 0;
	/* A show's body extents are read here, after the worker answered; a
	 * compaction may have moved the message in between (its old segment
	 * is gone): then ask once more. */
	for (int attempt = 0;; attempt++) {
		req = admin_ask_workers(c, command, ADMIN_ALL_WORKERS, arg, arg_len, NULL, &why);
		if (req == NULL || command != ADMIN_SHOW)
			break;
		shown = NULL;
		for (uint32_t i = 0; i < req->nparts && shown == NULL; i++)
			if (req->parts[i].found)
				shown = &req->parts[i];
		if (shown == NULL)
			break;
		buf_clear(&headers);
		headers_status = admin_read_headers(c, buf_head(&shown->out), buf_len(&shown->out),
						    &headers, why_headers, sizeof(why_headers));
		if (headers_status != SPOOL_VIEW_MOVED || attempt > 0)
			break;
		admin_request_release(req, false);
	}
	if (req == NULL) {
		buf_printf(answer, "error: %s\n", why);
		return;
	}
	if (command == ADMIN_SHOW && shown == NULL) {
		buf_printf(answer, "error: no message %s in the queue\n", arg);
	} else if (command == ADMIN_SHOW) {
		buf_printf(answer, "ok\n");
		buf_append(answer, buf_head(&shown->out), buf_len(&shown->out));
		if (headers_status != 0)
			buf_printf(answer, "headers-error %s\n", why_headers);
		buf_printf(answer, "\n");
		buf_append(answer, buf_head(&headers), buf_len(&headers));
	} else {
		buf_printf(answer, "ok\n");
		for (uint32_t i = 0; i < req->nparts; i++)
			buf_append(answer, buf_head(&req->parts[i].out),
				   buf_len(&req->parts[i].out));
	}
	buf_release(&headers);
	admin_request_release(req, false);
}

/* flush, hold, release: on the domain's shard owner, or (flush without a
 * domain) on every worker; the answer counts the recipients moved. */
static void admin_answer_move(const struct admin_commands *c, enum admin_command command,
			      const char *arg, size_t arg_len, struct buf *answer)
{
	static const char *const done[] = {
		[ADMIN_FLUSH] = "flushed", [ADMIN_HOLD] = "held", [ADMIN_RELEASE] = "released"};
	if (c->delivery == NULL) {
		buf_printf(answer,
			   "error: delivery is not running in this ferryd: there is nothing to "
			   "%s\n",
			   admin_commands[command].name);
		return;
	}
	uint32_t only = arg_len == 0 ? ADMIN_ALL_WORKERS
				     : sched_owner(queue_store_queue(c->store, 0), arg, arg_len);
	struct etrn_plan plan = {0};
	if (arg_len > 0 && (arg[0] == '@' || arg[0] == '#')) {
		/* ETRN's forms, for an operator: every worker's shards. */
		struct etrn_argument parsed;
		etrn_parse(arg, arg_len, &parsed); /* checked already */
		if (c->etrn == NULL || etrn_plan_make(c->etrn, NULL, &parsed, &plan) != 0) {
			buf_printf(answer, "error: ferryd is out of memory\n");
			return;
		}
		if (plan.code != 0) {
			buf_printf(answer,
				   "error: no [domain] section has etrn_queues = %s: there is no "
				   "such queue\n",
				   parsed.name);
			etrn_plan_free(&plan);
			return;
		}
		only = ADMIN_ALL_WORKERS;
	}
	const char *why;
	struct admin_request *req = admin_ask_workers(c, command, only, arg, arg_len,
						      plan.ntargets > 0 ? &plan : NULL, &why);
	etrn_plan_free(&plan); /* what the request did not take */
	if (req == NULL) {
		/* Abandoned after it was sent: the worker may still do it. */
		buf_printf(answer,
			   "error: %s (the %s may still take effect; check with queue or list)\n",
			   why, admin_commands[command].name);
		return;
	}
	unsigned long moved = 0;
	long error = 0;
	for (uint32_t i = 0; i < req->nparts; i++) {
		if (req->parts[i].moved < 0)
			error = req->parts[i].moved;
		else
			moved += (unsigned long)req->parts[i].moved;
	}
	admin_request_release(req, false);
	if (error == -ENOMEM)
		buf_printf(answer, "error: ferryd is out of memory\n");
	else if (error != 0)
		buf_printf(answer, "error: delivery is not running on every worker (is ferryd "
				   "stopping?)\n");
	else
		buf_printf(answer, "ok\n%s %lu\n", done[command], moved);
}

const char *admin_commands_answer(const struct admin_commands *c, char *line, struct buf *answer)
{
	char *arg = strchr(line, ' ');
	size_t arg_len = 0;
	if (arg != NULL) {
		*arg++ = '\0';
		while (*arg == ' ')
			arg++;
		arg_len = strlen(arg);
		while (arg_len > 0 && arg[arg_len - 1] == ' ')
			arg[--arg_len] = '\0';
	}
	size_t command = 0;
	while (command < ADMIN_NCOMMANDS && strcmp(line, admin_commands[command].name) != 0)
		command++;
	if (command == ADMIN_NCOMMANDS) {
		buf_printf(answer, "error: unknown command '%s' (try: %s)\n", line,
			   ADMIN_COMMANDS_HINT);
		return "invalid";
	}
	if (!admin_check_argument((enum admin_command)command, arg, arg_len, answer))
		return "invalid";
	if (arg == NULL)
		arg = "";
	if (command == ADMIN_FLUSH || command == ADMIN_HOLD || command == ADMIN_RELEASE)
		admin_answer_move(c, (enum admin_command)command, arg, arg_len, answer);
	else
		admin_answer_view(c, (enum admin_command)command, arg, arg_len, answer);
	return admin_commands[command].name;
}
