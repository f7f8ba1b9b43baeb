/*
 * libFuzzer target: the command side of net/smtp_parse.
 *
 * The whole input is the byte stream a client sent, so that the seeds in
 * tests/fuzz/seeds/ are plain SMTP sessions; the line limit and the chunk
 * sizes are drawn from a hash of the input. The stream goes through the
 * line reader whole, in chunks, and byte by byte, with RFC 5321's 512 and
 * with a small limit; every run must report the same lines as a plain
 * model, right after the same octet (a line is what precedes each LF,
 * less one CR right before it, reported after its LF; over the limit it
 * is TOO_LONG, reported after the octet that shows it, even when no LF
 * follows), and with the same first octets of each line (its head, of
 * what was read of it). Every line is then parsed as a command and as a
 * MAIL/RCPT argument, and checked against the contract.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/smtp_parse.h"
#include "tests/fuzz/fuzz_common.h"

#define FUZZ_LINE_CAP_MAX 512

/* ---- model line reader -------------------------------------------------- */

struct fuzz_line_model {
	const char *in;
	size_t n;
	size_t pos;
	uint32_t cap;
};

/*
 * Next line the reader must report, and `at`, the octet count after which
 * it does; false when only a partial line within the limit is left. A
 * line over the limit is reported after its first octet past the limit,
 * or, when that is a CR, after the octet that follows it (which is in the
 * stream: a CR at its very end, or before the LF, is no octet of the
 * line's), whether or not the line ever ends.
 */
static bool fuzz_model_next(struct fuzz_line_model *m, enum smtp_line_status *status,
			    const char **line, size_t *len, size_t *at)
{
	if (m->pos >= m->n)
		return false;
	const char *lf = memchr(m->in + m->pos, '\n', m->n - m->pos);
	size_t end = lf ? (size_t)(lf - m->in) : m->n;
	size_t l = end - m->pos;
	if (l > 0 && m->in[end - 1] == '\r')
		l--; /* before the LF, or held back at the end of the stream */
	size_t start = m->pos;
	m->pos = lf ? end + 1 : m->n;
	if (l > m->cap) {
		size_t past = start + m->cap;
		*status = SMTP_LINE_TOO_LONG;
		*at = m->in[past] == '\r' ? past + 2 : past + 1;
		*line = m->in + start; /* what the reader read of it */
		*len = *at - start;
		return true;
	}
	if (!lf)
		return false;
	*line = m->in + start;
	*len = l;
	*status = SMTP_LINE_READY;
	*at = m->pos;
	return true;
}

/* ---- command checks ----------------------------------------------------- */

static bool fuzz_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static char fuzz_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static bool fuzz_is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool fuzz_prefix_ci(const char *s, size_t len, const char *prefix)
{
	size_t k = strlen(prefix);
	if (len < k)
		return false;
	for (size_t i = 0; i < k; i++)
		if (fuzz_upper(s[i]) != fuzz_upper(prefix[i]))
			return false;
	return true;
}

static bool fuzz_within(const char *p, size_t len, const char *base, size_t base_len)
{
	return p >= base && p + len <= base + base_len;
}

static void fuzz_check_command(const char *line, size_t len)
{
	struct smtp_command cmd;
	int rc = smtp_command_parse(line, len, &cmd);

	FUZZ_CHECK(rc == (memchr(line, '\0', len) ? SMTP_PARSE_NUL : SMTP_PARSE_OK));
	FUZZ_CHECK(cmd.arg != NULL);

	/* Independent verb recognition: a name, case-folded, then end or blank. */
	enum smtp_verb want = len == 0 ? SMTP_VERB_EMPTY : SMTP_VERB_UNKNOWN;
	for (int v = SMTP_VERB_HELO; v < SMTP_VERB_COUNT && len > 0; v++) {
		const char *name = smtp_verb_name((enum smtp_verb)v);
		size_t k = strlen(name);
		if (fuzz_prefix_ci(line, len, name) && (k == len || fuzz_is_blank(line[k])))
			want = (enum smtp_verb)v;
	}
	FUZZ_CHECK(cmd.verb == want);

	if (cmd.verb == SMTP_VERB_EMPTY || cmd.verb == SMTP_VERB_UNKNOWN) {
		FUZZ_CHECK(cmd.arg_len == 0);
		return;
	}
	size_t verb_len = strlen(smtp_verb_name(cmd.verb));
	if (cmd.arg_len == 0) {
		for (size_t i = verb_len; i < len; i++)
			FUZZ_CHECK(fuzz_is_blank(line[i]));
		return;
	}
	FUZZ_CHECK(fuzz_within(cmd.arg, cmd.arg_len, line + verb_len, len - verb_len));
	FUZZ_CHECK(!fuzz_is_blank(cmd.arg[0]) && !fuzz_is_blank(cmd.arg[cmd.arg_len - 1]));
	for (const char *p = line + verb_len; p < cmd.arg; p++)
		FUZZ_CHECK(fuzz_is_blank(*p));
	for (const char *p = cmd.arg + cmd.arg_len; p < line + len; p++)
		FUZZ_CHECK(fuzz_is_blank(*p));
}

static bool fuzz_path_clean(const char *path, size_t len)
{
	/* Outside quotes: no '<', '>', blank; quotes and escapes balanced. */
	bool quoted = false;
	for (size_t i = 0; i < len; i++) {
		char c = path[i];
		if (quoted) {
			if (c == '\\') {
				if (++i == len)
					return false;
			} else if (c == '"') {
				quoted = false;
			}
		} else if (c == '"') {
			quoted = true;
		} else if (c == '<' || c == '>' || fuzz_is_blank(c)) {
			return false;
		}
	}
	return !quoted;
}

static void fuzz_check_path_arg(const char *arg, size_t len, const char *keyword, int depth)
{
	struct smtp_path_arg pa;
	int rc = smtp_parse_path_arg(arg, len, keyword, &pa);

	FUZZ_CHECK(rc == SMTP_PARSE_OK || rc == SMTP_PARSE_SYNTAX || rc == SMTP_PARSE_TOO_MANY);
	if (rc == SMTP_PARSE_SYNTAX)
		return;
	FUZZ_CHECK(fuzz_prefix_ci(arg, len, keyword));
	FUZZ_CHECK(pa.nparams <= SMTP_MAX_PARAMS);
	FUZZ_CHECK(rc == SMTP_PARSE_OK || pa.nparams == SMTP_MAX_PARAMS);
	FUZZ_CHECK(fuzz_within(pa.path, pa.path_len, arg, len));
	FUZZ_CHECK(pa.path > arg && pa.path[-1] == '<');
	FUZZ_CHECK(pa.path + pa.path_len < arg + len && pa.path[pa.path_len] == '>');
	FUZZ_CHECK(fuzz_path_clean(pa.path, pa.path_len));
	for (const char *p = arg + strlen(keyword); p < pa.path - 1; p++)
		FUZZ_CHECK(*p == ' ');

	const char *prev_end = pa.path + pa.path_len + 1;
	for (unsigned i = 0; i < pa.nparams; i++) {
		const struct smtp_param *p = &pa.params[i];
		FUZZ_CHECK(p->key_len > 0 && fuzz_within(p->key, p->key_len, arg, len));
		FUZZ_CHECK(p->key > prev_end && p->key[-1] == ' ');
		FUZZ_CHECK(fuzz_is_alnum((unsigned char)p->key[0]));
		for (size_t k = 0; k < p->key_len; k++)
			FUZZ_CHECK(fuzz_is_alnum((unsigned char)p->key[k]) || p->key[k] == '-');
		prev_end = p->key + p->key_len;
		if (!p->value) {
			FUZZ_CHECK(p->value_len == 0);
			continue;
		}
		FUZZ_CHECK(p->value == p->key + p->key_len + 1 && p->value[-1] == '=');
		FUZZ_CHECK(p->value_len > 0 && fuzz_within(p->value, p->value_len, arg, len));
		for (size_t k = 0; k < p->value_len; k++) {
			unsigned char c = (unsigned char)p->value[k];
			FUZZ_CHECK((c >= 33 && c <= 126 && c != '=') || c >= 0x80);
		}
		prev_end = p->value + p->value_len;
	}
	if (rc == SMTP_PARSE_OK) {
		for (const char *p = prev_end; p < arg + len; p++)
			FUZZ_CHECK(*p == ' ');
	}

	/* Rebuilt in canonical form, the argument must parse to the same thing. */
	if (rc != SMTP_PARSE_OK || depth > 0)
		return;
	/* Never longer than the original: blanks collapse, nothing is added. */
	char *canon = malloc(len);
	size_t k = 0;
	FUZZ_CHECK(canon != NULL);
	memcpy(canon, keyword, strlen(keyword));
	k += strlen(keyword);
	canon[k++] = '<';
	memcpy(canon + k, pa.path, pa.path_len);
	k += pa.path_len;
	canon[k++] = '>';
	for (unsigned i = 0; i < pa.nparams; i++) {
		canon[k++] = ' ';
		memcpy(canon + k, pa.params[i].key, pa.params[i].key_len);
		k += pa.params[i].key_len;
		if (pa.params[i].value) {
			canon[k++] = '=';
			memcpy(canon + k, pa.params[i].value, pa.params[i].value_len);
			k += pa.params[i].value_len;
		}
	}
	FUZZ_CHECK(k <= len);
	struct smtp_path_arg again;
	FUZZ_CHECK(smtp_parse_path_arg(canon, k, keyword, &again) == SMTP_PARSE_OK);
	FUZZ_CHECK(again.path_len == pa.path_len && memcmp(again.path, pa.path, pa.path_len) == 0);
	FUZZ_CHECK(again.nparams == pa.nparams);
	for (unsigned i = 0; i < pa.nparams; i++) {
		FUZZ_CHECK(again.params[i].key_len == pa.params[i].key_len);
		FUZZ_CHECK(memcmp(again.params[i].key, pa.params[i].key, pa.params[i].key_len) ==
			   0);
		FUZZ_CHECK((again.params[i].value == NULL) == (pa.params[i].value == NULL));
		FUZZ_CHECK(again.params[i].value_len == pa.params[i].value_len);
		if (pa.params[i].value)
			FUZZ_CHECK(memcmp(again.params[i].value, pa.params[i].value,
					  pa.params[i].value_len) == 0);
	}
	fuzz_check_path_arg(canon, k, keyword, depth + 1);
	free(canon);
}

static void fuzz_check_line(const char *line, size_t len)
{
	struct smtp_command cmd;

	fuzz_check_command(line, len);
	/* An HTTP request line ends in " HTTP/" digit "." digit. */
	if (smtp_line_is_http_request(line, len)) {
		FUZZ_CHECK(len >= 11 && memcmp(line + len - 9, " HTTP/", 6) == 0);
		FUZZ_CHECK(line[len - 2] == '.' && !memchr(line, '\0', len));
	}
	smtp_command_parse(line, len, &cmd);
	fuzz_check_path_arg(cmd.arg, cmd.arg_len, "FROM:", 0);
	fuzz_check_path_arg(cmd.arg, cmd.arg_len, "TO:", 0);
	/* Raw lines reach the path parser too, so that it sees leading junk. */
	fuzz_check_path_arg(line, len, "FROM:", 0);
}

/* ---- line reader runs --------------------------------------------------- */

enum fuzz_chunking { FUZZ_WHOLE, FUZZ_RANDOM, FUZZ_BYTES };

struct fuzz_pending {
	uint32_t len;
	bool saw_cr, overflow, ready;
	char head[SMTP_LINE_HEAD];
	uint8_t head_len;
};

static struct fuzz_pending fuzz_run_reader(const char *in, size_t n, uint32_t cap,
					   enum fuzz_chunking how, uint64_t seed,
					   unsigned max_chunk, bool check_lines)
{
	static char buf[FUZZ_LINE_CAP_MAX + 1];
	struct smtp_line_reader r;
	struct fuzz_line_model model = {.in = in, .n = n, .cap = cap};
	size_t pos = 0;

	smtp_line_reader_init(&r, buf, cap);
	while (pos < n) {
		size_t chunk = n - pos;
		if (how == FUZZ_BYTES)
			chunk = 1;
		else if (how == FUZZ_RANDOM)
			chunk = 1 + (size_t)(fuzz_rng_next(&seed) % max_chunk);
		if (chunk > n - pos)
			chunk = n - pos;
		size_t end = pos + chunk;
		while (pos < end) {
			size_t used = (size_t)-1;
			enum smtp_line_status st = smtp_line_feed(&r, in + pos, end - pos, &used);
			FUZZ_CHECK(used <= end - pos);
			pos += used;
			if (st == SMTP_LINE_NEED_MORE) {
				FUZZ_CHECK(pos == end);
				break;
			}
			FUZZ_CHECK(st == SMTP_LINE_READY || st == SMTP_LINE_TOO_LONG);
			FUZZ_CHECK(used > 0);

			enum smtp_line_status want;
			const char *line;
			size_t len, at;
			FUZZ_CHECK(fuzz_model_next(&model, &want, &line, &len, &at));
			FUZZ_CHECK(at == pos);
			FUZZ_CHECK(st == want);
			/* Its first octets are kept, over-long or not. */
			size_t head = len < SMTP_LINE_HEAD ? len : SMTP_LINE_HEAD;
			FUZZ_CHECK(r.head_len == head && memcmp(r.head, line, head) == 0);
			const unsigned char *u = (const unsigned char *)line;
			FUZZ_CHECK(smtp_line_starts_tls(&r) ==
				   (len >= 3 && u[0] == 0x16 && u[1] == 0x03 && u[2] <= 4));
			if (st == SMTP_LINE_READY) {
				FUZZ_CHECK(in[pos - 1] == '\n');
				FUZZ_CHECK(r.len <= cap);
				FUZZ_CHECK(r.len == len && memcmp(r.buf, line, len) == 0);
				FUZZ_CHECK(r.buf[r.len] == '\0');
				if (check_lines)
					fuzz_check_line(r.buf, r.len);
			} else {
				FUZZ_CHECK(r.len == 0);
			}
		}
	}
	/* Whatever is left is one partial line within the limit, with no LF
	 * in it, or the rest of one reported too long. */
	enum smtp_line_status st;
	const char *line;
	size_t len, at;
	FUZZ_CHECK(!fuzz_model_next(&model, &st, &line, &len, &at));

	struct fuzz_pending p = {r.len, r.saw_cr, r.overflow, r.ready, {0}, r.head_len};
	memcpy(p.head, r.head, r.head_len);
	return p;
}

static bool fuzz_pending_eq(struct fuzz_pending a, struct fuzz_pending b)
{
	return a.len == b.len && a.saw_cr == b.saw_cr && a.overflow == b.overflow &&
	       a.ready == b.ready && a.head_len == b.head_len &&
	       memcmp(a.head, b.head, a.head_len) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned chunk_limits[] = {1, 2, 3, 5, 8, 16, 64, 1024};
	const char *in = (const char *)data;
	uint64_t seed = fuzz_seed(data, size);
	/* A small limit exercises the over-long path on short inputs. */
	const uint32_t caps[] = {FUZZ_LINE_CAP_MAX, (uint32_t)(seed % 48)};

	for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
		unsigned max_chunk = chunk_limits[(seed >> (8 + 3 * c)) & 7];
		/* Lines are checked once: they are the same in every run. */
		struct fuzz_pending whole =
			fuzz_run_reader(in, size, caps[c], FUZZ_WHOLE, seed, 1, c == 0);
		struct fuzz_pending random =
			fuzz_run_reader(in, size, caps[c], FUZZ_RANDOM, seed, max_chunk, false);
		struct fuzz_pending bytes =
			fuzz_run_reader(in, size, caps[c], FUZZ_BYTES, seed, 1, false);
		FUZZ_CHECK(fuzz_pending_eq(whole, random));
		FUZZ_CHECK(fuzz_pending_eq(whole, bytes));
	}

	/* The stream as one line, wherever its LFs are. */
	fuzz_check_line(in, size);
	return 0;
}
