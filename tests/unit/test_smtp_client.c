/*
 * Tests for net/smtp_client: the reply parser and the client conversation.
 * Every test checks the exact octets the client would send and the exact
 * events it tells, since those are what a receiving server and the outbound
 * session see. Server input arrives split anywhere, so the conversation is
 * also replayed under thousands of random splits.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "net/smtp_client.h"

#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- reply parser ------------------------------------------------------- */

#define MAX_REPLIES 16

struct parse_run {
	struct smtp_reply replies[MAX_REPLIES];
	size_t count;
	int error; /* 0, or the -EPROTO that stopped the run */
};

/* Feed in[0..n) in pieces of `step` octets (0: whole). */
static void parse_run(struct parse_run *run, const char *in, size_t n, size_t step)
{
	struct smtp_reply_parser p;
	smtp_reply_parser_init(&p);
	memset(run, 0, sizeof(*run));
	size_t at = 0;
	while (at < n && run->error == 0) {
		size_t end = step == 0 || n - at < step ? n : at + step;
		while (at < end) {
			size_t used = 0;
			struct smtp_reply r;
			int rc = smtp_reply_parse(&p, in + at, end - at, &used, &r);
			cr_assert_leq(used, end - at);
			at += used;
			if (rc < 0) {
				run->error = rc;
				cr_assert_not_null(p.error);
				break;
			}
			if (rc == 0) {
				cr_assert_eq(at, end, "0 must consume all input");
				continue;
			}
			cr_assert_lt(run->count, MAX_REPLIES);
			run->replies[run->count++] = r;
		}
	}
}

static struct smtp_reply parse_one(const char *in)
{
	struct parse_run run;
	parse_run(&run, in, strlen(in), 0);
	cr_assert_eq(run.error, 0, "parse error for %s", in);
	cr_assert_eq(run.count, 1, "%zu replies for %s", run.count, in);
	return run.replies[0];
}

static int parse_error(const char *in, size_t n)
{
	struct parse_run run;
	parse_run(&run, in, n, 0);
	return run.error;
}

Test(smtp_reply, byte_at_a_time_equals_whole)
{
	static const char in[] = "220 mx.example ESMTP\r\n"
				 "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
				 "550-5.1.1 No such\n550 5.1.1 user\r\n"
				 "250\r\n"
				 "354 go ahead\r\n";
	struct parse_run whole, bytes;
	parse_run(&whole, S(in), 0);
	parse_run(&bytes, S(in), 1);
	cr_assert_eq(whole.error, 0);
	cr_assert_eq(whole.count, 5);
	cr_assert_eq(bytes.count, whole.count);
	cr_assert_eq(bytes.error, whole.error);
	for (size_t i = 0; i < whole.count; i++)
		cr_assert(memcmp(&whole.replies[i], &bytes.replies[i], sizeof(whole.replies[i])) ==
				  0,
			  "reply %zu differs", i);
	cr_assert_str_eq(whole.replies[1].text, "mx.example PIPELINING SIZE 100");
	cr_assert_str_eq(whole.replies[2].status, "5.1.1");
	cr_assert_str_eq(whole.replies[2].text, "No such user");
}

Test(smtp_reply, multiline_text_is_joined)
{
	struct smtp_reply r = parse_one("250-first line\r\n250-second\r\n250 third\r\n");
	cr_assert_eq(r.code, 250);
	cr_assert_str_eq(r.status, "");
	cr_assert_str_eq(r.text, "first line second third");
}

Test(smtp_reply, stops_after_one_reply)
{
	struct smtp_reply_parser p;
	struct smtp_reply r;
	size_t used = 0;
	smtp_reply_parser_init(&p);
	cr_assert_eq(smtp_reply_parse(&p, S("250 a\r\n251 b\r\n"), &used, &r), 1);
	cr_assert_eq(used, 7);
	cr_assert_eq(r.code, 250);
	cr_assert_eq(smtp_reply_parse(&p, S("251 b\r"), &used, &r), 0);
	cr_assert_eq(used, 6);
	cr_assert_eq(smtp_reply_parse(&p, S("\n"), &used, &r), 1);
	cr_assert_eq(r.code, 251);
	cr_assert_str_eq(r.text, "b");
}

Test(smtp_reply, enhanced_status_extracted)
{
	struct smtp_reply r = parse_one("550 5.1.1 <x@y>: Recipient address rejected\r\n");
	cr_assert_eq(r.code, 550);
	cr_assert_str_eq(r.status, "5.1.1");
	cr_assert_str_eq(r.text, "<x@y>: Recipient address rejected");

	r = parse_one("452-4.5.3 Too many\r\n452 4.5.3 recipients\r\n");
	cr_assert_str_eq(r.status, "4.5.3");
	cr_assert_str_eq(r.text, "Too many recipients");

	r = parse_one("250 2.0.0\r\n");
	cr_assert_str_eq(r.status, "2.0.0");
	cr_assert_str_eq(r.text, "");

	r = parse_one("250 2.123.456 Ok\r\n");
	cr_assert_str_eq(r.status, "2.123.456");

	/* Not RFC 3463: class 3, a part of four digits, two parts, no space. */
	static const char *const not_status[] = {"250 3.1.1 x\r\n", "250 2.1234.1 x\r\n",
						 "250 2.1 x\r\n", "250 2.1.1x\r\n",
						 "250 2..1 x\r\n"};
	for (size_t i = 0; i < sizeof(not_status) / sizeof(not_status[0]); i++) {
		r = parse_one(not_status[i]);
		cr_assert_str_eq(r.status, "", "%s", not_status[i]);
		cr_assert_eq(strncmp(r.text, not_status[i] + 4, 3), 0, "%s", not_status[i]);
	}
}

Test(smtp_reply, bare_lf_and_code_only)
{
	struct smtp_reply r = parse_one("250 ok\n");
	cr_assert_eq(r.code, 250);
	cr_assert_str_eq(r.text, "ok");
	r = parse_one("250-a\n250 b\r\n");
	cr_assert_str_eq(r.text, "a b");
	r = parse_one("250\r\n");
	cr_assert_eq(r.code, 250);
	cr_assert_str_eq(r.text, "");
}

Test(smtp_reply, control_characters_replaced)
{
	struct smtp_reply r = parse_one("250 a\tb\x01"
					"c\rd\x7f"
					"e\r\n");
	cr_assert_str_eq(r.text, "a?b?c?d?e");
}

Test(smtp_reply, text_truncated)
{
	char in[8 * 300];
	size_t n = 0;
	for (int line = 0; line < 7; line++) {
		n += (size_t)snprintf(in + n, sizeof(in) - n, "250%c", line < 6 ? '-' : ' ');
		memset(in + n, 'x', 200);
		n += 200;
		in[n++] = '\r';
		in[n++] = '\n';
	}
	in[n] = '\0';
	struct smtp_reply r = parse_one(in);
	cr_assert_eq(strlen(r.text), SMTP_CLIENT_TEXT_MAX - 1);
}

Test(smtp_reply, overlong_line_is_protocol_error)
{
	static char in[SMTP_CLIENT_LINE_MAX + 8];
	/* Exactly SMTP_CLIENT_LINE_MAX octets with its CRLF: accepted. */
	memcpy(in, "250 ", 4);
	memset(in + 4, 'x', SMTP_CLIENT_LINE_MAX - 6);
	memcpy(in + SMTP_CLIENT_LINE_MAX - 2, "\r\n", 2);
	cr_assert_eq(parse_error(in, SMTP_CLIENT_LINE_MAX), 0);
	/* One more: refused, whole or fed byte by byte, ended or not. */
	memset(in + 4, 'x', SMTP_CLIENT_LINE_MAX - 5);
	memcpy(in + SMTP_CLIENT_LINE_MAX - 1, "\r\n", 2);
	cr_assert_eq(parse_error(in, SMTP_CLIENT_LINE_MAX + 1), -EPROTO);
	struct parse_run run;
	parse_run(&run, in, SMTP_CLIENT_LINE_MAX + 1, 1);
	cr_assert_eq(run.error, -EPROTO);
	parse_run(&run, in, SMTP_CLIENT_LINE_MAX - 1, 0);
	cr_assert_eq(run.error, 0);
	parse_run(&run, in, SMTP_CLIENT_LINE_MAX, 0);
	cr_assert_eq(run.error, -EPROTO);
}

Test(smtp_reply, bad_code_is_protocol_error)
{
	static const char *const bad[] = {"199 x\r\n", "600 x\r\n",  "25 x\r\n",
					  "\r\n",      "abc\r\n",    "250x\r\n",
					  "2a0 x\r\n", "250\tx\r\n", " 250 x\r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(parse_error(bad[i], strlen(bad[i])), -EPROTO, "%s", bad[i]);
}

Test(smtp_reply, changing_code_is_protocol_error)
{
	cr_assert_eq(parse_error(S("250-a\r\n251 b\r\n")), -EPROTO);
	cr_assert_eq(parse_error(S("250-a\r\n250-b\r\n550 c\r\n")), -EPROTO);
}

/* ---- client harness ----------------------------------------------------- */

#define LOG_MAX 8192

struct harness {
	struct smtp_client c;
	struct buf out;
	char log[LOG_MAX];
	size_t log_len;
	/* What the events do, as an outbound session would. */
	const struct smtp_client_message *queue[4]; /* sent at each ready() */
	size_t nqueue, next;
	bool quit_when_idle;   /* ready() with nothing queued: QUIT */
	bool reset_on_message; /* message(): RSET */
	const char *body;      /* body(): streamed, then ended */
	size_t body_len;
	uint64_t *body_rng; /* when set, the body goes in random pieces */
	int send_rc;        /* what the last send() from ready() returned */
};

static struct harness h;

static void h_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void h_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(h.log + h.log_len, LOG_MAX - h.log_len, fmt, ap);
	va_end(ap);
	cr_assert(n >= 0 && (size_t)n < LOG_MAX - h.log_len, "event log full");
	h.log_len += (size_t)n;
}

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: deterministic, so a failure replays. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static void on_ready(struct smtp_client *c)
{
	cr_assert_eq(c, &h.c);
	h_log("ready\n");
	if (h.next < h.nqueue)
		h.send_rc = smtp_client_send(c, h.queue[h.next++]);
	else if (h.quit_when_idle)
		smtp_client_quit(c);
}

static void on_rcpt(struct smtp_client *c, unsigned i, const struct smtp_reply *r)
{
	(void)c;
	h_log("rcpt %u %d %s|%s\n", i, r->code, r->status, r->text);
}

static void on_body(struct smtp_client *c)
{
	h_log("body\n");
	if (h.body == NULL)
		return;
	size_t at = 0;
	while (at < h.body_len) {
		size_t n = h.body_len - at;
		if (h.body_rng != NULL)
			n = 1 + rng_next(h.body_rng) % n;
		smtp_client_body(c, h.body + at, n);
		at += n;
	}
	smtp_client_body_end(c);
}

static void on_message(struct smtp_client *c, unsigned accepted, const struct smtp_reply *r)
{
	h_log("message %u %d %s|%s%s\n", accepted, r->code, r->status, r->text,
	      c->mail_refused ? " mail_refused" : "");
	if (h.reset_on_message)
		smtp_client_reset(c);
}

static void on_failed(struct smtp_client *c, const struct smtp_reply *r)
{
	(void)c;
	h_log("failed %d %s|%s\n", r->code, r->status, r->text);
}

static void on_closed(struct smtp_client *c)
{
	(void)c;
	h_log("closed\n");
}

static const struct smtp_client_events events = {
	.ready = on_ready,
	.rcpt = on_rcpt,
	.body = on_body,
	.message = on_message,
	.failed = on_failed,
	.closed = on_closed,
};

static void h_init(void)
{
	buf_release(&h.out);
	memset(&h, 0, sizeof(h));
	smtp_client_init(&h.c, &events, NULL, &h.out, "client.example");
}

static void h_fini(void)
{
	buf_release(&h.out);
}

TestSuite(smtp_client, .init = h_init, .fini = h_fini);

/* Server octets, all expected to be consumed. */
static void h_in(const char *in)
{
	size_t n = strlen(in);
	cr_assert_eq(smtp_client_input(&h.c, in, n), n, "input not all consumed: %s", in);
}

/* What the client sent since the last check, exactly. */
static void h_out(const char *want)
{
	size_t n = buf_len(&h.out);
	char got[4096];
	cr_assert_lt(n, sizeof(got));
	if (n > 0)
		memcpy(got, buf_head(&h.out), n);
	got[n] = '\0';
	cr_assert_str_eq(got, want);
	buf_consume(&h.out, n);
}

/* The events told since the last check, exactly. */
static void h_events(const char *want)
{
	cr_assert_str_eq(h.log, want);
	h.log_len = 0;
	h.log[0] = '\0';
}

static void h_phase(enum smtp_client_phase want)
{
	cr_assert_eq(smtp_client_phase(&h.c), want, "phase %d, expected %d",
		     smtp_client_phase(&h.c), want);
}

static const char ehlo_all[] = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n"
			       "250-8BITMIME\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n"
			       "250 ENHANCEDSTATUSCODES\r\n";
static const char ehlo_plain[] = "250-mx.example\r\n250 8BITMIME\r\n";

/* Greeting and EHLO answered with ehlo_reply: ready, output checked. */
static void h_ready(const char *ehlo_reply)
{
	h_in("220 mx.example ESMTP\r\n");
	h_out("EHLO client.example\r\n");
	h_in(ehlo_reply);
	h_out("");
	h_events("ready\n");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

static const char *const rcpts3[] = {"b@y", "c@y", "d@y"};
static const size_t rcpt_lens3[] = {3, 3, 3};

static const struct smtp_client_message msg3 = {
	.sender = "a@x",
	.sender_len = 3,
	.rcpts = rcpts3,
	.rcpt_lens = rcpt_lens3,
	.nrcpts = 3,
	.size = 1234,
};

static const struct smtp_client_message msg2 = {
	.sender = "a@x",
	.sender_len = 3,
	.rcpts = rcpts3,
	.rcpt_lens = rcpt_lens3,
	.nrcpts = 2,
};

/* ---- greeting, EHLO, HELO ----------------------------------------------- */

Test(smtp_client, greeting_sends_ehlo)
{
	h_phase(SMTP_CLIENT_PHASE_GREETING);
	h_in("220-mx.example ESMTP\r\n");
	h_out("");
	h_phase(SMTP_CLIENT_PHASE_GREETING);
	h_in("220 no UCE\r\n");
	h_out("EHLO client.example\r\n");
	h_events("");
	h_phase(SMTP_CLIENT_PHASE_COMMAND);
}

Test(smtp_client, ehlo_extensions_parsed)
{
	h_ready("250-mx.example greets client.example\r\n250-pipelining\r\n250-Size 1000000\r\n"
		"250-8bitmime\r\n250-SmtpUtf8\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n"
		"250 enhancedstatuscodes\r\n");
	const struct smtp_client_extensions *e = &h.c.ext;
	cr_assert(e->esmtp && e->pipelining && e->size && e->eightbitmime && e->smtputf8 &&
		  e->starttls && e->enhanced_status);
	cr_assert_eq(e->max_size, 1000000);
}

Test(smtp_client, ehlo_first_line_is_the_name)
{
	h_ready("250-PIPELINING\r\n250-SIZE\r\n250-SIZEX\r\n250 8BITMIMEX\r\n");
	const struct smtp_client_extensions *e = &h.c.ext;
	cr_assert(e->esmtp);
	cr_assert_not(e->pipelining, "the first line names the server");
	cr_assert(e->size);
	cr_assert_eq(e->max_size, 0);
	cr_assert_not(e->eightbitmime || e->smtputf8 || e->starttls || e->enhanced_status);
}

Test(smtp_client, ehlo_single_line)
{
	h_ready("250 mx.example\r\n");
	cr_assert(h.c.ext.esmtp);
	cr_assert_not(h.c.ext.pipelining || h.c.ext.size);
}

Test(smtp_client, ehlo_502_falls_back_to_helo)
{
	h_in("220 old.example\r\n");
	h_out("EHLO client.example\r\n");
	h_in("502 5.5.2 Command not recognized\r\n");
	h_out("HELO client.example\r\n");
	h_events("");
	h_phase(SMTP_CLIENT_PHASE_COMMAND);
	h_in("250 old.example\r\n");
	h_events("ready\n");
	struct smtp_client_extensions none = {0};
	cr_assert(memcmp(&h.c.ext, &none, sizeof(none)) == 0, "HELO: no extension");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

Test(smtp_client, helo_refused_fails)
{
	h_in("220 old.example\r\n500 what\r\n");
	h_out("EHLO client.example\r\nHELO client.example\r\n");
	h_in("550 go away\r\n");
	h_out("QUIT\r\n");
	h_events("failed 550 |go away\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

Test(smtp_client, ehlo_4xx_fails)
{
	h_in("220 mx\r\n");
	h_out("EHLO client.example\r\n");
	h_in("451 4.3.0 try later\r\n");
	h_out("QUIT\r\n");
	h_events("failed 451 4.3.0|try later\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

Test(smtp_client, greeting_421_fails)
{
	static const char first[] = "421 4.3.2 Service not available\r\n";
	static const char in[] = "421 4.3.2 Service not available\r\n220 mx\r\n";
	cr_assert_eq(smtp_client_input(&h.c, S(in)), sizeof(first) - 1,
		     "nothing read past the failure");
	h_out("");
	h_events("failed 421 4.3.2|Service not available\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
	cr_assert_eq(smtp_client_input(&h.c, S("220 mx\r\n")), 0);
	smtp_client_lost(&h.c, "closed");
	h_events("");
}

Test(smtp_client, greeting_554_quits_and_fails)
{
	h_in("554 5.7.1 no service for you\r\n");
	h_out("QUIT\r\n");
	h_events("failed 554 5.7.1|no service for you\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

Test(smtp_client, malformed_reply_fails)
{
	h_in("220 mx\r\n");
	h_out("EHLO client.example\r\n");
	cr_assert_eq(smtp_client_input(&h.c, S("hello there\r\n250 ok\r\n")), 13);
	h_out("");
	h_events("failed 0 |protocol error: the server's reply does not start with a code "
		 "200..599\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

/* ---- transactions ------------------------------------------------------- */

Test(smtp_client, pipelined_transaction)
{
	h.body = "Subject: hi\r\n\r\nhello\r\n";
	h.body_len = strlen(h.body);
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg3), 0);
	h_out("MAIL FROM:<a@x> SIZE=1234\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\n"
	      "DATA\r\n");
	h_phase(SMTP_CLIENT_PHASE_COMMAND);
	h_in("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@y>: no such user\r\n");
	h_phase(SMTP_CLIENT_PHASE_COMMAND);
	h_in("250 2.1.5 Ok\r\n");
	h_phase(SMTP_CLIENT_PHASE_DATA_INIT);
	h_events(
		"rcpt 0 250 2.1.5|Ok\nrcpt 1 550 5.1.1|<c@y>: no such user\nrcpt 2 250 2.1.5|Ok\n");
	h_in("354 End data with <CR><LF>.<CR><LF>\r\n");
	h_events("body\n");
	h_out("Subject: hi\r\n\r\nhello\r\n.\r\n");
	h_phase(SMTP_CLIENT_PHASE_DATA_DONE);
	h_in("250 2.0.0 Ok: queued as 4F2A\r\n");
	h_events("message 2 250 2.0.0|Ok: queued as 4F2A\n");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
	h_out("");
}

Test(smtp_client, pipelined_replies_in_one_chunk)
{
	h.body = "x\r\n";
	h.body_len = 3;
	h.reset_on_message = true;
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	h_out("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n");
	h_in("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	h_out("x\r\n.\r\n");
	h_in("250 queued\r\n250 reset\r\n");
	h_out("RSET\r\n");
	h_events("rcpt 0 250 |ok\nrcpt 1 250 |ok\nbody\nmessage 2 250 |queued\nready\n");
}

Test(smtp_client, pipelined_mail_refused)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg3), 0);
	h_out("MAIL FROM:<a@x> SIZE=1234\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\n"
	      "DATA\r\n");
	h_in("553 5.7.1 <a@x>: Sender address rejected\r\n503 5.5.1 need MAIL\r\n"
	     "503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
	h_events("");
	h_phase(SMTP_CLIENT_PHASE_DATA_INIT);
	h_in("554 5.5.1 no valid recipients\r\n");
	h_events("message 0 553 5.7.1|<a@x>: Sender address rejected mail_refused\n");
	h_out("");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

Test(smtp_client, pipelined_mail_refused_then_354)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	buf_consume(&h.out, buf_len(&h.out));
	h_in("550 no\r\n503 no\r\n503 no\r\n354 go\r\n");
	/* No body for anyone: the data is ended empty at once. */
	h_out(".\r\n");
	h_events("");
	h_phase(SMTP_CLIENT_PHASE_DATA_DONE);
	h_in("554 empty\r\n");
	h_events("message 0 550 |no mail_refused\n");
}

Test(smtp_client, pipelined_no_recipient_accepted)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	buf_consume(&h.out, buf_len(&h.out));
	h_in("250 ok\r\n550 5.1.1 no b\r\n550 5.1.1 no c\r\n554 5.5.1 no valid recipients\r\n");
	h_events("rcpt 0 550 5.1.1|no b\nrcpt 1 550 5.1.1|no c\nmessage 0 550 5.1.1|no c\n");
	h_out("");
}

Test(smtp_client, pipelined_no_recipient_accepted_then_354)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	buf_consume(&h.out, buf_len(&h.out));
	h_in("250 ok\r\n550 no b\r\n550 no c\r\n354 go\r\n");
	h_events("rcpt 0 550 |no b\nrcpt 1 550 |no c\n");
	h_out(".\r\n");
	h_in("250 empty message taken\r\n");
	h_events("message 0 550 |no c\n");
}

Test(smtp_client, data_refused)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	buf_consume(&h.out, buf_len(&h.out));
	h_in("250 ok\r\n250 ok\r\n550 no c\r\n554 5.3.0 no\r\n");
	h_events("rcpt 0 250 |ok\nrcpt 1 550 |no c\nmessage 1 554 5.3.0|no\n");
	h_out("");
}

Test(smtp_client, one_command_at_a_time_without_pipelining)
{
	h.body = "hi\r\n";
	h.body_len = 4;
	h_ready(ehlo_plain);
	cr_assert_eq(smtp_client_send(&h.c, &msg3), 0);
	h_out("MAIL FROM:<a@x>\r\n");
	h_phase(SMTP_CLIENT_PHASE_COMMAND);
	h_in("250 ok\r\n");
	h_out("RCPT TO:<b@y>\r\n");
	h_in("550 no b\r\n");
	h_events("rcpt 0 550 |no b\n");
	h_out("RCPT TO:<c@y>\r\n");
	h_in("250 ok c\r\n");
	h_out("RCPT TO:<d@y>\r\n");
	h_phase(SMTP_CLIENT_PHASE_COMMAND);
	h_in("250 ok d\r\n");
	h_out("DATA\r\n");
	h_phase(SMTP_CLIENT_PHASE_DATA_INIT);
	h_events("rcpt 1 250 |ok c\nrcpt 2 250 |ok d\n");
	h_in("354 go\r\n");
	h_out("hi\r\n.\r\n");
	h_in("250 queued\r\n");
	h_events("body\nmessage 2 250 |queued\n");
}

Test(smtp_client, mail_refused_without_pipelining)
{
	h_ready(ehlo_plain);
	cr_assert_eq(smtp_client_send(&h.c, &msg3), 0);
	h_out("MAIL FROM:<a@x>\r\n");
	h_in("452 4.3.1 insufficient storage\r\n");
	h_out("");
	h_events("message 0 452 4.3.1|insufficient storage mail_refused\n");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

Test(smtp_client, no_recipient_accepted_sends_no_data)
{
	h_ready(ehlo_plain);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	h_out("MAIL FROM:<a@x>\r\n");
	h_in("250 ok\r\n550 no b\r\n");
	h_out("RCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\n");
	h_in("551 no c\r\n");
	h_out("");
	h_events("rcpt 0 550 |no b\nrcpt 1 551 |no c\nmessage 0 551 |no c\n");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

Test(smtp_client, mail_parameters)
{
	struct smtp_client_message m = {
		.sender = "a@x",
		.sender_len = 3,
		.rcpts = rcpts3,
		.rcpt_lens = rcpt_lens3,
		.nrcpts = 1,
		.size = 42,
		.eightbit = true,
		.smtputf8 = true,
	};
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &m), 0);
	h_out("MAIL FROM:<a@x> SIZE=42 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<b@y>\r\nDATA\r\n");
}

Test(smtp_client, mail_parameters_only_when_offered)
{
	struct smtp_client_message m = {
		.sender = "",
		.sender_len = 0,
		.rcpts = rcpts3,
		.rcpt_lens = rcpt_lens3,
		.nrcpts = 1,
		.size = 42,
		.eightbit = true,
	};
	h_ready("250-mx\r\n250 PIPELINING\r\n");
	cr_assert_eq(smtp_client_send(&h.c, &m), 0);
	h_out("MAIL FROM:<>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
}

Test(smtp_client, size_zero_not_sent)
{
	struct smtp_client_message m = msg2;
	m.size = 0;
	m.eightbit = true;
	h_ready(ehlo_plain);
	cr_assert_eq(smtp_client_send(&h.c, &m), 0);
	h_out("MAIL FROM:<a@x> BODY=8BITMIME\r\n");
}

Test(smtp_client, too_big_and_utf8_refused_locally)
{
	struct smtp_client_message m = msg2;
	h_ready("250-mx\r\n250 SIZE 1000\r\n");
	m.size = 1001;
	cr_assert_eq(smtp_client_send(&h.c, &m), -EMSGSIZE);
	m.size = 1000;
	m.smtputf8 = true;
	cr_assert_eq(smtp_client_send(&h.c, &m), -EPROTONOSUPPORT);
	h_out("");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
	m.smtputf8 = false;
	cr_assert_eq(smtp_client_send(&h.c, &m), 0);
	h_out("MAIL FROM:<a@x> SIZE=1000\r\n");
}

Test(smtp_client, size_without_limit_sends_anything)
{
	struct smtp_client_message m = msg2;
	m.size = UINT64_C(1) << 40;
	h_ready("250-mx\r\n250 SIZE 0\r\n");
	cr_assert_eq(smtp_client_send(&h.c, &m), 0);
	h_out("MAIL FROM:<a@x> SIZE=1099511627776\r\n");
}

Test(smtp_client, path_with_crlf_refused)
{
	static const char *const bad[] = {"b@y\r\nRSET"};
	static const size_t bad_lens[] = {9};
	struct smtp_client_message m = msg2;
	m.rcpts = bad;
	m.rcpt_lens = bad_lens;
	m.nrcpts = 1;
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &m), -EINVAL);
	h_out("");
}

/* ---- body --------------------------------------------------------------- */

/* Up to BODY with one accepted recipient. */
static void h_at_body(void)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	h_in("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	h_events("rcpt 0 250 |ok\nrcpt 1 250 |ok\nbody\n");
	h_phase(SMTP_CLIENT_PHASE_BODY);
	buf_consume(&h.out, buf_len(&h.out));
}

Test(smtp_client, dot_stuffing)
{
	h_at_body();
	smtp_client_body(&h.c, S(".foo\r\n..\r\na.b\r\n.\r\nend\r\n"));
	smtp_client_body_end(&h.c);
	h_out("..foo\r\n...\r\na.b\r\n..\r\nend\r\n.\r\n");
	h_phase(SMTP_CLIENT_PHASE_DATA_DONE);
	h_in("250 ok\r\n");
	h_events("message 2 250 |ok\n");
}

Test(smtp_client, dot_stuffing_across_chunks)
{
	h_at_body();
	smtp_client_body(&h.c, S("abc\r\n"));
	smtp_client_body(&h.c, S(".def\r"));
	smtp_client_body(&h.c, S("\n"));
	smtp_client_body(&h.c, S("."));
	smtp_client_body(&h.c, S(".\r\nx."));
	smtp_client_body(&h.c, S(".\r\n"));
	smtp_client_body_end(&h.c);
	h_out("abc\r\n..def\r\n...\r\nx..\r\n.\r\n");
}

Test(smtp_client, body_without_final_crlf)
{
	h_at_body();
	smtp_client_body(&h.c, S("line\r\nlast"));
	smtp_client_body_end(&h.c);
	h_out("line\r\nlast\r\n.\r\n");
}

Test(smtp_client, body_ending_in_cr)
{
	h_at_body();
	smtp_client_body(&h.c, S("last\r"));
	smtp_client_body_end(&h.c);
	h_out("last\r\n.\r\n");
}

Test(smtp_client, empty_body)
{
	h_at_body();
	smtp_client_body(&h.c, "", 0);
	smtp_client_body_end(&h.c);
	h_out(".\r\n");
}

Test(smtp_client, bare_lf_sent_as_crlf)
{
	h_at_body();
	smtp_client_body(&h.c, S("a\n.\nb\r\n"));
	smtp_client_body_end(&h.c);
	h_out("a\r\n..\r\nb\r\n.\r\n");
}

/* ---- RSET, QUIT, loss --------------------------------------------------- */

/* Up to message() of a one-recipient pipelined message refused at DATA. */
static void h_after_message(void)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	h_in("250 ok\r\n250 ok\r\n250 ok\r\n451 later\r\n");
	h_events("rcpt 0 250 |ok\nrcpt 1 250 |ok\nmessage 2 451 |later\n");
	buf_consume(&h.out, buf_len(&h.out));
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

Test(smtp_client, rset_then_ready)
{
	h_after_message();
	smtp_client_reset(&h.c);
	h_out("RSET\r\n");
	h_phase(SMTP_CLIENT_PHASE_COMMAND);
	h_in("250 2.0.0 Ok\r\n");
	h_events("ready\n");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

/* After a message whose dot was answered the server has forgotten it:
 * the next MAIL needs no RSET, and ready() comes at once. */
Test(smtp_client, next_after_an_answered_dot_needs_no_rset)
{
	h.body = "Subject: hi\r\n\r\nhello\r\n";
	h.body_len = strlen(h.body);
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	h_in("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	h_events("rcpt 0 250 |ok\nrcpt 1 250 |ok\nbody\n");
	h_in("550 5.7.1 refused after all\r\n");
	h_events("message 2 550 5.7.1|refused after all\n");
	buf_consume(&h.out, buf_len(&h.out));
	smtp_client_next(&h.c);
	h_out("");
	h_events("ready\n");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

/* A transaction that never reached its dot (DATA refused) may still be
 * open at the server: RSET first. */
Test(smtp_client, next_after_a_refused_data_resets)
{
	h_after_message();
	smtp_client_next(&h.c);
	h_out("RSET\r\n");
	h_in("250 2.0.0 Ok\r\n");
	h_events("ready\n");
	h_phase(SMTP_CLIENT_PHASE_IDLE);
}

Test(smtp_client, rset_refused_fails)
{
	h_after_message();
	smtp_client_reset(&h.c);
	h_out("RSET\r\n");
	h_in("502 no RSET here\r\n");
	h_out("QUIT\r\n");
	h_events("failed 502 |no RSET here\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

Test(smtp_client, quit_then_closed)
{
	h_after_message();
	smtp_client_quit(&h.c);
	h_out("QUIT\r\n");
	h_phase(SMTP_CLIENT_PHASE_COMMAND);
	h_in("221 2.0.0 Bye\r\n");
	h_events("closed\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

Test(smtp_client, quit_then_eof_is_closed)
{
	h_ready(ehlo_all);
	smtp_client_quit(&h.c);
	h_out("QUIT\r\n");
	smtp_client_lost(&h.c, "connection closed by the server");
	h_events("closed\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

Test(smtp_client, lost_before_quit_fails)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	smtp_client_lost(&h.c, "connection reset by the server");
	h_events("failed 0 |connection reset by the server\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
	smtp_client_lost(&h.c, "again");
	h_events("");
}

Test(smtp_client, reply_when_idle_fails)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_input(&h.c, S("250 surprise\r\n250 more\r\n")), 14);
	h_events("failed 0 |protocol error: the server sent a reply to no command: 250 surprise\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

Test(smtp_client, reply_421_when_idle_fails_with_it)
{
	h_ready(ehlo_all);
	h_in("421 4.4.2 idle too long\r\n");
	h_events("failed 421 4.4.2|idle too long\n");
	h_out("");
}

Test(smtp_client, rcpt_421_fails)
{
	h_ready(ehlo_all);
	cr_assert_eq(smtp_client_send(&h.c, &msg2), 0);
	cr_assert_eq(smtp_client_input(&h.c, S("250 ok\r\n421 bye\r\n250 ok\r\n")), 17);
	h_events("failed 421 |bye\n");
}

/* ---- whole conversations ------------------------------------------------ */

/* Two messages back to back, every step taken from inside the events. */
static const char script[] =
	"220-mx.example ESMTP\r\n220 ready\r\n"
	"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250 8BITMIME\r\n"
	"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n"
	"250 2.1.5 Ok\r\n354 go\r\n"
	"250 2.0.0 queued as A\r\n"
	"250 2.0.0 reset\r\n"
	"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n250 queued as B\r\n"
	"250 reset\r\n"
	"221 bye\r\n";

static const char script_body[] = "From: a@x\r\n\r\n.leading dot\r\n..\r\nmid.dot\r\n.";

static void h_script_setup(uint64_t *body_rng)
{
	h_init();
	h.queue[0] = &msg3;
	h.queue[1] = &msg2;
	h.nqueue = 2;
	h.quit_when_idle = true;
	h.reset_on_message = true;
	h.body = script_body;
	h.body_len = sizeof(script_body) - 1;
	h.body_rng = body_rng;
}

static void h_script_check(void)
{
	cr_assert_eq(h.send_rc, 0);
	h_events("ready\n"
		 "rcpt 0 250 2.1.5|Ok\nrcpt 1 550 5.1.1|no such user\nrcpt 2 250 2.1.5|Ok\n"
		 "body\nmessage 2 250 2.0.0|queued as A\n"
		 "ready\n"
		 "rcpt 0 250 |Ok\nrcpt 1 250 |Ok\nbody\nmessage 2 250 |queued as B\n"
		 "ready\nclosed\n");
	h_out("EHLO client.example\r\n"
	      "MAIL FROM:<a@x> SIZE=1234\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\n"
	      "DATA\r\n"
	      "From: a@x\r\n\r\n..leading dot\r\n...\r\nmid.dot\r\n..\r\n.\r\n"
	      "RSET\r\n"
	      "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"
	      "From: a@x\r\n\r\n..leading dot\r\n...\r\nmid.dot\r\n..\r\n.\r\n"
	      "RSET\r\n"
	      "QUIT\r\n");
	h_phase(SMTP_CLIENT_PHASE_DONE);
}

Test(smtp_client, script_whole)
{
	h_script_setup(NULL);
	h_in(script);
	h_script_check();
}

Test(smtp_client, script_byte_at_a_time)
{
	h_script_setup(NULL);
	for (size_t i = 0; i < sizeof(script) - 1; i++)
		cr_assert_eq(smtp_client_input(&h.c, script + i, 1), 1);
	h_script_check();
}

Test(smtp_client, script_random_splits)
{
	uint64_t rng = 0x9e3779b97f4a7c15ULL;
	for (int round = 0; round < 3000; round++) {
		h_script_setup(&rng);
		size_t at = 0, n = sizeof(script) - 1;
		while (at < n) {
			size_t piece = 1 + rng_next(&rng) % (rng_next(&rng) % 4 == 0 ? 64 : 8);
			if (piece > n - at)
				piece = n - at;
			cr_assert_eq(smtp_client_input(&h.c, script + at, piece), piece,
				     "round %d at %zu", round, at);
			at += piece;
		}
		h_script_check();
		h_fini();
	}
}
