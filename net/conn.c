#include "net/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/list.h"
#include "core/log.h"
#include "net/server.h"

static void conn_recv_complete(struct worker_op *op, const struct io_uring_cqe *cqe);
static void conn_send_complete(struct worker_op *op, const struct io_uring_cqe *cqe);
static void conn_timer_fire(struct timer *t);
static void conn_session_wake(struct smtp_session *s);
static void conn_timer_tighten(struct conn *c);

static const struct smtp_session_hooks conn_session_hooks = {.wake = conn_session_wake};

#define CONN_OF(ptr, member) ((struct conn *)((char *)(ptr)-offsetof(struct conn, member)))

static struct worker *conn_worker(const struct conn *c)
{
	return c->owner->worker;
}

static const struct config *conn_config(const struct conn *c)
{
	return c->owner->server->cfg;
}

/* ---- teardown ------------------------------------------------------------ */

/* Free the conn once nothing of it is in flight any more. */
static void conn_maybe_free(struct conn *c)
{
	if (!c->closing || c->recv_armed || c->send_inflight)
		return;
	timer_cancel(&conn_worker(c)->timers, &c->timer);
	close(c->fd);
	log_event(LOG_LEVEL_INFO, "event=disconnect session=%s client=%s commands=%u messages=%u",
		  c->session.id, c->peer_text, c->session.commands, c->session.messages);
	smtp_session_destroy(&c->session);
	buf_release(&c->held);
	buf_release(&c->sending);
	net_server_release(c->owner->server, c->counted, c->client_slot,
			   (const struct sockaddr *)&c->peer);
	net_worker_conn_removed(c->owner, c);
	free(c);
}

/* Stop reading; the socket is closed when the in-flight operations end. */
static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	/* Aborts a stuck send; the recv is cancelled outright, since a
	 * shutdown alone does not always end a multishot recv at once. */
	shutdown(c->fd, SHUT_RDWR);
	if (c->recv_armed) {
		struct io_uring_sqe *sqe = worker_sqe(conn_worker(c));
		io_uring_prep_cancel(sqe, &c->recv_op, 0);
		worker_sqe_set_op(sqe, NULL);
	}
	conn_maybe_free(c);
}

/* ---- output ---------------------------------------------------------------- */

static void conn_send_submit(struct conn *c)
{
	struct io_uring_sqe *sqe = worker_sqe(conn_worker(c));
	io_uring_prep_send(sqe, c->fd, buf_head(&c->sending), buf_len(&c->sending), MSG_NOSIGNAL);
	worker_sqe_set_op(sqe, &c->send_op);
	c->send_inflight = true;
}

/* The client sent EOF and the session has acted on all it sent: once the
 * replies are out, nothing more can happen on this connection. */
static bool conn_input_done(const struct conn *c)
{
	return c->input_ended && !c->session.waiting && buf_len(&c->held) == 0;
}

/* Hand the session's replies to the kernel, or close if it is done. */
static void conn_flush(struct conn *c)
{
	if (c->send_inflight || c->closing)
		return;
	if (buf_len(&c->session.out) > 0) {
		/* Swap: the session appends to a fresh buffer while this one
		 * belongs to the kernel. */
		struct buf tmp = c->sending;
		c->sending = c->session.out;
		c->session.out = tmp;
		conn_send_submit(c);
		return;
	}
	if (c->session.want_close) {
		conn_close(c);
	} else if (conn_input_done(c)) {
		if (smtp_session_in_transaction(&c->session))
			log_event(LOG_LEVEL_INFO,
				  "event=lost_connection session=%s client=%s state=transaction",
				  c->session.id, c->peer_text);
		conn_close(c);
	}
}

static void conn_send_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct conn *c = CONN_OF(op, send_op);
	c->send_inflight = false;
	if (cqe->res < 0) {
		if (!c->closing)
			log_event(LOG_LEVEL_INFO, "event=send_error session=%s error=\"%s\"",
				  c->session.id, strerror(-cqe->res));
		buf_consume(&c->sending, buf_len(&c->sending));
		/* conn_close() may free c already (nothing else in flight):
		 * one of the two, never both. */
		if (c->closing)
			conn_maybe_free(c);
		else
			conn_close(c);
		return;
	}
	buf_consume(&c->sending, (size_t)cqe->res);
	if (c->closing) {
		conn_maybe_free(c);
		return;
	}
	if (buf_len(&c->sending) > 0) {
		conn_send_submit(c); /* a partial send: the rest */
		return;
	}
	if (c->sending.cap > 4096)
		buf_release(&c->sending); /* idle sessions keep no big buffers */
	conn_flush(c);
}

/* ---- input ------------------------------------------------------------------ */

static void conn_recv_arm(struct conn *c)
{
	if (c->recv_armed || c->closing || c->recv_paused || c->input_ended)
		return;
	struct io_uring_sqe *sqe = worker_sqe(conn_worker(c));
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = WORKER_RECV_GROUP;
	worker_sqe_set_op(sqe, &c->recv_op);
	c->recv_armed = true;
}

/* Feed what the session can take; keep the rest in `held`. -ENOMEM when
 * the rest could not be kept: bytes of the client's stream are lost, so
 * the connection must end (nothing in it was acknowledged yet). */
static int conn_input(struct conn *c, const char *data, size_t len)
{
	if (buf_len(&c->held) > 0 || c->session.waiting) {
		if (buf_append(&c->held, data, len) != 0)
			return -ENOMEM;
	} else {
		size_t used = smtp_session_feed(&c->session, data, len);
		if (used < len && c->session.state != SMTP_STATE_CLOSED &&
		    buf_append(&c->held, data + used, len - used) != 0)
			return -ENOMEM;
	}
	if (buf_len(&c->held) > CONN_HELD_MAX && !c->recv_paused) {
		/* The client talks faster than the store takes it: stop reading
		 * until the session has worked through what it has. */
		c->recv_paused = true;
		if (c->recv_armed) {
			struct io_uring_sqe *sqe = worker_sqe(conn_worker(c));
			io_uring_prep_cancel(sqe, &c->recv_op, 0);
			worker_sqe_set_op(sqe, NULL);
		}
	}
	return 0;
}

/* Work through held input after the session was woken. */
static void conn_feed_held(struct conn *c)
{
	while (buf_len(&c->held) > 0 && !c->session.waiting &&
	       c->session.state != SMTP_STATE_CLOSED) {
		size_t used = smtp_session_feed(&c->session, buf_head(&c->held), buf_len(&c->held));
		buf_consume(&c->held, used);
		if (used == 0)
			break;
	}
	if (c->session.state == SMTP_STATE_CLOSED)
		buf_consume(&c->held, buf_len(&c->held));
	if (buf_len(&c->held) == 0 && c->held.cap > 4096)
		buf_release(&c->held);
	if (c->recv_paused && buf_len(&c->held) < CONN_HELD_MAX / 2) {
		c->recv_paused = false;
		conn_recv_arm(c);
	}
}

static void conn_recv_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct conn *c = CONN_OF(op, recv_op);
	struct worker *w = conn_worker(c);
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->recv_armed = false;
	bool lost = false;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		if (cqe->res > 0 && !c->closing) {
			c->last_activity_ms = w->now_ms;
			if (!c->greeted) {
				/* Once: later bytes of the same bot add nothing. */
				if (c->session.state != SMTP_STATE_CLOSED) {
					smtp_session_early_talker(&c->session);
					log_event(LOG_LEVEL_INFO,
						  "event=early_talker session=%s client=%s",
						  c->session.id, c->peer_text);
				}
			} else if (conn_input(c, worker_recv_buffer(w, bid), (size_t)cqe->res) !=
				   0) {
				lost = true;
			} else {
				conn_timer_tighten(c);
			}
		}
		/* The buffer goes back in this same turn, whatever happened. */
		worker_recv_buffer_return(w, bid);
	}
	if (lost) {
		log_event(LOG_LEVEL_ERROR,
			  "event=input_lost session=%s client=%s note=\"out of memory holding "
			  "input; connection closed, nothing in it was acknowledged\"",
			  c->session.id, c->peer_text);
		conn_close(c); /* may free c */
		return;
	}
	if (c->closing) {
		conn_maybe_free(c);
		return;
	}
	if (cqe->res == 0) {
		/* EOF: the client has said all it will. Answer it, then close
		 * (conn_flush() closes once nothing is left to answer). */
		c->input_ended = true;
		conn_flush(c);
		return;
	}
	if (cqe->res < 0 && cqe->res != -ENOBUFS && cqe->res != -ECANCELED) {
		/* The socket broke: nothing more can be said. */
		log_event(LOG_LEVEL_INFO, "event=recv_error session=%s error=\"%s\"", c->session.id,
			  strerror(-cqe->res));
		conn_close(c);
		return;
	}
	conn_flush(c);
	conn_recv_arm(c); /* ENOBUFS or a finished multishot: ask again */
}

static void conn_session_wake(struct smtp_session *s)
{
	struct conn *c = container_of(s, struct conn, session);
	if (c->closing)
		return;
	c->last_activity_ms = conn_worker(c)->now_ms;
	conn_feed_held(c);
	conn_timer_tighten(c);
	conn_flush(c);
}

/* ---- timers -------------------------------------------------------------- */

static uint64_t conn_timeout_ms(const struct conn *c)
{
	const struct config *cfg = conn_config(c);
	return smtp_session_in_data(&c->session) ? cfg->data_timeout_ms : cfg->idle_timeout_ms;
}

/*
 * The lazy timer fires at the deadline of the timeout that applied when it
 * was armed. A session that has just entered DATA may be under a shorter
 * one now (data_timeout below idle_timeout): bring the timer forward to
 * that deadline, never back, so a stalled body is cut off on time. Only
 * that transition re-arms; plain activity still touches nothing.
 */
static void conn_timer_tighten(struct conn *c)
{
	if (c->closing || !c->greeted || !timer_armed(&c->timer))
		return;
	struct worker *w = conn_worker(c);
	uint64_t deadline = c->last_activity_ms + conn_timeout_ms(c);
	if ((deadline + TIMER_TICK_MS - 1) / TIMER_TICK_MS >= c->timer.expires_tick)
		return;
	timer_arm(&w->timers, &c->timer, w->now_ms,
		  deadline > w->now_ms ? deadline - w->now_ms : 0);
}

static void conn_timer_fire(struct timer *t)
{
	struct conn *c = CONN_OF(t, timer);
	struct worker *w = conn_worker(c);
	if (c->closing)
		return;
	if (!c->greeted) {
		c->greeted = true;
		smtp_session_greet(&c->session);
		conn_flush(c);
		c->last_activity_ms = w->now_ms;
		timer_arm(&w->timers, t, w->now_ms, conn_timeout_ms(c));
		return;
	}
	/* Lazy idle timer: activity only moved last_activity_ms. */
	uint64_t deadline = c->last_activity_ms + conn_timeout_ms(c);
	if (deadline > w->now_ms && !c->session.want_close) {
		timer_arm(&w->timers, t, w->now_ms, deadline - w->now_ms);
		return;
	}
	if (c->session.state == SMTP_STATE_COMMIT) {
		/* Waiting for the disk is not the client's fault. */
		timer_arm(&w->timers, t, w->now_ms, 1000);
		return;
	}
	if (c->session.want_close) {
		/* Our own last words did not leave in a whole timeout. */
		conn_close(c);
		return;
	}
	log_event(LOG_LEVEL_INFO, "event=timeout session=%s client=%s in_data=%d", c->session.id,
		  c->peer_text, smtp_session_in_data(&c->session));
	smtp_session_timeout(&c->session);
	conn_flush(c);
	timer_arm(&w->timers, t, w->now_ms, conn_timeout_ms(c));
}

/* ---- birth ----------------------------------------------------------------- */

struct conn *conn_accept(struct net_worker *owner, int fd, const struct sockaddr *peer,
			 socklen_t peer_len, const char *refusal, bool counted,
			 uint32_t client_slot)
{
	struct net_server *srv = owner->server;
	struct worker *w = owner->worker;
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		net_server_release(srv, counted, client_slot, peer);
		return NULL;
	}
	c->owner = owner;
	c->fd = fd;
	c->counted = counted;
	c->client_slot = client_slot;
	if (peer_len <= sizeof(c->peer))
		memcpy(&c->peer, peer, peer_len);
	if (peer->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->peer_text,
			  sizeof(c->peer_text));
	else if (peer->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, c->peer_text,
			  sizeof(c->peer_text));
	else
		snprintf(c->peer_text, sizeof(c->peer_text), "unknown");
	c->recv_op.complete = conn_recv_complete;
	c->send_op.complete = conn_send_complete;
	timer_init(&c->timer, conn_timer_fire);
	c->last_activity_ms = w->now_ms;

	char id[17];
	snprintf(id, sizeof(id), "%02x%014llx", owner->index & 0xff,
		 (unsigned long long)++owner->sessions_started);
	if (smtp_session_init(&c->session, &srv->settings, &conn_session_hooks, owner->queue,
			      (const struct sockaddr *)&c->peer, c->peer_text, id) != 0) {
		close(fd);
		net_server_release(srv, counted, client_slot, peer);
		free(c);
		return NULL;
	}
	net_worker_conn_added(owner, c);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	log_event(LOG_LEVEL_INFO, "event=connect session=%s client=%s trusted=%d", id, c->peer_text,
		  c->session.client_trusted);
	if (refusal != NULL) {
		log_event(LOG_LEVEL_INFO,
			  "event=connection_refused session=%s client=%s reply=\"%s\"", id,
			  c->peer_text, refusal);
		c->greeted = true;
		smtp_session_refuse(&c->session, refusal);
		conn_flush(c);
		timer_arm(&w->timers, &c->timer, w->now_ms, 10000);
		return c;
	}
	uint32_t delay = conn_config(c)->greeting_delay_ms;
	if (delay == 0) {
		c->greeted = true;
		smtp_session_greet(&c->session);
		conn_flush(c);
		timer_arm(&w->timers, &c->timer, w->now_ms, conn_timeout_ms(c));
	} else {
		/* Listen before speaking: a client that talks now is a bot. */
		timer_arm(&w->timers, &c->timer, w->now_ms, delay);
	}
	conn_recv_arm(c);
	return c;
}

void conn_shutdown(struct conn *c)
{
	if (c->closing)
		return;
	if (!c->greeted) {
		c->greeted = true;
		smtp_session_refuse(&c->session, "421 4.3.2 Service shutting down");
	} else {
		smtp_session_shutdown(&c->session);
	}
	conn_flush(c);
}

void conn_force_close(struct conn *c)
{
	if (c->closing)
		return;
	log_event(LOG_LEVEL_WARN, "event=shutdown_deadline session=%s client=%s", c->session.id,
		  c->peer_text);
	conn_close(c);
}
