/*
 * Corruption injection on the source's side of a page stream (migrator source
 * --inject-corruption RATE, --inject-corruption-pages LIST): some 4 KiB pages of an OK reply
 * carry wrong bytes, so the destination's verification, refetch and failure paths run.
 *
 * A page listed as always wrong is wrong every time it is served. Any other page is wrong
 * with probability RATE, once per session: the next request for it is served right, so a
 * destination that refetches what does not match its digest always completes.
 *
 * The kinds, in turn: a flipped bit; another offset's page (a bit flipped too if its bytes
 * happen to be the same); a stale version (the page before it was first written: zeros;
 * zero pages never travel, so a served page is never all zero); and, for every 16th random
 * one, a short frame: the reply header with the right length, half the page, then the
 * connection closes (-ECONNABORTED), as a source dying mid-reply would.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "dataplane.h"

#define SHORT_EVERY 16  /* one random injection in this many is a short frame */

static uint64_t next_random(struct src_stream *s)
{
	uint64_t x = s->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	s->rng = x;
	return x;
}

/* The kind of wrong page p gets, or -1: served right. */
static int choose(struct src_stream *s, uint64_t p)
{
	uint64_t n = s->injected[0] + s->injected[1] + s->injected[2] + s->injected[3];
	if (s->always_wrong && s->always_wrong[p])
		return (int)(n % 3);  /* never short: a reconnect would start its checks over */
	if (!s->corrupt_threshold || (uint32_t)next_random(s) >= s->corrupt_threshold)
		return -1;
	if (__atomic_exchange_n(&s->served_wrong[p], 1, __ATOMIC_RELAXED))
		return -1;  /* served wrong once already: this is its refetch */
	return n % SHORT_EVERY == SHORT_EVERY - 1 ? SRC_SHORT_FRAME : (int)(n % 3);
}

/* Fill page with a wrong version of image page p. */
static void make_wrong(struct src_stream *s, uint64_t p, int kind, uint8_t *page)
{
	const uint8_t *right = s->image + p * DP_PAGE;
	uint64_t pages = s->size / DP_PAGE;
	uint64_t bit = next_random(s) % (DP_PAGE * 8);
	switch (kind) {
	case SRC_OTHER_PAGE:
		memcpy(page, s->image + ((p + pages / 2 + 1) % pages) * DP_PAGE, DP_PAGE);
		if (memcmp(page, right, DP_PAGE) == 0)
			page[bit / 8] ^= 1u << (bit % 8);
		break;
	case SRC_STALE:
		memset(page, 0, DP_PAGE);
		break;
	default:
		memcpy(page, right, DP_PAGE);
		page[bit / 8] ^= 1u << (bit % 8);
	}
}

/* An OK reply to r, its pages straight from the image except those chosen to be wrong. */
int src_send_injected(struct src_stream *s, const struct dp_request *r)
{
	uint8_t page[DP_PAGE];
	struct dp_reply h = { r->id, DP_STATUS_OK, 0, r->offset, r->length };
	struct iovec iov[2] = { { &h, sizeof(h) }, { NULL, 0 } };
	int rc = src_write_all(s, iov, 1);
	uint64_t first = r->offset / DP_PAGE, end = first + r->length / DP_PAGE, good = first;
	for (uint64_t p = first; p < end && !rc; p++) {
		int kind = choose(s, p);
		if (kind < 0)
			continue;
		iov[0] = (struct iovec){ (void *)(s->image + good * DP_PAGE), (p - good) * DP_PAGE };
		make_wrong(s, p, kind, page);
		iov[1] = (struct iovec){ page, kind == SRC_SHORT_FRAME ? DP_PAGE / 2 : DP_PAGE };
		rc = src_write_all(s, iov, 2);
		s->injected[kind]++;
		if (!rc && kind == SRC_SHORT_FRAME)
			rc = -ECONNABORTED;
		good = p + 1;
	}
	if (!rc && good < end) {
		iov[0] = (struct iovec){ (void *)(s->image + good * DP_PAGE), (end - good) * DP_PAGE };
		rc = src_write_all(s, iov, 1);
	}
	if (rc == 0) {
		s->requests++;
		s->bytes += r->length;
	}
	return rc;
}
