/*
 * worker — one thread, pinned to one core, with its own io_uring.
 *
 * Everything a worker owns (its sessions, listeners, spool writer, timers)
 * is touched only by its thread. The loop turn is:
 *
 *     hooks->before_wait()   gather work that must leave this turn
 *                            (output flushes, the store's batched syncs)
 *     submit and wait        one io_uring_enter for everything, bounded
 *                            by the timer wheel's next due slot
 *     completions           each CQE's user_data is a struct worker_op
 *                            whose complete() runs here
 *     timers, inbox          due timers fire; cross-worker messages run
 *
 * Only this loop submits to the ring; other layers prepare SQEs through
 * worker_sqe() and learn of completions through their worker_op.
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
#include <stdbool.h>
#include <stdint.h>

#include "core/timer.h"
#include "core/xmsg.h"

struct worker;
struct worker_op;
typedef void worker_op_fn(struct worker_op *op, const struct io_uring_cqe *cqe);

/* Embedded in whatever issued the request; its address is the user_data. */
struct worker_op {
	worker_op_fn *complete;
};

struct worker_hooks {
	/* On the worker thread once its ring exists: open listeners, the
	 * queue. Nonzero fails start-up with w->error set. */
	int (*start)(struct worker *w);
	/* Every loop turn before the worker sleeps. */
	void (*before_wait)(struct worker *w);
	/* SIGTERM/SIGINT: stop accepting, wind down; call worker_exit()
	 * when nothing is left. */
	void (*shutdown)(struct worker *w);
	/* On the worker thread after the loop ended, or after start-up failed
	 * (start may have run partly, or not at all): free what start made
	 * and the upper-layer state in w->user (which may be NULL). */
	void (*stop)(struct worker *w);
};

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

	struct io_uring_buf_ring *recv_ring;
	char *recv_buffers;

	const struct worker_hooks *hooks;
	void *user; /* the upper layers' per-worker state */
	bool exit_requested;
	bool shutting_down;

	/* start-up hand-shake with the main thread */
	struct worker_group *group;
	int start_status;
	char error[512];
};

struct worker_group {
	struct worker *workers;
	unsigned count;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned started; /* workers that finished start (ok or not) */
};

/*
 * Check that io_uring can be used here at all, before any thread starts.
 * On failure returns -errno with a message that says why and how to fix it.
 */
int worker_probe_io_uring(char *err, size_t err_size);

/*
 * Start `count` workers (pinned to CPUs 0..count-1 when there are that many)
 * and wait until each has run hooks->start. On failure the started ones are
 * stopped and the first error is copied to err. `user_for` gives each
 * worker its upper-layer state before it starts.
 */
int worker_group_start(struct worker_group *g, unsigned count, const struct worker_hooks *hooks,
		       void *(*user_for)(unsigned index, void *arg), void *arg, char *err,
		       size_t err_size);

/* Ask every worker to wind down (hooks->shutdown on its own thread). */
void worker_group_shutdown(struct worker_group *g);

/* Wait for every worker thread to end; frees the group's workers. */
void worker_group_join(struct worker_group *g);

/* On the worker: leave the loop at the end of this turn. */
void worker_exit(struct worker *w);

/* A free SQE, submitting queued ones first if the SQ ring is full. Never
 * NULL: it waits for room if it must. */
struct io_uring_sqe *worker_sqe(struct worker *w);

static inline void worker_sqe_set_op(struct io_uring_sqe *sqe, struct worker_op *op)
{
	io_uring_sqe_set_data(sqe, op);
}

/*
 * The loop's completion step: update now_ms, run complete() of every CQE
 * that is there, and return how many there were. Also for tests and
 * benchmarks that drive a worker's ring with a loop of their own.
 */
unsigned worker_complete(struct worker *w);

/* The provided buffer a recv completion chose. */
char *worker_recv_buffer(struct worker *w, uint16_t bid);
void worker_recv_buffer_return(struct worker *w, uint16_t bid);

/* Send a cross-worker message to w (any thread). */
int worker_send(struct worker *w, struct xmsg *msg, xmsg_fn *handle);

uint64_t worker_clock_ms(void);

#endif
