/*
 * inbound_session — the inbound SMTP session on a connection: one
 * smtp_session (the pure state machine) on one accepted conn (the socket
 * layer), and the policy between them that is neither's alone.
 *
 *  - The greeting: 220 at once, or after greeting_delay; a client that
 *    talks before it gets 554 and is closed (early talker). A connection
 *    over a limit gets the server's 421 instead, and is closed.
 *  - Input goes to smtp_session_feed(); what the session cannot take while
 *    it waits for the store stays held in the conn and is fed again when
 *    the store wakes the session.
 *  - Timeouts: data_timeout while a body is received, idle_timeout
 *    otherwise; a session waiting for the disk (SMTP_STATE_COMMIT, or a
 *    body the store paused) is not timed out, the disk's slowness is not
 *    the client's fault.
 *  - Deadlines that received bytes do not extend, on the conn's alarm once
 *    greeted: a command line must end within command_deadline of its
 *    first octet; a body must arrive at min_data_rate, taken over the
 *    whole body once it has taken longer than data_timeout (time spent
 *    waiting for the store does not count).
 *  - The end: the session's last reply is sent, then the conn closes; a
 *    client that shut down its sending side (EOF) still gets every reply,
 *    including the 250 of a commit in flight.
 *  - Shutdown: 421 now, or after the transaction in progress as long as
 *    the client makes progress (a command, or body octets at
 *    min_data_rate, every two seconds; a commit in flight is the store's); a
 *    client that makes none gets 421 at once. At the shutdown deadline,
 *    closed regardless.
 *  - The log lines of a connection's life (docs/operations.md): connect,
 *    connection_refused, early_talker, timeout, data_rate_too_low,
 *    lost_connection, recv_error, send_error, input_lost,
 *    shutdown_stalled, shutdown_deadline, disconnect.
 *
 * Lifetime: started by net/server.c's accept path, listed on its
 * net_worker until the conn is closed; then the session is destroyed, the
 * connection's place in the limits given back, and the memory freed. It
 * lives and dies on its worker.
 */
#ifndef FERRY_NET_INBOUND_SESSION_H
#define FERRY_NET_INBOUND_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/list.h"
#include "net/conn.h"
#include "net/generation.h"
#include "net/smtp_session.h"

struct net_worker;

struct inbound_session {
	struct conn conn;
	struct net_worker *owner;
	struct net_generation *gen; /* its settings and limits, to its end (held) */
	struct list_node link;      /* the owner's sessions */
	uint32_t client_slot;       /* per-client accounting; see server.c */
	bool counted;               /* holds a place in the connection limits */
	bool greeted;               /* the banner (or a refusal) is queued */
	bool input_ended;           /* the client shut down its sending side (EOF) */
	uint64_t line_started_ms;   /* first octet of the command line in progress; 0: none */
	uint64_t body_started_ms;   /* the body began, later by the store's waits; 0: none */
	uint64_t wait_started_ms;   /* the body began to wait for the store; 0: not waiting */
	uint32_t body_command;      /* the session's command count at that body's DATA */
	uint64_t alarm_due_ms;      /* when the alarm is set for; 0: not set */
	bool stopping;              /* the server shuts down */
	uint64_t progress_ms;       /* shutting down: progress last seen; 0: not watched */
	uint32_t progress_commands; /* the session's command count then */
	uint64_t progress_octets;   /* and its body's octets */
	struct smtp_session session;
};

/*
 * A socket was accepted on worker `owner` from `peer`. `refusal`, when not
 * NULL, is a 421 reply line: the connection is over a limit (or the
 * server shuts down), so it gets that reply and is closed. `counted` and
 * `client_slot` are its place in the limits, given back when it ends (or
 * at once, with the fd closed, when not even the session could be set up).
 */
void inbound_session_start(struct net_worker *owner, int fd, const struct sockaddr *peer,
			   socklen_t peer_len, const char *refusal, bool counted,
			   uint32_t client_slot);

/* Shutdown: 421 now, or after the transaction in progress while the
 * client makes progress. */
void inbound_session_shutdown(struct inbound_session *s);

/* The shutdown deadline passed: close at once (logged). */
void inbound_session_force_close(struct inbound_session *s);

#endif
