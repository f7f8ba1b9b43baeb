#include "core/fault.h"

#ifdef FERRY_FAULT_POINTS
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

static const char *const fault_env[FAULT_NPOINTS] = {"FERRY_FAULT_FSYNC"};
static atomic_ulong fault_counts[FAULT_NPOINTS];

bool fault_fire(enum fault_point point)
{
	unsigned long n = atomic_fetch_add(&fault_counts[point], 1) + 1;
	const char *list = getenv(fault_env[point]);
	if (list == NULL)
		return false;
	for (const char *p = list; *p != '\0';) {
		char *end;
		unsigned long v = strtoul(p, &end, 10);
		if (end == p)
			return false;
		if (v == n)
			return true;
		p = *end == ',' ? end + 1 : end;
		if (*end != ',' && *end != '\0')
			return false;
	}
	return false;
}

static int *fault_taken;
static size_t fault_ntaken;

void fault_take_descriptors(void)
{
	const char *text = getenv("FERRY_FAULT_DESCRIPTORS");
	if (text == NULL || fault_taken != NULL)
		return;
	size_t left = strtoul(text, NULL, 10), cap = 0;
	for (;;) {
		if (fault_ntaken == cap) {
			size_t more = cap == 0 ? 1024 : cap * 2;
			int *grown = realloc(fault_taken, more * sizeof(*grown));
			if (grown == NULL)
				break;
			fault_taken = grown;
			cap = more;
		}
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			break; /* EMFILE: every descriptor is taken */
		fault_taken[fault_ntaken++] = fd;
	}
	while (left-- > 0 && fault_ntaken > 0)
		close(fault_taken[--fault_ntaken]);
	/* The test waits for this line: from here on, descriptors are short. */
	log_event(LOG_LEVEL_WARN, "event=fault_descriptors_taken taken=%zu", fault_ntaken);
}

void fault_release_descriptors(void)
{
	while (fault_ntaken > 0)
		close(fault_taken[--fault_ntaken]);
	free(fault_taken);
	fault_taken = NULL;
}
#endif
