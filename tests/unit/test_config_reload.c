/* config_reload: which restart-only keys a file read again changes, and
 * the running values kept for those it does not set (core/config_reload.c). */
#include <criterion/criterion.h>
#include <stddef.h>

#include "core/config.h"

static char err[1024];

/* A reload: the running configuration, and the file read again. */
static struct config running, next;
static char changed[512];

static void reload_setup(void)
{
	config_defaults(&running);
	config_defaults(&next);
	changed[0] = '\0';
}

static void reload_teardown(void)
{
	config_free(&running);
	config_free(&next);
}

static void reload_load(struct config *c, const char *text)
{
	cr_assert_eq(config_load_string(c, text, "r.conf", err, sizeof(err)), 0, "%s", err);
}

static size_t reload_changes(void)
{
	config_keep_running_values(&next, &running);
	return config_restart_changes(&running, &next, changed, sizeof(changed));
}

TestSuite(config_reload, .init = reload_setup, .fini = reload_teardown);

Test(config_reload, the_same_file_needs_no_restart)
{
	const char *text = "[server]\nworkers = 2\nlisten = 0.0.0.0:25, [::]:25\n"
			   "[spool]\ndirectory = /var/spool/ferry\n";
	reload_load(&running, text);
	reload_load(&next, text);
	cr_expect_eq(reload_changes(), 0);
	cr_expect_str_eq(changed, "");
}

Test(config_reload, restart_only_changes_are_named_in_table_order)
{
	reload_load(&running, "[server]\nlisten = 127.0.0.1:2525\n");
	reload_load(&next, "[spool]\ndirectory = /var/spool/other\n"
			   "[server]\nlisten = 127.0.0.1:2526\n");
	cr_expect_eq(reload_changes(), 2);
	cr_expect_str_eq(changed, "[server] listen, [spool] directory");
}

Test(config_reload, every_restart_only_key_is_reported)
{
	reload_load(&running, "[server]\nworkers = 2\n");
	reload_load(&next, "[server]\n"
			   "workers = 3\n"
			   "listen = 0.0.0.0:2525\n"
			   "listen_backlog = 100\n"
			   "user = ferry\n"
			   "group = ferry\n"
			   "[limits]\n"
			   "max_connections = 100\n"
			   "max_connections_per_client = 10\n"
			   "max_connection_rate_per_client = 5\n"
			   "[spool]\n"
			   "directory = /var/spool/ferry\n"
			   "segment_size = 8M\n"
			   "group_commit_bytes = 128K\n"
			   "max_size = 1G\n"
			   "max_messages = 10\n"
			   "min_free_disk = 1G\n"
			   "shards = 4\n"
			   "compact_threshold = 10\n"
			   "[delivery]\n"
			   "max_outbound_connections = 10\n"
			   "dns_servers = 127.0.0.1\n"
			   "[etrn]\n"
			   "max_rate_per_client = 5\n"
			   "[metrics]\n"
			   "address = 127.0.0.1:9999\n"
			   "[log]\n"
			   "destination = syslog\n");
	cr_expect_eq(reload_changes(), 21);
	cr_expect_str_eq(changed,
			 "[server] workers, [server] listen, [server] listen_backlog, [server] "
			 "user, [server] group, [limits] max_connections, [limits] "
			 "max_connections_per_client, [limits] max_connection_rate_per_client, "
			 "[spool] directory, [spool] segment_size, [spool] group_commit_bytes, "
			 "[spool] max_size, [spool] max_messages, [spool] min_free_disk, [spool] "
			 "shards, [spool] compact_threshold, [delivery] max_outbound_connections, "
			 "[delivery] dns_servers, [etrn] max_rate_per_client, [metrics] address, "
			 "[log] destination");
}

Test(config_reload, reloadable_keys_need_no_restart)
{
	reload_load(&running, "");
	reload_load(&next, "[server]\n"
			   "hostname = mx9.example\n"
			   "greeting_delay = 2s\n"
			   "shutdown_timeout = 1m\n"
			   "[limits]\n"
			   "max_recipients = 50\n"
			   "max_message_size = 10M\n"
			   "idle_timeout = 1m\n"
			   "[relay]\n"
			   "relay_domains = customer.example\n"
			   "trusted_networks = 192.0.2.0/24\n"
			   "[delivery]\n"
			   "relayhost = [smarthost.example]:587\n"
			   "concurrency = 5\n"
			   "retry_initial = 1m\n"
			   "[etrn]\n"
			   "max_per_session = 5\n"
			   "flood_delay = 2s\n"
			   "[log]\n"
			   "level = debug\n"
			   "max_lines_per_client = 10\n"
			   "[domain customer.example]\n"
			   "transport = [192.0.2.1]:25\n");
	cr_expect_eq(reload_changes(), 0);
	cr_expect_str_eq(changed, "");
}

Test(config_reload, listen_addresses_are_compared_not_their_text)
{
	reload_load(&running, "[server]\nlisten = [::1]:2525, 127.0.0.1:2525\n");
	reload_load(&next, "[server]\nlisten = [0:0:0:0:0:0:0:1]:2525, 127.0.0.1:02525\n");
	cr_expect_eq(reload_changes(), 0, "same addresses, spelled otherwise: %s", changed);

	/* The same sockets in another order are still a change: the order
	 * is kept, not the set. */
	config_free(&next);
	config_defaults(&next);
	reload_load(&next, "[server]\nlisten = 127.0.0.1:2525, [::1]:2525\n");
	cr_expect_eq(reload_changes(), 1);
	cr_expect_str_eq(changed, "[server] listen");
}

/* ferryd lowers the default max_connections to fit RLIMIT_NOFILE at start;
 * a reload must neither call that a change nor undo it. */
Test(config_reload, running_values_of_unset_keys_are_kept)
{
	reload_load(&running, "");
	running.max_connections = 1234;
	reload_load(&next, "");
	cr_expect_eq(config_restart_changes(&running, &next, changed, sizeof(changed)), 1);
	cr_expect_eq(reload_changes(), 0, "%s", changed);
	cr_expect_eq(next.max_connections, 1234);
}

Test(config_reload, a_value_the_new_file_sets_is_a_change)
{
	reload_load(&running, "");
	running.max_connections = 1234;
	reload_load(&next, "[limits]\nmax_connections = 5000\n");
	cr_expect_eq(reload_changes(), 1);
	cr_expect_eq(next.max_connections, 5000);
	cr_expect_str_eq(changed, "[limits] max_connections");
}

Test(config_reload, a_key_the_new_file_drops_returns_to_its_default)
{
	reload_load(&running, "[spool]\ndirectory = /var/spool/ferry\n");
	reload_load(&next, "");
	cr_expect_eq(reload_changes(), 1);
	cr_expect_str_eq(next.spool_dir, "./var/spool");
	cr_expect_str_eq(changed, "[spool] directory");
}

Test(config_reload, names_cut_short_end_in_dots)
{
	char small[16];
	reload_load(&running, "");
	reload_load(&next, "[server]\nlisten = 127.0.0.1:2526\n[spool]\ndirectory = /x\n");
	config_keep_running_values(&next, &running);
	cr_expect_eq(config_restart_changes(&running, &next, small, sizeof(small)), 2);
	cr_expect_str_eq(small, "[server] lis...");
	cr_expect_eq(config_restart_changes(&running, &next, small, 3), 2);
	cr_expect_str_eq(small, "..");
	cr_expect_eq(config_restart_changes(&running, &next, NULL, 0), 2);
	/* Exactly the room the names take: whole, no dots. */
	char exact[sizeof("[server] listen, [spool] directory")];
	cr_expect_eq(config_restart_changes(&running, &next, exact, sizeof(exact)), 2);
	cr_expect_str_eq(exact, "[server] listen, [spool] directory");
}

/* ferryd lowered the default max_connections at start and capped the
 * file's max_connections_per_client by it: the same file reloads. */
Test(config_reload, a_per_client_limit_capped_by_a_lowered_max_connections_is_no_change)
{
	const char *text = "[limits]\nmax_connections_per_client = 500\n";
	reload_load(&running, text);
	running.max_connections = 300;
	running.max_connections_per_client = 300;
	reload_load(&next, text);
	cr_expect_eq(reload_changes(), 0, "changed: %s", changed);
	cr_expect_eq(next.max_connections, 300);
	cr_expect_eq(next.max_connections_per_client, 300);
}

/* workers = 0 (one per CPU) in both files: the run's number stands, even
 * if the CPUs this process may use changed since it started. */
Test(config_reload, workers_per_cpu_in_both_files_keeps_the_running_number)
{
	reload_load(&running, "[server]\nworkers = 0\n");
	running.workers = 7; /* as if started with 7 CPUs */
	reload_load(&next, "[server]\nworkers = 0\n");
	cr_expect_eq(reload_changes(), 0, "changed: %s", changed);
	cr_expect_eq(next.workers, 7);
}

Test(config_reload, a_number_of_workers_written_out_is_compared_with_the_running_one)
{
	reload_load(&running, "[server]\nworkers = 0\n");
	running.workers = 7;
	reload_load(&next, "[server]\nworkers = 2\n");
	cr_expect_eq(reload_changes(), 1);
	cr_expect_str_eq(changed, "[server] workers");
}
