#include "core/timer.h"

#include <stddef.h>

#define TIMER_MASK (TIMER_SLOTS - 1)

static void timer_slot_set(struct timer_wheel *w, size_t slot, bool on)
{
	uint64_t bit = UINT64_C(1) << (slot % 64);
	if (on)
		w->occupied[slot / 64] |= bit;
	else
		w->occupied[slot / 64] &= ~bit;
}

void timer_wheel_init(struct timer_wheel *w, uint64_t now_ms)
{
	w->tick = now_ms / TIMER_TICK_MS;
	w->count = 0;
	for (size_t i = 0; i < TIMER_SLOTS; i++)
		list_init(&w->slots[i]);
	for (size_t i = 0; i < TIMER_SLOTS / 64; i++)
		w->occupied[i] = 0;
}

void timer_init(struct timer *t, timer_fn *fire)
{
	list_node_init(&t->link);
	t->expires_tick = 0;
	t->fire = fire;
}

bool timer_armed(const struct timer *t)
{
	return list_linked(&t->link);
}

static void timer_unlink(struct timer_wheel *w, struct timer *t)
{
	list_remove(&t->link);
	size_t slot = t->expires_tick & TIMER_MASK;
	if (list_empty(&w->slots[slot]))
		timer_slot_set(w, slot, false);
	w->count--;
}

void timer_cancel(struct timer_wheel *w, struct timer *t)
{
	if (timer_armed(t))
		timer_unlink(w, t);
}

void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t now_ms, uint64_t delay_ms)
{
	timer_cancel(w, t);
	/* Round up: never fire early. Never before the next unprocessed tick. */
	uint64_t tick = (now_ms + delay_ms + TIMER_TICK_MS - 1) / TIMER_TICK_MS;
	if (tick <= w->tick)
		tick = w->tick + 1;
	t->expires_tick = tick;
	list_insert_tail(&w->slots[tick & TIMER_MASK], &t->link);
	timer_slot_set(w, tick & TIMER_MASK, true);
	w->count++;
}

static void timer_run_slot(struct timer_wheel *w, uint64_t tick)
{
	struct list_node *head = &w->slots[tick & TIMER_MASK];
	/*
	 * Detach the due timers first: callbacks may re-arm into this slot.
	 * A detached timer stays armed, and counted, until it fires: a
	 * callback may cancel (or re-arm) one that is due after it, which
	 * then leaves `due` and the count once, not twice.
	 */
	struct list_node due;
	list_init(&due);
	struct timer *t, *next;
	list_for_each_entry_safe(t, next, head, link)
	{
		if (t->expires_tick > tick)
			continue; /* a later round */
		list_remove(&t->link);
		list_insert_tail(&due, &t->link);
	}
	if (list_empty(head))
		timer_slot_set(w, tick & TIMER_MASK, false);
	struct list_node *first;
	while ((first = list_first(&due)) != NULL) {
		list_remove(first);
		w->count--;
		t = container_of(first, struct timer, link);
		t->fire(t);
	}
}

void timer_wheel_advance(struct timer_wheel *w, uint64_t now_ms)
{
	uint64_t now_tick = now_ms / TIMER_TICK_MS;
	if (now_tick <= w->tick)
		return;
	/* After a long sleep every slot is visited once: a full lap covers all. */
	uint64_t from = w->tick + 1;
	if (now_tick - w->tick > TIMER_SLOTS)
		from = now_tick - TIMER_SLOTS + 1;
	w->tick = now_tick;
	for (uint64_t tick = from; tick <= now_tick && w->count > 0; tick++)
		timer_run_slot(w, tick);
}

int64_t timer_wheel_next_ms(const struct timer_wheel *w, uint64_t now_ms)
{
	if (w->count == 0)
		return -1;
	/* Find the next occupied slot after the current tick via the bitmap. */
	for (uint64_t d = 1; d <= TIMER_SLOTS;) {
		size_t slot = (size_t)((w->tick + d) & TIMER_MASK);
		uint64_t word = w->occupied[slot / 64] >> (slot % 64);
		if (word == 0) {
			d += 64 - slot % 64;
			continue;
		}
		d += (uint64_t)__builtin_ctzll(word);
		if (d > TIMER_SLOTS)
			break;
		uint64_t due_ms = (w->tick + d) * TIMER_TICK_MS;
		return due_ms > now_ms ? (int64_t)(due_ms - now_ms) : 0;
	}
	return TIMER_SLOTS * TIMER_TICK_MS;
}
