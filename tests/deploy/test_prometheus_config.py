"""deploy/prometheus/prometheus.yml is a config Prometheus's own checker accepts."""

from __future__ import annotations

import shutil
import subprocess

from .conftest import DEPLOY

CONFIG = DEPLOY / "prometheus/prometheus.yml"


def test_promtool_accepts_the_scrape_config_with_its_token_file(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the prometheus package (.ci/system-deps)"
    # promtool checks that the credentials file exists: point it at a real one.
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.read_text().replace("/run/secrets/migrator_token", str(token)))
    out = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
