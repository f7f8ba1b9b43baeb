/*
 * config_domain — the [domain NAME] sections, private to config.c, which
 * reads the file and hands each such section and its keys here. What other
 * modules may use (struct config_domain, config_domain_find) is in
 * config.h.
 *
 * Errors are returned as -EINVAL with `why` (why_size bytes) saying what
 * is wrong; config.c adds the file, the line and the key.
 */
#ifndef FERRY_CORE_CONFIG_DOMAIN_H
#define FERRY_CORE_CONFIG_DOMAIN_H

#include "core/config.h"

/* The built-in entries (demo.test). 0 or -ENOMEM. */
int config_domain_defaults(struct config *cfg);

/* A [domain NAME] header on `line`; `name` is what follows "domain" in
 * the brackets. The first one of a file clears the built-in entries.
 * Returns the new entry's index in cfg->domains, or -EINVAL (a bad name,
 * a section given twice) or -ENOMEM. */
int config_domain_begin(struct config *cfg, const char *name, unsigned line, char *why,
			size_t why_size);

/* `key = value` in that section. `keys_set` (0 at the section's start)
 * remembers the keys given, so that a second one is an error. */
int config_domain_set(struct config_domain *d, const char *key, const char *value,
		      uint32_t *keys_set, char *why, size_t why_size);

/* Every entry as a [domain NAME] section, in the file's syntax. */
void config_domain_print(const struct config *cfg, FILE *out);

void config_domain_free(struct config *cfg);

/* Index the sections by name for config_domain_find (at the end of a
 * load). Without memory it leaves none: the lookup scans. */
void config_domain_index(struct config *cfg);

#endif
