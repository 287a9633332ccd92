"""What this host can do for migrator, as a plain dict built from the kernel's own answers.

Every value here was read or probed on the running kernel: features from a UFFDIO_API
handshake, pools from sysfs, HGM from a MADV_SPLIT probe (never from uffd feature bit 13,
which is WP_UNPOPULATED upstream). The schema is documented in README.md.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
from pathlib import Path

from cffi_uffd import Feature, UffdError, Userfaultfd, supported_features
from cffi_uffd.userfaultfd import DEV_PATH

from migrator.units import hugepage_label

from ..urgency import may_reprioritize
from . import hgm, pools, thp

SCHEMA = "migrator/host-check/1"
HGM_EMULATED = "hgm (emulated on shmem)"
THP_LABEL = "thp (shmem 2 MiB folios)"

# Exit codes of `migrator host check`.
EXIT_OK = 0
EXIT_NO_USERFAULTFD = 1
EXIT_NO_MODE = 2

_SYSCTL = Path("/proc/sys/vm/unprivileged_userfaultfd")
_SIZES = (1 << 30, 2 << 20)  # the two hugetlb sizes the modes use, largest first


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _kernel() -> dict:
    u = os.uname()
    return {"release": u.release, "version": u.version, "machine": u.machine}


def _host() -> dict:
    meminfo = _read(Path("/proc/meminfo")) or ""
    mem_kib = next((int(line.split()[1]) for line in meminfo.splitlines()
                    if line.startswith("MemTotal:")), None)
    return {
        "hostname": socket.gethostname(),
        "euid": os.geteuid(),
        "root": os.geteuid() == 0,
        "cpus": os.cpu_count(),
        "memory_bytes": None if mem_kib is None else mem_kib * 1024,
    }


# -- userfaultfd ---------------------------------------------------------------------------

def _try_open(via: str) -> dict:
    try:
        with Userfaultfd(via=via):
            pass
    except UffdError as e:
        return {"ok": False, "errno": e.errno_name, "error": str(e)}
    return {"ok": True, "errno": None, "error": None}


def _device() -> dict:
    try:
        st = os.stat(DEV_PATH)
    except OSError as e:
        return {"path": DEV_PATH, "exists": False, "mode": None, "owner": None, "group": None,
                "accessible": False, "error": e.strerror}

    def name(lookup, ident):
        try:
            return lookup(ident)[0]
        except KeyError:
            return str(ident)

    return {
        "path": DEV_PATH,
        "exists": True,
        "mode": stat.filemode(st.st_mode),
        "owner": name(pwd.getpwuid, st.st_uid),
        "group": name(grp.getgrgid, st.st_gid),
        "accessible": os.access(DEV_PATH, os.R_OK | os.W_OK),
        "error": None,
    }


def _open_fixes(syscall: dict, dev: dict, device: dict, sysctl: int | None) -> list[str]:
    """What a person can do when neither way of opening a userfaultfd works."""
    if syscall["errno"] == "ENOSYS" and not device["exists"]:
        return [("this kernel was built without userfaultfd: use a kernel with "
                 "CONFIG_USERFAULTFD=y (Linux >= 5.14 for MINOR faults on shmem; >= 6.1 for "
                 "/dev/userfaultfd)")]
    fixes = []
    if syscall["errno"] == "EPERM":
        fixes.append("run as root (CAP_SYS_PTRACE), or allow unprivileged userfaultfd: "
                     "`sysctl -w vm.unprivileged_userfaultfd=1` (persist it in /etc/sysctl.d/)"
                     + (f"; it is {sysctl} now" if sysctl is not None else ""))
    if not device["exists"]:
        fixes.append(f"{DEV_PATH} does not exist: it needs Linux >= 6.1 with CONFIG_USERFAULTFD=y")
    elif not dev["ok"]:
        user = pwd.getpwuid(os.geteuid()).pw_name
        fixes.append(f"give this user read/write on {DEV_PATH} (now {device['mode']} "
                     f"{device['owner']}:{device['group']}): `setfacl -m u:{user}:rw {DEV_PATH}`, "
                     f"or a udev rule KERNEL==\"userfaultfd\", GROUP=\"<group>\", MODE=\"0660\" "
                     "with the user in that group")
    if not fixes:
        fixes.append(f"userfaultfd(2) failed ({syscall['error']}) and {DEV_PATH} failed "
                     f"({dev['error']})")
    return fixes


def _userfaultfd() -> tuple[dict, dict]:
    """The userfaultfd section, and the feature table (every flag by name)."""
    syscall, dev, device = _try_open("syscall"), _try_open("dev"), _device()
    raw_sysctl = _read(_SYSCTL)
    sysctl = int(raw_sysctl) if raw_sysctl and raw_sysctl.isdigit() else None
    section = {
        "usable": False,
        "opened_via": None,  # the path Userfaultfd(via="auto") takes: "syscall" or "dev"
        "open": {"syscall": syscall, "dev": dev},
        "device": device,
        "unprivileged_userfaultfd": sysctl,
        "api": None,
        "fixes": [],
    }
    features = {f.name.lower(): None for f in Feature}  # None: could not be asked
    if not (syscall["ok"] or dev["ok"]):
        section["fixes"] = _open_fixes(syscall, dev, device, sysctl)
        return section, features
    try:
        with Userfaultfd() as probe:
            section["opened_via"] = probe.opened_via
        offered = supported_features()
    except UffdError as e:
        section["fixes"] = [f"the UFFDIO_API handshake failed: {e}"]
        return section, features
    section["usable"] = True
    section["api"] = {"features": f"0x{int(offered.features):x}",
                      "ioctls": offered.ioctls.names()}
    features = {f.name.lower(): f in offered.features for f in Feature}
    return section, features


# -- memory --------------------------------------------------------------------------------

def _pool_section() -> dict:
    section = pools.snapshot()
    for p in section.values():
        nr = Path(f"/sys/kernel/mm/hugepages/hugepages-{p['page_size'] // 1024}kB/nr_hugepages")
        p["resizable"] = os.access(nr, os.W_OK)
    return section


def _thp() -> dict:
    """THP as the kernel sets it: anonymous and shmem, shmem per folio size, the policy 2 MiB
    shmem folios follow, and whether MADV_COLLAPSE works (tried, not assumed)."""
    k = thp.knobs()
    try:
        probe = thp.probe_collapse()
    except Exception as e:  # the probe must never take the whole check down
        probe = {"available": None, "detail": f"probe failed: {e}"}
    return {"enabled": thp.selected(thp.THP / "enabled"), "shmem_enabled": k["shmem_enabled"],
            "shmem_enabled_by_size": k["sizes"], "shmem_2m_policy": thp.pmd_policy(k),
            "shmem_2m_for_madvised": thp.pmd_folios_for_advised(k), "madv_collapse": probe}


def _hgm_section() -> dict:
    try:
        return hgm.detect().as_dict()
    except Exception as e:  # the probe must never take the whole check down
        return {"present": None, "method": "madvise(MADV_SPLIT)", "detail": f"probe failed: {e}"}


# -- modes ---------------------------------------------------------------------------------

def _hugetlb_sizes(pools: dict) -> tuple[list[dict], list[str]]:
    """The hugetlb page sizes a guest can get: a pool with pages, or one this user can grow."""
    usable, missing = [], []
    for size in _SIZES:
        label = hugepage_label(size)
        pool = pools.get(label)
        if pool is None:
            missing.append(f"this kernel has no {label} huge pages")
        elif pool["available"] > 0 or pool["resizable"]:
            usable.append({"size": label, "page_size": size, "available": pool["available"],
                           "reserve_at_run_time": pool["available"] == 0})
        else:
            missing.append(f"the {label} pool has no available pages and this user cannot grow "
                           f"it: `sudo migrator host reserve --{label.lower()} N`")
    return usable, missing


# The first kernel that offers each feature a mode needs.
_SINCE = {"minor_hugetlbfs": "5.13", "minor_shmem": "5.14", "exact_address": "5.18"}


def _needs(features: dict, names: list[str]) -> tuple[dict, list[str]]:
    """Whether each needed feature is offered (None: unknown), and why not where it is not."""
    needs = {n: features.get(n) for n in names}
    why = [f"userfaultfd feature {n} is not offered: it needs Linux >= {_SINCE[n]}"
           for n, ok in needs.items() if ok is False]
    return needs, why


def _modes(uffd: dict, features: dict, pools: dict, hgm: dict, thp_section: dict) -> dict:
    blocked = [] if uffd["usable"] else ["userfaultfd cannot be used here (see its fixes)"]
    sizes, sizes_missing = _hugetlb_sizes(pools)

    needs, why = _needs(features, ["minor_hugetlbfs", "exact_address"])
    why = blocked + why + ([] if sizes else sizes_missing)
    hugepage = {
        "available": not why,
        "label": "hugepage",
        "backing": "hugetlb",
        "emulated": False,
        "fetch": "whole huge page",
        "page_sizes": sizes,
        "needs": needs,
        "why_not": why,
    }

    if hgm["present"] is True:
        needs, why = _needs(features, ["minor_hugetlbfs", "exact_address"])
        why = blocked + why + ([] if sizes else sizes_missing)
        hgm_mode = {"available": not why, "label": "hgm", "backing": "hugetlb",
                    "emulated": False, "page_sizes": sizes}
    else:
        needs, why = _needs(features, ["minor_shmem"])
        why = blocked + why
        hgm_mode = {"available": not why, "label": HGM_EMULATED, "backing": "shmem",
                    "emulated": True, "page_sizes": []}
    hgm_mode.update({"fetch": "4 KiB", "needs": needs, "why_not": why})

    needs, why = _needs(features, ["minor_shmem"])
    knobs = {"shmem_enabled": thp_section["shmem_enabled"],
             "sizes": thp_section["shmem_enabled_by_size"]}
    why = blocked + why + thp.why_not(knobs, thp_section["madv_collapse"])
    if not may_reprioritize():
        why.append("the destination collapses in the guest's address space (process_madvise "
                   "MADV_COLLAPSE), which needs CAP_SYS_NICE: fix: run it as root, or grant "
                   "it CAP_SYS_NICE (AmbientCapabilities=CAP_SYS_NICE in its unit)")
    thp_mode = {"available": not why, "label": THP_LABEL, "backing": "shmem-thp-2M",
                "emulated": False, "fetch": "4 KiB", "collapse": "2 MiB (MADV_COLLAPSE)",
                "page_sizes": [], "needs": {**needs, "madv_collapse":
                                            thp_section["madv_collapse"]["available"]},
                "why_not": why}
    return {"hugepage": hugepage, "hgm": hgm_mode, "thp": thp_mode}


# -- the check -----------------------------------------------------------------------------

def build() -> dict:
    """The whole check. Pools are read before the HGM probe, which may borrow a huge page."""
    uffd, features = _userfaultfd()
    pool_section = _pool_section()
    probe = _hgm_section()
    thp_section = _thp()
    modes = _modes(uffd, features, pool_section, probe, thp_section)
    return {
        "schema": SCHEMA,
        "kernel": _kernel(),
        "host": _host(),
        "userfaultfd": uffd,
        "features": features,
        "hugepages": pool_section,
        "thp": thp_section,
        "hgm": probe["present"],
        "hgm_detection": probe,
        "modes": modes,
    }


def exit_code(check: dict) -> int:
    if not check["userfaultfd"]["usable"]:
        return EXIT_NO_USERFAULTFD
    if not any(m["available"] for m in check["modes"].values()):
        return EXIT_NO_MODE
    return EXIT_OK
