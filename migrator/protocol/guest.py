"""Messages between the destination and a guest (VMM) on the UNIX socket: JSON objects.

The shape follows Firecracker's page-fault-handler protocol: the guest sends its userfaultfd
and its memory fd with SCM_RIGHTS, plus the regions as
[{"base_host_virt_addr", "size", "offset", "page_size"}].

  guest -> dest  {"type": "hello", "version": 1, "vcpus": N, "pid": P}
  dest -> guest  {"type": "layout", "mode", "backing", "backing_label", "memory_page_size",
                  "granularity", "thp_folio", "size", "regions": [{"name", "offset", "size"}],
                  "image_id"}                           (thp_folio: 2 MiB in the thp mode, else 0)
  guest -> dest  {"type": "memory", "regions": [...], "thp": {"folios", "huge", ...}}
                                                        + fds [uffd, memfd] (thp: that mode only)
  dest -> guest  {"type": "ready"}                      (or {"type": "error", "message"})
  guest -> dest  {"type": "vcpus", "thread_ids": [...]}  (before the vCPUs touch memory)
  guest -> dest  {"type": "stalls", "threshold_ns", "vcpus": [summary...], "samples_ns": [...]}
  dest -> guest  {"type": "complete", "phase", "verified_pages", "mismatched_pages", ...}
  guest -> dest  {"type": "digests", "pages": [...]}  -> dest: {"type": "digests", "digests": [...]}
  guest -> dest  {"type": "digests", "first": F, "count": N}
                 -> dest: {"type": "digests", "first": F, "xxh3_64_le": base64 of N u64 LE}
  guest -> dest  {"type": "verify", ...}  then  {"type": "bye"}

Before `ready` the destination refuses with {"type": "error", "message"} (and closes) anything
it cannot use: another version, the wrong fds, regions that do not match the layout, a memfd
that is not the memory behind the registered range (dest/guestproof.py). After `ready`, an
unknown or invalid message, a second `memory` or a `bye` before `complete` ends the migration
in phase guest-error; a disconnect in guest-lost. README.md, "The guest handshake", is the
reference for implementers.
"""

from __future__ import annotations

from .errors import ProtocolError

VERSION = 1
MAX_MESSAGE_BYTES = 16 << 20
MAX_DIGEST_PAGES = 65536
MAX_DIGEST_RANGE = 1 << 19  # pages per ranged digests request: 4 MiB of digests, 5.3 MiB base64
_ADDRESS_LIMIT = 1 << 64


def expect(message: object, kind: str) -> dict:
    """The message as a dict of the given type, or ProtocolError saying what arrived instead."""
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a JSON object of type {kind!r}, got {type(message).__name__}")
    if message.get("type") == "error" and kind != "error":
        raise ProtocolError(f"peer reported an error: {message.get('message')}")
    if message.get("type") != kind:
        raise ProtocolError(f"expected message type {kind!r}, got {message.get('type')!r}")
    return message


def check_regions(regions: object, size: int, page_size: int) -> list[dict]:
    """Validate the guest's region list against the layout we told it; return it."""
    if not isinstance(regions, list) or not regions:
        raise ProtocolError("'regions' must be a non-empty list")
    expected_offset = 0
    for r in regions:
        if not isinstance(r, dict):
            raise ProtocolError("each region must be an object")
        fields = [r.get(k) for k in ("base_host_virt_addr", "size", "offset", "page_size")]
        # integers only: int() would take 4096.7, "4096" or True, and raise OverflowError on inf
        if not all(type(v) is int for v in fields):
            raise ProtocolError(f"region {r!r} lacks base_host_virt_addr/size/offset/page_size "
                                f"as integers")
        base, rsize, offset, rpage = fields
        if rpage != page_size:
            raise ProtocolError(f"region page_size {rpage} does not match the layout's "
                                f"{page_size}; create the memfd with the page size I sent")
        if not 0 <= base < base + rsize <= _ADDRESS_LIMIT:
            raise ProtocolError(f"region {r!r} is not within the address space")
        if offset != expected_offset or rsize <= 0 or base % page_size or rsize % page_size:
            raise ProtocolError(f"region {r!r} is not contiguous and {page_size}-aligned "
                                f"(expected offset {expected_offset})")
        expected_offset += rsize
    if expected_offset != size:
        raise ProtocolError(f"regions cover {expected_offset} bytes but the layout is {size} bytes")
    return regions
