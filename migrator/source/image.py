"""The guest's memory as the source holds it: an mmap, its regions, and its manifest."""

from __future__ import annotations

import mmap
import os
from array import array
from pathlib import Path

import xxhash

from migrator.protocol import PAGE_SIZE
from migrator.protocol.digest import ZERO_DIGEST, ZERO_PAGE
from migrator.protocol.manifest import DATA, POISON, ZERO, Manifest, Region
from migrator.units import format_size

from . import synthetic

ALIGNMENT = 2 << 20  # images are whole 2 MiB huge pages, so both backings can hold them
BELOW_4G = 3 << 30  # like a PC: RAM up to 3 GiB sits below the 4 GiB hole, the rest above it


def regions_for(size: int) -> list[Region]:
    """Split an image like a PC VM's RAM: 'ram-below-4g' up to 3 GiB, 'ram-above-4g' the rest."""
    check_size(size)
    regions = [Region("ram-below-4g", 0, min(size, BELOW_4G))]
    if size > BELOW_4G:
        regions.append(Region("ram-above-4g", BELOW_4G, size - BELOW_4G))
    return regions


def check_size(size: int, what: str = "guest memory") -> None:
    if size <= 0 or size % ALIGNMENT:
        raise ValueError(f"{what} of {size} bytes is not a positive multiple of 2 MiB "
                         f"({ALIGNMENT} bytes); round it, e.g. to {format_size(_round_up(size))}")


def _round_up(size: int) -> int:
    return max(ALIGNMENT, -(-size // ALIGNMENT) * ALIGNMENT)


class GuestImage:
    """Guest memory held in an mmap, with a digest and a kind for every 4 KiB page.

    Build it with GuestImage.generate(size, seed) or GuestImage.from_file(path). `view` is a
    read-only memoryview of the whole image; slices of it are what the server writes.
    """

    def __init__(self, mem: mmap.mmap, digests: array, kinds: bytes, image_id: str,
                 origin: str) -> None:
        self._mmap = mem
        self.size = len(mem)
        check_size(self.size)
        self.view = memoryview(mem).toreadonly()
        self.digests = digests
        self.kinds = bytes(kinds)
        self.image_id = image_id
        self.origin = origin  # "seed 42" or "file /path": for logs and /v1/status
        self.regions = regions_for(self.size)
        self._manifest: Manifest | None = None

    @classmethod
    def generate(cls, size: int, seed: int) -> GuestImage:
        """A synthetic image (see synthetic.py): one (size, seed) always gives the same bytes."""
        check_size(size)
        mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        with memoryview(mem) as buf:
            digests, kinds = synthetic.fill(buf, seed)
        return cls(mem, digests, kinds, image_id=f"{synthetic.FORMAT}:seed={seed}:size={size}",
                   origin=f"seed {seed}")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> GuestImage:
        """The image is the file's bytes, mapped read-only; its size must be a multiple of 2 MiB."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                check_size(size, what=f"image file {path}")
                mem = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED)
        except OSError as e:
            raise OSError(e.errno, f"cannot map image file {path}: {e.strerror}") from e
        mem.madvise(mmap.MADV_SEQUENTIAL)
        digests, kinds = _scan(memoryview(mem))
        mem.madvise(mmap.MADV_NORMAL)
        content = xxhash.xxh3_128(digests.tobytes()).hexdigest()
        return cls(mem, digests, kinds, image_id=f"file:xxh3-128={content}:size={size}",
                   origin=f"file {path}")

    def poison(self, pages: set[int]) -> None:
        """Mark pages poisoned (a memory error on this host): the manifest says so and the
        destination installs poison markers instead of fetching them."""
        if not pages:
            return
        kinds = bytearray(self.kinds)
        for p in pages:
            kinds[p] = POISON
        self.kinds = bytes(kinds)
        self.image_id += f":poison={xxhash.xxh3_64_hexdigest(repr(sorted(pages)).encode())}"
        self.origin += f", {len(pages)} poisoned pages"
        self._manifest = None

    @property
    def pages(self) -> int:
        return self.size // PAGE_SIZE

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = Manifest(image_id=self.image_id, regions=list(self.regions),
                                      digests=self.digests, kinds=self.kinds)
        return self._manifest

    def close(self) -> None:
        """Unmap the image; fails with BufferError while slices of `view` are still held."""
        self.view.release()
        self._mmap.close()

    def __enter__(self) -> GuestImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GuestImage({format_size(self.size)}, {self.origin}, id={self.image_id})"


def _scan(view: memoryview) -> tuple[array, bytearray]:
    """Digest and kind of every page of a file image."""
    xxh3 = xxhash.xxh3_64_intdigest
    pages = len(view) // PAGE_SIZE
    digests = array("Q", [xxh3(view[o:o + PAGE_SIZE]) for o in range(0, len(view), PAGE_SIZE)])
    kinds = bytearray([DATA]) * pages
    for i, d in enumerate(digests):
        if d == ZERO_DIGEST and view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] == ZERO_PAGE:
            kinds[i] = ZERO
    return digests, kinds
