"""h1 without sockets: bytes in, events out; response framing. Every input fed whole, byte by byte
and at random splits must give the same events."""

from __future__ import annotations

import random

import pytest

from tricorn.server.h1 import END, Data, ProtocolError, Request, RequestParser, Response, ResponseError, error_response


def feed(data: bytes, strategy: str = "whole", **limits: int) -> list[object]:
    parser = RequestParser(**limits)
    if strategy == "whole":
        pieces = [data]
    elif strategy == "bytewise":
        pieces = [data[i:i + 1] for i in range(len(data))]
    else:
        rng = random.Random(len(data))
        cuts = sorted(rng.sample(range(1, len(data)), min(5, len(data) - 1)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    events: list[object] = []
    for piece in pieces:
        events.extend(parser.receive_data(piece))
    # Body may arrive in more pieces when split; join consecutive body events to compare.
    merged: list[object] = []
    for event in events:
        if isinstance(event, Data):
            if merged and isinstance(merged[-1], bytes):
                merged[-1] += event.data
            else:
                merged.append(event.data)
        else:
            merged.append(event)
    return merged


STRATEGIES = ["whole", "bytewise", "random"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pipelined_requests_with_bodies(strategy: str) -> None:
    data = (b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;e=1\r\nhi\r\n0\r\nT: x\r\n\r\n"
            b"GET /c HTTP/1.0\r\n\r\n")
    events = feed(data, strategy)
    kinds = [type(e).__name__ if e is not END else "END" for e in events]
    assert kinds == ["Request", "bytes", "END", "Request", "bytes", "END", "Request", "END"]
    first, second, third = (e for e in events if isinstance(e, Request))
    assert (first.method, first.path, first.query, first.has_body) == (b"POST", b"/a", b"x=1", True)
    assert events[1] == b"abc" and events[4] == b"hi"
    assert second.headers == [(b"host", b"h"), (b"transfer-encoding", b"chunked")]  # no trailer merged
    assert third.http_version == "1.0" and not third.keep_alive and third.headers == []


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("data", "status"), [
    (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 100 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
])
def test_limits_and_refusals(data: bytes, status: int, strategy: str) -> None:
    events = feed(data, strategy, limit_request_line=50, limit_request_field_size=60, limit_request_fields=2,
                  limit_request_body=10)
    assert isinstance(events[-1], ProtocolError) and events[-1].status == status
    assert not any(isinstance(e, Request) for e in events)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_upgrade_with_a_body_is_refused_so_the_body_is_never_read_as_a_request(strategy: str) -> None:
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: upgrade\r\nContent-Length: 31\r\n\r\n"
            b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
    events = feed(data, strategy)
    assert len(events) == 1 and isinstance(events[0], ProtocolError) and events[0].status == 400


def test_bytes_after_an_upgrade_are_held_until_the_connection_decides() -> None:
    upgrade = b"GET /a HTTP/1.1\r\nHost: h\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n"
    parser = RequestParser()
    events = parser.receive_data(upgrade + b"GET /b HTTP/1.1\r\n")
    assert [e.path for e in events if isinstance(e, Request)] == [b"/a"] and events[0].upgrade == b"foo"
    assert parser.receive_data(b"Host: h\r\n\r\n") == []  # held
    # Not taken: what followed is the next request.
    assert [e.path for e in parser.resume() if isinstance(e, Request)] == [b"/b"]
    # Taken: what followed belongs to the new protocol, and the parser is done.
    parser = RequestParser()
    parser.receive_data(upgrade + b"\x81\x85frame")
    parser.receive_data(b"more")
    assert parser.take_upgraded() == b"\x81\x85framemore" and parser.receive_data(b"GET") == []


def test_head_size_limit_stops_an_endless_header() -> None:
    parser = RequestParser(limit_request_head=1000, limit_request_field_size=10**6)
    parser.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\nX: ")
    events: list[object] = []
    for _ in range(20):
        events += parser.receive_data(b"v" * 100)
    assert isinstance(events[-1], ProtocolError) and events[-1].status == 431
    assert parser.receive_data(b"more") == []  # dead after an error


def _split_everywhere(data: bytes, **limits: int) -> None:
    """`data` cut in two at every position: the head limit counts only the unfinished head's bytes."""
    whole = [type(e) for e in RequestParser(**limits).receive_data(data)]
    assert ProtocolError not in whole
    for cut in range(1, len(data)):
        parser = RequestParser(**limits)
        events = parser.receive_data(data[:cut]) + parser.receive_data(data[cut:])
        assert not any(isinstance(e, ProtocolError) for e in events), (cut, events[-1])
        assert [type(e) for e in events if not isinstance(e, Data)] == [t for t in whole if t is not Data]


def test_pipelined_heads_count_only_their_own_bytes_against_the_head_limit() -> None:
    heads = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(40))
    _split_everywhere(heads, limit_request_head=100)


def test_a_body_before_a_head_does_not_count_against_its_head_limit() -> None:
    post = b"POST /u HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000
    _split_everywhere(post + b"GET /second HTTP/1.1\r\nHost: localhost\r\n\r\n", limit_request_head=200)
    # a body that looks like heads, and one that is chunked
    tricky = b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n" + b"\r\n\r\n" * 10
    chunked = (b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n"
               + b"y" * 256 + b"\r\n0\r\n\r\n")
    _split_everywhere(tricky + chunked + b"GET /third HTTP/1.1\r\nHost: h\r\n\r\n", limit_request_head=120)


def test_a_head_over_the_limit_is_still_refused_when_it_follows_a_request_in_the_same_read() -> None:
    parser = RequestParser(limit_request_head=1000, limit_request_field_size=10**6)
    events = parser.receive_data(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 990)
    assert isinstance(events[0], Request) and events[1] is END
    assert isinstance(events[-1], ProtocolError) and events[-1].status == 431


def test_error_after_a_good_request_comes_last() -> None:
    events = feed(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\n")
    assert isinstance(events[0], Request) and events[1] is END
    assert isinstance(events[2], ProtocolError) and events[2].status == 400


def test_tls_hello_is_not_answered() -> None:
    events = feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert isinstance(events[-1], ProtocolError) and events[-1].status == 0


def test_absolute_form_and_asterisk_targets() -> None:
    (request, _) = feed(b"GET http://example.com/p/q?x=1#f HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert (request.path, request.query) == (b"/p/q", b"x=1")
    (request, _) = feed(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.path == b"*"
    (error,) = feed(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(error, ProtocolError) and error.status == 400


def test_an_absolute_form_target_replaces_the_host_header_with_its_authority() -> None:
    """RFC 9112 3.2.2: a server ignores Host when the target is in absolute form."""
    (request, _) = feed(b"GET http://example.com:8080/abs HTTP/1.1\r\nHost: other.example\r\nX: y\r\n\r\n")
    assert request.headers == [(b"host", b"example.com:8080"), (b"x", b"y")]
    assert request.path == b"/abs"
    (request, _) = feed(b"GET https://EXAMPLE.com?q=1 HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave Host out
    assert request.headers == [(b"host", b"EXAMPLE.com")] and request.query == b"q=1"
    (request, _) = feed(b"GET http://user:pw@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert request.headers == [(b"host", b"example.com")]
    for target in (b"http:///no-host", b"http://user@/", b"http://"):
        (error,) = feed(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % target)
        assert isinstance(error, ProtocolError) and error.status == 400, target


def _request(method: bytes = b"GET", version: str = "1.1", keep_alive: bool = True) -> Request:
    return Request(method, b"/", b"/", b"", version, [], keep_alive, False, False, None)


def test_a_response_records_whether_its_head_promised_keep_alive() -> None:
    """The connection keeps a connection whose response promised keep-alive even when it learns
    of a stop after the head went out (keep_alive may be lowered then; the promise stands)."""
    kept = Response(_request())
    kept.start(200, [], b"x", False)
    kept.keep_alive = False  # the stop, after the head
    assert kept.promised_keep_alive
    closing = Response(_request(keep_alive=False))
    assert b"connection: close" in closing.start(200, [], b"x", False) and not closing.promised_keep_alive
    ten = Response(_request(version="1.0", keep_alive=True))
    assert b"connection: keep-alive" in ten.start(200, [], b"x", False) and ten.promised_keep_alive


def test_whole_body_gets_a_content_length() -> None:
    response = Response(_request(), server_header=False, date=False)
    data = response.start(200, [(b"content-type", b"text/plain")], b"hello", False)
    assert data == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
    assert response.keep_alive and response.complete_length


def test_streamed_body_is_chunked_on_11_and_close_delimited_on_10() -> None:
    response = Response(_request(), server_header=False, date=False)
    head = response.start(200, [], b"ab", True)
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n2\r\nab\r\n")
    assert response.data(b"", True) == b""
    assert response.data(b"c", False) == b"1\r\nc\r\n0\r\n\r\n"
    old = Response(_request(version="1.0", keep_alive=True), server_header=False, date=False)
    assert old.start(200, [], b"ab", True).endswith(b"connection: close\r\n\r\nab")
    assert not old.keep_alive


def test_head_204_304_have_no_body() -> None:
    head = Response(_request(b"HEAD"), server_header=False, date=False)
    assert head.start(200, [], b"hello", False).endswith(b"content-length: 5\r\n\r\n")
    for status in (204, 304):
        response = Response(_request(), server_header=False, date=False)
        assert response.start(status, [], b"x", False) == b"HTTP/1.1 %d %s\r\n\r\n" % (
            status, b"No Content" if status == 204 else b"Not Modified")


def test_app_headers_are_validated_and_framing_is_ours() -> None:
    with pytest.raises(ResponseError, match="CR, LF or NUL"):
        Response(_request()).start(200, [(b"x", b"a\r\nb: c")], b"", False)
    with pytest.raises(ResponseError, match="invalid header name"):
        Response(_request()).start(200, [(b"bad name", b"v")], b"", False)
    with pytest.raises(ResponseError, match="invalid status"):
        Response(_request()).start(1000, [], b"", False)
    response = Response(_request(), server_header=False, date=False)
    data = response.start(200, [(b"Transfer-Encoding", b"chunked"), (b"Connection", b"close")], b"x", False)
    assert data == b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"


def test_content_length_is_enforced() -> None:
    response = Response(_request())
    response.start(200, [(b"content-length", b"3")], b"ab", True)
    with pytest.raises(ResponseError):
        response.data(b"cd", False)
    short = Response(_request())
    short.start(200, [(b"content-length", b"3")], b"ab", False)
    assert not short.keep_alive and not short.complete_length


def test_error_response_closes() -> None:
    data = error_response(431, "Too big", server_header=False)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close\r\n" in data and data.endswith(b"\r\n\r\nToo big\n")
