/*
 * The guest's access rate once its memory is all there: random 8-byte loads over the whole
 * of it, no clock inside the loop. With 4 KiB mappings most loads of a large guest miss the
 * TLB and walk the page tables; with 2 MiB (PMD) or 1 GiB mappings far fewer do. This is what
 * a guest keeps paying after postcopy for memory left mapped at 4 KiB.
 */
#include <stdint.h>

uint64_t random_reads(const uint8_t *base, uint64_t size, uint64_t n, uint64_t seed)
{
	uint64_t x = seed | 1, sum = 0, words = size / 8;
	for (uint64_t i = 0; i < n; i++) {
		x ^= x << 13;  /* xorshift64: cheap beside a TLB miss */
		x ^= x >> 7;
		x ^= x << 17;
		sum += ((const volatile uint64_t *)base)[x % words];
	}
	return sum;
}
