"""APP strings to callables: "module:attr", "module:factory()", --factory, --app-dir; interface detection."""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AppLoadError

if TYPE_CHECKING:
    from .config import Config

INTERFACES = ("asgi3", "asgi2", "wsgi")


def parse_spec(spec: str) -> tuple[str, str, bool]:
    """module, attribute and whether to call it, from "module:attr" or "module:factory()"."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppLoadError(f"APP must look like module:attribute (for example main:app), got {spec!r}")
    call = attr.endswith("()")
    return module_name, attr[:-2] if call else attr, call


def import_app(spec: str, app_dir: str = ".", factory: bool = False) -> Any:
    """The object APP names; AppLoadError with one line saying what was not found."""
    module_name, attr, call = parse_spec(spec)
    directory = str(Path(app_dir).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"could not import module {module_name!r} (from APP {spec!r}): no such module in "
                f"{directory} or on sys.path; check the name or pass --app-dir"
            ) from None
        traceback.print_exc()
        raise AppLoadError(f"importing {module_name!r} failed: {exc} (traceback above)") from None
    except Exception as exc:
        traceback.print_exc()
        raise AppLoadError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc} (traceback above)") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr!r} (from APP {spec!r})") from None
    if call or factory:
        if not callable(target):
            raise AppLoadError(f"{spec!r} is not callable, so it cannot be a factory")
        try:
            target = target()
        except Exception as exc:
            traceback.print_exc()
            raise AppLoadError(f"calling the factory {spec!r} failed: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise AppLoadError(f"{spec!r} is a {type(target).__name__}, not an application callable")
    return target


def detect_interface(app: Any) -> str:
    """asgi3 (async scope/receive/send), asgi2 (scope → async callable) or wsgi (environ, start_response)."""
    if inspect.isclass(app):
        return "asgi3" if hasattr(app, "__await__") else "asgi2"
    call = app if inspect.isroutine(app) else app.__call__
    if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(app):
        return "asgi3"
    try:
        parameters = [
            p for p in inspect.signature(app).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        return "wsgi"
    if len(parameters) == 1:
        return "asgi2"
    if len(parameters) == 3:
        return "asgi3"  # an async app behind a sync-looking wrapper
    return "wsgi"


def load_configured(config: Config) -> tuple[Callable[..., Any], str]:
    """The app and its interface as the configuration names them."""
    assert config.app is not None
    return load(config.app, config.app_dir, config.factory, config.interface)


def load(spec: str, app_dir: str, factory: bool, interface: str) -> tuple[Callable[..., Any], str]:
    app = import_app(spec, app_dir, factory)
    chosen = detect_interface(app) if interface == "auto" else interface
    return app, chosen
