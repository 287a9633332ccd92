"""One 4 KiB MINOR-fault round trip on shmem through cffi_uffd, next to the same in plain C.

The toucher is cffi_uffd.touch in one thread (C loop, GIL released); the handler is a Python
thread: Userfaultfd.read_events, write 4 KiB through the alias view, continue_. The C floor is
floors/uffd_minor_rtt.c, compiled here into a temporary directory and run with the same pages.

    .venv/bin/python -m migrator.bench.minor_rtt [--pages 4096] [--runs 3] [--placement P] [--json]

--placement: "default" lets the scheduler choose; "same" pins handler and toucher to CPU 0;
"cross" pins the handler to CPU 1 and the toucher to CPU 0. On a VM the cross-CPU wake-up
dominates the round trip, so the scheduler's choice alone can move the median several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import threading
from array import array
from pathlib import Path

from cffi_uffd import PAGE_SIZE, Feature, Mapping, RegisterMode, Userfaultfd, fallocate, memfd

from ..guest.touch import touch

C_SOURCE = Path(__file__).with_name("floors") / "uffd_minor_rtt.c"
PLACEMENTS = {"default": (None, None), "same": (0, 0), "cross": (1, 0)}  # (handler, toucher)


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # 0: the calling thread


def _percentiles(latency: array) -> dict[str, int]:
    ordered = sorted(latency)
    return {"p50_ns": ordered[len(ordered) // 2], "p99_ns": ordered[len(ordered) * 99 // 100]}


def python_round_trip(pages: int, placement: str) -> dict[str, int]:
    handler_cpu, toucher_cpu = PLACEMENTS[placement]
    size = pages * PAGE_SIZE
    fd = memfd("minor-rtt", size)
    fallocate(fd, 0, size)  # MINOR faults fire only for pages already in the page cache
    with Mapping.shared(fd, size) as guest, Mapping.shared(fd, size) as alias, \
            Userfaultfd() as uffd:
        uffd.api(Feature.MINOR_SHMEM)
        uffd.register(guest.address, size, RegisterMode.MINOR)
        payload = b"\x5a" * PAGE_SIZE
        stop = threading.Event()

        def handle() -> None:
            _pin(handler_cpu)
            view = alias.view
            while not stop.is_set():
                for fault in uffd.read_events(timeout=0.2):
                    page = fault.address & ~(PAGE_SIZE - 1)
                    offset = page - guest.address
                    view[offset:offset + PAGE_SIZE] = payload
                    uffd.continue_(page, PAGE_SIZE)

        handler = threading.Thread(target=handle, daemon=True)
        handler.start()
        order = list(range(pages))
        random.Random(1).shuffle(order)
        addresses = array("Q", (guest.address + i * PAGE_SIZE for i in order))
        result: list[array] = []

        def run_toucher() -> None:
            _pin(toucher_cpu)
            result.append(touch(addresses)[0])

        toucher = threading.Thread(target=run_toucher)
        toucher.start()
        toucher.join()
        stop.set()
        handler.join()
    os.close(fd)
    return _percentiles(result[0])


def c_round_trip(binary: Path, pages: int, placement: str) -> dict[str, int]:
    command = [str(binary), "--pages", str(pages), "--threads", "1"]
    handler_cpu, toucher_cpu = PLACEMENTS[placement]
    if handler_cpu is not None:
        command += ["--handler-cpu", str(handler_cpu), "--toucher-cpu", str(toucher_cpu)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3, help="runs of each; medians are reported")
    parser.add_argument("--placement", choices=PLACEMENTS, default="default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "uffd_minor_rtt"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(C_SOURCE)], check=True)
        runs = {"python": [], "c": []}
        for _ in range(args.runs):
            runs["python"].append(python_round_trip(args.pages, args.placement))
            runs["c"].append(c_round_trip(binary, args.pages, args.placement))

    summary = {
        name: {key: int(statistics.median(r[key] for r in results))
               for key in ("p50_ns", "p99_ns")}
        for name, results in runs.items()
    }
    summary.update(pages=args.pages, runs=args.runs, placement=args.placement)
    if args.json:
        print(json.dumps(summary))
        return
    print(f"4 KiB MINOR-fault round trip on shmem, {args.pages} pages x {args.runs} runs, "
          f"placement {args.placement}")
    print(f"{'':24}{'median':>12}{'p99':>12}")
    for name, label in (("python", "cffi_uffd (Python)"), ("c", "plain C")):
        s = summary[name]
        print(f"{label:24}{s['p50_ns'] / 1000:>10.1f}us{s['p99_ns'] / 1000:>10.1f}us")


if __name__ == "__main__":
    main()
