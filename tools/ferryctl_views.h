/*
 * ferryctl_views — ferryctl's views of the queue: `queue`, `list DOMAIN`
 * and `show QUEUEID`, from the admin protocol's answer bodies (online,
 * from ferryd; offline, made from the spool by ferryctl_offline.h in the
 * same format), as aligned tables for people or as one JSON document
 * (--json; its fields are docs/operations.md's).
 *
 * Each takes the answer's body [body, end), NUL-terminated one past end,
 * and changes it in place. Returns CTL_OK, or CTL_ERROR when a line could
 * not be read (said on stderr; the rest is still shown).
 */
#ifndef FERRY_TOOLS_FERRYCTL_VIEWS_H
#define FERRY_TOOLS_FERRYCTL_VIEWS_H

#include <stdbool.h>

#include "tools/ferryctl_format.h"

/* One destination of the queue view. */
struct ctl_destination {
	const char *domain;
	unsigned long long count[5]; /* recipients, ready, deferred, held, inflight */
	long long oldest_ms;
};

/* The queue body's lines for the destinations, sorted by domain: *rows
 * (the caller frees it) points into body. CTL_OK, or CTL_ERROR when a line
 * could not be read (said; the others are kept) or memory ran out. */
int ctl_read_destinations(char *body, char *end, struct ctl_destination **rows, size_t *n);

int ctl_print_queue(const struct ctl_output *o, bool offline, char *body, char *end);
int ctl_print_list(const struct ctl_output *o, bool offline, const char *domain, char *body,
		   char *end);
int ctl_print_show(const struct ctl_output *o, bool offline, char *body, char *end);

#endif
