"""The run without postcopy: the same guest with all its memory local from the start, mapped by
1 GiB pages where the host can give them. Each mode is related to it: its query latency
(slowdown) and its access or query rate after the migration (after_rate_vs_1g)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from cffi_uffd import SIZE_1G, SIZE_2M

from ..host import pools
from ..orchestration import Guest, migrator_command

_TIMEOUT_S = 600


@contextlib.contextmanager
def _pages_for(size: int):
    """Make 1 GiB pages available for the run (else 2 MiB ones); give back what was added.
    Without root, the guest takes what the pools already have."""
    for page_size in (SIZE_1G, SIZE_2M):
        need = -(-size // page_size)
        held = contextlib.ExitStack()
        try:  # only the reservation's own failures: the run's propagate
            got = held.enter_context(pools.reserved(page_size, need))
        except (PermissionError, ValueError, OSError):
            continue
        with held:  # gives back what was added, short or not
            if got >= need:
                yield page_size
                return
    yield None


def run_baseline(size: int, guest_args: Sequence[str], out: Path,
                 prefix: Sequence[str] = ()) -> dict:
    """`migrator guest --baseline ARGS --json` on freshly reserved pages; its result."""
    with _pages_for(size):
        guest = Guest("guest-baseline",
                      [*prefix, *migrator_command("guest", "--baseline", *guest_args, "--json")],
                      out / "guest-baseline.log", stdout_path=out / "guest-baseline.json")
        return guest.finish(_TIMEOUT_S)


def _rate(after: dict | None) -> float | None:
    a = after or {}
    return a.get("queries_per_second") or a.get("accesses_per_second")


def relate(modes: list[dict], baseline: dict) -> None:
    """Each mode against the baseline: the rate after its migration as a fraction of the
    baseline's (on 1 GiB pages where it got them), and with a workload its latency figures
    beside the baseline's and the p99 slowdown during postcopy."""
    ref = _rate(baseline.get("after_migration"))
    mapped = (baseline.get("mapping") or {}).get("page_label")
    base_w = baseline.get("workload")
    for m in modes:
        rate = _rate(m.get("after_migration"))
        vs = rate / ref if rate and ref else None
        if m.get("after_migration"):
            m["after_migration"]["vs_1g"] = vs
            m["after_migration"]["reference_pages"] = mapped
        w = m.get("workload")
        if w is None:
            continue
        w["after_rate"] = rate
        w["after_rate_vs_1g"] = vs
        w["reference_pages"] = mapped
        if base_w:
            w["baseline"] = {"queries": base_w["queries"]["total"],
                             **{k: base_w["during"][k] for k in ("p50", "p99", "max")},
                             "by_kind": base_w["during"]["by_kind"],
                             "query_rate": ref}
            during = w["during"]["p99"] if w["during"]["count"] else None
            w["slowdown_p99"] = during / base_w["during"]["p99"] if (
                during and base_w["during"]["p99"]) else None
            after = w["after"]["p99"] if w["after"]["count"] else None
            w["slowdown_p99_after"] = after / base_w["during"]["p99"] if (
                after and base_w["during"]["p99"]) else None
