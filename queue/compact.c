/*
 * compact — copying the live messages out of mostly-dead segments, so the
 * segments can be deleted (queue.h, "Compaction").
 *
 * One job at a time per worker: the live messages of the most-dead closed
 * segment below compact_threshold, up to 256 KiB of body bytes (what a job
 * costs the loop: its page-cached reads complete inside the submit, its
 * copies are encoded in one completion), are read back with io_uring
 * reads, written again as one run of records each, and switched to their
 * copy once it is durable. Until the switch the old copy is the message;
 * a message that finishes meanwhile finishes normally and the job frees it
 * (store.h: STORE_FINISHED while `copying`).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/array.h"
#include "core/log.h"
#include "queue/segment.h"
#include "queue/store.h"

#define STORE_COMPACT_MAX_MESSAGES 256
#define STORE_COMPACT_MAX_FILES    QUEUE_COMPACT_MAX_FILES /* in ferryd's budget */
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
	uint32_t ncopies;
	size_t copies_cap;
	struct store_read *reads;
	size_t reads_cap;
	uint32_t reads_left;
	uint8_t *data;
	size_t data_cap;
	int fds[STORE_COMPACT_MAX_FILES];
	uint64_t fd_sequences[STORE_COMPACT_MAX_FILES];
	uint32_t nfds;
	struct commit_waiter waiter;
};

static void store_compact_close_files(struct store_compaction *job)
{
	for (uint32_t i = 0; i < job->nfds; i++)
		close(job->fds[i]);
	job->nfds = 0;
}

void store_compaction_free(struct store_compaction *job)
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
		struct store_segment *seg = q->segments[i];
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
	     i < q->nsegments && q->segments[i]->sequence <= victim; i++) {
		struct queue_message *m;
		list_for_each_entry(m, &q->segments[i]->messages, segment_link)
		{
			if (m->last_sequence < victim || m->state != STORE_STORED || m->copying ||
			    store_pinned(m))
				continue;
			if (job->ncopies == STORE_COMPACT_MAX_MESSAGES ||
			    (job->ncopies > 0 && bytes + m->body_len > cap))
				return 0;
			if (array_reserve(job->copies, job->copies_cap, (size_t)job->ncopies + 1) !=
			    0)
				return -ENOMEM;
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
	uint8_t *rec = store_reserve_data(q, m, size, &salt, &c->envelope, &error);
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
		if ((rec = store_reserve_data(q, m, size, &salt, &loc, &error)) == NULL)
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
	if ((rec = store_reserve_data(q, m, size, &salt, &c->commit, &error)) == NULL)
		return error;
	record_encode_commit(rec, size, salt, &rc);
	c->last = c->commit;

	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct store_rcpt *r = &m->rcpts[i];
		if (!recover_rcpt_ended(r->outcome.state))
			continue;
		struct record_rcpt_state st = {
			.recipient = r->index,
			.attempts = r->outcome.attempts,
			.time_ms = (int64_t)time(NULL) * 1000,
			.reason = {"", 0},
		};
		memcpy(st.id, m->id, RECORD_ID_LEN);
		size = record_rcpt_state_size(0);
		struct commit_location loc;
		if ((rec = store_reserve_state(q, m, size, &salt, &loc, &error)) == NULL)
			return error;
		record_encode_rcpt_state(rec, size, salt,
					 r->outcome.state == RECOVER_RCPT_FAILED
						 ? RECORD_RCPT_FAILED
						 : RECORD_RCPT_DELIVERED,
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
	m->nextents = c->nextents;
	m->extents_cap = c->nextents;
	m->envelope = c->envelope;
	m->commit = c->commit;
	m->first_sequence = c->envelope.sequence;
	store_message_place(q, m);
	store_segments_hold_range(q, m, old_first, m->first_sequence - 1, -1);
}

static void store_compact_committed(struct commit_waiter *w, int status)
{
	struct store_compaction *job = container_of(w, struct store_compaction, waiter);
	struct queue *q = job->q;
	uint64_t moved = 0, bytes = 0, failed = 0;
	for (uint32_t i = 0; i < job->ncopies; i++) {
		struct store_copy *c = &job->copies[i];
		struct queue_message *m = c->m;
		m->copying = false;
		if (m->state == STORE_FINISHED) {
			/* It ended meanwhile: its holds are gone, its copy is
			 * dead space behind its MESSAGE_DONE. */
			store_message_free(m);
			free(c->extents);
			c->extents = NULL;
			continue;
		}
		bool durable = c->written && status == 0 && c->error == 0;
		if (durable && store_pin_switch(m)) {
			store_compact_switch(q, c);
			store_pin_switched(m);
			moved++;
			bytes += m->body_len;
		} else {
			/* The old copy stays the message (its copy failed, or a
			 * delivery is reading it: a later job copies it again);
			 * what the copy reached beyond it no longer counts it. */
			if (m->last_sequence > c->saved_last) {
				store_segments_hold_range(q, m, c->saved_last + 1, m->last_sequence,
							  -1);
				m->last_sequence = c->saved_last;
			}
			store_message_place(q, m);
			failed += !durable;
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
		q->compact_retry_ms = store_now_ms(q) + STORE_COMPACT_RETRY_MS;
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
void store_compact_on_poison(struct queue *q, uint64_t sequence, uint64_t good_end)
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
		if (c->m->state == STORE_FINISHED || c->error != 0)
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
	struct store_read *rd = container_of(op, struct store_read, op);
	struct store_compaction *job = rd->job;
	if (cqe->res != (int)rd->len && job->copies[rd->copy].error == 0)
		job->copies[rd->copy].error = cqe->res < 0 ? cqe->res : -EIO;
	if (--job->reads_left == 0)
		store_compact_write(job);
}

/* Queue the reads of every copy's body; returns how many. */
static uint32_t store_compact_read(struct store_compaction *job, size_t total)
{
	size_t nreads = 0;
	for (uint32_t i = 0; i < job->ncopies; i++)
		nreads += job->copies[i].m->nextents;
	if (array_reserve(job->reads, job->reads_cap, nreads) != 0 ||
	    array_reserve(job->data, job->data_cap, total) != 0)
		return UINT32_MAX;
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
void store_compact_maybe_start(struct queue *q)
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
		m->copying = true;
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

bool store_compact_running(const struct queue *q)
{
	return q->compaction != NULL && q->compaction->busy;
}

void queue_compaction_stats(const struct queue *q, struct queue_compaction_stats *out)
{
	*out = q->compact_stats;
	out->running = store_compact_running(q);
}
