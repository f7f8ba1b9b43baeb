/*
 * libFuzzer target: the DATA decoder of net/smtp_parse.
 *
 * The whole input is the body as a client sent it (so the seeds in
 * tests/fuzz/seeds/ are plain bodies); limits, split point and output
 * buffer sizes are drawn from a hash of the input. Each input is decoded
 * with RFC-sized limits and with small ones, and each time whole into a
 * roomy buffer, split at one point into a tiny buffer, and in chunks into
 * another tiny buffer: all three must agree on output, consumed bytes,
 * counters and flags. A plain model of RFC 5321 4.5.2 (the first CRLF "."
 * CRLF ends the body, the start counting as after a CRLF; a leading dot is
 * removed) must agree with the decoder, on the input and on the input with
 * CRLF "." CRLF appended, which the decoder must always find.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/smtp_parse.h"
#include "tests/fuzz/fuzz_common.h"

#define FUZZ_CANARY 16

struct fuzz_run {
	char *out; /* n bytes: never more output than input */
	size_t out_len;
	size_t consumed;
	bool ended;
	struct smtp_data_decoder d;
};

enum fuzz_chunking { FUZZ_WHOLE, FUZZ_SPLIT, FUZZ_RANDOM };

static void fuzz_decode(struct fuzz_run *run, const char *in, size_t n, uint32_t max_line,
			uint64_t max_size, size_t out_cap, enum fuzz_chunking how, size_t split,
			uint64_t seed)
{
	char *out = malloc(out_cap + FUZZ_CANARY);
	size_t pos = 0;

	FUZZ_CHECK(out != NULL);
	run->out = malloc(n + 1);
	FUZZ_CHECK(run->out != NULL);
	run->out_len = 0;
	run->ended = false;
	smtp_data_decoder_init(&run->d, max_line, max_size);

	size_t used0 = (size_t)-1, made0 = (size_t)-1;
	FUZZ_CHECK(smtp_data_decode(&run->d, in, 0, &used0, out, out_cap, &made0) ==
		   SMTP_DATA_NEED_MORE);
	FUZZ_CHECK(used0 == 0 && made0 == 0);

	while (pos < n && !run->ended) {
		size_t end = n;
		if (how == FUZZ_SPLIT && pos < split)
			end = split;
		else if (how == FUZZ_RANDOM)
			end = pos + 1 + (size_t)(fuzz_rng_next(&seed) % 97);
		if (end > n)
			end = n;
		while (pos < end) {
			size_t used = (size_t)-1, made = (size_t)-1;
			memset(out, 0xa5, out_cap + FUZZ_CANARY);
			enum smtp_data_status st = smtp_data_decode(&run->d, in + pos, end - pos,
								    &used, out, out_cap, &made);
			FUZZ_CHECK(used <= end - pos);
			FUZZ_CHECK(made <= out_cap);
			for (size_t k = out_cap; k < out_cap + FUZZ_CANARY; k++)
				FUZZ_CHECK((unsigned char)out[k] == 0xa5);
			FUZZ_CHECK(run->out_len + made <= n);
			memcpy(run->out + run->out_len, out, made);
			run->out_len += made;
			pos += used;
			if (st == SMTP_DATA_END) {
				FUZZ_CHECK(pos >= 3 && memcmp(in + pos - 3, ".\r\n", 3) == 0);
				run->ended = true;
				break;
			}
			FUZZ_CHECK(st == SMTP_DATA_NEED_MORE);
			FUZZ_CHECK(used > 0 || made > 0 || pos == end);
			/* Produced output never passes the limit, rejected or not. */
			FUZZ_CHECK(run->out_len <= max_size);
			if (!smtp_data_rejected(&run->d))
				FUZZ_CHECK(run->d.size == run->out_len);
		}
	}
	run->consumed = pos;
	free(out);
}

static void fuzz_assert_same(const struct fuzz_run *a, const struct fuzz_run *b)
{
	FUZZ_CHECK(a->out_len == b->out_len);
	FUZZ_CHECK(memcmp(a->out, b->out, a->out_len) == 0);
	FUZZ_CHECK(a->consumed == b->consumed);
	FUZZ_CHECK(a->ended == b->ended);
	FUZZ_CHECK(a->d.size == b->d.size);
	FUZZ_CHECK(a->d.line_len == b->d.line_len);
	FUZZ_CHECK(a->d.state == b->d.state);
	FUZZ_CHECK(a->d.bare_lf == b->d.bare_lf);
	FUZZ_CHECK(a->d.bare_cr == b->d.bare_cr);
	FUZZ_CHECK(a->d.nul == b->d.nul);
	FUZZ_CHECK(a->d.line_too_long == b->d.line_too_long);
	FUZZ_CHECK(a->d.too_big == b->d.too_big);
}

static bool fuzz_after_crlf(const char *s, size_t j)
{
	return j == 0 || (j >= 2 && s[j - 2] == '\r' && s[j - 1] == '\n');
}

/*
 * The model, written for clarity, not speed. Returns false when the input
 * holds no end; otherwise fills the expected decoder results.
 */
static bool fuzz_model(const char *s, size_t n, uint32_t max_line, uint64_t max_size, char *body,
		       size_t *body_len, size_t *consumed, struct smtp_data_decoder *want)
{
	size_t end = 0;
	bool found = false;

	for (size_t p = 0; p + 3 <= n; p++) {
		if (fuzz_after_crlf(s, p) && memcmp(s + p, ".\r\n", 3) == 0) {
			end = p;
			found = true;
			break;
		}
	}
	if (!found)
		return false;
	*consumed = end + 3;

	memset(want, 0, sizeof(*want));
	*body_len = 0;
	size_t line_start = 0;
	for (size_t j = 0; j < end; j++) {
		char c = s[j];
		if (!(c == '.' && fuzz_after_crlf(s, j)))
			body[(*body_len)++] = c;
		if (c == '\n' && (j == 0 || s[j - 1] != '\r'))
			want->bare_lf = true;
		if (c == '\r' && (j + 1 == end || s[j + 1] != '\n'))
			want->bare_cr = true;
		if (c == '\0')
			want->nul = true;
		if (c == '\n') {
			/* Octets as transmitted, less the CR of a CRLF. */
			size_t len = j - line_start;
			if (len > 0 && s[j - 1] == '\r')
				len--;
			if (len > max_line)
				want->line_too_long = true;
			line_start = j + 1;
		}
	}
	/* The body before the final "." ends with LF, or is empty. */
	FUZZ_CHECK(line_start == end);
	want->size = *body_len;
	want->too_big = want->size > max_size;
	return true;
}

static void fuzz_check_model(const struct fuzz_run *run, const char *in, size_t n,
			     uint32_t max_line, uint64_t max_size)
{
	char *body = malloc(n + 1);
	size_t body_len, consumed;
	struct smtp_data_decoder want;

	FUZZ_CHECK(body != NULL);
	bool found = fuzz_model(in, n, max_line, max_size, body, &body_len, &consumed, &want);
	FUZZ_CHECK(found == run->ended);
	if (!found) {
		FUZZ_CHECK(run->consumed == n);
		free(body);
		return;
	}
	FUZZ_CHECK(run->consumed == consumed);
	FUZZ_CHECK(run->d.size == want.size);
	FUZZ_CHECK(run->d.bare_lf == want.bare_lf);
	FUZZ_CHECK(run->d.bare_cr == want.bare_cr);
	FUZZ_CHECK(run->d.nul == want.nul);
	FUZZ_CHECK(run->d.line_too_long == want.line_too_long);
	FUZZ_CHECK(run->d.too_big == want.too_big);
	/* A refused body may be cut anywhere, but only ever short. */
	if (smtp_data_rejected(&run->d))
		FUZZ_CHECK(run->out_len <= body_len);
	else
		FUZZ_CHECK(run->out_len == body_len);
	FUZZ_CHECK(memcmp(run->out, body, run->out_len) == 0);
	free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_one_config(const char *in, size_t n, uint32_t max_line, uint64_t max_size,
			    uint64_t seed)
{
	size_t cap_a = 1 + (seed & 0x0f), cap_b = 1 + ((seed >> 4) & 0x0f);
	size_t split = (size_t)((seed >> 8) % (n + 1));
	struct fuzz_run whole, split_run, random_run;

	fuzz_decode(&whole, in, n, max_line, max_size, n + 1, FUZZ_WHOLE, 0, seed);
	fuzz_decode(&split_run, in, n, max_line, max_size, cap_a, FUZZ_SPLIT, split, seed);
	fuzz_decode(&random_run, in, n, max_line, max_size, cap_b, FUZZ_RANDOM, 0, seed);
	fuzz_assert_same(&whole, &split_run);
	fuzz_assert_same(&whole, &random_run);
	fuzz_check_model(&whole, in, n, max_line, max_size);
	free(whole.out);
	free(split_run.out);
	free(random_run.out);

	/* With an end appended, the decoder must always get to it. */
	char *terminated = malloc(n + 5);
	FUZZ_CHECK(terminated != NULL);
	memcpy(terminated, in, n);
	memcpy(terminated + n, "\r\n.\r\n", 5);
	fuzz_decode(&whole, terminated, n + 5, max_line, max_size, n + 6, FUZZ_WHOLE, 0, seed);
	FUZZ_CHECK(whole.ended);
	fuzz_decode(&split_run, terminated, n + 5, max_line, max_size, cap_a, FUZZ_SPLIT, split,
		    seed);
	fuzz_assert_same(&whole, &split_run);
	fuzz_check_model(&whole, terminated, n + 5, max_line, max_size);
	free(whole.out);
	free(split_run.out);
	free(terminated);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	uint64_t seed = fuzz_seed(data, size);

	/* What ferryd runs with: only the bare CR/LF and NUL flags can trip. */
	fuzz_one_config(in, size, 998, UINT64_MAX, seed);
	/* Limits of the order of the input, so that they trip anywhere. */
	uint32_t max_line = (uint32_t)((seed >> 24) % 40);
	uint64_t max_size = (seed >> 32) % (size + 8);
	fuzz_one_config(in, size, max_line, max_size, seed * 0x9e3779b97f4a7c15ull + 1);
	return 0;
}
