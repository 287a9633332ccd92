"""Network namespaces: create, run in, open sockets in, delete, and sweep what a crash left.

Names are `migrator-src-<pid>-<tag>` and `migrator-dst-<pid>-<tag>`: the PID is the process that
owns them, so a later run can tell a crashed run's namespaces (owner gone) from a live one's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import socket
import subprocess
import threading
import time

PREFIX = "migrator-"
_NAME = re.compile(rf"^{PREFIX}(src|dst)-(\d+)-([0-9a-f]+)$")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `ip ARGS`; NetnsError with ip's own message when it fails and check is set."""
    return _run(["ip", *args], check)


def tc(namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `tc ARGS` inside namespace."""
    return _run(["ip", "netns", "exec", namespace, "tc", *args], check)


def _run(argv: list[str], check: bool) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        raise NetnsError(f"{argv[0]} is not installed: apt-get install iproute2") from e
    if check and done.returncode:
        raise NetnsError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done


def names_for(owner: int | None = None) -> tuple[str, str]:
    """A fresh (source, destination) pair of namespace names owned by this process."""
    pid = os.getpid() if owner is None else owner
    tag = os.urandom(3).hex()
    return f"{PREFIX}src-{pid}-{tag}", f"{PREFIX}dst-{pid}-{tag}"


def listed() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def exists(name: str) -> bool:
    return name in listed()


def add(name: str) -> None:
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


def exec_prefix(name: str) -> list[str]:
    """Prefix a command with this to run it inside the namespace."""
    return ["ip", "netns", "exec", name]


def pids(name: str) -> list[int]:
    out = ip("netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def delete(name: str, grace: float = 3.0) -> None:
    """Stop what still runs inside (SIGTERM, then SIGKILL after grace seconds), then delete.

    Deleting only unmounts the name: a namespace lives on while a process is inside it, with
    its veth end and addresses, so the processes go first.
    """
    if not exists(name):
        return
    _signal_all(pids(name), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_all(pids(name), signal.SIGKILL)
    ip("netns", "delete", name, check=False)


def _signal_all(targets: list[int], sig: int) -> None:
    for pid in targets:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete migrator namespaces whose owner process is gone (a run that was killed)."""
    swept = []
    for name in listed():
        m = _NAME.match(name)
        if m and not owner_alive(int(m.group(2))):
            delete(name, grace=1.0)
            swept.append(name)
    return swept


def socket_in(name: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in namespace name, usable from any thread of this process.

    A socket belongs to the namespace of the thread that created it, and setns(CLONE_NEWNET)
    moves only the calling thread, so a short-lived thread enters the namespace and makes it.
    """
    made: list = []

    def make() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns into {name}: {os.strerror(e)}")
            finally:
                os.close(fd)
            made.append(socket.socket(family, kind))
        except OSError as e:
            made.append(e)

    t = threading.Thread(target=make, name=f"enter-{name}")
    t.start()
    t.join()
    if isinstance(made[0], OSError):
        e = made[0]
        if e.errno == errno.ENOENT:
            raise NetnsError(f"network namespace {name} does not exist") from e
        raise e
    return made[0]


def connect_in(name: str, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    s = socket_in(name)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    s.settimeout(None)
    return s
