/*
 * The source's side of an upgraded page stream, after the HTTP 101: read page requests,
 * answer each in order with a reply header and the page bytes, straight from the image
 * mapping (one writev, no copy in user space), or with an error reply saying what was wrong.
 *
 * One thread per stream, so an urgent stream never waits behind a background one in an event
 * loop. Requests are read only as fast as they are answered: a client that floods requests
 * fills its own socket buffer, not our memory. A stream is silent for as long as no vCPU
 * faults, which may be minutes, so silence alone never closes it; half a request that stops
 * arriving does (a destination writes each 16-byte request whole).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "dataplane.h"

#define SOURCE_POLL_MS 200
#define ERROR_BODY_MAX 4096

/* Write all of iov, waiting for room. Returns 0, or -errno when the peer is gone or we stop. */
int src_write_all(struct src_stream *s, struct iovec *iov, int n)
{
	while (n) {
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n };
		ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			struct pollfd p = { .fd = s->fd, .events = POLLOUT };
			if (s->stop)
				return -ECANCELED;
			poll(&p, 1, SOURCE_POLL_MS);
			continue;
		}
		while (n && (size_t)w >= iov->iov_len) {
			w -= iov->iov_len;
			iov++;
			n--;
		}
		if (n) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= w;
		}
	}
	return 0;
}

static int refuse(struct src_stream *s, const struct dp_request *r, uint16_t status,
		  const char *message)
{
	size_t len = strnlen(message, ERROR_BODY_MAX);
	struct dp_reply h = { r->id, status, 0, r->offset, (uint32_t)len };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)message, len } };
	if (status == 416)
		s->out_of_range++;
	else
		s->bad_request++;
	s->requests++;
	return src_write_all(s, iov, 2);
}

/* The same checks and messages as PageRequest.check in migrator/protocol/frames.py. */
static int check_and_send(struct src_stream *s, const struct dp_request *r)
{
	char message[256];
	if (r->length == 0 || r->offset % DP_PAGE || r->length % DP_PAGE) {
		snprintf(message, sizeof(message), "range %lu+%u is not a non-empty, %u-byte aligned "
			 "range", (unsigned long)r->offset, r->length, DP_PAGE);
		return refuse(s, r, 400, message);
	}
	if (r->length > s->max_request) {
		snprintf(message, sizeof(message), "length %u exceeds the limit %lu", r->length,
			 (unsigned long)s->max_request);
		return refuse(s, r, 400, message);
	}
	if (r->offset + r->length > s->size) {
		snprintf(message, sizeof(message), "range %lu+%u is outside the image of %lu bytes",
			 (unsigned long)r->offset, r->length, (unsigned long)s->size);
		return refuse(s, r, 416, message);
	}
	if (s->corrupt_threshold || s->always_wrong)
		return src_send_injected(s, r);
	struct dp_reply h = { r->id, DP_STATUS_OK, 0, r->offset, r->length };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)(s->image + r->offset), r->length } };
	int rc = src_write_all(s, iov, 2);
	if (rc == 0) {
		s->requests++;
		s->bytes += r->length;
	}
	return rc;
}

/* Answer one request, timing it (refusals too). */
static int answer(struct src_stream *s, const struct dp_request *r)
{
	uint64_t began = monotonic_ns();
	int rc = check_and_send(s, r);
	if (rc == 0)
		dp_observe(&s->latency, monotonic_ns() - began);
	return rc;
}

/*
 * Serve until the peer closes (0), the peer breaks or we are stopped (-errno), or half a
 * request stalls for stall_ms (-ETIMEDOUT): then the caller aborts the connection.
 */
int src_serve(struct src_stream *s)
{
	uint8_t buf[sizeof(struct dp_request) * 256];
	size_t have = s->initial_len < sizeof(buf) ? s->initial_len : sizeof(buf);
	memcpy(buf, s->initial, have);
	uint64_t partial_since = 0;
	for (;;) {
		size_t done = 0;
		while (have - done >= sizeof(struct dp_request)) {
			struct dp_request r;
			memcpy(&r, buf + done, sizeof(r));
			done += sizeof(r);
			int rc = answer(s, &r);
			if (rc)
				return rc;
		}
		memmove(buf, buf + done, have - done);
		have -= done;
		if (have && !partial_since)
			partial_since = monotonic_ns();
		if (!have)
			partial_since = 0;

		struct pollfd p = { .fd = s->fd, .events = POLLIN };
		int r = poll(&p, 1, SOURCE_POLL_MS);
		if (s->stop)
			return -ECANCELED;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0) {
			if (partial_since && monotonic_ns() - partial_since > (uint64_t)s->stall_ms * 1000000ull)
				return -ETIMEDOUT;
			continue;
		}
		ssize_t n = recv(s->fd, buf + have, sizeof(buf) - have, MSG_DONTWAIT);
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		partial_since = 0;  /* progress: restart the stall clock */
		have += n;
	}
}
