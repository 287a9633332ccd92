/*
 * The destination's background loop: fills every granule nobody faulted on, so the
 * migration completes. One thread, its own stream, so an urgent request never waits
 * behind background bytes on the wire.
 *
 *   first, every granule of zero pages: checked and mapped, nothing travels (standing back
 *      for faults as the pull does: checking reads every zero page, CPU time a fault would
 *      wait for)
 *   claim the next run of absent granules after the most recent fault (wrapping)
 *   -> map its alias pages, request its data pages; keep `window` chunks' worth of data bytes
 *      in flight, in as many runs as that takes (after scattered faults a run is a few pages:
 *      one run at a time would cost a round trip per few pages), and stay under the
 *      bandwidth cap (QEMU's max-postcopy-bandwidth) when one is set
 *   -> with `preempt`, request nothing new while a fault's fetch is in flight or a fault was
 *      read or installed in the last PREEMPT_QUIET_NS (QEMU's postcopy-preempt, in time rather
 *      than channels; from the install too, since a woken vCPU faults again a round trip
 *      later, and between rounds a chunk on a slow link is what the next replies queue behind): on
 *      a small host the bulk stream's CPU time, socket buffers and softirq work are what an
 *      urgent reply would wait behind. Not while the guest has fewer vCPUs than the host has
 *      CPUs (one is left for the pull). And while a vCPU waits on one of the pull's own
 *      jobs: what is in flight is still received and installed, but claiming more would only
 *      give the next faults more to wait behind. (Once a slow link's first window of 8 MiB
 *      left before the first fault, a quarter of a small guest's faults landed in it; while
 *      they waited no fault was read, so the pull claimed on, and they kept landing in its
 *      claims: 40 faults where 576 were due, stalls of 160 ms.)
 *   -> receive each into the alias view, verify every page, UFFDIO_CONTINUE the run,
 *      mark it present (faults that waited on it are resolved by that CONTINUE)
 *
 * The thread runs niced (background_nice) so that vCPUs and the urgent path get a CPU first,
 * except while a vCPU waits on one of its jobs: then the job is urgent, and runs at normal
 * priority (a vCPU must not wait on a niced thread: priority inversion).
 *
 * A broken stream gives its claims back, so nothing is half-installed; the caller reconnects
 * and calls again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "dataplane.h"
#include "dest_fetch.h"

#define IDLE_POLL_MS 50
#define PREEMPT_QUIET_NS 500000ull
#define PREEMPT_POLL_MS 1
#define MAX_JOBS 256                /* runs in flight, however small */
#define FIRST_FAULT_WAIT_NS 200000000ull

struct background_loop {
	struct dp_migration *m;
	struct dp_stream stream;
	struct dp_job *jobs;        /* claimed, not installed */
	uint32_t in_flight;         /* jobs */
	uint64_t in_flight_bytes;   /* their data bytes */
	uint64_t requested_bytes;   /* for the cap */
};

/* A pending REMOVE makes CONTINUE fail with EAGAIN until the fault loop reads it. */
static void wait_for_fault_loop(struct dp_migration *m, void *ctx)
{
	(void)m; (void)ctx;
	usleep(500);
}

static int installed(struct dp_migration *m, struct dp_job *job, void *ctx)
{
	struct background_loop *l = ctx;
	uint64_t start = job->first * m->granularity, len = (job->end - job->first) * m->granularity;
	int rc = dp_install(m, start, len, &m->background, wait_for_fault_loop, NULL);
	if (rc)
		return rc;
	dp_job_installed(m, job, &m->background);
	dp_job_unlink(&l->jobs, job);
	l->in_flight--;
	l->in_flight_bytes -= job->bytes;
	dp_job_free(job);
	return 0;
}

/* Claim the next run of absent granules at or after the cursor, wrapping. 0: none left. */
static int claim_run(struct dp_migration *m, uint64_t max, uint64_t *first, uint64_t *end)
{
	pthread_mutex_lock(&m->lock);
	uint64_t n = m->granules, start = m->cursor < n ? m->cursor : 0, g = start;
	const uint8_t *hit = memchr(m->state + g, DP_ABSENT, n - g);
	if (!hit)
		hit = memchr(m->state, DP_ABSENT, start);
	int found = hit != NULL;
	if (found) {
		g = hit - m->state;
		uint64_t e = g + 1, limit = g + max < n ? g + max : n;
		while (e < limit && m->state[e] == DP_ABSENT)
			e++;
		memset(m->state + g, DP_BACKGROUND, e - g);
		m->cursor = e;
		*first = g;
		*end = e;
	}
	pthread_mutex_unlock(&m->lock);
	return found;
}

/* Give the claims of unfinished jobs back: they will be claimed again. */
static void release_all(struct background_loop *l)
{
	struct dp_migration *m = l->m;
	pthread_mutex_lock(&m->lock);
	for (struct dp_job *job = l->jobs; job; job = job->next) {
		memset(m->state + job->first, DP_ABSENT, job->end - job->first);
		if (job->first < m->cursor)
			m->cursor = job->first;
	}
	pthread_mutex_unlock(&m->lock);
	while (l->jobs) {
		struct dp_job *next = l->jobs->next;
		dp_job_free(l->jobs);
		l->jobs = next;
	}
	l->in_flight = 0;
	l->in_flight_bytes = 0;
}

/* ms to wait before the cap allows another job; 0: now. */
static int cap_wait_ms(struct background_loop *l)
{
	struct dp_migration *m = l->m;
	if (!m->cap_bytes_per_s)
		return 0;
	double elapsed = (monotonic_ns() - m->background.started_ns) / 1e9;
	double ahead = l->requested_bytes - elapsed * m->cap_bytes_per_s;
	if (ahead <= 0)
		return 0;
	int ms = (int)(ahead * 1000.0 / m->cap_bytes_per_s) + 1;
	return ms < IDLE_POLL_MS ? ms : IDLE_POLL_MS;
}

/*
 * A vCPU waits on one of our jobs in flight, or faults are being served urgently and the vCPUs
 * can fill the CPUs: stand back (from claiming more; what is in flight is still received and
 * installed). With a CPU to spare the pull costs a fault nothing and keeps stepping on: on a VM
 * it even spares the fault's wake-ups the CPU's return from idle (the hypervisor's halt).
 * A vCPU waiting while no job is in flight waits on a granule a broken stream gave back
 * (release_all): the pull must claim again, or nobody fetches it.
 */
static int preempted(struct dp_migration *m, uint32_t jobs_in_flight)
{
	if (!m->preempt)
		return 0;
	if (__atomic_load_n(&m->background_waiters, __ATOMIC_RELAXED))
		return jobs_in_flight > 0;
	uint32_t vcpus = __atomic_load_n(&m->vcpus, __ATOMIC_RELAXED);
	if (vcpus && vcpus < m->cpus)
		return 0;
	return __atomic_load_n(&m->urgent.in_flight, __ATOMIC_RELAXED) ||
	       monotonic_ns() - __atomic_load_n(&m->last_urgent_ns, __ATOMIC_RELAXED) < PREEMPT_QUIET_NS;
}

/*
 * Start a job on the claimed granules [first, end): request its data pages or, when it has
 * none (zero pages never travel), check it and install it now.
 */
static int start_job(struct background_loop *l, uint64_t first, uint64_t end, uint64_t bytes)
{
	struct dp_migration *m = l->m;
	struct dp_job *job = dp_job_new(first, end, 0);
	if (!job)
		return dp_fail(m, DP_FAILED, "out of memory");
	job->bytes = bytes;
	job->next = l->jobs;
	l->jobs = job;
	l->in_flight++;
	l->in_flight_bytes += bytes;
	dp_prepare(m, job);
	int n = dp_job_request(m, &l->stream, job);
	if (n < 0)
		return dp_fail(m, DP_FAILED, "out of memory");
	if (n > 0)
		return 0;
	int settled = dp_job_settle(m, &l->stream, job);
	if (settled < 0)
		return -settled;
	return settled ? installed(m, job, l) : 0;  /* 0: a page was not zero, now requested */
}

/* What the granules [first, end) put on the wire: their data pages (the cap is on the link). */
static uint64_t data_bytes(const struct dp_migration *m, uint64_t first, uint64_t end)
{
	uint64_t per = m->granularity / DP_PAGE, n = 0;
	for (const uint8_t *k = m->kinds + first * per, *e = m->kinds + end * per; k < e; k++)
		n += *k == DP_DATA;
	return n * DP_PAGE;
}

/* Claim and request jobs until the window is full. Returns 1 when nothing is left to claim. */
static int fill_window(struct background_loop *l, int *rc)
{
	struct dp_migration *m = l->m;
	uint64_t per_job = m->chunk_bytes / m->granularity ? m->chunk_bytes / m->granularity : 1;
	uint64_t window_bytes = (uint64_t)m->window * per_job * m->granularity;
	while (l->in_flight_bytes < window_bytes && l->in_flight < MAX_JOBS && !cap_wait_ms(l) &&
	       !preempted(m, l->in_flight)) {
		uint64_t first, end;
		if (!claim_run(m, per_job, &first, &end))
			return 1;
		uint64_t bytes = data_bytes(m, first, end);
		l->requested_bytes += bytes;
		if ((*rc = start_job(l, first, end, bytes)))
			return 0;
	}
	return 0;
}

static int all_zero(const struct dp_migration *m, uint64_t g)
{
	uint64_t per = m->granularity / DP_PAGE;
	for (const uint8_t *k = m->kinds + g * per, *e = k + per; k < e; k++)
		if (*k != DP_ZERO)
			return 0;
	return 1;
}

/* Claim the next run of absent all-zero granules from *next on. 0: none left. */
static int claim_zero_run(struct dp_migration *m, uint64_t *next, uint64_t max, uint64_t *first,
			  uint64_t *end)
{
	for (uint64_t g = *next; g < m->granules; g++) {
		if (!all_zero(m, g))
			continue;
		pthread_mutex_lock(&m->lock);
		uint64_t e = g;
		while (e < m->granules && e - g < max && m->state[e] == DP_ABSENT && all_zero(m, e))
			e++;
		memset(m->state + g, DP_BACKGROUND, e - g);
		pthread_mutex_unlock(&m->lock);
		if (e > g) {
			*first = g;
			*next = *end = e;
			return 1;
		}
	}
	*next = m->granules;
	return 0;
}

/*
 * Before any data: every granule of zero pages. They cost a check and a CONTINUE, no bytes on
 * the wire and no reply to wait for, so they are mapped before a vCPU can fault on one (QEMU
 * likewise sends a zero page as a flag, never its bytes). Nothing travels, but the check reads
 * every zero page (0.55 GiB in the default experiment's image): with the vCPUs filling the
 * CPUs, that CPU time is what their faults would wait behind, so the sweep stands back as the
 * pull does, and a zero page faulted meanwhile costs its fault (a check and a CONTINUE).
 */
static int install_zero_granules(struct background_loop *l)
{
	struct dp_migration *m = l->m;
	uint64_t per_job = m->chunk_bytes / m->granularity ? m->chunk_bytes / m->granularity : 1;
	uint64_t next = 0, first, end;
	int rc = 0;
	while (!rc && !m->stop) {
		/* its jobs in flight (a zero page that was not zero) are received after it: a vCPU
		 * waiting on one must not hold it back */
		if (preempted(m, 0)) {
			usleep(PREEMPT_POLL_MS * 1000);
			continue;
		}
		if (!claim_zero_run(m, &next, per_job, &first, &end))
			break;
		rc = start_job(l, first, end, 0);
	}
	return rc;
}

/*
 * Faults first: with `preempt`, no data is requested before the fault loop has read the first
 * fault, or FIRST_FAULT_WAIT_NS into the migration (a guest that touches nothing). A VM's
 * vCPUs resume at switchover, as its pull starts; the guest here starts its vCPU threads on
 * the destination's answer, 6 to 60 ms later on this VM, and the pull's first window raced
 * them. When it won, the first faults' replies queued behind it: on a shaped link behind 8 MiB
 * in the shaper's queue, where a dropped packet of a reply cost a 200 ms retransmission
 * timeout (hgm, 200 Mbit/2 ms: the worst stall 208-377 ms in the runs where the pull went
 * first, under 5 ms where a fault did).
 */
static void wait_for_first_fault(struct dp_migration *m)
{
	while (m->preempt && !m->stop &&
	       !__atomic_load_n(&m->faults_logged, __ATOMIC_ACQUIRE) &&
	       monotonic_ns() - m->background.started_ns < FIRST_FAULT_WAIT_NS)
		usleep(PREEMPT_POLL_MS * 1000);
}

/* Back to background_nice once no vCPU waits on us (the fault loop boosts us when one does). */
static void renice(struct background_loop *l)
{
	struct dp_migration *m = l->m;
	if (m->background_nice == -100)
		return;
	int want = __atomic_load_n(&m->background_waiters, __ATOMIC_RELAXED) ? 0 : m->background_nice;
	if (want != getpriority(PRIO_PROCESS, 0))
		setpriority(PRIO_PROCESS, 0, want);
}

/* Nice only if we may raise the priority again (CAP_SYS_NICE): else never lower it. */
static void can_renice(struct dp_migration *m)
{
	if (m->background_nice == -100)
		return;
	if (setpriority(PRIO_PROCESS, 0, -1) < 0)
		m->background_nice = -100;
	setpriority(PRIO_PROCESS, 0, 0);
	m->background_tid = gettid();
}

int dp_background_run(struct dp_migration *m, int fd)
{
	struct background_loop l = { .m = m };
	can_renice(m);
	dp_stream_open(&l.stream, fd, &m->background);
	if (!m->background.started_ns)
		m->background.started_ns = monotonic_ns();
	int rc = install_zero_granules(&l);
	wait_for_first_fault(m);
	while (!rc && !m->stop) {
		int exhausted = fill_window(&l, &rc);
		if (rc)
			break;
		if (exhausted && !l.in_flight)
			break;
		if (!l.in_flight && !exhausted && preempted(m, l.in_flight)) {
			usleep(PREEMPT_POLL_MS * 1000);
			continue;
		}
		if (l.stream.out_len && dp_stream_flush(&l.stream) < 0) {
			rc = DP_LINK;
			break;
		}
		renice(&l);
		int wait = l.in_flight ? IDLE_POLL_MS : preempted(m, 0) ? PREEMPT_POLL_MS : cap_wait_ms(&l);
		struct pollfd p = { .fd = fd,
				    .events = POLLIN | (l.stream.out_len ? POLLOUT : 0) };
		if (poll(&p, 1, wait ? wait : IDLE_POLL_MS) < 0 && errno != EINTR) {
			rc = dp_fail(m, DP_FAILED, "poll: %s", strerror(errno));
			break;
		}
		if (p.revents)
			rc = dp_stream_receive(m, &l.stream, installed, &l);
	}
	if (rc == 0 && !m->stop)
		m->background.finished_ns = monotonic_ns();
	release_all(&l);
	dp_stream_close(&l.stream);
	return rc;
}
