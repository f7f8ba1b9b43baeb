#include "queue/spool_view.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/array.h"
#include "core/buf.h"
#include "core/list.h"
#include "queue/record.h"
#include "queue/recover.h"
#include "queue/segment.h"

_Static_assert(SPOOL_VIEW_SEGMENT_NAME_MAX == SEGMENT_NAME_MAX, "one segment name size");
_Static_assert(QUEUE_ID_LEN == RECORD_ID_LEN, "one queue id length");
/* A recipient's state is recover.h's, shown under the public names. */
_Static_assert((int)SPOOL_VIEW_QUEUED == (int)RECOVER_RCPT_QUEUED &&
		       (int)SPOOL_VIEW_DEFERRED == (int)RECOVER_RCPT_DEFERRED &&
		       (int)SPOOL_VIEW_DELIVERED == (int)RECOVER_RCPT_DELIVERED &&
		       (int)SPOOL_VIEW_FAILED == (int)RECOVER_RCPT_FAILED,
	       "one set of recipient states");
/* A message's arrays share one allocation, laid end to end. */
_Static_assert(sizeof(struct spool_view_rcpt) % _Alignof(struct queue_param) == 0 &&
		       sizeof(struct queue_param) % _Alignof(struct queue_extent) == 0,
	       "arrays laid end to end stay aligned");

/* One copy of a message as read, with where it was found; its strings and
 * arrays live in `block`, which this copy owns. */
struct spool_view_copy {
	struct spool_view_message message;
	struct spool_view_rcpt *rcpts; /* message.rcpts, writable */
	struct recover_place place;
	void *block;
};

struct spool_view_state {
	struct spool_view view; /* what the caller is handed */
	struct spool_view_copy *copies;
	size_t ncopies, copies_cap;
	struct recover_outcomes outcomes; /* applied once every message is known */
	int64_t *outcome_times;           /* each one's time_ms, by the same index */
	size_t outcome_times_cap;
	struct spool_view_segment *left_out;
	size_t nleft_out, left_out_cap;
	struct spool_view_message *messages;
	int hook_error; /* a failure in a hook that cannot return one */
};

/* ---- the scan: recover_spool() read-only, everything copied out ---------- */

/* Copy len bytes and a NUL to *cursor, moving it on. */
static const char *spool_view_text(char **cursor, const char *s, size_t len)
{
	char *copy = *cursor;
	memcpy(copy, s, len);
	copy[len] = '\0';
	*cursor += len + 1;
	return copy;
}

/* Recovery's pointers go into mappings it unmaps later: copy everything,
 * into one allocation per copy. */
static int spool_view_on_message(void *arg, const struct recover_message *rm)
{
	struct spool_view_state *sv = arg;
	const struct record_envelope *env = rm->envelope;
	size_t nparams = env->nparams, nrcpts = env->nrecipients;
	size_t chars = (size_t)env->sender.len + env->client.len + env->helo.len + 3;
	for (size_t i = 0; i < nparams + nrcpts; i++)
		chars += rm->strings[i].len + 1u;
	for (size_t i = nparams; i < nparams + nrcpts; i++)
		chars += rm->strings[i].len + 1u; /* room for its domain */
	size_t arrays = nrcpts * sizeof(struct spool_view_rcpt) +
			nparams * sizeof(struct queue_param) +
			rm->nextents * sizeof(struct queue_extent);
	if (array_reserve(sv->copies, sv->copies_cap, sv->ncopies + 1) != 0)
		return -ENOMEM;
	char *block = malloc(arrays + chars);
	if (block == NULL)
		return -ENOMEM;
	struct spool_view_copy *c = &sv->copies[sv->ncopies++];
	memset(c, 0, sizeof(*c));
	c->block = block;
	c->place = (struct recover_place){rm->worker, rm->envelope_sequence, rm->envelope_offset};
	struct spool_view_message *m = &c->message;
	memcpy(m->id, env->id, RECORD_ID_LEN);
	m->writer = rm->worker;
	m->arrival_ms = env->arrival_ms;
	m->body_len = rm->body_len;

	char *cursor = block;
	c->rcpts = (struct spool_view_rcpt *)(void *)cursor;
	cursor += nrcpts * sizeof(struct spool_view_rcpt);
	struct queue_param *params = (struct queue_param *)(void *)cursor;
	cursor += nparams * sizeof(struct queue_param);
	struct queue_extent *extents = (struct queue_extent *)(void *)cursor;
	cursor += rm->nextents * sizeof(struct queue_extent);
	if (rm->nextents > 0)
		memcpy(extents, rm->extents, rm->nextents * sizeof(*extents));

	m->sender = spool_view_text(&cursor, env->sender.data, env->sender.len);
	m->client = spool_view_text(&cursor, env->client.data, env->client.len);
	m->helo = spool_view_text(&cursor, env->helo.data, env->helo.len);
	m->sender_len = env->sender.len;
	m->client_len = env->client.len;
	m->helo_len = env->helo.len;
	for (size_t i = 0; i < nparams; i++) {
		const struct record_string *s = &rm->strings[i];
		params[i].text = spool_view_text(&cursor, s->data, s->len);
		params[i].len = s->len;
	}
	for (size_t i = 0; i < nrcpts; i++) {
		const struct record_string *s = &rm->strings[nparams + i];
		struct spool_view_rcpt *r = &c->rcpts[i];
		/* As the store: the domain follows the last '@' (none: empty). */
		size_t at = s->len;
		while (at > 0 && s->data[at - 1] != '@')
			at--;
		size_t domain_at = at > 0 ? at : s->len;
		r->address = spool_view_text(&cursor, s->data, s->len);
		r->len = s->len;
		r->state = SPOOL_VIEW_QUEUED;
		r->attempts = 0;
		r->next_attempt_ms = 0;
		char *domain = cursor;
		r->domain = spool_view_text(&cursor, s->data + domain_at, s->len - domain_at);
		for (char *p = domain; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
	}
	m->params = params;
	m->nparams = (unsigned)nparams;
	m->rcpts = c->rcpts;
	m->nrcpts = (unsigned)nrcpts;
	m->extents = extents;
	m->nextents = rm->nextents;
	return 0;
}

static int spool_view_on_rcpt_state(void *arg, enum record_type type,
				    const struct record_rcpt_state *st, uint32_t worker,
				    uint64_t sequence)
{
	(void)worker;
	(void)sequence;
	struct spool_view_state *sv = arg;
	/* Beside the outcome, its time: a deferral's is its next attempt,
	 * which an operator wants and recovery does not. */
	if (array_reserve(sv->outcome_times, sv->outcome_times_cap, sv->outcomes.count + 1) != 0)
		return -ENOMEM;
	sv->outcome_times[sv->outcomes.count] = st->time_ms;
	return recover_outcomes_keep(&sv->outcomes, st->id, type, st->recipient, st->attempts);
}

static int spool_view_on_done(void *arg, const struct record_id *id, uint32_t worker,
			      uint64_t sequence)
{
	(void)worker;
	(void)sequence;
	struct spool_view_state *sv = arg;
	return recover_outcomes_keep(&sv->outcomes, id->id, RECORD_MESSAGE_DONE, 0, 0);
}

static void spool_view_on_segment(void *arg, const struct recover_segment *seg)
{
	struct spool_view_state *sv = arg;
	sv->view.segments++;
	sv->view.torn += seg->verdict == RECOVER_TORN;
	if (seg->verdict != RECOVER_CORRUPT && seg->verdict != RECOVER_UNREADABLE)
		return;
	if (seg->verdict == RECOVER_CORRUPT)
		sv->view.corrupt++;
	else
		sv->view.unreadable++;
	if (array_reserve(sv->left_out, sv->left_out_cap, sv->nleft_out + 1) != 0) {
		sv->hook_error = -ENOMEM;
		return;
	}
	struct spool_view_segment *s = &sv->left_out[sv->nleft_out++];
	snprintf(s->name, sizeof(s->name), "%s", seg->name);
	s->corrupt = seg->verdict == RECOVER_CORRUPT;
	s->end = seg->end;
}

/* Forget what a scan read (before the next one, or at the end). */
static void spool_view_forget(struct spool_view_state *sv)
{
	for (size_t i = 0; i < sv->ncopies; i++)
		free(sv->copies[i].block);
	sv->ncopies = 0;
	sv->outcomes.count = 0;
	sv->nleft_out = 0;
	sv->hook_error = 0;
	unsigned rereads = sv->view.rereads;
	int fd = sv->view.segments_fd;
	memset(&sv->view, 0, sizeof(sv->view));
	sv->view.rereads = rereads;
	sv->view.segments_fd = fd;
}

static int spool_view_scan(struct spool_view_state *sv)
{
	struct recover_hooks hooks = {
		.arg = sv,
		.message = spool_view_on_message,
		.rcpt_state = spool_view_on_rcpt_state,
		.message_done = spool_view_on_done,
		.segment = spool_view_on_segment,
	};
	struct recover_stats stats;
	int r = recover_spool(sv->view.segments_fd, -1, true, &hooks, &stats);
	return r != 0 ? r : sv->hook_error;
}

/* ---- the rules, once every message is known ------------------------------ */

/* By id; copies of one id in read order, the one kept last. */
static int spool_view_copy_order(const void *a, const void *b)
{
	const struct spool_view_copy *x = a, *y = b;
	int c = memcmp(x->message.id, y->message.id, RECORD_ID_LEN);
	if (c != 0)
		return c;
	if (recover_copy_replaces(&x->place, &y->place))
		return -1;
	return recover_copy_replaces(&y->place, &x->place) ? 1 : 0;
}

/* Sorted already: keep the last copy of each id. */
static void spool_view_fold(struct spool_view_state *sv)
{
	size_t kept = 0;
	for (size_t i = 0; i < sv->ncopies; i++) {
		if (i + 1 < sv->ncopies &&
		    memcmp(sv->copies[i].message.id, sv->copies[i + 1].message.id, RECORD_ID_LEN) ==
			    0) {
			free(sv->copies[i].block);
			sv->view.duplicates++;
			continue;
		}
		sv->copies[kept++] = sv->copies[i];
	}
	sv->ncopies = kept;
}

static int spool_view_copy_by_id(const void *key, const void *elem)
{
	return memcmp(key, ((const struct spool_view_copy *)elem)->message.id, RECORD_ID_LEN);
}

static void spool_view_apply_outcomes(struct spool_view_state *sv)
{
	for (size_t i = 0; i < sv->outcomes.count; i++) {
		const struct recover_outcome *o = &sv->outcomes.items[i];
		struct spool_view_copy *c =
			sv->ncopies == 0 ? NULL
					 : bsearch(o->id, sv->copies, sv->ncopies,
						   sizeof(*sv->copies), spool_view_copy_by_id);
		if (c == NULL)
			continue; /* its message is gone (finished, or never committed) */
		if (o->type == RECORD_MESSAGE_DONE) {
			c->message.done = true;
			continue;
		}
		if (o->recipient >= c->message.nrcpts)
			continue;
		struct spool_view_rcpt *r = &c->rcpts[o->recipient];
		struct recover_rcpt state = {(enum recover_rcpt_state)r->state, r->attempts};
		recover_rcpt_apply(&state, o->type, o->attempts);
		r->state = (enum spool_view_rcpt_state)state.state;
		r->attempts = state.attempts;
		r->next_attempt_ms =
			r->state == SPOOL_VIEW_DEFERRED && o->type == RECORD_RCPT_DEFERRED
				? sv->outcome_times[i]
				: r->next_attempt_ms;
	}
}

static int spool_view_settle(struct spool_view_state *sv)
{
	if (sv->ncopies > 1)
		qsort(sv->copies, sv->ncopies, sizeof(*sv->copies), spool_view_copy_order);
	spool_view_fold(sv);
	spool_view_apply_outcomes(sv);
	sv->messages = malloc((sv->ncopies ? sv->ncopies : 1) * sizeof(*sv->messages));
	if (sv->messages == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < sv->ncopies; i++)
		sv->messages[i] = sv->copies[i].message;
	sv->view.messages = sv->messages;
	sv->view.count = sv->ncopies;
	sv->view.left_out = sv->left_out;
	return 0;
}

/* ---- the view ---------------------------------------------------------------- */

int spool_view_open(struct spool_view **out, const char *spool_dir, char *err, size_t err_size)
{
	*out = NULL;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/segments", spool_dir);
	struct spool_view_state *sv = calloc(1, sizeof(*sv));
	if (sv == NULL) {
		snprintf(err, err_size, "reading %s: out of memory", path);
		return -ENOMEM;
	}
	sv->view.segments_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sv->view.segments_fd < 0) {
		int e = errno;
		snprintf(err, err_size, "cannot open %s: %s", path, strerror(e));
		free(sv);
		return -e;
	}
	int r;
	for (unsigned attempt = 1;; attempt++) {
		r = spool_view_scan(sv);
		if (r != -ESTALE || attempt == SPOOL_VIEW_ATTEMPTS)
			break;
		/* ferryd deleted a segment under the scan: what it held may
		 * be in a segment the listing did not name. From scratch,
		 * once ferryd has had a moment to finish. */
		spool_view_forget(sv);
		sv->view.rereads++;
		usleep(10000);
	}
	if (r == 0)
		r = spool_view_settle(sv);
	if (r != 0) {
		snprintf(err, err_size, "reading %s: %s", path,
			 r == -ENOMEM ? "out of memory" : strerror(-r));
		spool_view_close(&sv->view);
		return r;
	}
	recover_outcomes_free(&sv->outcomes);
	free(sv->outcome_times);
	sv->outcome_times = NULL;
	sv->outcome_times_cap = 0;
	*out = &sv->view;
	return 0;
}

void spool_view_close(struct spool_view *v)
{
	if (v == NULL)
		return;
	struct spool_view_state *sv = container_of(v, struct spool_view_state, view);
	for (size_t i = 0; i < sv->ncopies; i++)
		free(sv->copies[i].block);
	free(sv->copies);
	recover_outcomes_free(&sv->outcomes);
	free(sv->outcome_times);
	free(sv->left_out);
	free(sv->messages);
	if (v->segments_fd >= 0)
		close(v->segments_fd);
	free(sv);
}

static int spool_view_message_by_id(const void *key, const void *elem)
{
	return memcmp(key, ((const struct spool_view_message *)elem)->id, RECORD_ID_LEN);
}

const struct spool_view_message *spool_view_find(const struct spool_view *v, const char *id)
{
	if (v->count == 0 || strlen(id) != QUEUE_ID_LEN)
		return NULL;
	/* Queue ids are upper-case Crockford base32. */
	char key[QUEUE_ID_LEN];
	for (size_t i = 0; i < QUEUE_ID_LEN; i++)
		key[i] = (char)toupper((unsigned char)id[i]);
	return bsearch(key, v->messages, v->count, sizeof(*v->messages), spool_view_message_by_id);
}

/* ---- reading bodies back ---------------------------------------------------------- */

void spool_view_segment_name(char out[SPOOL_VIEW_SEGMENT_NAME_MAX], uint32_t writer,
			     uint64_t sequence)
{
	segment_name(out, writer, sequence);
}

bool spool_view_parse_segment_name(const char *name, uint32_t *writer, uint64_t *sequence)
{
	return segment_parse_name(name, writer, sequence);
}

/* Where the header section in data[0..len) ends: just past its last header
 * line (0 when the body starts with the empty line), or -1 if the empty
 * line that ends it is not there yet. */
static long spool_view_headers_end(const char *data, size_t len)
{
	if (len >= 1 && (data[0] == '\n' || (len >= 2 && data[0] == '\r' && data[1] == '\n')))
		return 0;
	for (size_t i = 0; i + 1 < len; i++) {
		if (data[i] != '\n')
			continue;
		if (data[i + 1] == '\n' ||
		    (i + 2 < len && data[i + 1] == '\r' && data[i + 2] == '\n'))
			return (long)i + 1;
	}
	return -1;
}

static int spool_view_pread_all(int fd, char *dst, size_t want, uint64_t offset, const char *name,
				char *why, size_t why_size)
{
	size_t got = 0;
	while (got < want) {
		ssize_t k = pread(fd, dst + got, want - got, (off_t)(offset + got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			int r = k < 0 ? -errno : -EIO;
			snprintf(why, why_size, "reading segments/%s: %s", name,
				 k < 0 ? strerror(errno) : "the file ends early");
			return r;
		}
		got += (size_t)k;
	}
	return 0;
}

/* The extents in order onto out, at most max octets; with headers_only,
 * only as far as the header section goes. */
static int spool_view_read(int segments_fd, uint32_t writer, const struct queue_extent *extents,
			   size_t n, size_t max, bool headers_only, struct buf *out, char *why,
			   size_t why_size)
{
	size_t base = buf_len(out), got = 0;
	char name[SEGMENT_NAME_MAX];
	uint64_t open_sequence = 0;
	int fd = -1, r = 0;
	long end = -1;
	for (size_t i = 0; i < n && end < 0 && got < max; i++) {
		const struct queue_extent *x = &extents[i];
		if (fd < 0 || x->sequence != open_sequence) {
			if (fd >= 0)
				close(fd);
			segment_name(name, writer, x->sequence);
			fd = openat(segments_fd, name, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				int e = errno;
				snprintf(why, why_size, "cannot open segments/%s: %s", name,
					 strerror(e));
				/* Deleted since the extents were named: moved by
				 * compaction, or finished. */
				r = e == ENOENT ? SPOOL_VIEW_MOVED : -e;
				break;
			}
			open_sequence = x->sequence;
		}
		size_t want = max - got < x->len ? max - got : x->len;
		if (want == 0)
			continue;
		char *dst = buf_extend(out, want);
		if (dst == NULL) {
			snprintf(why, why_size, "out of memory");
			r = -ENOMEM;
			break;
		}
		r = spool_view_pread_all(fd, dst, want, x->offset, name, why, why_size);
		if (r != 0)
			break;
		got += want;
		/* Rescanned whole: the empty line may straddle two extents. */
		if (headers_only)
			end = spool_view_headers_end(buf_head(out) + base, got);
	}
	if (fd >= 0)
		close(fd);
	size_t keep = r != 0 ? 0 : end >= 0 ? (size_t)end : got;
	out->end = out->start + base + keep;
	return r;
}

int spool_view_read_body(int segments_fd, uint32_t writer, const struct queue_extent *extents,
			 size_t nextents, struct buf *out, char *why, size_t why_size)
{
	return spool_view_read(segments_fd, writer, extents, nextents, SIZE_MAX, false, out, why,
			       why_size);
}

int spool_view_read_headers(int segments_fd, uint32_t writer, const struct queue_extent *extents,
			    size_t nextents, size_t max, struct buf *out, char *why,
			    size_t why_size)
{
	return spool_view_read(segments_fd, writer, extents, nextents, max, true, out, why,
			       why_size);
}
