"""Messages between the destination and a guest (VMM) on the UNIX socket: JSON objects.

The shape follows Firecracker's page-fault-handler protocol: the guest sends its userfaultfd
and its memory fd with SCM_RIGHTS, plus the regions as
[{"base_host_virt_addr", "size", "offset", "page_size"}].

  guest -> dest  {"type": "hello", "version": 1, "vcpus": N, "pid": P}
  dest -> guest  {"type": "layout", "mode", "backing", "backing_label", "memory_page_size",
                  "granularity", "size", "regions": [{"name", "offset", "size"}], "image_id"}
  guest -> dest  {"type": "memory", "regions": [...]}  + fds [uffd, memfd]
  dest -> guest  {"type": "ready"}                      (or {"type": "error", "message"})
  guest -> dest  {"type": "vcpus", "thread_ids": [...]}  (before the vCPUs touch memory)
  guest -> dest  {"type": "stalls", "threshold_ns", "vcpus": [summary...], "samples_ns": [...]}
  dest -> guest  {"type": "complete", "phase", "verified_pages", "mismatched_pages", ...}
  guest -> dest  {"type": "digests", "pages": [...]}  -> dest: {"type": "digests", "digests": [...]}
  guest -> dest  {"type": "verify", ...}  then  {"type": "bye"}
"""

from __future__ import annotations

from .errors import ProtocolError

VERSION = 1
MAX_MESSAGE_BYTES = 16 << 20
MAX_DIGEST_PAGES = 65536


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
        try:
            base, rsize = int(r["base_host_virt_addr"]), int(r["size"])
            offset, rpage = int(r["offset"]), int(r["page_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"region {r!r} lacks base_host_virt_addr/size/offset/page_size "
                                f"as integers ({e})") from e
        if rpage != page_size:
            raise ProtocolError(f"region page_size {rpage} does not match the layout's "
                                f"{page_size}; create the memfd with the page size I sent")
        if offset != expected_offset or rsize <= 0 or base % page_size or rsize % page_size:
            raise ProtocolError(f"region {r!r} is not contiguous and {page_size}-aligned "
                                f"(expected offset {expected_offset})")
        expected_offset += rsize
    if expected_offset != size:
        raise ProtocolError(f"regions cover {expected_offset} bytes but the layout is {size} bytes")
    return regions
