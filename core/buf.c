#include "core/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int buf_reserve(struct buf *b, size_t extra)
{
	if (b->end + extra <= b->cap)
		return 0;
	/* Slide the live bytes down before growing. */
	if (b->start > 0) {
		memmove(b->data, b->data + b->start, b->end - b->start);
		b->end -= b->start;
		b->start = 0;
		if (b->end + extra <= b->cap)
			return 0;
	}
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->end + extra)
		cap *= 2;
	char *data = realloc(b->data, cap);
	if (data == NULL)
		return -ENOMEM;
	b->data = data;
	b->cap = cap;
	return 0;
}

int buf_append(struct buf *b, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	if (buf_reserve(b, len) != 0)
		return -ENOMEM;
	memcpy(b->data + b->end, data, len);
	b->end += len;
	return 0;
}

void *buf_extend(struct buf *b, size_t len)
{
	if (buf_reserve(b, len) != 0)
		return NULL;
	void *p = b->data + b->end;
	b->end += len;
	return p;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char small[512];
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(small))
		return buf_append(b, small, (size_t)n);
	if (buf_reserve(b, (size_t)n + 1) != 0)
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(b->data + b->end, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->end += (size_t)n;
	return 0;
}

void buf_consume(struct buf *b, size_t len)
{
	b->start += len;
	if (b->start >= b->end)
		buf_clear(b);
}

void buf_release(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->start = b->end = b->cap = 0;
}
