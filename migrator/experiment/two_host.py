"""Where the experiment's daemons run: on loopback, or on two hosts made of network namespaces.

The runner asks its placement for the source's and each destination's address and for the
command prefix that puts a process on the right host; the guest runs on the destination's host
(it reaches the destination through a UNIX socket, whose path works in any namespace).

TwoHosts builds the link (migrator.netns.TwoHostLink), measures it before anything migrates,
refuses to go on when the shaping did not take effect, and takes it all down afterwards. Both,
loopback too, turn SIGTERM and SIGHUP into KeyboardInterrupt, as SIGINT is, so every `finally`
runs.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import MigratorError
from ..orchestration import free_port
from ..units import format_seconds


@dataclass(frozen=True)
class Endpoint:
    listen: str  # the daemon's --listen HOST:PORT
    url: str  # where the runner reaches it


class _Interruptible:
    """While the hosts are up, SIGTERM and SIGHUP (in the main thread) raise KeyboardInterrupt,
    as SIGINT does, so every `finally` runs: the daemons are stopped by PID and the huge pages
    given back. Python's default would end the runner at once and leave them behind."""

    _old: dict

    def _catch(self) -> None:
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, _interrupt) for s in _SIGNALS}

    def _release(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}


class Loopback(_Interruptible):
    """Both daemons on this host's loopback: the default."""

    link: dict | None = None
    source_prefix: list[str] = []
    dest_prefix: list[str] = []
    helper_pids: dict[str, int] = {}

    def __enter__(self) -> Loopback:
        self._catch()
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def source(self) -> tuple[Endpoint, str]:
        """The source's endpoint, and the URL a destination dials."""
        port = free_port()
        return Endpoint(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"), f"http://127.0.0.1:{port}"

    def dest(self, name: str) -> Endpoint:
        port = free_port()
        return Endpoint(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")


FIRST_DEST_PORT = 8471  # inside the destination's namespace, one more for each destination
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class TwoHosts(_Interruptible):
    """The source in one namespace, destinations and guests in another, a shaped veth between."""

    def __init__(self, spec, log_dir: Path, say=print) -> None:
        from ..netns import TwoHostLink

        self._link = TwoHostLink(spec, log_dir, say=say)
        self._say = say
        self._old: dict = {}
        self._next_port = FIRST_DEST_PORT
        self.link: dict | None = None

    @property
    def helper_pids(self) -> dict[str, int]:
        """The link's own processes (the delaying relay, the probe server), by name."""
        return dict(self._link.helper_pids)

    @property
    def source_prefix(self) -> list[str]:
        return self._link.run_prefix(self._link.source_ns)

    @property
    def dest_prefix(self) -> list[str]:
        return self._link.run_prefix(self._link.dest_ns)

    def __enter__(self) -> TwoHosts:
        self._catch()
        from ..netns import NetnsError

        try:
            try:
                self._link.__enter__()
            except NetnsError as e:
                raise MigratorError(f"cannot build the two hosts (this needs root and "
                                    f"iproute2): {e}") from e
            self.link = self._link.record
            self._tell(self.link)
            if self.link["problems"]:
                raise MigratorError("the link is not what was asked for, so the results would "
                                    "not be either:\n  " + "\n  ".join(self.link["problems"]))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._link.__exit__(*exc)
        finally:
            self._release()

    def source(self) -> tuple[Endpoint, str]:
        host, _, port = self._link.source_listen.rpartition(":")
        here = self._link.bridge(self._link.source_ns, host, int(port))
        return Endpoint(self._link.source_listen, here), self._link.source_url

    def dest(self, name: str) -> Endpoint:
        """A new destination's endpoint (each call a new port; name is for the caller)."""
        port, self._next_port = self._next_port, self._next_port + 1
        return Endpoint(f"127.0.0.1:{port}",
                        self._link.bridge(self._link.dest_ns, "127.0.0.1", port))

    def _tell(self, link: dict) -> None:
        from ..netns import format_rate

        m = link["measured"]
        self._say(f"link measured ({m['path']}): RTT p50 {format_seconds(m['rtt_seconds']['p50'])}, "
                  f"{format_rate(m['throughput_bits_per_second'])} source -> destination, "
                  f"loss {m['loss']['one_way_loss_estimate']:.2%} each way")
        for note in link["notes"]:
            self._say(f"note: {note}")


def link_summary(link: dict) -> str:
    """The link as a small table: requested, how it was applied, what was measured."""
    from ..netns import format_rate

    req, applied, m = link["requested"], link["applied"], link["measured"]
    rtt = m["rtt_seconds"]
    rows = [("link", "requested", "applied by", "measured"),
            ("bandwidth", req["bandwidth"], applied["bandwidth"]["method"],
             f"{format_rate(m['throughput_bits_per_second'])} source -> destination"),
            ("RTT", req["rtt"], applied["delay"]["method"],
             f"p50 {format_seconds(rtt['p50'])} (min {format_seconds(rtt['min'])}, "
             f"p99 {format_seconds(rtt['p99'])})"),
            ("loss", f"{req['loss']:.3%}", applied["loss"]["method"],
             f"{m['loss']['one_way_loss_estimate']:.3%} each way")]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    return "\n".join(lines + [f"note: {n}" for n in link["notes"]])


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}")
