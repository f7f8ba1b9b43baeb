/*
 * log — one line per event, `key=value` fields, to stderr or syslog.
 *
 *   log_event(LOG_INFO, "event=accepted session=%s queue_id=%s size=%zu", ...);
 *
 * Each line starts with ts=, level= and the caller's fields. Values that may
 * hold client-supplied text go through log_quote() so a hostile HELO name
 * cannot forge a log line.
 *
 * On a worker thread lines gather in a per-thread buffer that the worker
 * flushes once per loop turn (one write for many events); on any other
 * thread, or when the buffer is nearly full, a line is written at once.
 *
 * No client can fill the disk with lines about itself: on a worker thread,
 * info and debug lines that name a client (a `client=` field) count toward
 * that client's share, at most log_client_lines() of them a minute per
 * thread. Further ones are not written but counted, and once the client's
 * minute is over (or the thread ends) one line says how many:
 *
 *   event=log_suppressed client=192.0.2.7 suppressed=1234 window_s=60
 *
 * `event=accepted` lines (a message on disk: the trail operators follow),
 * `event=etrn` lines (each ETRN; their rate per client is limited by
 * [etrn] already) and warnings and errors are always written and not
 * counted. The state
 * is the thread's own (a session lives on one worker): no lock per line.
 */
#ifndef FERRY_CORE_LOG_H
#define FERRY_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

enum log_destination { LOG_TO_STDERR = 0, LOG_TO_SYSLOG };

/* Called once at start, before threads exist. */
void log_setup(enum log_level level, enum log_destination dest);

/* A new level ([log] level at a reload); any thread. */
void log_set_level(enum log_level level);

/* Lines a minute about one client, per worker thread (0: no limit, the
 * default). At start, or at a reload; any thread. */
void log_client_lines(unsigned per_minute);

#define LOG_CLIENT_WINDOW_MS 60000

void log_event(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* This thread buffers lines until log_flush() (worker threads). */
void log_thread_buffered(bool on);
void log_flush(void);

/*
 * Render untrusted text as a log value: printable ASCII is kept, '"' and
 * '\\' are backslash-escaped, control and 8-bit bytes become \xNN, and
 * the value is put in double quotes when it is empty or holds a space, a
 * '=', a '"', a '\\' or a byte that was escaped. Writes at most dst_size
 * bytes (NUL included), truncating long values with "...". Returns dst.
 */
char *log_quote(char *dst, size_t dst_size, const char *src, size_t len);

int log_level_parse(const char *text, enum log_level *out);
const char *log_level_name(enum log_level level);

#endif
