"""Reports what the serving process is: pid, parent, ids, umask, title; records where it was imported."""

import json
import os
import time

RECORD = os.environ.get("TEST_RECORD_FILE")


def _record(line: str) -> None:
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(line + "\n")


_record(f"imported-in-{os.getpid()}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        _record("blocking")
        time.sleep(1.5)  # blocks the event loop: connections arriving meanwhile wait in the listen backlog
    with open("/proc/self/cmdline", "rb") as f:
        title = f.read().split(b"\0")[0].decode()
    body = json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(), "gid": os.getgid(),
                       "umask": _umask(), "title": title}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
