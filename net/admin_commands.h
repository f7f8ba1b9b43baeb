/*
 * admin_commands — what the admin socket's requests do (the protocol is
 * net/admin.h's): a request line is checked, then carried out by the
 * workers, each on its own thread, through cross-worker messages, and its
 * answer written. The socket, its threads and its clients are admin.c's.
 *
 * Views (queue, list, show) ask every worker for its part: the store's
 * report functions (queue.h, "operator views") run there, into a buffer of
 * the request. Moves (flush, hold, release, delete, bounce) run delivery's
 * calls (net/outbound.h, net/outbound_operator.h) on the worker owning the
 * domain's shard (queue/sched.h, sched_owner), or on every worker for a
 * flush of everything, of a domain and its subdomains (@DOMAIN) or of a
 * named queue (#QUEUE, as ETRN's, net/etrn_service.h: etrn_flush_here),
 * and for a move of one message by its queue id (each worker moves its
 * recipients in the domains it owns). The caller waits at most
 * ADMIN_WORKERS_MS for all of them; a request outlives a wait that timed
 * out (reference counted, net/admin_request.h), since a late worker still
 * writes into it. A move that timed out may still happen: the answer says
 * so. stats gathers every worker's counters (worker_gather_metrics, as the
 * metrics endpoint does) and answers their Prometheus text; config prints
 * the configuration ferryd runs with (config_print); reload reads the
 * file again (net/reload.h) and answers what runs now, or why the file
 * was refused.
 */
#ifndef FERRY_NET_ADMIN_COMMANDS_H
#define FERRY_NET_ADMIN_COMMANDS_H

#include "core/buf.h"

struct net_reload;
struct queue_store;
struct outbound_shared;

#define ADMIN_WORKERS_MS 5000 /* for every worker's part */

/* What the commands reach, fixed while the admin socket runs. */
struct admin_commands {
	/* The running generation (config shows its config, flush @DOMAIN
	 * and #QUEUE plan with its ETRN policy) and reload; NULL: neither. */
	struct net_reload *reload;
	struct queue_store *store;
	const struct outbound_shared *delivery; /* NULL: no delivery to move */
	int segments_fd;                        /* <spool>/segments, for show */
};

/*
 * Answer one request line (printable ASCII, no line end; changed in place)
 * into answer: "ok" LF and the body, or "error: <why>" LF. Blocks the
 * calling thread (never a worker's) while the workers answer. Returns the
 * command's name for the log, or "invalid".
 */
const char *admin_commands_answer(const struct admin_commands *c, char *line, struct buf *answer);

#endif
