/*
 * ref-fault: the floor of a 4 KiB postcopy fault as the vCPU sees it, done in C.
 *
 * The guest's T toucher threads each read one word of K pages of their own (random, never the
 * same page twice) in a fallocated shmem memfd's guest view, registered for MINOR faults, and
 * time every access. The destination's handler threads poll the userfaultfd, read the faults in
 * batches, send one request per data page of the batch at once on their own urgent connection,
 * receive each reply (header and page, one recvmsg) straight into the alias view, verify the
 * page's XXH3-64 and UFFDIO_CONTINUE it, which wakes its toucher. A zero page is verified and
 * installed with no request, as migrator does: it never travels.
 *
 * With --bulk-bytes B, a second connection streams a region of B bytes after the faulted one,
 * for as long as the touchers run, as ref_bulk pulls: 4 MiB chunks, the next requested before
 * the current one is finished, each page verified as it lands, each chunk CONTINUEd; what the
 * background pull does at full speed while faults happen. At the end of the region the guest
 * unmaps it and the stream goes round again. The bulk thread runs niced (--bulk-nice, default
 * 10), as migrator's background loop does, so that a fault's handler gets a CPU first.
 *
 *   ref_fault [--kinds FILE | --pages N] [--touches K] [--threads T] [--handlers H]
 *             [--data-only] [--bulk-bytes B] [--bulk-nice N] [--seed S]
 *
 * --kinds: the manifest's page kinds (one byte a page) of the faulted region; --data-only:
 * touch only data pages (each fault then costs a round trip to the source).
 * Prints one JSON object: the composite per-touch latency (p50_ns, p99_ns, ...) and faults/s.
 */
#include "floor.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define CHUNK_PAGES 1024UL  /* 4 MiB, the background pull's chunk */
#define WINDOW 2            /* chunks requested and not yet installed */
#define BATCH 64

struct result {
	uint64_t faults, zero_faults, mismatched, bulk_bytes, bulk_ns, bulk_laps;
};

static struct image im;
static struct memory mem;
static struct parties parties;
static int nhandlers, bulk_nice;
static size_t fault_pages, bulk_pages;
static volatile int stop, bulk_started;
static struct result res;
static pthread_mutex_t res_lock = PTHREAD_MUTEX_INITIALIZER;

/* --- the destination -------------------------------------------------------------------- */
static void *handle_faults(void *arg)
{
	int fd = source_connect(parties.port);
	struct uffd_msg msgs[BATCH];
	struct request rq[BATCH];
	struct result mine = { 0 };
	uint32_t id = 0;
	(void)arg;
	while (!stop) {
		struct pollfd pfd = { .fd = mem.uffd, .events = POLLIN };
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		ssize_t n = read(mem.uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN)  /* another handler took them */
				continue;
			die("read userfaultfd");
		}
		size_t wanted = 0;
		for (size_t i = 0; i < n / sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t offset = (msgs[i].arg.pagefault.address - (uint64_t)mem.guest) & ~(PAGE - 1);
			mine.faults++;
			if (im.kinds[offset / PAGE] == KIND_ZERO) {
				mine.zero_faults++;
				mine.mismatched += memory_verify(&mem, &im, offset / PAGE, 1);
				memory_continue(&mem, offset, PAGE);
				continue;
			}
			rq[wanted++] = (struct request){ id++, offset, PAGE };
		}
		if (!wanted)
			continue;
		send_all(fd, rq, wanted * sizeof(rq[0]));  /* the whole batch in flight at once */
		for (size_t i = 0; i < wanted; i++) {
			recv_reply(fd, &rq[i], mem.alias + rq[i].offset);
			mine.mismatched += memory_verify(&mem, &im, rq[i].offset / PAGE, 1);
			memory_continue(&mem, rq[i].offset, PAGE);
		}
	}
	close(fd);
	pthread_mutex_lock(&res_lock);
	res.faults += mine.faults;
	res.zero_faults += mine.zero_faults;
	res.mismatched += mine.mismatched;
	pthread_mutex_unlock(&res_lock);
	return NULL;
}

static struct chunk request_chunk(int fd, uint64_t seq)
{
	size_t first = fault_pages + (seq % (bulk_pages / CHUNK_PAGES)) * CHUNK_PAGES;
	return chunk_request(fd, &im, first, first + CHUNK_PAGES, (uint32_t)seq);
}

static void *stream_bulk(void *arg)
{
	struct channel *ch = arg;
	int fd = source_connect(parties.port);
	uint64_t requested = 0, done = 0, chunks = bulk_pages / CHUNK_PAGES, t0 = now_ns();
	struct chunk ring[WINDOW];
	setpriority(PRIO_PROCESS, 0, bulk_nice);  /* this thread alone */
	for (; requested < WINDOW; requested++)
		ring[requested % WINDOW] = request_chunk(fd, requested);
	while (!stop) {
		struct chunk c = ring[done % WINDOW];
		if (done && done % chunks == 0) {  /* round again: the guest unmaps the region first */
			chan_send(ch->zap[1], "Z", 1);
			char ack;
			chan_recv(ch->zap[1], &ack, 1);
			res.bulk_laps++;
		}
		res.mismatched += chunk_receive(fd, &c, &mem, &im, 1, &res.bulk_bytes);
		ring[requested % WINDOW] = request_chunk(fd, requested);
		requested++;
		res.mismatched += memory_verify_zeros(&mem, &im, c.first, c.last - c.first);
		memory_continue(&mem, c.first * PAGE, (c.last - c.first) * PAGE);
		done++;
		bulk_started = 1;
	}
	res.bulk_ns = now_ns() - t0;
	close(fd);  /* chunks still in flight are dropped with the connection */
	return NULL;
}

static void destination(struct channel *ch, void *arg)
{
	pthread_t bulk, handlers[16];
	(void)arg;
	memory_map_alias(&mem);
	if (bulk_pages) {
		pthread_create(&bulk, NULL, stream_bulk, ch);
		while (!bulk_started)  /* at full speed before the first fault */
			usleep(1000);
	}
	for (int h = 0; h < nhandlers; h++)
		pthread_create(&handlers[h], NULL, handle_faults, NULL);
	usleep(10000);  /* let the handlers connect and reach poll() */
	chan_send(ch->ctl[1], "R", 1);
	char cmd;
	chan_recv(ch->ctl[1], &cmd, 1);
	stop = 1;
	for (int h = 0; h < nhandlers; h++)
		pthread_join(handlers[h], NULL);
	if (bulk_pages)
		pthread_join(bulk, NULL);
	chan_send(ch->ctl[1], &res, sizeof(res));
}

/* --- the guest -------------------------------------------------------------------------- */
static long nthreads, touches;
static size_t *order;  /* the pages touched, thread t's from t * touches */
static uint64_t *lat, *began, *ended;
static volatile int go, finished;

static void *toucher(void *arg)
{
	long t = (long)arg;
	uint64_t sum = 0;
	while (!go)
		;
	began[t] = now_ns();
	for (long i = t * touches; i < (t + 1) * touches; i++) {
		volatile uint64_t *p = (volatile uint64_t *)(mem.guest + order[i] * PAGE);
		uint64_t t0 = now_ns();
		sum += *p;
		lat[i] = now_ns() - t0;
	}
	ended[t] = now_ns();
	__atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
	return (void *)(uintptr_t)sum;
}

/* Serve the bulk stream's requests to unmap its region until `until` is readable or, if it
 * is -1, until every toucher has finished. */
static void serve_zaps(struct channel *ch, int until)
{
	for (;;) {
		if (until < 0 && finished == nthreads)
			return;
		struct pollfd pfd[2] = { { ch->zap[0], POLLIN, 0 }, { until, POLLIN, 0 } };
		if (poll(pfd, until < 0 ? 1 : 2, 10) <= 0)
			continue;
		/* the results first: once they are sent the destination exits, closing its end of zap */
		if (until >= 0 && (pfd[1].revents & POLLIN))
			return;
		if (pfd[0].revents & (POLLIN | POLLHUP)) {
			char z;
			chan_recv(ch->zap[0], &z, 1);
			if (madvise(mem.guest + fault_pages * PAGE, bulk_pages * PAGE, MADV_DONTNEED) < 0)
				die("madvise");
			chan_send(ch->zap[0], "K", 1);
		}
	}
}

static void pick_pages(long seed, int data_only)
{
	size_t *candidates = malloc(fault_pages * sizeof(*candidates)), n = 0;
	for (size_t p = 0; p < fault_pages; p++)
		if (!data_only || im.kinds[p] != KIND_ZERO)
			candidates[n++] = p;
	if ((size_t)(nthreads * touches) > n) {
		errno = EINVAL;
		die("more touches than pages to touch");
	}
	srandom(seed);
	for (size_t i = 0; i < (size_t)(nthreads * touches); i++) {  /* a partial Fisher-Yates */
		size_t j = i + ((size_t)random() << 31 ^ random()) % (n - i), x = candidates[i];
		candidates[i] = candidates[j];
		candidates[j] = x;
	}
	order = candidates;
}

int main(int argc, char **argv)
{
	const char *kinds = arg_str(argc, argv, "--kinds", NULL);
	touches = arg_long(argc, argv, "--touches", 2000);
	nthreads = arg_long(argc, argv, "--threads", 1);
	nhandlers = arg_long(argc, argv, "--handlers", 1);
	bulk_pages = arg_long(argc, argv, "--bulk-bytes", 0) / PAGE;
	bulk_nice = arg_long(argc, argv, "--bulk-nice", 10);
	if (nthreads < 1 || touches < 1 || nhandlers < 1 || nhandlers > 16 || bulk_pages % CHUNK_PAGES) {
		errno = EINVAL;
		die("arguments (--bulk-bytes is a multiple of 4 MiB, --handlers at most 16)");
	}
	fault_pages = kinds ? file_size(kinds) : (size_t)arg_long(argc, argv, "--pages", 65536);
	image_load(&im, fault_pages + bulk_pages, kinds);  /* the bulk region follows, all data */
	pick_pages(arg_long(argc, argv, "--seed", 1), arg_flag(argc, argv, "--data-only"));
	memory_create(&mem, "shmem", im.pages * PAGE);

	parties_start(&parties, &im, destination, NULL);
	struct channel *ch = &parties.ch;

	lat = malloc(nthreads * touches * sizeof(*lat));
	began = calloc(nthreads, sizeof(*began));
	ended = calloc(nthreads, sizeof(*ended));
	pthread_t *ts = calloc(nthreads, sizeof(*ts));
	for (long t = 0; t < nthreads; t++)
		pthread_create(&ts[t], NULL, toucher, (void *)t);
	go = 1;
	serve_zaps(ch, -1);
	for (long t = 0; t < nthreads; t++)
		pthread_join(ts[t], NULL);
	chan_send(ch->ctl[0], "S", 1);
	serve_zaps(ch, ch->ctl[0]);
	struct result r;
	chan_recv(ch->ctl[0], &r, sizeof(r));
	parties_stop(&parties);

	uint64_t first = began[0], last = ended[0], sum = 0;
	size_t n = nthreads * touches, zero = 0;
	for (long t = 1; t < nthreads; t++) {
		first = began[t] < first ? began[t] : first;
		last = ended[t] > last ? ended[t] : last;
	}
	for (size_t i = 0; i < n; i++) {
		sum += lat[i];
		zero += im.kinds[order[i]] == KIND_ZERO;
	}
	sort_u64(lat, n);
	double seconds = (last - first) / 1e9;
	printf("{\"program\": \"ref-fault\", \"backing\": \"shmem\", \"threads\": %ld, "
	       "\"handlers\": %d, \"touches\": %zu, \"zero_touches\": %zu, \"faults\": %lu, "
	       "\"zero_faults\": %lu, \"mismatched\": %lu, \"p50_ns\": %lu, \"p90_ns\": %lu, "
	       "\"p99_ns\": %lu, \"max_ns\": %lu, \"mean_ns\": %.0f, \"seconds\": %.6f, "
	       "\"faults_per_s\": %.1f, ",
	       nthreads, nhandlers, n, zero, r.faults, r.zero_faults, r.mismatched,
	       quantile_u64(lat, n, 0.5), quantile_u64(lat, n, 0.9), quantile_u64(lat, n, 0.99),
	       lat[n - 1], (double)sum / n, seconds, n / seconds);
	if (bulk_pages)
		printf("\"bulk\": {\"region_bytes\": %lu, \"nice\": %d, \"bytes\": %lu, "
		       "\"seconds\": %.6f, \"bytes_per_s\": %.0f, \"laps\": %lu}}\n",
		       bulk_pages * PAGE, bulk_nice, r.bulk_bytes, r.bulk_ns / 1e9,
		       r.bulk_bytes / (r.bulk_ns / 1e9), r.bulk_laps);
	else
		printf("\"bulk\": null}\n");
	return 0;
}
