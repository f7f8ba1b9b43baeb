/*
 * store_metrics — what one worker's part of the store tells the metrics
 * endpoint (core/metrics.h): its group commits (commit.c's), its
 * segments, the spool's space, compaction, and the queue it owns by state.
 * Runs on the worker, like everything that reads its queue and shards.
 */
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "core/metrics.h"
#include "core/worker.h"
#include "queue/commit.h"
#include "queue/index.h"
#include "queue/sched.h"
#include "queue/store.h"

static const struct metric_family store_recipients = {
	"ferry_queue_recipients",
	"Queued recipients, by state: ready (to be tried now), deferred (waiting for a retry), "
	"held (waiting for ETRN or an operator), inflight (being delivered).",
	METRIC_GAUGE,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family store_messages = {
	"ferry_queue_messages",
	"Queued messages by state, counted once for each destination domain they wait for "
	"(a message to two domains counts twice).",
	METRIC_GAUGE,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family store_bytes = {
	"ferry_queue_bytes",
	"Body bytes of the queued messages by state, as ferry_queue_messages counts them.",
	METRIC_GAUGE,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family store_oldest = {
	"ferry_queue_oldest_message_age_seconds",
	"Age of the oldest message still queued (0: none).",
	METRIC_GAUGE,
	METRIC_MAX,
	NULL,
	0};
static const struct metric_family store_segments = {
	"ferry_spool_segments",
	"Segment files, by state: writing, closed, deleting.",
	METRIC_GAUGE,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family store_spool_bytes = {
	"ferry_spool_bytes",
	"Bytes of segment files on disk (preallocated size).",
	METRIC_GAUGE,
	METRIC_MAX,
	NULL,
	0};
static const struct metric_family store_free = {
	"ferry_spool_free_bytes",
	"Free bytes on the spool's file system (for ferryd's user).",
	METRIC_GAUGE,
	METRIC_MAX,
	NULL,
	0};
static const struct metric_family store_compactions = {
	"ferry_spool_compaction_jobs_total",
	"Compaction jobs (live messages of a mostly dead segment copied), by result.",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family store_compacted_bytes = {"ferry_spool_compacted_bytes_total",
							   "Body bytes copied by compaction.",
							   METRIC_COUNTER,
							   METRIC_SUM,
							   NULL,
							   0};

static const char *const store_states[INDEX_NSTATES] = {
	[INDEX_READY] = "ready",
	[INDEX_DEFERRED] = "deferred",
	[INDEX_HELD] = "held",
	[INDEX_INFLIGHT] = "inflight",
};

struct store_tally {
	uint64_t recipients[INDEX_NSTATES];
	uint64_t messages[INDEX_NSTATES];
	uint64_t bytes[INDEX_NSTATES];
};

static void store_tally_entry(void *arg, struct index_entry *e)
{
	struct store_tally *t = arg;
	const struct store_rcpt *r = container_of(e, struct store_rcpt, entry);
	t->recipients[e->state]++;
	if (!sched_rcpt_first_in_domain((const struct queue_rcpt *)r))
		return; /* its message is counted at its first recipient here */
	t->messages[e->state]++;
	t->bytes[e->state] += r->message->body_len;
}

static bool store_tally_destination(struct index_destination *d, void *arg)
{
	index_foreach_entry(d, store_tally_entry, arg);
	return true;
}

void store_service_metrics(struct worker *w, void *state, struct metrics *out)
{
	struct queue *q = state;
	struct queue_store *st = q->store;
	char labels[48];

	commit_metrics(q->writer, out);

	struct store_tally t;
	memset(&t, 0, sizeof(t));
	for (uint32_t s = 0; s < st->nshards; s++)
		if (st->shards[s].owner == q->index)
			index_foreach(&st->shards[s].index, store_tally_destination, &t);
	for (unsigned i = 0; i < INDEX_NSTATES; i++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"", store_states[i]);
		metrics_add(out, &store_recipients, labels, (double)t.recipients[i]);
		metrics_add(out, &store_messages, labels, (double)t.messages[i]);
		metrics_add(out, &store_bytes, labels, (double)t.bytes[i]);
	}

	/* Stored in commit order: the first is the oldest this worker took. */
	struct list_node *first = list_first(&q->stored);
	double age = 0;
	if (first != NULL) {
		const struct queue_message *m = container_of(first, struct queue_message, link);
		int64_t ms = worker_wall_ms() - m->arrival_ms;
		age = ms > 0 ? (double)ms / 1000.0 : 0;
	}
	metrics_add(out, &store_oldest, NULL, age);

	unsigned writing = 0, closed = 0, deleting = 0;
	for (size_t i = 0; i < q->nsegments; i++) {
		const struct store_segment *seg = q->segments[i];
		if (seg == NULL)
			continue;
		if (seg->deleting)
			deleting++;
		else if (seg->closed)
			closed++;
		else
			writing++;
	}
	metrics_add(out, &store_segments, "state=\"writing\"", writing);
	metrics_add(out, &store_segments, "state=\"closed\"", closed);
	metrics_add(out, &store_segments, "state=\"deleting\"", deleting);
	metrics_add(out, &store_spool_bytes, NULL, (double)atomic_load(&st->bytes));
	struct statvfs fs; /* one syscall a scrape, not a message */
	if (fstatvfs(st->dir_fd, &fs) == 0)
		metrics_add(out, &store_free, NULL, (double)fs.f_bavail * (double)fs.f_frsize);

	struct queue_compaction_stats c;
	queue_compaction_stats(q, &c);
	metrics_add(out, &store_compactions, "result=\"done\"", (double)c.jobs);
	metrics_add(out, &store_compactions, "result=\"failed\"", (double)c.failed);
	metrics_add(out, &store_compacted_bytes, NULL, (double)c.bytes);
	(void)w;
}
