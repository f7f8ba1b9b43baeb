/*
 * config_keys — the table of config.h's keys, private to the config
 * module's files: config.c defines it and parses the file by it,
 * config_print.c prints the effective configuration by it, and
 * config_reload.c compares a reload's configuration with the running one
 * by it. Each entry says where its value lives in struct config (offset)
 * and what type that field is.
 */
#ifndef FERRY_CORE_CONFIG_KEYS_H
#define FERRY_CORE_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum config_type {
	CONFIG_STRING,   /* char array */
	CONFIG_UINT,     /* uint32_t or unsigned */
	CONFIG_DURATION, /* uint32_t milliseconds */
	CONFIG_SIZE,     /* uint64_t octets */
	CONFIG_COUNT,    /* uint64_t, a plain number */
	CONFIG_LIST,     /* struct config_list */
	CONFIG_LISTEN,   /* the listen array */
	CONFIG_LOG_LEVEL,
	CONFIG_LOG_DESTINATION,
};

struct config_key {
	const char *section;
	const char *name;
	enum config_type type;
	size_t offset;
	size_t string_size; /* CONFIG_STRING */
	/* CONFIG_UINT, CONFIG_DURATION (ms), CONFIG_SIZE; CONFIG_STRING: min is
	 * its shortest length (0: "" is a value, e.g. "none") */
	uint64_t min, max;
	bool restart; /* a running ferryd keeps its value until restarted */
};

/* Every key (config_nkeys of them), in the order config_print shows them;
 * an entry's index is its slot in struct config's set_in_file and
 * line_in_file. */
extern const struct config_key config_keys[];
extern const size_t config_nkeys;

#endif
