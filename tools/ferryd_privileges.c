#include "tools/ferryd_privileges.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A failed lookup: errno 0 (or one of those glibc's NSS modules give for
 * "not there") means no such account. */
static bool ferryd_account_missing(int e)
{
	return e == 0 || e == ENOENT || e == ESRCH || e == EBADF || e == EPERM;
}

int ferryd_identity_resolve(const struct config *cfg, struct ferryd_identity *id, char *err,
			    size_t err_size)
{
	memset(id, 0, sizeof(*id));
	if (cfg->user[0] == '\0')
		return 0;
	errno = 0;
	const struct passwd *pw = getpwnam(cfg->user);
	if (pw == NULL) {
		int e = errno;
		bool missing = ferryd_account_missing(e);
		snprintf(err, err_size,
			 "%s:%u: key 'user': %s '%s'%s%s (create it with `adduser --system --group "
			 "%s`, or leave user empty to run as whoever starts ferryd)",
			 cfg->source, config_key_line(cfg, "server", "user"),
			 missing ? "no such user" : "cannot look up the user", cfg->user,
			 missing ? "" : ": ", missing ? "" : strerror(e), cfg->user);
		return missing ? -ENOENT : -e;
	}
	if (pw->pw_uid == 0) {
		snprintf(err, err_size,
			 "%s:%u: key 'user': '%s' is root (uid 0): name an unprivileged user for "
			 "ferryd to run as once it has bound its listeners, or leave user empty",
			 cfg->source, config_key_line(cfg, "server", "user"), cfg->user);
		return -EINVAL;
	}
	id->set = true;
	id->uid = pw->pw_uid;
	id->gid = pw->pw_gid;
	snprintf(id->user, sizeof(id->user), "%s", cfg->user);
	const struct group *gr;
	errno = 0;
	if (cfg->group[0] != '\0')
		gr = getgrnam(cfg->group);
	else
		gr = getgrgid(pw->pw_gid);
	if (gr == NULL && cfg->group[0] != '\0') {
		int e = errno;
		bool missing = ferryd_account_missing(e);
		snprintf(err, err_size,
			 "%s:%u: key 'group': %s '%s'%s%s (create it with `addgroup --system %s`, "
			 "or leave group empty for the user's own)",
			 cfg->source, config_key_line(cfg, "server", "group"),
			 missing ? "no such group" : "cannot look up the group", cfg->group,
			 missing ? "" : ": ", missing ? "" : strerror(e), cfg->group);
		return missing ? -ENOENT : -e;
	}
	if (gr != NULL) {
		id->gid = gr->gr_gid;
		snprintf(id->group, sizeof(id->group), "%s", gr->gr_name);
	} else { /* the user's own group has no name: its number will do */
		snprintf(id->group, sizeof(id->group), "%u", (unsigned)pw->pw_gid);
	}
	return 0;
}

int ferryd_identity_check_start(const struct ferryd_identity *id, bool *drop, char *err,
				size_t err_size)
{
	*drop = false;
	if (!id->set)
		return 0;
	if (geteuid() == 0) {
		*drop = true;
		return 0;
	}
	if (getuid() == id->uid && geteuid() == id->uid && getgid() == id->gid &&
	    getegid() == id->gid)
		return 0;
	snprintf(err, err_size,
		 "ferryd runs as uid %u gid %u, not as root, so it cannot become user '%s' (uid "
		 "%u) and group '%s' (gid %u) as [server] user and group ask: start it as root "
		 "(it binds its listeners, then runs as them), or as that user and group",
		 (unsigned)geteuid(), (unsigned)getegid(), id->user, (unsigned)id->uid, id->group,
		 (unsigned)id->gid);
	return -EPERM;
}

/* Is any capability left in the effective, permitted or inheritable set? */
static int ferryd_capabilities_left(bool *left)
{
	struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &header, data) != 0)
		return -errno;
	*left = false;
	for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
		*left |= (data[i].effective | data[i].permitted | data[i].inheritable) != 0;
	return 0;
}

/* After the drop: nothing of root is left, nor can it be had back. */
static const char *ferryd_privileges_check_dropped(const struct ferryd_identity *id)
{
	uid_t ruid, euid, suid;
	gid_t rgid, egid, sgid;
	if (getresuid(&ruid, &euid, &suid) != 0 || getresgid(&rgid, &egid, &sgid) != 0)
		return "getresuid/getresgid failed";
	if (ruid == 0 || euid == 0 || suid == 0)
		return "a user id is still 0";
	if (ruid != id->uid || euid != id->uid || suid != id->uid)
		return "the user ids are not the user's";
	if (rgid != id->gid || egid != id->gid || sgid != id->gid)
		return "the group ids are not the group's";
	gid_t groups[2];
	int n = getgroups(2, groups);
	if (n != 1 || groups[0] != id->gid)
		return "supplementary groups other than the group are left";
	bool left = true;
	if (ferryd_capabilities_left(&left) != 0 || left)
		return "capabilities are left (a unit's SecureBits=keep-caps?)";
	if (setuid(0) == 0 || seteuid(0) == 0)
		return "root could be had back";
	return NULL;
}

int ferryd_privileges_drop(const struct ferryd_identity *id, char *err, size_t err_size)
{
	const char *step = "setgroups";
	/* The group alone: root's supplementary groups stay behind. */
	if (setgroups(1, &id->gid) != 0)
		goto fail;
	step = "setresgid";
	if (setresgid(id->gid, id->gid, id->gid) != 0)
		goto fail;
	step = "setresuid"; /* last: after it, the group could not change */
	if (setresuid(id->uid, id->uid, id->uid) != 0)
		goto fail;
	const char *why = ferryd_privileges_check_dropped(id);
	if (why != NULL) {
		snprintf(err, err_size,
			 "dropped privileges to user '%s' (uid %u) group '%s' (gid %u), but %s: "
			 "stopping rather than running with them",
			 id->user, (unsigned)id->uid, id->group, (unsigned)id->gid, why);
		return -EPERM;
	}
	return 0;
fail:;
	int e = errno;
	snprintf(err, err_size,
		 "cannot drop privileges to user '%s' (uid %u) group '%s' (gid %u): %s: %s "
		 "(a systemd unit must leave ferryd CAP_SETUID and CAP_SETGID)",
		 id->user, (unsigned)id->uid, id->group, (unsigned)id->gid, step, strerror(e));
	return -e;
}
