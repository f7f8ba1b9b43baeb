/*
 * metrics_http — the Prometheus endpoint: `GET /metrics` on the [metrics]
 * address, served by libmicrohttpd on a control thread of its own.
 *
 * A scrape asks every worker for its snapshot (worker_metrics(), by
 * cross-worker message: the workers' counters are plain integers that
 * only their own thread writes), waits for all of them at most
 * METRICS_HTTP_WORKERS_MS, merges them and answers in the text format
 * (version 0.0.4). A worker that does not answer in time fails the scrape
 * with 503 rather than showing a partial sum (a counter that seemed to go
 * down would look like a restart to Prometheus); its late answer is
 * dropped (the request is reference counted, as the admin socket's).
 * Any other path is 404, any other method 405.
 *
 * Scrapes are served one at a time: each costs a loop turn of every
 * worker, and Prometheus scrapes every few seconds at most.
 */
#ifndef FERRY_NET_METRICS_HTTP_H
#define FERRY_NET_METRICS_HTTP_H

#include <stddef.h>

struct buf;
struct worker;
struct worker_group;
struct metrics_http;

#define METRICS_HTTP_WORKERS_MS 5000

/* What a scrape answers, for the endpoint and ferryctl stats alike:
 * ferry_build_info, ferry_workers and the n workers' counters merged
 * (waiting at most METRICS_HTTP_WORKERS_MS), rendered into out. 0,
 * -ETIMEDOUT (a worker did not answer in time), -ENOMEM. Any thread but
 * the workers'. */
int metrics_http_collect(struct worker *const *workers, unsigned n, struct buf *out);

/* Check an address as [metrics] address takes it ("" turns the endpoint
 * off). 0 or -EINVAL with err saying why. */
int metrics_http_check(const char *address, char *err, size_t err_size);

/* Listen on `address` ("host:port", "[v6]:port") and serve the workers
 * of g. address "": *out is NULL, nothing runs. 0, or -errno with err. */
int metrics_http_start(struct metrics_http **out, const char *address, struct worker_group *g,
		       char *err, size_t err_size);

/* Stop serving (a scrape in progress ends first) and free. NULL: no-op. */
void metrics_http_stop(struct metrics_http *h);

#endif
