"""The kinds of error a request ends in, as `errors` counts them."""

from __future__ import annotations

import asyncio
import ssl


def connect_error(exc: BaseException) -> str:
    """What ended a connection attempt."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls-verify"  # the server's certificate is not trusted: --cacert, or --insecure
    if isinstance(exc, ssl.SSLError):
        return "tls"  # the handshake failed otherwise
    kinds: dict[type[BaseException], str] = {ConnectionRefusedError: "refused", ConnectionResetError: "reset",
                                             asyncio.TimeoutError: "timeout"}
    return kinds.get(type(exc), "connect")
