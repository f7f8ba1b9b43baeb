/*
 * metrics — Prometheus families, a worker's snapshot of their values, and
 * the text exposition format (0.0.4).
 *
 * Counters live where they are counted: each layer keeps plain integers in
 * its per-worker state, written on the worker's own thread only (no
 * atomics on the per-message path). When the metrics endpoint is scraped,
 * each worker is asked, by cross-worker message, to describe its values
 * into a struct metrics (worker_metrics(): every service's `metrics`
 * callback, worker.h); the endpoint's thread then merges the workers'
 * snapshots (a family says how: summed, or the largest) and renders them.
 *
 * A family is a static description; a sample is a family with one label
 * set (text already in Prometheus form, e.g. `state="held"`, or "").
 * Rendering groups a family's samples under one HELP and TYPE, families
 * in the order first described.
 */
#ifndef FERRY_CORE_METRICS_H
#define FERRY_CORE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum metric_type { METRIC_COUNTER = 0, METRIC_GAUGE, METRIC_HISTOGRAM };

/* How the workers' values of one sample make the process's. */
enum metric_merge { METRIC_SUM = 0, METRIC_MAX };

#define METRIC_BOUNDS_MAX 20
#define METRIC_LABELS_MAX 96

struct metric_family {
	const char *name; /* ferry_..., with _total, _seconds, _bytes as Prometheus names them */
	const char *help;
	enum metric_type type;
	enum metric_merge merge;
	const double *bounds; /* histogram: bucket upper bounds, rising; +Inf implied */
	unsigned nbounds;     /* at most METRIC_BOUNDS_MAX */
};

/* A histogram as a worker keeps it: counts per bucket (not cumulative;
 * the last is +Inf), their number and the sum of the values observed. */
struct metric_histogram {
	uint64_t buckets[METRIC_BOUNDS_MAX + 1];
	uint64_t count;
	double sum;
};

void metric_histogram_observe(struct metric_histogram *h, const struct metric_family *f,
			      double value);

struct metrics_sample {
	const struct metric_family *family;
	char labels[METRIC_LABELS_MAX];
	double value;                      /* counter, gauge */
	struct metric_histogram histogram; /* histogram */
};

struct metrics {
	struct metrics_sample *samples;
	size_t count, cap;
	bool failed; /* out of memory: what is here is short */
};

void metrics_init(struct metrics *m);
void metrics_free(struct metrics *m);

/* Add a value to the sample (family, labels), made if new. Counters and
 * gauges are added up within one snapshot too. labels NULL is "". */
void metrics_add(struct metrics *m, const struct metric_family *f, const char *labels,
		 double value);
void metrics_add_histogram(struct metrics *m, const struct metric_family *f, const char *labels,
			   const struct metric_histogram *h);

/* Merge another worker's snapshot in, by each family's merge rule. */
void metrics_merge(struct metrics *into, const struct metrics *from);

/* Append the text exposition of m to out. Returns 0 or -ENOMEM. */
int metrics_render(const struct metrics *m, struct buf *out);

#endif
