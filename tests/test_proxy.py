"""--proxy-headers: client address and scheme from a trusted proxy's X-Forwarded-For/-Proto."""

from __future__ import annotations

import httpx
import pytest

from tricorn.server.proxy import TrustedProxies

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def test_trusted_loopback_proxy_sets_client_and_scheme(serve) -> None:
    asgi = serve("asgi_apps:app")
    scope = httpx.get(asgi.url + "/echo", headers=FORWARDED).json()
    assert scope["client"] == ["203.0.113.7", 0] and scope["scheme"] == "https"
    wsgi = serve("wsgi_apps:app")
    environ = httpx.get(wsgi.url + "/echo", headers=FORWARDED).json()
    assert environ["remote_addr"] == "203.0.113.7" and environ["scheme"] == "https"


def test_proxy_headers_off_or_untrusted_peer_are_ignored(serve) -> None:
    for args in (("--no-proxy-headers",), ("--forwarded-allow-ips", "10.0.0.0/8,192.168.1.1")):
        server = serve("asgi_apps:app", *args)
        scope = httpx.get(server.url + "/echo", headers=FORWARDED).json()
        assert scope["client"][0] == "127.0.0.1" and scope["scheme"] == "http"


@pytest.mark.parametrize(("header", "client"), [
    ("198.51.100.1, 127.0.0.1", "198.51.100.1"),    # trusted hops are skipped from the right
    ("6.6.6.6, 198.51.100.2", "198.51.100.2"),      # a client's own prefix is not believed
    ("127.0.0.1", "127.0.0.1"),                     # only trusted hops: the farthest one
    ("2001:db8::1", "2001:db8::1"),
])
def test_forwarded_for_is_read_from_the_right(header: str, client: str) -> None:
    proxies = TrustedProxies(["127.0.0.1", "::1"])
    resolved, scheme = proxies.resolve([(b"x-forwarded-for", header.encode())], ("127.0.0.1", 5), "http")
    assert resolved == (client, 0) and scheme == "http"


def test_trusted_networks_names_and_everyone() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "fd00::/8", "proxy.sock"])
    assert "10.1.2.3" in proxies and "fd00::5" in proxies and "proxy.sock" in proxies
    assert "11.0.0.1" not in proxies and "not-an-ip" not in proxies
    assert "8.8.8.8" in TrustedProxies(["*"])
    assert TrustedProxies([]).resolve([(b"x-forwarded-proto", b"wss")], None, "http")[1] == "https"


def test_a_remembered_verdict_stays_right_and_the_memory_bounded() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    hops = [f"10.0.{n // 256}.{n % 256}" for n in range(3000)] + [f"11.0.{n // 256}.{n % 256}" for n in range(3000)]
    for _ in range(2):  # asked again, each address gets its remembered verdict
        assert [hop in proxies for hop in hops] == [True] * 3000 + [False] * 3000
    assert len(proxies._verdicts) <= 4096  # client-chosen X-Forwarded-For hops cannot grow it without end
