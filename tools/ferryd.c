/*
 * ferryd — the relay daemon: reads the config, checks that io_uring works,
 * recovers the spool, starts one worker per core running the services of
 * the layers (the store, inbound SMTP), and waits for SIGTERM/SIGINT to
 * wind them down. Like every program under tools/, it is a place that
 * wires the layers together (core -> queue -> net).
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
#include "core/log.h"
#include "core/worker.h"
#include "net/admin.h"
#include "net/listener.h"
#include "net/server.h"
#include "queue/queue.h"

static void ferryd_usage(FILE *out)
{
	fprintf(out, "usage: ferryd [-c FILE] [--check-config] [--version]\n"
		     "  -c, --config FILE   configuration file (default: built-in defaults)\n"
		     "      --check-config  validate the configuration, print it, and exit\n"
		     "      --version       print the version and exit\n"
		     "Configuration keys: docs/config.md\n");
}

/* Thousands of sessions need thousands of descriptors. */
static void ferryd_raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
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

	static struct config cfg;
	if (config_open(&cfg, config_path, "ferryd") != 0)
		return 1;
	char err[1024];
	struct net_server *srv = NULL;
	struct queue_store *store = NULL;
	int status = 1;
	if (net_server_create(&srv, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: config: %s\n", err);
		goto out;
	}
	if (check_only) {
		config_print(&cfg, stdout);
		printf("\n# configuration OK\n");
		status = 0;
		goto out;
	}
	log_setup((enum log_level)cfg.log_level, (enum log_destination)cfg.log_destination);

	if (worker_probe_io_uring(err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		goto out;
	}
	ferryd_raise_fd_limit();
	for (unsigned i = 0; i < cfg.nlisten; i++) {
		if (listener_check_free(&cfg.listen[i], err, sizeof(err)) != 0) {
			fprintf(stderr, "ferryd: %s\n", err);
			goto out;
		}
	}

	/* Recovery runs here, single-threaded, before anyone is told 220. */
	struct queue_store_config qcfg = {
		.spool_dir = cfg.spool_dir,
		.workers = cfg.workers,
		.shards = cfg.shards,
		.segment_size = cfg.segment_size,
		.batch_cap = cfg.group_commit_bytes,
		.max_bytes = cfg.spool_max_size,
		.max_messages = cfg.spool_max_messages,
		.min_free_bytes = cfg.spool_min_free,
		.compact_threshold = cfg.spool_compact_threshold,
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
		  cfg.spool_dir, (unsigned long long)sum.messages,
		  (unsigned long long)sum.recipients, (unsigned long long)sum.segments,
		  (unsigned long long)sum.torn, (unsigned long long)sum.corrupt,
		  (unsigned long long)sum.bytes, (unsigned long long)sum.elapsed_ms);
	srv->store = store;

	/* Workers inherit this mask: only the main thread takes signals. */
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Each layer's life on every worker, lowest layer first. */
	static struct worker_services services;
	worker_services_add(&services, &queue_service, store);
	worker_services_add(&services, &net_inbound_service, srv);
	struct worker_group group;
	if (worker_group_start(&group, cfg.workers, &services, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		goto out;
	}
	for (unsigned i = 0; i < cfg.nlisten; i++)
		log_event(LOG_LEVEL_INFO, "event=listening address=%s workers=%u spool=%s",
			  cfg.listen[i].text, cfg.workers, cfg.spool_dir);
	fprintf(stderr, "ferryd %s: listening on", FERRY_VERSION);
	for (unsigned i = 0; i < cfg.nlisten; i++)
		fprintf(stderr, " %s", cfg.listen[i].text);
	fprintf(stderr, " with %u workers, spool %s (%llu messages queued)\n", cfg.workers,
		cfg.spool_dir, (unsigned long long)sum.messages);
	/* ferryctl's socket; mail keeps flowing without it (ferryctl --spool
	 * still reads the spool), so a failure is logged, not fatal. */
	struct admin *admin = NULL;
	if (admin_start(&admin, store, cfg.spool_dir, err, sizeof(err)) != 0) {
		char quoted[1200];
		log_event(LOG_LEVEL_ERROR, "event=admin_unavailable error=%s",
			  log_quote(quoted, sizeof(quoted), err, strlen(err)));
	}

	for (;;) {
		int sig;
		if (sigwait(&signals, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_event(LOG_LEVEL_WARN,
				  "event=sighup note=\"reload is not supported; restart ferryd\"");
			continue;
		}
		log_event(LOG_LEVEL_INFO, "event=stopping signal=%s deadline_ms=%u",
			  sig == SIGTERM ? "TERM" : "INT", cfg.shutdown_timeout_ms);
		break;
	}
	admin_stop(admin);
	worker_group_shutdown(&group);
	worker_group_join(&group);
	log_event(LOG_LEVEL_INFO, "event=stopped");
	status = 0;
out:
	queue_store_close(store);
	net_server_destroy(srv);
	config_free(&cfg);
	return status;
}
