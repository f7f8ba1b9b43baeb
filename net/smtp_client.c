#include "net/smtp_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/check.h"

/* ---- reply parser ------------------------------------------------------- */

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
}

static bool smtp_reply_is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* 1..max digits at t[*at]: advances *at past them. */
static bool smtp_reply_skip_digits(const char *t, size_t n, size_t *at, size_t max)
{
	size_t start = *at;
	while (*at < n && *at - start < max && smtp_reply_is_digit(t[*at]))
		(*at)++;
	return *at > start && (*at == n || !smtp_reply_is_digit(t[*at]));
}

/* Length of an RFC 3463 status ("5.1.1") opening t, or 0 when there is none. */
static size_t smtp_reply_status_len(const char *t, size_t n)
{
	if (n < 5 || (t[0] != '2' && t[0] != '4' && t[0] != '5') || t[1] != '.')
		return 0;
	size_t at = 2;
	if (!smtp_reply_skip_digits(t, n, &at, 3) || at >= n || t[at] != '.')
		return 0;
	at++;
	if (!smtp_reply_skip_digits(t, n, &at, 3))
		return 0;
	return at == n || t[at] == ' ' ? at : 0;
}

/* Drop the status, and the spaces after it, from the line's text. */
static void smtp_reply_strip_status(const char **t, size_t *n, size_t status_len)
{
	*t += status_len;
	*n -= status_len;
	while (*n > 0 && **t == ' ') {
		(*t)++;
		(*n)--;
	}
}

static void smtp_reply_take_status(struct smtp_reply *r, unsigned index, const char **t, size_t *n)
{
	size_t status_len = smtp_reply_status_len(*t, *n);
	if (status_len == 0)
		return;
	if (index == 0) {
		memcpy(r->status, *t, status_len);
		r->status[status_len] = '\0';
	} else if (strlen(r->status) != status_len || memcmp(r->status, *t, status_len) != 0) {
		/* A continuation naming another status is text, not ours to drop. */
		return;
	}
	smtp_reply_strip_status(t, n, status_len);
}

/* Append to the joined text, cut to fit; control octets would garble a log
 * line or a bounce, so they become '?'. */
static void smtp_reply_append_text(struct smtp_reply *r, unsigned index, const char *t, size_t n)
{
	size_t len = strlen(r->text);
	if (index > 0 && len < sizeof(r->text) - 1)
		r->text[len++] = ' ';
	for (size_t i = 0; i < n && len < sizeof(r->text) - 1; i++) {
		unsigned char ch = (unsigned char)t[i];
		r->text[len++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	r->text[len] = '\0';
}

static int smtp_reply_error(struct smtp_reply_parser *p, const char *what)
{
	p->error = what;
	return -EPROTO;
}

/* One complete line (its LF removed): 1 when it ended the reply. */
static int smtp_reply_line(struct smtp_reply_parser *p)
{
	const char *line = p->line;
	size_t n = p->line_len;
	if (n > 0 && line[n - 1] == '\r')
		n--;
	if (n < 3 || line[0] < '2' || line[0] > '5' || !smtp_reply_is_digit(line[1]) ||
	    !smtp_reply_is_digit(line[2]))
		return smtp_reply_error(p,
					"the server's reply does not start with a code 200..599");
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	bool last = n == 3 || line[3] == ' ';
	if (n > 3 && line[3] != ' ' && line[3] != '-')
		return smtp_reply_error(
			p, "the server's reply code is not followed by a space or '-'");
	if (p->in_reply && code != p->reply.code)
		return smtp_reply_error(
			p, "the server's reply code changed within a multi-line reply");
	if (!p->in_reply) {
		memset(&p->reply, 0, sizeof(p->reply));
		p->reply.code = code;
		p->lines = 0;
	}
	const char *text = n > 3 ? line + 4 : line + 3;
	size_t text_len = n > 3 ? n - 4 : 0;
	unsigned index = p->lines++;
	if (p->on_line != NULL)
		p->on_line(p->on_line_arg, code, index, text, text_len);
	smtp_reply_take_status(&p->reply, index, &text, &text_len);
	smtp_reply_append_text(&p->reply, index, text, text_len);
	p->in_reply = !last;
	return last ? 1 : 0;
}

int smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len, size_t *consumed,
		     struct smtp_reply *out)
{
	size_t at = 0;
	while (at < len) {
		const char *lf = memchr(data + at, '\n', len - at);
		size_t take = lf != NULL ? (size_t)(lf - (data + at)) : len - at;
		/* The LF counts against the limit too: the line ends within it. */
		if (take > sizeof(p->line) - 1 - p->line_len) {
			*consumed = at;
			return smtp_reply_error(p, "the server sent a reply line too long");
		}
		memcpy(p->line + p->line_len, data + at, take);
		p->line_len += take;
		at += take;
		if (lf == NULL)
			break;
		at++;
		int rc = smtp_reply_line(p);
		p->line_len = 0;
		if (rc != 0) {
			*consumed = at;
			if (rc == 1)
				*out = p->reply;
			return rc;
		}
	}
	*consumed = at;
	return 0;
}

/* ---- client ------------------------------------------------------------- */

enum smtp_client_state {
	SMTP_CLIENT_GREETING,     /* waiting for 220 */
	SMTP_CLIENT_EHLO,         /* waiting for EHLO's reply */
	SMTP_CLIENT_HELO,         /* waiting for HELO's reply */
	SMTP_CLIENT_READY,        /* nothing asked */
	SMTP_CLIENT_MAIL,         /* waiting for MAIL's reply */
	SMTP_CLIENT_RCPT,         /* waiting for RCPT replies */
	SMTP_CLIENT_DATA,         /* waiting for DATA's reply */
	SMTP_CLIENT_BODY,         /* the caller streams the body */
	SMTP_CLIENT_DOT,          /* waiting for the reply after the dot */
	SMTP_CLIENT_DOT_EMPTY,    /* waiting for the reply to a dot no one wanted */
	SMTP_CLIENT_MESSAGE_DONE, /* message() told: the caller resets or quits */
	SMTP_CLIENT_RSET,         /* waiting for RSET's reply */
	SMTP_CLIENT_QUIT,         /* waiting for QUIT's reply */
	SMTP_CLIENT_STOPPED,      /* failed() or closed() told */
};

static bool smtp_client_positive(const struct smtp_reply *r)
{
	return r->code >= 200 && r->code < 300;
}

static void smtp_client_fail(struct smtp_client *c, const struct smtp_reply *r)
{
	/* The caller may reuse the storage r points into once told. */
	struct smtp_reply copy = *r;
	c->state = SMTP_CLIENT_STOPPED;
	c->events->failed(c, &copy);
}

static void smtp_client_fail_text(struct smtp_client *c, const char *text)
{
	struct smtp_reply r = {0};
	snprintf(r.text, sizeof(r.text), "%s", text);
	smtp_client_fail(c, &r);
}

/* Append a command. Every caller has set the state it waits in first, so
 * that a failure here leaves the client stopped, not waiting. */
static bool smtp_client_put(struct smtp_client *c, const char *data, size_t len)
{
	if (c->state == SMTP_CLIENT_STOPPED)
		return false;
	if (buf_append(c->out, data, len) == 0)
		return true;
	smtp_client_fail_text(c, "out of memory for the commands to the server");
	return false;
}

#define SMTP_CLIENT_PUT(c, lit) smtp_client_put((c), (lit), sizeof(lit) - 1)

/* The server refused but is still listening: say goodbye, then give up. */
static void smtp_client_give_up(struct smtp_client *c, const struct smtp_reply *r)
{
	if (r->code != 421)
		SMTP_CLIENT_PUT(c, "QUIT\r\n");
	smtp_client_fail(c, r);
}

static void smtp_client_ready(struct smtp_client *c)
{
	c->state = SMTP_CLIENT_READY;
	c->events->ready(c);
}

static void smtp_client_unexpected(struct smtp_client *c, const struct smtp_reply *r)
{
	if (r->code == 421) {
		smtp_client_fail(c, r);
		return;
	}
	char text[SMTP_CLIENT_TEXT_MAX];
	snprintf(text, sizeof(text), "protocol error: the server sent a reply to no command: %d %s",
		 r->code, r->text);
	smtp_client_fail_text(c, text);
}

/* ---- greeting, EHLO, HELO ----------------------------------------------- */

static bool smtp_client_keyword_is(const char *text, size_t len, const char *keyword)
{
	size_t n = strlen(keyword);
	return len >= n && strncasecmp(text, keyword, n) == 0 && (len == n || text[n] == ' ');
}

static uint64_t smtp_client_size_limit(const char *arg, size_t len)
{
	uint64_t limit = 0;
	size_t i = 0;
	while (i < len && arg[i] == ' ')
		i++;
	for (; i < len && arg[i] >= '0' && arg[i] <= '9'; i++) {
		unsigned digit = (unsigned)(arg[i] - '0');
		if (limit > (UINT64_MAX - digit) / 10)
			return 0; /* past any size we could send: as good as none */
		limit = limit * 10 + digit;
	}
	return limit;
}

/* Parser hook: EHLO's keywords, one per line after the server's name. */
static void smtp_client_ehlo_line(void *arg, int code, unsigned index, const char *text, size_t len)
{
	struct smtp_client *c = arg;
	if (c->state != SMTP_CLIENT_EHLO || code != 250 || index == 0)
		return;
	struct smtp_client_extensions *ext = &c->ext;
	if (smtp_client_keyword_is(text, len, "PIPELINING")) {
		ext->pipelining = true;
	} else if (smtp_client_keyword_is(text, len, "SIZE")) {
		ext->size = true;
		ext->max_size = smtp_client_size_limit(text + 4, len - 4);
	} else if (smtp_client_keyword_is(text, len, "8BITMIME")) {
		ext->eightbitmime = true;
	} else if (smtp_client_keyword_is(text, len, "SMTPUTF8")) {
		ext->smtputf8 = true;
	} else if (smtp_client_keyword_is(text, len, "STARTTLS")) {
		ext->starttls = true;
	} else if (smtp_client_keyword_is(text, len, "ENHANCEDSTATUSCODES")) {
		ext->enhanced_status = true;
	}
}

static void smtp_client_hello(struct smtp_client *c, enum smtp_client_state state, const char *verb)
{
	memset(&c->ext, 0, sizeof(c->ext));
	c->state = state;
	if (buf_printf(c->out, "%s %s\r\n", verb, c->helo_name) != 0)
		smtp_client_fail_text(c, "out of memory for the commands to the server");
}

static void smtp_client_on_greeting(struct smtp_client *c, const struct smtp_reply *r)
{
	if (r->code == 220)
		smtp_client_hello(c, SMTP_CLIENT_EHLO, "EHLO");
	else
		smtp_client_give_up(c, r);
}

static void smtp_client_on_ehlo(struct smtp_client *c, const struct smtp_reply *r)
{
	if (smtp_client_positive(r)) {
		c->ext.esmtp = true;
		smtp_client_ready(c);
	} else if (r->code >= 500) {
		/* RFC 5321 3.2: a server that does not know EHLO still knows HELO. */
		smtp_client_hello(c, SMTP_CLIENT_HELO, "HELO");
	} else {
		smtp_client_give_up(c, r);
	}
}

static void smtp_client_on_helo(struct smtp_client *c, const struct smtp_reply *r)
{
	if (smtp_client_positive(r))
		smtp_client_ready(c);
	else
		smtp_client_give_up(c, r);
}

/* ---- transaction -------------------------------------------------------- */

static bool smtp_client_put_rcpt(struct smtp_client *c, unsigned i)
{
	const struct smtp_client_message *m = c->msg;
	return SMTP_CLIENT_PUT(c, "RCPT TO:<") &&
	       smtp_client_put(c, m->rcpts[i], m->rcpt_lens[i]) && SMTP_CLIENT_PUT(c, ">\r\n");
}

static void smtp_client_message_done(struct smtp_client *c, unsigned accepted,
				     const struct smtp_reply *r)
{
	/* message() may reset right away, and ready() then send the next
	 * message: nothing of this one is touched after the event. */
	struct smtp_reply copy = *r;
	c->state = SMTP_CLIENT_MESSAGE_DONE;
	c->msg = NULL;
	c->events->message(c, accepted, &copy);
}

/* Nothing to send after DATA: no recipient, or MAIL refused. */
static bool smtp_client_nobody(const struct smtp_client *c)
{
	return c->mail_refused || c->accepted == 0;
}

static void smtp_client_on_mail(struct smtp_client *c, const struct smtp_reply *r)
{
	c->replies_due--;
	if (!smtp_client_positive(r)) {
		c->mail_refused = true;
		c->held_reply = *r;
		if (!c->ext.pipelining) {
			smtp_client_message_done(c, 0, r);
			return;
		}
		/* RFC 2920: the RCPT and DATA replies still come; read them. */
		c->state = SMTP_CLIENT_RCPT;
		return;
	}
	c->state = SMTP_CLIENT_RCPT;
	if (!c->ext.pipelining) {
		c->replies_due++;
		c->next_rcpt = 1;
		smtp_client_put_rcpt(c, 0);
	}
}

static void smtp_client_on_rcpt(struct smtp_client *c, const struct smtp_reply *r)
{
	unsigned i = c->rcpt_replies++;
	bool last = c->rcpt_replies == c->msg->nrcpts;
	c->replies_due--;
	if (c->mail_refused) {
		if (last)
			c->state = SMTP_CLIENT_DATA;
		return;
	}
	if (smtp_client_positive(r))
		c->accepted++;
	c->held_reply = *r;
	if (last)
		c->state = SMTP_CLIENT_DATA;
	if (!c->ext.pipelining) {
		if (!last) {
			c->replies_due++;
			smtp_client_put_rcpt(c, c->next_rcpt++);
		} else if (c->accepted > 0) {
			c->replies_due++;
			SMTP_CLIENT_PUT(c, "DATA\r\n");
		}
	}
	if (c->state == SMTP_CLIENT_STOPPED)
		return;
	c->events->rcpt(c, i, r);
	if (c->state == SMTP_CLIENT_DATA && !c->ext.pipelining && c->accepted == 0)
		smtp_client_message_done(c, 0, &c->held_reply);
}

static void smtp_client_on_data(struct smtp_client *c, const struct smtp_reply *r)
{
	c->replies_due--;
	if (r->code == 354 && smtp_client_nobody(c)) {
		/* The server wants a body no one will get: end it empty and
		 * read its verdict, which stands for nobody. */
		c->state = SMTP_CLIENT_DOT_EMPTY;
		SMTP_CLIENT_PUT(c, ".\r\n");
	} else if (r->code == 354) {
		c->state = SMTP_CLIENT_BODY;
		c->at_line_start = true;
		c->last_cr = false;
		c->events->body(c);
	} else if (smtp_client_nobody(c)) {
		smtp_client_message_done(c, 0, &c->held_reply);
	} else {
		smtp_client_message_done(c, c->accepted, r);
	}
}

/* Paths come from our spool, but a CRLF in one would end the command and
 * start another. */
static bool smtp_client_path_ok(const char *path, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (path[i] == '\r' || path[i] == '\n' || path[i] == '<' || path[i] == '>')
			return false;
	return true;
}

int smtp_client_send(struct smtp_client *c, const struct smtp_client_message *msg)
{
	CHECK(c->state == SMTP_CLIENT_READY);
	const struct smtp_client_extensions *ext = &c->ext;
	if (msg->nrcpts == 0)
		return -EINVAL;
	if (ext->size && ext->max_size != 0 && msg->size > ext->max_size)
		return -EMSGSIZE;
	if (msg->smtputf8 && !ext->smtputf8)
		return -EPROTONOSUPPORT;
	if (!smtp_client_path_ok(msg->sender, msg->sender_len))
		return -EINVAL;
	for (unsigned i = 0; i < msg->nrcpts; i++)
		if (!smtp_client_path_ok(msg->rcpts[i], msg->rcpt_lens[i]))
			return -EINVAL;

	size_t kept = buf_len(c->out);
	int rc = buf_printf(c->out, "MAIL FROM:<%.*s>", (int)msg->sender_len, msg->sender);
	if (rc == 0 && ext->size && msg->size > 0)
		rc = buf_printf(c->out, " SIZE=%llu", (unsigned long long)msg->size);
	if (rc == 0 && msg->eightbit && ext->eightbitmime)
		rc = buf_printf(c->out, " BODY=8BITMIME");
	if (rc == 0 && msg->smtputf8)
		rc = buf_printf(c->out, " SMTPUTF8");
	if (rc == 0)
		rc = buf_append(c->out, "\r\n", 2);
	for (unsigned i = 0; rc == 0 && ext->pipelining && i < msg->nrcpts; i++)
		rc = buf_printf(c->out, "RCPT TO:<%.*s>\r\n", (int)msg->rcpt_lens[i],
				msg->rcpts[i]);
	if (rc == 0 && ext->pipelining)
		rc = buf_append(c->out, "DATA\r\n", 6);
	if (rc != 0) {
		/* A growth may have moved the bytes to the front: cut by length. */
		c->out->end = c->out->start + kept;
		return -ENOMEM;
	}

	c->msg = msg;
	c->replies_due = ext->pipelining ? msg->nrcpts + 2 : 1;
	c->next_rcpt = ext->pipelining ? msg->nrcpts : 0;
	c->rcpt_replies = 0;
	c->accepted = 0;
	c->mail_refused = false;
	c->dot_answered = false;
	memset(&c->held_reply, 0, sizeof(c->held_reply));
	c->state = SMTP_CLIENT_MAIL;
	return 0;
}

/* ---- body --------------------------------------------------------------- */

void smtp_client_body(struct smtp_client *c, const char *data, size_t len)
{
	CHECK(c->state == SMTP_CLIENT_BODY || c->state == SMTP_CLIENT_STOPPED);
	size_t at = 0;
	while (at < len && c->state == SMTP_CLIENT_BODY) {
		/* RFC 5321 4.5.2: a line's leading dot is doubled, so that only
		 * our own CRLF "." CRLF ends the data. */
		if (c->at_line_start && data[at] == '.')
			SMTP_CLIENT_PUT(c, ".");
		c->at_line_start = false;
		const char *lf = memchr(data + at, '\n', len - at);
		size_t end = lf != NULL ? (size_t)(lf - data) : len;
		if (end > at) {
			smtp_client_put(c, data + at, end - at);
			c->last_cr = data[end - 1] == '\r';
		}
		if (lf == NULL)
			break;
		/* A bare LF is a line end to some servers and not to others:
		 * send what all agree on. */
		if (!c->last_cr)
			SMTP_CLIENT_PUT(c, "\r");
		SMTP_CLIENT_PUT(c, "\n");
		c->last_cr = false;
		c->at_line_start = true;
		at = end + 1;
	}
}

void smtp_client_body_end(struct smtp_client *c)
{
	CHECK(c->state == SMTP_CLIENT_BODY || c->state == SMTP_CLIENT_STOPPED);
	if (c->state != SMTP_CLIENT_BODY)
		return;
	c->state = SMTP_CLIENT_DOT;
	if (c->at_line_start) /* empty, or ended with CRLF */
		SMTP_CLIENT_PUT(c, ".\r\n");
	else if (c->last_cr)
		SMTP_CLIENT_PUT(c, "\n.\r\n");
	else
		SMTP_CLIENT_PUT(c, "\r\n.\r\n");
}

/* ---- RSET, QUIT, input -------------------------------------------------- */

void smtp_client_reset(struct smtp_client *c)
{
	CHECK(c->state == SMTP_CLIENT_MESSAGE_DONE || c->state == SMTP_CLIENT_READY);
	c->state = SMTP_CLIENT_RSET;
	SMTP_CLIENT_PUT(c, "RSET\r\n");
}

void smtp_client_next(struct smtp_client *c)
{
	CHECK(c->state == SMTP_CLIENT_MESSAGE_DONE);
	if (!c->dot_answered) {
		smtp_client_reset(c);
		return;
	}
	smtp_client_ready(c);
}

void smtp_client_quit(struct smtp_client *c)
{
	CHECK(c->state == SMTP_CLIENT_MESSAGE_DONE || c->state == SMTP_CLIENT_READY);
	c->state = SMTP_CLIENT_QUIT;
	SMTP_CLIENT_PUT(c, "QUIT\r\n");
}

static void smtp_client_closed(struct smtp_client *c)
{
	c->state = SMTP_CLIENT_STOPPED;
	c->events->closed(c);
}

static void smtp_client_on_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	if (c->state == SMTP_CLIENT_QUIT) {
		/* RFC 5321 4.1.1.10: 221; a 421 closes as well. */
		smtp_client_closed(c);
		return;
	}
	if (r->code == 421) {
		smtp_client_fail(c, r);
		return;
	}
	switch ((enum smtp_client_state)c->state) {
	case SMTP_CLIENT_GREETING:
		smtp_client_on_greeting(c, r);
		break;
	case SMTP_CLIENT_EHLO:
		smtp_client_on_ehlo(c, r);
		break;
	case SMTP_CLIENT_HELO:
		smtp_client_on_helo(c, r);
		break;
	case SMTP_CLIENT_MAIL:
		smtp_client_on_mail(c, r);
		break;
	case SMTP_CLIENT_RCPT:
		smtp_client_on_rcpt(c, r);
		break;
	case SMTP_CLIENT_DATA:
		smtp_client_on_data(c, r);
		break;
	case SMTP_CLIENT_DOT:
		c->dot_answered = true;
		smtp_client_message_done(c, c->accepted, r);
		break;
	case SMTP_CLIENT_DOT_EMPTY:
		c->dot_answered = true;
		smtp_client_message_done(c, 0, &c->held_reply);
		break;
	case SMTP_CLIENT_RSET:
		if (smtp_client_positive(r))
			smtp_client_ready(c);
		else
			smtp_client_give_up(c, r);
		break;
	case SMTP_CLIENT_READY:
	case SMTP_CLIENT_BODY:
	case SMTP_CLIENT_MESSAGE_DONE:
	case SMTP_CLIENT_QUIT:
	case SMTP_CLIENT_STOPPED:
		smtp_client_unexpected(c, r);
		break;
	}
}

void smtp_client_init(struct smtp_client *c, const struct smtp_client_events *events, void *user,
		      struct buf *out, const char *helo_name)
{
	memset(c, 0, sizeof(*c));
	c->events = events;
	c->user = user;
	c->out = out;
	snprintf(c->helo_name, sizeof(c->helo_name), "%s", helo_name);
	smtp_reply_parser_init(&c->parser);
	c->parser.on_line = smtp_client_ehlo_line;
	c->parser.on_line_arg = c;
	c->state = SMTP_CLIENT_GREETING;
}

size_t smtp_client_input(struct smtp_client *c, const char *data, size_t len)
{
	size_t done = 0;
	while (done < len && c->state != SMTP_CLIENT_STOPPED) {
		struct smtp_reply r;
		size_t used = 0;
		int rc = smtp_reply_parse(&c->parser, data + done, len - done, &used, &r);
		done += used;
		if (rc < 0) {
			char text[SMTP_CLIENT_TEXT_MAX];
			snprintf(text, sizeof(text), "protocol error: %s", c->parser.error);
			smtp_client_fail_text(c, text);
		}
		if (rc <= 0)
			break;
		smtp_client_on_reply(c, &r);
	}
	return done;
}

void smtp_client_lost(struct smtp_client *c, const char *reason)
{
	if (c->state == SMTP_CLIENT_STOPPED)
		return;
	if (c->state == SMTP_CLIENT_QUIT)
		smtp_client_closed(c);
	else
		smtp_client_fail_text(c, reason);
}

enum smtp_client_phase smtp_client_phase(const struct smtp_client *c)
{
	switch ((enum smtp_client_state)c->state) {
	case SMTP_CLIENT_GREETING:
		return SMTP_CLIENT_PHASE_GREETING;
	case SMTP_CLIENT_EHLO:
	case SMTP_CLIENT_HELO:
	case SMTP_CLIENT_MAIL:
	case SMTP_CLIENT_RCPT:
	case SMTP_CLIENT_RSET:
	case SMTP_CLIENT_QUIT:
		return SMTP_CLIENT_PHASE_COMMAND;
	case SMTP_CLIENT_DATA:
		return SMTP_CLIENT_PHASE_DATA_INIT;
	case SMTP_CLIENT_BODY:
		return SMTP_CLIENT_PHASE_BODY;
	case SMTP_CLIENT_DOT:
	case SMTP_CLIENT_DOT_EMPTY:
		return SMTP_CLIENT_PHASE_DATA_DONE;
	case SMTP_CLIENT_READY:
	case SMTP_CLIENT_MESSAGE_DONE:
		return SMTP_CLIENT_PHASE_IDLE;
	case SMTP_CLIENT_STOPPED:
		break;
	}
	return SMTP_CLIENT_PHASE_DONE;
}
