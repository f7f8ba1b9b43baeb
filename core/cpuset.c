#include "core/cpuset.h"

#include <unistd.h>

void cpuset_allowed(struct cpuset *out)
{
	cpu_set_t mask;

	out->count = 0;
	if (sched_getaffinity(0, sizeof(mask), &mask) == 0) {
		for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
			if (CPU_ISSET(cpu, &mask))
				out->cpus[out->count++] = cpu;
		}
	}
	if (out->count > 0)
		return;
	long online = sysconf(_SC_NPROCESSORS_ONLN);

	if (online < 1)
		online = 1;
	if (online > CPU_SETSIZE)
		online = CPU_SETSIZE;
	for (int cpu = 0; cpu < online; cpu++)
		out->cpus[out->count++] = cpu;
}
