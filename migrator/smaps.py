"""What the kernel says a process maps, and how: /proc/PID/smaps and smaps_rollup, in bytes.

The fields that matter to the modes: `ShmemPmdMapped` (shmem mapped by 2 MiB PMDs: THP that
the process really uses as huge), `Shared_Hugetlb`/`Private_Hugetlb` (hugetlb), `Rss`.
"""

from __future__ import annotations


def _fields(lines) -> dict[str, int]:
    out = {}
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[name] = int(parts[0]) * 1024
    return out


def rollup(pid: int | str = "self") -> dict[str, int]:
    """The process's totals (smaps_rollup), in bytes."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return _fields(f.readlines()[1:])


def mapping(address: int, pid: int | str = "self") -> dict[str, int]:
    """The fields of the mapping that starts at address, in bytes. KeyError if none does."""
    with open(f"/proc/{pid}/smaps") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        head = line.split(None, 1)[0]
        if "-" in head and not line[0].isupper():
            start = int(head.split("-")[0], 16)
            if start == address:
                body = []
                for follow in lines[i + 1:]:
                    if not follow[0].isupper():
                        break
                    body.append(follow)
                return _fields(body)
    raise KeyError(f"no mapping starts at 0x{address:x} in /proc/{pid}/smaps")
