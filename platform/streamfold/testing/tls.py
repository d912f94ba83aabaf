"""Certificates for TLS tests, made with ``cryptography`` and written as PEM files.

:func:`make_test_pki` writes, into one directory:

- ``ca.pem``: a CA that signs everything below (the trust anchor clients and brokers load);
- ``server.pem`` / ``server.key``: a server certificate for ``127.0.0.1`` and ``localhost``;
- ``client.pem`` / ``client.key``: a client certificate (``CN=streamfold-client``), for mTLS;
- ``misnamed.pem`` / ``misnamed.key``: a server certificate signed by the CA but for another
  host name (``wrong.invalid``), so host-name verification fails;
- ``untrusted-ca.pem``: a second CA that signed none of them, so verification fails.

Keys are unencrypted PKCS#8 EC P-256 keys; the certificates last one day. For tests only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestPki", "make_test_pki"]

_LIFETIME = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class TestPki:
    """Paths of the PEM files :func:`make_test_pki` wrote."""

    __test__ = False  # not a pytest test class

    directory: Path
    ca: Path
    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path
    misnamed_certificate: Path
    misnamed_key: Path
    untrusted_ca: Path


@dataclass(frozen=True, slots=True)
class _Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def make_test_pki(directory: Path) -> TestPki:
    """Write a CA, server, client, misnamed-server and untrusted-CA set into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _write_ca(directory / "ca.pem", "streamfold test CA")
    _write_ca(directory / "untrusted-ca.pem", "streamfold untrusted CA")
    local_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = ExtendedKeyUsageOID.SERVER_AUTH
    _write_leaf(directory, "server", ca, "localhost", local_names, server)
    _write_leaf(directory, "misnamed", ca, "wrong.invalid", [x509.DNSName("wrong.invalid")], server)
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    _write_leaf(directory, "client", ca, "streamfold-client", [], client)
    return TestPki(
        directory=directory,
        ca=directory / "ca.pem",
        server_certificate=directory / "server.pem",
        server_key=directory / "server.key",
        client_certificate=directory / "client.pem",
        client_key=directory / "client.key",
        misnamed_certificate=directory / "misnamed.pem",
        misnamed_key=directory / "misnamed.key",
        untrusted_ca=directory / "untrusted-ca.pem",
    )


def _write_ca(path: Path, common_name: str) -> _Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return _Issuer(name, key)


def _write_leaf(
    directory: Path,
    stem: str,
    issuer: _Issuer,
    common_name: str,
    alt_names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    certificate = builder.sign(issuer.key, hashes.SHA256())
    (directory / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
