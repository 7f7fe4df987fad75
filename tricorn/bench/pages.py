"""A page with its assets, fetched as a browser would: the HTML's same-origin stylesheets, scripts,
images, fonts and icons (and what the stylesheets import or point to with `url(...)`), up to
MAX_CONNECTIONS at a time, each user with its own connections, cookies and (with `cache = true`)
validators for the next visit's `If-None-Match` / `If-Modified-Since`. No JavaScript runs.

A visit starts when the page's answer is complete and ends when its last asset's is: the page
latency counts from the page request's start to then. Assets are counted apart from requests.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httptools

from .kinds import connect_error

MAX_CONNECTIONS = 6  # per host, as browsers open
_LINK_RELS = {"stylesheet", "icon", "shortcut", "apple-touch-icon", "preload", "modulepreload", "manifest"}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)|@import\s+(['"])([^'"]+)\3""")


class _AssetParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "link" and _LINK_RELS & set(values.get("rel", "").lower().split()):
            self.found.append(values.get("href", ""))
        elif tag in ("script", "img", "source", "audio", "video", "embed", "iframe") and values.get("src"):
            self.found.append(values["src"])
        elif tag in ("img", "source") and values.get("srcset"):
            self.found.append(values["srcset"].split(",")[0].split()[0])  # one candidate, as a browser takes
        if tag == "video" and values.get("poster"):
            self.found.append(values["poster"])


def html_assets(html: str, page_url: str) -> list[str]:
    """The same-origin assets a browser would fetch for this page: their paths (with queries), in
    document order, each once."""
    parser = _AssetParser()
    try:
        parser.feed(html)
        parser.close()
    except AssertionError:  # html.parser's reaction to some broken markup: keep what was found
        pass
    return same_origin(parser.found, page_url)


def css_assets(css: str, sheet_url: str) -> list[str]:
    """What a stylesheet makes a browser fetch: `@import`s, fonts and images in `url(...)`."""
    return same_origin((match[2] or match[4] for match in _CSS_URL.finditer(css)), sheet_url)


def same_origin(references: Iterable[str], base_url: str) -> list[str]:
    base = urlsplit(base_url)
    paths: list[str] = []
    for reference in references:
        reference = reference.strip()
        if not reference or reference.startswith(("data:", "javascript:", "#", "about:", "blob:")):
            continue
        url = urlsplit(urljoin(base_url, reference))
        if (url.scheme, url.netloc) != (base.scheme, base.netloc):
            continue
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        if path not in paths:
            paths.append(path)
    return paths


class Browser:
    """What one user's browser keeps between requests: cookies, validators, its asset connections."""

    __slots__ = ("connections", "cookies", "imports", "validators")

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.validators: dict[str, tuple[str, str]] = {}  # path → (ETag, Last-Modified)
        self.imports: dict[str, list[str]] = {}  # a cached stylesheet's path → what it makes the browser fetch
        self.connections: list[AssetConnection] = []

    def cookie_header(self) -> bytes:
        return ("cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()) + "\r\n").encode("latin-1")

    def remember_cookie(self, value: bytes) -> None:
        pair = value.decode("latin-1").split(";", 1)[0]
        name, sep, content = pair.partition("=")
        if sep and name.strip():
            self.cookies[name.strip()] = content.strip()

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.connections.clear()


class Visit:
    """The assets of one page, fetched on up to MAX_CONNECTIONS of the user's connections; `done`
    is called once, after the last one."""

    def __init__(self, browser: Browser, address: tuple[str, int], tls: dict[str, Any], authority: str,
                 paths: list[str], page_url: str, cache: bool, counted: Callable[[int, int], None],
                 failed: Callable[[str], None], done: Callable[[], None], timeout: float) -> None:
        """`tls`: create_connection's TLS arguments (none for http://); `counted(status, bytes)`
        and `failed(kind)` count each asset as it ends."""
        self.browser = browser
        self.address = address
        self.tls = tls
        self.authority = authority
        self.queue = list(reversed(paths))
        self.seen = set(paths)
        self.page_url = page_url
        self.cache = cache
        self.counted = counted
        self.count_failure = failed
        self.done = done
        self.timeout = timeout
        self.pending = 0  # assets sent and not yet answered
        self.finished = False

    def start(self) -> None:
        lanes = self.browser.connections
        while len(lanes) < min(MAX_CONNECTIONS, len(self.queue)):
            lanes.append(AssetConnection(self))
        for lane in lanes:
            lane.visit = self
            self._feed(lane)
        self._maybe_done()

    def _feed(self, lane: AssetConnection) -> None:
        if not self.queue or lane.busy:
            return
        path = self.queue.pop()
        head = [f"GET {path} HTTP/1.1\r\nhost: {self.authority}\r\n".encode("latin-1")]
        if self.browser.cookies:
            head.append(self.browser.cookie_header())
        validators = self.browser.validators.get(path) if self.cache else None
        if validators is not None:
            etag, modified = validators
            if etag:
                head.append(f"if-none-match: {etag}\r\n".encode("latin-1"))
            if modified:
                head.append(f"if-modified-since: {modified}\r\n".encode("latin-1"))
        self.pending += 1
        lane.fetch(path, b"".join(head) + b"\r\n")

    def answered(self, lane: AssetConnection, status: int) -> None:
        self.pending -= 1
        self.counted(status, lane.received)
        browser = self.browser
        if status == 200 and self.cache and (lane.etag or lane.modified):
            browser.validators[lane.path] = (lane.etag, lane.modified)
        imports: list[str] = []
        if status == 200 and lane.is_css:
            imports = css_assets(lane.body.decode("utf-8", "replace"), urljoin(self.page_url, lane.path))
            if self.cache:
                browser.imports[lane.path] = imports
        elif status == 304:  # the cached copy is still good: what it names is fetched (or revalidated) again
            imports = browser.imports.get(lane.path, [])
        for path in imports:
            if path not in self.seen:
                self.seen.add(path)
                self.queue.insert(0, path)
        self._continue(lane)

    def failed(self, lane: AssetConnection, kind: str) -> None:
        self.pending -= 1
        self.count_failure(kind)
        self._continue(lane)

    def _continue(self, lane: AssetConnection) -> None:
        self._feed(lane)
        for other in self.browser.connections:  # a stylesheet's fonts may use idle lanes too
            self._feed(other)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not self.finished and not self.queue and not self.pending:
            self.finished = True
            self.done()


class AssetConnection:
    """One of a user's asset connections: kept alive between visits, reopened when it closes. Each
    TCP connection is a _Wire; what an old one reports after it was replaced is ignored."""

    def __init__(self, visit: Visit) -> None:
        self.visit = visit
        self.wire: _Wire | None = None
        self.connecting = False
        self.parser = httptools.HttpResponseParser(self)
        self.busy = False
        self.path = ""
        self.data = b""
        self.started = 0
        self.received = 0
        self.status = 0
        self.etag = self.modified = ""
        self.is_css = False
        self.body = b""
        self.framed = False
        self.headers_done = False

    def fetch(self, path: str, data: bytes) -> None:
        self.busy, self.path, self.data, self.started = True, path, data, time.perf_counter_ns()
        self.received, self.status, self.etag, self.modified = 0, 0, "", ""
        self.is_css, self.body, self.framed, self.headers_done = path.split("?")[0].endswith(".css"), b"", False, False
        if self.wire is not None and not self.wire.transport.is_closing():
            self.wire.transport.write(data)
        elif not self.connecting:
            self.connecting = True
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        visit = self.visit
        try:
            _, wire = await asyncio.wait_for(
                loop.create_connection(lambda: _Wire(self), *visit.address[:2], **visit.tls), visit.timeout)
        except (asyncio.TimeoutError, OSError) as exc:
            self.connecting = False
            if self.busy:
                self.busy = False
                self.visit.failed(self, connect_error(exc))
            return
        self.connecting = False
        self.wire, self.parser = wire, httptools.HttpResponseParser(self)
        if self.busy:
            wire.transport.write(self.data)
        else:  # timed out while connecting: the visit went on without it
            self.close()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail("malformed")

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            self.framed = True
        elif lowered == b"etag":
            self.etag = value.decode("latin-1")
        elif lowered == b"last-modified":
            self.modified = value.decode("latin-1")
        elif lowered == b"set-cookie":
            self.visit.browser.remember_cookie(value)
        elif lowered == b"content-type":
            self.is_css = self.is_css or value.lower().startswith(b"text/css")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = not 100 <= self.status < 200  # else an interim response: the real one follows

    def on_body(self, body: bytes) -> None:
        if self.is_css:
            self.body += body

    def on_message_complete(self) -> None:
        if self.busy and self.headers_done:
            self.busy = False
            if not self.parser.should_keep_alive():
                self.close()
            self.visit.answered(self, self.status)

    def _fail(self, kind: str) -> None:
        busy, self.busy = self.busy, False
        self.close()
        if busy:
            self.visit.failed(self, kind)

    def timed_out(self, now: int) -> bool:
        return self.busy and now - self.started > self.visit.timeout * 1e9

    def close(self) -> None:
        if self.wire is not None:
            self.wire.transport.abort()
            self.wire = None

    def lost(self, exc: Exception | None) -> None:
        """The current wire closed (the server's end, or an error)."""
        self.wire = None
        if self.busy:
            if exc is None and self.headers_done and not self.framed:
                self.busy = False
                self.visit.answered(self, self.status)  # a close-delimited body ends here
            else:
                self._fail("reset" if isinstance(exc, ConnectionResetError) else "closed")


class _Wire(asyncio.Protocol):
    """One TCP connection of an AssetConnection, which hears from it only while it is current."""

    def __init__(self, lane: AssetConnection) -> None:
        self.lane = lane
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.lane.wire is self:
            self.lane.data_received(data)

    def eof_received(self) -> bool | None:
        if self.lane.wire is self:
            self.lane.lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lane.wire is self:
            self.lane.lost(exc)
