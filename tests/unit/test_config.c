/* config: defaults, parsing, and errors that name file, line and key. */
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"

static struct config cfg;
static char err[1024];

static void setup(void)
{
	config_defaults(&cfg);
	err[0] = '\0';
}

static void teardown(void)
{
	config_free(&cfg);
}

TestSuite(config, .init = setup, .fini = teardown);

Test(config, defaults_make_a_local_relay)
{
	cr_assert_eq(config_load(&cfg, NULL, err, sizeof(err)), 0);
	cr_assert_eq(cfg.nlisten, 1);
	cr_assert_str_eq(cfg.listen[0].text, "127.0.0.1:2525");
	cr_assert_str_eq(cfg.spool_dir, "./var/spool");
	cr_assert_eq(cfg.trusted_networks.count, 2);
	cr_assert_str_eq(cfg.trusted_networks.items[0].value, "127.0.0.0/8");
	cr_assert_eq(cfg.max_command_line, 512);
	cr_assert_eq(cfg.max_text_line, 1000);
	cr_assert_eq(cfg.idle_timeout_ms, 300000);
	cr_assert_eq(cfg.max_connection_rate_per_client, 600);
	cr_assert_eq(cfg.log_max_lines_per_client, 100);
	cr_assert_eq(cfg.max_recipients, 1000);
	cr_assert_eq(cfg.recipient_overshoot, 1000);
	cr_assert_eq(cfg.max_input_held, 65536);
	cr_assert_eq(cfg.max_output_queue, 32768);
	cr_assert_eq(cfg.command_deadline_ms, 60000);
	cr_assert_eq(cfg.min_data_rate, 500);
	cr_assert(cfg.workers >= 1, "workers resolved to the CPUs the process may use");
}

Test(config, postmaster_follows_the_host_name)
{
	cr_assert_eq(config_load_string(&cfg,
					"[relay]\nrelay_domains = a.example\n"
					"[server]\nhostname = mx7.example\n",
					"p.conf", err, sizeof(err)),
		     0, "%s", err);
	cr_assert_str_eq(cfg.postmaster, "postmaster@mx7.example");
	config_free(&cfg);
	config_defaults(&cfg);
	cr_assert_eq(config_load_string(&cfg, "[relay]\npostmaster = abuse@isp.example\n", "p.conf",
					err, sizeof(err)),
		     0, "%s", err);
	cr_assert_str_eq(cfg.postmaster, "abuse@isp.example");
}

Test(config, values_with_units)
{
	const char *text = "[server]\n"
			   "workers = 3\n"
			   "listen = 0.0.0.0:25, [::1]:2525\n"
			   "listen = 127.0.0.2:26\n"
			   "greeting_delay = 250ms\n"
			   "[limits]\n"
			   "max_message_size = 10M\n"
			   "idle_timeout = 5m\n"
			   "data_timeout = 90\n"
			   "max_input_held = 256K\n"
			   "max_output_queue = 1M\n"
			   "command_deadline = 20s\n"
			   "min_data_rate = 0\n"
			   "[relay]\n"
			   "relay_domains = a.example b.example\n"
			   "relay_domains = .c.example\n"
			   "[log]\nlevel = debug\n";
	cr_assert_eq(config_load_string(&cfg, text, "t.conf", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.workers, 3);
	cr_assert_eq(cfg.nlisten, 3, "the file's list replaces the default and repeats append");
	cr_assert_str_eq(cfg.listen[1].text, "[::1]:2525");
	cr_assert_eq(cfg.listen[1].addr.ss_family, AF_INET6);
	cr_assert_eq(cfg.greeting_delay_ms, 250);
	cr_assert_eq(cfg.max_message_size, 10u * 1024 * 1024);
	cr_assert_eq(cfg.idle_timeout_ms, 300000);
	cr_assert_eq(cfg.data_timeout_ms, 90000);
	cr_assert_eq(cfg.max_input_held, 256u * 1024);
	cr_assert_eq(cfg.max_output_queue, 1024u * 1024);
	cr_assert_eq(cfg.command_deadline_ms, 20000);
	cr_assert_eq(cfg.min_data_rate, 0, "0 turns the rate check off");
	cr_assert_eq(cfg.relay_domains.count, 3);
	cr_assert_str_eq(cfg.relay_domains.items[2].value, ".c.example");
	cr_assert_eq(cfg.relay_domains.items[2].line, 16);
	cr_assert_eq(cfg.log_level, LOG_LEVEL_DEBUG);
}

/* `taskset -c N ferryd` on a bigger machine: one worker, not one per CPU
 * online. The narrowed mask ends with this test's process. */
Test(config, workers_zero_is_one_per_cpu_of_the_affinity_mask)
{
	cpu_set_t original, narrowed;
	int last = -1;

	cr_assert_eq(sched_getaffinity(0, sizeof(original), &original), 0);
	cr_assert_eq(
		config_load_string(&cfg, "[server]\nworkers = 0\n", "w.conf", err, sizeof(err)), 0,
		"%s", err);
	cr_assert_eq(cfg.workers, (uint32_t)CPU_COUNT(&original));

	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (CPU_ISSET(cpu, &original))
			last = cpu;
	}
	CPU_ZERO(&narrowed);
	CPU_SET(last, &narrowed);
	cr_assert_eq(sched_setaffinity(0, sizeof(narrowed), &narrowed), 0);
	config_free(&cfg);
	config_defaults(&cfg);
	cr_assert_eq(
		config_load_string(&cfg, "[server]\nworkers = 0\n", "w.conf", err, sizeof(err)), 0,
		"%s", err);
	cr_expect_eq(cfg.workers, 1, "CPU %d alone: %u workers", last, cfg.workers);
	sched_setaffinity(0, sizeof(original), &original);
}

Test(config, unknown_key_names_file_line_and_key)
{
	const char *text = "[server]\nworkers = 2\n\n[limits]\nmax_recipientz = 10\n";
	cr_assert_neq(config_load_string(&cfg, text, "ferry.conf", err, sizeof(err)), 0);
	cr_assert(strstr(err, "ferry.conf:5:") != NULL, "%s", err);
	cr_assert(strstr(err, "max_recipientz") != NULL, "%s", err);
}

Test(config, unknown_section)
{
	cr_assert_neq(config_load_string(&cfg, "[sever]\nworkers = 1\n", "f", err, sizeof(err)), 0);
	cr_assert(strstr(err, "f:2:") != NULL && strstr(err, "sever") != NULL, "%s", err);
}

Test(config, bad_values_are_refused)
{
	static const char *const bad[] = {
		"[server]\nworkers = two\n",
		"[server]\nworkers = 1000\n",
		"[server]\nlisten = 127.0.0.1\n",
		"[server]\nlisten = ::1:25\n",
		"[server]\nlisten = 127.0.0.1:70000\n",
		"[limits]\nidle_timeout = 5 minutes\n",
		"[limits]\nmax_message_size = 10Q\n",
		"[limits]\nmax_command_line = 100\n",
		"[limits]\nmax_recipients = 3000\n", /* more than one envelope holds */
		"[limits]\nmax_connection_rate_per_client = -1\n",
		"[limits]\nmax_connection_rate_per_client = 10/min\n",
		"[limits]\nmax_input_held = 1K\n",
		"[limits]\nmax_output_queue = 1G\n",
		"[limits]\ncommand_deadline = 500ms\n",
		"[limits]\nmin_data_rate = 1K\n", /* octets a second: a plain number */
		"[log]\nlevel = loud\n",
		"[log]\ndestination = file\n",
		"[server]\nhostname = a\nhostname = b\n",
		"no section here\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		config_free(&cfg);
		config_defaults(&cfg);
		err[0] = '\0';
		cr_assert_neq(config_load_string(&cfg, bad[i], "bad.conf", err, sizeof(err)), 0,
			      "accepted: %s", bad[i]);
		cr_assert(strstr(err, "bad.conf:") != NULL, "no location in '%s'", err);
	}
}

Test(config, user_and_group)
{
	cr_assert_eq(config_load(&cfg, NULL, err, sizeof(err)), 0);
	cr_assert_str_eq(cfg.user, "", "by default ferryd stays who it is");
	cr_assert_str_eq(cfg.group, "");
	config_free(&cfg);
	config_defaults(&cfg);
	cr_assert_eq(config_load_string(&cfg, "[server]\nuser = ferry\ngroup = mail\n", "u.conf",
					err, sizeof(err)),
		     0, "%s", err);
	cr_assert_str_eq(cfg.user, "ferry");
	cr_assert_str_eq(cfg.group, "mail");
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	config_print(&cfg, f);
	fclose(f);
	cr_assert(strstr(text, "\nuser = ferry\ngroup = mail\n") != NULL, "%s", text);
	free(text);

	config_free(&cfg);
	config_defaults(&cfg);
	cr_assert_neq(
		config_load_string(&cfg, "[server]\n\ngroup = mail\n", "g.conf", err, sizeof(err)),
		0, "a group without a user was accepted");
	cr_assert(strstr(err, "g.conf:3: key 'group'") != NULL, "%s", err);
	config_free(&cfg);
	config_defaults(&cfg);
	char text_long[200];
	snprintf(text_long, sizeof(text_long), "[server]\nuser = %070d\n", 0);
	cr_assert_neq(config_load_string(&cfg, text_long, "l.conf", err, sizeof(err)), 0);
	cr_assert(strstr(err, "l.conf:2: key 'user'") != NULL, "%s", err);
}

Test(config, overlong_line_is_an_error_not_a_split)
{
	char text[1200] = "[relay]\nrelay_domains = ";
	size_t n = strlen(text);
	while (n < sizeof(text) - 20) {
		memcpy(text + n, "d.example ", 10);
		n += 10;
	}
	strcpy(text + n, "\n");
	cr_assert_neq(config_load_string(&cfg, text, "long.conf", err, sizeof(err)), 0);
	cr_assert(strstr(err, "long.conf:2:") != NULL && strstr(err, "too long") != NULL, "%s",
		  err);
}

Test(config, missing_file)
{
	cr_assert_neq(config_load(&cfg, "/nonexistent/ferry.conf", err, sizeof(err)), 0);
	cr_assert(strstr(err, "/nonexistent/ferry.conf") != NULL, "%s", err);
}

Test(config, print_round_trips)
{
	cr_assert_eq(config_load_string(&cfg, "[relay]\nrelay_domains = x.example\n", "a", err,
					sizeof(err)),
		     0);
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	config_print(&cfg, f);
	fclose(f);
	cr_assert(strstr(text, "relay_domains = x.example\n") != NULL, "%s", text);
	cr_assert(strstr(text, "listen = 127.0.0.1:2525\n") != NULL, "%s", text);

	struct config again;
	config_defaults(&again);
	cr_assert_eq(config_load_string(&again, text, "printed", err, sizeof(err)), 0,
		     "printed config does not load: %s", err);
	cr_assert_eq(again.max_message_size, cfg.max_message_size);
	cr_assert_eq(again.idle_timeout_ms, cfg.idle_timeout_ms);
	cr_assert_eq(again.max_input_held, cfg.max_input_held);
	cr_assert_eq(again.max_output_queue, cfg.max_output_queue);
	cr_assert_eq(again.max_queue_lifetime_ms, cfg.max_queue_lifetime_ms);
	cr_assert_str_eq(again.relayhost, "", "an empty relayhost reads back as none");
	config_free(&again);
	free(text);
}

Test(config, duration_and_size_parsers)
{
	uint32_t ms;
	uint64_t size;
	cr_assert_eq(config_parse_duration_ms("0", &ms), 0);
	cr_assert_eq(ms, 0);
	cr_assert_eq(config_parse_duration_ms("2h", &ms), 0);
	cr_assert_eq(ms, 7200000);
	cr_assert_neq(config_parse_duration_ms("-1s", &ms), 0);
	cr_assert_neq(config_parse_duration_ms("", &ms), 0);
	cr_assert_neq(config_parse_duration_ms("99999999999s", &ms), 0);
	cr_assert_eq(config_parse_duration_ms("5d", &ms), 0);
	cr_assert_eq(ms, 5u * 86400000);
	cr_assert_eq(config_parse_duration_ms("49d", &ms), 0, "49 days fit in 32 bits of ms");
	cr_assert_neq(config_parse_duration_ms("50d", &ms), 0, "50 days do not");
	cr_assert_eq(config_parse_size("512K", &size), 0);
	cr_assert_eq(size, 524288);
	cr_assert_eq(config_parse_size("1GiB", &size), 0);
	cr_assert_eq(size, 1073741824);
	cr_assert_neq(config_parse_size("1.5M", &size), 0);
}

Test(config, counts_take_no_size_suffix)
{
	cr_assert_eq(config_load_string(&cfg, "[spool]\nmax_messages = 50000\n", "c.conf", err,
					sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(cfg.spool_max_messages, 50000);
	config_free(&cfg);
	config_defaults(&cfg);
	cr_assert_neq(config_load_string(&cfg, "[spool]\nmax_messages = 10K\n", "c.conf", err,
					 sizeof(err)),
		      0, "10K messages was taken as a count");
	cr_assert(strstr(err, "c.conf:2:") != NULL && strstr(err, "max_messages") != NULL, "%s",
		  err);
}

Test(config, yes_and_no)
{
	bool v = false;
	cr_assert_eq(config_parse_bool("YES", &v), 0);
	cr_assert(v);
	cr_assert_eq(config_parse_bool("off", &v), 0);
	cr_assert_not(v);
	cr_assert_neq(config_parse_bool("maybe", &v), 0);
	cr_assert_neq(config_parse_bool("", &v), 0);
}

Test(config, delivery_defaults_are_rfc_5321s)
{
	cr_assert_eq(config_load(&cfg, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(cfg.source_address, "");
	cr_assert_str_eq(cfg.relayhost, "");
	cr_assert_eq(cfg.connect_timeout_ms, 30000);
	cr_assert_eq(cfg.greeting_timeout_ms, 300000);
	cr_assert_eq(cfg.command_timeout_ms, 300000);
	cr_assert_eq(cfg.data_init_timeout_ms, 120000);
	cr_assert_eq(cfg.data_block_timeout_ms, 180000);
	cr_assert_eq(cfg.data_done_timeout_ms, 600000);
	cr_assert_eq(cfg.connection_reuse_time_ms, 2000);
	cr_assert_eq(cfg.retry_initial_ms, 300000);
	cr_assert_eq(cfg.retry_factor, 2);
	cr_assert_eq(cfg.retry_max_ms, 3600000);
	cr_assert_eq(cfg.max_queue_lifetime_ms, 5u * 86400000);
	cr_assert_eq(cfg.concurrency, 20);
	cr_assert_eq(cfg.max_outbound_connections, 1000);
	cr_assert_eq(cfg.recipients_per_transaction, 100);
	cr_assert_eq(cfg.max_received_headers, 50);
	cr_assert_eq(cfg.destination_failures, 5);
	cr_assert_eq(cfg.destination_backoff_ms, 300000);
}

Test(config, delivery_keys)
{
	const char *text = "[delivery]\n"
			   "source_address = 2001:db8::25\n"
			   "relayhost = [smarthost.isp.example]:587\n"
			   "connect_timeout = 10s\n"
			   "data_done_timeout = 20m\n"
			   "connection_reuse_time = 0\n"
			   "retry_initial = 1m\n"
			   "retry_factor = 3\n"
			   "retry_max = 4h\n"
			   "max_queue_lifetime = 30d\n"
			   "concurrency = 5\n"
			   "recipients_per_transaction = 2000\n"
			   "destination_failures = 3\n"
			   "destination_backoff = 90s\n";
	cr_assert_eq(config_load_string(&cfg, text, "d.conf", err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(cfg.source_address, "2001:db8::25");
	cr_assert_str_eq(cfg.relayhost, "[smarthost.isp.example]:587");
	cr_assert_eq(cfg.connect_timeout_ms, 10000);
	cr_assert_eq(cfg.data_done_timeout_ms, 1200000);
	cr_assert_eq(cfg.connection_reuse_time_ms, 0);
	cr_assert_eq(cfg.retry_initial_ms, 60000);
	cr_assert_eq(cfg.retry_factor, 3);
	cr_assert_eq(cfg.retry_max_ms, 4u * 3600000);
	cr_assert_eq(cfg.max_queue_lifetime_ms, 30u * 86400000);
	cr_assert_eq(cfg.concurrency, 5);
	cr_assert_eq(cfg.recipients_per_transaction, 2000);
	cr_assert_eq(cfg.destination_failures, 3);
	cr_assert_eq(cfg.destination_backoff_ms, 90000);
	cr_assert_eq(config_key_line(&cfg, "delivery", "relayhost"), 3);
	cr_assert_eq(config_key_line(&cfg, "delivery", "max_received_headers"), 0);
}

Test(config, bad_delivery_values_are_refused)
{
	static const struct {
		const char *text, *says;
	} bad[] = {
		{"[delivery]\nmax_queue_lifetime = 31d\n", "out of range 1m..30d"},
		{"[delivery]\nretry_factor = 0\n", "out of range 1..10"},
		{"[delivery]\nretry_factor = 11\n", "retry_factor"},
		{"[delivery]\nconcurrency = 1001\n", "concurrency"},
		{"[delivery]\nrecipients_per_transaction = 2001\n", "recipients_per_transaction"},
		{"[delivery]\nconnect_timeout = 500ms\n", "out of range 1s..1h"},
		{"[delivery]\nrelayhost = a\nrelayhost = b\n", "set twice"},
		{"[delivery]\nretry_initial = 2h\n",
		 ":2: key 'retry_max': shorter than retry_initial"},
		{"[delivery]\nretry_max = 1m\nretry_initial = 5m\n", ":2: key 'retry_max'"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		config_free(&cfg);
		config_defaults(&cfg);
		err[0] = '\0';
		cr_assert_neq(config_load_string(&cfg, bad[i].text, "bad.conf", err, sizeof(err)),
			      0, "accepted: %s", bad[i].text);
		cr_assert(strstr(err, "bad.conf:") != NULL && strstr(err, bad[i].says) != NULL,
			  "'%s' does not say '%s'", err, bad[i].says);
	}
}

/* ---- [domain NAME] sections ---------------------------------------------------------- */

static char *config_printed(const struct config *c)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	config_print(c, f);
	fclose(f);
	return text;
}

Test(config, builtin_domain_is_demo_test_held)
{
	cr_assert_eq(config_load(&cfg, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.ndomains, 1);
	const struct config_domain *d = config_domain_find(&cfg, "Demo.Test", 9);
	cr_assert_not_null(d);
	cr_assert_str_eq(d->name, "demo.test");
	cr_assert_not(d->subdomains);
	cr_assert_eq(d->line, 0);
	cr_assert_str_eq(d->transport, "[127.0.0.1]:2526");
	cr_assert(d->hold);
	cr_assert_null(config_domain_find(&cfg, "x.demo.test", 11));
	cr_assert_null(config_domain_find(&cfg, "example.com", 11));
}

Test(config, domain_sections)
{
	const char *text = "[server]\n"
			   "workers = 1\n"
			   "[domain Customer.Example]\n"
			   "transport = [mx.customer.example]:25\n"
			   "hold = yes\n"
			   "concurrency = 4\n"
			   "max_messages = 10000\n"
			   "max_size = 2G\n"
			   "queue_lifetime = 10d\n"
			   "[domain .customer.example]\n"
			   "transport = relay.customer.example:2525\n"
			   "[domain  .b.customer.example ]\n"
			   "\n"
			   "[limits]\n"
			   "max_errors = 5\n";
	cr_assert_eq(config_load_string(&cfg, text, "d.conf", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.ndomains, 3, "the file's sections replace demo.test");
	cr_assert_null(config_domain_find(&cfg, "demo.test", 9));
	cr_assert_eq(cfg.max_errors, 5, "keys after a [domain] section go to their own section");

	const struct config_domain *d = &cfg.domains[0];
	cr_assert_str_eq(d->name, "customer.example");
	cr_assert_eq(d->line, 3);
	cr_assert_str_eq(d->transport, "[mx.customer.example]:25");
	cr_assert(d->hold);
	cr_assert_eq(d->concurrency, 4);
	cr_assert_eq(d->max_messages, 10000);
	cr_assert_eq(d->max_size, 2ull << 30);
	cr_assert_eq(d->queue_lifetime_ms, 10u * 86400000);

	d = &cfg.domains[1];
	cr_assert_str_eq(d->name, "customer.example");
	cr_assert(d->subdomains);
	cr_assert_not(d->hold, "hold defaults to no");
	cr_assert_eq(d->concurrency, 0, "0: the [delivery] default");
	cr_assert_eq(d->queue_lifetime_ms, 0);

	d = &cfg.domains[2];
	cr_assert_str_eq(d->name, "b.customer.example");
	cr_assert(d->subdomains);
	cr_assert_eq(d->line, 12);
	cr_assert_str_eq(d->transport, "", "an empty section: relayhost, else MX");
}

Test(config, domain_lookup_prefers_the_name_then_the_closest_parent)
{
	const char *text = "[domain .customer.example]\n"
			   "transport = [any.customer.example]\n"
			   "[domain .b.customer.example]\n"
			   "transport = [b.customer.example]\n"
			   "[domain customer.example]\n"
			   "transport = [self.customer.example]\n"
			   "[domain x.b.customer.example]\n"
			   "hold = yes\n";
	cr_assert_eq(config_load_string(&cfg, text, "d.conf", err, sizeof(err)), 0, "%s", err);
	static const struct {
		const char *domain;
		int index; /* -1: none */
	} cases[] = {
		{"customer.example", 2},
		{"CUSTOMER.EXAMPLE", 2},
		{"a.customer.example", 0},
		{"a.b.customer.example", 1},
		{"b.customer.example", 0},
		{"x.b.customer.example", 3},
		{"y.x.b.customer.example", 1},
		{"xcustomer.example", -1},
		{"customer.example.org", -1},
		{"example", -1},
		{"", -1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct config_domain *d =
			config_domain_find(&cfg, cases[i].domain, strlen(cases[i].domain));
		if (cases[i].index < 0)
			cr_expect_null(d, "%s matched %s", cases[i].domain, d ? d->name : "");
		else
			cr_expect_eq(d, &cfg.domains[cases[i].index], "%s matched entry %ld",
				     cases[i].domain, d ? (long)(d - cfg.domains) : -1L);
	}
	/* The length bounds the name: no terminating NUL is needed. */
	cr_assert_eq(config_domain_find(&cfg, "customer.example>", 16), &cfg.domains[2]);
}

Test(config, bad_domain_sections_are_refused)
{
	static const struct {
		const char *text, *says;
	} bad[] = {
		{"[domain a.example]\nhold = yes\n[domain A.example]\n",
		 "bad.conf:3: [domain a.example] given twice (first on line 1)"},
		{"[domain .a.example]\n[server]\nworkers = 1\n[domain .a.example]\n",
		 "bad.conf:4: [domain .a.example] given twice"},
		{"[domain a.example]\nholds = yes\n", "bad.conf:2: key 'holds': unknown key"},
		{"[domain a.example]\nhold = maybe\n", "bad.conf:2: key 'hold': not yes or no"},
		{"[domain a.example]\nhold = yes\nhold = no\n",
		 "bad.conf:3: key 'hold': set twice"},
		{"[domain a.example]\nconcurrency = 1001\n", "out of range 0..1000"},
		{"[domain a.example]\nmax_messages = 10K\n", "not a whole number"},
		{"[domain a.example]\nmax_size = lots\n", "not a size"},
		{"[domain a.example]\nqueue_lifetime = 31d\n", "out of range 0..30d"},
		{"[domain]\n", "bad.conf:1: [domain] lacks its name"},
		{"[domain a..example]\n", "not a domain name"},
		{"[domain -a.example]\n", "not a domain name"},
		{"[domain a-.example]\n", "not a domain name"},
		{"[domain a.example.]\n", "not a domain name"},
		{"[domain a_b.example]\n", "not a domain name"},
		{"[domain ..a.example]\n", "not a domain name"},
		{"[domain a.example b.example]\n", "not a domain name"},
		{"[domain "
		 "a234567890123456789012345678901234567890123456789012345678901234.example]\n",
		 "not a domain name"},
		{"[domain a.example]\ntransport = x\n  [domain b.example]\n",
		 "bad.conf:3: '[domain b.example]' is taken as part of the value above it"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		config_free(&cfg);
		config_defaults(&cfg);
		err[0] = '\0';
		cr_assert_neq(config_load_string(&cfg, bad[i].text, "bad.conf", err, sizeof(err)),
			      0, "accepted: %s", bad[i].text);
		cr_expect(strstr(err, bad[i].says) != NULL, "'%s' does not say '%s'", err,
			  bad[i].says);
	}
}

/* inih cuts section names at 49 characters: the whole name must count. */
Test(config, long_domain_names_are_kept_whole)
{
	const char *text =
		"[domain .a-rather-long-label.another-rather-long-label.customer.example]\n"
		"hold = yes\n"
		"[domain .a-rather-long-label.another-rather-long-label.customer.example.org]\n"
		"hold = no\n";
	cr_assert_eq(config_load_string(&cfg, text, "l.conf", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.ndomains, 2);
	cr_assert_str_eq(cfg.domains[1].name,
			 "a-rather-long-label.another-rather-long-label.customer.example.org");
	cr_assert(cfg.domains[0].hold);
	cr_assert_not(cfg.domains[1].hold);
}

Test(config, domain_sections_print_and_read_back)
{
	const char *text = "[domain .customer.example]\n"
			   "transport = [mx1.customer.example]:25, [mx2.customer.example]:25\n"
			   "hold = yes\n"
			   "max_size = 1M\n"
			   "queue_lifetime = 36h\n"
			   "[domain empty.example]\n";
	cr_assert_eq(config_load_string(&cfg, text, "p.conf", err, sizeof(err)), 0, "%s", err);
	char *printed = config_printed(&cfg);
	cr_assert(strstr(printed,
			 "\n[domain .customer.example]\n"
			 "transport = [mx1.customer.example]:25, [mx2.customer.example]:25\n"
			 "hold = yes\n") != NULL,
		  "%s", printed);
	cr_assert(strstr(printed, "queue_lifetime = 36h\n") != NULL, "%s", printed);
	cr_assert(strstr(printed, "\n[domain empty.example]\ntransport = \n") != NULL, "%s",
		  printed);

	struct config again;
	config_defaults(&again);
	cr_assert_eq(config_load_string(&again, printed, "printed", err, sizeof(err)), 0,
		     "printed config does not load: %s\n%s", err, printed);
	cr_assert_eq(again.ndomains, cfg.ndomains);
	for (size_t i = 0; i < cfg.ndomains; i++) {
		const struct config_domain *a = &cfg.domains[i], *b = &again.domains[i];
		cr_assert_str_eq(a->name, b->name);
		cr_assert_eq(a->subdomains, b->subdomains);
		cr_assert_str_eq(a->transport, b->transport);
		cr_assert_eq(a->hold, b->hold);
		cr_assert_eq(a->concurrency, b->concurrency);
		cr_assert_eq(a->max_messages, b->max_messages);
		cr_assert_eq(a->max_size, b->max_size);
		cr_assert_eq(a->queue_lifetime_ms, b->queue_lifetime_ms);
	}
	config_free(&again);
	free(printed);

	/* The defaults too: demo.test survives --check-config's output. */
	config_free(&cfg);
	config_defaults(&cfg);
	cr_assert_eq(config_load(&cfg, NULL, err, sizeof(err)), 0, "%s", err);
	printed = config_printed(&cfg);
	config_defaults(&again);
	cr_assert_eq(config_load_string(&again, printed, "printed", err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(again.ndomains, 1);
	cr_assert_str_eq(again.domains[0].transport, "[127.0.0.1]:2526");
	cr_assert(again.domains[0].hold);
	config_free(&again);
	free(printed);
}

/* ---- ETRN ------------------------------------------------------------------------------ */

Test(config, etrn_keys)
{
	cr_assert_eq(config_load(&cfg, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.etrn_max_per_session, 100);
	cr_assert_eq(cfg.etrn_max_rate_per_client, 60);
	cr_assert_eq(cfg.etrn_flood_delay_ms, 1000);
	cr_assert_eq(cfg.etrn_flush_window_ms, 60000);
	const struct config_domain *demo = config_domain_find(&cfg, "demo.test", 9);
	cr_assert_str_eq(demo->etrn_networks, "127.0.0.0/8, ::1/128", "loopback may ETRN it");
	cr_assert(demo->etrn_counts);
	config_free(&cfg);

	config_defaults(&cfg);
	const char *text = "[etrn]\n"
			   "max_per_session = 5\n"
			   "max_rate_per_client = 0\n"
			   "flood_delay = 250ms\n"
			   "flush_window = 5m\n"
			   "[domain customer.example]\n"
			   "etrn_networks = 192.0.2.0/24 2001:db8::/32\n"
			   "etrn_counts = no\n"
			   "etrn_nodes = mail.customer.example\n"
			   "etrn_queues = cust42, all\n"
			   "[domain other.example]\n";
	cr_assert_eq(config_load_string(&cfg, text, "e.conf", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.etrn_max_per_session, 5);
	cr_assert_eq(cfg.etrn_max_rate_per_client, 0);
	cr_assert_eq(cfg.etrn_flood_delay_ms, 250);
	cr_assert_eq(cfg.etrn_flush_window_ms, 300000);
	const struct config_domain *d = &cfg.domains[0];
	cr_assert_str_eq(d->etrn_networks, "192.0.2.0/24 2001:db8::/32");
	cr_assert_not(d->etrn_counts);
	cr_assert_str_eq(d->etrn_nodes, "mail.customer.example");
	cr_assert_str_eq(d->etrn_queues, "cust42, all");
	d = &cfg.domains[1];
	cr_assert_str_eq(d->etrn_networks, "", "no client may ETRN a domain by default");
	cr_assert(d->etrn_counts, "counts are shown by default");
}

Test(config, bad_etrn_values_are_refused)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{"[etrn]\nmax_per_session = 0\n", "key 'max_per_session': out of range"},
		{"[etrn]\nflood_delay = 2m\n", "key 'flood_delay': out of range"},
		{"[etrn]\nflush_window = 2h\n", "key 'flush_window': out of range"},
		{"[etrn]\nbogus = 1\n", "unknown key in section [etrn]"},
		{"[domain a.example]\netrn_counts = maybe\n", "not yes or no"},
		{"[domain a.example]\netrn_nodes = a.example\netrn_nodes = b.example\n",
		 "set twice"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		config_free(&cfg);
		config_defaults(&cfg);
		cr_expect_neq(config_load_string(&cfg, cases[i].text, "e.conf", err, sizeof(err)),
			      0, "%s", cases[i].text);
		cr_expect_not_null(strstr(err, cases[i].want), "%s: %s", cases[i].text, err);
	}
}

/* The hash index answers as the plain scan does (the scan is what a
 * config without an index uses). */
Test(config, domain_index_agrees_with_the_scan)
{
	const char *text = "[domain customer.example]\n"
			   "[domain .customer.example]\n"
			   "[domain .b.customer.example]\n"
			   "[domain x.b.customer.example]\n"
			   "[domain Example.ORG]\n"
			   "[domain .org]\n"
			   "[domain a.b.c.d.e.f.g]\n"
			   "[domain .c.d.e.f.g]\n";
	cr_assert_eq(config_load_string(&cfg, text, "i.conf", err, sizeof(err)), 0, "%s", err);
	cr_assert_not_null(cfg.domain_index);
	static const char *const names[] = {"customer.example",
					    "CUSTOMER.example",
					    "a.customer.example",
					    "b.customer.example",
					    "y.b.customer.example",
					    "x.b.customer.example",
					    "xcustomer.example",
					    "example",
					    "example.org",
					    "www.example.org",
					    "org",
					    "other.org",
					    "a.b.c.d.e.f.g",
					    "z.a.b.c.d.e.f.g",
					    "d.e.f.g",
					    "x.c.d.e.f.g",
					    "",
					    ".",
					    "customer.example.",
					    ".customer.example",
					    "a..customer.example"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct config_domain *indexed =
			config_domain_find(&cfg, names[i], strlen(names[i]));
		struct config_domain_index *ix = cfg.domain_index;
		cfg.domain_index = NULL;
		const struct config_domain *scanned =
			config_domain_find(&cfg, names[i], strlen(names[i]));
		cfg.domain_index = ix;
		cr_expect_eq(indexed, scanned, "'%s': index %s, scan %s", names[i],
			     indexed ? indexed->name : "none", scanned ? scanned->name : "none");
	}
}

/* Thousands of sections (an ISP's customers) load in one pass: each new
 * one is looked up in the index as it grows, and one given twice is still
 * found and named with both lines. */
Test(config, thousands_of_domain_sections_and_one_given_twice)
{
	size_t size = 5000 * 48 + 64;
	char *text = malloc(size);
	cr_assert_not_null(text);
	size_t len = 0;
	for (int i = 0; i < 5000; i++)
		len += (size_t)snprintf(text + len, size - len,
					"[domain c%04d.example]\nhold = yes\n", i);
	struct config big;
	char why[512];
	config_defaults(&big);
	cr_assert_eq(config_load_string(&big, text, "big.conf", why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(big.ndomains, 5000);
	cr_assert_eq(config_domain_find(&big, "x.c4321.example", 15), NULL);
	cr_assert_eq(config_domain_find(&big, "c4321.example", 13), &big.domains[4321]);
	config_free(&big);

	snprintf(text + len, size - len, "[domain C1234.example]\n");
	config_defaults(&big);
	cr_assert_eq(config_load_string(&big, text, "big.conf", why, sizeof(why)), -EINVAL);
	cr_assert_not_null(strstr(why, "big.conf:10001: [domain c1234.example] given twice (first "
				       "on line 2469)"),
			   "%s", why);
	config_free(&big);
	free(text);
}

/* What ferryctl reads of a file: [spool] directory, whatever else is wrong
 * in it; the default without one; an error only for a file it cannot read. */
Test(config, the_spool_directory_is_found_in_a_file_that_does_not_load)
{
	char path[] = "/tmp/ferry-spool-dir-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	static const char text[] = "[limits]\nmax_recipients = lots\n[nonsense]\nx = 1\n"
				   "[spool]\ndirectory = /srv/ferry/spool\n";
	cr_assert_eq(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(fd);
	char dir[256];
	cr_assert_eq(config_spool_dir(path, dir, sizeof(dir)), 0);
	cr_assert_str_eq(dir, "/srv/ferry/spool");
	unlink(path);
	cr_assert_eq(config_spool_dir(NULL, dir, sizeof(dir)), 0);
	cr_assert_str_eq(dir, "./var/spool");
	cr_assert_eq(config_spool_dir(path, dir, sizeof(dir)), -ENOENT);
}
