/*
 * outbound_route — a destination's next hops into addresses
 * (outbound_route.h).
 */
#include "net/outbound_route.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"
#include "net/mx.h"
#include "net/outbound.h"

/* One lookup after another, hop by hop. */
struct route_job {
	struct outbound_dest *d;
	struct dns_query *query;
	const struct nexthop *hops;
	unsigned nhops, hop;
	struct nexthop implicit; /* no transport: the domain's MX */
	/* The MX hosts of the hop being resolved, looked up one by one. */
	struct mx_route mx;
	unsigned mx_next;
	bool in_mx;
	uint16_t port;
	bool looped; /* an MX pointed back at this relay */
	/* The last failure, for when nothing is found. */
	int code;
	const char *status;
	char reason[384];
};

static void route_step(struct route_job *job);

static void route_fail(struct route_job *job, int code, const char *status, const char *reason)
{
	job->code = code;
	job->status = status;
	snprintf(job->reason, sizeof(job->reason), "%s", reason);
}

static void route_add(struct route_job *job, const char *host, const union dns_address *addr)
{
	struct outbound_route *r = &job->d->route;
	if (r->count == OUTBOUND_ROUTE_TARGETS)
		return;
	char *copy = strdup(host);
	if (copy == NULL)
		return;
	r->targets[r->count].host = copy;
	r->targets[r->count].addr = *addr;
	r->count++;
}

static void route_targets_free(struct outbound_route *r)
{
	for (unsigned i = 0; i < r->count; i++)
		free(r->targets[i].host);
	r->count = 0;
}

/* Every hop looked at: the route is what was found. */
static void route_done(struct route_job *job)
{
	struct outbound_dest *d = job->d;
	struct outbound_route *r = &d->route;
	uint64_t now = d->ob->worker->now_ms;
	r->job = NULL;
	r->expires_ms = now + OUTBOUND_ROUTE_TTL_MS;
	if (r->count > 0) {
		r->state = ROUTE_READY;
	} else {
		r->state = ROUTE_FAILED;
		if (job->code == 0) {
			if (job->looped)
				route_fail(job, 554, "5.4.6",
					   "mail for this domain loops back to myself (an MX host "
					   "is this relay)");
			else
				route_fail(job, 451, "4.4.3", "no address found for the next hop");
		}
		r->code = job->code;
		r->status = job->status;
		snprintf(r->reason, sizeof(r->reason), "%s", job->reason);
		log_event(LOG_LEVEL_WARN, "event=route_failed domain=%s code=%d reason=\"%s\"",
			  d->domain, r->code, r->reason);
	}
	free(job);
	outbound_route_done(d);
}

static void route_host_done(void *arg, const struct dns_host_result *res)
{
	struct route_job *job = arg;
	const struct outbound_settings *s = job->d->ob->settings;
	const char *host =
		job->in_mx ? job->mx.hosts[job->mx_next - 1].host : job->hops[job->hop - 1].host;
	job->query = NULL;
	if (res->status != DNS_OK) {
		char why[384];
		snprintf(why, sizeof(why), "%s: %s", host, res->reason);
		route_fail(job, 451, "4.4.3", why);
	}
	for (unsigned i = 0; i < res->count; i++) {
		if (job->in_mx && mx_address_is_self(&res->addr[i].sa, s->listen, s->nlisten,
						     s->local, s->nlocal)) {
			job->looped = true;
			continue;
		}
		route_add(job, host, &res->addr[i]);
	}
	route_step(job);
}

static void route_mx_done(void *arg, const struct dns_mx_result *res)
{
	struct route_job *job = arg;
	const struct outbound_settings *s = job->d->ob->settings;
	const struct nexthop *hop = &job->hops[job->hop];
	job->query = NULL;
	job->hop++;
	enum mx_verdict v = mx_route(res, hop->host, s->helo_name, &job->mx);
	if (v == MX_ROUTE_HOSTS) {
		job->in_mx = true;
		job->mx_next = 0;
		job->port = hop->port;
	} else {
		route_fail(job, job->mx.code, job->mx.status, job->mx.reason);
	}
	route_step(job);
}

/* Start the next lookup, or finish. */
static void route_step(struct route_job *job)
{
	struct outbound *ob = job->d->ob;
	for (;;) {
		int r;
		if (job->in_mx) {
			if (job->mx_next == job->mx.count) {
				job->in_mx = false;
				continue;
			}
			const char *host = job->mx.hosts[job->mx_next++].host;
			r = dns_lookup_host(ob->dns, host, job->port, route_host_done, job,
					    &job->query);
		} else {
			if (job->hop == job->nhops) {
				route_done(job);
				return;
			}
			const struct nexthop *hop = &job->hops[job->hop];
			if (hop->literal) {
				union dns_address a;
				memcpy(&a, &hop->addr, hop->addr_len);
				route_add(job, hop->host, &a);
				job->hop++;
				continue;
			}
			if (hop->mx_lookup) {
				r = dns_lookup_mx(ob->dns, hop->host, route_mx_done, job,
						  &job->query);
				if (r != 0)
					job->hop++; /* route_mx_done moves on when it runs */
			} else {
				job->hop++;
				r = dns_lookup_host(ob->dns, hop->host, hop->port, route_host_done,
						    job, &job->query);
			}
		}
		if (r == 0)
			return;
		route_fail(job, 451, "4.4.3", "the next hop's name could not be looked up");
	}
}

int outbound_route_resolve(struct outbound_dest *d)
{
	struct route_job *job = calloc(1, sizeof(*job));
	if (job == NULL)
		return -ENOMEM;
	job->d = d;
	route_targets_free(&d->route);
	if (d->hops != NULL) {
		job->hops = d->hops->hops;
		job->nhops = d->hops->count;
	} else {
		snprintf(job->implicit.host, sizeof(job->implicit.host), "%s", d->domain);
		job->implicit.port = d->ob->settings->smtp_port;
		job->implicit.mx_lookup = true;
		job->hops = &job->implicit;
		job->nhops = 1;
	}
	d->route.state = ROUTE_RESOLVING;
	d->route.job = job;
	route_step(job);
	return 0;
}

bool outbound_route_fresh(struct outbound_dest *d, uint64_t now_ms)
{
	struct outbound_route *r = &d->route;
	if ((r->state == ROUTE_READY || r->state == ROUTE_FAILED) && now_ms >= r->expires_ms) {
		route_targets_free(r);
		r->state = ROUTE_NONE;
	}
	return r->state == ROUTE_READY;
}

void outbound_route_clear(struct outbound_dest *d)
{
	struct outbound_route *r = &d->route;
	if (r->job != NULL) {
		if (r->job->query != NULL)
			dns_cancel(r->job->query);
		free(r->job);
		r->job = NULL;
	}
	route_targets_free(r);
	r->state = ROUTE_NONE;
}
