"""Published postcopy figures beside the model's predictions with their parameters (an outside
check: reported, never tuned to)."""

from __future__ import annotations

from . import predict

GiB = 1 << 30
# (source, what, mode, huge page size, published mean fault latency in seconds, setting)
FIGURES = [
    ("QEMU postcopy-preempt series (2022), 10 GbE, 40 vCPUs", "4 KiB page request", "hgm",
     1 << 30, 0.57e-3),
    ("QEMU postcopy-preempt series (2022), 10 GbE, 40 vCPUs", "2 MiB page request", "hugepage",
     2 << 20, 5.0e-3),
    ("QEMU postcopy-preempt series (2022), 10 GbE, 40 vCPUs", "1 GiB page request", "hugepage",
     1 << 30, 649e-3),
    ("QEMU + HGM RFC", "1 GiB-backed guest, whole-page fault", "hugepage", 1 << 30, 1.0),
    ("QEMU + HGM RFC", "1 GiB-backed guest, 4 KiB fault with HGM", "hgm", 1 << 30, 250e-6),
]
SETTING = {"memory": 64 * GiB, "vcpus": 40, "bandwidth": 10e9, "rtt": 100e-6,
           "pattern": "uniform", "accesses": 200}


def _mean_fault(cal: dict, mode: str, hp: int, vcpus: int, accesses: int) -> float:
    q = predict.Question(memory=SETTING["memory"], hugepage_size=hp, vcpus=vcpus,
                         pattern=SETTING["pattern"], accesses=accesses,
                         bandwidth=SETTING["bandwidth"], rtt=SETTING["rtt"], host_cpus=vcpus)
    lat = predict.predict(cal, q, [mode])["modes"][0]["fault_latency_seconds"]
    return lat["total"] / lat["count"] if lat["count"] else 0.0


def compare(cal: dict) -> list[dict]:
    """Each figure beside the model's mean fault latency with 40 vCPUs faulting at once (their
    requests queue on the one urgent stream) and for one fault alone (no queue)."""
    rows = []
    cache: dict = {}
    for source, what, mode, hp, published in FIGURES:
        key = (mode, hp)
        if key not in cache:
            cache[key] = (_mean_fault(cal, mode, hp, SETTING["vcpus"], SETTING["accesses"]),
                          _mean_fault(cal, mode, hp, 1, 1))
        loaded, alone = cache[key]
        rows.append({"source": source, "what": what, "published_seconds": published,
                     "model_mean_seconds": loaded, "model_alone_seconds": alone,
                     "ratio": loaded / published, "ratio_alone": alone / published,
                     "setting": {**SETTING, "mode": mode, "hugepage_size": hp}})
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'figure':58} {'published':>11} {'40 vCPUs':>12} {'ratio':>7} {'alone':>11} "
             f"{'ratio':>7}"]
    for r in rows:
        lines.append(f"{(r['source'][:20] + ': ' + r['what'])[:58]:58} "
                     f"{r['published_seconds'] * 1e3:9.3f}ms {r['model_mean_seconds'] * 1e3:10.3f}ms "
                     f"{r['ratio']:7.2f} {r['model_alone_seconds'] * 1e3:9.3f}ms "
                     f"{r['ratio_alone']:7.2f}")
    lines.append(f"\nmodel setting: {SETTING} (the published setups' RTT and sizes are not "
                 f"given; a 10 GbE LAN's ~100 us is assumed)")
    return "\n".join(lines)
