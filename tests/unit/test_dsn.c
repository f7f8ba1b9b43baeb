/*
 * Tests for queue/dsn: the bounce a sender gets back. Each test parses
 * what dsn_build wrote (top header section, MIME parts split at the
 * boundary, fields unfolded) and checks exact values, the way a mail
 * client or a bounce processor would read them; one golden message pins
 * every byte; and Python's email package reads a DSN as a third party.
 * Every message built here is also checked for the header's invariants
 * (CRLF only, no control octet, no line over 998 octets).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "queue/dsn.h"

#define NOW_MS     INT64_C(1796303359000) /* Thu, 03 Dec 2026 13:09:19 +0000 */
#define ARRIVAL_MS INT64_C(1795871359000) /* Sat, 28 Nov 2026 13:09:19 +0000 */
#define ATTEMPT_MS INT64_C(1796303300000) /* Thu, 03 Dec 2026 13:08:20 +0000 */
#define MAX_PARTS  8

static const char original_headers[] = "Received: from client.example.org ([192.0.2.7])\r\n"
				       "\tby mx.ferry.example with ESMTP id 0A1B2C3D4E5F6G7H\r\n"
				       "From: Alice <alice@example.org>\r\n"
				       "To: bob@example.net\r\n"
				       "Subject: lunch\r\n"
				       "Message-ID: <m1@example.org>\r\n";

/* ---- building ------------------------------------------------------------ */

static struct dsn_recipient rcpt(const char *address)
{
	return (struct dsn_recipient){
		.address = address,
		.address_len = strlen(address),
		.action = "failed",
		.status = "5.1.1",
		.remote_mta = "mx.example.net",
		.diagnostic = "550 5.1.1 <bob@example.net>: no such user",
		.last_attempt_ms = ATTEMPT_MS,
	};
}

static struct dsn_message message(const struct dsn_recipient *rcpts, unsigned n)
{
	return (struct dsn_message){
		.reporting_mta = "mx.ferry.example",
		.queue_id = "0A1B2C3D4E5F6G7H",
		.sender = "alice@example.org",
		.sender_len = strlen("alice@example.org"),
		.arrival_ms = ARRIVAL_MS,
		.now_ms = NOW_MS,
		.rcpts = rcpts,
		.nrcpts = n,
		.headers = original_headers,
		.headers_len = strlen(original_headers),
		.boundary_seed = "0A1B2C3D4E5F6G7H-1",
	};
}

/* Every line ends with CRLF, is at most 998 octets, and holds no control
 * octet but TAB (and no 8-bit octet unless allowed). */
static void check_invariants(const char *msg, size_t len, bool eight_bit)
{
	cr_assert(len >= 2 && memcmp(msg + len - 2, "\r\n", 2) == 0, "ends with CRLF");
	size_t line = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)msg[i];
		if (c == '\r') {
			cr_assert(i + 1 < len && msg[i + 1] == '\n', "bare CR at %zu", i);
			cr_assert_leq(line, 998, "line of %zu octets before %zu", line, i);
			line = 0;
			i++;
			continue;
		}
		cr_assert_neq(c, '\n', "bare LF at %zu", i);
		cr_assert(c == '\t' || c >= 0x20, "control octet 0x%02x at %zu", c, i);
		cr_assert_neq(c, 0x7f, "DEL at %zu", i);
		cr_assert(eight_bit || c < 0x80, "8-bit octet at %zu", i);
		line++;
	}
}

static char *build_ok(const struct dsn_message *m)
{
	struct buf out = {0};
	cr_assert_eq(dsn_build(m, &out), 0);
	size_t len = buf_len(&out);
	char *msg = malloc(len + 1);
	cr_assert_not_null(msg);
	memcpy(msg, buf_head(&out), len);
	msg[len] = '\0';
	buf_release(&out);
	cr_assert_eq(strlen(msg), len, "no NUL inside");
	check_invariants(msg, len, m->smtputf8);
	return msg;
}

/* ---- reading it back ----------------------------------------------------- */

struct entity {
	const char *headers; /* a header section, its last line's CRLF included */
	size_t headers_len;
	const char *body;
	size_t body_len;
};

struct parsed {
	struct entity top;
	char boundary[80];
	struct entity parts[MAX_PARTS];
	unsigned nparts;
};

static struct entity split_entity(const char *s, size_t len)
{
	const char *sep = memmem(s, len, "\r\n\r\n", 4);
	cr_assert_not_null(sep, "no empty line after the header section");
	return (struct entity){.headers = s,
			       .headers_len = (size_t)(sep - s) + 2,
			       .body = sep + 4,
			       .body_len = len - (size_t)(sep + 4 - s)};
}

/* The unfolded value of field name in a header section (first occurrence),
 * in a malloc'd string, or NULL. */
static char *field(const char *headers, size_t len, const char *name)
{
	size_t name_len = strlen(name);
	const char *p = headers, *end = headers + len;
	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		cr_assert_not_null(eol);
		if ((size_t)(eol - p) > name_len && strncasecmp(p, name, name_len) == 0 &&
		    p[name_len] == ':') {
			char *v = malloc(len + 1);
			size_t n = 0;
			const char *q = p + name_len + 1;
			while (q < end && (*q == ' ' || *q == '\t'))
				q++;
			for (;;) {
				memcpy(v + n, q, (size_t)(eol - q));
				n += (size_t)(eol - q);
				q = eol + 2;
				if (q >= end || (*q != ' ' && *q != '\t'))
					break;
				eol = memmem(q, (size_t)(end - q), "\r\n", 2);
				cr_assert_not_null(eol);
			}
			v[n] = '\0';
			return v;
		}
		p = eol + 2;
	}
	return NULL;
}

static void expect_field(const struct entity *e, const char *name, const char *want)
{
	char *got = field(e->headers, e->headers_len, name);
	if (want == NULL) {
		cr_expect_null(got, "%s: present (\"%s\"), want absent", name, got);
	} else {
		cr_assert_not_null(got, "%s: absent, want \"%s\"", name, want);
		cr_expect_str_eq(got, want, "%s", name);
	}
	free(got);
}

static struct parsed parse(const char *msg)
{
	struct parsed p = {0};
	p.top = split_entity(msg, strlen(msg));
	char *ct = field(p.top.headers, p.top.headers_len, "Content-Type");
	cr_assert_not_null(ct);
	const char *b = strstr(ct, "boundary=\"");
	cr_assert_not_null(b, "no boundary in \"%s\"", ct);
	b += strlen("boundary=\"");
	const char *q = strchr(b, '"');
	cr_assert_not_null(q);
	cr_assert_lt((size_t)(q - b), sizeof(p.boundary));
	memcpy(p.boundary, b, (size_t)(q - b));
	free(ct);
	cr_assert_leq(strlen(p.boundary), 70, "RFC 2046: at most 70 characters");

	char delim[100];
	snprintf(delim, sizeof(delim), "\r\n--%s", p.boundary);
	size_t dlen = strlen(delim);
	const char *body = p.top.body, *end = body + p.top.body_len;
	/* The preamble ends at the first delimiter; a part runs to the next. */
	const char *d = memmem(body - 2, (size_t)(end - body + 2), delim, dlen);
	cr_assert_not_null(d, "no first delimiter");
	for (;;) {
		const char *after = d + dlen;
		if (end - after >= 2 && memcmp(after, "--", 2) == 0) {
			cr_expect_str_eq(after, "--\r\n", "nothing after the close delimiter");
			break;
		}
		cr_assert(end - after >= 2 && memcmp(after, "\r\n", 2) == 0, "delimiter line");
		const char *start = after + 2;
		const char *next = memmem(start, (size_t)(end - start), delim, dlen);
		cr_assert_not_null(next, "part %u never closed", p.nparts);
		cr_assert_lt(p.nparts, MAX_PARTS);
		p.parts[p.nparts++] = split_entity(start, (size_t)(next - start) + 2);
		/* split_entity saw the delimiter's CRLF: give it back. */
		p.parts[p.nparts - 1].body_len -= 2;
		d = next;
	}
	return p;
}

static char *body_str(const struct entity *e)
{
	char *s = strndup(e->body, e->body_len);
	cr_assert_not_null(s);
	return s;
}

/* The blocks of a delivery-status body, split at empty lines. */
static unsigned status_blocks(const struct entity *part, struct entity blocks[], unsigned max)
{
	unsigned n = 0;
	const char *p = part->body, *end = part->body + part->body_len;
	while (p < end) {
		const char *sep = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		const char *stop = sep != NULL ? sep + 2 : end;
		cr_assert_lt(n, max);
		blocks[n++] = (struct entity){.headers = p, .headers_len = (size_t)(stop - p)};
		p = sep != NULL ? sep + 4 : end;
	}
	return n;
}

/* ---- the golden message -------------------------------------------------- */

static const char golden[] =
	"From: Mail Delivery System <MAILER-DAEMON@mx.ferry.example>\r\n"
	"To: <alice@example.org>\r\n"
	"Subject: Undelivered Mail Returned to Sender\r\n"
	"Date: Thu, 03 Dec 2026 13:09:19 +0000\r\n"
	"Message-ID: <1796303359000.0A1B2C3D4E5F6G7H-1@mx.ferry.example>\r\n"
	"Auto-Submitted: auto-replied\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/report; report-type=delivery-status;\r\n"
	" boundary=\"=_0A1B2C3D4E5F6G7H-1.1796303359000\"\r\n"
	"\r\n"
	"This is a MIME-encapsulated message.\r\n"
	"\r\n"
	"--=_0A1B2C3D4E5F6G7H-1.1796303359000\r\n"
	"Content-Type: text/plain; charset=us-ascii\r\n"
	"Content-Description: Notification\r\n"
	"\r\n"
	"This is the mail system at host mx.ferry.example.\r\n"
	"\r\n"
	"Your message could not be delivered to one or more recipients, and no further\r\n"
	"attempt will be made. The reasons follow.\r\n"
	"\r\n"
	"<bob@example.net>: host mx.example.net said: 550 5.1.1 <bob@example.net>: no\r\n"
	"    such user\r\n"
	"\r\n"
	"For the postmaster: the message's queue ID at mx.ferry.example was\r\n"
	"0A1B2C3D4E5F6G7H.\r\n"
	"\r\n"
	"The original message's header section is attached.\r\n"
	"\r\n"
	"--=_0A1B2C3D4E5F6G7H-1.1796303359000\r\n"
	"Content-Type: message/delivery-status\r\n"
	"Content-Description: Delivery report\r\n"
	"\r\n"
	"Reporting-MTA: dns; mx.ferry.example\r\n"
	"Arrival-Date: Sat, 28 Nov 2026 13:09:19 +0000\r\n"
	"X-Ferry-Queue-ID: 0A1B2C3D4E5F6G7H\r\n"
	"\r\n"
	"Final-Recipient: rfc822; bob@example.net\r\n"
	"Action: failed\r\n"
	"Status: 5.1.1\r\n"
	"Remote-MTA: dns; mx.example.net\r\n"
	"Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: no such user\r\n"
	"Last-Attempt-Date: Thu, 03 Dec 2026 13:08:20 +0000\r\n"
	"\r\n"
	"--=_0A1B2C3D4E5F6G7H-1.1796303359000\r\n"
	"Content-Type: text/rfc822-headers\r\n"
	"Content-Description: Undelivered Message Headers\r\n"
	"\r\n"
	"Received: from client.example.org ([192.0.2.7])\r\n"
	"\tby mx.ferry.example with ESMTP id 0A1B2C3D4E5F6G7H\r\n"
	"From: Alice <alice@example.org>\r\n"
	"To: bob@example.net\r\n"
	"Subject: lunch\r\n"
	"Message-ID: <m1@example.org>\r\n"
	"\r\n"
	"--=_0A1B2C3D4E5F6G7H-1.1796303359000--\r\n";

Test(dsn, golden_message_for_one_failed_recipient)
{
	struct dsn_recipient r = rcpt("bob@example.net");
	struct dsn_message m = message(&r, 1);
	char *msg = build_ok(&m);
	cr_assert_str_eq(msg, golden);
	free(msg);
}

Test(dsn, same_input_same_bytes_and_appends_to_what_is_there)
{
	struct dsn_recipient r[2] = {rcpt("bob@example.net"), rcpt("carol@example.net")};
	struct dsn_message m = message(r, 2);
	struct buf a = {0}, b = {0};
	cr_assert_eq(buf_append(&b, "prefix", 6), 0);
	cr_assert_eq(dsn_build(&m, &a), 0);
	cr_assert_eq(dsn_build(&m, &b), 0);
	cr_assert_eq(buf_len(&b), 6 + buf_len(&a));
	cr_assert(memcmp(buf_head(&b), "prefix", 6) == 0);
	cr_assert(memcmp(buf_head(&b) + 6, buf_head(&a), buf_len(&a)) == 0);
	buf_release(&a);
	buf_release(&b);
}

/* ---- structure and fields ------------------------------------------------ */

Test(dsn, two_recipients_in_one_report)
{
	struct dsn_recipient r[2] = {rcpt("bob@example.net"), rcpt("carol@example.com")};
	r[1].status = NULL;
	r[1].remote_mta = "mx2.example.com";
	r[1].diagnostic = "552-5.2.2 mailbox full";
	r[1].last_attempt_ms = 0;
	struct dsn_message m = message(r, 2);
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);

	expect_field(&p.top, "From", "Mail Delivery System <MAILER-DAEMON@mx.ferry.example>");
	expect_field(&p.top, "To", "<alice@example.org>");
	expect_field(&p.top, "Subject", "Undelivered Mail Returned to Sender");
	expect_field(&p.top, "Date", "Thu, 03 Dec 2026 13:09:19 +0000");
	expect_field(&p.top, "Auto-Submitted", "auto-replied");
	expect_field(&p.top, "MIME-Version", "1.0");
	cr_assert_eq(p.nparts, 3);
	expect_field(&p.parts[0], "Content-Type", "text/plain; charset=us-ascii");
	expect_field(&p.parts[1], "Content-Type", "message/delivery-status");
	expect_field(&p.parts[2], "Content-Type", "text/rfc822-headers");

	struct entity blocks[4];
	cr_assert_eq(status_blocks(&p.parts[1], blocks, 4), 3);
	expect_field(&blocks[0], "Reporting-MTA", "dns; mx.ferry.example");
	expect_field(&blocks[0], "Arrival-Date", "Sat, 28 Nov 2026 13:09:19 +0000");
	expect_field(&blocks[0], "X-Ferry-Queue-ID", "0A1B2C3D4E5F6G7H");
	expect_field(&blocks[1], "Final-Recipient", "rfc822; bob@example.net");
	expect_field(&blocks[1], "Status", "5.1.1");
	expect_field(&blocks[2], "Final-Recipient", "rfc822; carol@example.com");
	expect_field(&blocks[2], "Action", "failed");
	expect_field(&blocks[2], "Status", "5.2.2"); /* from the reply, being absent */
	expect_field(&blocks[2], "Remote-MTA", "dns; mx2.example.com");
	expect_field(&blocks[2], "Diagnostic-Code", "smtp; 552-5.2.2 mailbox full");
	expect_field(&blocks[2], "Last-Attempt-Date", NULL);
	expect_field(&blocks[2], "Original-Recipient", NULL);

	char *text = body_str(&p.parts[0]);
	cr_expect(strstr(text, "<bob@example.net>: host mx.example.net said: 550 5.1.1") != NULL);
	cr_expect(strstr(text, "<carol@example.com>: host mx2.example.com said: 552-5.2.2 mailbox "
			       "full\r\n") != NULL,
		  "%s", text);
	char *headers = body_str(&p.parts[2]);
	cr_expect_str_eq(headers, original_headers);
	free(text);
	free(headers);
	free(msg);
}

Test(dsn, status_when_none_is_given)
{
	struct dsn_recipient r[5] = {rcpt("a@example.net"), rcpt("b@example.net"),
				     rcpt("c@example.net"), rcpt("d@example.net"),
				     rcpt("e@example.net")};
	for (int i = 0; i < 5; i++)
		r[i].status = NULL;
	r[0].diagnostic = "550 no such user";       /* no enhanced code: the reply's class */
	r[1].diagnostic = "550 4.2.2 mailbox full"; /* another class: not the reply's */
	r[2].diagnostic = NULL;
	r[2].remote_mta = NULL;
	r[3].action = "delayed";
	r[3].diagnostic = "connection timed out";
	r[4].diagnostic = "451 4.4.1 try again later"; /* expired after temporary errors */
	struct dsn_message m = message(r, 5);
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	struct entity blocks[6];
	cr_assert_eq(status_blocks(&p.parts[1], blocks, 6), 6);
	expect_field(&blocks[1], "Status", "5.0.0");
	expect_field(&blocks[2], "Status", "5.0.0");
	expect_field(&blocks[3], "Status", "5.0.0");
	expect_field(&blocks[4], "Status", "4.0.0");
	expect_field(&blocks[4], "Action", "delayed");
	expect_field(&blocks[4], "Diagnostic-Code", NULL); /* not a reply */
	expect_field(&blocks[5], "Status", "4.4.1");
	expect_field(&blocks[5], "Action", "failed");
	char *text = body_str(&p.parts[0]);
	cr_expect(strstr(text, "<c@example.net>: delivery failed, status 5.0.0\r\n") != NULL, "%s",
		  text);
	cr_expect(strstr(text, "<d@example.net>: host mx.example.net: connection timed out\r\n") !=
			  NULL,
		  "%s", text);
	cr_expect(strstr(text, "has not yet been delivered") != NULL);
	free(text);
	free(msg);
}

Test(dsn, local_reason_is_in_the_text_only)
{
	struct dsn_recipient r = rcpt("bob@example.net");
	r.remote_mta = NULL;
	r.status = "5.4.6";
	r.diagnostic = "mail loop: too many Received: headers";
	r.last_attempt_ms = 0;
	struct dsn_message m = message(&r, 1);
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	struct entity blocks[3];
	cr_assert_eq(status_blocks(&p.parts[1], blocks, 3), 2);
	expect_field(&blocks[1], "Status", "5.4.6");
	expect_field(&blocks[1], "Remote-MTA", NULL);
	expect_field(&blocks[1], "Diagnostic-Code", NULL);
	expect_field(&blocks[1], "Last-Attempt-Date", NULL);
	char *text = body_str(&p.parts[0]);
	cr_expect(strstr(text, "<bob@example.net>: mail loop: too many Received: headers\r\n") !=
			  NULL,
		  "%s", text);
	free(text);
	free(msg);
}

Test(dsn, only_delayed_recipients)
{
	struct dsn_recipient r = rcpt("bob@example.net");
	r.action = "delayed";
	r.status = "4.4.1";
	r.diagnostic = "421 4.4.1 busy";
	struct dsn_message m = message(&r, 1);
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	expect_field(&p.top, "Subject", "Delayed Mail (still being retried)");
	expect_field(&p.parts[2], "Content-Description", "Delayed Message Headers");
	char *text = body_str(&p.parts[0]);
	cr_expect(strstr(text, "could not be delivered") == NULL);
	cr_expect(strstr(text, "has not yet been delivered") != NULL, "%s", text);
	free(text);
	free(msg);
}

/* ---- hostile and awkward input ------------------------------------------- */

Test(dsn, reply_cannot_inject_lines)
{
	struct dsn_recipient r = rcpt("bob@example.net");
	char boundary_guess[] = "550 5.1.1 no\r\nBcc: victim@example.com\r\n\r\n"
				"--=_0A1B2C3D4E5F6G7H-1.1796303359000\r\nX: \x01\x7f\xff\nY\rZ";
	r.diagnostic = boundary_guess;
	r.remote_mta = "mx.example.net\r\nX-Evil: 1";
	struct dsn_message m = message(&r, 1);
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	cr_assert_eq(p.nparts, 3);
	cr_expect(strstr(msg, "\r\nBcc:") == NULL);
	cr_expect(strstr(msg, "\r\nX-Evil:") == NULL);
	cr_expect(strstr(msg, "\r\nX: ") == NULL);
	struct entity blocks[3];
	cr_assert_eq(status_blocks(&p.parts[1], blocks, 3), 2);
	expect_field(&blocks[1], "Remote-MTA", "dns; mx.example.net  X-Evil: 1");
	expect_field(&blocks[1], "Diagnostic-Code",
		     "smtp; 550 5.1.1 no  Bcc: victim@example.com    "
		     "--=_0A1B2C3D4E5F6G7H-1.1796303359000  X: ??? Y Z");
	free(msg);
}

Test(dsn, long_reply_is_folded_and_cut_to_998)
{
	/* Words, then one 2500-octet word, then words again. */
	size_t n = 0;
	char *diag = malloc(4000);
	n += (size_t)sprintf(diag, "550 5.7.1");
	for (int i = 0; i < 40; i++)
		n += (size_t)sprintf(diag + n, " word%d", i);
	diag[n++] = ' ';
	memset(diag + n, 'x', 2500);
	n += 2500;
	n += (size_t)sprintf(diag + n, " tail end");
	struct dsn_recipient r = rcpt("bob@example.net");
	r.diagnostic = diag;
	struct dsn_message m = message(&r, 1);
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	struct entity blocks[3];
	cr_assert_eq(status_blocks(&p.parts[1], blocks, 3), 2);

	/* Folded at spaces, within 78 while words allow it. */
	const char *f = strstr(blocks[1].headers, "Diagnostic-Code:");
	cr_assert_not_null(f);
	const char *eol = strstr(f, "\r\n");
	cr_expect_leq((size_t)(eol - f), 78);
	cr_expect_eq(eol[2], ' ', "continued");

	/* Unfolded it is the reply, except where the long word had to be cut
	 * (each cut adds the fold's space). */
	char *got = field(blocks[1].headers, blocks[1].headers_len, "Diagnostic-Code");
	cr_assert_not_null(got);
	char want_prefix[600];
	snprintf(want_prefix, sizeof(want_prefix), "smtp; %.*s", (int)(strchr(diag, 'x') - diag),
		 diag);
	cr_expect(strncmp(got, want_prefix, strlen(want_prefix)) == 0, "%s", got);
	size_t xs = 0, cuts = 0;
	for (const char *q = got + strlen(want_prefix); *q == 'x' || (*q == ' ' && q[1] == 'x');
	     q++)
		*q == 'x' ? xs++ : cuts++;
	cr_expect_eq(xs, 2500);
	cr_expect_eq(cuts, 2, "2500 octets on lines of 997 after the fold's space: two cuts");
	cr_expect(strstr(got, "xxx tail end") != NULL);

	/* The text part wraps the same reply, indented. */
	char *text = body_str(&p.parts[0]);
	cr_expect(strstr(text, "\r\n    word") != NULL);
	free(text);
	free(got);
	free(diag);
	free(msg);
}

Test(dsn, original_headers_are_normalised)
{
	/* Bare LF and bare CR, a NUL, an over-long line, a body after the empty
	 * line, and a cut in the middle of a line. */
	char headers[3000];
	size_t n = 0;
	n += (size_t)sprintf(headers + n, "Subject: a\nX-A: b\rc\r\nX-Null: ");
	headers[n++] = '\0';
	n += (size_t)sprintf(headers + n, "!\r\nX-Long: ");
	memset(headers + n, 'y', 1500);
	n += 1500;
	n += (size_t)sprintf(headers + n, "\r\n\r\nbody text\r\n");
	struct dsn_recipient r = rcpt("bob@example.net");
	struct dsn_message m = message(&r, 1);
	m.headers = headers;
	m.headers_len = n;
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	char *got = body_str(&p.parts[2]);
	char want[3000];
	/* The long field folds at its space, then is cut where it must be. */
	size_t w = (size_t)sprintf(want, "Subject: a\r\nX-A: b c\r\nX-Null: ?!\r\nX-Long:\r\n ");
	memset(want + w, 'y', 997);
	w += 997;
	w += (size_t)sprintf(want + w, "\r\n ");
	memset(want + w, 'y', 1500 - 997);
	w += 1500 - 997;
	sprintf(want + w, "\r\n");
	cr_expect_str_eq(got, want);
	cr_expect(strstr(msg, "body text") == NULL);
	free(got);
	free(msg);

	/* Cut short by the caller: the last line is closed, the text says so. */
	m.headers = original_headers;
	m.headers_len = strlen("Received: from client.example.org ([192.0.2.7])\r\n\tby mx");
	m.headers_truncated = true;
	msg = build_ok(&m);
	p = parse(msg);
	got = body_str(&p.parts[2]);
	cr_expect_str_eq(got, "Received: from client.example.org ([192.0.2.7])\r\n\tby mx\r\n");
	char *text = body_str(&p.parts[0]);
	cr_expect(strstr(text, "header section is attached, cut short.\r\n") != NULL, "%s", text);
	free(text);
	free(got);
	free(msg);
}

Test(dsn, no_headers_no_third_part)
{
	struct dsn_recipient r = rcpt("bob@example.net");
	struct dsn_message m = message(&r, 1);
	m.headers = NULL;
	m.headers_len = 0;
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	cr_assert_eq(p.nparts, 2);
	char *text = body_str(&p.parts[0]);
	cr_expect(strstr(text, "header section is not included.\r\n") != NULL, "%s", text);
	free(text);
	free(msg);
}

Test(dsn, boundary_never_occurs_inside)
{
	/* The original headers hold the boundary this DSN would pick first. */
	char headers[200];
	snprintf(headers, sizeof(headers),
		 "X-Trap: =_0A1B2C3D4E5F6G7H-1.1796303359000\r\n"
		 "--=_0A1B2C3D4E5F6G7H-1.1796303359000\r\n");
	struct dsn_recipient r = rcpt("bob@example.net");
	struct dsn_message m = message(&r, 1);
	m.headers = headers;
	m.headers_len = strlen(headers);
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	cr_expect_str_neq(p.boundary, "=_0A1B2C3D4E5F6G7H-1.1796303359000");
	cr_assert_eq(p.nparts, 3);
	char *got = body_str(&p.parts[2]);
	cr_expect_str_eq(got, headers);
	free(got);
	free(msg);
}

Test(dsn, smtputf8_uses_the_global_types)
{
	struct dsn_recipient r[2] = {rcpt("bj\xc3\xb6rn@example.net"), rcpt("bob@example.net")};
	r[0].diagnostic = "550 5.1.1 unknown user bj\xc3\xb6rn \xff";
	struct dsn_message m = message(r, 2);
	m.sender = "\xe7\x94\xa8\xe6\x88\xb7@example.org";
	m.sender_len = strlen(m.sender);
	m.smtputf8 = true;
	static const char utf8_headers[] = "Subject: Gr\xc3\xbc\xc3\x9f"
					   "e\r\nX-Latin1: \xe9t\xe9\r\n";
	m.headers = utf8_headers;
	m.headers_len = strlen(utf8_headers);
	char *msg = build_ok(&m);
	struct parsed p = parse(msg);
	expect_field(&p.top, "To", "<\xe7\x94\xa8\xe6\x88\xb7@example.org>");
	char *ct = field(p.top.headers, p.top.headers_len, "Content-Type");
	cr_expect(strstr(ct, "multipart/report; report-type=global-delivery-status; ") == ct, "%s",
		  ct);
	free(ct);
	expect_field(&p.top, "Content-Transfer-Encoding", "8bit");
	cr_assert_eq(p.nparts, 3);
	expect_field(&p.parts[0], "Content-Type", "text/plain; charset=utf-8");
	expect_field(&p.parts[0], "Content-Transfer-Encoding", "8bit");
	expect_field(&p.parts[1], "Content-Type", "message/global-delivery-status");
	expect_field(&p.parts[1], "Content-Transfer-Encoding", "8bit");
	expect_field(&p.parts[2], "Content-Type", "message/global-headers");
	expect_field(&p.parts[2], "Content-Transfer-Encoding", "8bit");
	struct entity blocks[3];
	cr_assert_eq(status_blocks(&p.parts[1], blocks, 3), 3);
	expect_field(&blocks[1], "Final-Recipient", "utf-8; bj\xc3\xb6rn@example.net");
	expect_field(&blocks[1], "Diagnostic-Code", "smtp; 550 5.1.1 unknown user bj\xc3\xb6rn ?");
	expect_field(&blocks[2], "Final-Recipient", "rfc822; bob@example.net");
	char *got = body_str(&p.parts[2]);
	cr_expect_str_eq(got, "Subject: Gr\xc3\xbc\xc3\x9f"
			      "e\r\nX-Latin1: ?t?\r\n");
	free(got);
	free(msg);
}

Test(dsn, ascii_form_has_no_8bit)
{
	struct dsn_recipient r = rcpt("bob@example.net");
	r.diagnostic = "550 5.1.1 caf\xc3\xa9";
	struct dsn_message m = message(&r, 1);
	static const char h[] = "Subject: caf\xc3\xa9\r\n";
	m.headers = h;
	m.headers_len = strlen(h);
	char *msg = build_ok(&m); /* checks: no 8-bit octet */
	struct parsed p = parse(msg);
	expect_field(&p.top, "Content-Transfer-Encoding", NULL);
	expect_field(&p.parts[1], "Content-Transfer-Encoding", NULL);
	char *got = body_str(&p.parts[2]);
	cr_expect_str_eq(got, "Subject: caf??\r\n");
	free(got);
	free(msg);
}

Test(dsn, eight_bit_address_implies_the_global_form)
{
	struct dsn_recipient r = rcpt("j\xc3\xbcrgen@example.net");
	struct dsn_message m = message(&r, 1);
	struct buf out = {0};
	cr_assert_eq(dsn_build(&m, &out), 0);
	check_invariants(buf_head(&out), buf_len(&out), true);
	static const char type[] = "Content-Type: message/global-delivery-status\r\n";
	cr_expect(memmem(buf_head(&out), buf_len(&out), type, strlen(type)) != NULL);
	cr_expect(memmem(buf_head(&out), buf_len(&out),
			 "Final-Recipient: utf-8; j\xc3\xbcrgen@example.net\r\n",
			 strlen("Final-Recipient: utf-8; j\xc3\xbcrgen@example.net\r\n")) != NULL);
	buf_release(&out);
}

Test(dsn, refuses_what_cannot_be_a_report)
{
	struct dsn_recipient r = rcpt("bob@example.net");
	struct dsn_message m;
	struct buf out = {0};
	cr_assert_eq(buf_append(&out, "kept", 4), 0);

	m = message(&r, 0);
	cr_expect_eq(dsn_build(&m, &out), -EINVAL, "no recipient");
	m = message(&r, 1);
	m.sender_len = 0;
	cr_expect_eq(dsn_build(&m, &out), -EINVAL, "null sender");
	m = message(&r, 1);
	m.reporting_mta = "";
	cr_expect_eq(dsn_build(&m, &out), -EINVAL, "no host name");
	static const char *const bad_status[] = {"5.1", "6.1.1", "5.1.1 ", "5.1234.1", "5..1", "x"};
	for (size_t i = 0; i < sizeof(bad_status) / sizeof(bad_status[0]); i++) {
		struct dsn_recipient bad = rcpt("bob@example.net");
		bad.status = bad_status[i];
		m = message(&bad, 1);
		cr_expect_eq(dsn_build(&m, &out), -EINVAL, "status \"%s\"", bad_status[i]);
	}
	struct dsn_recipient bad = rcpt("bob@example.net");
	bad.action = "delivered";
	m = message(&bad, 1);
	cr_expect_eq(dsn_build(&m, &out), -EINVAL, "action delivered");
	bad = rcpt("");
	m = message(&bad, 1);
	cr_expect_eq(dsn_build(&m, &out), -EINVAL, "empty recipient");

	cr_expect_eq(buf_len(&out), 4, "left as it was");
	buf_release(&out);
}

Test(dsn, wanted_except_for_the_null_sender)
{
	cr_expect_not(dsn_wanted("", 0));
	cr_expect(dsn_wanted("alice@example.org", 17));
	cr_expect(dsn_wanted("MAILER-DAEMON@example.org", 25));
	cr_expect(dsn_wanted("postmaster", 10));
}

Test(dsn, dates)
{
	char d[DSN_DATE_SIZE];
	cr_expect_eq(dsn_format_date(NOW_MS, d), 31);
	cr_expect_str_eq(d, "Thu, 03 Dec 2026 13:09:19 +0000");
	dsn_format_date(NOW_MS + 999, d);
	cr_expect_str_eq(d, "Thu, 03 Dec 2026 13:09:19 +0000", "milliseconds dropped");
	dsn_format_date(0, d);
	cr_expect_str_eq(d, "Thu, 01 Jan 1970 00:00:00 +0000");
	dsn_format_date(INT64_C(951782400000), d);
	cr_expect_str_eq(d, "Tue, 29 Feb 2000 00:00:00 +0000");
	dsn_format_date(-5000, d);
	cr_expect_str_eq(d, "Thu, 01 Jan 1970 00:00:00 +0000", "clamped");
	dsn_format_date(INT64_MAX, d);
	cr_expect_str_eq(d, "Fri, 31 Dec 9999 23:59:59 +0000", "clamped");
}

/* ---- a third party reads it ---------------------------------------------- */

/* Python's email package (compat32, the lenient parser bounce processors
 * build on) parses the DSN; the script prints what it found, with any
 * defect it noticed. It splits a global-delivery-status body into its
 * blocks itself: Python knows only the ASCII type's syntax. No single
 * quote in the script: the shell quotes it. */
static const char python_reader[] =
	"import email, re, sys\n"
	"m = email.message_from_bytes(open(sys.argv[1], \"rb\").read())\n"
	"print(m.get_content_type(), m.get_param(\"report-type\"), m.is_multipart())\n"
	"parts = m.get_payload()\n"
	"print(len(parts), *[p.get_content_type() for p in parts])\n"
	"blocks = parts[1].get_payload()\n"
	"if len(blocks) == 1:\n"
	"    text = blocks[0].get_payload(decode=True).decode(\"utf-8\")\n"
	"    blocks += [email.message_from_string(b) for b in re.split(\"\\r?\\n\\r?\\n\", text) "
	"if b]\n"
	"print(len(blocks), blocks[0][\"Reporting-MTA\"], blocks[0][\"X-Ferry-Queue-ID\"])\n"
	"for b in blocks[1:]:\n"
	"    print(b[\"Final-Recipient\"], b[\"Action\"], b[\"Status\"], b[\"Diagnostic-Code\"],\n"
	"          sep=\"|\")\n"
	"h = parts[2].get_payload()\n"
	"h = h if isinstance(h, str) else \"\".join(k + \": \" + v + \"\\n\" for k, v in "
	"h[0].items())\n"
	"print(len(h.splitlines()), \"Subject: lunch\" in h)\n"
	"print(\"defects\", m.defects + sum([p.defects for p in parts], []))\n";

static void expect_python_reads(const struct dsn_message *m, const char *want)
{
	char *msg = build_ok(m);
	char path[] = "/tmp/test_dsn.XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, msg, strlen(msg)), (ssize_t)strlen(msg));
	close(fd);
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "python3 -c '%s' %s 2>&1", python_reader, path);
	FILE *f = popen(cmd, "r");
	cr_assert_not_null(f);
	char got[4096];
	size_t n = fread(got, 1, sizeof(got) - 1, f);
	got[n] = '\0';
	int status = pclose(f);
	unlink(path);
	cr_assert_eq(status, 0, "python3 failed:\n%s", got);
	cr_expect_str_eq(got, want);
	free(msg);
}

Test(dsn, python_email_reads_it)
{
	if (system("python3 -c pass >/dev/null 2>&1") != 0)
		cr_skip_test("no python3 here");
	struct dsn_recipient r[2] = {rcpt("bob@example.net"), rcpt("carol@example.com")};
	r[1].status = NULL;
	r[1].diagnostic = "452 4.2.2 over quota\r\nInjected: yes";
	struct dsn_message m = message(r, 2);
	expect_python_reads(&m, "multipart/report delivery-status True\n"
				"3 text/plain message/delivery-status text/rfc822-headers\n"
				"3 dns; mx.ferry.example 0A1B2C3D4E5F6G7H\n"
				"rfc822; bob@example.net|failed|5.1.1|"
				"smtp; 550 5.1.1 <bob@example.net>: no such user\n"
				"rfc822; carol@example.com|failed|4.2.2|"
				"smtp; 452 4.2.2 over quota  Injected: yes\n"
				"6 True\n"
				"defects []\n");

	r[0].address = "bj\xc3\xb6rn@example.net";
	r[0].address_len = strlen(r[0].address);
	m.smtputf8 = true;
	expect_python_reads(&m,
			    "multipart/report global-delivery-status True\n"
			    "3 text/plain message/global-delivery-status message/global-headers\n"
			    "3 dns; mx.ferry.example 0A1B2C3D4E5F6G7H\n"
			    "utf-8; bj\xc3\xb6rn@example.net|failed|5.1.1|"
			    "smtp; 550 5.1.1 <bob@example.net>: no such user\n"
			    "rfc822; carol@example.com|failed|4.2.2|"
			    "smtp; 452 4.2.2 over quota  Injected: yes\n"
			    "6 True\n"
			    "defects []\n");
}
