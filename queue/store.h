/*
 * store — the private contract between the files that implement queue.h
 * (and sched.h). Nothing outside queue/ includes this header; queue.h is
 * the store's contract with the rest of ferry.
 *
 * The store is split along its own seams, one concern per file:
 *
 *   store.c    the store as a whole (spool directory, lock, shards) and
 *              each worker's struct queue: open, close, its service
 *   space.c    the segments a worker owns: what lives in each, when one
 *              may be deleted (and in which order), files of retired
 *              writers, the spool's size and free-space limits
 *   message.c  a message's life: begin, body, commit, durable or failed,
 *              its recipients' outcomes journaled, finished
 *   sched.c    recipients in their shards: handed to the shard's owner
 *              once durable, their states and moves (sched.h)
 *   compact.c  copying the live messages out of mostly-dead segments
 *   rebuild.c  recovery into memory at start: messages, outcomes and
 *              segment accounting from what recover.c reads
 *   report.c   the operator's views (ferryctl)
 *
 * Threads and ownership:
 *  - Each worker has a struct queue: its writer (commit.h) appending to its
 *    own segments, the messages it wrote (or inherited at recovery), and
 *    the shards it owns (shard s belongs to worker s % workers).
 *  - A message is written and owned by one worker; its recipients are
 *    indexed in the shards of their domains, which may belong to other
 *    workers. Those get the recipients by cross-worker message, gathered
 *    per loop turn (one xmsg per target worker per turn), and only after
 *    the message is durable: nothing is visible before its 250 could be.
 *  - The process-wide struct queue_store holds what every worker reads
 *    (configuration, shard table) and the few shared counters of the space
 *    limits (atomics, touched once per message and per segment).
 */
#ifndef FERRY_QUEUE_STORE_H
#define FERRY_QUEUE_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/list.h"
#include "core/timer.h"
#include "core/worker.h"
#include "core/xmsg.h"
#include "queue/body.h"
#include "queue/commit.h"
#include "queue/idmap.h"
#include "queue/index.h"
#include "queue/queue.h"
#include "queue/record.h"
#include "queue/recover.h"
#include "queue/sched.h"

#define STORE_BODY_CHUNK  65536 /* body bytes per BODY record, at most */
#define STORE_MAX_WRITERS 1000  /* segment names carry 3 digits */

/*
 * A message's life. Every move is checked (CHECK) where it is made: a
 * message aborted after its commit, or committed twice, stops ferryd
 * rather than corrupt the spool.
 *
 *   STREAMING --commit--> COMMITTING --sync--> STORED --last outcome--> FINISHED
 *       |                     |
 *       | a record lost       | its segment poisoned
 *       v                     v
 *     BROKEN --commit--> FAILING --reported--> freed
 *
 * A STREAMING or BROKEN message may be aborted (freed). FAILING messages
 * learn of their failure from the loop: from their batch's sync, or a
 * no-op queued for them (never from inside the call that committed them).
 * FINISHED ones are freed at once, unless a compaction job still holds
 * them (it frees them when it ends).
 */
enum store_message_state {
	STORE_STREAMING = 0,
	STORE_BROKEN,
	STORE_COMMITTING,
	STORE_FAILING,
	STORE_STORED,
	STORE_FINISHED,
};

struct store_rcpt {
	struct index_entry entry; /* touched only by the shard's owner */
	struct queue_message *message;
	const char *address; /* into message->text */
	uint16_t len;
	uint16_t domain_offset;
	uint16_t index;
	uint32_t shard;
	/* What the journal says of it (the owner's view): the outcome rule of
	 * recover.h, the same at run time as at recovery. */
	struct recover_rcpt outcome;
	/* Attempts as the shard's owner counts them (delivery's backoff):
	 * outcome.attempts when it was indexed, one more per sched_defer. */
	uint32_t attempts;
	/* The next hop's reply to the last attempt, at most
	 * STORE_REPLY_MAX octets, NUL-terminated; NULL until there is one
	 * (and after a restart: the journal keeps it, memory does not).
	 * Allocated only when an attempt ends, so a queue of a million
	 * untried recipients pays a pointer each. Two copies, one per
	 * thread, so that neither is read while the other thread writes it:
	 *   last_reply     the shard owner's (list), set by sched_defer,
	 *                  freed when the recipient leaves its index
	 *                  (sched_finish) or its message is freed;
	 *   journal_reply  the message owner's (show), set when an outcome
	 *                  is journaled, freed with the message. */
	char *last_reply;
	char *journal_reply;
};

#define STORE_REPLY_MAX 255

/* *slot becomes a copy of reason (at most STORE_REPLY_MAX octets; NULL
 * for ""), the old one freed; out of memory leaves it NULL (only a view
 * loses it). */
void store_reply_set(char **slot, const char *reason);

struct queue_message {
	char id[QUEUE_ID_LEN + 1];
	struct queue *queue; /* the owner */
	uint32_t writer;     /* worker number in its segment files' names */
	enum store_message_state state;
	int error;    /* why it broke or failed (negative errno) */
	bool counted; /* in store->messages (from its commit on) */
	bool paused;  /* write() returned 1: resume() owed */
	bool copying; /* a compaction job holds it: the job's end frees it */
	/* Body readers (body.c) pinning it, from any worker, plus
	 * STORE_PIN_SWITCHING while compaction switches it to its copy. */
	atomic_uint pins;
	int64_t arrival_ms;
	uint64_t body_len;
	/* The owner's segments from its first record to its last: each one
	 * counts the message in its `live` from the moment a record of the
	 * message is reserved in it (or lies between two that are), so no
	 * segment is deleted under a message still being received. */
	uint64_t first_sequence, last_sequence;
	/* The oldest segment in which an earlier copy of it (compaction) may
	 * still lie: records of its state must outlive that. */
	uint64_t origin_sequence;
	struct commit_location envelope, commit; /* where those records went */
	char *text;                              /* sender, client, helo, params, rcpts */
	uint16_t sender_len;
	struct queue_extent *extents;
	uint32_t nextents;
	size_t extents_cap;

	/* While it is received: its session and the body not yet in a
	 * record. */
	struct queue_client *client;
	struct buf pending;
	struct commit_waiter waiter;

	/* On exactly one of its owner's lists: `unstored` (STREAMING, BROKEN,
	 * COMMITTING), `failed` (FAILING, waiting for its report) or `stored`
	 * (STORED). */
	struct list_node link;
	/* STORED, of the owner's own writer: in the segment of its first
	 * record, for compaction to find. */
	struct list_node segment_link;
	/* STORED: in its owner's id map. */
	struct idmap_node id_link;
	uint64_t weight; /* bytes it counts for in its segments' live_bytes */

	uint32_t nrcpt;
	uint32_t remaining; /* recipients not ended (owner) */
	struct store_rcpt rcpts[];
};

/*
 * Records here give outcomes of a message in another writer's files
 * (orphans, below): this segment must outlive that writer's segments up
 * to `hi`, whichever queue owns them now.
 */
struct store_cross_dep {
	uint32_t writer;
	uint64_t hi;
};

struct store_segment {
	uint64_t sequence;
	uint64_t bytes;      /* file size counted against max_bytes */
	uint64_t live;       /* messages (stored or being received) with data here */
	uint64_t live_bytes; /* what the stored ones among them weigh */
	uint64_t placed;     /* the stored ones (store_message_place) */
	/* Records here give the outcomes of messages whose data lies in
	 * [after_lo, after_hi] (0: none): delete this one only after those. */
	uint64_t after_lo, after_hi;
	struct store_cross_dep *cross;
	size_t ncross, cross_cap;
	struct list_node messages; /* stored ones whose first record is here */
	bool closed;               /* the writer is done with it */
	bool pinned;               /* never deleted (its unlink failed) */
	bool no_compact;           /* nothing here could be moved; until live changes */
	bool deleting;             /* its unlink is on the ring */
};

/*
 * Orphans: messages in the segments of a writer number that no longer
 * runs (ferryd restarted with fewer workers). Worker w % workers owns
 * them; their files are never written again and go all at once when the
 * last of that writer's messages is finished. Their outcomes are written
 * to the owner's own segments, which then wait (store_cross_dep) until
 * the oldest segment of that writer still on disk (queue_store's
 * writer_floor, published by whichever queue holds the writer's files)
 * is past the message.
 */
struct store_orphan_segment {
	uint64_t sequence, bytes;
	struct store_cross_dep *cross;
	size_t ncross, cross_cap;
	bool deleting;
};

struct store_orphan_writer {
	uint32_t writer;
	uint64_t live; /* its messages not finished */
	struct store_orphan_segment *segments;
	size_t nsegments, cap;
	bool stuck; /* a file could not be deleted: the newer ones stay */
};

/* Recipients for another worker's shards, gathered during one loop turn. */
struct store_xfer {
	struct xmsg link;
	struct queue *target;
	size_t count, cap;
	struct store_rcpt **rcpts;
};

/* Outcomes of recipients whose messages another worker owns, gathered
 * during one loop turn and sent to it as one cross-worker message. */
struct store_outcome {
	struct store_rcpt *rcpt;
	enum record_type type;
	bool attempted; /* not an operator's ending */
	int64_t next_attempt_ms;
	char reason[256];
};

struct store_outcomes {
	struct xmsg link;
	size_t count, cap;
	struct store_outcome *items;
};

struct store_shard {
	struct index_shard index;
	uint32_t owner;
};

struct store_compaction;

struct queue {
	struct queue_store *store;
	uint32_t index;
	struct worker *worker;
	struct commit_writer *writer;
	uint64_t next_sequence; /* first segment the writer creates */
	uint32_t id_counter;
	unsigned pending;                /* begun, not yet finished with */
	struct list_node unstored;       /* STREAMING, BROKEN, COMMITTING */
	struct list_node failed;         /* FAILING without a sync to wait for */
	struct list_node stored;         /* every STORED message it owns */
	struct idmap by_id;              /* its STORED messages, by queue id */
	struct store_segment **segments; /* by sequence */
	size_t nsegments, segments_cap;
	struct store_xfer **outbox;       /* per target worker, this turn */
	struct store_outcomes **outcomes; /* outcomes for other owners, this turn */
	uint64_t free_checked_ms;
	uint64_t free_bytes; /* on the spool's file system, as last seen */
	/* FAILING messages get committed() from a no-op's completion, on the
	 * loop, never from inside queue_message_commit(). */
	struct worker_op failed_op;
	bool failed_armed;
	/* Compaction (one copy job at a time) and what it did. */
	struct store_compaction *compaction;
	bool compact_dirty; /* a segment closed or lost a message: look again */
	uint64_t compact_retry_ms;
	uint64_t max_span; /* most segments one stored message's data spans, less 1 */
	struct queue_compaction_stats compact_stats;
	struct store_orphan_writer *orphans;
	size_t norphans, orphans_cap;
	unsigned unlinks_in_flight; /* segment deletions on the ring */
	/* A segment or orphan file waits for another writer's files, which
	 * another queue deletes: look again now and then. */
	bool cross_waiting;
	uint64_t cross_check_ms;
	struct timer cross_timer; /* wakes an idle worker for that */
	/* Delivery's hooks on the shards this worker owns (sched.h). */
	struct sched_hooks hooks;
	/* Segment files open for body readers on this worker (body.c). */
	struct store_body_file {
		int fd; /* -1: free slot */
		uint32_t writer;
		uint64_t sequence;
		unsigned users; /* readers with a read on it in flight */
		uint64_t used_ms;
	} body_files[QUEUE_BODY_FILES];
};

struct queue_store {
	struct queue_store_config cfg;
	char *spool_dir;
	int dir_fd, quarantine_fd;
	int lock_fd; /* <spool>/lock, flock()ed: one ferryd per spool */
	uint32_t nshards;
	struct store_shard *shards;
	struct queue *queues;          /* one per worker */
	atomic_uint_fast64_t bytes;    /* segment files on disk */
	atomic_uint_fast64_t messages; /* stored or committing, not done */
	atomic_uint xfers_in_flight;
	/* Per writer number: the oldest of its segments still on disk
	 * (UINT64_MAX: none), published by the queue holding its files. */
	atomic_uint_fast64_t writer_floor[STORE_MAX_WRITERS];
	struct queue_store_summary summary;
};

/* The domain of a recipient: after its last '@' (none: empty). */
static inline const char *store_rcpt_domain(const struct store_rcpt *r, size_t *len)
{
	*len = r->len - r->domain_offset;
	return r->address + r->domain_offset;
}

/* ---- space.c: the segments a worker owns ---------------------------------- */

struct store_segment *store_segment_find(struct queue *q, uint64_t sequence);
/* Index of the first segment at or after `sequence`. */
size_t store_segment_lower_bound(const struct queue *q, uint64_t sequence);
/* Account a segment file (`reserved`: its bytes were counted already by
 * store_may_grow). NULL when out of memory. */
struct store_segment *store_segment_add(struct queue *q, uint64_t sequence, uint64_t bytes,
					bool reserved);
/* Records of state in `sequence` speak of a message whose data lies in
 * [lo, hi] of the same writer: this segment must outlive those. */
void store_segment_depend(struct queue *q, uint64_t sequence, uint64_t lo, uint64_t hi);
/* ... or in another writer's files, up to its segment `hi`. */
int store_cross_add(struct store_cross_dep **deps, size_t *n, size_t *cap, uint32_t writer,
		    uint64_t hi);
/* Count m in (delta +1) or out of (-1) its segments [first, last] of its
 * owner's own writer; a segment left with nothing may be deleted. */
void store_segments_hold_range(struct queue *q, const struct queue_message *m, uint64_t first,
			       uint64_t last, int delta);
void store_segments_hold(struct queue *q, const struct queue_message *m, int delta);
/* Delete every deletable segment (from index `from` on). */
void store_segments_collect(struct queue *q, size_t from);
/* Forget every segment (the store closes). */
void store_segments_free(struct queue *q);

struct store_orphan_writer *store_orphan_writer(struct queue *q, uint32_t writer, bool add);
int store_orphan_segment_add(struct queue *q, struct store_orphan_writer *ow, uint64_t sequence,
			     uint64_t bytes, struct store_cross_dep *cross, size_t ncross);
void store_orphan_writer_collect(struct queue *q, struct store_orphan_writer *ow);
/* An orphan message finished: its writer's files may go. */
void store_orphan_done(struct queue *q, const struct queue_message *m);
void store_orphans_free(struct queue *q);

/* Loop turn: what waits for other queues' deletions looks again (at most
 * once a second), and an idle worker is woken for it. */
void store_cross_recheck(struct queue *q);
void store_cross_arm(struct queue *q);

/* The writer's hooks about segments and space (commit.h). */
int store_may_grow(void *arg, uint64_t size);
void store_grow_failed(void *arg, uint64_t size);
void store_on_segment_created(void *arg, uint64_t sequence, uint64_t size);
void store_on_segment_closed(void *arg, uint64_t sequence);

/* ---- message.c: a message's life -------------------------------------------- */

/* One allocation for the message and its recipients, one for its text:
 * strings in the order sender, client, helo, params, recipients. */
struct queue_message *store_message_new(uint32_t nrcpt, const char *const *strings,
					const size_t *lens, size_t nstrings);
void store_message_free(struct queue_message *m);
/* Out of its segments and the count; freed unless a copy job holds it. */
void store_message_drop(struct queue *q, struct queue_message *m);
/* A STORED message of its owner's own writer takes (or leaves) its
 * place in its segments: listed in its first one, weighed in each. */
void store_message_place(struct queue *q, struct queue_message *m);
void store_message_unplace(struct queue *q, struct queue_message *m);
/* On its owner's stored list and id map, or off them. 0 or -ENOMEM. */
int store_message_stored(struct queue *q, struct queue_message *m);
void store_message_unstored(struct queue *q, struct queue_message *m);

/* Reserve one record of m's data (envelope, body, commit) in q's writer,
 * counting m in the segments it now reaches. NULL with *error set. */
uint8_t *store_reserve_data(struct queue *q, struct queue_message *m, size_t size, uint64_t *salt,
			    struct commit_location *loc, int *error);
/* Reserve a record of m's state (an outcome, MESSAGE_DONE): the segment
 * it lands in must outlive m's data. NULL with *error set. */
uint8_t *store_reserve_state(struct queue *q, struct queue_message *m, size_t size, uint64_t *salt,
			     struct commit_location *loc, int *error);

/* On the owner: journal one recipient's outcome (RECORD_RCPT_DELIVERED,
 * _FAILED, or _DEFERRED until next_attempt_ms, wall clock), by the outcome
 * rule of recover.h, as the end of one more attempt unless an operator
 * ended it (`attempted` false); its message finishes with its last
 * recipient. */
void store_rcpt_journal(struct queue *q, struct store_rcpt *r, enum record_type type,
			const char *reason, int64_t next_attempt_ms, bool attempted);

/* The writer's hooks about batches (commit.h). */
void store_on_poison(void *arg, uint64_t sequence, uint64_t good_end, bool cut);
void store_on_drain(void *arg);

/* ---- sched.c: recipients in their shards ---------------------------------- */

/* The message is durable: its recipients not yet ended go to their
 * shards (by cross-worker message, gathered per turn, for other
 * workers' shards). */
void store_index_message(struct queue *q, struct queue_message *m);
/* Loop turn: send what store_index_message gathered for other workers. */
void store_send_outbox(struct queue *q);
/* Recipients gathered and not yet sent. */
unsigned store_outbox_pending(const struct queue *q);
void store_outbox_free(struct queue *q);

/* ---- body.c ------------------------------------------------------------------ */

#define STORE_PIN_SWITCHING 0x80000000u

/* Compaction, on the owner: may m be switched to its copy now? true
 * leaves it marked, so no reader pins it until store_pin_switched(). */
bool store_pin_switch(struct queue_message *m);
void store_pin_switched(struct queue_message *m);
static inline bool store_pinned(struct queue_message *m)
{
	return atomic_load_explicit(&m->pins, memory_order_relaxed) != 0;
}

/* ---- compact.c -------------------------------------------------------------- */

/* Loop turn: start a copy job if one is due and none runs. */
void store_compact_maybe_start(struct queue *q);
/* A batch of `sequence` failed at good_end: copies that lost a record
 * there fail too. */
void store_compact_on_poison(struct queue *q, uint64_t sequence, uint64_t good_end);
bool store_compact_running(const struct queue *q);
void store_compaction_free(struct store_compaction *job);

/* ---- rebuild.c ---------------------------------------------------------------- */

/* Recover the spool into memory (queue_store_open, before any worker
 * runs): messages, outcomes, segment accounting, the shards. 0 or
 * -errno with err set. */
int store_rebuild(struct queue_store *st, char *err, size_t err_size);

/* ---- store.c ------------------------------------------------------------------- */

/* The worker's clock when it runs, else the process's. */
uint64_t store_now_ms(const struct queue *q);

/* The queue service's metrics (queue/store_metrics.c); state is the
 * worker's struct queue. */
struct metrics;
void store_service_metrics(struct worker *w, void *state, struct metrics *out);

#endif
