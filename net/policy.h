/*
 * policy — who may relay through ferry. Pure: decisions from the config,
 * the client's address and the parsed recipient; no I/O.
 *
 * A recipient is accepted when its domain is a relay domain of this server
 * (mail ferry holds for its customers), or when the client is trusted
 * (a configured network). Everything else is "relay access denied". Routing
 * tricks are refused whoever the client and whatever the domain: a local
 * part with '%', '!' or a quoted '@' (a trusted host may be compromised,
 * and a next hop that honours them would send the mail elsewhere). From
 * untrusted clients, address literals are refused too, and anything whose
 * syntax address.h refused.
 */
#ifndef FERRY_NET_POLICY_H
#define FERRY_NET_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/address.h"

struct policy_network {
	sa_family_t family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];   /* network order; first 4 bytes for AF_INET */
	uint8_t prefix;     /* prefix length in bits */
};

/*
 * Parse "192.0.2.0/24", "2001:db8::/32", "127.0.0.1" (a host: /32 or /128).
 * Host bits set under the prefix are an error (a likely typo).
 * Returns 0 or -EINVAL.
 */
int policy_parse_network(const char *text, struct policy_network *out);

/* Does the address fall inside the network? IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d) match IPv4 networks. */
bool policy_network_contains(const struct policy_network *net, const struct sockaddr *addr);

/*
 * Relay domains, as a hash set built once at start-up: a lookup costs one
 * hash step per octet of the recipient's domain and one probe per label,
 * however many domains are configured. "example.com" matches that domain
 * only; ".example.com" matches every subdomain of example.com (not
 * itself), at a label boundary ("badexample.com" is not under it).
 * Matching is ASCII case-insensitive (domains are A-labels). Read-only once
 * built, so workers share one set without locking.
 */
struct policy_domains;

/*
 * Build the set from `count` names as configured ("example.com" or
 * ".example.com", any case; duplicates are harmless). The set keeps its own
 * lower-cased copy. Returns 0, -EINVAL for a NULL or empty name, -ENOMEM.
 */
int policy_domains_build(struct policy_domains **out, const char *const *names, size_t count);
void policy_domains_free(struct policy_domains *set);

/* Is this domain (len octets, any case) in the set? NULL is the empty set. */
bool policy_domains_contain(const struct policy_domains *set, const char *domain, size_t len);

struct policy {
	const struct policy_network *trusted; /* clients that may relay anywhere */
	size_t ntrusted;
	struct policy_domains *relay_domains; /* NULL: none; freed by who built it */
};

bool policy_client_trusted(const struct policy *p, const struct sockaddr *client);

/* Is this domain (any case) one ferry relays for? */
bool policy_is_relay_domain(const struct policy *p, const char *domain, size_t len);

enum policy_verdict {
	POLICY_ACCEPT = 0,
	POLICY_RELAY_DENIED,  /* 554 5.7.1 relay access denied */
	POLICY_ROUTING_DENIED /* 554 5.7.1: %-hack, bang path, quoted @ */
};

/* Judge one parsed recipient (address_parse_path() returned ADDRESS_OK). */
enum policy_verdict policy_check_recipient(const struct policy *p, bool client_trusted,
					   const struct mailbox *rcpt);

#endif
