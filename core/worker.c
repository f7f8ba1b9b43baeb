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
#include "core/list.h"
#include "core/log.h"

#define WORKER_SQ_ENTRIES    4096
#define WORKER_CQ_ENTRIES    32768
#define WORKER_DRAIN_TICK_MS 50   /* shutdown: how often a drained worker looks again */
#define WORKER_SETTLE_MS     1000 /* after the services stopped: their last requests */

int worker_services_add(struct worker_services *set, const struct worker_service *service,
			void *arg)
{
	if (set->count == WORKER_MAX_SERVICES)
		return -E2BIG;
	set->entries[set->count].service = service;
	set->entries[set->count].arg = arg;
	set->count++;
	return 0;
}

uint64_t worker_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int64_t worker_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
		      {IORING_OP_UNLINKAT, "UNLINKAT"},   {IORING_OP_NOP, "NOP"},
		      {IORING_OP_CONNECT, "CONNECT"}};
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

static struct io_uring_sqe *worker_sqe_uncounted(struct worker *w)
{
	struct io_uring_sqe *sqe;
	while ((sqe = io_uring_get_sqe(&w->ring)) == NULL)
		io_uring_submit(&w->ring);
	return sqe;
}

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	w->in_flight++;
	return worker_sqe_uncounted(w);
}

bool worker_sqes(struct worker *w, unsigned n)
{
	if (io_uring_sq_space_left(&w->ring) >= n)
		return true;
	io_uring_submit(&w->ring);
	return io_uring_sq_space_left(&w->ring) >= n;
}

static void worker_wake_arm(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe_uncounted(w);
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

static unsigned worker_complete(struct worker *w)
{
	w->now_ms = worker_clock_ms();
	unsigned head, seen = 0;
	struct io_uring_cqe *cqe;
	io_uring_for_each_cqe(&w->ring, head, cqe)
	{
		struct worker_op *op = io_uring_cqe_get_data(cqe);
		seen++;
		if (op != &w->wake_op && !(cqe->flags & IORING_CQE_F_MORE))
			w->in_flight--;
		if (op != NULL)
			op->complete(op, cqe);
	}
	io_uring_cq_advance(&w->ring, seen);
	return seen;
}

/* ---- services ------------------------------------------------------------ */

static const struct worker_service *worker_service_at(const struct worker *w, unsigned i)
{
	return w->services->entries[i].service;
}

/* Start every service in registration order; on a failure, stop the ones
 * that started (reverse order). */
static int worker_services_start(struct worker *w)
{
	for (unsigned i = 0; i < w->services->count; i++) {
		const struct worker_service *s = worker_service_at(w, i);
		int r = s->start(w, w->services->entries[i].arg, &w->service_state[i]);
		if (r != 0) {
			if (w->error[0] == '\0')
				snprintf(w->error, sizeof(w->error), "worker %u: %s: %s", w->index,
					 s->name, strerror(-r));
			return r;
		}
		w->services_started = i + 1;
	}
	return 0;
}

static void worker_services_ready(struct worker *w)
{
	for (unsigned i = 0; i < w->services_started; i++)
		if (worker_service_at(w, i)->ready != NULL)
			worker_service_at(w, i)->ready(w, w->service_state[i]);
}

static void worker_services_stop(struct worker *w)
{
	while (w->services_started > 0) {
		unsigned i = --w->services_started;
		if (worker_service_at(w, i)->stop != NULL)
			worker_service_at(w, i)->stop(w, w->service_state[i]);
		w->service_state[i] = NULL;
	}
}

bool worker_idle(struct worker *w)
{
	for (unsigned i = w->services_started; i-- > 0;) {
		const struct worker_service *s = worker_service_at(w, i);
		if (s->idle != NULL && !s->idle(w, w->service_state[i]))
			return false;
	}
	return true;
}

/* While winding down, wake the loop now and then: a drained worker waits
 * for the others, and nothing else would wake it. */
static void worker_drain_tick(struct timer *t)
{
	struct worker *w = container_of(t, struct worker, drain_timer);
	timer_arm(&w->timers, t, w->now_ms, WORKER_DRAIN_TICK_MS);
}

void worker_shutdown(struct worker *w)
{
	if (w->shutting_down)
		return;
	w->shutting_down = true;
	for (unsigned i = w->services_started; i-- > 0;)
		if (worker_service_at(w, i)->drain != NULL)
			worker_service_at(w, i)->drain(w, w->service_state[i]);
	timer_init(&w->drain_timer, worker_drain_tick);
	timer_arm(&w->timers, &w->drain_timer, w->now_ms, WORKER_DRAIN_TICK_MS);
}

/*
 * A draining worker whose services are all idle counts itself drained,
 * for good (nothing new starts on it); all leave once every worker is
 * drained and each is still idle (nothing is on its way between them).
 */
static void worker_shutdown_step(struct worker *w)
{
	if (!w->shutting_down || !worker_idle(w))
		return;
	if (w->group == NULL) {
		worker_exit(w);
		return;
	}
	if (!w->drained) {
		w->drained = true;
		atomic_fetch_add(&w->group->drained, 1);
	}
	if (atomic_load(&w->group->drained) == w->group->count)
		worker_exit(w);
}

/* ---- the loop ---------------------------------------------------------------- */

unsigned worker_turn(struct worker *w, int64_t max_wait_ms)
{
	for (unsigned i = w->services_started; i-- > 0;)
		if (worker_service_at(w, i)->before_wait != NULL)
			worker_service_at(w, i)->before_wait(w, w->service_state[i]);
	log_flush();
	w->now_ms = worker_clock_ms();
	int64_t wait_ms = timer_wheel_next_ms(&w->timers, w->now_ms);
	if (max_wait_ms >= 0 && (wait_ms < 0 || wait_ms > max_wait_ms))
		wait_ms = max_wait_ms;
	struct io_uring_cqe *cqe;
	int r;
	if (wait_ms == 0) {
		r = io_uring_submit(&w->ring);
	} else if (wait_ms > 0) {
		struct __kernel_timespec ts = {.tv_sec = wait_ms / 1000,
					       .tv_nsec = (wait_ms % 1000) * 1000000};
		r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
	} else {
		r = io_uring_submit_and_wait(&w->ring, 1);
	}
	if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY)
		log_event(LOG_LEVEL_ERROR, "event=ring_error worker=%u error=\"%s\"", w->index,
			  strerror(-r));
	unsigned seen = worker_complete(w);
	timer_wheel_advance(&w->timers, w->now_ms);
	return seen;
}

void worker_wait(struct worker *w, int64_t max_wait_ms)
{
	if (io_uring_cq_ready(&w->ring) > 0)
		return;
	struct __kernel_timespec ts = {.tv_sec = max_wait_ms / 1000,
				       .tv_nsec = (max_wait_ms % 1000) * 1000000};
	struct io_uring_cqe *cqe;
	io_uring_wait_cqe_timeout(&w->ring, &cqe, &ts);
}

static void worker_loop(struct worker *w)
{
	while (!w->exit_requested) {
		worker_turn(w, -1);
		worker_shutdown_step(w);
	}
	log_flush();
}

/* ---- birth and death ------------------------------------------------------- */

/*
 * After the services stopped: what their stop queued (the closes of
 * spool files) still goes to the kernel, and is waited for, briefly.
 * Completions are only counted: whoever issued them is gone.
 */
static void worker_settle(struct worker *w)
{
	if (w->ring.ring_fd < 0)
		return;
	io_uring_submit(&w->ring);
	uint64_t deadline = worker_clock_ms() + WORKER_SETTLE_MS;
	while (w->in_flight > 0 && worker_clock_ms() < deadline) {
		struct __kernel_timespec ts = {.tv_nsec = 10 * 1000000};
		struct io_uring_cqe *cqe;
		io_uring_wait_cqe_timeout(&w->ring, &cqe, &ts);
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			seen++;
			if (io_uring_cqe_get_data(cqe) != &w->wake_op &&
			    !(cqe->flags & IORING_CQE_F_MORE))
				w->in_flight--;
		}
		io_uring_cq_advance(&w->ring, seen);
	}
}

static void worker_cleanup(struct worker *w)
{
	worker_settle(w);
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
	w->ring.ring_fd = -1;
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	w->wake_fd = -1;
}

/* The ring, the receive buffers, the wake-up, then the services. */
static int worker_setup(struct worker *w)
{
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
		r = worker_services_start(w);
	}
	return r;
}

int worker_init(struct worker *w, unsigned index, const struct worker_services *services)
{
	memset(w, 0, sizeof(*w));
	w->index = index;
	w->cpu = -1;
	w->wake_fd = -1;
	w->ring.ring_fd = -1;
	w->services = services;
	int r = worker_setup(w);
	if (r != 0) {
		worker_services_stop(w);
		worker_cleanup(w);
		return r;
	}
	worker_services_ready(w);
	return 0;
}

void worker_fini(struct worker *w)
{
	worker_services_stop(w);
	log_flush();
	worker_cleanup(w);
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

	int r = worker_setup(w);
	if (r != 0) /* it has nothing to wind down: the others must not wait for it */
		atomic_fetch_add(&w->group->drained, 1);
	worker_report_started(w, r);
	if (r == 0) {
		log_thread_buffered(true);
		worker_loop(w);
		log_thread_buffered(false);
	}
	worker_services_stop(w);
	worker_cleanup(w);
	return NULL;
}

static void worker_ready_handle(struct xmsg *msg)
{
	worker_services_ready(container_of(msg, struct worker, ready_msg));
}

static void worker_shutdown_handle(struct xmsg *msg)
{
	worker_shutdown(container_of(msg, struct worker, shutdown_msg));
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

int worker_group_start_services(struct worker_group *g, unsigned count,
				const struct worker_services *services, char *err, size_t err_size)
{
	memset(g, 0, sizeof(*g));
	g->workers = calloc(count, sizeof(*g->workers));
	if (g->workers == NULL) {
		snprintf(err, err_size, "out of memory for %u workers", count);
		return -ENOMEM;
	}
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	atomic_init(&g->drained, 0);
	struct cpuset allowed;
	cpuset_allowed(&allowed);
	unsigned spawned = 0;
	int status = 0;
	for (unsigned i = 0; i < count; i++) {
		struct worker *w = &g->workers[i];
		w->index = i;
		w->cpu = count <= allowed.count ? allowed.cpus[i] : -1;
		w->wake_fd = -1;
		w->ring.ring_fd = -1;
		w->services = services;
		w->group = g;
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
		return status;
	}
	return 0;
}

void worker_group_ready(struct worker_group *g)
{
	/* Every worker has started every service: work that crosses workers
	 * (a recipient handed to another shard) has somewhere to go. */
	for (unsigned i = 0; i < g->count; i++)
		worker_send(&g->workers[i], &g->workers[i].ready_msg, worker_ready_handle);
}

int worker_group_start(struct worker_group *g, unsigned count,
		       const struct worker_services *services, char *err, size_t err_size)
{
	int r = worker_group_start_services(g, count, services, err, err_size);
	if (r == 0)
		worker_group_ready(g);
	return r;
}

static const struct metric_family worker_cq_overflows = {
	"ferry_io_uring_cq_overflows_total",
	"Completions the kernel could not post at once to a worker's ring (completion-queue "
	"overflows).",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};
static const struct metric_family worker_buffers_exhausted = {
	"ferry_io_uring_recv_buffers_exhausted_total",
	"Receives that found a worker's provided-buffer ring empty (ENOBUFS; the receive is "
	"asked again).",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};

void worker_metrics(struct worker *w, struct metrics *out)
{
	unsigned overflow = w->ring.cq.koverflow != NULL ? *w->ring.cq.koverflow : 0;
	metrics_add(out, &worker_cq_overflows, NULL, overflow);
	metrics_add(out, &worker_buffers_exhausted, NULL, (double)w->recv_buffers_exhausted);
	for (unsigned i = 0; i < w->services_started; i++) {
		const struct worker_service *svc = w->services->entries[i].service;
		if (svc->metrics != NULL)
			svc->metrics(w, w->service_state[i], out);
	}
}
