"""python -m deploycheck [--json FILE] [--only STEP ...]: see deploycheck/__init__.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cffi_uffd import SIZE_1G, SIZE_2M
from migrator.host import pools

from . import base, compose, containers, image, pods, units, wheelhouse
from .podman import Run, require

STEPS = ("containers", "pods", "compose", "systemd")
# The 64 MiB guests of the containers and systemd steps, the destination's probe, and a margin:
# the pool is shared with whatever else runs on the host, which may take pages meanwhile.
GUEST_2M_PAGES = 64 // 2 + 1 + 8


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"  # as `podman images` counts


def _images(podman: Run, out: dict) -> tuple[str, str]:
    t = time.monotonic()

    def ensure(b: base.Base) -> tuple[str, dict]:
        start = time.monotonic()
        ref, made = base.ensure(podman, b)
        return b.name, {"ref": ref, "made": made, "seconds": round(time.monotonic() - start, 1),
                        "size_bytes": int(podman.inspect("image", ref)["Size"])}

    # Made at once when missing: mmdebstrap mostly waits on Debian's mirror.
    with ThreadPoolExecutor(3) as pool:
        bases = dict(pool.map(ensure, (base.MIGRATOR, base.PROMETHEUS, base.SYSTEMD)))
    start = time.monotonic()
    wheels = wheelhouse.build()
    wheel_seconds = time.monotonic() - start
    migrator = image.build(podman, image.CONTAINERFILE, wheels, bases["migrator-base"]["ref"],
                           f"localhost/migrator:check-{podman.id}")
    prometheus = image.build(podman, image.PROMETHEUS_CONTAINERFILE,
                             image.PROMETHEUS_CONTAINERFILE.parent,
                             bases["migrator-prometheus-base"]["ref"],
                             f"localhost/migrator-prometheus:check-{podman.id}")
    compilers = image.compilers_in(podman, migrator.ref)
    if compilers:
        raise RuntimeError(f"the image holds compilers: {compilers}")
    out["images"] = {"bases": bases, "wheels_seconds": round(wheel_seconds, 1),
                     "wheels": sorted(w.name for w in wheels.glob("*.whl")),
                     "migrator": vars(migrator), "prometheus": vars(prometheus),
                     "compilers": compilers, "seconds": round(time.monotonic() - t, 1)}
    return migrator.ref, prometheus.ref


def _containers(podman: Run, migrator: str, prometheus: str, out: dict) -> str:
    start = time.monotonic()
    with pools.reserved(SIZE_2M, GUEST_2M_PAGES) as got:
        if got < GUEST_2M_PAGES:
            raise RuntimeError(f"the kernel gave {got} of {GUEST_2M_PAGES} 2 MiB pages")
        result = containers.migrate(podman, migrator, prometheus,
                                    containers.Workload(mode="hugepage", hugepage_size="2M"))
    m = result["report"]["migration"]
    if m["phase"] != "complete" or m["mismatched_pages"] or m["verified_pages"] != m["pages_total"]:
        raise RuntimeError(f"the migration in containers did not verify: {m}")
    out["containers"] = {**result, "seconds": round(time.monotonic() - start, 1)}
    return (f"containers: {m['backing']} {m['verified_pages']}/{m['pages_total']} pages verified, "
            f"Prometheus scraped {result['scraped_verified_pages']:.0f}")


def _pods(podman: Run, migrator: str, out: dict) -> str:
    start = time.monotonic()
    # One 1 GiB page for the guest and one for the destination's HGM probe; where the kernel
    # cannot give 1 GiB pages now (fragmented memory), 2 MiB pages, and the summary says so.
    got = {}
    for size, page, count in (("1G", SIZE_1G, 2), ("2M", SIZE_2M, 512 + 1)):
        with pools.reserved(page, count) as got[size]:
            if got[size] < count:
                continue
            result = pods.migrate(podman, migrator, memory="1GiB", hugepage_size=size)
            break
    else:
        raise RuntimeError(f"the kernel gave too few huge pages for the pods: {got}")
    result.pop("place")
    out["pods"] = {**result, "hugepage_size": size, "seconds": round(time.monotonic() - start, 1)}
    return f"pods: hugepage-{size} {result['verified_pages']} pages verified"


def _compose(podman: Run, migrator: str, prometheus: str, out: dict) -> str:
    start = time.monotonic()
    result = compose.migrate(podman, migrator, prometheus)
    out["compose"] = {**result, "seconds": round(time.monotonic() - start, 1)}
    return (f"compose: {result['verified_pages']} pages verified, Prometheus scraped "
            f"{result['scraped_verified_pages']:.0f}")


def _systemd(podman: Run, migrator: str, out: dict) -> str:
    start = time.monotonic()
    with pools.reserved(SIZE_2M, GUEST_2M_PAGES) as got:
        if got < GUEST_2M_PAGES:
            raise RuntimeError(f"the kernel gave {got} of {GUEST_2M_PAGES} 2 MiB pages")
        result = units.run(podman, out["images"]["bases"]["migrator-systemd-base"]["ref"],
                           migrator)
    out["systemd"] = {**result, "seconds": round(time.monotonic() - start, 1)}
    return f"systemd: both units started, {result['verified_pages']} pages verified, stopped"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploycheck", description=__doc__)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every measurement here")
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS),
                        help="run only these steps (the images are always built)")
    args = parser.parse_args(argv)
    require("podman", "runc", "catatonit")
    podman = Run()
    out: dict = {"run": podman.id, "steps": args.only}
    parts, status = [], 0
    start = time.monotonic()
    try:
        migrator, prometheus = _images(podman, out)
        i = out["images"]
        parts.append(f"image {_mb(i['migrator']['size_bytes'])} built in "
                     f"{i['migrator']['seconds']:.0f} s (wheels {i['wheels_seconds']:.0f} s, "
                     f"bases {'made' if any(b['made'] for b in i['bases'].values()) else 'cached'})"
                     f", no compiler")
        if "containers" in args.only:
            parts.append(_containers(podman, migrator, prometheus, out))
        if "pods" in args.only:
            parts.append(_pods(podman, migrator, out))
        if "compose" in args.only:
            parts.append(_compose(podman, migrator, prometheus, out))
        if "systemd" in args.only:
            parts.append(_systemd(podman, migrator, out))
    except Exception as e:  # noqa: BLE001  (reported in the summary, after the cleanup)
        status = 1
        out["error"] = f"{type(e).__name__}: {e}"
        parts.append(f"FAILED: {out['error']}")
    finally:
        out["cleaned"] = podman.cleanup()
        out["seconds"] = round(time.monotonic() - start, 1)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=str))
    c = out["cleaned"]
    parts.append(f"removed {c['containers']} containers, {c['pods']} pods, {c['volumes']} "
                 f"volumes, {c['images']} images; {out['seconds']:.0f} s")
    print(f"deploy-check: {'ok' if status == 0 else 'FAILED'}: " + "; ".join(parts),
          file=sys.stdout if status == 0 else sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
