/* xmsg: every message arrives once, in each sender's order, across threads. */
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/xmsg.h"

#define SENDERS    4
#define PER_SENDER 20000

struct test_msg {
	struct xmsg link;
	unsigned sender;
	unsigned seq;
};

static struct xmsg_inbox inbox;
static struct test_msg msgs[SENDERS][PER_SENDER];
static unsigned next_seq[SENDERS];
static unsigned received;
static bool out_of_order;

static void handle(struct xmsg *m)
{
	struct test_msg *t = (struct test_msg *)m;
	if (t->seq != next_seq[t->sender])
		out_of_order = true;
	next_seq[t->sender] = t->seq + 1;
	received++;
}

static void *sender(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;
	for (unsigned i = 0; i < PER_SENDER; i++) {
		msgs[id][i].sender = id;
		msgs[id][i].seq = i;
		xmsg_send(&inbox, &msgs[id][i].link, handle);
	}
	return NULL;
}

Test(xmsg, many_senders_one_receiver, .timeout = 60)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	cr_assert(fd >= 0);
	xmsg_inbox_init(&inbox, fd);
	pthread_t threads[SENDERS];
	for (unsigned i = 0; i < SENDERS; i++)
		pthread_create(&threads[i], NULL, sender, (void *)(uintptr_t)i);
	/* Sleep on the eventfd as a worker would: no message may be stranded
	 * without a wake-up. */
	while (received < SENDERS * PER_SENDER) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, 5000);
		cr_assert(r > 0, "no wake-up with %u of %u received", received,
			  SENDERS * PER_SENDER);
		uint64_t v;
		cr_assert_eq(read(fd, &v, sizeof(v)), (ssize_t)sizeof(v));
		xmsg_drain(&inbox);
	}
	for (unsigned i = 0; i < SENDERS; i++)
		pthread_join(threads[i], NULL);
	xmsg_drain(&inbox);
	cr_assert_eq(received, SENDERS * PER_SENDER);
	cr_assert(!out_of_order, "a sender's messages were reordered");
	close(fd);
}

Test(xmsg, drain_of_empty_inbox)
{
	xmsg_inbox_init(&inbox, -1);
	cr_assert_eq(xmsg_drain(&inbox), 0);
}
