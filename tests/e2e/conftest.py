"""Real source and destination daemons on loopback, real guests, real userfaultfd."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from cffi_uffd import SIZE_2M, hugepages
from helpers.daemons import start_source, stop_daemon

IMAGE = "128MiB"
IMAGE_BYTES = 128 << 20
TOKEN = "e2e-token"


@pytest.fixture(scope="package")
def source():
    proc, url = start_source(IMAGE, seed=5, token=TOKEN)
    yield url
    stop_daemon(proc)


@pytest.fixture(scope="package")
def pool_2m():
    """Enough 2 MiB pages for two guests of IMAGE at once, plus one for the HGM probe."""
    need = 2 * IMAGE_BYTES // SIZE_2M + 1
    with hugepages.reserved(SIZE_2M, need) as got:
        if got < need:
            pytest.skip(f"the kernel gave {got} of {need} 2 MiB pages")
        yield


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dest:
    """`migrator dest` as a subprocess, stopped by PID.

    With `context` (an ssl.SSLContext trusting its certificate) it is reached over https://;
    pass its --tls-cert and --tls-key in extra.
    """

    def __init__(self, source_url: str, mode: str, hugepage_size: int = SIZE_2M, *extra: str,
                 context=None):
        self.dir = Path(tempfile.mkdtemp(prefix="migrator-dest-"))
        self.socket = str(self.dir / "guest.sock")
        self.context = context
        self.url = f"{'https' if context else 'http'}://127.0.0.1:{free_port()}"
        token_file = self.dir / "token"
        token_file.write_text(TOKEN)
        self.log_path = self.dir / "dest.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "migrator.cli", "dest", "--listen",
                 self.url.partition("://")[2],
                 "--source", source_url, "--mode", mode, "--hugepage-size", str(hugepage_size),
                 "--guest-socket", self.socket, "--token-file", str(token_file), *extra],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"dest exited: {self.log()}"
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1, context=context)
                break
            except OSError:
                assert time.monotonic() < deadline, f"dest not healthy: {self.log()}"
                time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict:
        req = urllib.request.Request(f"{self.url}/v1/status",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10, context=self.context) as r:
            return json.load(r)

    def migration(self, session: str) -> dict:
        return next(m for m in self.status()["migrations"] if m["session"] == session)

    def wait_phase(self, session: str, phases: tuple[str, ...], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            m = self.migration(session)
            if m["phase"] in phases:
                return m
            assert time.monotonic() < deadline, f"phase stuck at {m['phase']}: {self.log()}"
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_daemon(self.proc)


@pytest.fixture
def dest_factory(source):
    started: list[Dest] = []

    def make(mode: str, hugepage_size: int = SIZE_2M, *extra: str) -> Dest:
        d = Dest(source, mode, hugepage_size, *extra)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def run_guest(dest: Dest, *args: str, timeout: float = 300) -> dict:
    out = subprocess.run([sys.executable, "-m", "migrator.cli", "guest", "--dest-socket",
                          dest.socket, "--json", *args], capture_output=True, text=True,
                         timeout=timeout)
    assert out.stdout.strip(), f"guest failed ({out.returncode}): {out.stderr}\n{dest.log()}"
    return json.loads(out.stdout)
