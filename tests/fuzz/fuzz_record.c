/*
 * libFuzzer target: queue/record, the spool's on-disk format.
 *
 * The input is a segment's bytes (the seeds in tests/fuzz/seeds/fuzz_record
 * are real record sequences, salted with FUZZ_SALT). It is walked twice,
 * framing record after record as recovery would:
 *
 *  - as it is: arbitrary bytes against the checksum and the header checks;
 *  - sealed: before each record is framed, its header is repaired (known
 *    type, version, reserved, salt, a length that fits) and its checksum
 *    recomputed with plain one-shot XXH3, so random payloads reach the
 *    decoders instead of dying on the checksum, and framing must then
 *    answer exactly OK or TRUNCATED.
 *
 * Every record that frames goes through every decoder: only the decoder of
 * its type may accept it, and whatever it accepts must re-encode to the
 * same header and payload bytes (padding is outside the checksum and
 * re-encoded as zeros), in exactly the record's size and not in one byte
 * less. Buffers are heap copies of the exact size so ASan catches any read
 * or write past them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "queue/record.h"
#include "tests/fuzz/fuzz_common.h"

#define FUZZ_SALT 0x5eedf00dcafe1234ull

static struct record_string fuzz_strings[RECORD_MAX_STRINGS];

static uint32_t fuzz_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void fuzz_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void fuzz_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void *fuzz_alloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	FUZZ_CHECK(p != NULL);
	return p;
}

static bool fuzz_inside(const void *p, size_t n, const uint8_t *payload, uint32_t len)
{
	const uint8_t *b = p;
	return n == 0 || (b >= payload && b + n <= payload + len);
}

static void fuzz_check_string(struct record_string s, const struct record_view *v)
{
	FUZZ_CHECK(fuzz_inside(s.data, s.len, v->payload, v->length));
}

/*
 * Re-encode by `call`, an encoder call writing to dst[0..cap), into an
 * exact-size buffer and compare with the framed record at rec; a buffer one
 * byte short must be refused and left untouched.
 */
#define FUZZ_REENCODE(v, rec, call)                                                                \
	do {                                                                                       \
		size_t cap = (v)->size;                                                            \
		uint8_t *dst = fuzz_alloc(cap);                                                    \
		memset(dst, 0xa5, cap);                                                            \
		cap = cap - 1;                                                                     \
		FUZZ_CHECK((call) == 0);                                                           \
		for (size_t i_ = 0; i_ < cap; i_++)                                                \
			FUZZ_CHECK(dst[i_] == 0xa5);                                               \
		cap = (v)->size;                                                                   \
		FUZZ_CHECK((call) == (v)->size);                                                   \
		size_t covered_ = RECORD_HEADER_SIZE + (size_t)(v)->length;                        \
		FUZZ_CHECK(memcmp(dst, (rec), covered_) == 0);                                     \
		for (size_t i_ = covered_; i_ < (v)->size; i_++)                                   \
			FUZZ_CHECK(dst[i_] == 0);                                                  \
		free(dst);                                                                         \
	} while (0)

static void fuzz_decode(const struct record_view *v, const uint8_t *rec)
{
	enum record_type t = v->type;
	bool is_rcpt =
		t == RECORD_RCPT_DELIVERED || t == RECORD_RCPT_DEFERRED || t == RECORD_RCPT_FAILED;
	bool is_id = t == RECORD_MESSAGE_DONE || t == RECORD_ABORT;

	struct record_segment seg;
	int rc = record_decode_segment(v, &seg);
	FUZZ_CHECK(rc == 0 || rc == RECORD_BAD);
	FUZZ_CHECK(t == RECORD_SEGMENT || rc == RECORD_BAD);
	if (rc == 0)
		FUZZ_REENCODE(v, rec, record_encode_segment(dst, cap, FUZZ_SALT, &seg));

	struct record_envelope env;
	rc = record_decode_envelope(v, &env, fuzz_strings, RECORD_MAX_STRINGS);
	FUZZ_CHECK(rc == 0 || rc == RECORD_BAD);
	FUZZ_CHECK(t == RECORD_ENVELOPE || rc == RECORD_BAD);
	if (rc == 0) {
		size_t count = (size_t)env.nparams + env.nrecipients;
		FUZZ_CHECK(env.nrecipients > 0 && count <= RECORD_MAX_STRINGS);
		fuzz_check_string(env.client, v);
		fuzz_check_string(env.helo, v);
		fuzz_check_string(env.sender, v);
		for (size_t i = 0; i < count; i++)
			fuzz_check_string(fuzz_strings[i], v);
		FUZZ_CHECK(record_envelope_payload_size(&env, fuzz_strings) == v->length);
		FUZZ_REENCODE(v, rec,
			      record_encode_envelope(dst, cap, FUZZ_SALT, &env, fuzz_strings));
		/* The caller's room is respected: one string short is refused. */
		struct record_envelope again;
		FUZZ_CHECK(record_decode_envelope(v, &again, fuzz_strings, count - 1) ==
			   RECORD_BAD);
	}

	struct record_body body;
	rc = record_decode_body(v, &body);
	FUZZ_CHECK(rc == 0 || rc == RECORD_BAD);
	FUZZ_CHECK(t == RECORD_BODY || rc == RECORD_BAD);
	if (rc == 0) {
		FUZZ_CHECK(body.len + 20u == v->length);
		FUZZ_CHECK(fuzz_inside(body.data, body.len, v->payload, v->length));
		FUZZ_REENCODE(v, rec, record_encode_body(dst, cap, FUZZ_SALT, &body));
	}

	struct record_commit commit;
	rc = record_decode_commit(v, &commit);
	FUZZ_CHECK(rc == 0 || rc == RECORD_BAD);
	FUZZ_CHECK(t == RECORD_COMMIT || rc == RECORD_BAD);
	if (rc == 0)
		FUZZ_REENCODE(v, rec, record_encode_commit(dst, cap, FUZZ_SALT, &commit));

	struct record_rcpt_state rs;
	rc = record_decode_rcpt_state(v, &rs);
	FUZZ_CHECK(rc == 0 || rc == RECORD_BAD);
	FUZZ_CHECK(is_rcpt || rc == RECORD_BAD);
	if (rc == 0) {
		fuzz_check_string(rs.reason, v);
		FUZZ_REENCODE(v, rec, record_encode_rcpt_state(dst, cap, FUZZ_SALT, t, &rs));
	}

	struct record_id rid;
	rc = record_decode_id(v, &rid);
	FUZZ_CHECK(rc == 0 || rc == RECORD_BAD);
	FUZZ_CHECK(is_id || rc == RECORD_BAD);
	if (rc == 0)
		FUZZ_REENCODE(v, rec, record_encode_id(dst, cap, FUZZ_SALT, t, &rid));

	struct record_batch batch;
	rc = record_decode_batch(v, &batch);
	FUZZ_CHECK(rc == 0 || rc == RECORD_BAD);
	FUZZ_CHECK(t == RECORD_BATCH || rc == RECORD_BAD);
	if (rc == 0)
		FUZZ_REENCODE(v, rec, record_encode_batch(dst, cap, FUZZ_SALT, &batch));
}

static bool fuzz_all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * Make the header at p a sane one for FUZZ_SALT, keeping as much of the
 * input as possible, and checksum it independently of the codec. Returns
 * what record_frame must answer.
 */
static enum record_status fuzz_seal(uint8_t *p, size_t left)
{
	if (left < RECORD_HEADER_SIZE)
		return fuzz_all_zero(p, left) ? RECORD_END : RECORD_TRUNCATED;
	if (p[4] < RECORD_SEGMENT || p[4] > RECORD_BATCH)
		p[4] = (uint8_t)(RECORD_SEGMENT + p[4] % RECORD_BATCH);
	p[5] = RECORD_VERSION;
	p[6] = p[7] = 0;
	fuzz_put_u64(p + 8, FUZZ_SALT);

	size_t room = left - RECORD_HEADER_SIZE;
	uint32_t most = room < RECORD_MAX_PAYLOAD ? (uint32_t)room : RECORD_MAX_PAYLOAD;
	uint32_t length = fuzz_get_u32(p);
	if (length > most)
		length %= most + 1;
	fuzz_put_u32(p, length);

	uint8_t *hashed = fuzz_alloc(16 + (size_t)length);
	memcpy(hashed, p, 16);
	memcpy(hashed + 16, p + RECORD_HEADER_SIZE, length);
	fuzz_put_u64(p + 16, XXH3_64bits_withSeed(hashed, 16 + (size_t)length, FUZZ_SALT));
	free(hashed);
	return record_size(length) <= left ? RECORD_OK : RECORD_TRUNCATED;
}

static void fuzz_walk(uint8_t *buf, size_t len, bool seal)
{
	size_t pos = 0;

	for (;;) {
		size_t left = len - pos;
		enum record_status want = seal ? fuzz_seal(buf + pos, left) : RECORD_OK;
		struct record_view v;
		enum record_status st = record_frame(buf + pos, left, FUZZ_SALT, &v);

		FUZZ_CHECK(st == RECORD_OK || st == RECORD_END || st == RECORD_TRUNCATED ||
			   st == RECORD_BAD);
		if (seal)
			FUZZ_CHECK(st == want);
		if (left < RECORD_HEADER_SIZE)
			FUZZ_CHECK(st == (fuzz_all_zero(buf + pos, left) ? RECORD_END
									 : RECORD_TRUNCATED));
		if (st != RECORD_OK)
			return;

		FUZZ_CHECK(v.type >= RECORD_SEGMENT && v.type <= RECORD_BATCH);
		FUZZ_CHECK(v.length <= RECORD_MAX_PAYLOAD);
		FUZZ_CHECK(v.size == record_size(v.length) && v.size <= left);
		FUZZ_CHECK(v.size % RECORD_ALIGN == 0);
		FUZZ_CHECK(v.payload == buf + pos + RECORD_HEADER_SIZE);
		/* Another segment's salt never frames the same bytes. */
		struct record_view other;
		FUZZ_CHECK(record_frame(buf + pos, left, ~FUZZ_SALT, &other) == RECORD_BAD);

		fuzz_decode(&v, buf + pos);
		pos += v.size;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = fuzz_alloc(size);

	memcpy(buf, data, size);
	fuzz_walk(buf, size, false);
	fuzz_walk(buf, size, true);
	free(buf);
	return 0;
}
