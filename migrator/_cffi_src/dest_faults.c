/*
 * The destination's fault loop: one thread, one urgent stream, no interpreter.
 *
 *   poll the userfaultfd and the stream
 *   -> read fault events in a batch; for each, mask the exact address to the mode's granule
 *   -> a granule nobody has claimed: claim it, request its data pages (pipelined: every new
 *      granule of the batch is requested before any reply is awaited)
 *   -> a granule already being fetched (by us or the background loop): wait for that install
 *   -> as replies land, straight into the alias view: verify each page (XXH3), then
 *      UFFDIO_CONTINUE the granule, which maps it in the guest and wakes its vCPUs
 *
 * The jobs in flight (m->urgent_jobs) outlive a broken stream: after a reconnect the caller calls again with
 * the new connection and every unfinished job is requested again from scratch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>

#include "dataplane.h"
#include "dest_fetch.h"

#define BATCH 64

struct faults_loop {
	struct dp_migration *m;
	struct dp_stream stream;
	struct uffd_msg backlog[BATCH];   /* events read while an install waited for a REMOVE */
	int nbacklog;
	struct dp_job *fresh[BATCH];      /* requested in this batch: their send time is stamped */
	int nfresh;
	struct later {                    /* work of this batch that sends nothing: done after */
		struct dp_job *job;       /* the requests are out (a zero-page job to install) */
		uint64_t granule;         /* or a granule found done already, to map again */
		int state;
	} later[BATCH];
	int nlater;
};

/* An ioctl met a pending REMOVE: read it (and whatever else is queued) so the next try works. */
static void read_backlog(struct dp_migration *m, void *ctx)
{
	struct faults_loop *l = ctx;
	if (l->nbacklog < BATCH) {
		ssize_t n = read(m->uffd, &l->backlog[l->nbacklog],
				 (BATCH - l->nbacklog) * sizeof(struct uffd_msg));
		if (n > 0)
			l->nbacklog += n / sizeof(struct uffd_msg);
	} else {
		usleep(100);
	}
}

static int installed(struct dp_migration *m, struct dp_job *job, void *ctx)
{
	uint64_t start = job->first * m->granularity, len = (job->end - job->first) * m->granularity;
	int rc = dp_install(m, start, len, &m->urgent, read_backlog, ctx);
	if (rc)
		return rc;
	job->t.installed_ns = monotonic_ns();
	/* the woken vCPU's next fault is likely one round trip away: the pull's quiet time counts
	 * from here too, or on a slow link it slips a chunk in between rounds of faults */
	__atomic_store_n(&m->last_urgent_ns, job->t.installed_ns, __ATOMIC_RELAXED);
	if (m->fetches_logged < m->fetch_capacity) {
		m->fetches[m->fetches_logged] = (struct dp_fetch){ job->first, job->t };
		__atomic_store_n(&m->fetches_logged, m->fetches_logged + 1, __ATOMIC_RELEASE);
	}
	dp_job_installed(m, job, &m->urgent);
	dp_job_unlink(&m->urgent_jobs, job);
	dp_job_free(job);
	return 0;
}

/* A granule we found done already: map it again (it may have been zapped); EEXIST is fine. */
static int refault(struct dp_migration *m, struct faults_loop *l, uint64_t g, int state)
{
	int rc = 0;
	if (state == DP_POISONED) {
		int err = -dp_poison_granule(m, g);
		rc = !err ? 0 : dp_guest_gone_errno(err)
			? dp_fail(m, DP_GUEST_GONE, "the guest's address space is gone (UFFDIO_POISON: %s)",
				  strerror(err))
			: dp_fail(m, DP_FAILED, "UFFDIO_POISON failed: %s", strerror(err));
	}
	else {
		/* EEXIST is the usual answer here (the install that woke the vCPU came first), not a
		 * race between resolvers: it is not counted */
		struct dp_counters expected = { 0 };
		rc = dp_install(m, g * m->granularity, m->granularity, &expected, read_backlog, l);
		m->urgent.eagain += expected.eagain;
		/* EEXIST does not wake. It is also the answer when the range was collapsed (thp
		 * mode) after this vCPU faulted: MADV_COLLAPSE clears the PTE table before it sets
		 * the PMD, a fault in between queues a MINOR event, and CONTINUE then finds the PMD
		 * (EEXIST) and wakes nobody. So wake the granule's waiters here. */
		if (!rc && expected.eexist) {
			struct uffdio_range wake = { m->guest_base + g * m->granularity, m->granularity };
			if (ioctl(m->uffd, UFFDIO_WAKE, &wake) < 0 && dp_guest_gone_errno(errno))
				rc = dp_fail(m, DP_GUEST_GONE, "the guest's address space is gone");
		}
	}
	dp_mark_done(m, g, g + 1, state);  /* resolves the fault just logged */
	return rc;
}

static int on_fault(struct faults_loop *l, const struct uffd_msg *msg, uint64_t now)
{
	struct dp_migration *m = l->m;
	uint64_t offset = msg->arg.pagefault.address - m->guest_base;
	if (offset >= m->size)
		return 0;  /* not guest memory we serve */
	uint64_t g = offset / m->granularity;
	if (!(msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR))
		/* Only a hole in the memfd's page cache faults MISSING here: CONTINUE cannot fill
		 * it, and a guessed page must never be installed. */
		return dp_fail(m, DP_FAILED, "a fault at guest offset %#lx hit a hole in the "
			       "guest's memory file: the guest must allocate (fallocate) all of its "
			       "RAM before handing it over", (unsigned long)(g * m->granularity));
	m->urgent.faults++;
	pthread_mutex_lock(&m->lock);
	int state = m->state[g];
	dp_log_fault(m, g, msg->arg.pagefault.feat.ptid, now);
	if (state == DP_ABSENT)
		m->state[g] = DP_URGENT;
	if (state == DP_BACKGROUND) {
		m->urgent.faults_waited++;
		/* a vCPU waits on the background loop: it must not run niced meanwhile */
		if (m->background_nice != -100 && m->background_tid)
			setpriority(PRIO_PROCESS, m->background_tid, 0);
	}
	if (state == DP_ABSENT || state == DP_URGENT)
		m->cursor = g + 1 < m->granules ? g + 1 : 0;  /* the pages after a fault are likely next */
	pthread_mutex_unlock(&m->lock);

	if (state == DP_PRESENT || state == DP_POISONED) {
		l->later[l->nlater++] = (struct later){ NULL, g, state };
		return 0;
	}
	if (state != DP_ABSENT)
		return 0;  /* being fetched: its install resolves this fault too */

	struct dp_job *job = dp_job_new(g, g + 1, 1);
	if (!job)
		return dp_fail(m, DP_FAILED, "out of memory");
	job->t.read_ns = now;
	job->next = m->urgent_jobs;
	m->urgent_jobs = job;
	int n = dp_job_request(m, &l->stream, job);
	if (n < 0)
		return dp_fail(m, DP_FAILED, "out of memory");
	if (n == 0) {  /* all zero pages: nothing travels, but they are checked all the same */
		struct dp_stages *t = &job->t;
		t->sent_ns = t->first_byte_ns = t->last_byte_ns = now;
		l->later[l->nlater++] = (struct later){ job, g, DP_URGENT };
		return 0;
	}
	if (l->nfresh < BATCH)
		l->fresh[l->nfresh++] = job;
	return 0;
}

static int send_fresh(struct faults_loop *l)
{
	int rc = dp_stream_flush(&l->stream);
	uint64_t now = monotonic_ns();
	for (int i = 0; i < l->nfresh; i++)
		l->fresh[i]->t.sent_ns = now;
	l->nfresh = 0;
	return rc < 0 ? DP_LINK : 0;
}

/* A zero-page job (verify, install) or a granule to map again: nothing to wait for. */
static int do_later(struct faults_loop *l, struct later *w)
{
	struct dp_migration *m = l->m;
	if (!w->job)
		return refault(m, l, w->granule, w->state);
	int settled = dp_job_settle(m, &l->stream, w->job);
	if (settled < 0)
		return -settled;
	if (settled == 0)  /* a zero page was not zero: it is being fetched now */
		return l->nfresh < BATCH ? (l->fresh[l->nfresh++] = w->job, 0) : 0;
	w->job->t.verified_ns = monotonic_ns();
	return installed(m, w->job, l);
}

/*
 * A batch of events: first every request it needs goes out, then the work that needs no
 * reply, so that a fault's request never waits behind another fault's install.
 */
static int on_events(struct faults_loop *l, struct uffd_msg *msgs, int n, uint64_t now)
{
	__atomic_store_n(&l->m->last_urgent_ns, now, __ATOMIC_RELAXED);
	int rc = 0;
	for (int i = 0; i < n && !rc; i++)
		/* REMOVE/UNMAP: the page cache keeps the data; a later fault is installed again */
		if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
			rc = on_fault(l, &msgs[i], now);
	if (!rc && l->nfresh)
		rc = send_fresh(l);
	for (int i = 0; i < l->nlater && !rc; i++)
		rc = do_later(l, &l->later[i]);
	l->nlater = 0;
	return rc;
}

int dp_faults_run(struct dp_migration *m, int fd, int poll_ms)
{
	struct faults_loop *l = calloc(1, sizeof(*l));
	if (!l)
		return dp_fail(m, DP_FAILED, "out of memory");
	l->m = m;
	dp_stream_open(&l->stream, fd, &m->urgent);
	int rc = 0;

	/* a new connection after a broken one: ask again for everything not installed (a job
	 * of zero pages that was refetching one that was not zero starts its checks over) */
	for (struct dp_job *job = m->urgent_jobs, *next; job && !rc; job = next) {
		next = job->next;
		int n = dp_job_request(m, &l->stream, job);
		if (n < 0)
			rc = dp_fail(m, DP_FAILED, "out of memory");
		else if (n == 0)
			rc = do_later(l, &(struct later){ job, job->first, DP_URGENT });
	}

	while (!rc && !m->stop) {
		if (l->nbacklog) {
			struct uffd_msg held[BATCH];
			int n = l->nbacklog;
			memcpy(held, l->backlog, n * sizeof(held[0]));
			l->nbacklog = 0;
			if ((rc = on_events(l, held, n, monotonic_ns())))
				break;
		}
		if (l->stream.out_len && (rc = send_fresh(l)))
			break;
		struct pollfd p[2] = {
			{ .fd = m->uffd, .events = POLLIN },
			{ .fd = fd, .events = POLLIN | (l->stream.out_len ? POLLOUT : 0) },
		};
		if (poll(p, 2, poll_ms) < 0) {
			if (errno == EINTR)
				continue;
			rc = dp_fail(m, DP_FAILED, "poll: %s", strerror(errno));
			break;
		}
		if (p[0].revents & POLLIN) {
			struct uffd_msg msgs[BATCH];
			ssize_t n = read(m->uffd, msgs, sizeof(msgs));
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				rc = DP_GUEST_GONE;
				break;
			}
			if (n > 0 && (rc = on_events(l, msgs, n / sizeof(msgs[0]), monotonic_ns())))
				break;
			if ((rc = send_fresh(l)))
				break;
		} else if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			rc = DP_GUEST_GONE;
			break;
		}
		if (p[1].revents) {
			rc = dp_stream_receive(m, &l->stream, installed, l);
			if (!rc && (p[1].revents & POLLOUT))
				rc = send_fresh(l);
		}
	}
	dp_stream_close(&l->stream);
	free(l);
	return rc;
}
