/*
 * Tests for net/policy: trusted networks, relay domains, and the whole
 * open-relay catalogue of spec/smtp.md run through the same two steps the
 * session takes (address_parse_path, then policy_check_recipient).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "core/config.h"
#include "net/address.h"
#include "net/policy.h"

/* ---- helpers ------------------------------------------------------------ */

static struct policy_network test_network(const char *text)
{
	struct policy_network net;

	cr_assert_eq(policy_parse_network(text, &net), 0, "\"%s\" should parse", text);
	return net;
}

/* A client address as accept() would hand it over. */
static struct sockaddr_storage test_client(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(25);
		cr_assert_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1, "%s", text);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(25);
		cr_assert_eq(inet_pton(AF_INET, text, &sin->sin_addr), 1, "%s", text);
	}
	return ss;
}

static bool test_contains(const char *network, const char *client)
{
	struct policy_network net = test_network(network);
	struct sockaddr_storage ss = test_client(client);

	return policy_network_contains(&net, (const struct sockaddr *)&ss);
}

static const char *const test_relay_domains[] = {"relay.example", ".sub.example"};
static struct policy_network test_trusted[2];
static struct policy test_policy;

static void test_policy_setup(void)
{
	test_trusted[0] = test_network("127.0.0.0/8");
	test_trusted[1] = test_network("::1/128");
	test_policy = (struct policy){
		.trusted = test_trusted,
		.ntrusted = 2,
	};
	/* Never freed: Criterion runs each test in a process of its own, and
	 * the set stays reachable from test_policy until that process ends. */
	cr_assert_eq(policy_domains_build(&test_policy.relay_domains, test_relay_domains, 2), 0);
}

static bool test_trusted_client(const char *client)
{
	struct sockaddr_storage ss = test_client(client);

	return policy_client_trusted(&test_policy, (const struct sockaddr *)&ss);
}

/*
 * The session's two steps for RCPT TO:<path> from `client`: the address must
 * parse with want_status and, if it parsed, be judged want_verdict.
 */
static void test_rcpt(const char *client, const char *path, enum address_status want_status,
		      enum policy_verdict want_verdict)
{
	struct mailbox m;
	enum address_status status = address_parse_path(path, strlen(path), false, &m);

	cr_assert_eq(status, want_status, "<%s>: parse got %d (%s), want %d (%s)", path, status,
		     address_status_text(status), want_status, address_status_text(want_status));
	if (status != ADDRESS_OK)
		return;
	bool trusted = test_trusted_client(client);
	enum policy_verdict verdict = policy_check_recipient(&test_policy, trusted, &m);

	cr_assert_eq(verdict, want_verdict, "<%s> from %s: verdict %d, want %d", path, client,
		     verdict, want_verdict);
}

/* 198.51.100.7 is in no trusted network: what the open internet looks like. */
#define TEST_STRANGER "198.51.100.7"

/* ---- policy_parse_network ----------------------------------------------- */

Test(policy_network, parses_ipv4_prefix)
{
	struct policy_network net = test_network("192.0.2.0/24");
	static const uint8_t want[4] = {192, 0, 2, 0};

	cr_expect_eq(net.family, AF_INET);
	cr_expect_eq(net.prefix, 24);
	cr_expect(memcmp(net.addr, want, 4) == 0);
}

Test(policy_network, bare_address_is_a_host)
{
	struct policy_network net = test_network("127.0.0.1");
	static const uint8_t want6[16] = {[15] = 1};

	cr_expect_eq(net.family, AF_INET);
	cr_expect_eq(net.prefix, 32);

	net = test_network("::1");
	cr_expect_eq(net.family, AF_INET6);
	cr_expect_eq(net.prefix, 128);
	cr_expect(memcmp(net.addr, want6, 16) == 0);
}

Test(policy_network, prefix_edges)
{
	struct policy_network net;

	net = test_network("0.0.0.0/0");
	cr_expect_eq(net.prefix, 0);
	net = test_network("192.0.2.1/32");
	cr_expect_eq(net.prefix, 32);
	net = test_network("::/0");
	cr_expect_eq(net.family, AF_INET6);
	cr_expect_eq(net.prefix, 0);
	net = test_network("::1/128");
	cr_expect_eq(net.prefix, 128);
	net = test_network("2001:db8::/32");
	cr_expect_eq(net.prefix, 32);
	net = test_network("::ffff:0:0/96");
	cr_expect_eq(net.family, AF_INET6);
	cr_expect_eq(net.prefix, 96);
	net = test_network("10.0.0.0/7");
	cr_expect_eq(net.prefix, 7);

	cr_expect_eq(policy_parse_network("192.0.2.0/33", &net), -EINVAL);
	cr_expect_eq(policy_parse_network("::1/129", &net), -EINVAL);
	cr_expect_eq(policy_parse_network("2001:db8::/999", &net), -EINVAL);
}

Test(policy_network, host_bits_set_is_an_error)
{
	struct policy_network net;

	cr_expect_eq(policy_parse_network("192.0.2.1/24", &net), -EINVAL);
	cr_expect_eq(policy_parse_network("192.0.2.1/0", &net), -EINVAL);
	cr_expect_eq(policy_parse_network("10.0.0.0/4", &net), -EINVAL, "inside a byte");
	cr_expect_eq(policy_parse_network("192.0.2.129/25", &net), -EINVAL);
	cr_expect_eq(policy_parse_network("2001:db8::1/64", &net), -EINVAL);
	cr_expect_eq(policy_parse_network("::1/127", &net), -EINVAL);
	cr_expect_eq(policy_parse_network("::ffff:1:0/96", &net), -EINVAL);
}

Test(policy_network, garbage_is_an_error)
{
	static const char *const bad[] = {
		"",
		"/24",
		"192.0.2.0/",
		"192.0.2.0/-1",
		"192.0.2.0/+8",
		"192.0.2.0/24x",
		"192.0.2.0/ 24",
		"192.0.2.0/0024",
		"192.0.2.0/24/8",
		"192.0.2",
		"192.0.2.256",
		"192.0.2.0 ",
		" 192.0.2.0",
		"example.com",
		"2001:db8::g/32",
		"fe80::1%eth0",
		"::ffff:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0",
	};
	struct policy_network net;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(policy_parse_network(bad[i], &net), -EINVAL, "\"%s\"", bad[i]);
	cr_expect_eq(policy_parse_network(NULL, &net), -EINVAL);
	cr_expect_eq(policy_parse_network("192.0.2.0/24", NULL), -EINVAL);
}

/* ---- policy_network_contains -------------------------------------------- */

Test(policy_network, ipv4_membership)
{
	cr_expect(test_contains("127.0.0.0/8", "127.0.0.1"));
	cr_expect(test_contains("127.0.0.0/8", "127.255.255.255"));
	cr_expect(!test_contains("127.0.0.0/8", "128.0.0.1"));
	cr_expect(!test_contains("127.0.0.0/8", "192.0.2.1"));
	cr_expect(test_contains("192.0.2.128/25", "192.0.2.200"));
	cr_expect(!test_contains("192.0.2.128/25", "192.0.2.127"));
	cr_expect(test_contains("192.0.2.1", "192.0.2.1"));
	cr_expect(!test_contains("192.0.2.1", "192.0.2.2"));
	cr_expect(test_contains("0.0.0.0/0", "203.0.113.9"));
	cr_expect(test_contains("0.0.0.0/0", "255.255.255.255"));
}

Test(policy_network, ipv6_membership)
{
	cr_expect(test_contains("::1/128", "::1"));
	cr_expect(!test_contains("::1/128", "::2"));
	cr_expect(test_contains("2001:db8::/32", "2001:db8:ffff::1"));
	cr_expect(!test_contains("2001:db8::/32", "2001:db9::1"));
	cr_expect(test_contains("2001:db8::/33", "2001:db8:7fff::1"));
	cr_expect(!test_contains("2001:db8::/33", "2001:db8:8000::1"));
	cr_expect(test_contains("::/0", "2001:db8::1"));
	cr_expect(test_contains("::/0", "::"));
}

Test(policy_network, families_do_not_mix)
{
	cr_expect(!test_contains("::1/128", "127.0.0.1"));
	cr_expect(!test_contains("127.0.0.0/8", "::1"));
	cr_expect(!test_contains("0.0.0.0/0", "2001:db8::1"));
	/* A mapped client is an IPv4 client: ::/0 means "all of IPv6", and the
	 * verdict must not depend on whether the listener is dual-stack. */
	cr_expect(!test_contains("::/0", "192.0.2.1"));
	cr_expect(!test_contains("::/0", "::ffff:192.0.2.1"));
}

Test(policy_network, ipv4_mapped_clients_match_ipv4_networks)
{
	cr_expect(test_contains("127.0.0.0/8", "::ffff:127.0.0.1"));
	cr_expect(!test_contains("127.0.0.0/8", "::ffff:192.0.2.1"));
	cr_expect(test_contains("0.0.0.0/0", "::ffff:203.0.113.9"));
	cr_expect(test_contains("192.0.2.1", "::ffff:192.0.2.1"));
}

Test(policy_network, ipv4_mapped_networks_match_either_spelling)
{
	cr_expect(test_contains("::ffff:0:0/96", "127.0.0.1"));
	cr_expect(test_contains("::ffff:0:0/96", "::ffff:127.0.0.1"));
	cr_expect(!test_contains("::ffff:0:0/96", "::1"));
	cr_expect(test_contains("::ffff:127.0.0.0/104", "127.0.0.1"));
	cr_expect(test_contains("::ffff:127.0.0.0/104", "::ffff:127.9.9.9"));
	cr_expect(!test_contains("::ffff:127.0.0.0/104", "192.0.2.1"));
}

Test(policy_network, unusable_inputs_never_match)
{
	struct policy_network net = test_network("0.0.0.0/0");
	struct sockaddr_un unix_addr = {.sun_family = AF_UNIX};

	cr_expect(!policy_network_contains(&net, (const struct sockaddr *)&unix_addr));
	cr_expect(!policy_network_contains(&net, NULL));
	cr_expect(!policy_network_contains(NULL, NULL));

	struct sockaddr_storage ss = test_client("192.0.2.1");

	/* Corrupt networks, not from policy_parse_network(). */
	net = test_network("192.0.2.1/32");
	net.prefix = 33;
	cr_expect(!policy_network_contains(&net, (const struct sockaddr *)&ss));
	ss = test_client("::1");
	net = test_network("::1/128");
	net.prefix = 129;
	cr_expect(!policy_network_contains(&net, (const struct sockaddr *)&ss));
	net.family = AF_UNIX;
	net.prefix = 0;
	cr_expect(!policy_network_contains(&net, (const struct sockaddr *)&ss));
}

/* ---- policy_client_trusted ---------------------------------------------- */

Test(policy_trust, configured_networks, .init = test_policy_setup)
{
	cr_expect(test_trusted_client("127.0.0.1"));
	cr_expect(test_trusted_client("127.8.9.10"));
	cr_expect(test_trusted_client("::1"));
	cr_expect(test_trusted_client("::ffff:127.0.0.1"));

	cr_expect(!test_trusted_client("192.0.2.1"));
	cr_expect(!test_trusted_client("::ffff:192.0.2.1"));
	cr_expect(!test_trusted_client("::2"));
	cr_expect(!test_trusted_client("2001:db8::1"));
	cr_expect(!test_trusted_client(TEST_STRANGER));
}

Test(policy_trust, nobody_is_trusted_by_default)
{
	struct policy empty = {0};
	struct sockaddr_storage ss = test_client("127.0.0.1");

	cr_expect(!policy_client_trusted(&empty, (const struct sockaddr *)&ss));
	cr_expect(!policy_client_trusted(NULL, (const struct sockaddr *)&ss));
}

/* ---- policy_is_relay_domain --------------------------------------------- */

Test(policy_relay_domain, matching, .init = test_policy_setup)
{
	static const struct {
		const char *domain;
		bool relay;
	} cases[] = {
		{"relay.example", true},
		{"RELAY.EXAMPLE", true},
		{"Relay.Example", true},
		{"a.sub.example", true},
		{"a.b.sub.example", true},
		{"A.SUB.EXAMPLE", true},
		{"sub.example", false}, /* ".x" is subdomains only */
		{".sub.example", false},
		{"xsub.example", false},    /* not on a label boundary */
		{"badsub.example", false},  /* idem */
		{"a.relay.example", false}, /* "x" is that domain only */
		{"xrelay.example", false},
		{"relay.example.", false},
		{"relay.exampl", false},
		{"elay.example", false},
		{"relay.example.com", false},
		{"relay.example.other.example", false},
		{"other.example", false},
		{"example", false},
		{"", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *d = cases[i].domain;

		cr_expect_eq(policy_is_relay_domain(&test_policy, d, strlen(d)), cases[i].relay,
			     "\"%s\"", d);
	}
}

Test(policy_relay_domain, length_not_nul_bounds_the_domain, .init = test_policy_setup)
{
	cr_expect(policy_is_relay_domain(&test_policy, "relay.example>junk", 13));
	cr_expect(!policy_is_relay_domain(&test_policy, "relay.example", 12));
}

Test(policy_relay_domain, no_relay_domains_configured)
{
	struct policy empty = {0};

	cr_expect(!policy_is_relay_domain(&empty, "relay.example", 13));
	cr_expect(!policy_is_relay_domain(NULL, "relay.example", 13));
}

/* ---- policy_domains: the set itself ------------------------------------- */

static struct policy_domains *test_domains(const char *const *names, size_t count)
{
	struct policy_domains *set = NULL;

	cr_assert_eq(policy_domains_build(&set, names, count), 0);
	cr_assert_not_null(set);
	return set;
}

static bool test_in(const struct policy_domains *set, const char *domain)
{
	return policy_domains_contain(set, domain, strlen(domain));
}

Test(policy_domains, exact_and_subdomain_names)
{
	static const char *const names[] = {"example.com", ".example.net"};
	struct policy_domains *set = test_domains(names, 2);

	cr_expect(test_in(set, "example.com"));
	cr_expect(!test_in(set, "mail.example.com"), "an exact name has no subdomains");
	cr_expect(test_in(set, "mail.example.net"));
	cr_expect(test_in(set, "a.b.c.example.net"));
	cr_expect(!test_in(set, "example.net"), "a subdomain name does not hold its parent");
	cr_expect(!test_in(set, ".example.net"));
	cr_expect(!test_in(set, "example.org"));
	cr_expect(!test_in(set, "com"));
	cr_expect(!test_in(set, ""));
	policy_domains_free(set);
}

Test(policy_domains, both_forms_of_one_domain)
{
	static const char *const names[] = {".example.com", "example.com"};
	struct policy_domains *set = test_domains(names, 2);

	cr_expect(test_in(set, "example.com"));
	cr_expect(test_in(set, "mx.example.com"));
	cr_expect(!test_in(set, "xexample.com"));
	policy_domains_free(set);
}

Test(policy_domains, case_does_not_matter)
{
	static const char *const names[] = {"Relay.EXAMPLE", ".Sub.Example"};
	struct policy_domains *set = test_domains(names, 2);

	cr_expect(test_in(set, "relay.example"));
	cr_expect(test_in(set, "RELAY.EXAMPLE"));
	cr_expect(test_in(set, "rElAy.example"));
	cr_expect(test_in(set, "a.sub.example"));
	cr_expect(test_in(set, "A.SUB.EXAMPLE"));
	cr_expect(!test_in(set, "SUB.EXAMPLE"));
	policy_domains_free(set);
}

Test(policy_domains, subdomains_only_at_a_label_boundary)
{
	static const char *const names[] = {".example.com"};
	struct policy_domains *set = test_domains(names, 1);

	cr_expect(test_in(set, "bar.example.com"));
	cr_expect(!test_in(set, "barexample.com"));
	cr_expect(!test_in(set, "bar-example.com"));
	cr_expect(!test_in(set, "foo.barexample.com"));
	cr_expect(!test_in(set, "example.com"));
	cr_expect(!test_in(set, "xample.com"));
	cr_expect(!test_in(set, "example.com.evil.example"));
	policy_domains_free(set);
}

Test(policy_domains, every_parent_suffix_is_looked_up)
{
	static const char *const names[] = {".com"};
	struct policy_domains *set = test_domains(names, 1);

	cr_expect(test_in(set, "a.b.example.com"));
	cr_expect(test_in(set, "example.com"));
	cr_expect(!test_in(set, "com"));
	cr_expect(!test_in(set, "example.org"));
	cr_expect(!test_in(set, "example.xcom"));
	policy_domains_free(set);
}

/* As many names as a config list holds: half exact, half subdomain. */
Test(policy_domains, a_full_config_list)
{
	static char text[CONFIG_MAX_LIST][32];
	static const char *names[CONFIG_MAX_LIST];
	char probe[64];

	for (unsigned i = 0; i < CONFIG_MAX_LIST; i++) {
		snprintf(text[i], sizeof(text[i]), i % 2 ? ".s%u.example" : "d%u.example", i);
		names[i] = text[i];
	}
	struct policy_domains *set = test_domains(names, CONFIG_MAX_LIST);

	for (unsigned i = 0; i < CONFIG_MAX_LIST; i++) {
		if (i % 2 == 0) {
			cr_assert(test_in(set, text[i]), "%s", text[i]);
			snprintf(probe, sizeof(probe), "mx.%s", text[i]);
			cr_assert(!test_in(set, probe), "%s", probe);
			snprintf(probe, sizeof(probe), "s%u.example", i);
			cr_assert(!test_in(set, probe), "%s", probe);
		} else {
			snprintf(probe, sizeof(probe), "mx%s", text[i]);
			cr_assert(test_in(set, probe), "%s", probe);
			cr_assert(!test_in(set, text[i] + 1), "%s", text[i] + 1);
			snprintf(probe, sizeof(probe), "d%u.example", i);
			cr_assert(!test_in(set, probe), "%s", probe);
		}
	}
	cr_expect(!test_in(set, "d4096.example"));
	cr_expect(!test_in(set, "mx.s4097.example"));
	policy_domains_free(set);
}

Test(policy_domains, domain_longer_than_any_name)
{
	static const char *const names[] = {"relay.example", ".sub.example"};
	struct policy_domains *set = test_domains(names, 2);
	char label[64];
	char domain[ADDRESS_DOMAIN_MAX + 1];

	memset(label, 'a', 63);
	label[63] = '\0';
	snprintf(domain, sizeof(domain), "%s.%s.%s.sub.example", label, label, label);
	cr_assert_gt(strlen(domain), 200);
	cr_expect(test_in(set, domain), "a long subdomain is still a subdomain");
	cr_expect(policy_domains_contain(set, domain, strlen(domain) - 4) == false);
	snprintf(domain, sizeof(domain), "%s.%s.%s.relay.example", label, label, label);
	cr_expect(!test_in(set, domain));
	snprintf(domain, sizeof(domain), "%s.%s.%s.other.example", label, label, label);
	cr_expect(!test_in(set, domain));
	policy_domains_free(set);
}

Test(policy_domains, empty_set)
{
	struct policy_domains *set = test_domains(NULL, 0);

	cr_expect(!test_in(set, "relay.example"));
	cr_expect(!test_in(set, "a.b"));
	cr_expect(!test_in(set, ""));
	cr_expect(!test_in(NULL, "relay.example"));
	policy_domains_free(set);
	policy_domains_free(NULL);
}

Test(policy_domains, duplicates_and_bad_names)
{
	static const char *const dup[] = {"a.example", "A.EXAMPLE", "a.example", "b.example"};
	static const char *const empty[] = {"a.example", ""};
	static const char *const null[] = {"a.example", NULL};
	struct policy_domains *set = test_domains(dup, 4);

	cr_expect(test_in(set, "a.example"));
	cr_expect(test_in(set, "b.example"));
	policy_domains_free(set);

	set = NULL;
	cr_expect_eq(policy_domains_build(&set, empty, 2), -EINVAL);
	cr_expect_eq(policy_domains_build(&set, null, 2), -EINVAL);
	cr_expect_null(set, "nothing is built from a bad list");
}

Test(policy_domains, the_set_keeps_its_own_copy)
{
	char name[] = "relay.example";
	const char *names[] = {name};
	struct policy_domains *set = test_domains(names, 1);

	memcpy(name, "xxxxx", 5);
	cr_expect(test_in(set, "relay.example"));
	cr_expect(!test_in(set, "xxxxx.example"));
	policy_domains_free(set);
}

/* ---- the open-relay catalogue (spec/smtp.md), untrusted client ---------- */

Test(policy_open_relay, stranger_is_not_trusted, .init = test_policy_setup)
{
	cr_assert(!test_trusted_client(TEST_STRANGER));
}

Test(policy_open_relay, percent_hack, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "user%other.example@relay.example", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
	test_rcpt(TEST_STRANGER, "user%other.example@a.sub.example", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
	test_rcpt(TEST_STRANGER, "\"user%other.example\"@relay.example", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
}

Test(policy_open_relay, bang_path, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "other.example!user@relay.example", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
	test_rcpt(TEST_STRANGER, "\"other.example!user\"@relay.example", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
}

Test(policy_open_relay, source_route_is_judged_by_final_mailbox, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "@relay.example:user@other.example", ADDRESS_OK,
		  POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "@relay.example,@a.sub.example:user@other.example", ADDRESS_OK,
		  POLICY_RELAY_DENIED);
	/* The converse is legitimate: the route is ignored, the mailbox is ours. */
	test_rcpt(TEST_STRANGER, "@other.example:user@relay.example", ADDRESS_OK, POLICY_ACCEPT);
}

Test(policy_open_relay, quoted_at_sign, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "\"user@other.example\"@relay.example", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
	test_rcpt(TEST_STRANGER, "\"user\\@other.example\"@relay.example", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
	test_rcpt(TEST_STRANGER, "\"@other.example:user\"@relay.example", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
}

Test(policy_open_relay, trailing_dot, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "user@other.example.", ADDRESS_BAD_DOMAIN, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@relay.example.", ADDRESS_BAD_DOMAIN, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@relay.example..", ADDRESS_BAD_DOMAIN, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@a.sub.example.", ADDRESS_BAD_DOMAIN, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@.relay.example", ADDRESS_BAD_DOMAIN, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@..sub.example", ADDRESS_BAD_DOMAIN, POLICY_RELAY_DENIED);
}

Test(policy_open_relay, address_literal, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "user@[192.0.2.1]", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@[IPv6:2001:db8::1]", ADDRESS_OK, POLICY_RELAY_DENIED);
	/* A dotted quad without brackets is only a (numeric) domain name, and
	 * not one of ours. */
	test_rcpt(TEST_STRANGER, "user@192.0.2.1", ADDRESS_OK, POLICY_RELAY_DENIED);
}

Test(policy_open_relay, case_mixes, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "USER@RELAY.EXAMPLE", ADDRESS_OK, POLICY_ACCEPT);
	test_rcpt(TEST_STRANGER, "user@Relay.Example", ADDRESS_OK, POLICY_ACCEPT);
	test_rcpt(TEST_STRANGER, "user@A.Sub.Example", ADDRESS_OK, POLICY_ACCEPT);
	test_rcpt(TEST_STRANGER, "user@Other.Example", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "USER%OTHER.EXAMPLE@RELAY.EXAMPLE", ADDRESS_OK,
		  POLICY_ROUTING_DENIED);
}

Test(policy_open_relay, lookalike_domains, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "user@relay.example.other.example", ADDRESS_OK,
		  POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@xrelay.example", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@a.relay.example", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@relay.example.com", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@relay.example:25", ADDRESS_BAD_DOMAIN, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@relay.example@other.example", ADDRESS_BAD_SYNTAX,
		  POLICY_RELAY_DENIED);
}

Test(policy_open_relay, subdomain_entries, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "user@a.sub.example", ADDRESS_OK, POLICY_ACCEPT);
	test_rcpt(TEST_STRANGER, "user@a.b.sub.example", ADDRESS_OK, POLICY_ACCEPT);
	test_rcpt(TEST_STRANGER, "user@sub.example", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt(TEST_STRANGER, "user@xsub.example", ADDRESS_OK, POLICY_RELAY_DENIED);
}

Test(policy_open_relay, legitimate_recipients, .init = test_policy_setup)
{
	test_rcpt(TEST_STRANGER, "user@relay.example", ADDRESS_OK, POLICY_ACCEPT);
	test_rcpt(TEST_STRANGER, "first.last+tag@relay.example", ADDRESS_OK, POLICY_ACCEPT);
	test_rcpt(TEST_STRANGER, "\"john doe\"@relay.example", ADDRESS_OK, POLICY_ACCEPT);
	test_rcpt(TEST_STRANGER, "user@other.example", ADDRESS_OK, POLICY_RELAY_DENIED);
}

/* A caller that skipped address_parse_path() still cannot open the relay. */
Test(policy_open_relay, unparsed_mailboxes_are_refused, .init = test_policy_setup)
{
	struct mailbox m = {.local = "user", .local_len = 4};

	m.domain = "relay.example.";
	m.domain_len = strlen(m.domain);
	cr_expect_eq(policy_check_recipient(&test_policy, false, &m), POLICY_RELAY_DENIED);
	m.domain = "..sub.example";
	m.domain_len = strlen(m.domain);
	cr_expect_eq(policy_check_recipient(&test_policy, false, &m), POLICY_RELAY_DENIED);
	m.domain = "";
	m.domain_len = 0;
	cr_expect_eq(policy_check_recipient(&test_policy, false, &m), POLICY_RELAY_DENIED);
	cr_expect_eq(policy_check_recipient(&test_policy, false, NULL), POLICY_RELAY_DENIED);
}

/* ---- trusted clients relay anywhere ------------------------------------- */

Test(policy_trusted_relay, loopback_may_relay_anywhere, .init = test_policy_setup)
{
	static const char *const clients[] = {"127.0.0.1", "::1", "::ffff:127.0.0.1"};

	for (size_t i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
		cr_assert(test_trusted_client(clients[i]), "%s", clients[i]);
		test_rcpt(clients[i], "user@other.example", ADDRESS_OK, POLICY_ACCEPT);
		test_rcpt(clients[i], "user@Other.Example", ADDRESS_OK, POLICY_ACCEPT);
		test_rcpt(clients[i], "user@[192.0.2.1]", ADDRESS_OK, POLICY_ACCEPT);
		test_rcpt(clients[i], "user@relay.example", ADDRESS_OK, POLICY_ACCEPT);
		/* Trust does not bypass syntax. */
		test_rcpt(clients[i], "user@other.example.", ADDRESS_BAD_DOMAIN, POLICY_ACCEPT);
	}
}

/* A host of a trusted network may be compromised, and a next hop that
 * honours routing characters would take the mail where ferry never meant
 * to send it: they are refused whoever the client, in any domain. */
Test(policy_trusted_relay, routing_tricks_refused_even_from_trusted, .init = test_policy_setup)
{
	static const char *const clients[] = {"127.0.0.1", "::1", TEST_STRANGER};
	static const char *const tricks[] = {
		"user%other.example@relay.example",     "other.example!user@relay.example",
		"\"user@other.example\"@relay.example", "user%victim.example@other.example",
		"victim.example!user@other.example",    "\"user@victim.example\"@other.example",
		"user%victim.example@[192.0.2.1]",
	};
	for (size_t i = 0; i < sizeof(clients) / sizeof(clients[0]); i++)
		for (size_t j = 0; j < sizeof(tricks) / sizeof(tricks[0]); j++)
			test_rcpt(clients[i], tricks[j], ADDRESS_OK, POLICY_ROUTING_DENIED);
}

Test(policy_trusted_relay, outsider_may_not, .init = test_policy_setup)
{
	cr_assert(!test_trusted_client("192.0.2.1"));
	test_rcpt("192.0.2.1", "user@other.example", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt("::ffff:192.0.2.1", "user@other.example", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt("2001:db8::1", "user@other.example", ADDRESS_OK, POLICY_RELAY_DENIED);
	test_rcpt("192.0.2.1", "user@relay.example", ADDRESS_OK, POLICY_ACCEPT);
}
