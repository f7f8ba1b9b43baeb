/*
 * libFuzzer target: net/etrn, RFC 1985's ETRN argument, policy and replies.
 *
 * The input is three parts, split on LF, so that the seeds in
 * tests/fuzz/seeds/fuzz_etrn are readable:
 *
 *   line 1     the ETRN argument, as a client sends it after the verb;
 *   line 2     the client: its first octet picks one of fuzz_clients
 *              ('0' the first, '1' the second, ...), the next octets fill
 *              the host part of its address;
 *   the rest   domains in the queue, one per line (LF or NUL ends one).
 *
 * The policy is a fixed config (fuzz_config_text), loaded once; a plain
 * model of it (fuzz_sections: which client networks each section lets
 * release its mail, its node and queue names, its counts) restates it
 * without the config or policy code. Checked against net/etrn.h:
 *
 *  - etrn_parse answers like a model parser (500 for nothing, 501 for
 *    anything but one valid name; on 0 a lower-cased name with LDH labels
 *    of at most 63 octets, 253 in all, no trailing dot, `shown` the prefix
 *    and the name); it reads back its own `shown`, and neither surrounding
 *    blanks nor the case of the argument change its answer;
 *  - etrn_plan_make answers 0, 458 or 459 as etrn.h's rules say for this
 *    config and client, with a reason for 459; an allowed plan covers a
 *    queued domain only when a section rules it and lets the client
 *    release it (so never a domain that no section rules), and covers
 *    exactly what the form says (@foo.com: foo.com and names below it on
 *    a label boundary, never barfoo.com), in any case; a 458 covers
 *    nothing;
 *  - etrn_reply_text gives one printable line for every code, starting
 *    with the code, a space and an enhanced status code of the same
 *    class, within an SMTP reply line (510 octets before CRLF), and cut
 *    cleanly to a smaller buffer.
 *
 * Besides the input's domains, every run asks about the section names,
 * names below them and beside them ("x" + name), and the same around the
 * argument, so the safety checks bite on any input. The plan is freed
 * every run (LeakSanitizer watches).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "core/config.h"
#include "net/etrn.h"
#include "tests/fuzz/fuzz_common.h"

/* ---- the policy, as config and as model ---------------------------------- */

/* Client networks of the config, one bit each in the model. */
#define FUZZ_NET_LOOP4 0x01u /* 127.0.0.0/8 */
#define FUZZ_NET_LOOP6 0x02u /* ::1/128 */
#define FUZZ_NET_DOC1  0x04u /* 192.0.2.0/24 */
#define FUZZ_NET_DOC2  0x08u /* 198.51.100.0/24 */
#define FUZZ_NET_DOC6  0x10u /* 2001:db8::/32 */

#define FUZZ_LONG_LABEL "a123456789b123456789c123456789d123456789e123456789f123456789xyz"

static const char fuzz_config_text[] = "[domain demo.test]\n"
				       "hold = yes\n"
				       "etrn_networks = 127.0.0.0/8, ::1/128\n"
				       "etrn_nodes = gw.isp.example\n"
				       "[domain cust.example]\n"
				       "etrn_networks = 192.0.2.0/24, 127.0.0.0/8\n"
				       "etrn_nodes = mx.cust.example, gw.isp.example\n"
				       "etrn_queues = cust\n"
				       "[domain .cust.example]\n"
				       "etrn_networks = 192.0.2.0/24\n"
				       "etrn_queues = cust\n"
				       "[domain a.cust.example]\n"
				       "etrn_networks = 127.0.0.0/8 ::1/128\n"
				       "[domain .b.cust.example]\n"
				       "etrn_networks = 192.0.2.0/24, 127.0.0.0/8\n"
				       "etrn_counts = no\n"
				       "[domain hidden.example]\n"
				       "etrn_networks = 127.0.0.0/8, ::1/128\n"
				       "etrn_counts = no\n"
				       "etrn_nodes = mx.cust.example\n"
				       "etrn_queues = q2\n"
				       "[domain foo.com]\n"
				       "etrn_networks = 198.51.100.0/24, 2001:db8::/32\n"
				       "etrn_nodes = node.foo.com\n"
				       "[domain .foo.com]\n"
				       "etrn_networks = 198.51.100.0/24, 2001:db8::/32\n"
				       "[domain closed.example]\n"
				       "etrn_queues = closed, q2\n"
				       "[domain .net]\n"
				       "etrn_networks = 127.0.0.0/8\n"
				       "etrn_queues = nets\n"
				       "[domain Mixed.EXAMPLE]\n"
				       "etrn_networks = ::1/128, 192.0.2.0/24\n"
				       "etrn_queues = Cust, mixed_Q.1\n"
				       "etrn_nodes = MX.Mixed.Example\n"
				       "[domain " FUZZ_LONG_LABEL ".example]\n"
				       "etrn_networks = 127.0.0.0/8, 198.51.100.0/24\n";

/* The same sections, in the same order, as the model sees them. */
struct fuzz_section {
	const char *name; /* lower case, without the leading dot */
	bool subdomains;  /* written ".name" */
	unsigned allow;   /* FUZZ_NET_* of its etrn_networks */
	bool counts;
	const char *nodes[3]; /* NULL-terminated */
	const char *queues[3];
};

static const struct fuzz_section fuzz_sections[] = {
	{"demo.test", false, FUZZ_NET_LOOP4 | FUZZ_NET_LOOP6, true, {"gw.isp.example"}, {NULL}},
	{"cust.example",
	 false,
	 FUZZ_NET_DOC1 | FUZZ_NET_LOOP4,
	 true,
	 {"mx.cust.example", "gw.isp.example"},
	 {"cust"}},
	{"cust.example", true, FUZZ_NET_DOC1, true, {NULL}, {"cust"}},
	{"a.cust.example", false, FUZZ_NET_LOOP4 | FUZZ_NET_LOOP6, true, {NULL}, {NULL}},
	{"b.cust.example", true, FUZZ_NET_DOC1 | FUZZ_NET_LOOP4, false, {NULL}, {NULL}},
	{"hidden.example",
	 false,
	 FUZZ_NET_LOOP4 | FUZZ_NET_LOOP6,
	 false,
	 {"mx.cust.example"},
	 {"q2"}},
	{"foo.com", false, FUZZ_NET_DOC2 | FUZZ_NET_DOC6, true, {"node.foo.com"}, {NULL}},
	{"foo.com", true, FUZZ_NET_DOC2 | FUZZ_NET_DOC6, true, {NULL}, {NULL}},
	{"closed.example", false, 0, true, {NULL}, {"closed", "q2"}},
	{"net", true, FUZZ_NET_LOOP4, true, {NULL}, {"nets"}},
	{"mixed.example",
	 false,
	 FUZZ_NET_LOOP6 | FUZZ_NET_DOC1,
	 true,
	 {"mx.mixed.example"},
	 {"cust", "mixed_q.1"}},
	{FUZZ_LONG_LABEL ".example", false, FUZZ_NET_LOOP4 | FUZZ_NET_DOC2, true, {NULL}, {NULL}},
};
#define FUZZ_NSECTIONS (sizeof(fuzz_sections) / sizeof(fuzz_sections[0]))

/* The clients the second line picks from: inside and just outside each
 * network, IPv4-mapped IPv6, and a Unix socket (no network at all). */
struct fuzz_client {
	int family;
	uint8_t addr[16]; /* the fixed part */
	unsigned fixed;   /* octets of addr kept; the rest come from the input */
	unsigned nets;    /* FUZZ_NET_* that contain it, whatever the rest is */
};

static const struct fuzz_client fuzz_clients[] = {
	{AF_INET, {127, 0, 0, 1}, 4, FUZZ_NET_LOOP4},
	{AF_INET, {127}, 1, FUZZ_NET_LOOP4},
	{AF_INET6, {[15] = 1}, 16, FUZZ_NET_LOOP6},
	{AF_INET6, {[10] = 0xff, [11] = 0xff, [12] = 127}, 13, FUZZ_NET_LOOP4},
	{AF_INET, {192, 0, 2}, 3, FUZZ_NET_DOC1},
	{AF_INET6, {[10] = 0xff, [11] = 0xff, [12] = 192, [13] = 0, [14] = 2}, 15, FUZZ_NET_DOC1},
	{AF_INET, {198, 51, 100}, 3, FUZZ_NET_DOC2},
	{AF_INET6, {0x20, 0x01, 0x0d, 0xb8}, 4, FUZZ_NET_DOC6},
	{AF_INET, {10}, 1, 0},
	{AF_INET, {192, 0, 3}, 3, 0},
	{AF_INET, {198, 51, 101}, 3, 0},
	{AF_INET6, {0x20, 0x01, 0x0d, 0xb9}, 4, 0},
	{AF_INET6, {[15] = 2}, 16, 0},
	{AF_INET, {128, 0, 0, 1}, 4, 0},
	{AF_UNIX, {0}, 0, 0},
	{AF_INET6, {[10] = 0xff, [11] = 0xff, [12] = 10}, 13, 0},
};
#define FUZZ_NCLIENTS (sizeof(fuzz_clients) / sizeof(fuzz_clients[0]))

static struct config fuzz_cfg;
static struct etrn_policy *fuzz_policy;

static void fuzz_setup(void)
{
	char err[512];
	config_defaults(&fuzz_cfg);
	if (config_load_string(&fuzz_cfg, fuzz_config_text, "fuzz_etrn.conf", err, sizeof(err)) !=
		    0 ||
	    etrn_policy_build(&fuzz_policy, &fuzz_cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_etrn: config: %s\n", err);
		abort();
	}
	/* The model must describe the config that was loaded. */
	FUZZ_CHECK(fuzz_cfg.ndomains == FUZZ_NSECTIONS);
	for (size_t i = 0; i < FUZZ_NSECTIONS; i++) {
		FUZZ_CHECK(strcmp(fuzz_cfg.domains[i].name, fuzz_sections[i].name) == 0);
		FUZZ_CHECK(fuzz_cfg.domains[i].subdomains == fuzz_sections[i].subdomains);
		FUZZ_CHECK(fuzz_cfg.domains[i].etrn_counts == fuzz_sections[i].counts);
	}
}

/* ---- model --------------------------------------------------------------- */

static char fuzz_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static char fuzz_flip(char c)
{
	if (c >= 'A' && c <= 'Z')
		return (char)(c - 'A' + 'a');
	if (c >= 'a' && c <= 'z')
		return (char)(c - 'a' + 'A');
	return c;
}

static bool fuzz_same(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (fuzz_lower(a[i]) != fuzz_lower(b[i]))
			return false;
	return true;
}

/* name is base, or below it on a label boundary (strictly, when !self). */
static bool fuzz_below(const char *name, size_t len, const char *base, size_t blen, bool self)
{
	if (self && fuzz_same(name, len, base, blen))
		return true;
	return len > blen && name[len - blen - 1] == '.' &&
	       fuzz_same(name + len - blen, blen, base, blen);
}

/* The section that rules a domain: its own, else the closest ".parent";
 * -1: none. */
static int fuzz_model_rule(const char *d, size_t len)
{
	int best = -1;
	size_t best_len = 0;
	for (size_t i = 0; i < FUZZ_NSECTIONS; i++) {
		const struct fuzz_section *s = &fuzz_sections[i];
		size_t n = strlen(s->name);
		if (!s->subdomains && fuzz_same(d, len, s->name, n))
			return (int)i;
		if (s->subdomains && fuzz_below(d, len, s->name, n, false) &&
		    (best < 0 || n > best_len)) {
			best = (int)i;
			best_len = n;
		}
	}
	return best;
}

static bool fuzz_listed(const char *const *names, const char *name)
{
	for (; *names != NULL; names++)
		if (strcmp(*names, name) == 0)
			return true;
	return false;
}

static bool fuzz_model_allows(int section, unsigned client_nets)
{
	return section >= 0 && (fuzz_sections[section].allow & client_nets) != 0;
}

/* Does arg, by the form's definition in etrn.h, cover domain d? */
static bool fuzz_model_covers(const struct etrn_argument *arg, const char *d, size_t len)
{
	int rule = fuzz_model_rule(d, len);
	switch (arg->form) {
	case ETRN_FORM_DOMAIN:
		return fuzz_below(d, len, arg->name, arg->len, true);
	case ETRN_FORM_NODE:
		if (fuzz_same(d, len, arg->name, arg->len) &&
		    fuzz_model_rule(arg->name, arg->len) >= 0)
			return true;
		return rule >= 0 && fuzz_listed(fuzz_sections[rule].nodes, arg->name);
	case ETRN_FORM_QUEUE:
		return rule >= 0 && fuzz_listed(fuzz_sections[rule].queues, arg->name);
	}
	return false;
}

/*
 * The verdict etrn.h's rules give: the sections involved are those that
 * rule what the argument may cover; none is 458, one that does not let
 * the client in is 459. For @X that is the section of X, the one that
 * rules X's subdomains that have none of their own (the closest ".Y" with
 * Y at or above X: without it they are ruled by nothing, so 459), and
 * every section below X.
 */
static int fuzz_model_verdict(const struct etrn_argument *arg, unsigned nets, bool *counts)
{
	bool involved[FUZZ_NSECTIONS] = {false};
	bool any = false;
	bool unruled = false;
	if (arg->form == ETRN_FORM_DOMAIN) {
		int self = fuzz_model_rule(arg->name, arg->len);
		int below = -1;
		size_t below_len = 0;
		for (size_t i = 0; i < FUZZ_NSECTIONS; i++) {
			const struct fuzz_section *s = &fuzz_sections[i];
			size_t n = strlen(s->name);
			if (s->subdomains && fuzz_below(arg->name, arg->len, s->name, n, true) &&
			    (below < 0 || n > below_len)) {
				below = (int)i;
				below_len = n;
			}
			if (fuzz_below(s->name, n, arg->name, arg->len, false))
				involved[i] = any = true;
		}
		if (self >= 0)
			involved[self] = any = true;
		if (below >= 0)
			involved[below] = any = true;
		unruled = self < 0 || below < 0;
	} else {
		for (size_t i = 0; i < FUZZ_NSECTIONS; i++) {
			const struct fuzz_section *s = &fuzz_sections[i];
			if (fuzz_listed(arg->form == ETRN_FORM_NODE ? s->nodes : s->queues,
					arg->name))
				involved[i] = any = true;
		}
		int self = arg->form == ETRN_FORM_NODE ? fuzz_model_rule(arg->name, arg->len) : -1;
		if (self >= 0)
			involved[self] = any = true;
	}
	if (!any)
		return 458;
	*counts = true;
	bool refused = unruled;
	for (size_t i = 0; i < FUZZ_NSECTIONS; i++) {
		if (!involved[i])
			continue;
		*counts = *counts && fuzz_sections[i].counts;
		if (!fuzz_model_allows((int)i, nets))
			refused = true;
	}
	return refused ? 459 : 0;
}

/* The argument's syntax (etrn.h), restated: 500, 501, or 0 with form and
 * the lower-cased name. */
static int fuzz_model_parse(const char *t, size_t len, enum etrn_form *form, char *name,
			    size_t *name_len)
{
	while (len > 0 && (t[0] == ' ' || t[0] == '\t')) {
		t++;
		len--;
	}
	while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
		len--;
	if (len == 0)
		return 500;
	*form = t[0] == '@' ? ETRN_FORM_DOMAIN : t[0] == '#' ? ETRN_FORM_QUEUE : ETRN_FORM_NODE;
	if (*form != ETRN_FORM_NODE) {
		t++;
		len--;
	}
	if (*form == ETRN_FORM_QUEUE) {
		if (len == 0 || len > 63)
			return 501;
		for (size_t i = 0; i < len; i++) {
			char c = fuzz_lower(t[i]);
			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			      c == '_' || c == '.'))
				return 501;
		}
	} else {
		if (len > 1 && t[len - 1] == '.')
			len--;
		if (len == 0 || len > 253)
			return 501;
		size_t label = 0, labels = 1;
		for (size_t i = 0; i < len; i++) {
			char c = fuzz_lower(t[i]);
			if (c == '.') {
				if (label == 0 || t[i - 1] == '-')
					return 501;
				label = 0;
				labels++;
				continue;
			}
			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
				return 501;
			if (label == 0 && c == '-')
				return 501;
			if (++label > 63)
				return 501;
		}
		if (label == 0 || t[len - 1] == '-')
			return 501;
		if (*form == ETRN_FORM_NODE && labels < 2)
			return 501;
	}
	for (size_t i = 0; i < len; i++)
		name[i] = fuzz_lower(t[i]);
	name[len] = '\0';
	*name_len = len;
	return 0;
}

/* ---- checks -------------------------------------------------------------- */

static bool fuzz_args_equal(const struct etrn_argument *a, const struct etrn_argument *b)
{
	return a->form == b->form && a->len == b->len && strcmp(a->name, b->name) == 0 &&
	       strcmp(a->shown, b->shown) == 0;
}

/* Parse a copy of exactly len octets, so ASan sees any read past it. */
static int fuzz_parse_copy(const char *text, size_t len, struct etrn_argument *out)
{
	char *copy = malloc(len ? len : 1);
	FUZZ_CHECK(copy != NULL);
	memcpy(copy, text, len);
	int rc = etrn_parse(copy, len, out);
	free(copy);
	return rc;
}

static int fuzz_check_parse(const char *text, size_t len, struct etrn_argument *arg)
{
	int rc = fuzz_parse_copy(text, len, arg);
	FUZZ_CHECK(rc == 0 || rc == 500 || rc == 501);

	enum etrn_form form = ETRN_FORM_NODE;
	char name[ETRN_NAME_MAX + 1];
	size_t name_len = 0;
	FUZZ_CHECK(rc == fuzz_model_parse(text, len, &form, name, &name_len));
	if (rc == 0) {
		FUZZ_CHECK(arg->form == form && arg->len == name_len);
		FUZZ_CHECK(strlen(arg->name) == arg->len && strcmp(arg->name, name) == 0);
		const char *prefix = form == ETRN_FORM_DOMAIN  ? "@"
				     : form == ETRN_FORM_QUEUE ? "#"
							       : "";
		FUZZ_CHECK(strlen(arg->shown) == strlen(prefix) + arg->len);
		FUZZ_CHECK(strncmp(arg->shown, prefix, strlen(prefix)) == 0);
		FUZZ_CHECK(strcmp(arg->shown + strlen(prefix), arg->name) == 0);
		if (form != ETRN_FORM_QUEUE)
			FUZZ_CHECK(arg->name[arg->len - 1] != '.');
		if (form == ETRN_FORM_NODE)
			FUZZ_CHECK(memchr(arg->name, '.', arg->len) != NULL);

		/* It reads back what it shows. */
		struct etrn_argument again;
		FUZZ_CHECK(fuzz_parse_copy(arg->shown, strlen(arg->shown), &again) == 0);
		FUZZ_CHECK(fuzz_args_equal(arg, &again));
	}

	/* Blanks around it and its case change nothing. */
	char *variant = malloc(len + 4);
	FUZZ_CHECK(variant != NULL);
	variant[0] = ' ';
	variant[1] = '\t';
	memcpy(variant + 2, text, len);
	variant[len + 2] = ' ';
	variant[len + 3] = ' ';
	struct etrn_argument other;
	int rc2 = fuzz_parse_copy(variant, len + 4, &other);
	FUZZ_CHECK(rc2 == rc);
	FUZZ_CHECK(rc != 0 || fuzz_args_equal(arg, &other));
	for (size_t i = 0; i < len; i++)
		variant[i] = fuzz_flip(text[i]);
	rc2 = fuzz_parse_copy(variant, len, &other);
	FUZZ_CHECK(rc2 == rc);
	FUZZ_CHECK(rc != 0 || fuzz_args_equal(arg, &other));
	free(variant);
	return rc;
}

static void fuzz_check_domain(const struct etrn_plan *plan, unsigned nets, const char *d,
			      size_t len)
{
	/* An exact-size copy, and the same name in the other case. */
	char *copy = malloc(len ? len : 1);
	char *flipped = malloc(len ? len : 1);
	FUZZ_CHECK(copy != NULL && flipped != NULL);
	memcpy(copy, d, len);
	for (size_t i = 0; i < len; i++)
		flipped[i] = fuzz_flip(d[i]);

	int rule = fuzz_model_rule(copy, len);
	const struct config_domain *found = config_domain_find(&fuzz_cfg, copy, len);
	FUZZ_CHECK(found == (rule < 0 ? NULL : &fuzz_cfg.domains[rule]));

	bool covers = etrn_plan_covers(plan, copy, len);
	FUZZ_CHECK(etrn_plan_covers(plan, flipped, len) == covers);
	bool model = fuzz_model_covers(&plan->arg, copy, len);
	if (plan->code == 0) {
		FUZZ_CHECK(covers == model);
		/* Never a domain that no section rules, or whose section
		 * keeps this client out. */
		if (covers)
			FUZZ_CHECK(fuzz_model_allows(rule, nets));
	} else if (plan->code == 458) {
		FUZZ_CHECK(!covers);
	}
	/* Something it would cover that the client may not release: refused. */
	if (model && !fuzz_model_allows(rule, nets))
		FUZZ_CHECK(plan->code != 0);
	free(copy);
	free(flipped);
}

/* Names around a domain: itself, one below it, one beside it sharing its
 * tail ("x" + name, as barfoo.com beside foo.com), and its parent. */
static void fuzz_check_around(const struct etrn_plan *plan, unsigned nets, const char *name,
			      size_t len)
{
	char buf[ETRN_NAME_MAX + 8];
	if (len > ETRN_NAME_MAX)
		return;
	fuzz_check_domain(plan, nets, name, len);
	buf[0] = 'z';
	buf[1] = '.';
	memcpy(buf + 2, name, len);
	fuzz_check_domain(plan, nets, buf, len + 2);
	buf[1] = 'x';
	fuzz_check_domain(plan, nets, buf + 1, len + 1);
	const char *dot = memchr(name, '.', len);
	if (dot != NULL)
		fuzz_check_domain(plan, nets, dot + 1, len - (size_t)(dot + 1 - name));
}

/* Returns the plan's code, its reason copied to reason (of the plan's size). */
static int fuzz_check_plan(const struct etrn_argument *arg, const struct sockaddr *client,
			   unsigned nets, const char *queued, size_t queued_len, char *reason)
{
	struct etrn_plan plan;
	FUZZ_CHECK(etrn_plan_make(fuzz_policy, client, arg, &plan) == 0);
	FUZZ_CHECK(plan.code == 0 || plan.code == 458 || plan.code == 459);
	FUZZ_CHECK(fuzz_args_equal(&plan.arg, arg));
	if (plan.code == 459) {
		size_t n = strnlen(plan.reason, sizeof(plan.reason));
		FUZZ_CHECK(n > 0 && n < sizeof(plan.reason));
		FUZZ_CHECK(strpbrk(plan.reason, "\r\n") == NULL);
	}
	bool counts = true;
	FUZZ_CHECK(plan.code == fuzz_model_verdict(arg, nets, &counts));
	if (plan.code == 0)
		FUZZ_CHECK(plan.counts == counts);

	/* The queued domains of the input, one a line (LF or NUL). */
	size_t start = 0;
	for (size_t i = 0; i <= queued_len; i++) {
		if (i < queued_len && queued[i] != '\n' && queued[i] != '\0')
			continue;
		fuzz_check_domain(&plan, nets, queued + start, i - start);
		start = i + 1;
	}
	fuzz_check_around(&plan, nets, arg->name, arg->len);
	for (size_t i = 0; i < FUZZ_NSECTIONS; i++)
		fuzz_check_around(&plan, nets, fuzz_sections[i].name,
				  strlen(fuzz_sections[i].name));
	memcpy(reason, plan.reason, sizeof(plan.reason));
	etrn_plan_free(&plan);
	FUZZ_CHECK(plan.targets == NULL && plan.ntargets == 0);
	return plan.code;
}

/* SMTP's limit for a reply line, CRLF excluded (RFC 5321 4.5.3.1.5). */
#define FUZZ_REPLY_MAX 510

static void fuzz_check_reply(int code, const char *shown, uint64_t count, const char *reason,
			     size_t small)
{
	char full[1024];
	FUZZ_CHECK(etrn_reply_text(full, sizeof(full), code, shown, count, reason) == full);
	size_t n = strlen(full);
	FUZZ_CHECK(n >= 10 && n <= FUZZ_REPLY_MAX);
	char digits[4];
	snprintf(digits, sizeof(digits), "%d", code);
	FUZZ_CHECK(memcmp(full, digits, 3) == 0 && full[3] == ' ');
	/* An enhanced status code of the same class follows. */
	FUZZ_CHECK(full[4] == full[0] && full[5] == '.');
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(full[i] >= 0x20 && full[i] < 0x7f);
	if (code < 500 && shown != NULL)
		FUZZ_CHECK(strstr(full, shown) != NULL);

	/* Cut to a smaller buffer: a NUL-terminated start of the same line. */
	if (small > n + 1)
		small = n + 1;
	char *cut = malloc(small);
	FUZZ_CHECK(cut != NULL);
	etrn_reply_text(cut, small, code, shown, count, reason);
	FUZZ_CHECK(strlen(cut) == small - 1 && memcmp(cut, full, small - 1) == 0);
	free(cut);
}

/* ---- the input ----------------------------------------------------------- */

static unsigned fuzz_client_make(const char *line, size_t len, struct sockaddr_storage *ss)
{
	const struct fuzz_client *c =
		&fuzz_clients[len > 0 ? (unsigned char)(line[0] - '0') % FUZZ_NCLIENTS : 0];
	uint8_t addr[16];
	memcpy(addr, c->addr, sizeof(addr));
	for (size_t i = c->fixed; i < sizeof(addr); i++)
		addr[i] = 1 + i - c->fixed < len ? (uint8_t)line[1 + i - c->fixed] : 0;
	memset(ss, 0, sizeof(*ss));
	if (c->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(2525);
		memcpy(&sin->sin_addr, addr, 4);
	} else if (c->family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(2525);
		memcpy(&sin6->sin6_addr, addr, 16);
	} else {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;
		sun->sun_family = AF_UNIX;
		snprintf(sun->sun_path, sizeof(sun->sun_path), "/run/ferry/admin.sock");
	}
	return c->nets;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (fuzz_policy == NULL)
		fuzz_setup();
	const char *in = (const char *)data;
	uint64_t seed = fuzz_seed(data, size);

	const char *lf = memchr(in, '\n', size);
	size_t arg_len = lf ? (size_t)(lf - in) : size;
	const char *client_line = lf ? lf + 1 : in + size;
	size_t rest = size - (size_t)(client_line - in);
	lf = memchr(client_line, '\n', rest);
	size_t client_len = lf ? (size_t)(lf - client_line) : rest;
	const char *queued = lf ? lf + 1 : client_line + client_len;
	size_t queued_len = size - (size_t)(queued - in);

	struct etrn_argument arg;
	int rc = fuzz_check_parse(in, arg_len, &arg);
	struct sockaddr_storage client;
	unsigned nets = fuzz_client_make(client_line, client_len, &client);

	char reason[sizeof(((struct etrn_plan *)0)->reason)] = "";
	if (rc == 0)
		fuzz_check_plan(&arg, (const struct sockaddr *)&client, nets, queued, queued_len,
				reason);

	static const int codes[] = {250, 251, 252, 253, 458, 459, 500, 501};
	uint64_t count = fuzz_rng_next(&seed) >> (seed & 63);
	size_t small = 1 + (size_t)(fuzz_rng_next(&seed) % 300);
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		fuzz_check_reply(codes[i], codes[i] < 500 && rc == 0 ? arg.shown : NULL, count,
				 reason, small);
	return 0;
}
