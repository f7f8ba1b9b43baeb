/*
 * ferryctl_commands — the admin socket's client, and the answers of the
 * commands that change or describe a running ferryd (see
 * ferryctl_commands.h).
 */
#include "tools/ferryctl_commands.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/buf.h"
#include "net/admin.h"
#include "tools/ferryctl_views.h"

/* ---- asking ferryd ---------------------------------------------------------------- */

/* Connect to the socket at path; -1 with the reason printed. */
static int ctl_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int dir_fd = -1;
	if (strlen(path) < sizeof(sa.sun_path)) {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	} else {
		/* Too long for sun_path: reach it through its directory. */
		char dir[PATH_MAX], base[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", path);
		snprintf(base, sizeof(base), "%s", path);
		dir_fd = open(dirname(dir), O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dir_fd >= 0)
			snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dir_fd,
				 basename(base));
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "ferryctl: socket: %s\n", strerror(errno));
		if (dir_fd >= 0)
			close(dir_fd);
		return -1;
	}
	struct timeval tv = {.tv_sec = CTL_TIMEOUT_S};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int r = sa.sun_path[0] != '\0'
			? connect(fd, (struct sockaddr *)&sa,
				  (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
					      strlen(sa.sun_path) + 1))
			: -1;
	int e = sa.sun_path[0] != '\0' ? errno : ENOENT;
	if (dir_fd >= 0)
		close(dir_fd);
	if (r == 0)
		return fd;
	close(fd);
	const char *hint = "";
	if (e == ENOENT || e == ECONNREFUSED)
		hint = " (is ferryd running? use --spool DIR to read the spool offline)";
	else if (e == EACCES || e == EPERM)
		hint = " (the socket is mode 0660: run as ferryd's user or a member of its group)";
	else if (e == EAGAIN || e == EINPROGRESS)
		hint = " (ferryd is busy; try again)";
	fprintf(stderr, "ferryctl: cannot connect to %s: %s%s\n", path, strerror(e), hint);
	return -1;
}

/* Send the request line (with its LF) to the socket at path and read the
 * whole answer into *answer. CTL_OK, or CTL_ERROR (said on stderr). */
static int ctl_ask(const char *path, const char *request, struct buf *answer)
{
	int fd = ctl_connect(path);
	if (fd < 0)
		return CTL_ERROR;
	size_t len = strlen(request), done = 0;
	while (done < len) {
		ssize_t k = send(fd, request + done, len - done, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			fprintf(stderr, "ferryctl: sending to %s: %s\n", path,
				k < 0 ? strerror(errno) : "nothing sent");
			close(fd);
			return CTL_ERROR;
		}
		done += (size_t)k;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		char *room = buf_extend(answer, 65536);
		if (room == NULL) {
			fprintf(stderr, "ferryctl: out of memory\n");
			close(fd);
			return CTL_ERROR;
		}
		ssize_t k = recv(fd, room, 65536, 0);
		answer->end -= 65536 - (k > 0 ? (size_t)k : 0);
		if (k > 0)
			continue;
		if (k == 0)
			break;
		if (errno == EINTR)
			continue;
		fprintf(stderr, "ferryctl: reading from %s: %s\n", path,
			errno == EAGAIN || errno == EWOULDBLOCK ? "no answer in time"
								: strerror(errno));
		close(fd);
		return CTL_ERROR;
	}
	close(fd);
	return CTL_OK;
}

int ctl_answer_body(struct buf *answer, char **body, char **end)
{
	/* One NUL past the end lets the last line be a string. */
	if (buf_append(answer, "", 1) != 0)
		return ctl_out_of_memory(), CTL_ERROR;
	char *text = answer->data + answer->start;
	*end = text + buf_len(answer) - 1;
	*body = text;
	char *first = ctl_next_line(body, *end);
	if (first == NULL) {
		fprintf(stderr, "ferryctl: ferryd closed the connection without an answer\n");
		return CTL_ERROR;
	}
	if (strncmp(first, "error: ", 7) == 0) {
		fprintf(stderr, "ferryctl: ");
		ctl_put_safe(first + 7, strlen(first + 7), stderr);
		fputc('\n', stderr);
		return CTL_ERROR;
	}
	if (strcmp(first, "ok") != 0) {
		fprintf(stderr, "ferryctl: unexpected answer: ");
		ctl_put_safe(first, strlen(first), stderr);
		fputc('\n', stderr);
		return CTL_ERROR;
	}
	return CTL_OK;
}

int ctl_request(const char *path, const char *request, struct buf *answer, char **body, char **end)
{
	int status = ctl_ask(path, request, answer);
	return status == CTL_OK ? ctl_answer_body(answer, body, end) : status;
}

/* ---- the moves ------------------------------------------------------------------------- */

/* What the target of a move is, for the JSON's "by". */
static const char *ctl_target_kind(const char *target)
{
	if (target == NULL)
		return "all";
	if (target[0] == '@')
		return "subdomains";
	if (target[0] == '#')
		return "queue";
	return admin_target_is_queue_id(target, strlen(target)) ? "queue_id" : "domain";
}

static void ctl_json_move(const struct ctl_output *o, const char *command, const char *target,
			  unsigned long long n, int nfields, unsigned long long second)
{
	struct ctl_json j;
	ctl_json_start(&j, o->out);
	ctl_json_open(&j, NULL, '{');
	ctl_json_string(&j, "command", command);
	ctl_json_string(&j, "target", target);
	ctl_json_string(&j, "by", ctl_target_kind(target));
	ctl_json_uint(&j, "recipients", n);
	if (nfields == 3)
		ctl_json_uint(&j, strcmp(command, "release") == 0 ? "still_held" : "inflight",
			      second);
	ctl_json_close(&j, '}');
	ctl_json_end(&j);
}

/* "3 recipients", "1 recipient". */
static const char *ctl_recipients(char *out, size_t size, unsigned long long n)
{
	snprintf(out, size, "%llu recipient%s", n, n == 1 ? "" : "s");
	return out;
}

static void ctl_words_move(FILE *out, const char *command, const char *target, unsigned long long n,
			   int nfields, unsigned long long second)
{
	char what[64], more[64];
	ctl_recipients(what, sizeof(what), n);
	ctl_recipients(more, sizeof(more), second);
	const char *are = n == 1 ? "is" : "are";
	bool by_id = target != NULL && admin_target_is_queue_id(target, strlen(target));
	char of[300] = "";
	if (target != NULL)
		snprintf(of, sizeof(of), by_id ? " of message %s" : " of %s", target);
	if (strcmp(command, "flush") == 0) {
		fprintf(out, "flush: %s%s %s ready for delivery now\n", what, of, are);
	} else if (strcmp(command, "hold") == 0 && !by_id) {
		fprintf(out,
			"hold: %s is held until released (or ferryd restarts); %llu queued "
			"recipient%s held\n",
			target, n, n == 1 ? "" : "s");
	} else if (strcmp(command, "hold") == 0) {
		fprintf(out, "hold: %s%s held until released (or ferryd restarts)", what, of);
		if (nfields == 3 && second > 0)
			fprintf(out, "; %s in flight, held if that attempt is deferred", more);
		fputc('\n', out);
	} else if (strcmp(command, "release") == 0 && !by_id) {
		fprintf(out, "release: %s is released; %s %s ready for delivery now\n", target,
			what, are);
	} else if (strcmp(command, "release") == 0) {
		fprintf(out, "release: %s%s %s ready for delivery now", what, of, are);
		if (nfields == 3 && second > 0)
			fprintf(out, "; %s still held: %s domain is held (ferryctl release DOMAIN)",
				more, second == 1 ? "its" : "their");
		fputc('\n', out);
	} else {
		bool delete = strcmp(command, "delete") == 0;
		fprintf(out, "%s: %s%s %s%s", command, what, of, delete ? "deleted" : "bounced",
			delete ? "" : " (a DSN goes to the sender, none to <>)");
		if (nfields == 3 && second > 0)
			fprintf(out, "; %s in flight: %s when that attempt ends, unless delivered",
				more, delete ? "deleted" : "bounced");
		fputc('\n', out);
	}
}

int ctl_print_move(const struct ctl_output *o, const char *command, const char *target, char *body,
		   char *end)
{
	char *cursor = body;
	char *line = ctl_next_line(&cursor, end);
	char *f[3];
	unsigned long long n = 0, second = 0;
	const char *want = admin_move_done(command);
	int nfields = line != NULL ? ctl_split(line, f, 3) : 0;
	if (want == NULL || nfields < 2 || strcmp(f[0], want) != 0 || !ctl_number(f[1], &n) ||
	    (nfields == 3 && !ctl_number(f[2], &second))) {
		ctl_bad_line(line != NULL ? line : "");
		return CTL_ERROR;
	}
	if (o->json)
		ctl_json_move(o, command, target, n, nfields, second);
	else
		ctl_words_move(o->out, command, target, n, nfields, second);
	return CTL_OK;
}

/* ---- asking before delete and bounce ------------------------------------------------ */

/* How many recipients the target has queued, and (a message) its sender,
 * from ferryd's queue or show view. CTL_OK or CTL_ERROR (said). */
static int ctl_count_queued(const char *path, const char *target, bool is_queue_id,
			    unsigned long long *n, char *sender, size_t sender_size)
{
	char request[ADMIN_REQUEST_MAX];
	snprintf(request, sizeof(request), is_queue_id ? "show %s\n" : "queue\n", target);
	struct buf answer = {0};
	char *body, *end;
	int status = ctl_request(path, request, &answer, &body, &end);
	*n = 0;
	if (status == CTL_OK && !is_queue_id) {
		struct ctl_destination *rows;
		size_t count;
		status = ctl_read_destinations(body, end, &rows, &count);
		for (size_t i = 0; i < count; i++)
			if (strcmp(rows[i].domain, target) == 0)
				*n = rows[i].count[0];
		free(rows);
	} else if (status == CTL_OK) {
		char *line;
		while ((line = ctl_next_line(&body, end)) != NULL && *line != '\0') {
			char *f[4];
			int k = ctl_split(line, f, 4);
			if (k >= 2 && strcmp(f[0], "sender") == 0)
				snprintf(sender, sender_size, "%s", ctl_unquote(f[1]));
			/* "rcpt ADDRESS STATE ...": queued or deferred, it has not ended. */
			if (k == 4 && strcmp(f[0], "rcpt") == 0 &&
			    (strcmp(f[2], "queued") == 0 || strcmp(f[2], "deferred") == 0))
				(*n)++;
		}
	}
	buf_release(&answer);
	return status;
}

int ctl_confirm(const char *path, const char *command, const char *target, bool is_queue_id)
{
	unsigned long long n;
	char sender[600] = "?";
	if (ctl_count_queued(path, target, is_queue_id, &n, sender, sizeof(sender)) != CTL_OK)
		return CTL_ERROR;
	if (n == 0)
		return CTL_OK; /* nothing to lose: ferryd says what it found */
	if (is_queue_id)
		fprintf(stderr, "%s message %s from %s (%llu recipient%s queued)? [y/N] ", command,
			target, sender, n, n == 1 ? "" : "s");
	else
		fprintf(stderr, "%s %llu recipient%s of %s? [y/N] ", command, n, n == 1 ? "" : "s",
			target);
	fflush(stderr);
	char line[64];
	if (fgets(line, sizeof(line), stdin) == NULL)
		line[0] = '\0';
	char *p = line;
	while (isspace((unsigned char)*p))
		p++;
	size_t len = strcspn(p, " \t\r\n");
	if ((len == 1 && tolower((unsigned char)p[0]) == 'y') ||
	    (len == 3 && strncasecmp(p, "yes", 3) == 0))
		return CTL_OK;
	fprintf(stderr, "ferryctl: nothing was %s\n",
		strcmp(command, "delete") == 0 ? "deleted" : "bounced");
	return CTL_ERROR;
}

/* ---- config ----------------------------------------------------------------------------- */

static void ctl_json_config(const struct ctl_output *o, char *body, char *end)
{
	struct ctl_json j;
	ctl_json_start(&j, o->out);
	ctl_json_open(&j, NULL, '{');
	bool in_section = false;
	char *line;
	while ((line = ctl_next_line(&body, end)) != NULL) {
		size_t len = strlen(line);
		if (len == 0 || line[0] == '#')
			continue;
		if (line[0] == '[' && line[len - 1] == ']') {
			line[len - 1] = '\0';
			if (in_section)
				ctl_json_close(&j, '}');
			ctl_json_open(&j, line + 1, '{');
			in_section = true;
			continue;
		}
		char *eq = strstr(line, " = ");
		if (eq == NULL || !in_section) {
			ctl_bad_line(line);
			continue;
		}
		*eq = '\0';
		ctl_json_string(&j, line, eq + 3);
	}
	if (in_section)
		ctl_json_close(&j, '}');
	ctl_json_close(&j, '}');
	ctl_json_end(&j);
}

int ctl_print_reload(const struct ctl_output *o, char *body, char *end)
{
	char *line = ctl_next_line(&body, end);
	unsigned long long generation = 0;
	if (line == NULL || sscanf(line, "generation %llu", &generation) != 1) {
		ctl_bad_line(line != NULL ? line : "");
		return CTL_ERROR;
	}
	if (o->json) {
		struct ctl_json j;
		ctl_json_start(&j, o->out);
		ctl_json_open(&j, NULL, '{');
		ctl_json_bool(&j, "reloaded", true);
		ctl_json_uint(&j, "generation", generation);
		ctl_json_bool(&j, "switched", strstr(line, " is running") != NULL);
		ctl_json_string(&j, "message", line);
		ctl_json_close(&j, '}');
		ctl_json_end(&j);
		return CTL_OK;
	}
	fputs("reloaded: ", o->out);
	ctl_put_safe(line, strlen(line), o->out);
	fputc('\n', o->out);
	return CTL_OK;
}

int ctl_print_config(const struct ctl_output *o, char *body, char *end)
{
	if (o->json) {
		ctl_json_config(o, body, end);
		return CTL_OK;
	}
	char *line;
	while ((line = ctl_next_line(&body, end)) != NULL) {
		ctl_put_safe(line, strlen(line), o->out);
		fputc('\n', o->out);
	}
	return CTL_OK;
}
