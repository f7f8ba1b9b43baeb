/*
 * mx — where a domain's mail goes, decided from its MX lookup (RFC 5321
 * section 5.1, RFC 7505). Pure: the lookup is net/dns.h's, the
 * connections are the delivery's; this takes their facts and returns a
 * decision.
 *
 *   MX records           their exchangers, in the lookup's order (by
 *                        preference, equal ones shuffled)
 *   no MX (NODATA)       the domain itself: its A/AAAA ("implicit MX")
 *   the domain is gone   permanent failure 550 5.1.2
 *   null MX              permanent failure 556 5.1.10 (RFC 7505)
 *   lookup failed        temporary failure 451 4.4.3
 *
 * A relay that finds itself among the exchangers only tries those more
 * preferred than itself (lower preference value): it drops its own entry
 * and every one of equal or higher value; if nothing is left, the mail
 * would come back to it: permanent failure 554 5.4.6. The implicit MX
 * follows the same rule (the domain's own name is this relay's).
 *
 * At most MX_ROUTE_MAX exchangers are kept, the most preferred.
 */
#ifndef FERRY_NET_MX_H
#define FERRY_NET_MX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/dns.h"

#define MX_ROUTE_MAX 10

enum mx_verdict {
	MX_ROUTE_HOSTS = 0, /* try out->hosts[0..count) in order */
	MX_ROUTE_TEMPORARY, /* defer: out->code 451, out->status, out->reason */
	MX_ROUTE_PERMANENT, /* fail (a DSN): out->code 5xx, out->status, out->reason */
};

struct mx_route {
	struct dns_mx hosts[MX_ROUTE_MAX]; /* look up each one's addresses */
	unsigned count;
	bool implicit;      /* the domain itself, for want of MX records */
	int code;           /* 0 with hosts; else the reply code a DSN or log reports */
	const char *status; /* enhanced status code, "5.1.2"; "" with hosts */
	char reason[384];   /* what a postmaster reads; "" with hosts */
};

/*
 * Decide from r (NULL: no lookup made, as NODATA) for `domain` (its
 * trailing dot ignored); self_hostname is this relay's name (NULL or "":
 * no self check), compared without case and trailing dot. Returns the
 * verdict, also left in out.
 */
enum mx_verdict mx_route(const struct dns_mx_result *r, const char *domain,
			 const char *self_hostname, struct mx_route *out);

/* Host names equal, ignoring case and one trailing dot on either. */
bool mx_same_host(const char *a, const char *b);

/*
 * Is `a` (AF_INET or AF_INET6; the port is ignored, as Postfix's
 * inet_interfaces check: a relay that delivers to its own address is
 * misrouted whatever the port) one of this relay's own addresses?
 * True when it equals one of the `listen` addresses, or when one of
 * them is a wildcard (0.0.0.0, or :: which takes IPv4 too) and `a` is
 * a loopback address or one of `local` (the interfaces' addresses, from
 * getifaddrs at setup: the caller gathers them, this stays pure). An
 * IPv4-mapped IPv6 address counts as its IPv4 address.
 */
bool mx_address_is_self(const struct sockaddr *a, const struct sockaddr_storage *listen,
			unsigned nlisten, const struct sockaddr_storage *local, unsigned nlocal);

#endif
