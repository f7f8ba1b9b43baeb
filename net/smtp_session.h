/*
 * smtp_session — the server side of one SMTP session, as a state machine
 * (net/smtp_session.c; its DATA half, the message's way into the store, in
 * net/smtp_session_data.c).
 * No sockets and no ring: bytes in, replies out, and calls into the queue
 * contract (queue/queue.h). net/inbound_session.c puts it on a connection;
 * the unit tests drive it directly.
 *
 * Shape (after OpenSMTPD's smtp_session.c): a small enum of states and a
 * command table {verb, states allowed, handler}. Input is fed in arbitrary
 * chunks; the session consumes what it can and stops early when it must
 * wait (for the store to make a message durable, or for the store's buffer
 * to drain). Replies gather in `out`; the owner sends them after each feed,
 * so pipelined commands are answered in order with one write.
 *
 * Invariants:
 *  - 250 to end-of-DATA is written only from the store's committed()
 *    callback with status 0: never before the message is on disk.
 *  - Nothing past a command that changes how input is read (DATA, QUIT,
 *    later STARTTLS) is acted on before that command is answered: feeding
 *    is strictly sequential.
 *  - Every 4xx/5xx reply counts as an error, except the first
 *    recipient_overshoot 452s of a transaction to recipients past
 *    max_recipients; at max_errors the session is closed with 421.
 */
#ifndef FERRY_NET_SMTP_SESSION_H
#define FERRY_NET_SMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "net/policy.h"
#include "net/smtp_parse.h"
#include "queue/queue.h"

struct smtp_session;

/* What every session of a server shares, fixed at start-up. */
struct smtp_settings {
	const char *hostname;
	uint32_t max_command_line; /* octets incl. CRLF */
	uint32_t max_text_line;    /* octets incl. CRLF */
	uint64_t max_message_size;
	uint32_t max_recipients;
	/* 452s for recipients past max_recipients that a transaction may draw
	 * before they count as errors (Postfix's overshoot limit). */
	uint32_t recipient_overshoot;
	uint32_t max_errors;
	uint32_t max_commands;
	uint32_t max_messages;
	const struct policy *policy;
	/* What RCPT TO:<Postmaster> (no domain, any case) stands for. */
	const char *postmaster;
	/* A message with more Received: fields is a mail loop (0: no limit). */
	uint32_t max_received_headers;
	/* Optional: ETRN (net/etrn_service.h); NULL: not advertised, and
	 * answered 502. Given the argument, it answers with
	 * smtp_session_etrn_reply(), at once or later, from the session's
	 * thread; until then the session runs no further command. A session
	 * destroyed before its answer calls etrn_cancel. */
	void (*etrn)(void *arg, struct smtp_session *s, const char *argument, size_t len);
	void (*etrn_cancel)(void *arg, struct smtp_session *s);
	void *etrn_arg;
};

/* What a worker's sessions count, for the metrics (net/server.c keeps one
 * per worker; written by the sessions of that worker only). Refusals by
 * reply code, 400..599: of a message (to MAIL, DATA, the end of DATA, the
 * store failing it), and of a recipient (RCPT). */
#define SMTP_CODES 200
struct smtp_counters {
	uint64_t messages_received; /* 250 after the commit */
	uint64_t messages_refused[SMTP_CODES];
	uint64_t recipients_refused[SMTP_CODES];
};

enum smtp_state {
	SMTP_STATE_GREETING = 0, /* connected, banner not yet sent */
	SMTP_STATE_READY,        /* banner sent, no HELO/EHLO yet */
	SMTP_STATE_HELO,         /* greeted, no transaction */
	SMTP_STATE_MAIL,         /* MAIL accepted, no recipient yet */
	SMTP_STATE_RCPT,         /* at least one recipient */
	SMTP_STATE_DATA,         /* receiving the body */
	SMTP_STATE_COMMIT,       /* body complete, waiting for the store */
	SMTP_STATE_CLOSED,       /* nothing more will be read */
};

struct smtp_session;

struct smtp_session_hooks {
	/* Something happened outside a feed (the store committed, or has room
	 * again): the owner should send `out` and feed held-back input. */
	void (*wake)(struct smtp_session *s);
	/* Optional: is the queue for this domain full (its quota)? Then a
	 * recipient there gets 452 4.2.2. Called from the session's thread;
	 * a hook, not a setting, since the counts are live while settings
	 * are what the session started with. */
	bool (*queue_full)(struct smtp_session *s, const char *domain, size_t len);
};

struct smtp_recipient_span {
	uint32_t offset; /* into envelope_text */
	uint32_t len;
};

struct smtp_session {
	enum smtp_state state;
	const struct smtp_settings *settings;
	const struct smtp_session_hooks *hooks;
	struct queue *queue;

	struct buf out;  /* replies not yet handed to the socket */
	size_t out_max;  /* no next command while `out` holds more (SIZE_MAX: none) */
	bool want_close; /* close once `out` is sent */
	bool waiting;    /* parked until the store calls back */
	bool draining;   /* shutdown: close after the current transaction */

	char id[17];             /* session id for logs */
	char client_address[46]; /* textual IP */
	struct sockaddr_storage client;
	bool client_trusted;
	char helo[256];
	bool esmtp;

	struct smtp_line_reader line;
	char *line_storage;
	struct smtp_data_decoder data;
	struct smtp_header_scan headers; /* Received: fields, for loops */

	/* the transaction */
	struct buf envelope_text; /* sender, then parameters, then recipients */
	uint32_t sender_len;
	uint32_t nparams;
	struct smtp_recipient_span params[SMTP_MAX_PARAMS];
	struct smtp_recipient_span *recipients;
	uint32_t nrecipients;
	size_t recipients_cap;
	uint32_t overshoot; /* recipients refused past max_recipients */
	uint64_t declared_size;
	bool smtputf8;
	struct queue_message *message;
	/* The message's queue id, kept here because the store frees the
	 * queue_message before it calls committed(). */
	char queue_id[QUEUE_ID_LEN + 1];
	int store_error; /* why the store gave up on the message mid-body */
	struct queue_client queue_client;
	uint64_t body_bytes; /* decoded body octets handed to the store */

	uint32_t commands;
	uint32_t errors;
	uint32_t messages;
	uint32_t etrns;                 /* ETRN commands, for the etrn hook's per-session limit */
	struct smtp_counters *counters; /* NULL: none kept (the owner sets it) */
	enum smtp_verb replying_to;     /* the command whose reply is being written */
	bool etrn_pending;              /* an ETRN awaits its answer */
};

/*
 * Set up a session for a client at `client` (its textual form in
 * client_text). `id` names the session in logs. Returns 0 or -ENOMEM.
 */
int smtp_session_init(struct smtp_session *s, const struct smtp_settings *settings,
		      const struct smtp_session_hooks *hooks, struct queue *queue,
		      const struct sockaddr *client, const char *client_text, const char *id);

/* Free everything; a message in the store is aborted, or detached if its
 * commit is in flight (it still becomes durable). */
void smtp_session_destroy(struct smtp_session *s);

/* Send the 220 banner (after any greeting delay). */
void smtp_session_greet(struct smtp_session *s);

/* The client spoke before the banner: 554, close. */
void smtp_session_early_talker(struct smtp_session *s);

/*
 * Feed received bytes. Returns how many were consumed: all of them unless
 * the session parked (s->waiting) or closed (s->state == CLOSED); the owner
 * keeps the rest and feeds it again after hooks->wake(). Nor does it run
 * another command while `out` holds more than out_max octets (the owner
 * sets it from its output cap): the rest waits until the client has read
 * its replies and the owner feeds it again.
 */
size_t smtp_session_feed(struct smtp_session *s, const char *data, size_t len);

/* True while a DATA body is being received (the DATA timeout applies). */
bool smtp_session_in_data(const struct smtp_session *s);

/* True between MAIL and the end of the transaction. */
bool smtp_session_in_transaction(const struct smtp_session *s);

/* True while a command line has begun and not ended (the command
 * deadline applies). */
bool smtp_session_in_command_line(const struct smtp_session *s);

/* The idle or DATA timeout passed: 421, close. */
void smtp_session_timeout(struct smtp_session *s);

/* The body arrives slower than min_rate octets/s: 421, close; the message
 * is not kept. */
void smtp_session_data_too_slow(struct smtp_session *s, uint32_t min_rate);

/* The server is shutting down: close now if idle (421), else after the
 * transaction in progress ends. */
void smtp_session_shutdown(struct smtp_session *s);

/* The server is shutting down and the client makes no progress: 421 now,
 * inside a transaction too (its message is not kept), but for a commit in
 * flight, which ends first. */
void smtp_session_shutdown_now(struct smtp_session *s);

/* The answer to the ETRN the session waits for (a whole reply line
 * without CRLF); `close`: it is a 421, and the session ends after it.
 * Ignored when no ETRN waits. */
void smtp_session_etrn_reply(struct smtp_session *s, const char *line, bool close);

/* Refuse a connection before the banner (limits): `reply` is a whole
 * reply line without CRLF, e.g. "421 4.7.0 Too many connections". */
void smtp_session_refuse(struct smtp_session *s, const char *reply);

#endif
