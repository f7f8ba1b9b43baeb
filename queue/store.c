/*
 * store — the store as a whole and each worker's queue (store.h has the
 * map of the store's files): the spool directory and its lock, the shard
 * table, recovery at open (rebuild.c), and the store's life on each
 * worker as a worker service.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "queue/segment.h"
#include "queue/store.h"

uint64_t store_now_ms(const struct queue *q)
{
	return q->worker != NULL ? q->worker->now_ms : worker_clock_ms();
}

/* ---- the store -------------------------------------------------------------- */

static int store_init_queues(struct queue_store *st)
{
	for (uint32_t i = 0; i < STORE_MAX_WRITERS; i++)
		atomic_init(&st->writer_floor[i], UINT64_MAX);
	for (uint32_t i = 0; i < st->nshards; i++) {
		st->shards[i].owner = i % st->cfg.workers;
		int r = index_shard_init(&st->shards[i].index);
		if (r != 0)
			return r;
	}
	for (uint32_t i = 0; i < st->cfg.workers; i++) {
		struct queue *q = &st->queues[i];
		q->store = st;
		q->index = i;
		q->next_sequence = 1;
		list_init(&q->unstored);
		list_init(&q->failed);
		list_init(&q->stored);
		idmap_init(&q->by_id, (ptrdiff_t)offsetof(struct queue_message, id) -
					      (ptrdiff_t)offsetof(struct queue_message, id_link));
		q->outbox = calloc(st->cfg.workers, sizeof(*q->outbox));
		q->outcomes = calloc(st->cfg.workers, sizeof(*q->outcomes));
		if (q->outbox == NULL || q->outcomes == NULL)
			return -ENOMEM;
	}
	return 0;
}

/* mkdir -p the spool, lock it (two writers on one spool would each trust
 * their own view of it), open its segments and quarantine directories. */
static int store_open_spool(struct queue_store *st, char *err, size_t err_size)
{
	const char *spool = st->spool_dir;
	char path[4200];
	snprintf(path, sizeof(path), "%s", spool);
	for (char *p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		segment_mkdir(path); /* a parent that fails shows at the spool itself */
		*p = '/';
	}
	int r = segment_mkdir(path);
	if (r != 0) {
		snprintf(err, err_size, "cannot create the spool %s: %s", spool, strerror(-r));
		return r;
	}
	snprintf(path, sizeof(path), "%s/lock", spool);
	st->lock_fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, SEGMENT_FILE_MODE);
	if (st->lock_fd >= 0)
		fchmod(st->lock_fd, SEGMENT_FILE_MODE); /* made now: not the umask's mode */
	else if (errno == EEXIST)
		st->lock_fd = open(path, O_RDWR | O_CLOEXEC);
	if (st->lock_fd < 0) {
		int e = errno;
		snprintf(err, err_size, "cannot open the spool's lock file %s: %s", path,
			 strerror(e));
		return -e;
	}
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		if (e == EWOULDBLOCK)
			snprintf(err, err_size,
				 "%s is in use by another ferryd (it holds the lock on %s)", spool,
				 path);
		else
			snprintf(err, err_size, "cannot lock %s: %s", path, strerror(e));
		return -e;
	}
	st->dir_fd = segment_dir_open(spool);
	if (st->dir_fd < 0) {
		snprintf(err, err_size, "cannot open %s/segments: %s", spool,
			 strerror(-st->dir_fd));
		return st->dir_fd;
	}
	snprintf(path, sizeof(path), "%s/quarantine", spool);
	st->quarantine_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->quarantine_fd < 0) {
		int e = errno;
		snprintf(err, err_size, "cannot open %s: %s", path, strerror(e));
		return -e;
	}
	return 0;
}

static struct segment_owner store_owner(const struct queue_store *st)
{
	if (!st->cfg.owner_set)
		return SEGMENT_OWNER_CREATOR;
	return (struct segment_owner){st->cfg.owner_uid, st->cfg.owner_gid};
}

/* Give the regular files of one of the spool's directories to the owner.
 * Anything else is left alone: root must not follow a link planted there. */
static int store_give_files(int dir_fd, struct segment_owner owner, const char *where, char *err,
			    size_t err_size)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* its own offset */
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (dir == NULL) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		snprintf(err, err_size, "cannot list %s: %s", where, strerror(e));
		return -e;
	}
	int r = 0;
	struct dirent *entry;
	while (r == 0 && (entry = readdir(dir)) != NULL) {
		struct stat st;
		if (fstatat(dir_fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISREG(st.st_mode) || (st.st_uid == owner.uid && st.st_gid == owner.gid))
			continue;
		if (fchownat(dir_fd, entry->d_name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) !=
		    0) {
			r = -errno;
			snprintf(err, err_size, "cannot give %s/%s to uid %u gid %u: %s", where,
				 entry->d_name, (unsigned)owner.uid, (unsigned)owner.gid,
				 strerror(-r));
		}
	}
	closedir(dir);
	return r;
}

/* The spool to its owner (queue.h): what exists, before anything is
 * written, and before ferryd gives up the root that this takes. The
 * files first, their directories last. */
static int store_give_spool(struct queue_store *st, char *err, size_t err_size)
{
	struct segment_owner owner = store_owner(st);
	char where[4200];
	snprintf(where, sizeof(where), "%s/segments", st->spool_dir);
	int r = store_give_files(st->dir_fd, owner, where, err, err_size);
	snprintf(where, sizeof(where), "%s/quarantine", st->spool_dir);
	if (r == 0)
		r = store_give_files(st->quarantine_fd, owner, where, err, err_size);
	if (r != 0)
		return r;
	int spool_fd = open(st->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int spool_error = spool_fd < 0 ? errno : 0;
	const struct {
		int fd;
		const char *name;
	} held[] = {
		{st->dir_fd, "/segments"},
		{st->quarantine_fd, "/quarantine"},
		{st->lock_fd, "/lock"},
		{spool_fd, ""},
	};
	for (size_t i = 0; r == 0 && i < sizeof(held) / sizeof(held[0]); i++) {
		if (held[i].fd < 0 || fchown(held[i].fd, owner.uid, owner.gid) != 0) {
			r = held[i].fd < 0 ? -spool_error : -errno;
			snprintf(err, err_size, "cannot give %s%s to uid %u gid %u: %s",
				 st->spool_dir, held[i].name, (unsigned)owner.uid,
				 (unsigned)owner.gid, strerror(-r));
		}
	}
	if (spool_fd >= 0)
		close(spool_fd);
	return r;
}

int queue_store_open(struct queue_store **out, const struct queue_store_config *cfg, char *err,
		     size_t err_size)
{
	uint64_t started = worker_clock_ms();
	struct queue_store *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->cfg = *cfg;
	if (st->cfg.workers == 0)
		st->cfg.workers = 1;
	uint32_t shards = cfg->shards;
	if (shards == 0)
		for (shards = 1; shards < st->cfg.workers * 8; shards <<= 1)
			;
	st->nshards = shards;
	st->spool_dir = strdup(cfg->spool_dir);
	st->dir_fd = st->quarantine_fd = st->lock_fd = -1;
	st->shards = calloc(shards, sizeof(*st->shards));
	st->queues = calloc(st->cfg.workers, sizeof(*st->queues));
	int r = -ENOMEM;
	if (st->spool_dir == NULL || st->shards == NULL || st->queues == NULL ||
	    store_init_queues(st) != 0) {
		snprintf(err, err_size, "out of memory");
		goto fail;
	}
	/* Recovery runs here, before any worker (or session) exists. */
	if ((r = store_open_spool(st, err, err_size)) != 0 ||
	    (st->cfg.owner_set && (r = store_give_spool(st, err, err_size)) != 0) ||
	    (r = store_rebuild(st, err, err_size)) != 0)
		goto fail;
	st->summary.elapsed_ms = worker_clock_ms() - started;
	*out = st;
	return 0;
fail:
	queue_store_close(st);
	return r;
}

void queue_store_summary(const struct queue_store *store, struct queue_store_summary *out)
{
	*out = store->summary;
}

static void store_free_messages(struct list_node *list)
{
	struct queue_message *m, *next;
	list_for_each_entry_safe(m, next, list, link)
	{
		list_remove(&m->link);
		store_message_free(m);
	}
}

void queue_store_close(struct queue_store *st)
{
	if (st == NULL)
		return;
	for (uint32_t i = 0; st->shards != NULL && i < st->nshards; i++)
		index_shard_free(&st->shards[i].index);
	for (uint32_t w = 0; st->queues != NULL && w < st->cfg.workers; w++) {
		struct queue *q = &st->queues[w];
		if (q->store == NULL)
			continue; /* never initialised */
		store_free_messages(&q->stored);
		store_free_messages(&q->unstored);
		store_free_messages(&q->failed);
		idmap_free(&q->by_id);
		store_outbox_free(q);
		store_segments_free(q);
		store_compaction_free(q->compaction);
		store_orphans_free(q);
	}
	if (st->dir_fd >= 0)
		close(st->dir_fd);
	if (st->quarantine_fd >= 0)
		close(st->quarantine_fd);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	free(st->shards);
	free(st->queues);
	free(st->spool_dir);
	free(st);
}

uint32_t queue_store_workers(const struct queue_store *store)
{
	return store->cfg.workers;
}

struct queue *queue_store_queue(struct queue_store *store, uint32_t index)
{
	return index < store->cfg.workers ? &store->queues[index] : NULL;
}

struct worker *queue_worker(const struct queue *q)
{
	return q->worker;
}

const char *queue_store_spool_dir(const struct queue_store *store)
{
	return store->spool_dir;
}

/* ---- one worker's queue ----------------------------------------------------------- */

int queue_open(struct queue **out, struct worker *w, struct queue_store *store, uint32_t index)
{
	if (index >= store->cfg.workers)
		return -EINVAL;
	struct queue *q = &store->queues[index];
	q->worker = w;
	for (int i = 0; i < QUEUE_BODY_FILES; i++)
		q->body_files[i].fd = -1;
	struct commit_config cc = {
		.dir_fd = store->dir_fd,
		.worker_index = index,
		.first_sequence = q->next_sequence,
		.segment_size = store->cfg.segment_size,
		.batch_cap = store->cfg.batch_cap,
		.owner = store_owner(store),
	};
	struct commit_hooks hooks = {
		.arg = q,
		.on_poison = store_on_poison,
		.on_drain = store_on_drain,
		.on_segment_closed = store_on_segment_closed,
		.on_segment_created = store_on_segment_created,
		.may_grow = store_may_grow,
		.grow_failed = store_grow_failed,
	};
	int r = commit_writer_open(&q->writer, w, &cc, &hooks);
	if (r != 0) {
		q->worker = NULL;
		return r;
	}
	*out = q;
	return 0;
}

void queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	if (q->worker != NULL && timer_armed(&q->cross_timer))
		timer_cancel(&q->worker->timers, &q->cross_timer);
	queue_body_files_close(q);
	commit_writer_close(q->writer);
	q->writer = NULL;
	/* The writer's last segment is finished with: deletable if empty. */
	for (size_t i = 0; i < q->nsegments; i++)
		q->segments[i]->closed = true;
	store_segments_collect(q, 0);
	q->worker = NULL;
}

unsigned queue_pending(const struct queue *q)
{
	/* Cross-worker transfers count too: a worker must not leave while
	 * recipients are on their way to it. */
	return q->pending + store_outbox_pending(q) + atomic_load(&q->store->xfers_in_flight) +
	       (q->writer != NULL && !commit_idle(q->writer)) + store_compact_running(q) +
	       q->unlinks_in_flight;
}

void queue_flush(struct queue *q)
{
	store_send_outbox(q);
	store_cross_recheck(q);
	store_cross_arm(q);
	store_compact_maybe_start(q);
	queue_body_files_expire(q);
	commit_flush(q->writer);
}

/* ---- the store's service on each worker ------------------------------------------------ */

static int store_service_start(struct worker *w, void *arg, void **state)
{
	struct queue *q;
	int r = queue_open(&q, w, arg, w->index);
	if (r != 0) {
		snprintf(w->error, sizeof(w->error), "worker %u: cannot open its spool writer: %s",
			 w->index, strerror(-r));
		return r;
	}
	*state = q;
	return 0;
}

static void store_service_before_wait(struct worker *w, void *state)
{
	(void)w;
	queue_flush(state);
}

static bool store_service_idle(struct worker *w, void *state)
{
	(void)w;
	return queue_pending(state) == 0;
}

static void store_service_stop(struct worker *w, void *state)
{
	(void)w;
	queue_close(state);
}

const struct worker_service queue_service = {
	.name = "store",
	.start = store_service_start,
	.before_wait = store_service_before_wait,
	.idle = store_service_idle,
	.stop = store_service_stop,
	.metrics = store_service_metrics,
};
