/*
 * outbound_session — one client connection on a conn (outbound_session.h).
 */
#include "net/outbound_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"
#include "net/conn.h"
#include "net/outbound.h"
#include "net/smtp_client.h"
#include "queue/body.h"
#include "queue/sched.h"

/* Body octets queued for the server before the next run is read. */
#define SESSION_BODY_AHEAD 65536
/* A body whose message is being moved by compaction: look again. */
#define SESSION_PIN_RETRY_MS 20

struct outbound_session {
	struct conn conn;
	struct buf out;
	struct smtp_client client;
	struct outbound_dest *dest;
	struct outbound *ob;
	struct list_node idle_link;           /* on dest->idle while idle */
	struct list_node all_link;            /* on ob->sessions */
	char relay[CONFIG_HOSTNAME_MAX + 64]; /* "host[address]:port" */
	union dns_address target;             /* where it is connected */

	/* The transaction in hand: at most `capacity` recipients, the
	 * recipients_per_transaction it was opened with (a reload may
	 * change the setting under it). */
	size_t capacity;
	struct queue_rcpt **rcpts;
	/* Each recipient's destination: the session's own, or another domain
	 * of the message with the same next hop, riding along. */
	struct outbound_dest **rcpt_dests;
	const char **rcpt_addresses;
	size_t *rcpt_lens;
	/* A recipient's own refusal at RCPT, kept until the transaction ends:
	 * a message's failures make one DSN. NULL: none. */
	struct smtp_reply **refused;
	unsigned nrcpts;
	struct sched_message info;
	struct smtp_client_message msg;
	struct queue_body_reader body;
	bool body_open;
	bool body_ended; /* the whole body is in the output */
	/* The transaction ended while a body read was in flight: its
	 * outcome, told once the read is back (the reader cannot be let go
	 * of before, nor the message ended under it). */
	struct {
		bool set;
		int code;
		char status[16];
		char reply[SMTP_CLIENT_TEXT_MAX + 64];
	} ending;
	bool greeted; /* READY once: the connection counted as made */
	bool failed;  /* counted as a connection failure of its destination */
	bool quitting;
	bool draining;
};

static const struct conn_handler session_conn_handler;
static const struct smtp_client_events session_client_events;

unsigned outbound_session_state(const struct outbound_session *s)
{
	if (s->quitting || s->failed || s->conn.state >= CONN_TEARDOWN)
		return 3;
	if (!s->greeted)
		return 0;
	return list_linked(&s->idle_link) ? 2 : 1;
}

struct list_node *outbound_session_idle_link(struct outbound_session *s)
{
	return &s->idle_link;
}

struct outbound_session *outbound_session_of_idle_link(struct list_node *link)
{
	return container_of(link, struct outbound_session, idle_link);
}

struct outbound_session *outbound_session_of_all_link(struct list_node *link)
{
	return container_of(link, struct outbound_session, all_link);
}

/* ---- timeouts ---------------------------------------------------------------- */

/* QUIT's reply, when ferryd says goodbye. */
#define SESSION_QUIT_TIMEOUT_MS 2000

static void session_arm(struct outbound_session *s)
{
	const struct outbound_settings *set = s->ob->settings;
	uint32_t ms = set->command_timeout_ms;
	if (s->quitting) {
		conn_set_timeout(&s->conn, SESSION_QUIT_TIMEOUT_MS);
		return;
	}
	switch (smtp_client_phase(&s->client)) {
	case SMTP_CLIENT_PHASE_GREETING:
		ms = set->greeting_timeout_ms;
		break;
	case SMTP_CLIENT_PHASE_DATA_INIT:
		ms = set->data_init_timeout_ms;
		break;
	case SMTP_CLIENT_PHASE_BODY:
		ms = set->data_block_timeout_ms;
		break;
	case SMTP_CLIENT_PHASE_DATA_DONE:
		ms = set->data_done_timeout_ms;
		break;
	case SMTP_CLIENT_PHASE_IDLE:
		ms = set->reuse_time_ms;
		break;
	default:
		break;
	}
	conn_set_timeout(&s->conn, ms);
}

/* ---- the transaction ------------------------------------------------------------- */

static void session_body_close(struct outbound_session *s)
{
	if (s->body_open) {
		queue_body_close(&s->body);
		s->body_open = false;
	}
}

/* The recipients in hand get their outcomes, the body let go of first
 * (the last outcome may end the message): a recipient refused at RCPT its
 * own reply, every other one this one. */
static void session_end_transaction(struct outbound_session *s, int code, const char *status,
				    const char *reply)
{
	if (queue_body_busy(&s->body)) {
		s->ending.set = true;
		s->ending.code = code;
		snprintf(s->ending.status, sizeof(s->ending.status), "%s", status ? status : "");
		snprintf(s->ending.reply, sizeof(s->ending.reply), "%s", reply);
		return; /* session_body_run finishes it */
	}
	session_body_close(s);
	for (unsigned i = 0; i < s->nrcpts; i++) {
		struct smtp_reply *own = s->refused[i];
		if (s->rcpts[i] != NULL) {
			if (own != NULL)
				outbound_outcome(s->rcpt_dests[i], s->rcpts[i], own->code,
						 own->status, own->text, s->relay);
			else
				outbound_outcome(s->rcpt_dests[i], s->rcpts[i], code, status, reply,
						 s->relay);
		}
		s->rcpts[i] = NULL;
		free(own);
		s->refused[i] = NULL;
	}
	/* Riders' destinations may have nothing left now (not before: the
	 * loop above still used them). */
	for (unsigned i = 0; i < s->nrcpts; i++)
		if (s->rcpt_dests[i] == s->dest)
			s->rcpt_dests[i] = NULL; /* the session's own: it holds it */
	outbound_settle(s->rcpt_dests, s->nrcpts);
	s->nrcpts = 0;
	s->body_ended = false;
}

static void session_free(struct outbound_session *s)
{
	if (s->refused != NULL)
		for (size_t i = 0; i < s->capacity; i++)
			free(s->refused[i]);
	queue_body_release(&s->body);
	buf_release(&s->out);
	free(s->rcpts);
	free(s->rcpt_addresses);
	free(s->rcpt_lens);
	free(s->refused);
	free(s->rcpt_dests);
	free(s);
}

static int session_alloc_transaction(struct outbound_session *s, size_t max)
{
	s->rcpts = calloc(max, sizeof(*s->rcpts));
	s->rcpt_addresses = calloc(max, sizeof(*s->rcpt_addresses));
	s->rcpt_lens = calloc(max, sizeof(*s->rcpt_lens));
	s->refused = calloc(max, sizeof(*s->refused));
	s->rcpt_dests = calloc(max, sizeof(*s->rcpt_dests));
	s->capacity = max;
	return s->rcpts && s->rcpt_addresses && s->rcpt_lens && s->refused && s->rcpt_dests
		       ? 0
		       : -ENOMEM;
}

static void session_go_idle(struct outbound_session *s)
{
	if (list_linked(&s->idle_link) || s->quitting)
		return;
	list_insert_tail(&s->dest->idle, &s->idle_link);
	if (s->draining || s->ob->settings->reuse_time_ms == 0)
		outbound_session_drain(s); /* QUIT now */
}

/* READY: the next message for the destination, or idle. */
static void session_next(struct outbound_session *s)
{
	for (;;) {
		size_t n = s->draining ? 0 : outbound_take(s->dest, s->rcpts, s->capacity);
		if (n == 0) {
			session_go_idle(s);
			return;
		}
		for (size_t i = 0; i < n; i++)
			s->rcpt_dests[i] = s->dest;
		/* The message's recipients for other domains on this worker
		 * whose next hop is this connection's go in this transaction. */
		n += outbound_take_riders(s->dest, s->rcpts[0], &s->target, s->rcpts + n,
					  s->rcpt_dests + n, s->capacity - n);
		s->nrcpts = (unsigned)n;
		sched_rcpt_message(s->rcpts[0], &s->info);
		for (size_t i = 0; i < n; i++)
			s->rcpt_addresses[i] = sched_rcpt_address(s->rcpts[i], &s->rcpt_lens[i]);
		s->msg = (struct smtp_client_message){
			.sender = s->info.sender,
			.sender_len = s->info.sender_len,
			.rcpts = s->rcpt_addresses,
			.rcpt_lens = s->rcpt_lens,
			.nrcpts = s->nrcpts,
			.size = s->info.size,
			.eightbit = s->info.eightbit,
			.smtputf8 = s->info.smtputf8,
		};
		int r = smtp_client_send(&s->client, &s->msg);
		if (r == 0) {
			conn_flush(&s->conn);
			return;
		}
		/* Refused before a byte was sent: its outcome, then the next. */
		if (r == -EMSGSIZE)
			session_end_transaction(s, 552, "5.3.4",
						"message size exceeds the next hop's SIZE limit");
		else if (r == -EPROTONOSUPPORT)
			session_end_transaction(s, 553, "5.6.7",
						"the message needs SMTPUTF8, which the next hop "
						"does not offer");
		else if (r == -EINVAL)
			session_end_transaction(s, 501, "5.1.3",
						"an address holds a character SMTP cannot carry");
		else
			session_end_transaction(s, 451, "4.3.0",
						"out of memory sending the message");
	}
}

bool outbound_session_idle_at(const struct outbound_session *s, const union dns_address *a)
{
	return list_linked(&s->idle_link) && !s->quitting && dns_address_equal(&s->target, a);
}

void outbound_session_adopt(struct outbound_session *s, struct outbound_dest *to)
{
	struct outbound_dest *from = s->dest;
	list_remove(&s->idle_link);
	from->sessions--;
	to->sessions++;
	s->dest = to;
	outbound_session_from(from);
	session_next(s);
	session_arm(s);
}

void outbound_session_wake(struct outbound_session *s)
{
	list_remove(&s->idle_link);
	session_next(s);
	session_arm(s);
}

/* ---- the body ------------------------------------------------------------------------ */

static void session_body_more(struct outbound_session *s);
static void session_release(struct outbound_session *s);

static void session_body_run(struct queue_body_reader *rd, int status, const char *data, size_t len)
{
	struct outbound_session *s = rd->user;
	if (s->ending.set) {
		/* The transaction ended while this read was in flight. */
		s->ending.set = false;
		session_end_transaction(s, s->ending.code, s->ending.status, s->ending.reply);
	}
	if (s->conn.state == CONN_CLOSED) {
		session_release(s); /* it closed while the read was in flight */
		return;
	}
	if (s->conn.state != CONN_OPEN || !s->body_open)
		return; /* closing, or no longer sending this body */
	if (status < 0) {
		/* The spool could not be read: nothing sent can end the
		 * message now, so the connection goes, the recipients wait. */
		session_end_transaction(s, 451, "4.3.0", "the queued message could not be read");
		conn_abort(&s->conn);
		return;
	}
	smtp_client_body(&s->client, data, len);
	conn_flush(&s->conn);
	session_body_more(s);
}

/* Read on while what is queued for the server is small; the server's
 * reading (sent()) calls again. */
static void session_body_more(struct outbound_session *s)
{
	if (!s->body_open || s->body_ended || queue_body_busy(&s->body) ||
	    s->conn.state != CONN_OPEN || smtp_client_phase(&s->client) != SMTP_CLIENT_PHASE_BODY ||
	    conn_output_queued(&s->conn) >= SESSION_BODY_AHEAD)
		return;
	int r = queue_body_read(&s->body);
	if (r == 1) {
		s->body_ended = true;
		smtp_client_body_end(&s->client);
		conn_flush(&s->conn);
		session_arm(s);
	} else if (r == -EMFILE) {
		conn_alarm(&s->conn, SESSION_PIN_RETRY_MS);
	} else if (r < 0) {
		session_end_transaction(s, 451, "4.3.0", "the queued message could not be read");
		conn_abort(&s->conn);
	}
}

static void session_body_start(struct outbound_session *s)
{
	int r = queue_body_open(&s->body, s->ob->queue, s->rcpts[0], session_body_run, s);
	if (r == -EAGAIN) {
		conn_alarm(&s->conn, SESSION_PIN_RETRY_MS);
		return;
	}
	if (r < 0) {
		session_end_transaction(s, 451, "4.3.0", "out of memory reading the message");
		conn_abort(&s->conn);
		return;
	}
	s->body_open = true;
	session_body_more(s);
}

/* ---- the conversation's events ------------------------------------------------------ */

static struct outbound_session *session_of_client(struct smtp_client *c)
{
	return container_of(c, struct outbound_session, client);
}

static void session_ready(struct smtp_client *c)
{
	struct outbound_session *s = session_of_client(c);
	if (!s->greeted) {
		s->greeted = true;
		outbound_connect_result(s->dest, true, true, NULL);
	}
	session_next(s);
}

static void session_rcpt(struct smtp_client *c, unsigned i, const struct smtp_reply *r)
{
	struct outbound_session *s = session_of_client(c);
	if (r->code >= 200 && r->code < 300)
		return;
	/* Its outcome comes with the others', at the transaction's end. */
	s->refused[i] = malloc(sizeof(*r));
	if (s->refused[i] != NULL)
		*s->refused[i] = *r;
	/* else it takes the transaction's reply: tried again, at worst */
}

static void session_body(struct smtp_client *c)
{
	session_body_start(session_of_client(c));
}

static void session_message(struct smtp_client *c, unsigned accepted, const struct smtp_reply *r)
{
	struct outbound_session *s = session_of_client(c);
	(void)accepted; /* those refused at RCPT have their own reply */
	session_end_transaction(s, r->code, r->status, r->text);
	smtp_client_next(c); /* ready() at once when the dot was answered */
	conn_flush(&s->conn);
}

static void session_failed(struct smtp_client *c, const struct smtp_reply *r)
{
	struct outbound_session *s = session_of_client(c);
	if (list_linked(&s->idle_link))
		list_remove(&s->idle_link); /* no work may reach it now */
	const char *why = r->text[0] ? r->text : "the connection failed";
	if (!s->greeted && !s->failed) {
		s->failed = true;
		outbound_connect_result(s->dest, false, true, why);
	}
	/* A conversation that broke defers what it held, whatever the code:
	 * a 5xx greeting or a protocol error says nothing of the recipients. */
	int code = r->code >= 400 && r->code < 500 ? r->code : 0;
	session_end_transaction(s, code, r->status, why);
	if (s->greeted)
		log_event(LOG_LEVEL_INFO, "event=outbound_closed relay=%s reason=\"%s\"", s->relay,
			  why);
	conn_close(&s->conn);
}

static void session_closed(struct smtp_client *c)
{
	struct outbound_session *s = session_of_client(c);
	if (list_linked(&s->idle_link))
		list_remove(&s->idle_link);
	conn_close(&s->conn);
}

static const struct smtp_client_events session_client_events = {
	.ready = session_ready,
	.rcpt = session_rcpt,
	.body = session_body,
	.message = session_message,
	.failed = session_failed,
	.closed = session_closed,
};

/* ---- the conn's events -------------------------------------------------------------- */

static struct outbound_session *session_of_conn(struct conn *c)
{
	return container_of(c, struct outbound_session, conn);
}

static size_t session_input(struct conn *c, const char *data, size_t len)
{
	struct outbound_session *s = session_of_conn(c);
	size_t used = smtp_client_input(&s->client, data, len);
	conn_flush(c);
	/* Idle means ready for work: a reply while idle ended that. */
	if (list_linked(&s->idle_link) && smtp_client_phase(&s->client) != SMTP_CLIENT_PHASE_IDLE)
		list_remove(&s->idle_link);
	if (c->state == CONN_OPEN)
		session_arm(s);
	return used < len ? len : used; /* after failed()/closed(): the rest is dropped */
}

static void session_input_end(struct conn *c)
{
	struct outbound_session *s = session_of_conn(c);
	if (list_linked(&s->idle_link))
		list_remove(&s->idle_link);
	smtp_client_lost(&s->client, "the server closed the connection");
	conn_close(c);
}

static void session_timeout(struct conn *c)
{
	struct outbound_session *s = session_of_conn(c);
	enum smtp_client_phase phase = smtp_client_phase(&s->client);
	if (phase == SMTP_CLIENT_PHASE_IDLE) {
		/* Nothing came for reuse_time: say goodbye. */
		if (list_linked(&s->idle_link))
			list_remove(&s->idle_link);
		s->quitting = true;
		smtp_client_quit(&s->client);
		conn_flush(c);
		conn_set_timeout(c, SESSION_QUIT_TIMEOUT_MS);
		return;
	}
	static const char *const waits[] = {
		[SMTP_CLIENT_PHASE_GREETING] = "timeout waiting for the greeting",
		[SMTP_CLIENT_PHASE_COMMAND] = "timeout waiting for a reply",
		[SMTP_CLIENT_PHASE_DATA_INIT] = "timeout waiting for the reply to DATA",
		[SMTP_CLIENT_PHASE_BODY] = "timeout sending the message",
		[SMTP_CLIENT_PHASE_DATA_DONE] = "timeout waiting for the reply to the message",
	};
	const char *why =
		phase < sizeof(waits) / sizeof(waits[0]) && waits[phase] ? waits[phase] : "timeout";
	smtp_client_lost(&s->client, why);
	conn_abort(c);
}

static void session_alarm(struct conn *c)
{
	struct outbound_session *s = session_of_conn(c);
	if (smtp_client_phase(&s->client) != SMTP_CLIENT_PHASE_BODY)
		return;
	if (!s->body_open)
		session_body_start(s);
	else
		session_body_more(s);
}

static void session_sent(struct conn *c)
{
	struct outbound_session *s = session_of_conn(c);
	if (s->body_open) {
		conn_touch(c); /* the server reads: the block timeout starts again */
		session_body_more(s);
	}
}

static void session_connected(struct conn *c, int status)
{
	struct outbound_session *s = session_of_conn(c);
	if (status == 0) {
		session_arm(s);
		return;
	}
	char why[128];
	snprintf(why, sizeof(why), "connect to %s: %s", s->relay, strerror(-status));
	s->failed = true;
	outbound_connect_result(s->dest, false, true, why);
}

static void session_conn_failed(struct conn *c, enum conn_failure what, int error)
{
	struct outbound_session *s = session_of_conn(c);
	(void)what;
	if (list_linked(&s->idle_link))
		list_remove(&s->idle_link);
	char why[128];
	snprintf(why, sizeof(why), "lost connection with %s: %s", s->relay, strerror(error));
	smtp_client_lost(&s->client, why);
}

static void session_conn_closed(struct conn *c)
{
	struct outbound_session *s = session_of_conn(c);
	if (queue_body_busy(&s->body))
		return; /* the read's completion releases it */
	session_release(s);
}

/* The conn is closed and no read is in flight: free the session. */
static void session_release(struct outbound_session *s)
{
	/* What the conversation never ended goes back untried (its end was
	 * never heard: failed() defers what a broken conversation held). */
	session_body_close(s);
	for (unsigned i = 0; i < s->nrcpts; i++)
		if (s->rcpts[i] != NULL)
			sched_return(s->ob->queue, s->rcpts[i]);
	s->nrcpts = 0; /* session_free frees what they were refused with */
	if (list_linked(&s->idle_link))
		list_remove(&s->idle_link);
	list_remove(&s->all_link);
	struct outbound_dest *d = s->dest;
	bool failed = s->failed;
	session_free(s);
	outbound_session_gone(d, failed);
}

static const struct conn_handler session_conn_handler = {
	.input = session_input,
	.input_end = session_input_end,
	.timeout = session_timeout,
	.alarm = session_alarm,
	.connected = session_connected,
	.sent = session_sent,
	.failed = session_conn_failed,
	.closed = session_conn_closed,
};

/* ---- start, drain --------------------------------------------------------------------- */

static void session_describe(struct outbound_session *s, const struct outbound_target *t)
{
	char address[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (t->addr.sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &t->addr.in.sin_addr, address, sizeof(address));
		port = ntohs(t->addr.in.sin_port);
	} else if (t->addr.sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &t->addr.in6.sin6_addr, address, sizeof(address));
		port = ntohs(t->addr.in6.sin6_port);
	}
	snprintf(s->relay, sizeof(s->relay), "%s[%s]:%u", t->host, address, port);
}

int outbound_session_start(struct outbound_dest *d, const struct outbound_target *t)
{
	struct outbound *ob = d->ob;
	const struct outbound_settings *set = ob->settings;
	struct outbound_session *s = calloc(1, sizeof(*s));
	if (s == NULL || session_alloc_transaction(s, set->rcpts_per_transaction) != 0)
		goto fail;
	s->dest = d;
	s->ob = ob;
	list_node_init(&s->idle_link);
	session_describe(s, t);
	s->target = t->addr;
	smtp_client_init(&s->client, &session_client_events, s, &s->out, set->helo_name);
	struct conn_setup setup = {
		.worker = ob->worker,
		.handler = &session_conn_handler,
		.output = &s->out,
	};
	struct conn_target target = {
		.address = &t->addr.sa,
		.address_len = dns_address_len(&t->addr),
		.source = set->source_len ? &set->source.sa : NULL,
		.source_len = set->source_len,
		.timeout_ms = set->connect_timeout_ms,
	};
	int r = conn_connect(&s->conn, &setup, &target);
	if (r != 0) {
		session_free(s);
		return r;
	}
	list_insert_tail(&ob->sessions, &s->all_link);
	return 0;
fail:
	if (s != NULL) {
		s->ob = ob;
		session_free(s);
	}
	return -ENOMEM;
}

void outbound_session_drain(struct outbound_session *s)
{
	s->draining = true;
	if (s->quitting || s->conn.state >= CONN_CLOSING)
		return;
	enum smtp_client_phase phase = smtp_client_phase(&s->client);
	if (phase == SMTP_CLIENT_PHASE_IDLE) {
		s->quitting = true;
		if (list_linked(&s->idle_link))
			list_remove(&s->idle_link);
		smtp_client_quit(&s->client);
		conn_flush(&s->conn);
		conn_set_timeout(&s->conn, SESSION_QUIT_TIMEOUT_MS);
	} else if (phase == SMTP_CLIENT_PHASE_GREETING || s->conn.state == CONN_CONNECTING) {
		conn_abort(&s->conn);
	}
	/* In a transaction: it ends, then session_next() finds draining. */
}

void outbound_session_retire(struct outbound_session *s)
{
	s->draining = true;
	if (list_linked(&s->idle_link))
		outbound_session_drain(s);
	/* Connecting or greeting: once READY, session_next() finds it
	 * draining; in a transaction: it ends, then the same. */
}

const struct outbound_dest *outbound_session_dest(const struct outbound_session *s)
{
	return s->dest;
}

void outbound_session_cut(struct outbound_session *s)
{
	if (list_linked(&s->idle_link))
		list_remove(&s->idle_link);
	if (s->conn.state < CONN_TEARDOWN)
		conn_abort(&s->conn); /* else it is going already (a read keeps it) */
}
