/*
 * outbound_service — delivery as a worker service (outbound.h): its start
 * (the store's hooks set, what recovery brought back held or made ready),
 * a reload (every destination moved to the new generation's settings,
 * quotas counted again), the loop's turn, and the drain and stop.
 */
#include "net/outbound.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/bounce.h"
#include "net/generation.h"
#include "net/outbound_session.h"
#include "queue/queue.h"
#include "queue/sched.h"

#define OUTBOUND_MIN_BUCKETS 64u

/* ---- the service ----------------------------------------------------------------------- */

static void outbound_start_count(void *arg, const struct queue_rcpt *r)
{
	outbound_quota_add(arg, r, +1);
}

static bool outbound_start_visit(void *arg, const char *domain, size_t len,
				 const struct sched_counts *counts)
{
	struct outbound *ob = arg;
	/* What recovery brought back counts in its domain's quota. */
	if (ob->settings->quotas)
		sched_visit_rcpts(ob->queue, domain, len, outbound_start_count, ob);
	if (outbound_domain_held(ob, domain, len)) {
		sched_hold(ob->queue, domain, len);
		return true;
	}
	if (counts->ready > 0)
		outbound_wake(ob, domain, len);
	return true;
}

static void outbound_kick_fire(struct timer *t)
{
	(void)t; /* waking the loop was all: its before_wait runs the list */
}

static int outbound_service_start(struct worker *w, void *arg, void **state)
{
	struct net_generation *gen = arg;
	const struct outbound_shared *sh = gen->rt->delivery;
	struct outbound *ob = calloc(1, sizeof(*ob));
	if (ob == NULL)
		return -ENOMEM;
	ob->worker = w;
	ob->settings = gen->delivery;
	ob->queue = queue_store_queue(sh->store, w->index);
	if (ob->settings == NULL || ob->queue == NULL || queue_worker(ob->queue) != w) {
		snprintf(w->error, sizeof(w->error),
			 "worker %u: delivery needs the store's service started first", w->index);
		free(ob);
		return -EINVAL;
	}
	ob->gen = net_generation_hold(gen);
	ob->nbuckets = OUTBOUND_MIN_BUCKETS;
	ob->buckets = malloc(ob->nbuckets * sizeof(*ob->buckets));
	if (ob->buckets == NULL) {
		net_generation_drop(ob->gen);
		free(ob);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < ob->nbuckets; i++)
		list_init(&ob->buckets[i]);
	list_init(&ob->active);
	list_init(&ob->waiting);
	list_init(&ob->sessions);
	timer_init(&ob->kick_timer, outbound_kick_fire);
	ob->bounces = bounce_new(ob);
	int r = ob->bounces != NULL ? dns_open(&ob->dns, w, &sh->dns, w->error, sizeof(w->error))
				    : -ENOMEM;
	if (r != 0) {
		if (ob->bounces != NULL)
			bounce_free(ob->bounces);
		net_generation_drop(ob->gen);
		free(ob->buckets);
		free(ob);
		return r;
	}
	outbound_set_hooks(ob);
	sh->workers[w->index] = ob;
	*state = ob;
	return 0;
}

static void outbound_service_ready(struct worker *w, void *state)
{
	(void)w;
	struct outbound *ob = state;
	/* Every worker's queue is open now: outcomes may be journaled on
	 * any of them. What recovery brought back: held domains' mail to
	 * HELD, the rest to be delivered. */
	ob->running = true;
	sched_foreach(ob->queue, outbound_start_visit, ob);
}

/* ---- a reload ------------------------------------------------------------------------- */

/* The same next hops, written the same way (a route found for the one
 * serves the other)? */
static bool outbound_hops_equal(const struct nexthop_list *a, const struct nexthop_list *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	if (a->count != b->count)
		return false;
	for (unsigned i = 0; i < a->count; i++)
		if (strcmp(a->hops[i].host, b->hops[i].host) != 0 ||
		    a->hops[i].port != b->hops[i].port ||
		    a->hops[i].mx_lookup != b->hops[i].mx_lookup)
			return false;
	return true;
}

/* A destination moves to the new settings (from `old`): its rule, next
 * hops and concurrency; its hold follows the configuration's unless an
 * operator said otherwise (until restart). A route found for other next
 * hops (or, by MX, another smtp_port) is forgotten, with the failures
 * counted against them, and its sessions take no new message; lookups
 * under way start again (they read the old settings). */
static void outbound_dest_reload(struct outbound_dest *d, const struct outbound_settings *old)
{
	struct outbound *ob = d->ob;
	bool was_held = d->held;
	const struct nexthop_list *old_hops = d->hops; /* the old settings live until the end */
	outbound_dest_configure(d);
	if (!d->operator_said)
		d->held = outbound_config_held(d->rule);
	bool changed = !outbound_hops_equal(old_hops, d->hops) ||
		       (d->hops == NULL && old->smtp_port != ob->settings->smtp_port);
	if (changed || d->route.state == ROUTE_RESOLVING)
		outbound_route_clear(d);
	if (changed) {
		d->down_until_ms = 0;
		d->failures = d->round_failures = 0;
		d->rerouted = ob->gen->number; /* its sessions retire after the walk */
	}
	if (d->held && !was_held)
		sched_hold(ob->queue, d->domain, d->len);
	else if (!d->held && was_held)
		outbound_flush(ob, d->domain, d->len); /* as ferryctl release */
	else
		outbound_activate(d); /* the next run looks at it with what changed */
}

struct outbound_reload_walk {
	struct outbound *ob;
	const struct outbound_settings *old;
};

/* A domain with mail here: counted in its new rule's quota; without a
 * destination (none of its mail moving), held or released as its
 * configuration now says. */
static bool outbound_reload_visit(void *arg, const char *domain, size_t len,
				  const struct sched_counts *counts)
{
	(void)counts;
	struct outbound_reload_walk *rw = arg;
	struct outbound *ob = rw->ob;
	if (ob->settings->quotas)
		sched_visit_rcpts(ob->queue, domain, len, outbound_start_count, ob);
	if (outbound_find(ob, domain, len, outbound_hash(domain, len)) != NULL)
		return true; /* outbound_dest_reload's */
	bool was = outbound_config_held(outbound_rule_for(rw->old, domain, len));
	bool now = outbound_config_held(outbound_rule_for(ob->settings, domain, len));
	if (now && !was)
		sched_hold(ob->queue, domain, len);
	else if (was && !now)
		outbound_flush(ob, domain, len);
	return true;
}

/*
 * On this worker, at a loop boundary: delivery runs with the new
 * generation's settings from here on. Every destination moves to them
 * (outbound_dest_reload); quotas are counted again into the new rules
 * from what this worker's shards hold (the old rules' counts are the old
 * generation's; each worker adds its own, so the new counts are whole
 * once every worker has switched).
 */
static void outbound_service_reconfigure(struct worker *w, void *state, void *arg)
{
	(void)w;
	struct outbound *ob = state;
	struct net_generation *gen = arg;
	if (gen->delivery == NULL)
		return;
	struct net_generation *old_gen = ob->gen;
	struct outbound_reload_walk rw = {ob, ob->settings};
	ob->gen = net_generation_hold(gen);
	ob->settings = gen->delivery;
	outbound_set_hooks(ob);
	/* outbound_dest_reload frees no destination and makes none (its
	 * flush finds d itself), so the table stays as it is under the walk. */
	for (uint32_t i = 0; i < ob->nbuckets; i++) {
		struct outbound_dest *d, *next;
		list_for_each_entry_safe(d, next, &ob->buckets[i], hash_link)
		{
			outbound_dest_reload(d, rw.old);
		}
	}
	/* One pass over the connections: those of a rerouted destination
	 * take no new message. */
	for (struct list_node *n = ob->sessions.next; n != &ob->sessions; n = n->next) {
		struct outbound_session *sess = outbound_session_of_all_link(n);
		if (outbound_session_dest(sess)->rerouted == gen->number)
			outbound_session_retire(sess);
	}
	sched_foreach(ob->queue, outbound_reload_visit, &rw);
	net_generation_drop(old_gen); /* nothing points into it any more */
}

static void outbound_service_before_wait(struct worker *w, void *state)
{
	(void)w;
	struct outbound *ob = state;
	outbound_run(ob);
	bounce_run(ob->bounces);
}

static void outbound_drain_sessions(struct outbound *ob, bool cut)
{
	struct list_node *n, *next;
	for (n = ob->sessions.next; n != &ob->sessions; n = next) {
		next = n->next;
		struct outbound_session *s = outbound_session_of_all_link(n);
		if (cut)
			outbound_session_cut(s);
		else
			outbound_session_drain(s);
	}
}

static void outbound_drain_deadline(struct timer *t)
{
	struct outbound *ob = container_of(t, struct outbound, drain_timer);
	if (ob->connections > 0)
		log_event(LOG_LEVEL_WARN,
			  "event=delivery_cut connections=%u note=\"shutdown_timeout passed; their "
			  "recipients stay queued\"",
			  ob->connections);
	outbound_drain_sessions(ob, true);
}

/* Every destination's lookups are dropped (before the resolver drops
 * them, after which their handles are gone). */
static void outbound_drop_lookups(struct outbound *ob)
{
	for (uint32_t i = 0; i < ob->nbuckets; i++) {
		struct outbound_dest *d;
		list_for_each_entry(d, &ob->buckets[i], hash_link)
		{
			if (d->route.state == ROUTE_RESOLVING)
				outbound_route_clear(d);
		}
	}
}

static void outbound_service_drain(struct worker *w, void *state)
{
	struct outbound *ob = state;
	ob->draining = true;
	outbound_drop_lookups(ob);
	dns_drain(ob->dns);
	outbound_drain_sessions(ob, false);
	timer_init(&ob->drain_timer, outbound_drain_deadline);
	timer_arm(&w->timers, &ob->drain_timer, w->now_ms, ob->settings->cfg->shutdown_timeout_ms);
}

static bool outbound_service_idle(struct worker *w, void *state)
{
	(void)w;
	const struct outbound *ob = state;
	return ob->connections == 0 && bounce_idle(ob->bounces) && dns_idle(ob->dns);
}

static void outbound_service_stop(struct worker *w, void *state)
{
	struct outbound *ob = state;
	ob->settings->shared->workers[w->index] = NULL;
	if (timer_armed(&ob->drain_timer))
		timer_cancel(&ob->worker->timers, &ob->drain_timer);
	if (timer_armed(&ob->kick_timer))
		timer_cancel(&ob->worker->timers, &ob->kick_timer);
	sched_set_hooks(ob->queue, NULL);
	for (uint32_t i = 0; i < ob->nbuckets; i++) {
		while (!list_empty(&ob->buckets[i])) {
			struct outbound_dest *d = container_of(list_first(&ob->buckets[i]),
							       struct outbound_dest, hash_link);
			list_remove(&d->hash_link);
			if (timer_armed(&d->retry))
				timer_cancel(&ob->worker->timers, &d->retry);
			outbound_route_clear(d);
			free(d);
		}
	}
	free(ob->buckets);
	bounce_free(ob->bounces);
	dns_close(ob->dns);
	net_generation_drop(ob->gen);
	free(ob);
}

const struct worker_service outbound_service = {
	.name = "delivery",
	.start = outbound_service_start,
	.ready = outbound_service_ready,
	.before_wait = outbound_service_before_wait,
	.drain = outbound_service_drain,
	.idle = outbound_service_idle,
	.stop = outbound_service_stop,
	.metrics = outbound_service_metrics,
	.reconfigure = outbound_service_reconfigure,
};
