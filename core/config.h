/*
 * config — ferryd's configuration: one file of [sections] and `key = value`
 * lines, parsed with inih, over built-in defaults.
 *
 * Without a file the defaults alone make a working relay on localhost
 * (listen 127.0.0.1:2525, spool ./var/spool, trusted network 127.0.0.0/8).
 * An unknown section or key, a bad value, or a scalar key given twice is an
 * error naming file, line and key. List keys (listen, relay_domains,
 * trusted_networks) take comma- or space-separated values and may be
 * repeated; the first occurrence in a file replaces the default.
 *
 * Values whose syntax belongs to another layer (networks, domains, the
 * postmaster address) are kept as text (lists with their line numbers);
 * the layer that owns them validates them at start-up and reports with
 * config_error_at(), or names the key.
 *
 * [domain NAME] sections (any number; NAME a domain, or ".NAME" for its
 * subdomains) give one destination domain its own delivery settings; see
 * struct config_domain. Like a list, the file's sections replace the
 * built-in one (demo.test, held, for trying ferry out).
 *
 * A running ferryd can take a new file (a reload), except for its
 * restart-only keys, what it sets up once at start (listeners, spool,
 * privileges, connection limits): a file that changes one needs a restart.
 *
 * Every key is documented in docs/config.md.
 */
#ifndef FERRY_CORE_CONFIG_H
#define FERRY_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONFIG_MAX_LISTEN    16
#define CONFIG_MAX_LIST      4096
#define CONFIG_MAX_LIST_TEXT "4096"
#define CONFIG_HOSTNAME_MAX  255
/* Room for an address (RFC 5321: 254 octets) and the default postmaster
 * built from any host name; net/ checks that it is an address. */
#define CONFIG_ADDRESS_MAX 511
/* A user or group name ([server] user, group). */
#define CONFIG_ACCOUNT_NAME_MAX 63
/* A next hop, or a list of up to 8 tried in order (net/nexthop.h). */
#define CONFIG_TRANSPORT_MAX 1023
/* An IPv4 or IPv6 address as text (with room to spare for a typo that
 * net/ then reports whole). */
#define CONFIG_SOURCE_ADDRESS_MAX 63

struct config_item {
	char *value;
	unsigned line; /* 0: built-in default */
};

struct config_list {
	struct config_item *items;
	size_t count, cap;
	bool from_file; /* the file has replaced the default already */
};

struct config_listen {
	char text[64]; /* as written, e.g. "127.0.0.1:2525" or "[::1]:25" */
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

/* The largest max_recipients: what one stored envelope can hold, with
 * room for the MAIL parameters (net/ and queue/ check they agree). */
#define CONFIG_MAX_RECIPIENTS 2000

#define CONFIG_MAX_KEYS 128

/* host:port, [v6]:port (net/metrics_http.h checks it). */
#define CONFIG_METRICS_ADDRESS_MAX 63

/* A [domain] section's ETRN lists (networks, node names, queue names). */
#define CONFIG_ETRN_LIST_MAX 1023

/* RFC 1035: 253 octets of name, without the trailing dot. */
#define CONFIG_DOMAIN_NAME_MAX 253

/* One [domain NAME] section: how mail for that domain is delivered. */
struct config_domain {
	char name[CONFIG_DOMAIN_NAME_MAX + 3];    /* lowercased, without the leading dot */
	bool subdomains;                          /* written ".name": its subdomains, not it */
	unsigned line;                            /* of the section's header; 0: built in */
	char transport[CONFIG_TRANSPORT_MAX + 1]; /* "": relayhost, else MX; net/ parses it */
	bool hold;                                /* queue its mail, deliver none (ETRN, ...) */
	uint32_t concurrency;                     /* 0: [delivery] concurrency */
	uint64_t max_messages;                    /* messages queued for it; 0: no quota */
	uint64_t max_size;                        /* octets queued for it; 0: no quota */
	uint32_t queue_lifetime_ms;               /* 0: [delivery] max_queue_lifetime */
	/* ETRN (net/etrn.h parses and checks these lists at start) */
	char etrn_networks[CONFIG_ETRN_LIST_MAX + 1]; /* clients that may ETRN it; "": none */
	bool etrn_counts;                             /* 253/251 with counts (else 250) */
	char etrn_nodes[CONFIG_ETRN_LIST_MAX + 1];    /* more node names that release it */
	char etrn_queues[CONFIG_ETRN_LIST_MAX + 1];   /* named queues (#NAME) it is in */
};

struct config {
	char source[512];                       /* file name, or "(built-in defaults)" */
	bool set_in_file[CONFIG_MAX_KEYS];      /* by key, in the order of config.c's table */
	unsigned line_in_file[CONFIG_MAX_KEYS]; /* the line that set it (a list: the last) */

	/* [server] */
	char hostname[CONFIG_HOSTNAME_MAX + 1];
	uint32_t workers; /* 0 in the file: one per CPU of the affinity mask; resolved at load */
	bool workers_per_cpu; /* workers was 0 (or left out), resolved so */
	struct config_listen listen[CONFIG_MAX_LISTEN];
	unsigned nlisten;
	uint32_t greeting_delay_ms;
	uint32_t shutdown_timeout_ms;
	unsigned listen_backlog;
	/* Started as root, ferryd binds, then runs as this user and group
	 * ("": stays who it is; group "": the user's own). tools/ resolves
	 * them. */
	char user[CONFIG_ACCOUNT_NAME_MAX + 1];
	char group[CONFIG_ACCOUNT_NAME_MAX + 1];

	/* [limits] */
	uint32_t max_connections;
	uint32_t max_connections_per_client;
	uint32_t max_connection_rate_per_client; /* new connections a minute; 0: no limit */
	uint32_t max_commands_per_session;
	uint32_t max_messages_per_session;
	uint32_t max_recipients;      /* at most CONFIG_MAX_RECIPIENTS */
	uint32_t recipient_overshoot; /* 452s past max_recipients that are no errors */
	uint32_t max_errors;
	uint32_t max_command_line;    /* octets, CRLF included (RFC 5321: 512) */
	uint32_t max_text_line;       /* octets, CRLF included (RFC 5321: 1000) */
	uint64_t max_message_size;    /* octets, advertised with SIZE */
	uint64_t max_input_held;      /* octets of a client's input held: past it, reading pauses */
	uint64_t max_output_queue;    /* octets of replies unsent: past it, commands wait */
	uint32_t idle_timeout_ms;     /* between commands */
	uint32_t data_timeout_ms;     /* between reads while receiving DATA */
	uint32_t command_deadline_ms; /* a command line, from its first octet to its end */
	uint32_t min_data_rate;       /* octets/s a body must keep after data_timeout; 0: off */

	/* [relay] */
	struct config_list relay_domains;
	struct config_list trusted_networks;
	char postmaster[CONFIG_ADDRESS_MAX + 1]; /* "" in the file: postmaster@hostname */

	/* [spool] */
	char spool_dir[4096];
	uint64_t segment_size;
	uint64_t group_commit_bytes;
	uint64_t spool_max_size;     /* 0: no limit */
	uint64_t spool_max_messages; /* 0: no limit */
	uint64_t spool_min_free;
	uint32_t shards;                  /* 0: 8 per worker */
	uint32_t spool_compact_threshold; /* percent; 0: never compact */

	/* [delivery]: outbound SMTP */
	char source_address[CONFIG_SOURCE_ADDRESS_MAX + 1]; /* "": any; net/ checks it */
	char relayhost[CONFIG_TRANSPORT_MAX + 1];           /* "": MX; net/ parses it */
	uint32_t connect_timeout_ms;
	uint32_t greeting_timeout_ms;
	uint32_t command_timeout_ms;       /* EHLO, MAIL, RCPT, RSET, QUIT */
	uint32_t data_init_timeout_ms;     /* DATA's 354 */
	uint32_t data_block_timeout_ms;    /* each write of the body */
	uint32_t data_done_timeout_ms;     /* the reply to the final dot */
	uint32_t connection_reuse_time_ms; /* idle before QUIT */
	uint32_t retry_initial_ms;         /* retry n waits initial * factor^(n-1), */
	uint32_t retry_factor;             /* at most retry_max (>= retry_initial) */
	uint32_t retry_max_ms;
	uint32_t max_queue_lifetime_ms;
	uint32_t concurrency;                /* connections per destination */
	uint32_t max_outbound_connections;   /* per worker */
	uint32_t recipients_per_transaction; /* at most CONFIG_MAX_RECIPIENTS */
	uint32_t max_received_headers;       /* more: a mail loop */
	uint32_t destination_failures;       /* connection failures in a row: destination down */
	uint32_t destination_backoff_ms;     /* how long it stays down */
	char dns_servers[CONFIG_TRANSPORT_MAX + 1]; /* "": /etc/resolv.conf's; net/ parses it */
	uint32_t smtp_port;                         /* of next hops found by MX lookups */

	/* [etrn]: RFC 1985 remote queue starting (net/etrn.h) */
	uint32_t etrn_max_per_session;     /* ETRNs in one session; then 421 */
	uint32_t etrn_max_rate_per_client; /* a minute, all sessions; then 421; 0: none */
	uint32_t etrn_flood_delay_ms;      /* past half that rate: each reply waits this */
	uint32_t etrn_flush_window_ms;     /* a flush runs this long: new ETRNs join it */

	/* [domain NAME] sections, in the file's order */
	struct config_domain *domains;
	size_t ndomains, domains_cap;
	/* A hash of the sections by name, built when loading ends, so that
	 * config_domain_find costs one probe per label, not a scan
	 * (config_domain.c); NULL or out of date: the scan. */
	struct config_domain_index *domain_index;
	bool domains_from_file; /* the file has replaced the built-in ones already */

	/* [metrics] */
	char metrics_address[CONFIG_METRICS_ADDRESS_MAX + 1]; /* GET /metrics; "": off */

	/* [log] */
	int log_level;                     /* enum log_level */
	int log_destination;               /* enum log_destination */
	uint32_t log_max_lines_per_client; /* a minute, per worker; 0: no limit */
};

/* Fill in the built-in defaults. */
void config_defaults(struct config *cfg);

/*
 * Load `path` over the defaults (path NULL: defaults only). On error, a
 * message "FILE:LINE: key 'x': why" is written to err (err_size bytes) and
 * -EINVAL (or -errno when the file cannot be read) is returned.
 */
int config_load(struct config *cfg, const char *path, char *err, size_t err_size);

/* What a program does first: the defaults, then `path` over them. On an
 * error it says "PROGRAM: config: why" on stderr, frees what was loaded,
 * and returns -errno. */
int config_open(struct config *cfg, const char *path, const char *program);

/* Load from a string instead of a file (tests); `name` stands for the file. */
int config_load_string(struct config *cfg, const char *text, const char *name, char *err,
		       size_t err_size);

void config_free(struct config *cfg);

/* Only [spool] directory of `path` (NULL: the default), into out, however
 * the rest of the file reads: what ferryctl needs to find ferryd's
 * socket, also in a file ferryd would refuse (to reload it and hear
 * why). 0, or -errno when the file cannot be read. */
int config_spool_dir(const char *path, char *out, size_t size);

/* Was section/name given in the file (as opposed to its default)? */
bool config_is_set(const struct config *cfg, const char *section, const char *name);

/* The line of the file that set section/name (a list: its last line); 0
 * when it has its default. */
unsigned config_key_line(const struct config *cfg, const char *section, const char *name);

/*
 * How many restart-only keys have another value in `next` than in
 * `running`. Their names go to out (size bytes, NUL-terminated; out may be
 * NULL when size is 0) as "[server] listen, [spool] directory", in the
 * order config_print shows them: "" when none, ending in "..." when cut
 * short. Values are compared, not their text: listen addresses by the
 * address each stands for, in order. Call config_keep_running_values
 * first.
 */
size_t config_restart_changes(const struct config *running, const struct config *next, char *out,
			      size_t size);

/*
 * Give `next` the running value of each restart-only key that neither
 * file sets: what ferryd computed at start for it (workers = 0 made one
 * per CPU; max_connections lowered to fit RLIMIT_NOFILE) stays, and is no
 * change; so does the number of workers when both files ask for one per
 * CPU (the CPUs this process may use can change under it). Then
 * max_connections_per_client is capped by max_connections, as loading
 * caps it.
 */
void config_keep_running_values(struct config *next, const struct config *running);

/* Print the effective configuration in the file's own syntax. */
void config_print(const struct config *cfg, FILE *out);

struct config_domain_index;

/*
 * The [domain] entry that rules mail for `domain` (len octets, any case):
 * an entry for that very name, else the entry for the closest parent
 * written with a leading dot (".customer.example" rules a.customer.example
 * and a.b.customer.example, not customer.example nor xcustomer.example).
 * NULL: none does; [delivery] applies. One hash probe per label of the
 * domain once loading has ended (core/config_domain.c).
 */
const struct config_domain *config_domain_find(const struct config *cfg, const char *domain,
					       size_t len);

/* Format an error about a list item for the layer that validated it. */
void config_error_at(const struct config *cfg, const struct config_item *item, const char *key,
		     const char *why, char *err, size_t err_size);

/* A list's words (commas and white space between them, as the lists of
 * this file take them): fn(arg, word, len) for each; stops at the first
 * non-zero return, which it returns (0 at the end). core/config_value.c. */
int config_split_words(const char *list, int (*fn)(void *arg, const char *word, size_t len),
		       void *arg);

/* Value parsers (core/config_value.c). Return 0 or -EINVAL. */
/* A number with ms, s, m (min), h or d; bare: seconds. At most UINT32_MAX ms
 * (about 49 days). */
int config_parse_duration_ms(const char *text, uint32_t *out_ms);
/* A duration in its largest unit that states it exactly ("5d", "90s",
 * "250ms", "0"), which config_parse_duration_ms reads back; returns out. */
const char *config_format_duration(uint32_t ms, char *out, size_t size);
/* Octets, with K, M, G (binary; KiB, MiB, GiB too). */
int config_parse_size(const char *text, uint64_t *out);
/* A plain whole number: no unit. */
int config_parse_count(const char *text, uint64_t *out);
/* yes/no, true/false, on/off, 1/0, in any case. */
int config_parse_bool(const char *text, bool *out);
int config_parse_listen(const char *text, struct config_listen *out);

#endif
