"""Real daemons as subprocesses for tests: on a free loopback port, stopped by their PID.

    proc, base_url = start_source("64MiB", seed=1, token="secret")
    ...
    stop_daemon(proc)

The daemon's output goes to a log file (proc.log_path; daemon_log(proc) reads it), so a chatty
daemon can never block on a full pipe.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

START_TIMEOUT = 60.0  # seconds: a 4 GiB image takes a few to generate
STOP_TIMEOUT = 10.0
_LISTENING = re.compile(r"source listening on (http://\S+?):? ")


def start_source(memory: str, seed: int, token: str | None = None,
                 extra_args: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """Start `migrator source` on 127.0.0.1 (port picked by the kernel); wait until it is healthy.

    extra_args go last, so they may override --listen. Returns (process, base URL).
    """
    workdir = Path(tempfile.mkdtemp(prefix="migrator-source-"))
    cmd = [sys.executable, "-m", "migrator.cli", "source", "--listen", "127.0.0.1:0",
           "--memory", memory, "--seed", str(seed)]
    if token is not None:
        token_file = workdir / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        cmd += ["--token-file", str(token_file)]
    cmd += list(extra_args)
    env = {k: v for k, v in os.environ.items() if k != "MIGRATOR_TOKEN"}
    log_path = workdir / "source.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log_path = log_path  # type: ignore[attr-defined]
    try:
        base_url = _wait_listening(proc, log_path)
        _wait_healthy(proc, base_url)
    except BaseException:
        stop_daemon(proc)
        raise
    return proc, base_url


def stop_daemon(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM the daemon by PID and wait; SIGKILL if it does not stop. Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def daemon_log(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def _wait_listening(proc: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        m = _LISTENING.search(log_path.read_text(errors="replace"))
        if m:
            return m.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"source exited with status {proc.returncode} before listening:\n"
                               f"{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    raise TimeoutError(f"source did not start listening within {START_TIMEOUT} s:\n"
                       f"{log_path.read_text(errors='replace')}")


def _wait_healthy(proc: subprocess.Popen, base_url: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
        time.sleep(0.05)
