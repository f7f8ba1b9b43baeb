/*
 * dns — MX and address lookups with c-ares, driven by the worker's ring.
 *
 * One struct dns per worker (the delivery service makes it in its start,
 * on the worker's thread, and uses it there only). c-ares keeps its own
 * sockets; it tells us through its socket-state callback which ones to
 * watch, and each is watched with a one-shot IORING_OP_POLL_ADD, armed
 * again after every completion (or removed when c-ares closes the
 * socket). c-ares's retry timeouts run on the worker's timer wheel, so a
 * lookup never blocks the loop and no thread is added.
 *
 * Results come through the lookup's callback, from the loop (a poll's
 * completion or a timer), never from inside the call that asked, even
 * when the answer is known at once (an address literal, a name c-ares
 * refuses). The result is valid during the callback only: copy what is
 * kept. A lookup's handle is valid from the call until its callback
 * starts, dns_cancel(), dns_drain() or dns_close(): after any of them,
 * forget it.
 *
 * Statuses say what the delivery decides on (net/mx.h): the domain does
 * not exist; it exists and has none of the records asked for; the answer
 * could not be had (SERVFAIL, REFUSED, timeout, no server reachable, a
 * malformed answer, out of memory): try later; or it publishes a null MX
 * (RFC 7505): it takes no mail.
 *
 * Lookups go to the DNS servers only: no /etc/hosts, no search domains
 * (ares_query, not ares_getaddrinfo: a relay resolves fully qualified
 * names, as Postfix's smtp_host_lookup = dns, and reading /etc/hosts per
 * lookup would block the loop on a file).
 *
 * Winding down (the delivery service's drain, idle and stop):
 *   dns_drain()  drops every unanswered lookup (callbacks never run) and
 *                closes c-ares's sockets, removing their polls; lookups
 *                may start again afterwards;
 *   dns_idle()   true once no lookup is outstanding and no SQE of dns is
 *                in flight: the service's idle waits for it;
 *   dns_close()  frees it all, at once when dns_idle(), else as soon as
 *                the last poll's completion comes back through the loop.
 *                So dns_close() is safe whenever the loop still turns;
 *                after the loop has ended (a service's stop) the worker
 *                dispatches no completion any more, so close only an idle
 *                dns there (the worker leaves its loop only once every
 *                service is idle, so a service whose idle includes
 *                dns_idle() always has one).
 * Each of them may be called from inside a dns callback.
 */
#ifndef FERRY_NET_DNS_H
#define FERRY_NET_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

struct worker;
struct dns;
struct dns_query;

struct dns_config {
	/* "": the servers of /etc/resolv.conf; else a comma list of
	 * addresses with optional ports: "127.0.0.1:5353,[::1]:53". */
	const char *servers;
	uint32_t timeout_ms; /* first try's timeout per server (0: resolv.conf's, or 2 s) */
	unsigned tries;      /* rounds over the servers (0: resolv.conf's, or 3) */
};

enum dns_status {
	DNS_OK = 0,
	DNS_NXDOMAIN, /* the name does not exist (or cannot: a malformed name) */
	DNS_NODATA,   /* the name exists, without records of the type asked for */
	DNS_TEMPFAIL, /* no answer to trust now (SERVFAIL, timeout...): try later */
	DNS_NULL_MX,  /* RFC 7505: the domain's only MX is "." (it accepts no mail) */
};
#define DNS_NSTATUSES (DNS_NULL_MX + 1)

#define DNS_NAME_MAX 255 /* a host name's text, without the NUL */
#define DNS_HOST_MAX 16  /* addresses kept per host lookup */

struct dns_mx {
	char host[DNS_NAME_MAX + 1]; /* without a trailing dot */
	uint16_t preference;
};

/*
 * An MX lookup's result. DNS_OK: count >= 1 exchangers, by preference
 * (lowest first), those of equal preference in a random order (per
 * worker PRNG: dns_mx_order). An MX record whose exchanger is the root
 * (".") is dropped from a longer list; when nothing else is left the
 * result is DNS_NULL_MX, as for a proper null MX (one record, ".", 0).
 */
struct dns_mx_result {
	enum dns_status status;
	const char *reason; /* words for a log or a reply, e.g. "Timeout while contacting DNS
			       servers"; never NULL */
	struct dns_mx *mx;  /* NULL unless DNS_OK */
	unsigned count;
};

union dns_address {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/*
 * A host lookup's result: the A and AAAA records of the name. DNS_OK: at
 * least one address, the port set in each; the IPv4 addresses first,
 * then the IPv6 ones, each family in the order the server gave, at most
 * DNS_HOST_MAX in all (IPv4 ones taking the room first). DNS_OK as soon
 * as either family has an address; otherwise DNS_TEMPFAIL if either
 * query failed so, DNS_NXDOMAIN if the name does not exist, DNS_NODATA
 * if it has neither record.
 */
struct dns_host_result {
	enum dns_status status;
	const char *reason; /* never NULL */
	unsigned count;
	union dns_address addr[DNS_HOST_MAX];
};

static inline socklen_t dns_address_len(const union dns_address *a)
{
	return a->sa.sa_family == AF_INET6 ? sizeof(a->in6) : sizeof(a->in);
}

/* Same family, address and port. */
static inline bool dns_address_equal(const union dns_address *a, const union dns_address *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_port == b->in.sin_port &&
		       a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
	return a->in6.sin6_port == b->in6.sin6_port &&
	       memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
}

typedef void dns_mx_fn(void *arg, const struct dns_mx_result *result);
typedef void dns_host_fn(void *arg, const struct dns_host_result *result);

/*
 * Make w's resolver (on w's thread). 0, or -EINVAL (a servers list that
 * does not parse) / -ENOMEM / -EIO with err (err_size bytes) saying what
 * went wrong, e.g. "dns servers 'x.y': not a list of IP addresses with
 * optional ports (e.g. 127.0.0.1:53,[::1]:53)".
 */
/* Does `servers` (dns_config's syntax) parse? For --check-config; 0, or
 * -EINVAL with err saying why (no socket is opened). */
int dns_check_servers(const char *servers, char *err, size_t err_size);

int dns_open(struct dns **out, struct worker *w, const struct dns_config *cfg, char *err,
	     size_t err_size);

/* See the top of this file: drain, then wait for idle, then close. */
void dns_drain(struct dns *d);
bool dns_idle(const struct dns *d);
void dns_close(struct dns *d); /* NULL: nothing */

struct metrics;
/* Its lookups by type and result, for the metrics (d NULL: zeros). */
void dns_metrics(const struct dns *d, struct metrics *out);

/*
 * Look up domain's MX records; done(arg, result) runs later from the
 * loop unless the lookup is cancelled (or the dns drained or closed
 * first). *handle names it for dns_cancel(). 0, or -EINVAL (an empty
 * name or one longer than 253 characters), -ENOMEM; then done never runs.
 */
int dns_lookup_mx(struct dns *d, const char *domain, dns_mx_fn *done, void *arg,
		  struct dns_query **handle);

/*
 * Look up host's A and AAAA records, each address given `port` (host
 * order). An IPv4 or IPv6 literal is answered without a query (still
 * from the loop). Otherwise as dns_lookup_mx.
 */
int dns_lookup_host(struct dns *d, const char *host, uint16_t port, dns_host_fn *done, void *arg,
		    struct dns_query **handle);

/* The lookup's callback will not run (the owner may be freed). Only with
 * a live handle: not from inside its own callback, not twice. */
void dns_cancel(struct dns_query *q);

/*
 * Pure: sort mx[0..n) by preference, lowest first, and shuffle each run
 * of equal preference (RFC 5321 5.1: spread the load over equal
 * exchangers) with the PRNG whose state is *seed (advanced).
 */
void dns_mx_order(struct dns_mx *mx, unsigned n, uint64_t *seed);

#endif
