/*
 * migrator's data plane in C: the loops the interpreter must not stall.
 *
 *   histogram.c        the histograms every loop fills (the clock: monotonic.h)
 *   dest_fetch.c       the plumbing both destination loops share: the granule table, requests
 *                      and replies on one page stream, verification, install
 *   dest_faults.c      the fault loop: userfaultfd events -> urgent requests -> install -> wake
 *   dest_background.c  the background loop: claim runs nobody faulted on, fetch, install
 *   dest_collapse.c    thp mode: queue each 2 MiB range as its last granule is done
 *   source_sender.c    the source's side of an upgraded page stream
 *
 * Python is the control plane: it opens the connections (HTTP upgrade), owns sessions,
 * reconnects, and reads the counters and histograms these loops fill.
 * The wire format is migrator/protocol/frames.py's.
 */
#ifndef MIGRATOR_DATAPLANE_H
#define MIGRATOR_DATAPLANE_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>

#include "monotonic.h"

#define DP_PAGE 4096u
#define DP_HIST_BUCKETS 32          /* upper bounds in ns, the last one +Inf */
#define DP_MAX_ATTEMPTS 3           /* fetches of a page before its mismatch fails the migration */
#define DP_MAX_ERROR_MESSAGE (64u << 10)

/* Page kinds of the manifest (migrator/protocol/manifest.py). */
enum { DP_DATA = 0, DP_ZERO = 1, DP_POISON = 2 };

/* Frames (migrator/protocol/frames.py), little-endian as on x86-64 and arm64. */
struct dp_request { uint32_t id; uint64_t offset; uint32_t length; } __attribute__((packed));
struct dp_reply {
	uint32_t id; uint16_t status; uint16_t reserved; uint64_t offset; uint32_t length;
} __attribute__((packed));
#define DP_STATUS_OK 0

/* Granule states: exactly one loop claims a granule; the others wait for its install. */
enum { DP_ABSENT = 0, DP_URGENT = 1, DP_BACKGROUND = 2, DP_PRESENT = 3, DP_POISONED = 4 };

/* How a loop stopped. */
enum {
	DP_DONE = 0,        /* background: nothing left to claim; faults: stop was asked */
	DP_LINK = 1,        /* the stream broke: reconnect and call again */
	DP_FAILED = 2,      /* the migration cannot complete correctly: see error */
	DP_GUEST_GONE = 3,  /* the guest's address space is gone (ESRCH) */
};

struct dp_histogram {
	uint64_t bounds_ns[DP_HIST_BUCKETS];   /* set by Python; unused tail = UINT64_MAX */
	uint64_t counts[DP_HIST_BUCKETS];
	uint64_t sum_ns;
};

/* What one loop did; read by Python without locks (aligned 64-bit words). */
struct dp_counters {
	uint64_t bytes;             /* page bytes received */
	uint64_t pages;             /* 4 KiB pages installed */
	uint64_t verified_pages;
	uint64_t refetched_pages;
	uint64_t eexist, eagain;    /* resolving ioctls that lost a race */
	uint64_t requests;          /* requests sent */
	uint64_t in_flight;         /* requests sent and not yet answered */
	uint64_t faults;            /* fault events read (faults loop only) */
	uint64_t faults_waited;     /* faults on a granule the other loop was installing */
	uint64_t started_ns, finished_ns;
	uint64_t first_request_ns;  /* the first request for data sent */
};

/* One fault event and when it was resolved. */
struct dp_fault {
	uint64_t granule;
	uint64_t read_ns;           /* event read */
	uint64_t done_ns;           /* its granule installed (0: not yet) */
	uint32_t tid;               /* the faulting thread (UFFD_FEATURE_THREAD_ID) */
	uint32_t next_waiting;      /* the next fault waiting on the same granule, +1; 0 ends */
	uint32_t on_background;     /* it waits on a background job */
	uint32_t reserved;
};

/* The anatomy of one urgent fetch, CLOCK_MONOTONIC ns. */
struct dp_stages {
	uint64_t read_ns, sent_ns, first_byte_ns, last_byte_ns, verified_ns, installed_ns;
};

/* One urgent fetch, logged when installed. */
struct dp_fetch {
	uint64_t granule;
	struct dp_stages t;
};

struct dp_job;
struct dp_stream;

struct dp_migration {
	/* set up by Python before any loop runs */
	int uffd;
	uint8_t *alias;             /* the memfd mapped a second time, never registered */
	uint64_t guest_base;        /* the guest's view of the same memfd, registered MINOR */
	uint64_t size, granularity, granules, pages;
	const uint64_t *digests;    /* XXH3-64 of each 4 KiB page, from the manifest */
	const uint8_t *kinds;       /* DP_DATA / DP_ZERO / DP_POISON per page */
	uint64_t max_request;       /* bytes per request at most (frames.MAX_REQUEST_LENGTH) */

	/* the granule table: one owner of each granule's state, its waiters and poison */
	pthread_mutex_t lock;
	uint8_t *state;
	uint64_t present;           /* granules done: installed or poisoned */
	uint64_t cursor;            /* where the background loop continues: just after the last fault */
	uint32_t *waiting;          /* granule -> first waiting fault, +1 */

	/* the fault log and the anatomy of each urgent fetch */
	struct dp_fault *faults;
	uint64_t fault_capacity, faults_logged, faults_dropped;
	struct dp_fetch *fetches;   /* the fault loop's fetches, in install order */
	uint64_t fetch_capacity, fetches_logged;

	struct dp_counters urgent, background;
	struct dp_histogram fault_latency;

	/* background policy */
	uint64_t chunk_bytes;       /* granules claimed per background job, in bytes */
	uint32_t window;            /* background chunks' worth of data bytes in flight */
	uint64_t cap_bytes_per_s;   /* 0: no cap */
	int preempt;                /* urgent faults preempt the pull: see dest_background.c */
	uint32_t vcpus;             /* the guest's vCPUs (0: not known yet) */
	uint32_t cpus;              /* the CPUs this process may run on */
	uint64_t last_urgent_ns;    /* when the fault loop last read a fault or installed one */
	int background_nice;        /* the background loop's nice while no fault waits on it;
	                               -100: leave the thread as it is */
	uint64_t background_waiters; /* faults waiting on a background job right now */
	int background_tid;         /* the background loop's thread, for the fault loop to boost */

	struct dp_job *urgent_jobs;  /* the fault loop's, not installed yet: kept across reconnects */

	/* thp mode (dest_collapse.c): each range of collapse_span granules is queued once, when
	 * its last granule is done, for the collapser to MADV_COLLAPSE; collapse_span 0: off */
	uint64_t collapse_span, collapse_ranges;
	uint32_t *range_done;       /* range -> its granules done */
	uint32_t *ranges_ready;     /* complete ranges, in completion order */
	uint64_t ranges_queued;     /* entries of ranges_ready written (release) */
	int collapse_fd;            /* eventfd written when ranges are queued; -1: none */

	volatile int stop;
	uint64_t mismatched_pages, first_mismatch;
	char error[512];
};

/* A loop's connection to the source: requests in flight, and the reply being received. */
struct dp_stream {
	int fd;
	struct dp_counters *counters;
	struct dp_pending *fifo;    /* ring of requests awaiting replies, in send order */
	size_t fifo_cap, fifo_head, fifo_len;
	uint8_t *out;               /* requests not yet written */
	size_t out_cap, out_len;
	uint32_t next_id;
	struct dp_reply reply;
	size_t reply_got, body_got, verified_to;
	char *message;              /* an error reply's text */
};

int dp_init(struct dp_migration *m);
void dp_free(struct dp_migration *m);
int dp_faults_run(struct dp_migration *m, int fd, int poll_ms);
int dp_background_run(struct dp_migration *m, int fd);
int dp_poison_source_pages(struct dp_migration *m);
int dp_claim_for_poison(struct dp_migration *m, uint64_t granule);
int dp_poison_granule(struct dp_migration *m, uint64_t granule);
void dp_release_poison_claim(struct dp_migration *m, uint64_t granule, int state);
void dp_observe(struct dp_histogram *h, uint64_t ns);
int dp_collapse_init(struct dp_migration *m, uint64_t span, int eventfd);
void dp_collapse_free(struct dp_migration *m);

/* source */
/* The kinds of wrong page replies injected, in the order of src_stream.injected. */
enum { SRC_FLIPPED_BIT = 0, SRC_OTHER_PAGE = 1, SRC_STALE = 2, SRC_SHORT_FRAME = 3,
       SRC_INJECT_KINDS = 4 };
struct iovec;
struct src_stream {
	int fd;
	const uint8_t *image;
	uint64_t size, max_request;
	int stall_ms;               /* a request half-sent this long closes the stream */
	volatile int stop;
	uint64_t requests, bytes, bad_request, out_of_range;
	struct dp_histogram latency;
	const uint8_t *initial;     /* bytes read before the handover */
	size_t initial_len;
	char error[256];

	/* corruption injection (source_inject.c); off while threshold is 0 and always_wrong NULL */
	uint32_t corrupt_threshold; /* a page is served wrong with probability threshold / 2^32 */
	const uint8_t *always_wrong;  /* page -> 1: served wrong every time; NULL: none */
	uint8_t *served_wrong;      /* page -> 1 once served wrong at random (per session, shared
	                               by its streams): its next request is served right */
	uint64_t rng;               /* xorshift64 state, not 0 */
	uint64_t injected[SRC_INJECT_KINDS];
};
int src_serve(struct src_stream *s);
int src_write_all(struct src_stream *s, struct iovec *iov, int n);
int src_send_injected(struct src_stream *s, const struct dp_request *r);

#endif
