/*
 * reload — the configuration ferryd runs with, and its replacement while
 * it runs (SIGHUP, or ferryctl reload through the admin socket).
 *
 * A reload reads the file again and builds a whole new generation beside
 * the running one (net/generation.h); nothing changes unless all of it
 * is good:
 *   - a file that does not load or check (a bad value, an unknown key, a
 *     transport or network that does not parse) is refused with the
 *     reason, file, line and key;
 *   - a file that changes a key that only a restart can apply (listen
 *     addresses, workers, the spool, the connection tables; config.h,
 *     config_restart_changes) is refused, naming those keys.
 * Refused, the running generation stays as it was. Accepted, every worker
 * switches to the new one at a loop boundary (worker_group_reconfigure):
 * sessions and connections open go on, queued mail stays queued, and
 * from then on new sessions, delivery and ETRN follow the new file. The
 * log level follows it at once.
 *
 * Reloads are serialised; any thread but the workers' may ask for one.
 * Each is logged: event=reloaded, or event=reload_refused with the
 * reason.
 */
#ifndef FERRY_NET_RELOAD_H
#define FERRY_NET_RELOAD_H

#include <stddef.h>

struct net_generation;
struct net_runtime;
struct worker_group;

struct net_reload;

/* How long a reload waits for the workers to switch before it answers
 * (they still switch when they come to it). */
#define NET_RELOAD_WORKERS_MS 10000

/*
 * Take over the running generation `first` (the caller's reference) and
 * reload from `path` (NULL: the built-in defaults, which never change)
 * for the workers of `group`, which run it. 0 or -ENOMEM.
 */
int net_reload_create(struct net_reload **out, const char *path, struct net_generation *first,
		      const struct net_runtime *rt, struct worker_group *group);
/* Drops the current generation (the workers hold their own). */
void net_reload_free(struct net_reload *r);

/* The generation running now, held: net_generation_drop() it when done.
 * Any thread. */
struct net_generation *net_reload_current(struct net_reload *r);

/*
 * Reload now; `trigger` ("SIGHUP", "ferryctl") is logged. 0 with `msg`
 * saying which generation runs now, from what file; else -EINVAL (the
 * file was refused: msg says why), -ETIMEDOUT (accepted, but a worker
 * had not switched within NET_RELOAD_WORKERS_MS: msg says so), -ENOMEM.
 */
int net_reload_run(struct net_reload *r, const char *trigger, char *msg, size_t msg_size);

#endif
