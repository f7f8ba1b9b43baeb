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
 * Space: each worker counts, per segment it owns, the messages living in
 * it — stored ones, and ones still being received or committed, from
 * their first record on. A closed segment in which nothing lives is
 * deleted.
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

#define STORE_BODY_CHUNK    65536 /* body bytes per BODY record, at most */
#define STORE_BODY_DIRECT   8192  /* a write this big skips the pending buffer */
#define STORE_FREE_CHECK_MS 1000  /* statvfs at most this often per worker */
#define STORE_ROOM_MARGIN   65536 /* envelope and a typical body, when SIZE is not given */

enum store_message_state {
	STORE_STREAMING = 0, /* body arriving */
	STORE_COMMITTING,    /* COMMIT record waiting for its sync */
	STORE_STORED,        /* durable and indexed */
	STORE_FAILED,        /* lost to a poisoned segment; commit will fail */
};

struct store_extent {
	uint64_t sequence; /* the owner's segment */
	uint64_t offset;   /* of the bytes in the file */
	uint32_t len;
};

struct store_rcpt {
	struct index_entry entry; /* touched only by the shard's owner */
	struct queue_message *message;
	const char *address; /* into message->text */
	uint16_t len;
	uint16_t domain_offset;
	uint16_t index;
	bool finished; /* delivered or failed for good (owner's view) */
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
	uint32_t nchunks;
	/* The owner's segments from its first record to its last: each one
	 * counts the message in its `live` from the moment a record of the
	 * message is reserved in it (or lies between two that are), so no
	 * segment is deleted under a message still being received. */
	uint64_t first_sequence, last_sequence;
	struct commit_location envelope, commit; /* where those records went */
	char *text;                              /* sender, client, helo, params, rcpts */
	uint16_t sender_len;
	struct store_extent *extents;
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
	struct store_rcpt rcpts[];
};

struct store_segment {
	uint64_t sequence;
	uint64_t bytes; /* file size counted against max_bytes */
	uint64_t live;  /* messages (stored or being received) with records here */
	bool closed;    /* the writer is done with it */
};

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
	bool low_on_disk;
	/* Messages that failed without a sync to wait for (a limit, a lost
	 * segment): their committed() comes from a no-op's completion, on the
	 * loop, never from inside queue_message_commit(). */
	struct queue_message *failed;
	struct worker_op failed_op;
	bool failed_armed;
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
	struct queue_store_summary summary;
	/* During recovery only: stored messages by id, for the state records
	 * that name them (open addressing, power-of-two capacity). */
	struct queue_message **by_id;
	size_t by_id_cap, by_id_count;
};

/* ---- segments a worker owns ------------------------------------------- */

static struct store_segment *store_segment_find(struct queue *q, uint64_t sequence)
{
	size_t lo = 0, hi = q->nsegments;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (q->segments[mid].sequence < sequence)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < q->nsegments && q->segments[lo].sequence == sequence ? &q->segments[lo] : NULL;
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
	size_t at = q->nsegments;
	while (at > 0 && q->segments[at - 1].sequence > sequence)
		at--;
	memmove(&q->segments[at + 1], &q->segments[at], (q->nsegments - at) * sizeof(*q->segments));
	q->segments[at] = (struct store_segment){.sequence = sequence, .bytes = bytes};
	q->nsegments++;
	if (!reserved)
		atomic_fetch_add(&q->store->bytes, bytes);
	return &q->segments[at];
}

/* Delete a closed segment in which nothing lives any more. */
static void store_segment_maybe_delete(struct queue *q, struct store_segment *seg)
{
	if (!seg->closed || seg->live > 0)
		return;
	char name[SEGMENT_NAME_MAX];
	segment_name(name, q->index, seg->sequence);
	if (unlinkat(q->store->dir_fd, name, 0) != 0 && errno != ENOENT) {
		log_event(LOG_LEVEL_ERROR, "event=segment_delete_failed segment=%s error=\"%s\"",
			  name, strerror(errno));
		return;
	}
	log_event(LOG_LEVEL_DEBUG, "event=segment_deleted segment=%s", name);
	atomic_fetch_sub(&q->store->bytes, seg->bytes);
	size_t at = (size_t)(seg - q->segments);
	memmove(&q->segments[at], &q->segments[at + 1],
		(q->nsegments - at - 1) * sizeof(*q->segments));
	q->nsegments--;
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
		if (delta < 0)
			store_segment_maybe_delete(q, seg);
	}
}

static void store_segments_hold(struct queue *q, const struct queue_message *m, int delta)
{
	store_segments_hold_range(q, m, m->first_sequence, m->last_sequence, delta);
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

/* A message that will never be stored: out of its segments (which may go
 * now) and the count, then freed. */
static void store_message_drop(struct queue *q, struct queue_message *m)
{
	if (m->counted)
		atomic_fetch_sub(&q->store->messages, 1);
	store_segments_hold(q, m, -1);
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

static int store_message_add_extent(struct queue_message *m, struct commit_location loc,
				    uint32_t len)
{
	if (m->nextents == m->extents_cap) {
		uint32_t cap = m->extents_cap ? m->extents_cap * 2 : 1;
		struct store_extent *more = realloc(m->extents, cap * sizeof(*more));
		if (more == NULL)
			return -ENOMEM;
		m->extents = more;
		m->extents_cap = cap;
	}
	m->extents[m->nextents++] = (struct store_extent){
		.sequence = loc.sequence,
		.offset = loc.offset + RECORD_HEADER_SIZE + RECORD_ID_LEN + 4,
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
					  "event=index_transfer_failed queue_id=%s", m->id);
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

static void store_on_poison(void *arg, uint64_t sequence, uint64_t good_end)
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

/* A new segment would add its whole size to the spool: refuse one that
 * would cross max_bytes or eat into min_free_bytes. */
static int store_may_grow(void *arg, uint64_t size)
{
	struct queue *q = arg;
	struct queue_store *st = q->store;
	if (st->cfg.min_free_bytes != 0) {
		struct statvfs sv;
		if (statvfs(st->spool_dir, &sv) == 0 &&
		    (uint64_t)sv.f_bavail * sv.f_frsize < st->cfg.min_free_bytes + size)
			return -ENOSPC;
	}
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
	commit_writer_close(q->writer);
	q->writer = NULL;
	/* The writer's last segment is finished with: deletable if empty. */
	for (size_t i = q->nsegments; i > 0; i--) {
		q->segments[i - 1].closed = true;
		store_segment_maybe_delete(q, &q->segments[i - 1]);
	}
	q->worker = NULL;
}

unsigned queue_pending(const struct queue *q)
{
	/* Cross-worker transfers count too: a worker must not leave while
	 * recipients are on their way to it. */
	unsigned unsent = 0;
	for (uint32_t w = 0; q->outbox != NULL && w < q->store->cfg.workers; w++)
		unsent += q->outbox[w] != NULL;
	return q->pending + unsent + atomic_load(&q->store->xfers_in_flight) +
	       (q->writer != NULL && !commit_idle(q->writer));
}

void queue_flush(struct queue *q)
{
	store_send_outbox(q);
	commit_flush(q->writer);
}

int queue_check_space(struct queue *q, uint64_t size)
{
	struct queue_store *st = q->store;
	if (st->cfg.max_messages != 0 && atomic_load(&st->messages) >= st->cfg.max_messages)
		return -ENOSPC;
	if (st->cfg.max_bytes != 0) {
		/* Full when the message fits neither in what is left of the
		 * writer's segment nor in a new segment under the limit. */
		uint64_t need = size + STORE_ROOM_MARGIN;
		bool can_grow = atomic_load(&st->bytes) + st->cfg.segment_size <= st->cfg.max_bytes;
		if (!can_grow && (q->writer == NULL || commit_room(q->writer) < need))
			return -ENOSPC;
	}
	if (st->cfg.min_free_bytes != 0) {
		uint64_t now = q->worker != NULL ? q->worker->now_ms : worker_clock_ms();
		if (now - q->free_checked_ms >= STORE_FREE_CHECK_MS || q->free_checked_ms == 0) {
			struct statvfs sv;
			q->free_checked_ms = now;
			if (statvfs(st->spool_dir, &sv) == 0)
				q->low_on_disk = (uint64_t)sv.f_bavail * sv.f_frsize <
						 st->cfg.min_free_bytes + size;
		}
		if (q->low_on_disk)
			return -ENOSPC;
	}
	return 0;
}

/* 80 bits -> 16 Crockford base32 characters: seconds (34 bits), micro-
 * seconds (20), worker (8), counter (18). Sorts by arrival time. */
static void store_make_id(struct queue *q, char id[QUEUE_ID_LEN + 1])
{
	static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; /* in ASCII order */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t hi = ((uint64_t)ts.tv_sec & ((UINT64_C(1) << 34) - 1)) << 20 |
		      (uint64_t)(ts.tv_nsec / 1000);
	uint32_t lo = (q->index & 0xff) << 18 | (q->id_counter++ & 0x3ffff);
	unsigned __int128 v = ((unsigned __int128)hi << 26) | lo;
	for (int i = QUEUE_ID_LEN - 1; i >= 0; i--) {
		id[i] = alphabet[(unsigned)(v & 31)];
		v >>= 5;
	}
	id[QUEUE_ID_LEN] = '\0';
}

/* Reserve and encode one record; notes the segment in m. */
/* Reserve one record for m in q's writer and count m in the segments it
 * now reaches. NULL with *error set when no room can be had. */
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
	if (env->nrecipients == 0 || env->nrecipients + env->nparams > RECORD_MAX_STRINGS - 3)
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
	store_make_id(q, m->id);

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

/* Move `len` pending body bytes into one BODY record. */
/* One BODY record of data[0..len), encoded straight into the batch. */
static int store_emit_body(struct queue_message *m, const void *data, size_t len)
{
	struct queue *q = m->queue;
	struct record_body body = {
		.chunk = m->nchunks,
		.data = data,
		.len = (uint32_t)len,
	};
	memcpy(body.id, m->id, RECORD_ID_LEN);
	size_t size = record_size(RECORD_ID_LEN + 4 + len);
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
	m->nchunks++;
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
	if (len >= STORE_BODY_DIRECT) {
		/* A large piece goes from the caller's buffer straight into the
		 * batch, one copy rather than two; what was pending before it
		 * (the Received header, small pieces) goes first as its own. */
		if (store_emit_pending(m, 1) != 0)
			return m->error;
		const char *p = data;
		while (len >= STORE_BODY_DIRECT) {
			size_t n = len < STORE_BODY_CHUNK ? len : STORE_BODY_CHUNK;
			if (store_emit_body(m, p, n) != 0)
				return m->error;
			p += n;
			len -= n;
		}
		data = p;
	}
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
		store_stored_link(q, m);
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
	struct record_commit c = {.body_len = m->body_len, .nchunks = m->nchunks};
	memcpy(c.id, m->id, RECORD_ID_LEN);
	size_t size = record_size(RECORD_ID_LEN + 12);
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
	size_t size = record_size(RECORD_ID_LEN);
	uint64_t salt;
	struct commit_location loc;
	int error = 0;
	uint8_t *p = store_reserve_for(q, m, size, &salt, &loc, &error);
	if (p != NULL)
		record_encode_id(p, size, salt, RECORD_MESSAGE_DONE, &rid);
	else
		log_event(LOG_LEVEL_WARN,
			  "event=message_done_unrecorded queue_id=%s error=\"%s\" note=\"its "
			  "recipients' outcomes are recorded; it is dropped at the next start\"",
			  m->id, strerror(-error));
	log_event(LOG_LEVEL_INFO, "event=message_done queue_id=%s nrcpt=%u", m->id, m->nrcpt);
	store_stored_unlink(q, m);
	/* Its segments may go now: whatever a crash leaves of it can only be
	 * its own records, and those without the rest no longer make a
	 * message (or make one whose every recipient is recorded as ended). */
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
	struct record_rcpt_state rs = {
		.recipient = r->index,
		.time_ms = (int64_t)time(NULL) * 1000,
		.reason = {reason, (uint16_t)strnlen(reason, 255)},
	};
	memcpy(rs.id, m->id, RECORD_ID_LEN);
	enum record_type type =
		outcome == QUEUE_DELIVERED ? RECORD_RCPT_DELIVERED : RECORD_RCPT_FAILED;
	size_t size = record_size(RECORD_ID_LEN + 14 + 2 + rs.reason.len);
	uint64_t salt;
	struct commit_location loc;
	int error = 0;
	uint8_t *p = store_reserve_for(q, m, size, &salt, &loc, &error);
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

/* ---- recovery into the store ------------------------------------------- */

static int store_by_id_add(struct queue_store *st, struct queue_message *m);

static int store_recover_message(void *arg, const struct recover_message *rm)
{
	struct queue_store *st = arg;
	const struct record_envelope *env = rm->envelope;
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
	m->body_len = rm->body_len;
	m->nchunks = rm->nextents;
	m->first_sequence = rm->first_sequence;
	m->last_sequence = rm->last_sequence;
	if (rm->nextents > 0) {
		m->extents = malloc(rm->nextents * sizeof(*m->extents));
		if (m->extents == NULL) {
			store_message_free(m);
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < rm->nextents; i++)
			m->extents[i] = (struct store_extent){
				rm->extents[i].sequence, rm->extents[i].offset, rm->extents[i].len};
		m->nextents = m->extents_cap = rm->nextents;
	}
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
	if (seg->verdict == RECOVER_CORRUPT || seg->verdict == RECOVER_UNREADABLE)
		return; /* moved aside or untouched: not ours to count or delete */
	if (seg->worker != q->index)
		return; /* written by a worker number that no longer exists: left */
	struct store_segment *s = store_segment_add(q, seg->sequence, seg->file_size, false);
	if (s != NULL)
		s->closed = true; /* never appended to again */
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

/* A state record pins its segment as long as its message lives. */
static void store_recover_extend(struct queue_message *m, uint32_t worker, uint64_t sequence)
{
	if (worker == m->writer && sequence > m->last_sequence)
		m->last_sequence = sequence;
}

static int store_recover_state(void *arg, enum record_type type, const struct record_rcpt_state *rs,
			       uint32_t worker, uint64_t sequence)
{
	struct queue_store *st = arg;
	struct queue_message *m = store_by_id_find(st, rs->id);
	if (m == NULL || rs->recipient >= m->nrcpt)
		return 0; /* its message is gone (done, or never committed) */
	store_recover_extend(m, worker, sequence);
	struct store_rcpt *r = &m->rcpts[rs->recipient];
	if ((type == RECORD_RCPT_DELIVERED || type == RECORD_RCPT_FAILED) && !r->finished) {
		r->finished = true;
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
	if (m != NULL) {
		m->done = true;
		store_recover_extend(m, worker, sequence);
	}
	return 0;
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
			m->counted = true;
			store_index_message(q, m);
			st->summary.recipients += m->remaining;
			st->summary.messages++;
		}
		for (size_t i = q->nsegments; i > 0; i--)
			store_segment_maybe_delete(q, &q->segments[i - 1]);
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
		free(q->segments);
	}
	if (st->dir_fd >= 0)
		close(st->dir_fd);
	if (st->quarantine_fd >= 0)
		close(st->quarantine_fd);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	free(st->by_id);
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
