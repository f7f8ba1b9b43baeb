/*
 * Tests for queue/record: the spool's on-disk format. Recovery trusts what
 * record_frame accepts and cuts or quarantines what it refuses, so besides
 * round trips these check the exact bytes, every truncation point, every
 * single-bit corruption and every too-small buffer.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "queue/record.h"

#define TEST_SALT  0x0123456789abcdefull
#define TEST_OTHER 0xfedcba9876543210ull
#define TEST_FILL  0xa5 /* canary: never a byte the encoder writes as padding */

static const char test_id[RECORD_ID_LEN + 1] = "0A1B2C3D4E5F6G7H";

/* ---- helpers ------------------------------------------------------------- */

static struct record_string str(const char *s)
{
	return (struct record_string){.data = s, .len = (uint16_t)strlen(s)};
}

static void set_id(char id[RECORD_ID_LEN], const char *s)
{
	memcpy(id, s, RECORD_ID_LEN);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	cr_assert_not_null(p);
	return p;
}

static uint32_t load_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void store_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* The checksum as the header comment defines it, computed independently
 * of the codec: one-shot XXH3 over a contiguous copy. */
static uint64_t reference_checksum(const uint8_t *rec, uint64_t salt)
{
	uint32_t len = load_u32(rec);
	uint8_t *tmp = xmalloc(16 + (size_t)len);
	memcpy(tmp, rec, 16);
	memcpy(tmp + 16, rec + RECORD_HEADER_SIZE, len);
	uint64_t h = XXH3_64bits_withSeed(tmp, 16 + (size_t)len, salt);
	free(tmp);
	return h;
}

/* Rewrite the checksum after editing a record, so that only the edit is
 * under test. */
static void reseal(uint8_t *rec, uint64_t salt)
{
	store_u64(rec + 16, reference_checksum(rec, salt));
}

static struct record_view frame_ok(const uint8_t *buf, size_t len)
{
	struct record_view v;
	enum record_status st = record_frame(buf, len, TEST_SALT, &v);
	cr_assert_eq(st, RECORD_OK, "frame: status %d", st);
	cr_assert_eq(v.size, record_size(v.length));
	cr_assert_leq(v.size, len);
	cr_assert_eq(v.payload, buf + RECORD_HEADER_SIZE);
	return v;
}

static void assert_string_eq(struct record_string got, struct record_string want, const char *what)
{
	cr_assert_eq(got.len, want.len, "%s: length %u, expected %u", what, got.len, want.len);
	cr_assert(got.len == 0 || memcmp(got.data, want.data, got.len) == 0, "%s differs", what);
}

static void assert_zero_padding(const uint8_t *rec, size_t size)
{
	for (size_t i = RECORD_HEADER_SIZE + load_u32(rec); i < size; i++)
		cr_assert_eq(rec[i], 0, "padding byte %zu is %#x", i, rec[i]);
}

/* ---- sample records, one or more of each type ---------------------------- */

#define SAMPLE_CAP 4096
#define SAMPLES    11

struct sample {
	const char *name;
	uint8_t rec[SAMPLE_CAP];
	size_t size;
};

static struct sample samples[SAMPLES];
static char sample_body[1024];

static void samples_build(void)
{
	struct record_segment seg = {.worker = 7, .sequence = 42, .created_ms = 1732800000000};
	struct record_envelope env = {
		.arrival_ms = 1732800000123,
		.client = str("192.0.2.7"),
		.helo = str("mail.client.example"),
		.sender = str("alice@example.org"),
		.nparams = 2,
		.nrecipients = 3,
	};
	struct record_string strings[] = {str("SIZE=1234"), str("BODY=8BITMIME"),
					  str("bob@example.net"), str("carol@example.net"),
					  str("dave@example.com")};
	struct record_body body_small = {.chunk = 0, .data = (const uint8_t *)"Hi\r\n", .len = 4};
	struct record_body body_large = {
		.chunk = 1, .data = (const uint8_t *)sample_body, .len = sizeof(sample_body)};
	struct record_commit commit = {.body_len = 1028, .nchunks = 2};
	struct record_rcpt_state rs = {.recipient = 1,
				       .attempts = 3,
				       .time_ms = 1732800600000,
				       .reason = str("451 4.7.1 try again later")};
	struct record_id rid;

	for (size_t i = 0; i < sizeof(sample_body); i++)
		sample_body[i] = (char)('a' + i % 26);
	set_id(env.id, test_id);
	set_id(body_small.id, test_id);
	set_id(body_large.id, test_id);
	set_id(commit.id, test_id);
	set_id(rs.id, test_id);
	set_id(rid.id, test_id);

	struct sample *s = samples;
	s->name = "segment";
	s->size = record_encode_segment(s->rec, SAMPLE_CAP, TEST_SALT, &seg);
	s++;
	s->name = "envelope";
	s->size = record_encode_envelope(s->rec, SAMPLE_CAP, TEST_SALT, &env, strings);
	s++;
	s->name = "body (small)";
	s->size = record_encode_body(s->rec, SAMPLE_CAP, TEST_SALT, &body_small);
	s++;
	s->name = "body (1 KiB)";
	s->size = record_encode_body(s->rec, SAMPLE_CAP, TEST_SALT, &body_large);
	s++;
	s->name = "commit";
	s->size = record_encode_commit(s->rec, SAMPLE_CAP, TEST_SALT, &commit);
	s++;
	s->name = "delivered";
	s->size =
		record_encode_rcpt_state(s->rec, SAMPLE_CAP, TEST_SALT, RECORD_RCPT_DELIVERED, &rs);
	s++;
	s->name = "deferred";
	s->size =
		record_encode_rcpt_state(s->rec, SAMPLE_CAP, TEST_SALT, RECORD_RCPT_DEFERRED, &rs);
	s++;
	s->name = "failed";
	s->size = record_encode_rcpt_state(s->rec, SAMPLE_CAP, TEST_SALT, RECORD_RCPT_FAILED, &rs);
	s++;
	s->name = "done";
	s->size = record_encode_id(s->rec, SAMPLE_CAP, TEST_SALT, RECORD_MESSAGE_DONE, &rid);
	s++;
	s->name = "abort";
	s->size = record_encode_id(s->rec, SAMPLE_CAP, TEST_SALT, RECORD_ABORT, &rid);
	s++;
	rs.reason = str("");
	s->name = "delivered, no reason";
	s->size =
		record_encode_rcpt_state(s->rec, SAMPLE_CAP, TEST_SALT, RECORD_RCPT_DELIVERED, &rs);
	s++;
	cr_assert_eq(s, samples + SAMPLES);
	for (size_t i = 0; i < SAMPLES; i++) {
		cr_assert_gt(samples[i].size, 0, "%s did not encode", samples[i].name);
		cr_assert_eq(samples[i].size % RECORD_ALIGN, 0);
		/* Makes every cut of the prefix tests non-zero, hence TRUNCATED. */
		cr_assert_neq(samples[i].rec[0], 0, "%s: length byte 0 is zero", samples[i].name);
	}
}

TestSuite(record, .init = samples_build);

/* ---- round trips --------------------------------------------------------- */

Test(record, segment_round_trip)
{
	const struct record_segment cases[] = {
		{.worker = 0, .sequence = 0, .created_ms = 0},
		{.worker = 3, .sequence = 17, .created_ms = 1732800000000},
		{.worker = UINT32_MAX, .sequence = UINT64_MAX, .created_ms = INT64_MIN},
		{.worker = 1, .sequence = 1, .created_ms = INT64_MAX},
		{.worker = 1, .sequence = 1, .created_ms = -1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t buf[64];
		size_t n = record_encode_segment(buf, sizeof(buf), TEST_SALT, &cases[i]);
		cr_assert_eq(n, record_size(24));
		struct record_view v = frame_ok(buf, n);
		cr_assert_eq(v.type, RECORD_SEGMENT);
		struct record_segment got;
		cr_assert_eq(record_decode_segment(&v, &got), 0);
		cr_assert_eq(got.worker, cases[i].worker);
		cr_assert_eq(got.sequence, cases[i].sequence);
		cr_assert_eq(got.created_ms, cases[i].created_ms);
	}
}

/* Encode, frame and decode an envelope and compare every field. */
static void envelope_round_trip(const struct record_envelope *env,
				const struct record_string *strings)
{
	size_t count = (size_t)env->nparams + env->nrecipients;
	size_t payload = record_envelope_payload_size(env, strings);
	size_t cap = record_size(payload);
	uint8_t *buf = xmalloc(cap);
	struct record_string *got_strings = xmalloc(sizeof(*got_strings) * (count + 1));

	size_t n = record_encode_envelope(buf, cap, TEST_SALT, env, strings);
	cr_assert_eq(n, cap, "encoded %zu, payload size says %zu", n, cap);
	assert_zero_padding(buf, n);
	struct record_view v = frame_ok(buf, n);
	cr_assert_eq(v.type, RECORD_ENVELOPE);
	cr_assert_eq(v.length, payload);

	struct record_envelope got;
	memset(&got, 0, sizeof(got));
	cr_assert_eq(record_decode_envelope(&v, &got, got_strings, count), 0);
	cr_assert(memcmp(got.id, env->id, RECORD_ID_LEN) == 0);
	cr_assert_eq(got.arrival_ms, env->arrival_ms);
	cr_assert_eq(got.nparams, env->nparams);
	cr_assert_eq(got.nrecipients, env->nrecipients);
	assert_string_eq(got.client, env->client, "client");
	assert_string_eq(got.helo, env->helo, "helo");
	assert_string_eq(got.sender, env->sender, "sender");
	for (size_t i = 0; i < count; i++)
		assert_string_eq(got_strings[i], strings[i], "param/recipient");

	/* Room for one string fewer than the record holds is refused. */
	cr_assert_eq(record_decode_envelope(&v, &got, got_strings, count - 1), RECORD_BAD);
	free(got_strings);
	free(buf);
}

Test(record, envelope_round_trip_typical)
{
	struct record_envelope env = {
		.arrival_ms = 1732800000123,
		.client = str("2001:db8::25"),
		.helo = str("[2001:db8::25]"),
		.sender = str("bounces+123@lists.example.org"),
		.nparams = 3,
		.nrecipients = 2,
	};
	struct record_string strings[] = {str("SIZE=48213"), str("BODY=8BITMIME"),
					  str("ENVID=QQ314159"), str("alice@example.net"),
					  str("\"carol smith\"@example.net")};
	set_id(env.id, test_id);
	envelope_round_trip(&env, strings);
}

Test(record, envelope_round_trip_empty_strings)
{
	/* Null sender, no params, an empty recipient string: the codec keeps
	 * strings as they are; checking them is the session's job. */
	struct record_envelope env = {.arrival_ms = -5, .nparams = 0, .nrecipients = 1};
	struct record_string strings[] = {{.data = NULL, .len = 0}};
	set_id(env.id, test_id);
	envelope_round_trip(&env, strings);
}

Test(record, envelope_round_trip_max_length_strings)
{
	char *big = xmalloc(65535);
	for (size_t i = 0; i < 65535; i++)
		big[i] = (char)(i * 31 + 7);
	struct record_string max = {.data = big, .len = 65535};
	struct record_envelope env = {.arrival_ms = INT64_MAX,
				      .client = max,
				      .helo = max,
				      .sender = max,
				      .nparams = 1,
				      .nrecipients = 2};
	struct record_string strings[] = {max, max, str("x@y")};
	set_id(env.id, test_id);
	envelope_round_trip(&env, strings);
	free(big);
}

Test(record, envelope_round_trip_most_strings)
{
	static char names[RECORD_MAX_STRINGS][24];
	static struct record_string strings[RECORD_MAX_STRINGS];
	for (size_t i = 0; i < RECORD_MAX_STRINGS; i++) {
		snprintf(names[i], sizeof(names[i]), "rcpt%zu@example.net", i);
		strings[i] = str(names[i]);
	}
	struct record_envelope env = {.arrival_ms = 1, .sender = str("a@b")};
	set_id(env.id, test_id);

	/* All recipients, then the same total split with params. */
	env.nparams = 0;
	env.nrecipients = RECORD_MAX_STRINGS;
	envelope_round_trip(&env, strings);
	env.nparams = 48;
	env.nrecipients = RECORD_MAX_STRINGS - 48;
	envelope_round_trip(&env, strings);
	env.nparams = 0;
	env.nrecipients = 100;
	envelope_round_trip(&env, strings);
}

Test(record, envelope_encoder_refuses_out_of_range)
{
	static struct record_string strings[RECORD_MAX_STRINGS + 1];
	static uint8_t buf[2 * RECORD_MAX_PAYLOAD];
	struct record_envelope env = {.nparams = 1, .nrecipients = 0};
	set_id(env.id, test_id);

	/* No recipients. */
	cr_assert_eq(record_encode_envelope(buf, sizeof(buf), TEST_SALT, &env, strings), 0);
	/* One string more than an envelope may hold. */
	env.nparams = 1;
	env.nrecipients = RECORD_MAX_STRINGS;
	cr_assert_eq(record_encode_envelope(buf, sizeof(buf), TEST_SALT, &env, strings), 0);
	/* Within the string count but over RECORD_MAX_PAYLOAD. */
	char *big = xmalloc(65535);
	memset(big, 'x', 65535);
	for (size_t i = 0; i < 16; i++)
		strings[i] = (struct record_string){.data = big, .len = 65535};
	env.nparams = 0;
	env.nrecipients = 16;
	cr_assert_gt(record_envelope_payload_size(&env, strings), RECORD_MAX_PAYLOAD);
	cr_assert_eq(record_encode_envelope(buf, sizeof(buf), TEST_SALT, &env, strings), 0);
	/* One recipient fewer fits. */
	env.nrecipients = 15;
	cr_assert_leq(record_envelope_payload_size(&env, strings), RECORD_MAX_PAYLOAD);
	cr_assert_gt(record_encode_envelope(buf, sizeof(buf), TEST_SALT, &env, strings), 0);
	free(big);
}

static void body_round_trip(uint32_t len, uint32_t chunk)
{
	uint8_t *data = len ? xmalloc(len) : NULL;
	for (uint32_t i = 0; i < len; i++)
		data[i] = (uint8_t)(i * 7 + 1);
	struct record_body body = {.chunk = chunk, .data = data, .len = len};
	set_id(body.id, test_id);
	size_t cap = record_size(20 + (size_t)len);
	uint8_t *buf = xmalloc(cap);

	cr_assert_eq(record_encode_body(buf, cap, TEST_SALT, &body), cap);
	assert_zero_padding(buf, cap);
	struct record_view v = frame_ok(buf, cap);
	cr_assert_eq(v.type, RECORD_BODY);
	struct record_body got;
	cr_assert_eq(record_decode_body(&v, &got), 0);
	cr_assert(memcmp(got.id, test_id, RECORD_ID_LEN) == 0);
	cr_assert_eq(got.chunk, chunk);
	cr_assert_eq(got.len, len);
	cr_assert(len == 0 || memcmp(got.data, data, len) == 0);
	free(buf);
	free(data);
}

Test(record, body_round_trip)
{
	/* Around every padding remainder, the one-shot/streaming checksum
	 * switch, and the largest body a record can carry. */
	for (uint32_t len = 0; len < 260; len++)
		body_round_trip(len, len);
	body_round_trip(1024, 3);
	body_round_trip(64 * 1024, UINT32_MAX);
	body_round_trip(RECORD_MAX_PAYLOAD - 20, 9);
}

Test(record, body_encoder_refuses_over_max_payload)
{
	size_t cap = record_size(RECORD_MAX_PAYLOAD + 1);
	uint8_t *buf = xmalloc(cap);
	uint8_t *data = xmalloc(RECORD_MAX_PAYLOAD);
	memset(data, 'x', RECORD_MAX_PAYLOAD);
	struct record_body body = {.chunk = 0, .data = data, .len = RECORD_MAX_PAYLOAD - 19};
	set_id(body.id, test_id);

	cr_assert_eq(record_encode_body(buf, cap, TEST_SALT, &body), 0);
	body.len = UINT32_MAX;
	cr_assert_eq(record_encode_body(buf, cap, TEST_SALT, &body), 0);
	free(data);
	free(buf);
}

Test(record, commit_round_trip)
{
	const struct record_commit cases[] = {
		{.body_len = 0, .nchunks = 0},
		{.body_len = 1028, .nchunks = 2},
		{.body_len = UINT64_MAX, .nchunks = UINT32_MAX},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct record_commit c = cases[i];
		set_id(c.id, test_id);
		uint8_t buf[64];
		size_t n = record_encode_commit(buf, sizeof(buf), TEST_SALT, &c);
		cr_assert_eq(n, record_size(28));
		struct record_view v = frame_ok(buf, n);
		cr_assert_eq(v.type, RECORD_COMMIT);
		struct record_commit got;
		cr_assert_eq(record_decode_commit(&v, &got), 0);
		cr_assert(memcmp(got.id, test_id, RECORD_ID_LEN) == 0);
		cr_assert_eq(got.body_len, c.body_len);
		cr_assert_eq(got.nchunks, c.nchunks);
	}
}

Test(record, rcpt_state_round_trip)
{
	const enum record_type types[] = {RECORD_RCPT_DELIVERED, RECORD_RCPT_DEFERRED,
					  RECORD_RCPT_FAILED};
	char *big = xmalloc(65535);
	memset(big, 'r', 65535);
	const struct record_string reasons[] = {
		{.data = NULL, .len = 0},
		str("250 2.0.0 Ok: queued as 4XyZ"),
		{.data = big, .len = 65535},
	};
	size_t cap = record_size(32 + 65535);
	uint8_t *buf = xmalloc(cap);

	for (size_t t = 0; t < 3; t++) {
		for (size_t r = 0; r < 3; r++) {
			struct record_rcpt_state st = {.recipient = (uint16_t)(r * 30000),
						       .attempts = (uint32_t)t * 0x80000000u,
						       .time_ms =
							       r == 1 ? INT64_MIN : 1732800000000,
						       .reason = reasons[r]};
			set_id(st.id, test_id);
			size_t n = record_encode_rcpt_state(buf, cap, TEST_SALT, types[t], &st);
			cr_assert_eq(n, record_size(32 + (size_t)reasons[r].len));
			assert_zero_padding(buf, n);
			struct record_view v = frame_ok(buf, n);
			cr_assert_eq(v.type, types[t]);
			struct record_rcpt_state got;
			cr_assert_eq(record_decode_rcpt_state(&v, &got), 0);
			cr_assert(memcmp(got.id, test_id, RECORD_ID_LEN) == 0);
			cr_assert_eq(got.recipient, st.recipient);
			cr_assert_eq(got.attempts, st.attempts);
			cr_assert_eq(got.time_ms, st.time_ms);
			assert_string_eq(got.reason, st.reason, "reason");
		}
	}
	free(buf);
	free(big);
}

Test(record, id_round_trip)
{
	const enum record_type types[] = {RECORD_MESSAGE_DONE, RECORD_ABORT};
	for (size_t t = 0; t < 2; t++) {
		struct record_id rid;
		set_id(rid.id, test_id);
		uint8_t buf[64];
		size_t n = record_encode_id(buf, sizeof(buf), TEST_SALT, types[t], &rid);
		cr_assert_eq(n, record_size(16));
		struct record_view v = frame_ok(buf, n);
		cr_assert_eq(v.type, types[t]);
		struct record_id got;
		cr_assert_eq(record_decode_id(&v, &got), 0);
		cr_assert(memcmp(got.id, test_id, RECORD_ID_LEN) == 0);
	}
}

Test(record, encoders_refuse_wrong_type)
{
	uint8_t buf[256];
	struct record_rcpt_state st = {.reason = str("")};
	struct record_id rid;
	set_id(st.id, test_id);
	set_id(rid.id, test_id);
	const enum record_type not_rcpt[] = {
		0, RECORD_SEGMENT, RECORD_COMMIT, RECORD_MESSAGE_DONE, RECORD_ABORT, 11};
	const enum record_type not_id[] = {
		0, RECORD_ENVELOPE, RECORD_RCPT_DELIVERED, RECORD_RCPT_FAILED, RECORD_BATCH, 11};

	for (size_t i = 0; i < sizeof(not_rcpt) / sizeof(not_rcpt[0]); i++)
		cr_assert_eq(
			record_encode_rcpt_state(buf, sizeof(buf), TEST_SALT, not_rcpt[i], &st), 0,
			"type %d", not_rcpt[i]);
	for (size_t i = 0; i < sizeof(not_id) / sizeof(not_id[0]); i++)
		cr_assert_eq(record_encode_id(buf, sizeof(buf), TEST_SALT, not_id[i], &rid), 0,
			     "type %d", not_id[i]);
}

/* ---- exact bytes ------------------------------------------------------------ */

/* Fill in the checksum of a hand-written record and compare it with the
 * encoder's output. */
static void assert_golden(const char *what, const uint8_t *got, size_t got_size, uint8_t *want,
			  size_t want_size)
{
	reseal(want, TEST_SALT);
	cr_assert_eq(got_size, want_size, "%s: size %zu, expected %zu", what, got_size, want_size);
	for (size_t i = 0; i < want_size; i++)
		cr_assert_eq(got[i], want[i], "%s: byte %zu is %#04x, expected %#04x", what, i,
			     got[i], want[i]);
	frame_ok(want, want_size);
}

#define GOLDEN_SALT_BYTES 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01
#define GOLDEN_ID_BYTES                                                                            \
	'0', 'A', '1', 'B', '2', 'C', '3', 'D', '4', 'E', '5', 'F', '6', 'G', '7', 'H'
#define GOLDEN_NO_CHECKSUM 0, 0, 0, 0, 0, 0, 0, 0

Test(record, golden_commit)
{
	struct record_commit c = {.body_len = 0x0102030405060708ull, .nchunks = 0x0a0b0c0d};
	set_id(c.id, test_id);
	/* clang-format off */
	uint8_t want[] = {
		28, 0, 0, 0,                                    /* length */
		4,                                              /* type COMMIT */
		1,                                              /* version */
		0, 0,                                           /* reserved */
		GOLDEN_SALT_BYTES,
		GOLDEN_NO_CHECKSUM,
		GOLDEN_ID_BYTES,
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* body_len */
		0x0d, 0x0c, 0x0b, 0x0a,                         /* nchunks */
		0, 0, 0, 0,                                     /* padding to 56 */
	};
	/* clang-format on */
	uint8_t got[64];
	size_t n = record_encode_commit(got, sizeof(got), TEST_SALT, &c);
	assert_golden("commit", got, n, want, sizeof(want));

	/* The checksum, spelled out: XXH3-64 of bytes 0..15 then the payload. */
	uint8_t hashed[16 + 28];
	memcpy(hashed, want, 16);
	memcpy(hashed + 16, want + 24, 28);
	uint64_t sum = XXH3_64bits_withSeed(hashed, sizeof(hashed), TEST_SALT);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(got[16 + i], (uint8_t)(sum >> (8 * i)));
}

Test(record, golden_segment)
{
	struct record_segment seg = {
		.worker = 0x11223344, .sequence = 0x0102030405060708ull, .created_ms = -2};
	/* clang-format off */
	uint8_t want[] = {
		24, 0, 0, 0, 1, 1, 0, 0,                        /* SEGMENT */
		GOLDEN_SALT_BYTES,
		GOLDEN_NO_CHECKSUM,
		0x44, 0x33, 0x22, 0x11,                         /* worker */
		0, 0, 0, 0,                                     /* reserved */
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* sequence */
		0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* created_ms = -2 */
	};
	/* clang-format on */
	uint8_t got[64];
	size_t n = record_encode_segment(got, sizeof(got), TEST_SALT, &seg);
	assert_golden("segment", got, n, want, sizeof(want));
}

Test(record, golden_envelope)
{
	struct record_envelope env = {.arrival_ms = 0x0102030405060708,
				      .client = str("1.2.3.4"),
				      .helo = str("h"),
				      .sender = str(""),
				      .nparams = 1,
				      .nrecipients = 2};
	struct record_string strings[] = {str("P=1"), str("a@b"), str("")};
	set_id(env.id, test_id);
	/* clang-format off */
	uint8_t want[] = {
		54, 0, 0, 0, 2, 1, 0, 0,                        /* ENVELOPE */
		GOLDEN_SALT_BYTES,
		GOLDEN_NO_CHECKSUM,
		GOLDEN_ID_BYTES,
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* arrival_ms */
		1, 0,                                           /* nparams */
		2, 0,                                           /* nrecipients */
		7, 0, '1', '.', '2', '.', '3', '.', '4',        /* client */
		1, 0, 'h',                                      /* helo */
		0, 0,                                           /* sender: null */
		3, 0, 'P', '=', '1',                            /* param */
		3, 0, 'a', '@', 'b',                            /* recipient */
		0, 0,                                           /* recipient: empty */
		0, 0,                                           /* padding to 80 */
	};
	/* clang-format on */
	cr_assert_eq(record_envelope_payload_size(&env, strings), 54);
	uint8_t got[128];
	size_t n = record_encode_envelope(got, sizeof(got), TEST_SALT, &env, strings);
	assert_golden("envelope", got, n, want, sizeof(want));
}

Test(record, golden_body)
{
	struct record_body body = {.chunk = 0x01020304, .data = (const uint8_t *)"abc", .len = 3};
	set_id(body.id, test_id);
	/* clang-format off */
	uint8_t want[] = {
		23, 0, 0, 0, 3, 1, 0, 0,                        /* BODY */
		GOLDEN_SALT_BYTES,
		GOLDEN_NO_CHECKSUM,
		GOLDEN_ID_BYTES,
		0x04, 0x03, 0x02, 0x01,                         /* chunk */
		'a', 'b', 'c',                                  /* data */
		0,                                              /* padding to 48 */
	};
	/* clang-format on */
	uint8_t got[64];
	size_t n = record_encode_body(got, sizeof(got), TEST_SALT, &body);
	assert_golden("body", got, n, want, sizeof(want));
}

Test(record, golden_rcpt_state)
{
	struct record_rcpt_state st = {.recipient = 0x0102,
				       .attempts = 0x03040506,
				       .time_ms = 0x0708090a0b0c0d0e,
				       .reason = str("4xx")};
	set_id(st.id, test_id);
	/* clang-format off */
	uint8_t want[] = {
		35, 0, 0, 0, 6, 1, 0, 0,                        /* RCPT_DEFERRED */
		GOLDEN_SALT_BYTES,
		GOLDEN_NO_CHECKSUM,
		GOLDEN_ID_BYTES,
		0x02, 0x01,                                     /* recipient */
		0x06, 0x05, 0x04, 0x03,                         /* attempts */
		0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07, /* time_ms */
		3, 0, '4', 'x', 'x',                            /* reason */
		0, 0, 0, 0, 0,                                  /* padding to 64 */
	};
	/* clang-format on */
	uint8_t got[64];
	size_t n = record_encode_rcpt_state(got, sizeof(got), TEST_SALT, RECORD_RCPT_DEFERRED, &st);
	assert_golden("deferred", got, n, want, sizeof(want));
}

Test(record, golden_abort)
{
	struct record_id rid;
	set_id(rid.id, test_id);
	/* clang-format off */
	uint8_t want[] = {
		16, 0, 0, 0, 9, 1, 0, 0,                        /* ABORT */
		GOLDEN_SALT_BYTES,
		GOLDEN_NO_CHECKSUM,
		GOLDEN_ID_BYTES,
	};
	/* clang-format on */
	uint8_t got[64];
	size_t n = record_encode_id(got, sizeof(got), TEST_SALT, RECORD_ABORT, &rid);
	assert_golden("abort", got, n, want, sizeof(want));
}

Test(record, checksum_matches_reference_at_every_length)
{
	/* The codec hashes small records from a stack copy and large ones with
	 * the streaming state; both must equal the plain definition. */
	for (size_t s = 0; s < SAMPLES; s++)
		cr_assert_eq(load_u32(samples[s].rec + 16) | (uint64_t)load_u32(samples[s].rec + 20)
								     << 32,
			     reference_checksum(samples[s].rec, TEST_SALT), "%s", samples[s].name);
	static uint8_t data[2048];
	static uint8_t buf[4096];
	for (uint32_t len = 0; len <= sizeof(data); len += len < 300 ? 1 : 97) {
		struct record_body body = {.chunk = len, .data = data, .len = len};
		set_id(body.id, test_id);
		data[len ? len - 1 : 0] ^= 0x5a;
		size_t n = record_encode_body(buf, sizeof(buf), TEST_SALT, &body);
		cr_assert_gt(n, 0);
		uint64_t want = reference_checksum(buf, TEST_SALT);
		uint64_t got = load_u32(buf + 16) | (uint64_t)load_u32(buf + 20) << 32;
		cr_assert_eq(got, want, "body of %u bytes", len);
	}
	/* Salt 0 is a different path inside XXH3 (no derived secret). */
	uint8_t rec[64];
	struct record_commit c = {.body_len = 1, .nchunks = 1};
	set_id(c.id, test_id);
	size_t n = record_encode_commit(rec, sizeof(rec), 0, &c);
	cr_assert_eq(load_u32(rec + 16) | (uint64_t)load_u32(rec + 20) << 32,
		     reference_checksum(rec, 0));
	struct record_view v;
	cr_assert_eq(record_frame(rec, n, 0, &v), RECORD_OK);
}

/* ---- framing --------------------------------------------------------------- */

Test(record, end_on_zeros)
{
	static uint8_t zeros[8192];
	struct record_view v;

	for (size_t len = 0; len <= RECORD_HEADER_SIZE; len++)
		cr_assert_eq(record_frame(zeros, len, TEST_SALT, &v), RECORD_END, "len %zu", len);
	cr_assert_eq(record_frame(zeros, sizeof(zeros), TEST_SALT, &v), RECORD_END);
	cr_assert_eq(record_frame(NULL, 0, TEST_SALT, &v), RECORD_END);
	/* Only the header decides: garbage after 24 zero bytes is still END. */
	zeros[RECORD_HEADER_SIZE] = 1;
	cr_assert_eq(record_frame(zeros, sizeof(zeros), TEST_SALT, &v), RECORD_END);
}

Test(record, short_nonzero_header_is_truncated)
{
	uint8_t buf[RECORD_HEADER_SIZE];
	struct record_view v;

	for (size_t len = 1; len < RECORD_HEADER_SIZE; len++) {
		for (size_t at = 0; at < len; at++) {
			memset(buf, 0, sizeof(buf));
			buf[at] = 0x80;
			cr_assert_eq(record_frame(buf, len, TEST_SALT, &v), RECORD_TRUNCATED,
				     "len %zu, byte %zu set", len, at);
		}
	}
}

Test(record, truncated_at_every_cut)
{
	for (size_t s = 0; s < SAMPLES; s++) {
		const struct sample *sm = &samples[s];
		struct record_view v;
		cr_assert_eq(record_frame(sm->rec, 0, TEST_SALT, &v), RECORD_END);
		for (size_t cut = 1; cut < sm->size; cut++) {
			/* An exact-size copy, so that ASan sees any read past the cut. */
			uint8_t *copy = xmalloc(cut);
			memcpy(copy, sm->rec, cut);
			enum record_status st = record_frame(copy, cut, TEST_SALT, &v);
			cr_assert_eq(st, RECORD_TRUNCATED, "%s cut at %zu of %zu: status %d",
				     sm->name, cut, sm->size, st);
			free(copy);
		}
		frame_ok(sm->rec, sm->size);
	}
}

Test(record, bad_on_every_single_bit_flip)
{
	/*
	 * Records sit in a preallocated, zeroed area as large as the biggest
	 * record, so a flipped length bit that grows the record still finds
	 * the bytes and must fail on the checksum, not stop at TRUNCATED.
	 */
	size_t area = record_size(RECORD_MAX_PAYLOAD);
	uint8_t *buf = xmalloc(area);

	for (size_t s = 0; s < SAMPLES; s++) {
		const struct sample *sm = &samples[s];
		memset(buf, 0, area);
		memcpy(buf, sm->rec, sm->size);
		size_t covered = RECORD_HEADER_SIZE + load_u32(sm->rec);
		struct record_view v;

		for (size_t bit = 0; bit < covered * 8; bit++) {
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			enum record_status st = record_frame(buf, area, TEST_SALT, &v);
			cr_assert_eq(st, RECORD_BAD, "%s: bit %zu flipped: status %d", sm->name,
				     bit, st);
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		}
		/* Padding is outside the checksum and not looked at (record.c). */
		for (size_t bit = covered * 8; bit < sm->size * 8; bit++) {
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			cr_assert_eq(record_frame(buf, area, TEST_SALT, &v), RECORD_OK);
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		}
		cr_assert_eq(record_frame(buf, area, TEST_SALT, &v), RECORD_OK);
	}
	free(buf);
}

Test(record, bad_with_wrong_salt)
{
	for (size_t s = 0; s < SAMPLES; s++) {
		struct record_view v;
		const struct sample *sm = &samples[s];
		cr_assert_eq(record_frame(sm->rec, sm->size, TEST_OTHER, &v), RECORD_BAD);
		cr_assert_eq(record_frame(sm->rec, sm->size, TEST_SALT ^ 1, &v), RECORD_BAD);
		cr_assert_eq(record_frame(sm->rec, sm->size, 0, &v), RECORD_BAD);
		/* Wrong salt is refused from the header alone, before the length
		 * is trusted to ask for more bytes. */
		cr_assert_eq(record_frame(sm->rec, RECORD_HEADER_SIZE, TEST_OTHER, &v), RECORD_BAD);
	}

	/* Even a record whose checksum is right for its own salt: a record of
	 * another segment must not be taken for this one's. */
	uint8_t rec[64];
	struct record_commit c = {.body_len = 1, .nchunks = 1};
	set_id(c.id, test_id);
	size_t n = record_encode_commit(rec, sizeof(rec), TEST_OTHER, &c);
	struct record_view v;
	cr_assert_eq(record_frame(rec, n, TEST_OTHER, &v), RECORD_OK);
	cr_assert_eq(record_frame(rec, n, TEST_SALT, &v), RECORD_BAD);
}

/* Edit a header field of the commit sample, fix the checksum, frame. */
static enum record_status frame_edited(size_t offset, const uint8_t *bytes, size_t n, size_t len)
{
	static uint8_t buf[2 * RECORD_MAX_PAYLOAD];
	struct record_view v;

	memset(buf, 0, sizeof(buf));
	memcpy(buf, samples[4].rec, samples[4].size);
	memcpy(buf + offset, bytes, n);
	/* A length past the area has no checksum to fix; the header refuses it. */
	if (RECORD_HEADER_SIZE + (size_t)load_u32(buf) <= sizeof(buf))
		reseal(buf, TEST_SALT);
	return record_frame(buf, len, TEST_SALT, &v);
}

Test(record, bad_header_even_with_good_checksum)
{
	const size_t whole = 2 * RECORD_MAX_PAYLOAD;
	cr_assert_eq(frame_edited(0, (const uint8_t[]){28}, 1, whole), RECORD_OK);

	for (unsigned version = 0; version < 256; version++)
		if (version != RECORD_VERSION)
			cr_assert_eq(frame_edited(5, (const uint8_t[]){(uint8_t)version}, 1, whole),
				     RECORD_BAD, "version %u", version);
	for (unsigned type = 0; type < 256; type++) {
		enum record_status want =
			type >= RECORD_SEGMENT && type <= RECORD_BATCH ? RECORD_OK : RECORD_BAD;
		cr_assert_eq(frame_edited(4, (const uint8_t[]){(uint8_t)type}, 1, whole), want,
			     "type %u", type);
	}
	cr_assert_eq(frame_edited(6, (const uint8_t[]){1, 0}, 2, whole), RECORD_BAD);
	cr_assert_eq(frame_edited(6, (const uint8_t[]){0, 0x80}, 2, whole), RECORD_BAD);

	uint8_t len[4];
	store_u32(len, RECORD_MAX_PAYLOAD);
	cr_assert_eq(frame_edited(0, len, 4, whole), RECORD_OK);
	store_u32(len, RECORD_MAX_PAYLOAD + 1);
	cr_assert_eq(frame_edited(0, len, 4, whole), RECORD_BAD);
	store_u32(len, UINT32_MAX);
	cr_assert_eq(frame_edited(0, len, 4, whole), RECORD_BAD);
	/* An absurd length is corruption, not a request to read more. */
	cr_assert_eq(frame_edited(0, len, 4, RECORD_HEADER_SIZE), RECORD_BAD);
	/* A sane length past the end of the buffer is. */
	store_u32(len, RECORD_MAX_PAYLOAD);
	cr_assert_eq(frame_edited(0, len, 4, RECORD_HEADER_SIZE), RECORD_TRUNCATED);
	cr_assert_eq(frame_edited(0, len, 4, record_size(RECORD_MAX_PAYLOAD) - 1),
		     RECORD_TRUNCATED);
	cr_assert_eq(frame_edited(0, len, 4, record_size(RECORD_MAX_PAYLOAD)), RECORD_OK);
}

/* ---- many records from one buffer ----------------------------------------- */

static uint64_t rng_next(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

Test(record, sequence_of_records)
{
	enum { COUNT = 2000 };
	static uint8_t area[4 << 20];
	static uint8_t data[3000];
	static uint32_t lens[COUNT];
	static enum record_type types[COUNT];
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	size_t used = 0;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)rng_next(&rng);
	memset(area, 0, sizeof(area));

	/* Interleaved records of varied types and sizes, then zeros. */
	for (uint32_t i = 0; i < COUNT; i++) {
		char id[RECORD_ID_LEN];
		snprintf(id, sizeof(id), "%015u", i);
		size_t n = 0;
		types[i] = (enum record_type)(i == 0 ? RECORD_SEGMENT : 2 + rng_next(&rng) % 8);
		lens[i] = (uint32_t)(rng_next(&rng) % sizeof(data));
		switch (types[i]) {
		case RECORD_SEGMENT: {
			struct record_segment seg = {.worker = 1, .sequence = 5, .created_ms = 9};
			n = record_encode_segment(area + used, sizeof(area) - used, TEST_SALT,
						  &seg);
			break;
		}
		case RECORD_ENVELOPE: {
			struct record_envelope env = {
				.arrival_ms = i, .nparams = 0, .nrecipients = 1};
			struct record_string rcpt = {.data = (const char *)data,
						     .len = (uint16_t)lens[i]};
			memcpy(env.id, id, RECORD_ID_LEN);
			n = record_encode_envelope(area + used, sizeof(area) - used, TEST_SALT,
						   &env, &rcpt);
			break;
		}
		case RECORD_BODY: {
			struct record_body b = {.chunk = i, .data = data, .len = lens[i]};
			memcpy(b.id, id, RECORD_ID_LEN);
			n = record_encode_body(area + used, sizeof(area) - used, TEST_SALT, &b);
			break;
		}
		case RECORD_COMMIT: {
			struct record_commit c = {.body_len = lens[i], .nchunks = i};
			memcpy(c.id, id, RECORD_ID_LEN);
			n = record_encode_commit(area + used, sizeof(area) - used, TEST_SALT, &c);
			break;
		}
		case RECORD_RCPT_DELIVERED:
		case RECORD_RCPT_DEFERRED:
		case RECORD_RCPT_FAILED: {
			struct record_rcpt_state st = {
				.recipient = (uint16_t)i,
				.reason = {.data = (const char *)data,
					   .len = (uint16_t)(lens[i] % 300)}};
			memcpy(st.id, id, RECORD_ID_LEN);
			n = record_encode_rcpt_state(area + used, sizeof(area) - used, TEST_SALT,
						     types[i], &st);
			break;
		}
		default: {
			struct record_id rid;
			memcpy(rid.id, id, RECORD_ID_LEN);
			n = record_encode_id(area + used, sizeof(area) - used, TEST_SALT, types[i],
					     &rid);
			break;
		}
		}
		cr_assert_gt(n, 0, "record %u did not encode", i);
		used += n;
	}

	size_t pos = 0, last = 0;
	for (uint32_t i = 0; i < COUNT; i++) {
		struct record_view v = frame_ok(area + pos, sizeof(area) - pos);
		last = pos;
		char id[RECORD_ID_LEN];
		snprintf(id, sizeof(id), "%015u", i);
		cr_assert_eq(v.type, types[i], "record %u", i);
		switch (v.type) {
		case RECORD_SEGMENT: {
			struct record_segment seg;
			cr_assert_eq(record_decode_segment(&v, &seg), 0);
			cr_assert_eq(seg.sequence, 5);
			break;
		}
		case RECORD_ENVELOPE: {
			struct record_envelope env;
			struct record_string rcpt;
			cr_assert_eq(record_decode_envelope(&v, &env, &rcpt, 1), 0);
			cr_assert(memcmp(env.id, id, RECORD_ID_LEN) == 0);
			cr_assert_eq(env.arrival_ms, i);
			cr_assert_eq(rcpt.len, (uint16_t)lens[i]);
			cr_assert(memcmp(rcpt.data, data, rcpt.len) == 0);
			break;
		}
		case RECORD_BODY: {
			struct record_body b;
			cr_assert_eq(record_decode_body(&v, &b), 0);
			cr_assert(memcmp(b.id, id, RECORD_ID_LEN) == 0);
			cr_assert_eq(b.chunk, i);
			cr_assert_eq(b.len, lens[i]);
			cr_assert(memcmp(b.data, data, b.len) == 0);
			break;
		}
		case RECORD_COMMIT: {
			struct record_commit c;
			cr_assert_eq(record_decode_commit(&v, &c), 0);
			cr_assert(memcmp(c.id, id, RECORD_ID_LEN) == 0);
			cr_assert_eq(c.body_len, lens[i]);
			cr_assert_eq(c.nchunks, i);
			break;
		}
		case RECORD_RCPT_DELIVERED:
		case RECORD_RCPT_DEFERRED:
		case RECORD_RCPT_FAILED: {
			struct record_rcpt_state st;
			cr_assert_eq(record_decode_rcpt_state(&v, &st), 0);
			cr_assert(memcmp(st.id, id, RECORD_ID_LEN) == 0);
			cr_assert_eq(st.recipient, (uint16_t)i);
			cr_assert_eq(st.reason.len, lens[i] % 300);
			break;
		}
		default: {
			struct record_id rid;
			cr_assert_eq(record_decode_id(&v, &rid), 0);
			cr_assert(memcmp(rid.id, id, RECORD_ID_LEN) == 0);
			break;
		}
		}
		pos += v.size;
	}
	cr_assert_eq(pos, used);
	struct record_view v;
	cr_assert_eq(record_frame(area + pos, sizeof(area) - pos, TEST_SALT, &v), RECORD_END);
	/* The same stream torn one byte short: its last record reports it. */
	cr_assert_eq(record_frame(area + last, used - last - 1, TEST_SALT, &v), RECORD_TRUNCATED);
}

/* ---- decoders ---------------------------------------------------------------- */

Test(record, decode_type_mismatch)
{
	for (size_t s = 0; s < SAMPLES; s++) {
		struct record_view v = frame_ok(samples[s].rec, samples[s].size);
		struct record_segment seg;
		struct record_envelope env;
		struct record_string strings[8];
		struct record_body body;
		struct record_commit commit;
		struct record_rcpt_state rs;
		struct record_id rid;
		int want[10];
		for (int t = 0; t < 10; t++)
			want[t] = t == (int)v.type ? 0 : RECORD_BAD;
		/* One decoder serves the three recipient states, one both id records. */
		int rcpt = v.type >= RECORD_RCPT_DELIVERED && v.type <= RECORD_RCPT_FAILED
				   ? 0
				   : RECORD_BAD;
		int id = v.type == RECORD_MESSAGE_DONE || v.type == RECORD_ABORT ? 0 : RECORD_BAD;

		const char *name = samples[s].name;
		cr_assert_eq(record_decode_segment(&v, &seg), want[RECORD_SEGMENT], "%s", name);
		cr_assert_eq(record_decode_envelope(&v, &env, strings, 8), want[RECORD_ENVELOPE],
			     "%s", name);
		cr_assert_eq(record_decode_body(&v, &body), want[RECORD_BODY], "%s", name);
		cr_assert_eq(record_decode_commit(&v, &commit), want[RECORD_COMMIT], "%s", name);
		cr_assert_eq(record_decode_rcpt_state(&v, &rs), rcpt, "%s", name);
		cr_assert_eq(record_decode_id(&v, &rid), id, "%s", name);
	}
}

/* Decode a hand-made view of `type` over payload[0..len). */
static int decode_view(enum record_type type, const uint8_t *payload, uint32_t len)
{
	struct record_view v = {
		.type = type, .payload = payload, .length = len, .size = record_size(len)};
	struct record_segment seg;
	struct record_envelope env;
	static struct record_string strings[RECORD_MAX_STRINGS + 8];
	struct record_body body;
	struct record_commit commit;
	struct record_rcpt_state rs;
	struct record_id rid;

	switch (type) {
	case RECORD_SEGMENT:
		return record_decode_segment(&v, &seg);
	case RECORD_ENVELOPE:
		return record_decode_envelope(&v, &env, strings, RECORD_MAX_STRINGS + 8);
	case RECORD_BODY:
		return record_decode_body(&v, &body);
	case RECORD_COMMIT:
		return record_decode_commit(&v, &commit);
	case RECORD_RCPT_DELIVERED:
	case RECORD_RCPT_DEFERRED:
	case RECORD_RCPT_FAILED:
		return record_decode_rcpt_state(&v, &rs);
	default:
		return record_decode_id(&v, &rid);
	}
}

Test(record, decode_refuses_short_or_long_payloads)
{
	/* Every payload shorter than the real one is refused (bodies only
	 * below their fixed part), and so is one trailing byte more. */
	for (size_t s = 0; s < SAMPLES; s++) {
		struct record_view v = frame_ok(samples[s].rec, samples[s].size);
		uint8_t *copy = xmalloc(v.length + 1);
		memcpy(copy, v.payload, v.length);
		copy[v.length] = 0;
		for (uint32_t len = 0; len < v.length; len++) {
			/* exact-size copies so ASan sees reads past the view */
			uint8_t *cut = xmalloc(len);
			memcpy(cut, v.payload, len);
			int want = v.type == RECORD_BODY && len >= 20 ? 0 : RECORD_BAD;
			cr_assert_eq(decode_view(v.type, cut, len), want, "%s at %u",
				     samples[s].name, len);
			free(cut);
		}
		cr_assert_eq(decode_view(v.type, copy, v.length), 0);
		int want = v.type == RECORD_BODY ? 0 : RECORD_BAD;
		cr_assert_eq(decode_view(v.type, copy, v.length + 1), want, "%s + 1",
			     samples[s].name);
		free(copy);
	}
}

Test(record, decode_refuses_inconsistent_payloads)
{
	uint8_t p[256];

	/* SEGMENT: the reserved word must be zero. */
	memset(p, 0, sizeof(p));
	cr_assert_eq(decode_view(RECORD_SEGMENT, p, 24), 0);
	p[7] = 1;
	cr_assert_eq(decode_view(RECORD_SEGMENT, p, 24), RECORD_BAD);

	/* ENVELOPE: id, arrival, counts, three empty strings, then strings. */
	memset(p, 0, sizeof(p));
	p[26] = 1; /* one recipient */
	cr_assert_eq(decode_view(RECORD_ENVELOPE, p, 36), 0);
	p[26] = 0; /* none */
	cr_assert_eq(decode_view(RECORD_ENVELOPE, p, 36), RECORD_BAD);
	p[24] = 1; /* one param, still no recipient */
	cr_assert_eq(decode_view(RECORD_ENVELOPE, p, 36), RECORD_BAD);
	p[24] = 0;
	p[26] = 1;
	p[34] = 1; /* the recipient's length runs one past the end */
	cr_assert_eq(decode_view(RECORD_ENVELOPE, p, 36), RECORD_BAD);
	cr_assert_eq(decode_view(RECORD_ENVELOPE, p, 37), 0);
	p[34] = 0xff;
	p[35] = 0xff;
	cr_assert_eq(decode_view(RECORD_ENVELOPE, p, sizeof(p)), RECORD_BAD);

	/* ENVELOPE: more strings than RECORD_MAX_STRINGS, however many fit. */
	size_t n = 34 + 2 * (RECORD_MAX_STRINGS + 1);
	uint8_t *big = xmalloc(n);
	memset(big, 0, n);
	big[24] = 1;
	big[26] = (uint8_t)(RECORD_MAX_STRINGS & 0xff);
	big[27] = (uint8_t)(RECORD_MAX_STRINGS >> 8);
	cr_assert_eq(decode_view(RECORD_ENVELOPE, big, (uint32_t)n), RECORD_BAD);
	big[24] = 0;
	cr_assert_eq(decode_view(RECORD_ENVELOPE, big, (uint32_t)n - 2), 0);
	free(big);

	/* RCPT: the reason runs past the end; a body over the maximum. */
	memset(p, 0, sizeof(p));
	cr_assert_eq(decode_view(RECORD_RCPT_FAILED, p, 32), 0);
	p[30] = 1;
	cr_assert_eq(decode_view(RECORD_RCPT_FAILED, p, 32), RECORD_BAD);
	cr_assert_eq(decode_view(RECORD_RCPT_FAILED, p, 33), 0);

	uint8_t *huge = xmalloc(RECORD_MAX_PAYLOAD + 1);
	memset(huge, 0, RECORD_MAX_PAYLOAD + 1);
	cr_assert_eq(decode_view(RECORD_BODY, huge, RECORD_MAX_PAYLOAD), 0);
	cr_assert_eq(decode_view(RECORD_BODY, huge, RECORD_MAX_PAYLOAD + 1), RECORD_BAD);
	free(huge);
}

Test(record, decode_envelope_respects_caller_room)
{
	const struct sample *sm = &samples[1]; /* 2 params + 3 recipients */
	struct record_view v = frame_ok(sm->rec, sm->size);
	struct record_envelope env;
	struct record_string strings[6];

	for (size_t room = 0; room < 5; room++) {
		/* Canary past the room the caller gave. */
		for (size_t i = 0; i < 6; i++)
			strings[i] = (struct record_string){.data = "canary", .len = 6};
		cr_assert_eq(record_decode_envelope(&v, &env, strings, room), RECORD_BAD);
		for (size_t i = room; i < 6; i++)
			cr_assert_eq(strings[i].len, 6, "room %zu: entry %zu written", room, i);
	}
	cr_assert_eq(record_decode_envelope(&v, &env, strings, 5), 0);
	cr_assert_eq(strings[5].len, 6);
	assert_string_eq(strings[4], str("dave@example.com"), "last recipient");
	cr_assert_eq(record_decode_envelope(&v, &env, strings, 6), 0);
}

/* ---- encoders and small buffers ------------------------------------------ */

typedef size_t (*encode_fn)(uint8_t *dst, size_t cap);

static size_t enc_segment(uint8_t *dst, size_t cap)
{
	struct record_segment seg = {.worker = 1, .sequence = 2, .created_ms = 3};
	return record_encode_segment(dst, cap, TEST_SALT, &seg);
}

static size_t enc_envelope(uint8_t *dst, size_t cap)
{
	struct record_envelope env = {.arrival_ms = 1,
				      .client = str("192.0.2.1"),
				      .helo = str("client"),
				      .sender = str("a@example.org"),
				      .nparams = 1,
				      .nrecipients = 2};
	struct record_string strings[] = {str("SIZE=10"), str("b@example.net"),
					  str("c@example.net")};
	set_id(env.id, test_id);
	return record_encode_envelope(dst, cap, TEST_SALT, &env, strings);
}

static size_t enc_body(uint8_t *dst, size_t cap)
{
	struct record_body b = {.chunk = 0, .data = (const uint8_t *)sample_body, .len = 300};
	set_id(b.id, test_id);
	return record_encode_body(dst, cap, TEST_SALT, &b);
}

static size_t enc_body_empty(uint8_t *dst, size_t cap)
{
	struct record_body b = {.chunk = 0, .data = NULL, .len = 0};
	set_id(b.id, test_id);
	return record_encode_body(dst, cap, TEST_SALT, &b);
}

static size_t enc_commit(uint8_t *dst, size_t cap)
{
	struct record_commit c = {.body_len = 300, .nchunks = 1};
	set_id(c.id, test_id);
	return record_encode_commit(dst, cap, TEST_SALT, &c);
}

static size_t enc_rcpt(uint8_t *dst, size_t cap)
{
	struct record_rcpt_state st = {.recipient = 0,
				       .attempts = 1,
				       .time_ms = 2,
				       .reason = str("550 5.1.1 no such user")};
	set_id(st.id, test_id);
	return record_encode_rcpt_state(dst, cap, TEST_SALT, RECORD_RCPT_FAILED, &st);
}

static size_t enc_id(uint8_t *dst, size_t cap)
{
	struct record_id rid;
	set_id(rid.id, test_id);
	return record_encode_id(dst, cap, TEST_SALT, RECORD_MESSAGE_DONE, &rid);
}

Test(record, encoders_refuse_small_caps_and_write_nothing)
{
	static const struct {
		const char *name;
		encode_fn fn;
	} encoders[] = {
		{"segment", enc_segment}, {"envelope", enc_envelope},
		{"body", enc_body},       {"empty body", enc_body_empty},
		{"commit", enc_commit},   {"rcpt", enc_rcpt},
		{"id", enc_id},
	};
	enum { SLACK = 32 };

	for (size_t e = 0; e < sizeof(encoders) / sizeof(encoders[0]); e++) {
		static uint8_t probe[SAMPLE_CAP];
		size_t size = encoders[e].fn(probe, sizeof(probe));
		cr_assert_gt(size, 0);
		uint8_t *buf = xmalloc(size + SLACK);

		for (size_t cap = 0; cap < size; cap++) {
			memset(buf, TEST_FILL, size + SLACK);
			cr_assert_eq(encoders[e].fn(buf, cap), 0, "%s: cap %zu", encoders[e].name,
				     cap);
			/* Nothing at all, let alone past cap. */
			for (size_t i = 0; i < size + SLACK; i++)
				cr_assert_eq(buf[i], TEST_FILL, "%s: cap %zu, byte %zu written",
					     encoders[e].name, cap, i);
		}
		for (size_t cap = size; cap <= size + SLACK; cap++) {
			memset(buf, TEST_FILL, size + SLACK);
			cr_assert_eq(encoders[e].fn(buf, cap), size, "%s: cap %zu",
				     encoders[e].name, cap);
			cr_assert(memcmp(buf, probe, size) == 0);
			for (size_t i = size; i < size + SLACK; i++)
				cr_assert_eq(buf[i], TEST_FILL, "%s: byte %zu past the record",
					     encoders[e].name, i);
		}
		free(buf);
	}
}

/* BATCH ends every group-commit batch and names where the batch began. */
Test(record, batch_round_trip_and_type_checks)
{
	uint8_t buf[64];
	memset(buf, 0xa5, sizeof(buf));
	struct record_batch b = {.start = 0x0123456789abcdefull};
	size_t n = record_encode_batch(buf, sizeof(buf), TEST_SALT, &b);
	cr_assert_eq(n, RECORD_BATCH_SIZE);
	cr_assert_eq(buf[n], 0xa5, "wrote past the record");
	struct record_view v;
	cr_assert_eq(record_frame(buf, n, TEST_SALT, &v), RECORD_OK);
	cr_assert_eq(v.type, RECORD_BATCH);
	struct record_batch got;
	cr_assert_eq(record_decode_batch(&v, &got), 0);
	cr_assert_eq(got.start, b.start);
	struct record_id rid;
	cr_assert_eq(record_decode_id(&v, &rid), RECORD_BAD);
	for (size_t cap = 0; cap < RECORD_BATCH_SIZE; cap++)
		cr_assert_eq(record_encode_batch(buf, cap, TEST_SALT, &b), 0);
	cr_assert_eq(record_frame(buf, n, TEST_SALT ^ 1, &v), RECORD_BAD);
}
