/*
 * Tests for core/cpuset: the CPUs read are the affinity mask's, in order,
 * however the mask was narrowed (here by sched_setaffinity, as taskset
 * does). Criterion runs each test in a process of its own, so a narrowed
 * mask ends with its test; each test still puts the mask back.
 */
#include <criterion/criterion.h>
#include <sched.h>

#include "core/cpuset.h"

static cpu_set_t test_original;

static void test_save_mask(void)
{
	cr_assert_eq(sched_getaffinity(0, sizeof(test_original), &test_original), 0);
}

static void test_restore_mask(void)
{
	sched_setaffinity(0, sizeof(test_original), &test_original);
}

TestSuite(cpuset, .init = test_save_mask, .fini = test_restore_mask);

/* The CPUs of the original mask, ascending. */
static unsigned test_original_cpus(int *cpus)
{
	unsigned n = 0;

	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (CPU_ISSET(cpu, &test_original))
			cpus[n++] = cpu;
	}
	return n;
}

static void test_narrow_to(const int *cpus, unsigned n)
{
	cpu_set_t mask;

	CPU_ZERO(&mask);
	for (unsigned i = 0; i < n; i++)
		CPU_SET(cpus[i], &mask);
	cr_assert_eq(sched_setaffinity(0, sizeof(mask), &mask), 0, "cannot narrow the mask");
}

static void test_expect_cpus(const int *want, unsigned n)
{
	static struct cpuset got;

	cpuset_allowed(&got);
	cr_assert_eq(got.count, n, "%u CPUs, want %u", got.count, n);
	for (unsigned i = 0; i < n; i++)
		cr_expect_eq(got.cpus[i], want[i], "cpus[%u] = %d, want %d", i, got.cpus[i],
			     want[i]);
}

Test(cpuset, the_whole_mask_in_order)
{
	static int cpus[CPU_SETSIZE];
	unsigned n = test_original_cpus(cpus);

	cr_assert_gt(n, 0);
	test_expect_cpus(cpus, n);
}

/* `taskset -c N ferryd`: one CPU, and not necessarily CPU 0. */
Test(cpuset, one_cpu_the_last_allowed)
{
	static int cpus[CPU_SETSIZE];
	unsigned n = test_original_cpus(cpus);

	test_narrow_to(&cpus[n - 1], 1);
	test_expect_cpus(&cpus[n - 1], 1);
}

/* Every allowed CPU but the first: the i-th CPU of the mask is not CPU i. */
Test(cpuset, all_but_the_first)
{
	static int cpus[CPU_SETSIZE];
	unsigned n = test_original_cpus(cpus);

	if (n < 2)
		cr_skip_test("needs two CPUs, the process may use %u", n);
	test_narrow_to(cpus + 1, n - 1);
	test_expect_cpus(cpus + 1, n - 1);
}

/* Every other allowed CPU: holes in the mask keep the order. */
Test(cpuset, every_other_cpu)
{
	static int cpus[CPU_SETSIZE];
	static int every_other[CPU_SETSIZE];
	unsigned n = test_original_cpus(cpus), m = 0;

	if (n < 3)
		cr_skip_test("needs three CPUs, the process may use %u", n);
	for (unsigned i = 0; i < n; i += 2)
		every_other[m++] = cpus[i];
	test_narrow_to(every_other, m);
	test_expect_cpus(every_other, m);
}
