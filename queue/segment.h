/*
 * segment — the spool's append-only segment files, on disk.
 *
 * Each worker writes its own segments, named
 *
 *   <spool>/segments/w<worker, 3 digits>-<sequence, 12 digits>.seg
 *
 * so that a directory listing sorted by name is each worker's write order.
 * A segment is created preallocated to its full size (fallocate), so a sync
 * of an append need not journal a change of file size, and starts with a
 * RECORD_SEGMENT record carrying its random salt. A segment is never
 * appended to after a restart or a failed sync: the writer opens a new one.
 *
 * Quarantined segments (corruption found at recovery) are moved to
 * <spool>/quarantine/ and never read again by ferryd.
 *
 * These helpers are synchronous: they run at start-up and when a writer
 * rolls to a new segment (once per segment_size bytes).
 */
#ifndef FERRY_QUEUE_SEGMENT_H
#define FERRY_QUEUE_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SEGMENT_NAME_MAX 32

/* The spool's modes, set explicitly whatever the umask (a service manager's
 * UMask=0077 must not shut ferryd's group out): the directories ferryd
 * creates (the spool, its missing parents, segments/, quarantine/) and the
 * files in them (segments, the lock). The group may read the spool
 * (ferryctl --spool) and reach the admin socket; no one else may. */
#define SEGMENT_DIR_MODE  0750
#define SEGMENT_FILE_MODE 0640

/* Who the files the store creates belong to. (uid_t)-1 and (gid_t)-1, as
 * chown(2) takes them, leave them to their creator; SEGMENT_OWNER_CREATOR
 * is both. ferryd, started as root to bind port 25, gives its spool to the
 * user it runs as afterwards (queue.h: queue_store_config's owner). */
struct segment_owner {
	uid_t uid;
	gid_t gid;
};
#define SEGMENT_OWNER_CREATOR ((struct segment_owner){(uid_t)-1, (gid_t)-1})

struct segment_file {
	uint32_t worker;
	uint64_t sequence;
	char name[SEGMENT_NAME_MAX]; /* relative to <spool>/segments */
	bool vanished;               /* for readers: gone when opened */
};

/* mkdir with SEGMENT_DIR_MODE, whatever the umask; an existing directory
 * is left as it is. Returns 0 or -errno. */
int segment_mkdir(const char *path);

/* Create <spool>/segments and <spool>/quarantine if missing; returns an fd
 * of the segments directory (for fsync) or -errno. */
int segment_dir_open(const char *spool_dir);

void segment_name(char out[SEGMENT_NAME_MAX], uint32_t worker, uint64_t sequence);

/* Parse a segment file name; false if it is not one. */
bool segment_parse_name(const char *name, uint32_t *worker, uint64_t *sequence);

/* qsort/bsearch order of struct segment_file: by worker, then sequence. */
int segment_file_compare(const void *a, const void *b);

/*
 * List the segment files in dir_fd, sorted by (worker, sequence). *out is
 * malloc'd; returns the count or -errno.
 */
int segment_list(int dir_fd, struct segment_file **out);

/*
 * Create a new segment: O_EXCL, mode SEGMENT_FILE_MODE, given to `owner`,
 * preallocated to `size` bytes, the header record (with a fresh random
 * salt) written at offset 0 and synced; the caller's first batch syncs the
 * directory that names the file. Returns the fd, with *salt and
 * *data_offset (where the next record goes) set, or -errno.
 */
int segment_create(int dir_fd, uint32_t worker, uint64_t sequence, uint64_t size,
		   struct segment_owner owner, uint64_t *salt, uint64_t *data_offset);

/* Move a segment aside into <spool>/quarantine/ (dir fds of both), under
 * its own name, or "<name>.N" when an earlier one already has it. */
int segment_quarantine(int dir_fd, int quarantine_fd, const char *name);

#endif
