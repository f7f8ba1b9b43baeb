/*
 * End-to-end tests of ferry-etrn, the ETRN client: the built program (from
 * $FERRY_BUILD_DIR) is run as a customer site's network-up hook would run
 * it, against a scripted ETRN server on loopback
 * (tests/integration/fake_etrn.py) that records every command line it
 * receives. What a user notices is checked: the exit status, the lines
 * printed, and what the server was sent, connection by connection.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/harness.h"

#define LISTEN_MS 20000 /* fake_etrn.py up and accepting */
#define RUN_MS    20000 /* one ferry-etrn run */
#define OUT_SIZE  65536

/* ---- the fake ETRN server ----------------------------------------------------------- */

struct fake {
	char dir[PATH_MAX];
	char record[PATH_MAX + 16]; /* every command line received */
	char out[PATH_MAX + 16];    /* its stdout and stderr */
	char server[64];            /* "127.0.0.1:PORT", ferry-etrn's SERVER */
	int port;
	pid_t pid;
};

static struct fake *fake_current;

static void suite_fini(void)
{
	harness_cleanup_all();
	if (fake_current != NULL) {
		unlink(fake_current->record);
		unlink(fake_current->out);
		rmdir(fake_current->dir);
	}
}

TestSuite(ferry_etrn, .fini = suite_fini, .timeout = 60);

/* Start fake_etrn.py listening on `address` with more options
 * (NULL-terminated), and wait until it listens. */
static void fake_start_at(struct fake *f, const char *address, const char *const *options)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-etrn-XXXXXX");
	cr_assert_not_null(mkdtemp(f->dir));
	fake_current = f;
	snprintf(f->record, sizeof(f->record), "%s/record", f->dir);
	snprintf(f->out, sizeof(f->out), "%s/out", f->dir);
	char script[PATH_MAX];
	const char *src = getenv("FERRY_SOURCE_DIR");
	snprintf(script, sizeof(script), "%s/tests/integration/fake_etrn.py", src ? src : ".");
	const char *argv[32] = {"python3",    script, "--record",  f->record,
				"--lifetime", "55",   "--address", address};
	int n = 8;
	for (const char *const *o = options; o != NULL && *o != NULL && n < 30; o++)
		argv[n++] = *o;
	argv[n] = NULL;
	f->pid = harness_spawn((char *const *)argv, f->out);
	cr_assert_gt(f->pid, 0, "cannot start fake_etrn.py");
	for (int64_t end = harness_now_ms() + LISTEN_MS; harness_now_ms() < end;) {
		FILE *o = fopen(f->out, "r");
		if (o != NULL) {
			char line[256];
			while (f->port == 0 && fgets(line, sizeof(line), o))
				if (sscanf(line, "listening %d", &f->port) != 1)
					f->port = 0;
			fclose(o);
		}
		if (f->port > 0) {
			snprintf(f->server, sizeof(f->server), "%s%s%s:%d",
				 strchr(address, ':') ? "[" : "", address,
				 strchr(address, ':') ? "]" : "", f->port);
			return;
		}
		harness_sleep_ms(20);
	}
	cr_assert_fail("fake_etrn.py did not listen");
}

static void fake_start(struct fake *f, const char *const *options)
{
	fake_start_at(f, "127.0.0.1", options);
}

/* Everything the server received so far, "# connection N" lines
 * included. Belongs to this file: valid until the next call. */
static const char *fake_record(const struct fake *f)
{
	static char text[OUT_SIZE];
	text[0] = '\0';
	FILE *r = fopen(f->record, "r");
	if (r == NULL)
		return text;
	size_t n = fread(text, 1, sizeof(text) - 1, r);
	text[n] = '\0';
	fclose(r);
	return text;
}

static int count_of(const char *text, const char *what)
{
	int n = 0;
	for (const char *p = strstr(text, what); p != NULL; p = strstr(p + 1, what))
		n++;
	return n;
}

/* ---- running ferry-etrn --------------------------------------------------------------- */

struct run {
	int status;
	char out[OUT_SIZE], err[OUT_SIZE];
	int64_t took_ms;
};

/* Run ferry-etrn with its arguments (NULL-terminated). */
static void run_etrn_argv(struct run *r, const char *const *args)
{
	char program[PATH_MAX];
	const char *argv[32] = {harness_build_path("ferry-etrn", program, sizeof(program))};
	int n = 1;
	for (const char *const *a = args; *a != NULL && n < 31; a++)
		argv[n++] = *a;
	argv[n] = NULL;
	r->out[0] = r->err[0] = '\0';
	int64_t start = harness_now_ms();
	r->status = harness_run((char *const *)argv, r->out, sizeof(r->out), r->err, sizeof(r->err),
				RUN_MS);
	r->took_ms = harness_now_ms() - start;
}

#define RUN_ETRN(r, ...) run_etrn_argv(r, (const char *const[]){__VA_ARGS__, NULL})

static void expect_status(const struct run *r, int status)
{
	cr_assert_eq(r->status, status,
		     "ferry-etrn exited %d, expected %d\nstdout:\n%s\nstderr:\n%s", r->status,
		     status, r->out, r->err);
}

static void expect_in(const char *text, const char *what, const char *which)
{
	cr_expect_not_null(strstr(text, what), "no '%s' in %s:\n%s", what, which, text);
}

/* ---- accepted: exit 0 ------------------------------------------------------------------ */

Test(ferry_etrn, every_accepting_code_exits_0_and_each_reply_is_printed)
{
	static struct fake f;
	static struct run r;
	fake_start(
		&f,
		(const char *const[]){
			"--reply", "a.test=250 2.0.0 OK, queuing for node a.test started",
			"--reply", "b.test=251 2.0.0 OK, no messages waiting for node b.test",
			"--reply", "c.test=252 2.0.0 OK, pending messages for node c.test started",
			"--reply",
			"d.test=253 2.0.0 OK, 5 pending messages for node d.test started", NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test", "b.test", "c.test", "d.test");
	expect_status(&r, 0);
	cr_expect_str_eq(r.out,
			 "a.test: 250 2.0.0 OK, queuing for node a.test started\n"
			 "b.test: 251 2.0.0 OK, no messages waiting for node b.test\n"
			 "c.test: 252 2.0.0 OK, pending messages for node c.test started\n"
			 "d.test: 253 2.0.0 OK, 5 pending messages for node d.test started\n");
	cr_expect_str_eq(r.err, "", "stderr on success: %s", r.err);
}

Test(ferry_etrn, sends_ehlo_then_one_etrn_per_name_as_given_then_quit)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, NULL);
	RUN_ETRN(&r, "--helo", "gw.client.test", f.server, "example.org", "@example.net",
		 "#customer42");
	expect_status(&r, 0);
	cr_expect_str_eq(fake_record(&f), "# connection 1\n"
					  "EHLO gw.client.test\n"
					  "ETRN example.org\n"
					  "ETRN @example.net\n"
					  "ETRN #customer42\n"
					  "QUIT\n");
}

Test(ferry_etrn, ehlo_names_this_host_by_default_and_port_option_works)
{
	static struct fake f;
	static struct run r;
	char host[256] = "", expected[512], port[16];
	cr_assert_eq(gethostname(host, sizeof(host)), 0);
	fake_start(&f, NULL);
	snprintf(port, sizeof(port), "%d", f.port);
	RUN_ETRN(&r, "-p", port, "127.0.0.1", "example.org");
	expect_status(&r, 0);
	snprintf(expected, sizeof(expected), "# connection 1\nEHLO %s\nETRN example.org\nQUIT\n",
		 host);
	cr_expect_str_eq(fake_record(&f), expected);
}

Test(ferry_etrn, multi_line_reply_is_read_whole)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){"--reply",
					     "a.test=253-2.0.0 OK, 2 pending messages\\n"
					     "253 2.0.0 for node a.test started",
					     NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test", "b.test");
	expect_status(&r, 0);
	cr_expect_str_eq(r.out, "a.test: 253 2.0.0 OK, 2 pending messages for node a.test started\n"
				"b.test: 250 2.0.0 OK, queuing for node b.test started\n");
	cr_expect_eq(count_of(fake_record(&f), "ETRN b.test\n"), 1,
		     "the next ETRN was not sent:\n%s", fake_record(&f));
}

Test(ferry_etrn, quiet_prints_nothing_on_success)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, NULL);
	RUN_ETRN(&r, "-q", "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 0);
	cr_expect_str_eq(r.out, "");
	cr_expect_str_eq(r.err, "");
}

/* ---- refusals: 2, 3, 4 ------------------------------------------------------------------ */

Test(ferry_etrn, not_supported_exits_2)
{
	static struct fake f;
	static struct run r;
	fake_start(&f,
		   (const char *const[]){"--reply", "a.test=500 5.5.2 Syntax Error", "--reply",
					 "b.test=501 5.5.4 Syntax Error in Parameters", "--reply",
					 "c.test=502 5.5.1 ETRN not implemented", NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 2);
	expect_in(r.err, "ferry-etrn: a.test: the server does not support ETRN (500 5.5.2",
		  "stderr");
	RUN_ETRN(&r, "--helo", "client.test", f.server, "b.test");
	expect_status(&r, 2);
	expect_in(r.err, "ferry-etrn: b.test: ", "stderr");
	expect_in(r.err, "(501 5.5.4 Syntax Error in Parameters)", "stderr");
	RUN_ETRN(&r, "--helo", "client.test", f.server, "c.test");
	expect_status(&r, 2);
	expect_in(r.err, "does not support ETRN (502 5.5.1 ETRN not implemented)", "stderr");
}

Test(ferry_etrn, refused_by_policy_exits_3)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){
			       "--reply", "a.test=459 4.7.1 Node a.test not allowed: not yours",
			       "--reply", "b.test=530 5.7.0 Authentication required", NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 3);
	expect_in(r.err,
		  "ferry-etrn: a.test: refused by the server's policy "
		  "(459 4.7.1 Node a.test not allowed: not yours)",
		  "stderr");
	RUN_ETRN(&r, "--helo", "client.test", f.server, "b.test");
	expect_status(&r, 3);
	expect_in(r.err, "b.test: refused by the server's policy (530 5.7.0", "stderr");
}

Test(ferry_etrn, cannot_queue_exits_4)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){
			       "--reply",
			       "a.test=458 4.3.0 Unable to queue messages for node a.test", NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 4);
	expect_in(r.out, "a.test: 458 4.3.0 Unable to queue messages for node a.test\n", "stdout");
	expect_in(r.err, "ferry-etrn: a.test: the server cannot queue mail for this name",
		  "stderr");
}

Test(ferry_etrn, every_name_is_tried_and_the_worst_status_wins)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){
			       "--reply", "a.test=501 5.5.4 Syntax Error in Parameters", "--reply",
			       "b.test=458 4.3.0 Unable to queue messages for node b.test",
			       "--reply", "c.test=459 4.7.1 Node c.test not allowed: no", "--reply",
			       "d.test=253 2.0.0 OK, 1 pending messages for node d.test started",
			       NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test", "b.test", "c.test", "d.test");
	expect_status(&r, 4);
	cr_expect_str_eq(fake_record(&f), "# connection 1\n"
					  "EHLO client.test\n"
					  "ETRN a.test\n"
					  "ETRN b.test\n"
					  "ETRN c.test\n"
					  "ETRN d.test\n"
					  "QUIT\n");
	cr_expect_eq(count_of(r.out, "\n"), 4, "not one line per name:\n%s", r.out);
	expect_in(r.err, "a.test: ", "stderr");
	expect_in(r.err, "b.test: the server cannot queue", "stderr");
	expect_in(r.err, "c.test: refused by the server's policy", "stderr");
	cr_expect_null(strstr(r.err, "d.test"), "d.test was accepted:\n%s", r.err);
}

/* ---- trouble: 1 ------------------------------------------------------------------------ */

Test(ferry_etrn, connection_refused_exits_1)
{
	static struct run r;
	char server[64];
	int port = harness_free_port(); /* nothing listens there */
	cr_assert_gt(port, 0);
	snprintf(server, sizeof(server), "127.0.0.1:%d", port);
	RUN_ETRN(&r, "--helo", "client.test", server, "a.test");
	expect_status(&r, 1);
	cr_expect_str_eq(r.out, "");
	expect_in(r.err, "cannot connect: Connection refused", "stderr");
}

Test(ferry_etrn, reply_421_exits_1_and_ends_the_conversation)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){"--reply", "b.test=421 4.3.2 shutting down", NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test", "b.test", "c.test");
	expect_status(&r, 1);
	cr_expect_str_eq(fake_record(&f), "# connection 1\n"
					  "EHLO client.test\n"
					  "ETRN a.test\n"
					  "ETRN b.test\n");
	expect_in(r.out, "a.test: 250 ", "stdout");
	expect_in(r.err, "the server is closing the connection (421 4.3.2 shutting down)",
		  "stderr");
	expect_in(r.err, "ferry-etrn: c.test: not asked", "stderr");
}

Test(ferry_etrn, a_reply_that_never_comes_exits_1_in_time)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){"--reply", "a.test=stall", NULL});
	RUN_ETRN(&r, "--reply-timeout", "0.5", "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 1);
	expect_in(r.err, "ETRN: no answer within 0.5 s", "stderr");
	cr_expect_lt(r.took_ms, 5000, "took %lld ms", (long long)r.took_ms);
}

Test(ferry_etrn, usage_errors_exit_1)
{
	static struct run r;
	RUN_ETRN(&r, "127.0.0.1");
	expect_status(&r, 1);
	expect_in(r.err, "usage: ferry-etrn", "stderr");
	RUN_ETRN(&r, "--interval", "soon", "127.0.0.1", "a.test");
	expect_status(&r, 1);
	RUN_ETRN(&r, "127.0.0.1", "bad name");
	expect_status(&r, 1);
}

/* ---- EHLO ---------------------------------------------------------------------------- */

Test(ferry_etrn, helo_is_used_when_ehlo_is_refused)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){"--no-ehlo", NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 0);
	cr_expect_str_eq(fake_record(&f), "# connection 1\n"
					  "EHLO client.test\n"
					  "HELO client.test\n"
					  "ETRN a.test\n"
					  "QUIT\n");
}

Test(ferry_etrn, etrn_is_tried_when_ehlo_does_not_list_it)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){"--no-etrn-keyword", NULL});
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 0);
	cr_expect_str_eq(r.err, "", "said without -v: %s", r.err);
	expect_in(fake_record(&f), "ETRN a.test\n", "the record");
	RUN_ETRN(&r, "-v", "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 0);
	expect_in(r.err, "does not list ETRN", "stderr");
	/* The whole dialogue, both ways. */
	expect_in(r.err, "<<< 220 fake-etrn.test", "stderr");
	expect_in(r.err, ">>> EHLO client.test\n", "stderr");
	expect_in(r.err, ">>> ETRN a.test\n", "stderr");
	expect_in(r.err, "<<< 250 2.0.0 OK, queuing for node a.test started\n", "stderr");
	expect_in(r.err, ">>> QUIT\n", "stderr");
}

/* ---- --wait ---------------------------------------------------------------------------- */

Test(ferry_etrn, wait_polls_pending_names_until_nothing_is_waiting)
{
	static struct fake f;
	static struct run r;
	fake_start(&f,
		   (const char *const[]){
			   "--reply",
			   "a.test=253 2.0.0 OK, 3 pending messages for node a.test started",
			   "--reply",
			   "a.test=253 2.0.0 OK, 1 pending messages for node a.test started",
			   "--reply", "a.test=251 2.0.0 OK, no messages waiting for node a.test",
			   "--reply", "b.test=251 2.0.0 OK, no messages waiting for node b.test",
			   NULL});
	RUN_ETRN(&r, "--wait", "--interval", "0.2", "--timeout", "15", "--helo", "client.test",
		 f.server, "a.test", "b.test");
	expect_status(&r, 0);
	/* Three connections; b.test, with nothing waiting, is asked once. */
	cr_expect_str_eq(fake_record(&f), "# connection 1\n"
					  "EHLO client.test\n"
					  "ETRN a.test\n"
					  "ETRN b.test\n"
					  "QUIT\n"
					  "# connection 2\n"
					  "EHLO client.test\n"
					  "ETRN a.test\n"
					  "QUIT\n"
					  "# connection 3\n"
					  "EHLO client.test\n"
					  "ETRN a.test\n"
					  "QUIT\n");
	cr_expect_str_eq(r.out, "a.test: 253 2.0.0 OK, 3 pending messages for node a.test started\n"
				"b.test: 251 2.0.0 OK, no messages waiting for node b.test\n"
				"a.test: 253 2.0.0 OK, 1 pending messages for node a.test started\n"
				"a.test: 251 2.0.0 OK, no messages waiting for node a.test\n");
	cr_expect_geq(r.took_ms, 400, "two intervals of 0.2 s took %lld ms", (long long)r.took_ms);
}

Test(ferry_etrn, wait_exits_5_when_mail_is_still_pending_at_the_timeout)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, (const char *const[]){
			       "--reply",
			       "a.test=253 2.0.0 OK, 3 pending messages for node a.test started",
			       "--reply",
			       "b.test=251 2.0.0 OK, no messages waiting for node b.test", NULL});
	RUN_ETRN(&r, "--wait", "--interval", "0.2", "--timeout", "1", "--helo", "client.test",
		 f.server, "a.test", "b.test");
	expect_status(&r, 5);
	expect_in(r.err, "ferry-etrn: a.test: mail still pending after ", "stderr");
	expect_in(r.err, "(3 messages at the last reply)", "stderr");
	cr_expect_null(strstr(r.err, "b.test"), "b.test had nothing waiting:\n%s", r.err);
	int connections = count_of(fake_record(&f), "# connection");
	cr_expect(connections >= 3 && connections <= 6, "%d connections in 1 s at 0.2 s intervals",
		  connections);
	cr_expect_lt(r.took_ms, 3000, "--timeout 1 took %lld ms", (long long)r.took_ms);
}

Test(ferry_etrn, wait_does_not_poll_a_name_answered_250)
{
	static struct fake f;
	static struct run r;
	fake_start(&f, NULL);
	RUN_ETRN(&r, "--wait", "--interval", "0.2", "--timeout", "5", "--helo", "client.test",
		 f.server, "a.test");
	expect_status(&r, 0);
	cr_expect_eq(count_of(fake_record(&f), "# connection"), 1, "polled:\n%s", fake_record(&f));
	expect_in(r.err, "a.test: ", "stderr");
	expect_in(r.err, "cannot be polled", "stderr");
}

/* ---- the rest -------------------------------------------------------------------------- */

Test(ferry_etrn, help_exits_0_and_documents_the_exit_status)
{
	static struct run r;
	RUN_ETRN(&r, "--help");
	expect_status(&r, 0);
	expect_in(r.out, "SYNOPSIS", "--help");
	expect_in(r.out, "EXIT STATUS", "--help");
	expect_in(r.out, "RFC 1985", "--help");
}

Test(ferry_etrn, ipv6_server_in_brackets)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	bool have_v6 = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	if (!have_v6)
		cr_skip_test("no IPv6 loopback (::1) on this machine");
	static struct fake f;
	static struct run r;
	fake_start_at(&f, "::1", NULL);
	RUN_ETRN(&r, "--helo", "client.test", f.server, "a.test");
	expect_status(&r, 0);
	expect_in(fake_record(&f), "ETRN a.test\n", "the record");
}
