/*
 * Raw TCP page round trip over 127.0.0.1, the floor for fetching one 4 KiB page on demand:
 * a blocking client sends an 8-byte page number, a server thread answers with 4 KiB.
 * TCP_NODELAY on both ends.
 *
 *   gcc -O2 -pthread -o tcp_pingpong tcp_pingpong.c && ./tcp_pingpong --iterations 20000
 *
 * Prints {"p50_ns","p99_ns"} of the client-measured round trip (CLOCK_MONOTONIC).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static long iterations = 20000;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void exact(int fd, void *buf, size_t len, int sending)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = sending ? send(fd, (char *)buf + done, len - done, 0)
				    : recv(fd, (char *)buf + done, len - done, 0);
		if (n <= 0)
			die(sending ? "send" : "recv");
		done += n;
	}
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void *server(void *arg)
{
	int lfd = (int)(intptr_t)arg, fd = accept(lfd, NULL, NULL);
	char page[PAGE];
	uint64_t index;
	if (fd < 0)
		die("accept");
	nodelay(fd);
	memset(page, 0x5a, sizeof(page));
	for (long i = 0; i < iterations; i++) {
		exact(fd, &index, sizeof(index), 0);
		exact(fd, page, sizeof(page), 1);
	}
	close(fd);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i += 2)
		if (!strcmp(argv[i], "--iterations"))
			iterations = atol(argv[i + 1]);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(addr);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1) < 0)
		die("listen");
	getsockname(lfd, (struct sockaddr *)&addr, &alen);
	pthread_t t;
	pthread_create(&t, NULL, server, (void *)(intptr_t)lfd);

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect");
	nodelay(fd);
	uint64_t *lat = malloc(iterations * sizeof(*lat));
	char page[PAGE];
	for (long i = 0; i < iterations; i++) {
		uint64_t index = i, t0 = now_ns();
		exact(fd, &index, sizeof(index), 1);
		exact(fd, page, sizeof(page), 0);
		lat[i] = now_ns() - t0;
	}
	pthread_join(t, NULL);
	qsort(lat, iterations, sizeof(*lat), cmp_u64);
	printf("{\"p50_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64 "}\n",
	       lat[iterations / 2], lat[iterations * 99 / 100]);
	return 0;
}
