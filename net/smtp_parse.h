/*
 * smtp_parse — resumable SMTP input parsers. No I/O, no allocation.
 *
 * Input arrives in arbitrary chunks (multishot recv), so every parser here
 * keeps its state in a caller-owned struct, consumes what it is given and
 * says "need more" on a partial line, in the manner of nginx's mail parser.
 * Splitting an input at any byte boundary gives the same result as feeding
 * it whole.
 *
 * Three pieces:
 *  - smtp_line_reader: splits the command stream into lines. CRLF or a bare
 *    LF ends a command line (old ETRN clients send bare LF); a line longer
 *    than the limit is reported as too long as soon as it passes the limit
 *    (the client hears of it at once, not when it ends the line), and the
 *    rest of it, up to its end, is dropped: never truncated and executed.
 *    Each line's first octets are kept apart, so that a client speaking
 *    TLS or HTTP is recognised at its first line.
 *  - smtp_command_parse / smtp_parse_path_arg: one line -> verb, argument,
 *    reverse/forward path and ESMTP parameters.
 *  - smtp_data_decoder: the DATA body. Only CRLF "." CRLF ends it; dot
 *    stuffing is undone; a bare LF or bare CR anywhere in the body is
 *    flagged (SMTP smuggling), and so is a NUL (a next hop that drops it
 *    would see CRLF NUL "." CRLF end the data); over-long text lines and an
 *    over-size body are flagged. Once a flag is set the decoder produces no more output
 *    and only looks for the end, so the session stays in sync with the
 *    client and can refuse the whole message at the end.
 */
#ifndef FERRY_NET_SMTP_PARSE_H
#define FERRY_NET_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- command lines ------------------------------------------------------ */

/* Octets kept from the start of every line, even an over-long one. */
#define SMTP_LINE_HEAD 4

enum smtp_line_status {
	SMTP_LINE_NEED_MORE = 0, /* all input consumed, line not complete */
	SMTP_LINE_READY,         /* r->buf[0..r->len) holds one line */
	SMTP_LINE_TOO_LONG,      /* the line passed the limit: dropped, its rest skipped */
};

struct smtp_line_reader {
	char *buf;     /* caller storage of cap + 1 bytes */
	uint32_t cap;  /* longest accepted line, terminator excluded */
	uint32_t len;  /* bytes of the current line so far */
	bool overflow; /* current line reported too long: skipping to its end */
	bool saw_cr;   /* last byte seen was a CR (may precede LF) */
	bool ready;    /* previous call returned READY/TOO_LONG: reset on next */
	/* The current line's first octets (fewer while it is shorter), kept
	 * when it overflows too: what another protocol opens with shows here
	 * before any line end, which a TLS ClientHello may never send. */
	char head[SMTP_LINE_HEAD];
	uint8_t head_len;
};

void smtp_line_reader_init(struct smtp_line_reader *r, char *buf, uint32_t cap);

/*
 * Consume bytes from in[0..n), stopping right after the first line
 * terminator. *consumed is set to the number of bytes used (always n when
 * NEED_MORE is returned). On SMTP_LINE_READY the line, without its CRLF or
 * LF, is in r->buf[0..r->len) and NUL-terminated at r->buf[r->len]; it may
 * contain NUL bytes and 8-bit bytes (the caller decides). A CR not followed
 * by LF stays part of the line. The next call starts a new line.
 *
 * SMTP_LINE_TOO_LONG comes right after the octet that shows the line is
 * longer than cap (its first octet past cap; for a CR there, the octet
 * after it, which shows it is no CRLF), with nothing of the line in
 * r->buf; the calls that follow drop the rest of it up to and including
 * its LF, and go on with the next line. Where the input is split changes
 * neither what is reported nor after which octet.
 */
enum smtp_line_status smtp_line_feed(struct smtp_line_reader *r, const char *in, size_t n,
				     size_t *consumed);

/*
 * Does the current line (complete, over-long or still partial) open with a
 * TLS handshake record header, 0x16 0x03 0x00..0x04: a client starting TLS
 * without STARTTLS? False until three octets of the line have arrived.
 */
bool smtp_line_starts_tls(const struct smtp_line_reader *r);

/*
 * Is this whole line (without its CRLF) an HTTP request line: a method of
 * upper-case letters, '-' or '_' ("GET", "CONNECT", "PRI"), one space, a
 * request target without blanks, one space, and "HTTP/" digit "." digit at
 * the end? Meant for lines that are no SMTP command: "MAIL FROM:<a@b>
 * HTTP/1.1" has that shape too.
 */
bool smtp_line_is_http_request(const char *line, size_t len);

/* Octets of a line have been consumed and its end not yet (the rest of a
 * line reported too long counts too). */
bool smtp_line_pending(const struct smtp_line_reader *r);

/* ---- commands ----------------------------------------------------------- */

enum smtp_verb {
	SMTP_VERB_EMPTY = 0, /* blank line */
	SMTP_VERB_UNKNOWN,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_HELP,
	SMTP_VERB_ETRN,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
	SMTP_VERB_BDAT,
	SMTP_VERB_COUNT
};

struct smtp_command {
	enum smtp_verb verb;
	const char *arg; /* points into the line after the verb and its spaces; "" if none */
	size_t arg_len;  /* trailing spaces and tabs removed */
};

enum smtp_parse_status {
	SMTP_PARSE_OK = 0,
	SMTP_PARSE_NUL = -1,      /* line contains a NUL byte */
	SMTP_PARSE_SYNTAX = -2,   /* malformed argument */
	SMTP_PARSE_TOO_MANY = -3, /* more ESMTP parameters than SMTP_MAX_PARAMS */
};

/*
 * Split a line into verb and argument. Verbs are matched case-insensitively
 * and must be followed by end of line or a space (or tab); "MAILX" is
 * UNKNOWN. Returns SMTP_PARSE_OK or SMTP_PARSE_NUL (cmd->verb still set).
 */
int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd);

/* Printable name of a verb, upper case ("MAIL"); "" for EMPTY/UNKNOWN. */
const char *smtp_verb_name(enum smtp_verb verb);

#define SMTP_MAX_PARAMS 8

struct smtp_param {
	const char *key; /* e.g. "SIZE"; compare case-insensitively */
	size_t key_len;
	const char *value; /* NULL when the parameter has no "=value" */
	size_t value_len;
};

struct smtp_path_arg {
	const char *path; /* between the angle brackets; may be empty ("<>") */
	size_t path_len;
	struct smtp_param params[SMTP_MAX_PARAMS];
	unsigned nparams;
};

/*
 * Parse the argument of MAIL or RCPT: `keyword` is "FROM:" or "TO:"
 * (matched case-insensitively). Accepts "FROM:<a@b>", "FROM: <a@b>" (a
 * space after the colon, as many clients send), and ESMTP parameters
 * separated by spaces after the closing '>'. The path itself is not
 * validated here (see address.h); it must be enclosed in <> and contain no
 * '<', '>' or space outside a quoted local part.
 * Returns SMTP_PARSE_OK, SMTP_PARSE_SYNTAX or SMTP_PARSE_TOO_MANY.
 */
int smtp_parse_path_arg(const char *arg, size_t len, const char *keyword,
			struct smtp_path_arg *out);

/* ---- DATA body ---------------------------------------------------------- */

enum smtp_data_status {
	SMTP_DATA_NEED_MORE = 0, /* input consumed or output full; call again */
	SMTP_DATA_END,           /* CRLF.CRLF consumed; body complete */
};

struct smtp_data_decoder {
	uint8_t state;      /* private */
	uint32_t line_len;  /* octets in the current line so far, CRLF excluded */
	uint32_t max_line;  /* longest text line, CRLF excluded */
	uint64_t size;      /* decoded body octets so far (counted even when discarding) */
	uint64_t max_size;  /* body octets allowed */
	bool bare_lf;       /* a LF not preceded by CR was seen */
	bool bare_cr;       /* a CR not followed by LF was seen */
	bool nul;           /* a NUL octet was seen */
	bool line_too_long; /* some line exceeded max_line */
	bool too_big;       /* size passed max_size */
};

/* max_line excludes the CRLF (RFC 5321's 1000 octets include it: pass 998). */
void smtp_data_decoder_init(struct smtp_data_decoder *d, uint32_t max_line, uint64_t max_size);

/* True when any flag says the message must be refused at its end. */
bool smtp_data_rejected(const struct smtp_data_decoder *d);

/*
 * Decode in[0..n) into out[0..out_cap). The body produced has CRLF line
 * endings, leading dots unstuffed, and ends with the CRLF that preceded the
 * final "."; the "." line itself is not produced. Stops at the end of the
 * data, when the input is used up, or when out is full (then call again
 * with the rest of the input and a fresh out). *consumed and *produced are
 * always set. After smtp_data_rejected() becomes true, nothing more is
 * produced; the decoder keeps consuming until the end of the data.
 */
enum smtp_data_status smtp_data_decode(struct smtp_data_decoder *d, const char *in, size_t n,
				       size_t *consumed, char *out, size_t out_cap,
				       size_t *produced);

/* ---- the header section of a body ------------------------------------------ */

/* Counts the Received: fields (any case) of a message's header section,
 * fed the decoded body in any chunks; it stops looking at the first empty
 * line, so the body costs nothing. A count past the limit is a mail loop
 * (RFC 5321 6.3). */
struct smtp_header_scan {
	uint32_t received; /* Received: fields so far */
	uint32_t line_len; /* octets of the current line so far (saturating) */
	bool mismatch;     /* the current line does not start with "Received:" */
	bool first_cr;     /* the current line so far is a lone CR */
	bool done;         /* the empty line was seen */
};

void smtp_header_scan_feed(struct smtp_header_scan *h, const char *data, size_t len);

#endif
