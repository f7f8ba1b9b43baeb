/*
 * ferryctl_commands — ferryctl talking to a running ferryd over its admin
 * socket (net/admin.h's protocol), and what it says of the commands that
 * change or describe a running ferryd: flush, hold, release, delete,
 * bounce, config (stats: ferryctl_stats.h). Tables for people, or one
 * JSON document with --json (fields in docs/operations.md).
 */
#ifndef FERRY_TOOLS_FERRYCTL_COMMANDS_H
#define FERRY_TOOLS_FERRYCTL_COMMANDS_H

#include <stdbool.h>

#include "tools/ferryctl_format.h"

struct buf;

#define CTL_TIMEOUT_S                                                                              \
	20 /* each send and receive; ferryd waits 5 s for its workers (10 s to reload) */

/*
 * The answer's body: after its "ok" line, NUL-terminated one past *end.
 * An "error: ..." answer is said on stderr (CTL_ERROR), as is anything
 * else that is not "ok".
 */
int ctl_answer_body(struct buf *answer, char **body, char **end);

/* ctl_ask, then ctl_answer_body. */
int ctl_request(const char *path, const char *request, struct buf *answer, char **body, char **end);

/* flush, hold, release, delete, bounce: their answer said in words or
 * JSON. command is its name, target its argument (NULL: none). */
int ctl_print_move(const struct ctl_output *o, const char *command, const char *target, char *body,
		   char *end);

/*
 * delete and bounce ask first, on the terminal: "delete 1234 recipients of
 * example.com? [y/N] " (a message: its sender and its recipients still
 * queued), counted by asking ferryd. CTL_OK to go on, CTL_ERROR when the
 * answer was not yes or ferryd could not be asked (said on stderr).
 * Nothing is asked when nothing is queued for the target.
 */
int ctl_confirm(const char *path, const char *command, const char *target, bool is_queue_id);

/* config: ferryd's configuration as it prints it, or as a JSON object of
 * sections, each an object of keys with their values (strings, as
 * printed). */
int ctl_print_config(const struct ctl_output *o, char *body, char *end);

/* reload's answer: "reloaded: generation N from FILE is running"; JSON
 * {"reloaded": true, "generation": N, "switched": bool, "message": ...}. */
int ctl_print_reload(const struct ctl_output *o, char *body, char *end);

#endif
