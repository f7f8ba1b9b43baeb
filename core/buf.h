/*
 * buf — a growable byte buffer with a read offset: append at the end,
 * consume from the front. Used for per-connection output and for input
 * held back while a session waits. Storage is allocated on first use and
 * released by buf_release() so an idle session holds none.
 */
#ifndef FERRY_CORE_BUF_H
#define FERRY_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t start; /* first unconsumed byte */
	size_t end;   /* one past the last byte */
	size_t cap;
};

static inline size_t buf_len(const struct buf *b)
{
	return b->end - b->start;
}

static inline const char *buf_head(const struct buf *b)
{
	/* A buffer never written to has no storage: NULL + 0 is undefined. */
	return b->data != NULL ? b->data + b->start : b->data;
}

/* Returns 0 or -ENOMEM. */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Grow the buffer by len bytes at the end and return where they start
 * (uninitialised), or NULL on -ENOMEM. The pointer is valid until the next
 * call that may grow the buffer. */
void *buf_extend(struct buf *b, size_t len);

/* Drop len bytes from the front; an emptied buffer rewinds to offset 0. */
void buf_consume(struct buf *b, size_t len);

/* Empty, keeping the storage for what comes next. */
static inline void buf_clear(struct buf *b)
{
	b->start = b->end = 0;
}

/* Free the storage (the buffer must be empty or its content unwanted). */
void buf_release(struct buf *b);

#endif
