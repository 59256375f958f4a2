"""Input parsers, one module (or sub-package) per kind.

Importing this package registers every built-in parser: each module below is imported and
its `@register` classes land in the registry. Third-party parsers register the same way
through the `forensics.parsers` entry-point group.
"""

import importlib
import pkgutil
from importlib.metadata import entry_points


def _load_builtin() -> None:
    for info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)


def _load_plugins() -> None:
    for ep in entry_points(group="forensics.parsers"):
        ep.load()


_load_builtin()
_load_plugins()
