"""The policy registry: names -> policy classes, loaded on first look-up.

Kept apart from the policy classes (which need torch) so that a PolicySpec can be
read, written and named without loading the runtime: the built-in policies are
imported the first time anyone reads the registry, not when this module loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from hermes_policy.errors import PolicyError

if TYPE_CHECKING:
    from hermes_policy.policies.base import Policy

#: modules whose import registers the built-in policies
BUILTIN_MODULES = (  # in the order they always registered (help texts list them so)
    "hermes_policy.policies.full",
    "hermes_policy.policies.hermes",
    "hermes_policy.policies.memstream",
    "hermes_policy.policies.rekv",
    "hermes_policy.policies.sink_window",
    "hermes_policy.policies.snapkv",
    "hermes_policy.policies.uniform",
    "hermes_policy.policies.window",
)


class PolicyRegistry(dict):
    """A ``{name: class}`` dict that imports the built-in policies before its first read.

    Writes (``register_policy``) never trigger the import, so a policy module can
    register itself while the built-ins are being loaded.
    """

    _loaded = False

    def _load(self) -> None:
        if not PolicyRegistry._loaded:
            PolicyRegistry._loaded = True  # set first: the imports below read the registry too
            for module in BUILTIN_MODULES:
                importlib.import_module(module)

    def __getitem__(self, name: str) -> type[Policy]:
        self._load()
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def get(self, name: str, default: Any = None) -> Any:
        self._load()
        return super().get(name, default)

    def keys(self):  # type: ignore[override]
        self._load()
        return super().keys()

    def values(self):  # type: ignore[override]
        self._load()
        return super().values()

    def items(self):  # type: ignore[override]
        self._load()
        return super().items()

    def __repr__(self) -> str:
        self._load()
        return super().__repr__()


POLICIES: PolicyRegistry = PolicyRegistry()


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy constructible by its ``name``."""
    if dict.__contains__(POLICIES, cls.name):
        raise ValueError(f"policy {cls.name!r} is registered twice")
    dict.__setitem__(POLICIES, cls.name, cls)
    return cls


def make_policy(name: str, **params) -> Policy:
    """Build a registered policy by name; unknown names and bad parameters raise PolicyError."""
    if name not in POLICIES:
        raise PolicyError(f"unknown policy {name!r}; available: {', '.join(sorted(POLICIES))}")
    cls = POLICIES[name]
    known = {f.name for f in fields(cls)}
    unknown = set(params) - known
    if unknown:
        raise PolicyError(f"policy {name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(known)}")
    return cls(**params)
