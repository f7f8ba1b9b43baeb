/*
 * dsn — the text of a delivery status notification (a bounce, RFC 3464),
 * which the relay queues from the null sender to a message's original
 * sender when recipients failed for good (or, later, are delayed). Pure:
 * no I/O and no clock; every time is passed in, so the same input always
 * gives the same bytes.
 *
 * The message is a multipart/report (RFC 6522, formerly 3462):
 *   1. text/plain: what happened, in words, one paragraph per recipient;
 *   2. message/delivery-status: the same for programs (RFC 3464 fields);
 *   3. text/rfc822-headers: the original message's header section, left
 *      out when the caller has none to give (the part is optional).
 * When the original message needed SMTPUTF8, or an address is not ASCII
 * (which only SMTPUTF8 lets in), parts 2 and 3 are the RFC 6533 types
 * message/global-delivery-status and message/global-headers, an 8-bit
 * address is written as "utf-8; <address>", and the DSN itself must be
 * sent with SMTPUTF8 (and 8BITMIME). Otherwise the DSN is all ASCII.
 *
 * Invariants of the output, whatever the input: CRLF line endings and no
 * bare CR or LF; no NUL or other control octet but TAB; no line longer
 * than 998 octets (header fields are folded at spaces to stay within 78
 * where a word allows it); text that came from outside (a remote server's
 * reply, addresses, the original headers) cannot start a header line, a
 * field or a MIME boundary of its own; 8-bit octets appear only in the
 * SMTPUTF8 form, and only as valid UTF-8 (anything else becomes '?').
 */
#ifndef FERRY_QUEUE_DSN_H
#define FERRY_QUEUE_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* Room for an RFC 5322 date and its NUL ("Thu, 03 Dec 2026 13:09:19 +0000"). */
#define DSN_DATE_SIZE 40

struct dsn_recipient {
	const char *address; /* the original recipient: forward path, no brackets */
	size_t address_len;
	const char *action; /* "failed" or "delayed" (RFC 3464 2.3.3) */
	/* Enhanced status "5.1.1" (RFC 3463), or NULL: then the one in the
	 * diagnostic's reply ("550 5.1.1 ..."), else its reply code's class
	 * ("5.0.0"), else the action's ("failed" 5.0.0, "delayed" 4.0.0). */
	const char *status;
	const char *remote_mta; /* next hop's host name; NULL or "" when none was reached */
	/* The remote server's reply ("550 5.1.1 no such user") when remote_mta
	 * is set and it starts with a reply code: it becomes Diagnostic-Code
	 * "smtp; ...". Otherwise a local reason, given in the text part only.
	 * NULL when there is nothing to say. */
	const char *diagnostic;
	int64_t last_attempt_ms; /* wall clock, ms since 1970; 0: never attempted */
};

struct dsn_message {
	const char *reporting_mta; /* this relay's host name */
	const char *queue_id;      /* the original's queue id (X-Ferry-Queue-ID), or NULL */
	const char *sender;        /* the original reverse path: the DSN's recipient */
	size_t sender_len;
	int64_t arrival_ms; /* when the original arrived, wall clock ms */
	int64_t now_ms;     /* when this DSN is made: its Date: */
	const struct dsn_recipient *rcpts;
	unsigned nrcpts;
	/* The original's header section as stored (CRLF lines), possibly cut
	 * short by the caller (say so in headers_truncated), possibly empty.
	 * It ends at the first empty line: anything after is body, not sent. */
	const char *headers;
	size_t headers_len;
	bool headers_truncated;
	/* Unique per DSN (the queue id and a counter): the Message-ID and the
	 * MIME boundary are made from it and now_ms. NULL: the queue id. */
	const char *boundary_seed;
	bool smtputf8; /* the original needed SMTPUTF8 */
};

/* The RFC 5322 date-time of ms (UTC, "+0000") into out, NUL-terminated;
 * returns its length. Times before 1970 or after 9999 are clamped. */
size_t dsn_format_date(int64_t ms, char out[DSN_DATE_SIZE]);

/* Whether a message from this reverse path gets a DSN when it fails. Not
 * from the null sender: it is itself a notification, and notifying about
 * a notification risks a loop (RFC 5321 4.5.5, RFC 3464 2). Other senders,
 * MAILER-DAEMON and postmaster included, are mailboxes and do get one. */
bool dsn_wanted(const char *sender, size_t sender_len);

/* Append the whole DSN (header section and body, ending with CRLF) to out.
 * Returns 0, -ENOMEM (out unchanged), or -EINVAL (out unchanged): no
 * recipient, an empty sender, reporting_mta or recipient address, an
 * action other than "failed" or "delayed", a status that is not "c.s.d". */
int dsn_build(const struct dsn_message *m, struct buf *out);

#endif
