/*
 * checks — Criterion assertions over the harness, shared by the
 * integration suites: start and stop ferryd, talk SMTP, wait for the admin
 * socket. A suite defines its time limits before including this:
 *
 *   START_MS  ferryd up and accepting      IO_MS  one SMTP reply
 *   STOP_MS   SIGTERM to exit
 */
#ifndef FERRY_TESTS_INTEGRATION_CHECKS_H
#define FERRY_TESTS_INTEGRATION_CHECKS_H

#if !defined(START_MS) || !defined(IO_MS) || !defined(STOP_MS)
#error "define START_MS, IO_MS and STOP_MS before including checks.h"
#endif

#include <criterion/criterion.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "tests/integration/harness.h"

static inline void stop_ferryd_cleanly(struct ferry_instance *fi)
{
	int status = harness_stop(fi, STOP_MS);
	cr_assert_eq(status, 0, "ferryd exited with status %d after SIGTERM (log above)", status);
}

static inline void connect_greeted(struct smtp_client *c, const struct ferry_instance *fi)
{
	struct smtp_reply r;
	cr_assert_eq(smtp_client_connect(c, fi->port, IO_MS), 0, "cannot connect to ferryd");
	cr_assert_eq(smtp_client_read_reply(c, &r), 220, "greeting: %s", r.text);
}

/* One RCPT TO:<rcpt> in a fresh session and transaction; the reply's
 * code, its text in r. */
static inline int try_recipient(const struct ferry_instance *fi, const char *rcpt,
				struct smtp_reply *r)
{
	struct smtp_client c;
	char line[300];
	struct smtp_reply greeting;
	cr_assert_eq(smtp_client_connect(&c, fi->port, IO_MS), 0, "cannot connect to ferryd");
	cr_assert_eq(smtp_client_read_reply(&c, &greeting), 220, "greeting: %s", greeting.text);
	cr_assert_eq(smtp_client_command(&c, "EHLO client.example", r), 250, "%s", r->text);
	cr_assert_eq(smtp_client_command(&c, "MAIL FROM:<alice@client.example>", r), 250, "%s",
		     r->text);
	snprintf(line, sizeof(line), "RCPT TO:<%s>", rcpt);
	int code = smtp_client_command(&c, line, r);
	smtp_client_close(&c);
	return code;
}

/* The reply is `code` and its text starts with the enhanced code. */
static inline bool reply_is(const struct smtp_reply *r, int code, const char *enhanced)
{
	size_t n = strlen(enhanced);
	return r->code == code && strlen(r->text) >= 4 + n &&
	       strncmp(r->text + 4, enhanced, n) == 0 &&
	       (r->text[4 + n] == ' ' || r->text[4 + n] == '\0');
}

/* Send a command line; its reply must be `code` (and `enhanced`, if not
 * NULL). */
static inline void expect_command(struct smtp_client *c, const char *line, int code,
				  const char *enhanced)
{
	struct smtp_reply r;
	int got = smtp_client_command(c, line, &r);
	cr_assert_eq(got, code, "'%s' got '%s', expected %d", line, r.text, code);
	if (enhanced != NULL)
		cr_assert(reply_is(&r, code, enhanced), "'%s' got '%s', expected %d %s", line,
			  r.text, code, enhanced);
}

static inline void admin_socket_path(const struct ferry_instance *fi, char *out, size_t size)
{
	snprintf(out, size, "%s/ferryctl.sock", fi->spool);
}

/* The admin socket appears just after the SMTP port: wait for it. */
static inline void wait_admin_socket(const struct ferry_instance *fi)
{
	char path[PATH_MAX + 32];
	admin_socket_path(fi, path, sizeof(path));
	int64_t deadline = harness_now_ms() + START_MS;
	struct stat st;
	while (stat(path, &st) != 0 && harness_now_ms() < deadline)
		harness_sleep_ms(20);
	cr_assert_eq(stat(path, &st), 0, "no admin socket %s after %d ms", path, START_MS);
}

/* qsort order of queue ids (char[32] each). */
static inline int compare_ids(const void *a, const void *b)
{
	return strcasecmp((const char *)a, (const char *)b);
}

#endif
