/*
 * Configuration reload against a running ferryd (net/reload.h): the file
 * is rewritten, then ferryctl reload or SIGHUP. A new relay policy holds
 * for new sessions while a session opened before goes on with its own;
 * a [domain] section's new transport and hold move its queued mail to a
 * next hop (tests/integration/next_hop.h) without a flush; a quota added
 * counts what is queued already; new etrn_networks decide the next ETRN,
 * in a session opened before too; reloads under load (a domain's transport
 * flipped between two next hops while 300 sessions send) drop no session
 * and lose or repeat no message; an open connection, a live destination
 * and an operator's hold across reloads; the log level at once; a broken
 * file and a file that changes a key only a restart can change are
 * refused with the reason, and the running configuration stays.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define START_MS 20000 /* ferryd up and accepting */
#define IO_MS    15000 /* one SMTP reply */
#define STOP_MS  20000 /* SIGTERM to exit */
#define CTL_MS   30000 /* one ferryctl run */
#define WAIT_MS  30000 /* a reload logged, mail at the next hop */
#define OUT_SIZE 65536

#include "tests/integration/checks.h"
#include "tests/integration/ferryctl_run.h"
#include "tests/integration/next_hop.h"

static void teardown(void)
{
	harness_cleanup_all();
}

TestSuite(reload, .fini = teardown, .timeout = 240);

/* Loopback is not trusted here: relaying is by relay_domains alone. */
#define UNTRUSTED "[relay]\ntrusted_networks = 192.0.2.0/24\n"

static void start_with(struct ferry_instance *fi, const char *extra)
{
	cr_assert_eq(harness_setup(fi, extra), 0, "cannot set up a temporary directory");
	cr_assert_eq(harness_start(fi, START_MS), 0, "ferryd did not start (see its log above)");
	wait_admin_socket(fi);
}

/* The config file again, with the test's part `extra` in place of the
 * one it was started with (`before`). */
static void rewrite_config(const struct ferry_instance *fi, const char *before, const char *extra)
{
	static char text[OUT_SIZE], next[OUT_SIZE];
	FILE *f = fopen(fi->config, "r");
	cr_assert_not_null(f);
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	char *at = strstr(text, before);
	cr_assert_not_null(at, "the config does not hold the test's part");
	snprintf(next, sizeof(next), "%.*s%s%s", (int)(at - text), text, extra,
		 at + strlen(before));
	cr_assert_eq(harness_write_file(fi->config, next), 0);
}

/* ferryctl -c CONFIG --json reload: exits 0, and generation `want` runs. */
static void reload_ok(const struct ferry_instance *fi, int want)
{
	char out[OUT_SIZE], err[OUT_SIZE], expected[32];
	int rc = run_ferryctl_args(out, err, "-c", fi->config, "--json", "reload", NULL);
	cr_assert_eq(rc, 0, "ferryctl reload exited %d: %s%s", rc, err, out);
	snprintf(expected, sizeof(expected), "%d", want);
	cr_assert_str_eq(json_get(out, "d['generation']"), expected, "%s", out);
	cr_assert_str_eq(json_get(out, "d['switched']"), "True", "%s", out);
}

/* A config part relaying site.example to a next hop at 127.0.0.1:port,
 * with more keys for its [domain] section. */
static const char *site_config(char *out, size_t size, int port, const char *more)
{
	snprintf(out, size,
		 "[relay]\nrelay_domains = site.example\n"
		 "[domain site.example]\ntransport = [127.0.0.1]:%d\n%s",
		 port, more);
	return out;
}

/* One message to rcpt in a new session, accepted. */
static void send_to(const struct ferry_instance *fi, const char *rcpt)
{
	const char *rcpts[] = {rcpt, NULL};
	char id[32];
	send_message_from(fi, "sender@client.example", rcpts, "reload", id);
}

Test(reload, a_new_relay_policy_holds_for_new_sessions_and_an_open_session_keeps_its_own)
{
	static const char before[] = UNTRUSTED;
	static const char after[] = UNTRUSTED "relay_domains = new.example\n"
					      "[domain new.example]\nhold = yes\n";
	struct ferry_instance fi;
	start_with(&fi, before);
	struct smtp_reply r;
	cr_assert_eq(try_recipient(&fi, "user@new.example", &r), 554, "before: %s", r.text);

	/* Opened before the reload, used after it. */
	struct smtp_client old;
	connect_greeted(&old, &fi);
	expect_command(&old, "EHLO client.example", 250, NULL);

	rewrite_config(&fi, before, after);
	reload_ok(&fi, 2);
	cr_assert_eq(log_wait(&fi, "event=reloaded trigger=ferryctl generation=2", 1, WAIT_MS), 1);

	cr_assert_eq(try_recipient(&fi, "user@new.example", &r), 250, "after: %s", r.text);
	send_to(&fi, "user@new.example");

	/* The open session was not dropped, and runs with the policy it
	 * started with: new.example is still not relayed for it. */
	expect_command(&old, "MAIL FROM:<sender@client.example>", 250, NULL);
	expect_command(&old, "RCPT TO:<user@new.example>", 554, "5.7.1");
	expect_command(&old, "RCPT TO:<user@relay.example>", 250, NULL);
	expect_command(&old, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&old, "Subject: across a reload\r\n\r\nbody\r\n.\r\n"),
		     0);
	cr_assert_eq(smtp_client_read_reply(&old, &r), 250, "end of DATA: %s", r.text);
	expect_command(&old, "QUIT", 221, NULL);
	smtp_client_close(&old);

	/* ferryctl config shows what runs now. */
	char out[OUT_SIZE], err[OUT_SIZE];
	ctl_ok(&fi, out, err, "config", NULL);
	cr_assert_not_null(strstr(out, "[domain new.example]"), "%s", out);
	stop_ferryd_cleanly(&fi);
}

/* The value of an unlabelled family in GET /metrics at 127.0.0.1:port. */
static const char *metric_value(int port, const char *family)
{
	static char out[OUT_SIZE], err[4096], url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
	char *argv[] = {"python3",
			"-c",
			"import sys, urllib.request\n"
			"text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()\n"
			"print([l.split()[1] for l in text.splitlines() if l.split()[:1] == "
			"[sys.argv[2]]][0])",
			url,
			(char *)family,
			NULL};
	int rc = harness_run(argv, out, sizeof(out), err, sizeof(err), CTL_MS);
	cr_assert_eq(rc, 0, "cannot read %s from %s: %s", family, url, err);
	out[strcspn(out, "\n")] = '\0';
	return out;
}

Test(reload, a_broken_file_is_refused_with_its_reason_and_ferryd_keeps_running_the_old_one)
{
	char before[256], after[256];
	int metrics = harness_free_port();
	snprintf(before, sizeof(before), UNTRUSTED "[metrics]\naddress = 127.0.0.1:%d\n", metrics);
	snprintf(after, sizeof(after),
		 UNTRUSTED "relay_domains = new.example\n[metrics]\naddress = 127.0.0.1:%d\n"
			   "[limits]\nmax_recipients = lots\n",
		 metrics);
	struct ferry_instance fi;
	start_with(&fi, before);
	rewrite_config(&fi, before, after);

	/* SIGHUP: refused, and the log says why, by file, line and key. */
	cr_assert_eq(kill(fi.pid, SIGHUP), 0);
	cr_assert_eq(log_wait(&fi, "event=reload_refused trigger=SIGHUP", 1, WAIT_MS), 1);
	const char *line = strstr(harness_log(&fi), "event=reload_refused");
	cr_assert_not_null(strstr(line, "key 'max_recipients'"), "%s", line);
	cr_assert_str_eq(metric_value(metrics, "ferry_config_last_reload_successful"), "0");
	cr_assert_str_eq(metric_value(metrics, "ferry_config_generation"), "1");

	/* ferryctl -c FILE, as an operator runs it: the file names the spool
	 * (and so the socket) however bad the rest is; ferryd refuses it,
	 * exit 1, the reason on stderr. */
	char out[OUT_SIZE], err[OUT_SIZE];
	int rc = run_ferryctl_args(out, err, "-c", fi.config, "reload", NULL);
	cr_assert_eq(rc, 1, "ferryctl reload exited %d: %s%s", rc, err, out);
	cr_assert_not_null(strstr(err, "key 'max_recipients'"), "%s", err);
	cr_assert_not_null(strstr(err, "generation 1 keeps running"), "%s", err);
	cr_assert_eq(log_wait(&fi, "event=reload_refused trigger=ferryctl", 1, WAIT_MS), 1);

	/* Still serving, with the old policy. */
	struct smtp_reply r;
	cr_assert_eq(try_recipient(&fi, "user@new.example", &r), 554, "%s", r.text);
	cr_assert_eq(try_recipient(&fi, "user@relay.example", &r), 250, "%s", r.text);
	cr_assert_eq(harness_log_count(&fi, "event=reloaded"), 0);

	/* Mended, the same file reloads. */
	rewrite_config(&fi, "max_recipients = lots\n", "max_recipients = 50\n");
	cr_assert_eq(kill(fi.pid, SIGHUP), 0);
	cr_assert_eq(log_wait(&fi, "event=reloaded trigger=SIGHUP generation=2", 1, WAIT_MS), 1);
	cr_assert_eq(try_recipient(&fi, "user@new.example", &r), 250, "%s", r.text);
	cr_assert_str_eq(metric_value(metrics, "ferry_config_last_reload_successful"), "1");
	cr_assert_str_eq(metric_value(metrics, "ferry_config_generation"), "2");
	stop_ferryd_cleanly(&fi);
}

Test(reload, a_file_that_changes_restart_only_keys_is_refused_naming_them)
{
	static const char before[] = "[limits]\nmax_recipients = 100\n";
	struct ferry_instance fi;
	start_with(&fi, before);
	char listen[64], other[64];
	snprintf(listen, sizeof(listen), "listen = 127.0.0.1:%d\n", fi.port);
	snprintf(other, sizeof(other), "listen = 127.0.0.1:%d\n", harness_free_port());
	rewrite_config(&fi, listen, other);
	rewrite_config(&fi, "workers = 2\n", "workers = 1\n");
	rewrite_config(&fi, before, "[limits]\nmax_recipients = 1\n");

	char out[OUT_SIZE], err[OUT_SIZE];
	int rc = run_ferryctl_args(out, err, "-c", fi.config, "reload", NULL);
	cr_assert_eq(rc, 1, "ferryctl reload exited %d: %s%s", rc, err, out);
	cr_assert_not_null(strstr(err, "only a restart of ferryd can change [server] workers, "
				       "[server] listen;"),
			   "%s", err);
	/* Nothing of the file was taken: not even the key that could be. */
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	expect_command(&c, "MAIL FROM:<sender@client.example>", 250, NULL);
	expect_command(&c, "RCPT TO:<a@relay.example>", 250, NULL);
	expect_command(&c, "RCPT TO:<b@relay.example>", 250, NULL);
	smtp_client_close(&c);
	cr_assert_eq(log_wait(&fi, "event=reload_refused trigger=ferryctl", 1, WAIT_MS), 1);
	stop_ferryd_cleanly(&fi);
}

Test(reload, a_new_transport_and_the_end_of_a_hold_send_queued_mail_to_the_new_next_hop)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	int dead_fd;
	int dead = next_hop_closed_port(&dead_fd);
	char before[512], after[512];
	site_config(before, sizeof(before), dead, "hold = yes\n");
	site_config(after, sizeof(after), hop.port, "");
	struct ferry_instance fi;
	start_with(&fi, before);
	send_to(&fi, "one@site.example");
	send_to(&fi, "two@site.example");
	harness_sleep_ms(300);
	cr_assert_eq(next_hop_delivered(&hop, "one@site.example"), 0, "held mail went out");

	rewrite_config(&fi, before, after);
	reload_ok(&fi, 2);
	/* No flush: the hold ended with the reload, and the mail goes the
	 * new way. */
	cr_assert_eq(next_hop_wait_delivered(&hop, "one@site.example", 1, WAIT_MS), 1);
	cr_assert_eq(next_hop_wait_delivered(&hop, "two@site.example", 1, WAIT_MS), 1);
	stop_ferryd_cleanly(&fi);
	close(dead_fd);
}

Test(reload, a_quota_added_by_a_reload_counts_the_mail_queued_before_it)
{
	static const char before[] = "[relay]\nrelay_domains = q.example\n"
				     "[domain q.example]\nhold = yes\n";
	static const char full[] = "[relay]\nrelay_domains = q.example\n"
				   "[domain q.example]\nhold = yes\nmax_messages = 3\n";
	static const char room[] = "[relay]\nrelay_domains = q.example\n"
				   "[domain q.example]\nhold = yes\nmax_messages = 4\n";
	struct ferry_instance fi;
	start_with(&fi, before);
	send_to(&fi, "a@q.example");
	send_to(&fi, "b@q.example");
	send_to(&fi, "c@q.example");

	rewrite_config(&fi, before, full);
	reload_ok(&fi, 2);
	struct smtp_reply r;
	cr_assert_eq(try_recipient(&fi, "d@q.example", &r), 452, "%s", r.text);
	cr_assert(reply_is(&r, 452, "4.2.2"), "%s", r.text);

	rewrite_config(&fi, full, room);
	reload_ok(&fi, 3);
	cr_assert_eq(try_recipient(&fi, "d@q.example", &r), 250, "%s", r.text);
	stop_ferryd_cleanly(&fi);
}

/* An ETRN session, greeted. */
static void etrn_session(struct smtp_client *c, const struct ferry_instance *fi)
{
	connect_greeted(c, fi);
	expect_command(c, "EHLO site.example", 250, NULL);
}

Test(reload, etrn_networks_changed_by_a_reload_decide_the_next_etrn_in_every_session)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	char before[512], after[512];
	site_config(before, sizeof(before), hop.port, "hold = yes\netrn_networks = 192.0.2.0/24\n");
	site_config(after, sizeof(after), hop.port, "hold = yes\netrn_networks = 127.0.0.0/8\n");
	struct ferry_instance fi;
	start_with(&fi, before);
	send_to(&fi, "user@site.example");

	struct smtp_client c;
	struct smtp_reply r;
	etrn_session(&c, &fi);
	cr_assert_eq(smtp_client_command(&c, "ETRN site.example", &r), 459, "%s", r.text);

	rewrite_config(&fi, before, after);
	reload_ok(&fi, 2);
	/* The session opened before the reload: ETRN is answered by the
	 * policy running now. */
	cr_assert_eq(smtp_client_command(&c, "ETRN site.example", &r), 253, "%s", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	cr_assert_eq(next_hop_wait_delivered(&hop, "user@site.example", 1, WAIT_MS), 1);
	stop_ferryd_cleanly(&fi);
}

/* Sessions at once while reloads flip a domain's transport between two
 * next hops. */
#define LOAD_SESSIONS 300
#define LOAD_RELOADS  8

struct load {
	int port;
	unsigned queued;
	char why[1024];
	char ids[LOAD_SESSIONS][32];
};

static void *load_run(void *arg)
{
	struct load *l = arg;
	l->queued =
		harness_many_sessions(l->port, LOAD_SESSIONS, "load@client.example",
				      "inbox@site.example", l->ids, 120000, l->why, sizeof(l->why));
	return NULL;
}

Test(reload, reloads_under_load_drop_no_session_and_lose_no_message)
{
	long limit = harness_raise_nofile(LOAD_SESSIONS + 256);
	cr_assert_geq(limit, LOAD_SESSIONS + 64, "RLIMIT_NOFILE is only %ld", limit);
	struct next_hop a, b;
	next_hop_start(&a, NULL);
	next_hop_start(&b, NULL);
	/* The [limits] and [log] keys go after the section's own. */
	static const char more[] = "[limits]\nmax_connections_per_client = 5000\n"
				   "[log]\nlevel = warn\n";
	char to_a[512], to_b[512];
	site_config(to_a, sizeof(to_a), a.port, more);
	site_config(to_b, sizeof(to_b), b.port, more);
	struct ferry_instance fi;
	start_with(&fi, to_a);
	static struct load l;
	memset(&l, 0, sizeof(l));
	l.port = fi.port;
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, load_run, &l), 0);
	for (int i = 0; i < LOAD_RELOADS; i++) {
		rewrite_config(&fi, i % 2 == 0 ? to_a : to_b, i % 2 == 0 ? to_b : to_a);
		reload_ok(&fi, i + 2);
	}
	pthread_join(t, NULL);
	cr_assert_eq(l.queued, LOAD_SESSIONS, "only %u of %d sessions got their message queued: %s",
		     l.queued, LOAD_SESSIONS, l.why);

	/* Every message reached one of the two next hops, once. */
	int arrived = 0;
	for (int64_t end = harness_now_ms() + 60000; harness_now_ms() < end;) {
		arrived = next_hop_delivered(&a, "inbox@site.example") +
			  next_hop_delivered(&b, "inbox@site.example");
		if (arrived >= LOAD_SESSIONS)
			break;
		harness_sleep_ms(100);
	}
	harness_sleep_ms(300); /* a duplicate would come now */
	arrived = next_hop_delivered(&a, "inbox@site.example") +
		  next_hop_delivered(&b, "inbox@site.example");
	cr_assert_eq(arrived, LOAD_SESSIONS, "%d messages arrived at the next hops, %d were sent",
		     arrived, LOAD_SESSIONS);
	stop_ferryd_cleanly(&fi);
}

Test(reload, a_connection_opened_before_a_reload_takes_more_recipients_per_transaction_safely)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	char before[512], after[512];
	/* The connection stays open between the two messages. */
	site_config(before, sizeof(before), hop.port,
		    "[delivery]\nrecipients_per_transaction = 1\nconnection_reuse_time = 60s\n");
	site_config(after, sizeof(after), hop.port,
		    "[delivery]\nrecipients_per_transaction = 50\nconnection_reuse_time = 60s\n");
	struct ferry_instance fi;
	start_with(&fi, before);
	send_to(&fi, "first@site.example");
	cr_assert_eq(next_hop_wait_delivered(&hop, "first@site.example", 1, WAIT_MS), 1);
	rewrite_config(&fi, before, after);
	reload_ok(&fi, 2);
	const char *rcpts[] = {"r1@site.example",
			       "r2@site.example",
			       "r3@site.example",
			       "r4@site.example",
			       "r5@site.example",
			       "r6@site.example",
			       NULL};
	char id[32];
	send_message_from(&fi, "sender@client.example", rcpts, "six", id);
	for (const char *const *r = rcpts; *r != NULL; r++)
		cr_assert_eq(next_hop_wait_delivered(&hop, *r, 1, WAIT_MS), 1, "%s", *r);
	stop_ferryd_cleanly(&fi);
}

Test(reload, a_live_destination_moves_to_its_new_transport_and_follows_a_hold_added_later)
{
	struct next_hop one, two;
	next_hop_start(&one, NULL);
	next_hop_start(&two, NULL);
	char a[512], b[512], held[512];
	static const char reuse[] = "[delivery]\nconnection_reuse_time = 60s\n";
	site_config(a, sizeof(a), one.port, reuse);
	site_config(b, sizeof(b), two.port, reuse);
	site_config(held, sizeof(held), two.port,
		    "hold = yes\n[delivery]\nconnection_reuse_time = 60s\n");
	struct ferry_instance fi;
	start_with(&fi, a);
	/* A route found, and a connection to `one` idle for reuse. */
	send_to(&fi, "x1@site.example");
	cr_assert_eq(next_hop_wait_delivered(&one, "x1@site.example", 1, WAIT_MS), 1);

	rewrite_config(&fi, a, b);
	reload_ok(&fi, 2);
	send_to(&fi, "x2@site.example");
	cr_assert_eq(next_hop_wait_delivered(&two, "x2@site.example", 1, WAIT_MS), 1);
	cr_assert_eq(next_hop_delivered(&one, "x2@site.example"), 0, "the old next hop got it");

	rewrite_config(&fi, b, held);
	reload_ok(&fi, 3);
	send_to(&fi, "x3@site.example");
	wait_state(&fi, "site.example", "x3@site.example", "held");

	rewrite_config(&fi, held, b);
	reload_ok(&fi, 4);
	cr_assert_eq(next_hop_wait_delivered(&two, "x3@site.example", 1, WAIT_MS), 1);
	stop_ferryd_cleanly(&fi);
}

Test(reload, an_operators_hold_stands_while_reloads_add_and_remove_hold_yes)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	char open[512], held[512];
	site_config(open, sizeof(open), hop.port, "");
	site_config(held, sizeof(held), hop.port, "hold = yes\n");
	struct ferry_instance fi;
	start_with(&fi, open);
	char out[OUT_SIZE], err[OUT_SIZE];
	ctl_ok(&fi, out, err, "hold", "site.example");
	send_to(&fi, "y1@site.example");
	wait_state(&fi, "site.example", "y1@site.example", "held");

	rewrite_config(&fi, open, held);
	reload_ok(&fi, 2);
	rewrite_config(&fi, held, open);
	reload_ok(&fi, 3);
	cr_assert_str_eq(state_of(&fi, "site.example", "y1@site.example"), "held",
			 "the operator's hold was lost across two reloads");

	/* And the operator's release stands against a file's hold = yes. */
	ctl_ok(&fi, out, err, "release", "site.example");
	cr_assert_eq(next_hop_wait_delivered(&hop, "y1@site.example", 1, WAIT_MS), 1);
	rewrite_config(&fi, open, held);
	reload_ok(&fi, 4);
	send_to(&fi, "y2@site.example");
	cr_assert_eq(next_hop_wait_delivered(&hop, "y2@site.example", 1, WAIT_MS), 1);
	stop_ferryd_cleanly(&fi);
}

Test(reload, the_log_level_follows_the_file_at_once)
{
	static const char quiet[] = "[log]\nlevel = warn\n";
	static const char chatty[] = "[log]\nlevel = info\n";
	struct ferry_instance fi;
	start_with(&fi, quiet);
	struct smtp_reply r;
	cr_assert_eq(try_recipient(&fi, "user@relay.example", &r), 250, "%s", r.text);
	cr_assert_eq(harness_log_count(&fi, "event=connect "), 0, "info lines at level warn");

	rewrite_config(&fi, quiet, chatty);
	reload_ok(&fi, 2);
	cr_assert_eq(try_recipient(&fi, "user@relay.example", &r), 250, "%s", r.text);
	cr_assert_eq(log_wait(&fi, "event=connect ", 1, WAIT_MS), 1);
	stop_ferryd_cleanly(&fi);
}
