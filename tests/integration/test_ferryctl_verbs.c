/*
 * End-to-end tests of ferryctl's verbs against a running ferryd (part of
 * the test_ferryctl program; its suite is test_ferryctl.c's): each view
 * and move with --json, its document read by python3's json module and
 * its numbers checked against what was sent; hold and release of one
 * message by its queue id; delete and bounce, their effects in the queue,
 * at a next hop (the DSN of a bounce, tests/integration/next_hop.h) and
 * across a restart; stats and config.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define START_MS 20000 /* ferryd up and accepting */
#define IO_MS    15000 /* one SMTP reply */
#define STOP_MS  20000 /* SIGTERM to exit */
#define CTL_MS   30000 /* one ferryctl run */
#define WAIT_MS  30000 /* mail to reach the next hop, a move to take effect */
#define OUT_SIZE 65536

#include "tests/integration/checks.h"
#include "tests/integration/ferryctl_run.h"
#include "tests/integration/next_hop.h"

/* ferryctl -c CONFIG --json ARGS...: it must exit 0; its stdout. */
#define ctl_json(fi, out, err, ...)                                                                \
	do {                                                                                       \
		int rc_ = run_ferryctl_args(out, err, "-c", (fi)->config, "--json", __VA_ARGS__,   \
					    NULL);                                                 \
		cr_assert_eq(rc_, 0, "ferryctl --json %s exited %d: %s%s", #__VA_ARGS__, rc_, err, \
			     out);                                                                 \
	} while (0)

/* Run `command` (a ferryctl command line, no quoting needed) on a terminal
 * of its own, through script(1), answering `answer` to what it asks (NULL:
 * nothing, an end of input); the terminal's output goes to out. */
static int run_ferryctl_shell(char *out, char *err, const char *answer, const char *command)
{
	char line[3 * PATH_MAX];
	snprintf(line, sizeof(line), "%s%s%sscript -qec '%s' /dev/null", answer ? "echo " : "",
		 answer ? answer : "", answer ? " | " : "", command);
	char *argv[] = {"sh", "-c", line, NULL};
	out[0] = err[0] = '\0';
	return harness_run(argv, out, OUT_SIZE, err, OUT_SIZE, CTL_MS);
}

/* A ferryd with `extra` config, its admin socket up. */
static void start_with(struct ferry_instance *fi, const char *extra)
{
	cr_assert_eq(harness_setup(fi, extra), 0, "cannot set up a temporary directory");
	cr_assert_eq(harness_start(fi, START_MS), 0, "ferryd did not start (see its log above)");
	wait_admin_socket(fi);
}

/* ---- the views --------------------------------------------------------------------- */

Test(ferryctl, views_in_json_carry_the_queue_as_sent)
{
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE], expr[256];
	start_ferryd(&fi);
	send_three(&fi, &s);

	ctl_json(&fi, out, err, "queue");
	cr_expect_str_eq(json_get(out, "d['offline']"), "False");
	cr_expect_str_eq(json_get(out, "[x['domain'] for x in d['destinations']]"),
			 "['alpha.example', 'beta.example', 'gamma.example']");
	cr_expect_str_eq(json_get(out, "[x['recipients'] for x in d['destinations']]"),
			 "[3, 2, 1]");
	cr_expect_str_eq(json_get(out, "[x['held'] for x in d['destinations']]"), "[3, 2, 1]");
	cr_expect_str_eq(json_get(out, "d['total']['domains'], d['total']['recipients'], "
				       "d['total']['ready'], d['total']['inflight']"),
			 "(3, 6, 0, 0)");
	cr_expect_str_eq(json_get(out, "0 <= d['total']['oldest_age_seconds'] < 60"), "True");

	ctl_json(&fi, out, err, "list", "Alpha.Example");
	cr_expect_str_eq(json_get(out, "d['domain']"), "alpha.example");
	cr_expect_str_eq(json_get(out, "len(d['recipients'])"), "3");
	snprintf(expr, sizeof(expr),
		 "sorted(r['recipient'] for r in d['recipients'] if "
		 "r['queue_id'] == '%s')",
		 s.id[0]);
	cr_expect_str_eq(json_get(out, expr), "['x@alpha.example', 'y@alpha.example']");
	cr_expect_str_eq(json_get(out, "{(r['state'], r['attempts'], r['next_attempt_ms'], "
				       "r['sender'], r['last_reply']) for r in d['recipients']}"),
			 "{('held', 0, None, 'alice@client.example', None)}");
	cr_expect_str_eq(json_get(out, "all(0 < r['size'] < 1024 and r['arrival_ms'] > 0 for r "
				       "in d['recipients'])"),
			 "True");

	ctl_json(&fi, out, err, "show", s.id[0]);
	cr_expect_str_eq(json_get(out, "d['queue_id']"), s.id[0]);
	cr_expect_str_eq(json_get(out, "d['sender'], d['client'], d['helo']"),
			 "('alice@client.example', '127.0.0.1', 'client.example')");
	cr_expect_str_eq(json_get(out, "[(r['address'], r['state'], r['attempts']) for r in "
				       "d['recipients']]"),
			 "[('x@alpha.example', 'queued', 0), ('y@alpha.example', 'queued', 0), "
			 "('z@beta.example', 'queued', 0)]");
	cr_expect_str_eq(json_get(out, "'Subject: first of three\\r\\n' in d['headers'] and "
				       "'this is the body' not in d['headers']"),
			 "True");
	cr_expect_str_eq(json_get(out, "len(d['body']) >= 1 and d['body'][0]['length'] > 0"),
			 "True");

	/* The offline view is the same document, from the segment files. */
	int rc = run_ferryctl_args(out, err, "--spool", fi.spool, "--json", "queue", NULL);
	cr_assert_eq(rc, 0, "offline queue --json exited %d: %s", rc, err);
	cr_expect_str_eq(
		json_get(out, "d['offline'], d['total']['recipients'], d['total']['ready']"),
		"(True, 6, 6)");
	stop_ferryd_cleanly(&fi);
}

/* ---- hold and release by queue id ------------------------------------------------------ */

Test(ferryctl, hold_and_release_one_message_by_its_queue_id)
{
	struct next_hop hop = {0};
	next_hop_start(&hop, NULL);
	char extra[256];
	snprintf(extra, sizeof(extra),
		 "[relay]\nrelay_domains = sink.test\n"
		 "[domain sink.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port);
	struct ferry_instance fi;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_with(&fi, extra);
	/* Held while the messages come, so that one can be held by its id. */
	ctl_json(&fi, out, err, "hold", "sink.test");
	static const char *const to_one[] = {"one@sink.test", NULL};
	static const char *const to_two[] = {"two@sink.test", NULL};
	char one[32], two[32];
	send_message(&fi, to_one, "held by its id", one);
	send_message(&fi, to_two, "held with its domain", two);

	ctl_json(&fi, out, err, "hold", one);
	char want[128];
	snprintf(want, sizeof(want), "('hold', '%s', 'queue_id', 1, 0)", one);
	cr_expect_str_eq(json_get(out, "d['command'], d['target'], d['by'], d['recipients'], "
				       "d['inflight']"),
			 want);
	cr_expect_str_eq(state_of(&fi, "sink.test", "one@sink.test"), "held-id");
	cr_expect_str_eq(state_of(&fi, "sink.test", "two@sink.test"), "held");

	/* Released by id while its domain is held: the domain's hold keeps it. */
	ctl_json(&fi, out, err, "hold", two);
	ctl_json(&fi, out, err, "release", two);
	cr_expect_str_eq(json_get(out, "d['command'], d['by'], d['recipients'], d['still_held']"),
			 "('release', 'queue_id', 0, 1)");
	cr_expect_str_eq(state_of(&fi, "sink.test", "two@sink.test"), "held");

	/* The domain's release delivers the one it held, not the one held by id. */
	ctl_json(&fi, out, err, "release", "sink.test");
	cr_expect_str_eq(json_get(out, "d['recipients']"), "1");
	cr_assert_eq(next_hop_wait_delivered(&hop, "two@sink.test", 1, WAIT_MS), 1);
	ctl_json(&fi, out, err, "flush", "sink.test");
	cr_expect_str_eq(json_get(out, "d['command'], d['by'], d['recipients']"),
			 "('flush', 'domain', 0)");
	harness_sleep_ms(500);
	cr_expect_eq(next_hop_delivered(&hop, "one@sink.test"), 0, "held by id, yet delivered");
	cr_expect_str_eq(state_of(&fi, "sink.test", "one@sink.test"), "held-id");

	/* Its own release sends it. */
	ctl_json(&fi, out, err, "release", one);
	cr_expect_str_eq(json_get(out, "d['recipients'], d['still_held']"), "(1, 0)");
	cr_assert_eq(next_hop_wait_delivered(&hop, "one@sink.test", 1, WAIT_MS), 1);
	wait_state(&fi, "sink.test", "one@sink.test", "absent");
	stop_ferryd_cleanly(&fi);
}

/* ---- delete ------------------------------------------------------------------------- */

Test(ferryctl, delete_asks_first_and_deleted_mail_stays_gone_after_a_restart)
{
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_ferryd(&fi);
	send_three(&fi, &s);

	/* No terminal to ask on, no -y: refused, nothing deleted. */
	int rc = run_ferryctl_args(out, err, "-c", fi.config, "delete", s.id[0], NULL);
	cr_expect_eq(rc, 2, "delete without -y and without a terminal: exit %d", rc);
	cr_expect_not_null(strstr(err, "ferryctl: 'delete' asks for confirmation, and its input is "
				       "not a terminal: add -y"),
			   "%s", err);
	ctl_json(&fi, out, err, "queue");
	cr_expect_str_eq(json_get(out, "d['total']['recipients']"), "6");

	/* On a terminal (script(1) gives it one) it asks; no answer is no. */
	char ctl[PATH_MAX], command[2 * PATH_MAX + 64];
	harness_build_path("ferryctl", ctl, sizeof(ctl));
	snprintf(command, sizeof(command), "%s -c %s delete gamma.example", ctl, fi.config);
	rc = run_ferryctl_shell(out, err, NULL, command);
	cr_expect_eq(rc, 1, "a delete not confirmed: exit %d: %s%s", rc, out, err);
	cr_expect_not_null(strstr(out, "delete 1 recipient of gamma.example? [y/N] "), "%s", out);
	cr_expect_not_null(strstr(out, "ferryctl: nothing was deleted"), "%s", out);
	ctl_json(&fi, out, err, "queue");
	cr_expect_str_eq(json_get(out, "d['total']['recipients']"), "6");

	ctl_json(&fi, out, err, "-y", "delete", s.id[0]);
	cr_expect_str_eq(json_get(out, "d['command'], d['by'], d['recipients'], d['inflight']"),
			 "('delete', 'queue_id', 3, 0)");
	/* Said yes to on the terminal. */
	rc = run_ferryctl_shell(out, err, "y", command);
	cr_expect_eq(rc, 0, "a delete confirmed: exit %d: %s%s", rc, out, err);
	cr_expect_not_null(strstr(out, "delete: 1 recipient of gamma.example deleted"), "%s", out);
	ctl_json(&fi, out, err, "delete", "--yes", "gamma.example");
	cr_expect_str_eq(json_get(out, "d['command'], d['by'], d['recipients'], d['inflight']"),
			 "('delete', 'domain', 0, 0)");
	/* The words for people. */
	rc = run_ferryctl_args(out, err, "-c", fi.config, "-y", "delete", "nobody.example", NULL);
	cr_expect_eq(rc, 0);
	cr_expect_str_eq(out, "delete: 0 recipients of nobody.example deleted\n");

	ctl_json(&fi, out, err, "queue");
	cr_expect_str_eq(json_get(out, "{x['domain']: x['recipients'] for x in d['destinations']}"),
			 "{'alpha.example': 1, 'beta.example': 1}");
	ctl_json(&fi, out, err, "list", "alpha.example");
	char want[128];
	snprintf(want, sizeof(want), "[('%s', 'u@alpha.example')]", s.id[2]);
	cr_expect_str_eq(
		json_get(out, "[(r['queue_id'], r['recipient']) for r in d['recipients']]"), want);
	rc = run_ferryctl_args(out, err, "-c", fi.config, "show", s.id[0], NULL);
	cr_expect_eq(rc, 1, "show of a deleted message: exit %d", rc);
	cr_expect_not_null(strstr(err, "in the queue"), "%s", err);
	cr_expect_eq(harness_log_count(&fi, "event=deleted queue_id="), 4);

	/* Journaled: a restart does not bring them back. */
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not restart (log above)");
	wait_admin_socket(&fi);
	ctl_json(&fi, out, err, "queue");
	cr_expect_str_eq(json_get(out, "{x['domain']: x['recipients'] for x in d['destinations']}"),
			 "{'alpha.example': 1, 'beta.example': 1}");
	rc = run_ferryctl_args(out, err, "-c", fi.config, "show", s.id[0], NULL);
	cr_expect_eq(rc, 1, "a deleted message came back after the restart");
	ctl_json(&fi, out, err, "show", s.id[1]);
	cr_expect_str_eq(json_get(out, "[r['state'] for r in d['recipients']]"), "['queued']");
	stop_ferryd_cleanly(&fi);
}

Test(ferryctl, a_recipient_in_flight_is_deleted_when_its_attempt_ends)
{
	/* The next hop takes its time over the data, then says 451. */
	static const char *const slow[] = {"--data-delay", "2", "--data-reply",
					   "451 4.3.0 try again later", NULL};
	struct next_hop hop = {0};
	next_hop_start(&hop, slow);
	char extra[256];
	snprintf(extra, sizeof(extra),
		 "[relay]\nrelay_domains = slow.test\n"
		 "[domain slow.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port);
	struct ferry_instance fi;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_with(&fi, extra);
	static const char *const rcpts[] = {"late@slow.test", NULL};
	char id[32];
	send_message(&fi, rcpts, "deleted in flight", id);
	wait_state(&fi, "slow.test", "late@slow.test", "inflight");

	ctl_json(&fi, out, err, "-y", "delete", id);
	cr_expect_str_eq(json_get(out, "d['recipients'], d['inflight']"), "(0, 1)");
	char want[64];
	snprintf(want, sizeof(want), "event=deleted queue_id=%s", id);
	cr_assert_eq(log_wait(&fi, want, 1, WAIT_MS), 1, "not deleted when its attempt ended");
	wait_state(&fi, "slow.test", "late@slow.test", "absent");
	cr_expect_eq(harness_log_count(&fi, "status=deferred"), 1, "its one attempt");
	cr_expect_eq(harness_log_count(&fi, "event=bounce"), 0, "a deletion made a bounce");
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not restart (log above)");
	wait_admin_socket(&fi);
	cr_expect_str_eq(state_of(&fi, "slow.test", "late@slow.test"), "absent");
	stop_ferryd_cleanly(&fi);
}

/* ---- bounce ------------------------------------------------------------------------- */

Test(ferryctl, bounce_sends_the_sender_a_dsn_but_never_to_the_null_sender)
{
	struct next_hop hop = {0};
	next_hop_start(&hop, NULL);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[relay]\nrelay_domains = far.test\n"
		 "[domain far.test]\nhold = yes\n"
		 "[domain client.example]\ntransport = [127.0.0.1]:%d\n",
		 hop.port);
	struct ferry_instance fi;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_with(&fi, extra);
	static const char *const rcpts[] = {"a@far.test", "b@far.test", NULL};
	static const char *const from_null[] = {"c@far.test", NULL};
	char id[32], bounce_id[32];
	send_message(&fi, rcpts, "bounced by hand", id);
	send_message_from(&fi, "", from_null, "a bounce itself", bounce_id);

	ctl_json(&fi, out, err, "-y", "bounce", "far.test");
	cr_expect_str_eq(json_get(out, "d['command'], d['by'], d['recipients'], d['inflight']"),
			 "('bounce', 'domain', 3, 0)");
	/* One DSN, from <>, to the sender, for both of its recipients. */
	cr_assert_eq(next_hop_wait(&hop, "\"rcpts\": [\"alice@client.example\"]", 1, WAIT_MS), 1,
		     "no DSN reached the sender");
	cr_expect_eq(next_hop_count(&hop, "\"from\": \"\""), 1, "the DSN is not from <>");
	static const char *const fields[] = {
		"Final-Recipient: rfc822; a@far.test",
		"Final-Recipient: rfc822; b@far.test",
		"Action: failed",
		"Status: 5.0.0",
		"bounced by the operator",
		"Subject: bounced by hand",
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		cr_expect_geq(next_hop_count(&hop, fields[i]), 1, "the DSN lacks '%s'", fields[i]);
	char field[64];
	snprintf(field, sizeof(field), "X-Ferry-Queue-ID: %s", id);
	cr_expect_eq(next_hop_count(&hop, field), 1, "the DSN does not name the queue id");
	cr_assert_eq(log_wait(&fi, "event=bounce_skipped", 1, WAIT_MS), 1,
		     "the null sender's recipient was not ended without a DSN");
	wait_state(&fi, "far.test", "a@far.test", "absent");
	/* Nothing left, the DSN delivered too. */
	const char *left = NULL;
	for (int64_t end = harness_now_ms() + WAIT_MS; harness_now_ms() < end;
	     harness_sleep_ms(100)) {
		ctl_json(&fi, out, err, "queue");
		if (strcmp(left = json_get(out, "d['total']['recipients']"), "0") == 0)
			break;
	}
	cr_expect_str_eq(left, "0", "left in the queue: %s", out);
	harness_sleep_ms(500);
	cr_expect_eq(next_hop_count(&hop, "\"event\": \"message\""), 1, "a DSN to <> was sent");
	int rc = run_ferryctl_args(out, err, "-c", fi.config, "show", id, NULL);
	cr_expect_eq(rc, 1, "the bounced message is still there");
	stop_ferryd_cleanly(&fi);
}

/* ---- stats and config ------------------------------------------------------------------ */

Test(ferryctl, stats_count_what_was_sent)
{
	struct ferry_instance fi;
	struct sent s;
	static char out[OUT_SIZE], err[OUT_SIZE];
	start_ferryd(&fi);
	send_three(&fi, &s);

	ctl_json(&fi, out, err, "stats");
	cr_expect_str_eq(json_get(out, "d['messages']['received'], d['messages']['refused']"),
			 "(3, 0)");
	cr_expect_str_eq(json_get(out, "d['queue']['recipients']"),
			 "{'ready': 0, 'deferred': 0, 'held': 6, 'inflight': 0, 'total': 6}");
	/* A message counts once per domain it waits for: 2 + 2 + 1. */
	cr_expect_str_eq(json_get(out, "d['queue']['messages']['held']"), "5");
	cr_expect_str_eq(json_get(out, "d['recipients']['delivered'], "
				       "d['recipients']['delivered_per_second']"),
			 "(0, 0)");
	cr_expect_str_eq(json_get(out, "0.9 < d['interval_seconds'] < 5"), "True");
	cr_expect_str_eq(json_get(out, "d['commit_latency_seconds']['commits'] >= 1 and 0 < "
				       "d['commit_latency_seconds']['p50'] <= "
				       "d['commit_latency_seconds']['p99']"),
			 "True");
	cr_expect_str_eq(json_get(out, "0 <= d['queue']['oldest_message_age_seconds'] < 60"),
			 "True");
	cr_expect_str_eq(json_get(out, "d['connections']['outbound']['total'], "
				       "d['spool']['bytes'] > 0"),
			 "(0, True)");

	int rc = run_ferryctl_args(out, err, "-c", fi.config, "stats", NULL);
	cr_assert_eq(rc, 0, "stats exited %d: %s", rc, err);
	const char *line = find_line_prefix(out, "messages received ");
	double total, rate;
	cr_assert(line != NULL && sscanf(line, "messages received %lf %lf/s", &total, &rate) == 2,
		  "%s", out);
	cr_expect_eq(total, 3);
	cr_expect_not_null(find_line_prefix(out, "held    "), "%s", out);
	cr_expect_not_null(find_line_prefix(out, "commit latency         p50 "), "%s", out);
	rc = run_ferryctl_args(out, err, "--spool", fi.spool, "stats", NULL);
	cr_expect_eq(rc, 2, "stats offline: exit %d", rc);
	stop_ferryd_cleanly(&fi);
}

Test(ferryctl, config_shows_what_ferryd_runs_with)
{
	struct ferry_instance fi;
	static char out[OUT_SIZE], err[OUT_SIZE], want[PATH_MAX + 64];
	start_ferryd(&fi);
	ctl_json(&fi, out, err, "config");
	cr_expect_str_eq(json_get(out, "d['server']['hostname'], d['server']['workers']"),
			 "('relay.test', '2')");
	cr_expect_str_eq(json_get(out, "d['spool']['directory']"), fi.spool);
	cr_expect_str_eq(json_get(out, "d['domain alpha.example']['hold']"), "yes");
	cr_expect_str_eq(json_get(out, "d['relay']['relay_domains']"),
			 "relay.example, alpha.example, beta.example, gamma.example");

	int rc = run_ferryctl_args(out, err, "-c", fi.config, "config", NULL);
	cr_assert_eq(rc, 0, "config exited %d: %s", rc, err);
	snprintf(want, sizeof(want), "\n[spool]\ndirectory = %s\n", fi.spool);
	cr_expect_not_null(strstr(out, want), "%s", out);
	cr_expect_not_null(strstr(out, "\n[domain gamma.example]\n"), "%s", out);
	stop_ferryd_cleanly(&fi);
}
