/*
 * generation — one configuration and what the layers of net/ derive from
 * it, built whole or not at all (generation.h).
 */
#include "net/generation.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/etrn.h"
#include "net/etrn_service.h"
#include "net/nexthop.h"
#include "net/outbound.h"
#include "net/server.h"

static void net_generation_free(struct net_generation *g)
{
	net_inbound_conf_free(g->inbound);
	outbound_settings_destroy(g->delivery);
	etrn_policy_free(g->etrn);
	config_free(&g->cfg);
	free(g);
}

int net_generation_create(struct net_generation **out, struct config *cfg, uint64_t number,
			  const struct net_runtime *rt, char *err, size_t err_size)
{
	*out = NULL;
	struct net_generation *g = calloc(1, sizeof(*g));
	if (g == NULL) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&g->refs, 1);
	g->number = number;
	g->rt = rt;
	/* Taken over: the lists and sections are the generation's now. */
	g->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	int r = net_inbound_conf_create(&g->inbound, &g->cfg, err, err_size);
	if (r == 0)
		r = nexthop_check_config(&g->cfg, err, err_size);
	if (r == 0)
		r = etrn_policy_build(&g->etrn, &g->cfg, err, err_size);
	if (r == 0 && rt->delivery != NULL)
		r = outbound_settings_create(&g->delivery, &g->cfg, rt->delivery, err, err_size);
	if (r != 0) {
		net_generation_free(g);
		return r;
	}
	if (rt->etrn != NULL) {
		g->inbound->settings.etrn = etrn_session_request;
		g->inbound->settings.etrn_cancel = etrn_session_cancel;
		g->inbound->settings.etrn_arg = rt->etrn;
	}
	*out = g;
	return 0;
}

struct net_generation *net_generation_hold(struct net_generation *g)
{
	atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
	return g;
}

void net_generation_drop(struct net_generation *g)
{
	if (g != NULL && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
		net_generation_free(g);
}

void net_generation_drop_arg(void *g)
{
	net_generation_drop(g);
}
