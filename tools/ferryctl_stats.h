/*
 * ferryctl_stats — `ferryctl stats`: one screen of how a running ferryd is
 * doing. It asks ferryd's admin socket for `stats` (every worker's
 * counters in the Prometheus text format, as /metrics serves them) twice,
 * a second apart, and shows totals and rates (messages received,
 * recipients delivered, deferred, bounced, expired), the queue by state,
 * the oldest message's age, the spool's commit latency (p50, p99 from its
 * histogram, since ferryd started), and the connections open. --json
 * gives the same numbers as one JSON document (docs/operations.md).
 */
#ifndef FERRY_TOOLS_FERRYCTL_STATS_H
#define FERRY_TOOLS_FERRYCTL_STATS_H

#include "tools/ferryctl_format.h"

#define CTL_STATS_INTERVAL_MS 1000

/* Ask the ferryd at the socket `path` and show it. CTL_OK or CTL_ERROR. */
int ctl_stats(const struct ctl_output *o, const char *path);

/*
 * From a histogram's cumulative buckets (bounds[i] the upper bound of
 * bucket i, rising; counts[i] the observations at or below it; the last,
 * bounds[n - 1], may be +Inf), the q-quantile as Prometheus's
 * histogram_quantile() estimates it: linear within the bucket it falls
 * in, the highest finite bound when it falls in +Inf. NaN without
 * observations.
 */
double ctl_histogram_quantile(double q, const double *bounds, const double *counts, unsigned n);

#endif
