"""Settings written once: parsing, precedence, file formats and error wording."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tricorn.config import Config, describe, duration, load, size
from tricorn.errors import ConfigError


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("2h", 7200.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "-1", "1h 30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        duration(text)


@pytest.mark.parametrize(("text", "count"), [("65536", 65536), ("64k", 65536), ("16m", 16 << 20), ("1g", 1 << 30),
                                             ("64KiB", 65536), ("1.5k", 1536)])
def test_sizes(text: str, count: int) -> None:
    assert size(text) == count


def test_precedence_defaults_file_env_cli(tmp_path: Path) -> None:
    (tmp_path / "tricorn.toml").write_text('keep-alive = "7s"\nthreads = 3\nbackNOT = 1\n'.replace("backNOT = 1\n", "")
                                           + "graceful_timeout = 12\n")
    env = {"TRICORN_THREADS": "5", "TRICORN_ROOT_PATH": "/env"}
    config, sources = load({"root_path": "/cli"}, env, tmp_path)
    assert config.keep_alive == 7.0 and sources["keep_alive"] == f"{tmp_path / 'tricorn.toml'}"
    assert config.graceful_timeout == 12.0
    assert config.threads == 5 and sources["threads"] == "env TRICORN_THREADS"
    assert config.root_path == "/cli" and sources["root_path"] == "command line"
    assert config.backlog == 2048 and sources["backlog"] == "default"


def test_pyproject_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.tricorn]\nbind = ["unix:/tmp/s"]\n')
    config, sources = load({}, {}, tmp_path)
    assert config.listeners() == ("unix:/tmp/s",)
    assert "[tool.tricorn]" in sources["bind"]


def test_unknown_key_names_the_key_and_suggests(tmp_path: Path) -> None:
    (tmp_path / "tricorn.toml").write_text("keep_alvie = 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'keep_alvie'; did you mean 'keep-alive'\?"):
        load({}, {}, tmp_path)


@pytest.mark.parametrize(("source", "pattern"), [
    ({"cli": {"keep_alive": "soon"}}, r"invalid value 'soon' for keep_alive: expected a duration such as 30"),
    ({"env": {"TRICORN_LIFESPAN": "maybe"}},
     r"TRICORN_LIFESPAN: invalid value 'maybe' for lifespan: expected one of auto, on, off"),
    ({"file": "threads = 0\n"}, r"invalid value 0 for threads: expected an integer of at least 1"),
    ({"file": 'access-log = "yes please"\n'}, r"invalid value 'yes please' for access_log: expected true or false"),
])
def test_bad_values_are_one_line_naming_key_and_allowed(tmp_path: Path, source: dict, pattern: str) -> None:
    if "file" in source:
        (tmp_path / "tricorn.toml").write_text(source["file"])
    with pytest.raises(ConfigError, match=pattern) as info:
        load(source.get("cli", {}), source.get("env", {}), tmp_path)
    assert "\n" not in str(info.value)


def test_unknown_env_variable_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config, _ = load({}, {"TRICORN_KEEPALIVE": "3"}, tmp_path)
    assert config.keep_alive == 5.0
    assert "did you mean 'keep-alive'" in caplog.text


def test_the_build_switch_left_in_the_environment_is_not_a_setting(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    load({}, {"TRICORN_MYPYC": "1"}, tmp_path)  # README.md, "A compiled build"
    assert "TRICORN_MYPYC" not in caplog.text


def test_listeners_and_thread_defaults() -> None:
    assert Config().listeners() == ("127.0.0.1:8000",)
    assert Config(host="::1", port=9000).listeners() == ("[::1]:9000",)
    assert Config(bind=("a:1", "b:2"), port=5).listeners() == ("a:1", "b:2")
    threads, why = Config().thread_count()
    assert 5 <= threads <= 32 and "CPUs" in why
    assert Config(threads=3).thread_count() == (3, "set")


def test_describe_shows_every_setting_and_its_origin(tmp_path: Path) -> None:
    config, sources = load({"port": "9000"}, {}, tmp_path)
    text = describe(config, sources)
    assert "port = 9000  # command line" in text
    assert "keep-alive = 5.0  # default" in text
    assert "# derived: threads = " in text


def test_configuration_reference_is_current() -> None:
    from tricorn.config import reference

    docs = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert docs.read_text() == reference(), (
        "regenerate: python -c 'import tricorn.config as c; print(c.reference(), end=\"\")' > docs/configuration.md")


def test_migrating_md_is_current_and_lists_every_gunicorn_and_uvicorn_flag() -> None:
    from tricorn import migration

    docs = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"
    assert docs.read_text() == migration.guide(), (
        "regenerate: python -c 'import tricorn.migration as m; print(m.guide(), end=\"\")' > docs/migrating.md")
    assert "| ? |" not in docs.read_text(), "a flag with no tricorn answer: add it to tricorn/migration.py"

    listed = {flag for spellings in (*migration.GUNICORN_FLAGS, *migration.UVICORN_FLAGS)
              for flag in spellings.split("/")}
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        assert not os.environ.get("CI"), "CI installs gunicorn ('.[dev]')"
        pytest.skip("gunicorn is not installed (pip install -e '.[dev]'); CI runs this check")
    theirs = {flag for setting in KNOWN_SETTINGS for flag in setting.cli or ()}
    help_text = subprocess.run([sys.executable, "-m", "uvicorn", "--help"], capture_output=True, text=True).stdout
    assert "--port" in help_text, "uvicorn is not installed ('.[dev]')"
    for line in help_text.splitlines():
        match = re.match(r"\s+(--[a-z0-9-]+)(?:\s*/\s*(--[a-z0-9-]+))?", line)
        if match:
            theirs |= {flag for flag in match.groups() if flag}
    missing = sorted(theirs - listed - {"--help", "--version"})
    assert not missing, f"gunicorn or uvicorn flags missing from tricorn/migration.py: {missing}"
