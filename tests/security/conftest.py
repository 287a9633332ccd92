"""Real daemons over TLS on loopback, with a throwaway CA made for the test run."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from cffi_uffd import SIZE_2M
from e2e.conftest import TOKEN, Dest
from helpers.daemons import daemon_log, stop_daemon
from migrator import orchestration

from .pki import PKI, make_pki

MEMORY, SEED = "64MiB", 23
MEMORY_BYTES = 64 << 20


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
    proc = orchestration.start_source(["--listen", "127.0.0.1:0", *args], workdir,
                                      env={"MIGRATOR_TOKEN": None}, context=context, timeout=60)
    return Daemon(proc, proc.url)


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
