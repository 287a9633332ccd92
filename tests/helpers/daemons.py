"""Real daemons as subprocesses for tests, started by migrator.orchestration: on a free loopback
port, stopped by their PID.

    proc, base_url = start_source("64MiB", seed=1, token="secret")
    ...
    stop_daemon(proc)

proc is an orchestration.Process (a subprocess.Popen): its output goes to a log file
(proc.log_path; daemon_log(proc) reads it), so a chatty daemon never blocks on a full pipe.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from migrator import orchestration

START_TIMEOUT = 60.0  # seconds: a 4 GiB image takes a few to generate
STOP_TIMEOUT = orchestration.STOP_TIMEOUT


def start_source(memory: str, seed: int, token: str | None = None,
                 extra_args: Sequence[str] = ()) -> tuple[orchestration.Process, str]:
    """Start `migrator source` on 127.0.0.1 (port picked by the kernel); wait until it is healthy.

    extra_args go last, so they may override --listen. Returns (process, base URL).
    """
    workdir = Path(tempfile.mkdtemp(prefix="migrator-source-"))
    args = ["--listen", "127.0.0.1:0", "--memory", memory, "--seed", str(seed)]
    if token is not None:
        args += ["--token-file", token_file(workdir, token)]
    proc = orchestration.start_source([*args, *extra_args], workdir,
                                      env={"MIGRATOR_TOKEN": None}, timeout=START_TIMEOUT)
    return proc, proc.url


def token_file(directory: Path, token: str) -> str:
    """A file holding token, readable by its owner only."""
    path = directory / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


def stop_daemon(proc, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM the daemon (any subprocess.Popen) by PID and wait; SIGKILL if it does not stop.
    Returns its exit status."""
    return orchestration.stop(proc, timeout)


def daemon_log(proc) -> str:
    return Path(proc.log_path).read_text(errors="replace")
