/*
 * report — the operator's views of the store (queue.h, "operator views"),
 * produced on the worker that owns what they show, for ferryctl through
 * the admin socket. Each keeps the loop turn short: a message is found
 * through its queue's id map, and a domain's recipients are listed a
 * bounded number per call.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "queue/segment.h"
#include "queue/store.h"

static const char *const report_state_names[INDEX_NSTATES] = {"ready", "deferred", "held",
							      "inflight"};
static const char *const report_outcome_names[] = {
	[RECOVER_RCPT_QUEUED] = "queued",
	[RECOVER_RCPT_DEFERRED] = "deferred",
	[RECOVER_RCPT_DELIVERED] = "delivered",
	[RECOVER_RCPT_FAILED] = "failed",
};

static const struct store_rcpt *report_rcpt_of(const struct index_entry *e)
{
	return container_of(e, struct store_rcpt, entry);
}

static void report_older(void *arg, struct index_entry *e)
{
	int64_t *oldest = arg;
	const struct store_rcpt *r = report_rcpt_of(e);
	if (r->message->arrival_ms < *oldest)
		*oldest = r->message->arrival_ms;
}

static int64_t report_oldest(const struct index_destination *d)
{
	int64_t oldest = INT64_MAX;
	index_foreach_entry(d, report_older, &oldest);
	return oldest == INT64_MAX ? 0 : oldest;
}

static bool report_destination(struct index_destination *d, void *arg)
{
	struct buf *out = arg;
	uint32_t total = 0;
	for (int st = 0; st < INDEX_NSTATES; st++)
		total += d->count[st];
	/* Recipients, not messages, are what a destination queues; a message
	 * with two recipients in one domain counts twice here. */
	buf_printf(out, "%s %u %u %u %u %u %lld\n", d->domain, total, d->count[INDEX_READY],
		   d->count[INDEX_DEFERRED], d->count[INDEX_HELD], d->count[INDEX_INFLIGHT],
		   (long long)report_oldest(d));
	return true;
}

void queue_report_destinations(struct queue *q, struct buf *out)
{
	struct queue_store *st = q->store;
	for (uint32_t i = 0; i < st->nshards; i++)
		if (st->shards[i].owner == q->index)
			index_foreach(&st->shards[i].index, report_destination, out);
}

/* The worker's monotonic clock and the wall clock, read once per call:
 * due times are monotonic, an operator reads wall-clock times. */
struct report_clock {
	uint64_t now_ms;
	int64_t wall_ms;
};

static struct report_clock report_clock_now(const struct queue *q)
{
	return (struct report_clock){store_now_ms(q), worker_wall_ms()};
}

static void report_rcpt(struct buf *out, const struct store_rcpt *r,
			const struct report_clock *clock)
{
	const struct queue_message *m = r->message;
	char sender[600], rcpt[600], reply[4 * STORE_REPLY_MAX + 8];
	if (m->sender_len == 0)
		snprintf(sender, sizeof(sender), "<>");
	else
		log_quote(sender, sizeof(sender), m->text, m->sender_len);
	log_quote(rcpt, sizeof(rcpt), r->address, r->len);
	const char *last = r->last_reply != NULL ? r->last_reply : "";
	log_quote(reply, sizeof(reply), last, strlen(last));
	long long next = 0;
	if (r->entry.state == INDEX_DEFERRED)
		next = clock->wall_ms + (r->entry.due_ms > clock->now_ms
						 ? (long long)(r->entry.due_ms - clock->now_ms)
						 : 0);
	/* Attempts and the last reply as this thread, the shard's owner,
	 * knows them (store.h): no other thread writes them. */
	/* Held by its queue id: a flush leaves it (sched.h, the marks). */
	const char *state = r->entry.state == INDEX_HELD && r->entry.mark == SCHED_MARK_HOLD
				    ? "held-id"
				    : report_state_names[r->entry.state];
	buf_printf(out, "%s %s %u %lld %llu %s %s %lld %s\n", m->id, state, r->attempts,
		   (long long)m->arrival_ms, (unsigned long long)m->body_len, sender, rcpt, next,
		   reply);
}

/*
 * The entry of list `state` at the cursor: where it stopped, when the
 * destination has not changed since; else found again by position (a
 * walk, paid only after a change).
 */
static struct index_entry *report_resume(const struct index_destination *d,
					 const struct queue_report_cursor *c)
{
	if (c->next != NULL && c->changes == d->changes)
		return (struct index_entry *)c->next;
	struct index_entry *e = index_first(d, (enum index_state)c->state);
	for (size_t i = 0; e != NULL && i < c->position; i++)
		e = index_next(e);
	return e;
}

int queue_report_domain(struct queue *q, const char *domain, size_t len,
			struct queue_report_cursor *c, size_t max, struct buf *out)
{
	struct queue_store *st = q->store;
	uint32_t shard = index_shard_for(index_domain_hash(domain, len), st->nshards);
	if (st->shards[shard].owner != q->index)
		return 0;
	struct index_destination *d = index_find(&st->shards[shard].index, domain, len);
	struct report_clock clock = report_clock_now(q);
	size_t listed = 0;
	for (; d != NULL && c->state < INDEX_NSTATES; c->state++, c->position = 0, c->next = NULL) {
		if (c->state == INDEX_DEFERRED) {
			/* A heap has no order to walk: by position in its array. */
			for (; c->position < d->count[INDEX_DEFERRED]; c->position++) {
				if (listed++ == max)
					return 1;
				report_rcpt(out, report_rcpt_of(d->heap[c->position]), &clock);
			}
			continue;
		}
		for (struct index_entry *e = report_resume(d, c); e != NULL;
		     e = index_next(e), c->position++) {
			if (listed++ == max) {
				c->next = e;
				c->changes = d->changes;
				return 1;
			}
			report_rcpt(out, report_rcpt_of(e), &clock);
		}
	}
	return 0;
}

static void report_strings(struct buf *out, const struct queue_message *m)
{
	char quoted[600];
	const char *p = m->text;
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
	/* Each recipient as the journal (this thread, the owner) knows it:
	 * its live state (ready, held, in flight) is its shard owner's, on
	 * another thread, and `list DOMAIN` shows that. */
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct store_rcpt *r = &m->rcpts[i];
		const char *reply = r->journal_reply != NULL ? r->journal_reply : "";
		char quoted_reply[4 * STORE_REPLY_MAX + 8];
		buf_printf(out, "rcpt %s %s %u %s\n",
			   log_quote(quoted, sizeof(quoted), r->address, r->len),
			   report_outcome_names[r->outcome.state], r->outcome.attempts,
			   log_quote(quoted_reply, sizeof(quoted_reply), reply, strlen(reply)));
	}
}

/* The message of this queue with queue id `id`, or NULL. */
static const struct queue_message *report_message_of(struct queue *q, const char *id)
{
	if (strlen(id) != QUEUE_ID_LEN)
		return NULL;
	struct idmap_node *node = idmap_find(&q->by_id, id);
	return node != NULL ? container_of(node, struct queue_message, id_link) : NULL;
}

int queue_report_message(struct queue *q, const char *id, struct buf *out)
{
	const struct queue_message *m = report_message_of(q, id);
	if (m == NULL)
		return 0;
	buf_printf(out, "id %s\narrival %lld\nsize %llu\n", m->id, (long long)m->arrival_ms,
		   (unsigned long long)m->body_len);
	report_strings(out, m);
	for (uint32_t i = 0; i < m->nextents; i++) {
		char name[SEGMENT_NAME_MAX];
		segment_name(name, m->writer, m->extents[i].sequence);
		buf_printf(out, "body %s %llu %u\n", name, (unsigned long long)m->extents[i].offset,
			   m->extents[i].len);
	}
	return 1;
}

int queue_report_message_domains(struct queue *q, const char *id, struct buf *out)
{
	const struct queue_message *m = report_message_of(q, id);
	if (m == NULL)
		return 0;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct store_rcpt *r = &m->rcpts[i];
		if (recover_rcpt_ended(r->outcome.state))
			continue;
		size_t len;
		const char *domain = store_rcpt_domain(r, &len);
		bool seen = len == 0;
		for (uint32_t k = 0; k < i && !seen; k++) {
			size_t klen;
			const char *other = store_rcpt_domain(&m->rcpts[k], &klen);
			seen = !recover_rcpt_ended(m->rcpts[k].outcome.state) && klen == len &&
			       strncasecmp(other, domain, len) == 0;
		}
		if (!seen) {
			buf_append(out, domain, len);
			buf_append(out, "", 1);
		}
	}
	return 1;
}
