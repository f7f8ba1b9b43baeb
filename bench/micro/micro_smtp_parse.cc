// Micro benchmarks for net/smtp_parse: command lines of a pipelined
// transaction, and the DATA decoder over a 64 KiB body. Figures only;
// nothing here fails a build.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "net/smtp_parse.h"
}

namespace
{

// What a PIPELINING client sends in one write for a message to 3 recipients.
const char smtp_bench_transaction[] =
	"EHLO mail.client.example.org\r\n"
	"MAIL FROM:<bounces+12345@lists.example.org> SIZE=48213 BODY=8BITMIME\r\n"
	"RCPT TO:<alice@example.net> NOTIFY=FAILURE\r\n"
	"RCPT TO:<bob@example.net>\r\n"
	"RCPT TO:<\"carol smith\"@example.net>\r\n"
	"DATA\r\n";

// Feed the transaction in chunks of `chunk` bytes (0: whole), as recv would.
void smtp_bench_commands(benchmark::State &state)
{
	const size_t chunk = static_cast<size_t>(state.range(0));
	const size_t n = sizeof(smtp_bench_transaction) - 1;
	char buf[513];
	size_t commands = 0;

	for (auto _ : state) {
		struct smtp_line_reader r;
		smtp_line_reader_init(&r, buf, 512);
		size_t pos = 0;
		while (pos < n) {
			size_t end = chunk ? std::min(n, pos + chunk) : n;
			while (pos < end) {
				size_t used;
				enum smtp_line_status st = smtp_line_feed(
					&r, smtp_bench_transaction + pos, end - pos, &used);
				pos += used;
				if (st != SMTP_LINE_READY)
					continue;
				struct smtp_command cmd;
				smtp_command_parse(r.buf, r.len, &cmd);
				commands++;
				if (cmd.verb == SMTP_VERB_MAIL || cmd.verb == SMTP_VERB_RCPT) {
					struct smtp_path_arg pa;
					const char *kw =
						cmd.verb == SMTP_VERB_MAIL ? "FROM:" : "TO:";
					int rc = smtp_parse_path_arg(cmd.arg, cmd.arg_len, kw, &pa);
					benchmark::DoNotOptimize(rc);
					benchmark::DoNotOptimize(pa);
				}
				benchmark::DoNotOptimize(cmd);
			}
		}
	}
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
	state.SetItemsProcessed(static_cast<int64_t>(commands));
	state.counters["ns/command"] =
		benchmark::Counter(static_cast<double>(commands),
				   benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(smtp_bench_commands)->Arg(0)->Arg(16)->Arg(1);

// A 64 KiB body of `line_len`-octet lines, some of them dot-stuffed, then the end.
std::string smtp_bench_body(size_t line_len)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	std::string body;
	size_t line = 0;

	while (body.size() < 64 * 1024) {
		std::string l;
		if (line % 16 == 0)
			l += "..";
		while (l.size() < line_len)
			l += alphabet[(line * 7 + l.size()) % 64];
		body += l;
		body += "\r\n";
		line++;
	}
	body += ".\r\n";
	return body;
}

void smtp_bench_data(benchmark::State &state)
{
	const size_t line_len = static_cast<size_t>(state.range(0));
	const size_t out_cap = static_cast<size_t>(state.range(1));
	const std::string body = smtp_bench_body(line_len);
	std::vector<char> out(out_cap);

	for (auto _ : state) {
		struct smtp_data_decoder d;
		smtp_data_decoder_init(&d, 998, 100u << 20);
		size_t pos = 0, total = 0;
		enum smtp_data_status st = SMTP_DATA_NEED_MORE;
		while (st != SMTP_DATA_END && pos < body.size()) {
			size_t used, made;
			st = smtp_data_decode(&d, body.data() + pos, body.size() - pos, &used,
					      out.data(), out.size(), &made);
			pos += used;
			total += made;
			benchmark::DoNotOptimize(out.data());
		}
		if (st != SMTP_DATA_END || smtp_data_rejected(&d))
			state.SkipWithError("body did not decode");
		benchmark::DoNotOptimize(total);
	}
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(smtp_bench_data)
	->ArgNames({"line", "out"})
	->Args({76, 64 * 1024})
	->Args({76, 4096})
	->Args({998, 64 * 1024})
	->Args({20, 64 * 1024});

} // namespace

BENCHMARK_MAIN();
