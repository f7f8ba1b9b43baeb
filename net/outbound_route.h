/*
 * outbound_route — where a destination's mail goes: its next hops turned
 * into addresses to connect to, through DNS (net/dns.h) when they are
 * names, and MX records (net/mx.h) when there is no transport.
 *
 *   transport or relayhost, in order, each hop:
 *     [192.0.2.1]:25        the address itself
 *     [mx.example]:25       its A/AAAA records
 *     mx.example:25         its MX records, then each exchanger's A/AAAA
 *   neither: the domain's MX records (the domain itself for want of
 *   them, RFC 5321 5.1), each exchanger's A/AAAA, at port smtp_port
 *
 * Lookups go one after another, on the destination's worker. An address
 * that is this relay's own, reached through MX records, is a loop: it is
 * dropped (and when nothing is left, the route fails with 554 5.4.6).
 * A route is kept for OUTBOUND_ROUTE_TTL_MS, a failure to find one for as
 * long, then looked up again. A permanent failure (no such domain, null
 * MX, a loop) fails the destination's mail; a temporary one defers it.
 */
#ifndef FERRY_NET_OUTBOUND_ROUTE_H
#define FERRY_NET_OUTBOUND_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "net/dns.h"

#define OUTBOUND_ROUTE_TARGETS 16
#define OUTBOUND_ROUTE_TTL_MS  60000

struct outbound_dest;
struct route_job;

struct outbound_target {
	char *host; /* the name it was found under (owned), for logs and DSNs */
	union dns_address addr;
};

enum outbound_route_state {
	ROUTE_NONE = 0,  /* never looked up, or expired */
	ROUTE_RESOLVING, /* lookups under way */
	ROUTE_READY,     /* targets[0..count) */
	ROUTE_FAILED,    /* code, status, reason */
};

struct outbound_route {
	enum outbound_route_state state;
	struct outbound_target targets[OUTBOUND_ROUTE_TARGETS];
	unsigned count;
	uint64_t expires_ms;
	int code; /* FAILED: 4xx defers, 5xx fails */
	const char *status;
	char reason[384];
	struct route_job *job; /* RESOLVING */
};

/* Look the destination's route up (its state RESOLVING); when done, the
 * route is READY or FAILED and the destination active again. 0, or
 * -ENOMEM (the state stays NONE). */
int outbound_route_resolve(struct outbound_dest *d);

/* Is the route usable now (READY and not expired)? An expired one is
 * forgotten (NONE). */
bool outbound_route_fresh(struct outbound_dest *d, uint64_t now_ms);

/* The destination goes: cancel lookups, free the targets. */
void outbound_route_clear(struct outbound_dest *d);

#endif
