/*
 * timer — a per-worker hashed timer wheel. Pure: time is passed in.
 *
 * Ticks are TIMER_TICK_MS long; a timer fires on the first advance at or
 * after its expiry tick, so it may fire up to one tick late, never early.
 * Timers further out than the wheel's span wait in their slot for more
 * rounds. The worker sleeps in one kernel timeout until
 * timer_wheel_next_ms() says the next occupied slot is due.
 *
 * Idle timeouts are armed lazily: a session that sees activity does not
 * touch the wheel; when its timer fires it checks its last activity and
 * re-arms if the deadline moved. That keeps the per-command cost at zero.
 */
#ifndef FERRY_CORE_TIMER_H
#define FERRY_CORE_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/list.h"

#define TIMER_TICK_MS 20
#define TIMER_SLOTS   4096 /* power of two; span = 81.92 s */

struct timer;
typedef void timer_fn(struct timer *t);

struct timer {
	struct list_node link; /* in its slot; unlinked: not armed */
	uint64_t expires_tick;
	timer_fn *fire;
};

struct timer_wheel {
	uint64_t tick; /* last tick processed */
	uint64_t count;
	struct list_node slots[TIMER_SLOTS];
	uint64_t occupied[TIMER_SLOTS / 64];
};

void timer_wheel_init(struct timer_wheel *w, uint64_t now_ms);

void timer_init(struct timer *t, timer_fn *fire);
bool timer_armed(const struct timer *t);

/* Arm (or re-arm) t to fire at now_ms + delay_ms. */
void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t now_ms, uint64_t delay_ms);
void timer_cancel(struct timer_wheel *w, struct timer *t);

/* Fire every timer due at now_ms. A fired timer is disarmed before its
 * callback runs; the callback may re-arm it or arm/cancel others. */
void timer_wheel_advance(struct timer_wheel *w, uint64_t now_ms);

/* Milliseconds until the next occupied slot is due (0: now), or -1 when
 * no timer is armed. */
int64_t timer_wheel_next_ms(const struct timer_wheel *w, uint64_t now_ms);

#endif
