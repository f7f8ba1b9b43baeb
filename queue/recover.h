/*
 * recover — read a spool's segments back at start-up (and for ferryctl's
 * offline mode), verify every record, and hand the committed messages and
 * state changes to the caller, which rebuilds its index.
 *
 * Each writer's segments are read in sequence order, writers from the
 * highest number down (outcome records of a message are written by its
 * writer or, after a restart with fewer workers, by a lower-numbered
 * one: so a message is always read before the records that name it); a
 * message may begin in one segment and commit in the next. A message exists only if its COMMIT
 * record is there and agrees with the BODY chunks seen (count and length).
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

#endif
