"""Apps whose best configuration theory predicts, for `tricorn tune` (benchmarks/tune.md, tests):

  cpu_wsgi     2 ms of pure-Python work per request  → threads 1-2, workers ≈ CPUs
  io_wsgi      waits 50 ms (a database, an API)       → many threads per worker
  io_asgi      awaits 50 ms (IO_MS)                   → workers ≈ CPUs
  memory_wsgi  holds 300 MB per worker (MEMORY_MB)    → no more workers than the memory limit fits

`tricorn tune examples.tuning:io_wsgi`
"""

import asyncio
import os
import time

_WORK = int(os.environ.get("CPU_WORK", "24000"))  # loop rounds: about 2 ms on a 2020s core
_IO_S = int(os.environ.get("IO_MS", "50")) / 1000


def _burn() -> int:
    total = 0
    for i in range(_WORK):
        total += i * i % 7
    return total


def cpu_wsgi(environ, start_response):
    body = f"{_burn()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def io_wsgi(environ, start_response):
    time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


async def io_asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(_IO_S)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok\n"})


_held = b""


def memory_wsgi(environ, start_response):
    global _held
    if not _held:  # on the first request, in each worker: as a cache that fills would
        _held = b"x" * (int(os.environ.get("MEMORY_MB", "300")) << 20)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
