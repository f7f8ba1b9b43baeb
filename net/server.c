#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/address.h"
#include "net/client_limit.h"
#include "net/client_rate.h"
#include "net/inbound_session.h"
#include "net/listener.h"
#include "queue/queue.h"

_Static_assert(CONFIG_MAX_RECIPIENTS + SMTP_MAX_PARAMS <= QUEUE_MAX_ENVELOPE_ITEMS,
	       "every envelope the configuration allows can be stored");

/* ---- per-client connection counts: net/client_limit ----------------------- */

void net_server_release(struct net_server *srv, bool counted, uint32_t client_slot,
			const struct sockaddr *peer)
{
	if (client_slot != CLIENT_LIMIT_NO_SLOT)
		client_limit_release(srv->clients, peer, client_slot);
	if (counted)
		atomic_fetch_sub(&srv->connections, 1);
}

/* ---- per-client connection rate: net/client_rate ----------------------------- */

/* Trusted clients (your own submission hosts, which may burst) are not
 * rate limited, as Postfix exempts $mynetworks from anvil's limits. */
static bool net_server_rate_admits(struct net_worker *nw, const struct sockaddr *peer,
				   uint64_t now_ms)
{
	struct net_server *srv = nw->server;
	return srv->rates == NULL || policy_client_trusted(&nw->gen->inbound->policy, peer) ||
	       client_rate_admit(srv->rates, peer, now_ms);
}

/* ---- accept ------------------------------------------------------------------ */

void net_worker_accept(struct net_worker *nw, int fd)
{
	struct net_server *srv = nw->server;
	const struct net_refusals *refusals = &nw->gen->inbound->refusals;
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) != 0) {
		close(fd); /* already reset by the client */
		return;
	}
	const char *refusal = NULL;
	enum net_refusal why = NET_NREFUSALS;
	bool counted = false;
	uint32_t slot = CLIENT_LIMIT_NO_SLOT;
	nw->accepted++;
	if (nw->worker->shutting_down) {
		refusal = refusals->shutting_down;
		why = NET_REFUSED_SHUTTING_DOWN;
	} else if (!net_server_rate_admits(nw, (struct sockaddr *)&peer, nw->worker->now_ms)) {
		refusal = refusals->too_fast;
		why = NET_REFUSED_RATE;
	} else if (atomic_fetch_add(&srv->connections, 1) >= nw->gen->cfg.max_connections) {
		atomic_fetch_sub(&srv->connections, 1);
		refusal = refusals->too_many;
		why = NET_REFUSED_MAX_CONNECTIONS;
	} else {
		counted = true;
		if (!client_limit_acquire(srv->clients, (struct sockaddr *)&peer, &slot)) {
			refusal = refusals->too_many_from_client;
			why = NET_REFUSED_PER_CLIENT;
		}
	}
	if (why != NET_NREFUSALS)
		nw->refused[why]++;
	inbound_session_start(nw, fd, (struct sockaddr *)&peer, peer_len, refusal, counted, slot);
}

void net_worker_session_added(struct net_worker *nw, struct inbound_session *s)
{
	list_insert_tail(&nw->sessions, &s->link);
	nw->nsessions++;
}

void net_worker_session_removed(struct net_worker *nw, struct inbound_session *s)
{
	list_remove(&s->link);
	nw->nsessions--;
}

/* ---- the inbound service on each worker ------------------------------------ */

static int net_inbound_start(struct worker *w, void *arg, void **state)
{
	struct net_generation *gen = arg;
	struct net_server *srv = gen->rt->inbound;
	const struct config *cfg = &gen->cfg;
	struct net_worker *nw = calloc(1, sizeof(*nw));
	if (nw == NULL)
		return -ENOMEM;
	*state = nw;
	nw->server = srv;
	nw->gen = net_generation_hold(gen);
	nw->worker = w;
	list_init(&nw->sessions);
	nw->index = w->index;
	nw->queue = queue_store_queue(srv->store, w->index);
	if (nw->queue == NULL || queue_worker(nw->queue) != w) {
		snprintf(w->error, sizeof(w->error),
			 "worker %u: inbound SMTP needs the store's service started first",
			 w->index);
		return -EINVAL;
	}
	nw->listeners = calloc(cfg->nlisten, sizeof(*nw->listeners));
	if (nw->listeners == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < cfg->nlisten; i++) {
		int r = listener_open(&nw->listeners[i], nw, &cfg->listen[i],
				      (int)cfg->listen_backlog, w->error, sizeof(w->error));
		if (r != 0)
			return r;
		nw->nlisteners++;
	}
	return 0;
}

/* Every worker runs its part of the store: sessions may start. Until now
 * the sockets listened (clients waited in the backlog). */
static void net_inbound_ready(struct worker *w, void *state)
{
	struct net_worker *nw = state;
	(void)w;
	for (unsigned i = 0; i < nw->nlisteners; i++)
		listener_arm(&nw->listeners[i]); /* not once closed by a shutdown */
}

static void net_inbound_deadline(struct timer *t)
{
	struct net_worker *nw = container_of(t, struct net_worker, shutdown_timer);
	nw->shutdown_deadline_passed = true;
	struct inbound_session *s, *next;
	list_for_each_entry_safe(s, next, &nw->sessions, link)
	{
		inbound_session_force_close(s);
	}
}

static void net_inbound_drain(struct worker *w, void *state)
{
	struct net_worker *nw = state;
	for (unsigned i = 0; i < nw->nlisteners; i++)
		listener_close(&nw->listeners[i]);
	log_event(LOG_LEVEL_INFO, "event=shutdown worker=%u sessions=%u", w->index, nw->nsessions);
	struct inbound_session *s, *next;
	list_for_each_entry_safe(s, next, &nw->sessions, link)
	{
		inbound_session_shutdown(s);
	}
	timer_init(&nw->shutdown_timer, net_inbound_deadline);
	timer_arm(&w->timers, &nw->shutdown_timer, w->now_ms, nw->gen->cfg.shutdown_timeout_ms);
}

static bool net_inbound_idle(struct worker *w, void *state)
{
	struct net_worker *nw = state;
	(void)w;
	return nw->nsessions == 0;
}

static void net_inbound_stop(struct worker *w, void *state)
{
	struct net_worker *nw = state;
	if (nw == NULL)
		return;
	for (unsigned i = 0; i < nw->nlisteners; i++)
		listener_close(&nw->listeners[i]);
	if (timer_armed(&nw->shutdown_timer))
		timer_cancel(&w->timers, &nw->shutdown_timer);
	free(nw->listeners);
	net_generation_drop(nw->gen);
	free(nw);
}

/* A reload: sessions from now on start with the new generation; those
 * open keep theirs. */
static void net_inbound_reconfigure(struct worker *w, void *state, void *arg)
{
	struct net_worker *nw = state;
	(void)w;
	struct net_generation *old = nw->gen;
	nw->gen = net_generation_hold(arg);
	net_generation_drop(old);
}

static const struct metric_family net_accepted = {
	"ferry_connections_accepted_total",
	"SMTP connections accepted from the kernel (those then refused included).",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family net_active = {"ferry_connections_active",
						"Inbound SMTP sessions open now.",
						METRIC_GAUGE,
						METRIC_SUM,
						NULL,
						0};
static const struct metric_family net_refused = {
	"ferry_connections_refused_total",
	"SMTP connections refused with a 421 before the banner, by the limit that refused them.",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family net_received = {"ferry_messages_received_total",
						  "Messages accepted: on disk, 250 sent.",
						  METRIC_COUNTER,
						  METRIC_SUM,
						  NULL,
						  0};
static const struct metric_family net_messages_refused = {
	"ferry_messages_refused_total",
	"Messages refused (to MAIL, DATA or the end of DATA), by reply code.",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family net_recipients_refused = {
	"ferry_recipients_refused_total",
	"Recipients refused at RCPT, by reply code.",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};

static const struct metric_family net_generation = {
	"ferry_config_generation",
	"The configuration generation running: 1 at start, one more at each accepted reload.",
	METRIC_GAUGE,
	METRIC_MAX,
	NULL,
	0};
static const struct metric_family net_reload_ok = {
	"ferry_config_last_reload_successful",
	"0 when the last reload was refused (the file was bad, or changed a restart-only key); "
	"else 1.",
	METRIC_GAUGE,
	METRIC_MAX,
	NULL,
	0};

static void net_inbound_metrics(struct worker *w, void *state, struct metrics *out)
{
	(void)w;
	const struct net_worker *nw = state;
	metrics_add(out, &net_generation, NULL, (double)nw->gen->number);
	metrics_add(out, &net_reload_ok, NULL, atomic_load(&nw->server->last_reload_ok));
	static const char *const reasons[NET_NREFUSALS] = {
		[NET_REFUSED_SHUTTING_DOWN] = "shutting_down",
		[NET_REFUSED_RATE] = "rate_per_client",
		[NET_REFUSED_MAX_CONNECTIONS] = "max_connections",
		[NET_REFUSED_PER_CLIENT] = "per_client",
	};
	char labels[48];
	metrics_add(out, &net_accepted, NULL, (double)nw->accepted);
	metrics_add(out, &net_active, NULL, nw->nsessions);
	for (unsigned i = 0; i < NET_NREFUSALS; i++) {
		snprintf(labels, sizeof(labels), "reason=\"%s\"", reasons[i]);
		metrics_add(out, &net_refused, labels, (double)nw->refused[i]);
	}
	metrics_add(out, &net_received, NULL, (double)nw->smtp.messages_received);
	/* The codes ferry sends shown from the start (a rate needs a series
	 * before its first increase); any other only once it happened. */
	static const unsigned usual[] = {421, 450, 451, 452, 500, 501, 503, 550, 552, 554};
	for (unsigned i = 0; i < SMTP_CODES; i++) {
		bool shown = false;
		for (size_t k = 0; k < sizeof(usual) / sizeof(usual[0]); k++)
			shown = shown || usual[k] == 400 + i;
		snprintf(labels, sizeof(labels), "code=\"%u\"", 400 + i);
		if (shown || nw->smtp.messages_refused[i] > 0)
			metrics_add(out, &net_messages_refused, labels,
				    (double)nw->smtp.messages_refused[i]);
		if (shown || nw->smtp.recipients_refused[i] > 0)
			metrics_add(out, &net_recipients_refused, labels,
				    (double)nw->smtp.recipients_refused[i]);
	}
}

const struct worker_service net_inbound_service = {
	.metrics = net_inbound_metrics,
	.name = "smtp-inbound",
	.start = net_inbound_start,
	.ready = net_inbound_ready,
	.drain = net_inbound_drain,
	.idle = net_inbound_idle,
	.stop = net_inbound_stop,
	.reconfigure = net_inbound_reconfigure,
};

/* ---- the server ------------------------------------------------------------ */

int net_inbound_conf_create(struct net_inbound_conf **out, const struct config *cfg, char *err,
			    size_t err_size)
{
	*out = NULL;
	struct net_inbound_conf *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	c->cfg = cfg;
	size_t nnet = cfg->trusted_networks.count, ndom = cfg->relay_domains.count;
	c->networks = calloc(nnet ? nnet : 1, sizeof(*c->networks));
	c->domains = calloc(ndom ? ndom : 1, sizeof(*c->domains));
	if (c->networks == NULL || c->domains == NULL) {
		snprintf(err, err_size, "out of memory");
		net_inbound_conf_free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nnet; i++) {
		const struct config_item *item = &cfg->trusted_networks.items[i];
		if (policy_parse_network(item->value, &c->networks[i]) != 0) {
			config_error_at(cfg, item, "trusted_networks",
					"not a network (e.g. 192.0.2.0/24, 2001:db8::/32, "
					"without host bits)",
					err, err_size);
			net_inbound_conf_free(c);
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < ndom; i++) {
		const struct config_item *item = &cfg->relay_domains.items[i];
		const char *d = item->value;
		const char *check = d[0] == '.' ? d + 1 : d;
		char lower[ADDRESS_DOMAIN_MAX + 2];
		if (!address_domain_valid(check, strlen(check), false) ||
		    address_domain_lower(lower, sizeof(lower), d, strlen(d)) < 0) {
			config_error_at(cfg, item, "relay_domains",
					"not a domain name (e.g. example.com, or .example.com "
					"for its subdomains)",
					err, err_size);
			net_inbound_conf_free(c);
			return -EINVAL;
		}
		c->domains[i] = strdup(lower);
		if (c->domains[i] == NULL) {
			snprintf(err, err_size, "out of memory");
			net_inbound_conf_free(c);
			return -ENOMEM;
		}
		c->ndomains = i + 1;
	}
	if (policy_domains_build(&c->policy.relay_domains, (const char *const *)c->domains, ndom) !=
	    0) {
		snprintf(err, err_size, "out of memory");
		net_inbound_conf_free(c);
		return -ENOMEM;
	}
	/* It goes into every greeting and reply: a typo (or a '#' comment
	 * after it, which is part of the value) must not. */
	if (!address_domain_valid(cfg->hostname, strlen(cfg->hostname), false)) {
		snprintf(err, err_size,
			 "%s: key 'hostname': not a host name (e.g. mx1.isp.example): '%s'",
			 cfg->source, cfg->hostname);
		net_inbound_conf_free(c);
		return -EINVAL;
	}
	struct mailbox postmaster;
	if (address_parse_path(cfg->postmaster, strlen(cfg->postmaster), false, &postmaster) !=
		    ADDRESS_OK ||
	    postmaster.source_route) {
		snprintf(err, err_size,
			 "%s: key 'postmaster': not a mail address (e.g. postmaster@isp.example; "
			 "the default is postmaster@ and the host name): '%s'",
			 cfg->source, cfg->postmaster);
		net_inbound_conf_free(c);
		return -EINVAL;
	}
	struct net_refusals *refusals = &c->refusals;
	snprintf(refusals->shutting_down, sizeof(refusals->shutting_down),
		 "421 4.3.2 %s Service shutting down", cfg->hostname);
	snprintf(refusals->too_many, sizeof(refusals->too_many),
		 "421 4.7.0 %s Too many connections, try again later", cfg->hostname);
	snprintf(refusals->too_many_from_client, sizeof(refusals->too_many_from_client),
		 "421 4.7.0 %s Too many connections from your address, try again later",
		 cfg->hostname);
	snprintf(refusals->too_fast, sizeof(refusals->too_fast),
		 "421 4.7.0 %s Error: too many connections from your address, slow down",
		 cfg->hostname);
	c->policy.trusted = c->networks;
	c->policy.ntrusted = nnet;
	c->settings = (struct smtp_settings){
		.hostname = cfg->hostname,
		.max_command_line = cfg->max_command_line,
		.max_text_line = cfg->max_text_line,
		.max_message_size = cfg->max_message_size,
		.max_recipients = cfg->max_recipients,
		.recipient_overshoot = cfg->recipient_overshoot,
		.max_errors = cfg->max_errors,
		.max_commands = cfg->max_commands_per_session,
		.max_messages = cfg->max_messages_per_session,
		.policy = &c->policy,
		.postmaster = cfg->postmaster,
		.max_received_headers = cfg->max_received_headers,
	};
	*out = c;
	return 0;
}

void net_inbound_conf_free(struct net_inbound_conf *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->ndomains; i++)
		free(c->domains[i]);
	free(c->domains);
	policy_domains_free(c->policy.relay_domains);
	free(c->networks);
	free(c);
}

int net_server_create(struct net_server **out, const struct config *cfg, char *err, size_t err_size)
{
	struct net_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL ||
	    client_limit_create(&srv->clients, cfg->max_connections_per_client,
				cfg->max_connections) != 0 ||
	    (cfg->max_connection_rate_per_client > 0 &&
	     client_rate_create(&srv->rates, cfg->max_connection_rate_per_client,
				cfg->max_connections) != 0)) {
		snprintf(err, err_size, "out of memory");
		net_server_destroy(srv);
		return -ENOMEM;
	}
	atomic_init(&srv->connections, 0);
	atomic_init(&srv->last_reload_ok, 1);
	*out = srv;
	return 0;
}

void net_server_destroy(struct net_server *srv)
{
	if (srv == NULL)
		return;
	client_limit_destroy(srv->clients);
	client_rate_destroy(srv->rates);
	free(srv);
}
