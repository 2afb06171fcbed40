"""gRPC over TLS: real tritonservers started with TlsOptions (as ``larr serve --tls-*`` starts them), the toy
``larr`` ensemble, and certificates made here: a test CA, a server certificate for 127.0.0.1/localhost, a client
certificate, and a second CA that issued nothing the server shows."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from larr.clients import AsyncLarrClient, LarrClient, ServerUnavailableError, cli
from larr.serving.server.options import TlsOptions
from larr.serving.server.process import RunningServer

pytestmark = pytest.mark.integration

SCENE = {"weather": "heavy rain", "time_slot": "late night"}
USER, ITEMS = 5, [3, 1, 2]


# ------------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that issued the server and client certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that issued nothing here


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(path: Path, pem: bytes) -> Path:
    path.write_bytes(pem)
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return _write(path, pem)


def _make_ca(root: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(name, _name(name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _write(root / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)), cert, key


def _issue(
    root: Path, name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, usages: list[x509.ObjectIdentifier]
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        _builder(name, ca.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _write(root / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)), _write_key(root / f"{name}.key", key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_path, ca, ca_key = _make_ca(root, "larr-test-ca")
    # clientAuth too: under mutual TLS the launcher's readiness poll presents the server's own certificate.
    server_cert, server_key = _issue(
        root, "server", ca, ca_key, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    client_cert, client_key = _issue(root, "client", ca, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH])
    other_ca, _, _ = _make_ca(root, "other-ca")
    return Pki(ca_path, server_cert, server_key, client_cert, client_key, other_ca)


# ------------------------------------------------------------------------------------------------
# Servers


@pytest.fixture(scope="module")
def tls_server(
    triton_server_factory: Callable[..., RunningServer], tmp_path_factory: pytest.TempPathFactory, toy: Any, pki: Pki
) -> RunningServer:
    repo = toy.write(tmp_path_factory.mktemp("tls_repository"))
    return triton_server_factory(repo, tls=TlsOptions(cert=pki.server_cert, key=pki.server_key))


@pytest.fixture(scope="module")
def mutual_tls_server(
    triton_server_factory: Callable[..., RunningServer], tmp_path_factory: pytest.TempPathFactory, toy: Any, pki: Pki
) -> RunningServer:
    repo = toy.write(tmp_path_factory.mktemp("mutual_tls_repository"))
    return triton_server_factory(repo, tls=TlsOptions(cert=pki.server_cert, key=pki.server_key, ca=pki.ca))


def _expected(toy: Any) -> list[float]:
    return toy.ctr([SCENE[feature] for feature in toy.scene_features], USER, ITEMS)


# ------------------------------------------------------------------------------------------------
# Server-side TLS


def test_tls_client_scores_like_the_toy_model(tls_server: RunningServer, toy: Any, pki: Pki) -> None:
    with LarrClient(tls_server.grpc_url, ssl=True, root_certificates=pki.ca) as client:
        first = client.score(SCENE, USER, ITEMS)
        second = client.score(SCENE, USER, ITEMS)
    assert first.dtype == np.float32 and first.shape == (len(ITEMS),)
    np.testing.assert_allclose(first, _expected(toy), rtol=1e-6)
    np.testing.assert_array_equal(first, second)


def test_async_tls_client_scores_like_the_toy_model(tls_server: RunningServer, toy: Any, pki: Pki) -> None:
    async def score() -> np.ndarray:
        async with AsyncLarrClient(tls_server.grpc_url, ssl=True, root_certificates=pki.ca) as client:
            return await client.score(SCENE, USER, ITEMS)

    np.testing.assert_allclose(asyncio.run(score()), _expected(toy), rtol=1e-6)


def test_larr_query_over_tls(
    tls_server: RunningServer, toy: Any, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    cli.configure_query_parser(parser)
    scene_args = [arg for feature, text in SCENE.items() for arg in ("--scene", f"{feature}={text}")]
    argv = ["--url", tls_server.grpc_url, "--user-id", str(USER), "--items", "3,1,2", *scene_args, "--json"]
    assert cli.run_query(parser.parse_args([*argv, "--tls-ca", str(pki.ca)])) == 0
    answer = json.loads(capsys.readouterr().out)
    by_item = {row["item_id"]: row["ctr"] for row in answer["items"]}
    np.testing.assert_allclose([by_item[item] for item in ITEMS], _expected(toy), rtol=1e-6)


def test_plaintext_client_fails_with_a_hint_about_tls(tls_server: RunningServer) -> None:
    with LarrClient(tls_server.grpc_url, timeout_s=10) as client:
        with pytest.raises(ServerUnavailableError, match=r"without TLS.*ssl=True"):
            client.score(SCENE, USER, ITEMS)


def test_client_trusting_another_ca_fails_the_handshake(tls_server: RunningServer, pki: Pki) -> None:
    with LarrClient(tls_server.grpc_url, timeout_s=10, ssl=True, root_certificates=pki.other_ca) as client:
        with pytest.raises(ServerUnavailableError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            client.score(SCENE, USER, ITEMS)
    assert "without TLS" not in str(caught.value)


# ------------------------------------------------------------------------------------------------
# Mutual TLS (--tls-ca): client certificates required


def test_mutual_tls_client_with_a_certificate_scores(mutual_tls_server: RunningServer, toy: Any, pki: Pki) -> None:
    with LarrClient(
        mutual_tls_server.grpc_url,
        ssl=True,
        root_certificates=pki.ca,
        private_key=pki.client_key,
        certificate_chain=pki.client_cert,
    ) as client:
        np.testing.assert_allclose(client.score(SCENE, USER, ITEMS), _expected(toy), rtol=1e-6)


def test_mutual_tls_client_without_a_certificate_is_refused(mutual_tls_server: RunningServer, pki: Pki) -> None:
    with LarrClient(mutual_tls_server.grpc_url, timeout_s=10, ssl=True, root_certificates=pki.ca) as client:
        with pytest.raises(ServerUnavailableError):
            client.score(SCENE, USER, ITEMS)
