"""A throwaway PKI for tests: one CA, server certificates it signs, and files to break things.

    pki = make_pki(tmp_path)
    pki.ca, pki.cert, pki.key         CA certificate; server certificate and key, for
                                      127.0.0.1, ::1 and localhost, signed by the CA
    pki.other_key                     a key that belongs to no certificate here
    pki.self_signed, .self_signed_key a self-signed certificate for the same names
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMES = ("localhost",)
ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class PKI:
    dir: Path
    ca: Path
    cert: Path
    key: Path
    other_key: Path
    self_signed: Path
    self_signed_key: Path


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("migrator test CA", ca_key.public_key(), ca_key, issuer=None, is_ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("migrator test server", key.public_key(), ca_key, issuer=ca, is_ca=False)
    lone_key = ec.generate_private_key(ec.SECP256R1())
    self_signed = _certificate("migrator self-signed", lone_key.public_key(), lone_key,
                               issuer=None, is_ca=False)

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    return PKI(
        dir=directory,
        ca=write("ca.pem", _pem(ca)),
        cert=write("server.pem", _pem(cert)),
        key=write("server.key", _key_pem(key)),
        other_key=write("other.key", _key_pem(ec.generate_private_key(ec.SECP256R1()))),
        self_signed=write("self-signed.pem", _pem(self_signed)),
        self_signed_key=write("self-signed.key", _key_pem(lone_key)),
    )


def _certificate(common_name: str, public_key, signing_key, issuer: x509.Certificate | None,
                 is_ca: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.subject if issuer else name)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                                        critical=False)
    else:
        sans = [x509.DNSName(n) for n in NAMES]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ADDRESSES]
        builder = (builder
                   .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
