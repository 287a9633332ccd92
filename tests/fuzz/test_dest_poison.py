"""Fuzz the destination's one endpoint that reads a body, POST /v1/migrations/SESSION/poison
{"page": N}: any body gets a 4xx with a message, or a 200 for a page of the guest; and a
request for a guest that has left must never touch another guest's memory."""

from __future__ import annotations

import json
import os
import threading
import time
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.guest.touch import touch
from migrator.guest.session import DestinationSession
from migrator.guest.memory import GuestMemory
from migrator.protocol import PAGE_SIZE

from e2e.conftest import run_guest

from .budget import fuzz
from .conftest import AUTH, assert_no_errors_of_ours
from .rawhttp import exchange, request_bytes
from .strategies import json_values


class Guest:
    """A guest connected to the destination, its memory migrated, idle: its vCPUs touch
    nothing unless a test says so."""

    def __init__(self, dest):
        self.link = DestinationSession(dest.socket, 1)
        self.memory = GuestMemory(self.link.layout["size"], self.link.layout["memory_page_size"])
        self.link.hand_over(self.memory)
        self.session = self.link.session
        self.pages = self.link.layout["size"] // PAGE_SIZE
        self._vcpus: list[threading.Thread] = []

    def touch_returns(self, page: int, timeout: float = 5.0) -> bool:
        """Touch a page from a vCPU thread; False if the access is still blocked after timeout."""
        done = threading.Event()

        def vcpu() -> None:
            touch(array("Q", [self.memory.view.address + page * PAGE_SIZE]))
            done.set()

        t = threading.Thread(target=vcpu, daemon=True)
        t.start()
        self._vcpus.append(t)
        return done.wait(timeout)

    def wait_complete(self, dest, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = exchange(dest.port, request_bytes("GET", "/v1/status", AUTH))
            phase = next(m["phase"] for m in json.loads(status.body)["migrations"]
                         if m["session"] == self.session)
            if phase == "complete":
                return
            assert phase == "running" and time.monotonic() < deadline, phase
            time.sleep(0.05)

    def close(self) -> None:
        # A vCPU may be blocked on a fault nobody will resolve: releasing the userfaultfd (ours
        # and the destination's copy, which goes with the session) lets it retry and go on.
        # Only then may the memory be unmapped; unmapping under it would crash the test process.
        self.link.close()
        self.memory.uffd.close()
        for t in self._vcpus:
            t.join(10)
        if any(t.is_alive() for t in self._vcpus):
            return  # leak the mapping rather than pull it from under a running vCPU
        self.memory.view.close()
        os.close(self.memory.fd)


@pytest.fixture(scope="module")
def guest(dest):
    g = Guest(dest)
    g.wait_complete(dest)
    yield g
    g.close()


def _poison(dest, session: str, body: bytes, content_type: str | None = "application/json"):
    headers = AUTH + [("Content-Length", str(len(body)))]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return exchange(dest.port, request_bytes("POST", f"/v1/migrations/{session}/poison", headers,
                                             body))


def _bodies(pages: int):
    page = st.integers(0, pages - 1) | st.integers() | json_values
    return st.one_of(
        st.fixed_dictionaries({"page": page}, optional={"x": json_values}),
        json_values,
        st.text(max_size=40)).map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64)


@fuzz(150)
@given(st.data())
def test_any_poison_body_gets_a_4xx_with_a_message_or_poisons_a_page(dest, guest, data):
    body = data.draw(_bodies(guest.pages), label="body")
    content_type = data.draw(st.sampled_from(["application/json", "text/plain", None]),
                             label="content type")
    reply = _poison(dest, guest.session, body, content_type)
    assert reply is not None and reply.status < 500, (reply.status, reply.text)
    try:
        page = json.loads(body)["page"]
    except (ValueError, TypeError, KeyError, IndexError):
        page = None
    valid = type(page) is int and 0 <= page < guest.pages
    if valid:
        assert reply.status == 200 and json.loads(reply.body)["page"] == page, reply
    else:
        assert 400 <= reply.status < 500 and reply.text.strip(), reply


def test_poison_for_an_unknown_session_is_a_404_with_a_message(dest):
    reply = _poison(dest, "nosuch", b'{"page": 1}')
    assert reply.status == 404 and "nosuch" in reply.text


def test_after_the_poison_fuzz_the_dest_serves_real_guests(dest):
    assert dest.alive(), dest.log()
    report = run_guest(dest, "--vcpus", "2", "--accesses", "500")
    assert report["migration"]["phase"] == "complete"
    assert_no_errors_of_ours(dest.log())  # (before the known 500s below)


def test_poison_with_an_unknown_charset_is_read_as_json_not_a_500(dest, guest):
    # The body is JSON (UTF-8): a bogus charset label does not make it unreadable.
    reply = _poison(dest, guest.session, b'{"page": 1}', "application/json; charset=nope")
    assert reply.status == 200 and json.loads(reply.text)["page"] == 1, reply


def test_poison_with_deeply_nested_json_is_a_400(dest, guest):
    reply = _poison(dest, guest.session, b"[" * 30000 + b"]" * 30000)
    assert reply.status == 400 and reply.text.strip(), reply


def test_poison_for_a_guest_that_has_left_is_refused_and_touches_no_other_guest(dest):
    gone = run_guest(dest, "--vcpus", "1", "--accesses", "100")["migration"]["session"]
    other = Guest(dest)  # likely gets the departed guest's fd numbers on the destination
    try:
        other.wait_complete(dest)
        page = 7
        reply = _poison(dest, gone, json.dumps({"page": page}).encode())
        assert other.touch_returns(page), "the other guest's vCPU is stuck on a page it had"
        assert reply is not None and 400 <= reply.status < 500 and reply.text.strip(), reply
    finally:
        other.close()
