// Micro benchmarks for queue/index: insert, lookup and remove with 1k, 100k
// and 1M queued recipients spread over up to 10k destinations, and
// index_release_due on a destination with many deferred recipients.
// Figures only; nothing here fails a build.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "queue/index.h"
}

namespace
{

constexpr size_t index_bench_destinations = 10000;

// Destination names as a relay sees them: mixed case, as clients type them.
const std::vector<std::string> &index_bench_domains()
{
	static std::vector<std::string> domains = [] {
		std::vector<std::string> v;
		char name[64];
		for (size_t i = 0; i < index_bench_destinations; i++) {
			std::snprintf(name, sizeof(name), "Mail%zu.Customer-%zu.example.NET", i,
				      i * 7919 % 100003);
			v.emplace_back(name);
		}
		return v;
	}();
	return domains;
}

// Recipient i goes to destination domain_of[i]; recipients arrive in random
// destination order, as mail does.
struct index_bench_load {
	std::vector<index_entry> entries;
	std::vector<uint32_t> domain_of;

	explicit index_bench_load(size_t n) : entries(n), domain_of(n)
	{
		size_t ndest = std::min(n, index_bench_destinations);
		std::mt19937_64 rng(n);
		for (size_t i = 0; i < n; i++)
			domain_of[i] = static_cast<uint32_t>(i % ndest);
		std::shuffle(domain_of.begin(), domain_of.end(), rng);
	}

	void insert_all(index_shard *s)
	{
		const auto &domains = index_bench_domains();
		for (size_t i = 0; i < entries.size(); i++) {
			const std::string &d = domains[domain_of[i]];
			if (index_insert(s, d.data(), d.size(), &entries[i], INDEX_READY, 0) != 0)
				std::abort();
		}
	}
};

void index_bench_insert(benchmark::State &state)
{
	index_bench_load load(static_cast<size_t>(state.range(0)));
	index_shard s;

	for (auto _ : state) {
		state.PauseTiming();
		if (index_shard_init(&s) != 0)
			std::abort();
		state.ResumeTiming();
		load.insert_all(&s);
		state.PauseTiming();
		index_shard_free(&s);
		state.ResumeTiming();
	}
	state.SetItemsProcessed(state.iterations() * state.range(0));
}

void index_bench_lookup(benchmark::State &state, bool hit)
{
	size_t n = static_cast<size_t>(state.range(0));
	size_t ndest = std::min(n, index_bench_destinations);
	index_bench_load load(n);
	index_shard s;
	if (index_shard_init(&s) != 0)
		std::abort();
	load.insert_all(&s);

	// Looked up in the order recipients arrive, so cache misses are real.
	std::vector<std::string> keys;
	for (size_t i = 0; i < std::min(n, size_t{65536}); i++) {
		std::string k = index_bench_domains()[load.domain_of[i] % ndest];
		if (!hit)
			k.replace(0, 4, "Relay");
		keys.push_back(k);
	}
	size_t i = 0, found = 0;
	for (auto _ : state) {
		const std::string &k = keys[i];
		if (++i == keys.size())
			i = 0;
		index_destination *d = index_find(&s, k.data(), k.size());
		found += d != nullptr;
		benchmark::DoNotOptimize(d);
	}
	if ((found != 0) != hit)
		state.SkipWithError("lookups did not find what they should");
	state.SetItemsProcessed(state.iterations());
	index_shard_free(&s);
}

void index_bench_lookup_hit(benchmark::State &state)
{
	index_bench_lookup(state, true);
}

void index_bench_lookup_miss(benchmark::State &state)
{
	index_bench_lookup(state, false);
}

// Remove every recipient in random order; the last of a destination frees it.
void index_bench_remove(benchmark::State &state)
{
	size_t n = static_cast<size_t>(state.range(0));
	index_bench_load load(n);
	std::vector<uint32_t> order(n);
	for (size_t i = 0; i < n; i++)
		order[i] = static_cast<uint32_t>(i);
	std::shuffle(order.begin(), order.end(), std::mt19937_64(n + 1));
	index_shard s;

	for (auto _ : state) {
		state.PauseTiming();
		if (index_shard_init(&s) != 0)
			std::abort();
		load.insert_all(&s);
		state.ResumeTiming();
		for (uint32_t k : order)
			index_remove(&s, &load.entries[k]);
		state.PauseTiming();
		index_shard_free(&s);
		state.ResumeTiming();
	}
	state.SetItemsProcessed(state.iterations() * state.range(0));
}

// One destination with range(0) deferred recipients, due one per ms on
// average. Each iteration advances the clock by range(1) ms and releases
// what fell due; the released are deferred again (untimed) to keep the heap
// the same size. Heap entries are pointers, so each comparison on the way
// down is a load from a recipient: at 1M that is mostly cache misses.
void index_bench_release_due(benchmark::State &state)
{
	size_t n = static_cast<size_t>(state.range(0));
	uint64_t step = static_cast<uint64_t>(state.range(1));
	std::vector<index_entry> entries(n);
	std::mt19937_64 rng(n);
	std::uniform_int_distribution<uint64_t> horizon(1, n);
	index_shard s;
	if (index_shard_init(&s) != 0)
		std::abort();
	const char domain[] = "deferred.example.net";
	for (auto &e : entries) {
		if (index_insert(&s, domain, sizeof(domain) - 1, &e, INDEX_DEFERRED,
				 horizon(rng)) != 0)
			std::abort();
	}
	index_destination *d = index_find(&s, domain, sizeof(domain) - 1);
	uint64_t now = 0;
	size_t released = 0;

	for (auto _ : state) {
		now += step;
		released += index_release_due(d, now);
		state.PauseTiming();
		// A released entry keeps its last due_ms: one horizon later keeps
		// the dues uniform, so each call releases about `step`.
		while (index_entry *e = index_first(d, INDEX_READY))
			index_move(e, INDEX_DEFERRED, e->due_ms + n);
		state.ResumeTiming();
	}
	state.SetItemsProcessed(static_cast<int64_t>(released));
	state.counters["per_call"] =
		benchmark::Counter(static_cast<double>(released) / state.iterations());
	index_shard_free(&s);
}

} // namespace

BENCHMARK(index_bench_insert)->Arg(1000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMicrosecond);
BENCHMARK(index_bench_lookup_hit)->Arg(1000)->Arg(100000)->Arg(1000000);
BENCHMARK(index_bench_lookup_miss)->Arg(1000)->Arg(100000)->Arg(1000000);
BENCHMARK(index_bench_remove)->Arg(1000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMicrosecond);
BENCHMARK(index_bench_release_due)
	->Args({10000, 1000})
	->Args({100000, 1000})
	->Args({1000000, 1000})
	->Args({1000000, 10000})
	->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
