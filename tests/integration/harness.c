#include "tests/integration/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "queue/spool_view.h"

/* ---- time -------------------------------------------------------------------- */

int64_t harness_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void harness_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Milliseconds left until deadline, never negative. */
static int harness_left_ms(int64_t deadline)
{
	int64_t left = deadline - harness_now_ms();
	return left < 0 ? 0 : (int)left;
}

/* ---- files --------------------------------------------------------------------- */

int harness_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -errno;
	size_t len = strlen(text);
	int r = fwrite(text, 1, len, f) == len ? 0 : -EIO;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	return r;
}

/* The file from byte `from` on, NUL-terminated, malloc'd; NULL if it
 * cannot be read. */
static char *harness_read_file_from(const char *path, size_t from, size_t *len)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	if (from > 0 && fseeko(f, (off_t)from, SEEK_SET) != 0) {
		fclose(f);
		return NULL;
	}
	size_t cap = 4096, n = 0;
	char *data = malloc(cap);
	while (data != NULL) {
		if (cap - n < 2) {
			char *more = realloc(data, cap * 2);
			if (more == NULL) {
				free(data);
				data = NULL;
				break;
			}
			data = more;
			cap *= 2;
		}
		size_t got = fread(data + n, 1, cap - n - 1, f);
		n += got;
		if (got == 0)
			break;
	}
	fclose(f);
	if (data == NULL)
		return NULL;
	data[n] = '\0';
	if (len != NULL)
		*len = n;
	return data;
}

static int harness_rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

static void harness_rm_rf(const char *dir)
{
	if (dir[0] != '\0')
		nftw(dir, harness_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *harness_build_path(const char *program, char *out, size_t size)
{
	const char *build = getenv("FERRY_BUILD_DIR");
	if (build == NULL || build[0] == '\0')
		build = "./build";
	snprintf(out, size, "%s/%s", build, program);
	return out;
}

long harness_raise_nofile(long want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < want) {
		rlim_t target = (rlim_t)want;
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < target)
			target = rl.rlim_max;
		rl.rlim_cur = target;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? want : (long)rl.rlim_cur;
}

/* ---- ports ---------------------------------------------------------------------- */

static void harness_loopback(struct sockaddr_in *sa, int port)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

int harness_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in sa;
	harness_loopback(&sa, 0);
	socklen_t len = sizeof(sa);
	int port = -EADDRNOTAVAIL;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* ---- instances ----------------------------------------------------------------- */

/* The last spool view, body and log handed out; freed by the next call or
 * by cleanup, so a failed assertion between the two leaks nothing. */
static struct spool_view *harness_last_spool;
/* What a spool ferryd never created holds: nothing. */
static const struct spool_view harness_no_spool = {.segments_fd = -1};
static char *harness_last_body;
static char *harness_last_log;

/* Programs started by harness_spawn() and not yet reaped. */
#define HARNESS_MAX_SPAWNED 16
static pid_t harness_spawned[HARNESS_MAX_SPAWNED];

#define HARNESS_MAX_INSTANCES 16
static struct ferry_instance *harness_instances[HARNESS_MAX_INSTANCES];

static void harness_register(struct ferry_instance *fi)
{
	for (int i = 0; i < HARNESS_MAX_INSTANCES; i++)
		if (harness_instances[i] == fi)
			return;
	for (int i = 0; i < HARNESS_MAX_INSTANCES; i++)
		if (harness_instances[i] == NULL) {
			harness_instances[i] = fi;
			return;
		}
}

/* Does `extra` (config lines) set `key`? */
static bool harness_extra_sets(const char *extra, const char *key)
{
	size_t n = strlen(key);
	for (const char *p = extra; p != NULL && *p != '\0'; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		p += strspn(p, " \t");
		if (strncmp(p, key, n) == 0 && (p[n] == '=' || p[n] == ' ' || p[n] == '\t'))
			return true;
	}
	return false;
}

int harness_setup(struct ferry_instance *fi, const char *extra)
{
	memset(fi, 0, sizeof(*fi));
	const char *tmp = getenv("TMPDIR");
	if (tmp == NULL || tmp[0] == '\0')
		tmp = "/tmp";
	snprintf(fi->dir, sizeof(fi->dir), "%s/ferry-it-XXXXXX", tmp);
	if (mkdtemp(fi->dir) == NULL) {
		int e = -errno;
		fi->dir[0] = '\0';
		return e;
	}
	harness_register(fi);
	snprintf(fi->spool, sizeof(fi->spool), "%s/spool", fi->dir);
	snprintf(fi->config, sizeof(fi->config), "%s/ferryd.conf", fi->dir);
	snprintf(fi->log, sizeof(fi->log), "%s/ferryd.log", fi->dir);
	fi->port = harness_free_port();
	if (fi->port <= 0)
		return fi->port < 0 ? fi->port : -EADDRNOTAVAIL;

	size_t extra_len = extra != NULL ? strlen(extra) : 0;
	size_t size = extra_len + 2 * PATH_MAX + 512;
	char *text = malloc(size);
	if (text == NULL)
		return -ENOMEM;
	snprintf(text, size,
		 "# written by the integration test harness\n"
		 "[server]\n"
		 "listen = 127.0.0.1:%d\n"
		 "hostname = relay.test\n"
		 "workers = 2\n"
		 "[relay]\n"
		 "relay_domains = relay.example\n"
		 "[spool]\n"
		 "directory = %s\n"
		 "%s"
		 "%s"
		 "%s"
		 "%s\n",
		 fi->port, fi->spool,
		 /* No /metrics unless a test asks: ferryds side by side would
		  * want the same port. */
		 harness_extra_sets(extra, "address") ? "" : "[metrics]\naddress =\n",
		 harness_extra_sets(extra, "max_connections")
			 ? ""
			 : "[limits]\nmax_connections = " HARNESS_MAX_CONNECTIONS_TEXT "\n",
		 /* Tests talk to loopback only, DNS included (nothing listens
		  * on port 1: a lookup fails at once, and mail waits); and
		  * relay.example's mail stays queued for the tests that read
		  * the spool back. */
		 harness_extra_sets(extra, "dns_servers")
			 ? "[domain relay.example]\nhold = yes\n"
			 : "[delivery]\ndns_servers = 127.0.0.1:1\nmax_outbound_connections = 64\n"
			   "[domain relay.example]\nhold = yes\n",
		 extra != NULL ? extra : "");
	int r = harness_write_file(fi->config, text);
	free(text);
	return r;
}

void harness_dump_log(const struct ferry_instance *fi)
{
	/* The end tells what went wrong (a sanitizer's report is last); a
	 * load test's log can be far too long to print whole. */
	enum { TAIL = 64 * 1024 };
	size_t size = harness_log_size(fi);
	size_t from = size > TAIL ? size - TAIL : 0;
	char *log = harness_read_file_from(fi->log, from, NULL);
	if (log == NULL)
		return;
	fprintf(stderr, "---- %s%s ----\n%s---- end of log ----\n", fi->log,
		from > 0 ? " (its last 64 KiB)" : "", log);
	free(log);
}

/* Decode a wait status into the harness's result convention. */
static int harness_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

/* Reap fi->pid within timeout_ms. Returns the exit code or -1. */
static int harness_reap(struct ferry_instance *fi, int timeout_ms)
{
	if (fi->pid <= 0)
		return fi->exit_status;
	int64_t deadline = harness_now_ms() + timeout_ms;
	for (;;) {
		int status;
		pid_t r = waitpid(fi->pid, &status, WNOHANG);
		if (r == fi->pid) {
			fi->pid = 0;
			fi->exit_status = harness_exit_code(status);
			if (fi->exit_status != 0)
				harness_dump_log(fi);
			return fi->exit_status;
		}
		if (r < 0 && errno != EINTR) {
			fi->pid = 0;
			fi->exit_status = -1;
			return -1;
		}
		if (harness_now_ms() >= deadline)
			return -1;
		harness_sleep_ms(10);
	}
}

static bool harness_port_accepts(int port, int timeout_ms)
{
	struct smtp_client c;
	if (smtp_client_connect(&c, port, timeout_ms) != 0)
		return false;
	smtp_client_close(&c);
	return true;
}

/* Has the ferryd started when the log was `from` bytes long said that it
 * listens? (Its log is appended to across restarts.) */
static bool harness_log_says_listening(const struct ferry_instance *fi, off_t from)
{
	int fd = open(fi->log, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	char text[16384];
	bool found = false;
	for (off_t at = from; !found;) {
		/* Overlap reads so a line split between two is still seen. */
		ssize_t n = pread(fd, text, sizeof(text) - 1, at);
		if (n <= 0)
			break;
		text[n] = '\0';
		found = strstr(text, ": listening on ") != NULL;
		if (n < (ssize_t)sizeof(text) - 1)
			break;
		at += n - 256;
	}
	close(fd);
	return found;
}

/*
 * Fork and exec argv[0] (PATH searched) with stdin from /dev/null and
 * stdout, stderr to out_fd, err_fd (closed here in the parent), env added
 * to the environment, and fi's start options (umask, limits, capabilities,
 * user) when fi is not NULL.
 * The child dies with this process (a crashed or timed-out test leaves
 * nothing running). Returns its pid or -1.
 */
static pid_t harness_fork_exec(char *const argv[], int out_fd, int err_fd, const char *const *env,
			       const struct ferry_instance *fi)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null < 0 || out_fd < 0 || err_fd < 0)
			_exit(127);
		dup2(null, STDIN_FILENO);
		dup2(out_fd, STDOUT_FILENO);
		dup2(err_fd, STDERR_FILENO);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		for (const char *const *e = env; e != NULL && *e != NULL; e++)
			putenv((char *)*e);
		if (fi != NULL && fi->set_umask)
			umask(fi->umask);
		if (fi != NULL && (fi->nofile_soft > 0 || fi->nofile_hard > 0)) {
			struct rlimit rl;
			getrlimit(RLIMIT_NOFILE, &rl);
			if (fi->nofile_hard > 0)
				rl.rlim_max = (rlim_t)fi->nofile_hard;
			rl.rlim_cur = fi->nofile_soft > 0 ? (rlim_t)fi->nofile_soft : rl.rlim_max;
			if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
				_exit(127);
		}
		for (int cap = 0; fi != NULL && geteuid() == 0 && cap < 64; cap++)
			if ((fi->drop_capabilities >> cap & 1) != 0 &&
			    prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
				_exit(127); /* EINVAL: no such capability in this kernel */
		if (fi != NULL && fi->run_as) {
			if (setgroups(0, NULL) != 0 ||
			    setresgid(fi->run_gid, fi->run_gid, fi->run_gid) != 0 ||
			    setresuid(fi->run_uid, fi->run_uid, fi->run_uid) != 0)
				_exit(127);
			/* A change of credentials clears the parent-death signal. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(127);
		}
		execvp(argv[0], argv);
		dprintf(STDERR_FILENO, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (out_fd >= 0)
		close(out_fd);
	if (err_fd >= 0 && err_fd != out_fd)
		close(err_fd);
	return pid;
}

int harness_start(struct ferry_instance *fi, int timeout_ms)
{
	return harness_start_env(fi, timeout_ms, NULL);
}

int harness_start_env(struct ferry_instance *fi, int timeout_ms, const char *const *env)
{
	char path[PATH_MAX];
	harness_ferryd_path(path, sizeof(path));
	harness_register(fi);
	struct stat log_st;
	off_t log_start = stat(fi->log, &log_st) == 0 ? log_st.st_size : 0;
	int log = open(fi->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	char *argv[] = {path, "-c", fi->config, NULL};
	pid_t pid = harness_fork_exec(argv, log, log, env, fi);
	if (pid < 0)
		return -1;
	fi->pid = pid;
	fi->exit_status = 0;
	int64_t deadline = harness_now_ms() + timeout_ms;
	for (int attempt = 0; attempt < 100000; attempt++) {
		/* Ready when this ferryd says it listens and the port answers:
		 * the port alone may still be answered, for a moment, by the
		 * socket of a ferryd that just died (kill -9) on it. */
		if (harness_log_says_listening(fi, log_start) &&
		    harness_port_accepts(fi->port, 200))
			return 0;
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			fi->pid = 0;
			fi->exit_status = harness_exit_code(status);
			fprintf(stderr, "harness: ferryd exited early (status %d)\n",
				fi->exit_status);
			harness_dump_log(fi);
			return -1;
		}
		if (harness_now_ms() >= deadline)
			break;
		harness_sleep_ms(20);
	}
	fprintf(stderr, "harness: ferryd did not accept connections on port %d in %d ms\n",
		fi->port, timeout_ms);
	harness_dump_log(fi);
	return -1;
}

int harness_stop(struct ferry_instance *fi, int timeout_ms)
{
	if (fi->pid <= 0)
		return fi->exit_status;
	kill(fi->pid, SIGTERM);
	return harness_reap(fi, timeout_ms);
}

int harness_wait_exit(struct ferry_instance *fi, int timeout_ms)
{
	return harness_reap(fi, timeout_ms);
}

int harness_crash(struct ferry_instance *fi, int timeout_ms)
{
	if (fi->pid <= 0)
		return 0;
	kill(fi->pid, SIGKILL);
	int64_t deadline = harness_now_ms() + timeout_ms;
	for (;;) {
		int status;
		pid_t r = waitpid(fi->pid, &status, WNOHANG);
		if (r == fi->pid || (r < 0 && errno != EINTR)) {
			fi->pid = 0;
			fi->exit_status = r == fi->pid ? harness_exit_code(status) : -1;
			return 0;
		}
		if (harness_now_ms() >= deadline)
			return -1;
		harness_sleep_ms(5);
	}
}

void harness_cleanup(struct ferry_instance *fi)
{
	if (fi->pid > 0) {
		kill(fi->pid, SIGKILL);
		int status;
		while (waitpid(fi->pid, &status, 0) < 0 && errno == EINTR)
			;
		fi->pid = 0;
	}
	harness_rm_rf(fi->dir);
	fi->dir[0] = '\0';
	for (int i = 0; i < HARNESS_MAX_INSTANCES; i++)
		if (harness_instances[i] == fi)
			harness_instances[i] = NULL;
}

void harness_cleanup_all(void)
{
	spool_view_close(harness_last_spool);
	harness_last_spool = NULL;
	free(harness_last_body);
	harness_last_body = NULL;
	free(harness_last_log);
	harness_last_log = NULL;
	for (int i = 0; i < HARNESS_MAX_SPAWNED; i++) {
		if (harness_spawned[i] <= 0)
			continue;
		kill(harness_spawned[i], SIGKILL);
		int status;
		while (waitpid(harness_spawned[i], &status, 0) < 0 && errno == EINTR)
			;
		harness_spawned[i] = 0;
	}
	for (int i = 0; i < HARNESS_MAX_INSTANCES; i++)
		if (harness_instances[i] != NULL)
			harness_cleanup(harness_instances[i]);
}

/* ---- the spool ---------------------------------------------------------------- */

int harness_spool_read(const char *spool_dir, struct spool_view **out)
{
	/* Recovery logs what it judges (a torn tail is normal while ferryd
	 * writes); ferryd's own log says it for real. Keep errors only. */
	log_setup(LOG_LEVEL_ERROR, LOG_TO_STDERR);
	char err[PATH_MAX + 256];
	int r = spool_view_open(out, spool_dir, err, sizeof(err));
	if (r != 0 && r != -ENOENT)
		fprintf(stderr, "harness: %s\n", err);
	return r;
}

void harness_spool_free(struct spool_view *sp)
{
	spool_view_close(sp);
}

size_t harness_spool_copies(const struct spool_view *sp, const char *id)
{
	return spool_view_find(sp, id) != NULL ? 1 : 0;
}

/* m's body, malloc'd and NUL-terminated, into *body; 0, SPOOL_VIEW_MOVED or
 * -errno. */
static int harness_read_body(const struct spool_view *sp, const struct spool_view_message *m,
			     char **body, size_t *len)
{
	struct buf b = {0};
	char why[256];
	int r = spool_view_read_body(sp->segments_fd, m->writer, m->extents, m->nextents, &b, why,
				     sizeof(why));
	if (r == 0 && buf_len(&b) != m->body_len)
		r = -EIO;
	if (r == 0 && buf_append(&b, "", 1) != 0)
		r = -ENOMEM;
	if (r != 0) {
		buf_release(&b);
		return r;
	}
	/* Never consumed from: the bytes start at the storage. */
	*body = b.data;
	if (len != NULL)
		*len = (size_t)m->body_len;
	return 0;
}

char *harness_spool_body(const struct spool_view *sp, const struct spool_view_message *m,
			 size_t *len)
{
	char *body = NULL;
	return harness_read_body(sp, m, &body, len) == 0 ? body : NULL;
}

/* Read fi's spool into the harness's view (left NULL when ferryd never
 * created the spool). */
static int harness_read_instance_spool(const struct ferry_instance *fi)
{
	spool_view_close(harness_last_spool);
	harness_last_spool = NULL;
	int r = harness_spool_read(fi->spool, &harness_last_spool);
	return r == -ENOENT ? 0 : r;
}

const struct spool_view *harness_spool_view(const struct ferry_instance *fi)
{
	if (harness_read_instance_spool(fi) != 0)
		return NULL;
	return harness_last_spool != NULL ? harness_last_spool : &harness_no_spool;
}

int harness_count_spool(const struct ferry_instance *fi)
{
	int r = harness_read_instance_spool(fi);
	if (r < 0)
		return r;
	return harness_last_spool != NULL ? (int)harness_last_spool->count : 0;
}

int harness_spool_ids(const struct ferry_instance *fi, char (*ids)[32], int max)
{
	int r = harness_read_instance_spool(fi);
	if (r < 0)
		return r;
	const struct spool_view *sp =
		harness_last_spool != NULL ? harness_last_spool : &harness_no_spool;
	for (size_t i = 0; i < sp->count && i < (size_t)max; i++)
		snprintf(ids[i], sizeof(ids[i]), "%s", sp->messages[i].id);
	return (int)sp->count;
}

const struct spool_view_message *harness_spool_message(const struct ferry_instance *fi,
						       const char *id, const char **body,
						       size_t *body_len)
{
	free(harness_last_body);
	harness_last_body = NULL;
	/* Compaction may move the message between the view and the body
	 * read: then read the view again. */
	for (int attempt = 0; attempt < 3; attempt++) {
		const struct spool_view *sp = harness_spool_view(fi);
		const struct spool_view_message *m = sp != NULL ? spool_view_find(sp, id) : NULL;
		if (m == NULL)
			return NULL;
		int r = harness_read_body(sp, m, &harness_last_body, body_len);
		if (r == SPOOL_VIEW_MOVED)
			continue;
		if (r != 0)
			return NULL;
		if (body != NULL)
			*body = harness_last_body;
		return m;
	}
	return NULL;
}

const char *harness_log(const struct ferry_instance *fi)
{
	return harness_log_since(fi, 0);
}

const char *harness_log_since(const struct ferry_instance *fi, size_t offset)
{
	free(harness_last_log);
	harness_last_log = harness_read_file_from(fi->log, offset, NULL);
	return harness_last_log != NULL ? harness_last_log : "";
}

size_t harness_log_size(const struct ferry_instance *fi)
{
	struct stat st;
	return stat(fi->log, &st) == 0 ? (size_t)st.st_size : 0;
}

int harness_log_count(const struct ferry_instance *fi, const char *text)
{
	const char *log = harness_log(fi);
	int n = 0;
	for (const char *p = strstr(log, text); p != NULL; p = strstr(p + 1, text))
		n++;
	return n;
}

/* ---- running other programs --------------------------------------------------- */

int harness_run(char *const argv[], char *out, size_t out_size, char *err, size_t err_size,
		int timeout_ms)
{
	int out_pipe[2], err_pipe[2];
	if (pipe2(out_pipe, O_CLOEXEC) != 0)
		return -1;
	if (pipe2(err_pipe, O_CLOEXEC) != 0) {
		close(out_pipe[0]);
		close(out_pipe[1]);
		return -1;
	}
	pid_t pid = harness_fork_exec(argv, out_pipe[1], err_pipe[1], NULL, NULL);
	if (pid < 0) {
		close(out_pipe[0]);
		close(err_pipe[0]);
		return -1;
	}
	struct {
		int fd;
		char *buf;
		size_t size, len;
	} streams[2] = {{out_pipe[0], out, out_size, 0}, {err_pipe[0], err, err_size, 0}};
	int64_t deadline = harness_now_ms() + timeout_ms;
	bool timed_out = false;
	for (int turn = 0; turn < 1000000 && (streams[0].fd >= 0 || streams[1].fd >= 0); turn++) {
		struct pollfd pfd[2];
		for (int i = 0; i < 2; i++) {
			pfd[i].fd = streams[i].fd;
			pfd[i].events = POLLIN;
			pfd[i].revents = 0;
		}
		int left = harness_left_ms(deadline);
		if (left == 0) {
			timed_out = true;
			break;
		}
		int r = poll(pfd, 2, left);
		if (r < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			if (streams[i].fd < 0 || pfd[i].revents == 0)
				continue;
			char chunk[4096];
			ssize_t got = read(streams[i].fd, chunk, sizeof(chunk));
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				close(streams[i].fd);
				streams[i].fd = -1;
				continue;
			}
			if (streams[i].buf != NULL && streams[i].size > 0) {
				size_t room = streams[i].size - 1 - streams[i].len;
				size_t take = (size_t)got < room ? (size_t)got : room;
				memcpy(streams[i].buf + streams[i].len, chunk, take);
				streams[i].len += take;
			}
		}
	}
	for (int i = 0; i < 2; i++) {
		if (streams[i].fd >= 0)
			close(streams[i].fd);
		if (streams[i].buf != NULL && streams[i].size > 0)
			streams[i].buf[streams[i].len] = '\0';
	}
	if (timed_out)
		kill(pid, SIGKILL);
	int status = 0;
	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return -1;
		if (waited >= timeout_ms + 1000 || harness_now_ms() >= deadline) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			timed_out = true;
			break;
		}
		harness_sleep_ms(10);
	}
	if (timed_out) {
		fprintf(stderr, "harness: %s did not finish in %d ms\n", argv[0], timeout_ms);
		return -1;
	}
	return harness_exit_code(status);
}

/* ---- programs in the background ---------------------------------------------- */

pid_t harness_spawn(char *const argv[], const char *out_path)
{
	int slot = -1;
	for (int i = 0; i < HARNESS_MAX_SPAWNED && slot < 0; i++)
		if (harness_spawned[i] <= 0)
			slot = i;
	if (slot < 0)
		return -1;
	int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	pid_t pid = harness_fork_exec(argv, out, out, NULL, NULL);
	if (pid < 0)
		return -1;
	harness_spawned[slot] = pid;
	return pid;
}

pid_t harness_start_sink(int port, unsigned count, const char *out_path, int timeout_ms)
{
	char bench[PATH_MAX], count_text[16], listen[32];
	snprintf(count_text, sizeof(count_text), "%u", count);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *argv[] = {(char *)harness_build_path("ferry-bench", bench, sizeof(bench)),
			"sink",
			"--json",
			"--count",
			count_text,
			listen,
			NULL};
	pid_t pid = harness_spawn(argv, out_path);
	if (pid < 0)
		return -1;
	int64_t deadline = harness_now_ms() + timeout_ms;
	while (harness_now_ms() < deadline) {
		if (harness_port_accepts(port, 200))
			return pid;
		if (harness_wait_pid(pid, 0) >= 0)
			break; /* it exited: the port was taken, or it could not start */
		harness_sleep_ms(20);
	}
	fprintf(stderr, "harness: the sink on %s did not start in %d ms\n", listen, timeout_ms);
	return -1;
}

int harness_wait_pid(pid_t pid, int timeout_ms)
{
	int64_t deadline = harness_now_ms() + timeout_ms;
	for (;;) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid || (r < 0 && errno != EINTR)) {
			for (int i = 0; i < HARNESS_MAX_SPAWNED; i++)
				if (harness_spawned[i] == pid)
					harness_spawned[i] = 0;
			return r == pid ? harness_exit_code(status) : -1;
		}
		if (harness_now_ms() >= deadline)
			return -1;
		harness_sleep_ms(5);
	}
}

/* ---- SMTP replies ---------------------------------------------------------------- */

static bool harness_reply_line_ok(const char *line, size_t len)
{
	return len >= 3 && line[0] >= '1' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
	       line[2] >= '0' && line[2] <= '9' && (len == 3 || line[3] == ' ' || line[3] == '-');
}

long smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r)
{
	size_t pos = 0, text_len = 0;
	r->code = 0;
	r->lines = 0;
	r->text[0] = '\0';
	for (unsigned lines = 0; lines < 10000; lines++) {
		const char *lf = memchr(buf + pos, '\n', len - pos);
		if (lf == NULL)
			return 0;
		size_t line_len = (size_t)(lf - (buf + pos));
		const char *line = buf + pos;
		if (line_len > 0 && line[line_len - 1] == '\r')
			line_len--;
		if (!harness_reply_line_ok(line, line_len))
			return -1;
		int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (r->lines > 0 && code != r->code)
			return -1;
		r->code = code;
		if (text_len + line_len + 2 < sizeof(r->text)) {
			if (r->lines > 0)
				r->text[text_len++] = '\n';
			memcpy(r->text + text_len, line, line_len);
			text_len += line_len;
			r->text[text_len] = '\0';
		}
		r->lines++;
		pos = (size_t)(lf - buf) + 1;
		if (line_len == 3 || line[3] == ' ')
			return (long)pos;
	}
	return -1;
}

bool smtp_reply_queue_id(const struct smtp_reply *r, char *id, size_t size)
{
	const char *p = strstr(r->text, "queued as ");
	if (r->code != 250 || p == NULL || size < 2)
		return false;
	p += strlen("queued as ");
	size_t n = 0;
	while (p[n] != '\0' && p[n] != ' ' && p[n] != '\n' && n < size - 1)
		n++;
	if (n == 0)
		return false;
	memcpy(id, p, n);
	id[n] = '\0';
	return true;
}

/* ---- the blocking SMTP client -------------------------------------------------- */

int smtp_client_connect(struct smtp_client *c, int port, int timeout_ms)
{
	return smtp_client_connect_from(c, NULL, port, timeout_ms);
}

int smtp_client_connect_from(struct smtp_client *c, const char *source, int port, int timeout_ms)
{
	memset(c, 0, sizeof(*c));
	c->timeout_ms = timeout_ms;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0)
		return -errno;
	struct sockaddr_in sa;
	harness_loopback(&sa, port);
	int r = 0;
	if (source != NULL) {
		struct sockaddr_in from = {.sin_family = AF_INET};
		if (inet_pton(AF_INET, source, &from.sin_addr) != 1 ||
		    (ntohl(from.sin_addr.s_addr) >> 24) != 127) {
			close(c->fd);
			c->fd = -1;
			return -EINVAL; /* loopback only */
		}
		if (bind(c->fd, (struct sockaddr *)&from, sizeof(from)) != 0) {
			r = -errno;
			close(c->fd);
			c->fd = -1;
			return r;
		}
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		if (errno != EINPROGRESS) {
			r = -errno;
		} else {
			struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
			int n = poll(&pfd, 1, timeout_ms);
			int soerr = 0;
			socklen_t slen = sizeof(soerr);
			if (n <= 0)
				r = -ETIMEDOUT;
			else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0)
				r = -errno;
			else if (soerr != 0)
				r = -soerr;
		}
	}
	/* Nothing listening, and the kernel picked the port itself as our
	 * ephemeral one: TCP's simultaneous open connects the socket to
	 * itself. That is no server (it made a stopped ferryd look started). */
	struct sockaddr_in local;
	socklen_t local_len = sizeof(local);
	if (r == 0 && getsockname(c->fd, (struct sockaddr *)&local, &local_len) == 0 &&
	    local.sin_port == sa.sin_port && local.sin_addr.s_addr == sa.sin_addr.s_addr)
		r = -ECONNREFUSED;
	if (r != 0) {
		close(c->fd);
		c->fd = -1;
		return r;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

int smtp_client_send(struct smtp_client *c, const void *data, size_t len)
{
	const char *p = data;
	int64_t deadline = harness_now_ms() + c->timeout_ms;
	size_t done = 0;
	while (done < len) {
		ssize_t n = send(c->fd, p + done, len - done, MSG_NOSIGNAL);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
		int left = harness_left_ms(deadline);
		if (left == 0 || poll(&pfd, 1, left) == 0)
			return -ETIMEDOUT;
	}
	return 0;
}

int smtp_client_send_str(struct smtp_client *c, const char *text)
{
	return smtp_client_send(c, text, strlen(text));
}

/* Read what is there (waiting at most until deadline). Returns bytes read,
 * 0 on EOF, -ETIMEDOUT, -ENOBUFS when the buffer is full, or -errno. */
static long smtp_client_fill(struct smtp_client *c, int64_t deadline)
{
	if (c->in_len == sizeof(c->in))
		return -ENOBUFS;
	for (int spins = 0; spins < 100000; spins++) {
		ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
		if (n >= 0) {
			c->in_len += (size_t)n;
			return n;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		int left = harness_left_ms(deadline);
		if (left == 0 || poll(&pfd, 1, left) == 0)
			return -ETIMEDOUT;
	}
	return -ETIMEDOUT;
}

int smtp_client_read_reply(struct smtp_client *c, struct smtp_reply *r)
{
	int64_t deadline = harness_now_ms() + c->timeout_ms;
	for (int reads = 0; reads < 100000; reads++) {
		long used = smtp_reply_parse(c->in, c->in_len, r);
		if (used > 0) {
			memmove(c->in, c->in + used, c->in_len - (size_t)used);
			c->in_len -= (size_t)used;
			return r->code;
		}
		if (used < 0) {
			snprintf(r->text, sizeof(r->text), "not an SMTP reply: %.*s",
				 (int)(c->in_len > 200 ? 200 : c->in_len), c->in);
			r->code = SMTP_REPLY_ERROR;
			return r->code;
		}
		long n = smtp_client_fill(c, deadline);
		if (n == 0 || n == -ECONNRESET) {
			snprintf(r->text, sizeof(r->text), "connection closed%s%.*s",
				 c->in_len ? " after: " : "",
				 (int)(c->in_len > 200 ? 200 : c->in_len), c->in);
			r->code = SMTP_REPLY_CLOSED;
			return r->code;
		}
		if (n == -ETIMEDOUT) {
			snprintf(r->text, sizeof(r->text), "no reply in %d ms", c->timeout_ms);
			r->code = SMTP_REPLY_TIMEOUT;
			return r->code;
		}
		if (n < 0) {
			snprintf(r->text, sizeof(r->text), "socket error: %s", strerror((int)-n));
			r->code = SMTP_REPLY_ERROR;
			return r->code;
		}
	}
	r->code = SMTP_REPLY_ERROR;
	return r->code;
}

int smtp_client_command(struct smtp_client *c, const char *line, struct smtp_reply *r)
{
	size_t len = strlen(line);
	char *wire = malloc(len + 3);
	if (wire == NULL) {
		r->code = SMTP_REPLY_ERROR;
		return r->code;
	}
	memcpy(wire, line, len);
	memcpy(wire + len, "\r\n", 3);
	int s = smtp_client_send(c, wire, len + 2);
	free(wire);
	if (s != 0) {
		snprintf(r->text, sizeof(r->text), "send failed: %s", strerror(-s));
		r->code = SMTP_REPLY_ERROR;
		return r->code;
	}
	return smtp_client_read_reply(c, r);
}

bool smtp_client_wait_closed(struct smtp_client *c, int timeout_ms)
{
	int64_t deadline = harness_now_ms() + timeout_ms;
	for (int reads = 0; reads < 100000; reads++) {
		c->in_len = 0; /* whatever is still said is not wanted */
		long n = smtp_client_fill(c, deadline);
		if (n == 0 || n == -ECONNRESET || n == -EPIPE)
			return true;
		if (n == -ETIMEDOUT || n < 0)
			return false;
	}
	return false;
}

bool smtp_client_quiet(struct smtp_client *c, int wait_ms)
{
	if (c->in_len > 0)
		return false;
	long n = smtp_client_fill(c, harness_now_ms() + wait_ms);
	return n == -ETIMEDOUT;
}

void smtp_client_end_input(struct smtp_client *c)
{
	shutdown(c->fd, SHUT_WR);
}

void smtp_client_close(struct smtp_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

void smtp_client_abort(struct smtp_client *c)
{
	struct linger hard = {.l_onoff = 1, .l_linger = 0};
	if (c->fd >= 0)
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
	smtp_client_close(c);
}

/* ---- many sessions at once ---------------------------------------------------------- */

enum many_step {
	MANY_CONNECTING,
	MANY_GREETING, /* waiting for 220 */
	MANY_HELLO,    /* waiting for every session's 220, then EHLO */
	MANY_EHLO,     /* waiting for 250 */
	MANY_ENVELOPE, /* waiting for 250 250 354 */
	MANY_BODY,     /* waiting for 250 queued as */
	MANY_QUEUED,   /* waiting for every session's 250, then QUIT */
	MANY_QUIT,     /* waiting for 221 */
	MANY_DONE,
	MANY_FAILED,
};

struct many_session {
	int fd;
	enum many_step step;
	unsigned replies; /* replies seen in this step */
	char in[2048];
	size_t in_len;
	char out[1024];
	size_t out_len, out_sent;
};

static void many_fail(struct many_session *s, unsigned i, const char *what, const char *detail,
		      char *why, size_t why_size, bool *failed_once)
{
	if (!*failed_once) {
		snprintf(why, why_size, "session %u: %s%s%s", i, what, detail ? ": " : "",
			 detail ? detail : "");
		*failed_once = true;
	}
	s->step = MANY_FAILED;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static void many_queue(struct many_session *s, const char *text)
{
	size_t len = strlen(text);
	if (len > sizeof(s->out) - s->out_len)
		len = sizeof(s->out) - s->out_len;
	memcpy(s->out + s->out_len, text, len);
	s->out_len += len;
}

/* One whole reply arrived in step s->step: check it and move on. Returns
 * false (after setting the failure) when it was not what a relay says. */
static bool many_on_reply(struct many_session *s, const struct smtp_reply *r, const char *from,
			  const char *to, char *id, size_t id_size)
{
	char text[512];
	switch (s->step) {
	case MANY_GREETING:
		if (r->code != 220)
			return false;
		s->step = MANY_HELLO;
		return true;
	case MANY_EHLO:
		if (r->code != 250)
			return false;
		snprintf(text, sizeof(text), "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", from,
			 to);
		many_queue(s, text);
		s->step = MANY_ENVELOPE;
		s->replies = 0;
		return true;
	case MANY_ENVELOPE: {
		static const int expected[3] = {250, 250, 354};
		if (r->code != expected[s->replies])
			return false;
		if (++s->replies < 3)
			return true;
		many_queue(s, "Subject: one of many\r\n\r\nHello from a concurrent session.\r\n"
			      ".\r\n");
		s->step = MANY_BODY;
		return true;
	}
	case MANY_BODY:
		if (!smtp_reply_queue_id(r, id, id_size))
			return false;
		s->step = MANY_QUEUED;
		return true;
	case MANY_QUIT:
		if (r->code != 221)
			return false;
		s->step = MANY_DONE;
		return true;
	default:
		return false; /* nothing was asked: an unexpected reply */
	}
}

unsigned harness_many_sessions(int port, unsigned n, const char *from, const char *to,
			       char (*ids)[32], int timeout_ms, char *why, size_t why_size)
{
	struct many_session *ss = calloc(n, sizeof(*ss));
	struct pollfd *pfd = calloc(n, sizeof(*pfd));
	bool failed_once = false;
	why[0] = '\0';
	if (ss == NULL || pfd == NULL) {
		snprintf(why, why_size, "out of memory");
		free(ss);
		free(pfd);
		return 0;
	}
	struct sockaddr_in sa;
	harness_loopback(&sa, port);
	for (unsigned i = 0; i < n; i++) {
		ids[i][0] = '\0';
		ss[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (ss[i].fd < 0) {
			many_fail(&ss[i], i, "socket", strerror(errno), why, why_size,
				  &failed_once);
			continue;
		}
		if (connect(ss[i].fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			ss[i].step = MANY_GREETING;
		else if (errno == EINPROGRESS)
			ss[i].step = MANY_CONNECTING;
		else
			many_fail(&ss[i], i, "connect", strerror(errno), why, why_size,
				  &failed_once);
	}

	int64_t deadline = harness_now_ms() + timeout_ms;
	for (unsigned turn = 0; turn < 10000000; turn++) {
		/* Barriers: EHLO only once every session is greeted, QUIT only
		 * once every session has its message queued, so that all n
		 * are open at the same time at both points. */
		unsigned active = 0, greeting = 0, queuing = 0;
		for (unsigned i = 0; i < n; i++) {
			enum many_step st = ss[i].step;
			if (st == MANY_DONE || st == MANY_FAILED)
				continue;
			active++;
			if (st <= MANY_GREETING)
				greeting++;
			if (st <= MANY_BODY)
				queuing++;
		}
		if (active == 0)
			break;
		for (unsigned i = 0; i < n; i++) {
			if (ss[i].step == MANY_HELLO && greeting == 0) {
				many_queue(&ss[i], "EHLO many.client.example\r\n");
				ss[i].step = MANY_EHLO;
			} else if (ss[i].step == MANY_QUEUED && queuing == 0) {
				many_queue(&ss[i], "QUIT\r\n");
				ss[i].step = MANY_QUIT;
			}
		}

		/* Send what is queued; then wait for anything. */
		for (unsigned i = 0; i < n; i++) {
			struct many_session *s = &ss[i];
			pfd[i].fd = -1;
			pfd[i].events = 0;
			pfd[i].revents = 0;
			if (s->step == MANY_DONE || s->step == MANY_FAILED)
				continue;
			while (s->step != MANY_CONNECTING && s->out_sent < s->out_len) {
				ssize_t k = send(s->fd, s->out + s->out_sent,
						 s->out_len - s->out_sent, MSG_NOSIGNAL);
				if (k > 0) {
					s->out_sent += (size_t)k;
					continue;
				}
				if (k < 0 && (errno == EAGAIN || errno == EINTR))
					break;
				many_fail(s, i, "send", strerror(errno), why, why_size,
					  &failed_once);
				break;
			}
			if (s->step == MANY_FAILED)
				continue;
			if (s->out_sent == s->out_len)
				s->out_sent = s->out_len = 0;
			pfd[i].fd = s->fd;
			pfd[i].events = s->step == MANY_CONNECTING ? POLLOUT : POLLIN;
			if (s->out_len > 0)
				pfd[i].events |= POLLOUT;
		}
		int left = harness_left_ms(deadline);
		if (left == 0) {
			for (unsigned i = 0; i < n; i++)
				if (ss[i].step != MANY_DONE && ss[i].step != MANY_FAILED) {
					char at[32];
					snprintf(at, sizeof(at), "step %d", (int)ss[i].step);
					many_fail(&ss[i], i, "timed out", at, why, why_size,
						  &failed_once);
				}
			break;
		}
		int ready = poll(pfd, n, left > 1000 ? 1000 : left);
		if (ready < 0 && errno != EINTR) {
			snprintf(why, why_size, "poll: %s", strerror(errno));
			break;
		}
		for (unsigned i = 0; ready > 0 && i < n; i++) {
			struct many_session *s = &ss[i];
			if (pfd[i].fd < 0 || pfd[i].revents == 0)
				continue;
			if (s->step == MANY_CONNECTING) {
				int soerr = 0;
				socklen_t slen = sizeof(soerr);
				getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &slen);
				if (soerr != 0)
					many_fail(s, i, "connect", strerror(soerr), why, why_size,
						  &failed_once);
				else
					s->step = MANY_GREETING;
				continue;
			}
			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t k = recv(s->fd, s->in + s->in_len, sizeof(s->in) - s->in_len, 0);
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (k <= 0) {
				char at[64];
				snprintf(at, sizeof(at), "in step %d: %s", (int)s->step,
					 k == 0 ? "closed by the server" : strerror(errno));
				many_fail(s, i, "connection lost", at, why, why_size, &failed_once);
				continue;
			}
			s->in_len += (size_t)k;
			for (unsigned replies = 0; replies < 16 && s->step != MANY_FAILED;
			     replies++) {
				struct smtp_reply r;
				long used = smtp_reply_parse(s->in, s->in_len, &r);
				if (used == 0 && s->in_len == sizeof(s->in))
					used = -1;
				if (used == 0)
					break;
				if (used < 0 ||
				    !many_on_reply(s, &r, from, to, ids[i], sizeof(ids[i]))) {
					char at[600];
					snprintf(at, sizeof(at), "step %d, reply '%.500s'",
						 (int)s->step, used < 0 ? "(garbage)" : r.text);
					many_fail(s, i, "unexpected reply", at, why, why_size,
						  &failed_once);
					break;
				}
				memmove(s->in, s->in + used, s->in_len - (size_t)used);
				s->in_len -= (size_t)used;
			}
		}
	}

	unsigned queued = 0;
	for (unsigned i = 0; i < n; i++) {
		if (ss[i].fd >= 0)
			close(ss[i].fd);
		if (ids[i][0] != '\0')
			queued++;
	}
	free(ss);
	free(pfd);
	return queued;
}
