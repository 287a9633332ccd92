"""Guest memory that is all local from the start (no postcopy): the baseline a migrated guest is
compared with, mapped by the largest pages this host can give (1 GiB, else 2 MiB, else 4 KiB).
"""

from __future__ import annotations

import os

from cffi_uffd import PAGE_SIZE, SIZE_1G, SIZE_2M, Mapping, UffdError, fallocate, memfd

from .. import smaps
from ..errors import MigratorError
from ..units import hugepage_label

PAGE_SIZES = (SIZE_1G, SIZE_2M, PAGE_SIZE)


class LocalMemory:
    """size bytes, from image (a file) or zeros, in a memfd of the largest page size that has
    enough free pages (the caller reserves them: `migrator host reserve`)."""

    def __init__(self, size: int, image: str | None = None, largest: int = SIZE_1G):
        self.size = size
        tried = []
        for page_size in (p for p in PAGE_SIZES if p <= largest):
            length = -(-size // page_size) * page_size
            fd = memfd("guest-ram-local", length, page_size)
            try:
                fallocate(fd, 0, length)  # hugetlb: takes the pool's pages now, or fails
            except UffdError as e:
                os.close(fd)
                tried.append(f"{hugepage_label(page_size)}: {e}")
                continue
            self.fd, self.page_size, self.length = fd, page_size, length
            break
        else:
            raise MigratorError(f"cannot allocate {size} bytes of local guest memory: "
                                f"{'; '.join(tried)}")
        self.fallbacks = tried  # why larger pages were not used
        self.view = Mapping.shared(self.fd, self.length, page_size=self.page_size,
                                   align=min(self.page_size, SIZE_1G))
        if image:
            self._load(image)

    def _load(self, image: str) -> None:
        try:
            with open(image, "rb") as f:
                if os.fstat(f.fileno()).st_size != self.size:
                    raise MigratorError(f"{image} is not {self.size} bytes")
                view = self.view.view[:self.size]
                done = 0
                while done < self.size:
                    n = f.readinto(view[done:])
                    if not n:
                        raise MigratorError(f"{image} ended after {done} bytes")
                    done += n
                view.release()
        except OSError as e:
            raise MigratorError(f"cannot read {image}: {e.strerror}") from e

    def mapping(self) -> dict:
        """How the memory is mapped: page size, and what smaps says of the view."""
        mapped = smaps.mapping(self.view.address)
        return {"page_size": self.page_size, "page_label": hugepage_label(self.page_size),
                "hugetlb_bytes": mapped.get("Shared_Hugetlb", 0) + mapped.get("Private_Hugetlb", 0),
                "larger_pages_unavailable": self.fallbacks}

    def close(self) -> None:
        self.view.close()
        os.close(self.fd)
