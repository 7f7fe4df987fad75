"""Access log: gunicorn's format and atoms, JSON lines, a file, or off; the Python API."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from .conftest import ROOT


def test_default_access_log_line(serve) -> None:
    server = serve("asgi_apps:app")
    httpx.get(server.url + "/echo?x=1", headers={"User-Agent": "tester/1.0", "Referer": "http://ref/"})
    line = server.wait_for(lambda: server.stdout.strip(), what="an access log line")
    size = line.split()[-3]
    assert line.startswith("127.0.0.1 - - [")
    assert line.endswith(f'] "GET /echo?x=1 HTTP/1.1" 200 {size} "http://ref/" "tester/1.0"')
    assert int(size) > 100


def test_custom_format_atoms(serve) -> None:
    fmt = "%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%({x-req}i)s|%({content-type}o)s|%(p)s|%(u)s|%(M)s|%(L)s"
    server = serve("asgi_apps:app", "--access-logformat", fmt)
    httpx.get(server.url + "/empty?a=b", headers={"X-Req": "abc"}, auth=("alice", "pw"))
    fields = server.wait_for(lambda: server.stdout.strip(), what="an access log line").split("|")
    assert fields[:11] == ["GET", "/empty", "a=b", "HTTP/1.1", "200", "0", "-", "abc", "-",
                           f"<{server.proc.pid}>", "alice"]
    assert int(fields[11]) >= 0 and float(fields[12]) >= 0


def test_json_access_log_to_a_file(serve, tmp_path) -> None:
    path = tmp_path / "access.log"
    server = serve("asgi_apps:app", "--access-log-json", "--access-logfile", str(path))
    httpx.post(server.url + "/echo", content=b"x")
    record = json.loads(server.wait_for(lambda: path.exists() and path.read_text().strip(), what="the log file"))
    assert record["method"] == "POST" and record["path"] == "/echo" and record["status"] == 200
    assert record["remote_addr"] == "127.0.0.1" and record["duration_ms"] >= 0
    assert server.stdout == ""


def test_no_access_log(serve) -> None:
    server = serve("asgi_apps:app", "--no-access-log")
    httpx.get(server.url + "/")
    server.stop()
    assert server.stdout == ""


def test_python_api_run() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (f"import sys, tricorn; sys.exit(tricorn.run('examples.hello:app', bind=['fd://{listener.fileno()}'],"
                " access_log=False))")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, pass_fds=[listener.fileno()],
                                stderr=subprocess.DEVNULL)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "Hello, world!\n"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
