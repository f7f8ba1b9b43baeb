/*
 * ferryctl — the operator's tool.
 *
 *   ferryctl [-c CONFIG | --socket PATH | --spool DIR] [--json] queue | list DOMAIN | show QUEUEID
 *   ferryctl [-c CONFIG | --socket PATH] [--json] flush [DOMAIN | @DOMAIN | #QUEUE]
 *   ferryctl [-c CONFIG | --socket PATH] [--json] hold | release  DOMAIN | QUEUEID
 *   ferryctl [-c CONFIG | --socket PATH] [--json] [-y] delete | bounce  DOMAIN | QUEUEID
 *   ferryctl [-c CONFIG | --socket PATH] [--json] stats | config | reload
 *
 * Online (the default) it asks a running ferryd over <spool>/ferryctl.sock
 * (protocol: net/admin.h, docs/operations.md; the client is
 * ferryctl_commands.h). Offline (--spool DIR) it reads the spool's
 * segment files itself (ferryctl_offline.h), so the views work on a
 * stopped ferryd's spool, on a copy, and beside a running ferryd.
 *
 * Both ways produce the same text body (the admin protocol's), and one
 * formatter turns it into the tables an operator reads or the JSON a
 * program reads (ferryctl_views.h), so the views cannot drift apart. The
 * moves act on a running ferryd's memory, so they are online only, as
 * are stats (ferryctl_stats.h), config and reload.
 *
 * Exit status: 0 ok, 1 an error from ferryd or the spool (or a delete or
 * bounce not confirmed), 2 usage (and a delete or bounce without -y whose
 * input is not a terminal).
 */
#include <ctype.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "net/admin.h"
#include "net/etrn.h"
#include "queue/queue.h"
#include "tools/ferryctl_commands.h"
#include "tools/ferryctl_format.h"
#include "tools/ferryctl_offline.h"
#include "tools/ferryctl_stats.h"
#include "tools/ferryctl_views.h"

#define CTL_QUOTED 600 /* an argument shown back, as the store quotes addresses */

enum ctl_command {
	CTL_QUEUE,
	CTL_LIST,
	CTL_SHOW,
	CTL_FLUSH,
	CTL_HOLD,
	CTL_RELEASE,
	CTL_DELETE,
	CTL_BOUNCE,
	CTL_STATS,
	CTL_CONFIG,
	CTL_RELOAD,
	CTL_NCOMMANDS
};

/* What each command takes. */
enum ctl_argument { CTL_ARG_NONE, CTL_ARG_DOMAIN, CTL_ARG_QUEUE_ID, CTL_ARG_FLUSH, CTL_ARG_TARGET };

static const struct {
	const char *name, *form;
	enum ctl_argument argument;
	bool offline; /* with --spool too */
} ctl_commands[CTL_NCOMMANDS] = {
	[CTL_QUEUE] = {"queue", "queue", CTL_ARG_NONE, true},
	[CTL_LIST] = {"list", "list DOMAIN", CTL_ARG_DOMAIN, true},
	[CTL_SHOW] = {"show", "show QUEUEID", CTL_ARG_QUEUE_ID, true},
	[CTL_FLUSH] = {"flush", "flush [DOMAIN|@DOMAIN|#QUEUE]", CTL_ARG_FLUSH, false},
	[CTL_HOLD] = {"hold", "hold DOMAIN|QUEUEID", CTL_ARG_TARGET, false},
	[CTL_RELEASE] = {"release", "release DOMAIN|QUEUEID", CTL_ARG_TARGET, false},
	[CTL_DELETE] = {"delete", "delete DOMAIN|QUEUEID", CTL_ARG_TARGET, false},
	[CTL_BOUNCE] = {"bounce", "bounce DOMAIN|QUEUEID", CTL_ARG_TARGET, false},
	[CTL_STATS] = {"stats", "stats", CTL_ARG_NONE, false},
	[CTL_CONFIG] = {"config", "config", CTL_ARG_NONE, false},
	[CTL_RELOAD] = {"reload", "reload", CTL_ARG_NONE, false},
};

static void ctl_usage(FILE *out)
{
	fprintf(out,
		"usage: ferryctl [-c CONFIG | --socket PATH | --spool DIR] [--json] [-y] COMMAND "
		"[ARG]\n"
		"commands:\n"
		"  queue           per destination: recipients queued, ready, deferred, held,\n"
		"                  in flight, and the age of the oldest (mailq)\n"
		"  list DOMAIN     the queued recipients of DOMAIN: queue id, state, attempts,\n"
		"                  next attempt, age, size, sender, recipient, last reply\n"
		"  show QUEUEID    a message's envelope, each recipient's state, and headers\n"
		"                  (postcat -q)\n"
		"  flush [DOMAIN]  make the held and deferred recipients of DOMAIN (without\n"
		"                  one: of every domain) ready for delivery now, forgetting\n"
		"                  their retry wait (postqueue -s DOMAIN / postqueue -f)\n"
		"  flush @DOMAIN   the same for DOMAIN and every domain below it (ETRN's form)\n"
		"  flush #QUEUE    the same for the domains whose [domain] section has\n"
		"                  etrn_queues = QUEUE\n"
		"  hold DOMAIN     deliver nothing to DOMAIN until it is released (or ferryd\n"
		"                  restarts); its mail is still accepted and queued\n"
		"  hold QUEUEID    deliver nothing of that message until it is released by\n"
		"                  its id (or ferryd restarts); flushes leave it (postsuper -h)\n"
		"  release DOMAIN  end a hold (the config's hold = yes too, until ferryd\n"
		"                  restarts) and deliver DOMAIN's mail now\n"
		"  release QUEUEID end a message's hold: deliver it now, unless its domain is\n"
		"                  held (postsuper -H)\n"
		"  delete DOMAIN|QUEUEID\n"
		"                  remove the domain's (or the message's) queued mail, without\n"
		"                  a bounce; asks first (postsuper -d)\n"
		"  bounce DOMAIN|QUEUEID\n"
		"                  fail it now: a bounce (DSN) goes to each sender (none to\n"
		"                  <>); asks first\n"
		"  stats           messages received and delivered (totals and rates), the\n"
		"                  queue by state, the oldest message, commit latency,\n"
		"                  connections (takes a second: two snapshots)\n"
		"  config          the configuration ferryd runs with\n"
		"  reload          read ferryd's configuration file again and run with it\n"
		"                  (as SIGHUP does); a bad file, or one that changes a key\n"
		"                  only a restart can (listen, workers, spool, ...), is\n"
		"                  refused with the reason, and the running one stays\n"
		"                  (postfix reload)\n"
		"options:\n"
		"  -c, --config FILE  ferryd's configuration: talk to the ferryd of its spool\n"
		"                     (default: the built-in defaults, spool ./var/spool)\n"
		"      --socket PATH  talk to ferryd over this socket instead\n"
		"      --spool DIR    offline: read the spool DIR's segment files directly,\n"
		"                     read-only (with or without a running ferryd); for\n"
		"                     queue, list and show only\n"
		"      --json         one JSON document on stdout instead of the table\n"
		"                     (fields: docs/operations.md)\n"
		"  -y, --yes          delete or bounce without asking (needed when the input\n"
		"                     is not a terminal)\n"
		"  -h, --help         this text\n"
		"      --version      print the version\n"
		"QUEUEID: 16 letters and digits; an argument of that shape is a queue id.\n"
		"A relative spool directory is taken from the current directory.\n"
		"Exit status: 0 ok; 1 error from ferryd or the spool, or a delete or bounce\n"
		"not confirmed; 2 usage, or a delete or bounce without -y and no terminal.\n");
}

static void ctl_short_usage(void)
{
	fprintf(stderr, "usage: ferryctl [-c CONFIG | --socket PATH | --spool DIR] [--json] "
			"queue | list DOMAIN | show QUEUEID\n"
			"       ferryctl [-c CONFIG | --socket PATH] [--json] "
			"flush [DOMAIN | @DOMAIN | #QUEUE] | stats | config | reload\n"
			"       ferryctl [-c CONFIG | --socket PATH] [--json] [-y] "
			"hold | release | delete | bounce  DOMAIN | QUEUEID\n"
			"       (--help: more)\n");
}

static int ctl_usage_error(const char *fmt, const char *what)
{
	fprintf(stderr, "ferryctl: ");
	fprintf(stderr, fmt, what);
	fputc('\n', stderr);
	ctl_short_usage();
	return CTL_USAGE;
}

static int64_t ctl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Check the command's argument as ferryd does, then normalise its case:
 * domains are queued lower-cased, queue ids are upper-case base32. */
static bool ctl_argument_ok(enum ctl_argument kind, char *arg)
{
	size_t len = strlen(arg);
	if (kind == CTL_ARG_FLUSH && (arg[0] == '@' || arg[0] == '#')) { /* ETRN's forms */
		struct etrn_argument etrn;
		if (etrn_parse(arg, len, &etrn) != 0)
			return false;
		memcpy(arg, etrn.shown, strlen(etrn.shown) + 1); /* never longer */
		return true;
	}
	bool id = kind == CTL_ARG_QUEUE_ID ||
		  (kind == CTL_ARG_TARGET && admin_target_is_queue_id(arg, len));
	bool ok = kind == CTL_ARG_DOMAIN ? admin_domain_ok(arg, len)
		  : id                   ? admin_queue_id_ok(arg, len)
					 : admin_destination_ok(arg, len);
	if (!ok)
		return false;
	for (char *p = arg; *p != '\0'; p++)
		*p = (char)(id ? toupper((unsigned char)*p) : tolower((unsigned char)*p));
	return true;
}

/* Say what is wrong with a command's argument. CTL_USAGE. */
static int ctl_bad_argument(enum ctl_argument kind, const char *arg)
{
	char shown[CTL_QUOTED];
	snprintf(shown, sizeof(shown), "%s", arg);
	for (char *p = shown; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
			*p = '?';
	if (kind == CTL_ARG_DOMAIN)
		return ctl_usage_error("'%s' is not a domain", shown);
	if (kind == CTL_ARG_QUEUE_ID)
		fprintf(stderr, "ferryctl: '%s' is not a queue id (%d letters and digits)\n", shown,
			QUEUE_ID_LEN);
	else if (shown[0] == '@' || shown[0] == '#')
		fprintf(stderr,
			"ferryctl: '%s' is not @DOMAIN (a domain and those below it) nor #QUEUE (a "
			"queue name: letters, digits, '-', '_', '.')\n",
			shown);
	else
		fprintf(stderr,
			"ferryctl: '%s' is not a domain name (letters, digits and hyphens in "
			"dot-separated labels) nor an address literal such as [192.0.2.1]%s\n",
			shown,
			kind == CTL_ARG_TARGET ? ", nor a queue id (16 letters and digits)" : "");
	return CTL_USAGE;
}

/* The admin socket of the ferryd of config_path's spool, or socket_path.
 * Only the file's [spool] directory is read: a file ferryd would refuse
 * still names its socket (reload it, and ferryd says what is wrong). */
static int ctl_socket(const char *config_path, const char *socket_path, char *where, size_t size)
{
	if (socket_path != NULL) {
		snprintf(where, size, "%s", socket_path);
		return CTL_OK;
	}
	char spool[PATH_MAX];
	int r = config_spool_dir(config_path, spool, sizeof(spool));
	if (r != 0) {
		fprintf(stderr, "ferryctl: %s: cannot read: %s\n", config_path, strerror(-r));
		return CTL_ERROR;
	}
	snprintf(where, size, "%s/%s", spool, ADMIN_SOCKET_NAME);
	return CTL_OK;
}

/* The answer's body printed by its command's view. */
static int ctl_print(const struct ctl_output *o, enum ctl_command command, const char *arg,
		     bool offline, char *body, char *end)
{
	switch (command) {
	case CTL_QUEUE:
		return ctl_print_queue(o, offline, body, end);
	case CTL_LIST:
		return ctl_print_list(o, offline, arg, body, end);
	case CTL_SHOW:
		return ctl_print_show(o, offline, body, end);
	case CTL_CONFIG:
		return ctl_print_config(o, body, end);
	case CTL_RELOAD:
		return ctl_print_reload(o, body, end);
	default:
		return ctl_print_move(o, ctl_commands[command].name, arg, body, end);
	}
}

/* Offline: the view made from the spool's files. */
static int ctl_offline(const struct ctl_output *o, enum ctl_command command, const char *arg,
		       const char *spool_dir)
{
	static const enum ferryctl_view views[] = {[CTL_QUEUE] = FERRYCTL_QUEUE,
						   [CTL_LIST] = FERRYCTL_LIST,
						   [CTL_SHOW] = FERRYCTL_SHOW};
	/* Recovery's own log lines: errors only (a torn tail is summed up
	 * instead; while ferryd writes, it is normal). */
	log_setup(LOG_LEVEL_ERROR, LOG_TO_STDERR);
	struct buf answer = {0};
	/* Segments the view had to leave out (corrupt, unreadable): the
	 * answer is printed, but ferryctl exits 1. */
	unsigned left_out = 0;
	char *body, *end;
	int status =
		ferryctl_offline_answer(spool_dir, views[command], arg, &answer, &left_out) == 0
			? ctl_answer_body(&answer, &body, &end)
			: CTL_ERROR;
	if (status == CTL_OK) {
		if (!o->json)
			fprintf(o->out,
				"# offline view of %s, read from its segment files (held and "
				"in-flight recipients show as ready)\n",
				spool_dir);
		status = ctl_print(o, command, arg, true, body, end);
	}
	buf_release(&answer);
	if (status == CTL_OK && left_out > 0) {
		fprintf(stderr, "ferryctl: %u segment%s left out of this view (see above)\n",
			left_out, left_out == 1 ? " was" : "s were");
		status = CTL_ERROR;
	}
	return status;
}

/* Online: ask the ferryd at `where`. */
static int ctl_online(const struct ctl_output *o, enum ctl_command command, const char *arg,
		      const char *where, bool confirmed)
{
	if (command == CTL_STATS)
		return ctl_stats(o, where);
	bool ends_mail = command == CTL_DELETE || command == CTL_BOUNCE;
	if (ends_mail && !confirmed &&
	    ctl_confirm(where, ctl_commands[command].name, arg,
			admin_target_is_queue_id(arg, strlen(arg))) != CTL_OK)
		return CTL_ERROR;
	char request[ADMIN_REQUEST_MAX];
	snprintf(request, sizeof(request), "%s%s%s\n", ctl_commands[command].name, arg ? " " : "",
		 arg ? arg : "");
	struct buf answer = {0};
	char *body, *end;
	int status = ctl_request(where, request, &answer, &body, &end);
	if (status == CTL_OK)
		status = ctl_print(o, command, arg, false, body, end);
	buf_release(&answer);
	return status;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'}, {"socket", required_argument, NULL, 'S'},
		{"spool", required_argument, NULL, 'P'},  {"json", no_argument, NULL, 'J'},
		{"yes", no_argument, NULL, 'y'},          {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
	};
	const char *config_path = NULL, *socket_path = NULL, *spool_dir = NULL;
	bool json = false, yes = false;
	int opt, sources = 0;
	while ((opt = getopt_long(argc, argv, "c:hy", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			sources++;
			break;
		case 'S':
			socket_path = optarg;
			sources++;
			break;
		case 'P':
			spool_dir = optarg;
			sources++;
			break;
		case 'J':
			json = true;
			break;
		case 'y':
			yes = true;
			break;
		case 'h':
			ctl_usage(stdout);
			return CTL_OK;
		case 'V':
			printf("ferryctl %s\n", FERRY_VERSION);
			return CTL_OK;
		default: /* getopt said what was wrong */
			ctl_short_usage();
			return CTL_USAGE;
		}
	}
	if (sources > 1)
		return ctl_usage_error("%s", "use one of -c, --socket and --spool");
	if (optind >= argc)
		return ctl_usage_error("%s", "no command given");
	const char *name = argv[optind];
	size_t found = 0;
	while (found < CTL_NCOMMANDS && strcmp(name, ctl_commands[found].name) != 0)
		found++;
	if (found == CTL_NCOMMANDS)
		return ctl_usage_error("unknown command '%s' (try: " ADMIN_COMMANDS_HINT ")", name);
	enum ctl_command command = (enum ctl_command)found;
	enum ctl_argument kind = ctl_commands[command].argument;
	int nargs = argc - optind - 1;
	char *arg = nargs > 0 ? argv[optind + 1] : NULL;
	int most = kind == CTL_ARG_NONE ? 0 : 1;
	int least = kind == CTL_ARG_NONE || kind == CTL_ARG_FLUSH ? 0 : 1;
	if (nargs < least || nargs > most)
		return ctl_usage_error(most == 0    ? "'%s' takes no argument"
				       : least == 0 ? "%s: give at most one argument"
						    : "%s: give exactly one argument",
				       ctl_commands[command].form);
	if (spool_dir != NULL && !ctl_commands[command].offline) {
		fprintf(stderr,
			"ferryctl: '%s' %s, and --spool only reads the spool: use -c CONFIG or "
			"--socket PATH\n",
			name,
			command == CTL_STATS || command == CTL_CONFIG || command == CTL_RELOAD
				? "asks a running ferryd"
				: "changes what a running ferryd does");
		return CTL_USAGE;
	}
	if (arg != NULL && !ctl_argument_ok(kind, arg))
		return ctl_bad_argument(kind, arg);
	/* Mail is lost for good only when someone said so: on a terminal,
	 * asked (ctl_confirm); elsewhere, -y. */
	if ((command == CTL_DELETE || command == CTL_BOUNCE) && !yes && !isatty(STDIN_FILENO)) {
		fprintf(stderr,
			"ferryctl: '%s' asks for confirmation, and its input is not a terminal: "
			"add -y to %s without asking (nothing was done)\n",
			name, name);
		return CTL_USAGE;
	}

	struct ctl_output o = {.out = stdout, .json = json, .now_ms = ctl_now_ms()};
	int status;
	if (spool_dir != NULL) {
		status = ctl_offline(&o, command, arg, spool_dir);
	} else {
		char where[PATH_MAX + 64];
		status = ctl_socket(config_path, socket_path, where, sizeof(where));
		if (status == CTL_OK)
			status = ctl_online(&o, command, arg, where, yes);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		perror("ferryctl: writing the output");
		return CTL_ERROR;
	}
	return status;
}
