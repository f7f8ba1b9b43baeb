/*
 * worker_ask — what threads other than the workers' ask of them
 * (core/worker.h): the reference-counted wait for parts of an answer
 * (struct worker_ask), and the two asks of the worker layer itself, a
 * metrics scrape (each worker's worker_metrics, merged) and a reload
 * (each worker's services reconfigured, in registration order).
 */
#include "core/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "core/list.h"
#include "core/log.h"

void worker_ask_init(struct worker_ask *a, unsigned parts)
{
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&a->done, &attr);
	pthread_condattr_destroy(&attr);
	pthread_mutex_init(&a->lock, NULL);
	a->refs = parts + 1;
	a->pending = parts;
	a->abandoned = false;
}

void worker_ask_destroy(struct worker_ask *a)
{
	pthread_cond_destroy(&a->done);
	pthread_mutex_destroy(&a->lock);
}

bool worker_ask_wanted(struct worker_ask *a)
{
	pthread_mutex_lock(&a->lock);
	bool wanted = !a->abandoned;
	pthread_mutex_unlock(&a->lock);
	return wanted;
}

bool worker_ask_release(struct worker_ask *a, bool answered)
{
	pthread_mutex_lock(&a->lock);
	if (answered && --a->pending == 0)
		pthread_cond_signal(&a->done);
	bool last = --a->refs == 0;
	pthread_mutex_unlock(&a->lock);
	return last;
}

bool worker_ask_wait(struct worker_ask *a, unsigned timeout_ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&a->lock);
	while (a->pending > 0)
		if (pthread_cond_timedwait(&a->done, &a->lock, &deadline) == ETIMEDOUT)
			break;
	bool answered = a->pending == 0;
	if (!answered)
		a->abandoned = true;
	pthread_mutex_unlock(&a->lock);
	return answered;
}

/* One worker's snapshot, filled on its thread. */
struct worker_metrics_part {
	struct xmsg link;
	struct worker_metrics_request *request;
	struct worker *worker;
	struct metrics snapshot;
};

struct worker_metrics_request {
	struct worker_ask ask;
	unsigned nparts;
	struct worker_metrics_part parts[];
};

static void worker_metrics_release(struct worker_metrics_request *rq, bool answered)
{
	if (!worker_ask_release(&rq->ask, answered))
		return;
	for (unsigned i = 0; i < rq->nparts; i++)
		metrics_free(&rq->parts[i].snapshot);
	worker_ask_destroy(&rq->ask);
	free(rq);
}

static void worker_metrics_run(struct xmsg *msg)
{
	struct worker_metrics_part *part = container_of(msg, struct worker_metrics_part, link);
	struct worker_metrics_request *rq = part->request;
	if (worker_ask_wanted(&rq->ask))
		worker_metrics(part->worker, &part->snapshot);
	worker_metrics_release(rq, true);
}

int worker_gather_metrics(struct worker *const *workers, unsigned n, struct metrics *out,
			  unsigned timeout_ms)
{
	struct worker_metrics_request *rq = calloc(1, sizeof(*rq) + n * sizeof(rq->parts[0]));
	if (rq == NULL)
		return -ENOMEM;
	worker_ask_init(&rq->ask, n);
	rq->nparts = n;
	for (unsigned i = 0; i < n; i++) {
		struct worker_metrics_part *part = &rq->parts[i];
		part->request = rq;
		part->worker = workers[i];
		metrics_init(&part->snapshot);
		worker_send(part->worker, &part->link, worker_metrics_run);
	}
	bool answered = worker_ask_wait(&rq->ask, timeout_ms);
	if (answered)
		for (unsigned i = 0; i < n; i++)
			metrics_merge(out, &rq->parts[i].snapshot);
	else
		log_event(LOG_LEVEL_ERROR,
			  "event=metrics_timeout waited_ms=%u note=\"a worker did not answer a "
			  "request for its counters in time\"",
			  timeout_ms);
	worker_metrics_release(rq, false);
	return answered ? 0 : -ETIMEDOUT;
}

/* One worker's share of a reconfiguration: its message. */
struct worker_reconfigure_part {
	struct xmsg link;
	struct worker_reconfigure_request *request;
	struct worker *worker;
};

struct worker_reconfigure_request {
	struct worker_ask ask;
	void *arg;
	void (*done)(void *arg);
	struct worker_reconfigure_part parts[];
};

static void worker_reconfigure_release(struct worker_reconfigure_request *rq, bool answered)
{
	if (!worker_ask_release(&rq->ask, answered))
		return;
	worker_ask_destroy(&rq->ask);
	free(rq);
}

/* On w's thread: every started service's reconfigure, in registration order. */
static void worker_services_reconfigure(struct worker *w, void *arg)
{
	for (unsigned i = 0; i < w->services_started; i++) {
		const struct worker_service *s = w->services->entries[i].service;
		if (s->reconfigure != NULL)
			s->reconfigure(w, w->service_state[i], arg);
	}
}

/* Unlike a metrics part, this one runs even when the waiter gave up: the
 * caller was told its message still runs, and counts on done. done goes
 * before the release, so a waiter that saw every part answered also saw
 * every done. */
static void worker_reconfigure_run(struct xmsg *msg)
{
	struct worker_reconfigure_part *part =
		container_of(msg, struct worker_reconfigure_part, link);
	struct worker_reconfigure_request *rq = part->request;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	worker_services_reconfigure(part->worker, rq->arg);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* What the switch cost this worker's loop: nothing else ran meanwhile. */
	log_event(LOG_LEVEL_INFO, "event=worker_reconfigured worker=%u elapsed_us=%lld",
		  part->worker->index,
		  (long long)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000));
	if (rq->done != NULL)
		rq->done(rq->arg);
	worker_reconfigure_release(rq, true);
}

int worker_group_reconfigure(struct worker_group *g, void *arg, void (*done)(void *arg),
			     unsigned timeout_ms)
{
	unsigned n = g->count;
	struct worker_reconfigure_request *rq = calloc(1, sizeof(*rq) + n * sizeof(rq->parts[0]));
	if (rq == NULL)
		return -ENOMEM;
	worker_ask_init(&rq->ask, n);
	rq->arg = arg;
	rq->done = done;
	for (unsigned i = 0; i < n; i++) {
		struct worker_reconfigure_part *part = &rq->parts[i];
		part->request = rq;
		part->worker = &g->workers[i];
		worker_send(part->worker, &part->link, worker_reconfigure_run);
	}
	bool answered = worker_ask_wait(&rq->ask, timeout_ms);
	worker_reconfigure_release(rq, false);
	return answered ? 0 : -ETIMEDOUT;
}
