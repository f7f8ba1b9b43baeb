/*
 * metrics_http — GET /metrics on libmicrohttpd's thread, the values asked
 * of every worker (see metrics_http.h).
 */
#include "net/metrics_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/worker.h"

struct metrics_http {
	struct MHD_Daemon *daemon;
	struct worker_group *group;
	char address[64];
};

static const struct metric_family metrics_build_info = {
	"ferry_build_info", "ferryd's version; always 1.", METRIC_GAUGE, METRIC_MAX, NULL, 0};
static const struct metric_family metrics_workers = {
	"ferry_workers",
	"Worker threads (each with its own io_uring) that answered this scrape.",
	METRIC_GAUGE,
	METRIC_SUM,
	NULL,
	0};

int metrics_http_collect(struct worker *const *workers, unsigned n, struct buf *out)
{
	struct metrics all;
	metrics_init(&all);
	char labels[64];
	snprintf(labels, sizeof(labels), "version=\"%s\"", FERRY_VERSION);
	metrics_add(&all, &metrics_build_info, labels, 1);
	metrics_add(&all, &metrics_workers, NULL, n);
	int r = worker_gather_metrics(workers, n, &all, METRICS_HTTP_WORKERS_MS);
	if (r == 0 && (all.failed || metrics_render(&all, out) != 0))
		r = -ENOMEM;
	metrics_free(&all);
	return r;
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
	struct metrics_http *h = cls;
	unsigned n = h->group->count;
	struct worker *workers[n];
	for (unsigned i = 0; i < n; i++)
		workers[i] = &h->group->workers[i];
	struct buf out = {0};
	int collected = metrics_http_collect(workers, n, &out);
	if (collected != 0) {
		buf_release(&out);
		static char late[] = "ferryd's workers did not answer in time\n";
		static char oom[] = "ferryd is out of memory\n";
		char *body = collected == -ETIMEDOUT ? late : oom;
		return metrics_http_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text, body,
					  strlen(body), MHD_RESPMEM_PERSISTENT);
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
