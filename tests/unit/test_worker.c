/*
 * Tests for core/worker.c's services: the order the layers' services run
 * in (start and ready bottom up, before_wait, drain and stop top down), a
 * failed start that stops what had started, a drained worker that leaves
 * only once every service is idle, a group of worker threads that leaves
 * together, one started in two steps that is not ready in between, and a
 * reconfiguration that reaches every started service of every worker on
 * the worker's own thread, bottom up, then calls done once per worker,
 * even for a worker that answers after the caller stopped waiting.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/worker.h"

static char t_calls[512];

static void t_note(const char *what, const void *arg)
{
	size_t len = strlen(t_calls);
	snprintf(t_calls + len, sizeof(t_calls) - len, "%s%s:%s", len ? " " : "", what,
		 (const char *)arg);
}

struct t_state {
	const char *name;
	bool busy; /* not idle while draining */
};

static int t_start(struct worker *w, void *arg, void **state)
{
	(void)w;
	struct t_state *s = arg;
	t_note("start", s->name);
	if (strcmp(s->name, "fails") == 0) {
		snprintf(w->error, sizeof(w->error), "refused");
		return -EPERM;
	}
	*state = s;
	return 0;
}

#define T_OP(op)                                                                                   \
	static void t_##op(struct worker *w, void *state)                                          \
	{                                                                                          \
		(void)w;                                                                           \
		t_note(#op, ((struct t_state *)state)->name);                                      \
	}
T_OP(ready)
T_OP(before_wait)
T_OP(drain)
T_OP(stop)

static bool t_idle(struct worker *w, void *state)
{
	(void)w;
	return !((struct t_state *)state)->busy;
}

static const struct worker_service t_service = {
	.name = "test",
	.start = t_start,
	.ready = t_ready,
	.before_wait = t_before_wait,
	.drain = t_drain,
	.idle = t_idle,
	.stop = t_stop,
};

Test(worker, services_run_bottom_up_and_wind_down_top_down)
{
	static struct t_state store = {.name = "store"}, smtp = {.name = "smtp"};
	struct worker_services set = {0};
	cr_assert_eq(worker_services_add(&set, &t_service, &store), 0);
	cr_assert_eq(worker_services_add(&set, &t_service, &smtp), 0);
	static struct worker w;
	t_calls[0] = '\0';
	cr_assert_eq(worker_init(&w, 0, &set), 0, "%s", w.error);
	cr_assert_str_eq(t_calls, "start:store start:smtp ready:store ready:smtp");
	t_calls[0] = '\0';
	worker_turn(&w, 0);
	cr_assert_str_eq(t_calls, "before_wait:smtp before_wait:store");
	t_calls[0] = '\0';
	smtp.busy = true;
	worker_shutdown(&w);
	cr_assert_str_eq(t_calls, "drain:smtp drain:store");
	cr_assert_not(worker_idle(&w), "idle while a service still works");
	smtp.busy = false;
	cr_assert(worker_idle(&w));
	t_calls[0] = '\0';
	worker_fini(&w);
	cr_assert_str_eq(t_calls, "stop:smtp stop:store");
}

Test(worker, a_failed_start_stops_only_what_had_started)
{
	static struct t_state store = {.name = "store"}, broken = {.name = "fails"},
			      above = {.name = "above"};
	struct worker_services set = {0};
	worker_services_add(&set, &t_service, &store);
	worker_services_add(&set, &t_service, &broken);
	worker_services_add(&set, &t_service, &above);
	static struct worker w;
	t_calls[0] = '\0';
	cr_assert_eq(worker_init(&w, 3, &set), -EPERM);
	cr_assert_str_eq(t_calls, "start:store start:fails stop:store");
	cr_assert_str_eq(w.error, "refused");
}

Test(worker, at_most_worker_max_services)
{
	static struct t_state s = {.name = "s"};
	struct worker_services set = {0};
	for (int i = 0; i < WORKER_MAX_SERVICES; i++)
		cr_assert_eq(worker_services_add(&set, &t_service, &s), 0);
	cr_assert_eq(worker_services_add(&set, &t_service, &s), -E2BIG);
}

/* Two worker threads: each leaves its loop only once both are drained. */
static atomic_int t_group_stops;

static int t_group_start(struct worker *w, void *arg, void **state)
{
	(void)w;
	*state = arg;
	return 0;
}

static void t_group_stop(struct worker *w, void *state)
{
	(void)w;
	(void)state;
	atomic_fetch_add(&t_group_stops, 1);
}

static atomic_int t_group_readies;

static void t_group_ready(struct worker *w, void *state)
{
	(void)w;
	(void)state;
	atomic_fetch_add(&t_group_readies, 1);
}

static const struct worker_service t_group_service = {
	.name = "group-test",
	.start = t_group_start,
	.ready = t_group_ready,
	.stop = t_group_stop,
};

Test(worker, a_group_starts_and_leaves_together)
{
	struct worker_services set = {0};
	worker_services_add(&set, &t_group_service, NULL);
	struct worker_group g;
	char err[256];
	atomic_store(&t_group_stops, 0);
	cr_assert_eq(worker_group_start(&g, 2, &set, err, sizeof(err)), 0, "%s", err);
	worker_group_shutdown(&g);
	worker_group_join(&g);
	cr_assert_eq(atomic_load(&t_group_stops), 2);
}

/* Started in two steps (ferryd gives up root in between): no service is
 * ready until worker_group_ready, and a group that never gets ready still
 * winds down. */
Test(worker, a_group_started_in_two_steps_is_ready_only_when_told)
{
	struct worker_services set = {0};
	worker_services_add(&set, &t_group_service, NULL);
	struct worker_group g;
	char err[256];
	atomic_store(&t_group_stops, 0);
	atomic_store(&t_group_readies, 0);
	cr_assert_eq(worker_group_start_services(&g, 2, &set, err, sizeof(err)), 0, "%s", err);
	usleep(100 * 1000);
	cr_assert_eq(atomic_load(&t_group_readies), 0, "a service was ready before the group");
	worker_group_ready(&g);
	for (int i = 0; i < 500 && atomic_load(&t_group_readies) < 2; i++)
		usleep(10 * 1000);
	cr_assert_eq(atomic_load(&t_group_readies), 2);
	worker_group_shutdown(&g);
	worker_group_join(&g);
	cr_assert_eq(atomic_load(&t_group_stops), 2);

	atomic_store(&t_group_stops, 0);
	atomic_store(&t_group_readies, 0);
	cr_assert_eq(worker_group_start_services(&g, 2, &set, err, sizeof(err)), 0, "%s", err);
	worker_group_shutdown(&g);
	worker_group_join(&g);
	cr_assert_eq(atomic_load(&t_group_stops), 2);
	cr_assert_eq(atomic_load(&t_group_readies), 0);
}

/*
 * Reconfiguration. Every hook and every done is noted, in the order they
 * ran (a sequence number under a lock), with the thread it ran on.
 */
struct t_generation {
	atomic_int refs; /* one per worker, dropped by done */
};

struct t_reconfigure_note {
	int service; /* 1, 2, ...; 0 for done */
	unsigned worker;
	pthread_t thread;
	void *arg;
};

static pthread_mutex_t t_notes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct t_reconfigure_note t_notes[32];
static unsigned t_notes_count;

static void t_reconfigure_note(int service, unsigned worker, void *arg)
{
	pthread_mutex_lock(&t_notes_lock);
	if (t_notes_count < sizeof(t_notes) / sizeof(t_notes[0]))
		t_notes[t_notes_count++] = (struct t_reconfigure_note){
			.service = service, .worker = worker, .thread = pthread_self(), .arg = arg};
	pthread_mutex_unlock(&t_notes_lock);
}

/* The service's number is its registration arg, kept as its state. */
static void t_reconfigure(struct worker *w, void *state, void *arg)
{
	t_reconfigure_note(*(const int *)state, w->index, arg);
}

static void t_generation_done(void *arg)
{
	struct t_generation *gen = arg;
	t_reconfigure_note(0, 0, arg);
	atomic_fetch_sub(&gen->refs, 1);
}

static const struct worker_service t_reconfigure_service = {
	.name = "reconfigure-test",
	.start = t_group_start,
	.reconfigure = t_reconfigure,
};

/* A service of its own whose reconfigure is NULL: skipped. */
static const struct worker_service t_no_reconfigure_service = {
	.name = "no-reconfigure",
	.start = t_group_start,
};

/* Worker wi's notes, in the order they ran: the services' numbers, then
 * 0 for a done that ran on its thread. */
static void t_notes_of_worker(const struct worker_group *g, unsigned wi, char *out, size_t size)
{
	out[0] = '\0';
	pthread_mutex_lock(&t_notes_lock);
	for (unsigned i = 0; i < t_notes_count; i++) {
		const struct t_reconfigure_note *n = &t_notes[i];
		if (!pthread_equal(n->thread, g->workers[wi].thread))
			continue;
		if (n->service != 0)
			cr_expect_eq(n->worker, wi, "worker %u's hook ran on worker %u's thread",
				     n->worker, wi);
		size_t len = strlen(out);
		snprintf(out + len, size - len, "%s%d", len ? " " : "", n->service);
	}
	pthread_mutex_unlock(&t_notes_lock);
}

static void t_notes_expect_args(const void *arg)
{
	pthread_mutex_lock(&t_notes_lock);
	for (unsigned i = 0; i < t_notes_count; i++)
		cr_expect_eq(t_notes[i].arg, arg, "note %u: arg %p, not %p", i, t_notes[i].arg,
			     arg);
	pthread_mutex_unlock(&t_notes_lock);
}

static unsigned t_notes_total(void)
{
	pthread_mutex_lock(&t_notes_lock);
	unsigned n = t_notes_count;
	pthread_mutex_unlock(&t_notes_lock);
	return n;
}

Test(worker, a_reconfiguration_reaches_every_service_bottom_up_on_each_worker_thread)
{
	static int first = 1, second = 2;
	struct worker_services set = {0};
	worker_services_add(&set, &t_reconfigure_service, &first);
	worker_services_add(&set, &t_no_reconfigure_service, NULL);
	worker_services_add(&set, &t_reconfigure_service, &second);
	struct worker_group g;
	char err[256];
	cr_assert_eq(worker_group_start(&g, 2, &set, err, sizeof(err)), 0, "%s", err);

	struct t_generation gen;
	atomic_init(&gen.refs, 2);
	cr_assert_eq(worker_group_reconfigure(&g, &gen, t_generation_done, 10 * 1000), 0);
	/* done ran before the call returned: nothing is left to wait for. */
	cr_expect_eq(atomic_load(&gen.refs), 0, "%d references left", atomic_load(&gen.refs));
	cr_expect_eq(t_notes_total(), 6, "%u notes: 2 services and a done per worker",
		     t_notes_total());
	t_notes_expect_args(&gen);
	char notes[64];
	for (unsigned wi = 0; wi < g.count; wi++) {
		t_notes_of_worker(&g, wi, notes, sizeof(notes));
		cr_expect_str_eq(notes, "1 2 0", "worker %u ran \"%s\"", wi, notes);
	}

	/* Without done, and again: the same services, in the same order. */
	pthread_mutex_lock(&t_notes_lock);
	t_notes_count = 0;
	pthread_mutex_unlock(&t_notes_lock);
	static int other;
	cr_assert_eq(worker_group_reconfigure(&g, &other, NULL, 10 * 1000), 0);
	t_notes_expect_args(&other);
	for (unsigned wi = 0; wi < g.count; wi++) {
		t_notes_of_worker(&g, wi, notes, sizeof(notes));
		cr_expect_str_eq(notes, "1 2", "worker %u ran \"%s\"", wi, notes);
	}

	worker_group_shutdown(&g);
	worker_group_join(&g);
}

/* A reconfigure that waits for the test to open the gate: the caller's
 * wait is certain to end first, whatever the machine's speed. */
static pthread_mutex_t t_gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t t_gate_cond = PTHREAD_COND_INITIALIZER;
static bool t_gate_open;

static void t_reconfigure_at_gate(struct worker *w, void *state, void *arg)
{
	pthread_mutex_lock(&t_gate_lock);
	while (!t_gate_open)
		pthread_cond_wait(&t_gate_cond, &t_gate_lock);
	pthread_mutex_unlock(&t_gate_lock);
	t_reconfigure(w, state, arg);
}

static const struct worker_service t_gated_service = {
	.name = "gated",
	.start = t_group_start,
	.reconfigure = t_reconfigure_at_gate,
};

Test(worker, a_late_worker_still_reconfigures_and_calls_done_once)
{
	static int first = 1, second = 2;
	struct worker_services set = {0};
	worker_services_add(&set, &t_reconfigure_service, &first);
	worker_services_add(&set, &t_gated_service, &second);
	struct worker_group g;
	char err[256];
	cr_assert_eq(worker_group_start(&g, 2, &set, err, sizeof(err)), 0, "%s", err);

	/* Its message outlives the call: the generation must too. */
	static struct t_generation gen;
	atomic_init(&gen.refs, 2);
	cr_assert_eq(worker_group_reconfigure(&g, &gen, t_generation_done, 50), -ETIMEDOUT);
	cr_expect_eq(atomic_load(&gen.refs), 2, "done ran before its worker was through");

	pthread_mutex_lock(&t_gate_lock);
	t_gate_open = true;
	pthread_cond_broadcast(&t_gate_cond);
	pthread_mutex_unlock(&t_gate_lock);
	for (int i = 0; i < 1000 && atomic_load(&gen.refs) > 0; i++)
		usleep(10 * 1000);
	cr_assert_eq(atomic_load(&gen.refs), 0, "%d workers never called done",
		     atomic_load(&gen.refs));
	t_notes_expect_args(&gen);
	char notes[64];
	for (unsigned wi = 0; wi < g.count; wi++) {
		t_notes_of_worker(&g, wi, notes, sizeof(notes));
		cr_expect_str_eq(notes, "1 2 0", "worker %u ran \"%s\"", wi, notes);
	}

	/* The late messages freed what they shared: the group still answers. */
	cr_assert_eq(worker_group_reconfigure(&g, &gen, NULL, 10 * 1000), 0);

	worker_group_shutdown(&g);
	worker_group_join(&g);
	cr_expect_eq(t_notes_total(), 10, "%u notes: every done ran once", t_notes_total());
}
