"""Run the comparison: one source, then per mode a destination and a guest, on loopback or
on two hosts made of network namespaces (two_host.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cffi_uffd import SIZE_2M

from ..bench import verdict
from ..client.dest import DestClient
from ..dest.dataplane import BackgroundPolicy
from ..errors import MigratorError
from ..host import hgm, pools, thp
from ..orchestration import (
    Dest, Guest, background_args, start_dest, start_guest, start_source,
)
from ..report import load_run, render_run, write_samples
from ..report.progress import Progress, bar
from ..units import format_size, hugepage_label
from ..workload import database
from ..workload.check import check_answers
from ..workload.queries import KINDS
from .baseline import relate, run_baseline
from .host_info import host_block
from .two_host import Loopback, TwoHosts


@dataclass
class Plan:
    memory: int
    hugepage_size: int
    modes: list[str]
    pattern: str
    vcpus: int
    accesses: int
    write_ratio: float
    seed: int
    out: Path
    link: object | None = None  # a migrator.netns.LinkSpec: run on two hosts with this link
    poison_rate: float = 0.0  # fraction of pages poisoned on the source (memory errors)
    poison_pages: str | None = None  # or exactly these pages, e.g. "12,4096-4100"
    policy: BackgroundPolicy = field(default_factory=BackgroundPolicy)
    corruption_rate: float = 0.0  # fraction of pages the source serves wrong once
    corruption_pages: str | None = None  # pages the source always serves wrong
    workload: object | None = None  # a migrator.guest.sqlite.Workload: SQLite queries
    after: float | None = None  # seconds the guest goes on after the migration (--after)
    database: Path | None = None  # the workload's database (built for the run if None)
    replay: str | None = None  # a trace recorded with `guest --record`, instead of the pattern
    quiet: bool = False
    progress: Progress = field(init=False, repr=False)
    image: Path | None = field(default=None, init=False)  # the guest image file, if not generated
    baseline: dict = field(default_factory=dict, init=False)  # the run without a migration

    def __post_init__(self) -> None:
        self.progress = Progress(quiet=self.quiet)


# when the progress line asks the destination (lightly: /v1/dashboard): soon, then every second
_WATCH_S = (0.2, 0.5, 1.0)
_GUEST_TIMEOUT_S = 900


def _say(plan: Plan, text: str) -> None:
    plan.progress.say(text)


def _needs_hugepages(mode: str, hgm_present: bool) -> bool:
    return mode == "hugepage" or (mode == "hgm" and hgm_present)


@contextlib.contextmanager
def _hugepages_for(plan: Plan, hgm_present: bool):
    """Reserve the pool the run needs (falling back from 1 GiB to 2 MiB), give it back after."""
    if not any(_needs_hugepages(m, hgm_present) for m in plan.modes):
        yield plan.hugepage_size, None
        return
    size = plan.hugepage_size
    while True:
        need = plan.memory // size
        _say(plan, f"reserving {need} x {hugepage_label(size)} huge pages")
        with pools.reserved(size, need) as got:
            if got >= need or size == SIZE_2M:
                if got < need:
                    raise MigratorError(f"only {got} of {need} 2 MiB huge pages could be "
                                        f"reserved; free memory or use a smaller --memory")
                _say(plan, f"reserved {need} x {hugepage_label(size)} huge pages")
                yield size, f"{need} x {hugepage_label(size)}"
                _say(plan, f"gave back {need} x {hugepage_label(size)} huge pages")
                return
        _say(plan, f"only {got} of {need} 1 GiB pages could be reserved (memory is fragmented; "
                   "reserve at boot with hugepagesz=1G hugepages=N); using 2 MiB pages instead")
        size = SIZE_2M


@contextlib.contextmanager
def _shmem_thp_for(plan: Plan):
    """The thp mode needs MADV_HUGEPAGE shmem to get 2 MiB folios: set the 2048kB knob for
    the run if it does not allow it, and restore its exact value after, as for the pools."""
    if "thp" not in plan.modes:
        yield None
        return
    with thp.pmd_folios_advised() as record:
        if record["set"]:
            _say(plan, f"set {record['knob']} to {record['set']} for the run (was "
                       f"{record['before']})")
        yield record
    if record["set"]:
        _say(plan, f"restored {record['knob']} to {record['before']}")


def _watch(plan: Plan, mode: str, guest: Guest, dest: DestClient) -> None:
    """Wait for the guest; meanwhile show the migration's progress (not in quiet mode)."""
    deadline = time.monotonic() + _GUEST_TIMEOUT_S
    told_verify = False
    for poll in itertools.count():
        try:
            guest.wait(timeout=_WATCH_S[min(poll, len(_WATCH_S) - 1)])
            return
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            guest.kill()
            guest.wait()
            raise RuntimeError(f"[{mode}] guest still running after {_GUEST_TIMEOUT_S}s; killed")
        if plan.quiet:
            continue
        try:
            migrations = dest.dashboard()["migrations"]
        except (OSError, ValueError):
            continue  # progress is best effort; the run's result does not depend on it
        if not migrations:
            plan.progress.update(f"[{mode}] waiting for the guest to hand over its memory")
            continue
        m = migrations[-1]
        present, total = m["pages_present"], m["pages_total"]
        if m["phase"] == "running":
            plan.progress.update(
                f"[{mode}] {bar(present, total)} {present}/{total} pages present "
                f"({100 * present / total:.0f}%), {m['faults']} faults, urgent "
                f"{m['urgent_bytes_per_second'] / 2**20:.1f} MiB/s, background "
                f"{m['background_bytes_per_second'] / 2**20:.1f} MiB/s")
        elif m["phase"] == "complete" and not told_verify:
            told_verify = True
            plan.progress.say(f"[{mode}] all {total} pages present and verified on install; "
                              "the guest is checking a sample and its writes")


def _save_samples(plan: Plan, mode: str, dest: DestClient, session: str,
                  queries: dict) -> None:
    lat = dest.latencies(session)
    write_samples(plan.out, mode, lat["backing_label"], session,
                  {**{k: lat[k] for k in ("fault_latency_seconds", "vcpu_stall_seconds")},
                   **queries})


def _query_samples(guest: dict) -> dict:
    """The workload's raw query latencies, taken out of the guest's result for the samples
    file (results.json keeps their summaries)."""
    s = (guest.get("workload") or {}).pop("samples_s", None)
    if not s:
        return {}
    return {"query_latency_seconds": s.get("during", []),
            "query_latency_after_seconds": s.get("after", [])}


def _run_mode(plan: Plan, mode: str, hugepage_size: int, source_url: str, token: str,
              workdir: Path, hosts: Loopback | TwoHosts) -> dict:
    endpoint = hosts.dest(mode)
    sock = str(workdir / f"guest-{mode}.sock")
    dest: Dest = start_dest(source_url, mode, hugepage_size, sock, plan.out, name=f"dest-{mode}",
                            listen=endpoint.listen, url=endpoint.url, token=token,
                            extra=background_args(plan.policy),
                            env={"MIGRATOR_TOKEN": token}, prefix=hosts.dest_prefix)
    try:
        _say(plan, f"[{mode}] destination up (pid {dest.pid}); guest: {_doing(plan)}")
        started = time.monotonic()
        guest = start_guest(sock, _guest_args(plan), plan.out, name=f"guest-{mode}",
                            prefix=hosts.dest_prefix)
        try:
            _watch(plan, mode, guest, dest.client)
        finally:
            if guest.poll() is None:
                guest.kill()
                guest.wait()
        try:
            guest_result = guest.result()
        except RuntimeError as e:
            raise RuntimeError(f"[{mode}] {e}\ndestination log:\n{dest.tail()}") from None
        migration = dest.migration(guest_result["session"])
        _say(plan, f"[{mode}] {migration['phase']} in {time.monotonic() - started:.1f}s: "
                   f"{migration['faults']} faults, {migration['verified_pages']} pages verified, "
                   f"{migration['mismatched_pages']} mismatched")
        _save_samples(plan, mode, dest.client, guest_result["session"],
                      _query_samples(guest_result))
        result = _result(migration, guest_result, plan.image)
        result["guest_exit_status"] = guest.returncode
        result["problems"] = verdict.problems(migration, guest_result.get("verify"),
                                              vcpus_blocked=bool(guest_result.get("vcpus_blocked")),
                                              guest_exit_status=guest.returncode)
        return result
    finally:
        dest.stop()


def _doing(plan: Plan) -> str:
    if plan.workload is not None:
        w = plan.workload
        return (f"{plan.vcpus} vCPUs of SQLite queries, mix {':'.join(map(str, w.mix))} "
                f"(point:range:join), {w.rate:g}/s each, {plan.after:g}s after the migration")
    return f"{plan.vcpus} vCPUs x {plan.accesses} {plan.pattern} accesses"


def _guest_args(plan: Plan) -> list[str]:
    """What every guest of the run does (a mode's, and the baseline's)."""
    after = ["--after", str(plan.after)] if plan.after is not None else []
    if plan.workload is not None:
        w = plan.workload
        return ["--vcpus", str(plan.vcpus), "--workload", "sqlite", "--mix",
                ":".join(map(str, w.mix)), "--rate", str(w.rate), "--seed", str(plan.seed),
                *after]
    replay = ["--replay", str(plan.replay)] if plan.replay else []
    return ["--vcpus", str(plan.vcpus), "--pattern", plan.pattern, "--accesses",
            str(plan.accesses), "--write-ratio", str(plan.write_ratio), "--seed",
            str(plan.seed), *replay, *after]


def _check_workload(guest: dict, database: Path | None) -> dict | None:
    """The guest's workload block, its sample of answers replaced by their check against the
    database file."""
    w = guest.get("workload")
    if w is None:
        return None
    w = dict(w)
    answers = w.pop("answers", [])
    if database is not None:
        w["answers_check"] = check_answers(database, answers)
    return w


def _result(m: dict, guest: dict, database: Path | None = None) -> dict:
    keys = ("mode", "backing", "backing_label", "granularity_bytes", "faults",
            "fault_latency_seconds", "bytes_urgent", "bytes_background", "pages_total",
            "pages_urgent", "pages_background", "zero_pages", "verified_pages",
            "mismatched_pages", "refetched_pages", "eexist", "eagain", "duration_seconds",
            "phase", "error", "faults_waited_on_background", "background_first",
            "vcpus_started_after_seconds",
            "background_bytes_per_second",
            "background_policy", "background_niced", "background_stands_back", "fault_stages")
    out = {k: m.get(k) for k in keys}
    # a guest whose migration failed under its vCPUs reports only that they were left blocked
    out["vcpu_stall_seconds"] = guest.get("vcpu_stall_seconds")
    out["per_vcpu"] = guest.get("per_vcpu", [])
    out["guest_verify"] = guest.get("verify")
    out["vcpu_run_seconds"] = guest.get("vcpu_run_seconds")
    out["vcpus_blocked"] = bool(guest.get("vcpus_blocked"))
    out["poison"] = {**(m.get("poison") or {}), "guest_sigbus": guest.get("sigbus", {})}
    out["collapse"] = m.get("collapse")
    out["after_migration"] = guest.get("after_migration")
    out["workload"] = _check_workload(guest, database)
    return out


@contextlib.contextmanager
def _and_then_the_run(plan: Plan, tmp: str):
    """The guest image (built into tmp if needed), and the baseline run on it, before the run
    reserves its huge pages: the baseline reserves and gives back its own."""
    image = plan.image = _image(plan, Path(tmp))
    _say(plan, "the baseline: the same guest with all memory local on 1 GiB pages (2 MiB "
               "where none can be had), no migration")
    baseline = run_baseline(plan.memory, _guest_args(plan) + (
        ["--image", str(image)] if image else ["--memory", str(plan.memory)]), plan.out)
    queries = _query_samples(baseline)
    if queries:
        write_samples(plan.out, "baseline", "baseline (all memory local)", "", queries)
    baseline["workload"] = _check_workload(baseline, image)
    plan.baseline = baseline
    _say(plan, f"baseline on {baseline['mapping']['page_label']} pages: done")
    yield image


def _image(plan: Plan, tmp: Path) -> Path | None:
    """The guest image file of the run: the workload's database (built now unless given)."""
    if plan.workload is None:
        return None
    if plan.database is not None:
        return plan.database
    _say(plan, f"building a {format_size(plan.memory)} SQLite database for the guest")
    built = database.build(plan.memory, tmp / "guest.db")
    _say(plan, f"built: {built['orders']} orders, {built['customers']} customers, "
               f"{built['items']} items")
    return Path(built["path"])


def relate_access_rates(modes: list[dict]) -> None:
    """Each mode's access rate after the migration as a fraction of hugepage's (hugetlb)."""
    base = next((m.get("after_migration") or {} for m in modes if m["mode"] == "hugepage"), {})
    for m in modes:
        a = m.get("after_migration")
        if a and base.get("accesses_per_second"):
            a["vs_hugepage"] = a["accesses_per_second"] / base["accesses_per_second"]


def poison_comparison(modes: list[dict]) -> dict | None:
    """Per mode: errors, bytes made inaccessible, guest accesses that hit poison; and the
    ratio of inaccessible bytes between modes (hugepage / hgm)."""
    per = {m["mode"]: {"errors": m["poison"].get("errors", 0),
                       "bytes_inaccessible": m["poison"].get("bytes_inaccessible", 0),
                       "guest_sigbus": m["poison"].get("guest_sigbus", {}).get("hits", 0)}
           for m in modes if m.get("poison")}
    if not any(v["errors"] for v in per.values()):
        return None
    out: dict = {"per_mode": per}
    if "hgm" in per and "hugepage" in per and per["hgm"]["bytes_inaccessible"]:
        out["bytes_inaccessible_ratio_hugepage_to_hgm"] = (
            per["hugepage"]["bytes_inaccessible"] / per["hgm"]["bytes_inaccessible"])
    return out


def run(plan: Plan) -> dict:
    plan.out.mkdir(parents=True, exist_ok=True)
    detected = hgm.detect()
    token = secrets.token_urlsafe(24)
    results: dict = {"host": host_block(detected), "modes": []}
    hosts = (TwoHosts(plan.link, plan.out, say=lambda text: _say(plan, text)) if plan.link
             else Loopback())
    with tempfile.TemporaryDirectory(prefix="migrator-exp-") as tmp, \
            _and_then_the_run(plan, tmp) as image, \
            _hugepages_for(plan, bool(detected.present)) as (hugepage_size, reservation), \
            _shmem_thp_for(plan) as thp_knob, hosts:
        results["baseline"] = plan.baseline
        if hosts.link is not None:
            results["link"] = hosts.link
        results["config"] = {
            "memory_bytes": plan.memory, "memory": format_size(plan.memory),
            "hugepage_size": hugepage_size, "hugepage_size_requested": plan.hugepage_size,
            "hugepages_reserved": reservation, "modes": plan.modes,
            "pattern": f"trace {plan.replay}" if plan.replay else plan.pattern,
            "vcpus": plan.vcpus, "accesses_per_vcpu": plan.accesses,
            "write_ratio": plan.write_ratio, "seed": plan.seed,
            "background_policy": asdict(plan.policy),
            "shmem_thp_knob": thp_knob,
            "inject_corruption": {"rate": plan.corruption_rate,
                                  "pages": plan.corruption_pages},
        }
        endpoint, source_url = hosts.source()
        if plan.workload is not None:
            results["config"]["workload"] = {
                "name": "sqlite", "mix": dict(zip(KINDS, plan.workload.mix)),
                "rate_per_vcpu": plan.workload.rate, "after_seconds": plan.after,
                "database": str(plan.database) if plan.database else "built for the run"}
        _say(plan, f"starting the source: image {image}" if image else
             f"generating a {format_size(plan.memory)} guest image (seed {plan.seed}) and "
             "starting the source")
        poison = (["--poison-pages", plan.poison_pages] if plan.poison_pages else
                  ["--poison", str(plan.poison_rate)] if plan.poison_rate else [])
        corruption = ((["--inject-corruption", str(plan.corruption_rate)]
                       if plan.corruption_rate else [])
                      + (["--inject-corruption-pages", plan.corruption_pages]
                         if plan.corruption_pages else []))
        what = ["--image", str(image)] if image else ["--memory", str(plan.memory)]
        source = start_source(["--listen", endpoint.listen, *what, "--seed", str(plan.seed),
                               *poison, *corruption], plan.out, url=endpoint.url,
                              env={"MIGRATOR_TOKEN": token}, prefix=hosts.source_prefix,
                              timeout=300)
        try:
            for mode in plan.modes:
                results["modes"].append(_run_mode(plan, mode, hugepage_size, source_url, token,
                                                  Path(tmp), hosts))
        finally:
            source.stop()
    relate_access_rates(results["modes"])
    relate(results["modes"], results["baseline"])
    comparison = poison_comparison(results["modes"])
    if comparison:
        results["poison"] = comparison
    (plan.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    render_run(load_run(plan.out))
    return results
