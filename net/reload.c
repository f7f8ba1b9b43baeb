/*
 * reload — a new generation built, checked and handed to every worker, or
 * refused whole (reload.h).
 */
#include "net/reload.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/worker.h"
#include "net/generation.h"
#include "net/server.h"

struct net_reload {
	pthread_mutex_t running; /* one reload at a time */
	pthread_mutex_t lock;    /* current */
	struct net_generation *current;
	char *path; /* NULL: the built-in defaults */
	const struct net_runtime *rt;
	struct worker_group *group;
};

int net_reload_create(struct net_reload **out, const char *path, struct net_generation *first,
		      const struct net_runtime *rt, struct worker_group *group)
{
	*out = NULL;
	struct net_reload *r = calloc(1, sizeof(*r));
	if (r == NULL || (path != NULL && (r->path = strdup(path)) == NULL)) {
		free(r);
		return -ENOMEM;
	}
	pthread_mutex_init(&r->running, NULL);
	pthread_mutex_init(&r->lock, NULL);
	r->current = first;
	r->rt = rt;
	r->group = group;
	*out = r;
	return 0;
}

void net_reload_free(struct net_reload *r)
{
	if (r == NULL)
		return;
	net_generation_drop(r->current);
	pthread_mutex_destroy(&r->running);
	pthread_mutex_destroy(&r->lock);
	free(r->path);
	free(r);
}

struct net_generation *net_reload_current(struct net_reload *r)
{
	pthread_mutex_lock(&r->lock);
	struct net_generation *g = net_generation_hold(r->current);
	pthread_mutex_unlock(&r->lock);
	return g;
}

/* The file again, over the defaults, as the running generation would take
 * it: restart-only keys it leaves to their defaults keep the values the
 * run computed (workers per CPU, a lowered max_connections). 0, or
 * -errno with err saying why (a key that needs a restart: named). */
static int net_reload_read(struct net_reload *r, const struct net_generation *running,
			   struct config *next, char *err, size_t err_size)
{
	config_defaults(next);
	int rc = config_load(next, r->path, err, err_size);
	if (rc != 0)
		return rc;
	config_keep_running_values(next, &running->cfg);
	char keys[600];
	if (config_restart_changes(&running->cfg, next, keys, sizeof(keys)) > 0) {
		snprintf(err, err_size,
			 "%s: only a restart of ferryd can change %s; nothing was changed (restart "
			 "ferryd to apply the file, or put the running values back to reload it)",
			 next->source, keys);
		return -EINVAL;
	}
	return 0;
}

int net_reload_run(struct net_reload *r, const char *trigger, char *msg, size_t msg_size)
{
	pthread_mutex_lock(&r->running);
	struct net_generation *running = net_reload_current(r);
	struct config next;
	struct net_generation *gen = NULL;
	char err[1200];
	int rc = net_reload_read(r, running, &next, err, sizeof(err));
	if (rc == 0)
		rc = net_generation_create(&gen, &next, running->number + 1, r->rt, err,
					   sizeof(err));
	config_free(&next); /* empty once the generation took it */
	unsigned workers = r->group->count;
	if (rc == 0) {
		/* One reference per worker's message, dropped there once it
		 * has switched. */
		for (unsigned i = 0; i < workers; i++)
			net_generation_hold(gen);
		rc = worker_group_reconfigure(r->group, gen, net_generation_drop_arg,
					      NET_RELOAD_WORKERS_MS);
		if (rc == -ENOMEM) {
			for (unsigned i = 0; i < workers; i++)
				net_generation_drop(gen);
			net_generation_drop(gen);
			snprintf(err, sizeof(err), "out of memory");
		}
	}
	if (rc != 0 && rc != -ETIMEDOUT) {
		char quoted[1300];
		log_event(LOG_LEVEL_ERROR,
			  "event=reload_refused trigger=%s generation=%llu reason=%s", trigger,
			  (unsigned long long)running->number,
			  log_quote(quoted, sizeof(quoted), err, strlen(err)));
		snprintf(msg, msg_size, "%s; generation %llu keeps running", err,
			 (unsigned long long)running->number);
		if (r->rt->inbound != NULL)
			atomic_store(&r->rt->inbound->last_reload_ok, 0);
		net_generation_drop(running);
		pthread_mutex_unlock(&r->running);
		return rc == -ENOMEM ? -ENOMEM : -EINVAL;
	}
	if (r->rt->inbound != NULL)
		atomic_store(&r->rt->inbound->last_reload_ok, 1);
	log_set_level((enum log_level)gen->cfg.log_level);
	log_client_lines(gen->cfg.log_max_lines_per_client);
	pthread_mutex_lock(&r->lock);
	r->current = gen; /* the reference it was made with */
	pthread_mutex_unlock(&r->lock);
	net_generation_drop(running); /* ours, */
	net_generation_drop(running); /* and the one `current` held */
	log_event(rc == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_WARN,
		  "event=reloaded trigger=%s generation=%llu source=%s domains=%zu workers=%s",
		  trigger, (unsigned long long)gen->number, gen->cfg.source, gen->cfg.ndomains,
		  rc == 0 ? "switched" : "late");
	if (rc == 0)
		snprintf(msg, msg_size, "generation %llu from %s is running",
			 (unsigned long long)gen->number, gen->cfg.source);
	else
		snprintf(msg, msg_size,
			 "generation %llu from %s is accepted, but a worker had not switched to "
			 "it after %u ms (it will when it comes to it)",
			 (unsigned long long)gen->number, gen->cfg.source, NET_RELOAD_WORKERS_MS);
	pthread_mutex_unlock(&r->running);
	return rc;
}
