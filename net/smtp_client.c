#include "net/smtp_client.h"

#include <errno.h>
#include <string.h>

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
