/*
 * reader — reading a stored message back from its segment files, for the
 * operator's views (ferryctl show, online and offline). Blocking preads:
 * never on a worker's loop.
 */
#ifndef FERRY_QUEUE_READER_H
#define FERRY_QUEUE_READER_H

#include <stddef.h>
#include <stdint.h>

struct buf;

/* One run of body bytes: in <spool>/segments/<segment>, at offset. */
struct reader_extent {
	const char *segment; /* file name, e.g. "w000-000000000001.seg" */
	uint64_t offset;
	uint64_t len;
};

/*
 * Append to out the header section of a message whose body is the extents
 * in order: everything up to (not including) the first empty line, or the
 * first `max` bytes if that comes first, or the whole body when it has no
 * empty line. Returns 0, or -errno with why set ("cannot open
 * segments/NAME: ...", "reading segments/NAME: the file ends early").
 */
int reader_headers(int segments_fd, const struct reader_extent *extents, size_t n, size_t max,
		   struct buf *out, char *why, size_t why_size);

#endif
