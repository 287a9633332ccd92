"""A migration over TLS on both daemons, and what happens to clients that do not fit."""

from __future__ import annotations

import socket
import ssl
import time
import warnings
from urllib.parse import urlsplit

import pytest

from e2e.conftest import TOKEN, run_guest
from helpers.daemons import start_source as start_plain_source, stop_daemon
from migrator.client import PageStream, SourceTLSError, fetch_manifest

from .conftest import MEMORY_BYTES, run_cli, start_source, tls_args, token_file
from helpers.pages import fetch_into

PAGES = MEMORY_BYTES // 4096


def test_a_migration_over_tls_on_both_daemons_completes_and_verifies(tls_source, tls_dest):
    report = run_guest(tls_dest, "--vcpus", "2", "--pattern", "zipf", "--accesses", "2000",
                       "--write-ratio", "0.3")
    m = report["migration"]
    assert m["phase"] == "complete", m.get("error")
    assert m["verified_pages"] == m["pages_total"] == PAGES
    assert m["mismatched_pages"] == 0 and report["verify"]["mismatched_pages"] == 0
    assert report["verify"]["writes_lost"] == 0
    # Both streams carried pages over TLS: the urgent one (faults) and the background one.
    assert m["faults"] > 0 and m["bytes_urgent"] > 0 and m["bytes_background"] > 0
    assert tls_dest.migration(m["session"])["phase"] == "complete"  # status over HTTPS
    assert "destination on https://127.0.0.1:" in tls_dest.log()
    assert "source listening on https://127.0.0.1:" in tls_source.log


def _handshake(url: str, context: ssl.SSLContext) -> str:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            return tls.version()


@pytest.mark.parametrize("daemon", ["source", "dest"])
def test_tls_1_3_is_negotiated_and_1_2_is_the_floor(request, daemon, trusting, pki):
    url = request.getfixturevalue(f"tls_{daemon}").url
    assert _handshake(url, trusting) == "TLSv1.3"
    at_most_12 = ssl.create_default_context(cafile=str(pki.ca))
    at_most_12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(url, at_most_12) == "TLSv1.2"
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(pki.ca))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would speak TLS 1.1; the daemon not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 and TLSv1_1 themselves
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as e:
        _handshake(url, old)
    # The client did offer TLS 1.1; it was the daemon that hung up.
    assert e.value.reason not in ("NO_CIPHERS_AVAILABLE", "NO_PROTOCOLS_AVAILABLE")


@pytest.mark.parametrize("daemon", ["source", "dest"])
def test_plain_http_gets_no_answer_from_a_tls_port(request, daemon, trusting):
    d = request.getfixturevalue(f"tls_{daemon}")
    parts = urlsplit(d.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert not answer.startswith(b"HTTP/"), answer[:200]
    assert b"ok" not in answer
    assert _handshake(d.url, trusting) == "TLSv1.3"  # and it goes on serving TLS


def test_the_blocking_clients_need_the_ca_too(tls_source, trusting):
    assert fetch_manifest(tls_source.url, TOKEN, ssl_context=trusting).pages == PAGES
    with PageStream(tls_source.url, "urgent", TOKEN, "tls-probe", ssl_context=trusting) as s:
        view = memoryview(bytearray(4096))
        fetch_into(s, 0, 4096, view)
    for attempt in (lambda: fetch_manifest(tls_source.url, TOKEN),
                    lambda: PageStream(tls_source.url, "urgent", TOKEN, "untrusted")):
        with pytest.raises(SourceTLSError, match="not trusted.*--tls-ca"):
            attempt()


@pytest.mark.parametrize("ca", [None, "self_signed"], ids=["system-CAs", "another-CA"])
def test_dest_refuses_a_source_certificate_it_does_not_trust(tls_source, pki, tmp_path, ca):
    args = ["--tls-ca", str(getattr(pki, ca))] if ca else []
    started = time.monotonic()
    r = run_cli("dest", "--listen", "127.0.0.1:0", "--source", tls_source.url, "--mode", "hgm",
                "--hugepage-size", "2M", "--guest-socket", str(tmp_path / "guest.sock"),
                "--token-file", token_file(tmp_path), *args)
    assert r.returncode != 0
    assert "certificate is not trusted" in r.stderr, r.stderr
    assert "unable to get local issuer certificate" in r.stderr  # OpenSSL's reason, verbatim
    assert "--tls-ca" in r.stderr and tls_source.url in r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - started < 30  # refused at once, not retried until a deadline


def test_dest_refuses_a_trusted_certificate_for_another_address(pki, tmp_path):
    # The certificate names 127.0.0.1, ::1 and localhost; this source answers on 127.0.0.2.
    source = start_source("--listen", "127.0.0.2:0", "--memory", "2MiB", *tls_args(pki),
                          context=ssl._create_unverified_context())
    try:
        r = run_cli("dest", "--listen", "127.0.0.1:0", "--source", source.url, "--mode", "hgm",
                    "--hugepage-size", "2M", "--guest-socket", str(tmp_path / "guest.sock"),
                    "--tls-ca", str(pki.ca))
    finally:
        stop_daemon(source.proc)
    assert r.returncode != 0
    assert ("certificate is not trusted (IP address mismatch, certificate is not valid for "
            "'127.0.0.2')") in r.stderr, r.stderr


def test_dest_says_when_an_https_source_does_not_speak_tls(tmp_path):
    proc, url = start_plain_source("2MiB", seed=1, token=TOKEN)
    try:
        r = run_cli("dest", "--source", url.replace("http://", "https://"), "--mode", "hgm",
                    "--hugepage-size", "2M", "--guest-socket", str(tmp_path / "guest.sock"),
                    "--listen", "127.0.0.1:0", "--token-file", token_file(tmp_path))
    finally:
        stop_daemon(proc)
    assert r.returncode != 0
    assert "does not speak TLS" in r.stderr and "Traceback" not in r.stderr


def test_dest_refuses_tls_ca_for_a_plain_http_source(pki, tmp_path):
    r = run_cli("dest", "--source", "http://127.0.0.1:9", "--mode", "hgm", "--hugepage-size", "2M",
                "--guest-socket", str(tmp_path / "guest.sock"), "--tls-ca", str(pki.ca))
    assert r.returncode != 0
    assert "--tls-ca" in r.stderr and "https://" in r.stderr and "Traceback" not in r.stderr


def test_dest_serves_https_to_a_plain_http_source_too(pki, trusting):
    """TLS on each daemon is independent: the dest may serve HTTPS while reaching an HTTP
    source (on one host, say)."""
    from e2e.conftest import Dest
    proc, url = start_plain_source("2MiB", seed=1, token=TOKEN)
    dest = None
    try:
        dest = Dest(url, "hgm", 2 << 20, *tls_args(pki), context=trusting)
        assert dest.status()["source"] == url
    finally:
        if dest:
            dest.stop()
        stop_daemon(proc)
