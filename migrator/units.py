"""Sizes as people write them: 4GiB, 2M, 1G, 4096."""

import re

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4GiB', '4G', '2M', '4096' -> bytes (binary units)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"cannot read size {text!r}: write e.g. 4096, 2M, 1G or 4GiB")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def format_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def hugepage_label(page_size: int) -> str:
    """1073741824 -> '1G', 2097152 -> '2M', 4096 -> '4K'."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if page_size % scale == 0:
            return f"{page_size // scale}{unit}"
    return str(page_size)


def format_seconds(seconds: float) -> str:
    """A duration for tables: '2.31 s', '3.5 ms', '142 us'."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"
