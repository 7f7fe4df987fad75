"""--proxy-headers: the client address and scheme a trusted proxy reports (X-Forwarded-For/-Proto).

Only a peer listed in --forwarded-allow-ips is believed. X-Forwarded-For is read from the right:
the nearest hop that is not itself a trusted proxy is the client, so a client cannot pass itself
off as anyone by adding its own X-Forwarded-For in front of a proxy that appends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

_SCHEMES = {b"http": "http", b"https": "https", b"ws": "http", b"wss": "https"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_VERDICTS_KEPT = 4096  # peer addresses whose verdict is remembered; past it the memory starts over


class TrustedProxies:
    def __init__(self, spec: Iterable[str]) -> None:
        self.everyone = False
        self.networks: list[Network] = []
        self.names: set[str] = set()
        self._verdicts: dict[str, bool] = {}  # parsing an address costs more than the request's own parsing
        for item in spec:
            if item == "*":
                self.everyone = True
            else:
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    self.names.add(item)  # a unix socket path or a literal the peer reports

    def __contains__(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._trusted(host)
            if len(self._verdicts) >= _VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict

    def _trusted(self, host: str) -> bool:
        if self.everyone or host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def resolve(
        self, headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None, scheme: str,
    ) -> tuple[tuple[str, int] | None, str]:
        """The client and scheme after believing the proxy headers of a trusted peer."""
        for name, value in headers:
            if name == b"x-forwarded-proto":
                scheme = _SCHEMES.get(value.split(b",")[-1].strip().lower(), scheme)
            elif name == b"x-forwarded-for":
                hops = [hop.strip() for hop in value.decode("latin-1").split(",") if hop.strip()]
                for hop in reversed(hops):
                    if hop not in self or hop == hops[0]:
                        client = (hop, 0)
                        break
        return client, scheme
