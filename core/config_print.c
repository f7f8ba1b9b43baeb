/*
 * config_print — the effective configuration in the file's own syntax
 * (config.h), key by key from the key table (config_keys.h), then the
 * [domain NAME] sections (config_domain.h).
 */
#include "core/config.h"
#include "core/config_domain.h"
#include "core/config_keys.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"

static void config_print_duration(FILE *out, uint32_t ms)
{
	if (ms % 1000 == 0)
		fprintf(out, "%us\n", ms / 1000);
	else
		fprintf(out, "%ums\n", ms);
}

void config_print(const struct config *cfg, FILE *out)
{
	fprintf(out, "# ferryd effective configuration (from %s)\n", cfg->source);
	const char *section = "";
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *k = &config_keys[i];
		const char *field = (const char *)cfg + k->offset;
		if (strcmp(section, k->section) != 0) {
			section = k->section;
			fprintf(out, "\n[%s]\n", section);
		}
		fprintf(out, "%s = ", k->name);
		switch (k->type) {
		case CONFIG_STRING:
			fprintf(out, "%s\n", field);
			break;
		case CONFIG_UINT:
			fprintf(out, "%u\n", *(const uint32_t *)field);
			break;
		case CONFIG_DURATION:
			config_print_duration(out, *(const uint32_t *)field);
			break;
		case CONFIG_SIZE:
		case CONFIG_COUNT:
			fprintf(out, "%llu\n", (unsigned long long)*(const uint64_t *)field);
			break;
		case CONFIG_LIST: {
			const struct config_list *list = (const struct config_list *)field;
			for (size_t j = 0; j < list->count; j++)
				fprintf(out, "%s%s", j ? ", " : "", list->items[j].value);
			fputc('\n', out);
			break;
		}
		case CONFIG_LISTEN:
			for (unsigned j = 0; j < cfg->nlisten; j++)
				fprintf(out, "%s%s", j ? ", " : "", cfg->listen[j].text);
			fputc('\n', out);
			break;
		case CONFIG_LOG_LEVEL:
			fprintf(out, "%s\n", log_level_name((enum log_level) * (const int *)field));
			break;
		case CONFIG_LOG_DESTINATION:
			fprintf(out, "%s\n",
				*(const int *)field == LOG_TO_SYSLOG ? "syslog" : "stderr");
			break;
		}
	}
	config_domain_print(cfg, out);
}
