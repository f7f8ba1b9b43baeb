#include "net/conn.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "core/check.h"
#include "core/list.h"

/* An idle conn keeps a drained send buffer up to this size for the next
 * reply; a bigger one (a burst of output) is freed. */
#define CONN_KEEP_BUFFER 4096

/* Input is offered in slices no bigger than a receive buffer (a transport
 * may deliver more, held input is more): the output cap is checked
 * between them. */
#define CONN_OFFER_MAX WORKER_RECV_BUFFER_SIZE

static void conn_recv_complete(struct worker_op *op, const struct io_uring_cqe *cqe);
static void conn_send_complete(struct worker_op *op, const struct io_uring_cqe *cqe);
static void conn_connect_complete(struct worker_op *op, const struct io_uring_cqe *cqe);
static void conn_close_complete(struct worker_op *op, const struct io_uring_cqe *cqe);
static void conn_timer_fire(struct timer *t);
static void conn_alarm_fire(struct timer *t);

/* ---- the plain transport --------------------------------------------------- */

static int conn_plain_receive(struct conn *c, const char *wire, size_t len,
			      conn_deliver_fn *deliver)
{
	return deliver(c, wire, len);
}

static int conn_plain_send(struct conn *c, struct buf *plain, struct buf *wire)
{
	(void)c;
	/* Swap: the user appends to a fresh buffer while this one belongs
	 * to the kernel. */
	struct buf tmp = *wire;
	*wire = *plain;
	*plain = tmp;
	return 0;
}

const struct conn_transport conn_plain = {
	.name = "plain",
	.receive = conn_plain_receive,
	.send = conn_plain_send,
};

/* ---- teardown ------------------------------------------------------------ */

static void conn_cancel(struct conn *c, struct worker_op *op)
{
	struct io_uring_sqe *sqe = worker_sqe(c->worker);
	io_uring_prep_cancel(sqe, op, 0);
	worker_sqe_set_op(sqe, NULL);
}

/* The last completion of the conn has come: hand it back to the user. */
static void conn_release_if_done(struct conn *c)
{
	if (c->state != CONN_TEARDOWN || c->recv_armed || c->send_inflight || c->connect_inflight ||
	    c->close_inflight)
		return;
	c->state = CONN_CLOSED;
	if (c->transport->close != NULL)
		c->transport->close(c);
	buf_release(&c->held);
	buf_release(&c->sending);
	c->handler->closed(c); /* may free c */
}

/*
 * Shut the socket and cancel what is in flight. The socket is closed
 * through the ring, so there is always a completion still to come: the
 * user hears closed() from the loop, never from inside its own call.
 */
static void conn_teardown(struct conn *c)
{
	if (c->state >= CONN_TEARDOWN)
		return;
	c->state = CONN_TEARDOWN;
	struct worker *w = c->worker;
	timer_cancel(&w->timers, &c->timer);
	timer_cancel(&w->timers, &c->alarm);
	/* Aborts a stuck send; the recv is cancelled outright, since a
	 * shutdown alone does not always end a multishot recv at once. */
	shutdown(c->fd, SHUT_RDWR);
	if (c->recv_armed)
		conn_cancel(c, &c->recv_op);
	if (c->connect_inflight)
		conn_cancel(c, &c->connect_op);
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_close(sqe, c->fd);
	worker_sqe_set_op(sqe, &c->close_op);
	c->close_inflight = true;
	c->fd = -1;
}

static void conn_fail(struct conn *c, enum conn_failure what, int error)
{
	c->handler->failed(c, what, error);
	conn_teardown(c);
}

static void conn_close_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct conn *c = container_of(op, struct conn, close_op);
	(void)cqe; /* the socket is gone either way */
	c->close_inflight = false;
	conn_release_if_done(c);
}

/* ---- output ---------------------------------------------------------------- */

size_t conn_output_queued(const struct conn *c)
{
	return buf_len(c->output) + buf_len(&c->sending);
}

bool conn_output_full(const struct conn *c)
{
	return conn_output_queued(c) > c->output_max;
}

static void conn_send_submit(struct conn *c)
{
	struct io_uring_sqe *sqe = worker_sqe(c->worker);
	io_uring_prep_send(sqe, c->fd, buf_head(&c->sending), buf_len(&c->sending), MSG_NOSIGNAL);
	worker_sqe_set_op(sqe, &c->send_op);
	c->send_inflight = true;
}

void conn_flush(struct conn *c)
{
	CHECK(c->state != CONN_CLOSED);
	if (c->state != CONN_OPEN && c->state != CONN_CLOSING)
		return;
	if (c->send_inflight)
		return; /* its completion comes back here */
	int r = c->transport->send(c, c->output, &c->sending);
	if (r < 0) {
		conn_fail(c, CONN_FAILURE_TRANSPORT, -r);
		return;
	}
	if (buf_len(&c->sending) > 0)
		conn_send_submit(c);
	else if (c->state == CONN_CLOSING)
		conn_teardown(c); /* all said */
}

/*
 * Everything handed to the kernel was sent. While output keeps coming the
 * user's buffer and the send slot take turns, with no allocation; once
 * the user has nothing more to send, the conn keeps no I/O buffer: a
 * small one goes back to the user (who has none after a swap), a big one
 * is freed, and so are an empty big output buffer and empty held input.
 */
static void conn_send_drained(struct conn *c)
{
	struct buf *out = c->output;
	if (buf_len(out) > 0)
		return; /* busy: the next flush swaps this one in again */
	if (out->data == NULL && c->sending.cap <= CONN_KEEP_BUFFER) {
		*out = c->sending;
		c->sending = (struct buf){0};
	} else {
		buf_release(&c->sending);
		if (out->cap > CONN_KEEP_BUFFER)
			buf_release(out);
	}
	if (buf_len(&c->held) == 0)
		buf_release(&c->held);
}

/* ---- input ------------------------------------------------------------------ */

static void conn_recv_arm(struct conn *c)
{
	if (c->recv_armed || c->recv_paused || c->input_ended ||
	    (c->state != CONN_OPEN && c->state != CONN_CLOSING))
		return;
	struct io_uring_sqe *sqe = worker_sqe(c->worker);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = WORKER_RECV_GROUP;
	worker_sqe_set_op(sqe, &c->recv_op);
	c->recv_armed = true;
}

/* Offered to the user now, or held (in order behind what is held). */
static bool conn_input_flows(const struct conn *c)
{
	return c->state == CONN_OPEN && buf_len(&c->held) == 0 && !c->input_blocked &&
	       !c->output_blocked;
}

/* Offer bytes to the user; returns how many it took. Afterwards, too much
 * unsent output stops the input until it drains; a user that took less
 * with its output over the cap stopped for that, and is offered the rest
 * once the output has drained, without a conn_resume_input(). */
static size_t conn_offer(struct conn *c, const char *data, size_t len)
{
	c->delivering = true;
	size_t used = c->handler->input(c, data, len);
	c->delivering = false;
	CHECK(used <= len);
	if (c->state != CONN_OPEN)
		return used;
	bool full = conn_output_full(c);
	if (used < len && !full)
		c->input_blocked = true;
	if (full) {
		c->output_blocked = true;
		conn_flush(c); /* its completion is what lets input flow again */
	}
	return used;
}

static void conn_input_end_if_due(struct conn *c)
{
	if (c->input_ended && !c->input_end_told && c->state == CONN_OPEN &&
	    buf_len(&c->held) == 0) {
		c->input_end_told = true;
		c->handler->input_end(c);
	}
}

/* The transport's deliver(): to the user, or into `held`. */
static int conn_deliver(struct conn *c, const char *data, size_t len)
{
	if (c->state != CONN_OPEN)
		return 0; /* closing: input is dropped */
	while (len > 0 && conn_input_flows(c)) {
		size_t used = conn_offer(c, data, len < CONN_OFFER_MAX ? len : CONN_OFFER_MAX);
		data += used;
		len -= used;
		if (c->state != CONN_OPEN)
			return 0;
	}
	if (len > 0 && buf_append(&c->held, data, len) != 0)
		return -ENOMEM;
	/* The peer talks faster than the user takes it, or does not read
	 * what it is answered: stop reading until the user has worked through
	 * what is held and the output has drained. A peer that does not read
	 * is not read from at all, so it costs what one turn brought in, not
	 * held_max. */
	if ((buf_len(&c->held) > c->held_max || c->output_blocked) && !c->recv_paused) {
		c->recv_paused = true;
		if (c->recv_armed)
			conn_cancel(c, &c->recv_op);
	}
	return 0;
}

/* Offer held input while the user and the output allow; resume receiving
 * once little is held; tell of EOF once all is taken. */
static void conn_feed_held(struct conn *c)
{
	while (buf_len(&c->held) > 0 && c->state == CONN_OPEN && !c->input_blocked &&
	       !c->output_blocked) {
		size_t len =
			buf_len(&c->held) < CONN_OFFER_MAX ? buf_len(&c->held) : CONN_OFFER_MAX;
		size_t used = conn_offer(c, buf_head(&c->held), len);
		buf_consume(&c->held, used);
	}
	if (c->state != CONN_OPEN) {
		buf_release(&c->held); /* dropped: conn_close() left it to us */
		return;
	}
	if (buf_len(&c->held) == 0 && !c->output_blocked)
		buf_release(&c->held); /* held input is the exception: keep no buffer */
	if (c->recv_paused && !c->output_blocked && buf_len(&c->held) < c->held_max / 2) {
		c->recv_paused = false;
		conn_recv_arm(c);
	}
	conn_input_end_if_due(c);
}

void conn_resume_input(struct conn *c)
{
	CHECK(c->state != CONN_CLOSED);
	CHECK(!c->delivering); /* the held bytes are what input() is looking at */
	c->input_blocked = false;
	conn_feed_held(c);
}

static void conn_recv_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct conn *c = container_of(op, struct conn, recv_op);
	struct worker *w = c->worker;
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->recv_armed = false;
	int status = 0;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		if (cqe->res > 0 && c->state == CONN_OPEN) {
			c->last_activity_ms = w->now_ms;
			status = c->transport->receive(c, worker_recv_buffer(w, bid),
						       (size_t)cqe->res, conn_deliver);
		}
		/* The buffer goes back in this same turn, whatever happened. */
		worker_recv_buffer_return(w, bid);
	}
	if (status < 0 && c->state < CONN_TEARDOWN)
		conn_fail(c, status == -ENOMEM ? CONN_FAILURE_INPUT_LOST : CONN_FAILURE_TRANSPORT,
			  -status);
	if (c->state >= CONN_TEARDOWN) {
		conn_release_if_done(c);
		return;
	}
	if (cqe->res == 0) {
		/* EOF: the peer has said all it will; what it said is answered. */
		c->input_ended = true;
		conn_input_end_if_due(c);
		return;
	}
	if (cqe->res < 0 && cqe->res != -ENOBUFS && cqe->res != -ECANCELED) {
		conn_fail(c, CONN_FAILURE_RECV, -cqe->res);
		return;
	}
	if (cqe->res == -ENOBUFS)
		c->worker->recv_buffers_exhausted++;
	conn_recv_arm(c); /* ENOBUFS or a finished multishot: ask again */
}

static void conn_send_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct conn *c = container_of(op, struct conn, send_op);
	c->send_inflight = false;
	if (c->state >= CONN_TEARDOWN) {
		buf_clear(&c->sending);
		conn_release_if_done(c);
		return;
	}
	if (cqe->res < 0) {
		buf_clear(&c->sending);
		conn_fail(c, CONN_FAILURE_SEND, -cqe->res);
		return;
	}
	buf_consume(&c->sending, (size_t)cqe->res);
	if (buf_len(&c->sending) > 0) {
		conn_send_submit(c); /* a partial send: the rest */
		return;
	}
	conn_send_drained(c);
	if (c->output_blocked && conn_output_queued(c) < c->output_max / 2) {
		c->output_blocked = false;
		conn_feed_held(c);
	}
	conn_flush(c);
	if (c->handler->sent != NULL && c->state == CONN_OPEN)
		c->handler->sent(c);
}

/* ---- timers -------------------------------------------------------------- */

/* Bring the lazy timer forward to the deadline of a shorter timeout (never
 * back): plain activity touches nothing, the timer re-arms when it fires. */
static void conn_timer_tighten(struct conn *c)
{
	if (c->timeout_ms == 0 || (c->state != CONN_OPEN && c->state != CONN_CLOSING))
		return;
	struct worker *w = c->worker;
	uint64_t deadline = c->last_activity_ms + c->timeout_ms;
	if (timer_armed(&c->timer) &&
	    (deadline + TIMER_TICK_MS - 1) / TIMER_TICK_MS >= c->timer.expires_tick)
		return;
	timer_arm(&w->timers, &c->timer, w->now_ms,
		  deadline > w->now_ms ? deadline - w->now_ms : 0);
}

void conn_set_timeout(struct conn *c, uint32_t timeout_ms)
{
	CHECK(c->state != CONN_CLOSED);
	if (timeout_ms == c->timeout_ms)
		return;
	c->timeout_ms = timeout_ms;
	conn_timer_tighten(c);
}

void conn_touch(struct conn *c)
{
	CHECK(c->state != CONN_CLOSED);
	c->last_activity_ms = c->worker->now_ms;
}

static void conn_timer_fire(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);
	struct worker *w = c->worker;
	if (c->state == CONN_CONNECTING) {
		c->connect_timed_out = true;
		conn_cancel(c, &c->connect_op); /* its completion reports it */
		return;
	}
	if (c->state == CONN_CLOSING) {
		/* Our last words did not leave in a whole timeout. */
		conn_teardown(c);
		return;
	}
	if (c->state != CONN_OPEN || c->timeout_ms == 0)
		return;
	uint64_t deadline = c->last_activity_ms + c->timeout_ms;
	if (deadline > w->now_ms) {
		timer_arm(&w->timers, t, w->now_ms, deadline - w->now_ms);
		return;
	}
	c->handler->timeout(c);
	if ((c->state == CONN_OPEN || c->state == CONN_CLOSING) && c->timeout_ms > 0 &&
	    !timer_armed(t)) {
		/* A conn_touch() grants a whole timeout again; a conn_close()
		 * gets one for its last words. */
		uint64_t next = c->last_activity_ms + c->timeout_ms;
		timer_arm(&w->timers, t, w->now_ms,
			  next > w->now_ms ? next - w->now_ms : c->timeout_ms);
	}
}

void conn_alarm(struct conn *c, uint32_t delay_ms)
{
	CHECK(c->state != CONN_CLOSED);
	if (c->state >= CONN_TEARDOWN)
		return;
	timer_arm(&c->worker->timers, &c->alarm, c->worker->now_ms, delay_ms);
}

void conn_alarm_cancel(struct conn *c)
{
	CHECK(c->state != CONN_CLOSED);
	timer_cancel(&c->worker->timers, &c->alarm);
}

static void conn_alarm_fire(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, alarm);
	if (c->state == CONN_OPEN)
		c->handler->alarm(c);
}

/* ---- birth ----------------------------------------------------------------- */

static void conn_init(struct conn *c, const struct conn_setup *setup, int fd)
{
	CHECK(setup->worker != NULL && setup->handler != NULL && setup->output != NULL);
	memset(c, 0, sizeof(*c));
	c->worker = setup->worker;
	c->handler = setup->handler;
	c->transport = setup->transport != NULL ? setup->transport : &conn_plain;
	c->transport_state = setup->transport_state;
	c->output = setup->output;
	c->held_max = setup->held_max != 0 ? setup->held_max : CONN_HELD_DEFAULT;
	c->output_max = setup->output_max != 0 ? setup->output_max : CONN_OUTPUT_DEFAULT;
	c->fd = fd;
	c->recv_op.complete = conn_recv_complete;
	c->send_op.complete = conn_send_complete;
	c->connect_op.complete = conn_connect_complete;
	c->close_op.complete = conn_close_complete;
	timer_init(&c->timer, conn_timer_fire);
	timer_init(&c->alarm, conn_alarm_fire);
	c->last_activity_ms = c->worker->now_ms;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (setup->send_buffer > 0 && setup->send_buffer <= INT32_MAX) {
		int size = (int)setup->send_buffer;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	}
}

static void conn_set_peer(struct conn *c, const struct sockaddr *peer, socklen_t peer_len)
{
	if (peer_len <= sizeof(c->peer) &&
	    (peer->sa_family == AF_INET || peer->sa_family == AF_INET6))
		memcpy(&c->peer, peer, peer_len);
}

void conn_accept(struct conn *c, const struct conn_setup *setup, int fd,
		 const struct sockaddr *peer, socklen_t peer_len)
{
	conn_init(c, setup, fd);
	conn_set_peer(c, peer, peer_len);
	c->state = CONN_OPEN;
	conn_recv_arm(c);
}

int conn_connect(struct conn *c, const struct conn_setup *setup, const struct conn_target *target)
{
	CHECK(setup->handler != NULL && setup->handler->connected != NULL);
	int family = target->address->sa_family;
	if (family != AF_INET && family != AF_INET6)
		return -EAFNOSUPPORT;
	if (target->address_len > sizeof(c->peer))
		return -EINVAL;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (target->source != NULL) {
		/* The port comes at connect, with the destination known: a
		 * busy source address runs out of ports much later. */
		int one = 1;
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, target->source, target->source_len) != 0) {
			int e = errno;
			close(fd);
			return -e;
		}
	}
	conn_init(c, setup, fd);
	conn_set_peer(c, target->address, target->address_len);
	c->state = CONN_CONNECTING;
	/* The kernel may read the address only when the turn submits. */
	struct io_uring_sqe *sqe = worker_sqe(c->worker);
	io_uring_prep_connect(sqe, fd, &c->peer.sa, target->address_len);
	worker_sqe_set_op(sqe, &c->connect_op);
	c->connect_inflight = true;
	if (target->timeout_ms > 0)
		timer_arm(&c->worker->timers, &c->timer, c->worker->now_ms, target->timeout_ms);
	return 0;
}

static void conn_connect_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct conn *c = container_of(op, struct conn, connect_op);
	struct worker *w = c->worker;
	c->connect_inflight = false;
	if (c->state >= CONN_TEARDOWN) {
		conn_release_if_done(c);
		return;
	}
	timer_cancel(&w->timers, &c->timer);
	int status = cqe->res;
	if (status < 0 && c->connect_timed_out)
		status = -ETIMEDOUT;
	if (status < 0) {
		c->handler->connected(c, status);
		conn_teardown(c);
		return;
	}
	c->state = CONN_OPEN;
	c->last_activity_ms = w->now_ms;
	conn_recv_arm(c);
	if (c->timeout_ms > 0)
		timer_arm(&w->timers, &c->timer, w->now_ms, c->timeout_ms);
	c->handler->connected(c, 0);
	conn_flush(c); /* what the user queued meanwhile */
}

/* ---- death ----------------------------------------------------------------- */

void conn_close(struct conn *c)
{
	CHECK(c->state != CONN_CLOSED);
	if (c->state == CONN_CONNECTING) {
		conn_teardown(c);
		return;
	}
	if (c->state != CONN_OPEN)
		return;
	c->state = CONN_CLOSING;
	timer_cancel(&c->worker->timers, &c->alarm);
	/* No more input: what is held is dropped (by conn_feed_held() if
	 * input() is looking at it now), and what arrives is read and
	 * dropped too (unread bytes would make the close a reset). */
	if (!c->delivering)
		buf_release(&c->held);
	c->input_blocked = false;
	c->output_blocked = false;
	if (c->recv_paused) {
		c->recv_paused = false;
		conn_recv_arm(c);
	}
	if (c->timeout_ms > 0 && !timer_armed(&c->timer))
		timer_arm(&c->worker->timers, &c->timer, c->worker->now_ms, c->timeout_ms);
	conn_flush(c);
}

void conn_abort(struct conn *c)
{
	CHECK(c->state != CONN_CLOSED);
	conn_teardown(c);
}
