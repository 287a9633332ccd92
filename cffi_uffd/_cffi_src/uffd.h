/* C side of cffi_uffd: the kernel header, the uapi additions it lacks, and thin syscall wrappers
 * that return -errno (the batched event read is the only loop). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
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
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_SPLIT
#define MADV_SPLIT 26  /* HGM proposal (never merged); EINVAL on kernels without it */
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  /* 6.1 */
#endif
#ifndef __NR_process_madvise
#define __NR_process_madvise 440  /* 5.10; MADV_COLLAPSE through it: 6.1 */
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

static void *map_shared(size_t length, int prot, int fd, long offset)
{
	void *p = mmap(NULL, length, prot, MAP_SHARED, fd, offset);
	return p == MAP_FAILED ? NULL : p;
}

/* MAP_SHARED at an address aligned to `align` (a power of two): a PMD can map a THP folio
 * only where the virtual address and the file offset agree modulo its size, and shmem only
 * aligns its mappings itself when its huge setting says so. Reserve, place, trim. */
static void *map_shared_aligned(size_t length, int prot, int fd, long offset, size_t align)
{
	uint8_t *area = mmap(NULL, length + align, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (area == MAP_FAILED)
		return NULL;
	uintptr_t at = ((uintptr_t)area + align - 1) & ~(uintptr_t)(align - 1);
	void *p = mmap((void *)at, length, prot, MAP_SHARED | MAP_FIXED, fd, offset);
	if (p == MAP_FAILED) {
		int err = errno;
		munmap(area, length + align);
		errno = err;
		return NULL;
	}
	if (at > (uintptr_t)area)
		munmap(area, at - (uintptr_t)area);
	if ((uint8_t *)area + length + align > (uint8_t *)at + length)
		munmap((uint8_t *)at + length, (uintptr_t)area + length + align - (at + length));
	return p;
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

/* madvise in another process's address space (pidfd); returns bytes advised or -errno */
static long advise_process(int pidfd, void *addr, size_t length, int advice)
{
	struct iovec iov = { addr, length };
	long rc = syscall(__NR_process_madvise, pidfd, &iov, 1UL, advice, 0U);
	return rc < 0 ? -errno : rc;
}

static int allocate(int fd, int mode, long offset, long length)
{
	return fallocate(fd, mode, offset, length) < 0 ? -errno : 0;
}

static int last_errno(void)
{
	return errno;
}
