/*
 * etrn — the argument, the policy and the replies of RFC 1985's ETRN (see
 * etrn.h).
 */
#include "net/etrn.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/array.h"
#include "net/address.h"
#include "net/policy.h"

#define ETRN_QUEUE_NAME_MAX 63

/* A [domain] section's ETRN keys, parsed. */
struct etrn_section {
	const struct config_domain *domain;
	struct policy_network *networks;
	size_t nnetworks;
	char **nodes; /* lower-cased */
	size_t nnodes, nodes_cap;
	char **queues; /* lower-cased */
	size_t nqueues, queues_cap;
};

struct etrn_policy {
	const struct config *cfg;
	struct etrn_section *sections; /* parallel to cfg->domains */
	size_t nsections;
};

/* ---- the argument ------------------------------------------------------------------ */

static bool etrn_queue_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > ETRN_QUEUE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '-' && c != '_' && c != '.')
			return false;
	}
	return true;
}

int etrn_parse(const char *text, size_t len, struct etrn_argument *out)
{
	memset(out, 0, sizeof(*out));
	while (len > 0 && (text[0] == ' ' || text[0] == '\t')) {
		text++;
		len--;
	}
	while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	if (len == 0)
		return 500;
	char prefix = '\0';
	if (text[0] == '@' || text[0] == '#') {
		prefix = text[0];
		text++;
		len--;
	}
	out->form = prefix == '@'   ? ETRN_FORM_DOMAIN
		    : prefix == '#' ? ETRN_FORM_QUEUE
				    : ETRN_FORM_NODE;
	if (out->form == ETRN_FORM_QUEUE) {
		if (!etrn_queue_name_valid(text, len))
			return 501;
	} else {
		if (len > 1 && text[len - 1] == '.')
			len--; /* an absolute name's root */
		if (len > ETRN_NAME_MAX || !address_domain_valid(text, len, false))
			return 501;
		/* A node is fully qualified; @'s suffix may be a single label. */
		if (out->form == ETRN_FORM_NODE && memchr(text, '.', len) == NULL)
			return 501;
	}
	for (size_t i = 0; i < len; i++)
		out->name[i] = (char)tolower((unsigned char)text[i]);
	out->name[len] = '\0';
	out->len = len;
	size_t at = 0;
	if (prefix != '\0')
		out->shown[at++] = prefix;
	memcpy(out->shown + at, out->name, len + 1);
	return 0;
}

/* ---- the policy ---------------------------------------------------------------------- */

struct etrn_build {
	struct etrn_section *section;
	const char *key;
	char *why;
	size_t why_size;
};

static int etrn_add_network(void *arg, const char *word, size_t len)
{
	struct etrn_build *b = arg;
	struct etrn_section *s = b->section;
	char text[64];
	if (len >= sizeof(text))
		goto bad;
	memcpy(text, word, len);
	text[len] = '\0';
	struct policy_network net;
	if (policy_parse_network(text, &net) != 0)
		goto bad;
	struct policy_network *grown = realloc(s->networks, (s->nnetworks + 1) * sizeof(net));
	if (grown == NULL)
		return -ENOMEM;
	s->networks = grown;
	s->networks[s->nnetworks++] = net;
	return 0;
bad:
	snprintf(b->why, b->why_size,
		 "not a network (e.g. 192.0.2.0/24, 2001:db8::/32, without host bits): '%.*s'",
		 (int)(len < 64 ? len : 64), word);
	return -EINVAL;
}

static int etrn_add_name(void *arg, const char *word, size_t len)
{
	struct etrn_build *b = arg;
	struct etrn_section *s = b->section;
	bool node = strcmp(b->key, "etrn_nodes") == 0;
	struct etrn_argument parsed;
	char text[ETRN_NAME_MAX + 2];
	int n = snprintf(text, sizeof(text), "%s%.*s", node ? "" : "#",
			 (int)(len < ETRN_NAME_MAX ? len : ETRN_NAME_MAX), word);
	if (len > ETRN_NAME_MAX || etrn_parse(text, (size_t)n, &parsed) != 0 ||
	    parsed.form != (node ? ETRN_FORM_NODE : ETRN_FORM_QUEUE)) {
		snprintf(b->why, b->why_size,
			 node ? "not a fully qualified host name (e.g. mail.customer.example): "
				"'%.*s'"
			      : "not a queue name (letters, digits, '-', '_', '.'; at most 63): "
				"'%.*s'",
			 (int)(len < 64 ? len : 64), word);
		return -EINVAL;
	}
	char ***list = node ? &s->nodes : &s->queues;
	size_t *count = node ? &s->nnodes : &s->nqueues;
	size_t *cap = node ? &s->nodes_cap : &s->queues_cap;
	if (array_reserve(*list, *cap, *count + 1) != 0)
		return -ENOMEM;
	char *copy = strdup(parsed.name);
	if (copy == NULL)
		return -ENOMEM;
	(*list)[(*count)++] = copy;
	return 0;
}

int etrn_policy_build(struct etrn_policy **out, const struct config *cfg, char *err,
		      size_t err_size)
{
	struct etrn_policy *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->cfg = cfg;
	p->nsections = cfg->ndomains;
	p->sections = calloc(cfg->ndomains ? cfg->ndomains : 1, sizeof(*p->sections));
	if (p->sections == NULL) {
		free(p);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];
		struct etrn_section *s = &p->sections[i];
		s->domain = d;
		static const struct {
			const char *key;
			size_t offset;
			int (*add)(void *, const char *, size_t);
		} keys[] = {
			{"etrn_networks", offsetof(struct config_domain, etrn_networks),
			 etrn_add_network},
			{"etrn_nodes", offsetof(struct config_domain, etrn_nodes), etrn_add_name},
			{"etrn_queues", offsetof(struct config_domain, etrn_queues), etrn_add_name},
		};
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			char why[256] = "out of memory";
			struct etrn_build b = {s, keys[k].key, why, sizeof(why)};
			int r = config_split_words((const char *)d + keys[k].offset, keys[k].add,
						   &b);
			if (r == 0)
				continue;
			if (d->line > 0)
				snprintf(err, err_size, "%s: [domain %s%s] (line %u): key '%s': %s",
					 cfg->source, d->subdomains ? "." : "", d->name, d->line,
					 keys[k].key, why);
			else
				snprintf(err, err_size, "[domain %s%s] (built in): key '%s': %s",
					 d->subdomains ? "." : "", d->name, keys[k].key, why);
			etrn_policy_free(p);
			return r;
		}
	}
	*out = p;
	return 0;
}

void etrn_policy_free(struct etrn_policy *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->nsections; i++) {
		struct etrn_section *s = &p->sections[i];
		free(s->networks);
		for (size_t j = 0; j < s->nnodes; j++)
			free(s->nodes[j]);
		for (size_t j = 0; j < s->nqueues; j++)
			free(s->queues[j]);
		free(s->nodes);
		free(s->queues);
	}
	free(p->sections);
	free(p);
}

static const struct etrn_section *etrn_section_of(const struct etrn_policy *p,
						  const struct config_domain *d)
{
	return &p->sections[d - p->cfg->domains];
}

static bool etrn_listed(char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

/* May `client` release the mail that section d rules? */
static bool etrn_section_allows(const struct etrn_policy *p, const struct config_domain *d,
				const struct sockaddr *client)
{
	const struct etrn_section *s = etrn_section_of(p, d);
	for (size_t i = 0; i < s->nnetworks; i++)
		if (policy_network_contains(&s->networks[i], client))
			return true;
	return false;
}

static int etrn_plan_add(struct etrn_plan *plan, size_t *cap, enum etrn_match match,
			 const char *name, size_t len, const struct config_domain *section)
{
	if (array_reserve(plan->targets, *cap, plan->ntargets + 1) != 0)
		return -ENOMEM;
	plan->targets[plan->ntargets++] = (struct etrn_target){match, name, len, section};
	return 0;
}

/* Section d is involved: the client must be allowed it, and it may hide
 * counts. False (with the reason) when it is not allowed. */
static bool etrn_plan_check(const struct etrn_policy *p, struct etrn_plan *plan,
			    const struct config_domain *d, const struct sockaddr *client,
			    const char *reason)
{
	plan->counts = plan->counts && d->etrn_counts;
	if (plan->code != 0 || client == NULL || etrn_section_allows(p, d, client))
		return plan->code == 0;
	plan->code = 459;
	snprintf(plan->reason, sizeof(plan->reason), "%s",
		 reason != NULL                          ? reason
		 : etrn_section_of(p, d)->nnetworks == 0 ? "ETRN is not enabled for it"
							 : "your address may not release its mail");
	return false;
}

/* Is `name` (len) `below` a proper subdomain of base (blen)? */
static bool etrn_is_below(const char *name, size_t len, const char *base, size_t blen)
{
	return len > blen && name[len - blen - 1] == '.' &&
	       strncasecmp(name + len - blen, base, blen) == 0;
}

/* @X: X itself, its subdomains, and every section below X must be ruled
 * by a section that allows the client. */
static void etrn_plan_domain(const struct etrn_policy *p, struct etrn_plan *plan,
			     const struct sockaddr *client)
{
	const struct config *cfg = p->cfg;
	const char *x = plan->arg.name;
	size_t xlen = plan->arg.len;
	static const char wide[] = "it covers domains you may not release";
	const struct config_domain *self = config_domain_find(cfg, x, xlen);
	/* What rules a subdomain of X without a section of its own: the
	 * closest ".Y" section with Y equal to X or above it. */
	const struct config_domain *below = NULL;
	size_t below_len = 0;
	bool any_under = false;
	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];
		size_t n = strlen(d->name);
		bool at_or_above = (n == xlen && strcasecmp(d->name, x) == 0) ||
				   etrn_is_below(x, xlen, d->name, n);
		if (d->subdomains && at_or_above && (below == NULL || n > below_len)) {
			below = d;
			below_len = n;
		}
		if (etrn_is_below(d->name, n, x, xlen))
			any_under = true;
	}
	if (self == NULL && below == NULL && !any_under) {
		plan->code = 458;
		return;
	}
	if (self == NULL || below == NULL) {
		plan->code = 459;
		snprintf(plan->reason, sizeof(plan->reason), "%s", wide);
		plan->counts = false;
		return;
	}
	etrn_plan_check(p, plan, self, client, wide);
	etrn_plan_check(p, plan, below, client, wide);
	for (size_t i = 0; i < cfg->ndomains && plan->code == 0; i++) {
		const struct config_domain *d = &cfg->domains[i];
		if (etrn_is_below(d->name, strlen(d->name), x, xlen))
			etrn_plan_check(p, plan, d, client, wide);
	}
}

int etrn_plan_make(const struct etrn_policy *p, const struct sockaddr *client,
		   const struct etrn_argument *arg, struct etrn_plan *plan)
{
	const struct config *cfg = p->cfg;
	memset(plan, 0, sizeof(*plan));
	plan->arg = *arg;
	plan->cfg = cfg;
	plan->counts = true;
	size_t cap = 0;
	const char *name = plan->arg.name;
	size_t len = plan->arg.len;
	if (arg->form == ETRN_FORM_DOMAIN) {
		if (client != NULL) /* an operator may flush any suffix */
			etrn_plan_domain(p, plan, client);
		return plan->code == 0
			       ? etrn_plan_add(plan, &cap, ETRN_MATCH_SUFFIX, name, len, NULL)
			       : 0;
	}
	bool node = arg->form == ETRN_FORM_NODE;
	for (size_t i = 0; i < p->nsections; i++) {
		const struct etrn_section *s = &p->sections[i];
		if (!(node ? etrn_listed(s->nodes, s->nnodes, name)
			   : etrn_listed(s->queues, s->nqueues, name)))
			continue;
		if (etrn_plan_add(plan, &cap, ETRN_MATCH_SECTION, s->domain->name,
				  strlen(s->domain->name), s->domain) != 0)
			return -ENOMEM;
		etrn_plan_check(p, plan, s->domain, client, NULL);
	}
	/* By default a node name is the domain itself. */
	const struct config_domain *self = node ? config_domain_find(cfg, name, len) : NULL;
	if (self != NULL) {
		if (etrn_plan_add(plan, &cap, ETRN_MATCH_NAME, name, len, self) != 0)
			return -ENOMEM;
		etrn_plan_check(p, plan, self, client, NULL);
	}
	if (plan->ntargets == 0)
		plan->code = 458;
	return 0;
}

void etrn_plan_free(struct etrn_plan *plan)
{
	free(plan->targets);
	plan->targets = NULL;
	plan->ntargets = 0;
}

void etrn_plan_move(struct etrn_plan *to, struct etrn_plan *from)
{
	*to = *from;
	for (size_t i = 0; i < to->ntargets; i++)
		if (to->targets[i].name == from->arg.name)
			to->targets[i].name = to->arg.name;
	from->targets = NULL;
	from->ntargets = 0;
}

bool etrn_plan_covers(const struct etrn_plan *plan, const char *domain, size_t len)
{
	const struct config_domain *rule = NULL;
	bool ruled = false;
	for (size_t i = 0; i < plan->ntargets; i++) {
		const struct etrn_target *t = &plan->targets[i];
		switch (t->match) {
		case ETRN_MATCH_NAME:
			if (len == t->len && strncasecmp(domain, t->name, len) == 0)
				return true;
			break;
		case ETRN_MATCH_SUFFIX:
			if ((len == t->len && strncasecmp(domain, t->name, len) == 0) ||
			    etrn_is_below(domain, len, t->name, t->len))
				return true;
			break;
		case ETRN_MATCH_SECTION:
			if (!ruled) {
				rule = config_domain_find(plan->cfg, domain, len);
				ruled = true;
			}
			if (rule == t->section)
				return true;
			break;
		}
	}
	return false;
}

/* ---- replies ------------------------------------------------------------------------- */

const char *etrn_reply_text(char *out, size_t size, int code, const char *shown, uint64_t count,
			    const char *reason)
{
	if (shown == NULL)
		shown = "?";
	switch (code) {
	case 250:
		snprintf(out, size, "250 2.0.0 OK, queuing for node %s started", shown);
		break;
	case 251:
		snprintf(out, size, "251 2.0.0 OK, no messages waiting for node %s", shown);
		break;
	case 252:
		snprintf(out, size, "252 2.0.0 OK, pending messages for node %s started", shown);
		break;
	case 253:
		snprintf(out, size, "253 2.0.0 OK, %llu pending messages for node %s started",
			 (unsigned long long)count, shown);
		break;
	case 458:
		snprintf(out, size, "458 4.0.0 Unable to queue messages for node %s", shown);
		break;
	case 459:
		snprintf(out, size, "459 4.7.1 Node %s not allowed: %s", shown,
			 reason != NULL && reason[0] != '\0' ? reason : "refused by policy");
		break;
	case 500:
		snprintf(out, size, "500 5.5.2 Syntax Error");
		break;
	default:
		snprintf(out, size, "501 5.5.4 Syntax Error in Parameters");
		break;
	}
	return out;
}
