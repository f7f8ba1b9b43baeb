/*
 * outbound_metrics — what delivery on one worker tells the metrics
 * endpoint (core/metrics.h): recipients by outcome, the delay from arrival
 * to delivery, connections by state and attempts, destinations down, and
 * its resolver's lookups. On the worker's thread.
 */
#include <stdio.h>

#include "core/list.h"
#include "core/metrics.h"
#include "net/dns.h"
#include "net/outbound.h"
#include "net/outbound_session.h"

/* From seconds to days: a held domain's mail may wait its whole queue
 * lifetime for an ETRN. */
static const double outbound_delay_bounds[] = {0.01, 0.05, 0.1, 0.5,  1,     5,     10,    30,
					       60,   300,  900, 3600, 14400, 86400, 432000};
static const struct metric_family outbound_delay_family = {
	"ferry_delivery_delay_seconds",
	"Time from a message's arrival to a recipient's delivery (2xx from the next hop).",
	METRIC_HISTOGRAM,
	METRIC_SUM,
	outbound_delay_bounds,
	sizeof(outbound_delay_bounds) / sizeof(outbound_delay_bounds[0])};
static const struct metric_family outbound_outcomes = {
	"ferry_deliveries_total",
	"Recipient outcomes as event=delivery logs them: delivered, deferred (tried again "
	"later; also when its destination is down or has no route now, without a "
	"connection), bounced (a 5xx), expired (past the queue lifetime).",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family outbound_connections = {
	"ferry_outbound_connections",
	"Outbound SMTP connections open now, by state.",
	METRIC_GAUGE,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family outbound_attempts = {
	"ferry_outbound_connection_attempts_total",
	"Outbound connections to next hops, by result: made (greeted with 220), or failed "
	"(refused, timed out, not greeted).",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};

static const struct metric_family outbound_down = {
	"ferry_outbound_destinations_down",
	"Destinations taken as down after destination_failures connection failures in a row "
	"(their mail waits destination_backoff).",
	METRIC_GAUGE,
	METRIC_SUM,
	NULL,
	0};

void outbound_service_metrics(struct worker *w, void *state, struct metrics *out)
{
	(void)w;
	const struct outbound *ob = state;
	static const char *const outcome[OUTBOUND_NRESULTS] = {
		[OUTBOUND_SENT] = "delivered",
		[OUTBOUND_BOUNCED] = "bounced",
		[OUTBOUND_EXPIRED] = "expired",
		[OUTBOUND_DEFERRED] = "deferred",
	};
	char labels[48];
	for (unsigned i = 0; i < OUTBOUND_NRESULTS; i++) {
		snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome[i]);
		metrics_add(out, &outbound_outcomes, labels, (double)ob->outcomes[i]);
	}
	metrics_add_histogram(out, &outbound_delay_family, NULL, &ob->delay);
	static const char *const states[] = {"connecting", "delivering", "idle", "closing"};
	unsigned count[4] = {0};
	struct list_node *n;
	list_for_each(n, &ob->sessions)
	{
		count[outbound_session_state(outbound_session_of_all_link(n))]++;
	}
	for (unsigned i = 0; i < 4; i++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"", states[i]);
		metrics_add(out, &outbound_connections, labels, count[i]);
	}
	unsigned down = 0;
	for (uint32_t b = 0; b < ob->nbuckets; b++) {
		struct outbound_dest *d;
		list_for_each_entry(d, &ob->buckets[b], hash_link)
		{
			down += d->down_until_ms > ob->worker->now_ms;
		}
	}
	metrics_add(out, &outbound_down, NULL, down);
	metrics_add(out, &outbound_attempts, "result=\"made\"", (double)ob->connections_made);
	metrics_add(out, &outbound_attempts, "result=\"failed\"", (double)ob->connections_failed);
	dns_metrics(ob->dns, out);
}

void outbound_observe_delay(struct outbound *ob, double seconds)
{
	metric_histogram_observe(&ob->delay, &outbound_delay_family, seconds);
}
