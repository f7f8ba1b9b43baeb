/*
 * body — reading a stored message's body, on whichever worker delivers it,
 * through that worker's ring: never a blocking read on the loop.
 *
 * Delivery runs on the worker that owns the recipient's shard; the
 * message may have been written (and be owned) by another. Compaction,
 * on the owner, may move a message's body to a new segment and delete
 * the old one (queue.h, "Compaction"). A reader therefore pins the
 * message while it reads: a pinned message is never switched to its copy
 * (the copy waits for a later job), so the extents it read at the start
 * stay the message's, and the segments holding them stay on disk, until
 * the reader closes. Opening the pin fails with -EAGAIN only in the
 * moment of a switch: try again on a later turn.
 *
 * Segment files are opened once per worker and kept in a small cache
 * (QUEUE_BODY_FILES per worker, closed when unused for a few seconds, so
 * a deleted segment's space comes back); reads go through the ring, one
 * extent (at most 64 KiB) at a time, so a slow next hop holds one
 * extent's buffer, not the message.
 */
#ifndef FERRY_QUEUE_BODY_H
#define FERRY_QUEUE_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/worker.h"
#include "queue/queue.h"
#include "queue/sched.h"

/* Segment files each worker keeps open for readers. */
#define QUEUE_BODY_FILES 16

struct queue_body_reader;

/* One run of the body (valid during the call only), or status < 0 (-EIO,
 * the file could not be read; the caller defers its recipients). */
typedef void queue_body_fn(struct queue_body_reader *rd, int status, const char *data, size_t len);

struct queue_body_reader {
	struct worker_op op;
	struct queue *q; /* the reading worker's queue */
	struct queue_message *m;
	queue_body_fn *done;
	void *user;
	struct queue_extent *extents; /* copied when pinned */
	uint32_t nextents, next;
	uint32_t extents_cap;
	int file; /* cache slot of the file being read; -1: none */
	char *buf;
	size_t buf_cap;
	bool pinned;
	bool inflight;
};

/*
 * Pin the message of recipient r and take its extents, for reading on
 * q's worker. 0, -EAGAIN (compaction is switching it right now: try again
 * on a later turn), or -ENOMEM. rd is zeroed before its first open; then
 * it may be opened, read and closed again and again (its storage kept:
 * no allocation per message), and is released once at the end.
 */
int queue_body_open(struct queue_body_reader *rd, struct queue *q, const struct queue_rcpt *r,
		    queue_body_fn *done, void *user);

/* Read the next run; rd->done() comes from the loop. 0; 1 when the body
 * was read whole already (no call then); or -errno when the read could
 * not be started (-EMFILE: every cached file is busy, try on a later
 * turn; no call either). */
int queue_body_read(struct queue_body_reader *rd);

/* A read is in flight: the reader must not be closed or freed until its
 * done() has run. */
static inline bool queue_body_busy(const struct queue_body_reader *rd)
{
	return rd->inflight;
}

/* Unpin (never while busy); the storage stays for the next open. Safe on
 * a zeroed reader. */
void queue_body_close(struct queue_body_reader *rd);
/* Close, and free the storage. */
void queue_body_release(struct queue_body_reader *rd);

/* Loop turn: close cached files unused for a while (the store's service
 * calls it). */
void queue_body_files_expire(struct queue *q);
/* The worker stops: close every cached file. */
void queue_body_files_close(struct queue *q);

#endif
