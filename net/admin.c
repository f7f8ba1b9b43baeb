#include "net/admin.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/array.h"
#include "core/list.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/worker.h"
#include "net/admin_commands.h"

#define ADMIN_SOCKET_TEMP  ADMIN_SOCKET_NAME ".new"
#define ADMIN_READ_MS      5000  /* for the request line */
#define ADMIN_WRITE_MS     30000 /* for the whole answer */
#define ADMIN_ACCEPT_PAUSE 100   /* ms, after accept ran out of descriptors */
#define ADMIN_BACKLOG      16

struct admin;

/*
 * One client, served on a thread of its own. Its fields are guarded by the
 * admin's lock, except thread and running (the accept loop's alone) and
 * the socket's I/O (its thread's alone: the accept loop only shuts the
 * socket down, under the lock, to evict the client).
 */
struct admin_client {
	struct admin *admin;
	pthread_t thread;
	int fd;                 /* -1 once closed */
	bool running;           /* a thread was started and is not joined yet */
	bool finished;          /* that thread is done: join it */
	bool on_peer;           /* waiting for the client: its request, or room to send */
	bool evicted;           /* its socket was shut down to make room for another */
	uint64_t on_peer_since; /* CLOCK_MONOTONIC ms */
};

struct admin {
	struct admin_commands commands; /* its segments_fd is ours to close */
	char *spool_dir;
	int spool_fd; /* the spool directory: the socket lives there */
	int listen_fd;
	int stop_fd; /* eventfd: admin_stop() wakes the thread */
	pthread_t thread;
	dev_t socket_dev; /* the socket file we made, to remove only ours */
	ino_t socket_ino;
	pthread_mutex_t lock; /* the clients' shared fields */
	struct admin_client clients[ADMIN_MAX_CLIENTS];
};

/* Wait for `events` on fd until deadline (CLOCK_MONOTONIC ms). 1: ready,
 * 0: timed out, -1: admin_stop() was called. */
static int admin_wait(struct admin *a, int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = worker_clock_ms();
		if (now >= deadline)
			return 0;
		struct pollfd p[2] = {{.fd = fd, .events = events},
				      {.fd = a->stop_fd, .events = POLLIN}};
		int n = poll(p, 2, (int)(deadline - now));
		if (n < 0 && errno != EINTR)
			return 0;
		if (n > 0 && p[1].revents != 0)
			return -1;
		if (n > 0 && p[0].revents != 0)
			return 1;
	}
}

/* Read the request line; false when the client said nothing usable in
 * time (answered already when it is worth answering). */
static bool admin_read_request(struct admin *a, int fd, char *line, size_t size, struct buf *answer)
{
	size_t len = 0;
	uint64_t deadline = worker_clock_ms() + ADMIN_READ_MS;
	for (;;) {
		char *nl = memchr(line, '\n', len);
		if (nl != NULL) {
			len = (size_t)(nl - line);
			break;
		}
		if (len == size - 1) {
			buf_printf(answer, "error: the request is longer than %d octets\n",
				   ADMIN_REQUEST_MAX);
			return false;
		}
		ssize_t k = recv(fd, line + len, size - 1 - len, 0);
		if (k > 0) {
			len += (size_t)k;
			continue;
		}
		if (k == 0)
			break; /* EOF ends the line too */
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return false;
		int w = admin_wait(a, fd, POLLIN, deadline);
		if (w == 0)
			buf_printf(answer, "error: no request within %d ms\n", ADMIN_READ_MS);
		if (w <= 0)
			return false;
	}
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e) {
			buf_printf(answer, "error: the request is not printable ASCII\n");
			return false;
		}
	}
	if (len == 0) {
		buf_printf(answer, "error: empty request (try: %s)\n", ADMIN_COMMANDS_HINT);
		return false;
	}
	return true;
}

static void admin_write_answer(struct admin *a, int fd, const struct buf *answer)
{
	uint64_t deadline = worker_clock_ms() + ADMIN_WRITE_MS;
	size_t done = 0;
	while (done < buf_len(answer)) {
		ssize_t k = send(fd, buf_head(answer) + done, buf_len(answer) - done, MSG_NOSIGNAL);
		if (k > 0) {
			done += (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return; /* the client went away */
		if (admin_wait(a, fd, POLLOUT, deadline) <= 0)
			return;
	}
}

/* ---- clients, each on a thread of its own ---------------------------------------- */

/* Who is on the other end (the socket's mode decides who may ask, the log
 * says who did). */
static struct ucred admin_peer(int fd)
{
	struct ucred cred = {0};
	socklen_t cred_len = sizeof(cred);
	getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len);
	return cred;
}

/* The client now waits for its peer (on_peer: its request, or room to
 * send the answer), or for ferryd. Returns true when it was evicted: the
 * accept loop shut its socket to make room for another. */
static bool admin_client_waits(struct admin_client *c, bool on_peer)
{
	struct admin *a = c->admin;
	pthread_mutex_lock(&a->lock);
	c->on_peer = on_peer;
	c->on_peer_since = worker_clock_ms();
	bool evicted = c->evicted;
	pthread_mutex_unlock(&a->lock);
	return evicted;
}

static void admin_log_dropped(struct admin_client *c, const char *while_doing)
{
	struct ucred cred = admin_peer(c->fd);
	log_event(LOG_LEVEL_INFO,
		  "event=admin_dropped uid=%u pid=%d note=\"closed %s: every one of the %d places "
		  "was taken and this client was the one waiting longest on its side\"",
		  (unsigned)cred.uid, (int)cred.pid, while_doing, ADMIN_MAX_CLIENTS);
}

static void admin_serve(struct admin_client *c)
{
	struct admin *a = c->admin;
	char line[ADMIN_REQUEST_MAX + 1];
	struct buf answer = {0};
	const char *command = "invalid";
	admin_client_waits(c, true);
	bool asked = admin_read_request(a, c->fd, line, sizeof(line), &answer);
	if (admin_client_waits(c, false)) {
		admin_log_dropped(c, "before its request");
		buf_release(&answer);
		return;
	}
	if (asked)
		command = admin_commands_answer(&a->commands, line, &answer);
	if (buf_len(&answer) == 0) {
		buf_release(&answer);
		return;
	}
	admin_client_waits(c, true);
	admin_write_answer(a, c->fd, &answer);
	if (admin_client_waits(c, false))
		admin_log_dropped(c, "before it read its answer");
	struct ucred cred = admin_peer(c->fd);
	const char *nl = memchr(buf_head(&answer), '\n', buf_len(&answer));
	size_t first = nl != NULL ? (size_t)(nl - buf_head(&answer)) : buf_len(&answer);
	char result[256];
	log_event(LOG_LEVEL_INFO, "event=admin_request command=%s uid=%u pid=%d result=%s", command,
		  (unsigned)cred.uid, (int)cred.pid,
		  log_quote(result, sizeof(result), buf_head(&answer), first));
	buf_release(&answer);
}

static void *admin_client_main(void *arg)
{
	struct admin_client *c = arg;
	admin_serve(c);
	/* Under the lock: the accept loop shuts c->fd down only while it is
	 * still this client's, never a number the kernel has given again. */
	pthread_mutex_lock(&c->admin->lock);
	close(c->fd);
	c->fd = -1;
	c->finished = true;
	pthread_mutex_unlock(&c->admin->lock);
	return NULL;
}

/* Join the client threads that are done (all == true: every one, which
 * ends promptly once admin_stop() was called). */
static void admin_reap(struct admin *a, bool all)
{
	for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
		struct admin_client *c = &a->clients[i];
		pthread_mutex_lock(&a->lock);
		bool join = c->running && (all || c->finished);
		pthread_mutex_unlock(&a->lock);
		if (!join)
			continue;
		pthread_join(c->thread, NULL);
		c->running = false;
	}
}

/*
 * A free place for a new client, or NULL when every client is being
 * answered by ferryd (which is bounded by ADMIN_WORKERS_MS). When all are
 * taken, the client waiting longest on its own side (silent, or not
 * reading its answer) is closed to make room: no one holding a connection
 * open can keep another operator out.
 */
static struct admin_client *admin_place(struct admin *a)
{
	admin_reap(a, false);
	for (int i = 0; i < ADMIN_MAX_CLIENTS; i++)
		if (!a->clients[i].running)
			return &a->clients[i];
	struct admin_client *victim = NULL;
	pthread_mutex_lock(&a->lock);
	for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
		struct admin_client *c = &a->clients[i];
		if (c->on_peer && !c->finished && !c->evicted &&
		    (victim == NULL || c->on_peer_since < victim->on_peer_since))
			victim = c;
	}
	if (victim != NULL) {
		victim->evicted = true;
		shutdown(victim->fd, SHUT_RDWR); /* its wait on the peer ends at once */
	}
	pthread_mutex_unlock(&a->lock);
	if (victim == NULL)
		return NULL;
	pthread_join(victim->thread, NULL);
	victim->running = false;
	return victim;
}

/* Serve fd on a thread of its own (the fd is the client's from now on). */
static void admin_start_client(struct admin *a, int fd)
{
	struct admin_client *c = admin_place(a);
	const char *refusal = NULL;
	if (c == NULL) {
		refusal = "error: ferryd is answering as many ferryctl requests as it takes at "
			  "once; try again in a few seconds\n";
	} else {
		*c = (struct admin_client){.admin = a, .fd = fd, .running = true};
		int r = pthread_create(&c->thread, NULL, admin_client_main, c);
		if (r == 0)
			return;
		c->running = false;
		refusal = "error: ferryd cannot start a thread for this request; try again\n";
	}
	struct ucred cred = admin_peer(fd);
	log_event(LOG_LEVEL_WARN, "event=admin_busy uid=%u pid=%d result=\"%.*s\"",
		  (unsigned)cred.uid, (int)cred.pid, (int)strcspn(refusal, "\n"), refusal);
	send(fd, refusal, strlen(refusal), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

static void *admin_main(void *arg)
{
	struct admin *a = arg;
	for (;;) {
		struct pollfd p[2] = {{.fd = a->listen_fd, .events = POLLIN},
				      {.fd = a->stop_fd, .events = POLLIN}};
		int n = poll(p, 2, -1);
		if (n < 0 && errno != EINTR) {
			log_event(LOG_LEVEL_ERROR, "event=admin_error error=\"poll: %s\"",
				  strerror(errno));
			break;
		}
		if (n <= 0)
			continue;
		if (p[1].revents != 0)
			break;
		int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_event(LOG_LEVEL_ERROR, "event=admin_error error=\"accept: %s\"",
					  strerror(errno));
				if (admin_wait(a, -1, 0, worker_clock_ms() + ADMIN_ACCEPT_PAUSE) <
				    0)
					break;
			}
			continue;
		}
		admin_start_client(a, fd);
	}
	admin_reap(a, true);
	return NULL;
}

/* ---- start and stop ------------------------------------------------------------- */

/*
 * The address of `name` in the spool directory. sun_path holds 107 octets;
 * a deeper spool is reached through the directory's descriptor instead.
 */
static void admin_address(const struct admin *a, const char *name, struct sockaddr_un *sa,
			  socklen_t *sa_len)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	int n = snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s", a->spool_dir, name);
	if (n < 0 || (size_t)n >= sizeof(sa->sun_path))
		snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", a->spool_fd,
			 name);
	*sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sa->sun_path) + 1);
}

/* Is a process answering on the socket already (another ferryd on this
 * spool)? A refused or missing socket is stale. */
static bool admin_socket_live(const struct admin *a)
{
	struct sockaddr_un sa;
	socklen_t sa_len;
	admin_address(a, ADMIN_SOCKET_NAME, &sa, &sa_len);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	/* Non-blocking: EAGAIN means a full backlog, which is alive too. */
	bool live = connect(fd, (struct sockaddr *)&sa, sa_len) == 0 || errno == EAGAIN;
	close(fd);
	return live;
}

static int admin_listen(struct admin *a, char *err, size_t err_size)
{
	if (admin_socket_live(a)) {
		snprintf(err, err_size,
			 "%s/%s: another process (another ferryd on this spool?) answers on it",
			 a->spool_dir, ADMIN_SOCKET_NAME);
		return -EADDRINUSE;
	}
	unlinkat(a->spool_fd, ADMIN_SOCKET_TEMP, 0);
	a->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (a->listen_fd < 0) {
		int e = errno;
		snprintf(err, err_size, "admin socket: %s", strerror(e));
		return -e;
	}
	/* Bound under a temporary name and renamed once its mode is right, so
	 * the socket never exists at its real name with the umask's mode; the
	 * rename also replaces a stale socket atomically. */
	struct sockaddr_un sa;
	socklen_t sa_len;
	admin_address(a, ADMIN_SOCKET_TEMP, &sa, &sa_len);
	const char *step = "bind";
	int e;
	if (bind(a->listen_fd, (struct sockaddr *)&sa, sa_len) != 0)
		goto fail;
	step = "chmod";
	if (fchmodat(a->spool_fd, ADMIN_SOCKET_TEMP, ADMIN_SOCKET_MODE, 0) != 0)
		goto fail_unlink;
	step = "listen";
	if (listen(a->listen_fd, ADMIN_BACKLOG) != 0)
		goto fail_unlink;
	step = "rename";
	if (renameat(a->spool_fd, ADMIN_SOCKET_TEMP, a->spool_fd, ADMIN_SOCKET_NAME) != 0)
		goto fail_unlink;
	struct stat st;
	if (fstatat(a->spool_fd, ADMIN_SOCKET_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		a->socket_dev = st.st_dev;
		a->socket_ino = st.st_ino;
	}
	return 0;
fail_unlink:
	e = errno;
	unlinkat(a->spool_fd, ADMIN_SOCKET_TEMP, 0);
	errno = e;
fail:
	e = errno;
	snprintf(err, err_size, "admin socket %s/%s: %s: %s", a->spool_dir, ADMIN_SOCKET_NAME, step,
		 strerror(e));
	return -e;
}

/* The socket's mode lets the group in only if the spool lets the group
 * through: say so when a spool made before (by hand, or under an old
 * umask) does not. ferryd does not change a directory it did not make. */
static void admin_check_spool_mode(const struct admin *a)
{
	struct stat st;
	if (fstat(a->spool_fd, &st) == 0 && (st.st_mode & S_IXGRP) == 0)
		log_event(LOG_LEVEL_WARN,
			  "event=admin_group_blocked spool=%s mode=%04o note=\"the spool directory "
			  "does not let ferryd's group reach ferryctl.sock (chmod g+x it, e.g. "
			  "0750)\"",
			  a->spool_dir, (unsigned)(st.st_mode & 07777));
}

static void admin_free(struct admin *a)
{
	if (a->listen_fd >= 0)
		close(a->listen_fd);
	if (a->stop_fd >= 0)
		close(a->stop_fd);
	if (a->commands.segments_fd >= 0)
		close(a->commands.segments_fd);
	if (a->spool_fd >= 0)
		close(a->spool_fd);
	pthread_mutex_destroy(&a->lock);
	free(a->spool_dir);
	free(a);
}

int admin_start(struct admin **out, struct net_reload *reload, struct queue_store *store,
		const struct outbound_shared *delivery, const char *spool_dir, char *err,
		size_t err_size)
{
	*out = NULL;
	struct admin *a = calloc(1, sizeof(*a));
	if (a == NULL || (a->spool_dir = strdup(spool_dir)) == NULL) {
		free(a);
		snprintf(err, err_size, "admin socket: out of memory");
		return -ENOMEM;
	}
	a->commands.reload = reload;
	a->commands.store = store;
	a->commands.delivery = delivery;
	a->spool_fd = a->commands.segments_fd = a->listen_fd = a->stop_fd = -1;
	pthread_mutex_init(&a->lock, NULL);
	int r;
	a->spool_fd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->spool_fd >= 0)
		a->commands.segments_fd =
			openat(a->spool_fd, "segments", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->commands.segments_fd < 0) {
		r = -errno;
		snprintf(err, err_size, "admin socket: cannot open %s%s: %s", spool_dir,
			 a->spool_fd >= 0 ? "/segments" : "", strerror(-r));
		goto fail;
	}
	a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->stop_fd < 0) {
		r = -errno;
		snprintf(err, err_size, "admin socket: eventfd: %s", strerror(-r));
		goto fail;
	}
	if ((r = admin_listen(a, err, err_size)) != 0)
		goto fail;
	admin_check_spool_mode(a);
	/* The thread takes no signal: ferryd's main thread sigwaits for them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&a->thread, NULL, admin_main, a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		snprintf(err, err_size, "admin socket: cannot start its thread: %s", strerror(-r));
		unlinkat(a->spool_fd, ADMIN_SOCKET_NAME, 0);
		goto fail;
	}
	pthread_setname_np(a->thread, "ferry-admin");
	log_event(LOG_LEVEL_INFO, "event=admin_listening socket=%s/%s mode=%04o", spool_dir,
		  ADMIN_SOCKET_NAME, ADMIN_SOCKET_MODE);
	*out = a;
	return 0;
fail:
	admin_free(a);
	return r;
}

void admin_stop(struct admin *a)
{
	if (a == NULL)
		return;
	uint64_t one = 1;
	while (write(a->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(a->thread, NULL);
	/* A newer ferryd may have taken the name over: leave its socket be. */
	struct stat st;
	if (fstatat(a->spool_fd, ADMIN_SOCKET_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_dev == a->socket_dev && st.st_ino == a->socket_ino)
		unlinkat(a->spool_fd, ADMIN_SOCKET_NAME, 0);
	admin_free(a);
}
