"""HTTP load on a source's page API with Locust: many readers of /v1/pages, checked against the
manifest.

Each user GETs /v1/manifest once, then reads random page ranges (4 KiB, 64 KiB, 1 MiB, 2 MiB,
aligned to 4 KiB), and for a sample of responses (--verify-fraction) checks the XXH3-64 digest
of every 4 KiB page against the manifest; a mismatch fails the request, and each check shows
up in the statistics as a DIGEST row. The token comes from $MIGRATOR_TOKEN (never the command
line).

    MIGRATOR_TOKEN=... locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 30s \\
        --host http://127.0.0.1:8470
    # distributed: one master, any number of workers (on other machines too)
    locust -f loadtests/locustfile.py --master --headless -u 500 -r 50 -t 5m \\
        --expect-workers 4 --host http://SOURCE:8470
    MIGRATOR_TOKEN=... locust -f loadtests/locustfile.py --worker --master-host MASTER

Needs only locust, msgpack and xxhash: `pip install -e '.[load]'` here; on worker machines
`pip install locust msgpack xxhash` is enough (migrator itself is not imported).
"""

from __future__ import annotations

import os
import random
import sys
import time
from array import array

import msgpack
import xxhash
from locust import HttpUser, between, events, task

PAGE = 4096
SIZES = {"4 KiB": 4 << 10, "64 KiB": 64 << 10, "1 MiB": 1 << 20, "2 MiB": 2 << 20}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--verify-fraction", type=float, default=0.1, include_in_web_ui=True,
                        help="fraction of page responses whose every page is checked against "
                             "the manifest's digest (default 0.1)")


def _auth() -> dict:
    token = os.environ.get("MIGRATOR_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


class PageReader(HttpUser):
    """Reads random page ranges of the source's image, as a fleet of tools would."""

    wait_time = between(0, 0.01)

    def on_start(self) -> None:
        self.headers = _auth()
        self.digests = array("Q")
        self.pages = 0
        with self.client.get("/v1/manifest", headers=self.headers, name="/v1/manifest",
                             catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
                self.stop()
                return
            try:
                m = msgpack.unpackb(r.content, raw=False)
                digests = array("Q")
                digests.frombytes(m["digests"])
                if sys.byteorder != "little":
                    digests.byteswap()
                assert m["page_size"] == PAGE and len(digests) * PAGE == sum(
                    x["size"] for x in m["regions"])
            except (ValueError, KeyError, TypeError, AssertionError, msgpack.UnpackException) as e:
                r.failure(f"malformed manifest: {type(e).__name__}: {e}")
                self.stop()
                return
        self.digests, self.pages = digests, len(digests)

    def _read(self, label: str) -> None:
        if not self.pages:
            return
        length = min(SIZES[label], self.pages * PAGE)
        first = random.randrange(0, self.pages - length // PAGE + 1)
        offset = first * PAGE
        with self.client.get(f"/v1/pages?offset={offset}&length={length}", headers=self.headers,
                             name=f"/v1/pages [{label}]", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
            elif len(r.content) != length:
                r.failure(f"{len(r.content)} bytes for a {length}-byte range")
            elif random.random() < self.environment.parsed_options.verify_fraction:
                bad = self._verify(r.content, first)
                if bad:
                    r.failure(f"{bad} pages of {offset}+{length} differ from the manifest")

    def _verify(self, body: bytes, first: int) -> int:
        began = time.perf_counter()
        view = memoryview(body)
        digest = xxhash.xxh3_64_intdigest
        bad = sum(1 for i in range(len(body) // PAGE)
                  if digest(view[i * PAGE:(i + 1) * PAGE]) != self.digests[first + i])
        events.request.fire(request_type="DIGEST", name="manifest check",
                            response_time=(time.perf_counter() - began) * 1000,
                            response_length=len(body), context={},
                            exception=AssertionError(f"{bad} pages differ") if bad else None)
        return bad

    @task(8)
    def page_4k(self) -> None:
        self._read("4 KiB")

    @task(4)
    def range_64k(self) -> None:
        self._read("64 KiB")

    @task(2)
    def range_1m(self) -> None:
        self._read("1 MiB")

    @task(1)
    def range_2m(self) -> None:
        self._read("2 MiB")
