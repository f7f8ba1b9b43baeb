/*
 * metrics_http — GET /metrics on libmicrohttpd's thread, the values asked
 * of every worker (see metrics_http.h).
 */
#include "net/metrics_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/worker.h"
#include "core/xmsg.h"

struct metrics_http {
	struct MHD_Daemon *daemon;
	struct worker_group *group;
	char address[64];
};

struct metrics_scrape;

/* One worker's snapshot, filled on its thread. */
struct metrics_part {
	struct xmsg link;
	struct metrics_scrape *scrape;
	struct worker *worker;
	struct metrics snapshot;
};

/* Shared by the endpoint's thread and the workers; the last reference
 * frees it (a worker late past the wait may still hold one). */
struct metrics_scrape {
	pthread_mutex_t lock;
	pthread_cond_t done;
	unsigned refs, pending;
	bool abandoned;
	unsigned nparts;
	struct metrics_part parts[];
};

static void metrics_scrape_free(struct metrics_scrape *sc)
{
	for (unsigned i = 0; i < sc->nparts; i++)
		metrics_free(&sc->parts[i].snapshot);
	pthread_cond_destroy(&sc->done);
	pthread_mutex_destroy(&sc->lock);
	free(sc);
}

static void metrics_scrape_release(struct metrics_scrape *sc, bool answered)
{
	pthread_mutex_lock(&sc->lock);
	if (answered && --sc->pending == 0)
		pthread_cond_signal(&sc->done);
	bool last = --sc->refs == 0;
	pthread_mutex_unlock(&sc->lock);
	if (last)
		metrics_scrape_free(sc);
}

/* On the worker. */
static void metrics_part_run(struct xmsg *msg)
{
	struct metrics_part *part = container_of(msg, struct metrics_part, link);
	struct metrics_scrape *sc = part->scrape;
	pthread_mutex_lock(&sc->lock);
	bool wanted = !sc->abandoned;
	pthread_mutex_unlock(&sc->lock);
	if (wanted)
		worker_metrics(part->worker, &part->snapshot);
	metrics_scrape_release(sc, true);
}

static const struct metric_family metrics_build_info = {
	"ferry_build_info", "ferryd's version; always 1.", METRIC_GAUGE, METRIC_MAX, NULL, 0};
static const struct metric_family metrics_workers = {
	"ferry_workers",
	"Worker threads (each with its own io_uring) that answered this scrape.",
	METRIC_GAUGE,
	METRIC_SUM,
	NULL,
	0};

/* Every worker's snapshot, merged and rendered into out; false when a
 * worker did not answer in time (or no memory). */
static bool metrics_gather(struct metrics_http *h, struct buf *out)
{
	unsigned n = h->group->count;
	struct metrics_scrape *sc = calloc(1, sizeof(*sc) + n * sizeof(sc->parts[0]));
	if (sc == NULL)
		return false;
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&sc->done, &attr);
	pthread_condattr_destroy(&attr);
	pthread_mutex_init(&sc->lock, NULL);
	sc->nparts = n;
	sc->refs = n + 1;
	sc->pending = n;
	for (unsigned i = 0; i < n; i++) {
		struct metrics_part *part = &sc->parts[i];
		part->scrape = sc;
		part->worker = &h->group->workers[i];
		metrics_init(&part->snapshot);
		worker_send(part->worker, &part->link, metrics_part_run);
	}
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += METRICS_HTTP_WORKERS_MS / 1000;
	pthread_mutex_lock(&sc->lock);
	while (sc->pending > 0)
		if (pthread_cond_timedwait(&sc->done, &sc->lock, &deadline) == ETIMEDOUT)
			break;
	bool answered = sc->pending == 0;
	if (!answered)
		sc->abandoned = true;
	pthread_mutex_unlock(&sc->lock);
	bool ok = answered;
	if (answered) {
		struct metrics all;
		metrics_init(&all);
		char labels[64];
		snprintf(labels, sizeof(labels), "version=\"%s\"", FERRY_VERSION);
		metrics_add(&all, &metrics_build_info, labels, 1);
		metrics_add(&all, &metrics_workers, NULL, n);
		for (unsigned i = 0; i < n; i++)
			metrics_merge(&all, &sc->parts[i].snapshot);
		ok = !all.failed && metrics_render(&all, out) == 0;
		metrics_free(&all);
	} else {
		log_event(LOG_LEVEL_ERROR,
			  "event=metrics_timeout waited_ms=%d note=\"a worker did not answer a "
			  "scrape in time\"",
			  METRICS_HTTP_WORKERS_MS);
	}
	metrics_scrape_release(sc, false);
	return ok;
}

static enum MHD_Result metrics_http_reply(struct MHD_Connection *conn, unsigned status,
					  const char *type, char *body, size_t len,
					  enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	enum MHD_Result result = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return result;
}

static enum MHD_Result metrics_http_handle(void *cls, struct MHD_Connection *conn, const char *url,
					   const char *method, const char *version,
					   const char *upload_data, size_t *upload_data_size,
					   void **state)
{
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)state;
	static const char text[] = "text/plain; charset=utf-8";
	if (strcmp(url, "/metrics") != 0) {
		static char body[] = "not found: ferryd serves /metrics only\n";
		return metrics_http_reply(conn, MHD_HTTP_NOT_FOUND, text, body, sizeof(body) - 1,
					  MHD_RESPMEM_PERSISTENT);
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		static char body[] = "method not allowed: GET /metrics\n";
		return metrics_http_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, body,
					  sizeof(body) - 1, MHD_RESPMEM_PERSISTENT);
	}
	struct buf out = {0};
	if (!metrics_gather(cls, &out)) {
		buf_release(&out);
		static char body[] = "ferryd's workers did not answer in time\n";
		return metrics_http_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text, body,
					  sizeof(body) - 1, MHD_RESPMEM_PERSISTENT);
	}
	enum MHD_Result r =
		metrics_http_reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
				   (char *)buf_head(&out), buf_len(&out), MHD_RESPMEM_MUST_COPY);
	buf_release(&out);
	return r;
}

int metrics_http_check(const char *address, char *err, size_t err_size)
{
	struct config_listen parsed;
	if (address[0] == '\0' || config_parse_listen(address, &parsed) == 0)
		return 0;
	snprintf(err, err_size,
		 "not an address and port to serve /metrics on (e.g. 127.0.0.1:9325, [::1]:9325; "
		 "empty turns it off): '%s'",
		 address);
	return -EINVAL;
}

int metrics_http_start(struct metrics_http **out, const char *address, struct worker_group *g,
		       char *err, size_t err_size)
{
	*out = NULL;
	if (address[0] == '\0')
		return 0;
	struct config_listen parsed;
	if (metrics_http_check(address, err, err_size) != 0 ||
	    config_parse_listen(address, &parsed) != 0)
		return -EINVAL;
	struct metrics_http *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	h->group = g;
	snprintf(h->address, sizeof(h->address), "%s", address);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
	if (parsed.addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	errno = 0;
	h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, metrics_http_handle, h,
				     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&parsed.addr,
				     MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
	if (h->daemon == NULL) {
		int e = errno != 0 ? errno : EADDRINUSE;
		snprintf(err, err_size, "cannot serve /metrics on %s: %s", address, strerror(e));
		free(h);
		return -e;
	}
	*out = h;
	return 0;
}

void metrics_http_stop(struct metrics_http *h)
{
	if (h == NULL)
		return;
	MHD_stop_daemon(h->daemon);
	free(h);
}
