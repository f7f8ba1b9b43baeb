/*
 * Tests for the connection layer (net/conn.c): real conns on a real
 * worker's ring, whose loop turn the test runs (worker_init/worker_turn,
 * as test_store.c does), talking over loopback to plain sockets of the
 * test or to each other. Only loopback addresses are used.
 *
 * What is asserted is what a protocol on top would notice: bytes arrive
 * whole and in order both ways, a connect's outcome is reported with its
 * errno, input and output backpressure hold and let go, timeouts fire
 * on time and not before, closes send what was queued (or not, when
 * forced) and end in closed() exactly once. The test build runs under
 * ASan: a conn that leaked a buffer fails the program.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/list.h"
#include "core/worker.h"
#include "net/conn.h"

#define T_TURN_MS 10   /* one loop turn's longest wait */
#define T_WAIT_MS 5000 /* bound on any wait for the ring */
#define T_NOT_YET 1    /* connected() not called yet */

static struct worker t_worker;
static struct worker_services t_services;

/* The caps of the next conn t_setup() makes (0: the conn's defaults). */
static size_t t_held_max, t_output_max;

static void t_start(void)
{
	t_held_max = t_output_max = 0;
	memset(&t_services, 0, sizeof(t_services));
	int r = worker_init(&t_worker, 0, &t_services);
	cr_assert_eq(r, 0, "%s (the conn tests need io_uring)", t_worker.error);
}

static void t_stop(void)
{
	for (int n = 0; n < 500 && t_worker.in_flight > 0; n++)
		worker_turn(&t_worker, T_TURN_MS);
	worker_fini(&t_worker);
}

TestSuite(conn, .init = t_start, .fini = t_stop, .timeout = 60);

static void t_turn(void)
{
	worker_turn(&t_worker, T_TURN_MS);
}

/* Turn the loop until cond holds, at most ms. */
#define T_UNTIL(cond, ms)                                                                          \
	do {                                                                                       \
		uint64_t t_deadline_ = worker_clock_ms() + (ms);                                   \
		while (!(cond)) {                                                                  \
			cr_assert_lt(worker_clock_ms(), t_deadline_, "waited in vain for: %s",     \
				     #cond);                                                       \
			t_turn();                                                                  \
		}                                                                                  \
	} while (0)

/* ---- one end: a conn and the user of it ------------------------------------------ */

/* The tests keep their ends in static storage: a failed assertion leaves
 * the test function while the ring may still complete their operations. */

struct t_end {
	struct conn conn;
	struct buf out;            /* its output */
	struct buf in;             /* every byte input() took */
	size_t take;               /* input() takes at most this much per call */
	unsigned amplify;          /* each byte taken is answered with this many */
	bool stop_when_full;       /* take no byte (request) while conn_output_full() */
	size_t most_queued;        /* the most output queued after a request */
	const char *answer_at_end; /* input_end() queues this and closes */
	bool touch_on_timeout;
	int connected; /* status, or T_NOT_YET */
	unsigned input_calls, timeouts, alarms, closes;
	bool input_ended;
	int failures;
	enum conn_failure failure;
	int failure_error;
	uint64_t timeout_at, alarm_at;
};

static struct t_end *t_end_of(struct conn *c)
{
	return container_of(c, struct t_end, conn);
}

static size_t t_input(struct conn *c, const char *data, size_t len)
{
	struct t_end *e = t_end_of(c);
	e->input_calls++;
	size_t n = len < e->take ? len : e->take;
	if (e->stop_when_full) {
		/* One request at a time, each answered before the next. */
		size_t k = 0;
		while (k < n && !conn_output_full(c)) {
			char *p = buf_extend(&e->out, e->amplify);
			cr_assert_not_null(p);
			memset(p, data[k], e->amplify);
			k++;
			size_t queued = conn_output_queued(c);
			if (queued > e->most_queued)
				e->most_queued = queued;
		}
		cr_assert_eq(buf_append(&e->in, data, k), 0);
		conn_flush(c);
		return k;
	}
	cr_assert_eq(buf_append(&e->in, data, n), 0);
	if (e->amplify > 0 && n > 0) {
		char *p = buf_extend(&e->out, n * e->amplify);
		cr_assert_not_null(p);
		for (size_t i = 0; i < n * e->amplify; i++)
			p[i] = data[i / e->amplify];
		conn_flush(c);
	}
	return n;
}

static void t_input_end(struct conn *c)
{
	struct t_end *e = t_end_of(c);
	cr_assert(!e->input_ended, "input_end() twice");
	e->input_ended = true;
	if (e->answer_at_end != NULL) {
		buf_append(&e->out, e->answer_at_end, strlen(e->answer_at_end));
		conn_flush(c);
		conn_close(c);
	}
}

static void t_timeout(struct conn *c)
{
	struct t_end *e = t_end_of(c);
	e->timeouts++;
	e->timeout_at = t_worker.now_ms;
	if (e->touch_on_timeout)
		conn_touch(c);
}

static void t_alarm(struct conn *c)
{
	struct t_end *e = t_end_of(c);
	e->alarms++;
	e->alarm_at = t_worker.now_ms;
}

static void t_connected(struct conn *c, int status)
{
	struct t_end *e = t_end_of(c);
	cr_assert_eq(e->connected, T_NOT_YET, "connected() twice");
	e->connected = status;
}

static void t_failed(struct conn *c, enum conn_failure what, int error)
{
	struct t_end *e = t_end_of(c);
	e->failures++;
	e->failure = what;
	e->failure_error = error;
}

static void t_closed(struct conn *c)
{
	struct t_end *e = t_end_of(c);
	e->closes++;
	cr_assert_eq(c->state, CONN_CLOSED);
	/* Nothing of the conn's own is left (LeakSanitizer, in the test
	 * build, would only print what a forked test leaked). */
	cr_assert(c->held.data == NULL && c->sending.data == NULL, "closed with buffers held");
	cr_assert(!c->recv_armed && !c->send_inflight && !c->connect_inflight && !c->close_inflight,
		  "closed with an operation in flight");
}

static const struct conn_handler t_handler = {
	.input = t_input,
	.input_end = t_input_end,
	.timeout = t_timeout,
	.alarm = t_alarm,
	.connected = t_connected,
	.failed = t_failed,
	.closed = t_closed,
};

static void t_end_init(struct t_end *e)
{
	memset(e, 0, sizeof(*e));
	e->take = SIZE_MAX;
	e->connected = T_NOT_YET;
}

static struct conn_setup t_setup(struct t_end *e)
{
	return (struct conn_setup){.worker = &t_worker,
				   .handler = &t_handler,
				   .output = &e->out,
				   .held_max = t_held_max,
				   .output_max = t_output_max};
}

/* The test's buffers (the conn's own are freed by the conn). */
static void t_end_free(struct t_end *e)
{
	cr_assert_eq(e->closes, 1, "closed() ran %u times", e->closes);
	buf_release(&e->in);
	buf_release(&e->out);
}

/* Close (graceful) or abort, and wait for closed(). */
static void t_end_finish(struct t_end *e, bool abort)
{
	if (e->closes == 0) {
		if (abort)
			conn_abort(&e->conn);
		else
			conn_close(&e->conn);
	}
	T_UNTIL(e->closes > 0, T_WAIT_MS);
	t_end_free(e);
}

/* ---- plain sockets of the test ------------------------------------------------------- */

static socklen_t t_loopback(int family, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		in6->sin6_port = htons((uint16_t)port);
		return sizeof(*in6);
	}
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	in->sin_family = AF_INET;
	in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	in->sin_port = htons((uint16_t)port);
	return sizeof(*in);
}

/* A listening socket on loopback (an ephemeral port), its address in *ss;
 * -1 when the family is not available here. */
static int t_listen(int family, int backlog, struct sockaddr_storage *ss, socklen_t *len)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	*len = t_loopback(family, 0, ss);
	if (bind(fd, (struct sockaddr *)ss, *len) != 0 || listen(fd, backlog) != 0 ||
	    getsockname(fd, (struct sockaddr *)ss, len) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Accept on lfd while the loop turns (the connect is on the ring). */
static int t_accept(int lfd)
{
	uint64_t deadline = worker_clock_ms() + T_WAIT_MS;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			return fd;
		cr_assert(errno == EAGAIN, "accept: %s", strerror(errno));
		cr_assert_lt(worker_clock_ms(), deadline, "no connection to accept");
		t_turn();
	}
}

/* A plain client socket connected to addr (non-blocking once connected);
 * rcvbuf > 0 sets its receive buffer first (a small window). */
static int t_plain_connect(const struct sockaddr_storage *addr, socklen_t len, int rcvbuf)
{
	int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	if (rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	cr_assert_eq(connect(fd, (const struct sockaddr *)addr, len), 0, "connect: %s",
		     strerror(errno));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* A conn accepted from a plain client: *client gets the client's socket. */
static void t_accepted_pair(struct t_end *server, int *client, int client_rcvbuf, int server_sndbuf)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = t_listen(AF_INET, 16, &addr, &len);
	cr_assert_geq(lfd, 0);
	*client = t_plain_connect(&addr, len, client_rcvbuf);
	int fd = t_accept(lfd);
	close(lfd);
	if (server_sndbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &server_sndbuf, sizeof(server_sndbuf));
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	cr_assert_eq(getpeername(fd, (struct sockaddr *)&peer, &peer_len), 0);
	t_end_init(server);
	struct conn_setup setup = t_setup(server);
	conn_accept(&server->conn, &setup, fd, (struct sockaddr *)&peer, peer_len);
}

/* Read what is there on a plain socket into b; returns bytes read, 0 on
 * EOF, -1 when nothing is there now, or -errno. */
static ssize_t t_plain_read(int fd, struct buf *b)
{
	char tmp[65536];
	ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN ? -1 : -errno;
	if (n > 0)
		cr_assert_eq(buf_append(b, tmp, (size_t)n), 0);
	return n;
}

/* A pattern that shows misordered or lost bytes. */
static char t_pattern(size_t i, unsigned seed)
{
	return (char)('A' + (i * 7 + i / 4093 + seed) % 26);
}

static char *t_patterned(size_t len, unsigned seed)
{
	char *p = malloc(len);
	cr_assert_not_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = t_pattern(i, seed);
	return p;
}

static void t_assert_pattern(const struct buf *b, size_t len, unsigned seed, const char *what)
{
	cr_assert_eq(buf_len(b), len, "%s: %zu bytes, expected %zu", what, buf_len(b), len);
	const char *p = buf_head(b);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(p[i], t_pattern(i, seed), "%s: byte %zu differs", what, i);
}

/* Send what a plain non-blocking socket takes now of data[*sent..len). */
static void t_plain_send_some(int fd, const char *data, size_t len, size_t *sent)
{
	if (*sent == len)
		return;
	ssize_t n = send(fd, data + *sent, len - *sent, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n > 0)
		*sent += (size_t)n;
	else
		cr_assert(n < 0 && errno == EAGAIN, "send: %s", strerror(errno));
}

/* The same while the loop turns, until all is sent or the socket takes
 * nothing for stall_ms. */
static void t_plain_send_until_stalled(int fd, const char *data, size_t len, size_t *sent,
				       int stall_ms)
{
	uint64_t last = worker_clock_ms();
	while (*sent < len && worker_clock_ms() - last < (uint64_t)stall_ms) {
		size_t before = *sent;
		t_plain_send_some(fd, data, len, sent);
		if (*sent > before)
			last = worker_clock_ms();
		t_turn();
	}
}

/* ---- connecting -------------------------------------------------------------------- */

Test(conn, connect_then_data_flows_both_ways_and_close_is_heard)
{
	enum { SIZE = 1 << 20 }; /* past every buffer: partial sends, many receives */
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = t_listen(AF_INET, 16, &addr, &len);
	cr_assert_geq(lfd, 0);
	static struct t_end client, server;
	t_end_init(&client);
	struct conn_setup setup = t_setup(&client);
	struct conn_target target = {
		.address = (struct sockaddr *)&addr, .address_len = len, .timeout_ms = 2000};
	cr_assert_eq(conn_connect(&client.conn, &setup, &target), 0);
	cr_assert_eq(client.conn.state, CONN_CONNECTING);
	int fd = t_accept(lfd);
	close(lfd);
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	cr_assert_eq(getpeername(fd, (struct sockaddr *)&peer, &peer_len), 0);
	t_end_init(&server);
	setup = t_setup(&server);
	conn_accept(&server.conn, &setup, fd, (struct sockaddr *)&peer, peer_len);
	T_UNTIL(client.connected != T_NOT_YET, T_WAIT_MS);
	cr_assert_eq(client.connected, 0, "connect: %s", strerror(-client.connected));
	cr_assert_eq(client.conn.state, CONN_OPEN);
	cr_assert_eq(memcmp(conn_peer(&client.conn), &addr, len), 0, "the peer is not the target");

	char *a = t_patterned(SIZE, 1), *b = t_patterned(SIZE, 2);
	cr_assert_eq(buf_append(&client.out, a, SIZE), 0);
	cr_assert_eq(buf_append(&server.out, b, SIZE), 0);
	conn_flush(&client.conn);
	conn_flush(&server.conn);
	T_UNTIL(buf_len(&server.in) == SIZE && buf_len(&client.in) == SIZE, T_WAIT_MS);
	t_assert_pattern(&server.in, SIZE, 1, "client to server");
	t_assert_pattern(&client.in, SIZE, 2, "server to client");
	free(a);
	free(b);
	T_UNTIL(conn_output_queued(&client.conn) == 0 && conn_output_queued(&server.conn) == 0,
		T_WAIT_MS);
	/* Idle again: the conns keep no I/O buffer of that size. */
	T_UNTIL(!client.conn.send_inflight && !server.conn.send_inflight, T_WAIT_MS);
	cr_assert_null(client.conn.sending.data);
	cr_assert_null(server.conn.sending.data);
	cr_assert_null(server.conn.held.data);
	cr_assert_leq(client.out.cap, 4096);

	/* The client closes: the server hears EOF, after all the data. */
	conn_close(&client.conn);
	T_UNTIL(server.input_ended && client.closes == 1, T_WAIT_MS);
	cr_assert_eq(client.failures + server.failures, 0);
	t_end_free(&client);
	t_end_finish(&server, false);
}

Test(conn, connect_to_a_closed_port_reports_econnrefused)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = t_listen(AF_INET, 1, &addr, &len);
	cr_assert_geq(lfd, 0);
	close(lfd); /* a port that was free a moment ago, and nobody listens */
	static struct t_end client;
	t_end_init(&client);
	struct conn_setup setup = t_setup(&client);
	struct conn_target target = {
		.address = (struct sockaddr *)&addr, .address_len = len, .timeout_ms = 2000};
	cr_assert_eq(conn_connect(&client.conn, &setup, &target), 0);
	T_UNTIL(client.closes == 1, T_WAIT_MS);
	cr_assert_eq(client.connected, -ECONNREFUSED, "connect: %d", client.connected);
	cr_assert_eq(client.input_calls + client.timeouts + (unsigned)client.failures, 0);
	t_end_free(&client);
}

/*
 * A listener whose accept queue is full and never accepted: the kernel
 * drops the SYNs of further connects, which hang (loopback, no other
 * host). Returns the listener, its address in *addr; the queued and
 * hanging fillers in fillers[] (-1 where unused). -1 if no connect hung.
 */
static int t_hanging_listener(struct sockaddr_storage *addr, socklen_t *len, int fillers[8])
{
	int lfd = t_listen(AF_INET, 0, addr, len);
	cr_assert_geq(lfd, 0);
	for (int i = 0; i < 8; i++)
		fillers[i] = -1;
	for (int i = 0; i < 8; i++) {
		fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		cr_assert_geq(fillers[i], 0);
		if (connect(fillers[i], (struct sockaddr *)addr, *len) == 0)
			continue;
		cr_assert_eq(errno, EINPROGRESS);
		struct pollfd pfd = {.fd = fillers[i], .events = POLLOUT};
		if (poll(&pfd, 1, 200) == 0)
			return lfd; /* this one hangs: the queue is full */
	}
	return -1;
}

static void t_close_all(int lfd, int fds[8])
{
	for (int i = 0; i < 8; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	close(lfd);
}

Test(conn, connect_timeout_is_reported_as_etimedout)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int fillers[8];
	int lfd = t_hanging_listener(&addr, &len, fillers);
	if (lfd < 0)
		cr_skip_test("cannot make a loopback connect hang here (accept queue never full)");
	static struct t_end client;
	t_end_init(&client);
	struct conn_setup setup = t_setup(&client);
	struct conn_target target = {
		.address = (struct sockaddr *)&addr, .address_len = len, .timeout_ms = 200};
	t_turn(); /* the loop's clock is now: the timeout counts from here */
	uint64_t t0 = t_worker.now_ms;
	cr_assert_eq(conn_connect(&client.conn, &setup, &target), 0);
	T_UNTIL(client.connected != T_NOT_YET, T_WAIT_MS);
	uint64_t took = worker_clock_ms() - t0;
	cr_assert_eq(client.connected, -ETIMEDOUT, "connect: %d", client.connected);
	cr_assert_geq(took, 200, "timed out after %llu ms of 200", (unsigned long long)took);
	cr_assert_leq(took, 2000, "timed out only after %llu ms", (unsigned long long)took);
	T_UNTIL(client.closes == 1, T_WAIT_MS);
	t_end_free(&client);

	/* Given up before the timeout: closed, without a connected(). */
	t_end_init(&client);
	setup = t_setup(&client);
	target.timeout_ms = 5000;
	cr_assert_eq(conn_connect(&client.conn, &setup, &target), 0);
	t_turn();
	conn_close(&client.conn);
	T_UNTIL(client.closes == 1, T_WAIT_MS);
	cr_assert_eq(client.connected, T_NOT_YET, "connected() after the user gave up");
	t_end_free(&client);
	t_close_all(lfd, fillers);
}

Test(conn, connect_with_a_tiny_timeout_ends_cleanly_either_way)
{
	/* 1 ms: whether the connect or the timer wins, one outcome, once. */
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = t_listen(AF_INET, 16, &addr, &len);
	cr_assert_geq(lfd, 0);
	for (int round = 0; round < 20; round++) {
		static struct t_end client;
		t_end_init(&client);
		struct conn_setup setup = t_setup(&client);
		struct conn_target target = {
			.address = (struct sockaddr *)&addr, .address_len = len, .timeout_ms = 1};
		cr_assert_eq(conn_connect(&client.conn, &setup, &target), 0);
		T_UNTIL(client.connected != T_NOT_YET, T_WAIT_MS);
		cr_assert(client.connected == 0 || client.connected == -ETIMEDOUT, "connect: %d",
			  client.connected);
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			close(fd);
		t_end_finish(&client, round % 2 == 1);
	}
	close(lfd);
}

Test(conn, connect_binds_the_source_address_and_speaks_ipv6)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = t_listen(AF_INET, 16, &addr, &len);
	cr_assert_geq(lfd, 0);
	struct sockaddr_in source = {.sin_family = AF_INET};
	source.sin_addr.s_addr = htonl(0x7f000002); /* 127.0.0.2: loopback too */
	static struct t_end client;
	t_end_init(&client);
	struct conn_setup setup = t_setup(&client);
	struct conn_target target = {.address = (struct sockaddr *)&addr,
				     .address_len = len,
				     .source = (struct sockaddr *)&source,
				     .source_len = sizeof(source),
				     .timeout_ms = 2000};
	cr_assert_eq(conn_connect(&client.conn, &setup, &target), 0);
	int fd = t_accept(lfd);
	struct sockaddr_in seen;
	socklen_t seen_len = sizeof(seen);
	cr_assert_eq(getpeername(fd, (struct sockaddr *)&seen, &seen_len), 0);
	cr_assert_eq(ntohl(seen.sin_addr.s_addr), 0x7f000002u, "the server saw %s",
		     inet_ntoa(seen.sin_addr));
	T_UNTIL(client.connected != T_NOT_YET, T_WAIT_MS);
	cr_assert_eq(client.connected, 0);
	close(fd);
	t_end_finish(&client, false);
	close(lfd);

	/* A source address that is not ours: refused at once, no callback. */
	source.sin_addr.s_addr = htonl(0xc0000201); /* 192.0.2.1: bind fails, nothing sent */
	t_end_init(&client);
	setup = t_setup(&client);
	cr_assert_eq(conn_connect(&client.conn, &setup, &target), -EADDRNOTAVAIL);
	cr_assert_eq(client.connected, T_NOT_YET);

	lfd = t_listen(AF_INET6, 16, &addr, &len);
	if (lfd < 0)
		cr_skip_test("no IPv6 loopback here");
	t_end_init(&client);
	setup = t_setup(&client);
	target = (struct conn_target){
		.address = (struct sockaddr *)&addr, .address_len = len, .timeout_ms = 2000};
	cr_assert_eq(conn_connect(&client.conn, &setup, &target), 0);
	fd = t_accept(lfd);
	T_UNTIL(client.connected != T_NOT_YET, T_WAIT_MS);
	cr_assert_eq(client.connected, 0, "connect to [::1]: %s", strerror(-client.connected));
	cr_assert_eq(conn_peer(&client.conn)->sa_family, AF_INET6);
	cr_assert_eq(send(fd, "220 hello\r\n", 11, MSG_NOSIGNAL), 11);
	T_UNTIL(buf_len(&client.in) == 11, T_WAIT_MS);
	cr_assert_eq(memcmp(buf_head(&client.in), "220 hello\r\n", 11), 0);
	close(fd);
	T_UNTIL(client.input_ended, T_WAIT_MS);
	t_end_finish(&client, false);
	close(lfd);
}

/* ---- backpressure ------------------------------------------------------------------- */

/* The user takes nothing: receiving pauses past the held cap `cap`. */
static void t_held_input_pauses_receiving(size_t cap)
{
	enum { SIZE = 4 << 20 };
	static struct t_end server;
	int client;
	t_accepted_pair(&server, &client, 0, 0);
	cr_assert_eq(server.conn.held_max, cap);
	server.take = 0; /* busy elsewhere (a session waiting for the disk) */
	char *data = t_patterned(SIZE, 3);
	size_t sent = 0;
	t_plain_send_until_stalled(client, data, SIZE, &sent, 300);
	cr_assert_eq(buf_len(&server.in), 0);
	cr_assert_eq(server.input_calls, 1, "offered again while it took nothing");
	cr_assert(server.conn.recv_paused, "still receiving with %zu bytes held",
		  buf_len(&server.conn.held));
	size_t held = buf_len(&server.conn.held);
	cr_assert_gt(held, cap);
	/* Past the cap by what one loop turn brought in, at most the ring. */
	cr_assert_leq(held, cap + (size_t)WORKER_RECV_BUFFERS * WORKER_RECV_BUFFER_SIZE);

	server.take = SIZE_MAX;
	conn_resume_input(&server.conn);
	cr_assert_eq(buf_len(&server.in), held, "the held input was not offered at once");
	t_plain_send_until_stalled(client, data, SIZE, &sent, 2000);
	cr_assert_eq(sent, SIZE, "the client could not send it all");
	T_UNTIL(buf_len(&server.in) == SIZE, T_WAIT_MS);
	t_assert_pattern(&server.in, SIZE, 3, "client to server");
	cr_assert(!server.conn.recv_paused);
	cr_assert_eq(buf_len(&server.conn.held), 0);
	free(data);
	close(client);
	T_UNTIL(server.input_ended, T_WAIT_MS);
	t_end_finish(&server, false);
}

Test(conn, input_the_user_does_not_take_pauses_receiving_until_resumed)
{
	t_held_input_pauses_receiving(CONN_HELD_DEFAULT);
}

Test(conn, the_held_input_cap_comes_from_the_setup)
{
	t_held_max = 16 << 10;
	t_held_input_pauses_receiving(16 << 10);
}

/* The peer reads no output: input stops past the output cap `cap`. */
static void t_unread_output_stops_input(size_t cap)
{
	enum { SIZE = 64 << 10, AMPLIFY = 16 };
	static struct t_end server;
	int client;
	/* Small socket buffers both sides: the kernel keeps little of the
	 * output, the rest waits in the conn. */
	t_accepted_pair(&server, &client, 4096, 8192);
	cr_assert_eq(server.conn.output_max, cap);
	server.amplify = AMPLIFY; /* a request answered with 16 times its size */
	char *data = t_patterned(SIZE, 4);
	size_t sent = 0;
	t_plain_send_until_stalled(client, data, SIZE, &sent, 300);
	for (int i = 0; i < 30; i++) /* let it settle */
		t_turn();
	size_t queued = conn_output_queued(&server.conn);
	cr_assert(server.conn.output_blocked, "%zu bytes of output queued, input not stopped",
		  queued);
	cr_assert_gt(queued, cap);
	/* Past the cap by the answers to one delivery (a receive buffer). */
	cr_assert_leq(queued, cap + (size_t)AMPLIFY * WORKER_RECV_BUFFER_SIZE,
		      "%zu bytes of output queued", queued);
	size_t taken = buf_len(&server.in);
	cr_assert_lt(taken, sent, "every byte sent was fed to the user");

	/* The peer reads: the output drains, input flows again, all of it. */
	struct buf got = {0};
	uint64_t deadline = worker_clock_ms() + T_WAIT_MS;
	while (buf_len(&got) < (size_t)SIZE * AMPLIFY) {
		cr_assert_lt(worker_clock_ms(), deadline, "%zu of %zu output bytes", buf_len(&got),
			     (size_t)SIZE * AMPLIFY);
		t_plain_send_some(client, data, SIZE, &sent);
		ssize_t n = t_plain_read(client, &got);
		cr_assert_neq(n, 0, "EOF after %zu bytes", buf_len(&got));
		t_turn();
	}
	t_assert_pattern(&server.in, SIZE, 4, "client to server");
	const char *g = buf_head(&got);
	for (size_t i = 0; i < (size_t)SIZE * AMPLIFY; i++)
		cr_assert_eq(g[i], t_pattern(i / AMPLIFY, 4), "output byte %zu differs", i);
	cr_assert(!server.conn.output_blocked);
	buf_release(&got);
	free(data);
	close(client);
	T_UNTIL(server.input_ended, T_WAIT_MS);
	t_end_finish(&server, false);
}

Test(conn, output_not_read_by_the_peer_stops_input_until_drained)
{
	t_unread_output_stops_input(CONN_OUTPUT_DEFAULT);
}

Test(conn, the_output_cap_comes_from_the_setup)
{
	t_output_max = 16 << 10;
	t_unread_output_stops_input(16 << 10);
}

Test(conn, a_user_that_stops_at_the_output_cap_is_fed_again_once_it_drains)
{
	enum { SIZE = 64 << 10, AMPLIFY = 100 };
	static struct t_end server;
	int client;
	t_output_max = 16 << 10;
	t_accepted_pair(&server, &client, 4096, 8192);
	server.amplify = AMPLIFY;
	server.stop_when_full = true;
	char *data = t_patterned(SIZE, 5);
	size_t sent = 0;
	t_plain_send_until_stalled(client, data, SIZE, &sent, 300);
	for (int i = 0; i < 30; i++)
		t_turn();
	cr_assert(server.conn.output_blocked, "%zu bytes of output queued, input not stopped",
		  conn_output_queued(&server.conn));
	cr_assert(!server.conn.input_blocked, "a user stopped by its output was told to resume");
	cr_assert_lt(buf_len(&server.in), sent, "every byte sent was fed to the user");
	/* Past the cap by one request's answer, not by one delivery's. */
	cr_assert_gt(server.most_queued, 16 << 10);
	cr_assert_leq(server.most_queued, (16 << 10) + AMPLIFY, "%zu bytes of output queued",
		      server.most_queued);

	/* The peer reads: input flows again without conn_resume_input(). */
	struct buf got = {0};
	uint64_t deadline = worker_clock_ms() + T_WAIT_MS;
	while (buf_len(&got) < (size_t)SIZE * AMPLIFY) {
		cr_assert_lt(worker_clock_ms(), deadline, "%zu of %zu output bytes", buf_len(&got),
			     (size_t)SIZE * AMPLIFY);
		t_plain_send_some(client, data, SIZE, &sent);
		ssize_t n = t_plain_read(client, &got);
		cr_assert_neq(n, 0, "EOF after %zu bytes", buf_len(&got));
		t_turn();
	}
	cr_assert_leq(server.most_queued, (16 << 10) + AMPLIFY, "%zu bytes of output queued",
		      server.most_queued);
	t_assert_pattern(&server.in, SIZE, 5, "client to server");
	const char *g = buf_head(&got);
	for (size_t i = 0; i < (size_t)SIZE * AMPLIFY; i++)
		cr_assert_eq(g[i], t_pattern(i / AMPLIFY, 5), "output byte %zu differs", i);
	buf_release(&got);
	free(data);
	close(client);
	T_UNTIL(server.input_ended, T_WAIT_MS);
	t_end_finish(&server, false);
}

/* ---- the end of input, and the end ------------------------------------------------ */

Test(conn, eof_comes_after_the_data_and_the_answer_still_goes_out)
{
	static struct t_end server;
	int client;
	t_accepted_pair(&server, &client, 0, 0);
	server.take = 0;
	server.answer_at_end = "221 bye\r\n";
	cr_assert_eq(send(client, "QUIT\r\n", 6, MSG_NOSIGNAL), 6);
	shutdown(client, SHUT_WR);
	for (int i = 0; i < 20; i++)
		t_turn();
	cr_assert(!server.input_ended, "EOF told before the data before it was taken");
	server.take = SIZE_MAX;
	conn_resume_input(&server.conn);
	cr_assert(server.input_ended);
	cr_assert_eq(buf_len(&server.in), 6);
	/* input_end() answered and closed: the answer, then EOF. */
	struct buf got = {0};
	ssize_t n;
	uint64_t deadline = worker_clock_ms() + T_WAIT_MS;
	while ((n = t_plain_read(client, &got)) != 0) {
		cr_assert(n > 0 || n == -1, "recv: %s", strerror((int)-n));
		cr_assert_lt(worker_clock_ms(), deadline, "no EOF after the answer");
		t_turn();
	}
	cr_assert_eq(buf_len(&got), 9);
	cr_assert_eq(memcmp(buf_head(&got), "221 bye\r\n", 9), 0);
	buf_release(&got);
	close(client);
	T_UNTIL(server.closes == 1, T_WAIT_MS);
	t_end_free(&server);
}

Test(conn, close_sends_what_was_queued_then_drops_input)
{
	enum { SIZE = 4 << 20 };
	static struct t_end server;
	int client;
	t_accepted_pair(&server, &client, 0, 0);
	char *data = t_patterned(SIZE, 5);
	cr_assert_eq(buf_append(&server.out, data, SIZE), 0);
	conn_flush(&server.conn);
	conn_close(&server.conn);
	cr_assert_eq(server.conn.state, CONN_CLOSING);
	cr_assert_eq(send(client, "late\r\n", 6, MSG_NOSIGNAL), 6);
	struct buf got = {0};
	uint64_t deadline = worker_clock_ms() + T_WAIT_MS;
	for (ssize_t n; (n = t_plain_read(client, &got)) != 0;) {
		cr_assert(n > 0 || n == -1, "recv: %s", strerror((int)-n));
		cr_assert_lt(worker_clock_ms(), deadline, "%zu of %d bytes, no EOF", buf_len(&got),
			     SIZE);
		t_turn();
	}
	t_assert_pattern(&got, SIZE, 5, "queued before the close");
	T_UNTIL(server.closes == 1, T_WAIT_MS);
	cr_assert_eq(buf_len(&server.in), 0, "input taken after the close");
	buf_release(&got);
	free(data);
	close(client);
	t_end_free(&server);
}

Test(conn, abort_frees_a_conn_whose_send_is_stuck)
{
	enum { SIZE = 8 << 20 };
	static struct t_end server;
	int client;
	t_accepted_pair(&server, &client, 4096, 8192); /* and the client never reads */
	char *data = t_patterned(SIZE, 6);
	cr_assert_eq(buf_append(&server.out, data, SIZE), 0);
	free(data);
	conn_flush(&server.conn);
	for (int i = 0; i < 20; i++)
		t_turn();
	cr_assert(server.conn.send_inflight, "the send is not stuck");
	conn_abort(&server.conn);
	cr_assert_eq(server.conn.state, CONN_TEARDOWN);
	cr_assert_eq(server.closes, 0, "closed() inside conn_abort()");
	T_UNTIL(server.closes == 1, 1000);
	cr_assert_eq(server.failures, 0, "a forced close is no failure");
	/* The client sees its connection end (the unsent data is gone). */
	struct buf got = {0};
	uint64_t deadline = worker_clock_ms() + T_WAIT_MS;
	ssize_t n;
	while ((n = t_plain_read(client, &got)) > 0 || n == -1) {
		cr_assert_lt(worker_clock_ms(), deadline, "the client never saw the end");
		buf_clear(&got);
		t_turn();
	}
	buf_release(&got);
	close(client);
	t_end_free(&server);
}

Test(conn, peer_reset_is_a_failure_then_closed)
{
	static struct t_end server;
	int client;
	t_accepted_pair(&server, &client, 0, 0);
	struct linger hard = {.l_onoff = 1, .l_linger = 0};
	setsockopt(client, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
	close(client); /* RST */
	T_UNTIL(server.closes == 1, T_WAIT_MS);
	cr_assert_eq(server.failures, 1);
	cr_assert_eq(server.failure, CONN_FAILURE_RECV);
	cr_assert_eq(server.failure_error, ECONNRESET, "%s", strerror(server.failure_error));
	t_end_free(&server);
}

/* ---- timers ------------------------------------------------------------------------- */

Test(conn, idle_timeout_fires_after_the_last_activity_not_before)
{
	static struct t_end server;
	int client;
	t_accepted_pair(&server, &client, 0, 0);
	server.touch_on_timeout = true;
	uint64_t t0 = t_worker.now_ms;
	conn_set_timeout(&server.conn, 200);
	/* Activity at about 100 ms moves the deadline. */
	T_UNTIL(t_worker.now_ms >= t0 + 100, T_WAIT_MS);
	cr_assert_eq(send(client, "x", 1, MSG_NOSIGNAL), 1);
	T_UNTIL(buf_len(&server.in) == 1, T_WAIT_MS);
	uint64_t active = server.conn.last_activity_ms;
	T_UNTIL(server.timeouts == 1, T_WAIT_MS);
	cr_assert_geq(server.timeout_at, active + 200, "fired %llu ms after the activity",
		      (unsigned long long)(server.timeout_at - active));
	cr_assert_leq(server.timeout_at, active + 200 + 200);
	/* conn_touch() in timeout() granted a whole timeout more. */
	uint64_t first = server.timeout_at;
	T_UNTIL(server.timeouts == 2, T_WAIT_MS);
	cr_assert_geq(server.timeout_at, first + 200);
	conn_set_timeout(&server.conn, 0);
	close(client);
	T_UNTIL(server.input_ended, T_WAIT_MS);
	t_end_finish(&server, false);
}

Test(conn, a_shorter_timeout_brings_the_timer_forward)
{
	static struct t_end server;
	int client;
	t_accepted_pair(&server, &client, 0, 0);
	uint64_t t0 = t_worker.now_ms;
	conn_set_timeout(&server.conn, 60000);
	t_turn();
	conn_set_timeout(&server.conn, 150); /* entering a stricter phase (DATA) */
	T_UNTIL(server.timeouts == 1, 2000);
	cr_assert_geq(server.timeout_at, t0 + 150);
	/* The timeout did not close the conn: that is the user's call. */
	cr_assert_eq(server.conn.state, CONN_OPEN);
	conn_close(&server.conn);
	T_UNTIL(server.closes == 1, T_WAIT_MS);
	t_end_free(&server);
	close(client);
}

Test(conn, alarm_fires_once_and_not_after_a_close)
{
	static struct t_end server;
	int client;
	t_accepted_pair(&server, &client, 0, 0);
	uint64_t t0 = t_worker.now_ms;
	conn_alarm(&server.conn, 100);
	T_UNTIL(server.alarms == 1, T_WAIT_MS);
	cr_assert_geq(server.alarm_at, t0 + 100);
	for (int i = 0; i < 20; i++)
		t_turn();
	cr_assert_eq(server.alarms, 1);
	conn_alarm(&server.conn, 50);
	conn_alarm_cancel(&server.conn);
	conn_alarm(&server.conn, 50);
	conn_close(&server.conn);
	T_UNTIL(server.closes == 1, T_WAIT_MS);
	cr_assert_eq(server.alarms, 1, "an alarm after the close");
	t_end_free(&server);
	close(client);
}

/* ---- the transport table ------------------------------------------------------------- */

/* A transport that is not plain: every byte XORed on the wire, both ways,
 * with a copy (as TLS will have). Counts its closes in its state. */
static int t_xor_receive(struct conn *c, const char *wire, size_t len, conn_deliver_fn *deliver)
{
	char plain[WORKER_RECV_BUFFER_SIZE];
	cr_assert_leq(len, sizeof(plain));
	for (size_t i = 0; i < len; i++)
		plain[i] = wire[i] ^ 0x5a;
	return deliver(c, plain, len);
}

static int t_xor_send(struct conn *c, struct buf *plain, struct buf *wire)
{
	(void)c;
	size_t len = buf_len(plain);
	if (len == 0)
		return 0;
	char *w = buf_extend(wire, len);
	if (w == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++)
		w[i] = buf_head(plain)[i] ^ 0x5a;
	buf_consume(plain, len);
	return 0;
}

static void t_xor_close(struct conn *c)
{
	(*(unsigned *)c->transport_state)++;
}

static const struct conn_transport t_xor = {
	.name = "xor",
	.receive = t_xor_receive,
	.send = t_xor_send,
	.close = t_xor_close,
};

Test(conn, a_transport_turns_wire_bytes_into_the_users_and_back)
{
	enum { SIZE = 256 << 10 };
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = t_listen(AF_INET, 16, &addr, &len);
	cr_assert_geq(lfd, 0);
	int client = t_plain_connect(&addr, len, 0);
	int fd = t_accept(lfd);
	close(lfd);
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	cr_assert_eq(getpeername(fd, (struct sockaddr *)&peer, &peer_len), 0);
	static unsigned closed;
	closed = 0;
	static struct t_end server;
	t_end_init(&server);
	server.amplify = 1; /* an echo */
	struct conn_setup setup = t_setup(&server);
	setup.transport = &t_xor;
	setup.transport_state = &closed;
	conn_accept(&server.conn, &setup, fd, (struct sockaddr *)&peer, peer_len);

	char *data = t_patterned(SIZE, 7);
	char *wire = malloc(SIZE);
	cr_assert_not_null(wire);
	for (size_t i = 0; i < SIZE; i++)
		wire[i] = data[i] ^ 0x5a;
	size_t sent = 0;
	struct buf got = {0};
	uint64_t deadline = worker_clock_ms() + T_WAIT_MS;
	while (buf_len(&got) < SIZE) {
		cr_assert_lt(worker_clock_ms(), deadline, "%zu of %d echoed", buf_len(&got), SIZE);
		t_plain_send_some(client, wire, SIZE, &sent);
		cr_assert_neq(t_plain_read(client, &got), 0);
		t_turn();
	}
	t_assert_pattern(&server.in, SIZE, 7, "decoded by the transport");
	cr_assert_eq(memcmp(buf_head(&got), wire, SIZE), 0, "the echo was not encoded");
	buf_release(&got);
	free(wire);
	free(data);
	close(client);
	T_UNTIL(server.input_ended, T_WAIT_MS);
	t_end_finish(&server, false);
	cr_assert_eq(closed, 1, "the transport's close ran %u times", closed);
}
