/* CLOCK_MONOTONIC in ns: the one clock of the guest's touch loop and of the data plane's
 * stamps, the same in every process on a host, so their times line up. */
#ifndef MIGRATOR_MONOTONIC_H
#define MIGRATOR_MONOTONIC_H

#include <stdint.h>
#include <time.h>

static inline uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

#endif
