/*
 * ferry-bench: SMTP load generator, counting sink, idle-session holder and attacker, on io_uring.
 *
 * Self-contained (this file and attack.c, nothing of ferry) so that it can be copied to a load
 * machine and pointed at any SMTP server, not only ferry. The modes share address parsing, the
 * ring helpers and the client session machine:
 *   load    many concurrent sessions spend a fixed budget of messages; measures throughput and
 *           the latency from the final "." to the server's reply;
 *   sink    a fast SMTP server that accepts and counts everything (the far end for "load");
 *   idle    many sessions parked after EHLO, to measure a server's memory per idle session;
 *   attack  the same load unloaded and then beside attackers (attack.c) on loopback, to measure
 *           how much of its rate a server keeps under attack.
 *
 * Invariants: a session belongs to exactly one ring and only that ring's thread touches it. The
 * only state shared between threads is the message budget, the sample arrays, the ids file and
 * the stop flag. A session's slot is reused or retired only once none of its io_uring operations
 * is in flight, because the kernel still owns the buffers those operations point at.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <liburing.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "attack.h"

#define BENCH_NAME          "ferry-bench"
#define EXIT_USAGE          2
#define DEFAULT_LOAD_TARGET "127.0.0.1:2525"
#define DEFAULT_SINK_LISTEN "127.0.0.1:2526"
#define EHLO_COMMAND        "EHLO ferry-bench.example\r\n"

#define REPLY_LINE_MAX       512 /* RFC 5321 4.5.3.1.5; longer lines are cut, not rejected */
#define CLIENT_RECV_SIZE     2048
#define CLIENT_OUT_SEGMENTS  4
#define HANDSHAKES_IN_FLIGHT 512 /* connect..EHLO outstanding, so the backlog is not overrun */
#define RING_TICK_MS         100
#define RECONNECT_ATTEMPTS   8 /* ~4.5 s of backoff: rides out a quick server restart */
#define BACKOFF_FIRST_MS     50
#define BACKOFF_MAX_MS       1000
#define MAX_THREADS          64
#define MAX_SESSIONS         1000000
#define MAX_MESSAGES         100000000ull
#define MAX_RCPTS            1000
#define MAX_ADDRESS_LEN      256
#define MAX_BODY_BYTES       (256ull << 20)
#define MAX_SECONDS          (7ull * 24 * 3600)
#define FD_RESERVE           32 /* stdio, listener, ring fds, the ids file */
#define IDLE_SETTLE_MS       1000
#define QUIT_GRACE_MS        5000
#define ATTACK_POLL_MS       100
#define ATTACK_STABLE_MS     1000 /* holding unchanged this long: as established as it gets */
#define ATTACK_MAX_ATTACKERS 100000

#define SINK_IN_SIZE        4096
#define SINK_OUT_SIZE       2048
#define SINK_REPLY_MAX      256 /* no single sink reply is longer; see sink_process_input() */
#define SINK_LISTEN_BACKLOG 4096
#define SINK_MAX_DELAY_MS   60000

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                    */

enum bench_mode { MODE_LOAD, MODE_SINK, MODE_IDLE, MODE_ATTACK };

struct bench_target {
	char text[320]; /* as the user wrote it, for messages */
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

struct bench_options {
	enum bench_mode mode;
	struct bench_target target;
	unsigned sessions;
	unsigned threads;
	unsigned rcpts;
	unsigned long long messages;
	unsigned long long count;
	size_t body_bytes;
	bool pipelining;
	bool json;
	unsigned timeout_s;
	unsigned duration_s;
	unsigned hold_s;
	unsigned reply_delay_ms;
	long pid;
	const char *from;
	const char *to;
	const char *ids_path;
	unsigned long long rate; /* messages/s offered in total; 0: as fast as replies allow */
	/* attack */
	enum attack_kind kind;
	bool kind_given;
	unsigned attackers;
	unsigned sources;
	unsigned interval_ms;
	unsigned reconnect_rate;
	bool reconnect_rate_given;
	unsigned establish_s;
	unsigned settle_s;
	unsigned rss_limit_mb;
	unsigned tcp_mem_limit_mb;
	bool tcp_mem_limit_given;
	int nice;
};

enum long_option {
	OPT_TIMEOUT = 256,
	OPT_JSON,
	OPT_FROM,
	OPT_TO,
	OPT_RCPTS,
	OPT_IDS,
	OPT_DURATION,
	OPT_COUNT,
	OPT_REPLY_DELAY,
	OPT_PID,
	OPT_HOLD,
	OPT_RATE,
	OPT_KIND,
	OPT_SOURCES,
	OPT_INTERVAL,
	OPT_RECONNECT_RATE,
	OPT_ESTABLISH,
	OPT_SETTLE,
	OPT_RSS_LIMIT,
	OPT_TCP_MEM_LIMIT,
	OPT_NICE,
};

static const struct option load_long_options[] = {
	{"sessions", required_argument, NULL, 'c'},
	{"messages", required_argument, NULL, 'n'},
	{"size", required_argument, NULL, 's'},
	{"no-pipelining", no_argument, NULL, 'P'},
	{"threads", required_argument, NULL, 't'},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"json", no_argument, NULL, OPT_JSON},
	{"from", required_argument, NULL, OPT_FROM},
	{"to", required_argument, NULL, OPT_TO},
	{"rcpts", required_argument, NULL, OPT_RCPTS},
	{"ids", required_argument, NULL, OPT_IDS},
	{"rate", required_argument, NULL, OPT_RATE},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static const struct option sink_long_options[] = {
	{"threads", required_argument, NULL, 't'},
	{"json", no_argument, NULL, OPT_JSON},
	{"duration", required_argument, NULL, OPT_DURATION},
	{"count", required_argument, NULL, OPT_COUNT},
	{"reply-delay", required_argument, NULL, OPT_REPLY_DELAY},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static const struct option idle_long_options[] = {
	{"sessions", required_argument, NULL, 'c'},
	{"pid", required_argument, NULL, OPT_PID},
	{"hold", required_argument, NULL, OPT_HOLD},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"json", no_argument, NULL, OPT_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static const struct option attack_long_options[] = {
	{"kind", required_argument, NULL, OPT_KIND},
	{"attackers", required_argument, NULL, 'a'},
	{"sources", required_argument, NULL, OPT_SOURCES},
	{"interval", required_argument, NULL, OPT_INTERVAL},
	{"reconnect-rate", required_argument, NULL, OPT_RECONNECT_RATE},
	{"establish", required_argument, NULL, OPT_ESTABLISH},
	{"settle", required_argument, NULL, OPT_SETTLE},
	{"pid", required_argument, NULL, OPT_PID},
	{"rss-limit", required_argument, NULL, OPT_RSS_LIMIT},
	{"tcp-mem-limit", required_argument, NULL, OPT_TCP_MEM_LIMIT},
	{"nice", required_argument, NULL, OPT_NICE},
	{"sessions", required_argument, NULL, 'c'},
	{"messages", required_argument, NULL, 'n'},
	{"size", required_argument, NULL, 's'},
	{"no-pipelining", no_argument, NULL, 'P'},
	{"threads", required_argument, NULL, 't'},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"from", required_argument, NULL, OPT_FROM},
	{"to", required_argument, NULL, OPT_TO},
	{"rcpts", required_argument, NULL, OPT_RCPTS},
	{"rate", required_argument, NULL, OPT_RATE},
	{"json", no_argument, NULL, OPT_JSON},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static void usage_print(FILE *f)
{
	fputs("Usage:\n"
	      "  " BENCH_NAME " [load] [options] [HOST:PORT]  send messages over many sessions\n"
	      "                                          (default target " DEFAULT_LOAD_TARGET ")\n"
	      "  " BENCH_NAME " sink [options] [HOST:PORT]    accept and count messages\n"
	      "                                          (default listen " DEFAULT_SINK_LISTEN ")\n"
	      "  " BENCH_NAME " idle [options] [HOST:PORT]    hold idle sessions, measure server\n"
	      "                                          memory per session "
	      "(default " DEFAULT_LOAD_TARGET ")\n"
	      "  " BENCH_NAME " attack --kind KIND [options] [HOST:PORT]\n"
	      "                                          the load unloaded, then beside attackers\n"
	      "                                          (loopback only, "
	      "default " DEFAULT_LOAD_TARGET ")\n"
	      "HOST:PORT is a numeric address or a name, IPv6 in brackets: [::1]:2525\n"
	      "\n"
	      "load options:\n"
	      "  -c, --sessions N      concurrent SMTP sessions (default 10)\n"
	      "  -n, --messages N      messages to send in total (default 1000)\n"
	      "  -s, --size BYTES      approximate message size, headers included (default 1024)\n"
	      "  -P, --no-pipelining   wait for every reply even if the server offers PIPELINING\n"
	      "  -t, --threads N       threads, each with its own io_uring (default 1)\n"
	      "      --timeout SEC     stop after SEC seconds and report what was done (default "
	      "120)\n"
	      "      --from ADDR       envelope sender (default bench@load.example)\n"
	      "      --to ADDR         envelope recipient (default rcpt@relay.example)\n"
	      "      --rcpts N         N recipients per message: the --to address with 1..N\n"
	      "                        appended to its local part (default 1)\n"
	      "      --ids FILE        write the queue id of each accepted message to FILE\n"
	      "      --rate N          offer N messages/s in total, on a fixed schedule (message "
	      "k\n"
	      "                        starts at k/N s; a session late for its slot sends at "
	      "once);\n"
	      "                        measures latency at a given load rather than at saturation\n"
	      "      --json            print one JSON object instead of the summary\n"
	      "\n"
	      "sink options:\n"
	      "  -t, --threads N       threads, each with its own io_uring (default 1)\n"
	      "      --duration SEC    stop after SEC seconds (default: at SIGINT or SIGTERM)\n"
	      "      --count N         stop once N messages have been received\n"
	      "      --reply-delay MS  hold each end-of-data reply for MS milliseconds\n"
	      "      --json            print the totals as one JSON object\n"
	      "\n"
	      "idle options:\n"
	      "  -c, --sessions N      sessions to open (default 1000)\n"
	      "      --pid PID         server process whose VmRSS is read before and after\n"
	      "      --hold SEC        keep the sessions open SEC more seconds (default 0)\n"
	      "      --timeout SEC     give up establishing sessions after SEC seconds (default "
	      "120)\n"
	      "      --json            print one JSON object instead of the summary\n"
	      "\n"
	      "attack options (and the load options -c -n -s -P -t --timeout --from --to --rcpts\n"
	      "--rate, for both load runs; here -c defaults to 50 and -n to 20000):\n"
	      "      --kind KIND       idle: EHLO, then nothing; slowloris: one octet of a "
	      "command\n"
	      "                        line per interval, never a line end; trickle: EHLO, MAIL,\n"
	      "                        RCPT, DATA, then one octet of body per interval, never the\n"
	      "                        end; unread: EHLO pipelined, no reply ever read; flood:\n"
	      "                        connect, read the greeting, reset, again\n"
	      "  -a, --attackers N     attacker connections (flood: in flight) (default 1000)\n"
	      "      --sources N       source addresses 127.0.1.1 and up to spread them over\n"
	      "                        (default 100)\n"
	      "      --interval MS     slowloris and trickle: one octet every MS ms (default "
	      "1000)\n"
	      "      --reconnect-rate N  connections/s in total after each attacker's first\n"
	      "                        (default 1000; flood: no cap unless given)\n"
	      "      --establish SEC   wait at most SEC s for the attackers to be in place "
	      "(default "
	      "60)\n"
	      "      --settle SEC      then wait SEC s more before the loaded run (default 2)\n"
	      "      --pid PID         server whose VmRSS is reported and watched\n"
	      "      --rss-limit MB    with --pid: stop the attack and the load once the server's\n"
	      "                        VmRSS passes MB MiB (default 4096)\n"
	      "      --tcp-mem-limit MB  the same for the machine's TCP memory "
	      "(/proc/net/sockstat),\n"
	      "                        0 to not watch it (default: the kernel's pressure "
	      "threshold,\n"
	      "                        tcp_mem's middle value)\n"
	      "      --nice N          the attackers' thread's nice value, 0..19 (default 10)\n"
	      "      --json            print one JSON object instead of the summary\n"
	      "\n"
	      "Exit status: 0 success; 1 load: some message was not accepted, idle: some session\n"
	      "was not established, attack: either run lost a message or the attack was stopped\n"
	      "for the server's sake, or a runtime error; 2 usage error.\n",
	      f);
}

__attribute__((format(printf, 1, 2))) static void usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, BENCH_NAME ": ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nTry '" BENCH_NAME " --help'.\n");
	va_end(ap);
}

static bool option_number(const char *name, const char *text, unsigned long long min,
			  unsigned long long max, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	if (!isdigit((unsigned char)text[0]) || errno || *end || value < min || value > max) {
		fprintf(stderr,
			BENCH_NAME ": %s: expected a number from %llu to %llu, got '%s'\n"
				   "Try '" BENCH_NAME " --help'.\n",
			name, min, max, text);
		return false;
	}
	*out = value;
	return true;
}

/* An envelope address goes verbatim between <>, so it must not be able to break the command. */
static bool option_address(const char *name, const char *text)
{
	if (strlen(text) > MAX_ADDRESS_LEN || strpbrk(text, "<> \t\r\n")) {
		fprintf(stderr,
			BENCH_NAME ": %s: '%s' is not a usable address (at most %d characters, "
				   "no spaces or <>)\n",
			name, text, MAX_ADDRESS_LEN);
		return false;
	}
	return true;
}

static int target_parse(const char *text, struct bench_target *target)
{
	char host[256];
	const char *port;
	size_t host_len;

	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		host_len = (size_t)(close - text - 1);
		memcpy(host, text + 1, host_len < sizeof host ? host_len : 0);
		port = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (!colon || memchr(text, ':', (size_t)(colon - text)))
			return -EINVAL; /* bare IPv6 is ambiguous: the port must follow brackets */
		host_len = (size_t)(colon - text);
		memcpy(host, text, host_len < sizeof host ? host_len : 0);
		port = colon + 1;
	}
	if (host_len == 0 || host_len >= sizeof host || !*port ||
	    strlen(text) >= sizeof target->text)
		return -EINVAL;
	host[host_len] = '\0';

	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *found;
	if (getaddrinfo(host, port, &hints, &found) != 0)
		return -EADDRNOTAVAIL;
	memcpy(&target->addr, found->ai_addr, found->ai_addrlen);
	target->addr_len = found->ai_addrlen;
	freeaddrinfo(found);
	snprintf(target->text, sizeof target->text, "%s", text);
	return 0;
}

static void options_defaults(struct bench_options *o, enum bench_mode mode)
{
	*o = (struct bench_options){
		.mode = mode,
		.sessions = mode == MODE_IDLE     ? 1000
			    : mode == MODE_ATTACK ? 50
						  : 10,
		.threads = 1,
		.rcpts = 1,
		.messages = mode == MODE_ATTACK ? 20000 : 1000,
		.body_bytes = 1024,
		.pipelining = true,
		.timeout_s = 120,
		.from = "bench@load.example",
		.to = "rcpt@relay.example",
		.attackers = 1000,
		.sources = 100,
		.interval_ms = 1000,
		.reconnect_rate = 1000,
		.establish_s = 60,
		.settle_s = 2,
		.rss_limit_mb = 4096,
		.nice = 10,
	};
}

static bool options_apply_attack(struct bench_options *o, int opt, const char *arg)
{
	unsigned long long v = 0;

	switch (opt) {
	case OPT_KIND:
		if (attack_kind_parse(arg, &o->kind) < 0) {
			usage_error("--kind: '%s' is not one of idle, slowloris, trickle, unread, "
				    "flood",
				    arg);
			return false;
		}
		o->kind_given = true;
		return true;
	case 'a':
		if (!option_number("-a", arg, 1, ATTACK_MAX_ATTACKERS, &v))
			return false;
		o->attackers = (unsigned)v;
		return true;
	case OPT_SOURCES:
		if (!option_number("--sources", arg, 1, ATTACK_SOURCES_MAX, &v))
			return false;
		o->sources = (unsigned)v;
		return true;
	case OPT_INTERVAL:
		if (!option_number("--interval", arg, 10, 3600000, &v))
			return false;
		o->interval_ms = (unsigned)v;
		return true;
	case OPT_RECONNECT_RATE:
		if (!option_number("--reconnect-rate", arg, 0, 10000000, &v))
			return false;
		o->reconnect_rate = (unsigned)v;
		o->reconnect_rate_given = true;
		return true;
	case OPT_ESTABLISH:
		if (!option_number("--establish", arg, 1, MAX_SECONDS, &v))
			return false;
		o->establish_s = (unsigned)v;
		return true;
	case OPT_SETTLE:
		if (!option_number("--settle", arg, 0, MAX_SECONDS, &v))
			return false;
		o->settle_s = (unsigned)v;
		return true;
	case OPT_RSS_LIMIT:
		if (!option_number("--rss-limit", arg, 1, 1u << 30, &v))
			return false;
		o->rss_limit_mb = (unsigned)v;
		return true;
	case OPT_TCP_MEM_LIMIT:
		if (!option_number("--tcp-mem-limit", arg, 0, 1u << 30, &v))
			return false;
		o->tcp_mem_limit_mb = (unsigned)v;
		o->tcp_mem_limit_given = true;
		return true;
	case OPT_NICE:
		if (!option_number("--nice", arg, 0, 19, &v))
			return false;
		o->nice = (int)v;
		return true;
	}
	return false;
}

static bool options_apply(struct bench_options *o, int opt, const char *arg)
{
	unsigned long long v = 0;

	switch (opt) {
	case 'c':
		if (!option_number("-c", arg, 1, MAX_SESSIONS, &v))
			return false;
		o->sessions = (unsigned)v;
		return true;
	case 'n':
		if (!option_number("-n", arg, 1, MAX_MESSAGES, &v))
			return false;
		o->messages = v;
		return true;
	case 's':
		if (!option_number("-s", arg, 0, MAX_BODY_BYTES, &v))
			return false;
		o->body_bytes = (size_t)v;
		return true;
	case 'P':
		o->pipelining = false;
		return true;
	case 't':
		if (!option_number("-t", arg, 1, MAX_THREADS, &v))
			return false;
		o->threads = (unsigned)v;
		return true;
	case OPT_TIMEOUT:
		if (!option_number("--timeout", arg, 1, MAX_SECONDS, &v))
			return false;
		o->timeout_s = (unsigned)v;
		return true;
	case OPT_RATE:
		if (!option_number("--rate", arg, 1, 10000000, &v))
			return false;
		o->rate = v;
		return true;
	case OPT_JSON:
		o->json = true;
		return true;
	case OPT_FROM:
		o->from = arg;
		return option_address("--from", arg);
	case OPT_TO:
		o->to = arg;
		if (*arg == '\0') {
			fprintf(stderr, BENCH_NAME ": --to: a recipient address is needed\n");
			return false;
		}
		return option_address("--to", arg);
	case OPT_RCPTS:
		if (!option_number("--rcpts", arg, 1, MAX_RCPTS, &v))
			return false;
		o->rcpts = (unsigned)v;
		return true;
	case OPT_IDS:
		o->ids_path = arg;
		return true;
	case OPT_DURATION:
		if (!option_number("--duration", arg, 1, MAX_SECONDS, &v))
			return false;
		o->duration_s = (unsigned)v;
		return true;
	case OPT_COUNT:
		if (!option_number("--count", arg, 1, MAX_MESSAGES, &v))
			return false;
		o->count = v;
		return true;
	case OPT_REPLY_DELAY:
		if (!option_number("--reply-delay", arg, 0, SINK_MAX_DELAY_MS, &v))
			return false;
		o->reply_delay_ms = (unsigned)v;
		return true;
	case OPT_PID:
		if (!option_number("--pid", arg, 1, INT32_MAX, &v))
			return false;
		o->pid = (long)v;
		return true;
	case OPT_HOLD:
		if (!option_number("--hold", arg, 0, MAX_SECONDS, &v))
			return false;
		o->hold_s = (unsigned)v;
		return true;
	}
	return options_apply_attack(o, opt, arg);
}

static enum bench_mode options_mode(int *argc, char ***argv)
{
	static const struct {
		const char *word;
		enum bench_mode mode;
	} modes[] = {
		{"load", MODE_LOAD},
		{"sink", MODE_SINK},
		{"idle", MODE_IDLE},
		{"attack", MODE_ATTACK},
	};

	if (*argc < 2)
		return MODE_LOAD;
	for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
		if (strcmp((*argv)[1], modes[i].word) == 0) {
			/* The mode word takes argv[0]'s place, which getopt skips. */
			(*argc)--;
			(*argv)++;
			return modes[i].mode;
		}
	}
	return MODE_LOAD;
}

static bool target_is_loopback_ipv4(const struct bench_target *target)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)&target->addr;

	return target->addr.ss_family == AF_INET && (ntohl(in->sin_addr.s_addr) >> 24) == 127;
}

static int options_check_attack(struct bench_options *o)
{
	if (!o->kind_given) {
		usage_error("attack: --kind is needed: idle, slowloris, trickle, unread or flood");
		return -1;
	}
	/* Attackers come from 127.0.1.x: an attack stays on this machine, by construction. */
	if (!target_is_loopback_ipv4(&o->target)) {
		usage_error("attack: '%s' is not in 127.0.0.0/8; attacks run on loopback only",
			    o->target.text);
		return -1;
	}
	if (o->kind == ATTACK_FLOOD && !o->reconnect_rate_given)
		o->reconnect_rate = 0; /* a flood's rate is its point; -a bounds it */
	return 0;
}

/* Returns 0 to run, 1 when help was printed, -1 on a usage error (already reported). */
static int options_parse(int argc, char **argv, struct bench_options *o)
{
	enum bench_mode mode = options_mode(&argc, &argv);
	const struct option *table = mode == MODE_SINK     ? sink_long_options
				     : mode == MODE_IDLE   ? idle_long_options
				     : mode == MODE_ATTACK ? attack_long_options
							   : load_long_options;
	const char *shorts = mode == MODE_SINK     ? ":t:h"
			     : mode == MODE_IDLE   ? ":c:h"
			     : mode == MODE_ATTACK ? ":a:c:n:s:Pt:h"
						   : ":c:n:s:Pt:h";

	options_defaults(o, mode);
	opterr = 0;
	for (;;) {
		int opt = getopt_long(argc, argv, shorts, table, NULL);
		if (opt == -1)
			break;
		if (opt == 'h') {
			usage_print(stdout);
			return 1;
		}
		if (opt == '?') {
			usage_error("unknown option '%s' for this mode", argv[optind - 1]);
			return -1;
		}
		if (opt == ':') {
			usage_error("option '%s' needs a value", argv[optind - 1]);
			return -1;
		}
		if (!options_apply(o, opt, optarg))
			return -1;
	}
	if (argc - optind > 1) {
		usage_error("unexpected argument '%s'", argv[optind + 1]);
		return -1;
	}
	const char *target = optind < argc       ? argv[optind]
			     : mode == MODE_SINK ? DEFAULT_SINK_LISTEN
						 : DEFAULT_LOAD_TARGET;
	int tr = target_parse(target, &o->target);
	if (tr == -EADDRNOTAVAIL) {
		usage_error("cannot use address '%s': the host does not resolve, or the port is "
			    "not a number",
			    target);
		return -1;
	} else if (tr < 0) {
		usage_error("cannot use address '%s': expected HOST:PORT or [IPv6]:PORT", target);
		return -1;
	}
	if ((mode == MODE_LOAD || mode == MODE_ATTACK) && o->threads > o->sessions) {
		usage_error("-t %u: more threads than the %u sessions to share among them",
			    o->threads, o->sessions);
		return -1;
	}
	return mode == MODE_ATTACK ? options_check_attack(o) : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Small shared helpers                                                                       */

static atomic_bool stop_requested;

/* A signal, unlike a --timeout, also stops whatever run would come next (attack mode). */
static atomic_bool signal_caught;

static void stop_on_signal(int sig)
{
	(void)sig;
	atomic_store(&signal_caught, true);
	atomic_store(&stop_requested, true);
}

static void signals_install(void)
{
	struct sigaction sa = {.sa_handler = stop_on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A peer that resets mid-send must not kill the benchmark. */
	signal(SIGPIPE, SIG_IGN);
}

static bool stopping(void)
{
	return atomic_load_explicit(&stop_requested, memory_order_relaxed);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL); /* an interrupting signal only shortens the tick */
}

static void timespec_from_ms(struct __kernel_timespec *ts, unsigned ms)
{
	ts->tv_sec = ms / 1000;
	ts->tv_nsec = (long long)(ms % 1000) * 1000000;
}

/* Sessions need one descriptor each; the soft limit is often far below what a run needs. */
static int nofile_raise(rlim_t *limit)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			return -errno;
	}
	*limit = rl.rlim_cur;
	return 0;
}

static bool nofile_check(unsigned sessions)
{
	rlim_t limit;
	int ret = nofile_raise(&limit);
	if (ret < 0) {
		fprintf(stderr, BENCH_NAME ": raise RLIMIT_NOFILE: %s\n", strerror(-ret));
		return false;
	}
	if ((rlim_t)sessions + FD_RESERVE > limit) {
		fprintf(stderr,
			BENCH_NAME ": %u sessions need %u file descriptors, but the hard limit "
				   "(ulimit -Hn) is %llu\n",
			sessions, sessions + FD_RESERVE, (unsigned long long)limit);
		return false;
	}
	return true;
}

static const char *plural(uint64_t n)
{
	return n == 1 ? "" : "s";
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/* ------------------------------------------------------------------------------------------ */
/* io_uring helpers                                                                           */

enum ring_op {
	OP_CONNECT = 1,
	OP_RECV,
	OP_SEND,
	OP_TIMER,
	OP_ACCEPT,
	OP_ACCEPT_RETRY,
};

/* user_data is the owner's address with the operation in its low bits (owners are 8-aligned). */
#define OP_MASK 7u

static uint64_t op_tag(void *owner, enum ring_op op)
{
	return (uint64_t)(uintptr_t)owner | (uint64_t)op;
}

static void *op_owner(uint64_t user_data)
{
	return (void *)(uintptr_t)(user_data & ~(uint64_t)OP_MASK);
}

static enum ring_op op_kind(uint64_t user_data)
{
	return (enum ring_op)(user_data & OP_MASK);
}

static int ring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries)
{
	struct io_uring_params p = {
		.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL |
			 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER,
		.cq_entries = cq_entries,
	};
	int ret = io_uring_queue_init_params(entries, ring, &p);
	if (ret != -EINVAL)
		return ret;
	/* Older kernels lack the scheduling hints; they only save a little CPU. */
	p = (struct io_uring_params){
		.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP,
		.cq_entries = cq_entries,
	};
	return io_uring_queue_init_params(entries, ring, &p);
}

static unsigned ring_entries_for(unsigned connections)
{
	unsigned entries = 64;
	while (entries < 4096 && entries < connections * 2)
		entries *= 2;
	return entries;
}

static struct io_uring_sqe *ring_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	if (sqe)
		return sqe;
	/* The submission queue is full: hand it to the kernel to make room. */
	io_uring_submit(ring);
	sqe = io_uring_get_sqe(ring);
	if (!sqe) {
		fprintf(stderr, BENCH_NAME ": io_uring submission queue is stuck\n");
		abort();
	}
	return sqe;
}

/* Submits what is queued, waits up to wait_ms for a completion and handles all that arrived. */
static int ring_run_once(struct io_uring *ring, unsigned wait_ms,
			 void (*handle)(const struct io_uring_cqe *))
{
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;

	timespec_from_ms(&ts, wait_ms);
	int ret = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
		return ret;
	io_uring_for_each_cqe(ring, head, cqe)
	{
		handle(cqe);
		seen++;
	}
	io_uring_cq_advance(ring, seen);
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* SMTP reply reader: bytes in, one complete (possibly multi-line) reply out at a time.       */

enum reply_status { REPLY_NEED_MORE, REPLY_COMPLETE, REPLY_MALFORMED };

struct smtp_reply {
	int code;        /* of the last complete reply */
	bool pipelining; /* a line of that reply advertised PIPELINING (EHLO) */
	bool continuing; /* inside a "250-" multi-line reply */
	unsigned line_len;
	char line[REPLY_LINE_MAX];
	char text[REPLY_LINE_MAX]; /* text of the reply's last line, e.g. "2.0.0 queued as X" */
};

static void reply_reset(struct smtp_reply *r)
{
	r->code = 0;
	r->pipelining = false;
	r->continuing = false;
	r->line_len = 0;
	r->text[0] = '\0';
}

static void reply_append(struct smtp_reply *r, const char *data, size_t len)
{
	size_t room = sizeof r->line - 1 - r->line_len;
	/* Overlong lines are cut: only their code and first words matter to us. */
	if (len > room)
		len = room;
	memcpy(r->line + r->line_len, data, len);
	r->line_len += (unsigned)len;
}

static bool reply_is_keyword(const char *text, const char *keyword)
{
	size_t n = strlen(keyword);
	return strncasecmp(text, keyword, n) == 0 && (text[n] == '\0' || text[n] == ' ');
}

static enum reply_status reply_end_line(struct smtp_reply *r)
{
	size_t len = r->line_len;
	char *line = r->line;

	r->line_len = 0;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	if (len < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]))
		return REPLY_MALFORMED;
	char separator = len > 3 ? line[3] : ' ';
	if (separator != ' ' && separator != '-')
		return REPLY_MALFORMED;

	const char *text = len > 4 ? line + 4 : "";
	if (!r->continuing)
		r->pipelining = false;
	if (reply_is_keyword(text, "PIPELINING"))
		r->pipelining = true;
	r->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	r->continuing = separator == '-';
	if (r->continuing)
		return REPLY_NEED_MORE;
	memcpy(r->text, text, strlen(text) + 1);
	return REPLY_COMPLETE;
}

/*
 * Consumes bytes up to the end of the first complete reply. The caller acts on that reply and
 * feeds the rest again: pipelined replies often share one recv.
 */
static enum reply_status reply_feed(struct smtp_reply *r, const char *data, size_t len,
				    size_t *consumed)
{
	size_t i = 0;

	while (i < len) {
		const char *lf = memchr(data + i, '\n', len - i);
		size_t take = lf ? (size_t)(lf - (data + i)) : len - i;
		reply_append(r, data + i, take);
		i += take;
		if (!lf)
			break;
		i++;
		enum reply_status status = reply_end_line(r);
		if (status != REPLY_NEED_MORE) {
			*consumed = i;
			return status;
		}
	}
	*consumed = i;
	return REPLY_NEED_MORE;
}

/* ------------------------------------------------------------------------------------------ */
/* Latency samples: preallocated, filled lock-free, sorted once at the end.                   */

struct sample_set {
	uint32_t *micros;
	size_t capacity;
	atomic_size_t count;
};

struct latency_summary {
	size_t samples;
	double p50, p90, p99, max; /* milliseconds */
};

static int samples_init(struct sample_set *s, size_t capacity)
{
	s->micros = calloc(capacity ? capacity : 1, sizeof *s->micros);
	s->capacity = capacity;
	atomic_init(&s->count, 0);
	return s->micros ? 0 : -ENOMEM;
}

static void samples_add(struct sample_set *s, uint64_t ns)
{
	size_t i = atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
	uint64_t us = ns / 1000;
	/* Past capacity (reconnect storms) the extra samples are dropped, not the run. */
	if (i < s->capacity)
		s->micros[i] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int samples_compare(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static double samples_rank(const uint32_t *sorted, size_t n, double quantile)
{
	size_t rank = (size_t)ceil(quantile * (double)n); /* nearest-rank percentile */
	return sorted[rank ? rank - 1 : 0] / 1000.0;
}

static struct latency_summary samples_summarise(struct sample_set *s)
{
	struct latency_summary sum = {0};
	size_t n = atomic_load(&s->count);

	if (n > s->capacity)
		n = s->capacity;
	if (n == 0)
		return sum;
	qsort(s->micros, n, sizeof *s->micros, samples_compare);
	sum.samples = n;
	sum.p50 = samples_rank(s->micros, n, 0.50);
	sum.p90 = samples_rank(s->micros, n, 0.90);
	sum.p99 = samples_rank(s->micros, n, 0.99);
	sum.max = s->micros[n - 1] / 1000.0;
	return sum;
}

static void latency_print_json(FILE *f, const char *name, const struct latency_summary *l)
{
	fprintf(f, "\"%s\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"samples\":%zu}",
		name, l->p50, l->p90, l->p99, l->max, l->samples);
}

static void latency_print_human(FILE *f, const char *name, const struct latency_summary *l,
				const char *what)
{
	if (l->samples == 0) {
		fprintf(f, "  %-10s no samples\n", name);
		return;
	}
	fprintf(f,
		"  %-10s p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms  (%s, %zu samples)\n",
		name, l->p50, l->p90, l->p99, l->max, what, l->samples);
}

/* ------------------------------------------------------------------------------------------ */
/* Client sessions (load and idle)                                                            */

enum fail_stage {
	STAGE_CONNECT, /* session level: connect() failed */
	STAGE_BANNER,  /* session level: no 220 greeting */
	STAGE_EHLO,    /* session level: EHLO refused */
	STAGE_MAIL,    /* message level from here on */
	STAGE_RCPT,
	STAGE_DATA,
	STAGE_END, /* the reply to the final "." */
	STAGE_DISCONNECT,
	STAGE_TIMEOUT, /* in progress when the run was stopped */
	STAGE_COUNT,
};

static const char *const stage_names[STAGE_COUNT] = {
	"connect", "banner", "ehlo", "mail", "rcpt", "data", "end", "disconnect", "timeout",
};

enum client_state {
	CLIENT_QUEUED, /* waiting for a handshake slot */
	CLIENT_CONNECTING,
	CLIENT_BANNER,
	CLIENT_EHLO,
	CLIENT_MAIL,
	CLIENT_RCPT,
	CLIENT_DATA,
	CLIENT_END,
	CLIENT_RSET,
	CLIENT_IDLE, /* idle mode: established and parked */
	CLIENT_QUIT,
	CLIENT_CLOSING, /* shut down, waiting for in-flight operations to complete */
	CLIENT_BACKOFF, /* closed, timer running before the next connect */
	CLIENT_PACED,   /* --rate: a claimed message waits for its start time */
	CLIENT_DONE,
};

/* Read-only after setup, shared by every client thread. */
struct client_run {
	const struct bench_options *opt;
	char *body; /* headers, text and the terminating ".\r\n" */
	size_t body_len;
	char *commands; /* MAIL, every RCPT and DATA back to back: one write when pipelining */
	size_t commands_len;
	size_t mail_len;
	size_t *rcpt_offsets; /* rcpt i is commands[rcpt_offsets[i] .. rcpt_offsets[i + 1]) */
	size_t data_offset;
	uint64_t deadline_ns;
	FILE *ids;
	atomic_llong budget;  /* messages not yet claimed by any session */
	atomic_llong claimed; /* --rate: message k is due at start_ns + k / rate */
	uint64_t start_ns;
	atomic_bool timed_out;
	struct sample_set latency;
	struct sample_set connect;
	atomic_uint_fast64_t reported_errnos[4];
	atomic_bool reported_stage[STAGE_COUNT];
};

struct client_stats {
	uint64_t sent;
	uint64_t accepted;
	uint64_t failed;
	uint64_t fail[STAGE_COUNT];
	uint64_t bytes;
	uint64_t connected;
	uint64_t banners;
	uint64_t ehlo_ok;
	uint64_t ehlo_pipelining;
	uint64_t dropped;
	uint64_t reconnects;
	uint64_t t_first_connect;
	uint64_t t_last_reply;
};

struct out_segment {
	const char *data;
	size_t len;
	bool is_body;
};

struct client_thread;

struct client_session {
	struct client_thread *thread;
	int fd;
	enum client_state state;
	unsigned inflight; /* io_uring operations not yet completed */
	bool recv_armed;
	bool send_armed;
	bool in_handshake;
	bool pipelining; /* allowed by the user and advertised by the server */
	bool in_message; /* a claimed message is in progress */
	bool message_failed;
	bool close_failed;
	unsigned rcpt_replies;
	unsigned failures_in_row; /* connections that ended badly since the last accepted message */
	uint64_t t_connect;
	uint64_t t_final_dot;
	/* Writes in stream order; segments point into run->commands/body, never copies. */
	struct out_segment out[CLIENT_OUT_SEGMENTS];
	unsigned out_head;
	unsigned out_count;
	size_t out_offset;
	struct __kernel_timespec backoff;
	struct client_session *next_queued;
	struct smtp_reply reply;
	char rbuf[CLIENT_RECV_SIZE];
};

struct client_thread {
	struct client_run *run;
	struct io_uring ring;
	bool ring_ready;
	struct client_session *sessions;
	unsigned session_count;
	unsigned active; /* sessions not yet DONE */
	unsigned handshakes;
	unsigned handshake_limit;
	struct client_session *queue_head;
	struct client_session *queue_tail;
	/* Sessions whose final "." is in an SQE not yet submitted; see client_stamp_dots(). */
	struct client_session **dots;
	unsigned dot_count;
	struct client_stats stats;
	pthread_t tid;
	int error;
};

static void client_close(struct client_session *s, bool failed);
static void client_next_message(struct client_session *s);

static bool client_is_load(const struct client_session *s)
{
	return s->thread->run->opt->mode == MODE_LOAD;
}

static void client_report_errno(struct client_run *run, const char *what, int err)
{
	unsigned e = err > 0 && err < 256 ? (unsigned)err : 255;
	uint_fast64_t bit = (uint_fast64_t)1 << (e % 64);

	/* Thousands of sessions fail the same way; say it once. */
	if (atomic_fetch_or(&run->reported_errnos[e / 64], bit) & bit)
		return;
	fprintf(stderr, BENCH_NAME ": %s %s: %s\n", what, run->opt->target.text, strerror(err));
}

static void client_report_stage(struct client_run *run, enum fail_stage stage, const char *why)
{
	if (atomic_exchange(&run->reported_stage[stage], true))
		return;
	fprintf(stderr, BENCH_NAME ": %s: first failure at %s: %s\n", run->opt->target.text,
		stage_names[stage], why);
}

static const char *client_reply_words(const struct client_session *s, char *buf, size_t size)
{
	snprintf(buf, size, "server replied %d %s", s->reply.code, s->reply.text);
	return buf;
}

/* Session level failures (connect, banner, EHLO): the session never got to send mail. */
static void client_session_failed(struct client_session *s, enum fail_stage stage, const char *why)
{
	s->thread->stats.fail[stage]++;
	client_report_stage(s->thread->run, stage, why);
}

/* Every claimed message ends exactly once: accepted, or failed at its first failing stage. */
static void client_message_failed(struct client_session *s, enum fail_stage stage, const char *why)
{
	if (!s->in_message || s->message_failed)
		return;
	s->message_failed = true;
	s->thread->stats.failed++;
	s->thread->stats.fail[stage]++;
	client_report_stage(s->thread->run, stage, why);
}

static void client_handshake_release(struct client_session *s)
{
	if (!s->in_handshake)
		return;
	s->in_handshake = false;
	s->thread->handshakes--;
}

static void client_queue_connect(struct client_session *s)
{
	struct client_thread *t = s->thread;

	s->state = CLIENT_QUEUED;
	s->next_queued = NULL;
	if (t->queue_tail)
		t->queue_tail->next_queued = s;
	else
		t->queue_head = s;
	t->queue_tail = s;
}

/*
 * Latency runs from the moment the final "." reaches the kernel, which is when its SQE is
 * submitted: stamping at queue time would count the rest of the batch, stamping at the send's
 * completion can land after the reply.
 */
static void client_stamp_dots(struct client_thread *t)
{
	uint64_t now;

	if (!t->dot_count)
		return;
	now = now_ns();
	for (unsigned i = 0; i < t->dot_count; i++)
		t->dots[i]->t_final_dot = now;
	t->dot_count = 0;
}

static struct io_uring_sqe *client_sqe(struct client_thread *t)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);

	if (sqe)
		return sqe;
	client_stamp_dots(t);
	return ring_sqe(&t->ring);
}

static void client_arm_recv(struct client_session *s)
{
	struct io_uring_sqe *sqe = client_sqe(s->thread);

	io_uring_prep_recv(sqe, s->fd, s->rbuf, sizeof s->rbuf, 0);
	io_uring_sqe_set_data64(sqe, op_tag(s, OP_RECV));
	s->recv_armed = true;
	s->inflight++;
}

static void client_arm_send(struct client_session *s)
{
	struct client_thread *t = s->thread;
	const struct out_segment *seg = &s->out[s->out_head];
	struct io_uring_sqe *sqe = client_sqe(t);

	/* Each session has one send armed at most, so the list cannot outgrow the sessions. */
	if (seg->is_body)
		t->dots[t->dot_count++] = s;
	io_uring_prep_send(sqe, s->fd, seg->data + s->out_offset, seg->len - s->out_offset,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_tag(s, OP_SEND));
	s->send_armed = true;
	s->inflight++;
}

/* Callers set the session's next state before writing: a failed write closes the session. */
static void client_write(struct client_session *s, const char *data, size_t len, bool is_body)
{
	if (s->out_count == CLIENT_OUT_SEGMENTS) {
		/* Lock-step SMTP never queues this much; refuse rather than reorder the stream. */
		client_message_failed(s, STAGE_DISCONNECT, "internal error: output queue full");
		client_close(s, true);
		return;
	}
	unsigned slot = (s->out_head + s->out_count) % CLIENT_OUT_SEGMENTS;
	s->out[slot] = (struct out_segment){.data = data, .len = len, .is_body = is_body};
	s->out_count++;
	if (!s->send_armed)
		client_arm_send(s);
}

static void client_write_text(struct client_session *s, const char *text)
{
	client_write(s, text, strlen(text), false);
}

static void client_connect(struct client_session *s)
{
	struct client_thread *t = s->thread;
	const struct bench_target *target = &t->run->opt->target;
	int one = 1;

	s->fd = socket(target->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		client_report_errno(t->run, "socket for", errno);
		t->stats.fail[STAGE_CONNECT]++;
		s->state = CLIENT_CLOSING;
		client_close(s, true);
		return;
	}
	/* Commands are small writes answered in lock-step; Nagle would only add delay. */
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	reply_reset(&s->reply);
	s->out_head = s->out_count = 0;
	s->out_offset = 0;
	s->in_message = false;
	s->state = CLIENT_CONNECTING;
	s->in_handshake = true;
	t->handshakes++;
	s->t_connect = now_ns();
	if (!t->stats.t_first_connect)
		t->stats.t_first_connect = s->t_connect;

	struct io_uring_sqe *sqe = client_sqe(t);
	io_uring_prep_connect(sqe, s->fd, (const struct sockaddr *)&target->addr, target->addr_len);
	io_uring_sqe_set_data64(sqe, op_tag(s, OP_CONNECT));
	s->inflight++;
}

static void client_start_queued(struct client_thread *t)
{
	while (t->queue_head && t->handshakes < t->handshake_limit && !stopping()) {
		struct client_session *s = t->queue_head;
		t->queue_head = s->next_queued;
		if (!t->queue_head)
			t->queue_tail = NULL;
		client_connect(s);
	}
}

static bool client_may_reconnect(const struct client_session *s)
{
	return client_is_load(s) && s->close_failed && !stopping() &&
	       atomic_load(&s->thread->run->budget) > 0 && s->failures_in_row < RECONNECT_ATTEMPTS;
}

static void client_backoff(struct client_session *s)
{
	unsigned shift = s->failures_in_row > 1 ? s->failures_in_row - 1 : 0;
	unsigned ms = shift > 5 ? BACKOFF_MAX_MS : BACKOFF_FIRST_MS << shift;
	struct io_uring_sqe *sqe = client_sqe(s->thread);

	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	timespec_from_ms(&s->backoff, ms);
	io_uring_prep_timeout(sqe, &s->backoff, 0, 0);
	io_uring_sqe_set_data64(sqe, op_tag(s, OP_TIMER));
	s->inflight++;
	s->state = CLIENT_BACKOFF;
	s->thread->stats.reconnects++;
}

/* Runs once nothing of the session is in flight any more: the slot is ours again. */
static void client_after_close(struct client_session *s)
{
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	if (client_may_reconnect(s)) {
		client_backoff(s);
		return;
	}
	s->state = CLIENT_DONE;
	s->thread->active--;
}

static void client_close_if_quiet(struct client_session *s)
{
	if (s->inflight == 0)
		client_after_close(s);
}

static void client_close(struct client_session *s, bool failed)
{
	client_handshake_release(s);
	s->state = CLIENT_CLOSING;
	s->close_failed = failed;
	if (failed)
		s->failures_in_row++;
	/* Completes the armed recv (with 0) so the session can be retired without a cancel. */
	if (s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR);
	client_close_if_quiet(s);
}

/* The connection broke (res < 0) or the server closed it (res == 0) outside our control. */
static void client_lost(struct client_session *s, int res)
{
	const char *why = res == 0 ? "connection closed by the server" : strerror(-res);

	switch (s->state) {
	case CLIENT_BANNER:
		client_session_failed(s, STAGE_BANNER, why);
		break;
	case CLIENT_EHLO:
		client_session_failed(s, STAGE_EHLO, why);
		break;
	case CLIENT_QUIT:
		client_close(s, false);
		return;
	case CLIENT_IDLE:
		s->thread->stats.dropped++;
		break;
	default:
		client_message_failed(s, STAGE_DISCONNECT, why);
		break;
	}
	client_close(s, true);
}

static void client_rset(struct client_session *s)
{
	s->in_message = false;
	s->state = CLIENT_RSET;
	client_write_text(s, "RSET\r\n");
}

static bool client_claim_message(struct client_thread *t)
{
	if (stopping())
		return false;
	return atomic_fetch_sub_explicit(&t->run->budget, 1, memory_order_relaxed) > 0;
}

static void client_send_message(struct client_session *s);

static void client_next_message(struct client_session *s)
{
	struct client_run *run = s->thread->run;

	if (!client_claim_message(s->thread)) {
		s->state = CLIENT_QUIT;
		client_write_text(s, "QUIT\r\n");
		return;
	}
	if (run->opt->rate != 0) {
		long long k = atomic_fetch_add(&run->claimed, 1);
		uint64_t due = run->start_ns + (uint64_t)((double)k * 1e9 / (double)run->opt->rate);
		uint64_t now = now_ns();
		if (due > now) {
			struct io_uring_sqe *sqe = client_sqe(s->thread);
			s->backoff.tv_sec = (long long)((due - now) / 1000000000u);
			s->backoff.tv_nsec = (long long)((due - now) % 1000000000u);
			io_uring_prep_timeout(sqe, &s->backoff, 0, 0);
			io_uring_sqe_set_data64(sqe, op_tag(s, OP_TIMER));
			s->inflight++;
			s->state = CLIENT_PACED;
			return;
		}
	}
	client_send_message(s);
}

static void client_send_message(struct client_session *s)
{
	struct client_run *run = s->thread->run;

	s->thread->stats.sent++;
	s->in_message = true;
	s->message_failed = false;
	s->rcpt_replies = 0;
	s->state = CLIENT_MAIL;
	client_write(s, run->commands, s->pipelining ? run->commands_len : run->mail_len, false);
}

static void client_on_banner(struct client_session *s)
{
	char why[REPLY_LINE_MAX + 32];

	if (s->reply.code != 220) {
		client_session_failed(s, STAGE_BANNER, client_reply_words(s, why, sizeof why));
		client_close(s, true);
		return;
	}
	s->thread->stats.banners++;
	samples_add(&s->thread->run->connect, now_ns() - s->t_connect);
	s->state = CLIENT_EHLO;
	client_write_text(s, EHLO_COMMAND);
}

static void client_on_ehlo(struct client_session *s)
{
	struct client_thread *t = s->thread;
	char why[REPLY_LINE_MAX + 32];

	if (s->reply.code != 250) {
		client_session_failed(s, STAGE_EHLO, client_reply_words(s, why, sizeof why));
		client_close(s, true);
		return;
	}
	client_handshake_release(s);
	t->stats.ehlo_ok++;
	if (s->reply.pipelining)
		t->stats.ehlo_pipelining++;
	s->pipelining = t->run->opt->pipelining && s->reply.pipelining;
	if (!client_is_load(s)) {
		s->state = CLIENT_IDLE;
		return;
	}
	client_next_message(s);
}

static void client_on_mail(struct client_session *s)
{
	struct client_run *run = s->thread->run;
	char why[REPLY_LINE_MAX + 32];
	bool ok = s->reply.code / 100 == 2;

	if (!ok)
		client_message_failed(s, STAGE_MAIL, client_reply_words(s, why, sizeof why));
	s->state = CLIENT_RCPT;
	if (s->pipelining)
		return; /* RCPT and DATA are on their way already; their replies follow */
	if (!ok) {
		client_rset(s);
		return;
	}
	client_write(s, run->commands + run->rcpt_offsets[0],
		     run->rcpt_offsets[1] - run->rcpt_offsets[0], false);
}

static void client_on_rcpt(struct client_session *s)
{
	struct client_run *run = s->thread->run;
	char why[REPLY_LINE_MAX + 32];
	unsigned next = ++s->rcpt_replies;

	if (s->reply.code / 100 != 2)
		client_message_failed(s, STAGE_RCPT, client_reply_words(s, why, sizeof why));
	if (s->pipelining) {
		if (next == run->opt->rcpts)
			s->state = CLIENT_DATA;
		return;
	}
	if (s->message_failed) {
		client_rset(s);
		return;
	}
	if (next < run->opt->rcpts) {
		client_write(s, run->commands + run->rcpt_offsets[next],
			     run->rcpt_offsets[next + 1] - run->rcpt_offsets[next], false);
		return;
	}
	s->state = CLIENT_DATA;
	client_write(s, run->commands + run->data_offset, run->commands_len - run->data_offset,
		     false);
}

static void client_on_data(struct client_session *s)
{
	struct client_run *run = s->thread->run;
	char why[REPLY_LINE_MAX + 32];

	if (s->reply.code != 354) {
		client_message_failed(s, STAGE_DATA, client_reply_words(s, why, sizeof why));
		client_rset(s);
		return;
	}
	/*
	 * Even after a partial RCPT failure the server now wants a message, and the only way out
	 * of DATA is to finish one; the message stays counted as failed.
	 */
	s->state = CLIENT_END;
	client_write(s, run->body, run->body_len, true);
}

static void client_record_queue_id(struct client_session *s)
{
	static const char marker[] = "queued as ";
	FILE *ids = s->thread->run->ids;
	const char *id;

	if (!ids || !(id = strcasestr(s->reply.text, marker)))
		return;
	id += sizeof marker - 1;
	size_t len = strcspn(id, " \t");
	if (len)
		fprintf(ids, "%.*s\n", (int)len, id); /* one locked stdio call: threads may share */
}

static void client_on_end(struct client_session *s)
{
	struct client_thread *t = s->thread;
	char why[REPLY_LINE_MAX + 32];
	bool ok = s->reply.code / 100 == 2;

	if (!ok) {
		client_message_failed(s, STAGE_END, client_reply_words(s, why, sizeof why));
		client_rset(s);
		return;
	}
	/* The server took responsibility for it, so its id counts even if a RCPT was refused. */
	client_record_queue_id(s);
	if (!s->message_failed) {
		t->stats.accepted++;
		samples_add(&t->run->latency, now_ns() - s->t_final_dot);
		s->failures_in_row = 0;
	}
	s->in_message = false;
	client_next_message(s);
}

static void client_on_rset(struct client_session *s)
{
	if (s->reply.code / 100 != 2) {
		/* A server that refuses RSET is out of step with us; start afresh. */
		client_close(s, true);
		return;
	}
	client_next_message(s);
}

static void client_on_reply(struct client_session *s)
{
	s->thread->stats.t_last_reply = now_ns();
	switch (s->state) {
	case CLIENT_BANNER:
		client_on_banner(s);
		break;
	case CLIENT_EHLO:
		client_on_ehlo(s);
		break;
	case CLIENT_MAIL:
		client_on_mail(s);
		break;
	case CLIENT_RCPT:
		client_on_rcpt(s);
		break;
	case CLIENT_DATA:
		client_on_data(s);
		break;
	case CLIENT_END:
		client_on_end(s);
		break;
	case CLIENT_RSET:
		client_on_rset(s);
		break;
	case CLIENT_QUIT:
		client_close(s, false);
		break;
	case CLIENT_IDLE:
		/* Unprompted, e.g. "421 idle timeout": the server is about to drop us. */
		s->thread->stats.dropped++;
		client_close(s, true);
		break;
	default:
		client_message_failed(s, STAGE_DISCONNECT, "reply nobody asked for");
		client_close(s, true);
		break;
	}
}

static bool client_reading(const struct client_session *s)
{
	return s->state != CLIENT_CLOSING && s->state != CLIENT_DONE && s->state != CLIENT_BACKOFF;
}

static void client_on_recv(struct client_session *s, int res)
{
	size_t offset = 0;

	s->recv_armed = false;
	if (s->state == CLIENT_CLOSING) {
		client_close_if_quiet(s);
		return;
	}
	if (res <= 0) {
		client_lost(s, res);
		return;
	}
	while (offset < (size_t)res && client_reading(s)) {
		size_t used;
		enum reply_status status =
			reply_feed(&s->reply, s->rbuf + offset, (size_t)res - offset, &used);
		offset += used;
		if (status == REPLY_NEED_MORE)
			break;
		if (status == REPLY_MALFORMED) {
			client_message_failed(s, STAGE_DISCONNECT, "malformed reply line");
			client_lost(s, -EPROTO);
			return;
		}
		client_on_reply(s);
	}
	if (client_reading(s))
		client_arm_recv(s);
}

static void client_on_send(struct client_session *s, int res)
{
	s->send_armed = false;
	if (s->state == CLIENT_CLOSING) {
		client_close_if_quiet(s);
		return;
	}
	if (res <= 0) {
		client_lost(s, res == 0 ? -EPIPE : res);
		return;
	}
	struct out_segment *seg = &s->out[s->out_head];
	s->thread->stats.bytes += (uint64_t)res;
	s->out_offset += (size_t)res;
	if (s->out_offset == seg->len) {
		s->out_head = (s->out_head + 1) % CLIENT_OUT_SEGMENTS;
		s->out_count--;
		s->out_offset = 0;
	}
	if (s->out_count)
		client_arm_send(s);
}

static void client_on_connect(struct client_session *s, int res)
{
	if (res < 0) {
		client_report_errno(s->thread->run, "connect to", -res);
		s->thread->stats.fail[STAGE_CONNECT]++;
		client_close(s, true);
		return;
	}
	s->thread->stats.connected++;
	s->state = CLIENT_BANNER;
	client_arm_recv(s);
}

static void client_on_timer(struct client_session *s)
{
	if (s->state == CLIENT_PACED) {
		if (stopping()) {
			s->state = CLIENT_QUIT; /* claimed, never sent: not counted */
			client_write_text(s, "QUIT\r\n");
			return;
		}
		client_send_message(s);
		return;
	}
	if (stopping()) {
		s->state = CLIENT_DONE;
		s->thread->active--;
		return;
	}
	client_queue_connect(s);
}

static void client_on_cqe(const struct io_uring_cqe *cqe)
{
	struct client_session *s = op_owner(cqe->user_data);

	s->inflight--;
	switch (op_kind(cqe->user_data)) {
	case OP_CONNECT:
		client_on_connect(s, cqe->res);
		break;
	case OP_RECV:
		client_on_recv(s, cqe->res);
		break;
	case OP_SEND:
		client_on_send(s, cqe->res);
		break;
	case OP_TIMER:
		client_on_timer(s);
		break;
	default:
		break;
	}
}

static int client_thread_setup(struct client_thread *t, struct client_run *run, unsigned count,
			       unsigned handshake_limit)
{
	t->run = run;
	t->session_count = count;
	t->active = count;
	t->handshake_limit = handshake_limit ? handshake_limit : 1;
	t->sessions = calloc(count, sizeof *t->sessions);
	t->dots = calloc(count, sizeof *t->dots);
	if (!t->sessions || !t->dots)
		return -ENOMEM;
	for (unsigned i = 0; i < count; i++) {
		t->sessions[i].thread = t;
		t->sessions[i].fd = -1;
		client_queue_connect(&t->sessions[i]);
	}
	return 0;
}

/* The ring is created by the thread that drives it: SINGLE_ISSUER binds it to its creator. */
static int client_ring_setup(struct client_thread *t)
{
	int ret =
		ring_init(&t->ring, ring_entries_for(t->session_count), t->session_count * 4 + 256);
	if (ret < 0) {
		fprintf(stderr, BENCH_NAME ": io_uring setup: %s\n", strerror(-ret));
		return ret;
	}
	t->ring_ready = true;
	return 0;
}

/* Runs the ring until wait_ms have passed, all sessions are done, or a stop is requested. */
static int client_spin(struct client_thread *t, unsigned wait_ms)
{
	uint64_t end = now_ns() + (uint64_t)wait_ms * 1000000u;

	for (uint64_t now = now_ns(); now < end && t->active > 0; now = now_ns()) {
		uint64_t left_ms = (end - now) / 1000000u + 1;
		client_stamp_dots(t);
		int ret = ring_run_once(&t->ring,
					left_ms < RING_TICK_MS ? (unsigned)left_ms : RING_TICK_MS,
					client_on_cqe);
		if (ret < 0)
			return ret;
		if (stopping())
			break;
	}
	return 0;
}

static bool client_run_expired(struct client_run *run)
{
	if (stopping())
		return true;
	if (now_ns() < run->deadline_ns)
		return false;
	atomic_store(&run->timed_out, true);
	atomic_store(&stop_requested, true);
	return true;
}

/* Messages still open when the run stops count as failed, so sent == accepted + failed. */
static void client_thread_abandon(struct client_thread *t)
{
	for (unsigned i = 0; i < t->session_count; i++)
		client_message_failed(&t->sessions[i], STAGE_TIMEOUT, "run stopped");
}

static void client_thread_teardown(struct client_thread *t)
{
	/* Exiting the ring cancels what is still in flight before the sockets go away. */
	if (t->ring_ready)
		io_uring_queue_exit(&t->ring);
	t->ring_ready = false;
	for (unsigned i = 0; t->sessions && i < t->session_count; i++) {
		if (t->sessions[i].fd >= 0)
			close(t->sessions[i].fd);
		t->sessions[i].fd = -1;
	}
}

/* ------------------------------------------------------------------------------------------ */
/* load mode                                                                                  */

static void body_fill_line(char *dst, size_t len, unsigned line)
{
	char prefix[24];
	int n = snprintf(prefix, sizeof prefix, "line %06u ", line % 1000000);

	/* Lines start with a letter, so the body never needs dot-stuffing. */
	for (size_t i = 0; i < len; i++)
		dst[i] = i < (size_t)n ? prefix[i] : (char)('a' + (line + i) % 26);
}

static char *body_build(const struct bench_options *o, size_t *len_out)
{
	size_t cap = o->body_bytes + 2 * MAX_ADDRESS_LEN + 512;
	char *b = malloc(cap);
	char date[64];
	struct tm tm;
	time_t now = time(NULL);

	if (!b)
		return NULL;
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	size_t n =
		(size_t)snprintf(b, cap,
				 "From: <%s>\r\nTo: <%s>\r\nSubject: ferry-bench load message\r\n"
				 "Date: %s\r\n\r\n",
				 o->from, o->to, date);
	for (unsigned line = 1; n < o->body_bytes; line++) {
		size_t wanted = o->body_bytes - n; /* including this line's CRLF */
		size_t text = wanted >= 78 ? 76 : wanted > 2 ? wanted - 2 : 1;
		body_fill_line(b + n, text, line);
		n += text;
		b[n++] = '\r';
		b[n++] = '\n';
	}
	memcpy(b + n, ".\r\n", 3);
	*len_out = n + 3;
	return b;
}

static size_t rcpt_format(char *dst, size_t cap, const char *to, unsigned index, unsigned total)
{
	const char *at = strchr(to, '@');

	if (total == 1)
		return (size_t)snprintf(dst, cap, "RCPT TO:<%s>\r\n", to);
	if (!at)
		return (size_t)snprintf(dst, cap, "RCPT TO:<%s%u>\r\n", to, index + 1);
	return (size_t)snprintf(dst, cap, "RCPT TO:<%.*s%u%s>\r\n", (int)(at - to), to, index + 1,
				at);
}

static int commands_build(struct client_run *run, const struct bench_options *o)
{
	size_t cap = 64 + strlen(o->from) + (size_t)o->rcpts * (strlen(o->to) + 32);
	size_t n;

	run->commands = malloc(cap);
	run->rcpt_offsets = malloc(((size_t)o->rcpts + 1) * sizeof *run->rcpt_offsets);
	if (!run->commands || !run->rcpt_offsets)
		return -ENOMEM;
	n = (size_t)snprintf(run->commands, cap, "MAIL FROM:<%s>\r\n", o->from);
	run->mail_len = n;
	for (unsigned i = 0; i < o->rcpts; i++) {
		run->rcpt_offsets[i] = n;
		n += rcpt_format(run->commands + n, cap - n, o->to, i, o->rcpts);
	}
	run->rcpt_offsets[o->rcpts] = n;
	run->data_offset = n;
	memcpy(run->commands + n, "DATA\r\n", 6);
	run->commands_len = n + 6;
	return 0;
}

static int client_run_init(struct client_run *run, const struct bench_options *o)
{
	memset(run, 0, sizeof *run);
	run->opt = o;
	atomic_init(&run->budget, o->mode == MODE_LOAD ? (long long)o->messages : 0);
	atomic_init(&run->claimed, 0);
	run->start_ns = now_ns();
	atomic_init(&run->timed_out, false);
	for (unsigned i = 0; i < 4; i++)
		atomic_init(&run->reported_errnos[i], 0);
	for (unsigned i = 0; i < STAGE_COUNT; i++)
		atomic_init(&run->reported_stage[i], false);
	if (samples_init(&run->connect, (size_t)o->sessions * 2 + 1024) < 0)
		goto out_of_memory;
	if (o->mode != MODE_LOAD)
		return 0;
	if (samples_init(&run->latency, o->messages) < 0 || commands_build(run, o) < 0)
		goto out_of_memory;
	run->body = body_build(o, &run->body_len);
	if (!run->body)
		goto out_of_memory;
	if (o->ids_path && !(run->ids = fopen(o->ids_path, "w"))) {
		int err = errno;
		fprintf(stderr, BENCH_NAME ": open %s: %s\n", o->ids_path, strerror(err));
		return -err;
	}
	return 0;
out_of_memory:
	fprintf(stderr, BENCH_NAME ": out of memory preparing the run\n");
	return -ENOMEM;
}

static void client_run_free(struct client_run *run)
{
	if (run->ids && fclose(run->ids) != 0)
		fprintf(stderr, BENCH_NAME ": write %s: %s\n", run->opt->ids_path, strerror(errno));
	free(run->body);
	free(run->commands);
	free(run->rcpt_offsets);
	free(run->latency.micros);
	free(run->connect.micros);
}

static void *load_thread_main(void *arg)
{
	struct client_thread *t = arg;

	if ((t->error = client_ring_setup(t)) < 0) {
		atomic_store(&stop_requested, true);
		return NULL;
	}
	while (t->active > 0 && !client_run_expired(t->run)) {
		client_start_queued(t);
		client_stamp_dots(t);
		t->error = ring_run_once(&t->ring, RING_TICK_MS, client_on_cqe);
		if (t->error < 0) {
			fprintf(stderr, BENCH_NAME ": io_uring wait: %s\n", strerror(-t->error));
			atomic_store(&stop_requested, true);
			break;
		}
	}
	client_thread_abandon(t);
	client_thread_teardown(t);
	return NULL;
}

static void stats_merge(struct client_stats *into, const struct client_stats *from)
{
	into->sent += from->sent;
	into->accepted += from->accepted;
	into->failed += from->failed;
	for (unsigned i = 0; i < STAGE_COUNT; i++)
		into->fail[i] += from->fail[i];
	into->bytes += from->bytes;
	into->connected += from->connected;
	into->banners += from->banners;
	into->ehlo_ok += from->ehlo_ok;
	into->ehlo_pipelining += from->ehlo_pipelining;
	into->dropped += from->dropped;
	into->reconnects += from->reconnects;
	if (from->t_first_connect &&
	    (!into->t_first_connect || from->t_first_connect < into->t_first_connect))
		into->t_first_connect = from->t_first_connect;
	if (from->t_last_reply > into->t_last_reply)
		into->t_last_reply = from->t_last_reply;
}

struct load_report {
	const struct bench_options *opt;
	struct client_stats stats;
	struct latency_summary latency;
	struct latency_summary connect;
	double seconds;
	double msgs_per_sec;
	size_t message_size;
	bool pipelining;
	bool timed_out;
	bool interrupted;
};

static const char *load_pipelining_words(const struct load_report *r)
{
	if (!r->opt->pipelining)
		return "off (-P)";
	if (r->pipelining)
		return "on";
	return r->stats.ehlo_ok ? "off (server did not offer PIPELINING)" : "not negotiated";
}

static void load_print_failures(const struct client_stats *st)
{
	printf("  failures  ");
	for (unsigned i = 0; i < STAGE_COUNT; i++)
		printf(" %s %" PRIu64 "%s", stage_names[i], st->fail[i],
		       i + 1 < STAGE_COUNT ? "," : "\n");
}

static void load_print_human(const struct load_report *r)
{
	const struct bench_options *o = r->opt;
	const struct client_stats *st = &r->stats;

	printf(BENCH_NAME " load: %s, %u session%s on %u thread%s, pipelining %s\n", o->target.text,
	       o->sessions, plural(o->sessions), o->threads, plural(o->threads),
	       load_pipelining_words(r));
	printf("  messages   %" PRIu64 " sent, %" PRIu64 " accepted, %" PRIu64
	       " failed (%llu requested, %zu bytes each, %u rcpt%s)\n",
	       st->sent, st->accepted, st->failed, o->messages, r->message_size, o->rcpts,
	       plural(o->rcpts));
	printf("  time       %.3f s, %.1f msgs/s, %.1f MB written\n", r->seconds, r->msgs_per_sec,
	       st->bytes / 1e6);
	if (o->rate != 0)
		printf("  offered    %llu msgs/s (--rate)\n", o->rate);
	latency_print_human(stdout, "latency", &r->latency, "final dot to reply");
	latency_print_human(stdout, "connect", &r->connect, "connect to 220 banner");
	load_print_failures(st);
	printf("  sessions   %" PRIu64 " connected, %" PRIu64 " reconnects\n", st->connected,
	       st->reconnects);
	if (r->timed_out)
		printf("  stopped    by --timeout after %u s\n", o->timeout_s);
	else if (r->interrupted)
		printf("  stopped    by signal\n");
}

/* One object, no newline: the attack mode nests two of them in its own. */
static void load_print_json_object(const struct load_report *r)
{
	const struct bench_options *o = r->opt;
	const struct client_stats *st = &r->stats;

	printf("{\"mode\":\"load\",\"target\":");
	json_string(stdout, o->target.text);
	printf(",\"sessions\":%u,\"threads\":%u,\"messages_requested\":%llu,"
	       "\"messages_sent\":%" PRIu64 ",\"messages_accepted\":%" PRIu64
	       ",\"messages_failed\":%" PRIu64 ",\"failures\":{",
	       o->sessions, o->threads, o->messages, st->sent, st->accepted, st->failed);
	for (unsigned i = 0; i < STAGE_COUNT; i++)
		printf("\"%s\":%" PRIu64 "%s", stage_names[i], st->fail[i],
		       i + 1 < STAGE_COUNT ? "," : "},");
	printf("\"connected\":%" PRIu64 ",\"reconnects\":%" PRIu64 ",\"bytes\":%" PRIu64
	       ",\"message_size\":%zu,\"rcpts\":%u,\"seconds\":%.6f,\"msgs_per_sec\":%.3f,",
	       st->connected, st->reconnects, st->bytes, r->message_size, o->rcpts, r->seconds,
	       r->msgs_per_sec);
	latency_print_json(stdout, "latency_ms", &r->latency);
	putchar(',');
	latency_print_json(stdout, "connect_ms", &r->connect);
	printf(",\"pipelining\":%s,\"timed_out\":%s,\"interrupted\":%s}",
	       r->pipelining ? "true" : "false", r->timed_out ? "true" : "false",
	       r->interrupted ? "true" : "false");
}

static void load_summarise(struct client_run *run, struct client_thread *threads, unsigned count,
			   struct load_report *r)
{
	const struct bench_options *o = run->opt;

	*r = (struct load_report){.opt = o, .message_size = run->body_len - 3};
	for (unsigned i = 0; i < count; i++)
		stats_merge(&r->stats, &threads[i].stats);
	r->latency = samples_summarise(&run->latency);
	r->connect = samples_summarise(&run->connect);
	if (r->stats.t_last_reply > r->stats.t_first_connect)
		r->seconds = (double)(r->stats.t_last_reply - r->stats.t_first_connect) / 1e9;
	r->msgs_per_sec = r->seconds > 0 ? (double)r->stats.accepted / r->seconds : 0;
	r->pipelining = o->pipelining && r->stats.ehlo_ok > 0 &&
			r->stats.ehlo_pipelining == r->stats.ehlo_ok;
	r->timed_out = atomic_load(&run->timed_out);
	r->interrupted = !r->timed_out && stopping();
}

static void load_print_json(const struct load_report *r)
{
	load_print_json_object(r);
	putchar('\n');
}

/*
 * Runs one load to its end (every message claimed and answered, --timeout, or a stop) and
 * summarises it into r. Returns 0 when every message was accepted, 1 when some were not or a
 * thread failed (r holds the figures either way), -1 when the run could not be set up (r is
 * left empty; the reason is on stderr). The attack mode runs it twice in one process.
 */
static int load_execute(const struct bench_options *o, struct load_report *r)
{
	struct client_run run;
	struct client_thread *threads = calloc(o->threads, sizeof *threads);
	unsigned started = 0;
	int status = -1;

	*r = (struct load_report){.opt = o};
	if (!threads || !nofile_check(o->sessions))
		goto out_free;
	if (client_run_init(&run, o) < 0)
		goto out_run;
	unsigned per_thread_limit = HANDSHAKES_IN_FLIGHT / o->threads;
	for (unsigned i = 0; i < o->threads; i++) {
		unsigned first = (unsigned)((uint64_t)o->sessions * i / o->threads);
		unsigned last = (unsigned)((uint64_t)o->sessions * (i + 1) / o->threads);
		if (client_thread_setup(&threads[i], &run, last - first, per_thread_limit) < 0) {
			fprintf(stderr, BENCH_NAME ": out of memory for %u sessions\n",
				o->sessions);
			goto out_threads;
		}
	}
	run.deadline_ns = now_ns() + (uint64_t)o->timeout_s * 1000000000u;
	for (; started < o->threads; started++) {
		int err = pthread_create(&threads[started].tid, NULL, load_thread_main,
					 &threads[started]);
		if (err) {
			fprintf(stderr, BENCH_NAME ": start thread: %s\n", strerror(err));
			atomic_store(&stop_requested, true);
			break;
		}
	}
	bool thread_failed = started < o->threads;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(threads[i].tid, NULL);
		thread_failed |= threads[i].error < 0;
	}
	load_summarise(&run, threads, started, r);
	status = r->stats.accepted == o->messages && !thread_failed ? 0 : 1;
out_threads:
	for (unsigned i = 0; i < o->threads; i++) {
		free(threads[i].sessions);
		free(threads[i].dots);
	}
out_run:
	client_run_free(&run);
out_free:
	free(threads);
	return status;
}

static int load_main(const struct bench_options *o)
{
	struct load_report r;
	int status = load_execute(o, &r);

	if (status < 0)
		return 1;
	if (o->json)
		load_print_json(&r);
	else
		load_print_human(&r);
	fflush(stdout);
	return status;
}

/* ------------------------------------------------------------------------------------------ */
/* idle mode                                                                                  */

static long rss_read_kb(long pid)
{
	char path[64], line[256];
	long kb = -1;

	snprintf(path, sizeof path, "/proc/%ld/status", pid);
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, BENCH_NAME ": read %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	if (kb < 0)
		fprintf(stderr, BENCH_NAME ": %s has no VmRSS line (a kernel thread?)\n", path);
	return kb;
}

struct idle_report {
	const struct bench_options *opt;
	struct client_stats stats;
	struct latency_summary connect;
	double seconds;
	long rss_before_kb;
	long rss_after_kb;
	double rss_per_session_kb;
	bool timed_out;
};

static void idle_print_human(const struct idle_report *r)
{
	const struct client_stats *st = &r->stats;

	printf(BENCH_NAME " idle: %s, %u session%s\n", r->opt->target.text, r->opt->sessions,
	       plural(r->opt->sessions));
	printf("  opened     %" PRIu64 " connected, %" PRIu64 " banners, %" PRIu64
	       " EHLO ok in %.3f s%s\n",
	       st->connected, st->banners, st->ehlo_ok, r->seconds,
	       r->timed_out ? " (stopped by --timeout)" : "");
	printf("  failures   connect %" PRIu64 ", banner %" PRIu64 ", ehlo %" PRIu64
	       ", dropped while held %" PRIu64 "\n",
	       st->fail[STAGE_CONNECT], st->fail[STAGE_BANNER], st->fail[STAGE_EHLO], st->dropped);
	latency_print_human(stdout, "connect", &r->connect, "connect to 220 banner");
	if (r->opt->pid)
		printf("  server     pid %ld VmRSS %ld kB before, %ld kB after: %.2f KiB per "
		       "session\n",
		       r->opt->pid, r->rss_before_kb, r->rss_after_kb, r->rss_per_session_kb);
	printf("  held       %u s\n", r->opt->hold_s);
}

static void idle_print_json(const struct idle_report *r)
{
	const struct client_stats *st = &r->stats;

	printf("{\"mode\":\"idle\",\"target\":");
	json_string(stdout, r->opt->target.text);
	printf(",\"sessions\":%u,\"established\":%" PRIu64 ",\"banners\":%" PRIu64
	       ",\"ehlo_ok\":%" PRIu64 ",\"failures\":{\"connect\":%" PRIu64 ",\"banner\":%" PRIu64
	       ",\"ehlo\":%" PRIu64 "},\"dropped\":%" PRIu64 ",\"seconds\":%.6f,",
	       r->opt->sessions, st->connected, st->banners, st->ehlo_ok, st->fail[STAGE_CONNECT],
	       st->fail[STAGE_BANNER], st->fail[STAGE_EHLO], st->dropped, r->seconds);
	latency_print_json(stdout, "connect_ms", &r->connect);
	if (r->opt->pid)
		printf(",\"pid\":%ld,\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,"
		       "\"rss_per_session_kb\":%.3f",
		       r->opt->pid, r->rss_before_kb, r->rss_after_kb, r->rss_per_session_kb);
	printf(",\"hold_seconds\":%u,\"timed_out\":%s}\n", r->opt->hold_s,
	       r->timed_out ? "true" : "false");
}

/* Opens every session, up to HANDSHAKES_IN_FLIGHT at a time, until each is parked or failed. */
static int idle_establish(struct client_thread *t)
{
	while ((t->queue_head || t->handshakes > 0) && !client_run_expired(t->run)) {
		client_start_queued(t);
		client_stamp_dots(t);
		int ret = ring_run_once(&t->ring, RING_TICK_MS, client_on_cqe);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int idle_quit_all(struct client_thread *t)
{
	/* Sessions a timeout or signal kept from starting have nothing to quit. */
	while (t->queue_head) {
		t->queue_head->state = CLIENT_DONE;
		t->queue_head = t->queue_head->next_queued;
		t->active--;
	}
	t->queue_tail = NULL;
	for (unsigned i = 0; i < t->session_count; i++) {
		struct client_session *s = &t->sessions[i];
		if (s->state == CLIENT_IDLE) {
			s->state = CLIENT_QUIT;
			client_write_text(s, "QUIT\r\n");
		} else if (s->state == CLIENT_BANNER || s->state == CLIENT_EHLO) {
			client_close(s, false); /* still mid-greeting when --timeout struck */
		}
	}
	/* Quit politely even after SIGINT; the grace period bounds it. */
	atomic_store(&stop_requested, false);
	return client_spin(t, QUIT_GRACE_MS);
}

/* Establish, settle, measure, hold, quit. Returns 0 or a negative io_uring error. */
static int idle_phases(struct client_thread *t, struct idle_report *r)
{
	const struct bench_options *o = r->opt;
	uint64_t start = now_ns();
	int ret;

	t->run->deadline_ns = start + (uint64_t)o->timeout_s * 1000000000u;
	if ((ret = idle_establish(t)) < 0)
		return ret;
	r->seconds = (double)(now_ns() - start) / 1e9;
	r->timed_out = atomic_load(&t->run->timed_out);
	if (r->timed_out)
		atomic_store(&stop_requested, false); /* --timeout ends only the opening phase */
	/* Let the server finish whatever it does after EHLO before its memory is read. */
	if (!stopping() && (ret = client_spin(t, IDLE_SETTLE_MS)) < 0)
		return ret;
	if (o->pid) {
		r->rss_after_kb = rss_read_kb(o->pid);
		if (r->rss_after_kb >= 0 && t->stats.connected)
			r->rss_per_session_kb = (double)(r->rss_after_kb - r->rss_before_kb) /
						(double)t->stats.connected;
	}
	if (!stopping() && (ret = client_spin(t, o->hold_s * 1000u)) < 0)
		return ret;
	return idle_quit_all(t);
}

static int idle_main(const struct bench_options *o)
{
	struct client_run run;
	struct client_thread t = {0};
	struct idle_report r = {.opt = o};
	int ret = -1;

	if (!nofile_check(o->sessions))
		return 1;
	if (client_run_init(&run, o) < 0)
		goto out;
	if (client_thread_setup(&t, &run, o->sessions, HANDSHAKES_IN_FLIGHT) < 0) {
		fprintf(stderr, BENCH_NAME ": out of memory for %u sessions\n", o->sessions);
		goto out;
	}
	if (o->pid && (r.rss_before_kb = rss_read_kb(o->pid)) < 0)
		goto out;
	if (client_ring_setup(&t) < 0)
		goto out;
	ret = idle_phases(&t, &r);
	if (ret < 0) {
		fprintf(stderr, BENCH_NAME ": io_uring wait: %s\n", strerror(-ret));
		goto out;
	}
	r.stats = t.stats;
	r.connect = samples_summarise(&run.connect);
	if (o->json)
		idle_print_json(&r);
	else
		idle_print_human(&r);
out:
	client_thread_teardown(&t);
	free(t.sessions);
	free(t.dots);
	client_run_free(&run);
	return ret == 0 && r.stats.ehlo_ok == o->sessions ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* attack mode                                                                                */

/* CPU seconds spent during one load run, by whom: on loopback they all share the machine. */
struct attack_cpu {
	double wall;      /* the run's, setup and teardown included */
	double server;    /* with --pid */
	double load;      /* ferry-bench less its attackers' thread */
	double attackers; /* the attackers' thread */
};

struct attack_cpu_mark {
	uint64_t wall_ns;
	double server;
	double self;
	uint64_t attackers_ns;
};

struct attack_run {
	const struct bench_options *opt;
	struct load_report unloaded;
	struct load_report loaded;
	int unloaded_status; /* load_execute's: 0, 1, or -1 when it did not run */
	int loaded_status;
	bool attacked;             /* the attackers were started */
	double establish_seconds;  /* from their start until they were in place */
	uint64_t holding_in_place; /* attackers holding at that moment */
	struct attack_counters before_loaded;
	struct attack_counters after_loaded;
	struct attack_report attack; /* final, after the stop */
	struct attack_cpu unloaded_cpu;
	struct attack_cpu loaded_cpu;
	long rss_start_kb;  /* before the unloaded run */
	long rss_before_kb; /* after it, just before the attackers start */
	long rss_before_loaded_kb;
	long rss_after_loaded_kb;
	long tcp_mem_limit_kb; /* what the watchdog used; 0: none */
	long tcp_before_kb;    /* the machine's TCP memory, as rss_before_kb and the next two */
	long tcp_before_loaded_kb;
	long tcp_after_loaded_kb;
};

/* utime + stime of a process, from /proc/PID/stat; 0 if unreadable. */
static double process_cpu_seconds(long pid)
{
	char path[64], line[1024];
	unsigned long utime = 0, stime = 0;
	long ticks = sysconf(_SC_CLK_TCK);

	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	const char *end = fgets(line, sizeof line, f) ? strrchr(line, ')') : NULL;
	fclose(f);
	/* After the command's closing parenthesis: state and ten fields, then utime, stime. */
	if (!end || sscanf(end + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
			   &stime) != 2)
		return 0;
	return (double)(utime + stime) / (double)(ticks > 0 ? ticks : 100);
}

static void attack_cpu_mark_take(const struct bench_options *o,
				 const struct attack_counters *attack, struct attack_cpu_mark *m)
{
	m->wall_ns = now_ns();
	m->server = o->pid ? process_cpu_seconds(o->pid) : 0;
	m->self = process_cpu_seconds(getpid());
	m->attackers_ns = attack ? attack->cpu_ns : 0;
}

static struct attack_cpu attack_cpu_between(const struct attack_cpu_mark *from,
					    const struct attack_cpu_mark *to)
{
	double attackers = (double)(to->attackers_ns - from->attackers_ns) / 1e9;

	return (struct attack_cpu){
		.wall = (double)(to->wall_ns - from->wall_ns) / 1e9,
		.server = to->server - from->server,
		.load = to->self - from->self - attackers,
		.attackers = attackers,
	};
}

static void attack_config_fill(const struct bench_options *o, long tcp_mem_limit_kb,
			       struct attack_config *cfg)
{
	*cfg = (struct attack_config){
		.kind = o->kind,
		.attackers = o->attackers,
		.sources = o->sources,
		.interval_ms = o->interval_ms,
		.reconnect_rate = o->reconnect_rate,
		.handshakes = HANDSHAKES_IN_FLIGHT,
		.nice = o->nice,
		.pid = o->pid,
		.rss_limit_kb = (long)o->rss_limit_mb * 1024,
		.tcp_mem_limit_kb = tcp_mem_limit_kb,
		/* Establishing, settling and one load run, with room to spare. */
		.max_seconds = o->establish_s + o->settle_s + o->timeout_s + 60,
		.from = o->from,
		.to = o->to,
		.also_stop = &stop_requested,
	};
	memcpy(&cfg->target, &o->target.addr, sizeof cfg->target);
}

static bool attack_interrupted(const struct attack_counters *c)
{
	return atomic_load(&signal_caught) || c->finished;
}

/*
 * Waits until every attacker holds, or until the number holding has not moved for a second
 * after each has tried once (the server refuses the rest), or --establish runs out. A flood
 * never holds: it is in place as soon as it runs.
 */
static void attack_wait_in_place(struct attack *attack, struct attack_run *r)
{
	const struct bench_options *o = r->opt;
	uint64_t start = now_ns(), changed = start;
	uint64_t deadline = start + (uint64_t)o->establish_s * 1000000000u;
	struct attack_counters c;
	uint64_t last = UINT64_MAX;

	for (attack_read(attack, &c); o->kind != ATTACK_FLOOD && !attack_interrupted(&c);
	     attack_read(attack, &c)) {
		uint64_t now = now_ns();
		if (c.holding != last) {
			last = c.holding;
			changed = now;
		}
		if (c.holding >= o->attackers || now >= deadline ||
		    (c.unstarted == 0 && now - changed >= ATTACK_STABLE_MS * 1000000ull))
			break;
		sleep_ms(ATTACK_POLL_MS);
	}
	r->establish_seconds = (double)(now_ns() - start) / 1e9;
	r->holding_in_place = c.holding;
	for (unsigned waited = 0; waited < o->settle_s * 1000u && !attack_interrupted(&c);
	     waited += ATTACK_POLL_MS) {
		sleep_ms(ATTACK_POLL_MS);
		attack_read(attack, &c);
	}
}

/* Attackers in place, the load again beside them, then the stop. Returns -1 if none started. */
static int attack_phases(const struct bench_options *load, struct attack_run *r)
{
	const struct bench_options *o = r->opt;
	struct attack_config cfg;
	struct attack *attack;

	r->tcp_mem_limit_kb = o->tcp_mem_limit_given ? (long)o->tcp_mem_limit_mb * 1024
						     : attack_tcp_mem_pressure_kb();
	if (r->tcp_mem_limit_kb < 0)
		r->tcp_mem_limit_kb = 0;
	attack_config_fill(o, r->tcp_mem_limit_kb, &cfg);
	if (o->pid)
		r->rss_before_kb = rss_read_kb(o->pid);
	r->tcp_before_kb = attack_tcp_mem_kb();
	if (attack_start(&cfg, &attack) < 0)
		return -1;
	r->attacked = true;
	fprintf(stderr, BENCH_NAME " attack: %u %s attackers starting\n", o->attackers,
		attack_kind_name(o->kind));
	attack_wait_in_place(attack, r);
	if (o->pid)
		r->rss_before_loaded_kb = rss_read_kb(o->pid);
	r->tcp_before_loaded_kb = attack_tcp_mem_kb();
	attack_read(attack, &r->before_loaded);
	struct attack_cpu_mark from, to;
	attack_cpu_mark_take(o, &r->before_loaded, &from);
	if (!attack_interrupted(&r->before_loaded)) {
		if (o->kind == ATTACK_FLOOD)
			fprintf(stderr, BENCH_NAME " attack: flooding; loaded run\n");
		else
			fprintf(stderr,
				BENCH_NAME " attack: %" PRIu64 " attackers holding; loaded run\n",
				r->before_loaded.holding);
		r->loaded_status = load_execute(load, &r->loaded);
	}
	attack_read(attack, &r->after_loaded);
	attack_cpu_mark_take(o, &r->after_loaded, &to);
	r->loaded_cpu = attack_cpu_between(&from, &to);
	if (o->pid)
		r->rss_after_loaded_kb = rss_read_kb(o->pid);
	r->tcp_after_loaded_kb = attack_tcp_mem_kb();
	attack_stop(attack, &r->attack);
	return 0;
}

static void attack_print_load_brief(const char *name, const struct load_report *l)
{
	printf("  %-10s %" PRIu64 " of %llu accepted, %" PRIu64
	       " failed in %.3f s: %.1f msgs/s%s\n",
	       name, l->stats.accepted, l->opt->messages, l->stats.failed, l->seconds,
	       l->msgs_per_sec,
	       l->timed_out     ? " (stopped by --timeout)"
	       : l->interrupted ? " (stopped)"
				: "");
}

static uint64_t attack_delta(const struct attack_run *r, enum attack_counter which)
{
	return r->after_loaded.count[which] - r->before_loaded.count[which];
}

static double attack_ratio(const struct attack_run *r)
{
	return r->unloaded.msgs_per_sec > 0 ? r->loaded.msgs_per_sec / r->unloaded.msgs_per_sec : 0;
}

static bool attack_loaded_ran(const struct attack_run *r)
{
	return r->loaded_status >= 0;
}

static void attack_print_durations(const char *what, const struct attack_durations *d)
{
	if (!d->samples) {
		printf("%s none", what);
		return;
	}
	printf("%s %zu, p50 %.1f s, p90 %.1f s, max %.1f s", what, d->samples, d->p50, d->p90,
	       d->max);
}

static long attack_peak(long watched, long a, long b)
{
	long peak = watched > a ? watched : a;
	return peak > b ? peak : b;
}

/* The watchdog reads five times a second; the last reading may come after its last. */
static long attack_rss_peak_kb(const struct attack_run *r)
{
	return attack_peak(r->attack.totals.rss_peak_kb, r->rss_before_loaded_kb,
			   r->rss_after_loaded_kb);
}

static long attack_tcp_peak_kb(const struct attack_run *r)
{
	return attack_peak(r->attack.totals.tcp_mem_peak_kb, r->tcp_before_loaded_kb,
			   r->tcp_after_loaded_kb);
}

static bool attack_stopped_by_watchdog(const struct attack_run *r)
{
	const struct attack_counters *c = &r->attack.totals;
	return c->rss_limit_hit || c->tcp_mem_limit_hit || c->server_gone;
}

static void attack_print_cpu(const char *name, const struct attack_cpu *c, bool server)
{
	printf("  cpu        %s run, %.3f s: ", name, c->wall);
	if (server)
		printf("server %.2f s, ", c->server);
	printf("load %.2f s", c->load);
	if (c->attackers > 0)
		printf(", attackers %.2f s", c->attackers);
	printf(" (CPU time)\n");
}

static void attack_print_human(const struct attack_run *r)
{
	const struct bench_options *o = r->opt;
	const struct attack_report *a = &r->attack;
	const uint64_t *n = a->totals.count;

	printf(BENCH_NAME " attack: %s, %s", o->target.text, attack_kind_name(o->kind));
	if (o->kind == ATTACK_SLOWLORIS || o->kind == ATTACK_TRICKLE)
		printf(" (one octet every %u ms)", o->interval_ms);
	printf(", %u attacker%s from %u source%s; load -c %u -n %llu -s %zu\n", o->attackers,
	       plural(o->attackers), o->sources, plural(o->sources), o->sessions, o->messages,
	       o->body_bytes);
	if (r->unloaded_status >= 0)
		attack_print_load_brief("unloaded", &r->unloaded);
	if (!r->attacked)
		return;
	if (r->before_loaded.finished)
		printf("  attack     stopped %.1f s after the start (see below), %zu of %u holding "
		       "then\n",
		       a->seconds, a->age.samples, o->attackers);
	else if (o->kind == ATTACK_FLOOD)
		printf("  attack     flooding, %u s to settle\n", o->settle_s);
	else
		printf("  attack     %" PRIu64
		       " of %u holding %.3f s after the start, then %u s to "
		       "settle\n",
		       r->holding_in_place, o->attackers, r->establish_seconds, o->settle_s);
	if (attack_loaded_ran(r)) {
		attack_print_load_brief("loaded", &r->loaded);
		latency_print_human(stdout, "latency", &r->loaded.latency, "final dot to reply");
		latency_print_human(stdout, "connect", &r->loaded.connect, "connect to 220 banner");
		if (r->loaded.stats.failed || r->loaded.stats.fail[STAGE_CONNECT] ||
		    r->loaded.stats.fail[STAGE_BANNER] || r->loaded.stats.fail[STAGE_EHLO])
			load_print_failures(&r->loaded.stats);
		printf("  ratio      %.1f %% of the unloaded rate\n", 100 * attack_ratio(r));
		attack_print_cpu("unloaded", &r->unloaded_cpu, o->pid != 0);
		attack_print_cpu("loaded", &r->loaded_cpu, o->pid != 0);
	} else {
		printf("  loaded     not run\n");
	}
	printf("  attackers  over %.1f s: %" PRIu64 " connects (%.0f/s), %" PRIu64
	       " failed to connect, %" PRIu64 " greeted, %" PRIu64 " refused, %" PRIu64
	       " closed before any greeting\n",
	       a->seconds, n[ATTACK_CONNECTS],
	       a->seconds > 0 ? (double)n[ATTACK_CONNECTS] / a->seconds : 0,
	       n[ATTACK_CONNECT_FAILURES], n[ATTACK_GREETED], n[ATTACK_REFUSED],
	       n[ATTACK_UNGREETED]);
	printf("             %" PRIu64 " reached the attack, %" PRIu64
	       " closed by the server, %" PRIu64 " error replies, %" PRIu64 " setup failures",
	       n[ATTACK_HELD], n[ATTACK_CLOSED], n[ATTACK_ERROR_REPLIES], n[ATTACK_SETUP_FAILURES]);
	if (o->kind == ATTACK_FLOOD)
		printf(", %" PRIu64 " reset after the greeting", n[ATTACK_FLOOD_CLOSES]);
	printf(", %" PRIu64 " octets sent\n", n[ATTACK_BYTES_SENT]);
	if (attack_loaded_ran(r))
		printf("  meanwhile  during the loaded run: %" PRIu64 " connects, %" PRIu64
		       " refused, %" PRIu64 " closed by the server\n",
		       attack_delta(r, ATTACK_CONNECTS), attack_delta(r, ATTACK_REFUSED),
		       attack_delta(r, ATTACK_CLOSED));
	printf("  lifetime  ");
	attack_print_durations(" closed by the server:", &a->lifetime);
	attack_print_durations("; still holding at the stop:", &a->age);
	putchar('\n');
	if (o->pid)
		printf("  server     pid %ld VmRSS %ld kB at the start, %ld kB before the attack, "
		       "%ld kB before the loaded run, %ld kB after it, peak %ld kB\n",
		       o->pid, r->rss_start_kb, r->rss_before_kb, r->rss_before_loaded_kb,
		       r->rss_after_loaded_kb, attack_rss_peak_kb(r));
	printf("  kernel     TCP memory of the machine %ld kB before the attack, %ld kB before the "
	       "loaded run, %ld kB after it, peak %ld kB\n",
	       r->tcp_before_kb, r->tcp_before_loaded_kb, r->tcp_after_loaded_kb,
	       attack_tcp_peak_kb(r));
	if (a->totals.rss_limit_hit)
		printf("  stopped    the server's VmRSS passed --rss-limit %u MB\n",
		       o->rss_limit_mb);
	if (a->totals.tcp_mem_limit_hit)
		printf("  stopped    the machine's TCP memory passed %ld kB%s\n",
		       r->tcp_mem_limit_kb,
		       o->tcp_mem_limit_given ? "" : " (the kernel's pressure threshold)");
	if (a->totals.server_gone)
		printf("  stopped    the server process went away\n");
	if (atomic_load(&signal_caught))
		printf("  stopped    by signal\n");
}

static void attack_print_durations_json(const char *name, const struct attack_durations *d)
{
	printf("\"%s\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"samples\":%zu}", name,
	       d->p50, d->p90, d->p99, d->max, d->samples);
}

static void attack_print_counters_json(const uint64_t *count)
{
	for (unsigned i = 0; i < ATTACK_COUNTER_COUNT; i++)
		printf("%s\"%s\":%" PRIu64, i ? "," : "", attack_counter_names[i], count[i]);
}

static void attack_print_cpu_json(const char *name, const struct attack_cpu *c)
{
	printf(",\"%s\":{\"wall\":%.3f,\"server\":%.3f,\"load\":%.3f,\"attackers\":%.3f}", name,
	       c->wall, c->server, c->load, c->attackers);
}

static void attack_print_json(const struct attack_run *r)
{
	const struct bench_options *o = r->opt;
	const struct attack_report *a = &r->attack;

	printf("{\"mode\":\"attack\",\"target\":");
	json_string(stdout, o->target.text);
	printf(",\"kind\":\"%s\",\"attackers\":%u,\"sources\":%u,\"interval_ms\":%u,"
	       "\"reconnect_rate\":%u,\"settle_seconds\":%u,\"unloaded\":",
	       attack_kind_name(o->kind), o->attackers, o->sources, o->interval_ms,
	       o->reconnect_rate, o->settle_s);
	if (r->unloaded_status >= 0)
		load_print_json_object(&r->unloaded);
	else
		printf("null");
	printf(",\"loaded\":");
	if (attack_loaded_ran(r)) {
		load_print_json_object(&r->loaded);
		printf(",\"ratio\":%.4f", attack_ratio(r));
	} else {
		printf("null,\"ratio\":null");
	}
	if (r->attacked) {
		printf(",\"establish_seconds\":%.3f,\"holding_in_place\":%" PRIu64
		       ",\"attack\":{\"seconds\":%.3f,",
		       r->establish_seconds, r->holding_in_place, a->seconds);
		attack_print_counters_json(a->totals.count);
		putchar(',');
		attack_print_durations_json("lifetime_s", &a->lifetime);
		putchar(',');
		attack_print_durations_json("holding_age_s", &a->age);
		printf(",\"rss_limit_hit\":%s,\"tcp_mem_limit_hit\":%s,\"server_gone\":%s},"
		       "\"during_loaded\":{",
		       a->totals.rss_limit_hit ? "true" : "false",
		       a->totals.tcp_mem_limit_hit ? "true" : "false",
		       a->totals.server_gone ? "true" : "false");
		uint64_t delta[ATTACK_COUNTER_COUNT];
		for (unsigned i = 0; i < ATTACK_COUNTER_COUNT; i++)
			delta[i] = attack_delta(r, (enum attack_counter)i);
		attack_print_counters_json(delta);
		putchar('}');
	}
	if (o->pid)
		printf(",\"pid\":%ld,\"rss_start_kb\":%ld,\"rss_before_kb\":%ld,"
		       "\"rss_before_loaded_kb\":%ld,\"rss_after_loaded_kb\":%ld,\"rss_peak_kb\":%"
		       "ld",
		       o->pid, r->rss_start_kb, r->rss_before_kb, r->rss_before_loaded_kb,
		       r->rss_after_loaded_kb, attack_rss_peak_kb(r));
	attack_print_cpu_json("unloaded_cpu_s", &r->unloaded_cpu);
	attack_print_cpu_json("loaded_cpu_s", &r->loaded_cpu);
	printf(",\"tcp_mem_limit_kb\":%ld,\"tcp_mem_before_kb\":%ld,"
	       "\"tcp_mem_before_loaded_kb\":%ld,\"tcp_mem_after_loaded_kb\":%ld,"
	       "\"tcp_mem_peak_kb\":%ld",
	       r->tcp_mem_limit_kb, r->tcp_before_kb, r->tcp_before_loaded_kb,
	       r->tcp_after_loaded_kb, attack_tcp_peak_kb(r));
	printf(",\"interrupted\":%s}\n", atomic_load(&signal_caught) ? "true" : "false");
}

static int attack_main(const struct bench_options *o)
{
	struct bench_options load = *o;
	struct attack_run r = {.opt = o, .unloaded_status = -1, .loaded_status = -1};

	load.mode = MODE_LOAD;
	if (!nofile_check(o->sessions + o->attackers))
		return 1;
	if (o->pid && (r.rss_start_kb = rss_read_kb(o->pid)) < 0)
		return 1;
	fprintf(stderr, BENCH_NAME " attack: unloaded run\n");
	struct attack_cpu_mark from, to;
	attack_cpu_mark_take(o, NULL, &from);
	r.unloaded_status = load_execute(&load, &r.unloaded);
	attack_cpu_mark_take(o, NULL, &to);
	r.unloaded_cpu = attack_cpu_between(&from, &to);
	if (r.unloaded_status >= 0 && !atomic_load(&signal_caught)) {
		/* A --timeout of the first run ends only that run. */
		atomic_store(&stop_requested, false);
		if (attack_phases(&load, &r) < 0)
			return 1;
	}
	if (o->json)
		attack_print_json(&r);
	else
		attack_print_human(&r);
	fflush(stdout);
	bool complete = r.unloaded_status == 0 && r.loaded_status == 0;
	return complete && !attack_stopped_by_watchdog(&r) ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* sink mode                                                                                  */

enum sink_state {
	SINK_COMMAND,
	SINK_DATA,
	SINK_DELAYED, /* message complete, its reply held back by --reply-delay */
	SINK_CLOSING, /* shut down, waiting for in-flight operations to complete */
};

/* Where the DATA scanner stands relative to the terminating CRLF "." CRLF. */
enum data_scan { SCAN_LINE_START, SCAN_MID_LINE, SCAN_DOT, SCAN_DOT_CR };

struct sink_thread;

struct sink_conn {
	struct sink_thread *thread;
	int fd;
	enum sink_state state;
	enum data_scan scan;
	unsigned inflight;
	bool in_use;
	bool recv_armed;
	bool send_armed;
	bool quit_after_flush;
	bool discarding; /* inside an overlong command line */
	bool have_mail;
	unsigned rcpts;
	uint64_t message_bytes;
	/*
	 * in[in_start..in_end) is unparsed input; a recv may be filling in[in_end..], so the
	 * buffer is compacted only while no recv is armed. out[0..out_len) is reply text of which
	 * out_sent bytes have gone; it is rewound only when fully sent.
	 */
	uint32_t in_start;
	uint32_t in_end;
	uint32_t out_len;
	uint32_t out_sent;
	struct __kernel_timespec delay;
	struct sink_conn *next_free;
	char in[SINK_IN_SIZE];
	char out[SINK_OUT_SIZE];
};

struct sink_counters {
	uint64_t messages;
	uint64_t rcpts;
	uint64_t bytes;
	uint64_t accepted;
	uint64_t refused;
	uint64_t open;
};

struct sink_run {
	const struct bench_options *opt;
	int listen_fd;
	atomic_uint_fast64_t messages; /* across threads, only for --count */
};

struct sink_thread {
	struct sink_run *run;
	struct io_uring ring;
	bool ring_ready;
	bool accept_armed;
	bool warned_accept;
	struct sink_conn *conns; /* lazily touched: only slots ever used cost memory */
	unsigned capacity;
	unsigned used;
	struct sink_conn *free_list;
	struct __kernel_timespec accept_retry;
	struct sink_counters local; /* this thread's own, updated per event */
	uint64_t published_messages;
	uint64_t t_first_accept;
	uint64_t t_first_message;
	uint64_t t_last_message;
	pthread_t tid;
	int error;
	/* The copy the main thread reads for its per-second line; written once per loop turn. */
	_Alignas(64) struct {
		atomic_uint_fast64_t messages, rcpts, bytes, accepted, refused, open;
	} shared;
};

static void sink_process_input(struct sink_conn *c);

static void sink_reply(struct sink_conn *c, const char *text)
{
	size_t len = strlen(text);
	memcpy(c->out + c->out_len, text, len); /* room is checked before each command */
	c->out_len += (uint32_t)len;
}

static void sink_reset_transaction(struct sink_conn *c)
{
	c->have_mail = false;
	c->rcpts = 0;
}

static void sink_cmd_ehlo(struct sink_conn *c, const char *arg)
{
	(void)arg;
	sink_reset_transaction(c);
	sink_reply(c, "250-sink.ferry-bench.example\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n"
		      "250 8BITMIME\r\n");
}

static void sink_cmd_helo(struct sink_conn *c, const char *arg)
{
	(void)arg;
	sink_reset_transaction(c);
	sink_reply(c, "250 sink.ferry-bench.example\r\n");
}

static void sink_cmd_mail(struct sink_conn *c, const char *arg)
{
	if (c->have_mail) {
		sink_reply(c, "503 5.5.1 Error: nested MAIL command\r\n");
		return;
	}
	if (strncasecmp(arg, "FROM:", 5) != 0) {
		sink_reply(c, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
		return;
	}
	c->have_mail = true;
	c->rcpts = 0;
	sink_reply(c, "250 2.1.0 Ok\r\n");
}

static void sink_cmd_rcpt(struct sink_conn *c, const char *arg)
{
	if (!c->have_mail) {
		sink_reply(c, "503 5.5.1 Error: need MAIL command\r\n");
		return;
	}
	if (strncasecmp(arg, "TO:", 3) != 0) {
		sink_reply(c, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
		return;
	}
	c->rcpts++;
	sink_reply(c, "250 2.1.5 Ok\r\n");
}

static void sink_cmd_data(struct sink_conn *c, const char *arg)
{
	(void)arg;
	if (!c->rcpts) {
		sink_reply(c, c->have_mail ? "554 5.5.1 Error: no valid recipients\r\n"
					   : "503 5.5.1 Error: need MAIL command\r\n");
		return;
	}
	c->state = SINK_DATA;
	c->scan = SCAN_LINE_START;
	c->message_bytes = 0;
	sink_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
}

static void sink_cmd_rset(struct sink_conn *c, const char *arg)
{
	(void)arg;
	sink_reset_transaction(c);
	sink_reply(c, "250 2.0.0 Ok\r\n");
}

static void sink_cmd_noop(struct sink_conn *c, const char *arg)
{
	(void)arg;
	sink_reply(c, "250 2.0.0 Ok\r\n");
}

static void sink_cmd_quit(struct sink_conn *c, const char *arg)
{
	(void)arg;
	c->quit_after_flush = true;
	sink_reply(c, "221 2.0.0 Bye\r\n");
}

static const struct sink_verb {
	char name[5];
	void (*handle)(struct sink_conn *c, const char *arg);
} sink_verbs[] = {
	{"EHLO", sink_cmd_ehlo}, {"HELO", sink_cmd_helo}, {"MAIL", sink_cmd_mail},
	{"RCPT", sink_cmd_rcpt}, {"DATA", sink_cmd_data}, {"RSET", sink_cmd_rset},
	{"NOOP", sink_cmd_noop}, {"QUIT", sink_cmd_quit},
};

static void sink_command(struct sink_conn *c, char *line, size_t len)
{
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	for (size_t i = 0; i < sizeof sink_verbs / sizeof sink_verbs[0]; i++) {
		if (len >= 4 && strncasecmp(line, sink_verbs[i].name, 4) == 0 &&
		    (len == 4 || line[4] == ' ')) {
			const char *arg = line + 4;
			while (*arg == ' ')
				arg++;
			sink_verbs[i].handle(c, arg);
			return;
		}
	}
	sink_reply(c, "502 5.5.2 Error: command not recognized\r\n");
}

/* Streams through DATA; returns bytes consumed and sets *end past the final ".\r\n". */
static size_t sink_scan_data(struct sink_conn *c, bool *end)
{
	const char *start = c->in + c->in_start, *p = start, *stop = c->in + c->in_end;

	*end = false;
	while (p < stop && !*end) {
		switch (c->scan) {
		case SCAN_MID_LINE: {
			const char *lf = memchr(p, '\n', (size_t)(stop - p));
			p = lf ? lf + 1 : stop;
			if (lf)
				c->scan = SCAN_LINE_START;
			break;
		}
		case SCAN_LINE_START:
			c->scan = *p == '.'    ? SCAN_DOT
				  : *p == '\n' ? SCAN_LINE_START
					       : SCAN_MID_LINE;
			p++;
			break;
		case SCAN_DOT:
		case SCAN_DOT_CR:
			/* Only [CR]LF ends the message; anything else makes it a dot-stuffed line.
			 */
			if (*p == '\n') {
				*end = true;
				p++;
			} else if (*p == '\r' && c->scan == SCAN_DOT) {
				c->scan = SCAN_DOT_CR;
				p++;
			} else {
				c->scan = SCAN_MID_LINE;
			}
			break;
		}
	}
	return (size_t)(p - start);
}

static void sink_arm_delay(struct sink_conn *c)
{
	struct io_uring_sqe *sqe = ring_sqe(&c->thread->ring);

	timespec_from_ms(&c->delay, c->thread->run->opt->reply_delay_ms);
	io_uring_prep_timeout(sqe, &c->delay, 0, 0);
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_TIMER));
	c->inflight++;
}

static void sink_message_end(struct sink_conn *c)
{
	struct sink_thread *t = c->thread;

	t->local.messages++;
	t->local.rcpts += c->rcpts;
	t->local.bytes += c->message_bytes;
	t->t_last_message = now_ns();
	if (!t->t_first_message)
		t->t_first_message = t->t_last_message;
	sink_reset_transaction(c);
	if (t->run->opt->reply_delay_ms) {
		c->state = SINK_DELAYED;
		sink_arm_delay(c);
		return;
	}
	c->state = SINK_COMMAND;
	sink_reply(c, "250 2.0.0 Ok: sunk\r\n");
}

static void sink_consume_data(struct sink_conn *c)
{
	bool end;
	size_t used = sink_scan_data(c, &end);

	c->in_start += (uint32_t)used;
	c->message_bytes += used;
	if (end)
		sink_message_end(c);
}

/* Returns false when the buffered input holds no complete line yet. */
static bool sink_consume_line(struct sink_conn *c)
{
	char *start = c->in + c->in_start;
	char *lf = memchr(start, '\n', c->in_end - c->in_start);

	if (!lf) {
		/* A full buffer without a line end: drop it and answer once the line ends. */
		if (c->in_start == 0 && c->in_end == SINK_IN_SIZE) {
			c->discarding = true;
			c->in_start = c->in_end = 0;
		}
		return false;
	}
	c->in_start = (uint32_t)(lf + 1 - c->in);
	if (c->discarding) {
		c->discarding = false;
		sink_reply(c, "500 5.5.2 Error: line too long\r\n");
		return true;
	}
	sink_command(c, start, (size_t)(lf - start));
	return true;
}

static void sink_arm_send(struct sink_conn *c)
{
	struct io_uring_sqe *sqe = ring_sqe(&c->thread->ring);

	io_uring_prep_send(sqe, c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_SEND));
	c->send_armed = true;
	c->inflight++;
}

static void sink_arm_recv(struct sink_conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->in_start == c->in_end) {
		c->in_start = c->in_end = 0;
	} else if (c->in_start > 0) {
		memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
		c->in_end -= c->in_start;
		c->in_start = 0;
	}
	if (c->in_end == SINK_IN_SIZE)
		return; /* full of unprocessed input: sink_process_input() re-arms once it drains */
	sqe = ring_sqe(&c->thread->ring);
	io_uring_prep_recv(sqe, c->fd, c->in + c->in_end, SINK_IN_SIZE - c->in_end, 0);
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_RECV));
	c->recv_armed = true;
	c->inflight++;
}

static void sink_free_if_quiet(struct sink_conn *c)
{
	struct sink_thread *t = c->thread;

	if (c->inflight > 0)
		return;
	close(c->fd);
	c->fd = -1;
	c->in_use = false;
	c->next_free = t->free_list;
	t->free_list = c;
	t->local.open--;
}

static void sink_close(struct sink_conn *c)
{
	c->state = SINK_CLOSING;
	/* Completes the armed recv so the slot can be reused without a cancel. */
	shutdown(c->fd, SHUT_RDWR);
	sink_free_if_quiet(c);
}

/*
 * Handles every complete command or DATA chunk buffered so far, then sends all replies in one
 * write: that is what makes pipelined clients cheap. Stops early while the reply buffer could
 * not take another reply, and resumes from the send completion.
 */
static void sink_process_input(struct sink_conn *c)
{
	while (c->in_start < c->in_end && !c->quit_after_flush &&
	       SINK_OUT_SIZE - c->out_len >= SINK_REPLY_MAX) {
		if (c->state == SINK_DATA)
			sink_consume_data(c);
		else if (c->state != SINK_COMMAND || !sink_consume_line(c))
			break;
	}
	if (!c->send_armed && c->out_sent < c->out_len)
		sink_arm_send(c);
	if (c->quit_after_flush && !c->send_armed) {
		sink_close(c);
		return;
	}
	if (!c->recv_armed && !c->quit_after_flush)
		sink_arm_recv(c);
}

static struct sink_conn *sink_conn_alloc(struct sink_thread *t)
{
	struct sink_conn *c = t->free_list;

	if (c)
		t->free_list = c->next_free;
	else if (t->used < t->capacity)
		c = &t->conns[t->used++];
	return c;
}

static void sink_conn_open(struct sink_thread *t, int fd)
{
	struct sink_conn *c = sink_conn_alloc(t);
	int one = 1;

	if (!c) {
		t->local.refused++;
		close(fd);
		return;
	}
	/* The buffers need no clearing; leaving them untouched keeps idle sessions small. */
	memset(c, 0, offsetof(struct sink_conn, in));
	c->thread = t;
	c->fd = fd;
	c->in_use = true;
	c->state = SINK_COMMAND;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	t->local.accepted++;
	t->local.open++;
	if (!t->t_first_accept)
		t->t_first_accept = now_ns();
	sink_reply(c, "220 sink.ferry-bench.example ESMTP ferry-bench sink\r\n");
	sink_process_input(c);
}

static void sink_arm_accept(struct sink_thread *t)
{
	struct io_uring_sqe *sqe = ring_sqe(&t->ring);

	io_uring_prep_multishot_accept(sqe, t->run->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, op_tag(t, OP_ACCEPT));
	t->accept_armed = true;
}

static void sink_accept_failed(struct sink_thread *t, int err)
{
	if (err == EINVAL) {
		fprintf(stderr,
			BENCH_NAME ": multishot accept is not supported (needs Linux 5.19)\n");
		t->error = -err;
		atomic_store(&stop_requested, true);
		return;
	}
	if (err == ECANCELED)
		return;
	if (!t->warned_accept) {
		t->warned_accept = true;
		fprintf(stderr, BENCH_NAME ": accept: %s (retrying)\n", strerror(err));
	}
	if (t->accept_armed)
		return;
	/* Out of descriptors or memory: retrying at once would spin, so wait a little. */
	struct io_uring_sqe *sqe = ring_sqe(&t->ring);
	timespec_from_ms(&t->accept_retry, 100);
	io_uring_prep_timeout(sqe, &t->accept_retry, 0, 0);
	io_uring_sqe_set_data64(sqe, op_tag(t, OP_ACCEPT_RETRY));
}

static void sink_on_accept(struct sink_thread *t, const struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		t->accept_armed = false;
	if (cqe->res < 0) {
		sink_accept_failed(t, -cqe->res);
		return;
	}
	sink_conn_open(t, cqe->res);
	if (!t->accept_armed)
		sink_arm_accept(t);
}

static void sink_on_recv(struct sink_conn *c, int res)
{
	c->recv_armed = false;
	if (c->state == SINK_CLOSING) {
		sink_free_if_quiet(c);
		return;
	}
	if (res <= 0) {
		sink_close(c);
		return;
	}
	c->in_end += (uint32_t)res;
	sink_process_input(c);
}

static void sink_on_send(struct sink_conn *c, int res)
{
	c->send_armed = false;
	if (c->state == SINK_CLOSING) {
		sink_free_if_quiet(c);
		return;
	}
	if (res <= 0) {
		sink_close(c);
		return;
	}
	c->out_sent += (uint32_t)res;
	if (c->out_sent == c->out_len)
		c->out_len = c->out_sent = 0;
	sink_process_input(c);
}

static void sink_on_delay(struct sink_conn *c)
{
	if (c->state == SINK_CLOSING) {
		sink_free_if_quiet(c);
		return;
	}
	c->state = SINK_COMMAND;
	sink_reply(c, "250 2.0.0 Ok: sunk\r\n");
	sink_process_input(c);
}

static void sink_on_cqe(const struct io_uring_cqe *cqe)
{
	enum ring_op op = op_kind(cqe->user_data);

	if (op == OP_ACCEPT) {
		sink_on_accept(op_owner(cqe->user_data), cqe);
		return;
	}
	if (op == OP_ACCEPT_RETRY) {
		struct sink_thread *t = op_owner(cqe->user_data);
		if (!t->accept_armed)
			sink_arm_accept(t);
		return;
	}
	struct sink_conn *c = op_owner(cqe->user_data);
	c->inflight--;
	if (op == OP_RECV)
		sink_on_recv(c, cqe->res);
	else if (op == OP_SEND)
		sink_on_send(c, cqe->res);
	else if (op == OP_TIMER)
		sink_on_delay(c);
}

static void sink_publish(struct sink_thread *t)
{
	struct sink_run *run = t->run;
	uint64_t fresh = t->local.messages - t->published_messages;

	atomic_store_explicit(&t->shared.messages, t->local.messages, memory_order_relaxed);
	atomic_store_explicit(&t->shared.rcpts, t->local.rcpts, memory_order_relaxed);
	atomic_store_explicit(&t->shared.bytes, t->local.bytes, memory_order_relaxed);
	atomic_store_explicit(&t->shared.accepted, t->local.accepted, memory_order_relaxed);
	atomic_store_explicit(&t->shared.refused, t->local.refused, memory_order_relaxed);
	atomic_store_explicit(&t->shared.open, t->local.open, memory_order_relaxed);
	t->published_messages = t->local.messages;
	if (!fresh || !run->opt->count)
		return;
	if (atomic_fetch_add(&run->messages, fresh) + fresh >= run->opt->count)
		atomic_store(&stop_requested, true);
}

static void *sink_thread_main(void *arg)
{
	struct sink_thread *t = arg;
	int ret = ring_init(&t->ring, ring_entries_for(t->capacity), t->capacity * 3 + 256);

	if (ret < 0) {
		fprintf(stderr, BENCH_NAME ": io_uring setup: %s\n", strerror(-ret));
		t->error = ret;
		atomic_store(&stop_requested, true);
		return NULL;
	}
	t->ring_ready = true;
	sink_arm_accept(t);
	while (!stopping()) {
		ret = ring_run_once(&t->ring, RING_TICK_MS, sink_on_cqe);
		if (ret < 0) {
			fprintf(stderr, BENCH_NAME ": io_uring wait: %s\n", strerror(-ret));
			t->error = ret;
			atomic_store(&stop_requested, true);
			break;
		}
		sink_publish(t);
	}
	/* Replies prepared in the last turn still go out before the sockets close. */
	io_uring_submit(&t->ring);
	sink_publish(t);
	io_uring_queue_exit(&t->ring);
	for (unsigned i = 0; i < t->used; i++)
		if (t->conns[i].in_use)
			close(t->conns[i].fd);
	return NULL;
}

static int sink_listen(const struct bench_target *target)
{
	int one = 1;
	int fd = socket(target->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (const struct sockaddr *)&target->addr, target->addr_len) < 0 ||
	    listen(fd, SINK_LISTEN_BACKLOG) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

static struct sink_counters sink_totals(struct sink_thread *threads, unsigned count)
{
	struct sink_counters sum = {0};

	for (unsigned i = 0; i < count; i++) {
		sum.messages +=
			atomic_load_explicit(&threads[i].shared.messages, memory_order_relaxed);
		sum.rcpts += atomic_load_explicit(&threads[i].shared.rcpts, memory_order_relaxed);
		sum.bytes += atomic_load_explicit(&threads[i].shared.bytes, memory_order_relaxed);
		sum.accepted +=
			atomic_load_explicit(&threads[i].shared.accepted, memory_order_relaxed);
		sum.refused +=
			atomic_load_explicit(&threads[i].shared.refused, memory_order_relaxed);
		sum.open += atomic_load_explicit(&threads[i].shared.open, memory_order_relaxed);
	}
	return sum;
}

/* Prints the running totals once a second until a signal, --duration or --count stops us. */
static void sink_monitor(struct sink_thread *threads, unsigned count, const struct bench_options *o)
{
	uint64_t start = now_ns(), last_messages = 0;
	unsigned ticks = 0;

	while (!stopping()) {
		sleep_ms(RING_TICK_MS);
		if (++ticks % (1000 / RING_TICK_MS))
			continue;
		struct sink_counters sum = sink_totals(threads, count);
		unsigned seconds = ticks / (1000 / RING_TICK_MS);
		fprintf(stderr,
			BENCH_NAME " sink: %us  open %" PRIu64 "  messages %" PRIu64 " (+%" PRIu64
				   "/s)  rcpts %" PRIu64 "  %.1f MB\n",
			seconds, sum.open, sum.messages, sum.messages - last_messages, sum.rcpts,
			sum.bytes / 1e6);
		last_messages = sum.messages;
		if (o->duration_s && now_ns() - start >= (uint64_t)o->duration_s * 1000000000u)
			atomic_store(&stop_requested, true);
	}
}

static void sink_report(struct sink_thread *threads, unsigned count, const struct bench_options *o,
			double seconds)
{
	struct sink_counters sum = sink_totals(threads, count);
	uint64_t first = 0, last = 0, first_message = 0;

	for (unsigned i = 0; i < count; i++) {
		if (threads[i].t_first_accept && (!first || threads[i].t_first_accept < first))
			first = threads[i].t_first_accept;
		if (threads[i].t_first_message &&
		    (!first_message || threads[i].t_first_message < first_message))
			first_message = threads[i].t_first_message;
		if (threads[i].t_last_message > last)
			last = threads[i].t_last_message;
	}
	/* The wall-clock times of the first and last message, for timing
	 * against an event outside (a flush): monotonic, shifted. */
	struct timespec wall;
	clock_gettime(CLOCK_REALTIME, &wall);
	int64_t shift_ns = (int64_t)wall.tv_sec * 1000000000 + wall.tv_nsec - (int64_t)now_ns();
	double first_ms = first_message ? ((int64_t)first_message + shift_ns) / 1e6 : 0;
	double last_ms = last ? ((int64_t)last + shift_ns) / 1e6 : 0;
	double active = last > first && first ? (double)(last - first) / 1e9 : 0;
	double rate = active > 0 ? (double)sum.messages / active : 0;
	if (o->json) {
		printf("{\"mode\":\"sink\",\"listen\":");
		json_string(stdout, o->target.text);
		printf(",\"threads\":%u,\"seconds\":%.6f,\"active_seconds\":%.6f,\"messages\":"
		       "%" PRIu64 ",\"recipients\":%" PRIu64 ",\"bytes\":%" PRIu64
		       ",\"connections\":%" PRIu64 ",\"refused\":%" PRIu64
		       ",\"msgs_per_sec\":%.3f,\"first_message_unix_ms\":%.3f"
		       ",\"last_message_unix_ms\":%.3f}\n",
		       o->threads, seconds, active, sum.messages, sum.rcpts, sum.bytes,
		       sum.accepted, sum.refused, rate, first_ms, last_ms);
		return;
	}
	printf(BENCH_NAME " sink: %s, %u thread%s, ran %.3f s\n", o->target.text, o->threads,
	       plural(o->threads), seconds);
	printf("  messages    %" PRIu64 " (%.1f msgs/s over %.3f s from first connection to last "
	       "message)\n",
	       sum.messages, rate, active);
	printf("  recipients  %" PRIu64 "\n  bytes       %" PRIu64 " of DATA (%.1f MB)\n",
	       sum.rcpts, sum.bytes, sum.bytes / 1e6);
	printf("  connections %" PRIu64 " accepted, %" PRIu64 " refused for lack of slots\n",
	       sum.accepted, sum.refused);
}

static int sink_main(const struct bench_options *o)
{
	struct sink_run run = {.opt = o};
	struct sink_thread *threads = aligned_alloc(64, sizeof(struct sink_thread) * o->threads);
	unsigned started = 0;
	rlim_t limit;
	int ret = nofile_raise(&limit);

	if (!threads || ret < 0) {
		fprintf(stderr, BENCH_NAME ": %s\n",
			!threads ? "out of memory" : "cannot raise RLIMIT_NOFILE");
		free(threads);
		return 1;
	}
	memset(threads, 0, sizeof(struct sink_thread) * o->threads);
	atomic_init(&run.messages, 0);
	run.listen_fd = sink_listen(&o->target);
	if (run.listen_fd < 0) {
		fprintf(stderr, BENCH_NAME ": listen on %s: %s\n", o->target.text,
			strerror(-run.listen_fd));
		free(threads);
		return 1;
	}
	/* Any thread may end up holding every connection, so each can take the whole limit. */
	unsigned capacity = limit > FD_RESERVE + 1000000 ? 1000000 : (unsigned)(limit - FD_RESERVE);
	for (unsigned i = 0; i < o->threads; i++) {
		threads[i].run = &run;
		threads[i].capacity = capacity;
		threads[i].conns = calloc(capacity, sizeof *threads[i].conns);
		if (!threads[i].conns) {
			fprintf(stderr, BENCH_NAME ": out of memory for %u connections\n",
				capacity);
			goto out;
		}
	}
	uint64_t start = now_ns();
	for (; started < o->threads; started++) {
		int err = pthread_create(&threads[started].tid, NULL, sink_thread_main,
					 &threads[started]);
		if (err) {
			fprintf(stderr, BENCH_NAME ": start thread: %s\n", strerror(err));
			atomic_store(&stop_requested, true);
			break;
		}
	}
	fprintf(stderr,
		BENCH_NAME " sink: listening on %s with %u thread%s, up to %u connections\n",
		o->target.text, o->threads, plural(o->threads), capacity);
	sink_monitor(threads, started, o);
	ret = started == o->threads ? 0 : 1;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(threads[i].tid, NULL);
		ret |= threads[i].error < 0;
	}
	sink_report(threads, started, o, (double)(now_ns() - start) / 1e9);
out:
	close(run.listen_fd);
	for (unsigned i = 0; i < o->threads; i++)
		free(threads[i].conns);
	free(threads);
	return ret ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct bench_options options;
	int parsed = options_parse(argc, argv, &options);

	if (parsed != 0)
		return parsed > 0 ? 0 : EXIT_USAGE;
	signals_install();
	switch (options.mode) {
	case MODE_SINK:
		return sink_main(&options);
	case MODE_IDLE:
		return idle_main(&options);
	case MODE_ATTACK:
		return attack_main(&options);
	case MODE_LOAD:
	default:
		return load_main(&options);
	}
}
