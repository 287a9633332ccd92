"""Podman as this machine runs it: the settings of deploy/podman/containers.conf, and every
object a run makes labelled with the run's id, so that the run removes exactly what it made (by
id, never by name)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "deploy" / "podman" / "containers.conf"
LABEL = "dev.migrator.deploy-check"


class PodmanError(RuntimeError):
    """A podman command failed; the message carries the command and what podman said."""


def env() -> dict[str, str]:
    """The environment every podman call gets: CONTAINERS_CONF unless the caller set one."""
    out = dict(os.environ)
    out.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return out


def require(*tools: str) -> None:
    """Fail, naming the Debian packages, when a tool is missing."""
    packages = {"podman": "podman", "runc": "runc", "catatonit": "catatonit",
                "mmdebstrap": "mmdebstrap"}
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        names = " ".join(packages.get(t, t) for t in missing)
        raise PodmanError(f"missing {', '.join(missing)}: apt-get install {names} "
                          f"(.ci/system-deps installs them)")


@dataclass
class Run:
    """One check's podman session: what it makes carries LABEL=<id>, and cleanup() removes it."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    images: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{LABEL}={self.id}"

    def __call__(self, *args: str, input: str | None = None, timeout: float = 600,
                 check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["podman", *args], input=input, capture_output=True, text=True,
                             env=env(), timeout=timeout)
        if check and out.returncode:
            raise PodmanError(f"podman {' '.join(args)} failed ({out.returncode}): "
                              f"{(out.stderr or out.stdout).strip()[-2000:]}")
        return out

    def inspect(self, what: str, ident: str) -> dict:
        out = json.loads(self(what, "inspect", ident).stdout)
        return out[0] if isinstance(out, list) else out  # `pod inspect` gives one object

    def image_exists(self, ref: str) -> bool:
        return self("image", "exists", ref, check=False).returncode == 0

    def ids(self, what: str) -> list[str]:
        """Ids of this run's containers ("ps"), pods ("pod ps") or volumes ("volume ls")."""
        args = {"ps": ["ps", "-a", "-q", "--no-trunc"], "pod ps": ["pod", "ps", "-q", "--no-trunc"],
                "volume ls": ["volume", "ls", "-q"]}[what]
        return self(*args, "--filter", f"label={self.label}").stdout.split()

    def cleanup(self) -> dict[str, int]:
        """Remove this run's pods, containers, volumes and the images it registered."""
        pods = self.ids("pod ps")
        if pods:
            self("pod", "rm", "-f", "-t", "5", *pods, check=False)
        containers = self.ids("ps")
        if containers:
            self("rm", "-f", "-t", "5", "-v", *containers, check=False)
        volumes = self.ids("volume ls")
        if volumes:
            self("volume", "rm", "-f", *volumes, check=False)
        images = [i for i in self.images if self.image_exists(i)]
        if images:
            self("rmi", "-f", *images, check=False)
        return {"pods": len(pods), "containers": len(containers), "volumes": len(volumes),
                "images": len(images)}
