/*
 * generation — one loaded configuration and everything net/ derives from
 * it: inbound SMTP's policy and limits (net/server.h), delivery's rules,
 * transports and timeouts (net/outbound.h), ETRN's policy (net/etrn.h).
 * A reload (net/reload.h) builds a whole new generation beside the
 * running one, then each worker switches to it at a loop boundary; what
 * runs on, whatever the configuration says (the store, listeners, the
 * connection tables, each worker's delivery and its destinations), is
 * the runtime (struct net_runtime), made once at start.
 *
 * A generation is read-only once built, and reference counted: each
 * worker's services hold the one they run with; an inbound session holds
 * the one it started under, to its end (its limits do not change under
 * it); an ETRN or an operator's request holds the one its plan points
 * into. The last drop frees it. Holding and dropping may happen on any
 * thread.
 */
#ifndef FERRY_NET_GENERATION_H
#define FERRY_NET_GENERATION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

struct etrn_policy;
struct etrn_settings;
struct net_inbound_conf;
struct net_server;
struct outbound_settings;
struct outbound_shared;
struct queue_store;

/* What a generation is built against, and what the workers' services
 * reach through the generation they start with: made once at start,
 * outlives every generation. delivery and etrn may be NULL (a ferryd
 * without them): the generation then has no part for them. */
struct net_runtime {
	struct queue_store *store;
	struct net_server *inbound;
	struct outbound_shared *delivery;
	struct etrn_settings *etrn;
};

struct net_generation {
	atomic_uint refs;
	uint64_t number; /* 1 at start, one more at each reload */
	const struct net_runtime *rt;
	struct config cfg;
	struct net_inbound_conf *inbound;
	struct outbound_settings *delivery; /* NULL: rt->delivery was */
	struct etrn_policy *etrn;           /* NULL: rt->etrn was */
};

/*
 * Build generation `number` from *cfg, which it takes over (*cfg is left
 * empty, to be config_free'd or dropped). Checks what the config keeps as
 * text for the layers (networks, domains, transports, ETRN lists); on an
 * error, err names file, line and key, and -EINVAL (or -ENOMEM) is
 * returned. The new generation has one reference, the caller's.
 */
int net_generation_create(struct net_generation **out, struct config *cfg, uint64_t number,
			  const struct net_runtime *rt, char *err, size_t err_size);

/* Another reference to g (returned, for chaining). */
struct net_generation *net_generation_hold(struct net_generation *g);
/* Drop a reference; the last frees g. NULL is a no-op. */
void net_generation_drop(struct net_generation *g);

/* For worker_group_reconfigure's done: drops the reference a worker's
 * message held. */
void net_generation_drop_arg(void *g);

#endif
