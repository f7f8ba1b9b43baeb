/*
 * etrn_service — an ETRN from a session to the workers holding its mail,
 * and back (see etrn_service.h).
 */
#include "net/etrn_service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/array.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timer.h"
#include "core/xmsg.h"
#include "net/client_rate.h"
#include "net/generation.h"
#include "net/outbound.h"
#include "net/smtp_session.h"
#include "queue/queue.h"
#include "queue/sched.h"

/* A worker's ETRN counters; read on its own thread. */
enum etrn_reply_slot {
	ETRN_REPLY_250 = 0,
	ETRN_REPLY_251,
	ETRN_REPLY_252,
	ETRN_REPLY_253,
	ETRN_REPLY_421,
	ETRN_REPLY_458,
	ETRN_REPLY_459,
	ETRN_REPLY_500,
	ETRN_REPLY_501,
	ETRN_NREPLIES,
};
struct etrn_counters {
	uint64_t requests[ETRN_NREPLIES]; /* by reply code */
	uint64_t flushes_started;         /* domains flushed */
	uint64_t flushes_joined;          /* domains whose running flush was joined */
	uint64_t messages_released;       /* of them, messages that were HELD or DEFERRED */
};

struct etrn_worker {
	struct worker *worker;
	const struct etrn_settings *settings;
	struct net_generation *gen; /* the policy it answers with (held); a reload moves it */
	struct queue *queue;
	struct list_node requests; /* from this worker's sessions, unanswered */
	struct etrn_counters counters;
};

struct etrn_request;

/* The part of one worker that holds covered mail. */
struct etrn_part {
	struct xmsg link;
	struct etrn_request *request;
	uint32_t worker;
	struct etrn_part_result result;
};

struct etrn_request {
	struct etrn_worker *origin;
	struct net_generation *gen;   /* the plan points into its config (held) */
	struct list_node link;        /* origin->requests */
	struct smtp_session *session; /* NULL once the session went */
	struct etrn_plan plan;
	char argument[ETRN_NAME_MAX + 8]; /* as sent, for the log (cut short) */
	size_t argument_len;
	int code;             /* the reply, once known */
	uint64_t reply_at_ms; /* not before (a flood is slowed) */
	struct timer delay;   /* until reply_at_ms */
	unsigned parts_out;   /* not back yet */
	struct etrn_part_result total;
	uint32_t nparts;
	struct etrn_part parts[];
};

static const int etrn_codes[ETRN_NREPLIES] = {250, 251, 252, 253, 421, 458, 459, 500, 501};

static void etrn_count_reply(struct etrn_worker *ew, int code)
{
	for (unsigned i = 0; i < ETRN_NREPLIES; i++)
		if (etrn_codes[i] == code)
			ew->counters.requests[i]++;
}

/* ---- on the workers holding the mail ---------------------------------------------- */

struct etrn_collect {
	const struct etrn_plan *plan;
	bool below_only; /* a dotted section: its subdomains, not the name */
	const char *base;
	size_t base_len;
	char **names;
	size_t count, cap;
	bool dedupe;
	bool failed;
};

static void etrn_collect_add(struct etrn_collect *c, const char *domain, size_t len)
{
	if (c->dedupe)
		for (size_t i = 0; i < c->count; i++)
			if (strlen(c->names[i]) == len &&
			    strncasecmp(c->names[i], domain, len) == 0)
				return;
	char *copy =
		array_reserve(c->names, c->cap, c->count + 1) == 0 ? strndup(domain, len) : NULL;
	if (copy == NULL) {
		c->failed = true;
		return;
	}
	c->names[c->count++] = copy;
}

static bool etrn_collect_visit(void *arg, const char *domain, size_t len,
			       const struct sched_counts *counts)
{
	(void)counts;
	struct etrn_collect *c = arg;
	if (c->below_only && len == c->base_len)
		return true; /* ".name" rules the subdomains only */
	if (etrn_plan_covers(c->plan, domain, len))
		etrn_collect_add(c, domain, len);
	return !c->failed;
}

static bool etrn_covered(void *arg, const char *domain, size_t len)
{
	return etrn_plan_covers(arg, domain, len);
}

static void etrn_result_name(struct etrn_part_result *r, const char *name)
{
	size_t used = strlen(r->names);
	if (used + 4 >= sizeof(r->names))
		return; /* already cut short */
	int n = snprintf(r->names + used, sizeof(r->names) - used, "%s%s", used > 0 ? "," : "",
			 name);
	if (n < 0 || used + (size_t)n >= sizeof(r->names))
		snprintf(r->names + sizeof(r->names) - 4, 4, "...");
}

void etrn_flush_here(struct queue *q, struct outbound *ob, const struct etrn_plan *plan,
		     uint32_t window_ms, bool operator, struct etrn_part_result * r)
{
	memset(r, 0, sizeof(*r));
	if (ob == NULL) {
		r->failed = true;
		return;
	}
	/* The covered domains queued in this worker's shards, each once. */
	struct etrn_collect c = {.plan = plan, .dedupe = plan->ntargets > 1};
	uint32_t me = queue_worker(q)->index;
	for (size_t i = 0; i < plan->ntargets && !c.failed; i++) {
		const struct etrn_target *t = &plan->targets[i];
		struct sched_counts counts;
		if (etrn_target_single(t)) {
			if (sched_owner(q, t->name, t->len) == me &&
			    sched_counts(q, t->name, t->len, &counts))
				etrn_collect_add(&c, t->name, t->len);
			continue;
		}
		c.below_only = t->match == ETRN_MATCH_SECTION;
		c.base = t->name;
		c.base_len = t->len;
		sched_foreach_suffix(q, t->name, t->len, etrn_collect_visit, &c);
	}
	if (c.failed)
		r->failed = true;
	for (size_t i = 0; i < c.count; i++) {
		const char *domain = c.names[i];
		size_t len = strlen(domain);
		struct sched_tally tally = {0};
		sched_tally(q, domain, len, etrn_covered, (void *)plan, &tally);
		r->messages += tally.messages;
		r->elsewhere = r->elsewhere || tally.elsewhere;
		etrn_result_name(r, domain);
		bool joined = false;
		unsigned moved = operator? outbound_flush(ob, domain, len)
					 : outbound_etrn_flush(ob, domain, len, window_ms, &joined);
		r->moved += moved;
		if (joined) {
			r->joined++;
		} else {
			r->started++;
			r->released += tally.waiting;
		}
		free(c.names[i]);
	}
	free(c.names);
}

static void etrn_part_back(struct xmsg *msg);

/* On the worker holding the mail; then back to the session's. */
static void etrn_part_run(struct xmsg *msg)
{
	struct etrn_part *part = container_of(msg, struct etrn_part, link);
	struct etrn_request *req = part->request;
	const struct etrn_settings *s = req->origin->settings;
	struct etrn_worker *ew = s->workers[part->worker];
	etrn_flush_here(ew->queue, outbound_of_worker(s->delivery, part->worker), &req->plan,
			req->gen->cfg.etrn_flush_window_ms, false, &part->result);
	ew->counters.flushes_started += part->result.started;
	ew->counters.flushes_joined += part->result.joined;
	ew->counters.messages_released += part->result.released;
	worker_send(req->origin->worker, &part->link, etrn_part_back);
}

/* ---- on the session's worker ---------------------------------------------------------- */

static void etrn_request_free(struct etrn_request *req)
{
	if (timer_armed(&req->delay))
		timer_cancel(&req->origin->worker->timers, &req->delay);
	list_remove(&req->link);
	etrn_plan_free(&req->plan);
	net_generation_drop(req->gen);
	free(req);
}

/* Reply, log, count. The session may be gone (NULL). */
static void etrn_answer(struct etrn_worker *ew, struct smtp_session *s,
			const struct etrn_argument *arg, const char *argument, size_t arg_len,
			int code, const struct etrn_part_result *total, const char *reason)
{
	char line[400];
	bool close = code == 421;
	if (close)
		snprintf(line, sizeof(line), "%s", reason);
	else
		etrn_reply_text(line, sizeof(line), code, arg != NULL ? arg->shown : NULL,
				total != NULL ? total->messages : 0, reason);
	etrn_count_reply(ew, code);
	char quoted_arg[300], quoted_names[260];
	static const struct etrn_part_result none;
	if (total == NULL)
		total = &none;
	log_event(LOG_LEVEL_INFO,
		  "event=etrn session=%s client=%s argument=%s domains=%s reply=%d messages=%llu "
		  "released=%llu joined=%u",
		  s != NULL ? s->id : "-", s != NULL ? s->client_address : "-",
		  log_quote(quoted_arg, sizeof(quoted_arg), argument, arg_len),
		  log_quote(quoted_names, sizeof(quoted_names), total->names, strlen(total->names)),
		  code, (unsigned long long)total->messages, (unsigned long long)total->released,
		  total->joined);
	if (s != NULL)
		smtp_session_etrn_reply(s, line, close);
}

/* Answered (and logged: the flush happened even if the client left). */
static void etrn_request_answer(struct etrn_request *req)
{
	etrn_answer(req->origin, req->session, &req->plan.arg, req->argument, req->argument_len,
		    req->code, &req->total, req->plan.reason);
	etrn_request_free(req);
}

static void etrn_delay_fire(struct timer *t)
{
	etrn_request_answer(container_of(t, struct etrn_request, delay));
}

/* Every part is back: the reply, now or after the flood delay. */
static void etrn_request_done(struct etrn_request *req)
{
	const struct etrn_part_result *t = &req->total;
	if (req->code != 0)
		; /* refused before it went out */
	else if (t->failed)
		req->code = 458;
	else if (!req->plan.counts)
		req->code = 250;
	else if (t->messages == 0)
		req->code = 251;
	else if (t->elsewhere)
		req->code = 252;
	else
		req->code = 253;
	uint64_t now = req->origin->worker->now_ms;
	if (req->session == NULL || req->reply_at_ms <= now)
		etrn_request_answer(req);
	else
		timer_arm(&req->origin->worker->timers, &req->delay, now, req->reply_at_ms - now);
}

static void etrn_part_back(struct xmsg *msg)
{
	struct etrn_part *part = container_of(msg, struct etrn_part, link);
	struct etrn_request *req = part->request;
	struct etrn_part_result *t = &req->total, *r = &part->result;
	t->messages += r->messages;
	t->released += r->released;
	t->elsewhere = t->elsewhere || r->elsewhere;
	t->joined += r->joined; /* what the log says; the rest is counted per worker */
	t->failed = t->failed || r->failed;
	if (r->names[0] != '\0')
		etrn_result_name(t, r->names);
	if (--req->parts_out == 0)
		etrn_request_done(req);
}

/* Which workers hold shards of what the plan covers: the owner of each
 * single domain, every worker for a suffix. */
static void etrn_plan_workers(const struct etrn_plan *plan, struct queue *q, uint32_t nworkers,
			      bool *wanted)
{
	for (size_t i = 0; i < plan->ntargets; i++) {
		const struct etrn_target *t = &plan->targets[i];
		if (etrn_target_single(t)) {
			wanted[sched_owner(q, t->name, t->len)] = true;
			continue;
		}
		for (uint32_t w = 0; w < nworkers; w++)
			wanted[w] = true;
		return;
	}
}

void etrn_session_request(void *arg, struct smtp_session *s, const char *argument, size_t len)
{
	const struct etrn_settings *st = arg;
	struct worker *w = queue_worker(s->queue);
	struct etrn_worker *ew = st->workers[w->index];
	const struct config *cfg = &ew->gen->cfg;
	char refusal[300];

	if (++s->etrns > cfg->etrn_max_per_session) {
		snprintf(refusal, sizeof(refusal),
			 "421 4.7.0 %s Error: too many ETRN commands in one session; closing",
			 cfg->hostname);
		etrn_answer(ew, s, NULL, argument, len, 421, NULL, refusal);
		return;
	}
	uint64_t delay = 0;
	if (st->rates != NULL) {
		uint32_t n =
			client_rate_hit(st->rates, (const struct sockaddr *)&s->client, w->now_ms);
		if (n > cfg->etrn_max_rate_per_client) {
			snprintf(refusal, sizeof(refusal),
				 "421 4.7.0 %s Error: too many ETRN commands from your address, "
				 "slow down; closing",
				 cfg->hostname);
			etrn_answer(ew, s, NULL, argument, len, 421, NULL, refusal);
			return;
		}
		if (n > cfg->etrn_max_rate_per_client / 2)
			delay = cfg->etrn_flood_delay_ms;
	}

	struct etrn_argument parsed;
	int code = etrn_parse(argument, len, &parsed);
	if (code != 0) { /* nothing parsed to show: the argument as sent is logged */
		etrn_answer(ew, s, NULL, argument, len, code, NULL, NULL);
		return;
	}
	uint32_t nworkers = queue_store_workers(st->store);
	struct etrn_request *req = calloc(1, sizeof(*req) + nworkers * sizeof(req->parts[0]));
	if (req == NULL) {
		etrn_answer(ew, s, &parsed, argument, len, 458, NULL, NULL);
		return;
	}
	req->argument_len = len < sizeof(req->argument) ? len : sizeof(req->argument);
	memcpy(req->argument, argument, req->argument_len);
	req->origin = ew;
	req->gen = net_generation_hold(ew->gen);
	req->session = s;
	req->reply_at_ms = w->now_ms + delay;
	timer_init(&req->delay, etrn_delay_fire);
	list_insert_tail(&ew->requests, &req->link);

	if (etrn_plan_make(req->gen->etrn, (const struct sockaddr *)&s->client, &parsed,
			   &req->plan) != 0) {
		req->plan.arg = parsed;
		req->code = 458;
	} else {
		req->code = req->plan.code;
	}
	if (req->code != 0) { /* 458, 459: answered (after any flood delay) */
		etrn_request_done(req);
		return;
	}
	bool wanted[nworkers];
	memset(wanted, 0, sizeof(wanted));
	etrn_plan_workers(&req->plan, s->queue, nworkers, wanted);
	for (uint32_t i = 0; i < nworkers; i++) {
		if (wanted[i] && st->workers[i] == NULL) {
			wanted[i] = false; /* not started yet, or gone */
			req->total.failed = true;
		}
		if (wanted[i])
			req->parts_out++;
	}
	if (req->parts_out == 0) {
		etrn_request_done(req);
		return;
	}
	for (uint32_t i = 0; i < nworkers; i++) {
		if (!wanted[i])
			continue;
		struct etrn_part *part = &req->parts[req->nparts++];
		part->request = req;
		part->worker = i;
		worker_send(st->workers[i]->worker, &part->link, etrn_part_run);
	}
}

void etrn_session_cancel(void *arg, struct smtp_session *s)
{
	const struct etrn_settings *st = arg;
	struct etrn_worker *ew = st->workers[queue_worker(s->queue)->index];
	struct etrn_request *req;
	list_for_each_entry(req, &ew->requests, link)
	{
		if (req->session != s)
			continue;
		req->session = NULL;
		/* Its parts still come back (they own memory of it); one
		 * only waiting for its delay goes now. */
		if (req->parts_out == 0)
			etrn_request_free(req);
		return;
	}
}

/* ---- settings and the service --------------------------------------------------------- */

int etrn_settings_init(struct etrn_settings *s, const struct config *cfg, struct queue_store *store,
		       const struct outbound_shared *delivery, char *err, size_t err_size)
{
	memset(s, 0, sizeof(*s));
	s->store = store;
	s->delivery = delivery;
	s->workers = calloc(cfg->workers ? cfg->workers : 1, sizeof(*s->workers));
	if (s->workers == NULL || (cfg->etrn_max_rate_per_client > 0 &&
				   client_rate_create(&s->rates, cfg->etrn_max_rate_per_client,
						      cfg->max_connections) != 0)) {
		snprintf(err, err_size, "out of memory");
		etrn_settings_free(s);
		return -ENOMEM;
	}
	return 0;
}

void etrn_settings_free(struct etrn_settings *s)
{
	client_rate_destroy(s->rates);
	free(s->workers);
	memset(s, 0, sizeof(*s));
}

static int etrn_service_start(struct worker *w, void *arg, void **state)
{
	struct net_generation *gen = arg;
	struct etrn_settings *s = gen->rt->etrn;
	struct etrn_worker *ew = calloc(1, sizeof(*ew));
	if (ew == NULL)
		return -ENOMEM;
	ew->worker = w;
	ew->settings = s;
	ew->gen = net_generation_hold(gen);
	ew->queue = queue_store_queue(s->store, w->index);
	list_init(&ew->requests);
	s->workers[w->index] = ew;
	*state = ew;
	return 0;
}

/* A reload: ETRNs from now on are answered by the new policy (a request
 * under way keeps the one it was planned with). */
static void etrn_service_reconfigure(struct worker *w, void *state, void *arg)
{
	(void)w;
	struct etrn_worker *ew = state;
	struct net_generation *old = ew->gen;
	ew->gen = net_generation_hold(arg);
	net_generation_drop(old);
}

static bool etrn_service_idle(struct worker *w, void *state)
{
	(void)w;
	struct etrn_worker *ew = state;
	return list_empty(&ew->requests);
}

static void etrn_service_stop(struct worker *w, void *state)
{
	struct etrn_worker *ew = state;
	const struct etrn_counters *c = &ew->counters;
	log_event(LOG_LEVEL_INFO,
		  "event=etrn_totals worker=%u requests_250=%llu requests_251=%llu "
		  "requests_252=%llu requests_253=%llu requests_421=%llu requests_458=%llu "
		  "requests_459=%llu requests_500=%llu requests_501=%llu flushes_started=%llu "
		  "flushes_joined=%llu messages_released=%llu",
		  w->index, (unsigned long long)c->requests[ETRN_REPLY_250],
		  (unsigned long long)c->requests[ETRN_REPLY_251],
		  (unsigned long long)c->requests[ETRN_REPLY_252],
		  (unsigned long long)c->requests[ETRN_REPLY_253],
		  (unsigned long long)c->requests[ETRN_REPLY_421],
		  (unsigned long long)c->requests[ETRN_REPLY_458],
		  (unsigned long long)c->requests[ETRN_REPLY_459],
		  (unsigned long long)c->requests[ETRN_REPLY_500],
		  (unsigned long long)c->requests[ETRN_REPLY_501],
		  (unsigned long long)c->flushes_started, (unsigned long long)c->flushes_joined,
		  (unsigned long long)c->messages_released);
	struct etrn_request *req, *tmp;
	list_for_each_entry_safe(req, tmp, &ew->requests, link) etrn_request_free(req);
	ew->settings->workers[w->index] = NULL;
	net_generation_drop(ew->gen);
	free(ew);
}

static const struct metric_family etrn_requests = {"ferry_etrn_requests_total",
						   "ETRN commands, by the reply code they got.",
						   METRIC_COUNTER,
						   METRIC_SUM,
						   NULL,
						   0};
static const struct metric_family etrn_flushes_started = {
	"ferry_etrn_flushes_started_total",
	"Domains whose held and deferred mail an ETRN made ready (a flush started).",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family etrn_flushes_joined = {
	"ferry_etrn_flushes_joined_total",
	"Domains an ETRN found with a flush still running (joined: nothing moved).",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family etrn_messages_released = {
	"ferry_etrn_messages_released_total",
	"Messages held or deferred that an ETRN's flush made ready.",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};

static void etrn_service_metrics(struct worker *w, void *state, struct metrics *out)
{
	(void)w;
	const struct etrn_counters *c = &((struct etrn_worker *)state)->counters;
	for (unsigned i = 0; i < ETRN_NREPLIES; i++) {
		char labels[32];
		snprintf(labels, sizeof(labels), "code=\"%d\"", etrn_codes[i]);
		metrics_add(out, &etrn_requests, labels, (double)c->requests[i]);
	}
	metrics_add(out, &etrn_flushes_started, NULL, (double)c->flushes_started);
	metrics_add(out, &etrn_flushes_joined, NULL, (double)c->flushes_joined);
	metrics_add(out, &etrn_messages_released, NULL, (double)c->messages_released);
}

const struct worker_service etrn_service = {
	.name = "etrn",
	.start = etrn_service_start,
	.idle = etrn_service_idle,
	.stop = etrn_service_stop,
	.metrics = etrn_service_metrics,
	.reconfigure = etrn_service_reconfigure,
};
