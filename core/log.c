#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_max_level = LOG_LEVEL_INFO;
static enum log_destination log_dest = LOG_TO_STDERR;

#define LOG_BUFFER_SIZE 65536
#define LOG_LINE_MAX    2048

static _Thread_local bool log_buffered;
static _Thread_local size_t log_buffer_len;
static _Thread_local char log_buffer[LOG_BUFFER_SIZE];

static const char *const log_names[] = {"error", "warn", "info", "debug"};

void log_setup(enum log_level level, enum log_destination dest)
{
	log_max_level = level;
	log_dest = dest;
	if (dest == LOG_TO_SYSLOG)
		openlog("ferryd", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

static bool log_enabled(enum log_level level)
{
	return level <= log_max_level;
}

static void log_write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(STDERR_FILENO, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere left to report it */
		}
		p += w;
		n -= (size_t)w;
	}
}

void log_flush(void)
{
	if (log_buffer_len > 0)
		log_write_all(log_buffer, log_buffer_len);
	log_buffer_len = 0;
}

void log_thread_buffered(bool on)
{
	if (!on)
		log_flush();
	log_buffered = on;
}

static void log_event_v(enum log_level level, const char *fmt, va_list ap)
{
	if (!log_enabled(level))
		return;
	char line[LOG_LINE_MAX];
	size_t n = 0;
	if (log_dest == LOG_TO_STDERR) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
	}
	n += (size_t)snprintf(line + n, sizeof(line) - n, "level=%s ", log_names[level]);
	int r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r < 0)
		return;
	n += (size_t)r;
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2; /* truncated: still one line */

	if (log_dest == LOG_TO_SYSLOG) {
		static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
		line[n] = '\0';
		syslog(prio[level], "%s", line);
		return;
	}
	line[n++] = '\n';
	if (!log_buffered) {
		log_write_all(line, n);
		return;
	}
	if (log_buffer_len + n > LOG_BUFFER_SIZE)
		log_flush();
	memcpy(log_buffer + log_buffer_len, line, n);
	log_buffer_len += n;
}

void log_event(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_event_v(level, fmt, ap);
	va_end(ap);
}

char *log_quote(char *dst, size_t dst_size, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	bool need_quotes = len == 0;
	for (size_t i = 0; i < len && !need_quotes; i++) {
		unsigned char c = (unsigned char)src[i];
		need_quotes = c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\';
	}
	if (dst_size < 8) {
		if (dst_size > 0)
			dst[0] = '\0';
		return dst;
	}
	size_t limit = dst_size - 5; /* room for `..."` and NUL */
	if (need_quotes)
		dst[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		char esc[4];
		size_t k = 0;
		if (c == '"' || c == '\\') {
			esc[k++] = '\\';
			esc[k++] = (char)c;
		} else if (c < ' ' || c >= 0x7f) {
			esc[k++] = '\\';
			esc[k++] = 'x';
			esc[k++] = hex[c >> 4];
			esc[k++] = hex[c & 15];
		} else {
			esc[k++] = (char)c;
		}
		if (o + k > limit) {
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(dst + o, esc, k);
		o += k;
	}
	if (need_quotes)
		dst[o++] = '"';
	dst[o] = '\0';
	return dst;
}

int log_level_parse(const char *text, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
		if (strcasecmp(text, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
	return log_names[level];
}
