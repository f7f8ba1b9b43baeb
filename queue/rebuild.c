/*
 * rebuild — the store's memory rebuilt from the spool at start, before any
 * worker runs: recover.c reads and judges the segments; this turns what
 * it hands over into stored messages, their recipients' outcomes, and the
 * accounting of every segment (what lives in it, what it must outlive),
 * then indexes the recipients and deletes the segments nothing needs.
 *
 * It reads by the rules every reader of the spool keeps (recover.h): of
 * two copies of a message the later one in read order is kept; an ended
 * recipient stays ended; MESSAGE_DONE finishes a message; outcomes read
 * before their message are kept and applied once every message is known.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"
#include "core/log.h"
#include "queue/store.h"

struct rebuild {
	struct queue_store *st;
	/* Every message read, whichever queue will own it, by id: outcome
	 * records and second copies name them. Each queue's own map is made
	 * from it at the end (rebuild_settle). */
	struct idmap all;
	bool incomplete; /* a segment could not be accounted (memory) */
	/* The segment being read must outlive [lo, hi] of its writer, and
	 * other writers' files (cross), known once it is added. */
	struct {
		uint32_t worker;
		uint64_t sequence, lo, hi;
		struct store_cross_dep *cross;
		size_t ncross, cross_cap;
	} depend;
	struct recover_outcomes early; /* read before their message (recover.h) */
};

static struct queue_message *rebuild_find(struct rebuild *rb, const char *id)
{
	struct idmap_node *node = idmap_find(&rb->all, id);
	return node != NULL ? container_of(node, struct queue_message, id_link) : NULL;
}

static int rebuild_extents_from(struct queue_message *m, const struct recover_message *rm)
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
	m->nextents = rm->nextents;
	m->extents_cap = rm->nextents;
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
 */
static int rebuild_duplicate(struct queue_store *st, struct queue_message *m,
			     const struct recover_message *rm)
{
	struct recover_place kept = {m->writer, m->envelope.sequence, m->envelope.offset};
	struct recover_place copy = {rm->worker, rm->envelope_sequence, rm->envelope_offset};
	if (!recover_copy_replaces(&kept, &copy))
		return 0;
	struct queue *owner = &st->queues[rm->worker % st->cfg.workers];
	if (owner != m->queue) {
		list_remove(&m->link);
		m->queue = owner;
		list_insert_tail(&owner->stored, &m->link);
	}
	/* Records of its state must outlive the oldest copy of the writer. */
	uint64_t origin = m->writer == rm->worker ? m->origin_sequence : rm->first_sequence;
	int r = rebuild_extents_from(m, rm);
	if (r == 0)
		m->origin_sequence = origin < rm->first_sequence ? origin : rm->first_sequence;
	return r;
}

static int rebuild_message(void *arg, const struct recover_message *rm)
{
	struct rebuild *rb = arg;
	struct queue_store *st = rb->st;
	const struct record_envelope *env = rm->envelope;
	struct queue_message *dup = rebuild_find(rb, env->id);
	if (dup != NULL)
		return rebuild_duplicate(st, dup, rm);
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
	m->state = STORE_STORED;
	m->sender_len = env->sender.len;
	m->arrival_ms = env->arrival_ms;
	if (rebuild_extents_from(m, rm) != 0) {
		store_message_free(m);
		return -ENOMEM;
	}
	m->origin_sequence = m->first_sequence;
	if (idmap_insert(&rb->all, &m->id_link) != 0) {
		store_message_free(m);
		return -ENOMEM;
	}
	list_insert_tail(&q->stored, &m->link);
	return 0;
}

static void rebuild_segment(void *arg, const struct recover_segment *seg)
{
	struct rebuild *rb = arg;
	struct queue_store *st = rb->st;
	struct queue *q = &st->queues[seg->worker % st->cfg.workers];
	/* Sequence numbers continue past anything on disk, in any verdict. */
	if (seg->worker < st->cfg.workers && seg->sequence >= q->next_sequence)
		q->next_sequence = seg->sequence + 1;
	/* What its records wait for (rebuild_depend), if anything. */
	struct store_cross_dep *cross = NULL;
	size_t ncross = 0;
	uint64_t after_lo = 0, after_hi = 0;
	if (rb->depend.worker == seg->worker && rb->depend.sequence == seg->sequence) {
		cross = rb->depend.cross;
		ncross = rb->depend.ncross;
		after_lo = rb->depend.lo;
		after_hi = rb->depend.hi;
		rb->depend.cross = NULL;
		rb->depend.ncross = rb->depend.cross_cap = 0;
		rb->depend.sequence = 0;
	}
	if (seg->verdict == RECOVER_CORRUPT || seg->verdict == RECOVER_UNREADABLE) {
		free(cross);
		return; /* moved aside or untouched: not ours to count or delete */
	}
	if (seg->worker != q->index) {
		/* Written by a worker number that no longer runs: q owns its
		 * messages, and the file until they are all finished. Its own
		 * outcomes go with it; those of other writers' messages (from
		 * a run in which it owned them) make it wait. */
		struct store_orphan_writer *ow = store_orphan_writer(q, seg->worker, true);
		if (ow == NULL || store_orphan_segment_add(q, ow, seg->sequence, seg->file_size,
							   cross, ncross) != 0) {
			/* Unaccounted, its writer's floor would be wrong: an
			 * outcome waiting on it could go first. */
			rb->incomplete = true;
			free(cross);
			return;
		}
	} else {
		struct store_segment *s =
			store_segment_add(q, seg->sequence, seg->file_size, false);
		if (s == NULL) {
			rb->incomplete = true;
			free(cross);
			return;
		}
		s->closed = true; /* never appended to again */
		s->cross = cross;
		s->ncross = s->cross_cap = ncross;
		store_segment_depend(q, seg->sequence, after_lo, after_hi);
	}
	st->summary.segments++;
	st->summary.torn += seg->verdict == RECOVER_TORN;
}

/*
 * A state record read in (worker, sequence): that segment must outlive
 * m's data, as at run time (store_reserve_state). The segment is added
 * once all its records are read, so the range waits here until then.
 */
static int rebuild_depend(struct rebuild *rb, const struct queue_message *m, uint32_t worker,
			  uint64_t sequence)
{
	if (rb->depend.worker != worker || rb->depend.sequence != sequence) {
		rb->depend.worker = worker;
		rb->depend.sequence = sequence;
		rb->depend.lo = rb->depend.hi = 0;
		rb->depend.ncross = 0;
	}
	if (worker != m->writer) {
		/* The message's data is in another writer's files (orphans):
		 * this segment waits for those. Out of memory, it would wait
		 * for nothing: refuse to start instead. */
		return store_cross_add(&rb->depend.cross, &rb->depend.ncross, &rb->depend.cross_cap,
				       m->writer, m->last_sequence);
	}
	if (rb->depend.lo == 0 || m->origin_sequence < rb->depend.lo)
		rb->depend.lo = m->origin_sequence;
	if (m->last_sequence > rb->depend.hi)
		rb->depend.hi = m->last_sequence;
	return 0;
}

/* The outcome rule of recover.h, on a known message. */
static void rebuild_apply(struct queue_message *m, enum record_type type, uint16_t recipient,
			  uint32_t attempts)
{
	if (type == RECORD_MESSAGE_DONE) {
		m->state = STORE_FINISHED;
		return;
	}
	if (recipient < m->nrcpt &&
	    recover_rcpt_apply(&m->rcpts[recipient].outcome, type, attempts))
		m->remaining--;
}

static int rebuild_rcpt_state(void *arg, enum record_type type, const struct record_rcpt_state *rs,
			      uint32_t worker, uint64_t sequence)
{
	struct rebuild *rb = arg;
	struct queue_message *m = rebuild_find(rb, rs->id);
	if (m == NULL)
		return recover_outcomes_keep(&rb->early, rs->id, type, rs->recipient, rs->attempts);
	int r = rebuild_depend(rb, m, worker, sequence);
	if (r == 0)
		rebuild_apply(m, type, rs->recipient, rs->attempts);
	return r;
}

static int rebuild_done(void *arg, const struct record_id *id, uint32_t worker, uint64_t sequence)
{
	struct rebuild *rb = arg;
	struct queue_message *m = rebuild_find(rb, id->id);
	if (m == NULL)
		return recover_outcomes_keep(&rb->early, id->id, RECORD_MESSAGE_DONE, 0, 0);
	int r = rebuild_depend(rb, m, worker, sequence);
	if (r == 0)
		rebuild_apply(m, RECORD_MESSAGE_DONE, 0, 0);
	return r;
}

/* Count what lives where, index it, and let go of what has finished;
 * the rest goes into its queue's id map. 0 or -ENOMEM. */
static int rebuild_settle(struct queue_store *st)
{
	for (uint32_t w = 0; w < st->cfg.workers; w++) {
		struct queue *q = &st->queues[w];
		struct queue_message *m, *next;
		list_for_each_entry_safe(m, next, &q->stored, link)
		{
			if (m->state == STORE_FINISHED || m->remaining == 0) {
				/* Finished before the restart: dead space. (Its node
				 * in the map of every message goes with that map.) */
				list_remove(&m->link);
				store_message_free(m);
				continue;
			}
			if (idmap_insert(&q->by_id, &m->id_link) != 0)
				return -ENOMEM;
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
	atomic_store(&st->messages, st->summary.messages);
	return 0;
}

int store_rebuild(struct queue_store *st, char *err, size_t err_size)
{
	struct rebuild rb = {.st = st};
	idmap_init(&rb.all, (ptrdiff_t)offsetof(struct queue_message, id) -
				    (ptrdiff_t)offsetof(struct queue_message, id_link));
	struct recover_hooks hooks = {
		.arg = &rb,
		.message = rebuild_message,
		.message_done = rebuild_done,
		.rcpt_state = rebuild_rcpt_state,
		.segment = rebuild_segment,
	};
	struct recover_stats stats;
	int r = recover_spool(st->dir_fd, st->quarantine_fd, false, &hooks, &stats);
	if (r == 0 && rb.incomplete)
		r = -ENOMEM;
	if (r == 0) {
		for (size_t i = 0; i < rb.early.count; i++) {
			const struct recover_outcome *e = &rb.early.items[i];
			struct queue_message *m = rebuild_find(&rb, e->id);
			if (m != NULL)
				rebuild_apply(m, e->type, e->recipient, e->attempts);
		}
		r = rebuild_settle(st);
		st->summary.corrupt = stats.corrupt;
		st->summary.bytes = stats.bytes;
	}
	if (r != 0) {
		snprintf(err, err_size, "recovering the spool %s: %s", st->spool_dir, strerror(-r));
	}
	idmap_free(&rb.all);
	free(rb.depend.cross);
	recover_outcomes_free(&rb.early);
	return r;
}
