"""TLS for the daemons: ssl.SSLContexts from --tls-cert, --tls-key and --tls-ca files.

    server_context(cert, key)   what a daemon serves HTTPS with (TLS 1.2 or later)
    client_context(ca)          what the destination checks the source's certificate with:
                                 the CA file (or the source's own certificate) if given, else
                                 the system's trusted CAs; host names are always checked

TLS 1.3 is negotiated whenever both ends have it (they do here: OpenSSL 3); 1.2 is the floor.
Every problem with the files is a TLSFileError saying which flag, which file and what to do,
raised before a daemon listens: a mismatched key must not surface as a failed handshake later.
"""

from __future__ import annotations

import os
import ssl

from .errors import MigratorError

__all__ = ["MIN_VERSION", "TLSFileError", "client_context", "server_context",
           "server_context_from_args"]

MIN_VERSION = ssl.TLSVersion.TLSv1_2

_CERT_MARK = b"-----BEGIN CERTIFICATE-----"
_KEY_MARK = b"PRIVATE KEY-----"
_ENCRYPTED_MARKS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


class TLSFileError(MigratorError, ValueError):
    """A certificate, key or CA file that cannot be used; the message says how to fix it."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """Serve with the certificate chain in `cert` (PEM) and its private key in `key` (PEM)."""
    _read_pem("--tls-cert", cert, _CERT_MARK, "a PEM certificate (-----BEGIN CERTIFICATE-----)")
    key_pem = _read_pem("--tls-key", key, _KEY_MARK,
                        "a PEM private key (-----BEGIN PRIVATE KEY-----)")
    if any(mark in key_pem for mark in _ENCRYPTED_MARKS):
        raise TLSFileError(f"--tls-key {key} is encrypted, and a daemon cannot ask for its "
                           f"passphrase: decrypt it (openssl pkey -in {key} -out KEY) and "
                           f"keep the result readable only by the daemon's user")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSION
    try:
        # The password callback only runs for an encrypted key that slipped past the check
        # above; without it OpenSSL would prompt on the terminal and hang a daemon.
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise TLSFileError(f"--tls-key {key} is not the private key of the certificate in "
                               f"--tls-cert {cert} (key values mismatch): pass the key the "
                               f"certificate was issued for") from None
        raise TLSFileError(f"cannot use --tls-cert {cert} with --tls-key {key}: "
                           f"{_ssl_reason(e)}") from None
    except OSError as e:  # vanished between the check and the load
        raise TLSFileError(f"cannot read --tls-cert {cert} or --tls-key {key}: "
                           f"{e.strerror or e}") from None
    return context


def client_context(ca: str | None = None) -> ssl.SSLContext:
    """Check a server's certificate against `ca` (PEM, one or more), else the system's CAs."""
    if ca is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        _read_pem("--tls-ca", ca, _CERT_MARK,
                  "PEM certificates (-----BEGIN CERTIFICATE-----): the CA that signed the "
                  "source's certificate, or that certificate itself")
        # Only this CA: a certificate from some public CA must not pass for the source.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as e:
            raise TLSFileError(f"cannot use --tls-ca {ca}: {_ssl_reason(e)}") from None
    context.minimum_version = MIN_VERSION
    return context


def server_context_from_args(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server context for --tls-cert/--tls-key (both or neither); None for plain HTTP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise TLSFileError(f"{given} needs {missing}: pass both to serve HTTPS, or neither")
    return server_context(cert, key)


def _read_pem(flag: str, path: str, mark: bytes, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        why = e.strerror or str(e)
        if isinstance(e, PermissionError) and os.geteuid() != 0:
            why += " (the daemon's user must be able to read it)"
        raise TLSFileError(f"cannot read {flag} {path}: {why}") from None
    if mark not in data:
        raise TLSFileError(f"{flag} {path} does not hold {what}")
    return data


def _no_passphrase() -> bytes:
    raise TLSFileError("the private key is encrypted, and a daemon cannot ask for its "
                       "passphrase: decrypt it with openssl pkey")


def _ssl_reason(e: ssl.SSLError) -> str:
    """'KEY_VALUES_MISMATCH' -> 'key values mismatch'; the library's text when no reason."""
    if e.reason:
        return e.reason.lower().replace("_", " ")
    return str(e)
