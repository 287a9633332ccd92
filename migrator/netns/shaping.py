"""Shaping one veth end's egress with tc: bandwidth (tbf), delay and loss (netem, or not).

Each end shapes what it sends, so both ends together shape both directions. What each call
did is returned as a dict for the results: the method and the exact tc command lines.

This VM's kernel (and others built without CONFIG_NET_SCH_NETEM) answers `netem` with
"Specified qdisc kind is unknown"; then delay is someone else's job (the relay), and loss is
done by a classic-BPF classifier in direct-action mode on the clsact egress hook: it loads a
kernel random number and returns TC_ACT_SHOT below the threshold. cls_bpf and clsact are
needed for that; when they are missing too, loss is unsupported and says so.
"""

from __future__ import annotations

from .ns import NetnsError, tc

TBF_MIN_BURST = 64 << 10  # bytes: at least one 64 KiB GSO segment, else tbf splits every one
_SKF_AD_RANDOM = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM: `ld rand` in classic BPF
_TC_ACT_OK, _TC_ACT_SHOT = 0, 2


def netem_available(namespace: str, dev: str) -> tuple[bool, str]:
    """Try a netem qdisc on dev and take it away again: (works, tc's answer when it does not)."""
    done = tc(namespace, "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
              "delay", "1ms", check=False)
    if done.returncode == 0:
        tc(namespace, "qdisc", "del", "dev", dev, "root", check=False)
        return True, ""
    return False, done.stderr.strip()


def tbf_args(bandwidth: int, rtt: float) -> list[str]:
    """tbf's rate, bucket and queue for bandwidth bits/s: the bucket holds ~1 ms of traffic
    (at least TBF_MIN_BURST), the queue max(5 ms, one RTT) of it."""
    burst = max(TBF_MIN_BURST, bandwidth // 8 // 1000)
    latency_us = int(max(5e-3, rtt) * 1e6)
    return ["tbf", "rate", f"{bandwidth}bit", "burst", str(burst), "latency", f"{latency_us}us"]


def _add(namespace: str, args: list[str], commands: list[str]) -> None:
    tc(namespace, *args)
    commands.append("tc " + " ".join(args))


def shape(namespace: str, dev: str, bandwidth: int | None, netem_delay: float | None,
          loss: float, rtt: float) -> dict:
    """Shape dev's egress. netem_delay None: no netem (the kernel lacks it); else netem holds
    each packet that long (0 is fine, when netem is wanted for loss only).

    Returns {"commands": [...], "loss_method": ...}.
    """
    commands: list[str] = []
    parent = ["root"]
    if netem_delay is not None and (netem_delay > 0 or loss > 0):
        netem = ["netem", "limit", "100000", "delay", f"{int(netem_delay * 1e6)}us"]
        if loss > 0:
            netem += ["loss", f"{loss * 100:.6g}%"]
        _add(namespace, ["qdisc", "add", "dev", dev, "root", "handle", "1:", *netem], commands)
        parent = ["parent", "1:1"]
    if bandwidth:
        _add(namespace, ["qdisc", "add", "dev", dev, *parent, "handle", "10:",
                         *tbf_args(bandwidth, rtt)], commands)
    loss_method = "none"
    if loss > 0:
        if netem_delay is not None:
            loss_method = "netem"
        else:
            loss_method = _bpf_loss(namespace, dev, loss, commands)
    return {"commands": commands, "loss_method": loss_method}


def _bpf_loss(namespace: str, dev: str, loss: float, commands: list[str]) -> str:
    threshold = min(0xFFFFFFFF, int(loss * 2**32))
    program = [  # classic BPF: code jt jf k
        (0x20, 0, 0, _SKF_AD_RANDOM),  # ld rand            A = prandom_u32()
        (0x35, 0, 1, threshold),       # jge #threshold     A >= threshold ? keep : drop
        (0x06, 0, 0, _TC_ACT_OK),      # keep: ret #TC_ACT_OK
        (0x06, 0, 0, _TC_ACT_SHOT),    # drop: ret #TC_ACT_SHOT
    ]
    bytecode = f"{len(program)}," + ",".join(" ".join(map(str, op)) for op in program)
    try:
        _add(namespace, ["qdisc", "add", "dev", dev, "clsact"], commands)
        _add(namespace, ["filter", "add", "dev", dev, "egress", "bpf", "da", "bytecode",
                         bytecode], commands)
    except NetnsError as e:
        commands.append(f"# loss not applied: {e}")
        return "unsupported"
    return "cls_bpf-random-drop"


def show(namespace: str, dev: str) -> str:
    """What tc reports for dev now (qdiscs with counters, egress filters)."""
    qdiscs = tc(namespace, "-s", "qdisc", "show", "dev", dev, check=False).stdout
    filters = tc(namespace, "filter", "show", "dev", dev, "egress", check=False).stdout
    return (qdiscs + filters).strip()
