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
 * addresses are used; a ferryd started here dies with the test process
 * (PR_SET_PDEATHSIG) and harness_cleanup_all() kills (-9) whatever is
 * still running and removes the temporary directories.
 */
#ifndef FERRY_TESTS_HARNESS_H
#define FERRY_TESTS_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- one ferryd ---------------------------------------------------------- */

struct ferry_instance {
	char dir[PATH_MAX];    /* temporary directory, removed by cleanup */
	char spool[PATH_MAX];  /* <dir>/spool */
	char config[PATH_MAX]; /* <dir>/ferryd.conf */
	char log[PATH_MAX];    /* <dir>/ferryd.log: ferryd's stdout and stderr */
	int port;
	pid_t pid;       /* 0 when not running */
	int exit_status; /* from waitpid, valid once pid went back to 0 */
};

/*
 * Make a temporary directory, pick a free loopback port, and write a config
 * listening on 127.0.0.1:<port> with its spool in the directory, 2 workers,
 * relay_domains = relay.example, then `extra` (more [section] / key = value
 * lines; sections may repeat, keys may not). Returns 0 or -errno.
 */
int harness_setup(struct ferry_instance *fi, const char *extra);

/*
 * Start ferryd -c <config> and wait (at most timeout_ms) until it accepts a
 * connection on its port. Returns 0, or -1 if it exited or never listened
 * (its log is copied to stderr then).
 */
int harness_start(struct ferry_instance *fi, int timeout_ms);

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

/* The same for every instance set up since the last call (a test's fini). */
void harness_cleanup_all(void);

/* Copy ferryd's log to stderr (diagnosis of a failed test). */
void harness_dump_log(const struct ferry_instance *fi);

/* Entries in <spool>/messages (dot files excluded), or -errno. */
int harness_count_spool(const struct ferry_instance *fi);

/* Wait at most timeout_ms for the spool to hold `want` entries (a refused
 * message's file may go a moment after its client saw the close). Returns
 * the count at the end. */
int harness_wait_spool_count(const struct ferry_instance *fi, int want, int timeout_ms);

/* The names in <spool>/messages (dot files excluded), at most max of them,
 * into ids. Returns how many, or -errno. */
int harness_spool_ids(const struct ferry_instance *fi, char (*ids)[32], int max);

/* Read <spool>/messages/<id>, NUL-terminated; NULL if it cannot be read.
 * The buffer belongs to the harness: valid until the next call or
 * harness_cleanup_all(). *len gets the length when len is not NULL. */
const char *harness_read_spool_file(const struct ferry_instance *fi, const char *id, size_t *len);

/* ---- small process and file helpers --------------------------------------- */

/* The ferryd executable: $FERRY_BUILD_DIR/ferryd, default ./build/ferryd. */
const char *harness_ferryd_path(char *out, size_t size);

/* Write text to path (created or truncated). Returns 0 or -errno. */
int harness_write_file(const char *path, const char *text);

/* A free loopback TCP port: bind 127.0.0.1:0, read the port back, close. */
int harness_free_port(void);

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
