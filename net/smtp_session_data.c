/*
 * smtp_session_data — DATA: the message begun in the store with its
 * Received header, the body decoded and handed over, its end judged, and
 * the store's callbacks (committed: the only place a 250 for a message is
 * written). See net/smtp_session.h for the session's contract.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/list.h"
#include "core/log.h"
#include "net/smtp_session_internal.h"

/* Decoded body goes through this much stack at a time on its way to the
 * store, which copies it. */
#define SMTP_BODY_CHUNK 16384

/* ---- the message begun ------------------------------------------------------------ */

static void smtp_queue_committed(struct queue_client *client, int status);
static void smtp_queue_resume(struct queue_client *client);

/* The Received header (RFC 5321 4.4), first bytes of the stored body. */
static int smtp_write_received(struct smtp_session *s)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	const char *with = s->smtputf8 ? "UTF8SMTP" : s->esmtp ? "ESMTP" : "SMTP";
	/* TCP-info is an address literal (RFC 5321 4.4): IPv6 ones are tagged. */
	const char *tag = strchr(s->client_address, ':') != NULL ? "IPv6:" : "";
	char header[1024];
	int n;
	if (s->nrecipients == 1) {
		struct smtp_recipient_span r = s->recipients[0];
		n = snprintf(header, sizeof(header),
			     "Received: from %s ([%s%s])\r\n\tby %s (ferry) with %s id %s\r\n"
			     "\tfor <%.*s>; %s\r\n",
			     s->helo, tag, s->client_address, s->settings->hostname, with,
			     s->queue_id, (int)r.len, smtp_envelope_at(s, r), date);
	} else {
		n = snprintf(header, sizeof(header),
			     "Received: from %s ([%s%s])\r\n\tby %s (ferry) with %s id %s;\r\n"
			     "\t%s\r\n",
			     s->helo, tag, s->client_address, s->settings->hostname, with,
			     s->queue_id, date);
	}
	if (n < 0 || (size_t)n >= sizeof(header))
		return -EINVAL;
	int r = queue_message_write(s->message, header, (size_t)n);
	if (r == 1)
		s->waiting = true; /* taken, but read no body until resume() */
	return r < 0 ? r : 0;
}

/* The reply when the store cannot keep a message: a spool limit is a 452
 * (the client may try again later, elsewhere), anything else a 451. */
static const char *smtp_store_error_reply(int error)
{
	if (error == -ENOSPC || error == -EDQUOT)
		return "452 4.3.1 Error: insufficient system storage, try again later";
	return "451 4.3.0 Error: queue file write error";
}

void smtp_handle_data(struct smtp_session *s, const struct smtp_command *cmd)
{
	if (cmd->arg_len != 0) {
		smtp_reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	struct queue_recipient rcpts[s->nrecipients];
	struct queue_param params[SMTP_MAX_PARAMS];
	for (uint32_t i = 0; i < s->nrecipients; i++) {
		rcpts[i].address = smtp_envelope_at(s, s->recipients[i]);
		rcpts[i].len = s->recipients[i].len;
	}
	for (uint32_t i = 0; i < s->nparams; i++) {
		params[i].text = smtp_envelope_at(s, s->params[i]);
		params[i].len = s->params[i].len;
	}
	struct queue_envelope env = {
		.sender = buf_head(&s->envelope_text),
		.sender_len = s->sender_len,
		.recipients = rcpts,
		.nrecipients = s->nrecipients,
		.params = params,
		.nparams = s->nparams,
		.client_address = s->client_address,
		.helo = s->helo,
	};
	clock_gettime(CLOCK_REALTIME, &env.arrival);
	s->queue_client.committed = smtp_queue_committed;
	s->queue_client.resume = smtp_queue_resume;
	s->message = NULL;
	int r = queue_message_begin(s->queue, &s->queue_client, &env, &s->message);
	if (r == 0) {
		snprintf(s->queue_id, sizeof(s->queue_id), "%s", queue_message_id(s->message));
		r = smtp_write_received(s);
	} else {
		s->message = NULL; /* whatever begin left there is not ours */
	}
	if (r != 0) {
		s->waiting = false;
		log_event(LOG_LEVEL_ERROR, "event=queue_error session=%s queue_id=%s error=\"%s\"",
			  s->id, s->message != NULL ? s->queue_id : "-", strerror(-r));
		smtp_reply(s, "%s", smtp_store_error_reply(r));
		smtp_transaction_reset(s);
		return;
	}
	uint32_t max_line = s->settings->max_text_line - 2;
	smtp_data_decoder_init(&s->data, max_line, s->settings->max_message_size);
	s->headers = (struct smtp_header_scan){0};
	s->state = SMTP_STATE_DATA;
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* ---- the body ----------------------------------------------------------------- */

static void smtp_data_finish(struct smtp_session *s)
{
	s->replying_to = SMTP_VERB_DATA; /* the end of DATA answers for the message */
	const struct smtp_data_decoder *d = &s->data;
	const char *refusal = NULL;
	char text[160];
	if (d->bare_lf || d->bare_cr) {
		refusal = "550 5.6.0 Message refused: bare LF or bare CR in message data "
			  "(only CRLF line endings are allowed)";
	} else if (d->nul) {
		refusal = "550 5.6.0 Message refused: NUL character in message data (not allowed "
			  "in mail, and a next hop may drop it)";
	} else if (d->too_big) {
		snprintf(text, sizeof(text),
			 "552 5.3.4 Message size exceeds fixed limit of %llu octets",
			 (unsigned long long)s->settings->max_message_size);
		refusal = text;
	} else if (d->line_too_long) {
		snprintf(text, sizeof(text),
			 "500 5.5.2 Message refused: line too long (the limit is %u octets)",
			 s->settings->max_text_line);
		refusal = text;
	} else if (s->settings->max_received_headers != 0 &&
		   s->headers.received > s->settings->max_received_headers) {
		snprintf(text, sizeof(text),
			 "554 5.4.6 Message refused: %u Received: header fields, more than %u "
			 "(a mail loop)",
			 s->headers.received, s->settings->max_received_headers);
		refusal = text;
	} else if (s->message == NULL) {
		refusal = smtp_store_error_reply(s->store_error);
	}
	if (refusal != NULL) {
		s->state = SMTP_STATE_HELO;
		smtp_transaction_reset(s);
		smtp_reply(s, "%s", refusal);
		s->replying_to = SMTP_VERB_UNKNOWN;
		smtp_drain_if_idle(s);
		return;
	}
	s->state = SMTP_STATE_COMMIT;
	s->waiting = true;
	queue_message_commit(s->message);
}

/* Returns bytes consumed; stops at the end of DATA or when the store asks
 * us to wait. */
size_t smtp_data_feed(struct smtp_session *s, const char *data, size_t len)
{
	char chunk[SMTP_BODY_CHUNK];
	size_t done = 0;
	while (done < len || s->state == SMTP_STATE_DATA) {
		size_t used, produced;
		enum smtp_data_status st = smtp_data_decode(&s->data, data + done, len - done,
							    &used, chunk, sizeof(chunk), &produced);
		done += used;
		if (produced > 0 && !s->headers.done)
			smtp_header_scan_feed(&s->headers, chunk, produced);
		if (produced > 0 && s->message != NULL) {
			int r = queue_message_write(s->message, chunk, produced);
			if (r < 0) {
				log_event(LOG_LEVEL_ERROR,
					  "event=queue_error session=%s queue_id=%s error=\"%s\"",
					  s->id, s->queue_id, strerror(-r));
				queue_message_abort(s->message);
				s->message = NULL; /* read to the end, then 452 or 451 */
				s->store_error = r;
			} else if (r == 1) {
				s->waiting = true;
			}
			s->body_bytes += produced;
		}
		if (st == SMTP_DATA_END) {
			smtp_data_finish(s);
			break;
		}
		if (s->waiting || (used == 0 && produced == 0))
			break;
	}
	return done;
}

/* ---- store callbacks ------------------------------------------------------ */

static struct smtp_session *smtp_session_of(struct queue_client *client)
{
	return container_of(client, struct smtp_session, queue_client);
}

static void smtp_queue_committed(struct queue_client *client, int status)
{
	smtp_session_of(client)->replying_to = SMTP_VERB_DATA;
	struct smtp_session *s = smtp_session_of(client);
	/* After this callback the message is the store's alone (queue.h):
	 * use the id copied at begin. */
	const char *id = s->queue_id;
	char from[300];
	if (status == 0) {
		/* Durable: this is the only place that says so to the client. */
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", id);
		if (s->counters != NULL)
			s->counters->messages_received++;
		log_event(LOG_LEVEL_INFO,
			  "event=accepted session=%s queue_id=%s client=%s from=%s nrcpt=%u "
			  "size=%llu",
			  s->id, id, s->client_address,
			  log_quote(from, sizeof(from), buf_head(&s->envelope_text), s->sender_len),
			  s->nrecipients, (unsigned long long)s->body_bytes);
	} else {
		log_event(LOG_LEVEL_ERROR,
			  "event=commit_failed session=%s queue_id=%s error=\"%s\"", s->id, id,
			  strerror(-status));
		s->state = SMTP_STATE_HELO;
		smtp_reply(s, "%s", smtp_store_error_reply(status));
	}
	s->message = NULL; /* the store's from now on */
	s->messages++;
	s->waiting = false;
	s->replying_to = SMTP_VERB_UNKNOWN; /* a drain's 421 below is no refusal */
	if (s->state != SMTP_STATE_CLOSED)
		s->state = SMTP_STATE_HELO;
	smtp_transaction_reset(s);
	smtp_drain_if_idle(s);
	s->hooks->wake(s);
}

static void smtp_queue_resume(struct queue_client *client)
{
	struct smtp_session *s = smtp_session_of(client);
	if (s->state != SMTP_STATE_DATA)
		return;
	s->waiting = false;
	s->hooks->wake(s);
}
