/*
 * ref-huge: the floor of one whole-huge-page postcopy fault, done in C.
 *
 * The guest touches the first word of a hugetlb memfd's guest view (one huge page, registered
 * for MINOR faults) and times the access. The destination reads the fault, sends one request
 * per run of data pages in the huge page at once (zero pages never travel: the same bytes as
 * the figure's fault moves), receives each reply straight into the alias view, checking each
 * piece's pages against their XXH3-64 as soon as it lands, then checks the zero pages, then
 * UFFDIO_CONTINUEs the whole huge page, which wakes the guest.
 *
 *   ref_huge [--kinds FILE | --bytes N] [--backing hugetlb-1G|hugetlb-2M]
 *
 * --kinds: the manifest's page kinds (one byte a page) of the huge page faulted on; their
 * number makes the huge page (262144 for 1 GiB). Needs one free huge page of the backing.
 * Prints one JSON object: the fault as the guest saw it, and its stages.
 */
#include "floor.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct result {
	uint64_t read, received, verified, installed;  /* CLOCK_MONOTONIC, ns */
	uint64_t data_bytes, runs, mismatched;
};

static struct image im;
static struct memory mem;
static struct parties parties;

static void destination(struct channel *ch, void *arg)
{
	struct result r = { 0 };
	struct uffd_msg msg;
	(void)arg;
	memory_map_alias(&mem);
	int fd = source_connect(parties.port);
	chan_send(ch->ctl[1], "R", 1);

	for (;;) {
		struct pollfd pfd = { .fd = mem.uffd, .events = POLLIN };
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			die("poll userfaultfd");
		ssize_t got = read(mem.uffd, &msg, sizeof(msg));
		if (got == sizeof(msg) && msg.event == UFFD_EVENT_PAGEFAULT)
			break;
		if (got < 0 && errno != EAGAIN && errno != EINTR)
			die("read userfaultfd");
	}
	r.read = now_ns();
	size_t n;
	struct run *runs = image_data_runs(&im, 0, im.pages, &n);
	struct request *rq = malloc((n + 1) * sizeof(*rq));
	for (size_t i = 0; i < n; i++)
		rq[i] = (struct request){ (uint32_t)i, runs[i].offset, (uint32_t)runs[i].length };
	send_all(fd, rq, n * sizeof(*rq));  /* every run in flight at once */
	for (size_t i = 0; i < n; i++) {
		r.mismatched += recv_run_verified(fd, &rq[i], &mem, &im);
		r.data_bytes += rq[i].length;
	}
	r.received = now_ns();
	r.mismatched += memory_verify_zeros(&mem, &im, 0, im.pages);
	r.verified = now_ns();
	memory_continue(&mem, 0, mem.size);
	r.installed = now_ns();
	r.runs = n;
	close(fd);
	chan_send(ch->ctl[1], &r, sizeof(r));
}

int main(int argc, char **argv)
{
	const char *backing = arg_str(argc, argv, "--backing", "hugetlb-1G");
	image_from_args(&im, argc, argv, 1L << 30);
	memory_create(&mem, backing, im.pages * PAGE);
	if (mem.size != mem.page_size) {
		errno = EINVAL;
		die("the kinds (or --bytes) must make exactly one huge page of the backing");
	}

	parties_start(&parties, &im, destination, NULL);
	usleep(10000);  /* let the destination reach poll() */

	uint64_t touched = now_ns();
	volatile uint64_t word = *(volatile uint64_t *)mem.guest;
	uint64_t resumed = now_ns();
	(void)word;
	struct result r;
	chan_recv(parties.ch.ctl[0], &r, sizeof(r));
	parties_stop(&parties);

	printf("{\"program\": \"ref-huge\", \"backing\": \"%s\", \"bytes\": %zu, \"data_bytes\": %lu, "
	       "\"runs\": %lu, \"mismatched\": %lu, \"seconds\": %.6f, \"stage_seconds\": "
	       "{\"queue\": %.6f, \"fetch_and_verify\": %.6f, \"verify_zero_pages\": %.6f, "
	       "\"install\": %.6f, \"wake\": %.6f}}\n",
	       backing, mem.size, r.data_bytes, r.runs, r.mismatched, (resumed - touched) / 1e9,
	       (r.read - touched) / 1e9, (r.received - r.read) / 1e9, (r.verified - r.received) / 1e9,
	       (r.installed - r.verified) / 1e9,
	       /* CONTINUE wakes the guest inside the ioctl: it may resume before r.installed */
	       (int64_t)(resumed - r.installed) / 1e9);
	return 0;
}
