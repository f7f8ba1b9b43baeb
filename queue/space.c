/*
 * space — the segments a worker owns, and the spool's limits.
 *
 * Each worker counts, per segment it owns, the messages whose data
 * (envelope, body, commit) lies in it: stored ones, and ones still being
 * received or committed, from their first record on. A closed segment in
 * which nothing lives is deleted, but only once the older segments that
 * its outcome records depend on are gone (store_segment_depend): deleted
 * first, it would leave a message whole on disk without its outcomes, and
 * a restart would deliver it again. Deletions go to the ring
 * (IORING_OP_UNLINKAT): unlinking a large preallocated file takes tens of
 * milliseconds in the file system, too long for the loop.
 *
 * Files of retired writers (orphans, store.h) are owned by worker
 * w % workers and go, oldest first, once their last message is finished.
 *
 * Limits (max_size, max_messages, min_free_disk) are checked at MAIL and
 * RCPT (queue_check_space), when the writer wants a new segment
 * (store_may_grow) and at commit (message.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/array.h"
#include "core/log.h"
#include "queue/segment.h"
#include "queue/store.h"

#define STORE_FREE_CHECK_MS  1000  /* statvfs at most this often per worker */
#define STORE_CROSS_CHECK_MS 1000  /* another queue's deletions: look again */
#define STORE_ROOM_MARGIN    65536 /* envelope and a typical body, when SIZE is not given */

/* A segment deletion on the ring. */
struct store_unlink {
	struct worker_op op;
	struct queue *q;
	uint32_t writer; /* q->index, or an orphan writer's */
	uint64_t sequence;
	char name[SEGMENT_NAME_MAX];
};

/* ---- the segments of q's own writer, by sequence ----------------------------- */

size_t store_segment_lower_bound(const struct queue *q, uint64_t sequence)
{
	size_t lo = 0, hi = q->nsegments;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (q->segments[mid]->sequence < sequence)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct store_segment *store_segment_find(struct queue *q, uint64_t sequence)
{
	size_t at = store_segment_lower_bound(q, sequence);
	return at < q->nsegments && q->segments[at]->sequence == sequence ? q->segments[at] : NULL;
}

/* Publish the oldest segment of q's own writer still on disk. */
static void store_floor_own(struct queue *q)
{
	if (q->index < STORE_MAX_WRITERS)
		atomic_store(&q->store->writer_floor[q->index],
			     q->nsegments > 0 ? q->segments[0]->sequence : UINT64_MAX);
}

int store_cross_add(struct store_cross_dep **deps, size_t *n, size_t *cap, uint32_t writer,
		    uint64_t hi)
{
	for (size_t i = 0; i < *n; i++) {
		if ((*deps)[i].writer == writer) {
			if (hi > (*deps)[i].hi)
				(*deps)[i].hi = hi;
			return 0;
		}
	}
	if (array_reserve(*deps, *cap, *n + 1) != 0)
		return -ENOMEM;
	(*deps)[(*n)++] = (struct store_cross_dep){writer, hi};
	return 0;
}

/* Every writer named is gone past `hi` (or altogether). */
static bool store_cross_satisfied(struct queue_store *st, const struct store_cross_dep *deps,
				  size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (deps[i].writer < STORE_MAX_WRITERS &&
		    atomic_load(&st->writer_floor[deps[i].writer]) <= deps[i].hi)
			return false;
	return true;
}

struct store_segment *store_segment_add(struct queue *q, uint64_t sequence, uint64_t bytes,
					bool reserved)
{
	struct store_segment *found = store_segment_find(q, sequence);
	if (found != NULL)
		return found;
	struct store_segment *seg = calloc(1, sizeof(*seg));
	if (seg == NULL || array_reserve(q->segments, q->segments_cap, q->nsegments + 1) != 0) {
		free(seg);
		return NULL;
	}
	seg->sequence = sequence;
	seg->bytes = bytes;
	list_init(&seg->messages);
	size_t at = store_segment_lower_bound(q, sequence);
	memmove(&q->segments[at + 1], &q->segments[at], (q->nsegments - at) * sizeof(*q->segments));
	q->segments[at] = seg;
	q->nsegments++;
	if (!reserved)
		atomic_fetch_add(&q->store->bytes, bytes);
	store_floor_own(q);
	return seg;
}

void store_segment_depend(struct queue *q, uint64_t sequence, uint64_t lo, uint64_t hi)
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
	return at >= q->nsegments || q->segments[at]->sequence > seg->after_hi;
}

/* The file of segments[at] is gone: forget it. */
static void store_segment_forget(struct queue *q, size_t at)
{
	struct store_segment *seg = q->segments[at];
	char name[SEGMENT_NAME_MAX];
	segment_name(name, q->index, seg->sequence);
	log_event(LOG_LEVEL_DEBUG, "event=segment_deleted segment=%s", name);
	q->compact_stats.deleted++;
	atomic_fetch_sub(&q->store->bytes, seg->bytes);
	free(seg->cross);
	free(seg);
	memmove(&q->segments[at], &q->segments[at + 1],
		(q->nsegments - at - 1) * sizeof(*q->segments));
	q->nsegments--;
	store_floor_own(q);
}

void store_segments_free(struct queue *q)
{
	for (size_t i = 0; i < q->nsegments; i++) {
		free(q->segments[i]->cross);
		free(q->segments[i]);
	}
	free(q->segments);
	q->segments = NULL;
	q->nsegments = q->segments_cap = 0;
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

static void store_orphan_unlinked(struct queue *q, uint32_t writer, uint64_t sequence, int res);

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
	size_t at = store_segment_lower_bound(q, sequence);
	if (at < q->nsegments && q->segments[at]->sequence == sequence) {
		store_segment_forget(q, at);
		/* Only now may what waited for it go. */
		store_segments_collect(q, at);
	}
}

static void store_segment_unlinked(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct store_unlink *u = container_of(op, struct store_unlink, op);
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
	struct store_segment *seg = q->segments[at];
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

/* Dependencies point to earlier segments only, so one pass in sequence
 * order sees each segment after everything it waited for. */
void store_segments_collect(struct queue *q, size_t from)
{
	for (size_t i = from; i < q->nsegments;) {
		if (store_segment_deletable(q, q->segments[i]) && store_segment_delete_at(q, i))
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
	size_t at = store_segment_lower_bound(q, seg->sequence);
	if (store_segment_delete_at(q, at))
		store_segments_collect(q, at);
}

/* Only the writer's own segments: a message recovered from a worker
 * number that no longer runs lives in files no queue accounts for. */
void store_segments_hold_range(struct queue *q, const struct queue_message *m, uint64_t first,
			       uint64_t last, int delta)
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

void store_segments_hold(struct queue *q, const struct queue_message *m, int delta)
{
	store_segments_hold_range(q, m, m->first_sequence, m->last_sequence, delta);
}

/* ---- files of retired writers ------------------------------------------------ */

struct store_orphan_writer *store_orphan_writer(struct queue *q, uint32_t writer, bool add)
{
	for (size_t i = 0; i < q->norphans; i++)
		if (q->orphans[i].writer == writer)
			return &q->orphans[i];
	if (!add || array_reserve(q->orphans, q->orphans_cap, q->norphans + 1) != 0)
		return NULL;
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

int store_orphan_segment_add(struct queue *q, struct store_orphan_writer *ow, uint64_t sequence,
			     uint64_t bytes, struct store_cross_dep *cross, size_t ncross)
{
	if (array_reserve(ow->segments, ow->cap, ow->nsegments + 1) != 0)
		return -ENOMEM;
	ow->segments[ow->nsegments++] = (struct store_orphan_segment){
		.sequence = sequence,
		.bytes = bytes,
		.cross = cross,
		.ncross = ncross,
		.cross_cap = ncross,
	};
	store_floor_orphan(q, ow);
	atomic_fetch_add(&q->store->bytes, bytes);
	return 0;
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

/*
 * Every message of an orphan writer is finished: delete its files, once
 * the outcomes they hold of yet other writers' messages (it owned them
 * in an earlier run) are no longer needed.
 */
void store_orphan_writer_collect(struct queue *q, struct store_orphan_writer *ow)
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

void store_orphan_done(struct queue *q, const struct queue_message *m)
{
	struct store_orphan_writer *ow = store_orphan_writer(q, m->writer, false);
	if (ow == NULL || ow->live == 0)
		return;
	if (--ow->live == 0)
		store_orphan_writer_collect(q, ow);
}

void store_orphans_free(struct queue *q)
{
	for (size_t i = 0; i < q->norphans; i++) {
		for (size_t k = 0; k < q->orphans[i].nsegments; k++)
			free(q->orphans[i].segments[k].cross);
		free(q->orphans[i].segments);
	}
	free(q->orphans);
	q->orphans = NULL;
	q->norphans = q->orphans_cap = 0;
}

/* ---- waiting for other queues' deletions --------------------------------------- */

static void store_cross_timer_fired(struct timer *t)
{
	struct queue *q = container_of(t, struct queue, cross_timer);
	q->cross_check_ms = 0;
	store_cross_recheck(q);
}

/* While something waits, an idle worker still looks again each second
 * (its loop sleeps until a timer is due). */
void store_cross_arm(struct queue *q)
{
	if (!q->cross_waiting || q->worker == NULL || timer_armed(&q->cross_timer))
		return;
	if (q->cross_timer.fire == NULL)
		timer_init(&q->cross_timer, store_cross_timer_fired);
	timer_arm(&q->worker->timers, &q->cross_timer, q->worker->now_ms, STORE_CROSS_CHECK_MS);
}

void store_cross_recheck(struct queue *q)
{
	if (!q->cross_waiting || q->worker == NULL || q->worker->now_ms < q->cross_check_ms)
		return;
	q->cross_check_ms = q->worker->now_ms + STORE_CROSS_CHECK_MS;
	q->cross_waiting = false; /* set again by whatever still waits */
	store_segments_collect(q, 0);
	for (size_t i = 0; i < q->norphans; i++)
		store_orphan_writer_collect(q, &q->orphans[i]);
}

/* ---- the writer's hooks about segments ------------------------------------------ */

/*
 * Free space on the spool's file system, as the last look saw it (at most
 * STORE_FREE_CHECK_MS old), or looked at now when `fresh` (before a new
 * segment takes its share). UINT64_MAX when it cannot be known.
 */
static uint64_t store_free_bytes(struct queue *q, bool fresh)
{
	uint64_t now = store_now_ms(q);
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
int store_may_grow(void *arg, uint64_t size)
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

void store_grow_failed(void *arg, uint64_t size)
{
	struct queue *q = arg;
	atomic_fetch_sub(&q->store->bytes, size);
}

void store_on_segment_created(void *arg, uint64_t sequence, uint64_t size)
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

void store_on_segment_closed(void *arg, uint64_t sequence)
{
	struct queue *q = arg;
	struct store_segment *seg = store_segment_find(q, sequence);
	if (seg == NULL)
		return;
	seg->closed = true;
	q->compact_dirty = true;
	store_segment_maybe_delete(q, seg);
}

/* ---- queue.h: room for a message -------------------------------------------------- */

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
