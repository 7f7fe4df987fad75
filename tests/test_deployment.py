"""What production deployment needs of the master: worker count from CPUs and memory, log reopening,
--preload, --user/--group, --umask, process titles, systemd sockets and readiness, the listen backlog
on stop, --reuse-port. Real processes, real signals."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tricorn.host.resources import effective_cpus

from .conftest import APPS, ROOT, free_port
from .test_supervisor import alive, booted


def facts(server, path: str = "/") -> dict:
    response = httpx.get(server.url + path, timeout=10)
    assert response.status_code == 200
    return response.json()


def fake_cgroup(tmp_path: Path, cpu_max: str, memory_max: str = "max") -> dict[str, str]:
    """A cgroup v2 directory of fixture files, and the environment that points tricorn at it."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpu.max").write_text(cpu_max + "\n")
    (root / "memory.max").write_text(memory_max + "\n")
    return {"TRICORN_CGROUP_ROOT": str(root)}


def test_default_worker_count_comes_from_the_cpu_quota(serve, tmp_path) -> None:
    server = serve("process_app:app", env=fake_cgroup(tmp_path, "100000 100000"), one_process=False)
    server.wait_for(lambda: "Serving" in server.stderr, what="a worker serving")
    assert "with 1 workers (1 CPU from cgroup cpu.max 100000/100000)" in server.stderr
    worker = facts(server)
    assert worker["ppid"] == server.proc.pid  # under a master even with one CPU: it is restarted if it dies
    os.kill(worker["pid"], signal.SIGKILL)
    server.wait_for(lambda: len(booted(server)) == 2, what="the worker replaced")
    assert facts(server)["pid"] != worker["pid"]
    assert server.stop() == 0


def test_workers_are_lowered_to_fit_the_memory_limit(serve, tmp_path) -> None:
    # 40 MiB: 80% of it holds one worker of this app (some 25-30 MiB of RSS), not two.
    env = fake_cgroup(tmp_path, "max 100000", str(40 * 2**20))
    cpus = effective_cpus()[0]
    server = serve("process_app:app", env=env, one_process=False)
    server.wait_for(lambda: "Serving" in server.stderr, what="a worker serving")
    if cpus > 1:
        server.wait_for(lambda: "Lowering workers" in server.stderr, what="the warning")
        assert re.search(rf"Lowering workers from {cpus} to 1: a worker uses \d+ MiB and 80% of the memory limit "
                         r"\(40 MiB, cgroup memory.max\) holds 1; set --workers to choose", server.stderr)
    else:  # nothing to lower on a one-CPU machine
        assert "Lowering" not in server.stderr
    server.proc.send_signal(signal.SIGTTIN)  # the explicit operator request is obeyed
    server.wait_for(lambda: len(booted(server)) == 2, what="a second worker on TTIN")
    assert server.stop() == 0

    # An explicit --workers is kept, with a warning that says how many would fit.
    server = serve("process_app:app", "-w", "3", "--max-worker-memory", "8m", env=env)
    server.wait_for(lambda: len(booted(server)) == 3, what="three workers")
    assert re.search(r"3 workers of \d+ MiB each do not fit in 80% of the memory limit \(40 MiB, cgroup memory.max\); "
                     r"at most 1 would", server.stderr)
    assert re.search(r"--max-worker-memory 8 MiB is at or below a fresh worker's RSS \(\d+ MiB\)", server.stderr)
    assert server.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_usr1_reopens_moved_log_files(serve, tmp_path, workers: str) -> None:
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    server = serve("process_app:app", "-w", workers, "--access-logfile", str(access), "--error-logfile", str(error))
    server.wait_for(lambda: error.exists() and error.read_text().count("Serving") == int(workers),
                    what="every worker serving")
    for _ in range(4):
        facts(server)
    server.wait_for(lambda: access.read_text().count('"GET / HTTP/1.1" 200') == 4, what="four access log lines")
    access.rename(tmp_path / "access.log.1")  # what logrotate does
    error.rename(tmp_path / "error.log.1")
    server.proc.send_signal(signal.SIGUSR1)
    server.wait_for(lambda: access.exists() and error.exists(), what="the log files reopened")
    for _ in range(3):
        facts(server)
    server.wait_for(lambda: access.read_text().count('"GET / HTTP/1.1" 200') == 3, what="new lines in the new file")
    assert (tmp_path / "access.log.1").read_text().count("GET /") == 4
    assert server.stop() == 0
    assert "Finished server process" in error.read_text()
    assert server.stderr == ""  # everything went to the file


def test_preload_imports_the_app_once_in_the_master(serve) -> None:
    server = serve("process_app:app", "-w", "2", "--preload")
    server.wait_for(lambda: len(booted(server)) == 2 and server.stderr.count("Serving") == 2, what="two workers")
    assert server.records() == [f"imported-in-{server.proc.pid}"]
    assert facts(server)["ppid"] == server.proc.pid
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for(lambda: len(booted(server)) == 4, what="a new generation")
    assert "SIGHUP with --preload" in server.stderr
    assert server.records() == [f"imported-in-{server.proc.pid}"]  # not imported again
    assert server.stop() == 0

    server = serve("process_app:app", "-w", "2")
    server.wait_for(lambda: server.stderr.count("Serving") == 2, what="two workers")
    assert sorted(server.records()) == sorted(f"imported-in-{pid}" for pid in booted(server))


def test_process_titles_and_umask(serve) -> None:
    server = serve("process_app:app", "-w", "2", "--umask", "027")
    server.wait_for(lambda: server.stderr.count("Serving") == 2, what="two workers")
    worker = facts(server)
    assert re.fullmatch(r"tricorn: worker [12] \[process_app:app\]", worker["title"])
    assert worker["umask"] == 0o027
    with open(f"/proc/{server.proc.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"tricorn: master [process_app:app]"
    assert server.stop() == 0


def test_bad_umask_user_and_group_are_one_line_before_serving(serve) -> None:
    cases = [
        (("--umask", "9"), "invalid value '9' for umask: expected an octal mode such as 022 or 0o027"),
        (("--user", "no-such-user-here"), "unknown user 'no-such-user-here'; check --user"),
        (("--group", "no-such-group-here"), "unknown group 'no-such-group-here'; check --group"),
    ]
    for args, message in cases:
        server = serve("process_app:app", "-w", "2", *args)
        assert server.wait() == 2
        assert message in server.stderr and server.stderr.count("\n") == 1, server.stderr


def test_user_and_group_drop_root_in_the_workers(serve) -> None:
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:  # switching needs root: without it, the refusal
        server = serve("process_app:app", "-w", "2", "--user", "nobody")
        assert server.wait() == 2 and "--user/--group need tricorn to be started as root" in server.stderr
        return
    for workers in ("1", "2"):
        server = serve("process_app:app", "-w", workers, "--user", "nobody")
        worker = facts(server)
        assert (worker["uid"], worker["gid"]) == (nobody.pw_uid, nobody.pw_gid)
        assert server.stop() == 0
    server = serve("process_app:app", "-w", "2", "--user", str(nobody.pw_uid), "--group", "0")
    worker = facts(server)
    assert (worker["uid"], worker["gid"]) == (nobody.pw_uid, 0)
    assert os.stat(f"/proc/{server.proc.pid}").st_uid == 0  # the master keeps root, to bind and to signal
    assert server.stop() == 0


def test_systemd_socket_activation_and_notify(tmp_path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    fd = listener.fileno()
    # As systemd starts a service: the socket at fd 3, LISTEN_PID naming the service's own pid.
    argv = [sys.executable, "-m", "tricorn", "process_app:app", "--app-dir", str(APPS), "-w", "2",
            "--bind", "127.0.0.1:1"]  # ignored: systemd's sockets win
    launcher = (f"import os; os.dup2({fd}, 3); os.close({fd}); os.environ['LISTEN_PID'] = str(os.getpid()); "
                f"os.execv({sys.executable!r}, {argv!r})")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "LISTEN_FDS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", launcher], pass_fds=[fd], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE)
    listener.close()
    try:
        assert notify.recv(100) == b"READY=1"  # sent once both workers are ready
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()
        assert response["ppid"] == proc.pid
        proc.send_signal(signal.SIGHUP)
        assert notify.recv(100) == b"RELOADING=1"
        assert notify.recv(100) == b"READY=1"
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(100) == b"STOPPING=1"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        stderr = proc.communicate()[1]
    assert b"Using 1 socket(s) from systemd (LISTEN_FDS)" in stderr


def test_connections_in_the_listen_backlog_are_served_on_stop(serve) -> None:
    """While the loop is blocked, clients queue in the kernel's backlog; a TERM then must not reset them."""
    server = serve("process_app:app", "--no-access-log")
    facts(server)
    results: list[object] = []

    def get(path: str) -> None:
        try:
            results.append(httpx.get(server.url + path, timeout=10).status_code)
        except httpx.HTTPError as exc:
            results.append(exc)

    blocker = threading.Thread(target=get, args=("/block",))
    blocker.start()
    server.wait_for(lambda: "blocking" in server.records(), what="the worker inside the blocking request")
    server.proc.send_signal(signal.SIGTERM)
    queued = [threading.Thread(target=get, args=("/",)) for _ in range(8)]
    for thread in queued:
        thread.start()
    for thread in [blocker, *queued]:
        thread.join(15)
    assert results == [200] * 9, results
    assert server.wait() == 0


def test_reuse_port_lets_two_servers_share_a_port(serve) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = serve("process_app:app", "--bind", f"127.0.0.1:{port}", "--reuse-port", bind=False)
    second = serve("process_app:app", "--bind", f"127.0.0.1:{port}", "--reuse-port", bind=False)
    for server in (first, second):
        server.wait_for(lambda s=server: "Serving" in s.stderr, what="serving")
    third = serve("process_app:app", "--bind", f"127.0.0.1:{port}", bind=False)
    assert third.wait() == 1 and "address already in use" in third.stderr
    pids = {httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()["pid"] for _ in range(40)}
    assert pids <= {first.proc.pid, second.proc.pid}
    for server in (first, second):
        assert server.stop() == 0
        assert not alive(server.proc.pid)



def test_hup_to_a_lone_process_or_to_a_worker_is_harmless(serve) -> None:
    server = serve("process_app:app")
    before = facts(server)["pid"]
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for(lambda: "there is no master to start new workers" in server.stderr, what="the warning")
    assert facts(server)["pid"] == before
    assert server.stop() == 0

    server = serve("process_app:app", "-w", "2")
    server.wait_for(lambda: server.stderr.count("Serving") == 2, what="two workers")
    worker = facts(server)["pid"]
    os.kill(worker, signal.SIGHUP)  # as `pkill -HUP tricorn` would: the master's signal, not the worker's
    server.proc.send_signal(signal.SIGTTIN)  # a later event in the master, to be sure the HUP was handled
    server.wait_for(lambda: len(booted(server)) == 3, what="a third worker")
    assert alive(worker) and "was killed by SIGHUP" not in server.stderr
    assert server.stop() == 0


def test_the_nginx_configuration_in_the_deployment_docs_works(serve, tmp_path) -> None:
    """docs/deployment.md's nginx block, as written (only the ports changed), in front of tricorn."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        assert not os.environ.get("CI"), "CI must have nginx: .ci/run installs it"
        pytest.skip("nginx is not installed (apt-get install nginx-light); CI runs this test")
    docs = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(r"```nginx\n(.*?)```", docs, re.S)[1]
    server = serve("observe_apps:wsgi")
    port = free_port()
    assert "server 127.0.0.1:8000;" in block and "listen 80;" in block
    block = block.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{server.port};")
    block = block.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path}/body;\nproxy_temp_path {tmp_path}/proxy;\n"
        f"{block}\n}}\n")
    checked = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    proxy = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path)])
    try:
        transport = httpx.HTTPTransport(local_address="127.0.0.2")  # a client address nginx alone knows
        with httpx.Client(transport=transport, timeout=10) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    answer = client.get(f"http://127.0.0.1:{port}/whoami", headers={"host": "app.example"})
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.05)
            # The app sees the client behind nginx (X-Forwarded-For from a trusted peer) and its Host.
            assert answer.text == "127.0.0.2 http app.example"
            for _ in range(5):
                assert client.get(f"http://127.0.0.1:{port}/").text == "ok"
    finally:
        proxy.terminate()
        proxy.wait(10)
