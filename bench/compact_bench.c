/*
 * ferry-bench-compact — how fast the queue store compacts mostly-dead
 * segments, and how much disk that gives back.
 *
 * ferryd has no delivery yet, so nothing can make mail dead under ferryd's
 * own load; this drives the real store (queue/store.c on a real io_uring
 * and a real spool) on one worker of its own, turning the worker's real
 * loop (worker_turn: the store's service, submit, completions, timers)
 * from here, as tests/unit/test_store.c does.
 *
 *   phase 1  store N messages of one recipient each; every (100/keep)-th
 *            goes to keep.example, the rest to gone.example, so the kept
 *            ones are spread over every segment
 *   phase 2  deliver every gone.example recipient, then run the loop until
 *            the store is idle and compaction starts nothing new
 *
 * Every loop is bounded (turns and wall clock); the spool is removed at
 * exit.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/config.h"
#include "core/worker.h"
#include "queue/queue.h"
#include "queue/sched.h"

#define COMPACT_BENCH_WAIT_SEC   10       /* bound on one wait for a completion */
#define COMPACT_BENCH_MAX_TURNS  10000000 /* bound on every loop, with the clock */
#define COMPACT_BENCH_TIME_LIMIT 120.0    /* seconds per phase */
/* Messages committing at once: what many sessions give one worker. */
#define COMPACT_BENCH_WINDOW 256
/* Body bytes per write, about what one recv hands a session. */
#define COMPACT_BENCH_PIECE 16384
#define COMPACT_BENCH_MIB   (1024.0 * 1024.0)

static const char compact_bench_keep_domain[] = "keep.example";
static const char compact_bench_gone_domain[] = "gone.example";

struct compact_bench_options {
	const char *dir; /* parent of the spool */
	uint64_t messages;
	uint64_t size;
	uint32_t keep; /* percent */
	uint64_t segment_size;
	uint32_t threshold; /* percent */
};

struct compact_bench;

struct compact_bench_client {
	struct queue_client qc; /* first: the callbacks get its address */
	struct compact_bench *bench;
	bool resumed;
};

struct compact_bench {
	struct compact_bench_options opt;
	char spool[PATH_MAX];
	struct queue_store *store;
	struct worker *worker;
	struct queue *queue;
	uint64_t turns;
	double deadline; /* of the current phase, in compact_bench_now() seconds */
	/* The longest turn's own work (not its wait for completions): how
	 * long sessions on this worker would have waited for the loop. */
	double busy_max;

	struct compact_bench_client clients[COMPACT_BENCH_WINDOW];
	struct compact_bench_client *free_clients[COMPACT_BENCH_WINDOW];
	unsigned nfree;
	uint64_t committed;
	uint64_t commit_failed;
	int first_commit_error;
};

struct compact_bench_disk {
	uint64_t files;
	uint64_t bytes; /* allocated: segments are preallocated, so not their length */
};

static double compact_bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the worker's real loop turn, driven here ----------------------------- */

static int compact_bench_worker_start(struct compact_bench *b)
{
	static struct worker_services services;
	worker_services_add(&services, &queue_service, b->store);
	b->worker = calloc(1, sizeof(*b->worker));
	if (b->worker == NULL)
		return -ENOMEM;
	int r = worker_init(b->worker, 0, &services);
	if (r != 0) {
		fprintf(stderr, "ferry-bench-compact: %s\n", b->worker->error);
		free(b->worker);
		b->worker = NULL;
		return r;
	}
	b->queue = queue_store_queue(b->store, 0);
	return 0;
}

/* One loop turn (the store's group commit and its chance to start a
 * compaction job, submit, completions, timers), timed without its wait:
 * the turn runs without waiting, and when it found nothing to do the
 * bench waits for a completion apart. -ETIMEDOUT once a bound is passed. */
static int compact_bench_turn(struct compact_bench *b)
{
	double start = compact_bench_now();
	unsigned done = worker_turn(b->worker, 0);
	double busy = compact_bench_now() - start;
	if (busy > b->busy_max)
		b->busy_max = busy;
	if (done == 0 && queue_pending(b->queue) > 0)
		worker_wait(b->worker, COMPACT_BENCH_WAIT_SEC * 1000);
	b->turns++;
	if (b->turns >= COMPACT_BENCH_MAX_TURNS || compact_bench_now() > b->deadline) {
		fprintf(stderr,
			"ferry-bench-compact: gave up after %llu loop turns (limit %d, %.0f s)\n",
			(unsigned long long)b->turns, COMPACT_BENCH_MAX_TURNS,
			COMPACT_BENCH_TIME_LIMIT);
		return -ETIMEDOUT;
	}
	return 0;
}

static bool compact_bench_idle(const struct compact_bench *b)
{
	return queue_pending(b->queue) == 0;
}

static void compact_bench_phase(struct compact_bench *b)
{
	b->turns = 0;
	b->busy_max = 0;
	b->deadline = compact_bench_now() + COMPACT_BENCH_TIME_LIMIT;
}

/* Wind the worker down as ferryd would (drain until idle), then stop it;
 * the store closes after. */
static void compact_bench_worker_stop(struct compact_bench *b)
{
	if (b->worker == NULL)
		return;
	compact_bench_phase(b);
	worker_shutdown(b->worker);
	while (!worker_idle(b->worker) && compact_bench_turn(b) == 0)
		;
	worker_fini(b->worker);
	free(b->worker);
	b->worker = NULL;
	b->queue = NULL;
}

/* ---- phase 1: storing the messages -------------------------------------- */

static void compact_bench_on_committed(struct queue_client *qc, int status)
{
	struct compact_bench_client *c = (struct compact_bench_client *)qc;
	struct compact_bench *b = c->bench;
	if (status == 0) {
		b->committed++;
	} else {
		b->commit_failed++;
		if (b->first_commit_error == 0)
			b->first_commit_error = status;
	}
	b->free_clients[b->nfree++] = c;
}

static void compact_bench_on_resume(struct queue_client *qc)
{
	((struct compact_bench_client *)qc)->resumed = true;
}

/* Message i is kept when it crosses the next whole keep-percent step, so
 * exactly keep % are kept, evenly spread (keep 20: every 5th). */
static bool compact_bench_kept(const struct compact_bench *b, uint64_t i)
{
	return (i + 1) * b->opt.keep / 100 > i * b->opt.keep / 100;
}

/* Begin, write and commit one message as a session would, pausing at the
 * store's backpressure. The commit completes later, in some turn. */
static int compact_bench_send(struct compact_bench *b, struct compact_bench_client *c, bool kept,
			      const uint8_t *body)
{
	struct queue_recipient rcpt = kept ? (struct queue_recipient){"kim@keep.example", 16}
					   : (struct queue_recipient){"gus@gone.example", 16};
	struct queue_envelope env = {
		.sender = "bench@client.example",
		.sender_len = strlen("bench@client.example"),
		.recipients = &rcpt,
		.nrecipients = 1,
		.client_address = "192.0.2.1",
		.helo = "client.example",
	};
	clock_gettime(CLOCK_REALTIME, &env.arrival);
	struct queue_message *m;
	int r = queue_message_begin(b->queue, &c->qc, &env, &m);
	if (r != 0) {
		fprintf(stderr, "ferry-bench-compact: queue_message_begin: %s\n", strerror(-r));
		return r;
	}
	for (uint64_t at = 0; at < b->opt.size;) {
		size_t n = b->opt.size - at < COMPACT_BENCH_PIECE ? (size_t)(b->opt.size - at)
								  : COMPACT_BENCH_PIECE;
		c->resumed = false;
		r = queue_message_write(m, body + at, n);
		if (r < 0) {
			fprintf(stderr, "ferry-bench-compact: queue_message_write: %s\n",
				strerror(-r));
			queue_message_abort(m);
			return r;
		}
		at += n;
		while (r == 1 && !c->resumed) {
			int t = compact_bench_turn(b);
			if (t != 0) {
				queue_message_abort(m);
				return t;
			}
		}
	}
	queue_message_commit(m);
	return 0;
}

static int compact_bench_store(struct compact_bench *b, const uint8_t *body, uint64_t *kept)
{
	for (unsigned i = 0; i < COMPACT_BENCH_WINDOW; i++) {
		b->clients[i] = (struct compact_bench_client){
			.qc = {.resume = compact_bench_on_resume,
			       .committed = compact_bench_on_committed},
			.bench = b,
		};
		b->free_clients[i] = &b->clients[i];
	}
	b->nfree = COMPACT_BENCH_WINDOW;
	*kept = 0;
	for (uint64_t sent = 0; sent < b->opt.messages || b->nfree < COMPACT_BENCH_WINDOW;) {
		while (sent < b->opt.messages && b->nfree > 0) {
			bool keep = compact_bench_kept(b, sent);
			/* Taken off the stack first: commits that complete
			 * while this one waits out backpressure push theirs. */
			struct compact_bench_client *c = b->free_clients[--b->nfree];
			int r = compact_bench_send(b, c, keep, body);
			if (r != 0)
				return r;
			*kept += keep;
			sent++;
		}
		int r = compact_bench_turn(b);
		if (r != 0)
			return r;
	}
	if (b->commit_failed > 0) {
		fprintf(stderr, "ferry-bench-compact: %llu messages not stored, first error: %s\n",
			(unsigned long long)b->commit_failed, strerror(-b->first_commit_error));
		return -EIO;
	}
	return 0;
}

/* Until nothing is pending, and one more turn starts nothing new: a
 * flush may start a compaction job, as the worker's next turn would. */
static int compact_bench_pump_idle(struct compact_bench *b)
{
	for (;;) {
		if (compact_bench_idle(b)) {
			int r = compact_bench_turn(b);
			if (r != 0)
				return r;
			struct queue_compaction_stats cs;
			queue_compaction_stats(b->queue, &cs);
			if (compact_bench_idle(b) && cs.running == 0)
				return 0;
		}
		int r = compact_bench_turn(b);
		if (r != 0)
			return r;
	}
}

/* ---- phase 2: delivering, which leaves the segments mostly dead ---------- */

static uint64_t compact_bench_finish_domain(struct compact_bench *b, const char *domain)
{
	uint64_t total = 0;
	struct queue_rcpt *r[64];
	size_t n;
	while ((n = sched_take_ready(b->queue, domain, strlen(domain), r, 64)) > 0) {
		for (size_t i = 0; i < n; i++)
			sched_finish(b->queue, r[i], QUEUE_DELIVERED, "250 2.0.0 ok");
		total += n;
	}
	return total;
}

/* Messages still queued for `domain`, from the operator view
 * ("<domain> <messages> <ready> ..."): did compaction keep every one? */
static uint64_t compact_bench_queued(struct compact_bench *b, const char *domain)
{
	struct buf out = {0};
	queue_report_destinations(b->queue, &out);
	uint64_t messages = 0;
	size_t len = strlen(domain);
	const char *p = buf_head(&out), *end = p + buf_len(&out);
	while (p != NULL && p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		if ((size_t)(eol - p) > len && memcmp(p, domain, len) == 0 && p[len] == ' ')
			messages = strtoull(p + len + 1, NULL, 10);
		p = eol + 1;
	}
	buf_release(&out);
	return messages;
}

static int compact_bench_disk_usage(const struct compact_bench *b, struct compact_bench_disk *out)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/segments", b->spool);
	DIR *dir = opendir(path);
	if (dir == NULL) {
		int e = errno;
		fprintf(stderr, "ferry-bench-compact: %s: %s\n", path, strerror(e));
		return -e;
	}
	*out = (struct compact_bench_disk){0};
	struct dirent *e;
	while ((e = readdir(dir)) != NULL) {
		struct stat st;
		if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		out->files++;
		out->bytes += (uint64_t)st.st_blocks * 512;
	}
	closedir(dir);
	return 0;
}

/* ---- set-up, options, clean-up ------------------------------------------- */

static int compact_bench_remove_entry(const char *path, const struct stat *sb, int flag,
				      struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* Text lines of 76 octets and CRLF, as a body received over SMTP looks. */
static void compact_bench_fill_body(uint8_t *body, uint64_t size)
{
	for (uint64_t i = 0; i < size; i++) {
		uint64_t col = i % 78;
		body[i] = col == 76 ? '\r' : col == 77 ? '\n' : (uint8_t)('a' + (i * 7 + col) % 26);
	}
}

static void compact_bench_usage(FILE *f)
{
	fprintf(f, "usage: ferry-bench-compact [--dir DIR] [--messages N] [--size BYTES]\n"
		   "                           [--keep PERCENT] [--segment-size BYTES]\n"
		   "                           [--threshold PERCENT]\n"
		   "  --dir DIR             parent of the spool, made and removed here (default "
		   "/tmp)\n"
		   "  --messages N          messages to store (default 20000)\n"
		   "  --size BYTES          body size (default 4096)\n"
		   "  --keep PERCENT        share of messages left live (default 20)\n"
		   "  --segment-size BYTES  segment file size, K/M/G suffix allowed, 4M..4G as\n"
		   "                        ferryd takes it (default 64M)\n"
		   "  --threshold PERCENT   compact_threshold (default 50)\n");
}

/* A number, with K/M/G as ferryd's configuration takes sizes, in
 * [min, max]. */
static int compact_bench_parse_size(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v;
	if (config_parse_size(text, &v) != 0 || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int compact_bench_parse_options(int argc, char **argv, struct compact_bench_options *opt)
{
	static const struct option longopts[] = {
		{"dir", required_argument, NULL, 'd'},
		{"messages", required_argument, NULL, 'n'},
		{"size", required_argument, NULL, 's'},
		{"keep", required_argument, NULL, 'k'},
		{"segment-size", required_argument, NULL, 'S'},
		{"threshold", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	*opt = (struct compact_bench_options){
		.dir = "/tmp",
		.messages = 20000,
		.size = 4096,
		.keep = 20,
		.segment_size = 64u << 20,
		.threshold = 50,
	};
	int c, longindex = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, &longindex)) != -1) {
		uint64_t v;
		int r = 0;
		switch (c) {
		case 'd':
			opt->dir = optarg;
			break;
		case 'n':
			r = compact_bench_parse_size(optarg, 1, 100000000, &opt->messages);
			break;
		case 's':
			r = compact_bench_parse_size(optarg, 1, 64u << 20, &opt->size);
			break;
		case 'k':
			r = compact_bench_parse_size(optarg, 0, 100, &v);
			opt->keep = (uint32_t)v;
			break;
		case 'S':
			/* What ferryd accepts for [spool] segment_size. */
			r = compact_bench_parse_size(optarg, 4u << 20, UINT64_C(4) << 30,
						     &opt->segment_size);
			break;
		case 't':
			r = compact_bench_parse_size(optarg, 0, 100, &v);
			opt->threshold = (uint32_t)v;
			break;
		case 'h':
			compact_bench_usage(stdout);
			exit(0);
		default:
			compact_bench_usage(stderr);
			return -EINVAL;
		}
		if (r != 0) {
			fprintf(stderr, "ferry-bench-compact: --%s: bad value \"%s\"\n",
				longopts[longindex].name, optarg);
			return r;
		}
	}
	if (optind < argc) {
		compact_bench_usage(stderr);
		return -EINVAL;
	}
	return 0;
}

static double compact_bench_per_second(double count, double seconds)
{
	return seconds > 0 ? count / seconds : 0;
}

int main(int argc, char **argv)
{
	static struct compact_bench bench;
	struct compact_bench *b = &bench;
	if (compact_bench_parse_options(argc, argv, &b->opt) != 0)
		return 2;
	/* Per-job info lines would be the only output between the figures. */
	log_setup(LOG_LEVEL_WARN, LOG_TO_STDERR);

	int status = 1;
	uint8_t *body = NULL;
	char err[512];
	if (worker_probe_io_uring(err, sizeof(err)) != 0) {
		fprintf(stderr, "ferry-bench-compact: %s\n", err);
		return 1;
	}
	snprintf(b->spool, sizeof(b->spool), "%s/ferry-bench-compact-XXXXXX", b->opt.dir);
	if (mkdtemp(b->spool) == NULL) {
		fprintf(stderr, "ferry-bench-compact: mkdtemp %s: %s\n", b->spool, strerror(errno));
		b->spool[0] = '\0';
		return 1;
	}
	body = malloc(b->opt.size);
	if (body == NULL)
		goto fail;
	compact_bench_fill_body(body, b->opt.size);

	/* ferryd's defaults otherwise (one worker, 1 MiB group commits); no
	 * spool limits, which would only stop the run. */
	struct queue_store_config cfg = {
		.spool_dir = b->spool,
		.workers = 1,
		.segment_size = b->opt.segment_size,
		.batch_cap = 1u << 20,
		.compact_threshold = b->opt.threshold,
	};
	if (queue_store_open(&b->store, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferry-bench-compact: %s\n", err);
		goto fail;
	}
	if (compact_bench_worker_start(b) != 0)
		goto fail;
	printf("ferry-bench-compact: spool %s, %llu messages of %llu bytes, %u%% kept, "
	       "segments of %.0f MiB, compact_threshold %u%%\n",
	       b->spool, (unsigned long long)b->opt.messages, (unsigned long long)b->opt.size,
	       b->opt.keep, (double)b->opt.segment_size / COMPACT_BENCH_MIB, b->opt.threshold);

	/* Phase 1. */
	uint64_t kept;
	compact_bench_phase(b);
	double t0 = compact_bench_now();
	if (compact_bench_store(b, body, &kept) != 0)
		goto fail;
	double accept_seconds = compact_bench_now() - t0;
	if (compact_bench_pump_idle(b) != 0)
		goto fail;
	struct queue_compaction_stats before, after;
	queue_compaction_stats(b->queue, &before);
	struct compact_bench_disk disk_before, disk_after;
	if (compact_bench_disk_usage(b, &disk_before) != 0)
		goto fail;
	printf("accept:     %llu messages committed in %.3f s: %.0f msgs/s (context only)\n",
	       (unsigned long long)b->committed, accept_seconds,
	       compact_bench_per_second((double)b->committed, accept_seconds));

	/* Phase 2: the clock runs from the first finish to quiescence. */
	compact_bench_phase(b);
	t0 = compact_bench_now();
	uint64_t finished = compact_bench_finish_domain(b, compact_bench_gone_domain);
	double finish_seconds = compact_bench_now() - t0;
	if (compact_bench_pump_idle(b) != 0)
		goto fail;
	double compact_seconds = compact_bench_now() - t0;
	uint64_t compact_turns = b->turns;
	double compact_busy_max = b->busy_max;
	queue_compaction_stats(b->queue, &after);
	if (compact_bench_disk_usage(b, &disk_after) != 0)
		goto fail;

	uint64_t jobs = after.jobs - before.jobs, moved = after.messages - before.messages;
	uint64_t copied = after.bytes - before.bytes, deleted = after.deleted - before.deleted;
	uint64_t failed = after.failed - before.failed;
	printf("finish:     %llu recipients delivered in %.3f s\n", (unsigned long long)finished,
	       finish_seconds);
	printf("compaction: %llu jobs, %llu messages (%.1f MiB of body) moved in %.3f s "
	       "(%llu loop turns): %.0f msgs/s, %.1f MiB/s; %llu copies failed\n",
	       (unsigned long long)jobs, (unsigned long long)moved,
	       (double)copied / COMPACT_BENCH_MIB, compact_seconds,
	       (unsigned long long)compact_turns,
	       compact_bench_per_second((double)moved, compact_seconds),
	       compact_bench_per_second((double)copied / COMPACT_BENCH_MIB, compact_seconds),
	       (unsigned long long)failed);
	printf("loop:       longest turn %.2f ms of work (sessions on this worker would wait "
	       "that long)\n",
	       compact_busy_max * 1000.0);
	printf("segments:   %llu -> %llu files, %llu deleted\n",
	       (unsigned long long)disk_before.files, (unsigned long long)disk_after.files,
	       (unsigned long long)deleted);
	printf("disk:       %.1f MiB -> %.1f MiB (%.1f MiB reclaimed)\n",
	       (double)disk_before.bytes / COMPACT_BENCH_MIB,
	       (double)disk_after.bytes / COMPACT_BENCH_MIB,
	       ((double)disk_before.bytes - (double)disk_after.bytes) / COMPACT_BENCH_MIB);

	/* A fast compaction that lost mail would be no figure at all. */
	uint64_t still_kept = compact_bench_queued(b, compact_bench_keep_domain);
	uint64_t still_gone = compact_bench_queued(b, compact_bench_gone_domain);
	printf("check:      %llu messages queued for %s (%llu expected), %llu for %s (0 "
	       "expected)\n",
	       (unsigned long long)still_kept, compact_bench_keep_domain, (unsigned long long)kept,
	       (unsigned long long)still_gone, compact_bench_gone_domain);
	if (finished != b->opt.messages - kept || still_kept != kept || still_gone != 0) {
		fprintf(stderr, "ferry-bench-compact: the store does not hold what it should\n");
		goto fail;
	}
	status = 0;
fail:
	compact_bench_worker_stop(b);
	if (b->store != NULL)
		queue_store_close(b->store);
	free(body);
	if (b->spool[0] != '\0')
		nftw(b->spool, compact_bench_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return status;
}
