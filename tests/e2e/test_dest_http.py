"""The destination's HTTP side: token on everything but health, metrics in both formats."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from .conftest import TOKEN


def _get(url: str, token: str | None = None, accept: str | None = None):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if accept:
        headers["Accept"] = accept
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
def test_status_and_metrics_need_the_token(dest_factory, token):
    dest = dest_factory("hgm")
    for path in ("/v1/status", "/metrics"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(dest.url + path, token)
        assert e.value.code == 401
        assert e.value.read() == b"unauthorized\n"  # the same answer whatever was wrong
    assert _get(dest.url + "/healthz").status == 200


def test_metrics_text_and_openmetrics(dest_factory):
    dest = dest_factory("hgm")
    text = _get(dest.url + "/metrics", TOKEN)
    assert text.headers["Content-Type"].startswith("text/plain")
    assert b"migrator_fault_latency_seconds" in text.read()
    om = _get(dest.url + "/metrics", TOKEN, accept="application/openmetrics-text")
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.read().rstrip().endswith(b"# EOF")
