/* The clock and the latency histograms every loop fills (CLOCK_MONOTONIC: comparable across
 * processes on one host, so a guest's access times line up with the destination's). */
#include <time.h>

#include "dataplane.h"

uint64_t dp_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

void dp_observe(struct dp_histogram *h, uint64_t ns)
{
	int i = 0;
	while (i < DP_HIST_BUCKETS - 1 && ns > h->bounds_ns[i])
		i++;
	__atomic_add_fetch(&h->counts[i], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->sum_ns, ns, __ATOMIC_RELAXED);
}
