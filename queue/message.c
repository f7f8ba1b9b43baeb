/*
 * message — a message's life in the store (store.h has its states):
 * begun with its envelope, its body gathered into BODY records, committed,
 * durable (STORED) or failed, then its recipients' outcomes journaled
 * until the last one finishes it.
 *
 * The promise of queue.h is kept here: committed(0) is called only from
 * the completion of the sync that covers the message's COMMIT record,
 * never from inside the call that asked for it; a message that lost a
 * record to a poisoned segment never gets it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/array.h"
#include "core/check.h"
#include "core/log.h"
#include "queue/record.h"
#include "queue/store.h"

_Static_assert(QUEUE_MAX_ENVELOPE_ITEMS <= RECORD_MAX_STRINGS, "an envelope record holds them all");

/* ---- the struct ------------------------------------------------------------ */

static uint16_t store_domain_offset(const char *address, size_t len)
{
	for (size_t i = len; i > 0; i--)
		if (address[i - 1] == '@')
			return (uint16_t)i;
	return (uint16_t)len;
}

struct queue_message *store_message_new(uint32_t nrcpt, const char *const *strings,
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
	size_t first_rcpt = nstrings - nrcpt; /* recipients are the last nrcpt */
	for (size_t i = 0; i < nstrings; i++) {
		memcpy(p, strings[i], lens[i]);
		p[lens[i]] = '\0';
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
	m->nrcpt = nrcpt;
	m->remaining = nrcpt;
	list_node_init(&m->link);
	list_node_init(&m->segment_link);
	return m;
}

void store_reply_set(char **slot, const char *reason)
{
	free(*slot);
	*slot = reason[0] != '\0' ? strndup(reason, STORE_REPLY_MAX) : NULL;
}

void store_message_free(struct queue_message *m)
{
	/* A reader unpins before it reports the outcome that may end it. */
	CHECK(atomic_load(&m->pins) == 0);
	/* Every recipient left its index first (or every worker stopped):
	 * no shard owner still uses its last_reply. */
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		free(m->rcpts[i].last_reply);
		free(m->rcpts[i].journal_reply);
	}
	buf_release(&m->pending);
	free(m->extents);
	free(m->text);
	free(m);
}

void store_message_drop(struct queue *q, struct queue_message *m)
{
	if (m->counted)
		atomic_fetch_sub(&q->store->messages, 1);
	m->counted = false;
	store_segments_hold(q, m, -1);
	if (m->copying) {
		m->state = STORE_FINISHED; /* the copy job's end frees it */
		return;
	}
	store_message_free(m);
}

int store_message_stored(struct queue *q, struct queue_message *m)
{
	list_insert_tail(&q->stored, &m->link);
	return idmap_insert(&q->by_id, &m->id_link);
}

void store_message_unstored(struct queue *q, struct queue_message *m)
{
	list_remove(&m->link);
	idmap_remove(&q->by_id, &m->id_link);
}

/*
 * A stored message of the owner's own writer takes its place in its
 * segments: listed in the segment of its first record (where compaction
 * looks for it) and weighed in the live bytes of each segment it spans.
 */
void store_message_place(struct queue *q, struct queue_message *m)
{
	if (m->writer != q->index || m->first_sequence == 0 || list_linked(&m->segment_link))
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
	list_insert_head(&first->messages, &m->segment_link);
	if (m->last_sequence - m->first_sequence > q->max_span)
		q->max_span = m->last_sequence - m->first_sequence;
}

void store_message_unplace(struct queue *q, struct queue_message *m)
{
	if (!list_linked(&m->segment_link))
		return;
	for (uint64_t s = m->first_sequence; s <= m->last_sequence; s++) {
		struct store_segment *seg = store_segment_find(q, s);
		if (seg != NULL) {
			seg->live_bytes -= m->weight;
			seg->placed--;
		}
	}
	list_remove(&m->segment_link);
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

/* ---- records ------------------------------------------------------------------- */

uint8_t *store_reserve_data(struct queue *q, struct queue_message *m, size_t size, uint64_t *salt,
			    struct commit_location *loc, int *error)
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
 * A record of state does not widen m's own segments; instead the segment
 * it lands in must outlive m's data (store_segment_depend). A message from
 * another writer's files (a worker number that no longer runs) cannot be
 * ordered that way: the segment waits for that writer's files instead.
 */
uint8_t *store_reserve_state(struct queue *q, struct queue_message *m, size_t size, uint64_t *salt,
			     struct commit_location *loc, int *error)
{
	uint8_t *p = commit_reserve(q->writer, size, salt, loc, error);
	if (p == NULL)
		return NULL;
	if (m->writer == q->index) {
		/* Older copies whose segments are all gone no longer matter. */
		if (m->origin_sequence < m->first_sequence) {
			size_t at = store_segment_lower_bound(q, m->origin_sequence);
			if (at >= q->nsegments || q->segments[at]->sequence >= m->first_sequence)
				m->origin_sequence = m->first_sequence;
		}
		store_segment_depend(q, loc->sequence, m->origin_sequence, m->last_sequence);
	} else {
		struct store_segment *seg = store_segment_find(q, loc->sequence);
		if (seg != NULL && store_cross_add(&seg->cross, &seg->ncross, &seg->cross_cap,
						   m->writer, m->last_sequence) != 0)
			seg->pinned = true; /* cannot say what it waits for: keep it */
	}
	return p;
}

/* A record of a message being received: failing to reserve breaks it. */
static uint8_t *store_reserve_received(struct queue *q, struct queue_message *m, size_t size,
				       uint64_t *salt, struct commit_location *loc)
{
	int error = 0;
	uint8_t *p = store_reserve_data(q, m, size, salt, loc, &error);
	if (p == NULL) {
		m->state = STORE_BROKEN;
		m->error = error;
	}
	return p;
}

/* ---- queue.h: begin, write, commit, abort ------------------------------------------ */

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
	uint8_t *p = store_reserve_received(q, m, size, &salt, &loc);
	if (p == NULL) {
		int e = m->error;
		store_message_free(m);
		return e;
	}
	record_encode_envelope(p, size, salt, &renv, rs);
	m->envelope = loc;
	q->pending++;
	list_insert_tail(&q->unstored, &m->link);
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
	uint8_t *p = store_reserve_received(q, m, size, &salt, &loc);
	if (p == NULL)
		return m->error;
	record_encode_body(p, size, salt, &body);
	if (array_reserve(m->extents, m->extents_cap, (size_t)m->nextents + 1) != 0) {
		m->state = STORE_BROKEN;
		m->error = -ENOMEM;
		return -ENOMEM;
	}
	m->extents[m->nextents++] = (struct queue_extent){
		.sequence = loc.sequence,
		.offset = loc.offset + RECORD_BODY_DATA_OFFSET,
		.len = (uint32_t)len,
	};
	m->body_len += len;
	return 0;
}

/* BODY records for what is pending, in chunks of at most STORE_BODY_CHUNK
 * while at least `min` bytes are pending. */
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
	CHECK(m->state == STORE_STREAMING || m->state == STORE_BROKEN);
	if (m->state == STORE_BROKEN)
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

/* The sync covering m's COMMIT completed (status 0) or failed, or m
 * failed without one (store_failed_complete): tell its session. */
static void store_committed(struct commit_waiter *w, int status)
{
	struct queue_message *m = container_of(w, struct queue_message, waiter);
	struct queue *q = m->queue;
	struct queue_client *client = m->client;
	list_remove(&m->link);
	q->pending--;
	if (status == 0 && m->state == STORE_COMMITTING) {
		/* Its segments already count it (store_reserve_data), and so
		 * does store->messages (queue_message_commit). */
		m->state = STORE_STORED;
		m->origin_sequence = m->first_sequence;
		if (store_message_stored(q, m) != 0)
			log_event(LOG_LEVEL_ERROR,
				  "event=id_map_failed queue_id=%s note=\"out of memory; the "
				  "message is queued, ferryctl show cannot find it\"",
				  m->id);
		store_message_place(q, m);
		store_index_message(q, m);
		if (client != NULL)
			client->committed(client, 0);
		return;
	}
	/* What made the message fail says more than the batch it waited in
	 * (-ENOSPC is a 452, not a 451). */
	if (m->error != 0)
		status = m->error;
	else if (status == 0)
		status = -EIO;
	if (client != NULL)
		client->committed(client, status);
	store_message_drop(q, m);
}

static void store_failed_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct queue *q = container_of(op, struct queue, failed_op);
	(void)cqe;
	q->failed_armed = false;
	/* Oldest first; each leaves the list in store_committed(). */
	struct list_node *first;
	while ((first = list_first(&q->failed)) != NULL) {
		struct queue_message *m = container_of(first, struct queue_message, link);
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
	m->state = STORE_FAILING;
	if (m->error == 0)
		m->error = -EIO;
	list_remove(&m->link);
	list_insert_tail(&q->failed, &m->link);
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
	CHECK(m->state == STORE_STREAMING || m->state == STORE_BROKEN);
	struct queue *q = m->queue;
	struct queue_store *st = q->store;
	m->waiter.done = store_committed;
	m->paused = false;
	if (m->state == STORE_BROKEN) {
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
	uint8_t *p = store_reserve_received(q, m, size, &salt, &loc);
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
	/* After its commit the message is the store's: its session may only
	 * detach from it. */
	CHECK(m->state == STORE_STREAMING || m->state == STORE_BROKEN);
	struct queue *q = m->queue;
	/* Its records stay behind as dead space: without a COMMIT they are
	 * never read back. Its segments no longer count it. */
	list_remove(&m->link);
	q->pending--;
	store_message_drop(q, m);
}

void queue_message_detach(struct queue_message *m)
{
	CHECK(m->state == STORE_COMMITTING || m->state == STORE_FAILING);
	m->client = NULL;
}

/* ---- the writer's hooks about batches ------------------------------------------------ */

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

void store_on_poison(void *arg, uint64_t sequence, uint64_t good_end, bool cut)
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
	struct queue_message *m;
	list_for_each_entry(m, &q->unstored, link)
	{
		if ((m->state == STORE_STREAMING || m->state == STORE_COMMITTING) &&
		    store_message_lost(m, sequence, good_end)) {
			/* A committing one still waits in its batch, which
			 * reports the failure (store_committed). */
			m->state = m->state == STORE_STREAMING ? STORE_BROKEN : STORE_FAILING;
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

void store_on_drain(void *arg)
{
	struct queue *q = arg;
	struct queue_message *m, *next;
	list_for_each_entry_safe(m, next, &q->unstored, link)
	{
		/* A paused message that broke meanwhile (a poisoned segment) is
		 * resumed too: its session learns of the failure from its next
		 * write() instead of sitting out its DATA timeout. */
		if (m->paused && (m->state == STORE_STREAMING || m->state == STORE_BROKEN)) {
			m->paused = false;
			if (m->client != NULL)
				m->client->resume(m->client);
		}
	}
}

/* ---- outcomes ------------------------------------------------------------------------------ */

/* The message's last recipient ended: it is dead space from now on. */
static void store_message_finish(struct queue *q, struct queue_message *m)
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
	store_message_unstored(q, m);
	m->state = STORE_FINISHED;
	if (m->writer != q->index)
		store_orphan_done(q, m);
	/* Its segments may go now. The segment holding MESSAGE_DONE (or, when
	 * that could not be written, its outcomes) stays until they have:
	 * store_reserve_state made it depend on them. */
	store_message_drop(q, m);
}

void store_rcpt_journal(struct queue *q, struct store_rcpt *r, enum record_type type,
			const char *reason, int64_t next_attempt_ms, bool attempted)
{
	struct queue_message *m = r->message;
	CHECK(m->state == STORE_STORED);
	if (recover_rcpt_ended(r->outcome.state))
		return; /* a late word on a recipient that has ended */
	/* Every outcome is the end of one more attempt, but an operator's. */
	bool ended = recover_rcpt_apply(&r->outcome, type, r->outcome.attempts + attempted);
	store_reply_set(&r->journal_reply, reason);
	struct record_rcpt_state rs = {
		.recipient = r->index,
		.attempts = r->outcome.attempts,
		.time_ms = type == RECORD_RCPT_DEFERRED ? next_attempt_ms : worker_wall_ms(),
		.reason = {reason, (uint16_t)strnlen(reason, 255)},
	};
	memcpy(rs.id, m->id, RECORD_ID_LEN);
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
	if (ended && --m->remaining == 0)
		store_message_finish(q, m);
}
