/*
 * ferryctl_format — reading the admin protocol's text and writing it for
 * people and for programs (see ferryctl_format.h).
 */
#include "tools/ferryctl_format.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ---- reading the protocol's text -------------------------------------------- */

char *ctl_next_line(char **cursor, char *end)
{
	if (*cursor >= end)
		return NULL;
	char *line = *cursor;
	char *nl = memchr(line, '\n', (size_t)(end - line));
	if (nl == NULL) {
		*cursor = end; /* the NUL one past end ends it */
		return line;
	}
	*nl = '\0';
	*cursor = nl + 1;
	return line;
}

int ctl_split(char *line, char **fields, int max)
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

char *ctl_unquote(char *s)
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

bool ctl_number(const char *s, unsigned long long *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return *end == '\0' && errno == 0;
}

bool ctl_signed(const char *s, long long *out)
{
	char *end;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return *s != '\0' && *end == '\0' && errno == 0;
}

void ctl_bad_line(const char *line)
{
	fprintf(stderr, "ferryctl: unexpected line in the answer: ");
	ctl_put_safe(line, strlen(line), stderr);
	fputc('\n', stderr);
}

bool ctl_out_of_memory(void)
{
	fprintf(stderr, "ferryctl: out of memory\n");
	return false;
}

/* ---- for people ----------------------------------------------------------------- */

void ctl_put_safe(const char *s, size_t len, FILE *out)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			fprintf(out, "\\x%02x", c);
		else
			putc(c, out);
	}
}

bool ctl_safe_text(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return false;
	return true;
}

const char *ctl_seconds(char *out, size_t size, double seconds)
{
	long long s = seconds > 0 ? (long long)seconds : 0;
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

const char *ctl_age(char *out, size_t size, int64_t now_ms, long long then_ms)
{
	if (then_ms <= 0) {
		snprintf(out, size, "-");
		return out;
	}
	return ctl_seconds(out, size, (double)((now_ms - then_ms) / 1000));
}

const char *ctl_size(char *out, size_t size, unsigned long long octets)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
	if (octets < 1024) {
		snprintf(out, size, "%lluB", octets);
		return out;
	}
	double v = (double)octets / 1024;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	/* One decimal below 10, none above: "1.2KiB", "56KiB". */
	if (v < 9.95)
		snprintf(out, size, "%.1f%s", v, units[u]);
	else
		snprintf(out, size, "%.0f%s", v, units[u]);
	return out;
}

const char *ctl_latency(char *out, size_t size, double seconds)
{
	if (isnan(seconds))
		snprintf(out, size, "-");
	else if (seconds < 0.01)
		snprintf(out, size, "%.1fms", seconds * 1000);
	else if (seconds < 1)
		snprintf(out, size, "%.0fms", seconds * 1000);
	else
		snprintf(out, size, "%.1fs", seconds);
	return out;
}

char *ctl_truncate(char *s, size_t max)
{
	if (strlen(s) > max && max > 3)
		memcpy(s + max - 3, "...", 4);
	return s;
}

size_t ctl_terminal_columns(FILE *out)
{
	struct winsize ws;
	if (!isatty(fileno(out)) || ioctl(fileno(out), TIOCGWINSZ, &ws) != 0)
		return 0;
	return ws.ws_col;
}

int ctl_width(unsigned long long v)
{
	int w = 1;
	while (v >= 10) {
		v /= 10;
		w++;
	}
	return w;
}

/* ---- JSON ------------------------------------------------------------------------- */

void ctl_json_start(struct ctl_json *j, FILE *out)
{
	memset(j, 0, sizeof(*j));
	j->out = out;
}

static void ctl_json_put_string(FILE *out, const char *s, size_t len, bool utf8_check);

/* The comma before a member, and its key. */
static void ctl_json_member(struct ctl_json *j, const char *key)
{
	if (j->comma[j->depth])
		fputc(',', j->out);
	j->comma[j->depth] = true;
	if (key != NULL) {
		ctl_json_put_string(j->out, key, strlen(key), false);
		fputc(':', j->out);
	}
}

void ctl_json_open(struct ctl_json *j, const char *key, char bracket)
{
	ctl_json_member(j, key);
	fputc(bracket, j->out);
	if (j->depth + 1 < CTL_JSON_DEPTH)
		j->depth++;
	j->comma[j->depth] = false;
}

void ctl_json_close(struct ctl_json *j, char bracket)
{
	fputc(bracket == '{' || bracket == '}' ? '}' : ']', j->out);
	if (j->depth > 0)
		j->depth--;
}

/* Length of the valid UTF-8 sequence at s (at most len octets), 0 when
 * there is none (overlong forms, surrogates and values past U+10FFFF are
 * not valid). */
static size_t ctl_utf8_sequence(const unsigned char *s, size_t len)
{
	unsigned char c = s[0];
	size_t n;
	unsigned long cp;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n > len)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static void ctl_json_put_string(FILE *out, const char *s, size_t len, bool utf8_check)
{
	fputc('"', out);
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			fputc('\\', out);
			fputc(c, out);
		} else if (c == '\n') {
			fputs("\\n", out);
		} else if (c == '\r') {
			fputs("\\r", out);
		} else if (c == '\t') {
			fputs("\\t", out);
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(out, "\\u%04x", c);
		} else if (c < 0x80) {
			fputc(c, out);
		} else {
			size_t n = utf8_check ? ctl_utf8_sequence(p + i, len - i) : 1;
			if (n == 0) {
				fputs("\\ufffd", out);
				continue;
			}
			fwrite(p + i, 1, n, out);
			i += n - 1;
		}
	}
	fputc('"', out);
}

void ctl_json_string(struct ctl_json *j, const char *key, const char *value)
{
	ctl_json_member(j, key);
	if (value == NULL)
		fputs("null", j->out);
	else
		ctl_json_put_string(j->out, value, strlen(value), true);
}

void ctl_json_bytes(struct ctl_json *j, const char *key, const char *value, size_t len)
{
	ctl_json_member(j, key);
	ctl_json_put_string(j->out, value, len, true);
}

void ctl_json_uint(struct ctl_json *j, const char *key, unsigned long long value)
{
	ctl_json_member(j, key);
	fprintf(j->out, "%llu", value);
}

void ctl_json_int(struct ctl_json *j, const char *key, long long value)
{
	ctl_json_member(j, key);
	fprintf(j->out, "%lld", value);
}

void ctl_json_double(struct ctl_json *j, const char *key, double value)
{
	ctl_json_member(j, key);
	if (isnan(value) || isinf(value))
		fputs("null", j->out);
	else if (value == floor(value) && fabs(value) < 1e15)
		fprintf(j->out, "%.0f", value);
	else
		fprintf(j->out, "%.6g", value);
}

void ctl_json_bool(struct ctl_json *j, const char *key, bool value)
{
	ctl_json_member(j, key);
	fputs(value ? "true" : "false", j->out);
}

void ctl_json_end(struct ctl_json *j)
{
	fputc('\n', j->out);
}
