/*
 * body — reading a stored body on the delivering worker (body.h), and the
 * pin that keeps compaction from moving it meanwhile.
 *
 * The pin is a count of readers in the message, taken by any worker, and
 * one bit that compaction's switch sets on the owner while it replaces
 * the extents: a reader never sees extents being replaced, and a switch
 * never happens under a reader (it gives up instead; the message stays
 * where it was and a later job copies it again).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/check.h"
#include "core/log.h"
#include "queue/segment.h"
#include "queue/store.h"

_Static_assert(QUEUE_DESCRIPTORS_PER_WORKER == 2 + QUEUE_COMPACT_MAX_FILES + QUEUE_BODY_FILES,
	       "queue.h counts the readers' files in a worker's descriptors");

/* A cached file unused this long is closed. */
#define BODY_FILE_IDLE_MS 5000

/* ---- the pin ------------------------------------------------------------------ */

static bool body_pin(struct queue_message *m)
{
	unsigned v = atomic_load_explicit(&m->pins, memory_order_relaxed);
	do {
		if (v & STORE_PIN_SWITCHING)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(&m->pins, &v, v + 1, memory_order_acquire,
							memory_order_relaxed));
	return true;
}

static void body_unpin(struct queue_message *m)
{
	atomic_fetch_sub_explicit(&m->pins, 1, memory_order_release);
}

bool store_pin_switch(struct queue_message *m)
{
	unsigned none = 0;
	return atomic_compare_exchange_strong_explicit(&m->pins, &none, STORE_PIN_SWITCHING,
						       memory_order_acquire, memory_order_relaxed);
}

void store_pin_switched(struct queue_message *m)
{
	atomic_store_explicit(&m->pins, 0, memory_order_release);
}

/* ---- the file cache ---------------------------------------------------------------- */

static void body_file_close(struct store_body_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	f->users = 0;
}

/* The cache slot holding segment `sequence` of `writer`, opened if need
 * be (evicting the least recently used idle file); -errno when it cannot
 * be had. */
static int body_file_get(struct queue *q, uint32_t writer, uint64_t sequence)
{
	int free_slot = -1, oldest = -1;
	for (int i = 0; i < QUEUE_BODY_FILES; i++) {
		struct store_body_file *f = &q->body_files[i];
		if (f->fd < 0) {
			if (free_slot < 0)
				free_slot = i;
			continue;
		}
		if (f->writer == writer && f->sequence == sequence)
			return i;
		if (f->users == 0 && (oldest < 0 || f->used_ms < q->body_files[oldest].used_ms))
			oldest = i;
	}
	int slot = free_slot >= 0 ? free_slot : oldest;
	if (slot < 0)
		return -EMFILE; /* every file has a read in flight: try the next turn */
	char name[SEGMENT_NAME_MAX];
	segment_name(name, writer, sequence);
	/* A lookup in a directory the store keeps open: no read of the
	 * disk on the loop, and once per segment, not per message. */
	int fd = openat(q->store->dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct store_body_file *f = &q->body_files[slot];
	body_file_close(f);
	*f = (struct store_body_file){.fd = fd, .writer = writer, .sequence = sequence};
	return slot;
}

void queue_body_files_expire(struct queue *q)
{
	uint64_t now = store_now_ms(q);
	for (int i = 0; i < QUEUE_BODY_FILES; i++) {
		struct store_body_file *f = &q->body_files[i];
		if (f->fd >= 0 && f->users == 0 && now - f->used_ms > BODY_FILE_IDLE_MS)
			body_file_close(f);
	}
}

void queue_body_files_close(struct queue *q)
{
	for (int i = 0; i < QUEUE_BODY_FILES; i++)
		body_file_close(&q->body_files[i]);
}

/* ---- the reader ---------------------------------------------------------------------- */

int queue_body_open(struct queue_body_reader *rd, struct queue *q, const struct queue_rcpt *qr,
		    queue_body_fn *done, void *user)
{
	struct queue_message *m = ((const struct store_rcpt *)qr)->message;
	CHECK(!rd->pinned && !rd->inflight);
	/* The storage of the reader's last message is used again: a
	 * connection delivering message after message allocates none. */
	*rd = (struct queue_body_reader){.q = q,
					 .m = m,
					 .done = done,
					 .user = user,
					 .file = -1,
					 .extents = rd->extents,
					 .extents_cap = rd->extents_cap,
					 .buf = rd->buf,
					 .buf_cap = rd->buf_cap};
	if (!body_pin(m))
		return -EAGAIN;
	rd->pinned = true;
	if (m->nextents > rd->extents_cap) {
		struct queue_extent *e = realloc(rd->extents, m->nextents * sizeof(*e));
		if (e == NULL) {
			queue_body_close(rd);
			return -ENOMEM;
		}
		rd->extents = e;
		rd->extents_cap = m->nextents;
	}
	if (m->nextents > 0)
		memcpy(rd->extents, m->extents, m->nextents * sizeof(*rd->extents));
	rd->nextents = m->nextents;
	return 0;
}

static void body_read_done(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct queue_body_reader *rd = container_of(op, struct queue_body_reader, op);
	struct store_body_file *f = &rd->q->body_files[rd->file];
	const struct queue_extent *e = &rd->extents[rd->next];
	f->users--;
	f->used_ms = store_now_ms(rd->q);
	rd->inflight = false;
	if (cqe->res < 0 || (uint32_t)cqe->res != e->len) {
		char name[SEGMENT_NAME_MAX];
		segment_name(name, rd->m->writer, e->sequence);
		int error = cqe->res < 0 ? -cqe->res : EIO;
		log_event(LOG_LEVEL_ERROR,
			  "event=body_read_failed queue_id=%s segment=%s offset=%llu error=\"%s\"",
			  rd->m->id, name, (unsigned long long)e->offset,
			  cqe->res < 0 ? strerror(error) : "short read");
		rd->done(rd, -error, NULL, 0);
		return;
	}
	rd->next++;
	rd->done(rd, 0, rd->buf, e->len);
}

int queue_body_read(struct queue_body_reader *rd)
{
	CHECK(rd->pinned && !rd->inflight);
	if (rd->next == rd->nextents)
		return 1;
	const struct queue_extent *e = &rd->extents[rd->next];
	if (e->len > rd->buf_cap) {
		char *b = realloc(rd->buf, e->len);
		if (b == NULL)
			return -ENOMEM;
		rd->buf = b;
		rd->buf_cap = e->len;
	}
	int slot = body_file_get(rd->q, rd->m->writer, e->sequence);
	if (slot < 0)
		return slot;
	rd->file = slot;
	struct store_body_file *f = &rd->q->body_files[slot];
	f->users++;
	rd->inflight = true;
	rd->op.complete = body_read_done;
	struct io_uring_sqe *sqe = worker_sqe(rd->q->worker);
	io_uring_prep_read(sqe, f->fd, rd->buf, e->len, e->offset);
	worker_sqe_set_op(sqe, &rd->op);
	return 0;
}

void queue_body_close(struct queue_body_reader *rd)
{
	CHECK(!rd->inflight);
	if (rd->pinned)
		body_unpin(rd->m);
	rd->pinned = false;
}

void queue_body_release(struct queue_body_reader *rd)
{
	queue_body_close(rd);
	free(rd->extents);
	free(rd->buf);
	rd->extents = NULL;
	rd->extents_cap = 0;
	rd->buf = NULL;
	rd->buf_cap = 0;
}
