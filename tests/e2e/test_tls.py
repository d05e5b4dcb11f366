"""wss:// through daphne's own TLS endpoint, with a self-signed certificate made in the test."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl

import pytest
import websockets
from channels.db import database_sync_to_async
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.asyncio


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


async def test_wss_through_daphnes_tls_endpoint(daphne_server, tmp_path):
    key_path, cert_path = self_signed(tmp_path)
    endpoint = f"ssl:port={{port}}:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
    server = await database_sync_to_async(daphne_server)(endpoint=endpoint)
    trusted = ssl.create_default_context(cafile=str(cert_path))
    url = f"wss://localhost:{server.port}/ws"
    origin = f"https://localhost:{server.port}"  # the page's own origin: same scheme and port
    async with websockets.connect(url, ssl=trusted, origin=origin) as client:  # type: ignore[arg-type]
        await client.send(json.dumps({"type": "HEARTBEAT", "requestId": "tls"}))
        reply = json.loads(await client.recv())
    assert reply["type"] == "HEARTBEAT"
    assert reply["requestId"] == "tls"
    # A client that does not trust the certificate cannot connect.
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(url, ssl=ssl.create_default_context())
