/*
 * fake_queue — a stand-in for the durable store behind queue/queue.h, linked
 * into test_smtp_session instead of queue/spool.c.
 *
 * It keeps a record of every message begun: its envelope (rendered as text,
 * one "key value" line per field, so a test compares it with one string),
 * the body bytes written, and what became of it (committing, committed,
 * failed, aborted, detached). The test decides when and how things finish:
 * a commit stays pending until fake_queue_complete_commit(), a write can be
 * made to return 1 (backpressure) or an error, begin can be made to fail.
 *
 * It is as strict as the real store, and stricter where that catches bugs:
 *  - the struct queue_message handle is freed *before* committed() is
 *    called, as spool.c does, so a session that still reads it (say, its
 *    queue id) is caught by AddressSanitizer;
 *  - callbacks are never made from inside begin/write/commit;
 *  - any use that breaks the contract (write after commit, abort after
 *    commit, a second begin while a message is open, ...) is remembered and
 *    reported by fake_queue_violation().
 *
 * There is no header: the test declares the handful of functions below
 * that it uses.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "queue/queue.h"

#define FAKE_QUEUE_MAX_RECORDS 32

struct queue {
	unsigned live; /* handles not yet freed */
	unsigned flushes;
};

struct fake_record {
	char id[QUEUE_ID_LEN + 1];
	const char *state; /* "writing", "committing", "committed", "failed", "aborted" */
	bool detached;     /* the client left while the commit was in flight */
	struct buf envelope;
	struct buf body;
	unsigned writes;
	struct queue_message *handle; /* NULL once freed */
	struct queue_client *client;
};

struct queue_message {
	struct queue *queue;
	unsigned record;
	char id[QUEUE_ID_LEN + 1]; /* what queue_message_id() returns */
};

static struct fake_record fake_records[FAKE_QUEUE_MAX_RECORDS];
static unsigned fake_nrecords;
static unsigned fake_id_counter;
static int fake_begin_error;        /* next begin fails with this (one shot) */
static int fake_space_error;        /* what queue_check_space() answers */
static bool fake_write_rule_active; /* write number fake_write_rule_index ... */
static unsigned fake_write_rule_index;
static int fake_write_rule_result; /* ... of the next/current message returns this */
static char fake_violation_text[256];

__attribute__((format(printf, 1, 2))) static void fake_violation(const char *fmt, ...)
{
	/* Keep the first: later ones are usually its consequences. */
	if (fake_violation_text[0] != '\0')
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fake_violation_text, sizeof(fake_violation_text), fmt, ap);
	va_end(ap);
}

static struct fake_record *fake_record_of(const struct queue_message *m, const char *op)
{
	if (m == NULL) {
		fake_violation("%s called with a NULL message", op);
		return NULL;
	}
	return &fake_records[m->record];
}

static void fake_handle_free(struct fake_record *r)
{
	if (r->handle == NULL)
		return;
	r->handle->queue->live--;
	free(r->handle);
	r->handle = NULL;
}

/* ---- the queue.h contract ------------------------------------------------ */

int queue_open(struct queue **out, struct worker *w, struct queue_store *store, uint32_t index)
{
	(void)w;
	(void)store;
	(void)index;
	struct queue *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	*out = q;
	return 0;
}

void queue_close(struct queue *q)
{
	for (unsigned i = 0; i < fake_nrecords; i++) {
		if (fake_records[i].handle != NULL && fake_records[i].handle->queue == q)
			fake_handle_free(&fake_records[i]);
	}
	free(q);
}

int queue_message_begin(struct queue *q, struct queue_client *client,
			const struct queue_envelope *env, struct queue_message **out)
{
	if (client == NULL || client->committed == NULL || client->resume == NULL)
		fake_violation("%s without a complete queue_client", "queue_message_begin");
	for (unsigned i = 0; i < fake_nrecords; i++) {
		const struct fake_record *r = &fake_records[i];
		if (r->handle != NULL && r->client == client && !r->detached)
			fake_violation("%s while the client's previous message is still open",
				       "queue_message_begin");
	}
	if (fake_begin_error != 0) {
		int e = fake_begin_error;
		fake_begin_error = 0;
		return e;
	}
	if (fake_nrecords == FAKE_QUEUE_MAX_RECORDS) {
		fake_violation("%s: more messages than the fake records", "queue_message_begin");
		return -ENOMEM;
	}
	struct queue_message *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	struct fake_record *r = &fake_records[fake_nrecords];
	memset(r, 0, sizeof(*r));
	snprintf(r->id, sizeof(r->id), "FAKE%012u", ++fake_id_counter);
	r->state = "writing";
	r->handle = m;
	r->client = client;
	m->queue = q;
	m->record = fake_nrecords++;
	memcpy(m->id, r->id, sizeof(m->id));
	q->live++;

	/* The envelope is copied, as the contract says: render it now. */
	struct buf *b = &r->envelope;
	buf_printf(b, "client %s\nhelo %s\n", env->client_address, env->helo);
	buf_printf(b, "sender %.*s\n", (int)env->sender_len, env->sender);
	for (unsigned i = 0; i < env->nparams; i++)
		buf_printf(b, "param %.*s\n", (int)env->params[i].len, env->params[i].text);
	for (unsigned i = 0; i < env->nrecipients; i++)
		buf_printf(b, "rcpt %.*s\n", (int)env->recipients[i].len,
			   env->recipients[i].address);
	buf_append(b, "", 1); /* NUL-terminated for the test */
	if (env->arrival.tv_sec == 0)
		fake_violation("%s: envelope without an arrival time", "queue_message_begin");
	*out = m;
	return 0;
}

const char *queue_message_id(const struct queue_message *m)
{
	return m->id;
}

int queue_message_write(struct queue_message *m, const void *data, size_t len)
{
	struct fake_record *r = fake_record_of(m, "queue_message_write");
	if (r == NULL)
		return -EINVAL;
	if (strcmp(r->state, "writing") != 0) {
		fake_violation("queue_message_write on a message that is %s", r->state);
		return -EINVAL;
	}
	if (len == 0)
		fake_violation("%s of zero bytes", "queue_message_write");
	unsigned index = r->writes++;
	if (fake_write_rule_active && fake_write_rule_index == index) {
		fake_write_rule_active = false;
		if (fake_write_rule_result < 0)
			return fake_write_rule_result; /* not taken */
		buf_append(&r->body, data, len);
		return fake_write_rule_result;
	}
	buf_append(&r->body, data, len);
	return 0;
}

void queue_message_commit(struct queue_message *m)
{
	struct fake_record *r = fake_record_of(m, "queue_message_commit");
	if (r == NULL)
		return;
	if (strcmp(r->state, "writing") != 0) {
		fake_violation("queue_message_commit on a message that is %s", r->state);
		return;
	}
	r->state = "committing";
}

void queue_message_abort(struct queue_message *m)
{
	struct fake_record *r = fake_record_of(m, "queue_message_abort");
	if (r == NULL)
		return;
	if (strcmp(r->state, "writing") != 0) {
		fake_violation("queue_message_abort on a message that is %s", r->state);
		return;
	}
	r->state = "aborted";
	fake_handle_free(r);
}

void queue_message_detach(struct queue_message *m)
{
	struct fake_record *r = fake_record_of(m, "queue_message_detach");
	if (r == NULL)
		return;
	if (strcmp(r->state, "committing") != 0) {
		fake_violation("queue_message_detach on a message that is %s", r->state);
		return;
	}
	r->detached = true;
}

void queue_flush(struct queue *q)
{
	q->flushes++;
}

unsigned queue_pending(const struct queue *q)
{
	return q->live;
}

/* ---- what the tests use -------------------------------------------------- */

/* Forget everything (between tests). Frees what is still live. */
void fake_queue_reset(void)
{
	for (unsigned i = 0; i < fake_nrecords; i++) {
		struct fake_record *r = &fake_records[i];
		if (r->handle != NULL) {
			r->handle->queue->live--;
			free(r->handle);
		}
		buf_release(&r->envelope);
		buf_release(&r->body);
	}
	memset(fake_records, 0, sizeof(fake_records));
	fake_nrecords = 0;
	fake_id_counter = 0;
	fake_begin_error = 0;
	fake_space_error = 0;
	fake_write_rule_active = false;
	fake_violation_text[0] = '\0';
}

int queue_check_space(struct queue *q, uint64_t size)
{
	(void)q;
	(void)size;
	return fake_space_error;
}

/* queue_check_space() answers `error` until told otherwise (0). */
void fake_queue_set_space(int error)
{
	fake_space_error = error;
}

/* The next queue_message_begin() returns `error` (e.g. -EIO, -ENOSPC). */
void fake_queue_fail_begin(int error)
{
	fake_begin_error = error;
}

/* Write number `index` (0 = the first write of a message, counted over the
 * message open now or, if none, the next one begun) returns `result`: 1
 * (backpressure; the bytes are taken) or a negative errno (not taken).
 * One shot. */
void fake_queue_write_result_at(unsigned index, int result)
{
	fake_write_rule_active = true;
	fake_write_rule_index = index;
	fake_write_rule_result = result;
}

unsigned fake_queue_count(void)
{
	return fake_nrecords;
}

static const struct fake_record *fake_record_at(unsigned i)
{
	static const struct fake_record none = {.state = "none", .id = ""};
	return i < fake_nrecords ? &fake_records[i] : &none;
}

/* "writing", "committing", "committed", "failed", "aborted" or "none";
 * "detached" while a detached commit is in flight. */
const char *fake_queue_state(unsigned i)
{
	const struct fake_record *r = fake_record_at(i);
	if (r->detached && strcmp(r->state, "committing") == 0)
		return "detached";
	return r->state;
}

bool fake_queue_detached(unsigned i)
{
	return fake_record_at(i)->detached;
}

const char *fake_queue_id(unsigned i)
{
	return fake_record_at(i)->id;
}

const char *fake_queue_envelope(unsigned i)
{
	const struct fake_record *r = fake_record_at(i);
	return r->envelope.data != NULL ? buf_head(&r->envelope) : "";
}

/* The body bytes written (Received header included). NUL-terminated copy
 * owned by the fake, valid until the next call. */
const char *fake_queue_body(unsigned i, size_t *len)
{
	static char *copy;
	const struct fake_record *r = fake_record_at(i);
	size_t n = r->body.data != NULL ? buf_len(&r->body) : 0;
	free(copy);
	copy = malloc(n + 1);
	if (copy == NULL)
		abort();
	if (n > 0)
		memcpy(copy, buf_head(&r->body), n);
	copy[n] = '\0';
	if (len != NULL)
		*len = n;
	return copy;
}

unsigned fake_queue_writes(unsigned i)
{
	return fake_record_at(i)->writes;
}

/* Messages whose handle is still live (begun and not finished). */
unsigned fake_queue_live(void)
{
	unsigned n = 0;
	for (unsigned i = 0; i < fake_nrecords; i++)
		n += fake_records[i].handle != NULL;
	return n;
}

static struct fake_record *fake_oldest(const char *state)
{
	for (unsigned i = 0; i < fake_nrecords; i++) {
		if (fake_records[i].handle != NULL && strcmp(fake_records[i].state, state) == 0)
			return &fake_records[i];
	}
	return NULL;
}

bool fake_queue_commit_pending(void)
{
	return fake_oldest("committing") != NULL;
}

/*
 * Finish the oldest commit in flight with `status` (0: durable, or a
 * negative errno), the way the store does: the handle is freed first, then
 * committed() is called unless the client detached. Returns false when no
 * commit was pending.
 */
bool fake_queue_complete_commit(int status)
{
	struct fake_record *r = fake_oldest("committing");
	if (r == NULL)
		return false;
	r->state = status == 0 ? "committed" : "failed";
	struct queue_client *client = r->client;
	bool detached = r->detached;
	fake_handle_free(r);
	if (!detached)
		client->committed(client, status);
	return true;
}

/* The store drained below its low-water mark: call resume() of the message
 * being written. Returns false when none is. */
bool fake_queue_resume(void)
{
	struct fake_record *r = fake_oldest("writing");
	if (r == NULL)
		return false;
	r->client->resume(r->client);
	return true;
}

/* NULL, or what the session did against the contract. */
const char *fake_queue_violation(void)
{
	return fake_violation_text[0] != '\0' ? fake_violation_text : NULL;
}
