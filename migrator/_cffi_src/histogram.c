/* The latency histograms every loop fills. */
#include "dataplane.h"

void dp_observe(struct dp_histogram *h, uint64_t ns)
{
	int i = 0;
	while (i < DP_HIST_BUCKETS - 1 && ns > h->bounds_ns[i])
		i++;
	__atomic_add_fetch(&h->counts[i], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->sum_ns, ns, __ATOMIC_RELAXED);
}
