/*
 * record — the spool's on-disk record format. Pure: bytes in, bytes out.
 *
 * A segment file is a sequence of records, each starting on an 8-byte
 * boundary:
 *
 *   offset  size  field
 *   0       4     length    payload octets (header and padding excluded)
 *   4       1     type      enum record_type
 *   5       1     version   RECORD_VERSION
 *   6       2     reserved  zero
 *   8       8     salt      the segment's random salt
 *   16      8     checksum  XXH3-64 of bytes 0..15 and the payload,
 *                           seeded with the salt
 *   24      ...   payload
 *           ...   zero padding to the next multiple of 8
 *
 * All integers are little-endian. Strings in payloads are a u16 length and
 * the bytes (no NUL). The salt is drawn at random for each segment and
 * repeated in every record, so records left over in a reused or
 * preallocated file, or in another segment, never decode as this
 * segment's: a wrong salt is as bad as a wrong checksum.
 *
 * A message is: ENVELOPE, zero or more BODY chunks, then COMMIT, all
 * carrying its queue id; records of concurrent messages interleave, and a
 * message may continue into the writer's next segment. Only a COMMIT that
 * reached disk makes a message exist. State changes come later as small
 * records naming the queue id.
 *
 * Every group-commit batch ends with a BATCH record naming where the batch
 * began. Batches are written one at a time, each synced before the next is
 * written, so at most the last batch of a segment can be torn; a BATCH
 * record that frames is proof that its whole batch was written. Recovery
 * keeps a segment up to its last good BATCH record: anything after it was
 * never acknowledged (a torn tail), and a bad spot with a good BATCH record
 * after it is corruption of acknowledged data.
 */
#ifndef FERRY_QUEUE_RECORD_H
#define FERRY_QUEUE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECORD_VERSION     1
#define RECORD_HEADER_SIZE 24
#define RECORD_ALIGN       8
#define RECORD_MAX_PAYLOAD (1u << 20) /* larger lengths are corruption */
#define RECORD_ID_LEN      16         /* queue id, QUEUE_ID_LEN characters */
#define RECORD_MAX_STRINGS 2048       /* rcpts + params in one envelope */

enum record_type {
	RECORD_SEGMENT = 1,        /* first record of every segment */
	RECORD_ENVELOPE = 2,       /* a message begins */
	RECORD_BODY = 3,           /* a chunk of its body */
	RECORD_COMMIT = 4,         /* the message is complete */
	RECORD_RCPT_DELIVERED = 5, /* one recipient delivered */
	RECORD_RCPT_DEFERRED = 6,  /* one recipient to retry at a time */
	RECORD_RCPT_FAILED = 7,    /* one recipient failed for good (bounced) */
	RECORD_MESSAGE_DONE = 8,   /* every recipient finished: dead space */
	RECORD_ABORT = 9,          /* a begun message was thrown away */
	RECORD_BATCH = 10,         /* ends every group-commit batch */
};

/* Total bytes a record with this payload takes, header and padding included. */
static inline size_t record_size(size_t payload_len)
{
	return (RECORD_HEADER_SIZE + payload_len + RECORD_ALIGN - 1) & ~(size_t)(RECORD_ALIGN - 1);
}

/* Payload layouts of the fixed-size parts (see the encoders). */
#define RECORD_STRING_PREFIX  2                    /* u16 length before a string */
#define RECORD_BODY_FIXED     (RECORD_ID_LEN + 4)  /* id, chunk; then the data */
#define RECORD_COMMIT_PAYLOAD (RECORD_ID_LEN + 12) /* id, body length, chunks */
#define RECORD_RCPT_FIXED     (RECORD_ID_LEN + 14) /* id, rcpt, attempts, time; reason */
#define RECORD_ID_PAYLOAD     RECORD_ID_LEN        /* MESSAGE_DONE, ABORT */

/* Where a BODY record's data begins, from the start of the record. */
#define RECORD_BODY_DATA_OFFSET (RECORD_HEADER_SIZE + RECORD_BODY_FIXED)

/* Whole-record sizes, to reserve room before encoding. */
static inline size_t record_body_size(size_t data_len)
{
	return record_size(RECORD_BODY_FIXED + data_len);
}

static inline size_t record_commit_size(void)
{
	return record_size(RECORD_COMMIT_PAYLOAD);
}

static inline size_t record_rcpt_state_size(size_t reason_len)
{
	return record_size(RECORD_RCPT_FIXED + RECORD_STRING_PREFIX + reason_len);
}

static inline size_t record_id_size(void)
{
	return record_size(RECORD_ID_PAYLOAD);
}

/* ---- payloads, decoded ----------------------------------------------------- */

struct record_string {
	const char *data; /* points into the decoded buffer */
	uint16_t len;
};

struct record_segment {
	uint32_t worker;
	uint64_t sequence;  /* per worker, increasing */
	int64_t created_ms; /* unix time */
};

struct record_envelope {
	char id[RECORD_ID_LEN];
	int64_t arrival_ms;
	struct record_string client; /* client IP address */
	struct record_string helo;
	struct record_string sender; /* "" for the null sender */
	uint16_t nparams;
	uint16_t nrecipients;
	/* params then recipients, nparams + nrecipients strings, in the
	 * caller's array (see record_decode_envelope) */
};

struct record_body {
	char id[RECORD_ID_LEN];
	uint32_t chunk; /* 0, 1, 2, ... within the message */
	const uint8_t *data;
	uint32_t len;
};

struct record_commit {
	char id[RECORD_ID_LEN];
	uint64_t body_len; /* sum of the BODY chunks */
	uint32_t nchunks;
};

/* RCPT_DELIVERED, RCPT_DEFERRED, RCPT_FAILED */
struct record_rcpt_state {
	char id[RECORD_ID_LEN];
	uint16_t recipient;          /* index in the envelope */
	uint32_t attempts;           /* DEFERRED: attempts so far */
	int64_t time_ms;             /* when it happened; DEFERRED: next attempt */
	struct record_string reason; /* the remote reply, or "" */
};

/* MESSAGE_DONE, ABORT */
struct record_id {
	char id[RECORD_ID_LEN];
};

/* BATCH */
struct record_batch {
	uint64_t start; /* file offset of the batch's first record */
};

/* Bytes a BATCH record takes (the writer keeps this much spare). */
#define RECORD_BATCH_SIZE (RECORD_HEADER_SIZE + 8)

/* ---- decoding ------------------------------------------------------------- */

enum record_status {
	RECORD_OK = 0,
	RECORD_END = -1,       /* zeros where a header would be: no more records */
	RECORD_TRUNCATED = -2, /* the buffer ends inside the record (a torn tail, or read more) */
	RECORD_BAD = -3,       /* bad header, wrong salt, bad checksum, bad payload */
};

/* A record as found in a buffer. */
struct record_view {
	enum record_type type;
	const uint8_t *payload;
	uint32_t length;
	size_t size; /* bytes to skip to the next record (record_size(length)) */
};

/*
 * Check and frame the record at buf[0..len) (buf must be 8-byte aligned in
 * the file). RECORD_END: 24 zero bytes. RECORD_TRUNCATED: fewer than
 * `size` bytes available (only when the header itself is sane). RECORD_BAD:
 * wrong version, reserved bits, salt or checksum, unknown type, or a
 * length over RECORD_MAX_PAYLOAD.
 */
enum record_status record_frame(const uint8_t *buf, size_t len, uint64_t salt,
				struct record_view *out);

/*
 * Decode a framed record's payload; each returns 0 or RECORD_BAD (payload
 * too short, too long, or inconsistent). Decoded strings point into the
 * payload.
 */
int record_decode_segment(const struct record_view *v, struct record_segment *out);
/* strings: room for nparams + nrecipients entries (max_strings); params
 * first, then recipients. */
int record_decode_envelope(const struct record_view *v, struct record_envelope *out,
			   struct record_string *strings, size_t max_strings);
int record_decode_body(const struct record_view *v, struct record_body *out);
int record_decode_commit(const struct record_view *v, struct record_commit *out);
int record_decode_rcpt_state(const struct record_view *v, struct record_rcpt_state *out);
int record_decode_id(const struct record_view *v, struct record_id *out);
int record_decode_batch(const struct record_view *v, struct record_batch *out);

/* ---- encoding -------------------------------------------------------------- */

/*
 * Each encoder writes one whole record (header, payload, padding) into
 * dst[0..cap) and returns its size, or 0 when it does not fit (or a field
 * is out of range, e.g. a string over 65535 octets). Nothing is written
 * past the returned size.
 */
size_t record_encode_segment(uint8_t *dst, size_t cap, uint64_t salt,
			     const struct record_segment *seg);
/* strings: params then recipients, as in the decoder. */
size_t record_encode_envelope(uint8_t *dst, size_t cap, uint64_t salt,
			      const struct record_envelope *env,
			      const struct record_string *strings);
size_t record_encode_body(uint8_t *dst, size_t cap, uint64_t salt, const struct record_body *body);
size_t record_encode_commit(uint8_t *dst, size_t cap, uint64_t salt,
			    const struct record_commit *commit);
/* type: RECORD_RCPT_DELIVERED, _DEFERRED or _FAILED */
size_t record_encode_rcpt_state(uint8_t *dst, size_t cap, uint64_t salt, enum record_type type,
				const struct record_rcpt_state *st);
/* type: RECORD_MESSAGE_DONE or RECORD_ABORT */
size_t record_encode_id(uint8_t *dst, size_t cap, uint64_t salt, enum record_type type,
			const struct record_id *rid);

size_t record_encode_batch(uint8_t *dst, size_t cap, uint64_t salt,
			   const struct record_batch *batch);

/* Payload size an envelope will need (to size a buffer before encoding). */
size_t record_envelope_payload_size(const struct record_envelope *env,
				    const struct record_string *strings);

#endif
