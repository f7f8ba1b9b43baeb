/*
 * Tests for net/smtp_session: the server side of an SMTP session, driven
 * as the connection code drives it (bytes in, replies out) against the fake
 * store of tests/unit/fake_queue.c, which lets each test decide when a
 * commit completes, when the store pushes back and when it fails.
 *
 * Replies are compared whole: they are what a client (and a postmaster
 * reading a bounce) sees. Every reply taken from a session in any test also
 * goes through reply_problem(): each line ends in CRLF, and each 2xx/4xx/5xx
 * line other than the banner and the HELO/EHLO answers carries an enhanced
 * status code of the same class (RFC 2034, RFC 3463).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"
#include "net/policy.h"
#include "net/smtp_session.h"
#include "queue/queue.h"

/* ---- the fake store (tests/unit/fake_queue.c) ------------------------------ */

void fake_queue_reset(void);
void fake_queue_fail_begin(int error);
void fake_queue_write_result_at(unsigned index, int result);
unsigned fake_queue_count(void);
const char *fake_queue_state(unsigned i);
bool fake_queue_detached(unsigned i);
const char *fake_queue_id(unsigned i);
const char *fake_queue_envelope(unsigned i);
const char *fake_queue_body(unsigned i, size_t *len);
unsigned fake_queue_writes(unsigned i);
unsigned fake_queue_live(void);
bool fake_queue_commit_pending(void);
bool fake_queue_complete_commit(int status);
bool fake_queue_resume(void);
const char *fake_queue_violation(void);
void fake_queue_set_space(int error);

/* ---- fixture ------------------------------------------------------------- */

#define UNTRUSTED "192.0.2.1"
#define TRUSTED   "127.0.0.1"

#define BANNER "220 mx.test ESMTP ferry\r\n"
#define EHLO_REPLY                                                                                 \
	"250-mx.test\r\n"                                                                          \
	"250-PIPELINING\r\n"                                                                       \
	"250-SIZE 10000\r\n"                                                                       \
	"250-8BITMIME\r\n"                                                                         \
	"250-ENHANCEDSTATUSCODES\r\n"                                                              \
	"250 SMTPUTF8\r\n"
#define HELO_REPLY   "250 mx.test\r\n"
#define OK           "250 2.0.0 Ok\r\n"
#define MAIL_OK      "250 2.1.0 Ok\r\n"
#define RCPT_OK      "250 2.1.5 Ok\r\n"
#define GO_AHEAD     "354 End data with <CR><LF>.<CR><LF>\r\n"
#define BYE          "221 2.0.0 Bye\r\n"
#define HELO_FIRST   "503 5.5.1 Error: send HELO/EHLO first\r\n"
#define NESTED_MAIL  "503 5.5.1 Error: nested MAIL command\r\n"
#define NEED_MAIL    "503 5.5.1 Error: need MAIL command\r\n"
#define NEED_RCPT    "503 5.5.1 Error: need RCPT command\r\n"
#define VRFY_REPLY   "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
#define EXPN_REPLY   "502 5.5.1 EXPN is not supported\r\n"
#define HELP_REPLY   "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\r\n"
#define ETRN_REPLY   "502 5.5.1 Error: ETRN is not available on this server\r\n"
#define ETRN_IN_MAIL "503 5.5.1 Error: ETRN is not allowed inside a mail transaction\r\n"
#define UNKNOWN      "500 5.5.2 Error: command not recognized\r\n"
#define EMPTY_LINE   "500 5.5.2 Error: bad syntax\r\n"
#define SMUGGLING                                                                                  \
	"550 5.6.0 Message refused: bare LF or bare CR in message data (only CRLF line "           \
	"endings are allowed)\r\n"
#define TOO_BIG            "552 5.3.4 Message size exceeds fixed limit of 10000 octets\r\n"
#define WRITE_ERROR        "451 4.3.0 Error: queue file write error\r\n"
#define NO_SPACE           "452 4.3.1 Error: insufficient system storage, try again later\r\n"
#define SHUTTING_DOWN      "421 4.3.2 mx.test Service shutting down\r\n"
#define TIMEOUT            "421 4.4.2 mx.test Error: timeout exceeded\r\n"
#define TOO_MANY_ERRORS    "421 4.7.0 mx.test Error: too many errors; closing\r\n"
#define RELAY_DENIED(rcpt) "554 5.7.1 <" rcpt ">: Relay access denied\r\n"
#define ROUTING_DENIED(rcpt)                                                                       \
	"554 5.7.1 <" rcpt ">: Relay access denied (routing characters in the local part)\r\n"
#define NOT_IMPLEMENTED(verb) "502 5.5.1 Error: " verb " not implemented\r\n"

static const char *const relay_domains[] = {"relay.example"};
static struct policy_network trusted_networks[1];
static struct policy policy;
static struct smtp_settings settings;
static struct queue *queue;

static struct smtp_session session;
static bool session_live;
static unsigned wakes;
static size_t consumed; /* what the last feed_bytes() consumed */

static void test_wake(struct smtp_session *s)
{
	cr_assert_eq(s, &session);
	wakes++;
}

static const struct smtp_session_hooks hooks = {.wake = test_wake};

static void setup(void)
{
	log_setup(LOG_LEVEL_ERROR, LOG_TO_STDERR);
	cr_assert_eq(policy_parse_network("127.0.0.0/8", &trusted_networks[0]), 0);
	policy = (struct policy){
		.trusted = trusted_networks,
		.ntrusted = 1,
	};
	cr_assert_eq(policy_domains_build(&policy.relay_domains, relay_domains, 1), 0);
	settings = (struct smtp_settings){
		.hostname = "mx.test",
		.max_command_line = 512,
		.max_text_line = 1000,
		.max_message_size = 10000,
		.max_recipients = 5,
		.recipient_overshoot = 3,
		.max_errors = 10,
		.max_commands = 1000,
		.max_messages = 3,
		.policy = &policy,
		.postmaster = "hostmaster@isp.test",
		.max_received_headers = 3,
	};
	fake_queue_reset();
	cr_assert_eq(queue_open(&queue, NULL, NULL, 0), 0);
	session_live = false;
	wakes = 0;
}

static void teardown(void)
{
	if (session_live)
		smtp_session_destroy(&session);
	session_live = false;
	queue_close(queue);
	fake_queue_reset();
	policy_domains_free(policy.relay_domains);
	policy.relay_domains = NULL;
}

TestSuite(session, .init = setup, .fini = teardown);

/* ---- replies ------------------------------------------------------------- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Digits from *p (1 to 3 of them), then `next`. */
static bool skip_number(const char **p, const char *end, char next)
{
	size_t n = 0;
	while (*p < end && is_digit(**p) && n < 4) {
		(*p)++;
		n++;
	}
	if (n == 0 || n > 3)
		return false;
	if (next == '\0')
		return true;
	return *p < end && **p == next && ((*p)++, true);
}

/*
 * NULL when `text` is a well-formed run of replies, else what is wrong.
 * Every line ends in CRLF with no other CR or LF, starts with a 3-digit
 * code and ' ' or '-'; every 2xx, 4xx and 5xx line carries "c.s.d " with c
 * the code's class, except the 220 banner, the multi-line EHLO answer and
 * the one-line HELO answer (RFC 2034 section 3 exempts those).
 */
static const char *reply_problem(const char *text, unsigned *lines)
{
	bool in_ehlo = false;
	const char *p = text;
	while (*p != '\0') {
		const char *eol = strstr(p, "\r\n");
		if (eol == NULL)
			return "reply not ended by CRLF";
		const char *end = eol;
		if (memchr(p, '\r', (size_t)(end - p)) != NULL ||
		    memchr(p, '\n', (size_t)(end - p)) != NULL)
			return "bare CR or LF inside a reply line";
		if (end - p < 4 || !is_digit(p[0]) || !is_digit(p[1]) || !is_digit(p[2]) ||
		    (p[3] != ' ' && p[3] != '-'))
			return "reply line without a 3-digit code and a separator";
		bool continued = p[3] == '-';
		bool ehlo_start = strncmp(p, "250-mx.test\r\n", 13) == 0;
		bool exempt = in_ehlo || ehlo_start || strncmp(p, "220 ", 4) == 0 ||
			      strncmp(p, HELO_REPLY, strlen(HELO_REPLY)) == 0 || p[0] == '3';
		if (!exempt && (p[0] == '2' || p[0] == '4' || p[0] == '5')) {
			const char *q = p + 4;
			if (q >= end || *q != p[0] || q + 1 >= end || q[1] != '.')
				return "2xx/4xx/5xx reply without an enhanced status code of its "
				       "class";
			q += 2;
			if (!skip_number(&q, end, '.') || !skip_number(&q, end, '\0'))
				return "malformed enhanced status code";
			if (q != end && *q != ' ')
				return "enhanced status code not followed by a space";
		}
		if (continued && !in_ehlo && !ehlo_start)
			return "multi-line reply other than the EHLO answer";
		in_ehlo = continued && (in_ehlo || ehlo_start);
		(*lines)++;
		p = eol + 2;
	}
	if (in_ehlo)
		return "multi-line reply without its last line";
	return NULL;
}

#define REPLY_SLOTS 4
#define REPLY_CAP   (1u << 16)
static char reply_slots[REPLY_SLOTS][REPLY_CAP];
static unsigned reply_next_slot;
static unsigned reply_lines_checked;

/* The replies gathered in s->out since the last call, as a string (valid
 * for the next REPLY_SLOTS - 1 calls); s->out is emptied. */
static const char *take(void)
{
	struct buf *out = &session.out;
	size_t n = buf_len(out);
	cr_assert_lt(n, REPLY_CAP, "replies too long for the test buffer");
	char *text = reply_slots[reply_next_slot++ % REPLY_SLOTS];
	if (n > 0)
		memcpy(text, buf_head(out), n);
	text[n] = '\0';
	buf_consume(out, n);
	const char *problem = reply_problem(text, &reply_lines_checked);
	cr_assert_null(problem, "%s in:\n%s", problem, text);
	const char *violation = fake_queue_violation();
	cr_assert_null(violation, "queue contract broken: %s", violation);
	return text;
}

static struct sockaddr_storage client_sockaddr(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, text, &sin->sin_addr), 1);
	}
	return ss;
}

/* A session for `client`, banner not sent. */
static void open_session(const char *client)
{
	if (session_live)
		smtp_session_destroy(&session);
	struct sockaddr_storage ss = client_sockaddr(client);
	cr_assert_eq(smtp_session_init(&session, &settings, &hooks, queue,
				       (const struct sockaddr *)&ss, client, "0000000000000001"),
		     0);
	session_live = true;
}

static const char *feed_bytes(const char *data, size_t len)
{
	consumed = smtp_session_feed(&session, data, len);
	cr_assert_leq(consumed, len);
	return take();
}

static const char *feed(const char *text)
{
	return feed_bytes(text, strlen(text));
}

/* Feed that the session must take whole. */
static const char *feed_all(const char *text)
{
	const char *replies = feed(text);
	cr_assert_eq(consumed, strlen(text), "only %zu of %zu bytes consumed of:\n%s", consumed,
		     strlen(text), text);
	return replies;
}

#define expect(input, want)                                                                        \
	do {                                                                                       \
		const char *got_ = feed_all(input);                                                \
		cr_assert_str_eq(got_, want, "after:\n%s", input);                                 \
	} while (0)

static void connect_client(const char *client)
{
	open_session(client);
	smtp_session_greet(&session);
	cr_assert_str_eq(take(), BANNER);
	cr_assert_eq(session.state, SMTP_STATE_READY);
}

/* The EHLO answer for the current settings (EHLO_REPLY for the defaults). */
static const char *ehlo_reply(void)
{
	static char text[256];
	snprintf(text, sizeof(text),
		 "250-mx.test\r\n250-PIPELINING\r\n250-SIZE %llu\r\n%s250-8BITMIME\r\n"
		 "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n",
		 (unsigned long long)settings.max_message_size,
		 settings.etrn != NULL ? "250-ETRN\r\n" : "");
	return text;
}

static void to_helo(const char *client)
{
	connect_client(client);
	expect("EHLO client.test\r\n", ehlo_reply());
}

static void to_mail(const char *client)
{
	to_helo(client);
	expect("MAIL FROM:<sender@client.test>\r\n", MAIL_OK);
}

static void to_rcpt(const char *client)
{
	to_mail(client);
	expect("RCPT TO:<user@relay.example>\r\n", RCPT_OK);
}

static void to_data(const char *client)
{
	to_rcpt(client);
	expect("DATA\r\n", GO_AHEAD);
	cr_assert_eq(session.state, SMTP_STATE_DATA);
}

/* Complete the store's oldest commit; returns the replies that produced. */
static const char *commit(int status)
{
	unsigned before = wakes;
	cr_assert(fake_queue_complete_commit(status), "no commit was pending");
	cr_assert_eq(wakes, before + 1, "committed() must wake the owner");
	cr_assert(!session.waiting);
	return take();
}

/* "250 2.0.0 Ok: queued as <id of message i>\r\n" */
static const char *queued(unsigned i)
{
	static char text[REPLY_SLOTS][80];
	static unsigned next;
	char *t = text[next++ % REPLY_SLOTS];
	snprintf(t, sizeof(text[0]), "250 2.0.0 Ok: queued as %s\r\n", fake_queue_id(i));
	return t;
}

/* a then b, in a buffer valid for a few calls */
static const char *joined(const char *a, const char *b)
{
	static char text[REPLY_SLOTS][512];
	static unsigned next;
	char *t = text[next++ % REPLY_SLOTS];
	snprintf(t, sizeof(text[0]), "%s%s", a, b);
	return t;
}

/* The end of a DATA body: the session parks until the store commits. */
static void expect_parked_for_commit(unsigned message)
{
	cr_assert_eq(session.state, SMTP_STATE_COMMIT);
	cr_assert(session.waiting);
	cr_assert_str_eq(fake_queue_state(message), "committing");
}

/* Body bytes stored for message i, after the Received header. */
static const char *stored_body(unsigned i)
{
	const char *body = fake_queue_body(i, NULL);
	cr_assert_eq(strncmp(body, "Received: ", 10), 0, "stored body:\n%s", body);
	/* The header is its first line and the continuation lines after it. */
	const char *p = strstr(body, "\r\n");
	while (p != NULL && p[2] == '\t')
		p = strstr(p + 2, "\r\n");
	cr_assert_not_null(p, "Received header not complete in:\n%s", body);
	return p + 2;
}

/* ---- the reply checker itself ------------------------------------------ */

Test(session, reply_checker_catches_missing_enhanced_codes)
{
	unsigned n = 0;
	cr_assert_null(reply_problem(BANNER EHLO_REPLY HELO_REPLY OK GO_AHEAD BYE, &n));
	cr_assert_eq(n, 11);
	cr_assert_not_null(reply_problem("250 Ok\r\n", &n));
	cr_assert_not_null(reply_problem("550 4.1.1 wrong class\r\n", &n));
	cr_assert_not_null(reply_problem("451 4.3 Error\r\n", &n));
	cr_assert_not_null(reply_problem("250 2.0.0 Ok\n", &n));
	cr_assert_not_null(reply_problem("250 2.0.0 O\rk\r\n", &n));
	cr_assert_not_null(reply_problem("250-2.0.0 first\r\n250 2.0.0 last\r\n", &n));
	cr_assert_not_null(reply_problem("250-mx.test\r\n250-PIPELINING\r\n", &n));
}

/* ---- greeting, HELO, EHLO ------------------------------------------------ */

Test(session, banner)
{
	open_session(UNTRUSTED);
	cr_assert_eq(session.state, SMTP_STATE_GREETING);
	cr_assert_str_eq(take(), "");
	smtp_session_greet(&session);
	cr_assert_str_eq(take(), BANNER);
	cr_assert_eq(session.state, SMTP_STATE_READY);
	cr_assert(!session.client_trusted);
}

Test(session, ehlo_lists_the_extensions)
{
	cr_assert_str_eq(ehlo_reply(), EHLO_REPLY);
	to_helo(UNTRUSTED);
	cr_assert(session.esmtp);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	const char *r = feed_all("EHLO again.test\r\n");
	cr_assert_str_eq(r, EHLO_REPLY);
	cr_assert_null(strstr(r, "ETRN"), "no ETRN hook set: not advertised");
	cr_assert_null(strstr(r, "STARTTLS"), "no TLS configured: not advertised");
	cr_assert_null(strstr(r, "CHUNKING"));
	cr_assert_str_eq(session.helo, "again.test");
}

Test(session, helo_answer)
{
	connect_client(UNTRUSTED);
	expect("HELO\r\n", "501 5.5.4 Syntax: HELO hostname\r\n");
	expect("EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n");
	cr_assert_eq(session.state, SMTP_STATE_READY);
	expect("HELO client.test\r\n", HELO_REPLY);
	cr_assert(!session.esmtp);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	cr_assert_str_eq(session.helo, "client.test");
	/* A HELO client still gets a whole transaction, without parameters. */
	expect("MAIL FROM:<sender@client.test>\r\n", MAIL_OK);
	expect("RCPT TO:<user@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\nhello\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
}

#define BAD_HELO(verb)                                                                             \
	"501 5.5.2 Error: " verb " needs a host name (mail.example.com) or an address literal "    \
	"([192.0.2.1])\r\n"

/* Written into Received: as sent, so nothing that could end the header,
 * open a comment or hide the client's address may get through. */
Test(session, helo_name_must_be_a_host_name_or_literal)
{
	static const char *const refused[] = {
		"!@#$%^&*(",
		"host(comment",
		"host)",
		"a b",
		"a\tb",
		"bad\x01name",
		"caf\xc3\xa9.example",
		"host\rname",
		"\"quoted\"",
		"host;x",
		"<host>",
		"[192.0.2.1",
		"[192.0.2.256]",
		"[IPv6:zz]",
		"[x-tag:y]",
		"a..b",
		".a",
		".",
		"a@b.example",
		"host\\name",
		"a.b.example..",
	};
	settings.max_errors = 100;
	connect_client(UNTRUSTED);
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		char line[128];
		snprintf(line, sizeof(line), "%s %s\r\n", i % 2 ? "HELO" : "EHLO", refused[i]);
		cr_assert_str_eq(feed_all(line), i % 2 ? BAD_HELO("HELO") : BAD_HELO("EHLO"), "%s",
				 refused[i]);
		cr_assert_eq(session.state, SMTP_STATE_READY, "%s", refused[i]);
	}
	/* A refused EHLO leaves a greeted session and its transaction alone. */
	to_mail(UNTRUSTED);
	expect("EHLO (x)\r\n", BAD_HELO("EHLO"));
	cr_assert_eq(session.state, SMTP_STATE_MAIL);
	cr_assert_str_eq(session.helo, "client.test");

	/* What real clients send, broken ones included. */
	static const char *const accepted[] = {
		"mail.example.com",
		"MX1.Example.COM",
		"localhost",
		"my_pc",
		"my_host.corp.example",
		"host.example.",
		"-dash-.example",
		"192.0.2.1",
		"[192.0.2.1]",
		"[IPv6:2001:db8::1]",
		"[ipv6:::1]",
		"xn--bcher-kva.example",
	};
	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		char line[128];
		snprintf(line, sizeof(line), "HELO %s\r\n", accepted[i]);
		connect_client(UNTRUSTED);
		cr_assert_str_eq(feed_all(line), HELO_REPLY, "%s", accepted[i]);
		cr_assert_str_eq(session.helo, accepted[i]);
	}
}

/* ---- every command in every command state --------------------------------- */

enum { AT_READY, AT_HELO, AT_MAIL, AT_RCPT, AT_COUNT };

struct state_case {
	const char *line;
	const char *reply[AT_COUNT];
	enum smtp_state after[AT_COUNT];
};

#define SAME SMTP_STATE_GREETING /* "state unchanged" in the table below */

static const struct state_case state_cases[] = {
	{"HELO other.test",
	 {HELO_REPLY, HELO_REPLY, HELO_REPLY, HELO_REPLY},
	 {SMTP_STATE_HELO, SMTP_STATE_HELO, SMTP_STATE_HELO, SMTP_STATE_HELO}},
	{"EHLO other.test",
	 {EHLO_REPLY, EHLO_REPLY, EHLO_REPLY, EHLO_REPLY},
	 {SMTP_STATE_HELO, SMTP_STATE_HELO, SMTP_STATE_HELO, SMTP_STATE_HELO}},
	{"MAIL FROM:<other@client.test>",
	 {HELO_FIRST, MAIL_OK, NESTED_MAIL, NESTED_MAIL},
	 {SAME, SMTP_STATE_MAIL, SAME, SAME}},
	{"RCPT TO:<another@relay.example>",
	 {HELO_FIRST, NEED_MAIL, RCPT_OK, RCPT_OK},
	 {SAME, SAME, SMTP_STATE_RCPT, SMTP_STATE_RCPT}},
	{"DATA", {HELO_FIRST, NEED_MAIL, NEED_RCPT, GO_AHEAD}, {SAME, SAME, SAME, SMTP_STATE_DATA}},
	{"RSET",
	 {OK, OK, OK, OK},
	 {SMTP_STATE_READY, SMTP_STATE_HELO, SMTP_STATE_HELO, SMTP_STATE_HELO}},
	{"NOOP", {OK, OK, OK, OK}, {SAME, SAME, SAME, SAME}},
	{"QUIT",
	 {BYE, BYE, BYE, BYE},
	 {SMTP_STATE_CLOSED, SMTP_STATE_CLOSED, SMTP_STATE_CLOSED, SMTP_STATE_CLOSED}},
	{"VRFY postmaster",
	 {VRFY_REPLY, VRFY_REPLY, VRFY_REPLY, VRFY_REPLY},
	 {SAME, SAME, SAME, SAME}},
	{"EXPN staff", {EXPN_REPLY, EXPN_REPLY, EXPN_REPLY, EXPN_REPLY}, {SAME, SAME, SAME, SAME}},
	{"HELP", {HELP_REPLY, HELP_REPLY, HELP_REPLY, HELP_REPLY}, {SAME, SAME, SAME, SAME}},
	{"ETRN relay.example",
	 {HELO_FIRST, ETRN_REPLY, ETRN_IN_MAIL, ETRN_IN_MAIL},
	 {SAME, SAME, SAME, SAME}},
	{"STARTTLS",
	 {NOT_IMPLEMENTED("STARTTLS"), NOT_IMPLEMENTED("STARTTLS"), NOT_IMPLEMENTED("STARTTLS"),
	  NOT_IMPLEMENTED("STARTTLS")},
	 {SAME, SAME, SAME, SAME}},
	{"AUTH PLAIN AHVzZXIAc2VjcmV0",
	 {NOT_IMPLEMENTED("AUTH"), NOT_IMPLEMENTED("AUTH"), NOT_IMPLEMENTED("AUTH"),
	  NOT_IMPLEMENTED("AUTH")},
	 {SAME, SAME, SAME, SAME}},
	{"BDAT 10 LAST",
	 {NOT_IMPLEMENTED("BDAT"), NOT_IMPLEMENTED("BDAT"), NOT_IMPLEMENTED("BDAT"),
	  NOT_IMPLEMENTED("BDAT")},
	 {SAME, SAME, SAME, SAME}},
	{"XYZZY plugh", {UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN}, {SAME, SAME, SAME, SAME}},
	{"MAILX FROM:<a@client.test>",
	 {UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN},
	 {SAME, SAME, SAME, SAME}},
	{"", {EMPTY_LINE, EMPTY_LINE, EMPTY_LINE, EMPTY_LINE}, {SAME, SAME, SAME, SAME}},
};

static const char *const state_names[AT_COUNT] = {"READY", "HELO", "MAIL", "RCPT"};

static void run_state_cases(int at)
{
	static const enum smtp_state entry_state[AT_COUNT] = {SMTP_STATE_READY, SMTP_STATE_HELO,
							      SMTP_STATE_MAIL, SMTP_STATE_RCPT};
	for (size_t i = 0; i < sizeof(state_cases) / sizeof(state_cases[0]); i++) {
		const struct state_case *c = &state_cases[i];
		switch (at) {
		case AT_READY:
			connect_client(UNTRUSTED);
			break;
		case AT_HELO:
			to_helo(UNTRUSTED);
			break;
		case AT_MAIL:
			to_mail(UNTRUSTED);
			break;
		default:
			to_rcpt(UNTRUSTED);
			break;
		}
		cr_assert_eq(session.state, entry_state[at]);
		char line[128];
		snprintf(line, sizeof(line), "%s\r\n", c->line);
		const char *got = feed_all(line);
		cr_assert_str_eq(got, c->reply[at], "\"%s\" in state %s", c->line, state_names[at]);
		enum smtp_state want = c->after[at] == SAME ? entry_state[at] : c->after[at];
		cr_assert_eq(session.state, want, "\"%s\" in state %s: state %d, expected %d",
			     c->line, state_names[at], session.state, want);
		cr_assert_eq(session.want_close, want == SMTP_STATE_CLOSED);
	}
}

Test(session, every_command_before_helo)
{
	run_state_cases(AT_READY);
}

Test(session, every_command_after_ehlo)
{
	run_state_cases(AT_HELO);
}

Test(session, every_command_after_mail)
{
	run_state_cases(AT_MAIL);
}

Test(session, every_command_after_rcpt)
{
	run_state_cases(AT_RCPT);
}

Test(session, sequence_errors_leave_the_transaction_alone)
{
	connect_client(UNTRUSTED);
	expect("MAIL FROM:<sender@client.test>\r\n", HELO_FIRST);
	expect("EHLO client.test\r\n", EHLO_REPLY);
	expect("RCPT TO:<user@relay.example>\r\n", NEED_MAIL);
	expect("DATA\r\n", NEED_MAIL);
	expect("MAIL FROM:<sender@client.test>\r\n", MAIL_OK);
	expect("DATA\r\n", NEED_RCPT);
	expect("MAIL FROM:<second@client.test>\r\n", NESTED_MAIL);
	expect("ETRN relay.example\r\n", ETRN_IN_MAIL);
	expect("RCPT TO:<user@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\nbody\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	/* The nested MAIL changed nothing: the first sender stands. */
	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo client.test\n"
						 "sender sender@client.test\n"
						 "rcpt user@relay.example\n");
	expect("ETRN relay.example\r\n", ETRN_REPLY);
}

Test(session, syntax_errors)
{
	to_helo(UNTRUSTED);
	expect("MAIL sender@client.test\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect("MAIL FROM:sender@client.test\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect("MAIL FROM:<postmaster>\r\n",
	       "501 5.1.7 Bad sender address syntax: address has no domain\r\n");
	expect("MAIL FROM:<sender@client.test>\r\n", MAIL_OK);
	expect("RCPT TO:user@relay.example\r\n", "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
	expect("RCPT TO:<>\r\n",
	       "501 5.1.3 Bad recipient address syntax: null address not allowed here\r\n");
	expect("RCPT TO:<user@relay.example>\r\n", RCPT_OK);
	expect("DATA now\r\n", "501 5.5.4 Syntax: DATA\r\n");
	expect("VRFY\r\n", "501 5.5.4 Syntax: VRFY address\r\n");
	cr_assert_eq(session.state, SMTP_STATE_RCPT);
}

/* ---- pipelining ------------------------------------------------------------ */

Test(session, pipelined_transaction_in_one_feed)
{
	to_helo(UNTRUSTED);
	const char *input = "MAIL FROM:<sender@client.test>\r\n"
			    "RCPT TO:<user@relay.example>\r\n"
			    "RCPT TO:<other@relay.example>\r\n"
			    "DATA\r\n"
			    "Subject: pipelined\r\n"
			    "\r\n"
			    "hello\r\n"
			    ".\r\n"
			    "QUIT\r\n";
	const char *r = feed(input);
	cr_assert_str_eq(r, MAIL_OK RCPT_OK RCPT_OK GO_AHEAD);
	/* Parked right after the final dot: QUIT is not acted on yet. */
	cr_assert_eq(consumed, strlen(input) - strlen("QUIT\r\n"));
	expect_parked_for_commit(0);
	cr_assert_eq(fake_queue_count(), 1);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	expect(input + consumed, BYE);
	cr_assert(session.want_close);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert_str_eq(stored_body(0), "Subject: pipelined\r\n\r\nhello\r\n");
}

Test(session, pipelined_transactions_back_to_back)
{
	to_helo(UNTRUSTED);
	const char *input = "MAIL FROM:<first@client.test>\r\n"
			    "RCPT TO:<one@relay.example>\r\n"
			    "DATA\r\n"
			    "first\r\n"
			    ".\r\n"
			    "MAIL FROM:<second@client.test>\r\n"
			    "RCPT TO:<two@relay.example>\r\n"
			    "DATA\r\n"
			    "second\r\n"
			    ".\r\n"
			    "QUIT\r\n";
	size_t len = strlen(input);
	const char *r = feed(input);
	cr_assert_str_eq(r, MAIL_OK RCPT_OK GO_AHEAD);
	size_t first = consumed;
	cr_assert_lt(first, len);
	cr_assert_eq(strncmp(input + first, "MAIL FROM:<second", 17), 0);
	expect_parked_for_commit(0);

	/* While the store works, the session takes nothing more. */
	cr_assert_str_eq(feed(input + first), "");
	cr_assert_eq(consumed, 0);
	cr_assert_eq(fake_queue_count(), 1);

	cr_assert_str_eq(commit(0), queued(0));
	r = feed(input + first);
	cr_assert_str_eq(r, MAIL_OK RCPT_OK GO_AHEAD);
	size_t second = first + consumed;
	cr_assert_eq(strcmp(input + second, "QUIT\r\n"), 0);
	expect_parked_for_commit(1);
	cr_assert_str_eq(commit(0), queued(1));
	expect(input + second, BYE);

	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo client.test\n"
						 "sender first@client.test\n"
						 "rcpt one@relay.example\n");
	cr_assert_str_eq(fake_queue_envelope(1), "client 192.0.2.1\nhelo client.test\n"
						 "sender second@client.test\n"
						 "rcpt two@relay.example\n");
	cr_assert_str_eq(stored_body(0), "first\r\n");
	cr_assert_str_eq(stored_body(1), "second\r\n");
	cr_assert_str_neq(fake_queue_id(0), fake_queue_id(1));
}

Test(session, input_split_at_every_byte)
{
	to_helo(UNTRUSTED);
	const char *input = "MAIL FROM:<sender@client.test>\r\n"
			    "RCPT TO:<user@relay.example>\r\n"
			    "DATA\r\n"
			    "..dot\r\n"
			    "line\r\n"
			    ".\r\n";
	char replies[512] = "";
	for (size_t i = 0; input[i] != '\0'; i++) {
		strcat(replies, feed_bytes(input + i, 1));
		cr_assert_eq(consumed, 1, "byte %zu not consumed", i);
	}
	cr_assert_str_eq(replies, MAIL_OK RCPT_OK GO_AHEAD);
	expect_parked_for_commit(0);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(stored_body(0), ".dot\r\nline\r\n");
}

Test(session, nothing_after_quit_is_read)
{
	to_helo(UNTRUSTED);
	const char *r = feed("QUIT\r\nNOOP\r\nMAIL FROM:<a@client.test>\r\n");
	cr_assert_str_eq(r, BYE);
	cr_assert_eq(consumed, strlen("QUIT\r\n"));
	cr_assert(session.want_close);
	cr_assert_str_eq(feed("NOOP\r\n"), "");
	cr_assert_eq(consumed, 0);
}

/* ---- RSET, EHLO mid-transaction ----------------------------------------- */

Test(session, rset_clears_the_transaction)
{
	to_rcpt(UNTRUSTED);
	expect("RSET\r\n", OK);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	cr_assert_eq(session.nrecipients, 0);
	cr_assert_eq(session.sender_len, 0);
	expect("DATA\r\n", NEED_MAIL);
	expect("RCPT TO:<user@relay.example>\r\n", NEED_MAIL);
	/* A new transaction carries nothing of the old one. */
	expect("MAIL FROM:<new@client.test>\r\n", MAIL_OK);
	expect("RSET\r\n", OK);
	expect("MAIL FROM:<newer@client.test>\r\n", MAIL_OK);
	expect("RCPT TO:<fresh@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\nx\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo client.test\n"
						 "sender newer@client.test\n"
						 "rcpt fresh@relay.example\n");
	cr_assert_eq(fake_queue_count(), 1);
}

Test(session, ehlo_mid_transaction_resets_it)
{
	to_rcpt(UNTRUSTED);
	expect("EHLO again.test\r\n", EHLO_REPLY);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	expect("DATA\r\n", NEED_MAIL);
	expect("RCPT TO:<user@relay.example>\r\n", NEED_MAIL);
	expect("MAIL FROM:<after@client.test>\r\n", MAIL_OK);
	expect("RCPT TO:<later@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\nx\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo again.test\n"
						 "sender after@client.test\n"
						 "rcpt later@relay.example\n");
}

/* ---- limits ------------------------------------------------------------------ */

Test(session, recipient_limit)
{
	to_mail(UNTRUSTED);
	for (int i = 1; i <= 5; i++) {
		char line[64];
		snprintf(line, sizeof(line), "RCPT TO:<user%d@relay.example>\r\n", i);
		expect(line, RCPT_OK);
	}
	expect("RCPT TO:<user6@relay.example>\r\n", "452 4.5.3 Error: too many recipients\r\n");
	cr_assert_eq(session.nrecipients, 5);
	cr_assert_eq(session.errors, 0, "within recipient_overshoot: no error");
	expect("DATA\r\nx\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0),
			 "client 192.0.2.1\nhelo client.test\nsender sender@client.test\n"
			 "rcpt user1@relay.example\nrcpt user2@relay.example\n"
			 "rcpt user3@relay.example\nrcpt user4@relay.example\n"
			 "rcpt user5@relay.example\n");
}

#define TOO_MANY_RCPTS "452 4.5.3 Error: too many recipients\r\n"

/* RCPT lines for <user{first}@relay.example> .. <user{last - 1}@...>. */
static void rcpt_lines(char *text, size_t size, int first, int last)
{
	size_t n = 0;
	text[0] = '\0';
	for (int i = first; i < last; i++)
		n += (size_t)snprintf(text + n, size - n, "RCPT TO:<user%d@relay.example>\r\n", i);
}

/* `what`, `times` over. */
static void repeat(char *text, size_t size, const char *what, int times)
{
	text[0] = '\0';
	for (int i = 0; i < times; i++)
		strncat(text, what, size - strlen(text) - 1);
}

Test(session, recipient_overshoot_is_no_error)
{
	/* max_recipients 5, recipient_overshoot 3, max_errors 10. */
	static char input[4096], want[4096], part[1024];
	to_mail(UNTRUSTED);
	rcpt_lines(input, sizeof(input), 1, 10);
	repeat(want, sizeof(want), RCPT_OK, 5);
	repeat(part, sizeof(part), TOO_MANY_RCPTS, 4);
	strcat(want, part);
	expect(input, want);
	cr_assert_eq(session.nrecipients, 5);
	cr_assert_eq(session.errors, 1, "only the 452 past the allowance counts");
	expect("DATA\r\nx\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0),
			 "client 192.0.2.1\nhelo client.test\nsender sender@client.test\n"
			 "rcpt user1@relay.example\nrcpt user2@relay.example\n"
			 "rcpt user3@relay.example\nrcpt user4@relay.example\n"
			 "rcpt user5@relay.example\n");

	/* The allowance is per transaction; past it, each 452 counts until
	 * max_errors closes the session, and the pipelined DATA is not read. */
	expect("MAIL FROM:<sender@client.test>\r\n", MAIL_OK);
	rcpt_lines(input, sizeof(input), 1, 18);
	strcat(input, "DATA\r\n");
	repeat(want, sizeof(want), RCPT_OK, 5);
	repeat(part, sizeof(part), TOO_MANY_RCPTS, 3 + 9);
	strcat(want, part);
	strcat(want, TOO_MANY_ERRORS);
	cr_assert_str_eq(feed(input), want);
	cr_assert_eq(session.errors, 10);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert_eq(fake_queue_count(), 1);
}

Test(session, recipient_overshoot_zero_counts_every_452)
{
	settings.recipient_overshoot = 0;
	to_mail(UNTRUSTED);
	static char input[1024];
	rcpt_lines(input, sizeof(input), 1, 8);
	expect(input,
	       joined(RCPT_OK RCPT_OK RCPT_OK RCPT_OK RCPT_OK, TOO_MANY_RCPTS TOO_MANY_RCPTS));
	cr_assert_eq(session.errors, 2);
}

Test(session, error_limit_closes_with_421)
{
	to_helo(UNTRUSTED);
	for (int i = 1; i < 10; i++)
		expect("XYZZY\r\n", UNKNOWN);
	cr_assert_eq(session.errors, 9);
	cr_assert(!session.want_close);
	const char *r = feed("XYZZY\r\nNOOP\r\n");
	cr_assert_str_eq(r, UNKNOWN TOO_MANY_ERRORS);
	cr_assert_eq(consumed, strlen("XYZZY\r\n"));
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert(session.want_close);
	cr_assert_str_eq(feed("NOOP\r\n"), "");
	cr_assert_eq(consumed, 0);
}

Test(session, errors_of_every_kind_count)
{
	to_mail(UNTRUSTED);
	const char *r = feed("RCPT TO:<a@other.example>\r\n"
			     "RCPT TO:<b@other.example>\r\n"
			     "RCPT TO:<c@other.example>\r\n"
			     "RCPT TO:<d@other.example>\r\n"
			     "RCPT TO:<e@other.example>\r\n"
			     "MAIL FROM:<x@client.test>\r\n"
			     "DATA\r\n"
			     "ETRN x\r\n"
			     "EXPN x\r\n"
			     "RCPT TO:<f@other.example>\r\n"
			     "NOOP\r\n");
	static const char *const want[] = {
		RELAY_DENIED("a@other.example"),
		RELAY_DENIED("b@other.example"),
		RELAY_DENIED("c@other.example"),
		RELAY_DENIED("d@other.example"),
		RELAY_DENIED("e@other.example"),
		NESTED_MAIL,
		NEED_RCPT,
		ETRN_IN_MAIL,
		EXPN_REPLY,
		RELAY_DENIED("f@other.example"),
		TOO_MANY_ERRORS, /* the tenth error closes; NOOP is never read */
	};
	char all[2048] = "";
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		strcat(all, want[i]);
	cr_assert_str_eq(r, all);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
}

Test(session, declared_size_over_the_limit)
{
	to_helo(UNTRUSTED);
	expect("MAIL FROM:<sender@client.test> SIZE=10001\r\n", TOO_BIG);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	expect("MAIL FROM:<sender@client.test> SIZE=99999999999999999999\r\n", TOO_BIG);
	expect("MAIL FROM:<sender@client.test> SIZE=999999999999999999999\r\n",
	       "501 5.5.4 Syntax: SIZE=<number of octets>\r\n");
	expect("MAIL FROM:<sender@client.test> SIZE=12ab\r\n",
	       "501 5.5.4 Syntax: SIZE=<number of octets>\r\n");
	expect("MAIL FROM:<sender@client.test> SIZE\r\n",
	       "501 5.5.4 Syntax: SIZE=<number of octets>\r\n");
	expect("MAIL FROM:<sender@client.test> SIZE=10000\r\n", MAIL_OK);
	cr_assert_eq(session.declared_size, 10000);
}

/* A body of exactly `size` octets: lines of up to 100 octets, CRLF included. */
static char *make_body(size_t size)
{
	char *body = malloc(size + 1);
	cr_assert_not_null(body);
	size_t i = 0;
	while (i < size) {
		size_t line = size - i >= 100 ? 100 : size - i;
		if (line < 3) { /* too short for text + CRLF: pad the line with 'x' */
			memset(body + i, 'x', line);
			i += line;
			break;
		}
		memset(body + i, 'a' + (int)((i / 100) % 26), line - 2);
		body[i + line - 2] = '\r';
		body[i + line - 1] = '\n';
		i += line;
	}
	body[size] = '\0';
	return body;
}

Test(session, body_over_the_limit)
{
	/* Exactly the limit is fine. */
	to_data(UNTRUSTED);
	char *body = make_body(10000);
	expect(body, "");
	expect(".\r\n", "");
	expect_parked_for_commit(0);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(stored_body(0), body);
	free(body);

	/* One octet more: refused at the end, never committed. */
	expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO_AHEAD);
	body = make_body(10100);
	expect(body, "");
	cr_assert_eq(session.state, SMTP_STATE_DATA, "the body is read to its end");
	expect(".\r\n", TOO_BIG);
	free(body);
	cr_assert_str_eq(fake_queue_state(1), "aborted");
	cr_assert(!fake_queue_commit_pending());
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	cr_assert(!session.waiting);
	size_t stored = 0;
	fake_queue_body(1, &stored);
	cr_assert_lt(stored, 10000 + 300, "the store got no more than the limit");

	/* The session goes on. */
	expect("NOOP\r\n", OK);
}

Test(session, text_line_limit)
{
	char line[1100];
	to_data(UNTRUSTED);
	memset(line, 'x', 998);
	strcpy(line + 998, "\r\n.\r\n");
	expect(line, "");
	cr_assert_str_eq(commit(0), queued(0));

	expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO_AHEAD);
	memset(line, 'x', 999);
	strcpy(line + 999, "\r\n.\r\n");
	expect(line, "500 5.5.2 Message refused: line too long (the limit is 1000 octets)\r\n");
	cr_assert_str_eq(fake_queue_state(1), "aborted");
}

Test(session, messages_per_session)
{
	to_helo(UNTRUSTED);
	for (unsigned i = 0; i < 3; i++) {
		expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\n"
		       "DATA\r\nx\r\n.\r\n",
		       MAIL_OK RCPT_OK GO_AHEAD);
		cr_assert_str_eq(commit(0), queued(i));
	}
	cr_assert_eq(session.messages, 3);
	expect("MAIL FROM:<sender@client.test>\r\n",
	       "421 4.7.0 mx.test Error: too many messages in one session; closing\r\n");
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert(session.want_close);
	cr_assert_eq(fake_queue_count(), 3);
}

Test(session, command_limit)
{
	to_helo(UNTRUSTED); /* EHLO is command 1 */
	static char input[1000 * 6 + 1];
	static char want[1000 * 14 + 1];
	for (int i = 0; i < 999; i++) {
		memcpy(input + i * 6, "NOOP\r\n", 6);
		memcpy(want + i * 14, OK, 14);
	}
	expect(input, want);
	cr_assert_eq(session.commands, 1000);
	cr_assert(!session.want_close);
	expect("NOOP\r\n", "421 4.7.0 mx.test Error: too many commands; closing\r\n");
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert(session.want_close);
}

Test(session, a_closing_421_is_never_doubled)
{
	/* The command limit is reached with max_errors - 1 errors behind: the
	 * 421 must not count as the last error and bring a second 421. */
	settings.max_commands = 11;
	to_helo(UNTRUSTED);
	for (int i = 0; i < 9; i++)
		expect("XYZZY\r\n", UNKNOWN);
	expect("NOOP\r\n", OK); /* command 11 */
	expect("NOOP\r\n", "421 4.7.0 mx.test Error: too many commands; closing\r\n");

	/* Same for the message limit. */
	settings.max_commands = 1000;
	settings.max_messages = 0;
	to_helo(UNTRUSTED);
	for (int i = 0; i < 9; i++)
		expect("XYZZY\r\n", UNKNOWN);
	expect("MAIL FROM:<sender@client.test>\r\n",
	       "421 4.7.0 mx.test Error: too many messages in one session; closing\r\n");
}

Test(session, command_line_too_long)
{
	char line[700];
	to_helo(UNTRUSTED);
	/* 512 octets with the CRLF: the longest command accepted. */
	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'x', 505);
	strcpy(line + 510, "\r\n");
	expect(line, OK);
	/* One more: refused whole, never truncated and run. */
	memcpy(line, "MAIL FROM:<sender@client.test> ", 31);
	memset(line + 31, 'x', 480);
	strcpy(line + 511, "\r\n");
	expect(line, "500 5.5.2 Error: line too long (the limit is 512 octets)\r\n");
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	/* The next line is a command again, also right after the long one. */
	line[511] = '\0';
	strcat(line, "\r\nNOOP\r\n");
	expect(line, "500 5.5.2 Error: line too long (the limit is 512 octets)\r\n" OK);
	expect("MAIL FROM:<sender@client.test>\r\n", MAIL_OK);
}

Test(session, command_line_too_long_is_answered_before_it_ends)
{
	char line[600];
	to_helo(UNTRUSTED);
	memcpy(line, "RSET ", 5);
	memset(line + 5, 'x', sizeof(line) - 6);
	line[sizeof(line) - 1] = '\0';
	expect(line, "500 5.5.2 Error: line too long (the limit is 512 octets)\r\n");
	/* The rest up to its end is dropped, a bare CR does not end it. */
	expect(line, "");
	expect("\rQUIT\r\nNOOP\r\n", OK);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
}

Test(session, in_a_command_line_from_its_first_octet_to_its_end)
{
	connect_client(UNTRUSTED);
	cr_assert(!smtp_session_in_command_line(&session));
	expect("EH", "");
	cr_assert(smtp_session_in_command_line(&session));
	expect("LO client.test\r\n"
	       "MAIL FROM:<sender@client.test>\r\n"
	       "RCPT TO:<user@relay.example>\r\n",
	       EHLO_REPLY MAIL_OK RCPT_OK);
	cr_assert(!smtp_session_in_command_line(&session));
	expect("DATA\r\nSubject: no command line in a body", GO_AHEAD);
	cr_assert(!smtp_session_in_command_line(&session));
	expect("\r\n.\r\n", "");
	cr_assert_str_eq(commit(0), queued(0));
	expect("QU", "");
	cr_assert(smtp_session_in_command_line(&session));
}

Test(session, no_command_runs_while_the_replies_pass_out_max)
{
	to_helo(UNTRUSTED);
	session.out_max = 20; /* one OK fits, the second passes it */
	static const char input[] = "NOOP\r\nNOOP\r\nNOOP\r\nQUIT\r\n";
	cr_assert_str_eq(feed(input), OK OK);
	cr_assert_eq(consumed, 12, "commands ran past the cap");
	cr_assert(!session.waiting && !session.want_close);
	/* The client read them (take() emptied out): the rest runs. */
	cr_assert_str_eq(feed(input + 12), OK BYE);
	cr_assert_eq(consumed, sizeof(input) - 1 - 12);
}

Test(session, nul_in_command)
{
	to_helo(UNTRUSTED);
	static const char input[] = "NOOP\0 hidden\r\nMAIL FROM:<a@b.example\0>\r\n";
	const char *r = feed_bytes(input, sizeof(input) - 1);
	cr_assert_eq(consumed, sizeof(input) - 1);
	cr_assert_str_eq(r, "500 5.5.2 Error: NUL character in command\r\n"
			    "500 5.5.2 Error: NUL character in command\r\n");
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	expect("NOOP\r\n", OK);
}

/* ---- another protocol on the SMTP port ------------------------------------------ */

#define NOT_SMTP_TLS                                                                               \
	"554 5.7.0 mx.test Error: TLS handshake received, but this is an SMTP server; closing\r\n"
#define NOT_SMTP_HTTP                                                                              \
	"554 5.7.0 mx.test Error: HTTP request received, but this is an SMTP server; closing\r\n"

/* The start of a TLS 1.2/1.3 ClientHello, with no LF in it. */
static const char client_hello[] = "\x16\x03\x01\x00\xf8\x01\x00\x00\xf4\x03\x03"
				   "\x5a\x1f\x9c\x33\x80\x01\xfe\x42\x17\x6b\xc0\x2b\x13\x01";

Test(session, tls_client_hello_is_answered_and_closed)
{
	connect_client(UNTRUSTED);
	/* No line end will come: it is known from its first octets. */
	cr_assert_str_eq(feed(client_hello), NOT_SMTP_TLS);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert(session.want_close);
	cr_assert_eq(session.errors, 0);

	/* Octet by octet, after EHLO (a client that went on as if STARTTLS
	 * had been offered). */
	to_helo(UNTRUSTED);
	cr_assert_str_eq(feed_bytes(client_hello, 1), "");
	cr_assert_str_eq(feed_bytes(client_hello + 1, 1), "");
	cr_assert_str_eq(feed_bytes(client_hello + 2, 1), NOT_SMTP_TLS);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);

	/* Longer than a command line before its first LF: still known. */
	connect_client(UNTRUSTED);
	static char big[2048];
	memset(big, 0x42, sizeof(big));
	memcpy(big, client_hello, sizeof(client_hello) - 1);
	big[sizeof(big) - 1] = '\n';
	cr_assert_str_eq(feed_bytes(big, sizeof(big)), NOT_SMTP_TLS);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
}

Test(session, http_request_is_answered_and_closed)
{
	connect_client(UNTRUSTED);
	/* One reply, not one per header line. */
	cr_assert_str_eq(feed("GET / HTTP/1.1\r\nHost: mx.test\r\nUser-Agent: curl/7.88.1\r\n"
			      "Accept: */*\r\n\r\n"),
			 NOT_SMTP_HTTP);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert(session.want_close);

	to_rcpt(UNTRUSTED);
	cr_assert_str_eq(feed("CONNECT relay.example:25 HTTP/1.0\r\n\r\n"), NOT_SMTP_HTTP);
	cr_assert_eq(fake_queue_count(), 0, "nothing was begun");
}

Test(session, smtp_lines_that_merely_look_foreign)
{
	to_helo(UNTRUSTED);
	expect("NOOP \x16\x03\x01\r\n", OK);
	expect("XYZZY / HTTP/1.1x\r\n", UNKNOWN);
	expect("get / HTTP/1.1\r\n", UNKNOWN);
	expect("\x16\x03\x07\r\n", UNKNOWN);
	expect("HELP / HTTP/1.1\r\n", HELP_REPLY);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	/* In a body, anything goes. */
	expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\nDATA\r\n",
	       MAIL_OK RCPT_OK GO_AHEAD);
	expect("\x16\x03\x01\r\nGET / HTTP/1.1\r\n.\r\n", "");
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(stored_body(0), "\x16\x03\x01\r\nGET / HTTP/1.1\r\n");
}

/* ---- early talker, refusal, timeout, shutdown ------------------------------ */

Test(session, early_talker)
{
	open_session(UNTRUSTED);
	smtp_session_early_talker(&session);
	cr_assert_str_eq(take(),
			 "554 5.5.1 mx.test Error: talked before the greeting; closing\r\n");
	cr_assert(session.want_close);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert_str_eq(feed("EHLO client.test\r\n"), "");
	cr_assert_eq(consumed, 0);
	smtp_session_greet(&session);
	cr_assert_str_eq(take(), "", "no banner after the refusal");
}

Test(session, refused_connection)
{
	open_session(UNTRUSTED);
	smtp_session_refuse(&session, "421 4.7.0 mx.test Error: too many connections");
	cr_assert_str_eq(take(), "421 4.7.0 mx.test Error: too many connections\r\n");
	cr_assert(session.want_close);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert_eq(session.errors, 0);
}

Test(session, timeout)
{
	to_helo(UNTRUSTED);
	cr_assert(!smtp_session_in_data(&session));
	smtp_session_timeout(&session);
	cr_assert_str_eq(take(), TIMEOUT);
	cr_assert(session.want_close);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
}

Test(session, timeout_in_data_aborts_the_message)
{
	to_data(UNTRUSTED);
	expect("half a bo", "");
	cr_assert(smtp_session_in_data(&session));
	smtp_session_timeout(&session);
	cr_assert_str_eq(take(), TIMEOUT);
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	cr_assert_eq(fake_queue_live(), 0);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
}

Test(session, a_body_too_slow_is_refused_and_not_kept)
{
	to_data(UNTRUSTED);
	expect("Subject: slow\r\n\r\nhalf a bo", "");
	smtp_session_data_too_slow(&session, 500);
	cr_assert_str_eq(take(), "421 4.4.2 mx.test Error: data rate too low (at least 500 octets "
				 "a second expected); closing\r\n");
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	cr_assert_eq(fake_queue_live(), 0);
	cr_assert(session.want_close);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
}

Test(session, too_slow_means_nothing_outside_a_body)
{
	to_data(UNTRUSTED);
	expect("x\r\n.\r\n", "");
	smtp_session_data_too_slow(&session, 500);
	cr_assert_str_eq(take(), "", "a body complete is the store's time");
	expect_parked_for_commit(0);
	cr_assert_str_eq(commit(0), queued(0));
	smtp_session_data_too_slow(&session, 500);
	cr_assert_str_eq(take(), "");
	cr_assert(!session.want_close);
}

Test(session, timeout_waits_for_a_commit_in_flight)
{
	to_data(UNTRUSTED);
	expect("x\r\n.\r\n", "");
	smtp_session_timeout(&session);
	cr_assert_str_eq(take(), "");
	expect_parked_for_commit(0);
	cr_assert_str_eq(commit(0), queued(0));
}

Test(session, shutdown_when_idle)
{
	to_helo(UNTRUSTED);
	smtp_session_shutdown(&session);
	cr_assert_str_eq(take(), SHUTTING_DOWN);
	cr_assert(session.want_close);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert_str_eq(feed("NOOP\r\n"), "");
}

Test(session, shutdown_before_helo)
{
	connect_client(UNTRUSTED);
	smtp_session_shutdown(&session);
	cr_assert_str_eq(take(), SHUTTING_DOWN);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
}

Test(session, shutdown_before_the_banner)
{
	/* During the greeting delay: the same 421, and no banner after it. */
	open_session(UNTRUSTED);
	smtp_session_shutdown(&session);
	cr_assert_str_eq(take(), SHUTTING_DOWN);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	smtp_session_greet(&session);
	cr_assert_str_eq(take(), "");
}

Test(session, shutdown_lets_the_transaction_finish)
{
	to_rcpt(UNTRUSTED);
	smtp_session_shutdown(&session);
	cr_assert_str_eq(take(), "");
	cr_assert(!session.want_close);
	expect("RCPT TO:<second@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\nlast words\r\n.\r\n", GO_AHEAD);
	expect_parked_for_commit(0);
	cr_assert_str_eq(commit(0), joined(queued(0), SHUTTING_DOWN));
	cr_assert(session.want_close);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert_str_eq(fake_queue_state(0), "committed");
}

Test(session, shutdown_now_drops_the_transaction_of_a_stalled_client)
{
	to_data(UNTRUSTED);
	smtp_session_shutdown(&session);
	expect("Subject: trickled\r\n\r\nhalf", "");
	smtp_session_shutdown_now(&session);
	cr_assert_str_eq(take(), SHUTTING_DOWN);
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	cr_assert(session.want_close);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);

	/* In the envelope, between commands, too. */
	to_rcpt(UNTRUSTED);
	smtp_session_shutdown_now(&session);
	cr_assert_str_eq(take(), SHUTTING_DOWN);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
}

Test(session, shutdown_now_lets_a_commit_in_flight_end)
{
	to_data(UNTRUSTED);
	expect("x\r\n.\r\n", "");
	smtp_session_shutdown_now(&session);
	cr_assert_str_eq(take(), "");
	expect_parked_for_commit(0);
	cr_assert_str_eq(commit(0), joined(queued(0), SHUTTING_DOWN));
	cr_assert_str_eq(fake_queue_state(0), "committed");
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
}

Test(session, shutdown_closes_when_the_transaction_ends_otherwise)
{
	/* Ended by RSET. */
	to_mail(UNTRUSTED);
	smtp_session_shutdown(&session);
	cr_assert_str_eq(take(), "");
	expect("RSET\r\n", OK SHUTTING_DOWN);
	cr_assert(session.want_close);

	/* Ended by a refused body. */
	to_data(UNTRUSTED);
	smtp_session_shutdown(&session);
	expect("bare\nLF\r\n.\r\n", SMUGGLING SHUTTING_DOWN);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);

	/* Ended by a failed commit. */
	to_data(UNTRUSTED);
	expect("x\r\n.\r\n", "");
	smtp_session_shutdown(&session);
	cr_assert_str_eq(take(), "");
	cr_assert_str_eq(commit(-EIO), WRITE_ERROR SHUTTING_DOWN);
}

/* ---- SMTP smuggling ------------------------------------------------------------ */

struct smuggling_case {
	const char *name;
	const char *body;
};

/* Each hides an end of data that some receiver would honour, followed by a
 * second transaction; only the final CRLF.CRLF really ends the body. */
static const struct smuggling_case smuggling_cases[] = {
	{"LF.LF", "Subject: one\r\n\r\nhello\n.\nMAIL FROM:<evil@attacker.example>\r\n"
		  "RCPT TO:<victim@relay.example>\r\nDATA\r\nforged\r\n.\r\n"},
	{"CRLF.LF", "Subject: one\r\n\r\nhello\r\n.\nMAIL FROM:<evil@attacker.example>\r\n"
		    "RCPT TO:<victim@relay.example>\r\nDATA\r\nforged\r\n.\r\n"},
	{"LF.CRLF", "Subject: one\r\n\r\nhello\n.\r\nMAIL FROM:<evil@attacker.example>\r\n"
		    "RCPT TO:<victim@relay.example>\r\nDATA\r\nforged\r\n.\r\n"},
	{"CR.CRLF", "Subject: one\r\n\r\nhello\r.\r\nMAIL FROM:<evil@attacker.example>\r\n"
		    "RCPT TO:<victim@relay.example>\r\nDATA\r\nforged\r\n.\r\n"},
	{"CR.CR", "Subject: one\r\n\r\nhello\r.\rMAIL FROM:<evil@attacker.example>\r\n"
		  "RCPT TO:<victim@relay.example>\r\nDATA\r\nforged\r\n.\r\n"},
	{"bare LF mid-line", "Subject: one\r\n\r\nhel\nlo\r\n.\r\n"},
	{"bare CR mid-line", "Subject: one\r\n\r\nhel\rlo\r\n.\r\n"},
	{"bare LF at the end", "Subject: one\r\n\r\nhello\n\r\n.\r\n"},
};

Test(session, smuggling_refused)
{
	for (size_t i = 0; i < sizeof(smuggling_cases) / sizeof(smuggling_cases[0]); i++) {
		const struct smuggling_case *c = &smuggling_cases[i];
		fake_queue_reset();
		to_data(UNTRUSTED);
		const char *r = feed_all(c->body);
		cr_assert_str_eq(r, SMUGGLING, "%s", c->name);
		cr_assert_null(strstr(r, "250 2.1.0"), "%s: hidden MAIL executed", c->name);
		cr_assert_eq(fake_queue_count(), 1, "%s: hidden DATA began a message", c->name);
		cr_assert_str_eq(fake_queue_state(0), "aborted", "%s", c->name);
		cr_assert(!fake_queue_commit_pending(), "%s", c->name);
		cr_assert_eq(session.state, SMTP_STATE_HELO, "%s", c->name);
		cr_assert_eq(session.nrecipients, 0, "%s", c->name);

		/* The session is still usable: a clean message goes through. */
		expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\n"
		       "DATA\r\nclean\r\n.\r\n",
		       MAIL_OK RCPT_OK GO_AHEAD);
		cr_assert_str_eq(commit(0), queued(1), "%s", c->name);
		cr_assert_str_eq(stored_body(1), "clean\r\n", "%s", c->name);
	}
}

/*
 * More Received: fields than the limit is a mail loop: refused at the end
 * of DATA, never stored; at the limit it is taken. Only the header section
 * counts, in any case.
 */
Test(session, mail_loop_refused_by_its_received_fields)
{
	to_data(UNTRUSTED);
	expect("Received: from a\r\nreceived: from b\r\n\tby c\r\nRECEIVED: from d\r\n"
	       "RECEIVED: from e\r\nSubject: loop\r\n\r\nReceived: in the body\r\n.\r\n",
	       "554 5.4.6 Message refused: 4 Received: header fields, more than 3 (a mail "
	       "loop)\r\n");
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\nDATA\r\n"
	       "Received: from a\r\nReceived: from b\r\nReceived: from c\r\n\r\n"
	       "Received: x\r\nReceived: y\r\n.\r\n",
	       MAIL_OK RCPT_OK GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(1));
}

#define NUL_IN_DATA                                                                                \
	"550 5.6.0 Message refused: NUL character in message data (not allowed in mail, and "      \
	"a next hop may drop it)\r\n"

Test(session, nul_in_data_refused)
{
	/* CRLF NUL "." CRLF: a next hop that drops NULs would see the end of
	 * the data there, and run what follows as commands. */
	static const char smuggled[] = "Subject: one\r\n\r\nhello\r\n\0.\r\n"
				       "MAIL FROM:<evil@attacker.example>\r\n"
				       "RCPT TO:<victim@relay.example>\r\nDATA\r\nforged\r\n.\r\n";
	static const char plain[] = "Subject: two\r\n\r\nhel\0lo\r\n.\r\n";
	static const struct {
		const char *body;
		size_t len;
	} cases[] = {{smuggled, sizeof(smuggled) - 1}, {plain, sizeof(plain) - 1}};
	for (size_t i = 0; i < 2; i++) {
		fake_queue_reset();
		to_data(UNTRUSTED);
		cr_assert_str_eq(feed_bytes(cases[i].body, cases[i].len), NUL_IN_DATA, "case %zu",
				 i);
		cr_assert_eq(consumed, cases[i].len);
		cr_assert_eq(fake_queue_count(), 1, "case %zu: the hidden DATA began a message", i);
		cr_assert_str_eq(fake_queue_state(0), "aborted");
		cr_assert_eq(session.state, SMTP_STATE_HELO);
		size_t stored;
		const char *body = fake_queue_body(0, &stored);
		cr_assert_null(memchr(body, '\0', stored), "case %zu: a NUL reached the store", i);
	}
	/* Bare LF and NUL together: the smuggling reply comes first. */
	to_data(UNTRUSTED);
	static const char both[] = "a\nb\0c\r\n.\r\n";
	cr_assert_str_eq(feed_bytes(both, sizeof(both) - 1), SMUGGLING);
	/* The session goes on. */
	expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\n"
	       "DATA\r\nclean\r\n.\r\n",
	       MAIL_OK RCPT_OK GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(2));
	cr_assert_str_eq(stored_body(2), "clean\r\n");
}

Test(session, smuggled_commands_split_across_feeds)
{
	/* The same attack with the hidden end cut between two reads. */
	to_data(UNTRUSTED);
	expect("hello\n", "");
	expect(".", "");
	expect("\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@relay.example>\r\n", "");
	expect("DATA\r\nforged\r\n.", "");
	expect("\r\n", SMUGGLING);
	cr_assert_eq(fake_queue_count(), 1);
	cr_assert_str_eq(fake_queue_state(0), "aborted");
}

/* ---- relay policy -------------------------------------------------------------- */

struct relay_case {
	const char *rcpt;
	const char *reply;
};

static const struct relay_case relay_tricks[] = {
	{"<user%other.example@relay.example>", ROUTING_DENIED("user%other.example@relay.example")},
	{"<other.example!user@relay.example>", ROUTING_DENIED("other.example!user@relay.example")},
	{"<@relay.example:user@other.example>", RELAY_DENIED("user@other.example")},
	{"<\"user@other.example\"@relay.example>",
	 ROUTING_DENIED("\"user@other.example\"@relay.example")},
	{"<user@other.example.>",
	 "501 5.1.2 Bad recipient domain syntax: <user@other.example.>\r\n"},
	{"<user@relay.example.>",
	 "501 5.1.2 Bad recipient domain syntax: <user@relay.example.>\r\n"},
	{"<user@[192.0.2.1]>", RELAY_DENIED("user@[192.0.2.1]")},
	{"<USER@Other.Example>", RELAY_DENIED("USER@Other.Example")},
	{"<user@other.example>", RELAY_DENIED("user@other.example")},
	{"<user@sub.relay.example>", RELAY_DENIED("user@sub.relay.example")},
	{"<user@relay.example.other.example>", RELAY_DENIED("user@relay.example.other.example")},
};

Test(session, open_relay_tricks_refused)
{
	for (size_t i = 0; i < sizeof(relay_tricks) / sizeof(relay_tricks[0]); i++) {
		const struct relay_case *c = &relay_tricks[i];
		to_mail(UNTRUSTED);
		char line[256];
		snprintf(line, sizeof(line), "RCPT TO:%s\r\n", c->rcpt);
		cr_assert_str_eq(feed_all(line), c->reply, "RCPT TO:%s", c->rcpt);
		cr_assert_eq(session.nrecipients, 0, "%s", c->rcpt);
		cr_assert_eq(session.state, SMTP_STATE_MAIL);
	}
}

Test(session, relay_domain_in_any_case_accepted)
{
	to_mail(UNTRUSTED);
	expect("RCPT TO:<USER@RELAY.EXAMPLE>\r\n", RCPT_OK);
	expect("RCPT TO:<@other.example:user@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\nx\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	/* As given, source route stripped. */
	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo client.test\n"
						 "sender sender@client.test\n"
						 "rcpt USER@RELAY.EXAMPLE\n"
						 "rcpt user@relay.example\n");
}

Test(session, trusted_client_may_relay)
{
	to_mail(TRUSTED);
	cr_assert(session.client_trusted);
	expect("RCPT TO:<user@other.example>\r\n", RCPT_OK);
	expect("DATA\r\nx\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0), "client 127.0.0.1\nhelo client.test\n"
						 "sender sender@client.test\n"
						 "rcpt user@other.example\n");
}

Test(session, routing_tricks_refused_whoever_the_client)
{
	static const char *const clients[] = {TRUSTED, UNTRUSTED};
	for (size_t i = 0; i < 2; i++) {
		to_mail(clients[i]);
		expect("RCPT TO:<user%other.example@relay.example>\r\n",
		       ROUTING_DENIED("user%other.example@relay.example"));
		expect("RCPT TO:<other.example!user@relay.example>\r\n",
		       ROUTING_DENIED("other.example!user@relay.example"));
		expect("RCPT TO:<\"user@victim.example\"@other.example>\r\n",
		       ROUTING_DENIED("\"user@victim.example\"@other.example"));
		expect("RCPT TO:<user%victim.example@other.example>\r\n",
		       ROUTING_DENIED("user%victim.example@other.example"));
		cr_assert_eq(session.nrecipients, 0, "client %s", clients[i]);
	}
	/* What trust is for still works. */
	to_mail(TRUSTED);
	expect("RCPT TO:<user@other.example>\r\n", RCPT_OK);
}

Test(session, replies_never_echo_raw_client_bytes)
{
	to_mail(UNTRUSTED);
	/* A CR inside the path (the line reader keeps a CR not followed by LF). */
	expect("RCPT TO:<a@b\rc.example>\r\n",
	       "501 5.1.2 Bad recipient domain syntax: <a@b?c.example>\r\n");
	expect("RCPT TO:<a@b\x1b[2J.example>\r\n",
	       "501 5.1.2 Bad recipient domain syntax: <a@b?[2J.example>\r\n");
}

/* ---- the 250 comes from the store ------------------------------------------- */

Test(session, ok_only_after_the_store_committed)
{
	to_data(UNTRUSTED);
	const char *r = feed_all("Subject: x\r\n\r\nbody\r\n.\r\n");
	cr_assert_str_eq(r, "");
	cr_assert_null(strstr(r, "250 2.0.0"));
	expect_parked_for_commit(0);
	cr_assert(smtp_session_in_transaction(&session));
	cr_assert(!smtp_session_in_data(&session));
	cr_assert_eq(wakes, 0);
	cr_assert_str_eq(take(), "", "still nothing before committed()");
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_eq(strlen(fake_queue_id(0)), QUEUE_ID_LEN);
	cr_assert_str_eq(fake_queue_state(0), "committed");
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	cr_assert_eq(session.messages, 1);
	cr_assert_eq(fake_queue_live(), 0);
	expect("NOOP\r\n", OK);
}

Test(session, commit_failure_is_451)
{
	to_data(UNTRUSTED);
	expect("body\r\n.\r\n", "");
	cr_assert_str_eq(commit(-EIO), WRITE_ERROR);
	cr_assert_str_eq(fake_queue_state(0), "failed");
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	cr_assert_eq(session.nrecipients, 0);
	expect("DATA\r\n", NEED_MAIL);
	/* The client may try again. */
	expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\n"
	       "DATA\r\nbody\r\n.\r\n",
	       MAIL_OK RCPT_OK GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(1));
}

Test(session, queue_begin_fails)
{
	to_rcpt(UNTRUSTED);
	fake_queue_fail_begin(-EIO);
	const char *r = feed("DATA\r\nbody\r\n.\r\n");
	/* The body that followed DATA is read as commands, as RFC 2920 has it
	 * for a client that did not wait for the 354. */
	cr_assert_eq(strncmp(r, WRITE_ERROR, strlen(WRITE_ERROR)), 0, "%s", r);
	cr_assert_eq(fake_queue_count(), 0);

	to_rcpt(UNTRUSTED);
	fake_queue_fail_begin(-EIO);
	expect("DATA\r\n", WRITE_ERROR);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	cr_assert(!session.waiting);
	expect("DATA\r\n", NEED_MAIL);

	to_rcpt(UNTRUSTED);
	fake_queue_fail_begin(-ENOSPC);
	expect("DATA\r\n", NO_SPACE);
	cr_assert_eq(session.state, SMTP_STATE_HELO);

	to_rcpt(UNTRUSTED);
	fake_queue_fail_begin(-EDQUOT);
	expect("DATA\r\n", NO_SPACE);
	cr_assert_eq(fake_queue_count(), 0);
}

Test(session, queue_write_fails_mid_body)
{
	to_rcpt(UNTRUSTED);
	expect("DATA\r\n", GO_AHEAD);
	fake_queue_write_result_at(1, -EIO); /* write 0 was the Received header */
	expect("first part\r\n", "");
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	cr_assert_eq(session.state, SMTP_STATE_DATA, "read on to the end of the body");
	expect("MAIL FROM:<not@a.command>\r\n.\r\n", WRITE_ERROR);
	cr_assert(!fake_queue_commit_pending());
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	expect("NOOP\r\n", OK);
}

/* A spool limit reached mid-body is a 452, as at MAIL or RCPT: the client
 * may try again later; a 451 would send the postmaster to the disk. */
Test(session, spool_full_mid_body_is_452)
{
	to_rcpt(UNTRUSTED);
	expect("DATA\r\n", GO_AHEAD);
	fake_queue_write_result_at(1, -ENOSPC);
	expect("first part\r\n", "");
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	expect("more\r\n.\r\n", NO_SPACE);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	/* The next transaction starts clean: a failure of its own is a 451. */
	to_rcpt(UNTRUSTED);
	expect("DATA\r\n", GO_AHEAD);
	fake_queue_write_result_at(1, -EIO);
	expect("x\r\n.\r\n", WRITE_ERROR);
}

Test(session, received_header_write_fails)
{
	to_rcpt(UNTRUSTED);
	fake_queue_write_result_at(0, -ENOSPC);
	expect("DATA\r\n", NO_SPACE);
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	cr_assert_eq(session.state, SMTP_STATE_HELO);
}

/* ---- what the store receives ---------------------------------------------- */

static void assert_received(unsigned i, const char *first_lines)
{
	const char *body = fake_queue_body(i, NULL);
	size_t n = strlen(first_lines);
	cr_assert_eq(strncmp(body, first_lines, n), 0, "stored:\n%s\nexpected to begin:\n%s", body,
		     first_lines);
	/* Then the date, RFC 5322 style, in UTC. */
	const char *eol = strstr(body + n, "\r\n");
	cr_assert_not_null(eol);
	cr_assert_eq(eol - (body + n), (long)strlen("Sat, 28 Nov 2026 14:06:40 +0000"),
		     "date: %.*s", (int)(eol - (body + n)), body + n);
	cr_assert_eq(strncmp(eol - 6, " +0000", 6), 0);
}

Test(session, stored_message)
{
	to_helo(UNTRUSTED);
	expect("MAIL FROM:<@hop1.example,@hop2.example:sender@client.test> SIZE=120 "
	       "BODY=8BITMIME\r\n",
	       MAIL_OK);
	expect("RCPT TO:<user@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\n", GO_AHEAD);
	expect("Subject: dots\r\n"
	       "\r\n"
	       "..leading dot\r\n"
	       "...two\r\n"
	       ".\tx\r\n"
	       "not.at.start\r\n"
	       "..\r\n"
	       ".\r\n",
	       "");
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo client.test\n"
						 "sender sender@client.test\n"
						 "param SIZE=120\n"
						 "param BODY=8BITMIME\n"
						 "rcpt user@relay.example\n");
	char want[256];
	snprintf(want, sizeof(want),
		 "Received: from client.test ([192.0.2.1])\r\n"
		 "\tby mx.test (ferry) with ESMTP id %s\r\n"
		 "\tfor <user@relay.example>; ",
		 fake_queue_id(0));
	assert_received(0, want);
	cr_assert_str_eq(stored_body(0), "Subject: dots\r\n"
					 "\r\n"
					 ".leading dot\r\n"
					 "..two\r\n"
					 "\tx\r\n"
					 "not.at.start\r\n"
					 ".\r\n");
}

Test(session, stored_message_with_null_sender_and_two_recipients)
{
	to_helo(UNTRUSTED);
	expect("MAIL FROM:<>\r\n", MAIL_OK);
	expect("RCPT TO:<one@relay.example>\r\n", RCPT_OK);
	expect("RCPT TO:<two@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\nbounce\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo client.test\n"
						 "sender \n"
						 "rcpt one@relay.example\n"
						 "rcpt two@relay.example\n");
	/* Several recipients: no "for", which would disclose them all. */
	char want[256];
	snprintf(want, sizeof(want),
		 "Received: from client.test ([192.0.2.1])\r\n"
		 "\tby mx.test (ferry) with ESMTP id %s;\r\n\t",
		 fake_queue_id(0));
	assert_received(0, want);
	cr_assert_null(strstr(fake_queue_body(0, NULL), "for <"));
	cr_assert_str_eq(stored_body(0), "bounce\r\n");
}

Test(session, stored_message_empty_body)
{
	to_data(UNTRUSTED);
	expect(".\r\n", "");
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(stored_body(0), "");
}

Test(session, received_header_for_helo_and_ipv6_clients)
{
	open_session("2001:db8::1");
	smtp_session_greet(&session);
	cr_assert_str_eq(take(), BANNER);
	expect("HELO [IPv6:2001:db8::1]\r\n", HELO_REPLY);
	expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@relay.example>\r\n"
	       "DATA\r\nx\r\n.\r\n",
	       MAIL_OK RCPT_OK GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	char want[256];
	snprintf(want, sizeof(want),
		 "Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n"
		 "\tby mx.test (ferry) with SMTP id %s\r\n"
		 "\tfor <user@relay.example>; ",
		 fake_queue_id(0));
	assert_received(0, want);
}

Test(session, bare_postmaster_is_the_configured_one)
{
	/* RFC 5321 4.5.1: in any case, from anyone, whatever the relay
	 * domains; stored as the configured address. */
	to_mail(UNTRUSTED);
	expect("RCPT TO:<Postmaster>\r\n", RCPT_OK);
	expect("RCPT TO:<postmaster>\r\n", RCPT_OK);
	expect("RCPT TO:<POSTMASTER>\r\n", RCPT_OK);
	/* Only the reserved name itself. */
	expect("RCPT TO:<\"postmaster\">\r\n",
	       "501 5.1.3 Bad recipient address syntax: address has no domain\r\n");
	expect("RCPT TO:<postmasters>\r\n",
	       "501 5.1.3 Bad recipient address syntax: address has no domain\r\n");
	expect("RCPT TO:<@relay.example:postmaster>\r\n",
	       "501 5.1.3 Bad recipient address syntax: address has no domain\r\n");
	expect("RCPT TO:<postmaster@other.example>\r\n", RELAY_DENIED("postmaster@other.example"));
	expect("DATA\r\nabuse report\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo client.test\n"
						 "sender sender@client.test\n"
						 "rcpt hostmaster@isp.test\n"
						 "rcpt hostmaster@isp.test\n"
						 "rcpt hostmaster@isp.test\n");
	char want[256];
	snprintf(want, sizeof(want),
		 "Received: from client.test ([192.0.2.1])\r\n"
		 "\tby mx.test (ferry) with ESMTP id %s;\r\n\t",
		 fake_queue_id(0));
	assert_received(0, want);

	/* Alone, it is named in Received:; and it counts as a recipient. */
	settings.max_recipients = 1;
	expect("MAIL FROM:<sender@client.test>\r\nRCPT TO:<PostMaster>\r\n"
	       "RCPT TO:<postmaster>\r\nDATA\r\nx\r\n.\r\n",
	       MAIL_OK RCPT_OK "452 4.5.3 Error: too many recipients\r\n" GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(1));
	snprintf(want, sizeof(want),
		 "Received: from client.test ([192.0.2.1])\r\n"
		 "\tby mx.test (ferry) with ESMTP id %s\r\n\tfor <hostmaster@isp.test>; ",
		 fake_queue_id(1));
	assert_received(1, want);
}

/* ---- backpressure --------------------------------------------------------------- */

Test(session, backpressure_stops_and_resumes_input)
{
	settings.max_message_size = 100000;
	to_rcpt(UNTRUSTED);
	expect("DATA\r\n", GO_AHEAD);
	char *body = make_body(40000);
	size_t len = strlen(body);
	fake_queue_write_result_at(1, 1); /* the first body chunk fills the store */
	const char *r = feed(body);
	cr_assert_str_eq(r, "");
	cr_assert(session.waiting);
	cr_assert_gt(consumed, 0);
	cr_assert_lt(consumed, len, "the session must stop reading while the store is full");
	size_t done = consumed;

	cr_assert_str_eq(feed(body + done), "");
	cr_assert_eq(consumed, 0, "nothing is read before resume()");

	unsigned before = wakes;
	cr_assert(fake_queue_resume());
	cr_assert_eq(wakes, before + 1, "resume() must wake the owner");
	cr_assert(!session.waiting);
	expect(body + done, "");
	expect(".\r\n", "");
	expect_parked_for_commit(0);
	cr_assert_str_eq(commit(0), queued(0));
	/* The bytes of the write that returned 1 were kept: nothing lost. */
	cr_assert_str_eq(stored_body(0), body);
	free(body);
}

Test(session, backpressure_on_the_received_header)
{
	to_rcpt(UNTRUSTED);
	fake_queue_write_result_at(0, 1);
	const char *r = feed("DATA\r\nbody\r\n.\r\n");
	cr_assert_str_eq(r, GO_AHEAD);
	cr_assert_eq(consumed, strlen("DATA\r\n"), "no body read before resume()");
	cr_assert(session.waiting);
	cr_assert_eq(fake_queue_writes(0), 1, "only the Received header so far");
	cr_assert(fake_queue_resume());
	cr_assert(!session.waiting);
	expect("body\r\n.\r\n", "");
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(stored_body(0), "body\r\n");
}

Test(session, backpressure_at_the_final_chunk)
{
	to_data(UNTRUSTED);
	fake_queue_write_result_at(1, 1);
	/* The store is full, but the body is complete: commit, no resume owed. */
	cr_assert_str_eq(feed("last\r\n.\r\nNOOP\r\n"), "");
	cr_assert_eq(consumed, strlen("last\r\n.\r\n"));
	expect_parked_for_commit(0);
	cr_assert(!fake_queue_resume(), "no message is being written");
	cr_assert_str_eq(commit(0), queued(0));
	expect("NOOP\r\n", OK);
	cr_assert_str_eq(stored_body(0), "last\r\n");
}

/* ---- parameters, SMTPUTF8 ------------------------------------------------------ */

Test(session, smtputf8)
{
	to_helo(UNTRUSTED);
	expect("MAIL FROM:<us\xc3\xa9r@client.test>\r\n",
	       "553 5.6.7 Error: non-ASCII sender address needs SMTPUTF8\r\n");
	expect("MAIL FROM:<sender@client.test>\r\n", MAIL_OK);
	expect("RCPT TO:<\xc3\xbc@relay.example>\r\n",
	       "553 5.6.7 Error: non-ASCII recipient address needs SMTPUTF8\r\n");
	expect("RSET\r\n", OK);
	expect("MAIL FROM:<us\xc3\xa9r@client.test> SMTPUTF8\r\n", MAIL_OK);
	expect("RCPT TO:<\xc3\xbc@relay.example>\r\n", RCPT_OK);
	expect("DATA\r\nx\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	cr_assert_str_eq(fake_queue_envelope(0), "client 192.0.2.1\nhelo client.test\n"
						 "sender us\xc3\xa9r@client.test\n"
						 "param SMTPUTF8\n"
						 "rcpt \xc3\xbc@relay.example\n");
	cr_assert_not_null(strstr(fake_queue_body(0, NULL), " with UTF8SMTP id "));
	/* The flag belonged to that transaction only. */
	expect("MAIL FROM:<us\xc3\xa9r@client.test>\r\n",
	       "553 5.6.7 Error: non-ASCII sender address needs SMTPUTF8\r\n");
	expect("MAIL FROM:<a@client.test> SMTPUTF8=yes\r\n",
	       "501 5.5.4 Syntax: SMTPUTF8 takes no value\r\n");
}

Test(session, mail_parameters)
{
	to_helo(UNTRUSTED);
	expect("MAIL FROM:<a@client.test> BODY=8BITMIME\r\n", MAIL_OK);
	expect("RSET\r\n", OK);
	expect("MAIL FROM:<a@client.test> body=7bit\r\n", MAIL_OK);
	expect("RSET\r\n", OK);
	expect("MAIL FROM:<a@client.test> BODY=BINARYMIME\r\n",
	       "555 5.5.4 Unsupported BODY type (use 7BIT or 8BITMIME)\r\n");
	expect("MAIL FROM:<a@client.test> FOO=BAR\r\n", "555 5.5.4 Unsupported option: FOO\r\n");
	expect("MAIL FROM:<a@client.test> AUTH=<>\r\n", "555 5.5.4 Unsupported option: AUTH\r\n");
	expect("MAIL FROM:<a@client.test> A=1 B=2 C=3 D=4 E=5 F=6 G=7 H=8 I=9\r\n",
	       "501 5.5.4 Error: too many parameters\r\n");
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	expect("MAIL FROM:<a@client.test>\r\n", MAIL_OK);
	expect("RCPT TO:<user@relay.example> NOTIFY=NEVER\r\n",
	       "555 5.5.4 Unsupported option: NOTIFY\r\n");
	cr_assert_eq(session.state, SMTP_STATE_MAIL);
}

Test(session, parameters_need_ehlo)
{
	connect_client(UNTRUSTED);
	expect("HELO client.test\r\n", HELO_REPLY);
	expect("MAIL FROM:<a@client.test> SIZE=100\r\n",
	       "555 5.5.4 Error: parameters need EHLO, not HELO\r\n");
	expect("MAIL FROM:<a@client.test> BODY=8BITMIME\r\n",
	       "555 5.5.4 Error: parameters need EHLO, not HELO\r\n");
	expect("MAIL FROM:<us\xc3\xa9r@client.test> SMTPUTF8\r\n",
	       "555 5.5.4 Error: parameters need EHLO, not HELO\r\n");
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	expect("MAIL FROM:<a@client.test>\r\n", MAIL_OK);
}

/* ---- input forms -------------------------------------------------------------- */

Test(session, bare_lf_ends_commands)
{
	connect_client(UNTRUSTED);
	expect("EHLO client.test\n", EHLO_REPLY);
	expect("MAIL FROM:<sender@client.test>\nRCPT TO:<user@relay.example>\nDATA\n",
	       MAIL_OK RCPT_OK GO_AHEAD);
	expect("body\r\n.\r\n", "");
	cr_assert_str_eq(commit(0), queued(0));
	expect("QUIT\n", BYE);
}

Test(session, lower_case_verbs)
{
	connect_client(UNTRUSTED);
	expect("ehlo client.test\r\n", EHLO_REPLY);
	expect("mail from:<sender@client.test> size=10\r\n", MAIL_OK);
	expect("Rcpt To:<user@relay.example>\r\n", RCPT_OK);
	expect("noop\r\nrset\r\nvrfy x\r\nhelp\r\n", OK OK VRFY_REPLY HELP_REPLY);
	expect("mail from: <sender@client.test>\r\n", MAIL_OK);
	expect("rcpt to: <user@relay.example>\r\n", RCPT_OK);
	expect("data\r\nx\r\n.\r\n", GO_AHEAD);
	cr_assert_str_eq(commit(0), queued(0));
	expect("quit\r\n", BYE);
}

/* ---- destroy ------------------------------------------------------------------- */

Test(session, destroy_with_a_commit_in_flight_detaches)
{
	to_data(UNTRUSTED);
	expect("x\r\n.\r\n", "");
	expect_parked_for_commit(0);
	smtp_session_destroy(&session);
	session_live = false;
	cr_assert_str_eq(fake_queue_state(0), "detached");
	cr_assert(fake_queue_detached(0));
	/* The commit still completes, and calls nobody. */
	cr_assert(fake_queue_complete_commit(0));
	cr_assert_str_eq(fake_queue_state(0), "committed");
	cr_assert_eq(wakes, 0);
	cr_assert_null(fake_queue_violation());
}

Test(session, destroy_mid_data_aborts)
{
	to_data(UNTRUSTED);
	expect("partial body\r\n", "");
	smtp_session_destroy(&session);
	session_live = false;
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	cr_assert(!fake_queue_detached(0));
	cr_assert_eq(fake_queue_live(), 0);
	cr_assert_null(fake_queue_violation());
}

Test(session, destroy_while_the_store_is_full_aborts)
{
	to_rcpt(UNTRUSTED);
	fake_queue_write_result_at(0, 1);
	expect("DATA\r\n", GO_AHEAD);
	cr_assert(session.waiting);
	smtp_session_destroy(&session);
	session_live = false;
	cr_assert_str_eq(fake_queue_state(0), "aborted");
	cr_assert_null(fake_queue_violation());
}

/* ---- one long session: every reply well-formed --------------------------------- */

Test(session, every_reply_carries_an_enhanced_code)
{
	unsigned before = reply_lines_checked;
	settings.max_errors = 100;
	to_helo(UNTRUSTED);
	feed("HELP\r\nNOOP\r\nVRFY x\r\nEXPN x\r\nETRN x\r\nSTARTTLS\r\nAUTH LOGIN\r\n"
	     "BDAT 1\r\nXYZZY\r\n\r\n");
	feed("MAIL FROM:<a@client.test> SIZE=99999\r\n");
	feed("MAIL FROM:<a@client.test> BODY=BINARYMIME\r\nRSET\r\n");
	feed("MAIL FROM:<a@client.test>\r\nMAIL FROM:<a@client.test>\r\n"
	     "RCPT TO:<a@other.example>\r\nRCPT TO:<a@relay.example>\r\nDATA\r\nx\r\n.\r\n");
	commit(0);
	cr_assert_gt(reply_lines_checked - before, 25);
	/* And once more through a HELO session, including the closing 421. */
	connect_client(UNTRUSTED);
	feed("HELO client.test\r\nMAIL FROM:<a@client.test> SIZE=1\r\nRCPT TO:<a@b.example>\r\n");
	smtp_session_shutdown(&session);
	take();
}

/* A full spool refuses new mail early (MAIL, RCPT) and at the end of DATA,
 * always with 452 4.3.1, and the session goes on. */
Test(session, spool_limits_give_452)
{
	to_mail(UNTRUSTED);
	fake_queue_set_space(-ENOSPC);
	expect("RCPT TO:<user@relay.example>\r\n", NO_SPACE);
	expect("RSET\r\n", "250 2.0.0 Ok\r\n");
	expect("MAIL FROM:<a@client.example>\r\n", NO_SPACE);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	fake_queue_set_space(0);

	to_data(UNTRUSTED);
	feed("body\r\n.\r\n");
	cr_assert(fake_queue_complete_commit(-ENOSPC));
	cr_assert_str_eq(take(), NO_SPACE);
	cr_assert_eq(session.state, SMTP_STATE_HELO);
	to_rcpt(UNTRUSTED); /* and the next transaction works */
}

/* ---- ETRN: the session's side (the command itself is net/etrn*.c's) ------------------ */

static char etrn_seen[256];
static unsigned etrn_calls, etrn_cancels;
static bool etrn_answer_now;

static void test_etrn(void *arg, struct smtp_session *s, const char *argument, size_t len)
{
	(void)arg;
	cr_assert_eq(s, &session);
	snprintf(etrn_seen, sizeof(etrn_seen), "%.*s", (int)len, argument);
	etrn_calls++;
	if (etrn_answer_now)
		smtp_session_etrn_reply(s, "251 2.0.0 OK, no messages waiting for node x.test",
					false);
}

static void test_etrn_cancel(void *arg, struct smtp_session *s)
{
	(void)arg;
	cr_assert_eq(s, &session);
	etrn_cancels++;
}

static void etrn_setup(bool answer_now)
{
	settings.etrn = test_etrn;
	settings.etrn_cancel = test_etrn_cancel;
	etrn_calls = etrn_cancels = 0;
	etrn_seen[0] = '\0';
	etrn_answer_now = answer_now;
}

Test(session, etrn_advertised_when_a_hook_is_set)
{
	etrn_setup(true);
	connect_client(UNTRUSTED);
	const char *r = feed_all("EHLO client.test\r\n");
	cr_assert_not_null(strstr(r, "250-ETRN\r\n"), "%s", r);
}

Test(session, etrn_answered_at_once)
{
	etrn_setup(true);
	to_helo(UNTRUSTED);
	expect("etrn x.test\n", "251 2.0.0 OK, no messages waiting for node x.test\r\n");
	cr_assert_str_eq(etrn_seen, "x.test");
	cr_assert_eq(etrn_calls, 1);
	cr_assert_not(session.waiting);
	expect("NOOP\r\n", "250 2.0.0 Ok\r\n");
}

Test(session, etrn_answered_later_holds_the_commands_behind_it)
{
	etrn_setup(false);
	to_helo(UNTRUSTED);
	const char *r = feed("ETRN @x.test\r\nNOOP\r\n");
	cr_assert_str_eq(r, "");
	cr_assert_eq(consumed, strlen("ETRN @x.test\r\n"), "NOOP waits for the answer");
	cr_assert(session.waiting);
	cr_assert_str_eq(etrn_seen, "@x.test");
	unsigned before = wakes;
	smtp_session_etrn_reply(&session,
				"253 2.0.0 OK, 2 pending messages for node @x.test started", false);
	cr_assert_eq(wakes, before + 1);
	cr_assert_not(session.waiting);
	cr_assert_str_eq(take(), "253 2.0.0 OK, 2 pending messages for node @x.test started\r\n");
	/* A second answer to the same ETRN is ignored. */
	smtp_session_etrn_reply(&session, "250 2.0.0 twice", false);
	cr_assert_str_eq(take(), "");
	expect("NOOP\r\n", "250 2.0.0 Ok\r\n");
}

Test(session, etrn_421_closes)
{
	etrn_setup(false);
	to_helo(UNTRUSTED);
	feed_all("ETRN x.test\r\n");
	smtp_session_etrn_reply(&session, "421 4.7.0 mx.test Error: too many ETRN commands", true);
	cr_assert_eq(session.state, SMTP_STATE_CLOSED);
	cr_assert(session.want_close);
}

Test(session, etrn_unanswered_at_the_end_is_cancelled)
{
	etrn_setup(false);
	to_helo(UNTRUSTED);
	feed_all("ETRN x.test\r\n");
	smtp_session_destroy(&session);
	session_live = false;
	cr_assert_eq(etrn_cancels, 1);
}

Test(session, etrn_not_inside_a_transaction)
{
	etrn_setup(true);
	to_helo(UNTRUSTED);
	expect("MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n");
	expect("ETRN x.test\r\n", ETRN_IN_MAIL);
	cr_assert_eq(etrn_calls, 0);
}

/* The metrics' refusal counters: a recipient refused counts as one, by
 * its code; a timeout's 421 afterwards is no refusal of anything. */
Test(session, refusals_are_counted_by_what_they_refuse)
{
	static struct smtp_counters c;
	memset(&c, 0, sizeof(c));
	to_mail(UNTRUSTED);
	session.counters = &c;
	expect("RCPT TO:<x@elsewhere.test>\r\n", RELAY_DENIED("x@elsewhere.test"));
	expect("RCPT TO:<user@relay.example>\r\n", RCPT_OK);
	expect("MAIL FROM:<again@client.test>\r\n", "503 5.5.1 Error: nested MAIL command\r\n");
	smtp_session_timeout(&session);
	take();
	cr_assert_eq(c.recipients_refused[554 - 400], 1);
	cr_assert_eq(c.messages_refused[503 - 400], 1, "the nested MAIL refused");
	cr_assert_eq(c.messages_refused[421 - 400] + c.recipients_refused[421 - 400], 0,
		     "the timeout's 421 refused no message");
	cr_assert_eq(c.messages_received, 0);
}
