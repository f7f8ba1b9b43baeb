#include "core/list.h"
#include "core/worker.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/cpuset.h"
#include "core/log.h"

#define WORKER_SQ_ENTRIES 4096
#define WORKER_CQ_ENTRIES 32768

uint64_t worker_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *worker_io_uring_advice(int e)
{
	switch (e) {
	case ENOSYS:
		return "the kernel has no io_uring (CONFIG_IO_URING is off, or a seccomp "
		       "profile hides io_uring_setup); ferryd needs Linux 6.1 or later with "
		       "io_uring enabled";
	case EPERM:
	case EACCES:
		return "io_uring is disabled for this process: set the sysctl "
		       "kernel.io_uring_disabled=0 (or add this user to kernel.io_uring_group), "
		       "and in a container allow io_uring_setup, io_uring_enter and "
		       "io_uring_register in the seccomp profile";
	case ENOMEM:
		return "not enough locked memory for the rings: raise RLIMIT_MEMLOCK "
		       "(ulimit -l) or run on Linux 5.12 or later";
	default:
		return "see the kernel log";
	}
}

int worker_probe_io_uring(char *err, size_t err_size)
{
	struct io_uring ring;
	int r = io_uring_queue_init(8, &ring, 0);
	if (r < 0) {
		snprintf(err, err_size, "io_uring is not available: %s: %s", strerror(-r),
			 worker_io_uring_advice(-r));
		return r;
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
	static const struct {
		int op;
		const char *name;
	} needed[] = {{IORING_OP_ACCEPT, "ACCEPT"},       {IORING_OP_RECV, "RECV"},
		      {IORING_OP_SEND, "SEND"},           {IORING_OP_READ, "READ"},
		      {IORING_OP_WRITE, "WRITE"},         {IORING_OP_FSYNC, "FSYNC"},
		      {IORING_OP_ASYNC_CANCEL, "CANCEL"}, {IORING_OP_CLOSE, "CLOSE"},
		      {IORING_OP_UNLINKAT, "UNLINKAT"},   {IORING_OP_NOP, "NOP"}};
	r = 0;
	for (size_t i = 0; probe != NULL && i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (!io_uring_opcode_supported(probe, needed[i].op)) {
			snprintf(err, err_size,
				 "io_uring lacks IORING_OP_%s: ferryd needs Linux 6.1 or later",
				 needed[i].name);
			r = -ENOTSUP;
			break;
		}
	}
	if (probe != NULL)
		io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
	return r;
}

/* The best ring this kernel gives us: DEFER_TASKRUN (6.1) runs completions
 * only when we ask, SINGLE_ISSUER (6.0) drops submission locking. */
static int worker_ring_init(struct worker *w)
{
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int r = -EINVAL;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		struct io_uring_params p = {0};
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
		p.cq_entries = WORKER_CQ_ENTRIES;
		r = io_uring_queue_init_params(WORKER_SQ_ENTRIES, &w->ring, &p);
		if (r == 0) {
			w->ring_flags = p.flags;
			return 0;
		}
		if (r != -EINVAL)
			break;
	}
	snprintf(w->error, sizeof(w->error), "worker %u: io_uring setup failed: %s: %s", w->index,
		 strerror(-r), worker_io_uring_advice(-r));
	return r;
}

/* Liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring: map and
 * register the ring by hand. */
static int worker_recv_ring_init(struct worker *w)
{
	size_t ring_size = WORKER_RECV_BUFFERS * sizeof(struct io_uring_buf);
	void *ring_mem =
		mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (ring_mem == MAP_FAILED)
		return -errno;
	w->recv_buffers = mmap(NULL, (size_t)WORKER_RECV_BUFFERS * WORKER_RECV_BUFFER_SIZE,
			       PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (w->recv_buffers == MAP_FAILED) {
		int e = -errno;
		munmap(ring_mem, ring_size);
		return e;
	}
	struct io_uring_buf_reg reg = {
		.ring_addr = (uint64_t)(uintptr_t)ring_mem,
		.ring_entries = WORKER_RECV_BUFFERS,
		.bgid = WORKER_RECV_GROUP,
	};
	int r = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (r != 0) {
		munmap(ring_mem, ring_size); /* recv_buffers go in worker_cleanup() */
		snprintf(w->error, sizeof(w->error),
			 "worker %u: cannot register the receive buffer ring: %s (needs Linux "
			 "5.19 or later)",
			 w->index, strerror(-r));
		return r;
	}
	w->recv_ring = ring_mem;
	io_uring_buf_ring_init(w->recv_ring);
	int mask = io_uring_buf_ring_mask(WORKER_RECV_BUFFERS);
	for (unsigned i = 0; i < WORKER_RECV_BUFFERS; i++)
		io_uring_buf_ring_add(w->recv_ring,
				      w->recv_buffers + (size_t)i * WORKER_RECV_BUFFER_SIZE,
				      WORKER_RECV_BUFFER_SIZE, (unsigned short)i, mask, (int)i);
	io_uring_buf_ring_advance(w->recv_ring, WORKER_RECV_BUFFERS);
	return 0;
}

char *worker_recv_buffer(struct worker *w, uint16_t bid)
{
	return w->recv_buffers + (size_t)bid * WORKER_RECV_BUFFER_SIZE;
}

void worker_recv_buffer_return(struct worker *w, uint16_t bid)
{
	io_uring_buf_ring_add(w->recv_ring, worker_recv_buffer(w, bid), WORKER_RECV_BUFFER_SIZE,
			      bid, io_uring_buf_ring_mask(WORKER_RECV_BUFFERS), 0);
	io_uring_buf_ring_advance(w->recv_ring, 1);
}

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe;
	while ((sqe = io_uring_get_sqe(&w->ring)) == NULL)
		io_uring_submit(&w->ring);
	return sqe;
}

static void worker_wake_arm(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_read(sqe, w->wake_fd, &w->wake_value, sizeof(w->wake_value), 0);
	worker_sqe_set_op(sqe, &w->wake_op);
}

static void worker_wake_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct worker *w = container_of(op, struct worker, wake_op);
	(void)cqe;
	xmsg_drain(&w->inbox);
	if (!w->exit_requested)
		worker_wake_arm(w);
}

int worker_send(struct worker *w, struct xmsg *msg, xmsg_fn *handle)
{
	return xmsg_send(&w->inbox, msg, handle);
}

void worker_exit(struct worker *w)
{
	w->exit_requested = true;
}

unsigned worker_complete(struct worker *w)
{
	w->now_ms = worker_clock_ms();
	unsigned head, seen = 0;
	struct io_uring_cqe *cqe;
	io_uring_for_each_cqe(&w->ring, head, cqe)
	{
		struct worker_op *op = io_uring_cqe_get_data(cqe);
		seen++;
		if (op != NULL)
			op->complete(op, cqe);
	}
	io_uring_cq_advance(&w->ring, seen);
	return seen;
}

static void worker_loop(struct worker *w)
{
	while (!w->exit_requested) {
		w->hooks->before_wait(w);
		log_flush();
		if (w->exit_requested)
			break;
		w->now_ms = worker_clock_ms();
		int64_t wait_ms = timer_wheel_next_ms(&w->timers, w->now_ms);
		struct io_uring_cqe *cqe;
		int r;
		if (wait_ms >= 0) {
			struct __kernel_timespec ts = {.tv_sec = wait_ms / 1000,
						       .tv_nsec = (wait_ms % 1000) * 1000000};
			r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		} else {
			r = io_uring_submit_and_wait(&w->ring, 1);
		}
		if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY)
			log_event(LOG_LEVEL_ERROR, "event=ring_error worker=%u error=\"%s\"",
				  w->index, strerror(-r));
		worker_complete(w);
		timer_wheel_advance(&w->timers, w->now_ms);
	}
}

static void worker_cleanup(struct worker *w)
{
	if (w->recv_ring != NULL) {
		io_uring_unregister_buf_ring(&w->ring, WORKER_RECV_GROUP);
		munmap(w->recv_ring, WORKER_RECV_BUFFERS * sizeof(struct io_uring_buf));
		w->recv_ring = NULL;
	}
	if (w->recv_buffers != NULL && w->recv_buffers != MAP_FAILED)
		munmap(w->recv_buffers, (size_t)WORKER_RECV_BUFFERS * WORKER_RECV_BUFFER_SIZE);
	w->recv_buffers = NULL;
	if (w->ring.ring_fd > 0)
		io_uring_queue_exit(&w->ring);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	w->wake_fd = -1;
}

static void worker_report_started(struct worker *w, int status)
{
	struct worker_group *g = w->group;
	w->start_status = status;
	pthread_mutex_lock(&g->lock);
	g->started++;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	if (w->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		/* Pinning is a performance wish, not a requirement (cgroups may
		 * forbid it). */
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	char name[16];
	snprintf(name, sizeof(name), "ferry-w%u", w->index);
	pthread_setname_np(pthread_self(), name);

	w->now_ms = worker_clock_ms();
	timer_wheel_init(&w->timers, w->now_ms);
	int r = worker_ring_init(w);
	if (r == 0)
		r = worker_recv_ring_init(w);
	if (r == 0) {
		w->wake_fd = eventfd(0, EFD_CLOEXEC);
		if (w->wake_fd < 0) {
			r = -errno;
			snprintf(w->error, sizeof(w->error), "worker %u: eventfd: %s", w->index,
				 strerror(errno));
		}
	}
	if (r == 0) {
		xmsg_inbox_init(&w->inbox, w->wake_fd);
		w->wake_op.complete = worker_wake_complete;
		worker_wake_arm(w);
		r = w->hooks->start(w);
	}
	worker_report_started(w, r);
	if (r != 0) {
		/* The upper layer's state, and whatever start built before it
		 * failed, would otherwise leak. */
		w->hooks->stop(w);
		worker_cleanup(w);
		return NULL;
	}
	log_thread_buffered(true);
	worker_loop(w);
	w->hooks->stop(w);
	log_thread_buffered(false);
	worker_cleanup(w);
	return NULL;
}

static void worker_shutdown_handle(struct xmsg *msg)
{
	struct worker *w = container_of(msg, struct worker, shutdown_msg);
	if (w->shutting_down)
		return;
	w->shutting_down = true;
	w->hooks->shutdown(w);
}

void worker_group_shutdown(struct worker_group *g)
{
	for (unsigned i = 0; i < g->count; i++)
		worker_send(&g->workers[i], &g->workers[i].shutdown_msg, worker_shutdown_handle);
}

void worker_group_join(struct worker_group *g)
{
	for (unsigned i = 0; i < g->count; i++)
		pthread_join(g->workers[i].thread, NULL);
	free(g->workers);
	g->workers = NULL;
	g->count = 0;
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
}

int worker_group_start(struct worker_group *g, unsigned count, const struct worker_hooks *hooks,
		       void *(*user_for)(unsigned index, void *arg), void *arg, char *err,
		       size_t err_size)
{
	memset(g, 0, sizeof(*g));
	g->workers = calloc(count, sizeof(*g->workers));
	if (g->workers == NULL) {
		snprintf(err, err_size, "out of memory for %u workers", count);
		return -ENOMEM;
	}
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	struct cpuset allowed;
	cpuset_allowed(&allowed);
	unsigned spawned = 0;
	int status = 0;
	for (unsigned i = 0; i < count; i++) {
		struct worker *w = &g->workers[i];
		w->index = i;
		w->cpu = count <= allowed.count ? allowed.cpus[i] : -1;
		w->wake_fd = -1;
		w->hooks = hooks;
		w->group = g;
		w->user = user_for(i, arg);
		int r = pthread_create(&w->thread, NULL, worker_main, w);
		if (r != 0) {
			snprintf(err, err_size, "cannot start worker thread %u: %s", i,
				 strerror(r));
			status = -r;
			break;
		}
		spawned++;
	}
	g->count = spawned;
	pthread_mutex_lock(&g->lock);
	while (g->started < spawned)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	for (unsigned i = 0; i < spawned && status == 0; i++) {
		if (g->workers[i].start_status != 0) {
			snprintf(err, err_size, "%s", g->workers[i].error);
			status = g->workers[i].start_status;
		}
	}
	if (status != 0) {
		/* Workers that started are running their loop: wind them down. */
		for (unsigned i = 0; i < spawned; i++)
			if (g->workers[i].start_status == 0)
				worker_send(&g->workers[i], &g->workers[i].shutdown_msg,
					    worker_shutdown_handle);
		worker_group_join(g);
	}
	return status;
}
