/*
 * spool_view — the one read-only view of a spool's segment files: the
 * messages a restart would bring back, with their recipients' outcomes,
 * read without changing anything (nothing is cut or quarantined), so it
 * is safe beside a running ferryd, on a stopped one's spool, or on a copy.
 * ferryctl's offline mode, the admin thread's header reads and the
 * integration tests read the spool through it and nothing else, so they
 * cannot disagree with each other or with the store's recovery.
 *
 * Everything here blocks (directory listings, mmap, pread, a short sleep
 * before a re-read): call it from a program, a test or the admin thread,
 * never on a worker's loop.
 *
 * The rules, the store's own (recover.h):
 *  - a message is there when its COMMIT record is there and agrees with
 *    its body; a corrupt or unreadable segment is left out, and named;
 *  - duplicates: compaction copies a message forward and deletes the old
 *    segment later, so both copies may be on disk. The view shows each id
 *    once: the later one of the same writer, or the one in a writer that
 *    still runs. Copies always go to the owner's writer, the message's
 *    own number or a lower one, and recover_spool() reads writers from
 *    the highest number down, so that is the later copy in read order
 *    (recover_copy_replaces()). Which copy is kept changes only where the
 *    body is read from: both hold the same envelope and body;
 *  - outcomes: RCPT_DELIVERED and RCPT_FAILED end a recipient and an ended
 *    recipient stays ended whatever record comes after; RCPT_DEFERRED
 *    marks it deferred with its attempts; MESSAGE_DONE ends the message
 *    (recover_rcpt_apply()). Outcome records may be read before the
 *    message they name, so they are applied once every message is known;
 *  - stale reads: a running ferryd may delete a segment under the scan
 *    (its mail finished, or compaction moved it). When that may hide
 *    messages or outcomes (recover_spool()'s -ESTALE), the whole spool is
 *    read again from scratch, at most SPOOL_VIEW_ATTEMPTS times; a view
 *    never shows a message twice nor leaves one out for it;
 *  - moved bodies: a body or header read after the view was taken may
 *    find a segment gone for the same reason. The read says so
 *    (SPOOL_VIEW_MOVED): the caller takes a new view (or asks ferryd
 *    again) and reads from the message's new extents.
 */
#ifndef FERRY_QUEUE_SPOOL_VIEW_H
#define FERRY_QUEUE_SPOOL_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/queue.h"

struct buf;

/* Full scans of the spool before a view gives up on a spool that keeps
 * changing under it (-ESTALE). */
#define SPOOL_VIEW_ATTEMPTS 50

/* Room for a segment file name and its NUL ("w000-000000000001.seg"). */
#define SPOOL_VIEW_SEGMENT_NAME_MAX 32

enum spool_view_rcpt_state {
	SPOOL_VIEW_QUEUED = 0, /* no outcome yet (ready, held or in flight: only ferryd knows) */
	SPOOL_VIEW_DEFERRED,   /* tried, to be tried again */
	SPOOL_VIEW_DELIVERED,  /* ended: the next hop took it */
	SPOOL_VIEW_FAILED,     /* ended: refused for good (bounced) */
};

struct spool_view_rcpt {
	const char *address; /* as received, NUL-terminated */
	size_t len;
	const char *domain; /* after the last '@', lower-cased ("" without '@') */
	enum spool_view_rcpt_state state;
	uint32_t attempts;
	/* DEFERRED: its next attempt as the journal has it (unix ms); else
	 * 0. (The reply to each attempt is in the journal too, but not
	 * in the view.) */
	int64_t next_attempt_ms;
};

/* Strings are NUL-terminated and their lengths given too. */
struct spool_view_message {
	char id[QUEUE_ID_LEN + 1];
	uint32_t writer;    /* as named in its segment files */
	int64_t arrival_ms; /* unix time */
	uint64_t body_len;  /* octets, as its COMMIT record counts them */
	const char *sender; /* "" for the null sender */
	const char *client; /* the client's IP address */
	const char *helo;
	size_t sender_len, client_len, helo_len;
	const struct queue_param *params; /* MAIL FROM parameters */
	unsigned nparams;
	const struct spool_view_rcpt *rcpts;
	unsigned nrcpts;
	/* The body, in order, in the writer's segments. */
	const struct queue_extent *extents;
	uint32_t nextents;
	bool done; /* MESSAGE_DONE read: finished, dead space, not served */
};

/* A segment the view had to leave out. */
struct spool_view_segment {
	char name[SPOOL_VIEW_SEGMENT_NAME_MAX]; /* under <spool>/segments */
	bool corrupt;                           /* else unreadable (open, stat or mmap failed) */
	uint64_t end;                           /* corrupt: valid records end here */
};

struct spool_view {
	const struct spool_view_message *messages; /* sorted by id, each id once */
	size_t count;
	size_t duplicates; /* second copies folded away */
	/* Segment files looked at (not one that vanished under the scan),
	 * and how many of them end in a torn batch, are corrupt, unreadable. */
	unsigned segments, torn, corrupt, unreadable;
	/* The corrupt and unreadable ones (corrupt + unreadable of them), in
	 * read order. */
	const struct spool_view_segment *left_out;
	unsigned rereads; /* scans started over (stale reads) */
	int segments_fd;  /* <spool>/segments, for the reads below */
};

/*
 * Read <spool_dir>/segments into a new view. Returns 0, or -errno with err
 * saying what failed: -ENOENT only when there is no segments directory (a
 * spool ferryd never opened, or not a spool), "cannot open DIR/segments:
 * ..."; otherwise "reading DIR/segments: ..." (-ESTALE: it kept changing
 * under SPOOL_VIEW_ATTEMPTS scans; -ENOMEM). Recovery's log lines about
 * what it found (a corrupt segment) go to the log (core/log.h).
 */
int spool_view_open(struct spool_view **out, const char *spool_dir, char *err, size_t err_size);

/* NULL is a no-op. */
void spool_view_close(struct spool_view *v);

/* The message with this queue id (any case), done or not, or NULL. */
const struct spool_view_message *spool_view_find(const struct spool_view *v, const char *id);

/*
 * Reading a message's body back: `extents` of writer `writer`, in order,
 * from segments_fd (a view's, or <spool>/segments opened by the caller).
 * Blocking preads.
 *
 * Returns 0; SPOOL_VIEW_MOVED when a segment named is gone (compaction
 * moved the message, or it finished): take a new view, or ask ferryd
 * again; or -errno (-EIO: a file ends early). Unless 0, nothing is
 * appended to out and why says what failed ("cannot open segments/NAME:
 * ...", "reading segments/NAME: the file ends early").
 */
#define SPOOL_VIEW_MOVED 1

/* Append the whole body to out. */
int spool_view_read_body(int segments_fd, uint32_t writer, const struct queue_extent *extents,
			 size_t nextents, struct buf *out, char *why, size_t why_size);

/* Append the header section to out: everything up to (not including) the
 * first empty line, or the first `max` octets if that comes first, or the
 * whole body when it has no empty line. */
int spool_view_read_headers(int segments_fd, uint32_t writer, const struct queue_extent *extents,
			    size_t nextents, size_t max, struct buf *out, char *why,
			    size_t why_size);

/* The name of segment `sequence` of `writer` under <spool>/segments (as
 * queue_report_message() names them), and back; false if `name` is not
 * one. */
void spool_view_segment_name(char out[SPOOL_VIEW_SEGMENT_NAME_MAX], uint32_t writer,
			     uint64_t sequence);
bool spool_view_parse_segment_name(const char *name, uint32_t *writer, uint64_t *sequence);

#endif
