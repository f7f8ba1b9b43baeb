/*
 * outbound — delivery on each worker: which destinations have work, how
 * many connections each gets, where they go, and what becomes of each
 * recipient. After OpenSMTPD's mta.c (where and how many); one client
 * conversation is net/outbound_session.c.
 *
 * Each worker delivers the recipients of the shards it owns
 * (queue/sched.h). A destination is one recipient domain. It becomes
 * active when the store says it has READY recipients (a hook), when its
 * retry timer releases deferred ones, or when an operator flushes it; an
 * active destination gets connections up to its concurrency (and the
 * worker's cap), each of which takes one message's recipients for the
 * domain at a time (up to recipients_per_transaction) until none is
 * READY, then stays open for connection_reuse_time in case more come.
 *
 * Transactions and connections are shared by next hop: a message's
 * recipients for other domains of this worker whose route holds the
 * connection's address ride in its transaction (outbound_take_riders),
 * and a destination that wants another
 * connection first takes an idle one of another destination on this
 * worker connected to one of its own route's addresses (domains that
 * share an MX share its connections), then opens one.
 *
 * Fairness: a destination never holds more than its concurrency, so a
 * slow or dead one cannot take the worker's connections from the others;
 * after destination_failures connection failures in a row it is marked
 * down for destination_backoff and its READY recipients are deferred
 * until then, not tried once a second.
 *
 * Outcomes (one log line each, event=delivery):
 *   2xx                      delivered: sched_finish(DELIVERED)
 *   4xx, connection lost,    deferred: sched_defer, retry_initial *
 *   timeout                  retry_factor^(attempts-1), at most retry_max
 *   5xx, or older than the   failed: bounced (net/bounce.h: a DSN to the
 *   queue lifetime           sender, then sched_finish FAILED)
 *
 * Shutdown: no new transaction starts; those under way may finish for
 * shutdown_timeout, then their connections are cut and their recipients
 * stay queued, untried (a next hop that took the message but whose reply
 * was not heard gets it again: at least once).
 *
 * Next hops: the domain's transport ([domain] section), else the
 * relayhost, else the domain's MX records, each turned into addresses by
 * net/outbound_route.c; a route that cannot be found defers (4xx) or
 * fails (5xx: no such domain, a null MX, a loop) the destination's mail.
 */
#ifndef FERRY_NET_OUTBOUND_H
#define FERRY_NET_OUTBOUND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/list.h"
#include "core/metrics.h"
#include "core/timer.h"
#include "core/worker.h"
#include "net/conn.h"
#include "net/nexthop.h"
#include "net/outbound_route.h"

struct queue;
struct queue_rcpt;
struct bounce;
struct queue_store;
struct outbound_session;
struct net_generation;

/* A [domain] section, its transport parsed, and what is queued under
 * its quota (max_messages, max_size; shared by every worker: a message
 * counts once per domain it is queued for, from its first recipient for
 * the domain entering the queue to its last leaving it). */
struct outbound_rule {
	const struct config_domain *domain;
	struct nexthop_list transport; /* count 0: none given */
	bool quota;                    /* max_messages or max_size set */
	atomic_uint_fast64_t messages, bytes;
};

/* What delivery keeps for the whole run, whatever a reload changes:
 * made once at start from keys that need a restart to change. */
struct outbound_shared {
	struct queue_store *store;
	struct outbound **workers; /* per worker, set by its service's start */
	unsigned nworkers;
	uint32_t max_connections; /* per worker: max_outbound_connections shared out */
	char dns_servers[CONFIG_TRANSPORT_MAX + 1];
	struct dns_config dns; /* the resolver each worker opens */
};

int outbound_shared_init(struct outbound_shared *sh, const struct config *cfg,
			 struct queue_store *store, char *err, size_t err_size);
void outbound_shared_free(struct outbound_shared *sh);

/* What every worker's delivery reads, resolved from one generation's
 * config (net/generation.h): a reload makes new settings, and each
 * worker moves its destinations to them (the service's reconfigure). */
struct outbound_settings {
	const struct config *cfg;
	const struct outbound_shared *shared;
	char helo_name[CONFIG_HOSTNAME_MAX + 1];
	union conn_address source; /* bound before connecting */
	socklen_t source_len;      /* 0: any */
	struct nexthop_list relayhost;
	uint32_t connect_timeout_ms, greeting_timeout_ms, command_timeout_ms;
	uint32_t data_init_timeout_ms, data_block_timeout_ms, data_done_timeout_ms;
	uint32_t reuse_time_ms;
	uint32_t retry_initial_ms, retry_factor, retry_max_ms;
	uint32_t lifetime_ms;
	uint32_t concurrency, rcpts_per_transaction;
	uint32_t destination_failures, destination_backoff_ms;
	uint16_t smtp_port; /* of next hops found by MX */
	/* This relay's own addresses: an MX host that resolves to one is a
	 * loop (net/mx.h). */
	struct sockaddr_storage listen[CONFIG_MAX_LISTEN];
	unsigned nlisten;
	struct sockaddr_storage *local; /* the interfaces' addresses (getifaddrs) */
	unsigned nlocal;
	struct outbound_rule *rules; /* parallel to cfg->domains */
	bool quotas;                 /* some rule has a quota */
	size_t nrules;
};

/*
 * Is the queue of `domain` full, by its [domain] section's quota? Then new
 * mail for it gets 452 4.2.2 at RCPT (other domains are not affected).
 * Any thread (the inbound sessions'). Right after a reload the counts are
 * complete once every worker has switched (each counts its own shards).
 */
bool outbound_queue_full(const struct outbound_settings *s, const char *domain, size_t len);

/* Parse transports, relayhost and source address: 0, or -EINVAL with err
 * naming the key, -ENOMEM. */
int outbound_settings_create(struct outbound_settings **out, const struct config *cfg,
			     const struct outbound_shared *shared, char *err, size_t err_size);
void outbound_settings_destroy(struct outbound_settings *s);

/* Descriptors a worker's delivery holds beside its max_outbound_connections
 * connections: the resolver's sockets (one UDP socket per DNS server, a
 * TCP one for a truncated answer), for the budget ferryd checks at start. */
#define OUTBOUND_DESCRIPTORS_PER_WORKER 8

/* The delivery service on every worker; its arg is the first generation
 * (net/generation.h; its runtime's delivery is initialised). Register it
 * above the store's service. */
extern const struct worker_service outbound_service;

struct outbound;

/* Worker i's delivery (NULL before its service started): for the admin
 * socket and ETRN, which send a cross-worker message to the worker that
 * owns a domain's shard (queue/sched.h, sched_owner) and call these there. */
struct outbound *outbound_of_worker(const struct outbound_shared *sh, unsigned index);

/*
 * Operator's and ETRN's moves, on the worker owning the domain's shard:
 *   flush    every HELD and DEFERRED recipient of the domain becomes READY
 *            now, its backoff and the destination's down-mark forgotten,
 *            and delivery starts at once; returns how many moved.
 *   flush_all  the same for every destination of this worker's shards.
 *   hold     (hold true) the domain's mail is held from now on, READY and
 *            DEFERRED included, until released or ferryd restarts (the
 *            config's hold = yes comes back then); release (hold false)
 *            ends a hold, config's included, until restart, and flushes.
 *            Returns how many recipients moved; -ENOMEM.
 */
unsigned outbound_flush(struct outbound *ob, const char *domain, size_t len);
/* ETRN's flush: as outbound_flush, unless a flush of the domain started by
 * ETRN less than window_ms ago still runs (its mail is ready or in
 * flight, or connections are open): then that one is joined, nothing
 * moves, and *joined is set. A flush whose mail is all deferred again
 * (the site refused it) does not run: a new ETRN flushes anew. While the
 * window runs and the destination lives, new mail for a held domain is
 * not held: the site is there to take it. */
unsigned outbound_etrn_flush(struct outbound *ob, const char *domain, size_t len,
			     uint32_t window_ms, bool *joined);
unsigned outbound_flush_all(struct outbound *ob);
int outbound_hold(struct outbound *ob, const char *domain, size_t len, bool hold);
/* (Hold and release of one message, delete and bounce: outbound_operator.h.) */

/* Is `domain`'s new mail held now (its [domain] section's hold = yes, or
 * an operator's hold, less an ETRN's flush window)? On the shard's owner. */
bool outbound_domain_held(struct outbound *ob, const char *domain, size_t len);
/* `domain` has READY recipients that it may not have had: its destination
 * takes connections (on the next loop turn). */
void outbound_wake(struct outbound *ob, const char *domain, size_t len);

/* ---- for outbound_session.c and the other files of delivery ----------------- */

/* The [domain] rule of `domain` (NULL: none), by config_domain_find. */
const struct outbound_rule *outbound_rule_for(const struct outbound_settings *s, const char *domain,
					      size_t len);

/* A recipient's outcome at one attempt. */
enum outbound_result {
	OUTBOUND_SENT = 0,
	OUTBOUND_BOUNCED,
	OUTBOUND_EXPIRED,
	OUTBOUND_DEFERRED,
};
#define OUTBOUND_NRESULTS (OUTBOUND_DEFERRED + 1)

/* One destination's pool on a worker. */
struct outbound_dest {
	struct outbound *ob;
	struct list_node hash_link;
	struct list_node active_link; /* on ob->active while it may take a connection */
	char domain[256];
	uint16_t len;
	uint64_t hash;
	const struct outbound_rule *rule; /* NULL: no [domain] section */
	const struct nexthop_list *hops;  /* transport or relayhost; NULL: none */
	struct outbound_route route;      /* the hops as addresses (outbound_route.h) */
	unsigned next_hop;                /* the route target the next connection tries */
	unsigned sessions;                /* connections open (or opening) */
	unsigned concurrency;
	struct list_node idle;   /* sessions ready with nothing to send */
	unsigned failing;        /* of its sessions, those failed and not yet gone */
	unsigned failures;       /* connection failures in a row */
	unsigned round_failures; /* of them, since its mail was last deferred */
	uint64_t down_until_ms;
	struct timer retry; /* releases deferred recipients when due */
	bool waiting;       /* on ob->waiting (by active_link): for a free connection */
	bool held;
	/* An operator held or released it (ferryctl): held is theirs until
	 * ferryd restarts, whatever a reload's hold = says; and it lives on
	 * without mail to remember it. */
	bool operator_said;
	uint64_t rerouted; /* the generation whose reload changed its next hops; 0: none */
	uint64_t flush_until_ms; /* an ETRN's flush runs until then (outbound_etrn_flush) */
};

struct outbound {
	struct worker *worker;
	struct queue *queue;
	struct net_generation *gen;               /* the one it runs with (held) */
	const struct outbound_settings *settings; /* gen's */
	struct list_node *buckets;                /* struct outbound_dest by hash_link */
	uint32_t nbuckets, ndests;
	struct list_node active;   /* destinations that may take a connection */
	struct list_node waiting;  /* destinations held back by max_outbound_connections */
	bool running;              /* every worker has started (the service's ready) */
	struct list_node sessions; /* every session, by all_link */
	unsigned connections;
	bool draining;
	struct timer drain_timer; /* past shutdown_timeout: what is open is cut */
	struct dns *dns;          /* MX and address lookups */
	struct timer kick_timer;  /* the next turn at once: active work waits */
	struct bounce *bounces;   /* failed recipients on their way to a DSN */
	/* For the metrics: recipients by outcome (enum outbound_result, as
	 * event=delivery says it), connections made or failed, and the
	 * delay from arrival to delivery. */
	uint64_t outcomes[OUTBOUND_NRESULTS];
	uint64_t connections_made, connections_failed;
	struct metric_histogram delay;
};

/* outbound.c's, for the worker service (outbound_service.c): */

/* The hash a destination is filed under: FNV-1a of the lower-cased domain. */
uint64_t outbound_hash(const char *domain, size_t len);
/* The destination of `domain` here (hash: outbound_hash's), or NULL. */
struct outbound_dest *outbound_find(struct outbound *ob, const char *domain, size_t len,
				    uint64_t hash);
/* Does the configuration hold this rule's mail ([domain] hold = yes)? */
bool outbound_config_held(const struct outbound_rule *rule);
/* d's rule, next hops and concurrency from the settings ob runs with now. */
void outbound_dest_configure(struct outbound_dest *d);
/* d on the active list (off the waiting one): the next run looks at it. */
void outbound_activate(struct outbound_dest *d);
/* r's message counted in (sign +1, r its first recipient for the domain) or
 * out of (-1, its last) its domain's quota, if the rule has one. */
void outbound_quota_add(struct outbound *ob, const struct queue_rcpt *r, int sign);
/* The store's hooks set for ob's settings (quotas counted only if some rule has one). */
void outbound_set_hooks(struct outbound *ob);
/* The loop's turn: each active destination, once, gets the connections it may have now. */
void outbound_run(struct outbound *ob);

/* A session is ready for its next message: up to max recipients of one
 * message moved to INFLIGHT for it. Returns how many (0: nothing). */
size_t outbound_take(struct outbound_dest *d, struct queue_rcpt **out, size_t max);

/* Recipients of r's message for other domains of this worker whose route
 * holds `target`, READY, moved to INFLIGHT to ride in r's transaction
 * (their destinations to dests). Returns how many, at most max. */
size_t outbound_take_riders(struct outbound_dest *d, const struct queue_rcpt *r,
			    const union dns_address *target, struct queue_rcpt **out,
			    struct outbound_dest **dests, size_t max);
/* The destination of a recipient's domain here, or NULL. */
struct outbound_dest *outbound_dest_of(struct outbound *ob, const struct queue_rcpt *r);
/* Destinations whose recipients were ended (or deferred) from outside
 * their own run (riders, the bouncer) may have nothing left: freed then
 * (not while active: their run does). The same one may come several
 * times; NULL entries are skipped. */
void outbound_settle(struct outbound_dest *const *dests, size_t n);

/* One recipient's outcome, from the reply (code 0: the connection failed,
 * `reply` says how) given by `relay` ("host[address]:port"). */
void outbound_outcome(struct outbound_dest *d, struct queue_rcpt *r, int code, const char *status,
		      const char *reply, const char *relay);

/* The connection could not be made or greeted (a failure toward marking
 * the destination down), or it was (the count starts again); from_session:
 * a session of d's that is going now (not one that could not start). */
void outbound_connect_result(struct outbound_dest *d, bool ok, bool from_session, const char *why);

/* The destination's route lookup ended (outbound_route.c). */
void outbound_route_done(struct outbound_dest *d);

/* A session moved from d to another destination (same next hop): d may
 * have nothing left. */
void outbound_session_from(struct outbound_dest *d);

/* A session is gone (its conn closed; `failed`: it was counted as a
 * connection failure): the destination, and those waiting for a free
 * connection, may open another. */
void outbound_session_gone(struct outbound_dest *d, bool failed);

/* The metrics (net/outbound_metrics.c): a recipient delivered `seconds`
 * after its message arrived; the service's callback. */
void outbound_observe_delay(struct outbound *ob, double seconds);
void outbound_service_metrics(struct worker *w, void *state, struct metrics *out);

/* For the bouncer: a recipient whose DSN could not be made is deferred,
 * with its destination's retry set. */
void outbound_defer(struct outbound *ob, struct queue_rcpt *r, const char *reason);

#endif
