/*
 * check — invariants that stay checked in Release builds (after Redis's
 * serverAssert): the preconditions of the state machines whose violation
 * would corrupt the spool, lose a message or reuse freed memory. A failed
 * CHECK logs the condition and where it failed, then aborts: a core dump
 * of the bug is better than a relay that goes on with a broken queue.
 *
 * Use CHECK for what no input from the network can cause, only a bug: a
 * message aborted after its commit, a connection used after its close.
 * Bad input gets a reply, never a CHECK. assert() remains for the
 * expensive checks that only debug builds can afford.
 */
#ifndef FERRY_CORE_CHECK_H
#define FERRY_CORE_CHECK_H

#define CHECK(cond)                                                                                \
	(__builtin_expect(!!(cond), 1) ? (void)0                                                   \
				       : check_failed(#cond, __FILE__, __LINE__, __func__))

__attribute__((noreturn)) void check_failed(const char *cond, const char *file, int line,
					    const char *func);

#endif
