/*
 * outbound_settings — what every worker's delivery reads, resolved from
 * one generation's config (outbound.h): transports and relayhost parsed,
 * the relay's own addresses gathered, the per-domain rules and their
 * shared quota counters; and what stays for the whole run (the shared
 * part: the store, each worker's delivery, the resolver's servers).
 */
#include "net/outbound.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- settings ---------------------------------------------------------------- */

static int outbound_parse_source(struct outbound_settings *s, const char *text, char *err,
				 size_t err_size)
{
	if (text[0] == '\0')
		return 0;
	memset(&s->source, 0, sizeof(s->source));
	if (inet_pton(AF_INET, text, &s->source.in.sin_addr) == 1) {
		s->source.in.sin_family = AF_INET;
		s->source_len = sizeof(s->source.in);
		return 0;
	}
	if (inet_pton(AF_INET6, text, &s->source.in6.sin6_addr) == 1) {
		s->source.in6.sin6_family = AF_INET6;
		s->source_len = sizeof(s->source.in6);
		return 0;
	}
	snprintf(err, err_size, "[delivery] source_address '%s': not an IPv4 or IPv6 address",
		 text);
	return -EINVAL;
}

/* The interfaces' addresses, for telling an MX that is this relay. */
static int outbound_local_addresses(struct outbound_settings *s)
{
	struct ifaddrs *list;
	if (getifaddrs(&list) != 0)
		return 0; /* only the listen addresses count then */
	unsigned n = 0;
	for (struct ifaddrs *i = list; i != NULL; i = i->ifa_next)
		n += i->ifa_addr != NULL &&
		     (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6);
	s->local = calloc(n ? n : 1, sizeof(*s->local));
	if (s->local == NULL) {
		freeifaddrs(list);
		return -ENOMEM;
	}
	for (struct ifaddrs *i = list; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL)
			continue;
		if (i->ifa_addr->sa_family == AF_INET)
			memcpy(&s->local[s->nlocal++], i->ifa_addr, sizeof(struct sockaddr_in));
		else if (i->ifa_addr->sa_family == AF_INET6)
			memcpy(&s->local[s->nlocal++], i->ifa_addr, sizeof(struct sockaddr_in6));
	}
	freeifaddrs(list);
	return 0;
}

int outbound_shared_init(struct outbound_shared *sh, const struct config *cfg,
			 struct queue_store *store, char *err, size_t err_size)
{
	unsigned workers = cfg->workers ? cfg->workers : 1;
	*sh = (struct outbound_shared){
		.store = store,
		.nworkers = cfg->workers,
		/* Each worker's share of the total, rounded up. */
		.max_connections = (cfg->max_outbound_connections + workers - 1) / workers,
	};
	snprintf(sh->dns_servers, sizeof(sh->dns_servers), "%s", cfg->dns_servers);
	sh->dns = (struct dns_config){.servers = sh->dns_servers};
	sh->workers = calloc(workers, sizeof(*sh->workers));
	if (sh->workers == NULL) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

void outbound_shared_free(struct outbound_shared *sh)
{
	free(sh->workers);
	sh->workers = NULL;
}

int outbound_settings_create(struct outbound_settings **out, const struct config *cfg,
			     const struct outbound_shared *shared, char *err, size_t err_size)
{
	*out = NULL;
	struct outbound_settings *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	*s = (struct outbound_settings){
		.cfg = cfg,
		.shared = shared,
		.connect_timeout_ms = cfg->connect_timeout_ms,
		.greeting_timeout_ms = cfg->greeting_timeout_ms,
		.command_timeout_ms = cfg->command_timeout_ms,
		.data_init_timeout_ms = cfg->data_init_timeout_ms,
		.data_block_timeout_ms = cfg->data_block_timeout_ms,
		.data_done_timeout_ms = cfg->data_done_timeout_ms,
		.reuse_time_ms = cfg->connection_reuse_time_ms,
		.retry_initial_ms = cfg->retry_initial_ms,
		.retry_factor = cfg->retry_factor,
		.retry_max_ms = cfg->retry_max_ms,
		.lifetime_ms = cfg->max_queue_lifetime_ms,
		.concurrency = cfg->concurrency,
		.rcpts_per_transaction = cfg->recipients_per_transaction,
		.destination_failures = cfg->destination_failures,
		.destination_backoff_ms = cfg->destination_backoff_ms,
	};
	snprintf(s->helo_name, sizeof(s->helo_name), "%s", cfg->hostname);
	s->smtp_port = (uint16_t)cfg->smtp_port;
	for (unsigned i = 0; i < cfg->nlisten; i++)
		s->listen[s->nlisten++] = cfg->listen[i].addr;
	char why[256];
	if (outbound_local_addresses(s) != 0) {
		snprintf(err, err_size, "out of memory");
		outbound_settings_destroy(s);
		return -ENOMEM;
	}
	if (outbound_parse_source(s, cfg->source_address, err, err_size) != 0) {
		outbound_settings_destroy(s);
		return -EINVAL;
	}
	if (cfg->relayhost[0] != '\0' &&
	    nexthop_parse(cfg->relayhost, &s->relayhost, why, sizeof(why)) != 0) {
		snprintf(err, err_size, "[delivery] relayhost '%s': %s", cfg->relayhost, why);
		outbound_settings_destroy(s);
		return -EINVAL;
	}
	s->rules = calloc(cfg->ndomains ? cfg->ndomains : 1, sizeof(*s->rules));
	if (s->rules == NULL) {
		snprintf(err, err_size, "out of memory");
		outbound_settings_destroy(s);
		return -ENOMEM;
	}
	s->nrules = cfg->ndomains;
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];
		s->rules[i].domain = d;
		s->rules[i].quota = d->max_messages != 0 || d->max_size != 0;
		s->quotas |= s->rules[i].quota;
		if (d->transport[0] != '\0' &&
		    nexthop_parse(d->transport, &s->rules[i].transport, why, sizeof(why)) != 0) {
			snprintf(err, err_size, "%s:%u: [domain %s%s] transport '%s': %s",
				 cfg->source, d->line, d->subdomains ? "." : "", d->name,
				 d->transport, why);
			outbound_settings_destroy(s);
			return -EINVAL;
		}
	}
	*out = s;
	return 0;
}

void outbound_settings_destroy(struct outbound_settings *s)
{
	if (s == NULL)
		return;
	free(s->local);
	free(s->rules);
	free(s);
}

bool outbound_queue_full(const struct outbound_settings *s, const char *domain, size_t len)
{
	if (!s->quotas)
		return false;
	const struct config_domain *cd = config_domain_find(s->cfg, domain, len);
	if (cd == NULL)
		return false;
	const struct outbound_rule *rule = &s->rules[cd - s->cfg->domains];
	return rule->quota &&
	       ((cd->max_messages != 0 &&
		 atomic_load_explicit(&rule->messages, memory_order_relaxed) >= cd->max_messages) ||
		(cd->max_size != 0 &&
		 atomic_load_explicit(&rule->bytes, memory_order_relaxed) >= cd->max_size));
}

const struct outbound_rule *outbound_rule_for(const struct outbound_settings *s, const char *domain,
					      size_t len)
{
	const struct config_domain *d = config_domain_find(s->cfg, domain, len);
	if (d == NULL)
		return NULL;
	return &s->rules[d - s->cfg->domains];
}
