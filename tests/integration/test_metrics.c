/*
 * End-to-end tests of /metrics: a real ferryd under load, scraped by a
 * real Prometheus (Debian's, on loopback), and checked by promtool and
 * through Prometheus's HTTP API (tests/integration/prom_check.py). What an
 * operator relies on is checked: the target is up, counters only go up,
 * and PromQL says what the load generator did.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define START_MS 20000 /* ferryd up and accepting */
#define IO_MS    15000 /* one SMTP reply */
#define STOP_MS  30000 /* SIGTERM to exit */

#include "tests/integration/checks.h"

static void suite_fini(void)
{
	harness_cleanup_all();
}

TestSuite(metrics, .fini = suite_fini, .timeout = 240);

static const char *prom_check(char *out, size_t size)
{
	const char *src = getenv("FERRY_SOURCE_DIR");
	snprintf(out, size, "%s/tests/integration/prom_check.py", src ? src : ".");
	return out;
}

/* Run prom_check.py with up to 5 arguments; its stdout to out. */
static int prom(char *out, size_t size, const char *a, const char *b, const char *c, const char *d,
		const char *e)
{
	char script[PATH_MAX];
	char *argv[] = {"python3", (char *)prom_check(script, sizeof(script)),
			(char *)a, (char *)b,
			(char *)c, (char *)d,
			(char *)e, NULL};
	static char err[4096];
	int status = harness_run(argv, out, size, err, sizeof(err), 60000);
	if (status != 0)
		fprintf(stderr, "prom_check %s: %s%s\n", a, out, err);
	return status;
}

static int count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	int n = 0, c;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/*
 * ferryd takes 1,500 messages at 100 a second while Prometheus scrapes it
 * every second: the target is up; every counter of every scrape is at
 * least what it was in the one before (ours, every 0.3 s, and
 * Prometheus's range query); promtool accepts a scrape made under load;
 * PromQL's rate of accepted messages, in the middle of the load, is the
 * generator's 100 a second; and the counter ends at exactly the number
 * of messages the generator got a 250 for.
 */
Test(metrics, real_prometheus_scrapes_a_loaded_ferryd)
{
	int metrics_port = harness_free_port(), prom_port = harness_free_port();
	char extra[256];
	snprintf(extra, sizeof(extra),
		 "[metrics]\naddress = 127.0.0.1:%d\n[domain load.example]\nhold = yes\n",
		 metrics_port);
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, extra), 0);
	cr_assert_eq(harness_start(&fi, START_MS), 0, "ferryd did not start");

	char url[128], prom_url[128], path[PATH_MAX + 32], data[PATH_MAX + 32];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", metrics_port);
	snprintf(prom_url, sizeof(prom_url), "http://127.0.0.1:%d", prom_port);
	snprintf(path, sizeof(path), "%s/prometheus.yml", fi.dir);
	snprintf(data, sizeof(data), "%s/prometheus-data", fi.dir);
	char yml[512];
	snprintf(yml, sizeof(yml),
		 "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
		 "scrape_configs:\n  - job_name: ferry\n    static_configs:\n"
		 "      - targets: ['127.0.0.1:%d']\n",
		 metrics_port);
	cr_assert_eq(harness_write_file(path, yml), 0);
	char listen[64], config_arg[PATH_MAX + 64], data_arg[PATH_MAX + 64], log[PATH_MAX + 32];
	snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", prom_port);
	snprintf(config_arg, sizeof(config_arg), "--config.file=%s", path);
	snprintf(data_arg, sizeof(data_arg), "--storage.tsdb.path=%s", data);
	snprintf(log, sizeof(log), "%s/prometheus.log", fi.dir);
	char *prometheus[] = {"prometheus", config_arg, data_arg, listen, "--log.level=warn", NULL};
	pid_t prom_pid = harness_spawn(prometheus, log);
	cr_assert_gt(prom_pid, 0, "cannot start prometheus (tools/install-deps installs it)");
	static char out[65536];
	cr_assert_eq(prom(out, sizeof(out), "ready", prom_url, "60", NULL, NULL), 0,
		     "Prometheus did not come up with ferryd as an up target: %s", out);

	/* The load, with our own scrapes beside it. */
	char scrape[PATH_MAX + 32], watch_out[PATH_MAX + 32], script[PATH_MAX];
	snprintf(scrape, sizeof(scrape), "%s/scrape.txt", fi.dir);
	snprintf(watch_out, sizeof(watch_out), "%s/watch.out", fi.dir);
	char *watch[] = {
		"python3", (char *)prom_check(script, sizeof(script)), "watch", url, scrape, "14",
		NULL};
	pid_t watcher = harness_spawn(watch, watch_out);
	cr_assert_gt(watcher, 0);
	char bench[PATH_MAX], target[64], ids[PATH_MAX + 16], berr[4096];
	harness_build_path("ferry-bench", bench, sizeof(bench));
	snprintf(target, sizeof(target), "127.0.0.1:%d", fi.port);
	snprintf(ids, sizeof(ids), "%s/ids", fi.dir);
	time_t load_start = time(NULL);
	char *load[] = {
		bench,   "-c", "4",         "-n", "1500", "--rate", "100", "--to", "u@load.example",
		"--ids", ids,  "--timeout", "60", target, NULL};
	int status = harness_run(load, out, sizeof(out), berr, sizeof(berr), 90000);
	time_t load_end = time(NULL);
	cr_assert_eq(status, 0, "ferry-bench: %s%s", out, berr);
	int sent = count_lines(ids);
	cr_assert_eq(sent, 1500, "ferry-bench got %d 250s", sent);

	cr_assert_eq(harness_wait_pid(watcher, 30000), 0, "our scrapes: see above");
	FILE *f = fopen(watch_out, "r");
	cr_assert_not_null(f);
	char line[256] = "";
	cr_assert_not_null(fgets(line, sizeof(line), f));
	fclose(f);
	cr_assert_eq(strncmp(line, "ok ", 3), 0, "%s", line);

	char check[PATH_MAX + 64];
	snprintf(check, sizeof(check), "promtool check metrics < %s", scrape);
	char *promtool[] = {"sh", "-c", check, NULL};
	static char perr[8192];
	status = harness_run(promtool, out, sizeof(out), perr, sizeof(perr), 30000);
	cr_assert_eq(status, 0, "promtool check metrics:\n%s%s", out, perr);

	/* The scrape serves exactly the families operations.md documents. */
	char doc[PATH_MAX];
	const char *src = getenv("FERRY_SOURCE_DIR");
	snprintf(doc, sizeof(doc), "%s/docs/operations.md", src ? src : ".");
	cr_assert_eq(prom(out, sizeof(out), "documented", doc, scrape, NULL, NULL), 0, "%s", out);

	/* Prometheus: let it take two more scrapes, then ask. */
	harness_sleep_ms(2500);
	char value[64];
	cr_assert_eq(prom(out, sizeof(out), "query", prom_url, "ferry_messages_received_total",
			  NULL, NULL),
		     0);
	snprintf(value, sizeof(value), "%d\n", sent);
	cr_assert_str_eq(out, value, "Prometheus's last value of ferry_messages_received_total");

	char start[32], end[32], middle[32];
	snprintf(start, sizeof(start), "%lld", (long long)load_start);
	snprintf(end, sizeof(end), "%lld", (long long)load_end + 2);
	snprintf(middle, sizeof(middle), "%lld", (long long)(load_start + load_end) / 2);
	cr_assert_eq(prom(out, sizeof(out), "range", prom_url, "{__name__=~\"ferry_.*_total\"}",
			  start, end),
		     0, "%s", out);
	cr_assert_eq(prom(out, sizeof(out), "query", prom_url,
			  "rate(ferry_messages_received_total[6s])", middle, NULL),
		     0);
	double rate = strtod(out, NULL);
	cr_assert(rate > 70 && rate < 130,
		  "PromQL rate of received messages mid-load: %.1f/s; the generator sent 100/s",
		  rate);
	cr_assert_eq(prom(out, sizeof(out), "query", prom_url,
			  "ferry_queue_messages{state=\"held\"}", NULL, NULL),
		     0);
	cr_assert_str_eq(out, value, "the held messages, as the queue gauge says");
	stop_ferryd_cleanly(&fi);
}

/* Not /metrics: 404; the endpoint off ("") listens nowhere. */
Test(metrics, other_paths_are_404)
{
	int metrics_port = harness_free_port();
	char extra[128];
	snprintf(extra, sizeof(extra), "[metrics]\naddress = 127.0.0.1:%d\n", metrics_port);
	struct ferry_instance fi;
	cr_assert_eq(harness_setup(&fi, extra), 0);
	cr_assert_eq(harness_start(&fi, START_MS), 0);
	char code[PATH_MAX];
	snprintf(code, sizeof(code),
		 "import urllib.request, urllib.error\n"
		 "try:\n"
		 "    urllib.request.urlopen('http://127.0.0.1:%d/other', timeout=5)\n"
		 "except urllib.error.HTTPError as e:\n"
		 "    print(e.code)\n"
		 "r = urllib.request.urlopen('http://127.0.0.1:%d/metrics', timeout=5)\n"
		 "print(r.status, r.headers['Content-Type'])\n",
		 metrics_port, metrics_port);
	char *py[] = {"python3", "-c", code, NULL};
	static char out[4096], err[4096];
	cr_assert_eq(harness_run(py, out, sizeof(out), err, sizeof(err), 30000), 0, "%s", err);
	cr_assert_str_eq(out, "404\n200 text/plain; version=0.0.4; charset=utf-8\n");
	stop_ferryd_cleanly(&fi);
}
