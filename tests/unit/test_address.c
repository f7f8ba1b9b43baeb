/*
 * Tests for net/address: what a client's MAIL FROM / RCPT TO path turns into,
 * and which paths are refused with which status.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "net/address.h"

static enum address_status test_parse(const char *path, bool allow_utf8, struct mailbox *m)
{
	return address_parse_path(path, strlen(path), allow_utf8, m);
}

static void test_expect_span(const char *what, const char *ptr, size_t len, const char *want)
{
	cr_assert_eq(len, strlen(want), "%s: length %zu, want %zu (\"%s\")", what, len,
		     strlen(want), want);
	cr_assert(memcmp(ptr, want, len) == 0, "%s: got \"%.*s\", want \"%s\"", what, (int)len, ptr,
		  want);
}

static void test_expect_status(const char *path, bool allow_utf8, enum address_status want)
{
	struct mailbox m;
	enum address_status got = test_parse(path, allow_utf8, &m);

	cr_expect_eq(got, want, "\"%s\" (utf8 %d): got %d (%s), want %d (%s)", path, allow_utf8,
		     got, address_status_text(got), want, address_status_text(want));
}

/* "x" repeated n times, into buf. */
static char *test_fill(char *buf, size_t n)
{
	memset(buf, 'x', n);
	buf[n] = '\0';
	return buf;
}

/* A valid domain of exactly len octets: 62-octet labels, the last one up
 * to 63 octets. */
static void test_make_domain(char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (i % 63 == 62) ? '.' : 'x';
	buf[len] = '\0';
	/* A label must not be empty, so the last character is never a dot. */
	if (len > 0 && buf[len - 1] == '.')
		buf[len - 1] = 'x';
}

/* ---- basic shapes ------------------------------------------------------ */

Test(address, plain_mailbox)
{
	struct mailbox m;

	cr_assert_eq(test_parse("user@example.com", false, &m), ADDRESS_OK);
	test_expect_span("local", m.local, m.local_len, "user");
	test_expect_span("domain", m.domain, m.domain_len, "example.com");
	cr_expect(!m.quoted);
	cr_expect(!m.domain_literal);
	cr_expect(!m.utf8);
	cr_expect(!m.source_route);
}

Test(address, empty_path_is_null_reverse_path)
{
	struct mailbox m;

	cr_assert_eq(address_parse_path("", 0, false, &m), ADDRESS_EMPTY);
	cr_expect_eq(m.local_len, 0);
	cr_expect_eq(m.domain_len, 0);
	cr_expect_str_eq(m.domain, "");
}

Test(address, no_domain_fills_local_part)
{
	struct mailbox m;

	cr_assert_eq(test_parse("postmaster", false, &m), ADDRESS_NO_DOMAIN);
	test_expect_span("local", m.local, m.local_len, "postmaster");
	cr_expect_eq(m.domain_len, 0);
	cr_expect_str_eq(m.domain, "");

	cr_assert_eq(test_parse("\"post master\"", false, &m), ADDRESS_NO_DOMAIN);
	test_expect_span("local", m.local, m.local_len, "\"post master\"");
	cr_expect(m.quoted);
}

Test(address, at_sign_placement)
{
	test_expect_status("a@b@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"a@b\"@c@d.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("user@", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("@", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@example.com", false, ADDRESS_BAD_SYNTAX);
}

Test(address, failed_parse_leaves_no_stale_mailbox)
{
	struct mailbox m;

	cr_assert_eq(test_parse("user@example.com", false, &m), ADDRESS_OK);
	cr_assert_eq(test_parse("a@b@c", false, &m), ADDRESS_BAD_SYNTAX);
	cr_expect_eq(m.local_len, 0);
	cr_expect_eq(m.domain_len, 0);
}

Test(address, embedded_nul_is_refused)
{
	static const char local_nul[] = "us\0er@example.com";
	static const char domain_nul[] = "user@exa\0mple.com";
	static const char literal_nul[] = "user@[192.0.2.1\0x]";
	struct mailbox m;

	cr_expect_eq(address_parse_path(local_nul, sizeof(local_nul) - 1, false, &m),
		     ADDRESS_BAD_SYNTAX);
	cr_expect_eq(address_parse_path(domain_nul, sizeof(domain_nul) - 1, false, &m),
		     ADDRESS_BAD_DOMAIN);
	cr_expect_eq(address_parse_path(literal_nul, sizeof(literal_nul) - 1, false, &m),
		     ADDRESS_BAD_DOMAIN);
}

/* ---- local part --------------------------------------------------------- */

Test(address, dot_string_local_parts)
{
	struct mailbox m;

	cr_assert_eq(test_parse("first.last@example.com", false, &m), ADDRESS_OK);
	test_expect_span("local", m.local, m.local_len, "first.last");
	cr_assert_eq(test_parse("!#$%&'*+-/=?^_`{|}~@example.com", false, &m), ADDRESS_OK);
	test_expect_span("local", m.local, m.local_len, "!#$%&'*+-/=?^_`{|}~");

	test_expect_status(".user@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("user.@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("us..er@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status(".@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("us er@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("user(comment)@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("us\\er@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("us,er@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("us:er@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("<user>@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("us\ter@example.com", false, ADDRESS_BAD_SYNTAX);
}

Test(address, quoted_local_parts)
{
	struct mailbox m;

	cr_assert_eq(test_parse("\"john doe\"@example.com", false, &m), ADDRESS_OK);
	cr_expect(m.quoted);
	/* Quotes are kept as sent, and count towards the length. */
	test_expect_span("local", m.local, m.local_len, "\"john doe\"");
	test_expect_span("domain", m.domain, m.domain_len, "example.com");

	cr_assert_eq(test_parse("\"a\\\"b\\\\c\"@example.com", false, &m), ADDRESS_OK);
	test_expect_span("local", m.local, m.local_len, "\"a\\\"b\\\\c\"");

	cr_assert_eq(test_parse("\"\"@example.com", false, &m), ADDRESS_OK);
	test_expect_span("local", m.local, m.local_len, "\"\"");

	cr_assert_eq(test_parse("\"a.\\ b..c.\"@example.com", false, &m), ADDRESS_OK);

	test_expect_status("\"unterminated@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"escaped end\\\"@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"a\"b@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"a\"b", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"a\"xexample.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("a.\"b\"@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"a\"\"b\"@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"tab\tinside\"@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"escaped\\\ttab\"@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"cr\rlf\n\"@example.com", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("\"del\x7f\"@example.com", false, ADDRESS_BAD_SYNTAX);
}

/* ---- domain ------------------------------------------------------------- */

Test(address, domain_labels)
{
	struct mailbox m;

	cr_expect_eq(test_parse("user@a-b.example", false, &m), ADDRESS_OK);
	cr_expect_eq(test_parse("user@xn--bcher-kva.example", false, &m), ADDRESS_OK);
	cr_expect_eq(test_parse("user@123.example", false, &m), ADDRESS_OK);
	cr_expect_eq(test_parse("user@localhost", false, &m), ADDRESS_OK);
	cr_expect_eq(test_parse("user@EXAMPLE.COM", false, &m), ADDRESS_OK);
	test_expect_span("domain keeps its case", m.domain, m.domain_len, "EXAMPLE.COM");

	test_expect_status("user@-a.example", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@a-.example", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@a.example-", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@a..example", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@.example", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@example.", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@example..", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@.", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@a_b.example", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@exa mple.com", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@example.com ", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@example.com:25", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@example.com>", false, ADDRESS_BAD_DOMAIN);
}

Test(address, domain_label_length)
{
	char label[80];
	char path[128];

	test_fill(label, 63);
	snprintf(path, sizeof(path), "user@%s.example", label);
	test_expect_status(path, false, ADDRESS_OK);
	cr_expect(address_domain_valid(label, 63, false));

	test_fill(label, 64);
	snprintf(path, sizeof(path), "user@%s.example", label);
	test_expect_status(path, false, ADDRESS_BAD_DOMAIN);
	snprintf(path, sizeof(path), "user@example.%s", label);
	test_expect_status(path, false, ADDRESS_BAD_DOMAIN);
	cr_expect(!address_domain_valid(label, 64, false));
}

Test(address, domain_valid_total_length)
{
	char domain[300];

	test_make_domain(domain, 255);
	cr_expect(address_domain_valid(domain, 255, false), "255 octets is the limit");
	test_make_domain(domain, 256);
	cr_expect(!address_domain_valid(domain, 256, false), "256 octets is over it");
	cr_expect(!address_domain_valid("", 0, false));
	cr_expect(!address_domain_valid("example.com.", 12, false));
	cr_expect(address_domain_valid("example.com.", 11, false), "len, not NUL, ends it");
}

/* ---- lengths ------------------------------------------------------------ */

Test(address, local_part_length)
{
	char local[80];
	char path[128];
	struct mailbox m;

	test_fill(local, 64);
	snprintf(path, sizeof(path), "%s@example.com", local);
	cr_expect_eq(test_parse(path, false, &m), ADDRESS_OK);
	cr_expect_eq(m.local_len, 64);

	test_fill(local, 65);
	snprintf(path, sizeof(path), "%s@example.com", local);
	test_expect_status(path, false, ADDRESS_TOO_LONG);
	test_expect_status(local, false, ADDRESS_TOO_LONG); /* without a domain too */

	/* Quotes count: 62 characters quoted are 64 octets, 63 are 65. */
	snprintf(path, sizeof(path), "\"%s\"@example.com", test_fill(local, 62));
	test_expect_status(path, false, ADDRESS_OK);
	snprintf(path, sizeof(path), "\"%s\"@example.com", test_fill(local, 63));
	test_expect_status(path, false, ADDRESS_TOO_LONG);
}

Test(address, whole_path_length)
{
	char local[80];
	char domain[300];
	char path[400];
	struct mailbox m;

	/* 64 + 1 + 189 = 254: the most that fits in 256 octets with brackets. */
	test_fill(local, 64);
	test_make_domain(domain, 189);
	snprintf(path, sizeof(path), "%s@%s", local, domain);
	cr_assert_eq(strlen(path), ADDRESS_PATH_MAX - 2);
	cr_expect_eq(test_parse(path, false, &m), ADDRESS_OK);
	cr_expect_eq(m.domain_len, 189);

	test_make_domain(domain, 190);
	snprintf(path, sizeof(path), "%s@%s", local, domain);
	cr_assert_eq(strlen(path), 255);
	test_expect_status(path, false, ADDRESS_TOO_LONG);

	/* The longest domain a path can carry, and one more. */
	test_make_domain(domain, 252);
	snprintf(path, sizeof(path), "u@%s", domain);
	test_expect_status(path, false, ADDRESS_OK);
	test_make_domain(domain, 253);
	snprintf(path, sizeof(path), "u@%s", domain);
	test_expect_status(path, false, ADDRESS_TOO_LONG);

	/* A source route counts towards the path. */
	test_make_domain(domain, 240);
	snprintf(path, sizeof(path), "@a.example:user@%s", domain);
	test_expect_status(path, false, ADDRESS_TOO_LONG);
}

/* ---- source routes ------------------------------------------------------ */

Test(address, source_route_is_stripped)
{
	struct mailbox m;

	cr_assert_eq(test_parse("@a.example,@b.example:user@c.example", false, &m), ADDRESS_OK);
	cr_expect(m.source_route);
	test_expect_span("local", m.local, m.local_len, "user");
	test_expect_span("domain", m.domain, m.domain_len, "c.example");

	cr_assert_eq(test_parse("@a.example:\"x:y\"@c.example", false, &m), ADDRESS_OK);
	cr_expect(m.source_route);
	test_expect_span("local", m.local, m.local_len, "\"x:y\"");

	cr_assert_eq(test_parse("@a.example:postmaster", false, &m), ADDRESS_NO_DOMAIN);
	cr_expect(m.source_route);
	test_expect_span("local", m.local, m.local_len, "postmaster");
}

Test(address, malformed_source_routes)
{
	test_expect_status("@a.example,user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example,:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example,,@b.example:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example,b.example:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example,xb.example:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("xa.example:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example.:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@[192.0.2.1]:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example:", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example:@b.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example:@b.example:user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status(":user@c.example", false, ADDRESS_BAD_SYNTAX);
	test_expect_status("@a.example:user@c.example.", false, ADDRESS_BAD_DOMAIN);
}

/* ---- UTF-8 -------------------------------------------------------------- */

Test(address, utf8_requires_smtputf8)
{
	struct mailbox m;

	test_expect_status("j\xc3\xbcrgen@example.com", false, ADDRESS_NEEDS_UTF8);
	test_expect_status("user@b\xc3\xbc"
			   "cher.example",
			   false, ADDRESS_NEEDS_UTF8);
	test_expect_status("\"j\xc3\xbcrgen\"@example.com", false, ADDRESS_NEEDS_UTF8);
	test_expect_status("@b\xc3\xbc"
			   "cher.example:user@example.com",
			   false, ADDRESS_NEEDS_UTF8);
	/* Without SMTPUTF8 any 8-bit byte is the client's mistake, valid or not. */
	test_expect_status("j\xc0\xafrgen@example.com", false, ADDRESS_NEEDS_UTF8);

	cr_assert_eq(test_parse("j\xc3\xbcrgen@example.com", true, &m), ADDRESS_OK);
	cr_expect(m.utf8);
	test_expect_span("local", m.local, m.local_len, "j\xc3\xbcrgen");

	/* U+7528 U+6237 @ U+4F8B U+5B50 . U+5E7F U+544A */
	cr_assert_eq(test_parse("\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90."
				"\xe5\xb9\xbf\xe5\x91\x8a",
				true, &m),
		     ADDRESS_OK);
	cr_expect(m.utf8);
	cr_expect_eq(m.domain_len, 13);

	cr_assert_eq(test_parse("\"j\xc3\xbcr gen\"@example.com", true, &m), ADDRESS_OK);
	cr_expect(m.quoted);
	cr_expect(m.utf8);

	/* 4-byte sequence: U+1F600 */
	test_expect_status("\xf0\x9f\x98\x80@example.com", true, ADDRESS_OK);

	cr_assert_eq(test_parse("user@example.com", true, &m), ADDRESS_OK);
	cr_expect(!m.utf8, "ASCII under SMTPUTF8 is still ASCII");

	cr_assert_eq(test_parse("@b\xc3\xbc"
				"cher.example:user@example.com",
				true, &m),
		     ADDRESS_OK);
	cr_expect(!m.utf8, "only the mailbox counts, not the stripped route");
}

Test(address, invalid_utf8_is_refused)
{
	static const char *const bad[] = {
		"\xc0\xaf",         /* overlong '/' */
		"\xc1\xbf",         /* overlong, 2 bytes */
		"\xe0\x80\xae",     /* overlong '.' in 3 bytes */
		"\xf0\x80\x80\xc0", /* overlong in 4 bytes */
		"\xed\xa0\x80",     /* UTF-16 surrogate */
		"\xf4\x90\x80\x80", /* past U+10FFFF */
		"\xf5\x80\x80\x80", /* lead byte never valid */
		"\xff",             /* never valid */
		"\x80",             /* lone continuation */
		"\xc3",             /* truncated before '@' */
		"\xe2\x82",         /* truncated 3-byte */
		"\xc3\x28",         /* continuation expected */
	};
	char path[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(path, sizeof(path), "a%s@example.com", bad[i]);
		test_expect_status(path, true, ADDRESS_BAD_SYNTAX);
		snprintf(path, sizeof(path), "\"a%s\"@example.com", bad[i]);
		test_expect_status(path, true, ADDRESS_BAD_SYNTAX);
		snprintf(path, sizeof(path), "user@a%s.example", bad[i]);
		test_expect_status(path, true, ADDRESS_BAD_DOMAIN);
		snprintf(path, sizeof(path), "a%s@example.com", bad[i]);
		test_expect_status(path, false, ADDRESS_NEEDS_UTF8);
	}
	/* Truncated at the very end of the input. */
	test_expect_status("user@example.\xc3", true, ADDRESS_BAD_DOMAIN);
	test_expect_status("\xc3", true, ADDRESS_BAD_SYNTAX);
	/* quoted-pair stays ASCII under RFC 6531. */
	test_expect_status("\"a\\\xc3\xa9\"@example.com", true, ADDRESS_BAD_SYNTAX);
}

Test(address, utf8_domain_label_rules)
{
	cr_expect(address_domain_valid("b\xc3\xbc"
				       "cher.example",
				       15, true));
	cr_expect(!address_domain_valid("b\xc3\xbc"
					"cher.example",
					15, false));
	cr_expect(!address_domain_valid("-\xc3\xbc.example", 11, true));
	cr_expect(!address_domain_valid("\xc3\xbc.example.", 11, true));
}

/* ---- address literals --------------------------------------------------- */

Test(address, address_literals)
{
	struct mailbox m;

	cr_assert_eq(test_parse("user@[192.0.2.1]", false, &m), ADDRESS_OK);
	cr_expect(m.domain_literal);
	test_expect_span("domain", m.domain, m.domain_len, "[192.0.2.1]");

	cr_assert_eq(test_parse("user@[IPv6:2001:db8::1]", false, &m), ADDRESS_OK);
	cr_expect(m.domain_literal);
	test_expect_span("domain", m.domain, m.domain_len, "[IPv6:2001:db8::1]");

	test_expect_status("user@[ipv6:2001:db8::1]", false, ADDRESS_OK);
	test_expect_status("user@[IPv6:::1]", false, ADDRESS_OK);
	test_expect_status("user@[IPv6:::ffff:192.0.2.1]", false, ADDRESS_OK);
	test_expect_status("user@[IPv6:2001:db8:0:0:0:0:0:1]", false, ADDRESS_OK);

	test_expect_status("user@[2001:db8::1]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[IPv6:192.0.2.1]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[IPv6:2001:db8::g]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[IPv6:2001:db8::1%eth0]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[IPv6:]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[192.0.2.256]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[192.0.2]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[192.0.2.1", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[192.0.2.1].example", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[ 192.0.2.1]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[]", false, ADDRESS_BAD_DOMAIN);
	test_expect_status("user@[x-tag:whatever]", false, ADDRESS_BAD_DOMAIN);
}

/* ---- HELO and EHLO names ----------------------------------------------- */

static bool test_helo(const char *name)
{
	return address_helo_valid(name, strlen(name));
}

Test(address, helo_names)
{
	static const char *const good[] = {
		"mail.example.com",
		"MX1.EXAMPLE.com",
		"localhost",
		"my_pc",
		"_srv.example",
		"host.example.",
		"-x-.example",
		"192.0.2.1",
		"123",
		"[192.0.2.1]",
		"[IPv6:2001:db8::1]",
		"[ipv6:::ffff:192.0.2.1]",
		"xn--bcher-kva.example",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_expect(test_helo(good[i]), "\"%s\" refused", good[i]);

	static const char *const bad[] = {
		"",           ".",         "..",        ".example",    "a..b", "a.b..",
		"(",          "a(b",       "a)b",       "a b",         "a\tb", "a\rb",
		"a\nb",       "a;b",       "a,b",       "\"a\"",       "a\\b", "<a>",
		"a@b",        "a:b",       "a/b",       "caf\xc3\xa9", "\x7f", "[192.0.2.1",
		"192.0.2.1]", "[192.0.2]", "[IPv6:zz]", "[x-tag:y]",   "[]",   "!@#$%^&*(",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect(!test_helo(bad[i]), "\"%s\" accepted", bad[i]);

	/* A NUL inside, and the length limit (255 octets). */
	cr_expect(!address_helo_valid("a\0b", 3));
	char name[300];
	test_make_domain(name, 255);
	cr_expect(test_helo(name));
	test_make_domain(name, 256);
	cr_expect(!test_helo(name));
	cr_expect(!address_helo_valid(NULL, 0));
}

/* ---- helpers ------------------------------------------------------------ */

Test(address, status_text)
{
	cr_expect_str_eq(address_status_text(ADDRESS_BAD_SYNTAX), "malformed address");
	cr_expect_str_eq(address_status_text(ADDRESS_BAD_DOMAIN), "domain name is malformed");
	cr_expect_str_eq(address_status_text(ADDRESS_TOO_LONG), "address too long");
	cr_expect_str_eq(address_status_text(ADDRESS_NEEDS_UTF8),
			 "non-ASCII address requires SMTPUTF8");
	cr_expect_str_eq(address_status_text(ADDRESS_NO_DOMAIN), "address has no domain");
	cr_expect_not_null(address_status_text(ADDRESS_OK));
	cr_expect_not_null(address_status_text(ADDRESS_EMPTY));
	cr_expect_not_null(address_status_text((enum address_status)42));
}

Test(address, local_has_routing)
{
	static const struct {
		const char *path;
		bool routing;
	} cases[] = {
		{"user%other.example@relay.example", true},
		{"other.example!user@relay.example", true},
		{"\"user@other.example\"@relay.example", true},
		{"\"user%other\"@relay.example", true},
		{"\"a!b\"@relay.example", true},
		{"\"user\\@other\"@relay.example", true},
		{"user@relay.example", false},
		{"\"user\"@relay.example", false},
		{"first.last+tag@relay.example", false},
		{"\"john doe\"@relay.example", false},
	};
	struct mailbox m;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_eq(test_parse(cases[i].path, false, &m), ADDRESS_OK, "%s", cases[i].path);
		cr_expect_eq(address_local_has_routing(&m), cases[i].routing, "%s", cases[i].path);
	}
}

Test(address, domain_lower)
{
	char buf[16];

	cr_expect_eq(address_domain_lower(buf, sizeof(buf), "ExAmPle.COM", 11), 11);
	cr_expect_str_eq(buf, "example.com");

	/* Only the given length is copied, not up to a NUL. */
	cr_expect_eq(address_domain_lower(buf, sizeof(buf), "AB.CD-trailing", 5), 5);
	cr_expect_str_eq(buf, "ab.cd");

	/* UTF-8 bytes pass through unchanged. */
	cr_expect_eq(address_domain_lower(buf, sizeof(buf), "B\xc3\x9c.X", 5), 5);
	cr_expect_str_eq(buf, "b\xc3\x9c.x");

	cr_expect_eq(address_domain_lower(buf, sizeof(buf), "", 0), 0);
	cr_expect_str_eq(buf, "");

	/* Exactly fits with the terminator; one more does not. */
	cr_expect_eq(address_domain_lower(buf, 4, "ABC", 3), 3);
	cr_expect_str_eq(buf, "abc");
	cr_expect_eq(address_domain_lower(buf, 3, "ABC", 3), -1);
	cr_expect_str_eq(buf, "", "a refused copy leaves an empty string");
	cr_expect_eq(address_domain_lower(buf, 0, "ABC", 3), -1);
}
