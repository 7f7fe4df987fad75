"""Apps that `tricorn tune` must refuse to recommend a configuration for, with the reason; and one
that reports the limits it runs under."""

import json
import os


async def failing(scope, receive, send):
    """500 to everything: no configuration meets any error budget."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 500, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"oops\n"})


async def routes(scope, receive, send):
    """Serves / only: a workload on another path is a mistake to report, not to tune."""
    if scope["type"] != "http":
        return
    found = scope["path"] == "/"
    body = b"ok\n" if found else b"not found\n"
    await send({"type": "http.response.start", "status": 200 if found else 404,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _report_limits():
    """Each worker, as it imports the app: its cgroups and the CPUs and memory tricorn sees there."""
    from tricorn.host.resources import cgroup_cpu_quota, effective_cpus, memory_limit

    with open("/proc/self/cgroup") as f:
        cgroups = f.read()
    line = {"pid": os.getpid(), "cgroup": cgroups, "quota": cgroup_cpu_quota(), "cpus": effective_cpus(),
            "memory": memory_limit()}
    with open(os.environ["TEST_RECORD_FILE"], "a") as f:
        f.write(json.dumps(line) + "\n")


async def limited(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})


if os.environ.get("TEST_RECORD_FILE"):
    _report_limits()
