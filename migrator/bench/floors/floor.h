/*
 * The plumbing the reference programs share, so that each of them (ref_fault.c, ref_bulk.c,
 * ref_huge.c) reads as its policy alone.
 *
 * Every reference runs the same three parties as a migration, each its own process, because
 * a switch between processes costs more than one between threads of one process:
 * - the guest (the parent): owns the memfd's guest view, registered for MINOR faults, and the
 *   userfaultfd; its toucher threads time each access with CLOCK_MONOTONIC;
 * - the source (source_start): a page server speaking the frames of
 *   migrator/protocol/frames.py over loopback TCP, a thread per connection;
 * - the destination (dest_start): maps the alias view, fetches, verifies each 4 KiB page with
 *   XXH3-64 (Debian's libxxhash) against a table computed before the clock starts (the
 *   manifest), and UFFDIO_CONTINUEs into the guest view through the inherited userfaultfd.
 *
 * The image: one byte of kind per 4 KiB page (0 data, 1 zero; the manifest's own kinds when
 * the caller passes them), data page p holding page p % POOL_PAGES of a random pool. Zero pages
 * never travel, as in migrator; every page, zero or not, is verified before it is installed.
 */
#ifndef FLOOR_H
#define FLOOR_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PAGE 4096UL
#define KIND_DATA 0
#define KIND_ZERO 1
#define MAX_RUN (1UL << 30)  /* frames.MAX_REQUEST_LENGTH */

/* --- arguments: `--name value` pairs --------------------------------------------------- */
long arg_long(int argc, char **argv, const char *name, long fallback);
const char *arg_str(int argc, char **argv, const char *name, const char *fallback);
int arg_flag(int argc, char **argv, const char *name);

size_t file_size(const char *path);
uint64_t now_ns(void);
void die(const char *what);

/* --- the image ----------------------------------------------------------------------------- */
struct image {
	size_t pages;
	uint8_t *kinds;
	char *pool;  /* pool_pages random pages: the content of data pages */
	size_t pool_pages;
	uint64_t *pool_digest;
	uint64_t zero_digest;
};

/* kinds_path: a file of one kind byte per page (its length sets pages); NULL: pages, all data */
void image_load(struct image *im, size_t pages, const char *kinds_path);
/* The image of --kinds FILE, else of --bytes N (default_bytes) of data pages. */
void image_from_args(struct image *im, int argc, char **argv, long default_bytes);
uint64_t image_digest(const struct image *im, size_t page);

struct run {
	uint64_t offset, length;  /* bytes in the image */
};
/* The runs of data pages in [first, last) (page numbers), at most MAX_RUN each; *n set. */
struct run *image_data_runs(const struct image *im, size_t first, size_t last, size_t *n);

/* --- guest memory: a memfd of the backing, set up as migrator's guest sets up its RAM
 * (fallocated, preallocated, its guest view registered MINOR and MISSING) ------------------- */
struct memory {
	int fd, uffd;
	size_t size, page_size;
	char *guest, *alias;
};

/* backing: "shmem", "hugetlb-2M" or "hugetlb-1G" */
void memory_create(struct memory *m, const char *backing, size_t size);
void memory_map_alias(struct memory *m);  /* in the destination */
/* UFFDIO_CONTINUE [offset, offset + len) of the guest view; EEXIST (mapped already) is fine. */
void memory_continue(const struct memory *m, uint64_t offset, uint64_t len);
/* Pages of [first, first + n) whose XXH3-64 through the alias differs from the image's. */
size_t memory_verify(const struct memory *m, const struct image *im, size_t first, size_t n);
/* The same for the zero pages of [first, first + n) only: those no reply brought. */
size_t memory_verify_zeros(const struct memory *m, const struct image *im, size_t first, size_t n);

/* --- the source: a page server on loopback -------------------------------------------------- */
int source_start(const struct image *im, pid_t *pid);  /* returns the port */
int source_connect(int port);

/* Frames (migrator/protocol/frames.py), little-endian. */
struct request {
	uint32_t id;
	uint64_t offset;
	uint32_t length;
} __attribute__((packed));

struct reply {
	uint32_t id;
	uint16_t status, zero;
	uint64_t offset;
	uint32_t length;
} __attribute__((packed));

void send_all(int fd, const void *buf, size_t len);
/* One reply: its header (checked against rq) and its data straight into `into`. */
void recv_reply(int fd, const struct request *rq, char *into);
/* One reply of a run into the alias at rq->offset, each page verified as soon as it is whole,
 * while it is still in the cache and the next bytes are on the wire; returns the pages that
 * differ. */
size_t recv_run_verified(int fd, const struct request *rq, const struct memory *m,
			 const struct image *im);

/* --- chunks of the background pull --------------------------------------------------------- */
struct chunk {
	size_t first, last;  /* pages */
	uint32_t id;
	size_t runs_n;
	struct run *runs;
};

/* Send one request per run of data pages in [first, last), all at once. */
struct chunk chunk_request(int fd, const struct image *im, size_t first, size_t last, uint32_t id);
/* Receive a requested chunk's data into the alias, the chunk's alias page tables built first
 * (populate: MADV_POPULATE_WRITE, rather than a page fault per 4 KiB inside the receive), each
 * page verified as it lands. Adds the data bytes to *bytes; returns the pages that differ. */
size_t chunk_receive(int fd, struct chunk *c, const struct memory *m, const struct image *im,
		     int populate, uint64_t *bytes);

/* --- the destination: a child process, with two sockets to the guest ------------------------ */
/* Each a socketpair: [0] is the guest's end, [1] the destination's. ctl carries "ready",
 * "stop" and the destination's results; zap lets a bulk stream that reached the end of its
 * region ask the guest to unmap it (MADV_DONTNEED) so that it can be installed again. */
struct channel {
	int ctl[2], zap[2];
};

pid_t dest_start(struct channel *ch, void (*body)(struct channel *ch, void *arg), void *arg);
void chan_send(int fd, const void *buf, size_t len);
void chan_recv(int fd, void *buf, size_t len);

/* The guest's two children. */
struct parties {
	pid_t source, dest;
	int port;  /* the source's; set before the destination is forked */
	struct channel ch;
};

/* Start the source, then the destination (which sends one byte on ctl once it is ready),
 * and wait for that byte. */
void parties_start(struct parties *p, const struct image *im,
		   void (*destination)(struct channel *ch, void *arg), void *arg);
/* SIGTERM both children, by their PIDs, and wait for them. */
void parties_stop(struct parties *p);

/* --- numbers ------------------------------------------------------------------------------ */
void sort_u64(uint64_t *v, size_t n);
uint64_t quantile_u64(const uint64_t *sorted, size_t n, double q);  /* as migrator.stats */

#endif
