/* nexthop: the transport syntax, and errors a postmaster can act on. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "core/config.h"
#include "net/nexthop.h"

static struct nexthop_list list;
static char err[512];

static void parse_ok(const char *text)
{
	err[0] = '\0';
	cr_assert_eq(nexthop_parse(text, &list, err, sizeof(err)), 0, "'%s' refused: %s", text,
		     err);
}

Test(nexthop, bracketed_host_is_that_host)
{
	parse_ok("[mx.customer.example]:25");
	cr_assert_eq(list.count, 1);
	cr_assert_str_eq(list.hops[0].host, "mx.customer.example");
	cr_assert_eq(list.hops[0].port, 25);
	cr_assert_not(list.hops[0].mx_lookup);
	cr_assert_not(list.hops[0].literal);
	cr_assert_eq(list.hops[0].addr_len, 0);
}

Test(nexthop, ipv4_literal)
{
	parse_ok("[127.0.0.1]:2526");
	const struct nexthop *h = &list.hops[0];
	cr_assert_str_eq(h->host, "127.0.0.1");
	cr_assert(h->literal);
	cr_assert_not(h->mx_lookup);
	cr_assert_eq(h->addr_len, sizeof(struct sockaddr_in));
	cr_assert_eq(h->addr.sa.sa_family, AF_INET);
	cr_assert_eq(ntohs(h->addr.in.sin_port), 2526);
	cr_assert_eq(ntohl(h->addr.in.sin_addr.s_addr), 0x7f000001);
}

Test(nexthop, ipv6_literal_with_or_without_its_tag)
{
	static const char *const forms[] = {"[::1]:2526", "[IPv6:::1]:2526", "[ipv6:::1]:2526"};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		parse_ok(forms[i]);
		const struct nexthop *h = &list.hops[0];
		cr_assert_str_eq(h->host, "::1", "%s", forms[i]);
		cr_assert(h->literal);
		cr_assert_eq(h->addr_len, sizeof(struct sockaddr_in6));
		cr_assert_eq(h->addr.sa.sa_family, AF_INET6);
		cr_assert_eq(ntohs(h->addr.in6.sin6_port), 2526);
		cr_assert(IN6_IS_ADDR_LOOPBACK(&h->addr.in6.sin6_addr));
	}
}

Test(nexthop, no_brackets_means_mx_lookup_and_port_defaults_to_25)
{
	parse_ok("mx.customer.example");
	cr_assert_str_eq(list.hops[0].host, "mx.customer.example");
	cr_assert(list.hops[0].mx_lookup);
	cr_assert_eq(list.hops[0].port, 25);
	parse_ok("mx.customer.example:2525");
	cr_assert(list.hops[0].mx_lookup);
	cr_assert_eq(list.hops[0].port, 2525);
	parse_ok("[relay.example]");
	cr_assert_not(list.hops[0].mx_lookup);
	cr_assert_eq(list.hops[0].port, 25);
}

Test(nexthop, lists_are_tried_in_order)
{
	parse_ok(" [mx1.example]:25,[192.0.2.7]:26 ,  backup.example\t[2001:db8::1]:587, ");
	cr_assert_eq(list.count, 4);
	cr_assert_str_eq(list.hops[0].host, "mx1.example");
	cr_assert_str_eq(list.hops[1].host, "192.0.2.7");
	cr_assert_eq(list.hops[1].port, 26);
	cr_assert_str_eq(list.hops[2].host, "backup.example");
	cr_assert(list.hops[2].mx_lookup);
	cr_assert_str_eq(list.hops[3].host, "2001:db8::1");
	cr_assert_eq(list.hops[3].port, 587);
	parse_ok("a.example b.example c.example d.example e.example f.example g.example h.example");
	cr_assert_eq(list.count, NEXTHOP_MAX);
}

Test(nexthop, errors_say_what_is_wrong)
{
	static const struct {
		const char *text, *says;
	} bad[] = {
		{"", "no next hop given"},
		{" , ", "no next hop given"},
		{"[mx.example", "'[mx.example' lacks its ']'"},
		{"[]:25", "'[]:25' has no host between its brackets"},
		{"[mx.example]25", "has '25' after its ']'"},
		{"[mx.example]:", "'[mx.example]:' has a ':' but no port after it"},
		{"mx.example:", "has a ':' but no port"},
		{"mx.example:70000", "port 70000 is out of range (1..65535) in 'mx.example:70000'"},
		{"[mx.example]:0", "port 0 is out of range"},
		{"mx.example:99999999999999999999999", "is out of range"},
		{"mx.example:smtp", "port 'smtp' in 'mx.example:smtp' is not a number"},
		{"mx.example:-1", "is not a number"},
		{":25", "':25' has no host before its port"},
		{"2001:db8::1", "looks like an IPv6 address: write it in brackets"},
		{"192.0.2.1:25", "'192.0.2.1:25' is an IP address: write it in brackets, as "
				 "'[192.0.2.1]'"},
		{"[mx_1.example]", "'mx_1.example' is neither a host name"},
		{"[-mx.example]", "neither a host name"},
		{"mx..example", "neither a host name"},
		{"mx.example.", "neither a host name"},
		{"[1.2.3.4.5]", "neither a host name nor an IP address (a mistyped address?)"},
		{"192.0.2.300", "neither a host name nor an IP address"},
		{"[::1", "lacks its ']'"},
		{"a b c d e f g h i", "more than 8 next hops"},
		{"[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaaaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]",
		 "is too long for a next hop"},
		{"[a234567890123456789012345678901234567890123456789012345678901234.example]",
		 "neither a host name"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		cr_expect_eq(nexthop_parse(bad[i].text, &list, err, sizeof(err)), -EINVAL,
			     "accepted: '%s'", bad[i].text);
		cr_expect(strstr(err, bad[i].says) != NULL, "'%s': '%s' does not say '%s'",
			  bad[i].text, err, bad[i].says);
	}
}

/* What ferryd --check-config says about the delivery keys. */
static void check_config_says(const char *text, const char *says)
{
	static struct config cfg;
	char load_err[512];
	config_defaults(&cfg);
	cr_assert_eq(config_load_string(&cfg, text, "n.conf", load_err, sizeof(load_err)), 0, "%s",
		     load_err);
	err[0] = '\0';
	int r = nexthop_check_config(&cfg, err, sizeof(err));
	if (says == NULL)
		cr_expect_eq(r, 0, "'%s' refused: %s", text, err);
	else
		cr_expect(r == -EINVAL && strstr(err, says) != NULL, "'%s': '%s' does not say '%s'",
			  text, err, says);
	config_free(&cfg);
}

Test(nexthop, config_check_names_file_line_section_and_key)
{
	check_config_says("[server]\nworkers = 1\n", NULL); /* demo.test's built-in transport */
	check_config_says("[delivery]\nsource_address = 192.0.2.25\n"
			  "relayhost = [smarthost.example]:587\n"
			  "[domain a.example]\ntransport = [::1]:2526, mx.a.example\n"
			  "[domain b.example]\n",
			  NULL);
	check_config_says("[delivery]\n\nrelayhost = [smarthost.example:587\n",
			  "n.conf:3: key 'relayhost': '[smarthost.example:587' lacks its ']'");
	check_config_says("[delivery]\nsource_address = mx.example\n",
			  "n.conf:2: key 'source_address': not an IPv4 or IPv6 address");
	check_config_says("[domain a.example]\nhold = yes\n[domain .B.example]\n"
			  "transport = mx.b.example:70000\n",
			  "n.conf:3: [domain .b.example] key 'transport': port 70000 is out of "
			  "range");
}
