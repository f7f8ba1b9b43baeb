/*
 * harness — helpers for the end-to-end tests that start a real ferryd.
 *
 * A test gets a private temporary directory with a config file (an
 * ephemeral loopback port, a spool inside the directory), starts ferryd
 * from $FERRY_BUILD_DIR (default ./build) and talks SMTP to it over plain
 * blocking sockets with timeouts, or runs outside clients (swaks, python)
 * with a bounded wait.
 *
 * Invariants: every wait in here has a deadline and every loop a bound, so
 * a hung daemon fails a test instead of hanging the suite; only loopback
 * addresses are used; a ferryd (or any program) started here dies with the
 * test process (PR_SET_PDEATHSIG) and harness_cleanup_all() kills (-9)
 * whatever is still running and removes the temporary directories. (A
 * ferryd that gives up root loses its parent-death signal: the kernel
 * clears it with any change of credentials. Only the cleanup stops that
 * one.)
 *
 * The spool is read back through the spool view, with the store's own
 * recovery code and rules, read-only (harness_spool_read), so a test sees
 * exactly what a restart would see.
 */
#ifndef FERRY_TESTS_HARNESS_H
#define FERRY_TESTS_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "queue/spool_view.h"

/* ---- one ferryd ---------------------------------------------------------- */

/* ferryd's default max_connections (20,000) needs a hard RLIMIT_NOFILE
 * above 20,000, which not every test machine has (ferryd refuses to start
 * without it): the tests' ferryds take fewer unless a test says otherwise. */
#define HARNESS_MAX_CONNECTIONS      4096
#define HARNESS_MAX_CONNECTIONS_TEXT "4096"

struct ferry_instance {
	char dir[PATH_MAX];    /* temporary directory, removed by cleanup */
	char spool[PATH_MAX];  /* <dir>/spool */
	char config[PATH_MAX]; /* <dir>/ferryd.conf */
	char log[PATH_MAX];    /* <dir>/ferryd.log: ferryd's stdout and stderr */
	int port;
	pid_t pid;       /* 0 when not running */
	int exit_status; /* from waitpid, valid once pid went back to 0 */

	/* How ferryd is started; set after harness_setup(), which clears them. */
	bool set_umask; /* ferryd runs under `umask` instead of the test's own */
	mode_t umask;
	long nofile_soft, nofile_hard; /* when > 0: ferryd's RLIMIT_NOFILE */
	/* Capabilities taken from ferryd's bounding set before it starts
	 * (bit n: capability n), as a systemd unit's CapabilityBoundingSet
	 * does: started as root, it has only the others. E.g. without
	 * CAP_SYS_RESOURCE it cannot raise its hard limits. Nothing to take
	 * from a test not run as root. */
	uint64_t drop_capabilities;
	/* ferryd starts as this user and group (no supplementary groups)
	 * instead of the test's own; takes a test run as root. */
	bool run_as;
	uid_t run_uid;
	gid_t run_gid;
};

/*
 * Make a temporary directory, pick a free loopback port, and write a config
 * listening on 127.0.0.1:<port> with its spool in the directory, 2 workers,
 * relay_domains = relay.example (held: its mail stays queued),
 * max_connections = HARNESS_MAX_CONNECTIONS and dns_servers = 127.0.0.1:1
 * (nothing: lookups fail at once, no query leaves loopback) with
 * max_outbound_connections = 64 (the descriptors the tests' small limits
 * hold) unless `extra` sets them, then `extra` (more [section] / key = value lines; sections
 * may repeat, keys may not). Returns 0 or -errno.
 */
int harness_setup(struct ferry_instance *fi, const char *extra);

/*
 * Start ferryd -c <config> and wait (at most timeout_ms) until it says in
 * its log that it listens and accepts a connection on its port. Returns 0,
 * or -1 if it exited or never listened (its log is copied to stderr then).
 */
int harness_start(struct ferry_instance *fi, int timeout_ms);

/*
 * As harness_start, with `env` (NULL-terminated "NAME=value" strings, or
 * NULL) added to the environment ferryd inherits, e.g. a fault point:
 * {"FERRY_FAULT_FSYNC=2", NULL}.
 */
int harness_start_env(struct ferry_instance *fi, int timeout_ms, const char *const *env);

/* kill -9 ferryd (a crash) and reap it; its log is not copied. Returns 0
 * once it is gone, -1 if it could not be reaped in timeout_ms. */
int harness_crash(struct ferry_instance *fi, int timeout_ms);

/*
 * Send SIGTERM and wait at most timeout_ms for ferryd to exit. Returns its
 * exit code (0..255), 128+signal if a signal ended it, or -1 if it did not
 * exit in time (it is still running then). A non-zero result copies the log
 * to stderr, so a sanitizer report shows in the test output.
 */
int harness_stop(struct ferry_instance *fi, int timeout_ms);

/* Wait at most timeout_ms for ferryd to exit on its own; as harness_stop. */
int harness_wait_exit(struct ferry_instance *fi, int timeout_ms);

/* kill -9 ferryd if it still runs, reap it, remove the temporary directory. */
void harness_cleanup(struct ferry_instance *fi);

/* The same for every instance set up since the last call, and kill -9 every
 * program harness_spawn() started (a test's fini). */
void harness_cleanup_all(void);

/* Copy ferryd's log (its last 64 KiB) to stderr (diagnosis of a failed
 * test). */
void harness_dump_log(const struct ferry_instance *fi);

/* ---- the spool, read back as ferryd reads it at start ----------------------- */

/*
 * The spool is read through the spool view (queue/spool_view.h): read-only
 * (nothing is cut or moved, so it is safe while ferryd runs, as `ferryctl
 * --spool` is), with the store's own rules. A message is in the spool
 * exactly when recovery would bring it back, i.e. its COMMIT record is
 * there and agrees with its body; each id once (a copy compaction left
 * behind is folded, counted in duplicates); finished messages included,
 * marked done.
 */

/*
 * Read <spool_dir>/segments into *out (messages sorted by id). Returns 0
 * or -errno (-ENOENT: no segments directory yet, i.e. an empty spool that
 * ferryd never opened). Free it with harness_spool_free().
 */
int harness_spool_read(const char *spool_dir, struct spool_view **out);
void harness_spool_free(struct spool_view *sp);

/* How many messages in sp carry this id (any case): 0 or 1 (copies are
 * folded). */
size_t harness_spool_copies(const struct spool_view *sp, const char *id);

/* A message's body read from its segments, malloc'd and NUL-terminated
 * (*len gets its length); NULL if it cannot be read whole. */
char *harness_spool_body(const struct spool_view *sp, const struct spool_view_message *m,
			 size_t *len);

/* fi's spool read now (empty when ferryd never created it); NULL on an
 * error. Belongs to the harness: valid until the next spool call or
 * harness_cleanup_all(). */
const struct spool_view *harness_spool_view(const struct ferry_instance *fi);

/* Messages in fi's spool (0 when ferryd never created it), or -errno. */
int harness_count_spool(const struct ferry_instance *fi);

/* The queue ids in fi's spool, at most max of them, into ids. Returns how
 * many there are in all (may exceed max), or -errno. */
int harness_spool_ids(const struct ferry_instance *fi, char (*ids)[32], int max);

/*
 * The message with this id in fi's spool, its body read too (NUL-terminated,
 * *body_len its length when not NULL); NULL if it is not there (a body
 * that compaction moves under the read is looked for again). Both belong
 * to the harness: valid until the next spool call or harness_cleanup_all().
 */
const struct spool_view_message *harness_spool_message(const struct ferry_instance *fi,
						       const char *id, const char **body,
						       size_t *body_len);

/* ferryd's log so far, NUL-terminated ("" if none). Belongs to the harness:
 * valid until the next log call or harness_cleanup_all(). */
const char *harness_log(const struct ferry_instance *fi);

/* The same from byte `offset` on (a harness_log_size() taken earlier: what
 * was logged since), for logs too long to read again and again. */
const char *harness_log_since(const struct ferry_instance *fi, size_t offset);
size_t harness_log_size(const struct ferry_instance *fi);

/* Occurrences of `text` in ferryd's log. */
int harness_log_count(const struct ferry_instance *fi, const char *text);

/* ---- small process and file helpers --------------------------------------- */

/* A program of the build: $FERRY_BUILD_DIR/<program>, default
 * ./build/<program>. */
const char *harness_build_path(const char *program, char *out, size_t size);

/* The ferryd executable. */
static inline const char *harness_ferryd_path(char *out, size_t size)
{
	return harness_build_path("ferryd", out, size);
}

/* Write text to path (created or truncated). Returns 0 or -errno. */
int harness_write_file(const char *path, const char *text);

/* Raise RLIMIT_NOFILE to at least `want` (capped by the hard limit). Returns
 * the soft limit now in force. */
long harness_raise_nofile(long want);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t harness_now_ms(void);

/* Sleep ms milliseconds. */
void harness_sleep_ms(int ms);

/*
 * Run argv[0] (looked up in PATH) with stdin from /dev/null, capturing its
 * stdout and stderr (each cut to its buffer size - 1, NUL-terminated; either
 * may be NULL to discard). Waits at most timeout_ms, then kills it. Returns
 * the exit code, 128+signal, or -1 on timeout or when it could not run.
 */
int harness_run(char *const argv[], char *out, size_t out_size, char *err, size_t err_size,
		int timeout_ms);

/*
 * Start argv[0] (looked up in PATH) in the background, stdin from /dev/null,
 * stdout and stderr appended to out_path. It dies with the test process and
 * is killed by harness_cleanup_all(). Returns its pid, or -1.
 */
pid_t harness_spawn(char *const argv[], const char *out_path);

/* A loopback TCP port that is free now (for a program a test starts). */
int harness_free_port(void);

/*
 * Start `ferry-bench sink --json --count <count> 127.0.0.1:<port>` (the
 * far end of ferryd's deliveries; it exits once it got `count` messages,
 * printing its totals, "messages" and "recipients" among them, to
 * out_path) and wait at most timeout_ms until it accepts connections
 * (a probe connection of its own, no message). Returns its pid or -1.
 */
pid_t harness_start_sink(int port, unsigned count, const char *out_path, int timeout_ms);

/* Wait at most timeout_ms for a spawned process to exit; returns its exit
 * code, 128+signal, or -1 if it still runs. */
int harness_wait_pid(pid_t pid, int timeout_ms);

/* ---- a tiny blocking SMTP client ------------------------------------------- */

#define SMTP_CLIENT_BUF 65536

struct smtp_client {
	int fd;
	int timeout_ms; /* for each send and each reply */
	char in[SMTP_CLIENT_BUF];
	size_t in_len;
};

struct smtp_reply {
	int code;        /* 100..599; negative: see smtp_client_read_reply */
	char text[8192]; /* the whole reply, lines joined by '\n', no CRLF */
	unsigned lines;
};

#define SMTP_REPLY_TIMEOUT (-1) /* no complete reply in time */
#define SMTP_REPLY_CLOSED  (-2) /* the server closed the connection */
#define SMTP_REPLY_ERROR   (-3) /* a socket error, or not an SMTP reply */

/* Connect to 127.0.0.1:port (timeout_ms for the connect and every later
 * wait). Returns 0 or -errno. */
int smtp_client_connect(struct smtp_client *c, int port, int timeout_ms);

/* The same from a loopback source address of our choice ("127.0.0.N":
 * all of 127.0.0.0/8 is ours), so that one test can be many clients. */
int smtp_client_connect_from(struct smtp_client *c, const char *source, int port, int timeout_ms);

/* Send all bytes (at most timeout_ms). Returns 0 or -errno. */
int smtp_client_send(struct smtp_client *c, const void *data, size_t len);
int smtp_client_send_str(struct smtp_client *c, const char *text);

/* Read one whole (possibly multi-line) reply. Returns its code, or one of
 * SMTP_REPLY_TIMEOUT, SMTP_REPLY_CLOSED, SMTP_REPLY_ERROR (r->code too). */
int smtp_client_read_reply(struct smtp_client *c, struct smtp_reply *r);

/* Send `line` plus CRLF, then read the reply. Returns its code or < 0. */
int smtp_client_command(struct smtp_client *c, const char *line, struct smtp_reply *r);

/* Wait at most timeout_ms for the server to close the connection, reading
 * and discarding any replies. True if it closed (EOF or reset). */
bool smtp_client_wait_closed(struct smtp_client *c, int timeout_ms);

/* True if no byte is buffered or arrives within wait_ms. */
bool smtp_client_quiet(struct smtp_client *c, int wait_ms);

/* Shut down the sending side (EOF to the server); replies can still be read. */
void smtp_client_end_input(struct smtp_client *c);

void smtp_client_close(struct smtp_client *c);

/* Close with a reset (SO_LINGER 0) instead of a FIN. */
void smtp_client_abort(struct smtp_client *c);

/*
 * Parse one reply from buf[0..len). Returns the bytes it spans, 0 if the
 * reply is not complete yet, or -1 if the bytes are not an SMTP reply.
 */
long smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r);

/* The queue id in "250 2.0.0 Ok: queued as <ID>", copied to id (size >= 32);
 * false if the reply does not carry one. */
bool smtp_reply_queue_id(const struct smtp_reply *r, char *id, size_t size);

/* ---- many sessions at once --------------------------------------------------- */

/*
 * Open n connections to 127.0.0.1:port at once (non-blocking sockets, one
 * poll loop), then run one transaction on each: EHLO, MAIL FROM:<from>,
 * RCPT TO:<to>, DATA (pipelined), a small body, QUIT. Every connection is
 * opened before any transaction starts, so all n sessions are open at the
 * same time. The queue id of session i goes to ids[i] ("" if it failed).
 * Returns the number of sessions that got "250 ... queued as"; on the first
 * failure, a description of it goes to why. Bounded by timeout_ms overall.
 */
unsigned harness_many_sessions(int port, unsigned n, const char *from, const char *to,
			       char (*ids)[32], int timeout_ms, char *why, size_t why_size);

#endif
