#include "net/mx.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The name's length without one trailing dot. */
static size_t mx_name_len(const char *name)
{
	size_t len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	return len;
}

bool mx_same_host(const char *a, const char *b)
{
	size_t la = mx_name_len(a), lb = mx_name_len(b);
	return la == lb && la > 0 && strncasecmp(a, b, la) == 0;
}

static enum mx_verdict mx_fail(struct mx_route *out, enum mx_verdict verdict, int code,
			       const char *status)
{
	out->count = 0;
	out->code = code;
	out->status = status;
	return verdict;
}

/* The hosts to try: up to self's preference (exclusive) when self is
 * among them. */
static enum mx_verdict mx_hosts(const struct dns_mx *mx, unsigned n, const char *domain,
				const char *self, struct mx_route *out)
{
	bool self_listed = false;
	uint16_t self_preference = 0;
	for (unsigned i = 0; self != NULL && self[0] != '\0' && i < n; i++) {
		if (mx_same_host(mx[i].host, self) &&
		    (!self_listed || mx[i].preference < self_preference)) {
			self_listed = true;
			self_preference = mx[i].preference;
		}
	}
	out->count = 0;
	for (unsigned i = 0; i < n && out->count < MX_ROUTE_MAX; i++) {
		if (self_listed && mx[i].preference >= self_preference)
			continue;
		out->hosts[out->count++] = mx[i];
	}
	if (out->count == 0) {
		snprintf(out->reason, sizeof(out->reason),
			 "mail for %.*s loops back to myself (%s is its %s)",
			 (int)mx_name_len(domain), domain, self,
			 out->implicit ? "address, having no MX records"
				       : "most preferred mail exchanger");
		return mx_fail(out, MX_ROUTE_PERMANENT, 554, "5.4.6");
	}
	return MX_ROUTE_HOSTS;
}

enum mx_verdict mx_route(const struct dns_mx_result *r, const char *domain,
			 const char *self_hostname, struct mx_route *out)
{
	memset(out, 0, sizeof(*out));
	out->status = "";
	int dlen = (int)mx_name_len(domain);
	enum dns_status status = r != NULL ? r->status : DNS_NODATA;
	if (status == DNS_OK && r->count == 0)
		status = DNS_NODATA;
	switch (status) {
	case DNS_NXDOMAIN:
		snprintf(out->reason, sizeof(out->reason), "domain %.*s does not exist", dlen,
			 domain);
		return mx_fail(out, MX_ROUTE_PERMANENT, 550, "5.1.2");
	case DNS_NULL_MX:
		snprintf(out->reason, sizeof(out->reason),
			 "domain %.*s accepts no mail (it publishes a null MX, RFC 7505)", dlen,
			 domain);
		return mx_fail(out, MX_ROUTE_PERMANENT, 556, "5.1.10");
	case DNS_TEMPFAIL:
		snprintf(out->reason, sizeof(out->reason),
			 "the MX lookup for %.*s failed (%s); trying again later", dlen, domain,
			 r != NULL && r->reason != NULL ? r->reason : "no answer");
		return mx_fail(out, MX_ROUTE_TEMPORARY, 451, "4.4.3");
	case DNS_NODATA: {
		struct dns_mx self_mx = {.preference = 0};
		if (dlen == 0 || (size_t)dlen > DNS_NAME_MAX) {
			snprintf(out->reason, sizeof(out->reason), "domain '%s' is not a host name",
				 domain);
			return mx_fail(out, MX_ROUTE_PERMANENT, 550, "5.1.2");
		}
		memcpy(self_mx.host, domain, (size_t)dlen);
		out->implicit = true;
		return mx_hosts(&self_mx, 1, domain, self_hostname, out);
	}
	case DNS_OK:
		break;
	}
	return mx_hosts(r->mx, r->count, domain, self_hostname, out);
}

/* ---- addresses ------------------------------------------------------------------ */

/* An IPv4 address (a mapped one as itself) or an IPv6 one, to compare. */
struct mx_ip {
	int family;
	unsigned char bytes[16];
};

static bool mx_ip_of(const struct sockaddr *sa, struct mx_ip *ip)
{
	if (sa->sa_family == AF_INET) {
		ip->family = AF_INET;
		memcpy(ip->bytes, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		ip->family = AF_INET;
		memcpy(ip->bytes, &a6->s6_addr[12], 4);
	} else {
		ip->family = AF_INET6;
		memcpy(ip->bytes, a6->s6_addr, 16);
	}
	return true;
}

static bool mx_ip_equal(const struct mx_ip *a, const struct mx_ip *b)
{
	return a->family == b->family &&
	       memcmp(a->bytes, b->bytes, a->family == AF_INET ? 4 : 16) == 0;
}

static bool mx_ip_loopback(const struct mx_ip *ip)
{
	static const unsigned char v6_loopback[16] = {[15] = 1};
	if (ip->family == AF_INET)
		return ip->bytes[0] == 127;
	return memcmp(ip->bytes, v6_loopback, 16) == 0;
}

/* A wildcard listen address takes connections to a's family: 0.0.0.0
 * for IPv4, :: for both (unless the socket is V6ONLY, which ferry's
 * listeners are not told to be). */
static bool mx_wildcard_covers(const struct sockaddr *listen, int family)
{
	if (listen->sa_family == AF_INET)
		return family == AF_INET &&
		       ((const struct sockaddr_in *)(const void *)listen)->sin_addr.s_addr ==
			       htonl(INADDR_ANY);
	if (listen->sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(
			&((const struct sockaddr_in6 *)(const void *)listen)->sin6_addr);
	return false;
}

bool mx_address_is_self(const struct sockaddr *a, const struct sockaddr_storage *listen,
			unsigned nlisten, const struct sockaddr_storage *local, unsigned nlocal)
{
	struct mx_ip ip, other;
	if (!mx_ip_of(a, &ip))
		return false;
	bool wildcard = false;
	for (unsigned i = 0; i < nlisten; i++) {
		const struct sockaddr *l = (const struct sockaddr *)(const void *)&listen[i];
		if (mx_wildcard_covers(l, ip.family))
			wildcard = true;
		else if (mx_ip_of(l, &other) && mx_ip_equal(&ip, &other))
			return true;
	}
	if (!wildcard)
		return false;
	if (mx_ip_loopback(&ip))
		return true;
	for (unsigned i = 0; i < nlocal; i++) {
		const struct sockaddr *l = (const struct sockaddr *)(const void *)&local[i];
		if (mx_ip_of(l, &other) && mx_ip_equal(&ip, &other))
			return true;
	}
	return false;
}
