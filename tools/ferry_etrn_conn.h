/*
 * ferry_etrn_conn — ferry-etrn's side of one SMTP conversation: connect
 * (each of the server's addresses in turn), the 220 greeting, EHLO (HELO
 * when EHLO gets a 5xx), commands and their replies, QUIT.
 *
 * Blocking in effect, on a non-blocking socket and poll(): every wait
 * ends at its own limit (connect, reply) or at the run's deadline,
 * whichever comes first, so a network-up hook always ends. Replies are
 * read line by line and joined by net/smtp_client.h's reply parser
 * (multi-line replies, enhanced status codes); only their codes decide.
 * With `verbose`, the dialogue goes to stderr: "<<< " what the server
 * said, ">>> " what was sent. Text from the server is only ever shown
 * through etrn_conn_safe().
 */
#ifndef FERRY_TOOLS_FERRY_ETRN_CONN_H
#define FERRY_TOOLS_FERRY_ETRN_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/smtp_client.h"

/* Room for any reply line or joined reply shown through etrn_conn_safe(). */
#define ETRN_CONN_SHOWN_MAX (4 * SMTP_CLIENT_LINE_MAX + 1)

struct etrn_conn_settings {
	const char *host, *port; /* as getaddrinfo takes them */
	const char *helo;        /* the name in EHLO/HELO */
	bool verbose;
	int64_t connect_timeout_ms, reply_timeout_ms;
	int64_t deadline; /* the run's end, on etrn_conn_now_ms()'s clock */
};

struct etrn_conn {
	const struct etrn_conn_settings *set;
	int fd;
	char in[SMTP_CLIENT_LINE_MAX + 1];
	size_t in_len;
	struct smtp_reply_parser parser;
	bool etrn_offered; /* the EHLO reply listed ETRN */
	char error[1024];  /* why the conversation broke off, in words */
};

/* Connect, read the greeting and introduce ourselves. 0, or -1 with
 * c->error set. Either way etrn_conn_close() ends it. `set` must outlive
 * c. */
int etrn_conn_open(struct etrn_conn *c, const struct etrn_conn_settings *set);

/* Send "VERB[ ARG]" and read the whole reply. 0 with *r (any code), or
 * -1 with c->error set (no reply: timeout, closed, not SMTP). */
int etrn_conn_command(struct etrn_conn *c, const char *verb, const char *arg, struct smtp_reply *r);

/* QUIT first when `quit` (its reply is waited for briefly), then close. */
void etrn_conn_close(struct etrn_conn *c, bool quit);

/* Milliseconds on CLOCK_MONOTONIC: the clock of every deadline. */
int64_t etrn_conn_now_ms(void);

/* Text from the server made safe for a terminal or a log: printable
 * ASCII as is, the rest as \xNN. Returns out. */
const char *etrn_conn_safe(const char *s, size_t len, char *out, size_t size);

/* A reply as one line, made safe: "253 2.0.0 OK, 3 pending messages ...". */
const char *etrn_conn_reply_text(const struct smtp_reply *r, char *out, size_t size);

/* "ferry-etrn: ..." on stderr, only when verbose. */
__attribute__((format(printf, 2, 3))) void etrn_conn_verbose(bool verbose, const char *fmt, ...);

#endif
