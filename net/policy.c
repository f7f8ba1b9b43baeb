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
#include <stdlib.h>
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

/* ---- relay domains -------------------------------------------------------
 * Open addressing with linear probing, never more than half full, so a
 * probe always reaches an empty slot. Names are hashed from their last
 * octet to their first: hashing a recipient's domain from the right then
 * holds, at each '.', the hash of the suffix that starts there, and every
 * parent suffix costs one probe instead of another pass over its octets. */

struct policy_domain_slot {
	uint64_t hash;
	const char *name; /* NULL: an empty slot */
	size_t len;
};

struct policy_domains {
	struct policy_domain_slot *slots;
	size_t mask;    /* slots - 1, a power of two minus one */
	size_t longest; /* no longer suffix can match: the lookup stops there */
	char *names;    /* every name, lower-cased and NUL-terminated, end to end */
};

#define POLICY_DOMAINS_MIN_SLOTS 8
#define POLICY_FNV_BASIS         14695981039346656037ull /* FNV-1a, 64 bits */
#define POLICY_FNV_PRIME         1099511628211ull
#define POLICY_FIBONACCI         11400714819323198485ull /* 2^64 / golden ratio */

static unsigned char policy_ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

static uint64_t policy_hash_step(uint64_t hash, char c)
{
	return (hash ^ policy_ascii_lower((unsigned char)c)) * POLICY_FNV_PRIME;
}

/* FNV's low bits depend only on the low bits of the input: the slot comes
 * from the well-mixed high bits of a Fibonacci multiply instead. */
static size_t policy_domains_home(const struct policy_domains *set, uint64_t hash)
{
	return (size_t)((hash * POLICY_FIBONACCI) >> 32) & set->mask;
}

/* The slot holding name (any case), or the empty slot where it would go. */
static struct policy_domain_slot *policy_domains_probe(const struct policy_domains *set,
						       uint64_t hash, const char *name, size_t len)
{
	for (size_t i = policy_domains_home(set, hash);; i = (i + 1) & set->mask) {
		struct policy_domain_slot *slot = &set->slots[i];

		if (slot->name == NULL || (slot->hash == hash && slot->len == len &&
					   address_ascii_equal_nocase(slot->name, name, len)))
			return slot;
	}
}

void policy_domains_free(struct policy_domains *set)
{
	if (set == NULL)
		return;
	free(set->slots);
	free(set->names);
	free(set);
}

int policy_domains_build(struct policy_domains **out, const char *const *names, size_t count)
{
	struct policy_domains *set;
	size_t nslots = POLICY_DOMAINS_MIN_SLOTS;
	size_t total = 0;

	if (out == NULL || (names == NULL && count > 0))
		return -EINVAL;
	for (size_t i = 0; i < count; i++) {
		if (names[i] == NULL || names[i][0] == '\0')
			return -EINVAL;
		total += strlen(names[i]) + 1;
	}
	if (count > SIZE_MAX / 4)
		return -ENOMEM;
	while (nslots < 2 * count)
		nslots *= 2;
	set = calloc(1, sizeof(*set));
	if (set == NULL)
		return -ENOMEM;
	set->slots = calloc(nslots, sizeof(*set->slots));
	set->names = malloc(total > 0 ? total : 1);
	if (set->slots == NULL || set->names == NULL) {
		policy_domains_free(set);
		return -ENOMEM;
	}
	set->mask = nslots - 1;

	char *copy = set->names;

	for (size_t i = 0; i < count; i++) {
		size_t len = strlen(names[i]);
		uint64_t hash = POLICY_FNV_BASIS;

		for (size_t j = 0; j < len; j++)
			copy[j] = (char)policy_ascii_lower((unsigned char)names[i][j]);
		copy[len] = '\0';
		for (size_t j = len; j > 0; j--)
			hash = policy_hash_step(hash, copy[j - 1]);

		struct policy_domain_slot *slot = policy_domains_probe(set, hash, copy, len);

		if (slot->name != NULL)
			continue; /* a duplicate: its copy's room is reused */
		*slot = (struct policy_domain_slot){.hash = hash, .name = copy, .len = len};
		if (len > set->longest)
			set->longest = len;
		copy += len + 1;
	}
	*out = set;
	return 0;
}

bool policy_domains_contain(const struct policy_domains *set, const char *domain, size_t len)
{
	if (set == NULL || domain == NULL || len == 0)
		return false;
	size_t stop = len > set->longest ? len - set->longest : 0;
	uint64_t hash = POLICY_FNV_BASIS;

	for (size_t i = len; i > stop;) {
		i--;
		hash = policy_hash_step(hash, domain[i]);
		/* The '.' makes the boundary: ".example.com" is how subdomain
		 * names are kept, so "badexample.com" never probes for it. At
		 * i == 0 the suffix is the whole domain, never its own subdomain. */
		if (domain[i] == '.' && i > 0 &&
		    policy_domains_probe(set, hash, domain + i, len - i)->name != NULL)
			return true;
	}
	/* The hash now covers the whole domain, unless it is longer than any
	 * name; one starting with '.' could only meet a subdomain name. */
	if (stop > 0 || domain[0] == '.')
		return false;
	return policy_domains_probe(set, hash, domain, len)->name != NULL;
}

bool policy_is_relay_domain(const struct policy *p, const char *domain, size_t len)
{
	return p != NULL && policy_domains_contain(p->relay_domains, domain, len);
}

enum policy_verdict policy_check_recipient(const struct policy *p, bool client_trusted,
					   const struct mailbox *rcpt)
{
	if (rcpt == NULL)
		return POLICY_RELAY_DENIED;
	/* Routing is judged before the domain, "user%other@relay" names a
	 * relay domain precisely so that it will be accepted; and before
	 * trust, as a host in a trusted network may be compromised. */
	if (address_local_has_routing(rcpt))
		return POLICY_ROUTING_DENIED;
	if (client_trusted)
		return POLICY_ACCEPT;
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
