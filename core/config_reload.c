/*
 * config_reload — a reload's side of the configuration (config.h): which
 * restart-only keys a new file changes (config_restart_changes), and the
 * running values those keys keep when neither file sets them
 * (config_keep_running_values). Both walk the key table (config_keys.h).
 */
#include "core/config.h"
#include "core/config_keys.h"

#include <stdio.h>
#include <string.h>

#include "core/check.h"

static bool config_lists_equal(const struct config_list *a, const struct config_list *b)
{
	if (a->count != b->count)
		return false;
	for (size_t i = 0; i < a->count; i++)
		if (strcmp(a->items[i].value, b->items[i].value) != 0)
			return false;
	return true;
}

/* By address, not text: "[::1]:25" and "[0:0:0:0:0:0:0:1]:25" are one socket. */
static bool config_listens_equal(const struct config *a, const struct config *b)
{
	if (a->nlisten != b->nlisten)
		return false;
	for (unsigned i = 0; i < a->nlisten; i++)
		if (a->listen[i].addr_len != b->listen[i].addr_len ||
		    memcmp(&a->listen[i].addr, &b->listen[i].addr, a->listen[i].addr_len) != 0)
			return false;
	return true;
}

static bool config_values_equal(const struct config_key *k, const struct config *a,
				const struct config *b)
{
	const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
	switch (k->type) {
	case CONFIG_STRING:
		return strcmp(fa, fb) == 0;
	case CONFIG_UINT:
	case CONFIG_DURATION:
		return *(const uint32_t *)fa == *(const uint32_t *)fb;
	case CONFIG_SIZE:
	case CONFIG_COUNT:
		return *(const uint64_t *)fa == *(const uint64_t *)fb;
	case CONFIG_LIST:
		return config_lists_equal((const struct config_list *)fa,
					  (const struct config_list *)fb);
	case CONFIG_LISTEN:
		return config_listens_equal(a, b);
	case CONFIG_LOG_LEVEL:
	case CONFIG_LOG_DESTINATION:
		return *(const int *)fa == *(const int *)fb;
	}
	return false;
}

size_t config_restart_changes(const struct config *running, const struct config *next, char *out,
			      size_t size)
{
	size_t changes = 0, len = 0; /* len: what the names take, cut or not */
	if (size > 0)
		out[0] = '\0';
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *k = &config_keys[i];
		if (!k->restart || config_values_equal(k, running, next))
			continue;
		bool room = len < size;
		int n = snprintf(room ? out + len : NULL, room ? size - len : 0, "%s[%s] %s",
				 changes > 0 ? ", " : "", k->section, k->name);
		len += (size_t)n;
		changes++;
	}
	if (size > 0 && len >= size) {
		size_t end = size - 1, dots = end < 3 ? end : 3;
		memcpy(out + end - dots, "...", dots);
		out[end] = '\0';
	}
	return changes;
}

void config_keep_running_values(struct config *next, const struct config *running)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *k = &config_keys[i];
		if (!k->restart)
			continue;
		/* Copying a list would need memory, which a reload must not fail
		 * for here; no list is restart-only. */
		CHECK(k->type != CONFIG_LIST);
		if (next->set_in_file[i] || running->set_in_file[i])
			continue;
		char *to = (char *)next + k->offset;
		const char *from = (const char *)running + k->offset;
		switch (k->type) {
		case CONFIG_STRING:
			memcpy(to, from, k->string_size);
			break;
		case CONFIG_UINT:
		case CONFIG_DURATION:
			*(uint32_t *)to = *(const uint32_t *)from;
			break;
		case CONFIG_SIZE:
		case CONFIG_COUNT:
			*(uint64_t *)to = *(const uint64_t *)from;
			break;
		case CONFIG_LIST:
			break;
		case CONFIG_LISTEN:
			memcpy(next->listen, running->listen, sizeof(next->listen));
			next->nlisten = running->nlisten;
			break;
		case CONFIG_LOG_LEVEL:
		case CONFIG_LOG_DESTINATION:
			*(int *)to = *(const int *)from;
			break;
		}
	}
	if (next->workers_per_cpu && running->workers_per_cpu)
		next->workers = running->workers;
	/* As loading does: a max_connections kept from the run (lowered at
	 * start to fit RLIMIT_NOFILE) caps what a client may hold, as it
	 * capped the running value. */
	if (next->max_connections_per_client > next->max_connections)
		next->max_connections_per_client = next->max_connections;
}
