"""The `migrator source` daemon: start line, safety rules, image files, loops, clean stop."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.daemons import daemon_log, stop_daemon
from migrator.client import PageStream, fetch_manifest, fetch_pages
from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import digests
from migrator.source import GuestImage
from helpers.pages import fetch_into

MiB = 1 << 20


def run_source(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrator.cli", "source", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_start_line_names_address_size_seed_and_auth(source):
    line = next(l for l in source.log.splitlines() if "listening on" in l)
    assert source.url in line and "64 MiB" in line and f"seed {source.seed}" in line
    assert "auth on" in line


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "example.org:8470"])
def test_listening_beyond_loopback_without_a_token_is_refused(listen):
    env = {"PATH": "/usr/bin:/bin"}  # no MIGRATOR_TOKEN
    r = run_source("--listen", listen, "--memory", "2MiB", env=env)
    assert r.returncode != 0
    assert "refusing to listen" in r.stderr and "--token-file" in r.stderr


def test_listening_beyond_loopback_with_a_token_is_allowed(start):
    s = start("2MiB", token="secret", extra_args=["--listen", "0.0.0.0:0"])
    url = s.url.replace("0.0.0.0", "127.0.0.1")
    assert fetch_manifest(url, "secret").size == 2 * MiB


@pytest.mark.parametrize("args, words", [
    (["--memory", "3MiB"], "multiple of 2 MiB"),
    (["--memory", "lots"], "cannot read size"),
    (["--listen", "localhost"], "HOST:PORT"),
    (["--image", "/nonexistent/guest.img"], "/nonexistent/guest.img"),
])
def test_bad_arguments_are_refused_with_a_message(args, words):
    r = run_source("--listen", "127.0.0.1:0", *args)
    assert r.returncode != 0
    assert words in r.stderr
    assert "Traceback" not in r.stderr


def test_an_image_file_is_served_as_is(start, tmp_path):
    with GuestImage.generate(8 * MiB, 99) as image:
        path = tmp_path / "guest.img"
        path.write_bytes(image.view)
        expected = image.digests
    s = start("8MiB", extra_args=["--image", str(path)])
    m = fetch_manifest(s.url, None)
    assert m.digests == expected and m.image_id.startswith("file:")
    assert digests(fetch_pages(s.url, None, 0, 8 * MiB)) == expected
    assert f"file {path}" in s.log


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_both_event_loops_serve_streams(start, loop):
    s = start("4MiB", extra_args=["--loop", loop])
    assert f"loop {loop}" in s.log
    expected = fetch_manifest(s.url, None).digests
    with PageStream(s.url, "urgent", None, session="loop") as stream:
        buf = bytearray(4 * MiB)
        fetch_into(stream, 0, 4 * MiB, memoryview(buf))
    assert digests(buf) == expected


def test_sigterm_stops_cleanly_with_streams_open(start):
    s = start("4MiB")
    streams = [PageStream(s.url, kind, None, session="stop") for kind in ("urgent", "background")]
    streams[1].send(1, 0, PAGE_SIZE)  # one reply left unread
    assert stop_daemon(s.proc, timeout=10) == 0
    log = daemon_log(s.proc)
    assert "source stopping on SIGTERM" in log and "Traceback" not in log
    for stream in streams:
        stream.close()
