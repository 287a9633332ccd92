"""A real Prometheus server (Debian's `prometheus` binary) for tests, stopped by its PID.

    prom = PrometheusServer({"source": source_url, "dest": dest_url}, token="secret")
    prom.wait_up()
    prom.value('sum(migrator_pages_remaining)')
    prom.stop()

It has its own config, token file and TSDB in a temporary folder, listens on a free loopback
port and scrapes every target's /metrics with the bearer token (scrape_configs'
`authorization: {credentials_file: ...}`), so a token or exposition problem shows as up == 0.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from helpers.daemons import stop_daemon

START_TIMEOUT = 30.0


class PromQLError(RuntimeError):
    """Prometheus refused a query (HTTP 400: a syntax error, 422: it cannot be evaluated)."""

    def __init__(self, status: int, expr: str, message: str):
        super().__init__(f"HTTP {status} for {expr!r}: {message}")
        self.status, self.expr, self.message = status, expr, message


def available() -> bool:
    return shutil.which("prometheus") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    def __init__(self, targets: dict[str, str], token: str, scrape_interval: str = "250ms"):
        """targets: job name -> base URL (http://host:port) whose /metrics is scraped."""
        self.dir = Path(tempfile.mkdtemp(prefix="migrator-prometheus-"))
        token_file = self.dir / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        config = {
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "metrics_path": "/metrics",
                 "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                 "static_configs": [{"targets": [urllib.parse.urlsplit(url).netloc]}]}
                for job, url in targets.items()],
        }
        config_file = self.dir / "prometheus.yml"
        config_file.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log_path = self.dir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config_file}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address={self.url.partition('://')[2]}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready in {START_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_daemon(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the HTTP API ---------------------------------------------------------------------------
    def _api(self, path: str, params: dict) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raw = e.read().decode(errors="replace")
            try:
                message = json.loads(raw).get("error", raw)
            except ValueError:
                message = raw
            raise PromQLError(e.code, params.get("query", ""), message) from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query: [{"metric": {labels}, "value": [t, "v"]}, ...] (or a scalar's
        [t, "v"] wrapped in one such dict)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self._api("query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """[{"metric": {labels}, "values": [[t, "v"], ...]}, ...]"""
        return self._api("query_range", {"query": expr, "start": f"{start:.3f}",
                                         "end": f"{end:.3f}", "step": f"{step}"})["result"]

    def values(self, expr: str) -> dict[tuple, float]:
        """Instant vector -> {sorted label items: value}."""
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in self.query(expr)}

    def value(self, expr: str) -> float:
        """The single value of an expression that must yield exactly one series."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr!r} gave {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def wait_up(self, jobs: list[str], timeout: float = 30.0) -> None:
        """Until every job's last scrape succeeded."""
        deadline = time.monotonic() + timeout
        while True:
            up = {r["metric"]["job"]: r["value"][1] for r in self.query("up")}
            if all(up.get(job) == "1" for job in jobs):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"targets not up: {up}\n{self.targets()}\n{self.log()}")
            time.sleep(0.1)

    def wait_scraped_after(self, moment: float, jobs: list[str], timeout: float = 15.0) -> None:
        """Until every job has been scraped successfully by a scrape that began after moment
        (a time.time())."""
        deadline = time.monotonic() + timeout
        while True:
            # timestamp() gives the sample's time only when applied to a bare selector: of
            # `up == 1` it would give the evaluation time.
            last = {r["metric"]["job"]: float(r["value"][1]) for r in self.query("timestamp(up)")}
            up = {r["metric"]["job"]: r["value"][1] for r in self.query("up")}
            if all(last.get(job, 0) > moment and up.get(job) == "1" for job in jobs):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no scrape after {moment}: {last}\n{self.targets()}")
            time.sleep(0.05)

    def targets(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as r:
            return [{k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
                    for t in json.load(r)["data"]["activeTargets"]]
