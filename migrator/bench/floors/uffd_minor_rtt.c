/*
 * The floor for one 4 KiB MINOR-fault round trip on shmem, in plain C.
 *
 * A fallocated memfd is mapped twice: the guest view (registered MINOR) and the alias view.
 * T toucher threads each read one word of their own random, disjoint pages in the guest view;
 * one handler thread polls the userfaultfd, reads uffd_msg in batches, writes the 4 KiB page
 * through the alias view and UFFDIO_CONTINUEs it. Each toucher times its own accesses.
 *
 *   gcc -O2 -pthread -o uffd_minor_rtt uffd_minor_rtt.c
 *   ./uffd_minor_rtt --pages 4096 --threads 1 [--handler-cpu C --toucher-cpu C]
 *
 * Without pinning the scheduler decides whether handler and toucher share a CPU, and on a VM
 * the cross-CPU wake-up costs several times the rest of the round trip; pin to compare.
 *
 * Prints {"p50_ns","p99_ns","faults","faults_per_s"} (latency per touch, CLOCK_MONOTONIC).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static char *guest, *alias;
static int uffd;
static long npages, nthreads;
static long *order;       /* a random permutation of page indices */
static uint64_t *lat;     /* one latency per page, indexed by position in order */
static volatile long resolved;
static int handler_cpu = -1, toucher_cpu = -1;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void pin(int cpu)
{
	cpu_set_t set;
	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
		die("pthread_setaffinity_np");
}

static void *toucher(void *arg)
{
	long t = (long)arg;
	uint64_t sum = 0;
	pin(toucher_cpu);
	for (long i = t; i < npages; i += nthreads) {  /* disjoint pages per thread */
		volatile uint64_t *p = (volatile uint64_t *)(guest + order[i] * PAGE);
		uint64_t t0 = now_ns();
		sum += *p;
		lat[i] = now_ns() - t0;
	}
	return (void *)(uintptr_t)sum;
}

static void *handler(void *arg)
{
	static char page[PAGE];
	struct uffd_msg msgs[64];
	pin(handler_cpu);
	memset(page, 0x5a, sizeof(page));
	while (resolved < npages) {
		struct pollfd pfd = { .fd = uffd, .events = POLLIN };
		if (poll(&pfd, 1, 1000) <= 0)
			continue;
		ssize_t n = read(uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN)
				continue;
			die("read uffd");
		}
		for (long i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t addr = msgs[i].arg.pagefault.address & ~(PAGE - 1);
			memcpy(alias + (addr - (uint64_t)guest), page, PAGE);
			struct uffdio_continue c = { .range = { .start = addr, .len = PAGE } };
			if (ioctl(uffd, UFFDIO_CONTINUE, &c) < 0 && errno != EEXIST)
				die("UFFDIO_CONTINUE");
			resolved++;
		}
	}
	return arg;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	npages = 4096;
	nthreads = 1;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--pages"))
			npages = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--threads"))
			nthreads = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--handler-cpu"))
			handler_cpu = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--toucher-cpu"))
			toucher_cpu = atoi(argv[i + 1]);
	}
	size_t size = npages * PAGE;
	int fd = memfd_create("minor-rtt", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, size) < 0)
		die("memfd");
	/* MINOR faults fire only for pages already in the page cache. */
	if (fallocate(fd, 0, 0, size) < 0)
		die("fallocate");
	guest = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	alias = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (guest == MAP_FAILED || alias == MAP_FAILED)
		die("mmap");

	uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		die("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MINOR_SHMEM };
	if (ioctl(uffd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)guest, .len = size },
		.mode = UFFDIO_REGISTER_MODE_MINOR,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER");

	order = malloc(npages * sizeof(*order));
	lat = malloc(npages * sizeof(*lat));
	srand(1);
	for (long i = 0; i < npages; i++)
		order[i] = i;
	for (long i = npages - 1; i > 0; i--) {
		long j = rand() % (i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}

	pthread_t h, *ts = calloc(nthreads, sizeof(*ts));
	pthread_create(&h, NULL, handler, NULL);
	uint64_t t0 = now_ns();
	for (long t = 0; t < nthreads; t++)
		pthread_create(&ts[t], NULL, toucher, (void *)t);
	for (long t = 0; t < nthreads; t++)
		pthread_join(ts[t], NULL);
	double seconds = (now_ns() - t0) / 1e9;
	pthread_join(h, NULL);

	qsort(lat, npages, sizeof(*lat), cmp_u64);
	printf("{\"p50_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64 ", \"faults\": %ld, \"faults_per_s\": %.0f}\n",
	       lat[npages / 2], lat[npages * 99 / 100], (long)resolved, resolved / seconds);
	return 0;
}
