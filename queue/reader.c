#include "queue/reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"

/* Where the header section in data[0..len) ends: just past its last header
 * line (0 when the body starts with the empty line), or -1 if the empty
 * line that ends it is not there yet. */
static long reader_headers_end(const char *data, size_t len)
{
	if (len >= 1 && (data[0] == '\n' || (len >= 2 && data[0] == '\r' && data[1] == '\n')))
		return 0;
	for (size_t i = 0; i + 1 < len; i++) {
		if (data[i] != '\n')
			continue;
		if (data[i + 1] == '\n' ||
		    (i + 2 < len && data[i + 1] == '\r' && data[i + 2] == '\n'))
			return (long)i + 1;
	}
	return -1;
}

static int reader_pread_all(int fd, char *dst, size_t want, uint64_t offset, const char *name,
			    char *why, size_t why_size)
{
	size_t got = 0;
	while (got < want) {
		ssize_t k = pread(fd, dst + got, want - got, (off_t)(offset + got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			int r = k < 0 ? -errno : -EIO;
			snprintf(why, why_size, "reading segments/%s: %s", name,
				 k < 0 ? strerror(errno) : "the file ends early");
			return r;
		}
		got += (size_t)k;
	}
	return 0;
}

int reader_headers(int segments_fd, const struct reader_extent *extents, size_t n, size_t max,
		   struct buf *out, char *why, size_t why_size)
{
	struct buf head = {0};
	int fd = -1, r = 0;
	const char *open_name = NULL;
	long end = -1;
	for (size_t i = 0; i < n && end < 0 && buf_len(&head) < max; i++) {
		const struct reader_extent *x = &extents[i];
		if (open_name == NULL || strcmp(open_name, x->segment) != 0) {
			if (fd >= 0)
				close(fd);
			fd = openat(segments_fd, x->segment, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				r = -errno;
				snprintf(why, why_size, "cannot open segments/%s: %s", x->segment,
					 strerror(errno));
				break;
			}
			open_name = x->segment;
		}
		size_t want = max - buf_len(&head);
		if (x->len < want)
			want = (size_t)x->len;
		if (want == 0)
			continue;
		char *dst = buf_extend(&head, want);
		if (dst == NULL) {
			r = -ENOMEM;
			snprintf(why, why_size, "out of memory");
			break;
		}
		r = reader_pread_all(fd, dst, want, x->offset, x->segment, why, why_size);
		if (r != 0)
			break;
		/* Rescanned whole: the empty line may straddle two extents. */
		end = reader_headers_end(buf_head(&head), buf_len(&head));
	}
	if (fd >= 0)
		close(fd);
	if (r == 0 &&
	    buf_append(out, buf_head(&head), end >= 0 ? (size_t)end : buf_len(&head)) != 0) {
		r = -ENOMEM;
		snprintf(why, why_size, "out of memory");
	}
	buf_release(&head);
	return r;
}
