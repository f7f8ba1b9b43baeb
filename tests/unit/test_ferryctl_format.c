/*
 * Tests for ferryctl's formatting (tools/ferryctl_format.h) and its stats
 * arithmetic (tools/ferryctl_stats.h): human sizes and ages, the JSON
 * writer's escapes (what a program reading --json relies on), and the
 * quantiles of a histogram as Prometheus estimates them.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ferryctl_format.h"
#include "tools/ferryctl_stats.h"

Test(ferryctl_format, sizes_fit_a_column_without_a_space)
{
	char out[16];
	static const struct {
		unsigned long long octets;
		const char *text;
	} cases[] = {
		{0, "0B"},           {412, "412B"},          {1023, "1023B"},
		{1024, "1.0KiB"},    {1229, "1.2KiB"},       {57344, "56KiB"},
		{3565158, "3.4MiB"}, {1073741824, "1.0GiB"}, {1536ull << 30, "1.5TiB"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_str_eq(ctl_size(out, sizeof(out), cases[i].octets), cases[i].text, "%llu",
				 cases[i].octets);
}

Test(ferryctl_format, ages_and_latencies)
{
	char out[16];
	cr_expect_str_eq(ctl_age(out, sizeof(out), 100000, 97000), "3s");
	cr_expect_str_eq(ctl_age(out, sizeof(out), 1000000, 1000000 - 180000), "3m");
	cr_expect_str_eq(ctl_age(out, sizeof(out), 10000000, 10000000 - 7200000), "2h");
	cr_expect_str_eq(ctl_seconds(out, sizeof(out), 4 * 86400 + 5), "4d");
	cr_expect_str_eq(ctl_age(out, sizeof(out), 1000, 0), "-");
	cr_expect_str_eq(ctl_latency(out, sizeof(out), 0.0008), "0.8ms");
	cr_expect_str_eq(ctl_latency(out, sizeof(out), 0.012), "12ms");
	cr_expect_str_eq(ctl_latency(out, sizeof(out), 1.42), "1.4s");
	cr_expect_str_eq(ctl_latency(out, sizeof(out), NAN), "-");
}

/* What the JSON writer wrote, NUL-terminated (the caller frees it). */
static char *written(void (*write)(struct ctl_json *j))
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	cr_assert_not_null(f);
	struct ctl_json j;
	ctl_json_start(&j, f);
	write(&j);
	fclose(f);
	return text;
}

static void write_members(struct ctl_json *j)
{
	ctl_json_open(j, NULL, '{');
	ctl_json_string(j, "s", "a \"quoted\" \\ line\r\n\x01");
	ctl_json_string(j, "none", NULL);
	ctl_json_uint(j, "n", 18446744073709551615ull);
	ctl_json_int(j, "i", -3);
	ctl_json_double(j, "d", 0.25);
	ctl_json_double(j, "whole", 3);
	ctl_json_double(j, "nan", NAN);
	ctl_json_bool(j, "b", true);
	ctl_json_open(j, "list", '[');
	ctl_json_uint(j, NULL, 1);
	ctl_json_open(j, NULL, '{');
	ctl_json_close(j, '}');
	ctl_json_close(j, ']');
	ctl_json_close(j, '}');
	ctl_json_end(j);
}

Test(ferryctl_format, json_escapes_and_separates)
{
	char *text = written(write_members);
	cr_expect_str_eq(text, "{\"s\":\"a \\\"quoted\\\" \\\\ line\\r\\n\\u0001\",\"none\":null,"
			       "\"n\":18446744073709551615,\"i\":-3,\"d\":0.25,\"whole\":3,"
			       "\"nan\":null,\"b\":true,\"list\":[1,{}]}\n");
	free(text);
}

static void write_bytes(struct ctl_json *j)
{
	/* é in UTF-8, a lone continuation octet, an overlong '/', a
	 * surrogate, a truncated sequence at the end. */
	static const char bytes[] = "caf\xc3\xa9 \x80 \xc0\xaf \xed\xa0\x80 \xe2\x82";
	ctl_json_bytes(j, NULL, bytes, sizeof(bytes) - 1);
}

Test(ferryctl_format, json_bytes_keep_utf8_and_replace_the_rest)
{
	char *text = written(write_bytes);
	cr_expect_str_eq(text, "\"caf\xc3\xa9 \\ufffd \\ufffd\\ufffd \\ufffd\\ufffd\\ufffd "
			       "\\ufffd\\ufffd\"");
	free(text);
}

Test(ferryctl_format, fields_and_quoted_values)
{
	char line[] = "3C1C held 0 \"a b\\\"c\" x@example.com rest of it";
	char *f[5];
	cr_assert_eq(ctl_split(line, f, 5), 5);
	cr_expect_str_eq(f[0], "3C1C");
	cr_expect_str_eq(f[3], "\"a b\\\"c\"");
	cr_expect_str_eq(ctl_unquote(f[3]), "a b\"c");
	cr_expect_str_eq(f[4], "x@example.com rest of it");
	char escaped[] = "\"\\x0d\\\\n\"";
	cr_expect_str_eq(ctl_unquote(escaped), "\\x0d\\n", "\\xNN stays, \\\\ is undone");
}

Test(ferryctl_stats, quantiles_as_prometheus_estimates_them)
{
	/* 10 observations at or below 0.001, 80 more up to 0.01, 10 more up
	 * to 0.1, none beyond. */
	static const double bounds[] = {0.001, 0.01, 0.1, INFINITY};
	static const double counts[] = {10, 90, 100, 100};
	cr_expect_float_eq(ctl_histogram_quantile(0.05, bounds, counts, 4), 0.0005, 1e-12);
	cr_expect_float_eq(ctl_histogram_quantile(0.5, bounds, counts, 4), 0.001 + 0.009 * 0.5,
			   1e-12);
	cr_expect_float_eq(ctl_histogram_quantile(0.99, bounds, counts, 4), 0.01 + 0.09 * 0.9,
			   1e-12);
	/* In the +Inf bucket: the highest finite bound. */
	static const double high[] = {0, 0, 50, 100};
	cr_expect_float_eq(ctl_histogram_quantile(0.99, bounds, high, 4), 0.1, 1e-12);
	/* Nothing observed: no answer. */
	static const double none[] = {0, 0, 0, 0};
	cr_expect(isnan(ctl_histogram_quantile(0.5, bounds, none, 4)));
	cr_expect(isnan(ctl_histogram_quantile(0.5, bounds, counts, 0)));
}
