// Micro benchmarks for queue/record: one record encoded, framed (checksum
// verified) and decoded per iteration, as the spool writes a message and
// recovery reads it back. Bytes are whole records, header and padding
// included. Figures only; nothing here fails a build.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

extern "C" {
#include "queue/record.h"
}

namespace
{

constexpr uint64_t record_bench_salt = 0x9e3779b97f4a7c15ull;
constexpr char record_bench_id[] = "4XyZ0123456789ab";

record_string record_bench_string(const std::string &s)
{
	record_string r;
	r.data = s.data();
	r.len = static_cast<uint16_t>(s.size());
	return r;
}

void record_bench_set_id(char *id)
{
	std::copy(record_bench_id, record_bench_id + RECORD_ID_LEN, id);
}

void record_bench_report(benchmark::State &state, size_t record_bytes)
{
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * record_bytes));
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
	state.counters["record_bytes"] = static_cast<double>(record_bytes);
}

// An envelope as a typical MAIL/RCPT transaction leaves it: two ESMTP
// parameters and `range(0)` recipients.
void record_bench_envelope(benchmark::State &state)
{
	const auto nrecipients = static_cast<uint16_t>(state.range(0));
	const std::string client = "2001:db8::25";
	const std::string helo = "mail.client.example.org";
	const std::string sender = "bounces+12345@lists.example.org";
	std::vector<std::string> texts = {"SIZE=48213", "BODY=8BITMIME"};
	for (uint16_t i = 0; i < nrecipients; i++)
		texts.push_back("recipient" + std::to_string(i) + "@example.net");
	std::vector<record_string> strings;
	for (const auto &t : texts)
		strings.push_back(record_bench_string(t));

	record_envelope env{};
	record_bench_set_id(env.id);
	env.arrival_ms = 1732800000123;
	env.client = record_bench_string(client);
	env.helo = record_bench_string(helo);
	env.sender = record_bench_string(sender);
	env.nparams = 2;
	env.nrecipients = nrecipients;

	const size_t cap = record_size(record_envelope_payload_size(&env, strings.data()));
	std::vector<uint8_t> buf(cap);
	std::vector<record_string> decoded(strings.size());

	for (auto _ : state) {
		size_t n = record_encode_envelope(buf.data(), cap, record_bench_salt, &env,
						  strings.data());
		record_view v;
		record_envelope got;
		if (n != cap || record_frame(buf.data(), n, record_bench_salt, &v) != RECORD_OK ||
		    record_decode_envelope(&v, &got, decoded.data(), decoded.size()) != 0) {
			state.SkipWithError("envelope did not round-trip");
			break;
		}
		benchmark::DoNotOptimize(got);
		benchmark::DoNotOptimize(decoded.data());
		benchmark::ClobberMemory();
	}
	record_bench_report(state, cap);
}
BENCHMARK(record_bench_envelope)->ArgName("recipients")->Arg(1)->Arg(100);

// One BODY chunk of `range(0)` octets.
void record_bench_body(benchmark::State &state)
{
	const auto len = static_cast<uint32_t>(state.range(0));
	std::vector<uint8_t> data(len);
	for (uint32_t i = 0; i < len; i++)
		data[i] = static_cast<uint8_t>("Lorem ipsum dolor sit amet.\r\n"[i % 29]);

	record_body body{};
	record_bench_set_id(body.id);
	body.chunk = 3;
	body.data = data.data();
	body.len = len;

	const size_t cap = record_size(20 + static_cast<size_t>(len));
	std::vector<uint8_t> buf(cap);

	for (auto _ : state) {
		size_t n = record_encode_body(buf.data(), cap, record_bench_salt, &body);
		record_view v;
		record_body got;
		if (n != cap || record_frame(buf.data(), n, record_bench_salt, &v) != RECORD_OK ||
		    record_decode_body(&v, &got) != 0) {
			state.SkipWithError("body did not round-trip");
			break;
		}
		benchmark::DoNotOptimize(got);
		benchmark::ClobberMemory();
	}
	record_bench_report(state, cap);
}
BENCHMARK(record_bench_body)->ArgName("bytes")->Arg(1024)->Arg(64 * 1024);

void record_bench_commit(benchmark::State &state)
{
	record_commit commit{};
	record_bench_set_id(commit.id);
	commit.body_len = 48213;
	commit.nchunks = 1;

	const size_t cap = record_size(28);
	uint8_t buf[64];

	for (auto _ : state) {
		size_t n = record_encode_commit(buf, sizeof(buf), record_bench_salt, &commit);
		record_view v;
		record_commit got;
		if (n != cap || record_frame(buf, n, record_bench_salt, &v) != RECORD_OK ||
		    record_decode_commit(&v, &got) != 0) {
			state.SkipWithError("commit did not round-trip");
			break;
		}
		benchmark::DoNotOptimize(got);
		benchmark::ClobberMemory();
	}
	record_bench_report(state, cap);
}
BENCHMARK(record_bench_commit);

} // namespace

BENCHMARK_MAIN();
