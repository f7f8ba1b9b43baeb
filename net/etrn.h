/*
 * etrn — RFC 1985's ETRN, the pure part: the argument's syntax, who may
 * release what, which queued domains an ETRN covers, and the reply texts.
 * No I/O and no clock: the session's ETRN command and the workers' flush
 * (net/etrn_service.h), ferryctl's flush and the fuzz target use these.
 *
 * The three forms (../shared/spec/etrn.md):
 *   ETRN name      a node: the domain of that name, and the domains whose
 *                  [domain] section lists the name in etrn_nodes
 *   ETRN @domain   the domain and every domain below it on a label
 *                  boundary (@foo.com: fred.foo.com, not barfoo.com)
 *   ETRN #queue    the domains whose section lists the queue in
 *                  etrn_queues
 *
 * Policy lives in the [domain] sections: a domain is ruled by its section
 * (config_domain_find: its own, else its closest ".parent" one), and a
 * client may release it when its address is in that section's
 * etrn_networks. An ETRN is allowed only when the client may release
 * everything it covers: `ETRN @test` is refused (459) to a client allowed
 * demo.test only, because it would also release every other domain under
 * test, and `ETRN @com` never releases the world. Counts (253/251) are
 * shown unless a section involved says etrn_counts = no (then 250).
 *
 * The policy is built once from the config and is read-only afterwards:
 * every worker shares it without locking.
 */
#ifndef FERRY_NET_ETRN_H
#define FERRY_NET_ETRN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"

enum etrn_form {
	ETRN_FORM_NODE = 0, /* name */
	ETRN_FORM_DOMAIN,   /* @domain */
	ETRN_FORM_QUEUE,    /* #queue */
};

#define ETRN_NAME_MAX 253

struct etrn_argument {
	enum etrn_form form;
	char name[ETRN_NAME_MAX + 1]; /* lower-cased; no '@', '#' nor trailing dot */
	size_t len;
	char shown[ETRN_NAME_MAX + 2]; /* as replies and logs name it: "@foo.com" */
};

/*
 * Parse an ETRN argument (the text after the verb; surrounding spaces
 * ignored). Returns 0, or the code of the syntax error: 500 for none, 501
 * for anything but one name: a node must be a fully qualified domain
 * (two labels at least: `ETRN localname` is 501), @'s domain may be a
 * single label (it is a suffix), a queue is 1..63 letters, digits, '-',
 * '_' or '.'. One trailing dot of a domain is dropped.
 */
int etrn_parse(const char *text, size_t len, struct etrn_argument *out);

struct etrn_policy;

/* Build from cfg's [domain] sections: each section's etrn_networks,
 * etrn_nodes and etrn_queues are checked. 0, -EINVAL with err naming the
 * section and the key, or -ENOMEM. */
int etrn_policy_build(struct etrn_policy **out, const struct config *cfg, char *err,
		      size_t err_size);
void etrn_policy_free(struct etrn_policy *p);

/* How a target covers a queued domain. */
enum etrn_match {
	ETRN_MATCH_NAME = 0, /* that domain */
	ETRN_MATCH_SUFFIX,   /* that domain and the ones below it */
	ETRN_MATCH_SECTION,  /* the domains that section rules */
};

struct etrn_target {
	enum etrn_match match;
	const char *name; /* NAME, SUFFIX: the domain; SECTION: its section's name */
	size_t len;
	const struct config_domain *section; /* SECTION */
};

/* Does the target stand for one domain (a name, or a section for that very
 * name), which one shard holds, rather than a tree? */
static inline bool etrn_target_single(const struct etrn_target *t)
{
	return t->match == ETRN_MATCH_NAME ||
	       (t->match == ETRN_MATCH_SECTION && !t->section->subdomains);
}

/* What one ETRN may do. */
struct etrn_plan {
	int code;         /* 0: go ahead; 458 (nothing of ours by that name) or 459 */
	char reason[128]; /* 459: why, in words for the client */
	bool counts;      /* 253/251 may be said; false: 250 */
	struct etrn_argument arg;
	const struct config *cfg;
	struct etrn_target *targets;
	size_t ntargets;
};

/*
 * Decide what `arg` from `client` may release (client NULL: an operator,
 * who may release anything: @domain then covers whatever is queued at or
 * below it, configured or not). Returns 0 with plan filled
 * (plan->code says the verdict), or -ENOMEM. Free with etrn_plan_free.
 */
int etrn_plan_make(const struct etrn_policy *p, const struct sockaddr *client,
		   const struct etrn_argument *arg, struct etrn_plan *plan);
void etrn_plan_free(struct etrn_plan *plan);

/* A plan points into itself (an @domain target names plan->arg): it is
 * never copied as a struct, but moved with this; `from` is left empty. */
void etrn_plan_move(struct etrn_plan *to, struct etrn_plan *from);

/* Does the plan cover this queued domain (len octets, any case)? */
bool etrn_plan_covers(const struct etrn_plan *plan, const char *domain, size_t len);

/*
 * The reply line, without CRLF, for an outcome: 250 (started, count not
 * told), 251 (nothing waiting), 252 (pending, count not exact), 253
 * (`count` pending messages), 458, 459 (with plan->reason as `reason`),
 * 500, 501; the texts are RFC 1985's, with an enhanced status code after
 * the number. `shown` is the argument as etrn_parse shows it (NULL for
 * 500/501). Returns out.
 */
const char *etrn_reply_text(char *out, size_t size, int code, const char *shown, uint64_t count,
			    const char *reason);

#endif
