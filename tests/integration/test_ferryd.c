/*
 * End-to-end tests: a real ferryd (from $FERRY_BUILD_DIR) on a loopback
 * port, spooling into a temporary directory, driven by our own SMTP
 * client, by swaks and by Python's smtplib. Each test asserts what a
 * client or an operator would see: reply codes and words, the messages in
 * the spool (read back as a restart would read them), ferryd's exit status
 * and messages.
 *
 * ferryd runs under the sanitizers in the test build, so "exits 0" also
 * means "no leak, no memory error".
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define START_MS 20000 /* ferryd up and accepting */
#define IO_MS    15000 /* one reply */
#define STOP_MS  20000 /* SIGTERM to exit, nothing in flight */

#include "tests/integration/checks.h"

static void suite_fini(void)
{
	harness_cleanup_all();
}

TestSuite(ferryd, .fini = suite_fini, .timeout = 60);

/* ---- helpers ------------------------------------------------------------------- */

static void start_ferryd(struct ferry_instance *fi, const char *extra)
{
	cr_assert_eq(harness_setup(fi, extra), 0, "cannot set up a temporary directory");
	cr_assert_eq(harness_start(fi, START_MS), 0, "ferryd did not start (see its log above)");
}

static void expect_reply(struct smtp_client *c, int code, const char *enhanced, const char *what)
{
	struct smtp_reply r;
	int got = smtp_client_read_reply(c, &r);
	cr_assert_eq(got, code, "%s: got '%s', expected %d", what, r.text, code);
	if (enhanced != NULL)
		cr_assert(strncmp(r.text + 4, enhanced, strlen(enhanced)) == 0,
			  "%s: got '%s', expected %d %s", what, r.text, code, enhanced);
}

/* EHLO, MAIL, RCPT one by one. */
static void open_transaction(struct smtp_client *c, const char *from, const char *to)
{
	char line[512];
	expect_command(c, "EHLO client.example", 250, NULL);
	snprintf(line, sizeof(line), "MAIL FROM:<%s>", from);
	expect_command(c, line, 250, "2.1.0");
	snprintf(line, sizeof(line), "RCPT TO:<%s>", to);
	expect_command(c, line, 250, "2.1.5");
}

/* Send a body (already with its final ".\r\n") and return the queue id. */
static void send_body_queued(struct smtp_client *c, const char *body, char id[32])
{
	struct smtp_reply r;
	cr_assert_eq(smtp_client_send_str(c, body), 0, "cannot send the body");
	cr_assert_eq(smtp_client_read_reply(c, &r), 250, "end of DATA: %s", r.text);
	cr_assert(smtp_reply_queue_id(&r, id, 32), "no queue id in '%s'", r.text);
}

static const char *find_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
			return p;
	}
	return NULL;
}

struct spooled {
	const struct spool_view_message *message;
	const char *body; /* NUL-terminated */
	size_t len;
};

/*
 * The message `id` is in the spool as a restart would find it (its COMMIT
 * record there and agreeing with its body), exactly once, with the
 * envelope the client gave (NULL: not checked). What is returned belongs
 * to the harness: valid until the next spool call.
 */
static struct spooled check_spooled(const struct ferry_instance *fi, const char *id,
				    const char *sender, const char *rcpt)
{
	const struct spool_view *sp = harness_spool_view(fi);
	cr_assert_not_null(sp, "cannot read the spool %s", fi->spool);
	size_t copies = harness_spool_copies(sp, id);
	cr_assert_eq(copies, 1, "queue id %s is %zu times in the spool %s", id, copies, fi->spool);
	const char *body;
	size_t body_len;
	const struct spool_view_message *m = harness_spool_message(fi, id, &body, &body_len);
	cr_assert_not_null(m, "the body of %s cannot be read from the spool", id);
	cr_assert_str_eq(m->id, id);
	cr_assert_eq(body_len, m->body_len, "%s: %zu body octets read, its commit counts %llu", id,
		     body_len, (unsigned long long)m->body_len);
	if (sender != NULL)
		cr_assert_str_eq(m->sender, sender, "%s: sender", id);
	if (rcpt != NULL) {
		cr_assert_eq(m->nrcpts, 1, "%s: %u recipients", id, m->nrcpts);
		cr_assert_str_eq(m->rcpts[0].address, rcpt, "%s: recipient", id);
	}
	return (struct spooled){m, body, body_len};
}

/* ---- 1. pipelining --------------------------------------------------------------- */

Test(ferryd, pipelined_transaction_is_answered_in_order_and_spooled)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	struct smtp_client c;
	struct smtp_reply r;
	connect_greeted(&c, &fi);
	cr_assert_eq(smtp_client_command(&c, "EHLO client.example", &r), 250, "%s", r.text);
	cr_assert_not_null(strstr(r.text, "PIPELINING"), "EHLO reply:\n%s", r.text);

	/* The whole envelope in one write, then the whole body in one. */
	cr_assert_eq(smtp_client_send_str(&c, "MAIL FROM:<alice@client.example>\r\n"
					      "RCPT TO:<bob@relay.example>\r\n"
					      "DATA\r\n"),
		     0);
	expect_reply(&c, 250, "2.1.0", "MAIL");
	expect_reply(&c, 250, "2.1.5", "RCPT");
	expect_reply(&c, 354, NULL, "DATA");
	char id[32];
	send_body_queued(&c,
			 "From: alice@client.example\r\n"
			 "To: bob@relay.example\r\n"
			 "Subject: pipelined\r\n"
			 "\r\n"
			 "first line\r\n"
			 "..a line that starts with a dot\r\n"
			 "last line\r\n"
			 ".\r\n",
			 id);
	cr_assert_eq(strlen(id), 16, "queue id '%s' is not 16 characters", id);
	expect_command(&c, "QUIT", 221, NULL);
	cr_assert(smtp_client_wait_closed(&c, IO_MS), "no close after QUIT");
	smtp_client_close(&c);

	/* 250 means durable: the message is in the spool now, before any
	 * shutdown, as a restart after a crash would find it. */
	struct spooled sp = check_spooled(&fi, id, "alice@client.example", "bob@relay.example");
	cr_assert_str_eq(sp.message->helo, "client.example");
	cr_assert_str_eq(sp.message->client, "127.0.0.1");
	const char *body = sp.body;
	static const char received[] = "Received: from client.example ([127.0.0.1])\r\n";
	cr_assert(strncmp(body, received, sizeof(received) - 1) == 0,
		  "the body does not start with a Received header:\n%s", body);
	char by[128];
	snprintf(by, sizeof(by), "by relay.test (ferry) with ESMTP id %s", id);
	cr_assert_not_null(strstr(body, by), "no '%s' in:\n%s", by, body);
	static const char sent[] = "\r\n\r\nfirst line\r\n"
				   ".a line that starts with a dot\r\n"
				   "last line\r\n";
	cr_assert(sp.len >= sizeof(sent) - 1 &&
			  memcmp(body + sp.len - (sizeof(sent) - 1), sent, sizeof(sent) - 1) == 0,
		  "the body is not stored as sent, with dot-stuffing undone:\n%s", body);
	cr_assert_eq(harness_count_spool(&fi), 1);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, client_that_ends_its_input_early_still_gets_every_reply)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);

	/* A whole transaction and QUIT in one write, then EOF (as printf | nc). */
	struct smtp_client c;
	cr_assert_eq(smtp_client_connect(&c, fi.port, IO_MS), 0);
	cr_assert_eq(smtp_client_send_str(&c, "EHLO client.example\r\n"
					      "MAIL FROM:<a@client.example>\r\n"
					      "RCPT TO:<b@relay.example>\r\n"
					      "DATA\r\n"
					      "Subject: then EOF\r\n"
					      "\r\n"
					      "body\r\n"
					      ".\r\n"
					      "QUIT\r\n"),
		     0);
	smtp_client_end_input(&c);
	expect_reply(&c, 220, NULL, "greeting");
	expect_reply(&c, 250, NULL, "EHLO");
	expect_reply(&c, 250, "2.1.0", "MAIL");
	expect_reply(&c, 250, "2.1.5", "RCPT");
	expect_reply(&c, 354, NULL, "DATA");
	struct smtp_reply r;
	char id[32];
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "end of DATA: %s", r.text);
	cr_assert(smtp_reply_queue_id(&r, id, sizeof(id)), "%s", r.text);
	expect_reply(&c, 221, NULL, "QUIT");
	cr_assert(smtp_client_wait_closed(&c, IO_MS), "not closed after QUIT and EOF");
	smtp_client_close(&c);
	check_spooled(&fi, id, "a@client.example", "b@relay.example");

	/* EOF in the middle of a body: answered up to there, nothing kept. */
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	cr_assert_eq(smtp_client_send_str(&c, "DATA\r\nSubject: cut short\r\n\r\nhalf a"), 0);
	smtp_client_end_input(&c);
	expect_reply(&c, 354, NULL, "DATA");
	cr_assert_eq(smtp_client_read_reply(&c, &r), SMTP_REPLY_CLOSED,
		     "a body cut short by EOF got '%s'", r.text);
	smtp_client_close(&c);
	/* Once ferryd has finished with everything, only the first is kept. */
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_count_spool(&fi), 1, "a message cut short was kept");
	check_spooled(&fi, id, "a@client.example", "b@relay.example");
}

/* Wait at most IO_MS for `text` to be in ferryd's log `count` times. */
static void wait_log_count(const struct ferry_instance *fi, const char *text, int count)
{
	int64_t deadline = harness_now_ms() + IO_MS;
	while (harness_log_count(fi, text) < count && harness_now_ms() < deadline)
		harness_sleep_ms(20);
	cr_assert_eq(harness_log_count(fi, text), count, "'%s' is not %d times in:\n%s", text,
		     count, harness_log(fi));
}

Test(ferryd, reset_inside_a_transaction_is_logged_as_a_lost_connection)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	/* The harness's own probes (which may end with a reset) are gone. */
	int64_t deadline = harness_now_ms() + IO_MS;
	while (harness_log_count(&fi, "event=connect ") !=
		       harness_log_count(&fi, "event=disconnect") &&
	       harness_now_ms() < deadline)
		harness_sleep_ms(20);
	int recv_errors = harness_log_count(&fi, "event=recv_error");
	/* In the envelope, then in the middle of a body. */
	struct smtp_client c;
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	smtp_client_abort(&c);
	wait_log_count(&fi, "event=lost_connection", 1);
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&c, "Subject: cut\r\n\r\nhalf a bo"), 0);
	cr_assert(smtp_client_quiet(&c, 200), "a reply in the middle of DATA");
	smtp_client_abort(&c);
	wait_log_count(&fi, "event=lost_connection", 2);
	const char *log = harness_log(&fi);
	const char *line = strstr(log, "event=lost_connection");
	cr_assert_not_null(strstr(line, "state=transaction error=\"Connection reset by peer\""),
			   "log:\n%s", log);
	cr_assert_eq(harness_log_count(&fi, "event=recv_error"), recv_errors, "log:\n%s",
		     harness_log(&fi));
	/* Outside a transaction a reset is what it was. */
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	smtp_client_abort(&c);
	wait_log_count(&fi, "event=recv_error", recv_errors + 1);
	cr_assert_eq(harness_log_count(&fi, "event=lost_connection"), 2, "log:\n%s",
		     harness_log(&fi));
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_count_spool(&fi), 0, "a message cut short was kept");
}

/* ---- 2. many sessions at once ------------------------------------------------------- */

Test(ferryd, a_thousand_concurrent_sessions_are_all_queued, .timeout = 150)
{
	enum { SESSIONS = 1000 };
	long limit = harness_raise_nofile(SESSIONS + 256);
	cr_assert_geq(limit, SESSIONS + 64, "RLIMIT_NOFILE is only %ld", limit);
	struct ferry_instance fi;
	start_ferryd(&fi, "[limits]\n"
			  "max_connections_per_client = 5000\n"
			  "[log]\n"
			  "level = warn\n");
	static char ids[SESSIONS][32];
	char why[1024];
	unsigned queued =
		harness_many_sessions(fi.port, SESSIONS, "many@client.example",
				      "inbox@relay.example", ids, 120000, why, sizeof(why));
	cr_assert_eq(queued, SESSIONS, "only %u of %d sessions got their message queued: %s",
		     queued, SESSIONS, why);
	cr_assert_eq(why[0], '\0', "a session went wrong: %s", why);
	qsort(ids, SESSIONS, sizeof(ids[0]), compare_ids);
	for (unsigned i = 1; i < SESSIONS; i++)
		cr_assert_str_neq(ids[i - 1], ids[i], "queue id %s given twice", ids[i]);
	/* Every one of them is in the spool, once, while ferryd runs. */
	const struct spool_view *sp = harness_spool_view(&fi);
	cr_assert_not_null(sp, "cannot read the spool");
	cr_assert_eq(sp->count, SESSIONS, "the spool holds %zu messages, %d were queued", sp->count,
		     SESSIONS);
	for (unsigned i = 0; i < SESSIONS; i++)
		cr_assert_eq(harness_spool_copies(sp, ids[i]), 1,
			     "queue id %s is %zu times in the spool", ids[i],
			     harness_spool_copies(sp, ids[i]));
	for (unsigned i = 0; i < SESSIONS; i += 97) {
		const char *body =
			check_spooled(&fi, ids[i], "many@client.example", "inbox@relay.example")
				.body;
		cr_assert_not_null(strstr(body, "\r\n\r\nHello from a concurrent session.\r\n"),
				   "%s: body %s", ids[i], body);
	}
	stop_ferryd_cleanly(&fi);
}

/* ---- 3. swaks, and the relay policy ---------------------------------------------- */

Test(ferryd, swaks_sends_a_message)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	char server[64];
	snprintf(server, sizeof(server), "127.0.0.1:%d", fi.port);
	char *argv[] = {"swaks",           "--server",         server,
			"--from",          "a@client.example", "--to",
			"b@relay.example", "--body",           "Hello from swaks",
			"--helo",          "client.example",   NULL};
	static char out[65536], err[16384];
	int status = harness_run(argv, out, sizeof(out), err, sizeof(err), 60000);
	cr_assert_eq(status, 0, "swaks exited %d\n%s\n%s", status, out, err);
	const char *queued = strstr(out, "queued as ");
	cr_assert_not_null(queued, "swaks output has no 'queued as':\n%s", out);
	char id[32];
	cr_assert_eq(sscanf(queued, "queued as %31s", id), 1);
	const char *body = check_spooled(&fi, id, "a@client.example", "b@relay.example").body;
	cr_assert_not_null(strstr(body, "Hello from swaks"), "%s", body);
	cr_assert_eq(harness_count_spool(&fi), 1);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, untrusted_client_may_only_send_to_relay_domains)
{
	struct ferry_instance fi;
	/* 127.0.0.1 is not in the trusted networks now. */
	start_ferryd(&fi, "[relay]\ntrusted_networks = 192.0.2.0/24\n");
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	expect_command(&c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
	expect_command(&c, "RCPT TO:<x@other.example>", 554, "5.7.1");
	expect_command(&c, "RCPT TO:<x%other.example@relay.example>", 554, "5.7.1");
	expect_command(&c, "RCPT TO:<other.example!x@relay.example>", 554, "5.7.1");
	expect_command(&c, "RCPT TO:<\"x@other.example\"@relay.example>", 554, "5.7.1");
	expect_command(&c, "RCPT TO:<b@relay.example>", 250, "2.1.5");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, trusted_client_may_relay_but_not_route)
{
	/* 127.0.0.1 is trusted by default: it may send anywhere, but a host of
	 * a trusted network may be compromised, so no routing tricks. */
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	expect_command(&c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
	static const char *const tricks[] = {
		"<x%other.example@relay.example>",
		"<other.example!x@relay.example>",
		"<\"x@other.example\"@relay.example>",
		"<x%victim.example@other.example>",
	};
	for (size_t i = 0; i < sizeof(tricks) / sizeof(tricks[0]); i++) {
		char line[128], want[192];
		struct smtp_reply r;
		snprintf(line, sizeof(line), "RCPT TO:%s", tricks[i]);
		snprintf(want, sizeof(want),
			 "554 5.7.1 %s: Relay access denied (routing characters in the local part)",
			 tricks[i]);
		cr_assert_eq(smtp_client_command(&c, line, &r), 554, "%s got '%s'", line, r.text);
		cr_assert_str_eq(r.text, want);
	}
	expect_command(&c, "RCPT TO:<b@other.example>", 250, "2.1.5");
	expect_command(&c, "DATA", 354, NULL);
	char id[32];
	send_body_queued(&c, "Subject: trusted\r\n\r\nrelayed\r\n.\r\n", id);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	check_spooled(&fi, id, "a@client.example", "b@other.example");
	cr_assert_eq(harness_count_spool(&fi), 1);
	stop_ferryd_cleanly(&fi);
}

/* RFC 5321 4.5.1: <Postmaster> without a domain MUST be accepted, in any
 * case, from anyone; ferry takes it for the configured postmaster. */
static void send_to_bare_postmaster(const struct ferry_instance *fi, const char *rcpt,
				    const char *stored)
{
	struct smtp_client c;
	connect_greeted(&c, fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	expect_command(&c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
	char line[64];
	snprintf(line, sizeof(line), "RCPT TO:<%s>", rcpt);
	expect_command(&c, line, 250, "2.1.5");
	expect_command(&c, "DATA", 354, NULL);
	char id[32];
	send_body_queued(&c, "Subject: abuse report\r\n\r\nfrom outside\r\n.\r\n", id);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	const char *body = check_spooled(fi, id, "a@client.example", stored).body;
	char received[128];
	snprintf(received, sizeof(received), "\tfor <%s>;", stored);
	cr_assert_not_null(strstr(body, received), "no '%s' in:\n%s", received, body);
}

Test(ferryd, postmaster_without_a_domain_reaches_the_configured_one)
{
	/* The default: postmaster@ the host name (relay.test here), though
	 * that is no relay domain and the client is not trusted. */
	struct ferry_instance fi;
	start_ferryd(&fi, "[relay]\ntrusted_networks = 192.0.2.0/24\n");
	send_to_bare_postmaster(&fi, "Postmaster", "postmaster@relay.test");
	stop_ferryd_cleanly(&fi);

	struct ferry_instance other;
	start_ferryd(&other, "[relay]\ntrusted_networks = 192.0.2.0/24\n"
			     "postmaster = abuse-desk@isp.example\n");
	send_to_bare_postmaster(&other, "POSTMASTER", "abuse-desk@isp.example");
	stop_ferryd_cleanly(&other);
}

Test(ferryd, junk_helo_is_refused_and_received_stays_whole)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	struct smtp_client c;
	struct smtp_reply r;
	connect_greeted(&c, &fi);
	/* Its '(' would have opened a comment over the client's address. */
	cr_assert_eq(smtp_client_command(&c, "HELO !@#$%^&*(", &r), 501, "%s", r.text);
	cr_assert_str_eq(r.text, "501 5.5.2 Error: HELO needs a host name (mail.example.com) or an "
				 "address literal ([192.0.2.1])");
	cr_assert_eq(smtp_client_command(&c, "EHLO a (b", &r), 501, "%s", r.text);
	cr_assert_str_eq(r.text, "501 5.5.2 Error: EHLO needs a host name (mail.example.com) or an "
				 "address literal ([192.0.2.1])");
	expect_command(&c, "MAIL FROM:<a@client.example>", 503, "5.5.1");
	/* A broken client's single label with an underscore is a host name. */
	expect_command(&c, "EHLO my_pc", 250, NULL);
	expect_command(&c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
	expect_command(&c, "RCPT TO:<b@relay.example>", 250, "2.1.5");
	expect_command(&c, "DATA", 354, NULL);
	char id[32];
	send_body_queued(&c, "Subject: helo\r\n\r\nhi\r\n.\r\n", id);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	struct spooled sp = check_spooled(&fi, id, "a@client.example", "b@relay.example");
	cr_assert_str_eq(sp.message->helo, "my_pc");
	static const char received[] = "Received: from my_pc ([127.0.0.1])\r\n";
	cr_assert(strncmp(sp.body, received, sizeof(received) - 1) == 0, "%s", sp.body);
	cr_assert_eq(harness_count_spool(&fi), 1);
	stop_ferryd_cleanly(&fi);
}

/* ---- 4. Python's smtplib ---------------------------------------------------------- */

Test(ferryd, python_smtplib_sends_a_message)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	char port[16];
	snprintf(port, sizeof(port), "%d", fi.port);
	static const char script[] =
		"import smtplib, sys\n"
		"with smtplib.SMTP('127.0.0.1', int(sys.argv[1]), "
		"local_hostname='client.example',\n"
		"                  timeout=30) as s:\n"
		"    refused = s.sendmail('a@client.example', ['b@relay.example'],\n"
		"                         'Subject: py\\r\\n\\r\\nHello from smtplib\\r\\n')\n"
		"    assert refused == {}, refused\n"
		"print('sent')\n";
	char *argv[] = {"python3", "-c", (char *)script, port, NULL};
	char out[4096], err[16384];
	int status = harness_run(argv, out, sizeof(out), err, sizeof(err), 60000);
	cr_assert_eq(status, 0, "python3 exited %d\n%s\n%s", status, out, err);
	cr_assert_not_null(strstr(out, "sent"), "%s", out);
	char ids[2][32];
	cr_assert_eq(harness_spool_ids(&fi, ids, 2), 1, "not exactly one message in the spool");
	const char *body = check_spooled(&fi, ids[0], "a@client.example", "b@relay.example").body;
	cr_assert_not_null(strstr(body, "Hello from smtplib\r\n"), "%s", body);
	stop_ferryd_cleanly(&fi);
}

/* ---- 5. graceful shutdown ------------------------------------------------------------ */

Test(ferryd, sigterm_closes_idle_sessions_and_lets_a_transaction_finish)
{
	enum { IDLE = 3 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[server]\nshutdown_timeout = 20s\n");
	struct smtp_client idle[IDLE], busy;
	for (int i = 0; i < IDLE; i++) {
		connect_greeted(&idle[i], &fi);
		expect_command(&idle[i], "EHLO idle.example", 250, NULL);
	}
	connect_greeted(&busy, &fi);
	open_transaction(&busy, "a@client.example", "b@relay.example");

	int64_t t0 = harness_now_ms();
	cr_assert_eq(kill(fi.pid, SIGTERM), 0);
	for (int i = 0; i < IDLE; i++) {
		expect_reply(&idle[i], 421, "4.3.2", "idle session after SIGTERM");
		cr_assert(smtp_client_wait_closed(&idle[i], IO_MS), "idle session %d not closed",
			  i);
		smtp_client_close(&idle[i]);
	}
	/* A new client is not served any more. */
	struct smtp_client late;
	if (smtp_client_connect(&late, fi.port, IO_MS) == 0) {
		struct smtp_reply r;
		int code = smtp_client_read_reply(&late, &r);
		cr_assert(code == 421 || code == SMTP_REPLY_CLOSED,
			  "a client arriving during shutdown got '%s'", r.text);
		smtp_client_close(&late);
	}

	expect_command(&busy, "DATA", 354, NULL);
	char id[32];
	send_body_queued(&busy, "Subject: in flight\r\n\r\nsent during shutdown\r\n.\r\n", id);
	expect_reply(&busy, 421, "4.3.2", "after the transaction during shutdown");
	cr_assert(smtp_client_wait_closed(&busy, IO_MS), "busy session not closed");
	smtp_client_close(&busy);

	int status = harness_wait_exit(&fi, STOP_MS);
	int64_t took = harness_now_ms() - t0;
	cr_assert_eq(status, 0, "ferryd exited with %d", status);
	cr_assert_lt(took, 20000, "ferryd took %lld ms, the whole shutdown deadline",
		     (long long)took);
	const char *body = check_spooled(&fi, id, "a@client.example", "b@relay.example").body;
	cr_assert_not_null(strstr(body, "\r\n\r\nsent during shutdown\r\n"), "%s", body);
	cr_assert_eq(harness_count_spool(&fi), 1);
}

Test(ferryd, shutdown_deadline_closes_a_session_still_sending)
{
	/* With no minimum rate, one octet every 200 ms is progress: the
	 * session may go on, but only until the shutdown deadline. */
	struct ferry_instance fi;
	start_ferryd(&fi, "[server]\nshutdown_timeout = 2s\n[limits]\nmin_data_rate = 0\n");
	struct smtp_client c;
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&c, "Subject: slow\r\n\r\n"), 0);
	/* Let the partial body reach ferryd before the signal. */
	cr_assert(smtp_client_quiet(&c, 200), "unexpected reply in the middle of DATA");

	int64_t t0 = harness_now_ms();
	cr_assert_eq(kill(fi.pid, SIGTERM), 0);
	int status = -1;
	for (int i = 0; i < 75 && status == -1; i++) {
		smtp_client_send(&c, "x", 1); /* fails once ferryd has closed it */
		status = harness_wait_exit(&fi, 200);
	}
	int64_t took = harness_now_ms() - t0;
	cr_assert_eq(status, 0, "ferryd exited with %d", status);
	cr_assert_geq(took, 1900, "ferryd left after %lld ms, before the 2 s deadline",
		      (long long)took);
	cr_assert_leq(took, 8000, "ferryd took %lld ms for a 2 s deadline", (long long)took);
	struct smtp_reply r;
	int code = smtp_client_read_reply(&c, &r);
	cr_assert(code == SMTP_REPLY_CLOSED || code == SMTP_REPLY_ERROR,
		  "the session cut at the deadline got '%s' instead of a close", r.text);
	smtp_client_close(&c);
	cr_assert_eq(harness_log_count(&fi, "event=shutdown_deadline"), 1);
	cr_assert_eq(harness_count_spool(&fi), 0, "a message never acknowledged was kept");
}

Test(ferryd, stuck_sessions_do_not_hold_sigterm_and_an_upload_still_finishes)
{
	/*
	 * A long shutdown_timeout; at SIGTERM a client trickles its body,
	 * one waits inside its envelope, one has half a command line, and
	 * one is in the middle of uploading a large body. The three stuck
	 * ones get 421 within a few seconds; the upload is acknowledged;
	 * ferryd exits long before the deadline.
	 */
	enum { STUCK = 3, LINE = 100, LINES = 50000 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[server]\nshutdown_timeout = 60s\n");
	struct smtp_client stuck[STUCK], upload;
	connect_greeted(&stuck[0], &fi);
	open_transaction(&stuck[0], "a@client.example", "b@relay.example");
	expect_command(&stuck[0], "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&stuck[0], "Subject: trickled\r\n\r\n"), 0);
	connect_greeted(&stuck[1], &fi);
	open_transaction(&stuck[1], "a@client.example", "b@relay.example");
	connect_greeted(&stuck[2], &fi);
	open_transaction(&stuck[2], "a@client.example", "b@relay.example");
	cr_assert_eq(smtp_client_send_str(&stuck[2], "RCPT TO:<c@rel"), 0);

	static char body[(size_t)LINE * LINES + 3];
	for (size_t i = 0; i < LINES; i++) {
		memset(body + i * LINE, 'a' + (char)(i % 26), LINE - 2);
		memcpy(body + i * LINE + LINE - 2, "\r\n", 2);
	}
	memcpy(body + (size_t)LINE * LINES, ".\r\n", 3);
	const size_t first = sizeof(body) / 8;
	connect_greeted(&upload, &fi);
	upload.timeout_ms = 60000;
	open_transaction(&upload, "up@client.example", "b@relay.example");
	expect_command(&upload, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send(&upload, body, first), 0);
	cr_assert(smtp_client_quiet(&stuck[0], 200), "unexpected reply in the middle of DATA");

	int64_t t0 = harness_now_ms();
	cr_assert_eq(kill(fi.pid, SIGTERM), 0);
	/* The upload goes on at full speed, and is acknowledged. */
	cr_assert_eq(smtp_client_send(&upload, body + first, sizeof(body) - first), 0);
	char id[32];
	struct smtp_reply r;
	cr_assert_eq(smtp_client_read_reply(&upload, &r), 250, "the upload got '%s'", r.text);
	cr_assert(smtp_reply_queue_id(&r, id, sizeof(id)), "%s", r.text);
	expect_reply(&upload, 421, "4.3.2", "after the upload during shutdown");
	/* The trickle goes on; it is no progress. */
	stuck[0].timeout_ms = 200;
	int code = SMTP_REPLY_TIMEOUT;
	for (int i = 0; i < 25 && code == SMTP_REPLY_TIMEOUT; i++) {
		smtp_client_send(&stuck[0], "x", 1);
		code = smtp_client_read_reply(&stuck[0], &r);
	}
	cr_assert(reply_is(&r, 421, "4.3.2"), "the trickled body got '%s' after %lld ms", r.text,
		  (long long)(harness_now_ms() - t0));
	for (int i = 1; i < STUCK; i++) {
		stuck[i].timeout_ms = 5000;
		expect_reply(&stuck[i], 421, "4.3.2", "a stuck envelope during shutdown");
	}
	for (int i = 0; i < STUCK; i++) {
		cr_assert(smtp_client_wait_closed(&stuck[i], IO_MS), "stuck session %d not closed",
			  i);
		smtp_client_close(&stuck[i]);
	}
	cr_assert(smtp_client_wait_closed(&upload, IO_MS), "the upload's session not closed");
	smtp_client_close(&upload);

	int status = harness_wait_exit(&fi, 10000);
	int64_t took = harness_now_ms() - t0;
	cr_assert_eq(status, 0, "ferryd exited with %d (or not in 10 s of a 60 s deadline)",
		     status);
	cr_assert_leq(took, 8000, "ferryd took %lld ms to stop", (long long)took);
	cr_assert_eq(harness_log_count(&fi, "event=shutdown_stalled"), STUCK, "log:\n%s",
		     harness_log(&fi));
	cr_assert_eq(harness_count_spool(&fi), 1, "only the upload is kept");
	check_spooled(&fi, id, "up@client.example", "b@relay.example");
}

/* ---- 6. early talkers ----------------------------------------------------------------- */

Test(ferryd, early_talker_is_refused_and_a_patient_client_is_greeted)
{
	struct ferry_instance fi;
	start_ferryd(&fi, "[server]\ngreeting_delay = 500ms\n");

	struct smtp_client bot;
	struct smtp_reply r;
	cr_assert_eq(smtp_client_connect(&bot, fi.port, IO_MS), 0);
	cr_assert_eq(smtp_client_send_str(&bot, "EHLO x\r\n"), 0);
	int code = smtp_client_read_reply(&bot, &r);
	cr_assert_eq(code, 554, "early talker got '%s'", r.text);
	cr_assert(smtp_client_wait_closed(&bot, IO_MS), "early talker's connection not closed");
	smtp_client_close(&bot);

	struct smtp_client polite;
	int64_t t0 = harness_now_ms();
	cr_assert_eq(smtp_client_connect(&polite, fi.port, IO_MS), 0);
	code = smtp_client_read_reply(&polite, &r);
	int64_t waited = harness_now_ms() - t0;
	cr_assert_eq(code, 220, "patient client got '%s'", r.text);
	cr_assert_geq(waited, 480, "greeted after %lld ms, before the 500 ms delay",
		      (long long)waited);
	expect_command(&polite, "EHLO polite.example", 250, NULL);
	expect_command(&polite, "QUIT", 221, NULL);
	smtp_client_close(&polite);
	stop_ferryd_cleanly(&fi);
}

/* ---- 7. limits over the wire ---------------------------------------------------------- */

Test(ferryd, fourth_connection_from_one_client_is_refused)
{
	enum { LIMIT = 3 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[limits]\nmax_connections_per_client = 3\n");
	struct smtp_client held[LIMIT];
	struct smtp_reply r;
	/* The harness's own readiness probe may still hold a place for a
	 * moment after it closed: retry until three are greeted. */
	int opened = 0;
	for (int attempt = 0; attempt < 100 && opened < LIMIT; attempt++) {
		cr_assert_eq(smtp_client_connect(&held[opened], fi.port, IO_MS), 0);
		int code = smtp_client_read_reply(&held[opened], &r);
		if (code == 220) {
			opened++;
			continue;
		}
		cr_assert_eq(code, 421, "connection %d got '%s'", opened + 1, r.text);
		smtp_client_close(&held[opened]);
		harness_sleep_ms(50);
	}
	cr_assert_eq(opened, LIMIT, "could not open %d connections", LIMIT);

	struct smtp_client fourth;
	cr_assert_eq(smtp_client_connect(&fourth, fi.port, IO_MS), 0);
	cr_assert_eq(smtp_client_read_reply(&fourth, &r), 421, "fourth connection: %s", r.text);
	cr_assert_str_eq(r.text,
			 "421 4.7.0 relay.test Too many connections from your address, try again "
			 "later");
	cr_assert(smtp_client_wait_closed(&fourth, IO_MS), "refused connection not closed");
	smtp_client_close(&fourth);

	/* The held ones still work, and a place given back can be taken. */
	expect_command(&held[0], "NOOP", 250, NULL);
	expect_command(&held[0], "QUIT", 221, NULL);
	cr_assert(smtp_client_wait_closed(&held[0], IO_MS));
	smtp_client_close(&held[0]);
	bool greeted = false;
	for (int attempt = 0; attempt < 100 && !greeted; attempt++) {
		struct smtp_client again;
		cr_assert_eq(smtp_client_connect(&again, fi.port, IO_MS), 0);
		int code = smtp_client_read_reply(&again, &r);
		cr_assert(code == 220 || code == 421, "got '%s'", r.text);
		greeted = code == 220;
		smtp_client_close(&again);
		if (!greeted)
			harness_sleep_ms(50);
	}
	cr_assert(greeted, "the place of a closed connection was never given back");
	for (int i = 1; i < LIMIT; i++)
		smtp_client_close(&held[i]);
	stop_ferryd_cleanly(&fi);
}

/* A connection from `source`: its first reply's code, the reply in r. */
static int first_reply_from(const struct ferry_instance *fi, const char *source,
			    struct smtp_reply *r)
{
	struct smtp_client c;
	cr_assert_eq(smtp_client_connect_from(&c, source, fi->port, IO_MS), 0, "connect from %s",
		     source);
	int code = smtp_client_read_reply(&c, r);
	if (code == 220)
		smtp_client_command(&c, "QUIT", r);
	smtp_client_close(&c);
	return code;
}

Test(ferryd, client_connecting_faster_than_its_rate_is_refused)
{
	/* 127/8 is not trusted here, except 127.0.0.4: trusted clients are
	 * not rate limited. */
	enum { RATE = 5 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[limits]\nmax_connection_rate_per_client = 5\n"
			  "[relay]\ntrusted_networks = 192.0.2.0/24, 127.0.0.4/32\n");
	struct smtp_reply r;
	for (int i = 0; i < RATE; i++)
		cr_assert_eq(first_reply_from(&fi, "127.0.0.2", &r), 220, "connection %d got '%s'",
			     i + 1, r.text);
	int code = first_reply_from(&fi, "127.0.0.2", &r);
	cr_assert_eq(code, 421, "connection %d in a minute got '%s'", RATE + 1, r.text);
	cr_assert_str_eq(r.text,
			 "421 4.7.0 relay.test Error: too many connections from your address, "
			 "slow down");
	/* Still refused: the minute is not over. */
	cr_assert_eq(first_reply_from(&fi, "127.0.0.2", &r), 421, "got '%s'", r.text);
	/* Another address is not affected, nor a trusted one past the rate. */
	cr_assert_eq(first_reply_from(&fi, "127.0.0.3", &r), 220, "another client got '%s'",
		     r.text);
	for (int i = 0; i < 2 * RATE; i++)
		cr_assert_eq(first_reply_from(&fi, "127.0.0.4", &r), 220,
			     "trusted connection %d got '%s'", i + 1, r.text);
	cr_assert_geq(harness_log_count(&fi, "event=connection_refused"), 2);
	stop_ferryd_cleanly(&fi);
}

/* Lines of text holding `needle`, and the sum of the `field=` numbers on
 * those that hold `tag` as well. */
static int count_lines(const char *text, const char *needle, const char *tag, const char *field,
		       long *sum)
{
	int n = 0;
	*sum = 0;
	for (const char *p = text; p != NULL && *p != '\0';) {
		const char *end = strchr(p, '\n');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		char line[2048];
		snprintf(line, sizeof(line), "%.*s", (int)len, p);
		if (strstr(line, needle) != NULL) {
			n++;
			const char *f = strstr(line, field);
			if (strstr(line, tag) != NULL && f != NULL)
				*sum += strtol(f + strlen(field), NULL, 10);
		}
		p = end != NULL ? end + 1 : NULL;
	}
	return n;
}

Test(ferryd, a_flood_of_connections_from_one_address_writes_a_bounded_log, .timeout = 120)
{
	/* Each connection logs connect and disconnect: 2 x FLOOD lines from
	 * one address, of which at most LINES a worker (two of them) are
	 * written; the rest are counted in log_suppressed lines, so the sum
	 * still adds up. Another client's few lines are all there. */
	enum { FLOOD = 300, LINES = 20, OTHER = 3 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[limits]\nmax_connection_rate_per_client = 0\n"
			  "[relay]\ntrusted_networks = 192.0.2.0/24\n"
			  "[log]\nmax_lines_per_client = 20\n");
	for (int i = 0; i < FLOOD + OTHER; i++) {
		struct smtp_client c;
		const char *from = i < FLOOD ? "127.0.0.9" : "127.0.0.10";
		cr_assert_eq(smtp_client_connect_from(&c, from, fi.port, IO_MS), 0, "connect %d",
			     i);
		cr_assert_eq(smtp_client_send_str(&c, "QUIT\r\n"), 0);
		cr_assert(smtp_client_wait_closed(&c, IO_MS), "connection %d not closed", i);
		smtp_client_close(&c);
	}
	/* The last disconnects are logged, and the summaries written, by the
	 * time ferryd has stopped. */
	stop_ferryd_cleanly(&fi);
	const char *log = harness_log(&fi);
	long suppressed, ignored;
	int summaries = count_lines(log, "event=log_suppressed client=127.0.0.9 ", "",
				    "suppressed=", &suppressed);
	int written = count_lines(log, "client=127.0.0.9 ", "", "x=", &ignored) - summaries;
	cr_expect_leq(written, 2 * LINES, "%d lines about one client with a limit of %d a worker",
		      written, LINES);
	cr_expect_geq(summaries, 1, "no log_suppressed line");
	cr_expect_leq(summaries, 2, "%d log_suppressed lines for one client in one minute",
		      summaries);
	cr_expect_eq(written + suppressed, 2 * FLOOD,
		     "%d lines written and %ld suppressed, of %d connect and disconnect lines",
		     written, suppressed, 2 * FLOOD);
	cr_expect_eq(count_lines(log, "client=127.0.0.10 ", "", "x=", &ignored), 2 * OTHER,
		     "the other client's lines");
	cr_expect_not_null(strstr(log, "window_s=60"), "no window in the summary");
}

Test(ferryd, connection_limit_and_shutdown_421s_name_the_host)
{
	/* RFC 5321 4.2: ferry's replies carry its host name; these 421s are
	 * built before any session exists, and must too. */
	enum { LIMIT = 2 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[server]\ngreeting_delay = 10s\n[limits]\nmax_connections = 2\n");
	struct smtp_client held[LIMIT], third;
	struct smtp_reply r;
	/* Held before their banner (the greeting delay), so a refusal shows
	 * as a reply at once. The harness's own readiness probe may still
	 * hold a place for a moment after it closed: retry then. */
	int opened = 0;
	for (int attempt = 0; attempt < 100 && opened < LIMIT; attempt++) {
		cr_assert_eq(smtp_client_connect(&held[opened], fi.port, IO_MS), 0);
		if (smtp_client_quiet(&held[opened], 300)) {
			opened++;
			continue;
		}
		smtp_client_close(&held[opened]);
		harness_sleep_ms(50);
	}
	cr_assert_eq(opened, LIMIT, "could not open %d connections", LIMIT);
	cr_assert_eq(smtp_client_connect(&third, fi.port, IO_MS), 0);
	cr_assert_eq(smtp_client_read_reply(&third, &r), 421, "over max_connections: %s", r.text);
	cr_assert_str_eq(r.text, "421 4.7.0 relay.test Too many connections, try again later");
	cr_assert(smtp_client_wait_closed(&third, IO_MS));
	smtp_client_close(&third);

	/* Shutdown reaches the held ones before their banner. */
	cr_assert_eq(kill(fi.pid, SIGTERM), 0);
	for (int i = 0; i < LIMIT; i++) {
		cr_assert_eq(smtp_client_read_reply(&held[i], &r), 421, "held %d: %s", i, r.text);
		cr_assert_str_eq(r.text, "421 4.3.2 relay.test Service shutting down");
		cr_assert(smtp_client_wait_closed(&held[i], IO_MS));
		smtp_client_close(&held[i]);
	}
	cr_assert_eq(harness_wait_exit(&fi, STOP_MS), 0);
}

Test(ferryd, refused_clients_that_reset_at_once_do_no_harm)
{
	enum { ATTEMPTS = 1500 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[limits]\nmax_connections_per_client = 1\n[log]\nlevel = warn\n");
	struct smtp_client held;
	struct smtp_reply r;
	bool greeted = false;
	for (int attempt = 0; attempt < 100 && !greeted; attempt++) {
		cr_assert_eq(smtp_client_connect(&held, fi.port, IO_MS), 0);
		greeted = smtp_client_read_reply(&held, &r) == 220;
		if (!greeted) {
			smtp_client_close(&held);
			harness_sleep_ms(50);
		}
	}
	cr_assert(greeted, "no connection was ever greeted");
	/* Each of these is over the limit, and gone (RST) before or while
	 * its 421 is sent: the send fails, which must only close it. */
	for (int i = 0; i < ATTEMPTS; i++) {
		struct smtp_client c;
		if (smtp_client_connect(&c, fi.port, IO_MS) == 0)
			smtp_client_abort(&c);
	}
	expect_command(&held, "NOOP", 250, NULL);
	expect_command(&held, "QUIT", 221, NULL);
	smtp_client_close(&held);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, client_that_stops_reading_and_resets_does_no_harm)
{
	enum { COMMANDS = 50000 }; /* ~6 MB of EHLO replies: more than the socket buffers */
	struct ferry_instance fi;
	start_ferryd(&fi, "[log]\nlevel = warn\n");
	struct smtp_client c;
	connect_greeted(&c, &fi);
	static char flood[COMMANDS * 8 + 1];
	for (int i = 0; i < COMMANDS; i++)
		memcpy(flood + (size_t)i * 8, "EHLO x\r\n", 8);
	cr_assert_eq(smtp_client_send(&c, flood, (size_t)COMMANDS * 8), 0);
	/* EOF, and never read: ferryd's send waits for room that never comes
	 * (its receive is over, only the send is in flight)... */
	smtp_client_end_input(&c);
	harness_sleep_ms(300);
	/* ...until the reset fails it. */
	smtp_client_abort(&c);

	struct smtp_client probe;
	connect_greeted(&probe, &fi);
	expect_command(&probe, "QUIT", 221, NULL);
	smtp_client_close(&probe);
	stop_ferryd_cleanly(&fi);
}

/* ferryd's resident memory (VmRSS) in kB, or -1. */
static long ferryd_rss_kb(const struct ferry_instance *fi)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)fi->pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	long kb = -1;
	while (kb < 0 && fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) != 1)
			kb = -1;
	fclose(f);
	return kb;
}

/* ferryd's CPU time so far (clock ticks), or -1. */
static long ferryd_cpu_ticks(const struct ferry_instance *fi)
{
	char path[64], text[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)fi->pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	const char *p = strrchr(text, ')'); /* the name may hold spaces */
	unsigned long utime, stime;
	if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
				&utime, &stime) != 2)
		return -1;
	return (long)(utime + stime);
}

/* Until ferryd has worked through what it was given (its CPU time stands
 * still for 300 ms), at most timeout_ms. */
static void ferryd_wait_settled(const struct ferry_instance *fi, int timeout_ms)
{
	int64_t deadline = harness_now_ms() + timeout_ms;
	long before = -2;
	for (long now = ferryd_cpu_ticks(fi); now != before && harness_now_ms() < deadline;
	     now = ferryd_cpu_ticks(fi)) {
		before = now;
		harness_sleep_ms(300);
	}
}

/*
 * Start a ferryd whose RSS means what it keeps. Under AddressSanitizer
 * (the test build) freed memory waits in a quarantine of up to 256 MB
 * before it is reused: RSS would measure what ferryd freed, not what it
 * keeps. No quarantine for these.
 */
static void start_ferryd_for_rss(struct ferry_instance *fi, const char *extra)
{
	cr_assert_eq(harness_setup(fi, extra), 0);
	char asan[1024];
	const char *asan_options = getenv("ASAN_OPTIONS");
	snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%squarantine_size_mb=0",
		 asan_options != NULL ? asan_options : "",
		 asan_options != NULL && asan_options[0] != '\0' ? ":" : "");
	/* In a Release build, jemalloc gives freed pages back at once too,
	 * instead of after its decay time. */
	const char *const env[] = {asan, "MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0", NULL};
	cr_assert_eq(harness_start_env(fi, START_MS, env), 0, "ferryd did not start");
}

/*
 * ferryd's RSS once a large message has gone through: the buffers of the
 * worker's receive ring (4 MB, made resident as traffic cycles through
 * it) are in it before we measure.
 */
static long rss_baseline(const struct ferry_instance *fi)
{
	enum { LINE = 100, LINES = 50000 };
	static char body[(size_t)LINE * LINES + 3];
	for (size_t i = 0; i < LINES; i++) {
		memset(body + i * LINE, 'a' + (char)(i % 26), LINE - 2);
		memcpy(body + i * LINE + LINE - 2, "\r\n", 2);
	}
	memcpy(body + (size_t)LINE * LINES, ".\r\n", 3);
	struct smtp_client c;
	connect_greeted(&c, fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send(&c, body, sizeof(body)), 0);
	expect_reply(&c, 250, "2.0.0", "end of the first message");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	ferryd_wait_settled(fi, 10000);
	long rss = ferryd_rss_kb(fi);
	cr_assert_gt(rss, 0, "cannot read ferryd's VmRSS");
	return rss;
}

Test(ferryd, client_that_pipelines_without_reading_cannot_grow_ferryd, .timeout = 150)
{
	/*
	 * The client pipelines NOOPs and reads nothing. Their replies (14
	 * octets each, 21 MB) must be far more than the kernel keeps for a
	 * socket (its send buffer grows to 4 MB on loopback), or the kernel
	 * would hold them all and ferryd would have nothing to buffer. ferryd
	 * must stop reading instead (and so stop taking our NOOPs): it may
	 * grow by its caps and one loop turn's input at most, not by what
	 * we send.
	 */
	enum { NOOPS = 1500000, STALL_MS = 1000, GROWTH_KB = 8192 };
	static const char noop[] = "NOOP\r\n", ok[] = "250 2.0.0 Ok\r\n";
	const size_t total = (size_t)NOOPS * (sizeof(noop) - 1);
	const size_t replies = (size_t)NOOPS * (sizeof(ok) - 1);
	static char flood[(size_t)NOOPS * (sizeof(noop) - 1)];
	for (size_t i = 0; i < NOOPS; i++)
		memcpy(flood + i * (sizeof(noop) - 1), noop, sizeof(noop) - 1);
	struct ferry_instance fi;
	start_ferryd_for_rss(&fi, "[limits]\nmax_commands_per_session = 10000000\n"
				  "[log]\nlevel = warn\n");
	struct smtp_client c;
	long before = rss_baseline(&fi);
	connect_greeted(&c, &fi);

	/* Write without reading until all is sent or ferryd stops taking it. */
	size_t sent = 0, got = 0;
	for (int64_t last = harness_now_ms(); sent < total && harness_now_ms() - last < STALL_MS;) {
		struct pollfd pfd = {.fd = c.fd, .events = POLLOUT};
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		ssize_t n = send(c.fd, flood + sent, total - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		cr_assert(n > 0 || errno == EAGAIN, "send: %s", strerror(errno));
		if (n > 0) {
			sent += (size_t)n;
			last = harness_now_ms();
		}
	}
	ferryd_wait_settled(&fi, 20000);
	long flooded = ferryd_rss_kb(&fi);
	cr_assert_leq(flooded - before, GROWTH_KB,
		      "ferryd grew from %ld to %ld kB while a client pipelined %zu octets of NOOPs "
		      "without reading",
		      before, flooded, sent);

	/* Now read: every NOOP gets its 250, in order, and the rest of the
	 * flood goes out meanwhile. */
	int64_t deadline = harness_now_ms() + 60000;
	while (got < replies) {
		cr_assert_lt(harness_now_ms(), deadline, "%zu of %zu reply octets in time", got,
			     replies);
		struct pollfd pfd = {.fd = c.fd, .events = POLLIN | (sent < total ? POLLOUT : 0)};
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if ((pfd.revents & POLLOUT) != 0) {
			ssize_t n =
				send(c.fd, flood + sent, total - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0)
				sent += (size_t)n;
		}
		char in[65536];
		ssize_t n = recv(c.fd, in, sizeof(in), MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN)
			continue;
		cr_assert_gt(n, 0, "the connection ended after %zu of %zu reply octets", got,
			     replies);
		for (ssize_t k = 0; k < n; k++, got++)
			cr_assert_eq(in[k], ok[got % (sizeof(ok) - 1)],
				     "reply octet %zu is not that of '250 2.0.0 Ok'", got);
		cr_assert_leq(got, replies, "more replies than NOOPs");
	}
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	long after = ferryd_rss_kb(&fi);
	cr_assert_leq(after - before, GROWTH_KB,
		      "ferryd grew from %ld to %ld kB answering %d NOOPs", before, after, NOOPS);
	stop_ferryd_cleanly(&fi);
}

/* ferryd's connections on `port` whose input the kernel holds unread
 * (their receive queue is not empty), from /proc/net/tcp. */
/* The most unsent output the kernel holds on one of ferryd's sockets
 * for `port` (Send-Q, from /proc/net/tcp). */
static unsigned long ferryd_largest_send_queue(int port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	cr_assert_not_null(f, "cannot read /proc/net/tcp");
	char line[512];
	unsigned long largest = 0;
	for (int n = 0; n < 100000 && fgets(line, sizeof(line), f) != NULL; n++) {
		unsigned local_port, state;
		unsigned long tx_queue, rx_queue;
		if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %lx:%lx", &local_port, &state, &tx_queue,
			   &rx_queue) == 4 &&
		    (int)local_port == port && state == 1 /* ESTABLISHED */ && tx_queue > largest)
			largest = tx_queue;
	}
	fclose(f);
	return largest;
}

static int ferryd_sockets_with_unread_input(int port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	cr_assert_not_null(f, "cannot read /proc/net/tcp");
	char line[512];
	int count = 0;
	for (int n = 0; n < 100000 && fgets(line, sizeof(line), f) != NULL; n++) {
		unsigned local_port, state;
		unsigned long tx_queue, rx_queue;
		if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %lx:%lx", &local_port, &state, &tx_queue,
			   &rx_queue) == 4 &&
		    (int)local_port == port && state == 1 /* ESTABLISHED */ && rx_queue > 0)
			count++;
	}
	fclose(f);
	return count;
}

/* A non-blocking client socket connected to 127.0.0.1:port that keeps
 * little of what it is sent (a small receive buffer). */
static int flood_client_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
	int rcvbuf = 16384;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
		     strerror(errno));
	cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
	return fd;
}

Test(ferryd, a_hundred_clients_pipelining_without_reading_cost_little, .timeout = 150)
{
	/*
	 * 100 clients each pipeline 100,000 EHLOs (800 KB; 13 MB of replies)
	 * and read nothing, not even the banner. Each session may cost its
	 * caps (64 KiB of held input, 64 KiB of replies) and what one loop
	 * turn brought in: ferryd must stop running their commands and stop
	 * reading from them, so their input waits in the kernel, not in
	 * ferryd. Measured on main before the connection layer: 921 MB.
	 */
	enum { CLIENTS = 100, COMMANDS = 100000, STALL_MS = 1000, PER_CLIENT_KB = 2048 };
	static const char ehlo[] = "EHLO x\r\n";
	const size_t total = (size_t)COMMANDS * (sizeof(ehlo) - 1);
	static char flood[(size_t)COMMANDS * (sizeof(ehlo) - 1)];
	for (size_t i = 0; i < COMMANDS; i++)
		memcpy(flood + i * (sizeof(ehlo) - 1), ehlo, sizeof(ehlo) - 1);
	long limit = harness_raise_nofile(CLIENTS + 256);
	cr_assert_geq(limit, CLIENTS + 64, "RLIMIT_NOFILE is only %ld", limit);
	struct ferry_instance fi;
	start_ferryd_for_rss(&fi, "[limits]\nmax_commands_per_session = 10000000\n"
				  "[log]\nlevel = warn\n");
	long before = rss_baseline(&fi);

	static int fds[CLIENTS];
	static size_t sent[CLIENTS];
	for (int i = 0; i < CLIENTS; i++) {
		fds[i] = flood_client_connect(fi.port);
		sent[i] = 0;
	}
	/* Write without reading until all is sent or ferryd stops taking it. */
	static struct pollfd pfds[CLIENTS];
	int64_t start = harness_now_ms(), last = start;
	size_t all = 0;
	while (all < total * CLIENTS && harness_now_ms() - last < STALL_MS) {
		cr_assert_lt(harness_now_ms() - start, 60000, "still sending after 60 s");
		for (int i = 0; i < CLIENTS; i++)
			pfds[i] = (struct pollfd){.fd = fds[i],
						  .events = sent[i] < total ? POLLOUT : 0};
		if (poll(pfds, CLIENTS, 100) <= 0)
			continue;
		for (int i = 0; i < CLIENTS; i++) {
			if ((pfds[i].revents & POLLOUT) == 0)
				continue;
			ssize_t n = send(fds[i], flood + sent[i], total - sent[i],
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			cr_assert(n > 0 || errno == EAGAIN, "client %d: send: %s", i,
				  strerror(errno));
			if (n > 0) {
				sent[i] += (size_t)n;
				all += (size_t)n;
				last = harness_now_ms();
			}
		}
	}
	ferryd_wait_settled(&fi, 20000);
	long flooded = ferryd_rss_kb(&fi);
	int unread = ferryd_sockets_with_unread_input(fi.port);
	unsigned long send_queue = ferryd_largest_send_queue(fi.port);
	cr_log_info("100 pipelining clients: ferryd %ld -> %ld kB, %zu octets sent, %d sockets "
		    "with input left in the kernel, at most %lu octets of replies queued in one",
		    before, flooded, all, unread, send_queue);
	/* Nor in the kernel: each socket's send buffer is max_output_queue
	 * (doubled by the kernel), not the 4 MiB autotuning would give it. */
	cr_assert_leq(send_queue, 4 * 32768, "%lu octets of replies queued in one socket",
		      send_queue);
	cr_assert_leq(flooded - before, (long)CLIENTS * PER_CLIENT_KB,
		      "ferryd grew from %ld to %ld kB while %d clients pipelined %zu octets of "
		      "EHLOs without reading",
		      before, flooded, CLIENTS, all);
	/*
	 * Reading stopped, not only running commands: what the clients sent
	 * waits in ferryd's sockets, unread. (Not in every one: a socket
	 * whose whole flood was queued when ferryd came to it is read in one
	 * loop turn, the cap's allowance; a ferryd that kept reading would
	 * have left nothing unread in any.)
	 */
	cr_assert_geq(unread, CLIENTS / 2,
		      "only %d of %d connections have input left unread by ferryd", unread,
		      CLIENTS);

	/* They go away (unread replies make each close a reset): ferryd
	 * gives back what they cost, and still serves. */
	for (int i = 0; i < CLIENTS; i++)
		close(fds[i]);
	ferryd_wait_settled(&fi, 20000);
	struct smtp_client probe;
	connect_greeted(&probe, &fi);
	expect_command(&probe, "QUIT", 221, NULL);
	smtp_client_close(&probe);
	ferryd_wait_settled(&fi, 20000);
	long after = ferryd_rss_kb(&fi);
	cr_log_info("after the clients closed: %ld kB", after);
	cr_assert_leq(after - before, 16384,
		      "ferryd grew from %ld to %ld kB and kept it after %d clients closed", before,
		      after, CLIENTS);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, idle_session_times_out)
{
	struct ferry_instance fi;
	start_ferryd(&fi, "[limits]\nidle_timeout = 1s\n");
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	int64_t t0 = harness_now_ms();
	struct smtp_reply r;
	int code = smtp_client_read_reply(&c, &r);
	int64_t waited = harness_now_ms() - t0;
	cr_assert_eq(code, 421, "idle session got '%s'", r.text);
	cr_assert_not_null(strstr(r.text, "4.4.2"), "idle session got '%s'", r.text);
	cr_assert_geq(waited, 900, "timed out after %lld ms of a 1 s timeout", (long long)waited);
	cr_assert_leq(waited, 6000, "timed out only after %lld ms", (long long)waited);
	cr_assert(smtp_client_wait_closed(&c, IO_MS), "timed-out session not closed");
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, stalled_body_times_out_after_the_data_timeout)
{
	/* The DATA timeout is the shorter one here: it must not wait for the
	 * idle timeout to come round first. */
	struct ferry_instance fi;
	start_ferryd(&fi, "[limits]\nidle_timeout = 60s\ndata_timeout = 1s\n");
	struct smtp_client c;
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&c, "Subject: stalled\r\n\r\nhalf a bo"), 0);
	int64_t t0 = harness_now_ms();
	struct smtp_reply r;
	int code = smtp_client_read_reply(&c, &r);
	int64_t waited = harness_now_ms() - t0;
	cr_assert_eq(code, 421, "stalled body got '%s' after %lld ms", r.text, (long long)waited);
	cr_assert_not_null(strstr(r.text, "4.4.2"), "stalled body got '%s'", r.text);
	cr_assert_geq(waited, 900, "timed out after %lld ms of a 1 s timeout", (long long)waited);
	cr_assert_leq(waited, 6000, "timed out only after %lld ms of a 1 s DATA timeout",
		      (long long)waited);
	cr_assert(smtp_client_wait_closed(&c, IO_MS), "timed-out session not closed");
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_count_spool(&fi), 0, "a body cut off by a timeout was kept");
}

Test(ferryd, slowloris_command_line_is_closed_at_the_command_deadline)
{
	/* One octet a second, never a line end: each restarts the idle
	 * timeout, none the command deadline. */
	enum { DEADLINE_MS = 3000, OCTETS = 12 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[limits]\nidle_timeout = 60s\ncommand_deadline = 3s\n");
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	static const char trickle[] = "MAIL FROM:<a@client.example>";
	struct smtp_reply r;
	int code = SMTP_REPLY_TIMEOUT;
	int64_t t0 = harness_now_ms();
	c.timeout_ms = 1000; /* one octet a second: the wait for a reply between them */
	for (int i = 0; i < OCTETS && code == SMTP_REPLY_TIMEOUT; i++) {
		cr_assert_eq(smtp_client_send(&c, trickle + i, 1), 0, "octet %d not taken", i);
		code = smtp_client_read_reply(&c, &r);
	}
	int64_t took = harness_now_ms() - t0;
	cr_assert_eq(code, 421, "a line trickled for %lld ms got '%s'", (long long)took, r.text);
	cr_assert(reply_is(&r, 421, "4.4.2"), "got '%s'", r.text);
	cr_assert_geq(took, DEADLINE_MS - 100, "closed after %lld ms of a 3 s deadline",
		      (long long)took);
	cr_assert_leq(took, DEADLINE_MS + 1500, "closed only after %lld ms of a 3 s deadline",
		      (long long)took);
	cr_assert(smtp_client_wait_closed(&c, IO_MS), "not closed after the 421");
	smtp_client_close(&c);
	cr_assert_eq(harness_log_count(&fi, "limit=command_deadline"), 1, "log:\n%s",
		     harness_log(&fi));

	/* Lines that do end in time are not cut off, though one has begun
	 * at every moment for longer than the deadline: each write ends a
	 * line and begins the next. */
	connect_greeted(&c, &fi);
	c.timeout_ms = IO_MS;
	cr_assert_eq(smtp_client_send_str(&c, "NO"), 0);
	for (int i = 0; i < 5; i++) {
		harness_sleep_ms(1000);
		cr_assert_eq(smtp_client_send_str(&c, "OP\r\nNO"), 0);
		expect_reply(&c, 250, "2.0.0", "a NOOP sent in two parts a second apart");
	}
	expect_command(&c, "OP", 250, "2.0.0");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

/* Send `body` (its final ".\r\n" included) `chunk` octets every
 * `interval_ms`, reading between; returns the first reply, at most
 * `max_ms` after the start. */
static int trickle_body(struct smtp_client *c, const char *body, size_t chunk, int interval_ms,
			int max_ms, struct smtp_reply *r)
{
	size_t len = strlen(body), sent = 0;
	int saved = c->timeout_ms;
	int code = SMTP_REPLY_TIMEOUT;
	int64_t end = harness_now_ms() + max_ms;
	c->timeout_ms = interval_ms;
	while (code == SMTP_REPLY_TIMEOUT && harness_now_ms() < end) {
		size_t n = len - sent < chunk ? len - sent : chunk;
		if (n > 0 && smtp_client_send(c, body + sent, n) == 0)
			sent += n;
		code = smtp_client_read_reply(c, r);
	}
	c->timeout_ms = saved;
	return code;
}

Test(ferryd, trickled_body_is_closed_below_the_minimum_data_rate)
{
	/* Five octets a second, each read well within data_timeout: only the
	 * rate over the whole body ends it, once data_timeout has passed. */
	enum { GRACE_MS = 2000 };
	struct ferry_instance fi;
	start_ferryd(&fi,
		     "[limits]\nidle_timeout = 60s\ndata_timeout = 2s\nmin_data_rate = 1000\n");
	struct smtp_client c;
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	int64_t t0 = harness_now_ms();
	struct smtp_reply r;
	int code =
		trickle_body(&c, "Subject: trickled\r\n\r\none octet at a time, forever\r\n.\r\n",
			     1, 200, 10000, &r);
	int64_t took = harness_now_ms() - t0;
	cr_assert_eq(code, 421, "a body trickled for %lld ms got '%s'", (long long)took, r.text);
	cr_assert(reply_is(&r, 421, "4.4.2"), "got '%s'", r.text);
	cr_assert_not_null(strstr(r.text, "data rate too low"), "got '%s'", r.text);
	cr_assert_geq(took, GRACE_MS - 100, "closed after %lld ms, within data_timeout",
		      (long long)took);
	cr_assert_leq(took, GRACE_MS + 2000, "closed only after %lld ms", (long long)took);
	cr_assert(smtp_client_wait_closed(&c, IO_MS), "not closed after the 421");
	smtp_client_close(&c);
	cr_assert_eq(harness_log_count(&fi, "event=data_rate_too_low"), 1, "log:\n%s",
		     harness_log(&fi));

	/* A body that keeps the rate is taken, however long it lasts: 400
	 * octets every 200 ms for some 3 s. */
	static char body[6500];
	size_t len = (size_t)snprintf(body, sizeof(body), "Subject: steady\r\n\r\n");
	while (len < sizeof(body) - 100)
		len += (size_t)snprintf(body + len, sizeof(body) - len, "%s\r\n",
					"a steady line of text, at twice the minimum rate");
	snprintf(body + len, sizeof(body) - len, ".\r\n");
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	t0 = harness_now_ms();
	code = trickle_body(&c, body, 400, 200, 10000, &r);
	took = harness_now_ms() - t0;
	char id[32];
	cr_assert_eq(code, 250, "a body at twice the rate got '%s' after %lld ms", r.text,
		     (long long)took);
	cr_assert_geq(took, GRACE_MS, "the body took only %lld ms", (long long)took);
	cr_assert(smtp_reply_queue_id(&r, id, sizeof(id)), "%s", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_count_spool(&fi), 1, "the trickled message was kept");
	check_spooled(&fi, id, "a@client.example", "b@relay.example");
}

Test(ferryd, overlong_command_line_is_refused_and_the_session_goes_on)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	char line[601];
	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'x', sizeof(line) - 6);
	line[sizeof(line) - 1] = '\0';
	cr_assert_eq(strlen(line), 600);
	expect_command(&c, line, 500, "5.5.2");
	/* Nothing of the long line was executed, and the session goes on. */
	expect_command(&c, "NOOP", 250, NULL);
	expect_command(&c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, recipients_past_the_limit_do_not_lose_the_transaction)
{
	/* Defaults: max_recipients = 1000, recipient_overshoot = 1000,
	 * max_errors = 20. A client pipelines its whole list of 1,100. */
	enum { SENT = 1100, LIMIT = 1000 };
	struct ferry_instance fi;
	start_ferryd(&fi, "[log]\nlevel = warn\n");
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	static char envelope[SENT * 40 + 128];
	size_t len =
		(size_t)snprintf(envelope, sizeof(envelope), "MAIL FROM:<a@client.example>\r\n");
	for (int i = 0; i < SENT; i++)
		len += (size_t)snprintf(envelope + len, sizeof(envelope) - len,
					"RCPT TO:<r%04d@relay.example>\r\n", i);
	len += (size_t)snprintf(envelope + len, sizeof(envelope) - len, "DATA\r\n");
	cr_assert_eq(smtp_client_send(&c, envelope, len), 0);
	struct smtp_reply r;
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "MAIL: %s", r.text);
	cr_assert_str_eq(r.text, "250 2.1.0 Ok");
	for (int i = 0; i < SENT; i++) {
		int code = smtp_client_read_reply(&c, &r);
		const char *want =
			i < LIMIT ? "250 2.1.5 Ok" : "452 4.5.3 Error: too many recipients";
		cr_assert_eq(code, i < LIMIT ? 250 : 452, "RCPT %d got '%s'", i + 1, r.text);
		cr_assert_str_eq(r.text, want, "RCPT %d", i + 1);
	}
	cr_assert_eq(smtp_client_read_reply(&c, &r), 354, "DATA after the overshoot: %s", r.text);
	char id[32];
	send_body_queued(&c, "Subject: many\r\n\r\nto a thousand\r\n.\r\n", id);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);

	struct spooled sp = check_spooled(&fi, id, "a@client.example", NULL);
	cr_assert_eq(sp.message->nrcpts, LIMIT, "%u recipients stored", sp.message->nrcpts);
	for (int i = 0; i < LIMIT; i++) {
		char want[64];
		snprintf(want, sizeof(want), "r%04d@relay.example", i);
		cr_assert_str_eq(sp.message->rcpts[i].address, want, "recipient %d", i);
	}
	cr_assert_eq(harness_count_spool(&fi), 1);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, overlong_command_line_is_refused_before_it_ends)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	/* 600 octets and no line end yet: the 500 comes now, not at the end. */
	char chunk[601];
	memcpy(chunk, "NOOP ", 5);
	memset(chunk + 5, 'x', sizeof(chunk) - 6);
	chunk[sizeof(chunk) - 1] = '\0';
	cr_assert_eq(smtp_client_send_str(&c, chunk), 0);
	c.timeout_ms = 3000;
	int64_t t0 = harness_now_ms();
	expect_reply(&c, 500, "5.5.2", "a command line past max_command_line, not yet ended");
	cr_assert_leq(harness_now_ms() - t0, 2000, "the 500 took %lld ms",
		      (long long)(harness_now_ms() - t0));
	c.timeout_ms = IO_MS;
	/* The rest of it, up to its end, is dropped: no second reply, and
	 * nothing of it is run (not even what looks like a command). */
	memset(chunk, 'y', sizeof(chunk) - 1);
	cr_assert_eq(smtp_client_send_str(&c, chunk), 0);
	cr_assert_eq(smtp_client_send_str(&c, "\rQUIT\r\n"), 0);
	expect_command(&c, "NOOP", 250, "2.0.0");
	expect_command(&c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

/* ---- 8. configuration errors ------------------------------------------------------------ */

struct check_result {
	int status;
	char out[16384];
	char err[4096];
};

static void check_config(const char *path, struct check_result *res)
{
	char ferryd[PATH_MAX];
	harness_ferryd_path(ferryd, sizeof(ferryd));
	char *argv[] = {ferryd, "--check-config", "-c", (char *)path, NULL};
	res->status =
		harness_run(argv, res->out, sizeof(res->out), res->err, sizeof(res->err), 30000);
}

Test(ferryd, check_config_names_file_line_and_key)
{
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, NULL), 0);
	char path[PATH_MAX + 32];
	static struct check_result res;

	/* An unknown key on line 6. */
	snprintf(path, sizeof(path), "%s/unknown-key.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[server]\n"
					      "listen = 127.0.0.1:2525\n"
					      "\n"
					      "[limits]\n"
					      "max_recipients = 100\n"
					      "idle_timout = 30s\n"),
		     0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "an unknown key was accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, path), "stderr does not name the file: %s", res.err);
	cr_assert_not_null(strstr(res.err, ":6:"), "stderr does not name line 6: %s", res.err);
	cr_assert_not_null(strstr(res.err, "idle_timout"), "stderr does not name the key: %s",
			   res.err);

	/* A bad value on line 3. */
	snprintf(path, sizeof(path), "%s/bad-value.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[limits]\n"
					      "max_recipients = 100\n"
					      "idle_timeout = soon\n"),
		     0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "a bad value was accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, path), "stderr does not name the file: %s", res.err);
	cr_assert_not_null(strstr(res.err, ":3:"), "stderr does not name line 3: %s", res.err);
	cr_assert_not_null(strstr(res.err, "idle_timeout"), "stderr does not name the key: %s",
			   res.err);
	cr_assert_not_null(strstr(res.err, "soon"), "stderr does not quote the value: %s", res.err);

	/* A bad value that another layer checks (networks) on line 4. */
	snprintf(path, sizeof(path), "%s/bad-network.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[relay]\n"
					      "relay_domains = relay.example\n"
					      "\n"
					      "trusted_networks = 127.0.0.0/8, 10.0.0.1/8\n"),
		     0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "a bad network was accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, path), "stderr does not name the file: %s", res.err);
	cr_assert_not_null(strstr(res.err, ":4:"), "stderr does not name line 4: %s", res.err);
	cr_assert_not_null(strstr(res.err, "trusted_networks"), "stderr does not name the key: %s",
			   res.err);

	/* A host name with a comment after it (part of the value). */
	snprintf(path, sizeof(path), "%s/bad-hostname.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[server]\nhostname = mx1.example # primary\n"), 0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "a bad host name was accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, "hostname"), "stderr does not name the key: %s",
			   res.err);

	/* An ETRN network and a metrics address that are no such thing: the
	 * layers that own them say so, naming section, key and line. */
	snprintf(path, sizeof(path), "%s/bad-etrn.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[domain site.example]\n"
					      "hold = yes\n"
					      "etrn_networks = 192.0.2.1/24\n"),
		     0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "a bad etrn network was accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, "[domain site.example] (line 1): key 'etrn_networks': "
					   "not a network"),
			   "%s", res.err);
	snprintf(path, sizeof(path), "%s/bad-metrics.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[metrics]\naddress = localhost\n"), 0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "a bad metrics address was accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, ":2: key 'address': not an address and port"), "%s",
			   res.err);

	/* A postmaster that is no address. */
	snprintf(path, sizeof(path), "%s/bad-postmaster.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[relay]\npostmaster = hostmaster\n"), 0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "a postmaster without a domain was accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, "postmaster"), "stderr does not name the key: %s",
			   res.err);
	cr_assert_not_null(strstr(res.err, "'hostmaster'"), "stderr does not quote the value: %s",
			   res.err);

	/* DNS servers that are no addresses, on line 2. */
	snprintf(path, sizeof(path), "%s/bad-dns.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[delivery]\ndns_servers = ns1.example:53\n"), 0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "DNS servers given by name were accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, ":2:"), "stderr does not name line 2: %s", res.err);
	cr_assert_not_null(strstr(res.err, "dns_servers"), "stderr does not name the key: %s",
			   res.err);

	/* A [domain] transport that is no next hop, in the section of line 4. */
	snprintf(path, sizeof(path), "%s/bad-transport.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[domain customer.example]\n"
					      "hold = yes\n"
					      "\n"
					      "[domain .other.example]\n"
					      "transport = [mx.other.example]:70000\n"),
		     0);
	check_config(path, &res);
	cr_assert_neq(res.status, 0, "a bad transport was accepted:\n%s", res.out);
	cr_assert_not_null(strstr(res.err, ":4: [domain .other.example] key 'transport': port "
					   "70000 is out of range"),
			   "stderr does not name the section, key and fault: %s", res.err);

	/* A good file: exit 0 and the effective configuration. */
	snprintf(path, sizeof(path), "%s/good.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, "[server]\n"
					      "listen = 127.0.0.1:2626\n"
					      "hostname = mx9.isp.example\n"
					      "[limits]\n"
					      "idle_timeout = 42s\n"
					      "max_recipients = 77\n"
					      "max_output_queue = 128K\n"
					      "[relay]\n"
					      "relay_domains = relay.example, other.example\n"),
		     0);
	check_config(path, &res);
	cr_assert_eq(res.status, 0, "a good file was refused: %s", res.err);
	cr_assert_not_null(find_line(res.out, "listen = 127.0.0.1:2626"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "idle_timeout = 42s"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "max_recipients = 77"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "max_connection_rate_per_client = 600"), "%s",
			   res.out);
	cr_assert_not_null(find_line(res.out, "max_lines_per_client = 100"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "recipient_overshoot = 1000"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "postmaster = postmaster@mx9.isp.example"), "%s",
			   res.out);
	cr_assert_not_null(find_line(res.out, "max_output_queue = 131072"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "max_input_held = 65536"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "command_deadline = 60s"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "min_data_rate = 500"), "%s", res.out);
	cr_assert_not_null(find_line(res.out, "relay_domains = relay.example, other.example"), "%s",
			   res.out);
	cr_assert_not_null(strstr(res.out, path), "the output does not name the file:\n%s",
			   res.out);
	cr_assert_not_null(strstr(res.out, "\n# file descriptors: "),
			   "the output does not give the descriptors needed:\n%s", res.out);
	harness_cleanup(&fi);
}

/* ---- the example production configuration ---------------------------------------------- */

/* docs/ferry.conf.example, whole and NUL-terminated (static). */
static const char *example_config(void)
{
	const char *source = getenv("FERRY_SOURCE_DIR");
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/docs/ferry.conf.example",
		 source != NULL && source[0] != '\0' ? source : ".");
	static char text[32768];
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s (FERRY_SOURCE_DIR names the checkout)", path,
			   strerror(errno));
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	cr_assert_lt(n, sizeof(text) - 1, "%s is larger than the test reads", path);
	text[n] = '\0';
	return text;
}

/* A line "key = value" of the example put otherwise: value NULL takes the
 * line out. Each key must be in the file (set exactly once), so that an
 * example that changes shape fails here rather than quietly going
 * untested. `append` goes at the end (sections may be repeated). */
struct config_edit {
	const char *key, *value;
};

static const char *edit_config(const char *text, const struct config_edit *edits, size_t n,
			       const char *append)
{
	static char out[32768];
	size_t len = 0;
	unsigned done[16] = {0};
	cr_assert_leq(n, 16);
	for (const char *line = text; *line != '\0';) {
		const char *end = strchr(line, '\n');
		size_t line_len = end != NULL ? (size_t)(end - line) + 1 : strlen(line);
		const char *put = line;
		size_t put_len = line_len;
		char changed[512];
		for (size_t i = 0; i < n; i++) {
			size_t k = strlen(edits[i].key);
			if (strncmp(line, edits[i].key, k) != 0 || strncmp(line + k, " = ", 3) != 0)
				continue;
			done[i]++;
			if (edits[i].value == NULL)
				put_len = 0;
			else
				put_len = (size_t)snprintf(changed, sizeof(changed), "%s = %s\n",
							   edits[i].key, edits[i].value);
			put = changed;
		}
		cr_assert_lt(len + put_len, sizeof(out));
		memcpy(out + len, put, put_len);
		len += put_len;
		line += line_len;
	}
	cr_assert_lt(len + strlen(append), sizeof(out));
	memcpy(out + len, append, strlen(append) + 1);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(done[i], 1, "docs/ferry.conf.example sets '%s' %u times, not once",
			     edits[i].key, done[i]);
	return out;
}

/* An unprivileged account for `user` where the example's ferry does not
 * exist: the example itself says to make it first. */
static const char *example_user(void)
{
	static const char *const names[] = {"ferry", "daemon", "nobody"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct passwd *pw = getpwnam(names[i]);
		if (pw != NULL && pw->pw_uid != 0 && getgrgid(pw->pw_gid) != NULL)
			return names[i];
	}
	cr_skip_test("no unprivileged account here for the example's user");
	return NULL;
}

static const char *example_group(const char *user)
{
	const struct passwd *pw = getpwnam(user);
	const struct group *gr = pw != NULL ? getgrgid(pw->pw_gid) : NULL;
	cr_assert_not_null(gr);
	static char name[64];
	snprintf(name, sizeof(name), "%s", gr->gr_name);
	return name;
}

/* The example is a valid configuration: --check-config takes it as it is
 * (only its user must exist here), and reads what it says. */
Test(ferryd, example_production_config_passes_check_config)
{
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, NULL), 0);
	const char *user = example_user();
	const struct config_edit edits[] = {{"user", user}, {"group", example_group(user)}};
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/ferry.conf", fi.dir);
	cr_assert_eq(harness_write_file(path, edit_config(example_config(), edits, 2, "")), 0);
	static struct check_result res;
	check_config(path, &res);
	cr_assert_eq(res.status, 0, "the example was refused: %s", res.err);
	static const char *const lines[] = {
		"hostname = mx1.isp.example",
		"listen = 0.0.0.0:25, [::]:25",
		"directory = /var/spool/ferry",
		"relay_domains = customer-one.example, .customer-one.example, customer-two.example",
		"[domain customer-one.example]",
		"etrn_networks = 198.51.100.0/28, 2001:db8:7::/48",
		"destination = syslog",
		"# configuration OK",
	};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		cr_expect_not_null(find_line(res.out, lines[i]), "no line '%s' in:\n%s", lines[i],
				   res.out);
	harness_cleanup(&fi);
}

/* And it runs: the same file with what cannot be had in a test put
 * otherwise (a loopback port, a temporary spool, stderr, no DNS beyond
 * loopback, no metrics port, a max_connections this machine's descriptor
 * limit holds) takes mail for a held customer and refuses an ETRN from
 * outside its etrn_networks. */
Test(ferryd, example_production_config_runs_a_relay)
{
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, NULL), 0);
	char listen[64];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", fi.port);
	const char *user = geteuid() == 0 ? example_user() : NULL;
	const struct config_edit edits[] = {
		{"listen", listen},
		{"directory", fi.spool},
		{"user", user},
		{"group", user != NULL ? example_group(user) : NULL},
		{"max_connections", HARNESS_MAX_CONNECTIONS_TEXT},
		{"address", ""},
		{"destination", "stderr"},
	};
	cr_assert_eq(harness_write_file(fi.config,
					edit_config(example_config(), edits,
						    sizeof(edits) / sizeof(edits[0]),
						    "[delivery]\ndns_servers = 127.0.0.1:1\n")),
		     0);
	cr_assert_eq(chmod(fi.dir, 0755), 0); /* its user reaches the spool */
	cr_assert_eq(harness_start(&fi, START_MS), 0, "the example did not start");
	if (user != NULL)
		cr_expect_eq(harness_log_count(&fi, "event=privileges_dropped"), 1, "%s",
			     harness_log(&fi));
	struct smtp_client c;
	connect_greeted(&c, &fi); /* after greeting_delay */
	open_transaction(&c, "alice@client.example", "bob@customer-one.example");
	expect_command(&c, "DATA", 354, NULL);
	char id[32];
	send_body_queued(&c, "Subject: held for ETRN\r\n\r\nHello.\r\n.\r\n", id);
	expect_command(&c, "ETRN customer-one.example", 459, "4.7.1");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	check_spooled(&fi, id, "alice@client.example", "bob@customer-one.example");
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, listen_address_in_use_is_reported)
{
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, NULL), 0);
	char ferryd[PATH_MAX];
	harness_ferryd_path(ferryd, sizeof(ferryd));
	char *argv[] = {ferryd, "-c", fi.config, NULL};
	static char out[4096], err[16384];

	/* Another program (not a ferryd) holds the port. */
	int other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(other, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fi.port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(other, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(other, 16), 0);
	int status = harness_run(argv, out, sizeof(out), err, sizeof(err), 30000);
	cr_assert(status > 0 && status < 128, "ferryd exited %d with its port taken:\n%s", status,
		  err);
	cr_assert_not_null(strstr(err, "bind"), "no 'bind' in: %s", err);
	cr_assert_null(strstr(err, "Sanitizer"), "%s", err);
	close(other);

	/* Another ferryd holds it: the second must not share the port. */
	cr_assert_eq(harness_start(&fi, START_MS), 0);
	status = harness_run(argv, out, sizeof(out), err, sizeof(err), 30000);
	cr_assert(status > 0 && status < 128, "a second ferryd on the same address exited %d:\n%s",
		  status, err);
	cr_assert_not_null(strstr(err, "bind"), "no 'bind' in: %s", err);
	cr_assert_null(strstr(err, "Sanitizer"), "%s", err);
	/* The first one is unharmed. */
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

/* ferryd's soft RLIMIT_NOFILE (from /proc), or -1. */
static long ferryd_nofile_soft(const struct ferry_instance *fi)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)fi->pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	long soft = -1;
	while (soft < 0 && fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "Max open files %ld", &soft) != 1)
			soft = -1;
	fclose(f);
	return soft;
}

/* Left at its default, max_connections fits the machine: ferryd starts,
 * with as many as its descriptors hold, and says so. */
Test(ferryd, default_max_connections_fits_the_descriptor_limit)
{
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, NULL), 0);
	/* The harness's config sets max_connections: take it out again. */
	FILE *f = fopen(fi.config, "r");
	cr_assert_not_null(f);
	static char text[8192], kept[8192];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	kept[0] = '\0';
	for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n"))
		if (strncmp(line, "max_connections =", 17) != 0)
			strcat(strcat(kept, line), "\n");
	cr_assert_eq(harness_write_file(fi.config, kept), 0);
	fi.nofile_soft = fi.nofile_hard = 2048;
	fi.drop_capabilities = 1ull << CAP_SYS_RESOURCE; /* root would raise the hard limit */
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not start with its defaults");
	const char *log = harness_log(&fi);
	const char *event = strstr(log, "event=max_connections_lowered max_connections=");
	cr_assert_not_null(event, "%s", log);
	unsigned fitted = 0;
	cr_assert_eq(sscanf(event, "event=max_connections_lowered max_connections=%u", &fitted), 1);
	cr_expect(fitted > 1000 && fitted < 2048, "max_connections became %u", fitted);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, descriptors_short_of_max_connections_are_refused_at_start)
{
	/* 1,000 connections cannot fit in 512 descriptors: ferryd says so
	 * at start, not with clients hanging at the 500th. Root could raise
	 * the hard limit, but not without CAP_SYS_RESOURCE (a systemd unit's
	 * bounding set does not have it). */
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, "[limits]\nmax_connections = 1000\n"), 0);
	static struct check_result res;
	check_config(fi.config, &res);
	unsigned long long needed = 0;
	const char *figure = strstr(res.out, "# file descriptors: ");
	cr_assert(figure != NULL && sscanf(figure, "# file descriptors: %llu", &needed) == 1, "%s",
		  res.out);
	fi.nofile_soft = 300;
	fi.nofile_hard = 512;
	fi.drop_capabilities = 1ull << CAP_SYS_RESOURCE;
	cr_assert_eq(harness_start(&fi, START_MS), -1, "ferryd started with 512 descriptors");
	cr_assert_eq(fi.exit_status, 1, "ferryd exited %d", fi.exit_status);
	const char *log = harness_log(&fi);
	char says[128];
	snprintf(says, sizeof(says), "max_connections = 1000 needs %llu file descriptors", needed);
	cr_expect_not_null(strstr(log, says), "not '%s' in: %s", says, log);
	cr_expect_not_null(strstr(log, "hard limit RLIMIT_NOFILE is 512 (soft 300)"), "%s", log);
	snprintf(says, sizeof(says), "LimitNOFILE=%llu", needed);
	cr_expect_not_null(strstr(log, says), "not '%s' in: %s", says, log);
	cr_expect_not_null(strstr(log, "or lower max_connections to "), "%s", log);
	if (geteuid() == 0) {
		snprintf(says, sizeof(says),
			 "as root, ferryd could not raise the hard limit to %llu", needed);
		cr_expect_not_null(strstr(log, says), "not '%s' in: %s", says, log);
	}
	cr_expect_null(strstr(log, "Sanitizer"), "%s", log);

	/* A hard limit that holds them: the soft one is raised to it. */
	fi.nofile_soft = 256;
	fi.nofile_hard = 2048;
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not start with 2048 descriptors");
	cr_expect_eq(ferryd_nofile_soft(&fi), 2048, "ferryd's soft limit is %ld",
		     ferryd_nofile_soft(&fi));
	snprintf(says, sizeof(says),
		 "event=nofile_raised soft=2048 hard=2048 was_soft=256 was_hard=2048 needed=%llu",
		 needed);
	cr_expect_not_null(strstr(harness_log(&fi), says), "not '%s' in: %s", says,
			   harness_log(&fi));
	struct smtp_client c;
	connect_greeted(&c, &fi);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, clients_arriving_when_descriptors_ran_out_get_421_or_a_close)
{
#ifndef FERRY_FAULT_POINTS
	cr_skip_test("needs a build with fault points (Debug or Sanitize)");
#endif
	/* Descriptors run out under a running ferryd (a test-build fault
	 * point takes all but LEFT of them): the kernel keeps new connections
	 * queued while accept fails, and their clients must not wait there
	 * in silence. */
	enum { CLIENTS = 40, LEFT = 6, ANSWER_MS = 5000 };
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, "[limits]\nmax_connections = 200\n"), 0);
	fi.nofile_hard = 1024;
	char left[64];
	snprintf(left, sizeof(left), "FERRY_FAULT_DESCRIPTORS=%d", LEFT);
	const char *const env[] = {left, NULL};
	cr_assert_eq(harness_start_env(&fi, START_MS, env), 0, "ferryd did not start");
	int64_t taken_by = harness_now_ms() + START_MS;
	while (harness_log_count(&fi, "event=fault_descriptors_taken") == 0 &&
	       harness_now_ms() < taken_by)
		harness_sleep_ms(20);
	cr_assert_eq(harness_log_count(&fi, "event=fault_descriptors_taken"), 1,
		     "the fault point took no descriptors (not a test build?)");
	size_t log_from = harness_log_size(&fi);

	static struct smtp_client c[CLIENTS];
	int greeted = 0, refused = 0, closed = 0, silent = 0;
	int64_t t0 = harness_now_ms();
	for (int i = 0; i < CLIENTS; i++) {
		/* A reset of the queue may come before the connect is seen
		 * done: a prompt close too. */
		int r = smtp_client_connect(&c[i], fi.port, IO_MS);
		cr_assert(r == 0 || r == -ECONNRESET || r == -ECONNREFUSED, "connect %d: %s", i,
			  strerror(-r));
	}
	int64_t deadline = harness_now_ms() + ANSWER_MS;
	for (int i = 0; i < CLIENTS; i++) {
		struct smtp_reply r;
		if (c[i].fd < 0) {
			closed++;
			continue;
		}
		int64_t rest = deadline - harness_now_ms();
		c[i].timeout_ms = rest > 0 ? (int)rest : 1;
		int code = smtp_client_read_reply(&c[i], &r);
		if (code == 220) {
			greeted++;
		} else if (code == 421) {
			cr_expect(reply_is(&r, 421, "4.3.2"), "client %d got '%s'", i, r.text);
			cr_expect_not_null(strstr(r.text, "relay.test"), "no host name in '%s'",
					   r.text);
			refused++;
		} else if (code == SMTP_REPLY_CLOSED || code == SMTP_REPLY_ERROR) {
			closed++;
		} else {
			cr_expect_eq(code, SMTP_REPLY_TIMEOUT, "client %d got '%s'", i, r.text);
			silent++;
		}
	}
	int64_t took = harness_now_ms() - t0;
	cr_expect_eq(
		silent, 0,
		"%d of %d clients got nothing within %d ms (%d greeted, %d refused, %d closed)",
		silent, CLIENTS, ANSWER_MS, greeted, refused, closed);
	/* A spare given up may go to the other worker's accept instead (the
	 * descriptor table is the process's): LEFT and one per worker. */
	cr_expect_leq(greeted, LEFT + 2, "%d greeted with %d descriptors left", greeted, LEFT);
	cr_expect_gt(refused, 0, "no client was told 421 (%d greeted, %d closed)", greeted, closed);

	/* The warnings come at a bounded rate: a line a second per listener
	 * (two workers, one listener each) at most. */
	const char *log = harness_log_since(&fi, log_from);
	int lines = 0;
	for (const char *p = strstr(log, "event=accept_error"); p != NULL;
	     p = strstr(p + 1, "event=accept_error"))
		lines++;
	cr_expect_leq(lines, 2 * (int)(took / 1000 + 2), "%d accept_error lines in %lld ms", lines,
		      (long long)took);

	/* Descriptors given back (the sessions close as the clients go): a
	 * client is served again. */
	for (int i = 0; i < CLIENTS; i++)
		smtp_client_close(&c[i]);
	bool served = false;
	for (int attempt = 0; attempt < 50 && !served; attempt++) {
		struct smtp_client again;
		struct smtp_reply r;
		if (smtp_client_connect(&again, fi.port, IO_MS) == 0) {
			served = smtp_client_read_reply(&again, &r) == 220;
			smtp_client_close(&again);
		}
		if (!served)
			harness_sleep_ms(100);
	}
	cr_expect(served, "no client was greeted once the descriptors were given back");
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, client_served_the_moment_ferryd_listens_gets_its_message_queued)
{
	/* Many workers, so some start well after the first one listens; the
	 * recipients' domains spread over every worker's shards. A session
	 * must never hand the store a recipient for a worker not yet there. */
	enum { ROUNDS = 3, DOMAINS = 16 };
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, NULL), 0);
	char text[2 * PATH_MAX];
	snprintf(text, sizeof(text),
		 "[server]\nlisten = 127.0.0.1:%d\nhostname = relay.test\nworkers = 16\n"
		 "[limits]\nmax_connections = %d\n"
		 "[spool]\ndirectory = %s\n"
		 /* The mail stays queued, and no DNS query leaves loopback. */
		 "[delivery]\ndns_servers = 127.0.0.1:1\nretry_initial = 1h\n",
		 fi.port, HARNESS_MAX_CONNECTIONS, fi.spool);
	cr_assert_eq(harness_write_file(fi.config, text), 0);
	char ferryd[PATH_MAX];
	harness_ferryd_path(ferryd, sizeof(ferryd));
	char *argv[] = {ferryd, "-c", fi.config, NULL};
	char envelope[4096];
	size_t len = (size_t)snprintf(envelope, sizeof(envelope),
				      "EHLO client.example\r\nMAIL FROM:<a@client.example>\r\n");
	for (int d = 0; d < DOMAINS; d++)
		len += (size_t)snprintf(envelope + len, sizeof(envelope) - len,
					"RCPT TO:<r@d%d.example>\r\n", d);
	snprintf(envelope + len, sizeof(envelope) - len, "DATA\r\n");
	for (int round = 0; round < ROUNDS; round++) {
		pid_t pid = harness_spawn(argv, fi.log);
		cr_assert_gt(pid, 0);
		/* Connect as soon as anything listens: no wait for start-up. */
		struct smtp_client c;
		bool connected = false;
		int64_t deadline = harness_now_ms() + START_MS;
		while (!connected && harness_now_ms() < deadline) {
			connected = smtp_client_connect(&c, fi.port, IO_MS) == 0;
			if (!connected)
				harness_sleep_ms(1);
		}
		cr_assert(connected, "round %d: ferryd never listened", round);
		cr_assert_eq(smtp_client_send_str(&c, envelope), 0);
		expect_reply(&c, 220, NULL, "greeting");
		expect_reply(&c, 250, NULL, "EHLO");
		expect_reply(&c, 250, "2.1.0", "MAIL");
		for (int d = 0; d < DOMAINS; d++)
			expect_reply(&c, 250, "2.1.5", "RCPT");
		expect_reply(&c, 354, NULL, "DATA");
		char id[32];
		send_body_queued(
			&c, "Subject: early\r\n\r\nsent the moment ferryd listened\r\n.\r\n", id);
		expect_command(&c, "QUIT", 221, NULL);
		smtp_client_close(&c);
		kill(pid, SIGTERM);
		int status = harness_wait_pid(pid, STOP_MS);
		if (status != 0)
			harness_dump_log(&fi);
		cr_assert_eq(status, 0, "round %d: ferryd exited %d after SIGTERM", round, status);
		cr_assert_eq(harness_count_spool(&fi), round + 1);
	}
}

Test(ferryd, unusable_spool_is_reported)
{
	struct ferry_instance fi;
	char extra[PATH_MAX + 64], blocker[PATH_MAX + 16];
	cr_assert_eq(harness_setup(&fi, NULL), 0);
	/* A regular file where the spool's parent directory should be. */
	snprintf(blocker, sizeof(blocker), "%s/not-a-directory", fi.dir);
	cr_assert_eq(harness_write_file(blocker, "x\n"), 0);
	snprintf(extra, sizeof(extra), "[spool]\ndirectory = %s/spool\n", blocker);
	snprintf(fi.config, sizeof(fi.config), "%s/unusable-spool.conf", fi.dir);
	char text[2 * PATH_MAX];
	snprintf(text, sizeof(text),
		 "[server]\nlisten = 127.0.0.1:%d\n[limits]\nmax_connections = %d\n%s", fi.port,
		 HARNESS_MAX_CONNECTIONS, extra);
	cr_assert_eq(harness_write_file(fi.config, text), 0);
	char ferryd[PATH_MAX];
	harness_ferryd_path(ferryd, sizeof(ferryd));
	char *argv[] = {ferryd, "-c", fi.config, NULL};
	static char out[4096], err[16384];
	int status = harness_run(argv, out, sizeof(out), err, sizeof(err), 30000);
	cr_assert(status > 0 && status < 128, "ferryd exited %d with no usable spool:\n%s", status,
		  err);
	cr_assert_not_null(strstr(err, blocker), "the message does not name the spool: %s", err);
	cr_assert_null(strstr(err, "Sanitizer"), "%s", err);
}

/* ---- 9. SMTP smuggling ------------------------------------------------------------------- */

Test(ferryd, smuggled_end_of_data_is_refused_whole)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&c, "Subject: innocent\r\n"
					      "\r\n"
					      "hello\n"
					      ".\n"
					      "MAIL FROM:<evil@x>\r\n"
					      "RCPT TO:<victim@relay.example>\r\n"
					      "DATA\r\n"
					      "Subject: smuggled\r\n"
					      "\r\n"
					      "evil\r\n"
					      ".\r\n"),
		     0);
	expect_reply(&c, 550, "5.6.0", "end of the smuggling body");
	/* Exactly one reply: nothing after the bare-LF dot was run as a command. */
	cr_assert(smtp_client_quiet(&c, 500), "more replies after the 550");
	expect_command(&c, "RCPT TO:<victim@relay.example>", 503, "5.5.1");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	/* Neither the innocent part nor the smuggled one: checked once
	 * ferryd has finished with everything. */
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_count_spool(&fi), 0, "a refused message is in the spool");
}

/* ---- another protocol on the SMTP port ------------------------------------------------- */

/* The reply is the only one, and the connection closes right after it. */
static void expect_not_smtp(struct smtp_client *c, const char *what)
{
	struct smtp_reply r;
	char want[256];
	snprintf(want, sizeof(want),
		 "554 5.7.0 relay.test Error: %s received, but this is an SMTP server; closing",
		 what);
	int64_t t0 = harness_now_ms();
	cr_assert_eq(smtp_client_read_reply(c, &r), 554, "%s got '%s'", what, r.text);
	cr_assert_str_eq(r.text, want);
	cr_assert_eq(smtp_client_read_reply(c, &r), SMTP_REPLY_CLOSED,
		     "after the 554 to a %s: '%s'", what, r.text);
	cr_assert_lt(harness_now_ms() - t0, 5000, "%s: not closed at once", what);
}

Test(ferryd, tls_and_http_clients_are_told_and_closed)
{
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);

	/* A TLS 1.3 ClientHello as a client sends it on port 465, cut short:
	 * record header, handshake header, version, random, session id, the
	 * start of the cipher suites. It holds no LF, and its client waits for
	 * a ServerHello: only its first octets can tell. */
	static const unsigned char hello[] = {
		0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x8e, 0x21,
		0x5d, 0xc4, 0x9b, 0x07, 0x33, 0xe2, 0x51, 0x6f, 0xa9, 0x1c, 0x44, 0xd8, 0x02,
		0x7b, 0x90, 0x36, 0xe5, 0x48, 0x11, 0xcd, 0x6a, 0xf3, 0x29, 0x85, 0x5e, 0xb7,
		0x0c, 0x73, 0xda, 0x20, 0x4f, 0x91, 0x38, 0xc2, 0x66, 0x1d, 0xe8, 0x57, 0xa4,
		0x03, 0xbf, 0x72, 0x19, 0xee, 0x45, 0x8a, 0x30, 0xd7, 0x6c, 0x12, 0xf9, 0x4b,
		0xa0, 0x27, 0x5c, 0x93, 0x08, 0xe1, 0x3e, 0xb5, 0x61, 0xcc, 0x00, 0x3e, 0x13,
		0x02, 0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9,
	};
	struct smtp_client c;
	connect_greeted(&c, &fi);
	cr_assert_eq(smtp_client_send(&c, hello, sizeof(hello)), 0);
	expect_not_smtp(&c, "TLS handshake");
	smtp_client_close(&c);

	/* A web client: one reply for the whole request, not one per line. */
	connect_greeted(&c, &fi);
	cr_assert_eq(smtp_client_send_str(&c, "GET / HTTP/1.1\r\n"
					      "Host: 127.0.0.1\r\n"
					      "User-Agent: curl/7.88.1\r\n"
					      "Accept: */*\r\n"
					      "\r\n"),
		     0);
	expect_not_smtp(&c, "HTTP request");
	smtp_client_close(&c);

	cr_assert_eq(harness_log_count(&fi, "event=not_smtp"), 2, "%s", harness_log(&fi));
	cr_assert_eq(harness_log_count(&fi, "protocol=tls"), 1);
	cr_assert_eq(harness_log_count(&fi, "protocol=http"), 1);
	stop_ferryd_cleanly(&fi);
}

Test(ferryd, nul_in_the_body_is_refused_whole)
{
	/* CRLF NUL "." CRLF: an end of data to a next hop that drops NULs. */
	static const char body[] = "Subject: innocent\r\n"
				   "\r\n"
				   "hello\r\n"
				   "\0.\r\n"
				   "MAIL FROM:<evil@x>\r\n"
				   "RCPT TO:<victim@relay.example>\r\n"
				   "DATA\r\n"
				   "Subject: smuggled\r\n"
				   "\r\n"
				   "evil\r\n"
				   ".\r\n";
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	struct smtp_client c;
	struct smtp_reply r;
	connect_greeted(&c, &fi);
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send(&c, body, sizeof(body) - 1), 0);
	cr_assert_eq(smtp_client_read_reply(&c, &r), 550, "end of a body with a NUL: %s", r.text);
	cr_assert_str_eq(r.text, "550 5.6.0 Message refused: NUL character in message data (not "
				 "allowed in mail, and a next hop may drop it)");
	cr_assert(smtp_client_quiet(&c, 500), "more replies after the 550");
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
	stop_ferryd_cleanly(&fi);
	cr_assert_eq(harness_count_spool(&fi), 0, "a message with a NUL is in the spool");
}

/* ---- streaming a large body ------------------------------------------------------------ */

Test(ferryd, large_message_is_streamed_to_the_spool_whole, .timeout = 120)
{
	enum { LINE = 100, LINES = 80000 }; /* 8 MB: far past every buffer on the way */
	struct ferry_instance fi;
	start_ferryd(&fi, NULL);
	struct smtp_client c;
	connect_greeted(&c, &fi);
	c.timeout_ms = 60000;
	open_transaction(&c, "a@client.example", "b@relay.example");
	expect_command(&c, "DATA", 354, NULL);
	static char body[(size_t)LINE * LINES + 64];
	size_t len = 0;
	len += (size_t)snprintf(body, sizeof(body), "Subject: large\r\n\r\n");
	size_t text_start = len;
	for (unsigned i = 0; i < LINES; i++) {
		int n = snprintf(body + len, sizeof(body) - len, "%08u ", i);
		memset(body + len + n, 'a' + (char)(i % 26), LINE - 2 - (size_t)n);
		len += LINE - 2;
		memcpy(body + len, "\r\n", 2);
		len += 2;
	}
	size_t text_len = len - text_start;
	memcpy(body + len, ".\r\n", 3);
	len += 3;
	cr_assert_eq(smtp_client_send(&c, body, len), 0, "cannot send an 8 MB body");
	struct smtp_reply r;
	char id[32];
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "end of DATA: %s", r.text);
	cr_assert(smtp_reply_queue_id(&r, id, sizeof(id)), "%s", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);

	struct spooled stored = check_spooled(&fi, id, "a@client.example", "b@relay.example");
	cr_assert_geq(stored.len, text_len);
	cr_assert(memcmp(stored.body + stored.len - text_len, body + text_start, text_len) == 0,
		  "the stored body differs from the one sent");
	stop_ferryd_cleanly(&fi);
}
