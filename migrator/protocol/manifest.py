"""The manifest of a guest image: regions, page sizes, kinds and digests of every 4 KiB page."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import msgpack

from . import API_VERSION, PAGE_SIZE
from .errors import ProtocolError

# Page kinds. Zero pages need no transfer: the destination's fresh memory is already zero.
DATA, ZERO, POISON = 0, 1, 2
_KINDS = bytes([DATA, ZERO, POISON])
MAX_MANIFEST_BYTES = 64 << 20  # a 16 GiB image: 4 Mi pages x (8 digest + 1 kind) bytes, with room


@dataclass(frozen=True)
class Region:
    name: str
    offset: int  # in the image (guest-physical order), bytes
    size: int

    @property
    def first_page(self) -> int:
        return self.offset // PAGE_SIZE

    @property
    def pages(self) -> int:
        return self.size // PAGE_SIZE


@dataclass
class Manifest:
    image_id: str
    regions: list[Region]
    digests: array  # array('Q'), one per 4 KiB page of the whole image
    kinds: bytes  # one byte per 4 KiB page: DATA, ZERO or POISON
    page_size: int = PAGE_SIZE
    version: int = API_VERSION
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = sum(r.size for r in self.regions)
        self.validate()

    @property
    def pages(self) -> int:
        return self.size // self.page_size

    def count(self, kind: int) -> int:
        return self.kinds.count(kind)

    def validate(self) -> None:
        if self.version != API_VERSION:
            raise ProtocolError(f"manifest version {self.version} is not supported "
                                f"(this build speaks v{API_VERSION}); upgrade both daemons together")
        if self.page_size != PAGE_SIZE:
            raise ProtocolError(f"manifest page_size {self.page_size} must be {PAGE_SIZE}")
        offset = 0
        for r in self.regions:
            if r.offset != offset or r.size <= 0 or r.size % PAGE_SIZE:
                raise ProtocolError(f"region {r.name!r} at {r.offset}+{r.size} is not contiguous "
                                    f"and page aligned (expected offset {offset})")
            offset += r.size
        if len(self.digests) != self.pages or len(self.kinds) != self.pages:
            raise ProtocolError(f"manifest has {len(self.digests)} digests and {len(self.kinds)} "
                                f"kinds for {self.pages} pages")
        unknown = bytes(self.kinds).translate(None, _KINDS)
        if unknown:
            raise ProtocolError(f"manifest has unknown page kind {unknown[0]} (known: DATA "
                                f"{DATA}, ZERO {ZERO}, POISON {POISON})")

    def encode(self) -> bytes:
        return msgpack.packb({
            "version": self.version,
            "image_id": self.image_id,
            "page_size": self.page_size,
            "regions": [{"name": r.name, "offset": r.offset, "size": r.size} for r in self.regions],
            "digests": self.digests.tobytes(),
            "kinds": bytes(self.kinds),
        })

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """The manifest in data, or ProtocolError; every field is type-checked before use, so
        no value (a float, a huge integer for a byte string) can raise anything else."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ProtocolError(f"manifest of {len(data)} bytes exceeds {MAX_MANIFEST_BYTES}")
        try:
            m = msgpack.unpackb(data, raw=False, max_bin_len=MAX_MANIFEST_BYTES)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise ProtocolError(f"malformed manifest: {type(e).__name__}: {e}") from e
        m = _typed(m, dict, "the manifest")
        raw_digests = _field(m, "digests", bytes)
        if len(raw_digests) % 8:
            raise ProtocolError(f"manifest digests are {len(raw_digests)} bytes, not 8 per page")
        digests = array("Q")
        digests.frombytes(raw_digests)
        regions = []
        for r in _field(m, "regions", list):
            r = _typed(r, dict, "a manifest region")
            regions.append(Region(_field(r, "name", str), _field(r, "offset", int),
                                  _field(r, "size", int)))
        return cls(image_id=_field(m, "image_id", str), regions=regions, digests=digests,
                   kinds=_field(m, "kinds", bytes), page_size=_field(m, "page_size", int),
                   version=_field(m, "version", int))


def _typed(value, kind: type, what: str):
    # bool is an int to Python, never to the protocol
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"malformed manifest: {what} is a {type(value).__name__}, "
                            f"not a {kind.__name__}")
    return value


def _field(m: dict, key: str, kind: type):
    if key not in m:
        raise ProtocolError(f"malformed manifest: no {key!r}")
    return _typed(m[key], kind, repr(key))
