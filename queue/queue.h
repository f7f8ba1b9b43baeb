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
 * queue.h is the store's single contract with the rest of ferry, with
 * sched.h for the recipients' side (their states and delivery's moves)
 * and spool_view.h for reading a spool's files without a running store.
 * The implementation (store.h maps its files) appends each worker's
 * messages to its own segment files with group commit (commit.h), keeps a
 * sharded index of queued recipients by destination (index.h), and
 * rebuilds it at start from what recover.h reads.
 *
 * A session may abort its message until it commits it, never after:
 * after the commit the message is the store's, and the session may only
 * detach from it. The store checks that in every build (core/check.h).
 */
#ifndef FERRY_QUEUE_QUEUE_H
#define FERRY_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct worker;
struct queue;
struct queue_message;

/* Recipients plus MAIL parameters one message may carry. */
#define QUEUE_MAX_ENVELOPE_ITEMS 2040

/* Queue ids: 16 characters of Crockford base32, unique across workers and
 * restarts (time, worker number and a counter). */
#define QUEUE_ID_LEN 16

/* Where a run of a message's body lies on disk: in segment `sequence` of
 * the message's writer (the file segment_name(writer, sequence) names),
 * `len` bytes at `offset`. One BODY record's data is one extent. */
struct queue_extent {
	uint64_t sequence;
	uint64_t offset;
	uint32_t len;
};

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
	struct timespec arrival;    /* CLOCK_REALTIME; the queue id is made from it */
};

/* Set by the session, called by the store on the worker's loop. */
struct queue_client {
	/* After queue_message_write() returned 1: the writer's backlog
	 * drained (or the message failed), so input may resume. */
	void (*resume)(struct queue_client *client);
	/* The message is durable (status 0) or could not be made durable
	 * (negative errno: -ENOSPC for a spool limit, else a write or sync
	 * failure). The handle stays valid until this call returns; after
	 * it the session must not touch it (a stored message is the store's,
	 * a failed one is freed). */
	void (*committed)(struct queue_client *client, int status);
};

/* ---- the store as a whole (process-wide) ------------------------------- */

struct queue_store;

struct queue_store_config {
	const char *spool_dir;
	uint32_t workers;        /* writers, one per worker */
	uint32_t shards;         /* power of two; 0: 8 per worker */
	uint64_t segment_size;   /* bytes preallocated per segment file */
	size_t batch_cap;        /* bytes per group-commit write */
	uint64_t max_bytes;      /* spool size limit (segment files); 0: none */
	uint64_t max_messages;   /* queued messages limit; 0: none */
	uint64_t min_free_bytes; /* refuse new mail below this much free disk */
	/* Compact a closed segment whose live messages weigh less than this
	 * percentage of it (0: never; see "Compaction" below). */
	uint32_t compact_threshold;
	/* owner_set: the user and group the spool belongs to. ferryd starts
	 * as root (to bind port 25) and runs as them once its listeners are
	 * bound, so queue_store_open gives them the spool directory, its lock,
	 * segments/ and quarantine/ and the files in those two, whoever made
	 * them (an earlier ferryd run as root), and every segment the store
	 * makes later is theirs too. Else files belong to whoever makes them.
	 * Giving files away takes root (CAP_CHOWN). */
	bool owner_set;
	uid_t owner_uid;
	gid_t owner_gid;
};

/* Descriptors the store holds, for the budget ferryd checks at start: the
 * spool's lock and its segments and quarantine directories; and per
 * worker the writer's current segment and the one it is closing, the
 * segment files one compaction job reads (QUEUE_COMPACT_MAX_FILES), and
 * those its body readers keep open (body.h's QUEUE_BODY_FILES, 16). */
#define QUEUE_COMPACT_MAX_FILES      8
#define QUEUE_STORE_DESCRIPTORS      3
#define QUEUE_DESCRIPTORS_PER_WORKER (2 + QUEUE_COMPACT_MAX_FILES + 16)

/*
 * Open the spool: create its directories, recover every segment (torn
 * tails cut, corrupt segments quarantined; see recover.h) and rebuild the
 * index, all before any worker runs. On error err says why.
 */
int queue_store_open(struct queue_store **out, const struct queue_store_config *cfg, char *err,
		     size_t err_size);

/* After every worker has stopped. */
void queue_store_close(struct queue_store *store);

/* What recovery found, for the start-up log line. */
struct queue_store_summary {
	uint64_t messages, recipients, segments, torn, corrupt, bytes;
	uint64_t elapsed_ms;
};
void queue_store_summary(const struct queue_store *store, struct queue_store_summary *out);

/* ---- one worker's queue ------------------------------------------------- */

/*
 * The store's life on each worker, as a worker service (core/worker.h):
 * register it with the store as its argument, below every layer that
 * uses the store. start binds worker w to its queue (queue_open), every
 * turn submits what the turn gathered (queue_flush), a draining worker is
 * idle once queue_pending() is 0, stop closes it (queue_close).
 */
struct worker_service;
extern const struct worker_service queue_service;

/*
 * Bind worker `index`'s part of the store to the worker whose ring carries
 * its I/O (called on that worker's thread). Returns 0 or -errno.
 */
int queue_open(struct queue **out, struct worker *w, struct queue_store *store, uint32_t index);
void queue_close(struct queue *q);

/*
 * May a new message of about `size` octets (0: unknown, taken as 64 KiB)
 * be taken now? It must fit in what is left of the writer's segment, or
 * in as many new segments as it needs while they stay under max_bytes and
 * leave min_free_bytes free on the disk (checked at most once a second);
 * and max_messages must not be reached. 0, or -ENOSPC: the session
 * answers 452 4.3.1. (A body larger than it announced is still refused
 * at end of DATA when no segment can be had.)
 */
int queue_check_space(struct queue *q, uint64_t size);

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

/* The recipients' side (their states, delivery's moves): queue/sched.h. */

/* ---- compaction ------------------------------------------------------------ */

/*
 * A closed segment in which nothing lives is deleted. One that is mostly
 * dead (its live messages weigh less than compact_threshold percent of
 * it) is compacted by its worker, between other work, one bounded job at
 * a time (at most 256 KiB of bodies, or one larger message):
 *
 *   read the live messages' bodies (io_uring reads of the old segment)
 *   -> append a copy of each (envelope, body, commit, the outcomes of
 *      recipients already ended) to the worker's current segment
 *   -> once that batch is durable, the message is switched to its copy
 *      and no longer counts in the old segment, which goes when empty.
 *
 * Until the switch the old copy is the message; a crash in between leaves
 * both on disk and recovery keeps one (outcomes merged). A message that
 * ends while its copy is being made ends normally; its copy is dead space.
 *
 * Segments are also deleted in an order that keeps outcomes: a segment
 * holding outcomes or MESSAGE_DONE of a message goes only after the
 * segments holding that message's data (else a restart would find the
 * message without its outcomes and deliver it again).
 *
 * Body extents named by queue_report_message() are valid when reported;
 * a compaction may move them later (a reader that finds the file gone
 * asks again).
 */
struct queue_compaction_stats {
	uint64_t jobs;     /* copy jobs finished */
	uint64_t messages; /* messages switched to a copy */
	uint64_t bytes;    /* body bytes copied for them */
	uint64_t failed;   /* copies that did not become durable (retried later) */
	uint64_t deleted;  /* segment files deleted, compacted or not */
	uint64_t running;  /* 1 while a job is in flight */
};

/* On q's worker. */
void queue_compaction_stats(const struct queue *q, struct queue_compaction_stats *out);

/* ---- operator views (ferryctl) ------------------------------------------- */

struct buf;

/* Workers and the worker that runs worker index i's queue. */
uint32_t queue_store_workers(const struct queue_store *store);
struct queue *queue_store_queue(struct queue_store *store, uint32_t index);
struct worker *queue_worker(const struct queue *q);
const char *queue_store_spool_dir(const struct queue_store *store);

/*
 * These run on q's own worker thread (send it a cross-worker message) and
 * append text to out, one record per line, fields separated by spaces,
 * client-supplied text escaped (log_quote) so a line is always one line.
 *
 * queue_report_destinations: per destination in the shards q owns:
 *   "<domain> <messages> <ready> <deferred> <held> <inflight> <oldest arrival, unix ms>"
 * queue_report_domain: per queued recipient of `domain` in q's shards:
 *   "<queue id> <state> <attempts> <arrival ms> <size> <sender> <recipient>
 *   <next attempt ms> <last reply>"
 *   (state: ready, deferred, held, held-id (held by its queue id: a flush
 *   leaves it; sched.h's marks), inflight; sender "<>" when null;
 *   attempts made so far; next attempt in unix ms, converted from the
 *   worker's clock, for a deferred one, else 0; the next hop's reply to
 *   the last attempt, log_quote()d, "" when there was none since ferryd
 *   started), at
 *   most `max` lines per call, so that a huge domain is listed over
 *   several loop turns (call again with the same cursor, zeroed before
 *   the first call, on a later turn, while it returns 1). A recipient
 *   that moves between two calls may be listed twice or not at all.
 * queue_report_message: when q owns the message with this id, its envelope:
 *   "id ID", "arrival MS", "size N", "client ADDR", "helo NAME", "sender S",
 *   "param P"*, "rcpt R STATE ATTEMPTS REPLY"*, then "body SEGMENT OFFSET
 *   LEN"* (segment file
 *   names under <spool>/segments) so the caller can read the body without
 *   blocking the worker. A recipient's STATE is the journal's (queued:
 *   no outcome yet, deferred, delivered, failed), with its ATTEMPTS and
 *   the REPLY journaled with its last outcome (log_quote()d, "" when
 *   unknown: none yet, or journaled before a restart): all the owner's
 *   own, read race-free; whether a queued one is ready, held or in
 *   flight is its shard owner's to say (queue_report_domain). Found
 *   through q's id map. Returns 1 if found, 0 if not.
 */
struct queue_report_cursor {
	unsigned state;   /* of the destination's states, the one being listed */
	size_t position;  /* entries of that state listed so far */
	const void *next; /* where to go on, while nothing changed */
	uint64_t changes; /* the destination's change count then */
};

void queue_report_destinations(struct queue *q, struct buf *out);
/* queue_report_message_domains: when q owns the message with this id, the
 * domains of its recipients not ended yet as its journal has them (each
 * once, case-insensitively, as its first such recipient wrote it), each
 * followed by a NUL: where an operator's move of the message must go
 * (sched.h, sched_owner). Returns 1 if found, 0 if not. */
int queue_report_message_domains(struct queue *q, const char *id, struct buf *out);
int queue_report_domain(struct queue *q, const char *domain, size_t len,
			struct queue_report_cursor *cursor, size_t max, struct buf *out);
int queue_report_message(struct queue *q, const char *id, struct buf *out);

#endif
