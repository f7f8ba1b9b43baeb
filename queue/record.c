/*
 * record — the spool's on-disk record codec (see record.h for the framing).
 *
 * Payload layouts. Offsets are from the start of the payload; all integers
 * little-endian; no alignment inside a payload; "string" is a u16 length
 * followed by that many bytes. Every byte of a payload is accounted for:
 * decoders refuse short payloads, trailing bytes and non-zero reserved
 * fields, so a record that decodes re-encodes to the very same bytes.
 *
 *   SEGMENT (24 bytes)
 *     0   u32     worker
 *     4   u32     reserved, zero
 *     8   u64     sequence
 *     16  i64     created_ms
 *
 *   ENVELOPE (34 + strings)
 *     0   id[16]  queue id
 *     16  i64     arrival_ms
 *     24  u16     nparams
 *     26  u16     nrecipients (at least 1)
 *     28  string  client
 *         string  helo
 *         string  sender
 *         string  params[nparams]
 *         string  recipients[nrecipients]
 *
 *   BODY (20 + data)
 *     0   id[16]  queue id
 *     16  u32     chunk
 *     20  ...     data: the rest of the payload
 *
 *   COMMIT (28 bytes)
 *     0   id[16]  queue id
 *     16  u64     body_len
 *     24  u32     nchunks
 *
 *   RCPT_DELIVERED, RCPT_DEFERRED, RCPT_FAILED (32 + reason)
 *     0   id[16]  queue id
 *     16  u16     recipient
 *     18  u32     attempts
 *     22  i64     time_ms
 *     30  string  reason
 *
 *   MESSAGE_DONE, ABORT (16 bytes)
 *     0   id[16]  queue id
 *
 *   BATCH (8 bytes)
 *     0   u64     file offset of the batch's first record
 *
 * Padding: encoders always write zeros, but the checksum does not cover the
 * padding and record_frame does not look at it. Zeroing keeps files
 * deterministic; ignoring it keeps a record's validity a function of the
 * bytes the checksum protects, so no byte outside the checksum can make a
 * good record bad.
 */
#include "queue/record.h"

#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#define RECORD_CHECKSUMMED_HEADER 16 /* length, type, version, reserved, salt */

#define RECORD_SEGMENT_PAYLOAD         24
#define RECORD_ENVELOPE_FIXED          28
#define RECORD_BATCH_PAYLOAD           8
#define RECORD_ENVELOPE_HEADER_STRINGS 3 /* client, helo, sender */

/*
 * Up to here a stack copy of header and payload plus one-shot XXH3 beats
 * the streaming state, whose seeded reset derives a 192-byte secret on every
 * record (one-shot XXH3 needs none up to 240 bytes). That covers every
 * state-change record and most envelopes; measured, it saves about 35 ns
 * per checksum of a COMMIT (bench/micro/micro_record.cc).
 */
#define RECORD_SMALL_HASH 240

/* ---- little-endian bytes ------------------------------------------------- */

/* Spelled out byte by byte so the format never depends on the host; gcc
 * and clang fold each of these into one load or store on x86. */

static void record_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void record_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void record_put_u64(uint8_t *p, uint64_t v)
{
	record_put_u32(p, (uint32_t)v);
	record_put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t record_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t record_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t record_get_u64(const uint8_t *p)
{
	return (uint64_t)record_get_u32(p) | (uint64_t)record_get_u32(p + 4) << 32;
}

/* Two's complement back from the wire without relying on the
 * implementation-defined conversion of an out-of-range u64. */
static int64_t record_i64_of(uint64_t u)
{
	if (u <= (uint64_t)INT64_MAX)
		return (int64_t)u;
	return -(int64_t)(~u) - 1;
}

/* ---- checksum ------------------------------------------------------------ */

static uint64_t record_checksum(const uint8_t *header, const uint8_t *payload, uint32_t len,
				uint64_t salt)
{
	if (len <= RECORD_SMALL_HASH - RECORD_CHECKSUMMED_HEADER) {
		uint8_t copy[RECORD_SMALL_HASH];
		memcpy(copy, header, RECORD_CHECKSUMMED_HEADER);
		memcpy(copy + RECORD_CHECKSUMMED_HEADER, payload, len);
		return XXH3_64bits_withSeed(copy, RECORD_CHECKSUMMED_HEADER + len, salt);
	}
	/* A stack state must be initialised before a seeded reset: the reset
	 * compares the new seed with the old one to skip deriving the secret. */
	XXH3_state_t state;
	XXH3_INITSTATE(&state);
	XXH3_64bits_reset_withSeed(&state, salt);
	XXH3_64bits_update(&state, header, RECORD_CHECKSUMMED_HEADER);
	XXH3_64bits_update(&state, payload, len);
	return XXH3_64bits_digest(&state);
}

/* ---- framing ------------------------------------------------------------- */

static bool record_type_known(unsigned type)
{
	return type >= RECORD_SEGMENT && type <= RECORD_BATCH;
}

static bool record_all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

enum record_status record_frame(const uint8_t *buf, size_t len, uint64_t salt,
				struct record_view *out)
{
	size_t visible = len < RECORD_HEADER_SIZE ? len : RECORD_HEADER_SIZE;

	/* No record has an all-zero header (its type is never 0), so zeros
	 * are space that was never written: a preallocated tail. */
	if (record_all_zero(buf, visible))
		return RECORD_END;
	if (len < RECORD_HEADER_SIZE)
		return RECORD_TRUNCATED;

	uint32_t length = record_get_u32(buf);
	unsigned type = buf[4];
	if (buf[5] != RECORD_VERSION || record_get_u16(buf + 6) != 0 || !record_type_known(type) ||
	    length > RECORD_MAX_PAYLOAD || record_get_u64(buf + 8) != salt)
		return RECORD_BAD;

	/* Only now is the length trusted enough to ask for more bytes. */
	size_t size = record_size(length);
	if (len < size)
		return RECORD_TRUNCATED;

	const uint8_t *payload = buf + RECORD_HEADER_SIZE;
	if (record_checksum(buf, payload, length, salt) != record_get_u64(buf + 16))
		return RECORD_BAD;

	out->type = (enum record_type)type;
	out->payload = payload;
	out->length = length;
	out->size = size;
	return RECORD_OK;
}

/* ---- decoding ------------------------------------------------------------ */

/* A cursor over a payload; any read past the end sets `bad` and yields
 * zeros, so a decoder checks once at the end instead of at every field. */
struct record_reader {
	const uint8_t *p;
	size_t left;
	bool bad;
};

static const uint8_t *record_take(struct record_reader *r, size_t n)
{
	if (r->bad || r->left < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

static uint16_t record_read_u16(struct record_reader *r)
{
	const uint8_t *p = record_take(r, 2);
	return p ? record_get_u16(p) : 0;
}

static uint32_t record_read_u32(struct record_reader *r)
{
	const uint8_t *p = record_take(r, 4);
	return p ? record_get_u32(p) : 0;
}

static uint64_t record_read_u64(struct record_reader *r)
{
	const uint8_t *p = record_take(r, 8);
	return p ? record_get_u64(p) : 0;
}

static void record_read_id(struct record_reader *r, char id[RECORD_ID_LEN])
{
	const uint8_t *p = record_take(r, RECORD_ID_LEN);
	if (p)
		memcpy(id, p, RECORD_ID_LEN);
}

static struct record_string record_read_string(struct record_reader *r)
{
	struct record_string s = {.data = NULL, .len = record_read_u16(r)};
	const uint8_t *p = record_take(r, s.len);
	if (p)
		s.data = (const char *)p;
	else
		s.len = 0;
	return s;
}

/* Start reading a view whose type must be one of [first, last]. */
static bool record_reader_open(struct record_reader *r, const struct record_view *v,
			       enum record_type first, enum record_type last)
{
	if (v->type < first || v->type > last || v->length > RECORD_MAX_PAYLOAD)
		return false;
	r->p = v->payload;
	r->left = v->length;
	r->bad = false;
	return true;
}

/* Every byte consumed and none missing. */
static int record_reader_close(const struct record_reader *r)
{
	return r->bad || r->left != 0 ? RECORD_BAD : 0;
}

int record_decode_segment(const struct record_view *v, struct record_segment *out)
{
	struct record_reader r;

	if (!record_reader_open(&r, v, RECORD_SEGMENT, RECORD_SEGMENT))
		return RECORD_BAD;
	out->worker = record_read_u32(&r);
	if (record_read_u32(&r) != 0)
		return RECORD_BAD;
	out->sequence = record_read_u64(&r);
	out->created_ms = record_i64_of(record_read_u64(&r));
	return record_reader_close(&r);
}

int record_decode_batch(const struct record_view *v, struct record_batch *out)
{
	struct record_reader r;

	if (!record_reader_open(&r, v, RECORD_BATCH, RECORD_BATCH))
		return RECORD_BAD;
	out->start = record_read_u64(&r);
	return record_reader_close(&r);
}

int record_decode_envelope(const struct record_view *v, struct record_envelope *out,
			   struct record_string *strings, size_t max_strings)
{
	struct record_reader r;

	if (!record_reader_open(&r, v, RECORD_ENVELOPE, RECORD_ENVELOPE))
		return RECORD_BAD;
	record_read_id(&r, out->id);
	out->arrival_ms = record_i64_of(record_read_u64(&r));
	out->nparams = record_read_u16(&r);
	out->nrecipients = record_read_u16(&r);
	size_t count = (size_t)out->nparams + out->nrecipients;
	if (r.bad || out->nrecipients == 0 || count > max_strings || count > RECORD_MAX_STRINGS)
		return RECORD_BAD;
	out->client = record_read_string(&r);
	out->helo = record_read_string(&r);
	out->sender = record_read_string(&r);
	for (size_t i = 0; i < count && !r.bad; i++)
		strings[i] = record_read_string(&r);
	return record_reader_close(&r);
}

int record_decode_body(const struct record_view *v, struct record_body *out)
{
	struct record_reader r;

	if (!record_reader_open(&r, v, RECORD_BODY, RECORD_BODY))
		return RECORD_BAD;
	record_read_id(&r, out->id);
	out->chunk = record_read_u32(&r);
	if (r.bad)
		return RECORD_BAD;
	out->len = (uint32_t)r.left;
	out->data = record_take(&r, r.left);
	return record_reader_close(&r);
}

int record_decode_commit(const struct record_view *v, struct record_commit *out)
{
	struct record_reader r;

	if (!record_reader_open(&r, v, RECORD_COMMIT, RECORD_COMMIT))
		return RECORD_BAD;
	record_read_id(&r, out->id);
	out->body_len = record_read_u64(&r);
	out->nchunks = record_read_u32(&r);
	return record_reader_close(&r);
}

int record_decode_rcpt_state(const struct record_view *v, struct record_rcpt_state *out)
{
	struct record_reader r;

	if (!record_reader_open(&r, v, RECORD_RCPT_DELIVERED, RECORD_RCPT_FAILED))
		return RECORD_BAD;
	record_read_id(&r, out->id);
	out->recipient = record_read_u16(&r);
	out->attempts = record_read_u32(&r);
	out->time_ms = record_i64_of(record_read_u64(&r));
	out->reason = record_read_string(&r);
	return record_reader_close(&r);
}

int record_decode_id(const struct record_view *v, struct record_id *out)
{
	struct record_reader r;

	if (!record_reader_open(&r, v, RECORD_MESSAGE_DONE, RECORD_ABORT))
		return RECORD_BAD;
	record_read_id(&r, out->id);
	return record_reader_close(&r);
}

/* ---- encoding ------------------------------------------------------------ */

/*
 * Encoders check the whole size first and only then write, front to back,
 * so a refused record leaves dst untouched and an accepted one writes
 * exactly record_size(payload) bytes.
 */
static bool record_fits(size_t payload_len, size_t cap)
{
	return payload_len <= RECORD_MAX_PAYLOAD && record_size(payload_len) <= cap;
}

/* Writes the header but its checksum; returns where the payload goes. */
static uint8_t *record_begin(uint8_t *dst, enum record_type type, size_t payload_len, uint64_t salt)
{
	record_put_u32(dst, (uint32_t)payload_len);
	dst[4] = (uint8_t)type;
	dst[5] = RECORD_VERSION;
	record_put_u16(dst + 6, 0);
	record_put_u64(dst + 8, salt);
	return dst + RECORD_HEADER_SIZE;
}

/* Pads and seals a record whose payload is in place; returns its size. */
static size_t record_finish(uint8_t *dst, size_t payload_len, uint64_t salt)
{
	size_t end = RECORD_HEADER_SIZE + payload_len;
	size_t size = record_size(payload_len);

	memset(dst + end, 0, size - end);
	record_put_u64(dst + 16,
		       record_checksum(dst, dst + RECORD_HEADER_SIZE, (uint32_t)payload_len, salt));
	return size;
}

static uint8_t *record_write_bytes(uint8_t *p, const void *data, size_t len)
{
	if (len) /* data may be NULL for an empty string */
		memcpy(p, data, len);
	return p + len;
}

static uint8_t *record_write_string(uint8_t *p, const struct record_string *s)
{
	record_put_u16(p, s->len);
	return record_write_bytes(p + RECORD_STRING_PREFIX, s->data, s->len);
}

size_t record_encode_segment(uint8_t *dst, size_t cap, uint64_t salt,
			     const struct record_segment *seg)
{
	if (!record_fits(RECORD_SEGMENT_PAYLOAD, cap))
		return 0;
	uint8_t *p = record_begin(dst, RECORD_SEGMENT, RECORD_SEGMENT_PAYLOAD, salt);
	record_put_u32(p, seg->worker);
	record_put_u32(p + 4, 0);
	record_put_u64(p + 8, seg->sequence);
	record_put_u64(p + 16, (uint64_t)seg->created_ms);
	return record_finish(dst, RECORD_SEGMENT_PAYLOAD, salt);
}

size_t record_encode_batch(uint8_t *dst, size_t cap, uint64_t salt,
			   const struct record_batch *batch)
{
	if (!record_fits(RECORD_BATCH_PAYLOAD, cap))
		return 0;
	uint8_t *p = record_begin(dst, RECORD_BATCH, RECORD_BATCH_PAYLOAD, salt);
	record_put_u64(p, batch->start);
	return record_finish(dst, RECORD_BATCH_PAYLOAD, salt);
}

static size_t record_envelope_string_count(const struct record_envelope *env)
{
	return (size_t)env->nparams + env->nrecipients;
}

size_t record_envelope_payload_size(const struct record_envelope *env,
				    const struct record_string *strings)
{
	size_t count = record_envelope_string_count(env);
	size_t size = RECORD_ENVELOPE_FIXED +
		      RECORD_ENVELOPE_HEADER_STRINGS * RECORD_STRING_PREFIX + env->client.len +
		      env->helo.len + env->sender.len;

	for (size_t i = 0; i < count; i++)
		size += RECORD_STRING_PREFIX + strings[i].len;
	return size;
}

size_t record_encode_envelope(uint8_t *dst, size_t cap, uint64_t salt,
			      const struct record_envelope *env,
			      const struct record_string *strings)
{
	size_t count = record_envelope_string_count(env);

	if (env->nrecipients == 0 || count > RECORD_MAX_STRINGS)
		return 0;
	size_t payload_len = record_envelope_payload_size(env, strings);
	if (!record_fits(payload_len, cap))
		return 0;

	uint8_t *p = record_begin(dst, RECORD_ENVELOPE, payload_len, salt);
	p = record_write_bytes(p, env->id, RECORD_ID_LEN);
	record_put_u64(p, (uint64_t)env->arrival_ms);
	record_put_u16(p + 8, env->nparams);
	record_put_u16(p + 10, env->nrecipients);
	p += 12;
	p = record_write_string(p, &env->client);
	p = record_write_string(p, &env->helo);
	p = record_write_string(p, &env->sender);
	for (size_t i = 0; i < count; i++)
		p = record_write_string(p, &strings[i]);
	return record_finish(dst, payload_len, salt);
}

size_t record_encode_body(uint8_t *dst, size_t cap, uint64_t salt, const struct record_body *body)
{
	size_t payload_len = RECORD_BODY_FIXED + (size_t)body->len;

	if (!record_fits(payload_len, cap))
		return 0;
	uint8_t *p = record_begin(dst, RECORD_BODY, payload_len, salt);
	p = record_write_bytes(p, body->id, RECORD_ID_LEN);
	record_put_u32(p, body->chunk);
	record_write_bytes(p + 4, body->data, body->len);
	return record_finish(dst, payload_len, salt);
}

size_t record_encode_commit(uint8_t *dst, size_t cap, uint64_t salt,
			    const struct record_commit *commit)
{
	if (!record_fits(RECORD_COMMIT_PAYLOAD, cap))
		return 0;
	uint8_t *p = record_begin(dst, RECORD_COMMIT, RECORD_COMMIT_PAYLOAD, salt);
	p = record_write_bytes(p, commit->id, RECORD_ID_LEN);
	record_put_u64(p, commit->body_len);
	record_put_u32(p + 8, commit->nchunks);
	return record_finish(dst, RECORD_COMMIT_PAYLOAD, salt);
}

size_t record_encode_rcpt_state(uint8_t *dst, size_t cap, uint64_t salt, enum record_type type,
				const struct record_rcpt_state *st)
{
	size_t payload_len = RECORD_RCPT_FIXED + RECORD_STRING_PREFIX + st->reason.len;

	if (type < RECORD_RCPT_DELIVERED || type > RECORD_RCPT_FAILED ||
	    !record_fits(payload_len, cap))
		return 0;
	uint8_t *p = record_begin(dst, type, payload_len, salt);
	p = record_write_bytes(p, st->id, RECORD_ID_LEN);
	record_put_u16(p, st->recipient);
	record_put_u32(p + 2, st->attempts);
	record_put_u64(p + 6, (uint64_t)st->time_ms);
	record_write_string(p + 14, &st->reason);
	return record_finish(dst, payload_len, salt);
}

size_t record_encode_id(uint8_t *dst, size_t cap, uint64_t salt, enum record_type type,
			const struct record_id *rid)
{
	if ((type != RECORD_MESSAGE_DONE && type != RECORD_ABORT) ||
	    !record_fits(RECORD_ID_PAYLOAD, cap))
		return 0;
	uint8_t *p = record_begin(dst, type, RECORD_ID_PAYLOAD, salt);
	record_write_bytes(p, rid->id, RECORD_ID_LEN);
	return record_finish(dst, RECORD_ID_PAYLOAD, salt);
}
