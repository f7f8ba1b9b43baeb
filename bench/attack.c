/*
 * attack: the attackers of ferry-bench's attack mode. See attack.h for the contract.
 *
 * One thread, one epoll, non-blocking sockets. An attacker is a small state machine in one
 * array slot; its socket's epoll data is the slot's index and a generation, so an event that
 * was already in a batch when its connection was closed and the slot reused is recognised as
 * stale. Timed work (the drip of slowloris and trickle) runs in 10 ms ticks: the interval is
 * cut into buckets and each tick serves one bucket, so the bytes of 10,000 attackers arrive
 * spread over the interval instead of in one burst.
 */
#include "attack.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ATTACK_NAME      "ferry-bench attack"
#define TICK_MS          10
#define TICK_NS          (TICK_MS * 1000000ull)
#define EVENTS_PER_WAIT  512
#define RECV_SIZE        4096
#define RECVS_PER_EVENT  4 /* level-triggered: whatever is left comes back next turn */
#define WATCH_EVERY_NS   (200 * 1000000ull)
#define LIFETIME_SAMPLES (1u << 20) /* past this, closes are counted but not timed */
/*
 * Small socket buffers keep the kernel's memory for 10,000 attackers small, and a small
 * receive window is what an attacker that never reads offers anyway.
 */
#define SOCKET_RCVBUF 4096
#define SOCKET_SNDBUF 16384
#define PUMP_COMMAND  "EHLO x\r\n"
#define PUMP_PERIOD   (sizeof PUMP_COMMAND - 1)
#define PUMP_SIZE     (8192 * PUMP_PERIOD)
#define PUMP_SENDS    4 /* per writable event, so one attacker cannot hold the thread */
#define NO_ATTACKER   UINT32_MAX
#define COMMAND_MAX   300 /* "MAIL FROM:<" + 256 + ">\r\n" */

#define SLOWLORIS_PREFIX "EHLO slowloris.ferry-bench.example"
#define TRICKLE_HEADERS  "Subject: ferry-bench trickle\r\n\r\n"
#define TRICKLE_LINE     72 /* 70 octets of text and CRLF: no line ever starts with a dot */

const char *const attack_counter_names[ATTACK_COUNTER_COUNT] = {
	"connects",      "connect_failures", "greeted",    "refused",
	"ungreeted",     "setup_failures",   "held",       "closed",
	"error_replies", "flood_closes",     "bytes_sent",
};

static const char *const kind_names[ATTACK_KIND_COUNT] = {
	"idle", "slowloris", "trickle", "unread", "flood",
};

enum attacker_state {
	ATTACKER_UNSTARTED, /* waiting for its first connect */
	ATTACKER_WAITING,   /* closed, waiting for a reconnect */
	ATTACKER_CONNECTING,
	ATTACKER_BANNER,
	ATTACKER_EHLO,
	ATTACKER_MAIL,
	ATTACKER_RCPT,
	ATTACKER_DATA,
	ATTACKER_HOLDING, /* in its attack: parked, dripping or pumping */
};

struct attacker {
	int fd;
	uint32_t generation;
	uint32_t next_queued;
	uint8_t state;
	uint8_t head_len;
	char head[4];  /* the first octets of the reply line being read: code and separator */
	uint64_t sent; /* of the drip or pump text, to resume it at the right octet */
	uint64_t t_connect;
};

struct attacker_queue {
	uint32_t head;
	uint32_t tail;
	uint32_t length;
};

struct attack {
	struct attack_config cfg;
	pthread_t tid;
	int epoll_fd;
	struct attacker *attackers;
	struct attacker_queue unstarted;
	struct attacker_queue waiting;
	unsigned handshakes; /* connecting or between the greeting and the attack */
	unsigned holding;
	double tokens;
	uint64_t t_tokens;
	unsigned drip_buckets;
	unsigned drip_next;
	uint64_t t_drip;
	uint64_t t_watch;
	uint64_t t_start;
	uint64_t t_stop;
	uint64_t count[ATTACK_COUNTER_COUNT];
	uint32_t *lifetimes_ms;
	size_t lifetime_count;
	uint32_t *ages_ms;
	size_t age_count;
	long rss_peak_kb;
	long tcp_mem_peak_kb;
	bool rss_limit_hit;
	bool tcp_mem_limit_hit;
	bool server_gone;
	atomic_bool stop;
	/* The copy other threads read; written once per loop turn. */
	struct {
		_Atomic uint64_t count[ATTACK_COUNTER_COUNT];
		_Atomic uint64_t holding;
		_Atomic uint64_t unstarted;
		_Atomic uint64_t cpu_ns;
		atomic_long rss_peak_kb;
		atomic_long tcp_mem_peak_kb;
		atomic_bool rss_limit_hit;
		atomic_bool tcp_mem_limit_hit;
		atomic_bool server_gone;
		atomic_bool finished;
	} shared;
	char ehlo[64];
	char mail[COMMAND_MAX];
	char rcpt[COMMAND_MAX];
	char recv_buf[RECV_SIZE];
	char pump[PUMP_SIZE];
};

int attack_kind_parse(const char *word, enum attack_kind *kind)
{
	for (unsigned i = 0; i < ATTACK_KIND_COUNT; i++) {
		if (strcmp(word, kind_names[i]) == 0) {
			*kind = (enum attack_kind)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *attack_kind_name(enum attack_kind kind)
{
	return kind < ATTACK_KIND_COUNT ? kind_names[kind] : "?";
}

static uint64_t attack_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The watchdog's reading: quiet, since it runs five times a second; -1 when the pid is gone. */
static long attack_rss_kb(long pid)
{
	char path[64], line[256];
	long kb = -1;

	snprintf(path, sizeof path, "/proc/%ld/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static long page_kb(void)
{
	long size = sysconf(_SC_PAGESIZE);
	return size > 0 ? size / 1024 : 4;
}

long attack_tcp_mem_kb(void)
{
	char line[256];
	long pages = -1;
	FILE *f = fopen("/proc/net/sockstat", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		const char *mem = strncmp(line, "TCP:", 4) == 0 ? strstr(line, " mem ") : NULL;
		if (mem && sscanf(mem, " mem %ld", &pages) == 1)
			break;
	}
	fclose(f);
	return pages < 0 ? -1 : pages * page_kb();
}

long attack_tcp_mem_pressure_kb(void)
{
	long low, pressure, high;
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_mem", "r");
	int got = f ? fscanf(f, "%ld %ld %ld", &low, &pressure, &high) : 0;

	if (f)
		fclose(f);
	return got == 3 ? pressure * page_kb() : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Queues of attackers waiting to connect: intrusive, by index.                               */

static void queue_push(struct attack *a, struct attacker_queue *q, uint32_t index)
{
	a->attackers[index].next_queued = NO_ATTACKER;
	if (q->length)
		a->attackers[q->tail].next_queued = index;
	else
		q->head = index;
	q->tail = index;
	q->length++;
}

static uint32_t queue_pop(struct attack *a, struct attacker_queue *q)
{
	uint32_t index = q->head;

	q->head = a->attackers[index].next_queued;
	q->length--;
	return index;
}

/* ------------------------------------------------------------------------------------------ */
/* One attacker's connection                                                                  */

static uint32_t attacker_index(const struct attack *a, const struct attacker *at)
{
	return (uint32_t)(at - a->attackers);
}

static uint64_t attacker_tag(const struct attack *a, const struct attacker *at)
{
	return (uint64_t)at->generation << 32 | attacker_index(a, at);
}

static bool attacker_in_handshake(const struct attacker *at)
{
	return at->state >= ATTACKER_CONNECTING && at->state < ATTACKER_HOLDING;
}

static void attacker_watch(struct attack *a, struct attacker *at, int op, uint32_t events)
{
	struct epoll_event ev = {.events = events | EPOLLRDHUP, .data.u64 = attacker_tag(a, at)};

	/* Only ENOMEM can fail here; the attacker then sits unwatched until the stop. */
	epoll_ctl(a->epoll_fd, op, at->fd, &ev);
}

/* Closes the socket and queues the attacker to connect again. reset: our close, not theirs. */
static void attacker_drop(struct attack *a, struct attacker *at, bool reset)
{
	if (at->fd >= 0) {
		if (reset) {
			/* A reset leaves no TIME_WAIT behind: a flood would run out of ports. */
			struct linger now = {.l_onoff = 1, .l_linger = 0};
			setsockopt(at->fd, SOL_SOCKET, SO_LINGER, &now, sizeof now);
		}
		close(at->fd);
		at->fd = -1;
	}
	if (attacker_in_handshake(at))
		a->handshakes--;
	else if (at->state == ATTACKER_HOLDING)
		a->holding--;
	at->generation++;
	at->head_len = 0;
	at->state = ATTACKER_WAITING;
	queue_push(a, &a->waiting, attacker_index(a, at));
}

static void attacker_connect(struct attack *a, struct attacker *at)
{
	const struct attack_config *cfg = &a->cfg;
	struct sockaddr_in source = {
		.sin_family = AF_INET,
		.sin_addr.s_addr =
			htonl(ATTACK_SOURCE_FIRST + attacker_index(a, at) % cfg->sources),
	};
	int one = 1, rcvbuf = SOCKET_RCVBUF, sndbuf = SOCKET_SNDBUF;

	a->count[ATTACK_CONNECTS]++;
	at->state = ATTACKER_CONNECTING;
	a->handshakes++;
	at->t_connect = attack_now_ns();
	at->sent = 0;
	at->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (at->fd < 0)
		goto failed;
	/* The port is chosen at connect, by the whole 4-tuple: more connections per source. */
	setsockopt(at->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
	setsockopt(at->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	setsockopt(at->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
	setsockopt(at->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (bind(at->fd, (const struct sockaddr *)&source, sizeof source) < 0)
		goto failed;
	if (connect(at->fd, (const struct sockaddr *)&cfg->target, sizeof cfg->target) < 0 &&
	    errno != EINPROGRESS)
		goto failed;
	attacker_watch(a, at, EPOLL_CTL_ADD, EPOLLOUT);
	return;
failed:
	a->count[ATTACK_CONNECT_FAILURES]++;
	attacker_drop(a, at, true);
}

static bool attacker_send(struct attack *a, struct attacker *at, const char *text, size_t len)
{
	ssize_t n = send(at->fd, text, len, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (n > 0)
		a->count[ATTACK_BYTES_SENT] += (uint64_t)n;
	return n == (ssize_t)len;
}

static void attacker_lifetime(struct attack *a, const struct attacker *at)
{
	if (a->lifetime_count < LIFETIME_SAMPLES)
		a->lifetimes_ms[a->lifetime_count++] =
			(uint32_t)((attack_now_ns() - at->t_connect) / 1000000u);
}

/*
 * An attacker that never reads learns how its connection went only when it ends: the first
 * octet the server sent, still unread in the socket, tells a greeting from a refusal.
 */
static char attacker_peek_greeting(const struct attacker *at)
{
	char first;

	return recv(at->fd, &first, 1, MSG_PEEK | MSG_DONTWAIT) == 1 ? first : '\0';
}

static void attacker_classify_unread(struct attack *a, struct attacker *at)
{
	char first = attacker_peek_greeting(at);

	if (first == '4' || first == '5') {
		a->count[ATTACK_REFUSED]++;
	} else if (first == '2') {
		a->count[ATTACK_GREETED]++;
		a->count[ATTACK_CLOSED]++;
		attacker_lifetime(a, at);
	} else {
		a->count[ATTACK_UNGREETED]++;
	}
}

/* The server closed or reset the connection, or connect failed. */
static void attacker_lost(struct attack *a, struct attacker *at)
{
	if (at->state == ATTACKER_CONNECTING) {
		a->count[ATTACK_CONNECT_FAILURES]++;
	} else if (a->cfg.kind == ATTACK_UNREAD) {
		attacker_classify_unread(a, at);
	} else if (at->state == ATTACKER_BANNER) {
		a->count[ATTACK_UNGREETED]++;
	} else {
		a->count[ATTACK_CLOSED]++;
		attacker_lifetime(a, at);
	}
	attacker_drop(a, at, false);
}

static void attacker_hold(struct attack *a, struct attacker *at)
{
	a->handshakes--;
	a->holding++;
	a->count[ATTACK_HELD]++;
	at->state = ATTACKER_HOLDING;
	at->sent = 0;
}

/* Sends the next command of the setup; a command that does not fit whole ends the attacker. */
static void attacker_step(struct attack *a, struct attacker *at, enum attacker_state next,
			  const char *command)
{
	at->state = next;
	if (!attacker_send(a, at, command, strlen(command)))
		attacker_lost(a, at);
}

static void attacker_on_greeting(struct attack *a, struct attacker *at, int code)
{
	if (code != 220) {
		a->count[ATTACK_REFUSED]++;
		attacker_drop(a, at, true);
		return;
	}
	a->count[ATTACK_GREETED]++;
	switch (a->cfg.kind) {
	case ATTACK_SLOWLORIS:
		attacker_hold(a, at);
		break;
	case ATTACK_FLOOD:
		a->count[ATTACK_FLOOD_CLOSES]++;
		attacker_drop(a, at, true);
		break;
	default:
		attacker_step(a, at, ATTACKER_EHLO, a->ehlo);
		break;
	}
}

static void attacker_on_reply(struct attack *a, struct attacker *at, int code)
{
	bool positive = code / 100 == 2 || (at->state == ATTACKER_DATA && code == 354);

	if (at->state == ATTACKER_BANNER) {
		attacker_on_greeting(a, at, code);
		return;
	}
	if (at->state == ATTACKER_HOLDING) {
		/* 421 timeouts, 500 line too long: the server fights back; its close follows. */
		if (code >= 400)
			a->count[ATTACK_ERROR_REPLIES]++;
		return;
	}
	if (!positive) {
		a->count[ATTACK_SETUP_FAILURES]++;
		attacker_drop(a, at, true);
		return;
	}
	switch (at->state) {
	case ATTACKER_EHLO:
		if (a->cfg.kind == ATTACK_TRICKLE)
			attacker_step(a, at, ATTACKER_MAIL, a->mail);
		else
			attacker_hold(a, at);
		break;
	case ATTACKER_MAIL:
		attacker_step(a, at, ATTACKER_RCPT, a->rcpt);
		break;
	case ATTACKER_RCPT:
		attacker_step(a, at, ATTACKER_DATA, "DATA\r\n");
		break;
	case ATTACKER_DATA:
		attacker_hold(a, at);
		break;
	default:
		break;
	}
}

/* Feeds received octets through a tiny reply reader: only each line's code and separator. */
static void attacker_feed(struct attack *a, struct attacker *at, const char *data, size_t len)
{
	uint32_t generation = at->generation;

	for (size_t i = 0; i < len && at->generation == generation; i++) {
		if (data[i] != '\n') {
			if (at->head_len < sizeof at->head)
				at->head[at->head_len++] = data[i];
			continue;
		}
		const char *h = at->head;
		bool coded = at->head_len >= 3 && h[0] >= '1' && h[0] <= '5' && h[1] >= '0' &&
			     h[1] <= '9' && h[2] >= '0' && h[2] <= '9';
		bool last = at->head_len < 4 || h[3] != '-';
		at->head_len = 0;
		if (coded && last)
			attacker_on_reply(a, at,
					  (h[0] - '0') * 100 + (h[1] - '0') * 10 + (h[2] - '0'));
	}
}

static void attacker_on_readable(struct attack *a, struct attacker *at)
{
	uint32_t generation = at->generation;

	for (unsigned i = 0; i < RECVS_PER_EVENT && at->generation == generation; i++) {
		ssize_t n = recv(at->fd, a->recv_buf, sizeof a->recv_buf, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			attacker_lost(a, at);
			return;
		}
		attacker_feed(a, at, a->recv_buf, (size_t)n);
	}
}

/* Unread: as much "EHLO x" as the socket takes; the period keeps every command whole. */
static void attacker_pump(struct attack *a, struct attacker *at)
{
	for (unsigned i = 0; i < PUMP_SENDS; i++) {
		size_t offset = at->sent % PUMP_PERIOD;
		size_t len = PUMP_SIZE - PUMP_PERIOD;
		ssize_t n = send(at->fd, a->pump + offset, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			attacker_lost(a, at);
			return;
		}
		at->sent += (uint64_t)n;
		a->count[ATTACK_BYTES_SENT] += (uint64_t)n;
		if ((size_t)n < len)
			return;
	}
}

static void attacker_on_connected(struct attack *a, struct attacker *at)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(at->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
		attacker_lost(a, at);
		return;
	}
	if (a->cfg.kind == ATTACK_UNREAD) {
		attacker_hold(a, at);
		attacker_watch(a, at, EPOLL_CTL_MOD, EPOLLOUT);
		return;
	}
	at->state = ATTACKER_BANNER;
	attacker_watch(a, at, EPOLL_CTL_MOD, EPOLLIN);
}

static void attacker_on_event(struct attack *a, const struct epoll_event *ev)
{
	uint32_t index = (uint32_t)ev->data.u64;
	struct attacker *at = &a->attackers[index];

	if (at->generation != (uint32_t)(ev->data.u64 >> 32) || at->fd < 0)
		return; /* for a connection closed earlier in this batch */
	if (at->state == ATTACKER_CONNECTING) {
		attacker_on_connected(a, at);
		return;
	}
	if (a->cfg.kind != ATTACK_UNREAD) {
		attacker_on_readable(a, at);
		return;
	}
	if (ev->events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		attacker_lost(a, at);
	else if (ev->events & EPOLLOUT)
		attacker_pump(a, at);
}

/* ------------------------------------------------------------------------------------------ */
/* The thread: connects, drips, watches the server, publishes                                 */

static char drip_octet(const struct attack *a, uint64_t at)
{
	static const char slowloris[] = SLOWLORIS_PREFIX;
	static const char headers[] = TRICKLE_HEADERS;

	if (a->cfg.kind == ATTACK_SLOWLORIS)
		return at < sizeof slowloris - 1 ? slowloris[at] : 'x';
	if (at < sizeof headers - 1)
		return headers[at];
	uint64_t column = (at - (sizeof headers - 1)) % TRICKLE_LINE;
	return column < TRICKLE_LINE - 2 ? 'x' : column == TRICKLE_LINE - 2 ? '\r' : '\n';
}

static void attack_drip_bucket(struct attack *a, unsigned bucket)
{
	for (unsigned i = bucket; i < a->cfg.attackers; i += a->drip_buckets) {
		struct attacker *at = &a->attackers[i];
		if (at->state != ATTACKER_HOLDING)
			continue;
		char octet = drip_octet(a, at->sent);
		ssize_t n = send(at->fd, &octet, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == 1) {
			at->sent++;
			a->count[ATTACK_BYTES_SENT]++;
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			attacker_lost(a, at);
		}
	}
}

/* Serves the buckets whose tick has come; a thread that fell behind skips, never bursts. */
static void attack_drip(struct attack *a, uint64_t now)
{
	if (a->cfg.kind != ATTACK_SLOWLORIS && a->cfg.kind != ATTACK_TRICKLE)
		return;
	for (unsigned served = 0; now >= a->t_drip && served < a->drip_buckets; served++) {
		attack_drip_bucket(a, a->drip_next);
		a->drip_next = (a->drip_next + 1) % a->drip_buckets;
		a->t_drip += TICK_NS;
	}
	if (now >= a->t_drip)
		a->t_drip = now + TICK_NS;
}

static void attack_start_connects(struct attack *a, uint64_t now)
{
	unsigned limit = a->cfg.kind == ATTACK_FLOOD ? a->cfg.attackers : a->cfg.handshakes;
	unsigned rate = a->cfg.reconnect_rate;

	if (rate) {
		double burst = rate / 10.0 + 1; /* at most 100 ms worth at once */
		a->tokens += (double)(now - a->t_tokens) * rate / 1e9;
		if (a->tokens > burst)
			a->tokens = burst;
	}
	a->t_tokens = now;
	while (a->unstarted.length && a->handshakes < limit)
		attacker_connect(a, &a->attackers[queue_pop(a, &a->unstarted)]);
	/* Each waiting attacker tries once per turn at most: a failing connect cannot spin. */
	for (uint32_t n = a->waiting.length; n && a->handshakes < limit; n--) {
		if (rate && a->tokens < 1)
			break;
		if (rate)
			a->tokens -= 1;
		attacker_connect(a, &a->attackers[queue_pop(a, &a->waiting)]);
	}
}

/* Returns false once the server's memory, or the machine's, says to stop. */
static bool attack_watch_memory(struct attack *a, uint64_t now)
{
	double seconds = (double)(now - a->t_start) / 1e9;
	long tcp_kb = attack_tcp_mem_kb();
	long rss_kb = a->cfg.pid ? attack_rss_kb(a->cfg.pid) : 0;

	if (tcp_kb > a->tcp_mem_peak_kb)
		a->tcp_mem_peak_kb = tcp_kb;
	if (rss_kb > a->rss_peak_kb)
		a->rss_peak_kb = rss_kb;
	if (rss_kb < 0) {
		a->server_gone = true;
		fprintf(stderr, ATTACK_NAME ": server pid %ld is gone; attack stopped\n",
			a->cfg.pid);
	} else if (a->cfg.pid && rss_kb > a->cfg.rss_limit_kb) {
		a->rss_limit_hit = true;
		fprintf(stderr,
			ATTACK_NAME ": server VmRSS %ld kB passed the limit of %ld kB after %.1f s "
				    "with %u attackers holding; attack stopped\n",
			rss_kb, a->cfg.rss_limit_kb, seconds, a->holding);
	} else if (a->cfg.tcp_mem_limit_kb && tcp_kb > a->cfg.tcp_mem_limit_kb) {
		a->tcp_mem_limit_hit = true;
		fprintf(stderr,
			ATTACK_NAME ": the machine's TCP memory %ld kB passed the limit of %ld kB "
				    "after %.1f s with %u attackers holding; attack stopped\n",
			tcp_kb, a->cfg.tcp_mem_limit_kb, seconds, a->holding);
	} else {
		return true;
	}
	if (a->cfg.also_stop)
		atomic_store(a->cfg.also_stop, true);
	return false;
}

static bool attack_watch(struct attack *a, uint64_t now)
{
	if (now < a->t_watch)
		return true;
	a->t_watch = now + WATCH_EVERY_NS;
	return attack_watch_memory(a, now);
}

/* On loopback the attack's CPU is the machine's: the report says how much it took. */
static void attack_publish_cpu(struct attack *a)
{
	struct timespec cpu;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
		atomic_store_explicit(&a->shared.cpu_ns,
				      (uint64_t)cpu.tv_sec * 1000000000u + (uint64_t)cpu.tv_nsec,
				      memory_order_relaxed);
}

/* Called by the attackers' thread only, apart from the first, before it starts. */
static void attack_publish(struct attack *a, bool finished)
{
	for (unsigned i = 0; i < ATTACK_COUNTER_COUNT; i++)
		atomic_store_explicit(&a->shared.count[i], a->count[i], memory_order_relaxed);
	atomic_store_explicit(&a->shared.holding, a->holding, memory_order_relaxed);
	atomic_store_explicit(&a->shared.unstarted, a->unstarted.length, memory_order_relaxed);
	atomic_store_explicit(&a->shared.rss_peak_kb, a->rss_peak_kb, memory_order_relaxed);
	atomic_store_explicit(&a->shared.tcp_mem_peak_kb, a->tcp_mem_peak_kb, memory_order_relaxed);
	atomic_store_explicit(&a->shared.rss_limit_hit, a->rss_limit_hit, memory_order_relaxed);
	atomic_store_explicit(&a->shared.tcp_mem_limit_hit, a->tcp_mem_limit_hit,
			      memory_order_relaxed);
	atomic_store_explicit(&a->shared.server_gone, a->server_gone, memory_order_relaxed);
	atomic_store_explicit(&a->shared.finished, finished, memory_order_release);
}

/*
 * The ages of the attackers still holding (and, for unread ones, whether they were greeted),
 * then every connection reset at once.
 */
static void attack_teardown(struct attack *a)
{
	uint64_t now = attack_now_ns();
	struct linger reset = {.l_onoff = 1, .l_linger = 0};

	a->t_stop = now;
	for (unsigned i = 0; i < a->cfg.attackers; i++) {
		struct attacker *at = &a->attackers[i];
		if (at->state == ATTACKER_HOLDING && a->ages_ms)
			a->ages_ms[a->age_count++] = (uint32_t)((now - at->t_connect) / 1000000u);
		if (at->state == ATTACKER_HOLDING && a->cfg.kind == ATTACK_UNREAD) {
			char first = attacker_peek_greeting(at);
			a->count[ATTACK_GREETED] += first == '2';
			a->count[ATTACK_REFUSED] += first == '4' || first == '5';
		}
		if (at->fd >= 0) {
			setsockopt(at->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
			close(at->fd);
			at->fd = -1;
		}
	}
	a->holding = 0;
	a->handshakes = 0;
}

static void *attack_thread_main(void *arg)
{
	struct attack *a = arg;
	struct epoll_event events[EVENTS_PER_WAIT];
	uint64_t deadline = a->t_start + (uint64_t)a->cfg.max_seconds * 1000000000u;

	/* On loopback the attack's CPU is the server's and the load's: it yields to them. */
	if (a->cfg.nice && setpriority(PRIO_PROCESS, (id_t)gettid(), a->cfg.nice) < 0)
		fprintf(stderr, ATTACK_NAME ": nice %d: %s (running at normal priority)\n",
			a->cfg.nice, strerror(errno));
	for (uint64_t now = attack_now_ns(); now < deadline && !atomic_load(&a->stop);
	     now = attack_now_ns()) {
		attack_start_connects(a, now);
		attack_drip(a, now);
		if (!attack_watch(a, now))
			break;
		attack_publish(a, false);
		attack_publish_cpu(a);
		int n = epoll_wait(a->epoll_fd, events, EVENTS_PER_WAIT, TICK_MS);
		for (int i = 0; i < n; i++)
			attacker_on_event(a, &events[i]);
	}
	attack_teardown(a);
	attack_publish_cpu(a);
	attack_publish(a, true);
	return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Starting, reading, stopping                                                                */

static void attack_commands_build(struct attack *a)
{
	snprintf(a->ehlo, sizeof a->ehlo, "EHLO %s.ferry-bench.example\r\n",
		 attack_kind_name(a->cfg.kind));
	snprintf(a->mail, sizeof a->mail, "MAIL FROM:<%s>\r\n", a->cfg.from);
	snprintf(a->rcpt, sizeof a->rcpt, "RCPT TO:<%s>\r\n", a->cfg.to);
	for (size_t i = 0; i < PUMP_SIZE; i += PUMP_PERIOD)
		memcpy(a->pump + i, PUMP_COMMAND, PUMP_PERIOD);
}

static void attack_free(struct attack *a)
{
	if (a->epoll_fd >= 0)
		close(a->epoll_fd);
	free(a->attackers);
	free(a->lifetimes_ms);
	free(a->ages_ms);
	free(a);
}

int attack_start(const struct attack_config *config, struct attack **out)
{
	struct attack *a = calloc(1, sizeof *a);
	int err = ENOMEM;

	if (!a)
		goto failed;
	a->cfg = *config;
	a->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	a->attackers = calloc(config->attackers, sizeof *a->attackers);
	a->lifetimes_ms = malloc(LIFETIME_SAMPLES * sizeof *a->lifetimes_ms);
	a->ages_ms = malloc(config->attackers * sizeof *a->ages_ms);
	if (a->epoll_fd < 0) {
		err = errno;
		goto failed;
	}
	if (!a->attackers || !a->lifetimes_ms || !a->ages_ms)
		goto failed;
	attack_commands_build(a);
	for (uint32_t i = 0; i < config->attackers; i++) {
		a->attackers[i].fd = -1;
		queue_push(a, &a->unstarted, i);
	}
	a->drip_buckets = config->interval_ms / TICK_MS ? config->interval_ms / TICK_MS : 1;
	a->t_start = a->t_tokens = a->t_drip = a->t_watch = attack_now_ns();
	atomic_init(&a->stop, false);
	attack_publish(a, false);
	err = pthread_create(&a->tid, NULL, attack_thread_main, a);
	if (err)
		goto failed;
	*out = a;
	return 0;
failed:
	fprintf(stderr, ATTACK_NAME ": cannot start: %s\n", strerror(err));
	if (a)
		attack_free(a);
	return -err;
}

void attack_read(struct attack *a, struct attack_counters *out)
{
	out->finished = atomic_load_explicit(&a->shared.finished, memory_order_acquire);
	for (unsigned i = 0; i < ATTACK_COUNTER_COUNT; i++)
		out->count[i] = atomic_load_explicit(&a->shared.count[i], memory_order_relaxed);
	out->holding = atomic_load_explicit(&a->shared.holding, memory_order_relaxed);
	out->unstarted = atomic_load_explicit(&a->shared.unstarted, memory_order_relaxed);
	out->cpu_ns = atomic_load_explicit(&a->shared.cpu_ns, memory_order_relaxed);
	out->rss_peak_kb = atomic_load_explicit(&a->shared.rss_peak_kb, memory_order_relaxed);
	out->tcp_mem_peak_kb =
		atomic_load_explicit(&a->shared.tcp_mem_peak_kb, memory_order_relaxed);
	out->rss_limit_hit = atomic_load_explicit(&a->shared.rss_limit_hit, memory_order_relaxed);
	out->tcp_mem_limit_hit =
		atomic_load_explicit(&a->shared.tcp_mem_limit_hit, memory_order_relaxed);
	out->server_gone = atomic_load_explicit(&a->shared.server_gone, memory_order_relaxed);
}

static int duration_compare(const void *x, const void *y)
{
	uint32_t p = *(const uint32_t *)x, q = *(const uint32_t *)y;
	return (p > q) - (p < q);
}

static double duration_rank(const uint32_t *sorted, size_t n, double quantile)
{
	size_t rank = (size_t)(quantile * (double)n + 0.999999); /* nearest rank */
	return sorted[rank ? rank - 1 : 0] / 1000.0;
}

static struct attack_durations durations_summarise(uint32_t *ms, size_t n)
{
	struct attack_durations d = {.samples = n};

	if (!n)
		return d;
	qsort(ms, n, sizeof *ms, duration_compare);
	d.p50 = duration_rank(ms, n, 0.50);
	d.p90 = duration_rank(ms, n, 0.90);
	d.p99 = duration_rank(ms, n, 0.99);
	d.max = ms[n - 1] / 1000.0;
	return d;
}

void attack_stop(struct attack *a, struct attack_report *report)
{
	atomic_store(&a->stop, true);
	pthread_join(a->tid, NULL);
	*report = (struct attack_report){
		.seconds = (double)(a->t_stop - a->t_start) / 1e9,
		.lifetime = durations_summarise(a->lifetimes_ms, a->lifetime_count),
		.age = durations_summarise(a->ages_ms, a->age_count),
	};
	attack_read(a, &report->totals);
	attack_free(a);
}
