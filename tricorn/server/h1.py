"""Sans-I/O HTTP/1.1 for the server side, over httptools (llhttp).

Theory of operation. `RequestParser.receive_data(bytes)` returns the events those bytes complete,
in order: a `Request` when a head is complete, `Data` for each piece of body, `END` (the one
`EndOfMessage`) when the message is complete, and at most one `ProtocolError`, always last: after
it the parser is dead and the connection must answer `error_response(error)` (if nothing else is
in flight) and close.
Pipelined requests simply produce several groups of events; the connection decides when to act
on them. `Response` turns an app's status, headers and body pieces into bytes, choosing the
framing (Content-Length, chunked, or close-delimited) and the keep-alive verdict. What an app
hands in (status, headers) is typed Any and checked here, each breach a ResponseError that says
what is wrong: in the mypyc build (setup.py) a narrower type would be a bare TypeError at the call.

llhttp already rejects what makes request smuggling possible: Content-Length together with
Transfer-Encoding, duplicate or malformed Content-Length, bad chunk sizes, obs-fold, bare CR or LF
and NUL. On top of it this module enforces the size limits, Host (RFC 9112 3.2), Transfer-Encoding
on HTTP/1.0 and unknown codings (RFC 9112 6.1), the request-target forms (RFC 9112 3.2), and keeps
trailers out of the headers.
"""

from __future__ import annotations

import http
import re
import time
from email.utils import formatdate
from typing import Any, Final

import httptools

from ..errors import ProtocolError

__all__ = [
    "END", "PERCENT", "UNDERSCORE", "Data", "EndOfMessage", "Event", "ProtocolError", "Request", "RequestParser",
    "Response", "ResponseError", "check_header", "error_response",
]

# Single bytes as the ints `byte in data` looks for with one memchr. A bytes operand (b"#" in data)
# is first tried as an int, which raises and clears a TypeError on every test.
CR: Final = ord("\r")
HASH: Final = ord("#")
LF: Final = ord("\n")
NUL: Final = 0
PERCENT: Final = ord("%")
UNDERSCORE: Final = ord("_")


class Data:
    """A piece of a request body, as it arrived (chunked framing removed)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Data({self.data!r})"


class EndOfMessage:
    """The request's body is complete (or it had none). There is one: END."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = EndOfMessage()

# The headers whose values decide framing, routing or the connection's fate; collected apart so
# that on_headers_complete need not scan every header.
_FRAMING = frozenset((b"host", b"content-length", b"transfer-encoding", b"expect", b"upgrade"))
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")
_TOKEN_START = frozenset(
    bytes([c]) for c in b"!#$%&'*+-.^_`|~0123456789" + bytes(range(65, 91)) + bytes(range(97, 123))
)


class Request:
    """A complete request head. Header names are lowercased bytes, in arrival order."""

    __slots__ = (
        "client",
        "expect_continue",
        "has_body",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "scheme",
        "target",
        "upgrade",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        path: bytes,
        query: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        expect_continue: bool,
        has_body: bool,
        upgrade: bytes | None,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.has_body = has_body
        self.upgrade = upgrade
        # Who asked, as the app should see it: set by the connection (proxy headers applied).
        self.client: tuple[str, int] | None = None
        self.scheme = "http"

    @property
    def is_websocket(self) -> bool:
        return self.method == b"GET" and self.upgrade is not None and b"websocket" in self.upgrade.lower()

    def describe(self) -> str:
        """Method and target, for a log line: `GET /path?q`."""
        return f"{self.method.decode()} {self.target.decode('latin-1')}"

    def __repr__(self) -> str:
        return f"<Request {self.method.decode()} {self.target!r} HTTP/{self.http_version}>"


Event = Request | Data | EndOfMessage | ProtocolError


class RequestParser:
    """Bytes in, events out, for one connection's requests."""

    __deletable__ = ("_parser",)  # close() deletes it; a mypyc-compiled class must be told

    def __init__(
        self,
        limit_request_line: int = 8190,
        limit_request_fields: int = 100,
        limit_request_field_size: int = 8190,
        limit_request_head: int = 65536,
        limit_request_body: int = 0,
    ) -> None:
        self.limit_request_line = limit_request_line
        self.limit_request_fields = limit_request_fields
        self.limit_request_field_size = limit_request_field_size
        self.limit_request_head = limit_request_head
        self.limit_request_body = limit_request_body
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._in_head = False
        self._head_bytes = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._framing: list[tuple[bytes, bytes]] = []
        self._body_bytes = 0
        # For the head limit when a read ends inside a head: whether that head began in this read,
        # and the Content-Length body bytes (of this read) of the message just before it.
        self._began_in_read = False
        self._chunked = False
        self._body_in_read = 0
        self._previous_body = 0
        self._lead = b""
        self._messages = 0
        self.dead = False
        # After an Upgrade request, what follows may not be HTTP: it is held until the connection
        # says whether it takes the upgrade (take_upgraded) or serves it as plain HTTP (resume).
        self.held: bytes | None = None

    @property
    def started(self) -> bool:
        """Whether any byte has arrived on this connection."""
        return bool(self._lead)

    def receive_data(self, data: bytes) -> list[Event]:
        if self.dead:
            return []
        if self.held is not None:
            self.held += data
            return []
        events = self._events = []
        self._began_in_read = False
        self._body_in_read = 0
        if len(self._lead) < 32:
            self._lead += data[: 32 - len(self._lead)]  # the connection's first bytes, for _invalid_method
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops at an Upgrade. on_headers_complete refused an upgrade request with a
            # body, so what follows is the upgraded protocol's, or the next request's.
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._parser = httptools.HttpRequestParser(self)
            self.held = data[offset:]
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            events.append(cause if isinstance(cause, ProtocolError) else ProtocolError(400, str(exc)))
            self.dead = True
        except httptools.HttpParserInvalidMethodError:
            events.append(self._invalid_method())
            self.dead = True
        except httptools.HttpParserError as exc:
            events.append(ProtocolError(400, f"Invalid HTTP request: {exc}"))
            self.dead = True
        else:
            if self._in_head:
                if self._began_in_read:
                    self._head_bytes = self._unfinished_head(data)
                else:
                    self._head_bytes += len(data)
                if self._head_bytes > self.limit_request_head:
                    events.append(ProtocolError(431, "Request header fields too large"))
                    self.dead = True
        return events

    def _unfinished_head(self, data: bytes) -> int:
        """How many bytes at the end of `data` belong to the head that began in it and is not
        complete: only those count against the head limit, not the requests before it.

        Nothing in that head is CRLFCRLF, so it starts at or after the last one in `data` (the end
        of the previous head, or of a chunked body). A Content-Length body may lie in between: it
        directly follows a head's CRLFCRLF, or the read's start when its head came earlier. When
        that body holds a CRLFCRLF itself (multipart), the latest place that fits is taken: the
        count may come out short, never long, and the next read counts in full."""
        end = max(0, data.rfind(b"\r\n\r\n") + 4)
        body = self._previous_body
        if body:
            crlf = data.rfind(b"\r\n\r\n", max(0, end - body - 4), len(data) - body)
            end = crlf + 4 + body if crlf >= 0 else (body if end <= body else end)
        return len(data) - end

    def close(self) -> None:
        """The connection is gone. The httptools parser holds this object's callbacks: dropping it
        ends that reference cycle, so the connection's objects are freed at once rather than by
        the garbage collector."""
        self.dead = True
        del self._parser

    def take_upgraded(self) -> bytes:
        """The bytes after an accepted Upgrade request: the new protocol's. This parser is done."""
        data, self.held, self.dead = self.held or b"", None, True
        return data

    def resume(self) -> list[Event]:
        """The Upgrade was not taken: parse what followed it as HTTP."""
        data, self.held = self.held or b"", None
        return self.receive_data(data) if data else []

    def _invalid_method(self) -> ProtocolError:
        lead = self._lead
        if self._messages == 0 and lead[:1] not in _TOKEN_START:
            # Not HTTP at all (a TLS ClientHello, binary garbage): close without an answer.
            return ProtocolError(0, "Not an HTTP request")
        if self._messages == 0 and _TOKEN_LINE.match(lead):
            return ProtocolError(501, "Method not implemented")
        return ProtocolError(400, "Invalid HTTP method")

    # httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._began_in_read = True
        self._previous_body = 0 if self._chunked else self._body_in_read
        self._body_in_read = 0
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._framing = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limit_request_line:
            raise ProtocolError(414, "Request-URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 4 > self.limit_request_field_size:  # the line: name, ": ", value, CRLF
            raise ProtocolError(431, "Request header field too large")
        if not self._in_head:
            return  # a trailer field: never merged into the headers the app saw
        if len(self._headers) >= self.limit_request_fields:
            raise ProtocolError(431, "Too many request header fields")
        if UNDERSCORE in name:
            # X_Forwarded_For would pass for X-Forwarded-For wherever names are mapped to CGI-style
            # keys (WSGI environ, Django's META): dropped, as gunicorn, Daphne and nginx do.
            return
        name = name.lower()
        if value and value[-1] in b" \t":
            value = value.rstrip(b" \t")  # RFC 9110 5.5: trailing whitespace is not part of the value
        self._headers.append((name, value))
        if name in _FRAMING:
            self._framing.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise ProtocolError(505, "HTTP version not supported")
        method = parser.get_method()
        hosts = 0
        chunked = False
        length = 0
        expect_continue = False
        upgrade = None
        for name, value in self._framing:
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                length = int(value)  # llhttp accepted it, so it is digits only
            elif name == b"transfer-encoding":
                if version == "1.0":
                    raise ProtocolError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
                if chunked:
                    raise ProtocolError(400, "Duplicate Transfer-Encoding")
                if value.strip(b" \t").lower() != b"chunked":
                    raise ProtocolError(501, "Unsupported Transfer-Encoding")
                chunked = True
            elif name == b"expect":
                if value.lower() != b"100-continue":
                    raise ProtocolError(417, "Expectation failed")
                expect_continue = version == "1.1"
            else:
                upgrade = value
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise ProtocolError(400, "HTTP/1.1 requests need exactly one Host header")
        if self.limit_request_body and length > self.limit_request_body:
            raise ProtocolError(413, "Request body too large")
        has_body = chunked or length > 0
        self._chunked = chunked
        if parser.should_upgrade() and (has_body or method == b"CONNECT"):
            # llhttp would skip this body and hand it over as upgraded bytes; as we answer over
            # HTTP/1.1, those bytes would be read as the next request. Refuse instead.
            raise ProtocolError(400, "Upgrade requests with a body are not supported")

        target = self._url
        if target[:1] == b"/":
            path, _, query = target.partition(b"?")
        elif target == b"*" and method == b"OPTIONS":
            path, query = target, b""
        elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
            rest = target[target.index(b"//") + 2:]
            slash = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
            path, _, query = (rest[slash:] or b"/").partition(b"?")
            if path[:1] != b"/":
                path = b"/" + path
            self._use_authority(rest[:slash], hosts == 1)
        else:
            raise ProtocolError(400, "Invalid request target")
        if HASH in path:
            path = path.partition(b"#")[0]
        if HASH in query:
            query = query.partition(b"#")[0]

        self._in_head = False
        self._events.append(Request(
            method, target, path, query, version, self._headers,
            parser.should_keep_alive(), expect_continue, has_body, upgrade,
        ))

    def _use_authority(self, authority: bytes, has_host: bool) -> None:
        """RFC 9112 3.2.2: with an absolute-form target, the server ignores Host and uses the
        target's authority; the app sees it as the Host header (ASGI `host`, WSGI HTTP_HOST)."""
        authority = authority.rpartition(b"@")[2]  # userinfo (deprecated, RFC 9110 4.2.4) is not the host
        if not authority:
            raise ProtocolError(400, "Invalid request target: an absolute URI needs a host")
        if has_host:
            self._headers = [(name, authority if name == b"host" else value) for name, value in self._headers]
        else:  # HTTP/1.0
            self._headers.insert(0, (b"host", authority))

    def on_body(self, body: bytes) -> None:
        self._body_in_read += len(body)
        if self.limit_request_body:
            self._body_bytes += len(body)
            if self._body_bytes > self.limit_request_body:
                raise ProtocolError(413, "Request body too large")
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._messages += 1
        self._events.append(END)


# Responses -------------------------------------------------------------------------------------

_STATUS_LINES = {
    int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("ascii") for s in http.HTTPStatus
}
_VALID_NAMES: set[bytes] = set()
_NO_BODY_STATUS = frozenset((204, 304))


class ResponseError(Exception):
    """The app gave a response HTTP cannot carry (bad status or header, body beyond Content-Length)."""


def status_line(status: Any) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        if not (isinstance(status, int) and 100 <= status <= 999):
            raise ResponseError(f"invalid status code {status!r}; expected an int from 100 to 999")
        line = b"HTTP/1.1 %d \r\n" % status
    return line


_date_cache = [0, b""]


def date_header() -> bytes:
    """`date: ...` for this second; rebuilt once a second at most."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
    return _date_cache[1]  # type: ignore[return-value]


def check_header(name: Any, value: Any) -> None:
    if name not in _VALID_NAMES:
        if not isinstance(name, bytes) or not _TOKEN.fullmatch(name):
            raise ResponseError(f"invalid header name {name!r}")
        if len(_VALID_NAMES) < 4096:
            _VALID_NAMES.add(name)
    if not isinstance(value, bytes):
        raise ResponseError(f"header {name!r} has a value of type {type(value).__name__}; expected bytes")
    if CR in value or LF in value or NUL in value:
        raise ResponseError(f"header {name!r} has a CR, LF or NUL in its value")


# What a response header name means to framing, cached per spelling so that the hot path costs
# one dict lookup per header. 0 is an ordinary (validated) name.
_KIND_LENGTH, _KIND_FRAMING, _KIND_SERVER, _KIND_DATE = 1, 2, 3, 4
_KINDS_BY_LOWER = {b"content-length": _KIND_LENGTH, b"transfer-encoding": _KIND_FRAMING,
                   b"connection": _KIND_FRAMING, b"server": _KIND_SERVER, b"date": _KIND_DATE}
_HEADER_KINDS: dict[bytes, int] = {}


def _header_kind(name: Any) -> int:
    if not isinstance(name, bytes) or not _TOKEN.fullmatch(name):
        raise ResponseError(f"invalid header name {name!r}")
    kind = _KINDS_BY_LOWER.get(name.lower(), 0)
    if len(_HEADER_KINDS) < 4096:
        _HEADER_KINDS[name] = kind
    return kind


_CHUNKED = 1
_LENGTH = 2
_CLOSE = 3
_NONE = 4


class Response:
    """The framing of one response: head and body pieces to bytes, and whether the connection stays."""

    __slots__ = (
        "_date",
        "_framing",
        "_head_only",
        "_http10",
        "_remaining",
        "_server",
        "bytes_sent",
        "headers",
        "keep_alive",
        "promised_keep_alive",
        "status",
    )

    def __init__(self, request: Request, server_header: bool = True, date: bool = True) -> None:
        self.keep_alive = request.keep_alive
        self.promised_keep_alive = False  # what the head sent said; keep_alive may change after it
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.bytes_sent = 0
        self._head_only = request.method == b"HEAD"
        self._framing = 0
        self._remaining = 0
        self._server = server_header
        self._date = date
        self._http10 = request.http_version == "1.0"

    def start(self, status: Any, headers: Any, body: bytes, more_body: bool) -> bytes:
        """The head and the first body piece. Without Content-Length, a body given whole gets one."""
        parts = [_STATUS_LINES.get(status) or status_line(status)]
        length = None
        has_server = has_date = False
        kinds = _HEADER_KINDS
        try:
            pairs = [(name, value) for name, value in headers]
        except (TypeError, ValueError):
            raise ResponseError(f"headers must be an iterable of (name, value) pairs, got {headers!r}") from None
        for name, value in pairs:
            if value.__class__ is not bytes:
                raise ResponseError(f"header {name!r} has a value of type {type(value).__name__}; expected bytes")
            kind = kinds.get(name)
            if kind is None:
                kind = _header_kind(name)
            if kind:
                if kind == _KIND_LENGTH:
                    if length is not None or not value.strip().isdigit():
                        raise ResponseError(f"invalid or repeated content-length {value!r}")
                    length = int(value)
                elif kind == _KIND_FRAMING:
                    if name.lower() == b"connection" and b"close" in value.lower():
                        self.keep_alive = False
                    continue  # framing and connection management are ours
                elif kind == _KIND_SERVER:
                    has_server = True
                else:
                    has_date = True
            parts.append(name + b": " + value + b"\r\n")
        # One scan of the whole head instead of three per value: a CR, LF or NUL inside a value
        # shows up as an extra line ending (response splitting).
        block = b"".join(parts)
        if block.count(b"\n") != len(parts) or block.count(b"\r") != len(parts) or NUL in block:
            for name, value in pairs:
                check_header(name, value)
        self.status = status
        self.headers = pairs
        tail = []
        if self._server and not has_server:
            tail.append(b"server: tricorn\r\n")
        if self._date and not has_date:
            tail.append(date_header())

        if self._head_only or status in _NO_BODY_STATUS or status < 200:
            self._framing = _NONE
            if self._head_only and length is None and not more_body and body:
                tail.append(b"content-length: %d\r\n" % len(body))
        elif length is not None:
            self._framing = _LENGTH
            self._remaining = length
        elif not more_body:  # the whole body, given at once: sent here, without data()
            self._framing = _LENGTH
            self.bytes_sent = len(body)
            tail.append(b"content-length: %d\r\n" % len(body))
        elif self._http10:
            self._framing = _CLOSE
            self.keep_alive = False
        else:
            self._framing = _CHUNKED
            tail.append(b"transfer-encoding: chunked\r\n")

        if not self.keep_alive:
            tail.append(b"connection: close\r\n\r\n")
        elif self._http10:
            tail.append(b"connection: keep-alive\r\n\r\n")
            self.promised_keep_alive = True
        else:
            tail.append(b"\r\n")
            self.promised_keep_alive = True
        head = block + b"".join(tail)
        if self._framing == _LENGTH and not more_body and length is None:
            return head + body
        return head + self.data(body, more_body) if body or not more_body else head

    def data(self, body: bytes, more_body: bool) -> bytes:
        """A body piece, framed; the last one (more_body False) ends the message."""
        framing = self._framing
        if framing == _LENGTH:
            self._remaining -= len(body)
            if self._remaining < 0:
                raise ResponseError("the app sent more body than its content-length")
            if not more_body and self._remaining:
                self.keep_alive = False  # short body: only closing tells the client it is incomplete
            self.bytes_sent += len(body)
            return body
        if framing == _CHUNKED:
            self.bytes_sent += len(body)
            if body:
                chunk = b"%x\r\n%b\r\n" % (len(body), body)
                return chunk + b"0\r\n\r\n" if not more_body else chunk
            return b"" if more_body else b"0\r\n\r\n"
        if framing == _CLOSE:
            self.bytes_sent += len(body)
            return body
        return b""

    def account(self, sent: int) -> None:
        """Body bytes that went out without data() (os.sendfile)."""
        self._remaining -= sent
        self.bytes_sent += sent

    @property
    def complete_length(self) -> bool:
        """False when a Content-Length response ended short."""
        return self._framing != _LENGTH or self._remaining == 0


def error_response(status: int, reason: str, server_header: bool = True) -> bytes:
    """A complete response for a request we refuse; the connection closes after it."""
    body = (reason + "\n").encode("utf-8", "replace")
    return b"".join((
        status_line(status),
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        b"server: tricorn\r\n" if server_header else b"",
        date_header(),
        b"connection: close\r\n\r\n",
        body,
    ))
