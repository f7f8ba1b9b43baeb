/*
 * End-to-end tests of the spool's promises, with a real ferryd (from
 * $FERRY_BUILD_DIR, a Sanitize build under ctest) on a loopback port:
 *
 *  - kill -9 under load, again and again: every message that got its 250
 *    is back after each restart, none twice (DESIGN.md, "Recovery");
 *  - a full spool refuses new mail with 452 4.3.1 and keeps what it took;
 *  - a failed fdatasync (the FERRY_FAULT_FSYNC fault point) makes exactly
 *    the messages of that batch 451 4.3.0, never 250, and they do not come
 *    back, wherever it falls in a large message;
 *  - a message larger than a segment, and the queue as a whole, survive a
 *    clean restart (ferryctl shows the queue).
 *
 * The kill -9 test draws its timings from a PRNG whose seed it prints;
 * FERRY_TEST_SEED=<seed> repeats them.
 *
 * The spool is read back through the spool view, with the store's own
 * recovery code, read-only (harness_spool_read), as a restart would read
 * it. A ferryd stopped with SIGTERM must exit 0: under the sanitizers that
 * also means no leak.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define START_MS 30000 /* ferryd up (recovery included) and accepting */
#define IO_MS    15000 /* one reply */
#define STOP_MS  30000 /* SIGTERM to exit */

#include "tests/integration/checks.h"
#define CTL_MS 30000 /* one ferryctl run */

/* cr_assert, and ferryd's log on stderr when it fails (the sanitizers' or
 * ferryd's own word on what went wrong). */
#define assert_or_log(fi, cond, ...)                                                               \
	do {                                                                                       \
		if (!(cond))                                                                       \
			harness_dump_log(fi);                                                      \
		cr_assert(cond, __VA_ARGS__);                                                      \
	} while (0)

static void suite_fini(void)
{
	harness_cleanup_all();
}

TestSuite(recovery, .fini = suite_fini, .timeout = 300);

/* ---- helpers ---------------------------------------------------------------------- */

static void start_ferryd(struct ferry_instance *fi, const char *extra, const char *const *env)
{
	cr_assert_eq(harness_setup(fi, extra), 0, "cannot set up a temporary directory");
	cr_assert_eq(harness_start_env(fi, START_MS, env), 0,
		     "ferryd did not start (see its log above)");
}

static void restart_ferryd(struct ferry_instance *fi)
{
	cr_assert_eq(harness_start(fi, START_MS), 0, "ferryd did not restart (see its log above)");
}

/* About 1 KiB of message: headers, text lines of 78 octets, the final dot. */
static const char *message_1k(void)
{
	static char body[1200];
	if (body[0] == '\0') {
		size_t len = (size_t)snprintf(body, sizeof(body),
					      "From: load@client.example\r\n"
					      "To: rcpt@relay.example\r\n"
					      "Subject: one KiB\r\n"
					      "\r\n");
		for (int line = 0; len + 80 + 3 <= 1024; line++) {
			memset(body + len, 'a' + line % 26, 78);
			memcpy(body + len + 78, "\r\n", 2);
			len += 80;
		}
		memcpy(body + len, ".\r\n", 4);
	}
	return body;
}

enum send_stage { AT_MAIL, AT_RCPT, AT_DATA, AT_END };
static const char *const stage_names[] = {"MAIL", "RCPT", "DATA", "end of DATA"};

struct send_result {
	enum send_stage stage; /* where it stopped (AT_END: it went the whole way) */
	struct smtp_reply reply;
	char id[32]; /* the queue id of a 250 at the end of DATA, else "" */
};

/* One transaction, one command at a time (no pipelining). Stops at the
 * first reply that is not 250/250/354; the reply and its stage are in res. */
static void send_one(struct smtp_client *c, struct send_result *res)
{
	res->id[0] = '\0';
	res->stage = AT_MAIL;
	if (smtp_client_command(c, "MAIL FROM:<load@client.example>", &res->reply) != 250)
		return;
	res->stage = AT_RCPT;
	if (smtp_client_command(c, "RCPT TO:<rcpt@relay.example>", &res->reply) != 250)
		return;
	res->stage = AT_DATA;
	if (smtp_client_command(c, "DATA", &res->reply) != 354)
		return;
	res->stage = AT_END;
	if (smtp_client_send_str(c, message_1k()) != 0) {
		res->reply.code = SMTP_REPLY_ERROR;
		snprintf(res->reply.text, sizeof(res->reply.text), "cannot send the body");
		return;
	}
	if (smtp_client_read_reply(c, &res->reply) == 250)
		cr_assert(smtp_reply_queue_id(&res->reply, res->id, sizeof(res->id)),
			  "no queue id in '%s'", res->reply.text);
}

/* The value of `key=` in the last line of log holding `event`, or -1. */
static long long last_log_value(const char *log, const char *event, const char *key)
{
	const char *line = NULL;
	for (const char *p = strstr(log, event); p != NULL; p = strstr(p + 1, event))
		line = p;
	if (line == NULL)
		return -1;
	const char *eol = strchr(line, '\n');
	char pattern[64];
	snprintf(pattern, sizeof(pattern), " %s=", key);
	const char *v = strstr(line, pattern);
	if (v == NULL || (eol != NULL && v > eol))
		return -1;
	return strtoll(v + strlen(pattern), NULL, 10);
}

/* The fault points exist in test builds only (Debug, Sanitize), this test
 * and the ferryd beside it being built alike. */
static void need_fault_points(void)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("ferryd has no fault points in this build type (use Sanitize or Debug)");
#endif
}

/* ---- 1. kill -9 under load --------------------------------------------------------- */

/* splitmix64: a small PRNG whose whole state is the printed seed. */
static uint64_t prng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t test_seed(void)
{
	const char *env = getenv("FERRY_TEST_SEED");
	if (env != NULL && *env != '\0')
		return strtoull(env, NULL, 0);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
}

/* The acknowledged queue ids that ferry-bench wrote, one per line. */
struct id_list {
	char (*ids)[32];
	size_t count, cap;
};

/* Append the ids in path to list; returns how many it held, or -1. */
static long id_list_load(struct id_list *list, const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	char line[128];
	long n = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t len = strcspn(line, "\r\n");
		if (len == 0)
			continue;
		if (list->count == list->cap) {
			size_t cap = list->cap ? list->cap * 2 : 4096;
			char(*more)[32] = realloc(list->ids, cap * sizeof(*more));
			if (more == NULL) {
				fclose(f);
				return -1;
			}
			list->ids = more;
			list->cap = cap;
		}
		snprintf(list->ids[list->count++], sizeof(list->ids[0]), "%.*s", (int)len, line);
		n++;
	}
	fclose(f);
	return n;
}

/* ferry-bench's "failures" line: refusals at each stage. */
struct bench_failures {
	long connect, banner, ehlo, mail, rcpt, data, end, disconnect, timeout;
};

static bool bench_parse_failures(const char *out, struct bench_failures *f)
{
	const char *line = strstr(out, "failures   connect ");
	return line != NULL &&
	       sscanf(line,
		      "failures   connect %ld, banner %ld, ehlo %ld, mail %ld, rcpt %ld, data %ld, "
		      "end %ld, disconnect %ld, timeout %ld",
		      &f->connect, &f->banner, &f->ehlo, &f->mail, &f->rcpt, &f->data, &f->end,
		      &f->disconnect, &f->timeout) == 9;
}

/* A program's (short) output, for a message; never NULL. */
static const char *read_text(const char *path)
{
	static char text[65536];
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return "(no output)";
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

Test(recovery, kill_9_under_load_loses_nothing_acknowledged, .timeout = 900)
{
	enum { ROUNDS = 20, RUN_MIN_MS = 200, RUN_MAX_MS = 1500 };
	uint64_t seed = test_seed(), prng = seed;
	fprintf(stderr,
		"recovery: kill -9 test seed %" PRIu64 " (FERRY_TEST_SEED=%" PRIu64
		" repeats the timings)\n",
		seed, seed);

	struct ferry_instance fi;
	/* Small segments, so that they roll under load; no per-session limit
	 * may refuse ferry-bench's long sessions on a fast machine. */
	start_ferryd(&fi,
		     "[spool]\nsegment_size = 4M\n"
		     "[limits]\nmax_messages_per_session = 100000000\n"
		     "max_commands_per_session = 100000000\n",
		     NULL);
	char bench[PATH_MAX], target[64];
	harness_build_path("ferry-bench", bench, sizeof(bench));
	snprintf(target, sizeof(target), "127.0.0.1:%d", fi.port);

	static struct id_list acked;
	long acked_per_round[ROUNDS];
	long long recovered = -1; /* messages the last start recovered */
	int64_t t0 = harness_now_ms();
	for (int round = 0; round < ROUNDS; round++) {
		char ids_path[PATH_MAX + 32], out_path[PATH_MAX + 32];
		snprintf(ids_path, sizeof(ids_path), "%s/acked.%02d.ids", fi.dir, round);
		snprintf(out_path, sizeof(out_path), "%s/bench.%02d.out", fi.dir, round);
		/* --rate bounds the spool this test leaves on a small disk. */
		char *argv[] = {bench,  "-c",        "50",    "-n",     "1000000",
				"-s",   "1024",      "--ids", ids_path, "--rate",
				"4000", "--timeout", "30",    target,   NULL};
		pid_t pid = harness_spawn(argv, out_path);
		cr_assert_gt(pid, 0, "cannot start %s", bench);

		int run_ms = RUN_MIN_MS + (int)(prng_next(&prng) % (RUN_MAX_MS - RUN_MIN_MS + 1));
		int early = harness_wait_pid(pid, run_ms);
		cr_assert_eq(early, -1, "round %d: ferry-bench exited (%d) before the crash:\n%s",
			     round, early, read_text(out_path));

		cr_assert_eq(harness_crash(&fi, STOP_MS), 0, "round %d: ferryd did not die", round);
		/* A moment for ferry-bench to read the replies already in its
		 * sockets, then stop it rather than let it retry for seconds. */
		harness_sleep_ms(50);
		kill(pid, SIGTERM);
		int status = harness_wait_pid(pid, 20000);
		if (status < 0) {
			kill(pid, SIGKILL);
			harness_wait_pid(pid, 5000);
		}
		const char *out = read_text(out_path);
		cr_assert(status == 0 || status == 1, "round %d: ferry-bench exited %d:\n%s", round,
			  status, out);
		struct bench_failures f;
		cr_assert(bench_parse_failures(out, &f),
			  "round %d: no failures line in ferry-bench's output:\n%s", round, out);
		/* Until the crash ferryd was healthy: nothing may have been refused. */
		cr_assert(f.mail == 0 && f.rcpt == 0 && f.data == 0 && f.end == 0,
			  "round %d: ferryd refused mail before the crash:\n%s", round, out);

		acked_per_round[round] = id_list_load(&acked, ids_path);
		cr_assert_gt(acked_per_round[round], 0,
			     "round %d: no message was acknowledged in %d ms:\n%s", round, run_ms,
			     out);

		/* The log grows by a line per message: read only what the
		 * restart wrote. */
		size_t mark = harness_log_size(&fi);
		restart_ferryd(&fi);
		const char *restart_log = harness_log_since(&fi, mark);
		recovered = last_log_value(restart_log, "event=recovered ", "messages");
		assert_or_log(&fi, recovered >= 0,
			      "round %d: the restart logged no event=recovered", round);
		fprintf(stderr,
			"recovery: round %2d: %4d ms of load, %5ld acknowledged, %lld queued\n",
			round, run_ms, acked_per_round[round], recovered);
	}
	stop_ferryd_cleanly(&fi);

	/* One event=recovered per start; crashes look like torn tails, never
	 * like corruption. */
	const char *log = harness_log(&fi);
	int starts = 0;
	for (const char *p = strstr(log, "event=recovered "); p != NULL;
	     p = strstr(p + 1, "event=recovered "))
		starts++;
	cr_assert_eq(starts, ROUNDS + 1, "%d event=recovered lines for %d starts", starts,
		     ROUNDS + 1);
	cr_assert_null(strstr(log, "event=segment_corrupt"), "a crash looked like corruption");
	cr_assert_null(strstr(log, "event=recover_inconsistent"), "inconsistent message found");
	cr_assert_null(strstr(log, "event=record_undecodable"), "undecodable record found");

	struct spool_view *sp = NULL;
	cr_assert_eq(harness_spool_read(fi.spool, &sp), 0, "cannot read the spool %s", fi.spool);
	cr_assert_eq(sp->corrupt + sp->unreadable + sp->torn, 0,
		     "after a clean stop: %u corrupt, %u unreadable, %u torn segments", sp->corrupt,
		     sp->unreadable, sp->torn);
	cr_assert_eq((long long)sp->count, recovered,
		     "the last start recovered %lld messages, the spool holds %zu", recovered,
		     sp->count);
	/* Only compaction writes a message twice, and it copies only messages
	 * some of whose recipients ended, which nothing here does: a second
	 * copy would be a writer bug. */
	cr_assert_eq(sp->duplicates, 0, "%zu queue ids are twice in the spool", sp->duplicates);

	cr_assert_gt(acked.count, 0);
	qsort(acked.ids, acked.count, sizeof(acked.ids[0]), compare_ids);
	for (size_t i = 1; i < acked.count; i++)
		cr_assert(strcasecmp(acked.ids[i - 1], acked.ids[i]) != 0,
			  "queue id %s was given to two acknowledged messages", acked.ids[i]);
	size_t lost = 0;
	for (size_t i = 0; i < acked.count; i++) {
		const struct spool_view_message *m = spool_view_find(sp, acked.ids[i]);
		if (m != NULL && i % 997 == 0) {
			/* A sample read back whole: where recovery says the body
			 * is, it is (a cut tail took nothing acknowledged). */
			size_t len;
			char *body = harness_spool_body(sp, m, &len);
			bool whole = body != NULL && strncmp(body, "Received: ", 10) == 0 &&
				     len >= 1024 && strcmp(body + len - 2, "\r\n") == 0;
			free(body);
			cr_assert(whole, "the body of %s (%llu octets) does not read back whole",
				  m->id, (unsigned long long)m->body_len);
		}
		if (m != NULL)
			continue;
		if (lost++ < 20)
			fprintf(stderr, "recovery: acknowledged %s is not in the spool\n",
				acked.ids[i]);
	}
	fprintf(stderr,
		"recovery: %d crashes in %.1f s: %zu acknowledged, %zu in the spool (%zu synced "
		"whose 250 never reached the client), %zu lost\n",
		ROUNDS, (double)(harness_now_ms() - t0) / 1000.0, acked.count, sp->count,
		sp->count >= acked.count ? sp->count - acked.count : 0, lost);
	cr_assert_eq(lost, 0, "%zu of %zu acknowledged messages were lost (seed %" PRIu64 ")", lost,
		     acked.count, seed);
	cr_assert_geq(sp->count, acked.count);
	harness_spool_free(sp);
	free(acked.ids);
	acked = (struct id_list){0};
}

/* ---- 2. a full spool ---------------------------------------------------------------- */

/*
 * Send 1 KiB messages until the spool is full: every reply is a 250 (its id
 * appended to ids[*accepted]) until one 452 4.3.1, at whatever stage.
 * Returns false if `max` ids were taken without reaching it.
 */
static bool fill_spool(struct smtp_client *c, char (*ids)[32], unsigned max, unsigned *accepted,
		       struct send_result *res)
{
	for (unsigned i = 0; *accepted < max; i++) {
		send_one(c, res);
		if (res->stage == AT_END && res->reply.code == 250) {
			snprintf(ids[(*accepted)++], 32, "%s", res->id);
			continue;
		}
		cr_assert(reply_is(&res->reply, 452, "4.3.1"),
			  "message %u: %s got '%s', expected 452 4.3.1 once the spool is full", i,
			  stage_names[res->stage], res->reply.text);
		return true;
	}
	return false;
}

Test(recovery, full_spool_refuses_with_452_and_keeps_what_it_took, .timeout = 300)
{
	enum { MAX_MESSAGES = 20000 }; /* 8 MB of spool holds far fewer */
	struct ferry_instance fi;
	start_ferryd(&fi, "[spool]\nmax_size = 8M\nsegment_size = 4M\n[log]\nlevel = warn\n", NULL);
	static char ids[MAX_MESSAGES][32];
	unsigned accepted = 0;
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	static struct send_result res;
	bool full = fill_spool(&c, ids, MAX_MESSAGES, &accepted, &res);
	cr_assert(full, "%u messages of 1 KiB were accepted into an 8 MB spool", accepted);
	cr_assert_gt(accepted, 0, "the first message was refused: '%s'", res.reply.text);
	fprintf(stderr, "recovery: the 8M spool took %u messages; then %s got '%s'\n", accepted,
		stage_names[res.stage], res.reply.text);
	/* The session goes on, and new mail is still refused. */
	expect_command(&c, "RSET", 250, NULL);
	expect_command(&c, "MAIL FROM:<load@client.example>", 452, "4.3.1");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);

	restart_ferryd(&fi);
	const struct spool_view *sp = harness_spool_view(&fi);
	cr_assert_not_null(sp, "cannot read the spool");
	cr_assert_eq(sp->count, accepted, "%u messages got 250, the spool holds %zu", accepted,
		     sp->count);
	for (unsigned i = 0; i < accepted; i++)
		cr_assert_eq(harness_spool_copies(sp, ids[i]), 1,
			     "%s (250) is %zu times in the spool", ids[i],
			     harness_spool_copies(sp, ids[i]));
	/* A stopped writer gives back its segment's preallocated rest, so the
	 * restarted ferryd may take more before it is full again: it does,
	 * up to the limit and no further, and everything taken survives. */
	unsigned first = accepted;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	full = fill_spool(&c, ids, MAX_MESSAGES, &accepted, &res);
	cr_assert(full, "the restarted ferryd never filled up");
	cr_assert_lt(accepted - first, first, "the restart took as much again as the empty spool");
	expect_command(&c, "RSET", 250, NULL);
	expect_command(&c, "MAIL FROM:<load@client.example>", 452, "4.3.1");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);

	restart_ferryd(&fi);
	sp = harness_spool_view(&fi);
	cr_assert_not_null(sp, "cannot read the spool");
	cr_assert_eq(sp->count, accepted, "%u messages got 250, the spool holds %zu", accepted,
		     sp->count);
	for (unsigned i = 0; i < accepted; i++)
		cr_assert_eq(harness_spool_copies(sp, ids[i]), 1,
			     "%s (250) is %zu times in the spool", ids[i],
			     harness_spool_copies(sp, ids[i]));
	stop_ferryd_cleanly(&fi);
}

/* ---- 3. a failed sync, seen over the wire ------------------------------------------------ */

Test(recovery, failed_sync_gets_451_and_the_message_is_not_kept)
{
	enum { MESSAGES = 8 };
	static const char *const fault[] = {"FERRY_FAULT_FSYNC=2", NULL};
	need_fault_points();
	struct ferry_instance fi;
	start_ferryd(&fi, NULL, fault);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	char ids[MESSAGES][32];
	int codes[MESSAGES];
	unsigned refused = 0, accepted = 0;
	int first_refused = -1;
	static struct send_result res;
	/* One message per transaction, each waiting for its reply: each
	 * commit is a batch of its own, so the failed sync fails one message. */
	for (int i = 0; i < MESSAGES; i++) {
		send_one(&c, &res);
		assert_or_log(&fi, res.stage == AT_END, "message %d: %s got '%s'", i,
			      stage_names[res.stage], res.reply.text);
		codes[i] = res.reply.code;
		snprintf(ids[i], sizeof(ids[i]), "%s", res.id);
		if (res.reply.code == 250) {
			accepted++;
			continue;
		}
		cr_assert(reply_is(&res.reply, 451, "4.3.0"),
			  "message %d: end of DATA got '%s', expected 250 or 451 4.3.0", i,
			  res.reply.text);
		refused++;
		if (first_refused < 0)
			first_refused = i;
	}
	expect_command(&c, "NOOP", 250, NULL);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	cr_assert_eq(refused, 1, "%u messages got 451 for one failed sync", refused);
	/* The 2nd sync of the process belongs to the first or the second
	 * message (the first's envelope may have had a sync of its own). */
	cr_assert(first_refused <= 1, "message %d got the 451 of the 2nd sync", first_refused);
	for (int i = first_refused + 1; i < MESSAGES; i++)
		cr_assert_eq(codes[i], 250, "message %d after the 451: %d", i, codes[i]);

	/* Which queue id was refused: the 451 does not say, ferryd's log does. */
	int poisoned = harness_log_count(&fi, "event=segment_poisoned");
	const char *log = harness_log(&fi);
	cr_assert_eq(poisoned, 1, "%d event=segment_poisoned in:\n%s", poisoned, log);
	const char *failed = strstr(log, "event=commit_failed ");
	cr_assert_not_null(failed, "no event=commit_failed in:\n%s", log);
	const char *qid = strstr(failed, "queue_id=");
	cr_assert_not_null(qid);
	char refused_id[32];
	cr_assert_eq(sscanf(qid, "queue_id=%31[0-9A-Za-z]", refused_id), 1);
	cr_assert_null(strstr(failed + 1, "event=commit_failed "), "two failed commits in:\n%s",
		       log);
	stop_ferryd_cleanly(&fi);

	/* After a restart (without the fault): the 250s are there, the 451 not. */
	restart_ferryd(&fi);
	const struct spool_view *sp = harness_spool_view(&fi);
	cr_assert_not_null(sp, "cannot read the spool");
	cr_assert_eq(spool_view_find(sp, refused_id), NULL,
		     "%s got 451 and came back after the restart", refused_id);
	for (int i = 0; i < MESSAGES; i++)
		if (codes[i] == 250)
			cr_assert_eq(harness_spool_copies(sp, ids[i]), 1,
				     "%s got 250 and is %zu times in the spool", ids[i],
				     harness_spool_copies(sp, ids[i]));
	cr_assert_eq(sp->count, accepted, "%u messages got 250, the spool holds %zu", accepted,
		     sp->count);
	long long recovered = last_log_value(harness_log(&fi), "event=recovered ", "messages");
	cr_assert_eq(recovered, (long long)accepted, "ferryd recovered %lld messages, expected %u",
		     recovered, accepted);
	stop_ferryd_cleanly(&fi);
}

/*
 * A sync that fails while a large message streams in (paused, spanning a
 * segment boundary, committing): whichever sync it is, the client gets its
 * answer promptly (not a timeout), and a 250 means the message is there
 * after a restart. Which sync falls where depends on timing, so every one
 * from the large message's envelope on is tried.
 */
Test(recovery, failed_sync_during_a_large_message_never_acknowledges_a_lost_one, .timeout = 300)
{
	enum { FIRST_SYNC = 3, LAST_SYNC = 12, LINE = 100, LINES = 44000 }; /* 4.4 MB */
	static char body[(size_t)LINE * LINES + 64];
	need_fault_points();
	size_t len = (size_t)snprintf(body, sizeof(body), "Subject: large\r\n\r\n");
	for (unsigned i = 0; i < LINES; i++) {
		int n = snprintf(body + len, sizeof(body) - len, "%08u ", i);
		memset(body + len + n, 'a' + (char)(i % 26), LINE - 2 - (size_t)n);
		memcpy(body + len + LINE - 2, "\r\n", 2);
		len += LINE;
	}
	memcpy(body + len, ".\r\n", 3);
	len += 3;

	for (int sync = FIRST_SYNC; sync <= LAST_SYNC; sync++) {
		char env_fault[64];
		snprintf(env_fault, sizeof(env_fault), "FERRY_FAULT_FSYNC=%d", sync);
		const char *const env[] = {env_fault, NULL};
		struct ferry_instance fi;
		/* A short data timeout: a session that is never resumed shows
		 * as 421 4.4.2 in seconds instead of minutes. */
		start_ferryd(&fi, "[spool]\nsegment_size = 4M\n[limits]\ndata_timeout = 5s\n", env);
		struct smtp_client c;
		connect_greeted(&c, &fi);
		c.timeout_ms = 30000;
		expect_command(&c, "EHLO client.example", 250, NULL);
		/* A small message first (syncs 1 and 2): the first segment then
		 * holds a stored message. */
		static struct send_result small;
		send_one(&c, &small);
		assert_or_log(&fi, small.stage == AT_END && small.reply.code == 250,
			      "%s: the small message: %s got '%s'", env_fault,
			      stage_names[small.stage], small.reply.text);
		expect_command(&c, "MAIL FROM:<large@client.example>", 250, "2.1.0");
		expect_command(&c, "RCPT TO:<rcpt@relay.example>", 250, "2.1.5");
		expect_command(&c, "DATA", 354, NULL);
		cr_assert_eq(smtp_client_send(&c, body, len), 0, "%s: cannot send the body",
			     env_fault);
		struct smtp_reply r;
		int64_t t0 = harness_now_ms();
		int code = smtp_client_read_reply(&c, &r);
		int64_t took = harness_now_ms() - t0;
		assert_or_log(&fi, code == 250 || reply_is(&r, 451, "4.3.0"),
			      "%s: the large message got '%s' after %lld ms, expected 250 or 451 "
			      "4.3.0",
			      env_fault, r.text, (long long)took);
		char large_id[32] = "";
		if (code == 250)
			cr_assert(smtp_reply_queue_id(&r, large_id, sizeof(large_id)), "%s",
				  r.text);
		expect_command(&c, "QUIT", 221, NULL);
		smtp_client_close(&c);
		stop_ferryd_cleanly(&fi);

		restart_ferryd(&fi);
		const struct spool_view *sp = harness_spool_view(&fi);
		cr_assert_not_null(sp, "cannot read the spool");
		cr_assert_eq(harness_spool_copies(sp, small.id), 1,
			     "%s: the small message %s (250) is not in the spool", env_fault,
			     small.id);
		if (code == 250)
			assert_or_log(&fi, harness_spool_copies(sp, large_id) == 1,
				      "%s: the large message %s got 250 and is not in the spool "
				      "after a restart",
				      env_fault, large_id);
		else
			cr_assert_eq(sp->count, 1,
				     "%s: the large message got 451 but is in the spool",
				     env_fault);
		fprintf(stderr, "recovery: %s: the large message got %d in %lld ms\n", env_fault,
			code, (long long)took);
		stop_ferryd_cleanly(&fi);
		harness_cleanup(&fi);
	}
}

/* ---- 4. a message larger than a segment --------------------------------------------------- */

Test(recovery, message_larger_than_a_segment_survives_a_restart, .timeout = 120)
{
	enum { LINE = 100, LINES = 60000 }; /* 6 MB of text: it spans two 4 MB segments */
	struct ferry_instance fi;
	start_ferryd(&fi, "[spool]\nsegment_size = 4M\n", NULL);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	c.timeout_ms = 60000;
	expect_command(&c, "EHLO client.example", 250, NULL);
	expect_command(&c, "MAIL FROM:<big@client.example>", 250, "2.1.0");
	expect_command(&c, "RCPT TO:<rcpt@relay.example>", 250, "2.1.5");
	expect_command(&c, "DATA", 354, NULL);
	static char body[(size_t)LINE * LINES + 64];
	size_t len = (size_t)snprintf(body, sizeof(body), "Subject: larger than a segment\r\n\r\n");
	size_t text_start = len;
	for (unsigned i = 0; i < LINES; i++) {
		int n = snprintf(body + len, sizeof(body) - len, "%08u ", i);
		memset(body + len + n, 'a' + (char)(i % 26), LINE - 2 - (size_t)n);
		memcpy(body + len + LINE - 2, "\r\n", 2);
		len += LINE;
	}
	size_t text_len = len - text_start;
	memcpy(body + len, ".\r\n", 3);
	cr_assert_eq(smtp_client_send(&c, body, len + 3), 0, "cannot send a 6 MB body");
	struct smtp_reply r;
	char id[32];
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "end of DATA: %s", r.text);
	cr_assert(smtp_reply_queue_id(&r, id, sizeof(id)), "%s", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);

	/* Acknowledged: in the spool as a crash right now would leave it... */
	const char *stored;
	size_t stored_len;
	cr_assert_not_null(harness_spool_message(&fi, id, &stored, &stored_len),
			   "%s got 250 but a restart now would not find it", id);
	/* ...and after a clean restart, whole. */
	stop_ferryd_cleanly(&fi);
	restart_ferryd(&fi);
	const struct spool_view_message *m = harness_spool_message(&fi, id, &stored, &stored_len);
	cr_assert_not_null(m, "%s got 250 and is gone after a restart", id);
	cr_assert_str_eq(m->sender, "big@client.example");
	cr_assert_geq(stored_len, text_len);
	cr_assert(memcmp(stored + stored_len - text_len, body + text_start, text_len) == 0,
		  "the stored body differs from the one sent");
	long long recovered = last_log_value(harness_log(&fi), "event=recovered ", "messages");
	cr_assert_eq(recovered, 1, "ferryd recovered %lld messages, expected 1", recovered);
	stop_ferryd_cleanly(&fi);
}

/* ---- 5. a clean restart keeps the queue ---------------------------------------------- */

Test(recovery, restart_keeps_the_queue)
{
	enum { MESSAGES = 100 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[log]\nlevel = warn\n", NULL);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	static char ids[MESSAGES][32];
	static struct send_result res;
	for (int i = 0; i < MESSAGES; i++) {
		send_one(&c, &res);
		assert_or_log(&fi, res.stage == AT_END && res.reply.code == 250,
			      "message %d: %s got '%s'", i, stage_names[res.stage], res.reply.text);
		snprintf(ids[i], sizeof(ids[i]), "%s", res.id);
	}
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);

	restart_ferryd(&fi);
	wait_admin_socket(&fi);
	char ferryctl[PATH_MAX];
	harness_build_path("ferryctl", ferryctl, sizeof(ferryctl));
	char *argv[] = {ferryctl, "-c", fi.config, "queue", NULL};
	static char out[65536], err[65536];
	int rc = harness_run(argv, out, sizeof(out), err, sizeof(err), CTL_MS);
	cr_assert_eq(rc, 0, "ferryctl queue exited %d: %s", rc, err);
	const char *row = strstr(out, "\nrelay.example ");
	cr_assert_not_null(row, "no row for relay.example in:\n%s", out);
	/* relay.example is held (the harness's config): its mail waits. */
	unsigned long queued, ready, deferred, held;
	cr_assert_eq(sscanf(row + strlen("\nrelay.example "), "%lu %lu %lu %lu", &queued, &ready,
			    &deferred, &held),
		     4, "bad row in:\n%s", out);
	cr_assert_eq(queued, MESSAGES, "ferryctl shows %lu queued for relay.example:\n%s", queued,
		     out);
	cr_assert_eq(held, MESSAGES, "ferryctl shows %lu held for relay.example:\n%s", held, out);
	cr_assert_eq(ready + deferred, 0, "relay.example's mail was tried:\n%s", out);

	const struct spool_view *sp = harness_spool_view(&fi);
	cr_assert_not_null(sp, "cannot read the spool");
	cr_assert_eq(sp->count, MESSAGES, "the spool holds %zu messages", sp->count);
	for (int i = 0; i < MESSAGES; i++)
		cr_assert_eq(harness_spool_copies(sp, ids[i]), 1, "%s is %zu times in the spool",
			     ids[i], harness_spool_copies(sp, ids[i]));
	stop_ferryd_cleanly(&fi);
}
