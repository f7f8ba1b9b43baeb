/*
 * Tests for core/log's summary of each client's lines: on a worker-like
 * thread (buffered), a client's info lines past the limit are counted,
 * not written, and one log_suppressed line says how many; accepted lines,
 * warnings, other clients' lines and lines naming no client are all
 * written; a client forgotten to make room is summarised then.
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

static char log_path[] = "/tmp/ferry-test-log-XXXXXX";
static int saved_stderr = -1;

/* stderr into a file, a worker's buffering, and a limit of `limit`. */
static void capture(unsigned limit)
{
	int fd = mkstemp(log_path);
	cr_assert_geq(fd, 0);
	saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	log_setup(LOG_LEVEL_INFO, LOG_TO_STDERR);
	log_client_lines(limit);
	log_thread_buffered(true);
}

/* End the "worker" (its summaries written), restore stderr, return what
 * was logged (malloc'd). */
static char *captured(void)
{
	log_thread_buffered(false);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	FILE *f = fopen(log_path, "r");
	cr_assert_not_null(f);
	static char text[1 << 20];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	unlink(log_path);
	log_client_lines(0);
	return strdup(text);
}

static int count(const char *text, const char *needle)
{
	int n = 0;
	for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

Test(log, a_clients_lines_past_its_share_are_summarised)
{
	capture(3);
	for (int i = 0; i < 10; i++)
		log_event(LOG_LEVEL_INFO, "event=connect session=%d client=192.0.2.1 trusted=0", i);
	for (int i = 0; i < 2; i++)
		log_event(LOG_LEVEL_INFO,
			  "event=accepted session=1 queue_id=Q client=192.0.2.1 x=%d", i);
	log_event(LOG_LEVEL_INFO, "event=etrn session=1 client=192.0.2.1 argument=x.example");
	log_event(LOG_LEVEL_WARN, "event=shutdown_deadline session=1 client=192.0.2.1");
	log_event(LOG_LEVEL_INFO, "event=connect session=20 client=192.0.2.2 trusted=0");
	log_event(LOG_LEVEL_INFO, "event=recv_error session=1 error=x");
	log_flush();
	char *text = captured();
	cr_expect_eq(count(text, "event=connect session="), 4, "%s", text);
	cr_expect_eq(count(text, "client=192.0.2.1 trusted"), 3, "%s", text);
	cr_expect_eq(count(text, "event=accepted"), 2, "%s", text);
	cr_expect_eq(count(text, "event=etrn "), 1, "%s", text);
	cr_expect_eq(count(text, "event=shutdown_deadline"), 1, "%s", text);
	cr_expect_eq(count(text, "event=recv_error"), 1, "%s", text);
	cr_expect_eq(
		count(text, "event=log_suppressed client=192.0.2.1 suppressed=7 window_s=60\n"), 1,
		"%s", text);
	cr_expect_eq(count(text, "event=log_suppressed"), 1, "%s", text);
	free(text);
}

Test(log, a_client_forgotten_for_newcomers_is_summarised_then)
{
	/* Many more clients than a worker remembers: every suppressed line
	 * is still accounted for. */
	enum { CLIENTS = 3000, EACH = 4, LIMIT = 2 };
	capture(LIMIT);
	for (int i = 0; i < CLIENTS; i++)
		for (int k = 0; k < EACH; k++)
			log_event(LOG_LEVEL_INFO, "event=connect client=10.%d.%d.%d", i >> 16,
				  (i >> 8) & 255, i & 255);
	char *text = captured();
	long suppressed = 0;
	for (const char *p = strstr(text, "suppressed="); p != NULL;
	     p = strstr(p + 1, "suppressed="))
		suppressed += strtol(p + 11, NULL, 10);
	cr_expect_eq(count(text, "event=connect "), CLIENTS * LIMIT);
	cr_expect_eq(suppressed, CLIENTS * (EACH - LIMIT));
	free(text);
}

Test(log, no_limit_writes_every_line)
{
	capture(0);
	for (int i = 0; i < 500; i++)
		log_event(LOG_LEVEL_INFO, "event=connect client=192.0.2.1");
	char *text = captured();
	cr_expect_eq(count(text, "event=connect "), 500);
	cr_expect_eq(count(text, "log_suppressed"), 0);
	free(text);
}
