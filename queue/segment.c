#include "queue/segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/array.h"
#include "queue/record.h"

int segment_mkdir(const char *path)
{
	if (mkdir(path, SEGMENT_DIR_MODE) != 0)
		return errno == EEXIST ? 0 : -errno;
	/* mkdir applied the umask; ours, just made, gets the mode we chose. */
	return chmod(path, SEGMENT_DIR_MODE) == 0 ? 0 : -errno;
}

int segment_dir_open(const char *spool_dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/segments", spool_dir);
	int r = segment_mkdir(path);
	if (r != 0)
		return r;
	snprintf(path, sizeof(path), "%s/quarantine", spool_dir);
	r = segment_mkdir(path);
	if (r != 0)
		return r;
	snprintf(path, sizeof(path), "%s/segments", spool_dir);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

void segment_name(char out[SEGMENT_NAME_MAX], uint32_t worker, uint64_t sequence)
{
	snprintf(out, SEGMENT_NAME_MAX, "w%03u-%012llu.seg", worker, (unsigned long long)sequence);
}

/* Exactly what segment_name() writes: "w" 3 digits "-" 12 digits ".seg".
 * (sscanf alone would also take signs and spaces, and a file it misread
 * would be recovered, counted and deleted under another name.) */
bool segment_parse_name(const char *name, uint32_t *worker, uint64_t *sequence)
{
	if (strlen(name) != 21 || name[0] != 'w' || name[4] != '-' ||
	    strcmp(name + 17, ".seg") != 0)
		return false;
	uint32_t w = 0;
	uint64_t seq = 0;
	for (int i = 1; i < 4; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		w = w * 10 + (uint32_t)(name[i] - '0');
	}
	for (int i = 5; i < 17; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		seq = seq * 10 + (uint64_t)(name[i] - '0');
	}
	*worker = w;
	*sequence = seq;
	return true;
}

int segment_file_compare(const void *a, const void *b)
{
	const struct segment_file *x = a, *y = b;
	if (x->worker != y->worker)
		return x->worker < y->worker ? -1 : 1;
	if (x->sequence != y->sequence)
		return x->sequence < y->sequence ? -1 : 1;
	return 0;
}

int segment_list(int dir_fd, struct segment_file **out)
{
	int fd = dup(dir_fd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		int e = -errno;
		close(fd);
		return e;
	}
	rewinddir(d);
	struct segment_file *list = NULL;
	size_t n = 0, cap = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		uint32_t worker;
		uint64_t seq;
		if (!segment_parse_name(e->d_name, &worker, &seq))
			continue;
		if (array_reserve(list, cap, n + 1) != 0) {
			free(list);
			closedir(d);
			return -ENOMEM;
		}
		list[n].worker = worker;
		list[n].sequence = seq;
		list[n].vanished = false;
		snprintf(list[n].name, sizeof(list[n].name), "%s", e->d_name);
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(list, n, sizeof(*list), segment_file_compare);
	*out = list;
	return (int)n;
}

/* A random 64-bit salt (getrandom). Never 0. */
static uint64_t segment_new_salt(void)
{
	uint64_t salt = 0;
	while (salt == 0) {
		if (getrandom(&salt, sizeof(salt), 0) != (ssize_t)sizeof(salt)) {
			/* No entropy source: time and address still differ per segment. */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			salt = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec ^
			       (uint64_t)(uintptr_t)&ts;
		}
	}
	return salt;
}

int segment_create(int dir_fd, uint32_t worker, uint64_t sequence, uint64_t size,
		   struct segment_owner owner, uint64_t *salt, uint64_t *data_offset)
{
	char name[SEGMENT_NAME_MAX];
	segment_name(name, worker, sequence);
	int fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, SEGMENT_FILE_MODE);
	if (fd < 0)
		return -errno;
	/* Not the umask's: ferryctl --spool in ferryd's group reads it. And
	 * not root's, when a worker rolls to a new segment before ferryd has
	 * given up root: its user must be able to read it back later. */
	if (fchmod(fd, SEGMENT_FILE_MODE) != 0 ||
	    ((owner.uid != (uid_t)-1 || owner.gid != (gid_t)-1) &&
	     fchown(fd, owner.uid, owner.gid) != 0)) {
		int e = -errno;
		unlinkat(dir_fd, name, 0);
		close(fd);
		return e;
	}
	/* Preallocate: appends then never change the file size. A file system
	 * without fallocate still works, only with costlier syncs. */
	if (fallocate(fd, 0, 0, (off_t)size) != 0 && errno != EOPNOTSUPP) {
		int e = -errno;
		unlinkat(dir_fd, name, 0);
		close(fd);
		return e;
	}
	*salt = segment_new_salt();
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct record_segment seg = {
		.worker = worker,
		.sequence = sequence,
		.created_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
	};
	uint8_t header[64];
	size_t n = record_encode_segment(header, sizeof(header), *salt, &seg);
	/* The header is synced on its own, once per segment: recovery must
	 * always find the salt of a segment that holds anything. */
	if (n == 0 || pwrite(fd, header, n, 0) != (ssize_t)n || fdatasync(fd) != 0) {
		int e = n == 0 ? -EINVAL : -errno;
		unlinkat(dir_fd, name, 0);
		close(fd);
		return e ? e : -EIO;
	}
	*data_offset = n;
	return fd;
}

int segment_quarantine(int dir_fd, int quarantine_fd, const char *name)
{
	/* Never over an earlier quarantined file of the same name (a sequence
	 * number can come back once its segment is gone from segments/):
	 * that one is evidence too. */
	char target[SEGMENT_NAME_MAX + 16];
	snprintf(target, sizeof(target), "%s", name);
	for (unsigned n = 1;; n++) {
		int r = renameat2(dir_fd, name, quarantine_fd, target, RENAME_NOREPLACE);
		if (r != 0 && errno == EINVAL) { /* no RENAME_NOREPLACE here: look first */
			if (faccessat(quarantine_fd, target, F_OK, 0) == 0)
				errno = EEXIST;
			else
				r = renameat(dir_fd, name, quarantine_fd, target);
		}
		if (r == 0)
			break;
		if (errno != EEXIST || n > 1000)
			return -errno;
		snprintf(target, sizeof(target), "%s.%u", name, n);
	}
	fsync(quarantine_fd);
	fsync(dir_fd);
	return 0;
}
