#include "tools/ferry_etrn_conn.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The results are known when QUIT is sent: a server that never answers
 * it must not keep a hook waiting for long. */
#define ETRN_CONN_QUIT_TIMEOUT_MS 5000

int64_t etrn_conn_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Text a server sent, made safe for a terminal or a log: only printable
 * ASCII is shown as is, the rest as \xNN (escape sequences!). */
const char *etrn_conn_safe(const char *s, size_t len, char *out, size_t size)
{
	size_t at = 0;
	for (size_t i = 0; i < len && at + 5 < size; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch < 0x7f)
			out[at++] = (char)ch;
		else
			at += (size_t)snprintf(out + at, size - at, "\\x%02x", ch);
	}
	out[at] = '\0';
	return out;
}

/* "253 2.0.0 OK, 3 pending messages for node x started", made safe. */
const char *etrn_conn_reply_text(const struct smtp_reply *r, char *out, size_t size)
{
	char joined[SMTP_CLIENT_TEXT_MAX + 32];
	int n = snprintf(joined, sizeof(joined), "%d%s%s%s%s", r->code, r->status[0] ? " " : "",
			 r->status, r->text[0] ? " " : "", r->text);
	size_t len = n < 0 ? 0 : (size_t)n < sizeof(joined) ? (size_t)n : sizeof(joined) - 1;
	return etrn_conn_safe(joined, len, out, size);
}

void etrn_conn_verbose(bool verbose, const char *fmt, ...)
{
	if (!verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ferry-etrn: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- one connection ------------------------------------------------------------ */

/* The deadline of a step that may take step_ms, within the run's; and
 * words for it when it passes. */
static int64_t etrn_conn_step_deadline(const struct etrn_conn *c, int64_t step_ms)
{
	int64_t step = etrn_conn_now_ms() + step_ms;
	return step < c->set->deadline ? step : c->set->deadline;
}

static void etrn_conn_say_timeout(struct etrn_conn *c, int64_t deadline, int64_t step_ms,
				  const char *what)
{
	if (deadline >= c->set->deadline)
		snprintf(c->error, sizeof(c->error), "%s: gave up, the run's time limit passed",
			 what);
	else
		snprintf(c->error, sizeof(c->error), "%s: no answer within %.1f s", what,
			 (double)step_ms / 1000);
}

/* Wait for events on the socket until deadline: 1 ready, 0 timed out. */
static int etrn_conn_wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - etrn_conn_now_ms();
		if (left <= 0)
			return 0;
		struct pollfd pfd = {.fd = fd, .events = events};
		int r = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* Connect to one address, non-blocking, within the connect timeout.
 * Returns the socket, or -1 with why in `why`. */
static int etrn_conn_connect_one(struct etrn_conn *c, const struct addrinfo *ai, char *why,
				 size_t why_size)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
	if (fd < 0) {
		snprintf(why, why_size, "%s", strerror(errno));
		return -1;
	}
	int64_t deadline = etrn_conn_step_deadline(c, c->set->connect_timeout_ms);
	int err = 0;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		err = errno;
		if (err == EINPROGRESS) {
			int w = etrn_conn_wait_fd(fd, POLLOUT, deadline);
			socklen_t len = sizeof(err);
			if (w == 0)
				err = ETIMEDOUT;
			else if (w < 0)
				err = -w;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
				err = errno;
		}
	}
	if (err == 0)
		return fd;
	if (err == ETIMEDOUT && deadline >= c->set->deadline)
		snprintf(why, why_size, "gave up, the run's time limit passed");
	else if (err == ETIMEDOUT)
		snprintf(why, why_size, "no answer within %.1f s",
			 (double)c->set->connect_timeout_ms / 1000);
	else
		snprintf(why, why_size, "%s", strerror(err));
	close(fd);
	return -1;
}

/* Try each of the server's addresses in turn. 0, or -1 (c->error). */
static int etrn_conn_connect(struct etrn_conn *c)
{
	const struct etrn_conn_settings *set = c->set;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *list;
	int rc = getaddrinfo(set->host, set->port, &hints, &list);
	if (rc != 0) {
		snprintf(c->error, sizeof(c->error), "cannot find the server's address: %s",
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return -1;
	}
	/* What each address said, e.g. "192.0.2.7: Connection refused; ...";
	 * an address that is the host as given is not repeated. */
	char tried[768] = "";
	size_t used = 0;
	for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
		char address[NI_MAXHOST] = "?", why[256];
		getnameinfo(ai->ai_addr, ai->ai_addrlen, address, sizeof(address), NULL, 0,
			    NI_NUMERICHOST);
		etrn_conn_verbose(set->verbose, "connecting to %s port %s", address, set->port);
		c->fd = etrn_conn_connect_one(c, ai, why, sizeof(why));
		if (c->fd >= 0)
			break;
		etrn_conn_verbose(set->verbose, "%s: %s", address, why);
		bool same = strcmp(address, set->host) == 0;
		int k = snprintf(tried + used, sizeof(tried) - used, "%s%s%s%s", used ? "; " : "",
				 same ? "" : address, same ? "" : ": ", why);
		if (k > 0)
			used = used + (size_t)k < sizeof(tried) ? used + (size_t)k
								: sizeof(tried) - 1;
		if (etrn_conn_now_ms() >= c->set->deadline)
			break;
	}
	if (c->fd < 0)
		snprintf(c->error, sizeof(c->error), "cannot connect: %s", tried);
	freeaddrinfo(list);
	return c->fd >= 0 ? 0 : -1;
}

static void etrn_conn_ehlo_line(void *arg, int code, unsigned index, const char *text, size_t len)
{
	struct etrn_conn *c = arg;
	/* The first line greets; the keywords follow, one per line. */
	if (code == 250 && index > 0 && len >= 4 && strncasecmp(text, "ETRN", 4) == 0 &&
	    (len == 4 || text[4] == ' '))
		c->etrn_offered = true;
}

/* Read one whole reply. 0 with *r, or -1 (c->error says why). */
static int etrn_conn_read_reply(struct etrn_conn *c, struct smtp_reply *r, int64_t step_ms,
				const char *what)
{
	int64_t deadline = etrn_conn_step_deadline(c, step_ms);
	for (;;) {
		char *lf = memchr(c->in, '\n', c->in_len);
		if (lf != NULL) {
			size_t len = (size_t)(lf - c->in) + 1, used = 0;
			if (c->set->verbose) {
				char shown[ETRN_CONN_SHOWN_MAX];
				size_t text = len - 1 - (len >= 2 && lf[-1] == '\r');
				fprintf(stderr, "<<< %s\n",
					etrn_conn_safe(c->in, text, shown, sizeof(shown)));
			}
			int rc = smtp_reply_parse(&c->parser, c->in, len, &used, r);
			memmove(c->in, c->in + len, c->in_len - len);
			c->in_len -= len;
			if (rc < 0) {
				snprintf(c->error, sizeof(c->error), "%s: %s", what,
					 c->parser.error);
				return -1;
			}
			if (rc == 1)
				return 0;
			continue;
		}
		if (c->in_len >= sizeof(c->in) - 1) {
			snprintf(c->error, sizeof(c->error),
				 "%s: the server sent a reply line too long", what);
			return -1;
		}
		int w = etrn_conn_wait_fd(c->fd, POLLIN, deadline);
		if (w == 0) {
			etrn_conn_say_timeout(c, deadline, step_ms, what);
			return -1;
		}
		ssize_t got = 0;
		int err = -w;
		if (w > 0) {
			got = recv(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len, 0);
			err = got < 0 ? errno : 0;
		}
		if (got > 0) {
			c->in_len += (size_t)got;
			continue;
		}
		if (err == EINTR || err == EAGAIN)
			continue;
		snprintf(c->error, sizeof(c->error), "%s: %s", what,
			 err == 0 ? "the server closed the connection" : strerror(err));
		return -1;
	}
}

/* Send `line` and CRLF. 0, or -1 (c->error). */
static int etrn_conn_send(struct etrn_conn *c, const char *verb, const char *arg)
{
	char line[SMTP_CLIENT_LINE_MAX];
	int n = snprintf(line, sizeof(line), "%s%s%s\r\n", verb, arg ? " " : "", arg ? arg : "");
	if (c->set->verbose)
		fprintf(stderr, ">>> %.*s\n", n - 2, line);
	int64_t deadline = etrn_conn_step_deadline(c, c->set->reply_timeout_ms);
	for (size_t done = 0; done < (size_t)n;) {
		ssize_t k = send(c->fd, line + done, (size_t)n - done, MSG_NOSIGNAL);
		if (k > 0) {
			done += (size_t)k;
			continue;
		}
		int err = k < 0 ? errno : EPIPE;
		if (err == EINTR)
			continue;
		int w = err == EAGAIN ? etrn_conn_wait_fd(c->fd, POLLOUT, deadline) : -err;
		if (w > 0)
			continue;
		if (w == 0)
			etrn_conn_say_timeout(c, deadline, c->set->reply_timeout_ms, verb);
		else
			snprintf(c->error, sizeof(c->error), "sending %s: %s", verb, strerror(-w));
		return -1;
	}
	return 0;
}

/* Send a command and read its reply. 0 with *r, or -1 (c->error). */
int etrn_conn_command(struct etrn_conn *c, const char *verb, const char *arg, struct smtp_reply *r)
{
	if (etrn_conn_send(c, verb, arg) != 0)
		return -1;
	return etrn_conn_read_reply(c, r, c->set->reply_timeout_ms, verb);
}

/* The reply ends the conversation: say so with the reply. Returns -1. */
static int etrn_conn_refused(struct etrn_conn *c, const char *what, const struct smtp_reply *r)
{
	char shown[ETRN_CONN_SHOWN_MAX];
	snprintf(c->error, sizeof(c->error), "%s: %s (%s)", what,
		 r->code == 421 ? "the server is closing the connection" : "the server refused",
		 etrn_conn_reply_text(r, shown, sizeof(shown)));
	return -1;
}

/* Connect, read the greeting, introduce ourselves. 0, or -1 (c->error). */
int etrn_conn_open(struct etrn_conn *c, const struct etrn_conn_settings *set)
{
	memset(c, 0, sizeof(*c));
	c->set = set;
	c->fd = -1;
	smtp_reply_parser_init(&c->parser);
	struct smtp_reply r;
	if (etrn_conn_connect(c) != 0)
		return -1;
	if (etrn_conn_read_reply(c, &r, c->set->reply_timeout_ms, "greeting") != 0)
		return -1;
	if (r.code != 220)
		return etrn_conn_refused(c, "greeting", &r);
	c->parser.on_line = etrn_conn_ehlo_line;
	c->parser.on_line_arg = c;
	int rc = etrn_conn_command(c, "EHLO", c->set->helo, &r);
	c->parser.on_line = NULL;
	if (rc != 0)
		return -1;
	if (r.code >= 500 && r.code < 600) {
		/* An old server: no extensions, so ETRN is not listed either. */
		if (etrn_conn_command(c, "HELO", c->set->helo, &r) != 0)
			return -1;
		if (r.code != 250)
			return etrn_conn_refused(c, "HELO", &r);
	} else if (r.code != 250) {
		return etrn_conn_refused(c, "EHLO", &r);
	}
	if (!c->etrn_offered)
		etrn_conn_verbose(c->set->verbose,
				  "the server does not list ETRN among its extensions; "
				  "asking anyway");
	return 0;
}

void etrn_conn_close(struct etrn_conn *c, bool quit)
{
	if (c->fd < 0)
		return;
	if (quit && etrn_conn_send(c, "QUIT", NULL) == 0) {
		struct smtp_reply r;
		etrn_conn_read_reply(c, &r, ETRN_CONN_QUIT_TIMEOUT_MS, "QUIT");
	}
	close(c->fd);
	c->fd = -1;
}
