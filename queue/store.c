/*
 * store — the durable queue behind queue.h: segments, group commit, the
 * sharded index, recovery and space accounting wired together.
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
 *    limits (atomics, touched once per message).
 *
 * Space: each worker counts, per segment it owns, the messages whose data
 * (envelope, body, commit) lies in it — stored ones, and ones still being
 * received or committed, from their first record on. A closed segment in
 * which nothing lives is deleted once the older segments its outcome
 * records depend on are gone (store_segment_depend); a mostly-dead one is
 * compacted first (store_compact_*).
 */
#include "queue/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/worker.h"
#include "core/xmsg.h"
#include "queue/commit.h"
#include "queue/index.h"
#include "queue/record.h"
#include "queue/recover.h"
#include "queue/segment.h"

_Static_assert(QUEUE_MAX_ENVELOPE_ITEMS <= RECORD_MAX_STRINGS, "an envelope record holds them all");

#define STORE_BODY_CHUNK    65536 /* body bytes per BODY record, at most */
#define STORE_FREE_CHECK_MS 1000  /* statvfs at most this often per worker */
#define STORE_ROOM_MARGIN   65536 /* envelope and a typical body, when SIZE is not given */

enum store_message_state {
	STORE_STREAMING = 0, /* body arriving */
	STORE_COMMITTING,    /* COMMIT record waiting for its sync */
	STORE_STORED,        /* durable and indexed */
	STORE_FAILED,        /* lost to a poisoned segment; commit will fail */
};

struct store_rcpt {
	struct index_entry entry; /* touched only by the shard's owner */
	struct queue_message *message;
	const char *address; /* into message->text */
	uint16_t len;
	uint16_t domain_offset;
	uint16_t index;
	bool finished; /* delivered or failed for good (owner's view) */
	bool failed;   /* ... and it failed (a copy repeats the outcome) */
	uint32_t shard;
};

struct queue_message {
	char id[QUEUE_ID_LEN + 1];
	struct queue *queue; /* the owner */
	uint32_t writer;     /* worker number in its segment files' names */
	enum store_message_state state;
	int error;
	bool counted; /* in store->messages (from commit on) */
	int64_t arrival_ms;
	uint64_t body_len;
	/* The owner's segments from its first record to its last: each one
	 * counts the message in its `live` from the moment a record of the
	 * message is reserved in it (or lies between two that are), so no
	 * segment is deleted under a message still being received. */
	uint64_t first_sequence, last_sequence;
	/* The oldest segment in which an earlier copy of it (compaction,
	 * below) may still lie: records of its state must outlive that. */
	uint64_t origin_sequence;
	struct commit_location envelope, commit; /* where those records went */
	char *text;                              /* sender, client, helo, params, rcpts */
	uint16_t sender_len;
	struct queue_extent *extents;
	uint32_t nextents, extents_cap;

	/* while it is being received */
	struct queue_client *client;
	struct buf pending; /* body bytes not yet in a BODY record */
	bool paused;        /* write() returned 1: resume() owed */
	struct commit_waiter waiter;
	struct queue_message *prev, *next; /* the owner's list of unstored messages */
	struct queue_message *failed_next; /* failed before its sync: reported soon */

	uint32_t nrcpt;
	uint32_t remaining;                        /* recipients not finished (owner) */
	struct queue_message *all_next, *all_prev; /* every stored message of the owner */
	bool done;                                 /* recovery found its MESSAGE_DONE */
	/* Stored messages of the owner's own writer are listed in the
	 * segment of their first record, for compaction to find. */
	struct queue_message *seg_next, *seg_prev;
	bool seg_listed;
	uint64_t weight; /* bytes it counts for in its segments' live_bytes */
	bool compacting; /* a copy is being made: freed by the copy's end */
	bool dropped;    /* finished while compacting: free when it ends */
	struct store_rcpt rcpts[];
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
	/* Records here give outcomes of messages in other writers' files
	 * (see orphans below): delete this one only after those. */
	struct store_cross_dep *cross;
	uint32_t ncross;
	struct queue_message *messages; /* stored ones whose first record is here */
	bool closed;                    /* the writer is done with it */
	bool pinned;                    /* never deleted (its unlink failed) */
	bool no_compact;                /* nothing here could be moved; until live changes */
	bool deleting;                  /* its unlink is on the ring */
};

/*
 * Orphans: messages in the segments of a writer number that no longer
 * runs (ferryd restarted with fewer workers). Worker w % workers owns
 * them; their files are never written again and go all at once when the
 * last of that writer's messages is finished.
 *
 * Their outcomes are written to the owner's own segments: records about
 * a message in another writer's files. Such a segment must outlive that
 * writer's segments holding the message (up to `hi`), whichever queue
 * owns them now, in this run or a later one with more or fewer workers:
 * it waits until the oldest segment of that writer still on disk
 * (queue_store.writer_floor, published by whichever queue holds the
 * writer's files) is past `hi`.
 */
struct store_cross_dep {
	uint32_t writer;
	uint64_t hi;
};

struct store_orphan_segment {
	uint64_t sequence, bytes;
	struct store_cross_dep *cross; /* as in store_segment */
	uint32_t ncross;
	bool deleting;
};

struct store_orphan_writer {
	uint32_t writer;
	uint64_t live; /* its messages not finished */
	struct store_orphan_segment *segments;
	size_t nsegments, cap;
	bool stuck; /* a file could not be deleted: the newer ones stay */
};

#define STORE_MAX_WRITERS    1000 /* segment names carry 3 digits */
#define STORE_CROSS_CHECK_MS 1000 /* another queue's deletions: look again */

/* Recipients for another worker's shards, gathered during one loop turn. */
struct store_xfer {
	struct xmsg link;
	struct queue *target;
	uint32_t count, cap;
	struct store_rcpt *rcpts[];
};

struct store_shard {
	struct index_shard index;
	uint32_t owner;
};

struct queue {
	struct queue_store *store;
	uint32_t index;
	struct worker *worker;
	struct commit_writer *writer;
	uint64_t next_sequence; /* first segment the writer creates */
	uint32_t id_counter;
	unsigned pending;               /* begun, not yet finished with */
	struct queue_message *unstored; /* streaming or committing */
	struct queue_message *stored;   /* every stored message it owns */
	struct store_segment *segments; /* by sequence */
	size_t nsegments, segments_cap;
	struct store_xfer **outbox; /* per target worker, this turn */
	uint64_t free_checked_ms;
	uint64_t free_bytes; /* on the spool's file system, as last seen */
	/* Messages that failed without a sync to wait for (a limit, a lost
	 * segment): their committed() comes from a no-op's completion, on the
	 * loop, never from inside queue_message_commit(). */
	struct queue_message *failed;
	struct worker_op failed_op;
	bool failed_armed;
	/* Compaction (one copy job at a time) and what it did. */
	struct store_compaction *compaction;
	bool compact_dirty; /* a segment closed or lost a message: look again */
	uint64_t compact_retry_ms;
	uint64_t max_span; /* most segments one stored message's data spans, less 1 */
	struct queue_compaction_stats compact_stats;
	struct store_orphan_writer *orphans;
	size_t norphans;
	unsigned unlinks_in_flight; /* segment deletions on the ring */
	/* A segment or orphan file waits for another writer's files, which
	 * another queue deletes: look again now and then. */
	bool cross_waiting;
	uint64_t cross_check_ms;
	struct timer cross_timer; /* wakes an idle worker for that */
};

/* A segment deletion on the ring: unlinking a large preallocated file
 * takes tens of milliseconds in the file system, too long for the loop. */
struct store_unlink {
	struct worker_op op;
	struct queue *q;
	uint32_t writer; /* q->index, or an orphan writer's */
	uint64_t sequence;
	char name[SEGMENT_NAME_MAX];
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
	bool recover_incomplete; /* a segment could not be accounted (memory) */
	/* During recovery only: stored messages by id, for the state records
	 * that name them (open addressing, power-of-two capacity). */
	struct queue_message **by_id;
	size_t by_id_cap, by_id_count;
	/* During recovery: the segment being read must outlive [lo, hi] of
	 * its writer (store_segment_depend), known once it is added. */
	struct {
		uint32_t worker;
		uint64_t sequence, lo, hi;
		struct store_cross_dep *cross; /* outcomes of other writers' messages */
		uint32_t ncross;
	} scan_depend;
};

/* A compaction job (see "compaction" below). */
#define STORE_COMPACT_MAX_MESSAGES 256
#define STORE_COMPACT_MAX_FILES    8
#define STORE_COMPACT_RETRY_MS     1000
#define STORE_COMPACT_JOB_BYTES    (256u << 10) /* bodies per job (or one larger message) */

struct store_copy {
	struct queue_message *m;
	size_t body_at;      /* its body in job->data */
	uint64_t saved_last; /* m->last_sequence before the copy's records */
	struct commit_location envelope, commit;
	struct commit_location last; /* its last record so far (0: none yet) */
	struct queue_extent *extents;
	uint32_t nextents;
	int error;    /* it cannot be trusted: read failed, or a sync lost part of it */
	bool written; /* all its records are reserved */
};

struct store_read {
	struct worker_op op;
	struct store_compaction *job;
	uint32_t copy;
	uint32_t len;
};

struct store_compaction {
	struct queue *q;
	uint64_t victim;
	bool busy;
	struct store_copy *copies;
	uint32_t ncopies, copies_cap;
	struct store_read *reads;
	uint32_t nreads, reads_cap, reads_left;
	uint8_t *data;
	size_t data_cap;
	int fds[STORE_COMPACT_MAX_FILES];
	uint64_t fd_sequences[STORE_COMPACT_MAX_FILES];
	uint32_t nfds;
	struct commit_waiter waiter;
};

/* ---- segments a worker owns ------------------------------------------- */

static size_t store_segment_lower_bound(const struct queue *q, uint64_t sequence)
{
	size_t lo = 0, hi = q->nsegments;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (q->segments[mid].sequence < sequence)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct store_segment *store_segment_find(struct queue *q, uint64_t sequence)
{
	size_t at = store_segment_lower_bound(q, sequence);
	return at < q->nsegments && q->segments[at].sequence == sequence ? &q->segments[at] : NULL;
}

/* Publish the oldest segment of q's own writer still on disk. */
static void store_floor_own(struct queue *q)
{
	if (q->index < STORE_MAX_WRITERS)
		atomic_store(&q->store->writer_floor[q->index],
			     q->nsegments > 0 ? q->segments[0].sequence : UINT64_MAX);
}

/* Note that records here speak of a message of `writer` whose data ends
 * in its segment `hi`. */
static int store_cross_add(struct store_cross_dep **deps, uint32_t *n, uint32_t writer, uint64_t hi)
{
	for (uint32_t i = 0; i < *n; i++) {
		if ((*deps)[i].writer == writer) {
			if (hi > (*deps)[i].hi)
				(*deps)[i].hi = hi;
			return 0;
		}
	}
	struct store_cross_dep *more = realloc(*deps, (*n + 1) * sizeof(*more));
	if (more == NULL)
		return -ENOMEM;
	*deps = more;
	more[(*n)++] = (struct store_cross_dep){writer, hi};
	return 0;
}

/* Every writer named is gone past `hi` (or altogether). */
static bool store_cross_satisfied(struct queue_store *st, const struct store_cross_dep *deps,
				  uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (deps[i].writer < STORE_MAX_WRITERS &&
		    atomic_load(&st->writer_floor[deps[i].writer]) <= deps[i].hi)
			return false;
	return true;
}

/* `reserved`: its bytes were counted already (store_may_grow). */
static struct store_segment *store_segment_add(struct queue *q, uint64_t sequence, uint64_t bytes,
					       bool reserved)
{
	struct store_segment *found = store_segment_find(q, sequence);
	if (found != NULL)
		return found;
	if (q->nsegments == q->segments_cap) {
		size_t cap = q->segments_cap ? q->segments_cap * 2 : 16;
		struct store_segment *more = realloc(q->segments, cap * sizeof(*more));
		if (more == NULL)
			return NULL;
		q->segments = more;
		q->segments_cap = cap;
	}
	size_t at = store_segment_lower_bound(q, sequence);
	memmove(&q->segments[at + 1], &q->segments[at], (q->nsegments - at) * sizeof(*q->segments));
	q->segments[at] = (struct store_segment){.sequence = sequence, .bytes = bytes};
	q->nsegments++;
	if (!reserved)
		atomic_fetch_add(&q->store->bytes, bytes);
	store_floor_own(q);
	return &q->segments[at];
}

/*
 * Records of state (a recipient's outcome, MESSAGE_DONE) in `sequence`
 * speak of a message whose data lies in segments [lo, hi] of the same
 * writer: this segment must outlive those. Deleted first, it would leave
 * the message whole on disk without its outcomes, and a restart would
 * deliver it again.
 */
static void store_segment_depend(struct queue *q, uint64_t sequence, uint64_t lo, uint64_t hi)
{
	if (lo == 0)
		return;
	if (hi >= sequence)
		hi = sequence - 1;
	if (lo > hi)
		return;
	struct store_segment *seg = store_segment_find(q, sequence);
	if (seg == NULL)
		return;
	if (seg->after_lo == 0 || lo < seg->after_lo)
		seg->after_lo = lo;
	if (hi > seg->after_hi)
		seg->after_hi = hi;
}

static bool store_segment_deletable(struct queue *q, const struct store_segment *seg)
{
	if (!seg->closed || seg->live > 0 || seg->pinned || seg->deleting)
		return false;
	if (seg->ncross > 0 && !store_cross_satisfied(q->store, seg->cross, seg->ncross)) {
		q->cross_waiting = true;
		return false;
	}
	if (seg->after_lo == 0)
		return true;
	size_t at = store_segment_lower_bound(q, seg->after_lo);
	return at >= q->nsegments || q->segments[at].sequence > seg->after_hi;
}

/* The file of segments[at] is gone: forget it. */
static void store_segment_forget(struct queue *q, size_t at)
{
	struct store_segment *seg = &q->segments[at];
	char name[SEGMENT_NAME_MAX];
	segment_name(name, q->index, seg->sequence);
	log_event(LOG_LEVEL_DEBUG, "event=segment_deleted segment=%s", name);
	q->compact_stats.deleted++;
	atomic_fetch_sub(&q->store->bytes, seg->bytes);
	free(seg->cross);
	memmove(&q->segments[at], &q->segments[at + 1],
		(q->nsegments - at - 1) * sizeof(*q->segments));
	q->nsegments--;
	store_floor_own(q);
}

static void store_segment_unlink_failed(struct queue *q, uint64_t sequence, int error)
{
	char name[SEGMENT_NAME_MAX];
	segment_name(name, q->index, sequence);
	log_event(LOG_LEVEL_ERROR, "event=segment_delete_failed segment=%s error=\"%s\"", name,
		  strerror(error));
	struct store_segment *seg = store_segment_find(q, sequence);
	if (seg != NULL) {
		seg->deleting = false;
		seg->pinned = true; /* not tried again on every change */
	}
}

static void store_segments_collect(struct queue *q, size_t from);

static void store_orphan_unlinked(struct queue *q, uint32_t writer, uint64_t sequence, int res);
static struct store_orphan_writer *store_orphan_writer(struct queue *q, uint32_t writer, bool add);
static void store_orphan_writer_collect(struct queue *q, struct store_orphan_writer *ow);

/* A file of q's writer or of an orphan writer is gone (0, -ENOENT), or
 * could not be deleted. */
static void store_unlinked(struct queue *q, uint32_t writer, uint64_t sequence, int res)
{
	if (writer != q->index) {
		store_orphan_unlinked(q, writer, sequence, res);
		return;
	}
	if (res != 0 && res != -ENOENT) {
		store_segment_unlink_failed(q, sequence, -res);
		return;
	}
	struct store_segment *seg = store_segment_find(q, sequence);
	if (seg != NULL) {
		size_t at = (size_t)(seg - q->segments);
		store_segment_forget(q, at);
		/* Only now may what waited for it go. */
		store_segments_collect(q, at);
	}
}

static void store_segment_unlinked(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct store_unlink *u = (struct store_unlink *)op;
	struct queue *q = u->q;
	int res = cqe->res;
	if (res == -EINVAL || res == -EOPNOTSUPP) /* a kernel without the op */
		res = unlinkat(q->store->dir_fd, u->name, 0) == 0 ? 0 : -errno;
	q->unlinks_in_flight--;
	store_unlinked(q, u->writer, u->sequence, res);
	if (u->writer != q->index) {
		/* The next file of that retired writer, oldest first. */
		struct store_orphan_writer *ow = store_orphan_writer(q, u->writer, false);
		if (ow != NULL)
			store_orphan_writer_collect(q, ow);
	}
	free(u);
}

/* Delete a segment file of `writer` (q's own or an orphan's): on the ring
 * when q's worker runs, else here. Its bookkeeping follows the unlink. */
static void store_unlink_file(struct queue *q, uint32_t writer, uint64_t sequence)
{
	struct store_unlink *u = NULL;
	if (q->worker != NULL && q->writer != NULL)
		u = calloc(1, sizeof(*u));
	if (u == NULL) {
		char name[SEGMENT_NAME_MAX];
		segment_name(name, writer, sequence);
		store_unlinked(q, writer, sequence,
			       unlinkat(q->store->dir_fd, name, 0) == 0 ? 0 : -errno);
		return;
	}
	u->op.complete = store_segment_unlinked;
	u->q = q;
	u->writer = writer;
	u->sequence = sequence;
	segment_name(u->name, writer, sequence);
	q->unlinks_in_flight++;
	struct io_uring_sqe *sqe = worker_sqe(q->worker);
	io_uring_prep_unlinkat(sqe, q->store->dir_fd, u->name, 0);
	worker_sqe_set_op(sqe, &u->op);
}

/*
 * Delete the file of segments[at]. On a running worker the unlink goes to
 * the ring and the segment stays listed (so what depends on it keeps
 * waiting) until it completes: returns false. At start-up and close it is
 * done here: true when the segment is gone.
 */
static bool store_segment_delete_at(struct queue *q, size_t at)
{
	struct store_segment *seg = &q->segments[at];
	if (q->worker != NULL && q->writer != NULL) {
		seg->deleting = true;
		store_unlink_file(q, q->index, seg->sequence);
		return false;
	}
	char name[SEGMENT_NAME_MAX];
	segment_name(name, q->index, seg->sequence);
	if (unlinkat(q->store->dir_fd, name, 0) != 0 && errno != ENOENT) {
		store_segment_unlink_failed(q, seg->sequence, errno);
		return false;
	}
	store_segment_forget(q, at);
	return true;
}

/* Delete every deletable segment from index `from` on. Dependencies point
 * to earlier segments only, so one pass in sequence order sees each
 * segment after everything it waited for. */
static void store_segments_collect(struct queue *q, size_t from)
{
	for (size_t i = from; i < q->nsegments;) {
		if (store_segment_deletable(q, &q->segments[i]) && store_segment_delete_at(q, i))
			continue;
		i++;
	}
}

/* Delete a segment in which nothing lives any more, and whatever waited
 * for it. */
static void store_segment_maybe_delete(struct queue *q, struct store_segment *seg)
{
	if (!store_segment_deletable(q, seg))
		return;
	size_t at = (size_t)(seg - q->segments);
	if (store_segment_delete_at(q, at))
		store_segments_collect(q, at);
}

/* Count m in (or out of) the segments in [first, last]. Only the writer's
 * own segments: a message recovered from a worker number that no longer
 * runs lives in files no queue accounts for. */
static void store_segments_hold_range(struct queue *q, const struct queue_message *m,
				      uint64_t first, uint64_t last, int delta)
{
	if (m->writer != q->index)
		return;
	for (uint64_t s = first; s <= last && s != 0; s++) {
		struct store_segment *seg = store_segment_find(q, s);
		if (seg == NULL)
			continue;
		seg->live = (uint64_t)((int64_t)seg->live + delta);
		seg->no_compact = false;
		if (delta < 0) {
			q->compact_dirty = true;
			store_segment_maybe_delete(q, seg);
		}
	}
}

static void store_segments_hold(struct queue *q, const struct queue_message *m, int delta)
{
	store_segments_hold_range(q, m, m->first_sequence, m->last_sequence, delta);
}

static struct store_orphan_writer *store_orphan_writer(struct queue *q, uint32_t writer, bool add)
{
	for (size_t i = 0; i < q->norphans; i++)
		if (q->orphans[i].writer == writer)
			return &q->orphans[i];
	if (!add)
		return NULL;
	struct store_orphan_writer *more = realloc(q->orphans, (q->norphans + 1) * sizeof(*more));
	if (more == NULL)
		return NULL;
	q->orphans = more;
	q->orphans[q->norphans] = (struct store_orphan_writer){.writer = writer};
	return &q->orphans[q->norphans++];
}

/* Publish the oldest file of an orphan writer still on disk. */
static void store_floor_orphan(struct queue *q, const struct store_orphan_writer *ow)
{
	uint64_t floor = UINT64_MAX;
	for (size_t i = 0; i < ow->nsegments; i++)
		if (ow->segments[i].sequence < floor)
			floor = ow->segments[i].sequence;
	if (ow->writer < STORE_MAX_WRITERS)
		atomic_store(&q->store->writer_floor[ow->writer], floor);
}

/* An orphan file is gone (res 0 or -ENOENT) or could not be deleted. */
static void store_orphan_unlinked(struct queue *q, uint32_t writer, uint64_t sequence, int res)
{
	struct store_orphan_writer *ow = store_orphan_writer(q, writer, false);
	if (ow == NULL)
		return;
	for (size_t i = 0; i < ow->nsegments; i++) {
		struct store_orphan_segment *os = &ow->segments[i];
		if (os->sequence != sequence)
			continue;
		char name[SEGMENT_NAME_MAX];
		segment_name(name, writer, sequence);
		if (res != 0 && res != -ENOENT) {
			/* Left on disk with every newer file of its writer (see
			 * store_orphan_writer_collect): a leak, not a return of
			 * finished mail. Not tried again until a restart. */
			log_event(LOG_LEVEL_ERROR,
				  "event=segment_delete_failed segment=%s error=\"%s\"", name,
				  strerror(-res));
			os->deleting = false;
			ow->stuck = true;
			return;
		}
		log_event(LOG_LEVEL_DEBUG, "event=segment_deleted segment=%s", name);
		atomic_fetch_sub(&q->store->bytes, os->bytes);
		q->compact_stats.deleted++;
		free(os->cross);
		ow->segments[i] = ow->segments[--ow->nsegments];
		store_floor_orphan(q, ow);
		if (ow->nsegments == 0)
			log_event(LOG_LEVEL_INFO,
				  "event=orphan_segments_deleted writer=%u note=\"every message of "
				  "a worker number no longer running is finished\"",
				  writer);
		return;
	}
}

static void store_unlink_file(struct queue *q, uint32_t writer, uint64_t sequence);

/*
 * Every message of an orphan writer is finished: delete its files, once
 * the outcomes they hold of yet other writers' messages (it owned them
 * in an earlier run) are no longer needed.
 */
static void store_orphan_writer_collect(struct queue *q, struct store_orphan_writer *ow)
{
	if (ow->live > 0)
		return;
	for (size_t i = 0; i < ow->nsegments; i++) {
		const struct store_orphan_segment *os = &ow->segments[i];
		if (os->ncross > 0 && !store_cross_satisfied(q->store, os->cross, os->ncross)) {
			q->cross_waiting = true;
			return;
		}
	}
	/*
	 * Oldest first, one at a time, stopping at a failure: a newer file
	 * may hold the outcomes or MESSAGE_DONE of a message whose data is in
	 * an older one, so it must never be the one left behind by a crash
	 * or a failed unlink. On the ring, the next one starts when this one
	 * completes (store_segment_unlinked); here (start-up, close) the loop
	 * goes on.
	 */
	while (ow->nsegments > 0 && !ow->stuck) {
		struct store_orphan_segment *oldest = &ow->segments[0];
		for (size_t i = 1; i < ow->nsegments; i++)
			if (ow->segments[i].sequence < oldest->sequence)
				oldest = &ow->segments[i];
		if (oldest->deleting)
			return; /* on the ring */
		oldest->deleting = true;
		size_t before = ow->nsegments;
		store_unlink_file(q, ow->writer, oldest->sequence);
		if (ow->nsegments == before)
			return; /* on the ring, or stuck */
	}
}

/* An orphan message finished. */
static void store_orphan_done(struct queue *q, const struct queue_message *m)
{
	struct store_orphan_writer *ow = store_orphan_writer(q, m->writer, false);
	if (ow == NULL || ow->live == 0)
		return;
	if (--ow->live == 0)
		store_orphan_writer_collect(q, ow);
}

/* Now and then, what waits for other queues' deletions looks again. */
static void store_cross_recheck(struct queue *q);

static void store_cross_timer_fired(struct timer *t)
{
	struct queue *q = (struct queue *)((char *)t - offsetof(struct queue, cross_timer));
	q->cross_check_ms = 0;
	store_cross_recheck(q);
}

/* While something waits, an idle worker still looks again each second
 * (its loop sleeps until a timer is due). */
static void store_cross_arm(struct queue *q)
{
	if (!q->cross_waiting || q->worker == NULL || timer_armed(&q->cross_timer))
		return;
	if (q->cross_timer.fire == NULL)
		timer_init(&q->cross_timer, store_cross_timer_fired);
	timer_arm(&q->worker->timers, &q->cross_timer, q->worker->now_ms, STORE_CROSS_CHECK_MS);
}

static void store_cross_recheck(struct queue *q)
{
	if (!q->cross_waiting || q->worker == NULL || q->worker->now_ms < q->cross_check_ms)
		return;
	q->cross_check_ms = q->worker->now_ms + STORE_CROSS_CHECK_MS;
	q->cross_waiting = false; /* set again by whatever still waits */
	store_segments_collect(q, 0);
	for (size_t i = 0; i < q->norphans; i++)
		store_orphan_writer_collect(q, &q->orphans[i]);
}

/* ---- messages ---------------------------------------------------------- */

static const char *store_rcpt_domain(const struct store_rcpt *r)
{
	return r->address + r->domain_offset;
}

static uint16_t store_domain_offset(const char *address, size_t len)
{
	const char *at = NULL;
	for (size_t i = len; i > 0; i--) {
		if (address[i - 1] == '@') {
			at = address + i - 1;
			break;
		}
	}
	return at != NULL ? (uint16_t)(at - address + 1) : (uint16_t)len;
}

/*
 * One allocation for the message and its recipients; one for the text.
 * Strings are stored NUL-terminated in the order sender, client, helo,
 * params, recipients.
 */
static struct queue_message *store_message_new(uint32_t nrcpt, const char *const *strings,
					       const size_t *lens, size_t nstrings)
{
	struct queue_message *m = calloc(1, sizeof(*m) + nrcpt * sizeof(struct store_rcpt));
	if (m == NULL)
		return NULL;
	size_t total = 0;
	for (size_t i = 0; i < nstrings; i++)
		total += lens[i] + 1;
	m->text = malloc(total ? total : 1);
	if (m->text == NULL) {
		free(m);
		return NULL;
	}
	char *p = m->text;
	for (size_t i = 0; i < nstrings; i++) {
		memcpy(p, strings[i], lens[i]);
		p[lens[i]] = '\0';
		p += lens[i] + 1;
	}
	m->nrcpt = nrcpt;
	m->remaining = nrcpt;
	/* Recipients are the last nrcpt strings. */
	p = m->text;
	size_t first_rcpt = nstrings - nrcpt;
	for (size_t i = 0; i < nstrings; i++) {
		if (i >= first_rcpt) {
			struct store_rcpt *r = &m->rcpts[i - first_rcpt];
			r->message = m;
			r->address = p;
			r->len = (uint16_t)lens[i];
			r->domain_offset = store_domain_offset(p, lens[i]);
			r->index = (uint16_t)(i - first_rcpt);
		}
		p += lens[i] + 1;
	}
	return m;
}

static void store_message_free(struct queue_message *m)
{
	buf_release(&m->pending);
	free(m->extents);
	free(m->text);
	free(m);
}

/* A message that will never be stored, or is finished: out of its
 * segments (which may go now) and the count, then freed — unless a copy
 * of it is being made, whose end frees it. */
static void store_message_drop(struct queue *q, struct queue_message *m)
{
	if (m->counted)
		atomic_fetch_sub(&q->store->messages, 1);
	m->counted = false;
	store_segments_hold(q, m, -1);
	if (m->compacting) {
		m->dropped = true;
		return;
	}
	store_message_free(m);
}

static void store_stored_link(struct queue *q, struct queue_message *m)
{
	m->all_prev = NULL;
	m->all_next = q->stored;
	if (q->stored != NULL)
		q->stored->all_prev = m;
	q->stored = m;
}

static void store_stored_unlink(struct queue *q, struct queue_message *m)
{
	if (m->all_prev != NULL)
		m->all_prev->all_next = m->all_next;
	else
		q->stored = m->all_next;
	if (m->all_next != NULL)
		m->all_next->all_prev = m->all_prev;
	m->all_next = m->all_prev = NULL;
}

/*
 * A stored message of the owner's own writer takes its place in its
 * segments: listed in the segment of its first record (where compaction
 * looks for it) and weighed in the live bytes of each segment it spans.
 */
static void store_message_place(struct queue *q, struct queue_message *m)
{
	if (m->writer != q->index || m->first_sequence == 0 || m->seg_listed)
		return;
	struct store_segment *first = store_segment_find(q, m->first_sequence);
	if (first == NULL)
		return;                /* not accounted (out of memory at its creation) */
	m->weight = m->body_len + 512; /* its envelope, record headers: roughly */
	for (uint64_t s = m->first_sequence; s <= m->last_sequence; s++) {
		struct store_segment *seg = store_segment_find(q, s);
		if (seg != NULL) {
			seg->live_bytes += m->weight;
			seg->placed++;
		}
	}
	first = store_segment_find(q, m->first_sequence); /* the array does not move here */
	m->seg_prev = NULL;
	m->seg_next = first->messages;
	if (first->messages != NULL)
		first->messages->seg_prev = m;
	first->messages = m;
	m->seg_listed = true;
	if (m->last_sequence - m->first_sequence > q->max_span)
		q->max_span = m->last_sequence - m->first_sequence;
}

static void store_message_unplace(struct queue *q, struct queue_message *m)
{
	if (!m->seg_listed)
		return;
	for (uint64_t s = m->first_sequence; s <= m->last_sequence; s++) {
		struct store_segment *seg = store_segment_find(q, s);
		if (seg != NULL) {
			seg->live_bytes -= m->weight;
			seg->placed--;
		}
	}
	/* Its first segment exists: m holds it. */
	if (m->seg_prev != NULL) {
		m->seg_prev->seg_next = m->seg_next;
	} else {
		struct store_segment *seg = store_segment_find(q, m->first_sequence);
		if (seg != NULL)
			seg->messages = m->seg_next;
	}
	if (m->seg_next != NULL)
		m->seg_next->seg_prev = m->seg_prev;
	m->seg_next = m->seg_prev = NULL;
	m->seg_listed = false;
}

static int store_message_add_extent(struct queue_message *m, struct commit_location loc,
				    uint32_t len)
{
	if (m->nextents == m->extents_cap) {
		uint32_t cap = m->extents_cap ? m->extents_cap * 2 : 1;
		struct queue_extent *more = realloc(m->extents, cap * sizeof(*more));
		if (more == NULL)
			return -ENOMEM;
		m->extents = more;
		m->extents_cap = cap;
	}
	m->extents[m->nextents++] = (struct queue_extent){
		.sequence = loc.sequence,
		.offset = loc.offset + RECORD_BODY_DATA_OFFSET,
		.len = len,
	};
	return 0;
}

static void store_unstored_link(struct queue *q, struct queue_message *m)
{
	m->prev = NULL;
	m->next = q->unstored;
	if (q->unstored != NULL)
		q->unstored->prev = m;
	q->unstored = m;
}

static void store_unstored_unlink(struct queue *q, struct queue_message *m)
{
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		q->unstored = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	m->prev = m->next = NULL;
}

/* ---- the index and its shards ------------------------------------------ */

static uint32_t store_shard_of(const struct queue_store *st, const struct store_rcpt *r)
{
	const char *domain = store_rcpt_domain(r);
	size_t len = r->len - r->domain_offset;
	return index_shard_for(index_domain_hash(domain, len), st->nshards);
}

static void store_index_rcpt(struct queue_store *st, struct store_rcpt *r)
{
	struct store_shard *shard = &st->shards[r->shard];
	const char *domain = store_rcpt_domain(r);
	size_t len = r->len - r->domain_offset;
	if (index_insert(&shard->index, domain, len, &r->entry, INDEX_READY, 0) != 0)
		log_event(LOG_LEVEL_ERROR,
			  "event=index_insert_failed queue_id=%s rcpt=%u note=\"out of memory; the "
			  "recipient stays on disk and returns at the next start\"",
			  r->message->id, r->index);
}

static void store_xfer_handle(struct xmsg *msg)
{
	struct store_xfer *x = (struct store_xfer *)msg;
	struct queue_store *st = x->target->store;
	for (uint32_t i = 0; i < x->count; i++)
		store_index_rcpt(st, x->rcpts[i]);
	atomic_fetch_sub(&st->xfers_in_flight, 1);
	free(x);
}

/* The message is durable: make its recipients visible in their shards. */
static void store_index_message(struct queue *q, struct queue_message *m)
{
	struct queue_store *st = q->store;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct store_rcpt *r = &m->rcpts[i];
		if (r->finished)
			continue; /* recovery found its outcome */
		r->shard = store_shard_of(st, r);
		uint32_t owner = st->shards[r->shard].owner;
		if (owner == q->index || q->worker == NULL) {
			store_index_rcpt(st, r);
			continue;
		}
		struct store_xfer *x = q->outbox[owner];
		if (x == NULL || x->count == x->cap) {
			uint32_t cap = x ? x->cap * 2 : 64;
			struct store_xfer *more =
				realloc(x, sizeof(*x) + cap * sizeof(x->rcpts[0]));
			if (more == NULL) {
				log_event(LOG_LEVEL_ERROR,
					  "event=index_transfer_failed queue_id=%s rcpt=%u "
					  "note=\"out of memory; the recipient stays on disk "
					  "and returns at the next start\"",
					  m->id, r->index);
				continue;
			}
			if (x == NULL)
				more->count = 0;
			more->cap = cap;
			more->target = &st->queues[owner];
			x = more;
			q->outbox[owner] = x;
		}
		x->rcpts[x->count++] = r;
	}
}

static void store_send_outbox(struct queue *q)
{
	struct queue_store *st = q->store;
	for (uint32_t w = 0; w < st->cfg.workers; w++) {
		struct store_xfer *x = q->outbox[w];
		if (x == NULL)
			continue;
		q->outbox[w] = NULL;
		atomic_fetch_add(&st->xfers_in_flight, 1);
		worker_send(st->queues[w].worker, &x->link, store_xfer_handle);
	}
}

/* ---- writer hooks ----------------------------------------------------------- */

/* Did m have a record in `sequence` at or past good_end (lost)? */
static bool store_message_lost(const struct queue_message *m, uint64_t sequence, uint64_t good_end)
{
	if (m->first_sequence == 0 || sequence < m->first_sequence || sequence > m->last_sequence)
		return false;
	if (m->envelope.sequence == sequence && m->envelope.offset >= good_end)
		return true;
	for (uint32_t i = 0; i < m->nextents; i++)
		if (m->extents[i].sequence == sequence && m->extents[i].offset >= good_end)
			return true;
	return m->state == STORE_COMMITTING && m->commit.sequence == sequence &&
	       m->commit.offset >= good_end;
}

static void store_compact_on_poison(struct queue *q, uint64_t sequence, uint64_t good_end);

static void store_on_poison(void *arg, uint64_t sequence, uint64_t good_end, bool cut)
{
	struct queue *q = arg;
	/*
	 * Messages that lost a record fail, whether still streaming or already
	 * committing: a COMMIT that went to the next segment would sync fine
	 * and must not earn a 250 for a message whose envelope or body is
	 * gone. Messages whose records there all came before good_end were
	 * durable already and carry on (failing those would be wrong too: a
	 * COMMIT already gathering elsewhere would bring back a message that
	 * got 451).
	 */
	for (struct queue_message *m = q->unstored; m != NULL; m = m->next) {
		if ((m->state == STORE_STREAMING || m->state == STORE_COMMITTING) &&
		    store_message_lost(m, sequence, good_end)) {
			m->state = STORE_FAILED;
			m->error = -EIO;
		}
	}
	store_compact_on_poison(q, sequence, good_end);
	/* The writer cut the file back to good_end: it holds that much now
	 * (for max_size, and for compaction's measure of how dead it is). */
	struct store_segment *seg = store_segment_find(q, sequence);
	if (cut && seg != NULL && seg->bytes > good_end) {
		atomic_fetch_sub(&q->store->bytes, seg->bytes - good_end);
		seg->bytes = good_end;
	}
}

static void store_on_drain(void *arg)
{
	struct queue *q = arg;
	for (struct queue_message *m = q->unstored, *next; m != NULL; m = next) {
		next = m->next;
		/* A paused message that failed meanwhile (a poisoned segment) is
		 * resumed too: its session learns of the failure from its next
		 * write() instead of sitting out its DATA timeout. */
		if (m->paused && (m->state == STORE_STREAMING || m->state == STORE_FAILED)) {
			m->paused = false;
			if (m->client != NULL)
				m->client->resume(m->client);
		}
	}
}

/*
 * Free space on the spool's file system, as the last look saw it (at most
 * STORE_FREE_CHECK_MS old), or looked at now when `fresh` (before a new
 * segment takes its share). UINT64_MAX when it cannot be known.
 */
static uint64_t store_free_bytes(struct queue *q, bool fresh)
{
	uint64_t now = q->worker != NULL ? q->worker->now_ms : worker_clock_ms();
	if (fresh || q->free_checked_ms == 0 || now - q->free_checked_ms >= STORE_FREE_CHECK_MS) {
		struct statvfs sv;
		q->free_checked_ms = now;
		q->free_bytes = fstatvfs(q->store->dir_fd, &sv) == 0
					? (uint64_t)sv.f_bavail * sv.f_frsize
					: UINT64_MAX;
	}
	return q->free_bytes;
}

/* A new segment would add its whole size to the spool: refuse one that
 * would cross max_bytes or eat into min_free_bytes. */
static int store_may_grow(void *arg, uint64_t size)
{
	struct queue *q = arg;
	struct queue_store *st = q->store;
	if (st->cfg.min_free_bytes != 0 &&
	    store_free_bytes(q, true) < st->cfg.min_free_bytes + size)
		return -ENOSPC;
	/* Reserve the bytes in the same step as the check: two workers
	 * rolling at once must not both fit under max_bytes. */
	uint_fast64_t cur = atomic_load(&st->bytes);
	do {
		if (st->cfg.max_bytes != 0 && cur + size > st->cfg.max_bytes)
			return -ENOSPC;
	} while (!atomic_compare_exchange_weak(&st->bytes, &cur, cur + size));
	return 0;
}

static void store_grow_failed(void *arg, uint64_t size)
{
	struct queue *q = arg;
	atomic_fetch_sub(&q->store->bytes, size);
}

static void store_on_segment_created(void *arg, uint64_t sequence, uint64_t size)
{
	struct queue *q = arg;
	if (sequence >= q->next_sequence) /* a later queue_open continues from here */
		q->next_sequence = sequence + 1;
	if (store_segment_add(q, sequence, size, true) == NULL) {
		atomic_fetch_sub(&q->store->bytes, size); /* not counted after all */
		log_event(LOG_LEVEL_ERROR, "event=segment_accounting_failed sequence=%llu",
			  (unsigned long long)sequence);
	}
}

static void store_on_segment_closed(void *arg, uint64_t sequence)
{
	struct queue *q = arg;
	struct store_segment *seg = store_segment_find(q, sequence);
	if (seg == NULL)
		return;
	seg->closed = true;
	q->compact_dirty = true;
	store_segment_maybe_delete(q, seg);
}

/* ---- queue.h: per worker ----------------------------------------------- */

int queue_open(struct queue **out, struct worker *w, struct queue_store *store, uint32_t index)
{
	if (index >= store->cfg.workers)
		return -EINVAL;
	struct queue *q = &store->queues[index];
	q->worker = w;
	struct commit_config cc = {
		.dir_fd = store->dir_fd,
		.worker_index = index,
		.first_sequence = q->next_sequence,
		.segment_size = store->cfg.segment_size,
		.batch_cap = store->cfg.batch_cap,
	};
	struct commit_hooks hooks = {
		.arg = q,
		.on_poison = store_on_poison,
		.on_drain = store_on_drain,
		.on_segment_closed = store_on_segment_closed,
		.on_segment_created = store_on_segment_created,
		.may_grow = store_may_grow,
		.grow_failed = store_grow_failed,
	};
	int r = commit_writer_open(&q->writer, w, &cc, &hooks);
	if (r != 0)
		return r;
	*out = q;
	return 0;
}

void queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	if (q->worker != NULL && timer_armed(&q->cross_timer))
		timer_cancel(&q->worker->timers, &q->cross_timer);
	commit_writer_close(q->writer);
	q->writer = NULL;
	/* The writer's last segment is finished with: deletable if empty. */
	for (size_t i = 0; i < q->nsegments; i++)
		q->segments[i].closed = true;
	store_segments_collect(q, 0);
	q->worker = NULL;
}

static int store_service_start(struct worker *w, void *arg, void **state)
{
	struct queue *q;
	int r = queue_open(&q, w, arg, w->index);
	if (r != 0) {
		snprintf(w->error, sizeof(w->error), "worker %u: cannot open its spool writer: %s",
			 w->index, strerror(-r));
		return r;
	}
	*state = q;
	return 0;
}

static void store_service_before_wait(struct worker *w, void *state)
{
	(void)w;
	queue_flush(state);
}

static bool store_service_idle(struct worker *w, void *state)
{
	(void)w;
	return queue_pending(state) == 0;
}

static void store_service_stop(struct worker *w, void *state)
{
	(void)w;
	queue_close(state);
}

const struct worker_service queue_service = {
	.name = "store",
	.start = store_service_start,
	.before_wait = store_service_before_wait,
	.idle = store_service_idle,
	.stop = store_service_stop,
};

unsigned queue_pending(const struct queue *q)
{
	/* Cross-worker transfers count too: a worker must not leave while
	 * recipients are on their way to it. */
	unsigned unsent = 0;
	for (uint32_t w = 0; q->outbox != NULL && w < q->store->cfg.workers; w++)
		unsent += q->outbox[w] != NULL;
	return q->pending + unsent + atomic_load(&q->store->xfers_in_flight) +
	       (q->writer != NULL && !commit_idle(q->writer)) +
	       (q->compaction != NULL && q->compaction->busy) + q->unlinks_in_flight;
}

static void store_compact_maybe_start(struct queue *q);

void queue_flush(struct queue *q)
{
	store_send_outbox(q);
	store_cross_recheck(q);
	store_cross_arm(q);
	store_compact_maybe_start(q);
	commit_flush(q->writer);
}

/*
 * Bytes of new segment files the writer would create for a message of
 * `size` octets (0: unknown, a typical one): none when it fits in what is
 * left of its current segment, else as many whole segments as it needs
 * (a message may span several).
 */
static uint64_t store_growth_for(const struct queue *q, uint64_t size)
{
	uint64_t segment_size = q->store->cfg.segment_size;
	/* Record headers add 44 octets per 64 KiB chunk: under 1/64. */
	uint64_t need = size + size / 64 + STORE_ROOM_MARGIN;
	uint64_t room = q->writer != NULL ? commit_room(q->writer) : 0;
	if (need <= room)
		return 0;
	uint64_t usable = segment_size > 2 * 4096 ? segment_size - 4096 : segment_size;
	return (need - room + usable - 1) / usable * segment_size;
}

int queue_check_space(struct queue *q, uint64_t size)
{
	struct queue_store *st = q->store;
	if (st->cfg.max_messages != 0 && atomic_load(&st->messages) >= st->cfg.max_messages)
		return -ENOSPC;
	uint64_t growth = store_growth_for(q, size);
	/* Full when the message fits neither in what is left of the writer's
	 * segment nor in the new segments it would need under the limit. */
	if (st->cfg.max_bytes != 0 && growth > 0 &&
	    atomic_load(&st->bytes) + growth > st->cfg.max_bytes)
		return -ENOSPC;
	if (st->cfg.min_free_bytes != 0) {
		store_free_bytes(q, false);
		/* Below the floor nothing new is taken; above it, a message
		 * must leave the floor intact after the segments it needs. */
		if (q->free_bytes < st->cfg.min_free_bytes ||
		    q->free_bytes - st->cfg.min_free_bytes < growth)
			return -ENOSPC;
	}
	return 0;
}

/* 80 bits -> 16 Crockford base32 characters: seconds (34 bits), micro-
 * seconds (20) of the arrival, worker (8), counter (18). Sorts by arrival
 * time. */
static void store_make_id(struct queue *q, const struct timespec *arrival,
			  char id[QUEUE_ID_LEN + 1])
{
	static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; /* in ASCII order */
	uint64_t hi = ((uint64_t)arrival->tv_sec & ((UINT64_C(1) << 34) - 1)) << 20 |
		      (uint64_t)(arrival->tv_nsec / 1000);
	uint32_t lo = (q->index & 0xff) << 18 | (q->id_counter++ & 0x3ffff);
	unsigned __int128 v = ((unsigned __int128)hi << 26) | lo;
	for (int i = QUEUE_ID_LEN - 1; i >= 0; i--) {
		id[i] = alphabet[(unsigned)(v & 31)];
		v >>= 5;
	}
	id[QUEUE_ID_LEN] = '\0';
}

/* Reserve one record of m's data (envelope, body, commit) in q's writer and count m in the segments
 * it now reaches. NULL with *error set when no room can be had. */
static uint8_t *store_reserve_for(struct queue *q, struct queue_message *m, size_t size,
				  uint64_t *salt, struct commit_location *loc, int *error)
{
	uint8_t *p = commit_reserve(q->writer, size, salt, loc, error);
	if (p == NULL)
		return NULL;
	if (m->first_sequence == 0) {
		m->first_sequence = m->last_sequence = loc->sequence;
		store_segments_hold_range(q, m, loc->sequence, loc->sequence, +1);
	} else if (loc->sequence > m->last_sequence) {
		store_segments_hold_range(q, m, m->last_sequence + 1, loc->sequence, +1);
		m->last_sequence = loc->sequence;
	}
	return p;
}

/*
 * Reserve a record of m's state (an outcome, MESSAGE_DONE). It does not
 * widen m's own segments; instead the segment it lands in must outlive
 * m's data (store_segment_depend). A message from another writer's files
 * (a worker number that no longer runs) cannot be ordered that way: the
 * segment is kept for good.
 */
static uint8_t *store_reserve_state(struct queue *q, struct queue_message *m, size_t size,
				    uint64_t *salt, struct commit_location *loc, int *error)
{
	uint8_t *p = commit_reserve(q->writer, size, salt, loc, error);
	if (p == NULL)
		return NULL;
	if (m->writer == q->index) {
		/* Older copies whose segments are all gone no longer matter. */
		if (m->origin_sequence < m->first_sequence) {
			size_t at = store_segment_lower_bound(q, m->origin_sequence);
			if (at >= q->nsegments || q->segments[at].sequence >= m->first_sequence)
				m->origin_sequence = m->first_sequence;
		}
		store_segment_depend(q, loc->sequence, m->origin_sequence, m->last_sequence);
	} else {
		struct store_segment *seg = store_segment_find(q, loc->sequence);
		if (seg != NULL &&
		    store_cross_add(&seg->cross, &seg->ncross, m->writer, m->last_sequence) != 0)
			seg->pinned = true; /* cannot say what it waits for: keep it */
	}
	return p;
}

/* The same for a message being received: failing to reserve fails it. */
static uint8_t *store_reserve(struct queue *q, struct queue_message *m, size_t size, uint64_t *salt,
			      struct commit_location *loc)
{
	int error = 0;
	uint8_t *p = store_reserve_for(q, m, size, salt, loc, &error);
	if (p == NULL) {
		m->state = STORE_FAILED;
		m->error = error;
	}
	return p;
}

int queue_message_begin(struct queue *q, struct queue_client *client,
			const struct queue_envelope *env, struct queue_message **out)
{
	if (env->nrecipients == 0 || env->nrecipients + env->nparams > QUEUE_MAX_ENVELOPE_ITEMS)
		return -EINVAL;
	int r = queue_check_space(q, 0);
	if (r != 0)
		return r;
	size_t nstrings = 3 + env->nparams + env->nrecipients;
	const char *strings[nstrings];
	size_t lens[nstrings];
	strings[0] = env->sender;
	lens[0] = env->sender_len;
	strings[1] = env->client_address;
	lens[1] = strlen(env->client_address);
	strings[2] = env->helo;
	lens[2] = strlen(env->helo);
	for (unsigned i = 0; i < env->nparams; i++) {
		strings[3 + i] = env->params[i].text;
		lens[3 + i] = env->params[i].len;
	}
	for (unsigned i = 0; i < env->nrecipients; i++) {
		strings[3 + env->nparams + i] = env->recipients[i].address;
		lens[3 + env->nparams + i] = env->recipients[i].len;
	}
	for (size_t i = 0; i < nstrings; i++)
		if (lens[i] > UINT16_MAX)
			return -EINVAL;
	struct queue_message *m = store_message_new(env->nrecipients, strings, lens, nstrings);
	if (m == NULL)
		return -ENOMEM;
	m->queue = q;
	m->writer = q->index;
	m->client = client;
	m->sender_len = (uint16_t)env->sender_len;
	m->arrival_ms = (int64_t)env->arrival.tv_sec * 1000 + env->arrival.tv_nsec / 1000000;
	store_make_id(q, &env->arrival, m->id);

	struct record_string rs[nstrings - 3];
	for (size_t i = 3; i < nstrings; i++)
		rs[i - 3] = (struct record_string){strings[i], (uint16_t)lens[i]};
	struct record_envelope renv = {
		.arrival_ms = m->arrival_ms,
		.client = {strings[1], (uint16_t)lens[1]},
		.helo = {strings[2], (uint16_t)lens[2]},
		.sender = {strings[0], (uint16_t)lens[0]},
		.nparams = (uint16_t)env->nparams,
		.nrecipients = (uint16_t)env->nrecipients,
	};
	memcpy(renv.id, m->id, RECORD_ID_LEN);
	size_t size = record_size(record_envelope_payload_size(&renv, rs));
	uint64_t salt;
	struct commit_location loc;
	uint8_t *p = store_reserve(q, m, size, &salt, &loc);
	if (p == NULL) {
		int e = m->error;
		store_message_free(m);
		return e;
	}
	record_encode_envelope(p, size, salt, &renv, rs);
	m->envelope = loc;
	q->pending++;
	store_unstored_link(q, m);
	*out = m;
	return 0;
}

const char *queue_message_id(const struct queue_message *m)
{
	return m->id;
}

/* One BODY record of data[0..len), encoded straight into the batch. */
static int store_emit_body(struct queue_message *m, const void *data, size_t len)
{
	struct queue *q = m->queue;
	struct record_body body = {
		.chunk = m->nextents, /* one extent per BODY record */
		.data = data,
		.len = (uint32_t)len,
	};
	memcpy(body.id, m->id, RECORD_ID_LEN);
	size_t size = record_body_size(len);
	uint64_t salt;
	struct commit_location loc;
	uint8_t *p = store_reserve(q, m, size, &salt, &loc);
	if (p == NULL)
		return m->error;
	record_encode_body(p, size, salt, &body);
	if (store_message_add_extent(m, loc, (uint32_t)len) != 0) {
		m->state = STORE_FAILED;
		m->error = -ENOMEM;
		return -ENOMEM;
	}
	m->body_len += len;
	return 0;
}

/* BODY records for what is pending, in chunks of at most max bytes while
 * at least `min` bytes are pending. */
static int store_emit_pending(struct queue_message *m, size_t min)
{
	while (buf_len(&m->pending) >= min && buf_len(&m->pending) > 0) {
		size_t n = buf_len(&m->pending);
		if (n > STORE_BODY_CHUNK)
			n = STORE_BODY_CHUNK;
		if (store_emit_body(m, buf_head(&m->pending), n) != 0)
			return m->error;
		buf_consume(&m->pending, n);
	}
	return 0;
}

int queue_message_write(struct queue_message *m, const void *data, size_t len)
{
	if (m->state == STORE_FAILED)
		return m->error;
	/* Gathered into whole 64 KiB BODY records: a session hands over one
	 * receive buffer's worth at a time, and records (and the extents
	 * kept in memory for each) that small would cost more than a copy. */
	if (len > 0 && buf_append(&m->pending, data, len) != 0)
		return -ENOMEM;
	if (store_emit_pending(m, STORE_BODY_CHUNK) != 0)
		return m->error;
	if (commit_over_cap(m->queue->writer)) {
		m->paused = true;
		return 1;
	}
	return 0;
}

static void store_committed(struct commit_waiter *w, int status)
{
	struct queue_message *m =
		(struct queue_message *)((char *)w - offsetof(struct queue_message, waiter));
	struct queue *q = m->queue;
	struct queue_client *client = m->client;
	store_unstored_unlink(q, m);
	q->pending--;
	if (status == 0 && m->state == STORE_COMMITTING) {
		/* Its segments already count it (store_reserve), and so does
		 * store->messages (queue_message_commit). */
		m->state = STORE_STORED;
		m->origin_sequence = m->first_sequence;
		store_stored_link(q, m);
		store_message_place(q, m);
		store_index_message(q, m);
		if (client != NULL)
			client->committed(client, 0);
		return;
	}
	/* What made the message fail says more than the batch it waited in
	 * (-ENOSPC is a 452, not a 451). */
	if (m->state == STORE_FAILED && m->error != 0)
		status = m->error;
	else if (status == 0)
		status = -EIO;
	if (client != NULL)
		client->committed(client, status);
	store_message_drop(q, m);
}

static void store_failed_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct queue *q = (struct queue *)((char *)op - offsetof(struct queue, failed_op));
	(void)cqe;
	q->failed_armed = false;
	/* Oldest first: the list was built newest first. */
	struct queue_message *list = NULL;
	while (q->failed != NULL) {
		struct queue_message *m = q->failed;
		q->failed = m->failed_next;
		m->failed_next = list;
		list = m;
	}
	while (list != NULL) {
		struct queue_message *m = list;
		list = m->failed_next;
		store_committed(&m->waiter, m->error);
	}
}

/*
 * Report a failure from the loop, never from inside commit(): a no-op on
 * the ring completes in a coming loop turn and reports every message that
 * failed meanwhile. (Waiting for the writer's next batch instead would
 * report at once when nothing is gathering.)
 */
static void store_fail_later(struct queue_message *m)
{
	struct queue *q = m->queue;
	m->state = STORE_FAILED;
	if (m->error == 0)
		m->error = -EIO;
	m->failed_next = q->failed;
	q->failed = m;
	if (!q->failed_armed) {
		q->failed_armed = true;
		q->failed_op.complete = store_failed_complete;
		struct io_uring_sqe *sqe = worker_sqe(q->worker);
		io_uring_prep_nop(sqe);
		worker_sqe_set_op(sqe, &q->failed_op);
	}
}

void queue_message_commit(struct queue_message *m)
{
	struct queue *q = m->queue;
	struct queue_store *st = q->store;
	m->waiter.done = store_committed;
	m->paused = false;
	if (m->state == STORE_FAILED) {
		store_fail_later(m);
		return;
	}
	/* Counted from now on, so that commits still in flight count against
	 * max_messages too: one turn's commits cannot overshoot it. */
	uint64_t before = atomic_fetch_add(&st->messages, 1);
	m->counted = true;
	if (st->cfg.max_messages != 0 && before >= st->cfg.max_messages) {
		m->error = -ENOSPC;
		store_fail_later(m);
		return;
	}
	if (store_emit_pending(m, 1) != 0) {
		store_fail_later(m);
		return;
	}
	struct record_commit c = {.body_len = m->body_len, .nchunks = m->nextents};
	memcpy(c.id, m->id, RECORD_ID_LEN);
	size_t size = record_commit_size();
	uint64_t salt;
	struct commit_location loc;
	uint8_t *p = store_reserve(q, m, size, &salt, &loc);
	if (p == NULL) {
		store_fail_later(m);
		return;
	}
	record_encode_commit(p, size, salt, &c);
	buf_release(&m->pending);
	m->commit = loc;
	m->state = STORE_COMMITTING;
	commit_wait(q->writer, &m->waiter);
}

void queue_message_abort(struct queue_message *m)
{
	struct queue *q = m->queue;
	/* Its records stay behind as dead space: without a COMMIT they are
	 * never read back. Its segments no longer count it. */
	store_unstored_unlink(q, m);
	q->pending--;
	store_message_drop(q, m);
}

void queue_message_detach(struct queue_message *m)
{
	m->client = NULL;
}

/* ---- finishing recipients ---------------------------------------------- */

/* A recipient's outcome, from its shard's worker to its message's owner. */
struct store_done_msg {
	struct xmsg link;
	struct store_rcpt *rcpt;
	enum queue_outcome outcome;
	char reason[256];
};

/* The message's last recipient ended: it is dead space from now on. */
static void store_message_done(struct queue *q, struct queue_message *m)
{
	struct record_id rid;
	memcpy(rid.id, m->id, RECORD_ID_LEN);
	size_t size = record_id_size();
	uint64_t salt;
	struct commit_location loc;
	int error = 0;
	uint8_t *p = store_reserve_state(q, m, size, &salt, &loc, &error);
	if (p != NULL)
		record_encode_id(p, size, salt, RECORD_MESSAGE_DONE, &rid);
	else
		log_event(LOG_LEVEL_WARN,
			  "event=message_done_unrecorded queue_id=%s error=\"%s\" note=\"its "
			  "recipients' outcomes are recorded; it is dropped at the next start\"",
			  m->id, strerror(-error));
	log_event(LOG_LEVEL_INFO, "event=message_done queue_id=%s nrcpt=%u", m->id, m->nrcpt);
	store_message_unplace(q, m);
	store_stored_unlink(q, m);
	if (m->writer != q->index)
		store_orphan_done(q, m);
	/* Its segments may go now. The segment holding MESSAGE_DONE (or, when
	 * that could not be written, its outcomes) stays until they have:
	 * store_reserve_state made it depend on them. */
	store_message_drop(q, m);
}

/* On the owner: record one recipient's outcome; the message ends with its
 * last recipient. */
static void store_rcpt_done(struct queue *q, struct store_rcpt *r, enum queue_outcome outcome,
			    const char *reason)
{
	struct queue_message *m = r->message;
	if (r->finished)
		return;
	r->finished = true;
	r->failed = outcome == QUEUE_FAILED;
	struct record_rcpt_state rs = {
		.recipient = r->index,
		.time_ms = (int64_t)time(NULL) * 1000,
		.reason = {reason, (uint16_t)strnlen(reason, 255)},
	};
	memcpy(rs.id, m->id, RECORD_ID_LEN);
	enum record_type type =
		outcome == QUEUE_DELIVERED ? RECORD_RCPT_DELIVERED : RECORD_RCPT_FAILED;
	size_t size = record_rcpt_state_size(rs.reason.len);
	uint64_t salt;
	struct commit_location loc;
	int error = 0;
	uint8_t *p = store_reserve_state(q, m, size, &salt, &loc, &error);
	if (p != NULL)
		record_encode_rcpt_state(p, size, salt, type, &rs);
	else
		/* At worst it is tried again after a restart: at least once. */
		log_event(LOG_LEVEL_WARN,
			  "event=outcome_unrecorded queue_id=%s rcpt=%u error=\"%s\"", m->id,
			  r->index, strerror(-error));
	if (--m->remaining == 0)
		store_message_done(q, m);
}

static void store_done_handle(struct xmsg *msg)
{
	struct store_done_msg *d = (struct store_done_msg *)msg;
	struct queue *owner = d->rcpt->message->queue;
	/* The message may be freed inside: its last recipient ends it. */
	store_rcpt_done(owner, d->rcpt, d->outcome, d->reason);
	atomic_fetch_sub(&owner->store->xfers_in_flight, 1);
	free(d);
}

size_t queue_take_ready(struct queue *q, const char *domain, size_t len, struct queue_rcpt **out,
			size_t max)
{
	struct queue_store *st = q->store;
	uint32_t shard = index_shard_for(index_domain_hash(domain, len), st->nshards);
	if (st->shards[shard].owner != q->index)
		return 0;
	struct index_destination *d = index_find(&st->shards[shard].index, domain, len);
	size_t n = 0;
	while (d != NULL && n < max) {
		struct index_entry *e = index_first(d, INDEX_READY);
		if (e == NULL)
			break;
		index_move(e, INDEX_INFLIGHT, 0);
		out[n++] = (struct queue_rcpt *)e;
	}
	return n;
}

const char *queue_rcpt_address(const struct queue_rcpt *qr, size_t *len)
{
	const struct store_rcpt *r = (const struct store_rcpt *)qr;
	*len = r->len;
	return r->address;
}

const char *queue_rcpt_message_id(const struct queue_rcpt *qr)
{
	return ((const struct store_rcpt *)qr)->message->id;
}

void queue_rcpt_finish(struct queue *q, struct queue_rcpt *qr, enum queue_outcome outcome,
		       const char *reason)
{
	struct store_rcpt *r = (struct store_rcpt *)qr;
	struct queue_store *st = q->store;
	index_remove(&st->shards[r->shard].index, &r->entry);
	struct queue *owner = r->message->queue;
	if (owner == q || owner->worker == NULL) {
		store_rcpt_done(owner, r, outcome, reason != NULL ? reason : "");
		return;
	}
	struct store_done_msg *d = calloc(1, sizeof(*d));
	if (d == NULL) {
		log_event(LOG_LEVEL_ERROR,
			  "event=outcome_lost queue_id=%s rcpt=%u note=\"out of "
			  "memory; tried again after a restart\"",
			  r->message->id, r->index);
		return;
	}
	d->rcpt = r;
	d->outcome = outcome;
	snprintf(d->reason, sizeof(d->reason), "%s", reason != NULL ? reason : "");
	atomic_fetch_add(&st->xfers_in_flight, 1);
	worker_send(owner->worker, &d->link, store_done_handle);
}

/* ---- compaction ----------------------------------------------------------- */

/*
 * One job at a time per worker (queue.h, "Compaction"): the live messages
 * of the most-dead segment below the threshold, up to 256 KiB of body
 * bytes (what a job costs the loop: its page-cached reads complete inside
 * the submit, its copies are encoded in one completion), are read back with io_uring reads, written
 * again as one run of records each, and switched to their copy once it is durable.
 */
static void store_compact_close_files(struct store_compaction *job)
{
	for (uint32_t i = 0; i < job->nfds; i++)
		close(job->fds[i]);
	job->nfds = 0;
}

static void store_compaction_free(struct store_compaction *job)
{
	if (job == NULL)
		return;
	store_compact_close_files(job);
	for (uint32_t i = 0; i < job->ncopies; i++)
		free(job->copies[i].extents);
	free(job->copies);
	free(job->reads);
	free(job->data);
	free(job);
}

/* A read-only fd of one of q's segments, opened once per job. */
static int store_compact_fd(struct store_compaction *job, uint64_t sequence)
{
	for (uint32_t i = 0; i < job->nfds; i++)
		if (job->fd_sequences[i] == sequence)
			return job->fds[i];
	if (job->nfds == STORE_COMPACT_MAX_FILES)
		return -EMFILE;
	char name[SEGMENT_NAME_MAX];
	segment_name(name, job->q->index, sequence);
	int fd = openat(job->q->store->dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		log_event(LOG_LEVEL_ERROR, "event=compaction_open_failed segment=%s error=\"%s\"",
			  name, strerror(e));
		return -e;
	}
	job->fds[job->nfds] = fd;
	job->fd_sequences[job->nfds++] = sequence;
	return fd;
}

/* The closed segment with the least live weight for its size, below the
 * threshold; NULL when none is worth a copy. */
static struct store_segment *store_compact_victim(struct queue *q)
{
	unsigned __int128 pct = q->store->cfg.compact_threshold;
	struct store_segment *best = NULL;
	for (size_t i = 0; i < q->nsegments; i++) {
		struct store_segment *seg = &q->segments[i];
		if (!seg->closed || seg->live == 0 || seg->no_compact || seg->bytes == 0)
			continue;
		/* A message still being received or committed here weighs
		 * nothing yet, and cannot move: wait until it settles. */
		if (seg->live > seg->placed)
			continue;
		if ((unsigned __int128)seg->live_bytes * 100 >= seg->bytes * pct)
			continue;
		if (best == NULL || (unsigned __int128)seg->live_bytes * best->bytes <
					    (unsigned __int128)best->live_bytes * seg->bytes)
			best = seg;
	}
	return best;
}

/* The stored messages whose data spans the victim, up to a job's worth of
 * body bytes (at least one message, whatever its size). */
static int store_compact_gather(struct store_compaction *job, struct queue *q, uint64_t victim)
{
	uint64_t from = victim > q->max_span ? victim - q->max_span : 1;
	size_t bytes = 0, cap = q->store->cfg.batch_cap < STORE_COMPACT_JOB_BYTES
					? q->store->cfg.batch_cap
					: STORE_COMPACT_JOB_BYTES;
	job->ncopies = 0;
	for (size_t i = store_segment_lower_bound(q, from);
	     i < q->nsegments && q->segments[i].sequence <= victim; i++) {
		for (struct queue_message *m = q->segments[i].messages; m != NULL;
		     m = m->seg_next) {
			if (m->last_sequence < victim || m->state != STORE_STORED || m->compacting)
				continue;
			if (job->ncopies == STORE_COMPACT_MAX_MESSAGES ||
			    (job->ncopies > 0 && bytes + m->body_len > cap))
				return 0;
			if (job->ncopies == job->copies_cap) {
				uint32_t more_cap = job->copies_cap ? job->copies_cap * 2 : 16;
				struct store_copy *more =
					realloc(job->copies, more_cap * sizeof(*more));
				if (more == NULL)
					return -ENOMEM;
				job->copies = more;
				job->copies_cap = more_cap;
			}
			job->copies[job->ncopies++] = (struct store_copy){.m = m, .body_at = bytes};
			bytes += m->body_len;
		}
	}
	return 0;
}

/* Append a copy of c->m: envelope, body, commit, then the outcomes of
 * its ended recipients, as one run of records. */
static int store_compact_encode(struct queue *q, struct store_copy *c, const uint8_t *body)
{
	struct queue_message *m = c->m;
	/* Its strings, as stored: sender, client, helo, params, recipients. */
	const char *client = m->text + m->sender_len + 1;
	const char *helo = client + strlen(client) + 1;
	const char *p = helo + strlen(helo) + 1;
	size_t nparams = 0;
	for (const char *q2 = p; q2 < m->rcpts[0].address; q2 += strlen(q2) + 1)
		nparams++;
	struct record_string rs[nparams + m->nrcpt];
	for (size_t i = 0; i < nparams; i++, p += strlen(p) + 1)
		rs[i] = (struct record_string){p, (uint16_t)strlen(p)};
	for (uint32_t i = 0; i < m->nrcpt; i++)
		rs[nparams + i] = (struct record_string){m->rcpts[i].address, m->rcpts[i].len};
	struct record_envelope env = {
		.arrival_ms = m->arrival_ms,
		.client = {client, (uint16_t)strlen(client)},
		.helo = {helo, (uint16_t)strlen(helo)},
		.sender = {m->text, m->sender_len},
		.nparams = (uint16_t)nparams,
		.nrecipients = (uint16_t)m->nrcpt,
	};
	memcpy(env.id, m->id, RECORD_ID_LEN);
	size_t size = record_size(record_envelope_payload_size(&env, rs));
	uint64_t salt;
	int error = 0;
	uint8_t *rec = store_reserve_for(q, m, size, &salt, &c->envelope, &error);
	if (rec == NULL)
		return error;
	record_encode_envelope(rec, size, salt, &env, rs);
	c->last = c->envelope;

	uint32_t nchunks = (uint32_t)((m->body_len + STORE_BODY_CHUNK - 1) / STORE_BODY_CHUNK);
	c->extents = nchunks ? malloc(nchunks * sizeof(*c->extents)) : NULL;
	if (nchunks > 0 && c->extents == NULL)
		return -ENOMEM;
	for (uint64_t at = 0; at < m->body_len; c->nextents++) {
		size_t n = m->body_len - at < STORE_BODY_CHUNK ? (size_t)(m->body_len - at)
							       : STORE_BODY_CHUNK;
		struct record_body rb = {
			.chunk = c->nextents, .data = body + at, .len = (uint32_t)n};
		memcpy(rb.id, m->id, RECORD_ID_LEN);
		size = record_body_size(n);
		struct commit_location loc;
		if ((rec = store_reserve_for(q, m, size, &salt, &loc, &error)) == NULL)
			return error;
		record_encode_body(rec, size, salt, &rb);
		c->last = loc;
		c->extents[c->nextents] = (struct queue_extent){
			loc.sequence, loc.offset + RECORD_BODY_DATA_OFFSET, (uint32_t)n};
		at += n;
	}

	struct record_commit rc = {.body_len = m->body_len, .nchunks = c->nextents};
	memcpy(rc.id, m->id, RECORD_ID_LEN);
	size = record_commit_size();
	if ((rec = store_reserve_for(q, m, size, &salt, &c->commit, &error)) == NULL)
		return error;
	record_encode_commit(rec, size, salt, &rc);
	c->last = c->commit;

	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct store_rcpt *r = &m->rcpts[i];
		if (!r->finished)
			continue;
		struct record_rcpt_state st = {
			.recipient = r->index,
			.time_ms = (int64_t)time(NULL) * 1000,
			.reason = {"", 0},
		};
		memcpy(st.id, m->id, RECORD_ID_LEN);
		size = record_rcpt_state_size(0);
		struct commit_location loc;
		if ((rec = store_reserve_state(q, m, size, &salt, &loc, &error)) == NULL)
			return error;
		record_encode_rcpt_state(rec, size, salt,
					 r->failed ? RECORD_RCPT_FAILED : RECORD_RCPT_DELIVERED,
					 &st);
		c->last = loc;
	}
	return 0;
}

/* The copy is durable: the message is its copy from now on, and the
 * segments before the copy no longer count it. */
static void store_compact_switch(struct queue *q, struct store_copy *c)
{
	struct queue_message *m = c->m;
	uint64_t old_first = m->first_sequence;
	free(m->extents);
	m->extents = c->extents;
	c->extents = NULL;
	m->nextents = m->extents_cap = c->nextents;
	m->envelope = c->envelope;
	m->commit = c->commit;
	m->first_sequence = c->envelope.sequence;
	store_message_place(q, m);
	store_segments_hold_range(q, m, old_first, m->first_sequence - 1, -1);
}

static void store_compact_committed(struct commit_waiter *w, int status)
{
	struct store_compaction *job =
		(struct store_compaction *)((char *)w - offsetof(struct store_compaction, waiter));
	struct queue *q = job->q;
	uint64_t moved = 0, bytes = 0, failed = 0;
	for (uint32_t i = 0; i < job->ncopies; i++) {
		struct store_copy *c = &job->copies[i];
		struct queue_message *m = c->m;
		m->compacting = false;
		if (m->dropped) {
			/* It ended meanwhile: its holds are gone, its copy is
			 * dead space behind its MESSAGE_DONE. */
			store_message_free(m);
		} else if (c->written && status == 0 && c->error == 0) {
			store_compact_switch(q, c);
			moved++;
			bytes += m->body_len;
		} else {
			/* The old copy stays the message; what the copy reached
			 * beyond it no longer counts it. */
			if (m->last_sequence > c->saved_last) {
				store_segments_hold_range(q, m, c->saved_last + 1, m->last_sequence,
							  -1);
				m->last_sequence = c->saved_last;
			}
			store_message_place(q, m);
			failed++;
		}
		free(c->extents);
		c->extents = NULL;
	}
	char name[SEGMENT_NAME_MAX];
	segment_name(name, q->index, job->victim);
	if (failed > 0) {
		log_event(LOG_LEVEL_WARN,
			  "event=compaction_failed segment=%s messages=%llu error=\"%s\" "
			  "note=\"the messages stay where they are; tried again later\"",
			  name, (unsigned long long)failed, strerror(status < 0 ? -status : EIO));
		q->compact_retry_ms = (q->worker != NULL ? q->worker->now_ms : worker_clock_ms()) +
				      STORE_COMPACT_RETRY_MS;
	}
	if (moved > 0)
		log_event(LOG_LEVEL_INFO,
			  "event=segment_compacted segment=%s messages=%llu bytes=%llu", name,
			  (unsigned long long)moved, (unsigned long long)bytes);
	q->compact_stats.jobs++;
	q->compact_stats.messages += moved;
	q->compact_stats.bytes += bytes;
	q->compact_stats.failed += failed;
	job->ncopies = 0;
	job->busy = false;
	q->compact_dirty = true;
}

/*
 * A batch of `sequence` failed: a copy with a record there at or past
 * good_end lost it, even when its last batch (the one the job waits for,
 * in the next segment) syncs fine. Its records run contiguously from its
 * envelope to c->last; one that went on past `sequence` had its tail in
 * it, which may or may not have been durable: failed too (retried later).
 */
static void store_compact_on_poison(struct queue *q, uint64_t sequence, uint64_t good_end)
{
	struct store_compaction *job = q->compaction;
	if (job == NULL || !job->busy)
		return;
	for (uint32_t i = 0; i < job->ncopies; i++) {
		struct store_copy *c = &job->copies[i];
		if (c->last.sequence == 0 || sequence < c->envelope.sequence ||
		    sequence > c->last.sequence)
			continue;
		if (c->last.sequence > sequence || c->last.offset >= good_end)
			c->error = -EIO;
	}
}

/* Every read is back: write the copies, then wait for their sync. */
static void store_compact_write(struct store_compaction *job)
{
	struct queue *q = job->q;
	store_compact_close_files(job);
	bool stop = q->writer == NULL;
	uint32_t written = 0;
	int first_error = 0;
	for (uint32_t i = 0; i < job->ncopies; i++) {
		struct store_copy *c = &job->copies[i];
		if (c->m->dropped || c->error != 0)
			continue;
		if (stop) {
			c->error = -ECANCELED;
			continue;
		}
		int r = store_compact_encode(q, c, job->data + c->body_at);
		if (r != 0) {
			/* Records reserved so far make no message without their
			 * COMMIT; the rest waits for the next job. */
			c->error = r;
			first_error = first_error ? first_error : r;
			stop = true;
			continue;
		}
		c->written = true;
		written++;
	}
	job->waiter.done = store_compact_committed;
	if (written > 0)
		commit_wait(q->writer, &job->waiter);
	else
		store_compact_committed(&job->waiter, first_error ? first_error : -ECANCELED);
}

static void store_compact_read_done(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct store_read *rd = (struct store_read *)((char *)op - offsetof(struct store_read, op));
	struct store_compaction *job = rd->job;
	if (cqe->res != (int)rd->len && job->copies[rd->copy].error == 0)
		job->copies[rd->copy].error = cqe->res < 0 ? cqe->res : -EIO;
	if (--job->reads_left == 0)
		store_compact_write(job);
}

/* Queue the reads of every copy's body; returns how many. */
static uint32_t store_compact_read(struct store_compaction *job, size_t total)
{
	uint32_t nreads = 0;
	for (uint32_t i = 0; i < job->ncopies; i++)
		nreads += job->copies[i].m->nextents;
	if (nreads > job->reads_cap) {
		struct store_read *more = realloc(job->reads, nreads * sizeof(*more));
		if (more == NULL)
			return UINT32_MAX;
		job->reads = more;
		job->reads_cap = nreads;
	}
	if (total > job->data_cap) {
		uint8_t *more = realloc(job->data, total);
		if (more == NULL)
			return UINT32_MAX;
		job->data = more;
		job->data_cap = total;
	}
	uint32_t n = 0;
	for (uint32_t i = 0; i < job->ncopies; i++) {
		struct store_copy *c = &job->copies[i];
		size_t at = c->body_at;
		for (uint32_t k = 0; k < c->m->nextents; k++) {
			const struct queue_extent *e = &c->m->extents[k];
			int fd = store_compact_fd(job, e->sequence);
			if (fd < 0) {
				c->error = fd;
				break;
			}
			struct store_read *rd = &job->reads[n++];
			*rd = (struct store_read){.op.complete = store_compact_read_done,
						  .job = job,
						  .copy = i,
						  .len = e->len};
			struct io_uring_sqe *sqe = worker_sqe(job->q->worker);
			io_uring_prep_read(sqe, fd, job->data + at, e->len, e->offset);
			worker_sqe_set_op(sqe, &rd->op);
			at += e->len;
		}
	}
	return n;
}

/* Loop turn: start a job if one is due and none runs. */
static void store_compact_maybe_start(struct queue *q)
{
	struct queue_store *st = q->store;
	if (st->cfg.compact_threshold == 0 || !q->compact_dirty || q->writer == NULL ||
	    q->worker == NULL || q->worker->shutting_down)
		return;
	struct store_compaction *job = q->compaction;
	if (job != NULL && job->busy)
		return;
	if (q->worker->now_ms < q->compact_retry_ms || commit_over_cap(q->writer))
		return; /* later: the writer has work enough */
	struct store_segment *victim = store_compact_victim(q);
	if (victim == NULL) {
		q->compact_dirty = false;
		return;
	}
	if (job == NULL) {
		job = q->compaction = calloc(1, sizeof(*job));
		if (job == NULL)
			return;
		job->q = q;
	}
	job->victim = victim->sequence;
	if (store_compact_gather(job, q, job->victim) != 0 || job->ncopies == 0) {
		/* Nothing there can move now (being received, or being
		 * copied): look again once its count changes. */
		victim->no_compact = job->ncopies == 0;
		job->ncopies = 0;
		return;
	}
	size_t total = 0;
	for (uint32_t i = 0; i < job->ncopies; i++) {
		struct queue_message *m = job->copies[i].m;
		m->compacting = true;
		/* Where its range ends now: whatever happens to the copy, the
		 * job's end gives back exactly what the copy added. */
		job->copies[i].saved_last = m->last_sequence;
		/* Out of its segments' lists and weights until it settles:
		 * the copy's records widen its range meanwhile. */
		store_message_unplace(q, m);
		total += m->body_len;
	}
	job->busy = true;
	job->reads_left = store_compact_read(job, total);
	if (job->reads_left == UINT32_MAX) {
		job->reads_left = 0;
		for (uint32_t i = 0; i < job->ncopies; i++)
			job->copies[i].error = -ENOMEM;
	}
	if (job->reads_left == 0)
		store_compact_write(job);
}

void queue_compaction_stats(const struct queue *q, struct queue_compaction_stats *out)
{
	*out = q->compact_stats;
	out->running = q->compaction != NULL && q->compaction->busy;
}

/* ---- recovery into the store ------------------------------------------- */

static int store_by_id_add(struct queue_store *st, struct queue_message *m);

static struct queue_message *store_by_id_find(const struct queue_store *st, const char *id);

static int queue_extents_from(struct queue_message *m, const struct recover_message *rm)
{
	struct queue_extent *extents = NULL;
	if (rm->nextents > 0) {
		extents = malloc(rm->nextents * sizeof(*extents));
		if (extents == NULL)
			return -ENOMEM;
		memcpy(extents, rm->extents, rm->nextents * sizeof(*extents));
	}
	free(m->extents);
	m->extents = extents;
	m->nextents = m->extents_cap = rm->nextents;
	m->body_len = rm->body_len;
	m->writer = rm->worker;
	m->first_sequence = rm->first_sequence;
	m->last_sequence = rm->last_sequence;
	m->envelope = (struct commit_location){rm->envelope_sequence, rm->envelope_offset};
	return 0;
}

/*
 * A second copy of a message already read: compaction copied it forward
 * and the process stopped before the old segment was deleted. Both hold
 * the same envelope and body; outcomes read so far stay (they only ever
 * end recipients, so the union is right whichever copy they followed).
 * The copy kept is the later one of the same writer, or the one in a
 * writer that still runs.
 */
static int store_recover_duplicate(struct queue_store *st, struct queue_message *m,
				   const struct recover_message *rm)
{
	/* A copy in a writer that still runs beats one in a writer that does
	 * not; between two of the same writer, the later one. */
	bool take = rm->worker == m->writer ||
		    (m->writer >= st->cfg.workers && rm->worker < st->cfg.workers);
	if (!take)
		return 0;
	m->queue = &st->queues[rm->worker % st->cfg.workers];
	uint64_t origin = m->writer == rm->worker ? m->origin_sequence : rm->first_sequence;
	int r = queue_extents_from(m, rm);
	if (r == 0)
		m->origin_sequence = origin < rm->first_sequence ? origin : rm->first_sequence;
	return r;
}

static int store_recover_message(void *arg, const struct recover_message *rm)
{
	struct queue_store *st = arg;
	const struct record_envelope *env = rm->envelope;
	struct queue_message *dup = store_by_id_find(st, env->id);
	if (dup != NULL)
		return store_recover_duplicate(st, dup, rm);
	size_t nstrings = 3 + (size_t)env->nparams + env->nrecipients;
	const char *strings[nstrings];
	size_t lens[nstrings];
	strings[0] = env->sender.data;
	lens[0] = env->sender.len;
	strings[1] = env->client.data;
	lens[1] = env->client.len;
	strings[2] = env->helo.data;
	lens[2] = env->helo.len;
	for (size_t i = 3; i < nstrings; i++) {
		strings[i] = rm->strings[i - 3].data;
		lens[i] = rm->strings[i - 3].len;
	}
	struct queue_message *m = store_message_new(env->nrecipients, strings, lens, nstrings);
	if (m == NULL)
		return -ENOMEM;
	struct queue *q = &st->queues[rm->worker % st->cfg.workers];
	memcpy(m->id, env->id, RECORD_ID_LEN);
	m->id[QUEUE_ID_LEN] = '\0';
	m->queue = q;
	m->writer = rm->worker;
	m->state = STORE_STORED;
	m->counted = true;
	m->sender_len = env->sender.len;
	m->arrival_ms = env->arrival_ms;
	if (queue_extents_from(m, rm) != 0) {
		store_message_free(m);
		return -ENOMEM;
	}
	m->origin_sequence = m->first_sequence;
	store_stored_link(q, m);
	return store_by_id_add(st, m);
}

static void store_recover_segment(void *arg, const struct recover_segment *seg)
{
	struct queue_store *st = arg;
	struct queue *q = &st->queues[seg->worker % st->cfg.workers];
	/* Sequence numbers continue past anything on disk, in any verdict. */
	if (seg->worker < st->cfg.workers && seg->sequence >= q->next_sequence)
		q->next_sequence = seg->sequence + 1;
	/* What its records wait for (store_recover_depend), if anything. */
	struct store_cross_dep *cross = NULL;
	uint32_t ncross = 0;
	uint64_t after_lo = 0, after_hi = 0;
	if (st->scan_depend.worker == seg->worker && st->scan_depend.sequence == seg->sequence) {
		cross = st->scan_depend.cross;
		ncross = st->scan_depend.ncross;
		after_lo = st->scan_depend.lo;
		after_hi = st->scan_depend.hi;
		st->scan_depend.cross = NULL;
		st->scan_depend.ncross = 0;
		st->scan_depend.sequence = 0;
	}
	if (seg->verdict == RECOVER_CORRUPT || seg->verdict == RECOVER_UNREADABLE) {
		free(cross);
		return; /* moved aside or untouched: not ours to count or delete */
	}
	if (seg->worker != q->index) {
		/* Written by a worker number that no longer runs: q owns its
		 * messages, and the file until they are all finished. */
		struct store_orphan_writer *ow = store_orphan_writer(q, seg->worker, true);
		if (ow == NULL) {
			/* Unaccounted, its writer's floor would be wrong: an
			 * outcome waiting on it could go first. */
			st->recover_incomplete = true;
			free(cross);
			return;
		}
		if (ow->nsegments == ow->cap) {
			size_t cap = ow->cap ? ow->cap * 2 : 8;
			struct store_orphan_segment *more =
				realloc(ow->segments, cap * sizeof(*more));
			if (more == NULL) {
				st->recover_incomplete = true;
				free(cross);
				return;
			}
			ow->segments = more;
			ow->cap = cap;
		}
		/* Its own outcomes go with it; those of other writers' messages
		 * (from a run in which it owned them) make it wait. */
		ow->segments[ow->nsegments++] = (struct store_orphan_segment){
			.sequence = seg->sequence,
			.bytes = seg->file_size,
			.cross = cross,
			.ncross = ncross,
		};
		store_floor_orphan(q, ow);
		atomic_fetch_add(&st->bytes, seg->file_size);
		st->summary.segments++;
		st->summary.torn += seg->verdict == RECOVER_TORN;
		return;
	}
	struct store_segment *s = store_segment_add(q, seg->sequence, seg->file_size, false);
	if (s == NULL) {
		st->recover_incomplete = true;
		free(cross);
		return;
	}
	s->closed = true; /* never appended to again */
	s->cross = cross;
	s->ncross = ncross;
	store_segment_depend(q, seg->sequence, after_lo, after_hi);
	st->summary.segments++;
	st->summary.torn += seg->verdict == RECOVER_TORN;
}

static size_t store_by_id_slot(const struct queue_store *st, const char *id)
{
	return (size_t)XXH3_64bits(id, RECORD_ID_LEN) & (st->by_id_cap - 1);
}

static int store_by_id_add(struct queue_store *st, struct queue_message *m)
{
	if ((st->by_id_count + 1) * 2 > st->by_id_cap) {
		size_t cap = st->by_id_cap ? st->by_id_cap * 2 : 4096;
		struct queue_message **slots = calloc(cap, sizeof(*slots));
		if (slots == NULL)
			return -ENOMEM;
		struct queue_message **old = st->by_id;
		size_t old_cap = st->by_id_cap;
		st->by_id = slots;
		st->by_id_cap = cap;
		for (size_t i = 0; i < old_cap; i++) {
			if (old[i] == NULL)
				continue;
			size_t k = store_by_id_slot(st, old[i]->id);
			while (slots[k] != NULL)
				k = (k + 1) & (cap - 1);
			slots[k] = old[i];
		}
		free(old);
	}
	size_t k = store_by_id_slot(st, m->id);
	while (st->by_id[k] != NULL)
		k = (k + 1) & (st->by_id_cap - 1);
	st->by_id[k] = m;
	st->by_id_count++;
	return 0;
}

static struct queue_message *store_by_id_find(const struct queue_store *st, const char *id)
{
	if (st->by_id_cap == 0)
		return NULL;
	for (size_t k = store_by_id_slot(st, id);; k = (k + 1) & (st->by_id_cap - 1)) {
		struct queue_message *m = st->by_id[k];
		if (m == NULL || memcmp(m->id, id, RECORD_ID_LEN) == 0)
			return m;
	}
}

/*
 * A state record read in (worker, sequence): that segment must outlive
 * m's data, as at run time (store_reserve_state). The segment is added
 * once all its records are read, so the range waits here until then.
 */
static int store_recover_depend(struct queue_store *st, const struct queue_message *m,
				uint32_t worker, uint64_t sequence)
{
	if (st->scan_depend.worker != worker || st->scan_depend.sequence != sequence) {
		st->scan_depend.worker = worker;
		st->scan_depend.sequence = sequence;
		st->scan_depend.lo = st->scan_depend.hi = 0;
		free(st->scan_depend.cross);
		st->scan_depend.cross = NULL;
		st->scan_depend.ncross = 0;
	}
	if (worker != m->writer) {
		/* The message's data is in another writer's files (see
		 * orphans): this segment waits for those. Out of memory, it
		 * would wait for nothing: refuse to start instead. */
		return store_cross_add(&st->scan_depend.cross, &st->scan_depend.ncross, m->writer,
				       m->last_sequence);
	}
	if (st->scan_depend.lo == 0 || m->origin_sequence < st->scan_depend.lo)
		st->scan_depend.lo = m->origin_sequence;
	if (m->last_sequence > st->scan_depend.hi)
		st->scan_depend.hi = m->last_sequence;
	return 0;
}

static int store_recover_state(void *arg, enum record_type type, const struct record_rcpt_state *rs,
			       uint32_t worker, uint64_t sequence)
{
	struct queue_store *st = arg;
	struct queue_message *m = store_by_id_find(st, rs->id);
	if (m == NULL || rs->recipient >= m->nrcpt)
		return 0; /* its message is gone (done, or never committed) */
	int r0 = store_recover_depend(st, m, worker, sequence);
	if (r0 != 0)
		return r0;
	struct store_rcpt *r = &m->rcpts[rs->recipient];
	if ((type == RECORD_RCPT_DELIVERED || type == RECORD_RCPT_FAILED) && !r->finished) {
		r->finished = true;
		r->failed = type == RECORD_RCPT_FAILED;
		m->remaining--;
	}
	return 0;
}

/* Recovery found a message finished (MESSAGE_DONE): it is not served. */
static int store_recover_done(void *arg, const struct record_id *id, uint32_t worker,
			      uint64_t sequence)
{
	struct queue_store *st = arg;
	struct queue_message *m = store_by_id_find(st, id->id);
	if (m == NULL)
		return 0;
	m->done = true;
	return store_recover_depend(st, m, worker, sequence);
}

int queue_store_open(struct queue_store **out, const struct queue_store_config *cfg, char *err,
		     size_t err_size)
{
	uint64_t started = worker_clock_ms();
	struct queue_store *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->cfg = *cfg;
	if (st->cfg.workers == 0)
		st->cfg.workers = 1;
	uint32_t shards = cfg->shards;
	if (shards == 0)
		for (shards = 1; shards < st->cfg.workers * 8; shards <<= 1)
			;
	st->nshards = shards;
	st->spool_dir = strdup(cfg->spool_dir);
	st->dir_fd = st->quarantine_fd = st->lock_fd = -1;
	st->shards = calloc(shards, sizeof(*st->shards));
	st->queues = calloc(st->cfg.workers, sizeof(*st->queues));
	int r = -ENOMEM;
	if (st->spool_dir == NULL || st->shards == NULL || st->queues == NULL)
		goto fail;
	for (uint32_t i = 0; i < STORE_MAX_WRITERS; i++)
		atomic_init(&st->writer_floor[i], UINT64_MAX);
	for (uint32_t i = 0; i < shards; i++) {
		st->shards[i].owner = i % st->cfg.workers;
		if ((r = index_shard_init(&st->shards[i].index)) != 0)
			goto fail;
	}
	for (uint32_t i = 0; i < st->cfg.workers; i++) {
		struct queue *q = &st->queues[i];
		q->store = st;
		q->index = i;
		q->next_sequence = 1;
		q->outbox = calloc(st->cfg.workers, sizeof(*q->outbox));
		if (q->outbox == NULL)
			goto fail;
	}
	/* mkdir -p the spool itself, then its sub-directories. */
	char path[4200];
	snprintf(path, sizeof(path), "%s", cfg->spool_dir);
	for (char *p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(path, 0750);
		*p = '/';
	}
	if (mkdir(path, 0750) != 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, err_size, "cannot create the spool %s: %s", cfg->spool_dir,
			 strerror(errno));
		goto fail;
	}
	/* Two writers on one spool would each trust their own view of it. */
	snprintf(path, sizeof(path), "%s/lock", cfg->spool_dir);
	st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (st->lock_fd < 0) {
		r = -errno;
		snprintf(err, err_size, "cannot open the spool's lock file %s: %s", path,
			 strerror(errno));
		goto fail;
	}
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		r = -errno;
		if (errno == EWOULDBLOCK)
			snprintf(err, err_size,
				 "%s is in use by another ferryd (it holds the lock on %s)",
				 cfg->spool_dir, path);
		else
			snprintf(err, err_size, "cannot lock %s: %s", path, strerror(errno));
		goto fail;
	}
	st->dir_fd = segment_dir_open(cfg->spool_dir);
	if (st->dir_fd < 0) {
		r = st->dir_fd;
		snprintf(err, err_size, "cannot open %s/segments: %s", cfg->spool_dir,
			 strerror(-r));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/quarantine", cfg->spool_dir);
	st->quarantine_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->quarantine_fd < 0) {
		r = -errno;
		snprintf(err, err_size, "cannot open %s: %s", path, strerror(errno));
		goto fail;
	}

	struct recover_hooks hooks = {
		.arg = st,
		.message = store_recover_message,
		.message_done = store_recover_done,
		.rcpt_state = store_recover_state,
		.segment = store_recover_segment,
	};
	struct recover_stats stats;
	r = recover_spool(st->dir_fd, st->quarantine_fd, false, &hooks, &stats);
	if (r == 0 && st->recover_incomplete)
		r = -ENOMEM;
	if (r != 0) {
		snprintf(err, err_size, "recovering the spool %s: %s", cfg->spool_dir,
			 strerror(-r));
		goto fail;
	}
	/* Count what lives where, index it, and drop segments nothing uses. */
	for (uint32_t w = 0; w < st->cfg.workers; w++) {
		struct queue *q = &st->queues[w];
		for (struct queue_message *m = q->stored, *next; m != NULL; m = next) {
			next = m->all_next;
			if (m->done || m->remaining == 0) {
				/* Finished before the restart: dead space. */
				store_stored_unlink(q, m);
				store_message_free(m);
				continue;
			}
			store_segments_hold(q, m, +1);
			store_message_place(q, m);
			if (m->writer != q->index) {
				struct store_orphan_writer *ow =
					store_orphan_writer(q, m->writer, true);
				if (ow != NULL)
					ow->live++;
			}
			m->counted = true;
			store_index_message(q, m);
			st->summary.recipients += m->remaining;
			st->summary.messages++;
		}
		q->compact_dirty = true;
	}
	/* Drop what nothing needs. Twice: a segment of one queue may wait for
	 * files another queue deletes in the first pass. */
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t w = 0; w < st->cfg.workers; w++) {
			struct queue *q = &st->queues[w];
			for (size_t i = 0; i < q->norphans; i++)
				store_orphan_writer_collect(q, &q->orphans[i]);
			store_segments_collect(q, 0);
		}
	}
	free(st->by_id); /* state records only come from disk at start */
	st->by_id = NULL;
	st->by_id_cap = st->by_id_count = 0;
	atomic_store(&st->messages, st->summary.messages);
	st->summary.corrupt = stats.corrupt;
	st->summary.bytes = stats.bytes;
	st->summary.elapsed_ms = worker_clock_ms() - started;
	*out = st;
	return 0;
fail:
	queue_store_close(st);
	return r;
}

void queue_store_summary(const struct queue_store *store, struct queue_store_summary *out)
{
	*out = store->summary;
}

void queue_store_close(struct queue_store *st)
{
	if (st == NULL)
		return;
	for (uint32_t i = 0; st->shards != NULL && i < st->nshards; i++)
		index_shard_free(&st->shards[i].index);
	for (uint32_t w = 0; st->queues != NULL && w < st->cfg.workers; w++) {
		struct queue *q = &st->queues[w];
		while (q->stored != NULL) {
			struct queue_message *m = q->stored;
			q->stored = m->all_next;
			store_message_free(m);
		}
		while (q->unstored != NULL) {
			struct queue_message *m = q->unstored;
			q->unstored = m->next;
			store_message_free(m);
		}
		for (uint32_t k = 0; q->outbox != NULL && k < st->cfg.workers; k++)
			free(q->outbox[k]);
		free(q->outbox);
		for (size_t i = 0; i < q->nsegments; i++)
			free(q->segments[i].cross);
		free(q->segments);
		store_compaction_free(q->compaction);
		for (size_t i = 0; i < q->norphans; i++) {
			for (size_t k = 0; k < q->orphans[i].nsegments; k++)
				free(q->orphans[i].segments[k].cross);
			free(q->orphans[i].segments);
		}
		free(q->orphans);
	}
	if (st->dir_fd >= 0)
		close(st->dir_fd);
	if (st->quarantine_fd >= 0)
		close(st->quarantine_fd);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	free(st->by_id);
	free(st->scan_depend.cross);
	free(st->shards);
	free(st->queues);
	free(st->spool_dir);
	free(st);
}

/* ---- operator views ---------------------------------------------------- */

uint32_t queue_store_workers(const struct queue_store *store)
{
	return store->cfg.workers;
}

struct queue *queue_store_queue(struct queue_store *store, uint32_t index)
{
	return index < store->cfg.workers ? &store->queues[index] : NULL;
}

struct worker *queue_worker(const struct queue *q)
{
	return q->worker;
}

const char *queue_store_spool_dir(const struct queue_store *store)
{
	return store->spool_dir;
}

static const char *const store_state_names[INDEX_NSTATES] = {"ready", "deferred", "held",
							     "inflight"};

struct store_report {
	struct buf *out;
	struct queue *q;
};

static int64_t store_oldest(const struct index_destination *d)
{
	int64_t oldest = INT64_MAX;
	for (int st = 0; st < INDEX_NSTATES; st++) {
		if (st == INDEX_DEFERRED) {
			for (uint32_t i = 0; i < d->count[st]; i++) {
				const struct store_rcpt *r = (const struct store_rcpt *)d->heap[i];
				if (r->message->arrival_ms < oldest)
					oldest = r->message->arrival_ms;
			}
			continue;
		}
		for (struct index_entry *e = index_first(d, (enum index_state)st); e != NULL;
		     e = index_next(e)) {
			const struct store_rcpt *r = (const struct store_rcpt *)e;
			if (r->message->arrival_ms < oldest)
				oldest = r->message->arrival_ms;
		}
	}
	return oldest == INT64_MAX ? 0 : oldest;
}

static bool store_report_destination(struct index_destination *d, void *arg)
{
	struct store_report *rep = arg;
	uint32_t total = 0;
	for (int st = 0; st < INDEX_NSTATES; st++)
		total += d->count[st];
	/* Recipients, not messages, are what a destination queues; a message
	 * with two recipients in one domain counts twice here. */
	buf_printf(rep->out, "%s %u %u %u %u %u %lld\n", d->domain, total, d->count[INDEX_READY],
		   d->count[INDEX_DEFERRED], d->count[INDEX_HELD], d->count[INDEX_INFLIGHT],
		   (long long)store_oldest(d));
	return true;
}

void queue_report_destinations(struct queue *q, struct buf *out)
{
	struct queue_store *st = q->store;
	struct store_report rep = {out, q};
	for (uint32_t i = 0; i < st->nshards; i++)
		if (st->shards[i].owner == q->index)
			index_foreach(&st->shards[i].index, store_report_destination, &rep);
}

static void store_report_rcpt(struct buf *out, const struct store_rcpt *r)
{
	const struct queue_message *m = r->message;
	char sender[600], rcpt[600];
	if (m->sender_len == 0)
		snprintf(sender, sizeof(sender), "<>");
	else
		log_quote(sender, sizeof(sender), m->text, m->sender_len);
	log_quote(rcpt, sizeof(rcpt), r->address, r->len);
	buf_printf(out, "%s %s %u %lld %llu %s %s\n", m->id, store_state_names[r->entry.state], 0u,
		   (long long)m->arrival_ms, (unsigned long long)m->body_len, sender, rcpt);
}

void queue_report_domain(struct queue *q, const char *domain, size_t len, struct buf *out)
{
	struct queue_store *st = q->store;
	uint32_t shard = index_shard_for(index_domain_hash(domain, len), st->nshards);
	if (st->shards[shard].owner != q->index)
		return;
	struct index_destination *d = index_find(&st->shards[shard].index, domain, len);
	if (d == NULL)
		return;
	for (int s = 0; s < INDEX_NSTATES; s++) {
		if (s == INDEX_DEFERRED) {
			for (uint32_t i = 0; i < d->count[s]; i++)
				store_report_rcpt(out, (const struct store_rcpt *)d->heap[i]);
			continue;
		}
		for (struct index_entry *e = index_first(d, (enum index_state)s); e != NULL;
		     e = index_next(e))
			store_report_rcpt(out, (const struct store_rcpt *)e);
	}
}

int queue_report_message(struct queue *q, const char *id, struct buf *out)
{
	const struct queue_message *m = q->stored;
	while (m != NULL && strncmp(m->id, id, QUEUE_ID_LEN + 1) != 0)
		m = m->all_next;
	if (m == NULL)
		return 0;
	char quoted[600];
	const char *p = m->text;
	buf_printf(out, "id %s\narrival %lld\nsize %llu\n", m->id, (long long)m->arrival_ms,
		   (unsigned long long)m->body_len);
	const char *sender = p;
	p += strlen(p) + 1;
	buf_printf(out, "client %s\n", log_quote(quoted, sizeof(quoted), p, strlen(p)));
	p += strlen(p) + 1;
	buf_printf(out, "helo %s\n", log_quote(quoted, sizeof(quoted), p, strlen(p)));
	p += strlen(p) + 1;
	buf_printf(out, "sender %s\n",
		   m->sender_len ? log_quote(quoted, sizeof(quoted), sender, m->sender_len) : "<>");
	const char *first_rcpt = m->rcpts[0].address;
	while (p < first_rcpt) {
		buf_printf(out, "param %s\n", log_quote(quoted, sizeof(quoted), p, strlen(p)));
		p += strlen(p) + 1;
	}
	for (uint32_t i = 0; i < m->nrcpt; i++)
		buf_printf(out, "rcpt %s\n",
			   log_quote(quoted, sizeof(quoted), m->rcpts[i].address, m->rcpts[i].len));
	for (uint32_t i = 0; i < m->nextents; i++) {
		char name[SEGMENT_NAME_MAX];
		segment_name(name, m->writer, m->extents[i].sequence);
		buf_printf(out, "body %s %llu %u\n", name, (unsigned long long)m->extents[i].offset,
			   m->extents[i].len);
	}
	return 1;
}
