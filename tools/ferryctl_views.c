/*
 * ferryctl_views — queue, list and show, as tables or JSON (see
 * ferryctl_views.h).
 */
#include "tools/ferryctl_views.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/array.h"
#include "queue/spool_view.h"

#define CTL_MAX_FIELDS 9
#define CTL_REPLY_MIN  20 /* columns list leaves a last reply on a narrow terminal */

/* Room for one more row; false (said) when memory runs out. */
#define ctl_room(rows, cap, n) (array_reserve((rows), (cap), (n) + 1) == 0 || ctl_out_of_memory())

/* ---- queue ------------------------------------------------------------------------ */

static int ctl_destination_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ctl_destination *)a)->domain,
		      ((const struct ctl_destination *)b)->domain);
}

int ctl_read_destinations(char *body, char *end, struct ctl_destination **out, size_t *count)
{
	size_t n = 0, cap = 0;
	struct ctl_destination *rows = NULL;
	char *cursor = body, *line;
	int status = CTL_OK;
	while ((line = ctl_next_line(&cursor, end)) != NULL) {
		if (*line == '\0')
			continue;
		char *f[CTL_MAX_FIELDS];
		char copy[512];
		snprintf(copy, sizeof(copy), "%s", line);
		struct ctl_destination d = {.domain = line};
		bool ok = ctl_split(line, f, 7) == 7 && ctl_signed(f[6], &d.oldest_ms);
		for (int i = 0; ok && i < 5; i++)
			ok = ctl_number(f[1 + i], &d.count[i]);
		if (!ok) {
			ctl_bad_line(copy);
			status = CTL_ERROR;
			continue;
		}
		if (!ctl_room(rows, cap, n)) {
			status = CTL_ERROR;
			break;
		}
		rows[n++] = d;
	}
	if (n > 0)
		qsort(rows, n, sizeof(*rows), ctl_destination_cmp);
	*out = rows;
	*count = n;
	return status;
}

static const char *const ctl_count_names[5] = {"recipients", "ready", "deferred", "held",
					       "inflight"};

static void ctl_json_destination(struct ctl_json *j, const struct ctl_output *o,
				 const struct ctl_destination *d)
{
	for (int k = 0; k < 5; k++)
		ctl_json_uint(j, ctl_count_names[k], d->count[k]);
	if (d->oldest_ms > 0) {
		ctl_json_int(j, "oldest_arrival_ms", d->oldest_ms);
		long long age = (o->now_ms - d->oldest_ms) / 1000;
		ctl_json_int(j, "oldest_age_seconds", age > 0 ? age : 0);
	} else {
		ctl_json_string(j, "oldest_arrival_ms", NULL);
		ctl_json_string(j, "oldest_age_seconds", NULL);
	}
}

int ctl_print_queue(const struct ctl_output *o, bool offline, char *body, char *end)
{
	static const char *const titles[5] = {"MESSAGES", "READY", "DEFERRED", "HELD", "INFLIGHT"};
	struct ctl_destination *rows;
	size_t n;
	int status = ctl_read_destinations(body, end, &rows, &n);

	struct ctl_destination total = {.domain = NULL, .oldest_ms = 0};
	for (size_t i = 0; i < n; i++) {
		for (int k = 0; k < 5; k++)
			total.count[k] += rows[i].count[k];
		if (rows[i].oldest_ms > 0 &&
		    (total.oldest_ms == 0 || rows[i].oldest_ms < total.oldest_ms))
			total.oldest_ms = rows[i].oldest_ms;
	}
	if (o->json) {
		struct ctl_json j;
		ctl_json_start(&j, o->out);
		ctl_json_open(&j, NULL, '{');
		ctl_json_bool(&j, "offline", offline);
		ctl_json_open(&j, "destinations", '[');
		for (size_t i = 0; i < n; i++) {
			ctl_json_open(&j, NULL, '{');
			ctl_json_string(&j, "domain", rows[i].domain);
			ctl_json_destination(&j, o, &rows[i]);
			ctl_json_close(&j, '}');
		}
		ctl_json_close(&j, ']');
		ctl_json_open(&j, "total", '{');
		ctl_json_uint(&j, "domains", n);
		ctl_json_destination(&j, o, &total);
		ctl_json_close(&j, '}');
		ctl_json_close(&j, '}');
		ctl_json_end(&j);
		free(rows);
		return status;
	}

	char total_label[64];
	int width[6] = {(int)strlen("DOMAIN"), 0, 0, 0, 0, 0};
	for (size_t i = 0; i < n; i++)
		width[0] = ctl_max(width[0], (int)strlen(rows[i].domain));
	snprintf(total_label, sizeof(total_label), "total (%zu domain%s)", n, n == 1 ? "" : "s");
	width[0] = ctl_max(width[0], (int)strlen(total_label));
	for (int k = 0; k < 5; k++)
		width[1 + k] = ctl_max((int)strlen(titles[k]), ctl_width(total.count[k]));

	fprintf(o->out, "%-*s", width[0], "DOMAIN");
	for (int k = 0; k < 5; k++)
		fprintf(o->out, "  %*s", width[1 + k], titles[k]);
	fprintf(o->out, "  %6s\n", "OLDEST");
	char age[32];
	for (size_t i = 0; i <= n; i++) {
		const struct ctl_destination *d = i < n ? &rows[i] : &total;
		const char *label = i < n ? d->domain : total_label;
		ctl_put_safe(label, strlen(label), o->out);
		fprintf(o->out, "%*s", width[0] - (int)strlen(label), "");
		for (int k = 0; k < 5; k++)
			fprintf(o->out, "  %*llu", width[1 + k], d->count[k]);
		fprintf(o->out, "  %6s\n", ctl_age(age, sizeof(age), o->now_ms, d->oldest_ms));
	}
	free(rows);
	return status;
}

/* ---- list --------------------------------------------------------------------------- */

struct ctl_recipient {
	const char *id, *state;
	char *sender, *address; /* as the protocol has them (log_quote()d) */
	char *reply;            /* unquoted; "" when none */
	unsigned long long attempts, size;
	long long arrival_ms, next_ms;
};

static int ctl_recipient_cmp(const void *a, const void *b)
{
	const struct ctl_recipient *x = a, *y = b;
	if (x->arrival_ms != y->arrival_ms)
		return x->arrival_ms < y->arrival_ms ? -1 : 1;
	int c = strcmp(x->id, y->id);
	return c != 0 ? c : strcmp(x->address, y->address);
}

/* One line of the list body into r (pointing into line); false when it
 * is not one. A ferryd older than the last two fields gives 7. */
static bool ctl_parse_recipient(char *line, struct ctl_recipient *r)
{
	char *f[CTL_MAX_FIELDS];
	int n = ctl_split(line, f, 9);
	if ((n != 7 && n != 9) || !ctl_number(f[2], &r->attempts) ||
	    !ctl_signed(f[3], &r->arrival_ms) || !ctl_number(f[4], &r->size))
		return false;
	r->next_ms = 0;
	r->reply = f[n - 1] + strlen(f[n - 1]); /* "" */
	if (n == 9) {
		if (!ctl_signed(f[7], &r->next_ms))
			return false;
		r->reply = ctl_unquote(f[8]);
	}
	r->id = f[0];
	r->state = f[1];
	r->sender = f[5];
	r->address = f[6];
	return true;
}

/* When a deferred recipient is tried next: "in 4m", or "now" once due;
 * "-" when it is not deferred or the time is not known. */
static const char *ctl_next_attempt(char *out, size_t size, int64_t now_ms, const char *state,
				    long long next_ms)
{
	if (strcmp(state, "deferred") != 0 || next_ms <= 0) {
		snprintf(out, size, "-");
		return out;
	}
	if (next_ms <= now_ms) {
		snprintf(out, size, "now");
		return out;
	}
	/* Rounded up: "in 0s" would read as "now". */
	char age[32];
	ctl_age(age, sizeof(age), next_ms + 999, now_ms);
	snprintf(out, size, "in %s", age);
	return out;
}

static void ctl_json_list(const struct ctl_output *o, bool offline, const char *domain,
			  struct ctl_recipient *rows, size_t n)
{
	struct ctl_json j;
	ctl_json_start(&j, o->out);
	ctl_json_open(&j, NULL, '{');
	ctl_json_bool(&j, "offline", offline);
	ctl_json_string(&j, "domain", domain);
	ctl_json_open(&j, "recipients", '[');
	for (size_t i = 0; i < n; i++) {
		struct ctl_recipient *r = &rows[i];
		long long age = (o->now_ms - r->arrival_ms) / 1000;
		char *sender = ctl_unquote(r->sender);
		ctl_json_open(&j, NULL, '{');
		ctl_json_string(&j, "queue_id", r->id);
		ctl_json_string(&j, "state", r->state);
		ctl_json_uint(&j, "attempts", r->attempts);
		if (strcmp(r->state, "deferred") == 0 && r->next_ms > 0)
			ctl_json_int(&j, "next_attempt_ms", r->next_ms);
		else
			ctl_json_string(&j, "next_attempt_ms", NULL);
		ctl_json_int(&j, "arrival_ms", r->arrival_ms);
		ctl_json_int(&j, "age_seconds", age > 0 ? age : 0);
		ctl_json_uint(&j, "size", r->size);
		ctl_json_string(&j, "sender", strcmp(sender, "<>") == 0 ? "" : sender);
		ctl_json_string(&j, "recipient", ctl_unquote(r->address));
		ctl_json_string(&j, "last_reply", r->reply[0] != '\0' ? r->reply : NULL);
		ctl_json_close(&j, '}');
	}
	ctl_json_close(&j, ']');
	ctl_json_close(&j, '}');
	ctl_json_end(&j);
}

static void ctl_table_list(const struct ctl_output *o, struct ctl_recipient *rows, size_t n)
{
	enum { COLUMNS = 9 };
	static const char *const titles[COLUMNS] = {"QUEUE-ID", "STATE",     "ATTEMPTS",
						    "NEXT",     "AGE",       "SIZE",
						    "SENDER",   "RECIPIENT", "LAST-REPLY"};
	int width[COLUMNS];
	for (int k = 0; k < COLUMNS; k++)
		width[k] = (int)strlen(titles[k]);
	char age[32], next[40], size[16];
	for (size_t i = 0; i < n; i++) {
		const struct ctl_recipient *r = &rows[i];
		width[0] = ctl_max(width[0], (int)strlen(r->id));
		width[1] = ctl_max(width[1], (int)strlen(r->state));
		width[2] = ctl_max(width[2], ctl_width(r->attempts));
		width[3] = ctl_max(width[3],
				   (int)strlen(ctl_next_attempt(next, sizeof(next), o->now_ms,
								r->state, r->next_ms)));
		width[4] = ctl_max(
			width[4], (int)strlen(ctl_age(age, sizeof(age), o->now_ms, r->arrival_ms)));
		width[5] = ctl_max(width[5], (int)strlen(ctl_size(size, sizeof(size), r->size)));
		width[6] = ctl_max(width[6], (int)strlen(r->sender));
		width[7] = ctl_max(width[7], (int)strlen(r->address));
	}
	/* The last reply takes what the terminal has left, at least
	 * CTL_REPLY_MIN columns. */
	size_t columns = ctl_terminal_columns(o->out), used = 2 * (COLUMNS - 1);
	for (int k = 0; k < COLUMNS - 1; k++)
		used += (size_t)width[k];
	size_t room = columns == 0                     ? 0
		      : columns > used + CTL_REPLY_MIN ? columns - used
						       : CTL_REPLY_MIN;
	fprintf(o->out, "%-*s  %-*s  %*s  %-*s  %*s  %*s  %-*s  %-*s  %s\n", width[0], titles[0],
		width[1], titles[1], width[2], titles[2], width[3], titles[3], width[4], titles[4],
		width[5], titles[5], width[6], titles[6], width[7], titles[7], titles[8]);
	/* Addresses and replies arrive escaped (log_quote): printable ASCII
	 * only. */
	for (size_t i = 0; i < n; i++) {
		struct ctl_recipient *r = &rows[i];
		fprintf(o->out, "%-*s  %-*s  %*llu  %-*s  %*s  %*s  %-*s  %-*s  %s\n", width[0],
			r->id, width[1], r->state, width[2], r->attempts, width[3],
			ctl_next_attempt(next, sizeof(next), o->now_ms, r->state, r->next_ms),
			width[4], ctl_age(age, sizeof(age), o->now_ms, r->arrival_ms), width[5],
			ctl_size(size, sizeof(size), r->size), width[6], r->sender, width[7],
			r->address,
			r->reply[0] == '\0' ? "-"
			: room > 0          ? ctl_truncate(r->reply, room)
					    : r->reply);
	}
}

int ctl_print_list(const struct ctl_output *o, bool offline, const char *domain, char *body,
		   char *end)
{
	size_t n = 0, cap = 0;
	struct ctl_recipient *rows = NULL;
	char *cursor = body, *line;
	int status = CTL_OK;
	while ((line = ctl_next_line(&cursor, end)) != NULL) {
		if (*line == '\0')
			continue;
		char copy[2048];
		snprintf(copy, sizeof(copy), "%s", line);
		struct ctl_recipient r;
		if (!ctl_parse_recipient(line, &r)) {
			ctl_bad_line(copy);
			status = CTL_ERROR;
			continue;
		}
		if (!ctl_room(rows, cap, n)) {
			free(rows);
			return CTL_ERROR;
		}
		rows[n++] = r;
	}
	if (n > 0)
		qsort(rows, n, sizeof(*rows), ctl_recipient_cmp);
	if (o->json)
		ctl_json_list(o, offline, domain, rows, n);
	else if (n == 0)
		fprintf(o->out, "no mail queued for %s\n", domain);
	else
		ctl_table_list(o, rows, n);
	free(rows);
	return status;
}

/* ---- show ---------------------------------------------------------------------------- */

#define CTL_SHOW_MAX 4096 /* envelope lines kept: recipients and parameters */

/* A show answer's envelope, its values pointing into the body. */
struct ctl_message {
	char *id, *client, *helo, *sender;
	long long arrival_ms;
	unsigned long long size;
	bool have_arrival, have_size;
	struct {
		char *key, *value;
	} lines[CTL_SHOW_MAX]; /* the lines past those, in order */
	size_t nlines;
	char *headers_error;
	const char *headers; /* the header section as stored */
	size_t headers_len;
};

/* A quoted value without escapes reads better bare ("size=37" is quoted
 * only for its '='). In place. */
static char *ctl_bare(char *value)
{
	size_t vlen = strlen(value);
	if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"' &&
	    strpbrk(value + 1, "\\\"") == value + vlen - 1) {
		value[vlen - 1] = '\0';
		value++;
	}
	return value;
}

static int ctl_read_message(char *body, char *end, struct ctl_message *m)
{
	char *cursor = body, *line;
	int status = CTL_OK;
	while ((line = ctl_next_line(&cursor, end)) != NULL && *line != '\0') {
		char *value = strchr(line, ' ');
		if (value == NULL || !ctl_safe_text(value)) {
			ctl_bad_line(line);
			status = CTL_ERROR;
			continue;
		}
		*value++ = '\0';
		value = ctl_bare(value);
		if (strcmp(line, "id") == 0)
			m->id = value;
		else if (strcmp(line, "arrival") == 0)
			m->have_arrival = ctl_signed(value, &m->arrival_ms);
		else if (strcmp(line, "size") == 0)
			m->have_size = ctl_number(value, &m->size);
		else if (strcmp(line, "client") == 0)
			m->client = value;
		else if (strcmp(line, "helo") == 0)
			m->helo = value;
		else if (strcmp(line, "sender") == 0)
			m->sender = value;
		else if (strcmp(line, "headers-error") == 0)
			m->headers_error = value;
		else if (m->nlines < CTL_SHOW_MAX) {
			m->lines[m->nlines].key = line;
			m->lines[m->nlines++].value = value;
		}
	}
	if (cursor < end) {
		m->headers = cursor;
		m->headers_len = (size_t)(end - cursor);
	}
	return status;
}

/* "ADDRESS STATE ATTEMPTS REPLY" (a ferryd older than that: "ADDRESS")
 * into its fields, unquoted. False when it is the old form. */
static bool ctl_show_rcpt(char *value, char **address, char **state, unsigned long long *attempts,
			  char **reply)
{
	char *f[4];
	if (ctl_split(value, f, 4) != 4 || !ctl_number(f[2], attempts))
		return false;
	*address = ctl_unquote(f[0]);
	*state = f[1];
	*reply = ctl_unquote(f[3]);
	return true;
}

/* "x@example.com (deferred after 1 attempt: 451 4.7.1 try later)". */
static void ctl_print_show_rcpt(char *value, FILE *out)
{
	char *address, *state, *reply;
	unsigned long long attempts;
	if (!ctl_show_rcpt(value, &address, &state, &attempts, &reply)) {
		fprintf(out, "%s\n", value);
		return;
	}
	fprintf(out, "%s (%s", address, state);
	if (attempts == 0 && strcmp(state, "queued") == 0)
		fprintf(out, ", not tried yet");
	else if (attempts > 0)
		fprintf(out, " after %llu attempt%s", attempts, attempts == 1 ? "" : "s");
	if (*reply != '\0')
		fprintf(out, ": %s", reply);
	fprintf(out, ")\n");
}

/* The header section, one line at a time without its CR. */
static void ctl_print_headers(const char *data, size_t len, FILE *out)
{
	while (len > 0) {
		const char *nl = memchr(data, '\n', len);
		size_t line = nl != NULL ? (size_t)(nl - data) : len;
		size_t shown = line > 0 && data[line - 1] == '\r' ? line - 1 : line;
		ctl_put_safe(data, shown, out);
		fputc('\n', out);
		if (nl == NULL)
			break;
		data += line + 1;
		len -= line + 1;
	}
}

static void ctl_table_show(const struct ctl_output *o, const struct ctl_message *m)
{
	FILE *out = o->out;
	if (m->id != NULL)
		fprintf(out, "queue id:    %s\n", m->id);
	if (m->have_arrival) {
		char when[64] = "?", age[32];
		time_t t = (time_t)(m->arrival_ms / 1000);
		struct tm tm;
		if (gmtime_r(&t, &tm) != NULL)
			snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
				 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
				 tm.tm_min, tm.tm_sec, (int)(m->arrival_ms % 1000));
		fprintf(out, "arrival:     %s (%s ago)\n", when,
			ctl_age(age, sizeof(age), o->now_ms, m->arrival_ms));
	}
	if (m->have_size) {
		char size[16];
		if (m->size < 1024)
			fprintf(out, "size:        %llu octets\n", m->size);
		else
			fprintf(out, "size:        %s (%llu octets)\n",
				ctl_size(size, sizeof(size), m->size), m->size);
	}
	if (m->client != NULL)
		fprintf(out, "client:      %s\n", m->client);
	if (m->helo != NULL)
		fprintf(out, "helo:        %s\n", m->helo);
	if (m->sender != NULL)
		fprintf(out, "sender:      %s\n", m->sender);
	bool params = false, rcpts = false;
	char last_segment[SPOOL_VIEW_SEGMENT_NAME_MAX + 1] = "";
	char stored[512] = "";
	unsigned chunks = 0;
	for (size_t i = 0; i < m->nlines; i++) {
		const char *key = m->lines[i].key;
		char *value = m->lines[i].value;
		if (strcmp(key, "param") == 0) {
			fprintf(out, "%s%s\n", params ? "             " : "params:      ", value);
			params = true;
		} else if (strcmp(key, "rcpt") == 0) {
			if (!params) {
				fprintf(out, "params:      (none)\n");
				params = true;
			}
			fprintf(out, "%s", rcpts ? "             " : "recipients:  ");
			ctl_print_show_rcpt(value, out);
			rcpts = true;
		} else if (strcmp(key, "body") == 0) {
			char name[SPOOL_VIEW_SEGMENT_NAME_MAX + 1];
			if (sscanf(value, "%32s", name) == 1 && strcmp(name, last_segment) != 0) {
				size_t used = strlen(stored);
				snprintf(stored + used, sizeof(stored) - used, "%s%s",
					 used ? ", " : "", name);
				snprintf(last_segment, sizeof(last_segment), "%s", name);
			}
			chunks++;
		} else {
			/* A newer ferryd may say more: show it rather than hide it. */
			fprintf(out, "%-12s %s\n", key, value);
		}
	}
	if (chunks > 0)
		fprintf(out, "stored in:   %s (%u body record%s)\n", stored, chunks,
			chunks == 1 ? "" : "s");
	fputc('\n', out);
	if (m->headers != NULL)
		ctl_print_headers(m->headers, m->headers_len, out);
}

static void ctl_json_show(const struct ctl_output *o, bool offline, struct ctl_message *m)
{
	struct ctl_json j;
	ctl_json_start(&j, o->out);
	ctl_json_open(&j, NULL, '{');
	ctl_json_bool(&j, "offline", offline);
	ctl_json_string(&j, "queue_id", m->id);
	if (m->have_arrival) {
		long long age = (o->now_ms - m->arrival_ms) / 1000;
		ctl_json_int(&j, "arrival_ms", m->arrival_ms);
		ctl_json_int(&j, "age_seconds", age > 0 ? age : 0);
	}
	if (m->have_size)
		ctl_json_uint(&j, "size", m->size);
	ctl_json_string(&j, "client", m->client != NULL ? ctl_unquote(m->client) : NULL);
	ctl_json_string(&j, "helo", m->helo != NULL ? ctl_unquote(m->helo) : NULL);
	const char *sender = m->sender != NULL ? ctl_unquote(m->sender) : NULL;
	ctl_json_string(&j, "sender", sender != NULL && strcmp(sender, "<>") == 0 ? "" : sender);
	static const char *const lists[] = {"param", "rcpt", "body"};
	static const char *const names[] = {"params", "recipients", "body"};
	for (size_t l = 0; l < 3; l++) {
		ctl_json_open(&j, names[l], '[');
		for (size_t i = 0; i < m->nlines; i++) {
			if (strcmp(m->lines[i].key, lists[l]) != 0)
				continue;
			char *value = m->lines[i].value;
			char *address, *state, *reply, name[SPOOL_VIEW_SEGMENT_NAME_MAX + 1];
			unsigned long long attempts, offset, length;
			if (l == 0) {
				ctl_json_string(&j, NULL, ctl_unquote(value));
			} else if (l == 1 &&
				   ctl_show_rcpt(value, &address, &state, &attempts, &reply)) {
				ctl_json_open(&j, NULL, '{');
				ctl_json_string(&j, "address", address);
				ctl_json_string(&j, "state", state);
				ctl_json_uint(&j, "attempts", attempts);
				ctl_json_string(&j, "last_reply", reply[0] != '\0' ? reply : NULL);
				ctl_json_close(&j, '}');
			} else if (l == 2 &&
				   sscanf(value, "%32s %llu %llu", name, &offset, &length) == 3) {
				ctl_json_open(&j, NULL, '{');
				ctl_json_string(&j, "segment", name);
				ctl_json_uint(&j, "offset", offset);
				ctl_json_uint(&j, "length", length);
				ctl_json_close(&j, '}');
			}
		}
		ctl_json_close(&j, ']');
	}
	if (m->headers_error != NULL)
		ctl_json_string(&j, "headers_error", m->headers_error);
	ctl_json_bytes(&j, "headers", m->headers != NULL ? m->headers : "", m->headers_len);
	ctl_json_close(&j, '}');
	ctl_json_end(&j);
}

int ctl_print_show(const struct ctl_output *o, bool offline, char *body, char *end)
{
	struct ctl_message *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return ctl_out_of_memory(), CTL_ERROR;
	int status = ctl_read_message(body, end, m);
	if (m->headers_error != NULL) {
		fprintf(stderr, "ferryctl: cannot read the headers: %s\n", m->headers_error);
		status = CTL_ERROR;
	}
	if (o->json)
		ctl_json_show(o, offline, m);
	else
		ctl_table_show(o, m);
	free(m);
	return status;
}
