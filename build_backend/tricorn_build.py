"""The PEP 517 build backend: setuptools', asking for mypy too when TRICORN_MYPYC=1 (see setup.py)."""

import os

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the hooks this module does not change)

# mypyc ships with mypy, and setup.py imports it, so it is asked for before setup.py runs; mypy
# types the compiled modules against the libraries they import, as it does in CI.
MYPYC = ["mypy>=1.10", "httptools>=0.6.1", "websockets>=13.0", "uvloop>=0.19"]


def _compiled() -> bool:
    return os.environ.get("TRICORN_MYPYC", "0") not in ("", "0")


def get_requires_for_build_wheel(config_settings: dict | None = None) -> list[str]:
    return MYPYC if _compiled() else build_meta.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings: dict | None = None) -> list[str]:
    return MYPYC if _compiled() else build_meta.get_requires_for_build_editable(config_settings)
