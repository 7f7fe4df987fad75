"""--reload: a real file edited under a real watcher; the server restarts, survives a syntax error."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from .test_supervisor import alive

APP = '''
import os

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": b"{version} %d" % os.getpid()}})
'''


def answer(server) -> tuple[str, int]:
    """The version the app says it is, and the pid of the process serving it; ("", 0) when none answers."""
    try:
        version, pid = httpx.get(server.url + "/", timeout=2).text.split()
    except httpx.HTTPError:
        return "", 0
    return version, int(pid)


def test_reload_restarts_on_change_and_survives_a_syntax_error(serve, tmp_path: Path) -> None:
    module = tmp_path / "live_app.py"
    module.write_text(APP.format(version="v1"))
    (tmp_path / "notes.txt").write_text("not watched\n")
    server = serve("live_app:app", "--app-dir", str(tmp_path), "--reload", "--reload-dir", str(tmp_path),
                   "--reload-include", "*.html", "--reload-exclude", "skip_*.py")
    first = server.wait_for(lambda: answer(server)[0] == "v1" and answer(server), what="v1 served")
    assert first[1] != server.proc.pid  # a child serves; the parent only watches

    module.write_text(APP.format(version="v2"))
    second = server.wait_for(lambda: answer(server)[0] == "v2" and answer(server), what="v2 after the edit")
    assert not alive(first[1])
    assert "Changes in" in server.stderr and "live_app.py" in server.stderr

    module.write_text("def broken(:\n")
    server.wait_for(lambda: "waiting for a change to restart it" in server.stderr, what="the import error reported")
    assert "SyntaxError" in server.stderr and server.proc.poll() is None  # the parent waits, it does not exit

    module.write_text(APP.format(version="v3"))
    third = server.wait_for(lambda: answer(server)[0] == "v3" and answer(server), what="v3 after the fix")

    # Ignored: files outside the patterns, and excluded ones; an included glob restarts.
    (tmp_path / "notes.txt").write_text("changed\n")
    (tmp_path / "skip_me.py").write_text("x = 1\n")
    (tmp_path / "page.html").write_text("<p>hi</p>\n")
    fourth = server.wait_for(lambda: answer(server)[1] not in (0, third[1]) and answer(server),
                             what="a restart for the .html change")
    log = server.stderr
    assert "page.html" in log and "notes.txt" not in log and "skip_me.py" not in log

    server.proc.send_signal(signal.SIGHUP)  # a restart by hand
    fifth = server.wait_for(lambda: answer(server)[1] not in (0, fourth[1]) and answer(server),
                            what="a restart on SIGHUP")
    assert server.stop(signal.SIGTERM) == 0
    assert not any(alive(pid) for pid in (second[1], third[1], fourth[1], fifth[1]))


def test_the_child_does_not_outlive_a_killed_reloader(serve, tmp_path: Path) -> None:
    (tmp_path / "live_app.py").write_text(APP.format(version="v1"))
    server = serve("live_app:app", "--app-dir", str(tmp_path), "--reload", "--reload-dir", str(tmp_path))
    child = server.wait_for(lambda: answer(server)[1], what="the child serving")
    server.proc.kill()
    server.wait_for(lambda: not alive(child), what="the child gone with its parent")


def test_reload_with_a_missing_directory_is_one_line(serve, tmp_path: Path) -> None:
    server = serve("process_app:app", "--reload", "--reload-dir", str(tmp_path / "nope"))
    assert server.wait() == 2
    assert server.stderr.strip() == f"Error: --reload-dir {tmp_path / 'nope'} is not a directory"
