"""The migrator and Prometheus images, built by podman from deploy/'s Containerfiles on a base
given by the BASE build argument, with no network inside the build."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .podman import REPO, Run

CONTAINERFILE = REPO / "deploy" / "Containerfile"
PROMETHEUS_CONTAINERFILE = REPO / "deploy" / "prometheus" / "Containerfile"
COMPILERS = ("gcc", "cc", "c99", "clang", "tcc")
# Searched whatever PATH the image sets (an imported base sets none).
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/migrator/bin"


@dataclass
class Built:
    ref: str
    seconds: float
    size_bytes: int


def build(podman: Run, containerfile: Path, context: Path, base: str, ref: str) -> Built:
    """podman build --network=none: whatever the Containerfile fetches fails here."""
    start = time.monotonic()
    podman("build", "--network=none", "--layers=false", "--pull=never", "-f", str(containerfile),
           "--build-arg", f"BASE={base}", "--label", podman.label, "-t", ref, str(context),
           timeout=1200)
    podman.images.append(ref)
    seconds = time.monotonic() - start
    return Built(ref, seconds, int(podman.inspect("image", ref)["Size"]))


def compilers_in(podman: Run, ref: str) -> list[str]:
    """Compilers on the image's PATH (there must be none)."""
    script = (f"PATH={SEARCH_PATH}; " + " ".join(f"command -v {c};" for c in COMPILERS)
              + " true")
    out = podman("run", "--rm", "--network=none", "--entrypoint", "/bin/sh", ref, "-c", script)
    return out.stdout.split()
