"""What to send: requests encoded once, ahead of time, with weights and sequences.

A scenario file (TOML) lists tasks; a task is one request or a sequence of steps sent in order on
one connection (an index page, then a detail page), chosen by weight like Locust's `@task(5)`:

    url = "http://127.0.0.1:8000"   # optional: the server, when the command line names none
    [defaults]                      # optional: merged into every request
    headers = { Accept = "application/json" }

    [[task]]
    weight = 5
    path = "/items?page={random_int(1,50)}"

    [[task]]
    weight = 1
    name = "buy"
    steps = [
        { path = "/items/{random_int(1,1000)}" },
        { method = "POST", path = "/cart", body = '{"item": {random_int(1,1000)}}',
          headers = { Content-Type = "application/json" } },
    ]

A request with `assets = true` is a page whose assets are fetched too (`cache = true`: revalidated
on the next visit); pages.py does it.

Placeholders: {random_int} (0 to 999999), {random_int(A,B)}, {uuid}, {seq} (a counter). Each
request with placeholders is rendered VARIANTS times up front and the variants are sent in turn, so
sending costs no formatting. `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import itertools
import random
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VARIANTS = 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(random_int(?:\((-?\d+),\s*(-?\d+)\))?|uuid|seq)\}")
_TASK_KEYS = {"name", "weight", "method", "path", "headers", "body", "steps", "assets", "cache"}
_STEP_KEYS = {"name", "method", "path", "headers", "body", "assets", "cache"}


@dataclass(frozen=True)
class Target:
    """Where to send: host, port, the Host header, and whether over TLS, from an http(s):// URL."""

    host: str
    port: int
    authority: str
    path: str
    secure: bool = False  # https://, wss://
    websocket: bool = False  # ws://, wss://: messages echoed, not requests (websocket.py)

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ConfigError(f"{url!r} is not an http(s):// or ws(s):// URL; give one like http://127.0.0.1:8000/")
        secure = parts.scheme in ("https", "wss")
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError:
            raise ConfigError(f"{url!r}: the port must be a number from 0 to 65535") from None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname, port, parts.netloc.rpartition("@")[2], path, secure, parts.scheme.startswith("ws"))

    @property
    def origin(self) -> str:
        scheme = ("wss" if self.secure else "ws") if self.websocket else ("https" if self.secure else "http")
        return f"{scheme}://{self.authority}"


def _render(text: str, rng: random.Random, counter: itertools.count[int]) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match[0]
        if token in ("{{", "}}"):
            return token[0]
        name = match[1]
        if name == "uuid":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if name == "seq":
            return str(next(counter))
        low, high = (int(match[2]), int(match[3])) if match[2] is not None else (0, 999_999)
        return str(rng.randint(low, high))

    return _PLACEHOLDER.sub(replace, text)


@dataclass
class Request:
    """One request shape, encoded: `next()` gives the bytes to send, variants in turn."""

    name: str
    method: str
    variants: list[bytes]
    position: int = 0
    assets: bool = False  # a page: fetch the assets its HTML names (pages.py)
    cache: bool = False  # and revalidate them on the next visit

    def next(self) -> bytes:
        variants = self.variants
        if len(variants) == 1:
            return variants[0]
        self.position = (self.position + 1) % len(variants)
        return variants[self.position]

    @property
    def is_head(self) -> bool:
        return self.method == "HEAD"


def encode(
    target: Target, method: str, path: str, headers: dict[str, str], body: bytes | str, keepalive: bool,
    name: str = "", seed: int = 0,
) -> Request:
    method = method.upper()
    if method not in METHODS:
        raise ConfigError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if not path.startswith("/"):
        raise ConfigError(f"path {path!r} must start with /")
    for text in (path, *headers, *headers.values()):
        if any(c in text for c in "\r\n\0"):
            raise ConfigError(f"request {name or path!r}: a path or header contains a line break or NUL")
    names = {key.lower() for key in headers}
    lines = [f"{method} {path} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {target.authority}")
    if "user-agent" not in names:
        lines.append("User-Agent: tricorn-bench")
    lines.extend(f"{key}: {value}" for key, value in headers.items())
    if not keepalive and "connection" not in names:
        lines.append("Connection: close")
    body_text = body.decode("latin-1") if isinstance(body, bytes) else body
    if body_text or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: {length}")
    template = "\r\n".join(lines) + "\r\n\r\n"
    dynamic = bool(_PLACEHOLDER.search(template) or _PLACEHOLDER.search(body_text))
    rng, counter = random.Random(seed), itertools.count()
    variants = []
    for _ in range(VARIANTS if dynamic else 1):
        rendered_body = _render(body_text, rng, counter).encode("latin-1") if dynamic else body_text.encode("latin-1")
        head = _render(template, rng, counter) if dynamic else template
        head = head.replace("{length}", str(len(rendered_body)))
        variants.append(head.encode("latin-1") + rendered_body)
    return Request(name or f"{method} {path}", method, variants)


@dataclass
class Task:
    name: str
    weight: int
    steps: list[Request] = field(default_factory=list)


@dataclass
class Scenario:
    tasks: list[Task]
    schedule: list[int] = field(default_factory=list)  # task indexes in weighted, shuffled order
    position: int = 0

    def __post_init__(self) -> None:
        order = [i for i, task in enumerate(self.tasks) for _ in range(task.weight)]
        random.Random(1).shuffle(order)
        self.schedule = order

    def next_task(self) -> Task:
        """Tasks in proportion to their weights: exact over every sum(weights) picks."""
        self.position = (self.position + 1) % len(self.schedule)
        return self.tasks[self.schedule[self.position]]

    @property
    def requests(self) -> list[Request]:
        return [step for task in self.tasks for step in task.steps]

    @property
    def has_pages(self) -> bool:
        return any(request.assets for request in self.requests)


def single(target: Target, method: str, headers: dict[str, str], body: bytes, keepalive: bool) -> Scenario:
    """The scenario of a plain command line: one request to the URL."""
    return Scenario([Task("default", 1, [encode(target, method, target.path, headers, body, keepalive)])])


def load(path: str, url: str | None, headers: dict[str, str], keepalive: bool) -> tuple[Target, Scenario]:
    """A scenario file and the server it targets (the URL argument, else the file's `url`); -H
    headers apply to every request, under the file's own."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"scenario file {path} not found; check --scenario") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read scenario file {path}: {exc}") from None
    unknown = set(document) - {"url", "defaults", "task"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r}; a scenario has url, [defaults] and [[task]]")
    url = url or document.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{path}: no server to load; give the URL on the command line or url = \"http://...\"")
    target = Target.parse(url)
    defaults = document.get("defaults", {})
    tasks_raw = document.get("task", [])
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise ConfigError(f"{path}: no [[task]] entries; add at least one with a path")
    tasks = []
    for number, raw in enumerate(tasks_raw, 1):
        where = f"{path}: task {number}"
        _check_keys(raw, _TASK_KEYS, where)
        weight = raw.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0 or weight > 10_000:
            raise ConfigError(f"{where}: weight must be a whole number from 0 to 10000")
        steps_raw = raw.get("steps") or [{k: v for k, v in raw.items() if k in _STEP_KEYS}]
        steps = []
        for index, step in enumerate(steps_raw, 1):
            _check_keys(step, _STEP_KEYS, f"{where} step {index}")
            steps.append(_request(step, defaults, target, headers, keepalive, f"{where} step {index}",
                                  seed=number * 1000 + index))
        if weight:
            tasks.append(Task(str(raw.get("name") or steps[0].name), weight, steps))
    if not tasks:
        raise ConfigError(f"{path}: every task has weight 0")
    return target, Scenario(tasks)


def _check_keys(raw: Any, allowed: set[str], where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; use {', '.join(sorted(allowed))}")


def _request(
    raw: dict[str, Any], defaults: dict[str, Any], target: Target, cli_headers: dict[str, str], keepalive: bool,
    where: str, seed: int,
) -> Request:
    merged = {**defaults, **raw}
    path = merged.get("path")
    if not isinstance(path, str):
        raise ConfigError(f"{where}: needs a path, like path = \"/\"")
    headers = {**cli_headers, **defaults.get("headers", {}), **raw.get("headers", {})}
    if not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{where}: header values must be strings")
    body = merged.get("body", "")
    if not isinstance(body, str):
        raise ConfigError(f"{where}: body must be a string")
    flags = {key: merged.get(key, False) for key in ("assets", "cache")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false")
    if flags["cache"] and not flags["assets"]:
        raise ConfigError(f"{where}: cache = true revalidates a page's assets; add assets = true")
    request = encode(target, str(merged.get("method", "GET")), path, headers, body, keepalive,
                     str(raw.get("name", "")), seed)
    request.assets, request.cache = flags["assets"], flags["cache"]
    return request
