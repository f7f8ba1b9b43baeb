/*
 * Tests for queue/spool_view: what an operator's view of a spool shows,
 * read from segment files written record by record here (record.h,
 * segment.h) the way the store writes them: a message with its envelope
 * and body byte for byte; one message where compaction left two copies; a
 * delivered recipient that stays delivered whatever comes after; a
 * finished message reported done; and a segment that a running ferryd
 * deletes under the reader, which neither loses nor invents a message.
 *
 * "Deleted under the reader" happens at one chosen moment: the test is
 * linked with -Wl,--wrap=openat, so the test can act just before the
 * scan opens a given segment file (after it listed the directory).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "queue/record.h"
#include "queue/segment.h"
#include "queue/spool_view.h"

#define T_SEGMENT_SIZE (1u << 20)

static char t_spool[64];
static int t_segments_fd = -1;
static struct spool_view *t_view;
static struct buf t_out;

/* ---- acting just before the scan opens a file (--wrap=openat) ------------ */

extern int __real_openat(int dir_fd, const char *path, int flags, ...);
int __wrap_openat(int dir_fd, const char *path, int flags, ...);

static struct {
	const char *name;     /* when this file is opened next, */
	void (*action)(void); /* do this first, once */
	unsigned fired;
} t_before_open;

int __wrap_openat(int dir_fd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, unsigned);
		va_end(ap);
	}
	if (t_before_open.name != NULL && strcmp(path, t_before_open.name) == 0) {
		t_before_open.name = NULL;
		t_before_open.fired++;
		t_before_open.action();
	}
	return __real_openat(dir_fd, path, flags, mode);
}

/* ---- writing segments as the store does ----------------------------------- */

struct t_segment {
	int fd;
	uint32_t writer;
	uint64_t sequence;
	uint64_t salt;
	uint64_t end;         /* where the next record goes */
	uint64_t batch_start; /* where the open batch began */
};

static uint8_t t_record[RECORD_MAX_PAYLOAD + 64];

static void t_segment_new(struct t_segment *s, uint32_t writer, uint64_t sequence)
{
	memset(s, 0, sizeof(*s));
	s->writer = writer;
	s->sequence = sequence;
	int fd = segment_create(t_segments_fd, writer, sequence, T_SEGMENT_SIZE,
				SEGMENT_OWNER_CREATOR, &s->salt, &s->end);
	cr_assert_geq(fd, 0, "segment_create(w%u, %llu): %s", writer, (unsigned long long)sequence,
		      strerror(-fd));
	s->fd = fd;
	s->batch_start = s->end;
}

static void t_put(struct t_segment *s, size_t n)
{
	cr_assert_gt(n, 0, "a record did not encode");
	cr_assert_eq(pwrite(s->fd, t_record, n, (off_t)s->end), (ssize_t)n);
	s->end += n;
}

/* End the open batch (BATCH record): what came before is acknowledged. */
static void t_batch(struct t_segment *s)
{
	struct record_batch b = {.start = s->batch_start};
	t_put(s, record_encode_batch(t_record, sizeof(t_record), s->salt, &b));
	s->batch_start = s->end;
}

static void t_segment_close(struct t_segment *s)
{
	t_batch(s);
	cr_assert_eq(fdatasync(s->fd), 0);
	close(s->fd);
	s->fd = -1;
}

struct t_message {
	const char *id;
	int64_t arrival_ms;
	const char *sender, *client, *helo;
	const char *params[4];
	const char *rcpts[4];
	const char *body;
	size_t body_len;
};

static struct record_string t_string(const char *s)
{
	return (struct record_string){s, (uint16_t)strlen(s)};
}

static void t_envelope(struct t_segment *s, const struct t_message *m)
{
	struct record_envelope env = {
		.arrival_ms = m->arrival_ms,
		.client = t_string(m->client),
		.helo = t_string(m->helo),
		.sender = t_string(m->sender),
	};
	memcpy(env.id, m->id, RECORD_ID_LEN);
	struct record_string strings[8];
	for (int i = 0; i < 4 && m->params[i] != NULL; i++)
		strings[env.nparams++] = t_string(m->params[i]);
	for (int i = 0; i < 4 && m->rcpts[i] != NULL; i++)
		strings[env.nparams + env.nrecipients++] = t_string(m->rcpts[i]);
	t_put(s, record_encode_envelope(t_record, sizeof(t_record), s->salt, &env, strings));
}

static void t_body(struct t_segment *s, const struct t_message *m, uint32_t chunk, size_t from,
		   size_t len)
{
	struct record_body b = {
		.chunk = chunk, .data = (const uint8_t *)m->body + from, .len = (uint32_t)len};
	memcpy(b.id, m->id, RECORD_ID_LEN);
	t_put(s, record_encode_body(t_record, sizeof(t_record), s->salt, &b));
}

static void t_commit(struct t_segment *s, const struct t_message *m, uint32_t nchunks)
{
	struct record_commit c = {.body_len = m->body_len, .nchunks = nchunks};
	memcpy(c.id, m->id, RECORD_ID_LEN);
	t_put(s, record_encode_commit(t_record, sizeof(t_record), s->salt, &c));
}

/* The whole message in s, its body in one chunk, one batch. */
static void t_message(struct t_segment *s, const struct t_message *m)
{
	t_envelope(s, m);
	t_body(s, m, 0, 0, m->body_len);
	t_commit(s, m, 1);
	t_batch(s);
}

static void t_outcome(struct t_segment *s, enum record_type type, const char *id,
		      uint16_t recipient, uint32_t attempts)
{
	struct record_rcpt_state st = {.recipient = recipient,
				       .attempts = attempts,
				       .time_ms = 1700000000000,
				       .reason = t_string("250 ok")};
	memcpy(st.id, id, RECORD_ID_LEN);
	t_put(s, record_encode_rcpt_state(t_record, sizeof(t_record), s->salt, type, &st));
}

static void t_done(struct t_segment *s, const char *id)
{
	struct record_id rid;
	memcpy(rid.id, id, RECORD_ID_LEN);
	t_put(s, record_encode_id(t_record, sizeof(t_record), s->salt, RECORD_MESSAGE_DONE, &rid));
}

static void t_unlink(uint32_t writer, uint64_t sequence)
{
	char name[SEGMENT_NAME_MAX];
	segment_name(name, writer, sequence);
	cr_assert_eq(unlinkat(t_segments_fd, name, 0), 0, "unlink %s: %s", name, strerror(errno));
}

/* A small message to one recipient; its id and body given. */
static struct t_message t_small(const char *id, const char *body)
{
	return (struct t_message){
		.id = id,
		.arrival_ms = 1700000000123,
		.sender = "alice@client.example",
		.client = "192.0.2.1",
		.helo = "client.example",
		.rcpts = {"bob@dest.example", "carol@dest.example", "dave@other.example"},
		.body = body,
		.body_len = strlen(body),
	};
}

/* ---- reading ------------------------------------------------------------------ */

static void t_open_view(void)
{
	spool_view_close(t_view);
	t_view = NULL;
	char err[512] = "";
	int r = spool_view_open(&t_view, t_spool, err, sizeof(err));
	cr_assert_eq(r, 0, "spool_view_open: %d: %s", r, err);
}

static const struct spool_view_message *t_find(const char *id)
{
	const struct spool_view_message *m = spool_view_find(t_view, id);
	cr_assert_not_null(m, "%s is not in the view", id);
	return m;
}

/* m's body as read back, NUL-terminated in t_out. */
static const char *t_read_body(const struct spool_view_message *m)
{
	char why[256] = "";
	buf_clear(&t_out);
	int r = spool_view_read_body(t_view->segments_fd, m->writer, m->extents, m->nextents,
				     &t_out, why, sizeof(why));
	cr_assert_eq(r, 0, "reading the body of %s: %d: %s", m->id, r, why);
	cr_assert_eq(buf_len(&t_out), m->body_len, "%s: %zu octets read, %llu stored", m->id,
		     buf_len(&t_out), (unsigned long long)m->body_len);
	cr_assert_eq(buf_append(&t_out, "", 1), 0);
	return buf_head(&t_out);
}

static void t_suite_init(void)
{
	/* Recovery logs what it judges; errors only, on stderr. */
	log_setup(LOG_LEVEL_ERROR, LOG_TO_STDERR);
	snprintf(t_spool, sizeof(t_spool), "/tmp/ferry-test-spool-view-XXXXXX");
	cr_assert_not_null(mkdtemp(t_spool));
	t_segments_fd = segment_dir_open(t_spool);
	cr_assert_geq(t_segments_fd, 0, "segment_dir_open: %s", strerror(-t_segments_fd));
}

static int t_remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void t_suite_fini(void)
{
	spool_view_close(t_view);
	t_view = NULL;
	buf_release(&t_out);
	if (t_segments_fd >= 0)
		close(t_segments_fd);
	nftw(t_spool, t_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(spool_view, .init = t_suite_init, .fini = t_suite_fini, .timeout = 60);

/* ---- a message read back -------------------------------------------------------- */

Test(spool_view, message_reads_back_with_its_envelope_and_body)
{
	/* 150 KiB in three chunks, the last one (and the COMMIT) in the
	 * writer's next segment; every byte value, CRs and NULs included. */
	static char body[150000];
	static const char head[] = "From: alice@client.example\r\nSubject: hello\r\n\r\n";
	memcpy(body, head, sizeof(head) - 1);
	for (size_t i = sizeof(head) - 1; i < sizeof(body); i++)
		body[i] = (char)(i * 7 + 3);
	struct t_message m = {
		.id = "3C1CHBQMKY608000",
		.arrival_ms = 1767225845678,
		.sender = "alice@client.example",
		.client = "192.0.2.7",
		.helo = "mx.client.example",
		.params = {"BODY=8BITMIME", "SIZE=150000"},
		.rcpts = {"bob@Dest.EXAMPLE", "carol@sub.dest.example", "postmaster"},
		.body = body,
		.body_len = sizeof(body),
	};
	struct t_segment s1, s2;
	t_segment_new(&s1, 2, 7);
	t_envelope(&s1, &m);
	t_body(&s1, &m, 0, 0, 65536);
	t_body(&s1, &m, 1, 65536, 65536);
	t_segment_close(&s1);
	t_segment_new(&s2, 2, 8);
	t_body(&s2, &m, 2, 131072, sizeof(body) - 131072);
	t_commit(&s2, &m, 3);
	t_segment_close(&s2);

	t_open_view();
	cr_assert_eq(t_view->count, 1);
	cr_assert_eq(t_view->segments, 2);
	cr_assert_eq(t_view->torn + t_view->corrupt + t_view->unreadable + t_view->duplicates, 0);
	const struct spool_view_message *v = t_find("3c1chbqmky608000"); /* any case */
	cr_assert_str_eq(v->id, "3C1CHBQMKY608000");
	cr_assert_eq(v->writer, 2);
	cr_assert_eq(v->arrival_ms, 1767225845678);
	cr_assert_eq(v->body_len, sizeof(body));
	cr_assert_str_eq(v->sender, "alice@client.example");
	cr_assert_eq(v->sender_len, strlen("alice@client.example"));
	cr_assert_str_eq(v->client, "192.0.2.7");
	cr_assert_str_eq(v->helo, "mx.client.example");
	cr_assert_eq(v->nparams, 2);
	cr_assert_str_eq(v->params[0].text, "BODY=8BITMIME");
	cr_assert_str_eq(v->params[1].text, "SIZE=150000");
	cr_assert_eq(v->nrcpts, 3);
	cr_assert_str_eq(v->rcpts[0].address, "bob@Dest.EXAMPLE", "the address as received");
	cr_assert_str_eq(v->rcpts[0].domain, "dest.example", "the domain lower-cased");
	cr_assert_str_eq(v->rcpts[1].domain, "sub.dest.example");
	cr_assert_str_eq(v->rcpts[2].address, "postmaster");
	cr_assert_str_eq(v->rcpts[2].domain, "");
	for (unsigned i = 0; i < 3; i++) {
		cr_assert_eq(v->rcpts[i].state, SPOOL_VIEW_QUEUED);
		cr_assert_eq(v->rcpts[i].attempts, 0);
	}
	cr_assert_not(v->done);
	cr_assert_eq(v->nextents, 3);
	cr_assert_eq(v->extents[0].sequence, 7);
	cr_assert_eq(v->extents[2].sequence, 8);

	cr_assert(memcmp(t_read_body(v), body, sizeof(body)) == 0, "the body differs");

	char why[256];
	buf_clear(&t_out);
	cr_assert_eq(spool_view_read_headers(t_view->segments_fd, v->writer, v->extents,
					     v->nextents, 65536, &t_out, why, sizeof(why)),
		     0, "%s", why);
	cr_assert_eq(buf_len(&t_out), strlen(head) - 2,
		     "the header section, without the "
		     "empty line that ends it");
	cr_assert(memcmp(buf_head(&t_out), head, strlen(head) - 2) == 0);
	buf_clear(&t_out);
	cr_assert_eq(spool_view_read_headers(t_view->segments_fd, v->writer, v->extents,
					     v->nextents, 10, &t_out, why, sizeof(why)),
		     0, "%s", why);
	cr_assert_eq(buf_len(&t_out), 10, "headers are read up to max");

	cr_assert_null(spool_view_find(t_view, "3C1CHBQMKY608001"));
	cr_assert_null(spool_view_find(t_view, "3C1"));
}

Test(spool_view, segment_names_round_trip)
{
	char name[SPOOL_VIEW_SEGMENT_NAME_MAX];
	spool_view_segment_name(name, 3, 42);
	cr_assert_str_eq(name, "w003-000000000042.seg");
	uint32_t writer;
	uint64_t sequence;
	cr_assert(spool_view_parse_segment_name(name, &writer, &sequence));
	cr_assert_eq(writer, 3);
	cr_assert_eq(sequence, 42);
	cr_assert_not(spool_view_parse_segment_name("w003-00000000004.seg", &writer, &sequence));
	cr_assert_not(spool_view_parse_segment_name("w+03-000000000042.seg", &writer, &sequence));
}

Test(spool_view, missing_segments_directory_is_enoent)
{
	char err[512] = "", missing[128];
	snprintf(missing, sizeof(missing), "%s/nowhere", t_spool);
	struct spool_view *v = NULL;
	cr_assert_eq(spool_view_open(&v, missing, err, sizeof(err)), -ENOENT);
	cr_assert_null(v);
	cr_assert_not_null(strstr(err, "cannot open "), "%s", err);
	cr_assert_not_null(strstr(err, "/nowhere/segments: No such file or directory"), "%s", err);
}

/* ---- the duplicate rule ---------------------------------------------------------- */

/* Compaction copied A forward in its own writer, and B from a writer that
 * no longer runs into its owner's (lower) writer; neither old segment is
 * deleted yet. Each shows once, from its copy. */
Test(spool_view, duplicate_copies_are_shown_once)
{
	struct t_message a = t_small("AAAAAAAAAAAAAAA1", "Subject: a\r\n\r\nA\r\n");
	struct t_message b = t_small("BBBBBBBBBBBBBBB2", "Subject: b\r\n\r\nB\r\n");
	struct t_segment old_a, old_b, copies;
	t_segment_new(&old_b, 1, 3);
	t_message(&old_b, &b);
	t_segment_close(&old_b);
	t_segment_new(&old_a, 0, 4);
	t_message(&old_a, &a);
	t_segment_close(&old_a);
	t_segment_new(&copies, 0, 5);
	t_message(&copies, &a);
	t_message(&copies, &b);
	t_segment_close(&copies);

	t_open_view();
	cr_assert_eq(t_view->count, 2, "%zu messages", t_view->count);
	cr_assert_eq(t_view->duplicates, 2);
	const struct spool_view_message *va = t_find(a.id), *vb = t_find(b.id);
	cr_assert_eq(va->writer, 0);
	cr_assert_eq(va->extents[0].sequence, 5, "the later copy is kept");
	cr_assert_eq(vb->writer, 0, "the copy in the running (lower) writer is kept");
	cr_assert_eq(vb->extents[0].sequence, 5);
	cr_assert_str_eq(t_read_body(va), a.body);
	cr_assert_str_eq(t_read_body(vb), b.body);
}

/* ---- the outcome rule -------------------------------------------------------------- */

Test(spool_view, delivered_recipient_stays_delivered)
{
	struct t_message m = t_small("CCCCCCCCCCCCCCC3", "Subject: c\r\n\r\nC\r\n");
	struct t_segment s1, s2;
	t_segment_new(&s1, 0, 1);
	t_message(&s1, &m);
	t_outcome(&s1, RECORD_RCPT_DEFERRED, m.id, 0, 1);
	t_outcome(&s1, RECORD_RCPT_DELIVERED, m.id, 0, 1);
	t_outcome(&s1, RECORD_RCPT_DEFERRED, m.id, 1, 1);
	t_segment_close(&s1);
	/* The compaction copy repeats the ended recipient's outcome; a
	 * deferral of it read later (a stale one) changes nothing. */
	t_segment_new(&s2, 0, 2);
	t_message(&s2, &m);
	t_outcome(&s2, RECORD_RCPT_DELIVERED, m.id, 0, 1);
	t_outcome(&s2, RECORD_RCPT_DEFERRED, m.id, 0, 5);
	t_outcome(&s2, RECORD_RCPT_DEFERRED, m.id, 1, 2);
	t_outcome(&s2, RECORD_RCPT_FAILED, m.id, 2, 3);
	t_outcome(&s2, RECORD_RCPT_DELIVERED, m.id, 2, 3);
	t_outcome(&s2, RECORD_RCPT_DELIVERED, m.id, 9, 0); /* no such recipient */
	t_segment_close(&s2);

	t_open_view();
	cr_assert_eq(t_view->count, 1);
	const struct spool_view_message *v = t_find(m.id);
	cr_assert_eq(v->rcpts[0].state, SPOOL_VIEW_DELIVERED, "delivered, then deferred: %d",
		     v->rcpts[0].state);
	cr_assert_eq(v->rcpts[1].state, SPOOL_VIEW_DEFERRED);
	cr_assert_eq(v->rcpts[1].attempts, 2);
	cr_assert_eq(v->rcpts[2].state, SPOOL_VIEW_FAILED, "failed stays failed");
	cr_assert_not(v->done);
}

/* The old copy's segment is gone; a deferral written between it and the
 * compaction copy is read before the message it names, and still counts. */
Test(spool_view, outcome_read_before_its_message_counts)
{
	struct t_message m = t_small("DDDDDDDDDDDDDDD4", "Subject: d\r\n\r\nD\r\n");
	struct t_segment s2, s3;
	t_segment_new(&s2, 0, 2);
	t_outcome(&s2, RECORD_RCPT_DEFERRED, m.id, 1, 4);
	t_segment_close(&s2);
	t_segment_new(&s3, 0, 3);
	t_message(&s3, &m);
	t_segment_close(&s3);

	t_open_view();
	const struct spool_view_message *v = t_find(m.id);
	cr_assert_eq(v->rcpts[0].state, SPOOL_VIEW_QUEUED);
	cr_assert_eq(v->rcpts[1].state, SPOOL_VIEW_DEFERRED);
	cr_assert_eq(v->rcpts[1].attempts, 4);
}

Test(spool_view, message_with_message_done_is_reported_done)
{
	struct t_message done = t_small("EEEEEEEEEEEEEEE5", "Subject: e\r\n\r\nE\r\n");
	struct t_message live = t_small("FFFFFFFFFFFFFFF6", "Subject: f\r\n\r\nF\r\n");
	struct t_segment s;
	t_segment_new(&s, 0, 1);
	t_message(&s, &done);
	t_message(&s, &live);
	for (uint16_t i = 0; i < 3; i++)
		t_outcome(&s, RECORD_RCPT_DELIVERED, done.id, i, 1);
	t_done(&s, done.id);
	t_segment_close(&s);

	t_open_view();
	cr_assert_eq(t_view->count, 2);
	cr_assert(t_find(done.id)->done);
	cr_assert_not(t_find(live.id)->done);
}

/* ---- stale reads --------------------------------------------------------------------- */

static struct t_message t_moved[2];

/* What compaction does to segment w000-1: copies of its messages into a
 * new segment, synced, then the old one deleted. */
static void t_compact_segment_1(void)
{
	struct t_segment s;
	t_segment_new(&s, 0, 2);
	t_message(&s, &t_moved[0]);
	t_message(&s, &t_moved[1]);
	t_segment_close(&s);
	t_unlink(0, 1);
}

/* The scan listed w000-1 alone; ferryd compacts it before the scan opens
 * it. Its messages are in a segment the listing did not name: the view
 * reads again and shows both, once. */
Test(spool_view, segment_deleted_under_the_reader_loses_no_message)
{
	t_moved[0] = t_small("GGGGGGGGGGGGGGG7", "Subject: g\r\n\r\nG\r\n");
	t_moved[1] = t_small("HHHHHHHHHHHHHHH8", "Subject: h\r\n\r\nH\r\n");
	struct t_segment s;
	t_segment_new(&s, 0, 1);
	t_message(&s, &t_moved[0]);
	t_message(&s, &t_moved[1]);
	t_segment_close(&s);

	t_before_open.name = "w000-000000000001.seg";
	t_before_open.action = t_compact_segment_1;
	t_open_view();
	cr_assert_eq(t_before_open.fired, 1, "not linked with -Wl,--wrap=openat?");
	cr_assert_geq(t_view->rereads, 1, "the stale scan was not read again");
	cr_assert_eq(t_view->count, 2, "%zu messages", t_view->count);
	cr_assert_eq(t_view->duplicates, 0);
	for (int i = 0; i < 2; i++) {
		const struct spool_view_message *v = t_find(t_moved[i].id);
		cr_assert_eq(v->extents[0].sequence, 2);
		cr_assert_str_eq(t_read_body(v), t_moved[i].body);
	}
}

static void t_delete_segment_1(void)
{
	t_unlink(0, 1);
}

/* The copies were there when the scan listed the directory; the old
 * segment goes before the scan opens it. Nothing to read again, and no
 * message twice. */
Test(spool_view, segment_deleted_under_the_reader_invents_no_message)
{
	t_moved[0] = t_small("JJJJJJJJJJJJJJJ9", "Subject: j\r\n\r\nJ\r\n");
	t_moved[1] = t_small("KKKKKKKKKKKKKKKA", "Subject: k\r\n\r\nK\r\n");
	struct t_segment s;
	t_segment_new(&s, 0, 1);
	t_message(&s, &t_moved[0]);
	t_message(&s, &t_moved[1]);
	t_segment_close(&s);
	t_segment_new(&s, 0, 2);
	t_message(&s, &t_moved[0]);
	t_message(&s, &t_moved[1]);
	t_segment_close(&s);

	t_before_open.name = "w000-000000000001.seg";
	t_before_open.action = t_delete_segment_1;
	t_open_view();
	cr_assert_eq(t_before_open.fired, 1, "not linked with -Wl,--wrap=openat?");
	cr_assert_eq(t_view->rereads, 0);
	cr_assert_eq(t_view->count, 2, "%zu messages", t_view->count);
	cr_assert_eq(t_view->duplicates, 0);
	cr_assert_eq(t_view->segments, 1);
}

/* A body read after the view was taken finds its segment gone: the caller
 * is told it moved, and a new view reads it from its new place. */
Test(spool_view, body_moved_after_the_view_was_taken_is_said_so)
{
	t_moved[0] = t_small("MMMMMMMMMMMMMMMB", "Subject: m\r\n\r\nM\r\n");
	t_moved[1] = t_small("NNNNNNNNNNNNNNNC", "Subject: n\r\n\r\nN\r\n");
	struct t_segment s;
	t_segment_new(&s, 0, 1);
	t_message(&s, &t_moved[0]);
	t_message(&s, &t_moved[1]);
	t_segment_close(&s);

	t_open_view();
	const struct spool_view_message *v = t_find(t_moved[0].id);
	t_compact_segment_1();
	char why[256] = "";
	buf_clear(&t_out);
	cr_assert_eq(spool_view_read_body(t_view->segments_fd, v->writer, v->extents, v->nextents,
					  &t_out, why, sizeof(why)),
		     SPOOL_VIEW_MOVED);
	cr_assert_eq(buf_len(&t_out), 0, "nothing appended");
	cr_assert_str_eq(why, "cannot open segments/w000-000000000001.seg: No such file or "
			      "directory");
	buf_clear(&t_out);
	cr_assert_eq(spool_view_read_headers(t_view->segments_fd, v->writer, v->extents,
					     v->nextents, 100, &t_out, why, sizeof(why)),
		     SPOOL_VIEW_MOVED);

	t_open_view();
	cr_assert_eq(t_view->count, 2);
	cr_assert_str_eq(t_read_body(t_find(t_moved[0].id)), t_moved[0].body);
}
