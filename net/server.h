/*
 * server — ferry's inbound SMTP service as a whole: the settings and relay
 * policy built from the config, one set of listeners and sessions per
 * worker, connection accounting across workers, and graceful shutdown.
 *
 * The process-wide part (struct net_server) is read-only once workers run,
 * except for the connection counters, which are shared by design: limits on
 * connections in total and per client address must hold across workers.
 * They are touched once per connection, never per command or message.
 *
 * What the configuration decides (limits, relay policy, the host name in
 * replies) is the generation's (struct net_inbound_conf): each worker
 * starts new sessions with its current generation, which a reload
 * replaces (the service's reconfigure); a session keeps the one it
 * started with to its end, so a reload drops no session and changes no
 * limit under one. Quotas are the exception: a recipient is checked
 * against its worker's current generation, whose counts are live.
 *
 * On each worker it runs as a worker service (net_inbound_service,
 * registered after the store's: its sessions write to the worker's
 * queue). Listeners bind at start and accept once every worker is ready,
 * so no session can hand the store a recipient for a worker that is not
 * running yet.
 *
 * Shutdown (the service's drain): listeners close at once; idle sessions
 * get 421 and close; sessions inside a transaction may finish it until
 * shutdown_timeout while they make progress (inbound_session.h), then they
 * are closed too (a message already handed to the store still becomes
 * durable, it is only its 250 that a late client misses). The service is
 * idle once its worker has no session left.
 */
#ifndef FERRY_NET_SERVER_H
#define FERRY_NET_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <stdatomic.h>

#include "core/config.h"
#include "core/list.h"
#include "core/timer.h"
#include "core/worker.h"
#include "net/generation.h"
#include "net/policy.h"
#include "net/smtp_session.h"

struct client_limit;
struct client_rate;
struct inbound_session;
struct listener;
struct queue;
struct queue_store;

/* The 421s given at accept, carrying the host name as every other reply
 * does (RFC 5321 4.2); built once, since floods of connections meet them. */
struct net_refusals {
	char shutting_down[CONFIG_HOSTNAME_MAX + 64];
	char too_many[CONFIG_HOSTNAME_MAX + 64];
	char too_many_from_client[CONFIG_HOSTNAME_MAX + 80];
	char too_fast[CONFIG_HOSTNAME_MAX + 96]; /* the per-client connection rate */
};

/* Inbound SMTP's part of a generation (net/generation.h): the settings
 * and relay policy built from its config, read-only once built. */
struct net_inbound_conf {
	const struct config *cfg;
	struct smtp_settings settings;
	struct net_refusals refusals;
	struct policy policy;
	struct policy_network *networks;
	char **domains;
	size_t ndomains;
};

/* Build from a loaded config; validates what config.c keeps as text
 * (networks, relay domains, host name, postmaster). On error, err says
 * file, line and key. */
int net_inbound_conf_create(struct net_inbound_conf **out, const struct config *cfg, char *err,
			    size_t err_size);
void net_inbound_conf_free(struct net_inbound_conf *c);

/* What inbound SMTP keeps for the whole run, whatever reloads change. */
struct net_server {
	struct queue_store *store; /* set before the workers start */

	atomic_uint connections;
	/* 1 until a reload is refused, 1 again once one is accepted
	 * (net/reload.c), for the metrics. */
	atomic_int last_reload_ok;
	struct client_limit *clients; /* connections per client address */
	struct client_rate *rates;    /* new connections per client a minute; NULL: no limit */
};

/* One worker's share of the server; touched only by that worker's thread. */
/* Why a connection was refused before its banner. */
enum net_refusal {
	NET_REFUSED_SHUTTING_DOWN = 0,
	NET_REFUSED_RATE,            /* max_connection_rate_per_client */
	NET_REFUSED_MAX_CONNECTIONS, /* max_connections */
	NET_REFUSED_PER_CLIENT,      /* max_connections_per_client */
	NET_NREFUSALS,
};

struct net_worker {
	struct net_server *server;
	struct net_generation *gen; /* what new sessions start with (held); a reload moves it */
	struct worker *worker;
	unsigned index;
	struct queue *queue;
	struct listener *listeners;
	unsigned nlisteners;
	struct list_node sessions; /* struct inbound_session, by link */
	unsigned nsessions;
	uint64_t sessions_started;
	/* For the metrics: connections accepted (refused ones too), refused
	 * by reason (enum net_refusal), and what the sessions counted. */
	uint64_t accepted;
	uint64_t refused[NET_NREFUSALS];
	struct smtp_counters smtp;
	struct timer shutdown_timer;
	bool shutdown_deadline_passed;
};

/* A connection ends (or could not even be set up): give back its place in
 * the limits, the total and its client's (peer: the client's address). */
void net_server_release(struct net_server *srv, bool counted, uint32_t client_slot,
			const struct sockaddr *peer);

/* A listener accepted fd: apply the limits, then inbound_session_start(). */
void net_worker_accept(struct net_worker *nw, int fd);

/* inbound_session.c reports each session's birth and death, so the worker
 * can shut them down and knows when it is idle. */
void net_worker_session_added(struct net_worker *nw, struct inbound_session *s);
void net_worker_session_removed(struct net_worker *nw, struct inbound_session *s);

/* The runtime of inbound SMTP (struct net_runtime's inbound), sized by
 * cfg's connection limits, which need a restart to change. */
int net_server_create(struct net_server **out, const struct config *cfg, char *err,
		      size_t err_size);
void net_server_destroy(struct net_server *srv);

/* Inbound SMTP on each worker; register it with the first generation as
 * its argument (its runtime's inbound server, whose store is set), after
 * queue_service. */
extern const struct worker_service net_inbound_service;

#endif
