/*
 * Tests for the queue store (queue/store.c with commit.c, recover.c and
 * segment.c): the real store on a real io_uring and a real directory, as
 * a service of real workers whose loop turn (core/worker.c: before_wait,
 * submit, completions, cross-worker messages, timers) the test runs.
 *
 * What is asserted is what a sender or a postmaster would notice: the 250
 * (committed(0)) never comes before the sync and never from inside the
 * call that asked for it; what a restarted ferryd serves is exactly what
 * was acknowledged, byte for byte; a torn tail costs nothing acknowledged
 * at any byte; a corrupt segment costs only its own messages; full-spool
 * limits refuse new mail and nothing accepted.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/worker.h"
#include "queue/body.h"
#include "queue/queue.h"
#include "queue/sched.h"
#include "queue/spool_view.h"
#include "queue/record.h"
#include "queue/recover.h"

#define T_MAX_WORKERS 4
#define T_MAX_TURNS   4000 /* bound on any pump loop */

/* ---- the worker's real loop turn, driven from the test -------------------- */

struct t_store {
	char spool[128];
	struct queue_store_config cfg;
	struct queue_store *store;
	uint32_t nworkers;
	struct worker *workers[T_MAX_WORKERS];
	struct queue *queues[T_MAX_WORKERS];
	struct worker_services services;
	unsigned turns;
	unsigned datasyncs; /* group-commit fdatasyncs submitted */
};

static struct t_store ts;
static char t_scratch[160];

/* Freed by the suite's fini, so a failed assertion leaks nothing. */
static void *t_allocs[16];
static struct buf t_out;

static void *t_alloc(size_t len)
{
	void *p = malloc(len ? len : 1);
	cr_assert_not_null(p);
	for (size_t i = 0; i < sizeof(t_allocs) / sizeof(t_allocs[0]); i++)
		if (t_allocs[i] == NULL)
			return t_allocs[i] = p;
	cr_assert_fail("too many test buffers");
	return NULL;
}

static void t_release(void *p)
{
	for (size_t i = 0; i < sizeof(t_allocs) / sizeof(t_allocs[0]); i++)
		if (t_allocs[i] == p)
			t_allocs[i] = NULL;
	free(p);
}

static void t_config_defaults(void)
{
	ts.cfg = (struct queue_store_config){
		.spool_dir = ts.spool,
		.workers = 1,
		.segment_size = 4u << 20,
		.batch_cap = 256u << 10,
	};
}

static void t_open_into(const char *spool)
{
	char err[512] = "";
	struct queue_store_config cfg = ts.cfg;
	cfg.spool_dir = spool;
	int r = queue_store_open(&ts.store, &cfg, err, sizeof(err));
	cr_assert_eq(r, 0, "queue_store_open(%s): %d: %s", spool, r, err);
	ts.nworkers = cfg.workers;
}

static void t_open(void)
{
	t_open_into(ts.spool);
}

/*
 * A probe registered below the store: before_wait runs in reverse order,
 * so it sees what the store's flush prepared before the turn submits it,
 * and counts the group-commit syncs among it.
 */
static void t_probe_before_wait(struct worker *w, void *state)
{
	(void)state;
	struct io_uring *ring = &w->ring;
	for (unsigned k = ring->sq.sqe_head; k != ring->sq.sqe_tail; k++) {
		const struct io_uring_sqe *sqe = &ring->sq.sqes[k & ring->sq.ring_mask];
		if (sqe->opcode == IORING_OP_FSYNC && (sqe->fsync_flags & IORING_FSYNC_DATASYNC))
			ts.datasyncs++;
	}
}

static int t_probe_start(struct worker *w, void *arg, void **state)
{
	(void)w;
	*state = arg;
	return 0;
}

static const struct worker_service t_probe_service = {
	.name = "test-probe",
	.start = t_probe_start,
	.before_wait = t_probe_before_wait,
};

/* Workers as ferryd runs them (the store's service on each), on this
 * thread: the test turns their loops. */
static void t_start_workers(void)
{
	memset(&ts.services, 0, sizeof(ts.services));
	worker_services_add(&ts.services, &t_probe_service, NULL);
	worker_services_add(&ts.services, &queue_service, ts.store);
	for (uint32_t i = 0; i < ts.nworkers; i++) {
		struct worker *w = calloc(1, sizeof(*w));
		cr_assert_not_null(w);
		int r = worker_init(w, i, &ts.services);
		cr_assert_eq(r, 0, "worker %u: %s (the store's tests need io_uring)", i, w->error);
		ts.workers[i] = w;
		ts.queues[i] = queue_store_queue(ts.store, i);
		cr_assert_eq(queue_worker(ts.queues[i]), w);
	}
}

#define T_WAIT_MS    10   /* a wait when nothing is in flight (timers, no-ops) */
#define T_WAIT_IO_MS 5000 /* bound on one wait for the store's I/O */

/*
 * One loop turn, the real one (the store's before_wait, submit, wait,
 * completions, cross-worker messages, timers). One worker turns as
 * ferryd's loop does, waiting within the turn; several on this one
 * thread each turn without waiting, and when none had a completion the
 * test waits on one whose store has work in flight.
 */
static void t_turn(void)
{
	ts.turns++;
	if (ts.nworkers == 1) {
		bool io = ts.workers[0]->in_flight > 0;
		worker_turn(ts.workers[0], io ? T_WAIT_IO_MS : T_WAIT_MS);
		return;
	}
	unsigned done = 0;
	for (uint32_t i = 0; i < ts.nworkers; i++)
		done += worker_turn(ts.workers[i], 0);
	if (done > 0)
		return;
	uint32_t wait_on = 0;
	for (uint32_t i = 0; i < ts.nworkers; i++) {
		if (ts.workers[i]->in_flight > 0) {
			wait_on = i;
			break;
		}
	}
	worker_wait(ts.workers[wait_on], T_WAIT_MS);
}

/* Nothing on any worker's ring. */
static bool t_quiet(void)
{
	for (uint32_t i = 0; i < ts.nworkers; i++)
		if (ts.workers[i]->in_flight > 0 || io_uring_sq_ready(&ts.workers[i]->ring) > 0)
			return false;
	return true;
}

static bool t_idle(void)
{
	for (uint32_t i = 0; i < ts.nworkers; i++)
		if (queue_pending(ts.queues[i]) > 0)
			return false;
	return t_quiet();
}

/* Until nothing is on the ring (messages may still be open). */
static void t_pump_quiet(void)
{
	for (unsigned n = 0;; n++) {
		if (t_quiet() && n > 0)
			return;
		cr_assert_lt(n, T_MAX_TURNS, "the ring never went quiet");
		t_turn();
	}
}

/* Until nothing is pending, and one more turn starts nothing new (a
 * flush may start a compaction job, as the worker's next turn would). */
static void t_pump_idle(void)
{
	for (unsigned n = 0;; n++) {
		cr_assert_lt(n, T_MAX_TURNS, "the store never became idle");
		if (t_idle()) {
			t_turn();
			if (t_idle())
				return;
		}
		t_turn();
	}
}

/* Wind the workers down as ferryd does (drain until idle), stop them
 * (the store's service closes each queue), then close the store. */
static void t_close_quietly(bool must_be_idle)
{
	if (ts.store == NULL)
		return;
	if (ts.workers[0] != NULL) {
		for (uint32_t i = 0; i < ts.nworkers; i++)
			worker_shutdown(ts.workers[i]);
		bool idle = false;
		for (unsigned n = 0; !idle && n < T_MAX_TURNS; n++) {
			t_turn();
			idle = true;
			for (uint32_t i = 0; i < ts.nworkers; i++)
				idle &= worker_idle(ts.workers[i]);
		}
		if (must_be_idle)
			cr_assert(idle, "the store never became idle");
		for (uint32_t i = 0; i < ts.nworkers; i++) {
			worker_fini(ts.workers[i]);
			free(ts.workers[i]);
			ts.workers[i] = NULL;
			ts.queues[i] = NULL;
		}
	}
	queue_store_close(ts.store);
	ts.store = NULL;
}

static void t_close(void)
{
	t_close_quietly(true);
}

/* What a restarted ferryd would do: recover the spool (no workers yet). */
static void t_reopen(void)
{
	t_close();
	t_open();
}

/* A restart, and what recovery found. */
static struct queue_store_summary t_restart(void)
{
	t_reopen();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	return sum;
}

static int t_remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void t_remove_tree(const char *path)
{
	if (path[0] != '\0')
		nftw(path, t_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void t_suite_init(void)
{
	memset(&ts, 0, sizeof(ts));
	snprintf(ts.spool, sizeof(ts.spool), "/tmp/ferry-test-store-XXXXXX");
	cr_assert_not_null(mkdtemp(ts.spool));
	t_scratch[0] = '\0';
	t_config_defaults();
	/* Not a skip: these tests guard durability, and a green run that did
	 * not run them would say nothing. */
	char err[256];
	if (worker_probe_io_uring(err, sizeof(err)) != 0)
		cr_assert_fail("%s", err);
}

static void t_suite_fini(void)
{
	t_close_quietly(false);
	for (size_t i = 0; i < sizeof(t_allocs) / sizeof(t_allocs[0]); i++) {
		free(t_allocs[i]);
		t_allocs[i] = NULL;
	}
	buf_release(&t_out);
	t_remove_tree(ts.spool);
	t_remove_tree(t_scratch);
}

TestSuite(store, .init = t_suite_init, .fini = t_suite_fini, .timeout = 120);

/* ---- a session, as the store sees it -------------------------------------- */

struct t_client {
	struct queue_client qc;
	struct queue_message *m;
	char id[QUEUE_ID_LEN + 1];
	int committed; /* committed() calls */
	int status;    /* of the last one */
	int resumed;
	bool inside;     /* a queue_message_* call for this client is running */
	int from_inside; /* callbacks made from inside such a call */
};

static void t_on_committed(struct queue_client *qc, int status)
{
	struct t_client *c = (struct t_client *)qc;
	c->committed++;
	c->status = status;
	if (c->inside)
		c->from_inside++;
}

static void t_on_resume(struct queue_client *qc)
{
	struct t_client *c = (struct t_client *)qc;
	c->resumed++;
	if (c->inside)
		c->from_inside++;
}

static void t_client_init(struct t_client *c)
{
	memset(c, 0, sizeof(*c));
	c->qc.committed = t_on_committed;
	c->qc.resume = t_on_resume;
}

static const struct queue_param t_params[] = {{"BODY=8BITMIME", 13}, {"SIZE=1000", 9}};

static int t_begin_on(struct queue *q, struct t_client *c, const char *sender,
		      const char *const *rcpts, unsigned nrcpts)
{
	struct queue_recipient r[8];
	cr_assert_leq(nrcpts, 8u);
	for (unsigned i = 0; i < nrcpts; i++)
		r[i] = (struct queue_recipient){rcpts[i], strlen(rcpts[i])};
	struct queue_envelope env = {
		.sender = sender,
		.sender_len = strlen(sender),
		.recipients = r,
		.nrecipients = nrcpts,
		.params = t_params,
		.nparams = 2,
		.client_address = "192.0.2.1",
		.helo = "client.example",
	};
	clock_gettime(CLOCK_REALTIME, &env.arrival);
	c->inside = true;
	int rc = queue_message_begin(q, &c->qc, &env, &c->m);
	c->inside = false;
	if (rc == 0)
		snprintf(c->id, sizeof(c->id), "%s", queue_message_id(c->m));
	return rc;
}

static int t_begin(struct t_client *c, const char *rcpt)
{
	const char *rcpts[] = {rcpt};
	return t_begin_on(ts.queues[0], c, "alice@client.example", rcpts, 1);
}

/* Stream a body the way a session does: `piece` octets at a time, pausing
 * (pumping the loop) whenever the store says 1 until it calls resume().
 * Returns how often it paused, or the negative errno write() gave. */
static int t_write(struct t_client *c, const uint8_t *data, size_t len, size_t piece)
{
	int pauses = 0;
	for (size_t at = 0; at < len;) {
		size_t n = len - at < piece ? len - at : piece;
		c->inside = true;
		int r = queue_message_write(c->m, data + at, n);
		c->inside = false;
		if (r < 0)
			return r;
		at += n;
		if (r == 1) {
			pauses++;
			int before = c->resumed;
			for (unsigned k = 0; c->resumed == before; k++) {
				cr_assert_lt(k, T_MAX_TURNS, "resume() never came");
				t_turn();
			}
		}
	}
	return pauses;
}

static void t_commit(struct t_client *c)
{
	c->inside = true;
	queue_message_commit(c->m);
	c->inside = false;
	cr_assert_eq(c->committed, 0, "committed() called from inside queue_message_commit");
}

static void t_pump_until_committed(struct t_client *c, unsigned n)
{
	for (unsigned k = 0;; k++) {
		bool all = true;
		for (unsigned i = 0; i < n; i++)
			all &= c[i].committed > 0;
		if (all)
			break;
		cr_assert_lt(k, T_MAX_TURNS, "committed() never came");
		t_turn();
	}
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(c[i].committed, 1, "committed() called %d times", c[i].committed);
		cr_assert_eq(c[i].from_inside, 0, "a callback came from inside a queue call");
	}
}

/* Deterministic bytes, all 256 values, different per seed. */
static void t_fill(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

static uint8_t *t_body(size_t len, uint64_t seed)
{
	uint8_t *p = t_alloc(len);
	t_fill(p, len, seed);
	return p;
}

/* Begin, write and commit (no pumping): `c` must then be pumped. */
static void t_send(struct t_client *c, const char *rcpt, const uint8_t *body, size_t len)
{
	t_client_init(c);
	int r = t_begin(c, rcpt);
	cr_assert_eq(r, 0, "begin: %s", strerror(-r));
	r = t_write(c, body, len, 16384);
	cr_assert_geq(r, 0, "write: %s", strerror(-r));
	t_commit(c);
}

/* ---- what a restarted ferryd serves --------------------------------------- */

/* queue_report_message on whichever queue owns the id. */
static bool t_report_message(const char *id, struct buf *out)
{
	for (uint32_t i = 0; i < queue_store_workers(ts.store); i++)
		if (queue_report_message(queue_store_queue(ts.store, i), id, out) == 1)
			return true;
	return false;
}

static bool t_present(const char *id)
{
	buf_clear(&t_out);
	return t_report_message(id, &t_out);
}

/* The report of a message, NUL-terminated (in t_out). */
static const char *t_report(const char *id)
{
	buf_clear(&t_out);
	cr_assert(t_report_message(id, &t_out), "message %s is gone after the restart", id);
	cr_assert_eq(buf_append(&t_out, "", 1), 0);
	return buf_head(&t_out);
}

/* The ids queued for `domain`, one per recipient line. */
static unsigned t_domain_ids(const char *domain, char ids[][QUEUE_ID_LEN + 1], unsigned max)
{
	unsigned n = 0;
	for (uint32_t i = 0; i < queue_store_workers(ts.store); i++) {
		struct buf out = {0};
		struct queue_report_cursor cursor = {0};
		/* Three lines per call: the listing goes on over several. */
		for (unsigned k = 0; queue_report_domain(queue_store_queue(ts.store, i), domain,
							 strlen(domain), &cursor, 3, &out) == 1;
		     k++)
			cr_assert_lt(k, 100000, "the listing never ended");
		cr_assert_eq(buf_append(&out, "", 1), 0);
		for (const char *line = buf_head(&out); *line != '\0';) {
			const char *end = strchr(line, '\n');
			cr_assert_not_null(end);
			cr_assert_lt(n, max);
			cr_assert_eq(line[QUEUE_ID_LEN], ' ', "bad line: %.*s", (int)(end - line),
				     line);
			memcpy(ids[n], line, QUEUE_ID_LEN);
			ids[n][QUEUE_ID_LEN] = '\0';
			n++;
			line = end + 1;
		}
		buf_release(&out);
	}
	return n;
}

static bool t_ids_contain(char ids[][QUEUE_ID_LEN + 1], unsigned n, const char *id)
{
	for (unsigned i = 0; i < n; i++)
		if (strcmp(ids[i], id) == 0)
			return true;
	return false;
}

/* A line "key value" of a report, value copied out. */
static bool t_report_field(const char *report, const char *key, char *out, size_t size)
{
	size_t klen = strlen(key);
	for (const char *p = report; p != NULL && *p != '\0';) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == ' ') {
			snprintf(out, size, "%.*s", (int)(len - klen - 1), p + klen + 1);
			return true;
		}
		p = end ? end + 1 : NULL;
	}
	return false;
}

/* Read the body back through the "body SEGMENT OFFSET LEN" lines, exactly
 * as ferryctl does, and compare it byte for byte. */
static void t_expect_body(const char *spool, const char *report, const uint8_t *body, size_t len)
{
	size_t at = 0;
	unsigned lines = 0;
	for (const char *p = report; *p != '\0';) {
		const char *end = strchr(p, '\n');
		cr_assert_not_null(end);
		char seg[64];
		unsigned long long off;
		unsigned n;
		if (strncmp(p, "body ", 5) == 0) {
			cr_assert_eq(sscanf(p, "body %63s %llu %u", seg, &off, &n), 3,
				     "bad line %.*s", (int)(end - p), p);
			cr_assert_leq(at + n, len, "more body than was sent");
			char path[512];
			snprintf(path, sizeof(path), "%s/segments/%s", spool, seg);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
			static uint8_t got[RECORD_MAX_PAYLOAD];
			cr_assert_leq(n, sizeof(got));
			ssize_t r = pread(fd, got, n, (off_t)off);
			close(fd);
			cr_assert_eq(r, (ssize_t)n, "short read of %s", path);
			cr_assert_eq(memcmp(got, body + at, n), 0,
				     "body bytes %zu..%zu differ (%s at %llu)", at, at + n, seg,
				     off);
			at += n;
			lines++;
		}
		p = end + 1;
	}
	cr_assert_eq(at, len, "body read back: %zu of %zu bytes", at, len);
	cr_assert(len == 0 || lines > 0, "no body lines in the report");
}

static void t_expect_message(const char *id, const char *sender, const char *const *rcpts,
			     unsigned nrcpts, const uint8_t *body, size_t len)
{
	const char *report = t_report(id);
	char value[600];
	cr_assert(t_report_field(report, "sender", value, sizeof(value)));
	cr_assert_str_eq(value, sender[0] ? sender : "<>");
	cr_assert(t_report_field(report, "size", value, sizeof(value)));
	cr_assert_eq(strtoull(value, NULL, 10), len, "size %s, sent %zu", value, len);
	cr_assert(t_report_field(report, "client", value, sizeof(value)));
	cr_assert_str_eq(value, "192.0.2.1");
	cr_assert(t_report_field(report, "helo", value, sizeof(value)));
	cr_assert_str_eq(value, "client.example");
	/* Parameters as log_quote renders them ('=' is escaped by quoting). */
	cr_assert_not_null(strstr(report, "\nparam \"BODY=8BITMIME\"\nparam \"SIZE=1000\"\n"), "%s",
			   report);
	const char *p = report;
	for (unsigned i = 0; i < nrcpts; i++) {
		char want[300];
		snprintf(want, sizeof(want), "\nrcpt %s ", rcpts[i]); /* then its state */
		p = strstr(p, want);
		cr_assert_not_null(p, "recipient %s missing or out of order:\n%s", rcpts[i],
				   report);
		p++;
	}
	t_expect_body(ts.spool, report, body, len);
}

/* ---- looking at segment files ---------------------------------------------- */

static unsigned t_count_files(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	unsigned n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		n += strstr(e->d_name, ".seg") != NULL;
	closedir(d);
	return n;
}

static unsigned t_segments(void)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/segments", ts.spool);
	return t_count_files(path);
}

static bool t_exists(const char *dir, const char *sub, const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	return access(path, F_OK) == 0;
}

static uint8_t *t_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	uint8_t *p = t_alloc((size_t)st.st_size);
	ssize_t r = pread(fd, p, (size_t)st.st_size, 0);
	close(fd);
	cr_assert_eq(r, st.st_size);
	*len = (size_t)st.st_size;
	return p;
}

struct t_record {
	size_t off;
	size_t checked_end; /* end of the bytes the checksum covers */
	size_t end;         /* with padding */
	int type;
	char id[QUEUE_ID_LEN + 1];
};

/* Frame the records of a segment image; returns their count, *used_end
 * where the valid ones stop. */
static size_t t_records(const uint8_t *data, size_t size, struct t_record *out, size_t max,
			size_t *used_end)
{
	uint64_t salt = 0;
	if (size >= RECORD_HEADER_SIZE)
		memcpy(&salt, data + 8, sizeof(salt));
	size_t off = 0, n = 0;
	struct record_view v;
	while (off < size && record_frame(data + off, size - off, salt, &v) == RECORD_OK) {
		if (out != NULL && n < max) {
			out[n] = (struct t_record){.off = off,
						   .checked_end =
							   off + RECORD_HEADER_SIZE + v.length,
						   .end = off + v.size,
						   .type = (int)v.type};
			if (v.type != RECORD_SEGMENT && v.length >= RECORD_ID_LEN)
				memcpy(out[n].id, v.payload, RECORD_ID_LEN);
		}
		n++;
		off += v.size;
	}
	*used_end = off;
	return n;
}

static size_t t_used_end(const char *path)
{
	size_t len, end;
	uint8_t *data = t_read_file(path, &len);
	t_records(data, len, NULL, 0, &end);
	t_release(data);
	return end;
}

static bool t_is_crockford(const char *id)
{
	static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
	if (strlen(id) != QUEUE_ID_LEN)
		return false;
	for (const char *p = id; *p != '\0'; p++)
		if (strchr(alphabet, *p) == NULL)
			return false;
	return true;
}

/* ---- 1. commit, callback, restart ------------------------------------------ */

Test(store, committed_only_after_the_sync_and_whole_after_restart)
{
	t_open();
	t_start_workers();
	static const char *const rcpts_a[] = {"bob@dest.example", "carol@other.example"};
	static const char *const rcpts_b[] = {"dave@dest.example"};
	static const char text[] = "Subject: hello\r\n\r\nHello, Bob.\r\n";
	size_t big_len = 200000 + 17; /* four BODY chunks, the last one short */
	uint8_t *big = t_body(big_len, 1);

	static struct t_client c[2];
	t_client_init(&c[0]);
	t_client_init(&c[1]);
	cr_assert_eq(t_begin_on(ts.queues[0], &c[0], "alice@client.example", rcpts_a, 2), 0);
	cr_assert_eq(t_begin_on(ts.queues[0], &c[1], "", rcpts_b, 1), 0);
	cr_assert(t_is_crockford(c[0].id), "queue id %s is not 16 Crockford base32 characters",
		  c[0].id);
	cr_assert(t_is_crockford(c[1].id), "queue id %s is not 16 Crockford base32 characters",
		  c[1].id);
	cr_assert_str_neq(c[0].id, c[1].id);
	cr_assert_geq(t_write(&c[0], (const uint8_t *)text, sizeof(text) - 1, 7), 0);
	cr_assert_geq(t_write(&c[1], big, big_len, 50000), 0);
	t_commit(&c[0]);
	t_commit(&c[1]);
	unsigned syncs_before = ts.datasyncs;
	t_pump_until_committed(c, 2);
	cr_assert_eq(c[0].status, 0);
	cr_assert_eq(c[1].status, 0);
	cr_assert_gt(ts.datasyncs, syncs_before, "committed(0) before any fdatasync");
	/* ferryctl's view of the running ferryd already has them whole. */
	t_expect_message(c[1].id, "", rcpts_b, 1, big, big_len);

	struct queue_store_summary sum = t_restart();
	cr_expect_eq(sum.messages, 2);
	cr_expect_eq(sum.recipients, 3);
	cr_expect_eq(sum.torn, 0);
	cr_expect_eq(sum.corrupt, 0);
	t_expect_message(c[0].id, "alice@client.example", rcpts_a, 2, (const uint8_t *)text,
			 sizeof(text) - 1);
	t_expect_message(c[1].id, "", rcpts_b, 1, big, big_len);
	char ids[8][QUEUE_ID_LEN + 1];
	cr_assert_eq(t_domain_ids("dest.example", ids, 8), 2);
	cr_assert(t_ids_contain(ids, 2, c[0].id) && t_ids_contain(ids, 2, c[1].id));
	cr_assert_eq(t_domain_ids("OTHER.example", ids, 8), 1);
	cr_assert_str_eq(ids[0], c[0].id);

	t_start_workers();
	static struct t_client d;
	t_send(&d, "erin@dest.example", (const uint8_t *)"x\r\n", 3);
	t_pump_until_committed(&d, 1);
	cr_assert_eq(d.status, 0);
	cr_assert(t_is_crockford(d.id));
	cr_assert(strcmp(d.id, c[0].id) != 0 && strcmp(d.id, c[1].id) != 0);
}

/* ---- 2. group commit --------------------------------------------------------- */

Test(store, group_commit_acknowledges_200_messages_with_one_sync)
{
	ts.cfg.batch_cap = 1u << 20;
	t_open();
	t_start_workers();
	enum { N = 200 };
	static struct t_client c[N], first;
	uint8_t body[300];
	/* The segment's first batch also syncs the directory (a third
	 * completion); the 200 come after it. */
	t_fill(body, sizeof(body), 99);
	t_send(&first, "bob@dest.example", body, 10);
	t_pump_until_committed(&first, 1);
	unsigned syncs = ts.datasyncs;
	for (unsigned i = 0; i < N; i++) {
		t_fill(body, sizeof(body), i);
		t_send(&c[i], "bob@dest.example", body, 100 + i % 200);
	}
	unsigned turns = ts.turns;
	t_pump_until_committed(c, N);
	for (unsigned i = 0; i < N; i++) {
		cr_assert_eq(c[i].status, 0, "message %u: %d", i, c[i].status);
		/* 200 ids cover every value of the last character. */
		cr_assert(t_is_crockford(c[i].id),
			  "queue id %s is not 16 Crockford base32 characters", c[i].id);
		/* Ids sort by arrival (as ferryctl lists them). */
		if (i > 0)
			cr_assert_gt(strcmp(c[i].id, c[i - 1].id), 0, "%s after %s", c[i].id,
				     c[i - 1].id);
	}
	/* One write and one fdatasync for all 200: acknowledged within the two
	 * turns that see their completions. */
	cr_expect_eq(ts.datasyncs - syncs, 1, "%u fdatasyncs for 200 messages",
		     ts.datasyncs - syncs);
	cr_expect_leq(ts.turns - turns, 2, "%u turns to acknowledge 200 messages",
		      ts.turns - turns);

	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, N + 1);
	static char ids[N + 2][QUEUE_ID_LEN + 1];
	cr_assert_eq(t_domain_ids("dest.example", ids, N + 2), N + 1);
	for (unsigned i = 0; i < N; i++) {
		cr_assert(t_ids_contain(ids, N + 1, c[i].id), "message %u (%s) lost", i, c[i].id);
		for (unsigned k = 0; k < i; k++)
			cr_assert_str_neq(c[i].id, c[k].id, "queue id repeated");
	}
	t_fill(body, sizeof(body), 123);
	static const char *const rcpt[] = {"bob@dest.example"};
	t_expect_message(c[123].id, "alice@client.example", rcpt, 1, body, 100 + 123);
}

Test(store, one_batch_in_flight_while_the_next_gathers)
{
	ts.cfg.batch_cap = 1u << 20;
	t_open();
	t_start_workers();
	enum { N = 100 };
	static struct t_client c[2 * N];
	uint8_t body[200];
	t_fill(body, sizeof(body), 7);
	for (unsigned i = 0; i < N; i++)
		t_send(&c[i], "bob@dest.example", body, sizeof(body));
	/* The first batch goes out; while it is in flight, 100 more gather. */
	worker_turn(ts.workers[0], 0);
	for (unsigned i = N; i < 2 * N; i++)
		t_send(&c[i], "bob@dest.example", body, sizeof(body));
	t_pump_until_committed(c, 2 * N);
	for (unsigned i = 0; i < 2 * N; i++)
		cr_assert_eq(c[i].status, 0);
	cr_expect_eq(ts.datasyncs, 2, "%u fdatasyncs for two batches", ts.datasyncs);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 2 * N);
}

Test(store, two_workers_index_each_others_recipients)
{
	ts.cfg.workers = 2;
	t_open();
	t_start_workers();
	enum { N = 40 };
	static struct t_client c[N];
	char rcpt[N][64];
	for (unsigned i = 0; i < N; i++) {
		snprintf(rcpt[i], sizeof(rcpt[i]), "user@d%u.example", i % 10);
		const char *r[] = {rcpt[i]};
		t_client_init(&c[i]);
		cr_assert_eq(t_begin_on(ts.queues[i % 2], &c[i], "alice@client.example", r, 1), 0);
		cr_assert_geq(t_write(&c[i], (const uint8_t *)"hi\r\n", 4, 4), 0);
		t_commit(&c[i]);
	}
	t_pump_until_committed(c, N);
	t_pump_idle();
	/* Live: every recipient is visible in its shard, whichever worker
	 * wrote the message. */
	static char ids[N + 1][QUEUE_ID_LEN + 1];
	unsigned total = 0;
	for (unsigned d = 0; d < 10; d++) {
		char domain[32];
		snprintf(domain, sizeof(domain), "d%u.example", d);
		unsigned n = t_domain_ids(domain, ids, N + 1);
		cr_assert_eq(n, N / 10, "%s: %u recipients", domain, n);
		for (unsigned i = d; i < N; i += 10)
			cr_assert(t_ids_contain(ids, n, c[i].id));
		total += n;
	}
	cr_assert_eq(total, N);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, N);
	for (unsigned i = 0; i < N; i++)
		cr_assert(t_present(c[i].id), "message %u (%s) lost", i, c[i].id);
}

/* Under load the submission queue fills with other sessions' requests.
 * The write of a batch and the fdatasync linked to it (and the directory's
 * fsync after a new segment's first batch) must still go to the kernel in
 * one submission: a link does not carry across two, and an unlinked sync
 * may run before the write it is meant to make durable. */
Test(store, a_full_submission_queue_never_splits_a_write_from_its_sync)
{
	t_open();
	t_start_workers();
	struct io_uring *ring = &ts.workers[0]->ring;
	static const unsigned room[] = {1, 2, 1, 0, 2}; /* free SQEs left before the flush */
	static struct t_client c[5];
	for (unsigned round = 0; round < 5; round++) {
		t_send(&c[round], "bob@dest.example", (const uint8_t *)"hi\r\n", 4);
		while (io_uring_sq_space_left(ring) > room[round]) {
			struct io_uring_sqe *sqe = worker_sqe(ts.workers[0]);
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data(sqe, NULL);
		}
		queue_flush(ts.queues[0]);
		unsigned syncs = 0;
		for (unsigned k = ring->sq.sqe_head; k != ring->sq.sqe_tail; k++) {
			const struct io_uring_sqe *sqe = &ring->sq.sqes[k & ring->sq.ring_mask];
			if (sqe->opcode != IORING_OP_FSYNC)
				continue;
			syncs++;
			cr_assert_neq(k, ring->sq.sqe_head,
				      "round %u: a sync waits for the next submission, its write "
				      "went in the last one",
				      round);
			const struct io_uring_sqe *prev =
				&ring->sq.sqes[(k - 1) & ring->sq.ring_mask];
			cr_assert((prev->opcode == IORING_OP_WRITE ||
				   prev->opcode == IORING_OP_FSYNC) &&
					  (prev->flags & IOSQE_IO_LINK),
				  "round %u: a sync not linked to the write before it", round);
		}
		cr_assert_geq(syncs, 1, "round %u: no sync prepared", round);
		t_pump_until_committed(&c[round], 1);
		cr_assert_eq(c[round].status, 0);
	}
	t_reopen();
	for (unsigned i = 0; i < 5; i++)
		cr_assert(t_present(c[i].id));
}

/* An operator lowers the number of workers: the messages a worker that no
 * longer runs wrote are still served, bodies and all. */
Test(store, fewer_workers_after_a_restart_still_serve_every_message)
{
	ts.cfg.workers = 2;
	t_open();
	t_start_workers();
	enum { N = 10 };
	static struct t_client c[N];
	uint8_t *body = t_body(70000, 17);
	static const char *const rcpt[] = {"bob@dest.example"};
	for (unsigned i = 0; i < N; i++) {
		t_client_init(&c[i]);
		cr_assert_eq(t_begin_on(ts.queues[i % 2], &c[i], "alice@client.example", rcpt, 1),
			     0);
		cr_assert_geq(t_write(&c[i], body, 70000, 70000), 0);
		t_commit(&c[i]);
	}
	t_pump_until_committed(c, N);
	t_close();
	ts.cfg.workers = 1;
	t_open();
	for (unsigned i = 0; i < N; i++)
		t_expect_message(c[i].id, "alice@client.example", rcpt, 1, body, 70000);
	t_start_workers();
	static struct t_client next;
	t_send(&next, "bob@dest.example", body, 100);
	t_pump_until_committed(&next, 1);
	cr_assert_eq(next.status, 0);
	t_reopen();
	for (unsigned i = 0; i < N; i++)
		t_expect_message(c[i].id, "alice@client.example", rcpt, 1, body, 70000);
	t_expect_message(next.id, "alice@client.example", rcpt, 1, body, 100);
}

/* ---- 3. abort and detach ----------------------------------------------------- */

Test(store, aborted_never_returns_detached_does)
{
	t_open();
	t_start_workers();
	size_t len = 150000;
	uint8_t *body = t_body(len, 3);
	static struct t_client aborted, detached, kept;

	/* Its envelope and body chunks reach the disk before it is aborted. */
	t_client_init(&aborted);
	cr_assert_eq(t_begin(&aborted, "bob@dest.example"), 0);
	cr_assert_geq(t_write(&aborted, body, len, len), 0);
	for (unsigned i = 0; i < 10; i++)
		t_turn();
	aborted.inside = true;
	queue_message_abort(aborted.m);
	aborted.inside = false;

	t_send(&detached, "bob@dest.example", body, 1000);
	queue_message_detach(detached.m);
	t_send(&kept, "bob@dest.example", body, 2000);
	t_pump_until_committed(&kept, 1);
	t_pump_idle();
	cr_assert_eq(aborted.committed, 0, "an aborted message got committed()");
	cr_assert_eq(detached.committed, 0, "a detached message got committed()");
	cr_assert_eq(kept.status, 0);

	t_reopen();
	static const char *const rcpt[] = {"bob@dest.example"};
	cr_assert_not(t_present(aborted.id), "the aborted message came back");
	t_expect_message(detached.id, "alice@client.example", rcpt, 1, body, 1000);
	t_expect_message(kept.id, "alice@client.example", rcpt, 1, body, 2000);
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.messages, 2);
}

/* ---- 4. backpressure --------------------------------------------------------- */

Test(store, backpressure_pauses_and_resumes_a_5_mib_body)
{
	ts.cfg.batch_cap = 64u << 10;
	t_open();
	t_start_workers();
	size_t len = 5u << 20;
	uint8_t *body = t_body(len, 4);
	static struct t_client c;
	t_client_init(&c);
	cr_assert_eq(t_begin(&c, "bob@dest.example"), 0);
	int pauses = t_write(&c, body, len, 32768);
	cr_assert_gt(pauses, 0, "write() never asked the session to pause");
	cr_assert_eq(c.resumed, pauses, "%d pauses, %d resumes", pauses, c.resumed);
	t_commit(&c);
	t_pump_until_committed(&c, 1);
	cr_assert_eq(c.status, 0);

	t_reopen();
	static const char *const rcpt[] = {"bob@dest.example"};
	t_expect_message(c.id, "alice@client.example", rcpt, 1, body, len);
}

/* ---- 5. sync failure -------------------------------------------------------- */

Test(store, failed_sync_fails_its_batch_and_writing_moves_on)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	setenv("FERRY_FAULT_FSYNC", "1", 1);
	t_open();
	t_start_workers();
	uint8_t body[5000];
	t_fill(body, sizeof(body), 5);
	static struct t_client failed[3], streaming, ok;
	for (unsigned i = 0; i < 3; i++)
		t_send(&failed[i], "bob@dest.example", body, sizeof(body));
	/* Streaming when the sync fails: its envelope was in that batch. */
	t_client_init(&streaming);
	cr_assert_eq(t_begin(&streaming, "bob@dest.example"), 0);
	t_pump_until_committed(failed, 3);
	for (unsigned i = 0; i < 3; i++)
		cr_assert_eq(failed[i].status, -EIO, "message %u: %d (the session says 451 4.3.0)",
			     i, failed[i].status);
	int r = t_write(&streaming, body, 100, 100);
	if (r >= 0)
		t_commit(&streaming);
	else
		cr_assert_eq(r, -EIO);

	t_send(&ok, "bob@dest.example", body, sizeof(body));
	t_pump_until_committed(&ok, 1);
	if (r >= 0) {
		t_pump_until_committed(&streaming, 1);
		cr_assert_eq(streaming.status, -EIO, "a message begun in the failed segment: %d",
			     streaming.status);
	} else {
		queue_message_abort(streaming.m);
	}
	cr_assert_eq(ok.status, 0, "the next batch: %d", ok.status);
	cr_assert(t_exists(ts.spool, "segments", "w000-000000000002.seg"),
		  "writing did not move to a new segment");

	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 1, "%llu messages after the restart",
		     (unsigned long long)sum.messages);
	static const char *const rcpt[] = {"bob@dest.example"};
	t_expect_message(ok.id, "alice@client.example", rcpt, 1, body, sizeof(body));
	for (unsigned i = 0; i < 3; i++)
		cr_assert_not(t_present(failed[i].id), "message %u got 451 but came back", i);
	cr_assert_not(t_present(streaming.id));
}

/*
 * A message whose first records went to a segment that rolled, and whose
 * COMMIT went to the next segment: when the old segment's last batch fails
 * its sync, the message lost its envelope, so it must not get a 250 even
 * though the batch holding its COMMIT syncs fine.
 */
Test(store, failed_sync_fails_a_message_that_continued_in_the_next_segment)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	setenv("FERRY_FAULT_FSYNC", "1", 1);
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 1u << 20;
	t_open();
	t_start_workers();
	size_t len = 128u << 10; /* chunk 0 in segment 1, chunk 1 in segment 2 */
	uint8_t *body = t_body(len, 6);
	static struct t_client spanning, later;
	t_client_init(&spanning);
	cr_assert_eq(t_begin(&spanning, "bob@dest.example"), 0);
	cr_assert_geq(t_write(&spanning, body, len, len), 0);
	t_commit(&spanning);
	t_send(&later, "bob@dest.example", body, 1000); /* all in segment 2 */
	t_pump_until_committed(&spanning, 1);
	t_pump_until_committed(&later, 1);
	cr_assert_eq(spanning.status, -EIO, "got %d: a 250 for a message whose envelope was lost",
		     spanning.status);
	cr_assert_eq(later.status, 0);
	t_reopen();
	cr_assert_not(t_present(spanning.id), "a message that got 451 came back");
	static const char *const rcpt[] = {"bob@dest.example"};
	t_expect_message(later.id, "alice@client.example", rcpt, 1, body, 1000);
}

/*
 * The sync of a segment's second batch fails. What the first batch held
 * is durable and stays; every message with a record in the failed batch
 * gets 451 — including one whose COMMIT went on to the next segment — and
 * the messages that lost nothing carry on in the new segment. After the
 * restart, exactly the messages that got a 250 are there.
 */
Test(store, failed_sync_later_in_a_segment_fails_exactly_what_it_lost)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	setenv("FERRY_FAULT_FSYNC", "2", 1);
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 1u << 20;
	t_open();
	t_start_workers();
	size_t len = 70000; /* a 64 KiB BODY record, the rest at commit */
	uint8_t *body = t_body(len, 13);
	static struct t_client a, s, t, b, c;

	/* Batch 1 (synced): A whole; the envelopes of S, T and C. */
	t_send(&a, "bob@dest.example", body, 500);
	t_client_init(&s);
	t_client_init(&t);
	t_client_init(&c);
	cr_assert_eq(t_begin(&s, "bob@dest.example"), 0);
	cr_assert_eq(t_begin(&t, "bob@dest.example"), 0);
	cr_assert_eq(t_begin(&c, "bob@dest.example"), 0);
	t_pump_until_committed(&a, 1);
	cr_assert_eq(a.status, 0);

	/* Batch 2 (its sync fails): T's first chunk, B's envelope. Then B's
	 * chunk rolls to segment 2, where the rest of B, S and C go. */
	cr_assert_geq(t_write(&t, body, len, len), 0);
	t_client_init(&b);
	cr_assert_eq(t_begin(&b, "bob@dest.example"), 0);
	cr_assert_geq(t_write(&b, body, len, len), 0);
	t_commit(&b);
	cr_assert(t_exists(ts.spool, "segments", "w000-000000000002.seg"));
	cr_assert_geq(t_write(&s, body, 1000, 1000), 0);
	t_commit(&s);
	cr_assert_geq(t_write(&c, body, len, len), 0);
	t_commit(&c);
	static struct t_client *const waiting[] = {&b, &s, &c};
	for (unsigned i = 0; i < 3; i++)
		t_pump_until_committed(waiting[i], 1);
	cr_assert_eq(b.status, -EIO, "B lost its envelope but got %d", b.status);
	cr_assert_eq(s.status, 0, "S lost nothing but got %d", s.status);
	cr_assert_eq(c.status, 0, "C lost nothing but got %d", c.status);
	int r = t_write(&t, body, 10, 10);
	if (r >= 0) {
		t_commit(&t);
		t_pump_until_committed(&t, 1);
		cr_assert_eq(t.status, -EIO, "T lost a chunk but got %d", t.status);
	} else {
		cr_assert_eq(r, -EIO);
		queue_message_abort(t.m);
	}

	t_reopen();
	static const char *const rcpt[] = {"bob@dest.example"};
	t_expect_message(a.id, "alice@client.example", rcpt, 1, body, 500);
	t_expect_message(s.id, "alice@client.example", rcpt, 1, body, 1000);
	t_expect_message(c.id, "alice@client.example", rcpt, 1, body, len);
	cr_assert_not(t_present(b.id), "B got 451 but came back");
	cr_assert_not(t_present(t.id), "T was never acknowledged but came back");
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.messages, 3);
}

/* A session paused by backpressure whose message then loses its records to
 * a failed sync still gets resume(): it reads on, its next write() fails,
 * and it can answer 451 instead of waiting for its DATA timeout. */
Test(store, paused_message_failed_by_a_sync_error_is_resumed)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	setenv("FERRY_FAULT_FSYNC", "1", 1);
	ts.cfg.batch_cap = 64u << 10;
	t_open();
	t_start_workers();
	size_t len = 1u << 20;
	uint8_t *body = t_body(len, 16);
	static struct t_client p;
	t_client_init(&p);
	cr_assert_eq(t_begin(&p, "bob@dest.example"), 0);
	int r = t_write(&p, body, len, 16384);
	cr_assert_eq(r, -EIO, "write() after the failed sync: %d", r);
	cr_assert_gt(p.resumed, 0);
	queue_message_abort(p.m);
	t_pump_idle();
	t_reopen();
	cr_assert_not(t_present(p.id));
}

/* ---- 6. torn tail at every byte ---------------------------------------------- */

static void t_write_file(const char *path, const uint8_t *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
	ssize_t r = write(fd, data, len);
	close(fd);
	cr_assert_eq(r, (ssize_t)len);
}

Test(store, torn_tail_at_every_byte_loses_nothing_acknowledged)
{
	ts.cfg.segment_size = 64u << 10;
	ts.cfg.batch_cap = 1u << 20;
	t_open();
	t_start_workers();
	const char *const rcpt[] = {"bob@dest.example"};
	uint8_t body[400];
	t_fill(body, sizeof(body), 8);

	enum { NA = 3, NB = 4 };
	static struct t_client a[NA], b[NB];
	for (unsigned i = 0; i < NA; i++)
		t_send(&a[i], rcpt[0], body, 50 + 40 * i);
	t_pump_until_committed(a, NA);
	char seg[256];
	snprintf(seg, sizeof(seg), "%s/segments/w000-000000000001.seg", ts.spool);
	size_t end_a = t_used_end(seg);

	/* B: one message whole, two interleaved (committed in reverse), one
	 * with an empty body. */
	size_t blen[NB] = {120, 77, 301, 0};
	t_send(&b[0], rcpt[0], body, blen[0]);
	t_client_init(&b[1]);
	t_client_init(&b[2]);
	cr_assert_eq(t_begin(&b[1], rcpt[0]), 0);
	cr_assert_eq(t_begin(&b[2], rcpt[0]), 0);
	cr_assert_geq(t_write(&b[1], body, blen[1], 30), 0);
	cr_assert_geq(t_write(&b[2], body, blen[2], 300), 0);
	t_commit(&b[2]);
	t_commit(&b[1]);
	t_send(&b[3], rcpt[0], body, blen[3]);
	t_pump_until_committed(b, NB);
	for (unsigned i = 0; i < NB; i++)
		cr_assert_eq(b[i].status, 0);
	t_close();
	cr_assert_eq(t_segments(), 1);

	size_t seg_size;
	uint8_t *orig = t_read_file(seg, &seg_size);
	static struct t_record recs[256];
	size_t end_b;
	size_t nrecs = t_records(orig, seg_size, recs, 256, &end_b);
	cr_assert_lt(end_a, end_b);
	/* B's records and which message each COMMIT completes. */
	size_t first_b = 0;
	while (first_b < nrecs && recs[first_b].off < end_a)
		first_b++;
	cr_assert_eq(recs[first_b].off, end_a, "A's last batch does not end on a record");
	/* B went out as one batch: one BATCH record, its last. */
	unsigned batches_in_b = 0;
	for (size_t k = first_b; k < nrecs; k++)
		batches_in_b += recs[k].type == RECORD_BATCH;
	cr_assert_eq(batches_in_b, 1, "B was written as %u batches", batches_in_b);
	cr_assert_eq(recs[nrecs - 1].type, RECORD_BATCH);
	int commit_of[NB];
	for (unsigned i = 0; i < NB; i++) {
		commit_of[i] = -1;
		for (size_t k = first_b; k < nrecs; k++)
			if (recs[k].type == RECORD_COMMIT &&
			    memcmp(recs[k].id, b[i].id, QUEUE_ID_LEN) == 0)
				commit_of[i] = (int)k;
		cr_assert_geq(commit_of[i], 0, "no COMMIT for B message %u", i);
	}

	snprintf(t_scratch, sizeof(t_scratch), "%s-scratch", ts.spool);
	char scratch_seg[256], scratch_segments[256];
	snprintf(scratch_segments, sizeof(scratch_segments), "%s/segments", t_scratch);
	snprintf(scratch_seg, sizeof(scratch_seg), "%s/w000-000000000001.seg", scratch_segments);
	unsigned tried = 0, torn_seen = 0;
	for (size_t o = end_a; o <= end_b; o++) {
		/* Every byte of B's range is tried: a copy of the spool whose
		 * segment was cut at o and zero-filled back to its size. */
		t_remove_tree(t_scratch);
		cr_assert_eq(mkdir(t_scratch, 0750), 0);
		cr_assert_eq(mkdir(scratch_segments, 0750), 0);
		t_write_file(scratch_seg, orig, seg_size);
		int fd = open(scratch_seg, O_RDWR | O_CLOEXEC);
		cr_assert_geq(fd, 0);
		cr_assert_eq(ftruncate(fd, (off_t)o), 0);
		cr_assert_eq(ftruncate(fd, (off_t)seg_size), 0);
		close(fd);

		/* What the cut destroyed: the first record of B whose checksummed
		 * bytes it changed. Records before it are intact. */
		size_t damaged = nrecs;
		for (size_t k = first_b; k < nrecs && damaged == nrecs; k++) {
			size_t from = o > recs[k].off ? o : recs[k].off;
			for (size_t i = from; i < recs[k].checked_end; i++)
				if (orig[i] != 0) {
					damaged = k;
					break;
				}
		}
		/* B is one batch, ended by its BATCH record: it is kept whole
		 * when the cut changed none of its checksummed bytes, and
		 * dropped whole otherwise (its sync never completed). What is
		 * left of it then is a torn tail, unless the cut left nothing
		 * but zeros after A. */
		bool intact = damaged == nrecs;
		bool torn = false;
		if (!intact)
			for (size_t i = end_a; i < o; i++)
				torn |= orig[i] != 0;

		t_open_into(t_scratch);
		struct queue_store_summary sum;
		queue_store_summary(ts.store, &sum);
		cr_assert_eq(sum.corrupt, 0, "cut at %zu judged corrupt", o);
		cr_assert_eq(sum.torn, torn ? 1 : 0, "cut at %zu (B is %zu..%zu): torn=%llu", o,
			     end_a, end_b, (unsigned long long)sum.torn);
		torn_seen += torn;
		static char ids[NA + NB + 1][QUEUE_ID_LEN + 1];
		unsigned n = t_domain_ids("dest.example", ids, NA + NB + 1);
		unsigned expected = NA;
		for (unsigned i = 0; i < NA; i++)
			cr_assert(t_ids_contain(ids, n, a[i].id), "cut at %zu lost A message %u", o,
				  i);
		for (unsigned i = 0; i < NB; i++) {
			bool want = intact;
			expected += want;
			cr_assert_eq(t_ids_contain(ids, n, b[i].id), want,
				     "cut at %zu: B message %u (COMMIT ends at %zu) %s", o, i,
				     recs[commit_of[i]].end, want ? "lost" : "came back");
			if (want)
				t_expect_body(t_scratch, t_report(b[i].id), body, blen[i]);
		}
		cr_assert_eq(n, expected, "cut at %zu: %u recipients, %u expected (duplicates?)", o,
			     n, expected);
		cr_assert_eq(sum.messages, expected);
		queue_store_close(ts.store);
		ts.store = NULL;
		tried++;
	}
	cr_assert_gt(torn_seen, (end_b - end_a) / 2, "only %u of %u cuts judged torn", torn_seen,
		     tried);
	(void)commit_of;
}

/* ---- 7. corruption ----------------------------------------------------------- */

Test(store, corrupt_segment_is_quarantined_and_the_rest_served)
{
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 64u << 10;
	t_open();
	t_start_workers();
	enum { N = 60 };
	static struct t_client c[N];
	size_t len = 6000;
	uint8_t *body = t_body(len, 7);
	for (unsigned i = 0; i < N; i += 5) {
		for (unsigned k = i; k < i + 5; k++)
			t_send(&c[k], "bob@dest.example", body, len);
		t_pump_until_committed(&c[i], 5);
	}
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(c[i].status, 0);
	t_close();
	cr_assert_geq(t_segments(), 3, "only %u segments", t_segments());

	/* Flip one bit in a BODY record in the middle of segment 2. */
	char seg[256];
	snprintf(seg, sizeof(seg), "%s/segments/w000-000000000002.seg", ts.spool);
	size_t size, used;
	uint8_t *data = t_read_file(seg, &size);
	static struct t_record recs[512];
	size_t nrecs = t_records(data, size, recs, 512, &used);
	cr_assert_lt(nrecs, 512);
	size_t victim = nrecs;
	for (size_t k = nrecs / 2; k + 1 < nrecs; k++)
		if (recs[k].type == RECORD_BODY) {
			victim = k;
			break;
		}
	cr_assert_lt(victim, nrecs);
	size_t at = (recs[victim].off + recs[victim].checked_end) / 2;
	int fd = open(seg, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	uint8_t byte = data[at] ^ 0x10;
	cr_assert_eq(pwrite(fd, &byte, 1, (off_t)at), 1);
	close(fd);

	t_open();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.corrupt, 1);
	cr_assert(t_exists(ts.spool, "quarantine", "w000-000000000002.seg"));
	cr_assert_not(t_exists(ts.spool, "segments", "w000-000000000002.seg"));
	static const char *const rcpt[] = {"bob@dest.example"};
	unsigned present = 0;
	for (unsigned i = 0; i < N; i++) {
		bool in_seg2 = false;
		for (size_t k = 0; k < nrecs; k++)
			in_seg2 |= memcmp(recs[k].id, c[i].id, QUEUE_ID_LEN) == 0;
		if (in_seg2) {
			cr_assert_not(t_present(c[i].id), "message %u from the bad segment served",
				      i);
		} else {
			t_expect_message(c[i].id, "alice@client.example", rcpt, 1, body, len);
			present++;
		}
	}
	cr_assert_gt(present, N / 3);
	cr_assert_eq(sum.messages, present);

	/* ferryd goes on serving: new mail is taken and kept. */
	t_start_workers();
	static struct t_client next;
	t_send(&next, "bob@dest.example", body, 100);
	t_pump_until_committed(&next, 1);
	cr_assert_eq(next.status, 0);
	t_reopen();
	t_expect_message(next.id, "alice@client.example", rcpt, 1, body, 100);
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.corrupt, 0, "the quarantined segment was read again");
}

/* A damaged length that points past the end of the file looks like a
 * record cut short, but good records follow it: corruption, not a torn
 * tail to cut (which would throw acknowledged messages away). */
Test(store, damaged_length_past_the_end_is_corruption_not_a_torn_tail)
{
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 64u << 10;
	t_open();
	t_start_workers();
	enum { N = 15 };
	static struct t_client c[N];
	uint8_t *body = t_body(6000, 14);
	for (unsigned i = 0; i < N; i++) {
		t_send(&c[i], "bob@dest.example", body, 6000);
		t_pump_until_committed(&c[i], 1);
	}
	t_close();
	cr_assert_eq(t_segments(), 1);
	char seg[256];
	snprintf(seg, sizeof(seg), "%s/segments/w000-000000000001.seg", ts.spool);
	size_t size, used;
	uint8_t *data = t_read_file(seg, &size);
	static struct t_record recs[256];
	size_t nrecs = t_records(data, size, recs, 256, &used);
	/* The ENVELOPE of the last message but two. */
	size_t victim = nrecs;
	for (size_t k = nrecs; k > 0; k--)
		if (recs[k - 1].type == RECORD_ENVELOPE &&
		    memcmp(recs[k - 1].id, c[N - 3].id, QUEUE_ID_LEN) == 0)
			victim = k - 1;
	cr_assert_lt(victim, nrecs);
	uint32_t length = (uint32_t)(size - recs[victim].off); /* one byte too long */
	uint8_t le[4] = {(uint8_t)length, (uint8_t)(length >> 8), (uint8_t)(length >> 16),
			 (uint8_t)(length >> 24)};
	int fd = open(seg, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, le, 4, (off_t)recs[victim].off), 4);
	close(fd);

	t_open();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.torn, 0, "judged a torn tail: the messages after it were cut off");
	cr_assert_eq(sum.corrupt, 1);
	cr_assert(t_exists(ts.spool, "quarantine", "w000-000000000001.seg"));
	struct stat st;
	char moved[256];
	snprintf(moved, sizeof(moved), "%s/quarantine/w000-000000000001.seg", ts.spool);
	cr_assert_eq(stat(moved, &st), 0);
	cr_assert_eq((size_t)st.st_size, size, "the quarantined segment was cut");
}

/* A segment quarantined once keeps its copy when a later segment of the
 * same name (its sequence number came back) is quarantined too. */
Test(store, quarantine_never_overwrites_an_earlier_segment)
{
	char seg[256], first[256], second[300];
	snprintf(seg, sizeof(seg), "%s/segments/w000-000000000001.seg", ts.spool);
	snprintf(first, sizeof(first), "%s/quarantine/w000-000000000001.seg", ts.spool);
	uint8_t *body = t_body(6000, 15);
	for (unsigned round = 0; round < 2; round++) {
		t_open();
		t_start_workers();
		static struct t_client c[6];
		for (unsigned i = 0; i < 6; i++) {
			t_send(&c[i], "bob@dest.example", body, 6000);
			t_pump_until_committed(&c[i], 1);
		}
		t_close();
		size_t size, used;
		uint8_t *data = t_read_file(seg, &size);
		static struct t_record recs[64];
		size_t nrecs = t_records(data, size, recs, 64, &used);
		size_t at = (recs[nrecs / 2].off + recs[nrecs / 2].checked_end) / 2;
		uint8_t byte = data[at] ^ 1;
		t_release(data);
		int fd = open(seg, O_RDWR | O_CLOEXEC);
		cr_assert_geq(fd, 0);
		cr_assert_eq(pwrite(fd, &byte, 1, (off_t)at), 1);
		close(fd);
		t_open(); /* quarantines it; nothing is written, so sequence 1 comes back */
		struct queue_store_summary sum;
		queue_store_summary(ts.store, &sum);
		cr_assert_eq(sum.corrupt, 1);
		t_close();
	}
	char quarantine[256];
	snprintf(quarantine, sizeof(quarantine), "%s/quarantine", ts.spool);
	cr_assert_eq(t_count_files(quarantine), 2, "%u files in quarantine/",
		     t_count_files(quarantine));
	snprintf(second, sizeof(second), "%s.1", first);
	cr_assert_eq(access(first, F_OK), 0);
	cr_assert_eq(access(second, F_OK), 0);
}

/* Files in segments/ that only look like segments (a backup copy under a
 * near-miss name) are not read: their messages would come back twice. */
Test(store, near_miss_names_in_segments_are_left_alone)
{
	t_open();
	t_start_workers();
	static struct t_client c;
	t_send(&c, "bob@dest.example", (const uint8_t *)"hi\r\n", 4);
	t_pump_until_committed(&c, 1);
	t_close();
	char seg[256], copy[256];
	snprintf(seg, sizeof(seg), "%s/segments/w000-000000000001.seg", ts.spool);
	size_t size;
	uint8_t *data = t_read_file(seg, &size);
	static const char *const names[] = {"w 00-000000000001.seg", "w+00-000000000001.seg",
					    "w00-0000000000001.seg"};
	for (unsigned i = 0; i < 3; i++) {
		snprintf(copy, sizeof(copy), "%s/segments/%s", ts.spool, names[i]);
		t_write_file(copy, data, size);
	}
	t_open();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.messages, 1, "%llu messages from one", (unsigned long long)sum.messages);
	char ids[4][QUEUE_ID_LEN + 1];
	cr_assert_eq(t_domain_ids("dest.example", ids, 4), 1);
	for (unsigned i = 0; i < 3; i++) {
		struct stat st;
		snprintf(copy, sizeof(copy), "%s/segments/%s", ts.spool, names[i]);
		cr_assert_eq(stat(copy, &st), 0, "%s was removed", names[i]);
		cr_assert_eq((size_t)st.st_size, size, "%s was changed", names[i]);
	}
}

/* ferryd started as root gives its spool to the user it runs as: what an
 * earlier run as root left, and each segment a worker makes while still
 * root. A link planted in the spool is not followed. */
static void t_expect_owner(const char *path, uid_t uid, gid_t gid)
{
	struct stat st;
	cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
	cr_expect(st.st_uid == uid && st.st_gid == gid, "%s belongs to %u:%u, not %u:%u", path,
		  (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)uid, (unsigned)gid);
}

static void t_expect_segments_owner(uid_t uid, gid_t gid)
{
	char dir[256], path[600];
	snprintf(dir, sizeof(dir), "%s/segments", ts.spool);
	DIR *d = opendir(dir);
	cr_assert_not_null(d);
	unsigned seen = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (strstr(e->d_name, ".seg") == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		t_expect_owner(path, uid, gid);
		seen++;
	}
	closedir(d);
	cr_assert_gt(seen, 0, "no segment in %s", dir);
}

Test(store, spool_is_given_to_its_owner_with_what_an_earlier_run_left)
{
	if (geteuid() != 0)
		cr_skip_test("giving files away takes root (ferryd gives its spool to its user "
			     "as root)");
	enum { OWNER_UID = 4242, OWNER_GID = 4243 }; /* chown takes ids no account has */
	t_open();
	t_start_workers();
	static struct t_client c[2];
	t_send(&c[0], "bob@dest.example", (const uint8_t *)"hi\r\n", 4);
	t_pump_until_committed(&c[0], 1);
	t_close();
	char path[600], outside[256], link[300];
	snprintf(path, sizeof(path), "%s/quarantine/w009-000000000001.seg", ts.spool);
	t_write_file(path, (const uint8_t *)"x", 1);
	snprintf(t_scratch, sizeof(t_scratch), "/tmp/ferry-test-store-outside-XXXXXX");
	cr_assert_not_null(mkdtemp(t_scratch));
	snprintf(outside, sizeof(outside), "%s/passwd", t_scratch);
	t_write_file(outside, (const uint8_t *)"x", 1);
	snprintf(link, sizeof(link), "%s/segments/planted.seg", ts.spool);
	cr_assert_eq(symlink(outside, link), 0, "%s", strerror(errno));

	ts.cfg.owner_set = true;
	ts.cfg.owner_uid = OWNER_UID;
	ts.cfg.owner_gid = OWNER_GID;
	t_open();
	t_expect_owner(ts.spool, OWNER_UID, OWNER_GID);
	static const char *const names[] = {"lock", "segments", "quarantine",
					    "quarantine/w009-000000000001.seg"};
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", ts.spool, names[i]);
		t_expect_owner(path, OWNER_UID, OWNER_GID);
	}
	t_expect_owner(link, 0, 0);
	t_expect_owner(outside, 0, 0);
	cr_assert_eq(unlink(link), 0);
	t_expect_segments_owner(OWNER_UID, OWNER_GID);
	/* A restarted writer never appends to an old segment: this one is new,
	 * made by root, and its user's all the same. */
	unsigned before = t_segments();
	t_start_workers();
	t_send(&c[1], "bob@dest.example", (const uint8_t *)"hi\r\n", 4);
	t_pump_until_committed(&c[1], 1);
	cr_assert_eq(c[1].status, 0);
	cr_assert_gt(t_segments(), before, "no new segment was made");
	t_expect_segments_owner(OWNER_UID, OWNER_GID);
}

/* ---- 8. limits --------------------------------------------------------------- */

Test(store, max_bytes_refuses_new_mail_and_keeps_the_old)
{
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 64u << 10;
	ts.cfg.max_bytes = 2 * ts.cfg.segment_size;
	t_open();
	t_start_workers();
	size_t len = 20000;
	uint8_t *body = t_body(len, 8);
	static struct t_client c[40];
	unsigned acked = 0;
	int refusal = 0;
	for (unsigned i = 0; i < 40 && refusal == 0; i++) {
		t_client_init(&c[i]);
		int r = t_begin(&c[i], "bob@dest.example");
		if (r != 0) {
			refusal = r;
			break;
		}
		r = t_write(&c[i], body, len, 16384);
		if (r < 0) {
			refusal = r;
			queue_message_abort(c[i].m);
			break;
		}
		t_commit(&c[i]);
		t_pump_until_committed(&c[i], 1);
		if (c[i].status != 0)
			refusal = c[i].status;
		else
			acked++;
	}
	cr_assert_eq(refusal, -ENOSPC, "refused with %d (the session says 452 4.3.1)", refusal);
	cr_assert_geq(acked, 6, "only %u messages taken", acked);
	cr_assert_eq(queue_check_space(ts.queues[0], 0), -ENOSPC);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, acked);
	static const char *const rcpt[] = {"bob@dest.example"};
	for (unsigned i = 0; i < acked; i++)
		t_expect_message(c[i].id, "alice@client.example", rcpt, 1, body, len);
}

Test(store, max_bytes_refuses_a_message_that_needs_a_third_segment)
{
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 64u << 10;
	ts.cfg.max_bytes = 2 * ts.cfg.segment_size;
	t_open();
	t_start_workers();
	size_t len = 300u << 10;
	uint8_t *body = t_body(len, 9);
	static struct t_client c, small;
	t_send(&small, "bob@dest.example", body, 1000);
	t_pump_until_committed(&small, 1);
	cr_assert_eq(small.status, 0);
	t_client_init(&c);
	cr_assert_eq(t_begin(&c, "bob@dest.example"), 0);
	int r = t_write(&c, body, len, 65536);
	if (r >= 0) {
		t_commit(&c);
		t_pump_until_committed(&c, 1);
		cr_assert_eq(c.status, -ENOSPC);
	} else {
		cr_assert_eq(r, -ENOSPC, "write: %d", r);
		queue_message_abort(c.m);
	}
	t_pump_idle();
	t_reopen();
	cr_assert(t_present(small.id));
	cr_assert_not(t_present(c.id));
}

Test(store, max_messages_refuses_the_sixth)
{
	ts.cfg.max_messages = 5;
	t_open();
	t_start_workers();
	static struct t_client c[7];
	for (unsigned i = 0; i < 4; i++)
		t_send(&c[i], "bob@dest.example", (const uint8_t *)"hi\r\n", 4);
	t_pump_until_committed(c, 4);
	/* Two begun while there is room for one. */
	t_client_init(&c[4]);
	t_client_init(&c[5]);
	cr_assert_eq(t_begin(&c[4], "bob@dest.example"), 0);
	cr_assert_eq(t_begin(&c[5], "bob@dest.example"), 0);
	t_commit(&c[4]);
	t_pump_until_committed(&c[4], 1);
	cr_assert_eq(c[4].status, 0);
	t_pump_quiet();
	cr_assert_eq(queue_check_space(ts.queues[0], 0), -ENOSPC);
	t_client_init(&c[6]);
	cr_assert_eq(t_begin(&c[6], "bob@dest.example"), -ENOSPC);
	t_commit(&c[5]); /* asserts the refusal does not come from inside */
	t_pump_until_committed(&c[5], 1);
	cr_assert_eq(c[5].status, -ENOSPC);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 5);
	cr_assert_not(t_present(c[5].id));
}

Test(store, max_messages_counts_commits_still_in_flight)
{
	ts.cfg.max_messages = 5;
	t_open();
	t_start_workers();
	static struct t_client c[6];
	/* Six sessions reach end of DATA in the same loop turn. */
	for (unsigned i = 0; i < 6; i++) {
		t_client_init(&c[i]);
		cr_assert_eq(t_begin(&c[i], "bob@dest.example"), 0);
		cr_assert_eq(t_write(&c[i], (const uint8_t *)"hi\r\n", 4, 4), 0);
	}
	for (unsigned i = 0; i < 6; i++)
		t_commit(&c[i]);
	t_pump_until_committed(c, 6);
	unsigned ok = 0, refused = 0;
	for (unsigned i = 0; i < 6; i++) {
		ok += c[i].status == 0;
		refused += c[i].status == -ENOSPC;
	}
	cr_assert_eq(ok, 5, "%u of 6 messages taken with max_messages = 5", ok);
	cr_assert_eq(refused, 1);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 5);
}

/* ---- 9. one ferryd per spool ------------------------------------------------- */

Test(store, second_open_of_a_spool_fails_naming_it)
{
	t_open();
	struct queue_store *second = NULL;
	char err[512] = "";
	int r = queue_store_open(&second, &ts.cfg, err, sizeof(err));
	cr_assert_lt(r, 0, "a second store opened the same spool");
	cr_assert_null(second);
	cr_assert_not_null(strstr(err, ts.spool), "the error does not name the spool: %s", err);
	t_close();
	t_open(); /* the lock went with the first store */
}

/* ---- 10. reclaiming segments ------------------------------------------------- */

Test(store, segment_of_aborted_messages_is_deleted_when_rolled)
{
	ts.cfg.segment_size = 256u << 10;
	ts.cfg.batch_cap = 64u << 10;
	t_open();
	t_start_workers();
	size_t len = 70000; /* one 64 KiB BODY record written before the abort */
	uint8_t *body = t_body(len, 10);
	static struct t_client dead[4], live;
	/* Three fill most of segment 1; the fourth's body rolls to segment 2,
	 * where the live message then goes whole. */
	for (unsigned i = 0; i < 4; i++) {
		t_client_init(&dead[i]);
		cr_assert_eq(t_begin(&dead[i], "bob@dest.example"), 0);
		cr_assert_geq(t_write(&dead[i], body, len, len), 0);
		if (i < 3)
			cr_assert(t_exists(ts.spool, "segments", "w000-000000000001.seg"));
		queue_message_abort(dead[i].m);
	}
	cr_assert(t_exists(ts.spool, "segments", "w000-000000000002.seg"));
	t_send(&live, "bob@dest.example", body, len);
	t_pump_until_committed(&live, 1);
	t_pump_idle();
	cr_assert_eq(live.status, 0);
	cr_assert_not(t_exists(ts.spool, "segments", "w000-000000000001.seg"),
		      "a closed segment with nothing in it was kept");
	t_reopen();
	static const char *const rcpt[] = {"bob@dest.example"};
	t_expect_message(live.id, "alice@client.example", rcpt, 1, body, len);
}

Test(store, segment_of_aborted_messages_is_deleted_at_restart)
{
	t_open();
	t_start_workers();
	uint8_t body[3000];
	t_fill(body, sizeof(body), 11);
	static struct t_client dead;
	t_client_init(&dead);
	cr_assert_eq(t_begin(&dead, "bob@dest.example"), 0);
	cr_assert_geq(t_write(&dead, body, sizeof(body), 1000), 0);
	for (unsigned i = 0; i < 5; i++)
		t_turn();
	queue_message_abort(dead.m);
	t_pump_idle();
	t_reopen();
	cr_assert_eq(t_segments(), 0, "%u segments left with nothing in them", t_segments());
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.messages, 0);
}

/* A segment whose only message continues into the next one is not empty:
 * deleting it when it rolls would take the message's envelope away. */
Test(store, segment_holding_a_message_still_streaming_is_kept)
{
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 64u << 10;
	t_open();
	t_start_workers();
	size_t len = 200000;
	uint8_t *body = t_body(len, 12);
	static struct t_client c;
	t_client_init(&c);
	cr_assert_eq(t_begin(&c, "bob@dest.example"), 0);
	cr_assert_geq(t_write(&c, body, len, 16384), 0);
	for (unsigned i = 0; i < 10; i++)
		t_turn(); /* segment 1 rolled and all its batches finished */
	t_commit(&c);
	t_pump_until_committed(&c, 1);
	cr_assert_eq(c.status, 0);
	t_reopen();
	static const char *const rcpt[] = {"bob@dest.example"};
	t_expect_message(c.id, "alice@client.example", rcpt, 1, body, len);
}

/* ---- batch boundaries: torn last batch vs. lost acknowledged data ------------ */

/* Three acknowledged batches, then the image of each case is made by hand. */
static size_t t_three_batches(struct t_client *c, unsigned n, uint8_t **image, size_t *size,
			      struct t_record *recs, size_t max, size_t *nrecs, char *seg,
			      size_t seg_len)
{
	ts.cfg.segment_size = 1u << 20;
	ts.cfg.batch_cap = 1u << 20;
	t_open();
	t_start_workers();
	uint8_t *body = t_body(3000, 3);
	for (unsigned i = 0; i < n; i += n / 3) {
		for (unsigned k = i; k < i + n / 3; k++)
			t_send(&c[k], "bob@dest.example", body, 3000);
		t_pump_until_committed(&c[i], n / 3);
	}
	t_close();
	snprintf(seg, seg_len, "%s/segments/w000-000000000001.seg", ts.spool);
	size_t used;
	*image = t_read_file(seg, size);
	*nrecs = t_records(*image, *size, recs, max, &used);
	unsigned batches = 0;
	for (size_t k = 0; k < *nrecs; k++)
		batches += recs[k].type == RECORD_BATCH;
	cr_assert_eq(batches, 3, "%u batches", batches);
	return used;
}

static void t_zero_range(const char *path, size_t from, size_t to)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	static const uint8_t zeros[8192];
	for (size_t at = from; at < to;) {
		size_t n = to - at < sizeof(zeros) ? to - at : sizeof(zeros);
		cr_assert_eq(pwrite(fd, zeros, n, (off_t)at), (ssize_t)n);
		at += n;
	}
	close(fd);
}

/* Pages of the last batch landed out of order (its BATCH record did, a
 * middle page did not): its sync never completed, so it is a torn tail,
 * and the two batches before it are served. */
Test(store, torn_last_batch_with_a_hole_is_torn_not_corrupt)
{
	enum { N = 9 };
	static struct t_client c[N];
	static struct t_record recs[256];
	uint8_t *image;
	size_t size, nrecs;
	char seg[256];
	t_three_batches(c, N, &image, &size, recs, 256, &nrecs, seg, sizeof(seg));
	size_t second_end = 0, batches = 0;
	for (size_t k = 0; k < nrecs; k++)
		if (recs[k].type == RECORD_BATCH && ++batches == 2)
			second_end = recs[k].end;
	/* A hole in the middle of the third batch, its BATCH record intact. */
	size_t last_start = second_end, last_end = recs[nrecs - 1].end;
	t_zero_range(seg, last_start + (last_end - last_start) / 3,
		     last_start + (last_end - last_start) / 2);
	t_open();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.corrupt, 0, "a torn last batch was judged corruption");
	cr_assert_eq(sum.torn, 1);
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(t_present(c[i].id), i < 2 * N / 3, "message %u", i);
}

/* A hole in an acknowledged batch with a whole batch after it is a lost
 * write, not a torn tail: quarantine, never cut. */
Test(store, lost_write_in_an_acknowledged_batch_is_corruption)
{
	enum { N = 9 };
	static struct t_client c[N];
	static struct t_record recs[256];
	uint8_t *image;
	size_t size, nrecs;
	char seg[256];
	t_three_batches(c, N, &image, &size, recs, 256, &nrecs, seg, sizeof(seg));
	size_t first_end = 0;
	for (size_t k = 0; k < nrecs && first_end == 0; k++)
		if (recs[k].type == RECORD_BATCH)
			first_end = recs[k].end;
	t_zero_range(seg, first_end / 2, first_end / 2 + 4096);
	t_open();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.corrupt, 1);
	cr_assert_eq(sum.torn, 0);
	cr_assert(t_exists(ts.spool, "quarantine", "w000-000000000001.seg"));
}

/* Damage in the last batch of a segment the writer had moved past is not a
 * torn tail (that batch was synced before the next segment got any): the
 * segment is quarantined, never cut. */
Test(store, damaged_last_batch_of_an_older_segment_is_corruption)
{
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 64u << 10;
	t_open();
	t_start_workers();
	enum { N = 40 };
	static struct t_client c[N];
	size_t len = 6000;
	uint8_t *body = t_body(len, 5);
	for (unsigned i = 0; i < N; i += 4) {
		for (unsigned k = i; k < i + 4; k++)
			t_send(&c[k], "bob@dest.example", body, len);
		t_pump_until_committed(&c[i], 4);
	}
	t_close();
	cr_assert_geq(t_segments(), 2, "only %u segments", t_segments());

	char seg[256];
	snprintf(seg, sizeof(seg), "%s/segments/w000-000000000001.seg", ts.spool);
	size_t size, used;
	uint8_t *data = t_read_file(seg, &size);
	static struct t_record recs[512];
	size_t nrecs = t_records(data, size, recs, 512, &used);
	cr_assert_eq(recs[nrecs - 1].type, RECORD_BATCH);
	/* A bit in the last batch, before its BATCH record. */
	size_t victim = nrecs - 2;
	size_t at = (recs[victim].off + recs[victim].checked_end) / 2;
	int fd = open(seg, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	uint8_t byte = data[at] ^ 0x04;
	cr_assert_eq(pwrite(fd, &byte, 1, (off_t)at), 1);
	close(fd);

	t_open();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.corrupt, 1, "judged torn and cut: acknowledged mail would be lost");
	cr_assert_eq(sum.torn, 0);
	cr_assert(t_exists(ts.spool, "quarantine", "w000-000000000001.seg"));
}

/* ---- recipients that end: outcomes, done messages, reclaimed segments ------ */

/* Take every ready recipient of `domain` on whichever worker owns its
 * shard and finish it; returns how many. */
static unsigned t_finish_domain(const char *domain, enum queue_outcome outcome, unsigned max)
{
	unsigned total = 0;
	for (uint32_t w = 0; w < ts.nworkers; w++) {
		struct queue_rcpt *r[64];
		size_t n;
		while (total < max &&
		       (n = sched_take_ready(ts.queues[w], domain, strlen(domain), r,
					     max - total < 64 ? max - total : 64)) > 0) {
			for (size_t i = 0; i < n; i++) {
				size_t len;
				const char *addr = sched_rcpt_address(r[i], &len);
				cr_assert(len > strlen(domain) &&
					  strcmp(addr + len - strlen(domain), domain) == 0);
				sched_finish(ts.queues[w], r[i], outcome, "250 2.0.0 ok");
			}
			total += (unsigned)n;
		}
	}
	return total;
}

/* ---- the recipients' states (sched.h) ------------------------------------------ */

/* The state word ferryctl list shows for the recipient `rcpt` of `domain`. */
static const char *t_state_of(const char *domain, const char *rcpt)
{
	static char state[16];
	buf_clear(&t_out);
	struct queue_report_cursor cursor = {0};
	for (uint32_t i = 0; i < ts.nworkers; i++)
		while (queue_report_domain(ts.queues[i], domain, strlen(domain), &cursor, 100,
					   &t_out) == 1)
			;
	cr_assert_eq(buf_append(&t_out, "", 1), 0);
	const char *line = strstr(buf_head(&t_out), rcpt);
	if (line == NULL)
		return "absent";
	while (line > buf_head(&t_out) && line[-1] != '\n')
		line--;
	/* "<id> <state> ..." */
	cr_assert_eq(sscanf(line + QUEUE_ID_LEN + 1, "%15s", state), 1);
	return state;
}

/* One message from alice to ann and bo @later.example, stored on worker 0. */
static void t_store_later(struct t_client *c)
{
	static const char *const rcpts[] = {"ann@later.example", "bo@later.example"};
	t_client_init(c);
	cr_assert_eq(t_begin_on(ts.queues[0], c, "alice@client.example", rcpts, 2), 0);
	cr_assert_geq(t_write(c, (const uint8_t *)"hi\r\n", 4, 4), 0);
	t_commit(c);
	t_pump_until_committed(c, 1);
}

/* A delivery that is refused for now: the recipient waits its time, is
 * released when it has passed, a flush (ETRN) releases it at once, and
 * its attempts are journaled: a restart brings it back to be tried. */
Test(store, deferred_recipients_wait_their_time_and_survive_a_restart)
{
	t_open();
	t_start_workers();
	static struct t_client c;
	t_store_later(&c);
	struct queue *q = ts.queues[0];
	struct queue_rcpt *r[4];
	cr_assert_eq(sched_take_ready(q, "later.example", 13, r, 4), 2);
	cr_assert_str_eq(t_state_of("later.example", "ann@"), "inflight");
	uint64_t now = ts.workers[0]->now_ms;
	size_t len;
	cr_assert_str_eq(sched_rcpt_address(r[0], &len), "ann@later.example");
	sched_defer(q, r[0], now + 60000, "451 4.7.1 try later");
	sched_finish(q, r[1], QUEUE_DELIVERED, "250 2.0.0 ok");
	cr_assert_str_eq(t_state_of("later.example", "ann@"), "deferred");
	cr_assert_str_eq(t_state_of("later.example", "bo@"), "absent");
	cr_assert_eq(sched_take_ready(q, "later.example", 13, r, 4), 0, "a deferred one was taken");
	cr_assert_eq(sched_release_due(q, "later.example", 13, now + 59000), 0, "released early");
	cr_assert_eq(sched_release_due(q, "later.example", 13, now + 60000), 1);
	cr_assert_str_eq(t_state_of("later.example", "ann@"), "ready");
	/* Tried again, deferred again for an hour: a flush does not wait. */
	cr_assert_eq(sched_take_ready(q, "later.example", 13, r, 4), 1);
	sched_defer(q, r[0], now + 3600000, "451 4.7.1 try later");
	cr_assert_eq(sched_flush(q, "later.example", 13), 1);
	cr_assert_str_eq(t_state_of("later.example", "ann@"), "ready");
	cr_assert_eq(sched_take_ready(q, "later.example", 13, r, 4), 1);
	sched_defer(q, r[0], now + 3600000, "451 4.7.1 try later");
	t_pump_idle();

	/* The journal, read as ferryctl --spool does: two attempts, one
	 * recipient deferred, the other delivered. */
	struct spool_view *v;
	char err[256];
	cr_assert_eq(spool_view_open(&v, ts.spool, err, sizeof(err)), 0, "%s", err);
	const struct spool_view_message *m = spool_view_find(v, c.id);
	cr_assert_not_null(m);
	cr_assert_eq(m->rcpts[0].state, SPOOL_VIEW_DEFERRED);
	cr_assert_eq(m->rcpts[0].attempts, 3);
	cr_assert_eq(m->rcpts[1].state, SPOOL_VIEW_DELIVERED);
	spool_view_close(v);

	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 1);
	cr_assert_eq(sum.recipients, 1, "the delivered recipient came back");
	t_start_workers();
	cr_assert_str_eq(t_state_of("later.example", "ann@"), "ready");
}

/* The line ferryctl list gets for `rcpt` of `domain` ("" when absent). */
static const char *t_list_line(const char *domain, const char *rcpt)
{
	static char line[1024];
	buf_clear(&t_out);
	struct queue_report_cursor cursor = {0};
	for (uint32_t i = 0; i < ts.nworkers; i++)
		while (queue_report_domain(ts.queues[i], domain, strlen(domain), &cursor, 100,
					   &t_out) == 1)
			;
	cr_assert_eq(buf_append(&t_out, "", 1), 0);
	const char *p = strstr(buf_head(&t_out), rcpt);
	line[0] = '\0';
	if (p == NULL)
		return line;
	while (p > buf_head(&t_out) && p[-1] != '\n')
		p--;
	snprintf(line, sizeof(line), "%.*s", (int)strcspn(p, "\n"), p);
	return line;
}

/* What an operator reads of a deferred recipient: its attempts, when it
 * is tried next (wall clock), the next hop's last reply; and in show,
 * each recipient's state as journaled, with its last reply. */
Test(store, reports_carry_attempts_next_attempt_and_last_reply)
{
	t_open();
	t_start_workers();
	static struct t_client c;
	t_store_later(&c);
	struct queue *q = ts.queues[0];
	struct queue_rcpt *r[4];
	char id[32], state[16], sender[64], rcpt[64], reply[128];
	unsigned attempts;
	long long arrival, size, next;

	/* Untried: no next attempt, no reply. */
	const char *line = t_list_line("later.example", "ann@");
	cr_assert_eq(sscanf(line, "%31s %15s %u %lld %lld %63s %63s %lld %127[^\n]", id, state,
			    &attempts, &arrival, &size, sender, rcpt, &next, reply),
		     9, "%s", line);
	cr_expect_str_eq(state, "ready");
	cr_expect_eq(attempts, 0);
	cr_expect_eq(next, 0);
	cr_expect_str_eq(reply, "\"\"");

	cr_assert_eq(sched_take_ready(q, "later.example", 13, r, 4), 2);
	uint64_t now = ts.workers[0]->now_ms;
	struct timespec wall;
	clock_gettime(CLOCK_REALTIME, &wall);
	long long wall_ms = (long long)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
	sched_defer(q, r[0], now + 600000, "451 4.7.1 greylisted, try later");
	sched_finish(q, r[1], QUEUE_DELIVERED, "250 2.0.0 ok");
	t_pump_idle();

	line = t_list_line("later.example", "ann@");
	cr_assert_eq(sscanf(line, "%31s %15s %u %lld %lld %63s %63s %lld %127[^\n]", id, state,
			    &attempts, &arrival, &size, sender, rcpt, &next, reply),
		     9, "%s", line);
	cr_expect_str_eq(state, "deferred");
	cr_expect_eq(attempts, 1);
	cr_expect(next >= wall_ms + 590000 && next <= wall_ms + 610000,
		  "next attempt %lld, expected about %lld", next, wall_ms + 600000);
	cr_expect_str_eq(reply, "\"451 4.7.1 greylisted, try later\"");

	/* A flush keeps the reply; the next attempt is now. */
	cr_assert_eq(sched_flush(q, "later.example", 13), 1);
	line = t_list_line("later.example", "ann@");
	cr_expect_not_null(strstr(line, " ready 1 "), "%s", line);
	cr_expect_not_null(strstr(line, " 0 \"451 4.7.1 greylisted, try later\""), "%s", line);

	buf_clear(&t_out);
	cr_assert(t_report_message(c.id, &t_out));
	cr_assert_eq(buf_append(&t_out, "", 1), 0);
	const char *shown = buf_head(&t_out);
	cr_expect_not_null(strstr(shown,
				  "\nrcpt ann@later.example deferred 1 \"451 4.7.1 greylisted, try "
				  "later\"\n"),
			   "%s", shown);
	cr_expect_not_null(strstr(shown, "\nrcpt bo@later.example delivered 1 \"250 2.0.0 ok\"\n"),
			   "%s", shown);
}

/* The recipients of message `id` (NULL: all) queued for ops.example. */
static size_t t_collect(const char *id, struct queue_rcpt ***out)
{
	size_t n;
	cr_assert_eq(sched_collect(ts.queues[0], "ops.example", 11, id, out, &n), 0);
	return n;
}

static unsigned t_endings;

/* The delivery's `ending` hook, as net/outbound_operator.c has it for a
 * deletion: the recipient ends journaled failed. */
static void t_ending(void *arg, struct queue_rcpt *r, enum sched_mark mark)
{
	(void)arg;
	cr_assert_eq(mark, SCHED_MARK_DELETE);
	cr_assert_eq(sched_rcpt_state(r), SCHED_INFLIGHT);
	t_endings++;
	sched_finish(ts.queues[0], r, QUEUE_REMOVED, "deleted by the operator");
}

/*
 * An operator's word on single recipients (sched.h, the marks): held by
 * its queue id, a recipient stays held through a flush and a domain's
 * hold and release, and leaves only by its own release (to READY, or
 * HELD when its domain is held); marked in flight, it is held when its
 * attempt is deferred, or ended by the hook when the operator deleted it.
 * A deletion is a journaled failure: a restart does not bring it back.
 */
Test(store, operator_marks_hold_one_message_and_end_recipients_in_flight)
{
	t_open();
	t_start_workers();
	static const char *const first[] = {"a@ops.example", "b@ops.example"};
	static const char *const second[] = {"c@ops.example"};
	static struct t_client c[2];
	t_client_init(&c[0]);
	t_client_init(&c[1]);
	cr_assert_eq(t_begin_on(ts.queues[0], &c[0], "alice@client.example", first, 2), 0);
	cr_assert_eq(t_begin_on(ts.queues[0], &c[1], "alice@client.example", second, 1), 0);
	for (int i = 0; i < 2; i++) {
		cr_assert_geq(t_write(&c[i], (const uint8_t *)"hi\r\n", 4, 4), 0);
		t_commit(&c[i]);
	}
	t_pump_until_committed(c, 2);
	struct queue *q = ts.queues[0];
	struct queue_rcpt **r;

	/* Held by id: a flush, a hold and a release of the domain leave it. */
	cr_assert_eq(t_collect(NULL, &r), 3);
	free(r);
	cr_assert_eq(t_collect(c[0].id, &r), 2);
	sched_park(q, r[0]);
	sched_park(q, r[1]);
	free(r);
	cr_assert_str_eq(t_state_of("ops.example", "a@"), "held-id");
	cr_assert_str_eq(t_state_of("ops.example", "c@"), "ready");
	cr_assert_eq(sched_hold(q, "ops.example", 11), 1, "only c@ was ready");
	cr_assert_eq(sched_flush(q, "ops.example", 11), 1, "only c@ was held by the domain");
	cr_assert_str_eq(t_state_of("ops.example", "b@"), "held-id");
	cr_assert_str_eq(t_state_of("ops.example", "c@"), "ready");

	/* Its release: held still while its domain is held, else ready. */
	cr_assert_eq(t_collect(c[0].id, &r), 2);
	cr_assert(sched_unpark(q, r[0], true));
	cr_assert(sched_unpark(q, r[1], false));
	cr_assert_not(sched_unpark(q, r[1], false), "released twice");
	free(r);
	cr_assert_str_eq(t_state_of("ops.example", "a@"), "held");
	cr_assert_str_eq(t_state_of("ops.example", "b@"), "ready");

	/* In flight: held when deferred; deleted through the hook. */
	struct queue_rcpt *taken[4];
	cr_assert_eq(sched_take_ready(q, "ops.example", 11, taken, 4), 2);
	/* c@ was ready first (the flush), then b@ (its release). */
	struct queue_rcpt *cc = taken[0], *b = taken[1];
	size_t len;
	cr_assert_str_eq(sched_rcpt_address(b, &len), "b@ops.example");
	sched_park(q, cc);
	cr_assert_eq(sched_rcpt_mark(cc), SCHED_MARK_HOLD);
	cr_assert_str_eq(t_state_of("ops.example", "c@"), "inflight");
	sched_defer(q, cc, ts.workers[0]->now_ms + 60000, "451 4.7.1 try later");
	cr_assert_str_eq(t_state_of("ops.example", "c@"), "held-id");
	struct sched_hooks hooks = {.ending = t_ending};
	sched_set_hooks(q, &hooks);
	sched_mark_inflight(q, b, SCHED_MARK_DELETE);
	sched_defer(q, b, ts.workers[0]->now_ms + 60000, "451 4.7.1 try later");
	cr_assert_eq(t_endings, 1, "the hook did not end the deleted one");
	cr_assert_str_eq(t_state_of("ops.example", "b@"), "absent");
	/* Deleted while queued: taken, then ended. */
	cr_assert_eq(t_collect(c[0].id, &r), 1);
	cr_assert_eq(sched_rcpt_state(r[0]), SCHED_HELD);
	sched_take(q, r[0]);
	sched_finish(q, r[0], QUEUE_REMOVED, "deleted by the operator");
	free(r);
	sched_set_hooks(q, NULL);
	t_pump_idle();

	/* Journaled failed, and not as an attempt: neither was tried. */
	struct spool_view *v;
	char err[256];
	cr_assert_eq(spool_view_open(&v, ts.spool, err, sizeof(err)), 0, "%s", err);
	const struct spool_view_message *m = spool_view_find(v, c[0].id);
	cr_assert_not_null(m);
	for (unsigned i = 0; i < 2; i++) {
		cr_expect_eq(m->rcpts[i].state, SPOOL_VIEW_FAILED);
		cr_expect_eq(m->rcpts[i].attempts, 0, "a deletion counted as an attempt");
	}
	spool_view_close(v);

	/* The first message is done; the second comes back, ready (a
	 * restart forgets an operator's hold). */
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 1);
	cr_assert_eq(sum.recipients, 1);
	t_start_workers();
	cr_assert_not(t_present(c[0].id), "a deleted message came back");
	cr_assert_str_eq(t_state_of("ops.example", "c@"), "ready");
}

/* The store's state machine guards itself in every build: a message the
 * session aborts after committing it would be freed under the writer. */
Test(store, aborting_a_committed_message_stops_ferryd, .signal = SIGABRT)
{
	t_open();
	t_start_workers();
	static struct t_client c;
	t_send(&c, "bob@dest.example", (const uint8_t *)"hi\r\n", 4);
	queue_message_abort(c.m);
}

/* Every recipient delivered: the messages are gone from the queue, do not
 * come back after a restart, and the segments they filled are deleted. */
Test(store, finished_messages_are_dead_space_and_their_segments_go)
{
	ts.cfg.workers = 2;
	ts.cfg.segment_size = 1u << 20;
	t_open();
	t_start_workers();
	enum { N = 60 };
	static struct t_client c[N];
	uint8_t *body = t_body(100000, 9); /* 60 x 100 KB: several segments */
	for (unsigned i = 0; i < N; i++) {
		const char *r[] = {i % 2 ? "bob@one.example" : "carol@two.example",
				   "dave@three.example"};
		t_client_init(&c[i]);
		cr_assert_eq(t_begin_on(ts.queues[i % 2], &c[i], "alice@client.example", r, 2), 0);
		cr_assert_geq(t_write(&c[i], body, 100000, 16384), 0);
		t_commit(&c[i]);
		t_pump_until_committed(&c[i], 1);
	}
	t_pump_idle();
	unsigned before = t_segments();
	cr_assert_geq(before, 3, "only %u segments", before);

	/* Half the recipients first: every message still has one left. */
	cr_assert_eq(t_finish_domain("three.example", QUEUE_DELIVERED, 1000), N);
	t_pump_idle();
	for (unsigned i = 0; i < N; i++)
		cr_assert(t_present(c[i].id), "message %u went with a recipient left", i);
	t_reopen();
	t_start_workers();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.messages, N);
	cr_assert_eq(sum.recipients, N, "delivered recipients came back after a restart");
	static char ids[N + 1][QUEUE_ID_LEN + 1];
	cr_assert_eq(t_domain_ids("three.example", ids, N + 1), 0);

	/* Then the rest, one domain delivered, one failed for good. */
	cr_assert_eq(t_finish_domain("one.example", QUEUE_DELIVERED, 1000), N / 2);
	cr_assert_eq(t_finish_domain("two.example", QUEUE_FAILED, 1000), N / 2);
	t_pump_idle();
	for (unsigned i = 0; i < N; i++)
		cr_assert_not(t_present(c[i].id), "message %u still queued", i);
	sum = t_restart();
	cr_assert_eq(sum.messages, 0, "finished messages came back after a restart");
	/* Closed segments held nothing live: only each writer's newest
	 * (with the outcome records) may remain. */
	cr_assert_leq(t_segments(), ts.nworkers, "%u segments left of %u", t_segments(), before);
}

/* ---- compaction ------------------------------------------------------------- */

static struct queue_compaction_stats t_compaction(void)
{
	struct queue_compaction_stats sum = {0};
	for (uint32_t w = 0; w < ts.nworkers; w++) {
		struct queue_compaction_stats s;
		queue_compaction_stats(ts.queues[w], &s);
		sum.jobs += s.jobs;
		sum.messages += s.messages;
		sum.bytes += s.bytes;
		sum.failed += s.failed;
		sum.deleted += s.deleted;
		sum.running += s.running;
	}
	return sum;
}

static bool t_segment_exists(uint64_t sequence)
{
	char name[64];
	snprintf(name, sizeof(name), "w000-%012llu.seg", (unsigned long long)sequence);
	return t_exists(ts.spool, "segments", name);
}

enum { T_SPREAD = 40, T_KEEP_EVERY = 8, T_SPREAD_BODY = 60000 };

/* T_SPREAD messages of 60 KB over 1 MiB segments (three of them); every
 * 8th also goes to keep.example, every one to gone.example. */
static void t_spread(struct t_client *c, const uint8_t *body)
{
	for (unsigned i = 0; i < T_SPREAD; i++) {
		const char *keep[] = {"kim@keep.example", "gus@gone.example"};
		const char *gone[] = {"gus@gone.example"};
		t_client_init(&c[i]);
		bool kept = i % T_KEEP_EVERY == 0;
		cr_assert_eq(t_begin_on(ts.queues[0], &c[i], "alice@client.example",
					kept ? keep : gone, kept ? 2 : 1),
			     0);
		cr_assert_geq(t_write(&c[i], body, T_SPREAD_BODY, 16384), 0);
		t_commit(&c[i]);
		t_pump_until_committed(&c[i], 1);
	}
	t_pump_idle();
}

static void t_expect_kept(struct t_client *c, const uint8_t *body)
{
	static const char *const rcpts[] = {"kim@keep.example", "gus@gone.example"};
	for (unsigned i = 0; i < T_SPREAD; i++) {
		if (i % T_KEEP_EVERY == 0)
			t_expect_message(c[i].id, "alice@client.example", rcpts, 2, body,
					 T_SPREAD_BODY);
		else
			cr_assert_not(t_present(c[i].id), "finished message %u came back", i);
	}
	static char ids[T_SPREAD + 1][QUEUE_ID_LEN + 1];
	unsigned n = t_domain_ids("keep.example", ids, T_SPREAD + 1);
	cr_assert_eq(n, T_SPREAD / T_KEEP_EVERY, "%u recipients queued for keep.example", n);
	for (unsigned i = 0; i < n; i++)
		for (unsigned k = i + 1; k < n; k++)
			cr_assert_str_neq(ids[i], ids[k], "%s is queued twice", ids[i]);
	cr_assert_eq(t_domain_ids("gone.example", ids, T_SPREAD + 1), 0,
		     "a delivered recipient is queued again");
}

/*
 * Segments left mostly dead by delivered mail are compacted: their live
 * messages are copied forward and the old files deleted. The copies are
 * the messages byte for byte, with the outcomes of recipients already
 * delivered, before and after a restart.
 */
Test(store, mostly_dead_segments_are_compacted_and_their_live_mail_kept)
{
	ts.cfg.segment_size = 1u << 20;
	ts.cfg.compact_threshold = 50;
	t_open();
	t_start_workers();
	static struct t_client c[T_SPREAD];
	uint8_t *body = t_body(T_SPREAD_BODY, 31);
	t_spread(c, body);
	cr_assert(t_segment_exists(1) && t_segment_exists(2) && t_segment_exists(3));
	cr_assert_eq(t_compaction().jobs, 0, "compacted while every message was live");

	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), T_SPREAD);
	t_pump_idle();
	struct queue_compaction_stats cs = t_compaction();
	cr_assert_geq(cs.messages, 4, "only %llu messages moved", (unsigned long long)cs.messages);
	cr_assert_eq(cs.failed, 0);
	cr_assert_not(t_segment_exists(1), "segment 1 (mostly dead) is still there");
	cr_assert_not(t_segment_exists(2), "segment 2 (mostly dead) is still there");
	t_expect_kept(c, body);

	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, T_SPREAD / T_KEEP_EVERY);
	cr_assert_eq(sum.recipients, T_SPREAD / T_KEEP_EVERY,
		     "a recipient delivered before the copy came back after the restart");
	t_expect_kept(c, body);
}

/* ---- delivery's side: bodies read while compaction runs, holds, hooks ------ */

struct t_read {
	struct buf got;
	int status;
};

static void t_body_run(struct queue_body_reader *rd, int status, const char *data, size_t len)
{
	struct t_read *tr = rd->user;
	if (status < 0)
		tr->status = status;
	else
		buf_append(&tr->got, data, len);
}

/* One run of rd's body read through the ring; false when it was whole. */
static bool t_read_run(struct queue_body_reader *rd, struct t_read *tr)
{
	int r = queue_body_read(rd);
	if (r == 1)
		return false;
	cr_assert_eq(r, 0, "read: %s", strerror(-r));
	for (unsigned turns = 0; queue_body_busy(rd); turns++) {
		cr_assert_lt(turns, 10000, "a read took 10000 turns");
		t_turn();
	}
	cr_assert_eq(tr->status, 0, "read: %s", strerror(-tr->status));
	return true;
}

/*
 * Delivery reads a body on the shard's worker while compaction empties
 * the segments around it: the message being read is not moved (its
 * segment stays), the body read is whole and exact, and once the reader
 * lets go the rest is compacted as before.
 */
Test(store, a_body_being_read_is_not_moved_by_compaction)
{
	ts.cfg.segment_size = 1u << 20;
	ts.cfg.compact_threshold = 50;
	t_open();
	t_start_workers();
	static struct t_client c[T_SPREAD];
	uint8_t *body = t_body(T_SPREAD_BODY, 37);
	t_spread(c, body);

	struct queue *owner = ts.queues[sched_owner(ts.queues[0], "keep.example", 12)];
	struct queue_rcpt *r;
	cr_assert_eq(sched_take_message(owner, "keep.example", 12, &r, 1), 1);
	cr_assert_str_eq(sched_rcpt_message_id(r), c[0].id);
	struct sched_message info;
	sched_rcpt_message(r, &info);
	cr_assert_eq(info.size, T_SPREAD_BODY);
	cr_assert(info.eightbit, "BODY=8BITMIME was given");
	cr_assert_not(info.smtputf8);
	cr_assert_eq(info.sender_len, strlen("alice@client.example"));

	struct queue_body_reader rd = {0};
	struct t_read tr = {0};
	cr_assert_eq(queue_body_open(&rd, owner, r, t_body_run, &tr), 0);
	cr_assert(t_read_run(&rd, &tr));
	/* Half read: every other message of segments 1 and 2 ends. */
	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), T_SPREAD);
	t_pump_idle();
	cr_assert_geq(t_compaction().messages, 2, "nothing else was compacted");
	cr_assert(t_segment_exists(1), "the segment of the body being read was deleted");
	while (t_read_run(&rd, &tr))
		;
	cr_assert_eq(buf_len(&tr.got), T_SPREAD_BODY);
	cr_assert(memcmp(buf_head(&tr.got), body, T_SPREAD_BODY) == 0, "the body read differs");
	queue_body_release(&rd);
	buf_release(&tr.got);

	/* Let go of and delivered: its segment goes too. */
	sched_finish(owner, r, QUEUE_DELIVERED, "250 2.0.0 ok");
	t_pump_idle();
	cr_assert_not(t_present(c[0].id));
	cr_assert_not(t_segment_exists(1), "segment 1 outlived its last message");
}

static unsigned t_ready_calls;
static char t_ready_domain[64];

static bool t_hook_held(void *arg, const char *domain, size_t len)
{
	(void)arg;
	return len == 12 && strncasecmp(domain, "held.example", len) == 0;
}

static void t_hook_ready(void *arg, const char *domain, size_t len)
{
	(void)arg;
	t_ready_calls++;
	snprintf(t_ready_domain, sizeof(t_ready_domain), "%.*s", (int)len, domain);
}

static struct sched_counts t_counts(const char *domain)
{
	struct sched_counts counts = {0};
	struct queue *owner = ts.queues[sched_owner(ts.queues[0], domain, strlen(domain))];
	cr_assert(sched_counts(owner, domain, strlen(domain), &counts), "nothing for %s", domain);
	return counts;
}

/*
 * Delivery's hooks: a held domain's new mail queues HELD and wakes no
 * one; another domain's wakes delivery once, when it gets READY work.
 * A run-time hold and a flush move what is queued; a transaction takes
 * one message's recipients at a time.
 */
Test(store, held_domains_queue_held_and_ready_ones_wake_delivery)
{
	ts.cfg.workers = 2;
	t_open();
	t_start_workers();
	struct sched_hooks hooks = {.held = t_hook_held, .ready = t_hook_ready};
	for (uint32_t w = 0; w < ts.nworkers; w++)
		sched_set_hooks(ts.queues[w], &hooks);
	uint8_t *body = t_body(100, 5);
	static struct t_client c[3];
	const char *both[] = {"a@live.example", "b@live.example", "h@held.example"};
	const char *one[] = {"c@live.example"};
	t_client_init(&c[0]);
	cr_assert_eq(t_begin_on(ts.queues[0], &c[0], "s@client.example", both, 3), 0);
	cr_assert_geq(t_write(&c[0], body, 100, 100), 0);
	t_commit(&c[0]);
	t_client_init(&c[1]);
	cr_assert_eq(t_begin_on(ts.queues[1], &c[1], "s@client.example", one, 1), 0);
	cr_assert_geq(t_write(&c[1], body, 100, 100), 0);
	t_commit(&c[1]);
	t_pump_idle();

	struct sched_counts held = t_counts("held.example"), live = t_counts("live.example");
	cr_assert_eq(held.held, 1);
	cr_assert_eq(held.ready, 0);
	cr_assert_eq(live.ready, 3);
	cr_assert_eq(t_ready_calls, 1, "delivery was woken %u times", t_ready_calls);
	cr_assert_str_eq(t_ready_domain, "live.example");

	struct queue *owner = ts.queues[sched_owner(ts.queues[0], "live.example", 12)];
	struct queue_rcpt *r[8];
	cr_assert_eq(sched_take_message(owner, "live.example", 12, r, 8), 2,
		     "one transaction: the first message's two recipients");
	cr_assert_str_eq(sched_rcpt_message_id(r[0]), c[0].id);
	cr_assert_str_eq(sched_rcpt_message_id(r[1]), c[0].id);
	/* Quotas count a message once per domain: its first recipient there
	 * in, its last out. */
	cr_assert(sched_rcpt_first_in_domain(r[0]));
	cr_assert_not(sched_rcpt_first_in_domain(r[1]));
	cr_assert_not(sched_rcpt_alone_in_domain(r[0]));
	cr_assert_not(sched_rcpt_alone_in_domain(r[1]));
	sched_return(owner, r[0]);
	sched_defer(owner, r[1], ts.workers[0]->now_ms + 60000, "451 4.3.0 later");
	cr_assert_eq(sched_rcpt_attempts(r[1]), 1);

	/* ferryctl hold: READY and DEFERRED to HELD; a flush brings all back. */
	cr_assert_eq(sched_hold(owner, "live.example", 12), 3);
	live = t_counts("live.example");
	cr_assert_eq(live.held, 3);
	cr_assert_eq(live.ready + live.deferred, 0);
	cr_assert_eq(sched_flush(owner, "live.example", 12), 3);
	cr_assert_eq(t_counts("live.example").ready, 3);
	cr_assert_eq(t_ready_calls, 1, "moves made by sched calls woke delivery");
	for (uint32_t w = 0; w < ts.nworkers; w++)
		sched_set_hooks(ts.queues[w], NULL);
}

/*
 * A crash after the copies were synced and before the old segment was
 * deleted leaves both on disk: recovery serves each message once, with
 * its outcomes, and the old segment goes.
 */
Test(store, crash_between_copy_and_delete_serves_each_message_once)
{
	ts.cfg.segment_size = 1u << 20;
	ts.cfg.compact_threshold = 50;
	t_open();
	t_start_workers();
	static struct t_client c[T_SPREAD];
	uint8_t *body = t_body(T_SPREAD_BODY, 32);
	t_spread(c, body);
	char path[256];
	snprintf(path, sizeof(path), "%s/segments/w000-000000000001.seg", ts.spool);
	size_t old_len;
	uint8_t *old = t_read_file(path, &old_len);

	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), T_SPREAD);
	t_pump_idle();
	cr_assert_not(t_segment_exists(1));
	t_close();
	t_write_file(path, old, old_len); /* as if the unlink never happened */

	t_open();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.messages, T_SPREAD / T_KEEP_EVERY, "%llu messages",
		     (unsigned long long)sum.messages);
	cr_assert_eq(sum.recipients, T_SPREAD / T_KEEP_EVERY, "%llu recipients",
		     (unsigned long long)sum.recipients);
	t_expect_kept(c, body);
	cr_assert_not(t_segment_exists(1), "the old copy's segment was kept after recovery");
}

/*
 * The MESSAGE_DONE of a message lands in a later segment than its data.
 * When everything in that later segment is finished, it must still wait
 * for the older one (kept alive by another message): deleted first, a
 * restart would find the message without its outcomes and deliver it
 * again. (Compaction off, so only the deletion order is at work.)
 */
Test(store, outcomes_outlive_the_segment_holding_their_message)
{
	ts.cfg.segment_size = 1u << 20;
	t_open();
	t_start_workers();
	uint8_t *body = t_body(100000, 33);
	static struct t_client early[11], later[12];
	/* Segment 1: one message that stays, ten that will be delivered (the
	 * last of them rolls the writer to segment 2). */
	for (unsigned i = 0; i < 11; i++) {
		t_send(&early[i], i == 0 ? "kim@keep.example" : "gus@gone.example", body, 100000);
		t_pump_until_committed(&early[i], 1);
	}
	t_pump_idle();
	cr_assert(t_segment_exists(2), "the writer never rolled to segment 2");
	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), 10);
	t_pump_idle();
	/* Their outcomes went to segment 2; fill it, roll, and finish what
	 * filled it, so that nothing lives in segment 2 any more. */
	for (unsigned i = 0; i < 12; i++) {
		t_send(&later[i], "fay@fill.example", body, 100000);
		t_pump_until_committed(&later[i], 1);
	}
	t_pump_idle();
	cr_assert(t_segment_exists(3), "the writer never rolled past segment 2");
	cr_assert_eq(t_finish_domain("fill.example", QUEUE_DELIVERED, 1000), 12);
	t_pump_idle();
	cr_assert(t_segment_exists(1), "segment 1 holds a live message");
	cr_assert(t_segment_exists(2),
		  "segment 2 was deleted while segment 1 still holds the messages it ends");

	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 1, "%llu messages after the restart (delivered ones came back)",
		     (unsigned long long)sum.messages);
	cr_assert(t_present(early[0].id));
	for (unsigned i = 1; i < 11; i++)
		cr_assert_not(t_present(early[i].id), "delivered message %u came back", i);
}

/* A message whose last recipient ends while its copy is being made ends
 * normally: gone now, gone after a restart, nothing touched twice. */
Test(store, message_finished_while_its_copy_is_made_ends_cleanly)
{
	ts.cfg.segment_size = 1u << 20;
	ts.cfg.compact_threshold = 50;
	t_open();
	t_start_workers();
	static struct t_client c[T_SPREAD];
	uint8_t *body = t_body(T_SPREAD_BODY, 34);
	t_spread(c, body);
	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), T_SPREAD);
	/* One flush writes the outcomes and starts a copy job (its reads
	 * queued); the kept messages end before any read is back. */
	queue_flush(ts.queues[0]);
	cr_assert_eq(t_compaction().running, 1, "no copy job started");
	cr_assert_eq(t_finish_domain("keep.example", QUEUE_FAILED, 1000), T_SPREAD / T_KEEP_EVERY);
	t_pump_idle();
	cr_assert_eq(t_compaction().running, 0);
	for (unsigned i = 0; i < T_SPREAD; i++)
		cr_assert_not(t_present(c[i].id), "message %u is still queued", i);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 0, "%llu finished messages came back",
		     (unsigned long long)sum.messages);
}

/* The sync of a copy fails: the messages stay where they were, readable,
 * and a later job moves them. */
Test(store, failed_sync_of_a_copy_keeps_the_original)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	ts.cfg.segment_size = 1u << 20;
	ts.cfg.compact_threshold = 50;
	t_open();
	t_start_workers();
	static struct t_client c[T_SPREAD];
	uint8_t *body = t_body(T_SPREAD_BODY, 35);
	t_spread(c, body);
	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), T_SPREAD);
	/* The outcomes' batch is the next sync, the first copy's the one
	 * after: that one fails. */
	char which[32];
	snprintf(which, sizeof(which), "%u", ts.datasyncs + 2);
	setenv("FERRY_FAULT_FSYNC", which, 1);
	for (unsigned n = 0; t_compaction().failed == 0; n++) {
		cr_assert_lt(n, T_MAX_TURNS, "the copy's sync never failed");
		t_turn();
	}
	unsetenv("FERRY_FAULT_FSYNC");
	t_expect_kept(c, body);
	/* Retried after a pause (a second), then done. */
	for (unsigned n = 0; t_segment_exists(1) || t_segment_exists(2); n++) {
		cr_assert_lt(n, 400, "the old segments were never compacted after the failure");
		usleep(10000);
		t_turn();
	}
	t_pump_idle();
	t_expect_kept(c, body);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, T_SPREAD / T_KEEP_EVERY);
	cr_assert_eq(sum.recipients, T_SPREAD / T_KEEP_EVERY);
	t_expect_kept(c, body);
}

/* ---- space checks ahead of the body ------------------------------------------ */

/* A SIZE= that needs two more segments is refused at MAIL when only one
 * more fits under max_size; one that fits in the current segment is not. */
Test(store, check_space_counts_every_segment_a_large_message_needs)
{
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.max_bytes = 2 * ts.cfg.segment_size;
	t_open();
	t_start_workers();
	uint8_t *body = t_body(1000, 40);
	static struct t_client small;
	t_send(&small, "bob@dest.example", body, 1000);
	t_pump_until_committed(&small, 1);
	cr_assert_eq(small.status, 0);
	struct queue *q = ts.queues[0];
	cr_assert_eq(queue_check_space(q, 1000), 0, "1000 octets fit in the current segment");
	cr_assert_eq(queue_check_space(q, 100u << 10), 0, "100 KiB fits in one more segment");
	cr_assert_eq(queue_check_space(q, 300u << 10), -ENOSPC,
		     "300 KiB needs three segments; two fit under max_size");
}

/* min_free_disk: a message that fits in the preallocated rest of the
 * current segment takes no disk, so it is taken while the disk is above
 * the floor; one that needs new segments must leave the floor intact. */
Test(store, check_space_against_min_free_counts_only_new_segments)
{
	ts.cfg.segment_size = 64u << 20;
	struct statvfs sv;
	cr_assert_eq(statvfs("/tmp", &sv), 0);
	uint64_t free_now = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (free_now < (256u << 20))
		cr_skip_test("needs 256 MiB free in /tmp, has %llu", (unsigned long long)free_now);
	/* After the first 64 MiB segment: 16 MiB above the floor. */
	ts.cfg.min_free_bytes = free_now - (64u << 20) - (16u << 20);
	t_open();
	t_start_workers();
	uint8_t *body = t_body(1000, 41);
	static struct t_client small;
	t_send(&small, "bob@dest.example", body, 1000);
	t_pump_until_committed(&small, 1);
	cr_assert_eq(small.status, 0);
	struct queue *q = ts.queues[0];
	cr_assert_eq(queue_check_space(q, 32u << 20), 0,
		     "32 MiB fits in the current segment: it takes no disk");
	cr_assert_eq(queue_check_space(q, 200u << 20), -ENOSPC,
		     "200 MiB needs three new 64 MiB segments, 16 MiB are above the floor");
}

/* ---- a worker number that no longer runs ------------------------------------ */

static unsigned t_segments_of(unsigned worker)
{
	char path[256], prefix[8];
	snprintf(path, sizeof(path), "%s/segments", ts.spool);
	snprintf(prefix, sizeof(prefix), "w%03u-", worker);
	DIR *d = opendir(path);
	cr_assert_not_null(d);
	unsigned n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		n += strncmp(e->d_name, prefix, 5) == 0;
	closedir(d);
	return n;
}

/* With 2 workers and 1 MiB segments, store n messages of 200 KB on
 * worker 1 (three segments' worth for 12): the first half for `first`,
 * the rest for `rest`. Then stop. */
static void t_store_on_worker_1_of_2(struct t_client *c, unsigned n, const char *first,
				     const char *rest)
{
	ts.cfg.workers = 2;
	ts.cfg.segment_size = 1u << 20;
	t_open();
	t_start_workers();
	uint8_t *body = t_body(200000, 18);
	for (unsigned i = 0; i < n; i++) {
		const char *rcpt[] = {i < n / 2 ? first : rest};
		t_client_init(&c[i]);
		cr_assert_eq(t_begin_on(ts.queues[1], &c[i], "alice@client.example", rcpt, 1), 0);
		cr_assert_geq(t_write(&c[i], body, 200000, 65536), 0);
		t_commit(&c[i]);
		t_pump_until_committed(&c[i], 1);
	}
	t_close();
	t_release(body);
}

/*
 * After a restart with fewer workers, the segments of the worker number
 * that no longer runs are deleted once all their messages are finished;
 * the outcome records written meanwhile (in the remaining worker's
 * segments) keep those messages from coming back until then.
 */
Test(store, segments_of_a_worker_no_longer_running_go_when_their_mail_is_done)
{
	enum { N = 12 };
	static struct t_client c[N];
	t_store_on_worker_1_of_2(c, N, "ann@first.example", "bo@second.example");
	uint8_t *body = t_body(200000, 18); /* the same bytes */
	cr_assert_geq(t_segments_of(1), 2, "worker 1 wrote %u segments", t_segments_of(1));
	ts.cfg.workers = 1;
	t_open();
	t_start_workers();
	/* Half of worker 1's mail delivered: its files stay, and the
	 * delivered half does not come back. */
	cr_assert_eq(t_finish_domain("first.example", QUEUE_DELIVERED, 100), N / 2);
	t_pump_idle();
	cr_assert_geq(t_segments_of(1), 1, "deleted while messages in it are queued");
	t_reopen();
	t_start_workers();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.messages, N / 2, "%llu messages after the restart",
		     (unsigned long long)sum.messages);
	static const char *const rest[] = {"bo@second.example"};
	for (unsigned i = N / 2; i < N; i++)
		t_expect_message(c[i].id, "alice@client.example", rest, 1, body, 200000);
	/* The rest: worker 1's files go, and nothing comes back. */
	cr_assert_eq(t_finish_domain("second.example", QUEUE_DELIVERED, 100), N / 2);
	t_pump_idle();
	cr_assert_eq(t_segments_of(1), 0, "%u segments of worker 1 left", t_segments_of(1));
	sum = t_restart();
	cr_assert_eq(sum.messages, 0, "%llu finished messages came back",
		     (unsigned long long)sum.messages);
	cr_assert_leq(t_segments_of(0), 1, "%u segments of worker 0 left", t_segments_of(0));
}

/* ---- compaction when things go wrong ------------------------------------------ */

/* A copy job whose reads cannot even start (no file descriptor left):
 * nothing moves, nothing is deleted, and every message is there after a
 * restart. */
Test(store, copy_that_cannot_read_its_source_leaves_everything_in_place)
{
	ts.cfg.segment_size = 1u << 20;
	ts.cfg.compact_threshold = 50;
	t_open();
	t_start_workers();
	static struct t_client c[T_SPREAD];
	uint8_t *body = t_body(T_SPREAD_BODY, 42);
	t_spread(c, body);
	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), T_SPREAD);
	/* The lowest free descriptor is the limit: the job's open fails. */
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	close(fd);
	struct rlimit old, low;
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)fd;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	queue_flush(ts.queues[0]);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	cr_assert_geq(t_compaction().failed, 1, "the copy job did not fail");
	cr_assert_eq(t_compaction().running, 0);
	/* No more jobs for a second: the state the failure left is what a
	 * restart finds. */
	t_pump_quiet();
	struct queue_compaction_stats cs = t_compaction();
	cr_assert_eq(cs.messages, 0, "%llu messages moved without being read",
		     (unsigned long long)cs.messages);
	cr_assert_geq(cs.failed, 1);
	cr_assert(t_segment_exists(1) && t_segment_exists(2),
		  "a segment holding queued mail was deleted after a failed copy");
	t_expect_kept(c, body);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, T_SPREAD / T_KEEP_EVERY, "%llu messages after the restart",
		     (unsigned long long)sum.messages);
	t_expect_kept(c, body);
}

/* Where a report says the last body bytes of `id` end, and in which
 * segment. */
static unsigned long long t_body_end(const char *id, unsigned *sequence)
{
	const char *report = t_report(id);
	unsigned long long end = 0;
	for (const char *p = report; (p = strstr(p, "\nbody ")) != NULL; p++) {
		unsigned long long off;
		unsigned n, seq;
		cr_assert_eq(sscanf(p, "\nbody w000-%u.seg %llu %u", &seq, &off, &n), 3);
		end = off + n;
		*sequence = seq;
	}
	return end;
}

/*
 * The copy begins in a nearly full segment and ends in the next one. The
 * batch holding its beginning fails its sync; the batch holding its end
 * syncs fine. The copy is incomplete on disk, so the message must stay
 * where it was.
 */
Test(store, copy_whose_first_half_failed_its_sync_is_not_used)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	ts.cfg.segment_size = 1u << 20;
	ts.cfg.compact_threshold = 50;
	t_open();
	t_start_workers();
	static struct t_client c[T_SPREAD], fill;
	uint8_t *body = t_body(T_SPREAD_BODY, 43);
	t_spread(c, body);
	/* Fill the current segment to about 8 KB short of full. */
	unsigned seq;
	unsigned long long end = t_body_end(c[T_SPREAD - 1].id, &seq);
	size_t room = (size_t)((1u << 20) - end);
	cr_assert_gt(room, 40000u);
	uint8_t *filler = t_body(room - 12000, 44);
	t_send(&fill, "fay@fill.example", filler, room - 12000);
	t_pump_until_committed(&fill, 1);
	t_pump_idle();
	unsigned fill_seq;
	t_body_end(fill.id, &fill_seq);
	cr_assert_eq(fill_seq, seq, "the filler rolled to a new segment");
	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), T_SPREAD);
	/* The outcomes' batch is the next sync; the copies' first batch
	 * (the rest of this segment) the one after. */
	char which[32];
	snprintf(which, sizeof(which), "%u", ts.datasyncs + 2);
	setenv("FERRY_FAULT_FSYNC", which, 1);
	for (unsigned n = 0; t_compaction().jobs == 0; n++) {
		cr_assert_lt(n, T_MAX_TURNS, "the copy job never ended");
		t_turn();
	}
	unsetenv("FERRY_FAULT_FSYNC");
	struct queue_compaction_stats cs = t_compaction();
	cr_assert_geq(cs.failed, 1, "a copy that lost its beginning was used (%llu moved)",
		      (unsigned long long)cs.messages);
	t_pump_idle();
	t_expect_kept(c, body);
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, T_SPREAD / T_KEEP_EVERY + 1, "%llu messages after the restart",
		     (unsigned long long)sum.messages);
	t_expect_kept(c, body);
}

/* The outcomes of delivered mail live in a later segment than the mail;
 * across restarts (which rebuild that order from the records) the later
 * segment still waits for the earlier one. */
Test(store, outcomes_outlive_their_message_across_restarts)
{
	ts.cfg.segment_size = 1u << 20;
	t_open();
	t_start_workers();
	uint8_t *body = t_body(100000, 45);
	static struct t_client early[11];
	for (unsigned i = 0; i < 11; i++) {
		t_send(&early[i], i == 0 ? "kim@keep.example" : "gus@gone.example", body, 100000);
		t_pump_until_committed(&early[i], 1);
	}
	t_pump_idle();
	cr_assert(t_segment_exists(2));
	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000), 10);
	t_pump_idle();
	/* Restart: segment 2 (outcomes, the tail of a delivered message) is
	 * closed and nothing lives in it, but segment 1 still holds the
	 * messages it ends. */
	t_reopen();
	cr_assert(t_segment_exists(2), "segment 2 was deleted at the restart");
	struct queue_store_summary sum = t_restart();
	cr_assert_eq(sum.messages, 1, "%llu messages after two restarts (delivered ones came back)",
		     (unsigned long long)sum.messages);
}

/*
 * A message is copied out of segment V while V stays (another message in
 * it could not be copied yet); then the message is delivered. The record
 * saying so must outlive V too, not just the segment of the copy: else a
 * restart finds the old copy in V with no outcome and delivers it again.
 */
Test(store, outcomes_of_a_copied_message_outlive_its_old_copy)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	/* First without compaction: the outcomes of the delivered mail go to
	 * the segments of that time, not to the one the copies will go to. */
	ts.cfg.segment_size = 1u << 20;
	t_open();
	t_start_workers();
	static struct t_client c[T_SPREAD];
	uint8_t *body = t_body(T_SPREAD_BODY, 46);
	/* Kept messages with one recipient: their copies carry no outcome
	 * records (which would tie the copy's segment to the old one). */
	for (unsigned i = 0; i < T_SPREAD; i++) {
		t_client_init(&c[i]);
		cr_assert_eq(t_begin(&c[i], i % T_KEEP_EVERY == 0 ? "kim@keep.example"
								  : "gus@gone.example"),
			     0);
		cr_assert_geq(t_write(&c[i], body, T_SPREAD_BODY, 16384), 0);
		t_commit(&c[i]);
		t_pump_until_committed(&c[i], 1);
	}
	t_pump_idle();
	unsigned origin[T_SPREAD];
	for (unsigned i = 0; i < T_SPREAD; i += T_KEEP_EVERY)
		t_body_end(c[i].id, &origin[i]);
	cr_assert_eq(t_finish_domain("gone.example", QUEUE_DELIVERED, 1000),
		     T_SPREAD - T_SPREAD / T_KEEP_EVERY);
	t_close();
	/* Then a restart with compaction, one 60 KB message per copy job. */
	ts.cfg.compact_threshold = 50;
	ts.cfg.batch_cap = 64u << 10;
	t_open();
	t_start_workers();
	for (unsigned n = 0; t_compaction().messages == 0; n++) {
		cr_assert_lt(n, T_MAX_TURNS, "nothing was copied");
		t_turn();
	}
	/* The next job's sync fails: compaction pauses for a second, with
	 * the rest of V not moved. */
	char which[32];
	snprintf(which, sizeof(which), "%u", ts.datasyncs + 1);
	setenv("FERRY_FAULT_FSYNC", which, 1);
	for (unsigned n = 0; t_compaction().failed == 0; n++) {
		cr_assert_lt(n, T_MAX_TURNS, "the second job never failed");
		t_turn();
	}
	unsetenv("FERRY_FAULT_FSYNC");
	int moved = -1;
	for (unsigned i = 0; i < T_SPREAD && moved < 0; i += T_KEEP_EVERY) {
		unsigned now;
		t_body_end(c[i].id, &now);
		if (now != origin[i] && t_segment_exists(origin[i]))
			moved = (int)i;
	}
	/* Each segment holds two kept messages (60 KB bodies, 1 MiB
	 * segments, every 8th kept) and a job copies one (64 KiB jobs): the
	 * first job's victim keeps the second, which the failed job left. */
	cr_assert_geq(moved, 0, "no copied message whose old segment stayed");
	/* Deliver the copied message's last recipient, and only that one. */
	struct queue_rcpt *r[T_SPREAD];
	size_t n = sched_take_ready(ts.queues[0], "keep.example", 12, r, T_SPREAD);
	for (size_t i = 0; i < n; i++)
		if (strcmp(sched_rcpt_message_id(r[i]), c[moved].id) == 0)
			sched_finish(ts.queues[0], r[i], QUEUE_DELIVERED, "250 ok");
	t_pump_quiet();
	cr_assert(t_segment_exists(origin[moved]), "the old copy's segment is gone already");
	t_reopen();
	cr_assert_not(t_present(c[moved].id), "a delivered message came back from its old copy");
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	cr_assert_eq(sum.messages, T_SPREAD / T_KEEP_EVERY - 1);
}

/* A segment cut back after a failed sync counts for what it holds, not
 * for its preallocated size: max_size leaves room for the segments that
 * replace it. */
Test(store, segment_cut_after_a_failed_sync_counts_for_its_cut_size)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	ts.cfg.segment_size = 128u << 10;
	ts.cfg.batch_cap = 64u << 10;
	ts.cfg.max_bytes = 2 * ts.cfg.segment_size + (32u << 10);
	setenv("FERRY_FAULT_FSYNC", "2", 1);
	t_open();
	t_start_workers();
	uint8_t *body = t_body(20000, 47);
	static struct t_client kept, lost, c[40];
	t_send(&kept, "bob@dest.example", body, 20000);
	t_pump_until_committed(&kept, 1);
	cr_assert_eq(kept.status, 0);
	t_send(&lost, "bob@dest.example", body, 20000);
	t_pump_until_committed(&lost, 1);
	cr_assert_eq(lost.status, -EIO, "the second batch's sync did not fail");
	unsetenv("FERRY_FAULT_FSYNC");
	/* Segment 1 is cut to its first message (which keeps it): two more
	 * segments fit. */
	unsigned acked = 0;
	for (unsigned i = 0; i < 40; i++) {
		t_client_init(&c[i]);
		if (t_begin(&c[i], "bob@dest.example") != 0)
			break;
		if (t_write(&c[i], body, 20000, 16384) < 0) {
			queue_message_abort(c[i].m);
			break;
		}
		t_commit(&c[i]);
		t_pump_until_committed(&c[i], 1);
		if (c[i].status != 0)
			break;
		acked++;
	}
	cr_assert(t_segment_exists(3), "no third segment: the cut one still counts in full");
	cr_assert_geq(acked, 9, "only %u messages taken after the failed sync", acked);
}

/* Store M on worker `on` of `workers`, for ann@first.example and
 * bo@second.example. */
static void t_store_pair_on(uint32_t workers, uint32_t on, struct t_client *m)
{
	ts.cfg.workers = workers;
	t_open();
	t_start_workers();
	uint8_t *body = t_body(5000, 48);
	const char *r[] = {"ann@first.example", "bo@second.example"};
	t_client_init(m);
	cr_assert_eq(t_begin_on(ts.queues[on], m, "alice@client.example", r, 2), 0);
	cr_assert_geq(t_write(m, body, 5000, 5000), 0);
	t_commit(m);
	t_pump_until_committed(m, 1);
	cr_assert_eq(m->status, 0);
	t_close();
	t_release(body);
}

static uint64_t t_recipients_after_restart(uint32_t workers)
{
	ts.cfg.workers = workers;
	t_open();
	struct queue_store_summary sum;
	queue_store_summary(ts.store, &sum);
	t_close();
	return sum.recipients;
}

/*
 * 2 workers, then 1, then 2 again: the outcome recorded while worker 0
 * owned worker 1's message lies in worker 0's files, and must stay there
 * as long as worker 1's files hold the message, whoever owns it now.
 */
Test(store, outcome_written_for_another_writer_survives_its_return)
{
	static struct t_client m;
	t_store_pair_on(2, 1, &m);
	ts.cfg.workers = 1;
	t_open();
	t_start_workers();
	cr_assert_eq(t_finish_domain("first.example", QUEUE_DELIVERED, 10), 1);
	t_pump_idle();
	t_close();
	ts.cfg.workers = 2;
	t_open();
	t_start_workers();
	t_pump_idle();
	t_close();
	cr_assert_eq(t_recipients_after_restart(2), 1, "the delivered recipient came back");
}

/*
 * 4 workers, then 2, then 1: worker 1 owned worker 3's message and
 * recorded an outcome for it in its own files; once worker 1 no longer
 * runs either, its files must not go (when its own mail is done) while
 * worker 3's files still hold that message.
 */
Test(store, files_of_a_retired_writer_keep_outcomes_of_an_older_one)
{
	static struct t_client m, x;
	t_store_pair_on(4, 3, &m);
	ts.cfg.workers = 2;
	t_open();
	t_start_workers();
	uint8_t *body = t_body(5000, 49);
	const char *r[] = {"cy@third.example"};
	t_client_init(&x);
	cr_assert_eq(t_begin_on(ts.queues[1], &x, "alice@client.example", r, 1), 0);
	cr_assert_geq(t_write(&x, body, 5000, 5000), 0);
	t_commit(&x);
	t_pump_until_committed(&x, 1);
	cr_assert_eq(t_finish_domain("first.example", QUEUE_DELIVERED, 10), 1);
	t_pump_idle();
	t_close();
	ts.cfg.workers = 1;
	t_open();
	t_start_workers();
	cr_assert_eq(t_finish_domain("third.example", QUEUE_DELIVERED, 10), 1);
	t_pump_idle();
	t_close();
	cr_assert_eq(t_recipients_after_restart(1), 1, "the delivered recipient came back");
	/* And once the message is done, every retired writer's files go. */
	t_open();
	t_start_workers();
	cr_assert_eq(t_finish_domain("second.example", QUEUE_DELIVERED, 10), 1);
	t_pump_idle();
	for (unsigned n = 0; n < 200 && (t_segments_of(1) > 0 || t_segments_of(3) > 0); n++) {
		usleep(10000); /* what waits on another writer looks again each second */
		t_turn();
	}
	cr_assert_eq(t_segments_of(3), 0, "%u segments of worker 3 left", t_segments_of(3));
	cr_assert_eq(t_segments_of(1), 0, "%u segments of worker 1 left", t_segments_of(1));
	t_close();
	cr_assert_eq(t_recipients_after_restart(1), 0);
}

/* ---- readers of a running ferryd's spool -------------------------------------- */

struct t_reader {
	unsigned messages, segments;
	bool create_newer; /* also make a segment newer than the listing */
	bool delete_read;  /* also delete the segment just read */
};

static int t_reader_message(void *arg, const struct recover_message *m)
{
	(void)m;
	((struct t_reader *)arg)->messages++;
	return 0;
}

/* After the first segment, delete the second, as a running ferryd may. */
static void t_reader_segment(void *arg, const struct recover_segment *seg)
{
	struct t_reader *rd = arg;
	if (rd->segments++ != 0)
		return;
	char path[256];
	snprintf(path, sizeof(path), "%s/segments/w000-%012llu.seg", ts.spool,
		 (unsigned long long)seg->sequence + 1);
	cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	if (rd->delete_read) {
		snprintf(path, sizeof(path), "%s/segments/%s", ts.spool, seg->name);
		cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	}
	if (rd->create_newer) {
		snprintf(path, sizeof(path), "%s/segments/w000-000000000099.seg", ts.spool);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		cr_assert_geq(fd, 0);
		close(fd);
	}
}

static int t_read_spool(struct t_reader *rd)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/segments", ts.spool);
	int dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dir_fd, 0);
	struct recover_hooks hooks = {
		.arg = rd, .message = t_reader_message, .segment = t_reader_segment};
	struct recover_stats stats;
	int r = recover_spool(dir_fd, -1, true, &hooks, &stats);
	close(dir_fd);
	return r;
}

/* Three segments of messages, each message wholly in one segment. */
static void t_three_segments(void)
{
	ts.cfg.segment_size = 1u << 20;
	t_open();
	t_start_workers();
	uint8_t *body = t_body(300000, 50);
	static struct t_client c[9];
	for (unsigned i = 0; i < 9; i++) {
		t_send(&c[i], "bob@dest.example", body, 300000);
		t_pump_until_committed(&c[i], 1);
	}
	t_close();
	cr_assert(t_segment_exists(3));
}

/* A segment deleted under a read-only scan is skipped; with no newer
 * segment than the listing named, the view is complete. */
Test(store, reader_skips_a_segment_deleted_under_it)
{
	t_three_segments();
	struct t_reader rd = {0};
	cr_assert_eq(t_read_spool(&rd), 0);
	cr_assert_eq(rd.segments, 2, "read %u segments", rd.segments);
	cr_assert_gt(rd.messages, 0);
}

/* ... but when the writer has a segment newer than the listing, copies
 * may be in it: the reader is told to read again. */
Test(store, reader_is_told_to_read_again_when_newer_segments_appeared)
{
	t_three_segments();
	struct t_reader rd = {.create_newer = true};
	cr_assert_eq(t_read_spool(&rd), -ESTALE);
}

/* Make a file undeletable (or deletable again), as a failing disk or an
 * operator's chattr +i would; false where the file system cannot. */
static bool t_set_immutable(const char *path, bool on)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	int flags = 0;
	bool ok = ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
	if (ok) {
		flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
		ok = ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
	}
	close(fd);
	return ok;
}

/*
 * A retired worker's files go oldest first, one at a time, and stop at
 * one that cannot be deleted: a newer file may hold MESSAGE_DONE of a
 * message in an older one, which must never be left without it.
 */
Test(store, files_of_a_retired_writer_go_oldest_first)
{
	enum { N = 12 };
	static struct t_client c[N];
	t_store_on_worker_1_of_2(c, N, "bo@second.example", "bo@second.example");
	cr_assert_geq(t_segments_of(1), 3);
	ts.cfg.workers = 1;
	t_open();
	t_start_workers();
	char oldest[256];
	snprintf(oldest, sizeof(oldest), "%s/segments/w001-000000000001.seg", ts.spool);
	if (!t_set_immutable(oldest, true))
		cr_skip_test("cannot make a file immutable here (needs root and ext4 or the like)");
	cr_assert_eq(t_finish_domain("second.example", QUEUE_DELIVERED, 100), N);
	t_pump_idle();
	unsigned left = t_segments_of(1);
	bool newest_kept = t_exists(ts.spool, "segments", "w001-000000000002.seg");
	t_set_immutable(oldest, false);
	cr_assert(newest_kept && left >= 3,
		  "a newer file of worker 1 went while the oldest could not (%u left)", left);
}

/* ... and when a segment it already read is gone too: the vanished one
 * may have held outcomes of messages read from it (it is deleted only
 * after them), so the view could show finished mail as queued. */
Test(store, reader_is_told_to_read_again_when_a_segment_it_read_went)
{
	t_three_segments();
	struct t_reader rd = {.delete_read = true};
	cr_assert_eq(t_read_spool(&rd), -ESTALE);
}

/* A session hands over one 8 KiB receive buffer at a time: the body is
 * still stored as 64 KiB records (each costs a header on disk and an
 * extent in memory for as long as the message is queued). */
Test(store, body_in_8k_pieces_is_stored_in_64k_records)
{
	t_open();
	t_start_workers();
	size_t len = 640u << 10;
	uint8_t *body = t_body(len, 52);
	static struct t_client c;
	t_client_init(&c);
	cr_assert_eq(t_begin(&c, "bob@dest.example"), 0);
	cr_assert_geq(t_write(&c, body, len, 8192), 0);
	t_commit(&c);
	t_pump_until_committed(&c, 1);
	cr_assert_eq(c.status, 0);
	const char *report = t_report(c.id);
	unsigned records = 0;
	for (const char *p = report; (p = strstr(p, "\nbody ")) != NULL; p++)
		records++;
	cr_assert_eq(records, 10, "%u BODY records for 640 KiB", records);
	static const char *const rcpt[] = {"bob@dest.example"};
	t_expect_message(c.id, "alice@client.example", rcpt, 1, body, len);
}
