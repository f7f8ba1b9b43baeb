#include "queue/dsn.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"

#define DSN_LINE_SOFT      78  /* RFC 5322 2.1.1: what a line SHOULD stay within */
#define DSN_LINE_HARD      998 /* ... and MUST */
#define DSN_SEED_MAX       40  /* of the seed, in the boundary and the Message-ID */
#define DSN_BOUNDARY_SIZE  72  /* RFC 2046: at most 70 characters, and the NUL */
#define DSN_BOUNDARY_TRIES 10000
#define DSN_STATUS_SIZE    12                       /* "5.123.123" and the NUL */
#define DSN_MAX_MS         INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */

/* Appends collect the first error here, so that building a part reads as
 * the text it writes; the caller checks err once at the end. */
struct dsn_writer {
	bool global; /* 8-bit UTF-8 may be written (RFC 6533 form) */
	int err;
	struct buf line; /* one logical line, composed before it is wrapped */
};

static void dsn_add(struct dsn_writer *w, struct buf *b, const char *s, size_t n)
{
	if (w->err == 0 && buf_append(b, s, n) != 0)
		w->err = -ENOMEM;
}

static void dsn_adds(struct dsn_writer *w, struct buf *b, const char *s)
{
	dsn_add(w, b, s, strlen(s));
}

static bool dsn_is_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return false;
	return true;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * form, no surrogate, nothing past U+10FFFF), or 0. */
static size_t dsn_utf8_len(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second octet */
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

/* Append text that came from outside. Line breaks become spaces and other
 * control octets '?', so that a hostile reply cannot end the line it is
 * in and start a header field, a status field or a boundary of its own.
 * 8-bit octets stay only where UTF-8 may be written and they are UTF-8. */
static void dsn_add_clean(struct dsn_writer *w, struct buf *b, const char *s, size_t n,
			  bool keep_tab)
{
	size_t i = 0;
	while (i < n) {
		size_t run = 0;
		while (i + run < n && (unsigned char)s[i + run] >= 0x20 &&
		       (unsigned char)s[i + run] < 0x7f)
			run++;
		dsn_add(w, b, s + i, run);
		i += run;
		if (i == n)
			break;
		unsigned char ch = (unsigned char)s[i];
		size_t u = ch >= 0x80 && w->global ? dsn_utf8_len(s + i, n - i) : 0;
		if (u > 0) {
			dsn_add(w, b, s + i, u);
			i += u;
			continue;
		}
		if (ch == '\t' && keep_tab)
			dsn_add(w, b, "\t", 1);
		else if (ch == '\t' || ch == '\r' || ch == '\n')
			dsn_add(w, b, " ", 1);
		else
			dsn_add(w, b, "?", 1);
		i++;
	}
}

static void dsn_add_clean_str(struct dsn_writer *w, struct buf *b, const char *s)
{
	dsn_add_clean(w, b, s, strlen(s), false);
}

static void dsn_newline(struct dsn_writer *w, struct buf *b, const char *indent)
{
	dsn_add(w, b, "\r\n", 2);
	dsn_adds(w, b, indent);
}

/* Write one logical line to b, breaking it at spaces once a line would pass
 * soft octets, and inside a word only where it would pass the hard limit
 * (never inside a UTF-8 sequence). A break puts CRLF and indent in place of
 * one space: with indent " " that is exactly RFC 5322 folding, so a folded
 * field unfolds to the text it was. A line never ends in spaces, and no
 * continuation line is only blank. */
static void dsn_wrap(struct dsn_writer *w, struct buf *b, const char *s, size_t n,
		     const char *indent, size_t soft)
{
	size_t indent_len = strlen(indent);
	size_t col = 0;
	bool word_on_line = false;
	size_t i = 0;
	while (i < n) {
		size_t spaces = 0;
		while (i + spaces < n && s[i + spaces] == ' ')
			spaces++;
		size_t len = 0;
		while (i + spaces + len < n && s[i + spaces + len] != ' ')
			len++;
		if (len == 0)
			break;
		const char *word = s + i + spaces;
		i += spaces + len;
		/* A run of spaces wider than a line says nothing: keep one. */
		if (spaces > soft)
			spaces = 1;
		if (spaces > 0 && word_on_line && col + spaces + len > soft) {
			dsn_newline(w, b, indent);
			col = indent_len;
			spaces--;
		}
		for (; spaces > 0; spaces--, col++)
			dsn_add(w, b, " ", 1);
		while (col + len > DSN_LINE_HARD) {
			size_t take = DSN_LINE_HARD - col;
			while (take > 0 && ((unsigned char)word[take] & 0xc0) == 0x80)
				take--;
			if (take == 0 && col == indent_len)
				take = DSN_LINE_HARD - col; /* not UTF-8 at all: cut anywhere */
			dsn_add(w, b, word, take);
			word += take;
			len -= take;
			dsn_newline(w, b, indent);
			col = indent_len;
		}
		dsn_add(w, b, word, len);
		col += len;
		word_on_line = true;
	}
	dsn_add(w, b, "\r\n", 2);
}

/* End the logical line composed in w->line: as a folded header field, a
 * paragraph of text, or a recipient's paragraph (indented like a list). */
static void dsn_end_field(struct dsn_writer *w, struct buf *b)
{
	dsn_wrap(w, b, buf_head(&w->line), buf_len(&w->line), " ", DSN_LINE_SOFT);
	buf_clear(&w->line);
}

static void dsn_end_paragraph(struct dsn_writer *w, struct buf *b, const char *indent)
{
	dsn_wrap(w, b, buf_head(&w->line), buf_len(&w->line), indent, DSN_LINE_SOFT);
	dsn_add(w, b, "\r\n", 2);
	buf_clear(&w->line);
}

size_t dsn_format_date(int64_t ms, char out[DSN_DATE_SIZE])
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	if (ms < 0)
		ms = 0;
	if (ms > DSN_MAX_MS)
		ms = DSN_MAX_MS;
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	/* Names from tables, not strftime's %a/%b: those follow the locale. */
	gmtime_r(&t, &tm);
	int n = snprintf(out, DSN_DATE_SIZE, "%s, %02d %s %04d %02d:%02d:%02d +0000",
			 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
			 tm.tm_hour, tm.tm_min, tm.tm_sec);
	return n > 0 ? (size_t)n : 0;
}

bool dsn_wanted(const char *sender, size_t sender_len)
{
	(void)sender;
	return sender_len > 0;
}

/* ---- the recipients' facts ------------------------------------------------ */

static bool dsn_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* "c.s.d" with c one of 2, 4, 5 and 1 to 3 digits each after (RFC 3463). */
static size_t dsn_status_len(const char *s)
{
	if (s[0] != '2' && s[0] != '4' && s[0] != '5')
		return 0;
	size_t i = 1;
	for (int part = 0; part < 2; part++) {
		if (s[i] != '.')
			return 0;
		i++;
		size_t digits = 0;
		while (dsn_is_digit(s[i]) && digits < 4) {
			i++;
			digits++;
		}
		if (digits == 0 || digits > 3)
			return 0;
	}
	return i;
}

static bool dsn_status_valid(const char *s)
{
	size_t len = dsn_status_len(s);
	return len > 0 && s[len] == '\0';
}

/* The class digit of an SMTP reply ("550 ...", "451-..."), or 0. */
static char dsn_reply_class(const char *diag)
{
	if (diag == NULL || diag[0] < '2' || diag[0] > '5' || !dsn_is_digit(diag[1]) ||
	    !dsn_is_digit(diag[2]))
		return 0;
	if (diag[3] != '\0' && diag[3] != ' ' && diag[3] != '-')
		return 0;
	return diag[0];
}

static bool dsn_has_remote(const struct dsn_recipient *r)
{
	return r->remote_mta != NULL && r->remote_mta[0] != '\0';
}

static bool dsn_is_reply(const struct dsn_recipient *r)
{
	return dsn_has_remote(r) && dsn_reply_class(r->diagnostic) != 0;
}

static void dsn_status_of(const struct dsn_recipient *r, char out[DSN_STATUS_SIZE])
{
	if (r->status != NULL) {
		snprintf(out, DSN_STATUS_SIZE, "%s", r->status);
		return;
	}
	char class = dsn_reply_class(r->diagnostic);
	if (class == '4' || class == '5') {
		const char *enhanced = r->diagnostic[3] != '\0' ? r->diagnostic + 4 : "";
		size_t len = dsn_status_len(enhanced);
		/* A status of another class than the reply's is not the reply's. */
		if (len > 0 && enhanced[0] == class &&
		    (enhanced[len] == '\0' || enhanced[len] == ' ')) {
			snprintf(out, DSN_STATUS_SIZE, "%.*s", (int)len, enhanced);
			return;
		}
		snprintf(out, DSN_STATUS_SIZE, "%c.0.0", class);
		return;
	}
	snprintf(out, DSN_STATUS_SIZE, "%s", strcmp(r->action, "delayed") == 0 ? "4.0.0" : "5.0.0");
}

static bool dsn_is_failed(const struct dsn_recipient *r)
{
	return strcmp(r->action, "failed") == 0;
}

static int dsn_check(const struct dsn_message *m)
{
	if (m->nrcpts == 0 || m->rcpts == NULL || m->sender == NULL || m->sender_len == 0 ||
	    m->reporting_mta == NULL || m->reporting_mta[0] == '\0')
		return -EINVAL;
	for (unsigned i = 0; i < m->nrcpts; i++) {
		const struct dsn_recipient *r = &m->rcpts[i];
		if (r->address == NULL || r->address_len == 0 || r->action == NULL)
			return -EINVAL;
		if (strcmp(r->action, "failed") != 0 && strcmp(r->action, "delayed") != 0)
			return -EINVAL;
		if (r->status != NULL && !dsn_status_valid(r->status))
			return -EINVAL;
	}
	return 0;
}

/* An 8-bit address can only have come with SMTPUTF8, whatever the flag
 * says, and only the RFC 6533 form can carry it back. */
static bool dsn_is_global(const struct dsn_message *m)
{
	if (m->smtputf8 || !dsn_is_ascii(m->sender, m->sender_len))
		return true;
	for (unsigned i = 0; i < m->nrcpts; i++)
		if (!dsn_is_ascii(m->rcpts[i].address, m->rcpts[i].address_len))
			return true;
	return false;
}

/* ---- part 1: the words ------------------------------------------------- */

static void dsn_text_recipient(struct dsn_writer *w, const struct dsn_recipient *r, struct buf *b)
{
	struct buf *l = &w->line;
	dsn_add(w, l, "<", 1);
	dsn_add_clean(w, l, r->address, r->address_len, false);
	dsn_add(w, l, ">: ", 3);
	if (dsn_has_remote(r)) {
		dsn_adds(w, l, "host ");
		dsn_add_clean_str(w, l, r->remote_mta);
		dsn_adds(w, l, dsn_is_reply(r) ? " said: " : ": ");
	}
	if (r->diagnostic != NULL && r->diagnostic[0] != '\0') {
		dsn_add_clean_str(w, l, r->diagnostic);
	} else {
		char status[DSN_STATUS_SIZE];
		dsn_status_of(r, status);
		dsn_adds(w, l,
			 dsn_is_failed(r) ? "delivery failed, status "
					  : "delivery delayed, status ");
		dsn_adds(w, l, status);
	}
	dsn_end_paragraph(w, b, "    ");
}

static void dsn_text_recipients(struct dsn_writer *w, const struct dsn_message *m, bool failed,
				struct buf *b)
{
	for (unsigned i = 0; i < m->nrcpts; i++)
		if (dsn_is_failed(&m->rcpts[i]) == failed)
			dsn_text_recipient(w, &m->rcpts[i], b);
}

static void dsn_build_text(struct dsn_writer *w, const struct dsn_message *m, bool headers_attached,
			   struct buf *b)
{
	unsigned failed = 0;
	for (unsigned i = 0; i < m->nrcpts; i++)
		failed += dsn_is_failed(&m->rcpts[i]);

	dsn_adds(w, &w->line, "This is the mail system at host ");
	dsn_add_clean_str(w, &w->line, m->reporting_mta);
	dsn_adds(w, &w->line, ".");
	dsn_end_paragraph(w, b, "");
	if (failed > 0) {
		dsn_adds(w, &w->line,
			 "Your message could not be delivered to one or more recipients, and no "
			 "further attempt will be made. The reasons follow.");
		dsn_end_paragraph(w, b, "");
		dsn_text_recipients(w, m, true, b);
	}
	if (failed < m->nrcpts) {
		dsn_adds(
			w, &w->line,
			"Your message has not yet been delivered to the recipients below. Delivery "
			"is still being tried: you do not need to send it again.");
		dsn_end_paragraph(w, b, "");
		dsn_text_recipients(w, m, false, b);
	}
	if (m->queue_id != NULL) {
		dsn_adds(w, &w->line, "For the postmaster: the message's queue ID at ");
		dsn_add_clean_str(w, &w->line, m->reporting_mta);
		dsn_adds(w, &w->line, " was ");
		dsn_add_clean_str(w, &w->line, m->queue_id);
		dsn_adds(w, &w->line, ".");
		dsn_end_paragraph(w, b, "");
	}
	if (!headers_attached)
		dsn_adds(w, &w->line, "The original message's header section is not included.");
	else if (m->headers_truncated)
		dsn_adds(w, &w->line,
			 "The original message's header section is attached, cut short.");
	else
		dsn_adds(w, &w->line, "The original message's header section is attached.");
	/* The part's last line: no blank line after it. */
	dsn_wrap(w, b, buf_head(&w->line), buf_len(&w->line), "", DSN_LINE_SOFT);
	buf_clear(&w->line);
}

/* ---- part 2: the delivery-status fields (RFC 3464 2.2, 2.3) ---------------- */

static void dsn_date_field(struct dsn_writer *w, struct buf *b, const char *name, int64_t ms)
{
	char date[DSN_DATE_SIZE];
	dsn_format_date(ms, date);
	dsn_adds(w, &w->line, name);
	dsn_adds(w, &w->line, ": ");
	dsn_adds(w, &w->line, date);
	dsn_end_field(w, b);
}

static void dsn_status_recipient(struct dsn_writer *w, const struct dsn_recipient *r, struct buf *b)
{
	struct buf *l = &w->line;
	bool ascii = dsn_is_ascii(r->address, r->address_len);
	/* RFC 6533 3: an address that needs UTF-8 is of type utf-8. */
	dsn_adds(w, l, ascii ? "Final-Recipient: rfc822; " : "Final-Recipient: utf-8; ");
	dsn_add_clean(w, l, r->address, r->address_len, false);
	dsn_end_field(w, b);
	dsn_adds(w, l, "Action: ");
	dsn_adds(w, l, r->action);
	dsn_end_field(w, b);
	char status[DSN_STATUS_SIZE];
	dsn_status_of(r, status);
	dsn_adds(w, l, "Status: ");
	dsn_adds(w, l, status);
	dsn_end_field(w, b);
	if (dsn_has_remote(r)) {
		dsn_adds(w, l, "Remote-MTA: dns; ");
		dsn_add_clean_str(w, l, r->remote_mta);
		dsn_end_field(w, b);
	}
	/* Only a server's reply is an "smtp" diagnostic; a local reason has no
	 * registered type, and the text part gives it. */
	if (dsn_is_reply(r)) {
		dsn_adds(w, l, "Diagnostic-Code: smtp; ");
		dsn_add_clean_str(w, l, r->diagnostic);
		dsn_end_field(w, b);
	}
	if (r->last_attempt_ms != 0)
		dsn_date_field(w, b, "Last-Attempt-Date", r->last_attempt_ms);
}

static void dsn_build_status(struct dsn_writer *w, const struct dsn_message *m, struct buf *b)
{
	dsn_adds(w, &w->line, "Reporting-MTA: dns; ");
	dsn_add_clean_str(w, &w->line, m->reporting_mta);
	dsn_end_field(w, b);
	dsn_date_field(w, b, "Arrival-Date", m->arrival_ms);
	/* Extension fields come last (RFC 3464 2.2). */
	if (m->queue_id != NULL) {
		dsn_adds(w, &w->line, "X-Ferry-Queue-ID: ");
		dsn_add_clean_str(w, &w->line, m->queue_id);
		dsn_end_field(w, b);
	}
	for (unsigned i = 0; i < m->nrcpts; i++) {
		dsn_add(w, b, "\r\n", 2);
		dsn_status_recipient(w, &m->rcpts[i], b);
	}
}

/* ---- part 3: the original header section --------------------------------- */

static bool dsn_is_blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return false;
	return true;
}

/* Each line cleaned like any outside text (TABs kept: they fold; a bare
 * LF ends a line, a bare CR becomes a space), blank lines dropped, and a
 * line too long folded at a space, or cut where it has none. */
static void dsn_build_headers(struct dsn_writer *w, const struct dsn_message *m, struct buf *b)
{
	const char *p = m->headers;
	const char *end = p != NULL ? p + m->headers_len : p;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl != NULL ? nl : end;
		size_t len = (size_t)(eol - p);
		if (len > 0 && p[len - 1] == '\r')
			len--;
		if (len == 0)
			break; /* the empty line: the body begins, which is not returned */
		if (!dsn_is_blank(p, len)) {
			dsn_add_clean(w, &w->line, p, len, true);
			dsn_wrap(w, b, buf_head(&w->line), buf_len(&w->line), " ", DSN_LINE_HARD);
			buf_clear(&w->line);
		}
		p = nl != NULL ? nl + 1 : end;
	}
}

/* ---- the whole message ----------------------------------------------------- */

/* The seed in characters safe in a boundary and in a Message-ID's left
 * part alike (letters and digits; anything else becomes '-'). */
static void dsn_seed(const struct dsn_message *m, char out[DSN_SEED_MAX + 1])
{
	const char *seed = m->boundary_seed != NULL ? m->boundary_seed : m->queue_id;
	size_t n = 0;
	for (; seed != NULL && seed[n] != '\0' && n < DSN_SEED_MAX; n++) {
		char c = seed[n];
		bool alnum =
			(c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
		out[n] = alnum ? c : '-';
	}
	if (n == 0)
		out[n++] = '0';
	out[n] = '\0';
}

static bool dsn_contains(const struct buf *b, const char *s)
{
	return buf_len(b) > 0 && memmem(buf_head(b), buf_len(b), s, strlen(s)) != NULL;
}

/* A boundary must not occur in what it encloses (RFC 2046 5.1.1). Only
 * the original headers could hold it by design, but every part is checked:
 * a seed is unique, not secret. "=_" cannot occur in quoted-printable. */
static int dsn_boundary(const struct dsn_message *m, const char *seed, const struct buf *parts[3],
			char out[DSN_BOUNDARY_SIZE])
{
	for (unsigned attempt = 0; attempt < DSN_BOUNDARY_TRIES; attempt++) {
		if (attempt == 0)
			snprintf(out, DSN_BOUNDARY_SIZE, "=_%s.%lld", seed, (long long)m->now_ms);
		else
			snprintf(out, DSN_BOUNDARY_SIZE, "=_%s.%lld.%u", seed, (long long)m->now_ms,
				 attempt);
		if (!dsn_contains(parts[0], out) && !dsn_contains(parts[1], out) &&
		    !dsn_contains(parts[2], out))
			return 0;
	}
	return -EINVAL;
}

static void dsn_build_top(struct dsn_writer *w, const struct dsn_message *m, bool failed,
			  bool eight_bit, const char *seed, const char *boundary, struct buf *b)
{
	struct buf *l = &w->line;
	dsn_adds(w, l, "From: Mail Delivery System <MAILER-DAEMON@");
	dsn_add_clean_str(w, l, m->reporting_mta);
	dsn_adds(w, l, ">");
	dsn_end_field(w, b);
	dsn_adds(w, l, "To: <");
	dsn_add_clean(w, l, m->sender, m->sender_len, false);
	dsn_adds(w, l, ">");
	dsn_end_field(w, b);
	dsn_adds(w, l,
		 failed ? "Subject: Undelivered Mail Returned to Sender"
			: "Subject: Delayed Mail (still being retried)");
	dsn_end_field(w, b);
	dsn_date_field(w, b, "Date", m->now_ms);
	char id[64];
	snprintf(id, sizeof(id), "<%lld.%s@", (long long)m->now_ms, seed);
	dsn_adds(w, l, "Message-ID: ");
	dsn_adds(w, l, id);
	dsn_add_clean_str(w, l, m->reporting_mta);
	dsn_adds(w, l, ">");
	dsn_end_field(w, b);
	/* RFC 3834 5: made by a program in answer to a message; keeps
	 * vacation responders and list managers from answering it. */
	dsn_adds(w, l, "Auto-Submitted: auto-replied");
	dsn_end_field(w, b);
	dsn_adds(w, l, "MIME-Version: 1.0");
	dsn_end_field(w, b);
	dsn_adds(w, l, "Content-Type: multipart/report; report-type=");
	dsn_adds(w, l, w->global ? "global-delivery-status" : "delivery-status");
	dsn_adds(w, l, "; boundary=\"");
	dsn_adds(w, l, boundary);
	dsn_adds(w, l, "\"");
	dsn_end_field(w, b);
	/* A multipart is labelled with the widest encoding inside it (RFC 2045 6.4). */
	if (eight_bit) {
		dsn_adds(w, l, "Content-Transfer-Encoding: 8bit");
		dsn_end_field(w, b);
	}
	dsn_adds(w, b, "\r\nThis is a MIME-encapsulated message.\r\n");
}

/* The CRLF before each delimiter is the delimiter's (RFC 2046 5.1.1), so
 * every part's content keeps the CRLF of its last line. */
static void dsn_add_part(struct dsn_writer *w, const char *boundary, const char *type,
			 const char *description, const struct buf *content, struct buf *b)
{
	dsn_adds(w, b, "\r\n--");
	dsn_adds(w, b, boundary);
	dsn_adds(w, b, "\r\nContent-Type: ");
	dsn_adds(w, b, type);
	dsn_adds(w, b, "\r\nContent-Description: ");
	dsn_adds(w, b, description);
	if (!dsn_is_ascii(buf_head(content), buf_len(content)))
		dsn_adds(w, b, "\r\nContent-Transfer-Encoding: 8bit");
	dsn_adds(w, b, "\r\n\r\n");
	dsn_add(w, b, buf_head(content), buf_len(content));
}

int dsn_build(const struct dsn_message *m, struct buf *out)
{
	int err = dsn_check(m);
	if (err != 0)
		return err;
	struct dsn_writer w = {.global = dsn_is_global(m)};
	struct buf text = {0}, status = {0}, headers = {0}, msg = {0};
	bool failed = false;
	for (unsigned i = 0; i < m->nrcpts; i++)
		failed |= dsn_is_failed(&m->rcpts[i]);

	dsn_build_headers(&w, m, &headers);
	dsn_build_text(&w, m, buf_len(&headers) > 0, &text);
	dsn_build_status(&w, m, &status);
	char seed[DSN_SEED_MAX + 1];
	char boundary[DSN_BOUNDARY_SIZE];
	dsn_seed(m, seed);
	const struct buf *parts[3] = {&text, &status, &headers};
	if (w.err == 0)
		w.err = dsn_boundary(m, seed, parts, boundary);
	if (w.err == 0) {
		bool eight_bit = !dsn_is_ascii(buf_head(&text), buf_len(&text)) ||
				 !dsn_is_ascii(buf_head(&status), buf_len(&status)) ||
				 !dsn_is_ascii(buf_head(&headers), buf_len(&headers));
		dsn_build_top(&w, m, failed, eight_bit, seed, boundary, &msg);
		dsn_add_part(&w, boundary,
			     dsn_is_ascii(buf_head(&text), buf_len(&text))
				     ? "text/plain; charset=us-ascii"
				     : "text/plain; charset=utf-8",
			     "Notification", &text, &msg);
		dsn_add_part(&w, boundary,
			     w.global ? "message/global-delivery-status"
				      : "message/delivery-status",
			     "Delivery report", &status, &msg);
		if (buf_len(&headers) > 0)
			dsn_add_part(&w, boundary,
				     w.global ? "message/global-headers" : "text/rfc822-headers",
				     failed ? "Undelivered Message Headers"
					    : "Delayed Message Headers",
				     &headers, &msg);
		dsn_adds(&w, &msg, "\r\n--");
		dsn_adds(&w, &msg, boundary);
		dsn_adds(&w, &msg, "--\r\n");
	}
	/* Built aside and appended whole: a failure leaves out as it was. */
	dsn_add(&w, out, buf_head(&msg), buf_len(&msg));
	buf_release(&w.line);
	buf_release(&text);
	buf_release(&status);
	buf_release(&headers);
	buf_release(&msg);
	return w.err;
}
