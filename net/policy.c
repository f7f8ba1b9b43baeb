/*
 * policy — relay decisions. See policy.h for the contract.
 *
 * IPv4 addresses have two spellings on the wire: AF_INET, and ::ffff:a.b.c.d
 * from a dual-stack socket. Both sides of a match are reduced to one form
 * first, so that whether a client is trusted never depends on how the
 * listener was bound: a mapped client is an IPv4 client, and a network
 * inside ::ffff:0:0/96 is an IPv4 network. IPv6 networks wider than that
 * (::/0 included) therefore never cover IPv4 clients.
 */
#include "net/policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#define POLICY_MAPPED_PREFIX_BITS 96

static const uint8_t policy_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};

/* An address or network reduced to the form that matching compares. */
struct policy_canonical {
	sa_family_t family;
	const uint8_t *addr;
	unsigned prefix;
};

static bool policy_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned full_bytes = prefix / 8;
	unsigned rest_bits = prefix % 8;

	if (memcmp(a, b, full_bytes) != 0)
		return false;
	if (rest_bits == 0)
		return true;
	uint8_t mask = (uint8_t)(0xFFu << (8 - rest_bits));

	return ((a[full_bytes] ^ b[full_bytes]) & mask) == 0;
}

static bool policy_host_bits_clear(const uint8_t *addr, unsigned addr_bytes, unsigned prefix)
{
	for (unsigned i = 0; i < addr_bytes; i++) {
		unsigned network_bits = prefix > i * 8 ? prefix - i * 8 : 0;

		if (network_bits > 8)
			network_bits = 8;
		if (addr[i] & (uint8_t)(0xFFu >> network_bits))
			return false;
	}
	return true;
}

/* Decimal, 1 to 3 digits, nothing else: "/ 24", "/+24" and "/24x" are typos
 * an operator wants reported, not guessed at. */
static int policy_parse_prefix(const char *text, unsigned max, unsigned *out)
{
	unsigned value = 0;
	size_t digits = 0;

	for (; text[digits] != '\0'; digits++) {
		if (digits == 3 || text[digits] < '0' || text[digits] > '9')
			return -EINVAL;
		value = value * 10 + (unsigned)(text[digits] - '0');
	}
	if (digits == 0 || value > max)
		return -EINVAL;
	*out = value;
	return 0;
}

int policy_parse_network(const char *text, struct policy_network *out)
{
	struct policy_network net = {0};
	char host[INET6_ADDRSTRLEN];
	const char *slash;
	size_t host_len;
	unsigned max_prefix;
	unsigned prefix;

	if (text == NULL || out == NULL)
		return -EINVAL;
	slash = strchr(text, '/');
	host_len = slash != NULL ? (size_t)(slash - text) : strlen(text);
	if (host_len == 0 || host_len >= sizeof(host))
		return -EINVAL;
	memcpy(host, text, host_len);
	host[host_len] = '\0';

	if (inet_pton(AF_INET, host, net.addr) == 1) {
		net.family = AF_INET;
		max_prefix = 32;
	} else if (inet_pton(AF_INET6, host, net.addr) == 1) {
		net.family = AF_INET6;
		max_prefix = 128;
	} else {
		return -EINVAL;
	}

	prefix = max_prefix;
	if (slash != NULL && policy_parse_prefix(slash + 1, max_prefix, &prefix) < 0)
		return -EINVAL;
	if (!policy_host_bits_clear(net.addr, max_prefix / 8, prefix))
		return -EINVAL;
	net.prefix = (uint8_t)prefix;
	*out = net;
	return 0;
}

static bool policy_network_canonical(const struct policy_network *net, struct policy_canonical *out)
{
	out->family = net->family;
	out->addr = net->addr;
	out->prefix = net->prefix;
	if (net->family == AF_INET)
		return net->prefix <= 32;
	if (net->family != AF_INET6 || net->prefix > 128)
		return false;
	if (net->prefix >= POLICY_MAPPED_PREFIX_BITS &&
	    memcmp(net->addr, policy_mapped_prefix, sizeof(policy_mapped_prefix)) == 0) {
		out->family = AF_INET;
		out->addr = net->addr + sizeof(policy_mapped_prefix);
		out->prefix = net->prefix - POLICY_MAPPED_PREFIX_BITS;
	}
	return true;
}

/* storage receives the address bytes; copying the sockaddr out rather than
 * casting the pointer keeps us clear of alignment and aliasing trouble with
 * whatever buffer the caller's accept() filled. */
static bool policy_client_canonical(const struct sockaddr *client, uint8_t storage[16],
				    struct policy_canonical *out)
{
	if (client == NULL)
		return false;
	out->addr = storage;
	if (client->sa_family == AF_INET) {
		struct sockaddr_in sin;

		memcpy(&sin, client, sizeof(sin));
		memcpy(storage, &sin.sin_addr, 4);
		out->family = AF_INET;
		out->prefix = 32;
		return true;
	}
	if (client->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;

		memcpy(&sin6, client, sizeof(sin6));
		memcpy(storage, &sin6.sin6_addr, 16);
		out->family = AF_INET6;
		out->prefix = 128;
		if (memcmp(storage, policy_mapped_prefix, sizeof(policy_mapped_prefix)) == 0) {
			out->family = AF_INET;
			out->addr = storage + sizeof(policy_mapped_prefix);
			out->prefix = 32;
		}
		return true;
	}
	return false;
}

bool policy_network_contains(const struct policy_network *net, const struct sockaddr *addr)
{
	struct policy_canonical network;
	struct policy_canonical client;
	uint8_t storage[16];

	if (net == NULL || !policy_network_canonical(net, &network) ||
	    !policy_client_canonical(addr, storage, &client))
		return false;
	return network.family == client.family &&
	       policy_prefix_equal(network.addr, client.addr, network.prefix);
}

bool policy_client_trusted(const struct policy *p, const struct sockaddr *client)
{
	if (p == NULL || client == NULL)
		return false;
	for (size_t i = 0; i < p->ntrusted; i++) {
		if (policy_network_contains(&p->trusted[i], client))
			return true;
	}
	return false;
}

bool policy_is_relay_domain(const struct policy *p, const char *domain, size_t len)
{
	if (p == NULL || domain == NULL || len == 0)
		return false;
	for (size_t i = 0; i < p->nrelay_domains; i++) {
		const char *entry = p->relay_domains[i];
		size_t entry_len;

		if (entry == NULL || (entry_len = strlen(entry)) == 0)
			continue;
		if (entry[0] == '.') {
			/* The entry's own leading dot is the label boundary, so
			 * "badexample.com" cannot end in ".example.com"; demanding
			 * a longer domain keeps the parent itself out. */
			if (len > entry_len &&
			    address_ascii_equal_nocase(domain + len - entry_len, entry, entry_len))
				return true;
		} else if (len == entry_len && address_ascii_equal_nocase(domain, entry, len)) {
			return true;
		}
	}
	return false;
}

enum policy_verdict policy_check_recipient(const struct policy *p, bool client_trusted,
					   const struct mailbox *rcpt)
{
	if (rcpt == NULL)
		return POLICY_RELAY_DENIED;
	if (client_trusted)
		return POLICY_ACCEPT;
	/* Routing is judged before the domain: "user%other@relay" names a
	 * relay domain precisely so that it will be accepted. */
	if (address_local_has_routing(rcpt))
		return POLICY_ROUTING_DENIED;
	if (rcpt->domain_literal || rcpt->domain == NULL)
		return POLICY_RELAY_DENIED;
	/* address_parse_path() already refused bad domains; checking again costs
	 * little and keeps a caller that skipped it from opening the relay with
	 * a suffix match such as "..sub.example" against ".sub.example". */
	if (!address_domain_valid(rcpt->domain, rcpt->domain_len, true))
		return POLICY_RELAY_DENIED;
	if (policy_is_relay_domain(p, rcpt->domain, rcpt->domain_len))
		return POLICY_ACCEPT;
	return POLICY_RELAY_DENIED;
}
