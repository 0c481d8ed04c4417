"""hermes_policy: the streaming runtime and its memory policies.

Imports nothing from probes/, analysis/ or dashboard/ (they build on it).

The names below load on first use (PEP 562), so ``import hermes_policy.errors``
or the data helpers do not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "ATTENTION_NAME": "hermes_policy.attention",
    "AttentionEvent": "hermes_policy.attention",
    "AttentionObserver": "hermes_policy.attention",
    "streaming_context": "hermes_policy.attention",
    "CompactCache": "hermes_policy.cache",
    "BudgetError": "hermes_policy.errors",
    "HermesError": "hermes_policy.errors",
    "ModelError": "hermes_policy.errors",
    "PolicyError": "hermes_policy.errors",
    "SessionError": "hermes_policy.errors",
    "VideoError": "hermes_policy.errors",
    "load_model": "hermes_policy.models",
    "POLICIES": "hermes_policy.policies",
    "Policy": "hermes_policy.policies",
    "PolicySpec": "hermes_policy.policies",
    "make_policy": "hermes_policy.policies",
    "Answer": "hermes_policy.session",
    "SessionConfig": "hermes_policy.session",
    "StreamingSession": "hermes_policy.session",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hermes_policy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from hermes_policy.attention import ATTENTION_NAME, AttentionEvent, AttentionObserver, streaming_context
    from hermes_policy.cache import CompactCache
    from hermes_policy.errors import BudgetError, HermesError, ModelError, PolicyError, SessionError, VideoError
    from hermes_policy.models import load_model
    from hermes_policy.policies import POLICIES, Policy, PolicySpec, make_policy
    from hermes_policy.session import Answer, SessionConfig, StreamingSession

__all__ = [
    "ATTENTION_NAME",
    "POLICIES",
    "Answer",
    "AttentionEvent",
    "AttentionObserver",
    "BudgetError",
    "CompactCache",
    "HermesError",
    "ModelError",
    "Policy",
    "PolicyError",
    "PolicySpec",
    "SessionConfig",
    "SessionError",
    "StreamingSession",
    "VideoError",
    "__version__",
    "load_model",
    "make_policy",
    "streaming_context",
]
