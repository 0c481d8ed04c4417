"""Package namespaces whose names load on first use (PEP 562).

A package ``__init__`` that imports every submodule makes ``import pkg.errors``
pay for torch and transformers. Instead it declares which module holds each
public name and lets :func:`lazy_exports` resolve a name the first time it is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def exports_from(modules: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """``{module: names}`` -> ``{name: module}``, refusing a name listed under two modules."""
    exports: dict[str, str] = {}
    for module, names in modules.items():
        for name in names:
            if name in exports:
                raise ValueError(f"{name!r} is exported from both {exports[name]} and {module}")
            exports[name] = module
    return exports


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names live in ``exports`` (name -> module).

    A resolved name is stored in the package's ``namespace`` so later reads skip the hook.

    Usage, in a package ``__init__``::

        _EXPORTS = exports_from({"pkg.session": ["StreamingSession"], ...})
        __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
        __all__ = sorted(_EXPORTS)
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
