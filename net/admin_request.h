/*
 * admin_request — one ferryctl request carried to the workers, private to
 * the admin socket's files (admin_commands.c answers views, stats and
 * config; admin_moves.c the moves).
 *
 * The client's thread makes a request with one part per worker and sends
 * each part to its worker by cross-worker message; the part's work runs
 * there, between two loop turns, into the part (a view's text, a move's
 * counts). The client's thread waits at most ADMIN_WORKERS_MS for every
 * part. The request is reference counted: one reference for the waiting
 * thread, one per part not answered yet, so a request given up on (a slow
 * worker) is freed by the last worker to answer, never under it, and a
 * worker that comes late skips the work.
 */
#ifndef FERRY_NET_ADMIN_REQUEST_H
#define FERRY_NET_ADMIN_REQUEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/worker.h"
#include "core/xmsg.h"
#include "net/admin.h"
#include "net/admin_commands.h"
#include "net/etrn.h"
#include "net/generation.h"
#include "net/outbound_operator.h"
#include "queue/queue.h"

enum admin_command {
	ADMIN_QUEUE,
	ADMIN_LIST,
	ADMIN_SHOW,
	ADMIN_FLUSH,
	ADMIN_HOLD,
	ADMIN_RELEASE,
	ADMIN_DELETE,
	ADMIN_BOUNCE,
	ADMIN_STATS,
	ADMIN_CONFIG,
	ADMIN_RELOAD,
	ADMIN_LOCATE, /* no request of its own: where a message's recipients are (moves by id) */
};

#define ADMIN_ALL_WORKERS UINT32_MAX

struct admin_request;

/* One worker's part: filled on that worker's thread. */
struct admin_part {
	struct xmsg link;
	struct admin_request *request;
	struct queue *queue;
	struct buf out;                    /* a view's text; locate: the domains */
	uint32_t index;                    /* the worker's number */
	int found;                         /* show, locate: the message is this worker's */
	struct queue_report_cursor cursor; /* list: where the last turn stopped */
	/* Moves: recipients moved, and -ESRCH (delivery not running there:
	 * set for every worker asked until it answers) or -ENOMEM. */
	struct outbound_operated moved;
	int error;
};

struct admin_request {
	struct worker_ask ask; /* the admin thread waits for the parts */
	enum admin_command command;
	const struct outbound_shared *delivery;
	struct etrn_plan plan;      /* flush @DOMAIN or #QUEUE: what it covers (ntargets > 0) */
	struct net_generation *gen; /* the plan points into its config (held); NULL: no plan */
	char arg[ADMIN_REQUEST_MAX + 1];
	size_t arg_len;
	bool by_id;         /* hold, release, delete, bounce of the message arg */
	struct buf domains; /* by_id: its recipients' domains, each ended by a NUL */
	uint32_t nparts;
	struct admin_part parts[];
};

/* What a request asks of the workers beside its command. */
struct admin_ask {
	uint32_t only; /* the one worker asked, or ADMIN_ALL_WORKERS */
	const char *arg;
	size_t arg_len;
	bool by_id;
	struct etrn_plan *plan;     /* NULL, or taken over by the request */
	struct net_generation *gen; /* with a plan: the one it was made with */
	const struct buf *domains;  /* NULL, or copied into the request */
};

/*
 * Ask the workers for their parts and wait at most ADMIN_WORKERS_MS.
 * Returns the request with every part answered (release it with
 * admin_request_release(req, false)), or NULL with *why set (in words for
 * the operator). A worker not asked, or not running, answers nothing
 * (error 0 when it was not asked, -ESRCH when it was).
 */
struct admin_request *admin_ask_workers(const struct admin_commands *c, enum admin_command command,
					const struct admin_ask *ask, const char **why);

/* Drop one reference; `answered`: a part's work is done with it. */
void admin_request_release(struct admin_request *req, bool answered);

/* The command's name, for the log and for errors. */
const char *admin_command_name(enum admin_command command);

/* ---- admin_moves.c ---------------------------------------------------------- */

/* flush, hold, release, delete, bounce: check what it needs, ask the
 * workers, and answer. */
void admin_answer_move(const struct admin_commands *c, enum admin_command command, const char *arg,
		       size_t arg_len, struct buf *answer);

/* A move's part, on the worker that owns part->queue. */
void admin_part_move(const struct admin_request *req, struct admin_part *part);

#endif
