// Micro benchmark for net/policy's relay-domain set: one RCPT's lookup
// against as many relay domains as a config list holds, half of them
// exact names and half subdomain entries. Figures only; nothing here
// fails a build.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "net/policy.h"
}

namespace
{

struct policy_bench_set {
	std::vector<std::string> text;
	struct policy_domains *set = nullptr;

	explicit policy_bench_set(size_t count)
	{
		std::vector<const char *> names;
		char name[64];

		for (size_t i = 0; i < count; i++) {
			std::snprintf(name, sizeof(name),
				      i % 2 ? ".s%zu.customer.example" : "d%zu.example", i);
			text.emplace_back(name);
		}
		for (const std::string &t : text)
			names.push_back(t.c_str());
		if (policy_domains_build(&set, names.data(), names.size()) != 0)
			set = nullptr;
	}
	~policy_bench_set()
	{
		policy_domains_free(set);
	}
};

// Recipient domains as RCPT brings them: an exact hit, a subdomain hit a few
// labels deep (mixed case), and a long miss that walks every label.
const char *const policy_bench_domains[] = {
	"d2048.example",
	"Mail.Eu.S4095.Customer.Example",
	"a.very.long.host.name.in.some.unrelated.domain.of.the.internet.example",
};

void policy_bench_lookup(benchmark::State &state)
{
	const policy_bench_set s(static_cast<size_t>(state.range(0)));
	const char *domain = policy_bench_domains[state.range(1)];
	const size_t len = std::strlen(domain);

	if (s.set == nullptr) {
		state.SkipWithError("cannot build the set");
		return;
	}
	for (auto _ : state) {
		bool hit = policy_domains_contain(s.set, domain, len);
		benchmark::DoNotOptimize(hit);
	}
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(policy_bench_lookup)->ArgNames({"domains", "case"})->ArgsProduct({{1, 4096}, {0, 1, 2}});

} // namespace

BENCHMARK_MAIN();
