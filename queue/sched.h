/*
 * sched — where each queued recipient stands, and the moves that delivery
 * and ETRN make. The store's public contract for the recipients' side,
 * beside queue.h (the messages' side).
 *
 * A recipient belongs to the shard of its domain (the hash of the
 * lower-cased domain), and each shard to one worker, which alone moves
 * its recipients: every call here runs on the worker that owns the
 * domain's shard (it returns 0 / does nothing on another worker). In its
 * destination's queue (queue/index.h) a recipient is in one state:
 *
 *   READY      to be tried now, oldest first
 *   DEFERRED   to be tried again at or after its due time T (retry backoff)
 *   HELD       waiting for ETRN or an operator's flush, never tried on a
 *              schedule (domains marked hold)
 *   INFLIGHT   handed to delivery, its outcome awaited
 *
 * and moves between them:
 *
 *   message durable     -> READY       the store, once the 250 could be sent
 *   READY    -> INFLIGHT               sched_take_ready
 *   INFLIGHT -> ended                  sched_finish: delivered, or failed for
 *                                      good; journaled by the message's owner,
 *                                      the message finished with its last
 *   INFLIGHT -> DEFERRED (until T)     sched_defer: one more attempt, journaled
 *   DEFERRED -> READY                  sched_release_due, once T has passed
 *   DEFERRED, HELD -> READY            sched_flush (ETRN, ferryctl flush)
 *
 * and an operator may say more of one recipient (ferryctl hold, release,
 * delete, bounce, by queue id or domain; "the operator's marks" below).
 *
 * Journaling is not waited for: after a crash a recipient may be tried
 * again (at least once, never lost). A deferred recipient comes back
 * READY after a restart (its attempts are kept in the journal).
 *
 * Times are the worker's monotonic clock (struct worker's now_ms).
 */
#ifndef FERRY_QUEUE_SCHED_H
#define FERRY_QUEUE_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct queue;

/* A queued recipient (opaque); valid until it is finished. */
struct queue_rcpt;

enum queue_outcome {
	QUEUE_DELIVERED = 0, /* the next hop took it (2xx) */
	QUEUE_FAILED,        /* refused for good (5xx, or too old): bounced */
	/* Ended by an operator (ferryctl delete, bounce), not by an attempt:
	 * journaled as failed, its attempts as they were. */
	QUEUE_REMOVED,
};

/* Move up to max READY recipients of `domain` to INFLIGHT and hand them
 * out, oldest first. Returns how many. */
size_t sched_take_ready(struct queue *q, const char *domain, size_t len, struct queue_rcpt **out,
			size_t max);

/* One transaction's worth: the oldest READY recipient of `domain` and
 * the READY ones of the same message right after it (a message's
 * recipients for one domain are queued together), up to max, moved to
 * INFLIGHT. Returns how many. */
size_t sched_take_message(struct queue *q, const char *domain, size_t len, struct queue_rcpt **out,
			  size_t max);

/* The READY recipients of r's message for other domains whose shards q
 * owns, that `accept` takes (it is given each one's domain), moved to
 * INFLIGHT: they ride in r's transaction when their domain's next hop is
 * the one r goes to. Up to max; returns how many. Each recipient accept
 * says yes to is taken at once, in order, so a caller may note what it
 * learnt of each in accept. */
typedef bool sched_accept_fn(void *arg, const char *domain, size_t len);
size_t sched_take_siblings(struct queue *q, const struct queue_rcpt *r, sched_accept_fn *accept,
			   void *arg, struct queue_rcpt **out, size_t max);

const char *sched_rcpt_address(const struct queue_rcpt *r, size_t *len);
/* Its domain (after the last '@'; empty without one). */
const char *sched_rcpt_domain(const struct queue_rcpt *r, size_t *len);
const char *sched_rcpt_message_id(const struct queue_rcpt *r);

/* An INFLIGHT recipient's delivery ended for good: it leaves the index;
 * `reason` (the next hop's reply, at most 255 octets kept) is journaled
 * with the outcome. r is invalid afterwards. */
void sched_finish(struct queue *q, struct queue_rcpt *r, enum queue_outcome outcome,
		  const char *reason);

/* An INFLIGHT recipient is to be tried again at or after until_ms; the
 * attempt is journaled with `reason`. (An operator's mark changes that:
 * held instead, or ended by the `ending` hook, after which r is invalid.) */
void sched_defer(struct queue *q, struct queue_rcpt *r, uint64_t until_ms, const char *reason);

/* An INFLIGHT recipient goes back to READY, no attempt counted or
 * journaled: its delivery never started (the worker is shutting down,
 * the body could not be read yet). (An operator's mark: as sched_defer.) */
void sched_return(struct queue *q, struct queue_rcpt *r);

/* DEFERRED recipients of `domain` due at or before now_ms become READY,
 * in due order. Returns how many. */
unsigned sched_release_due(struct queue *q, const char *domain, size_t len, uint64_t now_ms);

/* Every DEFERRED and HELD recipient of `domain` becomes READY now.
 * Returns how many. */
unsigned sched_flush(struct queue *q, const char *domain, size_t len);

/* ---- for delivery ----------------------------------------------------------- */

/* The message a queued recipient belongs to, as delivery needs it. The
 * strings live as long as the recipient is queued. */
struct sched_message {
	const char *id;     /* the queue id */
	const char *sender; /* reverse path without brackets; "" for <> */
	size_t sender_len;
	uint64_t size;                       /* body octets */
	int64_t arrival_ms;                  /* wall clock */
	bool eightbit;                       /* MAIL FROM had BODY=8BITMIME */
	bool smtputf8;                       /* MAIL FROM had SMTPUTF8 */
	const struct queue_message *message; /* to tell recipients of one message apart */
};
void sched_rcpt_message(const struct queue_rcpt *r, struct sched_message *out);

/* Attempts made for the recipient (kept in the journal across restarts). */
uint32_t sched_rcpt_attempts(const struct queue_rcpt *r);

/* ---- the operator's marks ------------------------------------------------------- */

/*
 * What an operator said of one recipient, kept on its shard's owner, in
 * memory only (a restart forgets it, as it forgets a domain's hold):
 *
 *   HOLD     held by its queue id (ferryctl hold QUEUEID): HELD, and a
 *            flush (ETRN, ferryctl flush, a domain's release) leaves it
 *            HELD; only sched_unpark ends it. An INFLIGHT one goes HELD
 *            instead of DEFERRED or READY when its attempt is deferred
 *            (sched_defer: the attempt is still counted and journaled) or
 *            handed back (sched_return).
 *   DELETE,  to be ended by the operator (ferryctl delete, bounce) once its
 *   BOUNCE   attempt under way ends: given to an INFLIGHT recipient. If
 *            the attempt is deferred or handed back, the `ending` hook
 *            gets it instead, still INFLIGHT, to end it; a delivered one
 *            stays delivered, a refused one is the bouncer's (which reads
 *            the mark: sched_rcpt_mark).
 */
enum sched_mark {
	SCHED_MARK_NONE = 0,
	SCHED_MARK_HOLD,
	SCHED_MARK_DELETE,
	SCHED_MARK_BOUNCE,
};

enum sched_state { SCHED_READY = 0, SCHED_DEFERRED, SCHED_HELD, SCHED_INFLIGHT };

enum sched_state sched_rcpt_state(const struct queue_rcpt *r);
enum sched_mark sched_rcpt_mark(const struct queue_rcpt *r);

/*
 * The recipients of `domain` in q's shards, in any state (only those of
 * the message with queue id `id` when id is not NULL), into *out, an
 * array the caller frees (NULL when none), *n how many: the operator
 * moves them one by one with the calls below. 0 or -ENOMEM. On q's
 * worker; valid until the caller's next move of them or loop turn.
 */
int sched_collect(struct queue *q, const char *domain, size_t len, const char *id,
		  struct queue_rcpt ***out, size_t *n);

/* Hold r by its queue id (mark HOLD): READY, DEFERRED or HELD becomes
 * HELD; an INFLIGHT one is marked (unless marked DELETE or BOUNCE). */
void sched_park(struct queue *q, struct queue_rcpt *r);

/* End r's hold by queue id: the mark HOLD is taken off, and a HELD r
 * becomes READY unless `stay_held` (its domain is held). False when r
 * had no mark HOLD (nothing changed). */
bool sched_unpark(struct queue *q, struct queue_rcpt *r, bool stay_held);

/* A READY, DEFERRED or HELD recipient becomes INFLIGHT, for the operator
 * to end it now (sched_finish, or a bounce). */
void sched_take(struct queue *q, struct queue_rcpt *r);

/* Mark an INFLIGHT recipient DELETE or BOUNCE (the last word wins). */
void sched_mark_inflight(struct queue *q, struct queue_rcpt *r, enum sched_mark mark);

/*
 * Delivery's hooks into the shards a worker owns, set by the layer above
 * (net/ cannot be called from here). All run on q's worker.
 *   held   the recipients of a message that just became durable, for a
 *          domain in q's shards: true puts them HELD instead of READY.
 *   ready  `domain` has READY recipients it had none of a moment ago
 *          (new mail). Moves made by the calls of this header (flush,
 *          release, hold) tell no one: their caller knows.
 */
struct sched_hooks {
	bool (*held)(void *arg, const char *domain, size_t len);
	void (*ready)(void *arg, const char *domain, size_t len);
	/* Optional: a recipient entered the index (after held/ready), or is
	 * about to leave it for good (sched_finish): per-domain accounting. */
	void (*queued)(void *arg, const struct queue_rcpt *r);
	void (*leaving)(void *arg, const struct queue_rcpt *r);
	/* Optional: r, marked DELETE or BOUNCE (`mark`, now cleared), was to
	 * be deferred or handed back: it is still INFLIGHT, for the hook to
	 * end (without it, r is deferred or handed back as usual). Called
	 * from inside sched_defer and sched_return: r may be gone when they
	 * return. */
	void (*ending)(void *arg, struct queue_rcpt *r, enum sched_mark mark);
	void *arg;
};
/* On q's worker; NULL clears them. */
void sched_set_hooks(struct queue *q, const struct sched_hooks *hooks);

struct sched_counts {
	uint32_t ready, deferred, held, inflight;
	uint64_t next_due_ms; /* earliest DEFERRED due time; UINT64_MAX: none */
};

/* Visit every destination in q's shards (on q's worker): at start, to
 * hold what recovery brought back for held domains and to find the ready
 * ones. fn returns false to stop; it may move recipients of the domain it
 * is given with the calls above, nothing else. */
typedef bool sched_visit_fn(void *arg, const char *domain, size_t len,
			    const struct sched_counts *counts);
void sched_foreach(struct queue *q, sched_visit_fn *fn, void *arg);

/* Of its message's recipients for the same domain (case-insensitive) in
 * the index: is r the one with the lowest index (first: a message counts
 * once per domain), or the only one (alone: the last to leave)? On the
 * shard's owner; only recipients of r's domain are looked at. */
bool sched_rcpt_first_in_domain(const struct queue_rcpt *r);
bool sched_rcpt_alone_in_domain(const struct queue_rcpt *r);

/* Visit every recipient of `domain` in q's shards, in any state (fn must
 * not move or finish them). */
typedef void sched_rcpt_fn(void *arg, const struct queue_rcpt *r);
void sched_visit_rcpts(struct queue *q, const char *domain, size_t len, sched_rcpt_fn *fn,
		       void *arg);

/* Visit the destinations in q's shards named `domain` or below it on a
 * label boundary (ETRN @domain), as sched_foreach does. */
void sched_foreach_suffix(struct queue *q, const char *domain, size_t len, sched_visit_fn *fn,
			  void *arg);

/*
 * ETRN's count of `domain`'s mail in q's shards: the messages with a
 * recipient queued there (any state) that `covered` accepts the domain
 * of, each counted once among the covered domains of q's shards (at its
 * first such recipient still queued), and of them those whose recipient
 * there is HELD or DEFERRED (what a flush releases). `elsewhere` is set
 * when a counted message also has a recipient in a covered domain of
 * another worker's shard: that worker may count it too, so a sum of the
 * workers' counts is not exact. Adds to *t.
 */
struct sched_tally {
	uint64_t messages, waiting;
	bool elsewhere;
};
void sched_tally(struct queue *q, const char *domain, size_t len, sched_accept_fn *covered,
		 void *arg, struct sched_tally *t);

/* A destination's counts; false when nothing is queued for it here. */
bool sched_counts(struct queue *q, const char *domain, size_t len, struct sched_counts *out);

/* Every READY and DEFERRED recipient of `domain` becomes HELD (ferryctl
 * hold; a held domain's recipients at start). Returns how many. */
unsigned sched_hold(struct queue *q, const char *domain, size_t len);

/* The shard's owner for `domain`: the worker number (queue index) whose
 * sched calls reach it. */
uint32_t sched_owner(const struct queue *q, const char *domain, size_t len);

#endif
