"""Two hosts on one machine: two network namespaces, a shaped veth pair, a measured link.

    with TwoHostLink(LinkSpec.parse("1gbit", "2ms", "0"), log_dir) as link:
        link.source_listen, link.source_url      # where the source binds; what the dest dials
        link.run_prefix(link.source_ns)          # prefix a command to run it in a namespace
        link.bridge(link.dest_ns, "127.0.0.1", 8471)  # a URL on this host's loopback into it
        link.record                              # requested, applied (how), measured

Bandwidth is a tbf on each veth end's egress. Delay is netem where the kernel has it; else a
delaying relay (relay.py) in the source's namespace in front of the source, tuned so that the
measured RTT of the path (veth + relay) comes out at the requested one. Loss is netem, else a
cls_bpf random drop (shaping.py). Everything is removed on exit, also on KeyboardInterrupt; a
run that was killed leaves namespaces that the next one sweeps (their owner PID is dead).
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from ..units import format_seconds
from . import ns, probe, shaping
from .relay import Relay, listen
from .spec import LinkSpec, format_rate

SOURCE_ADDR, DEST_ADDR, PREFIX_LEN = "10.213.0.1", "10.213.0.2", 30
SOURCE_DEV, DEST_DEV = "mig-src", "mig-dst"  # the veth ends, one in each namespace
SOURCE_PORT = 8470
PROBE_PORT, PROBE_RELAYED_PORT = 5201, 5202
READY_TIMEOUT = 20.0
# The link is good enough when the measurement shows the shaping at work: never faster than
# asked (plus tolerance), never a shorter RTT than asked (minus tolerance, and minus a slack for
# the jitter of a path whose own RTT, near 100 us here, is about what was asked).
BANDWIDTH_TOLERANCE = 1.10
RTT_TOLERANCE = 0.90
RTT_SLACK = 30e-6
# The relay's delay is stepped until the measured RTT lies within these bounds of the target.
DELAY_STEPS, DELAY_LOW, DELAY_HIGH = 6, 0.97, 1.10


class TwoHostLink:
    def __init__(self, spec: LinkSpec, log_dir: Path, say=print, measure_seconds: float = 1.5):
        self.spec = spec
        self.log_dir = Path(log_dir)
        self.say = say
        self.measure_seconds = measure_seconds
        self.source_ns = self.dest_ns = ""
        self.record: dict = {}
        self._helpers: list[subprocess.Popen] = []
        self.helper_pids: dict[str, int] = {}  # "probe", and "relay" when there is one
        self._relay: subprocess.Popen | None = None
        self._bridges: list[Relay] = []
        self._floor: float | None = None  # the relayed path's RTT without delay

    # -- what the daemons need ---------------------------------------------------------------
    @property
    def relayed(self) -> bool:
        return self._relay is not None

    @property
    def source_listen(self) -> str:
        """The source's --listen: behind the relay on the namespace's loopback, else the veth."""
        return f"{'127.0.0.1' if self.relayed else SOURCE_ADDR}:{SOURCE_PORT}"

    @property
    def source_url(self) -> str:
        """The source as the destination reaches it, across the link."""
        return f"http://{SOURCE_ADDR}:{SOURCE_PORT}"

    @staticmethod
    def run_prefix(namespace: str) -> list[str]:
        return ns.exec_prefix(namespace)

    def bridge(self, namespace: str, host: str, port: int) -> str:
        """http://127.0.0.1:N on this host, forwarded to host:port inside namespace (unshaped:
        it is how the runner watches the daemons, not part of the link)."""
        relay = Relay(listen("127.0.0.1", 0), lambda: ns.connect_in(namespace, host, port))
        self._bridges.append(relay.start())
        return f"http://127.0.0.1:{relay.address[1]}"

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> TwoHostLink:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        swept = ns.sweep_stale()
        if swept:
            self.say(f"removed {len(swept)} namespaces left by runs that were killed: "
                     f"{', '.join(swept)}")
        self.source_ns, self.dest_ns = ns.names_for()
        for name in (self.source_ns, self.dest_ns):
            ns.add(name)
        ns.ip("-n", self.source_ns, "link", "add", SOURCE_DEV, "type", "veth", "peer", "name",
              DEST_DEV, "netns", self.dest_ns)
        for name, dev, addr in ((self.source_ns, SOURCE_DEV, SOURCE_ADDR),
                                (self.dest_ns, DEST_DEV, DEST_ADDR)):
            ns.ip("-n", name, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", dev)
            ns.ip("-n", name, "link", "set", dev, "up")
        self._start_helper("probe", [sys.executable, "-m", "migrator.netns.probe", "--listen",
                                     f"{SOURCE_ADDR}:{PROBE_PORT}", "--until-stdin-closes"])
        self.say(f"namespaces {self.source_ns} ({SOURCE_ADDR}) and {self.dest_ns} ({DEST_ADDR}) "
                 f"joined by a veth pair")
        base = probe.rtt(self._direct, count=50, budget=0.5)
        applied = self._shape(base["p50"])
        self.say(f"link shaped: {self._describe(applied)}; measuring it")
        measured = self._measure()
        problems, notes = self._judge(measured)
        self.record = {
            "topology": "two network namespaces joined by a veth pair, on this host",
            "namespaces": {"source": self.source_ns, "dest": self.dest_ns},
            "addresses": {"source": SOURCE_ADDR, "dest": DEST_ADDR},
            "devices": {"source": SOURCE_DEV, "dest": DEST_DEV},
            "requested": self.spec.as_dict(),
            "applied": applied,
            "base_rtt_seconds": base,
            "measured": measured,
            "shaping_effective": not problems,
            "problems": problems,
            "notes": notes,
            "tc_before_run": {"source": shaping.show(self.source_ns, SOURCE_DEV),
                   "dest": shaping.show(self.dest_ns, DEST_DEV)},
        }

    def down(self) -> None:
        """Remove everything; SIGINT and SIGTERM (in the main thread) wait until it is done.

        The qdiscs' counters at that moment (bytes, drops, overlimits: how hard the shaping
        worked during the run) go into the record first."""
        old = ({s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
               if threading.current_thread() is threading.main_thread() else {})
        try:
            if self.record and ns.exists(self.source_ns) and ns.exists(self.dest_ns):
                self.record["tc_after_run"] = {"source": shaping.show(self.source_ns, SOURCE_DEV),
                                               "dest": shaping.show(self.dest_ns, DEST_DEV)}
            for bridge in self._bridges:
                bridge.close()
            self._bridges.clear()
            for proc in self._helpers:
                _stop(proc)
            self._helpers.clear()
            for name in (self.source_ns, self.dest_ns):
                if name:
                    ns.delete(name)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    # -- shaping -------------------------------------------------------------------------------
    def _shape(self, base_rtt: float) -> dict:
        spec = self.spec
        netem, netem_error = (False, "")
        if spec.rtt > 0 or spec.loss > 0:
            netem, netem_error = shaping.netem_available(self.source_ns, SOURCE_DEV)
        netem_delay = max(0.0, spec.rtt - base_rtt) / 2 if netem else None
        ends = {}
        for name, dev in ((self.source_ns, SOURCE_DEV), (self.dest_ns, DEST_DEV)):
            ends[dev] = shaping.shape(name, dev, spec.bandwidth, netem_delay, spec.loss, spec.rtt)
        applied: dict = {"netem": {"available": netem, "error": netem_error or None}}
        applied["bandwidth"] = {"method": "none", "detail": "unshaped veth"}
        if spec.bandwidth:
            tbf = " ".join(shaping.tbf_args(spec.bandwidth, spec.rtt))
            applied["bandwidth"] = {"method": "tbf",
                                    "detail": f"on the egress of both veth ends: {tbf}"}
        if spec.rtt <= 0:
            applied["delay"] = {"method": "none", "detail": "no delay asked for"}
        elif netem:
            applied["delay"] = {"method": "netem", "added_each_way_seconds": netem_delay,
                                "detail": f"netem delay on the egress of both veth ends, "
                                          f"{format_seconds(netem_delay)} each, on top of the "
                                          f"veth's own {format_seconds(base_rtt)} RTT"}
        else:
            applied["delay"] = self._start_relay()
        loss_methods = {e["loss_method"] for e in ends.values()}
        loss_method = loss_methods.pop() if len(loss_methods) == 1 else "mixed"
        applied["loss"] = {"method": loss_method, "detail": {
            "none": "no loss asked for",
            "netem": "netem loss on the egress of both veth ends",
            "cls_bpf-random-drop": "classic BPF on the clsact egress hook of both veth ends, "
                                   "direct action: drops a packet when a kernel random number "
                                   "falls below loss x 2^32 (sch_netem is not in this kernel)",
            "unsupported": "neither netem nor cls_bpf could drop packets here: no loss applied",
        }.get(loss_method, loss_method)}
        applied["commands"] = {dev: e["commands"] for dev, e in ends.items()}
        return applied

    def _start_relay(self) -> dict:
        """Start the delaying relay with no delay, measure the path through it (its floor), then
        add delay in measured steps until the path's RTT reaches the requested one.

        One step is not enough at small RTTs: the relay's writer thread is woken after each
        chunk is read, and that hand-off (tens of us here) is part of the floor and also
        overlaps the delay it is asked to add (a chunk waits max(hand-off, delay), not their
        sum), so (target - floor) / 2 each way falls short. Each step adds half of what is
        still missing (or takes back half of an overshoot) and measures again."""
        self._relay = self._start_helper("relay", [
            sys.executable, "-m", "migrator.netns.relay", "--delay", "0",
            "--forward", f"{SOURCE_ADDR}:{SOURCE_PORT}=127.0.0.1:{SOURCE_PORT}",
            "--forward", f"{SOURCE_ADDR}:{PROBE_RELAYED_PORT}={SOURCE_ADDR}:{PROBE_PORT}"],
            control=True)
        target = self.spec.rtt
        self._floor = base = probe.rtt(self._path, count=100, budget=0.5)["p50"]
        each_way = max(0.0, target - base) / 2
        steps: list[dict] = []
        for _ in range(DELAY_STEPS):
            self._set_delay(each_way)
            got = probe.rtt(self._path, count=100, budget=0.4)["p50"]
            steps.append({"added_each_way_seconds": each_way, "measured_rtt_seconds": got})
            if target * DELAY_LOW <= got <= target * DELAY_HIGH or (got > target and each_way == 0):
                break
            each_way = max(0.0, each_way + (target - got) / 2)
        best = min(steps, key=lambda s: (s["measured_rtt_seconds"] < target * DELAY_LOW,
                                         abs(s["measured_rtt_seconds"] - target)))
        if best is not steps[-1]:
            self._set_delay(best["added_each_way_seconds"])
        each_way = best["added_each_way_seconds"]
        return {"method": "relay-delay", "added_each_way_seconds": each_way,
                "path_rtt_without_delay_seconds": base, "steps": steps,
                "detail": f"sch_netem is not in this kernel: a TCP relay in the source's "
                          f"namespace, in front of the source, holds every chunk "
                          f"{format_seconds(each_way)} in each direction (arrival time + delay, "
                          f"so throughput is kept), found in {len(steps)} measured step(s); "
                          f"the path through it measured {format_seconds(base)} RTT without "
                          f"the delay"}

    def _set_delay(self, each_way: float) -> None:
        self._relay.stdin.write(f"delay {each_way!r}\n")
        self._relay.stdin.flush()
        if _readline(self._relay, READY_TIMEOUT).strip() != "ok":
            raise ns.NetnsError("the delay relay did not take the new delay")

    @staticmethod
    def _describe(applied: dict) -> str:
        return ", ".join(f"{k} by {applied[k]['method']}" for k in ("bandwidth", "delay", "loss"))

    # -- measuring -----------------------------------------------------------------------------
    def _direct(self):
        return ns.connect_in(self.dest_ns, SOURCE_ADDR, PROBE_PORT)

    def _path(self):
        """The way the destination reaches the source: through the relay when there is one."""
        return ns.connect_in(self.dest_ns, SOURCE_ADDR,
                             PROBE_RELAYED_PORT if self.relayed else PROBE_PORT)

    def _measure(self) -> dict:
        rtt = probe.rtt(self._path, count=200, budget=self.measure_seconds)
        through = probe.throughput(self._path, seconds=self.measure_seconds)
        bw = self.spec.bandwidth
        pps = 10000 if not bw else max(200.0, min(10000.0, bw / 8 / 100 / 4))
        loss = probe.udp_loss(ns.socket_in(self.dest_ns, kind=socket.SOCK_DGRAM),
                              (SOURCE_ADDR, PROBE_PORT), count=1000 if pps >= 2000 else 300,
                              packets_per_second=pps, wait=max(0.3, 4 * self.spec.rtt))
        return {
            "path": ("destination namespace -> relay -> source port" if self.relayed
                     else "destination namespace -> veth -> source namespace"),
            "rtt_seconds": rtt,
            "throughput": {"direction": "source -> destination", **through},
            "throughput_bits_per_second": through["bits_per_second"],
            "loss": {"how": "UDP echo over the veth", **loss},
        }

    def _judge(self, measured: dict) -> tuple[list[str], list[str]]:
        spec, problems, notes = self.spec, [], []
        got_bw = measured["throughput_bits_per_second"]
        got_rtt = measured["rtt_seconds"]["p50"]
        if spec.bandwidth:
            if got_bw > spec.bandwidth * BANDWIDTH_TOLERANCE:
                problems.append(f"measured {format_rate(got_bw)}, above the requested "
                                f"{format_rate(spec.bandwidth)}: the bandwidth shaping did not "
                                f"take effect")
            elif got_bw < spec.bandwidth * 0.5:
                notes.append(f"measured {format_rate(got_bw)}, under half the requested "
                             f"{format_rate(spec.bandwidth)}: this host cannot carry more on "
                             f"this path{' (the relay is CPU-bound)' if self.relayed else ''}")
        if spec.rtt > 0:
            if got_rtt < spec.rtt * RTT_TOLERANCE - RTT_SLACK:
                floor = (f" (this path's own RTT, without delay, is {format_seconds(self._floor)};"
                         f" the relay's delay was stepped up to reach the target and fell short:"
                         f" ask for an RTT well above that floor, or a host with sch_netem)"
                         if self._floor is not None else "")
                problems.append(f"measured RTT {format_seconds(got_rtt)}, below the requested "
                                f"{format_seconds(spec.rtt)}: the delay did not take effect"
                                + floor)
            elif got_rtt > spec.rtt * 1.5:
                notes.append(f"measured RTT {format_seconds(got_rtt)}, above the requested "
                             f"{format_seconds(spec.rtt)}: the path's own RTT is longer")
        if spec.loss > 0 and measured["loss"]["echoed"] == measured["loss"]["sent"]:
            notes.append("no datagram was lost in the measurement although loss was asked for")
        return problems, notes

    # -- helper processes ----------------------------------------------------------------------
    def _start_helper(self, name: str, argv: list[str], control: bool = False) -> subprocess.Popen:
        """A helper in the source namespace; it exits when its stdin closes (we are gone)."""
        log = open(self.log_dir / f"netns-{name}.log", "wb")
        proc = subprocess.Popen(ns.exec_prefix(self.source_ns) + argv, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        self._helpers.append(proc)
        self.helper_pids[name] = proc.pid
        line = _readline(proc, READY_TIMEOUT)
        if not line or not json.loads(line).get("ready"):
            raise ns.NetnsError(f"the {name} helper did not start: "
                                f"{(self.log_dir / f'netns-{name}.log').read_text()[-2000:]}")
        return proc


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f and not f.closed:
            try:
                f.close()
            except OSError:
                pass
