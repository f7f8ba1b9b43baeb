/*
 * ferryctl — the operator's tool.
 *
 *   ferryctl [-c CONFIG | --socket PATH | --spool DIR] queue | list DOMAIN | show QUEUEID
 *
 * Online (the default) it asks a running ferryd over <spool>/ferryctl.sock
 * (protocol: net/admin.h, docs/operations.md). Offline (--spool DIR) it
 * reads the spool's segment files itself, read-only (recover.h with
 * nothing cut or moved), so it works on a stopped ferryd's spool, on a
 * copy, and beside a running ferryd.
 *
 * Both ways produce the same text body (the admin protocol's), and one
 * formatter turns it into the tables an operator reads, so the two views
 * cannot drift apart.
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
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "net/admin.h"
#include "queue/queue.h"
#include "queue/record.h"
#include "queue/reader.h"
#include "queue/recover.h"
#include "queue/segment.h"

#define CTL_OK    0
#define CTL_ERROR 1
#define CTL_USAGE 2

#define CTL_TIMEOUT_S   20  /* each send and receive; ferryd waits 5 s for workers */
#define CTL_EXTENTS_MAX 64  /* body chunks read for the headers, at most */
#define CTL_QUOTED      600 /* log_quote()d addresses, as the store's */
#define CTL_MAX_FIELDS  8

enum ctl_command { CTL_QUEUE, CTL_LIST, CTL_SHOW };

static const char *const ctl_command_names[] = {"queue", "list", "show"};

static void ctl_usage(FILE *out)
{
	fprintf(out,
		"usage: ferryctl [-c CONFIG | --socket PATH | --spool DIR] COMMAND [ARG]\n"
		"commands:\n"
		"  queue           per destination: recipients queued, ready, deferred, held,\n"
		"                  in flight, and the age of the oldest\n"
		"  list DOMAIN     the queued recipients of DOMAIN: queue id, state, attempts,\n"
		"                  age, size, sender, recipient\n"
		"  show QUEUEID    a message's envelope and headers\n"
		"options:\n"
		"  -c, --config FILE  ferryd's configuration: talk to the ferryd of its spool\n"
		"                     (default: the built-in defaults, spool ./var/spool)\n"
		"      --socket PATH  talk to ferryd over this socket instead\n"
		"      --spool DIR    offline: read the spool DIR's segment files directly,\n"
		"                     read-only (with or without a running ferryd)\n"
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

/* Room for one more of n rows of `size` bytes in *rows (cap of them). */
static bool ctl_grow(void **rows, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return true;
	size_t more_cap = *cap ? *cap * 2 : 64;
	void *more = realloc(*rows, more_cap * size);
	if (more == NULL) {
		fprintf(stderr, "ferryctl: out of memory\n");
		return false;
	}
	*rows = more;
	*cap = more_cap;
	return true;
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
		if (!ctl_grow((void **)&rows, &cap, n, sizeof(*rows))) {
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
	unsigned long long attempts, size;
	long long arrival_ms;
};

static int ctl_recipient_cmp(const void *a, const void *b)
{
	const struct ctl_recipient *x = a, *y = b;
	if (x->arrival_ms != y->arrival_ms)
		return x->arrival_ms < y->arrival_ms ? -1 : 1;
	int c = strcmp(x->id, y->id);
	return c != 0 ? c : strcmp(x->address, y->address);
}

static int ctl_print_list(const char *domain, char *body, char *end, int64_t now_ms, FILE *out)
{
	static const char *const titles[7] = {"QUEUE-ID", "STATE",  "ATTEMPTS", "AGE",
					      "SIZE",     "SENDER", "RECIPIENT"};
	size_t n = 0, cap = 0;
	struct ctl_recipient *rows = NULL;
	char *cursor = body, *line;
	int status = CTL_OK;
	while ((line = ctl_next_line(&cursor, end)) != NULL) {
		if (*line == '\0')
			continue;
		char *f[CTL_MAX_FIELDS];
		char copy[2048];
		snprintf(copy, sizeof(copy), "%s", line);
		struct ctl_recipient r;
		if (ctl_split(line, f, 7) != 7 || !ctl_number(f[2], &r.attempts) ||
		    !ctl_signed(f[3], &r.arrival_ms) || !ctl_number(f[4], &r.size)) {
			ctl_bad_line(copy);
			status = CTL_ERROR;
			continue;
		}
		r.id = f[0];
		r.state = f[1];
		r.sender = f[5];
		r.address = f[6];
		if (!ctl_grow((void **)&rows, &cap, n, sizeof(*rows))) {
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
	int width[6];
	for (int k = 0; k < 6; k++)
		width[k] = (int)strlen(titles[k]);
	char age[32];
	for (size_t i = 0; i < n; i++) {
		width[0] = ctl_max(width[0], (int)strlen(rows[i].id));
		width[1] = ctl_max(width[1], (int)strlen(rows[i].state));
		width[2] = ctl_max(width[2], ctl_width(rows[i].attempts));
		width[3] =
			ctl_max(width[3],
				(int)strlen(ctl_age(age, sizeof(age), now_ms, rows[i].arrival_ms)));
		width[4] = ctl_max(width[4], ctl_width(rows[i].size));
		width[5] = ctl_max(width[5], (int)strlen(rows[i].sender));
	}
	fprintf(out, "%-*s  %-*s  %*s  %*s  %*s  %-*s  %s\n", width[0], titles[0], width[1],
		titles[1], width[2], titles[2], width[3], titles[3], width[4], titles[4], width[5],
		titles[5], titles[6]);
	/* Addresses arrive escaped (log_quote): printable ASCII only. */
	for (size_t i = 0; i < n; i++) {
		const struct ctl_recipient *r = &rows[i];
		fprintf(out, "%-*s  %-*s  %*llu  %*s  %*llu  %-*s  %s\n", width[0], r->id, width[1],
			r->state, width[2], r->attempts, width[3],
			ctl_age(age, sizeof(age), now_ms, r->arrival_ms), width[4], r->size,
			width[5], r->sender, r->address);
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

static int ctl_print_show(char *body, char *end, int64_t now_ms, FILE *out)
{
	char *cursor = body, *line;
	int status = CTL_OK;
	bool params = false, rcpts = false;
	char last_segment[SEGMENT_NAME_MAX + 1] = "";
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
			fprintf(out, "%s%s\n", rcpts ? "             " : "recipients:  ", value);
			rcpts = true;
		} else if (strcmp(line, "body") == 0) {
			char name[SEGMENT_NAME_MAX + 1];
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

/* ---- offline: read the segments ---------------------------------------------------- */

struct off_rcpt {
	char *address; /* as received */
	char *domain;  /* lower-cased */
	uint16_t len;
	bool deferred, finished;
	uint32_t attempts;
};

struct off_message {
	char id[QUEUE_ID_LEN + 1];
	uint32_t worker;
	int64_t arrival_ms;
	uint64_t size;
	char *sender, *client, *helo;
	uint16_t sender_len, client_len, helo_len;
	char **params;
	uint16_t *param_lens;
	uint32_t nparams, nrcpts;
	struct off_rcpt *rcpts;
	struct queue_extent *extents;
	uint32_t nextents;
	bool done;
	size_t order; /* read order: of two copies, the later is kept */
};

/* A state change: applied once every message is known (the record of a
 * change may be in another writer's segments, read before the message's). */
struct off_change {
	char id[RECORD_ID_LEN];
	enum record_type type;
	uint16_t recipient;
	uint32_t attempts;
};

struct off_spool {
	struct off_message **messages;
	size_t nmessages, messages_cap;
	struct off_change *changes;
	size_t nchanges, changes_cap;
	bool out_of_memory;
	unsigned torn, corrupt, unreadable;
};

static char *off_strdup(const char *s, size_t len)
{
	char *copy = malloc(len + 1);
	if (copy != NULL) {
		memcpy(copy, s, len);
		copy[len] = '\0';
	}
	return copy;
}

static void off_message_free(struct off_message *m)
{
	if (m == NULL)
		return;
	free(m->sender);
	free(m->client);
	free(m->helo);
	for (uint32_t i = 0; m->params != NULL && i < m->nparams; i++)
		free(m->params[i]);
	free(m->params);
	free(m->param_lens);
	for (uint32_t i = 0; m->rcpts != NULL && i < m->nrcpts; i++) {
		free(m->rcpts[i].address);
		free(m->rcpts[i].domain);
	}
	free(m->rcpts);
	free(m->extents);
	free(m);
}

/* The hook sees pointers into mappings that recovery unmaps later: copy. */
static int off_on_message(void *arg, const struct recover_message *rm)
{
	struct off_spool *sp = arg;
	const struct record_envelope *env = rm->envelope;
	struct off_message *m = calloc(1, sizeof(*m));
	if (m == NULL)
		goto fail;
	memcpy(m->id, env->id, RECORD_ID_LEN);
	m->worker = rm->worker;
	m->arrival_ms = env->arrival_ms;
	m->size = rm->body_len;
	m->sender = off_strdup(env->sender.data, env->sender.len);
	m->client = off_strdup(env->client.data, env->client.len);
	m->helo = off_strdup(env->helo.data, env->helo.len);
	m->sender_len = env->sender.len;
	m->client_len = env->client.len;
	m->helo_len = env->helo.len;
	m->nparams = env->nparams;
	m->nrcpts = env->nrecipients;
	m->params = calloc(env->nparams + 1u, sizeof(*m->params));
	m->param_lens = calloc(env->nparams + 1u, sizeof(*m->param_lens));
	m->rcpts = calloc(env->nrecipients + 1u, sizeof(*m->rcpts));
	m->extents = malloc((rm->nextents + 1u) * sizeof(*m->extents));
	if (m->sender == NULL || m->client == NULL || m->helo == NULL || m->params == NULL ||
	    m->param_lens == NULL || m->rcpts == NULL || m->extents == NULL)
		goto fail;
	for (uint32_t i = 0; i < m->nparams; i++) {
		m->params[i] = off_strdup(rm->strings[i].data, rm->strings[i].len);
		m->param_lens[i] = rm->strings[i].len;
		if (m->params[i] == NULL)
			goto fail;
	}
	for (uint32_t i = 0; i < m->nrcpts; i++) {
		const struct record_string *s = &rm->strings[m->nparams + i];
		struct off_rcpt *r = &m->rcpts[i];
		size_t at = s->len;
		while (at > 0 && s->data[at - 1] != '@')
			at--;
		/* As the store: the domain follows the last '@' (none: empty). */
		size_t domain_at = at > 0 ? at : s->len;
		r->address = off_strdup(s->data, s->len);
		r->domain = off_strdup(s->data + domain_at, s->len - domain_at);
		r->len = s->len;
		if (r->address == NULL || r->domain == NULL)
			goto fail;
		for (char *p = r->domain; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
	}
	memcpy(m->extents, rm->extents, rm->nextents * sizeof(*m->extents));
	m->nextents = rm->nextents;
	if (sp->nmessages == sp->messages_cap) {
		size_t cap = sp->messages_cap ? sp->messages_cap * 2 : 256;
		struct off_message **more = realloc(sp->messages, cap * sizeof(*more));
		if (more == NULL)
			goto fail;
		sp->messages = more;
		sp->messages_cap = cap;
	}
	m->order = sp->nmessages;
	sp->messages[sp->nmessages++] = m;
	return 0;
fail:
	off_message_free(m);
	sp->out_of_memory = true;
	return -ENOMEM;
}

static int off_add_change(struct off_spool *sp, const char *id, enum record_type type,
			  uint16_t recipient, uint32_t attempts)
{
	if (sp->nchanges == sp->changes_cap) {
		size_t cap = sp->changes_cap ? sp->changes_cap * 2 : 256;
		struct off_change *more = realloc(sp->changes, cap * sizeof(*more));
		if (more == NULL) {
			sp->out_of_memory = true;
			return -ENOMEM;
		}
		sp->changes = more;
		sp->changes_cap = cap;
	}
	struct off_change *c = &sp->changes[sp->nchanges++];
	memcpy(c->id, id, RECORD_ID_LEN);
	c->type = type;
	c->recipient = recipient;
	c->attempts = attempts;
	return 0;
}

static int off_on_rcpt_state(void *arg, enum record_type type, const struct record_rcpt_state *st,
			     uint32_t worker, uint64_t sequence)
{
	(void)worker;
	(void)sequence;
	return off_add_change(arg, st->id, type, st->recipient, st->attempts);
}

static int off_on_done(void *arg, const struct record_id *id, uint32_t worker, uint64_t sequence)
{
	(void)worker;
	(void)sequence;
	return off_add_change(arg, id->id, RECORD_MESSAGE_DONE, 0, 0);
}

static void off_on_segment(void *arg, const struct recover_segment *seg)
{
	struct off_spool *sp = arg;
	if (seg->verdict == RECOVER_TORN) {
		sp->torn++;
	} else if (seg->verdict == RECOVER_CORRUPT) {
		sp->corrupt++;
		fprintf(stderr,
			"ferryctl: warning: segment %s is corrupt after offset %llu; its messages "
			"are not shown\n",
			seg->name, (unsigned long long)seg->end);
	} else if (seg->verdict == RECOVER_UNREADABLE) {
		sp->unreadable++;
		fprintf(stderr, "ferryctl: warning: segment %s could not be read\n", seg->name);
	}
}

static int off_message_cmp(const void *a, const void *b)
{
	return strcmp((*(struct off_message *const *)a)->id, (*(struct off_message *const *)b)->id);
}

/* By id, then read order. */
static int off_message_order_cmp(const void *a, const void *b)
{
	const struct off_message *x = *(struct off_message *const *)a;
	const struct off_message *y = *(struct off_message *const *)b;
	int c = strcmp(x->id, y->id);
	return c != 0 ? c : (x->order > y->order) - (x->order < y->order);
}

/*
 * Compaction copies a message forward and deletes the old segment once
 * the copy is synced: between the two (or after a crash there) both
 * copies are on disk. They hold the same envelope and body; show the
 * later one, once. Outcomes apply by id to whichever is kept.
 */
static void off_drop_duplicates(struct off_spool *sp)
{
	size_t kept = 0;
	for (size_t i = 0; i < sp->nmessages; i++) {
		if (i + 1 < sp->nmessages &&
		    strcmp(sp->messages[i]->id, sp->messages[i + 1]->id) == 0) {
			off_message_free(sp->messages[i]);
			continue;
		}
		sp->messages[kept++] = sp->messages[i];
	}
	sp->nmessages = kept;
}

static struct off_message *off_find(struct off_spool *sp, const char *id)
{
	struct off_message key, *k = &key;
	snprintf(key.id, sizeof(key.id), "%s", id);
	struct off_message **found =
		bsearch(&k, sp->messages, sp->nmessages, sizeof(*sp->messages), off_message_cmp);
	return found != NULL ? *found : NULL;
}

static void off_apply_changes(struct off_spool *sp)
{
	for (size_t i = 0; i < sp->nchanges; i++) {
		const struct off_change *c = &sp->changes[i];
		char id[QUEUE_ID_LEN + 1];
		memcpy(id, c->id, RECORD_ID_LEN);
		id[QUEUE_ID_LEN] = '\0';
		struct off_message *m = off_find(sp, id);
		if (m == NULL)
			continue;
		if (c->type == RECORD_MESSAGE_DONE) {
			m->done = true;
		} else if (c->recipient < m->nrcpts) {
			/* As ferryd's recovery: an ended recipient stays ended,
			 * whatever record comes after (a compaction copy repeats
			 * outcomes). */
			struct off_rcpt *r = &m->rcpts[c->recipient];
			if (r->finished)
				continue;
			r->finished = c->type != RECORD_RCPT_DEFERRED;
			r->deferred = c->type == RECORD_RCPT_DEFERRED;
			if (c->attempts > r->attempts)
				r->attempts = c->attempts;
		}
	}
}

static void off_spool_free(struct off_spool *sp)
{
	for (size_t i = 0; i < sp->nmessages; i++)
		off_message_free(sp->messages[i]);
	free(sp->messages);
	free(sp->changes);
}

/* Read every segment of <dir>/segments. CTL_OK, or CTL_ERROR (said). */
static int off_read_spool(const char *dir, struct off_spool *sp, int *segments_fd)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/segments", dir);
	*segments_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*segments_fd < 0) {
		fprintf(stderr, "ferryctl: cannot open %s: %s%s\n", path, strerror(errno),
			errno == ENOENT ? " (is it a ferry spool?)" : "");
		return CTL_ERROR;
	}
	struct recover_hooks hooks = {
		.arg = sp,
		.message = off_on_message,
		.rcpt_state = off_on_rcpt_state,
		.message_done = off_on_done,
		.segment = off_on_segment,
	};
	struct recover_stats stats;
	/* Read-only: nothing is cut or quarantined; a running ferryd's spool
	 * is left exactly as it is. A segment it deleted under the scan makes
	 * the view stale (recover.h): read again. */
	int r;
	for (int attempt = 0;; attempt++) {
		r = recover_spool(*segments_fd, -1, true, &hooks, &stats);
		if (r != -ESTALE || attempt == 20)
			break;
		off_spool_free(sp);
		memset(sp, 0, sizeof(*sp));
		usleep(10000);
	}
	if (r != 0) {
		fprintf(stderr, "ferryctl: reading %s: %s\n", path,
			sp->out_of_memory ? "out of memory" : strerror(-r));
		return CTL_ERROR;
	}
	if (sp->torn > 0)
		fprintf(stderr,
			"ferryctl: note: %u segment%s end%s in an incomplete batch (ferryd is "
			"writing it, or it crashed): nothing there was acknowledged\n",
			sp->torn, sp->torn == 1 ? "" : "s", sp->torn == 1 ? "s" : "");
	if (sp->nmessages > 0)
		qsort(sp->messages, sp->nmessages, sizeof(*sp->messages), off_message_order_cmp);
	off_drop_duplicates(sp);
	off_apply_changes(sp);
	return CTL_OK;
}

struct off_entry {
	const char *domain;
	const struct off_message *message;
	const struct off_rcpt *rcpt;
};

static int off_entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct off_entry *)a)->domain, ((const struct off_entry *)b)->domain);
}

/* queue: the admin protocol's lines, one per destination. */
static int off_report_destinations(struct off_spool *sp, struct buf *out)
{
	size_t n = 0, cap = 0;
	for (size_t i = 0; i < sp->nmessages; i++)
		if (!sp->messages[i]->done)
			cap += sp->messages[i]->nrcpts;
	struct off_entry *all = malloc((cap + 1) * sizeof(*all));
	if (all == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < sp->nmessages; i++) {
		const struct off_message *m = sp->messages[i];
		for (uint32_t k = 0; !m->done && k < m->nrcpts; k++)
			if (!m->rcpts[k].finished)
				all[n++] = (struct off_entry){m->rcpts[k].domain, m, &m->rcpts[k]};
	}
	if (n > 0)
		qsort(all, n, sizeof(*all), off_entry_cmp);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		unsigned long long ready = 0, deferred = 0;
		long long oldest = 0;
		for (; j < n && strcmp(all[j].domain, all[i].domain) == 0; j++) {
			ready += !all[j].rcpt->deferred;
			deferred += all[j].rcpt->deferred;
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

static void off_report_domain(struct off_spool *sp, const char *domain, struct buf *out)
{
	char sender[CTL_QUOTED], rcpt[CTL_QUOTED];
	for (size_t i = 0; i < sp->nmessages; i++) {
		const struct off_message *m = sp->messages[i];
		for (uint32_t k = 0; !m->done && k < m->nrcpts; k++) {
			const struct off_rcpt *r = &m->rcpts[k];
			if (r->finished || strcmp(r->domain, domain) != 0)
				continue;
			if (m->sender_len == 0)
				snprintf(sender, sizeof(sender), "<>");
			else
				log_quote(sender, sizeof(sender), m->sender, m->sender_len);
			log_quote(rcpt, sizeof(rcpt), r->address, r->len);
			buf_printf(out, "%s %s %u %lld %llu %s %s\n", m->id,
				   r->deferred ? "deferred" : "ready", r->attempts,
				   (long long)m->arrival_ms, (unsigned long long)m->size, sender,
				   rcpt);
		}
	}
}

/* The header section of m, from its body extents in segments_fd.
 * Returns 0, or -errno with why set. */
static int off_read_headers(int segments_fd, const struct off_message *m, struct buf *out,
			    char *why, size_t why_size)
{
	uint32_t n = m->nextents < CTL_EXTENTS_MAX ? m->nextents : CTL_EXTENTS_MAX;
	struct reader_extent extents[CTL_EXTENTS_MAX];
	char names[CTL_EXTENTS_MAX][SEGMENT_NAME_MAX];
	for (uint32_t i = 0; i < n; i++) {
		segment_name(names[i], m->worker, m->extents[i].sequence);
		extents[i] =
			(struct reader_extent){names[i], m->extents[i].offset, m->extents[i].len};
	}
	return reader_headers(segments_fd, extents, n, ADMIN_HEADERS_MAX, out, why, why_size);
}

/* show: the admin protocol's answer body for one message; 0 if not found. */
static int off_report_message(struct off_spool *sp, int segments_fd, const char *id,
			      struct buf *out)
{
	const struct off_message *m = off_find(sp, id);
	if (m == NULL || m->done)
		return 0;
	char quoted[CTL_QUOTED];
	buf_printf(out, "id %s\narrival %lld\nsize %llu\n", m->id, (long long)m->arrival_ms,
		   (unsigned long long)m->size);
	buf_printf(out, "client %s\n", log_quote(quoted, sizeof(quoted), m->client, m->client_len));
	buf_printf(out, "helo %s\n", log_quote(quoted, sizeof(quoted), m->helo, m->helo_len));
	buf_printf(out, "sender %s\n",
		   m->sender_len ? log_quote(quoted, sizeof(quoted), m->sender, m->sender_len)
				 : "<>");
	for (uint32_t i = 0; i < m->nparams; i++)
		buf_printf(out, "param %s\n",
			   log_quote(quoted, sizeof(quoted), m->params[i], m->param_lens[i]));
	for (uint32_t i = 0; i < m->nrcpts; i++) /* every one, as ferryd answers */
		buf_printf(out, "rcpt %s\n",
			   log_quote(quoted, sizeof(quoted), m->rcpts[i].address, m->rcpts[i].len));
	for (uint32_t i = 0; i < m->nextents; i++) {
		char name[SEGMENT_NAME_MAX];
		segment_name(name, m->worker, m->extents[i].sequence);
		buf_printf(out, "body %s %llu %u\n", name, (unsigned long long)m->extents[i].offset,
			   m->extents[i].len);
	}
	struct buf headers = {0};
	char why[256];
	if (off_read_headers(segments_fd, m, &headers, why, sizeof(why)) != 0)
		buf_printf(out, "headers-error %s\n", why);
	buf_printf(out, "\n");
	buf_append(out, buf_head(&headers), buf_len(&headers));
	buf_release(&headers);
	return 1;
}

/* Segments the offline view had to leave out (corrupt, unreadable): the
 * answer is printed, but ferryctl exits 1. */
static unsigned off_left_out;

/* The same answer ferryd would give ("ok\n..." or "error: ...\n"). */
static int off_answer(const char *dir, enum ctl_command command, const char *arg,
		      struct buf *answer)
{
	struct off_spool sp = {0};
	int segments_fd = -1;
	int status = off_read_spool(dir, &sp, &segments_fd);
	off_left_out = sp.corrupt + sp.unreadable;
	if (status == CTL_OK) {
		struct buf body = {0};
		int found = 1;
		if (command == CTL_QUEUE)
			found = off_report_destinations(&sp, &body) == 0 ? 1 : -1;
		else if (command == CTL_LIST)
			off_report_domain(&sp, arg, &body);
		else
			found = off_report_message(&sp, segments_fd, arg, &body);
		if (found > 0) {
			buf_printf(answer, "ok\n");
			buf_append(answer, buf_head(&body), buf_len(&body));
		} else if (found == 0) {
			buf_printf(answer, "error: no message %s in the queue\n", arg);
		} else {
			buf_printf(answer, "error: out of memory\n");
		}
		buf_release(&body);
	}
	if (segments_fd >= 0)
		close(segments_fd);
	off_spool_free(&sp);
	return status;
}

/* ---- main ----------------------------------------------------------------------- */

/* Check the command's argument as ferryd does, then normalise its case. */
static bool ctl_argument_ok(enum ctl_command command, char *arg)
{
	size_t len = strlen(arg);
	bool domain = command == CTL_LIST;
	if (domain ? !admin_domain_ok(arg, len) : !admin_queue_id_ok(arg, len))
		return false;
	/* Domains are kept lower-cased; queue ids are upper-case base32. */
	for (char *p = arg; *p != '\0'; p++)
		*p = (char)(domain ? tolower((unsigned char)*p) : toupper((unsigned char)*p));
	return true;
}

static void ctl_short_usage(void)
{
	fprintf(stderr, "usage: ferryctl [-c CONFIG | --socket PATH | --spool DIR] "
			"queue | list DOMAIN | show QUEUEID (--help: more)\n");
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
	enum ctl_command command;
	if (strcmp(name, "queue") == 0)
		command = CTL_QUEUE;
	else if (strcmp(name, "list") == 0)
		command = CTL_LIST;
	else if (strcmp(name, "show") == 0)
		command = CTL_SHOW;
	else
		return ctl_usage_error(
			"unknown command '%s' (try: queue, list DOMAIN, show QUEUEID)", name);
	int nargs = argc - optind - 1;
	char *arg = nargs > 0 ? argv[optind + 1] : NULL;
	if (command == CTL_QUEUE && nargs != 0)
		return ctl_usage_error("%s", "'queue' takes no argument");
	if (command != CTL_QUEUE && nargs != 1)
		return ctl_usage_error(command == CTL_LIST ? "%s: list DOMAIN" : "%s: show QUEUEID",
				       "give exactly one argument");
	if (arg != NULL && !ctl_argument_ok(command, arg)) {
		char shown[CTL_QUOTED];
		snprintf(shown, sizeof(shown), "%s", arg);
		for (char *p = shown; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
				*p = '?';
		if (command == CTL_LIST)
			return ctl_usage_error("'%s' is not a domain", shown);
		fprintf(stderr, "ferryctl: '%s' is not a queue id (%d letters and digits)\n", shown,
			QUEUE_ID_LEN);
		return CTL_USAGE;
	}

	/* Recovery's own log lines: errors only (a torn tail is summed up
	 * below instead; while ferryd writes, it is normal). */
	log_setup(LOG_LEVEL_ERROR, LOG_TO_STDERR);
	struct buf answer = {0};
	int status;
	if (spool_dir != NULL) {
		status = off_answer(spool_dir, command, arg, &answer);
	} else {
		char where[PATH_MAX + 64];
		if (socket_path == NULL) {
			static struct config cfg;
			char err[1024];
			config_defaults(&cfg);
			if (config_load(&cfg, config_path, err, sizeof(err)) != 0) {
				fprintf(stderr, "ferryctl: config: %s\n", err);
				config_free(&cfg);
				return CTL_ERROR;
			}
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
		else
			status = ctl_print_show(cursor, end, now, stdout);
	}
	buf_release(&answer);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "ferryctl: writing the output: %s\n", strerror(errno));
		return CTL_ERROR;
	}
	if (status == CTL_OK && off_left_out > 0) {
		fprintf(stderr, "ferryctl: %u segment%s left out of this view (see above)\n",
			off_left_out, off_left_out == 1 ? " was" : "s were");
		status = CTL_ERROR;
	}
	return status;
}
