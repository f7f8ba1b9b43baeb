/*
 * metrics — snapshots of Prometheus families and their text format (see
 * metrics.h).
 */
#include "core/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"

void metric_histogram_observe(struct metric_histogram *h, const struct metric_family *f,
			      double value)
{
	unsigned i = 0;
	while (i < f->nbounds && value > f->bounds[i])
		i++;
	h->buckets[i]++;
	h->count++;
	h->sum += value;
}

void metrics_init(struct metrics *m)
{
	memset(m, 0, sizeof(*m));
}

void metrics_free(struct metrics *m)
{
	free(m->samples);
	metrics_init(m);
}

static struct metrics_sample *metrics_sample(struct metrics *m, const struct metric_family *f,
					     const char *labels)
{
	if (labels == NULL)
		labels = "";
	for (size_t i = 0; i < m->count; i++)
		if (m->samples[i].family == f && strcmp(m->samples[i].labels, labels) == 0)
			return &m->samples[i];
	if (array_reserve(m->samples, m->cap, m->count + 1) != 0) {
		m->failed = true;
		return NULL;
	}
	struct metrics_sample *s = &m->samples[m->count++];
	memset(s, 0, sizeof(*s));
	s->family = f;
	snprintf(s->labels, sizeof(s->labels), "%s", labels);
	return s;
}

void metrics_add(struct metrics *m, const struct metric_family *f, const char *labels, double value)
{
	struct metrics_sample *s = metrics_sample(m, f, labels);
	if (s != NULL)
		s->value += value;
}

static void metrics_histogram_add(struct metric_histogram *into, const struct metric_histogram *h)
{
	for (unsigned i = 0; i <= METRIC_BOUNDS_MAX; i++)
		into->buckets[i] += h->buckets[i];
	into->count += h->count;
	into->sum += h->sum;
}

void metrics_add_histogram(struct metrics *m, const struct metric_family *f, const char *labels,
			   const struct metric_histogram *h)
{
	struct metrics_sample *s = metrics_sample(m, f, labels);
	if (s != NULL)
		metrics_histogram_add(&s->histogram, h);
}

void metrics_merge(struct metrics *into, const struct metrics *from)
{
	into->failed = into->failed || from->failed;
	for (size_t i = 0; i < from->count; i++) {
		const struct metrics_sample *f = &from->samples[i];
		size_t before = into->count;
		struct metrics_sample *s = metrics_sample(into, f->family, f->labels);
		if (s == NULL)
			return;
		bool seen = into->count == before; /* found, not made */
		if (f->family->type == METRIC_HISTOGRAM)
			metrics_histogram_add(&s->histogram, &f->histogram);
		else if (f->family->merge == METRIC_MAX && seen)
			s->value = f->value > s->value ? f->value : s->value;
		else
			s->value += f->value;
	}
}

/* A number as Prometheus reads it: integers without a fraction. */
static void metrics_number(char *out, size_t size, double v)
{
	if (isnan(v))
		snprintf(out, size, "NaN");
	else if (isinf(v))
		snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 1e15)
		snprintf(out, size, "%.0f", v);
	else
		snprintf(out, size, "%.9g", v);
}

/* name{labels,extra} value */
static int metrics_line(struct buf *out, const char *name, const char *suffix, const char *labels,
			const char *extra, double value)
{
	char number[64];
	metrics_number(number, sizeof(number), value);
	bool any = labels[0] != '\0' || extra != NULL;
	return buf_printf(out, "%s%s%s%s%s%s%s %s\n", name, suffix, any ? "{" : "", labels,
			  labels[0] != '\0' && extra != NULL ? "," : "", extra != NULL ? extra : "",
			  any ? "}" : "", number);
}

static int metrics_render_histogram(struct buf *out, const struct metrics_sample *s)
{
	const struct metric_family *f = s->family;
	uint64_t cumulative = 0;
	char le[48], bound[32];
	for (unsigned i = 0; i <= f->nbounds; i++) {
		cumulative += s->histogram.buckets[i];
		if (i < f->nbounds)
			metrics_number(bound, sizeof(bound), f->bounds[i]);
		snprintf(le, sizeof(le), "le=\"%s\"", i < f->nbounds ? bound : "+Inf");
		if (metrics_line(out, f->name, "_bucket", s->labels, le, (double)cumulative) != 0)
			return -ENOMEM;
	}
	if (metrics_line(out, f->name, "_sum", s->labels, NULL, s->histogram.sum) != 0 ||
	    metrics_line(out, f->name, "_count", s->labels, NULL, (double)s->histogram.count) != 0)
		return -ENOMEM;
	return 0;
}

int metrics_render(const struct metrics *m, struct buf *out)
{
	static const char *const types[] = {[METRIC_COUNTER] = "counter",
					    [METRIC_GAUGE] = "gauge",
					    [METRIC_HISTOGRAM] = "histogram"};
	for (size_t i = 0; i < m->count; i++) {
		const struct metric_family *f = m->samples[i].family;
		bool first = true;
		for (size_t j = 0; j < i && first; j++)
			first = m->samples[j].family != f;
		if (!first)
			continue; /* rendered with the family's first sample */
		if (buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
			       types[f->type]) != 0)
			return -ENOMEM;
		for (size_t j = i; j < m->count; j++) {
			const struct metrics_sample *s = &m->samples[j];
			if (s->family != f)
				continue;
			int r = f->type == METRIC_HISTOGRAM
					? metrics_render_histogram(out, s)
					: metrics_line(out, f->name, "", s->labels, NULL, s->value);
			if (r != 0)
				return -ENOMEM;
		}
	}
	return 0;
}
