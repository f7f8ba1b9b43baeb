/*
 * next_hop — the far end of ferryd's deliveries in the integration tests:
 * tests/integration/fake_smtp.py, a scripted SMTP server on loopback that
 * records every transaction it completes (one JSON object per line), and
 * waits over it and over ferryd's log. Include after checks.h (it needs
 * START_MS).
 */
#ifndef FERRY_TESTS_INTEGRATION_NEXT_HOP_H
#define FERRY_TESTS_INTEGRATION_NEXT_HOP_H

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "tests/integration/checks.h"

struct next_hop {
	char dir[PATH_MAX];
	char record[PATH_MAX + 16]; /* what it received, one JSON object per line */
	char out[PATH_MAX + 16];
	int port;
	pid_t pid;
};

static inline void next_hop_start_at(struct next_hop *h, const char *address, int port,
				     const char *const *options)
{
	memset(h, 0, sizeof(*h));
	snprintf(h->dir, sizeof(h->dir), "/tmp/ferry-hop-XXXXXX");
	cr_assert_not_null(mkdtemp(h->dir));
	snprintf(h->record, sizeof(h->record), "%s/record", h->dir);
	snprintf(h->out, sizeof(h->out), "%s/out", h->dir);
	char script[PATH_MAX];
	const char *src = getenv("FERRY_SOURCE_DIR");
	snprintf(script, sizeof(script), "%s/tests/integration/fake_smtp.py", src ? src : ".");
	char port_text[16];
	snprintf(port_text, sizeof(port_text), "%d", port);
	const char *argv[24] = {"python3", script,       "--port", port_text,   "--record",
				h->record, "--lifetime", "170",    "--address", address};
	int n = 10;
	for (const char *const *o = options; o != NULL && *o != NULL && n < 22; o++)
		argv[n++] = *o;
	argv[n] = NULL;
	h->pid = harness_spawn((char *const *)argv, h->out);
	cr_assert_gt(h->pid, 0, "cannot start fake_smtp.py");
	for (int64_t end = harness_now_ms() + START_MS; harness_now_ms() < end;) {
		FILE *f = fopen(h->out, "r");
		if (f != NULL) {
			char line[128];
			while (fgets(line, sizeof(line), f))
				if (sscanf(line, "listening %d", &h->port) == 1)
					break;
			fclose(f);
		}
		if (h->port > 0)
			return;
		harness_sleep_ms(20);
	}
	cr_assert_fail("fake_smtp.py did not listen");
}

/* Start fake_smtp.py on a free loopback port with up to 6 more options
 * (NULL-terminated), and wait until it listens. */
static inline void next_hop_start(struct next_hop *h, const char *const *options)
{
	next_hop_start_at(h, "127.0.0.1", 0, options);
}

/* Lines of the record holding `text`. */
static inline int next_hop_count(const struct next_hop *h, const char *text)
{
	FILE *f = fopen(h->record, "r");
	if (f == NULL)
		return 0;
	int n = 0;
	static char line[1 << 20];
	while (fgets(line, sizeof(line), f))
		n += strstr(line, text) != NULL;
	fclose(f);
	return n;
}

/* Messages that arrived with `rcpt` among their recipients. */
static inline int next_hop_delivered(const struct next_hop *h, const char *rcpt)
{
	FILE *f = fopen(h->record, "r");
	if (f == NULL)
		return 0;
	char quoted[300];
	snprintf(quoted, sizeof(quoted), "\"%s\"", rcpt);
	int n = 0;
	static char line[1 << 20];
	while (fgets(line, sizeof(line), f))
		n += strstr(line, "\"event\": \"message\"") != NULL && strstr(line, quoted) != NULL;
	fclose(f);
	return n;
}

/* Wait until at least `want` messages to `rcpt` arrived. */
static inline int next_hop_wait_delivered(const struct next_hop *h, const char *rcpt, int want,
					  int timeout_ms)
{
	int n = 0;
	for (int64_t end = harness_now_ms() + timeout_ms; harness_now_ms() < end;) {
		if ((n = next_hop_delivered(h, rcpt)) >= want)
			return n;
		harness_sleep_ms(50);
	}
	return n;
}

/* Wait until the record has at least `want` lines holding `text`. */
static inline int next_hop_wait(const struct next_hop *h, const char *text, int want,
				int timeout_ms)
{
	int n = 0;
	for (int64_t end = harness_now_ms() + timeout_ms; harness_now_ms() < end;) {
		if ((n = next_hop_count(h, text)) >= want)
			return n;
		harness_sleep_ms(50);
	}
	return n;
}

/* Wait until the log has `want` lines holding `text`. */
static inline int log_wait(const struct ferry_instance *fi, const char *text, int want,
			   int timeout_ms)
{
	int n = 0;
	for (int64_t end = harness_now_ms() + timeout_ms; harness_now_ms() < end;) {
		if ((n = harness_log_count(fi, text)) >= want)
			return n;
		harness_sleep_ms(50);
	}
	return n;
}

/* A next hop that is down: a loopback port where nothing listens (the socket is kept, unlistened,
 * so no one else takes the port): connections to it are refused. */
static inline int next_hop_closed_port(int *fd)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	*fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(*fd, 0);
	cr_assert_eq(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
	return ntohs(a.sin_port);
}

#endif
