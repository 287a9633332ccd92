/* The destination loops' shared plumbing (dest_fetch.c), not seen by Python. */
#ifndef MIGRATOR_DEST_FETCH_H
#define MIGRATOR_DEST_FETCH_H

#include "dataplane.h"

/* A claimed run of granules being fetched, verified and installed by one loop. */
struct dp_job {
	uint64_t first, end;        /* granules */
	uint64_t bytes;             /* data bytes requested (the background window's count) */
	uint32_t pending;           /* replies outstanding */
	uint32_t attempt;           /* 1, then once more per refetch of bad pages */
	uint32_t nbad, bad_cap;
	uint64_t *bad;              /* pages that did not match their digest */
	int bad_lost;               /* one could not be noted (out of memory) */
	int urgent;                 /* fetched by the fault loop: its stages are timed */
	struct dp_stages t;         /* (urgent) */
	struct dp_job *next;
};

int dp_fail(struct dp_migration *m, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
uint64_t dp_log_fault(struct dp_migration *m, uint64_t g, uint32_t tid, uint64_t now);
void dp_mark_done(struct dp_migration *m, uint64_t first, uint64_t end, int state);
int dp_install(struct dp_migration *m, uint64_t start, uint64_t len, struct dp_counters *c,
	       void (*on_eagain)(struct dp_migration *, void *), void *ctx);

void dp_stream_open(struct dp_stream *s, int fd, struct dp_counters *c);
void dp_stream_close(struct dp_stream *s);
int dp_job_request(struct dp_migration *m, struct dp_stream *s, struct dp_job *job);
int dp_stream_flush(struct dp_stream *s);
int dp_job_settle(struct dp_migration *m, struct dp_stream *s, struct dp_job *job);
int dp_stream_receive(struct dp_migration *m, struct dp_stream *s,
		      int (*ready)(struct dp_migration *, struct dp_job *, void *), void *ctx);

struct dp_job *dp_job_new(uint64_t first, uint64_t end, int urgent);
void dp_job_unlink(struct dp_job **list, struct dp_job *job);
void dp_job_free(struct dp_job *job);
void dp_prepare(struct dp_migration *m, struct dp_job *job);
void dp_job_installed(struct dp_migration *m, struct dp_job *job, struct dp_counters *c);
int dp_guest_gone_errno(int err);  /* a resolving ioctl's errno that means the guest left */

/* dest_collapse.c */
int dp_collapse_count(struct dp_migration *m, uint64_t g);
void dp_collapse_signal(struct dp_migration *m);

#endif
