/*
 * worker — one thread, pinned to one core, with its own io_uring, running
 * the services that the layers register on it.
 *
 * Services. Each layer owns its per-worker life as a struct
 * worker_service: the store (its spool writer and shards), inbound SMTP
 * (listeners and sessions), later outbound delivery and metrics. None
 * runs another's. They are registered once, in layer order (lowest
 * first), in a struct worker_services shared by every worker of a group,
 * and run in a fixed order:
 *
 *     start         registration order: a service may use the ones below
 *                   it (inbound SMTP uses the worker's queue)
 *     ready         registration order, once EVERY worker has started:
 *                   work that reaches other workers may begin
 *     reconfigure   registration order, when worker_group_reconfigure's
 *                   message arrives: take the new configuration, lower
 *                   layers first so the ones above see it in place
 *     before_wait   every loop turn, reverse order: upper layers gather
 *                   work, then lower ones submit what was gathered (the
 *                   store's group commit goes last)
 *     drain         SIGTERM, reverse order: stop taking new work
 *     idle          while draining: nothing of the service's own left
 *     stop          after the loop, reverse order, only for services
 *                   whose start succeeded
 *
 * The loop turn is: before_wait of every service; one submit-and-wait,
 * bounded by the timer wheel's next due slot; each CQE's complete(); due
 * timers. Cross-worker messages (xmsg) arrive through an eventfd read on
 * the ring and run during the completions.
 *
 * Only this loop submits to the ring (worker.c alone calls
 * io_uring_submit*): services prepare SQEs with worker_sqe(), or
 * worker_sqes() for a chain that must reach the kernel in one
 * submission, and learn of completions through their worker_op.
 *
 * Shutdown: workers leave their loops together, once every worker has
 * drained and every service of every worker is idle: a worker with nothing
 * of its own left may still be sent work by another (the store's
 * recipients for the shards it owns).
 *
 * Receives use one provided-buffer ring per worker: a recv completion names
 * a buffer that its owner must copy or parse at once and hand back with
 * worker_recv_buffer_return() in the same loop turn, so a slow session pins
 * no buffer.
 */
#ifndef FERRY_CORE_WORKER_H
#define FERRY_CORE_WORKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/metrics.h"
#include "core/timer.h"
#include "core/xmsg.h"

struct worker;
struct worker_op;
typedef void worker_op_fn(struct worker_op *op, const struct io_uring_cqe *cqe);

/* Embedded in whatever issued the request; its address is the user_data. */
struct worker_op {
	worker_op_fn *complete;
};

struct worker_service {
	const char *name;
	/* On the worker thread once its ring exists: make the per-worker
	 * state (*state) from the registration's arg. 0, or -errno with
	 * w->error set. */
	int (*start)(struct worker *w, void *arg, void **state);
	/* Optional: every worker of the group has started. */
	void (*ready)(struct worker *w, void *state);
	/* Optional: on the worker thread, between completions (when
	 * worker_group_reconfigure's message arrives): take the new
	 * configuration arg, whatever the program's layers agreed on
	 * (opaque to core). Runs for every started service, ready or not. */
	void (*reconfigure)(struct worker *w, void *state, void *arg);
	/* Optional: every loop turn, before the worker sleeps. */
	void (*before_wait)(struct worker *w, void *state);
	/* Optional: SIGTERM/SIGINT: stop taking new work, wind down. */
	void (*drain)(struct worker *w, void *state);
	/* Optional (NULL: always idle): while draining, true once nothing of
	 * this service's own is left in flight on this worker. */
	bool (*idle)(struct worker *w, void *state);
	/* After the loop (or a failed start of a later service): free
	 * what start made. */
	void (*stop)(struct worker *w, void *state);
	/* Optional: describe this worker's counters (core/metrics.h), on
	 * the worker's thread, when the metrics endpoint is scraped. */
	void (*metrics)(struct worker *w, void *state, struct metrics *out);
};

#define WORKER_MAX_SERVICES 8

/* The services every worker of a group runs, in registration order. */
struct worker_services {
	struct {
		const struct worker_service *service;
		void *arg;
	} entries[WORKER_MAX_SERVICES];
	unsigned count;
};

/* Register a service (lowest layer first). 0, or -E2BIG when full. */
int worker_services_add(struct worker_services *set, const struct worker_service *service,
			void *arg);

/* Descriptors a running worker holds of its own: its ring and the eventfd
 * that wakes it (for the budget ferryd checks at start). */
#define WORKER_DESCRIPTORS 2

#define WORKER_RECV_BUFFER_SIZE 8192
#define WORKER_RECV_BUFFERS     512 /* power of two */
#define WORKER_RECV_GROUP       1

struct worker {
	unsigned index;
	int cpu; /* pinned to this CPU, -1 for none */
	pthread_t thread;
	struct io_uring ring;
	unsigned ring_flags; /* IORING_SETUP_* actually in force */
	struct timer_wheel timers;
	uint64_t now_ms; /* CLOCK_MONOTONIC, updated each loop turn */

	struct xmsg_inbox inbox;
	int wake_fd;
	uint64_t wake_value;
	struct worker_op wake_op;
	struct xmsg shutdown_msg;
	struct xmsg ready_msg;

	struct io_uring_buf_ring *recv_ring;
	char *recv_buffers;

	const struct worker_services *services;
	void *service_state[WORKER_MAX_SERVICES];
	unsigned services_started;

	/* Requests handed out by worker_sqe() whose last completion has not
	 * come yet (the loop's own wake-up read not counted). */
	uint64_t in_flight;
	/* A recv found the provided-buffer ring empty (ENOBUFS); counted by
	 * whoever reads, for the metrics. */
	uint64_t recv_buffers_exhausted;

	bool exit_requested;
	bool shutting_down;
	bool drained;             /* counted in group->drained */
	struct timer drain_timer; /* while shutting down: look again */

	/* start-up hand-shake with the main thread */
	struct worker_group *group; /* NULL for a worker made by worker_init */
	int start_status;
	char error[512];
};

struct worker_group {
	struct worker *workers;
	unsigned count;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned started;    /* workers that finished start (ok or not) */
	atomic_uint drained; /* shutdown: workers with nothing of their own left */
};

/*
 * Check that io_uring can be used here at all, before any thread starts.
 * On failure returns -errno with a message that says why and how to fix it.
 */
int worker_probe_io_uring(char *err, size_t err_size);

/*
 * Start `count` workers running `services` (worker i pinned to the i-th
 * CPU of the process's affinity mask when the mask has that many) and wait until each has started
 * every service; then tell each that all are ready. On failure the started ones are stopped and the
 * first error is copied to err.
 */
int worker_group_start(struct worker_group *g, unsigned count,
		       const struct worker_services *services, char *err, size_t err_size);

/*
 * worker_group_start in two steps, for a program with something to do in
 * between: start_services returns once every service of every worker has
 * started, and none is ready (inbound SMTP's sockets are bound and listen,
 * clients wait in the backlog, delivery has not begun); worker_group_ready
 * then lets them run. ferryd gives up root in between, so no client and
 * no next hop is ever served as root. A group that never gets ready is
 * wound down as any other (worker_group_shutdown, worker_group_join).
 */
int worker_group_start_services(struct worker_group *g, unsigned count,
				const struct worker_services *services, char *err, size_t err_size);
void worker_group_ready(struct worker_group *g);

/* Ask every worker to wind down (each service's drain, on its thread). */
void worker_group_shutdown(struct worker_group *g);

/* Wait for every worker thread to end; frees the group's workers. */
void worker_group_join(struct worker_group *g);

/*
 * A worker on the calling thread, without a group (tests, benchmarks that
 * drive the real loop turn themselves): its ring, receive buffers and
 * wake-up, then every service started (and ready at once). 0, or -errno
 * with w->error set (w is then cleaned up). Undo with worker_fini().
 */
int worker_init(struct worker *w, unsigned index, const struct worker_services *services);
void worker_fini(struct worker *w);

/*
 * One loop turn: every service's before_wait, flush this thread's log,
 * submit and wait (at most max_wait_ms, -1: until a completion or the
 * next timer), run the completions, fire due timers. Returns how many
 * completions ran.
 */
unsigned worker_turn(struct worker *w, int64_t max_wait_ms);

/*
 * Sleep until a completion is ready on w's ring or max_wait_ms pass,
 * running and submitting nothing: for tests and benchmarks that drive
 * several workers from one thread (wait on the one with work in flight),
 * or time a turn's work apart from its wait (worker_turn(w, 0), then this).
 */
void worker_wait(struct worker *w, int64_t max_wait_ms);

/* Begin the wind-down on this worker (what SIGTERM does): drain. */
void worker_shutdown(struct worker *w);

/* True while draining once every service of this worker is idle. */
bool worker_idle(struct worker *w);

/* On the worker: leave the loop at the end of this turn. */
void worker_exit(struct worker *w);

/* A free SQE, submitting queued ones first if the SQ ring is full. Never
 * NULL: it waits for room if it must. */
struct io_uring_sqe *worker_sqe(struct worker *w);

/*
 * Room for n SQEs that must reach the kernel in ONE submission (a linked
 * chain: a link does not carry over from one submission to the next).
 * Submits what is queued first if that makes room. True when the next n
 * worker_sqe() calls will not submit; false when even an empty queue has
 * no room (try in a later turn).
 */
bool worker_sqes(struct worker *w, unsigned n);

static inline void worker_sqe_set_op(struct io_uring_sqe *sqe, struct worker_op *op)
{
	io_uring_sqe_set_data(sqe, op);
}

/* The provided buffer a recv completion chose. */
char *worker_recv_buffer(struct worker *w, uint16_t bid);
void worker_recv_buffer_return(struct worker *w, uint16_t bid);

/* On w's thread: its own counters (the ring's completion-queue
 * overflows, recv buffers exhausted) and every started service's. */
void worker_metrics(struct worker *w, struct metrics *out);

/*
 * What a thread other than the workers' waits for when it asks workers
 * for parts of an answer (ferryctl's requests, a metrics scrape), embedded
 * in the request. Reference counted: the waiter's hold plus one per part;
 * whoever drops the last frees the request, so a part that answers after
 * the waiter gave up never writes into freed memory.
 */
struct worker_ask {
	pthread_mutex_t lock;
	pthread_cond_t done;
	unsigned refs, pending; /* the waiter + parts; parts not answered */
	bool abandoned;         /* the waiter stopped waiting: skip the work */
};

void worker_ask_init(struct worker_ask *a, unsigned parts);
void worker_ask_destroy(struct worker_ask *a);
/* A part, on its worker: does the waiter still want it? */
bool worker_ask_wanted(struct worker_ask *a);
/* Drop one reference (`answered`: a part's work is done). True when it
 * was the last: the caller frees the request (worker_ask_destroy first). */
bool worker_ask_release(struct worker_ask *a, bool answered);
/* The waiter: every part answered within timeout_ms? Else the request
 * is marked abandoned. Either way the waiter still holds its reference. */
bool worker_ask_wait(struct worker_ask *a, unsigned timeout_ms);

/*
 * From any thread but the workers' own: ask each of the n workers for its
 * worker_metrics() by cross-worker message and merge the answers into
 * out, waiting at most timeout_ms. 0, or -ETIMEDOUT when a worker did not
 * answer in time (out is then left as it was: a partial sum would show
 * counters going down), -ENOMEM. A late worker's answer is dropped (the
 * request is reference counted).
 */
int worker_gather_metrics(struct worker *const *workers, unsigned n, struct metrics *out,
			  unsigned timeout_ms);

/*
 * From any thread but the workers' own: send each worker of g a
 * cross-worker message that runs, on that worker's thread, every started
 * service's reconfigure(w, state, arg) in registration order, then
 * done(arg) if done is not NULL: the caller can hand one reference to arg
 * per worker (g->count of them) and have each dropped when its worker is
 * through. Waits at most timeout_ms for every worker to have run it
 * (done included).
 *   0           every worker ran it, done too.
 *   -ETIMEDOUT  some worker had not yet: its message still runs later and
 *               still calls done, on its thread; arg must live until the
 *               last done (the message's own memory is reference counted
 *               and freed by whoever finishes last).
 *   -ENOMEM     nothing could be allocated: no message was sent and done
 *               is never called.
 * Only while the group's loops run (after worker_group_start_services,
 * before worker_group_shutdown): a worker that has left its loop runs no
 * more messages, so its reconfigure and done would never come.
 */
int worker_group_reconfigure(struct worker_group *g, void *arg, void (*done)(void *arg),
			     unsigned timeout_ms);

/* Send a cross-worker message to w (any thread). */
int worker_send(struct worker *w, struct xmsg *msg, xmsg_fn *handle);

uint64_t worker_clock_ms(void);
/* CLOCK_REALTIME in milliseconds: times that are journaled or shown. */
int64_t worker_wall_ms(void);

#endif
