/*
 * End-to-end tests of ferryctl: a real ferryd (from $FERRY_BUILD_DIR) gets
 * mail over SMTP for recipients in three domains, then build/ferryctl is
 * run as an operator would run it, online through ferryd's admin socket and
 * offline (--spool) from the segment files, and its output and exit status
 * are checked. ferryd runs under the sanitizers in the test build, so each
 * clean stop also means "no leak, no memory error" in the admin thread.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define START_MS 20000 /* ferryd up and accepting */
#define IO_MS    15000 /* one SMTP reply */
#define STOP_MS  20000 /* SIGTERM to exit */
#define CTL_MS   30000 /* one ferryctl run */
#define OUT_SIZE 65536

#include "tests/integration/checks.h"
#include "tests/integration/ferryctl_run.h"

static void suite_fini(void)
{
	harness_cleanup_all();
}

TestSuite(ferryctl, .fini = suite_fini, .timeout = 120);

/* ---- helpers ------------------------------------------------------------------- */

struct row {
	unsigned long messages, ready, deferred, held, inflight;
	char oldest[16];
};

/* The `queue` table's row for label ("alpha.example", "total (3 domains)"). */
static bool queue_row(const char *table, const char *label, struct row *r)
{
	char prefix[128];
	snprintf(prefix, sizeof(prefix), "%s ", label);
	const char *line = find_line_prefix(table, prefix);
	if (line == NULL)
		return false;
	return sscanf(line + strlen(label), " %lu %lu %lu %lu %lu %15s", &r->messages, &r->ready,
		      &r->deferred, &r->held, &r->inflight, r->oldest) == 6;
}

/* Every one of the row's recipients held (online), or ready (offline,
 * where a hold, which lives in ferryd's memory, does not show). */
static void expect_row(const char *table, const char *label, unsigned long messages, bool offline)
{
	struct row r;
	cr_assert(queue_row(table, label, &r), "no row for '%s' in:\n%s", label, table);
	cr_expect_eq(r.messages, messages, "%s: %lu queued, expected %lu, in:\n%s", label,
		     r.messages, messages, table);
	unsigned long want = offline ? r.ready : r.held;
	cr_expect_eq(want, messages, "%s: %lu %s, expected %lu, in:\n%s", label, want,
		     offline ? "ready" : "held", messages, table);
	cr_expect_eq(r.ready + r.deferred + r.held + r.inflight, messages, "%s: not all %s in:\n%s",
		     label, offline ? "ready" : "held", table);
	cr_expect(strcmp(r.oldest, "-") != 0 && strlen(r.oldest) >= 2,
		  "%s: oldest age '%s' in:\n%s", label, r.oldest, table);
}

/* The three domains and the total, as send_three() queued them. */
static void expect_three_queued(const char *table, bool offline)
{
	cr_assert_not_null(find_line_prefix(table, "DOMAIN "), "no table header in:\n%s", table);
	expect_row(table, "alpha.example", 3, offline);
	expect_row(table, "beta.example", 2, offline);
	expect_row(table, "gamma.example", 1, offline);
	expect_row(table, "total (3 domains)", 6, offline);
	/* Sorted by domain. */
	const char *a = strstr(table, "\nalpha."), *b = strstr(table, "\nbeta."),
		   *g = strstr(table, "\ngamma.");
	cr_expect(a != NULL && b != NULL && g != NULL && a < b && b < g,
		  "domains not sorted in:\n%s", table);
}

/* ---- online views ------------------------------------------------------------------ */

Test(ferryctl, queue_counts_recipients_per_domain)
{
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_ferryd(&fi);
	send_three(&fi, &s);
	int rc = run_ferryctl(out, err, "-c", fi.config, "queue", NULL);
	cr_assert_eq(rc, 0, "ferryctl queue exited %d: %s", rc, err);
	expect_three_queued(out, false);
	cr_expect_null(strstr(out, "offline"), "an online view says offline:\n%s", out);
	/* --socket reaches the same ferryd. */
	char sock[PATH_MAX + 32];
	admin_socket_path(&fi, sock, sizeof(sock));
	rc = run_ferryctl(out, err, "--socket", sock, "queue", NULL);
	cr_assert_eq(rc, 0, "ferryctl --socket queue exited %d: %s", rc, err);
	expect_three_queued(out, false);
	stop_ferryd_cleanly(&fi);
}

Test(ferryctl, list_shows_each_queue_id_of_the_domain)
{
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_ferryd(&fi);
	send_three(&fi, &s);

	int rc = run_ferryctl(out, err, "-c", fi.config, "list", "alpha.example");
	cr_assert_eq(rc, 0, "ferryctl list exited %d: %s", rc, err);
	cr_assert_not_null(find_line_prefix(out, "QUEUE-ID "), "no header in:\n%s", out);
	cr_expect_eq(count_lines_with(out, s.id[0]), 2, "%s twice (x@, y@) in:\n%s", s.id[0], out);
	cr_expect_eq(count_lines_with(out, s.id[1]), 0, "%s is not for alpha in:\n%s", s.id[1],
		     out);
	cr_expect_eq(count_lines_with(out, s.id[2]), 1, "%s once (u@) in:\n%s", s.id[2], out);
	const char *line = find_line_prefix(out, s.id[2]);
	cr_assert_not_null(line);
	char id[32], state[16], next[16], age[16], sender[128], rcpt[128], reply[128];
	unsigned attempts, size;
	cr_assert_eq(sscanf(line, "%31s %15s %u %15s %15s %uB %127s %127s %127s", id, state,
			    &attempts, next, age, &size, sender, rcpt, reply),
		     9, "bad line: %s", line);
	cr_expect_str_eq(state, "held");
	cr_expect_eq(attempts, 0);
	cr_expect_str_eq(next, "-", "a held recipient has no next attempt: %s", line);
	cr_expect_str_eq(sender, "alice@client.example");
	cr_expect_str_eq(rcpt, "u@alpha.example");
	cr_expect_str_eq(reply, "-", "never tried, no reply: %s", line);
	cr_expect(size > 0 && size < 1024, "SIZE %uB: under 1 KiB, in octets", size);
	cr_expect_not_null(find_line_prefix(out, "QUEUE-ID          STATE  ATTEMPTS  NEXT  AGE  "),
			   "header:\n%s", out);

	/* Domains are matched without regard to case. */
	rc = run_ferryctl(out, err, "-c", fi.config, "list", "BETA.example");
	cr_assert_eq(rc, 0, "ferryctl list exited %d: %s", rc, err);
	cr_expect_eq(count_lines_with(out, s.id[0]), 1, "in:\n%s", out);
	cr_expect_eq(count_lines_with(out, s.id[1]), 1, "in:\n%s", out);
	cr_expect_not_null(strstr(out, "w@Beta.EXAMPLE"), "recipient as sent, in:\n%s", out);

	rc = run_ferryctl(out, err, "-c", fi.config, "list", "nobody.example");
	cr_expect_eq(rc, 0, "an empty domain is not an error: %d %s", rc, err);
	cr_expect_not_null(strstr(out, "no mail queued for nobody.example"), "%s", out);
	stop_ferryd_cleanly(&fi);
}

Test(ferryctl, show_prints_envelope_and_headers)
{
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_ferryd(&fi);
	send_three(&fi, &s);

	int rc = run_ferryctl(out, err, "-c", fi.config, "show", s.id[0]);
	cr_assert_eq(rc, 0, "ferryctl show exited %d: %s", rc, err);
	char want[128];
	snprintf(want, sizeof(want), "queue id:    %s", s.id[0]);
	cr_expect_not_null(find_line_prefix(out, want), "no '%s' in:\n%s", want, out);
	cr_expect_not_null(find_line_prefix(out, "sender:      alice@client.example"), "%s", out);
	cr_expect_not_null(find_line_prefix(out, "client:      127.0.0.1"), "%s", out);
	cr_expect_not_null(find_line_prefix(out, "helo:        client.example"), "%s", out);
	cr_expect_not_null(find_line_prefix(out, "recipients:  x@alpha.example"), "%s", out);
	cr_expect_not_null(find_line_prefix(out, "             y@alpha.example"), "%s", out);
	cr_expect_not_null(find_line_prefix(out, "             z@beta.example"), "%s", out);
	/* Each recipient's state as journaled: held ones were never tried. */
	cr_expect_not_null(strstr(out, "\nrecipients:  x@alpha.example (queued, not tried yet)\n"),
			   "%s", out);
	const char *arrival = find_line_prefix(out, "arrival:     ");
	cr_assert_not_null(arrival, "%s", out);
	/* ISO 8601 UTC: 2026-01-02T03:04:05.678Z */
	cr_expect(arrival[13 + 4] == '-' && arrival[13 + 10] == 'T' && arrival[13 + 23] == 'Z',
		  "arrival not in ISO 8601 UTC: %.60s", arrival);
	/* Then a blank line and the headers as stored, body left out. */
	const char *blank = strstr(out, "\n\n");
	cr_assert_not_null(blank, "no blank line before the headers:\n%s", out);
	cr_expect_not_null(find_line_prefix(blank, "Subject: first of three"), "%s", out);
	cr_expect_not_null(find_line_prefix(blank, "From: alice@client.example"), "%s", out);
	cr_expect_null(strstr(out, "Not a header"), "the body was shown:\n%s", out);
	cr_expect_null(strchr(out, '\r'), "CRs left in the output");

	/* Queue ids are not case-sensitive (Crockford base32). */
	char lower[32];
	snprintf(lower, sizeof(lower), "%s", s.id[2]);
	for (char *p = lower; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	rc = run_ferryctl(out, err, "-c", fi.config, "show", lower);
	cr_assert_eq(rc, 0, "ferryctl show %s exited %d: %s", lower, rc, err);
	cr_expect_not_null(strstr(out, "Subject: third of three"), "%s", out);

	/* An unknown id is an error from ferryd: exit 1, said on stderr. */
	rc = run_ferryctl(out, err, "-c", fi.config, "show", "0000000000000000");
	cr_expect_eq(rc, 1, "unknown id: exit %d, stdout:\n%s", rc, out);
	cr_expect_not_null(strstr(err, "no message 0000000000000000 in the queue"), "stderr: %s",
			   err);
	cr_expect_eq(out[0], '\0', "stdout for an error: %s", out);
	stop_ferryd_cleanly(&fi);
}

/* ---- the socket and its protocol ----------------------------------------------------- */

/* Send one raw request line over the admin socket; the answer goes to out. */
static void raw_request(const struct ferry_instance *fi, const char *request, char *out,
			size_t size)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	admin_socket_path(fi, sa.sun_path, sizeof(sa.sun_path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct timeval tv = {.tv_sec = 15};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
		     strerror(errno));
	cr_assert_eq(send(fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t)strlen(request));
	size_t len = 0;
	for (;;) {
		ssize_t k = recv(fd, out + len, size - 1 - len, 0);
		if (k <= 0)
			break;
		len += (size_t)k;
	}
	out[len] = '\0';
	close(fd);
}

Test(ferryctl, admin_socket_is_0660_and_speaks_the_protocol)
{
	struct ferry_instance fi;
	static char out[OUT_SIZE];
	start_ferryd(&fi);
	char path[PATH_MAX + 32];
	admin_socket_path(&fi, path, sizeof(path));
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_expect(S_ISSOCK(st.st_mode), "%s is not a socket", path);
	cr_expect_eq(st.st_mode & 07777, 0660, "mode %04o, expected 0660", st.st_mode & 07777);

	raw_request(&fi, "bogus\n", out, sizeof(out));
	cr_expect_str_eq(out,
			 "error: unknown command 'bogus' (try: queue, list DOMAIN, show "
			 "QUEUEID, flush [DOMAIN|@DOMAIN|#QUEUE], hold DOMAIN|QUEUEID, release "
			 "DOMAIN|QUEUEID, delete DOMAIN|QUEUEID, bounce DOMAIN|QUEUEID, stats, "
			 "config, reload)\n");
	raw_request(&fi, "queue\r\n", out, sizeof(out));
	cr_expect_str_eq(out, "ok\n", "an empty queue");
	raw_request(&fi, "show 0000000000000000\n", out, sizeof(out));
	cr_expect_str_eq(out, "error: no message 0000000000000000 in the queue\n");
	raw_request(&fi, "list\n", out, sizeof(out));
	cr_expect_str_eq(out, "error: usage: list DOMAIN\n");
	raw_request(&fi, "flush\n", out, sizeof(out));
	cr_expect_str_eq(out, "ok\nflushed 0\n");
	raw_request(&fi, "flush Nobody.Example\n", out, sizeof(out));
	cr_expect_str_eq(out, "ok\nflushed 0\n");
	raw_request(&fi, "hold\n", out, sizeof(out));
	cr_expect_str_eq(out, "error: usage: hold DOMAIN|QUEUEID\n");
	raw_request(&fi, "release bad..example\n", out, sizeof(out));
	cr_expect_str_eq(out, "error: 'bad..example' is not a domain name (letters, digits and "
			      "hyphens in dot-separated labels), an address literal such as "
			      "[192.0.2.1], nor a queue id (16 letters and digits)\n");
	raw_request(&fi, "delete\n", out, sizeof(out));
	cr_expect_str_eq(out, "error: usage: delete DOMAIN|QUEUEID\n");
	raw_request(&fi, "bounce 0000000000000000\n", out, sizeof(out));
	cr_expect_str_eq(out, "error: no message 0000000000000000 in the queue\n");
	raw_request(&fi, "delete Nobody.Example\n", out, sizeof(out));
	cr_expect_str_eq(out, "ok\ndeleted 0 0\n");
	raw_request(&fi, "stats now\n", out, sizeof(out));
	cr_expect_str_eq(out, "error: 'stats' takes no argument\n");
	raw_request(&fi, "stats\n", out, sizeof(out));
	cr_expect(strncmp(out, "ok\n# HELP ", 10) == 0, "stats: %.200s", out);
	cr_expect_not_null(strstr(out, "\nferry_messages_received_total 0\n"), "%s", out);
	raw_request(&fi, "config\n", out, sizeof(out));
	cr_expect(strncmp(out, "ok\n# ferryd effective configuration (from ", 42) == 0,
		  "config: %.200s", out);
	cr_expect_not_null(strstr(out, "\n[server]\nhostname = relay.test\n"), "%s", out);
	raw_request(&fi, "hold alpha.example extra\n", out, sizeof(out));
	cr_expect(strncmp(out, "error: 'alpha.example extra' is not a domain name", 49) == 0, "%s",
		  out);
	raw_request(&fi, "queue now\n", out, sizeof(out));
	cr_expect_str_eq(out, "error: 'queue' takes no argument\n");

	stop_ferryd_cleanly(&fi);
	cr_expect_neq(stat(path, &st), 0, "the socket outlived ferryd");
}

/* A client of the admin socket that connects and says nothing. */
static int connect_idle(const struct ferry_instance *fi)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	admin_socket_path(fi, sa.sun_path, sizeof(sa.sun_path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
		     strerror(errno));
	return fd;
}

Test(ferryctl, idle_admin_clients_do_not_delay_an_operator)
{
	/* More silent clients than ferryd serves at once: none of them, nor
	 * all of them together, may make an operator wait. */
	enum { IDLE = 24, ANSWER_MS = 2000 };
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_ferryd(&fi);
	send_three(&fi, &s);
	int idle[IDLE];
	for (int i = 0; i < IDLE; i++)
		idle[i] = connect_idle(&fi);
	harness_sleep_ms(200); /* all of them accepted and waiting */

	for (int round = 0; round < 3; round++) {
		int64_t t0 = harness_now_ms();
		int rc = run_ferryctl(out, err, "-c", fi.config, "queue", NULL);
		int64_t took = harness_now_ms() - t0;
		cr_assert_eq(rc, 0, "ferryctl queue beside %d idle clients exited %d: %s", IDLE, rc,
			     err);
		expect_three_queued(out, false);
		cr_assert_leq(took, ANSWER_MS, "ferryctl queue took %lld ms beside %d idle clients",
			      (long long)took, IDLE);
	}
	/* Nor do they hold up a stop. */
	stop_ferryd_cleanly(&fi);
	for (int i = 0; i < IDLE; i++)
		close(idle[i]);
}

/* The mode bits of path (07777), or -1 when it cannot be stat'ed. */
static int mode_of(const char *dir, const char *name)
{
	char path[PATH_MAX + 64];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

Test(ferryctl, spool_and_socket_modes_hold_under_umask_077)
{
	/* A service manager's UMask=0077 must not take the group's access to
	 * the socket (and the spool's read access for ferryctl --spool). */
	struct ferry_instance fi;
	struct sent s;
	cr_assert_eq(harness_setup(&fi, relay_extra), 0);
	fi.set_umask = true;
	fi.umask = 077;
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not start (log above)");
	wait_admin_socket(&fi);
	send_three(&fi, &s);

	cr_expect_eq(mode_of(fi.spool, "."), 0750, "the spool is %04o", mode_of(fi.spool, "."));
	cr_expect_eq(mode_of(fi.spool, "segments"), 0750, "segments/ is %04o",
		     mode_of(fi.spool, "segments"));
	cr_expect_eq(mode_of(fi.spool, "quarantine"), 0750, "quarantine/ is %04o",
		     mode_of(fi.spool, "quarantine"));
	cr_expect_eq(mode_of(fi.spool, "ferryctl.sock"), 0660, "the socket is %04o",
		     mode_of(fi.spool, "ferryctl.sock"));
	cr_expect_eq(mode_of(fi.spool, "lock"), 0640, "the lock is %04o",
		     mode_of(fi.spool, "lock"));
	char segments[PATH_MAX + 16];
	snprintf(segments, sizeof(segments), "%s/segments", fi.spool);
	DIR *d = opendir(segments);
	cr_assert_not_null(d, "cannot list %s", segments);
	int files = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (strstr(e->d_name, ".seg") == NULL)
			continue;
		files++;
		cr_expect_eq(mode_of(segments, e->d_name), 0640, "%s is %04o", e->d_name,
			     mode_of(segments, e->d_name));
	}
	closedir(d);
	cr_expect_gt(files, 0, "no segment file after three messages");
	stop_ferryd_cleanly(&fi);
}

Test(ferryctl, without_ferryd_says_so_and_points_to_offline_mode)
{
	struct ferry_instance fi;
	static char out[OUT_SIZE], err[OUT_SIZE];
	cr_assert_eq(harness_setup(&fi, relay_extra), 0);
	int rc = run_ferryctl(out, err, "-c", fi.config, "queue", NULL);
	cr_expect_eq(rc, 1, "exit %d", rc);
	cr_expect_not_null(strstr(err, "cannot connect to "), "stderr: %s", err);
	cr_expect_not_null(strstr(err, "ferryctl.sock: No such file or directory (is ferryd "
				       "running? use --spool DIR to read the spool offline)"),
			   "stderr: %s", err);
}

Test(ferryctl, bad_usage_exits_2)
{
	static char out[OUT_SIZE], err[OUT_SIZE];
	cr_expect_eq(run_ferryctl(out, err, NULL, NULL, NULL, NULL), 2, "no command");
	cr_expect_eq(run_ferryctl(out, err, "frobnicate", NULL, NULL, NULL), 2, "unknown");
	cr_expect_not_null(strstr(err, "unknown command 'frobnicate'"), "%s", err);
	cr_expect_eq(run_ferryctl(out, err, "list", NULL, NULL, NULL), 2, "list without domain");
	cr_expect_eq(run_ferryctl(out, err, "show", "not-an-id", NULL, NULL), 2, "bad id");
	cr_expect_eq(run_ferryctl(out, err, "--spool", "/x", "--socket", "/y"), 2, "two sources");
	cr_expect_eq(run_ferryctl(out, err, "hold", NULL, NULL, NULL), 2, "hold without domain");
	cr_expect_not_null(strstr(err, "ferryctl: hold DOMAIN|QUEUEID: give exactly one argument"),
			   "%s", err);
	cr_expect_eq(run_ferryctl(out, err, "flush", "a.example", "b.example", NULL), 2,
		     "flush of two");
	cr_expect_not_null(
		strstr(err, "ferryctl: flush [DOMAIN|@DOMAIN|#QUEUE]: give at most one argument"),
		"%s", err);
	cr_expect_eq(run_ferryctl(out, err, "flush", "@bad..example", NULL, NULL), 2, "bad @");
	cr_expect_not_null(strstr(err, "ferryctl: '@bad..example' is not @DOMAIN"), "%s", err);
	cr_expect_eq(run_ferryctl(out, err, "release", "bad..example", NULL, NULL), 2,
		     "bad domain");
	cr_expect_not_null(strstr(err, "ferryctl: 'bad..example' is not a domain name"), "%s", err);
	cr_expect_eq(run_ferryctl(out, err, "--spool", "/x", "flush", NULL), 2, "flush offline");
	cr_expect_str_eq(err, "ferryctl: 'flush' changes what a running ferryd does, and --spool "
			      "only reads the spool: use -c CONFIG or --socket PATH\n");
	cr_expect_eq(run_ferryctl(out, err, "--help", NULL, NULL, NULL), 0);
	cr_expect_not_null(strstr(out, "usage: ferryctl"), "%s", out);
	cr_expect_not_null(strstr(out, "  flush [DOMAIN]  "), "%s", out);
	cr_expect_not_null(strstr(out, "  hold DOMAIN     "), "%s", out);
	cr_expect_not_null(strstr(out, "  release DOMAIN  "), "%s", out);
	cr_expect_eq(run_ferryctl(out, err, "--version", NULL, NULL, NULL), 0);
	cr_expect(strncmp(out, "ferryctl ", 9) == 0, "%s", out);
}

/* ---- offline, and across a restart ------------------------------------------------------ */

Test(ferryctl, offline_view_matches_while_running_and_after_stop)
{
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_ferryd(&fi);
	send_three(&fi, &s);

	int rc = run_ferryctl(out, err, "--spool", fi.spool, "queue", NULL);
	cr_assert_eq(rc, 0, "offline queue (ferryd running) exited %d: %s", rc, err);
	cr_expect(strncmp(out, "# offline view of ", 18) == 0, "no offline header:\n%s", out);
	expect_three_queued(out, true);

	rc = run_ferryctl(out, err, "--spool", fi.spool, "list", "alpha.example");
	cr_assert_eq(rc, 0, "offline list exited %d: %s", rc, err);
	cr_expect_eq(count_lines_with(out, s.id[0]), 2, "in:\n%s", out);
	cr_expect_eq(count_lines_with(out, s.id[2]), 1, "in:\n%s", out);

	stop_ferryd_cleanly(&fi);
	rc = run_ferryctl(out, err, "--spool", fi.spool, "queue", NULL);
	cr_assert_eq(rc, 0, "offline queue (ferryd stopped) exited %d: %s", rc, err);
	expect_three_queued(out, true);

	rc = run_ferryctl(out, err, "--spool", fi.spool, "show", s.id[1]);
	cr_assert_eq(rc, 0, "offline show exited %d: %s", rc, err);
	cr_expect_not_null(find_line_prefix(out, "recipients:  w@Beta.EXAMPLE (queued, not tried "
						 "yet)\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "\nSubject: second of three\n"), "%s", out);
	cr_expect_null(strstr(out, "Not a header"), "the body was shown:\n%s", out);

	rc = run_ferryctl(out, err, "--spool", fi.spool, "show", "0000000000000000");
	cr_expect_eq(rc, 1, "unknown id offline: exit %d", rc);
	cr_expect_not_null(strstr(err, "no message 0000000000000000 in the queue"), "%s", err);

	/* A segment that cannot be read: the view is printed without it, and
	 * the exit status says it is incomplete. */
	char bad[PATH_MAX + 64];
	snprintf(bad, sizeof(bad), "%s/segments/w000-000000000999.seg", fi.spool);
	cr_assert_eq(mkdir(bad, 0700), 0, "mkdir %s", bad);
	rc = run_ferryctl(out, err, "--spool", fi.spool, "queue", NULL);
	cr_expect_eq(rc, 1, "offline queue with an unreadable segment: exit %d", rc);
	expect_three_queued(out, true);
	cr_expect_not_null(strstr(err, "w000-000000000999.seg could not be read"), "%s", err);
	cr_expect_not_null(strstr(err, "left out of this view"), "%s", err);
	rmdir(bad);

	char missing[PATH_MAX + 16];
	snprintf(missing, sizeof(missing), "%s/nowhere", fi.dir);
	rc = run_ferryctl(out, err, "--spool", missing, "queue", NULL);
	cr_expect_eq(rc, 1, "missing spool: exit %d", rc);
	cr_expect_not_null(strstr(err, "cannot open "), "%s", err);
}

Test(ferryctl, queue_survives_a_restart)
{
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_ferryd(&fi);
	send_three(&fi, &s);
	stop_ferryd_cleanly(&fi);

	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not restart (log above)");
	wait_admin_socket(&fi);
	int rc = run_ferryctl(out, err, "-c", fi.config, "queue", NULL);
	cr_assert_eq(rc, 0, "ferryctl queue after restart exited %d: %s", rc, err);
	expect_three_queued(out, false);

	rc = run_ferryctl(out, err, "-c", fi.config, "show", s.id[0]);
	cr_assert_eq(rc, 0, "ferryctl show after restart exited %d: %s", rc, err);
	cr_expect_not_null(strstr(out, "\nSubject: first of three\n"), "%s", out);
	stop_ferryd_cleanly(&fi);
}

/* ---- delivery's moves: hold, release, flush -------------------------------------------- */

#define DELIVERY_MS 15000 /* a released or flushed recipient reaches the sink */

/* Wait until `ferryctl list DOMAIN` has no recipient left. */
static void wait_domain_empty(const struct ferry_instance *fi, const char *domain, char *out,
			      char *err)
{
	char want[300];
	snprintf(want, sizeof(want), "no mail queued for %s\n", domain);
	int64_t deadline = harness_now_ms() + DELIVERY_MS;
	do {
		ctl_ok(fi, out, err, "list", domain);
		if (strcmp(out, want) == 0)
			return;
		harness_sleep_ms(100);
	} while (harness_now_ms() < deadline);
	cr_assert_fail("%s still queued after %d ms:\n%s", domain, DELIVERY_MS, out);
}

/* The sink took `messages` with `rcpts` recipients and exited. */
static void expect_sink_got(pid_t sink, const char *sink_log, int messages, int rcpts)
{
	cr_assert_eq(harness_wait_pid(sink, DELIVERY_MS), 0, "the sink did not get its mail");
	char want[64];
	FILE *f = fopen(sink_log, "r");
	cr_assert_not_null(f);
	static char text[8192];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	snprintf(want, sizeof(want), "\"messages\":%d,\"recipients\":%d,", messages, rcpts);
	cr_expect_not_null(strstr(text, want), "sink: %s", text);
}

Test(ferryctl, hold_keeps_mail_and_release_delivers_it)
{
	struct ferry_instance fi;
	static char out[OUT_SIZE], err[OUT_SIZE], extra[512], sink_log[PATH_MAX + 16];
	int port = harness_free_port();
	cr_assert_gt(port, 0);
	snprintf(extra, sizeof(extra),
		 "[relay]\n"
		 "relay_domains = sink.example\n"
		 "[domain sink.example]\n"
		 "transport = [127.0.0.1]:%d\n",
		 port);
	cr_assert_eq(harness_setup(&fi, extra), 0);
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not start (log above)");
	wait_admin_socket(&fi);
	snprintf(sink_log, sizeof(sink_log), "%s/sink.log", fi.dir);

	ctl_ok(&fi, out, err, "hold", "Sink.Example");
	cr_expect_str_eq(out, "hold: sink.example is held until released (or ferryd restarts); 0 "
			      "queued recipients held\n");
	static const char *const rcpts[] = {"a@sink.example", "b@sink.example", NULL};
	char id[32];
	send_message(&fi, rcpts, "held for a while", id);

	/* Held: not tried, nothing to wait for, no reply. */
	harness_sleep_ms(300);
	ctl_ok(&fi, out, err, "list", "sink.example");
	cr_expect_eq(count_lines_with(out, id), 2, "in:\n%s", out);
	const char *line = find_line_prefix(out, id);
	cr_assert_not_null(line, "%s", out);
	char got_id[32], state[16], next[16], age[16], sender[128], rcpt[128], reply[128];
	unsigned attempts, size;
	cr_assert_eq(sscanf(line, "%31s %15s %u %15s %15s %uB %127s %127s %127s", got_id, state,
			    &attempts, next, age, &size, sender, rcpt, reply),
		     9, "bad line: %s", line);
	cr_expect_str_eq(state, "held");
	cr_expect_eq(attempts, 0);
	cr_expect_str_eq(next, "-");
	cr_expect_str_eq(reply, "-");

	pid_t sink = harness_start_sink(port, 1, sink_log, START_MS);
	cr_assert_gt(sink, 0, "the sink did not start");
	harness_sleep_ms(300);
	ctl_ok(&fi, out, err, "list", "sink.example");
	cr_expect_eq(count_lines_with(out, id), 2, "a held domain was delivered:\n%s", out);

	ctl_ok(&fi, out, err, "release", "sink.example");
	cr_expect_str_eq(out, "release: sink.example is released; 2 recipients are ready for "
			      "delivery now\n");
	expect_sink_got(sink, sink_log, 1, 2);
	wait_domain_empty(&fi, "sink.example", out, err);
	stop_ferryd_cleanly(&fi);
}

Test(ferryctl, flush_tries_a_deferred_domain_now)
{
	struct ferry_instance fi;
	static char out[OUT_SIZE], err[OUT_SIZE], extra[512], sink_log[PATH_MAX + 16];
	int port = harness_free_port(); /* nothing listens there yet */
	cr_assert_gt(port, 0);
	snprintf(extra, sizeof(extra),
		 "[relay]\n"
		 "relay_domains = late.example\n"
		 "[delivery]\n"
		 "retry_initial = 1h\n"
		 "[domain late.example]\n"
		 "transport = [127.0.0.1]:%d\n",
		 port);
	cr_assert_eq(harness_setup(&fi, extra), 0);
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not start (log above)");
	wait_admin_socket(&fi);
	snprintf(sink_log, sizeof(sink_log), "%s/sink.log", fi.dir);
	static const char *const rcpts[] = {"c@late.example", NULL};
	char id[32];
	send_message(&fi, rcpts, "tried too early", id);

	/* The connection is refused: deferred for an hour. */
	char reply_want[128];
	snprintf(reply_want, sizeof(reply_want),
		 "4.4.1 connect to 127.0.0.1[127.0.0.1]:%d: Connection refused", port);
	const char *line = NULL;
	int64_t deadline = harness_now_ms() + DELIVERY_MS;
	while (harness_now_ms() < deadline) {
		ctl_ok(&fi, out, err, "list", "late.example");
		line = find_line_prefix(out, id);
		if (line != NULL && strstr(line, " deferred ") != NULL)
			break;
		harness_sleep_ms(100);
	}
	cr_assert(line != NULL && strstr(line, " deferred ") != NULL, "not deferred:\n%s", out);
	/* NEXT is "in 1h" or "in 59m": its column's width varies. */
	const char *header = find_line_prefix(out, "QUEUE-ID          STATE     ATTEMPTS  NEXT ");
	cr_expect(header != NULL && strstr(header, "  RECIPIENT       LAST-REPLY\n") != NULL,
		  "header:\n%s", out);
	char got_id[32], state[16], next[16], age[16], sender[128], rcpt[128];
	unsigned attempts, size;
	int reply_at = 0;
	cr_assert_eq(sscanf(line, "%31s %15s %u in %15s %15s %uB %127s %127s %n", got_id, state,
			    &attempts, next, age, &size, sender, rcpt, &reply_at),
		     8, "bad line: %s", line);
	cr_expect_eq(attempts, 1);
	cr_expect(strcmp(next, "59m") == 0 || strcmp(next, "1h") == 0, "next attempt 'in %s'",
		  next);
	cr_expect_str_eq(rcpt, "c@late.example");
	cr_expect(strncmp(line + reply_at, reply_want, strlen(reply_want)) == 0,
		  "last reply '%.*s', expected '%s'", (int)strcspn(line + reply_at, "\n"),
		  line + reply_at, reply_want);

	/* show: the recipient as journaled, with the reply. */
	ctl_ok(&fi, out, err, "show", id);
	char want[256];
	snprintf(want, sizeof(want), "recipients:  c@late.example (deferred after 1 attempt: %s)\n",
		 reply_want);
	cr_expect_not_null(strstr(out, want), "no '%s' in:\n%s", want, out);
	/* The offline view agrees on the state, attempts and next attempt;
	 * replies are not in its view. */
	int rc = run_ferryctl(out, err, "--spool", fi.spool, "list", "late.example");
	cr_assert_eq(rc, 0, "offline list exited %d: %s", rc, err);
	line = find_line_prefix(out, id);
	cr_assert_not_null(line, "%s", out);
	cr_assert_eq(sscanf(line, "%31s %15s %u in %15s", got_id, state, &attempts, next), 4,
		     "offline: %s", line);
	cr_expect_str_eq(state, "deferred");
	cr_expect_eq(attempts, 1);
	cr_expect(strcmp(next, "59m") == 0 || strcmp(next, "1h") == 0, "offline: in %s", next);
	cr_expect(strstr(line, "c@late.example  -\n") != NULL, "offline reply: %s", line);

	/* The next hop is back: a flush does not wait the hour out. */
	pid_t sink = harness_start_sink(port, 1, sink_log, START_MS);
	cr_assert_gt(sink, 0, "the sink did not start");
	int64_t t0 = harness_now_ms();
	ctl_ok(&fi, out, err, "flush", "late.example");
	cr_expect_str_eq(out, "flush: 1 recipient of late.example is ready for delivery now\n");
	expect_sink_got(sink, sink_log, 1, 1);
	wait_domain_empty(&fi, "late.example", out, err);
	cr_expect_lt(harness_now_ms() - t0, 10000, "delivered %lld ms after the flush",
		     (long long)(harness_now_ms() - t0));
	ctl_ok(&fi, out, err, "flush", NULL);
	cr_expect_str_eq(out, "flush: 0 recipients are ready for delivery now\n");
	stop_ferryd_cleanly(&fi);
}
