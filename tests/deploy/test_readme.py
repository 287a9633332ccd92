"""The operator's guide: its commands are ones the CLI accepts, its TLS recipe makes
certificates a source serves and a client verifies, and the top README points to it."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.daemons import daemon_log, stop_daemon

from .argv import knows, parse
from .conftest import DEPLOY, REPO

GUIDE = DEPLOY / "README.md"


def _shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.S)


def _commands() -> list[list[str]]:
    """Every `migrator ...` command in the guide's shell blocks, continuation lines joined."""
    out = []
    for block in _shell_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and Path(words[0]).name == "migrator":
                out.append(words[1:])
    return out


def test_the_top_readme_has_a_deployment_section_pointing_to_the_guide():
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Deployment\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section and "deploy/README.md" in section.group(1)


def test_the_guide_covers_what_operators_ask():
    headings = re.findall(r"^##+ (.+)$", GUIDE.read_text(), re.M)
    for wanted in ("Host preparation", "Huge pages at boot", "Who may open `/dev/userfaultfd`",
                   "Ports", "Tokens", "TLS", "Two machines, two commands", "Prometheus and Grafana",
                   "Scaling out"):
        assert wanted in headings, wanted


def test_every_command_in_the_guide_is_accepted_by_the_cli():
    commands = _commands()
    assert {c[0] for c in commands} >= {"source", "dest", "guest", "host"}
    for argv in commands:
        parse(argv)


def test_the_two_machine_commands_use_a_token_and_tls_and_find_each_other():
    section = GUIDE.read_text().split("## Two machines, two commands", 1)[1].split("\n## ", 1)[0]
    blocks = [b.replace("\\\n", " ") for b in re.findall(r"```sh\n(.*?)```", section, re.S)]
    source, dest = (shlex.split(b.strip()) for b in blocks[:2])
    assert source[:2] == ["migrator", "source"] and dest[:2] == ["migrator", "dest"]
    for argv in (source, dest):
        assert "--token-file" in argv and "--tls-cert" in argv and "--tls-key" in argv
    port = source[source.index("--listen") + 1].rsplit(":", 1)[1]
    url = dest[dest.index("--source") + 1]
    assert url.startswith("https://") and url.endswith(f":{port}") and "--tls-ca" in dest
    assert dest[dest.index("--token-file") + 1] == source[source.index("--token-file") + 1]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """The guide's openssl recipe, run as written."""
    assert shutil.which("openssl"), "openssl is missing"
    (recipe,) = [b for b in _shell_blocks() if "openssl req -x509" in b]
    work = tmp_path_factory.mktemp("tls")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], cwd=work,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return work / "tls"


def test_the_tls_recipe_makes_certificates_that_verify_for_their_host(certificates):
    for host in ("source.example.net", "dest.example.net"):
        out = subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", f"{host}.crt"],
                             cwd=certificates, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        text = subprocess.run(["openssl", "x509", "-in", f"{host}.crt", "-noout", "-ext",
                               "subjectAltName"], cwd=certificates, capture_output=True,
                              text=True).stdout
        assert f"DNS:{host}" in text


def test_a_source_serves_the_recipe_certificate_to_a_client_that_trusts_only_the_ca(
        certificates, tmp_path):
    assert knows(["source"], "--tls-cert")
    token = tmp_path / "token"
    token.write_text("readme-token\n")
    log = tmp_path / "source.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "migrator.cli", "source", "--listen", "127.0.0.1:0",
             "--memory", "8MiB", "--token-file", str(token),
             "--tls-cert", str(certificates / "source.example.net.crt"),
             "--tls-key", str(certificates / "source.example.net.key")],
            stdout=out, stderr=subprocess.STDOUT)
    proc.log_path = log  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"source listening on https://[^:]+:(\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, daemon_log(proc)
            time.sleep(0.05)
        context = ssl.create_default_context(cafile=str(certificates / "ca.crt"))
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="source.example.net") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: source.example.net\r\n"
                            b"Connection: close\r\n\r\n")
                reply = b""
                while chunk := tls.recv(4096):
                    reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    finally:
        stop_daemon(proc)
