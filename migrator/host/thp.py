"""Shmem transparent huge pages: whether a shmem memfd gets 2 MiB folios here, and the knob
the `thp` mode needs, set for a run and restored after it.

The kernel's rules (Documentation/admin-guide/mm/transhuge.rst, 6.8+ per-size knobs):
- /sys/kernel/mm/transparent_hugepage/shmem_enabled is always|within_size|advise|never|deny|
  force. `deny` turns shmem THP off everywhere, MADV_COLLAPSE included; `force` turns it on
  everywhere.
- hugepages-<size>kB/shmem_enabled is always|inherit|within_size|advise|never for that folio
  size; `inherit` takes the top-level value.
- `advise` gives a folio of that size to a shmem mapping that asked with MADV_HUGEPAGE, which is
  what the guest does in the `thp` mode. So the mode needs the 2048kB knob to resolve to
  always, within_size or advise (or the top level to be force).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from cffi_uffd import SIZE_2M, Mapping, UffdError, advise_huge, collapse, memfd, populate

from ..errors import MigratorError

THP = Path("/sys/kernel/mm/transparent_hugepage")
PMD_KNOB = THP / "hugepages-2048kB" / "shmem_enabled"
_HUGE_FOR_ADVISED = ("always", "within_size", "advise")


def selected(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return next((w[1:-1] for w in text.split() if w.startswith("[")), text)


def knobs() -> dict:
    """The top-level shmem knob and each per-size one, keyed by size ("2M", "64K", ...)."""
    sizes = {}
    for d in sorted(THP.glob("hugepages-*kB"), key=lambda d: int(d.name[len("hugepages-"):-2])):
        kib = int(d.name[len("hugepages-"):-2])
        label = f"{kib // 1024}M" if kib >= 1024 else f"{kib}K"
        sizes[label] = selected(d / "shmem_enabled")
    return {"shmem_enabled": selected(THP / "shmem_enabled"), "sizes": sizes}


def pmd_policy(k: dict) -> str | None:
    """What 2 MiB shmem folios follow: the per-size knob, or the top level it inherits."""
    top, own = k["shmem_enabled"], k["sizes"].get("2M")
    if top in ("deny", "force"):
        return top
    if own is None:  # a kernel before the per-size knobs: the top level decides
        return top
    return top if own == "inherit" else own


def pmd_folios_for_advised(k: dict) -> bool:
    """Whether a MADV_HUGEPAGE shmem mapping gets 2 MiB folios when faulted in."""
    return pmd_policy(k) in _HUGE_FOR_ADVISED + ("force",)


def probe_collapse() -> dict:
    """Try MADV_COLLAPSE on 2 MiB of a private shmem memfd: the only proof that this kernel
    has it (6.1+) and that the knobs do not deny it (`deny` does; `never` does not: the
    advice overrides the sysfs policy, but not `deny`)."""
    fd = memfd("migrator-collapse-probe", 2 * SIZE_2M)
    try:
        with Mapping.shared(fd, 2 * SIZE_2M, align=SIZE_2M) as view:
            # as the guest's view: MADV_HUGEPAGE first (with the per-size knob at `advise`, a
            # view without it is refused: EINVAL)
            advise_huge(view.address, 2 * SIZE_2M)
            populate(view.address, SIZE_2M)
            try:
                collapse(view.address, SIZE_2M)
            except UffdError as e:
                return {"available": False, "detail": f"MADV_COLLAPSE: {e.errno_name}: {e.advice}"}
            return {"available": True, "detail": "MADV_COLLAPSE made 2 MiB of shmem huge"}
    finally:
        os.close(fd)


def why_not(k: dict, probe: dict) -> list[str]:
    """Why the `thp` mode cannot run here, each reason with its fix; empty when it can."""
    why = []
    if k["shmem_enabled"] is None:
        why.append("this kernel has no shmem THP (/sys/kernel/mm/transparent_hugepage/"
                   "shmem_enabled is missing: CONFIG_TRANSPARENT_HUGEPAGE=n)")
        return why
    if not pmd_folios_for_advised(k):
        knob = PMD_KNOB if PMD_KNOB.exists() else THP / "shmem_enabled"
        why.append(f"shmem gets no 2 MiB folios for MADV_HUGEPAGE mappings (2 MiB policy "
                   f"{pmd_policy(k)!r}): fix: `echo advise > {knob}` as root (`migrator "
                   f"experiment` does it for its run and restores it)")
    if probe.get("available") is False:
        why.append(f"{probe['detail']} (MADV_COLLAPSE needs Linux >= 6.1)")
    return why


def why_not_for_run() -> list[str]:
    """Why `migrator experiment` cannot run the thp mode here: as root it sets the knob
    itself, so only a missing MADV_COLLAPSE, `deny`, or a knob it may not write stop it."""
    k = knobs()
    why = [w for w in why_not(k, probe_collapse())
           if "`echo advise" not in w or not _may_set(k)]
    return why


def _may_set(k: dict) -> bool:
    return k["shmem_enabled"] not in (None, "deny") and os.access(PMD_KNOB, os.W_OK)


@contextlib.contextmanager
def pmd_folios_advised() -> Iterator[dict]:
    """For the duration: MADV_HUGEPAGE shmem gets 2 MiB folios. Changes only the 2048kB
    per-size knob, only when needed, and restores its exact previous value. Yields what it did.

    Another process changing the same knob meanwhile is not detected; its value is overwritten
    on restore only if this run changed the knob.
    """
    k = knobs()
    record = {"knob": str(PMD_KNOB), "before": k["sizes"].get("2M"), "set": None,
              "restored": None}
    if pmd_folios_for_advised(k):
        yield record
        return
    if k["shmem_enabled"] == "deny" or not PMD_KNOB.exists():
        raise MigratorError(f"shmem THP cannot be turned on for the run: {why_not(k, {})[0]}")
    try:
        PMD_KNOB.write_text("advise")
    except OSError as e:
        raise MigratorError(f"cannot set {PMD_KNOB} to advise ({e.strerror}): run as root, or "
                            f"`echo advise | sudo tee {PMD_KNOB}` beforehand") from e
    record["set"] = "advise"
    try:
        yield record
    finally:
        PMD_KNOB.write_text(record["before"])
        record["restored"] = selected(PMD_KNOB) == record["before"]
