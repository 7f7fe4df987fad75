"""The build: the pure-Python package by default; TRICORN_MYPYC=1 compiles the request path with mypyc.

Compiled: the modules every request and WebSocket message goes through. The rest (supervisor,
bench, tune, config) runs rarely or waits on I/O, and stays Python either way.
"""

import os

from setuptools import setup

COMPILED = [
    "tricorn/server/connection.py",
    "tricorn/server/h1.py",
    "tricorn/server/asgi.py",
    "tricorn/server/wsgi.py",
    "tricorn/server/proxy.py",
    "tricorn/server/ws.py",
    "tricorn/server/access_log.py",
]


def ext_modules() -> list:
    if os.environ.get("TRICORN_MYPYC", "0") in ("", "0"):
        return []
    from mypyc.build import mypycify

    # Optional extras (setproctitle, watchfiles) need not be installed to build; the modules that
    # import them are not compiled.
    return mypycify(["--ignore-missing-imports", *COMPILED], opt_level="3")


setup(ext_modules=ext_modules())
