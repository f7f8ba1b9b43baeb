/*
 * smtp_parse — see smtp_parse.h for the contract.
 *
 * Every parser here is a byte-level state machine whose state lives in the
 * caller's struct. The fast paths (memchr to the next interesting byte, then
 * one memcpy) only ever skip bytes that the slow, byte-at-a-time path would
 * have treated identically, which is what keeps the results independent of
 * how the input was split.
 */
#include "net/smtp_parse.h"

#include <string.h>

/* ---- command lines ------------------------------------------------------ */

void smtp_line_reader_init(struct smtp_line_reader *r, char *buf, uint32_t cap)
{
	r->buf = buf;
	r->cap = cap;
	r->len = 0;
	r->overflow = false;
	r->saw_cr = false;
	r->ready = false;
	r->head_len = 0;
	r->buf[0] = '\0';
}

/*
 * Append k octets of the current line, or, when they do not fit, find the
 * first octet past the limit: returns how many of p[0..k) are consumed up
 * to and including the one that shows the line is too long (0: all fit).
 * A CR there may still be the one before the LF: it shows nothing until
 * the octet after it, which is then within p (the caller holds back a CR
 * at the end of its input).
 */
/* The line's first octets, kept apart even when it overflows: what
 * another protocol opens with (smtp_line_starts_tls). */
static void smtp_line_head_add(struct smtp_line_reader *r, const char *p, size_t k)
{
	size_t head = SMTP_LINE_HEAD - r->head_len;
	if (head > k)
		head = k;
	memcpy(r->head + r->head_len, p, head);
	r->head_len = (uint8_t)(r->head_len + head);
}

static size_t smtp_line_append(struct smtp_line_reader *r, const char *p, size_t k)
{
	size_t room = r->cap - r->len;
	if (k > room) {
		size_t past = p[room] == '\r' ? room + 2 : room + 1;
		smtp_line_head_add(r, p, past); /* what was consumed of it, no more */
		return past;
	}
	smtp_line_head_add(r, p, k);
	memcpy(r->buf + r->len, p, k);
	r->len += (uint32_t)k;
	return 0;
}

/* The line passed the limit: nothing of it is kept, the rest of it up to
 * its LF is skipped by the calls that follow. */
static enum smtp_line_status smtp_line_too_long(struct smtp_line_reader *r)
{
	r->overflow = true;
	r->saw_cr = false;
	r->len = 0;
	r->buf[0] = '\0';
	return SMTP_LINE_TOO_LONG;
}

enum smtp_line_status smtp_line_feed(struct smtp_line_reader *r, const char *in, size_t n,
				     size_t *consumed)
{
	if (r->ready) {
		r->len = 0;
		r->overflow = false;
		r->saw_cr = false;
		r->ready = false;
		r->head_len = 0;
	}
	size_t skipped = 0;
	if (r->overflow) {
		/* The rest of a line reported too long: dropped, LF included. */
		const char *lf = memchr(in, '\n', n);
		if (!lf) {
			*consumed = n;
			return SMTP_LINE_NEED_MORE;
		}
		skipped = (size_t)(lf - in) + 1;
		in += skipped;
		n -= skipped;
		r->overflow = false;
		r->head_len = 0; /* a new line begins */
	}
	if (n == 0) {
		*consumed = skipped;
		return SMTP_LINE_NEED_MORE;
	}

	/*
	 * Every terminator ends in LF, so the line is everything before the
	 * first LF, less one CR right before it. That CR is held back in
	 * saw_cr rather than stored: a line of exactly cap octets followed by
	 * CRLF must fit, and the CR may be the last byte of this chunk.
	 */
	const char *lf = memchr(in, '\n', n);
	size_t take = lf ? (size_t)(lf - in) : n;

	if (take > 0) {
		/* The held CR was followed by something other than LF: it is data. */
		if (r->saw_cr && r->len == r->cap) {
			/* in[0] showed the CR to be one too many: both were read */
			smtp_line_head_add(r, "\r", 1);
			smtp_line_head_add(r, in, 1);
			*consumed = skipped + 1;
			return smtp_line_too_long(r);
		}
		if (r->saw_cr) {
			r->buf[r->len++] = '\r';
			smtp_line_head_add(r, "\r", 1);
		}
		bool hold = in[take - 1] == '\r';
		size_t past = smtp_line_append(r, in, take - hold);
		if (past > 0) {
			*consumed = skipped + past;
			return smtp_line_too_long(r);
		}
		r->saw_cr = hold;
	}
	if (!lf) {
		*consumed = skipped + n;
		return SMTP_LINE_NEED_MORE;
	}

	*consumed = skipped + take + 1;
	r->saw_cr = false;
	r->ready = true;
	r->buf[r->len] = '\0';
	return SMTP_LINE_READY;
}

bool smtp_line_starts_tls(const struct smtp_line_reader *r)
{
	const unsigned char *h = (const unsigned char *)r->head;
	/* ContentType handshake, then ProtocolVersion 3.0 (SSLv3) to 3.4. */
	return r->head_len >= 3 && h[0] == 0x16 && h[1] == 0x03 && h[2] <= 0x04;
}

bool smtp_line_is_http_request(const char *line, size_t len)
{
	static const char version[] = " HTTP/d.d";
	const size_t version_len = sizeof(version) - 1;
	size_t method = 0;

	while (method < len && ((line[method] >= 'A' && line[method] <= 'Z') ||
				line[method] == '-' || line[method] == '_'))
		method++;
	if (method == 0 || len < method + 2 + version_len || line[method] != ' ')
		return false;
	const char *tail = line + len - version_len;
	for (size_t i = 0; i < version_len; i++) {
		bool ok = version[i] == 'd' ? tail[i] >= '0' && tail[i] <= '9'
					    : tail[i] == version[i];
		if (!ok)
			return false;
	}
	/* The target between the two spaces: visible ASCII, at least one. */
	for (const char *p = line + method + 1; p < tail; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= ' ' || c >= 0x7f)
			return false;
	}
	return true;
}

bool smtp_line_pending(const struct smtp_line_reader *r)
{
	return !r->ready && (r->len > 0 || r->saw_cr || r->overflow);
}

/* ---- commands ----------------------------------------------------------- */

/* Indexed by enum smtp_verb. */
static const char *const smtp_verb_names[SMTP_VERB_COUNT] = {
	[SMTP_VERB_EMPTY] = "",    [SMTP_VERB_UNKNOWN] = "",  [SMTP_VERB_HELO] = "HELO",
	[SMTP_VERB_EHLO] = "EHLO", [SMTP_VERB_MAIL] = "MAIL", [SMTP_VERB_RCPT] = "RCPT",
	[SMTP_VERB_DATA] = "DATA", [SMTP_VERB_RSET] = "RSET", [SMTP_VERB_NOOP] = "NOOP",
	[SMTP_VERB_QUIT] = "QUIT", [SMTP_VERB_VRFY] = "VRFY", [SMTP_VERB_EXPN] = "EXPN",
	[SMTP_VERB_HELP] = "HELP", [SMTP_VERB_ETRN] = "ETRN", [SMTP_VERB_STARTTLS] = "STARTTLS",
	[SMTP_VERB_AUTH] = "AUTH", [SMTP_VERB_BDAT] = "BDAT",
};

#define SMTP_VERB_MAX_LEN 8 /* "STARTTLS" */

const char *smtp_verb_name(enum smtp_verb verb)
{
	if ((unsigned)verb >= SMTP_VERB_COUNT)
		return "";
	return smtp_verb_names[verb];
}

/* ASCII only: a locale must never change what a command means. */
static inline unsigned char smtp_ascii_upper(unsigned char c)
{
	return c >= 'a' && c <= 'z' ? (unsigned char)(c - ('a' - 'A')) : c;
}

static inline bool smtp_is_blank(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static enum smtp_verb smtp_verb_lookup(const char *word, size_t len)
{
	char upper[SMTP_VERB_MAX_LEN];

	if (len == 0 || len > SMTP_VERB_MAX_LEN)
		return SMTP_VERB_UNKNOWN;
	for (size_t i = 0; i < len; i++)
		upper[i] = (char)smtp_ascii_upper((unsigned char)word[i]);
	for (int v = SMTP_VERB_HELO; v < SMTP_VERB_COUNT; v++) {
		const char *name = smtp_verb_names[v];
		if (strlen(name) == len && memcmp(name, upper, len) == 0)
			return (enum smtp_verb)v;
	}
	return SMTP_VERB_UNKNOWN;
}

int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd)
{
	size_t word = 0;

	/*
	 * The verb runs to the first blank. A blank at the very start gives
	 * an empty word, hence UNKNOWN: RFC 5321 has no leading white space,
	 * and accepting it would only widen what a smuggled line can look like.
	 */
	while (word < len && !smtp_is_blank((unsigned char)line[word]))
		word++;

	cmd->arg = "";
	cmd->arg_len = 0;
	if (len == 0)
		cmd->verb = SMTP_VERB_EMPTY;
	else
		cmd->verb = smtp_verb_lookup(line, word);

	if (cmd->verb != SMTP_VERB_EMPTY && cmd->verb != SMTP_VERB_UNKNOWN) {
		size_t start = word, end = len;
		while (start < end && smtp_is_blank((unsigned char)line[start]))
			start++;
		while (end > start && smtp_is_blank((unsigned char)line[end - 1]))
			end--;
		if (end > start) {
			cmd->arg = line + start;
			cmd->arg_len = end - start;
		}
	}

	if (len > 0 && memchr(line, '\0', len))
		return SMTP_PARSE_NUL;
	return SMTP_PARSE_OK;
}

static inline bool smtp_is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* RFC 5321 esmtp-value, widened to 8-bit octets for SMTPUTF8 (RFC 6531). */
static inline bool smtp_is_param_value_char(unsigned char c)
{
	return (c >= 33 && c <= 126 && c != '=') || c >= 0x80;
}

/* Returns the offset just past the closing '>', or 0 when there is none. */
static size_t smtp_scan_path(const char *s, size_t len)
{
	bool quoted = false;

	/* s[0] is the '<'. */
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (quoted) {
			if (c == '\\') {
				if (++i == len)
					return 0;
			} else if (c == '"') {
				quoted = false;
			}
			continue;
		}
		switch (c) {
		case '>':
			return i + 1;
		case '"':
			quoted = true;
			break;
		case '<':
		case ' ':
		case '\t':
			return 0;
		default:
			break;
		}
	}
	return 0;
}

int smtp_parse_path_arg(const char *arg, size_t len, const char *keyword, struct smtp_path_arg *out)
{
	size_t klen = strlen(keyword);
	size_t i;
	bool too_many = false;

	memset(out, 0, sizeof(*out));
	out->path = "";

	if (len < klen)
		return SMTP_PARSE_SYNTAX;
	for (i = 0; i < klen; i++) {
		if (smtp_ascii_upper((unsigned char)arg[i]) !=
		    smtp_ascii_upper((unsigned char)keyword[i]))
			return SMTP_PARSE_SYNTAX;
	}
	while (i < len && arg[i] == ' ')
		i++;
	/* RFC 5321 4.1.2 requires the brackets; a bare address is refused. */
	if (i == len || arg[i] != '<')
		return SMTP_PARSE_SYNTAX;

	size_t path_end = smtp_scan_path(arg + i, len - i);
	if (path_end == 0)
		return SMTP_PARSE_SYNTAX;
	out->path = arg + i + 1;
	out->path_len = path_end - 2;
	i += path_end;

	while (i < len) {
		if (arg[i] != ' ')
			return SMTP_PARSE_SYNTAX;
		while (i < len && arg[i] == ' ')
			i++;
		if (i == len)
			break;

		size_t key = i;
		if (!smtp_is_alnum((unsigned char)arg[i]))
			return SMTP_PARSE_SYNTAX;
		while (i < len && (smtp_is_alnum((unsigned char)arg[i]) || arg[i] == '-'))
			i++;
		size_t key_len = i - key;

		size_t value = 0, value_len = 0;
		bool has_value = i < len && arg[i] == '=';
		if (has_value) {
			value = ++i;
			while (i < len && smtp_is_param_value_char((unsigned char)arg[i]))
				i++;
			value_len = i - value;
			if (value_len == 0)
				return SMTP_PARSE_SYNTAX;
		}

		/*
		 * Keep checking the syntax past the limit, so that a malformed
		 * line is reported as such whatever its length.
		 */
		if (out->nparams == SMTP_MAX_PARAMS) {
			too_many = true;
			continue;
		}
		struct smtp_param *p = &out->params[out->nparams++];
		p->key = arg + key;
		p->key_len = key_len;
		p->value = has_value ? arg + value : NULL;
		p->value_len = value_len;
	}
	return too_many ? SMTP_PARSE_TOO_MANY : SMTP_PARSE_OK;
}

/* ---- DATA body ---------------------------------------------------------- */

/*
 * "Start of line" means after a CRLF (or at the very start): only there can
 * a dot be stuffing or begin the final ".\r\n". After a bare LF the decoder
 * is in DATA_TEXT, so "\n.\r\n" can never end the body, whatever a
 * downstream MTA would make of it.
 */
enum smtp_data_state {
	DATA_LINE_START = 0, /* after CRLF, or nothing seen yet */
	DATA_DOT,            /* line start, then '.' (not produced) */
	DATA_DOT_CR,         /* line start, '.', CR: LF next means the end */
	DATA_TEXT,           /* inside a line */
	DATA_CR,             /* inside a line, CR produced, its LF not yet seen */
	DATA_DONE,           /* final ".\r\n" consumed */
};

void smtp_data_decoder_init(struct smtp_data_decoder *d, uint32_t max_line, uint64_t max_size)
{
	memset(d, 0, sizeof(*d));
	d->state = DATA_LINE_START;
	d->max_line = max_line;
	d->max_size = max_size;
}

bool smtp_data_rejected(const struct smtp_data_decoder *d)
{
	return d->bare_lf || d->bare_cr || d->nul || d->line_too_long || d->too_big;
}

static inline void smtp_data_count_line(struct smtp_data_decoder *d, size_t k)
{
	/* Saturate: a multi-gigabyte line must not wrap back under the limit. */
	uint64_t len = (uint64_t)d->line_len + k;
	d->line_len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
	if (d->line_len > d->max_line)
		d->line_too_long = true;
}

static inline void smtp_data_count_size(struct smtp_data_decoder *d, size_t k)
{
	d->size += k;
	if (d->size > d->max_size)
		d->too_big = true;
}

/*
 * One octet inside a line. The caller has made sure that out has room
 * unless the message is already rejected; an octet that makes it rejected
 * is itself not produced, so the output never passes max_size.
 */
static inline void smtp_data_text_byte(struct smtp_data_decoder *d, unsigned char c, char *out,
				       size_t *produced)
{
	if (c == '\r') {
		/* Produced now: both CRLF and a bare CR keep it in the body. */
		smtp_data_count_size(d, 1);
		d->state = DATA_CR;
	} else if (c == '\n') {
		d->bare_lf = true;
		smtp_data_count_size(d, 1);
		/* Any receiver will break the line here; so does the length limit. */
		d->line_len = 0;
		d->state = DATA_TEXT;
	} else {
		if (c == '\0')
			d->nul = true;
		smtp_data_count_line(d, 1);
		smtp_data_count_size(d, 1);
		d->state = DATA_TEXT;
	}
	if (!smtp_data_rejected(d))
		out[(*produced)++] = (char)c;
}

enum smtp_data_status smtp_data_decode(struct smtp_data_decoder *d, const char *in, size_t n,
				       size_t *consumed, char *out, size_t out_cap,
				       size_t *produced)
{
	enum smtp_data_status status = SMTP_DATA_NEED_MORE;
	size_t i = 0, o = 0;
	/* First LF at or after lf_at's search start; n when there is none. */
	size_t lf_at = 0;
	bool lf_known = false;
	/* First NUL at or after nul_at's search start, or where that search
	 * stopped: as far as out has room, so that many calls with a small out
	 * do not each scan the whole input. */
	size_t nul_at = 0;
	bool nul_known = false;

	if (d->state == DATA_DONE) {
		status = SMTP_DATA_END;
		goto out;
	}

	while (i < n) {
		/* An ordinary octet at line start is handled as inside the line. */
		if (d->state == DATA_LINE_START && in[i] != '.' && in[i] != '\r' && in[i] != '\n')
			d->state = DATA_TEXT;

		if (d->state == DATA_TEXT) {
			/*
			 * Fast path: copy the run of ordinary octets up to the
			 * next CR, LF or NUL, bounded so that no limit can trip
			 * inside the run; the octet that would trip one goes
			 * through the byte path below. The LF and NUL positions
			 * are remembered across lines, so that text without them
			 * is not scanned again at every line: the work stays
			 * linear.
			 */
			bool rejected = smtp_data_rejected(d);
			size_t window = n - i;
			if (!rejected) {
				if (out_cap - o < window)
					window = out_cap - o;
				if ((size_t)(d->max_line - d->line_len) < window)
					window = d->max_line - d->line_len;
				if (d->max_size - d->size < window)
					window = (size_t)(d->max_size - d->size);
			}
			if (!lf_known || lf_at < i) {
				const char *lf = memchr(in + i, '\n', n - i);
				lf_at = lf ? (size_t)(lf - in) : n;
				lf_known = true;
			}
			if (!nul_known || nul_at < i || (nul_at == i && in[i] != '\0')) {
				size_t span = n - i;
				if (!rejected && out_cap - o < span)
					span = out_cap - o;
				const char *nul = memchr(in + i, '\0', span);
				nul_at = nul ? (size_t)(nul - in) : i + span;
				nul_known = true;
			}
			size_t limit = lf_at - i < window ? lf_at - i : window;
			if (nul_at - i < limit)
				limit = nul_at - i;
			const char *cr = memchr(in + i, '\r', limit);
			size_t run = cr ? (size_t)(cr - (in + i)) : limit;
			if (run > 0) {
				if (!rejected) {
					memcpy(out + o, in + i, run);
					o += run;
				}
				smtp_data_count_line(d, run);
				smtp_data_count_size(d, run);
				i += run;
				if (i == n)
					break;
			}
			/* The CRLF that ends most runs, when no limit is near. */
			if (!rejected && in[i] == '\r' && n - i >= 2 && in[i + 1] == '\n' &&
			    out_cap - o >= 2 && d->max_size - d->size >= 2) {
				out[o++] = '\r';
				out[o++] = '\n';
				d->size += 2;
				d->line_len = 0;
				d->state = DATA_LINE_START;
				i += 2;
				continue;
			}
		}

		unsigned char c = (unsigned char)in[i];
		bool full = o == out_cap && !smtp_data_rejected(d);

		switch ((enum smtp_data_state)d->state) {
		case DATA_LINE_START:
			if (c == '.') {
				d->state = DATA_DOT;
				break;
			}
			if (full)
				goto out;
			smtp_data_text_byte(d, c, out, &o);
			break;
		case DATA_DOT:
			if (c == '\r') {
				d->state = DATA_DOT_CR;
				break;
			}
			if (full)
				goto out;
			/* Unstuffed, yet it was transmitted: it counts in the line. */
			smtp_data_count_line(d, 1);
			smtp_data_text_byte(d, c, out, &o);
			break;
		case DATA_DOT_CR:
			if (c == '\n') {
				d->state = DATA_DONE;
				i++;
				status = SMTP_DATA_END;
				goto out;
			}
			/*
			 * ".\rX": the dot was stuffing, the CR is bare. Rejected,
			 * so nothing below produces output and needs no room.
			 */
			d->bare_cr = true;
			smtp_data_count_line(d, 2);
			smtp_data_count_size(d, 1);
			smtp_data_text_byte(d, c, out, &o);
			break;
		case DATA_CR:
			if (c != '\n') {
				d->bare_cr = true;
				smtp_data_count_line(d, 1);
				smtp_data_text_byte(d, c, out, &o);
				break;
			}
			if (full)
				goto out;
			smtp_data_count_size(d, 1);
			if (!smtp_data_rejected(d))
				out[o++] = '\n';
			d->line_len = 0;
			d->state = DATA_LINE_START;
			break;
		case DATA_TEXT:
			if (full)
				goto out;
			smtp_data_text_byte(d, c, out, &o);
			break;
		case DATA_DONE:
			break;
		}
		i++;
	}
out:
	*consumed = i;
	*produced = o;
	return status;
}

/* ---- the header section of a body ------------------------------------------ */

void smtp_header_scan_feed(struct smtp_header_scan *h, const char *data, size_t len)
{
	static const char field[] = "received:";
	for (size_t i = 0; i < len && !h->done; i++) {
		char c = data[i];
		if (c == '\n') {
			if (h->line_len == 0 || (h->line_len == 1 && h->first_cr))
				h->done = true; /* the empty line: the body follows */
			h->line_len = 0;
			h->mismatch = false;
			h->first_cr = false;
			continue;
		}
		if (h->line_len < sizeof(field) - 1 && !h->mismatch) {
			char lower = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
			h->mismatch = lower != field[h->line_len];
			if (!h->mismatch && h->line_len == sizeof(field) - 2)
				h->received++;
		}
		h->first_cr = h->line_len == 0 && c == '\r';
		if (h->line_len < UINT32_MAX)
			h->line_len++;
	}
}
