"""Serving: listeners, pid file and identity, then one process (-w 1), a master of forked workers,
or (--reload) the parent of a serving child. The command line, `tricorn.run` and the reloader's
child all start here."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from . import loader, logs
from .config import Config
from .errors import UserError
from .host import garbage
from .host.identity import PidFile, resolve_identity, set_title, switch_to
from .host.sockets import open_listeners
from .server import tls
from .server.access_log import AccessLog
from .stats import MasterLink


def load_app(config: Config) -> tuple[Callable[..., Any], str]:
    """The app, for serving: what its import made lives as long as the process (host/garbage.py)."""
    loaded = loader.load_configured(config)
    garbage.app_loaded(config.gc_threshold)
    return loaded


def serve(config: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """Serve: in this process with -w 1, else as the master of forked workers (--reload: as the
    parent of a serving child that is replaced when code changes).

    `reload_config` re-reads the configuration for SIGHUP (the listeners stay as they are)."""
    assert config.app is not None
    loader.parse_spec(config.app)  # a malformed APP fails here, not in every worker
    os.umask(config.umask)
    logs.setup(config)
    access_log = AccessLog(config.access_logformat, config.access_log_json, config.access_logfile) \
        if config.access_log else None
    from .master.supervisor import ServeWorker, Supervisor
    from .server.worker import Worker

    identity = resolve_identity(config.user, config.group)
    ssl_context = tls.context(config)
    pidfile = PidFile(config.pid) if config.pid else None
    listeners: list[socket.socket] = []
    try:
        listeners.extend(open_listeners(config))
        if pidfile is not None:
            pidfile.write()
        if config.reload:
            from .master.reload import Reloader

            return Reloader(config, listeners).run()
        garbage.configure(config.gc_threshold)
        from .master.metrics import AppMetrics

        app_metrics = AppMetrics() if config.metrics_bind else None  # before the app imports prometheus_client
        preloaded = load_app(config) if config.preload else None
        # /metrics and the control socket are the master's: with them, even one worker has a master.
        if config.workers == 1 and not config.metrics_bind and not config.control_socket:
            if identity is not None:
                switch_to(identity)
            set_title(f"tricorn: worker [{config.app}]")
            app, interface = preloaded or load_app(config)
            return Worker(config, app, interface, listeners, access_log, ssl_context=ssl_context).run()

        def worker_for(config: Config) -> ServeWorker:
            context = tls.context(config)  # on HUP, a bad new certificate fails here: the old workers stay

            def serve_worker(number: int, master_pid: int, link: MasterLink) -> int:
                assert config.app is not None
                set_title(f"tricorn: worker {number} [{config.app}]")
                if identity is not None:
                    switch_to(identity)
                try:
                    app, interface = preloaded or load_app(config)
                except UserError as exc:  # one write: print's separate "\n" lets the master's log in mid-line
                    sys.stderr.write(f"Error: {exc}\n")
                    return exc.exit_code
                return Worker(config, app, interface, listeners, access_log, master_pid, link, context).run()

            return serve_worker

        def reload() -> tuple[Config, ServeWorker]:
            fresh = reload_config() if reload_config is not None else config
            if preloaded is not None:
                logs.logger.warning("SIGHUP with --preload: new workers run the app the master loaded at start; "
                                    "restart the master to load new code")
            return fresh, worker_for(fresh)

        return Supervisor(config, listeners, worker_for(config), reload, lambda: logs.reopen(access_log),
                          app_metrics).run()
    finally:
        for sock in listeners:
            sock.close()
        if pidfile is not None:
            pidfile.remove()


def reloader_child() -> int:
    """`python -m tricorn.serve`: the serving child that --reload starts (master/reload.py)."""
    from .master.reload import child_config

    config = child_config()
    if config is None:
        print("Error: python -m tricorn.serve is --reload's child; run tricorn APP --reload", file=sys.stderr)
        return 2
    try:
        return serve(config)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(reloader_child())
