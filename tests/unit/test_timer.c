/* timer: never early, at most a tick late, cancel and re-arm, long sleeps. */
#include <criterion/criterion.h>

#include "core/timer.h"

static struct timer_wheel wheel;
static unsigned fired;
static uint64_t fired_at[16];
static uint64_t clock_ms;

static void record(struct timer *t)
{
	(void)t;
	if (fired < 16)
		fired_at[fired] = clock_ms;
	fired++;
}

static void setup(void)
{
	fired = 0;
	clock_ms = 1000000;
	timer_wheel_init(&wheel, clock_ms);
}

TestSuite(timer, .init = setup);

static void run_until(uint64_t end)
{
	while (clock_ms < end) {
		clock_ms += 1;
		timer_wheel_advance(&wheel, clock_ms);
	}
}

Test(timer, fires_once_not_early)
{
	struct timer t;
	timer_init(&t, record);
	timer_arm(&wheel, &t, clock_ms, 100);
	uint64_t start = clock_ms;
	run_until(start + 99);
	cr_assert_eq(fired, 0, "fired early");
	run_until(start + 100 + TIMER_TICK_MS);
	cr_assert_eq(fired, 1);
	cr_assert(fired_at[0] >= start + 100 && fired_at[0] <= start + 100 + TIMER_TICK_MS);
	cr_assert(!timer_armed(&t));
	run_until(start + 1000);
	cr_assert_eq(fired, 1, "fired twice");
}

Test(timer, cancel)
{
	struct timer t;
	timer_init(&t, record);
	timer_arm(&wheel, &t, clock_ms, 50);
	timer_cancel(&wheel, &t);
	run_until(clock_ms + 500);
	cr_assert_eq(fired, 0);
	cr_assert_eq(timer_wheel_next_ms(&wheel, clock_ms), -1);
}

Test(timer, longer_than_the_wheel)
{
	struct timer t;
	timer_init(&t, record);
	uint64_t delay = (uint64_t)TIMER_SLOTS * TIMER_TICK_MS * 2 + 500; /* two laps and more */
	uint64_t start = clock_ms;
	timer_arm(&wheel, &t, clock_ms, delay);
	/* Advance in big steps as an idle worker would. */
	while (clock_ms < start + delay - 1000) {
		clock_ms += 700;
		timer_wheel_advance(&wheel, clock_ms);
	}
	cr_assert_eq(fired, 0, "fired a lap early");
	run_until(start + delay + TIMER_TICK_MS);
	cr_assert_eq(fired, 1);
}

Test(timer, long_sleep_fires_everything_due)
{
	struct timer t[5];
	for (int i = 0; i < 5; i++) {
		timer_init(&t[i], record);
		timer_arm(&wheel, &t[i], clock_ms, 10 + (uint64_t)i * 30000);
	}
	clock_ms += 10ull * TIMER_SLOTS * TIMER_TICK_MS; /* slept far past all */
	timer_wheel_advance(&wheel, clock_ms);
	cr_assert_eq(fired, 5);
}

Test(timer, next_ms_points_at_the_next_slot)
{
	struct timer t;
	timer_init(&t, record);
	cr_assert_eq(timer_wheel_next_ms(&wheel, clock_ms), -1);
	timer_arm(&wheel, &t, clock_ms, 1000);
	int64_t next = timer_wheel_next_ms(&wheel, clock_ms);
	cr_assert(next >= 1000 && next <= 1000 + TIMER_TICK_MS, "next=%lld", (long long)next);
}

static struct timer rearming;
static unsigned rearm_count;

static void rearm(struct timer *t)
{
	if (++rearm_count < 3)
		timer_arm(&wheel, t, clock_ms, 40);
}

Test(timer, callback_may_rearm)
{
	timer_init(&rearming, rearm);
	timer_arm(&wheel, &rearming, clock_ms, 40);
	run_until(clock_ms + 1000);
	cr_assert_eq(rearm_count, 3);
	cr_assert(!timer_armed(&rearming));
}

static struct timer cancelled_by_first;

static void cancel_the_other(struct timer *t)
{
	record(t);
	timer_cancel(&wheel, &cancelled_by_first);
}

Test(timer, callback_may_cancel_a_timer_due_in_the_same_tick)
{
	/* A connection's idle timer and its alarm, due together: the first to
	 * fire closes the connection, which cancels the other. */
	struct timer first, later;
	timer_init(&first, cancel_the_other);
	timer_init(&cancelled_by_first, record);
	timer_init(&later, record);
	timer_arm(&wheel, &first, clock_ms, 100);
	timer_arm(&wheel, &cancelled_by_first, clock_ms, 100);
	timer_arm(&wheel, &later, clock_ms, 1000);
	uint64_t start = clock_ms;
	run_until(start + 100 + TIMER_TICK_MS);
	cr_assert_eq(fired, 1, "the cancelled timer fired, or the first did not");
	cr_assert(!timer_armed(&cancelled_by_first));
	cr_assert_gt(timer_wheel_next_ms(&wheel, clock_ms), 0,
		     "the wheel lost count of the timer still armed");
	run_until(start + 1000 + TIMER_TICK_MS);
	cr_assert_eq(fired, 2, "the timer armed later never fired");
	cr_assert_eq(timer_wheel_next_ms(&wheel, clock_ms), -1);
}
