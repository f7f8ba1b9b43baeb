/* core/metrics: snapshots, merging across workers, and the text format. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/metrics.h"

static const struct metric_family counter = {
	"ferry_things_total", "Things counted.", METRIC_COUNTER, METRIC_SUM, NULL, 0};
static const struct metric_family oldest = {
	"ferry_oldest_seconds", "The oldest.", METRIC_GAUGE, METRIC_MAX, NULL, 0};
static const double bounds[] = {0.1, 1, 10};
static const struct metric_family latency = {
	"ferry_latency_seconds", "How long.", METRIC_HISTOGRAM, METRIC_SUM, bounds, 3};

static char *render(const struct metrics *m)
{
	static char text[4096];
	struct buf out = {0};
	cr_assert_eq(metrics_render(m, &out), 0);
	snprintf(text, sizeof(text), "%.*s", (int)buf_len(&out), buf_head(&out));
	buf_release(&out);
	return text;
}

Test(metrics, counters_with_labels_render_under_one_help_and_type)
{
	struct metrics m;
	metrics_init(&m);
	metrics_add(&m, &counter, "code=\"451\"", 2);
	metrics_add(&m, &oldest, NULL, 7.5);
	metrics_add(&m, &counter, "code=\"554\"", 1);
	metrics_add(&m, &counter, "code=\"451\"", 3);
	cr_assert_str_eq(render(&m), "# HELP ferry_things_total Things counted.\n"
				     "# TYPE ferry_things_total counter\n"
				     "ferry_things_total{code=\"451\"} 5\n"
				     "ferry_things_total{code=\"554\"} 1\n"
				     "# HELP ferry_oldest_seconds The oldest.\n"
				     "# TYPE ferry_oldest_seconds gauge\n"
				     "ferry_oldest_seconds 7.5\n");
	metrics_free(&m);
}

Test(metrics, workers_merge_by_sum_or_max)
{
	struct metrics a, b, all;
	metrics_init(&a);
	metrics_init(&b);
	metrics_init(&all);
	metrics_add(&a, &counter, NULL, 10);
	metrics_add(&a, &oldest, NULL, 30);
	metrics_add(&b, &counter, NULL, 5);
	metrics_add(&b, &oldest, NULL, 12);
	metrics_merge(&all, &a);
	metrics_merge(&all, &b);
	cr_assert_str_eq(render(&all), "# HELP ferry_things_total Things counted.\n"
				       "# TYPE ferry_things_total counter\n"
				       "ferry_things_total 15\n"
				       "# HELP ferry_oldest_seconds The oldest.\n"
				       "# TYPE ferry_oldest_seconds gauge\n"
				       "ferry_oldest_seconds 30\n");
	metrics_free(&a);
	metrics_free(&b);
	metrics_free(&all);
}

Test(metrics, histograms_are_cumulative_with_sum_and_count)
{
	struct metric_histogram h1 = {0}, h2 = {0};
	metric_histogram_observe(&h1, &latency, 0.05);
	metric_histogram_observe(&h1, &latency, 0.1); /* on the bound: le="0.1" */
	metric_histogram_observe(&h1, &latency, 5);
	metric_histogram_observe(&h2, &latency, 50);
	struct metrics a, b, all;
	metrics_init(&a);
	metrics_init(&b);
	metrics_init(&all);
	metrics_add_histogram(&a, &latency, NULL, &h1);
	metrics_add_histogram(&b, &latency, NULL, &h2);
	metrics_merge(&all, &a);
	metrics_merge(&all, &b);
	cr_assert_str_eq(render(&all), "# HELP ferry_latency_seconds How long.\n"
				       "# TYPE ferry_latency_seconds histogram\n"
				       "ferry_latency_seconds_bucket{le=\"0.1\"} 2\n"
				       "ferry_latency_seconds_bucket{le=\"1\"} 2\n"
				       "ferry_latency_seconds_bucket{le=\"10\"} 3\n"
				       "ferry_latency_seconds_bucket{le=\"+Inf\"} 4\n"
				       "ferry_latency_seconds_sum 55.15\n"
				       "ferry_latency_seconds_count 4\n");
	metrics_free(&a);
	metrics_free(&b);
	metrics_free(&all);
}
