/*
 * queue — the contract between the SMTP side and the durable store.
 *
 * A session hands the store one message at a time: it begins a message with
 * its envelope, streams the body into it, and commits it. The store calls
 * back once the message is on stable storage (or failed to get there); only
 * then may the session reply 250. That ordering is the whole promise of an
 * MTA, so it is kept here and nowhere else:
 *
 *     begin -> write* -> commit -> ... -> client->committed(status)
 *
 * Everything here runs on one worker thread: each worker owns its own
 * struct queue (its own spool writer), and the callbacks arrive on that
 * worker's loop, never from inside begin/write/commit.
 *
 * The first implementation (spool.c) writes each message to its own file
 * and fdatasyncs it. The segment store with group commit replaces it behind
 * this same interface.
 */
#ifndef FERRY_QUEUE_QUEUE_H
#define FERRY_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct worker;
struct queue;
struct queue_message;

/* Queue ids: 16 characters of Crockford base32, unique across workers and
 * restarts (time, worker number and a counter). */
#define QUEUE_ID_LEN 16

struct queue_param {
	const char *text; /* one ESMTP parameter as received, e.g. "BODY=8BITMIME" */
	size_t len;
};

struct queue_recipient {
	const char *address; /* forward path without brackets */
	size_t len;
};

struct queue_envelope {
	const char *sender; /* reverse path without brackets; "" for <> */
	size_t sender_len;
	const struct queue_recipient *recipients;
	unsigned nrecipients;
	const struct queue_param *params; /* MAIL FROM parameters */
	unsigned nparams;
	const char *client_address; /* "192.0.2.1" */
	const char *helo;           /* name given in HELO/EHLO */
	struct timespec arrival;
};

/* Set by the session, called by the store on the worker's loop. */
struct queue_client {
	/* The body buffered in the store dropped below its low-water mark
	 * after queue_message_write() returned 1: input may resume. */
	void (*resume)(struct queue_client *client);
	/* The message is durable (status 0) or could not be made durable
	 * (negative errno). After this call the queue_message is gone. */
	void (*committed)(struct queue_client *client, int status);
};

struct queue_config {
	const char *spool_dir;
	uint32_t worker_index; /* goes into queue ids */
};

/*
 * Open the worker's queue: creates the spool directories if missing. `w` is
 * the worker whose ring carries the store's I/O. Returns 0 or -errno.
 */
int queue_open(struct queue **out, struct worker *w, const struct queue_config *cfg);
void queue_close(struct queue *q);

/*
 * Start a message. The envelope is copied; the store assigns the queue id.
 * Returns 0 or -errno (e.g. -ENOSPC, -EIO: the caller replies 451/452).
 */
int queue_message_begin(struct queue *q, struct queue_client *client,
			const struct queue_envelope *env, struct queue_message **out);

/* The message's queue id, NUL-terminated, QUEUE_ID_LEN characters. */
const char *queue_message_id(const struct queue_message *m);

/*
 * Append body bytes (copied). Returns 0, or 1 when the store's buffer for
 * this message is above its high-water mark: the caller should stop reading
 * input until client->resume() is called (the bytes were still taken), or a
 * negative errno when the message can no longer be stored (the caller will
 * abort it and reply 451).
 */
int queue_message_write(struct queue_message *m, const void *data, size_t len);

/* No more body: make it durable, then call client->committed(). */
void queue_message_commit(struct queue_message *m);

/* Throw the message away (refused at end of DATA, client gone mid-DATA).
 * Not allowed after queue_message_commit(). */
void queue_message_abort(struct queue_message *m);

/*
 * The client is going away while a commit is in flight: the commit still
 * completes (the body was received whole), but no callback is made.
 */
void queue_message_detach(struct queue_message *m);

/* Once per loop turn, before the worker sleeps: submit the syncs that the
 * store gathered during this turn (several messages share one). */
void queue_flush(struct queue *q);

/* Messages begun and not yet committed/aborted, plus commits in flight:
 * shutdown waits for this to reach 0. */
unsigned queue_pending(const struct queue *q);

#endif
