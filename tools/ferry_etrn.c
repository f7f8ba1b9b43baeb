/*
 * ferry-etrn — the RFC 1985 ETRN client a customer site runs when its link
 * comes up: it asks the provider's relay to start delivering the mail held
 * for the site's domains.
 *
 *   ferry-etrn [OPTIONS] SERVER NAME...
 *
 * One connection: greeting, EHLO (HELO when EHLO gets a 5xx), one
 * `ETRN NAME` per name, QUIT. Only the reply codes decide; replies are
 * read whole with net/smtp_client.h's reply parser. With --wait, names
 * whose mail is pending (252, 253) are asked again on new connections
 * until the server says nothing is waiting (251) or --timeout passes.
 *
 * Meant for a network-up hook, so it never prompts and every wait has a
 * deadline: each connect and each reply has its own limit, and --timeout
 * bounds the whole run.
 *
 * Exit status (the worst of the names wins): 0 every ETRN accepted, 1
 * usage, connection or protocol trouble, 2 ETRN not supported, 3 refused
 * by policy, 4 the server cannot queue for the name, 5 (--wait) mail still
 * pending when --timeout passed.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/smtp_client.h"
#include "tools/ferry_etrn_conn.h"

#define ETRN_EXIT_OK           0
#define ETRN_EXIT_FAILED       1 /* usage, connection, timeout, protocol, 421 */
#define ETRN_EXIT_UNSUPPORTED  2 /* 500, 501, 502, 504 */
#define ETRN_EXIT_REFUSED      3 /* 459, other 5xx */
#define ETRN_EXIT_CANNOT_QUEUE 4 /* 458 */
#define ETRN_EXIT_PENDING      5 /* --wait: still pending at --timeout */

#define ETRN_DEFAULT_PORT    "25"
#define ETRN_STEP_TIMEOUT_MS 30000  /* each connect and each reply */
#define ETRN_INTERVAL_MS     10000  /* --wait: between polls */
#define ETRN_RUN_TIMEOUT_MS  300000 /* the whole run */
#define ETRN_SECONDS_MAX     604800 /* a week: anything longer is a typo */
#define ETRN_NAME_MAX        255    /* a domain name's length, plus '@' or '#' */
#define ETRN_COUNT_NOT_TOLD  (-1L)

struct etrn_options {
	char host[256];
	char port[8];
	char helo[256];
	bool wait, quiet;
	int64_t interval_ms, run_timeout_ms;
	/* Each conversation's: host, port and helo point at the above once
	 * parsed; the deadline is set when the run starts. */
	struct etrn_conn_settings conn;
};

/* A name's fate so far. */
struct etrn_name {
	const char *name;
	int status;    /* the exit status its last outcome stands for */
	bool pending;  /* 252/253: mail waiting, --wait asks again */
	bool asked;    /* in the current round: its ETRN was sent */
	bool answered; /* in the current round: and answered */
	long count;    /* 253's count, or ETRN_COUNT_NOT_TOLD */
};

/* What a reply to ETRN means (RFC 1985 section 5, and the codes any SMTP
 * command may get). */
enum etrn_outcome {
	ETRN_STARTED,         /* 250: started, pending count hidden */
	ETRN_NOTHING_WAITING, /* 251 */
	ETRN_PENDING,         /* 252, 253 */
	ETRN_CLOSING,         /* 421: the connection is lost */
	ETRN_TEMPORARY,       /* another 4xx */
	ETRN_CANNOT_QUEUE,    /* 458 */
	ETRN_POLICY,          /* 459, or a 5xx not below */
	ETRN_UNSUPPORTED,     /* 500, 501, 502, 504 */
	ETRN_UNEXPECTED,      /* any other code */
};

static enum etrn_outcome etrn_classify(int code)
{
	switch (code) {
	case 250:
		return ETRN_STARTED;
	case 251:
		return ETRN_NOTHING_WAITING;
	case 252:
	case 253:
		return ETRN_PENDING;
	case 421:
		return ETRN_CLOSING;
	case 458:
		return ETRN_CANNOT_QUEUE;
	case 459:
		return ETRN_POLICY;
	case 500:
	case 501:
	case 502:
	case 504:
		return ETRN_UNSUPPORTED;
	}
	if (code >= 400 && code < 500)
		return ETRN_TEMPORARY;
	if (code >= 500 && code < 600)
		return ETRN_POLICY;
	return ETRN_UNEXPECTED;
}

static int etrn_outcome_status(enum etrn_outcome o)
{
	switch (o) {
	case ETRN_STARTED:
	case ETRN_NOTHING_WAITING:
	case ETRN_PENDING:
		return ETRN_EXIT_OK;
	case ETRN_UNSUPPORTED:
		return ETRN_EXIT_UNSUPPORTED;
	case ETRN_POLICY:
		return ETRN_EXIT_REFUSED;
	case ETRN_CANNOT_QUEUE:
		return ETRN_EXIT_CANNOT_QUEUE;
	case ETRN_CLOSING:
	case ETRN_TEMPORARY:
	case ETRN_UNEXPECTED:
		break;
	}
	return ETRN_EXIT_FAILED;
}

/* ---- small helpers ------------------------------------------------------------- */

static void etrn_sleep_until(int64_t when_ms)
{
	for (int64_t left; (left = when_ms - etrn_conn_now_ms()) > 0;)
		poll(NULL, 0, left > 60000 ? 60000 : (int)left);
}

/* 253's "<n> pending messages": the first number standing alone. */
static long etrn_pending_count(const struct smtp_reply *r)
{
	const char *t = r->text;
	for (const char *p = t; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p) || (p > t && isalnum((unsigned char)p[-1])))
			continue;
		char *end;
		errno = 0;
		long n = strtol(p, &end, 10);
		if (errno == 0 && !isalnum((unsigned char)*end))
			return n;
		p = end - 1;
	}
	return ETRN_COUNT_NOT_TOLD;
}

/* ---- what each reply means for its name ---------------------------------------- */

/* Take a name's reply to ETRN: the reply on stdout, a non-zero outcome in
 * words on stderr. */
static void etrn_take_reply(const struct etrn_options *opt, struct etrn_name *n,
			    const struct smtp_reply *r, bool polling)
{
	char shown[ETRN_CONN_SHOWN_MAX];
	const char *reply = etrn_conn_reply_text(r, shown, sizeof(shown));
	enum etrn_outcome o = etrn_classify(r->code);
	if (!opt->quiet)
		printf("%s: %s\n", n->name, reply);
	n->pending = false;
	if (o == ETRN_PENDING) {
		n->pending = true;
		n->count = r->code == 253 ? etrn_pending_count(r) : ETRN_COUNT_NOT_TOLD;
	} else if (o == ETRN_TEMPORARY && polling) {
		n->pending = true; /* a temporary failure: asked again at the next poll */
		return;
	}
	n->status = etrn_outcome_status(o);
	const char *what = NULL;
	switch (o) {
	case ETRN_STARTED:
		if (opt->wait && !opt->quiet)
			fprintf(stderr,
				"ferry-etrn: %s: the server started the queue run but does not "
				"say whether mail is waiting (250): cannot be polled, taken as "
				"done\n",
				n->name);
		return;
	case ETRN_NOTHING_WAITING:
	case ETRN_PENDING:
	case ETRN_CLOSING: /* etrn_round's: the connection is lost */
		return;
	case ETRN_UNSUPPORTED:
		what = r->code == 501 ? "the server does not support ETRN, or not for the name as "
					"written (is it fully qualified?)"
				      : "the server does not support ETRN";
		break;
	case ETRN_POLICY:
		what = "refused by the server's policy";
		break;
	case ETRN_CANNOT_QUEUE:
		what = "the server cannot queue mail for this name (not a domain it holds mail "
		       "for, or its queue is unavailable)";
		break;
	case ETRN_TEMPORARY:
		what = "a temporary failure at the server; try again later";
		break;
	case ETRN_UNEXPECTED:
		what = "an unexpected reply to ETRN";
		break;
	}
	fprintf(stderr, "ferry-etrn: %s: %s (%s)\n", n->name, what, reply);
}

/*
 * One connection: ETRN for every name (first round) or for the pending
 * ones (a poll), then QUIT. Returns 0 when every name asked was
 * answered, or -1 when the conversation broke off (error says why; the
 * names not answered have answered == false).
 */
static int etrn_round(const struct etrn_options *opt, struct etrn_name *names, size_t count,
		      bool polling, char *error, size_t error_size)
{
	struct etrn_conn c;
	for (size_t i = 0; i < count; i++)
		names[i].asked = names[i].answered = false;
	int rc = etrn_conn_open(&c, &opt->conn);
	for (size_t i = 0; i < count && rc == 0; i++) {
		if (polling && !names[i].pending)
			continue;
		struct smtp_reply r;
		names[i].asked = true;
		if (etrn_conn_command(&c, "ETRN", names[i].name, &r) != 0) {
			rc = -1;
		} else if (r.code == 421) {
			/* The name keeps its state: if polled, it is asked again. */
			char shown[ETRN_CONN_SHOWN_MAX];
			snprintf(c.error, sizeof(c.error),
				 "ETRN: the server is closing the connection (%s)",
				 etrn_conn_reply_text(&r, shown, sizeof(shown)));
			rc = -1;
		} else {
			etrn_take_reply(opt, &names[i], &r, polling);
			names[i].answered = true;
		}
	}
	/* After a 421 or a broken reply there is no one left to say QUIT to. */
	etrn_conn_close(&c, rc == 0);
	if (rc != 0)
		snprintf(error, error_size, "%s", c.error);
	return rc;
}

/* ---- options ------------------------------------------------------------------- */

static void etrn_usage(FILE *out)
{
	fprintf(out,
		"NAME\n"
		"    ferry-etrn - ask an SMTP relay to deliver the mail it holds for you\n"
		"                 (RFC 1985 ETRN)\n"
		"\n"
		"SYNOPSIS\n"
		"    ferry-etrn [OPTIONS] SERVER NAME...\n"
		"\n"
		"DESCRIPTION\n"
		"    A site that is only sometimes online has its provider's relay hold its\n"
		"    mail. When the link comes up, ferry-etrn connects to the relay SERVER,\n"
		"    sends EHLO (HELO if the server refuses EHLO), then one ETRN command per\n"
		"    NAME, and QUIT. The relay then delivers the held mail on new connections\n"
		"    to the site's mail server, as its configuration says: it never sends it\n"
		"    back over this connection.\n"
		"\n"
		"    SERVER is host, host:port, [IPv6-address]:port or IPv4-address:port\n"
		"    (default port 25); every address of host is tried in turn.\n"
		"    NAME is sent as given: a domain (example.org), @domain (that domain and\n"
		"    every domain under it), or #queue (a queue the relay defines).\n"
		"\n"
		"    Each reply is printed on standard output, one line per name:\n"
		"    example.org: 253 2.0.0 OK, 5 pending messages for node example.org started\n"
		"    and each failure is said in words on standard error. Every name is\n"
		"    tried, unless the connection is lost. A server that does not list ETRN\n"
		"    in its EHLO reply is asked anyway.\n"
		"\n"
		"    Every wait has a limit, so it is safe in a network-up hook: it never\n"
		"    prompts, and the whole run ends within --timeout.\n"
		"\n"
		"OPTIONS\n"
		"    -p, --port PORT         the server's port (default 25; or in SERVER)\n"
		"        --helo NAME         the name given in EHLO/HELO (default: this machine's\n"
		"                            host name as gethostname gives it; set it if that is\n"
		"                            not fully qualified)\n"
		"    -w, --wait              ask again until nothing is waiting: while a name's\n"
		"                            reply says mail is pending (252, 253), connect again\n"
		"                            every --interval and resend its ETRN, until the\n"
		"                            server answers 251 (no messages waiting) for every\n"
		"                            name. A 250 reply does not say: that name is not\n"
		"                            polled (a note says so). Failed polls are retried.\n"
		"        --interval SECONDS  between polls (default 10; fractions allowed)\n"
		"        --timeout SECONDS   the whole run's limit (default 300)\n"
		"        --connect-timeout SECONDS\n"
		"                            each connection attempt (default 30)\n"
		"        --reply-timeout SECONDS\n"
		"                            each reply (default 30)\n"
		"    -v, --verbose           show the dialogue on standard error (<<< the\n"
		"                            server, >>> ferry-etrn)\n"
		"    -q, --quiet             print nothing on success; failures still go to\n"
		"                            standard error\n"
		"    -h, --help              this text\n"
		"        --version           print the version\n"
		"\n"
		"EXIT STATUS\n"
		"    With several names the highest status wins.\n"
		"    0  every ETRN was accepted (250, 251, 252, 253)\n"
		"    1  usage error, cannot connect, timeout, protocol error, 421 (the server\n"
		"       is closing the connection), another 4xx, or anything unexpected\n"
		"    2  the server does not support ETRN (500, 501, 502, 504)\n"
		"    3  refused by the server's policy (459, or another 5xx such as 530)\n"
		"    4  the server cannot queue mail for the name (458), e.g. it holds no mail\n"
		"       for that domain\n"
		"    5  --wait: mail still pending when --timeout passed\n"
		"\n"
		"EXAMPLES\n"
		"    ferry-etrn mail.provider.example example.org\n"
		"    ferry-etrn -v --helo gw.example.org mail.provider.example:2525 @example.org\n"
		"    ferry-etrn --wait --interval 15 --timeout 600 mail.provider.example \\\n"
		"        example.org '#customer42'\n"
		"\n"
		"    ifupdown hook, /etc/network/if-up.d/ferry-etrn (executable):\n"
		"        #!/bin/sh\n"
		"        [ \"$IFACE\" = ppp0 ] || exit 0\n"
		"        exec ferry-etrn -q mail.provider.example example.org\n"
		"\n"
		"    NetworkManager dispatcher, /etc/NetworkManager/dispatcher.d/90-ferry-etrn:\n"
		"        #!/bin/sh\n"
		"        [ \"$2\" = up ] && exec ferry-etrn -q mail.provider.example example.org\n"
		"\n"
		"    systemd: a Type=oneshot service with After=network-online.target,\n"
		"    Wants=network-online.target and\n"
		"        ExecStart=/usr/local/bin/ferry-etrn -q mail.provider.example example.org\n"
		"\n"
		"    The same request with other clients:\n"
		"      fetchmail --protocol ETRN --fetchdomains example.org mail.provider.example\n"
		"      msmtp --host=mail.provider.example --rmqs=example.org\n"
		"    (fetchmail stops at the first 251; ferry-etrn asks for every name.)\n"
		"\n"
		"SEE ALSO\n"
		"    RFC 1985 (SMTP Service Extension for Remote Message Queue Starting),\n"
		"    fetchmail(1), msmtp(1), ferryctl (docs/operations.md)\n");
}

static void etrn_short_usage(void)
{
	fprintf(stderr,
		"usage: ferry-etrn [-v | -q] [-p PORT] [--helo NAME] [--wait [--interval S]] "
		"[--timeout S] SERVER NAME... (--help: more)\n");
}

static int etrn_usage_error(const char *fmt, const char *what)
{
	char shown[ETRN_CONN_SHOWN_MAX];
	fprintf(stderr, "ferry-etrn: ");
	fprintf(stderr, fmt, etrn_conn_safe(what, strlen(what), shown, sizeof(shown)));
	fputc('\n', stderr);
	etrn_short_usage();
	return ETRN_EXIT_FAILED;
}

static bool etrn_port_ok(const char *s)
{
	if (*s == '\0' || strlen(s) > 5 || strspn(s, "0123456789") != strlen(s))
		return false;
	long port = strtol(s, NULL, 10);
	return port >= 1 && port <= 65535;
}

/* SECONDS: positive, fractions allowed. */
static bool etrn_seconds(const char *s, int64_t *ms)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v <= 0 ||
	    v > ETRN_SECONDS_MAX)
		return false;
	*ms = (int64_t)ceil(v * 1000);
	return true;
}

/* Something sent on a command line: visible, no spaces, CR or LF. */
static bool etrn_word_ok(const char *s, size_t max)
{
	size_t len = strlen(s);
	if (len == 0 || len > max)
		return false;
	for (const char *p = s; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
			return false;
	return true;
}

/* SERVER: host, host:port, [v6]:port, [v6], or a bare IPv6 address. */
static int etrn_parse_server(const char *arg, struct etrn_options *opt, const char *port_option)
{
	const char *host = arg, *port = NULL;
	size_t host_len = strlen(arg);
	if (arg[0] == '[') {
		const char *close = strchr(arg, ']');
		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
			return etrn_usage_error(
				"'%s' is not a server ([address] or [address]:port)", arg);
		host = arg + 1;
		host_len = (size_t)(close - host);
		port = close[1] == ':' ? close + 2 : NULL;
	} else {
		const char *colon = strchr(arg, ':');
		if (colon != NULL && strchr(colon + 1, ':') == NULL) {
			host_len = (size_t)(colon - arg);
			port = colon + 1;
		}
	}
	if (host_len == 0 || host_len >= sizeof(opt->host))
		return etrn_usage_error("'%s' names no server", arg);
	memcpy(opt->host, host, host_len);
	opt->host[host_len] = '\0';
	if (port != NULL && !etrn_port_ok(port))
		return etrn_usage_error("'%s': the port must be a number from 1 to 65535", arg);
	if (port != NULL && port_option != NULL &&
	    strtol(port, NULL, 10) != strtol(port_option, NULL, 10))
		return etrn_usage_error("'%s': the port is also given by -p, differently", arg);
	snprintf(opt->port, sizeof(opt->port), "%s",
		 port          ? port
		 : port_option ? port_option
			       : ETRN_DEFAULT_PORT);
	return 0;
}

static int etrn_default_helo(struct etrn_options *opt)
{
	if (gethostname(opt->helo, sizeof(opt->helo)) != 0 || opt->helo[0] == '\0')
		snprintf(opt->helo, sizeof(opt->helo), "localhost");
	opt->helo[sizeof(opt->helo) - 1] = '\0';
	if (!etrn_word_ok(opt->helo, sizeof(opt->helo) - 1))
		return etrn_usage_error("this machine's host name '%s' cannot be used in EHLO: "
					"give one with --helo",
					opt->helo);
	return 0;
}

/* Parse the command line into opt and the names. 0, or an exit status. */
static int etrn_parse_args(int argc, char **argv, struct etrn_options *opt, int *first_name)
{
	enum { OPT_HELO = 256, OPT_INTERVAL, OPT_TIMEOUT, OPT_CONNECT, OPT_REPLY, OPT_VERSION };
	static const struct option options[] = {
		{"port", required_argument, NULL, 'p'},
		{"helo", required_argument, NULL, OPT_HELO},
		{"wait", no_argument, NULL, 'w'},
		{"interval", required_argument, NULL, OPT_INTERVAL},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"connect-timeout", required_argument, NULL, OPT_CONNECT},
		{"reply-timeout", required_argument, NULL, OPT_REPLY},
		{"verbose", no_argument, NULL, 'v'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	*opt = (struct etrn_options){.interval_ms = ETRN_INTERVAL_MS,
				     .run_timeout_ms = ETRN_RUN_TIMEOUT_MS,
				     .conn = {.connect_timeout_ms = ETRN_STEP_TIMEOUT_MS,
					      .reply_timeout_ms = ETRN_STEP_TIMEOUT_MS}};
	const char *port_option = NULL, *helo = NULL;
	int o;
	while ((o = getopt_long(argc, argv, "p:wvqh", options, NULL)) != -1) {
		int64_t *seconds = o == OPT_INTERVAL  ? &opt->interval_ms
				   : o == OPT_TIMEOUT ? &opt->run_timeout_ms
				   : o == OPT_CONNECT ? &opt->conn.connect_timeout_ms
				   : o == OPT_REPLY   ? &opt->conn.reply_timeout_ms
						      : NULL;
		if (seconds != NULL) {
			if (!etrn_seconds(optarg, seconds))
				return etrn_usage_error(
					"'%s' is not a number of seconds (more than "
					"0, e.g. 10 or 0.5)",
					optarg);
			continue;
		}
		switch (o) {
		case 'p':
			if (!etrn_port_ok(optarg))
				return etrn_usage_error("port '%s': give a number from 1 to 65535",
							optarg);
			port_option = optarg;
			break;
		case OPT_HELO:
			if (!etrn_word_ok(optarg, sizeof(opt->helo) - 1))
				return etrn_usage_error("'%s' cannot be used in EHLO (one word, "
							"at most 255 characters)",
							optarg);
			helo = optarg;
			break;
		case 'w':
			opt->wait = true;
			break;
		case 'v':
			opt->conn.verbose = true;
			break;
		case 'q':
			opt->quiet = true;
			break;
		case 'h':
			etrn_usage(stdout);
			exit(ETRN_EXIT_OK);
		case OPT_VERSION:
			printf("ferry-etrn %s\n", FERRY_VERSION);
			exit(ETRN_EXIT_OK);
		default: /* getopt said what was wrong */
			etrn_short_usage();
			return ETRN_EXIT_FAILED;
		}
	}
	if (opt->conn.verbose && opt->quiet)
		return etrn_usage_error("%s", "-v and -q do not go together");
	if (optind >= argc)
		return etrn_usage_error("%s", "no server given");
	if (optind + 1 >= argc)
		return etrn_usage_error("%s", "no name given (a domain, @domain or #queue)");
	int rc = etrn_parse_server(argv[optind], opt, port_option);
	if (rc != 0)
		return rc;
	for (int i = optind + 1; i < argc; i++) {
		const char *name = argv[i];
		/* A leading '-' is an option mistyped, not a name. */
		bool bare = (name[0] == '@' || name[0] == '#') && name[1] == '\0';
		if (bare || name[0] == '-' || !etrn_word_ok(name, ETRN_NAME_MAX + 1))
			return etrn_usage_error("'%s' is not a name to ask for (a domain, @domain "
						"or #queue, without spaces)",
						name);
	}
	if (helo != NULL)
		snprintf(opt->helo, sizeof(opt->helo), "%s", helo);
	else if ((rc = etrn_default_helo(opt)) != 0)
		return rc;
	opt->conn.host = opt->host;
	opt->conn.port = opt->port;
	opt->conn.helo = opt->helo;
	*first_name = optind + 1;
	return 0;
}

/* ---- main ---------------------------------------------------------------------- */

static bool etrn_any_pending(const struct etrn_name *names, size_t count)
{
	for (size_t i = 0; i < count; i++)
		if (names[i].pending)
			return true;
	return false;
}

/* --wait: poll the pending names until none is left or --timeout would
 * pass before the next poll. A poll that fails (no connection, 421, no
 * reply) is tried again at the next interval: the relay may be busy
 * delivering what we asked for. */
static void etrn_poll(const struct etrn_options *opt, struct etrn_name *names, size_t count,
		      char *last_error, size_t error_size)
{
	int64_t deadline = opt->conn.deadline;
	while (etrn_any_pending(names, count)) {
		int64_t next = etrn_conn_now_ms() + opt->interval_ms;
		if (next >= deadline)
			return;
		etrn_sleep_until(next);
		char error[1024];
		if (etrn_round(opt, names, count, true, error, sizeof(error)) == 0) {
			last_error[0] = '\0';
		} else {
			snprintf(last_error, error_size, "%s", error);
			etrn_conn_verbose(opt->conn.verbose, "the poll failed: %s; trying again",
					  error);
		}
	}
}

/* The first round broke off: every name it left unanswered failed, and
 * none is polled. Once ETRNs went out, say which names those are. */
static void etrn_report_broken_round(const struct etrn_options *opt, struct etrn_name *names,
				     size_t count, const char *error)
{
	fprintf(stderr, "ferry-etrn: %s port %s: %s\n", opt->host, opt->port, error);
	bool some = false;
	for (size_t i = 0; i < count; i++)
		some |= names[i].asked;
	for (size_t i = 0; i < count; i++) {
		if (!names[i].answered) {
			names[i].status = ETRN_EXIT_FAILED;
			if (some)
				fprintf(stderr, "ferry-etrn: %s: %s (see above)\n", names[i].name,
					names[i].asked ? "no answer" : "not asked");
		}
		names[i].pending = false;
	}
}

/* --wait gave up: the names still pending, with their last count. */
static void etrn_report_pending(const struct etrn_options *opt, int64_t start,
				struct etrn_name *names, size_t count, const char *last_error)
{
	double waited = (double)(etrn_conn_now_ms() - start) / 1000;
	for (size_t i = 0; i < count; i++) {
		if (!names[i].pending)
			continue;
		names[i].status = ETRN_EXIT_PENDING;
		char last[64] = "the server did not say how many";
		if (names[i].count != ETRN_COUNT_NOT_TOLD)
			snprintf(last, sizeof(last), "%ld messages at the last reply",
				 names[i].count);
		fprintf(stderr,
			"ferry-etrn: %s: mail still pending after %.1f s (%s); giving up, "
			"--timeout is %.1f s\n",
			names[i].name, waited, last, (double)opt->run_timeout_ms / 1000);
	}
	if (etrn_any_pending(names, count) && last_error[0] != '\0')
		fprintf(stderr, "ferry-etrn: the last poll failed: %s\n", last_error);
}

int main(int argc, char **argv)
{
	struct etrn_options opt;
	int first_name = 0;
	int status = etrn_parse_args(argc, argv, &opt, &first_name);
	if (status != 0)
		return status;
	/* Replies and complaints interleave in the order they happened. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	int64_t start = etrn_conn_now_ms();
	opt.conn.deadline = start + opt.run_timeout_ms;
	size_t count = (size_t)(argc - first_name);
	struct etrn_name *names = calloc(count, sizeof(*names));
	if (names == NULL) {
		fprintf(stderr, "ferry-etrn: out of memory\n");
		return ETRN_EXIT_FAILED;
	}
	for (size_t i = 0; i < count; i++)
		names[i] = (struct etrn_name){.name = argv[first_name + (int)i],
					      .count = ETRN_COUNT_NOT_TOLD};

	char error[1024];
	if (etrn_round(&opt, names, count, false, error, sizeof(error)) != 0)
		etrn_report_broken_round(&opt, names, count, error);
	if (opt.wait && etrn_any_pending(names, count)) {
		error[0] = '\0';
		etrn_poll(&opt, names, count, error, sizeof(error));
		etrn_report_pending(&opt, start, names, count, error);
	}

	for (size_t i = 0; i < count; i++)
		if (names[i].status > status)
			status = names[i].status;
	free(names);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "ferry-etrn: writing the output: %s\n", strerror(errno));
		return status > ETRN_EXIT_FAILED ? status : ETRN_EXIT_FAILED;
	}
	return status;
}
