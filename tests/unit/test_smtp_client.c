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
