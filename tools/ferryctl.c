/*
 * ferryctl — the operator's tool.
 *
 *   ferryctl [-c CONFIG | --socket PATH | --spool DIR] queue | list DOMAIN | show QUEUEID
 *   ferryctl [-c CONFIG | --socket PATH] flush [DOMAIN | @DOMAIN | #QUEUE]
 *   ferryctl [-c CONFIG | --socket PATH] hold DOMAIN | release DOMAIN
 *
 * Online (the default) it asks a running ferryd over <spool>/ferryctl.sock
 * (protocol: net/admin.h, docs/operations.md). Offline (--spool DIR) it
 * reads the spool's segment files itself (tools/ferryctl_offline.h), so
 * it works on a stopped ferryd's spool, on a copy, and beside a running
 * ferryd.
 *
 * Both ways produce the same text body (the admin protocol's), and one
 * formatter turns it into the tables an operator reads, so the two views
 * cannot drift apart. The moves (flush, hold, release) act on a running
 * ferryd's memory, so they are online only.
 *
 * Exit status: 0 ok, 1 an error from ferryd or the spool, 2 usage.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/array.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "net/admin.h"
#include "net/etrn.h"
#include "queue/queue.h"
#include "queue/spool_view.h"
#include "tools/ferryctl_offline.h"

#define CTL_OK    0
#define CTL_ERROR 1
#define CTL_USAGE 2

#define CTL_TIMEOUT_S  20  /* each send and receive; ferryd waits 5 s for workers */
#define CTL_QUOTED     600 /* log_quote()d addresses, as the store's */
#define CTL_MAX_FIELDS 8

enum ctl_command { CTL_QUEUE, CTL_LIST, CTL_SHOW, CTL_FLUSH, CTL_HOLD, CTL_RELEASE };

static const char *const ctl_command_names[] = {"queue", "list", "show",
						"flush", "hold", "release"};

#define CTL_NCOMMANDS (sizeof(ctl_command_names) / sizeof(ctl_command_names[0]))
#define CTL_REPLY_MIN 20 /* columns list leaves a last reply on a narrow terminal */

static void ctl_usage(FILE *out)
{
	fprintf(out,
		"usage: ferryctl [-c CONFIG | --socket PATH | --spool DIR] COMMAND [ARG]\n"
		"commands:\n"
		"  queue           per destination: recipients queued, ready, deferred, held,\n"
		"                  in flight, and the age of the oldest\n"
		"  list DOMAIN     the queued recipients of DOMAIN: queue id, state, attempts,\n"
		"                  next attempt, age, size, sender, recipient, last reply\n"
		"  show QUEUEID    a message's envelope, each recipient's state, and headers\n"
		"  flush [DOMAIN]  make the held and deferred recipients of DOMAIN (without\n"
		"                  one: of every domain) ready for delivery now, forgetting\n"
		"                  their retry wait (postqueue -s DOMAIN / postqueue -f)\n"
		"  flush @DOMAIN   the same for DOMAIN and every domain below it (ETRN's form)\n"
		"  flush #QUEUE    the same for the domains whose [domain] section has\n"
		"                  etrn_queues = QUEUE\n"
		"  hold DOMAIN     deliver nothing to DOMAIN until it is released (or ferryd\n"
		"                  restarts); its mail is still accepted and queued\n"
		"  release DOMAIN  end a hold (the config's hold = yes too, until ferryd\n"
		"                  restarts) and deliver DOMAIN's mail now\n"
		"options:\n"
		"  -c, --config FILE  ferryd's configuration: talk to the ferryd of its spool\n"
		"                     (default: the built-in defaults, spool ./var/spool)\n"
		"      --socket PATH  talk to ferryd over this socket instead\n"
		"      --spool DIR    offline: read the spool DIR's segment files directly,\n"
		"                     read-only (with or without a running ferryd); for\n"
		"                     queue, list and show only\n"
		"  -h, --help         this text\n"
		"      --version      print the version\n"
		"A relative spool directory is taken from the current directory.\n"
		"Exit status: 0 ok, 1 error from ferryd or the spool, 2 usage.\n");
}

static int64_t ctl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- reading the protocol's text -------------------------------------------- */

/* The next line of [*cursor, end), NUL-terminated in place; NULL at the end. */
static char *ctl_next_line(char **cursor, char *end)
{
	if (*cursor >= end)
		return NULL;
	char *line = *cursor;
	char *nl = memchr(line, '\n', (size_t)(end - line));
	if (nl == NULL) {
		/* The body is NUL-terminated one past end (see ctl_body). */
		*cursor = end;
		return line;
	}
	*nl = '\0';
	*cursor = nl + 1;
	return line;
}

/*
 * Split a line into fields at single spaces, in place. A field that starts
 * with '"' is a log_quote()d value and runs to its closing quote (it may
 * hold spaces). The last field takes the rest of the line. Returns the
 * number of fields.
 */
static int ctl_split(char *line, char **fields, int max)
{
	int n = 0;
	char *p = line;
	while (n < max) {
		fields[n++] = p;
		if (n == max)
			break;
		if (*p == '"') {
			for (p++; *p != '\0' && *p != '"'; p++)
				if (*p == '\\' && p[1] != '\0')
					p++;
			if (*p == '"')
				p++;
		}
		char *space = strchr(p, ' ');
		if (space == NULL)
			break;
		*space = '\0';
		p = space + 1;
	}
	return n;
}

/* Text that came from the spool, made safe for a terminal: control
 * characters (escape sequences!) are shown as \xNN. */
static void ctl_put_safe(const char *s, size_t len, FILE *out)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			fprintf(out, "\\x%02x", c);
		else
			putc(c, out);
	}
}

static bool ctl_safe_text(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return false;
	return true;
}

/* "3s", "12m", "5h", "2d"; "-" for no time at all. */
static const char *ctl_age(char *out, size_t size, int64_t now_ms, long long then_ms)
{
	if (then_ms <= 0) {
		snprintf(out, size, "-");
		return out;
	}
	long long s = (now_ms - then_ms) / 1000;
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(out, size, "%llds", s);
	else if (s < 3600)
		snprintf(out, size, "%lldm", s / 60);
	else if (s < 86400)
		snprintf(out, size, "%lldh", s / 3600);
	else
		snprintf(out, size, "%lldd", s / 86400);
	return out;
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

/* A log_quote()d value shown bare: the quotes around it dropped, \" and
 * \\ undone (\xNN stays: it stands for a byte a terminal must not get).
 * In place. */
static char *ctl_unquote(char *s)
{
	size_t len = strlen(s);
	if (len < 2 || s[0] != '"' || s[len - 1] != '"')
		return s;
	s[len - 1] = '\0';
	char *w = s;
	for (const char *r = s + 1; *r != '\0'; r++) {
		if (*r == '\\' && (r[1] == '"' || r[1] == '\\'))
			r++;
		*w++ = *r;
	}
	*w = '\0';
	return s;
}

/* Cut s to at most max columns, marking the cut with "...". In place. */
static char *ctl_truncate(char *s, size_t max)
{
	if (strlen(s) > max && max > 3)
		memcpy(s + max - 3, "...", 4);
	return s;
}

/* Columns of the terminal out writes to; 0 when it is not one (a pipe
 * or a file gets whole lines: grep wants all of a reply). */
static size_t ctl_terminal_columns(FILE *out)
{
	struct winsize ws;
	if (!isatty(fileno(out)) || ioctl(fileno(out), TIOCGWINSZ, &ws) != 0)
		return 0;
	return ws.ws_col;
}

static int ctl_width(unsigned long long v)
{
	int w = 1;
	while (v >= 10) {
		v /= 10;
		w++;
	}
	return w;
}

static int ctl_max(int a, int b)
{
	return a > b ? a : b;
}

static bool ctl_number(const char *s, unsigned long long *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return *end == '\0' && errno == 0;
}

static bool ctl_signed(const char *s, long long *out)
{
	char *end;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return *s != '\0' && *end == '\0' && errno == 0;
}

static void ctl_bad_line(const char *line)
{
	fprintf(stderr, "ferryctl: unexpected line in the answer: ");
	ctl_put_safe(line, strlen(line), stderr);
	fputc('\n', stderr);
}

/* ---- the views ----------------------------------------------------------------- */

struct ctl_destination {
	const char *domain;
	unsigned long long count[5]; /* recipients, ready, deferred, held, inflight */
	long long oldest_ms;
};

static int ctl_destination_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ctl_destination *)a)->domain,
		      ((const struct ctl_destination *)b)->domain);
}

/* Room for one more row; false (said) when memory runs out. */
#define ctl_room(rows, cap, n) (array_reserve((rows), (cap), (n) + 1) == 0 || ctl_out_of_memory())

static bool ctl_out_of_memory(void)
{
	fprintf(stderr, "ferryctl: out of memory\n");
	return false;
}

static int ctl_print_queue(char *body, char *end, int64_t now_ms, FILE *out)
{
	static const char *const titles[5] = {"MESSAGES", "READY", "DEFERRED", "HELD", "INFLIGHT"};
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
			free(rows);
			return CTL_ERROR;
		}
		rows[n++] = d;
	}
	if (n > 0)
		qsort(rows, n, sizeof(*rows), ctl_destination_cmp);

	struct ctl_destination total = {.domain = NULL, .oldest_ms = 0};
	char total_label[64];
	int width[6] = {(int)strlen("DOMAIN"), 0, 0, 0, 0, 0};
	for (size_t i = 0; i < n; i++) {
		width[0] = ctl_max(width[0], (int)strlen(rows[i].domain));
		for (int k = 0; k < 5; k++)
			total.count[k] += rows[i].count[k];
		if (rows[i].oldest_ms > 0 &&
		    (total.oldest_ms == 0 || rows[i].oldest_ms < total.oldest_ms))
			total.oldest_ms = rows[i].oldest_ms;
	}
	snprintf(total_label, sizeof(total_label), "total (%zu domain%s)", n, n == 1 ? "" : "s");
	width[0] = ctl_max(width[0], (int)strlen(total_label));
	for (int k = 0; k < 5; k++)
		width[1 + k] = ctl_max((int)strlen(titles[k]), ctl_width(total.count[k]));

	fprintf(out, "%-*s", width[0], "DOMAIN");
	for (int k = 0; k < 5; k++)
		fprintf(out, "  %*s", width[1 + k], titles[k]);
	fprintf(out, "  %6s\n", "OLDEST");
	char age[32];
	for (size_t i = 0; i <= n; i++) {
		const struct ctl_destination *d = i < n ? &rows[i] : &total;
		const char *label = i < n ? d->domain : total_label;
		ctl_put_safe(label, strlen(label), out);
		fprintf(out, "%*s", width[0] - (int)strlen(label), "");
		for (int k = 0; k < 5; k++)
			fprintf(out, "  %*llu", width[1 + k], d->count[k]);
		fprintf(out, "  %6s\n", ctl_age(age, sizeof(age), now_ms, d->oldest_ms));
	}
	free(rows);
	return status;
}

struct ctl_recipient {
	const char *id, *state, *sender, *address;
	char *reply; /* unquoted; "" when none */
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
	char *f[CTL_MAX_FIELDS + 1];
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

static int ctl_print_list(const char *domain, char *body, char *end, int64_t now_ms, FILE *out)
{
	enum { COLUMNS = 9 };
	static const char *const titles[COLUMNS] = {"QUEUE-ID", "STATE",     "ATTEMPTS",
						    "NEXT",     "AGE",       "SIZE",
						    "SENDER",   "RECIPIENT", "LAST-REPLY"};
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
	if (n == 0) {
		fprintf(out, "no mail queued for %s\n", domain);
		free(rows);
		return status;
	}
	qsort(rows, n, sizeof(*rows), ctl_recipient_cmp);
	int width[COLUMNS];
	for (int k = 0; k < COLUMNS; k++)
		width[k] = (int)strlen(titles[k]);
	char age[32], next[40];
	for (size_t i = 0; i < n; i++) {
		const struct ctl_recipient *r = &rows[i];
		width[0] = ctl_max(width[0], (int)strlen(r->id));
		width[1] = ctl_max(width[1], (int)strlen(r->state));
		width[2] = ctl_max(width[2], ctl_width(r->attempts));
		width[3] =
			ctl_max(width[3], (int)strlen(ctl_next_attempt(next, sizeof(next), now_ms,
								       r->state, r->next_ms)));
		width[4] = ctl_max(width[4],
				   (int)strlen(ctl_age(age, sizeof(age), now_ms, r->arrival_ms)));
		width[5] = ctl_max(width[5], ctl_width(r->size));
		width[6] = ctl_max(width[6], (int)strlen(r->sender));
		width[7] = ctl_max(width[7], (int)strlen(r->address));
	}
	/* The last reply takes what the terminal has left, at least
	 * CTL_REPLY_MIN columns. */
	size_t columns = ctl_terminal_columns(out), used = 2 * (COLUMNS - 1);
	for (int k = 0; k < COLUMNS - 1; k++)
		used += (size_t)width[k];
	size_t room = columns == 0                     ? 0
		      : columns > used + CTL_REPLY_MIN ? columns - used
						       : CTL_REPLY_MIN;
	fprintf(out, "%-*s  %-*s  %*s  %-*s  %*s  %*s  %-*s  %-*s  %s\n", width[0], titles[0],
		width[1], titles[1], width[2], titles[2], width[3], titles[3], width[4], titles[4],
		width[5], titles[5], width[6], titles[6], width[7], titles[7], titles[8]);
	/* Addresses and replies arrive escaped (log_quote): printable ASCII
	 * only. */
	for (size_t i = 0; i < n; i++) {
		const struct ctl_recipient *r = &rows[i];
		fprintf(out, "%-*s  %-*s  %*llu  %-*s  %*s  %*llu  %-*s  %-*s  %s\n", width[0],
			r->id, width[1], r->state, width[2], r->attempts, width[3],
			ctl_next_attempt(next, sizeof(next), now_ms, r->state, r->next_ms),
			width[4], ctl_age(age, sizeof(age), now_ms, r->arrival_ms), width[5],
			r->size, width[6], r->sender, width[7], r->address,
			r->reply[0] == '\0' ? "-"
			: room > 0          ? ctl_truncate(r->reply, room)
					    : r->reply);
	}
	free(rows);
	return status;
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

/* "ADDRESS STATE ATTEMPTS REPLY" (a ferryd older than that: "ADDRESS")
 * as "x@example.com (deferred after 1 attempt: 451 4.7.1 try later)". */
static void ctl_print_show_rcpt(char *value, FILE *out)
{
	char *f[4];
	unsigned long long attempts;
	if (ctl_split(value, f, 4) != 4 || !ctl_number(f[2], &attempts)) {
		fprintf(out, "%s\n", value);
		return;
	}
	const char *reply = ctl_unquote(f[3]);
	fprintf(out, "%s (%s", ctl_unquote(f[0]), f[1]);
	if (attempts == 0 && strcmp(f[1], "queued") == 0)
		fprintf(out, ", not tried yet");
	else if (attempts > 0)
		fprintf(out, " after %llu attempt%s", attempts, attempts == 1 ? "" : "s");
	if (*reply != '\0')
		fprintf(out, ": %s", reply);
	fprintf(out, ")\n");
}

static int ctl_print_show(char *body, char *end, int64_t now_ms, FILE *out)
{
	char *cursor = body, *line;
	int status = CTL_OK;
	bool params = false, rcpts = false;
	char last_segment[SPOOL_VIEW_SEGMENT_NAME_MAX + 1] = "";
	char stored[512] = "";
	unsigned chunks = 0;
	while ((line = ctl_next_line(&cursor, end)) != NULL && *line != '\0') {
		char *value = strchr(line, ' ');
		if (value == NULL || !ctl_safe_text(value)) {
			ctl_bad_line(line);
			status = CTL_ERROR;
			continue;
		}
		*value++ = '\0';
		/* One value per line: a quoted value without escapes reads better
		 * bare ("size=37" is quoted only for its '='). */
		size_t vlen = strlen(value);
		if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"' &&
		    strpbrk(value + 1, "\\\"") == value + vlen - 1) {
			value[vlen - 1] = '\0';
			value++;
		}
		if (strcmp(line, "id") == 0) {
			fprintf(out, "queue id:    %s\n", value);
		} else if (strcmp(line, "arrival") == 0) {
			long long ms;
			char when[64] = "?", age[32];
			if (ctl_signed(value, &ms)) {
				time_t t = (time_t)(ms / 1000);
				struct tm tm;
				if (gmtime_r(&t, &tm) != NULL)
					snprintf(when, sizeof(when),
						 "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
						 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
						 tm.tm_hour, tm.tm_min, tm.tm_sec,
						 (int)(ms % 1000));
			}
			fprintf(out, "arrival:     %s (%s ago)\n", when,
				ctl_age(age, sizeof(age), now_ms, ctl_signed(value, &ms) ? ms : 0));
		} else if (strcmp(line, "size") == 0) {
			fprintf(out, "size:        %s octets\n", value);
		} else if (strcmp(line, "client") == 0) {
			fprintf(out, "client:      %s\n", value);
		} else if (strcmp(line, "helo") == 0) {
			fprintf(out, "helo:        %s\n", value);
		} else if (strcmp(line, "sender") == 0) {
			fprintf(out, "sender:      %s\n", value);
		} else if (strcmp(line, "param") == 0) {
			fprintf(out, "%s%s\n", params ? "             " : "params:      ", value);
			params = true;
		} else if (strcmp(line, "rcpt") == 0) {
			if (!params) {
				fprintf(out, "params:      (none)\n");
				params = true;
			}
			fprintf(out, "%s", rcpts ? "             " : "recipients:  ");
			ctl_print_show_rcpt(value, out);
			rcpts = true;
		} else if (strcmp(line, "body") == 0) {
			char name[SPOOL_VIEW_SEGMENT_NAME_MAX + 1];
			if (sscanf(value, "%32s", name) == 1 && strcmp(name, last_segment) != 0) {
				size_t used = strlen(stored);
				snprintf(stored + used, sizeof(stored) - used, "%s%s",
					 used ? ", " : "", name);
				snprintf(last_segment, sizeof(last_segment), "%s", name);
			}
			chunks++;
		} else if (strcmp(line, "headers-error") == 0) {
			fprintf(stderr, "ferryctl: cannot read the headers: %s\n", value);
			status = CTL_ERROR;
		} else {
			/* A newer ferryd may say more: show it rather than hide it. */
			fprintf(out, "%-12s %s\n", line, value);
		}
	}
	if (chunks > 0)
		fprintf(out, "stored in:   %s (%u body record%s)\n", stored, chunks,
			chunks == 1 ? "" : "s");
	fputc('\n', out);
	if (cursor < end)
		ctl_print_headers(cursor, (size_t)(end - cursor), out);
	return status;
}

/* flush, hold, release: "<done> <recipients>", said in words. */
static int ctl_print_move(enum ctl_command command, const char *domain, char *body, char *end,
			  FILE *out)
{
	static const char *const done[] = {
		[CTL_FLUSH] = "flushed", [CTL_HOLD] = "held", [CTL_RELEASE] = "released"};
	char *cursor = body;
	char *line = ctl_next_line(&cursor, end);
	char *f[2];
	unsigned long long n;
	if (line == NULL || ctl_split(line, f, 2) != 2 || strcmp(f[0], done[command]) != 0 ||
	    !ctl_number(f[1], &n)) {
		ctl_bad_line(line != NULL ? line : "");
		return CTL_ERROR;
	}
	const char *s = n == 1 ? "" : "s", *are = n == 1 ? "is" : "are";
	if (command == CTL_FLUSH && domain == NULL)
		fprintf(out, "flush: %llu recipient%s %s ready for delivery now\n", n, s, are);
	else if (command == CTL_FLUSH)
		fprintf(out, "flush: %llu recipient%s of %s %s ready for delivery now\n", n, s,
			domain, are);
	else if (command == CTL_HOLD)
		fprintf(out,
			"hold: %s is held until released (or ferryd restarts); %llu queued "
			"recipient%s held\n",
			domain, n, s);
	else
		fprintf(out,
			"release: %s is released; %llu recipient%s %s ready for delivery now\n",
			domain, n, s, are);
	return CTL_OK;
}

/* ---- online: ask ferryd ------------------------------------------------------------ */

/* Connect to the socket at path; -1 with the reason printed. */
static int ctl_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int dir_fd = -1;
	if (strlen(path) < sizeof(sa.sun_path)) {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	} else {
		/* Too long for sun_path: reach it through its directory. */
		char dir[PATH_MAX], base[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", path);
		snprintf(base, sizeof(base), "%s", path);
		dir_fd = open(dirname(dir), O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dir_fd >= 0)
			snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dir_fd,
				 basename(base));
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "ferryctl: socket: %s\n", strerror(errno));
		if (dir_fd >= 0)
			close(dir_fd);
		return -1;
	}
	struct timeval tv = {.tv_sec = CTL_TIMEOUT_S};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int r = sa.sun_path[0] != '\0'
			? connect(fd, (struct sockaddr *)&sa,
				  (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
					      strlen(sa.sun_path) + 1))
			: -1;
	int e = sa.sun_path[0] != '\0' ? errno : ENOENT;
	if (dir_fd >= 0)
		close(dir_fd);
	if (r == 0)
		return fd;
	close(fd);
	const char *hint = "";
	if (e == ENOENT || e == ECONNREFUSED)
		hint = " (is ferryd running? use --spool DIR to read the spool offline)";
	else if (e == EACCES || e == EPERM)
		hint = " (the socket is mode 0660: run as ferryd's user or a member of its group)";
	else if (e == EAGAIN || e == EINPROGRESS)
		hint = " (ferryd is busy; try again)";
	fprintf(stderr, "ferryctl: cannot connect to %s: %s%s\n", path, strerror(e), hint);
	return -1;
}

/* Send the request and read the whole answer. CTL_OK with the answer in
 * *answer, or CTL_ERROR (said). */
static int ctl_ask(const char *path, const char *request, struct buf *answer)
{
	int fd = ctl_connect(path);
	if (fd < 0)
		return CTL_ERROR;
	size_t len = strlen(request), done = 0;
	while (done < len) {
		ssize_t k = send(fd, request + done, len - done, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			fprintf(stderr, "ferryctl: sending to %s: %s\n", path,
				k < 0 ? strerror(errno) : "nothing sent");
			close(fd);
			return CTL_ERROR;
		}
		done += (size_t)k;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		char *room = buf_extend(answer, 65536);
		if (room == NULL) {
			fprintf(stderr, "ferryctl: out of memory\n");
			close(fd);
			return CTL_ERROR;
		}
		ssize_t k = recv(fd, room, 65536, 0);
		answer->end -= 65536 - (k > 0 ? (size_t)k : 0);
		if (k > 0)
			continue;
		if (k == 0)
			break;
		if (errno == EINTR)
			continue;
		fprintf(stderr, "ferryctl: reading from %s: %s\n", path,
			errno == EAGAIN || errno == EWOULDBLOCK ? "no answer in time"
								: strerror(errno));
		close(fd);
		return CTL_ERROR;
	}
	close(fd);
	return CTL_OK;
}

/* ---- main ----------------------------------------------------------------------- */

/* Check the command's argument as ferryd does, then normalise its case. */
static bool ctl_argument_ok(enum ctl_command command, char *arg)
{
	size_t len = strlen(arg);
	bool domain = command != CTL_SHOW;
	if (command == CTL_FLUSH && (arg[0] == '@' || arg[0] == '#')) { /* ETRN's forms */
		struct etrn_argument etrn;
		if (etrn_parse(arg, len, &etrn) != 0)
			return false;
		memcpy(arg, etrn.shown, strlen(etrn.shown) + 1); /* never longer */
		return true;
	}
	bool ok = command == CTL_LIST   ? admin_domain_ok(arg, len)
		  : command == CTL_SHOW ? admin_queue_id_ok(arg, len)
					: admin_destination_ok(arg, len);
	if (!ok)
		return false;
	/* Domains are kept lower-cased; queue ids are upper-case base32. */
	for (char *p = arg; *p != '\0'; p++)
		*p = (char)(domain ? tolower((unsigned char)*p) : toupper((unsigned char)*p));
	return true;
}

static void ctl_short_usage(void)
{
	fprintf(stderr, "usage: ferryctl [-c CONFIG | --socket PATH | --spool DIR] "
			"queue | list DOMAIN | show QUEUEID\n"
			"       ferryctl [-c CONFIG | --socket PATH] "
			"flush [DOMAIN | @DOMAIN | #QUEUE] | hold DOMAIN | release DOMAIN\n"
			"       (--help: more)\n");
}

static int ctl_usage_error(const char *fmt, const char *what)
{
	fprintf(stderr, "ferryctl: ");
	fprintf(stderr, fmt, what);
	fputc('\n', stderr);
	ctl_short_usage();
	return CTL_USAGE;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'}, {"socket", required_argument, NULL, 'S'},
		{"spool", required_argument, NULL, 'P'},  {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
	};
	const char *config_path = NULL, *socket_path = NULL, *spool_dir = NULL;
	int opt, sources = 0;
	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			sources++;
			break;
		case 'S':
			socket_path = optarg;
			sources++;
			break;
		case 'P':
			spool_dir = optarg;
			sources++;
			break;
		case 'h':
			ctl_usage(stdout);
			return CTL_OK;
		case 'V':
			printf("ferryctl %s\n", FERRY_VERSION);
			return CTL_OK;
		default: /* getopt said what was wrong */
			ctl_short_usage();
			return CTL_USAGE;
		}
	}
	if (sources > 1)
		return ctl_usage_error("%s", "use one of -c, --socket and --spool");
	if (optind >= argc)
		return ctl_usage_error("%s", "no command given");
	const char *name = argv[optind];
	size_t found = 0;
	while (found < CTL_NCOMMANDS && strcmp(name, ctl_command_names[found]) != 0)
		found++;
	if (found == CTL_NCOMMANDS)
		return ctl_usage_error("unknown command '%s' (try: " ADMIN_COMMANDS_HINT ")", name);
	enum ctl_command command = (enum ctl_command)found;
	int nargs = argc - optind - 1;
	char *arg = nargs > 0 ? argv[optind + 1] : NULL;
	static const char *const forms[] = {
		[CTL_QUEUE] = "queue",       [CTL_LIST] = "list DOMAIN",
		[CTL_SHOW] = "show QUEUEID", [CTL_FLUSH] = "flush [DOMAIN|@DOMAIN|#QUEUE]",
		[CTL_HOLD] = "hold DOMAIN",  [CTL_RELEASE] = "release DOMAIN",
	};
	int most = command == CTL_QUEUE ? 0 : 1;
	int least = command == CTL_QUEUE || command == CTL_FLUSH ? 0 : 1;
	if (nargs < least || nargs > most)
		return ctl_usage_error(most == 0    ? "'%s' takes no argument"
				       : least == 0 ? "%s: give at most one argument"
						    : "%s: give exactly one argument",
				       forms[command]);
	bool moves = command == CTL_FLUSH || command == CTL_HOLD || command == CTL_RELEASE;
	if (moves && spool_dir != NULL) {
		fprintf(stderr,
			"ferryctl: '%s' changes what a running ferryd does, and --spool only "
			"reads the spool: use -c CONFIG or --socket PATH\n",
			ctl_command_names[command]);
		return CTL_USAGE;
	}
	if (arg != NULL && !ctl_argument_ok(command, arg)) {
		char shown[CTL_QUOTED];
		snprintf(shown, sizeof(shown), "%s", arg);
		for (char *p = shown; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
				*p = '?';
		if (command == CTL_LIST)
			return ctl_usage_error("'%s' is not a domain", shown);
		if (command == CTL_SHOW)
			fprintf(stderr,
				"ferryctl: '%s' is not a queue id (%d letters and digits)\n", shown,
				QUEUE_ID_LEN);
		else if (shown[0] == '@' || shown[0] == '#')
			fprintf(stderr,
				"ferryctl: '%s' is not @DOMAIN (a domain and those below it) nor "
				"#QUEUE (a queue name: letters, digits, '-', '_', '.')\n",
				shown);
		else
			fprintf(stderr,
				"ferryctl: '%s' is not a domain name (letters, digits and hyphens "
				"in dot-separated labels) nor an address literal such as "
				"[192.0.2.1]\n",
				shown);
		return CTL_USAGE;
	}

	/* Recovery's own log lines: errors only (a torn tail is summed up
	 * below instead; while ferryd writes, it is normal). */
	log_setup(LOG_LEVEL_ERROR, LOG_TO_STDERR);
	struct buf answer = {0};
	int status;
	/* Segments the offline view had to leave out (corrupt, unreadable):
	 * the answer is printed, but ferryctl exits 1. */
	unsigned left_out = 0;
	if (spool_dir != NULL) {
		static const enum ferryctl_view views[] = {[CTL_QUEUE] = FERRYCTL_QUEUE,
							   [CTL_LIST] = FERRYCTL_LIST,
							   [CTL_SHOW] = FERRYCTL_SHOW};
		status = ferryctl_offline_answer(spool_dir, views[command], arg, &answer,
						 &left_out) == 0
				 ? CTL_OK
				 : CTL_ERROR;
	} else {
		char where[PATH_MAX + 64];
		if (socket_path == NULL) {
			static struct config cfg;
			if (config_open(&cfg, config_path, "ferryctl") != 0)
				return CTL_ERROR;
			snprintf(where, sizeof(where), "%s/%s", cfg.spool_dir, ADMIN_SOCKET_NAME);
			config_free(&cfg);
		} else {
			snprintf(where, sizeof(where), "%s", socket_path);
		}
		char request[ADMIN_REQUEST_MAX];
		snprintf(request, sizeof(request), "%s%s%s\n", ctl_command_names[command],
			 arg ? " " : "", arg ? arg : "");
		status = ctl_ask(where, request, &answer);
	}
	if (status != CTL_OK) {
		buf_release(&answer);
		return status;
	}

	/* One NUL past the end lets the last line be a string. */
	if (buf_append(&answer, "", 1) != 0) {
		fprintf(stderr, "ferryctl: out of memory\n");
		buf_release(&answer);
		return CTL_ERROR;
	}
	char *text = answer.data + answer.start;
	char *end = text + buf_len(&answer) - 1;
	char *cursor = text;
	char *first = ctl_next_line(&cursor, end);
	if (first == NULL) {
		fprintf(stderr, "ferryctl: ferryd closed the connection without an answer\n");
		status = CTL_ERROR;
	} else if (strncmp(first, "error: ", 7) == 0) {
		fprintf(stderr, "ferryctl: ");
		ctl_put_safe(first + 7, strlen(first + 7), stderr);
		fputc('\n', stderr);
		status = CTL_ERROR;
	} else if (strcmp(first, "ok") != 0) {
		fprintf(stderr, "ferryctl: unexpected answer: ");
		ctl_put_safe(first, strlen(first), stderr);
		fputc('\n', stderr);
		status = CTL_ERROR;
	} else {
		int64_t now = ctl_now_ms();
		if (spool_dir != NULL)
			printf("# offline view of %s, read from its segment files "
			       "(held and in-flight recipients show as ready)\n",
			       spool_dir);
		if (command == CTL_QUEUE)
			status = ctl_print_queue(cursor, end, now, stdout);
		else if (command == CTL_LIST)
			status = ctl_print_list(arg, cursor, end, now, stdout);
		else if (command == CTL_SHOW)
			status = ctl_print_show(cursor, end, now, stdout);
		else
			status = ctl_print_move(command, arg, cursor, end, stdout);
	}
	buf_release(&answer);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "ferryctl: writing the output: %s\n", strerror(errno));
		return CTL_ERROR;
	}
	if (status == CTL_OK && left_out > 0) {
		fprintf(stderr, "ferryctl: %u segment%s left out of this view (see above)\n",
			left_out, left_out == 1 ? " was" : "s were");
		status = CTL_ERROR;
	}
	return status;
}
