"""docs/migrating.md: every gunicorn and uvicorn flag, and what to write for tricorn. Flags tricorn
spells the same way (config.py's flags and their aliases) are found, not listed; the tables below
hold the rest. tests/test_config.py checks the page is current and that no flag of the installed
gunicorn and uvicorn is missing."""

from __future__ import annotations

from .config import SETTINGS

# Their flags, as gunicorn 25's settings and uvicorn 0.3x's --help list them (short/long spellings).
GUNICORN_FLAGS = (
    "-c/--config", "-b/--bind", "--backlog", "-w/--workers", "-k/--worker-class", "--threads",
    "--worker-connections", "--max-requests", "--max-requests-jitter", "-t/--timeout", "--graceful-timeout",
    "--keep-alive", "--limit-request-line", "--limit-request-fields", "--limit-request-field_size",
    "--reload", "--reload-engine", "--reload-extra-file", "--spew", "--check-config", "--print-config",
    "--preload", "--no-sendfile", "--reuse-port", "--chdir", "-D/--daemon", "-e/--env", "-p/--pid",
    "--worker-tmp-dir", "-u/--user", "-g/--group", "-m/--umask", "--initgroups", "--forwarded-allow-ips",
    "--access-logfile", "--disable-redirect-access-to-syslog", "--access-logformat",
    "--error-logfile/--log-file", "--log-level", "--capture-output", "--logger-class", "--log-config",
    "--log-config-json", "--log-syslog-to", "--log-syslog", "--log-syslog-prefix", "--log-syslog-facility",
    "-R/--enable-stdio-inheritance", "--statsd-host", "--dogstatsd-tags", "--statsd-prefix",
    "--enable-backlog-metric", "-n/--name", "--pythonpath", "--paste/--paster", "--proxy-protocol",
    "--proxy-allow-from", "--protocol", "--uwsgi-allow-from", "--keyfile", "--certfile", "--ssl-version",
    "--cert-reqs", "--ca-certs", "--suppress-ragged-eofs", "--do-handshake-on-connect", "--ciphers",
    "--http-protocols", "--http2-cleartext", "--http2-max-concurrent-streams", "--http2-initial-window-size",
    "--http2-max-frame-size", "--http2-max-header-list-size", "--paste-global", "--permit-obsolete-folding",
    "--strip-header-spaces", "--permit-unconventional-http-method", "--permit-unconventional-http-version",
    "--casefold-http-method", "--forwarder-headers", "--header-map", "--asgi-loop", "--asgi-lifespan",
    "--asgi-disconnect-grace-period", "--websocket-max-message-size", "--http-parser", "--root-path",
    "--dirty-app", "--dirty-workers", "--dirty-timeout", "--dirty-threads", "--dirty-graceful-timeout",
    "--control-socket", "--control-socket-mode", "--no-control-socket",
)
UVICORN_FLAGS = (
    "--host", "--port", "--uds", "--fd", "--reload", "--reload-dir", "--reload-include", "--reload-exclude",
    "--reload-delay", "--workers", "--loop", "--http", "--http2", "--ws", "--ws-max-size", "--ws-max-queue",
    "--ws-ping-interval", "--ws-ping-timeout", "--ws-per-message-deflate", "--lifespan", "--interface",
    "--env-file", "--log-config", "--log-level", "--access-log/--no-access-log",
    "--use-colors/--no-use-colors", "--proxy-headers/--no-proxy-headers",
    "--server-header/--no-server-header", "--date-header/--no-date-header", "--forwarded-allow-ips",
    "--root-path", "--limit-concurrency", "--backlog", "--limit-max-requests", "--limit-max-requests-jitter",
    "--timeout-keep-alive", "--timeout-graceful-shutdown", "--timeout-worker-healthcheck", "--ssl-keyfile",
    "--ssl-certfile", "--ssl-keyfile-password", "--ssl-version", "--ssl-cert-reqs", "--ssl-ca-certs",
    "--ssl-ciphers", "--header", "--app-dir", "--h11-max-incomplete-event-size", "--reset-contextvars",
    "--factory",
)

# long flag → (tricorn's way, or "" when there is none; why, or what to do instead)
GUNICORN: dict[str, tuple[str, str]] = {
    "--worker-class": ("", "the app's interface is detected (WSGI, ASGI 3, ASGI 2; `--interface` to force it); "
                       "every worker runs an event loop, WSGI apps on `--threads`"),
    "--worker-connections": ("--limit-concurrency", "requests in progress per worker, beyond which 503"),
    "--reload-engine": ("", "`--reload` uses watchfiles"),
    "--reload-extra-file": ("--reload-include", "a glob of files to watch besides *.py"),
    "--spew": ("", "use a debugger or `tricorn ctl stacks`"),
    "--check-config": ("tricorn check APP", "imports the app and validates the configuration"),
    "--no-sendfile": ("", "sendfile is used for `wsgi.file_wrapper` responses on plain TCP, never on TLS"),
    "--chdir": ("--app-dir", "the directory put first on sys.path (the working directory is not changed)"),
    "--daemon": ("", "run under systemd, Docker or a process manager (docs/deployment.md)"),
    "--env": ("", "set the variables in the environment of the tricorn process"),
    "--worker-tmp-dir": ("", "heartbeats are in shared memory: no files"),
    "--initgroups": ("", "`--user` switches workers to that user's groups"),
    "--disable-redirect-access-to-syslog": ("", "no syslog output"),
    "--capture-output": ("", "the workers' stdout and stderr are the master's"),
    "--logger-class": ("", "configure the `tricorn.error` and `tricorn.access` loggers"),
    "--log-config": ("", "configure the `tricorn.error` logger from Python, or use --error-logfile"),
    "--log-config-json": ("", "as --log-config"),
    "--log-config-dict": ("", "as --log-config"),
    "--log-syslog-to": ("", "no syslog output: log to stderr and let journald or Docker collect it"),
    "--log-syslog": ("", "as --log-syslog-to"),
    "--log-syslog-prefix": ("", "as --log-syslog-to"),
    "--log-syslog-facility": ("", "as --log-syslog-to"),
    "--enable-stdio-inheritance": ("", "stdio is always inherited"),
    "--statsd-host": ("--metrics-bind", "Prometheus metrics from the master (docs/observability.md)"),
    "--dogstatsd-tags": ("--metrics-bind", "as --statsd-host"),
    "--statsd-prefix": ("--metrics-bind", "as --statsd-host; metric names start with tricorn_"),
    "--enable-backlog-metric": ("--metrics-bind", "tricorn_queue_wait_seconds: the wait for a WSGI thread"),
    "--name": ("", "process titles are `tricorn: master [APP]` and `tricorn: worker N [APP]`"),
    "--pythonpath": ("--app-dir", "one directory"),
    "--paste": ("", "PasteDeploy is not supported: load the app in a module"),
    "--paster": ("", "as --paste"),
    "--paste-global": ("", "as --paste"),
    "--proxy-protocol": ("", "the PROXY protocol is not supported: use X-Forwarded-For (--forwarded-allow-ips)"),
    "--proxy-allow-from": ("--forwarded-allow-ips", "the peers whose X-Forwarded-* headers are believed"),
    "--protocol": ("", "HTTP only (no uwsgi protocol)"),
    "--uwsgi-allow-from": ("", "as --protocol"),
    "--ssl-version": ("", "TLS 1.2 or newer, always"),
    "--suppress-ragged-eofs": ("", "always"),
    "--do-handshake-on-connect": ("", "the handshake runs on accept, within --timeout-header"),
    "--http-protocols": ("", "HTTP/1.1 and WebSocket (HTTP/2 is not supported yet)"),
    "--http2-cleartext": ("", "as --http-protocols"),
    "--http2-max-concurrent-streams": ("", "as --http-protocols"),
    "--http2-initial-window-size": ("", "as --http-protocols"),
    "--http2-max-frame-size": ("", "as --http-protocols"),
    "--http2-max-header-list-size": ("", "as --http-protocols"),
    "--permit-obsolete-folding": ("", "obsolete line folding is refused with 400, as RFC 9112 allows"),
    "--strip-header-spaces": ("", "a space before a header's colon is refused with 400 (RFC 9112)"),
    "--permit-unconventional-http-method": ("", "methods are any RFC 9110 token"),
    "--permit-unconventional-http-version": ("", "HTTP/1.0 and HTTP/1.1 only"),
    "--casefold-http-method": ("", "methods are case-sensitive (RFC 9110)"),
    "--forwarder-headers": ("--proxy-headers", "X-Forwarded-For and X-Forwarded-Proto"),
    "--header-map": ("", "headers with underscores are dropped from the WSGI environ, as gunicorn's default"),
    "--asgi-loop": ("--loop", "auto, uvloop or asyncio"),
    "--asgi-lifespan": ("--lifespan", "auto, on or off"),
    "--asgi-disconnect-grace-period": ("", "the app hears `http.disconnect` when the client goes"),
    "--websocket-max-message-size": ("--ws-max-size", "bytes"),
    "--http-parser": ("", "tricorn's own strict parser"),
    "--dirty-app": ("", "no separate worker pool for blocking apps: WSGI threads stand aside while they wait"),
    "--dirty-workers": ("", "as --dirty-app"),
    "--dirty-timeout": ("", "as --dirty-app"),
    "--dirty-threads": ("", "as --dirty-app"),
    "--dirty-graceful-timeout": ("", "as --dirty-app"),
    "--control-socket-mode": ("", "the control socket is always 0600, its user only"),
    "--no-control-socket": ("", "there is none without --pid or --control-socket"),
}

UVICORN: dict[str, tuple[str, str]] = {
    "--uds": ("--bind unix:PATH", ""),
    "--fd": ("--bind fd://N", ""),
    "--reload-delay": ("", "changes are batched by watchfiles"),
    "--http": ("", "tricorn's own strict HTTP/1.1 parser"),
    "--http2": ("", "HTTP/2 is not supported yet"),
    "--ws-max-queue": ("", "reading pauses while the app has not taken a message"),
    "--env-file": ("", "load it in the shell or the service manager (systemd EnvironmentFile=)"),
    "--log-config": ("", "configure the `tricorn.error` logger from Python, or use --error-logfile"),
    "--use-colors": ("", "plain text logs"),
    "--timeout-worker-healthcheck": ("--timeout", "a worker whose event loop is silent this long is replaced"),
    "--ssl-version": ("", "TLS 1.2 or newer, always"),
    "--header": ("", "add headers in the app or a middleware"),
    "--h11-max-incomplete-event-size": ("--limit-request-head", "bytes of request line and headers"),
    "--reset-contextvars": ("", "each request runs in a fresh context"),
}


def tricorn_flags() -> set[str]:
    flags = {flag for meta in SETTINGS.values() for flag in meta.flags}
    flags |= {"--" + "no-" + flag[2:] for name, meta in SETTINGS.items() if meta.is_bool for flag in meta.flags}
    return flags | {"--help", "-h", "--version", "-v", "--print-config"}


def _row(spellings: str, table: dict[str, tuple[str, str]], ours: set[str]) -> str:
    flags = spellings.split("/")
    shown = ", ".join(f"`{flag}`" for flag in flags)
    key = next((flag for flag in flags if flag in table), None)
    if key is not None:
        way, why = table[key]
        return f"| {shown} | {f'`{way}`' if way else 'none'} | {why} |"
    if all(flag in ours for flag in flags):
        return f"| {shown} | the same | |"
    return f"| {shown} | ? | |"


def guide() -> str:
    ours = tricorn_flags()
    lines = [
        "# Moving from gunicorn or uvicorn",
        "",
        "Every flag of gunicorn and uvicorn, and what to write for tricorn (generated from",
        "tricorn/migration.py and config.py; `tests/test_config.py` keeps it current). Most are spelled the",
        "same: moving over is usually changing the command's first word. `tricorn --print-config APP`",
        "shows what a command line adds up to; every setting: docs/configuration.md.",
        "",
        "## gunicorn",
        "",
        "| gunicorn | tricorn | notes |",
        "| --- | --- | --- |",
        *(_row(flag, GUNICORN, ours) for flag in GUNICORN_FLAGS),
        "",
        "## uvicorn",
        "",
        "| uvicorn | tricorn | notes |",
        "| --- | --- | --- |",
        *(_row(flag, UVICORN, ours) for flag in UVICORN_FLAGS),
        "",
        "## What tricorn has that neither has",
        "",
        "WSGI and ASGI from one server, a master for ASGI apps (crash restart, zero-downtime HUP), a",
        "worker count from the container's CPU and memory limits, `tricorn bench` and `tricorn tune`,",
        "`--metrics-bind`, `--block-warn`, `--slow-request`, `--request-timeout` and `tricorn ctl`",
        "(docs/observability.md).",
    ]
    return "\n".join(lines) + "\n"
