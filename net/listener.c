#include "net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/list.h"
#include "core/log.h"
#include "net/server.h"

static void listener_accepted(struct worker_op *op, const struct io_uring_cqe *cqe);
static void listener_client_waits(struct worker_op *op, const struct io_uring_cqe *cqe);

#define LISTENER_RETRY_MS 100
#define LISTENER_LOG_MS   1000 /* at most one accept_error line per listener this often */
#define LISTENER_SHED_MAX 64   /* clients answered through the spare per failed accept */

static void listener_retry(struct timer *t)
{
	struct listener *l = container_of(t, struct listener, retry_timer);
	listener_arm(l);
}

static int listener_open_spare(void)
{
	return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void listener_log_errors(struct listener *l)
{
	if (l->errors == 0 && l->refused == 0 && l->resets == 0)
		return;
	log_event(LOG_LEVEL_WARN,
		  "event=accept_error listen=%s error=\"%s\" errors=%u refused=%u resets=%u",
		  l->address->text, strerror(l->last_error), l->errors, l->refused, l->resets);
	l->errors = l->refused = l->resets = 0;
	l->log_after_ms = l->owner->worker->now_ms + LISTENER_LOG_MS;
}

static void listener_log_due(struct timer *t)
{
	listener_log_errors(container_of(t, struct listener, log_timer));
}

/* Count an accept error; log now, or once the second since the last line
 * is over (a flood of errors is one line a second, with counts). */
static void listener_note_error(struct listener *l, int error)
{
	struct worker *w = l->owner->worker;
	l->last_error = error;
	l->errors++;
	if (w->now_ms >= l->log_after_ms)
		listener_log_errors(l);
	else if (!timer_armed(&l->log_timer))
		timer_arm(&w->timers, &l->log_timer, w->now_ms, l->log_after_ms - w->now_ms);
}

/*
 * No spare to make room with (another worker's accept took the room it
 * left, the descriptor table being the process's): shut the listening
 * socket, which resets every client queued on it, and listen again at
 * once. They are closed promptly, without a word. Returns false when the
 * socket could not listen again (logged; accepting is retried later).
 */
static bool listener_reset_queue(struct listener *l)
{
	shutdown(l->fd, SHUT_RD);
	if (listen(l->fd, (int)l->owner->gen->cfg.listen_backlog) != 0) {
		log_event(LOG_LEVEL_ERROR, "event=listen_error listen=%s error=\"%s\"",
			  l->address->text, strerror(errno));
		return false;
	}
	l->resets++;
	return true;
}

/*
 * Out of descriptors, with no accept in flight: answer the clients the
 * kernel holds queued for us instead of leaving them in silence. The
 * spare makes room for one at a time: it is closed, a client accepted,
 * told 421 and closed, the spare taken again; without a spare, the queue
 * is reset. Returns true when the next client may be waited for (see
 * listener_wait_client), false to retry a little later.
 */
static bool listener_shed(struct listener *l)
{
	if (l->spare_fd < 0 && (l->spare_fd = listener_open_spare()) < 0)
		return listener_reset_queue(l);
	char reply[320];
	int len = snprintf(reply, sizeof(reply),
			   "421 4.3.2 %s Service temporarily unavailable, try again later\r\n",
			   l->owner->gen->cfg.hostname);
	/* Non-blocking for these accepts only: nothing of the ring's is in
	 * flight on the socket now, and a client that reset meanwhile must
	 * not block the worker. */
	int flags = fcntl(l->fd, F_GETFL);
	if (flags < 0 || fcntl(l->fd, F_SETFL, flags | O_NONBLOCK) != 0)
		return false;
	for (unsigned n = 0; n < LISTENER_SHED_MAX && l->spare_fd >= 0; n++) {
		close(l->spare_fd);
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0) {
			send(fd, reply, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
			close(fd);
			l->refused++;
		}
		l->spare_fd = listener_open_spare();
		if (fd < 0)
			break; /* none left (EAGAIN), or the room went elsewhere */
	}
	fcntl(l->fd, F_SETFL, flags);
	return l->spare_fd >= 0 || listener_reset_queue(l);
}

/*
 * Still out of descriptors, perhaps: io_uring's accept takes a descriptor
 * before it looks for a client, so armed now it would fail at once, again
 * and again, with no one waiting. Wait for a client instead (a poll), and
 * only then accept: served if descriptors are back, shed if not.
 */
static void listener_wait_client(struct listener *l)
{
	struct io_uring_sqe *sqe = worker_sqe(l->owner->worker);
	io_uring_prep_poll_add(sqe, l->fd, POLLIN);
	worker_sqe_set_op(sqe, &l->poll_op);
	l->polling = true;
}

static void listener_client_waits(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct listener *l = container_of(op, struct listener, poll_op);
	l->polling = false;
	if (l->closed)
		return;
	if (cqe->res < 0 && cqe->res != -ECANCELED) {
		struct worker *w = l->owner->worker;
		timer_arm(&w->timers, &l->retry_timer, w->now_ms, LISTENER_RETRY_MS);
		return;
	}
	listener_arm(l);
}

/* A socket bound to address. Every worker's listener joins one
 * SO_REUSEPORT group; a probe (reuseport false) joins none. */
static int listener_bind(const struct config_listen *address, bool reuseport, char *err,
			 size_t err_size)
{
	int family = address->addr.ss_family;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int e = errno;
		snprintf(err, err_size, "listen %s: socket: %s", address->text, strerror(e));
		return -e;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if ((reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
	    (family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
		int e = errno;
		snprintf(err, err_size, "listen %s: setsockopt: %s", address->text, strerror(e));
		close(fd);
		return -e;
	}
	if (bind(fd, (const struct sockaddr *)&address->addr, address->addr_len) != 0) {
		int e = errno;
		snprintf(err, err_size, "listen %s: bind: %s%s", address->text, strerror(e),
			 e == EADDRINUSE ? " (is another ferryd or MTA running?)"
			 : e == EACCES   ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
					 : "");
		close(fd);
		return -e;
	}
	return fd;
}

int listener_check_free(const struct config_listen *address, char *err, size_t err_size)
{
	int fd = listener_bind(address, false, err, err_size);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

int listener_open(struct listener *l, struct net_worker *owner, const struct config_listen *address,
		  int backlog, char *err, size_t err_size)
{
	memset(l, 0, sizeof(*l));
	l->owner = owner;
	l->address = address;
	l->accept_op.complete = listener_accepted;
	l->poll_op.complete = listener_client_waits;
	timer_init(&l->retry_timer, listener_retry);
	timer_init(&l->log_timer, listener_log_due);
	l->spare_fd = -1;
	l->fd = listener_bind(address, true, err, err_size);
	if (l->fd < 0)
		return l->fd;
	l->spare_fd = listener_open_spare(); /* taken again when needed if this fails */
	if (listen(l->fd, backlog) != 0) {
		int e = errno;
		snprintf(err, err_size, "listen %s: listen: %s", address->text, strerror(e));
		close(l->fd);
		if (l->spare_fd >= 0)
			close(l->spare_fd);
		return -e;
	}
	return 0;
}

void listener_arm(struct listener *l)
{
	if (l->closed || l->armed || l->polling)
		return;
	struct io_uring_sqe *sqe = worker_sqe(l->owner->worker);
	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	worker_sqe_set_op(sqe, &l->accept_op);
	l->armed = true;
}

void listener_close(struct listener *l)
{
	if (l->closed)
		return;
	l->closed = true;
	timer_cancel(&l->owner->worker->timers, &l->retry_timer);
	listener_log_errors(l); /* what the last second counted */
	if (timer_armed(&l->log_timer))
		timer_cancel(&l->owner->worker->timers, &l->log_timer);
	if (l->spare_fd >= 0)
		close(l->spare_fd);
	l->spare_fd = -1;
	if (l->armed) {
		struct io_uring_sqe *sqe = worker_sqe(l->owner->worker);
		io_uring_prep_cancel(sqe, &l->accept_op, 0);
		worker_sqe_set_op(sqe, NULL);
	}
	if (l->polling) {
		struct io_uring_sqe *sqe = worker_sqe(l->owner->worker);
		io_uring_prep_cancel(sqe, &l->poll_op, 0);
		worker_sqe_set_op(sqe, NULL);
	}
	/* Stop listening now. close() alone leaves the socket listening for
	 * as long as the in-flight accept holds it (until the cancel runs,
	 * or after exit until the kernel tears the ring down): meanwhile the
	 * kernel would still complete handshakes that nobody will answer,
	 * and a ferryd started right after this one could share the port
	 * with it. shutdown() ends LISTEN at once; clients are refused. */
	shutdown(l->fd, SHUT_RDWR);
	close(l->fd);
	l->fd = -1;
}

static void listener_accepted(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct listener *l = container_of(op, struct listener, accept_op);
	if (!(cqe->flags & IORING_CQE_F_MORE))
		l->armed = false;
	if (cqe->res >= 0) {
		if (l->closed) {
			close(cqe->res);
		} else {
			/* Descriptors are back: retake a spare that went to
			 * another worker's client. */
			if (l->spare_fd < 0)
				l->spare_fd = listener_open_spare();
			net_worker_accept(l->owner, cqe->res);
		}
	} else if (cqe->res != -ECANCELED && !l->closed) {
		/* The kernel keeps the connection queued. Out of descriptors,
		 * the spare answers whoever waits; otherwise (ENOBUFS, ENOMEM)
		 * retry a little later rather than spin on the same error. */
		int error = -cqe->res;
		bool shed = !l->armed && (error == EMFILE || error == ENFILE) && listener_shed(l);
		listener_note_error(l, error);
		if (shed) {
			listener_wait_client(l);
		} else if (!l->armed) {
			struct worker *w = l->owner->worker;
			timer_arm(&w->timers, &l->retry_timer, w->now_ms, LISTENER_RETRY_MS);
		}
		return;
	}
	if (!l->armed && !l->closed)
		listener_arm(l);
}
