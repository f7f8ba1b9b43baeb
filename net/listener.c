#include "net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/list.h"
#include "core/log.h"
#include "net/server.h"

static void listener_accepted(struct worker_op *op, const struct io_uring_cqe *cqe);

#define LISTENER_RETRY_MS 100

static void listener_retry(struct timer *t)
{
	struct listener *l =
		container_of(t, struct listener, retry_timer);
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
	timer_init(&l->retry_timer, listener_retry);
	l->fd = listener_bind(address, true, err, err_size);
	if (l->fd < 0)
		return l->fd;
	if (listen(l->fd, backlog) != 0) {
		int e = errno;
		snprintf(err, err_size, "listen %s: listen: %s", address->text, strerror(e));
		close(l->fd);
		return -e;
	}
	return 0;
}

void listener_arm(struct listener *l)
{
	if (l->closed || l->armed)
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
	if (l->armed) {
		struct io_uring_sqe *sqe = worker_sqe(l->owner->worker);
		io_uring_prep_cancel(sqe, &l->accept_op, 0);
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
		if (l->closed)
			close(cqe->res);
		else
			net_worker_accept(l->owner, cqe->res);
	} else if (cqe->res != -ECANCELED && !l->closed) {
		/* EMFILE/ENFILE/ENOBUFS: the kernel keeps the connection queued;
		 * retry a little later rather than spin on the same error. */
		log_event(LOG_LEVEL_WARN, "event=accept_error listen=%s error=\"%s\"",
			  l->address->text, strerror(-cqe->res));
		if (!l->armed) {
			struct worker *w = l->owner->worker;
			timer_arm(&w->timers, &l->retry_timer, w->now_ms, LISTENER_RETRY_MS);
		}
		return;
	}
	if (!l->armed && !l->closed)
		listener_arm(l);
}
