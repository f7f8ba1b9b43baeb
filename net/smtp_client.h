/*
 * smtp_client — one SMTP client conversation, as a pure state machine: no
 * sockets, no clock, no allocation past its own output buffer. Bytes the
 * server sent go in (smtp_client_input, any chunking); commands to send
 * come out in `out`; what happened is told through struct
 * smtp_client_events. The outbound session (net/outbound_session.c) puts
 * it on a conn, streams the body, and runs the timers that
 * smtp_client_phase() names. After OpenSMTPD's mta_session.c.
 *
 * The conversation (RFC 5321, client side):
 *
 *   greeting 220 -> EHLO (HELO when EHLO gets 5xx) -> READY
 *   READY --smtp_client_send()--> MAIL, RCPT* , DATA
 *       with PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write;
 *       without: one command, its reply, the next.
 *   354 -> events->body(): the caller streams the body through
 *          smtp_client_body() (dot-stuffed here) and calls
 *          smtp_client_body_end(), which sends CRLF "." CRLF
 *   final reply -> events->message() -> smtp_client_next(): READY at once
 *                  (RSET first when the transaction did not reach its dot)
 *   smtp_client_quit(): QUIT, 221 -> events->closed()
 *
 * Replies: every reply is parsed whole (multi-line replies joined), its
 * code checked (three digits, 2..5 first), its enhanced status code
 * (RFC 3463) recognised when present. A reply that is not SMTP (bad
 * code, a line past SMTP_CLIENT_LINE_MAX, a code changing within one
 * multi-line reply) is a protocol error: events->failed() and nothing
 * more is done.
 *
 * Outcomes are per recipient, told in two events. rcpt() gives each
 * recipient's RCPT reply; message() ends the message with the reply that
 * stands for every recipient accepted at RCPT: the reply after the dot,
 * or DATA's reply when DATA was refused. When MAIL is refused no rcpt()
 * is told (with PIPELINING the RCPT and DATA replies that follow are
 * consumed) and message()'s reply, MAIL's, stands for every recipient.
 * When no recipient was accepted the body is not sent (with PIPELINING
 * the server answers DATA with 554 or 503: consumed), and message() has
 * accepted == 0 and the last RCPT's reply. A server that answers 354 to a
 * DATA no recipient stands behind gets an empty body ("." alone), and its
 * reply to that is consumed too.
 */
#ifndef FERRY_NET_SMTP_CLIENT_H
#define FERRY_NET_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* A reply line, CRLF included, at most this long (RFC 5321: 512; real
 * servers send longer). */
#define SMTP_CLIENT_LINE_MAX 2048
/* Text kept of one reply (multi-line replies joined with a space). */
#define SMTP_CLIENT_TEXT_MAX 512

struct smtp_reply {
	int code;        /* 200..599 */
	char status[16]; /* "4.2.1" when the reply carries one, else "" */
	/* The text after the code (and status), lines joined, NUL-terminated,
	 * control characters replaced by '?'. */
	char text[SMTP_CLIENT_TEXT_MAX];
};

/* Resumable reply parser, usable alone (tests, ferry-etrn). */
struct smtp_reply_parser {
	char line[SMTP_CLIENT_LINE_MAX];
	size_t line_len;
	bool in_reply;  /* a continuation line (code "-") was seen */
	unsigned lines; /* lines of the reply being parsed so far */
	struct smtp_reply reply;
	/* Optional (init sets NULL): told each line as it is parsed, with its
	 * index in the reply and its raw text after the code and separator.
	 * Joining loses the lines, and EHLO keywords are one per line. */
	void (*on_line)(void *arg, int code, unsigned index, const char *text, size_t len);
	void *on_line_arg;
	const char *error; /* after -EPROTO: what was wrong, in words */
};

void smtp_reply_parser_init(struct smtp_reply_parser *p);
/* Consume from data[0..len) up to and including the end of one reply.
 * Returns 1 with *out filled (and *consumed the octets used), 0 when all
 * was consumed without completing a reply, or -EPROTO for input that is
 * not an SMTP reply (p->error says why; the parser must be initialised
 * again before further use). A bare LF ends a line too. The enhanced
 * status code is taken from the first line, and dropped from the
 * continuation lines that repeat it. */
int smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len, size_t *consumed,
		     struct smtp_reply *out);

/* What the server offered in its EHLO reply. */
struct smtp_client_extensions {
	bool esmtp; /* EHLO was answered 250 */
	bool pipelining;
	bool size;         /* SIZE offered */
	uint64_t max_size; /* its limit; 0: none given */
	bool eightbitmime;
	bool smtputf8;
	bool starttls;
	bool enhanced_status;
};

/* One message to send. Strings are not copied: they must stay valid until
 * events->message() for it has run. */
struct smtp_client_message {
	const char *sender; /* reverse path without brackets; "" for <> */
	size_t sender_len;
	const char *const *rcpts; /* forward paths without brackets */
	const size_t *rcpt_lens;
	unsigned nrcpts; /* at least 1 */
	uint64_t size;   /* body octets, for SIZE= when offered (0: not sent) */
	bool eightbit;   /* BODY=8BITMIME: passed on when offered */
	bool smtputf8;   /* needs SMTPUTF8: see smtp_client_send() */
};

struct smtp_client;

struct smtp_client_events {
	/* The greeting and EHLO/HELO went through, or the last message's
	 * RSET was answered: smtp_client_send() may be called. */
	void (*ready)(struct smtp_client *c);
	/* The server answered RCPT for recipient i (any code). */
	void (*rcpt)(struct smtp_client *c, unsigned i, const struct smtp_reply *r);
	/* 354: stream the body with smtp_client_body(), then
	 * smtp_client_body_end(). */
	void (*body)(struct smtp_client *c);
	/* The message is over. `accepted` recipients got 2xx at RCPT, and r
	 * is the reply for them (see "Outcomes" above; for all of them when
	 * mail_refused). Then smtp_client_next(), _reset() or _quit(). */
	void (*message)(struct smtp_client *c, unsigned accepted, const struct smtp_reply *r);
	/* The conversation cannot go on: a 4xx/5xx greeting, EHLO refused
	 * with 4xx (with 5xx: and HELO refused too), RSET refused, a
	 * protocol error (r->code 0 and r->text saying what), or
	 * a 421 at any point. Nothing more is done; the caller sends what
	 * is left in out (a QUIT when the server refused politely) and
	 * closes. */
	void (*failed)(struct smtp_client *c, const struct smtp_reply *r);
	/* QUIT was answered (or the server closed after it). */
	void (*closed)(struct smtp_client *c);
};

/* Which wait the caller's timer covers (RFC 5321 4.5.3.2 values are the
 * defaults of the [delivery] timeouts). */
enum smtp_client_phase {
	SMTP_CLIENT_PHASE_GREETING,  /* 220: 5 min */
	SMTP_CLIENT_PHASE_COMMAND,   /* EHLO, HELO, MAIL, RCPT, RSET, QUIT: 5 min */
	SMTP_CLIENT_PHASE_DATA_INIT, /* DATA's 354: 2 min */
	SMTP_CLIENT_PHASE_BODY,      /* the caller sends the body: per block sent, 3 min */
	SMTP_CLIENT_PHASE_DATA_DONE, /* the reply after the dot: 10 min */
	SMTP_CLIENT_PHASE_IDLE,      /* READY, nothing asked: the caller's idle time */
	SMTP_CLIENT_PHASE_DONE,      /* failed or closed */
};

struct smtp_client {
	const struct smtp_client_events *events;
	void *user;
	struct buf *out; /* commands to send: appended here, never consumed here */
	char helo_name[256];
	struct smtp_reply_parser parser;
	struct smtp_client_extensions ext;
	int state; /* private to smtp_client.c */
	const struct smtp_client_message *msg;
	unsigned replies_due;  /* MAIL/RCPT/DATA replies still to come */
	unsigned next_rcpt;    /* without PIPELINING: the next RCPT to send */
	unsigned rcpt_replies; /* RCPT replies seen */
	unsigned accepted;     /* recipients with 2xx at RCPT */
	/* The reply message() gives when it is not the last one read: MAIL's
	 * when refused, the last RCPT's when no recipient was accepted. */
	struct smtp_reply held_reply;
	bool mail_refused;
	bool dot_answered;  /* the last message ended with the reply to its dot */
	bool at_line_start; /* dot-stuffing: the body's next octet starts a line */
	bool last_cr;       /* the last body octet sent was CR */
};

/* Start: wait for the greeting. helo_name is copied. */
void smtp_client_init(struct smtp_client *c, const struct smtp_client_events *events, void *user,
		      struct buf *out, const char *helo_name);

/* Server bytes. Returns how many were consumed (all of them unless an
 * event made the client stop: failed(), closed()). Events run inside. */
size_t smtp_client_input(struct smtp_client *c, const char *data, size_t len);

/* The server closed the connection (EOF) or the caller's timer for the
 * current phase passed: failed() is told with r->code 0 and the reason,
 * unless QUIT was already sent (then closed()). */
void smtp_client_lost(struct smtp_client *c, const char *reason);

enum smtp_client_phase smtp_client_phase(const struct smtp_client *c);

/*
 * Send a message (only when ready() came last: CHECKed). Returns 0, or
 * without sending anything (the caller decides the recipients' outcome):
 *   -EMSGSIZE   size is over the server's advertised SIZE limit
 *   -EPROTONOSUPPORT  the message needs SMTPUTF8 and the server lacks it
 *   -EINVAL     no recipient, or a path holding CR, LF, '<' or '>'
 *   -ENOMEM     out could not grow
 */
int smtp_client_send(struct smtp_client *c, const struct smtp_client_message *msg);

/* Body octets, as stored (lines ending in CRLF): dot-stuffed into out,
 * a bare LF sent as CRLF. Any chunking. Only after body(). When out
 * cannot grow, here or in the calls below, failed() is told (code 0). */
void smtp_client_body(struct smtp_client *c, const char *data, size_t len);
/* The body is complete: CRLF (if it did not end with one) "." CRLF. */
void smtp_client_body_end(struct smtp_client *c);

/* After message() (or when ready): RSET, then ready() again. */
void smtp_client_reset(struct smtp_client *c);
/* After message(): on to the next message. When the server answered the
 * final dot, the transaction is over and the server has forgotten it
 * (RFC 5321 4.1.1.4): ready() comes at once, from inside this call, with
 * no RSET round trip; otherwise (MAIL, every RCPT or DATA refused: the
 * server's transaction may still be open) RSET first, as reset(). */
void smtp_client_next(struct smtp_client *c);
/* QUIT (when ready, or after message()). */
void smtp_client_quit(struct smtp_client *c);

#endif
