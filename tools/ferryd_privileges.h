/*
 * ferryd_privileges — who ferryd runs as: [server] user and group.
 *
 * ferryd starts as root to bind port 25, then runs as an unprivileged
 * user. The order is ferryd's (tools/ferryd.c): the user and group are
 * resolved with the configuration (a name that does not exist stops it
 * there); the spool is given to them while still root (queue.h, owner);
 * the workers bind their listeners (worker_group_start_services); then
 * ferryd_privileges_drop gives up root for good, before any client or
 * next hop is served (worker_group_ready), and before the admin socket and
 * the metrics endpoint start, so they are made by the user.
 *
 * The drop is setgroups (the group alone), setresgid, setresuid, each of
 * which glibc applies to every thread of the process; then it is checked:
 * no id is 0, the ids are the ones asked for, no capability is left, and
 * root cannot be had back. Any failure stops ferryd: it never goes on as
 * root after it was asked not to.
 *
 * ferryd started as another user than root with `user` set must already
 * be that user and group (systemd's User= and Group=, say): it cannot
 * change, and it does not pretend to.
 */
#ifndef FERRY_TOOLS_FERRYD_PRIVILEGES_H
#define FERRY_TOOLS_FERRYD_PRIVILEGES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/config.h"

struct ferryd_identity {
	bool set; /* [server] user is set: run as it */
	char user[CONFIG_ACCOUNT_NAME_MAX + 1];
	char group[CONFIG_ACCOUNT_NAME_MAX + 1]; /* the user's own when the key is empty */
	uid_t uid;
	gid_t gid;
};

/*
 * Look up cfg's user and group in the system's accounts. 0 (id->set false
 * when no user is configured), or -ENOENT with err naming the file, line
 * and key ("ferry.conf:4: key 'user': no such user 'ferry' ..."), -EINVAL
 * for user root (nothing to drop to), or another -errno when the account
 * database cannot be read.
 */
int ferryd_identity_resolve(const struct config *cfg, struct ferryd_identity *id, char *err,
			    size_t err_size);

/*
 * At start, before anything is made: does ferryd have to drop (*drop:
 * it runs as root and a user is set)? Not root with a user set, it must
 * be that user and group already: else -EPERM with err saying what it is
 * and what it should be.
 */
int ferryd_identity_check_start(const struct ferryd_identity *id, bool *drop, char *err,
				size_t err_size);

/* Give up root for id's user and group, then check that it is gone for
 * good (above). 0, or -errno with err saying which step failed. */
int ferryd_privileges_drop(const struct ferryd_identity *id, char *err, size_t err_size);

#endif
