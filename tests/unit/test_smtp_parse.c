/*
 * Tests for net/smtp_parse: the line reader, the command and path parsers
 * and the DATA decoder. Input from the network arrives split anywhere, so
 * the reader and the decoder are checked against every split point of
 * representative streams, not just fed whole.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "net/smtp_parse.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static void assert_bytes_eq(const char *what, const char *got, size_t got_len, const char *want,
			    size_t want_len)
{
	cr_assert_eq(got_len, want_len, "%s: length %zu, expected %zu", what, got_len, want_len);
	cr_assert(memcmp(got, want, want_len) == 0, "%s: content differs", what);
}

/* ---- line reader -------------------------------------------------------- */

#define TEST_LINE_MAX  64
#define TEST_LINES_MAX 32

struct line_result {
	enum smtp_line_status status;
	size_t at; /* reported right after in[at - 1] */
	size_t len;
	char line[TEST_LINE_MAX + 1];
	char head[SMTP_LINE_HEAD]; /* the reader's head, too long lines included */
	size_t head_len;
};

struct line_run {
	struct line_result results[TEST_LINES_MAX];
	size_t count;
	uint32_t pending_len; /* partial line left in the reader at the end */
	bool pending_cr;
	bool pending_overflow;
	char pending_head[SMTP_LINE_HEAD];
	size_t pending_head_len;
};

/*
 * Feed in[0..n) to a fresh reader, cut at bounds[] (ascending offsets), and
 * record every line reported.
 */
static void lines_feed(struct line_run *run, uint32_t cap, const char *in, size_t n,
		       const size_t *bounds, size_t nbounds)
{
	char buf[TEST_LINE_MAX + 1];
	struct smtp_line_reader r;
	size_t start = 0;

	cr_assert_leq(cap, TEST_LINE_MAX);
	memset(run, 0, sizeof(*run));
	smtp_line_reader_init(&r, buf, cap);
	for (size_t b = 0; b <= nbounds; b++) {
		size_t end = b < nbounds ? bounds[b] : n;
		while (start < end) {
			size_t used = 0;
			enum smtp_line_status st =
				smtp_line_feed(&r, in + start, end - start, &used);
			cr_assert_leq(used, end - start);
			start += used;
			if (st == SMTP_LINE_NEED_MORE) {
				cr_assert_eq(start, end, "NEED_MORE must consume all input");
				continue;
			}
			cr_assert_gt(used, 0);
			cr_assert_lt(run->count, TEST_LINES_MAX);
			struct line_result *res = &run->results[run->count++];
			res->status = st;
			res->head_len = r.head_len;
			memcpy(res->head, r.head, r.head_len);
			res->at = start;
			if (st == SMTP_LINE_TOO_LONG) {
				cr_assert_eq(r.len, 0, "nothing of a line too long is kept");
				cr_assert_eq(r.buf[0], '\0');
			}
			if (st == SMTP_LINE_READY) {
				cr_assert_eq(in[start - 1], '\n', "a line ends right after its LF");
				cr_assert_leq(r.len, cap);
				cr_assert_eq(r.buf[r.len], '\0');
				res->len = r.len;
				memcpy(res->line, r.buf, r.len);
			}
		}
	}
	run->pending_len = r.ready ? 0 : r.len;
	run->pending_cr = r.saw_cr;
	run->pending_overflow = r.overflow;
	run->pending_head_len = r.ready ? 0 : r.head_len;
	memcpy(run->pending_head, r.head, run->pending_head_len);
}

static void lines_assert_same(const struct line_run *a, const struct line_run *b, const char *how)
{
	cr_assert_eq(a->count, b->count, "%s: %zu lines vs %zu", how, a->count, b->count);
	for (size_t i = 0; i < a->count; i++) {
		cr_assert_eq(a->results[i].status, b->results[i].status, "%s: line %zu status", how,
			     i);
		cr_assert_eq(a->results[i].at, b->results[i].at,
			     "%s: line %zu reported at %zu, not %zu", how, i, b->results[i].at,
			     a->results[i].at);
		assert_bytes_eq(how, a->results[i].line, a->results[i].len, b->results[i].line,
				b->results[i].len);
		assert_bytes_eq(how, a->results[i].head, a->results[i].head_len, b->results[i].head,
				b->results[i].head_len);
	}
	assert_bytes_eq(how, a->pending_head, a->pending_head_len, b->pending_head,
			b->pending_head_len);
	cr_assert_eq(a->pending_len, b->pending_len, "%s: pending length", how);
	cr_assert_eq(a->pending_cr, b->pending_cr, "%s: pending CR", how);
	cr_assert_eq(a->pending_overflow, b->pending_overflow, "%s: pending overflow", how);
}

struct line_expect {
	enum smtp_line_status status;
	const char *line;
	size_t len;
};

/* Fields of a struct line_expect for a line that must come out as is. */
#define READY(lit) SMTP_LINE_READY, (lit), sizeof(lit) - 1

static void lines_assert_expected(const struct line_run *run, const struct line_expect *want,
				  size_t nwant)
{
	cr_assert_eq(run->count, nwant, "%zu lines, expected %zu", run->count, nwant);
	for (size_t i = 0; i < nwant; i++) {
		cr_assert_eq(run->results[i].status, want[i].status, "line %zu status", i);
		if (want[i].status == SMTP_LINE_READY) {
			assert_bytes_eq("line", run->results[i].line, run->results[i].len,
					want[i].line, want[i].len);
			size_t head = want[i].len < SMTP_LINE_HEAD ? want[i].len : SMTP_LINE_HEAD;
			assert_bytes_eq("head", run->results[i].head, run->results[i].head_len,
					want[i].line, head);
		}
	}
}

/* Whole, every single split, every pair of splits, and byte by byte. */
static void lines_assert_split_invariant(uint32_t cap, const char *in, size_t n,
					 const struct line_expect *want, size_t nwant)
{
	struct line_run whole, split;
	size_t bounds[2];
	char how[64];

	lines_feed(&whole, cap, in, n, NULL, 0);
	lines_assert_expected(&whole, want, nwant);

	for (size_t s = 0; s <= n; s++) {
		bounds[0] = s;
		lines_feed(&split, cap, in, n, bounds, 1);
		snprintf(how, sizeof(how), "split at %zu", s);
		lines_assert_same(&whole, &split, how);
		for (size_t t = s; t <= n; t++) {
			bounds[1] = t;
			lines_feed(&split, cap, in, n, bounds, 2);
			snprintf(how, sizeof(how), "split at %zu and %zu", s, t);
			lines_assert_same(&whole, &split, how);
		}
	}

	size_t every[256];
	cr_assert_lt(n, sizeof(every) / sizeof(every[0]));
	for (size_t s = 1; s < n; s++)
		every[s - 1] = s;
	lines_feed(&split, cap, in, n, every, n ? n - 1 : 0);
	lines_assert_same(&whole, &split, "byte by byte");
}

Test(smtp_line, crlf_pipelined_transaction)
{
	static const char in[] = "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n"
				 "RCPT TO:<c@d.example>\r\nDATA\r\n";
	static const struct line_expect want[] = {
		{READY("EHLO client.example")},
		{READY("MAIL FROM:<a@b.example>")},
		{READY("RCPT TO:<c@d.example>")},
		{READY("DATA")},
	};
	lines_assert_split_invariant(64, S(in), want, 4);
}

Test(smtp_line, bare_lf_and_lone_cr)
{
	/* Old ETRN clients end lines with a bare LF; a CR not before LF is data. */
	static const char in[] = "ETRN example.org\nNOOP\r\nA\rB\r\n\r\n\nX\r\r\n";
	static const struct line_expect want[] = {
		{READY("ETRN example.org")},
		{READY("NOOP")},
		{READY("A\rB")},
		{READY("")},
		{READY("")},
		{READY("X\r")},
	};
	lines_assert_split_invariant(64, S(in), want, 6);
}

Test(smtp_line, over_long_lines)
{
	/* cap 8: exactly 8 passes, 9 is dropped whole and the next line is intact. */
	static const char in[] = "12345678\r\n123456789\r\nQUIT\r\n"
				 "12345678\r\r\n1234567\r\r\n"
				 "12345678\rx\nNOOP\n12345678";
	static const struct line_expect want[] = {
		{READY("12345678")},  {.status = SMTP_LINE_TOO_LONG},
		{READY("QUIT")},      {.status = SMTP_LINE_TOO_LONG},
		{READY("1234567\r")}, {.status = SMTP_LINE_TOO_LONG},
		{READY("NOOP")},
	};
	lines_assert_split_invariant(8, S(in), want, 7);

	/* Each is reported right after the octet that shows it too long:
	 * the 9th of its text, or the octet after a CR in 9th place. */
	struct line_run run;
	lines_feed(&run, 8, S(in), NULL, 0);
	cr_assert_eq(run.results[1].at, 10 + 9, "after '123456789'");
	cr_assert_eq(run.results[3].at, 27 + 10, "after '12345678\\r\\r'");
	cr_assert_eq(run.results[5].at, 48 + 10, "after '12345678\\rx'");
}

Test(smtp_line, too_long_is_reported_before_the_line_ends)
{
	/* A client that never ends its line hears of it all the same. */
	static const char in[] = "NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
	static const struct line_expect want[] = {{.status = SMTP_LINE_TOO_LONG}};
	lines_assert_split_invariant(16, S(in), want, 1);
	struct line_run run;
	lines_feed(&run, 16, S(in), NULL, 0);
	cr_assert_eq(run.results[0].at, 17);
	cr_assert(run.pending_overflow, "the rest of the line is still to be skipped");

	/* The rest up to its end is dropped, whatever it holds; then the
	 * next line is a line again. */
	static const char more[] =
		"NOOP xxxxxxxxxxxxxxxxxxxxx\r\nQUIT\r\nRSET\r\nDATA\rMAIL FROM:<a@b.example>\n"
		"NOOP\r\n";
	static const struct line_expect want_more[] = {
		{.status = SMTP_LINE_TOO_LONG}, {READY("QUIT")}, {READY("RSET")},
		{.status = SMTP_LINE_TOO_LONG}, {READY("NOOP")},
	};
	lines_assert_split_invariant(16, S(more), want_more, 5);
}

Test(smtp_line, very_long_line_then_command)
{
	/* Ends in a partial over-long line: the state left must not depend on the cuts. */
	char in[200];
	memset(in, 'x', 150);
	memcpy(in + 150, "\r\nQUIT\r\n", 8);
	memset(in + 158, 'y', 20);
	static const struct line_expect want[] = {
		{.status = SMTP_LINE_TOO_LONG}, {READY("QUIT")}, {.status = SMTP_LINE_TOO_LONG}};
	lines_assert_split_invariant(16, in, 178, want, 3);

	struct line_run run;
	lines_feed(&run, 16, in, 178, NULL, 0);
	cr_assert(run.pending_overflow);
	cr_assert_eq(run.pending_len, 0);
}

Test(smtp_line, nul_and_8bit_kept)
{
	static const char in[] = "MAIL FROM:<\xc3\xa9t\xc3\xa9@x.example>\r\nNO\0OP\r\n\xff\x80\n";
	static const struct line_expect want[] = {
		{READY("MAIL FROM:<\xc3\xa9t\xc3\xa9@x.example>")},
		{READY("NO\0OP")},
		{READY("\xff\x80")},
	};
	lines_assert_split_invariant(64, S(in), want, 3);
}

Test(smtp_line, partial_tail_stays_pending)
{
	static const char in[] = "QUIT\r\nNOOP\r";
	static const struct line_expect want[] = {{READY("QUIT")}};
	lines_assert_split_invariant(64, S(in), want, 1);

	struct line_run run;
	lines_feed(&run, 64, S(in), NULL, 0);
	cr_assert_eq(run.pending_len, 4);
	cr_assert(run.pending_cr, "a CR at the end of a chunk is held until its LF shows up");
}

Test(smtp_line, cr_at_end_of_chunk)
{
	char buf[16];
	struct smtp_line_reader r;
	size_t used;

	smtp_line_reader_init(&r, buf, 15);
	cr_assert_eq(smtp_line_feed(&r, S("HELO x\r"), &used), SMTP_LINE_NEED_MORE);
	cr_assert_eq(used, 7);
	cr_assert_eq(smtp_line_feed(&r, S("\nNOOP\r\n"), &used), SMTP_LINE_READY);
	cr_assert_eq(used, 1);
	cr_assert_str_eq(r.buf, "HELO x");

	/* The held CR turns out to be data. */
	cr_assert_eq(smtp_line_feed(&r, S("A\r"), &used), SMTP_LINE_NEED_MORE);
	cr_assert_eq(smtp_line_feed(&r, S("B\n"), &used), SMTP_LINE_READY);
	cr_assert_eq(used, 2);
	cr_assert_eq(r.len, 3);
	cr_assert_str_eq(r.buf, "A\rB");
}

Test(smtp_line, stops_after_terminator)
{
	static const char in[] = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n";
	char buf[65];
	struct smtp_line_reader r;
	size_t used, off = 0;

	smtp_line_reader_init(&r, buf, 64);
	cr_assert_eq(smtp_line_feed(&r, in, sizeof(in) - 1, &used), SMTP_LINE_READY);
	cr_assert_eq(used, 17);
	cr_assert_str_eq(r.buf, "MAIL FROM:<a@b>");
	off += used;
	cr_assert_eq(smtp_line_feed(&r, in + off, sizeof(in) - 1 - off, &used), SMTP_LINE_READY);
	cr_assert_str_eq(r.buf, "RCPT TO:<c@d>");
	off += used;
	cr_assert_eq(smtp_line_feed(&r, in + off, sizeof(in) - 1 - off, &used), SMTP_LINE_READY);
	cr_assert_str_eq(r.buf, "DATA");
	off += used;
	cr_assert_eq(off, sizeof(in) - 1);
	cr_assert_eq(smtp_line_feed(&r, in + off, 0, &used), SMTP_LINE_NEED_MORE);
	cr_assert_eq(used, 0);
	cr_assert_eq(r.len, 0, "the call after READY starts a fresh line");
}

Test(smtp_line, too_long_leaves_no_line)
{
	char buf[5];
	struct smtp_line_reader r;
	size_t used;

	smtp_line_reader_init(&r, buf, 4);
	cr_assert_eq(smtp_line_feed(&r, S("RSET now\r\n"), &used), SMTP_LINE_TOO_LONG);
	cr_assert_eq(used, 5, "reported at the first octet past the limit");
	cr_assert_eq(r.len, 0);
	cr_assert_str_eq(r.buf, "", "nothing of a dropped line may be executed");
	cr_assert_eq(smtp_line_feed(&r, S("now\r\n"), &used), SMTP_LINE_NEED_MORE);
	cr_assert_eq(used, 5);
	cr_assert_str_eq(r.buf, "", "nothing of a dropped line may be executed");
	cr_assert_eq(smtp_line_feed(&r, S("QUIT\n"), &used), SMTP_LINE_READY);
	cr_assert_str_eq(r.buf, "QUIT");
}

Test(smtp_line, a_line_is_pending_from_its_first_octet_to_its_end)
{
	char buf[9];
	struct smtp_line_reader r;
	size_t used;

	smtp_line_reader_init(&r, buf, 8);
	cr_assert(!smtp_line_pending(&r));
	cr_assert_eq(smtp_line_feed(&r, S("N"), &used), SMTP_LINE_NEED_MORE);
	cr_assert(smtp_line_pending(&r));
	cr_assert_eq(smtp_line_feed(&r, S("OOP\r\n"), &used), SMTP_LINE_READY);
	cr_assert(!smtp_line_pending(&r), "a line that ended is not pending");
	cr_assert_eq(smtp_line_feed(&r, S("\r"), &used), SMTP_LINE_NEED_MORE);
	cr_assert(smtp_line_pending(&r), "a CR is the first octet of a line too");
	cr_assert_eq(smtp_line_feed(&r, S("\n123456789"), &used), SMTP_LINE_READY);
	cr_assert(!smtp_line_pending(&r));
	cr_assert_eq(smtp_line_feed(&r, S("123456789"), &used), SMTP_LINE_TOO_LONG);
	cr_assert(smtp_line_pending(&r), "the rest of a line too long is still to come");
	cr_assert_eq(smtp_line_feed(&r, S("xx\n"), &used), SMTP_LINE_NEED_MORE);
	cr_assert(!smtp_line_pending(&r));
}

Test(smtp_line, zero_cap_accepts_only_empty_lines)
{
	char buf[1];
	struct smtp_line_reader r;
	size_t used;

	smtp_line_reader_init(&r, buf, 0);
	cr_assert_eq(smtp_line_feed(&r, S("\r\n"), &used), SMTP_LINE_READY);
	cr_assert_eq(r.len, 0);
	cr_assert_eq(smtp_line_feed(&r, S("\r\r\n"), &used), SMTP_LINE_TOO_LONG);
	cr_assert_eq(used, 2);
	cr_assert_eq(smtp_line_feed(&r, S("\n"), &used), SMTP_LINE_NEED_MORE);
	cr_assert_eq(smtp_line_feed(&r, S("x\n"), &used), SMTP_LINE_TOO_LONG);
	cr_assert_eq(used, 1);
	cr_assert_eq(smtp_line_feed(&r, S("\n\r\n"), &used), SMTP_LINE_READY);
	cr_assert_eq(used, 3);
}

Test(smtp_line, head_of_an_over_long_line_is_kept)
{
	/* cap 4: the lines are dropped, their first octets are not. */
	static const char in[] = "ABCDEFGH\r\nxy\rz\r\n0123456789";
	struct line_run run;
	static const struct line_expect want[] = {
		{.status = SMTP_LINE_TOO_LONG}, {READY("xy\rz")}, {.status = SMTP_LINE_TOO_LONG}};
	lines_assert_split_invariant(4, S(in), want, 3);
	lines_feed(&run, 4, S(in), NULL, 0);
	assert_bytes_eq("head", run.results[0].head, run.results[0].head_len, S("ABCD"));
	assert_bytes_eq("head", run.results[2].head, run.results[2].head_len, S("0123"));
	/* The rest of the last one is still being dropped: its head stays. */
	assert_bytes_eq("pending head", run.pending_head, run.pending_head_len, S("0123"));
}

/* A TLS ClientHello's first octets: record header, then the handshake. */
static const char client_hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

Test(smtp_line, tls_record_header_seen_before_any_line_end)
{
	char buf[17];
	struct smtp_line_reader r;
	size_t used;

	/* Byte by byte: known at the third octet, with no LF anywhere. */
	smtp_line_reader_init(&r, buf, 16);
	for (size_t i = 0; i < sizeof(client_hello) - 1; i++) {
		cr_assert_eq(smtp_line_feed(&r, client_hello + i, 1, &used), SMTP_LINE_NEED_MORE);
		cr_assert_eq(smtp_line_starts_tls(&r), i >= 2, "after octet %zu", i);
	}
	/* Past the line limit: still known. */
	static const char more[] = "0123456789\n";
	cr_assert_eq(smtp_line_feed(&r, S(more), &used), SMTP_LINE_TOO_LONG);
	cr_assert(smtp_line_starts_tls(&r));
	/* The rest of that line is dropped; the next one is judged afresh. */
	size_t rest;
	cr_assert_eq(smtp_line_feed(&r, more + used, sizeof(more) - 1 - used, &rest),
		     SMTP_LINE_NEED_MORE);
	cr_assert_eq(used + rest, sizeof(more) - 1);
	cr_assert_eq(smtp_line_feed(&r, S("NOOP\r\n"), &used), SMTP_LINE_READY);
	cr_assert(!smtp_line_starts_tls(&r));

	static const char *const not_tls[] = {
		"\x16\x03\x05",      /* no such version */
		"\x16\x02\x00",      /* SSLv2's number */
		"\x17\x03\x03",      /* application data, not a handshake */
		"NOOP \x16\x03\x01", /* inside a line */
		"\x16\x03",          /* not yet known */
	};
	for (size_t i = 0; i < sizeof(not_tls) / sizeof(not_tls[0]); i++) {
		smtp_line_reader_init(&r, buf, 8);
		smtp_line_feed(&r, not_tls[i], strlen(not_tls[i]), &used);
		cr_assert(!smtp_line_starts_tls(&r), "case %zu", i);
	}
	/* Every version from SSLv3 (3.0) to 3.4. */
	for (char minor = 0; minor <= 4; minor++) {
		char hello[3] = {0x16, 0x03, minor};
		smtp_line_reader_init(&r, buf, 8);
		smtp_line_feed(&r, hello, 3, &used);
		cr_assert(smtp_line_starts_tls(&r), "version 3.%d", minor);
	}
}

Test(smtp_line, http_request_lines)
{
	static const char *const http[] = {
		"GET / HTTP/1.1",        "GET /index.html?a=b HTTP/1.0",
		"POST /submit HTTP/1.1", "HEAD / HTTP/1.1",
		"PUT /x HTTP/1.1",       "CONNECT mx.example:443 HTTP/1.1",
		"OPTIONS * HTTP/1.1",    "PRI * HTTP/2.0",
		"M-SEARCH * HTTP/1.1",
	};
	for (size_t i = 0; i < sizeof(http) / sizeof(http[0]); i++)
		cr_assert(smtp_line_is_http_request(http[i], strlen(http[i])), "%s", http[i]);
	static const char *const not_http[] = {
		"GET /",
		"GET / HTTP/1.1 ",
		"GET / HTTP/1",
		"GET / HTTP/1.x",
		"GET  / HTTP/1.1",
		"GET HTTP/1.1",
		"GET / x HTTP/1.1",
		"get / HTTP/1.1",
		" GET / HTTP/1.1",
		"GET /\x80 HTTP/1.1",
		"GET /\t HTTP/1.1",
		"XYZZY",
		"",
		" HTTP/1.1",
	};
	for (size_t i = 0; i < sizeof(not_http) / sizeof(not_http[0]); i++)
		cr_assert(!smtp_line_is_http_request(not_http[i], strlen(not_http[i])), "%s",
			  not_http[i]);
	cr_assert(!smtp_line_is_http_request(S("GET /\0 HTTP/1.1")));
}

/* ---- commands ----------------------------------------------------------- */

static const struct {
	enum smtp_verb verb;
	const char *upper, *lower, *mixed;
} all_verbs[] = {
	{SMTP_VERB_HELO, "HELO", "helo", "HeLo"},
	{SMTP_VERB_EHLO, "EHLO", "ehlo", "eHlO"},
	{SMTP_VERB_MAIL, "MAIL", "mail", "Mail"},
	{SMTP_VERB_RCPT, "RCPT", "rcpt", "rCpT"},
	{SMTP_VERB_DATA, "DATA", "data", "DaTa"},
	{SMTP_VERB_RSET, "RSET", "rset", "RsEt"},
	{SMTP_VERB_NOOP, "NOOP", "noop", "nOoP"},
	{SMTP_VERB_QUIT, "QUIT", "quit", "Quit"},
	{SMTP_VERB_VRFY, "VRFY", "vrfy", "vRFy"},
	{SMTP_VERB_EXPN, "EXPN", "expn", "ExPn"},
	{SMTP_VERB_HELP, "HELP", "help", "hElP"},
	{SMTP_VERB_ETRN, "ETRN", "etrn", "EtRn"},
	{SMTP_VERB_STARTTLS, "STARTTLS", "starttls", "StartTls"},
	{SMTP_VERB_AUTH, "AUTH", "auth", "aUtH"},
	{SMTP_VERB_BDAT, "BDAT", "bdat", "BdAt"},
};

static void assert_command_arg(const char *line, size_t len, int want_rc, enum smtp_verb want_verb,
			       const char *want_arg, size_t want_arg_len)
{
	struct smtp_command cmd;
	int rc = smtp_command_parse(line, len, &cmd);
	cr_assert_eq(rc, want_rc, "\"%.*s\": rc %d, expected %d", (int)len, line, rc, want_rc);
	cr_assert_eq(cmd.verb, want_verb, "\"%.*s\": verb %d, expected %d", (int)len, line,
		     cmd.verb, want_verb);
	cr_assert_not_null(cmd.arg);
	assert_bytes_eq(line, cmd.arg, cmd.arg_len, want_arg, want_arg_len);
}

static void assert_command(const char *line, size_t len, int want_rc, enum smtp_verb want_verb,
			   const char *want_arg)
{
	assert_command_arg(line, len, want_rc, want_verb, want_arg, strlen(want_arg));
}

Test(smtp_command, every_verb_in_every_case)
{
	char line[64];

	for (size_t i = 0; i < sizeof(all_verbs) / sizeof(all_verbs[0]); i++) {
		const char *forms[] = {all_verbs[i].upper, all_verbs[i].lower, all_verbs[i].mixed};
		enum smtp_verb v = all_verbs[i].verb;
		cr_assert_str_eq(smtp_verb_name(v), all_verbs[i].upper);
		for (size_t f = 0; f < 3; f++) {
			int len = snprintf(line, sizeof(line), "%s", forms[f]);
			assert_command(line, (size_t)len, SMTP_PARSE_OK, v, "");
			len = snprintf(line, sizeof(line), "%s arg one", forms[f]);
			assert_command(line, (size_t)len, SMTP_PARSE_OK, v, "arg one");
			len = snprintf(line, sizeof(line), "%s\targ", forms[f]);
			assert_command(line, (size_t)len, SMTP_PARSE_OK, v, "arg");
			len = snprintf(line, sizeof(line), "%s  \t ", forms[f]);
			assert_command(line, (size_t)len, SMTP_PARSE_OK, v, "");
			/* A letter glued to the verb makes another word. */
			len = snprintf(line, sizeof(line), "%sX", forms[f]);
			assert_command(line, (size_t)len, SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
			len = snprintf(line, sizeof(line), "%.*s", (int)strlen(forms[f]) - 1,
				       forms[f]);
			assert_command(line, (size_t)len, SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
		}
	}
}

Test(smtp_command, unknown_and_empty)
{
	assert_command(S(""), SMTP_PARSE_OK, SMTP_VERB_EMPTY, "");
	assert_command(S("MAILX FROM:<a@b>"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	assert_command(S("MAILX"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	assert_command(S("STARTTLSX"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	assert_command(S("XCLIENT ADDR=1.2.3.4"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	assert_command(S("GET / HTTP/1.1"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	assert_command(S("MAIL:FROM:<a@b>"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	assert_command(S("M\xc1IL"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	/* No leading white space in RFC 5321: strict. */
	assert_command(S(" MAIL FROM:<a@b>"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	assert_command(S("\tQUIT"), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	assert_command(S("   "), SMTP_PARSE_OK, SMTP_VERB_UNKNOWN, "");
	cr_assert_str_eq(smtp_verb_name(SMTP_VERB_EMPTY), "");
	cr_assert_str_eq(smtp_verb_name(SMTP_VERB_UNKNOWN), "");
	cr_assert_str_eq(smtp_verb_name(SMTP_VERB_COUNT), "");
}

Test(smtp_command, argument_trimmed_and_points_into_line)
{
	static const char line[] = "MAIL \t FROM:<a@b> SIZE=10 \t ";
	struct smtp_command cmd;

	cr_assert_eq(smtp_command_parse(S(line), &cmd), SMTP_PARSE_OK);
	cr_assert_eq(cmd.verb, SMTP_VERB_MAIL);
	cr_assert_eq(cmd.arg, line + 7);
	assert_bytes_eq("arg", cmd.arg, cmd.arg_len, S("FROM:<a@b> SIZE=10"));

	assert_command(S("EHLO\tclient.example"), SMTP_PARSE_OK, SMTP_VERB_EHLO, "client.example");
	assert_command(S("HELO a  b"), SMTP_PARSE_OK, SMTP_VERB_HELO, "a  b");
	assert_command(S("ETRN \xc3\xa9.example"), SMTP_PARSE_OK, SMTP_VERB_ETRN,
		       "\xc3\xa9.example");
}

Test(smtp_command, nul_reported_verb_kept)
{
	assert_command_arg(S("NOOP a\0b"), SMTP_PARSE_NUL, SMTP_VERB_NOOP, S("a\0b"));
	assert_command(S("NO\0OP"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, "");
	assert_command(S("QUIT\0"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, "");
	assert_command(S("\0"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, "");
	assert_command_arg(S("RCPT TO:<a@b>\0"), SMTP_PARSE_NUL, SMTP_VERB_RCPT, S("TO:<a@b>\0"));
}

Test(smtp_command, line_reader_then_parser)
{
	static const char in[] = "ehlo x\nmail from:<a@b>\r\nDATA\r\n";
	static const enum smtp_verb want[] = {SMTP_VERB_EHLO, SMTP_VERB_MAIL, SMTP_VERB_DATA};
	char buf[513];
	struct smtp_line_reader r;
	struct smtp_command cmd;
	size_t off = 0, used, k = 0;

	smtp_line_reader_init(&r, buf, 512);
	while (off < sizeof(in) - 1) {
		if (smtp_line_feed(&r, in + off, sizeof(in) - 1 - off, &used) == SMTP_LINE_READY) {
			cr_assert_eq(smtp_command_parse(r.buf, r.len, &cmd), SMTP_PARSE_OK);
			cr_assert_eq(cmd.verb, want[k++]);
		}
		off += used;
	}
	cr_assert_eq(k, 3);
}

/* ---- MAIL / RCPT arguments ---------------------------------------------- */

static void assert_path(const char *arg, size_t len, const char *keyword, const char *want_path,
			unsigned want_nparams)
{
	struct smtp_path_arg pa;
	int rc = smtp_parse_path_arg(arg, len, keyword, &pa);
	cr_assert_eq(rc, SMTP_PARSE_OK, "\"%.*s\": rc %d", (int)len, arg, rc);
	assert_bytes_eq(arg, pa.path, pa.path_len, want_path, strlen(want_path));
	cr_assert_eq(pa.nparams, want_nparams, "\"%.*s\": %u params", (int)len, arg, pa.nparams);
	cr_assert_eq(pa.path[-1], '<');
	cr_assert_eq(pa.path[pa.path_len], '>');
}

static void assert_path_rc(const char *arg, size_t len, const char *keyword, int want_rc)
{
	struct smtp_path_arg pa;
	int rc = smtp_parse_path_arg(arg, len, keyword, &pa);
	cr_assert_eq(rc, want_rc, "\"%.*s\": rc %d, expected %d", (int)len, arg, rc, want_rc);
}

static void assert_param(const struct smtp_param *p, const char *key, const char *value)
{
	assert_bytes_eq("key", p->key, p->key_len, key, strlen(key));
	if (!value) {
		cr_assert_null(p->value, "%s has no value", key);
		cr_assert_eq(p->value_len, 0);
	} else {
		cr_assert_not_null(p->value, "%s has a value", key);
		assert_bytes_eq("value", p->value, p->value_len, value, strlen(value));
	}
}

Test(smtp_path, plain_forms)
{
	assert_path(S("FROM:<a@b.example>"), "FROM:", "a@b.example", 0);
	assert_path(S("from:<a@b.example>"), "FROM:", "a@b.example", 0);
	assert_path(S("FrOm:<a@b.example>"), "from:", "a@b.example", 0);
	assert_path(S("TO:<postmaster>"), "TO:", "postmaster", 0);
	assert_path(S("to:<c@d.example>"), "TO:", "c@d.example", 0);
	/* Null reverse path. */
	assert_path(S("FROM:<>"), "FROM:", "", 0);
	assert_path(S("FROM:<> SIZE=0"), "FROM:", "", 1);
	/* A space (or several) after the colon, as many clients send. */
	assert_path(S("FROM: <a@b>"), "FROM:", "a@b", 0);
	assert_path(S("FROM:   <a@b>"), "FROM:", "a@b", 0);
	/* Trailing spaces are harmless. */
	assert_path(S("TO:<a@b>  "), "TO:", "a@b", 0);
	/* Syntax of the path itself is address.h's business. */
	assert_path(S("TO:<@relay.example:user@other.example>"),
		    "TO:", "@relay.example:user@other.example", 0);
	assert_path(S("TO:<user%other@relay.example>"), "TO:", "user%other@relay.example", 0);
	assert_path(S("TO:<a\\b@c>"), "TO:", "a\\b@c", 0);
}

Test(smtp_path, quoted_local_parts)
{
	assert_path(S("FROM:<\"a b>c\"@x.org>"), "FROM:", "\"a b>c\"@x.org", 0);
	assert_path(S("FROM:<\"a<b\"@x.org>"), "FROM:", "\"a<b\"@x.org", 0);
	assert_path(S("TO:<\"a\\\"> b\"@x.org> NOTIFY=NEVER"), "TO:", "\"a\\\"> b\"@x.org", 1);
	assert_path(S("TO:<\"a\\\\\"@x.org>"), "TO:", "\"a\\\\\"@x.org", 0);
	assert_path(S("TO:<\"\"@x.org>"), "TO:", "\"\"@x.org", 0);
	assert_path(S("TO:<\"user@other\"@relay.example>"), "TO:", "\"user@other\"@relay.example",
		    0);

	/* Unterminated quote or escape: the '>' is inside the quotes. */
	assert_path_rc(S("TO:<\"a b>"), "TO:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("TO:<\"a\\\">"), "TO:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("TO:<\"a\\"), "TO:", SMTP_PARSE_SYNTAX);
}

Test(smtp_path, parameters)
{
	struct smtp_path_arg pa;

	cr_assert_eq(smtp_parse_path_arg(S("FROM:<a@b> SIZE=12345 BODY=8BITMIME SMTPUTF8"),
					 "FROM:", &pa),
		     SMTP_PARSE_OK);
	cr_assert_eq(pa.nparams, 3);
	assert_param(&pa.params[0], "SIZE", "12345");
	assert_param(&pa.params[1], "BODY", "8BITMIME");
	assert_param(&pa.params[2], "SMTPUTF8", NULL);

	cr_assert_eq(smtp_parse_path_arg(S("TO:<a@b>   NOTIFY=SUCCESS,FAILURE  "
					   "ORCPT=rfc822;a+2Bb@c X-Y-1=\xc3\xa9t\xc3\xa9"),
					 "TO:", &pa),
		     SMTP_PARSE_OK);
	cr_assert_eq(pa.nparams, 3);
	assert_param(&pa.params[0], "NOTIFY", "SUCCESS,FAILURE");
	assert_param(&pa.params[1], "ORCPT", "rfc822;a+2Bb@c");
	assert_param(&pa.params[2], "X-Y-1", "\xc3\xa9t\xc3\xa9");

	cr_assert_eq(smtp_parse_path_arg(S("FROM:<a@b> 8BITMIME a"), "FROM:", &pa), SMTP_PARSE_OK);
	assert_param(&pa.params[0], "8BITMIME", NULL);
	assert_param(&pa.params[1], "a", NULL);
}

Test(smtp_path, parameter_limit)
{
	struct smtp_path_arg pa;

	cr_assert_eq(smtp_parse_path_arg(S("FROM:<a@b> A B C D E F G H=8"), "FROM:", &pa),
		     SMTP_PARSE_OK);
	cr_assert_eq(pa.nparams, SMTP_MAX_PARAMS);
	assert_param(&pa.params[7], "H", "8");
	assert_path_rc(S("FROM:<a@b> A B C D E F G H I"), "FROM:", SMTP_PARSE_TOO_MANY);
	assert_path_rc(S("FROM:<a@b> A B C D E F G H I=1 J=2"), "FROM:", SMTP_PARSE_TOO_MANY);
	/* A malformed line is a syntax error, however many parameters it has. */
	assert_path_rc(S("FROM:<a@b> A B C D E F G H I -J"), "FROM:", SMTP_PARSE_SYNTAX);
}

Test(smtp_path, syntax_errors)
{
	/* Brackets are required (RFC 5321 4.1.2). */
	assert_path_rc(S("FROM:a@b"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM: a@b"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:a@b>"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM: "), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S(""), "FROM:", SMTP_PARSE_SYNTAX);
	/* Wrong or mangled keyword. */
	assert_path_rc(S("TO:<a@b>"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM<a@b>"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM :<a@b>"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FRO"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:\t<a@b>"), "FROM:", SMTP_PARSE_SYNTAX);
	/* Inside the path, outside quotes. */
	assert_path_rc(S("TO:<a b@c>"), "TO:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("TO:<a\tb@c>"), "TO:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("TO:<a<b@c>"), "TO:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("TO:<<a@b>>"), "TO:", SMTP_PARSE_SYNTAX);
	/* Junk after '>'. */
	assert_path_rc(S("TO:<a@b>x"), "TO:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("TO:<a@b>>"), "TO:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("TO:<a@b>\tSIZE=1"), "TO:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("TO:<a@b><c@d>"), "TO:", SMTP_PARSE_SYNTAX);
	/* Parameters: keyword starts alnum, then alnum or '-'; value non-empty, no '='. */
	assert_path_rc(S("FROM:<a@b> -X"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> =1"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> SIZE="), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> SIZE= 1"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> A=b=c"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> S_IZE=1"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> SIZE=1\t"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> SIZE=\x7f"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> SIZE=1\0"), "FROM:", SMTP_PARSE_SYNTAX);
	assert_path_rc(S("FROM:<a@b> \xc3\xa9=1"), "FROM:", SMTP_PARSE_SYNTAX);
}

/* ---- DATA --------------------------------------------------------------- */

#define TEST_DATA_MAX 4096
#define TEST_CANARY   0x5a

struct data_run {
	char out[TEST_DATA_MAX];
	size_t out_len;
	size_t consumed;
	bool ended;
	struct smtp_data_decoder d;
};

/*
 * Decode in[0..n) cut at bounds[], with an output buffer of out_cap bytes
 * refilled as the caller of a streaming spool write would.
 */
static void data_feed(struct data_run *run, uint32_t max_line, uint64_t max_size, const char *in,
		      size_t n, const size_t *bounds, size_t nbounds, size_t out_cap)
{
	char out[TEST_DATA_MAX + 16];
	size_t start = 0;

	cr_assert_leq(out_cap, TEST_DATA_MAX);
	memset(run, 0, sizeof(*run));
	smtp_data_decoder_init(&run->d, max_line, max_size);
	for (size_t b = 0; b <= nbounds && !run->ended; b++) {
		size_t end = b < nbounds ? bounds[b] : n;
		while (start < end) {
			size_t used = 99, made = 99;
			memset(out, TEST_CANARY, out_cap + 16);
			enum smtp_data_status st = smtp_data_decode(
				&run->d, in + start, end - start, &used, out, out_cap, &made);
			cr_assert_leq(used, end - start);
			cr_assert_leq(made, out_cap);
			for (size_t k = out_cap; k < out_cap + 16; k++)
				cr_assert_eq(out[k], TEST_CANARY, "write past out_cap %zu",
					     out_cap);
			cr_assert_leq(run->out_len + made, TEST_DATA_MAX);
			memcpy(run->out + run->out_len, out, made);
			run->out_len += made;
			start += used;
			if (st == SMTP_DATA_END) {
				run->ended = true;
				break;
			}
			cr_assert(used > 0 || made > 0, "no progress");
		}
	}
	run->consumed = start;
}

static void data_assert_same(const struct data_run *a, const struct data_run *b, const char *how)
{
	assert_bytes_eq(how, a->out, a->out_len, b->out, b->out_len);
	cr_assert_eq(a->consumed, b->consumed, "%s: consumed", how);
	cr_assert_eq(a->ended, b->ended, "%s: ended", how);
	cr_assert_eq(a->d.size, b->d.size, "%s: size", how);
	cr_assert_eq(a->d.line_len, b->d.line_len, "%s: line_len", how);
	cr_assert_eq(a->d.bare_lf, b->d.bare_lf, "%s: bare_lf", how);
	cr_assert_eq(a->d.bare_cr, b->d.bare_cr, "%s: bare_cr", how);
	cr_assert_eq(a->d.nul, b->d.nul, "%s: nul", how);
	cr_assert_eq(a->d.line_too_long, b->d.line_too_long, "%s: line_too_long", how);
	cr_assert_eq(a->d.too_big, b->d.too_big, "%s: too_big", how);
}

struct data_expect {
	const char *body;
	size_t body_len;
	size_t consumed;
	bool ended, bare_lf, bare_cr, line_too_long, too_big, nul;
};

static void data_assert_expected(const struct data_run *run, const struct data_expect *want)
{
	assert_bytes_eq("body", run->out, run->out_len, want->body, want->body_len);
	cr_assert_eq(run->consumed, want->consumed, "consumed %zu, expected %zu", run->consumed,
		     want->consumed);
	cr_assert_eq(run->ended, want->ended, "ended");
	cr_assert_eq(run->d.bare_lf, want->bare_lf, "bare_lf");
	cr_assert_eq(run->d.bare_cr, want->bare_cr, "bare_cr");
	cr_assert_eq(run->d.nul, want->nul, "nul");
	cr_assert_eq(run->d.line_too_long, want->line_too_long, "line_too_long");
	cr_assert_eq(run->d.too_big, want->too_big, "too_big");
	if (!smtp_data_rejected(&run->d))
		cr_assert_eq(run->d.size, run->out_len, "size counts the body produced");
	else
		cr_assert_geq(run->d.size, run->out_len);
	cr_assert_leq(run->out_len, run->d.max_size, "never more than max_size produced");
}

static const size_t data_out_caps[] = {1, 2, 3, 5, 64, TEST_DATA_MAX};

/* Whole, every split with every output size, pairs of splits, byte by byte. */
static void data_assert_split_invariant(uint32_t max_line, uint64_t max_size, const char *in,
					size_t n, const struct data_expect *want)
{
	struct data_run whole, split;
	size_t bounds[2];
	char how[80];

	data_feed(&whole, max_line, max_size, in, n, NULL, 0, TEST_DATA_MAX);
	data_assert_expected(&whole, want);

	for (size_t c = 0; c < sizeof(data_out_caps) / sizeof(data_out_caps[0]); c++) {
		data_feed(&split, max_line, max_size, in, n, NULL, 0, data_out_caps[c]);
		snprintf(how, sizeof(how), "whole, out %zu", data_out_caps[c]);
		data_assert_same(&whole, &split, how);
		for (size_t s = 0; s <= n; s++) {
			bounds[0] = s;
			data_feed(&split, max_line, max_size, in, n, bounds, 1, data_out_caps[c]);
			snprintf(how, sizeof(how), "split at %zu, out %zu", s, data_out_caps[c]);
			data_assert_same(&whole, &split, how);
		}
	}
	for (size_t s = 0; s <= n; s++) {
		for (size_t t = s; t <= n; t++) {
			bounds[0] = s;
			bounds[1] = t;
			data_feed(&split, max_line, max_size, in, n, bounds, 2, 2);
			snprintf(how, sizeof(how), "split at %zu and %zu", s, t);
			data_assert_same(&whole, &split, how);
		}
	}

	size_t every[512];
	cr_assert_lt(n, sizeof(every) / sizeof(every[0]));
	for (size_t s = 1; s < n; s++)
		every[s - 1] = s;
	data_feed(&split, max_line, max_size, in, n, every, n ? n - 1 : 0, 1);
	data_assert_same(&whole, &split, "byte by byte, out 1");
}

#define BODY(lit) (lit), sizeof(lit) - 1

Test(smtp_data, dot_unstuffing_and_pipelined_tail)
{
	static const char in[] = "Subject: hi\r\n\r\n..leading dot\r\n...\r\n.x\r\nend.\r\n"
				 ".\r\nQUIT\r\n";
	const struct data_expect want = {
		BODY("Subject: hi\r\n\r\n.leading dot\r\n..\r\nx\r\nend.\r\n"),
		.consumed = sizeof(in) - 1 - 6,
		.ended = true,
	};
	data_assert_split_invariant(998, 1000, S(in), &want);
}

Test(smtp_data, empty_body)
{
	const struct data_expect want = {BODY(""), .consumed = 3, .ended = true};
	data_assert_split_invariant(998, 1000, S(".\r\nRSET\r\n"), &want);
}

Test(smtp_data, start_counts_as_line_start)
{
	/* The CRLF right at the start is body: the first line is empty. */
	const struct data_expect want = {BODY("\r\n"), .consumed = 5, .ended = true};
	data_assert_split_invariant(998, 1000, S("\r\n.\r\n"), &want);

	const struct data_expect want_stuffed = {BODY(".\r\n"), .consumed = 7, .ended = true};
	data_assert_split_invariant(998, 1000, S("..\r\n.\r\n"), &want_stuffed);
}

Test(smtp_data, unterminated_body_needs_more)
{
	const struct data_expect want = {BODY("abc\r\n"), .consumed = 7};
	data_assert_split_invariant(998, 1000, S("abc\r\n.\r"), &want);
}

Test(smtp_data, call_after_end)
{
	struct smtp_data_decoder d;
	char out[16];
	size_t used, made;

	smtp_data_decoder_init(&d, 998, 1000);
	cr_assert_eq(smtp_data_decode(&d, S("a\r\n.\r\nNOOP\r\n"), &used, out, sizeof(out), &made),
		     SMTP_DATA_END);
	cr_assert_eq(used, 6);
	cr_assert_eq(made, 3);
	cr_assert_eq(smtp_data_decode(&d, S("NOOP\r\n"), &used, out, sizeof(out), &made),
		     SMTP_DATA_END);
	cr_assert_eq(used, 0, "nothing past the end is taken");
	cr_assert_eq(made, 0);
}

Test(smtp_data, next_command_stays_in_input)
{
	static const char in[] = "Hi\r\n.\r\nMAIL FROM:<a@b>\r\n";
	struct smtp_data_decoder d;
	char out[16], buf[513];
	size_t used, made;
	struct smtp_line_reader r;
	struct smtp_command cmd;

	smtp_data_decoder_init(&d, 998, 1000);
	cr_assert_eq(smtp_data_decode(&d, S(in), &used, out, sizeof(out), &made), SMTP_DATA_END);
	cr_assert_eq(used, 7);
	smtp_line_reader_init(&r, buf, 512);
	size_t rest = sizeof(in) - 1 - used, line_used;
	cr_assert_eq(smtp_line_feed(&r, in + used, rest, &line_used), SMTP_LINE_READY);
	cr_assert_eq(line_used, rest);
	cr_assert_eq(smtp_command_parse(r.buf, r.len, &cmd), SMTP_PARSE_OK);
	cr_assert_eq(cmd.verb, SMTP_VERB_MAIL);
}

/*
 * SMTP smuggling (CVE-2023-51764/51765/51766): each of these looks like the
 * end of the data to some receiver. None may end it here; each is flagged,
 * and the real CRLF.CRLF that follows still ends the body exactly.
 */
Test(smtp_data, smuggling_variants_flagged)
{
	static const struct {
		const char *in;
		size_t len;
		bool bare_lf, bare_cr;
		const char *produced; /* before the first bare byte */
	} cases[] = {
		{S("a\n.\nMAIL FROM:<x@y>\r\n.\r\n"), true, false, "a"},
		{S("a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n"), true, false, "a\r\n"},
		{S("a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n"), true, false, "a"},
		{S("a\r.\r\nMAIL FROM:<x@y>\r\n.\r\n"), false, true, "a\r"},
		{S("a\r\n.\rMAIL FROM:<x@y>\r\n.\r\n"), false, true, "a\r\n"},
		{S("a\r\n.\r\r\nMAIL FROM:<x@y>\r\n.\r\n"), false, true, "a\r\n"},
		{S("\n.\nMAIL FROM:<x@y>\r\n.\r\n"), true, false, ""},
		{S("\r.\r\nMAIL FROM:<x@y>\r\n.\r\n"), false, true, "\r"},
		{S("a\r\n\n.\n\r\n.\r\n"), true, false, "a\r\n"},
		{S("a\r\n.\n\r\n.\r\n"), true, false, "a\r\n"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char input[128];
		size_t n = cases[i].len;
		/* A pipelined command after the real end must stay unread. */
		memcpy(input, cases[i].in, n);
		memcpy(input + n, "QUIT\r\n", 6);
		const struct data_expect want = {
			.body = cases[i].produced,
			.body_len = strlen(cases[i].produced),
			.consumed = n,
			.ended = true,
			.bare_lf = cases[i].bare_lf,
			.bare_cr = cases[i].bare_cr,
		};
		data_assert_split_invariant(998, 1000, input, n + 6, &want);
	}
}

/*
 * A NUL is flagged wherever it is: a next hop that drops NULs would take
 * CRLF NUL "." CRLF for the end of the data. Nothing from the NUL on is
 * produced, and only the real CRLF.CRLF ends the body.
 */
Test(smtp_data, nul_flagged)
{
	static const struct {
		const char *in;
		size_t len;
		const char *produced;
		bool bare_cr;
	} cases[] = {
		{S("a\r\n\0.\r\nMAIL FROM:<x@y>\r\n.\r\n"), "a\r\n", false},
		{S("hel\0lo\r\n.\r\n"), "hel", false},
		{S("\0\r\n.\r\n"), "", false},
		{S(".\0x\r\n.\r\n"), "", false},
		{S("a\r\0\r\n.\r\n"), "a\r", true},
		{S("a\r\n.\r\0\r\n.\r\n"), "a\r\n", true},
		{S("a run longer than the rest\0of the line\r\n.\r\n"),
		 "a run longer than the rest", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char input[128];
		size_t n = cases[i].len;
		memcpy(input, cases[i].in, n);
		memcpy(input + n, "QUIT\r\n", 6);
		const struct data_expect want = {
			.body = cases[i].produced,
			.body_len = strlen(cases[i].produced),
			.consumed = n,
			.ended = true,
			.bare_cr = cases[i].bare_cr,
			.nul = true,
		};
		data_assert_split_invariant(998, 1000, input, n + 6, &want);
	}
}

Test(smtp_data, real_end_after_bare_cr)
{
	/* CR CR LF "." CR LF does hold a CRLF.CRLF: the end is real, the first CR bare. */
	const struct data_expect want = {BODY("a\r"), .consumed = 7, .ended = true,
					 .bare_cr = true};
	data_assert_split_invariant(998, 1000, S("a\r\r\n.\r\nQUIT\r\n"), &want);
}

Test(smtp_data, rejected_keeps_counting_produces_nothing)
{
	struct data_run run;
	static const char in[] = "abc\ndefgh\r\nij\r\n.\r\n";

	data_feed(&run, 998, 1000, S(in), NULL, 0, 64);
	cr_assert(run.ended);
	cr_assert(run.d.bare_lf);
	cr_assert(smtp_data_rejected(&run.d));
	assert_bytes_eq("produced", run.out, run.out_len, S("abc"));
	cr_assert_eq(run.d.size, sizeof(in) - 1 - 3, "size keeps counting after rejection");
}

Test(smtp_data, size_limit)
{
	static const char in[] = "abcd\r\n..\r\n.\r\n";
	/* Decoded body "abcd\r\n.\r\n" is 9 octets. */
	const struct data_expect at = {BODY("abcd\r\n.\r\n"), .consumed = 13, .ended = true};
	data_assert_split_invariant(998, 9, S(in), &at);

	const struct data_expect over = {BODY("abcd\r\n.\r"), .consumed = 13, .ended = true,
					 .too_big = true};
	data_assert_split_invariant(998, 8, S(in), &over);

	struct data_run run;
	data_feed(&run, 998, 8, S(in), NULL, 0, 64);
	cr_assert_eq(run.d.size, 9, "the whole body is counted");

	const struct data_expect zero = {BODY(""), .consumed = 3, .ended = true};
	data_assert_split_invariant(998, 0, S(".\r\n"), &zero);
	const struct data_expect zero_over = {BODY(""), .consumed = 5, .ended = true,
					      .too_big = true};
	data_assert_split_invariant(998, 0, S("\r\n.\r\n"), &zero_over);
}

Test(smtp_data, line_limit)
{
	/* 4 octets per line; the stuffing dot was transmitted, so it counts. */
	static const char in[] = "abcd\r\n..bc\r\n\r\n.\r\n";
	const struct data_expect at = {BODY("abcd\r\n.bc\r\n\r\n"), .consumed = 17, .ended = true};
	data_assert_split_invariant(4, 1000, S(in), &at);

	const struct data_expect over = {BODY("abc"), .consumed = 17, .ended = true,
					 .line_too_long = true};
	data_assert_split_invariant(3, 1000, S(in), &over);

	static const char dotted[] = "abc\r\n..bc\r\n.\r\n";
	const struct data_expect dot_over = {BODY("abc\r\n.b"), .consumed = 14, .ended = true,
					     .line_too_long = true};
	data_assert_split_invariant(3, 1000, S(dotted), &dot_over);

	/* The final "." line is not text: it passes even with no room at all. */
	const struct data_expect empty = {BODY("\r\n"), .consumed = 5, .ended = true};
	data_assert_split_invariant(0, 1000, S("\r\n.\r\n"), &empty);
}

Test(smtp_data, line_limit_counts_bare_cr)
{
	/* A bare CR is an octet of its line; a CRLF's CR is not. */
	struct data_run run;

	data_feed(&run, 2, 1000, S("ab\r\nc\rd\r\n.\r\n"), NULL, 0, 64);
	cr_assert(run.d.bare_cr);
	cr_assert(run.d.line_too_long, "\"c\\rd\" is three octets");
	data_feed(&run, 3, 1000, S("ab\r\nc\rd\r\n.\r\n"), NULL, 0, 64);
	cr_assert(run.d.bare_cr);
	cr_assert_not(run.d.line_too_long);
}

Test(smtp_data, one_byte_output_buffer)
{
	static const char in[] = "..x\r\n.\r\n";
	struct smtp_data_decoder d;
	char out[2];
	char body[16];
	size_t off = 0, got = 0, used, made, calls = 0;
	enum smtp_data_status st;

	smtp_data_decoder_init(&d, 998, 1000);
	do {
		out[1] = TEST_CANARY;
		st = smtp_data_decode(&d, in + off, sizeof(in) - 1 - off, &used, out, 1, &made);
		cr_assert_leq(made, 1);
		cr_assert_eq(out[1], TEST_CANARY);
		memcpy(body + got, out, made);
		got += made;
		off += used;
		calls++;
	} while (st != SMTP_DATA_END);
	assert_bytes_eq("body", body, got, S(".x\r\n"));
	cr_assert_eq(off, sizeof(in) - 1);
	cr_assert_geq(calls, 4);
}

Test(smtp_data, long_body_every_output_size)
{
	/* Longer than the decoder's fast-path runs, with every kind of line. */
	char in[1200];
	size_t n = 0;
	char want[1200];
	size_t want_len = 0;

	for (int i = 0; i < 20; i++) {
		int len = snprintf(in + n, sizeof(in) - n, "%sline %d of the body, some text\r\n",
				   i % 3 == 0 ? ".." : "", i);
		int wlen =
			snprintf(want + want_len, sizeof(want) - want_len,
				 "%sline %d of the body, some text\r\n", i % 3 == 0 ? "." : "", i);
		n += (size_t)len;
		want_len += (size_t)wlen;
	}
	memcpy(in + n, ".\r\n", 3);
	n += 3;

	struct data_run whole, part;
	data_feed(&whole, 998, 100000, in, n, NULL, 0, TEST_DATA_MAX);
	assert_bytes_eq("body", whole.out, whole.out_len, want, want_len);
	cr_assert(whole.ended);
	for (size_t cap = 1; cap < 80; cap++) {
		size_t bounds[3] = {cap, n / 2, n / 2 + cap};
		data_feed(&part, 998, 100000, in, n, bounds, 3, cap);
		data_assert_same(&whole, &part, "long body");
	}
}

/* ---- the header section: Received: fields --------------------------------- */

static uint32_t received_in(const char *text, size_t piece)
{
	struct smtp_header_scan h = {0};
	size_t len = strlen(text);
	for (size_t at = 0; at < len; at += piece)
		smtp_header_scan_feed(&h, text + at, len - at < piece ? len - at : piece);
	return h.received;
}

Test(header_scan, counts_received_fields_of_the_header_section_only)
{
	static const char text[] = "Received: from a\r\n"
				   "\tby b\r\n"
				   "X-Received: not one\r\n"
				   "received:from c\r\n"
				   "Receive: no\r\n"
				   "RECEIVED: from d\r\n"
				   "\r\n"
				   "Received: in the body\r\n";
	for (size_t piece = 1; piece <= sizeof(text); piece++)
		cr_assert_eq(received_in(text, piece), 3, "split every %zu octets", piece);
	cr_assert_eq(received_in("\r\nReceived: x\r\n", 4), 0, "no header section");
	cr_assert_eq(received_in("Subject: x\r\n\rReceived: y\r\n", 64), 0,
		     "a CR alone at a line's start is no empty line, and no field either");
}
