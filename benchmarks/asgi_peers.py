#!/usr/bin/env python3
"""ASGI servers side by side: tricorn, uvicorn (httptools + uvloop) and granian --interface asgi, interleaved.

Each case runs every server in turn, the order rotated each round; one worker pinned to CPU 0 and wrk
to CPU 1, except `hello-2w` (two workers, nothing pinned). Reports the median of the rounds for req/s,
CPU time per request (the server's processes, from /proc) and wrk's p99, and tricorn's ratio to
uvicorn and to granian. Access logs are off everywhere; every server runs uvloop. `floor` in
--servers adds benchmarks/floor.py: the least a Python server can do per request.

  hello           benchmarks.apps:asgi_hello, wrk -c64
  fastapi-def     FastAPI JSON route, `def` (run on anyio's thread pool), -c64
  fastapi-async   FastAPI JSON route, `async def`, -c64
  starlette       Starlette plain-text route, -c64
  close           hello with `Connection: close` on every request (a new connection each), -c64
  https           hello over TLS, one self-signed certificate (trustme) for every server, -c64
  hello-2w        hello with two workers, unpinned
  ws-32           WebSocket echo (benchmarks.apps:ws_echo), 64 connections of `tricorn bench ws://` each
                  sending a 32-byte message and awaiting its echo: round trips/s (printed as req/s)
  ws-16k          the same with 16 KiB messages

Run by hand (never in CI):  python benchmarks/asgi_peers.py [CASE ...] --rounds 3 --duration 8
                            python benchmarks/asgi_peers.py hello --servers tricorn,before --baseline DIR
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from wsgi_peers import BIN, PY, ROOT, Argv, arguments, case

APPS = {"hello": "benchmarks.apps:asgi_hello", "fastapi-def": "benchmarks.frameworks:fastapi_json",
        "fastapi-async": "benchmarks.frameworks:fastapi_async", "starlette": "benchmarks.frameworks:starlette_plain",
        "close": "benchmarks.apps:asgi_hello", "https": "benchmarks.apps:asgi_hello",
        "hello-2w": "benchmarks.apps:asgi_hello", "ws-32": "benchmarks.apps:ws_echo",
        "ws-16k": "benchmarks.apps:ws_echo"}
MESSAGE_SIZES = {"ws-32": 32, "ws-16k": 16384}


def commands(cert: tuple[str, str] | None = None, websocket: bool = False) -> Argv:
    """How each server is started; with `cert` (certificate, key) over TLS; granian's WebSocket
    support only for the WebSocket cases (--no-ws otherwise, its fastest HTTP)."""

    def argv(server: str, app: str, port: int, threads: int, workers: int) -> list[str]:
        if server == "floor":  # plain HTTP, one process (benchmarks/floor.py)
            return [PY, str(ROOT / "benchmarks" / "floor.py"), "asgi", app, str(port)]
        if server in ("tricorn", "before"):
            tls = ["--certfile", cert[0], "--keyfile", cert[1]] if cert else []
            return [PY, "-m", "tricorn", app, "-w", str(workers), "--port", str(port), "--no-access-log", *tls]
        if server == "granian":
            tls = ["--ssl-certificate", cert[0], "--ssl-keyfile", cert[1]] if cert else []
            return [str(BIN / "granian"), "--interface", "asgi", "--workers", str(workers), "--loop", "uvloop",
                    "--port", str(port), *([] if websocket else ["--no-ws"]), "--log-level", "warning", *tls, app]
        tls = ["--ssl-certfile", cert[0], "--ssl-keyfile", cert[1]] if cert else []
        # websockets-sansio: the protocol library tricorn uses too
        return [PY, "-m", "uvicorn", "--http", "httptools", "--loop", "uvloop", "--ws", "websockets-sansio",
                "--no-access-log",
                "--log-level", "warning", "--workers", str(workers), "--port", str(port), *tls, app]

    return argv


def pkcs8(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def main() -> None:
    args = arguments(__doc__, list(APPS), "tricorn,uvicorn,granian")
    servers = args.servers.split(",")
    against = ("uvicorn", "granian", "before", "floor")
    for name in args.cases:
        workers = 2 if name == "hello-2w" else 1
        if name == "https":
            import trustme

            with tempfile.TemporaryDirectory() as tmp:
                issued = trustme.CA().issue_cert("127.0.0.1")
                issued.cert_chain_pems[0].write_to_path(f"{tmp}/cert.pem")
                Path(f"{tmp}/key.pem").write_bytes(pkcs8(issued.private_key_pem.bytes()))  # granian reads only PKCS#8
                case(name, APPS[name], servers, 64, 1, workers, args, commands((f"{tmp}/cert.pem", f"{tmp}/key.pem")),
                     scheme="https", against=against)
        else:
            wrk_args = ["-H", "Connection: close"] if name == "close" else []
            case(name, APPS[name], servers, 64, 1, workers, args, commands(websocket=name in MESSAGE_SIZES),
                 wrk_args=wrk_args, against=against,
                 message_size=MESSAGE_SIZES.get(name))


if __name__ == "__main__":
    main()
