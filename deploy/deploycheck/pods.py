"""A migration between pods played from deploy/k8s/ (kube.variant): the source Deployment and
the destination first, then, once both answer, the guest; the guest pod's exit status and log
say whether the migration completed, verified."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import tempfile
from pathlib import Path

from . import confinement, kube, probe
from .podman import Run

_SECRET_KEYS = {"migrator-token": ("token",), "migrator-tls": ("tls.crt", "tls.key", "ca.crt")}
_DONE = re.compile(r"migration complete: verified (\d+) pages, 0 mismatched")


def make_tls(where: Path) -> dict[str, bytes]:
    """A private CA and one server certificate naming both Services, as deploy/README.md makes
    them with openssl (tls.crt, tls.key, ca.crt)."""
    names = "DNS:migrator-source.migrator.svc,DNS:migrator-dest.migrator.svc"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["openssl", "req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt",
         "-days", "2", "-subj", "/CN=migrator deploy-check CA"],
        ["openssl", "req", "-new", *ec, "-keyout", "tls.key", "-out", "tls.csr",
         "-subj", "/CN=migrator-source.migrator.svc"],
        ["openssl", "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-out", "tls.crt", "-extfile", "ext"],
    ]
    (where / "ext").write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    for step in steps:
        subprocess.run(step, cwd=where, check=True, capture_output=True, timeout=60)
    return {n: (where / n).read_bytes() for n in ("tls.crt", "tls.key", "ca.crt")}


def _secret_dirs(work: Path, docs: list[dict], values: dict[str, bytes]) -> dict[str, Path]:
    """One directory per (pod, Secret), its files with the volume's defaultMode and the pod's
    fsGroup as group, as kubelet lays out a Secret volume."""
    out = {}
    for doc in docs:
        template = doc.get("spec", {}).get("template")
        if not template:
            continue
        spec = template["spec"]
        role = spec["containers"][0]["args"][0]
        group = spec.get("securityContext", {}).get("fsGroup", 0)
        for volume in spec.get("volumes", []):
            secret = volume.get("secret")
            if not secret:
                continue
            d = work / f"{role}-{secret['secretName']}"
            d.mkdir(mode=0o755)
            for key in _SECRET_KEYS[secret["secretName"]]:
                f = d / key
                f.write_bytes(values[key])
                os.chown(f, 0, group)
                f.chmod(secret.get("defaultMode", 0o644))
            out[f"{role}/{secret['secretName']}"] = d
    return out


def _https_healthy(port: int, ca: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the certificate names the Services, not 127.0.0.1
    return probe.healthy(f"https://127.0.0.1:{port}", context)


def _play(podman: Run, path: Path) -> list[str]:
    """Pod ids `podman kube play` made from path."""
    out = podman("kube", "play", "--no-hosts", str(path), timeout=300).stdout
    return re.findall(r"Pod:\n([0-9a-f]{64})", out)


def _containers(podman: Run, pod: str) -> list[str]:
    info = podman.inspect("pod", pod)
    return [c["Id"] for c in info["Containers"] if c["Id"] != info.get("InfraContainerID")]


def _exited(podman: Run, container: str) -> int | None:
    state = podman.inspect("container", container)["State"]
    return None if state["Running"] or state["Status"] in ("created", "configured") \
        else int(state["ExitCode"])


def migrate(podman: Run, image: str, memory: str = "1GiB", hugepage_size: str = "1G") -> dict:
    """Play the daemons, then the guest; the guest's verified pages and every played
    container's confinement."""
    with tempfile.TemporaryDirectory(prefix=f"migrator-pods-{podman.id}-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        return _migrate(podman, image, memory, hugepage_size, work)


def _migrate(podman: Run, image: str, memory: str, hugepage_size: str, work: Path) -> dict:
    tls = work / "tls"
    tls.mkdir()
    values = {"token": f"deploy-check-{podman.id}\n".encode(), **make_tls(tls)}
    socket_dir = work / "run"
    socket_dir.mkdir(mode=0o755)
    hosts = work / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {kube.SOURCE_HOST}\n")
    hosts.chmod(0o644)
    docs = kube.manifests()
    place = kube.Place(image=image, source_port=probe.free_port(), dest_port=probe.free_port(),
                       secrets=_secret_dirs(work, docs, values), socket_dir=socket_dir,
                       hosts_file=hosts,
                       memory=memory, hugepages=memory.replace("iB", "i"),
                       hugepage_size=hugepage_size, label=podman.label)
    daemons, guest = kube.variant(place)
    pods = _play(podman, kube.dump(daemons, work / "daemons.yaml"))
    containers = [c for p in pods for c in _containers(podman, p)]

    def gone():
        stopped = [c for c in containers if _exited(podman, c) is not None]
        return None if not stopped else "\n".join(
            podman("logs", c, check=False).stderr[-2000:] for c in stopped)

    for port in (place.source_port, place.dest_port):
        probe.wait(f"pod on port {port} /healthz over HTTPS",
                   lambda: _https_healthy(port, tls / "ca.crt"), 240, gone)
    confined = {podman.inspect("container", c)["Name"]: confinement.of(podman, c)
                for c in containers}
    (guest_pod,) = _play(podman, kube.dump(guest, work / "guest.yaml"))
    (guest_container,) = _containers(podman, guest_pod)
    status = probe.wait("the guest pod's migration", lambda: _exited(podman, guest_container)
                        is not None and [_exited(podman, guest_container)], 600)[0]
    log = podman("logs", guest_container, check=False)
    text = log.stdout + log.stderr
    done = _DONE.search(text)
    confined[podman.inspect("container", guest_container)["Name"]] = \
        confinement.of(podman, guest_container)
    if status != 0 or not done:
        raise RuntimeError(f"the guest pod exited {status} without a verified migration:\n"
                           f"{text[-3000:]}\n{gone() or ''}")
    return {"verified_pages": int(done.group(1)), "log": text, "confinement": confined,
            "pods": pods + [guest_pod], "place": place}
