"""deploy/compose.yaml: five services wired consistently with the daemons' CLIs, the image,
the Prometheus config and the Grafana provisioning."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from .argv import compose_interpolate, listen_port, option, parse
from .conftest import DEPLOY

DAEMONS = ("source", "dest", "guest")
TOKEN_SECRET = "migrator_token"


def _command(service: dict, env: dict[str, str] | None = None) -> list[str]:
    return [compose_interpolate(str(w), env) for w in service["command"]]


def _mounts(service: dict) -> dict[str, str]:
    """container path -> source (named volume, or path relative to deploy/)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def _published(service: dict) -> dict[int, str]:
    """container port -> host address it is published on."""
    out = {}
    for port in service.get("ports", []):
        address, host_port, container_port = port.split(":")
        out[int(container_port)] = address
    return out


def test_the_compose_file_runs_source_dest_guest_prometheus_and_grafana(compose):
    assert set(compose["services"]) == {"source", "dest", "guest", "prometheus", "grafana"}


def test_no_service_is_privileged_or_keeps_a_capability(compose):
    for name, service in compose["services"].items():
        assert not service.get("privileged"), name
        assert service.get("cap_drop") == ["ALL"] and not service.get("cap_add"), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("read_only") is True, name


def test_the_migrator_image_is_built_from_the_containerfile(compose):
    build = compose["services"]["source"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / build["dockerfile"]).resolve() == (DEPLOY / "Containerfile").resolve()
    images = {compose["services"][n]["image"] for n in DAEMONS}
    assert images == {compose["services"]["source"]["image"]}


@pytest.mark.parametrize("env", [{}, {"MIGRATOR_MODE": "hugepage", "MIGRATOR_HUGEPAGE_SIZE": "1G",
                                      "MIGRATOR_MEMORY": "4GiB", "MIGRATOR_VCPUS": "8"}],
                         ids=["defaults", "hugepage-1G"])
def test_every_migrator_command_is_accepted_by_the_cli(compose, env):
    for name in DAEMONS:
        args = parse(_command(compose["services"][name], env))
        assert args.command == name


def test_the_documented_settings_match_the_defaults_in_the_file():
    text = (DEPLOY / "compose.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    documented = dict(re.findall(r"\b(MIGRATOR_\w+)=(\S+)", header))
    used = dict(re.findall(r"\$\{(MIGRATOR_\w+):-([^}]*)\}", text))
    assert documented == used


def test_ports_published_healthchecked_and_listened_on_agree(compose):
    for name in ("source", "dest"):
        service = compose["services"][name]
        port = listen_port(parse(_command(service)))
        assert _published(service) == {port: "127.0.0.1"}, f"{name}: publish on loopback only"
        url = next(w for w in service["healthcheck"]["test"] if "/healthz" in w)
        assert re.search(rf"http://127\.0\.0\.1:{port}/healthz", url), url


def test_the_destination_reaches_the_source_service_on_its_port(compose):
    dest = _command(compose["services"]["dest"])
    url = urlsplit(option(dest, "--source"))
    source_port = listen_port(parse(_command(compose["services"]["source"])))
    assert (url.hostname, url.port) == ("source", source_port)
    assert compose["services"]["dest"]["depends_on"]["source"]["condition"] == "service_healthy"
    assert compose["services"]["guest"]["depends_on"]["dest"]["condition"] == "service_healthy"


def test_the_guest_finds_the_destination_socket_on_a_shared_volume_as_the_same_user(compose):
    dest, guest = compose["services"]["dest"], compose["services"]["guest"]
    socket = option(_command(dest), "--guest-socket")
    assert option(_command(guest), "--dest-socket") == socket
    directory = str(Path(socket).parent)
    volume = _mounts(dest)[directory]
    assert _mounts(guest)[directory] == volume and volume in compose["volumes"]
    # The socket is owner-only (0600): both ends run as one uid.
    assert dest["user"] == guest["user"]


def test_only_the_guest_gets_the_userfaultfd_device(compose):
    for name, service in compose["services"].items():
        devices = [d.split(":")[0] for d in service.get("devices", [])]
        assert devices == (["/dev/userfaultfd"] if name == "guest" else []), name


def test_the_token_is_a_compose_secret_the_daemons_read_from_their_token_file(compose):
    assert compose["secrets"][TOKEN_SECRET]["file"] == "./secrets/token"
    for name in ("source", "dest"):
        service = compose["services"][name]
        assert TOKEN_SECRET in service["secrets"]
        assert option(_command(service), "--token-file") == f"/run/secrets/{TOKEN_SECRET}"
    assert TOKEN_SECRET in compose["services"]["prometheus"]["secrets"]
    # A token put in deploy/secrets/ is never committed.
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DEPLOY / "secrets/token")],
                             cwd=DEPLOY)
    assert ignored.returncode == 0


def test_prometheus_scrapes_both_daemons_with_the_token_secret(compose):
    prometheus = compose["services"]["prometheus"]
    source = _mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((DEPLOY / source).read_text())
    wanted = {f"{n}:{listen_port(parse(_command(compose['services'][n])))}"
              for n in ("source", "dest")}
    targets, credentials = set(), set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job["authorization"].get("type", "Bearer") == "Bearer"
        credentials.add(job["authorization"]["credentials_file"])
        targets |= {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == wanted
    assert credentials == {f"/run/secrets/{TOKEN_SECRET}"}


def test_grafana_is_provisioned_from_deploy_grafana(compose):
    mounts = _mounts(compose["services"]["grafana"])
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    dashboards_at = next(t for t, s in mounts.items() if s == "./grafana/dashboards")
    provisioning = DEPLOY / "grafana/provisioning"
    assert provisioning.is_dir()
    for path in provisioning.rglob("*.y*ml"):
        doc = yaml.safe_load(path.read_text()) or {}
        for provider in doc.get("providers", []):
            assert provider["options"]["path"].rstrip("/") == dashboards_at, path
        for source in doc.get("datasources", []):
            if source.get("type") == "prometheus":
                assert urlsplit(source["url"]).netloc == "prometheus:9090", path
                # Grafana's $__rate_interval assumes this is Prometheus's scrape interval.
                interval = source.get("jsonData", {}).get("timeInterval")
                scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
                assert interval in (None, scrape["global"]["scrape_interval"]), path
    assert any((DEPLOY / "grafana/dashboards").glob("*.json"))
