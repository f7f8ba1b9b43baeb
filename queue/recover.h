/*
 * recover — read a spool's segments back at start-up (and, read-only, for
 * the spool view: spool_view.h), verify every record, and hand the
 * committed messages and state changes to the caller, which rebuilds its
 * index. The rules every reader applies to what it is handed (which of two
 * copies of a message counts, what outcome records do) are here too, at
 * the end, so that the store and the spool view cannot disagree.
 *
 * Each writer's segments are read in sequence order, writers from the
 * highest number down (outcome records of a message are written by its
 * writer or, after a restart with fewer workers, by a lower-numbered
 * one: so a message is read before the outcome records that name it,
 * except a compaction copy, which may come after them: see the outcome
 * rule below); a message may begin in one segment and commit in the next.
 * A message exists only if its COMMIT record is there and agrees with the
 * BODY chunks seen (count and length).
 *
 * Where a segment stops making sense, the rest is judged:
 *  - torn tail: past the last whole batch (its BATCH record frames) there
 *    is no later whole batch — the writer died inside its last batch,
 *    whose sync never completed, so nothing there was acknowledged,
 *    whatever lies there (zeros, a partial record, pages out of order).
 *    The tail is cut off (ftruncate) and logged.
 *  - corruption: a bad spot (a bad or incomplete record, or zeros)
 *    followed by a later whole batch, here or in a later segment of the
 *    writer: acknowledged data was damaged. The segment is moved to
 *    <spool>/quarantine/ and logged loudly; its messages are not served;
 *    every other segment is.
 * In read-only mode nothing is cut or moved; the verdicts are reported.
 */
#ifndef FERRY_QUEUE_RECOVER_H
#define FERRY_QUEUE_RECOVER_H

#include <stdbool.h>
#include <stdint.h>

#include "queue/queue.h"
#include "queue/record.h"

struct recover_message {
	uint32_t worker; /* the writer, as named in the segment file */
	const struct record_envelope *envelope;
	const struct record_string *strings; /* params, then recipients */
	uint64_t envelope_sequence, envelope_offset;
	const struct queue_extent *extents;
	uint32_t nextents;
	uint64_t body_len;
	uint64_t first_sequence, last_sequence; /* segments holding its records */
};

enum recover_verdict {
	RECOVER_CLEAN = 0,  /* ends where the writer stopped */
	RECOVER_TORN,       /* an unacknowledged tail was cut */
	RECOVER_CORRUPT,    /* quarantined */
	RECOVER_UNREADABLE, /* could not be opened or mapped: left alone, logged */
};

struct recover_segment {
	uint32_t worker;
	uint64_t sequence;
	const char *name;
	uint64_t end; /* bytes of valid records */
	uint64_t file_size;
	enum recover_verdict verdict;
	uint64_t messages; /* committed messages whose COMMIT is here */
};

struct recover_hooks {
	void *arg;
	/* Return 0, or a negative errno to stop recovery. */
	int (*message)(void *arg, const struct recover_message *m);
	int (*rcpt_state)(void *arg, enum record_type type, const struct record_rcpt_state *st,
			  uint32_t worker, uint64_t sequence);
	int (*message_done)(void *arg, const struct record_id *id, uint32_t worker,
			    uint64_t sequence);
	void (*segment)(void *arg, const struct recover_segment *seg);
};

struct recover_stats {
	uint64_t segments, messages, records, bytes;
	uint64_t torn, corrupt, unreadable, incomplete; /* incomplete: begun, never committed */
};

/*
 * Scan every segment in dir_fd (<spool>/segments), quarantining into
 * quarantine_fd unless read_only. Returns 0 or the first hook error.
 *
 * Read-only readers may look at the spool of a running ferryd. A listed
 * segment that is gone when opened is skipped: ferryd deleted it (its
 * messages finished, or copied into a newer segment of the same writer).
 * If that writer has a segment newer than the listing named, the copies
 * may be there, unseen: -ESTALE, read again from scratch. They may also find a
 * message twice (compaction copied it and has not yet deleted the old
 * segment): the two copies hold the same envelope and body, and outcomes
 * apply to the message by id, whichever copy is kept.
 */
int recover_spool(int dir_fd, int quarantine_fd, bool read_only, const struct recover_hooks *hooks,
		  struct recover_stats *stats);

/* ---- the rules of every reader ------------------------------------------- */

/*
 * The duplicate rule. Compaction copies a live message forward (envelope,
 * body, commit, and the outcomes of its recipients already ended) into
 * its owner's current segment, and deletes the old segment once nothing
 * lives there. In between, and after a crash in between, both copies are
 * on disk under one id, with the same envelope and body. A reader keeps
 * one: the later one of the same writer, or the one in a writer that
 * still runs. A copy always goes to the owner's writer, whose number is
 * the message's own or a lower one (w % workers), and recover_spool()
 * reads writers from the highest number down, each in sequence order: so
 * that is the same rule as "the later copy in recover_spool()'s read
 * order", which needs no knowledge of the writers that run.
 *
 * Where a copy was found: its writer and its ENVELOPE record (a copy's
 * envelope is written after the whole of the copy it repeats).
 */
struct recover_place {
	uint32_t writer;
	uint64_t sequence; /* the segment holding the ENVELOPE */
	uint64_t offset;   /* of the ENVELOPE in that segment */
};

/* True when `copy` comes after `kept` in recover_spool()'s read order (a
 * lower writer, or further on in the same writer): copy replaces kept.
 * Whichever order the caller met the two in. */
bool recover_copy_replaces(const struct recover_place *kept, const struct recover_place *copy);

/*
 * The outcome rule, for the outcome records (RECORD_RCPT_DELIVERED,
 * _DEFERRED, _FAILED; they name a message by id and a recipient by its
 * index in the envelope) and RECORD_MESSAGE_DONE:
 *  - DELIVERED and FAILED end a recipient, and an ended recipient stays
 *    ended whatever record comes after (a compaction copy repeats the
 *    outcomes of ended recipients, and records of two copies may be read
 *    in either order);
 *  - DEFERRED marks a recipient that has not ended deferred; it keeps the
 *    most attempts any record said, up to the one that ended it;
 *  - MESSAGE_DONE ends the message, whatever its recipients say: it is
 *    dead space, not served.
 * Outcome records may be read before the message they name: a compaction
 * copy is written after the outcomes already naming the message (in the
 * same writer, or in a lower one that owns it), and once the old copy's
 * segment is gone those outcomes come first in read order. A reader keeps
 * them and applies them once every message is known.
 */
enum recover_rcpt_state {
	RECOVER_RCPT_QUEUED = 0, /* no outcome yet */
	RECOVER_RCPT_DEFERRED,   /* tried, to be tried again */
	RECOVER_RCPT_DELIVERED,  /* ended: the next hop took it */
	RECOVER_RCPT_FAILED,     /* ended: refused for good (bounced) */
};

struct recover_rcpt {
	enum recover_rcpt_state state;
	uint32_t attempts;
};

static inline bool recover_rcpt_ended(enum recover_rcpt_state state)
{
	return state == RECOVER_RCPT_DELIVERED || state == RECOVER_RCPT_FAILED;
}

/*
 * Apply one outcome record of type `type` carrying `attempts` to recipient
 * r. Returns true when this record ended r (it had not ended before): the
 * caller counts one recipient fewer to deliver. A repeated or late record
 * returns false and changes nothing of an ended recipient. `type` must be
 * one of the three RCPT_* types (a CHECK).
 */
bool recover_rcpt_apply(struct recover_rcpt *r, enum record_type type, uint32_t attempts);

/* Outcome records (and MESSAGE_DONE) kept until every message is known,
 * in the order they were read. */
struct recover_outcome {
	char id[RECORD_ID_LEN];
	enum record_type type; /* an RCPT_* type, or MESSAGE_DONE */
	uint16_t recipient;
	uint32_t attempts;
};

struct recover_outcomes {
	struct recover_outcome *items;
	size_t count, cap;
};

/* Keep one. 0 or -ENOMEM. */
int recover_outcomes_keep(struct recover_outcomes *kept, const char *id, enum record_type type,
			  uint16_t recipient, uint32_t attempts);
void recover_outcomes_free(struct recover_outcomes *kept);

#endif
