"""The master's side of `tricorn ctl`: one JSON line in, one JSON line out, on a unix socket only
the server's user may use (endpoints.py checks the peer's uid; the socket is mode 0600).

    {"command": "status"}                          → {"ok": true, "status": {...}}
    {"command": "workers", "count": 3}             (also "add", "remove")
    {"command": "reload"}                          the same as SIGHUP
    {"command": "stacks", "worker": 2}             every thread's stack, from live workers
    {"command": "stop", "graceful": true}          SIGTERM (graceful) or SIGINT
"""

from __future__ import annotations

import json
import signal
from typing import Any, Protocol

from .endpoints import Answer


class Master(Protocol):
    target: int

    def status(self) -> dict[str, object]: ...
    def set_workers(self, count: int) -> None: ...
    def signal_self(self, signum: int) -> None: ...
    def stacks(self, number: int | None) -> dict[int, str]: ...


def complete(data: bytes) -> bool:
    return data.endswith(b"\n")


def answerer(master: Master) -> Answer:
    def answer(data: bytes) -> bytes:
        try:
            request = json.loads(data)
            if not isinstance(request, dict):
                raise ValueError("not an object")
            reply = _run(master, request)
        except (ValueError, TypeError, KeyError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        return json.dumps(reply).encode() + b"\n"

    return answer


def _run(master: Master, request: dict[str, Any]) -> dict[str, Any]:
    command = request.get("command")
    if command == "status":
        return {"ok": True, "status": master.status()}
    if command in ("workers", "add", "remove"):
        count = {"add": master.target + 1, "remove": master.target - 1}.get(command, request.get("count"))
        if not isinstance(count, int) or count < 1:
            return {"ok": False, "error": "the worker count must be a whole number of at least 1"}
        master.set_workers(count)
        return {"ok": True, "workers": master.target}
    if command == "reload":
        master.signal_self(signal.SIGHUP)
        return {"ok": True}
    if command == "stacks":
        number = request.get("worker")
        stacks = master.stacks(number if isinstance(number, int) else None)
        if number is not None and not stacks:
            return {"ok": False, "error": f"no worker {number}; `tricorn ctl status` lists them"}
        return {"ok": True, "stacks": {str(k): v for k, v in stacks.items()}}
    if command == "stop":
        master.signal_self(signal.SIGTERM if request.get("graceful") else signal.SIGINT)
        return {"ok": True}
    return {"ok": False, "error": f"unknown command {command!r}: status, workers, add, remove, reload, stacks, stop"}
