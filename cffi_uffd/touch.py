"""The synthetic vCPU's inner loop, in C, run with the GIL released."""

from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass

from ._native import ffi, lib
from .errors import raise_for

_sigbus_lock = threading.Lock()
_sigbus_installed = False


@dataclass(frozen=True)
class SigbusHit:
    """An access that touched poisoned memory."""

    index: int  # which access of the sequence
    address: int  # where the kernel said the fault was (si_addr)
    extent: int  # bytes the kernel reports poisoned around it: 2**si_addr_lsb (0 if unknown)
    memory_error: bool  # si_code BUS_MCEERR_AR: a memory error, not e.g. a truncated file


def _check(addresses: array, writes, values) -> int:
    n = len(addresses)
    if addresses.typecode != "Q":
        raise TypeError("addresses must be array('Q')")
    if writes is not None and len(writes) != n or values is not None and len(values) != n:
        raise ValueError("writes and values must have one entry per address")
    return n


def _loop(addresses: array, writes, values, hits, max_hits: int, nhits) -> tuple[array, int]:
    n = len(addresses)
    latency = array("Q", bytes(8 * n))
    checksum = lib.touch_loop(
        ffi.from_buffer("uint64_t[]", addresses),
        ffi.from_buffer("uint8_t[]", writes) if writes is not None else ffi.NULL,
        ffi.from_buffer("uint64_t[]", values) if values is not None else ffi.NULL,
        n,
        ffi.from_buffer("uint64_t[]", latency, require_writable=True),
        hits, max_hits, nhits,
    )
    return latency, checksum


def touch(addresses: array, writes: bytes | bytearray | None = None,
          values: array | None = None) -> tuple[array, int]:
    """Touch each address (8-byte aligned): store values[i] where writes[i], else load.

    Returns (per-access latency in ns, CLOCK_MONOTONIC; checksum of loaded words). The loop
    runs in C with the GIL released, so another Python thread can resolve its faults.
    """
    _check(addresses, writes, values)
    return _loop(addresses, writes, values, ffi.NULL, 0, ffi.NULL)


def touch_catching_sigbus(addresses: array, writes: bytes | bytearray | None = None,
                          values: array | None = None, max_hits: int = 65536
                          ) -> tuple[array, int, list[SigbusHit], int]:
    """touch(), surviving poisoned memory as a VMM does: an access that gets SIGBUS is
    recorded and skipped. Returns (latency, checksum, hits (at most max_hits), total hits)."""
    global _sigbus_installed
    n = _check(addresses, writes, values)
    with _sigbus_lock:
        if not _sigbus_installed:
            rc = lib.catch_sigbus()
            if rc < 0:
                raise_for("sigaction", -rc)
            _sigbus_installed = True
    hits = ffi.new("struct sigbus_hit[]", max(1, min(max_hits, n)))
    nhits = ffi.new("size_t *")
    latency, checksum = _loop(addresses, writes, values, hits, max(1, min(max_hits, n)), nhits)
    found = [SigbusHit(h.index, h.address, (1 << h.lsb) if h.lsb else 0,
                       h.code == lib.BUS_MCEERR_AR)
             for h in (hits[i] for i in range(min(nhits[0], max_hits)))]
    return latency, checksum, found, nhits[0]


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns, the same clock the touch loop uses."""
    return lib.now_ns()
