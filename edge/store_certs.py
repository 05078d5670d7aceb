"""Certificates for one store's broker: a CA and a server certificate signed by it.

Why our own CA: a store device sits on a private network with a name and addresses no
public CA will certify. Apps, tills, tablets and the edge trust the store CA (``ca.crt``,
no secret) and check the broker's name against the server certificate's SANs (the
device's host names and addresses, 127.0.0.1 always, for the edge on the same device).
A chain may keep one CA for all its stores (``--ca-cert/--ca-key``) so an app ships one
trust anchor; without one, a CA is made per store.

ECDSA P-256 everywhere (every TLS stack, cheap on a Pi). The server certificate lives
825 days, the longest Apple platforms accept for a TLS server certificate; renew it by
running ``storeside-edge make-certs`` again with the same CA and ``kill -HUP`` the broker
(Mosquitto re-reads its certificates on reload).

The builders are pure (keys and PEM bytes in, PEM bytes out); ``write_store_certs`` is
the only part touching files, and writes keys 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825  # Apple's limit for TLS server certificates
__all__ = [
    "StoreCerts", "build_store_certs", "make_ca", "make_server_cert", "write_store_certs",
]


@dataclass(frozen=True)
class StoreCerts:
    """PEM bytes of one store's broker certificates."""

    ca_cert: bytes
    ca_key: bytes | None  # None when an existing CA was reused (its key stays where it is)
    server_cert: bytes
    server_key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Storeside"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_ca(common_name: str, now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A self-signed CA allowed to sign server certificates only: (cert PEM, key PEM)."""
    now = now or dt.datetime.now(dt.UTC)
    key = _key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures only (ECDHE does the key exchange); a CA also signs certificates/CRLs."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _san(hostnames: list[str], ips: list[str]) -> x509.SubjectAlternativeName:
    addresses = {ipaddress.ip_address("127.0.0.1")}
    addresses.update(ipaddress.ip_address(ip) for ip in ips)  # ValueError on a bad one
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in dict.fromkeys(hostnames)]
    names += [x509.IPAddress(a) for a in sorted(addresses, key=str)]
    return x509.SubjectAlternativeName(names)


def make_server_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    common_name: str,
    hostnames: list[str],
    ips: list[str],
    now: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A TLS server certificate for the broker, signed by the CA: (cert PEM, key PEM)."""
    now = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    # a chain CA reused from elsewhere may be RSA; one made here is always P-256
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the CA key must be an EC or RSA private key")
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(_san(hostnames, ips), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def build_store_certs(
    store: str,
    *,
    hostnames: list[str],
    ips: list[str],
    ca: tuple[bytes, bytes] | None = None,
) -> StoreCerts:
    """All certificates of one store; ``ca`` = (cert PEM, key PEM) of a chain CA to reuse."""
    reused = ca is not None
    ca_cert, ca_key = ca if ca is not None else make_ca(f"Storeside store CA {store}")
    cert, key = make_server_cert(
        ca_cert, ca_key, common_name=f"storeside-broker-{store}", hostnames=hostnames, ips=ips
    )
    return StoreCerts(ca_cert, None if reused else ca_key, cert, key)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with ``mode``: a key is never world-readable,
    not even for the moment between create and chmod."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_store_certs(certs: StoreCerts, out_dir: Path) -> list[Path]:
    """``ca.crt``, ``server.crt`` (0644), ``server.key`` and ``ca.key`` (0600) in
    ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [
        (out_dir / "ca.crt", certs.ca_cert, 0o644),
        (out_dir / "server.crt", certs.server_cert, 0o644),
        (out_dir / "server.key", certs.server_key, 0o600),
    ]
    if certs.ca_key is not None:
        files.append((out_dir / "ca.key", certs.ca_key, 0o600))
    for path, data, mode in files:
        _write(path, data, mode)
    return [path for path, _, _ in files]
