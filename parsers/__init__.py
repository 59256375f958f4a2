"""Input parsers, one module (or sub-package) per kind.

Importing this package registers every built-in parser: each module below is imported and
its `@register` classes land in the registry. Third-party parsers register the same way
through the `forensics.parsers` entry-point group. A module that fails to import is kept
out, named in LOAD_ERRORS (shown by `forensics formats`), and the others still load.
"""

import importlib
import logging
import pkgutil
from importlib.metadata import entry_points

LOAD_ERRORS: dict[str, str] = {}


def _load(name: str, load) -> None:
    try:
        load()
    except Exception as exc:  # one broken parser must not take the others down
        LOAD_ERRORS[name] = f"{type(exc).__name__}: {exc}"
        logging.getLogger(__name__).warning("parser module %s not loaded: %s", name, exc)


def _load_builtin() -> None:
    for info in pkgutil.walk_packages(__path__, prefix=__name__ + ".", onerror=lambda n: None):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            _load(info.name, lambda n=info.name: importlib.import_module(n))


def _load_plugins() -> None:
    for ep in entry_points(group="forensics.parsers"):
        _load(ep.name, ep.load)


_load_builtin()
_load_plugins()
