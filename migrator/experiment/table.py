"""The comparison table printed after an experiment."""

from __future__ import annotations

from ..units import format_seconds, format_size


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def comparison(results: dict) -> str:
    modes = results["modes"]
    rows = [
        ("backing", lambda m: m["backing_label"]),
        ("granularity", lambda m: format_size(m["granularity_bytes"])),
        ("faults", lambda m: str(m["faults"])),
        ("fault latency p50", lambda m: format_seconds(m["fault_latency_seconds"]["p50"])),
        ("fault latency p99", lambda m: format_seconds(m["fault_latency_seconds"]["p99"])),
        ("fault latency max", lambda m: format_seconds(m["fault_latency_seconds"]["max"])),
        ("vCPU stalls", lambda m: str(m["vcpu_stall_seconds"]["count"])),
        ("vCPU stall p50", lambda m: format_seconds(m["vcpu_stall_seconds"]["p50"])),
        ("vCPU stall p99", lambda m: format_seconds(m["vcpu_stall_seconds"]["p99"])),
        ("vCPU stall max", lambda m: format_seconds(m["vcpu_stall_seconds"]["max"])),
        ("vCPU stalled total", lambda m: format_seconds(m["vcpu_stall_seconds"]["total"])),
        ("bytes urgent", lambda m: f"{m['bytes_urgent'] / 2**20:.1f} MiB"),
        ("bytes background", lambda m: f"{m['bytes_background'] / 2**20:.1f} MiB"),
        ("pages verified", lambda m: f"{m['verified_pages']}/{m['pages_total']}"),
        ("pages mismatched", lambda m: str(m["mismatched_pages"])),
        ("migration time", lambda m: format_seconds(m["duration_seconds"])),
        ("result", lambda m: m["phase"] + (f" ({m['error']})" if m.get("error") else "")),
    ]
    if results.get("poison"):
        rows[-1:-1] = [
            ("memory errors", lambda m: str(m["poison"].get("errors", 0))),
            ("made inaccessible", lambda m: _mib(m["poison"].get("bytes_inaccessible", 0))),
            ("guest SIGBUS hits", lambda m: str(m["poison"]["guest_sigbus"].get("hits", 0))),
        ]
    width = max(len(name) for name, _ in rows)
    cols = [[f(m) for _, f in rows] for m in modes]
    col_w = [max(len(m["mode"]), *(len(c) for c in col)) for m, col in zip(modes, cols)]
    lines = [" " * width + "  " + "  ".join(m["mode"].rjust(w) for m, w in zip(modes, col_w))]
    for i, (name, _) in enumerate(rows):
        lines.append(name.ljust(width) + "  " + "  ".join(col[i].rjust(w) for col, w in zip(cols, col_w)))
    ratio = (results.get("poison") or {}).get("bytes_inaccessible_ratio_hugepage_to_hgm")
    if ratio:
        lines.append(f"\nmemory errors take away {ratio:.0f}x more memory without HGM")
    return "\n".join(lines)
