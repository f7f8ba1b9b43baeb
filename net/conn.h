/*
 * conn — one TCP connection on a worker's ring, accepted or connected, for
 * whatever protocol runs over it: it knows nothing of SMTP. The inbound
 * SMTP session (net/inbound_session.c) sits on it, and so will the
 * outbound client.
 *
 * The user embeds a struct conn in its own struct, gives it a struct
 * conn_handler (its callbacks) and a struct buf of its own for output, and
 * hears of everything through the handler. Callbacks come from the
 * worker's loop (a completion or a timer); input() and input_end() also
 * from conn_resume_input(), failed() also from conn_flush() (a transport
 * that refuses); closed() only from the loop.
 *
 * Input: one multishot recv per connection on the worker's provided-buffer
 * ring. Each completion's bytes go through the transport and straight to
 * handler->input() (plain: no copy), and the buffer goes back to the ring
 * in the same loop turn. What the user does not take is copied into
 * `held`, and nothing more is offered until it calls conn_resume_input().
 * Past held_max held bytes (the setup's cap) the recv is cancelled (the
 * peer's sending stalls in TCP) and re-armed once held input drains below
 * half of it. What the kernel delivered in the loop turn that passed the
 * cap is held too: that is at most the worker's receive ring, in practice
 * what the socket had queued.
 *
 * Output: the user appends to its own buffer (`output`, registered at
 * setup) and calls conn_flush(). The conn hands it to the kernel through
 * the transport (plain: the buffers are swapped, no copy), one send in
 * flight, partial sends continued. While output keeps coming the two
 * buffers take turns; once it stops, the conn keeps none (a small one is
 * left with the user, a big one freed). Past output_max bytes queued and
 * not yet sent (the setup's other cap), no input is offered to the user,
 * and the recv is cancelled as soon as more arrives, until the output
 * drains below half of it: a peer that sends requests and never reads the
 * answers stalls in TCP instead of making us buffer its requests or our
 * answers without bound. (The check runs between offers of at most 8 KiB, so the
 * output may pass the cap by the answers to 8 KiB of input; a user that
 * checks conn_output_full() between requests, and takes no more input
 * once it holds, keeps that to the answer of one request.)
 *
 * End of input (EOF): handler->input_end() once every byte before it was
 * taken; receiving stops, output still goes out (a peer may send a whole
 * request, shut down its sending side, then read the answer).
 *
 * Timeouts: an idle timeout on the worker's timer wheel, armed lazily
 * (activity only stamps a time; the timer re-arms itself when it fires
 * early), which the user may change at any time: a shorter one brings the
 * timer forward. handler->timeout() when it passes. A separate one-shot
 * alarm is the user's own (conn_alarm()).
 *
 * Close: conn_close() is graceful (no more input; the socket closes once
 * the queued output is sent, or the idle timeout passes first);
 * conn_abort() is at once. The conn is done when nothing of it is in
 * flight any more (recv, send, connect, and the close of its socket, which
 * goes through the ring); then handler->closed(), from the loop, never
 * from inside a call into the conn. Only from then on may the user free
 * the memory holding the conn. A conn lives and dies on its worker.
 *
 * The transport (struct conn_transport, after Redis's ConnectionType) is
 * what turns socket bytes into the user's bytes and back: conn_plain now;
 * TLS later, without the users noticing.
 */
#ifndef FERRY_NET_CONN_H
#define FERRY_NET_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/timer.h"
#include "core/worker.h"

/* The caps when the setup gives none. */
#define CONN_HELD_DEFAULT   65536 /* input held for the user: past this, receiving pauses */
#define CONN_OUTPUT_DEFAULT 65536 /* output not yet sent: past this, input waits */

struct conn;

/* What broke; the conn is torn down after handler->failed(). */
enum conn_failure {
	CONN_FAILURE_RECV,       /* receiving failed (error: the errno) */
	CONN_FAILURE_SEND,       /* sending failed */
	CONN_FAILURE_INPUT_LOST, /* no memory to hold input: part of the stream is lost */
	CONN_FAILURE_TRANSPORT,  /* the transport refused the stream (a TLS alert...) */
};

struct conn_handler {
	/*
	 * Bytes for the user (valid during the call only), at most 8 KiB at
	 * a time. Returns how many it took; fewer than len means "no more
	 * for now": the conn keeps the rest and offers nothing until
	 * conn_resume_input() — or, when the output is over its cap then
	 * (conn_output_full()), until the output has drained: a user that
	 * stops for that reason alone need not resume.
	 */
	size_t (*input)(struct conn *c, const char *data, size_t len);
	/* The peer sent EOF, and every byte before it was taken. */
	void (*input_end)(struct conn *c);
	/* The idle timeout passed. conn_touch() to grant another. */
	void (*timeout)(struct conn *c);
	/* The alarm set with conn_alarm() is due (NULL if never set). */
	void (*alarm)(struct conn *c);
	/* conn_connect() only: 0, or -errno (-ECONNREFUSED, -ETIMEDOUT for
	 * the connect timeout...); after a failure the conn is torn down. */
	void (*connected)(struct conn *c, int status);
	/* Optional: a send went out whole (the peer is reading); what is
	 * still queued is conn_output_queued(). A user that produces output
	 * faster than the peer reads (a body to upload) makes more here. */
	void (*sent)(struct conn *c);
	/* The connection broke (error: errno); it is torn down next. */
	void (*failed)(struct conn *c, enum conn_failure what, int error);
	/* Nothing of the conn is left: its socket is closed and its buffers
	 * freed. The user may free the memory holding it now. */
	void (*closed)(struct conn *c);
};

/* The transport hands the user's bytes on with this (conn.c's): 0, or
 * -ENOMEM when bytes the user could not take yet could not be kept. */
typedef int conn_deliver_fn(struct conn *c, const char *data, size_t len);

/*
 * Between the socket and the user. Plain passes bytes through. A TLS
 * transport over memory BIOs fits the same slots: receive writes the
 * socket bytes into its read BIO, runs the handshake or reads the
 * decrypted records and delivers them, and calls conn_flush() when the
 * handshake has bytes to send; send encrypts `plain` and moves its write
 * BIO's contents to `wire`; close frees its state. io_uring keeps doing
 * all socket I/O.
 */
struct conn_transport {
	const char *name;
	/* Socket bytes arrived (valid during the call only): turn them into
	 * the user's bytes and deliver() those. 0, or -errno to break the
	 * connection (CONN_FAILURE_TRANSPORT; -ENOMEM from deliver() is
	 * CONN_FAILURE_INPUT_LOST). */
	int (*receive)(struct conn *c, const char *wire, size_t len, conn_deliver_fn *deliver);
	/* The send slot is free: move the user's bytes from `plain`
	 * (consuming them) into `wire` (empty on entry; its storage may be
	 * swapped for plain's). Leaving wire empty means nothing to send.
	 * 0, or -errno to break the connection. */
	int (*send)(struct conn *c, struct buf *plain, struct buf *wire);
	/* Optional: the conn is done; free transport_state. */
	void (*close)(struct conn *c);
};

/* Bytes pass through untouched: no copy either way. */
extern const struct conn_transport conn_plain;

enum conn_state {
	CONN_CONNECTING, /* conn_connect(): the connect is in flight */
	CONN_OPEN,       /* input offered to the user, output sent */
	CONN_CLOSING,    /* conn_close(): input dropped, output still goes out */
	CONN_TEARDOWN,   /* socket shut: waiting for what is in flight */
	CONN_CLOSED,     /* handler->closed() has run: no call may reach the conn */
};

union conn_address {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* How a conn is set up; read during conn_accept()/conn_connect() only. */
struct conn_setup {
	struct worker *worker;
	const struct conn_handler *handler;
	struct buf *output;                     /* the user's output buffer, for the conn's life */
	const struct conn_transport *transport; /* NULL: conn_plain */
	void *transport_state;
	size_t held_max;   /* input held for the user past which receiving pauses; 0: default */
	size_t output_max; /* unsent output past which no input is offered; 0: default */
	/* The socket's kernel send buffer (SO_SNDBUF; the kernel doubles it),
	 * 0: the kernel's own, which grows to net.ipv4.tcp_wmem's maximum
	 * (4 MiB). Output the peer does not read waits there before any of
	 * it counts against output_max: for a peer that never reads, this is
	 * what its connection costs the kernel. */
	size_t send_buffer;
};

/* Where conn_connect() goes. */
struct conn_target {
	const struct sockaddr *address; /* IPv4 or IPv6, with its port */
	socklen_t address_len;
	const struct sockaddr *source; /* bound first (port 0: any); NULL: any */
	socklen_t source_len;
	uint32_t timeout_ms; /* 0: the kernel's own (minutes) */
};

/* Read-only for the user: the fields are the conn's. */
struct conn {
	struct worker *worker;
	const struct conn_handler *handler;
	const struct conn_transport *transport;
	void *transport_state;
	struct buf *output; /* the user's: it appends, the conn takes */
	int fd;
	enum conn_state state;
	union conn_address peer; /* the remote end */

	struct worker_op recv_op;
	struct worker_op send_op;
	struct worker_op connect_op;
	struct worker_op close_op;
	struct timer timer; /* idle timeout; the connect timeout while connecting */
	struct timer alarm; /* the user's */
	uint64_t last_activity_ms;
	uint32_t timeout_ms; /* idle timeout, 0: none */
	size_t held_max;     /* held input past which receiving pauses */
	size_t output_max;   /* unsent output past which no input is offered */

	struct buf held;    /* input the user has not taken yet */
	struct buf sending; /* bytes handed to the kernel: no one touches them */

	bool recv_armed;        /* a multishot recv is in flight */
	bool recv_paused;       /* too much held input: not re-armed until it drains */
	bool send_inflight;     /* a send is in flight */
	bool connect_inflight;  /* the connect is in flight */
	bool close_inflight;    /* the close of the socket is in flight */
	bool connect_timed_out; /* the connect timeout cancelled the connect */
	bool input_blocked;     /* the user took less than offered: until resumed */
	bool output_blocked;    /* too much unsent output: no input until it drains */
	bool input_ended;       /* EOF received */
	bool input_end_told;    /* handler->input_end() has run */
	bool delivering;        /* inside handler->input() */
};

/*
 * A socket the listener accepted from `peer`: the conn owns fd from now
 * on. Receiving starts at once; there is no idle timeout until
 * conn_set_timeout().
 */
void conn_accept(struct conn *c, const struct conn_setup *setup, int fd,
		 const struct sockaddr *peer, socklen_t peer_len);

/*
 * Open an outbound connection (IORING_OP_CONNECT), bound to
 * target->source first if given, and call handler->connected() with the
 * outcome. Returns 0, or -errno when the socket could not even be made or
 * bound (no callback then, nothing to close).
 */
int conn_connect(struct conn *c, const struct conn_setup *setup, const struct conn_target *target);

/* Send what the user appended to its output buffer (while connecting:
 * once connected). Does nothing once the socket is shut. */
void conn_flush(struct conn *c);

/* The user takes input again: held bytes are offered at once (through
 * handler->input()), then receiving resumes. Never from inside input(). */
void conn_resume_input(struct conn *c);

/* The idle timeout, from the last activity on (0: none). Received bytes
 * and conn_touch() are activity. */
void conn_set_timeout(struct conn *c, uint32_t timeout_ms);

/* Activity that the conn cannot see (work done for the peer elsewhere). */
void conn_touch(struct conn *c);

/* handler->alarm() in delay_ms (replacing an alarm already set), unless
 * the conn closes first. */
void conn_alarm(struct conn *c, uint32_t delay_ms);
void conn_alarm_cancel(struct conn *c);

/* Graceful: no more input; the socket closes once the queued output is
 * sent (within the idle timeout). While connecting, the same as abort. */
void conn_close(struct conn *c);

/* At once: queued output is dropped, the socket shut. */
void conn_abort(struct conn *c);

/* Output queued and not yet sent (the user's buffer and the send slot). */
size_t conn_output_queued(const struct conn *c);

/* More output is queued than output_max: the conn offers no input until
 * it drains. */
bool conn_output_full(const struct conn *c);

static inline const struct sockaddr *conn_peer(const struct conn *c)
{
	return &c->peer.sa;
}

#endif
