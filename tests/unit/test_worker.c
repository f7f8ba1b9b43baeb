/*
 * Tests for core/worker.c's services: the order the layers' services run
 * in (start and ready bottom up, before_wait, drain and stop top down), a
 * failed start that stops what had started, a drained worker that leaves
 * only once every service is idle, a group of worker threads that leaves
 * together, and one started in two steps that is not ready in between.
 */
#include <criterion/criterion.h>

#include <errno.h>
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
