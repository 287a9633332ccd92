/*
 * The `thp` mode's completion queue: each 2 MiB range of the guest's memory is queued once,
 * the moment its last granule is done (installed by either loop, or poisoned), so the
 * collapser (migrator/dest/collapse.py, its own thread, never a vCPU's fault path) can
 * MADV_COLLAPSE it while the rest of the memory still migrates.
 *
 * Why only complete ranges: MADV_COLLAPSE of a range whose page cache is already one 2 MiB
 * folio maps it by PMD in the target address space (collapse_pte_mapped_thp), skipping the
 * PTEs that are still empty. A page the destination never installed would then be mapped
 * without a fault: the guest would read whatever the page cache held, unverified.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "dataplane.h"
#include "dest_fetch.h"

int dp_collapse_init(struct dp_migration *m, uint64_t span, int eventfd)
{
	uint64_t ranges = (m->granules + span - 1) / span;
	m->range_done = calloc(ranges, sizeof(uint32_t));
	m->ranges_ready = calloc(ranges, sizeof(uint32_t));
	if (!m->range_done || !m->ranges_ready)
		return -ENOMEM;
	m->collapse_ranges = ranges;
	m->collapse_fd = eventfd;
	m->collapse_span = span;
	return 0;
}

void dp_collapse_free(struct dp_migration *m)
{
	m->collapse_span = 0;
	free(m->range_done);
	free(m->ranges_ready);
	m->range_done = NULL;
	m->ranges_ready = NULL;
}

/* Under m->lock: granule g has just become done. 1 when that completed its range (queued). */
int dp_collapse_count(struct dp_migration *m, uint64_t g)
{
	uint64_t r = g / m->collapse_span;
	uint64_t end = (r + 1) * m->collapse_span;
	uint64_t need = (end > m->granules ? m->granules : end) - r * m->collapse_span;
	if (++m->range_done[r] != need)
		return 0;
	m->ranges_ready[m->ranges_queued] = (uint32_t)r;
	__atomic_store_n(&m->ranges_queued, m->ranges_queued + 1, __ATOMIC_RELEASE);
	return 1;
}

/* Outside m->lock: wake the collapser. */
void dp_collapse_signal(struct dp_migration *m)
{
	uint64_t one = 1;
	if (m->collapse_fd >= 0 && write(m->collapse_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is full, the collapser is awake anyway */
	}
}
