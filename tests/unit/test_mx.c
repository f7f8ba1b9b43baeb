/*
 * Tests for the MX routing decision (net/mx.c) and the MX ordering
 * (dns_mx_order in net/dns.c): pure, no DNS, no sockets.
 *
 * What is asserted is what a sender would notice: which hosts the relay
 * tries and in what order, that equal preferences share the load, and
 * the exact reply code, enhanced status and words of each failure (the
 * DSN says them).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "net/dns.h"
#include "net/mx.h"

static struct dns_mx t_mx(const char *host, uint16_t preference)
{
	struct dns_mx m = {.preference = preference};
	strncpy(m.host, host, sizeof(m.host) - 1);
	return m;
}

static struct dns_mx_result t_result(struct dns_mx *mx, unsigned n)
{
	return (struct dns_mx_result){.status = DNS_OK, .reason = "", .mx = mx, .count = n};
}

/* ---- dns_mx_order ------------------------------------------------------------ */

TestSuite(mx_order);

Test(mx_order, sorts_by_preference_lowest_first)
{
	struct dns_mx mx[] = {t_mx("c", 30), t_mx("a", 10), t_mx("d", 40), t_mx("b", 20)};
	uint64_t seed = 1;
	dns_mx_order(mx, 4, &seed);
	cr_assert_str_eq(mx[0].host, "a");
	cr_assert_str_eq(mx[1].host, "b");
	cr_assert_str_eq(mx[2].host, "c");
	cr_assert_str_eq(mx[3].host, "d");
}

Test(mx_order, equal_preferences_are_a_permutation_kept_in_their_place)
{
	for (uint64_t s = 0; s < 200; s++) {
		struct dns_mx mx[] = {t_mx("z", 50), t_mx("p", 10), t_mx("q", 10),
				      t_mx("r", 10), t_mx("a", 5),  t_mx("s", 10)};
		uint64_t seed = s;
		dns_mx_order(mx, 6, &seed);
		cr_assert_str_eq(mx[0].host, "a");
		cr_assert_str_eq(mx[5].host, "z");
		bool seen[4] = {false};
		for (int i = 1; i <= 4; i++) {
			cr_assert_eq(mx[i].preference, 10);
			int k = mx[i].host[0] == 's' ? 3 : mx[i].host[0] - 'p';
			cr_assert(k >= 0 && k < 4 && !seen[k], "seed %llu: %s twice or unknown",
				  (unsigned long long)s, mx[i].host);
			seen[k] = true;
		}
	}
}

Test(mx_order, the_shuffle_varies_with_the_seed_and_spreads_the_load)
{
	unsigned first[3] = {0};
	for (uint64_t s = 0; s < 300; s++) {
		struct dns_mx mx[] = {t_mx("a", 10), t_mx("b", 10), t_mx("c", 10)};
		uint64_t seed = s * 7919;
		dns_mx_order(mx, 3, &seed);
		first[mx[0].host[0] - 'a']++;
	}
	/* 100 each expected; every exchanger leads a fair share. */
	for (int i = 0; i < 3; i++)
		cr_assert_gt(first[i], 60, "%c first only %u times of 300", 'a' + i, first[i]);
}

Test(mx_order, the_seed_advances_so_one_worker_varies_too)
{
	uint64_t seed = 42;
	unsigned differ = 0;
	char prev[4] = "";
	for (int round = 0; round < 50; round++) {
		struct dns_mx mx[] = {t_mx("a", 1), t_mx("b", 1), t_mx("c", 1)};
		dns_mx_order(mx, 3, &seed);
		char now[4] = {mx[0].host[0], mx[1].host[0], mx[2].host[0], '\0'};
		if (round > 0 && strcmp(now, prev) != 0)
			differ++;
		memcpy(prev, now, sizeof(prev));
	}
	cr_assert_gt(differ, 10);
}

Test(mx_order, empty_and_single_lists_are_fine)
{
	uint64_t seed = 3;
	dns_mx_order(NULL, 0, &seed);
	struct dns_mx one = t_mx("only", 7);
	dns_mx_order(&one, 1, &seed);
	cr_assert_str_eq(one.host, "only");
}

/* ---- mx_route -------------------------------------------------------------------- */

TestSuite(mx_route);

Test(mx_route, mx_records_are_tried_in_their_order)
{
	struct dns_mx mx[] = {t_mx("mx1.example.net", 10), t_mx("mx2.example.net", 20)};
	struct dns_mx_result r = t_result(mx, 2);
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "example.net", "relay.isp.example", &out), MX_ROUTE_HOSTS);
	cr_assert_eq(out.count, 2);
	cr_assert_not(out.implicit);
	cr_assert_str_eq(out.hosts[0].host, "mx1.example.net");
	cr_assert_str_eq(out.hosts[1].host, "mx2.example.net");
	cr_assert_eq(out.hosts[1].preference, 20);
	cr_assert_eq(out.code, 0);
	cr_assert_str_eq(out.status, "");
}

Test(mx_route, nxdomain_is_a_permanent_failure)
{
	struct dns_mx_result r = {.status = DNS_NXDOMAIN, .reason = "Domain name not found"};
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "nowhere.example.", "relay.isp.example", &out),
		     MX_ROUTE_PERMANENT);
	cr_assert_eq(out.code, 550);
	cr_assert_str_eq(out.status, "5.1.2");
	cr_assert_str_eq(out.reason, "domain nowhere.example does not exist");
	cr_assert_eq(out.count, 0);
}

Test(mx_route, null_mx_is_a_permanent_failure_556_5_1_10)
{
	struct dns_mx_result r = {.status = DNS_NULL_MX, .reason = "null MX (RFC 7505)"};
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "nomail.example", "relay.isp.example", &out), MX_ROUTE_PERMANENT);
	cr_assert_eq(out.code, 556);
	cr_assert_str_eq(out.status, "5.1.10");
	cr_assert_str_eq(
		out.reason,
		"domain nomail.example accepts no mail (it publishes a null MX, RFC 7505)");
}

Test(mx_route, a_failed_lookup_is_temporary)
{
	struct dns_mx_result r = {.status = DNS_TEMPFAIL,
				  .reason = "Timeout while contacting DNS servers"};
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "slow.example", "relay.isp.example", &out), MX_ROUTE_TEMPORARY);
	cr_assert_eq(out.code, 451);
	cr_assert_str_eq(out.status, "4.4.3");
	cr_assert_str_eq(out.reason, "the MX lookup for slow.example failed (Timeout while "
				     "contacting DNS servers); trying again later");
}

Test(mx_route, no_mx_falls_back_to_the_domain_itself)
{
	struct dns_mx_result r = {.status = DNS_NODATA, .reason = ""};
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "Plain.Example.", "relay.isp.example", &out), MX_ROUTE_HOSTS);
	cr_assert(out.implicit);
	cr_assert_eq(out.count, 1);
	cr_assert_str_eq(out.hosts[0].host, "Plain.Example");
	cr_assert_eq(out.hosts[0].preference, 0);
	/* No lookup at all reads the same. */
	cr_assert_eq(mx_route(NULL, "plain.example", "relay.isp.example", &out), MX_ROUTE_HOSTS);
	cr_assert(out.implicit);
	cr_assert_str_eq(out.hosts[0].host, "plain.example");
}

Test(mx_route, a_relay_in_the_list_tries_only_the_more_preferred)
{
	struct dns_mx mx[] = {t_mx("mx1.customer.example", 10), t_mx("mx1b.customer.example", 10),
			      t_mx("RELAY.isp.example.", 20), t_mx("backup2.other.example", 20),
			      t_mx("last.other.example", 30)};
	struct dns_mx_result r = t_result(mx, 5);
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "customer.example", "relay.isp.example", &out), MX_ROUTE_HOSTS);
	cr_assert_eq(out.count, 2, "self (20), its equal (20) and the less preferred (30) go");
	cr_assert_str_eq(out.hosts[0].host, "mx1.customer.example");
	cr_assert_str_eq(out.hosts[1].host, "mx1b.customer.example");
}

Test(mx_route, self_listed_twice_counts_at_its_best_preference)
{
	struct dns_mx mx[] = {t_mx("a.example", 5), t_mx("relay.isp.example", 10),
			      t_mx("b.example", 15), t_mx("relay.isp.example", 20)};
	struct dns_mx_result r = t_result(mx, 4);
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "customer.example", "relay.isp.example.", &out), MX_ROUTE_HOSTS);
	cr_assert_eq(out.count, 1);
	cr_assert_str_eq(out.hosts[0].host, "a.example");
}

Test(mx_route, self_as_the_best_mx_is_a_loop)
{
	struct dns_mx mx[] = {t_mx("relay.isp.example", 10), t_mx("backup.example", 20)};
	struct dns_mx_result r = t_result(mx, 2);
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "customer.example", "relay.isp.example", &out),
		     MX_ROUTE_PERMANENT);
	cr_assert_eq(out.code, 554);
	cr_assert_str_eq(out.status, "5.4.6");
	cr_assert_str_eq(out.reason, "mail for customer.example loops back to myself "
				     "(relay.isp.example is its most preferred mail exchanger)");
	cr_assert_eq(out.count, 0);
}

Test(mx_route, an_implicit_mx_that_is_myself_is_a_loop)
{
	struct dns_mx_result r = {.status = DNS_NODATA, .reason = ""};
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "relay.isp.example", "Relay.ISP.example", &out),
		     MX_ROUTE_PERMANENT);
	cr_assert_str_eq(out.status, "5.4.6");
	cr_assert_str_eq(out.reason, "mail for relay.isp.example loops back to myself "
				     "(Relay.ISP.example is its address, having no MX records)");
}

Test(mx_route, no_self_hostname_means_no_self_check)
{
	struct dns_mx mx[] = {t_mx("relay.isp.example", 10)};
	struct dns_mx_result r = t_result(mx, 1);
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "customer.example", NULL, &out), MX_ROUTE_HOSTS);
	cr_assert_eq(mx_route(&r, "customer.example", "", &out), MX_ROUTE_HOSTS);
	cr_assert_eq(out.count, 1);
}

Test(mx_route, at_most_mx_route_max_hosts_the_most_preferred)
{
	struct dns_mx mx[MX_ROUTE_MAX + 5];
	for (unsigned i = 0; i < MX_ROUTE_MAX + 5; i++) {
		mx[i] = t_mx("mx.example", (uint16_t)i);
		mx[i].host[0] = (char)('a' + i);
	}
	struct dns_mx_result r = t_result(mx, MX_ROUTE_MAX + 5);
	struct mx_route out;
	cr_assert_eq(mx_route(&r, "many.example", "relay.isp.example", &out), MX_ROUTE_HOSTS);
	cr_assert_eq(out.count, MX_ROUTE_MAX);
	cr_assert_eq(out.hosts[MX_ROUTE_MAX - 1].preference, MX_ROUTE_MAX - 1);
}

Test(mx_route, same_host_ignores_case_and_one_trailing_dot)
{
	cr_assert(mx_same_host("Mx.Example.", "mx.example"));
	cr_assert(mx_same_host("mx.example", "MX.EXAMPLE."));
	cr_assert_not(mx_same_host("mx.example", "mx.example.org"));
	cr_assert_not(mx_same_host("mx.exampl", "mx.example"));
	cr_assert_not(mx_same_host("", "."));
}

/* ---- mx_address_is_self ------------------------------------------------------------ */

TestSuite(mx_self);

static struct sockaddr_storage t_addr(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
	} else {
		cr_assert_eq(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1, "%s", ip);
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
	}
	return ss;
}

static bool t_self(const char *ip, const struct sockaddr_storage *listen, unsigned nlisten,
		   const struct sockaddr_storage *local, unsigned nlocal)
{
	struct sockaddr_storage a = t_addr(ip, 25);
	return mx_address_is_self((struct sockaddr *)&a, listen, nlisten, local, nlocal);
}

Test(mx_self, a_listen_address_is_self_whatever_the_port)
{
	struct sockaddr_storage listen[] = {t_addr("192.0.2.10", 2525), t_addr("2001:db8::10", 25)};
	cr_assert(t_self("192.0.2.10", listen, 2, NULL, 0));
	cr_assert(t_self("2001:db8::10", listen, 2, NULL, 0));
	cr_assert(t_self("::ffff:192.0.2.10", listen, 2, NULL, 0));
	cr_assert_not(t_self("192.0.2.11", listen, 2, NULL, 0));
	cr_assert_not(t_self("127.0.0.1", listen, 2, NULL, 0), "not listening on any");
}

Test(mx_self, a_wildcard_listen_makes_local_and_loopback_addresses_self)
{
	struct sockaddr_storage listen4[] = {t_addr("0.0.0.0", 25)};
	struct sockaddr_storage local[] = {t_addr("198.51.100.7", 0), t_addr("2001:db8::7", 0)};
	cr_assert(t_self("198.51.100.7", listen4, 1, local, 2));
	cr_assert(t_self("127.0.0.2", listen4, 1, local, 2));
	cr_assert_not(t_self("198.51.100.8", listen4, 1, local, 2));
	cr_assert_not(t_self("2001:db8::7", listen4, 1, local, 2), "0.0.0.0 takes no IPv6");

	struct sockaddr_storage listen6[] = {t_addr("::", 25)};
	cr_assert(t_self("2001:db8::7", listen6, 1, local, 2));
	cr_assert(t_self("198.51.100.7", listen6, 1, local, 2), ":: takes IPv4 too");
	cr_assert(t_self("::1", listen6, 1, local, 2));
	cr_assert_not(t_self("2001:db8::8", listen6, 1, local, 2));
}
