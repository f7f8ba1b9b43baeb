/*
 * sched — recipients in their shards (sched.h has their states and
 * moves): handed to the shard's owner once their message is durable, and
 * moved there by delivery; outcomes sent back to the message's owner,
 * which journals them (message.c).
 *
 * Between workers: recipients for another worker's shards are gathered in
 * an outbox per target during a loop turn and sent as one cross-worker
 * message per target per turn; outcomes go back to the messages' owners
 * the same way, a turn's worth per owner in one message.
 * store->xfers_in_flight counts both, so that no worker leaves its loop
 * while something is on its way to it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/array.h"
#include "core/check.h"
#include "core/log.h"
#include "queue/store.h"

/* ---- durable recipients to their shards -------------------------------------- */

static uint32_t store_shard_of(const struct queue_store *st, const struct store_rcpt *r)
{
	size_t len;
	const char *domain = store_rcpt_domain(r, &len);
	return index_shard_for(index_domain_hash(domain, len), st->nshards);
}

/* Into its shard, on the shard's owner (q; NULL before the workers run,
 * when no hook is set): HELD when delivery says its domain is held, else
 * READY, and delivery hears of a destination that has READY work anew. */
static void store_index_rcpt(struct queue_store *st, struct queue *q, struct store_rcpt *r)
{
	struct store_shard *shard = &st->shards[r->shard];
	size_t len;
	const char *domain = store_rcpt_domain(r, &len);
	const struct sched_hooks *hooks = q != NULL ? &q->hooks : NULL;
	bool held = hooks != NULL && hooks->held != NULL && hooks->held(hooks->arg, domain, len);
	r->attempts = r->outcome.attempts;
	if (index_insert(&shard->index, domain, len, &r->entry, held ? INDEX_HELD : INDEX_READY,
			 0) != 0) {
		log_event(LOG_LEVEL_ERROR,
			  "event=index_insert_failed queue_id=%s rcpt=%u note=\"out of memory; the "
			  "recipient stays on disk and returns at the next start\"",
			  r->message->id, r->index);
		return;
	}
	if (!held && hooks != NULL && hooks->ready != NULL &&
	    r->entry.dest->count[INDEX_READY] == 1)
		hooks->ready(hooks->arg, domain, len);
	if (hooks != NULL && hooks->queued != NULL)
		hooks->queued(hooks->arg, (const struct queue_rcpt *)r);
}

static void store_xfer_free(struct store_xfer *x)
{
	free(x->rcpts);
	free(x);
}

static void store_xfer_handle(struct xmsg *msg)
{
	struct store_xfer *x = container_of(msg, struct store_xfer, link);
	struct queue_store *st = x->target->store;
	for (size_t i = 0; i < x->count; i++)
		store_index_rcpt(st, x->target, x->rcpts[i]);
	atomic_fetch_sub(&st->xfers_in_flight, 1);
	store_xfer_free(x);
}

/* Room for one more recipient in the outbox for worker `owner`. */
static struct store_xfer *store_outbox_for(struct queue *q, uint32_t owner)
{
	struct store_xfer *x = q->outbox[owner];
	if (x == NULL) {
		x = calloc(1, sizeof(*x));
		if (x == NULL)
			return NULL;
		x->target = &q->store->queues[owner];
		q->outbox[owner] = x;
	}
	return array_reserve(x->rcpts, x->cap, x->count + 1) == 0 ? x : NULL;
}

void store_index_message(struct queue *q, struct queue_message *m)
{
	struct queue_store *st = q->store;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct store_rcpt *r = &m->rcpts[i];
		if (recover_rcpt_ended(r->outcome.state))
			continue; /* recovery found its outcome */
		r->shard = store_shard_of(st, r);
		uint32_t owner = st->shards[r->shard].owner;
		if (owner == q->index || q->worker == NULL) {
			store_index_rcpt(st, q->worker != NULL ? q : NULL, r);
			continue;
		}
		struct store_xfer *x = store_outbox_for(q, owner);
		if (x == NULL) {
			log_event(LOG_LEVEL_ERROR,
				  "event=index_transfer_failed queue_id=%s rcpt=%u note=\"out of "
				  "memory; the recipient stays on disk and returns at the next "
				  "start\"",
				  m->id, r->index);
			continue;
		}
		x->rcpts[x->count++] = r;
	}
}

static void sched_outcomes_handle(struct xmsg *msg);

void store_send_outbox(struct queue *q)
{
	struct queue_store *st = q->store;
	for (uint32_t w = 0; w < st->cfg.workers; w++) {
		struct store_xfer *x = q->outbox[w];
		if (x != NULL) {
			q->outbox[w] = NULL;
			atomic_fetch_add(&st->xfers_in_flight, 1);
			worker_send(st->queues[w].worker, &x->link, store_xfer_handle);
		}
		struct store_outcomes *batch = q->outcomes[w];
		if (batch != NULL && batch->count > 0) {
			q->outcomes[w] = NULL;
			atomic_fetch_add(&st->xfers_in_flight, 1);
			worker_send(st->queues[w].worker, &batch->link, sched_outcomes_handle);
		}
	}
}

unsigned store_outbox_pending(const struct queue *q)
{
	unsigned unsent = 0;
	for (uint32_t w = 0; q->outbox != NULL && w < q->store->cfg.workers; w++)
		unsent += q->outbox[w] != NULL ||
			  (q->outcomes[w] != NULL && q->outcomes[w]->count > 0);
	return unsent;
}

void store_outbox_free(struct queue *q)
{
	for (uint32_t w = 0; q->outbox != NULL && w < q->store->cfg.workers; w++) {
		if (q->outbox[w] != NULL)
			store_xfer_free(q->outbox[w]);
		if (q->outcomes[w] != NULL) {
			free(q->outcomes[w]->items);
			free(q->outcomes[w]);
		}
	}
	free(q->outbox);
	free(q->outcomes);
	q->outbox = NULL;
	q->outcomes = NULL;
}

/* ---- sched.h: moves on the shard's owner ------------------------------------------ */

static struct store_rcpt *store_rcpt_of(struct queue_rcpt *r)
{
	return (struct store_rcpt *)r;
}

/* The destination of `domain` in q's shards; NULL when q does not own
 * its shard or nothing is queued for it. */
static struct index_destination *sched_destination(struct queue *q, const char *domain, size_t len)
{
	struct queue_store *st = q->store;
	uint32_t shard = index_shard_for(index_domain_hash(domain, len), st->nshards);
	if (st->shards[shard].owner != q->index)
		return NULL;
	return index_find(&st->shards[shard].index, domain, len);
}

size_t sched_take_ready(struct queue *q, const char *domain, size_t len, struct queue_rcpt **out,
			size_t max)
{
	struct index_destination *d = sched_destination(q, domain, len);
	size_t n = 0;
	while (d != NULL && n < max) {
		struct index_entry *e = index_first(d, INDEX_READY);
		if (e == NULL)
			break;
		index_move(e, INDEX_INFLIGHT, 0);
		out[n++] = (struct queue_rcpt *)container_of(e, struct store_rcpt, entry);
	}
	return n;
}

size_t sched_take_message(struct queue *q, const char *domain, size_t len, struct queue_rcpt **out,
			  size_t max)
{
	struct index_destination *d = sched_destination(q, domain, len);
	size_t n = 0;
	const struct queue_message *m = NULL;
	while (d != NULL && n < max) {
		struct index_entry *e = index_first(d, INDEX_READY);
		if (e == NULL)
			break;
		struct store_rcpt *r = container_of(e, struct store_rcpt, entry);
		if (m != NULL && r->message != m)
			break;
		m = r->message;
		index_move(e, INDEX_INFLIGHT, 0);
		out[n++] = (struct queue_rcpt *)r;
	}
	return n;
}

size_t sched_take_siblings(struct queue *q, const struct queue_rcpt *qr, sched_accept_fn *accept,
			   void *arg, struct queue_rcpt **out, size_t max)
{
	const struct store_rcpt *r = (const struct store_rcpt *)qr;
	const struct queue_message *m = r->message;
	struct queue_store *st = q->store;
	size_t len, n = 0;
	const char *domain = store_rcpt_domain(r, &len);
	for (uint32_t i = 0; i < m->nrcpt && n < max; i++) {
		struct store_rcpt *o = (struct store_rcpt *)&m->rcpts[i];
		/* Only recipients of this worker's shards are looked at: their
		 * shard was set before they were handed over, and their entry
		 * is ours. (An ended one was never indexed: no dest.) The
		 * integer checks first: most messages have one domain. */
		if (st->shards[o->shard].owner != q->index || o->entry.dest == NULL ||
		    o->entry.state != INDEX_READY)
			continue;
		size_t olen;
		const char *odomain = store_rcpt_domain(o, &olen);
		if ((olen == len && strncasecmp(odomain, domain, len) == 0) ||
		    !accept(arg, odomain, olen))
			continue; /* r's own domain (what was left of it is not a rider) */
		index_move(&o->entry, INDEX_INFLIGHT, 0);
		out[n++] = (struct queue_rcpt *)o;
	}
	return n;
}

const char *sched_rcpt_address(const struct queue_rcpt *qr, size_t *len)
{
	const struct store_rcpt *r = (const struct store_rcpt *)qr;
	*len = r->len;
	return r->address;
}

const char *sched_rcpt_domain(const struct queue_rcpt *qr, size_t *len)
{
	return store_rcpt_domain((const struct store_rcpt *)qr, len);
}

const char *sched_rcpt_message_id(const struct queue_rcpt *qr)
{
	return ((const struct store_rcpt *)qr)->message->id;
}

/* Outcomes, from the shard's worker to the messages' owner, a turn's
 * worth in one cross-worker message. */
static void sched_outcomes_handle(struct xmsg *msg)
{
	struct store_outcomes *batch = container_of(msg, struct store_outcomes, link);
	struct queue_store *st = NULL;
	for (size_t i = 0; i < batch->count; i++) {
		struct store_outcome *o = &batch->items[i];
		struct queue *owner = o->rcpt->message->queue;
		st = owner->store;
		/* The message may be freed inside: its last recipient ends it. */
		store_rcpt_journal(owner, o->rcpt, o->type, o->reason, o->next_attempt_ms,
				   o->attempted);
	}
	if (st != NULL)
		atomic_fetch_sub(&st->xfers_in_flight, 1);
	free(batch->items);
	free(batch);
}

/* Journal an outcome on the message's owner: here, or gathered for it. */
static void sched_journal(struct queue *q, struct store_rcpt *r, enum record_type type,
			  bool attempted, const char *reason, int64_t next_attempt_ms)
{
	struct queue *owner = r->message->queue;
	if (reason == NULL)
		reason = "";
	if (owner == q || owner->worker == NULL) {
		store_rcpt_journal(owner, r, type, reason, next_attempt_ms, attempted);
		return;
	}
	struct store_outcomes *batch = q->outcomes[owner->index];
	if (batch == NULL)
		batch = q->outcomes[owner->index] = calloc(1, sizeof(*batch));
	if (batch == NULL || array_reserve(batch->items, batch->cap, batch->count + 1) != 0) {
		log_event(LOG_LEVEL_ERROR,
			  "event=outcome_lost queue_id=%s rcpt=%u note=\"out of memory; tried "
			  "again after a restart\"",
			  r->message->id, r->index);
		return;
	}
	struct store_outcome *o = &batch->items[batch->count++];
	o->rcpt = r;
	o->type = type;
	o->attempted = attempted;
	o->next_attempt_ms = next_attempt_ms;
	snprintf(o->reason, sizeof(o->reason), "%s", reason);
}

void sched_finish(struct queue *q, struct queue_rcpt *qr, enum queue_outcome outcome,
		  const char *reason)
{
	struct store_rcpt *r = store_rcpt_of(qr);
	CHECK(r->entry.dest != NULL && r->entry.state == INDEX_INFLIGHT);
	if (q->hooks.leaving != NULL)
		q->hooks.leaving(q->hooks.arg, qr);
	index_remove(&q->store->shards[r->shard].index, &r->entry);
	/* Before the outcome goes to the owner, which may free the message. */
	free(r->last_reply);
	r->last_reply = NULL;
	sched_journal(q, r, outcome == QUEUE_DELIVERED ? RECORD_RCPT_DELIVERED : RECORD_RCPT_FAILED,
		      outcome != QUEUE_REMOVED, reason, 0);
}

/*
 * An INFLIGHT r's attempt ends without an outcome (deferred, handed back)
 * and an operator wants it ended: the `ending` hook takes it, still
 * INFLIGHT. True when it did (r may be gone).
 */
static bool sched_operator_ends(struct queue *q, struct store_rcpt *r)
{
	enum sched_mark mark = (enum sched_mark)r->entry.mark;
	if (mark != SCHED_MARK_DELETE && mark != SCHED_MARK_BOUNCE)
		return false;
	r->entry.mark = SCHED_MARK_NONE;
	if (q->hooks.ending == NULL)
		return false;
	q->hooks.ending(q->hooks.arg, (struct queue_rcpt *)r, mark);
	return true;
}

void sched_defer(struct queue *q, struct queue_rcpt *qr, uint64_t until_ms, const char *reason)
{
	struct store_rcpt *r = store_rcpt_of(qr);
	CHECK(r->entry.dest != NULL && r->entry.state == INDEX_INFLIGHT);
	if (sched_operator_ends(q, r))
		return;
	/* Held by its queue id meanwhile: it waits for its release. */
	if (r->entry.mark == SCHED_MARK_HOLD)
		index_move(&r->entry, INDEX_HELD, 0);
	else
		index_move(&r->entry, INDEX_DEFERRED, until_ms);
	r->attempts++;
	store_reply_set(&r->last_reply, reason != NULL ? reason : "");
	/* The journal keeps the wall-clock time of the next attempt. */
	uint64_t now = store_now_ms(q);
	int64_t next = worker_wall_ms() + (until_ms > now ? (int64_t)(until_ms - now) : 0);
	sched_journal(q, r, RECORD_RCPT_DEFERRED, true, reason, next);
}

void sched_return(struct queue *q, struct queue_rcpt *qr)
{
	struct store_rcpt *r = store_rcpt_of(qr);
	CHECK(r->entry.dest != NULL && r->entry.state == INDEX_INFLIGHT);
	if (sched_operator_ends(q, r))
		return;
	index_move(&r->entry, r->entry.mark == SCHED_MARK_HOLD ? INDEX_HELD : INDEX_READY, 0);
}

unsigned sched_release_due(struct queue *q, const char *domain, size_t len, uint64_t now_ms)
{
	struct index_destination *d = sched_destination(q, domain, len);
	return d != NULL ? index_release_due(d, now_ms) : 0;
}

unsigned sched_flush(struct queue *q, const char *domain, size_t len)
{
	struct index_destination *d = sched_destination(q, domain, len);
	return d != NULL ? index_flush(d) : 0;
}

/* ---- for delivery ------------------------------------------------------------ */

/* A MAIL parameter, case-insensitively, as a whole word or key=value. */
static bool sched_param_is(const char *param, const char *want)
{
	return strcasecmp(param, want) == 0;
}

void sched_rcpt_message(const struct queue_rcpt *qr, struct sched_message *out)
{
	const struct store_rcpt *r = (const struct store_rcpt *)qr;
	const struct queue_message *m = r->message;
	*out = (struct sched_message){
		.id = m->id,
		.sender = m->text,
		.sender_len = m->sender_len,
		.size = m->body_len,
		.arrival_ms = m->arrival_ms,
		.message = m,
	};
	/* The text holds sender, client, helo, the parameters, then the
	 * recipients, each NUL-terminated; the first recipient's address
	 * marks where the parameters stop. */
	const char *p = m->text;
	for (int skip = 0; skip < 3; skip++)
		p += strlen(p) + 1;
	for (; p < m->rcpts[0].address; p += strlen(p) + 1) {
		if (sched_param_is(p, "BODY=8BITMIME"))
			out->eightbit = true;
		else if (sched_param_is(p, "SMTPUTF8"))
			out->smtputf8 = true;
	}
}

uint32_t sched_rcpt_attempts(const struct queue_rcpt *qr)
{
	return ((const struct store_rcpt *)qr)->attempts;
}

void sched_set_hooks(struct queue *q, const struct sched_hooks *hooks)
{
	q->hooks = hooks != NULL ? *hooks : (struct sched_hooks){0};
}

static void sched_fill_counts(const struct index_destination *d, struct sched_counts *out)
{
	*out = (struct sched_counts){
		.ready = d->count[INDEX_READY],
		.deferred = d->count[INDEX_DEFERRED],
		.held = d->count[INDEX_HELD],
		.inflight = d->count[INDEX_INFLIGHT],
		.next_due_ms = index_next_due(d),
	};
}

struct sched_visit {
	sched_visit_fn *fn;
	void *arg;
};

static bool sched_visit_one(struct index_destination *d, void *arg)
{
	struct sched_visit *v = arg;
	struct sched_counts counts;
	sched_fill_counts(d, &counts);
	return v->fn(v->arg, d->domain, d->len, &counts);
}

void sched_foreach(struct queue *q, sched_visit_fn *fn, void *arg)
{
	struct queue_store *st = q->store;
	struct sched_visit v = {fn, arg};
	for (uint32_t s = 0; s < st->nshards; s++)
		if (st->shards[s].owner == q->index)
			index_foreach(&st->shards[s].index, sched_visit_one, &v);
}

bool sched_counts(struct queue *q, const char *domain, size_t len, struct sched_counts *out)
{
	struct index_destination *d = sched_destination(q, domain, len);
	if (d == NULL)
		return false;
	sched_fill_counts(d, out);
	return true;
}

unsigned sched_hold(struct queue *q, const char *domain, size_t len)
{
	struct index_destination *d = sched_destination(q, domain, len);
	return d != NULL ? index_hold(d) : 0;
}

uint32_t sched_owner(const struct queue *q, const char *domain, size_t len)
{
	const struct queue_store *st = q->store;
	return st->shards[index_shard_for(index_domain_hash(domain, len), st->nshards)].owner;
}

/* A sibling of r for r's domain in the index (below r's index only, or
 * any). Siblings of other domains may live on other workers: their
 * entries are not read. */
static bool sched_sibling_in_domain(const struct store_rcpt *r, bool below_only)
{
	const struct queue_message *m = r->message;
	size_t len;
	const char *domain = store_rcpt_domain(r, &len);
	uint32_t end = below_only ? r->index : m->nrcpt;
	for (uint32_t i = 0; i < end; i++) {
		const struct store_rcpt *o = &m->rcpts[i];
		/* A domain has one shard: one of another shard is another
		 * domain, told without comparing names (a message to thousands
		 * of domains would cost millions of compares a scrape). */
		if (o == r || o->shard != r->shard)
			continue;
		size_t olen;
		const char *odomain = store_rcpt_domain(o, &olen);
		if (olen != len || strncasecmp(odomain, domain, len) != 0)
			continue;
		if (o->entry.dest != NULL)
			return true;
	}
	return false;
}

bool sched_rcpt_first_in_domain(const struct queue_rcpt *qr)
{
	return !sched_sibling_in_domain((const struct store_rcpt *)qr, true);
}

bool sched_rcpt_alone_in_domain(const struct queue_rcpt *qr)
{
	return !sched_sibling_in_domain((const struct store_rcpt *)qr, false);
}

struct sched_rcpt_visit {
	sched_rcpt_fn *fn;
	void *arg;
};

static void sched_visit_entry(void *arg, struct index_entry *e)
{
	struct sched_rcpt_visit *v = arg;
	v->fn(v->arg, (const struct queue_rcpt *)container_of(e, struct store_rcpt, entry));
}

void sched_visit_rcpts(struct queue *q, const char *domain, size_t len, sched_rcpt_fn *fn,
		       void *arg)
{
	struct index_destination *d = sched_destination(q, domain, len);
	struct sched_rcpt_visit v = {fn, arg};
	if (d != NULL)
		index_foreach_entry(d, sched_visit_entry, &v);
}

void sched_foreach_suffix(struct queue *q, const char *domain, size_t len, sched_visit_fn *fn,
			  void *arg)
{
	struct queue_store *st = q->store;
	struct sched_visit v = {fn, arg};
	for (uint32_t s = 0; s < st->nshards; s++)
		if (st->shards[s].owner == q->index)
			index_foreach_suffix(&st->shards[s].index, domain, len, sched_visit_one,
					     &v);
}

/* Is r the first of its message's recipients in a covered domain that is
 * queued in q's shards? *elsewhere: a covered one is another worker's. */
static bool sched_first_covered(const struct queue *q, const struct store_rcpt *r,
				sched_accept_fn *covered, void *arg, bool *elsewhere)
{
	const struct queue_message *m = r->message;
	const struct queue_store *st = q->store;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct store_rcpt *o = &m->rcpts[i];
		if (o == r)
			continue;
		size_t olen;
		const char *odomain = store_rcpt_domain(o, &olen);
		if (olen == 0 || !covered(arg, odomain, olen))
			continue;
		uint32_t owner =
			st->shards[index_shard_for(index_domain_hash(odomain, olen), st->nshards)]
				.owner;
		if (owner != q->index)
			*elsewhere = true;
		else if (i < r->index && o->entry.dest != NULL)
			return false; /* counted at that one */
	}
	return true;
}

struct sched_tally_walk {
	const struct queue *q;
	sched_accept_fn *covered;
	void *arg;
	struct sched_tally *t;
};

static void sched_tally_one(void *arg, const struct queue_rcpt *qr)
{
	struct sched_tally_walk *w = arg;
	const struct store_rcpt *r = (const struct store_rcpt *)qr;
	bool elsewhere = false;
	if (!sched_first_covered(w->q, r, w->covered, w->arg, &elsewhere))
		return;
	w->t->messages++;
	/* Held by its queue id, it is not what a flush releases. */
	if ((r->entry.state == INDEX_HELD && r->entry.mark != SCHED_MARK_HOLD) ||
	    r->entry.state == INDEX_DEFERRED)
		w->t->waiting++;
	if (elsewhere)
		w->t->elsewhere = true;
}

void sched_tally(struct queue *q, const char *domain, size_t len, sched_accept_fn *covered,
		 void *arg, struct sched_tally *t)
{
	struct sched_tally_walk w = {q, covered, arg, t};
	sched_visit_rcpts(q, domain, len, sched_tally_one, &w);
}

/* ---- the operator's marks ---------------------------------------------------------- */

/* r belongs to one of q's shards and is queued there. */
static struct store_rcpt *sched_operated(const struct queue *q, struct queue_rcpt *qr)
{
	struct store_rcpt *r = store_rcpt_of(qr);
	CHECK(r->entry.dest != NULL && q->store->shards[r->shard].owner == q->index);
	return r;
}

enum sched_state sched_rcpt_state(const struct queue_rcpt *qr)
{
	static const enum sched_state states[INDEX_NSTATES] = {
		[INDEX_READY] = SCHED_READY,
		[INDEX_DEFERRED] = SCHED_DEFERRED,
		[INDEX_HELD] = SCHED_HELD,
		[INDEX_INFLIGHT] = SCHED_INFLIGHT,
	};
	return states[((const struct store_rcpt *)qr)->entry.state];
}

enum sched_mark sched_rcpt_mark(const struct queue_rcpt *qr)
{
	return (enum sched_mark)((const struct store_rcpt *)qr)->entry.mark;
}

struct sched_collection {
	const char *id; /* NULL: every one */
	struct queue_rcpt **rcpts;
	size_t count, cap;
	bool failed;
};

static void sched_collect_one(void *arg, const struct queue_rcpt *qr)
{
	struct sched_collection *c = arg;
	const struct store_rcpt *r = (const struct store_rcpt *)qr;
	if (c->failed || (c->id != NULL && strcmp(r->message->id, c->id) != 0))
		return;
	if (array_reserve(c->rcpts, c->cap, c->count + 1) != 0) {
		c->failed = true;
		return;
	}
	c->rcpts[c->count++] = (struct queue_rcpt *)qr;
}

int sched_collect(struct queue *q, const char *domain, size_t len, const char *id,
		  struct queue_rcpt ***out, size_t *n)
{
	struct sched_collection c = {.id = id};
	sched_visit_rcpts(q, domain, len, sched_collect_one, &c);
	if (c.failed) {
		free(c.rcpts);
		c.rcpts = NULL;
		c.count = 0;
	}
	*out = c.rcpts;
	*n = c.count;
	return c.failed ? -ENOMEM : 0;
}

void sched_park(struct queue *q, struct queue_rcpt *qr)
{
	struct store_rcpt *r = sched_operated(q, qr);
	if (r->entry.state == INDEX_INFLIGHT) {
		/* Held when its attempt is deferred, unless it is to end then. */
		if (r->entry.mark == SCHED_MARK_NONE)
			r->entry.mark = SCHED_MARK_HOLD;
		return;
	}
	r->entry.mark = SCHED_MARK_HOLD;
	if (r->entry.state != INDEX_HELD)
		index_move(&r->entry, INDEX_HELD, 0);
}

bool sched_unpark(struct queue *q, struct queue_rcpt *qr, bool stay_held)
{
	struct store_rcpt *r = sched_operated(q, qr);
	if (r->entry.mark != SCHED_MARK_HOLD)
		return false;
	r->entry.mark = SCHED_MARK_NONE;
	if (r->entry.state == INDEX_HELD && !stay_held)
		index_move(&r->entry, INDEX_READY, 0);
	return true;
}

void sched_take(struct queue *q, struct queue_rcpt *qr)
{
	struct store_rcpt *r = sched_operated(q, qr);
	CHECK(r->entry.state != INDEX_INFLIGHT);
	r->entry.mark = SCHED_MARK_NONE;
	index_move(&r->entry, INDEX_INFLIGHT, 0);
}

void sched_mark_inflight(struct queue *q, struct queue_rcpt *qr, enum sched_mark mark)
{
	struct store_rcpt *r = sched_operated(q, qr);
	CHECK(r->entry.state == INDEX_INFLIGHT &&
	      (mark == SCHED_MARK_DELETE || mark == SCHED_MARK_BOUNCE));
	r->entry.mark = (uint8_t)mark;
}
