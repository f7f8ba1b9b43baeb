/*
 * ferryd — the relay daemon: reads the config, checks that io_uring works,
 * fits its descriptor limit, recovers the spool, starts one worker per
 * core running the services of the layers (the store, inbound SMTP), gives
 * up root once they listen (ferryd_privileges.h), and waits for
 * SIGTERM/SIGINT to wind them down. Like every program under tools/, it is
 * a place that wires the layers together (core -> queue -> net).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fault.h"
#include "core/log.h"
#include "core/worker.h"
#include "net/admin.h"
#include "net/dns.h"
#include "net/etrn_service.h"
#include "net/generation.h"
#include "net/listener.h"
#include "net/metrics_http.h"
#include "net/outbound.h"
#include "net/reload.h"
#include "net/server.h"
#include "queue/queue.h"
#include "tools/ferryd_privileges.h"

static void ferryd_usage(FILE *out)
{
	fprintf(out, "usage: ferryd [-c FILE] [--check-config] [--version]\n"
		     "  -c, --config FILE   configuration file (default: built-in defaults)\n"
		     "      --check-config  validate the configuration, print it, and exit\n"
		     "      --version       print the version and exit\n"
		     "Configuration keys: docs/config.md\n");
}

/*
 * The descriptors ferryd may hold at once: one per connection
 * max_connections allows, and beside them (docs/operations.md,
 * "Descriptors") per worker its ring and wake-up, each listener with its
 * spare, the spool files its writer, compaction and delivery's body
 * readers hold, room for connections refused over a limit while their
 * 421 leaves (they are not counted in max_connections), and delivery's
 * outbound connections and DNS sockets; once, the spool's lock and directories,
 * the admin socket and its clients, and a margin for stdio, syslog and
 * the libraries.
 */
#define FERRYD_REFUSALS_PER_WORKER 16
#define FERRYD_DESCRIPTOR_MARGIN   64

static uint64_t ferryd_descriptors_beside_connections(const struct config *cfg)
{
	uint64_t per_worker = WORKER_DESCRIPTORS + (uint64_t)cfg->nlisten * LISTENER_DESCRIPTORS +
			      QUEUE_DESCRIPTORS_PER_WORKER + FERRYD_REFUSALS_PER_WORKER +
			      OUTBOUND_DESCRIPTORS_PER_WORKER;
	/* Outbound: each worker's share of the total, rounded up. */
	uint64_t outbound = cfg->workers * ((cfg->max_outbound_connections + cfg->workers - 1) /
					    (cfg->workers ? cfg->workers : 1));
	return cfg->workers * per_worker + outbound + QUEUE_STORE_DESCRIPTORS + ADMIN_DESCRIPTORS +
	       FERRYD_DESCRIPTOR_MARGIN;
}

/* RLIMIT_NOFILE as text ("unlimited" is possible in principle). */
static const char *ferryd_rlimit_text(rlim_t v, char *out, size_t size)
{
	if (v == RLIM_INFINITY)
		snprintf(out, size, "unlimited");
	else
		snprintf(out, size, "%llu", (unsigned long long)v);
	return out;
}

/* RLIMIT_NOFILE as ferryd found it and what it did about it. */
struct ferryd_nofile {
	bool known;           /* getrlimit worked */
	struct rlimit found;  /* at start */
	int hard_error;       /* as root, raising the hard limit failed: errno */
	uint64_t hard_wanted; /* ... to this */
};

static bool ferryd_rlimit_below(rlim_t limit, uint64_t need)
{
	return limit != RLIM_INFINITY && limit < need;
}

/*
 * First of all (max_connections' default depends on it): as root, raise a
 * hard RLIMIT_NOFILE that cannot hold what the configuration needs to
 * that need. It takes CAP_SYS_RESOURCE, and the kernel's fs.nr_open caps
 * it; a failure is remembered for the refusal's message (or the default's
 * lowering), not an error in itself.
 */
static void ferryd_raise_hard_limit(const struct config *cfg, struct ferryd_nofile *nofile)
{
	uint64_t need = cfg->max_connections + ferryd_descriptors_beside_connections(cfg);
	memset(nofile, 0, sizeof(*nofile));
	if (getrlimit(RLIMIT_NOFILE, &nofile->found) != 0)
		return;
	nofile->known = true;
	if (geteuid() != 0 || !ferryd_rlimit_below(nofile->found.rlim_max, need))
		return;
	struct rlimit raised = {.rlim_cur = (rlim_t)need, .rlim_max = (rlim_t)need};
	if (setrlimit(RLIMIT_NOFILE, &raised) != 0) {
		nofile->hard_error = errno;
		nofile->hard_wanted = need;
	}
}

/*
 * max_connections left at its default on a machine whose hard
 * RLIMIT_NOFILE cannot hold it (and root could not raise): as many as it
 * can. (Set in the file, it is the operator's number, and
 * ferryd_fit_descriptors refuses to start rather than quietly take fewer.)
 * Returns the lowered value, or 0 when it stands.
 */
static uint32_t ferryd_fit_default_connections(struct config *cfg)
{
	struct rlimit rl;
	if (config_is_set(cfg, "limits", "max_connections") || getrlimit(RLIMIT_NOFILE, &rl) != 0 ||
	    rl.rlim_max == RLIM_INFINITY)
		return 0;
	uint64_t beside = ferryd_descriptors_beside_connections(cfg);
	if (rl.rlim_max >= cfg->max_connections + beside || rl.rlim_max <= beside)
		return 0;
	cfg->max_connections = (uint32_t)(rl.rlim_max - beside);
	if (cfg->max_connections_per_client > cfg->max_connections)
		cfg->max_connections_per_client = cfg->max_connections;
	return cfg->max_connections;
}

/* Why root did not raise the hard limit, for the refusal ("" if it did
 * not try). */
static const char *ferryd_hard_limit_note(const struct ferryd_nofile *nofile, char *out,
					  size_t size)
{
	out[0] = '\0';
	if (nofile->hard_error == 0)
		return out;
	long nr_open = -1;
	FILE *f = fopen("/proc/sys/fs/nr_open", "r");
	if (f != NULL) {
		if (fscanf(f, "%ld", &nr_open) != 1)
			nr_open = -1;
		fclose(f);
	}
	char cap[64] = "";
	if (nr_open > 0)
		snprintf(cap, sizeof(cap), ", and at most fs.nr_open = %ld", nr_open);
	snprintf(out, size,
		 "; as root, ferryd could not raise the hard limit to %llu: %s (that takes "
		 "CAP_SYS_RESOURCE%s)",
		 (unsigned long long)nofile->hard_wanted, strerror(nofile->hard_error), cap);
	return out;
}

/*
 * Make RLIMIT_NOFILE cover what the configuration may open: the soft
 * limit is raised to the hard limit (room for refusals beyond the budget,
 * too), which root has raised already if it could. A hard limit below the
 * budget is refused, saying what is needed, what the limits are and what
 * to change, rather than found out when accept fails at the busiest
 * moment. 0 or -EMFILE.
 */
static int ferryd_fit_descriptors(const struct config *cfg, const struct ferryd_nofile *nofile,
				  char *err, size_t err_size)
{
	uint64_t beside = ferryd_descriptors_beside_connections(cfg);
	uint64_t need = cfg->max_connections + beside;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0; /* nothing to go by: accept's own errors will tell */
	if (ferryd_rlimit_below(rl.rlim_max, need)) {
		char hard[32], soft[32], note[256];
		uint64_t fits = rl.rlim_max > beside ? rl.rlim_max - beside : 0;
		snprintf(
			err, err_size,
			"max_connections = %u needs %llu file descriptors (%u connections and "
			"%llu for listeners, rings, spool files, outbound connections, the admin "
			"socket and a margin), "
			"but the hard limit RLIMIT_NOFILE is %s (soft %s)%s: raise it "
			"(LimitNOFILE=%llu or more in ferryd's systemd unit, or `ulimit -n %llu` "
			"as root before starting ferryd), or lower max_connections to %llu or less",
			cfg->max_connections, (unsigned long long)need, cfg->max_connections,
			(unsigned long long)beside,
			ferryd_rlimit_text(rl.rlim_max, hard, sizeof(hard)),
			ferryd_rlimit_text(rl.rlim_cur, soft, sizeof(soft)),
			ferryd_hard_limit_note(nofile, note, sizeof(note)),
			(unsigned long long)need, (unsigned long long)need,
			(unsigned long long)fits);
		return -EMFILE;
	}
	if (rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			int e = errno;
			snprintf(err, err_size, "cannot raise RLIMIT_NOFILE to %llu: %s",
				 (unsigned long long)rl.rlim_max, strerror(e));
			return -e;
		}
	}
	return 0;
}

/* Say what ferryd did to its limit (nothing: no line). */
static void ferryd_log_descriptors(const struct config *cfg, const struct ferryd_nofile *nofile)
{
	struct rlimit now;
	if (!nofile->known || getrlimit(RLIMIT_NOFILE, &now) != 0 ||
	    (now.rlim_cur == nofile->found.rlim_cur && now.rlim_max == nofile->found.rlim_max))
		return;
	char soft[32], hard[32], was_soft[32], was_hard[32];
	log_event(LOG_LEVEL_INFO,
		  "event=nofile_raised soft=%s hard=%s was_soft=%s was_hard=%s needed=%llu",
		  ferryd_rlimit_text(now.rlim_cur, soft, sizeof(soft)),
		  ferryd_rlimit_text(now.rlim_max, hard, sizeof(hard)),
		  ferryd_rlimit_text(nofile->found.rlim_cur, was_soft, sizeof(was_soft)),
		  ferryd_rlimit_text(nofile->found.rlim_max, was_hard, sizeof(was_hard)),
		  (unsigned long long)(cfg->max_connections +
				       ferryd_descriptors_beside_connections(cfg)));
}

/* For --check-config: the budget, and whether this shell's limit holds it
 * (the file may be meant for another machine: a comment, not an error). */
static void ferryd_print_descriptors(const struct config *cfg, const struct ferryd_nofile *nofile,
				     FILE *out)
{
	uint64_t need = cfg->max_connections + ferryd_descriptors_beside_connections(cfg);
	struct rlimit rl;
	fprintf(out, "\n# file descriptors: %llu needed (max_connections + %llu)",
		(unsigned long long)need,
		(unsigned long long)ferryd_descriptors_beside_connections(cfg));
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		char soft[32], hard[32];
		fprintf(out, "; RLIMIT_NOFILE here: soft %s, hard %s%s%s",
			ferryd_rlimit_text(rl.rlim_cur, soft, sizeof(soft)),
			ferryd_rlimit_text(rl.rlim_max, hard, sizeof(hard)),
			nofile->known && rl.rlim_max != nofile->found.rlim_max
				? " (the hard limit raised by root, as ferryd does at start)"
				: "",
			ferryd_rlimit_below(rl.rlim_max, need)
				? " (too low: ferryd would refuse to start)"
				: "");
	}
	fputc('\n', out);
}

/* For --check-config: who ferryd runs as. */
static void ferryd_print_identity(const struct ferryd_identity *id, FILE *out)
{
	if (id->set)
		fprintf(out,
			"# runs as user %s (uid %u), group %s (gid %u), once started as root "
			"and listening\n",
			id->user, (unsigned)id->uid, id->group, (unsigned)id->gid);
	else
		fprintf(out, "# runs as whoever starts it (no user set)\n");
}

/*
 * Give up root (ferryd_privileges.h), then check that the user can reach
 * the spool by its path (its parents must let it through): the admin
 * socket and ferryctl go by the path, and a spool found unreachable only
 * then would leave ferryctl without ferryd.
 */
static int ferryd_drop_privileges(const struct ferryd_identity *id, const char *spool_dir,
				  char *err, size_t err_size)
{
	int r = ferryd_privileges_drop(id, err, err_size);
	if (r != 0) {
		log_event(LOG_LEVEL_ERROR, "event=privileges_drop_failed user=%s group=%s",
			  id->user, id->group);
		return r;
	}
	log_event(LOG_LEVEL_INFO, "event=privileges_dropped user=%s uid=%u group=%s gid=%u",
		  id->user, (unsigned)id->uid, id->group, (unsigned)id->gid);
	if (access(spool_dir, R_OK | W_OK | X_OK) != 0) {
		int e = errno;
		snprintf(err, err_size,
			 "the spool %s cannot be reached by user '%s' once root is given up: %s "
			 "(each directory above it must let the user through, e.g. chmod o+x)",
			 spool_dir, id->user, strerror(e));
		return -e;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", no_argument, NULL, 'C'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *config_path = NULL;
	bool check_only = false;
	int opt;
	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'C':
			check_only = true;
			break;
		case 'V':
			printf("ferryd %s\n", FERRY_VERSION);
			return 0;
		case 'h':
			ferryd_usage(stdout);
			return 0;
		default:
			ferryd_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ferryd: unexpected argument '%s'\n", argv[optind]);
		ferryd_usage(stderr);
		return 2;
	}

	/* SIGHUP blocked from the start, so that a reload (systemctl reload)
	 * during a long recovery waits for the loop below instead of killing
	 * ferryd; SIGTERM and SIGINT still end a start at once. */
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);

	static struct config cfg;
	if (config_open(&cfg, config_path, "ferryd") != 0)
		return 1;
	char err[1024];
	/* What runs for the whole of ferryd's life, whatever reloads change;
	 * filled in as it comes up. */
	static struct outbound_shared delivery;
	static struct etrn_settings etrn;
	static struct net_runtime rt = {.delivery = &delivery, .etrn = &etrn};
	struct queue_store *store = NULL;
	struct net_generation *gen = NULL; /* the first: ours until reload takes it */
	struct net_reload *reload = NULL;
	int status = 1;
	struct ferryd_nofile nofile;
	ferryd_raise_hard_limit(&cfg, &nofile);
	uint32_t lowered = ferryd_fit_default_connections(&cfg);
	struct ferryd_identity identity;
	if (ferryd_identity_resolve(&cfg, &identity, err, sizeof(err)) != 0 ||
	    net_generation_create(&gen, &cfg, 1, &rt, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: config: %s\n", err);
		config_free(&cfg);
		goto out;
	}
	const struct config *c = &gen->cfg; /* cfg is the generation's now */
	if (metrics_http_check(c->metrics_address, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: config: %s:%u: key 'address': %s\n", c->source,
			config_key_line(c, "metrics", "address"), err);
		goto out;
	}
	if (dns_check_servers(c->dns_servers, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: config: %s:%u: key 'dns_servers': %s\n", c->source,
			config_key_line(c, "delivery", "dns_servers"), err);
		goto out;
	}
	if (check_only) {
		config_print(c, stdout);
		ferryd_print_descriptors(c, &nofile, stdout);
		ferryd_print_identity(&identity, stdout);
		if (lowered != 0)
			printf("# max_connections: the default, lowered to %u to fit the hard "
			       "RLIMIT_NOFILE here\n",
			       lowered);
		printf("\n# configuration OK\n");
		status = 0;
		goto out;
	}
	log_setup((enum log_level)c->log_level, (enum log_destination)c->log_destination);
	if (lowered != 0)
		log_event(
			LOG_LEVEL_WARN,
			"event=max_connections_lowered max_connections=%u note=\"the default does "
			"not fit the hard RLIMIT_NOFILE here; raise that limit, or set "
			"max_connections\"",
			lowered);
	log_client_lines(c->log_max_lines_per_client);

	if (worker_probe_io_uring(err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		goto out;
	}
	bool drop = false;
	if (ferryd_identity_check_start(&identity, &drop, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		goto out;
	}
	if (!identity.set && geteuid() == 0)
		log_event(LOG_LEVEL_WARN,
			  "event=running_as_root note=\"no [server] user is set: ferryd serves "
			  "clients as root; set user (and group) to the account it should run as "
			  "once its listeners are bound\"");
	if (ferryd_fit_descriptors(c, &nofile, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		goto out;
	}
	ferryd_log_descriptors(c, &nofile);
	for (unsigned i = 0; i < c->nlisten; i++) {
		if (listener_check_free(&c->listen[i], err, sizeof(err)) != 0) {
			fprintf(stderr, "ferryd: %s\n", err);
			goto out;
		}
	}

	/* Recovery runs here, single-threaded, before anyone is told 220. */
	struct queue_store_config qcfg = {
		.spool_dir = c->spool_dir,
		.workers = c->workers,
		.shards = c->shards,
		.segment_size = c->segment_size,
		.batch_cap = c->group_commit_bytes,
		.max_bytes = c->spool_max_size,
		.max_messages = c->spool_max_messages,
		.min_free_bytes = c->spool_min_free,
		.compact_threshold = c->spool_compact_threshold,
		/* Given to the user while ferryd is still root to give it. */
		.owner_set = drop,
		.owner_uid = identity.uid,
		.owner_gid = identity.gid,
	};
	if (queue_store_open(&store, &qcfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: spool: %s\n", err);
		goto out;
	}
	struct queue_store_summary sum;
	queue_store_summary(store, &sum);
	log_event(LOG_LEVEL_INFO,
		  "event=recovered spool=%s messages=%llu recipients=%llu segments=%llu torn=%llu "
		  "corrupt=%llu bytes=%llu elapsed_ms=%llu",
		  c->spool_dir, (unsigned long long)sum.messages,
		  (unsigned long long)sum.recipients, (unsigned long long)sum.segments,
		  (unsigned long long)sum.torn, (unsigned long long)sum.corrupt,
		  (unsigned long long)sum.bytes, (unsigned long long)sum.elapsed_ms);
	rt.store = store;
	if (net_server_create(&rt.inbound, c, err, sizeof(err)) != 0 ||
	    outbound_shared_init(&delivery, c, store, err, sizeof(err)) != 0 ||
	    etrn_settings_init(&etrn, c, store, &delivery, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		goto out;
	}
	rt.inbound->store = store;

	/* Workers inherit this mask: only the main thread takes signals. */
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Each layer's life on every worker, lowest layer first; the layers
	 * above the store start from the first generation. */
	static struct worker_services services;
	worker_services_add(&services, &queue_service, store);
	worker_services_add(&services, &outbound_service, gen);
	worker_services_add(&services, &etrn_service, gen);
	worker_services_add(&services, &net_inbound_service, gen);
	struct worker_group group;
	if (worker_group_start_services(&group, c->workers, &services, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		goto out;
	}
	/* Every listener is bound and nothing is served yet: root ends here. */
	if (drop && ferryd_drop_privileges(&identity, c->spool_dir, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		worker_group_shutdown(&group);
		worker_group_join(&group);
		goto out;
	}
	worker_group_ready(&group);
	for (unsigned i = 0; i < c->nlisten; i++)
		log_event(LOG_LEVEL_INFO, "event=listening address=%s workers=%u spool=%s",
			  c->listen[i].text, c->workers, c->spool_dir);
	fprintf(stderr, "ferryd %s: listening on", FERRY_VERSION);
	for (unsigned i = 0; i < c->nlisten; i++)
		fprintf(stderr, " %s", c->listen[i].text);
	fprintf(stderr, " with %u workers, spool %s (%llu messages queued)\n", c->workers,
		c->spool_dir, (unsigned long long)sum.messages);
	/* From here the running generation is reload's (SIGHUP, ferryctl
	 * reload). ferryd keeps its own reference to the first to the end:
	 * the listeners keep their addresses in its config, and what it
	 * reads of it here needs a restart to change (spool, metrics). */
	if (net_reload_create(&reload, config_path, net_generation_hold(gen), &rt, &group) != 0) {
		net_generation_drop(gen);
		log_event(LOG_LEVEL_ERROR,
			  "event=reload_unavailable note=\"out of memory; restart ferryd to change "
			  "its configuration\"");
	}
	/* Prometheus's endpoint; like the admin socket, mail flows without it. */
	struct metrics_http *metrics = NULL;
	if (metrics_http_start(&metrics, c->metrics_address, &group, err, sizeof(err)) != 0) {
		char quoted[1200];
		log_event(LOG_LEVEL_ERROR, "event=metrics_unavailable error=%s",
			  log_quote(quoted, sizeof(quoted), err, strlen(err)));
	} else if (metrics != NULL) {
		log_event(LOG_LEVEL_INFO, "event=metrics_listening address=%s", c->metrics_address);
	}
	/* ferryctl's socket; mail keeps flowing without it (ferryctl --spool
	 * still reads the spool), so a failure is logged, not fatal. */
	struct admin *admin = NULL;
	if (admin_start(&admin, reload, store, &delivery, c->spool_dir, err, sizeof(err)) != 0) {
		char quoted[1200];
		log_event(LOG_LEVEL_ERROR, "event=admin_unavailable error=%s",
			  log_quote(quoted, sizeof(quoted), err, strlen(err)));
	}
	fault_take_descriptors(); /* test builds: descriptors run out under a running ferryd */

	for (;;) {
		int sig;
		if (sigwait(&signals, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			char msg[1600];
			if (reload == NULL)
				log_event(LOG_LEVEL_ERROR,
					  "event=reload_refused trigger=SIGHUP generation=1 "
					  "reason=\"reload is "
					  "unavailable (out of memory at start); restart ferryd\"");
			else
				net_reload_run(reload, "SIGHUP", msg, sizeof(msg)); /* it logs */
			continue;
		}
		struct net_generation *now =
			reload != NULL ? net_reload_current(reload) : net_generation_hold(gen);
		log_event(LOG_LEVEL_INFO, "event=stopping signal=%s deadline_ms=%u",
			  sig == SIGTERM ? "TERM" : "INT", now->cfg.shutdown_timeout_ms);
		net_generation_drop(now);
		break;
	}
	metrics_http_stop(metrics);
	admin_stop(admin);
	worker_group_shutdown(&group);
	worker_group_join(&group);
	fault_release_descriptors();
	log_event(LOG_LEVEL_INFO, "event=stopped");
	status = 0;
out:
	queue_store_close(store);
	etrn_settings_free(&etrn);
	outbound_shared_free(&delivery);
	net_server_destroy(rt.inbound);
	net_reload_free(reload);
	net_generation_drop(gen);
	return status;
}
