"""HTTPS with a CA and certificates made at test time (trustme): real clients, real handshakes."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import warnings
from pathlib import Path

import httpx
import pytest
import trustme

from .conftest import exchange


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and some broken files."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("alice@example.com", common_name="alice")
    other_ca = trustme.CA()
    stranger = other_ca.issue_cert("mallory@example.com", common_name="mallory")
    paths = {name: root / f"{name}.pem" for name in (
        "ca", "cert", "key", "client", "stranger", "other_key", "encrypted_key", "junk")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(paths["stranger"]))
    other_ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(paths["other_key"]))
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), None)
    paths["encrypted_key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    paths["junk"].write_text("not a certificate\n")
    return paths


def tls_args(pki: dict[str, Path], *extra: str) -> tuple[str, ...]:
    return ("--certfile", str(pki["cert"]), "--keyfile", str(pki["key"]), *extra)


def https_url(server) -> str:
    return f"https://127.0.0.1:{server.port}/"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_https_with_httpx_and_curl(serve, pki, workers: str) -> None:
    server = serve("tls_apps:asgi", *tls_args(pki), "-w", workers)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki["ca"]))) as client:
        answer = client.get(https_url(server)).json()
    assert answer["scheme"] == "https"
    assert answer["tls"]["tls_version"] in (0x0303, 0x0304) and answer["tls"]["client_cert_chain"] == []
    if shutil.which("curl"):
        result = subprocess.run(["curl", "-sS", "--cacert", str(pki["ca"]), https_url(server)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and '"scheme": "https"' in result.stdout, result.stderr
    assert server.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])  # two: the WSGI workers' own accept (accept.py)
def test_wsgi_sees_https_in_its_environ(serve, pki, workers: str) -> None:
    server = serve("tls_apps:wsgi", *tls_args(pki), "-w", workers)
    answer = httpx.get(https_url(server), verify=ssl.create_default_context(cafile=str(pki["ca"]))).json()
    assert answer["wsgi.url_scheme"] == "https" and answer["HTTPS"] == "on"
    assert answer["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3") and answer["SSL_CIPHER"]
    assert answer["SSL_CLIENT_CERT"] is None


def client_context(pki: dict[str, Path], cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if cert:
        context.load_cert_chain(str(pki[cert]))
    return context


def test_client_certificates_accepted_and_refused(serve, pki) -> None:
    server = serve("tls_apps:asgi", *tls_args(pki, "--ca-certs", str(pki["ca"]), "--cert-reqs", "required"))
    answer = httpx.get(https_url(server), verify=client_context(pki, "client")).json()
    tls = answer["tls"]
    assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert "CN=alice" in tls["client_cert_name"]
    for refused in (None, "stranger"):  # no certificate; one from a CA the server does not trust
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(https_url(server), verify=client_context(pki, refused))
    wsgi = serve("tls_apps:wsgi", *tls_args(pki, "--ca-certs", str(pki["ca"]), "--cert-reqs", "optional"))
    answer = httpx.get(https_url(wsgi), verify=client_context(pki, "client")).json()
    assert "CN=alice" in answer["SSL_CLIENT_S_DN"] and answer["SSL_CLIENT_CERT"].startswith("-----BEGIN")
    assert httpx.get(https_url(wsgi), verify=client_context(pki, None)).json()["SSL_CLIENT_CERT"] is None
    assert "Traceback" not in server.stderr + wsgi.stderr


def test_alpn_minimum_version_and_plain_http_on_the_tls_port(serve, pki) -> None:
    server = serve("tls_apps:asgi", *tls_args(pki))
    context = client_context(pki, None)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", server.port)) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
    for version, accepted in ((ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_1, False)):
        pinned = client_context(pki, None)
        pinned.set_ciphers("DEFAULT:@SECLEVEL=0")  # lets this client offer TLS 1.1 at all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pinned.minimum_version = pinned.maximum_version = version
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            if accepted:
                with pinned.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    assert tls.version() == "TLSv1.2"
            else:  # the server closes on a TLS 1.1 hello
                with pytest.raises(ssl.SSLError):
                    pinned.wrap_socket(raw, server_hostname="127.0.0.1")
    responses, closed = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert responses == [] and closed  # plain HTTP on the TLS port: closed, unanswered
    assert httpx.get(https_url(server), verify=client_context(pki, None)).status_code == 200  # still serving
    assert "Traceback" not in server.stderr


def test_a_stalled_handshake_is_cut_at_the_header_timeout(serve, pki) -> None:
    server = serve("tls_apps:asgi", *tls_args(pki, "--timeout-header", "1s"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        silent.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        assert silent.recv(100) == b""  # closed by the server, within the timeout
    assert httpx.get(https_url(server), verify=client_context(pki, None)).status_code == 200


@pytest.mark.parametrize(("args", "message"), [
    (("--certfile", "/nonexistent/cert.pem", "--keyfile", "KEY"), "cannot read --certfile /nonexistent/cert.pem"),
    (("--certfile", "CERT", "--keyfile", "OTHER_KEY"), "does not belong to the certificate"),
    (("--certfile", "CERT", "--keyfile", "ENCRYPTED_KEY"), "is encrypted: give --keyfile-password"),
    (("--certfile", "CERT", "--keyfile", "ENCRYPTED_KEY", "--keyfile-password", "wrong"), "does not decrypt"),
    (("--certfile", "JUNK", "--keyfile", "KEY"), "must hold a PEM certificate and its private key"),
    (("--keyfile", "KEY"), "--keyfile needs --certfile"),
    (("--certfile", "CERT", "--keyfile", "KEY", "--cert-reqs", "required"), "needs --ca-certs"),
    (("--certfile", "CERT", "--keyfile", "KEY", "--ciphers", "NOPE-NOTHING"), "selects no cipher"),
])
def test_bad_tls_configuration_is_one_line_before_serving(serve, pki, args: tuple[str, ...], message: str) -> None:
    names = {"CERT": "cert", "KEY": "key", "OTHER_KEY": "other_key", "ENCRYPTED_KEY": "encrypted_key", "JUNK": "junk"}
    resolved = [str(pki[names[a]]) if a in names else a for a in args]
    server = serve("tls_apps:asgi", *resolved, "-w", "2")
    assert server.wait() == 2
    assert message in server.stderr and server.stderr.count("\n") == 1, server.stderr


def test_encrypted_key_with_its_password(serve, pki) -> None:
    server = serve("tls_apps:asgi", "--certfile", str(pki["cert"]), "--keyfile", str(pki["encrypted_key"]),
                   "--keyfile-password", "s3cret")
    assert httpx.get(https_url(server), verify=client_context(pki, None)).json()["scheme"] == "https"


def test_wss_with_the_websockets_client(serve, pki) -> None:
    import asyncio
    import json

    from websockets.asyncio.client import connect

    server = serve("ws_apps:echo", *tls_args(pki))

    async def talk() -> dict:
        async with connect(f"wss://127.0.0.1:{server.port}/ws", ssl=client_context(pki, None)) as ws:
            await ws.send("over tls")
            assert await ws.recv() == "over tls"
            await ws.send("scope")
            return json.loads(await ws.recv())

    assert asyncio.run(asyncio.wait_for(talk(), 30))["scheme"] == "wss"
