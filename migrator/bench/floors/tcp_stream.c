/*
 * Raw loopback TCP bulk throughput, the floor for pushing a whole 1 GiB page: a server thread
 * sends --bytes N (default 1 GiB) in 4 MiB writes, the client recv()s straight into a
 * pre-faulted mmap'ed buffer. For scale, a memcpy of the same size is timed too.
 *
 *   gcc -O2 -pthread -o tcp_stream tcp_stream.c && ./tcp_stream --bytes 1073741824
 *
 * Prints {"bytes","tcp_seconds","tcp_bytes_per_s","memcpy_seconds"}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (4UL << 20)

static size_t total = 1UL << 30;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static char *map(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	memset(p, 1, len);  /* fault it in now: measure the copy, not page faults */
	return p;
}

static void *server(void *arg)
{
	int lfd = (int)(intptr_t)arg, fd = accept(lfd, NULL, NULL);
	char *chunk = map(CHUNK);
	if (fd < 0)
		die("accept");
	for (size_t done = 0; done < total;) {
		size_t want = total - done < CHUNK ? total - done : CHUNK;
		ssize_t n = send(fd, chunk, want, 0);
		if (n <= 0)
			die("send");
		done += n;
	}
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i += 2)
		if (!strcmp(argv[i], "--bytes"))
			total = strtoull(argv[i + 1], NULL, 0);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(addr);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1) < 0)
		die("listen");
	getsockname(lfd, (struct sockaddr *)&addr, &alen);
	char *dst = map(total);

	pthread_t t;
	pthread_create(&t, NULL, server, (void *)(intptr_t)lfd);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect");
	double t0 = now_s();
	for (size_t done = 0; done < total;) {
		ssize_t n = recv(fd, dst + done, total - done, 0);
		if (n <= 0)
			die("recv");
		done += n;
	}
	double tcp = now_s() - t0;
	pthread_join(t, NULL);

	char *src = map(total);
	t0 = now_s();
	memcpy(dst, src, total);
	double copy = now_s() - t0;
	if (dst[total - 1] != 1)  /* keep the copy observable */
		return 1;
	printf("{\"bytes\": %zu, \"tcp_seconds\": %.4f, \"tcp_bytes_per_s\": %.0f, "
	       "\"memcpy_seconds\": %.4f}\n", total, tcp, total / tcp, copy);
	return 0;
}
