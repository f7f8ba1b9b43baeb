/*
 * admin — the Unix socket that ferryctl talks to: <spool>/ferryctl.sock,
 * file mode 0660, so the file's owner and group are who may ask.
 *
 * One thread of its own accepts, and each client is served on a thread of
 * its own (at most ADMIN_MAX_CLIENTS at once), so a client that says
 * nothing, or does not read its answer, delays no one else: each has its
 * own deadlines, and when every place is taken the client that has waited
 * longest on its own side is closed to make room. A client's thread reads
 * one request line, answers, and closes. None touches a worker's state:
 * what a request does runs on the workers' own threads, by cross-worker
 * message (net/admin_commands.h). A show's header section is read by the
 * client's thread itself, from the body extents the worker named, with the
 * spool view's blocking reads (queue/spool_view.h), never on a worker.
 *
 * Wire protocol (text, one connection per request; docs/operations.md):
 *
 *   request   "queue" | "list DOMAIN" | "show QUEUEID" | "flush [DOMAIN]"
 *             | "flush @DOMAIN" | "flush #QUEUE" | "hold TARGET"
 *             | "release TARGET" | "delete TARGET" | "bounce TARGET"
 *             | "stats" | "config" | "reload", ended by LF or CRLF, printable ASCII,
 *             at most ADMIN_REQUEST_MAX octets. TARGET is a domain, or a
 *             queue id: QUEUE_ID_LEN letters and digits (no dot) are a
 *             queue id (admin_target_is_queue_id).
 *   answer    "ok" LF, then the body; or "error: <why>" LF. The server
 *             closes the connection after the answer: EOF ends the body.
 *
 *   queue     one line per destination, in no particular order:
 *             "<domain> <recipients> <ready> <deferred> <held> <inflight>
 *             <oldest arrival, unix ms>"
 *   list      one line per queued recipient of DOMAIN:
 *             "<queue id> <state> <attempts> <arrival ms> <size> <sender>
 *             <recipient> <next attempt ms> <last reply>" (state ready,
 *             deferred, held, held-id (held by its queue id), inflight;
 *             sender "<>" when null; next attempt 0 unless deferred; last
 *             reply "" when none; text escaped as log_quote does, so a
 *             field holds no space unless quoted)
 *   show      the envelope, one "key value" line each: id, arrival, size,
 *             client, helo, sender, param*, "rcpt ADDRESS STATE ATTEMPTS
 *             REPLY"* (STATE: queued, deferred, delivered, failed, as
 *             journaled), body SEGMENT OFFSET LEN* (and "headers-error
 *             <why>" when the header section could not be read); then an
 *             empty line, then the message's header section as stored
 *             (CRLF lines, up to the empty line that ends it, at most
 *             ADMIN_HEADERS_MAX octets).
 *   flush     every held and deferred recipient of DOMAIN (without one:
 *             of every domain) is made ready now, its backoff forgotten:
 *             "flushed <recipients>" (those held by queue id stay held)
 *   hold      DOMAIN's mail is held from now on, until released or
 *             ferryd restarts: "held <recipients moved to held>"; a
 *             QUEUEID's queued recipients are held until released by id:
 *             "held <recipients held> <in flight: held if deferred>"
 *   release   ends a hold of DOMAIN (the config's too, until restart)
 *             and flushes it: "released <recipients made ready>"; of a
 *             QUEUEID: "released <made ready> <still held by their domain>"
 *   delete    the TARGET's queued recipients end without a DSN:
 *             "deleted <recipients> <in flight: deleted when their
 *             attempt ends, unless delivered>"
 *   bounce    the TARGET's queued recipients fail now with a DSN:
 *             "bounced <recipients> <in flight: bounced when their
 *             attempt ends, unless delivered>"
 *             (moves: "error: delivery is not running ..." from a ferryd
 *             started without delivery; net/outbound_operator.h says what
 *             each does.)
 *   stats     every worker's counters merged, in the Prometheus text
 *             format, as GET /metrics has them
 *   config    the effective configuration, as ferryd --check-config
 *             prints it: "[section]" and "key = value" lines
 *   reload    the configuration file read again (net/reload.h): "ok" and
 *             "generation N from FILE is running" (or accepted, a worker
 *             late to switch); refused: "error: <why>; generation N keeps
 *             running", why naming file, line and key, or the keys only a
 *             restart can change
 *
 * Start it once the workers run; stop it before they are told to shut down
 * (its requests need live workers to be answered).
 */
#ifndef FERRY_NET_ADMIN_H
#define FERRY_NET_ADMIN_H

#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "net/address.h"
#include "queue/queue.h"

#define ADMIN_SOCKET_NAME "ferryctl.sock"
#define ADMIN_SOCKET_MODE 0660
#define ADMIN_REQUEST_MAX 512
#define ADMIN_HEADERS_MAX 65536
#define ADMIN_MAX_CLIENTS 16 /* served at once, each on its own thread */
#define ADMIN_COMMANDS_HINT                                                                        \
	"queue, list DOMAIN, show QUEUEID, flush [DOMAIN|@DOMAIN|#QUEUE], hold DOMAIN|QUEUEID, "   \
	"release DOMAIN|QUEUEID, delete DOMAIN|QUEUEID, bounce DOMAIN|QUEUEID, stats, config, "    \
	"reload"
/* The first word of a move's answer ("flushed 3"), by the move's name
 * ("flush"); NULL for anything else. ferryd writes it, ferryctl reads it. */
static inline const char *admin_move_done(const char *command)
{
	static const char *const done[][2] = {{"flush", "flushed"},
					      {"hold", "held"},
					      {"release", "released"},
					      {"delete", "deleted"},
					      {"bounce", "bounced"}};
	for (size_t i = 0; i < sizeof(done) / sizeof(done[0]); i++)
		if (strcmp(done[i][0], command) == 0)
			return done[i][1];
	return NULL;
}

/* Descriptors the admin socket may hold at once, for ferryd's budget: the
 * spool and segments directories, the listening socket, the stop eventfd,
 * and per client its socket and a segment file read for `show`. */
#define ADMIN_DESCRIPTORS (4 + 2 * ADMIN_MAX_CLIENTS)

/* Arguments the protocol takes, checked the same way by ferryd and by
 * ferryctl (which asks offline too): a domain (letters, digits, "-._",
 * and "[]:" for address literals) and a queue id. */
static inline bool admin_domain_ok(const char *s, size_t len)
{
	if (len == 0 || len > 255)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("-._[]:", s[i]) == NULL)
			return false;
	return true;
}

/* What flush, hold and release take: a domain name (net/address.h's
 * syntax) or an address literal ("[192.0.2.1]"), the forms a recipient's
 * domain is queued under. Needs ferry_smtp. */
static inline bool admin_destination_ok(const char *s, size_t len)
{
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']')
		return admin_domain_ok(s, len);
	return len > 0 && address_domain_valid(s, len, false);
}

static inline bool admin_queue_id_ok(const char *s, size_t len)
{
	if (len != QUEUE_ID_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]))
			return false;
	return true;
}

/* What hold, release, delete and bounce take: a queue id when it has the
 * shape of one (QUEUE_ID_LEN letters and digits, so no dot), else a
 * domain (admin_destination_ok). A domain of a single label of that shape
 * cannot be named there; mail is queued under dotted names (or address
 * literals) in practice. */
static inline bool admin_target_is_queue_id(const char *s, size_t len)
{
	return admin_queue_id_ok(s, len);
}

struct admin;
struct net_reload;
struct queue_store;
struct outbound_shared;

/*
 * Bind <spool_dir>/ferryctl.sock (replacing a stale one; refusing when
 * another process still answers on it) and start the admin thread.
 * `delivery` is what the moves act on (its workers' array filled: start
 * the admin after the workers); NULL answers them with an error.
 * `reload` gives the configuration config shows, the ETRN policy flush
 * @DOMAIN and #QUEUE use, and reload itself (NULL: errors). Returns 0 or
 * -errno with err saying what failed.
 */
int admin_start(struct admin **out, struct net_reload *reload, struct queue_store *store,
		const struct outbound_shared *delivery, const char *spool_dir, char *err,
		size_t err_size);

/* End the threads (clients being served are dropped), remove the socket
 * file if it is still ours, and free. NULL is a no-op. */
void admin_stop(struct admin *a);

#endif
