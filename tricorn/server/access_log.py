"""The access log: one line per request, in gunicorn's format (its atoms) or as JSON."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from ..logs import open_log

if TYPE_CHECKING:
    from .h1 import Request, Response


class _Atoms(dict[str, Any]):
    """gunicorn's access log atoms, computed only when the format asks for them."""

    def __init__(self, request: Request, response: Response, duration: float) -> None:
        super().__init__()
        self.request = request
        self.response = response
        self.duration = duration

    def _header(self, headers: list[tuple[bytes, bytes]], name: str) -> str:
        key = name.lower().encode("latin-1")
        for header, value in headers:
            if header.lower() == key:
                return value.decode("latin-1")
        return "-"

    def __missing__(self, key: str) -> Any:
        request, response, duration = self.request, self.response, self.duration
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            headers = request.headers if key[-1] == "i" else response.headers
            return self._header(headers, key[1:-2])
        value: Any
        if key == "h":
            value = request.client[0] if request.client else "-"
        elif key == "l":
            value = "-"
        elif key == "u":
            value = _basic_user(self._header(request.headers, "authorization"))
        elif key == "t":
            value = time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
        elif key == "r":
            value = f"{request.method.decode()} {request.target.decode('latin-1')} HTTP/{request.http_version}"
        elif key == "m":
            value = request.method.decode()
        elif key == "U":
            value = request.path.decode("latin-1")
        elif key == "q":
            value = request.query.decode("latin-1")
        elif key == "H":
            value = f"HTTP/{request.http_version}"
        elif key == "s":
            value = response.status
        elif key == "B":
            value = response.bytes_sent
        elif key == "b":
            value = response.bytes_sent or "-"
        elif key == "f":
            value = self._header(request.headers, "referer")
        elif key == "a":
            value = self._header(request.headers, "user-agent")
        elif key == "T":
            value = int(duration)
        elif key == "M":
            value = int(duration * 1000)
        elif key == "D":
            value = int(duration * 1_000_000)
        elif key == "L":
            value = f"{duration:.6f}"
        elif key == "p":
            value = f"<{os.getpid()}>"
        else:
            value = "-"
        self[key] = value
        return value


def _basic_user(authorization: str) -> str:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "-"
    try:
        return base64.b64decode(credentials).decode("utf-8").partition(":")[0] or "-"
    except ValueError:
        return "-"


class AccessLog:
    def __init__(self, fmt: str, as_json: bool, destination: str) -> None:
        self.format = fmt
        self.as_json = as_json
        self.destination = destination
        self.stream: IO[str] = sys.stdout
        self.reopen()

    def reopen(self) -> None:
        old, self.stream = self.stream, open_log(self.destination, sys.stdout)
        if old is not sys.stdout and old is not self.stream:
            old.close()

    def log(self, request: Request, response: Response, duration: float) -> None:
        atoms = _Atoms(request, response, duration)
        if self.as_json:
            line = json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "remote_addr": atoms["h"],
                "method": atoms["m"],
                "path": atoms["U"],
                "query": atoms["q"],
                "protocol": atoms["H"],
                "status": atoms["s"],
                "bytes": atoms["B"],
                "referer": atoms["f"],
                "user_agent": atoms["a"],
                "duration_ms": round(duration * 1000, 3),
            })
        else:
            try:
                line = self.format % atoms
            except (ValueError, TypeError) as exc:
                line = f"(bad --access-logformat: {exc})"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
