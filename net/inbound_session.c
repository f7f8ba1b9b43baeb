#include "net/inbound_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "net/outbound.h"
#include "net/server.h"

/* A refused connection's 421 has this long to leave. */
#define INBOUND_REFUSAL_TIMEOUT_MS 10000

static void inbound_session_wake(struct smtp_session *ss);

/* A domain's quota, by the worker's current generation: its counts are
 * the live ones (a session's own generation may be older). */
static bool inbound_session_queue_full(struct smtp_session *ss, const char *domain, size_t len)
{
	struct inbound_session *s = container_of(ss, struct inbound_session, session);
	const struct outbound_settings *delivery = s->owner->gen->delivery;
	return delivery != NULL && outbound_queue_full(delivery, domain, len);
}

static const struct smtp_session_hooks inbound_session_hooks = {
	.wake = inbound_session_wake,
	.queue_full = inbound_session_queue_full,
};

static struct inbound_session *inbound_session_of(struct conn *c)
{
	return container_of(c, struct inbound_session, conn);
}

/* While the server shuts down, a session inside a transaction must make
 * progress within this much time, again and again; silence for this long
 * ends any session, and a closing one's last words have this long. */
#define INBOUND_SHUTDOWN_PROGRESS_MS 2000

static uint32_t inbound_session_timeout_ms(const struct inbound_session *s)
{
	const struct config *cfg = &s->gen->cfg;
	uint32_t t =
		smtp_session_in_data(&s->session) ? cfg->data_timeout_ms : cfg->idle_timeout_ms;
	return s->stopping && t > INBOUND_SHUTDOWN_PROGRESS_MS ? INBOUND_SHUTDOWN_PROGRESS_MS : t;
}

/* ---- deadlines that bytes do not extend -------------------------------------- */

/* A body's rate is checked at most this often. */
#define INBOUND_RATE_CHECK_MS 1000
/* The alarm is never set further ahead than this. */
#define INBOUND_ALARM_MAX_MS 86400000u

/* When a body that has brought `size` octets so far falls below the
 * minimum rate, if no more come: never before data_timeout. */
static uint64_t inbound_session_rate_deadline(const struct inbound_session *s)
{
	const struct config *cfg = &s->gen->cfg;
	uint64_t size = s->session.data.size;
	uint64_t covered = size * 1000 / cfg->min_data_rate + 1; /* ms the octets pay for */
	uint64_t due = s->body_started_ms +
		       (covered > cfg->data_timeout_ms ? covered : cfg->data_timeout_ms);
	uint64_t soonest = s->conn.worker->now_ms + INBOUND_RATE_CHECK_MS;
	return due > soonest ? due : soonest;
}

/* Is the body below the minimum rate, counted over its whole time? */
static bool inbound_session_body_too_slow(const struct inbound_session *s)
{
	const struct config *cfg = &s->gen->cfg;
	uint64_t elapsed = s->conn.worker->now_ms - s->body_started_ms;
	return elapsed >= cfg->data_timeout_ms &&
	       s->session.data.size * 1000 < (uint64_t)cfg->min_data_rate * elapsed;
}

/* A body under the rate check: received, not waiting for the store. */
static bool inbound_session_body_timed(const struct inbound_session *s)
{
	return s->body_started_ms != 0 && s->wait_started_ms == 0 && s->gen->cfg.min_data_rate > 0;
}

/* When the next deadline falls due, or 0 when none runs. */
static uint64_t inbound_session_deadline(const struct inbound_session *s)
{
	const struct config *cfg = &s->gen->cfg;
	uint64_t due = 0;
	if (s->line_started_ms != 0)
		due = s->line_started_ms + cfg->command_deadline_ms;
	else if (inbound_session_body_timed(s))
		due = inbound_session_rate_deadline(s);
	if (s->progress_ms != 0) {
		uint64_t progress_due = s->progress_ms + INBOUND_SHUTDOWN_PROGRESS_MS;
		if (due == 0 || progress_due < due)
			due = progress_due;
	}
	return due;
}

/* The alarm is set for the next deadline, or earlier: a deadline that
 * moved away is checked again when the alarm fires. */
static void inbound_session_arm_deadline(struct inbound_session *s)
{
	uint64_t due = inbound_session_deadline(s);
	if (due == 0 || (s->alarm_due_ms != 0 && s->alarm_due_ms <= due))
		return;
	uint64_t now = s->conn.worker->now_ms;
	uint64_t delay = due > now ? due - now : 0;
	/* A big body at a low rate may pay for days: look again in one. */
	conn_alarm(&s->conn, delay < INBOUND_ALARM_MAX_MS ? (uint32_t)delay : INBOUND_ALARM_MAX_MS);
	s->alarm_due_ms = due;
}

/* The command line in progress began with this input, unless one was in
 * progress before it and no line ended in it. */
static void inbound_session_track_line(struct inbound_session *s, const char *data, size_t used)
{
	if (!smtp_session_in_command_line(&s->session))
		s->line_started_ms = 0;
	else if (s->line_started_ms == 0 || memchr(data, '\n', used) != NULL)
		s->line_started_ms = s->conn.worker->now_ms;
}

/* A body's time runs from its DATA (a new DATA is a new body) and stops
 * while the session waits for the store: that is not the client's doing. */
static void inbound_session_track_body(struct inbound_session *s)
{
	uint64_t now = s->conn.worker->now_ms;
	if (!smtp_session_in_data(&s->session)) {
		s->body_started_ms = 0;
		s->wait_started_ms = 0;
		return;
	}
	if (s->body_started_ms == 0 || s->body_command != s->session.commands) {
		s->body_started_ms = now;
		s->body_command = s->session.commands;
		s->wait_started_ms = 0;
	}
	if (s->session.waiting && s->wait_started_ms == 0) {
		s->wait_started_ms = now;
	} else if (!s->session.waiting && s->wait_started_ms != 0) {
		s->body_started_ms += now - s->wait_started_ms;
		s->wait_started_ms = 0;
	}
}

/* Shutting down: progress is seen from here on. */
static void inbound_session_progress_mark(struct inbound_session *s)
{
	s->progress_ms = s->conn.worker->now_ms;
	s->progress_commands = s->session.commands;
	s->progress_octets = s->session.data.size;
}

/*
 * Shutting down, a session may finish its transaction as long as it makes
 * progress: since the last look, a command, or (inside a body) octets at
 * min_data_rate, at least one; a session waiting for the store makes the
 * store's. One that makes none is closed now, without its message.
 */
static void inbound_session_check_progress(struct inbound_session *s)
{
	const struct config *cfg = &s->gen->cfg;
	uint64_t elapsed = s->conn.worker->now_ms - s->progress_ms;
	uint64_t needed = (uint64_t)cfg->min_data_rate * elapsed / 1000;
	const struct smtp_session *ss = &s->session;
	bool progress = ss->state == SMTP_STATE_COMMIT || ss->waiting ||
			ss->commands != s->progress_commands ||
			(smtp_session_in_data(ss) &&
			 ss->data.size - s->progress_octets >= (needed > 0 ? needed : 1));
	if (progress) {
		inbound_session_progress_mark(s);
		return;
	}
	log_event(LOG_LEVEL_INFO, "event=shutdown_stalled session=%s client=%s in_data=%d", ss->id,
		  ss->client_address, smtp_session_in_data(ss));
	s->progress_ms = 0;
	smtp_session_shutdown_now(&s->session);
}

/* The alarm: a deadline may have passed. */
static void inbound_session_check_deadlines(struct inbound_session *s)
{
	const struct config *cfg = &s->gen->cfg;
	uint64_t now = s->conn.worker->now_ms;
	s->alarm_due_ms = 0;
	if (s->line_started_ms != 0 && now >= s->line_started_ms + cfg->command_deadline_ms) {
		log_event(LOG_LEVEL_INFO,
			  "event=timeout session=%s client=%s in_data=0 limit=command_deadline",
			  s->session.id, s->session.client_address);
		s->line_started_ms = 0;
		smtp_session_timeout(&s->session);
	} else if (inbound_session_body_timed(s) && inbound_session_body_too_slow(s)) {
		log_event(
			LOG_LEVEL_INFO,
			"event=data_rate_too_low session=%s client=%s octets=%llu elapsed_ms=%llu "
			"min_rate=%u",
			s->session.id, s->session.client_address,
			(unsigned long long)s->session.data.size,
			(unsigned long long)(now - s->body_started_ms), cfg->min_data_rate);
		s->body_started_ms = 0;
		smtp_session_data_too_slow(&s->session, cfg->min_data_rate);
	}
	if (s->progress_ms != 0 && now >= s->progress_ms + INBOUND_SHUTDOWN_PROGRESS_MS &&
	    s->session.state != SMTP_STATE_CLOSED)
		inbound_session_check_progress(s);
}

/*
 * After anything the session did: its replies go out, the timeout that
 * applies now is the conn's (a session that has just entered DATA may be
 * under a shorter one), so is the next deadline, and a session with
 * nothing more to do is closed once its replies are sent.
 */
static void inbound_session_settle(struct inbound_session *s)
{
	struct conn *c = &s->conn;
	conn_flush(c);
	if (c->state != CONN_OPEN)
		return;
	if (s->greeted) {
		conn_set_timeout(c, inbound_session_timeout_ms(s));
		inbound_session_track_body(s);
		inbound_session_arm_deadline(s);
	}
	if (s->session.want_close) {
		conn_close(c);
	} else if (s->input_ended && !s->session.waiting) {
		/* The client sent EOF and the session has acted on all it sent:
		 * once the replies are out, nothing more can happen here. */
		if (smtp_session_in_transaction(&s->session))
			log_event(LOG_LEVEL_INFO,
				  "event=lost_connection session=%s client=%s state=transaction",
				  s->session.id, s->session.client_address);
		conn_close(c);
	}
}

static void inbound_session_greet(struct inbound_session *s)
{
	s->greeted = true;
	smtp_session_greet(&s->session);
	conn_touch(&s->conn); /* the idle timeout runs from the banner on */
	inbound_session_settle(s);
}

/* ---- the conn's callbacks ---------------------------------------------------- */

static size_t inbound_session_input(struct conn *c, const char *data, size_t len)
{
	struct inbound_session *s = inbound_session_of(c);
	if (!s->greeted) {
		/* Once: later bytes of the same bot add nothing. */
		if (s->session.state != SMTP_STATE_CLOSED) {
			smtp_session_early_talker(&s->session);
			log_event(LOG_LEVEL_INFO, "event=early_talker session=%s client=%s",
				  s->session.id, s->session.client_address);
		}
		inbound_session_settle(s);
		return len;
	}
	if (conn_output_full(c))
		return 0; /* the client reads its replies first */
	/* No command past the output cap: what is queued beside `out` is
	 * the conn's, being sent. */
	size_t sending = conn_output_queued(c) - buf_len(&s->session.out);
	s->session.out_max = c->output_max - sending;
	size_t used = smtp_session_feed(&s->session, data, len);
	inbound_session_track_line(s, data, used);
	if (s->session.state == SMTP_STATE_CLOSED)
		used = len; /* nothing more will be read */
	inbound_session_settle(s);
	/* Fewer than len: the session waits for the store, which wakes it,
	 * or for the client to read its replies (the conn sees that). */
	return used;
}

static void inbound_session_input_end(struct conn *c)
{
	struct inbound_session *s = inbound_session_of(c);
	s->input_ended = true;
	inbound_session_settle(s);
}

static void inbound_session_timeout(struct conn *c)
{
	struct inbound_session *s = inbound_session_of(c);
	if (s->session.state == SMTP_STATE_COMMIT || s->session.waiting) {
		/* Waiting for the disk is not the client's fault. */
		conn_touch(c);
		return;
	}
	if (s->stopping) {
		/* Silence while we shut down: no progress. */
		inbound_session_check_progress(s);
		inbound_session_settle(s);
		return;
	}
	bool in_data = smtp_session_in_data(&s->session);
	log_event(LOG_LEVEL_INFO, "event=timeout session=%s client=%s in_data=%d limit=%s",
		  s->session.id, s->session.client_address, in_data,
		  in_data ? "data_timeout" : "idle_timeout");
	smtp_session_timeout(&s->session);
	inbound_session_settle(s);
}

/* The greeting delay passed (listen-before-speaking is over), or once
 * greeted, a deadline may have. */
static void inbound_session_alarm(struct conn *c)
{
	struct inbound_session *s = inbound_session_of(c);
	if (!s->greeted) {
		inbound_session_greet(s);
		return;
	}
	inbound_session_check_deadlines(s);
	inbound_session_settle(s);
}

static void inbound_session_failed(struct conn *c, enum conn_failure what, int error)
{
	struct inbound_session *s = inbound_session_of(c);
	if (smtp_session_in_transaction(&s->session) &&
	    (what == CONN_FAILURE_RECV || what == CONN_FAILURE_SEND)) {
		/* A reset mid-transaction loses it, as an EOF does; a body
		 * already complete still becomes durable, unacknowledged. */
		log_event(LOG_LEVEL_INFO,
			  "event=lost_connection session=%s client=%s state=%s error=\"%s\"",
			  s->session.id, s->session.client_address,
			  s->session.state == SMTP_STATE_COMMIT ? "commit" : "transaction",
			  strerror(error));
		return;
	}
	switch (what) {
	case CONN_FAILURE_SEND:
		log_event(LOG_LEVEL_INFO, "event=send_error session=%s error=\"%s\"", s->session.id,
			  strerror(error));
		break;
	case CONN_FAILURE_INPUT_LOST:
		log_event(LOG_LEVEL_ERROR,
			  "event=input_lost session=%s client=%s note=\"out of memory holding "
			  "input; connection closed, nothing in it was acknowledged\"",
			  s->session.id, s->session.client_address);
		break;
	case CONN_FAILURE_RECV:
	case CONN_FAILURE_TRANSPORT:
	default:
		/* The socket broke: nothing more can be said. */
		log_event(LOG_LEVEL_INFO, "event=recv_error session=%s error=\"%s\"", s->session.id,
			  strerror(error));
		break;
	}
}

static void inbound_session_closed(struct conn *c)
{
	struct inbound_session *s = inbound_session_of(c);
	struct net_worker *owner = s->owner;
	log_event(LOG_LEVEL_INFO, "event=disconnect session=%s client=%s commands=%u messages=%u",
		  s->session.id, s->session.client_address, s->session.commands,
		  s->session.messages);
	smtp_session_destroy(&s->session);
	net_server_release(owner->server, s->counted, s->client_slot, conn_peer(c));
	net_worker_session_removed(owner, s);
	net_generation_drop(s->gen);
	free(s);
}

static const struct conn_handler inbound_session_conn_handler = {
	.input = inbound_session_input,
	.input_end = inbound_session_input_end,
	.timeout = inbound_session_timeout,
	.alarm = inbound_session_alarm,
	.failed = inbound_session_failed,
	.closed = inbound_session_closed,
};

/* The store committed the message or has room again: send the replies,
 * feed what the client pipelined meanwhile. */
static void inbound_session_wake(struct smtp_session *ss)
{
	struct inbound_session *s = container_of(ss, struct inbound_session, session);
	if (s->conn.state != CONN_OPEN) {
		conn_flush(&s->conn); /* closing: the last replies still go out */
		return;
	}
	conn_touch(&s->conn);
	conn_resume_input(&s->conn);
	inbound_session_settle(s);
}

/* ---- birth and death ---------------------------------------------------------- */

static void inbound_session_peer_text(const struct sockaddr *peer, char *out, size_t size)
{
	const void *addr = NULL;
	if (peer->sa_family == AF_INET)
		addr = &((const struct sockaddr_in *)peer)->sin_addr;
	else if (peer->sa_family == AF_INET6)
		addr = &((const struct sockaddr_in6 *)peer)->sin6_addr;
	if (addr == NULL || inet_ntop(peer->sa_family, addr, out, (socklen_t)size) == NULL)
		snprintf(out, size, "unknown");
}

void inbound_session_start(struct net_worker *owner, int fd, const struct sockaddr *peer,
			   socklen_t peer_len, const char *refusal, bool counted,
			   uint32_t client_slot)
{
	struct net_server *srv = owner->server;
	struct net_generation *gen = owner->gen;
	const struct config *cfg = &gen->cfg;
	struct inbound_session *s = calloc(1, sizeof(*s));
	char peer_text[INET6_ADDRSTRLEN];
	char id[17];
	inbound_session_peer_text(peer, peer_text, sizeof(peer_text));
	snprintf(id, sizeof(id), "%02x%014llx", owner->index & 0xff,
		 (unsigned long long)++owner->sessions_started);
	if (s == NULL ||
	    smtp_session_init(&s->session, &gen->inbound->settings, &inbound_session_hooks,
			      owner->queue, peer, peer_text, id) != 0) {
		close(fd);
		net_server_release(srv, counted, client_slot, peer);
		free(s);
		return;
	}
	s->owner = owner;
	s->gen = net_generation_hold(gen);
	s->session.counters = &owner->smtp;
	s->counted = counted;
	s->client_slot = client_slot;
	net_worker_session_added(owner, s);
	struct conn_setup setup = {
		.worker = owner->worker,
		.handler = &inbound_session_conn_handler,
		.output = &s->session.out,
		.held_max = (size_t)cfg->max_input_held,
		.output_max = (size_t)cfg->max_output_queue,
		/* Replies are small: the kernel need not hold megabytes of them
		 * for a client that does not read (it would, autotuned). Half,
		 * since the kernel doubles what it is given. */
		.send_buffer = (size_t)cfg->max_output_queue / 2,
	};
	conn_accept(&s->conn, &setup, fd, peer, peer_len);

	log_event(LOG_LEVEL_INFO, "event=connect session=%s client=%s trusted=%d", id,
		  s->session.client_address, s->session.client_trusted);
	if (refusal != NULL) {
		log_event(LOG_LEVEL_INFO,
			  "event=connection_refused session=%s client=%s reply=\"%s\"", id,
			  s->session.client_address, refusal);
		s->greeted = true;
		smtp_session_refuse(&s->session, refusal);
		conn_set_timeout(&s->conn, INBOUND_REFUSAL_TIMEOUT_MS);
		conn_close(&s->conn);
		return;
	}
	uint32_t delay = cfg->greeting_delay_ms;
	if (delay == 0)
		inbound_session_greet(s);
	else
		conn_alarm(&s->conn, delay); /* listen before speaking: a talker is a bot */
}

void inbound_session_shutdown(struct inbound_session *s)
{
	struct conn *c = &s->conn;
	if (c->state != CONN_OPEN)
		return;
	/* From now on every session has a short time, and a session inside a
	 * transaction must keep making progress in it. */
	s->stopping = true;
	conn_touch(c);
	if (!s->greeted) {
		/* No banner, so no transaction: the 421 below goes at once. */
		s->greeted = true;
		conn_alarm_cancel(c);
	}
	smtp_session_shutdown(&s->session);
	if (smtp_session_in_transaction(&s->session))
		inbound_session_progress_mark(s);
	conn_set_timeout(c, inbound_session_timeout_ms(s));
	inbound_session_settle(s);
}

void inbound_session_force_close(struct inbound_session *s)
{
	if (s->conn.state >= CONN_TEARDOWN)
		return;
	log_event(LOG_LEVEL_WARN, "event=shutdown_deadline session=%s client=%s", s->session.id,
		  s->session.client_address);
	conn_abort(&s->conn);
}
