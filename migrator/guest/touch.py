"""The synthetic vCPU's inner loop (migrator.guest._native, in C), run with the GIL released.

    t = touch(addresses, writes, values, catch_sigbus=True)
    t.latency_ns[i], t.start_ns[i]   # how long access i took, and when it started
    t.checksum, t.sigbus, t.sigbus_total

start_ns is CLOCK_MONOTONIC, the clock time.monotonic_ns() reads, and the same in every process
on the host: a destination can line its own timestamps of a fault up with the guest's access.
"""

from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass
from typing import NamedTuple

from ._native import ffi, lib

_sigbus_lock = threading.Lock()
_sigbus_installed = False


@dataclass(frozen=True)
class SigbusHit:
    """An access that touched poisoned memory."""

    index: int  # which access of the sequence
    address: int  # where the kernel said the fault was (si_addr)
    extent: int  # bytes the kernel reports poisoned around it: 2**si_addr_lsb (0 if unknown)
    memory_error: bool  # si_code BUS_MCEERR_AR: a memory error, not e.g. a truncated file


class Touches(NamedTuple):
    latency_ns: array  # per access, array('Q')
    start_ns: array  # per access: CLOCK_MONOTONIC when it started, array('Q')
    checksum: int  # of the loaded words
    sigbus: list[SigbusHit]  # accesses that got SIGBUS (at most max_hits; catch_sigbus only)
    sigbus_total: int  # how many got SIGBUS in all


def _install_sigbus_handler() -> None:
    global _sigbus_installed
    with _sigbus_lock:
        if not _sigbus_installed:
            rc = lib.catch_sigbus()
            if rc < 0:
                raise OSError(-rc, "sigaction(SIGBUS) failed")
            _sigbus_installed = True


def touch(addresses: array, writes: bytes | bytearray | None = None,
          values: array | None = None, *, catch_sigbus: bool = False,
          max_hits: int = 65536) -> Touches:
    """Touch each address (8-byte aligned): store values[i] where writes[i], else load.

    The loop runs in C with the GIL released, so another Python thread can resolve its faults.
    With catch_sigbus, the loop survives poisoned memory as a VMM does: an access that gets
    SIGBUS is recorded (up to max_hits) and skipped; without it, SIGBUS kills the process.
    """
    n = len(addresses)
    if addresses.typecode != "Q":
        raise TypeError("addresses must be array('Q')")
    if writes is not None and len(writes) != n or values is not None and len(values) != n:
        raise ValueError("writes and values must have one entry per address")
    latency, start = array("Q", bytes(8 * n)), array("Q", bytes(8 * n))
    hits, room, nhits = ffi.NULL, 0, ffi.NULL
    if catch_sigbus:
        _install_sigbus_handler()
        room = max(1, min(max_hits, n))
        hits, nhits = ffi.new("struct sigbus_hit[]", room), ffi.new("size_t *")
    checksum = lib.touch_loop(
        ffi.from_buffer("uint64_t[]", addresses),
        ffi.from_buffer("uint8_t[]", writes) if writes is not None else ffi.NULL,
        ffi.from_buffer("uint64_t[]", values) if values is not None else ffi.NULL,
        n,
        ffi.from_buffer("uint64_t[]", latency, require_writable=True),
        ffi.from_buffer("uint64_t[]", start, require_writable=True),
        hits, room, nhits,
    )
    total = nhits[0] if catch_sigbus else 0
    found = [SigbusHit(h.index, h.address, (1 << h.lsb) if h.lsb else 0,
                       h.code == lib.BUS_MCEERR_AR)
             for h in (hits[i] for i in range(min(total, room)))]
    return Touches(latency, start, checksum, found, total)
