/*
 * End-to-end tests of delivery: a real ferryd (from $FERRY_BUILD_DIR)
 * takes mail over SMTP and passes it on to next hops on loopback: a
 * scripted server (tests/integration/fake_smtp.py) that records what it
 * received and answers as each test needs, or a port where nothing
 * listens. What a user would notice is checked: what arrives at the next
 * hop and how often, the outcome in ferryd's log, and what is left in the
 * spool.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>

#define START_MS 20000 /* ferryd up and accepting */
#define IO_MS    15000 /* one SMTP reply */
#define STOP_MS  30000 /* SIGTERM to exit */
#define WAIT_MS  30000 /* mail to arrive at the next hop */

#include "tests/integration/checks.h"
#include "tests/integration/next_hop.h"

static void suite_fini(void)
{
	harness_cleanup_all();
}

TestSuite(delivery, .fini = suite_fini, .timeout = 180);

/* ---- ferryd ----------------------------------------------------------------------------- */

static void start_ferryd(struct ferry_instance *fi, const char *extra)
{
	cr_assert_eq(harness_setup(fi, extra), 0, "cannot set up a temporary directory");
	cr_assert_eq(harness_start(fi, START_MS), 0, "ferryd did not start (see its log above)");
}

/* One message from alice to `rcpts` (NULL-terminated) with `body` (lines
 * ending in CRLF, dot-stuffed as sent); its queue id to id. */
static void send_message_from(const struct ferry_instance *fi, const char *from,
			      const char *const *rcpts, const char *body, char id[32])
{
	struct smtp_client c;
	struct smtp_reply r;
	char line[512];
	connect_greeted(&c, fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	snprintf(line, sizeof(line), "MAIL FROM:<%s>", from);
	expect_command(&c, line, 250, NULL);
	for (const char *const *p = rcpts; *p != NULL; p++) {
		snprintf(line, sizeof(line), "RCPT TO:<%s>", *p);
		expect_command(&c, line, 250, NULL);
	}
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&c, body), 0);
	cr_assert_eq(smtp_client_send_str(&c, ".\r\n"), 0);
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "end of DATA: %s", r.text);
	if (id != NULL)
		cr_assert(smtp_reply_queue_id(&r, id, 32), "no queue id in '%s'", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
}

static void send_message(const struct ferry_instance *fi, const char *const *rcpts,
			 const char *body, char id[32])
{
	send_message_from(fi, "alice@client.example", rcpts, body, id);
}

static const char body_text[] = "From: alice@client.example\r\n"
				"Subject: to the next hop\r\n"
				"\r\n"
				"First line.\r\n"
				"..a line that starts with a dot\r\n"
				"Last line.\r\n";

/* ---- tests ---------------------------------------------------------------------------------- */

/*
 * Mail for a domain with a transport arrives at its next hop, every
 * recipient of a message in one transaction, bodies exact (the leading
 * dot stuffed again on the way out), over connections that are reused:
 * 20 messages, sent one after another, need far fewer connections.
 */
Test(delivery, arrives_whole_in_one_transaction_per_message_over_reused_connections)
{
	struct next_hop hop = {0};
	next_hop_start(&hop, NULL);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[delivery]\nconnection_reuse_time = 10s\n"
		 "[domain sink.test]\ntransport = [127.0.0.1]:%d\nconcurrency = 2\n",
		 hop.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const rcpts[] = {"one@sink.test", "two@SINK.test", NULL};
	for (int i = 0; i < 20; i++)
		send_message(&fi, rcpts, body_text, NULL);
	cr_assert_eq(next_hop_wait(&hop, "\"event\": \"message\"", 20, WAIT_MS), 20,
		     "not every message arrived");
	cr_assert_eq(next_hop_count(&hop, "\"rcpts\": [\"one@sink.test\", \"two@SINK.test\"]"), 20,
		     "a message arrived without both recipients in its transaction");
	cr_assert_eq(next_hop_count(&hop, "..a line that starts with a dot"), 0,
		     "the dot-stuffed line arrived stuffed twice or not undone");
	cr_assert_eq(next_hop_count(&hop, "\\r\\n.a line that starts with a dot\\r\\n"), 20,
		     "the body arrived changed");
	cr_assert_eq(next_hop_count(&hop, "\"from\": \"alice@client.example\""), 20);
	int connections = next_hop_count(&hop, "\"event\": \"connect\"");
	cr_assert_leq(connections, 4, "%d connections for 20 messages: none reused", connections);
	cr_assert_eq(log_wait(&fi, "status=sent code=250", 40, WAIT_MS), 40);
	cr_assert_gt(harness_log_count(&fi, "relay=127.0.0.1[127.0.0.1]:"), 0,
		     "the log does not name the next hop as host[address]:port");
	stop_ferryd_cleanly(&fi);
}

/*
 * A recipient refused for good (550) fails alone; a recipient refused
 * for now (451, once) is deferred and delivered at its retry, the others
 * of the message at once. Each outcome is logged.
 */
Test(delivery, permanent_and_temporary_refusals_per_recipient)
{
	static const char *const options[] = {"--rcpt", "bad@odd.test=550 5.1.1 no such user",
					      "--rcpt-once", "late@odd.test=451 4.3.0 try later",
					      NULL};
	struct next_hop hop = {0};
	next_hop_start(&hop, options);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[delivery]\nretry_initial = 1s\n"
		 "[domain odd.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const rcpts[] = {"good@odd.test", "bad@odd.test", "late@odd.test", NULL};
	char id[32];
	send_message(&fi, rcpts, body_text, id);
	cr_assert_eq(next_hop_wait(&hop, "\"rcpts\": [\"late@odd.test\"]", 1, WAIT_MS), 1,
		     "the deferred recipient was not delivered at its retry");
	cr_assert_eq(next_hop_count(&hop, "\"rcpts\": [\"good@odd.test\"]"), 1);
	cr_assert_eq(next_hop_count(&hop, "\"event\": \"message\""), 2,
		     "a recipient arrived twice, or the refused one arrived");
	cr_assert_eq(log_wait(&fi, "rcpt=bad@odd.test", 1, WAIT_MS), 1);
	cr_assert_eq(harness_log_count(&fi, "rcpt=bad@odd.test relay=127.0.0.1[127.0.0.1]"), 1);
	cr_assert_eq(
		harness_log_count(&fi, "status=bounced code=550 reply=\"550 5.1.1 no such user\""),
		1);
	cr_assert_eq(harness_log_count(&fi, "rcpt=late@odd.test"), 2);
	cr_assert_eq(
		harness_log_count(&fi, "status=deferred code=451 reply=\"451 4.3.0 try later\""),
		1);
	cr_assert_eq(log_wait(&fi, "status=sent", 2, WAIT_MS), 2);
	char done[64];
	snprintf(done, sizeof(done), "event=message_done queue_id=%s", id);
	cr_assert_eq(log_wait(&fi, done, 1, WAIT_MS), 1,
		     "the message did not end with its last recipient");
	stop_ferryd_cleanly(&fi);
}

/*
 * A dead destination (nothing listens) is backed off: its mail is
 * deferred, not tried again and again, while a live destination's mail
 * keeps flowing.
 */
Test(delivery, dead_destination_backed_off_while_a_live_one_flows)
{
	struct next_hop hop = {0};
	next_hop_start(&hop, NULL);
	int dead_fd;
	int dead = next_hop_closed_port(&dead_fd);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[delivery]\nretry_initial = 1s\nretry_max = 2s\ndestination_failures = 2\n"
		 "destination_backoff = 1h\n"
		 "[domain live.test]\ntransport = [127.0.0.1]:%d\n"
		 "[domain dead.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port, dead);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const both[] = {"d@dead.test", "l@live.test", NULL};
	static const char *const live[] = {"l@live.test", NULL};
	send_message(&fi, both, body_text, NULL);
	cr_assert_eq(log_wait(&fi, "event=destination_down domain=dead.test", 1, WAIT_MS), 1,
		     "the dead destination was never marked down");
	for (int i = 0; i < 5; i++)
		send_message(&fi, live, body_text, NULL);
	cr_assert_eq(next_hop_wait(&hop, "\"event\": \"message\"", 6, WAIT_MS), 6,
		     "the live destination's mail stalled behind the dead one");
	int tries = harness_log_count(&fi, "event=connect_failed domain=dead.test");
	harness_sleep_ms(3000);
	cr_assert_eq(harness_log_count(&fi, "event=connect_failed domain=dead.test"), tries,
		     "a destination marked down for an hour was tried again");
	cr_assert_eq(tries, 2, "%d connection attempts before the mark", tries);
	cr_assert_geq(harness_log_count(&fi, "rcpt=d@dead.test relay="), 2);
	cr_assert_eq(harness_log_count(&fi, "rcpt=d@dead.test relay=none delay"),
		     harness_log_count(&fi, "rcpt=d@dead.test"), "d@dead.test was delivered?");
	stop_ferryd_cleanly(&fi);
	close(dead_fd);
}

/*
 * Past its domain's queue lifetime a recipient that keeps failing for
 * now fails for good.
 */
Test(delivery, queue_lifetime_expires_a_recipient)
{
	int dead_fd;
	int dead = next_hop_closed_port(&dead_fd);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[delivery]\nretry_initial = 1s\nretry_max = 1s\n"
		 "[domain gone.test]\ntransport = [127.0.0.1]:%d\nqueue_lifetime = 3s\n",
		 dead);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const rcpts[] = {"x@gone.test", NULL};
	char id[32];
	send_message(&fi, rcpts, body_text, id);
	cr_assert_eq(log_wait(&fi, "rcpt=x@gone.test relay=none", 1, WAIT_MS), 1);
	cr_assert_eq(log_wait(&fi, "status=expired", 1, WAIT_MS), 1, "the recipient never expired");
	char done[64];
	snprintf(done, sizeof(done), "event=message_done queue_id=%s", id);
	cr_assert_eq(log_wait(&fi, done, 1, WAIT_MS), 1, "the expired message did not end");
	int attempts = harness_log_count(&fi, "rcpt=x@gone.test");
	harness_sleep_ms(2500);
	cr_assert_eq(harness_log_count(&fi, "rcpt=x@gone.test"), attempts,
		     "an expired recipient was tried again");
	stop_ferryd_cleanly(&fi);
	close(dead_fd);
}

/*
 * A held domain's mail is kept: no connection is made for it.
 */
Test(delivery, held_domain_is_not_delivered)
{
	struct next_hop hop = {0};
	next_hop_start(&hop, NULL);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[domain held.test]\ntransport = [127.0.0.1]:%d\nhold = yes\n"
		 "[domain live.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port, hop.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const held[] = {"h@held.test", NULL};
	static const char *const live[] = {"l@live.test", NULL};
	send_message(&fi, held, body_text, NULL);
	send_message(&fi, live, body_text, NULL);
	cr_assert_eq(next_hop_wait(&hop, "\"event\": \"message\"", 1, WAIT_MS), 1);
	harness_sleep_ms(1000);
	cr_assert_eq(next_hop_count(&hop, "h@held.test"), 0, "held mail was delivered");
	cr_assert_eq(harness_log_count(&fi, "rcpt=h@held.test"), 0, "held mail was attempted");
	stop_ferryd_cleanly(&fi);
}

/*
 * A message larger than the next hop's SIZE fails at once, without
 * uploading it; a next hop without EHLO is spoken to with HELO.
 */
Test(delivery, over_the_next_hops_size_fails_at_once_and_helo_fallback)
{
	static const char *const small[] = {"--size", "200", NULL};
	static const char *const old[] = {"--no-ehlo", NULL};
	struct next_hop tiny = {0}, helo = {0};
	next_hop_start(&tiny, small);
	next_hop_start(&helo, old);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[domain tiny.test]\ntransport = [127.0.0.1]:%d\n"
		 "[domain old.test]\ntransport = [127.0.0.1]:%d\n",
		 tiny.port, helo.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	char big[2048];
	snprintf(big, sizeof(big), "Subject: big\r\n\r\n");
	for (int i = 0; i < 20; i++)
		strcat(big, "0123456789012345678901234567890123456789012345678\r\n");
	static const char *const to_tiny[] = {"t@tiny.test", NULL};
	static const char *const to_old[] = {"o@old.test", NULL};
	send_message(&fi, to_tiny, big, NULL);
	send_message(&fi, to_old, body_text, NULL);
	cr_assert_eq(log_wait(&fi, "rcpt=t@tiny.test", 1, WAIT_MS), 1);
	cr_assert_eq(harness_log_count(&fi, "status=bounced code=552 reply=\"552 5.3.4"), 1,
		     "the oversized message was not failed with 552 5.3.4");
	cr_assert_eq(next_hop_count(&tiny, "\"event\": \"message\""), 0, "it was uploaded");
	cr_assert_eq(next_hop_wait(&helo, "\"event\": \"message\"", 1, WAIT_MS), 1,
		     "nothing arrived at the next hop without EHLO");
	stop_ferryd_cleanly(&fi);
}

/*
 * Postfix's smtp-sink, a real MTA's receiving end, takes ferry's
 * deliveries: every message arrives once, with its envelope, ferry's
 * Received: field and the body as sent.
 */
Test(delivery, postfix_smtp_sink_receives_every_message)
{
	char dir[] = "/tmp/ferry-postfix-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(chmod(dir, 01777), 0); /* smtp-sink writes as nobody */
	int fd;
	int port = next_hop_closed_port(&fd);
	close(fd);
	char listen[32], dump[PATH_MAX + 8], out[PATH_MAX + 8];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(dump, sizeof(dump), "%s/msg", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	char *argv[] = {"/usr/sbin/smtp-sink", "-u", "nobody", "-d", dump, listen, "64", NULL};
	cr_assert_gt(harness_spawn(argv, out), 0, "cannot start Postfix's smtp-sink");
	char extra[256];
	snprintf(extra, sizeof(extra), "[domain postfix.test]\ntransport = [127.0.0.1]:%d\n", port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	enum { N = 10 };
	static const char *const rcpts[] = {"p@postfix.test", "q@postfix.test", NULL};
	char ids[N][32];
	for (int i = 0; i < N; i++)
		send_message(&fi, rcpts, body_text, ids[i]);
	cr_assert_eq(log_wait(&fi, "status=sent code=250", 2 * N, WAIT_MS), 2 * N,
		     "smtp-sink did not take every recipient");
	char cmd[PATH_MAX + 64];
	snprintf(cmd, sizeof(cmd), "cat %s/msg* 2>/dev/null", dir);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	static char all[1 << 20];
	size_t len = fread(all, 1, sizeof(all) - 1, p);
	all[len] = '\0';
	pclose(p);
	int files = 0, rcpt_args = 0, bodies = 0, received = 0;
	for (const char *at = all; (at = strstr(at, "X-Mail-Args: <alice@client.example>")); at++)
		files++;
	for (const char *at = all;
	     (at = strstr(at, "X-Rcpt-Args: <p@postfix.test>\nX-Rcpt-Args: <q@postfix.test>"));
	     at++)
		rcpt_args++;
	/* smtp-sink stores lines with LF alone. */
	for (const char *at = all;
	     (at = strstr(at, "First line.\n.a line that starts with a dot\nLast line.")); at++)
		bodies++;
	for (int i = 0; i < N; i++) {
		char want[96];
		snprintf(want, sizeof(want), "by relay.test (ferry) with ESMTP id %s", ids[i]);
		received += strstr(all, want) != NULL;
	}
	cr_assert_eq(files, N, "%d transactions stored by smtp-sink", files);
	cr_assert_eq(rcpt_args, N, "a transaction lacks a recipient");
	cr_assert_eq(bodies, N, "a body arrived changed");
	cr_assert_eq(received, N, "ferry's Received: field is missing");
	stop_ferryd_cleanly(&fi);
}

/*
 * Recipients refused for good come back to the sender as one delivery
 * status notification (RFC 3464) per message, from the null sender, with
 * the fields a postmaster reads; the rest of the message is delivered.
 * A message from the null sender that fails gets no DSN.
 */
Test(delivery, failed_recipients_bounce_as_one_dsn_and_bounces_do_not_bounce)
{
	static const char *const options[] = {"--rcpt", "bad@odd.test=550 5.1.1 no such user",
					      "--rcpt", "worse@odd.test=553 5.1.3 bad address",
					      NULL};
	struct next_hop hop = {0};
	next_hop_start(&hop, options);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[domain odd.test]\ntransport = [127.0.0.1]:%d\n"
		 "[domain client.example]\ntransport = [127.0.0.1]:%d\n",
		 hop.port, hop.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const rcpts[] = {"good@odd.test", "bad@odd.test", "worse@odd.test",
					    NULL};
	char id[32];
	send_message(&fi, rcpts, body_text, id);
	cr_assert_eq(next_hop_wait(&hop, "\"rcpts\": [\"alice@client.example\"]", 1, WAIT_MS), 1,
		     "no DSN reached the sender");
	harness_sleep_ms(500);
	cr_assert_eq(next_hop_count(&hop, "\"rcpts\": [\"alice@client.example\"]"), 1,
		     "more than one DSN for one message");
	cr_assert_eq(next_hop_count(&hop, "\"from\": \"\""), 1, "the DSN is not from <>");
	static const char *const fields[] = {
		"Content-Type: multipart/report; report-type=delivery-status",
		"Auto-Submitted: auto-replied",
		"Reporting-MTA: dns; relay.test",
		"Final-Recipient: rfc822; bad@odd.test",
		"Final-Recipient: rfc822; worse@odd.test",
		"Action: failed",
		"Status: 5.1.1",
		"Status: 5.1.3",
		"Remote-MTA: dns; 127.0.0.1",
		"Diagnostic-Code: smtp; 550 5.1.1 no such user",
		"Diagnostic-Code: smtp; 553 5.1.3 bad address",
		/* The original's header section, ferry's Received: first. */
		"text/rfc822-headers\\r\\nContent-Description: Undelivered Message "
		"Headers\\r\\n\\r\\nReceived: from client.example",
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		cr_assert_eq(next_hop_count(&hop, fields[i]), 1, "the DSN lacks '%s'", fields[i]);
	cr_assert_eq(next_hop_count(&hop, "Final-Recipient: rfc822; good@odd.test"), 0);
	char field[64];
	snprintf(field, sizeof(field), "X-Ferry-Queue-ID: %s", id);
	cr_assert_eq(next_hop_count(&hop, field), 1, "the DSN does not name the queue id");
	cr_assert_eq(next_hop_count(&hop, "Subject: to the next hop"), 2,
		     "the original's headers are not in the DSN (or it was delivered twice)");
	cr_assert_eq(log_wait(&fi, "event=bounce queue_id=", 1, WAIT_MS), 1);

	/* A bounce that fails ends there. */
	static const char *const bad[] = {"bad@odd.test", NULL};
	send_message_from(&fi, "", bad, body_text, NULL);
	cr_assert_eq(log_wait(&fi, "event=bounce_skipped", 1, WAIT_MS), 1);
	harness_sleep_ms(500);
	cr_assert_eq(next_hop_count(&hop, "\"from\": \"\""), 1, "a bounce was bounced");
	stop_ferryd_cleanly(&fi);
}

/* ---- DNS --------------------------------------------------------------------------------- */

/* tests/dns/fake_dns.py serving `records` on a free loopback port; it
 * runs until *keep (its standard input) is closed. Returns the port. */
static int dns_start(const char *const *records, int *keep)
{
	int in[2], out[2];
	cr_assert_eq(pipe(in), 0);
	cr_assert_eq(pipe(out), 0);
	char script[PATH_MAX];
	const char *src = getenv("FERRY_SOURCE_DIR");
	snprintf(script, sizeof(script), "%s/tests/dns/fake_dns.py", src ? src : ".");
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		const char *argv[32] = {"/usr/bin/python3", script};
		int n = 2;
		for (const char *const *r = records; *r != NULL && n < 31; r++)
			argv[n++] = *r;
		argv[n] = NULL;
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	*keep = in[1];
	FILE *f = fdopen(out[0], "r");
	cr_assert_not_null(f);
	int port = 0;
	char line[64];
	cr_assert_not_null(fgets(line, sizeof(line), f),
			   "fake_dns.py did not start (python3-dnslib: tools/install-deps)");
	cr_assert_eq(sscanf(line, "port %d", &port), 1, "fake_dns.py said '%s'", line);
	fclose(f);
	return port;
}

/*
 * Without a transport, mail goes where the domain's MX records say,
 * found on a DNS server on loopback: the most preferred exchanger; the
 * next one when the first refuses connections; the domain's own address
 * without MX records. A null MX fails at once (556 5.1.10), and so does
 * an MX that is this relay, by name or by address (554 5.4.6).
 */
Test(delivery, mx_records_route_mail)
{
	struct next_hop a = {0}, b = {0};
	next_hop_start_at(&a, "127.0.0.2", 0, NULL);
	next_hop_start_at(&b, "127.0.0.3", a.port, NULL);
	static const char *const zone[] = {"pref.test MX 10 mx1.pref.test",
					   "pref.test MX 20 mx2.pref.test",
					   "mx1.pref.test A 127.0.0.2",
					   "mx2.pref.test A 127.0.0.3",
					   "fallback.test MX 10 dead.fallback.test",
					   "fallback.test MX 20 live.fallback.test",
					   "dead.fallback.test A 127.0.0.4",
					   "live.fallback.test A 127.0.0.3",
					   "bare.test A 127.0.0.2",
					   "null.test MX 0 .",
					   "self.test MX 10 relay.test",
					   "selfaddr.test MX 10 me.selfaddr.test",
					   "me.selfaddr.test A 127.0.0.1",
					   NULL};
	int keep;
	int dns = dns_start(zone, &keep);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[delivery]\ndns_servers = 127.0.0.1:%d\nsmtp_port = %d\nretry_initial = 1h\n",
		 dns, a.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const pref[] = {"p@pref.test", NULL};
	static const char *const fallback[] = {"f@fallback.test", NULL};
	static const char *const bare[] = {"b@bare.test", NULL};
	static const char *const null[] = {"n@null.test", NULL};
	static const char *const self[] = {"s@self.test", NULL};
	static const char *const selfaddr[] = {"a@selfaddr.test", NULL};
	send_message(&fi, pref, body_text, NULL);
	send_message(&fi, fallback, body_text, NULL);
	send_message(&fi, bare, body_text, NULL);
	send_message(&fi, null, body_text, NULL);
	send_message(&fi, self, body_text, NULL);
	send_message(&fi, selfaddr, body_text, NULL);

	cr_assert_eq(next_hop_wait(&a, "\"rcpts\": [\"p@pref.test\"]", 1, WAIT_MS), 1,
		     "pref.test's mail did not reach its most preferred MX");
	cr_assert_eq(next_hop_wait(&a, "\"rcpts\": [\"b@bare.test\"]", 1, WAIT_MS), 1,
		     "a domain without MX records did not get mail at its own address");
	cr_assert_eq(next_hop_wait(&b, "\"rcpts\": [\"f@fallback.test\"]", 1, WAIT_MS), 1,
		     "fallback.test's mail did not go to the next MX");
	cr_assert_eq(next_hop_count(&b, "p@pref.test"), 0, "the less preferred MX got mail");
	cr_assert_geq(harness_log_count(&fi, "event=connect_failed domain=fallback.test"), 1);
	cr_assert_eq(harness_log_count(&fi, "rcpt=p@pref.test relay=mx1.pref.test[127.0.0.2]:"), 1);
	cr_assert_eq(log_wait(&fi, "rcpt=n@null.test relay=none", 1, WAIT_MS), 1);
	cr_assert_eq(harness_log_count(&fi, "status=bounced code=556 reply=\"556 5.1.10"), 1,
		     "the null MX did not fail with 556 5.1.10");
	cr_assert_eq(log_wait(&fi, "rcpt=s@self.test relay=none", 1, WAIT_MS), 1);
	cr_assert_eq(log_wait(&fi, "rcpt=a@selfaddr.test relay=none", 1, WAIT_MS), 1);
	cr_assert_eq(harness_log_count(&fi, "status=bounced code=554 reply=\"554 5.4.6"), 2,
		     "an MX that is this relay was not refused as a loop");
	cr_assert_eq(next_hop_count(&a, "self"), 0);
	close(keep);
	stop_ferryd_cleanly(&fi);
}

/* ---- quotas ------------------------------------------------------------------------------- */

/*
 * A domain's quota of queued messages: once it holds max_messages, new
 * mail for it gets 452 4.2.2, from the start too after a restart, while
 * other domains' mail flows; once its mail is delivered, it takes mail
 * again. A message counts once, however many of its recipients are there.
 */
Test(delivery, quota_refuses_a_full_domain_and_no_other)
{
	struct next_hop hop = {0};
	next_hop_start(&hop, NULL);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[domain quota.test]\ntransport = [127.0.0.1]:%d\nhold = yes\nmax_messages = 3\n"
		 "[domain other.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port, hop.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const two[] = {"a@quota.test", "b@quota.test", NULL};
	for (int i = 0; i < 3; i++)
		send_message(&fi, two, body_text, NULL);
	struct smtp_reply r;
	cr_assert_eq(try_recipient(&fi, "c@quota.test", &r), 452, "%s", r.text);
	cr_assert_str_eq(r.text, "452 4.2.2 <c@quota.test>: Mailbox full: too much mail is "
				 "waiting for quota.test, try again later");
	static const char *const other[] = {"o@other.test", NULL};
	send_message(&fi, other, body_text, NULL);
	cr_assert_eq(next_hop_wait(&hop, "\"rcpts\": [\"o@other.test\"]", 1, WAIT_MS), 1);

	/* Counted again from the spool at start. */
	cr_assert_eq(harness_stop(&fi, STOP_MS), 0);
	cr_assert_eq(harness_start(&fi, START_MS), 0);
	cr_assert_eq(try_recipient(&fi, "c@quota.test", &r), 452, "after a restart: %s", r.text);

	/* Delivered, the quota is free again. */
	wait_admin_socket(&fi);
	char ctl[PATH_MAX], out[4096], err[4096];
	char *argv[] = {(char *)harness_build_path("ferryctl", ctl, sizeof(ctl)),
			"-c",
			fi.config,
			"flush",
			"quota.test",
			NULL};
	cr_assert_eq(harness_run(argv, out, sizeof(out), err, sizeof(err), IO_MS), 0, "%s", err);
	cr_assert_eq(
		next_hop_wait(&hop, "\"rcpts\": [\"a@quota.test\", \"b@quota.test\"]", 3, WAIT_MS),
		3);
	int code = 0;
	for (int64_t end = harness_now_ms() + WAIT_MS; harness_now_ms() < end && code != 250;) {
		code = try_recipient(&fi, "c@quota.test", &r);
		if (code != 250)
			harness_sleep_ms(50);
	}
	cr_assert_eq(code, 250, "the quota stayed full after delivery: %s", r.text);
	stop_ferryd_cleanly(&fi);
}

/* ---- compaction ------------------------------------------------------------------------------ */

/* A body of n numbered lines that fake_smtp.py checks whole. */
static char *numbered_body(int n)
{
	size_t size = (size_t)n * 70 + 64;
	char *b = malloc(size);
	cr_assert_not_null(b);
	size_t len = (size_t)snprintf(b, size, "Subject: numbered\r\n\r\n");
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(
			b + len, size - len, "L%06d %s\r\n", i,
			"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij");
	return b;
}

/*
 * Compaction runs while big bodies are being delivered to a slow next
 * hop: the spool's segments empty out under them (a fast domain's mail is
 * delivered and done), their live messages are copied and the old files
 * deleted, and every body still arrives whole and exact.
 */
Test(delivery, compaction_during_delivery_keeps_every_body_whole)
{
	static const char *const slow_options[] = {"--slow-data", "0.2", NULL};
	struct next_hop slow = {0}, fast = {0};
	next_hop_start(&slow, slow_options);
	next_hop_start(&fast, NULL);
	char extra[640];
	snprintf(extra, sizeof(extra),
		 "[spool]\nsegment_size = 4M\ncompact_threshold = 90\n"
		 "[domain slow.test]\ntransport = [127.0.0.1]:%d\nconcurrency = 2\n"
		 "[domain fast.test]\ntransport = [127.0.0.1]:%d\n"
		 /* Held: its messages stay live in the segments the fast
		  * domain's leave mostly dead, so compaction has work. */
		 "[domain keep.test]\ntransport = [127.0.0.1]:%d\nhold = yes\n",
		 slow.port, fast.port, fast.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	enum { SLOW = 6, FAST = 60, SLOW_LINES = 8000, FAST_LINES = 2000 };
	char *big = numbered_body(SLOW_LINES);   /* 560 KB: 1.8 s at the slow next hop */
	char *small = numbered_body(FAST_LINES); /* 140 KB */
	static const char *const to_slow[] = {"s@slow.test", NULL};
	static const char *const to_fast[] = {"f@fast.test", NULL};
	static const char *const to_keep[] = {"k@keep.test", NULL};
	/* Interleaved, so every segment holds some of each. */
	for (int i = 0; i < FAST; i++) {
		send_message(&fi, to_fast, small, NULL);
		if (i % (FAST / SLOW) == 0) {
			send_message(&fi, to_slow, big, NULL);
			send_message(&fi, to_keep, small, NULL);
		}
	}
	free(big);
	free(small);
	cr_assert_eq(next_hop_wait(&fast, "\"numbered_ok\": true", FAST, WAIT_MS * 2), FAST);
	cr_assert_geq(log_wait(&fi, "event=segment_compacted", 1, WAIT_MS), 1,
		      "nothing was compacted: the test proves nothing");
	cr_assert_lt(next_hop_count(&slow, "\"event\": \"message\""), SLOW,
		     "the slow deliveries were over before compaction: the test proves nothing");
	cr_assert_eq(next_hop_wait(&slow, "\"event\": \"message\"", SLOW, 120000), SLOW,
		     "not every slow message arrived");
	cr_assert_eq(next_hop_count(&slow, "\"numbered_ok\": true"), SLOW,
		     "a body arrived changed");
	char want[64];
	snprintf(want, sizeof(want), "\"numbered\": %d", SLOW_LINES);
	cr_assert_eq(next_hop_count(&slow, want), SLOW);
	stop_ferryd_cleanly(&fi);
}

/*
 * A next hop that gives up in the middle of a body (421 while ferry is
 * still reading the message from the spool to send it): the recipient is
 * deferred, ferryd goes on, and the retry delivers it (the server gives
 * up only once).
 */
Test(delivery, next_hop_giving_up_mid_body_defers_and_retries)
{
	static const char *const abort_options[] = {"--abort-data", "200000", NULL};
	struct next_hop quitter = {0};
	next_hop_start(&quitter, abort_options);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[delivery]\nretry_initial = 1s\n"
		 "[domain mid.test]\ntransport = [127.0.0.1]:%d\n",
		 quitter.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	char *big = numbered_body(8000);
	static const char *const rcpts[] = {"m@mid.test", NULL};
	send_message(&fi, rcpts, big, NULL);
	free(big);
	cr_assert_eq(next_hop_wait(&quitter, "\"event\": \"aborted_data\"", 1, WAIT_MS), 1);
	cr_assert_eq(log_wait(&fi, "rcpt=m@mid.test relay=127.0.0.1", 1, WAIT_MS), 1);
	/* The 421, or the connection it closed (whichever ferry saw first). */
	cr_assert_eq(harness_log_count(&fi, "status=deferred"), 1,
		     "giving up in the middle of the body did not defer the recipient");
	cr_assert_eq(next_hop_wait(&quitter, "\"numbered_ok\": true", 1, WAIT_MS), 1,
		     "the retry did not deliver the message whole");
	stop_ferryd_cleanly(&fi);
}

/*
 * Domains whose next hop is the same server share its connections (on
 * the worker that delivers them): mail for one domain, then another, goes
 * over a connection already open.
 */
Test(delivery, domains_sharing_a_next_hop_share_its_connection)
{
	struct next_hop hop = {0};
	next_hop_start(&hop, NULL);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[delivery]\nconnection_reuse_time = 10s\n"
		 "[domain one.test]\ntransport = [127.0.0.1]:%d\n"
		 "[domain two.test]\ntransport = [127.0.0.1]:%d\n"
		 "[domain three.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port, hop.port, hop.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const one[] = {"a@one.test", NULL};
	static const char *const two[] = {"b@two.test", NULL};
	static const char *const three[] = {"c@three.test", NULL};
	const char *const *each[] = {one, two, three};
	for (int i = 0; i < 3; i++) {
		send_message(&fi, each[i], body_text, NULL);
		cr_assert_eq(next_hop_wait(&hop, "\"event\": \"message\"", i + 1, WAIT_MS), i + 1);
	}
	/* Each worker delivers its own shards' domains with its own
	 * connections: of three domains, two are on the same one of the
	 * harness's two workers, and share. */
	cr_assert_leq(next_hop_count(&hop, "\"event\": \"connect\""), 2,
		      "%d connections to one next hop for three domains on two workers",
		      next_hop_count(&hop, "\"event\": \"connect\""));
	stop_ferryd_cleanly(&fi);
}

/*
 * Deliveries to a slow next hop, stopped in the middle (SIGTERM, or
 * kill -9 when `crash`), then ferryd started again: every recipient
 * arrives, exactly once after a clean stop (the transactions under way
 * finish, the rest waits), at least once after a crash (what the next
 * hop took before its outcome was journaled may come again).
 */
static void restart_mid_delivery(bool crash)
{
	static const char *const slow[] = {"--data-delay", "0.3", NULL};
	struct next_hop hop = {0};
	next_hop_start(&hop, slow);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[server]\nshutdown_timeout = 20s\n"
		 "[delivery]\nconcurrency = 2\n"
		 "[domain slow.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	enum { N = 20 };
	char rcpt[N][64];
	for (int i = 0; i < N; i++) {
		snprintf(rcpt[i], sizeof(rcpt[i]), "r%02d@slow.test", i);
		const char *rcpts[] = {rcpt[i], NULL};
		send_message(&fi, rcpts, body_text, NULL);
	}
	cr_assert_geq(next_hop_wait(&hop, "\"event\": \"message\"", 2, WAIT_MS), 2);
	if (crash)
		cr_assert_eq(harness_crash(&fi, STOP_MS), 0, "ferryd could not be killed");
	else
		cr_assert_eq(harness_stop(&fi, STOP_MS), 0, "ferryd did not stop cleanly");
	cr_assert_lt(next_hop_count(&hop, "\"event\": \"message\""), N,
		     "everything was delivered before the stop: the test proves nothing");
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not start again");
	for (int i = 0; i < N; i++) {
		char want[96];
		snprintf(want, sizeof(want), "\"rcpts\": [\"%s\"]", rcpt[i]);
		cr_assert_geq(next_hop_wait(&hop, want, 1, 60000), 1, "%s was lost", rcpt[i]);
	}
	harness_sleep_ms(1000);
	for (int i = 0; i < N && !crash; i++) {
		char want[96];
		snprintf(want, sizeof(want), "\"rcpts\": [\"%s\"]", rcpt[i]);
		cr_assert_eq(next_hop_count(&hop, want), 1, "%s arrived %d times", rcpt[i],
			     next_hop_count(&hop, want));
	}
	stop_ferryd_cleanly(&fi);
}

Test(delivery, restart_mid_delivery_delivers_each_recipient_once)
{
	restart_mid_delivery(false);
}

Test(delivery, kill_9_mid_delivery_delivers_everything_at_least_once)
{
	restart_mid_delivery(true);
}

/*
 * The recipients of one message for several domains with the same next
 * hop go in one transaction (on the worker that delivers them): a message
 * to three such domains reaches the next hop in fewer than three.
 */
Test(delivery, recipients_for_one_next_hop_share_a_transaction)
{
	struct next_hop hop = {0};
	next_hop_start(&hop, NULL);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[domain one.test]\ntransport = [127.0.0.1]:%d\n"
		 "[domain two.test]\ntransport = [127.0.0.1]:%d\n"
		 "[domain three.test]\ntransport = [127.0.0.1]:%d\n",
		 hop.port, hop.port, hop.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	/* Known first, so the others find their routes when the message
	 * comes: each domain gets mail of its own before. */
	static const char *const one[] = {"x@one.test", NULL};
	static const char *const two[] = {"x@two.test", NULL};
	static const char *const three[] = {"x@three.test", NULL};
	send_message(&fi, one, body_text, NULL);
	send_message(&fi, two, body_text, NULL);
	send_message(&fi, three, body_text, NULL);
	cr_assert_eq(next_hop_wait(&hop, "\"event\": \"message\"", 3, WAIT_MS), 3);
	static const char *const all[] = {"a@one.test", "b@two.test", "c@three.test", NULL};
	send_message(&fi, all, body_text, NULL);
	cr_assert_eq(log_wait(&fi, "status=sent", 6, WAIT_MS), 6);
	for (const char *const *r = all; *r != NULL; r++) {
		char want[96];
		snprintf(want, sizeof(want), "\"event\": \"rcpt\", \"rcpt\": \"%s\"", *r);
		cr_assert_eq(next_hop_count(&hop, want), 1, "%s was sent %d times", *r,
			     next_hop_count(&hop, want));
	}
	/* Of three domains on two workers, two are on the same one. */
	int transactions = next_hop_count(&hop, "\"event\": \"message\"") - 3;
	cr_assert_leq(transactions, 2, "%d transactions for one message to one next hop",
		      transactions);
	stop_ferryd_cleanly(&fi);
}

/*
 * A next hop that greets with 4xx is passed over for the next one of the
 * transport's list, as one that refuses the connection is.
 */
Test(delivery, a_next_hop_greeting_4xx_is_passed_over_for_the_next)
{
	static const char *const busy_options[] = {"--greeting", "421 4.3.2 busy.test too busy",
						   NULL};
	struct next_hop busy = {0}, good = {0};
	next_hop_start(&busy, busy_options);
	next_hop_start(&good, NULL);
	char extra[512];
	snprintf(extra, sizeof(extra),
		 "[domain list.test]\ntransport = [127.0.0.1]:%d, [127.0.0.1]:%d\n", busy.port,
		 good.port);
	struct ferry_instance fi;
	start_ferryd(&fi, extra);
	static const char *const rcpts[] = {"l@list.test", NULL};
	send_message(&fi, rcpts, body_text, NULL);
	cr_assert_eq(next_hop_wait(&good, "\"rcpts\": [\"l@list.test\"]", 1, WAIT_MS), 1,
		     "the mail did not go on to the second next hop");
	cr_assert_eq(next_hop_count(&busy, "\"event\": \"greeting_refused\""), 1);
	cr_assert_eq(harness_log_count(&fi, "status=deferred"), 0,
		     "the recipient was deferred instead of tried at the next hop");
	stop_ferryd_cleanly(&fi);
}
