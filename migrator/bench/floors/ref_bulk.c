/*
 * ref-bulk: the floor of the background pull, done in C.
 *
 * The destination pulls the whole region over one loopback TCP connection in chunks (4 MiB,
 * or one huge page when the backing's pages are larger), the next chunk requested before the
 * current one is checked. Per chunk: one request per run of data pages (zero pages never
 * travel), each reply received straight into the alias view of a memfd of the mode's backing,
 * in pieces, each piece checked against its pages' XXH3-64 as soon as it lands; then the zero
 * pages of the chunk checked; then one UFFDIO_CONTINUE of the chunk into the guest's
 * MINOR-registered view. The alias's page tables are built inside the timed loop, as the
 * figure has to build them at some point too: by one MADV_POPULATE_WRITE per chunk, which was
 * faster here than a page fault per 4 KiB inside the receive (--no-populate).
 *
 *   ref_bulk [--kinds FILE | --bytes N] [--backing shmem|hugetlb-2M|hugetlb-1G]
 *            [--chunk BYTES] [--window W] [--no-populate]
 *
 * --kinds: the manifest's page kinds (one byte a page), so that the same bytes travel as in
 * the figure. Prints one JSON object; bytes_per_s counts data bytes, as the figure does.
 */
#include "floor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct result {
	uint64_t data_bytes, mismatched, ns, chunks;
	uint64_t receive_ns, verify_zeros_ns, install_ns;  /* where the time went */
};

static struct image im;
static struct memory mem;
static struct parties parties;
static int window, populate;
static size_t chunk_pages;

static struct chunk request(int fd, size_t k)
{
	size_t first = k * chunk_pages, last = first + chunk_pages;
	return chunk_request(fd, &im, first, last < im.pages ? last : im.pages, (uint32_t)k);
}

static void destination(struct channel *ch, void *arg)
{
	struct result r = { 0 };
	struct chunk *ring = calloc(window, sizeof(*ring));
	size_t chunks = (im.pages + chunk_pages - 1) / chunk_pages, requested = 0;
	(void)arg;
	memory_map_alias(&mem);
	int fd = source_connect(parties.port);
	char go;
	chan_send(ch->ctl[1], "R", 1);
	chan_recv(ch->ctl[1], &go, 1);

	uint64_t t0 = now_ns();
	for (; requested < chunks && requested < (size_t)window; requested++)
		ring[requested % window] = request(fd, requested);
	for (size_t k = 0; k < chunks; k++) {
		struct chunk c = ring[k % window];
		uint64_t t1 = now_ns();
		r.mismatched += chunk_receive(fd, &c, &mem, &im, populate, &r.data_bytes);
		if (requested < chunks) {  /* keep the source busy while this chunk is finished */
			ring[requested % window] = request(fd, requested);
			requested++;
		}
		uint64_t t2 = now_ns();
		r.mismatched += memory_verify_zeros(&mem, &im, c.first, c.last - c.first);
		uint64_t t3 = now_ns();
		memory_continue(&mem, c.first * PAGE, (c.last - c.first) * PAGE);
		r.receive_ns += t2 - t1;
		r.verify_zeros_ns += t3 - t2;
		r.install_ns += now_ns() - t3;
	}
	r.ns = now_ns() - t0;
	r.chunks = chunks;
	close(fd);
	chan_send(ch->ctl[1], &r, sizeof(r));
}

int main(int argc, char **argv)
{
	const char *backing = arg_str(argc, argv, "--backing", "shmem");
	size_t chunk = arg_long(argc, argv, "--chunk", 4L << 20);
	window = arg_long(argc, argv, "--window", 2);
	populate = !arg_flag(argc, argv, "--no-populate");
	image_from_args(&im, argc, argv, 1L << 30);
	memory_create(&mem, backing, im.pages * PAGE);
	if (chunk < mem.page_size)  /* a hugetlb page is continued whole */
		chunk = mem.page_size;
	if (chunk % mem.page_size || window < 1) {
		errno = EINVAL;
		die("--chunk is a multiple of the backing's page size, --window at least 1");
	}
	chunk_pages = chunk / PAGE;

	parties_start(&parties, &im, destination, NULL);
	chan_send(parties.ch.ctl[0], "G", 1);
	struct result r;
	chan_recv(parties.ch.ctl[0], &r, sizeof(r));
	parties_stop(&parties);

	double seconds = r.ns / 1e9;
	printf("{\"program\": \"ref-bulk\", \"backing\": \"%s\", \"bytes\": %zu, \"data_bytes\": %lu, "
	       "\"chunk_bytes\": %zu, \"window\": %d, \"populate\": %s, \"chunks\": %lu, "
	       "\"mismatched\": %lu, \"seconds\": %.6f, \"bytes_per_s\": %.0f, \"stage_seconds\": "
	       "{\"receive_and_verify\": %.6f, \"verify_zero_pages\": %.6f, \"install\": %.6f}}\n",
	       backing, im.pages * PAGE, r.data_bytes, chunk, window, populate ? "true" : "false",
	       r.chunks, r.mismatched, seconds, r.data_bytes / seconds, r.receive_ns / 1e9,
	       r.verify_zeros_ns / 1e9, r.install_ns / 1e9);
	return 0;
}
