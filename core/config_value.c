/*
 * The value syntaxes of config.h (durations, sizes, counts, yes/no, listen
 * addresses), apart from the file's structure: config.c and
 * config_domain.c both read values with them.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A unit suffix and what it multiplies by ("" is the bare number). */
struct config_unit {
	const char *suffix;
	uint64_t scale;
};

/* A whole number followed by one of `units` (compared ignoring case), no
 * larger than `max` once scaled. */
static int config_parse_scaled(const char *text, const struct config_unit *units, uint64_t max,
			       uint64_t *out)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)text[0]))
		return -EINVAL;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno != 0)
		return -EINVAL;
	for (const struct config_unit *u = units; u->suffix != NULL; u++) {
		if (strcasecmp(end, u->suffix) != 0)
			continue;
		if (v > max / u->scale)
			return -EINVAL;
		*out = v * u->scale;
		return 0;
	}
	return -EINVAL;
}

int config_parse_duration_ms(const char *text, uint32_t *out_ms)
{
	static const struct config_unit units[] = {
		{"", 1000},     {"s", 1000},    {"ms", 1},       {"m", 60000},
		{"min", 60000}, {"h", 3600000}, {"d", 86400000}, {NULL, 0},
	};
	uint64_t v;
	int r = config_parse_scaled(text, units, UINT32_MAX, &v);
	if (r == 0)
		*out_ms = (uint32_t)v;
	return r;
}

const char *config_format_duration(uint32_t ms, char *out, size_t size)
{
	static const struct config_unit units[] = {
		{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {NULL, 0},
	};
	if (ms == 0) {
		snprintf(out, size, "0");
		return out;
	}
	for (const struct config_unit *u = units; u->suffix != NULL; u++) {
		if (ms % u->scale == 0) {
			snprintf(out, size, "%llu%s", (unsigned long long)(ms / u->scale),
				 u->suffix);
			return out;
		}
	}
	snprintf(out, size, "%ums", ms);
	return out;
}

int config_parse_size(const char *text, uint64_t *out)
{
	static const struct config_unit units[] = {
		{"", 1},
		{"b", 1},
		{"k", 1024},
		{"kib", 1024},
		{"m", 1024 * 1024},
		{"mib", 1024 * 1024},
		{"g", 1024 * 1024 * 1024},
		{"gib", 1024 * 1024 * 1024},
		{NULL, 0},
	};
	return config_parse_scaled(text, units, UINT64_MAX, out);
}

int config_parse_count(const char *text, uint64_t *out)
{
	static const struct config_unit units[] = {{"", 1}, {NULL, 0}};
	return config_parse_scaled(text, units, UINT64_MAX, out);
}

int config_parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int config_parse_listen(const char *text, struct config_listen *out)
{
	char host[64];
	const char *port_text;
	size_t len = strlen(text);
	if (len == 0 || len >= sizeof(out->text))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (close == NULL || close[1] != ':')
			return -EINVAL;
		size_t hlen = (size_t)(close - text - 1);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, hlen);
		host[hlen] = '\0';
		port_text = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (colon == NULL || memchr(text, ':', (size_t)(colon - text)) != NULL)
			return -EINVAL; /* IPv6 needs brackets */
		size_t hlen = (size_t)(colon - text);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, text, hlen);
		host[hlen] = '\0';
		port_text = colon + 1;
	}
	char *end;
	if (!isdigit((unsigned char)port_text[0]))
		return -EINVAL;
	unsigned long port = strtoul(port_text, &end, 10);
	if (*end != '\0' || port > 65535)
		return -EINVAL;

	struct sockaddr_in *in4 = (struct sockaddr_in *)&out->addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->addr;
	if (text[0] != '[' && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		out->addr_len = sizeof(*in4);
	} else if (text[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		out->addr_len = sizeof(*in6);
	} else {
		return -EINVAL;
	}
	memcpy(out->text, text, len + 1);
	return 0;
}

int config_split_words(const char *list, int (*fn)(void *arg, const char *word, size_t len),
		       void *arg)
{
	const char *p = list;
	while (*p != '\0') {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		const char *start = p;
		while (*p != '\0' && *p != ',' && !isspace((unsigned char)*p))
			p++;
		if (p > start) {
			int r = fn(arg, start, (size_t)(p - start));
			if (r != 0)
				return r;
		}
	}
	return 0;
}
