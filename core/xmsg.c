#include "core/xmsg.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

void xmsg_inbox_init(struct xmsg_inbox *in, int wake_fd)
{
	atomic_init(&in->head, NULL);
	in->wake_fd = wake_fd;
}

int xmsg_send(struct xmsg_inbox *in, struct xmsg *msg, xmsg_fn *handle)
{
	msg->handle = handle;
	struct xmsg *old = atomic_load_explicit(&in->head, memory_order_relaxed);
	do {
		msg->next = old;
	} while (!atomic_compare_exchange_weak_explicit(&in->head, &old, msg, memory_order_release,
							memory_order_relaxed));
	if (old != NULL || in->wake_fd < 0)
		return 0; /* the owner has a wake-up coming already */
	uint64_t one = 1;
	for (;;) {
		ssize_t n = write(in->wake_fd, &one, sizeof(one));
		if (n == (ssize_t)sizeof(one) || (n < 0 && errno == EAGAIN))
			return 0; /* EAGAIN: counter saturated, a wake-up is pending */
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

unsigned xmsg_drain(struct xmsg_inbox *in)
{
	struct xmsg *list = atomic_exchange_explicit(&in->head, NULL, memory_order_acquire);
	/* The stack is newest first: reverse it to keep each sender's order. */
	struct xmsg *fifo = NULL;
	while (list != NULL) {
		struct xmsg *next = list->next;
		list->next = fifo;
		fifo = list;
		list = next;
	}
	unsigned n = 0;
	while (fifo != NULL) {
		struct xmsg *next = fifo->next;
		fifo->handle(fifo);
		fifo = next;
		n++;
	}
	return n;
}
