#include "queue/recover.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/array.h"
#include "core/check.h"
#include "core/log.h"
#include "queue/segment.h"

/* A message seen begun and not yet committed, while scanning one writer. */
struct recover_pending {
	char id[RECORD_ID_LEN];
	bool used;
	struct record_envelope envelope;
	struct record_string *strings;
	uint64_t envelope_sequence, envelope_offset;
	struct queue_extent *extents;
	uint32_t nextents;
	size_t extents_cap;
	uint64_t body_len;
	uint64_t first_sequence, last_sequence;
};

/* Open addressing by id; removal by backward shift. */
struct recover_table {
	struct recover_pending *slots;
	size_t cap, count;
};

static size_t recover_slot(const struct recover_table *t, const char *id)
{
	return (size_t)XXH3_64bits(id, RECORD_ID_LEN) & (t->cap - 1);
}

static void recover_pending_free(struct recover_pending *p)
{
	free(p->strings);
	free(p->extents);
	memset(p, 0, sizeof(*p));
}

static int recover_table_grow(struct recover_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 1024;
	struct recover_pending *slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	struct recover_table bigger = {slots, cap, 0};
	for (size_t i = 0; i < t->cap; i++) {
		if (!t->slots[i].used)
			continue;
		size_t s = recover_slot(&bigger, t->slots[i].id);
		while (bigger.slots[s].used)
			s = (s + 1) & (cap - 1);
		bigger.slots[s] = t->slots[i];
		bigger.count++;
	}
	free(t->slots);
	*t = bigger;
	return 0;
}

static struct recover_pending *recover_find(struct recover_table *t, const char *id)
{
	if (t->cap == 0)
		return NULL;
	for (size_t s = recover_slot(t, id);; s = (s + 1) & (t->cap - 1)) {
		if (!t->slots[s].used)
			return NULL;
		if (memcmp(t->slots[s].id, id, RECORD_ID_LEN) == 0)
			return &t->slots[s];
	}
}

static void recover_remove(struct recover_table *t, struct recover_pending *p)
{
	recover_pending_free(p);
	t->count--;
	size_t hole = (size_t)(p - t->slots);
	for (size_t s = (hole + 1) & (t->cap - 1); t->slots[s].used; s = (s + 1) & (t->cap - 1)) {
		size_t home = recover_slot(t, t->slots[s].id);
		/* Move s into the hole unless its home lies cyclically in (hole, s]. */
		bool stays = hole <= s ? (home > hole && home <= s) : (home > hole || home <= s);
		if (stays)
			continue;
		t->slots[hole] = t->slots[s];
		memset(&t->slots[s], 0, sizeof(t->slots[s]));
		hole = s;
	}
}

static void recover_table_clear(struct recover_table *t, struct recover_stats *stats)
{
	for (size_t i = 0; i < t->cap; i++) {
		if (t->slots[i].used) {
			recover_pending_free(&t->slots[i]);
			stats->incomplete++;
		}
	}
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

struct recover_map {
	uint8_t *data;
	size_t size;
};

/*
 * The first good record of this segment past `from` (of type BATCH only,
 * if batch_only): its offset, and for a BATCH the start it names. False if
 * there is none.
 */
static bool recover_find_after(const uint8_t *data, size_t size, size_t from, uint64_t salt,
			       bool batch_only, size_t *at, size_t *end, uint64_t *batch_start)
{
	for (size_t off = (from + RECORD_ALIGN) & ~(size_t)(RECORD_ALIGN - 1);
	     off + RECORD_HEADER_SIZE <= size; off += RECORD_ALIGN) {
		/* Cheap filter first: a record carries the salt at offset 8. */
		uint64_t s;
		memcpy(&s, data + off + 8, sizeof(s));
		if (s != salt)
			continue;
		struct record_view v;
		if (record_frame(data + off, size - off, salt, &v) != RECORD_OK ||
		    v.type == RECORD_SEGMENT || (batch_only && v.type != RECORD_BATCH))
			continue;
		struct record_batch b = {0};
		if (v.type == RECORD_BATCH && record_decode_batch(&v, &b) != 0)
			continue;
		*at = off;
		*end = off + v.size;
		*batch_start = b.start;
		return true;
	}
	return false;
}

/*
 * The bad spot at `bad` is corruption when a whole batch that does not
 * contain it follows: acknowledged data changed. A BATCH record after it
 * that belongs to the batch holding the bad spot, and is the last thing in
 * the file, is the torn last batch whose pages landed out of order: its
 * sync never completed.
 */
static bool recover_is_corrupt(const uint8_t *data, size_t size, size_t good_end, size_t bad,
			       uint64_t salt)
{
	size_t at, end, more_at, more_end;
	uint64_t start, unused;
	if (!recover_find_after(data, size, bad, salt, true, &at, &end, &start))
		return false;
	/* The torn last batch can only begin where the last whole one ended. */
	if (start != good_end)
		return true;
	return recover_find_after(data, size, end - 1, salt, false, &more_at, &more_end, &unused);
}

/*
 * Only a writer's newest data can be a torn batch: a later segment of the
 * same writer holding a whole batch means this one's last batch was synced
 * before it (one batch in flight at a time), so damage here is corruption.
 */
static bool recover_later_has_batch(int dir_fd, const struct segment_file *files, int n, int i)
{
	for (int k = i + 1; k < n && files[k].worker == files[i].worker; k++) {
		int fd = openat(dir_fd, files[k].name, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0)
			continue;
		bool found = false;
		if (fstat(fd, &st) == 0 && st.st_size >= RECORD_HEADER_SIZE) {
			void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
			if (p != MAP_FAILED) {
				uint64_t salt;
				size_t at, end;
				uint64_t start;
				memcpy(&salt, (const uint8_t *)p + 8, sizeof(salt));
				found = recover_find_after(p, (size_t)st.st_size, 0, salt, true,
							   &at, &end, &start);
				munmap(p, (size_t)st.st_size);
			}
		}
		close(fd);
		if (found)
			return true;
	}
	return false;
}

static bool recover_nonzero_after(const uint8_t *data, size_t size, size_t from)
{
	static const uint8_t zeros[4096];
	for (size_t off = from; off < size; off += sizeof(zeros)) {
		size_t n = size - off < sizeof(zeros) ? size - off : sizeof(zeros);
		if (memcmp(data + off, zeros, n) != 0)
			return true;
	}
	return false;
}

struct recover_scan {
	const struct recover_hooks *hooks;
	struct recover_stats *stats;
	struct recover_table pending;
	struct record_string strings[RECORD_MAX_STRINGS];
	uint32_t worker;
};

static int recover_on_envelope(struct recover_scan *sc, const struct record_view *v,
			       uint64_t sequence, uint64_t offset)
{
	struct record_envelope env;
	if (record_decode_envelope(v, &env, sc->strings, RECORD_MAX_STRINGS) != 0)
		return -EINVAL;
	struct recover_pending *p = recover_find(&sc->pending, env.id);
	if (p != NULL) /* the same id begun twice: keep the later attempt */
		recover_remove(&sc->pending, p);
	if ((sc->pending.count + 1) * 10 > sc->pending.cap * 7 && recover_table_grow(&sc->pending))
		return -ENOMEM;
	size_t nstrings = (size_t)env.nparams + env.nrecipients;
	struct record_string *copy = malloc((nstrings ? nstrings : 1) * sizeof(*copy));
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, sc->strings, nstrings * sizeof(*copy));
	size_t s = recover_slot(&sc->pending, env.id);
	while (sc->pending.slots[s].used)
		s = (s + 1) & (sc->pending.cap - 1);
	p = &sc->pending.slots[s];
	memset(p, 0, sizeof(*p));
	p->used = true;
	memcpy(p->id, env.id, RECORD_ID_LEN);
	p->envelope = env;
	p->strings = copy;
	p->envelope_sequence = sequence;
	p->envelope_offset = offset;
	p->first_sequence = p->last_sequence = sequence;
	sc->pending.count++;
	return 0;
}

static int recover_on_body(struct recover_scan *sc, const struct record_view *v, uint64_t sequence,
			   uint64_t payload_offset)
{
	struct record_body body;
	if (record_decode_body(v, &body) != 0)
		return -EINVAL;
	struct recover_pending *p = recover_find(&sc->pending, body.id);
	if (p == NULL || body.chunk != p->nextents)
		return 0; /* a chunk of a message begun before a crash: dead */
	if (array_reserve(p->extents, p->extents_cap, (size_t)p->nextents + 1) != 0)
		return -ENOMEM;
	p->extents[p->nextents++] = (struct queue_extent){
		.sequence = sequence,
		.offset = payload_offset + (uint64_t)(body.data - v->payload),
		.len = body.len,
	};
	p->body_len += body.len;
	p->last_sequence = sequence;
	return 0;
}

static int recover_on_commit(struct recover_scan *sc, const struct record_view *v,
			     uint64_t sequence, uint64_t *committed_here)
{
	struct record_commit c;
	if (record_decode_commit(v, &c) != 0)
		return -EINVAL;
	struct recover_pending *p = recover_find(&sc->pending, c.id);
	if (p == NULL)
		return 0;
	int r = 0;
	if (c.nchunks == p->nextents && c.body_len == p->body_len) {
		struct recover_message m = {
			.worker = sc->worker,
			.envelope = &p->envelope,
			.strings = p->strings,
			.envelope_sequence = p->envelope_sequence,
			.envelope_offset = p->envelope_offset,
			.extents = p->extents,
			.nextents = p->nextents,
			.body_len = p->body_len,
			.first_sequence = p->first_sequence,
			.last_sequence = sequence,
		};
		r = sc->hooks->message(sc->hooks->arg, &m);
		sc->stats->messages++;
		(*committed_here)++;
	} else {
		log_event(LOG_LEVEL_ERROR,
			  "event=recover_inconsistent queue_id=%.16s chunks=%u/%u bytes=%llu/%llu",
			  c.id, p->nextents, c.nchunks, (unsigned long long)p->body_len,
			  (unsigned long long)c.body_len);
	}
	recover_remove(&sc->pending, p);
	return r;
}

/*
 * First pass over a mapped segment: frame every record (checksums and
 * salt) to find where valid data ends and judge what lies beyond. No record
 * is acted on before the whole segment is judged, so a quarantined segment
 * contributes nothing.
 */
static void recover_judge(const struct recover_map *map, struct recover_segment *seg,
			  uint64_t *salt_out)
{
	const uint8_t *data = map->data;
	size_t size = map->size, off = 0;
	struct record_view v;
	uint64_t salt = 0;
	enum record_status st = RECORD_END;
	if (size >= RECORD_HEADER_SIZE) {
		memcpy(&salt, data + 8, sizeof(salt)); /* the header record names it */
		st = record_frame(data, size, salt, &v);
		if (st == RECORD_OK) {
			struct record_segment hdr;
			if (v.type != RECORD_SEGMENT || record_decode_segment(&v, &hdr) != 0 ||
			    hdr.sequence != seg->sequence)
				st = RECORD_BAD;
			else
				off = v.size;
		}
	}
	/* Keep up to the end of the last whole batch; the header alone is a
	 * consistent (empty) segment. */
	size_t good_end = off;
	while (st == RECORD_OK && off < size) {
		st = record_frame(data + off, size - off, salt, &v);
		if (st != RECORD_OK)
			break;
		off += v.size;
		if (v.type == RECORD_BATCH)
			good_end = off;
	}
	*salt_out = salt;
	if (good_end == 0 && st != RECORD_OK) {
		/* No trustworthy header, so no salt to judge records by. A new
		 * segment whose first batch never synced holds nothing beyond
		 * its header; anything else is not ours to cut. */
		seg->end = 0;
		if (!recover_nonzero_after(data, size, 0))
			seg->verdict = RECOVER_CLEAN;
		else
			seg->verdict = recover_nonzero_after(data, size, RECORD_HEADER_SIZE * 2)
					       ? RECOVER_CORRUPT
					       : RECOVER_TORN;
		return;
	}
	seg->end = good_end;
	if (st != RECORD_OK && recover_is_corrupt(data, size, good_end, off, salt))
		/* A bad record, or zeros (a lost write), with a whole later batch
		 * after it: cutting here would throw acknowledged data away. */
		seg->verdict = RECOVER_CORRUPT;
	else
		/* Past the last whole batch: either the preallocated zeros, or
		 * the last batch, torn, whose sync never completed. */
		seg->verdict =
			recover_nonzero_after(data, size, good_end) ? RECOVER_TORN : RECOVER_CLEAN;
}

/* Second pass: act on the records of a segment judged usable, up to its end. */
static int recover_segment_records(struct recover_scan *sc, const struct recover_map *map,
				   struct recover_segment *seg, uint64_t salt)
{
	const uint8_t *data = map->data;
	struct record_view v;
	size_t off = 0;
	while (off < seg->end && record_frame(data + off, seg->end - off, salt, &v) == RECORD_OK) {
		int r = 0;
		switch (v.type) {
		case RECORD_ENVELOPE:
			r = recover_on_envelope(sc, &v, seg->sequence, off);
			break;
		case RECORD_BODY:
			r = recover_on_body(sc, &v, seg->sequence, off + RECORD_HEADER_SIZE);
			break;
		case RECORD_COMMIT:
			r = recover_on_commit(sc, &v, seg->sequence, &seg->messages);
			break;
		case RECORD_RCPT_DELIVERED:
		case RECORD_RCPT_DEFERRED:
		case RECORD_RCPT_FAILED: {
			struct record_rcpt_state rs;
			if (record_decode_rcpt_state(&v, &rs) != 0)
				r = -EINVAL;
			else if (sc->hooks->rcpt_state != NULL)
				r = sc->hooks->rcpt_state(sc->hooks->arg, v.type, &rs, sc->worker,
							  seg->sequence);
			break;
		}
		case RECORD_MESSAGE_DONE: {
			struct record_id rid;
			if (record_decode_id(&v, &rid) != 0)
				r = -EINVAL;
			else if (sc->hooks->message_done != NULL)
				r = sc->hooks->message_done(sc->hooks->arg, &rid, sc->worker,
							    seg->sequence);
			break;
		}
		default: /* SEGMENT header, ABORT: nothing to rebuild */
			break;
		}
		if (r == -EINVAL) {
			/* Checksummed yet undecodable: a writer bug, not the disk. */
			log_event(
				LOG_LEVEL_ERROR,
				"event=record_undecodable segment=w%03u-%012llu offset=%zu type=%d",
				seg->worker, (unsigned long long)seg->sequence, off, (int)v.type);
			r = 0;
		}
		if (r != 0)
			return r;
		sc->stats->records++;
		off += v.size;
	}
	return 0;
}

/*
 * Some listed segments vanished under a read-only scan. The view may
 * then be wrong in two ways, and the caller reads again:
 *  - copies of their messages were written (and synced) before the
 *    delete into a newer segment of the same writer, read after the
 *    vanished one unless that segment was created after the listing;
 *  - a vanished segment held outcomes of a message read earlier in the
 *    scan. It is deleted only after that message's data segments, so one
 *    of the segments already read is gone too.
 * A vanished segment of finished mail alone leaves the view right.
 */
static bool recover_listing_stale(int dir_fd, const struct segment_file *files, int n)
{
	bool any = false;
	for (int i = 0; i < n && !any; i++)
		any = files[i].vanished;
	if (!any)
		return false;
	struct segment_file *now;
	int m = segment_list(dir_fd, &now);
	if (m < 0)
		return true;
	bool stale = false;
	for (int i = 0; i < n && !stale; i++) {
		if (!files[i].vanished) {
			stale = m == 0 || bsearch(&files[i], now, (size_t)m, sizeof(*now),
						  segment_file_compare) == NULL;
			continue;
		}
		uint64_t newest = 0; /* of this writer, in the listing read */
		for (int k = 0; k < n; k++)
			if (files[k].worker == files[i].worker && files[k].sequence > newest)
				newest = files[k].sequence;
		for (int k = 0; k < m && !stale; k++)
			stale = now[k].worker == files[i].worker && now[k].sequence > newest;
	}
	free(now);
	return stale;
}

/* Writers from the highest number down, each in sequence order. */
static int recover_order(const void *a, const void *b)
{
	const struct segment_file *x = a, *y = b;
	if (x->worker != y->worker)
		return x->worker < y->worker ? 1 : -1;
	return (x->sequence > y->sequence) - (x->sequence < y->sequence);
}

int recover_spool(int dir_fd, int quarantine_fd, bool read_only, const struct recover_hooks *hooks,
		  struct recover_stats *stats)
{
	memset(stats, 0, sizeof(*stats));
	struct segment_file *files;
	int n = segment_list(dir_fd, &files);
	if (n < 0)
		return n;
	/* Outcomes of a message are written by its owner. That is its own
	 * writer, except after a restart with fewer workers: then writer w's
	 * messages belong to w % workers, always a lower number. Reading the
	 * highest writers first, every message is known before any outcome
	 * record that names it. */
	if (n > 1)
		qsort(files, (size_t)n, sizeof(*files), recover_order);
	struct recover_scan *sc = calloc(1, sizeof(*sc));
	struct recover_map *maps = calloc(n > 0 ? (size_t)n : 1, sizeof(*maps));
	if (sc == NULL || maps == NULL) {
		free(sc);
		free(maps);
		free(files);
		return -ENOMEM;
	}
	sc->hooks = hooks;
	sc->stats = stats;
	int status = 0;
	int first_of_worker = 0;
	for (int i = 0; i < n && status == 0; i++) {
		struct segment_file *f = &files[i];
		if (i > 0 && f->worker != files[i - 1].worker) {
			/* A new writer: what the last one left begun never committed.
			 * Its mappings are no longer referenced. */
			recover_table_clear(&sc->pending, stats);
			for (int k = first_of_worker; k < i; k++) {
				if (maps[k].data != NULL)
					munmap(maps[k].data, maps[k].size);
				maps[k].data =
					NULL; /* never unmap twice: the range may be reused */
			}
			first_of_worker = i;
		}
		sc->worker = f->worker;
		struct recover_segment seg = {
			.worker = f->worker, .sequence = f->sequence, .name = f->name};
		int fd = openat(dir_fd, f->name, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		struct stat stbuf;
		if (fd < 0 && errno == ENOENT && read_only) {
			/* A running ferryd deleted it since the listing: its
			 * messages finished, or were copied forward into a
			 * newer segment of the same writer (before the delete).
			 * Skipped; checked once the listing is read. */
			f->vanished = true;
			continue;
		}
		if (fd < 0 || fstat(fd, &stbuf) != 0) {
			log_event(LOG_LEVEL_ERROR,
				  "event=segment_unreadable segment=%s error=\"%s\"", f->name,
				  strerror(errno));
			if (fd >= 0)
				close(fd);
			seg.verdict = RECOVER_UNREADABLE;
			stats->unreadable++;
			if (hooks->segment != NULL)
				hooks->segment(hooks->arg, &seg);
			continue;
		}
		seg.file_size = (uint64_t)stbuf.st_size;
		stats->segments++;
		if (stbuf.st_size > 0) {
			void *p = mmap(NULL, (size_t)stbuf.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
			if (p != MAP_FAILED) {
				maps[i].data = p;
				maps[i].size = (size_t)stbuf.st_size;
				madvise(p, maps[i].size, MADV_SEQUENTIAL);
			}
		}
		uint64_t salt = 0;
		if (maps[i].data != NULL) {
			recover_judge(&maps[i], &seg, &salt);
			if (seg.verdict == RECOVER_TORN &&
			    recover_later_has_batch(dir_fd, files, n, i))
				seg.verdict = RECOVER_CORRUPT;
			if (seg.verdict != RECOVER_CORRUPT)
				status = recover_segment_records(sc, &maps[i], &seg, salt);
		} else {
			seg.verdict = stbuf.st_size == 0 ? RECOVER_CLEAN : RECOVER_UNREADABLE;
		}
		stats->bytes += seg.end;
		if (seg.verdict == RECOVER_TORN) {
			stats->torn++;
			log_event(LOG_LEVEL_WARN,
				  "event=torn_tail segment=%s offset=%llu note=\"an unacknowledged "
				  "last batch was cut off\"",
				  f->name, (unsigned long long)seg.end);
			if (!read_only && ftruncate(fd, (off_t)seg.end) == 0) {
				fdatasync(fd);
				seg.file_size = seg.end;
			}
		} else if (seg.verdict == RECOVER_CLEAN && !read_only && seg.file_size > seg.end &&
			   seg.end > 0) {
			/* Never appended to again: give back the preallocated rest
			 * (only zeros are cut, so nothing is judged differently). */
			if (ftruncate(fd, (off_t)seg.end) == 0)
				seg.file_size = seg.end;
		} else if (seg.verdict == RECOVER_CORRUPT) {
			stats->corrupt++;
			log_event(
				LOG_LEVEL_ERROR,
				"event=segment_corrupt segment=%s offset=%llu note=\"a bad record "
				"is followed by good ones; %s\"",
				f->name, (unsigned long long)seg.end,
				read_only ? "its messages are left out of this view"
					  : "the segment is moved to quarantine/ and its "
					    "messages are not served");
			if (!read_only && segment_quarantine(dir_fd, quarantine_fd, f->name) != 0)
				log_event(LOG_LEVEL_ERROR, "event=quarantine_failed segment=%s",
					  f->name);
		}
		close(fd);
		if (hooks->segment != NULL)
			hooks->segment(hooks->arg, &seg);
	}
	recover_table_clear(&sc->pending, stats);
	if (status == 0 && read_only && recover_listing_stale(dir_fd, files, n))
		status = -ESTALE;
	for (int k = 0; k < n; k++)
		if (maps[k].data != NULL)
			munmap(maps[k].data, maps[k].size);
	free(maps);
	free(files);
	free(sc);
	return status;
}

bool recover_copy_replaces(const struct recover_place *kept, const struct recover_place *copy)
{
	if (copy->writer != kept->writer)
		return copy->writer < kept->writer;
	if (copy->sequence != kept->sequence)
		return copy->sequence > kept->sequence;
	return copy->offset > kept->offset;
}

bool recover_rcpt_apply(struct recover_rcpt *r, enum record_type type, uint32_t attempts)
{
	CHECK(type == RECORD_RCPT_DELIVERED || type == RECORD_RCPT_DEFERRED ||
	      type == RECORD_RCPT_FAILED);
	if (recover_rcpt_ended(r->state))
		return false;
	if (attempts > r->attempts)
		r->attempts = attempts;
	if (type == RECORD_RCPT_DEFERRED) {
		r->state = RECOVER_RCPT_DEFERRED;
		return false;
	}
	r->state = type == RECORD_RCPT_DELIVERED ? RECOVER_RCPT_DELIVERED : RECOVER_RCPT_FAILED;
	return true;
}

int recover_outcomes_keep(struct recover_outcomes *kept, const char *id, enum record_type type,
			  uint16_t recipient, uint32_t attempts)
{
	if (array_reserve(kept->items, kept->cap, kept->count + 1) != 0)
		return -ENOMEM;
	struct recover_outcome *o = &kept->items[kept->count++];
	memcpy(o->id, id, RECORD_ID_LEN);
	o->type = type;
	o->recipient = recipient;
	o->attempts = attempts;
	return 0;
}

void recover_outcomes_free(struct recover_outcomes *kept)
{
	free(kept->items);
	*kept = (struct recover_outcomes){0};
}
