/*
 * bounce — one DSN per message for its recipients that failed (bounce.h).
 */
#include "net/bounce.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/array.h"
#include "core/check.h"
#include "core/list.h"
#include "core/log.h"
#include "net/outbound.h"
#include "net/outbound_operator.h"
#include "queue/body.h"
#include "queue/dsn.h"
#include "queue/queue.h"
#include "queue/sched.h"

/* The original's header section, at most this much of it. */
#define BOUNCE_HEADERS_MAX 65536
/* A body being moved by compaction: look again after this long. */
#define BOUNCE_RETRY_MS 20

enum bounce_state {
	BOUNCE_GATHERING, /* failures of this turn still come */
	BOUNCE_READING,   /* the original's headers are read */
	BOUNCE_COMMITTING /* the DSN is being made durable */
};

struct bounce_rcpt {
	struct queue_rcpt *rcpt;
	const char *status; /* NULL: the one in the reply */
	char *reason;
	char *remote_mta;
	int64_t when_ms;
	enum queue_outcome outcome; /* FAILED, or REMOVED by an operator */
};

struct bounce_job {
	struct list_node link;
	struct bounce *b;
	enum bounce_state state;
	struct sched_message info;
	struct bounce_rcpt *rcpts;
	size_t count, cap;
	struct queue_body_reader body;
	bool body_open;
	struct buf headers;
	struct queue_client client;
	struct queue_message *dsn;
	char dsn_id[QUEUE_ID_LEN + 1];
};

struct bounce {
	struct outbound *ob;
	struct list_node gathering; /* jobs of this turn */
	struct list_node running;   /* jobs reading or committing */
	struct timer retry;         /* jobs waiting for a pinned body */
	unsigned serial;
};

struct bounce *bounce_new(struct outbound *ob)
{
	struct bounce *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	b->ob = ob;
	list_init(&b->gathering);
	list_init(&b->running);
	return b;
}

bool bounce_idle(const struct bounce *b)
{
	return list_empty(&b->gathering) && list_empty(&b->running);
}

static void bounce_job_free(struct bounce_job *job)
{
	for (size_t i = 0; i < job->count; i++) {
		free(job->rcpts[i].reason);
		free(job->rcpts[i].remote_mta);
	}
	free(job->rcpts);
	buf_release(&job->headers);
	queue_body_release(&job->body);
	list_remove(&job->link);
	free(job);
}

void bounce_free(struct bounce *b)
{
	CHECK(bounce_idle(b));
	if (timer_armed(&b->retry))
		timer_cancel(&b->ob->worker->timers, &b->retry);
	free(b);
}

static void bounce_gather(struct bounce *b, struct queue_rcpt *r, const char *status,
			  const char *reason, const char *remote_mta, enum queue_outcome outcome)
{
	if (sched_rcpt_mark(r) == SCHED_MARK_DELETE) {
		/* Deleted by an operator while it was tried: no DSN. */
		outbound_operator_delete(b->ob, r);
		return;
	}
	struct sched_message info;
	sched_rcpt_message(r, &info);
	struct bounce_job *job = NULL, *j;
	list_for_each_entry(j, &b->gathering, link)
	{
		if (j->info.message == info.message) {
			job = j;
			break;
		}
	}
	if (job == NULL) {
		job = calloc(1, sizeof(*job));
		if (job == NULL)
			goto no_memory;
		job->b = b;
		job->info = info;
		list_insert_tail(&b->gathering, &job->link);
	}
	if (array_reserve(job->rcpts, job->cap, job->count + 1) != 0)
		goto no_memory;
	job->rcpts[job->count++] = (struct bounce_rcpt){
		.rcpt = r,
		.status = status,
		.reason = strdup(reason),
		.remote_mta = remote_mta != NULL ? strdup(remote_mta) : NULL,
		.when_ms = worker_wall_ms(),
		.outcome = outcome,
	};
	return;
no_memory:
	/* The failure is not lost: it is tried again after its backoff. */
	log_event(LOG_LEVEL_ERROR,
		  "event=bounce_deferred queue_id=%s note=\"out of memory; the recipient is "
		  "tried again later\"",
		  info.id);
	outbound_defer(b->ob, r, "4.3.0 out of memory making a bounce");
}

void bounce_add(struct bounce *b, struct queue_rcpt *r, const char *status, const char *reason,
		const char *remote_mta)
{
	bounce_gather(b, r, status, reason, remote_mta, QUEUE_FAILED);
}

void bounce_add_removed(struct bounce *b, struct queue_rcpt *r, const char *status,
			const char *reason)
{
	bounce_gather(b, r, status, reason, NULL, QUEUE_REMOVED);
}

/* ---- ending a job ---------------------------------------------------------------- */

/* The DSN is durable (or none was wanted): the recipients end. */
static void bounce_job_finish(struct bounce_job *job)
{
	struct outbound *ob = job->b->ob;
	if (job->body_open) {
		queue_body_close(&job->body); /* before the last outcome ends the message */
		job->body_open = false;
	}
	/* Their destinations, found before they end (with the message). */
	struct outbound_dest **dests = calloc(job->count, sizeof(*dests));
	for (size_t i = 0; i < job->count; i++) {
		if (dests != NULL)
			dests[i] = outbound_dest_of(ob, job->rcpts[i].rcpt);
		sched_finish(ob->queue, job->rcpts[i].rcpt, job->rcpts[i].outcome,
			     job->rcpts[i].reason);
	}
	if (dests != NULL)
		outbound_settle(dests, job->count);
	free(dests);
	bounce_job_free(job);
}

/* No DSN could be made: the recipients wait and fail again later. */
static void bounce_job_defer(struct bounce_job *job, const char *why)
{
	struct outbound *ob = job->b->ob;
	log_event(LOG_LEVEL_WARN,
		  "event=bounce_deferred queue_id=%s recipients=%zu reason=\"%s\" note=\"tried "
		  "again after the retry delay\"",
		  job->info.id, job->count, why);
	if (job->body_open) {
		queue_body_close(&job->body);
		job->body_open = false;
	}
	for (size_t i = 0; i < job->count; i++)
		outbound_defer(ob, job->rcpts[i].rcpt, why);
	bounce_job_free(job);
}

/* ---- the DSN ------------------------------------------------------------------------- */

static void bounce_committed(struct queue_client *client, int status)
{
	struct bounce_job *job = container_of(client, struct bounce_job, client);
	if (status != 0) {
		bounce_job_defer(job, status == -ENOSPC ? "4.3.1 the spool is full"
							: "4.3.0 the bounce could not be stored");
		return;
	}
	log_event(LOG_LEVEL_INFO, "event=bounce queue_id=%s dsn_id=%s to=<%.*s> recipients=%zu",
		  job->info.id, job->dsn_id, (int)job->info.sender_len, job->info.sender,
		  job->count);
	bounce_job_finish(job);
}

static void bounce_resume(struct queue_client *client)
{
	(void)client; /* the whole DSN was written at once */
}

static int bounce_queue_dsn(struct bounce_job *job)
{
	struct outbound *ob = job->b->ob;
	const struct outbound_settings *s = ob->settings;
	struct dsn_recipient *rcpts = calloc(job->count, sizeof(*rcpts));
	if (rcpts == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < job->count; i++) {
		size_t len;
		const char *address = sched_rcpt_address(job->rcpts[i].rcpt, &len);
		rcpts[i] = (struct dsn_recipient){
			.address = address,
			.address_len = len,
			.action = "failed",
			.status = job->rcpts[i].status,
			.remote_mta = job->rcpts[i].remote_mta,
			.diagnostic = job->rcpts[i].reason,
			.last_attempt_ms = job->rcpts[i].when_ms,
		};
	}
	char seed[QUEUE_ID_LEN + 16];
	snprintf(seed, sizeof(seed), "%s.%u", job->info.id, job->b->serial++);
	struct dsn_message dm = {
		.reporting_mta = s->helo_name,
		.queue_id = job->info.id,
		.sender = job->info.sender,
		.sender_len = job->info.sender_len,
		.arrival_ms = job->info.arrival_ms,
		.now_ms = worker_wall_ms(),
		.rcpts = rcpts,
		.nrcpts = (unsigned)job->count,
		.headers = buf_head(&job->headers),
		.headers_len = buf_len(&job->headers),
		.headers_truncated = buf_len(&job->headers) >= BOUNCE_HEADERS_MAX,
		.boundary_seed = seed,
		.smtputf8 = job->info.smtputf8,
	};
	struct buf text = {0};
	int r = dsn_build(&dm, &text);
	free(rcpts);
	if (r != 0) {
		buf_release(&text);
		return r;
	}
	struct queue_recipient to = {job->info.sender, job->info.sender_len};
	struct queue_param utf8 = {"SMTPUTF8", 8};
	struct queue_envelope env = {
		.sender = "",
		.sender_len = 0,
		.recipients = &to,
		.nrecipients = 1,
		.params = job->info.smtputf8 ? &utf8 : NULL,
		.nparams = job->info.smtputf8 ? 1 : 0,
		.client_address = "127.0.0.1",
		.helo = s->helo_name,
	};
	clock_gettime(CLOCK_REALTIME, &env.arrival);
	job->client = (struct queue_client){.resume = bounce_resume, .committed = bounce_committed};
	r = queue_message_begin(ob->queue, &job->client, &env, &job->dsn);
	if (r == 0) {
		snprintf(job->dsn_id, sizeof(job->dsn_id), "%s", queue_message_id(job->dsn));
		int w = queue_message_write(job->dsn, buf_head(&text), buf_len(&text));
		if (w < 0) {
			queue_message_abort(job->dsn);
			r = w;
		} else {
			job->state = BOUNCE_COMMITTING;
			queue_message_commit(job->dsn); /* committed() comes from the loop */
		}
	}
	buf_release(&text);
	return r;
}

/* ---- reading the original's headers ---------------------------------------------------- */

static void bounce_read_more(struct bounce_job *job);

/* The header section ends at the first empty line. */
static bool bounce_headers_complete(struct bounce_job *job)
{
	const char *h = buf_head(&job->headers);
	size_t len = buf_len(&job->headers);
	for (size_t i = 0; i + 1 < len; i++) {
		if (h[i] == '\n' &&
		    (h[i + 1] == '\n' || (i + 2 < len && h[i + 1] == '\r' && h[i + 2] == '\n'))) {
			job->headers.end =
				job->headers.start + i + 1; /* the empty line is no header */
			return true;
		}
	}
	if (len >= BOUNCE_HEADERS_MAX) {
		job->headers.end = job->headers.start + BOUNCE_HEADERS_MAX;
		return true;
	}
	return false;
}

/* The stored body begins with ferry's own Received: field, then the
 * client's header section. */
static void bounce_headers_read(struct bounce_job *job)
{
	queue_body_close(&job->body);
	job->body_open = false;
	int r = bounce_queue_dsn(job);
	if (r != 0)
		bounce_job_defer(job, r == -ENOSPC ? "4.3.1 the spool is full"
						   : "4.3.0 the bounce could not be made");
}

static void bounce_body_run(struct queue_body_reader *rd, int status, const char *data, size_t len)
{
	struct bounce_job *job = rd->user;
	if (status < 0) {
		bounce_job_defer(job, "4.3.0 the original could not be read");
		return;
	}
	if (buf_append(&job->headers, data, len) != 0) {
		bounce_job_defer(job, "4.3.0 out of memory making a bounce");
		return;
	}
	if (bounce_headers_complete(job))
		bounce_headers_read(job);
	else
		bounce_read_more(job);
}

static void bounce_read_more(struct bounce_job *job)
{
	int r = queue_body_read(&job->body);
	if (r == 1)
		bounce_headers_read(job); /* the whole message is headers */
	else if (r < 0)
		bounce_job_defer(job, r == -EMFILE ? "4.3.0 no spool file could be opened now"
						   : "4.3.0 the original could not be read");
}

static void bounce_retry_fire(struct timer *t);

static void bounce_job_start(struct bounce_job *job)
{
	struct bounce *b = job->b;
	if (!dsn_wanted(job->info.sender, job->info.sender_len)) {
		log_event(LOG_LEVEL_INFO,
			  "event=bounce_skipped queue_id=%s recipients=%zu reason=\"the sender is "
			  "null: no bounce of a bounce\"",
			  job->info.id, job->count);
		bounce_job_finish(job);
		return;
	}
	int r = queue_body_open(&job->body, b->ob->queue, job->rcpts[0].rcpt, bounce_body_run, job);
	if (r == -EAGAIN) {
		/* Compaction is switching it this instant: next time round. */
		list_remove(&job->link);
		list_insert_tail(&b->gathering, &job->link);
		if (!timer_armed(&b->retry)) {
			timer_init(&b->retry, bounce_retry_fire);
			timer_arm(&b->ob->worker->timers, &b->retry, b->ob->worker->now_ms,
				  BOUNCE_RETRY_MS);
		}
		return;
	}
	if (r != 0) {
		bounce_job_defer(job, "4.3.0 out of memory making a bounce");
		return;
	}
	job->body_open = true;
	job->state = BOUNCE_READING;
	bounce_read_more(job);
}

void bounce_run(struct bounce *b)
{
	struct list_node batch;
	list_init(&batch);
	list_splice_tail(&batch, &b->gathering);
	while (!list_empty(&batch)) {
		struct bounce_job *job = container_of(list_first(&batch), struct bounce_job, link);
		list_remove(&job->link);
		list_insert_tail(&b->running, &job->link);
		if (job->count == 0)
			bounce_job_free(job); /* its one recipient could not be kept */
		else
			bounce_job_start(job);
	}
}

static void bounce_retry_fire(struct timer *t)
{
	(void)t; /* the next loop turn's bounce_run starts what waits */
}
