#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* The level and the per-client limit change at a reload, while workers
 * log: read and written relaxed (a line or two either side of the
 * change is fine). */
static _Atomic int log_max_level = LOG_LEVEL_INFO;
static enum log_destination log_dest = LOG_TO_STDERR;
static _Atomic unsigned log_client_limit; /* lines a minute per client per thread; 0: none */

#define LOG_BUFFER_SIZE 65536
#define LOG_LINE_MAX    2048

static _Thread_local bool log_buffered;
static _Thread_local size_t log_buffer_len;
static _Thread_local char log_buffer[LOG_BUFFER_SIZE];

static const char *const log_names[] = {"error", "warn", "info", "debug"};

/* ---- each client's share of a thread's lines ------------------------------- */

#define LOG_CLIENT_SETS 256 /* a power of two */
#define LOG_CLIENT_WAYS 4
#define LOG_CLIENT_TEXT 64 /* an address as the lines give it */
#define LOG_SWEEP_MS    1000

struct log_client {
	uint64_t hash; /* 0: a free entry */
	uint64_t since_ms;
	uint32_t lines;      /* written in this minute */
	uint32_t suppressed; /* not written */
	uint8_t len;
	char text[LOG_CLIENT_TEXT];
};

/* A worker thread's clients, made when it first logs about one: threads
 * that never do (the main thread, the admin's) carry nothing. */
struct log_clients {
	uint64_t next_sweep_ms;
	struct log_client entries[LOG_CLIENT_SETS * LOG_CLIENT_WAYS];
};

static _Thread_local struct log_clients *log_clients;

void log_setup(enum log_level level, enum log_destination dest)
{
	log_set_level(level);
	log_dest = dest;
	if (dest == LOG_TO_SYSLOG)
		openlog("ferryd", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void log_set_level(enum log_level level)
{
	atomic_store_explicit(&log_max_level, (int)level, memory_order_relaxed);
}

void log_client_lines(unsigned per_minute)
{
	atomic_store_explicit(&log_client_limit, per_minute, memory_order_relaxed);
}

static unsigned log_client_max(void)
{
	return atomic_load_explicit(&log_client_limit, memory_order_relaxed);
}

static bool log_enabled(enum log_level level)
{
	return (int)level <= atomic_load_explicit(&log_max_level, memory_order_relaxed);
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

static void log_buffer_out(void)
{
	if (log_buffer_len > 0)
		log_write_all(log_buffer, log_buffer_len);
	log_buffer_len = 0;
}

/* Format and write (or buffer) one line; no client accounting. */
static void log_line_v(enum log_level level, const char *fmt, va_list ap, bool counted);

static void log_line(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_line_v(level, fmt, ap, false);
	va_end(ap);
}

static uint64_t log_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Say what a client's minute left out, and forget the client. */
static void log_client_end(struct log_client *c)
{
	if (c->suppressed > 0)
		log_line(LOG_LEVEL_INFO,
			 "event=log_suppressed client=%.*s suppressed=%u window_s=%u", (int)c->len,
			 c->text, c->suppressed, LOG_CLIENT_WINDOW_MS / 1000);
	c->hash = 0;
}

/* Clients whose minute is over (all of them: the thread ends). */
static void log_clients_sweep(bool all)
{
	uint64_t now = log_clock_ms();
	if (log_clients == NULL || (!all && now < log_clients->next_sweep_ms))
		return;
	log_clients->next_sweep_ms = now + LOG_SWEEP_MS;
	for (size_t i = 0; i < LOG_CLIENT_SETS * LOG_CLIENT_WAYS; i++) {
		struct log_client *c = &log_clients->entries[i];
		if (c->hash != 0 && (all || now - c->since_ms >= LOG_CLIENT_WINDOW_MS))
			log_client_end(c);
	}
}

static uint64_t log_client_hash(const char *text, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)text[i]) * 0x100000001b3ull;
	return h != 0 ? h : 1;
}

/* The client a line's fields name, unless the line is one always written
 * (a message accepted; an ETRN, which [etrn] limits per client itself).
 * false: none. */
static bool log_client_of(const char *fields, const char **text, size_t *len)
{
	if (strncmp(fields, "event=accepted ", 15) == 0 || strncmp(fields, "event=etrn ", 11) == 0)
		return false;
	const char *p = strstr(fields, " client=");
	if (p == NULL)
		return false;
	p += 8;
	size_t n = p[0] == '"' ? strcspn(p + 1, "\"") + 2 : strcspn(p, " \n");
	size_t rest = strlen(p);
	if (n > rest) /* a quoted value cut short with the line */
		n = rest;
	if (n == 0)
		return false;
	*text = p;
	*len = n < LOG_CLIENT_TEXT ? n : LOG_CLIENT_TEXT;
	return true;
}

/* May one more line about this client be written now? */
static bool log_client_allows(const char *text, size_t len)
{
	if (log_clients == NULL) {
		log_clients = calloc(1, sizeof(*log_clients));
		if (log_clients == NULL)
			return true; /* better a long log than a lost line */
	}
	uint64_t now = log_clock_ms();
	uint64_t h = log_client_hash(text, len);
	struct log_client *set =
		&log_clients->entries[(h & (LOG_CLIENT_SETS - 1)) * LOG_CLIENT_WAYS];
	struct log_client *c = NULL, *oldest = &set[0];
	for (unsigned i = 0; i < LOG_CLIENT_WAYS && c == NULL; i++) {
		if (set[i].hash == h && set[i].len == len && memcmp(set[i].text, text, len) == 0)
			c = &set[i];
		else if (set[i].hash == 0 ||
			 (oldest->hash != 0 && set[i].since_ms < oldest->since_ms))
			oldest = &set[i];
	}
	if (c != NULL && now - c->since_ms >= LOG_CLIENT_WINDOW_MS)
		log_client_end(c); /* its minute is over: a new one begins */
	if (c == NULL || c->hash == 0) {
		if (c == NULL) {
			c = oldest;
			if (c->hash != 0)
				log_client_end(c); /* forgotten for a newcomer: said first */
		}
		*c = (struct log_client){.hash = h, .since_ms = now, .len = (uint8_t)len};
		memcpy(c->text, text, len);
	}
	if (c->lines < log_client_max()) {
		c->lines++;
		return true;
	}
	c->suppressed++;
	return false;
}

void log_flush(void)
{
	log_clients_sweep(false);
	log_buffer_out();
}

void log_thread_buffered(bool on)
{
	if (!on) {
		log_clients_sweep(true);
		log_buffer_out();
		free(log_clients);
		log_clients = NULL;
	}
	log_buffered = on;
}

static void log_line_v(enum log_level level, const char *fmt, va_list ap, bool counted)
{
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
	size_t fields = n;
	int r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r < 0)
		return;
	n += (size_t)r;
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2; /* truncated: still one line */
	line[n] = '\0';

	const char *client;
	size_t client_len;
	if (counted && level >= LOG_LEVEL_INFO &&
	    log_client_of(line + fields, &client, &client_len) &&
	    !log_client_allows(client, client_len))
		return;

	if (log_dest == LOG_TO_SYSLOG) {
		static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
		syslog(prio[level], "%s", line);
		return;
	}
	line[n++] = '\n';
	if (!log_buffered) {
		log_write_all(line, n);
		return;
	}
	if (log_buffer_len + n > LOG_BUFFER_SIZE)
		log_buffer_out();
	memcpy(log_buffer + log_buffer_len, line, n);
	log_buffer_len += n;
}

void log_event(enum log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	va_list ap;
	va_start(ap, fmt);
	/* Only a worker's lines are counted per client: sessions live there. */
	log_line_v(level, fmt, ap, log_buffered && log_client_max() > 0);
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
