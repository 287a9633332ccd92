"""The source's plain HTTP endpoints: health, auth, manifest, bounded page reads, status."""

from __future__ import annotations

import http.client
import json
import re
import socket
from urllib.parse import urlsplit

import pytest

from helpers.daemons import stop_daemon
from migrator.client import (
    PageStream, SourceRefused, SourceUnreachable, StreamError, Unauthorized, fetch_manifest,
    fetch_pages,
)
from migrator.client.http import get
from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import digests
from migrator.protocol.frames import MAX_REQUEST_LENGTH
from helpers.pages import fetch_into

MiB = 1 << 20


def request(source, path: str, token: str | None = None, method: str = "GET"):
    """(status, headers, body) of one raw request."""
    url = urlsplit(source.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def test_healthz_answers_without_a_token(source):
    assert request(source, "/healthz")[::2] == (200, b"ok")


@pytest.mark.parametrize("path", ["/v1/manifest", "/v1/pages?offset=0&length=4096", "/v1/status",
                                  "/v1/stream/urgent?session=s", "/metrics", "/v1/nothing"])
@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_every_other_path_needs_the_token_and_does_not_say_why(source, path, token):
    status, headers, body = request(source, path, token)
    assert (status, body) == (401, b"unauthorized\n")
    assert headers["WWW-Authenticate"] == "Bearer"


def test_wrong_token_is_refused_by_the_client_with_the_url(source):
    with pytest.raises(Unauthorized, match=r"/v1/manifest.*401") as e:
        fetch_manifest(source.url, "wrong")
    assert isinstance(e.value, ConnectionError) and e.value.status == 401


def test_manifest_is_the_image_generated_from_the_seed(source, expected):
    status, headers, _ = request(source, "/v1/manifest", source.token)
    assert status == 200 and headers["Content-Type"] == "application/msgpack"
    m = fetch_manifest(source.url, source.token)
    assert m.image_id == expected.image_id
    assert m.digests == expected.digests and m.kinds == expected.kinds
    assert [r.name for r in m.regions] == ["ram-below-4g"] and m.size == 64 * MiB


@pytest.mark.parametrize("offset, length", [
    (0, PAGE_SIZE), (5 * MiB + 3 * PAGE_SIZE, 7 * PAGE_SIZE), (0, 64 * MiB), (63 * MiB, MiB)])
def test_pages_match_the_manifest_digests(source, expected, offset, length):
    data = fetch_pages(source.url, source.token, offset, length)
    assert len(data) == length
    first = offset // PAGE_SIZE
    assert digests(data) == expected.digests[first:first + length // PAGE_SIZE]


@pytest.mark.parametrize("query, names", [
    ("length=4096", "offset"),
    ("offset=0", "length"),
    ("offset=abc&length=4096", "offset"),
    ("offset=0&length=1e3", "length"),
    ("offset=-4096&length=4096", "offset"),
    ("offset=100&length=4096", "aligned"),
    ("offset=0&length=100", "aligned"),
    ("offset=0&length=0", "non-empty"),
    (f"offset=0&length={MAX_REQUEST_LENGTH + PAGE_SIZE}", "limit"),
])
def test_malformed_page_reads_get_400_saying_what_to_fix(source, query, names):
    status, _, body = request(source, f"/v1/pages?{query}", source.token)
    assert status == 400
    message = body.decode()
    assert names in message and ("pass" in message or "multiple" in message)
    assert fetch_pages(source.url, source.token, 0, PAGE_SIZE)  # still serving


@pytest.mark.parametrize("offset, length", [(64 * MiB, PAGE_SIZE), (60 * MiB, 8 * MiB),
                                            (1 << 40, PAGE_SIZE)])
def test_reads_beyond_the_image_get_416_with_the_image_size(source, offset, length):
    status, headers, body = request(source, f"/v1/pages?offset={offset}&length={length}",
                                    source.token)
    assert status == 416
    assert f"{64 * MiB} bytes" in body.decode()
    assert headers["Content-Range"] == f"bytes */{64 * MiB}"
    with pytest.raises(SourceRefused, match="416"):
        fetch_pages(source.url, source.token, offset, length)


def test_status_reports_image_and_traffic(source):
    before = json.loads(get(source.url, "/v1/status", source.token))
    fetch_pages(source.url, source.token, 0, 2 * PAGE_SIZE)
    status = json.loads(get(source.url, "/v1/status", source.token))
    assert status["image"]["size"] == 64 * MiB
    assert status["image"]["pages"] == 64 * MiB // PAGE_SIZE
    assert status["image"]["origin"] == f"seed {source.seed}"
    assert status["auth"] is True
    assert status["pages_endpoint"]["bytes"] - before["pages_endpoint"]["bytes"] == 2 * PAGE_SIZE
    assert set(status["streams"]) == {"urgent", "background"}
    assert {"requests", "bytes", "errors", "open"} <= set(status["streams"]["urgent"])


def test_unreachable_source_is_a_connection_error_naming_the_url(start):
    s = start("2MiB")
    url = s.url
    stop_daemon(s.proc)
    with pytest.raises(SourceUnreachable, match=f"cannot connect to {url}/v1/manifest"):
        fetch_manifest(url, None, timeout=5)


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}{{{want}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_count_what_was_served(source):
    before = get(source.url, "/metrics", source.token).decode()
    fetch_pages(source.url, source.token, 0, 3 * PAGE_SIZE)
    request(source, "/v1/pages?offset=1&length=4096", source.token)
    request(source, "/v1/status", "wrong")
    with PageStream(source.url, "urgent", source.token, session="metrics") as stream:
        fetch_into(stream, 0, PAGE_SIZE, memoryview(bytearray(PAGE_SIZE)))
        with pytest.raises(StreamError):
            fetch_into(stream, 1 << 40, PAGE_SIZE, memoryview(bytearray(PAGE_SIZE)))
    after = get(source.url, "/metrics", source.token).decode()

    def grew(name, **labels):
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert grew("migrator_source_served_bytes_total", endpoint="pages") == 3 * PAGE_SIZE
    assert grew("migrator_source_served_bytes_total", endpoint="urgent") == PAGE_SIZE
    assert grew("migrator_source_requests_total", endpoint="pages", outcome="bad_request") == 1
    assert grew("migrator_source_requests_total", endpoint="urgent", outcome="out_of_range") == 1
    assert grew("migrator_source_requests_total", endpoint="status", outcome="unauthorized") == 1
    assert grew("migrator_source_request_duration_seconds_count", endpoint="urgent") == 2


def test_a_client_leaving_mid_download_does_not_disturb_the_source(source, expected):
    url = urlsplit(source.url)
    for path in ("/v1/pages?offset=0&length=67108864", "/v1/manifest"):
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {source.token}\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    stream = PageStream(source.url, "background", source.token, session="leaver")
    stream.send(1, 0, 64 * MiB)
    stream.recv_header()
    stream.close()
    data = fetch_pages(source.url, source.token, 0, MiB)
    assert digests(data) == expected.digests[:MiB // PAGE_SIZE]
    assert "Traceback" not in source.log and "ERROR" not in source.log
