/*
 * End-to-end tests of ETRN (RFC 1985; ../shared/spec/etrn.md): a real
 * ferryd holds mail for customer domains, a client sends ETRN, and the
 * mail goes out to each domain's own next hop (fake_smtp.py, which
 * records what it receives). What a user notices is checked: the exact
 * reply lines, what arrives at the next hop (and what does not), how
 * often, and real ETRN clients' exit status (fetchmail, msmtp,
 * ferry-etrn).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

TestSuite(etrn, .fini = suite_fini, .timeout = 240);

/* ---- set-up ------------------------------------------------------------------------- */

/* A held domain whose next hop is `port`, that loopback may ETRN, with
 * more keys (lines) after it. */
static void add_domain(char *cfg, size_t size, const char *name, int port, const char *more)
{
	size_t used = strlen(cfg);
	snprintf(cfg + used, size - used,
		 "[domain %s]\ntransport = [127.0.0.1]:%d\nhold = yes\n%s%s", name, port,
		 more != NULL ? more : "etrn_networks = 127.0.0.0/8\n",
		 more != NULL && strstr(more, "etrn_networks") == NULL
			 ? "etrn_networks = 127.0.0.0/8\n"
			 : "");
}

static void start_ferryd(struct ferry_instance *fi, const char *extra)
{
	cr_assert_eq(harness_setup(fi, extra), 0, "cannot set up a temporary directory");
	cr_assert_eq(harness_start(fi, START_MS), 0, "ferryd did not start (see its log above)");
}

/* One message from a trusted client to one recipient. */
static void send_to(const struct ferry_instance *fi, const char *rcpt)
{
	struct smtp_client c;
	char line[512];
	connect_greeted(&c, fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	expect_command(&c, "MAIL FROM:<alice@client.example>", 250, NULL);
	snprintf(line, sizeof(line), "RCPT TO:<%s>", rcpt);
	expect_command(&c, line, 250, NULL);
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&c, "Subject: held\r\n\r\nfor later\r\n.\r\n"), 0);
	struct smtp_reply r;
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "end of DATA: %s", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
}

/* An ETRN session, greeted with EHLO. */
static void etrn_session(struct smtp_client *c, const struct ferry_instance *fi)
{
	struct smtp_reply r;
	connect_greeted(c, fi);
	cr_assert_eq(smtp_client_command(c, "EHLO site.example", &r), 250);
	cr_assert_not_null(strstr(r.text, "\n250-ETRN\n"), "EHLO does not offer ETRN:\n%s", r.text);
}

/* Send `line`; the reply must be exactly `want` (one line). */
static void expect_line(struct smtp_client *c, const char *line, const char *want)
{
	struct smtp_reply r;
	smtp_client_command(c, line, &r);
	cr_assert_str_eq(r.text, want, "after '%s'", line);
}

/* Messages that arrived for `rcpt`. */
static int arrived(const struct next_hop *hop, const char *rcpt)
{
	return next_hop_delivered(hop, rcpt);
}

/* ---- the RFC's exchange -------------------------------------------------------------- */

/*
 * RFC 1985's example session, line by line, with ferry's codes where the
 * RFC allows alternatives: uu.net's two messages are counted (253, where
 * the RFC shows 250), and asked again while its flush runs (its site is
 * slow to take them) the flush is joined and the count told again (253,
 * where the RFC shows 252). A lower-case verb ended by a bare LF (old
 * clients) is taken.
 */
Test(etrn, rfc_1985_example_replayed)
{
	struct next_hop hop, slow;
	next_hop_start(&hop, NULL);
	/* uu.net's site takes its time: its flush still runs when asked again. */
	static const char *const slowly[] = {"--data-delay", "3", NULL};
	next_hop_start(&slow, slowly);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "uu.net", slow.port, NULL);
	add_domain(cfg, sizeof(cfg), "sigurd.innovat.com", hop.port, NULL);
	add_domain(cfg, sizeof(cfg), "innovat.com", hop.port, NULL);
	add_domain(cfg, sizeof(cfg), ".innovat.com", hop.port, NULL);
	add_domain(cfg, sizeof(cfg), "forbidden.net", hop.port, "etrn_networks = 192.0.2.0/24\n");
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	send_to(&fi, "a@uu.net");
	send_to(&fi, "b@uu.net");
	send_to(&fi, "c@mail.innovat.com");
	send_to(&fi, "d@forbidden.net");

	struct smtp_client c;
	etrn_session(&c, &fi);
	expect_line(&c, "ETRN", "500 5.5.2 Syntax Error");
	expect_line(&c, "ETRN localname", "501 5.5.4 Syntax Error in Parameters");
	expect_line(&c, "ETRN uu.net", "253 2.0.0 OK, 2 pending messages for node uu.net started");
	cr_assert_eq(smtp_client_send_str(&c, "etrn sigurd.innovat.com\n"), 0);
	struct smtp_reply r;
	smtp_client_read_reply(&c, &r);
	cr_assert_str_eq(r.text, "251 2.0.0 OK, no messages waiting for node sigurd.innovat.com");
	expect_line(&c, "ETRN uu.net", "253 2.0.0 OK, 2 pending messages for node uu.net started");
	expect_line(&c, "ETRN @innovat.com",
		    "253 2.0.0 OK, 1 pending messages for node @innovat.com started");
	expect_line(&c, "ETRN unknown.example",
		    "458 4.0.0 Unable to queue messages for node unknown.example");
	expect_line(&c, "ETRN forbidden.net",
		    "459 4.7.1 Node forbidden.net not allowed: your address may not release its "
		    "mail");
	expect_command(&c, "QUIT", 221, "2.0.0");
	smtp_client_close(&c);

	cr_assert_eq(next_hop_wait_delivered(&hop, "c@mail.innovat.com", 1, WAIT_MS), 1);
	/* The second uu.net joined the first: one flush, one attempt each. */
	cr_assert_eq(log_wait(&fi, "event=etrn ", 8, WAIT_MS), 8);
	cr_assert_eq(harness_log_count(&fi, "argument=uu.net domains=uu.net reply=253 messages=2 "
					    "released=2 joined=0"),
		     1, "%s", harness_log(&fi));
	cr_assert_eq(harness_log_count(&fi, "argument=uu.net domains=uu.net reply=253 messages=2 "
					    "released=0 joined=1"),
		     1);
	harness_sleep_ms(500);
	cr_assert_eq(arrived(&hop, "d@forbidden.net"), 0, "a refused ETRN released mail");
	cr_assert_eq(next_hop_wait_delivered(&slow, "a@uu.net", 1, WAIT_MS), 1);
	cr_assert_eq(next_hop_wait_delivered(&slow, "b@uu.net", 1, WAIT_MS), 1);
	stop_ferryd_cleanly(&fi);
}

/* ---- what each form covers ------------------------------------------------------------ */

Test(etrn, at_domain_covers_its_subdomains_on_label_boundaries_only)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "foo.com", hop.port, NULL);
	add_domain(cfg, sizeof(cfg), ".foo.com", hop.port, NULL);
	add_domain(cfg, sizeof(cfg), "barfoo.com", hop.port, NULL);
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	send_to(&fi, "u@foo.com");
	send_to(&fi, "u@fred.foo.com");
	send_to(&fi, "u@a.b.c.foo.com");
	send_to(&fi, "u@barfoo.com");

	struct smtp_client c;
	etrn_session(&c, &fi);
	expect_line(&c, "ETRN @foo.com",
		    "253 2.0.0 OK, 3 pending messages for node @foo.com started");
	cr_assert_eq(next_hop_wait(&hop, "\"event\": \"message\"", 3, WAIT_MS), 3);
	cr_assert_eq(arrived(&hop, "u@foo.com"), 1);
	cr_assert_eq(arrived(&hop, "u@fred.foo.com"), 1);
	cr_assert_eq(arrived(&hop, "u@a.b.c.foo.com"), 1);
	harness_sleep_ms(500);
	cr_assert_eq(arrived(&hop, "u@barfoo.com"), 0, "@foo.com released barfoo.com");
	/* It was held all along, and goes when asked for by its own name. */
	expect_line(&c, "ETRN barfoo.com",
		    "253 2.0.0 OK, 1 pending messages for node barfoo.com started");
	cr_assert_eq(next_hop_wait_delivered(&hop, "u@barfoo.com", 1, WAIT_MS), 1);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

Test(etrn, node_names_and_named_queues_release_exactly_their_domains)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "customer.example", hop.port,
		   "etrn_nodes = mail.customer.example\netrn_queues = cust\n");
	add_domain(cfg, sizeof(cfg), "customer.org", hop.port,
		   "etrn_nodes = mail.customer.example\netrn_queues = cust\n");
	add_domain(cfg, sizeof(cfg), "other.example", hop.port, "etrn_queues = other\n");
	add_domain(cfg, sizeof(cfg), "third.example", hop.port, "etrn_queues = cust\n");
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	send_to(&fi, "u@customer.example");
	send_to(&fi, "u@customer.org");
	send_to(&fi, "u@other.example");
	send_to(&fi, "u@third.example");

	struct smtp_client c;
	etrn_session(&c, &fi);
	/* The node: its two domains, not third.example of the same queue. */
	expect_line(&c, "ETRN mail.customer.example",
		    "253 2.0.0 OK, 2 pending messages for node mail.customer.example started");
	cr_assert_eq(next_hop_wait(&hop, "\"event\": \"message\"", 2, WAIT_MS), 2);
	cr_assert_eq(arrived(&hop, "u@customer.example"), 1);
	cr_assert_eq(arrived(&hop, "u@customer.org"), 1);
	/* The queue: what is left of it (third.example), not other.example. */
	expect_line(&c, "ETRN #cust", "253 2.0.0 OK, 1 pending messages for node #cust started");
	cr_assert_eq(next_hop_wait_delivered(&hop, "u@third.example", 1, WAIT_MS), 1);
	harness_sleep_ms(500);
	cr_assert_eq(arrived(&hop, "u@other.example"), 0);
	expect_line(&c, "ETRN #other", "253 2.0.0 OK, 1 pending messages for node #other started");
	cr_assert_eq(next_hop_wait_delivered(&hop, "u@other.example", 1, WAIT_MS), 1);
	expect_line(&c, "ETRN #nosuchqueue",
		    "458 4.0.0 Unable to queue messages for node "
		    "#nosuchqueue");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	cr_assert_eq(next_hop_count(&hop, "\"event\": \"message\""), 4, "each exactly once");
	stop_ferryd_cleanly(&fi);
}

/* ---- policy ------------------------------------------------------------------------------- */

/*
 * A client outside a domain's etrn_networks gets 459 and nothing moves;
 * an @ wider than what the client may release is refused whole, however
 * much of it the client may release; a domain that hides counts answers
 * 250 whether or not mail waits.
 */
Test(etrn, refused_clients_move_nothing_and_hidden_counts_say_250)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "forbidden.net", hop.port, "etrn_networks = 192.0.2.0/24\n");
	add_domain(cfg, sizeof(cfg), "mine.net", hop.port, NULL);
	add_domain(cfg, sizeof(cfg), "quiet.example", hop.port, "etrn_counts = no\n");
	add_domain(cfg, sizeof(cfg), "closed.example", hop.port, "etrn_networks =\n");
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	send_to(&fi, "u@forbidden.net");
	send_to(&fi, "u@mine.net");
	send_to(&fi, "u@quiet.example");

	struct smtp_client c;
	etrn_session(&c, &fi);
	expect_line(&c, "ETRN forbidden.net",
		    "459 4.7.1 Node forbidden.net not allowed: your "
		    "address may not release its mail");
	expect_line(&c, "ETRN @net",
		    "459 4.7.1 Node @net not allowed: it covers domains you may not release");
	expect_line(&c, "ETRN closed.example",
		    "459 4.7.1 Node closed.example not allowed: ETRN is not enabled for it");
	harness_sleep_ms(1000);
	cr_assert_eq(next_hop_count(&hop, "\"event\": \"connect\""), 0,
		     "a refused ETRN opened a connection");
	expect_line(&c, "ETRN quiet.example",
		    "250 2.0.0 OK, queuing for node quiet.example started");
	cr_assert_eq(next_hop_wait_delivered(&hop, "u@quiet.example", 1, WAIT_MS), 1);
	expect_line(&c, "ETRN mine.net",
		    "253 2.0.0 OK, 1 pending messages for node mine.net "
		    "started");
	cr_assert_eq(next_hop_wait_delivered(&hop, "u@mine.net", 1, WAIT_MS), 1);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	harness_sleep_ms(300);
	cr_assert_eq(arrived(&hop, "u@forbidden.net"), 0);
	cr_assert_eq(harness_log_count(&fi, "argument=forbidden.net domains=\"\" reply=459"), 1);
	stop_ferryd_cleanly(&fi);
}

/* Past half of max_rate_per_client a minute each reply waits flood_delay;
 * past it the client gets 421 and is disconnected, in a new session too;
 * past max_per_session, 421 too. */
Test(etrn, a_flood_is_slowed_then_refused)
{
	static char cfg[4096];
	snprintf(cfg, sizeof(cfg),
		 "[etrn]\nmax_rate_per_client = 4\nflood_delay = 600ms\nmax_per_session = 100\n");
	add_domain(cfg, sizeof(cfg), "site.example", 9, NULL);
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	struct smtp_client c;
	etrn_session(&c, &fi);
	for (int i = 1; i <= 4; i++) {
		int64_t t0 = harness_now_ms();
		expect_line(&c, "ETRN site.example",
			    "251 2.0.0 OK, no messages waiting for node site.example");
		int64_t took = harness_now_ms() - t0;
		if (i > 2)
			cr_assert_geq(took, 550, "ETRN %d answered after %lld ms, not slowed", i,
				      (long long)took);
	}
	struct smtp_reply r;
	smtp_client_command(&c, "ETRN site.example", &r);
	cr_assert_str_eq(r.text, "421 4.7.0 relay.test Error: too many ETRN commands from your "
				 "address, slow down; closing");
	cr_assert(smtp_client_wait_closed(&c, IO_MS));
	smtp_client_close(&c);
	/* The minute is the client's, not the session's. */
	etrn_session(&c, &fi);
	smtp_client_command(&c, "ETRN site.example", &r);
	cr_assert_eq(r.code, 421, "%s", r.text);
	smtp_client_close(&c);
	/* Another client address is not affected. */
	cr_assert_eq(smtp_client_connect_from(&c, "127.0.0.2", fi.port, IO_MS), 0);
	cr_assert_eq(smtp_client_read_reply(&c, &r), 220);
	expect_command(&c, "EHLO other.example", 250, NULL);
	expect_line(&c, "ETRN site.example",
		    "251 2.0.0 OK, no messages waiting for node site.example");
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_log_count(&fi, " reply=421 "), 2, "%s", harness_log(&fi));
}

/* max_rate_per_client = 0: no limit a minute, and no flood delay (one
 * reply slowed by 20 s would show). */
Test(etrn, a_rate_of_zero_limits_nothing)
{
	static char cfg[4096];
	snprintf(cfg, sizeof(cfg),
		 "[etrn]\nmax_rate_per_client = 0\nflood_delay = 20s\nmax_per_session = 100\n");
	add_domain(cfg, sizeof(cfg), "site.example", 9, NULL);
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	struct smtp_client c;
	etrn_session(&c, &fi);
	int64_t t0 = harness_now_ms();
	for (int i = 0; i < 40; i++)
		expect_line(&c, "ETRN site.example",
			    "251 2.0.0 OK, no messages waiting for node site.example");
	cr_assert_lt(harness_now_ms() - t0, 15000, "a reply was slowed");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

Test(etrn, per_session_limit_closes_the_session)
{
	static char cfg[4096];
	snprintf(cfg, sizeof(cfg), "[etrn]\nmax_per_session = 2\n");
	add_domain(cfg, sizeof(cfg), "site.example", 9, NULL);
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	struct smtp_client c;
	etrn_session(&c, &fi);
	expect_line(&c, "ETRN site.example",
		    "251 2.0.0 OK, no messages waiting for node site.example");
	expect_line(&c, "ETRN site.example",
		    "251 2.0.0 OK, no messages waiting for node site.example");
	expect_line(&c, "ETRN site.example",
		    "421 4.7.0 relay.test Error: too many ETRN commands "
		    "in one session; closing");
	cr_assert(smtp_client_wait_closed(&c, IO_MS));
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

/* ---- a large held queue ----------------------------------------------------------------- */

/*
 * 10,000 held messages: nothing is tried before the ETRN; the ETRN counts
 * them all; a second ETRN while the flush runs joins it; every message
 * arrives exactly once (each queue id ferry-bench was given, once).
 */
Test(etrn, ten_thousand_held_messages_arrive_exactly_once, .timeout = 600)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "bulk.example", hop.port, NULL);
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);

	char bench[PATH_MAX], target[64], ids[PATH_MAX + 16], out[4096], err[4096];
	harness_build_path("ferry-bench", bench, sizeof(bench));
	snprintf(target, sizeof(target), "127.0.0.1:%d", fi.port);
	snprintf(ids, sizeof(ids), "%s/ids", fi.dir);
	char *argv[] = {bench,   "-c",    "10",
			"-n",    "10000", "-s",
			"1024",  "--to",  "rcpt@bulk.example",
			"--ids", ids,     "--timeout",
			"300",   target,  NULL};
	int status = harness_run(argv, out, sizeof(out), err, sizeof(err), 320000);
	cr_assert_eq(status, 0, "ferry-bench: %s%s", out, err);
	cr_assert_eq(harness_count_spool(&fi), 10000);
	harness_sleep_ms(1000);
	cr_assert_eq(next_hop_count(&hop, "\"event\": \"connect\""), 0,
		     "a held domain was tried before its ETRN");

	struct smtp_client c;
	etrn_session(&c, &fi);
	expect_line(&c, "ETRN bulk.example",
		    "253 2.0.0 OK, 10000 pending messages for node bulk.example started");
	struct smtp_reply r;
	smtp_client_command(&c, "ETRN bulk.example", &r);
	cr_assert(r.code == 253 || r.code == 251, "%s", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	cr_assert_eq(next_hop_wait(&hop, "\"event\": \"message\"", 10000, 300000), 10000);
	if (r.code == 253)
		cr_assert_eq(harness_log_count(&fi, "argument=bulk.example domains=bulk.example "
						    "reply=253"),
			     2);
	cr_assert_eq(harness_log_count(&fi, "joined=1"), r.code == 253 ? 1 : 0, "%s",
		     harness_log(&fi));

	/* Exactly once: every accepted queue id at the next hop, once. */
	static const char check[] =
		"import json, re, sys\n"
		"ids = set(open(sys.argv[2]).read().split())\n"
		"seen = {}\n"
		"for line in open(sys.argv[1]):\n"
		"    e = json.loads(line)\n"
		"    if e.get('event') != 'message': continue\n"
		"    m = re.search(r'\\(ferry\\) with E?SMTP\\S* id (\\w+)', e['data'])\n"
		"    seen[m.group(1)] = seen.get(m.group(1), 0) + 1\n"
		"dup = sum(1 for v in seen.values() if v > 1)\n"
		"print(len(ids), len(seen), dup, len(ids - set(seen)))\n";
	char *py[] = {"python3", "-c", (char *)check, hop.record, ids, NULL};
	cr_assert_eq(harness_run(py, out, sizeof(out), err, sizeof(err), 60000), 0, "%s", err);
	cr_assert_str_eq(out, "10000 10000 0 0\n", "(ids, seen, duplicated, missing)");
	harness_sleep_ms(1000);
	cr_assert_eq(next_hop_count(&hop, "\"event\": \"message\""), 10000, "one more came");
	stop_ferryd_cleanly(&fi);
}

/* ---- real clients ------------------------------------------------------------------------ */

static void with_three_customers(struct next_hop *hop, struct ferry_instance *fi)
{
	next_hop_start(hop, NULL);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "one.example", hop->port, NULL);
	add_domain(cfg, sizeof(cfg), "two.example", hop->port, "etrn_queues = pair\n");
	add_domain(cfg, sizeof(cfg), "three.example", hop->port, "etrn_queues = pair\n");
	add_domain(cfg, sizeof(cfg), "sub.four.example", hop->port, NULL);
	add_domain(cfg, sizeof(cfg), "four.example", hop->port, NULL);
	add_domain(cfg, sizeof(cfg), ".four.example", hop->port, NULL);
	add_domain(cfg, sizeof(cfg), "forbidden.net", hop->port, "etrn_networks = 192.0.2.0/24\n");
	start_ferryd(fi, cfg);
	send_to(fi, "u@one.example");
	send_to(fi, "u@two.example");
	send_to(fi, "u@three.example");
	send_to(fi, "u@sub.four.example");
	send_to(fi, "u@forbidden.net");
}

/* fetchmail --protocol ETRN: one ETRN per domain, exit 0, the mail there. */
Test(etrn, fetchmail_releases_its_domains)
{
	struct next_hop hop;
	struct ferry_instance fi;
	with_three_customers(&hop, &fi);
	char port[16], out[8192], err[8192];
	snprintf(port, sizeof(port), "%d", fi.port);
	char *argv[] = {"fetchmail",
			"-f",
			"/dev/null",
			"--nosyslog",
			"--verbose",
			"--protocol",
			"ETRN",
			"--service",
			port,
			"--fetchdomains",
			"one.example,two.example",
			"127.0.0.1",
			NULL};
	int status = harness_run(argv, out, sizeof(out), err, sizeof(err), 60000);
	cr_assert_eq(status, 0, "fetchmail exited %d:\n%s%s", status, out, err);
	/* Its progress goes to stdout, its warnings to stderr. */
	cr_assert_not_null(strstr(out, "ETRN< 253 2.0.0 OK, 1 pending messages for node "
				       "one.example started"),
			   "%s", out);
	cr_assert_not_null(strstr(out, "Pending messages for two.example started"), "%s", out);
	cr_assert_eq(next_hop_wait_delivered(&hop, "u@one.example", 1, WAIT_MS), 1);
	cr_assert_eq(next_hop_wait_delivered(&hop, "u@two.example", 1, WAIT_MS), 1);
	harness_sleep_ms(500);
	cr_assert_eq(arrived(&hop, "u@three.example"), 0);

	/* Refused: fetchmail reports it (as an authorization failure). */
	char *refused[] = {"fetchmail", "-f",        "/dev/null", "--nosyslog",     "--protocol",
			   "ETRN",      "--service", port,        "--fetchdomains", "forbidden.net",
			   "127.0.0.1", NULL};
	status = harness_run(refused, out, sizeof(out), err, sizeof(err), 60000);
	cr_assert_neq(status, 0, "fetchmail took a 459 as success:\n%s%s", out, err);
	cr_assert(strstr(out, "forbidden.net") != NULL || strstr(err, "forbidden.net") != NULL,
		  "%s%s", out, err);
	harness_sleep_ms(300);
	cr_assert_eq(arrived(&hop, "u@forbidden.net"), 0);
	stop_ferryd_cleanly(&fi);
}

/* msmtp --rmqs in its three forms: host, @domain, #queue. */
Test(etrn, msmtp_rmqs_in_its_three_forms)
{
	struct next_hop hop;
	struct ferry_instance fi;
	with_three_customers(&hop, &fi);
	char port[32], out[4096], err[4096];
	snprintf(port, sizeof(port), "--port=%d", fi.port);
	static const struct {
		const char *arg, *released[2];
	} forms[] = {
		{"--rmqs=one.example", {"u@one.example", NULL}},
		{"--rmqs=@four.example", {"u@sub.four.example", NULL}},
		{"--rmqs=#pair", {"u@two.example", "u@three.example"}},
	};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		char *argv[] = {"msmtp", "--host=127.0.0.1", port, (char *)forms[i].arg, NULL};
		int status = harness_run(argv, out, sizeof(out), err, sizeof(err), 60000);
		cr_assert_eq(status, 0, "msmtp %s exited %d: %s%s", forms[i].arg, status, out, err);
		for (int j = 0; j < 2 && forms[i].released[j] != NULL; j++)
			cr_assert_eq(
				next_hop_wait_delivered(&hop, forms[i].released[j], 1, WAIT_MS), 1,
				"%s did not release %s", forms[i].arg, forms[i].released[j]);
	}
	char *refused[] = {"msmtp", "--host=127.0.0.1", port, "--rmqs=forbidden.net", NULL};
	int status = harness_run(refused, out, sizeof(out), err, sizeof(err), 60000);
	cr_assert_eq(status, 69, "msmtp: EX_UNAVAILABLE expected, got %d: %s", status, err);
	cr_assert_not_null(strstr(err, "459 4.7.1 Node forbidden.net not allowed"), "%s", err);
	harness_sleep_ms(300);
	cr_assert_eq(arrived(&hop, "u@forbidden.net"), 0);
	cr_assert_eq(next_hop_count(&hop, "\"event\": \"message\""), 4);
	stop_ferryd_cleanly(&fi);
}

/*
 * ferry-etrn, the site's own client, against ferryd: exit 0 with the
 * count printed; --wait polls until ferryd answers 251 (the next hop takes
 * half a second per message, so the first polls still see mail pending);
 * a refused name exits 3.
 */
Test(etrn, ferry_etrn_waits_until_nothing_is_pending)
{
	struct next_hop hop;
	static const char *const slow[] = {"--data-delay", "0.5", NULL};
	next_hop_start(&hop, slow);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "site.example", hop.port, "concurrency = 1\n");
	add_domain(cfg, sizeof(cfg), "forbidden.net", hop.port, "etrn_networks = 192.0.2.0/24\n");
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	for (int i = 0; i < 3; i++)
		send_to(&fi, "u@site.example");

	char tool[PATH_MAX], server[64], out[8192], err[8192];
	harness_build_path("ferry-etrn", tool, sizeof(tool));
	snprintf(server, sizeof(server), "127.0.0.1:%d", fi.port);
	char *argv[] = {tool, "--wait", "--interval",   "0.3", "--timeout",
			"60", server,   "site.example", NULL};
	int status = harness_run(argv, out, sizeof(out), err, sizeof(err), 90000);
	cr_assert_eq(status, 0, "ferry-etrn exited %d:\n%s%s", status, out, err);
	cr_assert_not_null(strstr(out, "site.example: 253 2.0.0 OK, 3 pending messages for node "
				       "site.example started\n"),
			   "%s", out);
	cr_assert_not_null(strstr(out, "site.example: 251 2.0.0 OK, no messages waiting for node "
				       "site.example\n"),
			   "%s", out);
	cr_assert_eq(next_hop_delivered(&hop, "u@site.example"), 3,
		     "251 came before the mail was delivered");
	cr_assert_geq(harness_log_count(&fi, "argument=site.example domains=site.example "
					     "reply=253"),
		      2, "no poll saw the mail still pending:\n%s", out);

	char *refused[] = {tool, server, "forbidden.net", NULL};
	status = harness_run(refused, out, sizeof(out), err, sizeof(err), 60000);
	cr_assert_eq(status, 3, "ferry-etrn exited %d:\n%s%s", status, out, err);
	cr_assert_not_null(strstr(err, "459 4.7.1 Node forbidden.net not allowed"), "%s", err);
	stop_ferryd_cleanly(&fi);
}

/*
 * 252: one message queued for 20 covered domains, which the store's hash
 * spreads over both workers' shards (a fixed hash: the same every run),
 * could be counted by both: no exact count is told, and the mail goes.
 */
Test(etrn, a_count_split_across_workers_is_252)
{
	enum { SPLIT = 20 };
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "split.example", hop.port, NULL);
	add_domain(cfg, sizeof(cfg), ".split.example", hop.port, NULL);
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);

	struct smtp_client c;
	char line[128];
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	expect_command(&c, "MAIL FROM:<alice@client.example>", 250, NULL);
	for (int i = 0; i < SPLIT; i++) {
		snprintf(line, sizeof(line), "RCPT TO:<u@d%d.split.example>", i);
		expect_command(&c, line, 250, NULL);
	}
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&c, "Subject: split\r\n\r\nx\r\n.\r\n"), 0);
	struct smtp_reply r;
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "%s", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);

	etrn_session(&c, &fi);
	expect_line(&c, "ETRN @split.example",
		    "252 2.0.0 OK, pending messages for node @split.example started");
	for (int i = 0; i < SPLIT; i++) {
		snprintf(line, sizeof(line), "u@d%d.split.example", i);
		cr_assert_eq(next_hop_wait_delivered(&hop, line, 1, WAIT_MS), 1, "%s", line);
	}
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

/*
 * The operator's ETRN: `ferryctl flush #QUEUE` and `flush @DOMAIN`
 * release exactly what they cover, whatever the etrn_networks (an
 * operator is not a client); an unknown queue is an error.
 */
Test(etrn, ferryctl_flushes_a_queue_and_a_domain_tree)
{
	struct next_hop hop;
	next_hop_start(&hop, NULL);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "a.example", hop.port,
		   "etrn_networks = 192.0.2.0/24\netrn_queues = pair\n");
	add_domain(cfg, sizeof(cfg), "b.example", hop.port,
		   "etrn_networks = 192.0.2.0/24\netrn_queues = pair\n");
	add_domain(cfg, sizeof(cfg), ".tree.example", hop.port, NULL);
	add_domain(cfg, sizeof(cfg), "other.example", hop.port, NULL);
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	wait_admin_socket(&fi);
	send_to(&fi, "u@a.example");
	send_to(&fi, "u@b.example");
	send_to(&fi, "u@x.tree.example");
	send_to(&fi, "u@y.z.tree.example");
	send_to(&fi, "u@other.example");

	char ctl[PATH_MAX];
	harness_build_path("ferryctl", ctl, sizeof(ctl));
	static char out[4096], err[4096];
	char *pair[] = {ctl, "-c", fi.config, "flush", "#pair", NULL};
	cr_assert_eq(harness_run(pair, out, sizeof(out), err, sizeof(err), 30000), 0, "%s", err);
	cr_assert_str_eq(out, "flush: 2 recipients of #pair are ready for delivery now\n");
	char *tree[] = {ctl, "-c", fi.config, "flush", "@Tree.Example", NULL};
	cr_assert_eq(harness_run(tree, out, sizeof(out), err, sizeof(err), 30000), 0, "%s", err);
	cr_assert_str_eq(out, "flush: 2 recipients of @tree.example are ready for delivery now\n");
	static const char *const released[] = {"u@a.example", "u@b.example", "u@x.tree.example",
					       "u@y.z.tree.example"};
	for (size_t i = 0; i < sizeof(released) / sizeof(released[0]); i++)
		cr_assert_eq(next_hop_wait_delivered(&hop, released[i], 1, WAIT_MS), 1, "%s",
			     released[i]);
	harness_sleep_ms(500);
	cr_assert_eq(arrived(&hop, "u@other.example"), 0);
	char *none[] = {ctl, "-c", fi.config, "flush", "#nosuch", NULL};
	cr_assert_eq(harness_run(none, out, sizeof(out), err, sizeof(err), 30000), 1);
	cr_assert_str_eq(err, "ferryctl: no [domain] section has etrn_queues = nosuch: there is "
			      "no such queue\n");
	stop_ferryd_cleanly(&fi);
}

/*
 * A flush whose mail was all deferred again (the site's server refused
 * the connection) is not running: the next ETRN is no join but a new
 * flush, which tries the site again at once.
 */
Test(etrn, a_flush_the_site_refused_is_tried_again_by_the_next_etrn)
{
	int fd;
	int down = next_hop_closed_port(&fd);
	static char cfg[4096];
	cfg[0] = '\0';
	add_domain(cfg, sizeof(cfg), "asleep.example", down, NULL);
	struct ferry_instance fi;
	start_ferryd(&fi, cfg);
	send_to(&fi, "u@asleep.example");
	struct smtp_client c;
	etrn_session(&c, &fi);
	for (int round = 1; round <= 2; round++) {
		expect_line(&c, "ETRN asleep.example",
			    "253 2.0.0 OK, 1 pending messages for node asleep.example started");
		cr_assert_eq(log_wait(&fi, "rcpt=u@asleep.example relay=none", round, WAIT_MS),
			     round, "attempt %d was not made", round);
	}
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	cr_assert_eq(harness_log_count(&fi, "argument=asleep.example domains=asleep.example "
					    "reply=253 messages=1 released=1 joined=0"),
		     2, "%s", harness_log(&fi));
	stop_ferryd_cleanly(&fi);
	close(fd);
}
