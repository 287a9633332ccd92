"""The synthetic vCPU's inner loop, in C, run with the GIL released."""

from __future__ import annotations

from array import array

from ._native import ffi, lib


def touch(addresses: array, writes: bytes | bytearray | None = None,
          values: array | None = None) -> tuple[array, int]:
    """Touch each address (8-byte aligned): store values[i] where writes[i], else load.

    Returns (per-access latency in ns, CLOCK_MONOTONIC; checksum of loaded words). The loop
    runs in C with the GIL released, so another Python thread can resolve its faults.
    """
    n = len(addresses)
    if addresses.typecode != "Q":
        raise TypeError("addresses must be array('Q')")
    if writes is not None and len(writes) != n or values is not None and len(values) != n:
        raise ValueError("writes and values must have one entry per address")
    latency = array("Q", bytes(8 * n))
    checksum = lib.touch_loop(
        ffi.from_buffer("uint64_t[]", addresses),
        ffi.from_buffer("uint8_t[]", writes) if writes is not None else ffi.NULL,
        ffi.from_buffer("uint64_t[]", values) if values is not None else ffi.NULL,
        n,
        ffi.from_buffer("uint64_t[]", latency, require_writable=True),
    )
    return latency, checksum


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns, the same clock the touch loop uses."""
    return lib.now_ns()
