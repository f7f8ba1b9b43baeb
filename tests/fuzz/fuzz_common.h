/*
 * fuzz_common — what every libFuzzer target here shares: a check that
 * aborts with its location (so libFuzzer saves the input), and a small
 * PRNG seeded from the input, so split points and limits derive from the
 * bytes and a crash replays from its input alone.
 */
#ifndef FERRY_TESTS_FUZZ_COMMON_H
#define FERRY_TESTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static inline uint64_t fuzz_rng_next(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

/* FNV-1a of the input; never 0 (an xorshift state must not be). */
static inline uint64_t fuzz_seed(const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 0x100000001b3ull;
	return h ? h : 1;
}

#endif
