"""A throwaway PKI made with the ``openssl`` CLI, for nats-server with TLS: a CA, server and client certificates."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by it; an
    unrelated CA, and a server certificate it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_server_cert: Path
    other_server_key: Path

    def client_context(self, *, with_client_cert: bool = False) -> ssl.SSLContext:
        """A client context trusting :attr:`ca`, presenting the client certificate if asked."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"openssl {' '.join(map(str, args))} failed:\n{result.stderr}"


def _make_ca(directory: Path, name: str, common_name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _make_leaf(
    directory: Path, name: str, ca: tuple[Path, Path], common_name: str, extensions: str
) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"{name}.{suffix}" for suffix in ("pem", "key", "csr", "ext"))
    ext.write_text(
        f"{extensions}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> Pki:
    """Write a :class:`Pki` into ``directory``; fails the test when the ``openssl`` CLI is missing."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is missing")
    ca = _make_ca(directory, "ca", "Eagle Eye test CA")
    other_ca = _make_ca(directory, "other-ca", "Unrelated CA")
    server_extensions = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    server = _make_leaf(directory, "server", ca, "localhost", server_extensions)
    other_server = _make_leaf(directory, "other-server", other_ca, "localhost", server_extensions)
    client = _make_leaf(directory, "client", ca, "eagle-eye-publisher", "extendedKeyUsage=clientAuth")
    return Pki(ca[0], server[0], server[1], client[0], client[1], other_ca[0], other_server[0], other_server[1])


def tls_args(cert: Path, key: Path) -> list[str]:
    """nats-server arguments: TLS required, no client certificate asked."""
    return ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
