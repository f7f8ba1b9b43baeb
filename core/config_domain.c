#include "core/config_domain.h"

#include "core/array.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_DOMAIN_DAY_MS 86400000u

enum config_domain_type {
	CONFIG_DOMAIN_STRING,
	CONFIG_DOMAIN_BOOL,
	CONFIG_DOMAIN_UINT,     /* uint32_t */
	CONFIG_DOMAIN_COUNT,    /* uint64_t, a plain number */
	CONFIG_DOMAIN_SIZE,     /* uint64_t octets */
	CONFIG_DOMAIN_DURATION, /* uint32_t milliseconds */
};

struct config_domain_key {
	const char *name;
	enum config_domain_type type;
	size_t offset, size;
	uint64_t min, max;
};

#define DOMAIN_KEY(name, type, field, lo, hi)                                                      \
	{                                                                                          \
#name, type, offsetof(struct config_domain, field),                                \
			sizeof(((struct config_domain *)0)->field), lo, hi                         \
	}

/* The keys of a [domain] section: parsing, duplicates and printing walk
 * this table, so a new key (ETRN's, say) is one line here. */
static const struct config_domain_key config_domain_keys[] = {
	DOMAIN_KEY(transport, CONFIG_DOMAIN_STRING, transport, 0, 0),
	DOMAIN_KEY(hold, CONFIG_DOMAIN_BOOL, hold, 0, 1),
	DOMAIN_KEY(concurrency, CONFIG_DOMAIN_UINT, concurrency, 0, 1000),
	DOMAIN_KEY(max_messages, CONFIG_DOMAIN_COUNT, max_messages, 0, UINT64_MAX),
	DOMAIN_KEY(max_size, CONFIG_DOMAIN_SIZE, max_size, 0, UINT64_MAX),
	DOMAIN_KEY(queue_lifetime, CONFIG_DOMAIN_DURATION, queue_lifetime_ms, 0,
		   30 * CONFIG_DOMAIN_DAY_MS),
	DOMAIN_KEY(etrn_networks, CONFIG_DOMAIN_STRING, etrn_networks, 0, 0),
	DOMAIN_KEY(etrn_counts, CONFIG_DOMAIN_BOOL, etrn_counts, 0, 1),
	DOMAIN_KEY(etrn_nodes, CONFIG_DOMAIN_STRING, etrn_nodes, 0, 0),
	DOMAIN_KEY(etrn_queues, CONFIG_DOMAIN_STRING, etrn_queues, 0, 0),
};
#define CONFIG_DOMAIN_NKEYS (sizeof(config_domain_keys) / sizeof(config_domain_keys[0]))
_Static_assert(CONFIG_DOMAIN_NKEYS <= 32, "keys_set holds a bit per key");

/* RFC 1035 host name syntax: labels of 1..63 letters, digits and hyphens,
 * no hyphen first or last, at most 253 octets in all. */
static bool config_domain_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > CONFIG_DOMAIN_NAME_MAX)
		return false;
	size_t label = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || name[i] == '.') {
			if (label == 0 || label > 63 || name[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)name[i]) && name[i] != '-')
			return false;
		if (label == 0 && name[i] == '-')
			return false;
		label++;
	}
	return true;
}

static int config_domain_add(struct config *cfg, const char *name, size_t len, bool subdomains,
			     unsigned line, struct config_domain **out)
{
	if (array_reserve(cfg->domains, cfg->domains_cap, cfg->ndomains + 1) != 0)
		return -ENOMEM;
	struct config_domain *d = &cfg->domains[cfg->ndomains++];
	memset(d, 0, sizeof(*d));
	for (size_t i = 0; i < len; i++)
		d->name[i] = (char)tolower((unsigned char)name[i]);
	d->subdomains = subdomains;
	d->line = line;
	d->etrn_counts = true;
	*out = d;
	return 0;
}

int config_domain_defaults(struct config *cfg)
{
	/* A domain to try ferry with: its mail is held, and a `transport`
	 * points at a local test sink for when delivery is switched on. */
	struct config_domain *d;
	int r = config_domain_add(cfg, "demo.test", strlen("demo.test"), false, 0, &d);
	if (r != 0)
		return r;
	snprintf(d->transport, sizeof(d->transport), "[127.0.0.1]:2526");
	d->hold = true;
	/* ETRN demo.test from this machine releases it. */
	snprintf(d->etrn_networks, sizeof(d->etrn_networks), "127.0.0.0/8, ::1/128");
	return 0;
}

struct config_domain_index {
	uint32_t mask;   /* capacity - 1, a power of two */
	size_t count;    /* the sections indexed: stale when cfg->ndomains differs */
	uint32_t *slots; /* index into cfg->domains + 1; 0: empty */
};

static void config_domain_index_free(struct config *cfg)
{
	if (cfg->domain_index != NULL)
		free(cfg->domain_index->slots);
	free(cfg->domain_index);
	cfg->domain_index = NULL;
}

/* FNV-1a of the lower-cased name and whether it is a ".name" section. */
static uint32_t config_domain_hash(const char *name, size_t len, bool subdomains)
{
	uint32_t h = subdomains ? 0x811c9dc5u ^ 0x2eu : 0x811c9dc5u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)tolower((unsigned char)name[i])) * 0x01000193u;
	return h;
}

static void config_domain_index_put(struct config_domain_index *ix, const struct config *cfg,
				    size_t i)
{
	const struct config_domain *d = &cfg->domains[i];
	uint32_t h = config_domain_hash(d->name, strlen(d->name), d->subdomains);
	while (ix->slots[h & ix->mask] != 0)
		h++;
	ix->slots[h & ix->mask] = (uint32_t)i + 1;
}

void config_domain_index(struct config *cfg)
{
	config_domain_index_free(cfg);
	struct config_domain_index *ix = calloc(1, sizeof(*ix));
	uint32_t cap = 16;
	while (cap < cfg->ndomains * 2)
		cap *= 2;
	if (ix == NULL || (ix->slots = calloc(cap, sizeof(*ix->slots))) == NULL) {
		free(ix);
		return;
	}
	ix->mask = cap - 1;
	ix->count = cfg->ndomains;
	for (size_t i = 0; i < cfg->ndomains; i++)
		config_domain_index_put(ix, cfg, i);
	cfg->domain_index = ix;
}

/* The section just added (the last) into the index, kept at most half
 * full: the file's sections are indexed as they come, so that finding a
 * section given twice costs a probe, not a scan of all before it. */
static void config_domain_index_added(struct config *cfg)
{
	struct config_domain_index *ix = cfg->domain_index;
	if (ix == NULL || ix->count + 1 != cfg->ndomains || cfg->ndomains * 2 > ix->mask + 1) {
		config_domain_index(cfg); /* stale, missing or full: built anew */
		return;
	}
	config_domain_index_put(ix, cfg, cfg->ndomains - 1);
	ix->count++;
}

static const struct config_domain *config_domain_probe(const struct config *cfg, const char *name,
						       size_t len, bool subdomains)
{
	const struct config_domain_index *ix = cfg->domain_index;
	for (uint32_t h = config_domain_hash(name, len, subdomains);; h++) {
		uint32_t slot = ix->slots[h & ix->mask];
		if (slot == 0)
			return NULL;
		const struct config_domain *d = &cfg->domains[slot - 1];
		if (d->subdomains == subdomains && strlen(d->name) == len &&
		    strncasecmp(d->name, name, len) == 0)
			return d;
	}
}

/* The section written exactly so (NULL: none): by the index while it is
 * current, else by a scan. */
static const struct config_domain *config_domain_named(const struct config *cfg, const char *name,
						       size_t len, bool subdomains)
{
	if (cfg->domain_index != NULL && cfg->domain_index->count == cfg->ndomains)
		return config_domain_probe(cfg, name, len, subdomains);
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];
		if (d->subdomains == subdomains && strlen(d->name) == len &&
		    strncasecmp(d->name, name, len) == 0)
			return d;
	}
	return NULL;
}

void config_domain_free(struct config *cfg)
{
	config_domain_index_free(cfg);
	free(cfg->domains);
	cfg->domains = NULL;
	cfg->ndomains = 0;
	cfg->domains_cap = 0;
}

int config_domain_begin(struct config *cfg, const char *name, unsigned line, char *why,
			size_t why_size)
{
	while (isspace((unsigned char)*name))
		name++;
	size_t len = strlen(name);
	while (len > 0 && isspace((unsigned char)name[len - 1]))
		len--;
	if (len == 0) {
		snprintf(why, why_size,
			 "[domain] lacks its name (e.g. [domain customer.example], or [domain "
			 ".customer.example] for its subdomains)");
		return -EINVAL;
	}
	bool subdomains = name[0] == '.';
	if (subdomains) {
		name++;
		len--;
	}
	if (!config_domain_name_valid(name, len)) {
		snprintf(why, why_size,
			 "[domain %.*s]: not a domain name (e.g. [domain customer.example], or "
			 "[domain .customer.example] for its subdomains)",
			 (int)(len + subdomains), name - subdomains);
		return -EINVAL;
	}
	if (!cfg->domains_from_file) {
		config_domain_free(cfg);
		cfg->domains_from_file = true;
	}
	const struct config_domain *twice = config_domain_named(cfg, name, len, subdomains);
	if (twice != NULL) {
		snprintf(why, why_size,
			 "[domain %s%s] given twice (first on line %u): merge the two",
			 subdomains ? "." : "", twice->name, twice->line);
		return -EINVAL;
	}
	struct config_domain *d;
	if (config_domain_add(cfg, name, len, subdomains, line, &d) != 0) {
		snprintf(why, why_size, "out of memory");
		return -ENOMEM;
	}
	config_domain_index_added(cfg);
	return (int)(cfg->ndomains - 1);
}

static int config_domain_parse_value(const struct config_domain_key *k, const char *value,
				     void *field, char *why, size_t why_size)
{
	uint64_t v64 = 0;
	uint32_t v32 = 0;
	bool yes;
	switch (k->type) {
	case CONFIG_DOMAIN_STRING:
		if (strlen(value) >= k->size) {
			snprintf(why, why_size, "too long (at most %zu characters)", k->size - 1);
			return -EINVAL;
		}
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case CONFIG_DOMAIN_BOOL:
		if (config_parse_bool(value, &yes) != 0) {
			snprintf(why, why_size, "not yes or no: '%s'", value);
			return -EINVAL;
		}
		*(bool *)field = yes;
		return 0;
	case CONFIG_DOMAIN_UINT:
	case CONFIG_DOMAIN_COUNT:
		if (config_parse_count(value, &v64) != 0) {
			snprintf(why, why_size, "not a whole number: '%s'", value);
			return -EINVAL;
		}
		break;
	case CONFIG_DOMAIN_SIZE:
		if (config_parse_size(value, &v64) != 0) {
			snprintf(why, why_size, "not a size (e.g. 10485760, 10M): '%s'", value);
			return -EINVAL;
		}
		break;
	case CONFIG_DOMAIN_DURATION:
		if (config_parse_duration_ms(value, &v32) != 0) {
			snprintf(why, why_size, "not a duration (e.g. 300s, 5m, 2d): '%s'", value);
			return -EINVAL;
		}
		v64 = v32;
		break;
	}
	if (v64 < k->min || v64 > k->max) {
		char lo[32], hi[32];
		if (k->type == CONFIG_DOMAIN_DURATION)
			snprintf(why, why_size, "out of range %s..%s: '%s'",
				 config_format_duration((uint32_t)k->min, lo, sizeof(lo)),
				 config_format_duration((uint32_t)k->max, hi, sizeof(hi)), value);
		else
			snprintf(why, why_size, "out of range %llu..%llu: '%s'",
				 (unsigned long long)k->min, (unsigned long long)k->max, value);
		return -EINVAL;
	}
	if (k->size == sizeof(uint64_t))
		*(uint64_t *)field = v64;
	else
		*(uint32_t *)field = (uint32_t)v64;
	return 0;
}

int config_domain_set(struct config_domain *d, const char *key, const char *value,
		      uint32_t *keys_set, char *why, size_t why_size)
{
	for (size_t i = 0; i < CONFIG_DOMAIN_NKEYS; i++) {
		const struct config_domain_key *k = &config_domain_keys[i];
		if (strcmp(k->name, key) != 0)
			continue;
		if (*keys_set & (1u << i)) {
			snprintf(why, why_size, "set twice in [domain %s%s] (remove one of them)",
				 d->subdomains ? "." : "", d->name);
			return -EINVAL;
		}
		*keys_set |= 1u << i;
		return config_domain_parse_value(k, value, (char *)d + k->offset, why, why_size);
	}
	snprintf(why, why_size,
		 "unknown key in section [domain %s%s] (known: transport, hold, concurrency, "
		 "max_messages, max_size, queue_lifetime, etrn_networks, etrn_counts, "
		 "etrn_nodes, etrn_queues)",
		 d->subdomains ? "." : "", d->name);
	return -EINVAL;
}

void config_domain_print(const struct config *cfg, FILE *out)
{
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];
		fprintf(out, "\n[domain %s%s]\n", d->subdomains ? "." : "", d->name);
		for (size_t j = 0; j < CONFIG_DOMAIN_NKEYS; j++) {
			const struct config_domain_key *k = &config_domain_keys[j];
			const char *field = (const char *)d + k->offset;
			char text[32];
			fprintf(out, "%s = ", k->name);
			switch (k->type) {
			case CONFIG_DOMAIN_STRING:
				fprintf(out, "%s\n", field);
				break;
			case CONFIG_DOMAIN_BOOL:
				fprintf(out, "%s\n", *(const bool *)field ? "yes" : "no");
				break;
			case CONFIG_DOMAIN_UINT:
				fprintf(out, "%u\n", *(const uint32_t *)field);
				break;
			case CONFIG_DOMAIN_COUNT:
			case CONFIG_DOMAIN_SIZE:
				fprintf(out, "%llu\n",
					(unsigned long long)*(const uint64_t *)field);
				break;
			case CONFIG_DOMAIN_DURATION:
				fprintf(out, "%s\n",
					config_format_duration(*(const uint32_t *)field, text,
							       sizeof(text)));
				break;
			}
		}
	}
}

const struct config_domain *config_domain_find(const struct config *cfg, const char *domain,
					       size_t len)
{
	if (cfg->domain_index != NULL && cfg->domain_index->count == cfg->ndomains) {
		const struct config_domain *d = config_domain_probe(cfg, domain, len, false);
		/* Else the closest parent's ".name": the longest first. */
		for (size_t i = 0; d == NULL && i < len; i++)
			if (domain[i] == '.')
				d = config_domain_probe(cfg, domain + i + 1, len - i - 1, true);
		return d;
	}
	const struct config_domain *best = NULL;
	size_t best_len = 0;
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];
		size_t n = strlen(d->name);
		if (!d->subdomains) {
			if (n == len && strncasecmp(d->name, domain, len) == 0)
				return d; /* the name itself beats any parent's entry */
			continue;
		}
		if (len > n && domain[len - n - 1] == '.' &&
		    strncasecmp(domain + len - n, d->name, n) == 0 &&
		    (best == NULL || n > best_len)) {
			best = d;
			best_len = n;
		}
	}
	return best;
}
