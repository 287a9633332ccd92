"""loadtests/locustfile.py against a real source: headless, distributed (master + worker), and
a wrong token fails the run."""

from __future__ import annotations

import csv
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.daemons import start_source, stop_daemon

# Never import locust here: it monkey-patches threads and sockets with gevent for the whole
# pytest process, and every later test whose threads block in C (a vCPU in a fault) then hangs.
# locust is in the test extras: not finding it is a broken install, not a reason to skip.
assert importlib.util.find_spec("locust") is not None, "pip install -e '.[test]' installs locust"

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = str(REPO / "loadtests" / "locustfile.py")
TOKEN = "locust-token"


@pytest.fixture(scope="module")
def source():
    proc, url = start_source("64MiB", seed=11, token=TOKEN)
    yield url
    stop_daemon(proc)


def locust(*args: str, token: str = TOKEN, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "MIGRATOR_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def stats(prefix: Path) -> dict[str, dict]:
    with open(f"{prefix}_stats.csv") as f:
        return {f"{r['Type']} {r['Name']}": r for r in csv.DictReader(f)}


def _check(rows: dict[str, dict]) -> None:
    assert int(rows["GET /v1/manifest"]["Request Count"]) >= 1
    for size in ("4 KiB", "64 KiB", "1 MiB"):
        row = rows[f"GET /v1/pages [{size}]"]
        assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0, row
    digest = rows["DIGEST manifest check"]
    assert int(digest["Request Count"]) > 0 and int(digest["Failure Count"]) == 0
    assert int(rows[" Aggregated"]["Failure Count"]) == 0


def test_headless_readers_verify_pages_against_the_manifest(source, tmp_path):
    done = locust("--headless", "-u", "10", "-r", "10", "-t", "5s", "--host", source,
                  "--only-summary", "--verify-fraction", "0.5", "--csv", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    _check(stats(tmp_path / "run"))


def test_distributed_master_and_worker(source, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "MIGRATOR_TOKEN": TOKEN}
    worker = subprocess.Popen([sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--worker",
                               "--master-host", "127.0.0.1", "--master-port", port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        done = locust("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                      "--expect-workers", "1", "--expect-workers-max-wait", "30", "--headless",
                      "-u", "6", "-r", "6", "-t", "4s", "--host", source, "--only-summary",
                      "--csv", str(tmp_path / "dist"))
        assert done.returncode == 0, done.stderr[-3000:]
        _check(stats(tmp_path / "dist"))
        worker.wait(timeout=20)  # the master tells its workers to quit
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_a_wrong_token_fails_the_run(source, tmp_path):
    done = locust("--headless", "-u", "2", "-r", "2", "-t", "2s", "--host", source,
                  "--only-summary", "--csv", str(tmp_path / "bad"), token="wrong")
    assert done.returncode != 0
    row = stats(tmp_path / "bad")["GET /v1/manifest"]
    assert int(row["Failure Count"]) == int(row["Request Count"]) > 0
