/*
 * commit — a worker's spool writer: group commit into its segments.
 *
 * Records are encoded straight into the gathering batch. Once per loop turn
 * (commit_flush, from the worker's before_wait) the oldest batch not yet
 * written goes out as ONE write linked (IOSQE_IO_LINK) to ONE fdatasync of
 * the segment — plus, for the first batch of a new segment, an fsync of the
 * segments directory — and the next batch gathers while it is in flight.
 * When the sync completes, every waiter registered in that batch learns its
 * records are durable; only then may a 250 be sent.
 *
 * A batch is capped in bytes: beyond the configured batch_cap a new batch
 * starts, and commit_over_cap() tells producers to pause until the backlog
 * drains.
 *
 * A failed write or sync poisons the segment (fsync errors are never
 * retried and trusted): the file is cut back to where the failed batch
 * began, every waiter of that batch and of the later batches for the same
 * segment is told the error, the on_poison hook names the segment and that
 * offset so the store can fail the messages that had records past it (even
 * ones whose COMMIT went on to the next segment), and the next record goes
 * to a new segment.
 *
 * Segments are never reopened for appending: a writer always starts a new
 * segment (sequence numbers continue from recovery).
 */
#ifndef FERRY_QUEUE_COMMIT_H
#define FERRY_QUEUE_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/list.h"
#include "queue/segment.h"

struct worker;
struct commit_writer;

struct commit_location {
	uint64_t sequence; /* segment */
	uint64_t offset;   /* of the record in the segment file */
};

struct commit_waiter {
	struct list_node link; /* in its batch's waiters */
	/* status 0: everything reserved before commit_wait() is durable;
	 * negative errno: it is not, and never will be. */
	void (*done)(struct commit_waiter *w, int status);
};

struct commit_hooks {
	void *arg;
	/* A segment failed: records reserved in it at or past good_end were
	 * not durable and are lost (the file is cut back to good_end: `cut`,
	 * unless even that failed); those before it were durable already and
	 * stay. */
	void (*on_poison)(void *arg, uint64_t sequence, uint64_t good_end, bool cut);
	/* The backlog fell below the cap again (after commit_over_cap()). */
	void (*on_drain)(void *arg);
	/* A segment was closed for good (rolled or poisoned) and all its
	 * batches finished: the store may delete it once nothing lives in it. */
	void (*on_segment_closed)(void *arg, uint64_t sequence);
	/* May a new segment of `size` bytes be created? 0 (and the bytes are
	 * reserved: on_segment_created or grow_failed follows) or -ENOSPC. */
	int (*may_grow)(void *arg, uint64_t size);
	/* The segment reserved by may_grow could not be created after all. */
	void (*grow_failed)(void *arg, uint64_t size);
	/* A new segment was created (bytes preallocated). */
	void (*on_segment_created)(void *arg, uint64_t sequence, uint64_t size);
};

struct commit_config {
	int dir_fd; /* <spool>/segments */
	uint32_t worker_index;
	uint64_t first_sequence; /* first segment this writer creates */
	uint64_t segment_size;
	size_t batch_cap;
	struct segment_owner owner; /* of the segments it creates */
};

int commit_writer_open(struct commit_writer **out, struct worker *w,
		       const struct commit_config *cfg, const struct commit_hooks *hooks);

/* Close the current segment; batches in flight must have finished
 * (commit_idle()). */
void commit_writer_close(struct commit_writer *cw);

/*
 * Room for one record of `size` bytes (record_size() of its payload) in the
 * gathering batch. Encode the record into the returned pointer, with the
 * returned salt, before the next reserve (the buffer may move). Rolls to a
 * new segment when the current one is full. NULL with *error set when no
 * segment can be had (-ENOSPC, -EIO ...).
 */
uint8_t *commit_reserve(struct commit_writer *cw, size_t size, uint64_t *salt,
			struct commit_location *loc, int *error);

/* Tell w when everything reserved so far is durable (or lost). With
 * nothing reserved and not yet durable, w is told at once, from inside
 * this call. */
void commit_wait(struct commit_writer *cw, struct commit_waiter *w);

/* Loop turn: submit the oldest unwritten batch if none is in flight. Its
 * write and syncs go to the kernel in one submission (a link does not
 * span two): if the ring has no room for all of them even after
 * submitting what is queued, the batch waits for the next turn. */
void commit_flush(struct commit_writer *cw);

/* More than the cap is waiting to be written: producers should pause. */
bool commit_over_cap(struct commit_writer *cw);

/* No batch gathering, waiting or in flight. */
bool commit_idle(const struct commit_writer *cw);

/* Bytes still free for records in the current segment (0 if none). */
uint64_t commit_room(const struct commit_writer *cw);

struct metrics;
/* Its group commits for the metrics: how many, failed syncs, and
 * histograms of their size and of their latency (submission to the last
 * sync's completion). On the writer's worker. */
void commit_metrics(const struct commit_writer *cw, struct metrics *out);

#endif
