/*
 * ferryd as a system service (built into test_ferryd; suite "service"):
 * started as root it binds its listeners, then runs as [server] user and
 * group, every thread of it; its spool and admin socket are that user's,
 * and the socket keeps out local users outside the group; an account that
 * does not exist, or a drop that fails, stops it before it serves anyone;
 * not started as root, it must already be its user; as root it raises a
 * hard RLIMIT_NOFILE too low for its configuration; and the capabilities
 * the systemd unit leaves it (tools/systemd/ferryd.service) are all it
 * needs to start, and start again on its own spool.
 *
 * Dropping privileges takes root: those tests skip, saying so, in a run
 * that is not root (CI runs as root, and runs them all).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#define START_MS 20000 /* ferryd up and accepting */
#define IO_MS    15000 /* one reply */
#define STOP_MS  20000 /* SIGTERM to exit, nothing in flight */

#include "tests/integration/checks.h"

static void service_fini(void)
{
	harness_cleanup_all();
}

TestSuite(service, .fini = service_fini, .timeout = 90);

/* ---- accounts ------------------------------------------------------------------ */

struct account {
	char user[64], group[64];
	uid_t uid;
	gid_t gid;
};

static bool account_find(const char *user, struct account *a)
{
	const struct passwd *pw = getpwnam(user);
	if (pw == NULL || pw->pw_uid == 0)
		return false;
	const struct group *gr = getgrgid(pw->pw_gid);
	if (gr == NULL)
		return false;
	snprintf(a->user, sizeof(a->user), "%s", pw->pw_name);
	snprintf(a->group, sizeof(a->group), "%s", gr->gr_name);
	a->uid = pw->pw_uid;
	a->gid = pw->pw_gid;
	return true;
}

/* The unprivileged system account ferryd runs as here: Debian's `daemon`,
 * else one made for the tests (useradd, as root). */
static struct account service_account(void)
{
	struct account a;
	if (account_find("daemon", &a) || account_find("ferry-test", &a))
		return a;
	if (geteuid() == 0) {
		char *argv[] = {"useradd", "--system",          "--user-group", "--no-create-home",
				"--shell", "/usr/sbin/nologin", "ferry-test",   NULL};
		harness_run(argv, NULL, 0, NULL, 0, 30000);
		if (account_find("ferry-test", &a))
			return a;
	}
	cr_skip_test("no unprivileged system account (daemon) here, and none can be made");
	return a;
}

/* A local user outside ferryd's group: nobody, in nogroup. */
static struct account outsider_account(const struct account *service)
{
	struct account a;
	cr_assert(account_find("nobody", &a), "no user 'nobody' here");
	const struct group *gr = getgrnam("nogroup");
	if (gr != NULL) {
		a.gid = gr->gr_gid;
		snprintf(a.group, sizeof(a.group), "%s", gr->gr_name);
	}
	cr_assert(a.uid != service->uid && a.gid != service->gid,
		  "nobody shares an id with %s: no outsider to try", service->user);
	return a;
}

static void root_or_skip(void)
{
	if (geteuid() != 0)
		cr_skip_test("ferryd gives up root only when started as root, and this test "
			     "runs as uid %u",
			     (unsigned)geteuid());
}

/* ---- the instance ------------------------------------------------------------- */

/* A harness instance whose spool ferryd's user can reach (mkdtemp makes
 * the directory 0700), running as `a` when started as root. */
static void setup_as(struct ferry_instance *fi, const struct account *a, const char *extra)
{
	char text[1024];
	if (a != NULL)
		snprintf(text, sizeof(text), "[server]\nuser = %s\ngroup = %s\n%s", a->user,
			 a->group, extra != NULL ? extra : "");
	cr_assert_eq(harness_setup(fi, a != NULL ? text : extra), 0);
	cr_assert_eq(chmod(fi->dir, 0755), 0, "%s", strerror(errno));
}

static void append_to_config(const struct ferry_instance *fi, const char *text)
{
	FILE *f = fopen(fi->config, "a");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

/* One message to relay.example (held: it stays queued), its queue id. */
static void send_one(const struct ferry_instance *fi, char id[32])
{
	struct smtp_client c;
	struct smtp_reply r;
	connect_greeted(&c, fi);
	expect_command(&c, "EHLO client.example", 250, NULL);
	expect_command(&c, "MAIL FROM:<alice@client.example>", 250, "2.1.0");
	expect_command(&c, "RCPT TO:<bob@relay.example>", 250, "2.1.5");
	expect_command(&c, "DATA", 354, NULL);
	cr_assert_eq(smtp_client_send_str(&c, "Subject: as a service\r\n\r\nHello.\r\n.\r\n"), 0);
	cr_assert_eq(smtp_client_read_reply(&c, &r), 250, "end of DATA: %s", r.text);
	cr_assert(smtp_reply_queue_id(&r, id, 32), "no queue id in '%s'", r.text);
	expect_command(&c, "QUIT", 221, NULL);
	smtp_client_close(&c);
}

static void expect_queued(const struct ferry_instance *fi, const char *id)
{
	const struct spool_view *sp = harness_spool_view(fi);
	cr_assert_not_null(sp, "cannot read the spool %s", fi->spool);
	cr_expect_eq(harness_spool_copies(sp, id), 1, "%s is not in the spool", id);
}

/* ---- what the kernel says of a running ferryd ---------------------------------- */

/* Every thread of pid (its workers, the admin thread, io_uring's helpers)
 * runs as uid and gid, with no capability, and (`groups`) in no group but
 * gid (or none). */
static void expect_threads_run_as(pid_t pid, uid_t uid, gid_t gid, bool groups)
{
	char dir[64];
	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	DIR *d = opendir(dir);
	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	unsigned threads = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (e->d_name[0] == '.')
			continue;
		char path[128], line[256], name[32] = "?";
		snprintf(path, sizeof(path), "%s/%s/comm", dir, e->d_name);
		FILE *f = fopen(path, "r");
		if (f != NULL) {
			if (fgets(name, sizeof(name), f) != NULL)
				name[strcspn(name, "\n")] = '\0';
			fclose(f);
		}
		snprintf(path, sizeof(path), "%s/%s/status", dir, e->d_name);
		f = fopen(path, "r");
		if (f == NULL)
			continue; /* the thread ended meanwhile */
		unsigned ids[4], group, more;
		unsigned long long caps;
		bool uid_seen = false, gid_seen = false, groups_seen = false;
		while (fgets(line, sizeof(line), f) != NULL) {
			if (sscanf(line, "Uid: %u %u %u %u", &ids[0], &ids[1], &ids[2], &ids[3]) ==
			    4) {
				uid_seen = true;
				for (int i = 0; i < 4; i++)
					cr_expect_eq(ids[i], (unsigned)uid,
						     "thread %s: Uid %u %u %u %u, not %u", name,
						     ids[0], ids[1], ids[2], ids[3], (unsigned)uid);
			} else if (sscanf(line, "Gid: %u %u %u %u", &ids[0], &ids[1], &ids[2],
					  &ids[3]) == 4) {
				gid_seen = true;
				for (int i = 0; i < 4; i++)
					cr_expect_eq(ids[i], (unsigned)gid,
						     "thread %s: Gid %u %u %u %u, not %u", name,
						     ids[0], ids[1], ids[2], ids[3], (unsigned)gid);
			} else if (strncmp(line, "Groups:", 7) == 0 && groups) {
				groups_seen = true;
				int n = sscanf(line, "Groups: %u %u", &group, &more);
				cr_expect(n <= 0 || (n == 1 && group == (unsigned)gid),
					  "thread %s: in groups '%s', not %u alone", name, line + 7,
					  (unsigned)gid);
			} else if (sscanf(line, "CapEff: %llx", &caps) == 1 ||
				   sscanf(line, "CapPrm: %llx", &caps) == 1) {
				cr_expect_eq(caps, 0, "thread %s: %s", name, line);
			}
		}
		fclose(f);
		cr_expect(uid_seen && gid_seen && (groups_seen || !groups),
			  "%s: no Uid, Gid or Groups", path);
		threads++;
	}
	closedir(d);
	cr_assert_geq(threads, 3, "only %u threads (the main one and 2 workers at least)", threads);
}

static void expect_owner(const char *path, uid_t uid, gid_t gid)
{
	struct stat st;
	cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
	cr_expect(st.st_uid == uid && st.st_gid == gid, "%s belongs to %u:%u, not %u:%u", path,
		  (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)uid, (unsigned)gid);
}

/* The spool, its lock, directories, every file in them and (while ferryd
 * runs) the admin socket belong to uid and gid. Returns the segment files
 * seen. */
static unsigned expect_spool_owned(const struct ferry_instance *fi, uid_t uid, gid_t gid,
				   bool running)
{
	static const char *const names[] = {"", "/lock", "/segments", "/quarantine",
					    "/ferryctl.sock"};
	char path[PATH_MAX + 300];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) - !running; i++) {
		snprintf(path, sizeof(path), "%s%s", fi->spool, names[i]);
		expect_owner(path, uid, gid);
	}
	unsigned segments = 0;
	static const char *const dirs[] = {"segments", "quarantine"};
	for (size_t i = 0; i < 2; i++) {
		char dir[PATH_MAX + 32];
		snprintf(dir, sizeof(dir), "%s/%s", fi->spool, dirs[i]);
		DIR *d = opendir(dir);
		cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
		for (struct dirent *e; (e = readdir(d)) != NULL;) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			expect_owner(path, uid, gid);
			segments += i == 0;
		}
		closedir(d);
	}
	return segments;
}

/* ferryd's RLIMIT_NOFILE, from /proc. */
static void ferryd_nofile(const struct ferry_instance *fi, long *soft, long *hard)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)fi->pid);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	*soft = *hard = -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "Max open files %ld %ld", soft, hard) == 2)
			break;
	fclose(f);
}

/* What --check-config says ferryd needs. */
static unsigned long long descriptors_needed(const struct ferry_instance *fi)
{
	char ferryd[PATH_MAX];
	harness_ferryd_path(ferryd, sizeof(ferryd));
	char *argv[] = {ferryd, "--check-config", "-c", (char *)fi->config, NULL};
	static char out[16384], err[4096];
	cr_assert_eq(harness_run(argv, out, sizeof(out), err, sizeof(err), 30000), 0, "%s", err);
	unsigned long long needed = 0;
	const char *figure = strstr(out, "# file descriptors: ");
	cr_assert(figure != NULL && sscanf(figure, "# file descriptors: %llu", &needed) == 1, "%s",
		  out);
	return needed;
}

/* ---- the admin socket, tried by other local users ------------------------------------ */

/*
 * In a child running as uid, gid and these supplementary groups: connect
 * to the admin socket and ask "queue". 0 when the answer was "ok", the
 * errno of a refused connect, or 100+ when something else went wrong.
 */
static int admin_try_as(const char *socket_path, uid_t uid, gid_t gid, const gid_t *groups,
			int ngroups)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (setgroups((size_t)ngroups, groups) != 0 || setresgid(gid, gid, gid) != 0 ||
		    setresuid(uid, uid, uid) != 0)
			_exit(100);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", socket_path);
		if (fd < 0)
			_exit(101);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
			_exit(errno < 100 ? errno : 102);
		struct timeval tv = {.tv_sec = 5};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		char answer[4] = "";
		if (write(fd, "queue\n", 6) != 6 || read(fd, answer, 3) != 3 ||
		    memcmp(answer, "ok\n", 3) != 0)
			_exit(103);
		_exit(0);
	}
	int status = -1;
	for (int i = 0; i < 1000 && waitpid(pid, &status, WNOHANG) == 0; i++)
		harness_sleep_ms(10);
	if (waitpid(pid, &status, WNOHANG) == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return 104;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 105;
}

/* ---- started as root -------------------------------------------------------------------- */

Test(service, started_as_root_it_runs_as_its_user_and_its_spool_is_theirs)
{
	root_or_skip();
	struct account a = service_account();
	struct ferry_instance fi;
	setup_as(&fi, NULL, NULL);
	/* An earlier run as root left its spool and a message behind. */
	cr_assert_eq(harness_start(&fi, START_MS), 0);
	char old_id[32], new_id[32];
	send_one(&fi, old_id);
	stop_ferryd_cleanly(&fi);
	expect_owner(fi.spool, 0, 0);

	char lines[256];
	snprintf(lines, sizeof(lines), "[server]\nuser = %s\ngroup = %s\n", a.user, a.group);
	append_to_config(&fi, lines);
	fi.nofile_soft = 1024; /* raised before root is given up */
	cr_assert_eq(harness_start(&fi, START_MS), 0);
	char event[256];
	snprintf(event, sizeof(event), "event=privileges_dropped user=%s uid=%u group=%s gid=%u",
		 a.user, (unsigned)a.uid, a.group, (unsigned)a.gid);
	cr_expect_eq(harness_log_count(&fi, event), 1, "not '%s' once in the log", event);
	wait_admin_socket(&fi);
	send_one(&fi, new_id); /* mail flows, and io_uring's helpers exist by now */
	expect_threads_run_as(fi.pid, a.uid, a.gid, true);
	long soft, hard;
	ferryd_nofile(&fi, &soft, &hard);
	cr_expect(soft == hard && soft > 1024, "RLIMIT_NOFILE soft %ld, hard %ld", soft, hard);

	unsigned segments = expect_spool_owned(&fi, a.uid, a.gid, true);
	cr_expect_geq(segments, 2, "%u segments: the old run's and this one's", segments);
	char path[PATH_MAX + 32];
	admin_socket_path(&fi, path, sizeof(path));
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0660, "the admin socket's mode is %04o",
		     (unsigned)(st.st_mode & 07777));
	cr_expect_eq(admin_try_as(path, a.uid, a.gid, &a.gid, 1), 0, "ferryd's own user");
	expect_queued(&fi, old_id);
	expect_queued(&fi, new_id);
	stop_ferryd_cleanly(&fi);
	/* What it made while running is its user's too. */
	expect_spool_owned(&fi, a.uid, a.gid, false);
}

Test(service, admin_socket_refuses_a_local_user_outside_its_group)
{
	root_or_skip();
	struct account a = service_account();
	struct account other = outsider_account(&a);
	struct ferry_instance fi;
	setup_as(&fi, &a, NULL);
	cr_assert_eq(harness_start(&fi, START_MS), 0);
	wait_admin_socket(&fi);
	char path[PATH_MAX + 32];
	admin_socket_path(&fi, path, sizeof(path));

	cr_expect_eq(admin_try_as(path, other.uid, other.gid, &other.gid, 1), EACCES,
		     "%s (outside group %s) was not refused with EACCES", other.user, a.group);
	/* Even where the spool lets everyone through, the socket's own mode
	 * keeps them out. */
	cr_assert_eq(chmod(fi.spool, 0751), 0);
	cr_expect_eq(admin_try_as(path, other.uid, other.gid, &other.gid, 1), EACCES,
		     "%s was let in by a spool with o+x", other.user);
	cr_assert_eq(chmod(fi.spool, 0750), 0);
	/* The same user, once in ferryd's group, is let in: the group is who
	 * may use ferryctl. */
	gid_t member[2] = {other.gid, a.gid};
	cr_expect_eq(admin_try_as(path, other.uid, other.gid, member, 2), 0,
		     "%s in group %s was refused", other.user, a.group);
	cr_expect_eq(admin_try_as(path, a.uid, a.gid, &a.gid, 1), 0, "%s was refused", a.user);
	cr_expect_eq(admin_try_as(path, 0, 0, NULL, 0), 0, "root was refused");
	stop_ferryd_cleanly(&fi);
}

/* ---- refusals at start ------------------------------------------------------------------- */

/* The line of fi's config that starts with `text`. */
static unsigned config_line_of(const struct ferry_instance *fi, const char *text)
{
	FILE *f = fopen(fi->config, "r");
	cr_assert_not_null(f);
	char line[512];
	unsigned n = 0, found = 0;
	while (found == 0 && fgets(line, sizeof(line), f) != NULL)
		if (++n, strncmp(line, text, strlen(text)) == 0)
			found = n;
	fclose(f);
	cr_assert_neq(found, 0, "no '%s' in %s", text, fi->config);
	return found;
}

static void expect_refused(struct ferry_instance *fi, const char *says)
{
	cr_assert_eq(harness_start(fi, START_MS), -1, "ferryd started");
	cr_assert_eq(fi->exit_status, 1, "ferryd exited %d", fi->exit_status);
	const char *log = harness_log(fi);
	cr_expect_not_null(strstr(log, says), "not '%s' in: %s", says, log);
	cr_expect_null(strstr(log, "listening on"), "it listened: %s", log);
	cr_expect_null(strstr(log, "Sanitizer"), "%s", log);
}

Test(service, an_account_that_does_not_exist_stops_ferryd_naming_the_key)
{
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, "[server]\nuser = no-such-ferry-user\n"), 0);
	char says[PATH_MAX + 256];
	snprintf(says, sizeof(says),
		 "%s:%u: key 'user': no such user 'no-such-ferry-user' (create it with "
		 "`adduser --system --group no-such-ferry-user`",
		 fi.config, config_line_of(&fi, "user = no-such-ferry-user"));
	expect_refused(&fi, says);
	struct stat st;
	cr_expect_neq(stat(fi.spool, &st), 0, "a spool was made before the refusal");
	/* --check-config says the same. */
	char ferryd[PATH_MAX];
	harness_ferryd_path(ferryd, sizeof(ferryd));
	char *argv[] = {ferryd, "--check-config", "-c", fi.config, NULL};
	static char out[16384], err[4096];
	cr_expect_eq(harness_run(argv, out, sizeof(out), err, sizeof(err), 30000), 1);
	cr_expect_not_null(strstr(err, "key 'user': no such user 'no-such-ferry-user'"), "%s", err);

	const struct passwd *me = getpwuid(geteuid());
	struct account a;
	if (geteuid() == 0)
		a = service_account();
	else
		cr_assert(me != NULL && account_find(me->pw_name, &a));
	struct ferry_instance fg;
	char text[256];
	snprintf(text, sizeof(text), "[server]\nuser = %s\ngroup = no-such-ferry-group\n", a.user);
	cr_assert_eq(harness_setup(&fg, text), 0);
	expect_refused(&fg, "key 'group': no such group 'no-such-ferry-group'");

	struct ferry_instance fr;
	cr_assert_eq(harness_setup(&fr, "[server]\nuser = root\n"), 0);
	expect_refused(&fr, "key 'user': 'root' is root (uid 0)");
}

Test(service, a_drop_that_fails_stops_ferryd_before_it_serves)
{
	root_or_skip();
	struct account a = service_account();
	struct ferry_instance fi;
	setup_as(&fi, &a, NULL);
	fi.drop_capabilities = 1ull << CAP_SETUID; /* root that cannot become another user */
	expect_refused(&fi, "setresuid: Operation not permitted");
	cr_expect_eq(harness_log_count(&fi, "event=privileges_drop_failed"), 1, "%s",
		     harness_log(&fi));
	cr_expect_eq(harness_log_count(&fi, "event=listening"), 0, "%s", harness_log(&fi));
	cr_expect_eq(harness_log_count(&fi, "event=privileges_dropped"), 0, "%s", harness_log(&fi));
}

Test(service, a_spool_its_user_cannot_reach_stops_ferryd)
{
	root_or_skip();
	struct account a = service_account();
	struct ferry_instance fi;
	char text[256];
	snprintf(text, sizeof(text), "[server]\nuser = %s\ngroup = %s\n", a.user, a.group);
	cr_assert_eq(harness_setup(&fi, text), 0); /* its directory stays 0700, root's */
	char says[PATH_MAX + 128];
	snprintf(says, sizeof(says), "the spool %s cannot be reached by user '%s'", fi.spool,
		 a.user);
	expect_refused(&fi, says);
}

/* Who this test runs as, as an account (not root: the test was started as
 * someone else). */
static struct account own_account(void)
{
	struct account a;
	const struct passwd *pw = getpwuid(geteuid());
	const struct group *gr = getgrgid(getegid());
	if (pw == NULL || gr == NULL)
		cr_skip_test("uid %u or gid %u has no name here", (unsigned)geteuid(),
			     (unsigned)getegid());
	snprintf(a.user, sizeof(a.user), "%s", pw->pw_name);
	snprintf(a.group, sizeof(a.group), "%s", gr->gr_name);
	a.uid = geteuid();
	a.gid = getegid();
	return a;
}

/* Not root, ferryd cannot become anyone: it refuses another user, and
 * runs as its own. As root the test starts ferryd as daemon; otherwise
 * ferryd runs as the test does. */
Test(service, not_started_as_root_it_must_already_be_its_user)
{
	bool root = geteuid() == 0;
	struct account a = root ? service_account() : own_account();
	struct account other;
	if (root)
		other = outsider_account(&a);
	else if (!(account_find("daemon", &other) && other.uid != a.uid) &&
		 !(account_find("nobody", &other) && other.uid != a.uid))
		cr_skip_test("no account here but the test's own");
	struct ferry_instance fi, fo;

	setup_as(&fo, &other, NULL);
	fo.run_as = root;
	fo.run_uid = a.uid;
	fo.run_gid = a.gid;
	char says[256];
	snprintf(says, sizeof(says),
		 "ferryd runs as uid %u gid %u, not as root, so it cannot become user '%s'",
		 (unsigned)a.uid, (unsigned)a.gid, other.user);
	expect_refused(&fo, says);

	setup_as(&fi, &a, NULL);
	cr_assert_eq(mkdir(fi.spool, 0750), 0);
	if (root)
		cr_assert_eq(chown(fi.spool, a.uid, a.gid), 0);
	fi.run_as = root;
	fi.run_uid = a.uid;
	fi.run_gid = a.gid;
	cr_assert_eq(harness_start(&fi, START_MS), 0);
	char id[32];
	send_one(&fi, id);
	/* Its groups are what it was started with (the test's own, if not
	 * root): only the ids are ferryd's doing here. */
	expect_threads_run_as(fi.pid, a.uid, a.gid, root);
	cr_expect_eq(harness_log_count(&fi, "event=privileges_dropped"), 0, "nothing to drop");
	expect_spool_owned(&fi, a.uid, a.gid, true);
	stop_ferryd_cleanly(&fi);
}

/* ---- the descriptor limit ------------------------------------------------------------------- */

/* Whether this process has capability `cap` in effect. */
static bool have_capability(int cap)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long long eff = 0;
	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	if (f != NULL)
		fclose(f);
	return (eff >> cap & 1) != 0;
}

Test(service, as_root_it_raises_a_hard_descriptor_limit_too_low)
{
	root_or_skip();
	if (!have_capability(CAP_SYS_RESOURCE))
		cr_skip_test("root here has no CAP_SYS_RESOURCE (a container's bounding set): "
			     "neither it nor ferryd can raise a hard limit");
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, "[limits]\nmax_connections = 1000\n"), 0);
	unsigned long long needed = descriptors_needed(&fi);
	fi.nofile_soft = 300;
	fi.nofile_hard = 512;
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not raise its hard limit");
	long soft, hard;
	ferryd_nofile(&fi, &soft, &hard);
	cr_expect(soft == (long)needed && hard == (long)needed,
		  "RLIMIT_NOFILE soft %ld, hard %ld; %llu needed", soft, hard, needed);
	char says[160];
	snprintf(says, sizeof(says),
		 "event=nofile_raised soft=%llu hard=%llu was_soft=300 was_hard=512 needed=%llu",
		 needed, needed, needed);
	cr_expect_eq(harness_log_count(&fi, says), 1, "not '%s' in: %s", says, harness_log(&fi));
	stop_ferryd_cleanly(&fi);
}

/* ---- the systemd unit -------------------------------------------------------------------------
 */

static const struct {
	const char *name;
	int cap;
} capability_names[] = {
	{"CAP_CHOWN", CAP_CHOWN},
	{"CAP_DAC_OVERRIDE", CAP_DAC_OVERRIDE},
	{"CAP_DAC_READ_SEARCH", CAP_DAC_READ_SEARCH},
	{"CAP_FOWNER", CAP_FOWNER},
	{"CAP_FSETID", CAP_FSETID},
	{"CAP_KILL", CAP_KILL},
	{"CAP_SETGID", CAP_SETGID},
	{"CAP_SETUID", CAP_SETUID},
	{"CAP_SETPCAP", CAP_SETPCAP},
	{"CAP_NET_BIND_SERVICE", CAP_NET_BIND_SERVICE},
	{"CAP_NET_ADMIN", CAP_NET_ADMIN},
	{"CAP_NET_RAW", CAP_NET_RAW},
	{"CAP_IPC_LOCK", CAP_IPC_LOCK},
	{"CAP_SYS_RESOURCE", CAP_SYS_RESOURCE},
};

/* The unit's CapabilityBoundingSet=, as a mask. */
static uint64_t unit_capabilities(void)
{
	const char *source = getenv("FERRY_SOURCE_DIR");
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/tools/systemd/ferryd.service",
		 source != NULL && source[0] != '\0' ? source : ".");
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s (FERRY_SOURCE_DIR names the checkout)", path,
			   strerror(errno));
	char line[1024];
	uint64_t mask = 0;
	bool seen = false;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "CapabilityBoundingSet=", 22) != 0)
			continue;
		cr_assert_not(seen, "CapabilityBoundingSet= twice in %s", path);
		seen = true;
		for (char *word = strtok(line + 22, " \t\n"); word != NULL;
		     word = strtok(NULL, " \t\n")) {
			size_t i = 0;
			while (i < sizeof(capability_names) / sizeof(capability_names[0]) &&
			       strcmp(capability_names[i].name, word) != 0)
				i++;
			cr_assert(i < sizeof(capability_names) / sizeof(capability_names[0]),
				  "%s: the test does not know %s (add it to capability_names)",
				  path, word);
			mask |= 1ull << capability_names[i].cap;
		}
	}
	fclose(f);
	cr_assert(seen, "no CapabilityBoundingSet= in %s", path);
	return mask;
}

/* A privileged loopback port nobody listens on (the unit's ferryd binds
 * port 25: CAP_NET_BIND_SERVICE must be among what it keeps). */
static int free_privileged_port(void)
{
	for (int port = 700; port < 1000; port++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		bool free = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		if (fd >= 0)
			close(fd);
		if (free)
			return port;
	}
	return -1;
}

Test(service, the_units_capabilities_are_all_ferryd_needs_to_start_and_restart)
{
	root_or_skip();
	struct account a = service_account();
	uint64_t keep = unit_capabilities();
	int port = free_privileged_port();
	cr_assert_gt(port, 0, "no free privileged port on loopback");
	char extra[128];
	snprintf(extra, sizeof(extra), "[server]\nlisten = 127.0.0.1:%d\n", port);
	struct ferry_instance fi;
	setup_as(&fi, &a, extra);
	fi.drop_capabilities = ~keep;
	char ids[2][32];
	for (int round = 0; round < 2; round++) {
		/* The second time the spool is the user's, and root must still
		 * open, recover and give it. */
		cr_assert_eq(harness_start(&fi, START_MS), 0,
			     "ferryd did not start (round %d) with the unit's capabilities",
			     round + 1);
		struct ferry_instance privileged = fi;
		privileged.port = port;
		struct smtp_client c;
		connect_greeted(&c, &privileged);
		expect_command(&c, "QUIT", 221, NULL);
		smtp_client_close(&c);
		send_one(&fi, ids[round]);
		expect_threads_run_as(fi.pid, a.uid, a.gid, true);
		stop_ferryd_cleanly(&fi);
	}
	expect_spool_owned(&fi, a.uid, a.gid, false);
	expect_queued(&fi, ids[0]);
	expect_queued(&fi, ids[1]);
}
