"""HTTP/1.1 behaviour of a real server: framing, keep-alive, pipelining, limits, timeouts, errors."""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import httptools
import httpx
import pytest

from .conftest import exchange, read_responses

GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(params=["asgi_apps:app", "wsgi_apps:app"], ids=["asgi", "wsgi"])
def server(request, serve):
    return serve(request.param, "--no-access-log")


def test_hello_over_httpx(server) -> None:
    r = httpx.get(server.url + "/echo?x=1")
    assert r.status_code == 200
    assert r.json()["query_string"] == "x=1"
    assert r.headers["server"] == "tricorn"
    assert "date" in r.headers


def test_keep_alive_reuses_the_connection(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        for i in range(3):
            sock.sendall(GET % f"/n{i}".encode())
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 OK")
            assert b"connection: close" not in data.lower()


def test_pipelined_requests_are_answered_in_order(server) -> None:
    requests = b"".join(GET % f"/p{i}".encode() for i in range(5))
    responses, closed = exchange(server.port, requests)
    assert [json.loads(r.body)["path"] for r in responses] == [f"/p{i}" for i in range(5)]
    assert closed


def test_ten_thousand_pipelined_requests_in_one_write_are_all_answered(server) -> None:
    """Each head counts only its own bytes against --limit-request-head (it once counted the whole
    read it ended in: request 3,148 got a 431)."""
    requests = b"".join(b"GET /status/200?n=%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(10_000))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        responses = read_responses(sock, 10_000)
        sender.join()
    assert len(responses) == 10_000 and {r.status for r in responses} == {200}


def test_a_head_split_after_a_large_body_is_not_counted_with_the_body(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /count-upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n"
                     + b"x" * 100_000 + b"GET /second HTTP/1.1\r\nHo")
        (first,) = read_responses(sock, 1)
        sock.sendall(b"st: localhost\r\n\r\n")
        (second,) = read_responses(sock, 1)
    assert (first.status, first.body) == (200, b"100000")
    assert second.status == 200 and json.loads(second.body)["path"] == "/second"


def test_an_absolute_form_target_gives_the_app_its_authority_as_host(server) -> None:
    responses, _ = exchange(server.port, b"GET http://example.com/abs HTTP/1.1\r\nHost: other.example\r\n"
                                         b"Connection: close\r\n\r\n")
    seen = json.loads(responses[0].body)
    hosts = [value for name, value in seen["headers"] if name == "host"]  # ASGI's headers, WSGI's HTTP_HOST
    assert responses[0].status == 200 and seen["path"] == "/abs" and hosts == ["example.com"]


def test_http10_closes_unless_keep_alive_is_asked(server) -> None:
    responses, closed = exchange(server.port, b"GET /a HTTP/1.0\r\n\r\n", half_close=False)
    assert responses[0].status == 200 and closed
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = sock.recv(65536)
        assert b"connection: keep-alive" in data.lower()
        sock.sendall(b"GET /b HTTP/1.0\r\n\r\n")
        assert b'"/b"' in sock.recv(65536)


def test_connection_close_is_honoured(server) -> None:
    responses, closed = exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" + GET % b"/x",
                                 half_close=False)
    assert len(responses) == 1 and closed
    assert responses[0].header("connection") == "close"


def test_chunked_request_with_extensions_and_trailers(server) -> None:
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    for strategy in ("whole", "bytewise", "random"):
        responses, _ = exchange(server.port, raw, strategy)
        echoed = json.loads(responses[0].body)
        assert echoed["body"] == "hello world"
        assert "x-trailer" not in [h[0] for h in echoed["headers"]]


def test_streamed_response_is_chunked_on_http11_and_close_delimited_on_http10(server) -> None:
    responses, _ = exchange(server.port, GET % b"/stream")
    assert responses[0].header("transfer-encoding") == "chunked"
    assert responses[0].body == b"chunk0\nchunk1\nchunk2\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert body == b"chunk0\nchunk1\nchunk2\n"


def test_head_carries_no_body(server) -> None:
    r = httpx.head(server.url + "/stream")
    assert r.status_code == 200 and r.content == b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n" + GET % b"/after")
        data = b""
        while b'"/after"' not in data:
            data += sock.recv(65536)
        assert data.count(b"HTTP/1.1 200") == 2  # the HEAD answer had no body to confuse framing


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_carry_no_body(serve, status: int) -> None:
    server = serve("asgi_apps:app")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(GET % f"/status/{status}".encode() + GET % b"/next")
        data = b""
        while b'"/next"' not in data:
            data += sock.recv(65536)
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 %d" % status)
    assert b"content-length" not in first.lower() and b"transfer-encoding" not in first.lower()
    assert rest.startswith(b"HTTP/1.1 200")


def test_expect_100_continue_is_sent_only_when_the_body_is_read(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        data = b""
        while not data.endswith(b"}"):
            data += sock.recv(65536)
        assert json.loads(data.partition(b"\r\n\r\n")[2])["body"] == "hello"
    # An app that answers without reading the body gets no 100 Continue.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /status/403 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 403")


def test_server_header_can_be_turned_off(serve) -> None:
    server = serve("asgi_apps:app", "--no-server-header")
    r = httpx.get(server.url + "/")
    assert "server" not in r.headers and "date" in r.headers


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\rX: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: t\n\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", 400),
        (b"GET nope HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ],
    ids=["414-line", "431-field", "431-count", "no-host", "two-hosts", "cl-and-te", "two-cl", "bad-chunk",
         "obs-fold", "bare-cr", "nul", "bare-lf", "te-http10", "te-unknown", "version-2", "version-1.2", "target"],
)
def test_bad_requests_are_refused_and_closed_without_calling_the_app(server, raw: bytes, status: int) -> None:
    for strategy in ("whole", "bytewise"):
        responses, closed = exchange(server.port, raw, strategy)
        assert [r.status for r in responses] == [status], responses
        assert responses[0].header("connection") == "close"
        assert responses[0].header("x-app") is None
        assert closed


def test_body_over_the_limit_is_413(serve) -> None:
    server = serve("asgi_apps:app", "--limit-request-body", "1k")
    responses, closed = exchange(server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n")
    assert [r.status for r in responses] == [413] and closed
    chunked = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n"
    responses, closed = exchange(server.port, chunked + b"1\r\na\r\n0\r\n\r\n")
    assert responses[-1].status == 413 and closed


@pytest.mark.parametrize("data", [b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32), b"\x00\xff\xfe garbage"])
def test_tls_hello_and_garbage_close_the_connection(server, data: bytes) -> None:
    responses, closed = exchange(server.port, data)
    assert responses == [] and closed
    assert httpx.get(server.url + "/").status_code == 200


def test_slowloris_is_closed_after_the_header_timeout(serve) -> None:
    server = serve("asgi_apps:app", "--timeout-header", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        closed_after = None
        for byte in b"Host: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaa":
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed_after = time.monotonic() - started
                    break
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            time.sleep(0.1)
        assert closed_after is not None and 0.9 <= closed_after < 3.0


def test_connection_that_never_sends_is_closed_after_the_header_timeout(serve) -> None:
    server = serve("asgi_apps:app", "--timeout-header", "0.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert 0.4 <= time.monotonic() - started < 3.0


def test_idle_keep_alive_connection_is_closed(serve) -> None:
    server = serve("asgi_apps:app", "--keep-alive", "0.5", "--timeout-header", "30")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(GET % b"/empty")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert 0.4 <= time.monotonic() - started < 3.0


def _stall_body(port: int, path: bytes, sent: bytes, *headers: bytes) -> tuple[bytes, float]:
    """Start a POST of 1,000,000 bytes, send `sent` of it and no more; what the server answers
    before it closes, and after how long."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n%s\r\n%s"
                     % (path, b"".join(h + b"\r\n" for h in headers), sent))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer, time.monotonic() - started


def test_a_stalled_request_body_gets_408_and_the_app_a_disconnect(serve) -> None:
    server = serve("asgi_apps:app", "--timeout-body", "1")
    answer, after = _stall_body(server.port, b"/wait-disconnect", b"x" * 10)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
    assert b"--timeout-body" in answer and 0.9 <= after < 5
    server.wait_for(lambda: "disconnected" in server.records(), what="the app told of the disconnect")
    server.wait_for(lambda: '"POST /wait-disconnect HTTP/1.1" 408' in server.stdout, what="the access log line")
    assert httpx.get(server.url + "/").status_code == 200


def test_a_stalled_wsgi_body_gets_408_whether_or_not_the_app_is_reading(serve) -> None:
    server = serve("wsgi_apps:app", "--timeout-body", "1", "--threads", "2")
    # A small part of a body: no thread is given to it, and the app never runs.
    answer, _ = _stall_body(server.port, b"/upload-record", b"x" * 10)
    assert answer.startswith(b"HTTP/1.1 408 ") and server.records() == []
    # More than the high-water mark: the app is reading it, and wsgi.input raises.
    answer, after = _stall_body(server.port, b"/upload-record", b"x" * 100_000)
    assert answer.startswith(b"HTTP/1.1 408 ") and 0.9 <= after < 5
    server.wait_for(lambda: server.records() == ["input-raised-ClientDisconnected"], what="wsgi.input raising")
    assert server.stdout.count('"POST /upload-record HTTP/1.1" 408') == 2
    assert httpx.get(server.url + "/").status_code == 200


@pytest.mark.parametrize("app", ["asgi_apps:app", "wsgi_apps:app"])
def test_a_slow_body_that_keeps_coming_is_not_timed_out(serve, app: str) -> None:
    server = serve(app, "--timeout-body", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /count-upload HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):  # 2.4 s in all, each byte well inside the timeout
            time.sleep(0.3)
            sock.sendall(b"x")
        (response,) = read_responses(sock, 1)
    assert (response.status, response.body) == (200, b"8")


def test_a_client_waiting_for_100_continue_is_not_timed_out(serve) -> None:
    """It sends its body once the app asks for it; an app that answers without it owes no 408."""
    server = serve("asgi_apps:app", "--timeout-body", "0.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /sleep?1.5 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        (response,) = read_responses(sock, 1)
    assert (response.status, response.body) == (200, b"slept")


def test_limit_concurrency_answers_503_beyond_it(serve) -> None:
    server = serve("asgi_apps:app", "--limit-concurrency", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as busy:
        busy.sendall(GET % b"/sleep?2")
        deadline = time.monotonic() + 5
        while True:  # until the sleeping request holds the only slot
            responses, _ = exchange(server.port, GET % b"/empty")
            if responses and responses[0].status == 503:
                break
            assert time.monotonic() < deadline, "never saw a 503"
        assert responses[0].header("connection") == "close"
        assert busy.recv(65536).startswith(b"HTTP/1.1 200")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS")))


class _StatusCounter:
    """Counts the responses of a long stream without keeping their bodies."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())


def test_pipelined_requests_wait_while_the_client_does_not_read(server) -> None:
    """A client that sends request after request and reads nothing: the server stops reading once
    its writes back up, instead of answering into memory (422 MB in 10 s before)."""
    count, piece = 6_000, 16 * 1024
    pad = b"x" * 1000  # 6 MB of requests: more than the kernel buffers hold for an unread socket
    requests = b"".join(b"GET /download?65536 HTTP/1.1\r\nHost: t\r\nX-Pad: %s\r\n\r\n" % pad for _ in range(count))
    assert httpx.get(server.url + "/download?65536").status_code == 200  # warm: one response of that size
    idle = _rss_kib(server.proc.pid)
    total = len(requests)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setblocking(False)
        sent = 0
        while sent < total:
            _, writable, _ = select.select([], [sock], [], 2.0)
            if not writable:
                break  # the server stopped reading
            sent += sock.send(requests[sent:sent + piece])
        assert sent < total, "the server read every request while none of its answers were read"
        grown = _rss_kib(server.proc.pid) - idle
        assert grown < 16 * 1024, f"the worker grew by {grown} KiB while its client did not read"
        sock.setblocking(True)
        sender = threading.Thread(target=sock.sendall, args=(requests[sent:],))
        sender.start()
        counter = _StatusCounter()
        while len(counter.statuses) < count:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(counter.statuses)} responses"
            counter.parser.feed_data(chunk)
        sender.join()
    assert set(counter.statuses) == {200}


def test_client_disconnect_mid_response_costs_nothing(server) -> None:
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(GET % b"/download?50000000")
            sock.recv(1000)
    assert httpx.get(server.url + "/").status_code == 200
    assert server.proc.poll() is None


def test_large_upload_and_download_stream_in_bounded_memory(server) -> None:
    size = 1024**3
    before = int(httpx.get(server.url + "/rss").text)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"POST /count-upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        block = bytes(1024 * 1024)
        for _ in range(size // len(block)):
            sock.sendall(block)
        data = b""
        while b"\r\n\r\n" not in data or str(size).encode() not in data.partition(b"\r\n\r\n")[2]:
            data += sock.recv(65536)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(GET % f"/download?{size}".encode())
        received = 0
        while received < size:
            chunk = sock.recv(1024 * 1024)
            assert chunk
            received += len(chunk)
    after = int(httpx.get(server.url + "/rss").text)
    assert after - before < 64 * 1024, f"peak RSS grew by {(after - before) // 1024} MiB"


@pytest.mark.parametrize("app", ["asgi_apps:app", "wsgi_apps:app"])
def test_plain_asyncio_loop_serves_the_same(serve, app: str) -> None:
    server = serve(app, "--loop", "asyncio")
    responses, closed = exchange(server.port, b"".join(GET % f"/p{i}".encode() for i in range(3)))
    assert [json.loads(r.body)["path"] for r in responses] == ["/p0", "/p1", "/p2"] and closed
    responses, _ = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"3\r\nabc\r\n0\r\n\r\n")
    assert json.loads(responses[0].body)["body"] == "abc"


def test_log_level_filters_the_error_log(serve) -> None:
    quiet = serve("asgi_apps:app", "--log-level", "warning")
    assert httpx.get(quiet.url + "/raise-before").status_code == 500
    quiet.stop()
    assert "Listening at" not in quiet.stderr and "Exception in ASGI application" in quiet.stderr
