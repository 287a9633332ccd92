"""Real daemons over TLS on loopback, with a throwaway CA made for the test run."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from cffi_uffd import SIZE_2M
from e2e.conftest import TOKEN, Dest
from helpers.daemons import daemon_log, stop_daemon

from .pki import PKI, make_pki

MEMORY, SEED = "64MiB", 23
MEMORY_BYTES = 64 << 20
_LISTENING = re.compile(r"source listening on (https?://\S+?):? ")


@dataclass
class Daemon:
    proc: subprocess.Popen
    url: str

    @property
    def log(self) -> str:
        return daemon_log(self.proc)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """One `migrator ...` run to its end, without MIGRATOR_TOKEN from the environment."""
    env = {k: v for k, v in os.environ.items() if k != "MIGRATOR_TOKEN"}
    return subprocess.run([sys.executable, "-m", "migrator.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def start_source(*args: str, context: ssl.SSLContext | None = None) -> Daemon:
    """`migrator source --listen 127.0.0.1:0 ARGS`; waits until /healthz answers (over TLS
    with `context`)."""
    workdir = Path(tempfile.mkdtemp(prefix="migrator-source-"))
    log_path = workdir / "source.log"
    env = {k: v for k, v in os.environ.items() if k != "MIGRATOR_TOKEN"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "migrator.cli", "source", "--listen",
                                 "127.0.0.1:0", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    proc.log_path = log_path  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while not (m := _LISTENING.search(log_path.read_text(errors="replace"))):
            assert proc.poll() is None, f"source exited: {daemon_log(proc)}"
            assert time.monotonic() < deadline, f"source not listening: {daemon_log(proc)}"
            time.sleep(0.05)
        url = m.group(1)
        wait_healthy(url, context, proc)
    except BaseException:
        stop_daemon(proc)
        raise
    return Daemon(proc, url)


def wait_healthy(url: str, context: ssl.SSLContext | None, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            assert proc.poll() is None, f"daemon exited: {daemon_log(proc)}"
            assert time.monotonic() < deadline, f"daemon not healthy: {daemon_log(proc)}"
        time.sleep(0.05)


def token_file(directory: Path, token: str = TOKEN) -> str:
    path = directory / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="package")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="package")
def trusting(pki) -> ssl.SSLContext:
    """A client context that trusts the test CA (and nothing else)."""
    return ssl.create_default_context(cafile=str(pki.ca))


@pytest.fixture(scope="package")
def tls_source(pki, trusting, tmp_path_factory) -> Daemon:
    """A 64 MiB source serving HTTPS with the test CA's certificate, with the e2e token."""
    tokens = tmp_path_factory.mktemp("source-token")
    source = start_source("--memory", MEMORY, "--seed", str(SEED),
                          "--token-file", token_file(tokens),
                          "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
                          context=trusting)
    yield source
    stop_daemon(source.proc)


@pytest.fixture(scope="package")
def tls_dest(pki, trusting, tls_source) -> Dest:
    """A destination (hgm, 2 MiB layout) serving HTTPS, reaching the source over HTTPS."""
    dest = Dest(tls_source.url, "hgm", SIZE_2M, *tls_args(pki), "--tls-ca", str(pki.ca),
                context=trusting)
    yield dest
    dest.stop()


def tls_args(pki: PKI) -> Sequence[str]:
    return ("--tls-cert", str(pki.cert), "--tls-key", str(pki.key))
