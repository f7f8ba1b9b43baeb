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
#include "net/address.h"
#include "net/conn.h"
#include "net/listener.h"
#include "queue/queue.h"

_Static_assert(CONFIG_MAX_RECIPIENTS + SMTP_MAX_PARAMS <= QUEUE_MAX_ENVELOPE_ITEMS,
	       "every envelope the configuration allows can be stored");

/* ---- per-client connection counts ----------------------------------------
 * Shared by all workers, so guarded by a mutex; taken once at accept and
 * once at close, never per command. Chained buckets keyed by the address. */

struct net_client_count {
	struct net_client_count *next;
	uint8_t addr[16];
	uint32_t count;
};

#define NET_CLIENT_BUCKETS 4096
#define NET_NO_SLOT        UINT32_MAX

static void net_client_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		/* Stored as IPv4-mapped IPv6 so both families share one table. */
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	}
}

static uint32_t net_client_hash(const uint8_t key[16])
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h;
}

/* Count one more connection from this client; false if over the limit. */
static bool net_client_acquire(struct net_server *srv, const uint8_t key[16], uint32_t slot)
{
	bool ok = false;
	pthread_mutex_lock(&srv->clients_lock);
	struct net_client_count **p = &srv->clients[slot], *e;
	for (e = *p; e != NULL; e = e->next)
		if (memcmp(e->addr, key, 16) == 0)
			break;
	if (e == NULL) {
		e = calloc(1, sizeof(*e));
		if (e != NULL) {
			memcpy(e->addr, key, 16);
			e->next = *p;
			*p = e;
		}
	}
	if (e != NULL && e->count < srv->cfg->max_connections_per_client) {
		e->count++;
		ok = true;
	}
	pthread_mutex_unlock(&srv->clients_lock);
	return ok;
}

static void net_client_release(struct net_server *srv, const uint8_t key[16], uint32_t slot)
{
	pthread_mutex_lock(&srv->clients_lock);
	for (struct net_client_count **p = &srv->clients[slot]; *p != NULL; p = &(*p)->next) {
		struct net_client_count *e = *p;
		if (memcmp(e->addr, key, 16) != 0)
			continue;
		if (--e->count == 0) {
			*p = e->next;
			free(e);
		}
		break;
	}
	pthread_mutex_unlock(&srv->clients_lock);
}

void net_server_release(struct net_server *srv, bool counted, uint32_t client_slot,
			const struct sockaddr *peer)
{
	if (client_slot != NET_NO_SLOT) {
		uint8_t key[16];
		net_client_key(peer, key);
		net_client_release(srv, key, client_slot);
	}
	if (counted)
		atomic_fetch_sub(&srv->connections, 1);
}

/* ---- accept ------------------------------------------------------------------ */

void net_worker_accept(struct net_worker *nw, int fd)
{
	struct net_server *srv = nw->server;
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) != 0) {
		close(fd); /* already reset by the client */
		return;
	}
	const char *refusal = NULL;
	bool counted = false;
	uint32_t slot = NET_NO_SLOT;
	uint8_t key[16];
	net_client_key((struct sockaddr *)&peer, key);
	if (nw->worker->shutting_down) {
		refusal = "421 4.3.2 Service shutting down";
	} else if (atomic_fetch_add(&srv->connections, 1) >= srv->cfg->max_connections) {
		atomic_fetch_sub(&srv->connections, 1);
		refusal = "421 4.7.0 Too many connections, try again later";
	} else {
		counted = true;
		slot = net_client_hash(key) & srv->clients_mask;
		if (!net_client_acquire(srv, key, slot)) {
			slot = NET_NO_SLOT;
			refusal = "421 4.7.0 Too many connections from your address, try again "
				  "later";
		}
	}
	conn_accept(nw, fd, (struct sockaddr *)&peer, peer_len, refusal, counted, slot);
}

void net_worker_conn_added(struct net_worker *nw, struct conn *c)
{
	c->prev = NULL;
	c->next = nw->conns;
	if (nw->conns != NULL)
		nw->conns->prev = c;
	nw->conns = c;
	nw->nconns++;
}

void net_worker_conn_removed(struct net_worker *nw, struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		nw->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	nw->nconns--;
}

/* ---- the inbound service on each worker ------------------------------------ */

static int net_inbound_start(struct worker *w, void *arg, void **state)
{
	struct net_server *srv = arg;
	const struct config *cfg = srv->cfg;
	struct net_worker *nw = calloc(1, sizeof(*nw));
	if (nw == NULL)
		return -ENOMEM;
	*state = nw;
	nw->server = srv;
	nw->worker = w;
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
	for (struct conn *c = nw->conns, *next; c != NULL; c = next) {
		next = c->next;
		conn_force_close(c);
	}
}

static void net_inbound_drain(struct worker *w, void *state)
{
	struct net_worker *nw = state;
	for (unsigned i = 0; i < nw->nlisteners; i++)
		listener_close(&nw->listeners[i]);
	log_event(LOG_LEVEL_INFO, "event=shutdown worker=%u sessions=%u", w->index, nw->nconns);
	for (struct conn *c = nw->conns, *next; c != NULL; c = next) {
		next = c->next;
		conn_shutdown(c);
	}
	timer_init(&nw->shutdown_timer, net_inbound_deadline);
	timer_arm(&w->timers, &nw->shutdown_timer, w->now_ms, nw->server->cfg->shutdown_timeout_ms);
}

static bool net_inbound_idle(struct worker *w, void *state)
{
	struct net_worker *nw = state;
	(void)w;
	return nw->nconns == 0;
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
	free(nw);
}

const struct worker_service net_inbound_service = {
	.name = "smtp-inbound",
	.start = net_inbound_start,
	.ready = net_inbound_ready,
	.drain = net_inbound_drain,
	.idle = net_inbound_idle,
	.stop = net_inbound_stop,
};

/* ---- the server ------------------------------------------------------------ */

int net_server_create(struct net_server **out, const struct config *cfg, char *err, size_t err_size)
{
	struct net_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	srv->cfg = cfg;
	size_t nnet = cfg->trusted_networks.count, ndom = cfg->relay_domains.count;
	srv->networks = calloc(nnet ? nnet : 1, sizeof(*srv->networks));
	srv->domains = calloc(ndom ? ndom : 1, sizeof(*srv->domains));
	srv->clients = calloc(NET_CLIENT_BUCKETS, sizeof(*srv->clients));
	if (srv->networks == NULL || srv->domains == NULL || srv->clients == NULL) {
		snprintf(err, err_size, "out of memory");
		net_server_destroy(srv);
		return -ENOMEM;
	}
	srv->clients_mask = NET_CLIENT_BUCKETS - 1;
	pthread_mutex_init(&srv->clients_lock, NULL);
	for (size_t i = 0; i < nnet; i++) {
		const struct config_item *item = &cfg->trusted_networks.items[i];
		if (policy_parse_network(item->value, &srv->networks[i]) != 0) {
			config_error_at(cfg, item, "trusted_networks",
					"not a network (e.g. 192.0.2.0/24, 2001:db8::/32, "
					"without host bits)",
					err, err_size);
			net_server_destroy(srv);
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
			net_server_destroy(srv);
			return -EINVAL;
		}
		srv->domains[i] = strdup(lower);
		if (srv->domains[i] == NULL) {
			net_server_destroy(srv);
			return -ENOMEM;
		}
	}
	/* It goes into every greeting and reply: a typo (or a '#' comment
	 * after it, which is part of the value) must not. */
	if (!address_domain_valid(cfg->hostname, strlen(cfg->hostname), false)) {
		snprintf(err, err_size,
			 "%s: key 'hostname': not a host name (e.g. mx1.isp.example): '%s'",
			 cfg->source, cfg->hostname);
		net_server_destroy(srv);
		return -EINVAL;
	}
	srv->policy.trusted = srv->networks;
	srv->policy.ntrusted = nnet;
	srv->policy.relay_domains = (const char *const *)srv->domains;
	srv->policy.nrelay_domains = ndom;
	srv->settings = (struct smtp_settings){
		.hostname = cfg->hostname,
		.max_command_line = cfg->max_command_line,
		.max_text_line = cfg->max_text_line,
		.max_message_size = cfg->max_message_size,
		.max_recipients = cfg->max_recipients,
		.max_errors = cfg->max_errors,
		.max_commands = cfg->max_commands_per_session,
		.max_messages = cfg->max_messages_per_session,
		.policy = &srv->policy,
	};
	atomic_init(&srv->connections, 0);
	*out = srv;
	return 0;
}

void net_server_destroy(struct net_server *srv)
{
	if (srv == NULL)
		return;
	if (srv->domains != NULL)
		for (size_t i = 0; i < srv->cfg->relay_domains.count; i++)
			free(srv->domains[i]);
	free(srv->domains);
	free(srv->networks);
	if (srv->clients != NULL) {
		for (uint32_t i = 0; i < NET_CLIENT_BUCKETS; i++)
			while (srv->clients[i] != NULL) {
				struct net_client_count *e = srv->clients[i];
				srv->clients[i] = e->next;
				free(e);
			}
		pthread_mutex_destroy(&srv->clients_lock);
	}
	free(srv->clients);
	free(srv);
}
