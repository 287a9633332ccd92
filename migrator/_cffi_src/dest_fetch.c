/*
 * What the destination's two loops share: the granule table, a page stream's requests and
 * replies, verification of every 4 KiB page against the manifest, and install.
 *
 * A job is a claimed run of granules [first, end). Its data pages are requested in runs
 * (zero pages never travel: the guest's fresh memfd is already zero) and received straight
 * into the alias view; each page is verified as it lands, the zero pages when the last reply
 * is in. A page that does not match is fetched again, twice at most; then the migration
 * fails naming it. A wrong page is never installed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/userfaultfd.h>
#include <xxhash.h>

#include "dataplane.h"
#include "dest_fetch.h"

#ifndef UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison { struct uffdio_range range; __u64 mode; __s64 updated; };
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

int dp_fail(struct dp_migration *m, int code, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&m->lock);
	if (!m->error[0]) {
		va_start(ap, fmt);
		vsnprintf(m->error, sizeof(m->error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&m->lock);
	return code;
}

/* ---- the granule table ------------------------------------------------------------------ */

int dp_init(struct dp_migration *m)
{
	if (pthread_mutex_init(&m->lock, NULL))
		return -ENOMEM;
	/* calloc of large blocks is fresh mmap: only entries actually touched cost memory */
	m->state = calloc(m->granules, 1);
	m->waiting = calloc(m->granules, sizeof(uint32_t));
	m->fetches = calloc(m->fetch_capacity, sizeof(struct dp_fetch));
	m->faults = calloc(m->fault_capacity, sizeof(struct dp_fault));
	if (!m->state || !m->waiting || !m->fetches || !m->faults)
		return -ENOMEM;
	return 0;
}

void dp_free(struct dp_migration *m)
{
	while (m->urgent_jobs) {
		struct dp_job *next = m->urgent_jobs->next;
		dp_job_free(m->urgent_jobs);
		m->urgent_jobs = next;
	}
	free(m->state);
	free(m->waiting);
	free(m->fetches);
	free(m->faults);
	m->state = NULL;
	m->waiting = NULL;
	m->fetches = NULL;
	m->faults = NULL;
	pthread_mutex_destroy(&m->lock);
}

/* Under m->lock: log a fault on granule g, waiting for its install. Returns its index. */
uint64_t dp_log_fault(struct dp_migration *m, uint64_t g, uint32_t tid, uint64_t now)
{
	uint64_t i = m->faults_logged;
	if (i >= m->fault_capacity || i >= UINT32_MAX - 1) {
		m->faults_dropped++;
		return UINT64_MAX;
	}
	struct dp_fault *f = &m->faults[i];
	f->granule = g;
	f->read_ns = now;
	f->tid = tid;
	f->done_ns = 0;
	f->on_background = m->state[g] == DP_BACKGROUND;
	if (f->on_background)
		m->background_waiters++;
	f->next_waiting = m->waiting[g];
	m->waiting[g] = (uint32_t)(i + 1);
	__atomic_store_n(&m->faults_logged, i + 1, __ATOMIC_RELEASE);
	return i;
}

/* Under m->lock: the faults waiting on g are resolved now. */
static void complete_waiters(struct dp_migration *m, uint64_t g, uint64_t now)
{
	uint32_t next = m->waiting[g];
	m->waiting[g] = 0;
	while (next) {
		struct dp_fault *f = &m->faults[next - 1];
		f->done_ns = now;
		if (f->on_background) {
			f->on_background = 0;
			m->background_waiters--;
		}
		dp_observe(&m->fault_latency, now - f->read_ns);
		next = f->next_waiting;
	}
}

/* Granules [first, end) are done (PRESENT or POISONED): wake the bookkeeping of their faults. */
void dp_mark_done(struct dp_migration *m, uint64_t first, uint64_t end, int state)
{
	uint64_t now = monotonic_ns();
	int queued = 0;  /* a 2 MiB range completed (thp mode): wake the collapser */
	pthread_mutex_lock(&m->lock);
	for (uint64_t g = first; g < end; g++) {
		if (m->state[g] != DP_PRESENT && m->state[g] != DP_POISONED) {
			m->present++;
			if (m->collapse_span)
				queued |= dp_collapse_count(m, g);
		}
		m->state[g] = state;
		complete_waiters(m, g, now);
	}
	pthread_mutex_unlock(&m->lock);
	if (queued)
		dp_collapse_signal(m);
}

/* ---- resolving ioctls ------------------------------------------------------------------- */

/*
 * CONTINUE [start, start + len) of the guest view. A partial CONTINUE returns EAGAIN with
 * `mapped` > 0; EEXIST means the next granule is mapped already (a racing resolver, or a
 * fault that found it present): skip it, the rest still needs mapping. EAGAIN with nothing
 * mapped means a REMOVE event is pending and every ioctl fails until it is read: the caller's
 * on_eagain reads it (the fault loop) or waits for the fault loop to (the background loop).
 */
int dp_install(struct dp_migration *m, uint64_t start, uint64_t len, struct dp_counters *c,
	       void (*on_eagain)(struct dp_migration *, void *), void *ctx)
{
	uint64_t address = m->guest_base + start;
	while (len) {
		struct uffdio_continue arg = { .range = { address, len }, .mode = 0 };
		if (ioctl(m->uffd, UFFDIO_CONTINUE, &arg) == 0)
			return 0;
		int err = errno;
		uint64_t done = arg.mapped > 0 ? (uint64_t)arg.mapped : 0;
		uint64_t step = done;
		if (err == EEXIST) {
			c->eexist++;
			step = done + m->granularity;
		} else if (err == EAGAIN && !done) {
			if (m->stop)
				return DP_DONE;
			c->eagain++;
			on_eagain(m, ctx);
		} else if (err != EAGAIN) {
			/* ESRCH: the guest's mm is gone; ENOENT: its VMA is; EFAULT: the mapping
			 * is being torn down under us (the guest exiting while its vCPUs fault) */
			if (dp_guest_gone_errno(err))
				return dp_fail(m, DP_GUEST_GONE, "the guest's address space is gone "
					       "(UFFDIO_CONTINUE: %s)", strerror(err));
			return dp_fail(m, DP_FAILED, "UFFDIO_CONTINUE at guest offset %#lx+%#lx: %s",
				       (unsigned long)(address - m->guest_base),
				       (unsigned long)len, strerror(err));
		}
		if (step > len)
			step = len;
		address += step;
		len -= step;
	}
	return 0;
}

int dp_guest_gone_errno(int err)
{
	return err == ESRCH || err == ENOENT || err == EFAULT;
}

/* A poison marker over granule g: the guest gets SIGBUS there. EEXIST: marked already. */
int dp_poison_granule(struct dp_migration *m, uint64_t g)
{
	struct uffdio_poison arg = {
		.range = { m->guest_base + g * m->granularity, m->granularity }, .mode = 0 };
	if (ioctl(m->uffd, UFFDIO_POISON, &arg) == 0 || errno == EEXIST)
		return 0;
	return -errno;
}

/* Granules holding a page poisoned on the source are marked before the guest runs. */
int dp_poison_source_pages(struct dp_migration *m)
{
	uint64_t per = m->granularity / DP_PAGE;
	for (uint64_t g = 0; g < m->granules; g++) {
		const uint8_t *k = m->kinds + g * per;
		if (!memchr(k, DP_POISON, per))
			continue;
		int rc = dp_poison_granule(m, g);
		if (rc < 0)
			return rc;
		dp_mark_done(m, g, g + 1, DP_POISONED);
	}
	return 0;
}

/* A memory error injected on this host: claim g unless a loop is installing it. */
int dp_claim_for_poison(struct dp_migration *m, uint64_t g)
{
	pthread_mutex_lock(&m->lock);
	int s = m->state[g];
	if (s == DP_ABSENT)
		m->state[g] = DP_URGENT;
	pthread_mutex_unlock(&m->lock);
	return s;
}

void dp_release_poison_claim(struct dp_migration *m, uint64_t g, int state)
{
	pthread_mutex_lock(&m->lock);
	if (m->state[g] == DP_URGENT && state == DP_ABSENT)
		m->state[g] = DP_ABSENT;
	pthread_mutex_unlock(&m->lock);
}

/* ---- a page stream ---------------------------------------------------------------------- */

struct dp_pending {
	uint32_t id;
	uint32_t length;
	uint64_t offset;
	struct dp_job *job;
};

void dp_stream_open(struct dp_stream *s, int fd, struct dp_counters *c)
{
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	s->counters = c;
	s->next_id = 1;
}

void dp_stream_close(struct dp_stream *s)
{
	s->counters->in_flight -= s->fifo_len;
	free(s->fifo);
	free(s->out);
	free(s->message);
	memset(s, 0, sizeof(*s));
}

static int grow(void **p, size_t *cap, size_t need, size_t item)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 64;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * item);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

static int stream_request(struct dp_stream *s, struct dp_job *job, uint64_t offset, uint64_t len)
{
	if (s->fifo_head + s->fifo_len == s->fifo_cap && s->fifo_head) {
		memmove(s->fifo, s->fifo + s->fifo_head, s->fifo_len * sizeof(*s->fifo));
		s->fifo_head = 0;
	}
	if (grow((void **)&s->fifo, &s->fifo_cap, s->fifo_head + s->fifo_len + 1, sizeof(*s->fifo)))
		return -ENOMEM;
	size_t tail = s->fifo_head + s->fifo_len;
	struct dp_request r = { s->next_id++, offset, (uint32_t)len };
	s->fifo[tail] = (struct dp_pending){ r.id, r.length, offset, job };
	s->fifo_len++;
	if (grow((void **)&s->out, &s->out_cap, s->out_len + sizeof(r), 1))
		return -ENOMEM;
	memcpy(s->out + s->out_len, &r, sizeof(r));
	s->out_len += sizeof(r);
	job->pending++;
	if (!s->counters->first_request_ns)
		s->counters->first_request_ns = monotonic_ns();
	s->counters->requests++;
	s->counters->in_flight++;
	return 0;
}

/*
 * Request the data pages of the job (all of them: its first fetch, or again after a
 * reconnect, which starts its checks over: zero pages included). Returns the number of
 * requests, or -errno.
 */
int dp_job_request(struct dp_migration *m, struct dp_stream *s, struct dp_job *job)
{
	uint64_t page = job->first * (m->granularity / DP_PAGE);
	uint64_t last = job->end * (m->granularity / DP_PAGE);
	uint64_t per_request = m->max_request / DP_PAGE;
	job->pending = 0;
	job->nbad = 0;
	job->attempt = 1;
	while (page < last) {
		if (m->kinds[page] != DP_DATA) {
			page++;
			continue;
		}
		uint64_t first = page, limit = first + per_request < last ? first + per_request : last;
		while (page < limit && m->kinds[page] == DP_DATA)
			page++;
		if (stream_request(s, job, first * DP_PAGE, (page - first) * DP_PAGE))
			return -ENOMEM;
	}
	return (int)job->pending;
}

/* Fetch the job's bad pages again, one request each. */
static int job_refetch(struct dp_migration *m, struct dp_stream *s, struct dp_job *job)
{
	uint32_t n = job->nbad;
	job->nbad = 0;
	job->attempt++;
	s->counters->refetched_pages += n;
	for (uint32_t i = 0; i < n; i++)
		if (stream_request(s, job, job->bad[i] * DP_PAGE, DP_PAGE))
			return -ENOMEM;
	return 0;
}

/* Write what requests are queued, as far as the socket takes them. */
int dp_stream_flush(struct dp_stream *s)
{
	size_t sent = 0;
	while (sent < s->out_len) {
		ssize_t n = send(s->fd, s->out + sent, s->out_len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -errno;
		}
		sent += n;
	}
	memmove(s->out, s->out + sent, s->out_len - sent);
	s->out_len -= sent;
	return 0;
}

static void note_bad(struct dp_job *job, uint64_t page)
{
	if (job->nbad == job->bad_cap) {
		uint32_t cap = job->bad_cap ? job->bad_cap * 2 : 16;
		uint64_t *b = realloc(job->bad, cap * sizeof(*b));
		if (!b) {
			job->bad_lost = 1;  /* the job can then never be installed */
			return;
		}
		job->bad = b;
		job->bad_cap = cap;
	}
	job->bad[job->nbad++] = page;
}

/* Verify pages [first, last) that are of the given kind (-1: any but poisoned). */
static void verify(struct dp_migration *m, struct dp_job *job, uint64_t first, uint64_t last,
		   int kind)
{
	for (uint64_t p = first; p < last; p++) {
		int k = m->kinds[p];
		if (k == DP_POISON || (kind >= 0 && k != kind))
			continue;
		if (XXH3_64bits(m->alias + p * DP_PAGE, DP_PAGE) != m->digests[p])
			note_bad(job, p);
	}
}

/*
 * The job's last reply is in (or it needed none): check its zero pages, then either it is
 * ready to install (1), its bad pages were requested again (0), or they stayed bad
 * (DP_FAILED, negated).
 */
int dp_job_settle(struct dp_migration *m, struct dp_stream *s, struct dp_job *job)
{
	uint64_t per = m->granularity / DP_PAGE;
	if (job->attempt == 1)
		verify(m, job, job->first * per, job->end * per, DP_ZERO);
	if (job->bad_lost)
		return -dp_fail(m, DP_FAILED, "out of memory noting the pages of granule %lu that "
				"differ from the manifest; refusing to install it",
				(unsigned long)job->first);
	if (!job->nbad)
		return 1;
	if (job->attempt >= DP_MAX_ATTEMPTS) {
		pthread_mutex_lock(&m->lock);
		if (!m->mismatched_pages)
			m->first_mismatch = job->bad[0];
		m->mismatched_pages += job->nbad;
		pthread_mutex_unlock(&m->lock);
		return -dp_fail(m, DP_FAILED, "%u page(s) still differ from the manifest digests "
				"after %d fetches (first: page %lu); refusing to install them",
				job->nbad, DP_MAX_ATTEMPTS, (unsigned long)job->bad[0]);
	}
	return job_refetch(m, s, job) < 0 ? -dp_fail(m, DP_FAILED, "out of memory") : 0;
}

/* Body bytes of an OK reply landed in the alias: count them, verify the pages now whole. */
static void landed(struct dp_migration *m, struct dp_stream *s, struct dp_job *job, size_t n)
{
	s->body_got += n;
	s->counters->bytes += n;
	/* verify each page as soon as it is whole, while the next is on the wire */
	uint64_t whole = (s->reply.offset + s->body_got) & ~(uint64_t)(DP_PAGE - 1);
	if (whole > s->verified_to) {
		verify(m, job, s->verified_to / DP_PAGE, whole / DP_PAGE, -1);
		s->verified_to = whole;
	}
}

/*
 * The start of the next reply: its header, and in the same call as much of its body as has
 * arrived, straight into the alias where the request said it goes (one system call for a
 * 4 KiB fault, not two). Body bytes that came early are returned in *early; if the header then
 * does not match, the migration fails anyway, and an error reply's text is copied back out.
 */
static ssize_t recv_head(struct dp_migration *m, struct dp_stream *s, size_t *early)
{
	*early = 0;
	if (s->reply_got || !s->fifo_len)
		return recv(s->fd, (char *)&s->reply + s->reply_got,
			    sizeof(s->reply) - s->reply_got, MSG_DONTWAIT);
	struct dp_pending *head = &s->fifo[s->fifo_head];
	struct iovec iov[2] = { { &s->reply, sizeof(s->reply) },
				{ m->alias + head->offset, head->length } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n = recvmsg(s->fd, &msg, MSG_DONTWAIT);
	if (n > (ssize_t)sizeof(s->reply)) {
		*early = n - sizeof(s->reply);
		n = sizeof(s->reply);
	}
	return n;
}

/*
 * Read whatever the socket has (without blocking) and process replies in order. Each job
 * whose last reply is in and verified is handed to ready(). Returns 0, DP_LINK (the stream
 * broke: the caller reconnects) or DP_FAILED.
 */
int dp_stream_receive(struct dp_migration *m, struct dp_stream *s,
		      int (*ready)(struct dp_migration *, struct dp_job *, void *), void *ctx)
{
	for (;;) {
		if (s->reply_got < sizeof(s->reply)) {
			size_t early;
			ssize_t n = recv_head(m, s, &early);
			if (n == 0)
				return DP_LINK;
			if (n < 0)
				return (errno == EAGAIN || errno == EINTR) ? 0 : DP_LINK;
			if (!s->fifo_len)
				return dp_fail(m, DP_FAILED, "the source sent a reply to no request: "
					       "the stream is out of step");
			struct dp_pending *head = &s->fifo[s->fifo_head];
			if (head->job->urgent && !s->reply_got) {
				struct dp_stages *t = &head->job->t;
				if (!t->first_byte_ns)
					t->first_byte_ns = monotonic_ns();
			}
			s->reply_got += n;
			if (s->reply_got < sizeof(s->reply))
				continue;
			struct dp_reply *r = &s->reply;
			if (r->status != DP_STATUS_OK) {
				if (r->length > DP_MAX_ERROR_MESSAGE)
					return dp_fail(m, DP_FAILED, "the source sent an error reply of %u "
						       "bytes: the stream is out of step", r->length);
				free(s->message);
				s->message = calloc(1, r->length + 1);
				if (!s->message)
					return dp_fail(m, DP_FAILED, "out of memory");
				if (early > r->length)
					return dp_fail(m, DP_FAILED, "the source refused request %u "
						       "(status %u) and sent more: the stream is out of step",
						       head->id, r->status);
				memcpy(s->message, m->alias + head->offset, early);
			} else if (r->id != head->id || r->offset != head->offset ||
				   r->length != head->length) {
				return dp_fail(m, DP_FAILED, "the source answered request %u for "
					       "%#lx+%u with request %u for %#lx+%u: the stream is out "
					       "of step", head->id, (unsigned long)head->offset,
					       head->length, r->id, (unsigned long)r->offset, r->length);
			}
			s->body_got = 0;
			s->verified_to = r->offset;
			if (r->status != DP_STATUS_OK)
				s->body_got = early;
			else if (early)
				landed(m, s, head->job, early);
		}
		struct dp_reply *r = &s->reply;
		struct dp_pending *head = &s->fifo[s->fifo_head];
		uint8_t *into = r->status == DP_STATUS_OK ? m->alias + r->offset
							 : (uint8_t *)s->message;
		while (s->body_got < r->length) {
			ssize_t n = recv(s->fd, into + s->body_got, r->length - s->body_got,
					 MSG_DONTWAIT);
			if (n == 0)
				return DP_LINK;
			if (n < 0)
				return (errno == EAGAIN || errno == EINTR) ? 0 : DP_LINK;
			if (r->status != DP_STATUS_OK)
				s->body_got += n;
			else
				landed(m, s, head->job, n);
		}
		if (r->status != DP_STATUS_OK)
			return dp_fail(m, DP_FAILED, "the source refused request %u for %#lx+%u "
				       "(status %u): %s", head->id, (unsigned long)head->offset,
				       head->length, r->status, s->message);
		struct dp_job *job = head->job;
		s->fifo_head = --s->fifo_len ? s->fifo_head + 1 : 0;
		s->counters->in_flight--;
		s->reply_got = 0;
		if (--job->pending)
			continue;
		if (job->urgent)
			job->t.last_byte_ns = monotonic_ns();
		int settled = dp_job_settle(m, s, job);
		if (settled < 0)
			return -settled;
		if (settled == 0) {
			int rc = dp_stream_flush(s);
			if (rc < 0)
				return DP_LINK;
			continue;
		}
		if (job->urgent)
			job->t.verified_ns = monotonic_ns();
		int rc = ready(m, job, ctx);
		if (rc)
			return rc;
	}
}

/* Map the alias pages of a range at once, rather than a page fault per 4 KiB while receiving. */
void dp_prepare(struct dp_migration *m, struct dp_job *job)
{
	uint64_t start = job->first * m->granularity, len = (job->end - job->first) * m->granularity;
	madvise(m->alias + start, len, MADV_POPULATE_WRITE);
}

struct dp_job *dp_job_new(uint64_t first, uint64_t end, int urgent)
{
	struct dp_job *job = calloc(1, sizeof(*job));
	if (job) {
		job->first = first;
		job->end = end;
		job->urgent = urgent;
		job->attempt = 1;
	}
	return job;
}

void dp_job_unlink(struct dp_job **list, struct dp_job *job)
{
	for (struct dp_job **p = list; *p; p = &(*p)->next)
		if (*p == job) {
			*p = job->next;
			return;
		}
}

void dp_job_free(struct dp_job *job)
{
	free(job->bad);
	free(job);
}

/* The job is installed: count it and mark its granules present. */
void dp_job_installed(struct dp_migration *m, struct dp_job *job, struct dp_counters *c)
{
	uint64_t pages = (job->end - job->first) * (m->granularity / DP_PAGE);
	c->pages += pages;
	c->verified_pages += pages;
	dp_mark_done(m, job->first, job->end, DP_PRESENT);
}
