/*
 * ferryctl_offline — ferryctl's offline mode (see ferryctl_offline.h):
 * the admin protocol's answers made from the spool view.
 */
#include "tools/ferryctl_offline.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "net/admin.h"
#include "queue/spool_view.h"

#define OFF_QUOTED 600 /* log_quote()d addresses, as the store's */

/* Read dir's spool view. 0, or -1 (said). */
static int offline_open(const char *dir, struct spool_view **out)
{
	char err[PATH_MAX + 256];
	int r = spool_view_open(out, dir, err, sizeof(err));
	if (r == 0)
		return 0;
	fprintf(stderr, "ferryctl: %s%s\n", err, r == -ENOENT ? " (is it a ferry spool?)" : "");
	return -1;
}

/* What the view left out, and what it found torn, said on stderr. */
static void offline_say_verdicts(const struct spool_view *v)
{
	for (unsigned i = 0; i < v->corrupt + v->unreadable; i++) {
		const struct spool_view_segment *s = &v->left_out[i];
		if (s->corrupt)
			fprintf(stderr,
				"ferryctl: warning: segment %s is corrupt after offset %llu; its "
				"messages are not shown\n",
				s->name, (unsigned long long)s->end);
		else
			fprintf(stderr, "ferryctl: warning: segment %s could not be read\n",
				s->name);
	}
	if (v->torn > 0)
		fprintf(stderr,
			"ferryctl: note: %u segment%s end%s in an incomplete batch (ferryd is "
			"writing it, or it crashed): nothing there was acknowledged\n",
			v->torn, v->torn == 1 ? "" : "s", v->torn == 1 ? "s" : "");
}

static bool offline_rcpt_queued(const struct spool_view_rcpt *r)
{
	return r->state == SPOOL_VIEW_QUEUED || r->state == SPOOL_VIEW_DEFERRED;
}

struct offline_entry {
	const char *domain;
	const struct spool_view_message *message;
	const struct spool_view_rcpt *rcpt;
};

static int offline_entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct offline_entry *)a)->domain,
		      ((const struct offline_entry *)b)->domain);
}

/* queue: the admin protocol's lines, one per destination. */
static int offline_report_destinations(const struct spool_view *v, struct buf *out)
{
	size_t n = 0, cap = 0;
	for (size_t i = 0; i < v->count; i++)
		if (!v->messages[i].done)
			cap += v->messages[i].nrcpts;
	struct offline_entry *all = malloc((cap + 1) * sizeof(*all));
	if (all == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < v->count; i++) {
		const struct spool_view_message *m = &v->messages[i];
		for (unsigned k = 0; !m->done && k < m->nrcpts; k++)
			if (offline_rcpt_queued(&m->rcpts[k]))
				all[n++] =
					(struct offline_entry){m->rcpts[k].domain, m, &m->rcpts[k]};
	}
	if (n > 0)
		qsort(all, n, sizeof(*all), offline_entry_cmp);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		unsigned long long ready = 0, deferred = 0;
		long long oldest = 0;
		for (; j < n && strcmp(all[j].domain, all[i].domain) == 0; j++) {
			bool is_deferred = all[j].rcpt->state == SPOOL_VIEW_DEFERRED;
			ready += !is_deferred;
			deferred += is_deferred;
			if (oldest == 0 || all[j].message->arrival_ms < oldest)
				oldest = all[j].message->arrival_ms;
		}
		buf_printf(out, "%s %llu %llu %llu 0 0 %lld\n", all[i].domain, ready + deferred,
			   ready, deferred, oldest);
		i = j;
	}
	free(all);
	return 0;
}

static void offline_report_domain(const struct spool_view *v, const char *domain, struct buf *out)
{
	char sender[OFF_QUOTED], rcpt[OFF_QUOTED];
	for (size_t i = 0; i < v->count; i++) {
		const struct spool_view_message *m = &v->messages[i];
		for (unsigned k = 0; !m->done && k < m->nrcpts; k++) {
			const struct spool_view_rcpt *r = &m->rcpts[k];
			if (!offline_rcpt_queued(r) || strcmp(r->domain, domain) != 0)
				continue;
			if (m->sender_len == 0)
				snprintf(sender, sizeof(sender), "<>");
			else
				log_quote(sender, sizeof(sender), m->sender, m->sender_len);
			log_quote(rcpt, sizeof(rcpt), r->address, r->len);
			/* As ferryd's list; the replies are not in the view. */
			buf_printf(out, "%s %s %u %lld %llu %s %s %lld \"\"\n", m->id,
				   r->state == SPOOL_VIEW_DEFERRED ? "deferred" : "ready",
				   r->attempts, (long long)m->arrival_ms,
				   (unsigned long long)m->body_len, sender, rcpt,
				   r->state == SPOOL_VIEW_DEFERRED ? (long long)r->next_attempt_ms
								   : 0LL);
		}
	}
}

/* offline_report_message: the message's body moved since the view was taken. */
#define OFFLINE_MOVED 2

/*
 * show: the admin protocol's answer body for one message. 1, or 0 if it
 * is not there, or OFFLINE_MOVED (only when `moved_ok` is false, with nothing
 * appended) when compaction moved it under the reader: read the view
 * again.
 */
static int offline_report_message(const struct spool_view *v, const char *id, bool moved_ok,
				  struct buf *out)
{
	const struct spool_view_message *m = spool_view_find(v, id);
	if (m == NULL || m->done)
		return 0;
	struct buf headers = {0};
	char why[256];
	int r = spool_view_read_headers(v->segments_fd, m->writer, m->extents, m->nextents,
					ADMIN_HEADERS_MAX, &headers, why, sizeof(why));
	if (r == SPOOL_VIEW_MOVED && !moved_ok) {
		buf_release(&headers);
		return OFFLINE_MOVED;
	}
	char quoted[OFF_QUOTED];
	buf_printf(out, "id %s\narrival %lld\nsize %llu\n", m->id, (long long)m->arrival_ms,
		   (unsigned long long)m->body_len);
	buf_printf(out, "client %s\n", log_quote(quoted, sizeof(quoted), m->client, m->client_len));
	buf_printf(out, "helo %s\n", log_quote(quoted, sizeof(quoted), m->helo, m->helo_len));
	buf_printf(out, "sender %s\n",
		   m->sender_len ? log_quote(quoted, sizeof(quoted), m->sender, m->sender_len)
				 : "<>");
	for (unsigned i = 0; i < m->nparams; i++)
		buf_printf(out, "param %s\n",
			   log_quote(quoted, sizeof(quoted), m->params[i].text, m->params[i].len));
	static const char *const states[] = {[SPOOL_VIEW_QUEUED] = "queued",
					     [SPOOL_VIEW_DEFERRED] = "deferred",
					     [SPOOL_VIEW_DELIVERED] = "delivered",
					     [SPOOL_VIEW_FAILED] = "failed"};
	for (unsigned i = 0; i < m->nrcpts; i++) /* every one, as ferryd answers */
		buf_printf(out, "rcpt %s %s %u \"\"\n",
			   log_quote(quoted, sizeof(quoted), m->rcpts[i].address, m->rcpts[i].len),
			   states[m->rcpts[i].state], m->rcpts[i].attempts);
	for (uint32_t i = 0; i < m->nextents; i++) {
		char name[SPOOL_VIEW_SEGMENT_NAME_MAX];
		spool_view_segment_name(name, m->writer, m->extents[i].sequence);
		buf_printf(out, "body %s %llu %u\n", name, (unsigned long long)m->extents[i].offset,
			   m->extents[i].len);
	}
	if (r != 0)
		buf_printf(out, "headers-error %s\n", why);
	buf_printf(out, "\n");
	buf_append(out, buf_head(&headers), buf_len(&headers));
	buf_release(&headers);
	return 1;
}

int ferryctl_offline_answer(const char *dir, enum ferryctl_view view, const char *arg,
			    struct buf *answer, unsigned *left_out)
{
	struct spool_view *v = NULL;
	struct buf body = {0};
	int found = 1;
	/* A show reads the headers after the view was taken; a compaction
	 * may have moved the message in between: then read the view once
	 * more, as ferryd is asked once more online. */
	for (int attempt = 0;; attempt++) {
		spool_view_close(v);
		v = NULL;
		if (offline_open(dir, &v) != 0) {
			buf_release(&body);
			return -1;
		}
		buf_clear(&body);
		if (view == FERRYCTL_QUEUE)
			found = offline_report_destinations(v, &body) == 0 ? 1 : -1;
		else if (view == FERRYCTL_LIST)
			offline_report_domain(v, arg, &body);
		else
			found = offline_report_message(v, arg, attempt > 0, &body);
		if (found != OFFLINE_MOVED)
			break;
	}
	offline_say_verdicts(v);
	*left_out = v->corrupt + v->unreadable;
	if (found > 0) {
		buf_printf(answer, "ok\n");
		buf_append(answer, buf_head(&body), buf_len(&body));
	} else if (found == 0) {
		buf_printf(answer, "error: no message %s in the queue\n", arg);
	} else {
		buf_printf(answer, "error: out of memory\n");
	}
	buf_release(&body);
	spool_view_close(v);
	return 0;
}
