/*
 * nexthop — where a domain's mail is handed on: the text of a `transport`
 * or the `relayhost` (docs/config.md) parsed into next hops, tried in
 * order. Pure: no DNS, no sockets.
 *
 *   [mx.customer.example]:25   that host, no MX lookup
 *   [192.0.2.1]:2526           an IPv4 address (literal: addr is set)
 *   [2001:db8::1]:2526         an IPv6 address ("[IPv6:2001:db8::1]" too)
 *   mx.customer.example:2525   the MX records of that name first (as
 *                              Postfix), else its address
 *   a, b c                     several, separated by commas or spaces
 *
 * The port is 25 when not given. An IP address without brackets is
 * refused (it has no MX records to look up), as are more than
 * NEXTHOP_MAX hops.
 */
#ifndef FERRY_NET_NEXTHOP_H
#define FERRY_NET_NEXTHOP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"

#define NEXTHOP_MAX          8
#define NEXTHOP_DEFAULT_PORT 25

struct nexthop {
	char host[256]; /* as written, without brackets (an IP address: its text) */
	uint16_t port;  /* host order */
	bool mx_lookup; /* written without brackets: look up host's MX records */
	bool literal;   /* host is an IP address, and addr holds it with port */
	union {
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
		struct sockaddr sa;
	} addr;
	socklen_t addr_len; /* 0 unless literal */
};

struct nexthop_list {
	struct nexthop hops[NEXTHOP_MAX];
	unsigned count; /* at least 1 after a successful parse */
};

/*
 * Parse `text` into `out`. 0, or -EINVAL with err (err_size bytes) saying
 * what is wrong with which part, e.g. "port 70000 is out of range
 * (1..65535) in 'mx.example:70000'" or "'[mx.example' lacks its ']'".
 */
int nexthop_parse(const char *text, struct nexthop_list *out, char *err, size_t err_size);

/*
 * The check at start (and --check-config) of what config.c keeps as text
 * for delivery: relayhost and every [domain]'s transport parse, and
 * source_address is an IP address. 0, or -EINVAL with err naming the
 * file, line (or [domain] section) and key.
 */
int nexthop_check_config(const struct config *cfg, char *err, size_t err_size);

#endif
