"""A load test's summary: per-mode faults/s and latency quantiles, daemons' CPU and memory,
errors; written as summary.json and summary.txt (the table) in the scenario's directory."""

from __future__ import annotations

import json
from pathlib import Path

from migrator.quantiles import summarize
from migrator.units import format_seconds

SCHEMA = "migrator/loadtest-summary/1"


def build(scenario: str, config: dict, guests: list, records: list[dict], raw: list[dict],
          processes: dict, wall_seconds: float, link: dict | None, errors: list[str]) -> dict:
    """guests, records and raw are parallel: the fleet's Guest, its record, its raw latencies."""
    modes: dict[str, dict] = {}
    for g, rec, r in zip(guests, records, raw):
        m = modes.setdefault(rec["mode"], {"guests": [], "records": [], "faults": [], "stalls": []})
        m["guests"].append(g)
        m["records"].append(rec)
        m["faults"] += r["fault_latency_seconds"]
        m["stalls"] += r["vcpu_stall_seconds"]
    per_mode = {}
    for mode, m in modes.items():
        span = (max(g.ended for g in m["guests"]) - min(g.started for g in m["guests"]))
        recs = m["records"]
        faults = sum(r.get("faults") or 0 for r in recs)
        migrating = sum(r.get("duration_seconds") or 0 for r in recs)
        per_mode[mode] = {
            "migrations": len(recs),
            "verified": sum(1 for r in recs if r["ok"]),
            "backing_label": next((r["backing_label"] for r in recs if r.get("backing_label")),
                                  None),
            "faults": faults,
            "span_seconds": span,
            # over the guests' whole wall time (start-up and verification included) ...
            "faults_per_second": faults / span if span > 0 else 0.0,
            # ... and per second of migration, as one migration sees it on average
            "faults_per_migration_second": faults / migrating if migrating > 0 else 0.0,
            "fault_latency_seconds": summarize(m["faults"]),
            "vcpu_stall_seconds": summarize(m["stalls"]),
            "migration_seconds": summarize(r["duration_seconds"] for r in recs
                                           if r.get("duration_seconds") is not None),
            "bytes_urgent": sum(r.get("bytes_urgent") or 0 for r in recs),
            "bytes_background": sum(r.get("bytes_background") or 0 for r in recs),
        }
    errors = errors + [f"{r['guest']}: {r['error']}" for r in records if r.get("error")]
    ok = not errors and all(r["ok"] for r in records) and len(records) == config.get("guests")
    return {"schema": SCHEMA, "scenario": scenario, "ok": ok, "config": config,
            "wall_seconds": wall_seconds, "per_mode": per_mode, "processes": processes,
            "link": link, "errors": errors, "migrations": records}



def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "-"


def _table(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def table(s: dict) -> str:
    c = s["config"]
    lines = [f"{s['scenario']}: {c['description']}; {s['wall_seconds']:.1f} s, "
             f"{'all verified' if s['ok'] else 'FAILED'}"]
    rows = [("mode", "migrations", "verified", "faults", "faults/s", "per migr.", "fault p50",
             "p90", "p99", "max", "stall p50", "stall p99", "migration p50")]
    for mode, m in s["per_mode"].items():
        f, st = m["fault_latency_seconds"], m["vcpu_stall_seconds"]
        rows.append((mode, m["migrations"], m["verified"], m["faults"],
                     f"{m['faults_per_second']:.0f}", f"{m['faults_per_migration_second']:.0f}",
                     format_seconds(f["p50"]), format_seconds(f["p90"]), format_seconds(f["p99"]),
                     format_seconds(f["max"]), format_seconds(st["p50"]), format_seconds(st["p99"]),
                     format_seconds(m["migration_seconds"]["p50"])))
    lines += [""] + _table(rows)
    lines += ["(faults/s: over the guests' wall time, all migrations of the mode together; "
              "per migr.: per second of one migration, on average)"]
    rows = [("process", "cpu s", "cpu %", "rss max", "rss peak", "threads")]
    for name, p in s["processes"].items():
        rows.append((name, f"{p['cpu_seconds']:.2f}", f"{p['cpu_percent']:.0f}",
                     _mib(p["rss_bytes_max"]), _mib(p["rss_peak_bytes"]), p["threads"]))
    lines += [""] + _table(rows)
    if s.get("link"):
        m = s["link"]["measured"]
        lines += ["", f"link: {s['link']['requested']['bandwidth']} / RTT "
                      f"{s['link']['requested']['rtt']} asked; measured "
                      f"{m['throughput_bits_per_second'] / 1e6:.0f} Mbit/s, RTT p50 "
                      f"{format_seconds(m['rtt_seconds']['p50'])} ({s['link']['applied']['delay']['method']})"]
    lines += ["", "errors: " + ("none" if not s["errors"] else "")]
    lines += [f"  {e}" for e in s["errors"]]
    return "\n".join(lines)


def write(s: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    text = table(s)
    (out / "summary.txt").write_text(text + "\n")
    return text
