"""The command line as users meet it: one clear line and the right exit code for each mistake."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from .conftest import APPS, ROOT


def tricorn(*args: str, cwd: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tricorn", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def error_line(text: str) -> str:
    """The one `Error:` line. A master and its first worker log around it; no other worker tried."""
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text
    assert text.count("Booting worker") <= 1, text
    return errors[0]


def test_missing_module_is_exit_4_with_one_line() -> None:
    for args in ((), ("-w", "1"), ("-w", "3")):
        result = tricorn("nosuchmodule:app", *args)
        assert result.returncode == 4
        assert error_line(result.stderr) == (
            f"Error: could not import module 'nosuchmodule' (from APP 'nosuchmodule:app'): no such module in "
            f"{ROOT} or on sys.path; check the name or pass --app-dir")
    assert result.stderr.strip() != error_line(result.stderr)  # -w 3: a master ran
    assert tricorn("nosuchmodule:app", "-w", "1").stderr.strip() == error_line(result.stderr)


def test_missing_attribute_is_exit_4() -> None:
    result = tricorn("asgi_apps:nope", "--app-dir", str(APPS))
    assert result.returncode == 4
    assert error_line(result.stderr) == "Error: module 'asgi_apps' has no attribute 'nope' (from APP 'asgi_apps:nope')"


def test_import_error_inside_the_app_shows_its_traceback_then_one_line() -> None:
    result = tricorn("broken_import:app", "--app-dir", str(APPS))
    assert result.returncode == 4
    assert "Traceback" in result.stderr and 'broken_import.py", line 1' in result.stderr
    assert error_line(result.stderr) == (
        "Error: importing 'broken_import' failed: No module named 'module_that_does_not_exist' (traceback above)")
    assert "tricorn/cli.py" not in result.stderr


def test_syntax_error_in_the_app() -> None:
    result = tricorn("syntax_error:app", "--app-dir", str(APPS))
    assert result.returncode == 4
    assert "SyntaxError" in error_line(result.stderr)


def test_bad_app_string_and_factory_failure() -> None:
    assert last_line(tricorn("justamodule").stderr) == (
        "Error: APP must look like module:attribute (for example main:app), got 'justamodule'")
    result = tricorn("asgi_apps:broken_factory()", "--app-dir", str(APPS))
    assert result.returncode == 4 and "calling the factory" in error_line(result.stderr)


def test_missing_app() -> None:
    result = tricorn()
    assert result.returncode == 1 and "missing APP" in result.stderr


def test_taken_port_is_one_line_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tricorn("examples.hello:app", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"Error: cannot listen on 127.0.0.1:{port}: address already in use; "
                                     "stop the other server or choose another --bind/--port")


def test_zero_workers_is_one_line_exit_2() -> None:
    result = tricorn("examples.hello:app", "-w", "0")
    assert result.returncode == 2
    assert result.stderr == ("Error: command line --workers: invalid value '0' for workers: expected an integer "
                             "of at least 1\n")


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--workers", "two", "an integer of at least 1"),
    ("--gc-threshold", "x", "an integer of at least 0"),
    ("--max-requests", "1.5", "an integer of at least 0"),
    ("--port", "http", "a port number from 0 to 65535"),
])
def test_a_number_that_is_not_one_says_what_is_expected(flag: str, value: str, expected: str) -> None:
    result = tricorn("examples.hello:app", flag, value)
    name = flag.lstrip("-").replace("-", "_")
    assert result.returncode == 2
    assert result.stderr == f"Error: command line {flag}: invalid value '{value}' for {name}: expected {expected}\n"


def test_bad_bind_address() -> None:
    result = tricorn("examples.hello:app", "--bind", "127.0.0.1:http")
    assert result.returncode == 1 and "the port must be a number" in result.stderr


def test_unknown_flag_suggests_the_right_one() -> None:
    result = tricorn("examples.hello:app", "--keep-alvie", "5")
    assert result.returncode == 2 and "did you mean --keep-alive?" in result.stderr


def test_bad_config_file_key_is_exit_2(tmp_path) -> None:
    (tmp_path / "tricorn.toml").write_text("workerz = 4\n")
    result = tricorn("examples.hello:app", cwd=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"Error: {tmp_path / 'tricorn.toml'}: unknown setting 'workerz'")


def test_check_imports_and_validates_without_serving() -> None:
    result = tricorn("check", "examples.hello:app")
    assert result.returncode == 0
    assert result.stdout.strip() == "OK: examples.hello:app is a asgi3 application and the configuration is valid"
    result = tricorn("check", "examples.hello_wsgi:app", "--keep-alive", "never")
    assert result.returncode == 2 and "keep_alive" in result.stderr


def test_print_config_shows_values_and_origins(tmp_path) -> None:
    (tmp_path / "tricorn.toml").write_text("threads = 6\n")
    result = subprocess.run(
        [sys.executable, "-m", "tricorn", "examples.hello:app", "--print-config", "--keep-alive", "1m"],
        capture_output=True, text=True, cwd=tmp_path, env={"TRICORN_BACKLOG": "100", "PATH": "/usr/bin",
                                                           "PYTHONPATH": str(ROOT)}, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "keep-alive = 60.0  # command line" in lines
    assert "backlog = 100  # env TRICORN_BACKLOG" in lines
    assert f"threads = 6  # {tmp_path / 'tricorn.toml'}" in lines
    assert "# derived: threads = 6 (set; WSGI apps only)" in lines


def test_print_config_derives_workers_from_the_cgroup(tmp_path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text("100000 100000\n")
    (cgroup / "memory.max").write_text("536870912\n")
    env = {"PATH": "/usr/bin", "PYTHONPATH": str(ROOT), "TRICORN_CGROUP_ROOT": str(cgroup)}
    result = subprocess.run([sys.executable, "-m", "tricorn", "examples.hello:app", "--print-config"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30)
    assert result.returncode == 0 and not result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert "workers = unset  # default" in lines
    assert "# derived: workers = 1 (1 CPU from cgroup cpu.max 100000/100000)" in lines
    assert any(line.startswith("# derived: memory limit = 512 MiB (cgroup memory.max)") for line in lines)
    assert "# derived: threads = 5 (1 CPU from cgroup cpu.max 100000/100000, plus 4, at most 32; WSGI apps only)" \
        in lines
    result = subprocess.run([sys.executable, "-m", "tricorn", "examples.hello:app", "--print-config"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=30,
                            env={**env, "WEB_CONCURRENCY": "3"})
    assert "workers = 3  # env WEB_CONCURRENCY" in result.stdout.splitlines()
    assert "# derived: workers = 3 (set)" in result.stdout.splitlines()


def test_help_lists_env_names_and_defaults() -> None:
    result = tricorn("--help")
    assert result.returncode == 0
    assert "--keep-alive DURATION, --timeout-keep-alive DURATION" in result.stdout
    assert "TRICORN_KEEP_ALIVE; default: 5.0" in result.stdout
    assert "--access-log, --no-access-log" in result.stdout


def test_version_names_the_build_that_runs() -> None:
    from tricorn.server import h1

    compiled = not h1.__file__.endswith(".py")
    out = tricorn("--version").stdout
    assert out.startswith("tricorn 0.") and out.strip().endswith(
        "(compiled with mypyc)" if compiled else "(pure Python)"), out
    # CI's second pass, on the mypyc build (.ci/run), says so: a build that silently fell back to the
    # Python source would pass every other test.
    expected = os.environ.get("EXPECT_TRICORN_BUILD")
    if expected is not None:
        assert expected == ("compiled" if compiled else "pure"), f"this run is not on the {expected} build"


def test_pid_file_is_written_and_removed(serve, tmp_path) -> None:
    import httpx

    pidfile = tmp_path / "tricorn.pid"
    for args in ((), ("-w", "2")):
        server = serve("asgi_apps:app", "--pid", str(pidfile), *args)
        assert httpx.get(server.url + "/").status_code == 200
        server.wait_for(pidfile.exists, what="the pid file")
        assert pidfile.read_text().strip() == str(server.proc.pid)
        assert server.stop() == 0
        assert not pidfile.exists()


def test_unwritable_pid_file_is_one_line_before_serving() -> None:
    result = tricorn("examples.hello:app", "--pid", "/nonexistent/dir/tricorn.pid", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: cannot write the pid file /nonexistent/dir/tricorn.pid: No such file or directory; check --pid")
