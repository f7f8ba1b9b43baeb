/*
 * ferryctl_format — what every ferryctl view needs to read the admin
 * protocol's text (net/admin.h) and write for people or programs: lines
 * and fields, log_quote()d values, ages and sizes a person reads at a
 * glance, and a small JSON writer (one document, compact, on one line).
 *
 * Text that came from the spool or a client never reaches a terminal
 * as is: the protocol escapes it (log_quote: \xNN for octets outside
 * printable ASCII), and what is shown keeps those escapes, in the tables
 * and in JSON strings alike.
 */
#ifndef FERRY_TOOLS_FERRYCTL_FORMAT_H
#define FERRY_TOOLS_FERRYCTL_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CTL_OK    0
#define CTL_ERROR 1
#define CTL_USAGE 2

/* Where and how a view is written. */
struct ctl_output {
	FILE *out;
	bool json;      /* one JSON document instead of the table */
	int64_t now_ms; /* wall clock, for ages */
};

/* ---- reading the protocol's text ------------------------------------------ */

/* The next line of [*cursor, end), NUL-terminated in place; NULL at the
 * end. The text must be NUL-terminated one past end. */
char *ctl_next_line(char **cursor, char *end);

/*
 * Split a line into at most max fields at single spaces, in place. A field
 * that starts with '"' is a log_quote()d value and runs to its closing
 * quote (it may hold spaces). The last field takes the rest of the line.
 * Returns the number of fields.
 */
int ctl_split(char *line, char **fields, int max);

/* A log_quote()d value bare: its quotes dropped, \" and \\ undone (\xNN
 * stays: it stands for an octet a terminal must not get). In place. */
char *ctl_unquote(char *s);

bool ctl_number(const char *s, unsigned long long *out);
bool ctl_signed(const char *s, long long *out);

/* "ferryctl: unexpected line in the answer: ..." on stderr. */
void ctl_bad_line(const char *line);

/* "ferryctl: out of memory" on stderr; returns false. */
bool ctl_out_of_memory(void);

/* ---- for people ------------------------------------------------------------ */

/* Text from the spool made safe for a terminal: control characters
 * (escape sequences!) shown as \xNN. */
void ctl_put_safe(const char *s, size_t len, FILE *out);
bool ctl_safe_text(const char *s);

/* "3s", "12m", "5h", "2d" since then_ms; "-" for no time at all. */
const char *ctl_age(char *out, size_t size, int64_t now_ms, long long then_ms);
/* The same for a number of seconds. */
const char *ctl_seconds(char *out, size_t size, double seconds);

/* "412B", "1.2KiB", "56KiB", "3.4MiB", "1.0GiB": octets in at most six
 * characters, no space (a column stays one field). */
const char *ctl_size(char *out, size_t size, unsigned long long octets);

/* "0.8ms", "12ms", "1.4s": a latency. */
const char *ctl_latency(char *out, size_t size, double seconds);

/* Cut s to at most max columns, marking the cut with "...". In place. */
char *ctl_truncate(char *s, size_t max);

/* Columns of the terminal out writes to; 0 when it is not one (a pipe
 * or a file gets whole lines: grep wants all of a reply). */
size_t ctl_terminal_columns(FILE *out);

/* Decimal digits of v. */
int ctl_width(unsigned long long v);

static inline int ctl_max(int a, int b)
{
	return a > b ? a : b;
}

/* ---- JSON ----------------------------------------------------------------- */

#define CTL_JSON_DEPTH 16

struct ctl_json {
	FILE *out;
	unsigned depth;
	bool comma[CTL_JSON_DEPTH]; /* a member was written at this depth */
};

/*
 * The writer: ctl_json_open() the document's object, then members (key
 * given inside an object, NULL inside an array), then ctl_json_close()
 * every object and array opened, and ctl_json_end() (the line's end).
 * Strings are written as given, escaped as JSON wants; ctl_json_bytes
 * takes octets that may not be UTF-8 (a message's header section): an
 * octet that does not begin a valid UTF-8 sequence becomes U+FFFD.
 */
void ctl_json_start(struct ctl_json *j, FILE *out);
void ctl_json_open(struct ctl_json *j, const char *key, char bracket);
void ctl_json_close(struct ctl_json *j, char bracket);
void ctl_json_string(struct ctl_json *j, const char *key, const char *value); /* NULL: null */
void ctl_json_bytes(struct ctl_json *j, const char *key, const char *value, size_t len);
void ctl_json_uint(struct ctl_json *j, const char *key, unsigned long long value);
void ctl_json_int(struct ctl_json *j, const char *key, long long value);
void ctl_json_double(struct ctl_json *j, const char *key, double value); /* NaN: null */
void ctl_json_bool(struct ctl_json *j, const char *key, bool value);
void ctl_json_end(struct ctl_json *j);

#endif
