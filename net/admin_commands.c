/*
 * admin_commands — the admin socket's requests carried out (see
 * admin_commands.h): checked here, views, stats and config answered here,
 * moves by admin_moves.c, each worker's part run by admin_request.c.
 */
#include "net/admin_commands.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"
#include "core/config.h"
#include "core/worker.h"
#include "net/admin.h"
#include "net/admin_request.h"
#include "net/etrn.h"
#include "net/generation.h"
#include "net/metrics_http.h"
#include "net/reload.h"
#include "queue/queue.h"
#include "queue/spool_view.h"

/* What a command's argument must be. */
enum admin_argument {
	ADMIN_ARG_NONE,
	ADMIN_ARG_DOMAIN,          /* list: any queued destination's spelling */
	ADMIN_ARG_MAY_DESTINATION, /* flush: a domain name, or none for everything */
	ADMIN_ARG_TARGET,          /* hold, release, delete, bounce: a domain name or a queue id */
	ADMIN_ARG_QUEUE_ID,
};

struct admin_command_spec {
	const char *name;
	enum admin_argument argument;
	const char *usage;
};

/* By enum admin_command: the requests a client may send (ADMIN_LOCATE is
 * the moves' own). */
static const struct admin_command_spec admin_commands[] = {
	[ADMIN_QUEUE] = {"queue", ADMIN_ARG_NONE, "queue"},
	[ADMIN_LIST] = {"list", ADMIN_ARG_DOMAIN, "list DOMAIN"},
	[ADMIN_SHOW] = {"show", ADMIN_ARG_QUEUE_ID, "show QUEUEID"},
	[ADMIN_FLUSH] = {"flush", ADMIN_ARG_MAY_DESTINATION, "flush [DOMAIN|@DOMAIN|#QUEUE]"},
	[ADMIN_HOLD] = {"hold", ADMIN_ARG_TARGET, "hold DOMAIN|QUEUEID"},
	[ADMIN_RELEASE] = {"release", ADMIN_ARG_TARGET, "release DOMAIN|QUEUEID"},
	[ADMIN_DELETE] = {"delete", ADMIN_ARG_TARGET, "delete DOMAIN|QUEUEID"},
	[ADMIN_BOUNCE] = {"bounce", ADMIN_ARG_TARGET, "bounce DOMAIN|QUEUEID"},
	[ADMIN_STATS] = {"stats", ADMIN_ARG_NONE, "stats"},
	[ADMIN_CONFIG] = {"config", ADMIN_ARG_NONE, "config"},
	[ADMIN_RELOAD] = {"reload", ADMIN_ARG_NONE, "reload"},
};

#define ADMIN_NCOMMANDS (sizeof(admin_commands) / sizeof(admin_commands[0]))

const char *admin_command_name(enum admin_command command)
{
	return command < ADMIN_NCOMMANDS ? admin_commands[command].name : "locate";
}

/* ---- show: the header section from the segment files ------------------------ */

/*
 * Append the message's header section to out, reading the extents named by
 * the envelope's "body SEGMENT OFFSET LEN" lines, as many as
 * ADMIN_HEADERS_MAX needs. Returns 0, SPOOL_VIEW_MOVED (a segment named is
 * gone: compaction moved the message since the worker answered), or -errno,
 * with why set.
 */
static int admin_read_headers(const struct admin_commands *c, const char *envelope,
			      size_t envelope_len, struct buf *out, char *why, size_t why_size)
{
	struct queue_extent *extents = NULL;
	size_t n = 0, cap = 0;
	uint64_t covered = 0;
	uint32_t writer = 0;
	int r = 0;
	const char *p = envelope, *stop = envelope + envelope_len;
	while (p < stop && covered < ADMIN_HEADERS_MAX) {
		const char *nl = memchr(p, '\n', (size_t)(stop - p));
		const char *line = p;
		size_t line_len = nl != NULL ? (size_t)(nl - p) : (size_t)(stop - p);
		p = nl != NULL ? nl + 1 : stop;
		char text[128];
		if (line_len < 5 || memcmp(line, "body ", 5) != 0 || line_len >= sizeof(text))
			continue;
		memcpy(text, line, line_len);
		text[line_len] = '\0';
		char name[SPOOL_VIEW_SEGMENT_NAME_MAX + 1];
		unsigned long long offset, len;
		uint32_t line_writer;
		uint64_t sequence;
		/* One message's body lies in one writer's segments. */
		if (sscanf(text, "body %32s %llu %llu", name, &offset, &len) != 3 ||
		    !spool_view_parse_segment_name(name, &line_writer, &sequence) ||
		    len > UINT32_MAX || (n > 0 && line_writer != writer)) {
			snprintf(why, why_size, "bad body line from the store: %s", text);
			r = -EINVAL;
			break;
		}
		if (array_reserve(extents, cap, n + 1) != 0) {
			snprintf(why, why_size, "out of memory");
			r = -ENOMEM;
			break;
		}
		extents[n++] = (struct queue_extent){sequence, offset, (uint32_t)len};
		writer = line_writer;
		covered += len;
	}
	if (r == 0)
		r = spool_view_read_headers(c->segments_fd, writer, extents, n, ADMIN_HEADERS_MAX,
					    out, why, why_size);
	free(extents);
	return r;
}

/* ---- requests and answers ------------------------------------------------------ */

/* Check the argument of `command` and normalise its case: domains are
 * queued lower-cased, queue ids are upper-case base32. false with the
 * error answered. */
static bool admin_check_argument(enum admin_command command, char *arg, size_t len,
				 struct buf *answer)
{
	const struct admin_command_spec *spec = &admin_commands[command];
	bool ok;
	switch (spec->argument) {
	case ADMIN_ARG_NONE:
		if (len > 0)
			buf_printf(answer, "error: '%s' takes no argument\n", spec->name);
		return len == 0;
	case ADMIN_ARG_DOMAIN:
		ok = admin_domain_ok(arg, len);
		break;
	case ADMIN_ARG_MAY_DESTINATION:
		if (len == 0)
			return true;
		if (arg[0] == '@' || arg[0] == '#') { /* ETRN's forms */
			struct etrn_argument parsed;
			if (etrn_parse(arg, len, &parsed) != 0) {
				buf_printf(
					answer,
					"error: '%s' is not @DOMAIN (a domain and its "
					"subdomains) nor #QUEUE (a queue named in etrn_queues)\n",
					arg);
				return false;
			}
			return true;
		}
		/* fall through */
		ok = admin_destination_ok(arg, len);
		break;
	case ADMIN_ARG_TARGET:
		ok = admin_target_is_queue_id(arg, len) || admin_destination_ok(arg, len);
		break;
	case ADMIN_ARG_QUEUE_ID:
		ok = admin_queue_id_ok(arg, len);
		break;
	default:
		ok = false;
	}
	if (!ok) {
		if (len == 0)
			buf_printf(answer, "error: usage: %s\n", spec->usage);
		else if (spec->argument == ADMIN_ARG_QUEUE_ID)
			buf_printf(answer,
				   "error: '%s' is not a queue id (%d letters and digits)\n", arg,
				   QUEUE_ID_LEN);
		else if (spec->argument == ADMIN_ARG_DOMAIN)
			buf_printf(answer, "error: '%s' is not a domain\n", arg);
		else if (spec->argument == ADMIN_ARG_TARGET)
			buf_printf(answer,
				   "error: '%s' is not a domain name (letters, digits and hyphens "
				   "in dot-separated labels), an address literal such as "
				   "[192.0.2.1], nor a queue id (%d letters and digits)\n",
				   arg, QUEUE_ID_LEN);
		else
			buf_printf(answer,
				   "error: '%s' is not a domain name (letters, digits and hyphens "
				   "in dot-separated labels) nor an address literal such as "
				   "[192.0.2.1]\n",
				   arg);
		return false;
	}
	bool upper = spec->argument == ADMIN_ARG_QUEUE_ID ||
		     (spec->argument == ADMIN_ARG_TARGET && admin_target_is_queue_id(arg, len));
	for (size_t i = 0; i < len; i++)
		arg[i] = (char)(upper ? toupper((unsigned char)arg[i])
				      : tolower((unsigned char)arg[i]));
	return true;
}

/* queue, list, show: every worker's part of the view. */
static void admin_answer_view(const struct admin_commands *c, enum admin_command command,
			      const char *arg, size_t arg_len, struct buf *answer)
{
	const char *why;
	struct admin_request *req;
	struct admin_part *shown = NULL;
	struct buf headers = {0};
	char why_headers[256];
	int headers_status = 0;
	/* A show's body extents are read here, after the worker answered; a
	 * compaction may have moved the message in between (its old segment
	 * is gone): then ask once more. */
	for (int attempt = 0;; attempt++) {
		struct admin_ask ask = {.only = ADMIN_ALL_WORKERS, .arg = arg, .arg_len = arg_len};
		req = admin_ask_workers(c, command, &ask, &why);
		if (req == NULL || command != ADMIN_SHOW)
			break;
		shown = NULL;
		for (uint32_t i = 0; i < req->nparts && shown == NULL; i++)
			if (req->parts[i].found)
				shown = &req->parts[i];
		if (shown == NULL)
			break;
		buf_clear(&headers);
		headers_status = admin_read_headers(c, buf_head(&shown->out), buf_len(&shown->out),
						    &headers, why_headers, sizeof(why_headers));
		if (headers_status != SPOOL_VIEW_MOVED || attempt > 0)
			break;
		admin_request_release(req, false);
	}
	if (req == NULL) {
		buf_printf(answer, "error: %s\n", why);
		return;
	}
	if (command == ADMIN_SHOW && shown == NULL) {
		buf_printf(answer, "error: no message %s in the queue\n", arg);
	} else if (command == ADMIN_SHOW) {
		buf_printf(answer, "ok\n");
		buf_append(answer, buf_head(&shown->out), buf_len(&shown->out));
		if (headers_status != 0)
			buf_printf(answer, "headers-error %s\n", why_headers);
		buf_printf(answer, "\n");
		buf_append(answer, buf_head(&headers), buf_len(&headers));
	} else {
		buf_printf(answer, "ok\n");
		for (uint32_t i = 0; i < req->nparts; i++)
			buf_append(answer, buf_head(&req->parts[i].out),
				   buf_len(&req->parts[i].out));
	}
	buf_release(&headers);
	admin_request_release(req, false);
}

/* stats: what the metrics endpoint serves (metrics_http_collect). */
static void admin_answer_stats(const struct admin_commands *c, struct buf *answer)
{
	uint32_t n = queue_store_workers(c->store);
	struct worker **workers = calloc(n, sizeof(*workers));
	for (uint32_t i = 0; workers != NULL && i < n; i++) {
		struct queue *q = queue_store_queue(c->store, i);
		workers[i] = q != NULL ? queue_worker(q) : NULL;
		if (workers[i] == NULL) {
			buf_printf(answer,
				   "error: worker %u is not running (is ferryd stopping?)\n", i);
			free(workers);
			return;
		}
	}
	struct buf text = {0};
	int r = workers != NULL ? metrics_http_collect(workers, n, &text) : -ENOMEM;
	if (r == -ETIMEDOUT)
		buf_printf(answer, "error: ferryd did not answer in time\n");
	else if (r != 0)
		buf_printf(answer, "error: ferryd is out of memory\n");
	else if (buf_printf(answer, "ok\n") >= 0)
		buf_append(answer, buf_head(&text), buf_len(&text));
	buf_release(&text);
	free(workers);
}

/* config: the effective configuration, as ferryd --check-config prints it. */
static void admin_answer_config(const struct admin_commands *c, struct buf *answer)
{
	char *text = NULL;
	size_t len = 0;
	struct net_generation *gen = c->reload != NULL ? net_reload_current(c->reload) : NULL;
	FILE *f = gen != NULL ? open_memstream(&text, &len) : NULL;
	if (f == NULL) {
		buf_printf(answer, "error: %s\n",
			   gen != NULL ? "ferryd is out of memory"
				       : "this ferryd keeps no configuration to show");
		net_generation_drop(gen);
		return;
	}
	config_print(&gen->cfg, f);
	if (fclose(f) != 0 || text == NULL) {
		buf_printf(answer, "error: ferryd is out of memory\n");
	} else {
		buf_printf(answer, "ok\n");
		buf_append(answer, text, len);
	}
	free(text);
	net_generation_drop(gen);
}

/* reload: the file again (net/reload.h); "ok" and what runs now, or why
 * it was refused. */
static void admin_answer_reload(const struct admin_commands *c, struct buf *answer)
{
	char msg[1600];
	if (c->reload == NULL) {
		buf_printf(answer, "error: this ferryd cannot reload its configuration\n");
		return;
	}
	int r = net_reload_run(c->reload, "ferryctl", msg, sizeof(msg));
	if (r == 0 || r == -ETIMEDOUT)
		buf_printf(answer, "ok\n%s\n", msg);
	else
		buf_printf(answer, "error: %s\n", msg);
}

const char *admin_commands_answer(const struct admin_commands *c, char *line, struct buf *answer)
{
	char *arg = strchr(line, ' ');
	size_t arg_len = 0;
	if (arg != NULL) {
		*arg++ = '\0';
		while (*arg == ' ')
			arg++;
		arg_len = strlen(arg);
		while (arg_len > 0 && arg[arg_len - 1] == ' ')
			arg[--arg_len] = '\0';
	}
	size_t found = 0;
	while (found < ADMIN_NCOMMANDS && strcmp(line, admin_commands[found].name) != 0)
		found++;
	if (found == ADMIN_NCOMMANDS) {
		buf_printf(answer, "error: unknown command '%s' (try: %s)\n", line,
			   ADMIN_COMMANDS_HINT);
		return "invalid";
	}
	enum admin_command command = (enum admin_command)found;
	if (!admin_check_argument(command, arg, arg_len, answer))
		return "invalid";
	if (arg == NULL)
		arg = "";
	switch (command) {
	case ADMIN_QUEUE:
	case ADMIN_LIST:
	case ADMIN_SHOW:
		admin_answer_view(c, command, arg, arg_len, answer);
		break;
	case ADMIN_STATS:
		admin_answer_stats(c, answer);
		break;
	case ADMIN_CONFIG:
		admin_answer_config(c, answer);
		break;
	case ADMIN_RELOAD:
		admin_answer_reload(c, answer);
		break;
	default:
		admin_answer_move(c, command, arg, arg_len, answer);
		break;
	}
	return admin_commands[command].name;
}
