"""Starting migrator's own processes and waiting for them: the one way the experiment, the
benchmark, the load tests and the tests run a source, destinations and guests.

    source = start_source(["--listen", "127.0.0.1:0", "--memory", "64MiB"], log_dir)
    dest = start_dest(source.url, "hgm", 2 << 20, socket_path, log_dir, token=token,
                      env={"MIGRATOR_TOKEN": token})
    guest = start_guest(socket_path, ["--vcpus", "2"], log_dir)
    guest.wait(); result = guest.result()
    dest.wait_phase(result["session"], ("complete",))
    dest.stop(); source.stop()

Every process writes to a log file (never a pipe that could fill up and block it), is waited
for by condition (listening, healthy, a migration's phase), and is stopped by its PID: SIGTERM,
then SIGKILL if it does not go. A `prefix` (e.g. `ip netns exec NAME`) runs it on another host.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .client.dest import DestClient

if TYPE_CHECKING:
    from .dest.dataplane import BackgroundPolicy

__all__ = ["Dest", "Guest", "Process", "free_port", "migrator_command", "run_guest",
           "start_dest", "start_guest", "start_source", "stop", "wait_for"]

START_TIMEOUT = 120.0  # seconds: a 4 GiB image takes a few to generate, more on a busy host
STOP_TIMEOUT = 10.0
SOURCE_LISTENING = re.compile(r"source listening on (https?://\S+?):? ")

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for daemons that must be told their port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def migrator_command(*args: str) -> list[str]:
    """`migrator ARGS` with this interpreter, so a child runs the same installation."""
    return [sys.executable, "-m", "migrator.cli", *args]


def _environment(changes: Mapping[str, str | None] | None) -> dict[str, str]:
    """os.environ with changes applied; a None value removes the variable."""
    env = dict(os.environ)
    for key, value in (changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Process(subprocess.Popen):
    """A child process whose output goes to a log file; stdout alone to stdout_path if given."""

    def __init__(self, name: str, argv: Sequence[str], log_path: str | Path, *,
                 env: Mapping[str, str | None] | None = None,
                 stdout_path: str | Path | None = None) -> None:
        self.name = name
        self.log_path = Path(log_path)
        self.stdout_path = Path(stdout_path) if stdout_path else None
        self.url: str | None = None
        with open(self.log_path, "wb") as log:
            out = open(self.stdout_path, "wb") if self.stdout_path else None
            try:
                super().__init__(list(argv), stdout=out or log,
                                 stderr=log if out else subprocess.STDOUT,
                                 env=_environment(env))
            finally:
                if out:
                    out.close()

    def alive(self) -> bool:
        return self.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        return stop(self, timeout)

    def wait_listening(self, pattern: re.Pattern = SOURCE_LISTENING,
                       timeout: float = START_TIMEOUT) -> str:
        """The first group of pattern once the log shows it (a daemon told to take port 0)."""
        found = wait_for(lambda: pattern.search(self.log()), timeout,
                         f"{self.name} listening", process=self)
        return found.group(1)

    def wait_healthy(self, url: str | None = None, timeout: float = START_TIMEOUT,
                     context: ssl.SSLContext | None = None) -> None:
        """Until GET url/healthz answers 200 (url: this daemon's own)."""
        probe = DestClient(url or self.url, ssl_context=context)
        wait_for(probe.healthy, timeout, f"{self.name} healthy at {probe.url}", process=self)


class Dest(Process):
    """`migrator dest`, with a client of its HTTP API and the path of its guest socket."""

    socket: str
    client: DestClient

    def status(self) -> dict:
        return self.client.status()

    def migration(self, session: str) -> dict:
        return self.client.migration(session)

    def wait_phase(self, session: str, phases: Sequence[str], timeout: float = 60.0) -> dict:
        """The migration of session once its phase is one of phases."""
        last: dict = {}

        def reached() -> dict | None:
            last.update(self.migration(session))
            return last if last["phase"] in phases else None

        try:
            return wait_for(reached, timeout, f"{self.name}: migration {session} in "
                            f"{'/'.join(phases)}", process=self)
        except TimeoutError as e:
            raise TimeoutError(f"{e} (its phase stayed {last.get('phase')!r})") from None


class Guest(Process):
    """`migrator guest --json`: its result is the JSON it prints when it ends."""

    def finish(self, timeout: float) -> dict:
        """Its result once it ends; killed (TimeoutError, with its log) if not within timeout."""
        try:
            self.wait(timeout)
        except BaseException as e:  # also interrupted (SIGINT): it must not outlive us
            self.kill()
            self.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise TimeoutError(f"{self.name} still running after {timeout:g} s:\n"
                                   f"{self.tail(60)}") from None
            raise
        return self.result()

    def result(self) -> dict:
        text = self.stdout_path.read_text() if self.stdout_path.exists() else ""
        if not text.strip():
            raise RuntimeError(f"{self.name} exited with {self.returncode} without a result:\n"
                               f"{self.tail(60)}")
        return json.loads(text)


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM by PID and wait; SIGKILL if it does not stop in time. Its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def wait_for(condition: Callable[[], T], timeout: float, what: str, *,
             interval: float = 0.05, process: Process | None = None) -> T:
    """condition()'s first truthy value, tried every interval seconds for up to timeout.

    OSError and LookupError from condition count as not yet (a daemon still starting). If
    process exits meanwhile, RuntimeError with its log; after timeout, TimeoutError.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (OSError, LookupError):
            value = None
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.name} exited with status {process.returncode} while "
                               f"waiting for {what}; its log:\n{process.tail(60)}")
        if time.monotonic() > deadline:
            tail = f"; log of {process.name}:\n{process.tail(60)}" if process else ""
            raise TimeoutError(f"no {what} after {timeout:g} s{tail}")
        time.sleep(interval)


def start_source(args: Sequence[str], log_dir: str | Path, *, name: str = "source",
                 url: str | None = None, env: Mapping[str, str | None] | None = None,
                 prefix: Sequence[str] = (), context: ssl.SSLContext | None = None,
                 timeout: float = START_TIMEOUT) -> Process:
    """`migrator source ARGS`, healthy. url: where this process reaches it; without it, the
    URL the source logs (for --listen HOST:0), reached over TLS with context."""
    p = Process(name, [*prefix, *migrator_command("source", *args)],
                Path(log_dir) / f"{name}.log", env=env)
    try:
        p.url = url or p.wait_listening(timeout=timeout)
        p.wait_healthy(timeout=timeout, context=context)
    except BaseException:
        p.stop()
        raise
    return p


def background_args(policy: BackgroundPolicy) -> list[str]:
    """`migrator dest` arguments for a background policy."""
    return ["--background-delay", str(policy.delay), "--background-cap",
            str(policy.cap_bytes_per_s), "--background-window", str(policy.window),
            "--background-chunk", str(policy.chunk_bytes),
            *(() if policy.preempt else ("--no-background-preempt",))]


def start_dest(source_url: str, mode: str, hugepage_size: int, guest_socket: str,
               log_dir: str | Path, *, name: str = "dest", listen: str | None = None,
               url: str | None = None, token: str | None = None, extra: Sequence[str] = (),
               env: Mapping[str, str | None] | None = None, prefix: Sequence[str] = (),
               context: ssl.SSLContext | None = None, wait: bool = True,
               timeout: float = START_TIMEOUT) -> Dest:
    """`migrator dest`, healthy (wait=False: started; wait_healthy() is the caller's, to start
    several at once). listen: its --listen (default a free loopback port); url: where this
    process reaches it (default http(s)://listen); token and context: what its client shows
    and trusts. The daemon's own token comes from env or --token-file in extra."""
    listen = listen or f"127.0.0.1:{free_port()}"
    url = url or f"{'https' if context else 'http'}://{listen}"
    argv = ["dest", "--listen", listen, "--source", source_url, "--mode", mode,
            "--hugepage-size", str(hugepage_size), "--guest-socket", guest_socket, *extra]
    d = Dest(name, [*prefix, *migrator_command(*argv)], Path(log_dir) / f"{name}.log", env=env)
    d.url, d.socket = url, guest_socket
    d.client = DestClient(url, token, ssl_context=context)
    try:
        if wait:
            d.wait_healthy(timeout=timeout, context=context)
    except BaseException:
        d.stop()
        raise
    return d


def start_guest(dest_socket: str, args: Sequence[str], log_dir: str | Path, *,
                name: str = "guest", prefix: Sequence[str] = ()) -> Guest:
    """`migrator guest --dest-socket PATH ARGS --json`, running; its result() once it ends."""
    log_dir = Path(log_dir)
    return Guest(name, [*prefix, *migrator_command("guest", "--dest-socket", dest_socket,
                                                   *args, "--json")],
                 log_dir / f"{name}.log", stdout_path=log_dir / f"{name}.json")


def run_guest(dest_socket: str, args: Sequence[str], *, timeout: float = 300.0,
              prefix: Sequence[str] = ()) -> dict:
    """A guest run to its end: its result (RuntimeError with its log if it gave none)."""
    with tempfile.TemporaryDirectory(prefix="migrator-guest-") as tmp:
        return start_guest(dest_socket, args, tmp, prefix=prefix).finish(timeout)
