"""Debian base images made from Debian's packages, since no container registry may be reachable:
`mmdebstrap --variant=minbase` writes a root file system with the packages asked for, and
`podman import` makes it an image. Named by a hash of what goes in, and kept: the next run finds
it and skips the few minutes this takes."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from dataclasses import dataclass

from .podman import Run, env, require

SUITE = "bookworm"
# What `podman import` sets: a rootfs tarball carries no environment, and without PATH nothing
# in the container finds a program by name.
CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           'CMD ["/bin/bash"]')
MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Base:
    name: str  # what it is for: "migrator-base", "migrator-prometheus-base"
    packages: tuple[str, ...]

    @property
    def ref(self) -> str:
        recipe = "\n".join([SUITE, "minbase", MIRROR, *sorted(self.packages), *CHANGES])
        return f"localhost/{self.name}:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


MIGRATOR = Base("migrator-base", ("python3", "python3-venv", "libxxhash0", "libsqlite3-0"))
PROMETHEUS = Base("migrator-prometheus-base", ("prometheus",))
# systemd as PID 1 for deploy/systemd's units, beside what the migrator image has.
SYSTEMD = Base("migrator-systemd-base", ("systemd", "python3", "python3-venv", "libxxhash0",
                                         "libsqlite3-0"))


def ensure(podman: Run, base: Base, timeout: float = 900) -> tuple[str, bool]:
    """The base's image reference, made now if it is not there yet; and whether it was made."""
    if podman.image_exists(base.ref):
        return base.ref, False
    require("mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="migrator-base-") as tmp:
        tar = f"{tmp}/rootfs.tar"
        out = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase",
                              f"--include={','.join(base.packages)}", SUITE, tar, MIRROR],
                             capture_output=True, text=True, timeout=timeout, env=env())
        if out.returncode:
            raise RuntimeError(f"mmdebstrap for {base.ref} failed ({out.returncode}); it needs "
                               f"Debian's mirror {MIRROR}: {out.stderr.strip()[-1500:]}")
        changes = [a for c in CHANGES for a in ("--change", c)]
        podman("import", *changes, tar, base.ref, timeout=timeout)
    return base.ref, True
