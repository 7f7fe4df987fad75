"""Every setting, written once.

A setting is a field of the frozen `Config` dataclass whose metadata names its flags, help and
parser. From that one declaration come the CLI flags (cli.py), the `TRICORN_<NAME>` environment
variable, the key in `tricorn.toml` or `[tool.tricorn]` in pyproject.toml (dashes or underscores),
`--print-config` and the configuration reference. Precedence: defaults < file < env < CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .host.resources import effective_cpus, memory_limit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "TRICORN_"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """Seconds from `30`, `30s`, `500ms`, `5m`, `1h30m`."""
    text = text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        if not text or _DURATION_PART.sub("", text):
            raise ValueError("a duration such as 30, 30s, 500ms, 5m or 1h30m") from None
        value = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    if value < 0:
        raise ValueError("a duration that is not negative")
    return value


def size(text: str) -> int:
    """Bytes from `65536`, `64k`, `16m`, `1g` (binary units; `kb`, `KiB` accepted)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError("a size such as 65536, 64k, 16m or 1g")
    return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def positive_int(text: str) -> int:
    return _int_from(text, 1)


def non_negative_int(text: str) -> int:
    return _int_from(text, 0)


def _int_from(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1  # not a number: the same message as one too small
    if value < least:
        raise ValueError(f"an integer of at least {least}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise ValueError("a port number from 0 to 65535")
    return value


def octal(text: str) -> int:
    try:
        value = int(text, 0) if text.lower().startswith(("0o", "0x", "0b")) else int(text, 8)
    except ValueError:
        raise ValueError("an octal mode such as 022 or 0o027") from None
    if not 0 <= value <= 0o777:
        raise ValueError("an octal mode from 000 to 777")
    return value


def word_list(text: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[,\s]+", text) if part)


@dataclass(frozen=True)
class Meta:
    flags: tuple[str, ...]
    help: str
    parse: Callable[[str], Any]
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    repeatable: bool = False
    is_bool: bool = False
    render: Callable[[Any], str] | None = None  # how --print-config and the docs show a value


def setting(
    default: Any,
    *flags: str,
    help: str,
    parse: Callable[[str], Any] = str,
    choices: tuple[str, ...] = (),
    metavar: str | None = None,
    render: Callable[[Any], str] | None = None,
) -> Any:
    is_bool = parse is boolean
    repeatable = isinstance(default, tuple)
    if choices:
        parse = _choice_parser(choices)
    meta = Meta(flags, help, parse, choices, metavar, repeatable, is_bool, render)
    return field(default=default, metadata={"setting": meta})


def _choice_parser(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return text

    return parse


DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


@dataclass(frozen=True)
class Config:
    """The merged configuration of one tricorn run. Build it with `load()`."""

    app: str | None = setting(None, help="the application, as module:attribute or module:factory()")
    config: str | None = setting(
        None, "-c", "--config", metavar="FILE",
        help="config file (default: ./tricorn.toml, else [tool.tricorn] in ./pyproject.toml)",
    )
    factory: bool = setting(False, "--factory", parse=boolean, help="APP is a factory: call it to get the app")
    app_dir: str = setting(".", "--app-dir", metavar="DIR", help="directory put first on sys.path to import APP")
    interface: str = setting(
        "auto", "--interface", choices=("auto", "asgi3", "asgi2", "wsgi"),
        help="application interface; auto detects it from the callable",
    )
    bind: tuple[str, ...] = setting(
        (), "-b", "--bind", parse=word_list, metavar="ADDRESS",
        help="listen on HOST:PORT, [::1]:PORT, unix:/path or fd://N; repeatable (default 127.0.0.1:8000)",
    )
    host: str | None = setting(None, "--host", help="shortcut for --bind HOST:PORT (with --port)")
    port: int | None = setting(None, "--port", parse=port_number, help="shortcut for --bind HOST:PORT (with --host)")
    workers: int | None = setting(
        None, "-w", "--workers", parse=positive_int, metavar="N",
        help="worker processes under a master (default: one per effective CPU, lowered to fit the memory "
        "limit); -w 1 serves in one process, without a master; WEB_CONCURRENCY is honoured as in gunicorn",
    )
    timeout: float = setting(
        30.0, "-t", "--timeout", parse=duration, metavar="DURATION",
        help="kill a worker whose event loop (or every WSGI thread) is stuck this long, logging its stacks",
    )
    max_requests: int = setting(
        0, "--max-requests", "--limit-max-requests", parse=non_negative_int, metavar="N",
        help="replace a worker after it served this many requests (its successor starts first); 0 is off",
    )
    max_requests_jitter: int = setting(
        0, "--max-requests-jitter", "--limit-max-requests-jitter", parse=non_negative_int, metavar="N",
        help="add a random 0..N to each worker's --max-requests, so workers do not restart together",
    )
    pid: str | None = setting(
        None, "-p", "--pid", metavar="FILE", help="write the serving (or master) process id to FILE; removed at exit",
    )
    max_worker_memory: int = setting(
        0, "--max-worker-memory", parse=size, metavar="SIZE",
        help="replace a worker whose RSS passes SIZE (checked each heartbeat; its successor starts first); 0 is off",
    )
    max_worker_lifetime: float = setting(
        0.0, "--max-worker-lifetime", parse=duration, metavar="DURATION",
        help="replace a worker after this long (with up to 10%% jitter; its successor starts first); 0 is off",
    )
    gc_threshold: int = setting(
        10_000, "--gc-threshold", parse=non_negative_int, metavar="N",
        help="collect cyclic garbage after N new objects (Python's default is 700, costly with many requests "
        "in flight), and freeze what exists once the app has loaded; 0 leaves Python's collector as it is",
    )
    preload: bool = setting(
        False, "--preload", parse=boolean,
        help="import the app in the master before forking (workers share its memory copy-on-write); "
        "HUP then restarts workers without loading new code",
    )
    reuse_port: bool = setting(
        False, "--reuse-port", parse=boolean, help="set SO_REUSEPORT on TCP listeners",
    )
    user: str | None = setting(
        None, "-u", "--user", metavar="USER", help="when started as root, run workers as this user (name or uid)",
    )
    group: str | None = setting(
        None, "-g", "--group", metavar="GROUP",
        help="when started as root, run workers as this group (name or gid; default: the user's group)",
    )
    umask: int = setting(
        0o22, "-m", "--umask", parse=octal, metavar="MODE", render=lambda mode: f'"{mode:03o}"',
        help="file mode creation mask, in octal",
    )
    reload: bool = setting(
        False, "--reload", parse=boolean,
        help="development: restart when a watched file changes; an import error waits for the next change",
    )
    reload_dir: tuple[str, ...] = setting(
        (), "--reload-dir", parse=word_list, metavar="DIR", help="directories to watch (default: the current one)",
    )
    reload_include: tuple[str, ...] = setting(
        (), "--reload-include", parse=word_list, metavar="GLOB",
        help="also restart on changes to files matching these globs (*.py always)",
    )
    reload_exclude: tuple[str, ...] = setting(
        (), "--reload-exclude", parse=word_list, metavar="GLOB", help="ignore changes to files matching these globs",
    )
    certfile: str | None = setting(
        None, "--certfile", "--ssl-certfile", metavar="FILE", help="serve HTTPS with this certificate (PEM)",
    )
    keyfile: str | None = setting(
        None, "--keyfile", "--ssl-keyfile", metavar="FILE", help="the certificate's private key (PEM)",
    )
    keyfile_password: str | None = setting(
        None, "--keyfile-password", "--ssl-keyfile-password", metavar="PASSWORD",
        help="password of an encrypted --keyfile",
    )
    ca_certs: str | None = setting(
        None, "--ca-certs", "--ssl-ca-certs", metavar="FILE",
        help="CA certificates that client certificates must chain to",
    )
    cert_reqs: str = setting(
        "none", "--cert-reqs", "--ssl-cert-reqs", choices=("none", "optional", "required"),
        help="client certificates: none asked, optional (verified if sent), required",
    )
    ciphers: str | None = setting(
        None, "--ciphers", "--ssl-ciphers", metavar="CIPHERS",
        help="OpenSSL cipher list for TLS 1.2 (default: OpenSSL's); TLS 1.2 is the minimum version",
    )
    ws: str = setting(
        "auto", "--ws", choices=("auto", "websockets", "none"),
        help="WebSocket support for ASGI apps (the websockets package's protocol); none passes upgrade "
        "requests to the app as plain HTTP",
    )
    ws_max_size: int = setting(
        16 * 2**20, "--ws-max-size", parse=size, metavar="SIZE",
        help="largest WebSocket message accepted; a bigger one closes the connection with 1009",
    )
    ws_ping_interval: float = setting(
        20.0, "--ws-ping-interval", parse=duration, metavar="DURATION",
        help="ping an open WebSocket this often; 0 is off",
    )
    ws_ping_timeout: float = setting(
        20.0, "--ws-ping-timeout", parse=duration, metavar="DURATION",
        help="close a WebSocket (1011) whose peer has not answered a ping this long",
    )
    ws_per_message_deflate: bool = setting(
        True, "--ws-per-message-deflate", parse=boolean,
        help="compress WebSocket messages when the client offers permessage-deflate",
    )
    backlog: int = setting(2048, "--backlog", parse=positive_int, help="listen() backlog of each listener")
    threads: int | None = setting(
        None, "--threads", parse=positive_int,
        help="WSGI threads running the app, per worker (default: effective CPUs + 4, at most 32)",
    )
    keep_alive: float = setting(
        5.0, "--keep-alive", "--timeout-keep-alive", parse=duration, metavar="DURATION",
        help="close a keep-alive connection idle this long",
    )
    timeout_header: float = setting(
        10.0, "--timeout-header", parse=duration, metavar="DURATION",
        help="close a connection whose request head has not fully arrived this long after it was "
        "accepted or after its previous response",
    )
    timeout_body: float = setting(
        30.0, "--timeout-body", parse=duration, metavar="DURATION",
        help="answer 408 and close when a request body the server is waiting for brings no new byte "
        "this long (0 is off)",
    )
    graceful_timeout: float = setting(
        30.0, "--graceful-timeout", "--timeout-graceful-shutdown", parse=duration, metavar="DURATION",
        help="on shutdown, wait this long for in-flight requests to finish",
    )
    limit_request_line: int = setting(
        8190, "--limit-request-line", parse=positive_int, metavar="BYTES",
        help="longest request target accepted, else 414",
    )
    limit_request_fields: int = setting(
        100, "--limit-request-fields", parse=positive_int, metavar="N",
        help="most header fields in a request, else 431",
    )
    limit_request_field_size: int = setting(
        8190, "--limit-request-field-size", "--limit-request-field_size", parse=positive_int, metavar="BYTES",
        help="largest header field line (name, colon, value, CRLF: as gunicorn counts), else 431",
    )
    limit_request_head: int = setting(
        65536, "--limit-request-head", parse=size, metavar="SIZE",
        help="largest request head (request line and all headers), else 431",
    )
    limit_request_body: int = setting(
        0, "--limit-request-body", parse=size, metavar="SIZE",
        help="largest request body, else 413; 0 means no limit",
    )
    limit_concurrency: int | None = setting(
        None, "--limit-concurrency", parse=positive_int, metavar="N",
        help="most requests in progress at once; beyond it answer 503",
    )
    root_path: str = setting(
        "", "--root-path", metavar="PATH", help="mount path of the app (ASGI root_path, WSGI SCRIPT_NAME)",
    )
    lifespan: str = setting("auto", "--lifespan", choices=("auto", "on", "off"), help="ASGI lifespan protocol")
    loop: str = setting("auto", "--loop", choices=("auto", "uvloop", "asyncio"), help="event loop implementation")
    log_level: str = setting(
        "info", "--log-level", choices=("critical", "error", "warning", "info", "debug"), help="error log level",
    )
    error_logfile: str = setting(
        "-", "--error-logfile", "--log-file", metavar="FILE", help="error log destination; - is stderr",
    )
    access_log: bool = setting(True, "--access-log", parse=boolean, help="write an access log line per request")
    access_logfile: str = setting("-", "--access-logfile", metavar="FILE", help="access log destination; - is stdout")
    access_logformat: str = setting(
        DEFAULT_ACCESS_LOG_FORMAT, "--access-logformat", metavar="FORMAT",
        help="access log format with gunicorn's atoms: h l u t r m U q H s B b f a T M D L p {header}i {header}o",
    )
    access_log_json: bool = setting(False, "--access-log-json", parse=boolean, help="write access log lines as JSON")
    proxy_headers: bool = setting(
        True, "--proxy-headers", parse=boolean,
        help="believe X-Forwarded-For and X-Forwarded-Proto from --forwarded-allow-ips peers (as uvicorn)",
    )
    forwarded_allow_ips: tuple[str, ...] = setting(
        ("127.0.0.1", "::1"), "--forwarded-allow-ips", parse=word_list, metavar="IPS",
        help="peers trusted for proxy headers: addresses, networks (10.0.0.0/8) or *; comma-separated",
    )
    server_header: bool = setting(True, "--server-header", parse=boolean, help="send a Server: tricorn header")
    date_header: bool = setting(True, "--date-header", parse=boolean, help="send a Date header")
    metrics_bind: str | None = setting(
        None, "--metrics-bind", metavar="ADDRESS",
        help="serve Prometheus metrics of all workers at http://ADDRESS/metrics from the master (HOST:PORT or "
        "unix:/path); off by default",
    )
    block_warn: float = setting(
        0.2, "--block-warn", parse=duration, metavar="DURATION",
        help="log the stack of whatever holds a worker's event loop this long, once per block (0 is off)",
    )
    slow_request: float = setting(
        0.0, "--slow-request", parse=duration, metavar="DURATION",
        help="log the stack of a request still running this long, once (0 is off)",
    )
    request_timeout: float = setting(
        0.0, "--request-timeout", parse=duration, metavar="DURATION",
        help="answer 504 to a request still running this long (ASGI: the app is cancelled; WSGI: its thread "
        "is abandoned); 0 is off",
    )
    control_socket: str | None = setting(
        None, "--control-socket", metavar="PATH",
        help="unix socket the master answers `tricorn ctl` on (default: beside --pid, named like it with "
        "the suffix .ctl; off without --pid)",
    )

    def listeners(self) -> tuple[str, ...]:
        """The addresses to listen on: --bind, else --host/--port, else 127.0.0.1:8000."""
        if self.bind:
            return self.bind
        host = self.host or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return (f"{host}:{8000 if self.port is None else self.port}",)

    def control_path(self) -> str | None:
        """Where the master answers `tricorn ctl`: --control-socket, else beside the pid file."""
        if self.control_socket is not None:
            return self.control_socket or None
        if self.pid:
            base, ext = os.path.splitext(self.pid)
            return (base if ext == ".pid" else self.pid) + ".ctl"
        return None

    def worker_count(self) -> tuple[int, str]:
        """Worker processes and why that many."""
        if self.workers is not None:
            return self.workers, "set"
        return effective_cpus()

    def thread_count(self) -> tuple[int, str]:
        """WSGI threads and why that many."""
        if self.threads is not None:
            return self.threads, "set"
        cpus, why = effective_cpus()
        return default_threads(cpus), f"{why}, plus 4, at most 32"


def default_threads(cpus: int) -> int:
    """WSGI threads per worker when not set: enough to overlap I/O waits on `cpus` CPUs."""
    return min(32, cpus + 4)


SETTINGS: dict[str, Meta] = {f.name: f.metadata["setting"] for f in dataclasses.fields(Config)}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Config)}
# app is the positional argument, config chooses the file: neither belongs in a config file.
FILE_KEYS = {name for name in SETTINGS if name not in ("app", "config")}


# TRICORN_* variables that are not settings: TRICORN_CGROUP_ROOT (host/resources.py), TRICORN_RELOADER_CHILD,
# TRICORN_MYPYC (the build's, setup.py: left set in an environment that built tricorn).
NOT_SETTINGS = {"cgroup_root", "reloader_child", "mypyc"}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse(name: str, raw: Any, origin: str) -> Any:
    meta = SETTINGS[name]
    original = raw
    try:
        if meta.repeatable:
            items = [raw] if isinstance(raw, str) else raw
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise ValueError("a list of strings")
            return tuple(part for item in items for part in word_list(item))
        if isinstance(raw, bool):
            if not meta.is_bool:
                raise ValueError(_expectation(meta))
            return raw
        if isinstance(raw, (int, float)) and meta.parse is not str:
            raw = str(raw)
        if not isinstance(raw, str):
            raise ValueError(_expectation(meta))
        return meta.parse(raw)
    except ValueError as exc:
        shown = repr(original) if isinstance(original, str) else str(original).lower()
        raise ConfigError(f"{origin}: invalid value {shown} for {name}: expected {exc}") from None


def _expectation(meta: Meta) -> str:
    return "true or false" if meta.is_bool else "a string"


def find_config_file(explicit: str | None, cwd: Path) -> tuple[Path, dict[str, Any]] | None:
    """The config file in effect and its tricorn table, or None."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {explicit} not found; check --config / {env_name('config')}")
        return path, _read_table(path)
    for candidate in (cwd / "tricorn.toml", cwd / "pyproject.toml"):
        if candidate.is_file():
            table = _read_table(candidate)
            if candidate.name == "tricorn.toml" or table:
                return candidate, table
    return None


def _read_table(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if path.name == "pyproject.toml":
        table = document.get("tool", {}).get("tricorn", {})
        return table if isinstance(table, dict) else {}
    return document


def unknown_key_message(key: str, origin: str) -> str:
    known = sorted(k.replace("_", "-") for k in FILE_KEYS)
    close = difflib.get_close_matches(key.replace("_", "-"), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "see `tricorn --help` for the settings"
    return f"{origin}: unknown setting {key!r}; {hint}"


def load(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[Config, dict[str, str]]:
    """Merge defaults < config file < TRICORN_* env < CLI; return the config and each value's origin.

    `cli` holds only what was given on the command line, as strings or lists of strings
    (booleans as bool): cli.py parses with defaults suppressed.
    """
    cli = dict(cli or {})
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    values: dict[str, Any] = dict(DEFAULTS)
    sources = {name: "default" for name in values}

    explicit = cli.get("config") or environ.get(env_name("config"))
    found = find_config_file(explicit, cwd)
    if found:
        path, table = found
        origin = str(path) if path.name == "tricorn.toml" else f"{path} [tool.tricorn]"
        for key, raw in table.items():
            name = key.replace("-", "_")
            if name not in FILE_KEYS:
                raise ConfigError(unknown_key_message(key, origin))
            values[name] = _parse(name, raw, origin)
            sources[name] = origin

    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in SETTINGS or name == "app":
            if name in NOT_SETTINGS:
                continue
            # Unlike a config file, the environment holds other programs' variables too: warn only.
            message = unknown_key_message(name, f"environment variable {key}")
            logging.getLogger("tricorn.error").warning(message)
            continue
        values[name] = _parse(name, raw, f"environment variable {key}")
        sources[name] = f"env {key}"

    if sources["workers"] == "default" and environ.get("WEB_CONCURRENCY"):
        values["workers"] = _parse("workers", environ["WEB_CONCURRENCY"], "environment variable WEB_CONCURRENCY")
        sources["workers"] = "env WEB_CONCURRENCY"

    for name, raw in cli.items():
        flag = next((f for f in SETTINGS[name].flags if f.startswith("--")), "APP")  # the long name, not an alias
        values[name] = _parse(name, raw, f"command line {flag}")
        sources[name] = "command line"

    return Config(**values), sources


def describe(config: Config, sources: Mapping[str, str]) -> str:
    """`--print-config`: each setting as TOML with where its value came from."""
    lines = []
    for name in SETTINGS:
        shown = _show(name, getattr(config, name))
        lines.append(f"{name.replace('_', '-')} = {shown}  # {sources.get(name, 'default')}")
    workers, workers_why = config.worker_count()
    threads, threads_why = config.thread_count()
    memory, memory_why = memory_limit()
    lines.append(f"# derived: listeners = {_toml(config.listeners())}")
    lines.append(f"# derived: workers = {workers} ({workers_why})")
    if config.workers is None:
        lines.append(f"# derived: memory limit = {memory / 2**20:.0f} MiB ({memory_why}); once the first worker "
                     "is ready, fewer workers are started if they would not all fit in 80% of it")
    lines.append(f"# derived: threads = {threads} ({threads_why}; WSGI apps only)")
    return "\n".join(lines)


def default_text(name: str) -> str:
    """A setting's default as --help and the reference show it."""
    default = DEFAULTS[name]
    return "auto" if default is None else ("none" if default == () else _show(name, default))


def _show(name: str, value: Any) -> str:
    render = SETTINGS[name].render
    return render(value) if render is not None and value is not None else _toml(value)


def _toml(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def reference() -> str:
    """docs/configuration.md, generated by `python -c 'import tricorn.config as c; print(c.reference(), end="")'`."""
    rows = [
        "# Configuration reference",
        "",
        "Generated from `tricorn/config.py` (`reference()`); a test keeps it current.",
        "Each setting comes from, in rising precedence: its default, `tricorn.toml` (or `[tool.tricorn]`",
        "in `pyproject.toml`; keys with dashes or underscores), the environment variable, the flag.",
        "Durations: `30`, `30s`, `500ms`, `5m`, `1h30m`. Sizes: `65536`, `64k`, `16m`, `1g`.",
        "",
        "| setting (file key) | flags | environment | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, meta in SETTINGS.items():
        if not meta.flags:
            continue
        shown = default_text(name)
        flags = ", ".join(f"`{f}`" for f in meta.flags)
        if meta.is_bool:
            flags += f", `--no-{meta.flags[-1][2:]}`"
        choices = f" ({' / '.join(meta.choices)})" if meta.choices else ""
        key = name.replace("_", "-") if name in FILE_KEYS else "—"
        text = meta.help.replace("|", "\\|")
        rows.append(f"| `{key}` | {flags} | `{env_name(name)}` | `{shown}` | {text}{choices} |")
    return "\n".join(rows) + "\n"
