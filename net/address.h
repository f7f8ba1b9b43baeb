/*
 * address — mailbox and domain syntax (RFC 5321 4.1.2, RFC 6531). Pure.
 *
 * Parses the path found between the angle brackets of MAIL FROM / RCPT TO.
 * A source route ("@a,@b:user@dom", RFC 5321 C) is accepted and stripped:
 * the mailbox after the colon is what the path means, and what policy must
 * judge. Nothing here interprets '%' or '!' in a local part as routing;
 * address_local_has_routing() lets policy refuse them.
 */
#ifndef FERRY_NET_ADDRESS_H
#define FERRY_NET_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

#define ADDRESS_LOCAL_MAX  64  /* RFC 5321 4.5.3.1.1 */
#define ADDRESS_DOMAIN_MAX 255 /* RFC 5321 4.5.3.1.2 */
#define ADDRESS_PATH_MAX   256 /* RFC 5321 4.5.3.1.3, brackets included */

enum address_status {
	ADDRESS_OK = 0,
	ADDRESS_EMPTY = -1,      /* "<>": only valid as a reverse path */
	ADDRESS_BAD_SYNTAX = -2, /* not a mailbox */
	ADDRESS_BAD_DOMAIN = -3, /* domain part malformed (trailing dot, empty label, ...) */
	ADDRESS_TOO_LONG = -4,   /* local part, domain or path over the RFC limits */
	ADDRESS_NEEDS_UTF8 = -5, /* 8-bit bytes without SMTPUTF8 */
	ADDRESS_NO_DOMAIN = -6,  /* "user" alone (e.g. "postmaster") */
};

struct mailbox {
	const char *local; /* points into the parsed path; quotes kept as sent */
	size_t local_len;
	const char *domain; /* points into the path; "" when ADDRESS_NO_DOMAIN */
	size_t domain_len;
	bool quoted;         /* local part is a quoted-string */
	bool domain_literal; /* domain is "[...]" (address literal) */
	bool utf8;           /* some byte >= 0x80 */
	bool source_route;   /* a source route was present and stripped */
};

/*
 * Parse `path` (the text between '<' and '>', brackets excluded).
 * allow_utf8: the transaction declared SMTPUTF8 (RFC 6531), so UTF-8 is
 * allowed in the local part and in domain labels.
 * On ADDRESS_OK, ADDRESS_EMPTY and ADDRESS_NO_DOMAIN, *out is filled.
 */
enum address_status address_parse_path(const char *path, size_t len, bool allow_utf8,
				       struct mailbox *out);

/* Text a postmaster understands, for replies and logs. */
const char *address_status_text(enum address_status status);

/* Domain syntax: dot-separated labels of letters, digits and hyphens (or
 * UTF-8 when allowed), no empty label, no trailing dot, at most 255 octets. */
bool address_domain_valid(const char *domain, size_t len, bool allow_utf8);

/*
 * A HELO/EHLO argument ferry takes: a host name, or an address literal
 * ("[192.0.2.1]", "[IPv6:2001:db8::1]"). Laxer than address_domain_valid()
 * for the names real clients send (a single label such as "localhost",
 * '_' as in "my_pc", a hyphen at a label's edge, one trailing dot), and
 * strict about all else: ASCII letters, digits, '-', '_' and dots between
 * non-empty labels, at most 255 octets. It is written into Received:, so
 * nothing that could end the header or open a comment may pass.
 */
bool address_helo_valid(const char *name, size_t len);

/* A local part holding '%', '!' or (quoted) '@': a routing trick that some
 * relays honour and that turns a relay domain into an open relay. */
bool address_local_has_routing(const struct mailbox *m);

/* ASCII case-insensitive equality of two len-byte strings, locale-free
 * (unlike strncasecmp): a verdict must not change with the locale, and
 * UTF-8 bytes compare as they are. */
bool address_ascii_equal_nocase(const char *a, const char *b, size_t len);

/* Copy a domain lower-cased (ASCII only) into dst of dst_size bytes, NUL
 * terminated. Returns the length, or -1 if it does not fit. */
int address_domain_lower(char *dst, size_t dst_size, const char *domain, size_t len);

#endif
