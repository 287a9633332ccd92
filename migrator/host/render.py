"""The host check and pool changes as aligned text for a person."""

from __future__ import annotations

from migrator.units import format_size

_W = 30  # width of the label column


def _row(label: str, value: object, indent: int = 2) -> str:
    return f"{' ' * indent}{label:<{_W - indent}} {value}"


def _yes(flag: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[flag]


def check(r: dict) -> str:
    k, h, u = r["kernel"], r["host"], r["userfaultfd"]
    lines = [f"migrator host check: {h['hostname']}, Linux {k['release']} ({k['machine']}), "
             f"{h['cpus']} CPUs, "
             + (f"{h['memory_bytes'] / (1 << 30):.1f} GiB" if h["memory_bytes"] else "? GiB")
             + (", root" if h["root"] else f", euid {h['euid']}"), ""]

    lines.append("userfaultfd")
    for via, label in (("syscall", "userfaultfd(2)"), ("dev", u["device"]["path"])):
        o = u["open"][via]
        lines.append(_row(label, "opens" if o["ok"] else f"fails: {o['error']}"))
    d = u["device"]
    if d["exists"]:
        lines.append(_row(f"{d['path']} permissions",
                          f"{d['mode']} {d['owner']}:{d['group']}"
                          + ("" if d["accessible"] else " (no access for this user)")))
    sysctl = u["unprivileged_userfaultfd"]
    lines.append(_row("vm.unprivileged_userfaultfd", "unknown" if sysctl is None else sysctl))
    lines.append(_row("usable", f"yes, via {u['opened_via']}" if u["usable"] else "NO"))

    features = r["features"]
    offered = sum(1 for v in features.values() if v)
    lines += ["", f"features ({offered} of {len(features)} offered, mask {u['api']['features']})"
              if u["api"] else "features (unknown: no userfaultfd to ask)"]
    lines += [_row(name, _yes(v)) for name, v in features.items()]

    lines += ["", "hugepages" + " " * (_W - 9)
              + f" {'total':>7} {'free':>7} {'claimed':>7} {'avail':>7} {'surplus':>7}"]
    for label, p in r["hugepages"].items():
        lines.append(_row(format_size(p["page_size"]),
                          f"{p['total']:>7} {p['free']:>7} {p['reserved']:>7} "
                          f"{p['available']:>7} {p['surplus']:>7}"
                          + ("" if p["resizable"] else "  (read-only for this user)")))

    t = r["thp"]
    lines += ["", "transparent hugepages",
              _row("enabled", t["enabled"] or "unknown"),
              _row("shmem_enabled", t["shmem_enabled"] or "unknown")]
    sizes = t.get("shmem_enabled_by_size") or {}
    if sizes:
        lines.append(_row("shmem_enabled per size",
                          ", ".join(f"{size} {v}" for size, v in sizes.items())))
    lines.append(_row("2 MiB shmem for MADV_HUGEPAGE",
                      f"{_yes(t.get('shmem_2m_for_madvised'))} (policy "
                      f"{t.get('shmem_2m_policy')})"))
    probe = t.get("madv_collapse") or {}
    lines.append(_row("MADV_COLLAPSE", f"{_yes(probe.get('available'))}: {probe.get('detail')}"))

    g = r["hgm_detection"]
    lines += ["", "HGM (high-granularity hugetlb mapping)",
              _row("present", _yes(r["hgm"])),
              _row("how", g["method"]),
              _row("result", g["detail"])]

    lines += ["", "modes"]
    for name, m in r["modes"].items():
        what = f"{m['label']}: {m['backing']}, fetch {m['fetch']} per fault"
        if m.get("collapse"):
            what += f", collapse {m['collapse']}"
        lines.append(_row(name, ("yes  " if m["available"] else "NO   ") + what))
        for s in m["page_sizes"]:
            how = (f"{s['available']} available in the pool" if not s["reserve_at_run_time"]
                   else "pool empty; reserved at run time (root)"
                   + (", may fall short: needs contiguous memory" if s["size"] == "1G" else ""))
            lines.append(_row("", f"     {s['size']} pages: {how}"))
        lines += [_row("", f"     - {why}") for why in m["why_not"]]

    ready = [m["label"] for m in r["modes"].values() if m["available"]]
    if not u["usable"]:
        lines += ["", "NOT READY: userfaultfd cannot be used here. To fix:"]
        lines += [f"  - {fix}" for fix in u["fixes"]]
    elif not ready:
        lines += ["", "NOT READY: no mode can run here (reasons above)"]
    else:
        lines += ["", f"ready: {', '.join(ready)}"]
    return "\n".join(lines)


def pool_changes(results: list[dict]) -> str:
    lines = []
    for x in results:
        b, a = x["before"], x["after"]
        if "got" in x:
            head = f"{x['size']} pages: wanted {x['asked']} available, have {x['got']}"
        else:
            head = f"{x['size']} pages: released {x['released']} (asked {x['asked']})"
        lines.append(f"{head}  [pool total {b['total']} -> {a['total']}, "
                     f"available {b['available']} -> {a['available']}]")
        if x.get("compacted"):
            lines.append("  (fell short at first; compacted memory and tried again)")
        if x.get("short"):
            lines.append(f"  short by {x['asked'] - x['got']}: {x['hint']}")
    return "\n".join(lines)
