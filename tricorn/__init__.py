"""tricorn: a Python application server for WSGI and ASGI apps."""

from __future__ import annotations

from .config import Config

__version__ = "0.1.0"
__all__ = ["Config", "__version__", "run"]


def run(app: str, **settings: object) -> int:
    """Serve `app` ("module:attr") with settings named as in Config; returns the exit code."""
    from .config import load
    from .serve import serve

    cli = {key: (value if isinstance(value, (bool, list, tuple)) else str(value)) for key, value in settings.items()}
    config, _ = load({"app": app, **cli})
    return serve(config)
