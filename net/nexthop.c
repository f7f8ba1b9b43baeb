#include "net/nexthop.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/address.h"

/* One word longer than this is no next hop anyone meant: a bracketed
 * 253-octet name with a port fits. */
#define NEXTHOP_WORD_MAX 320

static int nexthop_fail(char *err, size_t err_size, const char *fmt, const char *word,
			const char *detail)
{
	snprintf(err, err_size, fmt, word, detail);
	return -EINVAL;
}

/* The port after ':' ("" when the word has none: the default). */
static int nexthop_parse_port(const char *text, const char *word, uint16_t *port, char *err,
			      size_t err_size)
{
	if (text == NULL) {
		*port = NEXTHOP_DEFAULT_PORT;
		return 0;
	}
	if (text[0] == '\0')
		return nexthop_fail(err, err_size, "'%s' has a ':' but no port after it%s", word,
				    "");
	if (strspn(text, "0123456789") != strlen(text))
		return nexthop_fail(err, err_size, "port '%2$s' in '%1$s' is not a number", word,
				    text);
	unsigned long port_number = strtoul(text, NULL, 10); /* digits only: ULONG_MAX at worst */
	if (port_number == 0 || port_number > 65535)
		return nexthop_fail(err, err_size, "port %2$s is out of range (1..65535) in '%1$s'",
				    word, text);
	*port = (uint16_t)port_number;
	return 0;
}

/* An IPv4 or IPv6 address (the latter optionally as "IPv6:..."): fill in
 * the literal parts of hop. False when host is no address. */
static bool nexthop_set_literal(struct nexthop *hop, const char *host)
{
	if (inet_pton(AF_INET, host, &hop->addr.in.sin_addr) == 1) {
		hop->addr.in.sin_family = AF_INET;
		hop->addr.in.sin_port = htons(hop->port);
		hop->addr_len = sizeof(hop->addr.in);
	} else {
		if (strncasecmp(host, "IPv6:", 5) == 0)
			host += 5;
		if (inet_pton(AF_INET6, host, &hop->addr.in6.sin6_addr) != 1)
			return false;
		hop->addr.in6.sin6_family = AF_INET6;
		hop->addr.in6.sin6_port = htons(hop->port);
		hop->addr_len = sizeof(hop->addr.in6);
	}
	hop->literal = true;
	snprintf(hop->host, sizeof(hop->host), "%s", host);
	return true;
}

static int nexthop_parse_word(const char *word, struct nexthop *hop, char *err, size_t err_size)
{
	char host[NEXTHOP_WORD_MAX + 1];
	const char *port_text = NULL;
	memset(hop, 0, sizeof(*hop));
	hop->mx_lookup = word[0] != '[';
	if (word[0] == '[') {
		const char *close = strchr(word, ']');
		if (close == NULL)
			return nexthop_fail(err, err_size, "'%s' lacks its ']'%s", word, "");
		if (close == word + 1)
			return nexthop_fail(err, err_size,
					    "'%s' has no host between its brackets%s", word, "");
		if (close[1] != '\0' && close[1] != ':')
			return nexthop_fail(err, err_size,
					    "'%s' has '%s' after its ']' (only ':port' may follow)",
					    word, close + 1);
		snprintf(host, sizeof(host), "%.*s", (int)(close - word - 1), word + 1);
		port_text = close[1] == ':' ? close + 2 : NULL;
	} else {
		const char *colon = strchr(word, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL)
			return nexthop_fail(
				err, err_size,
				"'%s' looks like an IPv6 address: write it in brackets, "
				"as [2001:db8::1]:25%s",
				word, "");
		size_t len = colon != NULL ? (size_t)(colon - word) : strlen(word);
		snprintf(host, sizeof(host), "%.*s", (int)len, word);
		port_text = colon != NULL ? colon + 1 : NULL;
		if (host[0] == '\0')
			return nexthop_fail(err, err_size, "'%s' has no host before its port%s",
					    word, "");
	}
	int r = nexthop_parse_port(port_text, word, &hop->port, err, err_size);
	if (r != 0)
		return r;
	if (nexthop_set_literal(hop, host)) {
		if (hop->mx_lookup)
			return nexthop_fail(
				err, err_size,
				"'%s' is an IP address: write it in brackets, as "
				"'[%s]' (without them its MX records would be looked up)",
				word, host);
		return 0;
	}
	if (strlen(host) >= sizeof(hop->host) || !address_domain_valid(host, strlen(host), false))
		return nexthop_fail(err, err_size,
				    "'%s' is neither a host name (e.g. mx.example.com) nor an IP "
				    "address%s",
				    host, "");
	/* RFC 3696 2: no top-level domain is all digits; such a name is an
	 * IP address with a typo, which DNS would be asked about in vain. */
	const char *last = strrchr(host, '.');
	last = last != NULL ? last + 1 : host;
	if (strspn(last, "0123456789") == strlen(last))
		return nexthop_fail(err, err_size,
				    "'%s' is neither a host name nor an IP address (a mistyped "
				    "address?)%s",
				    host, "");
	snprintf(hop->host, sizeof(hop->host), "%s", host);
	return 0;
}

struct nexthop_parse_state {
	struct nexthop_list *out;
	char *err;
	size_t err_size;
};

static int nexthop_parse_one(void *arg, const char *p, size_t n)
{
	struct nexthop_parse_state *st = arg;
	char word[NEXTHOP_WORD_MAX + 1];
	if (n > NEXTHOP_WORD_MAX)
		return nexthop_fail(st->err, st->err_size,
				    "'%.40s...' is too long for a next hop%s", p, "");
	if (st->out->count == NEXTHOP_MAX) {
		snprintf(st->err, st->err_size, "more than %d next hops (the most tried in turn)",
			 NEXTHOP_MAX);
		return -EINVAL;
	}
	snprintf(word, sizeof(word), "%.*s", (int)n, p);
	int r = nexthop_parse_word(word, &st->out->hops[st->out->count], st->err, st->err_size);
	if (r == 0)
		st->out->count++;
	return r;
}

int nexthop_parse(const char *text, struct nexthop_list *out, char *err, size_t err_size)
{
	struct nexthop_parse_state st = {out, err, err_size};
	out->count = 0;
	int r = config_split_words(text, nexthop_parse_one, &st);
	if (r != 0)
		return r;
	if (out->count == 0) {
		snprintf(err, err_size, "no next hop given");
		return -EINVAL;
	}
	return 0;
}

/* "FILE:LINE: " for a key set on `line`, "FILE: " for a default. */
static const char *nexthop_where(const struct config *cfg, unsigned line, char *out, size_t size)
{
	if (line == 0)
		snprintf(out, size, "(built-in defaults): ");
	else
		snprintf(out, size, "%s:%u: ", cfg->source, line);
	return out;
}

int nexthop_check_config(const struct config *cfg, char *err, size_t err_size)
{
	struct nexthop_list hops;
	char why[512], where[600];
	if (cfg->relayhost[0] != '\0' &&
	    nexthop_parse(cfg->relayhost, &hops, why, sizeof(why)) != 0) {
		unsigned line = config_key_line(cfg, "delivery", "relayhost");
		snprintf(err, err_size, "%skey 'relayhost': %s",
			 nexthop_where(cfg, line, where, sizeof(where)), why);
		return -EINVAL;
	}
	struct in6_addr any;
	if (cfg->source_address[0] != '\0' && inet_pton(AF_INET, cfg->source_address, &any) != 1 &&
	    inet_pton(AF_INET6, cfg->source_address, &any) != 1) {
		unsigned line = config_key_line(cfg, "delivery", "source_address");
		snprintf(err, err_size,
			 "%skey 'source_address': not an IPv4 or IPv6 address (e.g. 192.0.2.25, "
			 "2001:db8::25): '%s'",
			 nexthop_where(cfg, line, where, sizeof(where)), cfg->source_address);
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];
		if (d->transport[0] == '\0' ||
		    nexthop_parse(d->transport, &hops, why, sizeof(why)) == 0)
			continue;
		snprintf(err, err_size, "%s[domain %s%s] key 'transport': %s",
			 nexthop_where(cfg, d->line, where, sizeof(where)),
			 d->subdomains ? "." : "", d->name, why);
		return -EINVAL;
	}
	return 0;
}
