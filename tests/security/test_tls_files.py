"""Certificate, key and CA files: each way they can be wrong gets a message saying how to fix it."""

from __future__ import annotations

import ssl

import pytest
from cryptography.hazmat.primitives import serialization

from migrator.tls import (
    MIN_VERSION, TLSFileError, client_context, server_context, server_context_from_args,
)

from .conftest import run_cli


def test_a_matching_pair_serves_tls_1_2_and_up(pki):
    context = server_context(str(pki.cert), str(pki.key))
    assert context.minimum_version == MIN_VERSION == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED


def test_neither_file_means_plain_http(pki):
    assert server_context_from_args(None, None) is None


@pytest.mark.parametrize("given", ["cert", "key"])
def test_cert_and_key_go_together(pki, given):
    cert, key = (str(pki.cert), None) if given == "cert" else (None, str(pki.key))
    with pytest.raises(TLSFileError, match=f"--tls-{given} needs --tls-"):
        server_context_from_args(cert, key)


def test_a_key_of_another_certificate_is_named_as_such(pki):
    with pytest.raises(TLSFileError) as e:
        server_context(str(pki.cert), str(pki.other_key))
    message = str(e.value)
    assert f"--tls-key {pki.other_key} is not the private key of the certificate" in message
    assert str(pki.cert) in message and "key values mismatch" in message


def test_swapped_files_say_which_holds_what(pki):
    with pytest.raises(TLSFileError, match=r"--tls-cert .*server.key does not hold a PEM cert"):
        server_context(str(pki.key), str(pki.cert))


def test_a_missing_file_is_named_with_the_reason(pki, tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSFileError, match=rf"cannot read --tls-cert {missing}: No such file"):
        server_context(str(missing), str(pki.key))
    with pytest.raises(TLSFileError, match=rf"cannot read --tls-ca {missing}: No such file"):
        client_context(str(missing))


def test_an_encrypted_key_is_refused_instead_of_prompting(pki, tmp_path):
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(TLSFileError, match="is encrypted.*openssl pkey"):
        server_context(str(pki.cert), str(encrypted))


def test_a_ca_file_without_certificates_is_refused(pki):
    with pytest.raises(TLSFileError, match=r"--tls-ca .*other.key does not hold PEM cert"):
        client_context(str(pki.other_key))


def test_a_client_with_a_ca_trusts_that_ca_alone(pki):
    context = client_context(str(pki.ca))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "migrator test CA"),),)]


@pytest.mark.parametrize("daemon", ["source", "dest"])
def test_mismatched_cert_and_key_stop_either_daemon_at_start(pki, tmp_path, daemon):
    args = (["source", "--memory", "2MiB"] if daemon == "source" else
            ["dest", "--source", "http://127.0.0.1:9", "--mode", "hgm", "--hugepage-size", "2M",
             "--guest-socket", str(tmp_path / "guest.sock")])
    r = run_cli(*args, "--listen", "127.0.0.1:0", "--tls-cert", str(pki.cert),
                "--tls-key", str(pki.other_key))
    assert r.returncode != 0
    assert f"migrator {daemon}: --tls-key {pki.other_key} is not the private key" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("daemon", ["source", "dest"])
def test_a_cert_without_a_key_stops_either_daemon_at_start(pki, tmp_path, daemon):
    args = (["source", "--memory", "2MiB"] if daemon == "source" else
            ["dest", "--source", "http://127.0.0.1:9", "--mode", "hgm", "--hugepage-size", "2M",
             "--guest-socket", str(tmp_path / "guest.sock")])
    r = run_cli(*args, "--listen", "127.0.0.1:0", "--tls-cert", str(pki.cert))
    assert r.returncode != 0
    assert "--tls-cert needs --tls-key: pass both to serve HTTPS, or neither" in r.stderr
