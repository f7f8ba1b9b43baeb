/*
 * cpuset — the CPUs this process may run on, in order: its affinity mask,
 * as narrowed by taskset or a cgroup cpuset, not every CPU the machine has
 * online. The default worker count (config.c) and the workers' pinning
 * (worker.c) both read it here, so that ferryd starts one worker per CPU
 * it may use and never pins one to a CPU it may not.
 */
#ifndef FERRY_CORE_CPUSET_H
#define FERRY_CORE_CPUSET_H

#include <sched.h>

struct cpuset {
	unsigned count;        /* at least 1 */
	int cpus[CPU_SETSIZE]; /* cpus[0 .. count-1], ascending */
};

/*
 * Read the calling thread's affinity mask (the process's, from the main
 * thread before any pinning) into out. When it cannot be read (a kernel
 * with more possible CPUs than a cpu_set_t holds), the online CPUs,
 * numbered from 0, stand in for it.
 */
void cpuset_allowed(struct cpuset *out);

#endif
