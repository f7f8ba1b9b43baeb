#include "core/array.h"
#include "core/config.h"
#include "core/config_domain.h"
#include "core/config_keys.h"
#include "core/cpuset.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

#define KEY_ENTRY(sec, name_text, type, field, size, lo, hi, restart)                              \
	{                                                                                          \
		sec, name_text, type, offsetof(struct config, field), size, lo, hi, restart        \
	}
#define FIELD_SIZE(field) sizeof(((struct config *)0)->field)
#define KEY_STRING(sec, name, field)                                                               \
	KEY_ENTRY(sec, #name, CONFIG_STRING, field, FIELD_SIZE(field), 1, 0, false)
#define KEY_STRING_OR_EMPTY(sec, name, field)                                                      \
	KEY_ENTRY(sec, #name, CONFIG_STRING, field, FIELD_SIZE(field), 0, 0, false)
#define KEY(sec, name, type, field, lo, hi) KEY_ENTRY(sec, #name, type, field, 0, lo, hi, false)
/* The same for the keys that only a restart changes (config_restart_changes). */
#define KEY_STRING_RESTART(sec, name, field)                                                       \
	KEY_ENTRY(sec, #name, CONFIG_STRING, field, FIELD_SIZE(field), 1, 0, true)
#define KEY_STRING_OR_EMPTY_RESTART(sec, name, field)                                              \
	KEY_ENTRY(sec, #name, CONFIG_STRING, field, FIELD_SIZE(field), 0, 0, true)
#define KEY_RESTART(sec, name, type, field, lo, hi)                                                \
	KEY_ENTRY(sec, #name, type, field, 0, lo, hi, true)

#define CONFIG_DAY_MS 86400000u

/* The one table of keys: parsing, duplicates, printing and reloads all walk it. */
const struct config_key config_keys[] = {
	KEY_STRING("server", hostname, hostname),
	KEY_RESTART("server", workers, CONFIG_UINT, workers, 0, 256),
	KEY_RESTART("server", listen, CONFIG_LISTEN, listen, 0, 0),
	KEY_RESTART("server", listen_backlog, CONFIG_UINT, listen_backlog, 1, 65535),
	KEY("server", greeting_delay, CONFIG_DURATION, greeting_delay_ms, 0, 60000),
	KEY("server", shutdown_timeout, CONFIG_DURATION, shutdown_timeout_ms, 0, 3600000),
	KEY_STRING_OR_EMPTY_RESTART("server", user, user),
	KEY_STRING_OR_EMPTY_RESTART("server", group, group),
	KEY_RESTART("limits", max_connections, CONFIG_UINT, max_connections, 1, 10000000),
	KEY_RESTART("limits", max_connections_per_client, CONFIG_UINT, max_connections_per_client,
		    1, 10000000),
	KEY_RESTART("limits", max_connection_rate_per_client, CONFIG_UINT,
		    max_connection_rate_per_client, 0, 10000000),
	KEY("limits", max_commands_per_session, CONFIG_UINT, max_commands_per_session, 10,
	    100000000),
	KEY("limits", max_messages_per_session, CONFIG_UINT, max_messages_per_session, 1,
	    100000000),
	KEY("limits", max_recipients, CONFIG_UINT, max_recipients, 1, CONFIG_MAX_RECIPIENTS),
	KEY("limits", recipient_overshoot, CONFIG_UINT, recipient_overshoot, 0, 100000000),
	KEY("limits", max_errors, CONFIG_UINT, max_errors, 1, 100000),
	KEY("limits", max_command_line, CONFIG_UINT, max_command_line, 512, 65536),
	KEY("limits", max_text_line, CONFIG_UINT, max_text_line, 1000, 1048576),
	KEY("limits", max_message_size, CONFIG_SIZE, max_message_size, 1024, (uint64_t)4 << 30),
	KEY("limits", max_input_held, CONFIG_SIZE, max_input_held, 4096, 64u << 20),
	KEY("limits", max_output_queue, CONFIG_SIZE, max_output_queue, 4096, 64u << 20),
	KEY("limits", idle_timeout, CONFIG_DURATION, idle_timeout_ms, 1000, 3600000),
	KEY("limits", data_timeout, CONFIG_DURATION, data_timeout_ms, 1000, 3600000),
	KEY("limits", command_deadline, CONFIG_DURATION, command_deadline_ms, 1000, 3600000),
	KEY("limits", min_data_rate, CONFIG_UINT, min_data_rate, 0, 1u << 30),
	KEY("relay", relay_domains, CONFIG_LIST, relay_domains, 0, 0),
	KEY("relay", trusted_networks, CONFIG_LIST, trusted_networks, 0, 0),
	KEY_STRING("relay", postmaster, postmaster),
	KEY_STRING_RESTART("spool", directory, spool_dir),
	KEY_RESTART("spool", segment_size, CONFIG_SIZE, segment_size, 4u << 20, (uint64_t)1 << 32),
	KEY_RESTART("spool", group_commit_bytes, CONFIG_SIZE, group_commit_bytes, 64u << 10,
		    64u << 20),
	KEY_RESTART("spool", max_size, CONFIG_SIZE, spool_max_size, 0, UINT64_MAX),
	KEY_RESTART("spool", max_messages, CONFIG_COUNT, spool_max_messages, 0, UINT64_MAX),
	KEY_RESTART("spool", min_free_disk, CONFIG_SIZE, spool_min_free, 0, UINT64_MAX),
	KEY_RESTART("spool", shards, CONFIG_UINT, shards, 0, 65536),
	KEY_RESTART("spool", compact_threshold, CONFIG_UINT, spool_compact_threshold, 0, 100),
	KEY_STRING_OR_EMPTY("delivery", source_address, source_address),
	KEY_STRING_OR_EMPTY("delivery", relayhost, relayhost),
	KEY("delivery", connect_timeout, CONFIG_DURATION, connect_timeout_ms, 1000, 3600000),
	KEY("delivery", greeting_timeout, CONFIG_DURATION, greeting_timeout_ms, 1000, 3600000),
	KEY("delivery", command_timeout, CONFIG_DURATION, command_timeout_ms, 1000, 3600000),
	KEY("delivery", data_init_timeout, CONFIG_DURATION, data_init_timeout_ms, 1000, 3600000),
	KEY("delivery", data_block_timeout, CONFIG_DURATION, data_block_timeout_ms, 1000, 3600000),
	KEY("delivery", data_done_timeout, CONFIG_DURATION, data_done_timeout_ms, 1000, 3600000),
	KEY("delivery", connection_reuse_time, CONFIG_DURATION, connection_reuse_time_ms, 0,
	    300000),
	KEY("delivery", retry_initial, CONFIG_DURATION, retry_initial_ms, 1000, CONFIG_DAY_MS),
	KEY("delivery", retry_factor, CONFIG_UINT, retry_factor, 1, 10),
	KEY("delivery", retry_max, CONFIG_DURATION, retry_max_ms, 1000, 30 * CONFIG_DAY_MS),
	KEY("delivery", max_queue_lifetime, CONFIG_DURATION, max_queue_lifetime_ms, 60000,
	    30 * CONFIG_DAY_MS),
	KEY("delivery", concurrency, CONFIG_UINT, concurrency, 1, 1000),
	KEY_RESTART("delivery", max_outbound_connections, CONFIG_UINT, max_outbound_connections, 1,
		    1000000),
	KEY("delivery", recipients_per_transaction, CONFIG_UINT, recipients_per_transaction, 1,
	    CONFIG_MAX_RECIPIENTS),
	KEY("delivery", max_received_headers, CONFIG_UINT, max_received_headers, 1, 1000),
	KEY("delivery", destination_failures, CONFIG_UINT, destination_failures, 1, 1000),
	KEY("delivery", destination_backoff, CONFIG_DURATION, destination_backoff_ms, 1000,
	    CONFIG_DAY_MS),
	KEY_STRING_OR_EMPTY_RESTART("delivery", dns_servers, dns_servers),
	KEY("delivery", smtp_port, CONFIG_UINT, smtp_port, 1, 65535),
	KEY("etrn", max_per_session, CONFIG_UINT, etrn_max_per_session, 1, 100000),
	KEY_RESTART("etrn", max_rate_per_client, CONFIG_UINT, etrn_max_rate_per_client, 0, 1000000),
	KEY("etrn", flood_delay, CONFIG_DURATION, etrn_flood_delay_ms, 0, 60000),
	KEY("etrn", flush_window, CONFIG_DURATION, etrn_flush_window_ms, 0, 3600000),
	KEY_STRING_OR_EMPTY_RESTART("metrics", address, metrics_address),
	KEY("log", level, CONFIG_LOG_LEVEL, log_level, 0, 0),
	KEY_RESTART("log", destination, CONFIG_LOG_DESTINATION, log_destination, 0, 0),
	KEY("log", max_lines_per_client, CONFIG_UINT, log_max_lines_per_client, 0, 1000000),
};
#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))
_Static_assert(CONFIG_NKEYS <= CONFIG_MAX_KEYS, "struct config remembers every key");
const size_t config_nkeys = CONFIG_NKEYS;

static int config_list_add(struct config_list *list, const char *value, unsigned line)
{
	if (list->count >= CONFIG_MAX_LIST)
		return -E2BIG;
	if (array_reserve(list->items, list->cap, list->count + 1) != 0)
		return -ENOMEM;
	struct config_item *items = list->items;
	char *copy = strdup(value);
	if (copy == NULL)
		return -ENOMEM;
	items[list->count].value = copy;
	items[list->count].line = line;
	list->count++;
	return 0;
}

static void config_list_clear(struct config_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i].value);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->source, sizeof(cfg->source), "(built-in defaults)");
	/* The machine's name, unless it is no host name (net/server checks
	 * the key; a default must not stop ferryd from starting). */
	if (gethostname(cfg->hostname, sizeof(cfg->hostname) - 1) != 0 ||
	    cfg->hostname[0] == '\0' ||
	    strspn(cfg->hostname,
		   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
		    strlen(cfg->hostname) ||
	    cfg->hostname[0] == '.' || cfg->hostname[0] == '-')
		snprintf(cfg->hostname, sizeof(cfg->hostname), "localhost");
	cfg->workers = 0;
	config_parse_listen("127.0.0.1:2525", &cfg->listen[0]);
	cfg->nlisten = 1;
	cfg->listen_backlog = 4096;
	cfg->greeting_delay_ms = 0;
	cfg->shutdown_timeout_ms = 30000;
	cfg->max_connections = 20000;
	cfg->max_connections_per_client = 200;
	cfg->max_connection_rate_per_client = 600; /* a minute: 10 a second */
	cfg->max_commands_per_session = 100000;
	cfg->max_messages_per_session = 10000;
	cfg->max_recipients = 1000;
	cfg->recipient_overshoot = 1000; /* as Postfix's smtpd_recipient_overshoot_limit */
	cfg->max_errors = 20;
	cfg->max_command_line = 512;
	cfg->max_text_line = 1000;
	cfg->max_message_size = 36700160; /* 35 MiB, as many providers use */
	cfg->max_input_held = 64u << 10;
	cfg->max_output_queue = 32u << 10;
	cfg->idle_timeout_ms = 300000; /* RFC 5321 4.5.3.2.7: 5 minutes */
	cfg->data_timeout_ms = 180000; /* RFC 5321 4.5.3.2.5: 3 minutes */
	cfg->command_deadline_ms = 60000;
	cfg->min_data_rate = 500; /* octets/s, as Postfix's smtpd_min_data_rate */
	config_list_add(&cfg->trusted_networks, "127.0.0.0/8", 0);
	config_list_add(&cfg->trusted_networks, "::1/128", 0);
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "./var/spool");
	cfg->segment_size = 64u << 20;
	cfg->group_commit_bytes = 1u << 20;
	cfg->spool_min_free = 100u << 20;
	cfg->spool_compact_threshold = 50;
	/* RFC 5321 4.5.3.2's timeouts; connect's is Postfix's. */
	cfg->connect_timeout_ms = 30000;
	cfg->greeting_timeout_ms = 300000;
	cfg->command_timeout_ms = 300000;
	cfg->data_init_timeout_ms = 120000;
	cfg->data_block_timeout_ms = 180000;
	cfg->data_done_timeout_ms = 600000;
	cfg->connection_reuse_time_ms = 2000;
	cfg->retry_initial_ms = 300000;
	cfg->retry_factor = 2;
	cfg->retry_max_ms = 3600000;
	cfg->max_queue_lifetime_ms = 5 * CONFIG_DAY_MS;
	cfg->concurrency = 20;
	cfg->max_outbound_connections = 1000;
	cfg->recipients_per_transaction = 100; /* RFC 5321 4.5.3.1.8: what a server must take */
	cfg->max_received_headers = 50;        /* as Postfix's hopcount_limit */
	cfg->destination_failures = 5;
	cfg->destination_backoff_ms = 300000;
	cfg->smtp_port = 25;
	cfg->etrn_max_per_session = 100;
	cfg->etrn_max_rate_per_client = 60;
	cfg->etrn_flood_delay_ms = 1000;
	cfg->etrn_flush_window_ms = 60000;
	snprintf(cfg->metrics_address, sizeof(cfg->metrics_address), "127.0.0.1:9325");
	cfg->log_level = LOG_LEVEL_INFO;
	cfg->log_destination = LOG_TO_STDERR;
	cfg->log_max_lines_per_client = 100;
	config_domain_defaults(cfg);
}

void config_free(struct config *cfg)
{
	config_list_clear(&cfg->relay_domains);
	config_list_clear(&cfg->trusted_networks);
	config_domain_free(cfg);
}

struct config_parse_state {
	struct config *cfg;
	char *err;
	size_t err_size;
	bool listen_from_file;
	int status;
	struct config_reader *reader;
	char section[256];        /* the current section's name, whole */
	int domain;               /* its index in cfg->domains; -1: no [domain] section */
	uint32_t domain_keys_set; /* config_domain_set's record of its keys */
};

static void config_fail(struct config_parse_state *st, int line, const char *key, const char *fmt,
			const char *value)
{
	if (st->status != 0)
		return; /* report the first error only */
	char why[256];
	snprintf(why, sizeof(why), fmt, value);
	if (key != NULL)
		snprintf(st->err, st->err_size, "%s:%d: key '%s': %s", st->cfg->source, line, key,
			 why);
	else
		snprintf(st->err, st->err_size, "%s:%d: %s", st->cfg->source, line, why);
	st->status = -EINVAL;
}

/* Split a list value on commas and white space, calling add for each. */
struct config_word_copy {
	int (*add)(void *, const char *);
	void *arg;
};

static int config_copy_word(void *arg, const char *word, size_t len)
{
	const struct config_word_copy *c = arg;
	char copy[512];
	if (len >= sizeof(copy))
		return -E2BIG;
	memcpy(copy, word, len);
	copy[len] = '\0';
	return c->add(c->arg, copy);
}

/* config_split_words, each word as a string. */
static int config_split_list(const char *value, int (*add)(void *, const char *), void *arg)
{
	struct config_word_copy c = {add, arg};
	return config_split_words(value, config_copy_word, &c);
}

struct config_list_adder {
	struct config_list *list;
	unsigned line;
};

static int config_add_list_word(void *arg, const char *word)
{
	struct config_list_adder *a = arg;
	return config_list_add(a->list, word, a->line);
}

struct config_listen_adder {
	struct config *cfg;
	const char *bad;
	char bad_word[64];
};

static int config_add_listen_word(void *arg, const char *word)
{
	struct config_listen_adder *a = arg;
	if (a->cfg->nlisten >= CONFIG_MAX_LISTEN)
		return -E2BIG;
	if (config_parse_listen(word, &a->cfg->listen[a->cfg->nlisten]) != 0) {
		snprintf(a->bad_word, sizeof(a->bad_word), "%s", word);
		return -EINVAL;
	}
	a->cfg->nlisten++;
	return 0;
}

static void config_set(struct config_parse_state *st, const struct config_key *k, const char *value,
		       int line)
{
	char *field = (char *)st->cfg + k->offset;
	uint64_t v64 = 0;
	uint32_t v32 = 0;
	switch (k->type) {
	case CONFIG_STRING:
		if (strlen(value) < k->min || strlen(value) >= k->string_size) {
			config_fail(st, line, k->name, "empty or too long: '%s'", value);
			return;
		}
		memcpy(field, value, strlen(value) + 1);
		return;
	case CONFIG_UINT:
	case CONFIG_COUNT:
		if (config_parse_count(value, &v64) != 0) {
			config_fail(st, line, k->name, "not a whole number: '%s'", value);
			return;
		}
		break;
	case CONFIG_DURATION:
		if (config_parse_duration_ms(value, &v32) != 0) {
			config_fail(st, line, k->name,
				    "not a duration (e.g. 300s, 5m, 250ms): '%s'", value);
			return;
		}
		v64 = v32;
		break;
	case CONFIG_SIZE:
		if (config_parse_size(value, &v64) != 0) {
			config_fail(st, line, k->name, "not a size (e.g. 10485760, 10M): '%s'",
				    value);
			return;
		}
		break;
	case CONFIG_LIST: {
		struct config_list *list = (struct config_list *)field;
		if (!list->from_file) {
			config_list_clear(list);
			list->from_file = true;
		}
		struct config_list_adder a = {list, (unsigned)line};
		int r = config_split_list(value, config_add_list_word, &a);
		if (r == -E2BIG)
			config_fail(st, line, k->name,
				    "more than " CONFIG_MAX_LIST_TEXT
				    " values (the limit of a list)%s",
				    "");
		else if (r != 0)
			config_fail(st, line, k->name, "out of memory%s", "");
		return;
	}
	case CONFIG_LISTEN: {
		if (!st->listen_from_file) {
			st->cfg->nlisten = 0;
			st->listen_from_file = true;
		}
		struct config_listen_adder a = {.cfg = st->cfg};
		int r = config_split_list(value, config_add_listen_word, &a);
		if (r == -EINVAL)
			config_fail(st, line, k->name,
				    "not an address:port (e.g. 0.0.0.0:25, [::]:25): '%s'",
				    a.bad_word);
		else if (r != 0)
			config_fail(st, line, k->name, "too many addresses: '%s'", value);
		return;
	}
	case CONFIG_LOG_LEVEL: {
		enum log_level level;
		if (log_level_parse(value, &level) != 0) {
			config_fail(st, line, k->name, "not one of error, warn, info, debug: '%s'",
				    value);
			return;
		}
		*(int *)field = (int)level;
		return;
	}
	case CONFIG_LOG_DESTINATION:
		if (strcmp(value, "stderr") == 0)
			*(int *)field = LOG_TO_STDERR;
		else if (strcmp(value, "syslog") == 0)
			*(int *)field = LOG_TO_SYSLOG;
		else
			config_fail(st, line, k->name, "not one of stderr, syslog: '%s'", value);
		return;
	}
	if (v64 < k->min || v64 > k->max) {
		char range[128], lo[32], hi[32];
		if (k->type == CONFIG_DURATION)
			snprintf(range, sizeof(range), "out of range %s..%s: '%%s'",
				 config_format_duration((uint32_t)k->min, lo, sizeof(lo)),
				 config_format_duration((uint32_t)k->max, hi, sizeof(hi)));
		else
			snprintf(range, sizeof(range), "out of range %llu..%llu: '%%s'",
				 (unsigned long long)k->min, (unsigned long long)k->max);
		config_fail(st, line, k->name, range, value);
		return;
	}
	if (k->type == CONFIG_SIZE || k->type == CONFIG_COUNT)
		*(uint64_t *)field = v64;
	else
		*(uint32_t *)field = (uint32_t)v64;
}

/* "domain NAME" (or a bare "domain", which lacks its name). */
static bool config_is_domain_section(const char *section)
{
	return strncmp(section, "domain", 6) == 0 &&
	       (section[6] == '\0' || isspace((unsigned char)section[6]));
}

/*
 * Every section header, seen by the reader before inih parses its line:
 * inih cuts section names at 49 characters (a domain may have 253) and
 * says nothing of a section without keys (a [domain] section may be
 * empty, and must still be counted once).
 */
static void config_section_begin(struct config_parse_state *st, const char *section, unsigned line)
{
	snprintf(st->section, sizeof(st->section), "%s", section);
	st->domain = -1;
	if (st->status != 0 || !config_is_domain_section(section))
		return;
	char why[512];
	int r = config_domain_begin(st->cfg, section + 6, line, why, sizeof(why));
	if (r < 0) {
		config_fail(st, (int)line, NULL, "%s", why);
		return;
	}
	st->domain = r;
	st->domain_keys_set = 0;
}

/*
 * Debian's inih is built without line numbers in the handler, so lines are
 * fed through our own reader, which counts them (and catches lines longer
 * than inih's buffer, which it would otherwise split in two), and shows
 * config_section_begin each section header.
 */
struct config_reader {
	FILE *file;       /* or */
	const char *text; /* the rest of the string */
	unsigned line;
	bool too_long;
	struct config_parse_state *st;
};

static void config_reader_look_for_section(struct config_reader *rd, const char *line)
{
	while (*line == ' ' || *line == '\t')
		line++;
	const char *close = line[0] == '[' ? strchr(line, ']') : NULL;
	if (close == NULL)
		return; /* not a header, or inih reports the missing ']' */
	char section[256];
	snprintf(section, sizeof(section), "%.*s", (int)(close - line - 1), line + 1);
	config_section_begin(rd->st, section, rd->line);
}

static char *config_read_line(char *str, int num, void *stream)
{
	struct config_reader *rd = stream;
	if (rd->too_long)
		return NULL;
	size_t n = 0;
	if (rd->file != NULL) {
		if (fgets(str, num, rd->file) == NULL)
			return NULL;
		n = strlen(str);
	} else {
		if (*rd->text == '\0')
			return NULL;
		while (rd->text[n] != '\0' && n < (size_t)num - 1)
			if (rd->text[n++] == '\n')
				break;
		memcpy(str, rd->text, n);
		str[n] = '\0';
		rd->text += n;
	}
	rd->line++;
	if (n > 0 && str[n - 1] != '\n' && n == (size_t)num - 1 &&
	    !(rd->file != NULL ? feof(rd->file) : *rd->text == '\0')) {
		rd->too_long = true;
		return NULL;
	}
	config_reader_look_for_section(rd, str);
	return str;
}

static int config_ini_handler(void *user, const char *section, const char *name, const char *value)
{
	struct config_parse_state *st = user;
	int line = (int)st->reader->line;
	if (st->status != 0)
		return 0;
	if (name == NULL) /* a section header alone: check it exists */
		name = "";
	/* inih's name may be cut short; a different one means that inih took
	 * an indented header for the continuation of the key above it. */
	if (strncmp(st->section, section, strlen(section)) != 0) {
		config_fail(st, line, NULL,
			    "'[%s]' is taken as part of the value above it: start a section "
			    "header at the beginning of its line",
			    st->section);
		return 0;
	}
	if (config_is_domain_section(section)) {
		char why[512];
		if (st->domain < 0) {
			config_fail(st, line, name, "not in a [domain NAME] section%s", "");
			return 0;
		}
		if (config_domain_set(&st->cfg->domains[st->domain], name, value,
				      &st->domain_keys_set, why, sizeof(why)) != 0)
			config_fail(st, line, name, "%s", why);
		return st->status == 0;
	}
	bool section_known = false;
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key *k = &config_keys[i];
		if (strcmp(k->section, section) != 0)
			continue;
		section_known = true;
		if (strcmp(k->name, name) != 0)
			continue;
		if (st->cfg->set_in_file[i] && k->type != CONFIG_LIST && k->type != CONFIG_LISTEN) {
			config_fail(st, line, name, "set twice (%s)", "remove one of them");
			return 0;
		}
		st->cfg->set_in_file[i] = true;
		st->cfg->line_in_file[i] = (unsigned)line;
		config_set(st, k, value, line);
		return st->status == 0;
	}
	if (!section_known)
		config_fail(st, line, NULL, "unknown section '[%s]'", section);
	else if (name[0] != '\0')
		config_fail(st, line, name, "unknown key in section [%s]", section);
	return st->status == 0;
}

static int config_finish(struct config_parse_state *st)
{
	struct config *cfg = st->cfg;
	if (st->status != 0)
		return st->status;
	if (cfg->nlisten == 0) {
		snprintf(st->err, st->err_size, "%s: key 'listen': no address to listen on",
			 cfg->source);
		return -EINVAL;
	}
	if (cfg->workers == 0) {
		struct cpuset allowed;
		cpuset_allowed(&allowed);
		cfg->workers = allowed.count;
		cfg->workers_per_cpu = true;
	}
	if (cfg->shards != 0 && (cfg->shards & (cfg->shards - 1)) != 0) {
		snprintf(st->err, st->err_size, "%s: key 'shards': must be a power of two, not %u",
			 cfg->source, cfg->shards);
		return -EINVAL;
	}
	if (cfg->shards != 0 && cfg->shards < cfg->workers) {
		snprintf(st->err, st->err_size,
			 "%s: key 'shards': %u is fewer than the %u workers (each owns some)",
			 cfg->source, cfg->shards, cfg->workers);
		return -EINVAL;
	}
	if (cfg->retry_max_ms < cfg->retry_initial_ms) {
		unsigned line = config_key_line(cfg, "delivery", "retry_max");
		if (line == 0)
			line = config_key_line(cfg, "delivery", "retry_initial");
		snprintf(st->err, st->err_size,
			 "%s:%u: key 'retry_max': shorter than retry_initial, the first wait",
			 cfg->source, line);
		return -EINVAL;
	}
	if (cfg->group[0] != '\0' && cfg->user[0] == '\0') {
		snprintf(st->err, st->err_size,
			 "%s:%u: key 'group': set without 'user' (ferryd started as root runs as "
			 "user, with group instead of the user's own)",
			 cfg->source, config_key_line(cfg, "server", "group"));
		return -EINVAL;
	}
	if (cfg->max_connections_per_client > cfg->max_connections)
		cfg->max_connections_per_client = cfg->max_connections;
	/* Its default follows the host name, whichever line set that. */
	if (cfg->postmaster[0] == '\0')
		snprintf(cfg->postmaster, sizeof(cfg->postmaster), "postmaster@%s", cfg->hostname);
	config_domain_index(cfg);
	return 0;
}

static int config_parse(struct config *cfg, struct config_reader *rd, char *err, size_t err_size)
{
	struct config_parse_state st = {
		.cfg = cfg, .err = err, .err_size = err_size, .reader = rd, .domain = -1};
	rd->st = &st;
	int r = ini_parse_stream(config_read_line, rd, config_ini_handler, &st);
	if (rd->too_long)
		config_fail(&st, (int)rd->line, NULL, "%s",
			    "line too long (split a long list over several lines with the "
			    "same key)");
	else if (r > 0)
		config_fail(&st, r, NULL, "%s", "syntax error (expected [section] or key = value)");
	return config_finish(&st);
}

int config_load_string(struct config *cfg, const char *text, const char *name, char *err,
		       size_t err_size)
{
	struct config_reader rd = {.text = text};
	snprintf(cfg->source, sizeof(cfg->source), "%s", name);
	return config_parse(cfg, &rd, err, err_size);
}

int config_load(struct config *cfg, const char *path, char *err, size_t err_size)
{
	if (path == NULL) {
		struct config_parse_state st = {.cfg = cfg, .err = err, .err_size = err_size};
		return config_finish(&st);
	}
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		int e = errno;
		snprintf(err, err_size, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	struct config_reader rd = {.file = f};
	snprintf(cfg->source, sizeof(cfg->source), "%s", path);
	int r = config_parse(cfg, &rd, err, err_size);
	fclose(f);
	return r;
}

bool config_is_set(const struct config *cfg, const char *section, const char *name)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (strcmp(config_keys[i].section, section) == 0 &&
		    strcmp(config_keys[i].name, name) == 0)
			return cfg->set_in_file[i];
	return false;
}

unsigned config_key_line(const struct config *cfg, const char *section, const char *name)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (strcmp(config_keys[i].section, section) == 0 &&
		    strcmp(config_keys[i].name, name) == 0)
			return cfg->line_in_file[i];
	return 0;
}

/* config_set writes every CONFIG_UINT, `unsigned` ones too, as a uint32_t. */
_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "CONFIG_UINT fields are 32 bits");

struct config_spool_peek {
	char *out;
	size_t size;
	bool found;
};

static int config_spool_handler(void *user, const char *section, const char *name,
				const char *value)
{
	struct config_spool_peek *p = user;
	if (!p->found && strcmp(section, "spool") == 0 && strcmp(name, "directory") == 0) {
		snprintf(p->out, p->size, "%s", value);
		p->found = true;
	}
	return 1; /* whatever else the file holds */
}

int config_spool_dir(const char *path, char *out, size_t size)
{
	struct config defaults;
	config_defaults(&defaults);
	snprintf(out, size, "%s", defaults.spool_dir);
	config_free(&defaults);
	if (path == NULL)
		return 0;
	struct config_spool_peek p = {out, size, false};
	errno = 0;
	if (ini_parse(path, config_spool_handler, &p) < 0)
		return errno != 0 ? -errno : -EIO;
	return 0;
}

int config_open(struct config *cfg, const char *path, const char *program)
{
	char err[1024];
	config_defaults(cfg);
	int r = config_load(cfg, path, err, sizeof(err));
	if (r != 0) {
		fprintf(stderr, "%s: config: %s\n", program, err);
		config_free(cfg);
	}
	return r;
}

void config_error_at(const struct config *cfg, const struct config_item *item, const char *key,
		     const char *why, char *err, size_t err_size)
{
	if (item->line == 0)
		snprintf(err, err_size, "%s: key '%s': %s: '%s'", "(built-in defaults)", key, why,
			 item->value);
	else
		snprintf(err, err_size, "%s:%u: key '%s': %s: '%s'", cfg->source, item->line, key,
			 why, item->value);
}
