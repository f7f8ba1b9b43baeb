/*
 * ferryctl_run — what the ferryctl suites share (test_ferryctl.c: the
 * views, the socket, offline; test_ferryctl_verbs.c: --json, hold and
 * release by queue id, delete, bounce, stats, config): a ferryd whose
 * domains hold their mail, messages sent to it over SMTP, ferryctl run as
 * an operator runs it, and its JSON read by python3's json module.
 * Include after checks.h; the suite defines OUT_SIZE and CTL_MS.
 */
#ifndef FERRY_TESTS_INTEGRATION_FERRYCTL_RUN_H
#define FERRY_TESTS_INTEGRATION_FERRYCTL_RUN_H

#if !defined(OUT_SIZE) || !defined(CTL_MS)
#error "define OUT_SIZE and CTL_MS before including ferryctl_run.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tests/integration/checks.h"

#define CTL_WAIT_MS 30000 /* a recipient to reach a state */

/* Held, so that the views show what was queued, not what delivery did
 * with it: these domains have nowhere to go. */
static const char relay_extra[] = "[relay]\n"
				  "relay_domains = alpha.example beta.example gamma.example\n"
				  "[domain alpha.example]\n"
				  "hold = yes\n"
				  "[domain beta.example]\n"
				  "hold = yes\n"
				  "[domain gamma.example]\n"
				  "hold = yes\n";

struct sent {
	char id[3][32]; /* queue ids of the three messages, in sending order */
};

static inline void start_ferryd(struct ferry_instance *fi)
{
	cr_assert_eq(harness_setup(fi, relay_extra), 0, "cannot set up a temporary directory");
	cr_assert_eq(harness_start(fi, START_MS), 0, "ferryd did not start (see its log above)");
	wait_admin_socket(fi);
}

/* One transaction from `sender` ("" for <>) to `rcpts` (NULL-terminated);
 * the queue id goes to id. */
static inline void send_message_from(const struct ferry_instance *fi, const char *sender,
				     const char *const *rcpts, const char *subject, char id[32])
{
	struct smtp_client c;
	struct smtp_reply r;
	char line[512];
	cr_assert_eq(smtp_client_connect(&c, fi->port, IO_MS), 0, "cannot connect to ferryd");
	cr_assert_eq(smtp_client_read_reply(&c, &r), 220, "greeting: %s", r.text);
	expect_command(&c, "EHLO client.example", 250, NULL);
	snprintf(line, sizeof(line), "MAIL FROM:<%s>", sender);
	expect_command(&c, line, 250, NULL);
	for (const char *const *p = rcpts; *p != NULL; p++) {
		snprintf(line, sizeof(line), "RCPT TO:<%s>", *p);
		expect_command(&c, line, 250, NULL);
	}
	expect_command(&c, "DATA", 354, NULL);
	snprintf(line, sizeof(line),
		 "From: alice@client.example\r\n"
		 "Subject: %s\r\n"
		 "\r\n"
		 "Not a header: this is the body.\r\n"
		 ".\r\n",
		 subject);
	cr_assert_eq(smtp_client_send_str(&c, line), 0, "cannot send the body");
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "end of DATA: %s", r.text);
	cr_assert(smtp_reply_queue_id(&r, id, 32), "no queue id in '%s'", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
}

/* The same from alice@client.example. */
static inline void send_message(const struct ferry_instance *fi, const char *const *rcpts,
				const char *subject, char id[32])
{
	send_message_from(fi, "alice@client.example", rcpts, subject, id);
}

/* alpha.example: 3 recipients (2 messages), beta.example: 2 (2 messages,
 * one written in upper case), gamma.example: 1. */
static inline void send_three(const struct ferry_instance *fi, struct sent *s)
{
	static const char *const first[] = {"x@alpha.example", "y@alpha.example", "z@beta.example",
					    NULL};
	static const char *const second[] = {"w@Beta.EXAMPLE", NULL};
	static const char *const third[] = {"v@gamma.example", "u@alpha.example", NULL};
	send_message(fi, first, "first of three", s->id[0]);
	send_message(fi, second, "second of three", s->id[1]);
	send_message(fi, third, "third of three", s->id[2]);
}

/* Run ferryctl with up to 4 arguments (NULL-terminated); returns its exit
 * status, stdout and stderr in out/err. */
static inline int run_ferryctl(char *out, char *err, const char *a1, const char *a2, const char *a3,
			       const char *a4)
{
	char ctl[PATH_MAX];
	char *argv[] = {(char *)harness_build_path("ferryctl", ctl, sizeof(ctl)),
			(char *)a1,
			(char *)a2,
			(char *)a3,
			(char *)a4,
			NULL};
	out[0] = err[0] = '\0';
	return harness_run(argv, out, OUT_SIZE, err, OUT_SIZE, CTL_MS);
}

static inline const char *find_line_prefix(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, prefix, n) == 0)
			return p;
	}
	return NULL;
}

/* Every line of `list` that names id, counted. */
static inline int count_lines_with(const char *text, const char *id)
{
	int n = 0;
	for (const char *p = strstr(text, id); p != NULL; p = strstr(p + 1, id))
		n++;
	return n;
}

/* Run ferryctl -c CONFIG with a command and up to one argument; it must
 * exit 0. */
static inline void ctl_ok(const struct ferry_instance *fi, char *out, char *err,
			  const char *command, const char *arg)
{
	int rc = run_ferryctl(out, err, "-c", fi->config, command, arg);
	cr_assert_eq(rc, 0, "ferryctl %s %s exited %d: %s%s", command, arg ? arg : "", rc, err,
		     out);
}

/* Run ferryctl with the arguments given (NULL-terminated, at most 12);
 * returns its exit status, stdout and stderr in out/err. */
static inline int run_ferryctl_args(char *out, char *err, ...)
{
	char ctl[PATH_MAX];
	char *argv[14] = {(char *)harness_build_path("ferryctl", ctl, sizeof(ctl))};
	va_list ap;
	va_start(ap, err);
	int n = 1;
	for (const char *a; n < 13 && (a = va_arg(ap, const char *)) != NULL;)
		argv[n++] = (char *)a;
	va_end(ap);
	argv[n] = NULL;
	out[0] = err[0] = '\0';
	return harness_run(argv, out, OUT_SIZE, err, OUT_SIZE, CTL_MS);
}

/*
 * A Python expression over the JSON document `json` (bound to d, e.g.
 * "d['total']['recipients']"): its str(), as Python prints it, in a
 * buffer of the harness's (valid until the next call). The document must
 * parse: a test fails on anything json.loads refuses.
 */
static inline const char *json_get(const char *json, const char *expr)
{
	static char value[OUT_SIZE], err[4096];
	char *argv[] = {"python3",
			"-c",
			"import json, sys\n"
			"d = json.loads(sys.argv[1])\n"
			"print(eval(sys.argv[2]))",
			(char *)json,
			(char *)expr,
			NULL};
	value[0] = '\0';
	int rc = harness_run(argv, value, sizeof(value), err, sizeof(err), CTL_MS);
	cr_assert_eq(rc, 0, "python3 could not read %s from the JSON:\n%s\n%s", expr, json, err);
	value[strcspn(value, "\n")] = '\0';
	return value;
}

/* `ferryctl -c CONFIG --json list DOMAIN`'s state of the recipient `rcpt`
 * ("absent": none). */
static inline const char *state_of(const struct ferry_instance *fi, const char *domain,
				   const char *rcpt)
{
	static char out[OUT_SIZE], err[OUT_SIZE], expr[256];
	int rc = run_ferryctl_args(out, err, "-c", fi->config, "--json", "list", domain, NULL);
	cr_assert_eq(rc, 0, "ferryctl --json list %s exited %d: %s", domain, rc, err);
	snprintf(expr, sizeof(expr),
		 "([r['state'] for r in d['recipients'] if r['recipient'] == '%s'] + "
		 "['absent'])[0]",
		 rcpt);
	return json_get(out, expr);
}

/* Wait until `rcpt` of `domain` is in `state` (a message's recipients
 * reach the worker that delivers them just after its 250; a move takes
 * effect on the workers). */
static inline void wait_state(const struct ferry_instance *fi, const char *domain, const char *rcpt,
			      const char *state)
{
	const char *now = NULL;
	for (int64_t end = harness_now_ms() + CTL_WAIT_MS; harness_now_ms() < end;) {
		if (strcmp(now = state_of(fi, domain, rcpt), state) == 0)
			return;
		harness_sleep_ms(100);
	}
	cr_assert_fail("%s is %s, not %s, after %d ms", rcpt, now, state, CTL_WAIT_MS);
}

#endif
