"""A migration in containers: source, destination and guest each in a container of the migrator
image on the host network, the guest socket on a shared volume, /dev/userfaultfd for the guest
alone, every container without capabilities; and Prometheus, in its own container, scraping
both daemons with deploy/prometheus/prometheus.yml."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import confinement, probe
from .podman import REPO, Run

HARDENING = ("--network=host", "--read-only", "--cap-drop=all",
             "--security-opt=no-new-privileges", "--tmpfs=/tmp")
TOKEN_IN_CONTAINER = "/run/secrets/migrator_token"


@dataclass(frozen=True)
class Workload:
    mode: str = "hgm"
    hugepage_size: str = "2M"
    memory: str = "64MiB"
    vcpus: int = 2
    accesses: int = 2000


def _logs(podman: Run, container: str) -> str:
    out = podman("logs", container, check=False)
    return out.stdout[-3000:] + out.stderr[-3000:]


def _gone(podman: Run, container: str):
    def alive() -> str | None:
        state = podman("inspect", "--format", "{{.State.Running}}", container, check=False)
        return None if state.stdout.strip() == "true" else _logs(podman, container)
    return alive


def _daemon(podman: Run, image: str, name: str, args: list[str], mounts: list[str],
            user: str | None = None) -> str:
    user_args = [f"--user={user}"] if user else []
    out = podman("run", "-d", f"--name=migrator-{name}-{podman.id}", "--label", podman.label,
                 *HARDENING, *user_args, *mounts, image, *args)
    return out.stdout.strip()


def prometheus_config(source: str, dest: str, token_file: str) -> dict:
    """deploy/prometheus/prometheus.yml with its targets (compose's service names) pointed at
    source and dest (host:port), the token read from token_file, scraping every second."""
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    where = {"source:8470": source, "dest:8471": dest}
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = token_file
        for sc in job["static_configs"]:
            sc["targets"] = [where[t] for t in sc["targets"]]
    return config


def run_prometheus(podman: Run, image: str, work: Path, token: Path, source: str,
                   dest: str) -> tuple[str, str]:
    """Prometheus in a container of image, scraping source and dest; (container, its URL)."""
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(source, dest, TOKEN_IN_CONTAINER)))
    config.chmod(0o644)
    web = f"127.0.0.1:{probe.free_port()}"
    container = podman(
        "run", "-d", f"--name=migrator-prometheus-{podman.id}", "--label", podman.label,
        *HARDENING, "-v", f"{config}:/etc/prometheus/prometheus.yml:ro",
        "-v", f"{token}:{TOKEN_IN_CONTAINER}:ro", image,
        "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
        f"--web.listen-address={web}").stdout.strip()
    return container, f"http://{web}"


def migrate(podman: Run, image: str, prometheus_image: str, workload: Workload) -> dict:
    """Run the whole loop once; the guest's report, the containers' confinement, and what
    Prometheus scraped. Raises when a step fails, naming it."""
    with tempfile.TemporaryDirectory(prefix=f"migrator-containers-{podman.id}-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        return _migrate(podman, image, prometheus_image, workload, work)


def _migrate(podman: Run, image: str, prometheus_image: str, workload: Workload,
             work: Path) -> dict:
    token = work / "token"
    token.write_text(f"deploy-check-{podman.id}\n")
    token.chmod(0o444)  # read by uid 10001 (source), 0 (dest) and nobody (Prometheus)
    secret = ["-v", f"{token}:{TOKEN_IN_CONTAINER}:ro"]
    socket_volume = podman("volume", "create", "--label", podman.label,
                           f"migrator-guest-socket-{podman.id}").stdout.strip()
    run_dir = ["-v", f"{socket_volume}:/run/migrator"]
    source_port, dest_port = probe.free_port(), probe.free_port()
    source_url, dest_url = f"http://127.0.0.1:{source_port}", f"http://127.0.0.1:{dest_port}"

    source = _daemon(podman, image, "source", [
        "source", f"--listen=127.0.0.1:{source_port}", f"--memory={workload.memory}",
        "--seed=42", f"--token-file={TOKEN_IN_CONTAINER}"], secret)
    probe.wait("source container /healthz", lambda: probe.healthy(source_url), 120,
               _gone(podman, source))
    # uid 0 without capabilities: the guest socket is owner-only, and the guest's
    # /dev/userfaultfd is root's 0600 on a stock host.
    dest = _daemon(podman, image, "dest", [
        "dest", f"--listen=127.0.0.1:{dest_port}", f"--source={source_url}",
        f"--mode={workload.mode}", f"--hugepage-size={workload.hugepage_size}",
        "--guest-socket=/run/migrator/guest.sock", f"--token-file={TOKEN_IN_CONTAINER}"],
        secret + run_dir, user="0:0")
    probe.wait("dest container /healthz", lambda: probe.healthy(dest_url), 120,
               _gone(podman, dest))
    prometheus, prometheus_url = run_prometheus(podman, prometheus_image, work, token,
                                                f"127.0.0.1:{source_port}",
                                                f"127.0.0.1:{dest_port}")
    both = {"migrator-source": 1.0, "migrator-dest": 1.0}
    probe.wait("Prometheus scraping both daemons (up == 1)",
               lambda: probe.scraped(prometheus_url, "up") == both, 90,
               _gone(podman, prometheus))

    guest_name = f"migrator-guest-{podman.id}"
    done = podman("run", f"--name={guest_name}", "--label", podman.label, *HARDENING,
                  "--user=0:0", "--device=/dev/userfaultfd", *run_dir, image,
                  "guest", "--dest-socket=/run/migrator/guest.sock", f"--vcpus={workload.vcpus}",
                  f"--accesses={workload.accesses}", "--write-ratio=0.3", "--json",
                  check=False, timeout=600)
    if not done.stdout.strip():
        raise RuntimeError(f"guest container failed ({done.returncode}): {done.stderr[-3000:]}\n"
                           f"dest: {_logs(podman, dest)}")
    report = json.loads(done.stdout.strip().splitlines()[-1])

    confined = {name: confinement.of(podman, c) for name, c in
                (("source", source), ("dest", dest), ("prometheus", prometheus),
                 ("guest", guest_name))}
    excess = [p for name, c in confined.items()
              for p in confinement.problems(c, ("/dev/userfaultfd",) if name == "guest" else ())]
    if excess:
        raise RuntimeError("containers hold more privilege than deploy/README.md grants: "
                           + "; ".join(excess))
    verified = probe.wait(
        "Prometheus scraping the destination's verified pages",
        lambda: probe.scraped(prometheus_url, "sum(migrator_verified_pages_total)").get(""), 30,
        _gone(podman, prometheus))
    return {"report": report, "guest_exit": done.returncode, "confinement": confined,
            "scraped_verified_pages": verified}
