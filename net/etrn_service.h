/*
 * etrn_service — ETRN carried out: an inbound session's ETRN command (its
 * smtp_settings etrn hook) goes from the session's worker to every worker
 * whose shards hold a covered domain, by cross-worker message; each
 * counts the mail it holds for those domains and flushes them through
 * delivery (net/outbound.h, outbound_etrn_flush); the answers come back
 * to the session's worker, which replies. The reply is one line and comes
 * at once (a loop turn or two): delivery runs afterwards, on new
 * connections to each domain's own next hop, never to the client.
 *
 * The reply (net/etrn.h has the texts):
 *   500, 501     syntax (etrn_parse)
 *   458, 459     nothing of ours by that name; not allowed (etrn_plan_make)
 *   458          delivery is not running on a worker that holds the mail
 *   251          nothing is queued for the covered domains
 *   250          mail may be queued, and a section involved hides counts
 *   252          mail is queued, but a message may have recipients on
 *                several workers' shards, so the sum is not exact
 *   253 N        N messages queued (any state) and started
 *   421          past [etrn] max_per_session in the session, or past
 *                max_rate_per_client a minute from the client (all
 *                sessions and workers): the session is closed
 * Past half of max_rate_per_client, each reply waits flood_delay first.
 *
 * A flush of a domain started by ETRN runs for [etrn] flush_window: an
 * ETRN for it meanwhile joins it (is counted, moves nothing).
 *
 * Every ETRN is logged (event=etrn: client, argument, matched domains,
 * reply code, messages and released) and counted per worker, for the
 * metrics (ferry_etrn_*) and event=etrn_totals at stop.
 */
#ifndef FERRY_NET_ETRN_SERVICE_H
#define FERRY_NET_ETRN_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/worker.h"
#include "net/etrn.h"

struct client_rate;
struct queue;
struct queue_store;
struct outbound;
struct outbound_shared;
struct smtp_session;

struct etrn_worker;

/* What every worker's ETRN keeps for the whole run; the policy and the
 * [etrn] limits a reload may change are the generation's (net/generation.h:
 * each worker answers with its current one). */
struct etrn_settings {
	struct client_rate *rates; /* ETRNs per client a minute; NULL: no limit (restart) */
	struct queue_store *store;
	const struct outbound_shared *delivery;
	struct etrn_worker **workers; /* per worker, set by its service's start */
};

/* Make the run's part from cfg (its workers and [etrn] max_rate_per_client):
 * 0, or -ENOMEM with err saying so. The policy is checked and built
 * with each generation (etrn_policy_build). */
int etrn_settings_init(struct etrn_settings *s, const struct config *cfg, struct queue_store *store,
		       const struct outbound_shared *delivery, char *err, size_t err_size);
void etrn_settings_free(struct etrn_settings *s);

/* On every worker; its arg is the first generation (its runtime's etrn
 * initialised). Register it above delivery's service and below inbound
 * SMTP's. */
extern const struct worker_service etrn_service;

/* The smtp_settings hooks (etrn, etrn_cancel); arg is the settings. */
void etrn_session_request(void *arg, struct smtp_session *s, const char *argument, size_t len);
void etrn_session_cancel(void *arg, struct smtp_session *s);

/* What one worker holds and did for an ETRN (or an operator's flush). */
struct etrn_part_result {
	uint64_t messages; /* sched_tally's, over the covered domains */
	uint64_t released; /* of them HELD or DEFERRED, in flushes started */
	bool elsewhere;    /* a counted message is also another worker's */
	uint32_t started;  /* flushes started */
	uint32_t joined;   /* flushes joined */
	uint64_t moved;    /* recipients made READY */
	bool failed;       /* delivery is not running here, or no memory */
	char names[200];   /* the domains, comma-separated, cut short with "..." */
};

/*
 * On the worker whose queue is q: flush what `plan` covers in q's
 * shards. `operator` (ferryctl flush): every covered domain is flushed
 * outright (outbound_flush); else ETRN's window applies
 * (outbound_etrn_flush). ob NULL: r->failed.
 */
void etrn_flush_here(struct queue *q, struct outbound *ob, const struct etrn_plan *plan,
		     uint32_t window_ms, bool operator, struct etrn_part_result * r);

#endif
