#include "net/smtp_session.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/array.h"
#include "core/list.h"
#include "core/log.h"
#include "net/address.h"
#include "net/smtp_session_internal.h"

/* ---- replies -------------------------------------------------------------- */

static void smtp_close_after_reply(struct smtp_session *s)
{
	s->want_close = true;
	s->state = SMTP_STATE_CLOSED;
}

/* A 4xx/5xx reply: a message or a recipient refused, by its code. */
static void smtp_count_refusal(struct smtp_session *s, const char *line)
{
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (s->counters == NULL || code < 400 || code >= 400 + SMTP_CODES)
		return;
	if (s->replying_to == SMTP_VERB_RCPT)
		s->counters->recipients_refused[code - 400]++;
	else if (s->replying_to == SMTP_VERB_MAIL || s->replying_to == SMTP_VERB_DATA)
		s->counters->messages_refused[code - 400]++;
}

/*
 * Append one reply line. 4xx and 5xx replies are logged (a postmaster
 * tracing a refusal finds the exact words sent) and, when `counted`, count
 * towards max_errors.
 */
__attribute__((format(printf, 3, 0))) static void smtp_vreply(struct smtp_session *s, bool counted,
							      const char *fmt, va_list ap)
{
	char line[1024];
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	line[n] = '\r';
	line[n + 1] = '\n';
	buf_append(&s->out, line, (size_t)n + 2);

	if (line[0] != '4' && line[0] != '5')
		return;
	smtp_count_refusal(s, line);
	char quoted[600];
	log_event(LOG_LEVEL_INFO, "event=reject session=%s client=%s reply=%s", s->id,
		  s->client_address, log_quote(quoted, sizeof(quoted), line, (size_t)n));
	if (!counted || s->state == SMTP_STATE_CLOSED)
		return;
	if (++s->errors >= s->settings->max_errors) {
		buf_printf(&s->out, "421 4.7.0 %s Error: too many errors; closing\r\n",
			   s->settings->hostname);
		log_event(LOG_LEVEL_INFO, "event=too_many_errors session=%s client=%s errors=%u",
			  s->id, s->client_address, s->errors);
		smtp_close_after_reply(s);
	}
}

__attribute__((format(printf, 2, 3))) void smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	smtp_vreply(s, true, fmt, ap);
	va_end(ap);
}

/* A 4xx/5xx reply that does not count towards max_errors. */
__attribute__((format(printf, 2, 3))) static void smtp_reply_no_error(struct smtp_session *s,
								      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	smtp_vreply(s, false, fmt, ap);
	va_end(ap);
}

/*
 * A reply that closes the session (421). The state is CLOSED before the
 * reply is written, so the reply is not counted as one more error: that
 * could reach max_errors and put a second 421 behind it.
 */
__attribute__((format(printf, 2, 3))) void smtp_reply_closing(struct smtp_session *s,
							      const char *fmt, ...)
{
	smtp_close_after_reply(s);
	va_list ap;
	va_start(ap, fmt);
	smtp_vreply(s, true, fmt, ap);
	va_end(ap);
}

/* Shutdown waits for the transaction in progress only: once it has ended,
 * whichever way (250, refusal, RSET, EHLO), the session closes. */
void smtp_drain_if_idle(struct smtp_session *s)
{
	if (s->draining && s->state != SMTP_STATE_CLOSED && !smtp_session_in_transaction(s))
		smtp_reply_closing(s, "421 4.3.2 %s Service shutting down", s->settings->hostname);
}

/* Client text echoed in a reply: printable ASCII only, so that a CR (or any
 * control byte) taken from the command line can never reach the wire. */
static const char *smtp_printable(char *dst, size_t dst_size, const char *src, size_t len)
{
	size_t n = len < dst_size - 1 ? len : dst_size - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)src[i];
		dst[i] = (c >= ' ' && c < 0x7f) ? (char)c : '?';
	}
	dst[n] = '\0';
	return dst;
}

/* ---- the transaction ---------------------------------------------------- */

void smtp_transaction_reset(struct smtp_session *s)
{
	if (s->message != NULL) {
		queue_message_abort(s->message);
		s->message = NULL;
	}
	buf_clear(&s->envelope_text);
	s->sender_len = 0;
	s->nparams = 0;
	s->nrecipients = 0;
	s->overshoot = 0;
	s->declared_size = 0;
	s->smtputf8 = false;
	s->body_bytes = 0;
	s->queue_id[0] = '\0';
	s->store_error = 0;
	if (s->recipients_cap > 64) { /* a huge transaction once: give it back */
		free(s->recipients);
		s->recipients = NULL;
		s->recipients_cap = 0;
	}
	if (s->envelope_text.cap > 16384)
		buf_release(&s->envelope_text);
	if (s->state >= SMTP_STATE_HELO && s->state < SMTP_STATE_CLOSED)
		s->state = SMTP_STATE_HELO;
}

static int smtp_envelope_add(struct smtp_session *s, const char *text, size_t len,
			     struct smtp_recipient_span *span)
{
	span->offset = (uint32_t)buf_len(&s->envelope_text);
	span->len = (uint32_t)len;
	return buf_append(&s->envelope_text, text, len);
}

const char *smtp_envelope_at(const struct smtp_session *s, struct smtp_recipient_span sp)
{
	return buf_head(&s->envelope_text) + sp.offset;
}

/* ---- command handlers -------------------------------------------------- */

typedef void smtp_handler(struct smtp_session *s, const struct smtp_command *cmd);

#define STATE_BIT(st) (1u << (st))
#define IN_COMMAND_MODE                                                                            \
	(STATE_BIT(SMTP_STATE_READY) | STATE_BIT(SMTP_STATE_HELO) | STATE_BIT(SMTP_STATE_MAIL) |   \
	 STATE_BIT(SMTP_STATE_RCPT))
#define IN_TRANSACTION (STATE_BIT(SMTP_STATE_MAIL) | STATE_BIT(SMTP_STATE_RCPT))

static void smtp_handle_helo(struct smtp_session *s, const struct smtp_command *cmd)
{
	const char *verb = cmd->verb == SMTP_VERB_EHLO ? "EHLO" : "HELO";
	if (cmd->arg_len == 0) {
		smtp_reply(s, "501 5.5.4 Syntax: %s hostname", verb);
		return;
	}
	/* It goes into Received: as sent, so it must not be able to break it. */
	if (!address_helo_valid(cmd->arg, cmd->arg_len) || cmd->arg_len >= sizeof(s->helo)) {
		smtp_reply(s,
			   "501 5.5.2 Error: %s needs a host name (mail.example.com) or an "
			   "address literal ([192.0.2.1])",
			   verb);
		return;
	}
	smtp_transaction_reset(s);
	memcpy(s->helo, cmd->arg, cmd->arg_len);
	s->helo[cmd->arg_len] = '\0';
	s->state = SMTP_STATE_HELO;
	s->esmtp = cmd->verb == SMTP_VERB_EHLO;
	if (!s->esmtp) {
		smtp_reply(s, "250 %s", s->settings->hostname);
		return;
	}
	/* RFC 2034: the EHLO response itself carries no enhanced codes. */
	buf_printf(&s->out,
		   "250-%s\r\n"
		   "250-PIPELINING\r\n"
		   "250-SIZE %llu\r\n"
		   "%s"
		   "250-8BITMIME\r\n"
		   "250-ENHANCEDSTATUSCODES\r\n"
		   "250 SMTPUTF8\r\n",
		   s->settings->hostname, (unsigned long long)s->settings->max_message_size,
		   s->settings->etrn != NULL ? "250-ETRN\r\n" : "");
}

static bool smtp_param_is(const struct smtp_param *p, const char *key)
{
	return p->key_len == strlen(key) && strncasecmp(p->key, key, p->key_len) == 0;
}

static bool smtp_value_is(const struct smtp_param *p, const char *value)
{
	return p->value != NULL && p->value_len == strlen(value) &&
	       strncasecmp(p->value, value, p->value_len) == 0;
}

/* MAIL FROM parameters: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
 * (RFC 6531). Returns false after replying when one is refused. */
static bool smtp_mail_params(struct smtp_session *s, const struct smtp_path_arg *pa)
{
	for (unsigned i = 0; i < pa->nparams; i++) {
		const struct smtp_param *p = &pa->params[i];
		if (!s->esmtp) {
			smtp_reply(s, "555 5.5.4 Error: parameters need EHLO, not HELO");
			return false;
		}
		if (smtp_param_is(p, "SIZE")) {
			/* RFC 1870: 1*20DIGIT. A value past 2^64 - 1 is still a valid
			 * SIZE, just too big: it saturates, and gets the 552. */
			uint64_t size = 0;
			bool ok = p->value != NULL && p->value_len > 0 && p->value_len <= 20;
			for (size_t k = 0; ok && k < p->value_len; k++) {
				unsigned digit = (unsigned)(p->value[k] - '0');
				ok = p->value[k] >= '0' && p->value[k] <= '9';
				if (size > (UINT64_MAX - digit) / 10)
					size = UINT64_MAX;
				else
					size = size * 10 + digit;
			}
			if (!ok) {
				smtp_reply(s, "501 5.5.4 Syntax: SIZE=<number of octets>");
				return false;
			}
			if (size > s->settings->max_message_size) {
				smtp_reply(s,
					   "552 5.3.4 Message size exceeds fixed limit of %llu "
					   "octets",
					   (unsigned long long)s->settings->max_message_size);
				return false;
			}
			s->declared_size = size;
		} else if (smtp_param_is(p, "BODY")) {
			if (!smtp_value_is(p, "7BIT") && !smtp_value_is(p, "8BITMIME")) {
				smtp_reply(s, "555 5.5.4 Unsupported BODY type (use 7BIT or "
					      "8BITMIME)");
				return false;
			}
		} else if (smtp_param_is(p, "SMTPUTF8")) {
			if (p->value != NULL) {
				smtp_reply(s, "501 5.5.4 Syntax: SMTPUTF8 takes no value");
				return false;
			}
			s->smtputf8 = true;
		} else {
			smtp_reply(s, "555 5.5.4 Unsupported option: %.*s", (int)p->key_len,
				   p->key);
			return false;
		}
	}
	return true;
}

static void smtp_handle_mail(struct smtp_session *s, const struct smtp_command *cmd)
{
	struct smtp_path_arg pa;
	int r = smtp_parse_path_arg(cmd->arg, cmd->arg_len, "FROM:", &pa);
	if (r == SMTP_PARSE_TOO_MANY) {
		smtp_reply(s, "501 5.5.4 Error: too many parameters");
		return;
	}
	if (r != SMTP_PARSE_OK) {
		smtp_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (s->messages >= s->settings->max_messages) {
		smtp_reply_closing(s,
				   "421 4.7.0 %s Error: too many messages in one session; closing",
				   s->settings->hostname);
		return;
	}
	smtp_transaction_reset(s);
	if (!smtp_mail_params(s, &pa)) {
		smtp_transaction_reset(s);
		return;
	}
	/* Refuse early, before the client sends a body we could not keep. */
	if (queue_check_space(s->queue, s->declared_size) != 0) {
		smtp_reply(s, "452 4.3.1 Error: insufficient system storage, try again later");
		smtp_transaction_reset(s);
		return;
	}
	struct mailbox mb;
	enum address_status st = address_parse_path(pa.path, pa.path_len, s->smtputf8, &mb);
	if (st == ADDRESS_NEEDS_UTF8) {
		smtp_reply(s, "553 5.6.7 Error: non-ASCII sender address needs SMTPUTF8");
		smtp_transaction_reset(s);
		return;
	}
	if (st != ADDRESS_OK && st != ADDRESS_EMPTY) {
		smtp_reply(s, "501 5.1.7 Bad sender address syntax: %s", address_status_text(st));
		smtp_transaction_reset(s);
		return;
	}
	struct smtp_recipient_span sender = {0, 0};
	int r_add = 0;
	if (st == ADDRESS_OK) {
		/* A source route is dropped (RFC 5321 C): keep local@domain. */
		size_t len = (size_t)(mb.domain + mb.domain_len - mb.local);
		r_add = smtp_envelope_add(s, mb.local, len, &sender);
	}
	s->sender_len = sender.len;
	for (unsigned i = 0; r_add == 0 && i < pa.nparams; i++) {
		const struct smtp_param *p = &pa.params[i];
		size_t len = p->value ? (size_t)(p->value + p->value_len - p->key) : p->key_len;
		r_add = smtp_envelope_add(s, p->key, len, &s->params[s->nparams++]);
	}
	if (r_add != 0) {
		smtp_reply(s, "452 4.3.0 Error: out of memory, try again later");
		smtp_transaction_reset(s);
		return;
	}
	s->state = SMTP_STATE_MAIL;
	smtp_reply(s, "250 2.1.0 Ok");
}

static void smtp_add_recipient(struct smtp_session *s, const char *address, size_t len)
{
	if (array_reserve(s->recipients, s->recipients_cap, (size_t)s->nrecipients + 1) != 0 ||
	    smtp_envelope_add(s, address, len, &s->recipients[s->nrecipients]) != 0) {
		smtp_reply(s, "452 4.3.0 Error: out of memory, try again later");
		return;
	}
	s->nrecipients++;
	s->state = SMTP_STATE_RCPT;
	smtp_reply(s, "250 2.1.5 Ok");
}

/*
 * A recipient past max_recipients. RFC 5321 4.5.3.1.10: the client may go
 * on to DATA with those already accepted, and one that pipelined its whole
 * list reads the 452s only afterwards. As with Postfix's
 * smtpd_recipient_overshoot_limit, the first recipient_overshoot of them in
 * a transaction are no errors, or max_errors would close the session and
 * lose the accepted ones; only the first of them is logged.
 */
static void smtp_too_many_recipients(struct smtp_session *s)
{
	static const char reply[] = "452 4.5.3 Error: too many recipients";
	if (s->overshoot >= s->settings->recipient_overshoot)
		smtp_reply(s, "%s", reply);
	else if (s->overshoot == 0)
		smtp_reply_no_error(s, "%s", reply);
	else
		buf_printf(&s->out, "%s\r\n", reply);
	s->overshoot++;
}

static void smtp_handle_rcpt(struct smtp_session *s, const struct smtp_command *cmd)
{
	struct smtp_path_arg pa;
	int r = smtp_parse_path_arg(cmd->arg, cmd->arg_len, "TO:", &pa);
	if (r != SMTP_PARSE_OK) {
		smtp_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (pa.nparams > 0) {
		smtp_reply(s, "555 5.5.4 Unsupported option: %.*s", (int)pa.params[0].key_len,
			   pa.params[0].key);
		return;
	}
	if (s->nrecipients >= s->settings->max_recipients) {
		smtp_too_many_recipients(s);
		return;
	}
	if (queue_check_space(s->queue, s->declared_size) != 0) {
		smtp_reply(s, "452 4.3.1 Error: insufficient system storage, try again later");
		return;
	}
	/* RFC 5321 4.5.1: "<Postmaster>" MUST be accepted, in any case and
	 * from anyone; without a domain, it is this server's postmaster. */
	if (pa.path_len == 10 && address_ascii_equal_nocase(pa.path, "postmaster", 10)) {
		smtp_add_recipient(s, s->settings->postmaster, strlen(s->settings->postmaster));
		return;
	}
	struct mailbox mb;
	enum address_status st = address_parse_path(pa.path, pa.path_len, s->smtputf8, &mb);
	switch (st) {
	case ADDRESS_OK:
		break;
	case ADDRESS_NEEDS_UTF8:
		smtp_reply(s, "553 5.6.7 Error: non-ASCII recipient address needs SMTPUTF8");
		return;
	case ADDRESS_BAD_DOMAIN: {
		char shown[ADDRESS_PATH_MAX + 1];
		smtp_reply(s, "501 5.1.2 Bad recipient domain syntax: <%s>",
			   smtp_printable(shown, sizeof(shown), pa.path, pa.path_len));
		return;
	}
	default:
		smtp_reply(s, "501 5.1.3 Bad recipient address syntax: %s",
			   address_status_text(st));
		return;
	}
	size_t len = (size_t)(mb.domain + mb.domain_len - mb.local);
	switch (policy_check_recipient(s->settings->policy, s->client_trusted, &mb)) {
	case POLICY_ACCEPT:
		break;
	case POLICY_ROUTING_DENIED:
		smtp_reply(s,
			   "554 5.7.1 <%.*s>: Relay access denied (routing characters in "
			   "the local part)",
			   (int)len, mb.local);
		return;
	case POLICY_RELAY_DENIED:
	default:
		smtp_reply(s, "554 5.7.1 <%.*s>: Relay access denied", (int)len, mb.local);
		return;
	}
	if (s->hooks->queue_full != NULL && s->hooks->queue_full(s, mb.domain, mb.domain_len)) {
		smtp_reply(s,
			   "452 4.2.2 <%.*s>: Mailbox full: too much mail is waiting for %.*s, try "
			   "again later",
			   (int)len, mb.local, (int)mb.domain_len, mb.domain);
		return;
	}
	smtp_add_recipient(s, mb.local, len);
}

static void smtp_handle_rset(struct smtp_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	smtp_transaction_reset(s);
	smtp_reply(s, "250 2.0.0 Ok");
}

static void smtp_handle_noop(struct smtp_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	smtp_reply(s, "250 2.0.0 Ok");
}

static void smtp_handle_quit(struct smtp_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	smtp_transaction_reset(s);
	smtp_reply(s, "221 2.0.0 Bye");
	smtp_close_after_reply(s);
}

static void smtp_handle_vrfy(struct smtp_session *s, const struct smtp_command *cmd)
{
	if (cmd->arg_len == 0) {
		smtp_reply(s, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	/* No address harvesting: the same answer for every address. */
	smtp_reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt "
		      "delivery");
}

static void smtp_handle_expn(struct smtp_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	smtp_reply(s, "502 5.5.1 EXPN is not supported");
}

static void smtp_handle_help(struct smtp_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	smtp_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP%s",
		   s->settings->etrn != NULL ? " ETRN" : "");
}

static void smtp_handle_etrn(struct smtp_session *s, const struct smtp_command *cmd)
{
	if (s->settings->etrn == NULL) {
		smtp_reply(s, "502 5.5.1 Error: ETRN is not available on this server");
		return;
	}
	/* Answered now or later (smtp_session_etrn_reply); until then the
	 * session reads no further command. */
	s->etrn_pending = true;
	s->settings->etrn(s->settings->etrn_arg, s, cmd->arg, cmd->arg_len);
	if (s->etrn_pending)
		s->waiting = true;
}

static void smtp_handle_not_implemented(struct smtp_session *s, const struct smtp_command *cmd)
{
	smtp_reply(s, "502 5.5.1 Error: %s not implemented", smtp_verb_name(cmd->verb));
}

struct smtp_command_entry {
	smtp_handler *handle;
	unsigned states; /* where the command is in sequence */
};

static const struct smtp_command_entry smtp_commands[SMTP_VERB_COUNT] = {
	[SMTP_VERB_HELO] = {smtp_handle_helo, IN_COMMAND_MODE},
	[SMTP_VERB_EHLO] = {smtp_handle_helo, IN_COMMAND_MODE},
	[SMTP_VERB_MAIL] = {smtp_handle_mail, STATE_BIT(SMTP_STATE_HELO)},
	[SMTP_VERB_RCPT] = {smtp_handle_rcpt, IN_TRANSACTION},
	[SMTP_VERB_DATA] = {smtp_handle_data, STATE_BIT(SMTP_STATE_RCPT)},
	[SMTP_VERB_RSET] = {smtp_handle_rset, IN_COMMAND_MODE},
	[SMTP_VERB_NOOP] = {smtp_handle_noop, IN_COMMAND_MODE},
	[SMTP_VERB_QUIT] = {smtp_handle_quit, IN_COMMAND_MODE},
	[SMTP_VERB_VRFY] = {smtp_handle_vrfy, IN_COMMAND_MODE},
	[SMTP_VERB_EXPN] = {smtp_handle_expn, IN_COMMAND_MODE},
	[SMTP_VERB_HELP] = {smtp_handle_help, IN_COMMAND_MODE},
	[SMTP_VERB_ETRN] = {smtp_handle_etrn, STATE_BIT(SMTP_STATE_HELO)},
	[SMTP_VERB_STARTTLS] = {smtp_handle_not_implemented, IN_COMMAND_MODE},
	[SMTP_VERB_AUTH] = {smtp_handle_not_implemented, IN_COMMAND_MODE},
	[SMTP_VERB_BDAT] = {smtp_handle_not_implemented, IN_COMMAND_MODE},
};

static void smtp_bad_sequence(struct smtp_session *s, enum smtp_verb verb)
{
	if (s->state == SMTP_STATE_READY)
		smtp_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
	else if (verb == SMTP_VERB_MAIL)
		smtp_reply(s, "503 5.5.1 Error: nested MAIL command");
	else if (verb == SMTP_VERB_RCPT || (verb == SMTP_VERB_DATA && s->state == SMTP_STATE_HELO))
		smtp_reply(s, "503 5.5.1 Error: need MAIL command");
	else if (verb == SMTP_VERB_DATA)
		smtp_reply(s, "503 5.5.1 Error: need RCPT command");
	else if (verb == SMTP_VERB_ETRN)
		smtp_reply(s, "503 5.5.1 Error: ETRN is not allowed inside a mail transaction");
	else
		smtp_reply(s, "503 5.5.1 Error: bad sequence of commands");
}

/*
 * A client speaking another protocol (TLS without STARTTLS, a web client)
 * will not turn to SMTP: tell it once, and close, instead of answering each
 * of its lines until max_errors or leaving it waiting for a line end.
 */
static void smtp_not_smtp(struct smtp_session *s, const char *protocol, const char *what)
{
	log_event(LOG_LEVEL_INFO, "event=not_smtp session=%s client=%s protocol=%s", s->id,
		  s->client_address, protocol);
	smtp_reply_closing(s,
			   "554 5.7.0 %s Error: %s received, but this is an SMTP server; closing",
			   s->settings->hostname, what);
}

static void smtp_handle_line(struct smtp_session *s, const char *line, size_t len)
{
	if (++s->commands > s->settings->max_commands) {
		smtp_reply_closing(s, "421 4.7.0 %s Error: too many commands; closing",
				   s->settings->hostname);
		return;
	}
	struct smtp_command cmd;
	s->replying_to = SMTP_VERB_UNKNOWN;
	if (smtp_command_parse(line, len, &cmd) == SMTP_PARSE_NUL) {
		smtp_reply(s, "500 5.5.2 Error: NUL character in command");
		return;
	}
	s->replying_to = cmd.verb;
	if (cmd.verb == SMTP_VERB_EMPTY) {
		smtp_reply(s, "500 5.5.2 Error: bad syntax");
		return;
	}
	if (cmd.verb == SMTP_VERB_UNKNOWN) {
		if (smtp_line_is_http_request(line, len))
			smtp_not_smtp(s, "http", "HTTP request");
		else
			smtp_reply(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	const struct smtp_command_entry *e = &smtp_commands[cmd.verb];
	if (e->handle == NULL) {
		smtp_reply(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	if (!(e->states & STATE_BIT(s->state))) {
		smtp_bad_sequence(s, cmd.verb);
		return;
	}
	e->handle(s, &cmd);
}

/* ---- the public face ------------------------------------------------------ */

int smtp_session_init(struct smtp_session *s, const struct smtp_settings *settings,
		      const struct smtp_session_hooks *hooks, struct queue *queue,
		      const struct sockaddr *client, const char *client_text, const char *id)
{
	memset(s, 0, sizeof(*s));
	s->settings = settings;
	s->hooks = hooks;
	s->queue = queue;
	s->state = SMTP_STATE_GREETING;
	s->out_max = SIZE_MAX;
	snprintf(s->id, sizeof(s->id), "%s", id);
	snprintf(s->client_address, sizeof(s->client_address), "%s", client_text);
	if (client != NULL)
		memcpy(&s->client, client,
		       client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						     : sizeof(struct sockaddr_in));
	s->client_trusted = client != NULL && policy_client_trusted(settings->policy, client);
	snprintf(s->helo, sizeof(s->helo), "unknown");
	uint32_t cap = settings->max_command_line - 2;
	s->line_storage = malloc(cap + 1);
	if (s->line_storage == NULL)
		return -ENOMEM;
	smtp_line_reader_init(&s->line, s->line_storage, cap);
	return 0;
}

void smtp_session_etrn_reply(struct smtp_session *s, const char *line, bool close)
{
	if (!s->etrn_pending)
		return;
	s->etrn_pending = false;
	bool parked = s->waiting;
	s->waiting = false;
	if (s->state != SMTP_STATE_CLOSED) { /* else shutdown or a timeout closed it */
		if (close)
			smtp_reply_closing(s, "%s", line);
		else
			smtp_reply(s, "%s", line);
		smtp_drain_if_idle(s);
	}
	if (parked)
		s->hooks->wake(s);
}

void smtp_session_destroy(struct smtp_session *s)
{
	if (s->etrn_pending) {
		s->etrn_pending = false;
		s->settings->etrn_cancel(s->settings->etrn_arg, s);
	}
	if (s->message != NULL) {
		if (s->state == SMTP_STATE_COMMIT)
			queue_message_detach(s->message);
		else
			queue_message_abort(s->message);
		s->message = NULL;
	}
	free(s->line_storage);
	free(s->recipients);
	buf_release(&s->out);
	buf_release(&s->envelope_text);
	s->line_storage = NULL;
	s->recipients = NULL;
	s->state = SMTP_STATE_CLOSED;
}

void smtp_session_greet(struct smtp_session *s)
{
	if (s->state != SMTP_STATE_GREETING)
		return;
	s->state = SMTP_STATE_READY;
	buf_printf(&s->out, "220 %s ESMTP ferry\r\n", s->settings->hostname);
}

void smtp_session_early_talker(struct smtp_session *s)
{
	smtp_reply_closing(s, "554 5.5.1 %s Error: talked before the greeting; closing",
			   s->settings->hostname);
}

void smtp_session_refuse(struct smtp_session *s, const char *reply)
{
	smtp_reply_closing(s, "%s", reply);
}

size_t smtp_session_feed(struct smtp_session *s, const char *data, size_t len)
{
	size_t done = 0;
	while (!s->waiting && s->state != SMTP_STATE_CLOSED && s->state != SMTP_STATE_GREETING) {
		if (s->state == SMTP_STATE_DATA) {
			done += smtp_data_feed(s, data + done, len - done);
			if (s->state == SMTP_STATE_DATA)
				break; /* input used up, or the store asked us to wait */
			continue;
		}
		if (done == len || buf_len(&s->out) > s->out_max)
			break;
		size_t used;
		enum smtp_line_status st = smtp_line_feed(&s->line, data + done, len - done, &used);
		done += used;
		if (smtp_line_starts_tls(&s->line)) {
			smtp_not_smtp(s, "tls", "TLS handshake");
			break;
		}
		if (st == SMTP_LINE_NEED_MORE)
			break;
		if (st == SMTP_LINE_TOO_LONG) {
			smtp_reply(s, "500 5.5.2 Error: line too long (the limit is %u octets)",
				   s->settings->max_command_line);
			continue;
		}
		smtp_handle_line(s, s->line.buf, s->line.len);
		/* Later replies (a timeout's, shutdown's) are not this line's. */
		s->replying_to = SMTP_VERB_UNKNOWN;
		smtp_drain_if_idle(s);
	}
	return done;
}

bool smtp_session_in_data(const struct smtp_session *s)
{
	return s->state == SMTP_STATE_DATA;
}

bool smtp_session_in_transaction(const struct smtp_session *s)
{
	return s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT ||
	       s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_COMMIT;
}

bool smtp_session_in_command_line(const struct smtp_session *s)
{
	return s->state >= SMTP_STATE_READY && s->state <= SMTP_STATE_RCPT &&
	       smtp_line_pending(&s->line);
}

void smtp_session_timeout(struct smtp_session *s)
{
	if (s->state == SMTP_STATE_CLOSED || s->state == SMTP_STATE_COMMIT)
		return; /* a commit in flight is the store's time, not the client's */
	smtp_transaction_reset(s);
	smtp_reply_closing(s, "421 4.4.2 %s Error: timeout exceeded", s->settings->hostname);
}

void smtp_session_data_too_slow(struct smtp_session *s, uint32_t min_rate)
{
	if (s->state != SMTP_STATE_DATA)
		return;
	smtp_transaction_reset(s);
	smtp_reply_closing(s,
			   "421 4.4.2 %s Error: data rate too low (at least %u octets a second "
			   "expected); closing",
			   s->settings->hostname, min_rate);
}

void smtp_session_shutdown(struct smtp_session *s)
{
	s->draining = true;
	if (s->state == SMTP_STATE_CLOSED || smtp_session_in_transaction(s))
		return;
	smtp_reply_closing(s, "421 4.3.2 %s Service shutting down", s->settings->hostname);
}

void smtp_session_shutdown_now(struct smtp_session *s)
{
	s->draining = true;
	if (s->state == SMTP_STATE_CLOSED || s->state == SMTP_STATE_COMMIT)
		return;
	smtp_transaction_reset(s);
	smtp_reply_closing(s, "421 4.3.2 %s Service shutting down", s->settings->hostname);
}
