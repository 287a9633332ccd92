"""deploy/compose.yaml run by podman-compose, in a network namespace of its own: the services
reach each other on its loopback under their compose names (extra_hosts), since this host gives
containers no bridge network. deploy/podman/compose.netns.yaml says what differs from the
compose file (OVERRIDES, listed in deploy/README.md too)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import probe
from .podman import REPO, Run, env

COMPOSE = REPO / "deploy" / "compose.yaml"
NETNS_OVERRIDE = REPO / "deploy" / "podman" / "compose.netns.yaml"
# compose.yaml's own settings, smaller than its defaults so that a run stays short.
WORKLOAD = {"MIGRATOR_MEMORY": "128MiB", "MIGRATOR_ACCESSES": "2000"}
_DONE = re.compile(r"migration complete: verified (\d+) pages, 0 mismatched")

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


def _compose(project: str, files: list[Path], settings: dict[str, str], *args: str,
             timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    tool = shutil.which("podman-compose") or str(Path(sys.executable).with_name("podman-compose"))
    cmd = [tool, "--in-pod=false", "-p", project, *(a for f in files for a in ("-f", str(f))),
           *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**env(), **settings},
                         timeout=timeout)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): "
                           f"{(out.stderr + out.stdout).strip()[-3000:]}")
    return out


def _remove_leftovers(podman: Run, project: str) -> None:
    """What `down -v` left of the project (a container that failed to start, its volumes)."""
    where = ["--filter", f"label=io.podman.compose.project={project}"]
    containers = podman("ps", "-a", "-q", *where).stdout.split()
    if containers:
        podman("rm", "-f", *containers, check=False)
    volumes = podman("volume", "ls", "-q", *where).stdout.split()
    if volumes:
        podman("volume", "rm", "-f", *volumes, check=False)


def migrate(podman: Run, migrator_image: str, prometheus_image: str) -> dict:
    """up source, dest and Prometheus; `run --rm guest` once (the compose file's own command);
    Prometheus's count of verified pages; down."""
    project = f"migrator-check-{podman.id}"
    with tempfile.TemporaryDirectory(prefix=f"{project}-") as tmp, Netns(project) as netns:
        token = Path(tmp) / "token"
        Path(tmp).chmod(0o755)
        token.write_text(f"deploy-check-{podman.id}\n")
        token.chmod(0o644)  # Prometheus reads it as nobody, as deploy/README.md says
        files = [COMPOSE, NETNS_OVERRIDE]
        settings = {"MIGRATOR_NETNS": netns.name, "MIGRATOR_IMAGE": migrator_image,
                    "MIGRATOR_PROMETHEUS_IMAGE": prometheus_image,
                    "MIGRATOR_TOKEN_FILE": str(token), **WORKLOAD}
        try:
            _compose(project, files, settings, "up", "-d", "--no-build", "source")
            probe.wait("compose source /healthz",
                       lambda: netns.get("http://127.0.0.1:8470/healthz"), 120)
            _compose(project, files, settings, "up", "-d", "--no-build", "dest", "prometheus")
            probe.wait("compose dest /healthz",
                       lambda: netns.get("http://127.0.0.1:8471/healthz"), 120)
            guest = _compose(project, files, settings, "run", "--rm", "guest", check=False)
            text = guest.stdout + guest.stderr
            done = _DONE.search(text)
            if guest.returncode or not done:
                raise RuntimeError(f"compose guest exited {guest.returncode} without a verified "
                                   f"migration:\n{text[-3000:]}")

            def scraped():
                body = netns.get("http://127.0.0.1:9090/api/v1/query?query="
                                 "sum(migrator_verified_pages_total)")
                result = json.loads(body)["data"]["result"] if body else []
                return result and float(result[0]["value"][1])

            verified = probe.wait("compose Prometheus scraping the verified pages", scraped, 60)
            return {"verified_pages": int(done.group(1)), "scraped_verified_pages": verified,
                    "log": text, "project": project, "settings": WORKLOAD}
        finally:
            _compose(project, files, settings, "down", "-v", "-t", "5", check=False)
            _remove_leftovers(podman, project)
