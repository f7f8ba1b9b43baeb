#include "queue/commit.h"

#include <errno.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/list.h"
#include "core/buf.h"
#include "core/fault.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/worker.h"
#include "queue/record.h"
#include "queue/segment.h"

struct commit_segment {
	int fd;
	uint64_t sequence;
	uint64_t salt;
	uint64_t size;
	uint64_t end;     /* where the next reserved record goes */
	unsigned batches; /* batches for it not yet finished */
	bool closed;      /* no more records go here */
	bool poisoned;
	bool dir_synced; /* a batch with the directory fsync has completed */
};

struct commit_batch {
	struct list_node link; /* in the writer's batches */
	struct commit_writer *writer;
	struct commit_segment *segment;
	uint64_t offset; /* file offset of data[0] */
	struct buf data;
	struct list_node waiters;
	bool sync_dir; /* set at submission until the segment's name is durable */
	bool sealed;   /* ends with its BATCH record; takes no more records */
	bool submitted;
	unsigned ops_pending;
	int status;
	struct worker_op write_op, sync_op, dir_op;
	uint64_t submitted_ns; /* CLOCK_MONOTONIC, for the latency histogram */
};

struct commit_writer {
	struct worker *worker;
	struct commit_config cfg;
	struct commit_hooks hooks;
	struct commit_segment *current;
	struct list_node batches;   /* oldest first; the last one gathers */
	struct commit_batch *spare; /* one finished batch kept for reuse */
	bool inflight;
	bool paused_producers; /* commit_over_cap() was true: on_drain owed */
	size_t backlog;        /* bytes reserved, not yet durable */
	uint64_t next_sequence;
	/* For the metrics. */
	uint64_t commits, sync_errors;
	struct metric_histogram commit_bytes, commit_seconds;
};

static const double commit_bytes_bounds[] = {512,    1024,   4096,    16384,   65536,
					     262144, 524288, 1048576, 4194304, 16777216};
static const struct metric_family commit_bytes_family = {
	"ferry_spool_commit_bytes",
	"Bytes written by one group commit (one write and one fdatasync for every message "
	"and outcome gathered meanwhile).",
	METRIC_HISTOGRAM,
	METRIC_SUM,
	commit_bytes_bounds,
	sizeof(commit_bytes_bounds) / sizeof(commit_bytes_bounds[0])};
static const double commit_seconds_bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
					       0.05,   0.1,   0.25,  0.5,   1,    2.5};
static const struct metric_family commit_seconds_family = {
	"ferry_spool_commit_seconds",
	"Latency of one group commit: from its submission to its fdatasync's completion.",
	METRIC_HISTOGRAM,
	METRIC_SUM,
	commit_seconds_bounds,
	sizeof(commit_seconds_bounds) / sizeof(commit_seconds_bounds[0])};
static const struct metric_family commit_count_family = {"ferry_spool_commits_total",
							 "Group commits made durable (or failed).",
							 METRIC_COUNTER,
							 METRIC_SUM,
							 NULL,
							 0};
static const struct metric_family commit_errors_family = {
	"ferry_spool_sync_errors_total",
	"Group commits whose write or fdatasync failed: their messages got 451, the segment "
	"was given up.",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};

static uint64_t commit_clock_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void commit_metrics(const struct commit_writer *cw, struct metrics *out)
{
	metrics_add(out, &commit_count_family, NULL, (double)cw->commits);
	metrics_add(out, &commit_errors_family, NULL, (double)cw->sync_errors);
	metrics_add_histogram(out, &commit_bytes_family, NULL, &cw->commit_bytes);
	metrics_add_histogram(out, &commit_seconds_family, NULL, &cw->commit_seconds);
}

static void commit_op_done(struct commit_batch *b, const struct io_uring_cqe *cqe, bool is_write);

/* The oldest batch not finished, or NULL. */
static struct commit_batch *commit_oldest(const struct commit_writer *cw)
{
	struct list_node *first = list_first(&cw->batches);
	return first != NULL ? container_of(first, struct commit_batch, link) : NULL;
}

/* The newest batch (the one gathering, unless it was submitted), or NULL. */
static struct commit_batch *commit_gathering(const struct commit_writer *cw)
{
	return list_empty(&cw->batches) ? NULL
					: container_of(cw->batches.prev, struct commit_batch, link);
}

static void commit_write_done(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	commit_op_done(container_of(op, struct commit_batch, write_op), cqe, true);
}

static void commit_sync_done(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct commit_batch *b = container_of(op, struct commit_batch, sync_op);
	/* Test builds can make a sync fail like a dying disk would. */
	if (cqe->res == 0 && fault_fire(FAULT_FSYNC)) {
		struct io_uring_cqe fake = *cqe;
		fake.res = -EIO;
		commit_op_done(b, &fake, false);
		return;
	}
	commit_op_done(b, cqe, false);
}

static void commit_dir_done(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	commit_op_done(container_of(op, struct commit_batch, dir_op), cqe, false);
}

int commit_writer_open(struct commit_writer **out, struct worker *w,
		       const struct commit_config *cfg, const struct commit_hooks *hooks)
{
	struct commit_writer *cw = calloc(1, sizeof(*cw));
	if (cw == NULL)
		return -ENOMEM;
	cw->worker = w;
	cw->cfg = *cfg;
	cw->hooks = *hooks;
	cw->next_sequence = cfg->first_sequence;
	list_init(&cw->batches);
	*out = cw;
	return 0;
}

static void commit_segment_release(struct commit_writer *cw, struct commit_segment *seg)
{
	if (!seg->closed || seg->batches > 0)
		return;
	if (cw->current == seg)
		cw->current = NULL;
	/* No syscall on the loop: the ring closes it. */
	struct io_uring_sqe *sqe = worker_sqe(cw->worker);
	io_uring_prep_close(sqe, seg->fd);
	worker_sqe_set_op(sqe, NULL);
	uint64_t sequence = seg->sequence;
	free(seg);
	if (cw->hooks.on_segment_closed != NULL)
		cw->hooks.on_segment_closed(cw->hooks.arg, sequence);
}

void commit_writer_close(struct commit_writer *cw)
{
	if (cw == NULL)
		return;
	struct commit_batch *b, *next;
	list_for_each_entry_safe(b, next, &cw->batches, link)
	{
		/* only empty gathering batches can be left */
		list_remove(&b->link);
		buf_release(&b->data);
		free(b);
	}
	if (cw->current != NULL) {
		/* A segment is never appended to after a stop: give back the
		 * preallocated rest. Only zeros are cut. */
		if (!cw->current->poisoned &&
		    ftruncate(cw->current->fd, (off_t)cw->current->end) != 0)
			log_event(LOG_LEVEL_WARN,
				  "event=segment_trim_failed worker=%u sequence=%llu error=\"%s\"",
				  cw->cfg.worker_index, (unsigned long long)cw->current->sequence,
				  strerror(errno));
		close(cw->current->fd);
		free(cw->current);
	}
	if (cw->spare != NULL) {
		buf_release(&cw->spare->data);
		free(cw->spare);
	}
	free(cw);
}

static int commit_roll(struct commit_writer *cw, int *error)
{
	if (cw->current != NULL) {
		cw->current->closed = true;
		struct commit_segment *old = cw->current;
		cw->current = NULL;
		commit_segment_release(cw, old);
	}
	if (cw->hooks.may_grow != NULL) {
		int r = cw->hooks.may_grow(cw->hooks.arg, cw->cfg.segment_size);
		if (r != 0) {
			*error = r;
			return -1;
		}
	}
	struct commit_segment *seg = calloc(1, sizeof(*seg));
	if (seg == NULL) {
		if (cw->hooks.grow_failed != NULL)
			cw->hooks.grow_failed(cw->hooks.arg, cw->cfg.segment_size);
		*error = -ENOMEM;
		return -1;
	}
	uint64_t sequence = cw->next_sequence++;
	int fd = segment_create(cw->cfg.dir_fd, cw->cfg.worker_index, sequence,
				cw->cfg.segment_size, cw->cfg.owner, &seg->salt, &seg->end);
	if (fd < 0) {
		log_event(LOG_LEVEL_ERROR,
			  "event=segment_create_failed worker=%u sequence=%llu "
			  "error=\"%s\"",
			  cw->cfg.worker_index, (unsigned long long)sequence, strerror(-fd));
		free(seg);
		if (cw->hooks.grow_failed != NULL)
			cw->hooks.grow_failed(cw->hooks.arg, cw->cfg.segment_size);
		*error = fd;
		return -1;
	}
	seg->fd = fd;
	seg->sequence = sequence;
	seg->size = cw->cfg.segment_size;
	cw->current = seg;
	if (cw->hooks.on_segment_created != NULL)
		cw->hooks.on_segment_created(cw->hooks.arg, sequence, seg->size);
	return 0;
}

static struct commit_batch *commit_new_batch(struct commit_writer *cw)
{
	struct commit_batch *b = cw->spare;
	if (b != NULL) {
		cw->spare = NULL;
		struct buf keep = b->data;
		memset(b, 0, sizeof(*b));
		b->data = keep;
		buf_clear(&b->data);
	} else {
		b = calloc(1, sizeof(*b));
		if (b == NULL)
			return NULL;
	}
	b->writer = cw;
	b->segment = cw->current;
	b->offset = cw->current->end;
	list_init(&b->waiters);
	list_node_init(&b->link);
	b->write_op.complete = commit_write_done;
	b->sync_op.complete = commit_sync_done;
	b->dir_op.complete = commit_dir_done;
	cw->current->batches++;
	list_insert_tail(&cw->batches, &b->link);
	return b;
}

/*
 * End a batch with its BATCH record. Space for it is always kept: in the
 * segment (commit_reserve never fills the last RECORD_BATCH_SIZE bytes)
 * and in the buffer (reserved with every record), so sealing cannot fail.
 * Only the newest batch of a segment is ever sealed, so the record lands
 * right after the batch's last record.
 */
static void commit_seal(struct commit_writer *cw, struct commit_batch *b)
{
	if (b->sealed)
		return;
	b->sealed = true;
	if (buf_len(&b->data) == 0)
		return;
	struct commit_segment *seg = b->segment;
	uint8_t *p = buf_extend(&b->data, RECORD_BATCH_SIZE);
	struct record_batch rb = {.start = b->offset};
	record_encode_batch(p, RECORD_BATCH_SIZE, seg->salt, &rb);
	seg->end += RECORD_BATCH_SIZE;
	cw->backlog += RECORD_BATCH_SIZE;
}

uint8_t *commit_reserve(struct commit_writer *cw, size_t size, uint64_t *salt,
			struct commit_location *loc, int *error)
{
	if (size + RECORD_BATCH_SIZE + 64 > cw->cfg.segment_size) {
		*error = -EFBIG;
		return NULL;
	}
	/* Seal the gathering batch first when it takes no more: its BATCH
	 * record moves the segment's end, which the room check must see. */
	struct commit_batch *b = commit_gathering(cw);
	bool fresh = b == NULL || b->submitted || b->sealed || cw->current == NULL ||
		     cw->current->closed || b->segment != cw->current ||
		     (buf_len(&b->data) > 0 && buf_len(&b->data) + size > cw->cfg.batch_cap);
	bool roll = cw->current == NULL || cw->current->closed ||
		    cw->current->end + size + RECORD_BATCH_SIZE > cw->current->size;
	if ((fresh || roll) && b != NULL && !b->submitted)
		commit_seal(cw, b);
	if (!roll && cw->current->end + size + RECORD_BATCH_SIZE > cw->current->size)
		roll = true; /* the seal took the room */
	if (roll && commit_roll(cw, error) != 0)
		return NULL;
	if (fresh || roll) {
		b = commit_new_batch(cw);
		if (b == NULL) {
			*error = -ENOMEM;
			return NULL;
		}
	}
	/* Room for the record and, in the buffer, for the BATCH record that
	 * will close the batch. */
	uint8_t *p = buf_extend(&b->data, size + RECORD_BATCH_SIZE);
	if (p == NULL) {
		*error = -ENOMEM;
		return NULL;
	}
	b->data.end -= RECORD_BATCH_SIZE;
	loc->sequence = cw->current->sequence;
	loc->offset = cw->current->end;
	*salt = cw->current->salt;
	cw->current->end += size;
	cw->backlog += size;
	return p;
}

void commit_wait(struct commit_writer *cw, struct commit_waiter *w)
{
	struct commit_batch *b = commit_gathering(cw);
	list_node_init(&w->link);
	if (b == NULL) {
		/* Nothing reserved is pending: it is all durable already. The
		 * store never asks this way, but answer truthfully. */
		w->done(w, 0);
		return;
	}
	list_insert_tail(&b->waiters, &w->link);
}

static void commit_retire(struct commit_writer *cw, struct commit_batch *b);
static void commit_notify(struct commit_batch *b, int status);

void commit_flush(struct commit_writer *cw)
{
	struct commit_batch *b = commit_oldest(cw);
	while (!cw->inflight && b != NULL && buf_len(&b->data) == 0 && b != commit_gathering(cw)) {
		/* Left empty by a failed allocation: nothing to write, nothing
		 * anyone waits for to become durable. */
		commit_notify(b, 0);
		commit_retire(cw, b);
		b = commit_oldest(cw);
	}
	if (cw->inflight || b == NULL || buf_len(&b->data) == 0)
		return;
	struct worker *w = cw->worker;
	/* The chain must reach the kernel in one io_uring_enter: a link does
	 * not carry over from one submission to the next, and worker_sqe()
	 * submits by itself when the ring is full, which would leave the sync
	 * free to run before the write it must follow. So make room for the
	 * whole chain first (worker_sqes), or leave the batch for the next
	 * turn. */
	/* A new segment's name is durable only once the directory is synced:
	 * the first batch that completes with it settles that. */
	b->sync_dir = !b->segment->dir_synced;
	unsigned ops = b->sync_dir ? 3 : 2;
	if (!worker_sqes(w, ops))
		return;
	commit_seal(cw, b);
	b->submitted = true;
	b->submitted_ns = commit_clock_ns();
	cw->inflight = true;
	b->ops_pending = ops;
	/* One write, then one sync that may not overtake it (linked), then
	 * for a new segment the directory holding its name. */
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_write(sqe, b->segment->fd, buf_head(&b->data), (unsigned)buf_len(&b->data),
			    b->offset);
	sqe->flags |= IOSQE_IO_LINK;
	worker_sqe_set_op(sqe, &b->write_op);
	sqe = worker_sqe(w);
	io_uring_prep_fsync(sqe, b->segment->fd, IORING_FSYNC_DATASYNC);
	if (b->sync_dir)
		sqe->flags |= IOSQE_IO_LINK;
	worker_sqe_set_op(sqe, &b->sync_op);
	if (b->sync_dir) {
		sqe = worker_sqe(w);
		io_uring_prep_fsync(sqe, cw->cfg.dir_fd, 0);
		worker_sqe_set_op(sqe, &b->dir_op);
	}
}

static void commit_notify(struct commit_batch *b, int status)
{
	/* Taken off first: a waiter's done() may free it, and may reserve
	 * records (into another batch) meanwhile. */
	struct list_node waiting;
	list_init(&waiting);
	list_splice_tail(&waiting, &b->waiters);
	struct list_node *node;
	while ((node = list_first(&waiting)) != NULL) {
		list_remove(node);
		struct commit_waiter *w = container_of(node, struct commit_waiter, link);
		w->done(w, status);
	}
}

/* Unlink a finished batch and keep it for reuse. */
static void commit_retire(struct commit_writer *cw, struct commit_batch *b)
{
	list_remove(&b->link);
	cw->backlog -= buf_len(&b->data);
	struct commit_segment *seg = b->segment;
	seg->batches--;
	if (cw->spare == NULL && b->data.cap <= 2 * cw->cfg.batch_cap) {
		cw->spare = b;
	} else {
		buf_release(&b->data);
		free(b);
	}
	commit_segment_release(cw, seg);
}

static void commit_poison(struct commit_writer *cw, struct commit_segment *seg, uint64_t good_end,
			  int status)
{
	seg->poisoned = true;
	seg->closed = true;
	/* What the failed batch wrote may still reach the disk later and be
	 * found at recovery: cut the file back to what was durable, so no
	 * message that got 451 comes back to life. Best effort: if the disk
	 * refuses even this, it is failing and an operator must look. */
	bool cut = ftruncate(seg->fd, (off_t)good_end) == 0;
	if (!cut || fdatasync(seg->fd) != 0)
		log_event(LOG_LEVEL_ERROR,
			  "event=segment_truncate_failed worker=%u sequence=%llu error=\"%s\"",
			  cw->cfg.worker_index, (unsigned long long)seg->sequence, strerror(errno));
	log_event(LOG_LEVEL_ERROR,
		  "event=segment_poisoned worker=%u sequence=%llu error=\"%s\" note=\"messages "
		  "not yet acknowledged get 451; writing moves to a new segment\"",
		  cw->cfg.worker_index, (unsigned long long)seg->sequence, strerror(-status));
	if (cw->hooks.on_poison != NULL)
		cw->hooks.on_poison(cw->hooks.arg, seg->sequence, good_end, cut);
	/* Later batches for the same segment will never be trusted either. */
	struct commit_batch *b, *next;
	list_for_each_entry_safe(b, next, &cw->batches, link)
	{
		if (b->segment != seg || b->submitted)
			continue;
		commit_notify(b, status);
		commit_retire(cw, b);
	}
}

static void commit_op_done(struct commit_batch *b, const struct io_uring_cqe *cqe, bool is_write)
{
	int res = cqe->res;
	if (is_write && res >= 0 && (size_t)res != buf_len(&b->data))
		res = -EIO; /* a short write to a preallocated file: the device failed */
	if (res < 0 && (b->status == 0 || b->status == -ECANCELED))
		b->status = res;
	if (--b->ops_pending > 0)
		return;
	struct commit_writer *cw = b->writer;
	cw->inflight = false;
	int status = b->status;
	if (status == -ECANCELED)
		status = -EIO;
	cw->commits++;
	if (status != 0)
		cw->sync_errors++;
	metric_histogram_observe(&cw->commit_bytes, &commit_bytes_family,
				 (double)buf_len(&b->data));
	metric_histogram_observe(&cw->commit_seconds, &commit_seconds_family,
				 (double)(commit_clock_ns() - b->submitted_ns) / 1e9);
	if (status != 0) {
		commit_poison(cw, b->segment, b->offset, status);
	} else {
		if (b->sync_dir)
			b->segment->dir_synced = true;
	}
	commit_notify(b, status);
	commit_retire(cw, b);
	if (cw->paused_producers && !commit_over_cap(cw)) {
		cw->paused_producers = false;
		if (cw->hooks.on_drain != NULL)
			cw->hooks.on_drain(cw->hooks.arg);
	}
}

bool commit_over_cap(struct commit_writer *cw)
{
	/* Two batches' worth waiting: one in flight and one gathering. */
	bool over = cw->backlog > 2 * cw->cfg.batch_cap;
	if (over)
		cw->paused_producers = true;
	return over;
}

bool commit_idle(const struct commit_writer *cw)
{
	return !cw->inflight &&
	       (list_empty(&cw->batches) || (commit_oldest(cw) == commit_gathering(cw) &&
					     buf_len(&commit_oldest(cw)->data) == 0));
}

uint64_t commit_room(const struct commit_writer *cw)
{
	const struct commit_segment *seg = cw->current;
	if (seg == NULL || seg->closed || seg->end + RECORD_BATCH_SIZE >= seg->size)
		return 0;
	return seg->size - seg->end - RECORD_BATCH_SIZE;
}
