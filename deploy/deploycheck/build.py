"""python -m deploycheck.build (`make image`): the migrator image, tagged migrator:0.1.0 (the tag
deploy/k8s/ names), and the Prometheus image, from Debian bases made with mmdebstrap (cached), the
project's wheels built on this host, and no network inside the build."""

from __future__ import annotations

import argparse
import sys
import time

from . import base, image, wheelhouse
from .podman import Run, require


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploycheck.build", description=__doc__)
    parser.add_argument("--tag", default="localhost/migrator:0.1.0")
    parser.add_argument("--prometheus-tag", default="localhost/migrator-prometheus:0.1.0")
    args = parser.parse_args(argv)
    require("podman", "runc")
    podman = Run()
    start = time.monotonic()
    migrator_base, _ = base.ensure(podman, base.MIGRATOR)
    prometheus_base, _ = base.ensure(podman, base.PROMETHEUS)
    wheels = wheelhouse.build()
    built = [image.build(podman, image.CONTAINERFILE, wheels, migrator_base, args.tag),
             image.build(podman, image.PROMETHEUS_CONTAINERFILE,
                         image.PROMETHEUS_CONTAINERFILE.parent, prometheus_base,
                         args.prometheus_tag)]
    for b in built:
        print(f"{b.ref}: {b.size_bytes / 1e6:.0f} MB, built in {b.seconds:.0f} s")
    print(f"images ready in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
