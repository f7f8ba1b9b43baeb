/*
 * Tests for DNS on the ring (net/dns.c): a real resolver on a real
 * worker's ring, whose loop turn the test runs (worker_init/worker_turn,
 * as test_conn.c does), asking tests/dns/fake_dns.py, a loopback DNS
 * server the test starts for each test (python3 with python3-dnslib,
 * which tools/install-deps installs: without it these tests fail, they
 * do not skip).
 *
 * What is asserted is what the delivery would notice: the status of each
 * kind of answer (records, NXDOMAIN, NODATA, null MX, SERVFAIL, silence,
 * no server), MX order, addresses with their port, that a callback never
 * runs inside the call that asked, and never after a cancel, a drain or
 * a close. The test build runs under ASan: a lookup, a watch or the
 * resolver left behind fails the program.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/worker.h"
#include "net/dns.h"

#define T_TURN_MS    10   /* one loop turn's longest wait */
#define T_WAIT_MS    5000 /* bound on any wait for the ring */
#define T_TIMEOUT_MS 200  /* the resolver's first timeout */
#define T_TRIES      2
#define T_PYTHON     "/usr/bin/python3" /* Debian's: python3-dnslib is installed for it */

static const char *const t_zone[] = {
	"example.test MX 10 mx-a.example.test",
	"example.test MX 20 backup.example.test",
	"example.test MX 10 mx-b.example.test",
	"example.test MX 5 best.example.test",
	"example.test MX 10 mx-c.example.test",
	"best.example.test A 127.0.0.1",
	"null.test MX 0 .",
	"nomx.test A 192.0.2.7",
	"host.test A 192.0.2.1",
	"host.test AAAA 2001:db8::1",
	"host.test A 192.0.2.2",
	"v6only.test AAAA 2001:db8::6",
	"broken.test SERVFAIL",
	"silent.test SILENT",
};

static struct worker t_worker;
static struct worker_services t_services;
static struct dns *t_dns;
static pid_t t_server = -1;
static int t_server_stdin = -1; /* closing it ends the server */
static char t_servers[64];      /* "127.0.0.1:PORT" */

/* ---- the fake server --------------------------------------------------------------- */

static void t_server_start(void)
{
	const char *source = getenv("FERRY_SOURCE_DIR");
	char script[4096];
	snprintf(script, sizeof(script), "%s/tests/dns/fake_dns.py", source ? source : ".");
	cr_assert_eq(access(script, R_OK), 0,
		     "%s: %s (run from the source tree or set "
		     "FERRY_SOURCE_DIR)",
		     script, strerror(errno));
	int in[2], out[2];
	cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	const char *argv[4 + sizeof(t_zone) / sizeof(t_zone[0])];
	size_t argc = 0;
	argv[argc++] = T_PYTHON;
	argv[argc++] = script;
	for (size_t i = 0; i < sizeof(t_zone) / sizeof(t_zone[0]); i++)
		argv[argc++] = t_zone[i];
	argv[argc] = NULL;
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execv(T_PYTHON, (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	t_server = pid;
	t_server_stdin = in[1];

	/* "port N" once it answers; EOF if it could not start. */
	char line[64] = "";
	size_t len = 0;
	struct pollfd pfd = {.fd = out[0], .events = POLLIN};
	while (len < sizeof(line) - 1 && strchr(line, '\n') == NULL &&
	       poll(&pfd, 1, T_WAIT_MS) == 1) {
		ssize_t n = read(out[0], line + len, sizeof(line) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		line[len] = '\0';
	}
	close(out[0]);
	unsigned port = 0;
	if (sscanf(line, "port %u", &port) != 1) {
		int status = 0;
		bool gone = false; /* its stdout closed: it is exiting, or stuck */
		for (int i = 0; i < 100 && !gone; i++)
			if (!(gone = waitpid(pid, &status, WNOHANG) == pid))
				usleep(10000);
		if (gone)
			t_server = -1;
		cr_assert_fail("the fake DNS server (%s %s) did not start%s", T_PYTHON, script,
			       gone && WIFEXITED(status) && WEXITSTATUS(status) == 3
				       ? ": python3-dnslib is missing (tools/install-deps installs "
					 "it)"
				       : "");
	}
	snprintf(t_servers, sizeof(t_servers), "127.0.0.1:%u", port);
}

static void t_server_stop(void)
{
	if (t_server_stdin >= 0)
		close(t_server_stdin);
	t_server_stdin = -1;
	if (t_server > 0) {
		int status;
		for (int i = 0; i < 200 && waitpid(t_server, &status, WNOHANG) == 0; i++)
			usleep(10000);
		if (kill(t_server, SIGKILL) == 0)
			waitpid(t_server, &status, 0);
	}
	t_server = -1;
}

/* ---- the worker and the resolver ---------------------------------------------------- */

static int t_open(const char *servers, struct dns **out)
{
	struct dns_config cfg = {.servers = servers, .timeout_ms = T_TIMEOUT_MS, .tries = T_TRIES};
	char err[256] = "";
	int r = dns_open(out, &t_worker, &cfg, err, sizeof(err));
	cr_assert_eq(r, 0, "%s", err);
	return r;
}

static void t_start(void)
{
	memset(&t_services, 0, sizeof(t_services));
	int r = worker_init(&t_worker, 0, &t_services);
	cr_assert_eq(r, 0, "%s (the dns tests need io_uring)", t_worker.error);
	t_server_start();
	t_open(t_servers, &t_dns);
}

static void t_stop(void)
{
	if (t_dns != NULL)
		dns_close(t_dns);
	t_dns = NULL;
	for (int n = 0; n < 500 && t_worker.in_flight > 0; n++)
		worker_turn(&t_worker, T_TURN_MS);
	worker_fini(&t_worker);
	t_server_stop();
}

TestSuite(dns, .init = t_start, .fini = t_stop, .timeout = 60);

static void t_turn(void)
{
	worker_turn(&t_worker, T_TURN_MS);
}

/* Turn the loop until cond holds, at most ms. */
#define T_UNTIL(cond, ms)                                                                          \
	do {                                                                                       \
		uint64_t t_deadline_ = worker_clock_ms() + (ms);                                   \
		while (!(cond)) {                                                                  \
			cr_assert_lt(worker_clock_ms(), t_deadline_, "waited in vain for: %s",     \
				     #cond);                                                       \
			t_turn();                                                                  \
		}                                                                                  \
	} while (0)

/* Turn the loop for ms, whatever happens. */
static void t_turn_for(uint64_t ms)
{
	uint64_t end = worker_clock_ms() + ms;
	while (worker_clock_ms() < end)
		t_turn();
}

/* Under LeakSanitizer (the Sanitize build): nothing allocated is
 * unreachable now. A leak report at exit would not fail the test; this
 * does. Without the sanitizer the weak symbol is absent: no check. */
int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static void t_assert_no_leak(void)
{
	if (__lsan_do_recoverable_leak_check != NULL)
		cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks: see the report above");
}

/* ---- what the callbacks saw (static: the ring may outlive a failed assertion) ---------- */

struct t_mx_seen {
	unsigned calls;
	enum dns_status status;
	unsigned count;
	struct dns_mx mx[8];
	char reason[128];
	uint64_t at_ms;
};

struct t_host_seen {
	unsigned calls;
	enum dns_status status;
	unsigned count;
	union dns_address addr[DNS_HOST_MAX];
	char reason[128];
};

static void t_mx_done(void *arg, const struct dns_mx_result *r)
{
	struct t_mx_seen *s = arg;
	s->calls++;
	s->status = r->status;
	s->count = r->count;
	s->at_ms = worker_clock_ms();
	cr_assert_not_null(r->reason);
	snprintf(s->reason, sizeof(s->reason), "%s", r->reason);
	cr_assert((r->mx != NULL) == (r->status == DNS_OK));
	for (unsigned i = 0; i < r->count && i < 8; i++)
		s->mx[i] = r->mx[i];
}

static void t_host_done(void *arg, const struct dns_host_result *r)
{
	struct t_host_seen *s = arg;
	s->calls++;
	s->status = r->status;
	s->count = r->count;
	cr_assert_not_null(r->reason);
	snprintf(s->reason, sizeof(s->reason), "%s", r->reason);
	memcpy(s->addr, r->addr, sizeof(s->addr));
}

/* Look up name's MX and wait for the answer, which must not come from
 * inside the call. */
static struct t_mx_seen t_mx_seen;
static void t_lookup_mx(const char *name)
{
	struct dns_query *q;
	memset(&t_mx_seen, 0, sizeof(t_mx_seen));
	cr_assert_eq(dns_lookup_mx(t_dns, name, t_mx_done, &t_mx_seen, &q), 0);
	cr_assert_not_null(q);
	cr_assert_eq(t_mx_seen.calls, 0, "called back from inside the call");
	T_UNTIL(t_mx_seen.calls > 0, T_WAIT_MS);
	t_turn_for(50);
	cr_assert_eq(t_mx_seen.calls, 1);
}

static struct t_host_seen t_host_seen;
static void t_lookup_host(const char *name, uint16_t port)
{
	struct dns_query *q;
	memset(&t_host_seen, 0, sizeof(t_host_seen));
	cr_assert_eq(dns_lookup_host(t_dns, name, port, t_host_done, &t_host_seen, &q), 0);
	cr_assert_eq(t_host_seen.calls, 0, "called back from inside the call");
	T_UNTIL(t_host_seen.calls > 0, T_WAIT_MS);
	t_turn_for(50);
	cr_assert_eq(t_host_seen.calls, 1);
}

static void t_assert_ipv4(const union dns_address *a, const char *ip, uint16_t port)
{
	char text[INET6_ADDRSTRLEN];
	cr_assert_eq(a->sa.sa_family, AF_INET);
	inet_ntop(AF_INET, &a->in.sin_addr, text, sizeof(text));
	cr_assert_str_eq(text, ip);
	cr_assert_eq(ntohs(a->in.sin_port), port);
	cr_assert_eq(dns_address_len(a), sizeof(struct sockaddr_in));
}

static void t_assert_ipv6(const union dns_address *a, const char *ip, uint16_t port)
{
	char text[INET6_ADDRSTRLEN];
	cr_assert_eq(a->sa.sa_family, AF_INET6);
	inet_ntop(AF_INET6, &a->in6.sin6_addr, text, sizeof(text));
	cr_assert_str_eq(text, ip);
	cr_assert_eq(ntohs(a->in6.sin6_port), port);
	cr_assert_eq(dns_address_len(a), sizeof(struct sockaddr_in6));
}

/* ---- MX ------------------------------------------------------------------------------ */

Test(dns, mx_records_come_by_preference_with_equal_ones_shuffled)
{
	unsigned orders = 0;
	char first_order[64] = "";
	for (int round = 0; round < 12; round++) {
		t_lookup_mx("example.test");
		cr_assert_eq(t_mx_seen.status, DNS_OK, "%s", t_mx_seen.reason);
		cr_assert_eq(t_mx_seen.count, 5);
		cr_assert_str_eq(t_mx_seen.mx[0].host, "best.example.test");
		cr_assert_eq(t_mx_seen.mx[0].preference, 5);
		char order[64] = "";
		for (int i = 1; i <= 3; i++) {
			cr_assert_eq(t_mx_seen.mx[i].preference, 10);
			cr_assert_eq(strncmp(t_mx_seen.mx[i].host, "mx-", 3), 0);
			strncat(order, t_mx_seen.mx[i].host + 3, 1);
		}
		cr_assert_str_eq(t_mx_seen.mx[4].host, "backup.example.test");
		cr_assert_eq(t_mx_seen.mx[4].preference, 20);
		if (round == 0)
			strcpy(first_order, order);
		else if (strcmp(order, first_order) != 0)
			orders++;
	}
	cr_assert_gt(orders, 0, "equal preferences came in one order 12 times");
	cr_assert(dns_idle(t_dns));
}

Test(dns, a_domain_that_does_not_exist_is_nxdomain)
{
	t_lookup_mx("nowhere.test");
	cr_assert_eq(t_mx_seen.status, DNS_NXDOMAIN, "%s", t_mx_seen.reason);
	cr_assert_eq(t_mx_seen.count, 0);
}

Test(dns, a_name_without_mx_records_is_nodata)
{
	t_lookup_mx("nomx.test");
	cr_assert_eq(t_mx_seen.status, DNS_NODATA, "%s", t_mx_seen.reason);
}

Test(dns, a_null_mx_says_the_domain_takes_no_mail)
{
	t_lookup_mx("null.test");
	cr_assert_eq(t_mx_seen.status, DNS_NULL_MX, "%s", t_mx_seen.reason);
	cr_assert_str_eq(t_mx_seen.reason, "null MX (RFC 7505)");
	cr_assert_eq(t_mx_seen.count, 0);
}

Test(dns, servfail_is_a_temporary_failure)
{
	t_lookup_mx("broken.test");
	cr_assert_eq(t_mx_seen.status, DNS_TEMPFAIL, "%s", t_mx_seen.reason);
}

Test(dns, a_server_that_never_answers_times_out_into_a_temporary_failure)
{
	uint64_t start = worker_clock_ms();
	t_lookup_mx("silent.test");
	cr_assert_eq(t_mx_seen.status, DNS_TEMPFAIL, "%s", t_mx_seen.reason);
	uint64_t took = t_mx_seen.at_ms - start;
	/* Two tries: T_TIMEOUT_MS, then twice that (c-ares backs off). */
	cr_assert_geq(took, T_TIMEOUT_MS, "gave up after %llu ms", (unsigned long long)took);
	cr_assert_lt(took, 3000, "took %llu ms", (unsigned long long)took);
	cr_assert_str_eq(t_mx_seen.reason, "Timeout while contacting DNS servers");
	cr_assert(dns_idle(t_dns), "c-ares's socket closed and its poll back");
}

Test(dns, no_server_listening_is_a_temporary_failure)
{
	/* Port 9 (discard) on loopback: nothing listens, the ICMP error
	 * wakes the poll with POLLERR. */
	dns_close(t_dns);
	t_open("127.0.0.1:9", &t_dns);
	t_lookup_mx("example.test");
	cr_assert_eq(t_mx_seen.status, DNS_TEMPFAIL, "%s", t_mx_seen.reason);
}

Test(dns, names_that_cannot_be_asked_are_refused_at_once)
{
	struct dns_query *q = NULL;
	char long_name[300];
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	cr_assert_eq(dns_lookup_mx(t_dns, "", t_mx_done, &t_mx_seen, &q), -EINVAL);
	cr_assert_eq(dns_lookup_mx(t_dns, long_name, t_mx_done, &t_mx_seen, &q), -EINVAL);
	cr_assert_eq(dns_lookup_host(t_dns, "", 25, t_host_done, &t_host_seen, &q), -EINVAL);
	cr_assert(dns_idle(t_dns));
}

/* ---- hosts ----------------------------------------------------------------------------- */

Test(dns, a_host_has_its_ipv4_then_ipv6_addresses_with_the_port)
{
	t_lookup_host("host.test", 2525);
	cr_assert_eq(t_host_seen.status, DNS_OK, "%s", t_host_seen.reason);
	cr_assert_eq(t_host_seen.count, 3);
	t_assert_ipv4(&t_host_seen.addr[0], "192.0.2.1", 2525);
	t_assert_ipv4(&t_host_seen.addr[1], "192.0.2.2", 2525);
	t_assert_ipv6(&t_host_seen.addr[2], "2001:db8::1", 2525);
}

Test(dns, a_host_with_one_family_only_is_found)
{
	t_lookup_host("v6only.test", 25);
	cr_assert_eq(t_host_seen.status, DNS_OK, "%s", t_host_seen.reason);
	cr_assert_eq(t_host_seen.count, 1);
	t_assert_ipv6(&t_host_seen.addr[0], "2001:db8::6", 25);
}

Test(dns, host_failures_say_which)
{
	t_lookup_host("nowhere.test", 25);
	cr_assert_eq(t_host_seen.status, DNS_NXDOMAIN, "%s", t_host_seen.reason);
	cr_assert_eq(t_host_seen.count, 0);
	t_lookup_host("null.test", 25); /* an MX record, no address */
	cr_assert_eq(t_host_seen.status, DNS_NODATA, "%s", t_host_seen.reason);
	t_lookup_host("broken.test", 25);
	cr_assert_eq(t_host_seen.status, DNS_TEMPFAIL, "%s", t_host_seen.reason);
}

Test(dns, an_address_literal_is_answered_from_the_loop_without_a_query)
{
	t_lookup_host("192.0.2.99", 26);
	cr_assert_eq(t_host_seen.status, DNS_OK);
	cr_assert_eq(t_host_seen.count, 1);
	t_assert_ipv4(&t_host_seen.addr[0], "192.0.2.99", 26);
	t_lookup_host("2001:db8::99", 27);
	cr_assert_eq(t_host_seen.count, 1);
	t_assert_ipv6(&t_host_seen.addr[0], "2001:db8::99", 27);
}

/* ---- cancel, drain, close ----------------------------------------------------------------- */

static struct t_mx_seen t_seen_a, t_seen_b;
static struct t_host_seen t_seen_h;

Test(dns, a_cancelled_lookup_never_calls_back)
{
	memset(&t_seen_a, 0, sizeof(t_seen_a));
	memset(&t_seen_b, 0, sizeof(t_seen_b));
	memset(&t_seen_h, 0, sizeof(t_seen_h));
	struct dns_query *a, *b, *h;
	cr_assert_eq(dns_lookup_mx(t_dns, "example.test", t_mx_done, &t_seen_a, &a), 0);
	cr_assert_eq(dns_lookup_mx(t_dns, "silent.test", t_mx_done, &t_seen_b, &b), 0);
	cr_assert_eq(dns_lookup_host(t_dns, "192.0.2.1", 25, t_host_done, &t_seen_h, &h), 0);
	dns_cancel(a);
	dns_cancel(b);
	dns_cancel(h); /* answered already, not delivered yet */
	T_UNTIL(dns_idle(t_dns), T_WAIT_MS);
	t_turn_for(100);
	cr_assert_eq(t_seen_a.calls + t_seen_b.calls + t_seen_h.calls, 0);
	/* And the resolver goes on. */
	t_lookup_mx("example.test");
	cr_assert_eq(t_mx_seen.status, DNS_OK);
}

Test(dns, closing_with_lookups_in_flight_calls_none_back_and_leaves_nothing)
{
	memset(&t_seen_a, 0, sizeof(t_seen_a));
	memset(&t_seen_b, 0, sizeof(t_seen_b));
	memset(&t_seen_h, 0, sizeof(t_seen_h));
	struct dns_query *q;
	cr_assert_eq(dns_lookup_mx(t_dns, "silent.test", t_mx_done, &t_seen_a, &q), 0);
	cr_assert_eq(dns_lookup_host(t_dns, "silent.test", 25, t_host_done, &t_seen_h, &q), 0);
	t_turn(); /* the queries are out, their socket polled in the kernel */
	cr_assert_eq(t_seen_a.calls + t_seen_h.calls, 0);
	/* One more whose poll is not even submitted yet. */
	cr_assert_eq(dns_lookup_mx(t_dns, "example.test", t_mx_done, &t_seen_b, &q), 0);
	cr_assert_gt(t_worker.in_flight, 0);
	dns_close(t_dns);
	t_dns = NULL;
	T_UNTIL(t_worker.in_flight == 0, T_WAIT_MS);
	t_turn_for(100);
	cr_assert_eq(t_seen_a.calls + t_seen_b.calls + t_seen_h.calls, 0);
	t_assert_no_leak();
}

Test(dns, draining_drops_lookups_and_the_resolver_stays_usable)
{
	memset(&t_seen_a, 0, sizeof(t_seen_a));
	memset(&t_seen_h, 0, sizeof(t_seen_h));
	struct dns_query *q;
	cr_assert_eq(dns_lookup_mx(t_dns, "silent.test", t_mx_done, &t_seen_a, &q), 0);
	t_turn(); /* out, and polled in the kernel */
	/* One whose answer would come in the next turn. */
	cr_assert_eq(dns_lookup_host(t_dns, "host.test", 25, t_host_done, &t_seen_h, &q), 0);
	cr_assert_not(dns_idle(t_dns));
	dns_drain(t_dns);
	/* Well before the silent lookup's timeout. */
	T_UNTIL(dns_idle(t_dns), T_TIMEOUT_MS / 2);
	t_turn_for(100);
	cr_assert_eq(t_seen_a.calls + t_seen_h.calls, 0);
	t_lookup_host("host.test", 25);
	cr_assert_eq(t_host_seen.count, 3);
}

/* A callback that closes the resolver: the lookups still out never
 * call back. */
static void t_mx_done_and_close(void *arg, const struct dns_mx_result *r)
{
	t_mx_done(arg, r);
	dns_close(t_dns);
	t_dns = NULL;
}

Test(dns, a_callback_may_close_the_resolver)
{
	memset(&t_seen_a, 0, sizeof(t_seen_a));
	memset(&t_seen_b, 0, sizeof(t_seen_b));
	memset(&t_seen_h, 0, sizeof(t_seen_h));
	struct dns_query *q;
	cr_assert_eq(dns_lookup_mx(t_dns, "silent.test", t_mx_done, &t_seen_b, &q), 0);
	cr_assert_eq(dns_lookup_host(t_dns, "silent.test", 25, t_host_done, &t_seen_h, &q), 0);
	cr_assert_eq(dns_lookup_mx(t_dns, "example.test", t_mx_done_and_close, &t_seen_a, &q), 0);
	T_UNTIL(t_seen_a.calls > 0, T_WAIT_MS);
	cr_assert_null(t_dns);
	T_UNTIL(t_worker.in_flight == 0, T_WAIT_MS);
	t_turn_for(2 * T_TIMEOUT_MS);
	cr_assert_eq(t_seen_a.calls, 1);
	cr_assert_eq(t_seen_b.calls + t_seen_h.calls, 0);
	t_assert_no_leak();
}

/* A callback that starts the next lookup: the MX's host. */
static void t_mx_then_host(void *arg, const struct dns_mx_result *r)
{
	struct dns_query *q;
	t_mx_done(arg, r);
	cr_assert_eq(r->status, DNS_OK);
	cr_assert_eq(dns_lookup_host(t_dns, r->mx[0].host, 25, t_host_done, &t_seen_h, &q), 0);
	cr_assert_eq(t_seen_h.calls, 0);
}

Test(dns, a_callback_may_start_another_lookup)
{
	memset(&t_seen_a, 0, sizeof(t_seen_a));
	memset(&t_seen_h, 0, sizeof(t_seen_h));
	struct dns_query *q;
	cr_assert_eq(dns_lookup_mx(t_dns, "example.test", t_mx_then_host, &t_seen_a, &q), 0);
	T_UNTIL(t_seen_h.calls > 0, T_WAIT_MS);
	cr_assert_eq(t_seen_h.status, DNS_OK, "%s", t_seen_h.reason);
	cr_assert_eq(t_seen_h.count, 1);
	t_assert_ipv4(&t_seen_h.addr[0], "127.0.0.1", 25);
	T_UNTIL(dns_idle(t_dns), T_WAIT_MS);
}

/* ---- configuration -------------------------------------------------------------------------- */

Test(dns, a_bad_server_list_is_refused_with_a_reason)
{
	struct dns *d = NULL;
	struct dns_config cfg = {.servers = "dns.example.net", .timeout_ms = 100, .tries = 1};
	char err[256] = "";
	cr_assert_eq(dns_open(&d, &t_worker, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_null(d);
	cr_assert(strstr(err, "dns servers 'dns.example.net': not a list of IP addresses") != NULL,
		  "%s", err);
}

Test(dns, resolv_conf_servers_by_default)
{
	struct dns *d = NULL;
	struct dns_config cfg = {.servers = ""};
	char err[256] = "";
	cr_assert_eq(dns_open(&d, &t_worker, &cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert(dns_idle(d));
	dns_close(d);
}
