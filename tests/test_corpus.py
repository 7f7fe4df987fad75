"""Raw requests from other servers' test suites, read in place from ../shared/corpora.

Every request is fed whole, byte by byte and at random splits, to an echo app that reports what
it received (and marks its responses with `x-app: called`). Valid requests must reach the app
exactly as the corpus describes them; invalid ones must be refused (4xx/5xx, then close) or
closed without an answer, and the app must never see them. Smuggling payloads must never get a
second request answered. After every exchange the server must still be serving.

The corpora are GPL/MIT data kept beside the repository, never copied into it. A bare clone
without ../shared skips this module with a visible reason; CI (CI=true) always has it and fails
if it is missing.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import ROOT, Response, Server, exchange

CORPORA = ROOT.parent / "shared" / "corpora"
STRATEGIES = ("whole", "bytewise", "random")

if not CORPORA.is_dir():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CORPORA} is missing: CI must run the request corpora")
    pytest.skip(f"request corpora not found at {CORPORA} (they live in ../shared beside the repository)",
                allow_module_level=True)


def _load(path: str, key: str) -> list[dict[str, Any]]:
    return json.loads((CORPORA / path).read_text())[key]


GUNICORN_VALID = _load("gunicorn/valid.json", "entries")
GUNICORN_INVALID = _load("gunicorn/invalid.json", "entries")
LLHTTP = [t for t in _load("llhttp/requests.json", "tests") if t["type"] == "request"]
GARDEN = [b for b in _load("http-garden/server_bugs.json", "bugs") if b["id"] != 25]  # 25 is truncated upstream
GADGETS = _load("smuggler/te_gadgets.json", "gadgets")

# gunicorn's default limits, for the entries whose expectation depends on them.
# gunicorn's default limits, for the entries whose expectation depends on them. gunicorn also
# refuses invalid/008, whose two 'Someheader' lines only exceed 8190 bytes together: our
# equivalent is the head size limit.
GUNICORN_LIMITS = ("--limit-request-line", "4094", "--limit-request-fields", "100",
                   "--limit-request-field-size", "8190", "--limit-request-head", "8190")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[tuple[str, ...], Server]]:
    """Echo servers by their extra arguments, started once per module."""
    started: dict[tuple[str, ...], Server] = {}
    yield started
    for server in started.values():
        server.close()


def limits_of(entry: dict[str, Any], base: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Our flags for the gunicorn limits an entry was written against."""
    limits = dict(zip(base[::2], base[1::2], strict=True))
    for key, value in entry["gunicorn_cfg"].items():
        if key.startswith("limit_request") and value:
            limits["--" + key.replace("_", "-")] = str(value)
    return tuple(x for pair in sorted(limits.items()) for x in pair)


def echo_for(servers: dict[tuple[str, ...], Server], args: tuple[str, ...]) -> Server:
    if args not in servers:
        servers[args] = Server("asgi_apps:echo", "--no-access-log", *args)
    return servers[args]


@pytest.fixture(scope="module")
def echo() -> Iterator[Server]:
    server = Server("asgi_apps:echo", "--no-access-log")
    yield server
    server.close()


@pytest.fixture(scope="module")
def wsgi_echo() -> Iterator[Server]:
    server = Server("wsgi_apps:echo", "--no-access-log")
    yield server
    server.close()


def app_answers(responses: list[Response]) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in responses if r.header("x-app") == "called"]


def assert_refused(responses: list[Response], closed: bool) -> None:
    """Refused: no app answer, at most one 4xx/5xx, and the connection closed."""
    assert not app_answers(responses), responses
    assert len(responses) <= 1 and all(400 <= r.status < 600 for r in responses), responses
    assert all(r.header("connection") == "close" for r in responses)
    assert closed


def assert_still_serving(server: Server) -> None:
    assert server.proc.poll() is None, server.stderr
    assert httpx.get(server.url + "/alive").status_code == 200


def _decoded_headers(request: dict[str, Any]) -> list[list[str]]:
    return [[name.lower(), value] for name, value in request["headers"]]


def assert_matches(answer: dict[str, Any], request: dict[str, Any]) -> None:
    assert answer["method"] == request["method"]
    assert answer["raw_path"] == request["uri"]["path"]
    assert answer["query_string"] == request["uri"]["query"]
    # Underscored names are dropped (as gunicorn does by default; its 'dangerous' mode keeps them).
    expected_headers = [h for h in _decoded_headers(request) if "_" not in h[0]]
    seen = [h for h in answer["headers"] if h != ["host", "corpus"]]
    assert seen == expected_headers
    assert answer["body"].encode("latin-1") == base64.b64decode(request["body_b64"])


def needs_host(request: dict[str, Any]) -> bool:
    return tuple(request["version"]) == (1, 1) and not any(n.lower() == "host" for n, _ in request["headers"])


def with_host(raw: bytes, requests: list[dict[str, Any]]) -> bytes:
    """Insert `Host: corpus` after the request line of each HTTP/1.1 request that has none."""
    cursor = 0
    for request in requests:
        line = f"{request['method']} {request['uri']['raw']} HTTP/".encode("latin-1")
        start = raw.find(line, cursor)
        assert start >= 0, f"request line {line!r} not found"
        end = raw.index(b"\n", start) + 1
        if needs_host(request):
            raw = raw[:end] + b"Host: corpus\r\n" + raw[end:]
            end += len(b"Host: corpus\r\n")
        cursor = end
    return raw


# llhttp knows a fixed table of methods; a valid token outside it gets 501 Not Implemented.
UNKNOWN_METHOD = {"valid/031", "valid/031compat", "valid/031compat2"}
# llhttp refuses whitespace after ';' in chunk extensions, which RFC 9112 7.1.1 allows (BWS):
# stricter than the RFC, in the safe direction (400, never a misread body).
STRICTER = {"valid/013"}


def check_valid(
    server: Server, entry: dict[str, Any], raw: bytes, strategy: str, lenient: bool, host_added: bool = False,
) -> None:
    responses, closed = exchange(server.port, raw, strategy)
    answers = app_answers(responses)
    if entry["name"] in UNKNOWN_METHOD | STRICTER:
        assert_refused(responses, closed)
        assert responses and responses[0].status in (400, 501)
        return
    if lenient and not answers:
        assert_refused(responses, closed)
        return
    for index, request in enumerate(entry["requests"]):
        if needs_host(request) and not host_added:
            # RFC 9112 3.2: an HTTP/1.1 request without Host is a 400, and the connection closes.
            assert len(answers) == index, responses
            assert responses[index].status == 400 and closed
            return
        assert index < len(answers), f"request {index} was not answered: {responses}"
        assert_matches(answers[index], request)
    assert len(answers) == len(entry["requests"])


ACCEPTED = [e for e in GUNICORN_VALID if e["expect"] in ("accept", "accept_or_reject")]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("entry", ACCEPTED, ids=[e["name"] for e in ACCEPTED])
def test_gunicorn_valid(servers: dict[tuple[str, ...], Server], entry: dict[str, Any], strategy: str) -> None:
    echo = echo_for(servers, limits_of(entry))
    raw = base64.b64decode(entry["raw_b64"])
    lenient = entry["expect"] == "accept_or_reject"
    check_valid(echo, entry, raw, strategy, lenient)
    if any(needs_host(r) for r in entry["requests"]) and entry["name"] not in UNKNOWN_METHOD | STRICTER:
        # The same requests with the Host they lack must be accepted as the corpus describes.
        check_valid(echo, entry, with_host(raw, entry["requests"]), strategy, lenient, host_added=True)
    assert_still_serving(echo)


OTHER_VALID = [e for e in GUNICORN_VALID if e["expect"] not in ("accept", "accept_or_reject")]


@pytest.mark.parametrize("entry", OTHER_VALID, ids=[e["name"] for e in OTHER_VALID])
def test_gunicorn_valid_outside_our_scope_is_answered_or_refused_cleanly(echo: Server, entry: dict[str, Any]) -> None:
    """PROXY protocol and CONNECT are not served: refused cleanly; plain requests among them answered."""
    raw = base64.b64decode(entry["raw_b64"])
    for strategy in STRATEGIES:
        responses, closed = exchange(echo.port, raw, strategy)
        if raw.startswith((b"PROXY", b"\r\n\r\n\x00", b"CONNECT")):
            assert_refused(responses, closed)
        else:
            # An answer that matches, or a clean end: valid/099's body is shorter than its
            # Content-Length, so after our half-close the server closes without answering.
            answers = app_answers(responses)
            for answer, request in zip(answers, entry["requests"], strict=False):
                assert answer["method"] == request["method"]
            assert answers or closed
    assert_still_serving(echo)


def _invalid(expect: str) -> list[dict[str, Any]]:
    return [e for e in GUNICORN_INVALID if e["expect"] == expect]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("entry", _invalid("reject_400_close"), ids=lambda e: e["name"])
def test_gunicorn_invalid_is_refused(echo: Server, entry: dict[str, Any], strategy: str) -> None:
    responses, closed = exchange(echo.port, base64.b64decode(entry["raw_b64"]), strategy)
    assert_refused(responses, closed)
    assert responses, "a malformed request gets an error status, not a silent close"
    assert_still_serving(echo)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    "entry", _invalid("eof_close_no_app") + _invalid("te_http10_reject_or_close"), ids=lambda e: e["name"],
)
def test_gunicorn_truncated_or_http10_chunked_never_reach_the_app(
    echo: Server, wsgi_echo: Server, entry: dict[str, Any], strategy: str,
) -> None:
    for server in (echo, wsgi_echo):
        responses, closed = exchange(server.port, base64.b64decode(entry["raw_b64"]), strategy)
        assert_refused(responses, closed)
        assert_still_serving(server)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("entry", _invalid("reject_or_trailer_not_merged"), ids=lambda e: e["name"])
def test_gunicorn_forbidden_trailers_are_not_merged(echo: Server, entry: dict[str, Any], strategy: str) -> None:
    responses, closed = exchange(echo.port, base64.b64decode(entry["raw_b64"]), strategy)
    answers = app_answers(responses)
    if not answers:
        assert_refused(responses, closed)
    for answer in answers:
        names = [name for name, _ in answer["headers"]]
        assert names.count("host") <= 1 and "content-length" not in names
        assert dict(answer["headers"]).get("host") == "example.com"
        assert answer["body"] == "hello"


LIMIT_ENTRIES = _invalid("skip_limit_policy") + [
    e for e in _invalid("skip_config_dependent") if "limit_request" in "".join(e["gunicorn_cfg"])
]


@pytest.mark.parametrize("entry", LIMIT_ENTRIES, ids=lambda e: e["name"])
def test_gunicorn_limit_entries_are_refused_under_the_same_limits(
    servers: dict[tuple[str, ...], Server], entry: dict[str, Any],
) -> None:
    server = echo_for(servers, limits_of(entry, GUNICORN_LIMITS))
    for strategy in STRATEGIES:
        responses, closed = exchange(server.port, base64.b64decode(entry["raw_b64"]), strategy)
        assert_refused(responses, closed)
        assert responses and responses[0].status in (400, 414, 431)


OTHER_INVALID = [
    e for e in GUNICORN_INVALID
    if e["expect"] in ("skip_gunicorn_specific", "skip_policy") or (
        e["expect"] == "skip_config_dependent" and e not in LIMIT_ENTRIES)
]


@pytest.mark.parametrize("entry", OTHER_INVALID, ids=lambda e: e["name"])
def test_gunicorn_policy_entries_never_smuggle_or_spoof(echo: Server, wsgi_echo: Server, entry: dict[str, Any]) -> None:
    """PROXY lines are refused; headers with underscores never pass as their dashed twins in WSGI."""
    raw = base64.b64decode(entry["raw_b64"])
    # (dashed name, value) of every header sent with '_' in its name, e.g. Transfer_Encoding: tricked
    underscored = {
        (m[1].decode("latin-1").lower().replace("_", "-"), m[2].decode("latin-1"))
        for m in UNDERSCORED_HEADER.finditer(raw)
    }
    for server in (echo, wsgi_echo):
        for strategy in STRATEGIES:
            responses, closed = exchange(server.port, raw, strategy)
            answers = app_answers(responses)
            if raw.startswith(b"PROXY"):
                assert_refused(responses, closed)
            assert len(answers) <= 1
            for answer in answers:
                seen = {(name.replace("_", "-"), value) for name, value in answer["headers"]}
                assert not seen & underscored, f"an underscored header reached the app: {seen & underscored}"
        assert_still_serving(server)


def _llhttp_id(test: dict[str, Any]) -> str:
    return re.sub(r"\W+", "-", test["name"]).strip("-")


PAUSES = (22, 23)  # llhttp pausing on Upgrade/CONNECT/PRI: a policy, not an error


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("test", LLHTTP, ids=_llhttp_id)
def test_llhttp_requests(echo: Server, test: dict[str, Any], strategy: str) -> None:
    raw = base64.b64decode(test["raw_b64"])
    responses, closed = exchange(echo.port, raw, strategy)
    answers = app_answers(responses)
    error = test["llhttp_error"]
    expected = test["messages_complete"]
    if error and error["code"] not in PAUSES:
        # The messages before the error may be answered; the bad one never reaches the app.
        assert len(answers) <= expected, responses
        assert closed
    elif error:
        assert len(answers) <= max(1, expected)
    elif len(answers) < expected:
        # Only a missing Host (RFC 9112 3.2) or asterisk-form outside OPTIONS (3.2.4) may stop a
        # valid sequence early, with a 400.
        assert responses and responses[-1].status == 400 and closed, responses
        refused = raw.lower().split(b"\r\n\r\n")[len(answers)]
        assert b"host:" not in refused or b" * http/" in refused
    else:
        assert len(answers) == expected
    assert_still_serving(echo)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("bug", GARDEN, ids=lambda b: f"garden-{b['id']}")
def test_http_garden_payloads(echo: Server, bug: dict[str, Any], strategy: str) -> None:
    payload = base64.b64decode(bug["payload_b64"])
    responses, closed = exchange(echo.port, payload, strategy)
    answers = app_answers(responses)
    assert all("evil" not in a["raw_path"] and "smuggled" not in a["raw_path"] for a in answers)
    if bug["id"] == 48:
        # Three pipelined requests: ids 0 and 1 answered in order; 1's body holds "GET ... id: 2".
        assert [dict(a["headers"])["id"] for a in answers] == ["0", "1"]
        assert answers[1]["body"].startswith("GET / HTTP/1.1")
    elif bug["id"] == 45:
        # Without Host the request itself is refused; with one, it is answered and the garbage
        # after Connection: close is never read.
        assert_refused(responses, closed)
        responses, closed = exchange(echo.port, payload.replace(b"\r\n", b"\r\nHost: a\r\n", 1), strategy)
        assert len(app_answers(responses)) == 1 and len(responses) == 1 and closed
    else:
        # Each payload hides a second message or is malformed: at most one answer, never two.
        assert len(answers) <= 1, answers
        if not answers:
            assert_refused(responses, closed)
    assert_still_serving(echo)


UNDERSCORED_HEADER = re.compile(  # a header line whose name holds '_': (name, value)
    rb"\n([!#$%&'*+.^`|~0-9A-Za-z-]*_[!#$%&'*+.^_`|~0-9A-Za-z-]*)" rb":[ \t]*([^\r\n]*?)[ \t]*\r"
)
SMUGGLED = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize("gadget", GADGETS, ids=lambda g: g["name"])
def test_smuggler_te_gadgets_never_answer_the_smuggled_request(echo: Server, gadget: dict[str, Any]) -> None:
    line = base64.b64decode(gadget["line_b64"])
    raw = (b"POST / HTTP/1.1\r\nHost: t\r\n" + line + b"\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
           + SMUGGLED)
    for strategy in ("whole", "random"):
        responses, closed = exchange(echo.port, raw, strategy)
        answers = app_answers(responses)
        assert all(a["raw_path"] != "/smuggled" for a in answers), answers
        assert len(answers) <= 1
        if answers:
            assert answers[0]["body"].encode("latin-1") == SMUGGLED  # the body stayed a body
        else:
            assert_refused(responses, closed)
    assert_still_serving(echo)
