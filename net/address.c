/*
 * address — mailbox and domain syntax. See address.h for the contract.
 *
 * Bytes are examined as unsigned char throughout: with a signed plain char,
 * 0xC3 would compare as negative and slip past every range check.
 */
#include "net/address.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define ADDRESS_LABEL_MAX 63 /* RFC 1035 2.3.4 */

static bool address_is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	/* strchr() would report the terminator as a match for '\0'. */
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool address_is_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

static bool address_has_8bit(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] >= 0x80)
			return true;
	}
	return false;
}

/*
 * Length of the well-formed UTF-8 sequence starting at s (RFC 3629 section
 * 4), or 0. Narrowing the second byte's range per lead byte is what refuses
 * overlong forms, surrogates and code points past U+10FFFF: an overlong '@'
 * or '.' must never reach a downstream decoder that would honour it.
 */
static size_t address_utf8_sequence_length(const unsigned char *s, size_t left)
{
	unsigned char second_min = 0x80;
	unsigned char second_max = 0xBF;
	size_t length;

	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		length = 2;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		length = 3;
		if (s[0] == 0xE0)
			second_min = 0xA0;
		else if (s[0] == 0xED)
			second_max = 0x9F;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		length = 4;
		if (s[0] == 0xF0)
			second_min = 0x90;
		else if (s[0] == 0xF4)
			second_max = 0x8F;
	} else {
		return 0;
	}
	if (left < length || s[1] < second_min || s[1] > second_max)
		return 0;
	for (size_t i = 2; i < length; i++) {
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	}
	return length;
}

bool address_ascii_equal_nocase(const char *a, const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ca = (unsigned char)a[i];
		unsigned char cb = (unsigned char)b[i];

		if (ca >= 'A' && ca <= 'Z')
			ca = (unsigned char)(ca - 'A' + 'a');
		if (cb >= 'A' && cb <= 'Z')
			cb = (unsigned char)(cb - 'A' + 'a');
		if (ca != cb)
			return false;
	}
	return true;
}

bool address_domain_valid(const char *domain, size_t len, bool allow_utf8)
{
	const unsigned char *s = (const unsigned char *)domain;
	size_t label_start = 0;
	size_t i = 0;

	if (domain == NULL || len == 0 || len > ADDRESS_DOMAIN_MAX)
		return false;
	for (;;) {
		if (i == len || s[i] == '.') {
			size_t label_len = i - label_start;

			/* An empty last label is the trailing dot: "relay.example."
			 * must not be a second spelling of a relay domain. */
			if (label_len == 0 || label_len > ADDRESS_LABEL_MAX)
				return false;
			if (s[label_start] == '-' || s[i - 1] == '-')
				return false;
			if (i == len)
				return true;
			label_start = ++i;
		} else if (s[i] >= 0x80) {
			size_t n = allow_utf8 ? address_utf8_sequence_length(s + i, len - i) : 0;

			if (n == 0)
				return false;
			i += n;
		} else if (address_is_ldh(s[i])) {
			i++;
		} else {
			return false;
		}
	}
}

/*
 * "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 4.1.3). General address
 * literals ("[tag:content]") name no transport we could use, so they are
 * refused rather than passed on.
 */
static bool address_literal_valid(const char *literal, size_t len)
{
	static const char ipv6_tag[] = "IPv6:";
	const size_t ipv6_tag_len = sizeof(ipv6_tag) - 1;
	char text[INET6_ADDRSTRLEN];
	unsigned char binary[sizeof(struct in6_addr)];
	int family = AF_INET;

	if (len < 2 || literal[0] != '[' || literal[len - 1] != ']')
		return false;
	literal++;
	len -= 2;
	/* ABNF literals are case-insensitive, so "ipv6:" is the same tag. */
	if (len >= ipv6_tag_len && address_ascii_equal_nocase(literal, ipv6_tag, ipv6_tag_len)) {
		family = AF_INET6;
		literal += ipv6_tag_len;
		len -= ipv6_tag_len;
	}
	if (len == 0 || len >= sizeof(text))
		return false;
	/* inet_pton() stops at a NUL, which would let "192.0.2.1\0junk" pass. */
	if (memchr(literal, '\0', len) != NULL)
		return false;
	memcpy(text, literal, len);
	text[len] = '\0';
	return inet_pton(family, text, binary) == 1;
}

bool address_helo_valid(const char *name, size_t len)
{
	if (name == NULL || len == 0 || len > ADDRESS_DOMAIN_MAX)
		return false;
	if (name[0] == '[')
		return address_literal_valid(name, len);
	if (len > 1 && name[len - 1] == '.')
		len--; /* the root's dot, as some clients send it */
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (address_is_ldh(c) || c == '_') {
			label++;
		} else {
			return false;
		}
	}
	return label > 0;
}

/* A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain: no literals. */
static bool address_route_valid(const char *route, size_t len, bool allow_utf8)
{
	size_t i = 0;

	if (len == 0)
		return false;
	while (i < len) {
		const char *comma;
		size_t domain_len;

		if (route[i] != '@')
			return false;
		i++;
		comma = i < len ? memchr(route + i, ',', len - i) : NULL;
		domain_len = comma != NULL ? (size_t)(comma - (route + i)) : len - i;
		if (!address_domain_valid(route + i, domain_len, allow_utf8))
			return false;
		i += domain_len;
		if (comma != NULL && ++i == len)
			return false; /* trailing comma */
	}
	return true;
}

/*
 * Measure the local part at the start of s: a dot-string ends at the first
 * '@' (or the end), a quoted-string at its closing quote, which must then be
 * followed by '@' or the end. Mixed forms such as a."b" are refused, as
 * RFC 5321 allows neither. 8-bit bytes reach here only when SMTPUTF8 is on.
 */
static enum address_status address_scan_local(const unsigned char *s, size_t len, bool *quoted,
					      size_t *local_len)
{
	size_t i = 0;

	if (s[0] == '"') {
		*quoted = true;
		for (i = 1;; i++) {
			if (i >= len)
				return ADDRESS_BAD_SYNTAX; /* unterminated */
			if (s[i] == '"')
				break;
			if (s[i] == '\\') {
				/* quoted-pairSMTP: RFC 6531 does not extend it to UTF-8. */
				if (i + 1 >= len || s[i + 1] < 0x20 || s[i + 1] > 0x7E)
					return ADDRESS_BAD_SYNTAX;
				i++;
			} else if (s[i] >= 0x80) {
				size_t n = address_utf8_sequence_length(s + i, len - i);

				if (n == 0)
					return ADDRESS_BAD_SYNTAX;
				i += n - 1;
			} else if (s[i] < 0x20 || s[i] > 0x7E) {
				return ADDRESS_BAD_SYNTAX;
			}
		}
		i++;
		if (i < len && s[i] != '@')
			return ADDRESS_BAD_SYNTAX;
		*local_len = i;
		return ADDRESS_OK;
	}

	*quoted = false;
	bool atom_empty = true;

	while (i < len && s[i] != '@') {
		if (s[i] == '.') {
			if (atom_empty)
				return ADDRESS_BAD_SYNTAX; /* leading or double dot */
			atom_empty = true;
			i++;
		} else if (s[i] >= 0x80) {
			size_t n = address_utf8_sequence_length(s + i, len - i);

			if (n == 0)
				return ADDRESS_BAD_SYNTAX;
			atom_empty = false;
			i += n;
		} else if (address_is_atext(s[i])) {
			atom_empty = false;
			i++;
		} else {
			return ADDRESS_BAD_SYNTAX;
		}
	}
	if (atom_empty)
		return ADDRESS_BAD_SYNTAX; /* empty local part or trailing dot */
	*local_len = i;
	return ADDRESS_OK;
}

enum address_status address_parse_path(const char *path, size_t len, bool allow_utf8,
				       struct mailbox *out)
{
	struct mailbox m = {.local = "", .domain = ""};
	const unsigned char *s = (const unsigned char *)path;
	size_t local_len;
	enum address_status status;

	if (out == NULL)
		return ADDRESS_BAD_SYNTAX;
	/* Callers may read *out whatever the verdict; never leave it stale. */
	*out = m;
	if (len == 0)
		return ADDRESS_EMPTY;
	if (path == NULL)
		return ADDRESS_BAD_SYNTAX;
	if (len > ADDRESS_PATH_MAX - 2)
		return ADDRESS_TOO_LONG;
	/* Checked over the whole path, route included: without SMTPUTF8 the
	 * client had no right to send any 8-bit byte at all. */
	if (!allow_utf8 && address_has_8bit(s, len))
		return ADDRESS_NEEDS_UTF8;

	if (s[0] == '@') {
		/* Route domains cannot contain ':' (literals are not allowed in
		 * them), so the first colon ends the route. */
		const unsigned char *colon = memchr(s, ':', len);

		if (colon == NULL || !address_route_valid(path, (size_t)(colon - s), allow_utf8))
			return ADDRESS_BAD_SYNTAX;
		len -= (size_t)(colon - s) + 1;
		path += (size_t)(colon - s) + 1;
		s = colon + 1;
		if (len == 0)
			return ADDRESS_BAD_SYNTAX;
		m.source_route = true;
	}

	status = address_scan_local(s, len, &m.quoted, &local_len);
	if (status != ADDRESS_OK)
		return status;
	if (local_len > ADDRESS_LOCAL_MAX)
		return ADDRESS_TOO_LONG;
	m.local = path;
	m.local_len = local_len;

	if (local_len == len) {
		m.utf8 = address_has_8bit(s, local_len);
		*out = m;
		return ADDRESS_NO_DOMAIN;
	}

	/* address_scan_local() stopped on the '@'. */
	const char *domain = path + local_len + 1;
	size_t domain_len = len - local_len - 1;

	if (memchr(domain, '@', domain_len) != NULL)
		return ADDRESS_BAD_SYNTAX;
	if (domain_len > ADDRESS_DOMAIN_MAX)
		return ADDRESS_TOO_LONG;
	if (domain_len > 0 && domain[0] == '[') {
		if (!address_literal_valid(domain, domain_len))
			return ADDRESS_BAD_DOMAIN;
		m.domain_literal = true;
	} else if (!address_domain_valid(domain, domain_len, allow_utf8)) {
		return ADDRESS_BAD_DOMAIN;
	}
	m.domain = domain;
	m.domain_len = domain_len;
	m.utf8 = address_has_8bit(s, len);
	*out = m;
	return ADDRESS_OK;
}

const char *address_status_text(enum address_status status)
{
	switch (status) {
	case ADDRESS_OK:
		return "address is valid";
	case ADDRESS_EMPTY:
		return "null address not allowed here";
	case ADDRESS_BAD_SYNTAX:
		return "malformed address";
	case ADDRESS_BAD_DOMAIN:
		return "domain name is malformed";
	case ADDRESS_TOO_LONG:
		return "address too long";
	case ADDRESS_NEEDS_UTF8:
		return "non-ASCII address requires SMTPUTF8";
	case ADDRESS_NO_DOMAIN:
		return "address has no domain";
	}
	return "unknown address error";
}

bool address_local_has_routing(const struct mailbox *m)
{
	if (m == NULL || m->local == NULL)
		return false;
	/* An unquoted local part cannot hold '@', so any '@' is a quoted one. */
	for (size_t i = 0; i < m->local_len; i++) {
		char c = m->local[i];

		if (c == '%' || c == '!' || c == '@')
			return true;
	}
	return false;
}

int address_domain_lower(char *dst, size_t dst_size, const char *domain, size_t len)
{
	if (dst == NULL || dst_size == 0)
		return -1;
	if ((domain == NULL && len > 0) || len >= dst_size || len > INT_MAX) {
		dst[0] = '\0';
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		char c = domain[i];

		dst[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	dst[len] = '\0';
	return (int)len;
}
