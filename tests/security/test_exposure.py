"""Loopback by default; beyond loopback only with a token: the same rule, the same words, on
both daemons."""

from __future__ import annotations

import pytest

from e2e.conftest import TOKEN
from helpers.daemons import start_source as start_plain_source, stop_daemon
from migrator import orchestration

from .conftest import run_cli, token_file

EXPOSED = ["0.0.0.0:8470", "[::]:8470", "example.org:8470"]


def _daemon_args(daemon: str, tmp_path) -> list[str]:
    if daemon == "source":
        return ["source", "--memory", "2MiB"]
    return ["dest", "--source", "http://127.0.0.1:9", "--mode", "hgm", "--hugepage-size", "2M",
            "--guest-socket", str(tmp_path / "guest.sock")]


@pytest.mark.parametrize("listen", EXPOSED)
def test_both_daemons_refuse_a_non_loopback_bind_without_a_token_in_the_same_words(listen,
                                                                                  tmp_path):
    said = {}
    for daemon in ("source", "dest"):
        r = run_cli(*_daemon_args(daemon, tmp_path), "--listen", listen)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"migrator {daemon}: "), last
        said[daemon] = last.removeprefix(f"migrator {daemon}: ")
    host = listen.rpartition(":")[0].strip("[]")
    assert said["source"] == said["dest"]
    assert said["dest"].startswith(f"refusing to listen on {host}:8470 without a token")
    assert "--token-file" in said["dest"] and "MIGRATOR_TOKEN" in said["dest"]


@pytest.mark.parametrize("daemon", ["source", "dest"])
def test_the_defaults_listen_on_loopback(daemon):
    text = " ".join(run_cli(daemon, "--help").stdout.split())
    assert "(default 127.0.0.1:847" in text and "beyond loopback a token is required" in text


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:0", "localhost:0"])
def test_loopback_needs_no_token(listen, tmp_path):
    r = run_cli("dest", "--source", "http://127.0.0.1:9", "--mode", "hgm", "--hugepage-size",
                "2M", "--guest-socket", str(tmp_path / "guest.sock"), "--listen", listen,
                "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key")
    # It got past the exposure rule to the next check: the certificate.
    assert "refusing to listen" not in r.stderr and "cannot read --tls-cert" in r.stderr


def test_dest_beyond_loopback_with_a_token_is_allowed(tmp_path):
    proc, url = start_plain_source("2MiB", seed=1, token=TOKEN)
    port = orchestration.free_port()
    try:
        dest = orchestration.start_dest(
            url, "hgm", 2 << 20, str(tmp_path / "guest.sock"), tmp_path,
            listen=f"0.0.0.0:{port}", url=f"http://127.0.0.1:{port}",
            extra=["--token-file", token_file(tmp_path)], timeout=30)
        stop_daemon(dest)
    finally:
        stop_daemon(proc)
