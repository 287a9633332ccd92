"""deploy/compose.yaml run by podman-compose, in a network namespace of its own: the services
reach each other on its loopback under their compose names (extra_hosts), since this host gives
containers no bridge network. An override file, written per run, says what differs from the
compose file (OVERRIDES, listed in deploy/README.md too)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from . import probe
from .podman import REPO, Run, env

COMPOSE = REPO / "deploy" / "compose.yaml"
SERVICES = ("source", "dest", "prometheus")  # and guest, run once those are up

OVERRIDES = {
    "network": "every service joins one network namespace made for the run (network_mode "
               "ns:), where the compose names resolve to its loopback (extra_hosts), instead "
               "of a bridge network; ports are not published to the host",
    "images": "the images this run built (migrator, and Prometheus from Debian's package)",
    "token": "the token secret is a file of the run, not deploy/secrets/token",
    "grafana": "Grafana is not started: there is no Debian package of it to build an image "
               "from here",
}


class Netns:
    """A network namespace with only loopback, removed on exit."""

    def __init__(self, name: str):
        self.name, self.path = name, f"/run/netns/{name}"

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    def get(self, url: str, token: str | None = None) -> bytes | None:
        """GET url from inside the namespace; None when it does not answer 200."""
        code = ("import sys, urllib.request as u; r = u.Request(sys.argv[1]); "
                "t = sys.argv[2]; t and r.add_header('Authorization', 'Bearer ' + t); "
                "sys.stdout.buffer.write(u.urlopen(r, timeout=3).read())")
        out = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", code, url,
                              token or ""], capture_output=True, timeout=30)
        return out.stdout if out.returncode == 0 else None


def override(netns: Netns, migrator_image: str, prometheus_image: str, token: Path) -> dict:
    hosts = [f"{name}:127.0.0.1" for name in ("source", "dest", "guest", "prometheus")]
    images = {"source": migrator_image, "dest": migrator_image, "guest": migrator_image,
              "prometheus": prometheus_image}
    return {
        "services": {name: {"image": image, "network_mode": f"ns:{netns.path}",
                            "extra_hosts": hosts, "ports": []}
                     for name, image in images.items()},
        "secrets": {"migrator_token": {"file": str(token)}},
    }


def _compose(project: str, files: list[Path], *args: str, timeout: float = 600,
             check: bool = True) -> subprocess.CompletedProcess:
    tool = shutil.which("podman-compose") or str(Path(sys.executable).with_name("podman-compose"))
    cmd = [tool, "--in-pod=false", "-p", project, *(a for f in files for a in ("-f", str(f))),
           *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): "
                           f"{(out.stderr + out.stdout).strip()[-3000:]}")
    return out


def _reset_ports(path: Path) -> None:
    """`ports: !reset []`: the compose spec's way for an override to drop a list."""
    path.write_text(path.read_text().replace("ports: []", "ports: !reset []"))


def migrate(podman: Run, migrator_image: str, prometheus_image: str) -> dict:
    project = f"migrator-check-{podman.id}"
    work = Path(tempfile.mkdtemp(prefix=f"migrator-compose-{podman.id}-"))
    work.chmod(0o755)
    token = work / "token"
    token.write_text(f"deploy-check-{podman.id}\n")
    token.chmod(0o644)  # Prometheus reads it as nobody, as deploy/README.md says
    with Netns(project) as netns:
        over = work / "compose.override.yaml"
        over.write_text(yaml.safe_dump(override(netns, migrator_image, prometheus_image, token)))
        _reset_ports(over)
        files = [COMPOSE, over]
        try:
            _compose(project, files, "up", "-d", "--no-build", "source")
            probe.wait("compose source /healthz",
                       lambda: netns.get("http://127.0.0.1:8470/healthz"), 120)
            _compose(project, files, "up", "-d", "--no-build", "dest", "prometheus")
            probe.wait("compose dest /healthz",
                       lambda: netns.get("http://127.0.0.1:8471/healthz"), 120)
            guest = _compose(project, files, "run", "--rm", "guest", "guest",
                             "--dest-socket=/run/migrator/guest.sock", "--vcpus=2",
                             "--accesses=2000", "--json", check=False)
            lines = [line for line in guest.stdout.splitlines() if line.startswith("{")]
            if guest.returncode or not lines:
                raise RuntimeError(f"compose guest exited {guest.returncode}:\n"
                                   f"{(guest.stderr + guest.stdout)[-3000:]}")
            report = json.loads(lines[-1])

            def scraped():
                body = netns.get("http://127.0.0.1:9090/api/v1/query?query="
                                 "sum(migrator_verified_pages_total)")
                result = json.loads(body)["data"]["result"] if body else []
                return result and float(result[0]["value"][1])

            verified = probe.wait("compose Prometheus scraping the verified pages", scraped, 60)
            return {"report": report, "scraped_verified_pages": verified, "project": project}
        finally:
            _compose(project, files, "down", "-v", "-t", "5", check=False)
            for what in ("ps -a -q", "volume ls -q"):
                ids = podman(*what.split(), "--filter",
                             f"label=io.podman.compose.project={project}").stdout.split()
                if ids:
                    podman(*what.split()[:1], "rm", "-f", *ids, check=False) \
                        if what.startswith("volume") else podman("rm", "-f", *ids, check=False)
