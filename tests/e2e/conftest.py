"""Real source and destination daemons on loopback, real guests, real userfaultfd."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from cffi_uffd import SIZE_2M
from helpers.daemons import start_source, stop_daemon, token_file
from migrator import orchestration
from migrator.host import pools

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
    with pools.reserved(SIZE_2M, need) as got:
        if got < need:
            pytest.skip(f"the kernel gave {got} of {need} 2 MiB pages")
        yield


def Dest(source_url: str, mode: str, hugepage_size: int = SIZE_2M, *extra: str,
         context=None) -> orchestration.Dest:
    """`migrator dest` with the e2e token, healthy; stopped by PID with .stop().

    With `context` (an ssl.SSLContext trusting its certificate) it is reached over https://;
    pass its --tls-cert and --tls-key in extra.
    """
    workdir = Path(tempfile.mkdtemp(prefix="migrator-dest-"))
    return orchestration.start_dest(
        source_url, mode, hugepage_size, str(workdir / "guest.sock"), workdir, token=TOKEN,
        extra=["--token-file", token_file(workdir, TOKEN), *extra], context=context,
        timeout=60)


@pytest.fixture
def dest_factory(source):
    started: list[orchestration.Dest] = []

    def make(mode: str, hugepage_size: int = SIZE_2M, *extra: str) -> orchestration.Dest:
        d = Dest(source, mode, hugepage_size, *extra)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def run_guest(dest: orchestration.Dest, *args: str, timeout: float = 300) -> dict:
    try:
        return orchestration.run_guest(dest.socket, args, timeout=timeout)
    except RuntimeError as e:
        raise AssertionError(f"{e}\ndestination log:\n{dest.log()}") from None
