/*
 * ferryctl_stats — `ferryctl stats` from two of ferryd's counter snapshots
 * (see ferryctl_stats.h).
 */
#include "tools/ferryctl_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "tools/ferryctl_commands.h"

#define CTL_BUCKETS (METRIC_BOUNDS_MAX + 1)

enum { CTL_READY, CTL_DEFERRED, CTL_HELD, CTL_INFLIGHT, CTL_NSTATES };
enum { CTL_DELIVERED, CTL_DEFER, CTL_BOUNCED, CTL_EXPIRED, CTL_NOUTCOMES };
enum { CTL_CONNECTING, CTL_DELIVERING, CTL_IDLE, CTL_CLOSING, CTL_NCONN };

static const char *const ctl_states[CTL_NSTATES] = {"ready", "deferred", "held", "inflight"};
static const char *const ctl_outcomes[CTL_NOUTCOMES] = {"delivered", "deferred", "bounced",
							"expired"};
static const char *const ctl_conn_states[CTL_NCONN] = {"connecting", "delivering", "idle",
						       "closing"};

/* What one snapshot says, of the families stats shows. */
struct ctl_stats {
	bool seen; /* the answer had ferry_messages_received_total: it is ferryd's */
	double received, refused;
	double outcomes[CTL_NOUTCOMES];
	double recipients[CTL_NSTATES], messages[CTL_NSTATES], bytes[CTL_NSTATES];
	double oldest_seconds;
	double commit_bounds[CTL_BUCKETS], commit_counts[CTL_BUCKETS];
	unsigned commit_buckets;
	double commits;
	double outbound[CTL_NCONN];
	double inbound_active;
	double spool_bytes, spool_free;
};

double ctl_histogram_quantile(double q, const double *bounds, const double *counts, unsigned n)
{
	if (n == 0 || counts[n - 1] <= 0)
		return NAN;
	double rank = q * counts[n - 1];
	unsigned i = 0;
	while (i + 1 < n && counts[i] < rank)
		i++;
	if (isinf(bounds[i]))
		return i > 0 ? bounds[i - 1] : NAN;
	double lower = i > 0 ? bounds[i - 1] : 0, below = i > 0 ? counts[i - 1] : 0;
	double in_bucket = counts[i] - below;
	if (in_bucket <= 0)
		return bounds[i];
	return lower + (bounds[i] - lower) * (rank - below) / in_bucket;
}

/* The value of label `name` in a sample's labels ('a="x",b="y"'), copied
 * to out; false when it has none. */
static bool ctl_label(const char *labels, const char *name, char *out, size_t size)
{
	size_t n = strlen(name);
	for (const char *p = labels; (p = strstr(p, name)) != NULL; p += n) {
		if ((p != labels && p[-1] != ',') || strncmp(p + n, "=\"", 2) != 0)
			continue;
		const char *v = p + n + 2, *close = strchr(v, '"');
		if (close == NULL)
			return false;
		snprintf(out, size, "%.*s", (int)(close - v), v);
		return true;
	}
	return false;
}

/* The index of `value` in names, or -1. */
static int ctl_find(const char *const *names, int n, const char *value)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], value) == 0)
			return i;
	return -1;
}

/* A labelled sample into values[] by its label's value, if it names one. */
static void ctl_by_label(double *values, const char *const *names, int n, const char *labels,
			 const char *label, double value)
{
	char v[64];
	int i = ctl_label(labels, label, v, sizeof(v)) ? ctl_find(names, n, v) : -1;
	if (i >= 0)
		values[i] += value;
}

static void ctl_stats_sample(struct ctl_stats *s, const char *name, const char *labels,
			     double value)
{
	if (strcmp(name, "ferry_messages_received_total") == 0) {
		s->received += value;
		s->seen = true;
	} else if (strcmp(name, "ferry_messages_refused_total") == 0) {
		s->refused += value;
	} else if (strcmp(name, "ferry_deliveries_total") == 0) {
		ctl_by_label(s->outcomes, ctl_outcomes, CTL_NOUTCOMES, labels, "outcome", value);
	} else if (strcmp(name, "ferry_queue_recipients") == 0) {
		ctl_by_label(s->recipients, ctl_states, CTL_NSTATES, labels, "state", value);
	} else if (strcmp(name, "ferry_queue_messages") == 0) {
		ctl_by_label(s->messages, ctl_states, CTL_NSTATES, labels, "state", value);
	} else if (strcmp(name, "ferry_queue_bytes") == 0) {
		ctl_by_label(s->bytes, ctl_states, CTL_NSTATES, labels, "state", value);
	} else if (strcmp(name, "ferry_queue_oldest_message_age_seconds") == 0) {
		s->oldest_seconds = value;
	} else if (strcmp(name, "ferry_spool_commit_seconds_bucket") == 0) {
		char le[32];
		if (s->commit_buckets < CTL_BUCKETS && ctl_label(labels, "le", le, sizeof(le))) {
			s->commit_bounds[s->commit_buckets] =
				strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
			s->commit_counts[s->commit_buckets++] = value;
		}
	} else if (strcmp(name, "ferry_spool_commit_seconds_count") == 0) {
		s->commits = value;
	} else if (strcmp(name, "ferry_outbound_connections") == 0) {
		ctl_by_label(s->outbound, ctl_conn_states, CTL_NCONN, labels, "state", value);
	} else if (strcmp(name, "ferry_connections_active") == 0) {
		s->inbound_active += value;
	} else if (strcmp(name, "ferry_spool_bytes") == 0) {
		s->spool_bytes = value;
	} else if (strcmp(name, "ferry_spool_free_bytes") == 0) {
		s->spool_free = value;
	}
}

/* The Prometheus text of [body, end) into s. */
static void ctl_stats_read(char *body, char *end, struct ctl_stats *s)
{
	memset(s, 0, sizeof(*s));
	char *line;
	while ((line = ctl_next_line(&body, end)) != NULL) {
		if (line[0] == '#' || line[0] == '\0')
			continue;
		char *value = strrchr(line, ' ');
		if (value == NULL)
			continue;
		*value++ = '\0';
		const char *labels = "";
		char *brace = strchr(line, '{');
		if (brace != NULL) {
			*brace = '\0';
			labels = brace + 1;
			char *close = strrchr(brace + 1, '}');
			if (close != NULL)
				*close = '\0';
		}
		ctl_stats_sample(s, line, labels, strtod(value, NULL));
	}
}

/* Ask ferryd once; *at_ms when the answer came (monotonic). */
static int ctl_stats_ask(const char *path, struct ctl_stats *s, double *at_ms)
{
	struct buf answer = {0};
	char *body, *end;
	int status = ctl_request(path, "stats\n", &answer, &body, &end);
	if (status == CTL_OK) {
		ctl_stats_read(body, end, s);
		if (!s->seen) {
			fprintf(stderr, "ferryctl: ferryd's stats have no "
					"ferry_messages_received_total: not ferryd's counters?\n");
			status = CTL_ERROR;
		}
	}
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	*at_ms = (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
	buf_release(&answer);
	return status;
}

static double ctl_rate(double before, double after, double seconds)
{
	return after > before && seconds > 0 ? (after - before) / seconds : 0;
}

static double ctl_sum(const double *v, int n)
{
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += v[i];
	return sum;
}

static void ctl_json_states(struct ctl_json *j, const char *key, const double *v)
{
	ctl_json_open(j, key, '{');
	for (int i = 0; i < CTL_NSTATES; i++)
		ctl_json_double(j, ctl_states[i], v[i]);
	ctl_json_double(j, "total", ctl_sum(v, CTL_NSTATES));
	ctl_json_close(j, '}');
}

static void ctl_stats_json(const struct ctl_output *o, const struct ctl_stats *a,
			   const struct ctl_stats *b, double seconds, double p50, double p99)
{
	struct ctl_json j;
	char key[64];
	ctl_json_start(&j, o->out);
	ctl_json_open(&j, NULL, '{');
	ctl_json_double(&j, "interval_seconds", seconds);
	ctl_json_open(&j, "messages", '{');
	ctl_json_double(&j, "received", b->received);
	ctl_json_double(&j, "received_per_second", ctl_rate(a->received, b->received, seconds));
	ctl_json_double(&j, "refused", b->refused);
	ctl_json_double(&j, "refused_per_second", ctl_rate(a->refused, b->refused, seconds));
	ctl_json_close(&j, '}');
	ctl_json_open(&j, "recipients", '{');
	for (int i = 0; i < CTL_NOUTCOMES; i++) {
		ctl_json_double(&j, ctl_outcomes[i], b->outcomes[i]);
		snprintf(key, sizeof(key), "%s_per_second", ctl_outcomes[i]);
		ctl_json_double(&j, key, ctl_rate(a->outcomes[i], b->outcomes[i], seconds));
	}
	ctl_json_close(&j, '}');
	ctl_json_open(&j, "queue", '{');
	ctl_json_states(&j, "recipients", b->recipients);
	ctl_json_states(&j, "messages", b->messages);
	ctl_json_states(&j, "bytes", b->bytes);
	ctl_json_double(&j, "oldest_message_age_seconds", b->oldest_seconds);
	ctl_json_close(&j, '}');
	ctl_json_open(&j, "commit_latency_seconds", '{');
	ctl_json_double(&j, "p50", p50);
	ctl_json_double(&j, "p99", p99);
	ctl_json_double(&j, "commits", b->commits);
	ctl_json_close(&j, '}');
	ctl_json_open(&j, "connections", '{');
	ctl_json_double(&j, "inbound", b->inbound_active);
	ctl_json_open(&j, "outbound", '{');
	for (int i = 0; i < CTL_NCONN; i++)
		ctl_json_double(&j, ctl_conn_states[i], b->outbound[i]);
	ctl_json_double(&j, "total", ctl_sum(b->outbound, CTL_NCONN));
	ctl_json_close(&j, '}');
	ctl_json_close(&j, '}');
	ctl_json_open(&j, "spool", '{');
	ctl_json_double(&j, "bytes", b->spool_bytes);
	ctl_json_double(&j, "free_bytes", b->spool_free);
	ctl_json_close(&j, '}');
	ctl_json_close(&j, '}');
	ctl_json_end(&j);
}

static void ctl_stats_counter(FILE *out, const char *label, double before, double after,
			      double seconds)
{
	fprintf(out, "%-22s %12.0f  %9.1f/s\n", label, after, ctl_rate(before, after, seconds));
}

static void ctl_stats_table(const struct ctl_output *o, const struct ctl_stats *a,
			    const struct ctl_stats *b, double seconds, double p50, double p99)
{
	FILE *out = o->out;
	char text[32], more[32];
	fprintf(out, "%-22s %12s  %11s\n", "", "TOTAL", "RATE");
	ctl_stats_counter(out, "messages received", a->received, b->received, seconds);
	ctl_stats_counter(out, "messages refused", a->refused, b->refused, seconds);
	static const char *const labels[CTL_NOUTCOMES] = {
		"recipients delivered", "recipients deferred", "recipients bounced",
		"recipients expired"};
	for (int i = 0; i < CTL_NOUTCOMES; i++)
		ctl_stats_counter(out, labels[i], a->outcomes[i], b->outcomes[i], seconds);
	fprintf(out, "(rates over the last %.1f s; totals since ferryd started)\n\n", seconds);

	fprintf(out, "%-10s  %10s  %10s  %8s\n", "QUEUE", "RECIPIENTS", "MESSAGES", "SIZE");
	for (int i = 0; i <= CTL_NSTATES; i++) {
		bool total = i == CTL_NSTATES;
		double r = total ? ctl_sum(b->recipients, CTL_NSTATES) : b->recipients[i];
		double m = total ? ctl_sum(b->messages, CTL_NSTATES) : b->messages[i];
		double sz = total ? ctl_sum(b->bytes, CTL_NSTATES) : b->bytes[i];
		fprintf(out, "%-10s  %10.0f  %10.0f  %8s\n", total ? "total" : ctl_states[i], r, m,
			ctl_size(text, sizeof(text), (unsigned long long)sz));
	}
	fprintf(out, "(a message waiting for two domains counts once for each)\n\n");

	fprintf(out, "%-22s %s\n", "oldest message",
		b->oldest_seconds > 0 ? ctl_seconds(text, sizeof(text), b->oldest_seconds) : "-");
	fprintf(out, "%-22s p50 %s, p99 %s (%.0f group commits since ferryd started)\n",
		"commit latency", ctl_latency(text, sizeof(text), p50),
		ctl_latency(more, sizeof(more), p99), b->commits);
	fprintf(out, "%-22s %.0f inbound; outbound %.0f (", "connections", b->inbound_active,
		ctl_sum(b->outbound, CTL_NCONN));
	for (int i = 0; i < CTL_NCONN; i++)
		fprintf(out, "%s%.0f %s", i ? ", " : "", b->outbound[i], ctl_conn_states[i]);
	fprintf(out, ")\n");
	fprintf(out, "%-22s %s of segment files, %s free\n", "spool",
		ctl_size(text, sizeof(text), (unsigned long long)b->spool_bytes),
		ctl_size(more, sizeof(more), (unsigned long long)b->spool_free));
}

int ctl_stats(const struct ctl_output *o, const char *path)
{
	struct ctl_stats *s = calloc(2, sizeof(*s));
	if (s == NULL)
		return ctl_out_of_memory(), CTL_ERROR;
	double first_ms, second_ms;
	int status = ctl_stats_ask(path, &s[0], &first_ms);
	if (status == CTL_OK) {
		struct timespec pause = {CTL_STATS_INTERVAL_MS / 1000,
					 (CTL_STATS_INTERVAL_MS % 1000) * 1000000L};
		nanosleep(&pause, NULL);
		status = ctl_stats_ask(path, &s[1], &second_ms);
	}
	if (status == CTL_OK) {
		double seconds = (second_ms - first_ms) / 1000;
		const struct ctl_stats *b = &s[1];
		double p50 = ctl_histogram_quantile(0.5, b->commit_bounds, b->commit_counts,
						    b->commit_buckets);
		double p99 = ctl_histogram_quantile(0.99, b->commit_bounds, b->commit_counts,
						    b->commit_buckets);
		if (o->json)
			ctl_stats_json(o, &s[0], b, seconds, p50, p99);
		else
			ctl_stats_table(o, &s[0], b, seconds, p50, p99);
	}
	free(s);
	return status;
}
