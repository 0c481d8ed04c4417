"""Memory policies: one per module, registered by name, configured by dataclass fields.

Names load on first use (PEP 562): the registry and PolicySpec need no torch, the
policy classes do. ``POLICIES`` imports the built-in policies when it is first read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    "POLICIES": "hermes_policy.policies.registry",
    "make_policy": "hermes_policy.policies.registry",
    "register_policy": "hermes_policy.policies.registry",
    "PolicySpec": "hermes_policy.policies.spec",
    "policy_from_args": "hermes_policy.policies.spec",
    "Policy": "hermes_policy.policies.base",
    "keep_rows": "hermes_policy.policies.base",
    "ScoringPolicy": "hermes_policy.policies.scoring",
    "FullPolicy": "hermes_policy.policies.full",
    "HermesPolicy": "hermes_policy.policies.hermes",
    "HermesMemStreamPolicy": "hermes_policy.policies.memstream",
    "MemStreamPolicy": "hermes_policy.policies.memstream",
    "ReKVPolicy": "hermes_policy.policies.rekv",
    "SinkWindowPolicy": "hermes_policy.policies.sink_window",
    "SnapKVPolicy": "hermes_policy.policies.snapkv",
    "UniformPolicy": "hermes_policy.policies.uniform",
    "WindowPolicy": "hermes_policy.policies.window",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hermes_policy.policies' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from hermes_policy.policies.base import Policy, keep_rows
    from hermes_policy.policies.full import FullPolicy
    from hermes_policy.policies.hermes import HermesPolicy
    from hermes_policy.policies.memstream import HermesMemStreamPolicy, MemStreamPolicy
    from hermes_policy.policies.registry import POLICIES, make_policy, register_policy
    from hermes_policy.policies.rekv import ReKVPolicy
    from hermes_policy.policies.scoring import ScoringPolicy
    from hermes_policy.policies.sink_window import SinkWindowPolicy
    from hermes_policy.policies.snapkv import SnapKVPolicy
    from hermes_policy.policies.spec import PolicySpec, policy_from_args
    from hermes_policy.policies.uniform import UniformPolicy
    from hermes_policy.policies.window import WindowPolicy

__all__ = [
    "POLICIES",
    "FullPolicy",
    "HermesMemStreamPolicy",
    "HermesPolicy",
    "MemStreamPolicy",
    "Policy",
    "PolicySpec",
    "ReKVPolicy",
    "ScoringPolicy",
    "SinkWindowPolicy",
    "SnapKVPolicy",
    "UniformPolicy",
    "WindowPolicy",
    "keep_rows",
    "make_policy",
    "policy_from_args",
    "register_policy",
]
