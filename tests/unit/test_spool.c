/* spool: the one-file-per-message store behind queue.h, on a real ring and
 * a real directory. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/worker.h"
#include "queue/queue.h"

static struct worker w;
static struct queue *q;
static char spool[256];

struct test_client {
	struct queue_client base;
	int committed;
	int status;
	int resumed;
};

static void on_committed(struct queue_client *c, int status)
{
	struct test_client *t = (struct test_client *)c;
	t->committed++;
	t->status = status;
}

static void on_resume(struct queue_client *c)
{
	((struct test_client *)c)->resumed++;
}

static void setup(void)
{
	snprintf(spool, sizeof(spool), "/tmp/ferry-test-spool-XXXXXX");
	cr_assert_not_null(mkdtemp(spool));
	strcat(spool, "/deep/spool"); /* queue_open creates missing parents */
	memset(&w, 0, sizeof(w));
	cr_assert_eq(io_uring_queue_init(256, &w.ring, 0), 0);
	w.now_ms = worker_clock_ms();
	timer_wheel_init(&w.timers, w.now_ms);
	struct queue_config qc = {.spool_dir = spool, .worker_index = 3};
	cr_assert_eq(queue_open(&q, &w, &qc), 0);
}

static void teardown(void)
{
	queue_close(q);
	io_uring_queue_exit(&w.ring);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%.*s'", (int)(strlen(spool) - strlen("/deep/spool")),
		 spool);
	system(cmd);
}

TestSuite(spool, .init = setup, .fini = teardown, .timeout = 30);

/* One worker loop turn, as core/worker.c runs it. */
static void pump_once(void)
{
	queue_flush(q);
	struct io_uring_cqe *cqe;
	io_uring_submit_and_wait(&w.ring, 1);
	unsigned head, seen = 0;
	io_uring_for_each_cqe(&w.ring, head, cqe)
	{
		struct worker_op *op = io_uring_cqe_get_data(cqe);
		seen++;
		if (op != NULL)
			op->complete(op, cqe);
	}
	io_uring_cq_advance(&w.ring, seen);
}

static void pump_until_idle(void)
{
	for (int i = 0; i < 1000 && queue_pending(q) > 0; i++)
		pump_once();
}

static const struct queue_recipient rcpts[] = {{"b@relay.example", 15}, {"c@relay.example", 15}};
static const struct queue_param params[] = {{"SIZE=42", 7}};

static struct queue_envelope envelope(void)
{
	struct queue_envelope env = {
		.sender = "a@client.example",
		.sender_len = 16,
		.recipients = rcpts,
		.nrecipients = 2,
		.params = params,
		.nparams = 1,
		.client_address = "192.0.2.7",
		.helo = "client.example",
	};
	clock_gettime(CLOCK_REALTIME, &env.arrival);
	return env;
}

static char *read_message(const char *id, size_t *len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/messages/%s", spool, id);
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	static char data[4 << 20];
	*len = fread(data, 1, sizeof(data) - 1, f);
	data[*len] = '\0';
	fclose(f);
	return data;
}

static unsigned count_messages(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/messages", spool);
	DIR *d = opendir(path);
	unsigned n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

Test(spool, commit_is_reported_only_after_the_sync)
{
	struct test_client c = {{on_resume, on_committed}, 0, 0, 0};
	struct queue_envelope env = envelope();
	struct queue_message *m;
	cr_assert_eq(queue_message_begin(q, &c.base, &env, &m), 0);
	char id[QUEUE_ID_LEN + 1];
	strcpy(id, queue_message_id(m));
	cr_assert_eq(strlen(id), QUEUE_ID_LEN);
	cr_assert_eq(queue_message_write(m, "Subject: x\r\n\r\nhello\r\n", 21), 0);
	queue_message_commit(m);
	cr_assert_eq(c.committed, 0, "committed() called from inside commit()");
	cr_assert_eq(queue_pending(q), 1);
	pump_until_idle();
	cr_assert_eq(c.committed, 1);
	cr_assert_eq(c.status, 0);
	cr_assert_eq(queue_pending(q), 0);

	size_t len;
	char *data = read_message(id, &len);
	cr_assert_not_null(data);
	cr_assert(strncmp(data, "ferry-spool 1\n", 14) == 0);
	cr_assert(strstr(data, "sender a@client.example\n") != NULL);
	cr_assert(strstr(data, "rcpt b@relay.example\nrcpt c@relay.example\n") != NULL);
	cr_assert(strstr(data, "param SIZE=42\n") != NULL);
	cr_assert(strstr(data, "client 192.0.2.7\n") != NULL);
	cr_assert(strstr(data, "body\nSubject: x\r\n\r\nhello\r\n\nferry-commit "
			       "00000000000000000021\n") != NULL,
		  "%s", data);
}

Test(spool, abort_leaves_nothing)
{
	struct test_client c = {{on_resume, on_committed}, 0, 0, 0};
	struct queue_envelope env = envelope();
	struct queue_message *m;
	cr_assert_eq(queue_message_begin(q, &c.base, &env, &m), 0);
	queue_message_write(m, "x", 1);
	queue_message_abort(m);
	pump_until_idle();
	cr_assert_eq(c.committed, 0);
	cr_assert_eq(count_messages(), 0);
	cr_assert_eq(queue_pending(q), 0);
}

Test(spool, large_body_streams_with_backpressure)
{
	struct test_client c = {{on_resume, on_committed}, 0, 0, 0};
	struct queue_envelope env = envelope();
	struct queue_message *m;
	cr_assert_eq(queue_message_begin(q, &c.base, &env, &m), 0);
	char id[QUEUE_ID_LEN + 1];
	strcpy(id, queue_message_id(m));
	char chunk[16384];
	memset(chunk, 'a', sizeof(chunk));
	size_t total = 0;
	int paused = 0;
	for (int i = 0; i < 128; i++) { /* 2 MiB */
		int r = queue_message_write(m, chunk, sizeof(chunk));
		cr_assert(r >= 0);
		total += sizeof(chunk);
		if (r == 1) {
			paused++;
			int before = c.resumed;
			for (int k = 0; k < 100 && c.resumed == before; k++)
				pump_once();
			cr_assert_gt(c.resumed, before, "no resume() after a pause");
		}
	}
	cr_assert_gt(paused, 0, "2 MiB never crossed the high-water mark");
	queue_message_commit(m);
	pump_until_idle();
	cr_assert_eq(c.status, 0);
	size_t len;
	char *data = read_message(id, &len);
	char trailer[64];
	snprintf(trailer, sizeof(trailer), "\nferry-commit %020zu\n", total);
	cr_assert(len > total);
	cr_assert_str_eq(data + len - strlen(trailer), trailer);
}

Test(spool, detached_message_still_becomes_durable)
{
	struct test_client c = {{on_resume, on_committed}, 0, 0, 0};
	struct queue_envelope env = envelope();
	struct queue_message *m;
	cr_assert_eq(queue_message_begin(q, &c.base, &env, &m), 0);
	char id[QUEUE_ID_LEN + 1];
	strcpy(id, queue_message_id(m));
	queue_message_write(m, "body\r\n", 6);
	queue_message_commit(m);
	queue_message_detach(m); /* the client hung up */
	pump_until_idle();
	cr_assert_eq(c.committed, 0, "a detached client was called");
	size_t len;
	cr_assert_not_null(read_message(id, &len));
	cr_assert(strstr(read_message(id, &len), "ferry-commit") != NULL);
}

Test(spool, ids_are_unique)
{
	struct test_client c = {{on_resume, on_committed}, 0, 0, 0};
	struct queue_envelope env = envelope();
	static char ids[5000][QUEUE_ID_LEN + 1];
	for (int i = 0; i < 5000; i++) {
		struct queue_message *m;
		cr_assert_eq(queue_message_begin(q, &c.base, &env, &m), 0);
		strcpy(ids[i], queue_message_id(m));
		for (const char *p = ids[i]; *p; p++)
			cr_assert(strchr("0123456789BCDFGHJKLMNPQRSTVWXYZA", *p) != NULL);
		queue_message_abort(m);
	}
	pump_until_idle();
	for (int i = 0; i < 5000; i++)
		for (int j = i + 1; j < 5000 && j < i + 64; j++)
			cr_assert_str_neq(ids[i], ids[j]);
	cr_assert_eq(count_messages(), 0);
}

Test(spool, unwritable_spool_is_an_error)
{
	struct queue *other;
	struct queue_config qc = {.spool_dir = "/proc/ferry-cannot-exist", .worker_index = 0};
	cr_assert_lt(queue_open(&other, &w, &qc), 0);
}
