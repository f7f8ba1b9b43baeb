/*
 * spool — the first implementation of queue.h: one file per message.
 *
 * A message is written to spool/messages/<queue id> as it streams in, in
 * chunks, through the worker's ring. Commit waits for the chunk writes in
 * flight, then submits the last chunk (with the commit trailer) linked to
 * an fdatasync of the file, so the sync cannot overtake the write. A synced
 * file's directory entry is made durable by one fsync of the directory per
 * loop turn, shared by every message synced in that turn; only after that
 * does the session hear "committed" and send 250.
 *
 * File format (temporary: the segment store replaces it):
 *
 *   ferry-spool 1\n  id ID\n  arrival SEC.NSEC\n  client ADDR\n  helo NAME\n
 *   sender ADDR\n  param TEXT\n*  rcpt ADDR\n+  body\n
 *   <body octets, CRLF lines, Received header first>
 *   \nferry-commit <body length, 20 digits>\n
 *
 * A file without its trailer was never acknowledged.
 */
#include "queue/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/worker.h"

#define SPOOL_CHUNK      65536       /* bytes per write */
#define SPOOL_HIGH_WATER (4 * 65536) /* ask the session to pause above this */
#define SPOOL_LOW_WATER  65536

struct spool_write {
	struct worker_op op;
	struct queue_message *message;
	size_t len;
	bool final; /* linked to the fdatasync */
	char data[];
};

enum spool_state {
	SPOOL_WRITING,    /* body streaming in */
	SPOOL_COMMITTING, /* waiting for earlier writes, then the final write + sync */
	SPOOL_SYNCING,    /* final write + fdatasync in flight */
	SPOOL_DIR_WAIT,   /* file synced; waiting for the directory sync */
	SPOOL_ABORTED,    /* thrown away; freed when its writes land */
};

struct queue_message {
	struct queue *queue;
	struct queue_client *client; /* NULL once detached */
	char id[QUEUE_ID_LEN + 1];
	int fd;
	enum spool_state state;
	int error;
	struct buf pending; /* bytes not yet submitted */
	uint64_t offset;    /* file offset of the next write */
	uint64_t body_len;
	unsigned writes_inflight;
	size_t bytes_inflight;
	bool paused_client; /* write() returned 1: resume() owed */
	struct worker_op sync_op;
	struct queue_message *next; /* directory-sync lists */
};

struct queue {
	struct worker *worker;
	int dir_fd; /* spool/messages */
	uint32_t worker_index;
	uint32_t counter;
	unsigned pending;
	/* synced files waiting for a directory sync, and the batch in flight */
	struct queue_message *dir_wait, *dir_batch;
	bool dir_sync_inflight;
	struct worker_op dir_sync_op;
};

static void spool_dir_synced(struct worker_op *op, const struct io_uring_cqe *cqe);
static void spool_write_done(struct worker_op *op, const struct io_uring_cqe *cqe);
static void spool_file_synced(struct worker_op *op, const struct io_uring_cqe *cqe);

static int spool_mkdir(const char *path)
{
	if (mkdir(path, 0750) == 0 || errno == EEXIST)
		return 0;
	return -errno;
}

/* mkdir -p for the spool directory itself. */
static int spool_mkdirs(const char *path)
{
	char tmp[4096];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, len + 1);
	for (size_t i = 1; i < len; i++) {
		if (tmp[i] != '/')
			continue;
		tmp[i] = '\0';
		int r = spool_mkdir(tmp);
		tmp[i] = '/';
		if (r != 0)
			return r;
	}
	return spool_mkdir(tmp);
}

int queue_open(struct queue **out, struct worker *w, const struct queue_config *cfg)
{
	char path[4200];
	int r = spool_mkdirs(cfg->spool_dir);
	if (r != 0)
		return r;
	snprintf(path, sizeof(path), "%s/messages", cfg->spool_dir);
	r = spool_mkdir(path);
	if (r != 0)
		return r;
	struct queue *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	q->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (q->dir_fd < 0) {
		r = -errno;
		free(q);
		return r;
	}
	q->worker = w;
	q->worker_index = cfg->worker_index;
	q->dir_sync_op.complete = spool_dir_synced;
	*out = q;
	return 0;
}

void queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	close(q->dir_fd);
	free(q);
}

unsigned queue_pending(const struct queue *q)
{
	return q->pending;
}

/* 80 bits -> 16 Crockford base32 characters: seconds (34 bits), micro-
 * seconds (20), worker (8), counter (18). Sorts by arrival time. */
static void spool_make_id(struct queue *q, char id[QUEUE_ID_LEN + 1])
{
	static const char alphabet[] = "0123456789BCDFGHJKLMNPQRSTVWXYZA";
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t hi = ((uint64_t)ts.tv_sec & ((UINT64_C(1) << 34) - 1)) << 20 |
		      (uint64_t)(ts.tv_nsec / 1000);
	uint32_t lo = (q->worker_index & 0xff) << 18 | (q->counter++ & 0x3ffff);
	/* 54 bits of hi and 26 of lo make 80 bits: 16 groups of 5. */
	unsigned __int128 v = ((unsigned __int128)hi << 26) | lo;
	for (int i = QUEUE_ID_LEN - 1; i >= 0; i--) {
		id[i] = alphabet[(unsigned)(v & 31)];
		v >>= 5;
	}
	id[QUEUE_ID_LEN] = '\0';
}

static void spool_message_free(struct queue_message *m)
{
	buf_release(&m->pending);
	m->queue->pending--;
	free(m);
}

/* Close the file without a syscall on this thread: the ring does it. */
static void spool_close_fd(struct queue *q, int fd)
{
	struct io_uring_sqe *sqe = worker_sqe(q->worker);
	io_uring_prep_close(sqe, fd);
	worker_sqe_set_op(sqe, NULL);
}

/* Forget a message that will never be acknowledged: its file goes. */
static void spool_discard(struct queue_message *m)
{
	unlinkat(m->queue->dir_fd, m->id, 0);
	spool_close_fd(m->queue, m->fd);
	spool_message_free(m);
}

static int spool_write_header(struct queue_message *m, const struct queue_envelope *env)
{
	struct buf *b = &m->pending;
	int r = buf_printf(b, "ferry-spool 1\nid %s\narrival %lld.%09ld\nclient %s\nhelo %s\n",
			   m->id, (long long)env->arrival.tv_sec, env->arrival.tv_nsec,
			   env->client_address, env->helo);
	r |= buf_printf(b, "sender %.*s\n", (int)env->sender_len, env->sender);
	for (unsigned i = 0; i < env->nparams; i++)
		r |= buf_printf(b, "param %.*s\n", (int)env->params[i].len, env->params[i].text);
	for (unsigned i = 0; i < env->nrecipients; i++)
		r |= buf_printf(b, "rcpt %.*s\n", (int)env->recipients[i].len,
				env->recipients[i].address);
	r |= buf_append(b, "body\n", 5);
	return r ? -ENOMEM : 0;
}

int queue_message_begin(struct queue *q, struct queue_client *client,
			const struct queue_envelope *env, struct queue_message **out)
{
	struct queue_message *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->queue = q;
	m->client = client;
	m->sync_op.complete = spool_file_synced;
	for (int attempt = 0;; attempt++) {
		spool_make_id(q, m->id);
		m->fd = openat(q->dir_fd, m->id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		if (m->fd >= 0)
			break;
		if (errno != EEXIST || attempt == 8) {
			int e = -errno;
			free(m);
			return e;
		}
	}
	q->pending++;
	if (spool_write_header(m, env) != 0) {
		spool_discard(m);
		return -ENOMEM;
	}
	*out = m;
	return 0;
}

const char *queue_message_id(const struct queue_message *m)
{
	return m->id;
}

/* Submit `len` bytes from the front of pending as one write. */
static int spool_submit_write(struct queue_message *m, size_t len, bool final)
{
	struct spool_write *wr = malloc(sizeof(*wr) + len);
	if (wr == NULL)
		return -ENOMEM;
	wr->op.complete = spool_write_done;
	wr->message = m;
	wr->len = len;
	wr->final = final;
	memcpy(wr->data, buf_head(&m->pending), len);
	buf_consume(&m->pending, len);
	struct io_uring_sqe *sqe = worker_sqe(m->queue->worker);
	io_uring_prep_write(sqe, m->fd, wr->data, (unsigned)len, m->offset);
	worker_sqe_set_op(sqe, &wr->op);
	if (final)
		sqe->flags |= IOSQE_IO_LINK;
	m->offset += len;
	m->writes_inflight++;
	m->bytes_inflight += len;
	return 0;
}

/* The last chunk and the trailer, linked to fdatasync: the sync starts
 * only after that write succeeded, and covers every earlier write, which
 * had all completed before this was submitted. */
static void spool_submit_final(struct queue_message *m)
{
	char trailer[40];
	int n = snprintf(trailer, sizeof(trailer), "\nferry-commit %020llu\n",
			 (unsigned long long)m->body_len);
	if (buf_append(&m->pending, trailer, (size_t)n) != 0 ||
	    spool_submit_write(m, buf_len(&m->pending), true) != 0) {
		m->error = -ENOMEM;
		m->state = SPOOL_SYNCING;
		return; /* reported by spool_finish_failed() below */
	}
	struct io_uring_sqe *sqe = worker_sqe(m->queue->worker);
	io_uring_prep_fsync(sqe, m->fd, IORING_FSYNC_DATASYNC);
	worker_sqe_set_op(sqe, &m->sync_op);
	m->state = SPOOL_SYNCING;
}

static void spool_report(struct queue_message *m, int status)
{
	struct queue_client *client = m->client;
	if (status != 0) {
		log_event(LOG_LEVEL_ERROR, "event=spool_write_failed queue_id=%s error=\"%s\"",
			  m->id, strerror(-status));
		unlinkat(m->queue->dir_fd, m->id, 0);
	}
	spool_close_fd(m->queue, m->fd);
	/* queue.h promises the message lives until committed() returns (the
	 * client reads its id there); the callback may also begin the next
	 * message, which needs nothing of this one. Free only afterwards. */
	if (client != NULL)
		client->committed(client, status);
	spool_message_free(m);
}

static void spool_write_done(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct spool_write *wr = (struct spool_write *)op;
	struct queue_message *m = wr->message;
	m->writes_inflight--;
	m->bytes_inflight -= wr->len;
	if (cqe->res < 0)
		m->error = cqe->res;
	else if ((size_t)cqe->res != wr->len)
		m->error = -ENOSPC; /* a short write to a file: the disk is full */
	free(wr);

	switch (m->state) {
	case SPOOL_ABORTED:
		if (m->writes_inflight == 0)
			spool_discard(m);
		return;
	case SPOOL_COMMITTING:
		if (m->writes_inflight > 0)
			return;
		if (m->error != 0) {
			spool_report(m, m->error);
			return;
		}
		spool_submit_final(m);
		if (m->error != 0 && m->writes_inflight == 0)
			spool_report(m, m->error);
		return;
	case SPOOL_WRITING:
		if (m->paused_client &&
		    m->bytes_inflight + buf_len(&m->pending) < SPOOL_LOW_WATER) {
			m->paused_client = false;
			if (m->client != NULL)
				m->client->resume(m->client);
		}
		return;
	default:
		return; /* the final write: its fsync reports */
	}
}

static void spool_file_synced(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct queue_message *m =
		(struct queue_message *)((char *)op - offsetof(struct queue_message, sync_op));
	if (m->error == 0 && cqe->res < 0)
		m->error = cqe->res; /* -ECANCELED: the linked write failed */
	if (m->error != 0) {
		/* A failed sync is never retried and trusted (fsyncgate). */
		spool_report(m, m->error);
		return;
	}
	m->state = SPOOL_DIR_WAIT;
	m->next = m->queue->dir_wait;
	m->queue->dir_wait = m;
}

static void spool_dir_synced(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct queue *q = (struct queue *)((char *)op - offsetof(struct queue, dir_sync_op));
	struct queue_message *batch = q->dir_batch;
	q->dir_batch = NULL;
	q->dir_sync_inflight = false;
	while (batch != NULL) {
		struct queue_message *next = batch->next;
		spool_report(batch, cqe->res < 0 ? cqe->res : 0);
		batch = next;
	}
}

void queue_flush(struct queue *q)
{
	if (q->dir_sync_inflight || q->dir_wait == NULL)
		return;
	/* One batch in flight while the next gathers. */
	q->dir_batch = q->dir_wait;
	q->dir_wait = NULL;
	q->dir_sync_inflight = true;
	struct io_uring_sqe *sqe = worker_sqe(q->worker);
	io_uring_prep_fsync(sqe, q->dir_fd, 0);
	worker_sqe_set_op(sqe, &q->dir_sync_op);
}

int queue_message_write(struct queue_message *m, const void *data, size_t len)
{
	if (m->error != 0)
		return m->error;
	if (buf_append(&m->pending, data, len) != 0)
		return -ENOMEM;
	m->body_len += len;
	while (buf_len(&m->pending) >= SPOOL_CHUNK)
		if (spool_submit_write(m, SPOOL_CHUNK, false) != 0)
			return -ENOMEM;
	if (m->bytes_inflight + buf_len(&m->pending) > SPOOL_HIGH_WATER) {
		m->paused_client = true;
		return 1;
	}
	return 0;
}

void queue_message_commit(struct queue_message *m)
{
	m->state = SPOOL_COMMITTING;
	m->paused_client = false;
	if (m->writes_inflight > 0)
		return; /* the last write's completion submits the final one */
	if (m->error != 0) {
		/* Report from the loop, never from inside commit(). */
		m->state = SPOOL_SYNCING;
		struct io_uring_sqe *sqe = worker_sqe(m->queue->worker);
		io_uring_prep_nop(sqe);
		worker_sqe_set_op(sqe, &m->sync_op);
		return;
	}
	spool_submit_final(m);
	if (m->error != 0) {
		struct io_uring_sqe *sqe = worker_sqe(m->queue->worker);
		io_uring_prep_nop(sqe);
		worker_sqe_set_op(sqe, &m->sync_op);
	}
}

void queue_message_abort(struct queue_message *m)
{
	m->client = NULL;
	if (m->writes_inflight > 0) {
		m->state = SPOOL_ABORTED;
		return;
	}
	spool_discard(m);
}

void queue_message_detach(struct queue_message *m)
{
	m->client = NULL;
}
