"""A link as people ask for it: '10gbit', '100us', '0.5%' -> bits/s, seconds, a fraction."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps)?\s*$", re.IGNORECASE)
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|ms|us|µs|ns)?\s*$", re.IGNORECASE)
_LOSS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_rate(text: str) -> int:
    """'10gbit' -> 10_000_000_000 bits/s (decimal units, like tc); 'mbps' means megabits too."""
    m = _RATE.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"cannot read bandwidth {text!r}: write e.g. 10gbit, 200mbit or 500kbit")
    return int(float(m.group(1)) * _RATE_UNITS[m.group(2).lower()])


def parse_time(text: str) -> float:
    """'100us' -> 0.0001 s; a bare number is seconds."""
    m = _TIME.match(str(text))
    if not m:
        raise ValueError(f"cannot read time {text!r}: write e.g. 100us, 2ms or 0")
    return float(m.group(1)) * _TIME_UNITS[(m.group(2) or "s").lower()]


def parse_loss(text: str) -> float:
    """'0.5%' or '0.005' -> 0.005."""
    m = _LOSS.match(str(text))
    value = float(m.group(1)) / (100 if m.group(2) else 1) if m else -1.0
    if not 0 <= value < 1:
        raise ValueError(f"cannot read loss {text!r}: write a fraction below 1 (0.01) or a "
                         f"percentage (1%)")
    return value


def format_rate(bits_per_second: float) -> str:
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:.4g}{unit}"
    return f"{bits_per_second:.0f}bit"


def write_time(seconds: float) -> str:
    """A time in the notation parse_time reads and tc writes ("100us", "2ms"); for display,
    migrator.units.format_seconds."""
    if seconds >= 1:
        return f"{seconds:.4g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.4g}ms"
    return f"{seconds * 1e6:.4g}us"


@dataclass(frozen=True)
class LinkSpec:
    """What the link between the two hosts should look like. bandwidth None: unshaped."""

    bandwidth: int | None = None  # bits per second, each direction
    rtt: float = 0.0  # seconds, round trip
    loss: float = 0.0  # fraction of packets dropped, each direction

    @classmethod
    def parse(cls, bandwidth: str | None, rtt: str | None, loss: str | None) -> LinkSpec:
        return cls(bandwidth=parse_rate(bandwidth) if bandwidth not in (None, "", "0") else None,
                   rtt=parse_time(rtt) if rtt else 0.0,
                   loss=parse_loss(loss) if loss else 0.0)

    def as_dict(self) -> dict:
        return {
            "bandwidth": format_rate(self.bandwidth) if self.bandwidth else "unshaped",
            "bandwidth_bits_per_second": self.bandwidth,
            "rtt": write_time(self.rtt) if self.rtt else "0",
            "rtt_seconds": self.rtt,
            "loss": self.loss,
        }
