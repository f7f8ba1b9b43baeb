/*
 * outbound — delivery on each worker: destinations, their pools, retries
 * and outcomes, and the operator's and ETRN's moves (outbound.h). Its
 * settings, read from the config once, are outbound_settings.c's; the
 * worker service that starts, reloads and stops it is outbound_service.c.
 */
#include "net/outbound.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/check.h"
#include "core/log.h"
#include "net/bounce.h"
#include "net/outbound_operator.h"
#include "net/outbound_session.h"
#include "queue/queue.h"
#include "queue/sched.h"

/* ---- destinations --------------------------------------------------------------- */

static void outbound_retry_fire(struct timer *t);

/* FNV-1a of the lower-cased domain. */
uint64_t outbound_hash(const char *domain, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)domain[i];
		h = (h ^ (c >= 'A' && c <= 'Z' ? c + 32u : c)) * 0x100000001b3ull;
	}
	return h;
}

static struct list_node *outbound_bucket(struct outbound *ob, uint64_t hash)
{
	return &ob->buckets[hash & (ob->nbuckets - 1)];
}

struct outbound_dest *outbound_find(struct outbound *ob, const char *domain, size_t len,
				    uint64_t hash)
{
	struct list_node *head = outbound_bucket(ob, hash);
	struct outbound_dest *d;
	list_for_each_entry(d, head, hash_link)
	{
		if (d->hash == hash && d->len == len && strncasecmp(d->domain, domain, len) == 0)
			return d;
	}
	return NULL;
}

static void outbound_grow(struct outbound *ob)
{
	uint32_t n = ob->nbuckets * 2;
	struct list_node *b = malloc(n * sizeof(*b));
	if (b == NULL)
		return; /* longer chains, still correct */
	for (uint32_t i = 0; i < n; i++)
		list_init(&b[i]);
	for (uint32_t i = 0; i < ob->nbuckets; i++) {
		while (!list_empty(&ob->buckets[i])) {
			struct outbound_dest *d = container_of(list_first(&ob->buckets[i]),
							       struct outbound_dest, hash_link);
			list_remove(&d->hash_link);
			list_insert_tail(&b[d->hash & (n - 1)], &d->hash_link);
		}
	}
	free(ob->buckets);
	ob->buckets = b;
	ob->nbuckets = n;
}

/* Does the configuration hold this rule's mail ([domain] hold = yes)? */
bool outbound_config_held(const struct outbound_rule *rule)
{
	return rule != NULL && rule->domain->hold;
}

/* The destination's rule, next hops and concurrency, from the settings
 * it runs with now (at its birth, or after a reload). */
void outbound_dest_configure(struct outbound_dest *d)
{
	const struct outbound_settings *s = d->ob->settings;
	d->rule = outbound_rule_for(s, d->domain, d->len);
	d->hops = NULL;
	if (d->rule != NULL && d->rule->transport.count > 0)
		d->hops = &d->rule->transport;
	else if (s->relayhost.count > 0)
		d->hops = &s->relayhost;
	d->concurrency = d->rule != NULL && d->rule->domain->concurrency
				 ? d->rule->domain->concurrency
				 : s->concurrency;
}

static struct outbound_dest *outbound_dest_get(struct outbound *ob, const char *domain, size_t len)
{
	if (len == 0 || len >= sizeof(((struct outbound_dest *)0)->domain))
		return NULL;
	uint64_t hash = outbound_hash(domain, len);
	struct outbound_dest *d = outbound_find(ob, domain, len, hash);
	if (d != NULL)
		return d;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	d->ob = ob;
	for (size_t i = 0; i < len; i++)
		d->domain[i] =
			(char)((domain[i] >= 'A' && domain[i] <= 'Z') ? domain[i] + 32 : domain[i]);
	d->len = (uint16_t)len;
	d->hash = hash;
	outbound_dest_configure(d);
	d->held = outbound_config_held(d->rule);
	list_init(&d->idle);
	list_node_init(&d->active_link);
	timer_init(&d->retry, outbound_retry_fire);
	list_insert_tail(outbound_bucket(ob, hash), &d->hash_link);
	if (++ob->ndests > ob->nbuckets)
		outbound_grow(ob);
	return d;
}

/* Nothing of it left here: no connection, no recipient, no timer. */
static void outbound_dest_maybe_free(struct outbound_dest *d)
{
	struct sched_counts counts;
	if (d->sessions > 0 || timer_armed(&d->retry) || list_linked(&d->active_link) ||
	    d->operator_said || /* an operator's word outlives its mail */
	    sched_counts(d->ob->queue, d->domain, d->len, &counts))
		return;
	if (d->route.state == ROUTE_RESOLVING)
		return; /* its lookups' end activates it */
	outbound_route_clear(d);
	list_remove(&d->hash_link);
	d->ob->ndests--;
	free(d);
}

void outbound_activate(struct outbound_dest *d)
{
	if (d->waiting) {
		list_remove(&d->active_link);
		d->waiting = false;
	}
	if (!list_linked(&d->active_link))
		list_insert_tail(&d->ob->active, &d->active_link);
}

/* The retry timer brought forward to now + ms (never pushed back: firing
 * early only looks again). */
static void outbound_wake_in(struct outbound_dest *d, uint64_t ms)
{
	struct worker *w = d->ob->worker;
	uint64_t tick = (w->now_ms + ms + TIMER_TICK_MS - 1) / TIMER_TICK_MS;
	if (timer_armed(&d->retry) && d->retry.expires_tick <= tick)
		return;
	timer_arm(&w->timers, &d->retry, w->now_ms, ms);
}

/* The retry timer at the earliest deferred recipient (or the end of a
 * down-mark, whichever is later). */
static void outbound_arm_retry(struct outbound_dest *d)
{
	struct outbound *ob = d->ob;
	struct sched_counts counts;
	if (!sched_counts(ob->queue, d->domain, d->len, &counts) ||
	    counts.next_due_ms == UINT64_MAX || d->held)
		return;
	uint64_t due = counts.next_due_ms;
	if (due < d->down_until_ms)
		due = d->down_until_ms;
	uint64_t now = ob->worker->now_ms;
	outbound_wake_in(d, due > now ? due - now : 0);
}

static void outbound_retry_fire(struct timer *t)
{
	struct outbound_dest *d = container_of(t, struct outbound_dest, retry);
	struct outbound *ob = d->ob;
	uint64_t now = ob->worker->now_ms;
	if (now < d->down_until_ms) {
		outbound_arm_retry(d);
		return;
	}
	sched_release_due(ob->queue, d->domain, d->len, now);
	struct sched_counts counts;
	if (sched_counts(ob->queue, d->domain, d->len, &counts) && counts.ready > 0)
		outbound_activate(d); /* released now, or waiting for a descriptor */
	outbound_arm_retry(d);
	outbound_dest_maybe_free(d);
}

/* ---- the store's hooks ------------------------------------------------------------ */

static bool outbound_hook_held(void *arg, const char *domain, size_t len)
{
	struct outbound *ob = arg;
	const struct outbound_dest *d = outbound_find(ob, domain, len, outbound_hash(domain, len));
	if (d != NULL) /* the config's, or what an operator said since */
		return d->held && d->flush_until_ms <= ob->worker->now_ms;
	return outbound_config_held(outbound_rule_for(ob->settings, domain, len));
}

static void outbound_hook_ready(void *arg, const char *domain, size_t len)
{
	struct outbound *ob = arg;
	struct outbound_dest *d = outbound_dest_get(ob, domain, len);
	if (d == NULL) {
		log_event(
			LOG_LEVEL_ERROR,
			"event=delivery_stalled note=\"out of memory; the recipients wait for the "
			"next retry or a restart\"");
		return;
	}
	outbound_activate(d);
}

bool outbound_domain_held(struct outbound *ob, const char *domain, size_t len)
{
	return outbound_hook_held(ob, domain, len);
}

void outbound_wake(struct outbound *ob, const char *domain, size_t len)
{
	outbound_hook_ready(ob, domain, len);
}

/* A message counts in its domain's quota from its first recipient for the
 * domain entering the queue to its last leaving it. */
void outbound_quota_add(struct outbound *ob, const struct queue_rcpt *r, int sign)
{
	size_t dlen;
	const char *domain = sched_rcpt_domain(r, &dlen);
	/* The rule, not a destination: these hooks make none. */
	const struct outbound_rule *found = outbound_rule_for(ob->settings, domain, dlen);
	if (found == NULL || !found->quota)
		return;
	bool counts = sign > 0 ? sched_rcpt_first_in_domain(r) : sched_rcpt_alone_in_domain(r);
	if (!counts)
		return;
	struct sched_message info;
	sched_rcpt_message(r, &info);
	/* The counters are shared; the rule is constant but for them. */
	struct outbound_rule *rule = (struct outbound_rule *)found;
	if (sign > 0) {
		atomic_fetch_add_explicit(&rule->messages, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&rule->bytes, info.size, memory_order_relaxed);
	} else {
		atomic_fetch_sub_explicit(&rule->messages, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&rule->bytes, info.size, memory_order_relaxed);
	}
}

static void outbound_hook_queued(void *arg, const struct queue_rcpt *r)
{
	outbound_quota_add(arg, r, +1);
}

static void outbound_hook_leaving(void *arg, const struct queue_rcpt *r)
{
	outbound_quota_add(arg, r, -1);
}

/* The store's hooks, quota counting only when some rule has a quota. */
void outbound_set_hooks(struct outbound *ob)
{
	bool quotas = ob->settings->quotas;
	struct sched_hooks hooks = {
		.held = outbound_hook_held,
		.ready = outbound_hook_ready,
		.queued = quotas ? outbound_hook_queued : NULL,
		.leaving = quotas ? outbound_hook_leaving : NULL,
		.ending = outbound_operator_ending,
		.arg = ob,
	};
	sched_set_hooks(ob->queue, &hooks);
}

/* ---- scheduling ---------------------------------------------------------------------- */

static void outbound_defer_ready(struct outbound_dest *d, const char *why);

/* An idle session of another destination connected to one of d's route
 * targets, or NULL. */
static struct outbound_session *outbound_shared_idle(struct outbound *ob,
						     const struct outbound_dest *d)
{
	for (struct list_node *n = ob->sessions.next; n != &ob->sessions; n = n->next) {
		struct outbound_session *sess = outbound_session_of_all_link(n);
		for (unsigned i = 0; i < d->route.count; i++)
			if (outbound_session_idle_at(sess, &d->route.targets[i].addr))
				return sess;
	}
	return NULL;
}

/* Give an active destination what connections it may have now. */
static void outbound_kick(struct outbound *ob, struct outbound_dest *d)
{
	const struct outbound_settings *s = ob->settings;
	struct sched_counts counts;
	if (!sched_counts(ob->queue, d->domain, d->len, &counts) || counts.ready == 0)
		return;
	uint64_t now = ob->worker->now_ms;
	if (now < d->down_until_ms) {
		/* The READY ones wait for the end of the mark. */
		outbound_defer_ready(d, "the destination is down after repeated connection "
					"failures");
		return;
	}
	if (!outbound_route_fresh(d, now)) {
		struct outbound_route *route = &d->route;
		if (route->state == ROUTE_NONE && outbound_route_resolve(d) != 0)
			outbound_defer_ready(d, "out of memory looking up the next hop");
		if (route->state != ROUTE_FAILED)
			return; /* outbound_route_done() activates it again */
		/* No route: what waits is deferred or, for good, failed. */
		struct queue_rcpt *r[64];
		size_t n;
		while ((n = sched_take_ready(ob->queue, d->domain, d->len, r, 64)) > 0)
			for (size_t i = 0; i < n; i++)
				outbound_outcome(d, r[i], route->code, route->status, route->reason,
						 "none");
		return;
	}
	/* Idle connections first, then new ones. */
	while (counts.ready > 0 && !list_empty(&d->idle)) {
		struct outbound_session *sess = outbound_session_of_idle_link(list_first(&d->idle));
		outbound_session_wake(sess);
		if (!sched_counts(ob->queue, d->domain, d->len, &counts))
			return;
	}
	uint32_t wanted = (counts.ready + s->rcpts_per_transaction - 1) / s->rcpts_per_transaction;
	/* Then idle connections of other domains to the same next hop:
	 * domains that share an MX share its connections. */
	while (wanted > 0 && d->sessions < d->concurrency) {
		struct outbound_session *shared = outbound_shared_idle(ob, d);
		if (shared == NULL)
			break;
		outbound_session_adopt(shared, d);
		wanted--;
		if (!sched_counts(ob->queue, d->domain, d->len, &counts))
			return;
		wanted = (counts.ready + s->rcpts_per_transaction - 1) / s->rcpts_per_transaction;
	}
	if (wanted > 0 && d->sessions < d->concurrency &&
	    ob->connections >= s->shared->max_connections && !d->waiting) {
		/* The worker's connections are all taken: the next to go
		 * wakes it (outbound_session_gone). */
		list_insert_tail(&ob->waiting, &d->active_link);
		d->waiting = true;
		return;
	}
	while (counts.ready > 0 && wanted > 0 && d->sessions < d->concurrency &&
	       ob->connections < s->shared->max_connections) {
		const struct outbound_target *t = &d->route.targets[d->next_hop % d->route.count];
		int r = outbound_session_start(d, t);
		if (r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == -ENOBUFS) {
			/* Ours, not the destination's: tried again in a second. */
			log_event(LOG_LEVEL_WARN,
				  "event=outbound_unavailable domain=%s error=\"%s\"", d->domain,
				  strerror(-r));
			outbound_wake_in(d, 1000);
			return;
		}
		if (r != 0) {
			char why[300];
			snprintf(why, sizeof(why), "cannot connect to %s: %s", t->host,
				 strerror(-r));
			outbound_connect_result(d, false, false, why);
			if (d->sessions == 0)
				outbound_wake_in(d, 1000); /* the next address, in a moment */
			return;
		}
		d->sessions++;
		ob->connections++;
		wanted--;
	}
}

void outbound_run(struct outbound *ob)
{
	if (!ob->running)
		return; /* until every worker has started (the service's ready) */
	/* Each destination once per turn, in turn: none starves another. */
	struct list_node batch;
	list_init(&batch);
	list_splice_tail(&batch, &ob->active);
	while (!list_empty(&batch)) {
		struct outbound_dest *d =
			container_of(list_first(&batch), struct outbound_dest, active_link);
		list_remove(&d->active_link);
		if (ob->draining)
			continue;
		outbound_kick(ob, d);
		outbound_dest_maybe_free(d);
	}
	/* Made active again during the run (a route found at once): the
	 * next turn must come without waiting for a completion. */
	if (!list_empty(&ob->active) && !timer_armed(&ob->kick_timer))
		timer_arm(&ob->worker->timers, &ob->kick_timer, ob->worker->now_ms, 0);
}

size_t outbound_take(struct outbound_dest *d, struct queue_rcpt **out, size_t max)
{
	/* A held domain's READY recipients were flushed: they go too. */
	if (d->ob->draining)
		return 0;
	size_t n = sched_take_message(d->ob->queue, d->domain, d->len, out, max);
	/* More waiting than this connection takes at once: the destination
	 * may open more, up to its concurrency (the store wakes delivery
	 * only when READY work appears where there was none). */
	struct sched_counts counts;
	if (n > 0 && d->sessions < d->concurrency &&
	    sched_counts(d->ob->queue, d->domain, d->len, &counts) && counts.ready > 0)
		outbound_activate(d);
	return n;
}

/* ---- outcomes ------------------------------------------------------------------------- */

static uint64_t outbound_backoff_ms(const struct outbound_settings *s, uint32_t attempts)
{
	uint64_t ms = s->retry_initial_ms;
	for (uint32_t i = 1; i < attempts && ms < s->retry_max_ms; i++)
		ms *= s->retry_factor;
	return ms < s->retry_max_ms ? ms : s->retry_max_ms;
}

void outbound_outcome(struct outbound_dest *d, struct queue_rcpt *r, int code, const char *status,
		      const char *reply, const char *relay)
{
	struct outbound *ob = d->ob;
	const struct outbound_settings *s = ob->settings;
	struct sched_message info;
	sched_rcpt_message(r, &info);
	size_t alen;
	const char *address = sched_rcpt_address(r, &alen);
	int64_t age_ms = worker_wall_ms() - info.arrival_ms;
	uint32_t lifetime = d->rule != NULL && d->rule->domain->queue_lifetime_ms
				    ? d->rule->domain->queue_lifetime_ms
				    : s->lifetime_ms;
	char reason[300];
	if (status == NULL)
		status = "";
	if (code != 0)
		snprintf(reason, sizeof(reason), "%d%s%s %s", code, status[0] ? " " : "", status,
			 reply);
	else /* no reply: what broke, with the status it stands for */
		snprintf(reason, sizeof(reason), "%s%s%s", status, status[0] ? " " : "", reply);
	enum outbound_result result = OUTBOUND_DEFERRED;
	if (code >= 200 && code < 300)
		result = OUTBOUND_SENT;
	else if (code >= 500)
		result = OUTBOUND_BOUNCED;
	else if (age_ms >= (int64_t)lifetime)
		result = OUTBOUND_EXPIRED;
	ob->outcomes[result]++;
	if (result == OUTBOUND_SENT)
		outbound_observe_delay(ob, (double)age_ms / 1000.0);
	static const char *const names[] = {"sent", "bounced", "expired", "deferred"};
	/* Logged first: the outcome may end the message, and its strings. */
	log_event(LOG_LEVEL_INFO,
		  "event=delivery queue_id=%s rcpt=%.*s relay=%s delay=%.3fs status=%s code=%d "
		  "reply=\"%s\"",
		  info.id, (int)alen, address, relay, (double)age_ms / 1000.0, names[result], code,
		  reason);
	switch (result) {
	case OUTBOUND_SENT:
		sched_finish(ob->queue, r, QUEUE_DELIVERED, reason);
		break;
	case OUTBOUND_BOUNCED:
	case OUTBOUND_EXPIRED: {
		/* The remote MTA named in the DSN: the host part of the relay. */
		char host[CONFIG_HOSTNAME_MAX + 1] = "";
		if (code != 0 && strcmp(relay, "none") != 0)
			snprintf(host, sizeof(host), "%.*s", (int)strcspn(relay, "["), relay);
		if (result == OUTBOUND_EXPIRED) {
			char expired[sizeof(reason) + 64];
			snprintf(expired, sizeof(expired),
				 "delivery time expired after %us in the queue; the last attempt "
				 "said: %s",
				 lifetime / 1000, reason);
			bounce_add(ob->bounces, r, "4.4.7", expired, NULL);
		} else {
			bounce_add(ob->bounces, r, NULL, reason, host[0] ? host : NULL);
		}
		break;
	}
	case OUTBOUND_DEFERRED: {
		uint64_t until =
			ob->worker->now_ms + outbound_backoff_ms(s, sched_rcpt_attempts(r) + 1);
		if (until < d->down_until_ms)
			until = d->down_until_ms;
		sched_defer(ob->queue, r, until, reason);
		outbound_arm_retry(d);
		break;
	}
	}
}

/* Every READY recipient of d is deferred with `why` (no connection could
 * take them). */
static void outbound_defer_ready(struct outbound_dest *d, const char *why)
{
	struct outbound *ob = d->ob;
	struct queue_rcpt *r[64];
	size_t n;
	while ((n = sched_take_ready(ob->queue, d->domain, d->len, r, 64)) > 0)
		for (size_t i = 0; i < n; i++)
			outbound_outcome(d, r[i], 0, "4.4.1", why, "none");
}

void outbound_connect_result(struct outbound_dest *d, bool ok, bool from_session, const char *why)
{
	const struct outbound_settings *s = d->ob->settings;
	if (ok)
		d->ob->connections_made++;
	else
		d->ob->connections_failed++;
	if (ok) {
		d->failures = 0;
		d->round_failures = 0;
		return;
	}
	if (from_session)
		d->failing++;
	d->failures++;
	d->round_failures++;
	if (d->route.count > 1)
		d->next_hop++; /* the next connection tries the next address */
	log_event(LOG_LEVEL_WARN, "event=connect_failed domain=%s failures=%u reason=\"%s\"",
		  d->domain, d->failures, why);
	/* Every hop failed once, and no connection of d's is left to take
	 * its mail: what waits is deferred (one attempt each), not tried
	 * again at once. Enough such failures in a row mark d down. */
	unsigned hops = d->route.count > 0 ? d->route.count : 1;
	if (d->round_failures < hops || d->sessions > d->failing)
		return; /* another address to try, or a connection that works */
	d->round_failures = 0;
	if (d->failures >= s->destination_failures) {
		d->down_until_ms = d->ob->worker->now_ms + s->destination_backoff_ms;
		d->failures = 0;
		log_event(LOG_LEVEL_WARN, "event=destination_down domain=%s for=%us reason=\"%s\"",
			  d->domain, s->destination_backoff_ms / 1000, why);
	}
	outbound_defer_ready(d, why);
}

void outbound_route_done(struct outbound_dest *d)
{
	d->next_hop = 0;
	outbound_activate(d);
}

void outbound_session_gone(struct outbound_dest *d, bool failed)
{
	struct outbound *ob = d->ob;
	d->sessions--;
	d->failing -= failed;
	ob->connections--;
	/* It may open another (the next hop, after a failure), and so may
	 * those that waited for a free connection. */
	outbound_activate(d);
	while (!list_empty(&ob->waiting)) {
		struct outbound_dest *w =
			container_of(list_first(&ob->waiting), struct outbound_dest, active_link);
		outbound_activate(w);
	}
}

struct outbound_rider_walk {
	struct outbound *ob;
	const union dns_address *target;
	uint64_t now;
	struct outbound_dest **dests; /* each accepted rider's, in the order taken */
	size_t accepted;
};

/* May a recipient of `domain` ride to target? Its destination is known
 * here, not held, not down, with a route through that address. */
static bool outbound_rider_accept(void *arg, const char *domain, size_t len)
{
	struct outbound_rider_walk *w = arg;
	struct outbound_dest *d = outbound_find(w->ob, domain, len, outbound_hash(domain, len));
	if (d == NULL || d->held || w->now < d->down_until_ms || !outbound_route_fresh(d, w->now))
		return false;
	for (unsigned i = 0; i < d->route.count; i++)
		if (dns_address_equal(&d->route.targets[i].addr, w->target)) {
			w->dests[w->accepted++] = d; /* accepted: sched takes it now */
			return true;
		}
	return false;
}

size_t outbound_take_riders(struct outbound_dest *d, const struct queue_rcpt *r,
			    const union dns_address *target, struct queue_rcpt **out,
			    struct outbound_dest **dests, size_t max)
{
	struct outbound *ob = d->ob;
	if (max == 0 || ob->draining)
		return 0;
	struct outbound_rider_walk w = {ob, target, ob->worker->now_ms, dests, 0};
	size_t n = sched_take_siblings(ob->queue, r, outbound_rider_accept, &w, out, max);
	CHECK(w.accepted == n);
	return n;
}

struct outbound_dest *outbound_dest_of(struct outbound *ob, const struct queue_rcpt *r)
{
	size_t len;
	const char *domain = sched_rcpt_domain(r, &len);
	return outbound_find(ob, domain, len, outbound_hash(domain, len));
}

void outbound_settle(struct outbound_dest *const *dests, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		bool seen = dests[i] == NULL;
		for (size_t k = 0; k < i && !seen; k++)
			seen = dests[k] == dests[i]; /* settled already, maybe freed */
		if (!seen && !list_linked(&dests[i]->active_link))
			outbound_dest_maybe_free(dests[i]);
	}
}

void outbound_session_from(struct outbound_dest *d)
{
	outbound_activate(d); /* the next run frees it if nothing is left */
}

void outbound_defer(struct outbound *ob, struct queue_rcpt *r, const char *reason)
{
	struct outbound_dest *d = outbound_dest_of(ob, r);
	uint64_t wait = outbound_backoff_ms(ob->settings, sched_rcpt_attempts(r) + 1);
	sched_defer(ob->queue, r, ob->worker->now_ms + wait, reason);
	ob->outcomes[OUTBOUND_DEFERRED]++;
	if (d != NULL)
		outbound_arm_retry(d);
	else
		log_event(LOG_LEVEL_WARN,
			  "event=retry_unscheduled queue_id=%s note=\"tried again at the next "
			  "flush or restart\"",
			  sched_rcpt_message_id(r));
}

/* ---- operator's and ETRN's moves ------------------------------------------------------ */

struct outbound *outbound_of_worker(const struct outbound_shared *sh, unsigned index)
{
	return index < sh->nworkers ? sh->workers[index] : NULL;
}

unsigned outbound_flush(struct outbound *ob, const char *domain, size_t len)
{
	unsigned moved = sched_flush(ob->queue, domain, len);
	struct outbound_dest *d = outbound_find(ob, domain, len, outbound_hash(domain, len));
	if (d == NULL && moved > 0)
		d = outbound_dest_get(ob, domain, len);
	if (d == NULL)
		return moved;
	d->down_until_ms = 0;
	d->failures = d->round_failures = 0;
	if (timer_armed(&d->retry))
		timer_cancel(&ob->worker->timers, &d->retry);
	outbound_activate(d);
	return moved;
}

unsigned outbound_etrn_flush(struct outbound *ob, const char *domain, size_t len,
			     uint32_t window_ms, bool *joined)
{
	uint64_t hash = outbound_hash(domain, len);
	struct outbound_dest *d = outbound_find(ob, domain, len, hash);
	struct sched_counts counts;
	/* Running: within its window, and still delivering (what is left
	 * only deferred, the site refused it: a new ETRN tries again). */
	*joined = d != NULL && d->flush_until_ms > ob->worker->now_ms &&
		  (d->sessions > 0 || d->route.state == ROUTE_RESOLVING ||
		   (sched_counts(ob->queue, domain, len, &counts) &&
		    counts.ready + counts.inflight > 0));
	if (*joined)
		return 0;
	unsigned moved = outbound_flush(ob, domain, len);
	d = outbound_find(ob, domain, len, hash);
	if (d != NULL)
		d->flush_until_ms = ob->worker->now_ms + window_ms;
	return moved;
}

struct outbound_flush_walk {
	struct outbound *ob;
	unsigned moved;
};

static bool outbound_flush_visit(void *arg, const char *domain, size_t len,
				 const struct sched_counts *counts)
{
	struct outbound_flush_walk *fw = arg;
	if (counts->deferred + counts->held > 0)
		fw->moved += outbound_flush(fw->ob, domain, len);
	return true;
}

unsigned outbound_flush_all(struct outbound *ob)
{
	struct outbound_flush_walk fw = {ob, 0};
	sched_foreach(ob->queue, outbound_flush_visit, &fw);
	return fw.moved;
}

int outbound_hold(struct outbound *ob, const char *domain, size_t len, bool hold)
{
	struct outbound_dest *d = outbound_dest_get(ob, domain, len);
	if (d == NULL)
		return -ENOMEM;
	d->held = hold;
	d->operator_said = true;
	int moved = hold ? (int)sched_hold(ob->queue, domain, len)
			 : (int)outbound_flush(ob, domain, len);
	log_event(LOG_LEVEL_INFO, "event=%s domain=%s recipients=%d", hold ? "hold" : "release",
		  d->domain, moved);
	outbound_dest_maybe_free(d);
	return moved;
}
