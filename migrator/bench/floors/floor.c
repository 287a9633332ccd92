/* The shared plumbing of the reference programs: see floor.h. */
#include "floor.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define POOL_PAGES 65536UL  /* 256 MiB: far beyond any cache, so no page is served warm */

/* --- arguments ---------------------------------------------------------------------------- */
const char *arg_str(int argc, char **argv, const char *name, const char *fallback)
{
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return fallback;
}

long arg_long(int argc, char **argv, const char *name, long fallback)
{
	const char *v = arg_str(argc, argv, name, NULL);
	return v ? strtol(v, NULL, 0) : fallback;
}

int arg_flag(int argc, char **argv, const char *name)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}

size_t file_size(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		die(path);
	return st.st_size;
}

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static const char *party = "guest";  /* which of the three processes this is */

void die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", party, what, errno ? strerror(errno) : "failed");
	exit(1);
}

/* --- the image ------------------------------------------------------------------------------ */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void image_load(struct image *im, size_t pages, const char *kinds_path)
{
	size_t known = 0;
	uint8_t *kinds = NULL;
	if (kinds_path) {
		int fd = open(kinds_path, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0)
			die(kinds_path);
		known = st.st_size;
		kinds = malloc(known ? known : 1);
		if (read(fd, kinds, known) != (ssize_t)known)
			die("read kinds");
		close(fd);
	}
	if (pages < known)
		pages = known;
	im->pages = pages;
	im->kinds = calloc(pages, 1);  /* beyond the file: data */
	if (kinds)
		memcpy(im->kinds, kinds, known);
	free(kinds);

	im->pool_pages = pages < POOL_PAGES ? pages : POOL_PAGES;
	im->pool = mmap(NULL, im->pool_pages * PAGE, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (im->pool == MAP_FAILED)
		die("mmap pool");
	uint64_t state = 42, *words = (uint64_t *)im->pool;
	for (size_t i = 0; i < im->pool_pages * PAGE / 8; i++)
		words[i] = splitmix64(&state);
	im->pool_digest = malloc(im->pool_pages * sizeof(uint64_t));
	for (size_t i = 0; i < im->pool_pages; i++)
		im->pool_digest[i] = XXH3_64bits(im->pool + i * PAGE, PAGE);
	static const char zero[PAGE];
	im->zero_digest = XXH3_64bits(zero, PAGE);
}

void image_from_args(struct image *im, int argc, char **argv, long default_bytes)
{
	const char *kinds = arg_str(argc, argv, "--kinds", NULL);
	image_load(im, kinds ? 0 : arg_long(argc, argv, "--bytes", default_bytes) / PAGE, kinds);
}

static const char *image_page(const struct image *im, size_t page)
{
	static const char zero[PAGE];
	return im->kinds[page] == KIND_ZERO ? zero : im->pool + (page % im->pool_pages) * PAGE;
}

uint64_t image_digest(const struct image *im, size_t page)
{
	return im->kinds[page] == KIND_ZERO ? im->zero_digest : im->pool_digest[page % im->pool_pages];
}

struct run *image_data_runs(const struct image *im, size_t first, size_t last, size_t *n)
{
	struct run *runs = malloc(((last - first) / 2 + 1) * sizeof(*runs));
	size_t count = 0, page = first;
	while (page < last) {
		if (im->kinds[page] == KIND_ZERO) {
			page++;
			continue;
		}
		size_t start = page, limit = start + MAX_RUN / PAGE;
		while (page < last && page < limit && im->kinds[page] != KIND_ZERO)
			page++;
		runs[count++] = (struct run){ start * PAGE, (page - start) * PAGE };
	}
	*n = count;
	return runs;
}

/* --- guest memory ------------------------------------------------------------------------- */
void memory_create(struct memory *m, const char *backing, size_t size)
{
	unsigned flags = MFD_CLOEXEC;
	uint64_t feature = UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM;
	m->page_size = PAGE;
	if (!strcmp(backing, "hugetlb-2M") || !strcmp(backing, "hugetlb-1G")) {
		int g = !strcmp(backing, "hugetlb-1G");
		flags |= MFD_HUGETLB | (g ? MFD_HUGE_1GB : MFD_HUGE_2MB);
		feature = UFFD_FEATURE_MINOR_HUGETLBFS | UFFD_FEATURE_MISSING_HUGETLBFS;
		m->page_size = g ? 1UL << 30 : 2UL << 20;
	} else if (strcmp(backing, "shmem")) {
		errno = EINVAL;
		die(backing);
	}
	if (size % m->page_size) {
		errno = EINVAL;
		die("memory size is not a whole number of the backing's pages");
	}
	m->size = size;
	m->fd = memfd_create("floor-guest", flags);
	if (m->fd < 0 || ftruncate(m->fd, size) < 0)
		die("memfd");
	/* MINOR faults fire only for pages already in the page cache: populate it first. Then
	 * preallocate as migrator's guest does (a VMM's -mem-prealloc): shmem's fallocate leaves
	 * its pages to be zeroed on first touch, which would otherwise land on the destination. */
	if (fallocate(m->fd, 0, 0, size) < 0)
		die("fallocate (are huge pages reserved?)");
	char *prealloc = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	if (prealloc == MAP_FAILED || madvise(prealloc, size, MADV_POPULATE_WRITE) < 0 ||
	    munmap(prealloc, size) < 0)
		die("preallocate guest memory");
	m->guest = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	if (m->guest == MAP_FAILED)
		die("mmap guest view");
	m->alias = NULL;

	m->uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (m->uffd < 0)
		die("userfaultfd");
	/* As migrator's guest: exact addresses (hugetlb rounds them down otherwise), thread ids,
	 * and MISSING as well as MINOR (it registers both; only MINOR faults happen here). */
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = feature | UFFD_FEATURE_EXACT_ADDRESS | UFFD_FEATURE_THREAD_ID,
	};
	if (ioctl(m->uffd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)m->guest, .len = size },
		.mode = UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(m->uffd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER");
}

void memory_map_alias(struct memory *m)
{
	m->alias = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	if (m->alias == MAP_FAILED)
		die("mmap alias view");
}

void memory_continue(const struct memory *m, uint64_t offset, uint64_t len)
{
	struct uffdio_continue c = { .range = { .start = (uint64_t)m->guest + offset, .len = len } };
	/* EAGAIN: a mapping change is pending (none here, but the kernel may say so): retry. */
	while (ioctl(m->uffd, UFFDIO_CONTINUE, &c) < 0) {
		if (errno == EEXIST)
			return;
		if (errno != EAGAIN)
			die("UFFDIO_CONTINUE");
		if (c.mapped > 0) {
			c.range.start += c.mapped;
			c.range.len -= c.mapped;
		}
		c.mapped = 0;
	}
}

size_t memory_verify(const struct memory *m, const struct image *im, size_t first, size_t n)
{
	size_t bad = 0;
	for (size_t p = first; p < first + n; p++)
		bad += XXH3_64bits(m->alias + p * PAGE, PAGE) != image_digest(im, p);
	return bad;
}

size_t memory_verify_zeros(const struct memory *m, const struct image *im, size_t first, size_t n)
{
	size_t bad = 0;
	for (size_t p = first; p < first + n; p++)
		if (im->kinds[p] == KIND_ZERO)
			bad += XXH3_64bits(m->alias + p * PAGE, PAGE) != im->zero_digest;
	return bad;
}

/* --- the source ----------------------------------------------------------------------------- */
static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void send_exact(int fd, const void *buf, size_t len, const char *what)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die(what);
		done += n;
	}
}

void send_all(int fd, const void *buf, size_t len)
{
	send_exact(fd, buf, len, "send");
}

static void sendv_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n };
		ssize_t sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (sent < 0 && errno == EINTR)
			continue;
		if (sent <= 0)
			_exit(0);  /* the destination hung up: this source is done */
		while (n > 0 && (size_t)sent >= iov->iov_len) {
			sent -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + sent;
			iov->iov_len -= sent;
		}
	}
}

struct connection {
	int fd;
	const struct image *im;
};

#define IOVS 64

static void serve_request(int fd, const struct image *im, const struct request *rq)
{
	struct reply h = { rq->id, 0, 0, rq->offset, rq->length };
	struct iovec iov[IOVS];
	int n = 0;
	if (rq->offset % PAGE || rq->length % PAGE || !rq->length ||
	    rq->offset + rq->length > im->pages * PAGE) {
		errno = EINVAL;
		die("source: bad request");
	}
	iov[n++] = (struct iovec){ &h, sizeof(h) };
	for (size_t p = rq->offset / PAGE; p < (rq->offset + rq->length) / PAGE; p++) {
		char *src = (char *)image_page(im, p);
		struct iovec *last = &iov[n - 1];
		if (n > 1 && (char *)last->iov_base + last->iov_len == src) {
			last->iov_len += PAGE;
			continue;
		}
		if (n == IOVS) {
			sendv_all(fd, iov, n);
			n = 0;
		}
		iov[n++] = (struct iovec){ src, PAGE };
	}
	sendv_all(fd, iov, n);
}

static void *serve(void *arg)
{
	struct connection *c = arg;
	char buf[64 * sizeof(struct request)];
	size_t have = 0;
	for (;;) {
		ssize_t n = recv(c->fd, buf + have, sizeof(buf) - have, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += n;
		size_t used = 0;
		for (; used + sizeof(struct request) <= have; used += sizeof(struct request)) {
			struct request rq;
			memcpy(&rq, buf + used, sizeof(rq));
			serve_request(c->fd, c->im, &rq);
		}
		memmove(buf, buf + used, have - used);
		have -= used;
	}
	close(c->fd);
	free(c);
	return NULL;
}

static void die_with_parent(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(1);
}

int source_start(const struct image *im, pid_t *pid)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(addr);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 8) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
		die("source listen");
	*pid = fork();
	if (*pid < 0)
		die("fork source");
	if (*pid == 0) {
		party = "source";
		die_with_parent();
		for (;;) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				die("accept");
			nodelay(fd);
			struct connection *c = malloc(sizeof(*c));
			*c = (struct connection){ fd, im };
			pthread_t t;
			pthread_create(&t, NULL, serve, c);
			pthread_detach(t);
		}
	}
	close(lfd);
	return ntohs(addr.sin_port);
}

int source_connect(int port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port),
				    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect to the source");
	nodelay(fd);
	return fd;
}

static void recv_iov(int fd, struct iovec *iov, int n)
{
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n };
	size_t want = 0;
	for (int i = 0; i < n; i++)
		want += iov[i].iov_len;
	while (want) {
		ssize_t n = recvmsg(fd, &msg, MSG_WAITALL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("recv reply");
		want -= n;
		while (msg.msg_iovlen && (size_t)n >= msg.msg_iov->iov_len) {
			n -= msg.msg_iov->iov_len;
			msg.msg_iov++;
			msg.msg_iovlen--;
		}
		if (msg.msg_iovlen) {
			msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
			msg.msg_iov->iov_len -= n;
		}
	}
}

static void check_reply(const struct reply *h, const struct request *rq)
{
	if (h->id != rq->id || h->status || h->offset != rq->offset || h->length != rq->length) {
		errno = EPROTO;
		die("a reply header does not match its request");
	}
}

void recv_reply(int fd, const struct request *rq, char *into)
{
	struct reply h;
	struct iovec iov[2] = { { &h, sizeof(h) }, { into, rq->length } };
	recv_iov(fd, iov, 2);
	check_reply(&h, rq);
}

size_t recv_run_verified(int fd, const struct request *rq, const struct memory *m,
			 const struct image *im)
{
	struct reply h;
	struct iovec iov = { &h, sizeof(h) };
	uint64_t got = 0, verified = 0;
	size_t bad = 0;
	recv_iov(fd, &iov, 1);
	check_reply(&h, rq);
	/* Take what the socket has, and check each page as soon as it is whole: it is still in
	 * the cache, and the next bytes are on the wire meanwhile. */
	while (got < rq->length) {
		ssize_t n = recv(fd, m->alias + rq->offset + got, rq->length - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("recv reply");
		got += n;
		uint64_t whole = got & ~(PAGE - 1);
		bad += memory_verify(m, im, (rq->offset + verified) / PAGE, (whole - verified) / PAGE);
		verified = whole;
	}
	return bad;
}

/* --- chunks of the background pull --------------------------------------------------------- */
struct chunk chunk_request(int fd, const struct image *im, size_t first, size_t last, uint32_t id)
{
	struct chunk c = { .first = first, .last = last, .id = id };
	c.runs = image_data_runs(im, first, last, &c.runs_n);
	struct request *rq = malloc((c.runs_n + 1) * sizeof(*rq));
	for (size_t i = 0; i < c.runs_n; i++)
		rq[i] = (struct request){ id, c.runs[i].offset, (uint32_t)c.runs[i].length };
	send_all(fd, rq, c.runs_n * sizeof(*rq));
	free(rq);
	return c;
}

size_t chunk_receive(int fd, struct chunk *c, const struct memory *m, const struct image *im,
		     int populate, uint64_t *bytes)
{
	size_t bad = 0;
	if (populate && madvise(m->alias + c->first * PAGE, (c->last - c->first) * PAGE,
				MADV_POPULATE_WRITE) < 0)
		die("MADV_POPULATE_WRITE");
	for (size_t i = 0; i < c->runs_n; i++) {
		struct request rq = { c->id, c->runs[i].offset, (uint32_t)c->runs[i].length };
		bad += recv_run_verified(fd, &rq, m, im);
		*bytes += rq.length;
	}
	free(c->runs);
	c->runs = NULL;
	return bad;
}

/* --- the destination ---------------------------------------------------------------------- */
pid_t dest_start(struct channel *ch, void (*body)(struct channel *ch, void *arg), void *arg)
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch->ctl) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch->zap) < 0)
		die("socketpair");
	pid_t pid = fork();
	if (pid < 0)
		die("fork destination");
	if (pid == 0) {
		party = "destination";
		die_with_parent();
		close(ch->ctl[0]);
		close(ch->zap[0]);
		body(ch, arg);
		_exit(0);
	}
	close(ch->ctl[1]);
	close(ch->zap[1]);
	return pid;
}

static const char *other_party_gone(void)
{
	return party[0] == 'g' ? "the destination is gone" : "the guest is gone";
}

void chan_send(int fd, const void *buf, size_t len)
{
	send_exact(fd, buf, len, other_party_gone());
}

void chan_recv(int fd, void *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = read(fd, (char *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (!n)
				errno = EPIPE;
			die(other_party_gone());
		}
		done += n;
	}
}

static void reap(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

void parties_start(struct parties *p, const struct image *im,
		   void (*destination)(struct channel *ch, void *arg), void *arg)
{
	char ready;
	p->port = source_start(im, &p->source);
	p->dest = dest_start(&p->ch, destination, arg);
	chan_recv(p->ch.ctl[0], &ready, 1);
}

void parties_stop(struct parties *p)
{
	reap(p->dest);
	reap(p->source);
}

/* --- numbers ---------------------------------------------------------------------------- */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void sort_u64(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
}

uint64_t quantile_u64(const uint64_t *sorted, size_t n, double q)
{
	if (!n)
		return 0;
	long rank = (long)(q * n + 0.5) - 1;
	if (rank < 0)
		rank = 0;
	if ((size_t)rank > n - 1)
		rank = n - 1;
	return sorted[rank];
}
