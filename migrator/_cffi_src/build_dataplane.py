"""cffi build script (API mode) for migrator._dataplane: the destination's fault and
background loops and the source's page sender, in C (see dataplane.h). Links Debian's
libxxhash (XXH3) for page verification."""

from pathlib import Path

from cffi import FFI

_HERE = Path(__file__).parent
_SOURCES = ["histogram.c", "dest_fetch.c", "dest_faults.c", "dest_background.c", "dest_collapse.c",
            "source_sender.c", "source_inject.c"]

CDEF = """
#define DP_HIST_BUCKETS ...
#define DP_MAX_ATTEMPTS ...
#define DP_DONE ...
#define DP_LINK ...
#define DP_FAILED ...
#define DP_GUEST_GONE ...
#define DP_ABSENT ...
#define DP_URGENT ...
#define DP_BACKGROUND ...
#define DP_PRESENT ...
#define DP_POISONED ...
#define SRC_INJECT_KINDS ...

struct dp_histogram { uint64_t bounds_ns[...]; uint64_t counts[...]; uint64_t sum_ns; ...; };
struct dp_counters {
    uint64_t bytes, pages, verified_pages, refetched_pages, eexist, eagain, requests, in_flight,
             faults, faults_waited, started_ns, finished_ns, first_request_ns;
    ...;
};
struct dp_fault { uint64_t granule, read_ns, done_ns; uint32_t tid; ...; };
struct dp_stages {
    uint64_t read_ns, sent_ns, first_byte_ns, last_byte_ns, verified_ns, installed_ns;
};
struct dp_fetch { uint64_t granule; struct dp_stages t; };
struct dp_migration {
    int uffd;
    uint8_t *alias;
    uint64_t guest_base, size, granularity, granules, pages;
    const uint64_t *digests;
    const uint8_t *kinds;
    uint64_t max_request;
    uint8_t *state;
    uint64_t present, cursor;
    struct dp_fault *faults;
    uint64_t fault_capacity, faults_logged, faults_dropped;
    struct dp_fetch *fetches;
    uint64_t fetch_capacity, fetches_logged;
    struct dp_counters urgent, background;
    struct dp_histogram fault_latency;
    uint64_t chunk_bytes;
    uint32_t window;
    uint64_t cap_bytes_per_s;
    int background_nice;
    int preempt;
    uint32_t vcpus, cpus;
    uint64_t background_waiters;
    uint64_t collapse_span, collapse_ranges;
    uint32_t *ranges_ready;
    uint64_t ranges_queued;
    int collapse_fd;
    int stop;
    uint64_t mismatched_pages, first_mismatch;
    char error[...];
    ...;
};

int dp_init(struct dp_migration *m);
void dp_free(struct dp_migration *m);
int dp_faults_run(struct dp_migration *m, int fd, int poll_ms);
int dp_background_run(struct dp_migration *m, int fd);
int dp_poison_source_pages(struct dp_migration *m);
int dp_claim_for_poison(struct dp_migration *m, uint64_t granule);
int dp_poison_granule(struct dp_migration *m, uint64_t granule);
void dp_release_poison_claim(struct dp_migration *m, uint64_t granule, int state);
void dp_mark_done(struct dp_migration *m, uint64_t first, uint64_t end, int state);
int dp_collapse_init(struct dp_migration *m, uint64_t span, int eventfd);
void dp_collapse_free(struct dp_migration *m);

struct src_stream {
    int fd;
    const uint8_t *image;
    uint64_t size, max_request;
    int stall_ms;
    int stop;
    uint64_t requests, bytes, bad_request, out_of_range;
    struct dp_histogram latency;
    const uint8_t *initial;
    size_t initial_len;
    uint32_t corrupt_threshold;
    const uint8_t *always_wrong;
    uint8_t *served_wrong;
    uint64_t rng;
    uint64_t injected[...];
    ...;
};
int src_serve(struct src_stream *s);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "migrator._dataplane",
    '#include "dataplane.h"\n#include "dest_fetch.h"',
    # relative to the repository root, where setuptools builds: an absolute path would put the
    # object files under build/temp.../<that path>, or beside the sources
    sources=[f"migrator/_cffi_src/{name}" for name in _SOURCES],
    include_dirs=[str(_HERE)],
    libraries=["xxhash"],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)
