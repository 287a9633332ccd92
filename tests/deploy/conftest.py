"""The deployment files under deploy/, loaded once for the tests that check them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def load_yaml_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="session")
def k8s_documents() -> list[tuple[Path, dict]]:
    paths = sorted((DEPLOY / "k8s").rglob("*.yaml"))
    return [(p, d) for p in paths for d in load_yaml_documents(p)]


def k8s_by_kind(documents: list[tuple[Path, dict]], kind: str) -> list[dict]:
    return [d for _, d in documents if d.get("kind") == kind]
