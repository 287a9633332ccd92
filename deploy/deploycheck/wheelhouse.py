"""The wheels the image installs, built on the host: migrator itself (its native parts compiled
here, against Debian 12's glibc and libxxhash, which the image's base shares) and every
dependency. The image build then installs them with no network (pip --no-index)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from .podman import REPO

WHEELHOUSE = REPO / "build" / "wheelhouse"


def build(python: str = sys.executable, out: Path = WHEELHOUSE, timeout: float = 900) -> Path:
    """`pip wheel` the checkout and its dependencies into out (emptied first)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    done = subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out),
                           str(REPO)], capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"pip wheel {REPO} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    if not list(out.glob("migrator-*.whl")):
        raise RuntimeError(f"pip wheel made no migrator wheel in {out}")
    return out


def digest(wheelhouse: Path = WHEELHOUSE) -> str:
    """A hash of the wheels' names and contents: the image's tag."""
    h = hashlib.sha256()
    for wheel in sorted(wheelhouse.glob("*.whl")):
        h.update(wheel.name.encode())
        h.update(hashlib.sha256(wheel.read_bytes()).digest())
    return h.hexdigest()[:12]
