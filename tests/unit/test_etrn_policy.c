/*
 * Unit tests of net/etrn: the argument's syntax, who may release what,
 * what each form covers, and the reply texts (RFC 1985;
 * ../shared/spec/etrn.md).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "core/config.h"
#include "net/etrn.h"

static struct config cfg;
static struct etrn_policy *policy;
static struct sockaddr_storage loopback, outsider;

static void set_address(struct sockaddr_storage *ss, const char *text)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	sin->sin_family = AF_INET;
	cr_assert_eq(inet_pton(AF_INET, text, &sin->sin_addr), 1);
}

static void load(const char *text)
{
	char err[512];
	config_defaults(&cfg);
	cr_assert_eq(config_load_string(&cfg, text, "test.conf", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(etrn_policy_build(&policy, &cfg, err, sizeof(err)), 0, "%s", err);
	set_address(&loopback, "127.0.0.1");
	set_address(&outsider, "198.51.100.9");
}

static void unload(void)
{
	etrn_policy_free(policy);
	policy = NULL;
	config_free(&cfg);
}

static const char customers[] = "[domain customer.example]\n"
				"etrn_networks = 127.0.0.0/8\n"
				"etrn_nodes = mail.customer.example\n"
				"etrn_queues = cust\n"
				"[domain customer.org]\n"
				"etrn_networks = 127.0.0.1\n"
				"etrn_nodes = mail.customer.example\n"
				"etrn_queues = cust\n"
				"[domain foo.com]\n"
				"etrn_networks = 127.0.0.0/8\n"
				"[domain .foo.com]\n"
				"etrn_networks = 127.0.0.0/8\n"
				"[domain barfoo.com]\n"
				"etrn_networks = 127.0.0.0/8\n"
				"[domain quiet.example]\n"
				"etrn_networks = 127.0.0.0/8\n"
				"etrn_counts = no\n"
				"[domain closed.example]\n"
				"[domain demo.test]\n"
				"etrn_networks = 127.0.0.0/8\n";

TestSuite(etrn, .init = NULL, .fini = unload);

/* ---- the argument --------------------------------------------------------------------- */

static int parse(const char *text, struct etrn_argument *a)
{
	return etrn_parse(text, strlen(text), a);
}

Test(etrn, parse_the_three_forms)
{
	struct etrn_argument a;
	cr_assert_eq(parse("Mail.Customer.EXAMPLE", &a), 0);
	cr_assert_eq(a.form, ETRN_FORM_NODE);
	cr_assert_str_eq(a.name, "mail.customer.example");
	cr_assert_str_eq(a.shown, "mail.customer.example");
	cr_assert_eq(parse("  @Foo.com  ", &a), 0);
	cr_assert_eq(a.form, ETRN_FORM_DOMAIN);
	cr_assert_str_eq(a.name, "foo.com");
	cr_assert_str_eq(a.shown, "@foo.com");
	cr_assert_eq(parse("#Cust_42.a-b", &a), 0);
	cr_assert_eq(a.form, ETRN_FORM_QUEUE);
	cr_assert_str_eq(a.name, "cust_42.a-b");
	cr_assert_str_eq(a.shown, "#cust_42.a-b");
	cr_assert_eq(parse("customer.example.", &a), 0, "an absolute name's root dot");
	cr_assert_str_eq(a.name, "customer.example");
	cr_assert_eq(parse("@com", &a), 0, "a single label is a suffix");
}

Test(etrn, parse_syntax_errors)
{
	struct etrn_argument a;
	cr_assert_eq(parse("", &a), 500);
	cr_assert_eq(parse("   ", &a), 500);
	static const char *const bad[] = {
		"localname",      /* not fully qualified */
		"a b.example",    /* two words */
		"@",              /* nothing after @ */
		"#",              /* nothing after # */
		"@foo..com",      /* an empty label */
		"-x.example",     /* a hyphen first */
		"[192.0.2.1]",    /* an address literal */
		"#has space",     /* two words */
		"#bad!name",      /* not a queue name */
		"x.example..",    /* more than the root's dot */
		"user@x.example", /* an address, not a node */
		"@@x.example",    /* two prefixes */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(parse(bad[i], &a), 501, "'%s'", bad[i]);
	char label[80];
	memset(label, 'a', 64);
	snprintf(label + 64, sizeof(label) - 64, ".example");
	cr_expect_eq(parse(label, &a), 501, "a 64-octet label");
	char queue[70];
	memset(queue, 'q', 65);
	queue[0] = '#';
	queue[65] = '\0';
	cr_expect_eq(parse(queue, &a), 501, "a queue name of 64");
}

/* ---- the policy ----------------------------------------------------------------------- */

static struct etrn_plan plan_for(const struct sockaddr_storage *client, const char *text)
{
	struct etrn_argument a;
	cr_assert_eq(parse(text, &a), 0, "'%s'", text);
	struct etrn_plan plan;
	cr_assert_eq(etrn_plan_make(policy, (const struct sockaddr *)client, &a, &plan), 0);
	return plan;
}

static bool covers(const struct etrn_plan *plan, const char *domain)
{
	return etrn_plan_covers(plan, domain, strlen(domain));
}

Test(etrn, a_node_is_its_domain_or_its_mapped_set)
{
	load(customers);
	struct etrn_plan p = plan_for(&loopback, "mail.customer.example");
	cr_assert_eq(p.code, 0);
	cr_assert(p.counts);
	cr_assert(covers(&p, "customer.example"));
	cr_assert(covers(&p, "CUSTOMER.ORG"));
	cr_assert_not(covers(&p, "mail.customer.example"), "no section of that name");
	cr_assert_not(covers(&p, "foo.com"));
	cr_assert_not(covers(&p, "x.customer.example"));
	etrn_plan_free(&p);

	p = plan_for(&loopback, "foo.com");
	cr_assert_eq(p.code, 0);
	cr_assert(covers(&p, "foo.com"));
	cr_assert_not(covers(&p, "a.foo.com"), "a node is not its subdomains");
	etrn_plan_free(&p);

	p = plan_for(&loopback, "a.foo.com"); /* ruled by .foo.com */
	cr_assert_eq(p.code, 0);
	cr_assert(covers(&p, "a.foo.com"));
	cr_assert_not(covers(&p, "b.foo.com"));
	etrn_plan_free(&p);
}

Test(etrn, at_covers_label_boundaries_only)
{
	load(customers);
	struct etrn_plan p = plan_for(&loopback, "@foo.com");
	cr_assert_eq(p.code, 0, "%s", p.reason);
	cr_assert(covers(&p, "foo.com"));
	cr_assert(covers(&p, "fred.foo.com"));
	cr_assert(covers(&p, "a.b.c.foo.com"));
	cr_assert(covers(&p, "A.B.FOO.COM"));
	cr_assert_not(covers(&p, "barfoo.com"));
	cr_assert_not(covers(&p, "foo.com.evil.net"));
	cr_assert_not(covers(&p, "oo.com"));
	etrn_plan_free(&p);
}

Test(etrn, a_queue_is_exactly_its_domains)
{
	load(customers);
	struct etrn_plan p = plan_for(&loopback, "#cust");
	cr_assert_eq(p.code, 0);
	cr_assert(covers(&p, "customer.example"));
	cr_assert(covers(&p, "customer.org"));
	cr_assert_not(covers(&p, "foo.com"));
	cr_assert_not(covers(&p, "x.customer.org"));
	etrn_plan_free(&p);
	p = plan_for(&loopback, "#nosuch");
	cr_assert_eq(p.code, 458);
	etrn_plan_free(&p);
}

Test(etrn, refusals_say_why)
{
	load(customers);
	struct etrn_plan p = plan_for(&outsider, "customer.example");
	cr_assert_eq(p.code, 459);
	cr_assert_str_eq(p.reason, "your address may not release its mail");
	etrn_plan_free(&p);
	p = plan_for(&loopback, "closed.example");
	cr_assert_eq(p.code, 459);
	cr_assert_str_eq(p.reason, "ETRN is not enabled for it");
	etrn_plan_free(&p);
	/* customer.org allows 127.0.0.1 only: the node is refused whole to
	 * 127.0.0.2, though it may release customer.example. */
	struct sockaddr_storage other;
	set_address(&other, "127.0.0.2");
	p = plan_for(&other, "mail.customer.example");
	cr_assert_eq(p.code, 459);
	etrn_plan_free(&p);
	p = plan_for(&loopback, "unknown.example");
	cr_assert_eq(p.code, 458);
	etrn_plan_free(&p);
}

/* An @ wider than what the client may release is refused whole: with
 * demo.test alone allowed, @test would also release every other domain
 * under test; @com never releases the world. */
Test(etrn, at_wider_than_allowed_is_refused)
{
	load(customers);
	static const char *const wide[] = {"@test", "@com", "@demo.test", "@example"};
	for (size_t i = 0; i < sizeof(wide) / sizeof(wide[0]); i++) {
		struct etrn_plan p = plan_for(&loopback, wide[i]);
		cr_expect_eq(p.code, 459, "%s", wide[i]);
		cr_expect_str_eq(p.reason, "it covers domains you may not release", "%s", wide[i]);
		etrn_plan_free(&p);
	}
	struct etrn_plan p = plan_for(&loopback, "@nothing.invalid");
	cr_assert_eq(p.code, 458, "nothing of ours at or below it");
	etrn_plan_free(&p);
}

Test(etrn, built_in_demo_test_is_loopbacks)
{
	load("");
	struct etrn_plan p = plan_for(&loopback, "demo.test");
	cr_assert_eq(p.code, 0);
	cr_assert(covers(&p, "demo.test"));
	etrn_plan_free(&p);
	p = plan_for(&outsider, "demo.test");
	cr_assert_eq(p.code, 459);
	etrn_plan_free(&p);
	p = plan_for(&loopback, "@test");
	cr_assert_eq(p.code, 459);
	etrn_plan_free(&p);
}

Test(etrn, hidden_counts)
{
	load(customers);
	struct etrn_plan p = plan_for(&loopback, "quiet.example");
	cr_assert_eq(p.code, 0);
	cr_assert_not(p.counts);
	etrn_plan_free(&p);
}

Test(etrn, an_operator_may_flush_any_suffix)
{
	load(customers);
	struct etrn_argument a;
	cr_assert_eq(parse("@com", &a), 0);
	struct etrn_plan p;
	cr_assert_eq(etrn_plan_make(policy, NULL, &a, &p), 0);
	cr_assert_eq(p.code, 0);
	cr_assert(covers(&p, "foo.com"));
	cr_assert(covers(&p, "anything.com"));
	etrn_plan_free(&p);
}

Test(etrn, bad_policy_keys_are_named)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{"[domain a.example]\netrn_networks = 10.0.0.1/8\n",
		 "[domain a.example] (line 1): key 'etrn_networks': not a network"},
		{"[domain a.example]\netrn_nodes = localname\n",
		 "key 'etrn_nodes': not a fully qualified host name"},
		{"[domain a.example]\netrn_queues = bad!queue\n",
		 "key 'etrn_queues': not a queue name"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[512];
		config_defaults(&cfg);
		cr_assert_eq(config_load_string(&cfg, cases[i].text, "test.conf", err, sizeof(err)),
			     0, "%s", err);
		struct etrn_policy *p = NULL;
		cr_expect_eq(etrn_policy_build(&p, &cfg, err, sizeof(err)), -EINVAL);
		cr_expect_not_null(strstr(err, cases[i].want), "%s", err);
		config_free(&cfg);
	}
	config_defaults(&cfg); /* for the fini */
}

/* ---- replies ------------------------------------------------------------------------------ */

Test(etrn, reply_texts_are_rfc_1985s)
{
	char t[300];
	cr_assert_str_eq(etrn_reply_text(t, sizeof(t), 250, "x.example", 0, NULL),
			 "250 2.0.0 OK, queuing for node x.example started");
	cr_assert_str_eq(etrn_reply_text(t, sizeof(t), 251, "x.example", 0, NULL),
			 "251 2.0.0 OK, no messages waiting for node x.example");
	cr_assert_str_eq(etrn_reply_text(t, sizeof(t), 252, "@x.example", 0, NULL),
			 "252 2.0.0 OK, pending messages for node @x.example started");
	cr_assert_str_eq(etrn_reply_text(t, sizeof(t), 253, "#q", 14, NULL),
			 "253 2.0.0 OK, 14 pending messages for node #q started");
	cr_assert_str_eq(etrn_reply_text(t, sizeof(t), 458, "x.example", 0, NULL),
			 "458 4.0.0 Unable to queue messages for node x.example");
	cr_assert_str_eq(etrn_reply_text(t, sizeof(t), 459, "x.example", 0, "no"),
			 "459 4.7.1 Node x.example not allowed: no");
	cr_assert_str_eq(etrn_reply_text(t, sizeof(t), 500, NULL, 0, NULL),
			 "500 5.5.2 Syntax Error");
	cr_assert_str_eq(etrn_reply_text(t, sizeof(t), 501, NULL, 0, NULL),
			 "501 5.5.4 Syntax Error in Parameters");
}
