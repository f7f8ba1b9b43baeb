/*
 * ferryd — the relay daemon: reads the config, checks that io_uring works,
 * starts one worker per core running the inbound SMTP server, and waits
 * for SIGTERM/SIGINT to wind them down. It is the one place that wires the
 * layers together (core -> queue -> net).
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
#include "net/listener.h"
#include "net/server.h"

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
	char err[1024];
	config_defaults(&cfg);
	if (config_load(&cfg, config_path, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: config: %s\n", err);
		config_free(&cfg);
		return 1;
	}
	struct net_server *srv = NULL;
	if (net_server_create(&srv, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: config: %s\n", err);
		config_free(&cfg);
		return 1;
	}
	if (check_only) {
		config_print(&cfg, stdout);
		printf("\n# configuration OK\n");
		net_server_destroy(srv);
		config_free(&cfg);
		return 0;
	}
	log_setup((enum log_level)cfg.log_level, (enum log_destination)cfg.log_destination);

	if (worker_probe_io_uring(err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		net_server_destroy(srv);
		config_free(&cfg);
		return 1;
	}
	ferryd_raise_fd_limit();
	for (unsigned i = 0; i < cfg.nlisten; i++) {
		if (listener_check_free(&cfg.listen[i], err, sizeof(err)) != 0) {
			fprintf(stderr, "ferryd: %s\n", err);
			net_server_destroy(srv);
			config_free(&cfg);
			return 1;
		}
	}

	/* Workers inherit this mask: only the main thread takes signals. */
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct worker_group group;
	if (worker_group_start(&group, cfg.workers, &net_server_worker_hooks,
			       net_server_worker_state, srv, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferryd: %s\n", err);
		net_server_destroy(srv);
		config_free(&cfg);
		return 1;
	}
	for (unsigned i = 0; i < cfg.nlisten; i++)
		log_event(LOG_LEVEL_INFO, "event=listening address=%s workers=%u spool=%s",
			  cfg.listen[i].text, cfg.workers, cfg.spool_dir);
	fprintf(stderr, "ferryd %s: listening on", FERRY_VERSION);
	for (unsigned i = 0; i < cfg.nlisten; i++)
		fprintf(stderr, " %s", cfg.listen[i].text);
	fprintf(stderr, " with %u workers, spool %s\n", cfg.workers, cfg.spool_dir);

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
	worker_group_shutdown(&group);
	worker_group_join(&group);
	log_event(LOG_LEVEL_INFO, "event=stopped");
	net_server_destroy(srv);
	config_free(&cfg);
	return 0;
}
