/* C side of cffi_uffd: the kernel header, the uapi additions it lacks, and the hot loops. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>

/*
 * linux-libc-dev 6.1 predates these; values and layouts are those of the upstream
 * include/uapi/linux/userfaultfd.h (6.18). The tests prove them against the running kernel.
 */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1<<13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1<<14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1<<15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1<<16)
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1<<1)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif
#ifndef UFFDIO_MOVE_MODE_DONTWAKE
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1<<0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1<<1)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef UFFDIO_POISON_MODE_DONTWAKE
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1<<0)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC 0xAA
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif
#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_SPLIT
#define MADV_SPLIT 26  /* HGM proposal (never merged); EINVAL on kernels without it */
#endif

/* One uffd_msg flattened, so Python never touches the packed union. */
struct uffd_event {
	uint8_t event;
	uint64_t flags;     /* pagefault flags */
	uint64_t address;   /* pagefault address, remap from, remove start */
	uint32_t ptid;      /* pagefault thread id (UFFD_FEATURE_THREAD_ID) */
	uint64_t arg1;      /* remap to, remove end */
	uint64_t arg2;      /* remap len */
	uint32_t ufd;       /* fork: the child's new userfaultfd */
};

static int uffd_open_syscall(int flags)
{
	long fd = syscall(SYS_userfaultfd, flags);
	return fd < 0 ? -errno : (int)fd;
}

static int uffd_open_dev(const char *path, int flags)
{
	int dev = open(path, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -errno;
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	int err = errno;
	close(dev);
	return fd < 0 ? -err : fd;
}

static int uffd_ioctl(int fd, unsigned long request, void *arg)
{
	return ioctl(fd, request, arg) < 0 ? -errno : 0;
}

/*
 * Wait up to timeout_ms (-1: forever, 0: not at all) and read up to max events.
 * Returns the count, 0 on timeout, or -errno. The GIL is released around this call.
 */
static int uffd_read_events(int fd, struct uffd_event *out, int max, int timeout_ms)
{
	struct uffd_msg msgs[64];
	if (max > 64)
		max = 64;
	if (timeout_ms != 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int r = poll(&pfd, 1, timeout_ms);
		if (r < 0)
			return -errno;
		if (r == 0)
			return 0;
		if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
			return -EBADF;
	}
	ssize_t n = read(fd, msgs, sizeof(msgs[0]) * max);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	int count = n / sizeof(msgs[0]);
	for (int i = 0; i < count; i++) {
		struct uffd_msg *m = &msgs[i];
		struct uffd_event *e = &out[i];
		memset(e, 0, sizeof(*e));
		e->event = m->event;
		switch (m->event) {
		case UFFD_EVENT_PAGEFAULT:
			e->flags = m->arg.pagefault.flags;
			e->address = m->arg.pagefault.address;
			e->ptid = m->arg.pagefault.feat.ptid;
			break;
		case UFFD_EVENT_FORK:
			e->ufd = m->arg.fork.ufd;
			break;
		case UFFD_EVENT_REMAP:
			e->address = m->arg.remap.from;
			e->arg1 = m->arg.remap.to;
			e->arg2 = m->arg.remap.len;
			break;
		case UFFD_EVENT_REMOVE:
		case UFFD_EVENT_UNMAP:
			e->address = m->arg.remove.start;
			e->arg1 = m->arg.remove.end;
			break;
		}
	}
	return count;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* A vCPU's touch of poisoned memory: which access, where, and how much the kernel took away. */
struct sigbus_hit {
	uint64_t index;    /* the access that faulted */
	uint64_t address;  /* si_addr */
	int32_t lsb;       /* si_addr_lsb: log2 of the poisoned extent (12: 4 KiB, 21: 2 MiB, 30: 1 GiB) */
	int32_t code;      /* si_code: BUS_MCEERR_AR for memory errors */
};

static __thread sigjmp_buf touch_env;
static __thread volatile int touch_armed;
static __thread volatile uint64_t touch_bus_addr;
static __thread volatile int32_t touch_bus_lsb, touch_bus_code;
static struct sigaction previous_sigbus;

/*
 * Like a VMM that turns a host SIGBUS into a machine check for the guest: note the fault and
 * jump back into the touch loop. A SIGBUS anywhere else gets the previous disposition back
 * and the faulting access, re-executed, raises it again.
 */
static void on_sigbus(int sig, siginfo_t *info, void *context)
{
	(void)sig; (void)context;
	if (touch_armed) {
		touch_armed = 0;
		touch_bus_addr = (uint64_t)(uintptr_t)info->si_addr;
		touch_bus_code = info->si_code;
		touch_bus_lsb = (info->si_code == BUS_MCEERR_AR || info->si_code == BUS_MCEERR_AO)
				? info->si_addr_lsb : 0;
		siglongjmp(touch_env, 1);
	}
	sigaction(SIGBUS, &previous_sigbus, NULL);
}

/* SA_NODEFER: siglongjmp(.., 0) does not restore the mask, so SIGBUS must not be blocked. */
static int catch_sigbus(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, &previous_sigbus) < 0 ? -errno : 0;
}

/*
 * A synthetic vCPU: touch each address in turn (store values[i] where writes[i], else load),
 * recording each access's latency in ns. Returns a checksum of the loaded words so the loads
 * cannot be optimised away. Addresses must be 8-byte aligned. With hits (catch_sigbus() done),
 * an access that gets SIGBUS is recorded in hits (up to max_hits, *nhits counts all) and the
 * loop moves on.
 */
static uint64_t touch_loop(const uint64_t *addrs, const uint8_t *writes, const uint64_t *values,
			   size_t n, uint64_t *latency_ns, struct sigbus_hit *hits, size_t max_hits,
			   size_t *nhits)
{
	volatile uint64_t sum = 0;
	volatile size_t i;
	volatile uint64_t t0;
	size_t found = 0;
	for (i = 0; i < n; i++) {
		volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)addrs[i];
		t0 = now_ns();
		if (hits) {
			if (sigsetjmp(touch_env, 0)) {
				latency_ns[i] = now_ns() - t0;
				if (found < max_hits) {
					hits[found].index = i;
					hits[found].address = touch_bus_addr;
					hits[found].lsb = touch_bus_lsb;
					hits[found].code = touch_bus_code;
				}
				found++;
				continue;
			}
			touch_armed = 1;
		}
		if (writes && writes[i])
			*p = values ? values[i] : (uint64_t)i;
		else
			sum += *p;
		touch_armed = 0;
		latency_ns[i] = now_ns() - t0;
	}
	if (nhits)
		*nhits = found;
	return sum;
}

static void *map_shared(size_t length, int prot, int fd, long offset)
{
	void *p = mmap(NULL, length, prot, MAP_SHARED, fd, offset);
	return p == MAP_FAILED ? NULL : p;
}

static void *map_anonymous(size_t length)
{
	void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static int unmap(void *addr, size_t length)
{
	return munmap(addr, length) < 0 ? -errno : 0;
}

static int advise(void *addr, size_t length, int advice)
{
	return madvise(addr, length, advice) < 0 ? -errno : 0;
}

static int allocate(int fd, int mode, long offset, long length)
{
	return fallocate(fd, mode, offset, length) < 0 ? -errno : 0;
}

static int last_errno(void)
{
	return errno;
}
