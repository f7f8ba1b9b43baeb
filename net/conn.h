/*
 * conn — one accepted SMTP connection: the socket, its receive and send
 * operations on the worker's ring, timeouts, and the smtp_session it
 * drives.
 *
 * Buffer ownership: received bytes arrive in the worker's provided buffers
 * and are fed to the session at once; whatever the session cannot take yet
 * (it waits for the store) is copied into `held` and the buffer goes back
 * in the same loop turn. Replies gather in the session's `out`; a send
 * takes them over into `sending`, which no one touches until the send
 * completes. If a client keeps talking while its session waits, receiving
 * pauses once `held` passes CONN_HELD_MAX and resumes when it drains.
 *
 * End of input: a client may send a whole transaction and QUIT, then shut
 * down its sending side before reading. EOF stops receiving only: the
 * session still works through what it was sent (a commit in flight still
 * gets its 250), and the connection closes once every reply is sent.
 *
 * Lifetime: a conn is freed when it is closing and no operation of it is in
 * flight any more (recv, send). It lives and dies on its worker.
 */
#ifndef FERRY_NET_CONN_H
#define FERRY_NET_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/timer.h"
#include "core/worker.h"
#include "net/smtp_session.h"

#define CONN_HELD_MAX 65536

struct net_worker;

struct conn {
	struct net_worker *owner;
	struct conn *next, *prev; /* the worker's list of connections */
	int fd;
	struct sockaddr_storage peer;
	char peer_text[46];
	uint32_t client_slot; /* per-client accounting; see server.c */

	struct worker_op recv_op;
	struct worker_op send_op;
	struct timer timer;
	uint64_t last_activity_ms;

	struct buf held;    /* input the session could not take yet */
	struct buf sending; /* bytes handed to the kernel */

	bool greeted;     /* banner queued (after any greeting delay) */
	bool recv_armed;  /* a multishot recv is in flight */
	bool recv_paused; /* too much held input: not re-armed until it drains */
	bool send_inflight;
	bool input_ended; /* the client shut down its sending side (EOF) */
	bool closing;     /* no more input is processed; close when quiet */
	bool counted;     /* holds a place in the connection limits */

	struct smtp_session session;
};

/*
 * A socket was accepted on worker `owner`. `refusal`, when not NULL, is a
 * 421 reply line: the connection is over a limit, so it gets that reply
 * and is closed. Returns the conn, or NULL when even that was impossible
 * (the fd is closed then).
 */
struct conn *conn_accept(struct net_worker *owner, int fd, const struct sockaddr *peer,
			 socklen_t peer_len, const char *refusal, bool counted,
			 uint32_t client_slot);

/* Shutdown: tell the session (421 now, or after its transaction). */
void conn_shutdown(struct conn *c);

/* The shutdown deadline passed: close regardless. */
void conn_force_close(struct conn *c);

#endif
