/*
 * attack: the attackers of ferry-bench's attack mode, on a thread of their own.
 *
 * Many connections from many loopback source addresses hold a server's resources the way real
 * attackers do: parked after EHLO, a command line that never ends (slowloris), a body trickled
 * a byte at a time, commands pipelined with replies never read, a connection-rate flood. When
 * the server closes one, it connects again, at a bounded rate. They run on their own thread and
 * epoll, apart from the io_uring load measured beside them; the two share only the counters,
 * which the attack publishes once per loop turn.
 *
 * Invariants: the thread ends at attack_stop(), at max_seconds, when the watched server's VmRSS
 * passes rss_limit_kb, or when the machine's TCP memory passes tcp_mem_limit_kb (an attacker
 * that never reads pins the server's send buffers: kernel memory that no RSS shows and every TCP
 * user of the machine shares), whichever comes first. Attackers bind to 127.0.0.0/8 addresses
 * and the target must be in 127.0.0.0/8 too: the attack never leaves the machine.
 */
#ifndef FERRY_BENCH_ATTACK_H
#define FERRY_BENCH_ATTACK_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum attack_kind {
	ATTACK_IDLE,      /* banner, EHLO, then nothing */
	ATTACK_SLOWLORIS, /* after the banner, one byte of a command line per interval, no line end
			   */
	ATTACK_TRICKLE,   /* EHLO, MAIL, RCPT, DATA, then one byte of body per interval, no end */
	ATTACK_UNREAD,    /* "EHLO x" pipelined as fast as the socket takes it, no reply read */
	ATTACK_FLOOD,     /* connect, read the greeting, reset; again at once */
	ATTACK_KIND_COUNT,
};

/* The first source address; attacker i uses ATTACK_SOURCE_FIRST + i % sources. */
#define ATTACK_SOURCE_FIRST 0x7f000101u /* 127.0.1.1 */
#define ATTACK_SOURCES_MAX  65536u

struct attack_config {
	enum attack_kind kind;
	struct sockaddr_in target; /* in 127.0.0.0/8 */
	unsigned attackers;        /* connections held at once (flood: in flight at once) */
	unsigned sources;          /* 1..ATTACK_SOURCES_MAX */
	unsigned interval_ms;      /* slowloris, trickle: one byte per attacker per interval */
	/* Connections per second in all after each attacker's first; 0: no cap. */
	unsigned reconnect_rate;
	/* Attackers between connect and their attack at once (not for a flood). */
	unsigned handshakes;
	int nice;              /* the thread's: the load and the server come first */
	long pid;              /* server whose VmRSS is watched; 0: none */
	long rss_limit_kb;     /* with pid: stop every attacker once VmRSS passes this */
	long tcp_mem_limit_kb; /* the same for the machine's TCP memory; 0: not watched */
	unsigned max_seconds;  /* the thread's life, whatever happens */
	const char *from;      /* trickle's envelope */
	const char *to;
	atomic_bool *also_stop; /* set too when the watchdog stops the attack; may be NULL */
};

/* Everything counted since the start, across all attackers. */
enum attack_counter {
	ATTACK_CONNECTS,         /* connect() calls */
	ATTACK_CONNECT_FAILURES, /* socket, bind or connect failed */
	ATTACK_GREETED,          /* 220 greeting received (unread: seen when it closed) */
	ATTACK_REFUSED,          /* greeting was 4xx/5xx, e.g. 421 too many connections */
	ATTACK_UNGREETED,        /* closed by the server before any greeting */
	ATTACK_SETUP_FAILURES,   /* EHLO, MAIL, RCPT or DATA refused: the attacker starts afresh */
	ATTACK_HELD,             /* times an attacker reached its attack (idle, drip, pump) */
	ATTACK_CLOSED,           /* connections the server closed after its greeting */
	ATTACK_ERROR_REPLIES,    /* 4xx/5xx replies while attacking: timeouts, line too long */
	ATTACK_FLOOD_CLOSES,     /* flood: connections the attacker reset after the greeting */
	ATTACK_BYTES_SENT,
	ATTACK_COUNTER_COUNT,
};

extern const char *const attack_counter_names[ATTACK_COUNTER_COUNT];

struct attack_counters {
	uint64_t count[ATTACK_COUNTER_COUNT];
	uint64_t holding;       /* attackers in their attack right now */
	uint64_t unstarted;     /* attackers that have not made their first connect yet */
	uint64_t cpu_ns;        /* CPU time of the attackers' thread so far */
	long rss_peak_kb;       /* highest VmRSS the watchdog read; 0 without pid */
	long tcp_mem_peak_kb;   /* highest TCP memory of the machine the watchdog read */
	bool rss_limit_hit;     /* the watchdog stopped the attack for the server's VmRSS */
	bool tcp_mem_limit_hit; /* or for the machine's TCP memory */
	bool server_gone;       /* the watched pid vanished */
	bool finished;          /* the thread has left its loop */
};

struct attack_durations {
	size_t samples;
	double p50, p90, p99, max; /* seconds */
};

struct attack_report {
	struct attack_counters totals;
	double seconds;                   /* from attack_start to the stop */
	struct attack_durations lifetime; /* of connections the server closed after its greeting */
	struct attack_durations age;      /* of attackers still holding at the stop */
};

struct attack;

/* "idle", "slowloris", "trickle", "unread", "flood". Returns 0 or -EINVAL. */
int attack_kind_parse(const char *word, enum attack_kind *kind);
const char *attack_kind_name(enum attack_kind kind);

/* The machine's TCP socket memory (the "mem" of /proc/net/sockstat) in kB; -1 if unknown. */
long attack_tcp_mem_kb(void);

/* The kernel's TCP memory pressure threshold (tcp_mem's middle value) in kB; -1 if unknown. */
long attack_tcp_mem_pressure_kb(void);

/* Starts the thread. Returns 0 or a negative errno (the reason is printed). */
int attack_start(const struct attack_config *config, struct attack **out);

/* A consistent-enough copy of the counters, from any thread. */
void attack_read(struct attack *attack, struct attack_counters *out);

/* Stops the thread, resets every attacker's connection, fills report and frees the attack. */
void attack_stop(struct attack *attack, struct attack_report *report);

#endif
